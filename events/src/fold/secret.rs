//! The secret lifecycle: versions, metadata, deletion, restoration, destruction and expiry.
//!
//! Version numbers grow by one across every incarnation of a name, so a version
//! number names one content for good. A write to a deleted or destroyed name starts
//! a new incarnation with fresh metadata; readers never see the versions of an
//! earlier incarnation.

use crate::body::{
    KIND_SECRET_DELETED, KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED,
    KIND_SECRET_VERSION_ADDED, KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED,
    KIND_SECRET_VERSION_EXPIRED, MetadataSet, SealedContent, SecretMetadata, SecretVersionAdded, SecretVersionAddedV2,
    VersionRef,
};
use crate::error::FoldError;
use crate::event::{AggregateType, Event};
use crate::fold::{
    Change, SecretState, SecretStatus, SecretVersion, StateView, decode, effective_file_name, expect_aggregate,
    inconsistent,
};
use crate::verify::RecordedEvent;

/// Applies one secret event.
pub(super) fn fold_secret(view: &impl StateView, recorded: &RecordedEvent) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    expect_aggregate(event, AggregateType::Secret)?;
    let current = view.secret(&event.aggregate.id)?;

    match event.kind.as_str() {
        KIND_SECRET_VERSION_ADDED => {
            let body: SecretVersionAdded = decode(event)?;
            let metadata = current.as_ref().filter(|s| s.status == SecretStatus::Active).map(|s| s.metadata.clone());
            add_version(view, recorded, current, upgrade(body, metadata))
        }
        KIND_SECRET_VERSION_ADDED_V2 => {
            let body: SecretVersionAddedV2 = decode(event)?;
            add_version(view, recorded, current, body)
        }
        KIND_SECRET_METADATA_SET => {
            let body: MetadataSet = decode(event)?;
            let state = require(event, current, &[SecretStatus::Active])?;
            let mut changes = claim_file_name(view, &state, Some(&body.metadata))?;
            changes.push(Change::Secret(SecretState { metadata: body.metadata, ..advance(state, recorded) }));
            Ok(changes)
        }
        KIND_SECRET_DELETED | KIND_SECRET_RESTORED => {
            let _: crate::body::Empty = decode(event)?;
            let (from, to) = match event.kind.as_str() {
                KIND_SECRET_DELETED => (SecretStatus::Active, SecretStatus::Deleted),
                _ => (SecretStatus::Deleted, SecretStatus::Active),
            };
            let state = require(event, current, &[from])?;
            Ok(vec![Change::Secret(SecretState { status: to, ..advance(state, recorded) })])
        }
        KIND_SECRET_DESTROYED => {
            let _: crate::body::Empty = decode(event)?;
            let state = require(event, current, &[SecretStatus::Active, SecretStatus::Deleted])?;
            destroy_all(view, recorded, state)
        }
        KIND_SECRET_VERSION_DESTROYED | KIND_SECRET_VERSION_EXPIRED => {
            let body: VersionRef = decode(event)?;
            let state = require(event, current, &[SecretStatus::Active, SecretStatus::Deleted])?;
            mark_version(view, recorded, state, body.version)
        }
        other => Err(FoldError::UnknownKind { kind: other.to_owned() }),
    }
}

/// Reads the version-1 body as a version-2 one: its file mode becomes the secret's
/// delivery mode, which is what it meant when it was written.
fn upgrade(body: SecretVersionAdded, metadata: Option<SecretMetadata>) -> SecretVersionAddedV2 {
    let mut metadata = metadata.unwrap_or_default();
    metadata.delivery.mode = body.mode;
    SecretVersionAddedV2 {
        version: body.version,
        content: body.content,
        data_key: body.data_key,
        size: body.size,
        digest: [0; 32],
        expires_at_micros: None,
        rolled_back_from: None,
        metadata: Some(metadata),
    }
}

fn add_version(
    view: &impl StateView,
    recorded: &RecordedEvent,
    current: Option<SecretState>,
    body: SecretVersionAddedV2,
) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    let name = &event.aggregate.id;
    let previous = current.as_ref().map_or(0, |s| s.current.version);
    if body.version != previous + 1 {
        return Err(inconsistent(event, format!("content version {} follows version {previous}", body.version)));
    }

    // A write to a deleted or destroyed name starts a new incarnation with fresh metadata.
    let continues = current.as_ref().filter(|s| s.status == SecretStatus::Active);
    let incarnation = match (&current, continues) {
        (_, Some(state)) => state.incarnation,
        (Some(state), None) => state.incarnation + 1,
        (None, None) => 1,
    };
    if let Some(from) = body.rolled_back_from {
        check_rollback_source(view, event, incarnation, from)?;
    }
    let metadata = body.metadata.clone().or_else(|| continues.map(|s| s.metadata.clone())).unwrap_or_default();

    let version = SecretVersion {
        version: body.version,
        revision: event.aggregate_version,
        incarnation,
        content: body.content,
        data_key: body.data_key,
        size: body.size,
        digest: (event.kind != KIND_SECRET_VERSION_ADDED).then_some(body.digest),
        expires_at_micros: body.expires_at_micros,
        expired: false,
        destroyed: false,
        rolled_back_from: body.rolled_back_from,
        created_at_micros: event.recorded_at_micros,
        created_by: event.actor.principal.clone(),
    };
    let mut changes = match &current {
        Some(state) => claim_file_name(view, state, Some(&metadata))?,
        None => claim(view, name, None, effective_file_name(name, &metadata))?,
    };
    let state = SecretState {
        name: name.clone(),
        revision: event.aggregate_version,
        incarnation,
        status: SecretStatus::Active,
        metadata,
        current: without_ciphertext(&version),
        sequence: recorded.sequence,
    };
    if let Some(old) = current.as_ref() {
        changes.extend(end_expiry(old));
    }
    if let Some(at_micros) = version.expires_at_micros {
        changes.push(Change::Expiry { at_micros, name: name.clone(), present: true });
    }
    changes.push(Change::Version { name: name.clone(), version });
    changes.push(Change::Secret(state));
    Ok(changes)
}

