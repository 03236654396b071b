//! The pure fold: the one function that applies an event to state.
//!
//! [`fold`] reads the current state through [`StateView`] and returns the changes to
//! make; it has no clock, no I/O and no key material. The server's redb projection,
//! the replay tool and any rebuild all apply events through it, so they cannot drift
//! apart. [`MemoryState`] is the in-memory implementation of the view.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::body::{
    CertificateIssued, Created, DataKeyRef, Empty, EnrolmentTokenIssued, Grant, KIND_CLIENT_CERTIFICATE_ISSUED,
    KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED,
    KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, KIND_GROUP_CREATED, KIND_GROUP_DELETED, KIND_GROUP_GRANT_ADDED,
    KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED, KIND_GROUP_MEMBER_REMOVED, KIND_OPERATOR_ROLES_SET,
    KIND_OPERATOR_TOKEN_ISSUED, KIND_OPERATOR_TOKEN_REVOKED, KIND_SECRET_DELETED, KIND_SECRET_DESTROYED,
    KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED, KIND_SECRET_VERSION_ADDED, KIND_SECRET_VERSION_ADDED_V2,
    KIND_SECRET_VERSION_DESTROYED, KIND_SECRET_VERSION_EXPIRED, KIND_SIGNING_KEY_CERTIFIED, Membership, RolesSet,
    SealedContent, SecretMetadata, SigningKeyCertified, TokenIssued, TokenRevoked, decode_body,
};
use crate::error::{ApplyError, FoldError, ViewError};
use crate::event::{Aggregate, AggregateType, Event, EventHash, ZERO_HASH};
use crate::verify::{RecordedEvent, RootKeys, key_id, verify_message};

mod secret;

/// The last event applied to an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateHead {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub last_hash: EventHash,
    pub last_sequence: u64,
}

/// A secret as the read model stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    pub name: String,
    /// Aggregate version of the last event: changes on every change of the secret.
    pub revision: u64,
    /// Generation of the secret under this name: 1 at the first creation, one more
    /// each time a deleted or destroyed name is written again.
    pub incarnation: u64,
    pub status: SecretStatus,
    pub metadata: SecretMetadata,
    /// The last version added, without its ciphertext: the version record alone
    /// holds that (see [`StateView::secret_version`]), so listing secrets stays cheap.
    pub current: SecretVersion,
    /// Stream sequence of the last event applied to this secret.
    pub sequence: u64,
}

/// Lifecycle status of a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretStatus {
    Active,
    /// Deleted softly: no one reads it, and it can be restored.
    Deleted,
    /// Every version destroyed: the name can only be written again, as a new incarnation.
    Destroyed,
}

impl SecretState {
    /// Returns the file name agents write this secret to, or `None` if the name
    /// derived from the secret name would be too long.
    pub fn file_name(&self) -> Option<String> {
        effective_file_name(&self.name, &self.metadata)
    }

    /// Returns whether computes may receive the current version at `now_micros`:
    /// the secret is active and its current version neither destroyed nor expired.
    pub fn servable(&self, now_micros: i64) -> bool {
        self.status == SecretStatus::Active && self.current.servable(now_micros)
    }
}

/// Returns the file name of a secret: the one its metadata sets, or the one derived
/// from its name.
pub fn effective_file_name(name: &str, metadata: &SecretMetadata) -> Option<String> {
    match &metadata.delivery.file_name {
        Some(file_name) => Some(file_name.clone()),
        None => crate::names::file_name(name).ok(),
    }
}

/// One version of a secret's content, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub version: u64,
    /// Aggregate version of the event that added this version, bound into its AAD.
    pub revision: u64,
    /// Incarnation of the secret this version belongs to.
    pub incarnation: u64,
    /// Emptied when the version is destroyed.
    pub content: SealedContent,
    pub data_key: DataKeyRef,
    pub size: u64,
    /// Keyed digest of the content; `None` for versions written before digests.
    pub digest: Option<[u8; 32]>,
    pub expires_at_micros: Option<i64>,
    /// An expiry event was recorded for this version.
    pub expired: bool,
    pub destroyed: bool,
    pub rolled_back_from: Option<u64>,
    pub created_at_micros: i64,
    pub created_by: String,
}

