//! The fold and the signature rules: each event a reader must reject, and the
//! error that names why. Every rejection is also checked to leave the state as it was.

mod common;

use watchword_events::body::{KIND_SECRET_VERSION_ADDED, KIND_SIGNING_KEY_CERTIFIED, SigningKeyCertified, encode_body};
use watchword_events::error::{ApplyError, DecodeError, FoldError, VerifyError};
use watchword_events::fold::MemoryState;
use watchword_events::{Aggregate, ZERO_HASH};

use common::{
    Stream, apply_to, certified_body, id_of, rejection, root_key, signer_key, stranger_key, version_added,
    version_added_body,
};

fn fold_error(error: ApplyError) -> FoldError {
    match error {
        ApplyError::Fold { source, .. } => source,
        other => panic!("expected a fold error, got {other}"),
    }
}

fn verify_error(error: ApplyError) -> VerifyError {
    match error {
        ApplyError::Verify { source, .. } => source,
        other => panic!("expected a verification error, got {other}"),
    }
}

#[test]
fn version_gap_names_both_versions() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.aggregate_version = 3;
    let error = rejection(&mut state, &stream.seal_next(&event, &signer_key()));

    let text = error.to_string();
    assert!(text.starts_with("stream sequence 3:"), "{text}");
    assert!(text.contains("is at version 1, so the next event must have version 2, not 3"), "{text}");
    match fold_error(error) {
        FoldError::VersionGap { aggregate, current, found } => {
            assert_eq!(aggregate, Aggregate::secret("db"));
            assert_eq!(current, 1);
            assert_eq!(found, 3);
        }
        other => panic!("expected VersionGap, got {other}"),
    }
}

#[test]
fn replayed_event_is_version_gap() {
    let mut stream = Stream::bootstrapped();
    let message = stream.add_version("db");
    let mut state = stream.memory_state();

    let error = fold_error(rejection(&mut state, &message));
    assert!(matches!(error, FoldError::VersionGap { current: 1, found: 1, .. }), "{error}");
}

#[test]
fn wrong_previous_hash_breaks_chain() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.previous_hash = [7; 32];
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));

    match error {
        FoldError::ChainBroken { aggregate, version } => {
            assert_eq!(aggregate, Aggregate::secret("db"));
            assert_eq!(version, 2);
        }
        other => panic!("expected ChainBroken, got {other}"),
    }
}

#[test]
fn first_event_needs_zero_previous_hash() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    assert_eq!(event.previous_hash, ZERO_HASH);
    event.previous_hash[31] = 1;
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));
    assert!(matches!(error, FoldError::ChainBroken { version: 1, .. }), "{error}");
}

#[test]
fn unknown_kind_stops_and_is_not_skipped() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    let mut state = stream.memory_state();

    let unknown = stream.next_event(Aggregate::secret("db"), "secret.renamed", &signer_key(), vec![0x90]);
    let unknown_message = stream.push(&unknown, &signer_key());
    let error = fold_error(rejection(&mut state, &unknown_message));
    match error {
        FoldError::UnknownKind { kind } => assert_eq!(kind, "secret.renamed"),
        other => panic!("expected UnknownKind, got {other}"),
    }

    // The unknown event did not advance the aggregate, so the event after it cannot
    // apply either: a reader cannot step over what it does not understand.
    let next = stream.add_version("db");
    let error = fold_error(rejection(&mut state, &next));
    assert!(matches!(error, FoldError::VersionGap { current: 1, found: 3, .. }), "{error}");
}

#[test]
fn version_added_on_signing_key_is_wrong_aggregate() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let aggregate = Aggregate::signing_key(&id_of(&stranger_key()));
    let event = stream.next_event(aggregate.clone(), KIND_SECRET_VERSION_ADDED, &signer_key(), version_added_body(1));
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));

    match error {
        FoldError::WrongAggregate { kind, aggregate: found } => {
            assert_eq!(kind, KIND_SECRET_VERSION_ADDED);
            assert_eq!(found, aggregate);
        }
        other => panic!("expected WrongAggregate, got {other}"),
    }
}

#[test]
fn certification_on_secret_is_wrong_aggregate() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let aggregate = Aggregate::secret(&id_of(&stranger_key()));
    let event = stream.next_event(aggregate, KIND_SIGNING_KEY_CERTIFIED, &root_key(), certified_body(&stranger_key()));
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &root_key())));
    assert!(matches!(error, FoldError::WrongAggregate { .. }), "{error}");
}

#[test]
fn skipped_content_version_is_inconsistent() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.body = version_added_body(3);
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));

    match error {
        FoldError::Inconsistent { kind, aggregate, reason } => {
            assert_eq!(kind, KIND_SECRET_VERSION_ADDED);
            assert_eq!(aggregate, Aggregate::secret("db"));
            assert_eq!(reason, "content version 3 follows version 1");
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
}

#[test]
fn new_secret_must_start_at_content_version_1() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.body = version_added_body(2);
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));
    assert!(matches!(error, FoldError::Inconsistent { .. }), "{error}");
}

#[test]
fn certification_under_other_key_id_is_inconsistent() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    // The aggregate names the stranger key, but the body carries the signer key.
    let aggregate = Aggregate::signing_key(&id_of(&stranger_key()));
    let event = stream.next_event(aggregate, KIND_SIGNING_KEY_CERTIFIED, &root_key(), certified_body(&signer_key()));
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &root_key())));

    match error {
        FoldError::Inconsistent { reason, .. } => {
            assert_eq!(reason, "the aggregate id is not the id of the certified key");
        }
        other => panic!("expected Inconsistent, got {other}"),
    }
}

