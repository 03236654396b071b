//! `--skip-sequence`: a message that is not an event verifies only where the
//! auditor lists it (or its archive records it as skipped), and a listing that
//! does not fit the history is an error.
//!
//! Offline, through archives and the `watchword-replay` binary: no NATS, no HSM.

mod common;

use std::path::{Path, PathBuf};

use common::history::{Message, Stream, roots};
use common::{replay, root_hex, write_archive};
use watchword_events::Frame;
use watchword_replay::archive::{ArchiveWriter, Header};
use watchword_replay::source::Source;
use watchword_replay::{Check, PinFailure, ReplayError, SkipList, pipeline, verify};

/// Stored bytes of the message that is not an event.
const GARBAGE: &[u8] = b"not an event";

/// Builds a history whose sequence 3 is not an event:
///
/// | seq | message |
/// | --- | --- |
/// | 1 | signer certified |
/// | 2 | secret db v1 |
/// | 3 | the bytes `not an event` |
/// | 4 | secret db v2 |
/// | 5 | checkpoint 1..=4 |
/// | 6 | secret api v1 |
/// | 7 | checkpoint 5..=6 |
fn history_with_garbage() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.non_event("watchword.ev.secret.garbage", GARBAGE);
    stream.add_version("db");
    stream.checkpoint();
    stream.add_version("api");
    stream.checkpoint();
    stream
}

fn archive_of(dir: &Path, messages: &[Message]) -> PathBuf {
    let path = dir.join("history.wwa");
    write_archive(&path, messages);
    path
}

/// Writes `messages` as an archive that records the sequences of `skipped` as
/// skipped messages (tag 3), as `export --skip-sequence` does.
fn archive_with_skips(dir: &Path, messages: &[Message], skipped: &[u64]) -> PathBuf {
    let path = dir.join("skipped.wwa");
    let header = Header::new("WATCHWORD_EVENTS", 0, &[common::history::root_key().verifying_key().to_bytes()]);
    let mut writer = ArchiveWriter::create(&path, &header).unwrap();
    for message in messages {
        if skipped.contains(&message.sequence) {
            writer.write_skipped(message.sequence, &message.subject, &message.payload).unwrap();
        } else {
            writer.write_message(message.sequence, &message.subject, &message.payload).unwrap();
        }
    }
    let last = messages.last().unwrap();
    writer.finish(Some((last.sequence, last.hash))).unwrap();
    path
}

fn verify_archive(archive: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["verify", "--archive", archive.to_str().unwrap(), "--root-key"];
    let root = root_hex();
    args.push(&root);
    args.extend_from_slice(extra);
    replay(&args)
}

/// Verifies `archive` on one thread and on three, expecting the same failure.
async fn assert_fails(archive: &Path, skips: &SkipList, check: Check, sequence: u64) -> ReplayError {
    let source = Source::Archive(archive.to_owned());
    let error = verify::verify_sequential(&source, &roots(), None, skips).await.expect_err("must not verify");
    assert_eq!((error.check(), error.sequence()), (check, Some(sequence)), "{error}");
    let threaded = pipeline::verify(&source, &roots(), None, skips).await.expect_err("threaded must not verify");
    assert_eq!((threaded.check(), threaded.sequence()), (check, Some(sequence)), "threaded: {threaded}");
    error
}

#[test]
fn garbage_fails_decode_without_skip() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);

    let output = verify_archive(&archive, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stream sequence 3 (check: decode)"), "{stderr}");
}

#[test]
fn listed_garbage_verifies_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);

    for extra in [&["--skip-sequence", "3"][..], &["--skip-sequence", "3", "--sequential"][..]] {
        let output = verify_archive(&archive, extra);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("verified 6 events up to stream sequence 7"), "{stdout}");
        assert!(stdout.contains("2 checkpoints"), "{stdout}");
        assert!(stdout.contains("skipped 1 messages that are not events"), "{stdout}");
        assert!(stdout.contains("stream sequences 3\n"), "{stdout}");
        assert!(!stdout.contains("not yet covered"), "{stdout}");
    }
}

