//! Mutual TLS for the Watchword server and its clients.
//!
//! - [`install_crypto_provider`] makes rustls' ring provider the process default.
//! - [`server_config`], [`client_config`] and [`http_client`] build rustls and reqwest
//!   configurations from PEM files. Each error names the file and what is wrong with it.
//! - [`serve`] accepts TLS connections that present a client certificate from the
//!   configured CA, and hands each request to an axum router with the client's
//!   [`ClientIdentity`] in its extensions.
//! - [`identity_from_cert`] derives that identity from a certificate.
//!
//! The configurations use the ring provider explicitly, so they work whether or not
//! a process default is installed.
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use watchword::tls::{self, ClientIdentity};
//!
//! # async fn run() -> anyhow::Result<()> {
//! tls::install_crypto_provider();
//! let config = tls::server_config(
//!     "dev/tls/server.crt".as_ref(),
//!     "dev/tls/server.key".as_ref(),
//!     "dev/tls/ca.crt".as_ref(),
//! )?;
//! let router = Router::new().route(
//!     "/whoami",
//!     get(|Extension(client): Extension<ClientIdentity>| async move { client.name }),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let shutdown = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! tls::serve(listener, config, router, shutdown).await?;
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;
use tracing::{Instrument, Span, debug, error, info, warn};
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

/// Time a client has to complete the TLS handshake after the TCP connection opens.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time in-flight connections get to finish after shutdown begins, before [`serve`]
/// closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Time an HTTP/1 client has to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval of HTTP/2 pings, which close connections to peers that vanished
/// without closing them.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Pause after an accept error that is not about one connection (such as running
/// out of file descriptors), so the loop does not spin while the cause persists.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const CLIENT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Errors from loading TLS material and from checking a peer's certificate.
///
/// The file variants come from local configuration. The peer variants come from the
/// connecting client and occur in normal operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: file not found")]
    Missing { path: PathBuf },

    #[error("failed to read {path}: {source}")]
    Unreadable { path: PathBuf, source: io::Error },

    #[error("{path}: invalid PEM: {source}")]
    InvalidPem { path: PathBuf, source: pem::Error },

    #[error("{path}: no certificate found; expected a PEM block `BEGIN CERTIFICATE`")]
    NoCertificate { path: PathBuf },

    #[error(
        "{path}: no private key found; expected a PEM block `BEGIN PRIVATE KEY`, \
         `BEGIN EC PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`"
    )]
    NoPrivateKey { path: PathBuf },

    #[error("{path}: invalid CA certificate: {source}")]
    InvalidCaCertificate { path: PathBuf, source: rustls::Error },

    #[error("{path}: cannot verify client certificates with these CA certificates: {source}")]
    ClientVerifier { path: PathBuf, source: VerifierBuilderError },

    /// The private key is unsupported or does not belong to the certificate.
    #[error("failed to use certificate {cert} with private key {key}: {source}")]
    KeyPair { cert: PathBuf, key: PathBuf, source: rustls::Error },

    #[error("failed to build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    #[error("the peer presented no certificate")]
    NoPeerCertificate,

    #[error("invalid peer certificate: {reason}")]
    InvalidPeerCertificate { reason: String },

    #[error("the peer certificate has neither a URI SAN nor a subject CN")]
    NoPeerIdentity,

    #[error("invalid identity in the peer certificate: {reason}")]
    InvalidPeerIdentity { reason: &'static str },
}

/// The authenticated client of a request, taken from its verified certificate or,
/// on the public endpoint, from an operator token.
///
/// [`serve`] inserts it into every request's extensions, so a handler receives it
/// with `Extension<ClientIdentity>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate's first URI SAN (such as `spiffe://watchword.dev/agent-1`),
    /// or its subject CN if it has no URI SAN.
    pub name: String,
    /// Authentication method, `mtls` or `token`, recorded on the client's events.
    pub authentication: &'static str,
}

