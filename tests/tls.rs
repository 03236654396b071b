//! Mutual TLS end to end: certificates from `pki` in a temporary directory, a real
//! `tls::serve` on 127.0.0.1 port 0, and reqwest clients.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use watchword::pki::{self, DevCa, PkiError};
use watchword::tls::{self, ClientIdentity, TlsError};

/// Upper bound for any single wait in these tests, so a hang fails instead of stalling.
const WAIT: Duration = Duration::from_secs(10);

const SPIFFE_ALICE: &str = "spiffe://watchword.dev/alice";

/// Writes a dev certificate set for `127.0.0.1` and `localhost`, with clients `alice`
/// and `bob`, into a new temporary directory.
fn dev_set() -> TempDir {
    let dir = tempfile::tempdir().expect("create temporary directory");
    pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice", "bob"])).expect("write dev set");
    dir
}

fn server_names() -> Vec<String> {
    strings(&["localhost", "127.0.0.1"])
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A running `tls::serve` with a handler call counter.
struct TestServer {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    slow_started: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    async fn start(dir: &Path) -> Self {
        tls::install_crypto_provider();
        let config = tls::server_config(&file(dir, "server.crt"), &file(dir, "server.key"), &file(dir, "ca.crt"))
            .expect("server config");

        let calls = Arc::new(AtomicUsize::new(0));
        let slow_started = Arc::new(Notify::new());
        let router = Router::new()
            .route("/whoami", get(whoami))
            .route("/slow", get(slow))
            .layer(Extension(calls.clone()))
            .layer(Extension(slow_started.clone()));

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(tls::serve(listener, config, router, shutdown));

        Self { addr, calls, slow_started, stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn handler_calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Triggers shutdown and waits for `serve` to return.
    async fn shut_down(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task does not panic")
    }
}

/// Returns the client identity. axum responds with 500 unless `serve` inserted both
/// `ClientIdentity` and `ConnectInfo`.
async fn whoami(
    Extension(client): Extension<ClientIdentity>,
    Extension(calls): Extension<Arc<AtomicUsize>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    assert!(peer.ip().is_loopback(), "peer address {peer}");
    client.name
}

async fn slow(
    Extension(calls): Extension<Arc<AtomicUsize>>,
    Extension(started): Extension<Arc<Notify>>,
) -> &'static str {
    calls.fetch_add(1, Ordering::SeqCst);
    started.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    "done"
}

fn client_from_config(config: ClientConfig) -> reqwest::Client {
    reqwest::Client::builder().tls_backend_preconfigured(config).build().expect("build reqwest client")
}

fn client_for(dir: &Path, identity: &str) -> reqwest::Client {
    tls::http_client(
        &file(dir, "ca.crt"),
        &file(dir, &format!("{identity}.crt")),
        &file(dir, &format!("{identity}.key")),
    )
    .expect("build mTLS client")
}

async fn get_text(client: &reqwest::Client, url: &str) -> reqwest::Result<(reqwest::Version, String)> {
    let response = tokio::time::timeout(WAIT, client.get(url).send())
        .await
        .expect("request finishes in time")?
        .error_for_status()?;
    let version = response.version();
    Ok((version, response.text().await?))
}

fn roots(ca_cert: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(ca_cert).expect("read CA certificate");
    roots.add(cert).expect("add CA certificate");
    roots
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn self_signed_der(params: CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().expect("generate key");
    params.self_signed(&key).expect("sign").der().to_vec()
}

fn uri_san(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("ASCII URI"))
}

fn dn_with_common_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

#[tokio::test]
async fn valid_client_reaches_handler_over_http2() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    let client = client_for(dir.path(), "alice");

    let (version, body) = get_text(&client, &server.url("/whoami")).await.expect("request");

    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(body, SPIFFE_ALICE);
    assert_eq!(server.handler_calls(), 1);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn valid_client_reaches_handler_over_http1() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    let mut config =
        tls::client_config(&file(dir.path(), "ca.crt"), &file(dir.path(), "bob.crt"), &file(dir.path(), "bob.key"))
            .expect("client config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = client_from_config(config);

    let (version, body) = get_text(&client, &server.url("/whoami")).await.expect("request");

    assert_eq!(version, reqwest::Version::HTTP_11);
    assert_eq!(body, "spiffe://watchword.dev/bob");
    assert_eq!(server.handler_calls(), 1);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn pooled_connection_serves_repeated_requests() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    let client = client_for(dir.path(), "alice");

    for _ in 0..3 {
        let (_, body) = get_text(&client, &server.url("/whoami")).await.expect("request");
        assert_eq!(body, SPIFFE_ALICE);
    }

    assert_eq!(server.handler_calls(), 3);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn client_without_certificate_is_rejected() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(&file(dir.path(), "ca.crt")))
        .with_no_client_auth();
    let client = client_from_config(config);

    let result = get_text(&client, &server.url("/whoami")).await;

    assert!(result.is_err(), "request without a client certificate succeeded: {result:?}");
    assert_eq!(server.handler_calls(), 0);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn client_from_other_ca_is_rejected() {
    let dir = dev_set();
    let other = dev_set();
    let server = TestServer::start(dir.path()).await;
    // Trusts the right server, but presents a certificate that another CA issued.
    let client = tls::http_client(
        &file(dir.path(), "ca.crt"),
        &file(other.path(), "alice.crt"),
        &file(other.path(), "alice.key"),
    )
    .expect("build client");

    let result = get_text(&client, &server.url("/whoami")).await;

    assert!(result.is_err(), "request with a foreign certificate succeeded: {result:?}");
    assert_eq!(server.handler_calls(), 0);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn server_cert_as_client_cert_rejected() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    // The server certificate has the serverAuth extended key usage only.
    let client = client_for(dir.path(), "server");

    let result = get_text(&client, &server.url("/whoami")).await;

    assert!(result.is_err(), "request with a serverAuth-only certificate succeeded: {result:?}");
    assert_eq!(server.handler_calls(), 0);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn client_without_identity_never_reaches_handler() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;

    // A certificate from the right CA, valid for clientAuth, with an empty subject
    // and no SAN: the handshake succeeds, but there is no identity to hand on.
    let ca_pem = fs::read_to_string(file(dir.path(), "ca.crt")).expect("read CA certificate");
    let ca_key_pem = fs::read_to_string(file(dir.path(), "ca.key")).expect("read CA key");
    let ca_key = KeyPair::from_pem(&ca_key_pem).expect("parse CA key");
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("CA issuer");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().expect("generate key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    fs::write(file(dir.path(), "anonymous.crt"), cert.pem()).expect("write certificate");
    fs::write(file(dir.path(), "anonymous.key"), key.serialize_pem()).expect("write key");
    let client = client_for(dir.path(), "anonymous");

    let result = get_text(&client, &server.url("/whoami")).await;

    assert!(result.is_err(), "request without an identity succeeded: {result:?}");
    assert_eq!(server.handler_calls(), 0);
    server.shut_down().await.expect("serve result");
}

#[tokio::test]
async fn shutdown_lets_in_flight_request_finish() {
    let dir = dev_set();
    let server = TestServer::start(dir.path()).await;
    let client = client_for(dir.path(), "alice");
    let url = server.url("/slow");
    let whoami_url = server.url("/whoami");
    let started = server.slow_started.clone();

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { get_text(&client, &url).await }
    });
    tokio::time::timeout(WAIT, started.notified()).await.expect("slow handler starts");
    let calls = server.calls.clone();
    server.shut_down().await.expect("serve result");

    let (_, body) = in_flight.await.expect("request task does not panic").expect("in-flight request succeeds");
    assert_eq!(body, "done");

    let fresh_client = client_for(dir.path(), "alice");
    let after = get_text(&fresh_client, &whoami_url).await;
    assert!(after.is_err(), "request after shutdown succeeded: {after:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn identity_prefers_first_uri_san() {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn_with_common_name("common-name");
    params.subject_alt_names = vec![
        SanType::DnsName("alice.example".try_into().expect("DNS name")),
        uri_san(SPIFFE_ALICE),
        uri_san("spiffe://watchword.dev/second"),
    ];

    let identity = tls::identity_from_cert(&self_signed_der(params)).expect("identity");

    assert_eq!(identity.name, SPIFFE_ALICE);
}

#[test]
fn identity_falls_back_to_common_name() {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn_with_common_name("carol");
    params.subject_alt_names = vec![SanType::DnsName("carol.example".try_into().expect("DNS name"))];

    let identity = tls::identity_from_cert(&self_signed_der(params)).expect("identity");

    assert_eq!(identity.name, "carol");
}

#[test]
fn identity_without_uri_or_cn_rejected() {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();

    let result = tls::identity_from_cert(&self_signed_der(params));

    assert!(matches!(result, Err(TlsError::NoPeerIdentity)), "{result:?}");
}

#[test]
fn identity_with_control_characters_rejected() {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn_with_common_name("mallory\nclient.id=admin");

    let result = tls::identity_from_cert(&self_signed_der(params));

    assert!(matches!(result, Err(TlsError::InvalidPeerIdentity { .. })), "{result:?}");
}

#[test]
fn identity_from_garbage_bytes_rejected() {
    let result = tls::identity_from_cert(b"not a certificate");

    assert!(matches!(result, Err(TlsError::InvalidPeerCertificate { .. })), "{result:?}");
}

#[test]
fn issued_client_cert_has_spiffe_identity() {
    let ca = DevCa::generate("test CA").expect("generate CA");
    let issued = ca.issue_client("alice").expect("issue client certificate");
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("parse PEM");

    let identity = tls::identity_from_cert(&der).expect("identity");

    assert_eq!(identity.name, SPIFFE_ALICE);
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"), "Debug output leaks the key");
}

#[test]
fn issue_client_rejects_unsafe_identity() {
    let ca = DevCa::generate("test CA").expect("generate CA");

    for identity in ["", "../alice", "alice bob", ".hidden", "alice/admin", "ålice"] {
        let result = ca.issue_client(identity);
        assert!(matches!(result, Err(PkiError::InvalidClientName { .. })), "identity {identity:?}: {result:?}");
    }
}

#[test]
fn issue_server_without_names_is_rejected() {
    let ca = DevCa::generate("test CA").expect("generate CA");

    let result = ca.issue_server(&[], &[]);

    assert!(matches!(result, Err(PkiError::NoServerNames)), "{result:?}");
}

#[test]
fn dev_set_rerun_keeps_every_file() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let clients = strings(&["alice", "bob"]);
    let first = pki::write_dev_set(dir.path(), &server_names(), &clients).expect("first run");
    let contents: Vec<(PathBuf, Vec<u8>)> = first.created.iter().map(|path| (path.clone(), read(path))).collect();

    let second = pki::write_dev_set(dir.path(), &server_names(), &clients).expect("second run");

    assert_eq!(first.created.len(), 8, "{first:?}");
    assert!(first.reused.is_empty(), "{first:?}");
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(second.reused.len(), 8, "{second:?}");
    for (path, before) in contents {
        assert_eq!(read(&path), before, "{} changed", path.display());
    }
}

#[test]
fn dev_set_rerun_adds_missing_client() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice"])).expect("first run");
    let ca_before = read(&file(dir.path(), "ca.crt"));

    let second = pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice", "carol"])).expect("second run");
    // A third run verifies every reused certificate against the CA, carol's included.
    pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice", "carol"])).expect("third run");

    assert_eq!(second.created, vec![file(dir.path(), "carol.crt"), file(dir.path(), "carol.key")]);
    assert_eq!(read(&file(dir.path(), "ca.crt")), ca_before);
}

