//! Hostile bytes: random strings and random mutations of valid messages fed to every
//! decoder and to verification. Each must return, with an error unless the bytes are
//! a valid message, and a panic fails the test. The RNG is seeded, so a failure reproduces.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use watchword_events::body::{
    Delivery, KIND_SECRET_METADATA_SET, KIND_SECRET_VERSION_ADDED_V2, KIND_SECRET_VERSION_DESTROYED,
    KIND_SECRET_VERSION_EXPIRED, MetadataSet, SecretMetadata, SecretVersionAdded, SecretVersionAddedV2,
    SigningKeyCertified, VersionRef, decode_body, encode_body,
};
use watchword_events::event::Event;
use watchword_events::fold::{MemoryState, apply_message};
use watchword_events::verify::verify_message;
use watchword_events::{Aggregate, Frame};

use common::{Message, Stream, roots, seal, signer_key};

/// MessagePack markers worth planting: header widths, nil, and length-bearing types.
const MARKERS: [u8; 20] = [
    0x00, 0x7f, 0x80, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xc5, 0xc6, 0xcc, 0xcd, 0xce, 0xcf, 0xd9, 0xdc, 0xdd,
    0xff,
];

/// Runs every decoder on `bytes` and ignores the results, so only a panic fails.
fn decode_everything(bytes: &[u8]) {
    let _ = Frame::decode(bytes);
    let _ = Event::from_signed_bytes(bytes);
    let _ = decode_body::<SecretVersionAdded>(bytes);
    let _ = decode_body::<SigningKeyCertified>(bytes);
    let _ = decode_body::<SecretVersionAddedV2>(bytes);
    let _ = decode_body::<MetadataSet>(bytes);
    let _ = decode_body::<VersionRef>(bytes);
}

/// Changes `bytes` in one to four random ways.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=4) {
        if bytes.is_empty() {
            bytes.push(rng.r#gen());
            continue;
        }
        let position = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..7) {
            0 => bytes[position] ^= 1 << rng.gen_range(0..8),
            1 => bytes[position] = rng.r#gen(),
            2 => bytes[position] = MARKERS[rng.gen_range(0..MARKERS.len())],
            3 => bytes.insert(position, MARKERS[rng.gen_range(0..MARKERS.len())]),
            4 => {
                bytes.remove(position);
            }
            5 => bytes.truncate(position),
            _ => {
                let end = rng.gen_range(position..=bytes.len());
                let copy = bytes[position..end].to_vec();
                bytes.splice(position..position, copy);
            }
        }
    }
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = StdRng::seed_from_u64(0x5741_5443_4857_4f52);
    let state = Stream::bootstrapped().memory_state();
    let subject = Aggregate::secret("db").subject();

    for _ in 0..3000 {
        let len = rng.gen_range(0..400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        // Start some strings like a frame, so the decoder gets past the first byte.
        if rng.gen_bool(0.5) && len > 3 {
            bytes[..3].copy_from_slice(&[0x92, 0xc5, 0x01]);
        }
        decode_everything(&bytes);
        assert!(verify_message(&state, &roots(), &subject, &bytes, 2).is_err());
    }
}

#[test]
fn mutated_messages_are_rejected() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut stream = Stream::bootstrapped();
    let original = stream.add_version("db/password");
    let state = Stream::bootstrapped().memory_state();

    for iteration in 0..1500 {
        let mut payload = original.payload.clone();
        mutate(&mut rng, &mut payload);
        if payload == original.payload {
            continue;
        }
        decode_everything(&payload);

        let mut target = state.clone();
        let result = apply_message(&mut target, &roots(), &original.subject, &payload, original.sequence);
        assert!(result.is_err(), "iteration {iteration}: a mutated payload applied: {}", hex::encode(&payload));
        assert_eq!(target, state, "iteration {iteration}: a rejected payload changed the state");
    }
}

#[test]
fn mutated_envelopes_signed_again_never_panic() {
    // Signing each mutation takes the decoder and the fold past the signature check.
    let mut rng = StdRng::seed_from_u64(2);
    let stream = Stream::bootstrapped();
    let state = stream.memory_state();
    let event = stream.next_version_event("db/password", &signer_key());
    let original = seal(&event, &signer_key(), stream.next_sequence());
    let signed = Frame::decode(&original.payload).expect("a valid frame").signed;

    let (mut applied, mut rejected) = (0, 0);
    for _ in 0..500 {
        let mut mutated = signed.clone();
        mutate(&mut rng, &mut mutated);
        decode_everything(&mutated);

        let signature = ed25519_dalek::Signer::sign(&signer_key(), &mutated).to_bytes();
        let frame = Frame { signed: mutated, signature };
        let subject = Event::from_signed_bytes(&frame.signed)
            .map_or_else(|_| original.subject.clone(), |event| event.aggregate.subject());
        let message = Message { subject, payload: frame.encode(), sequence: original.sequence, hash: frame.hash() };

        let mut target = state.clone();
        match common::apply_to(&mut target, &message) {
            Ok(_) => applied += 1,
            Err(_) => rejected += 1,
        }
    }

    // Some mutations only touch free text (correlation id, actor) and stay valid
    // events, and the rest fail in the decoder or the fold. Both must occur, or the
    // mutations are not reaching the fold.
    assert!(applied > 0, "no mutation produced a valid event");
    assert!(rejected > 0, "no mutation was rejected");
}

