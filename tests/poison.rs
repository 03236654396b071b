//! A message on the event stream that is not a valid event stops the projection;
//! changes are refused until an operator skips it.

mod common;

use common::stack::{Stack, eventually};
use watchword::client::{ClientError, PutOptions};

#[tokio::test]
async fn garbage_message_stops_writes_until_skipped() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("before", b"x".to_vec(), &PutOptions::default()).await.unwrap();

    let client = async_nats::connect(&stack.nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let ack = jetstream.publish("watchword.ev.secret.garbage", "not an event".into()).await.unwrap().await.unwrap();

    let status = eventually("the projection to stop", async || {
        let status = operator.status().await.ok()?;
        status.projection.starts_with("stopped").then_some(status)
    })
    .await;
    assert!(status.projection.contains(&format!("stream sequence {}", ack.sequence)), "{}", status.projection);
    let refused = operator.put_secret("after", b"y".to_vec(), &PutOptions::default()).await;
    assert!(
        matches!(&refused, Err(ClientError::Api { status: 503, code, .. }) if code == "projection_stopped"),
        "{refused:?}"
    );

    // The operator confirms the message is not an event and skips it.
    stack.kill_server();
    let config = std::fs::read_to_string(stack.server_config()).unwrap();
    let config = config.replace("[projector]\n", &format!("[projector]\nskip_sequences = [{}]\n", ack.sequence));
    std::fs::write(stack.server_config(), config).unwrap();
    stack.start_server();

    let operator = stack.client("operator");
    let written = operator.put_secret("after", b"y".to_vec(), &PutOptions::default()).await.unwrap();
    assert_eq!(operator.get_secret("after", Some(written.sequence)).await.unwrap().content.as_slice(), b"y");
    assert_eq!(operator.status().await.unwrap().projection, "running");
}
