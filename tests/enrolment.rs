//! Enrolment: one-time tokens, certificates from the HSM CA, renewal and revocation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::stack::Stack;
use reqwest::Method;
use watchword::client::{ApiClient, ClientError, CreateRequest, PutOptions};

const WEB: &str = "spiffe://watchword.dev/web-7";

fn create(name: &str) -> CreateRequest {
    CreateRequest { name: name.to_owned(), owner_group: None, description: String::new() }
}

/// Registers `WEB` in group `web` with a grant on `web-db`, and returns a token.
async fn register(operator: &ApiClient, ttl_secs: u64) -> String {
    operator.put_secret("web-db", b"s3cret".to_vec(), &PutOptions::default()).await.unwrap();
    operator.create_client(&create(WEB)).await.unwrap();
    operator.create_group(&create("web")).await.unwrap();
    operator.command(Method::PUT, &["groups", "web", "members", WEB]).await.unwrap();
    operator.command(Method::PUT, &["groups", "web", "grants", "web-db"]).await.unwrap();
    operator.create_enrolment_token(WEB, Some(ttl_secs)).await.unwrap().token
}

/// Runs `watchword-agent enrol`; returns the certificate and key paths, or stderr.
fn enrol(stack: &Stack, url: &str, token: &str, tag: &str) -> Result<(PathBuf, PathBuf), String> {
    let dir = stack.dir.path().join(format!("enrol-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let output = Command::new(env!("CARGO_BIN_EXE_watchword-agent"))
        .args(["enrol", "--server", url, "--client", WEB, "--ca"])
        .arg(stack.certs().join("ca.crt"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .expect("run watchword-agent enrol");
    if output.status.success() { Ok((cert, key)) } else { Err(String::from_utf8_lossy(&output.stderr).into_owned()) }
}

fn client_with(stack: &Stack, cert: &Path, key: &Path) -> ApiClient {
    ApiClient::new(&stack.server_url, &stack.certs().join("ca.crt"), cert, key).unwrap()
}

#[tokio::test]
async fn enrolled_client_reads_granted_secret() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let token = register(&stack.client("operator"), 600).await;

    let (cert, key) = enrol(&stack, &url, &token, "first").unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    let web = client_with(&stack, &cert, &key);
    assert_eq!(web.get_secret("web-db", None).await.unwrap().content.as_slice(), b"s3cret");
}

#[tokio::test]
async fn reused_token_rejected() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let token = register(&stack.client("operator"), 600).await;

    enrol(&stack, &url, &token, "first").unwrap();
    let error = enrol(&stack, &url, &token, "second").unwrap_err();
    assert!(error.contains("no unused enrolment token"), "{error}");
}

#[tokio::test]
async fn wrong_and_expired_tokens_rejected() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let operator = stack.client("operator");
    register(&operator, 600).await;

    let wrong = enrol(&stack, &url, "not-the-token", "wrong").unwrap_err();
    assert!(wrong.contains("does not match"), "{wrong}");

    let short = operator.create_enrolment_token(WEB, Some(1)).await.unwrap().token;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let expired = enrol(&stack, &url, &short, "expired").unwrap_err();
    assert!(expired.contains("expired"), "{expired}");
}

#[tokio::test]
async fn concurrent_uses_of_one_token_one_succeeds() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let token = register(&stack.client("operator"), 600).await;

    let stack = std::sync::Arc::new(stack);
    let attempts: Vec<_> = (0..5)
        .map(|i| {
            let (stack, url, token) = (std::sync::Arc::clone(&stack), url.clone(), token.clone());
            std::thread::spawn(move || enrol(&stack, &url, &token, &format!("race-{i}")).is_ok())
        })
        .collect();
    let successes = attempts.into_iter().map(|t| t.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn disabled_client_loses_access_and_renewal() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let operator = stack.client("operator");
    let token = register(&operator, 600).await;
    let (cert, key) = enrol(&stack, &url, &token, "first").unwrap();
    let web = client_with(&stack, &cert, &key);

    let (csr, _key) = watchword::agent::enrolment::new_key_and_csr().unwrap();
    let renewed = web.renew(csr).await.unwrap();
    assert!(renewed.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let disabled = operator.command(Method::POST, &["clients", WEB, "disable"]).await.unwrap();
    let read = web.get_secret("web-db", Some(disabled.sequence)).await;
    assert!(matches!(read, Err(ClientError::Api { status: 404, .. })), "{read:?}");
    let (csr, _key) = watchword::agent::enrolment::new_key_and_csr().unwrap();
    let renewal = web.renew(csr).await;
    assert!(matches!(renewal, Err(ClientError::Api { status: 403, .. })), "{renewal:?}");
}

#[tokio::test]
async fn token_for_unknown_client_is_not_found() {
    let mut stack = Stack::start().await;
    stack.enable_enrolment();
    let error =
        stack.client("operator").create_enrolment_token("spiffe://watchword.dev/nobody", None).await.unwrap_err();
    assert!(matches!(error, ClientError::Api { status: 404, .. }), "{error}");
}

#[tokio::test]
async fn cli_token_feeds_agent_enrolment() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    register(&stack.client("operator"), 600).await;

    let output = stack.cli("operator", &["client", "enrolment-token", WEB, "--ttl-secs", "600"], b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.trim().len(), 43, "only the token, 32 bytes in unpadded base64url: {token:?}");
    enrol(&stack, &url, token.trim(), "cli").unwrap();
}
