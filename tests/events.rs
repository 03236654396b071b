//! What lands in the stream and on disk: signed events, and no plaintext.

mod common;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use common::stack::Stack;
use futures::StreamExt;
use watchword::client::PutOptions;
use watchword_events::fold::MemoryState;
use watchword_events::fold::apply_message;
use watchword_events::verify::RootKeys;

/// Reads every message of the event stream.
async fn stream_messages(stack: &Stack) -> Vec<(String, Vec<u8>, u64)> {
    let client = async_nats::connect(&stack.nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("WATCHWORD_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let consumer = stream
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut all = Vec::new();
    while all.last().is_none_or(|m: &(String, Vec<u8>, u64)| m.2 < last) {
        let message = messages.next().await.unwrap().unwrap();
        let sequence = message.info().unwrap().stream_sequence;
        all.push((message.subject.to_string(), message.payload.to_vec(), sequence));
    }
    all
}

#[tokio::test]
async fn stored_events_verify_against_hsm_root_key() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    for i in 0..3 {
        operator.put_secret("db/password", format!("v{i}").into_bytes(), &PutOptions::default()).await.unwrap();
    }
    operator.put_secret("tls key", b"k".to_vec(), &PutOptions::default()).await.unwrap();

    let roots = RootKeys::new(&[stack.root_public_key()]).unwrap();
    let mut state = MemoryState::default();
    let messages = stream_messages(&stack).await;
    assert_eq!(messages.len(), 5, "one certification and four writes");
    for (subject, payload, sequence) in &messages {
        apply_message(&mut state, &roots, subject, payload, *sequence).unwrap();
    }
    assert_eq!(state.secrets["db/password"].current.version, 3);
    assert_eq!(state.signing_keys.len(), 1);
}

#[tokio::test]
async fn events_fail_against_another_root_key() {
    let stack = Stack::start().await;
    stack.client("operator").put_secret("x", b"x".to_vec(), &PutOptions::default()).await.unwrap();

    let other_root = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
    let roots = RootKeys::new(&[other_root]).unwrap();
    let mut state = MemoryState::default();
    let (subject, payload, sequence) = &stream_messages(&stack).await[0];
    assert!(apply_message(&mut state, &roots, subject, payload, *sequence).is_err());
}

#[tokio::test]
async fn no_plaintext_in_stream_or_read_model_files() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let marker = b"PLAINTEXT-MARKER-3f9c2a71-must-never-be-stored".to_vec();
    let written = operator.put_secret("marker", marker.clone(), &PutOptions::default()).await.unwrap();
    operator.get_secret("marker", Some(written.sequence)).await.unwrap();

    let mut files = Vec::new();
    for root in [stack.nats_store(), stack.data_dir()] {
        collect_files(&root, &mut files);
    }
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "redb")), "the read model file exists");
    assert!(files.len() > 2, "the stream files exist");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_slice()), "plaintext found in {}", file.display());
    }
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}
