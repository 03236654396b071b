//! Enrolment events in the fold: `client.enrolment_token_issued` and
//! `client.certificate_issued` apply only to an existing, enabled client, must
//! have a canonical body, and change nothing but the client's stream sequence.
//! Every rejection is also checked to leave the state as it was.

mod common;

use sha2::{Digest, Sha256};
use watchword_events::body::{
    KIND_CLIENT_CERTIFICATE_ISSUED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED,
    KIND_CLIENT_ENROLMENT_TOKEN_ISSUED,
};
use watchword_events::error::{ApplyError, DecodeError, FoldError};
use watchword_events::fold::{self, Change, ClientState, MemoryState};
use watchword_events::readmodel::ReadModel;
use watchword_events::verify::verify_message;
use watchword_events::{Aggregate, Event, Frame};

use common::msgpack::{array, bin, int, nil, str, uint};
use common::{Message, Stream, certificate_issued_body, id_of, rejection, roots, signer_key, token_issued_body};

/// SHA-256 of a token, as `client.enrolment_token_issued` records it.
fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token).into()
}

const HASH: [u8; 32] = [0xab; 32];

/// An expiry and a not-after time in 2026, which encode as `cf` + 8 bytes.
const EXPIRES_AT: i64 = 1_767_229_200_000_000;
const NOT_AFTER: i64 = 1_767_312_000_000_000;

const SERIAL: &str = "1f2e3d4c5b6a79880123456789abcdef";

fn fold_error(error: ApplyError) -> FoldError {
    match error {
        ApplyError::Fold { source, .. } => source,
        other => panic!("expected a fold error, got {other}"),
    }
}

fn decoded(message: &Message) -> Event {
    let frame = Frame::decode(&message.payload).expect("a valid frame");
    Event::from_signed_bytes(&frame.signed).expect("a valid envelope")
}

/// Applies `message`, expects `Inconsistent` naming its kind and aggregate, and
/// returns the reason.
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

/// Applies `message` and expects a `Body` error naming its kind, and returns the
/// decode error.
fn body_error(state: &mut MemoryState, message: &Message) -> DecodeError {
    let event = decoded(message);
    match fold_error(rejection(state, message)) {
        FoldError::Body { kind, source } => {
            assert_eq!(kind, event.kind);
            source
        }
        other => panic!("expected a Body error for {}, got {other}", event.kind),
    }
}

fn may_read(state: &MemoryState, client: &str, secret: &str) -> bool {
    fold::may_read(state, client, secret).expect("the memory state cannot fail")
}

/// Returns a stream in which client `web-1` is an enabled member of group `web`,
/// which has a grant on the existing secret `db/password`, and client `web-2` is
/// enabled and in no group.
fn enrolment_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db/password");
    stream.create_client("web-1");
    stream.create_client("web-2");
    stream.create_group("web");
    stream.add_member("web", "web-1");
    stream.add_grant("web", "db/password");
    stream
}