#[test]
fn certification_of_other_algorithm_is_inconsistent() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let body = encode_body(&SigningKeyCertified {
        algorithm: "ed448".to_owned(),
        public_key: stranger_key().verifying_key().to_bytes(),
    });
    let aggregate = Aggregate::signing_key(&id_of(&stranger_key()));
    let event = stream.next_event(aggregate, KIND_SIGNING_KEY_CERTIFIED, &root_key(), body);
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &root_key())));
    assert!(matches!(error, FoldError::Inconsistent { .. }), "{error}");
}

#[test]
fn malformed_body_is_body_error() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.body = vec![0xc1];
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));
    assert!(matches!(error, FoldError::Body { source: DecodeError::Malformed(_), .. }), "{error}");
}

#[test]
fn body_with_wide_integer_is_noncanonical() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    // The body ends with the mode 0o440 as a uint 16 (cd 01 20). Write it as a uint 32.
    let mut body = version_added_body(1);
    assert_eq!(body[body.len() - 3..], [0xcd, 0x01, 0x20]);
    body.truncate(body.len() - 3);
    body.extend([0xce, 0x00, 0x00, 0x01, 0x20]);

    let mut event = stream.next_version_event("db", &signer_key());
    event.body = body;
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));
    assert!(matches!(error, FoldError::Body { source: DecodeError::NonCanonical, .. }), "{error}");
}

#[test]
fn body_with_trailing_byte_is_noncanonical() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let mut event = stream.next_version_event("db", &signer_key());
    event.body.push(0xc0);
    let error = fold_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));
    assert!(matches!(error, FoldError::Body { source: DecodeError::NonCanonical, .. }), "{error}");
}

#[test]
fn uncertified_signer_is_unknown_key() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let event = stream.next_version_event("db", &stranger_key());
    let error = verify_error(rejection(&mut state, &stream.seal_next(&event, &stranger_key())));
    match error {
        VerifyError::UnknownKey { key_id } => assert_eq!(key_id, id_of(&stranger_key())),
        other => panic!("expected UnknownKey, got {other}"),
    }
}

#[test]
fn root_key_cannot_sign_secret_events() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let event = stream.next_version_event("db", &root_key());
    let error = verify_error(rejection(&mut state, &stream.seal_next(&event, &root_key())));
    assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error}");
}

#[test]
fn signing_before_certification_is_unknown_key() {
    let mut stream = Stream::default();
    let early = stream.add_version("db");
    stream.certify(&signer_key());

    let mut state = MemoryState::default();
    let error = verify_error(rejection(&mut state, &early));
    assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error}");
}

#[test]
fn certification_by_signing_key_requires_root() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    let aggregate = Aggregate::signing_key(&id_of(&stranger_key()));
    let event =
        stream.next_event(aggregate, KIND_SIGNING_KEY_CERTIFIED, &signer_key(), certified_body(&stranger_key()));
    let error = verify_error(rejection(&mut state, &stream.seal_next(&event, &signer_key())));

    match error {
        VerifyError::RootKeyRequired { kind, key_id } => {
            assert_eq!(kind, KIND_SIGNING_KEY_CERTIFIED);
            assert_eq!(key_id, id_of(&signer_key()));
        }
        other => panic!("expected RootKeyRequired, got {other}"),
    }
}

#[test]
fn signature_by_other_key_is_bad_signature() {
    let stream = Stream::bootstrapped();
    let mut state = stream.memory_state();

    // The envelope names the certified signer, but the stranger signs it.
    let event = stream.next_version_event("db", &signer_key());
    let error = verify_error(rejection(&mut state, &stream.seal_next(&event, &stranger_key())));
    match error {
        VerifyError::BadSignature { key_id } => assert_eq!(key_id, id_of(&signer_key())),
        other => panic!("expected BadSignature, got {other}"),
    }
}

#[test]
fn second_certified_key_also_signs() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.certify(&stranger_key());
    stream.add_version_signed("db", &stranger_key());
    stream.add_version("db");

    let state = stream.memory_state();
    assert_eq!(state.signing_keys.len(), 2);
    assert_eq!(state.secrets["db"].current.version, 3);
}

#[test]
fn applied_events_build_the_expected_state() {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.add_version("api/token");
    let last = stream.add_version("db");
    let state = stream.memory_state();

    let secret = &state.secrets["db"];
    assert_eq!(secret.revision, 2);
    assert_eq!(secret.sequence, last.sequence);
    assert_eq!(secret.current.version, 2);
    assert_eq!(secret.current.revision, 2);
    assert!(secret.current.content.ciphertext.is_empty(), "the secret record holds no ciphertext");
    assert_eq!(state.versions[&("db".to_owned(), 2)].content, version_added(2).content);
    assert_eq!(secret.current.created_by, "operator:alice");

    let head = &state.heads[&Aggregate::secret("db")];
    assert_eq!(head.version, 2);
    assert_eq!(head.last_hash, last.hash);
    assert_eq!(head.last_sequence, last.sequence);

    let key = &state.signing_keys[&id_of(&signer_key())];
    assert_eq!(key.public_key, signer_key().verifying_key().to_bytes());
    assert_eq!(key.certified_by, id_of(&root_key()));
    assert_eq!(key.sequence, 1);
}

#[test]
fn aggregate_types_chain_separately() {
    let mut stream = Stream::bootstrapped();
    let key_id = id_of(&signer_key());
    stream.add_version(&key_id);

    let mut state = stream.memory_state();
    assert_eq!(state.heads[&Aggregate::secret(&key_id)].version, 1);
    assert_eq!(state.heads[&Aggregate::signing_key(&key_id)].version, 1);

    let message = stream.add_version(&key_id);
    apply_to(&mut state, &message).expect("the secret chain continues on its own");
}