/// Returns metadata with every field set and labels that sort, so mutations can
/// reach each element of the metadata array.
fn full_metadata() -> SecretMetadata {
    SecretMetadata {
        owner_group: Some("payments admins".to_owned()),
        description: "API key".to_owned(),
        labels: [("env", "production"), ("team", "payments")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
        delivery: Delivery {
            file_name: Some("api.env".to_owned()),
            owner: Some("www-data".to_owned()),
            group: Some("1001".to_owned()),
            mode: Some(0o440),
        },
    }
}

#[test]
fn mutated_lifecycle_bodies_signed_again_never_panic() {
    // Each body is mutated, put in a correctly chained event and signed, so the
    // body decoder and the lifecycle rules of the fold see the damaged bytes.
    let mut rng = StdRng::seed_from_u64(3);
    let mut stream = Stream::bootstrapped();
    let first = SecretVersionAddedV2 {
        expires_at_micros: Some(1_767_225_700_000_000),
        metadata: Some(full_metadata()),
        ..common::version_added_v2(1)
    };
    stream.append(Aggregate::secret("db"), KIND_SECRET_VERSION_ADDED_V2, encode_body(&first));
    let state = stream.memory_state();

    let second = SecretVersionAddedV2 { rolled_back_from: Some(1), ..first.clone() };
    let bodies = [
        (KIND_SECRET_VERSION_ADDED_V2, encode_body(&SecretVersionAddedV2 { version: 2, ..second })),
        (KIND_SECRET_METADATA_SET, encode_body(&MetadataSet { metadata: full_metadata() })),
        (KIND_SECRET_VERSION_EXPIRED, encode_body(&VersionRef { version: 1 })),
        (KIND_SECRET_VERSION_DESTROYED, encode_body(&VersionRef { version: 1 })),
    ];

    let (mut applied, mut rejected) = (0, 0);
    for (kind, body) in bodies {
        for _ in 0..400 {
            let mut mutated = body.clone();
            mutate(&mut rng, &mut mutated);
            decode_everything(&mutated);

            let message = stream.next_message(Aggregate::secret("db"), kind, mutated);
            let mut target = state.clone();
            match common::apply_to(&mut target, &message) {
                Ok(_) => applied += 1,
                Err(_) => {
                    assert_eq!(target, state, "{kind}: a rejected body changed the state");
                    rejected += 1;
                }
            }
        }
    }

    // Mutations of free text (description, labels, file name) keep a valid body,
    // and the rest fail to decode or break a rule. Both must occur, or the
    // mutations are not reaching the fold.
    assert!(applied > 0, "no mutated body applied");
    assert!(rejected > 0, "no mutated body was rejected");
}

#[test]
fn hostile_shapes_are_rejected() {
    let mut deep_arrays = vec![0x92, 0x02];
    deep_arrays.extend([0x91; 100_000]);
    let mut deep_maps = vec![0x92, 0x01];
    deep_maps.extend([0x81; 100_000]);
    let cases: [(&str, Vec<u8>); 8] = [
        ("empty", Vec::new()),
        ("nested arrays", vec![0x91; 100_000]),
        ("nested arrays after format version 2", deep_arrays),
        ("nested maps after format version 1", deep_maps),
        ("array 32 claiming 2^32 - 1 elements", vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
        ("bin 32 claiming 4 GiB", vec![0x92, 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]),
        ("str 32 claiming 4 GiB", vec![0x9c, 0x01, 0xc4, 0x10, 0xdb, 0xff, 0xff, 0xff, 0xff]),
        ("reserved marker", vec![0xc1]),
    ];
    let state = MemoryState::default();
    for (case, bytes) in cases {
        decode_everything(&bytes);
        assert!(Frame::decode(&bytes).is_err(), "{case}: frame");
        assert!(Event::from_signed_bytes(&bytes).is_err(), "{case}: envelope");
        assert!(verify_message(&state, &roots(), "watchword.ev.secret.x", &bytes, 1).is_err(), "{case}: verify");
    }
}
