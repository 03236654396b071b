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

#[tokio::test]
async fn expired_certificate_rejected_in_handshake() {
    let stack = Stack::start().await;
    let certs = stack.certs();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(certs.join("ca.crt")).unwrap(), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "operator");
    params.subject_alt_names =
        vec![rcgen::SanType::URI("spiffe://watchword.dev/operator".to_owned().try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expired.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("expired.key"), key.serialize_pem()).unwrap();

    let expired = client_with(&stack, &dir.path().join("expired.crt"), &dir.path().join("expired.key"));
    let error = expired.list_secrets(None).await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "rejected in the handshake: {error}");
}

/// The whole flow an operator runs from the CLI: a group for an application with
/// two secrets, a compute enrolled with a one-time token, delivery, revocation.
#[tokio::test]
async fn cli_enrols_agent_that_loses_access_when_revoked() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    let cli = |stack: &Stack, args: &[&str], stdin: &[u8]| {
        let output = stack.cli("operator", args, stdin);
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };

    let group = cli(&stack, &["group", "app", "acme", "shop", "prod", "--create", "--output", "json"], b"");
    assert!(group.contains("group.created"), "{group}");
    for secret in ["shop/db", "shop/api", "other/x"] {
        cli(&stack, &["secret", "put", secret, "--stdin"], secret.as_bytes());
    }
    cli(&stack, &["grant", "add", "/acme/shop/prod", "shop/db"], b"");
    cli(&stack, &["grant", "add", "/acme/shop/prod", "shop/api"], b"");
    cli(&stack, &["client", "create", WEB], b"");
    cli(&stack, &["group", "add-member", "/acme/shop/prod", WEB], b"");
    let token = cli(&stack, &["client", "enrolment-token", WEB], b"");

    let (cert, key) = enrol(&stack, &url, token.trim(), "flow").unwrap();
    let secrets = stack.start_agent_with(&cert, &key, "web-7");
    let expected: std::collections::BTreeSet<String> = ["shop%2Fapi", "shop%2Fdb"].map(String::from).into();
    common::stack::eventually("the two granted secrets", async || (files(&secrets) == expected).then_some(())).await;

    cli(&stack, &["client", "disable", WEB], b"");
    common::stack::eventually("the files to go", async || files(&secrets).is_empty().then_some(())).await;
}

fn files(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// A running agent renews its certificate when a third of its lifetime is left,
/// and goes on receiving changes with the new one.
#[tokio::test]
async fn agent_renews_short_lived_certificate() {
    let mut stack = Stack::start().await;
    let url = stack.enable_enrolment();
    // The line lands in the [ca] section, the last of the configuration.
    stack.configure("leaf_secs = 60");
    let token = register(&stack.client("operator"), 600).await;
    let (cert, key) = enrol(&stack, &url, &token, "renewal").unwrap();
    let first = std::fs::read(&cert).unwrap();
    let secrets = stack.start_agent_with(&cert, &key, "web-7");
    let file = secrets.join("web-db");
    common::stack::eventually("the granted secret", async || (std::fs::read(&file).ok()? == b"s3cret").then_some(()))
        .await;

    // The certificate lives 75 s (60 s ahead, 15 s back), so renewal is due 25 s
    // before it expires; allow for a whole watch timeout on top.
    let renewed = async {
        loop {
            if std::fs::read(&cert).unwrap() != first {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(90), renewed).await.expect("the agent renews its certificate");

    stack.client("operator").put_secret("web-db", b"rotated".to_vec(), &PutOptions::default()).await.unwrap();
    common::stack::eventually("the rotated secret", async || (std::fs::read(&file).ok()? == b"rotated").then_some(()))
        .await;
    let log = std::fs::read_to_string(secrets.parent().unwrap().join("agent.log")).unwrap();
    assert!(log.contains("client certificate renewed"), "{log}");
}
