//! Each kind of tampering with a signed history is detected by the verifier, which
//! names the first failing stream sequence and the check that broke.
//!
//! Histories are signed for real through the events crate's test writer. The
//! tampering then edits, drops, moves or re-adds stored messages as an attacker
//! with write access to the stream could, without the signing keys.

mod common;

use common::history::{self, Message, Stream, roots, stranger_key};
use watchword_events::body::{SecretVersionAdded, decode_body, encode_body};
use watchword_events::{Event, Frame};
use watchword_replay::source::Source;
use watchword_replay::{Check, CheckpointFailure, Pin, PinFailure, ReplayError, Report, SkipList, Verifier, pipeline};

/// Builds a history with two checkpoints and one event after the last:
///
/// | seq | event |
/// | --- | --- |
/// | 1 | signer certified |
/// | 2 | secret db v1 |
/// | 3 | group ops created |
/// | 4 | secret api v1 |
/// | 5 | ops grant on db |
/// | 6 | secret db v2 |
/// | 7 | checkpoint 1..=6 |
/// | 8 | secret api v2 |
/// | 9 | secret cache v1 |
/// | 10 | checkpoint 7..=9 |
/// | 11 | secret db v3 |
fn signed_history() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.create_group("ops");
    stream.add_version("api");
    stream.add_grant("ops", "db");
    stream.add_version("db");
    stream.checkpoint();
    stream.add_version("api");
    stream.add_version("cache");
    stream.checkpoint();
    stream.add_version("db");
    stream
}

fn verify(messages: &[Message], pin: Option<Pin>) -> Result<Report, ReplayError> {
    let roots = roots();
    let mut verifier = Verifier::new(&roots, pin);
    for message in messages {
        verifier.push(&message.subject, &message.payload, message.sequence)?;
    }
    verifier.finish()
}

