//! The secret lifecycle in the fold: incarnations, metadata, file-name claims,
//! rollback, deletion, destruction and expiry, checked on the in-memory state and
//! on the redb read model, which must agree.

mod common;

use watchword_events::body::{
    DataKeyRef, Delivery, KIND_SECRET_DELETED, KIND_SECRET_DESTROYED, KIND_SECRET_METADATA_SET, KIND_SECRET_RESTORED,
    KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED, KIND_SECRET_VERSION_EXPIRED, MetadataSet,
    SealedContent, SecretMetadata, SecretVersionAddedV2, VersionRef, encode_body,
};
use watchword_events::error::{ApplyError, FoldError};
use watchword_events::fold::{MemoryState, SecretStatus, may_read};
use watchword_events::readmodel::ReadModel;
use watchword_events::{Aggregate, fold::StateView};

use common::{Stream, apply_to, rejection};

fn metadata(owner: &str, file_name: Option<&str>) -> SecretMetadata {
    SecretMetadata {
        owner_group: Some(owner.to_owned()),
        description: "test".to_owned(),
        labels: [("team".to_owned(), "payments".to_owned())].into(),
        delivery: Delivery { file_name: file_name.map(str::to_owned), mode: Some(0o440), ..Default::default() },
    }
}

fn version(number: u64, expires: Option<i64>, from: Option<u64>, meta: Option<SecretMetadata>) -> Vec<u8> {
    let fill = number as u8;
    encode_body(&SecretVersionAddedV2 {
        version: number,
        content: SealedContent { nonce: [fill; 12], ciphertext: vec![fill; 20] },
        data_key: DataKeyRef { kek_id: "kek".to_owned(), store_key: format!("dk{number}"), wrapped_sha256: [fill; 32] },
        size: 4,
        digest: [fill; 32],
        expires_at_micros: expires,
        rolled_back_from: from,
        metadata: meta,
    })
}

fn secret(stream: &mut Stream, name: &str, kind: &str, body: Vec<u8>) {
    stream.append(Aggregate::secret(name), kind, body);
}

fn empty() -> Vec<u8> {
    encode_body(&watchword_events::body::Empty {})
}

/// Applies the whole stream to a memory state and a redb read model, checks they
/// agree, and returns the memory state.
fn project(stream: &Stream) -> MemoryState {
    let dir = tempfile::tempdir().unwrap();
    let model = ReadModel::open(&dir.path().join("model.redb"), 1 << 20).unwrap();
    let stored: Vec<_> = stream.messages.iter().map(|m| m.stored()).collect();
    model.apply_batch(&common::roots(), &stored).unwrap();
    let memory = stream.memory_state();
    assert_eq!(model.snapshot().unwrap(), memory, "the redb and in-memory states differ");
    memory
}

#[test]
fn delete_restore_and_new_incarnation() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, Some(metadata("web", None))));
    secret(&mut stream, "db", KIND_SECRET_DELETED, empty());
    let deleted = project(&stream);
    assert_eq!(deleted.secrets["db"].status, SecretStatus::Deleted);
    assert_eq!(deleted.file_names.get("db").map(String::as_str), Some("db"), "a deleted secret keeps its file name");

    secret(&mut stream, "db", KIND_SECRET_RESTORED, empty());
    let restored = project(&stream);
    assert_eq!(restored.secrets["db"].status, SecretStatus::Active);
    assert_eq!(restored.secrets["db"].metadata, metadata("web", None));

    secret(&mut stream, "db", KIND_SECRET_DELETED, empty());
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, None, None, None));
    let again = project(&stream);
    let state = &again.secrets["db"];
    assert_eq!(state.incarnation, 2);
    assert_eq!(state.current.version, 2, "version numbers continue across incarnations");
    assert_eq!(state.metadata, SecretMetadata::default(), "a new incarnation starts with fresh metadata");
    assert_eq!(again.versions[&("db".to_owned(), 1)].incarnation, 1);
}