impl SecretVersion {
    /// Returns whether this version may be delivered at `now_micros`. The expiry
    /// time counts even before its event is recorded.
    pub fn servable(&self, now_micros: i64) -> bool {
        !self.destroyed && !self.expired && self.expires_at_micros.is_none_or(|at| now_micros < at)
    }
}

/// A certified event signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyState {
    #[serde(with = "serde_bytes")]
    pub public_key: [u8; 32],
    pub certified_by: String,
    pub certified_at_micros: i64,
    pub sequence: u64,
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub name: String,
    pub enabled: bool,
    pub owner_group: Option<String>,
    pub description: String,
    pub created_at_micros: i64,
    pub created_by: String,
    pub sequence: u64,
}

/// A group; its members and grants are kept in their own indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub name: String,
    pub owner_group: Option<String>,
    pub description: String,
    pub created_at_micros: i64,
    pub created_by: String,
    pub sequence: u64,
}

/// An operator's roles and the tokens issued to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    pub identity: String,
    pub roles: Vec<String>,
    /// Token id to its expiry and whether it was revoked.
    pub tokens: BTreeMap<String, TokenState>,
    pub sequence: u64,
}

/// An issued operator token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub expires_at_micros: i64,
    pub revoked: bool,
}

/// Read access to the state an event is applied to.
pub trait StateView {
    fn aggregate_head(&self, aggregate: &Aggregate) -> Result<Option<AggregateHead>, ViewError>;
    fn secret(&self, name: &str) -> Result<Option<SecretState>, ViewError>;
    fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyState>, ViewError>;
    fn client(&self, name: &str) -> Result<Option<ClientState>, ViewError>;
    fn group(&self, name: &str) -> Result<Option<GroupState>, ViewError>;
    /// Returns the groups a client is a member of, ordered by name.
    fn client_groups(&self, client: &str) -> Result<Vec<String>, ViewError>;
    /// Returns the members of a group, ordered by name.
    fn group_members(&self, group: &str) -> Result<Vec<String>, ViewError>;
    /// Returns the secrets a group may read, ordered by name.
    fn group_grants(&self, group: &str) -> Result<Vec<String>, ViewError>;
    fn has_grant(&self, secret: &str, group: &str) -> Result<bool, ViewError>;
    /// Returns the groups that hold a grant on a secret, ordered by name.
    fn secret_groups(&self, secret: &str) -> Result<Vec<String>, ViewError>;
    fn operator(&self, identity: &str) -> Result<Option<OperatorState>, ViewError>;
    /// Returns every version of a secret that the read model keeps, oldest first.
    fn secret_versions(&self, name: &str) -> Result<Vec<SecretVersion>, ViewError>;
    /// Returns one version of a secret, with its ciphertext.
    fn secret_version(&self, name: &str, version: u64) -> Result<Option<SecretVersion>, ViewError>;
    /// Returns the secret whose file name is `file_name`, if one claims it.
    fn file_name_owner(&self, file_name: &str) -> Result<Option<String>, ViewError>;
}

/// A state that changes can be written to.
pub trait StateStore: StateView {
    fn write(&mut self, change: Change) -> Result<(), ViewError>;
}

/// One change the fold returns for the state to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Head {
        aggregate: Aggregate,
        head: AggregateHead,
    },
    /// The secret's record; its versions change through [`Change::Version`].
    Secret(SecretState),
    Version {
        name: String,
        version: SecretVersion,
    },
    /// A file name is claimed by a secret, or released with `secret: None`.
    FileName {
        file_name: String,
        secret: Option<String>,
    },
    /// The current version of a secret expires at `at_micros` (or no longer does).
    Expiry {
        at_micros: i64,
        name: String,
        present: bool,
    },
    SigningKey {
        key_id: String,
        state: SigningKeyState,
    },
    Client(ClientState),
    ClientRemoved {
        name: String,
    },
    Group(GroupState),
    GroupRemoved {
        name: String,
    },
    Membership {
        client: String,
        group: String,
        present: bool,
    },
    Grant {
        secret: String,
        group: String,
        present: bool,
    },
    Operator(OperatorState),
}

