//! Commands on secrets: write, roll back, set metadata, delete, restore, destroy and expire.
//!
//! Each command reads the secret's state at the stream head. It takes the last event
//! on the secret's subject and waits until this node's read model has applied it.
//! It then decides from the read model's record, which the fold keeps for exactly
//! that event. The publish then states that event's sequence, so a concurrent change
//! makes the command decide again or fail with a conflict.

pub mod expiry;
pub mod metadata;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use uuid::Uuid;
use watchword_events::body::{
    DataKeyRef, Empty, KIND_SECRET_DELETED, KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED,
    KIND_SECRET_VERSION_ADDED, KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED,
    KIND_SECRET_VERSION_EXPIRED, MetadataSet, SecretMetadata, SecretVersionAdded, SecretVersionAddedV2, VersionRef,
    content_aad, data_key_aad, decode_body, encode_body,
};
use watchword_events::error::DecodeError;
use watchword_events::fold::{SecretState, SecretStatus, SecretVersion, effective_file_name};
use watchword_events::names::validate_secret_name;
use watchword_events::{Actor, Aggregate, Event};
use zeroize::Zeroizing;

use crate::access::{Permission, Role, permits};
use crate::config::LimitsConfig;
use crate::digest::DigestKey;
use crate::reader::Reader;
use crate::seal;
use crate::writer::{Committed, Draft, Head, Precondition, WriteContext, WriteError, Writer, describe};

/// Maximum wait for this node's read model to reach the stream head of a secret.
const STATE_WAIT: Duration = Duration::from_secs(5);

/// Principal of the events the server records on its own, such as expiries.
pub const SERVER_PRINCIPAL: &str = "watchword-server";

/// The change a write makes to the secret's metadata.
#[derive(Debug, Clone)]
pub enum MetadataChange {
    /// Keep the current metadata (a new secret starts with empty metadata).
    Keep,
    /// Change the fields that are set, keep the others.
    Patch(MetadataPatch),
    /// Replace the metadata as a whole.
    Replace(SecretMetadata),
}

/// Fields of the metadata that a write sets; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct MetadataPatch {
    pub owner_group: Option<String>,
    pub description: Option<String>,
    pub file_name: Option<String>,
    pub file_owner: Option<String>,
    pub file_group: Option<String>,
    pub mode: Option<u32>,
}

/// A request to add a version of a secret.
#[derive(Debug)]
pub struct WriteVersion {
    pub name: String,
    pub content: Zeroizing<Vec<u8>>,
    pub metadata: MetadataChange,
    /// Microseconds since the Unix epoch after which computes no longer receive the version.
    pub expires_at_micros: Option<i64>,
    pub context: WriteContext,
}

/// The secret commands of one server.
#[derive(Debug, Clone)]
pub struct Secrets {
    writer: Writer,
    reader: Reader,
    digest: Arc<DigestKey>,
    limits: LimitsConfig,
    /// Held while a custom file name is checked and committed, so two writes on this
    /// node cannot claim one file name together.
    file_names: Arc<tokio::sync::Mutex<()>>,
}