/// Asserts that verification fails at `sequence` in `check`, on one thread and
/// with signatures checked on their own thread, and returns the error.
fn assert_fails(messages: &[Message], pin: Option<Pin>, check: Check, sequence: u64) -> ReplayError {
    let error = verify(messages, pin).expect_err("tampered history must not verify");
    assert_eq!(error.check(), check, "{error}");
    assert_eq!(error.sequence(), Some(sequence), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("tampered.wwa");
    common::write_archive(&archive, messages);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let source = Source::Archive(archive);
    let threaded = runtime
        .block_on(pipeline::verify(&source, &roots(), pin, &SkipList::default()))
        .expect_err("threaded verify must fail");
    assert_eq!((threaded.check(), threaded.sequence()), (check, Some(sequence)), "threaded: {threaded}");
    error
}

/// Gives the messages consecutive sequences from 1, as a rewritten stream would.
fn renumber(messages: &mut [Message]) {
    for (index, message) in messages.iter_mut().enumerate() {
        message.sequence = index as u64 + 1;
    }
}

/// Re-encodes a message's event after `edit`, keeping the original signature.
fn edit_event(message: &mut Message, edit: impl FnOnce(&mut Event)) {
    let frame = Frame::decode(&message.payload).unwrap();
    let mut event = Event::from_signed_bytes(&frame.signed).unwrap();
    edit(&mut event);
    message.payload = Frame { signed: event.to_signed_bytes(), signature: frame.signature }.encode();
}

fn pin_of(message: &Message) -> Pin {
    Pin { sequence: message.sequence, hash: message.hash }
}

#[test]
fn intact_history_verifies() {
    let stream = signed_history();
    let report = verify(&stream.messages, Some(pin_of(&stream.messages[9]))).unwrap();
    assert_eq!(report.events, 11);
    assert_eq!(report.checkpoints, 2);
    let last = report.last_checkpoint.as_ref().unwrap();
    assert_eq!(last.sequence, 10);
    assert_eq!((last.body.first_sequence, last.body.last_sequence), (7, 9));
    assert_eq!(report.uncovered(), 1, "sequence 11 follows the last checkpoint");
}

#[test]
fn flipped_byte_fails_signature() {
    let mut messages = signed_history().messages;
    // The byte before the frame's signature header is the last byte of the signed
    // bytes, inside the body, which the envelope carries as opaque bytes.
    let payload = &mut messages[3].payload;
    let index = payload.len() - 64 - 2 - 1;
    payload[index] ^= 0x01;
    assert_fails(&messages, None, Check::Signature, 4);
}

#[test]
fn flipped_byte_in_checkpoint_fails_signature() {
    let mut messages = signed_history().messages;
    let payload = &mut messages[6].payload;
    let index = payload.len() - 64 - 2 - 1;
    payload[index] ^= 0x80;
    assert_fails(&messages, None, Check::Signature, 7);
}

#[test]
fn deleted_event_leaves_sequence_gap() {
    let mut messages = signed_history().messages;
    messages.remove(4);
    let error = assert_fails(&messages, None, Check::SequenceGap, 6);
    assert!(matches!(error, ReplayError::SequenceGap { expected: 5, found: 6 }), "{error}");
}

#[test]
fn deleted_and_renumbered_event_fails_checkpoint() {
    let mut messages = signed_history().messages;
    // Sequence 8 (api v2) is the only event of its aggregate in the range, so no
    // chain breaks: only the checkpoint over 7..=9 can tell.
    messages.remove(7);
    renumber(&mut messages);
    assert_fails(&messages, None, Check::Checkpoint, 9);
}

#[test]
fn swapped_events_of_two_aggregates_fail_merkle_root() {
    let mut messages = signed_history().messages;
    messages.swap(7, 8);
    renumber(&mut messages);
    let error = assert_fails(&messages, None, Check::Checkpoint, 10);
    assert!(
        matches!(error, ReplayError::Checkpoint { failure: CheckpointFailure::MerkleRoot { first: 7, last: 9 }, .. }),
        "{error}"
    );
}

#[test]
fn swapped_events_of_one_aggregate_break_chain() {
    let mut messages = signed_history().messages;
    messages.swap(1, 5);
    renumber(&mut messages);
    assert_fails(&messages, None, Check::Chain, 2);
}

#[test]
fn republished_old_event_breaks_chain() {
    let mut messages = signed_history().messages;
    let mut old = messages[3].clone();
    old.sequence = 12;
    messages.push(old);
    assert_fails(&messages, None, Check::Chain, 12);
}

#[test]
fn uncertified_key_fails_signature() {
    let mut stream = signed_history();
    stream.add_version_signed("db", &stranger_key());
    let error = assert_fails(&stream.messages, None, Check::Signature, 12);
    assert!(error.to_string().contains("neither a trusted root key nor a certified signing key"), "{error}");
}

#[test]
fn checkpoint_by_signing_key_fails_signature() {
    let mut messages = signed_history().messages;
    // The certified signing key signs a copy of the first checkpoint, which only a
    // root key may sign.
    let forged = {
        let frame = Frame::decode(&messages[6].payload).unwrap();
        let mut event = Event::from_signed_bytes(&frame.signed).unwrap();
        event.key_id = history::id_of(&history::signer_key());
        history::seal(&event, &history::signer_key(), 7)
    };
    messages[6] = forged;
    let error = assert_fails(&messages[..7], None, Check::Signature, 7);
    assert!(error.to_string().contains("must be signed by a root key"), "{error}");
}

#[test]
fn truncated_tail_fails_pinned_checkpoint() {
    let messages = signed_history().messages;
    let pin = pin_of(&messages[9]);

    // Without the pin, the shorter history is self-consistent.
    verify(&messages[..8], None).expect("a prefix verifies on its own");

    let error = assert_fails(&messages[..8], Some(pin), Check::PinnedCheckpoint, 10);
    assert!(matches!(error, ReplayError::Pin { failure: PinFailure::Missing { last: 8 }, .. }), "{error}");
}

#[test]
fn pin_on_other_hash_fails() {
    let messages = signed_history().messages;
    let pin = Pin { sequence: 10, hash: [7; 32] };
    let error = assert_fails(&messages, Some(pin), Check::PinnedCheckpoint, 10);
    assert!(matches!(error, ReplayError::Pin { failure: PinFailure::HashMismatch { .. }, .. }), "{error}");
}

#[test]
fn pin_on_ordinary_event_fails() {
    let messages = signed_history().messages;
    let error = assert_fails(&messages, Some(pin_of(&messages[7])), Check::PinnedCheckpoint, 8);
    assert!(matches!(error, ReplayError::Pin { failure: PinFailure::NotCheckpoint, .. }), "{error}");
}

#[test]
fn swapped_ciphertexts_fail_signature() {
    let mut messages = signed_history().messages;
    let content_of = |message: &Message| {
        let frame = Frame::decode(&message.payload).unwrap();
        let event = Event::from_signed_bytes(&frame.signed).unwrap();
        decode_body::<SecretVersionAdded>(&event.body).unwrap().content
    };
    // Sequence 4 is api v1 and sequence 6 is db v2: their ciphertexts differ.
    let (api, db) = (content_of(&messages[3]), content_of(&messages[5]));
    assert_ne!(api, db);
    let swap = |content: watchword_events::body::SealedContent| {
        move |event: &mut Event| {
            let mut body: SecretVersionAdded = decode_body(&event.body).unwrap();
            body.content = content;
            event.body = encode_body(&body);
        }
    };
    edit_event(&mut messages[3], swap(db));
    edit_event(&mut messages[5], swap(api));
    assert_fails(&messages, None, Check::Signature, 4);
}

#[test]
fn event_moved_to_other_secret_fails_subject() {
    let mut messages = signed_history().messages;
    // An attacker stores api's version event on db's subject, in place of db v2.
    messages[5].payload = messages[3].payload.clone();
    assert_fails(&messages, None, Check::Subject, 6);
}

#[test]
fn checkpoint_range_restart_fails() {
    let mut stream = signed_history();
    // A second checkpoint over the same events, as a node that lost the race would
    // have published without the expected-sequence check, restarts the range.
    let duplicate = stream.messages[9].clone();
    let frame = Frame::decode(&duplicate.payload).unwrap();
    let event = Event::from_signed_bytes(&frame.signed).unwrap();
    let mut body: watchword_events::checkpoint::Checkpoint = decode_body(&event.body).unwrap();
    body.previous_checkpoint = stream.messages[9].hash;
    let replayed = Event {
        aggregate_version: event.aggregate_version + 1,
        previous_hash: stream.messages[9].hash,
        body: encode_body(&body),
        ..event
    };
    let message = history::seal(&replayed, &history::root_key(), 12);
    stream.messages.push(message);
    let error = assert_fails(&stream.messages, None, Check::Checkpoint, 12);
    assert!(error.to_string().contains("range"), "{error}");
}