/// Computes the changes that apply `recorded` to the state in `view`.
///
/// Rejects an event whose aggregate version is not the current one plus one, or
/// whose previous hash is not the hash of the aggregate's last event. It also stops
/// on an event kind it does not know, because a reader never skips what it cannot read.
pub fn fold(view: &impl StateView, recorded: &RecordedEvent) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    check_chain(view, event)?;

    let head = Change::Head {
        aggregate: event.aggregate.clone(),
        head: AggregateHead {
            version: event.aggregate_version,
            last_hash: recorded.hash,
            last_sequence: recorded.sequence,
        },
    };
    let mut changes = vec![head];
    match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED
        | KIND_SECRET_VERSION_ADDED_V2
        | KIND_SECRET_METADATA_SET
        | KIND_SECRET_DELETED
        | KIND_SECRET_RESTORED
        | KIND_SECRET_DESTROYED
        | KIND_SECRET_VERSION_DESTROYED
        | KIND_SECRET_VERSION_EXPIRED => changes.extend(secret::fold_secret(view, recorded)?),
        KIND_SIGNING_KEY_CERTIFIED => changes.push(fold_key_certified(recorded)?),
        KIND_CLIENT_CREATED
        | KIND_CLIENT_DISABLED
        | KIND_CLIENT_ENABLED
        | KIND_CLIENT_DELETED
        | KIND_CLIENT_ENROLMENT_TOKEN_ISSUED
        | KIND_CLIENT_CERTIFICATE_ISSUED => {
            changes.extend(fold_client(view, recorded)?);
        }
        KIND_GROUP_CREATED
        | KIND_GROUP_DELETED
        | KIND_GROUP_MEMBER_ADDED
        | KIND_GROUP_MEMBER_REMOVED
        | KIND_GROUP_GRANT_ADDED
        | KIND_GROUP_GRANT_REMOVED => changes.extend(fold_group(view, recorded)?),
        KIND_OPERATOR_ROLES_SET | KIND_OPERATOR_TOKEN_ISSUED | KIND_OPERATOR_TOKEN_REVOKED => {
            changes.push(fold_operator(view, recorded)?);
        }
        crate::checkpoint::KIND_CHECKPOINT => changes.extend(crate::checkpoint::fold_checkpoint(view, recorded)?),
        other => return Err(FoldError::UnknownKind { kind: other.to_owned() }),
    }
    Ok(changes)
}

/// Verifies a stored message against `store` and applies it there.
pub fn apply_message(
    store: &mut impl StateStore,
    roots: &RootKeys,
    subject: &str,
    payload: &[u8],
    sequence: u64,
) -> Result<RecordedEvent, ApplyError> {
    let recorded = verify_message(store, roots, subject, payload, sequence)
        .map_err(|source| ApplyError::Verify { sequence, source })?;
    let changes = fold(store, &recorded).map_err(|source| ApplyError::Fold { sequence, source })?;
    for change in changes {
        store.write(change)?;
    }
    Ok(recorded)
}

fn check_chain(view: &impl StateView, event: &Event) -> Result<(), FoldError> {
    let (current, last_hash) = match view.aggregate_head(&event.aggregate)? {
        Some(head) => (head.version, head.last_hash),
        None => (0, ZERO_HASH),
    };
    if event.aggregate_version != current + 1 {
        return Err(FoldError::VersionGap {
            aggregate: event.aggregate.clone(),
            current,
            found: event.aggregate_version,
        });
    }
    if event.previous_hash != last_hash {
        return Err(FoldError::ChainBroken { aggregate: event.aggregate.clone(), version: event.aggregate_version });
    }
    Ok(())
}

fn fold_key_certified(recorded: &RecordedEvent) -> Result<Change, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::SigningKey)?;
    let body: SigningKeyCertified = decode(event)?;

    if body.algorithm != "ed25519" {
        return Err(inconsistent(event, format!("unsupported algorithm {:?}", body.algorithm)));
    }
    if key_id(&body.public_key) != event.aggregate.id {
        return Err(inconsistent(event, "the aggregate id is not the id of the certified key".to_owned()));
    }

    Ok(Change::SigningKey {
        key_id: event.aggregate.id.clone(),
        state: SigningKeyState {
            public_key: body.public_key,
            certified_by: event.key_id.clone(),
            certified_at_micros: event.recorded_at_micros,
            sequence: recorded.sequence,
        },
    })
}