#[test]
fn deleted_secret_is_not_readable() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    stream.create_client("agent");
    stream.create_group("web");
    stream.add_member("web", "agent");
    stream.add_grant("web", "db");
    assert!(may_read(&project(&stream), "agent", "db").unwrap());

    secret(&mut stream, "db", KIND_SECRET_DELETED, empty());
    assert!(!may_read(&project(&stream), "agent", "db").unwrap());
}

#[test]
fn metadata_moves_file_name_claim() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "a/b", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    assert_eq!(project(&stream).file_names.get("a%2Fb").map(String::as_str), Some("a/b"));

    let body = encode_body(&MetadataSet { metadata: metadata("web", Some("b.env")) });
    secret(&mut stream, "a/b", KIND_SECRET_METADATA_SET, body);
    let state = project(&stream);
    assert_eq!(state.file_names.get("b.env").map(String::as_str), Some("a/b"));
    assert!(!state.file_names.contains_key("a%2Fb"), "the old file name is released");
    assert_eq!(state.secrets["a/b"].file_name().as_deref(), Some("b.env"));
}

#[test]
fn rollback_needs_readable_source() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(3, None, Some(1), None));
    let state = project(&stream);
    assert_eq!(state.secrets["db"].current.rolled_back_from, Some(1));

    secret(&mut stream, "db", KIND_SECRET_VERSION_DESTROYED, encode_body(&VersionRef { version: 2 }));
    let mut state = project(&stream);
    let message =
        stream.next_message(Aggregate::secret("db"), KIND_SECRET_VERSION_ADDED_V2, version(4, None, Some(2), None));
    let error = rejection(&mut state, &message);
    assert!(error.to_string().contains("rollback from version 2"), "{error}");
}

#[test]
fn destroy_version_empties_ciphertext() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_DESTROYED, encode_body(&VersionRef { version: 1 }));
    let state = project(&stream);
    let destroyed = &state.versions[&("db".to_owned(), 1)];
    assert!(destroyed.destroyed);
    assert!(destroyed.content.ciphertext.is_empty());
    assert_eq!(state.secrets["db"].current.version, 2);
    assert!(state.secrets["db"].servable(0));

    let message = stream.next_message(
        Aggregate::secret("db"),
        KIND_SECRET_VERSION_DESTROYED,
        encode_body(&VersionRef { version: 1 }),
    );
    let error = rejection(&mut state.clone(), &message);
    assert!(error.to_string().contains("already destroyed"), "{error}");
}

#[test]
fn destroy_secret_destroys_every_version() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, Some(5), None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, Some(9), None, None));
    secret(&mut stream, "db", KIND_SECRET_DESTROYED, empty());
    let state = project(&stream);
    assert_eq!(state.secrets["db"].status, SecretStatus::Destroyed);
    assert!(state.versions.values().all(|v| v.destroyed && v.content.ciphertext.is_empty()));
    assert!(state.file_names.is_empty(), "the file name is released");
    assert!(state.expiries.is_empty(), "nothing left to expire");

    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(3, None, None, None));
    let state = project(&stream);
    assert_eq!(state.secrets["db"].incarnation, 2);
    assert_eq!(state.secrets["db"].status, SecretStatus::Active);
}

#[test]
fn expiry_index_follows_current_version() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, Some(100), None, None));
    assert!(project(&stream).expiries.contains(&(100, "db".to_owned())));
    assert!(!project(&stream).secrets["db"].servable(100), "a version is not served from its expiry time on");
    assert!(project(&stream).secrets["db"].servable(99));

    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, Some(200), None, None));
    let state = project(&stream);
    assert_eq!(state.expiries.iter().cloned().collect::<Vec<_>>(), vec![(200, "db".to_owned())]);

    secret(&mut stream, "db", KIND_SECRET_VERSION_EXPIRED, encode_body(&VersionRef { version: 2 }));
    let state = project(&stream);
    assert!(state.expiries.is_empty());
    assert!(state.secrets["db"].current.expired);
    assert!(!state.secrets["db"].servable(0));
}

