//! A server killed with SIGKILL during projection resumes without losing or
//! repeating an event.

mod common;

use std::time::Duration;

use common::stack::{Stack, eventually};
use futures::StreamExt;
use watchword::client::PutOptions;
use watchword_events::readmodel::ReadModel;

const SECRETS: usize = 40;
const VERSIONS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_projection_applies_each_event_once() {
    let mut stack = Stack::start_with(r#"operators = ["spiffe://watchword.dev/operator"]"#, "batch_size = 3").await;
    let operator = stack.client("operator");

    // Each secret gets VERSIONS versions, written by one task per secret.
    let writes = futures::stream::iter(0..SECRETS)
        .map(|i| {
            let client = operator.clone();
            async move {
                for v in 0..VERSIONS {
                    client
                        .put_secret(&format!("s{i}"), format!("{v}").into_bytes(), &PutOptions::default())
                        .await
                        .unwrap();
                }
            }
        })
        .buffer_unordered(SECRETS);
    writes.collect::<Vec<()>>().await;
    let total = (SECRETS * VERSIONS) as u64 + 1;

    // Rebuild from an empty read model, and kill the server while it projects.
    let mut killed_mid_way = 0;
    for _ in 0..5 {
        stack.kill_server();
        std::fs::remove_file(stack.data_dir().join("test.redb")).unwrap();
        stack.start_server();
        let status = stack.client("operator");
        let applied = eventually("projection to start", async || {
            let applied = status.status().await.ok()?.applied_sequence;
            (applied > 0).then_some(applied)
        })
        .await;
        stack.kill_server();
        if applied < total {
            killed_mid_way += 1;
            // Resume from what the killed server committed.
            stack.start_server();
            tokio::time::sleep(Duration::from_millis(50)).await;
            stack.kill_server();
            break;
        }
    }
    assert!(killed_mid_way > 0, "the server was never killed before the projection finished");

    stack.start_server();
    // Checkpoints add events of their own, so the target is the stream's last
    // sequence once this server has certified its signing key.
    let last = stream_last_sequence(&stack.nats_url).await;
    assert!(last >= total + 3, "the writes and three certifications are in the stream");
    let client = stack.client("operator");
    let status = eventually("projection to finish", async || {
        let status = client.status().await.ok()?;
        (status.applied_sequence >= last || status.projection != "running").then_some(status)
    })
    .await;
    assert_eq!(status.projection, "running", "the projection never failed on a repeated event");

    let list = client.list_secrets(None).await.unwrap();
    assert_eq!(list.secrets.len(), SECRETS);
    for secret in &list.secrets {
        assert_eq!(secret.version, VERSIONS as u64, "{}", secret.name);
    }

    // The persisted read model equals a fresh fold of the stream.
    stack.kill_server();
    let model = ReadModel::open(&stack.data_dir().join("test.redb"), 1 << 20).unwrap();
    let snapshot = model.snapshot().unwrap();
    assert_eq!(snapshot.secrets.len(), SECRETS);
    assert_eq!(snapshot.signing_keys.len(), 1 + killed_mid_way + 1 + 1);
}

async fn stream_last_sequence(nats_url: &str) -> u64 {
    let client = async_nats::connect(nats_url).await.unwrap();
    let mut stream = async_nats::jetstream::new(client).get_stream("WATCHWORD_EVENTS").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}
