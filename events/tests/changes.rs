//! Change notices derived from events: the kind, the groups and the version of
//! each, the same from the in-memory state and the redb outbox, and never content.

mod common;

use watchword_events::changes::{ChangeNotice, Derived, NoticeKind, derive_notice};
use watchword_events::fold::MemoryState;
use watchword_events::readmodel::ReadModel;

use common::{Stream, apply_to, roots, version_added};

/// Applies every message of `stream` to a fresh state and derives each notice.
fn derive_all(stream: &Stream) -> Vec<(u64, Derived)> {
    let mut state = MemoryState::default();
    let mut derived = Vec::new();
    for message in &stream.messages {
        let recorded = apply_to(&mut state, message).unwrap();
        derived.push((message.sequence, derive_notice(&state, &recorded).unwrap()));
    }
    derived
}

fn notices(derived: &[(u64, Derived)]) -> Vec<ChangeNotice> {
    derived
        .iter()
        .filter_map(|(_, d)| match d {
            Derived::Notice(notice) => Some(notice.clone()),
            _ => None,
        })
        .collect()
}

/// Builds a history: a secret written before and after two grants, one grant
/// removed, and events of other aggregates in between.
fn history() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.create_group("app");
    stream.create_group("ops");
    stream.create_client("web-1");
    stream.add_version("db");
    stream.add_grant("app", "db");
    stream.add_grant("ops", "db");
    stream.add_member("app", "web-1");
    stream.add_version("db");
    stream.remove_grant("ops", "db");
    stream
}

#[test]
fn notices_follow_kind_and_grants() {
    let stream = history();
    let notices = notices(&derive_all(&stream));
    let summary: Vec<(NoticeKind, Vec<&str>, Option<u64>)> =
        notices.iter().map(|n| (n.kind, n.groups.iter().map(String::as_str).collect(), n.version)).collect();
    assert_eq!(
        summary,
        vec![
            (NoticeKind::Created, vec![], Some(1)),
            (NoticeKind::AccessGranted, vec!["app"], Some(1)),
            (NoticeKind::AccessGranted, vec!["ops"], Some(1)),
            (NoticeKind::Updated, vec!["app", "ops"], Some(2)),
            (NoticeKind::AccessRevoked, vec!["ops"], Some(2)),
        ]
    );
    for notice in &notices {
        assert_eq!(notice.secret, "db");
        assert_eq!(notice.actor, "operator:alice");
        assert_eq!(notice.schema, 1);
    }
}

#[test]
fn other_aggregates_give_no_notice() {
    let derived = derive_all(&history());
    let quiet: Vec<u64> = derived.iter().filter(|(_, d)| *d == Derived::NoNotice).map(|(s, _)| *s).collect();
    // The certification, the two groups, the client and the membership.
    assert_eq!(quiet, vec![1, 2, 3, 4, 8]);
}

#[test]
fn unmapped_kind_gives_no_notice() {
    let stream = history();
    let mut state = MemoryState::default();
    let mut last = None;
    for message in &stream.messages {
        last = Some(apply_to(&mut state, message).unwrap());
    }
    // A secret event of a kind that has no mapping yet.
    let mut recorded = last.unwrap();
    recorded.event.kind = "secret.rolled_back".to_owned();
    let derived = derive_notice(&state, &recorded).unwrap();
    assert_eq!(derived, Derived::Unmapped { kind: "secret.rolled_back".to_owned() });
}

#[test]
fn outbox_holds_the_same_notices() {
    let stream = history();
    let expected = notices(&derive_all(&stream));
    let dir = tempfile::tempdir().unwrap();
    let model = ReadModel::open(&dir.path().join("r.redb"), 1 << 20).unwrap();
    let stored = stream.stored();
    model.apply_batch(&roots(), &stored[..6]).unwrap();
    model.apply_batch(&roots(), &stored[6..]).unwrap();

    assert_eq!(model.pending_notices(0, 100).unwrap(), expected);
    assert_eq!(model.pending_notices(expected[1].sequence, 2).unwrap(), expected[2..4].to_vec());

    model.prune_notices(expected[2].sequence).unwrap();
    assert_eq!(model.pending_notices(0, 100).unwrap(), expected[3..].to_vec());
}

#[test]
fn notices_carry_no_content_or_key_reference() {
    let stream = history();
    for notice in notices(&derive_all(&stream)) {
        let json = serde_json::to_vec(&notice).unwrap();
        for version in 1..=2 {
            let body = version_added(version);
            for secret_bytes in [body.content.ciphertext.clone(), body.data_key.store_key.into_bytes()] {
                assert!(!json.windows(secret_bytes.len()).any(|w| w == secret_bytes.as_slice()), "{notice:?}");
            }
        }
    }
}
