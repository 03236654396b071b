//! The auditor's path against the real server: its checkpoints verify from the live
//! stream and from an export, and a read model rebuilt from the export equals the
//! server's own.

mod common;

use std::time::Duration;

use common::stack::{Stack, eventually};
use watchword::client::PutOptions;
use watchword_events::verify::RootKeys;
use watchword_replay::export::{ExportRequest, export};
use watchword_replay::model::{diff, rebuild};
use watchword_replay::source::Source;
use watchword_replay::verify::verify;
use watchword_replay::{Check, Pin, SkipList};

#[tokio::test]
async fn server_history_verifies_exports_and_rebuilds() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    for name in ["app/db", "app/api", "app/db"] {
        operator.put_secret(name, b"not logged".to_vec(), &PutOptions::default()).await.unwrap();
    }
    let root_key = stack.root_public_key();
    let roots = RootKeys::new(&[root_key]).unwrap();
    let live = Source::Nats { url: stack.nats_url.clone(), stream: "WATCHWORD_EVENTS".to_owned() };

    // The server checkpoints every write within its checkpoint interval (1 s).
    let report = eventually("a checkpoint covering every write", async || {
        let report = verify(&live, &roots, None, &SkipList::default()).await.expect("the live history verifies");
        (report.checkpoints > 0 && report.uncovered() == 0).then_some(report)
    })
    .await;
    let checkpoint = report.last_checkpoint.clone().unwrap();
    assert_eq!(checkpoint.sequence, report.last_sequence, "the checkpoint is the last event");
    assert_eq!(report.state.secrets["app/db"].current.version, 2);
    let pin = Pin { sequence: checkpoint.sequence, hash: checkpoint.hash };

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("audit.wwa");
    let request = ExportRequest {
        url: &stack.nats_url,
        stream: "WATCHWORD_EVENTS",
        out: &archive,
        root_keys: &[root_key],
        wait: Duration::from_secs(10),
        allow_uncovered: false,
        skips: &SkipList::default(),
    };
    let manifest = export(&request).await.unwrap();
    assert_eq!(manifest.last_checkpoint_sequence, checkpoint.sequence);

    let offline = Source::Archive(archive.clone());
    let archived = verify(&offline, &roots, Some(pin), &SkipList::default()).await.unwrap();
    assert_eq!(archived.last_sequence, report.last_sequence);

    // Another root key trusts nothing in the server's history.
    let stranger = RootKeys::new(&[[7; 32]]).unwrap_or_default();
    let error = verify(&offline, &stranger, None, &SkipList::default()).await.unwrap_err();
    assert_eq!((error.check(), error.sequence()), (Check::Signature, Some(1)), "{error}");

    // Once the projector has applied the checkpoint, the server's read model
    // equals one rebuilt from the archive.
    eventually("the projector to reach the checkpoint", async || {
        let status = operator.status().await.ok()?;
        (status.applied_sequence >= checkpoint.sequence).then_some(())
    })
    .await;
    stack.terminate_server();
    let live_copy = dir.path().join("live.redb");
    std::fs::copy(stack.data_dir().join("test.redb"), &live_copy).unwrap();
    let rebuilt = dir.path().join("rebuilt.redb");
    assert_eq!(rebuild(&offline, &roots, &SkipList::default(), &rebuilt).await.unwrap(), checkpoint.sequence);
    let differences = diff(&live_copy, &rebuilt).unwrap();
    assert!(differences.rows.is_empty(), "{:?}", differences.rows);
}

/// A second `watchword serve` on the stack's stream, HSM token and certificates,
/// with a read model of its own; killed on drop.
struct SecondNode(std::process::Child);

impl SecondNode {
    fn start(stack: &Stack) -> SecondNode {
        let config = std::fs::read_to_string(stack.server_config()).unwrap();
        let listen = config.lines().find(|line| line.starts_with("listen = ")).unwrap();
        let config =
            config.replace(listen, "listen = \"127.0.0.1:0\"").replace("data_dir = \"data\"", "data_dir = \"data2\"");
        let path = stack.dir.path().join("server2.toml");
        std::fs::write(&path, config).unwrap();
        let ready = stack.dir.path().join("server2.ready");
        let log = std::fs::File::create(stack.dir.path().join("server2.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_watchword"))
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--ready-file")
            .arg(&ready)
            .env("SOFTHSM2_CONF", &stack.token.conf)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn a second watchword serve");
        let node = SecondNode(child);
        let start = std::time::Instant::now();
        while std::fs::read_to_string(&ready).map_or(true, |text| text.trim().is_empty()) {
            assert!(start.elapsed() < common::stack::WAIT, "the second server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn two_nodes_write_one_checkpoint_chain() {
    // Checkpoints every 10 ms or every 3 events make the two nodes race for ranges.
    let projector = "batch_size = 1000\n[checkpoint]\ninterval_ms = 10\nmax_events = 3";
    let stack = Stack::start_with(r#"operators = ["spiffe://watchword.dev/operator"]"#, projector).await;
    let _second = SecondNode::start(&stack);
    let operator = stack.client("operator");
    for i in 0..30 {
        operator.put_secret(&format!("app/s{i}"), b"x".to_vec(), &PutOptions::default()).await.unwrap();
    }

    // Both nodes ran the checkpoint task over the same writes. A second checkpoint
    // for a range would restart that range, which verification rejects.
    let roots = RootKeys::new(&[stack.root_public_key()]).unwrap();
    let live = Source::Nats { url: stack.nats_url.clone(), stream: "WATCHWORD_EVENTS".to_owned() };
    let report = eventually("checkpoints covering every write", async || {
        let report = verify(&live, &roots, None, &SkipList::default()).await.expect("the live history verifies");
        (report.uncovered() == 0).then_some(report)
    })
    .await;
    assert_eq!(report.state.signing_keys.len(), 2, "each node certified its own key");
    assert!(report.checkpoints >= 10, "30 writes at most 3 per checkpoint: {}", report.checkpoints);
}
