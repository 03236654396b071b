//! Golden vectors of checkpoints: the Merkle tree (vector 30), a short stream
//! with two checkpoints (vector 31) and a checkpoint over a message that is not
//! an event (vector 32), as `FORMAT.md` section 17 specifies them.
//!
//! `WATCHWORD_BLESS=1` writes the files from the fixed inputs below; otherwise the
//! tests compare the inputs' encoding with the stored files and verify the stored
//! stream.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Stream, roots};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use watchword_events::body::decode_body;
use watchword_events::checkpoint::{Checkpoint, KIND_CHECKPOINT, leaf_hash, leaf_input, merkle_root, node_hash};
use watchword_events::fold::{MemoryState, apply_message};
use watchword_events::{Aggregate, Event, EventHash, Frame};

const MERKLE_FILE: &str = "30-merkle-tree.json";
const STREAM_FILE: &str = "31-checkpoint-stream.json";
const NON_EVENT_FILE: &str = "32-checkpoint-non-event.json";

/// Subject and stored bytes of vector 32's message that is not an event.
const NON_EVENT_SUBJECT: &str = "watchword.ev.secret.garbage";
const NON_EVENT_PAYLOAD: &[u8] = b"not an event";

/// Leaf counts of vector 30: empty, every count up to 9 (balanced and not), 16 and 17.
const LEAF_COUNTS: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17];

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn blessing() -> bool {
    std::env::var_os("WATCHWORD_BLESS").is_some_and(|value| value == "1")
}

/// Returns the event hashes of vector 30: SHA-256 of the single byte i.
fn merkle_inputs(count: usize) -> Vec<EventHash> {
    (0..count).map(|i| Sha256::digest([i as u8]).into()).collect()
}

fn merkle_document() -> Value {
    let cases: Vec<Value> = LEAF_COUNTS
        .iter()
        .map(|&count| {
            let hashes = merkle_inputs(count);
            json!({
                "leaves": count,
                "event_hashes_hex": hashes.iter().map(hex::encode).collect::<Vec<_>>(),
                "root_hex": hex::encode(merkle_root(&hashes)),
            })
        })
        .collect();
    json!({
        "description": "Merkle roots over event hashes (RFC 6962: leaf = SHA-256(00 || hash), \
                        node = SHA-256(01 || left || right), the left subtree holding the largest \
                        power of two of leaves below the count; the empty tree is SHA-256 of nothing). \
                        Event hash i is SHA-256 of the single byte i.",
        "cases": cases,
    })
}

/// Builds the stream of vector 31:
///
/// | seq | event |
/// | --- | --- |
/// | 1 | signer certified |
/// | 2 | secret db v1 |
/// | 3 | checkpoint 1..=2, the first |
/// | 4 | secret db v2 |
/// | 5 | checkpoint 3..=4, linked to the first |
fn checkpoint_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.checkpoint();
    stream.add_version("db");
    stream.checkpoint();
    stream
}

/// Builds the stream of vector 32:
///
/// | seq | message |
/// | --- | --- |
/// | 1 | signer certified |
/// | 2 | secret db v1 |
/// | 3 | the bytes `not an event`, which are not a frame |
/// | 4 | secret db v2 |
/// | 5 | checkpoint 1..=4 |
fn non_event_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.non_event(NON_EVENT_SUBJECT, NON_EVENT_PAYLOAD);
    stream.add_version("db");
    stream.checkpoint();
    stream
}

fn stream_document() -> Value {
    messages_document(
        &checkpoint_stream(),
        "A stream with two checkpoints signed by the root key of keys.json: sequence 3 \
         covers 1..=2, sequence 5 covers 3..=4 and links to sequence 3.",
    )
}

fn non_event_document() -> Value {
    messages_document(
        &non_event_stream(),
        "A stream whose sequence 3 holds bytes that are not a frame, and a checkpoint at \
         sequence 5 over 1..=4 signed by the root key of keys.json. The leaf input of \
         sequence 3 (its hash_hex) is SHA-256 of its stored bytes.",
    )
}

