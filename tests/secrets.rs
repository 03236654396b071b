//! Writing and reading secrets through the HTTPS API of a real server.

mod common;

use std::collections::BTreeSet;

use common::stack::Stack;
use watchword::client::{ClientError, Conditions, PutOptions};

fn conflict_revision(error: ClientError) -> Option<u64> {
    match error {
        ClientError::Api { status: 409, current_revision, .. } => current_revision,
        other => panic!("expected a conflict, got {other}"),
    }
}

#[tokio::test]
async fn put_then_get_returns_same_bytes() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let large: Vec<u8> = (0..500 * 1024).map(|i| (i * 7 % 251) as u8).collect();

    for (name, content) in [("empty", Vec::new()), ("binary", binary), ("large", large)] {
        let written = operator.put_secret(name, content.clone(), &PutOptions::default()).await.unwrap();
        assert_eq!(written.version, 1);
        let read = operator.get_secret(name, Some(written.sequence)).await.unwrap();
        assert_eq!(*read.content, content, "content of {name}");
        assert_eq!(read.version, 1);
    }
}

#[tokio::test]
async fn update_creates_next_version() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("db", b"one".to_vec(), &PutOptions::default()).await.unwrap();
    let second = operator.put_secret("db", b"two".to_vec(), &PutOptions::default()).await.unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(second.revision, 2);
    let read = operator.get_secret("db", Some(second.sequence)).await.unwrap();
    assert_eq!(read.content.as_slice(), b"two");
}

#[tokio::test]
async fn content_above_limit_rejected_with_413() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let max = watchword::writer::MAX_CONTENT_BYTES;
    operator.put_secret("at-limit", vec![1; max], &PutOptions::default()).await.unwrap();
    let error = operator.put_secret("over-limit", vec![1; max + 1], &PutOptions::default()).await.unwrap_err();
    assert!(matches!(error, ClientError::Api { status: 413, .. }), "{error}");
    let far = operator.put_secret("far-over", vec![1; 3 * max], &PutOptions::default()).await.unwrap_err();
    assert!(matches!(&far, ClientError::Api { status: 413, code, .. } if code == "content_too_large"), "{far}");
}

#[tokio::test]
async fn same_expected_revision_one_writer_wins() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let first = operator.put_secret("race", b"v1".to_vec(), &PutOptions::default()).await.unwrap();

    let options = PutOptions {
        conditions: Conditions { if_revision: Some(first.revision), ..Default::default() },
        ..Default::default()
    };
    let writes = (0..8).map(|i| {
        let client = operator.clone();
        let options = options.clone();
        tokio::spawn(async move { client.put_secret("race", format!("writer {i}").into_bytes(), &options).await })
    });
    let results: Vec<_> = futures::future::join_all(writes).await.into_iter().map(Result::unwrap).collect();

    let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    for result in results.into_iter().filter(Result::is_err) {
        assert_eq!(conflict_revision(result.unwrap_err()), Some(2), "the conflict names the current revision");
    }
}

#[tokio::test]
async fn stale_if_match_never_overwrites() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("cas", b"one".to_vec(), &PutOptions::default()).await.unwrap();
    let second = operator.put_secret("cas", b"two".to_vec(), &PutOptions::default()).await.unwrap();

    let stale =
        PutOptions { conditions: Conditions { if_revision: Some(1), ..Default::default() }, ..Default::default() };
    let error = operator.put_secret("cas", b"stale".to_vec(), &stale).await.unwrap_err();
    assert_eq!(conflict_revision(error), Some(2));
    let read = operator.get_secret("cas", Some(second.sequence)).await.unwrap();
    assert_eq!(read.content.as_slice(), b"two");
}

#[tokio::test]
async fn if_absent_conflicts_on_existing_secret() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let absent = PutOptions { conditions: Conditions { if_absent: true, ..Default::default() }, ..Default::default() };
    operator.put_secret("once", b"one".to_vec(), &absent).await.unwrap();
    let error = operator.put_secret("once", b"two".to_vec(), &absent).await.unwrap_err();
    assert_eq!(conflict_revision(error), Some(1));
}

#[tokio::test]
async fn retry_with_idempotency_key_applies_once() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let options = PutOptions {
        conditions: Conditions { idempotency_key: Some("deploy-42".to_owned()), ..Default::default() },
        ..Default::default()
    };
    let first = operator.put_secret("idem", b"content".to_vec(), &options).await.unwrap();
    let retry = operator.put_secret("idem", b"content".to_vec(), &options).await.unwrap();

    assert_eq!(retry.sequence, first.sequence);
    assert_eq!(retry.version, 1);
    assert!(retry.replayed);
    let list = operator.list_secrets(Some(first.sequence)).await.unwrap();
    let idem = list.secrets.iter().find(|s| s.name == "idem").unwrap();
    assert_eq!(idem.revision, 1, "the retry created no second event");
}

