//! Archives, queries, rebuild and diff through the `watchword-replay` binary,
//! offline: no NATS and no HSM.

mod common;

use std::path::{Path, PathBuf};

use common::history::{BASE_MICROS, Stream};
use common::{replay, root_hex, write_archive};
use serde_json::Value;
use watchword_events::body::KIND_CLIENT_DISABLED;
use watchword_replay::output::time;
use watchword_replay::source::Source;
use watchword_replay::{Check, SkipList, verify};

/// Builds a history where client web-1 reads secret db through group ops until
/// it is disabled:
///
/// | seq | event |
/// | --- | --- |
/// | 1 | signer certified |
/// | 2 | secret db v1 |
/// | 3 | group ops created |
/// | 4 | client web-1 created |
/// | 5 | web-1 joins ops |
/// | 6 | ops grant on db |
/// | 7 | checkpoint 1..=6 |
/// | 8 | secret db v2 |
/// | 9 | client web-1 disabled |
/// | 10 | checkpoint 7..=9 |
fn access_history() -> Stream {
    let mut stream = Stream::bootstrapped();
    stream.add_version("db");
    stream.create_group("ops");
    stream.create_client("web-1");
    stream.add_member("ops", "web-1");
    stream.add_grant("ops", "db");
    stream.checkpoint();
    stream.add_version("db");
    stream.client_event("web-1", KIND_CLIENT_DISABLED);
    stream.checkpoint();
    stream
}

/// Returns the recorded time of the event at `sequence` in the test writer's histories.
fn time_of(sequence: u64) -> String {
    time(BASE_MICROS + sequence as i64 * 1_000_000)
}

fn archive_of(dir: &Path, stream: &Stream) -> PathBuf {
    let path = dir.join("history.wwa");
    write_archive(&path, &stream.messages);
    path
}

fn stdout_json(output: &std::process::Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

fn rows_of<'a>(rows: &'a [Value], entity: &str) -> Vec<&'a Value> {
    rows.iter().filter(|row| row["entity"] == entity).collect()
}

#[test]
fn archive_verifies_offline_with_pin() {
    let dir = tempfile::tempdir().unwrap();
    let stream = access_history();
    let archive = archive_of(dir.path(), &stream);
    let pin = format!("10:{}", hex::encode(stream.messages[9].hash));

    let output = replay(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--root-key",
        &root_hex(),
        "--pin-checkpoint",
        &pin,
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("verified 10 events up to stream sequence 10"), "{stdout}");
    assert!(stdout.contains(&format!("--pin-checkpoint {pin}")), "{stdout}");
    assert!(!stdout.contains("not yet covered"), "{stdout}");
}

#[test]
fn truncated_archive_fails_pin() {
    let dir = tempfile::tempdir().unwrap();
    let stream = access_history();
    let pin = format!("10:{}", hex::encode(stream.messages[9].hash));
    // A consistent archive of the first 8 messages, as one rewritten after the fact.
    let archive = dir.path().join("short.wwa");
    write_archive(&archive, &stream.messages[..8]);

    let output = replay(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--root-key",
        &root_hex(),
        "--pin-checkpoint",
        &pin,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stream sequence 10 (check: pinned checkpoint)"), "{stderr}");

    let output = replay(&["verify", "--archive", archive.to_str().unwrap(), "--root-key", &root_hex()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "without the pin the prefix verifies");
    assert!(stdout.contains("not yet covered by a checkpoint: 1 events"), "{stdout}");
}

#[tokio::test]
async fn archive_without_manifest_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());
    let bytes = std::fs::read(&archive).unwrap();
    let cut = dir.path().join("cut.wwa");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();

    let error =
        verify::verify(&Source::Archive(cut), &common::history::roots(), None, &SkipList::default()).await.unwrap_err();
    assert_eq!(error.check(), Check::Decode, "{error}");
}

#[tokio::test]
async fn archive_with_changed_byte_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&archive, &bytes).unwrap();

    let error = verify::verify(&Source::Archive(archive), &common::history::roots(), None, &SkipList::default())
        .await
        .unwrap_err();
    assert_ne!(error.check(), Check::Source, "{error}");
}

#[test]
fn state_at_sequence_lists_entities() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());

    let rows =
        stdout_json(&replay(&["state", "--archive", archive.to_str().unwrap(), "--seq", "6", "--output", "json"]));
    let secrets = rows_of(&rows, "secret");
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["name"], "db");
    assert_eq!(secrets[0]["version"], "1");
    assert_eq!(rows_of(&rows, "group")[0]["name"], "ops");
    assert_eq!(rows_of(&rows, "membership")[0]["details"], "client web-1 is a member");
    assert_eq!(rows_of(&rows, "grant")[0]["details"], "may read secret db");
    assert!(rows_of(&rows, "client")[0]["details"].as_str().unwrap().starts_with("enabled"));
}

