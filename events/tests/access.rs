//! The access model: client and group lifecycles in the fold, the read rule
//! (`may_read`), and the redb read model against the in-memory fold for the same
//! events. Every rejection is also checked to leave the state as it was.

mod common;

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use watchword_events::body::{
    KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED, KIND_GROUP_CREATED,
    KIND_GROUP_DELETED, KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED,
    KIND_GROUP_MEMBER_REMOVED,
};
use watchword_events::error::{ApplyError, DecodeError, FoldError, VerifyError};
use watchword_events::fold::{self, MemoryState, StateView};
use watchword_events::readmodel::ReadModel;
use watchword_events::{Aggregate, Event, Frame};

use common::{
    Message, Stream, apply_to, created_body, empty_body, grant_body, membership_body, rejection, root_key, roots,
};

const CACHE_BYTES: usize = 1 << 20;

fn fold_error(error: ApplyError) -> FoldError {
    match error {
        ApplyError::Fold { source, .. } => source,
        other => panic!("expected a fold error, got {other}"),
    }
}

/// Applies `message`, expects `Inconsistent` naming its kind and aggregate, and
/// returns the reason. [`rejection`] checks that the state did not change.
fn inconsistent_reason(state: &mut MemoryState, message: &Message) -> String {
    let event = decoded(message);
    match fold_error(rejection(state, message)) {
        FoldError::Inconsistent { kind, aggregate, reason } => {
            assert_eq!(kind, event.kind);
            assert_eq!(aggregate, event.aggregate);
            reason
        }
        other => panic!("expected Inconsistent for {} on {:?}, got {other}", event.kind, event.aggregate),
    }
}

fn decoded(message: &Message) -> Event {
    let frame = Frame::decode(&message.payload).expect("a valid frame");
    Event::from_signed_bytes(&frame.signed).expect("a valid envelope")
}

fn may_read(state: &MemoryState, client: &str, secret: &str) -> bool {
    fold::may_read(state, client, secret).expect("the memory state cannot fail")
}

fn membership(client: &str, group: &str) -> (String, String) {
    (client.to_owned(), group.to_owned())
}

fn grant(secret: &str, group: &str) -> (String, String) {
    (secret.to_owned(), group.to_owned())
}

/// Returns a stream in which client `web-1` is an enabled member of group `web`,
/// which has a grant on the existing secret `db/password`.
fn granted_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db/password");
    stream.create_client("web-1");
    stream.create_group("web");
    stream.add_member("web", "web-1");
    stream.add_grant("web", "db/password");
    stream
}

#[test]
fn client_lifecycle_create_disable_enable_delete() {
    let mut stream = Stream::bootstrapped();
    let created = stream.append(
        Aggregate::client("web-1"),
        KIND_CLIENT_CREATED,
        created_body(Some("payments admins"), "web node 1"),
    );
    let state = stream.memory_state();
    let client = &state.clients["web-1"];
    assert!(client.enabled);
    assert_eq!(client.owner_group.as_deref(), Some("payments admins"));
    assert_eq!(client.description, "web node 1");
    assert_eq!(client.created_by, "operator:alice");
    assert_eq!(client.sequence, created.sequence);
    let created_at = client.created_at_micros;

    let disabled = stream.client_event("web-1", KIND_CLIENT_DISABLED);
    let state = stream.memory_state();
    let client = &state.clients["web-1"];
    assert!(!client.enabled);
    assert_eq!(client.sequence, disabled.sequence);
    assert_eq!(client.created_at_micros, created_at, "disabling keeps the creation time");
    assert_eq!(client.description, "web node 1");

    let enabled = stream.client_event("web-1", KIND_CLIENT_ENABLED);
    let state = stream.memory_state();
    assert!(state.clients["web-1"].enabled);
    assert_eq!(state.clients["web-1"].sequence, enabled.sequence);

    let deleted = stream.client_event("web-1", KIND_CLIENT_DELETED);
    let state = stream.memory_state();
    assert!(!state.clients.contains_key("web-1"));
    let head = &state.heads[&Aggregate::client("web-1")];
    assert_eq!(head.version, 4, "the chain outlives the client");
    assert_eq!(head.last_hash, deleted.hash);
}

