//! A message on the event stream that is not a valid event stops the projection;
//! changes are refused until an operator skips it. Checkpoints cover it by its
//! bytes, and an auditor verifies the history by skipping it too.

mod common;

use std::time::Duration;

use common::stack::{Stack, eventually};
use watchword::client::{ApiClient, ClientError, PutOptions};
use watchword_events::verify::RootKeys;
use watchword_replay::export::{ExportRequest, export};
use watchword_replay::source::Source;
use watchword_replay::verify::verify;
use watchword_replay::{Check, SkipList};

/// Publishes bytes that are not an event on an event subject, as anyone allowed
/// to publish there could, and returns their stream sequence.
async fn publish_garbage(stack: &Stack) -> u64 {
    let client = async_nats::connect(&stack.nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream.publish("watchword.ev.secret.garbage", "not an event".into()).await.unwrap().await.unwrap();
    ack.sequence
}

/// Waits until the projection stops at `sequence`.
async fn wait_until_stopped(operator: &ApiClient, sequence: u64) {
    let status = eventually("the projection to stop", async || {
        let status = operator.status().await.ok()?;
        status.projection.starts_with("stopped").then_some(status)
    })
    .await;
    assert!(status.projection.contains(&format!("stream sequence {sequence}")), "{}", status.projection);
}

/// Restarts the server with `sequence` in `projector.skip_sequences`, as the
/// operator does after confirming that the message there is not an event.
fn restart_skipping(stack: &mut Stack, sequence: u64) {
    stack.kill_server();
    let config = std::fs::read_to_string(stack.server_config()).unwrap();
    let config = config.replace("[projector]\n", &format!("[projector]\nskip_sequences = [{sequence}]\n"));
    std::fs::write(stack.server_config(), config).unwrap();
    stack.start_server();
}

#[tokio::test]
async fn garbage_message_stops_writes_until_skipped() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("before", b"x".to_vec(), &PutOptions::default()).await.unwrap();

    let garbage = publish_garbage(&stack).await;
    wait_until_stopped(&operator, garbage).await;
    let refused = operator.put_secret("after", b"y".to_vec(), &PutOptions::default()).await;
    assert!(
        matches!(&refused, Err(ClientError::Api { status: 503, code, .. }) if code == "projection_stopped"),
        "{refused:?}"
    );

    restart_skipping(&mut stack, garbage);
    let operator = stack.client("operator");
    let written = operator.put_secret("after", b"y".to_vec(), &PutOptions::default()).await.unwrap();
    assert_eq!(operator.get_secret("after", Some(written.sequence)).await.unwrap().content.as_slice(), b"y");
    assert_eq!(operator.status().await.unwrap().projection, "running");
}

#[tokio::test]
async fn skipped_garbage_is_checkpointed_and_verifies() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("before", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let garbage = publish_garbage(&stack).await;
    wait_until_stopped(&operator, garbage).await;
    restart_skipping(&mut stack, garbage);
    let operator = stack.client("operator");
    let written = operator.put_secret("after", b"y".to_vec(), &PutOptions::default()).await.unwrap();
    assert!(written.sequence > garbage);

    let roots = RootKeys::new(&[stack.root_public_key()]).unwrap();
    let live = Source::Nats { url: stack.nats_url.clone(), stream: "WATCHWORD_EVENTS".to_owned() };
    let skips = SkipList::new([garbage]);
    let report = eventually("a checkpoint covering the write after the garbage", async || {
        let report = verify(&live, &roots, None, &skips).await.expect("the live history verifies with the skip");
        let covered = report.last_checkpoint.as_ref().is_some_and(|c| c.body.last_sequence >= written.sequence);
        covered.then_some(report)
    })
    .await;
    assert_eq!(report.skipped, vec![garbage]);
    assert_eq!(report.state.secrets["after"].current.version, 1);
    let log = stack.server_log();
    assert!(log.contains("checkpoint covers a stream message that is not an event"), "{log}");

    let error = verify(&live, &roots, None, &SkipList::default()).await.unwrap_err();
    assert_eq!((error.check(), error.sequence()), (Check::Decode, Some(garbage)), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("audit.wwa");
    let request = ExportRequest {
        url: &stack.nats_url,
        stream: "WATCHWORD_EVENTS",
        out: &archive,
        root_keys: &[stack.root_public_key()],
        wait: Duration::from_secs(10),
        allow_uncovered: false,
        skips: &skips,
    };
    let manifest = export(&request).await.unwrap();
    let archived = verify(&Source::Archive(archive), &roots, None, &SkipList::default()).await.unwrap();
    assert_eq!(archived.skipped, vec![garbage], "the archive records the skip");
    assert_eq!(archived.last_sequence, manifest.last_sequence);
    assert_eq!(archived.uncovered(), 0);
}
