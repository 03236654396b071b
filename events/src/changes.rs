//! Change notices: what services learn when a secret changes, derived from events.
//!
//! [`derive_notice`] is the one function that maps a stored event to a notice. It
//! reads the event's kind and body and the state right after the fold applied the
//! event. A notice carries metadata only: the secret's name, the groups it is
//! addressed to, the version, the kind of change, the actor, the time and the
//! stream sequence of the event. It never carries content, data-key references or
//! any other key material. `docs/changes.md` at the repository root documents the
//! JSON form and `docs/change-notice.schema.json` its schema.

use serde::{Deserialize, Serialize};

use crate::body::{
    Grant, KIND_CLIENT_CERTIFICATE_ISSUED, KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED,
    KIND_CLIENT_ENABLED, KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, KIND_GROUP_CREATED, KIND_GROUP_DELETED,
    KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED, KIND_GROUP_MEMBER_REMOVED,
    KIND_OPERATOR_ROLES_SET, KIND_OPERATOR_TOKEN_ISSUED, KIND_OPERATOR_TOKEN_REVOKED, KIND_SECRET_DELETED,
    KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED, KIND_SECRET_VERSION_ADDED,
    KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED, KIND_SECRET_VERSION_EXPIRED,
    KIND_SIGNING_KEY_CERTIFIED, SecretVersionAdded, SecretVersionAddedV2, VersionRef, decode_body,
};
use crate::error::ViewError;
use crate::fold::StateView;
use crate::verify::RecordedEvent;

/// Version of the notice format, the `schema` field of every notice.
pub const NOTICE_SCHEMA_VERSION: u32 = 1;

/// The kind of change to a secret that a notice reports.
///
/// Every kind is part of schema version 1, including those whose events this
/// build does not record yet (see [`derive_notice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The first version of the secret was written.
    Created,
    /// A new version of the secret's content was written.
    Updated,
    /// The secret's metadata (description, labels, owner, file owner and mode) changed.
    MetadataChanged,
    /// An earlier version became the current one again.
    RolledBack,
    /// A version passed its expiry time and is no longer served.
    Expired,
    /// The secret was deleted; it can still be restored.
    Deleted,
    /// A deleted secret was restored.
    Restored,
    /// The secret, or one of its versions, was destroyed and cannot be read again.
    Destroyed,
    /// A group may now read the secret.
    AccessGranted,
    /// A group may no longer read the secret.
    AccessRevoked,
}

impl NoticeKind {
    /// Every kind, in the order of the schema.
    pub const ALL: [NoticeKind; 10] = [
        NoticeKind::Created,
        NoticeKind::Updated,
        NoticeKind::MetadataChanged,
        NoticeKind::RolledBack,
        NoticeKind::Expired,
        NoticeKind::Deleted,
        NoticeKind::Restored,
        NoticeKind::Destroyed,
        NoticeKind::AccessGranted,
        NoticeKind::AccessRevoked,
    ];

    /// Returns the name used in JSON and in filters, such as `access_granted`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Created => "created",
            NoticeKind::Updated => "updated",
            NoticeKind::MetadataChanged => "metadata_changed",
            NoticeKind::RolledBack => "rolled_back",
            NoticeKind::Expired => "expired",
            NoticeKind::Deleted => "deleted",
            NoticeKind::Restored => "restored",
            NoticeKind::Destroyed => "destroyed",
            NoticeKind::AccessGranted => "access_granted",
            NoticeKind::AccessRevoked => "access_revoked",
        }
    }

    /// Parses a name as [`NoticeKind::as_str`] returns it.
    pub fn parse(name: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One change notice: metadata of a change to one secret, never its content.
///
/// The read model's outbox stores it in MessagePack, and NATS and the HTTP feed
/// carry it as JSON (`docs/change-notice.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// Always [`NOTICE_SCHEMA_VERSION`] for this layout.
    pub schema: u32,
    /// Stream sequence of the event on `WATCHWORD_EVENTS`; unique per notice and
    /// increasing, but not contiguous, because most events yield no notice.
    pub sequence: u64,
    pub kind: NoticeKind,
    pub secret: String,
    /// Groups the notice is addressed to, ordered by name. For a change of the
    /// secret, these are the groups with a grant on it right after the event. For a
    /// grant change, it is the group whose grant changed. Empty when no group has a grant.
    pub groups: Vec<String>,
    /// The content version the change concerns, or the current one for a grant
    /// change; `None` when the secret does not exist.
    pub version: Option<u64>,
    /// Principal that caused the change.
    pub actor: String,
    /// RFC 3339 time, in UTC, at which the event was recorded.
    pub time: String,
    /// Id of the event (UUIDv7), to look it up with the replay tool.
    pub event_id: String,
}

/// The outcome of [`derive_notice`] for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Derived {
    Notice(ChangeNotice),
    /// The event changes no secret and no grant on one (clients, operators, keys, checkpoints).
    NoNotice,
    /// The fold applies the kind, but no notice mapping exists for it yet. A
    /// notice is never guessed, so the caller logs the kind and moves on.
    Unmapped {
        kind: String,
    },
}