#[tokio::test]
async fn retry_of_conditional_create_returns_first_outcome() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let options = PutOptions {
        conditions: Conditions { if_absent: true, idempotency_key: Some("create-1".to_owned()), ..Default::default() },
        ..Default::default()
    };
    let first = operator.put_secret("cond", b"x".to_vec(), &options).await.unwrap();
    let retry = operator.put_secret("cond", b"x".to_vec(), &options).await.unwrap();
    assert_eq!(retry.sequence, first.sequence);
    assert!(retry.replayed);
}

#[tokio::test]
async fn unreadable_and_missing_secrets_look_the_same() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let written = operator.put_secret("other/secret", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let agent = stack.client("agent-1");

    let denied = agent.get_secret("other/secret", Some(written.sequence)).await.unwrap_err();
    let missing = agent.get_secret("other/missing", Some(written.sequence)).await.unwrap_err();
    let (ClientError::Api { status: s1, code: c1, .. }, ClientError::Api { status: s2, code: c2, .. }) =
        (denied, missing)
    else {
        panic!("expected API errors");
    };
    assert_eq!((s1, c1.as_str()), (404, "not_found"));
    assert_eq!((s2, c2.as_str()), (404, "not_found"));
}

#[tokio::test]
async fn reader_cannot_write() {
    let stack = Stack::start().await;
    let error = stack.client("agent-2").put_secret("x", b"x".to_vec(), &PutOptions::default()).await.unwrap_err();
    assert!(matches!(error, ClientError::Api { status: 403, .. }), "{error}");
}

#[tokio::test]
async fn list_shows_only_readable_secrets() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("app/a", b"a".to_vec(), &PutOptions::default()).await.unwrap();
    let last = operator.put_secret("infra/b", b"b".to_vec(), &PutOptions::default()).await.unwrap();
    let names: BTreeSet<String> = stack
        .client("agent-1")
        .list_secrets(Some(last.sequence))
        .await
        .unwrap()
        .secrets
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, BTreeSet::from(["app/a".to_owned()]));
}

#[tokio::test]
async fn unusual_names_round_trip() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    for name in ["a/b/c", "with space", "100%", "user@host:port", "ünïcødé", "...", ".hidden", "a?b#c", "*", ">"] {
        let written = operator.put_secret(name, name.as_bytes().to_vec(), &PutOptions::default()).await.unwrap();
        let read = operator.get_secret(name, Some(written.sequence)).await.unwrap();
        assert_eq!(read.content.as_slice(), name.as_bytes(), "name {name:?}");
    }
}

#[tokio::test]
async fn invalid_names_rejected_before_sending() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    for name in ["", "a\nb", "\u{7f}", &"x".repeat(256), &"/".repeat(90), ".", ".."] {
        let error = operator.put_secret(name, b"x".to_vec(), &PutOptions::default()).await.unwrap_err();
        assert!(matches!(error, ClientError::InvalidName(_)), "{name:?}: {error}");
        assert!(error.to_string().starts_with("invalid name"), "{error}");
    }
}

#[tokio::test]
async fn server_rejects_invalid_name_with_400() {
    let stack = Stack::start().await;
    let certs = stack.certs();
    let http =
        watchword::tls::http_client(&certs.join("ca.crt"), &certs.join("operator.crt"), &certs.join("operator.key"))
            .unwrap();
    for encoded in ["a%0Ab", "%7F", &"x".repeat(256), &"%2F".repeat(90)] {
        let response = http.put(format!("{}/v1/secrets/{encoded}", stack.server_url)).body("x").send().await.unwrap();
        assert_eq!(response.status(), 400, "{encoded}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_name", "{encoded}");
        assert!(body["message"].as_str().unwrap().starts_with("invalid name"), "{body}");
    }
}

#[tokio::test]
async fn client_from_other_ca_rejected() {
    let stack = Stack::start().await;
    let other = tempfile::tempdir().unwrap();
    watchword::pki::write_dev_set(other.path(), &["localhost".to_owned()], &["operator".to_owned()]).unwrap();
    let intruder = watchword::client::ApiClient::new(
        &stack.server_url,
        &stack.certs().join("ca.crt"),
        &other.path().join("operator.crt"),
        &other.path().join("operator.key"),
    )
    .unwrap();

    let error = intruder.put_secret("x", b"x".to_vec(), &PutOptions::default()).await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "rejected in the handshake: {error}");
    let list = stack.client("operator").list_secrets(None).await.unwrap();
    assert!(list.secrets.is_empty(), "no handler wrote anything");
}

