//! `watchword-replay verify` against a real nats-server holding crafted histories.

mod common;

use std::process::Command;

use common::{Nats, publish, start_nats};

use ed25519_dalek::SigningKey;
use watchword_events::body::{
    DataKeyRef, KIND_SECRET_VERSION_ADDED, KIND_SIGNING_KEY_CERTIFIED, SealedContent, SecretVersionAdded,
    SigningKeyCertified, encode_body,
};
use watchword_events::verify::{key_id, sign};
use watchword_events::{Actor, Aggregate, Event, EventHash, Frame, ZERO_HASH};

/// Builds a signed history: a certification by the root key, then versions of one secret.
struct History {
    root: SigningKey,
    signer: SigningKey,
    frames: Vec<(String, Vec<u8>)>,
    last_hash: EventHash,
}

impl History {
    fn new() -> History {
        let root = SigningKey::from_bytes(&[1; 32]);
        let signer = SigningKey::from_bytes(&[2; 32]);
        let mut history = History { root, signer, frames: Vec::new(), last_hash: ZERO_HASH };
        let public_key = history.signer.verifying_key().to_bytes();
        let body = SigningKeyCertified { algorithm: "ed25519".to_owned(), public_key };
        let event = event(
            Aggregate::signing_key(&key_id(&public_key)),
            KIND_SIGNING_KEY_CERTIFIED,
            1,
            ZERO_HASH,
            &key_id(&history.root.verifying_key().to_bytes()),
            encode_body(&body),
        );
        history.push(&event, &history.root.clone());
        history
    }

    fn add_version(&mut self, version: u64) {
        let body = SecretVersionAdded {
            version,
            content: SealedContent { nonce: [0; 12], ciphertext: vec![9; 20] },
            data_key: DataKeyRef {
                kek_id: "kek".to_owned(),
                store_key: format!("k{version}"),
                wrapped_sha256: [3; 32],
            },
            size: 4,
            mode: None,
        };
        let signer_id = key_id(&self.signer.verifying_key().to_bytes());
        let event = event(
            Aggregate::secret("db"),
            KIND_SECRET_VERSION_ADDED,
            version,
            self.last_hash,
            &signer_id,
            encode_body(&body),
        );
        self.push(&event, &self.signer.clone());
    }

    fn push(&mut self, event: &Event, key: &SigningKey) {
        let frame: Frame = sign(event, key);
        if event.aggregate.kind == watchword_events::AggregateType::Secret {
            self.last_hash = frame.hash();
        }
        self.frames.push((event.aggregate.subject(), frame.encode()));
    }

    fn root_hex(&self) -> String {
        hex::encode(self.root.verifying_key().to_bytes())
    }
}

fn event(
    aggregate: Aggregate,
    kind: &str,
    version: u64,
    previous_hash: EventHash,
    key_id: &str,
    body: Vec<u8>,
) -> Event {
    Event {
        id: uuid::Uuid::from_u128(u128::from(version)),
        kind: kind.to_owned(),
        aggregate,
        aggregate_version: version,
        previous_hash,
        recorded_at_micros: 1_700_000_000_000_000,
        actor: Actor { principal: "test".to_owned(), authentication: "mtls".to_owned() },
        correlation_id: "c".to_owned(),
        key_id: key_id.to_owned(),
        body,
    }
}

fn replay(nats: &Nats, root_hex: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_watchword-replay"))
        .args(["verify", "--nats", &nats.url, "--root-key", root_hex])
        .output()
        .expect("run watchword-replay")
}

#[tokio::test]
async fn intact_history_verifies() {
    let nats = start_nats();
    let mut history = History::new();
    for version in 1..=3 {
        history.add_version(version);
    }
    publish(&nats, &history.frames).await;

    let output = replay(&nats, &history.root_hex());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("verified 4 events up to stream sequence 4"), "{stdout}");
}

