//! Damaged and non-canonical stored messages: each must be rejected with an error,
//! never accepted and never a panic.

mod common;

use ed25519_dalek::SigningKey;
use watchword_events::body::{
    Delivery, KIND_SECRET_METADATA_SET, KIND_SECRET_VERSION_ADDED_V2, MetadataSet, SecretMetadata,
    SecretVersionAddedV2, decode_body, encode_body,
};
use watchword_events::error::{ApplyError, DecodeError, FoldError, VerifyError};
use watchword_events::event::Event;
use watchword_events::fold::MemoryState;
use watchword_events::verify::sign;
use watchword_events::{Aggregate, AggregateType, Frame};

use common::msgpack::{self, array, bin, nil, str, uint};
use common::{Message, Stream, rejection, root_key, signer_key};

fn decode_error(error: ApplyError) -> DecodeError {
    match error {
        ApplyError::Verify { source: VerifyError::Decode(source), .. } => source,
        other => panic!("expected a decode error, got {other}"),
    }
}

/// A stream with a certified signer and one secret version, and the state after it.
fn stream_and_state() -> (Stream, MemoryState) {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    let state = stream.memory_state();
    (stream, state)
}

/// Frames `signed` with a valid signature by `key`, so that only the encoding is wrong.
fn signed_message(stream: &Stream, subject: String, signed: Vec<u8>, key: &SigningKey) -> Message {
    use ed25519_dalek::Signer;
    let signature = key.sign(&signed).to_bytes();
    let frame = Frame { signed, signature };
    Message { subject, payload: frame.encode(), sequence: stream.next_sequence(), hash: frame.hash() }
}

/// Returns the envelope of the next secret event with element `index` replaced by `element`.
fn envelope_with(stream: &Stream, index: usize, element: Vec<u8>) -> (Event, Vec<u8>) {
    let event = stream.next_version_event("db", &signer_key());
    let mut elements = msgpack::envelope_elements(&event);
    elements[index] = element;
    (event, array(&elements))
}

fn assert_every_byte_flip_rejected(state: &MemoryState, message: &Message) {
    for position in 0..message.payload.len() {
        for mask in [0x01, 0xff] {
            let mut damaged = message.clone();
            damaged.payload[position] ^= mask;
            let mut state = state.clone();
            let error = rejection(&mut state, &damaged);
            assert!(!error.to_string().is_empty(), "byte {position} mask {mask:#04x}");
        }
    }
}

#[test]
fn every_flipped_byte_of_certification_is_rejected() {
    let mut stream = Stream::default();
    let message = stream.certify(&signer_key());
    assert_every_byte_flip_rejected(&MemoryState::default(), &message);
}

#[test]
fn every_flipped_byte_of_secret_event_is_rejected() {
    let (mut stream, state) = stream_and_state();
    let message = stream.add_version("db");
    assert_every_byte_flip_rejected(&state, &message);
}

#[test]
fn every_truncation_is_rejected() {
    let (mut stream, mut state) = stream_and_state();
    let message = stream.add_version("db");
    for len in 0..message.payload.len() {
        let mut truncated = message.clone();
        truncated.payload.truncate(len);
        let error = decode_error(rejection(&mut state, &truncated));
        assert!(matches!(error, DecodeError::Malformed(_)), "length {len}: {error}");
    }
}

#[test]
fn subject_of_other_aggregate_is_mismatch() {
    let (mut stream, mut state) = stream_and_state();
    let message = stream.add_version("db");

    let wrong_subjects = [
        Aggregate::secret("other").subject(),
        Aggregate::signing_key("db").subject(),
        message.subject.to_uppercase(),
        format!("{}.x", message.subject),
        "watchword.ev.secret.db".to_owned(),
    ];
    for subject in wrong_subjects {
        let moved = Message { subject: subject.clone(), ..message.clone() };
        let error = rejection(&mut state, &moved);
        match error {
            ApplyError::Verify { source: VerifyError::SubjectMismatch { expected, actual }, .. } => {
                assert_eq!(expected, message.subject);
                assert_eq!(actual, subject);
            }
            other => panic!("subject {subject}: expected SubjectMismatch, got {other}"),
        }
    }
}