#[tokio::test]
async fn versions_listed_and_earlier_one_read() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    for content in ["one", "two", "three"] {
        operator.put_secret("app/rotated", content.as_bytes().to_vec(), &PutOptions::default()).await.unwrap();
    }

    let list = operator.list_versions("app/rotated").await.unwrap();
    let numbers: Vec<u64> = list.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(operator.get_version("app/rotated", 1).await.unwrap().content.as_slice(), b"one");
    assert_eq!(operator.get_secret("app/rotated", None).await.unwrap().content.as_slice(), b"three");

    let missing = operator.get_version("app/rotated", 9).await.unwrap_err();
    assert!(
        missing.to_string().contains("version 9 of secret \"app/rotated\" cannot be read: it does not exist"),
        "{missing}"
    );
}

#[tokio::test]
async fn earlier_versions_hidden_from_readers() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("app/rotated", b"one".to_vec(), &PutOptions::default()).await.unwrap();
    let last = operator.put_secret("app/rotated", b"two".to_vec(), &PutOptions::default()).await.unwrap();

    let reader = stack.client("agent-1");
    assert_eq!(reader.get_secret("app/rotated", Some(last.sequence)).await.unwrap().content.as_slice(), b"two");
    assert_eq!(reader.list_versions("app/rotated").await.unwrap().versions.len(), 2, "metadata for readers");
    let old = reader.get_version("app/rotated", 1).await.unwrap_err();
    assert!(matches!(old, ClientError::Api { status: 404, .. }), "{old}");
    let stranger = stack.client("nobody").list_versions("app/rotated").await.unwrap_err();
    assert!(matches!(stranger, ClientError::Api { status: 404, .. }), "{stranger}");
}

#[tokio::test]
async fn fifty_concurrent_creates_one_succeeds() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let absent = PutOptions { conditions: Conditions { if_absent: true, ..Default::default() }, ..Default::default() };
    let creates = (0..50).map(|i| {
        let (client, options) = (operator.clone(), absent.clone());
        tokio::spawn(async move { client.put_secret("app/once", format!("creator {i}").into_bytes(), &options).await })
    });
    let results: Vec<_> = futures::future::join_all(creates).await.into_iter().map(Result::unwrap).collect();

    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "exactly one create wins");
    for error in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(error, ClientError::Api { status: 409, current_revision: Some(1), .. }), "{error}");
    }
    let versions = operator.list_versions("app/once").await.unwrap().versions;
    assert_eq!(versions.len(), 1, "the losers wrote no version");
}

#[tokio::test]
async fn reused_idempotency_key_with_other_content_rejected() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let options = PutOptions {
        conditions: Conditions { idempotency_key: Some("rotate-7".to_owned()), ..Default::default() },
        ..Default::default()
    };
    operator.put_secret("idem", b"first".to_vec(), &options).await.unwrap();
    let error = operator.put_secret("idem", b"second".to_vec(), &options).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { status: 422, code, .. } if code == "idempotency_key_reused"),
        "{error}"
    );
    assert_eq!(operator.get_secret("idem", None).await.unwrap().content.as_slice(), b"first");
}

#[tokio::test]
async fn retried_delete_returns_first_outcome() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    operator.put_secret("gone", b"x".to_vec(), &PutOptions::default()).await.unwrap();
    let keyed = Conditions { idempotency_key: Some("delete-1".to_owned()), ..Default::default() };

    let first = operator.secret_command(reqwest::Method::DELETE, "gone", "", None, &keyed).await.unwrap();
    let retry = operator.secret_command(reqwest::Method::DELETE, "gone", "", None, &keyed).await.unwrap();
    assert!(retry.replayed, "the retry of a delete that succeeded gets its outcome, not a conflict");
    assert_eq!((retry.sequence, retry.kind.as_str()), (first.sequence, "secret.deleted"));

    // The same key on another command is not a retry.
    let error = operator.secret_command(reqwest::Method::POST, "gone", "restore", None, &keyed).await.unwrap_err();
    assert!(matches!(&error, ClientError::Api { status: 422, .. }), "{error}");
    let unkeyed = Conditions::default();
    let again = operator.secret_command(reqwest::Method::DELETE, "gone", "", None, &unkeyed).await.unwrap_err();
    assert!(matches!(&again, ClientError::Api { status: 409, .. }), "without a key, deleting twice conflicts: {again}");
}

#[tokio::test]
async fn concurrent_unconditional_writes_all_land() {
    let stack = Stack::start().await;
    let operator = stack.client("operator");
    let writes = (0..20).map(|i| {
        let client = operator.clone();
        tokio::spawn(async move {
            client.put_secret("app/busy", format!("writer {i}").into_bytes(), &PutOptions::default()).await
        })
    });
    let results: Vec<_> = futures::future::join_all(writes).await.into_iter().map(Result::unwrap).collect();
    for result in &results {
        assert!(result.is_ok(), "a write without a precondition retries until it lands: {result:?}");
    }
    let versions = operator.list_versions("app/busy").await.unwrap().versions;
    assert_eq!(versions.len(), 20);
}