#[cfg(unix)]
#[test]
fn dev_set_keys_have_mode_0600() {
    use std::os::unix::fs::PermissionsExt;

    let dir = dev_set();

    for key in ["ca.key", "server.key", "alice.key", "bob.key"] {
        let mode = fs::metadata(file(dir.path(), key)).expect("key metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key} has mode {mode:o}");
    }
}

#[test]
fn dev_set_rejects_unsafe_client_name() {
    for name in ["../escape", "ca", "server", "", "a b"] {
        let dir = tempfile::tempdir().expect("create temporary directory");

        let result = pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice", name]));

        let err = result.expect_err("unsafe client name accepted");
        assert!(matches!(err, PkiError::InvalidClientName { .. }), "{name:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{name:?}")), "message {err} lacks {name:?}");
        let entries = fs::read_dir(dir.path()).expect("read directory").count();
        assert_eq!(entries, 0, "files written despite invalid name {name:?}");
    }
}

#[test]
fn dev_set_keeps_half_ca_and_fails() {
    let dir = dev_set();
    let key_before = read(&file(dir.path(), "ca.key"));
    fs::remove_file(file(dir.path(), "ca.crt")).expect("remove ca.crt");

    let result = pki::write_dev_set(dir.path(), &server_names(), &[]);

    assert!(matches!(result, Err(PkiError::IncompleteCa { .. })), "{result:?}");
    assert_eq!(read(&file(dir.path(), "ca.key")), key_before);
    assert!(!file(dir.path(), "ca.crt").exists());
}