#[tokio::test]
async fn listed_valid_event_fails_skip() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);

    let error = assert_fails(&archive, &SkipList::new([3, 4]), Check::Skip, 4).await;
    assert!(matches!(error, ReplayError::SkippedEvent { sequence: 4 }), "{error}");
    let output = verify_archive(&archive, &["--skip-sequence", "3", "--skip-sequence", "4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stream sequence 4 (check: skip)"), "{stderr}");
}

#[tokio::test]
async fn listed_bare_signed_bytes_fail_skip() {
    // The signed bytes without their frame have the event's hash as leaf input,
    // so the checkpoint still matches: only the skip check catches the swap.
    let dir = tempfile::tempdir().unwrap();
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.checkpoint();
    let mut messages = stream.messages.clone();
    messages[1].payload = Frame::decode(&messages[1].payload).unwrap().signed;
    let archive = archive_of(dir.path(), &messages);

    assert_fails(&archive, &SkipList::new([2]), Check::Skip, 2).await;
}

#[tokio::test]
async fn unlisted_garbage_fails_beside_listed_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = Stream::bootstrapped();
    stream.non_event("watchword.ev.secret.garbage", GARBAGE);
    stream.non_event("watchword.ev.secret.garbage", b"more garbage");
    stream.checkpoint();
    let archive = archive_of(dir.path(), &stream.messages);

    assert_fails(&archive, &SkipList::new([2]), Check::Decode, 3).await;
    let report = verify::verify(&Source::Archive(archive), &roots(), None, &SkipList::new([2, 3])).await.unwrap();
    assert_eq!(report.skipped, vec![2, 3]);
    assert_eq!(report.checkpoints, 1);
}

#[test]
fn skip_past_end_is_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);

    let output = verify_archive(&archive, &["--skip-sequence", "3", "--skip-sequence", "8"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--skip-sequence 8 is past the end of the history"), "{stderr}");
}

#[tokio::test]
async fn changed_garbage_byte_fails_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut messages = history_with_garbage().messages;
    messages[2].payload = b"not an evenT".to_vec();
    let archive = archive_of(dir.path(), &messages);

    assert_fails(&archive, &SkipList::new([3]), Check::Checkpoint, 5).await;
}

#[tokio::test]
async fn pin_on_skipped_sequence_fails() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);
    let pin = watchword_replay::Pin { sequence: 3, hash: [0; 32] };

    let error = verify::verify(&Source::Archive(archive), &roots(), Some(pin), &SkipList::new([3])).await.unwrap_err();
    assert!(matches!(error, ReplayError::Pin { sequence: 3, failure: PinFailure::NotCheckpoint }), "{error}");
}

#[test]
fn archive_records_skip_for_offline_verify() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_with_skips(dir.path(), &history_with_garbage().messages, &[3]);

    let output = verify_archive(&archive, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("skipped 1 messages that are not events"), "{stdout}");
    assert!(stdout.contains("stream sequences 3\n"), "{stdout}");

    // The queries take the recorded skip too, with the archive's own root key.
    let output = replay(&["state", "--archive", archive.to_str().unwrap(), "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(rows.iter().any(|row| row["entity"] == "secret" && row["name"] == "api"), "{rows:?}");
}

#[tokio::test]
async fn archive_skip_of_valid_event_fails() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_with_skips(dir.path(), &history_with_garbage().messages, &[2, 3]);

    assert_fails(&archive, &SkipList::default(), Check::Skip, 2).await;
}

#[test]
fn queries_and_rebuild_accept_skip() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &history_with_garbage().messages);
    let path = archive.to_str().unwrap();

    let output = replay(&["history", "db", "--archive", path, "--output", "json"]);
    assert_eq!(output.status.code(), Some(1), "without the skip the history stops at sequence 3");

    let output = replay(&["history", "db", "--archive", path, "--skip-sequence", "3", "--output", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");

    let output = replay(&["state", "--archive", path, "--seq", "2", "--skip-sequence", "3"]);
    assert!(output.status.success(), "a skip after the point: {}", String::from_utf8_lossy(&output.stderr));

    let model = dir.path().join("rebuilt.redb");
    let output = replay(&["rebuild", "--archive", path, "--skip-sequence", "3", "--out", model.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("up to stream sequence 7"), "{stdout}");
}
