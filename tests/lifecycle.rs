//! The secret lifecycle against the real stack: metadata, file names, deletion and
//! restoration, incarnations, rollback, destruction, expiry and limits.

mod common;

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use common::stack::{Stack, eventually};
use reqwest::Method;
use sha2::{Digest, Sha256};
use watchword::client::{ApiClient, ClientError, Conditions, PutOptions};
use watchword_events::body::{SecretVersionAddedV2, decode_body};
use watchword_events::{Event, Frame};

fn status(error: &ClientError) -> (u16, &str) {
    match error {
        ClientError::Api { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected an API error, got {other}"),
    }
}

fn none() -> Conditions {
    Conditions::default()
}

async fn put(client: &ApiClient, name: &str, content: &[u8]) -> watchword::client::WriteResponse {
    client.put_secret(name, content.to_vec(), &PutOptions::default()).await.unwrap()
}

async fn file_holds(path: &Path, expected: &[u8]) {
    eventually(&format!("{} to hold the expected content", path.display()), async || {
        (std::fs::read(path).ok()? == expected).then_some(())
    })
    .await;
}

async fn file_gone(path: &Path) {
    eventually(&format!("{} to be removed", path.display()), async || (!path.exists()).then_some(())).await;
}

/// Reads the body of the version event stored at `sequence`.
async fn version_body(stack: &Stack, sequence: u64) -> SecretVersionAddedV2 {
    let nats = async_nats::connect(&stack.nats_url).await.unwrap();
    let stream = jetstream::new(nats).get_stream("WATCHWORD_EVENTS").await.unwrap();
    let message = stream.get_raw_message(sequence).await.unwrap();
    let frame = Frame::decode(&message.payload).unwrap();
    let event = Event::from_signed_bytes(&frame.signed).unwrap();
    decode_body(&event.body).unwrap()
}

/// Returns every wrapped data key left in the data-key store.
async fn stored_data_keys(stack: &Stack) -> Vec<Vec<u8>> {
    use futures::StreamExt;
    let nats = async_nats::connect(&stack.nats_url).await.unwrap();
    let stream = jetstream::new(nats).get_stream("WATCHWORD_DATA_KEYS").await.unwrap();
    let mut stream = stream;
    let last = stream.info().await.unwrap().state.last_sequence;
    let consumer =
        stream.create_consumer(jetstream::consumer::pull::OrderedConfig { ..Default::default() }).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut keys = Vec::new();
    if stream.info().await.unwrap().state.messages == 0 {
        return keys;
    }
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let sequence = message.info().unwrap().stream_sequence;
        keys.push(message.payload.to_vec());
        if sequence >= last {
            break;
        }
    }
    keys
}

#[tokio::test]
async fn metadata_is_recorded_and_shown() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let options = PutOptions {
        owner_group: Some("web".to_owned()),
        description: Some("primary database".to_owned()),
        mode: Some("0440".to_owned()),
        ..Default::default()
    };
    operator.put_secret("app/db", b"pw".to_vec(), &options).await.unwrap();
    let output = stack.cli("operator", &["secret", "set-metadata", "app/db", "--label", "team=payments"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let shown = operator.get_metadata("app/db").await.unwrap();
    assert_eq!(shown.metadata.owner_group.as_deref(), Some("web"));
    assert_eq!(shown.metadata.description, "primary database");
    assert_eq!(shown.metadata.mode.as_deref(), Some("0440"));
    assert_eq!(shown.metadata.labels["team"], "payments");
    assert_eq!(shown.version, 1, "metadata changes add no version");

    let writable = PutOptions { mode: Some("0666".to_owned()), ..Default::default() };
    let error = operator.put_secret("app/db", b"pw".to_vec(), &writable).await.unwrap_err();
    assert_eq!(status(&error), (400, "invalid_request"), "{error}");
    let output = stack.cli("operator", &["secret", "set-metadata", "app/db", "--label=-bad=x"], b"");
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("label key \"-bad\""), "{stderr}");
}