#[test]
fn dev_set_rejects_foreign_client_cert() {
    let dir = dev_set();
    let other = dev_set();
    for name in ["alice.crt", "alice.key"] {
        fs::copy(file(other.path(), name), file(dir.path(), name)).expect("copy foreign file");
    }

    let result = pki::write_dev_set(dir.path(), &server_names(), &strings(&["alice"]));

    let err = result.expect_err("foreign certificate accepted");
    assert!(matches!(err, PkiError::LeafRejected { .. }), "{err:?}");
    assert!(err.to_string().contains("alice.crt"), "{err}");
}

#[test]
fn dev_set_rejects_server_cert_lacking_name() {
    let dir = dev_set();
    let mut names = server_names();
    names.push("watchword.internal".to_string());

    let result = pki::write_dev_set(dir.path(), &names, &[]);

    let err = result.expect_err("server certificate without the new name accepted");
    assert!(matches!(err, PkiError::LeafRejected { .. }), "{err:?}");
    assert!(err.to_string().contains("server.crt"), "{err}");
}

#[test]
fn load_or_generate_returns_existing_ca() {
    let dir = dev_set();

    let ca = DevCa::load_or_generate(dir.path()).expect("load CA");

    let on_disk = fs::read_to_string(file(dir.path(), "ca.crt")).expect("read ca.crt");
    assert_eq!(ca.cert_pem(), on_disk);
}