#[test]
fn wide_envelope_integers_are_noncanonical() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let micros = event.recorded_at_micros;

    let cases: [(&str, usize, Vec<u8>); 5] = [
        ("format version as uint 8", 0, vec![0xcc, 0x01]),
        ("aggregate version as uint 16", 5, vec![0xcd, 0x00, 0x02]),
        ("aggregate version as uint 64", 5, [&[0xcf][..], &2u64.to_be_bytes()].concat()),
        ("recorded time as int 64", 7, [&[0xd3][..], &micros.to_be_bytes()].concat()),
        ("format version as int 8", 0, vec![0xd0, 0x01]),
    ];
    for (case, index, element) in cases {
        let (event, signed) = envelope_with(&stream, index, element);
        let message = signed_message(&stream, event.aggregate.subject(), signed, &signer_key());
        let error = decode_error(rejection(&mut state, &message));
        assert_eq!(error, DecodeError::NonCanonical, "{case}");
    }
}

#[test]
fn wide_envelope_headers_are_noncanonical() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let kind = event.kind.as_bytes();
    let key_id = event.key_id.as_bytes();

    let cases: [(&str, usize, Vec<u8>); 6] = [
        ("kind as str 8", 2, [&[0xd9, kind.len() as u8][..], kind].concat()),
        ("key id as str 16", 10, [&[0xda, 0x00, key_id.len() as u8][..], key_id].concat()),
        ("event id as bin 16", 1, [&[0xc5, 0x00, 0x10][..], event.id.as_bytes()].concat()),
        ("event id as array of integers", 1, array(&event.id.as_bytes().map(|byte| uint(byte.into())))),
        ("kind as bin", 2, bin(kind)),
        ("actor as array 16", 8, [&[0xdc, 0x00, 0x02][..], &str(&event.actor.principal), &str("mtls")].concat()),
    ];
    for (case, index, element) in cases {
        let (event, signed) = envelope_with(&stream, index, element);
        let message = signed_message(&stream, event.aggregate.subject(), signed, &signer_key());
        let error = decode_error(rejection(&mut state, &message));
        assert_eq!(error, DecodeError::NonCanonical, "{case}");
    }
}

#[test]
fn envelope_as_array_16_is_noncanonical() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let signed = [vec![0xdc, 0x00, 0x0c], msgpack::envelope_elements(&event).concat()].concat();
    let message = signed_message(&stream, event.aggregate.subject(), signed, &signer_key());
    assert_eq!(decode_error(rejection(&mut state, &message)), DecodeError::NonCanonical);
}

#[test]
fn trailing_byte_in_signed_bytes_is_noncanonical() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let signed = [event.to_signed_bytes(), vec![0xc0]].concat();
    let message = signed_message(&stream, event.aggregate.subject(), signed, &signer_key());
    assert_eq!(decode_error(rejection(&mut state, &message)), DecodeError::NonCanonical);
}

#[test]
fn wrong_envelope_length_is_malformed() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let mut elements = msgpack::envelope_elements(&event);

    elements.push(nil());
    let long = signed_message(&stream, event.aggregate.subject(), array(&elements), &signer_key());
    assert!(matches!(decode_error(rejection(&mut state, &long)), DecodeError::Malformed(_)));

    elements.truncate(11);
    let short = signed_message(&stream, event.aggregate.subject(), array(&elements), &signer_key());
    assert!(matches!(decode_error(rejection(&mut state, &short)), DecodeError::Malformed(_)));
}

#[test]
fn later_format_version_is_unsupported() {
    let (stream, mut state) = stream_and_state();
    let event = stream.next_version_event("db", &signer_key());
    let mut elements = msgpack::envelope_elements(&event);
    elements[0] = uint(2);

    let same_layout = signed_message(&stream, event.aggregate.subject(), array(&elements), &signer_key());
    assert_eq!(decode_error(rejection(&mut state, &same_layout)), DecodeError::UnsupportedFormat(2));

    // A later version may add elements, and the reader still names the version.
    elements.push(array(&[str("new"), nil()]));
    let longer = signed_message(&stream, event.aggregate.subject(), array(&elements), &signer_key());
    assert_eq!(decode_error(rejection(&mut state, &longer)), DecodeError::UnsupportedFormat(2));
}

#[test]
fn unknown_aggregate_type_is_rejected() {
    let (stream, mut state) = stream_and_state();
    let (event, signed) = envelope_with(&stream, 3, str("deployment_plan"));
    let message = signed_message(&stream, event.aggregate.subject(), signed, &signer_key());
    let error = decode_error(rejection(&mut state, &message));
    assert_eq!(error, DecodeError::UnknownAggregateType("deployment_plan".to_owned()));
    assert_eq!(AggregateType::parse("deployment_plan"), None);
}