#[tokio::test]
async fn file_names_are_unique_across_secrets() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let shared = PutOptions { file_name: Some("shared.env".to_owned()), ..Default::default() };
    operator.put_secret("app/first", b"one".to_vec(), &shared).await.unwrap();

    let error = operator.put_secret("app/second", b"two".to_vec(), &shared).await.unwrap_err();
    assert_eq!(status(&error), (409, "file_name_taken"), "{error}");
    assert!(error.to_string().contains("app/first"), "{error}");
    // A name whose derived file name is the one taken is rejected the same way.
    let error = operator.put_secret("shared.env", b"three".to_vec(), &PutOptions::default()).await.unwrap_err();
    assert_eq!(status(&error), (409, "file_name_taken"), "{error}");
    let output = stack.cli("operator", &["secret", "put", "app/second", "--stdin", "--file-name", "shared.env"], b"x");
    assert_eq!(output.status.code(), Some(4), "{}", String::from_utf8_lossy(&output.stderr));

    let secrets = stack.start_agent("agent-1");
    file_holds(&secrets.join("shared.env"), b"one").await;
    assert!(!secrets.join("app%2Ffirst").exists(), "the file goes under its chosen name only");
}

#[tokio::test]
async fn delete_hides_and_restore_returns() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    put(&operator, "app/db", b"pw").await;
    let secrets = stack.start_agent("agent-1");
    let file = secrets.join("app%2Fdb");
    file_holds(&file, b"pw").await;

    let deleted = operator.secret_command(Method::DELETE, "app/db", "", None, &none()).await.unwrap();
    assert_eq!(deleted.kind, "secret.deleted");
    file_gone(&file).await;
    let reader = stack.client("agent-1");
    let error = reader.get_secret("app/db", Some(deleted.sequence)).await.unwrap_err();
    assert_eq!(status(&error).0, 404, "a deleted secret looks missing: {error}");
    let listed = operator.list_secrets_with(None, true).await.unwrap();
    assert_eq!(listed.secrets[0].status, "deleted");
    assert!(operator.list_secrets(None).await.unwrap().secrets.is_empty());
}

/// Restores a deleted secret and checks that its content comes back.
#[tokio::test]
async fn restored_secret_is_delivered_again() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    put(&operator, "app/db", b"pw").await;
    operator.secret_command(Method::DELETE, "app/db", "", None, &none()).await.unwrap();
    let secrets = stack.start_agent("agent-1");

    let output = stack.cli("operator", &["secret", "restore", "app/db"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    file_holds(&secrets.join("app%2Fdb"), b"pw").await;
    let again = stack.cli("operator", &["secret", "restore", "app/db"], b"");
    assert_eq!(again.status.code(), Some(4), "restoring an active secret conflicts");
}

#[tokio::test]
async fn new_incarnation_hides_earlier_versions() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    put(&operator, "app/x", b"old one").await;
    put(&operator, "app/x", b"old two").await;
    operator.secret_command(Method::DELETE, "app/x", "", None, &none()).await.unwrap();
    let fresh = put(&operator, "app/x", b"new").await;
    assert_eq!(fresh.version, 3, "version numbers continue across incarnations");

    let versions = operator.list_versions("app/x").await.unwrap();
    let numbers: Vec<u64> = versions.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, vec![3]);
    let error = operator.get_version("app/x", 1).await.unwrap_err();
    assert_eq!(status(&error).0, 404, "{error}");
    assert_eq!(operator.get_metadata("app/x").await.unwrap().incarnation, 2);
    let restore = operator.secret_command(Method::POST, "app/x", "restore", None, &none()).await.unwrap_err();
    assert_eq!(status(&restore).0, 409, "{restore}");
}