/// Applies a client event. Transitions within the client are checked strictly,
/// because the server decides them from the same chain. Creating a client starts it
/// with no memberships, even ones recorded while the name was absent, and deleting
/// it ends its memberships.
fn fold_client(view: &impl StateView, recorded: &RecordedEvent) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::Client)?;
    let created: Option<Created> = match event.kind.as_str() {
        KIND_CLIENT_CREATED => Some(decode(event)?),
        KIND_CLIENT_ENROLMENT_TOKEN_ISSUED => {
            let _: EnrolmentTokenIssued = decode(event)?;
            None
        }
        KIND_CLIENT_CERTIFICATE_ISSUED => {
            let _: CertificateIssued = decode(event)?;
            None
        }
        _ => {
            let _: Empty = decode(event)?;
            None
        }
    };
    let name = &event.aggregate.id;
    let current = view.client(name)?;
    let end_memberships = |view: &dyn StateView| -> Result<Vec<Change>, FoldError> {
        let groups = view.client_groups(name)?;
        Ok(groups.into_iter().map(|group| Change::Membership { client: name.clone(), group, present: false }).collect())
    };

    match (event.kind.as_str(), current, created) {
        (KIND_CLIENT_CREATED, None, Some(body)) => {
            let mut changes = vec![Change::Client(ClientState {
                name: name.clone(),
                enabled: true,
                owner_group: body.owner_group,
                description: body.description,
                created_at_micros: event.recorded_at_micros,
                created_by: event.actor.principal.clone(),
                sequence: recorded.sequence,
            })];
            changes.extend(end_memberships(view)?);
            Ok(changes)
        }
        (KIND_CLIENT_DISABLED, Some(client), _) if client.enabled => {
            Ok(vec![Change::Client(ClientState { enabled: false, sequence: recorded.sequence, ..client })])
        }
        (KIND_CLIENT_ENABLED, Some(client), _) if !client.enabled => {
            Ok(vec![Change::Client(ClientState { enabled: true, sequence: recorded.sequence, ..client })])
        }
        (KIND_CLIENT_ENROLMENT_TOKEN_ISSUED | KIND_CLIENT_CERTIFICATE_ISSUED, Some(client), _) if client.enabled => {
            Ok(vec![Change::Client(ClientState { sequence: recorded.sequence, ..client })])
        }
        (KIND_CLIENT_DELETED, Some(_), _) => {
            let mut changes = vec![Change::ClientRemoved { name: name.clone() }];
            changes.extend(end_memberships(view)?);
            Ok(changes)
        }
        (kind, current, _) => Err(inconsistent(
            event,
            format!("{kind} does not apply to a client that is {}", describe(current.map(|c| c.enabled))),
        )),
    }
}

/// Body of a group event, decoded before the transition is checked.
enum GroupBody {
    Created(Created),
    Empty,
    Membership(Membership),
    Grant(Grant),
}

/// Applies a group event. Members and secrets named by an event need not exist:
/// a membership of an absent client ends when that client is created, and a grant
/// on an absent secret gives no access until the secret exists.
fn fold_group(view: &impl StateView, recorded: &RecordedEvent) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::Group)?;
    let body = match event.kind.as_str() {
        KIND_GROUP_CREATED => GroupBody::Created(decode(event)?),
        KIND_GROUP_MEMBER_ADDED | KIND_GROUP_MEMBER_REMOVED => GroupBody::Membership(decode(event)?),
        KIND_GROUP_GRANT_ADDED | KIND_GROUP_GRANT_REMOVED => GroupBody::Grant(decode(event)?),
        _ => {
            let _: Empty = decode(event)?;
            GroupBody::Empty
        }
    };
    let name = &event.aggregate.id;
    let current = view.group(name)?;
    let adds = matches!(event.kind.as_str(), KIND_GROUP_MEMBER_ADDED | KIND_GROUP_GRANT_ADDED);

    match (body, current) {
        (GroupBody::Created(body), None) => Ok(vec![Change::Group(GroupState {
            name: name.clone(),
            owner_group: body.owner_group,
            description: body.description,
            created_at_micros: event.recorded_at_micros,
            created_by: event.actor.principal.clone(),
            sequence: recorded.sequence,
        })]),
        (GroupBody::Empty, Some(_)) => {
            let mut changes = vec![Change::GroupRemoved { name: name.clone() }];
            for client in view.group_members(name)? {
                changes.push(Change::Membership { client, group: name.clone(), present: false });
            }
            for secret in view.group_grants(name)? {
                changes.push(Change::Grant { secret, group: name.clone(), present: false });
            }
            Ok(changes)
        }
        (GroupBody::Membership(body), Some(_)) => {
            Ok(vec![Change::Membership { client: body.client, group: name.clone(), present: adds }])
        }
        (GroupBody::Grant(body), Some(_)) => {
            Ok(vec![Change::Grant { secret: body.secret, group: name.clone(), present: adds }])
        }
        (_, current) => Err(inconsistent(
            event,
            format!(
                "{} does not apply to a group that {}",
                event.kind,
                if current.is_some() { "exists" } else { "does not exist" }
            ),
        )),
    }
}