/// Records whether a server asked a client without a certificate for one.
///
/// A server that requires client certificates learns that the client has none only
/// after the client finished its TLS 1.3 handshake, so it closes the connection
/// while the client sends its request. reqwest 0.13 then reports either the TLS
/// alert `CertificateRequired` or only "connection closed", depending on timing
/// (both occur on loopback), and this record explains the failure in either case.
/// As a certificate resolver, it presents no certificate, like `with_no_client_auth`.
#[derive(Debug, Default)]
pub struct CertificateRequests {
    seen: AtomicBool,
}

impl CertificateRequests {
    /// Returns whether any server asked this client for a certificate.
    pub fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }
}

impl ResolvesClientCert for CertificateRequests {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.seen.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// Installs rustls' ring provider as the process-wide default.
///
/// Calling it again is harmless. If another provider was installed first, it stays
/// the default, which does not affect this module because its configurations name
/// the ring provider explicitly.
pub fn install_crypto_provider() {
    // `install_default` fails only when a default is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a server configuration that presents `cert` with `key` and requires
/// every client to present a certificate issued by a CA in `client_ca`.
///
/// ALPN offers `h2` and `http/1.1`. The files are PEM. `cert` may contain a chain
/// with the leaf first, and `client_ca` may contain several CA certificates.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let roots = load_roots(client_ca)?;

    // NOTE: no certificate revocation lists are configured, so a client certificate
    // stays accepted until it expires or its CA is removed from `client_ca`.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsError::ClientVerifier { path: client_ca.to_path_buf(), source })?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports both default versions, TLS 1.2 and 1.3.
        .expect("ring provider supports the default TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsError::KeyPair { cert: cert.to_path_buf(), key: key.to_path_buf(), source })?;
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}

/// Builds a server configuration that presents `cert` with `key` and requests no
/// client certificate, for [`serve_anonymous`].
pub fn server_config_without_client_auth(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsError::KeyPair { cert: cert.to_path_buf(), key: key.to_path_buf(), source })?;
    config.alpn_protocols = alpn_protocols();
    Ok(Arc::new(config))
}

/// Builds a client configuration that trusts the CA certificates in `ca` and
/// presents `cert` with `key` as its client certificate.
///
/// ALPN offers `h2` and `http/1.1`. rustls rejects a key that does not belong to
/// the certificate.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(ca)?;
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;

    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports both default versions, TLS 1.2 and 1.3.
        .expect("ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|source| TlsError::KeyPair { cert: cert.to_path_buf(), key: key.to_path_buf(), source })?;
    config.alpn_protocols = alpn_protocols();
    Ok(config)
}

/// Builds an HTTPS-only reqwest client on [`client_config`].
///
/// The client negotiates HTTP/2 or HTTP/1.1 through ALPN and times out connection
/// setup (TCP and TLS) after 10 s. It keeps idle connections in its pool for 90 s,
/// with TCP keep-alive, because a full mutual TLS handshake costs far more CPU than
/// a request on an open connection.
pub fn http_client(ca: &Path, cert: &Path, key: &Path) -> Result<reqwest::Client, TlsError> {
    let config = client_config(ca, cert, key)?;

    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .https_only(true)
        .connect_timeout(CLIENT_CONNECT_TIMEOUT)
        .tcp_keepalive(CLIENT_TCP_KEEPALIVE)
        .pool_idle_timeout(CLIENT_POOL_IDLE_TIMEOUT)
        .build()
        .map_err(TlsError::HttpClient)
}

/// Builds an HTTPS client that trusts `ca` and presents no certificate, for the
/// enrolment endpoint.
pub fn anonymous_http_client(ca: &Path) -> Result<reqwest::Client, TlsError> {
    anonymous_http_client_recording(ca, Arc::default())
}

/// Builds the client of [`anonymous_http_client`], which records in `requests`
/// whether a server asked it for a client certificate.
pub fn anonymous_http_client_recording(
    ca: &Path,
    requests: Arc<CertificateRequests>,
) -> Result<reqwest::Client, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = load_roots(ca)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_client_cert_resolver(requests);
    config.alpn_protocols = alpn_protocols();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .https_only(true)
        .connect_timeout(CLIENT_CONNECT_TIMEOUT)
        .build()
        .map_err(TlsError::HttpClient)
}

