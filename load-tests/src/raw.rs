//! Baselines on JetStream alone, against the nats-server that the Watchword server
//! uses, on streams of their own.
//!
//! - `plain`: each publisher publishes a message and awaits its acknowledgement.
//! - `write-path`: each publisher makes the same JetStream requests as one
//!   Watchword write, without HTTPS, HSM, signing or projection. It direct-gets
//!   its subject's last message and publishes a 60-byte message on a data-key
//!   stream. Then it publishes the event with a `Nats-Msg-Id` and the expected
//!   last subject sequence. Both publishes await their acknowledgement.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, context::Context as JetStream, message::PublishMessage, stream};
use bytes::Bytes;
use clap::ValueEnum;

/// Stream of the baseline's messages (in the role of `WATCHWORD_EVENTS`).
const EVENT_STREAM: &str = "WATCHWORD_LOAD_RAW";
const EVENT_PREFIX: &str = "watchword-load.ev";
/// Stream of the baseline's data keys (in the role of `WATCHWORD_DATA_KEYS`).
const DATA_KEY_STREAM: &str = "WATCHWORD_LOAD_RAW_DK";
const DATA_KEY_PREFIX: &str = "watchword-load.dk";

/// Length of a wrapped data key: 12-byte IV, 32-byte key, 16-byte GCM tag.
const WRAPPED_DATA_KEY_LEN: usize = 60;

/// JetStream requests that one baseline operation makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// One publish, acknowledgement awaited.
    Plain,
    /// The requests of one Watchword write: direct get, data-key publish, event publish.
    WritePath,
}

impl Protocol {
    pub fn target(self) -> &'static str {
        match self {
            Protocol::Plain => "raw-publish",
            Protocol::WritePath => "raw-write-path",
        }
    }
}

/// Connection and streams of the baselines.
#[derive(Debug, Clone)]
pub struct RawStreams {
    jetstream: JetStream,
    events: stream::Stream,
    data_key: Bytes,
    /// Watchword's event stream, read only to size the baseline's messages.
    product_stream: String,
    /// Distinguishes this process's message ids from earlier ones still in the
    /// duplicate window.
    nonce: String,
}

impl RawStreams {
    /// Connects and creates the baseline streams if missing, with the settings the
    /// Watchword server gives its own streams (file storage, one replica).
    pub async fn connect(url: &str, product_stream: &str) -> anyhow::Result<RawStreams> {
        let client = async_nats::ConnectOptions::new()
            .name("watchword-load")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))?;
        let jetstream = jetstream::new(client);
        let events = jetstream
            .get_or_create_stream(stream::Config {
                name: EVENT_STREAM.to_owned(),
                subjects: vec![format!("{EVENT_PREFIX}.>")],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create stream {EVENT_STREAM}"))?;
        jetstream
            .get_or_create_stream(stream::Config {
                name: DATA_KEY_STREAM.to_owned(),
                subjects: vec![format!("{DATA_KEY_PREFIX}.>")],
                storage: stream::StorageType::File,
                max_messages_per_subject: 1,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create stream {DATA_KEY_STREAM}"))?;
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let nonce = format!("{}-{}", std::process::id(), started.as_micros());
        let data_key = Bytes::from(vec![0x3c; WRAPPED_DATA_KEY_LEN]);
        Ok(RawStreams { jetstream, events, data_key, product_stream: product_stream.to_owned(), nonce })
    }

    /// Removes every message from both baseline streams, so each run starts empty.
    pub async fn purge(&self) -> anyhow::Result<()> {
        for name in [EVENT_STREAM, DATA_KEY_STREAM] {
            let stream = self.jetstream.get_stream(name).await.with_context(|| format!("cannot open stream {name}"))?;
            stream.purge().await.with_context(|| format!("cannot purge stream {name}"))?;
        }
        Ok(())
    }

    /// Returns the size of the last message on `subject` in Watchword's event stream.
    pub async fn last_event_size(&self, subject: &str) -> anyhow::Result<usize> {
        let name = &self.product_stream;
        let stream = self.jetstream.get_stream(name).await.with_context(|| format!("cannot open stream {name}"))?;
        let message = stream
            .direct_get_last_for_subject(subject)
            .await
            .with_context(|| format!("cannot read the last event on {subject}"))?;
        Ok(message.payload.len())
    }

    /// Runs one baseline operation for `publisher`; `operation` makes message ids unique.
    pub async fn operate(
        &self,
        protocol: Protocol,
        publisher: usize,
        operation: usize,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        match protocol {
            Protocol::Plain => self.publish(format!("{EVENT_PREFIX}.{publisher}"), payload).await,
            Protocol::WritePath => self.write_path(publisher, operation, payload).await,
        }
    }

    async fn publish(&self, subject: String, payload: Bytes) -> anyhow::Result<()> {
        let pending = self.jetstream.publish(subject, payload).await.context("publish failed")?;
        pending.await.context("publish was not acknowledged")?;
        Ok(())
    }

    async fn write_path(&self, publisher: usize, operation: usize, payload: Bytes) -> anyhow::Result<()> {
        use async_nats::jetstream::stream::DirectGetErrorKind;

        let subject = format!("{EVENT_PREFIX}.{publisher}");
        let last = match self.events.direct_get_last_for_subject(subject.clone()).await {
            Ok(message) => message.sequence,
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => 0,
            Err(error) => return Err(error).context("direct get failed"),
        };
        let nonce = &self.nonce;
        self.publish(format!("{DATA_KEY_PREFIX}.{nonce}.{operation}"), self.data_key.clone()).await?;

        let message = PublishMessage::build()
            .payload(payload)
            .message_id(format!("raw:{nonce}:{operation}"))
            .expected_last_subject_sequence(last);
        let pending = self.jetstream.send_publish(subject, message).await.context("publish failed")?;
        pending.await.context("publish was not acknowledged")?;
        Ok(())
    }
}