#[test]
fn deleted_client_is_created_again_on_same_chain() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    stream.client_event("web-1", KIND_CLIENT_DELETED);
    let again = stream.create_client("web-1");

    let state = stream.memory_state();
    assert!(state.clients["web-1"].enabled, "a client created again starts enabled");
    assert_eq!(state.clients["web-1"].sequence, again.sequence);
    assert_eq!(state.heads[&Aggregate::client("web-1")].version, 4);
}

#[test]
fn client_created_twice_is_inconsistent() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    let mut state = stream.memory_state();
    let again = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_CREATED, created_body(None, ""));
    let reason = inconsistent_reason(&mut state, &again);
    assert_eq!(reason, "client.created does not apply to a client that is enabled");

    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    let mut state = stream.memory_state();
    let again = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_CREATED, created_body(None, ""));
    let reason = inconsistent_reason(&mut state, &again);
    assert_eq!(reason, "client.created does not apply to a client that is disabled");
}

#[test]
fn disabling_disabled_client_is_inconsistent() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    let mut state = stream.memory_state();

    let message = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_DISABLED, empty_body());
    let reason = inconsistent_reason(&mut state, &message);
    assert_eq!(reason, "client.disabled does not apply to a client that is disabled");
}

#[test]
fn enabling_enabled_client_is_inconsistent() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    let mut state = stream.memory_state();

    let message = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_ENABLED, empty_body());
    let reason = inconsistent_reason(&mut state, &message);
    assert_eq!(reason, "client.enabled does not apply to a client that is enabled");
}

#[test]
fn deleting_absent_client_is_inconsistent() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let message = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_DELETED, empty_body());
    let reason = inconsistent_reason(&mut state, &message);
    assert_eq!(reason, "client.deleted does not apply to a client that is absent");
}

#[test]
fn events_on_absent_client_are_inconsistent() {
    // The name "never" was never created, and "gone" was created and deleted.
    let mut stream = Stream::bootstrapped();
    stream.create_client("gone");
    stream.client_event("gone", KIND_CLIENT_DELETED);
    let mut state = stream.memory_state();

    for name in ["never", "gone"] {
        for kind in [KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED, KIND_CLIENT_DELETED] {
            let message = stream.next_message(Aggregate::client(name), kind, empty_body());
            let reason = inconsistent_reason(&mut state, &message);
            assert!(reason.ends_with("a client that is absent"), "{kind} on {name}: {reason}");
        }
    }
}

#[test]
fn group_lifecycle_create_delete_create() {
    let mut stream = Stream::bootstrapped();
    let created =
        stream.append(Aggregate::group("web"), KIND_GROUP_CREATED, created_body(None, "web tier of payments"));
    let state = stream.memory_state();
    let group = &state.groups["web"];
    assert_eq!(group.owner_group, None);
    assert_eq!(group.description, "web tier of payments");
    assert_eq!(group.created_by, "operator:alice");
    assert_eq!(group.sequence, created.sequence);

    stream.add_member("web", "web-1");
    stream.add_grant("web", "db/password");
    let state = stream.memory_state();
    assert_eq!(state.memberships, BTreeSet::from([membership("web-1", "web")]));
    assert_eq!(state.grants, BTreeSet::from([grant("db/password", "web")]));
    assert_eq!(state.groups["web"].sequence, created.sequence, "members and grants leave the group record");

    stream.delete_group("web");
    let state = stream.memory_state();
    assert!(!state.groups.contains_key("web"));
    assert!(state.memberships.is_empty(), "deleting a group ends its memberships");
    assert!(state.grants.is_empty(), "deleting a group ends its grants");

    stream.create_group("web");
    let state = stream.memory_state();
    assert!(state.groups.contains_key("web"));
    assert!(state.memberships.is_empty(), "a group created again has no members");
    assert!(state.grants.is_empty(), "a group created again has no grants");
    assert_eq!(state.heads[&Aggregate::group("web")].version, 5);
}