/// Derives the client identity from a DER certificate: its first URI SAN, or its
/// subject CN if it has no URI SAN.
///
/// This function does not verify the certificate, so pass only certificates that
/// the TLS handshake has verified. An empty identity, or one with control characters,
/// is rejected rather than replaced by the CN, so that a malformed URI SAN never
/// turns into a different identity.
pub fn identity_from_cert(der: &[u8]) -> Result<ClientIdentity, TlsError> {
    let invalid = |reason: String| TlsError::InvalidPeerCertificate { reason };
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|err| invalid(err.to_string()))?;

    let sans = cert.subject_alternative_name().map_err(|err| invalid(err.to_string()))?;
    let first_uri = sans.and_then(|sans| {
        sans.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
    });

    let name = match first_uri {
        Some(uri) => uri,
        None => {
            let common_name = cert.subject().iter_common_name().next().ok_or(TlsError::NoPeerIdentity)?;
            common_name
                .as_str()
                .map_err(|_| TlsError::InvalidPeerIdentity { reason: "the subject CN is not a text string" })?
        }
    };

    validate_peer_identity(name)?;
    Ok(ClientIdentity { name: name.to_string(), authentication: "mtls" })
}

/// Serves `router` over mutual TLS on `listener` until `shutdown` completes.
///
/// Each connection must finish its TLS handshake, client certificate included,
/// within 10 s. Its [`ClientIdentity`] (see [`identity_from_cert`]) and
/// `ConnectInfo<SocketAddr>` are inserted into every request's extensions. A
/// connection whose certificate yields no identity is closed before any request
/// reaches the router. HTTP/1.1 and HTTP/2 are served on the same port.
///
/// When `shutdown` completes, the listener is closed and in-flight connections get
/// 20 s to finish their requests: HTTP/2 peers receive GOAWAY and idle HTTP/1
/// connections close. Connections still open after that are dropped.
///
/// Handshake failures are logged at info (a rejected certificate) or debug (a peer
/// that hung up), never at error. Errors from `accept` are logged and retried, so
/// the function returns an error only if the listener's local address cannot be
/// read.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, tls, router, shutdown, PeerAuth::Required).await
}

/// Serves `router` like [`serve`] to clients without a certificate: requests carry
/// no [`ClientIdentity`]. Only for routes that authenticate by other means, such
/// as the enrolment endpoint with its one-time token.
pub async fn serve_anonymous(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, tls, router, shutdown, PeerAuth::None).await
}

/// Whether connections must present a client certificate with an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerAuth {
    Required,
    None,
}

async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    peer_auth: PeerAuth,
) -> io::Result<()> {
    let local_addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let http = Arc::new(http_builder());
    // Every connection watches this channel, and dropping the sender signals shutdown.
    let (stop_sender, stop_receiver) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    match peer_auth {
        PeerAuth::Required => info!(server.addr = %local_addr, "serving HTTPS, client certificates required"),
        PeerAuth::None => info!(server.addr = %local_addr, "serving HTTPS without client certificates"),
    }

    // NOTE: the number of concurrent connections and handshakes is not limited.
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(joined) = connections.join_next() => log_connection_end(joined),
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let span = tracing::info_span!(
                        "connection",
                        peer.addr = %peer,
                        client.id = tracing::field::Empty,
                    );
                    let connection = serve_connection(
                        acceptor.clone(),
                        tcp,
                        peer,
                        router.clone(),
                        http.clone(),
                        stop_receiver.clone(),
                        peer_auth,
                    );
                    connections.spawn(connection.instrument(span));
                }
                Err(err) => handle_accept_error(err).await,
            },
        }
    }

    drop(listener);
    drop(stop_sender);
    info!(
        server.addr = %local_addr,
        connections = connections.len(),
        "stopped accepting connections; waiting for open connections to finish"
    );
    drain_connections(&mut connections).await;
    info!(server.addr = %local_addr, "server stopped");
    Ok(())
}