/// Derives the change notice of `recorded` from its kind, its body and `view`,
/// the state right after the fold applied the event.
///
/// A version event is `created` when it starts an incarnation, `rolled_back` when
/// it repeats an earlier version, and `updated` otherwise. `secret.metadata_set`
/// maps to `metadata_changed`, `secret.version_expired` to `expired`,
/// `secret.deleted` to `deleted`, `secret.restored` to `restored`, and
/// `secret.destroyed` and `secret.version_destroyed` to `destroyed`.
pub fn derive_notice(view: &(impl StateView + ?Sized), recorded: &RecordedEvent) -> Result<Derived, ViewError> {
    let event = &recorded.event;
    match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED => {
            let Ok(body) = decode_body::<SecretVersionAdded>(&event.body) else {
                return Ok(unmapped(recorded));
            };
            let kind = if body.version == 1 { NoticeKind::Created } else { NoticeKind::Updated };
            let name = &event.aggregate.id;
            Ok(notice(recorded, kind, name, view.secret_groups(name)?, Some(body.version)))
        }
        KIND_SECRET_VERSION_ADDED_V2 => {
            let Ok(body) = decode_body::<SecretVersionAddedV2>(&event.body) else {
                return Ok(unmapped(recorded));
            };
            let name = &event.aggregate.id;
            // The version before this one belongs to another incarnation, or there is
            // none: one lookup, whatever the number of versions.
            let starts_incarnation = match (view.secret(name)?, body.version.checked_sub(1)) {
                (Some(state), Some(previous)) if previous > 0 => {
                    view.secret_version(name, previous)?.is_none_or(|v| v.incarnation != state.incarnation)
                }
                _ => true,
            };
            let kind = match (starts_incarnation, body.rolled_back_from) {
                (true, _) => NoticeKind::Created,
                (false, Some(_)) => NoticeKind::RolledBack,
                (false, None) => NoticeKind::Updated,
            };
            Ok(notice(recorded, kind, name, view.secret_groups(name)?, Some(body.version)))
        }
        KIND_SECRET_METADATA_SET | KIND_SECRET_DELETED | KIND_SECRET_RESTORED | KIND_SECRET_DESTROYED => {
            let kind = match event.kind.as_str() {
                KIND_SECRET_METADATA_SET => NoticeKind::MetadataChanged,
                KIND_SECRET_DELETED => NoticeKind::Deleted,
                KIND_SECRET_RESTORED => NoticeKind::Restored,
                _ => NoticeKind::Destroyed,
            };
            let name = &event.aggregate.id;
            let version = view.secret(name)?.map(|secret| secret.current.version);
            Ok(notice(recorded, kind, name, view.secret_groups(name)?, version))
        }
        KIND_SECRET_VERSION_DESTROYED | KIND_SECRET_VERSION_EXPIRED => {
            let Ok(body) = decode_body::<VersionRef>(&event.body) else {
                return Ok(unmapped(recorded));
            };
            let kind =
                if event.kind == KIND_SECRET_VERSION_EXPIRED { NoticeKind::Expired } else { NoticeKind::Destroyed };
            let name = &event.aggregate.id;
            Ok(notice(recorded, kind, name, view.secret_groups(name)?, Some(body.version)))
        }
        KIND_GROUP_GRANT_ADDED | KIND_GROUP_GRANT_REMOVED => {
            let Ok(body) = decode_body::<Grant>(&event.body) else {
                return Ok(unmapped(recorded));
            };
            let kind = if event.kind == KIND_GROUP_GRANT_ADDED {
                NoticeKind::AccessGranted
            } else {
                NoticeKind::AccessRevoked
            };
            let version = view.secret(&body.secret)?.map(|secret| secret.current.version);
            let groups = vec![event.aggregate.id.clone()];
            Ok(notice(recorded, kind, &body.secret, groups, version))
        }
        // The server deletes only groups without grants, so every revocation has its
        // own group.grant_removed notice before the group goes.
        KIND_GROUP_CREATED | KIND_GROUP_DELETED | KIND_GROUP_MEMBER_ADDED | KIND_GROUP_MEMBER_REMOVED => {
            Ok(Derived::NoNotice)
        }
        KIND_SIGNING_KEY_CERTIFIED
        | crate::checkpoint::KIND_CHECKPOINT
        | KIND_CLIENT_CREATED
        | KIND_CLIENT_DISABLED
        | KIND_CLIENT_ENABLED
        | KIND_CLIENT_DELETED
        | KIND_CLIENT_ENROLMENT_TOKEN_ISSUED
        | KIND_CLIENT_CERTIFICATE_ISSUED
        | KIND_OPERATOR_ROLES_SET
        | KIND_OPERATOR_TOKEN_ISSUED
        | KIND_OPERATOR_TOKEN_REVOKED => Ok(Derived::NoNotice),
        _ => Ok(unmapped(recorded)),
    }
}

fn notice(
    recorded: &RecordedEvent,
    kind: NoticeKind,
    secret: &str,
    groups: Vec<String>,
    version: Option<u64>,
) -> Derived {
    let event = &recorded.event;
    Derived::Notice(ChangeNotice {
        schema: NOTICE_SCHEMA_VERSION,
        sequence: recorded.sequence,
        kind,
        secret: secret.to_owned(),
        groups,
        version,
        actor: event.actor.principal.clone(),
        time: format_micros(event.recorded_at_micros),
        event_id: event.id.to_string(),
    })
}

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC, or as the plain
/// number when the time is outside the range RFC 3339 can express.
pub fn format_micros(micros: i64) -> String {
    let nanos = i128::from(micros) * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// Returns the outcome for an event without a notice mapping. A body that fails
/// to decode also ends here, so the event gets no notice rather than a wrong one;
/// the fold decodes every body first, so that cannot happen to a projected event.
fn unmapped(recorded: &RecordedEvent) -> Derived {
    Derived::Unmapped { kind: recorded.event.kind.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in NoticeKind::ALL {
            assert_eq!(NoticeKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(NoticeKind::parse("renamed"), None);
    }
}