/// Applies an operator event. Every operator event applies whatever the state:
/// roles are replaced as a whole, and revoking a token that is unknown still
/// records it as revoked, so a revocation can never be lost to ordering.
fn fold_operator(view: &impl StateView, recorded: &RecordedEvent) -> Result<Change, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::Operator)?;
    let identity = &event.aggregate.id;
    let mut state =
        view.operator(identity)?.unwrap_or_else(|| OperatorState { identity: identity.clone(), ..Default::default() });

    match event.kind.as_str() {
        KIND_OPERATOR_ROLES_SET => {
            let body: RolesSet = decode(event)?;
            state.roles = body.roles;
        }
        KIND_OPERATOR_TOKEN_ISSUED => {
            let body: TokenIssued = decode(event)?;
            let revoked = state.tokens.get(&body.token_id).is_some_and(|t| t.revoked);
            state.tokens.insert(body.token_id, TokenState { expires_at_micros: body.expires_at_micros, revoked });
        }
        _ => {
            let body: TokenRevoked = decode(event)?;
            let token = state.tokens.entry(body.token_id).or_insert(TokenState { expires_at_micros: 0, revoked: true });
            token.revoked = true;
        }
    }
    state.sequence = recorded.sequence;
    Ok(Change::Operator(state))
}

fn describe(enabled: Option<bool>) -> &'static str {
    match enabled {
        None => "absent",
        Some(true) => "enabled",
        Some(false) => "disabled",
    }
}

