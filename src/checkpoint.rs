//! The checkpoint task: commits the event stream to root-signed checkpoints.
//!
//! Every node runs it. It watches the stream's last sequence and, once events that
//! no checkpoint covers are `checkpoint.interval_ms` old or `checkpoint.max_events`
//! many, reads their hashes from the stream, builds their Merkle root and publishes
//! a `checkpoint.created` event signed by the HSM root key. The publish states the
//! sequence of the previous checkpoint on the checkpoint subject. So when two nodes
//! race for a range, only one stores its checkpoint, and the other re-reads the
//! last checkpoint and continues from there. The task never holds a lock that a
//! write waits for, because it only reads the stream and appends to its own subject.
//!
//! A message that is not a valid frame (one that an operator skips with
//! `projector.skip_sequences`) is covered too, by SHA-256 of its stored bytes,
//! so checkpoints go on after it and its bytes stay committed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use tokio::sync::watch;
use watchword_events::checkpoint::{Checkpoint, KIND_CHECKPOINT, MerkleBuilder, leaf_input};
use watchword_events::{Aggregate, Event, EventHash, Frame, ZERO_HASH};

use crate::config::CheckpointConfig;
use crate::hsm::{Hsm, HsmError};
use crate::signer::{root_event, sign_with_root};
use crate::stream::{EventStore, StreamError};

/// Minimum pause between two polls of the stream.
const MIN_POLL: Duration = Duration::from_millis(10);

