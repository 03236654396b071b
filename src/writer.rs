//! The command side: decide, seal, sign and publish a secret write.
//!
//! The expected version comes from the last event on the secret's subject, read
//! from the stream (the read model may lag), and the publish states that event's
//! sequence, so of two concurrent writers only one can append. A write is reported
//! as committed only after JetStream acknowledged it.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use uuid::Uuid;
use watchword_events::body::{
    DataKeyRef, KIND_SECRET_VERSION_ADDED, SecretVersionAdded, content_aad, data_key_aad, decode_body, encode_body,
};
use watchword_events::error::{DecodeError, NameError};
use watchword_events::names::validate_secret_name;
use watchword_events::{Actor, Aggregate, Event, EventHash, Frame, ZERO_HASH};
use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmError};
use crate::seal;
use crate::signer::{EventSigner, now_micros};
use crate::stream::{EventStore, StreamError};

/// Largest secret content accepted, in bytes.
///
/// The content travels inside one event, and NATS rejects messages above its
/// `max_payload` (1 MiB by default); 768 KiB leaves room for the envelope, a
/// 255-byte name and the headers.
pub const MAX_CONTENT_BYTES: usize = 768 * 1024;

/// How often a write without a precondition re-reads the head after losing a race.
const MAX_ATTEMPTS: usize = 5;

/// Condition on the secret's current state that a write requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Write after whatever is current.
    None,
    /// The secret's current revision must be this one (`If-Match`).
    Revision(u64),
    /// The secret must not exist (`If-None-Match: *`).
    Absent,
}

/// A request to write a new version of a secret.
#[derive(Debug)]
pub struct WriteSecret {
    pub name: String,
    pub content: Zeroizing<Vec<u8>>,
    pub mode: Option<u32>,
    pub precondition: Precondition,
    /// Caller-chosen key that makes retries apply once; scoped to the actor.
    pub idempotency_key: Option<String>,
    pub actor: Actor,
    pub correlation_id: String,
}

/// A write JetStream acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub name: String,
    pub version: u64,
    pub revision: u64,
    pub sequence: u64,
    /// The idempotency key had been used: this is the first write's outcome.
    pub replayed: bool,
}

/// Reason a write was not committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("content is {size} bytes, above the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("conflict on secret {name:?}: {}", match current { Some(r) => format!("its current revision is {r}"), None => "it does not exist".to_owned() })]
    Conflict { name: String, current: Option<u64> },
    #[error("idempotency key was already used for another request (secret {other:?}); use a new key for a new request")]
    IdempotencyKeyReused { other: String },
    #[error("too many concurrent writes to secret {name:?}; retry")]
    Contended { name: String },
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("event stream: {0}")]
    Stream(#[from] StreamError),
    #[error("the event stream holds an unreadable event at sequence {sequence}: {source}")]
    CorruptHead { sequence: u64, source: DecodeError },
}

/// The head of a secret's chain as the stream has it.
#[derive(Debug, Clone, Copy)]
struct Head {
    sequence: u64,
    revision: u64,
    version: u64,
    hash: EventHash,
}

