//! The JetStream side: the event stream and the store of wrapped data keys.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use watchword_events::names::EVENT_SUBJECT_PREFIX;

use crate::config::NatsConfig;

/// Subject filter of every event subject.
pub const EVENT_SUBJECTS: &str = "watchword.ev.>";

/// Prefix of the subjects of wrapped data keys, one subject per key.
const DATA_KEY_PREFIX: &str = "watchword.dk";

/// A failure of JetStream, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "cannot connect to NATS at {url}: {message}; check nats.url and that nats-server runs with JetStream (-js)"
    )]
    Connect { url: String, message: String },
    #[error("stream {stream} is misconfigured: {message}")]
    Misconfigured { stream: String, message: String },
    #[error("JetStream {operation} failed: {message}")]
    Request { operation: &'static str, message: String },
    #[error("the expected last sequence of {subject} is stale")]
    WrongLastSequence { subject: String },
}

/// A stored stream message.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub subject: String,
    pub sequence: u64,
    pub payload: Bytes,
}

/// The outcome of an acknowledged publish.
#[derive(Debug, Clone, Copy)]
pub struct Acknowledged {
    pub sequence: u64,
    /// JetStream had already stored a message with the same `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// Handles on the event stream and the data-key bucket.
#[derive(Clone, Debug)]
pub struct EventStore {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    data_keys: stream::Stream,
    stream_name: String,
}

impl EventStore {
    /// Connects to NATS and creates the stream and bucket with the right settings if missing.
    pub async fn connect(config: &NatsConfig) -> Result<EventStore, StreamError> {
        let client = async_nats::ConnectOptions::new()
            .name("watchword-server")
            .connection_timeout(Duration::from_secs(5))
            .connect(&config.url)
            .await
            .map_err(|e| StreamError::Connect { url: config.url.clone(), message: e.to_string() })?;
        let jetstream = jetstream::new(client);

        let stream = ensure_event_stream(&jetstream, config).await?;
        let data_keys = ensure_data_key_stream(&jetstream, config).await?;
        Ok(EventStore { jetstream, stream, data_keys, stream_name: config.stream.clone() })
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn stream(&self) -> &stream::Stream {
        &self.stream
    }

    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// Returns the last message on `subject`, read from the stream itself rather than
    /// from a read model that may lag.
    pub async fn last_on_subject(&self, subject: &str) -> Result<Option<StoredEvent>, StreamError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        match self.stream.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(stored(message))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(request_error("direct get", e)),
        }
    }

    /// Returns the message at a stream sequence.
    pub async fn get(&self, sequence: u64) -> Result<StoredEvent, StreamError> {
        let message = self.stream.direct_get(sequence).await.map_err(|e| request_error("direct get", e))?;
        Ok(stored(message))
    }

    /// Publishes a frame and waits for JetStream's acknowledgement.
    ///
    /// `expected_subject_sequence` is the sequence of the last message on the subject
    /// (0: the subject must be empty), so two writers cannot both append after it.
    pub async fn publish(
        &self,
        subject: &str,
        payload: Vec<u8>,
        message_id: &str,
        expected_subject_sequence: u64,
    ) -> Result<Acknowledged, StreamError> {
        debug_assert!(subject.starts_with(EVENT_SUBJECT_PREFIX));
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(message_id)
            .expected_last_subject_sequence(expected_subject_sequence);
        let pending =
            self.jetstream.send_publish(subject.to_owned(), publish).await.map_err(|e| publish_error(subject, e))?;
        let ack = pending.await.map_err(|e| publish_error(subject, e))?;
        Ok(Acknowledged { sequence: ack.sequence, duplicate: ack.duplicate })
    }

    /// Returns the sequence of the last message in the event stream.
    pub async fn last_sequence(&self) -> Result<u64, StreamError> {
        let mut stream = self.stream.clone();
        let info = stream.info().await.map_err(|e| request_error("stream info", e))?;
        Ok(info.state.last_sequence)
    }

    /// Stores a wrapped data key under `key` and waits for the acknowledgement.
    pub async fn put_data_key(&self, key: &str, wrapped: Vec<u8>) -> Result<(), StreamError> {
        let subject = format!("{DATA_KEY_PREFIX}.{key}");
        let pending =
            self.jetstream.publish(subject, wrapped.into()).await.map_err(|e| request_error("data key put", e))?;
        pending.await.map_err(|e| request_error("data key put", e))?;
        Ok(())
    }

    /// Returns a wrapped data key, or `None` once it has been erased.
    pub async fn data_key(&self, key: &str) -> Result<Option<Bytes>, StreamError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        match self.data_keys.direct_get_last_for_subject(format!("{DATA_KEY_PREFIX}.{key}")).await {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(request_error("data key get", e)),
        }
    }

    /// Stores a wrapped key under `key` only if no key is stored there yet; returns
    /// false when another writer stored one first.
    pub async fn put_data_key_once(&self, key: &str, wrapped: Vec<u8>) -> Result<bool, StreamError> {
        let subject = format!("{DATA_KEY_PREFIX}.{key}");
        let publish =
            jetstream::message::PublishMessage::build().payload(wrapped.into()).expected_last_subject_sequence(0);
        let pending =
            self.jetstream.send_publish(subject.clone(), publish).await.map_err(|e| publish_error(&subject, e))?;
        match pending.await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(publish_error(&subject, e)),
        }
    }

    /// Erases a wrapped data key. The message is first deleted with JetStream's
    /// secure erase, which overwrites its bytes in the stream's files, and the
    /// subject is then purged, so no later read can return it.
    pub async fn erase_data_key(&self, key: &str) -> Result<(), StreamError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let subject = format!("{DATA_KEY_PREFIX}.{key}");
        match self.data_keys.direct_get_last_for_subject(&subject).await {
            Ok(message) => {
                self.data_keys
                    .delete_message(message.sequence)
                    .await
                    .map_err(|e| request_error("data key erase", e))?;
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
            Err(e) => return Err(request_error("data key get", e)),
        }
        self.data_keys
            .purge()
            .filter(format!("{DATA_KEY_PREFIX}.{key}"))
            .await
            .map_err(|e| request_error("data key purge", e))?;
        Ok(())
    }
}