#[test]
fn server_config_names_missing_file() {
    let dir = dev_set();
    let missing = file(dir.path(), "absent.crt");

    let err = tls::server_config(&missing, &file(dir.path(), "server.key"), &file(dir.path(), "ca.crt"))
        .expect_err("missing certificate accepted");

    assert!(matches!(err, TlsError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.crt"), "{err}");
}

#[test]
fn server_config_names_file_without_certificate() {
    let dir = dev_set();
    let key_as_cert = file(dir.path(), "server.key");

    let err = tls::server_config(&key_as_cert, &file(dir.path(), "server.key"), &file(dir.path(), "ca.crt"))
        .expect_err("key file accepted as certificate");

    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("server.key"), "{err}");
}

#[test]
fn server_config_names_file_without_private_key() {
    let dir = dev_set();
    let cert_as_key = file(dir.path(), "server.crt");

    let err = tls::server_config(&file(dir.path(), "server.crt"), &cert_as_key, &file(dir.path(), "ca.crt"))
        .expect_err("certificate file accepted as key");

    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(err.to_string().contains("server.crt"), "{err}");
}

#[test]
fn server_config_rejects_mismatched_key() {
    let dir = dev_set();

    let err = tls::server_config(
        &file(dir.path(), "server.crt"),
        &file(dir.path(), "alice.key"),
        &file(dir.path(), "ca.crt"),
    )
    .expect_err("mismatched key accepted");

    assert!(matches!(err, TlsError::KeyPair { .. }), "{err:?}");
}

#[test]
fn client_config_rejects_mismatched_key() {
    let dir = dev_set();

    let err =
        tls::client_config(&file(dir.path(), "ca.crt"), &file(dir.path(), "alice.crt"), &file(dir.path(), "bob.key"))
            .expect_err("mismatched key accepted");

    assert!(matches!(err, TlsError::KeyPair { .. }), "{err:?}");
}

#[test]
fn install_crypto_provider_twice_is_harmless() {
    tls::install_crypto_provider();
    tls::install_crypto_provider();

    assert!(rustls::crypto::CryptoProvider::get_default().is_some());
}