impl Secrets {
    pub fn new(writer: Writer, reader: Reader, digest: Arc<DigestKey>, limits: LimitsConfig) -> Secrets {
        Secrets { writer, reader, digest, limits, file_names: Arc::default() }
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Commits a new version of a secret, creating the secret (or a new incarnation
    /// of a deleted or destroyed one) when needed.
    pub async fn write(&self, request: &WriteVersion, roles: &[Role]) -> Result<Committed, WriteError> {
        validate_secret_name(&request.name)?;
        if request.content.len() > self.limits.max_content_bytes {
            return Err(WriteError::TooLarge { size: request.content.len(), max: self.limits.max_content_bytes });
        }
        let sets_file_name = match &request.metadata {
            MetadataChange::Keep => false,
            MetadataChange::Patch(patch) => patch.file_name.is_some(),
            MetadataChange::Replace(metadata) => metadata.delivery.file_name.is_some(),
        };
        let _guard = if sets_file_name { Some(self.file_names.lock().await) } else { None };

        let name = &request.name;
        let committed = self
            .append(name, &request.context, |state, revision, id| async move {
                let metadata = resolve_metadata(state.as_ref(), &request.metadata);
                authorize_write(roles, state.as_ref(), metadata.as_ref())?;
                if let Some(metadata) = &metadata {
                    self.check_metadata(name, state.as_ref(), metadata).await?;
                }
                let version = NewVersion {
                    content: &request.content,
                    expires_at_micros: request.expires_at_micros,
                    rolled_back_from: None,
                    metadata,
                };
                self.seal_version(name, state.as_ref(), &version, revision, id).await
            })
            .await?;
        if sets_file_name {
            self.settle(&committed).await;
        }
        Ok(committed)
    }

    /// Adds a version whose content is that of the earlier version `from`, recorded
    /// as a rollback. The content is sealed again under a new data key, because the
    /// associated data binds each ciphertext to the event that adds it.
    pub async fn rollback(
        &self,
        name: &str,
        from: u64,
        context: &WriteContext,
        roles: &[Role],
    ) -> Result<Committed, WriteError> {
        validate_secret_name(name)?;
        self.append(name, context, |state, revision, id| async move {
            require(roles, Permission::ManageSecret { owner: owner_of(state.as_ref()) })?;
            let state = require_status(name, state, &[SecretStatus::Active])?;
            let source = self.readable_version(&state, from).await?;
            let content = self.reader.version_content(name, &source).await?;
            let version =
                NewVersion { content: &content, expires_at_micros: None, rolled_back_from: Some(from), metadata: None };
            self.seal_version(name, Some(&state), &version, revision, id).await
        })
        .await
    }

    /// Replaces a secret's metadata.
    pub async fn set_metadata(
        &self,
        name: &str,
        metadata: &SecretMetadata,
        context: &WriteContext,
        roles: &[Role],
    ) -> Result<Committed, WriteError> {
        validate_secret_name(name)?;
        let _guard = match metadata.delivery.file_name {
            Some(_) => Some(self.file_names.lock().await),
            None => None,
        };
        let committed = self
            .append(name, context, |state, _, _| async move {
                authorize_write(roles, state.as_ref(), Some(metadata))?;
                let state = require_status(name, state, &[SecretStatus::Active])?;
                self.check_metadata(name, Some(&state), metadata).await?;
                let body = MetadataSet { metadata: metadata.clone() };
                Ok(Draft { kind: KIND_SECRET_METADATA_SET, body: encode_body(&body), data_key: None })
            })
            .await?;
        self.settle(&committed).await;
        Ok(committed)
    }

    /// Deletes a secret softly: no one reads it and agents remove its files, but
    /// [`Secrets::restore`] brings it back with its versions and metadata.
    pub async fn delete(&self, name: &str, context: &WriteContext, roles: &[Role]) -> Result<Committed, WriteError> {
        self.transition(name, context, roles, SecretStatus::Active, KIND_SECRET_DELETED).await
    }

    /// Restores a deleted secret.
    pub async fn restore(&self, name: &str, context: &WriteContext, roles: &[Role]) -> Result<Committed, WriteError> {
        self.transition(name, context, roles, SecretStatus::Deleted, KIND_SECRET_RESTORED).await
    }

    async fn transition(
        &self,
        name: &str,
        context: &WriteContext,
        roles: &[Role],
        from: SecretStatus,
        kind: &'static str,
    ) -> Result<Committed, WriteError> {
        validate_secret_name(name)?;
        self.append(name, context, |state, _, _| async move {
            require(roles, Permission::ManageSecret { owner: owner_of(state.as_ref()) })?;
            if kind == KIND_SECRET_DELETED && state.as_ref().is_some_and(|s| s.status == SecretStatus::Deleted) {
                return Err(WriteError::State(format!("secret {name:?} is already deleted")));
            }
            require_status(name, state, &[from])?;
            Ok(Draft { kind, body: encode_body(&Empty {}), data_key: None })
        })
        .await
    }

    /// Destroys one version, or every version when `version` is `None`, and then
    /// erases the wrapped data keys, after which no key can decrypt that content.
    pub async fn destroy(
        &self,
        name: &str,
        version: Option<u64>,
        context: &WriteContext,
        roles: &[Role],
    ) -> Result<Committed, WriteError> {
        validate_secret_name(name)?;
        let doomed: Mutex<Vec<String>> = Mutex::default();
        let committed = self
            .append(name, context, |state, _, _| {
                let doomed = &doomed;
                async move {
                    require(roles, Permission::DestroySecret { owner: owner_of(state.as_ref()) })?;
                    require_status(name, state, &[SecretStatus::Active, SecretStatus::Deleted])?;
                    let (versions, _) = self.reader.versions(name).await?;
                    let (keys, draft) = match version {
                        None => {
                            let keys = versions.iter().filter(|v| !v.destroyed).map(store_key).collect();
                            (keys, Draft { kind: KIND_SECRET_DESTROYED, body: encode_body(&Empty {}), data_key: None })
                        }
                        Some(number) => {
                            let target = versions.iter().find(|v| v.version == number && !v.destroyed);
                            let target = target.ok_or_else(|| {
                                WriteError::State(format!("secret {name:?} has no version {number} to destroy"))
                            })?;
                            let body = encode_body(&VersionRef { version: number });
                            (
                                vec![store_key(target)],
                                Draft { kind: KIND_SECRET_VERSION_DESTROYED, body, data_key: None },
                            )
                        }
                    };
                    *doomed.lock().expect("no panic while holding this lock") = keys;
                    Ok(draft)
                }
            })
            .await?;

        // The event is committed, so the destruction is recorded even if erasing fails
        // now, and `erase_destroyed_keys` finishes it at the next start.
        let keys = std::mem::take(&mut *doomed.lock().expect("no panic while holding this lock"));
        for key in keys {
            if let Err(error) = self.writer.store().erase_data_key(&key).await {
                tracing::error!(secret.name = name, data_key.store_key = %key, %error, "erasing a destroyed version's data key failed; it is retried at the next start");
            }
        }
        Ok(committed)
    }

    /// Records the expiry of a secret's current version, if it is still due. Several
    /// servers may race to record it: they use one idempotency key, so it is
    /// recorded once.
    pub async fn expire(&self, name: &str, version: u64) -> Result<Option<Committed>, WriteError> {
        let context = WriteContext {
            precondition: Precondition::None,
            idempotency_key: Some(format!("expire:{version}:{}", hex::encode(Sha256::digest(name.as_bytes())))),
            actor: Actor { principal: SERVER_PRINCIPAL.to_owned(), authentication: "internal".to_owned() },
            correlation_id: Uuid::now_v7().to_string(),
        };
        let outcome = self
            .append(name, &context, |state, _, _| async move {
                let due = state.as_ref().is_some_and(|s| {
                    s.status != SecretStatus::Destroyed
                        && s.current.version == version
                        && !s.current.expired
                        && !s.current.destroyed
                });
                if !due {
                    return Err(WriteError::State(format!("version {version} of {name:?} is no longer due to expire")));
                }
                Ok(Draft {
                    kind: KIND_SECRET_VERSION_EXPIRED,
                    body: encode_body(&VersionRef { version }),
                    data_key: None,
                })
            })
            .await;
        match outcome {
            // Another server recorded this expiry first.
            Ok(committed) if committed.replayed => Ok(None),
            Ok(committed) => Ok(Some(committed)),
            Err(WriteError::State(_) | WriteError::Conflict { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Erases the wrapped data keys of every destroyed version that still has one:
    /// finishes destructions that a crash or an outage interrupted.
    pub async fn erase_destroyed_keys(&self) -> Result<usize, WriteError> {
        let (secrets, _) = self.reader.list().await?;
        let mut erased = 0;
        for secret in secrets {
            let (versions, _) = self.reader.versions(&secret.name).await?;
            for version in versions.iter().filter(|v| v.destroyed) {
                if self.writer.store().data_key(&version.data_key.store_key).await?.is_some() {
                    self.writer.store().erase_data_key(&version.data_key.store_key).await?;
                    erased += 1;
                }
            }
        }
        Ok(erased)
    }

    /// Appends the event that `decide` drafts from the secret's state at the stream head.
    async fn append<F, Fut>(&self, name: &str, context: &WriteContext, decide: F) -> Result<Committed, WriteError>
    where
        F: Fn(Option<SecretState>, u64, Uuid) -> Fut + Sync,
        Fut: Future<Output = Result<Draft, WriteError>> + Send,
    {
        let aggregate = Aggregate::secret(name);
        let decide = &decide;
        let drafted: Mutex<Option<(&'static str, Vec<u8>)>> = Mutex::default();
        let drafted_ref = &drafted;
        let committed = self
            .writer
            .append(&aggregate, context, &|head, revision, id| {
                let state = self.state_at(name, head);
                let decided = async move {
                    let draft = decide(state.await?, revision, id).await?;
                    *drafted_ref.lock().expect("no panic while holding this lock") =
                        Some((draft.kind, draft.body.clone()));
                    Ok(draft)
                };
                Box::pin(decided)
            })
            .await?;

        // A reused idempotency key returns the first request's outcome, which is only
        // right if this request is a retry of that one.
        let drafted = drafted.into_inner().expect("no panic while holding this lock");
        if let (true, Some((kind, body))) = (committed.replayed, drafted)
            && !same_request(&committed.event, kind, &body)
        {
            return Err(WriteError::IdempotencyKeyReused {
                other: format!("{}, with other values", describe(&aggregate)),
            });
        }
        Ok(committed)
    }

    /// Returns the secret's state as of `head`, the last event on its subject.
    async fn state_at(&self, name: &str, head: Option<Head>) -> Result<Option<SecretState>, WriteError> {
        let Some(head) = head else {
            return Ok(None);
        };
        self.reader.wait_for(head.sequence, STATE_WAIT).await?;
        let (state, _) = self.reader.metadata(name).await?;
        match state {
            Some(state) if state.sequence == head.sequence => Ok(Some(state)),
            _ => Err(WriteError::Invalid(format!(
                "this server's read model does not match the last event of secret {name:?} \
                 (stream sequence {}); retry, and check the projection with `watchword status`",
                head.sequence
            ))),
        }
    }

    /// Checks metadata a command would record: the limits, and that no other secret
    /// claims its file name.
    async fn check_metadata(
        &self,
        name: &str,
        state: Option<&SecretState>,
        metadata: &SecretMetadata,
    ) -> Result<(), WriteError> {
        metadata::validate(metadata, self.limits.max_metadata_bytes).map_err(WriteError::Invalid)?;
        let wanted = effective_file_name(name, metadata);
        let held = state.filter(|s| s.status != SecretStatus::Destroyed).and_then(SecretState::file_name);
        let Some(file_name) = wanted.filter(|wanted| Some(wanted) != held.as_ref()) else {
            return Ok(());
        };

        // Every secret's claim must be in the read model, not only this secret's.
        let last = self.writer.store().last_sequence().await?;
        self.reader.wait_for(last, STATE_WAIT).await?;
        match self.reader.file_name_owner(&file_name).await? {
            Some(other) if other != name => {
                let holder = self.reader.metadata(&other).await?.0;
                let other_deleted = holder.is_some_and(|s| s.status == SecretStatus::Deleted);
                Err(WriteError::FileNameTaken { file_name, other, other_deleted })
            }
            _ => Ok(()),
        }
    }

    /// Returns version `number` of the secret's current incarnation if it can be read.
    async fn readable_version(&self, state: &SecretState, number: u64) -> Result<SecretVersion, WriteError> {
        let (versions, _) = self.reader.versions(&state.name).await?;
        let keep = self.limits.max_readable_versions;
        let readable = readable_versions(&versions, state.incarnation, keep);
        readable.into_iter().find(|v| v.version == number).cloned().ok_or_else(|| {
            WriteError::State(unreadable_version(&state.name, &versions, state.incarnation, keep, number))
        })
    }

    /// Seals content under a fresh data key, stores the wrapped key, and drafts the version event.
    async fn seal_version(
        &self,
        name: &str,
        state: Option<&SecretState>,
        version: &NewVersion<'_>,
        revision: u64,
        id: Uuid,
    ) -> Result<Draft, WriteError> {
        let data_key = seal::new_data_key();
        let content = seal::seal(&data_key, version.content, &content_aad(name, revision));
        let hsm = self.writer.hsm();
        let wrapped = hsm.encrypt_data_key(&data_key, &data_key_aad(name, revision)).await?;
        let wrapped_sha256: [u8; 32] = Sha256::digest(&wrapped).into();
        let store_key = id.simple().to_string();
        self.writer.store().put_data_key(&store_key, wrapped).await?;

        let body = SecretVersionAddedV2 {
            version: state.map_or(0, |s| s.current.version) + 1,
            content,
            data_key: DataKeyRef { kek_id: hsm.kek_id().to_owned(), store_key: store_key.clone(), wrapped_sha256 },
            size: version.content.len() as u64,
            digest: self.digest.digest(version.content),
            expires_at_micros: version.expires_at_micros,
            rolled_back_from: version.rolled_back_from,
            metadata: version.metadata.clone(),
        };
        Ok(Draft { kind: KIND_SECRET_VERSION_ADDED_V2, body: encode_body(&body), data_key: Some(store_key) })
    }

    /// Waits until this node's read model reflects a commit, so the next check of a
    /// file name finds it. Past the bound the commit is kept all the same.
    async fn settle(&self, committed: &Committed) {
        if let Err(error) = self.reader.wait_for(committed.sequence, STATE_WAIT).await {
            tracing::debug!(event.seq = committed.sequence, %error, "commit not yet projected");
        }
    }
}

/// A version about to be sealed.
struct NewVersion<'a> {
    content: &'a [u8],
    expires_at_micros: Option<i64>,
    rolled_back_from: Option<u64>,
    metadata: Option<SecretMetadata>,
}

/// Returns the versions of `incarnation` that may still be read: not destroyed, and
/// among the `keep` newest of that incarnation.
pub fn readable_versions(versions: &[SecretVersion], incarnation: u64, keep: usize) -> Vec<&SecretVersion> {
    let mut readable: Vec<&SecretVersion> =
        versions.iter().filter(|v| v.incarnation == incarnation && !v.destroyed).collect();
    let newest = readable.len().saturating_sub(keep);
    readable.drain(..newest);
    readable
}

/// Explains why version `number` of `name` cannot be read.
pub fn unreadable_version(
    name: &str,
    versions: &[SecretVersion],
    incarnation: u64,
    keep: usize,
    number: u64,
) -> String {
    let reason = match versions.iter().find(|v| v.version == number) {
        None => "it does not exist".to_owned(),
        Some(v) if v.incarnation != incarnation => {
            "it belongs to an earlier incarnation of the name, which was deleted or destroyed".to_owned()
        }
        Some(v) if v.destroyed => "it was destroyed".to_owned(),
        Some(_) => format!("it is older than the {keep} newest versions kept readable (limits.max_readable_versions)"),
    };
    format!("version {number} of secret {name:?} cannot be read: {reason}")
}

/// Returns the metadata a write records: `None` keeps the active secret's metadata.
fn resolve_metadata(state: Option<&SecretState>, change: &MetadataChange) -> Option<SecretMetadata> {
    let active = state.filter(|s| s.status == SecretStatus::Active);
    let base = active.map(|s| s.metadata.clone()).unwrap_or_default();
    match change {
        MetadataChange::Keep if active.is_some() => None,
        MetadataChange::Keep => Some(base),
        MetadataChange::Replace(metadata) => Some(metadata.clone()),
        MetadataChange::Patch(patch) => {
            let mut metadata = base;
            let delivery = &mut metadata.delivery;
            if let Some(owner_group) = &patch.owner_group {
                metadata.owner_group = Some(owner_group.clone());
            }
            if let Some(description) = &patch.description {
                metadata.description = description.clone();
            }
            for (field, value) in [
                (&mut delivery.file_name, &patch.file_name),
                (&mut delivery.owner, &patch.file_owner),
                (&mut delivery.group, &patch.file_group),
            ] {
                if value.is_some() {
                    field.clone_from(value);
                }
            }
            if patch.mode.is_some() {
                delivery.mode = patch.mode;
            }
            Some(metadata)
        }
    }
}

/// A write needs to manage the secret as it is (unless it was destroyed) and as it
/// will be, so that moving a secret to another owner group needs rights on both.
fn authorize_write(
    roles: &[Role],
    state: Option<&SecretState>,
    metadata: Option<&SecretMetadata>,
) -> Result<(), WriteError> {
    if let Some(state) = state.filter(|s| s.status != SecretStatus::Destroyed) {
        require(roles, Permission::ManageSecret { owner: state.metadata.owner_group.as_deref() })?;
    }
    if let Some(metadata) = metadata {
        require(roles, Permission::ManageSecret { owner: metadata.owner_group.as_deref() })?;
    }
    Ok(())
}

fn require(roles: &[Role], permission: Permission<'_>) -> Result<(), WriteError> {
    if permits(roles, permission) {
        return Ok(());
    }
    Err(WriteError::Forbidden(match permission {
        Permission::ManageSecret { owner: Some(group) } | Permission::DestroySecret { owner: Some(group) } => {
            format!("this needs the role admin, or owner:{group} (automation:{group} for changes that can be undone)")
        }
        _ => "only administrators may manage a secret without an owner group; give it one with owner_group \
              (--owner-group), which needs the role owner:<group> or automation:<group> of that group"
            .to_owned(),
    }))
}

fn require_status(name: &str, state: Option<SecretState>, allowed: &[SecretStatus]) -> Result<SecretState, WriteError> {
    match state {
        Some(state) if allowed.contains(&state.status) => Ok(state),
        Some(state) if state.status == SecretStatus::Deleted && allowed == [SecretStatus::Active] => {
            Err(WriteError::State(format!("secret {name:?} is deleted; restore it first")))
        }
        Some(state) if state.status == SecretStatus::Destroyed => Err(WriteError::State(format!(
            "secret {name:?} was destroyed and cannot be restored or changed; write it again to start a new incarnation"
        ))),
        Some(state) if state.status == SecretStatus::Active => {
            Err(WriteError::State(format!("secret {name:?} is not deleted")))
        }
        _ => Err(WriteError::NotFound(Aggregate::secret(name))),
    }
}

/// Returns the owner group of a secret that exists. Permissions are checked before
/// the secret's status, so a caller without rights learns nothing about it.
fn owner_of(state: Option<&SecretState>) -> Option<&str> {
    state.and_then(|s| s.metadata.owner_group.as_deref())
}

fn store_key(version: &SecretVersion) -> String {
    version.data_key.store_key.clone()
}

/// Returns whether a drafted event requests what the stored event `first` did. A
/// version event is compared by its content digest, size, expiry, rollback source
/// and (when both set it) metadata, since each attempt seals under a new data key.
fn same_request(first: &Event, kind: &str, body: &[u8]) -> bool {
    if first.kind != kind {
        return false;
    }
    if kind != KIND_SECRET_VERSION_ADDED_V2 {
        return first.body == body;
    }
    let (Ok(first), Ok(retry)) =
        (decode_body::<SecretVersionAddedV2>(&first.body), decode_body::<SecretVersionAddedV2>(body))
    else {
        return false;
    };
    let metadata_agrees = match (&first.metadata, &retry.metadata) {
        (Some(first), Some(retry)) => first == retry,
        _ => true,
    };
    first.digest == retry.digest
        && first.size == retry.size
        && first.expires_at_micros == retry.expires_at_micros
        && first.rolled_back_from == retry.rolled_back_from
        && metadata_agrees
}

/// Returns the content version that a version event of a secret adds.
pub fn content_version(event: &Event) -> Result<u64, DecodeError> {
    match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED => Ok(decode_body::<SecretVersionAdded>(&event.body)?.version),
        KIND_SECRET_VERSION_ADDED_V2 => Ok(decode_body::<SecretVersionAddedV2>(&event.body)?.version),
        other => Err(DecodeError::Malformed(format!("event kind {other:?} adds no version"))),
    }
}
