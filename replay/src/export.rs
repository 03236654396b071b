//! `export`: copies a live stream into an archive that ends with a fresh checkpoint.
//!
//! The server writes a checkpoint within `checkpoint.interval_ms` (1 s by default)
//! of any event that no checkpoint covers. Export notes the stream's last sequence
//! L when it starts, waits until a checkpoint covers L (or L is itself a
//! checkpoint), and copies every message up to and including that checkpoint.
//! Messages that the request's skip list covers go into the archive as skipped
//! messages, so that verifying the archive needs no `--skip-sequence`.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use futures::StreamExt;
use watchword_events::body::decode_body;
use watchword_events::checkpoint::Checkpoint;
use watchword_events::{Aggregate, Event, EventHash, Frame};

use crate::ReplayError;
use crate::archive::{ArchiveWriter, Header, Manifest};
use crate::progress;
use crate::verify::SkipList;

/// Pause between two looks for the covering checkpoint.
const POLL: Duration = Duration::from_millis(100);

/// Parameters of an export: the stream, the file, and the wait for a checkpoint.
#[derive(Debug, Clone)]
pub struct ExportRequest<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub out: &'a Path,
    /// Root public keys to record in the archive's header.
    pub root_keys: &'a [[u8; 32]],
    pub wait: Duration,
    /// Export up to the stream's last message when no checkpoint covers it in time.
    pub allow_uncovered: bool,
    /// Messages that are not events, recorded as skipped in the archive.
    pub skips: &'a SkipList,
}

/// The last checkpoint on the stream.
struct LastCheckpoint {
    sequence: u64,
    hash: EventHash,
    covers_to: u64,
}

/// Writes the archive and returns its manifest.
pub async fn export(request: &ExportRequest<'_>) -> Result<Manifest, ReplayError> {
    let source_name = format!("stream {} at {}", request.stream, request.url);
    let source_error = |message: String| ReplayError::Source { source_name: source_name.clone(), message };
    let client = async_nats::connect(request.url).await.map_err(|e| source_error(e.to_string()))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(request.stream).await.map_err(|e| source_error(e.to_string()))?;
    let start_last = stream.info().await.map_err(|e| source_error(e.to_string()))?.state.last_sequence;

    let (end, checkpoint) = match wait_for_checkpoint(&stream, start_last, request.wait).await? {
        Some(checkpoint) => (checkpoint.sequence, Some((checkpoint.sequence, checkpoint.hash))),
        None if request.allow_uncovered => (start_last, None),
        None => {
            return Err(ReplayError::Usage(format!(
                "no checkpoint covered stream sequence {start_last} within {} s; check that a server with \
                 checkpoints enabled runs against this stream, or pass --allow-uncovered",
                request.wait.as_secs()
            )));
        }
    };

    request.skips.check_reached(end)?;
    let header = Header::new(request.stream, now_micros(), request.root_keys);
    let mut writer = ArchiveWriter::create(request.out, &header)?;
    if end > 0 {
        copy_messages(&stream, end, request.skips, &mut writer).await.map_err(source_error)?;
    }
    writer.finish(checkpoint)
}

/// Waits until the last checkpoint covers `last`, or `last` is a checkpoint.
async fn wait_for_checkpoint(
    stream: &Stream,
    last: u64,
    wait: Duration,
) -> Result<Option<LastCheckpoint>, ReplayError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(checkpoint) = last_checkpoint(stream).await? {
            if checkpoint.covers_to >= last || checkpoint.sequence == last {
                return Ok(Some(checkpoint));
            }
        }
        if last == 0 || Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn last_checkpoint(stream: &Stream) -> Result<Option<LastCheckpoint>, ReplayError> {
    let message = match stream.direct_get_last_for_subject(Aggregate::checkpoint().subject()).await {
        Ok(message) => message,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ReplayError::Source { source_name: "checkpoint subject".to_owned(), message: e.to_string() });
        }
    };
    let invalid = |reason: String| {
        ReplayError::Usage(format!(
            "the last checkpoint, at stream sequence {}, does not decode: {reason}; run verify",
            message.sequence
        ))
    };
    let frame = Frame::decode(&message.payload).map_err(|e| invalid(e.to_string()))?;
    let event = Event::from_signed_bytes(&frame.signed).map_err(|e| invalid(e.to_string()))?;
    let body: Checkpoint = decode_body(&event.body).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(LastCheckpoint { sequence: message.sequence, hash: frame.hash(), covers_to: body.last_sequence }))
}

async fn copy_messages(stream: &Stream, end: u64, skips: &SkipList, writer: &mut ArchiveWriter) -> Result<(), String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let bar = progress::bar(end, false);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if sequence > end {
            break;
        }
        let subject = message.subject.as_str();
        let written = if skips.covers_sequence(sequence) {
            writer.write_skipped(sequence, subject, &message.payload)
        } else {
            writer.write_message(sequence, subject, &message.payload)
        };
        written.map_err(|e| e.to_string())?;
        bar.set_position(sequence);
        if sequence == end {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}