async fn ensure_event_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, StreamError> {
    let expected = stream::Config {
        name: config.stream.clone(),
        subjects: vec![EVENT_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(config.duplicate_window_secs),
        retention: stream::RetentionPolicy::Limits,
        // The stream is the source of truth: nothing may remove an event from it.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    };
    let mut stream = jetstream.get_or_create_stream(expected).await.map_err(|e| request_error("stream create", e))?;
    let info = stream.info().await.map_err(|e| request_error("stream info", e))?;
    check_stream(&config.stream, &info.config)?;
    Ok(stream)
}

/// Rejects an existing stream whose settings would break Watchword's guarantees.
fn check_stream(name: &str, config: &stream::Config) -> Result<(), StreamError> {
    let misconfigured = |message: String| StreamError::Misconfigured { stream: name.to_owned(), message };
    if !config.subjects.iter().any(|s| s == EVENT_SUBJECTS) {
        return Err(misconfigured(format!("its subjects {:?} do not include {EVENT_SUBJECTS}", config.subjects)));
    }
    if !config.allow_direct {
        return Err(misconfigured("allow_direct is off; enable it (nats stream edit --allow-direct)".to_owned()));
    }
    if config.max_messages > 0
        || config.max_bytes > 0
        || config.max_age > Duration::ZERO
        || config.max_messages_per_subject > 0
    {
        return Err(misconfigured(
            "it has limits that would drop events; remove max_msgs, max_bytes, max_age and max_msgs_per_subject"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Creates the stream of wrapped data keys: one message per key, each on its own
/// subject, erasable by purging that subject (unlike the event stream).
async fn ensure_data_key_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, StreamError> {
    let expected = stream::Config {
        name: config.data_key_stream.clone(),
        description: Some("Wrapped data keys of secret versions; purging one destroys that version".to_owned()),
        subjects: vec![format!("{DATA_KEY_PREFIX}.>")],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_messages_per_subject: 1,
        allow_direct: true,
        ..Default::default()
    };
    let mut stream =
        jetstream.get_or_create_stream(expected).await.map_err(|e| request_error("data key stream create", e))?;
    let info = stream.info().await.map_err(|e| request_error("data key stream info", e))?;
    if !info.config.allow_direct {
        return Err(StreamError::Misconfigured {
            stream: config.data_key_stream.clone(),
            message: "allow_direct is off; enable it (nats stream edit --allow-direct)".to_owned(),
        });
    }
    Ok(stream)
}

/// Creates the notices stream, or brings an existing one to the configured
/// retention. Limits by age and size drop the oldest notices, never the events.
pub async fn ensure_changes_stream(
    jetstream: &jetstream::Context,
    nats: &NatsConfig,
    changes: &crate::changes::ChangesConfig,
) -> Result<stream::Stream, StreamError> {
    use crate::changes::CHANGE_SUBJECTS;
    let expected = stream::Config {
        name: changes.stream.clone(),
        description: Some("Change notices of secrets, metadata only; see docs/changes.md".to_owned()),
        subjects: vec![CHANGE_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        num_replicas: nats.replicas,
        duplicate_window: Duration::from_secs(nats.duplicate_window_secs),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: changes.max_age(),
        max_bytes: changes.max_bytes(),
        // Readers find a position by bisecting sequences, which needs no holes.
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    };
    let mut stream = jetstream
        .get_or_create_stream(expected.clone())
        .await
        .map_err(|e| request_error("notices stream create", e))?;
    let info = stream.info().await.map_err(|e| request_error("notices stream info", e))?.clone();
    let misconfigured = |message: String| StreamError::Misconfigured { stream: changes.stream.clone(), message };
    if !info.config.subjects.iter().any(|s| s == CHANGE_SUBJECTS) {
        return Err(misconfigured(format!("its subjects {:?} do not include {CHANGE_SUBJECTS}", info.config.subjects)));
    }
    if !info.config.allow_direct || !info.config.deny_delete {
        return Err(misconfigured("it must have allow_direct and deny_delete set".to_owned()));
    }
    if info.config.max_age != expected.max_age || info.config.max_bytes != expected.max_bytes {
        tracing::info!(
            stream = %changes.stream,
            max_age_days = changes.max_age_days,
            max_bytes_mib = changes.max_bytes_mib,
            "changing the retention of the notices stream to the configured one"
        );
        let updated = stream::Config { max_age: expected.max_age, max_bytes: expected.max_bytes, ..info.config };
        jetstream.update_stream(updated).await.map_err(|e| request_error("notices stream update", e))?;
        stream = jetstream.get_stream(&changes.stream).await.map_err(|e| request_error("notices stream get", e))?;
    }
    Ok(stream)
}

fn stored(message: async_nats::jetstream::message::StreamMessage) -> StoredEvent {
    StoredEvent { subject: message.subject.to_string(), sequence: message.sequence, payload: message.payload }
}

fn publish_error(subject: &str, error: jetstream::context::PublishError) -> StreamError {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => StreamError::WrongLastSequence { subject: subject.to_owned() },
        _ => request_error("publish", error),
    }
}

fn request_error(operation: &'static str, error: impl std::fmt::Display) -> StreamError {
    StreamError::Request { operation, message: error.to_string() }
}