fn alpn_protocols() -> Vec<Vec<u8>> {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// Reads a PEM file into a buffer that is zeroized on drop, because it may contain a
/// private key.
fn read_pem_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    fs::read(path).map(Zeroizing::new).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing { path: path.to_path_buf() },
        _ => TlsError::Unreadable { path: path.to_path_buf(), source },
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_bytes = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::InvalidPem { path: path.to_path_buf(), source })?;

    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem_bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem_bytes).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.to_path_buf() },
        source => TlsError::InvalidPem { path: path.to_path_buf(), source },
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::InvalidCaCertificate { path: path.to_path_buf(), source })?;
    }
    Ok(roots)
}

fn validate_peer_identity(name: &str) -> Result<(), TlsError> {
    if name.is_empty() {
        return Err(TlsError::InvalidPeerIdentity { reason: "the identity is empty" });
    }
    // Identities end up in logs and audit events, where control characters could
    // forge line breaks or terminal escapes.
    if name.chars().any(char::is_control) {
        return Err(TlsError::InvalidPeerIdentity { reason: "the identity contains control characters" });
    }
    Ok(())
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper enforces the header read timeout and sends HTTP/2 pings only when the
    // protocol has a timer.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL);
    builder
}

/// Runs one connection: the TLS handshake, the identity check, then HTTP until the
/// peer closes the connection or the server shuts down.
async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<()>,
    peer_auth: PeerAuth,
) {
    if let Err(err) = tcp.set_nodelay(true) {
        debug!(error = %err, "failed to set TCP_NODELAY");
    }

    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                log_handshake_error(&err);
                return;
            }
            Err(_) => {
                debug!(timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.changed() => {
            debug!("server shutting down; TLS handshake abandoned");
            return;
        }
    };

    // Returning drops the stream unread, which closes the connection before hyper
    // reads any request.
    let identity = match (peer_auth, peer_identity(&tls)) {
        (PeerAuth::None, _) => None,
        (PeerAuth::Required, Ok(identity)) => Some(identity),
        (PeerAuth::Required, Err(err)) => {
            info!(error = %err, "client certificate rejected; closing the connection");
            return;
        }
    };
    let span = Span::current();
    if let Some(identity) = &identity {
        span.record("client.id", identity.name.as_str());
    }
    debug!(
        tls.alpn = ?tls.get_ref().1.alpn_protocol().map(String::from_utf8_lossy),
        "TLS handshake complete"
    );

    let service = service_fn(move |mut request: Request<Incoming>| {
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        request.extensions_mut().insert(ConnectInfo(peer));
        // hyper runs each HTTP/2 stream in its own task, outside this connection's
        // span, so the span is attached to every request explicitly.
        router.clone().oneshot(request).instrument(span.clone())
    });

    let connection = http.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };

    match result {
        Ok(()) => debug!("connection closed"),
        Err(err) => debug!(error = %err, "connection closed with an error"),
    }
}

fn peer_identity(tls: &TlsStream<TcpStream>) -> Result<ClientIdentity, TlsError> {
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().and_then(|chain| chain.first()).ok_or(TlsError::NoPeerCertificate)?;
    identity_from_cert(leaf)
}

fn log_handshake_error(err: &io::Error) {
    // tokio-rustls reports TLS failures as an `io::Error` that wraps the rustls
    // error. Any other error is a transport failure, usually a peer hang-up.
    let tls_error = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(tls_error) => info!(tls.error = %tls_error, "TLS handshake failed"),
        None => debug!(error = %err, "TLS handshake failed: transport error"),
    }
}

async fn handle_accept_error(err: io::Error) {
    // These concern one connection that the peer gave up on before it was accepted.
    let is_connection_error = matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    );
    if is_connection_error {
        debug!(error = %err, "failed to accept a connection");
        return;
    }

    error!(
        error = %err,
        backoff = ?ACCEPT_ERROR_BACKOFF,
        "failed to accept connections; retrying after the backoff"
    );
    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
}

async fn drain_connections(connections: &mut JoinSet<()>) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = connections.join_next().await {
            log_connection_end(joined);
        }
    })
    .await;

    if drained.is_err() {
        warn!(
            connections = connections.len(),
            grace = ?SHUTDOWN_GRACE,
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
}

fn log_connection_end(joined: Result<(), JoinError>) {
    if let Err(err) = joined {
        if err.is_panic() {
            error!(error = %err, "connection task panicked");
        }
    }
}
