//! The pure fold: the one function that applies an event to state.
//!
//! [`fold`] reads the current state through [`StateView`] and returns the changes to
//! make; it has no clock, no I/O and no key material. The server's redb projection,
//! the replay tool and any rebuild all apply events through it, so they cannot drift
//! apart. [`MemoryState`] is the in-memory implementation of the view.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::body::{
    DataKeyRef, KIND_SECRET_VERSION_ADDED, KIND_SIGNING_KEY_CERTIFIED, SealedContent, SecretVersionAdded,
    SigningKeyCertified, decode_body,
};
use crate::error::{ApplyError, FoldError, ViewError};
use crate::event::{Aggregate, AggregateType, Event, EventHash, ZERO_HASH};
use crate::verify::{RecordedEvent, RootKeys, key_id, verify_message};

/// The last event applied to an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateHead {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub last_hash: EventHash,
    pub last_sequence: u64,
}

/// A secret as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    pub name: String,
    /// Aggregate version of the last event: changes on every change of the secret.
    pub revision: u64,
    pub current: SecretVersion,
    /// Stream sequence of the last event applied to this secret.
    pub sequence: u64,
}

/// One version of a secret's content, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    pub version: u64,
    /// Aggregate version of the event that added this version, bound into its AAD.
    pub revision: u64,
    pub content: SealedContent,
    pub data_key: DataKeyRef,
    pub size: u64,
    pub mode: Option<u32>,
    pub created_at_micros: i64,
    pub created_by: String,
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

/// Read access to the state an event is applied to.
pub trait StateView {
    fn aggregate_head(&self, aggregate: &Aggregate) -> Result<Option<AggregateHead>, ViewError>;
    fn secret(&self, name: &str) -> Result<Option<SecretState>, ViewError>;
    fn signing_key(&self, key_id: &str) -> Result<Option<SigningKeyState>, ViewError>;
}

/// A state that changes can be written to.
pub trait StateStore: StateView {
    fn write(&mut self, change: Change) -> Result<(), ViewError>;
}

/// One change the fold asks the state to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Head { aggregate: Aggregate, head: AggregateHead },
    Secret(SecretState),
    SigningKey { key_id: String, state: SigningKeyState },
}

/// Computes the changes that apply `recorded` to the state in `view`.
///
/// Rejects an event whose aggregate version is not the current one plus one, or
/// whose previous hash is not the hash of the aggregate's last event, and stops on
/// an event kind it does not know: a reader never skips what it cannot read.
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
    let change = match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED => fold_version_added(view, recorded)?,
        KIND_SIGNING_KEY_CERTIFIED => fold_key_certified(recorded)?,
        other => return Err(FoldError::UnknownKind { kind: other.to_owned() }),
    };
    Ok(vec![head, change])
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

fn fold_version_added(view: &impl StateView, recorded: &RecordedEvent) -> Result<Change, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::Secret)?;
    let body: SecretVersionAdded = decode(event)?;

    let previous = view.secret(&event.aggregate.id)?.map_or(0, |s| s.current.version);
    if body.version != previous + 1 {
        return Err(inconsistent(event, format!("content version {} follows version {previous}", body.version)));
    }

    Ok(Change::Secret(SecretState {
        name: event.aggregate.id.clone(),
        revision: event.aggregate_version,
        current: SecretVersion {
            version: body.version,
            revision: event.aggregate_version,
            content: body.content,
            data_key: body.data_key,
            size: body.size,
            mode: body.mode,
            created_at_micros: event.recorded_at_micros,
            created_by: event.actor.principal.clone(),
        },
        sequence: recorded.sequence,
    }))
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

fn expect_aggregate(event: &Event, kind: AggregateType) -> Result<(), FoldError> {
    if event.aggregate.kind == kind {
        return Ok(());
    }
    Err(FoldError::WrongAggregate { kind: event.kind.clone(), aggregate: event.aggregate.clone() })
}

fn decode<T: Serialize + for<'a> Deserialize<'a>>(event: &Event) -> Result<T, FoldError> {
    decode_body(&event.body).map_err(|source| FoldError::Body { kind: event.kind.clone(), source })
}

fn inconsistent(event: &Event, reason: String) -> FoldError {
    FoldError::Inconsistent { kind: event.kind.clone(), aggregate: event.aggregate.clone(), reason }
}

/// The whole state in memory: used by replay, and to check the redb projection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    pub heads: BTreeMap<Aggregate, AggregateHead>,
    pub secrets: BTreeMap<String, SecretState>,
    pub signing_keys: BTreeMap<String, SigningKeyState>,
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
            Change::SigningKey { key_id, state } => {
                self.signing_keys.insert(key_id, state);
            }
        }
        Ok(())
    }
}
