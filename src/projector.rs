//! The projector: applies the event stream to the region's redb read model.
//!
//! Each batch of ready messages is verified and applied through the shared fold in
//! one redb write transaction that also records the last applied stream sequence,
//! so after a crash the projector resumes exactly after the last committed event.
//! An event that fails verification or the fold stops the projection: the read
//! model stays at the last good sequence and the failure is logged with its
//! sequence, because skipping an event would make every later read wrong.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;
use watchword_events::readmodel::{ReadModel, StoredMessage};
use watchword_events::verify::RootKeys;

use crate::stream::{EVENT_SUBJECTS, EventStore};

/// Delay before re-subscribing after the stream connection failed.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Progress of the projection, shared with the read and watch APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Events up to this stream sequence are applied.
    Applied(u64),
    /// The event after `applied` cannot be applied; the projection has stopped.
    Stopped { applied: u64, reason: String },
}

impl Progress {
    pub fn applied(&self) -> u64 {
        match self {
            Progress::Applied(sequence) | Progress::Stopped { applied: sequence, .. } => *sequence,
        }
    }
}

/// Runs the projection until shutdown, publishing progress on `progress`.
pub async fn run(
    model: Arc<ReadModel>,
    store: EventStore,
    roots: RootKeys,
    config: crate::config::ProjectorConfig,
    progress: watch::Sender<Progress>,
) {
    let roots = Arc::new(roots);
    let skip: Arc<std::collections::BTreeSet<u64>> = Arc::new(config.skip_sequences.iter().copied().collect());
    loop {
        match project(&model, &store, &roots, config.batch_size, &skip, &progress).await {
            Ok(()) => return,
            Err(ProjectError::Subscribe(message)) => {
                tracing::warn!(error = %message, "event stream subscription failed; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            Err(ProjectError::Fatal(reason)) => {
                let applied = progress.borrow().applied();
                tracing::error!(event.seq = applied + 1, error = %reason, "projection stopped: the read model stays at the last applied event until an operator acts");
                progress.send_replace(Progress::Stopped { applied, reason });
                return;
            }
        }
    }
}

enum ProjectError {
    Subscribe(String),
    Fatal(String),
}

async fn project(
    model: &Arc<ReadModel>,
    store: &EventStore,
    roots: &Arc<RootKeys>,
    batch_size: usize,
    skip: &Arc<std::collections::BTreeSet<u64>>,
    progress: &watch::Sender<Progress>,
) -> Result<(), ProjectError> {
    let applied = model.last_applied().map_err(|e| ProjectError::Fatal(e.to_string()))?;
    progress.send_replace(Progress::Applied(applied));

    let consumer = store
        .stream()
        .create_consumer(pull::OrderedConfig {
            filter_subject: EVENT_SUBJECTS.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: applied + 1 },
            ..Default::default()
        })
        .await
        .map_err(|e| ProjectError::Subscribe(e.to_string()))?;
    let messages = consumer.messages().await.map_err(|e| ProjectError::Subscribe(e.to_string()))?;
    let mut batches = messages.ready_chunks(batch_size);

    while let Some(batch) = batches.next().await {
        let mut owned = Vec::with_capacity(batch.len());
        for message in batch {
            let message = message.map_err(|e| ProjectError::Subscribe(e.to_string()))?;
            let sequence = message.info().map_err(|e| ProjectError::Subscribe(e.to_string()))?.stream_sequence;
            if skip.contains(&sequence) {
                tracing::warn!(event.seq = sequence, "skipping a stream message listed in projector.skip_sequences");
                continue;
            }
            owned.push((message.subject.to_string(), message.payload.clone(), sequence));
        }
        if owned.is_empty() {
            continue;
        }
        let span =
            tracing::debug_span!("projector.batch", batch.len = owned.len(), event.seq = owned.first().map(|m| m.2));
        let last = apply(model, roots, owned).instrument(span).await?;
        progress.send_replace(Progress::Applied(last));
    }
    Err(ProjectError::Subscribe("the event stream subscription ended".to_owned()))
}

async fn apply(
    model: &Arc<ReadModel>,
    roots: &Arc<RootKeys>,
    owned: Vec<(String, bytes::Bytes, u64)>,
) -> Result<u64, ProjectError> {
    let model = Arc::clone(model);
    let roots = Arc::clone(roots);
    let outcome = tokio::task::spawn_blocking(move || {
        let messages: Vec<StoredMessage<'_>> = owned
            .iter()
            .map(|(subject, payload, sequence)| StoredMessage { subject, payload, sequence: *sequence })
            .collect();
        model.apply_batch(&roots, &messages)
    })
    .await
    .map_err(|e| ProjectError::Fatal(format!("projection task failed: {e}")))?
    .map_err(|e| ProjectError::Fatal(e.to_string()))?;

    for (sequence, kind) in &outcome.unmapped {
        tracing::debug!(event.seq = sequence, event.kind = %kind, "no change notice is defined for this event kind");
    }
    if outcome.already_applied > 0 {
        tracing::debug!(count = outcome.already_applied, "skipped events already in the read model");
    }
    tracing::debug!(applied = outcome.applied.len(), event.seq = outcome.last_applied_sequence, "applied batch");
    Ok(outcome.last_applied_sequence)
}
