//! Change notices on NATS: the stream that retains them, and the publisher that
//! moves them there from the read model's outbox.
//!
//! The projector writes each event's notice to the `change_outbox` table in the
//! same redb transaction as the event's changes (see
//! [`watchword_events::changes::derive_notice`]). The publisher copies every
//! notice to `watchword.changes.<group-token>.<secret-token>`, once per group it
//! is addressed to, or once with the group token `_` when no group has a grant.
//! The notices stream is one ordered log, and every node appends to it the same
//! way as writers append events:
//!
//! - Each copy has `Nats-Msg-Id: <origin sequence>.<group token>`, so a copy
//!   published twice within the duplicate window is stored once.
//! - Each copy is published with `Nats-Expected-Last-Sequence` set to the stream
//!   sequence of the copy before it. When several nodes publish, one wins each
//!   copy and the others get a wrong-last-sequence error or a duplicate, re-read
//!   the stream's last copy and continue after it. No copy is stored twice, even
//!   past the duplicate window, and copies stay in origin order.
//! - After a crash, a node reads the last copy's origin sequence and copy number
//!   from its headers and publishes what follows it from the outbox. Outbox
//!   entries are removed only once the stream has all of their copies.
//!
//! Delivery to services is at least once: a durable consumer that crashes before
//! it acknowledges gets the copy again, and recognizes it by its `sequence` and
//! group.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use serde::Deserialize;
use tokio::sync::watch;
use watchword_events::changes::ChangeNotice;
use watchword_events::names::subject_token;
use watchword_events::readmodel::ReadModel;

use crate::projector::Progress;
use crate::stream::StreamError;

/// Prefix of every notice subject: `watchword.changes.<group-token>.<secret-token>`.
pub const CHANGE_SUBJECT_PREFIX: &str = "watchword.changes";

/// Subject filter of every notice subject.
pub const CHANGE_SUBJECTS: &str = "watchword.changes.>";

/// Group token of the copy of a notice about a secret on which no group has a
/// grant. Real group tokens are 64 hex digits, so it never collides with one.
pub const NO_GROUP_TOKEN: &str = "_";

/// Header holding the stream sequence of the event on `WATCHWORD_EVENTS`.
pub const ORIGIN_HEADER: &str = "Watchword-Origin-Sequence";

/// Header holding the copy number and the number of copies of a notice: `2/3`.
pub const COPY_HEADER: &str = "Watchword-Copy";

/// Notices read from the outbox at a time.
const OUTBOX_BATCH: usize = 256;

/// Interval at which an idle publisher checks for notices, so that a node whose
/// projection is idle still publishes what another node left unpublished.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Delay before retrying after NATS or the read model failed.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The `[changes]` section of the server's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangesConfig {
    /// Whether this node publishes notices. The HTTP feed works either way, and a
    /// node that does not publish still prunes its outbox of what others published.
    /// Default true.
    pub publish: bool,
    /// Name of the notices stream. Default `WATCHWORD_CHANGES`.
    pub stream: String,
    /// Days a notice is kept, so a service can be offline that long and catch up.
    /// Default 30.
    pub max_age_days: u64,
    /// Maximum size of the stream in MiB; the oldest notices go first. Default 1024.
    pub max_bytes_mib: u64,
}

impl Default for ChangesConfig {
    fn default() -> Self {
        ChangesConfig { publish: true, stream: "WATCHWORD_CHANGES".to_owned(), max_age_days: 30, max_bytes_mib: 1024 }
    }
}

impl ChangesConfig {
    /// Checks the limits, naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3650).contains(&self.max_age_days) {
            return Err(format!("changes.max_age_days {} must be between 1 and 3650", self.max_age_days));
        }
        if !(1..=1_048_576).contains(&self.max_bytes_mib) {
            return Err(format!("changes.max_bytes_mib {} must be between 1 and 1048576", self.max_bytes_mib));
        }
        Ok(())
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_days * 24 * 60 * 60)
    }

    pub fn max_bytes(&self) -> i64 {
        i64::try_from(self.max_bytes_mib * 1024 * 1024).unwrap_or(i64::MAX)
    }
}

