//! Point-in-time queries over a verified history: state, a secret's history, access.
//!
//! Each query reads the history through the [`Verifier`], so it applies the same
//! fold as the server and fails on the same tampering that `verify` reports. None
//! prints secret content: events carry only ciphertext, and queries show metadata.

use watchword_events::body::{
    Grant, KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_SECRET_VERSION_ADDED, SecretVersionAdded, decode_body,
};
use watchword_events::fold::{MemoryState, StateView, may_read};
use watchword_events::verify::{RecordedEvent, RootKeys};
use watchword_events::{AggregateType, Event, Frame};

use crate::output::{Table, time};
use crate::source::{Flow, Source};
use crate::verify::{SkipList, Verifier};
use crate::{ReplayError, Report};

/// The point in the history a query looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the event at this stream sequence.
    Sequence(u64),
    /// After the last event recorded at or before this time (µs since the Unix
    /// epoch): reading stops at the first event recorded later. Writers' clocks
    /// are not synchronized, so an event recorded slightly out of order ends the
    /// state early rather than being skipped.
    Time(i64),
    /// After the last event.
    End,
}

/// Verifies the history up to `point` and returns the report, whose state is the
/// state at that point. `visit` receives every applied event; the messages that
/// `skips` covers are not events and pass it by.
pub async fn replay_to(
    source: &Source,
    roots: &RootKeys,
    point: Point,
    skips: &SkipList,
    mut visit: impl FnMut(&RecordedEvent, &MemoryState),
) -> Result<Report, ReplayError> {
    let mut verifier = Verifier::new(roots, None).with_skips(skips.clone());
    source
        .read(|message| {
            if is_after(point, message.sequence, &message.payload) {
                return Ok(Flow::Stop);
            }
            if let Some(recorded) = verifier.push_message(&message)? {
                visit(&recorded, verifier.state());
            }
            Ok(Flow::Continue)
        })
        .await?;
    let report = match point {
        Point::End => verifier.finish()?,
        Point::Sequence(_) | Point::Time(_) => verifier.finish_at_point()?,
    };
    if let Point::Sequence(sequence) = point {
        if report.last_sequence < sequence {
            return Err(ReplayError::Usage(format!(
                "stream sequence {sequence} is past the end of the history (its last sequence is {})",
                report.last_sequence
            )));
        }
    }
    Ok(report)
}

/// Returns whether the message lies after `point`. A message that does not decode
/// is not after any point, so the verifier reports it.
fn is_after(point: Point, sequence: u64, payload: &[u8]) -> bool {
    match point {
        Point::Sequence(last) => sequence > last,
        Point::Time(at) => Frame::decode(payload)
            .ok()
            .and_then(|frame| Event::from_signed_bytes(&frame.signed).ok())
            .is_some_and(|event| event.recorded_at_micros > at),
        Point::End => false,
    }
}

/// Returns every secret, version, client, group, membership, grant, signing key
/// and operator of `state`, one row each.
pub fn state_table(state: &MemoryState) -> Table {
    let mut table =
        Table::new(&["entity", "name", "version", "revision", "sequence", "changed_at", "changed_by", "details"]);
    for secret in state.secrets.values() {
        let versions = state.versions.range((secret.name.clone(), 0)..=(secret.name.clone(), u64::MAX)).count();
        table.push(vec![
            "secret".to_owned(),
            secret.name.clone(),
            secret.current.version.to_string(),
            secret.revision.to_string(),
            secret.sequence.to_string(),
            time(secret.current.created_at_micros),
            secret.current.created_by.clone(),
            format!(
                "{:?}, incarnation {}, current version {}, {versions} versions kept, owner group {}, file {}",
                secret.status,
                secret.incarnation,
                secret.current.version,
                secret.metadata.owner_group.as_deref().unwrap_or("none"),
                secret.file_name().unwrap_or_default(),
            ),
        ]);
    }
    for ((name, version), stored) in &state.versions {
        let current = state.secrets.get(name).is_some_and(|s| s.current.version == *version);
        table.push(vec![
            "secret_version".to_owned(),
            name.clone(),
            version.to_string(),
            stored.revision.to_string(),
            String::new(),
            time(stored.created_at_micros),
            stored.created_by.clone(),
            format!(
                "size {} bytes, incarnation {}, data key {} under {}{}{}{}{}",
                stored.size,
                stored.incarnation,
                stored.data_key.store_key,
                stored.data_key.kek_id,
                if current { ", current" } else { "" },
                if stored.expired { ", expired" } else { "" },
                if stored.destroyed { ", destroyed" } else { "" },
                stored.rolled_back_from.map(|from| format!(", rollback of {from}")).unwrap_or_default(),
            ),
        ]);
    }
    for client in state.clients.values() {
        table.push(vec![
            "client".to_owned(),
            client.name.clone(),
            String::new(),
            String::new(),
            client.sequence.to_string(),
            time(client.created_at_micros),
            client.created_by.clone(),
            format!(
                "{}, owner group {}, description {:?}",
                if client.enabled { "enabled" } else { "disabled" },
                client.owner_group.as_deref().unwrap_or("none"),
                client.description
            ),
        ]);
    }
    for group in state.groups.values() {
        table.push(vec![
            "group".to_owned(),
            group.name.clone(),
            String::new(),
            String::new(),
            group.sequence.to_string(),
            time(group.created_at_micros),
            group.created_by.clone(),
            format!(
                "owner group {}, description {:?}",
                group.owner_group.as_deref().unwrap_or("none"),
                group.description
            ),
        ]);
    }
    for (client, group) in &state.memberships {
        table.push(pair_row("membership", group, &format!("client {client} is a member")));
    }
    for (secret, group) in &state.grants {
        table.push(pair_row("grant", group, &format!("may read secret {secret}")));
    }
    for (key_id, key) in &state.signing_keys {
        let row = vec![
            "signing_key".to_owned(),
            key_id.clone(),
            String::new(),
            String::new(),
            key.sequence.to_string(),
            time(key.certified_at_micros),
            key.certified_by.clone(),
            format!("public key {}", hex::encode(key.public_key)),
        ];
        table.push(row);
    }
    for operator in state.operators.values() {
        let tokens = operator.tokens.values().filter(|t| !t.revoked).count();
        table.push(vec![
            "operator".to_owned(),
            operator.identity.clone(),
            String::new(),
            String::new(),
            operator.sequence.to_string(),
            String::new(),
            String::new(),
            format!("roles [{}], {tokens} tokens not revoked", operator.roles.join(", ")),
        ]);
    }
    table
}