#[test]
fn group_created_twice_is_inconsistent() {
    let mut stream = Stream::bootstrapped();
    stream.create_group("web");
    let mut state = stream.memory_state();

    let message = stream.next_message(Aggregate::group("web"), KIND_GROUP_CREATED, created_body(None, ""));
    let reason = inconsistent_reason(&mut state, &message);
    assert_eq!(reason, "group.created does not apply to a group that exists");
}

#[test]
fn deleting_absent_group_is_inconsistent() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let message = stream.next_message(Aggregate::group("web"), KIND_GROUP_DELETED, empty_body());
    let reason = inconsistent_reason(&mut state, &message);
    assert_eq!(reason, "group.deleted does not apply to a group that does not exist");
}

#[test]
fn events_on_absent_group_are_inconsistent() {
    // The name "never" was never created, and "gone" was created and deleted.
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    stream.add_version("db/password");
    stream.create_group("gone");
    stream.delete_group("gone");
    let mut state = stream.memory_state();

    let cases = [
        (KIND_GROUP_DELETED, empty_body()),
        (KIND_GROUP_MEMBER_ADDED, membership_body("web-1")),
        (KIND_GROUP_MEMBER_REMOVED, membership_body("web-1")),
        (KIND_GROUP_GRANT_ADDED, grant_body("db/password")),
        (KIND_GROUP_GRANT_REMOVED, grant_body("db/password")),
    ];
    for name in ["never", "gone"] {
        for (kind, body) in &cases {
            let message = stream.next_message(Aggregate::group(name), kind, body.clone());
            let reason = inconsistent_reason(&mut state, &message);
            assert!(reason.ends_with("a group that does not exist"), "{kind} on {name}: {reason}");
        }
    }
}

#[test]
fn client_kind_on_group_is_wrong_aggregate() {
    let mut stream = Stream::bootstrapped();
    stream.create_group("web");
    let mut state = stream.memory_state();

    let cases = [
        (Aggregate::group("web"), KIND_CLIENT_CREATED, created_body(None, "")),
        (Aggregate::group("web"), KIND_CLIENT_DISABLED, empty_body()),
        (Aggregate::client("web"), KIND_GROUP_CREATED, created_body(None, "")),
        (Aggregate::client("web"), KIND_GROUP_MEMBER_ADDED, membership_body("web-1")),
        (Aggregate::secret("web"), KIND_GROUP_GRANT_ADDED, grant_body("db/password")),
    ];
    for (aggregate, kind, body) in cases {
        let message = stream.next_message(aggregate.clone(), kind, body);
        match fold_error(rejection(&mut state, &message)) {
            FoldError::WrongAggregate { kind: found_kind, aggregate: found } => {
                assert_eq!(found_kind, kind);
                assert_eq!(found, aggregate);
            }
            other => panic!("expected WrongAggregate for {kind} on {aggregate:?}, got {other}"),
        }
    }
}

#[test]
fn malformed_access_bodies_are_body_errors() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    stream.create_group("web");
    let mut state = stream.memory_state();

    // Each event would apply with a valid body, so only the body can fail.
    let cases = [
        (Aggregate::client("web-2"), KIND_CLIENT_CREATED, membership_body("x"), "a Created needs 2 elements"),
        (Aggregate::client("web-1"), KIND_CLIENT_DISABLED, vec![0xc0], "nil is not an empty array"),
        (Aggregate::client("web-1"), KIND_CLIENT_DELETED, membership_body("x"), "an empty body has no elements"),
        (Aggregate::group("web"), KIND_GROUP_MEMBER_ADDED, empty_body(), "a Membership needs 1 element"),
        (Aggregate::group("web"), KIND_GROUP_GRANT_ADDED, vec![0x91, 0x01], "the secret must be a str"),
    ];
    for (aggregate, kind, body, why) in cases {
        let message = stream.next_message(aggregate, kind, body);
        let error = fold_error(rejection(&mut state, &message));
        assert!(matches!(error, FoldError::Body { source: DecodeError::Malformed(_), .. }), "{why}: {error}");
    }
}

