//! The redb read model against the in-memory fold. The same events give the same
//! state, a batch commits whole or not at all, and the last applied sequence
//! survives a reopen.

mod common;

use std::path::Path;

use watchword_events::error::{ApplyError, FoldError};
use watchword_events::readmodel::ReadModel;

use common::{Stream, roots, signer_key, stranger_key};

const CACHE_BYTES: usize = 1 << 20;

fn open(path: &Path) -> ReadModel {
    ReadModel::open(path, CACHE_BYTES).expect("open the read model")
}

/// Returns a stream with two signing keys, several secrets and interleaved versions.
fn busy_stream() -> Stream {
    let mut stream = Stream::bootstrapped();
    for round in 0..4 {
        stream.add_version("db/password");
        stream.add_version(&format!("app {round}/token"));
        stream.add_version("ключ/é 🔑");
    }
    stream.certify(&stranger_key());
    stream.add_version_signed("db/password", &stranger_key());
    stream.add_version_signed("db/password", &signer_key());
    stream.add_version("a.b*>");
    stream
}

#[test]
fn redb_and_memory_states_agree() {
    let stream = busy_stream();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = open(&dir.path().join("model.redb"));

    // Uneven batch sizes, so that batch boundaries fall everywhere.
    let messages = stream.stored();
    let mut start = 0;
    for size in [1, 2, 3, 5, 8].into_iter().cycle() {
        let end = (start + size).min(messages.len());
        let outcome = model.apply_batch(&roots(), &messages[start..end]).expect("batch applies");
        assert_eq!(outcome.applied.len(), end - start);
        assert_eq!(outcome.last_applied_sequence, messages[end - 1].sequence);
        start = end;
        if start == messages.len() {
            break;
        }
    }

    let snapshot = model.snapshot().expect("snapshot");
    assert_eq!(snapshot, stream.memory_state());
    assert_eq!(snapshot.secrets.len(), 7);
    assert_eq!(snapshot.signing_keys.len(), 2);
    assert_eq!(model.last_applied().expect("last applied"), stream.messages.len() as u64);
}

#[test]
fn batch_skips_already_applied_messages() {
    let stream = busy_stream();
    let messages = stream.stored();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = open(&dir.path().join("model.redb"));

    model.apply_batch(&roots(), &messages[..5]).expect("first batch applies");
    let outcome = model.apply_batch(&roots(), &messages[..8]).expect("overlapping batch applies");
    assert_eq!(outcome.already_applied, 5);
    assert_eq!(outcome.applied.len(), 3);
    assert_eq!(outcome.applied[0].sequence, 6);
    assert_eq!(outcome.last_applied_sequence, 8);

    let before = model.snapshot().expect("snapshot");
    let outcome = model.apply_batch(&roots(), &messages[..8]).expect("repeated batch applies");
    assert_eq!(outcome.already_applied, 8);
    assert!(outcome.applied.is_empty());
    assert_eq!(outcome.last_applied_sequence, 8);
    assert_eq!(model.snapshot().expect("snapshot"), before);
}

#[test]
fn last_applied_sequence_survives_reopen() {
    let stream = busy_stream();
    let messages = stream.stored();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("model.redb");

    let snapshot = {
        let model = open(&path);
        model.apply_batch(&roots(), &messages[..10]).expect("batch applies");
        model.snapshot().expect("snapshot")
    };

    let model = open(&path);
    assert_eq!(model.last_applied().expect("last applied"), 10);
    assert_eq!(model.snapshot().expect("snapshot"), snapshot);

    // Resuming from the whole stream applies only what is new, on the persisted chains.
    let outcome = model.apply_batch(&roots(), &messages).expect("the rest applies");
    assert_eq!(outcome.already_applied, 10);
    assert_eq!(model.snapshot().expect("snapshot"), stream.memory_state());
}

#[test]
fn failed_batch_commits_nothing() {
    let mut stream = busy_stream();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = open(&dir.path().join("model.redb"));
    let committed = stream.messages.len();
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");
    let before = model.snapshot().expect("snapshot");

    // Two valid events, then one that skips an aggregate version.
    stream.add_version("db/password");
    stream.add_version("new secret");
    let mut gap = stream.next_version_event("db/password", &signer_key());
    gap.aggregate_version += 1;
    let gap_message = stream.seal_next(&gap, &signer_key());
    let mut batch = stream.stored()[committed..].to_vec();
    batch.push(gap_message.stored());

    let error = model.apply_batch(&roots(), &batch).expect_err("the third message fails");
    match error {
        ApplyError::Fold { sequence, source: FoldError::VersionGap { .. } } => {
            assert_eq!(sequence, gap_message.sequence);
        }
        other => panic!("expected a VersionGap, got {other}"),
    }
    assert_eq!(model.snapshot().expect("snapshot"), before);
    assert_eq!(model.last_applied().expect("last applied"), committed as u64);

    // The valid prefix still applies on its own afterwards.
    let outcome = model.apply_batch(&roots(), &batch[..2]).expect("the valid prefix applies");
    assert_eq!(outcome.applied.len(), 2);
    assert_eq!(model.snapshot().expect("snapshot"), stream.memory_state());
}

#[test]
fn reads_report_the_applied_sequence() {
    let stream = busy_stream();
    let dir = tempfile::tempdir().expect("temporary directory");
    let model = open(&dir.path().join("model.redb"));
    model.apply_batch(&roots(), &stream.stored()).expect("the stream applies");
    let last = stream.messages.len() as u64;

    let (secret, sequence) = model.secret("ключ/é 🔑").expect("read");
    assert_eq!(secret.expect("the secret exists").current.version, 4);
    assert_eq!(sequence, last);

    let (missing, sequence) = model.secret("missing").expect("read");
    assert!(missing.is_none());
    assert_eq!(sequence, last);

    let (secrets, sequence) = model.secrets().expect("read");
    let names: Vec<&str> = secrets.iter().map(|secret| secret.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "secrets are ordered by name");
    assert_eq!(names.len(), 7);
    assert_eq!(sequence, last);
}

#[test]
fn version_summaries_match_versions_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let model = open(&dir.path().join("model.redb"));
    let mut stream = Stream::bootstrapped();
    for _ in 0..3 {
        stream.add_version("db");
    }
    let stored: Vec<_> = stream.messages.iter().map(|m| m.stored()).collect();
    model.apply_batch(&common::roots(), &stored).unwrap();

    let (summaries, _) = model.version_summaries("db").unwrap();
    let (full, _) = model.read(|view| view.secret_versions("db")).unwrap();
    assert_eq!(summaries.len(), 3);
    for (summary, version) in summaries.iter().zip(&full) {
        assert!(summary.content.ciphertext.is_empty(), "no ciphertext is decoded");
        assert!(!version.content.ciphertext.is_empty());
        let without = watchword_events::fold::SecretVersion { content: summary.content.clone(), ..version.clone() };
        assert_eq!(summary, &without, "every other field is decoded");
    }
}
