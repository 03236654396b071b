//! `GET /v1/events`: the change feed as server-sent events.
//!
//! The feed reads the notices stream (`WATCHWORD_CHANGES`), so it carries the
//! same notices as the NATS subjects, with the copies of a notice merged back into
//! one. Each event's `id` is the notice's `sequence`, so a client resumes with
//! `Last-Event-ID` (or `?after=`) and receives every later notice once.
//!
//! Authorization happens at delivery time, through the rule of the read and watch
//! paths: a client receives a notice only if it may read the secret when the
//! notice is delivered, and the notice lists only the groups the client is a
//! member of. Administrators and auditors receive every notice with all its groups.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use watchword_events::changes::NoticeKind;

use super::extract::Query;
use super::{ApiError, AppState};
use crate::access::Role;
use crate::changes::{Notice, StoredCopy};
use crate::reader::ReadError;
use crate::tls::ClientIdentity;

/// Interval of the keep-alive comments, which keep proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Notices buffered for a slow client; when full, reading from NATS waits.
const BUFFER: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only notices addressed to this group.
    group: Option<String>,
    /// Only notices about secrets whose name starts with this.
    prefix: Option<String>,
    /// Only these kinds, comma-separated, such as `created,updated`.
    kinds: Option<String>,
    /// Resume after this notice sequence; `Last-Event-ID` takes precedence.
    after: Option<u64>,
}

/// The filters of one subscription.
#[derive(Debug, Clone, Default)]
struct Filter {
    group: Option<String>,
    prefix: Option<String>,
    kinds: Option<BTreeSet<NoticeKind>>,
}

impl Filter {
    fn parse(query: &EventsQuery) -> Result<Filter, ApiError> {
        let kinds = match &query.kinds {
            None => None,
            Some(text) => {
                let mut kinds = BTreeSet::new();
                for name in text.split(',').filter(|name| !name.is_empty()) {
                    let kind = NoticeKind::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = NoticeKind::ALL.iter().map(|k| k.as_str()).collect();
                        ApiError::bad_request(format!("unknown notice kind {name:?}; use one of {}", known.join(", ")))
                    })?;
                    kinds.insert(kind);
                }
                Some(kinds)
            }
        };
        Ok(Filter { group: query.group.clone(), prefix: query.prefix.clone(), kinds })
    }

    fn matches(&self, notice: &Notice) -> bool {
        let group = self.group.as_ref().is_none_or(|group| notice.groups.contains(group));
        let prefix = self.prefix.as_ref().is_none_or(|prefix| notice.secret.starts_with(prefix.as_str()));
        let kind = self.kinds.as_ref().is_none_or(|kinds| kinds.contains(&notice.kind));
        group && prefix && kind
    }
}

/// Streams change notices as server-sent events until the client leaves or the
/// server shuts down.
pub async fn stream_events(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = Filter::parse(&query)?;
    let after = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            ApiError::bad_request("Last-Event-ID must be a notice sequence, the id of a received event")
        })?),
        None => query.after,
    };

    let start = state.changes.start_after(after).await.map_err(ReadError::from)?;
    let messages = state.changes.messages_from(start).await.map_err(ReadError::from)?;
    tracing::debug!(client.id = %client.name, after, notice.seq = start, "event feed opened");

    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(forward(state, client, filter, messages, sender));
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Reads copies from the notices stream, merges them, and sends the notices the
/// client may see. Ends when the client leaves, the server stops, or NATS fails
/// (the client then resumes with its last event id).
async fn forward(
    state: AppState,
    client: ClientIdentity,
    filter: Filter,
    mut messages: async_nats::jetstream::consumer::pull::Ordered,
    sender: mpsc::Sender<Event>,
) {
    let mut stopping = state.stopping.clone();
    let mut merger = Merger::default();
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = sender.closed() => return,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(client.id = %client.name, %error, "event feed lost the notices stream; closing it");
                return;
            }
            None => return,
        };
        let Some(copy) = StoredCopy::parse(message.headers.as_ref(), &message.payload) else {
            tracing::warn!(subject = %message.subject, "skipping a message on the notices stream that is not a notice");
            continue;
        };
        for notice in merger.push(copy) {
            match visible(&state, &client, &filter, notice).await {
                Ok(Some(notice)) => {
                    if sender.send(event(&notice)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(client.id = %client.name, ?error, "event feed failed to authorize a notice; closing it");
                    return;
                }
            }
        }
    }
}