/// A change notice in its JSON form, schema version 1.
pub use watchword_events::changes::ChangeNotice as Notice;

/// Returns the subject of the copy of a notice about `secret` for `group`.
pub fn change_subject(group: Option<&str>, secret: &str) -> String {
    let group = group.map_or_else(|| NO_GROUP_TOKEN.to_owned(), subject_token);
    format!("{CHANGE_SUBJECT_PREFIX}.{group}.{}", subject_token(secret))
}

/// One copy of a notice, addressed to one group, as it is published.
#[derive(Debug)]
struct NoticeCopy {
    origin: u64,
    /// 1-based number of this copy among the notice's copies.
    number: u32,
    count: u32,
    subject: String,
    message_id: String,
    payload: Vec<u8>,
}

/// Splits a notice into its copies, one per group in name order, or one for no group.
fn copies(notice: &ChangeNotice) -> Vec<NoticeCopy> {
    let groups: Vec<Option<&String>> =
        if notice.groups.is_empty() { vec![None] } else { notice.groups.iter().map(Some).collect() };
    let count = u32::try_from(groups.len()).unwrap_or(u32::MAX);
    groups
        .into_iter()
        .zip(1..)
        .map(|(group, number)| {
            let subject = change_subject(group.map(String::as_str), &notice.secret);
            let token = subject.split('.').nth(2).unwrap_or(NO_GROUP_TOKEN).to_owned();
            let wire = Notice { groups: group.into_iter().cloned().collect(), ..notice.clone() };
            NoticeCopy {
                origin: notice.sequence,
                number,
                count,
                subject,
                message_id: format!("{}.{token}", notice.sequence),
                payload: serde_json::to_vec(&wire).expect("a notice encodes as JSON"),
            }
        })
        .collect()
}

/// The end of the notices stream: its last copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Position {
    stream_sequence: u64,
    origin: u64,
    number: u32,
    count: u32,
}

impl Position {
    /// Returns the origin sequence up to which every notice has all its copies in the stream.
    fn complete_through(&self) -> u64 {
        if self.number >= self.count { self.origin } else { self.origin.saturating_sub(1) }
    }
}

/// A message read from the notices stream, with its origin and copy headers parsed.
#[derive(Debug, Clone)]
pub struct StoredCopy {
    pub origin: u64,
    pub number: u32,
    pub count: u32,
    pub notice: Notice,
}

impl StoredCopy {
    /// Parses a stored copy; `None` when the headers or the payload are not a notice.
    pub fn parse(headers: Option<&async_nats::HeaderMap>, payload: &[u8]) -> Option<StoredCopy> {
        let headers = headers?;
        let origin = headers.get(ORIGIN_HEADER)?.as_str().parse().ok()?;
        let (number, count) = headers.get(COPY_HEADER)?.as_str().split_once('/')?;
        let notice = serde_json::from_slice(payload).ok()?;
        Some(StoredCopy { origin, number: number.parse().ok()?, count: count.parse().ok()?, notice })
    }
}

/// Handle on the notices stream.
#[derive(Debug, Clone)]
pub struct ChangeStream {
    jetstream: jetstream::Context,
    stream: stream::Stream,
}

impl ChangeStream {
    pub fn new(jetstream: jetstream::Context, stream: stream::Stream) -> ChangeStream {
        ChangeStream { jetstream, stream }
    }

    /// Reads the last copy in the stream.
    async fn last(&self) -> Result<Position, StreamError> {
        let info = self.stream.get_info().await.map_err(|e| request_error("notices stream info", e))?;
        let last = info.state.last_sequence;
        if info.state.messages == 0 {
            // NOTE: when every notice has aged out, the origin of the last one is
            // unknown, so notices still in this node's outbox are published again.
            return Ok(Position { stream_sequence: last, ..Position::default() });
        }
        let copy = self.copy_at(last).await?;
        Ok(match copy {
            Some(copy) => {
                Position { stream_sequence: last, origin: copy.origin, number: copy.number, count: copy.count }
            }
            None => Position { stream_sequence: last, ..Position::default() },
        })
    }

