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
use watchword_replay::{Check, Pin};

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
        let report = verify(&live, &roots, None).await.expect("the live history verifies");
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
    };
    let manifest = export(&request).await.unwrap();
    assert_eq!(manifest.last_checkpoint_sequence, checkpoint.sequence);

    let offline = Source::Archive(archive.clone());
    let archived = verify(&offline, &roots, Some(pin)).await.unwrap();
    assert_eq!(archived.last_sequence, report.last_sequence);

    // Another root key trusts nothing in the server's history.
    let stranger = RootKeys::new(&[[7; 32]]).unwrap_or_default();
    let error = verify(&offline, &stranger, None).await.unwrap_err();
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
    assert_eq!(rebuild(&offline, &roots, &rebuilt).await.unwrap(), checkpoint.sequence);
    let differences = diff(&live_copy, &rebuilt).unwrap();
    assert!(differences.rows.is_empty(), "{:?}", differences.rows);
}