#[test]
fn noncanonical_frames_are_rejected() {
    let stream = Stream::default();
    let event = stream.next_event(
        Aggregate::signing_key(&common::id_of(&signer_key())),
        watchword_events::body::KIND_SIGNING_KEY_CERTIFIED,
        &root_key(),
        common::certified_body(&signer_key()),
    );
    let frame = sign(&event, &root_key());
    let signed = &frame.signed;
    assert!(signed.len() < 256, "the certification fits in a bin 8");
    let signature = &frame.signature;
    let canonical = frame.encode();

    let cases: [(&str, Vec<u8>); 6] = [
        ("trailing byte", [canonical.clone(), vec![0x00]].concat()),
        ("signed bytes as bin 16", array(&[[&[0xc5, 0x00, signed.len() as u8][..], signed].concat(), bin(signature)])),
        (
            "signed bytes as bin 32",
            array(&[[&[0xc6, 0, 0, 0, signed.len() as u8][..], signed].concat(), bin(signature)]),
        ),
        ("signature as bin 16", array(&[bin(signed), [&[0xc5, 0x00, 0x40][..], signature].concat()])),
        ("frame as array 16", [&[0xdc, 0x00, 0x02][..], &bin(signed), &bin(signature)].concat()),
        ("frame as map", [&[0x82][..], &str("signed"), &bin(signed), &str("signature"), &bin(signature)].concat()),
    ];
    for (case, payload) in cases {
        assert_eq!(Frame::decode(&payload), Err(DecodeError::NonCanonical), "{case}");
        let message = Message { subject: event.aggregate.subject(), payload, sequence: 1, hash: frame.hash() };
        let error = decode_error(rejection(&mut MemoryState::default(), &message));
        assert_eq!(error, DecodeError::NonCanonical, "{case}");
    }

    let short_signature = array(&[bin(signed), bin(&signature[..63])]);
    assert!(matches!(Frame::decode(&short_signature), Err(DecodeError::Malformed(_))));
    let third_element = array(&[bin(signed), bin(signature), nil()]);
    assert!(matches!(Frame::decode(&third_element), Err(DecodeError::Malformed(_))));
}

#[test]
fn canonical_variants_decode_back_to_equal_events() {
    // Boundary values of each header width, round-tripped through the decoder.
    let stream = Stream::bootstrapped();
    let base = stream.next_version_event("db", &signer_key());
    let variants = [
        Event { aggregate_version: 127, ..base.clone() },
        Event { aggregate_version: 128, ..base.clone() },
        Event { aggregate_version: u64::MAX, ..base.clone() },
        Event { recorded_at_micros: -1, ..base.clone() },
        Event { recorded_at_micros: -33, ..base.clone() },
        Event { recorded_at_micros: i64::MIN, ..base.clone() },
        Event { aggregate: Aggregate::secret(&"n".repeat(31)), ..base.clone() },
        Event { aggregate: Aggregate::secret(&"n".repeat(32)), ..base.clone() },
        Event { aggregate: Aggregate::secret(&"n".repeat(256)), ..base.clone() },
        Event { body: vec![0; 256], ..base.clone() },
        Event { body: Vec::new(), correlation_id: String::new(), ..base.clone() },
    ];
    for event in variants {
        let signed = event.to_signed_bytes();
        assert_eq!(signed, msgpack::envelope(&event), "the specification's encoder disagrees");
        assert_eq!(Event::from_signed_bytes(&signed), Ok(event));
    }
}

/// Returns metadata whose labels the tests below encode by hand.
fn labelled_metadata() -> SecretMetadata {
    SecretMetadata {
        owner_group: None,
        description: "labelled".to_owned(),
        labels: Default::default(),
        delivery: Delivery { mode: Some(0o400), ..Default::default() },
    }
}

/// Returns a `secret.metadata_set` body whose labels map is `labels`, already encoded.
fn metadata_set_with_labels(labels: &[u8]) -> Vec<u8> {
    array(&[msgpack::metadata_with_labels(&labelled_metadata(), labels)])
}

#[test]
fn sorted_labels_decode() {
    // Keys sort by their UTF-8 bytes: upper case before lower case, and any
    // non-ASCII character after every ASCII one.
    let entries = [("Zone", "1"), ("app", "web"), ("team", "payments"), ("z", ""), ("é", "accent")];
    let body = metadata_set_with_labels(&msgpack::str_map(&entries));

    let decoded: MetadataSet = decode_body(&body).expect("sorted labels are canonical");
    let keys: Vec<&str> = decoded.metadata.labels.keys().map(String::as_str).collect();
    assert_eq!(keys, entries.map(|(key, _)| key));
    assert_eq!(encode_body(&decoded), body, "the labels re-encode in the same order");
}