#[test]
fn noncanonical_access_bodies_are_rejected() {
    let mut stream = Stream::bootstrapped();
    stream.create_client("web-1");
    stream.create_group("web");
    let mut state = stream.memory_state();

    // The cases: a map in place of the empty array, a str 8 header on a 1-byte
    // string, and a nil after the body.
    let cases = [
        (Aggregate::client("web-1"), KIND_CLIENT_DISABLED, vec![0x80]),
        (Aggregate::group("web"), KIND_GROUP_MEMBER_ADDED, vec![0x91, 0xd9, 0x01, b'x']),
        (Aggregate::group("web"), KIND_GROUP_GRANT_ADDED, [grant_body("db"), vec![0xc0]].concat()),
    ];
    for (aggregate, kind, body) in cases {
        let message = stream.next_message(aggregate, kind, body);
        let error = fold_error(rejection(&mut state, &message));
        assert!(matches!(error, FoldError::Body { source: DecodeError::NonCanonical, .. }), "{kind}: {error}");
    }
}

/// The body is decoded before the kind's own rules are checked, as `FORMAT.md`
/// specifies for every kind, so a malformed body on an invalid transition is a
/// `Body` error, not `Inconsistent`.
#[test]
fn malformed_body_is_reported_before_transition() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let cases = [
        (Aggregate::client("absent"), KIND_CLIENT_DISABLED, vec![0xc0]),
        (Aggregate::group("absent"), KIND_GROUP_MEMBER_ADDED, vec![0xc0]),
    ];
    for (aggregate, kind, body) in cases {
        let message = stream.next_message(aggregate, kind, body);
        let error = fold_error(rejection(&mut state, &message));
        assert!(matches!(error, FoldError::Body { .. }), "{kind}: expected a Body error, got {error}");
    }
}

#[test]
fn repeated_membership_and_grant_events_apply() {
    let mut stream = granted_stream();
    stream.add_member("web", "web-1");
    stream.add_grant("web", "db/password");
    let state = stream.memory_state();
    assert_eq!(state.memberships, BTreeSet::from([membership("web-1", "web")]));
    assert_eq!(state.grants, BTreeSet::from([grant("db/password", "web")]));

    // Removing a pair that is not there is accepted too, and changes nothing but the head.
    stream.remove_member("web", "not-a-member");
    stream.remove_grant("web", "not-granted");
    let state = stream.memory_state();
    assert_eq!(state.memberships, BTreeSet::from([membership("web-1", "web")]));
    assert_eq!(state.grants, BTreeSet::from([grant("db/password", "web")]));
    assert_eq!(state.heads[&Aggregate::group("web")].version, 7);
}

#[test]
fn granted_member_may_read() {
    let state = granted_stream().memory_state();
    assert!(may_read(&state, "web-1", "db/password"));
}

#[test]
fn granted_stream_prefixes_give_no_access() {
    // Each prefix of the granted stream lacks at least the grant.
    let stream = granted_stream();
    let mut state = MemoryState::default();
    for message in &stream.messages[..stream.messages.len() - 1] {
        apply_to(&mut state, message).expect("applies");
        assert!(!may_read(&state, "web-1", "db/password"), "after sequence {}", message.sequence);
    }
}

#[test]
fn disabled_client_may_not_read() {
    let mut stream = granted_stream();
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    assert!(!may_read(&stream.memory_state(), "web-1", "db/password"));

    stream.client_event("web-1", KIND_CLIENT_ENABLED);
    assert!(may_read(&stream.memory_state(), "web-1", "db/password"), "enabling restores access");
}

#[test]
fn removed_member_may_not_read() {
    let mut stream = granted_stream();
    stream.remove_member("web", "web-1");
    assert!(!may_read(&stream.memory_state(), "web-1", "db/password"));
}