/// Returns one valid body of each new kind: a token, an enrolment and a renewal.
fn valid_cases() -> [(&'static str, Vec<u8>); 3] {
    [
        (KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, token_issued_body(HASH, EXPIRES_AT)),
        (KIND_CLIENT_CERTIFICATE_ISSUED, certificate_issued_body(SERIAL, NOT_AFTER, Some(HASH))),
        (KIND_CLIENT_CERTIFICATE_ISSUED, certificate_issued_body(SERIAL, NOT_AFTER, None)),
    ]
}

/// Appends one enrolment event for a token whose SHA-256 is the second argument.
type AppendEnrolment = fn(&mut Stream, [u8; 32]) -> Message;

#[test]
fn enrolment_events_change_only_client_sequence() {
    let mut stream = enrolment_stream();
    let token = token_hash("token of web-1");
    let steps: [(&str, AppendEnrolment); 3] = [
        ("token", |stream, token| stream.issue_token("web-1", token)),
        ("enrolment", |stream, token| stream.issue_certificate("web-1", Some(token))),
        ("renewal", |stream, _| stream.issue_certificate("web-1", None)),
    ];

    for (step, append) in steps {
        let before = stream.memory_state();
        assert!(may_read(&before, "web-1", "db/password"), "before the {step}");
        assert!(!may_read(&before, "web-2", "db/password"), "before the {step}");

        let message = append(&mut stream, token);
        let after = stream.memory_state();
        let expected_client = ClientState { sequence: message.sequence, ..before.clients["web-1"].clone() };
        assert_eq!(after.clients["web-1"], expected_client, "{step}: only the client's sequence changes");
        assert_eq!(after.clients["web-2"], before.clients["web-2"], "{step}: another client");
        assert_eq!(after.groups, before.groups, "{step}: groups");
        assert_eq!(after.memberships, before.memberships, "{step}: memberships");
        assert_eq!(after.grants, before.grants, "{step}: grants");
        assert_eq!(after.secrets, before.secrets, "{step}: secrets");
        assert_eq!(after.signing_keys, before.signing_keys, "{step}: signing keys");

        let head = &after.heads[&Aggregate::client("web-1")];
        assert_eq!(head.last_sequence, message.sequence, "{step}: the client's head advances");
        assert_eq!(head.last_hash, message.hash, "{step}: the client's head hash");
        assert!(may_read(&after, "web-1", "db/password"), "after the {step}");
        assert!(!may_read(&after, "web-2", "db/password"), "after the {step}");
    }
}

#[test]
fn enrolment_fold_returns_head_and_client() {
    let stream = enrolment_stream();
    let state = stream.memory_state();

    for (kind, body) in valid_cases() {
        let message = stream.next_message(Aggregate::client("web-1"), kind, body);
        let recorded = verify_message(&state, &roots(), &message.subject, &message.payload, message.sequence)
            .unwrap_or_else(|error| panic!("{kind}: verify: {error}"));
        let changes = fold::fold(&state, &recorded).unwrap_or_else(|error| panic!("{kind}: fold: {error}"));

        assert_eq!(changes.len(), 2, "{kind}: {changes:?}");
        assert!(matches!(&changes[0], Change::Head { aggregate, .. } if *aggregate == Aggregate::client("web-1")));
        let expected_client = ClientState { sequence: message.sequence, ..state.clients["web-1"].clone() };
        assert_eq!(changes[1], Change::Client(expected_client), "{kind}");
    }
}

#[test]
fn enrolment_events_on_absent_client_are_inconsistent() {
    // The name "never" was never created, and "gone" was created and deleted.
    let mut stream = enrolment_stream();
    stream.create_client("gone");
    stream.client_event("gone", KIND_CLIENT_DELETED);
    let mut state = stream.memory_state();

    for name in ["never", "gone"] {
        for (kind, body) in valid_cases() {
            let message = stream.next_message(Aggregate::client(name), kind, body);
            let reason = inconsistent_reason(&mut state, &message);
            assert_eq!(reason, format!("{kind} does not apply to a client that is absent"), "{kind} on {name}");
        }
    }
}

#[test]
fn enrolment_events_on_disabled_client_are_inconsistent() {
    let mut stream = enrolment_stream();
    stream.issue_token("web-1", HASH);
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    let mut state = stream.memory_state();

    for (kind, body) in valid_cases() {
        let message = stream.next_message(Aggregate::client("web-1"), kind, body);
        let reason = inconsistent_reason(&mut state, &message);
        assert_eq!(reason, format!("{kind} does not apply to a client that is disabled"));
    }

    // Once enabled again, the client gets a token and certificates as before.
    stream.client_event("web-1", KIND_CLIENT_ENABLED);
    for (kind, body) in valid_cases() {
        let message = stream.append(Aggregate::client("web-1"), kind, body);
        assert_eq!(stream.memory_state().clients["web-1"].sequence, message.sequence, "{kind}");
    }
}

#[test]
fn enrolment_events_on_other_aggregates_are_wrong_aggregate() {
    let stream = enrolment_stream();
    let mut state = stream.memory_state();

    let aggregates =
        [Aggregate::group("web"), Aggregate::secret("db/password"), Aggregate::signing_key(&id_of(&signer_key()))];
    for aggregate in aggregates {
        for (kind, body) in valid_cases() {
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
}

/// Token bodies that do not decode as `[bin 32, int]`, with the reason.
fn malformed_token_bodies() -> Vec<(Vec<u8>, &'static str)> {
    let time = int(EXPIRES_AT);
    vec![
        (array(&[]), "a token body needs 2 elements"),
        (nil(), "nil is not an array"),
        (array(&[bin(&HASH)]), "the expiry is missing"),
        (array(&[bin(&HASH), time.clone(), nil()]), "a third element"),
        (array(&[bin(&HASH[..31]), time.clone()]), "a hash of 31 bytes"),
        (array(&[bin(&[0xab; 33]), time.clone()]), "a hash of 33 bytes"),
        (array(&[bin(&[]), time.clone()]), "an empty hash"),
        (array(&[nil(), time.clone()]), "the token hash is not optional"),
        (array(&[bin(&HASH), str("1767229200000000")]), "the expiry is a str"),
        (array(&[bin(&HASH), nil()]), "the expiry is not optional"),
        (array(&[bin(&HASH), uint(u64::MAX)]), "the expiry is above the int 64 range"),
        (certificate_issued_body(SERIAL, NOT_AFTER, Some(HASH)), "a certificate body in place of a token body"),
    ]
}

/// Certificate bodies that do not decode as `[str, int, bin 32 or nil]`, with the reason.
fn malformed_certificate_bodies() -> Vec<(Vec<u8>, &'static str)> {
    let time = int(NOT_AFTER);
    vec![
        (array(&[]), "a certificate body needs 3 elements"),
        (nil(), "nil is not an array"),
        (array(&[str(SERIAL), time.clone()]), "a renewal still needs the nil element"),
        (array(&[str(SERIAL), time.clone(), nil(), nil()]), "a fourth element"),
        (array(&[str(SERIAL), time.clone(), bin(&[])]), "an empty bin is not nil"),
        (array(&[str(SERIAL), time.clone(), bin(&HASH[..31])]), "a hash of 31 bytes"),
        (array(&[str(SERIAL), time.clone(), bin(&[0xab; 33])]), "a hash of 33 bytes"),
        (array(&[str(SERIAL), time.clone(), uint(0)]), "the hash is an integer"),
        (array(&[uint(0x1f2e), time.clone(), nil()]), "the serial is an integer"),
        (array(&[nil(), time.clone(), nil()]), "the serial is not optional"),
        (array(&[vec![0xa2, 0xff, 0xfe], time.clone(), nil()]), "the serial is not UTF-8"),
        (array(&[str(SERIAL), nil(), nil()]), "the not-after time is not optional"),
        (array(&[str(SERIAL), uint(u64::MAX), nil()]), "the not-after time is above the int 64 range"),
        (token_issued_body(HASH, NOT_AFTER), "a token body in place of a certificate body"),
    ]
}

#[test]
fn malformed_enrolment_bodies_are_body_errors() {
    let stream = enrolment_stream();
    let mut state = stream.memory_state();

    // The client is enabled, so each event would apply with a valid body.
    let cases =
        malformed_token_bodies().into_iter().map(|(body, why)| (KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, body, why)).chain(
            malformed_certificate_bodies().into_iter().map(|(body, why)| (KIND_CLIENT_CERTIFICATE_ISSUED, body, why)),
        );
    for (kind, body, why) in cases {
        let message = stream.next_message(Aggregate::client("web-1"), kind, body);
        let error = body_error(&mut state, &message);
        assert!(matches!(error, DecodeError::Malformed(_)), "{kind}, {why}: {error}");
    }
}

/// Bodies that decode, with the reason, but re-encode to other bytes.
fn noncanonical_bodies() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let token = KIND_CLIENT_ENROLMENT_TOKEN_ISSUED;
    let certificate = KIND_CLIENT_CERTIFICATE_ISSUED;
    let expires = int(EXPIRES_AT);
    let not_after = int(NOT_AFTER);
    let wide_hash = [&[0xc5, 0x00, 0x20][..], &HASH].concat();
    let hash_as_str = [&[0xd9, 0x20][..], &[b'a'; 32]].concat();
    let hash_as_array = array(&HASH.map(|byte| uint(byte.into())));
    let field_map = |first: &str, value: Vec<u8>, second: &str, time: &[u8]| {
        [&[0x82][..], &str(first), &value, &str(second), time].concat()
    };

    vec![
        (token, array(&[wide_hash.clone(), expires.clone()]), "the hash under a bin 16 header"),
        (token, array(&[hash_as_str.clone(), expires.clone()]), "a str in place of the hash"),
        (token, array(&[hash_as_array.clone(), expires.clone()]), "an array of integers in place of the hash"),
        (token, array(&[bin(&HASH), [&[0xd3][..], &EXPIRES_AT.to_be_bytes()].concat()]), "the expiry as int 64"),
        (token, array(&[bin(&HASH), vec![0xcc, 0x05]]), "the expiry 5 as uint 8"),
        (token, [&[0xdc, 0x00, 0x02][..], &bin(&HASH), &expires].concat(), "the body under an array 16 header"),
        (token, [token_issued_body(HASH, EXPIRES_AT), nil()].concat(), "a nil after the body"),
        (token, field_map("token_sha256", bin(&HASH), "expires_at_micros", &expires), "a map of field names"),
        (
            certificate,
            array(&[[&[0xd9, 0x02][..], b"0a"].concat(), not_after.clone(), nil()]),
            "a 2-character serial under a str 8 header",
        ),
        (certificate, array(&[bin(SERIAL.as_bytes()), not_after.clone(), nil()]), "a bin in place of the serial"),
        (
            certificate,
            array(&[str(SERIAL), [&[0xd3][..], &NOT_AFTER.to_be_bytes()].concat(), nil()]),
            "the not-after time as int 64",
        ),
        (certificate, array(&[str(SERIAL), not_after.clone(), wide_hash]), "the hash under a bin 16 header"),
        (certificate, array(&[str(SERIAL), not_after.clone(), hash_as_str]), "a str in place of the hash"),
        (
            certificate,
            array(&[str(SERIAL), not_after.clone(), hash_as_array]),
            "an array of integers in place of the hash",
        ),
        (
            certificate,
            [certificate_issued_body(SERIAL, NOT_AFTER, None), vec![0xc0]].concat(),
            "a nil after a renewal body",
        ),
        (
            certificate,
            [certificate_issued_body(SERIAL, NOT_AFTER, Some(HASH)), vec![0x00]].concat(),
            "a byte after an enrolment body",
        ),
    ]
}

#[test]
fn noncanonical_enrolment_bodies_are_rejected() {
    let stream = enrolment_stream();
    let mut state = stream.memory_state();

    for (kind, body, why) in noncanonical_bodies() {
        let message = stream.next_message(Aggregate::client("web-1"), kind, body);
        let error = body_error(&mut state, &message);
        assert!(matches!(error, DecodeError::NonCanonical), "{kind}, {why}: {error}");
    }
}

/// The body is decoded before the transition is checked, so a malformed body on a
/// client that is absent or disabled is a `Body` error, not `Inconsistent`.
#[test]
fn malformed_enrolment_body_is_reported_before_transition() {
    let mut stream = enrolment_stream();
    stream.client_event("web-2", KIND_CLIENT_DISABLED);
    let mut state = stream.memory_state();

    for name in ["absent", "web-2"] {
        for kind in [KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, KIND_CLIENT_CERTIFICATE_ISSUED] {
            let message = stream.next_message(Aggregate::client(name), kind, nil());
            let error = body_error(&mut state, &message);
            assert!(matches!(error, DecodeError::Malformed(_)), "{kind} on {name}: {error}");
        }
    }
}

/// Single use is the writer's rule, and `FORMAT.md` states that readers do not check it:
/// the fold applies certificates whose token hash matches no token, follows no
/// token event, or repeats, and never compares times.
#[test]
fn fold_does_not_check_token_use() {
    let mut stream = enrolment_stream();
    let issued = token_hash("issued token");

    stream.issue_certificate("web-1", Some(token_hash("never issued")));
    stream.issue_token("web-1", issued);
    stream.issue_certificate("web-1", Some(token_hash("another token")));
    stream.issue_certificate("web-1", Some(issued));
    stream.issue_certificate("web-1", Some(issued));
    stream.issue_token("web-1", issued);
    let expired = token_issued_body(issued, 0);
    stream.append(Aggregate::client("web-1"), KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, expired);
    let last = stream.issue_certificate("web-1", Some(issued));

    let state = stream.memory_state();
    assert_eq!(state.clients["web-1"].sequence, last.sequence);
    assert!(may_read(&state, "web-1", "db/password"));
}

#[test]
fn redb_matches_memory_with_enrolment_events() {
    let mut stream = enrolment_stream();
    let token = token_hash("token of web-2");
    stream.issue_token("web-2", token);
    stream.issue_certificate("web-2", Some(token));
    stream.issue_certificate("web-1", None);
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    stream.client_event("web-1", KIND_CLIENT_ENABLED);
    stream.issue_certificate("web-1", None);

    let memory = stream.memory_state();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = ReadModel::open(&dir.path().join("model.redb"), 1 << 20).expect("open the read model");
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");

    assert_eq!(model.snapshot().expect("snapshot"), memory);
    for client in ["web-1", "web-2"] {
        let redb = model.may_read(client, "db/password").expect("read");
        assert_eq!(redb, may_read(&memory, client, "db/password"), "{client}");
    }
}