#[tokio::test]
async fn rollback_repeats_earlier_content() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    put(&operator, "app/db", b"first").await;
    put(&operator, "app/db", b"second").await;

    let output = stack.cli("operator", &["--output", "json", "secret", "rollback", "app/db", "--to", "1"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(written["version"], 3);

    assert_eq!(operator.get_secret("app/db", None).await.unwrap().content.as_slice(), b"first");
    let versions = operator.list_versions("app/db").await.unwrap().versions;
    assert_eq!(versions[2].rolled_back_from, Some(1));
    assert_eq!(versions[2].digest, versions[0].digest, "equal contents have equal digests");
    assert_ne!(versions[1].digest, versions[0].digest);

    let body = serde_json::json!({ "version": 9 });
    let error = operator.secret_command(Method::POST, "app/db", "rollback", Some(&body), &none()).await.unwrap_err();
    assert_eq!(status(&error).0, 409, "{error}");
}

#[tokio::test]
async fn destroyed_version_has_no_reachable_key() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let first = put(&operator, "app/db", b"destroy me").await;
    put(&operator, "app/db", b"keep me").await;
    let doomed = version_body(&stack, first.sequence).await;
    let wrapped = stored_data_keys(&stack)
        .await
        .into_iter()
        .find(|key| <[u8; 32]>::from(Sha256::digest(key)) == doomed.data_key.wrapped_sha256)
        .expect("the wrapped key is stored before destruction");

    let refused = stack.cli("operator", &["secret", "destroy", "app/db", "--version", "1"], b"");
    assert_eq!(refused.status.code(), Some(2), "destroying needs --yes");
    let output = stack.cli("operator", &["secret", "destroy", "app/db", "--version", "1", "--yes"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let error = operator.get_version("app/db", 1).await.unwrap_err();
    assert_eq!(status(&error).0, 404, "{error}");
    assert_eq!(operator.get_secret("app/db", None).await.unwrap().content.as_slice(), b"keep me");
    let versions = operator.list_versions("app/db").await.unwrap().versions;
    assert!(versions[0].destroyed);
    assert!(!versions[0].readable);

    // No wrapped key left in the store matches what the event commits to.
    for key in stored_data_keys(&stack).await {
        assert_ne!(<[u8; 32]>::from(Sha256::digest(&key)), doomed.data_key.wrapped_sha256);
    }
    // Nor do the stream's files hold its bytes, nor the read model the ciphertext.
    stack.terminate_server();
    assert!(!directory_contains(&stack.nats_store(), &wrapped), "the wrapped key's bytes remain on disk");
    let model = watchword_events::readmodel::ReadModel::open(&stack.data_dir().join("test.redb"), 1 << 20).unwrap();
    let snapshot = model.snapshot().unwrap();
    let version = &snapshot.versions[&("app/db".to_owned(), 1)];
    assert!(version.destroyed);
    assert!(version.content.ciphertext.is_empty());
}

/// Returns whether any file under `dir` contains `needle`.
fn directory_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return directory_contains(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

#[tokio::test]
async fn destroyed_secret_leaves_computes() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    put(&operator, "app/token", b"t0ken").await;
    let secrets = stack.start_agent("agent-1");
    let file = secrets.join("app%2Ftoken");
    file_holds(&file, b"t0ken").await;

    operator.secret_command(Method::POST, "app/token", "destroy", None, &none()).await.unwrap();
    file_gone(&file).await;
    let error = operator.get_secret("app/token", None).await.unwrap_err();
    assert_eq!(status(&error).0, 404, "{error}");
    let listed = operator.list_secrets_with(None, true).await.unwrap();
    assert_eq!(listed.secrets[0].status, "destroyed");

    let reborn = put(&operator, "app/token", b"fresh").await;
    assert_eq!(reborn.version, 2);
    file_holds(&file, b"fresh").await;
}

#[tokio::test]
async fn expired_version_leaves_computes() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let options = PutOptions {
        expires_at: Some(expires_at.format(&time::format_description::well_known::Rfc3339).unwrap()),
        ..Default::default()
    };
    operator.put_secret("app/lease", b"short".to_vec(), &options).await.unwrap();
    let soon = operator.expiring(3600).await.unwrap();
    assert_eq!(soon.secrets.len(), 1);
    assert_eq!(soon.secrets[0].name, "app/lease");
    let output = stack.cli("operator", &["secret", "expiring", "--within", "1h"], b"");
    assert!(String::from_utf8_lossy(&output.stdout).contains("app/lease"));

    let secrets = stack.start_agent("agent-1");
    let file = secrets.join("app%2Flease");
    file_holds(&file, b"short").await;
    file_gone(&file).await;

    let error = operator.get_secret("app/lease", None).await.unwrap_err();
    assert_eq!(status(&error), (410, "expired"), "{error}");
    let expired = eventually("the expiry to be recorded as an event", async || {
        let versions = operator.list_versions("app/lease").await.ok()?;
        versions.versions[0].expired.then_some(())
    });
    tokio::time::timeout(Duration::from_secs(30), expired).await.unwrap();
    assert!(operator.expiring(3600).await.unwrap().secrets.is_empty());
}

#[tokio::test]
async fn expired_file_kept_when_configured() {
    let mut stack = Stack::start().await;
    let operator = stack.client("operator");
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let options = PutOptions {
        expires_at: Some(expires_at.format(&time::format_description::well_known::Rfc3339).unwrap()),
        ..Default::default()
    };
    operator.put_secret("app/lease", b"short".to_vec(), &options).await.unwrap();
    let secrets = stack.start_agent_configured("agent-1", "keep_expired = true");
    let file = secrets.join("app%2Flease");
    file_holds(&file, b"short").await;

    eventually("the version to expire", async || {
        operator.get_secret("app/lease", None).await.err().filter(|e| status(e).0 == 410).map(|_| ())
    })
    .await;
    // The agent received the expiry in its next watch response and kept the file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(std::fs::read(&file).unwrap(), b"short");
}

#[tokio::test]
async fn content_limit_is_configurable() {
    let mut stack = Stack::start().await;
    stack.configure("[limits]\nmax_content_bytes = 1024\nmax_readable_versions = 2");
    let operator = stack.client("operator");
    operator.put_secret("app/at-limit", vec![7; 1024], &PutOptions::default()).await.unwrap();
    let error = operator.put_secret("app/over", vec![7; 1025], &PutOptions::default()).await.unwrap_err();
    assert_eq!(status(&error), (413, "content_too_large"), "{error}");
    assert!(error.to_string().contains("1024"), "{error}");

    put(&operator, "app/at-limit", b"two").await;
    put(&operator, "app/at-limit", b"three").await;
    let versions = operator.list_versions("app/at-limit").await.unwrap().versions;
    let readable: Vec<bool> = versions.iter().map(|v| v.readable).collect();
    assert_eq!(readable, vec![false, true, true], "only the two newest versions stay readable");
    assert_eq!(status(&operator.get_version("app/at-limit", 1).await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn unsafe_limits_rejected_at_start() {
    let stack = Stack::start().await;
    let config = std::fs::read_to_string(stack.server_config()).unwrap();
    let path = stack.dir.path().join("bad.toml");
    std::fs::write(&path, format!("{config}\n[limits]\nmax_content_bytes = 2000000\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_watchword"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("SOFTHSM2_CONF", &stack.token.conf)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("limits.max_content_bytes 2000000"));
}

#[tokio::test]
async fn lifecycle_errors_name_the_state() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let named = PutOptions { file_name: Some("fx".to_owned()), ..Default::default() };
    operator.put_secret("app/holder", b"x".to_vec(), &named).await.unwrap();
    operator.secret_command(Method::DELETE, "app/holder", "", None, &none()).await.unwrap();

    let twice = operator.secret_command(Method::DELETE, "app/holder", "", None, &none()).await.unwrap_err();
    assert!(twice.to_string().contains("is already deleted"), "{twice}");
    let taken = operator.put_secret("app/other", b"y".to_vec(), &named).await.unwrap_err();
    assert!(taken.to_string().contains("which is deleted but keeps its file name until it is destroyed"), "{taken}");

    operator.secret_command(Method::POST, "app/holder", "destroy", None, &none()).await.unwrap();
    let restore = operator.secret_command(Method::POST, "app/holder", "restore", None, &none()).await.unwrap_err();
    assert_eq!(status(&restore).0, 409, "{restore}");
    assert!(restore.to_string().contains("was destroyed and cannot be restored"), "{restore}");
    operator.put_secret("app/other", b"y".to_vec(), &named).await.unwrap();

    let versions_gone = operator.get_version("app/holder", 1).await.unwrap_err();
    assert!(versions_gone.to_string().contains("it was destroyed"), "{versions_gone}");
}