/// Removes the expiry entry of the current version, if it has one.
fn end_expiry(state: &SecretState) -> Option<Change> {
    let pending = !state.current.expired && !state.current.destroyed;
    let at_micros = state.current.expires_at_micros.filter(|_| pending)?;
    Some(Change::Expiry { at_micros, name: state.name.clone(), present: false })
}

/// A rollback repeats a version of the same incarnation that is not destroyed.
fn check_rollback_source(view: &impl StateView, event: &Event, incarnation: u64, from: u64) -> Result<(), FoldError> {
    let source = view.secret_version(&event.aggregate.id, from)?;
    match source {
        Some(v) if v.incarnation == incarnation && !v.destroyed => Ok(()),
        _ => Err(inconsistent(event, format!("rollback from version {from}, which is not a readable version"))),
    }
}

/// Marks every version destroyed and empties its ciphertext, and releases the file name.
fn destroy_all(view: &impl StateView, recorded: &RecordedEvent, state: SecretState) -> Result<Vec<Change>, FoldError> {
    let name = &recorded.event.aggregate.id;
    let mut changes = claim_file_name(view, &state, None)?;
    changes.extend(end_expiry(&state));
    for version in view.secret_versions(name)? {
        if !version.destroyed {
            changes.push(Change::Version { name: name.clone(), version: destroyed(version) });
        }
    }
    let current = destroyed(state.current.clone());
    changes.push(Change::Secret(SecretState { status: SecretStatus::Destroyed, current, ..advance(state, recorded) }));
    Ok(changes)
}

/// Applies a version destruction or expiry.
fn mark_version(
    view: &impl StateView,
    recorded: &RecordedEvent,
    state: SecretState,
    number: u64,
) -> Result<Vec<Change>, FoldError> {
    let event = &recorded.event;
    let name = &event.aggregate.id;
    let Some(version) = view.secret_version(name, number)? else {
        return Err(inconsistent(event, format!("version {number} does not exist")));
    };
    let expiring = event.kind == KIND_SECRET_VERSION_EXPIRED;
    if version.destroyed || (expiring && version.expired) {
        return Err(inconsistent(event, format!("version {number} is already {}", describe(&version))));
    }

    let version = if expiring { SecretVersion { expired: true, ..version } } else { destroyed(version) };
    let mut changes = Vec::new();
    let mut state = advance(state, recorded);
    if state.current.version == number {
        changes.extend(end_expiry(&state));
        state.current = without_ciphertext(&version);
    }
    changes.push(Change::Version { name: name.clone(), version });
    changes.push(Change::Secret(state));
    Ok(changes)
}

fn describe(version: &SecretVersion) -> &'static str {
    if version.destroyed { "destroyed" } else { "expired" }
}

/// Returns the version with its ciphertext removed. The server erases the data key
/// the version was sealed under, so the content is gone either way. The read model
/// drops the ciphertext too, so no copy of it outlives the destruction.
fn destroyed(version: SecretVersion) -> SecretVersion {
    SecretVersion { destroyed: true, ..without_ciphertext(&version) }
}

/// Returns a copy of the version for the secret record, which keeps no ciphertext.
fn without_ciphertext(version: &SecretVersion) -> SecretVersion {
    SecretVersion { content: SealedContent { nonce: [0; 12], ciphertext: Vec::new() }, ..version.clone() }
}

/// Returns the state with the event's revision and sequence.
fn advance(state: SecretState, recorded: &RecordedEvent) -> SecretState {
    SecretState { revision: recorded.event.aggregate_version, sequence: recorded.sequence, ..state }
}

fn require(event: &Event, current: Option<SecretState>, allowed: &[SecretStatus]) -> Result<SecretState, FoldError> {
    match current {
        Some(state) if allowed.contains(&state.status) => Ok(state),
        Some(state) => Err(inconsistent(event, format!("the secret is {:?}", state.status))),
        None => Err(inconsistent(event, "the secret does not exist".to_owned())),
    }
}

/// Moves the file-name claim of `state` to the one `metadata` gives (`None`: release it).
fn claim_file_name(
    view: &impl StateView,
    state: &SecretState,
    metadata: Option<&SecretMetadata>,
) -> Result<Vec<Change>, FoldError> {
    let held = match state.status {
        SecretStatus::Destroyed => None,
        SecretStatus::Active | SecretStatus::Deleted => state.file_name(),
    };
    let wanted = metadata.and_then(|m| effective_file_name(&state.name, m));
    claim(view, &state.name, held, wanted)
}

/// Releases `held` and claims `wanted` for `name`. A file name another secret
/// already claims stays with that secret: the server checks file names before it
/// writes, and agents refuse to write two secrets to one file.
fn claim(
    view: &impl StateView,
    name: &str,
    held: Option<String>,
    wanted: Option<String>,
) -> Result<Vec<Change>, FoldError> {
    if held == wanted {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    if let Some(file_name) = held
        && view.file_name_owner(&file_name)?.as_deref() == Some(name)
    {
        changes.push(Change::FileName { file_name, secret: None });
    }
    if let Some(file_name) = wanted
        && view.file_name_owner(&file_name)?.is_none()
    {
        changes.push(Change::FileName { file_name, secret: Some(name.to_owned()) });
    }
    Ok(changes)
}
