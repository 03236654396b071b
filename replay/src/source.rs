//! Sources of a history: a live JetStream stream or an archive file.

use std::path::PathBuf;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;

use crate::ReplayError;
use crate::archive::ArchiveReader;
use crate::progress;

/// Update the progress bar every this many messages.
const PROGRESS_STEP: u64 = 1024;

/// A history to read.
#[derive(Debug, Clone)]
pub enum Source {
    /// A live stream: everything up to its last message when reading starts.
    Nats { url: String, stream: String },
    /// An archive that `watchword-replay export` wrote.
    Archive(PathBuf),
}

/// One stored stream message.
#[derive(Debug, Clone)]
pub struct Message {
    pub sequence: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    /// The archive records this message as skipped: not an event, by the
    /// exporting auditor's decision. Always false for a live stream.
    pub skipped: bool,
}

/// Whether reading goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

impl Source {
    /// Names the source in messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Nats { url, stream } => format!("stream {stream} at {url}"),
            Source::Archive(path) => format!("archive {}", path.display()),
        }
    }

    /// Returns the root public keys an archive records, or `None` for a stream.
    pub fn recorded_root_keys(&self) -> Result<Option<Vec<[u8; 32]>>, ReplayError> {
        match self {
            Source::Nats { .. } => Ok(None),
            Source::Archive(path) => Ok(Some(ArchiveReader::open(path)?.header().root_keys())),
        }
    }

    /// Passes every message, in stream order, to `visit` until it returns [`Flow::Stop`].
    pub async fn read(&self, visit: impl FnMut(Message) -> Result<Flow, ReplayError>) -> Result<(), ReplayError> {
        match self {
            Source::Nats { url, stream } => read_nats(url, stream, visit).await,
            Source::Archive(path) => read_archive(path, visit),
        }
    }
}

fn read_archive(
    path: &std::path::Path,
    mut visit: impl FnMut(Message) -> Result<Flow, ReplayError>,
) -> Result<(), ReplayError> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut archive = ArchiveReader::open(path)?;
    let bar = progress::bar(size, true);
    let mut count = 0u64;
    while let Some(record) = archive.next_message()? {
        count += 1;
        if count % PROGRESS_STEP == 0 {
            bar.set_position(archive.bytes_read());
        }
        let skipped = record.skipped();
        let message = Message { sequence: record.sequence, subject: record.subject, payload: record.payload, skipped };
        if visit(message)? == Flow::Stop {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

async fn read_nats(
    url: &str,
    stream_name: &str,
    mut visit: impl FnMut(Message) -> Result<Flow, ReplayError>,
) -> Result<(), ReplayError> {
    let source_error =
        |message: String| ReplayError::Source { source_name: format!("stream {stream_name} at {url}"), message };
    let client = async_nats::connect(url).await.map_err(|e| source_error(e.to_string()))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream_name).await.map_err(|e| source_error(e.to_string()))?;
    let last = stream.info().await.map_err(|e| source_error(e.to_string()))?.state.last_sequence;
    if last == 0 {
        return Ok(());
    }

    let consumer = stream
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .map_err(|e| source_error(e.to_string()))?;
    let mut messages = consumer.messages().await.map_err(|e| source_error(e.to_string()))?;
    let bar = progress::bar(last, false);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| source_error(e.to_string()))?;
        let sequence = message.info().map_err(|e| source_error(e.to_string()))?.stream_sequence;
        if sequence % PROGRESS_STEP == 0 {
            bar.set_position(sequence);
        }
        let message = Message {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.to_vec(),
            skipped: false,
        };
        if visit(message)? == Flow::Stop || sequence >= last {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(())
}
