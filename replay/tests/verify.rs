//! `watchword-replay verify` against a real nats-server holding crafted histories.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use watchword_events::body::{
    DataKeyRef, KIND_SECRET_VERSION_ADDED, KIND_SIGNING_KEY_CERTIFIED, SealedContent, SecretVersionAdded,
    SigningKeyCertified, encode_body,
};
use watchword_events::verify::{key_id, sign};
use watchword_events::{Actor, Aggregate, Event, EventHash, Frame, ZERO_HASH};

struct Nats {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nats() -> Nats {
    let dir = tempfile::tempdir().unwrap();
    let server = if Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" };
    let child = Command::new(server)
        .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
        .arg(dir.path().join("store"))
        .arg("--ports_file_dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
    let start = Instant::now();
    let text = loop {
        match std::fs::read_to_string(&ports) {
            Ok(text) if !text.is_empty() => break text,
            _ => {
                assert!(start.elapsed() < Duration::from_secs(20), "nats-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    Nats { child, url: json["nats"][0].as_str().unwrap().to_owned(), _dir: dir }
}

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

async fn publish(nats: &Nats, frames: &[(String, Vec<u8>)]) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(&nats.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "WATCHWORD_EVENTS".to_owned(),
            subjects: vec!["watchword.ev.>".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    for (subject, payload) in frames {
        jetstream.publish(subject.clone(), payload.clone().into()).await.unwrap().await.unwrap();
    }
    stream
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
