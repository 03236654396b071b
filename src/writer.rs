//! The command side: decide, sign and publish events on one aggregate's chain.
//!
//! The current state of an aggregate is decided from its last event, read from the
//! stream (the read model may lag), and the publish states that event's sequence,
//! so of two concurrent writers only one can append. Secret commands (see
//! `crate::secrets`) read the state that event leaves from the read model. A write is reported as
//! committed only after JetStream acknowledged it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;
use watchword_events::error::{DecodeError, NameError};
use watchword_events::{Actor, Aggregate, Event, EventHash, Frame, ZERO_HASH};

use crate::hsm::{Hsm, HsmError};
use crate::signer::{EventSigner, now_micros};
use crate::stream::{EventStore, StreamError};

/// Largest secret content accepted, in bytes.
///
/// The content travels inside one event, and NATS rejects messages above its
/// `max_payload` (1 MiB by default); 768 KiB leaves room for the envelope, a
/// 255-byte name and the headers.
pub const MAX_CONTENT_BYTES: usize = 768 * 1024;

/// How often a write without a precondition re-reads the head after losing a race.
const MAX_ATTEMPTS: u32 = 30;

/// Maximum pause before the next attempt after losing a race. The pause grows with
/// each attempt and is random below it, so racing writers spread out.
const MAX_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Condition on the aggregate's current revision that a write requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write after whatever is current.
    None,
    /// The current revision must be this one (`If-Match`).
    Revision(u64),
    /// The secret must not exist (`If-None-Match: *`).
    Absent,
}

/// Actor, correlation id, precondition and idempotency key of a write, common to every command.
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub precondition: Precondition,
    /// Caller-chosen key that makes retries apply once; scoped to the actor.
    pub idempotency_key: Option<String>,
    pub actor: Actor,
    pub correlation_id: String,
}

/// An event JetStream acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The committed event; for a replayed request, the first request's event.
    pub event: Event,
    pub sequence: u64,
    /// The idempotency key had been used: this is the first write's outcome.
    pub replayed: bool,
}

impl Committed {
    pub fn revision(&self) -> u64 {
        self.event.aggregate_version
    }
}

/// Reason a write was not committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("content is {size} bytes, above the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("conflict on {}: {}", describe(aggregate), match current { Some(r) => format!("its current revision is {r}"), None => "it does not exist".to_owned() })]
    Conflict { aggregate: Aggregate, current: Option<u64> },
    /// The command does not apply to the aggregate's current state.
    #[error("{0}")]
    State(String),
    #[error("{} not found", describe(.0))]
    NotFound(Aggregate),
    /// A credential such as an enrolment token was refused.
    #[error("{0}")]
    Rejected(String),
    #[error("certificate authority: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("idempotency key was already used for another request (on {other}); use a new key for a new request")]
    IdempotencyKeyReused { other: String },
    /// The caller lacks the role the command needs.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("file name {file_name:?} is already used by secret {other:?}{}; choose another file_name", if *other_deleted { ", which is deleted but keeps its file name until it is destroyed" } else { "" })]
    FileNameTaken { file_name: String, other: String, other_deleted: bool },
    #[error(transparent)]
    Read(#[from] crate::reader::ReadError),
    #[error("too many concurrent writes to {}; retry", describe(.0))]
    Contended(Aggregate),
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("event stream: {0}")]
    Stream(#[from] StreamError),
    #[error("the event stream holds an unreadable event at sequence {sequence}: {source}")]
    CorruptHead { sequence: u64, source: DecodeError },
}

/// Names an aggregate for messages, such as `secret "db/password"`.
pub fn describe(aggregate: &Aggregate) -> String {
    format!("{} {:?}", aggregate.kind.as_str().replace('_', " "), aggregate.id)
}

/// The last event of an aggregate as the stream has it.
#[derive(Debug, Clone)]
pub struct Head {
    pub sequence: u64,
    pub hash: EventHash,
    pub event: Event,
}

/// Event a command decided to append: its kind, its body, and the store key of a
/// wrapped data key written for it, which is erased if the event is not stored.
#[derive(Debug)]
pub struct Draft {
    pub kind: &'static str,
    pub body: Vec<u8>,
    pub data_key: Option<String>,
}