#[tokio::test]
async fn flipped_byte_names_its_sequence() {
    let nats = start_nats();
    let mut history = History::new();
    history.add_version(1);
    history.add_version(2);
    let payload = &mut history.frames[2].1;
    let middle = payload.len() / 2;
    payload[middle] ^= 0x01;
    publish(&nats, &history.frames).await;

    let output = replay(&nats, &history.root_hex());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stream sequence 3"), "{stderr}");
}

#[tokio::test]
async fn deleted_event_detected_as_missing_sequence() {
    let nats = start_nats();
    let mut history = History::new();
    for version in 1..=3 {
        history.add_version(version);
    }
    let stream = publish(&nats, &history.frames).await;
    assert!(stream.delete_message(3).await.unwrap());

    let output = replay(&nats, &history.root_hex());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sequence 3 is missing"), "{stderr}");
}

#[tokio::test]
async fn other_root_key_rejects_history() {
    let nats = start_nats();
    let mut history = History::new();
    history.add_version(1);
    publish(&nats, &history.frames).await;

    let other = hex::encode(SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes());
    let output = replay(&nats, &other);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stream sequence 1"), "{stderr}");
    assert!(stderr.contains("root key"), "{stderr}");
}

#[test]
fn malformed_root_key_is_a_usage_error() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_watchword-replay")).args(["verify", "--root-key", "abc"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not hexadecimal"));
}

/// Returns the stored messages of a history with two checkpoints, the last one last.
fn checkpointed_history() -> common::history::Stream {
    let mut stream = common::history::Stream::bootstrapped();
    stream.add_version("db");
    stream.create_group("ops");
    stream.add_grant("ops", "db");
    stream.checkpoint();
    stream.add_version("db");
    stream.checkpoint();
    stream
}

fn subjects_and_payloads(stream: &common::history::Stream) -> Vec<(String, Vec<u8>)> {
    stream.messages.iter().map(|m| (m.subject.clone(), m.payload.clone())).collect()
}

#[tokio::test]
async fn live_stream_checkpoints_verify_and_export() {
    let nats = start_nats();
    let stream = checkpointed_history();
    publish(&nats, &subjects_and_payloads(&stream)).await;
    let pin = format!("7:{}", hex::encode(stream.messages[6].hash));
    let root = common::root_hex();

    let output = common::replay(&["verify", "--nats", &nats.url, "--root-key", &root, "--pin-checkpoint", &pin]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("2 checkpoints"), "{stdout}");
    assert!(stdout.contains(&format!("pin it with --pin-checkpoint {pin}")), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("export.wwa");
    let archive_arg = archive.to_str().unwrap();
    let output = common::replay(&["export", "--nats", &nats.url, "--out", archive_arg, "--root-key", &root]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("exported 7 messages (sequences 1..=7)"), "{stdout}");
    assert!(stdout.contains(&format!("ends with checkpoint {pin}")), "{stdout}");

    // Offline, the archive verifies against the same pin and serves a query.
    drop(nats);
    let output = common::replay(&["verify", "--archive", archive_arg, "--root-key", &root, "--pin-checkpoint", &pin]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = common::replay(&["state", "--archive", archive_arg, "--output", "csv"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\r\nsecret,db,2,2,"), "{stdout}");
}

#[tokio::test]
async fn export_without_covering_checkpoint_fails() {
    let nats = start_nats();
    let mut stream = checkpointed_history();
    stream.add_version("db");
    publish(&nats, &subjects_and_payloads(&stream)).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("export.wwa");

    let args = ["export", "--nats", &nats.url, "--out", archive.to_str().unwrap(), "--wait-secs", "0"];
    let output = common::replay(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no checkpoint covered stream sequence 8"), "{stderr}");
    assert!(!archive.exists());

    let output = common::replay(&[&args[..], &["--allow-uncovered"]].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = common::replay(&["verify", "--archive", archive.to_str().unwrap(), "--root-key", &common::root_hex()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("not yet covered by a checkpoint: 1 events"), "{stdout}");
}
