//! Helpers shared by the replay tool's integration tests: the events crate's
//! signing test writer, archives written from its messages, the binary, and a
//! real nats-server on a random loopback port.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

#[path = "../../../events/tests/common/mod.rs"]
pub mod history;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use history::{BASE_MICROS, Message, root_key};
use watchword_replay::archive::{ArchiveWriter, Header, Manifest};

/// Writes `messages` as an archive whose header records the test root key.
pub fn write_archive(path: &Path, messages: &[Message]) -> Manifest {
    let header = Header::new("WATCHWORD_EVENTS", BASE_MICROS, &[root_key().verifying_key().to_bytes()]);
    let mut writer = ArchiveWriter::create(path, &header).expect("create the archive");
    for message in messages {
        writer.write_message(message.sequence, &message.subject, &message.payload).expect("write a message");
    }
    let last_checkpoint = messages
        .iter()
        .rev()
        .find(|m| m.subject == watchword_events::Aggregate::checkpoint().subject())
        .map(|m| (m.sequence, m.hash));
    writer.finish(last_checkpoint).expect("finish the archive")
}

/// Returns the test root public key in hex, as `--root-key` takes it.
pub fn root_hex() -> String {
    hex::encode(root_key().verifying_key().to_bytes())
}

/// Runs `watchword-replay` with `args`.
pub fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchword-replay")).args(args).output().expect("run watchword-replay")
}

/// A nats-server with JetStream on a random loopback port, killed on drop.
pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_nats() -> Nats {
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

/// Creates the event stream on `nats` and publishes `messages` in order.
pub async fn publish(nats: &Nats, messages: &[(String, Vec<u8>)]) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(&nats.url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "WATCHWORD_EVENTS".to_owned(),
            subjects: vec!["watchword.ev.>".to_owned()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for (subject, payload) in messages {
        jetstream.publish(subject.clone(), payload.clone().into()).await.unwrap().await.unwrap();
    }
    stream
}