/// Writes secrets: one per server, shared by all requests.
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

    /// Commits a new version of a secret.
    pub async fn write(&self, request: &WriteSecret) -> Result<Committed, WriteError> {
        validate_secret_name(&request.name)?;
        if request.content.len() > MAX_CONTENT_BYTES {
            return Err(WriteError::TooLarge { size: request.content.len(), max: MAX_CONTENT_BYTES });
        }

        let aggregate = Aggregate::secret(&request.name);
        let subject = aggregate.subject();
        for _ in 0..MAX_ATTEMPTS {
            let head = self.head(&subject).await?;
            let expected_sequence = check_precondition(request, head)?;

            let (event, store_key) = self.build_event(request, &aggregate, head).await?;
            let frame = self.signer.sign(&event);
            let message_id = message_id(request, &event);
            match self.store.publish(&subject, frame.encode(), &message_id, expected_sequence).await {
                Ok(ack) if ack.duplicate => {
                    self.discard_data_key(&store_key).await;
                    return self.first_outcome(&request.name, ack.sequence).await;
                }
                Ok(ack) => {
                    let version = head.map_or(0, |h| h.version) + 1;
                    return Ok(Committed {
                        name: request.name.clone(),
                        version,
                        revision: event.aggregate_version,
                        sequence: ack.sequence,
                        replayed: false,
                    });
                }
                Err(StreamError::WrongLastSequence { .. }) => {
                    self.discard_data_key(&store_key).await;
                    if request.precondition != Precondition::None || expected_sequence != head.map_or(0, |h| h.sequence)
                    {
                        let current = self.head(&subject).await?.map(|h| h.revision);
                        return Err(WriteError::Conflict { name: request.name.clone(), current });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(WriteError::Contended { name: request.name.clone() })
    }

    async fn head(&self, subject: &str) -> Result<Option<Head>, WriteError> {
        let Some(stored) = self.store.last_on_subject(subject).await? else {
            return Ok(None);
        };
        let corrupt = |source| WriteError::CorruptHead { sequence: stored.sequence, source };
        let frame = Frame::decode(&stored.payload).map_err(corrupt)?;
        let event = Event::from_signed_bytes(&frame.signed).map_err(corrupt)?;
        let version = content_version(&event).map_err(corrupt)?;
        Ok(Some(Head { sequence: stored.sequence, revision: event.aggregate_version, version, hash: frame.hash() }))
    }

    /// Seals the content, stores its wrapped data key, and builds the unsigned event.
    async fn build_event(
        &self,
        request: &WriteSecret,
        aggregate: &Aggregate,
        head: Option<Head>,
    ) -> Result<(Event, String), WriteError> {
        let revision = head.map_or(0, |h| h.revision) + 1;
        let version = head.map_or(0, |h| h.version) + 1;
        let id = Uuid::now_v7();

        let data_key = seal::new_data_key();
        let content = seal::seal(&data_key, &request.content, &content_aad(&request.name, revision));
        let wrapped = self.hsm.encrypt_data_key(&data_key, &data_key_aad(&request.name, revision)).await?;
        let wrapped_sha256: [u8; 32] = Sha256::digest(&wrapped).into();
        let store_key = id.simple().to_string();
        self.store.put_data_key(&store_key, wrapped).await?;

        let body = SecretVersionAdded {
            version,
            content,
            data_key: DataKeyRef { kek_id: self.hsm.kek_id().to_owned(), store_key: store_key.clone(), wrapped_sha256 },
            size: request.content.len() as u64,
            mode: request.mode,
        };
        let event = Event {
            id,
            kind: KIND_SECRET_VERSION_ADDED.to_owned(),
            aggregate: aggregate.clone(),
            aggregate_version: revision,
            previous_hash: head.map_or(ZERO_HASH, |h| h.hash),
            recorded_at_micros: now_micros(),
            actor: request.actor.clone(),
            correlation_id: request.correlation_id.clone(),
            key_id: self.signer.key_id().to_owned(),
            body: encode_body(&body),
        };
        Ok((event, store_key))
    }

    /// Returns the outcome of the write that first used this idempotency key.
    async fn first_outcome(&self, name: &str, sequence: u64) -> Result<Committed, WriteError> {
        let stored = self.store.get(sequence).await?;
        let corrupt = |source| WriteError::CorruptHead { sequence, source };
        let frame = Frame::decode(&stored.payload).map_err(corrupt)?;
        let event = Event::from_signed_bytes(&frame.signed).map_err(corrupt)?;
        if event.aggregate != Aggregate::secret(name) {
            return Err(WriteError::IdempotencyKeyReused { other: event.aggregate.id });
        }
        Ok(Committed {
            name: name.to_owned(),
            version: content_version(&event).map_err(corrupt)?,
            revision: event.aggregate_version,
            sequence,
            replayed: true,
        })
    }

    /// Erases the wrapped data key of an event that was not stored, so it leaves no
    /// orphan behind. A failure only leaves an unreferenced wrapped key.
    async fn discard_data_key(&self, store_key: &str) {
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
fn check_precondition(request: &WriteSecret, head: Option<Head>) -> Result<u64, WriteError> {
    let current = head.map(|h| h.revision);
    let holds = match request.precondition {
        Precondition::None => true,
        Precondition::Absent => current.is_none(),
        Precondition::Revision(expected) => current == Some(expected),
    };
    match head {
        _ if holds => Ok(head.map_or(0, |h| h.sequence)),
        Some(_) if request.idempotency_key.is_some() => Ok(0),
        _ => Err(WriteError::Conflict { name: request.name.clone(), current }),
    }
}

/// Returns the content version a secret's event leaves the secret at.
fn content_version(event: &Event) -> Result<u64, DecodeError> {
    match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED => Ok(decode_body::<SecretVersionAdded>(&event.body)?.version),
        other => {
            Err(DecodeError::Malformed(format!("event kind {other:?} on a secret subject is unknown to this server")))
        }
    }
}

/// Derives the `Nats-Msg-Id`: from the actor and the idempotency key when there is
/// one, so a retry is stored once, and from the event id otherwise.
fn message_id(request: &WriteSecret, event: &Event) -> String {
    match &request.idempotency_key {
        Some(key) => {
            let mut hasher = Sha256::new();
            hasher.update(request.actor.principal.as_bytes());
            hasher.update([0]);
            hasher.update(key.as_bytes());
            format!("idem:{}", hex::encode(hasher.finalize()))
        }
        None => format!("event:{}", event.id),
    }
}