/// Describes each message of `stream`: a frame with its kind and checkpoint body,
/// or, marked `"frame": false`, a message that is not a frame.
fn messages_document(stream: &Stream, description: &str) -> Value {
    let messages: Vec<Value> = stream
        .messages
        .iter()
        .map(|message| {
            let Ok(frame) = Frame::decode(&message.payload) else {
                return json!({
                    "sequence": message.sequence,
                    "subject": message.subject,
                    "frame": false,
                    "payload_hex": hex::encode(&message.payload),
                    "hash_hex": hex::encode(message.hash),
                });
            };
            let event = Event::from_signed_bytes(&frame.signed).unwrap();
            let mut document = json!({
                "sequence": message.sequence,
                "subject": message.subject,
                "kind": event.kind,
                "payload_hex": hex::encode(&message.payload),
                "hash_hex": hex::encode(message.hash),
            });
            if event.kind == KIND_CHECKPOINT {
                let body: Checkpoint = decode_body(&event.body).unwrap();
                document["body_hex"] = json!(hex::encode(&event.body));
                document["checkpoint"] = json!({
                    "first_sequence": body.first_sequence,
                    "last_sequence": body.last_sequence,
                    "merkle_root_hex": hex::encode(body.merkle_root),
                    "previous_checkpoint_hex": hex::encode(body.previous_checkpoint),
                });
            }
            document
        })
        .collect();
    json!({
        "description": description,
        "messages": messages,
    })
}

/// Returns the stored file, writing it first when blessing.
fn stored(file: &str, expected: &Value) -> Value {
    let path = vectors_dir().join(file);
    if blessing() {
        let text = serde_json::to_string_pretty(expected).unwrap() + "\n";
        fs::write(&path, text).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
    }
    let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()))
}

fn hex_bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("a hex string")).expect("hex")
}

#[test]
fn merkle_vector_matches_encoder() {
    assert_eq!(stored(MERKLE_FILE, &merkle_document()), merkle_document());
}

#[test]
fn merkle_vector_follows_definition() {
    let document = stored(MERKLE_FILE, &merkle_document());
    let root_of = |leaves: u64| {
        let case = document["cases"].as_array().unwrap().iter().find(|c| c["leaves"] == leaves).unwrap();
        hex_bytes(&case["root_hex"])
    };
    let hashes = merkle_inputs(3);
    // Three leaves split as two and one: node(node(l0, l1), l2).
    let expected = node_hash(&node_hash(&leaf_hash(&hashes[0]), &leaf_hash(&hashes[1])), &leaf_hash(&hashes[2]));
    assert_eq!(root_of(3), expected.to_vec());
    assert_eq!(root_of(1), leaf_hash(&hashes[0]).to_vec());
    assert_eq!(root_of(0), Sha256::digest([]).to_vec());
}

#[test]
fn stream_vector_matches_encoder() {
    assert_eq!(stored(STREAM_FILE, &stream_document()), stream_document());
}

#[test]
fn stream_vector_verifies_and_checkpoints_match() {
    let document = stored(STREAM_FILE, &stream_document());
    let mut state = MemoryState::default();
    let mut hashes: Vec<EventHash> = Vec::new();
    let mut previous_checkpoint = [0u8; 32];
    for message in document["messages"].as_array().unwrap() {
        let payload = hex_bytes(&message["payload_hex"]);
        let sequence = message["sequence"].as_u64().unwrap();
        let subject = message["subject"].as_str().unwrap();
        let recorded = apply_message(&mut state, &roots(), subject, &payload, sequence)
            .unwrap_or_else(|error| panic!("sequence {sequence}: {error}"));
        assert_eq!(recorded.hash.to_vec(), hex_bytes(&message["hash_hex"]));

        if recorded.event.kind == KIND_CHECKPOINT {
            assert_eq!(subject, Aggregate::checkpoint().subject());
            let body: Checkpoint = decode_body(&recorded.event.body).unwrap();
            let range = &hashes[body.first_sequence as usize - 1..=body.last_sequence as usize - 1];
            assert_eq!(body.merkle_root, merkle_root(range), "sequence {sequence}: Merkle root");
            assert_eq!(body.previous_checkpoint, previous_checkpoint, "sequence {sequence}: link");
            previous_checkpoint = recorded.hash;
        }
        hashes.push(recorded.hash);
    }
    assert_eq!(state.heads[&Aggregate::checkpoint()].version, 2);
}