fn pair_row(entity: &str, group: &str, details: &str) -> Vec<String> {
    let mut row = vec![entity.to_owned(), group.to_owned()];
    row.extend(std::iter::repeat_n(String::new(), 5));
    row.push(details.to_owned());
    row
}

/// Columns of [`history_row`].
pub const HISTORY_COLUMNS: [&str; 8] =
    ["sequence", "recorded_at", "kind", "aggregate", "actor", "authentication", "revision", "details"];

/// Returns the history row of `recorded` if it changes `secret` or a grant on it.
pub fn history_row(recorded: &RecordedEvent, secret: &str) -> Option<Vec<String>> {
    let event = &recorded.event;
    let details = match event.aggregate.kind {
        AggregateType::Secret if event.aggregate.id == secret => secret_details(event),
        AggregateType::Group if matches!(event.kind.as_str(), KIND_GROUP_GRANT_ADDED | KIND_GROUP_GRANT_REMOVED) => {
            let grant: Grant = decode_body(&event.body).ok()?;
            if grant.secret != secret {
                return None;
            }
            format!("group {}", event.aggregate.id)
        }
        _ => return None,
    };
    Some(vec![
        recorded.sequence.to_string(),
        time(event.recorded_at_micros),
        event.kind.clone(),
        format!("{} {}", event.aggregate.kind.as_str(), event.aggregate.id),
        event.actor.principal.clone(),
        event.actor.authentication.clone(),
        event.aggregate_version.to_string(),
        details,
    ])
}

/// Describes a secret event by its metadata only.
fn secret_details(event: &Event) -> String {
    if event.kind != KIND_SECRET_VERSION_ADDED {
        return String::new();
    }
    match decode_body::<SecretVersionAdded>(&event.body) {
        Ok(body) => format!(
            "version {}, size {} bytes, mode {}",
            body.version,
            body.size,
            body.mode.map_or("default".to_owned(), |m| format!("{m:04o}"))
        ),
        Err(_) => String::new(),
    }
}

/// Columns of [`access_table`].
pub const ACCESS_COLUMNS: [&str; 5] = ["client", "group", "readable", "grant", "reason"];

/// Returns, for every group with a grant on `secret` and every member of it,
/// whether that member could read the secret in `state`, and why.
pub fn access_table(state: &MemoryState, secret: &str) -> Result<Table, ReplayError> {
    let view_error = |e: watchword_events::error::ViewError| ReplayError::Usage(e.to_string());
    let mut table = Table::new(&ACCESS_COLUMNS);
    let exists = state.secret(secret).map_err(view_error)?.is_some();
    let groups = state.grants.iter().filter(|(s, _)| s == secret).map(|(_, g)| g.clone());
    for group in groups {
        let grant = format!("group {group} grants secret {secret}");
        let members = state.group_members(&group).map_err(view_error)?;
        if members.is_empty() {
            table.push(vec![
                String::new(),
                group.clone(),
                "no".to_owned(),
                grant.clone(),
                "the group has no members".to_owned(),
            ]);
        }
        for client in members {
            let readable = may_read(state, &client, secret).map_err(view_error)?;
            let reason = match state.clients.get(&client) {
                _ if !exists => "the secret does not exist".to_owned(),
                None => "the client does not exist".to_owned(),
                Some(c) if !c.enabled => "the client is disabled".to_owned(),
                Some(_) => format!("member of group {group}, which has the grant, and enabled"),
            };
            let readable = if readable { "yes" } else { "no" };
            table.push(vec![client, group.clone(), readable.to_owned(), grant.clone(), reason]);
        }
    }
    Ok(table)
}