type DraftFuture<'a> = Pin<Box<dyn Future<Output = Result<Draft, WriteError>> + Send + 'a>>;

/// Appends events to aggregates' chains: one per server, shared by all requests.
#[derive(Debug, Clone)]
pub struct Writer {
    store: EventStore,
    hsm: Hsm,
    signer: Arc<EventSigner>,
}

impl Writer {
    pub fn new(store: EventStore, hsm: Hsm, signer: Arc<EventSigner>) -> Writer {
        Writer { store, hsm, signer }
    }

    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Appends the event that `decide` drafts from the aggregate's last event.
    ///
    /// `decide` receives the head, the revision the new event gets, and its id; it
    /// runs again when a concurrent writer appended first and the context has no
    /// precondition.
    pub async fn append<'a>(
        &'a self,
        aggregate: &Aggregate,
        context: &WriteContext,
        decide: &(dyn Fn(Option<Head>, u64, Uuid) -> DraftFuture<'a> + Sync + 'a),
    ) -> Result<Committed, WriteError> {
        let subject = aggregate.subject();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            let head = self.head(&subject).await?;
            let expected_sequence = check_precondition(aggregate, context, head.as_ref())?;
            let revision = head.as_ref().map_or(0, |h| h.event.aggregate_version) + 1;
            let id = Uuid::now_v7();
            let draft = match decide(head.clone(), revision, id).await {
                Ok(draft) => draft,
                // A retry of a command that succeeded may no longer apply to the new
                // state (a second delete), but its first outcome is still the response.
                Err(error) => return self.replayed(aggregate, context).await?.ok_or(error),
            };

            let event = Event {
                id,
                kind: draft.kind.to_owned(),
                aggregate: aggregate.clone(),
                aggregate_version: revision,
                previous_hash: head.as_ref().map_or(ZERO_HASH, |h| h.hash),
                recorded_at_micros: now_micros(),
                actor: context.actor.clone(),
                correlation_id: context.correlation_id.clone(),
                key_id: self.signer.key_id().to_owned(),
                body: draft.body,
            };
            let frame = self.signer.sign(&event);
            let message_id = message_id(context, &event);
            match self.store.publish(&subject, frame.encode(), &message_id, expected_sequence).await {
                Ok(ack) if ack.duplicate => {
                    self.discard_data_key(draft.data_key.as_deref()).await;
                    return self.first_outcome(aggregate, ack.sequence).await;
                }
                Ok(ack) => return Ok(Committed { event, sequence: ack.sequence, replayed: false }),
                Err(StreamError::WrongLastSequence { .. }) => {
                    self.discard_data_key(draft.data_key.as_deref()).await;
                    let raced = expected_sequence == head.as_ref().map_or(0, |h| h.sequence);
                    if context.precondition != Precondition::None || !raced {
                        let current = self.head(&subject).await?.map(|h| h.event.aggregate_version);
                        return Err(WriteError::Conflict { aggregate: aggregate.clone(), current });
                    }
                }
                Err(e) => {
                    self.discard_data_key(draft.data_key.as_deref()).await;
                    return Err(e.into());
                }
            }
        }
        Err(WriteError::Contended(aggregate.clone()))
    }

    /// Returns the outcome of the request that first used the context's idempotency
    /// key, if one did within JetStream's duplicate window.
    ///
    /// It publishes an empty probe with that key's `Nats-Msg-Id` and an expected
    /// subject sequence that no subject can have. JetStream checks the message id
    /// first, so a used key returns the first message's sequence as a duplicate, and
    /// any other probe fails the sequence check and is not stored.
    async fn replayed(&self, aggregate: &Aggregate, context: &WriteContext) -> Result<Option<Committed>, WriteError> {
        let Some(message_id) = idempotent_message_id(context) else {
            return Ok(None);
        };
        match self.store.publish(&aggregate.subject(), Vec::new(), &message_id, u64::MAX).await {
            Ok(ack) if ack.duplicate => Ok(Some(self.first_outcome(aggregate, ack.sequence).await?)),
            Ok(ack) => Err(WriteError::CorruptHead {
                sequence: ack.sequence,
                source: DecodeError::Malformed("an idempotency probe was stored as a message".to_owned()),
            }),
            Err(StreamError::WrongLastSequence { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Signs `message` with the HSM root key, for credentials the server issues.
    pub async fn sign_with_root(&self, message: &[u8]) -> Result<[u8; 64], WriteError> {
        Ok(self.hsm.sign_with_root(message).await?)
    }

    /// Returns the last event on `subject`, read from the stream.
    pub async fn head(&self, subject: &str) -> Result<Option<Head>, WriteError> {
        let Some(stored) = self.store.last_on_subject(subject).await? else {
            return Ok(None);
        };
        let corrupt = |source| WriteError::CorruptHead { sequence: stored.sequence, source };
        let frame = Frame::decode(&stored.payload).map_err(corrupt)?;
        let event = Event::from_signed_bytes(&frame.signed).map_err(corrupt)?;
        Ok(Some(Head { sequence: stored.sequence, hash: frame.hash(), event }))
    }

    /// Returns the outcome of the write that first used this idempotency key.
    async fn first_outcome(&self, aggregate: &Aggregate, sequence: u64) -> Result<Committed, WriteError> {
        let stored = self.store.get(sequence).await?;
        let corrupt = |source| WriteError::CorruptHead { sequence, source };
        let frame = Frame::decode(&stored.payload).map_err(corrupt)?;
        let event = Event::from_signed_bytes(&frame.signed).map_err(corrupt)?;
        if &event.aggregate != aggregate {
            return Err(WriteError::IdempotencyKeyReused { other: describe(&event.aggregate) });
        }
        Ok(Committed { event, sequence, replayed: true })
    }

    /// Erases the wrapped data key of an event that was not stored, so it leaves no
    /// orphan behind. A failure only leaves an unreferenced wrapped key.
    async fn discard_data_key(&self, store_key: Option<&str>) {
        let Some(store_key) = store_key else {
            return;
        };
        if let Err(error) = self.store.erase_data_key(store_key).await {
            tracing::warn!(data_key.store_key = store_key, %error, "could not erase an unused wrapped data key");
        }
    }
}

/// Returns the expected subject sequence to publish with, or the conflict.
///
/// When the precondition fails but the request carries an idempotency key, the
/// request may be the retry of a write that committed. It is then published with an
/// expected sequence of 0, which cannot match a subject that has events:
/// JetStream checks `Nats-Msg-Id` before the expected sequence, so a retry gets the
/// first outcome and any other request gets the conflict.
fn check_precondition(aggregate: &Aggregate, context: &WriteContext, head: Option<&Head>) -> Result<u64, WriteError> {
    let current = head.map(|h| h.event.aggregate_version);
    let satisfied = match context.precondition {
        Precondition::None => true,
        Precondition::Absent => current.is_none(),
        Precondition::Revision(expected) => current == Some(expected),
    };
    match head {
        _ if satisfied => Ok(head.map_or(0, |h| h.sequence)),
        Some(_) if context.idempotency_key.is_some() => Ok(0),
        _ => Err(WriteError::Conflict { aggregate: aggregate.clone(), current }),
    }
}

/// Returns a random pause of up to `attempt` × 2 ms, at most [`MAX_RETRY_PAUSE`].
fn retry_pause(attempt: u32) -> std::time::Duration {
    use rand::Rng;
    let bound = std::time::Duration::from_millis(2 * u64::from(attempt)).min(MAX_RETRY_PAUSE);
    bound.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
}

/// Derives the `Nats-Msg-Id`: from the actor and the idempotency key when there is
/// one, so a retry is stored once, and from the event id otherwise.
fn message_id(context: &WriteContext, event: &Event) -> String {
    idempotent_message_id(context).unwrap_or_else(|| format!("event:{}", event.id))
}

fn idempotent_message_id(context: &WriteContext) -> Option<String> {
    let key = context.idempotency_key.as_ref()?;
    let mut hasher = Sha256::new();
    hasher.update(context.actor.principal.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    Some(format!("idem:{}", hex::encode(hasher.finalize())))
}