#[test]
fn state_at_time_stops_before_later_events() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());

    // Sequence 8 (db v2) is recorded at time_of(8): half a second earlier, only v1 exists.
    let at = time(BASE_MICROS + 7_500_000);
    let rows =
        stdout_json(&replay(&["state", "--archive", archive.to_str().unwrap(), "--at", &at, "--output", "json"]));
    assert_eq!(rows_of(&rows, "secret")[0]["version"], "1");
    assert_eq!(rows_of(&rows, "secret_version").len(), 1);

    let rows = stdout_json(&replay(&["state", "--archive", archive.to_str().unwrap(), "--output", "json"]));
    assert_eq!(rows_of(&rows, "secret")[0]["version"], "2");
    assert_eq!(rows_of(&rows, "secret_version").len(), 2);
    assert!(rows_of(&rows, "client")[0]["details"].as_str().unwrap().starts_with("disabled"));
}

#[test]
fn history_lists_versions_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());

    let output = replay(&["history", "db", "--archive", archive.to_str().unwrap(), "--output", "csv"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "sequence,recorded_at,kind,aggregate,actor,authentication,revision,details");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].starts_with(&format!("2,{},secret.version_added,secret db,operator:alice,mtls,1,", time_of(2))));
    assert!(lines[1].contains("version 1, size 5 bytes, mode 0440"), "{}", lines[1]);
    assert!(lines[2].starts_with("6,"), "{}", lines[2]);
    assert!(lines[2].contains("group.grant_added,group ops"), "{}", lines[2]);
    assert!(lines[3].starts_with("8,"), "{}", lines[3]);
    assert!(lines[3].contains("version 2"), "{}", lines[3]);
}

#[test]
fn access_follows_membership_grant_and_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());
    let archive = archive.to_str().unwrap();

    let rows = stdout_json(&replay(&[
        "access",
        "--secret",
        "db",
        "--at",
        &time_of(8),
        "--archive",
        archive,
        "--output",
        "json",
    ]));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["client"], "web-1");
    assert_eq!(rows[0]["group"], "ops");
    assert_eq!(rows[0]["readable"], "yes");
    assert_eq!(rows[0]["grant"], "group ops grants secret db");

    let rows = stdout_json(&replay(&[
        "access",
        "--secret",
        "db",
        "--at",
        &time_of(9),
        "--archive",
        archive,
        "--output",
        "json",
    ]));
    assert_eq!(rows[0]["readable"], "no");
    assert_eq!(rows[0]["reason"], "the client is disabled");

    let rows = stdout_json(&replay(&[
        "access",
        "--secret",
        "db",
        "--at",
        &time_of(5),
        "--archive",
        archive,
        "--output",
        "json",
    ]));
    assert!(rows.is_empty(), "no grant yet at sequence 5: {rows:?}");
}

#[test]
fn rebuilt_models_compare_equal_and_differ() {
    let dir = tempfile::tempdir().unwrap();
    let stream = access_history();
    let archive = archive_of(dir.path(), &stream);
    let short = dir.path().join("short.wwa");
    write_archive(&short, &stream.messages[..7]);

    let first = dir.path().join("first.redb");
    let second = dir.path().join("second.redb");
    let partial = dir.path().join("partial.redb");
    for (source, out) in [(&archive, &first), (&archive, &second), (&short, &partial)] {
        let output = replay(&["rebuild", "--archive", source.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    let output = replay(&["diff", first.to_str().unwrap(), second.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));

    let output = replay(&["diff", first.to_str().unwrap(), partial.to_str().unwrap(), "--output", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let has = |table: &str, key: &str, field: &str| {
        rows.iter().any(|r| r["table"] == table && r["key"] == key && r["field"] == field)
    };
    assert!(has("meta", "last_applied_sequence", ""), "{rows:?}");
    assert!(has("secrets", "db", "current.version"), "{rows:?}");
    assert!(has("clients", "web-1", "enabled"), "{rows:?}");
    assert!(has("secret_versions", "db v2", ""), "{rows:?}");
    assert!(has("aggregate_heads", "checkpoint stream", "version"), "{rows:?}");
}

#[test]
fn rebuild_refuses_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let archive = archive_of(dir.path(), &access_history());
    let out = dir.path().join("model.redb");
    std::fs::write(&out, b"keep me").unwrap();
    let output = replay(&["rebuild", "--archive", archive.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}