#[test]
fn removed_grant_gives_no_access() {
    let mut stream = granted_stream();
    stream.remove_grant("web", "db/password");
    assert!(!may_read(&stream.memory_state(), "web-1", "db/password"));
}

#[test]
fn deleted_group_gives_no_access() {
    let mut stream = granted_stream();
    stream.delete_group("web");
    assert!(!may_read(&stream.memory_state(), "web-1", "db/password"));

    // The group created again under the same name starts without members or grants.
    stream.create_group("web");
    stream.add_grant("web", "db/password");
    assert!(!may_read(&stream.memory_state(), "web-1", "db/password"), "the old membership is gone");
}

#[test]
fn deleted_client_may_not_read() {
    let mut stream = granted_stream();
    stream.client_event("web-1", KIND_CLIENT_DELETED);
    let state = stream.memory_state();
    assert!(!may_read(&state, "web-1", "db/password"));
    assert!(state.memberships.is_empty(), "deleting a client ends its memberships");
}

#[test]
fn recreated_client_does_not_regain_memberships() {
    let mut stream = granted_stream();
    stream.create_group("ops");
    stream.add_member("ops", "web-1");
    stream.add_grant("ops", "db/password");
    stream.client_event("web-1", KIND_CLIENT_DELETED);
    stream.create_client("web-1");

    let state = stream.memory_state();
    assert!(state.clients["web-1"].enabled);
    assert!(!may_read(&state, "web-1", "db/password"));
    assert!(state.client_groups("web-1").expect("read").is_empty());
    assert!(state.group_members("web").expect("read").is_empty());
    assert!(state.group_members("ops").expect("read").is_empty());
}

#[test]
fn grant_does_not_cover_other_names() {
    let mut stream = granted_stream();
    stream.add_version("clé");
    stream.add_grant("web", "clé");
    let state = stream.memory_state();
    assert!(may_read(&state, "web-1", "clé"));

    // Prefixes, extensions, case, surrounding space and another Unicode normal form.
    let others = [
        "db",
        "db/",
        "db/pass",
        "db/password/",
        "db/password/x",
        "DB/password",
        "db/Password",
        " db/password",
        "db/password ",
        "cle\u{301}",
        "CLÉ",
        "",
    ];
    for other in others {
        assert!(!may_read(&state, "web-1", other), "the grant on db/password or clé covers {other:?}");
    }

    // Client names match exactly as well.
    for client in ["web", "web-10", "WEB-1", "web-1 "] {
        assert!(!may_read(&state, client, "db/password"), "client {client:?} reads as web-1");
    }
}

#[test]
fn grant_to_one_group_does_not_cover_another() {
    let mut stream = granted_stream();
    stream.create_group("web-admins");
    stream.add_grant("web-admins", "api/token");
    stream.add_version("api/token");
    assert!(!may_read(&stream.memory_state(), "web-1", "api/token"));

    stream.add_member("web-admins", "web-1");
    assert!(may_read(&stream.memory_state(), "web-1", "api/token"));
}

#[test]
fn membership_of_absent_client_ends_when_client_created() {
    let mut stream = granted_stream();
    stream.add_member("web", "web-2");
    let state = stream.memory_state();
    assert!(state.memberships.contains(&membership("web-2", "web")), "the fold records the membership");
    assert!(!state.clients.contains_key("web-2"));
    assert!(!may_read(&state, "web-2", "db/password"));

    // A client created under the name starts with no memberships, so access
    // recorded before it existed never carries over to it.
    stream.create_client("web-2");
    let state = stream.memory_state();
    assert!(!state.memberships.contains(&membership("web-2", "web")));
    assert!(!may_read(&state, "web-2", "db/password"));
}