    /// Reads the copy at a notices-stream sequence; `None` when it is gone or not a notice.
    async fn copy_at(&self, sequence: u64) -> Result<Option<StoredCopy>, StreamError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        match self.stream.direct_get(sequence).await {
            Ok(message) => Ok(StoredCopy::parse(Some(&message.headers), &message.payload)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(request_error("notices direct get", e)),
        }
    }

    /// Returns the notices-stream sequence of the first copy whose origin sequence
    /// is above `after`, or the sequence the next copy will get. `None` starts
    /// after the current end, so only new notices follow.
    pub async fn start_after(&self, after: Option<u64>) -> Result<u64, StreamError> {
        let info = self.stream.get_info().await.map_err(|e| request_error("notices stream info", e))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let Some(after) = after else {
            return Ok(last + 1);
        };
        if info.state.messages == 0 {
            return Ok(last + 1);
        }
        // Origins increase with the stream sequence, and the stream denies deletes,
        // so every sequence between first and last has a copy.
        let (mut low, mut high) = (first, last + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            match self.copy_at(middle).await? {
                Some(copy) if copy.origin > after => high = middle,
                _ => low = middle + 1,
            }
        }
        Ok(low)
    }

    /// Returns the copies from notices-stream sequence `start` on, without end.
    pub async fn messages_from(&self, start: u64) -> Result<pull::Ordered, StreamError> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: CHANGE_SUBJECTS.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start.max(1) },
                ..Default::default()
            })
            .await
            .map_err(|e| request_error("notices consumer create", e))?;
        consumer.messages().await.map_err(|e| request_error("notices consumer", e))
    }

    /// Appends one copy right after the copy at `expected_last`.
    async fn publish(&self, copy: &NoticeCopy, expected_last: u64) -> Result<Published, StreamError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let message = jetstream::message::PublishMessage::build()
            .payload(copy.payload.clone().into())
            .message_id(&copy.message_id)
            .header(ORIGIN_HEADER, copy.origin.to_string().as_str())
            .header(COPY_HEADER, format!("{}/{}", copy.number, copy.count).as_str())
            .expected_last_sequence(expected_last);
        let sent = self.jetstream.send_publish(copy.subject.clone(), message).await;
        let acked = match sent {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(ack) if ack.duplicate => Ok(Published::ByAnother),
            Ok(ack) => Ok(Published::Stored(ack.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Published::ByAnother),
            Err(e) => Err(request_error("notice publish", e)),
        }
    }
}

/// The outcome of appending one copy.
enum Published {
    Stored(u64),
    /// Another node (or an earlier run) appended first.
    ByAnother,
}

/// Publishes the outbox's notices until `stopping` turns true. With `publish`
/// off, it only removes from the outbox what other nodes have published.
pub async fn run_publisher(
    model: Arc<ReadModel>,
    changes: ChangeStream,
    publish: bool,
    mut progress: watch::Receiver<Progress>,
    mut stopping: watch::Receiver<bool>,
) {
    tracing::info!(publish, "change notice publisher started");
    let mut publisher = Publisher { model, changes, publish, pruned_through: 0 };
    loop {
        let delay = match publisher.publish_pending().await {
            Ok(()) => IDLE_POLL,
            Err(error) => {
                tracing::warn!(%error, "publishing change notices failed; retrying");
                RETRY_DELAY
            }
        };
        // Once the projector has stopped, `changed` fails, and the branch is disabled.
        tokio::select! {
            Ok(()) = progress.changed() => {}
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.wait_for(|stopping| *stopping) => {
                tracing::info!("change notice publisher stopped");
                return;
            }
        }
    }
}

/// The state of one node's publisher.
struct Publisher {
    model: Arc<ReadModel>,
    changes: ChangeStream,
    publish: bool,
    /// Origin sequence up to which the outbox is already pruned.
    pruned_through: u64,
}