#[test]
fn checkpoint_signed_by_signing_key_rejected() {
    let mut stream = checkpoint_stream();
    let frame = Frame::decode(&stream.messages[2].payload).unwrap();
    let mut event = Event::from_signed_bytes(&frame.signed).unwrap();
    event.key_id = common::id_of(&common::signer_key());
    stream.messages[2] = common::seal(&event, &common::signer_key(), 3);

    let mut state = MemoryState::default();
    for message in &stream.messages[..2] {
        common::apply_to(&mut state, message).unwrap();
    }
    let error = common::apply_to(&mut state, &stream.messages[2]).unwrap_err();
    assert!(error.to_string().contains("must be signed by a root key"), "{error}");
}

#[test]
fn first_checkpoint_must_start_at_one() {
    let mut stream = checkpoint_stream();
    let frame = Frame::decode(&stream.messages[2].payload).unwrap();
    let mut event = Event::from_signed_bytes(&frame.signed).unwrap();
    let mut body: Checkpoint = decode_body(&event.body).unwrap();
    body.first_sequence = 2;
    event.body = watchword_events::body::encode_body(&body);
    stream.messages[2] = common::seal(&event, &common::root_key(), 3);

    let mut state = MemoryState::default();
    for message in &stream.messages[..2] {
        common::apply_to(&mut state, message).unwrap();
    }
    let error = common::apply_to(&mut state, &stream.messages[2]).unwrap_err();
    assert!(error.to_string().contains("starts at sequence 2, not 1"), "{error}");
}

#[test]
fn non_event_vector_matches_encoder() {
    assert_eq!(stored(NON_EVENT_FILE, &non_event_document()), non_event_document());
}

#[test]
fn non_event_vector_checkpoint_covers_payload_hash() {
    let document = stored(NON_EVENT_FILE, &non_event_document());
    let mut state = MemoryState::default();
    let mut leaf_inputs: Vec<EventHash> = Vec::new();
    for message in document["messages"].as_array().unwrap() {
        let payload = hex_bytes(&message["payload_hex"]);
        let sequence = message["sequence"].as_u64().unwrap();
        if message["frame"] == false {
            assert!(Frame::decode(&payload).is_err(), "sequence {sequence} must not be a frame");
            let payload_hash: EventHash = Sha256::digest(&payload).into();
            assert_eq!(hex_bytes(&message["hash_hex"]), payload_hash.to_vec(), "sequence {sequence}");
            assert_eq!(leaf_input(&payload), payload_hash, "sequence {sequence}");
            leaf_inputs.push(payload_hash);
            continue;
        }
        let subject = message["subject"].as_str().unwrap();
        let recorded = apply_message(&mut state, &roots(), subject, &payload, sequence)
            .unwrap_or_else(|error| panic!("sequence {sequence}: {error}"));
        assert_eq!(leaf_input(&payload), recorded.hash, "sequence {sequence}");
        if recorded.event.kind == KIND_CHECKPOINT {
            let body: Checkpoint = decode_body(&recorded.event.body).unwrap();
            assert_eq!((body.first_sequence, body.last_sequence), (1, 4));
            assert_eq!(body.merkle_root, merkle_root(&leaf_inputs), "sequence {sequence}: Merkle root");
        }
        leaf_inputs.push(recorded.hash);
    }
    assert_eq!(state.heads[&Aggregate::checkpoint()].version, 1);
}

#[test]
fn non_event_changed_byte_changes_root() {
    let stream = non_event_stream();
    let mut leaf_inputs: Vec<EventHash> = stream.messages[..4].iter().map(|m| m.hash).collect();
    let original = merkle_root(&leaf_inputs);
    leaf_inputs[2] = leaf_input(b"not an evenT");
    assert_ne!(merkle_root(&leaf_inputs), original);
}