#[test]
fn grant_on_absent_secret_applies_without_access() {
    let mut stream = granted_stream();
    stream.add_grant("web", "not/yet");
    let state = stream.memory_state();
    assert!(state.grants.contains(&grant("not/yet", "web")), "the fold records the grant");
    assert!(!state.secrets.contains_key("not/yet"));
    assert!(!may_read(&state, "web-1", "not/yet"), "a grant on a secret that does not exist gives access");

    // The recorded grant takes effect once the secret is created.
    stream.add_version("not/yet");
    assert!(may_read(&stream.memory_state(), "web-1", "not/yet"));
}

/// Builds the state behind [`MAY_READ_CASES`].
fn access_table_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    for secret in ["db/password", "api/token", "clé"] {
        stream.add_version(secret);
    }
    for client in ["web-1", "web-2", "web-10", "batch-1", "multi", "gone", "reborn"] {
        stream.create_client(client);
    }

    stream.create_group("web");
    stream.add_grant("web", "db/password");
    stream.add_grant("web", "clé");
    for client in ["web-1", "web-2", "multi", "gone", "reborn", "ghost"] {
        stream.add_member("web", client);
    }
    stream.client_event("web-2", KIND_CLIENT_DISABLED);
    stream.client_event("gone", KIND_CLIENT_DELETED);
    stream.client_event("reborn", KIND_CLIENT_DELETED);
    stream.create_client("reborn");

    stream.create_group("ops");
    stream.add_grant("ops", "api/token");
    stream.add_member("ops", "batch-1");
    stream.add_member("ops", "multi");

    stream.create_group("revoked");
    stream.add_grant("revoked", "db/password");
    stream.add_member("revoked", "batch-1");
    stream.remove_grant("revoked", "db/password");

    stream.create_group("left");
    stream.add_grant("left", "clé");
    stream.add_member("left", "batch-1");
    stream.remove_member("left", "batch-1");

    stream.create_group("old");
    stream.add_grant("old", "api/token");
    stream.add_member("old", "web-10");
    stream.delete_group("old");
    stream
}

/// (client, secret, may read, why) after [`access_table_stream`].
const MAY_READ_CASES: &[(&str, &str, bool, &str)] = &[
    ("web-1", "db/password", true, "member of web, which holds the grant"),
    ("web-1", "clé", true, "second grant of web"),
    ("web-1", "api/token", false, "web holds no grant on it"),
    ("web-1", "cle\u{301}", false, "another Unicode normal form"),
    ("web-1", "db/password/", false, "an extension of the name"),
    ("web-1", "db", false, "a prefix of the name"),
    ("web-1", "DB/password", false, "another case"),
    ("WEB-1", "db/password", false, "client names are case-sensitive"),
    ("web-2", "db/password", false, "disabled"),
    ("web-2", "clé", false, "disabled"),
    ("ghost", "db/password", false, "a member that was never created"),
    ("gone", "db/password", false, "deleted"),
    ("reborn", "db/password", false, "created again, without its old membership"),
    ("multi", "db/password", true, "through web"),
    ("multi", "api/token", true, "through ops"),
    ("batch-1", "api/token", true, "through ops"),
    ("batch-1", "db/password", false, "the grant of revoked was removed"),
    ("batch-1", "clé", false, "its membership of left was removed"),
    ("web-10", "api/token", false, "its group old was deleted"),
    ("web-10", "db/password", false, "in no group"),
    ("nobody", "db/password", false, "no such client"),
];

#[test]
fn may_read_matches_case_table() {
    let stream = access_table_stream();
    let memory = stream.memory_state();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("model.redb"), CACHE_BYTES).expect("open the read model");
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");

    for &(client, secret, expected, why) in MAY_READ_CASES {
        assert_eq!(may_read(&memory, client, secret), expected, "memory: {client} reads {secret}: {why}");
        let redb = model.may_read(client, secret).expect("read");
        assert_eq!(redb, expected, "redb: {client} reads {secret}: {why}");
    }
}