impl Publisher {
    /// Publishes every outbox notice that the stream does not have yet, and prunes
    /// the outbox of the notices the stream has.
    async fn publish_pending(&mut self) -> Result<(), StreamError> {
        let mut position = self.changes.last().await?;
        loop {
            self.prune(position.complete_through()).await?;
            if !self.publish {
                return Ok(());
            }
            let pending = self.pending(position.complete_through()).await?;
            if pending.is_empty() {
                return Ok(());
            }

            let before = position;
            'notices: for notice in &pending {
                for copy in copies(notice) {
                    if (copy.origin, copy.number) <= (position.origin, position.number) {
                        continue;
                    }
                    match self.changes.publish(&copy, position.stream_sequence).await? {
                        Published::Stored(sequence) => {
                            tracing::debug!(event.seq = copy.origin, notice.seq = sequence, "change notice published");
                            position = Position {
                                stream_sequence: sequence,
                                origin: copy.origin,
                                number: copy.number,
                                count: copy.count,
                            };
                        }
                        Published::ByAnother => {
                            position = self.changes.last().await?;
                            break 'notices;
                        }
                    }
                }
            }
            if position == before {
                // Every pending copy is already in the stream; nothing moves until the
                // projection or another node does.
                return Ok(());
            }
        }
    }

    async fn pending(&self, after: u64) -> Result<Vec<ChangeNotice>, StreamError> {
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.pending_notices(after, OUTBOX_BATCH))
            .await
            .map_err(|e| request_error("outbox read task", e))?
            .map_err(|e| request_error("outbox read", e))
    }

    /// Removes the outbox entries up to `through`, unless an earlier call did.
    async fn prune(&mut self, through: u64) -> Result<(), StreamError> {
        if through <= self.pruned_through {
            return Ok(());
        }
        let model = Arc::clone(&self.model);
        tokio::task::spawn_blocking(move || model.prune_notices(through))
            .await
            .map_err(|e| request_error("outbox prune task", e))?
            .map_err(|e| request_error("outbox prune", e))?;
        self.pruned_through = through;
        Ok(())
    }
}

fn request_error(operation: &'static str, error: impl std::fmt::Display) -> StreamError {
    StreamError::Request { operation, message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use watchword_events::changes::NoticeKind;

    use super::*;

    fn notice(groups: &[&str]) -> ChangeNotice {
        ChangeNotice {
            schema: 1,
            sequence: 42,
            kind: NoticeKind::Updated,
            secret: "db/password".to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            version: Some(2),
            actor: "spiffe://watchword.dev/operator".to_owned(),
            time: "2026-12-04T21:10:02.118204Z".to_owned(),
            event_id: "0190".to_owned(),
        }
    }

    #[test]
    fn copies_one_per_group() {
        let copies = copies(&notice(&["a", "b"]));
        assert_eq!(copies.len(), 2);
        assert_eq!(
            copies[0].subject,
            format!("watchword.changes.{}.{}", subject_token("a"), subject_token("db/password"))
        );
        assert_eq!(copies[0].message_id, format!("42.{}", subject_token("a")));
        assert_eq!((copies[1].number, copies[1].count), (2, 2));
        let second: Notice = serde_json::from_slice(&copies[1].payload).unwrap();
        assert_eq!(second.groups, vec!["b".to_owned()]);
    }

    #[test]
    fn copies_without_grant_use_placeholder_group() {
        let copies = copies(&notice(&[]));
        assert_eq!(copies.len(), 1);
        assert!(copies[0].subject.starts_with("watchword.changes._."));
        assert_eq!(copies[0].message_id, "42._");
    }

    #[test]
    fn incomplete_notice_is_not_complete() {
        let position = Position { stream_sequence: 9, origin: 42, number: 1, count: 2 };
        assert_eq!(position.complete_through(), 41);
        assert_eq!(Position { number: 2, ..position }.complete_through(), 42);
    }
}