/// A checkpoint that could not be written this round.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("event stream: {0}")]
    Stream(#[from] StreamError),
    #[error("HSM root key failed to sign the checkpoint: {0}")]
    Hsm(#[from] HsmError),
    /// A message is missing from a range, or the last checkpoint does not decode.
    #[error("stream sequence {sequence}: {reason}; no checkpoint can be written after it")]
    Unreadable { sequence: u64, reason: String },
}

/// The last stored checkpoint.
#[derive(Debug, Clone)]
struct Previous {
    sequence: u64,
    hash: EventHash,
    version: u64,
    body: Checkpoint,
}

/// Runs until `stopping` turns true, writing checkpoints as configured.
pub async fn run(store: EventStore, hsm: Hsm, config: CheckpointConfig, mut stopping: watch::Receiver<bool>) {
    let interval = Duration::from_millis(config.interval_ms);
    let mut poll = tokio::time::interval((interval / 10).max(MIN_POLL));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this node first saw events that no checkpoint covers.
    let mut uncovered_since: Option<Instant> = None;
    let mut last_error: Option<String> = None;
    // Sequences already logged as covered although they are not events.
    let mut non_events = BTreeSet::new();
    tracing::info!(
        checkpoint.interval_ms = config.interval_ms,
        checkpoint.max_events = config.max_events,
        "checkpoint task started"
    );

    loop {
        tokio::select! {
            _ = poll.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        match step(&store, &hsm, &config, interval, &mut uncovered_since, &mut non_events).await {
            Ok(()) => last_error = None,
            Err(error) => {
                // Logged once per distinct failure, since the task retries every poll.
                let message = error.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::error!(error = %message, "checkpoint not written; retrying");
                    last_error = Some(message);
                }
            }
        }
    }
}

/// Writes one checkpoint if one is due.
async fn step(
    store: &EventStore,
    hsm: &Hsm,
    config: &CheckpointConfig,
    interval: Duration,
    uncovered_since: &mut Option<Instant>,
    non_events: &mut BTreeSet<u64>,
) -> Result<(), CheckpointError> {
    let previous = last_checkpoint(store).await?;
    let stream_last =
        store.stream().clone().info().await.map_err(|e| request_error("stream info", e))?.state.last_sequence;
    // Every message after the previous checkpoint's range needs covering, but that
    // checkpoint itself, which always follows its range. Events appended while it
    // was being written sit between its range and itself, so they count too.
    let uncovered = match &previous {
        Some(previous) => stream_last.saturating_sub(previous.body.last_sequence + 1),
        None => stream_last,
    };
    if uncovered == 0 {
        *uncovered_since = None;
        return Ok(());
    }
    let since = *uncovered_since.get_or_insert_with(Instant::now);
    if uncovered < config.max_events && since.elapsed() < interval {
        return Ok(());
    }

    let first = previous.as_ref().map_or(1, |p| p.body.last_sequence + 1);
    let last = stream_last.min(first + config.max_events - 1);
    let merkle_root = range_root(store, first, last, non_events).await?;
    match publish(store, hsm, previous.as_ref(), first, last, merkle_root).await {
        Ok(sequence) => {
            tracing::debug!(
                event.seq = sequence,
                checkpoint.first = first,
                checkpoint.last = last,
                "checkpoint written"
            );
            *uncovered_since = None;
            Ok(())
        }
        Err(CheckpointError::Stream(StreamError::WrongLastSequence { .. })) => {
            tracing::debug!(checkpoint.first = first, "another node wrote this range's checkpoint first");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Returns the last checkpoint on the stream, read from the stream itself.
async fn last_checkpoint(store: &EventStore) -> Result<Option<Previous>, CheckpointError> {
    let Some(stored) = store.last_on_subject(&Aggregate::checkpoint().subject()).await? else {
        return Ok(None);
    };
    let unreadable = |reason: String| CheckpointError::Unreadable { sequence: stored.sequence, reason };
    let frame = Frame::decode(&stored.payload).map_err(|e| unreadable(e.to_string()))?;
    let event = Event::from_signed_bytes(&frame.signed).map_err(|e| unreadable(e.to_string()))?;
    let body = watchword_events::body::decode_body::<Checkpoint>(&event.body).map_err(|e| unreadable(e.to_string()))?;
    Ok(Some(Previous { sequence: stored.sequence, hash: frame.hash(), version: event.aggregate_version, body }))
}

/// Reads the messages `first..=last` and returns the Merkle root of their leaf
/// inputs: the event hash of each valid frame, SHA-256 of any other message's bytes.
/// Logs each such other message once, keeping its sequence in `non_events`.
async fn range_root(
    store: &EventStore,
    first: u64,
    last: u64,
    non_events: &mut BTreeSet<u64>,
) -> Result<[u8; 32], CheckpointError> {
    let consumer = store
        .stream()
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: first },
            ..Default::default()
        })
        .await
        .map_err(|e| request_error("consumer create", e))?;
    let mut messages = consumer.messages().await.map_err(|e| request_error("consumer read", e))?;
    let mut builder = MerkleBuilder::default();
    let mut expected = first;
    while expected <= last {
        let Some(message) = messages.next().await else {
            return Err(request_error("consumer read", "the subscription ended"));
        };
        let message = message.map_err(|e| request_error("consumer read", e))?;
        let sequence = message.info().map_err(|e| request_error("consumer read", e))?.stream_sequence;
        if sequence != expected {
            return Err(CheckpointError::Unreadable {
                sequence: expected,
                reason: format!("the stream has no message there (the next one is {sequence})"),
            });
        }
        if let Err(error) = Frame::decode(&message.payload) {
            if non_events.insert(sequence) {
                tracing::warn!(
                    event.seq = sequence,
                    %error,
                    "checkpoint covers a stream message that is not an event by the SHA-256 of its bytes"
                );
            }
        }
        builder.push(&leaf_input(&message.payload));
        expected += 1;
    }
    Ok(builder.root())
}

/// Signs the checkpoint with the root key and appends it after `previous`.
async fn publish(
    store: &EventStore,
    hsm: &Hsm,
    previous: Option<&Previous>,
    first: u64,
    last: u64,
    merkle_root: [u8; 32],
) -> Result<u64, CheckpointError> {
    let previous_hash = previous.map_or(ZERO_HASH, |p| p.hash);
    let body =
        Checkpoint { first_sequence: first, last_sequence: last, merkle_root, previous_checkpoint: previous_hash };
    let version = previous.map_or(0, |p| p.version) + 1;
    let correlation_id = format!("checkpoint:{first}-{last}");
    let event =
        root_event(hsm, KIND_CHECKPOINT, Aggregate::checkpoint(), version, previous_hash, &correlation_id, &body);
    let frame = sign_with_root(hsm, &event).await?;

    let subject = event.aggregate.subject();
    let expected = previous.map_or(0, |p| p.sequence);
    let ack = store.publish(&subject, frame.encode(), &format!("event:{}", event.id), expected).await?;
    Ok(ack.sequence)
}

fn request_error(operation: &'static str, error: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Stream(StreamError::Request { operation, message: error.to_string() })
}