/// Names used by the mixed stream. Some are prefixes of others, so that the redb
/// range scans over (first, second) pairs must stop exactly at their own name.
const CLIENTS: [&str; 7] = ["web", "web-1", "web-10", "", "ключ 🔑", "db.admin", "a"];
const GROUPS: [&str; 5] = ["web", "web tier", "ops", "группа", "w"];
const SECRETS: [&str; 6] = ["db/password", "db/password/", "DB/password", "api token", "clé", "never/created"];

/// Appends one valid access or secret event chosen by `rng`, deciding from `state`
/// which transitions are valid, and applies it to `state`.
fn append_random_event(stream: &mut Stream, state: &mut MemoryState, rng: &mut StdRng) {
    let client = *CLIENTS.choose(rng).expect("non-empty");
    let group = *GROUPS.choose(rng).expect("non-empty");
    let secret = *SECRETS[..5].choose(rng).expect("non-empty");
    let any_secret = *SECRETS.choose(rng).expect("non-empty");

    let message = match rng.gen_range(0..10) {
        0 => stream.add_version(secret),
        1..=3 => match state.clients.get(client).map(|c| c.enabled) {
            None => stream.create_client(client),
            Some(_) if rng.gen_bool(0.25) => stream.client_event(client, KIND_CLIENT_DELETED),
            Some(true) => stream.client_event(client, KIND_CLIENT_DISABLED),
            Some(false) => stream.client_event(client, KIND_CLIENT_ENABLED),
        },
        _ if !state.groups.contains_key(group) => stream.create_group(group),
        4 if rng.gen_bool(0.3) => stream.delete_group(group),
        4 | 5 => stream.add_member(group, client),
        6 => stream.remove_member(group, client),
        7 | 8 => stream.add_grant(group, any_secret),
        _ => stream.remove_grant(group, any_secret),
    };
    apply_to(state, &message).unwrap_or_else(|error| panic!("generated sequence {}: {error}", message.sequence));
}

/// Checks every read of the access model in `model` against `memory`.
fn assert_views_agree(model: &ReadModel, memory: &MemoryState, context: &str) {
    assert_eq!(&model.snapshot().expect("snapshot"), memory, "{context}: snapshot");

    let (answers, _) = model
        .read(|view| {
            let mut answers = Vec::new();
            for client in CLIENTS.iter().chain(&["absent"]) {
                answers.push(view.client_groups(client)?);
            }
            for group in GROUPS.iter().chain(&["absent"]) {
                answers.push(view.group_members(group)?);
                answers.push(view.group_grants(group)?);
            }
            Ok(answers)
        })
        .expect("read");
    let mut expected = Vec::new();
    for client in CLIENTS.iter().chain(&["absent"]) {
        expected.push(memory.client_groups(client).expect("read"));
    }
    for group in GROUPS.iter().chain(&["absent"]) {
        expected.push(memory.group_members(group).expect("read"));
        expected.push(memory.group_grants(group).expect("read"));
    }
    assert_eq!(answers, expected, "{context}: membership and grant indexes");

    for client in CLIENTS.iter().chain(&["absent", "WEB-1"]) {
        for secret in SECRETS.iter().chain(&["db", "clé/"]) {
            let redb = model.may_read(client, secret).expect("read");
            assert_eq!(redb, may_read(memory, client, secret), "{context}: may {client:?} read {secret:?}");
        }
    }
}