#[test]
fn unsorted_or_repeated_labels_are_noncanonical() {
    let cases: [(&str, Vec<u8>); 7] = [
        ("two keys swapped", msgpack::str_map(&[("team", "payments"), ("env", "production")])),
        ("case-insensitive order", msgpack::str_map(&[("app", "web"), ("Zone", "1")])),
        ("non-ASCII before ASCII", msgpack::str_map(&[("é", "accent"), ("z", "")])),
        ("last key first", msgpack::str_map(&[("c", "3"), ("a", "1"), ("b", "2")])),
        ("same key, other values", msgpack::str_map(&[("env", "production"), ("env", "staging")])),
        ("same key and value", msgpack::str_map(&[("env", "production"), ("env", "production")])),
        ("repeat after another key", msgpack::str_map(&[("a", "1"), ("b", "2"), ("a", "1")])),
    ];
    for (case, labels) in cases {
        let body = metadata_set_with_labels(&labels);
        assert_eq!(decode_body::<MetadataSet>(&body), Err(DecodeError::NonCanonical), "{case}");
    }
}

#[test]
fn wide_or_misshapen_labels_are_rejected() {
    let entries = [("env", "production"), ("team", "payments")];
    let entries_bytes = &msgpack::str_map(&entries)[1..];
    let map16 = [&[0xde, 0x00, 0x02][..], entries_bytes].concat();
    let map32 = [&[0xdf, 0x00, 0x00, 0x00, 0x02][..], entries_bytes].concat();
    for (case, labels) in [("map 16 header", map16), ("map 32 header", map32)] {
        let body = metadata_set_with_labels(&labels);
        assert_eq!(decode_body::<MetadataSet>(&body), Err(DecodeError::NonCanonical), "{case}");
    }

    let malformed: [(&str, Vec<u8>); 4] = [
        ("array of pairs", array(&[array(&[str("env"), str("production")])])),
        ("integer value", [vec![0x81], str("env"), uint(1)].concat()),
        ("nil value", [vec![0x81], str("env"), nil()].concat()),
        ("map claiming 2^32 - 1 entries", vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (case, labels) in malformed {
        let body = metadata_set_with_labels(&labels);
        let error = decode_body::<MetadataSet>(&body).expect_err(case);
        assert!(matches!(error, DecodeError::Malformed(_)), "{case}: {error:?}");
    }
}

/// A reader stops at an event whose labels are out of order, whichever kind carries
/// them, and the state stays as it was.
#[test]
fn events_with_unsorted_labels_are_rejected() {
    let mut stream = Stream::bootstrapped();
    let name = "db";
    let unsorted = msgpack::str_map(&[("team", "payments"), ("env", "production")]);
    let metadata = msgpack::metadata_with_labels(&labelled_metadata(), &unsorted);

    let first = SecretVersionAddedV2 { metadata: Some(labelled_metadata()), ..common::version_added_v2(1) };
    // The metadata is the last element of a version body, so the unsorted labels
    // replace the tail of the canonical encoding.
    let canonical = msgpack::version_added_v2_body(&first);
    let metadata_start = canonical.len() - msgpack::metadata(&labelled_metadata()).len();
    let version_body = [&canonical[..metadata_start], &metadata[..]].concat();
    let set_body = array(&[metadata]);

    let mut state = stream.memory_state();
    let message = stream.next_message(Aggregate::secret(name), KIND_SECRET_VERSION_ADDED_V2, version_body);
    assert_eq!(body_error(rejection(&mut state, &message)), DecodeError::NonCanonical, "secret.version_added.v2");

    stream.append(Aggregate::secret(name), KIND_SECRET_VERSION_ADDED_V2, encode_body(&first));
    let mut state = stream.memory_state();
    let message = stream.next_message(Aggregate::secret(name), KIND_SECRET_METADATA_SET, set_body);
    assert_eq!(body_error(rejection(&mut state, &message)), DecodeError::NonCanonical, "secret.metadata_set");
}

fn body_error(error: ApplyError) -> DecodeError {
    match error {
        ApplyError::Fold { source: FoldError::Body { source, .. }, .. } => source,
        other => panic!("expected a body decode error, got {other}"),
    }
}