/// Returns whether `client` may read `secret`: the client exists and is enabled, the
/// secret exists and is not deleted or destroyed, and one of the client's groups has a grant on the secret. Every
/// read path calls this.
pub fn may_read<V: StateView + ?Sized>(view: &V, client: &str, secret: &str) -> Result<bool, ViewError> {
    let Some(state) = view.client(client)? else {
        return Ok(false);
    };
    let active = view.secret(secret)?.is_some_and(|s| s.status == SecretStatus::Active);
    if !state.enabled || !active {
        return Ok(false);
    }
    for group in view.client_groups(client)? {
        if view.has_grant(secret, &group)? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(crate) fn expect_aggregate(event: &Event, kind: AggregateType) -> Result<(), FoldError> {
    if event.aggregate.kind == kind {
        return Ok(());
    }
    Err(FoldError::WrongAggregate { kind: event.kind.clone(), aggregate: event.aggregate.clone() })
}

pub(crate) fn decode<T: Serialize + for<'a> Deserialize<'a>>(event: &Event) -> Result<T, FoldError> {
    decode_body(&event.body).map_err(|source| FoldError::Body { kind: event.kind.clone(), source })
}

pub(crate) fn inconsistent(event: &Event, reason: String) -> FoldError {
    FoldError::Inconsistent { kind: event.kind.clone(), aggregate: event.aggregate.clone(), reason }
}

/// The whole state in memory: used by replay, and to check the redb projection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    pub heads: BTreeMap<Aggregate, AggregateHead>,
    pub secrets: BTreeMap<String, SecretState>,
    pub signing_keys: BTreeMap<String, SigningKeyState>,
    pub clients: BTreeMap<String, ClientState>,
    pub groups: BTreeMap<String, GroupState>,
    /// Pairs of (client, group).
    pub memberships: BTreeSet<(String, String)>,
    /// Pairs of (secret, group).
    pub grants: BTreeSet<(String, String)>,
    pub operators: BTreeMap<String, OperatorState>,
    /// Every version of every secret, by (name, version).
    pub versions: BTreeMap<(String, u64), SecretVersion>,
    /// File name to the secret that claims it.
    pub file_names: BTreeMap<String, String>,
    /// Pairs of (expiry time, secret) of current versions that have not expired yet.
    pub expiries: BTreeSet<(i64, String)>,
}

impl StateView for MemoryState {
    fn aggregate_head(&self, aggregate: &Aggregate) -> Result<Option<AggregateHead>, ViewError> {
        Ok(self.heads.get(aggregate).cloned())
    }

    fn secret(&self, name: &str) -> Result<Option<SecretState>, ViewError> {
        Ok(self.secrets.get(name).cloned())
    }

    fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyState>, ViewError> {
        Ok(self.signing_keys.get(key_id).cloned())
    }

    fn client(&self, name: &str) -> Result<Option<ClientState>, ViewError> {
        Ok(self.clients.get(name).cloned())
    }

    fn group(&self, name: &str) -> Result<Option<GroupState>, ViewError> {
        Ok(self.groups.get(name).cloned())
    }

    fn client_groups(&self, client: &str) -> Result<Vec<String>, ViewError> {
        Ok(self.memberships.iter().filter(|(c, _)| c == client).map(|(_, g)| g.clone()).collect())
    }

    fn group_members(&self, group: &str) -> Result<Vec<String>, ViewError> {
        Ok(self.memberships.iter().filter(|(_, g)| g == group).map(|(c, _)| c.clone()).collect())
    }

    fn group_grants(&self, group: &str) -> Result<Vec<String>, ViewError> {
        Ok(self.grants.iter().filter(|(_, g)| g == group).map(|(s, _)| s.clone()).collect())
    }

    fn has_grant(&self, secret: &str, group: &str) -> Result<bool, ViewError> {
        Ok(self.grants.contains(&(secret.to_owned(), group.to_owned())))
    }

    fn secret_groups(&self, secret: &str) -> Result<Vec<String>, ViewError> {
        Ok(self.grants.iter().filter(|(s, _)| s == secret).map(|(_, g)| g.clone()).collect())
    }

    fn operator(&self, identity: &str) -> Result<Option<OperatorState>, ViewError> {
        Ok(self.operators.get(identity).cloned())
    }

    fn secret_versions(&self, name: &str) -> Result<Vec<SecretVersion>, ViewError> {
        Ok(self.versions.range((name.to_owned(), 0)..=(name.to_owned(), u64::MAX)).map(|(_, v)| v.clone()).collect())
    }

    fn secret_version(&self, name: &str, version: u64) -> Result<Option<SecretVersion>, ViewError> {
        Ok(self.versions.get(&(name.to_owned(), version)).cloned())
    }

    fn file_name_owner(&self, file_name: &str) -> Result<Option<String>, ViewError> {
        Ok(self.file_names.get(file_name).cloned())
    }
}

impl StateStore for MemoryState {
    fn write(&mut self, change: Change) -> Result<(), ViewError> {
        match change {
            Change::Head { aggregate, head } => {
                self.heads.insert(aggregate, head);
            }
            Change::Secret(state) => {
                self.secrets.insert(state.name.clone(), state);
            }
            Change::Version { name, version } => {
                self.versions.insert((name, version.version), version);
            }
            Change::FileName { file_name, secret: Some(secret) } => {
                self.file_names.insert(file_name, secret);
            }
            Change::FileName { file_name, secret: None } => {
                self.file_names.remove(&file_name);
            }
            Change::Expiry { at_micros, name, present } => {
                if present {
                    self.expiries.insert((at_micros, name));
                } else {
                    self.expiries.remove(&(at_micros, name));
                }
            }
            Change::SigningKey { key_id, state } => {
                self.signing_keys.insert(key_id, state);
            }
            Change::Client(state) => {
                self.clients.insert(state.name.clone(), state);
            }
            Change::ClientRemoved { name } => {
                self.clients.remove(&name);
            }
            Change::Group(state) => {
                self.groups.insert(state.name.clone(), state);
            }
            Change::GroupRemoved { name } => {
                self.groups.remove(&name);
            }
            Change::Membership { client, group, present } => {
                set_presence(&mut self.memberships, (client, group), present);
            }
            Change::Grant { secret, group, present } => {
                set_presence(&mut self.grants, (secret, group), present);
            }
            Change::Operator(state) => {
                self.operators.insert(state.identity.clone(), state);
            }
        }
        Ok(())
    }
}

fn set_presence(set: &mut BTreeSet<(String, String)>, pair: (String, String), present: bool) {
    if present {
        set.insert(pair);
    } else {
        set.remove(&pair);
    }
}