#[test]
fn redb_matches_memory_on_mixed_stream() {
    // Verifying an event takes milliseconds in a debug build, and each event is
    // verified twice, so the stream stays at 250 events.
    let mut rng = StdRng::seed_from_u64(0x5eed_acce55);
    let mut stream = Stream::bootstrapped();
    let mut generated = stream.memory_state();
    let mut prefix_states = vec![MemoryState::default(), generated.clone()];
    for _ in 0..250 {
        append_random_event(&mut stream, &mut generated, &mut rng);
        prefix_states.push(generated.clone());
    }

    // The stream must exercise deletions and creations after them, or it proves little.
    let kinds: Vec<String> = stream.messages.iter().map(|message| decoded(message).kind).collect();
    let count = |kind: &str| kinds.iter().filter(|found| *found == kind).count();
    for kind in [KIND_CLIENT_DELETED, KIND_GROUP_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED] {
        assert!(count(kind) >= 5, "only {} {kind} events", count(kind));
    }
    assert!(count(KIND_CLIENT_CREATED) > CLIENTS.len(), "no client was created again");
    assert!(count(KIND_GROUP_CREATED) > GROUPS.len(), "no group was created again");
    assert!(!generated.memberships.is_empty(), "the final state has no membership");
    assert!(!generated.grants.is_empty(), "the final state has no grant");

    // The batches have uneven sizes, and after each one redb must match the fold
    // over the same prefix. prefix_states[n] is the state after the first n messages.
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("model.redb"), CACHE_BYTES).expect("open the read model");
    let messages = stream.stored();
    let mut start = 0;
    for size in [1, 7, 2, 31, 3, 64].into_iter().cycle() {
        let end = (start + size).min(messages.len());
        model.apply_batch(&roots(), &messages[start..end]).expect("batch applies");
        assert_views_agree(&model, &prefix_states[end], &format!("after sequence {end}"));
        start = end;
        if start == messages.len() {
            break;
        }
    }
}

#[test]
fn rejected_access_event_commits_nothing_in_redb() {
    let mut stream = granted_stream();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("model.redb"), CACHE_BYTES).expect("open the read model");
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");
    let before = model.snapshot().expect("snapshot");
    let committed = stream.messages.len();

    // A valid deletion of the client, then a disable of the client it deleted.
    stream.client_event("web-1", KIND_CLIENT_DELETED);
    let invalid = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_DISABLED, empty_body());
    let mut batch = stream.stored()[committed..].to_vec();
    batch.push(invalid.stored());

    let error = model.apply_batch(&roots(), &batch).expect_err("the disable fails");
    match error {
        ApplyError::Fold { sequence, source: FoldError::Inconsistent { .. } } => {
            assert_eq!(sequence, invalid.sequence);
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
    assert_eq!(model.snapshot().expect("snapshot"), before);
    assert!(model.may_read("web-1", "db/password").expect("read"), "the deletion was rolled back");
}

#[test]
fn read_model_lists_clients_and_groups() {
    let stream = access_table_stream();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("model.redb"), CACHE_BYTES).expect("open the read model");
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");
    let last = stream.messages.len() as u64;

    let (clients, sequence) = model.clients().expect("read");
    let names: Vec<&str> = clients.iter().map(|client| client.name.as_str()).collect();
    assert_eq!(names, ["batch-1", "multi", "reborn", "web-1", "web-10", "web-2"]);
    assert!(!clients[5].enabled, "web-2 is disabled");
    assert_eq!(sequence, last);

    let (groups, sequence) = model.groups().expect("read");
    let names: Vec<&str> = groups.iter().map(|group| group.name.as_str()).collect();
    assert_eq!(names, ["left", "ops", "revoked", "web"]);
    assert_eq!(sequence, last);

    let memory = stream.memory_state();
    assert_eq!(clients, memory.clients.into_values().collect::<Vec<_>>());
    assert_eq!(groups, memory.groups.into_values().collect::<Vec<_>>());
}

#[test]
fn access_event_needs_certified_signer() {
    let stream = Stream::default();
    let early = stream.next_message(Aggregate::client("web-1"), KIND_CLIENT_CREATED, created_body(None, ""));
    let error = rejection(&mut MemoryState::default(), &early);
    assert!(matches!(error, ApplyError::Verify { source: VerifyError::UnknownKey { .. }, .. }), "{error}");

    // A root key signs certifications only.
    let stream = Stream::bootstrapped();
    let event = stream.next_event(Aggregate::group("web"), KIND_GROUP_CREATED, &root_key(), created_body(None, ""));
    let error = rejection(&mut stream.memory_state(), &stream.seal_next(&event, &root_key()));
    assert!(matches!(error, ApplyError::Verify { source: VerifyError::UnknownKey { .. }, .. }), "{error}");
}