fn event(notice: &Notice) -> Event {
    Event::default()
        .id(notice.sequence.to_string())
        .json_data(notice)
        .unwrap_or_else(|_| Event::default().comment("a notice failed to encode"))
}

/// Returns the notice as `client` may see it, or `None` when it may not or the
/// filter drops it.
async fn visible(
    state: &AppState,
    client: &ClientIdentity,
    filter: &Filter,
    mut notice: Notice,
) -> Result<Option<Notice>, ApiError> {
    let roles = state.roles(client).await?;
    let privileged = roles.iter().any(|role| matches!(role, Role::Admin | Role::Auditor));
    if !privileged {
        // A notice that ends access (deletion, destruction, expiry, a revoked grant)
        // goes to the members of the groups that could read the secret until then,
        // who may no longer read it. Every other notice follows the read rule.
        let member_of = state.reader.client_groups(&client.name).await?;
        let ends_access = matches!(
            notice.kind,
            NoticeKind::Deleted | NoticeKind::Destroyed | NoticeKind::Expired | NoticeKind::AccessRevoked
        );
        let allowed = if ends_access {
            notice.groups.iter().any(|group| member_of.contains(group))
        } else {
            super::secrets::may_read(state, client, std::slice::from_ref(&notice.secret)).await?[0]
        };
        if !allowed {
            return Ok(None);
        }
        notice.groups.retain(|group| member_of.contains(group));
    }
    Ok(filter.matches(&notice).then_some(notice))
}

/// Joins the per-group copies of a notice back into one notice.
#[derive(Debug, Default)]
struct Merger {
    pending: Option<(StoredCopy, u32)>,
}

impl Merger {
    /// Adds a copy; returns the notices it completes. Copies of one notice are
    /// adjacent in the stream, so a copy of another notice completes the pending one.
    fn push(&mut self, copy: StoredCopy) -> Vec<Notice> {
        let mut done = Vec::new();
        match self.pending.take() {
            Some((mut pending, seen)) if pending.origin == copy.origin => {
                pending.notice.groups.extend(copy.notice.groups);
                self.pending = Some((pending, seen + 1));
            }
            other => {
                if let Some((pending, _)) = other {
                    done.push(pending.notice);
                }
                self.pending = Some((copy, 1));
            }
        }
        if let Some((pending, seen)) = self.pending.take() {
            if seen >= pending.count {
                done.push(pending.notice);
            } else {
                self.pending = Some((pending, seen));
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(origin: u64, number: u32, count: u32, group: &str) -> StoredCopy {
        StoredCopy {
            origin,
            number,
            count,
            notice: Notice {
                schema: 1,
                sequence: origin,
                kind: NoticeKind::Updated,
                secret: "s".to_owned(),
                groups: vec![group.to_owned()],
                version: Some(1),
                actor: "a".to_owned(),
                time: "t".to_owned(),
                event_id: "e".to_owned(),
            },
        }
    }

    #[test]
    fn merger_joins_copies() {
        let mut merger = Merger::default();
        assert!(merger.push(copy(5, 1, 2, "a")).is_empty());
        let done = merger.push(copy(5, 2, 2, "b"));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].groups, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn merger_emits_incomplete_notice_on_next() {
        let mut merger = Merger::default();
        assert!(merger.push(copy(5, 1, 2, "a")).is_empty());
        let done = merger.push(copy(6, 1, 1, "c"));
        assert_eq!(done.iter().map(|n| n.sequence).collect::<Vec<_>>(), vec![5, 6]);
    }
}