#[test]
fn lifecycle_events_need_the_right_status() {
    let mut stream = Stream::bootstrapped();
    let mut state = stream.memory_state();
    for kind in [KIND_SECRET_DELETED, KIND_SECRET_RESTORED, KIND_SECRET_DESTROYED] {
        let message = stream.next_message(Aggregate::secret("ghost"), kind, empty());
        assert!(matches!(
            rejection(&mut state, &message),
            ApplyError::Fold { source: FoldError::Inconsistent { .. }, .. }
        ));
    }

    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    let mut state = stream.memory_state();
    let restore = stream.next_message(Aggregate::secret("db"), KIND_SECRET_RESTORED, empty());
    assert!(rejection(&mut state, &restore).to_string().contains("Active"));
    let skipped =
        stream.next_message(Aggregate::secret("db"), KIND_SECRET_VERSION_ADDED_V2, version(3, None, None, None));
    assert!(rejection(&mut state, &skipped).to_string().contains("content version 3 follows version 1"));
}

#[test]
fn taken_file_name_stays_with_first_secret() {
    let mut stream = Stream::bootstrapped();
    secret(&mut stream, "a", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, Some(metadata("web", Some("x")))));
    secret(&mut stream, "b", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, Some(metadata("web", Some("x")))));
    let mut state = project(&stream);
    assert_eq!(state.file_names["x"], "a");
    assert_eq!(state.file_name_owner("x").unwrap().as_deref(), Some("a"));

    // Releasing b's claim must not take a's.
    let message = stream.next_message(Aggregate::secret("b"), KIND_SECRET_DESTROYED, empty());
    apply_to(&mut state, &message).unwrap();
    assert_eq!(state.file_names["x"], "a");
}

#[test]
fn lifecycle_events_give_notice_kinds() {
    use watchword_events::changes::{Derived, NoticeKind, derive_notice};
    let mut stream = Stream::bootstrapped();
    let start = stream.messages.len();
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(1, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(2, None, None, None));
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(3, None, Some(1), None));
    secret(&mut stream, "db", KIND_SECRET_METADATA_SET, encode_body(&MetadataSet { metadata: metadata("web", None) }));
    secret(&mut stream, "db", KIND_SECRET_VERSION_EXPIRED, encode_body(&VersionRef { version: 3 }));
    secret(&mut stream, "db", KIND_SECRET_VERSION_DESTROYED, encode_body(&VersionRef { version: 2 }));
    secret(&mut stream, "db", KIND_SECRET_DELETED, empty());
    secret(&mut stream, "db", KIND_SECRET_RESTORED, empty());
    secret(&mut stream, "db", KIND_SECRET_DESTROYED, empty());
    secret(&mut stream, "db", KIND_SECRET_VERSION_ADDED_V2, version(4, None, None, None));

    let mut state = MemoryState::default();
    let mut kinds = Vec::new();
    for (index, message) in stream.messages.iter().enumerate() {
        let recorded = apply_to(&mut state, message).unwrap();
        if index < start {
            continue;
        }
        match derive_notice(&state, &recorded).unwrap() {
            Derived::Notice(notice) => kinds.push((notice.kind, notice.version)),
            other => panic!("sequence {}: expected a notice, got {other:?}", message.sequence),
        }
    }
    assert_eq!(
        kinds,
        vec![
            (NoticeKind::Created, Some(1)),
            (NoticeKind::Updated, Some(2)),
            (NoticeKind::RolledBack, Some(3)),
            (NoticeKind::MetadataChanged, Some(3)),
            (NoticeKind::Expired, Some(3)),
            (NoticeKind::Destroyed, Some(2)),
            (NoticeKind::Deleted, Some(3)),
            (NoticeKind::Restored, Some(3)),
            (NoticeKind::Destroyed, Some(3)),
            (NoticeKind::Created, Some(4)),
        ]
    );
}
