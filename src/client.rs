//! The HTTPS client of the `/v1/` API, shared by the CLI and the agent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

pub use crate::api::enrolment::{CertificateResponse, EnrolRequest, RenewRequest, TokenRequest, TokenResponse};
pub use crate::api::entities::{ClientSummary, CommandResponse, CreateRequest, Directory, GroupSummary};
pub use crate::api::{SecretList, SecretSummary, StatusResponse, WriteResponse};
use crate::tls;

mod events;
pub use events::{EventFeed, EventFilter, Notice};

/// Characters left as they are in a path segment: RFC 3986's unreserved set.
/// Names `.` and `..`, which URL parsers would resolve, are rejected by the name rules.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Time allowed for one ordinary request; watches add their own wait to it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS set-up: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("invalid server URL {url:?}: it must start with https://")]
    InvalidServer { url: String },
    #[error("cannot reach the server at {server}: {}", error_chain(source))]
    Unreachable { server: String, source: reqwest::Error },
    /// A client without a certificate reached a port that requires one, which
    /// closed the connection.
    #[error(
        "the server at {server} requires a client certificate on this port, and this client has none: \
         operator tokens and enrolment work only on the server's public endpoint (its public_listen address), \
         so point the client there, or use a certificate and key"
    )]
    CertificateRequired { server: String },
    /// The server returned an error body.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String, current_revision: Option<u64> },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Checked before sending, with the rule the server applies.
    #[error(transparent)]
    InvalidName(#[from] watchword_events::error::NameError),
}

/// Options of a secret write.
#[derive(Debug, Default, Clone)]
pub struct PutOptions {
    /// Octal file mode such as `0440`.
    pub mode: Option<String>,
    pub owner_group: Option<String>,
    pub description: Option<String>,
    pub file_name: Option<String>,
    pub file_owner: Option<String>,
    pub file_group: Option<String>,
    /// RFC 3339 expiry time of the new version.
    pub expires_at: Option<String>,
    pub conditions: Conditions,
}

/// Preconditions and idempotency key of a command.
#[derive(Debug, Default, Clone)]
pub struct Conditions {
    /// Apply only if the current revision is this one.
    pub if_revision: Option<u64>,
    /// Apply only if the secret does not exist.
    pub if_absent: bool,
    pub idempotency_key: Option<String>,
}

impl Conditions {
    fn apply(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(revision) = self.if_revision {
            request = request.header("if-match", format!("\"{revision}\""));
        }
        if self.if_absent {
            request = request.header("if-none-match", "*");
        }
        if let Some(key) = &self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request
    }
}

/// A secret's content with its metadata.
#[derive(Debug)]
pub struct SecretContent {
    pub content: Zeroizing<Vec<u8>>,
    pub version: u64,
    pub revision: u64,
    pub sequence: u64,
    /// File mode set on the secret, if any.
    pub mode: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    current_revision: Option<u64>,
}

/// A client of one Watchword server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    server: String,
    /// Operator token sent as `Authorization: Bearer`, for the public endpoint.
    token: Option<Zeroizing<String>>,
    /// For a client without a certificate: whether a server asked for one.
    certificate_requests: Option<Arc<tls::CertificateRequests>>,
}

impl ApiClient {
    /// Builds a client that authenticates with `cert` and `key` and trusts `ca`.
    pub fn new(server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<ApiClient, ClientError> {
        if !server.starts_with("https://") {
            return Err(ClientError::InvalidServer { url: server.to_owned() });
        }
        tls::install_crypto_provider();
        let http = tls::http_client(ca, cert, key)?;
        Ok(ApiClient { http, server: server.trim_end_matches('/').to_owned(), token: None, certificate_requests: None })
    }

    /// Builds a client of the public endpoint `server` that authenticates with an
    /// operator token instead of a certificate.
    pub fn with_token(server: &str, ca: &Path, token: &str) -> Result<ApiClient, ClientError> {
        let anonymous = ApiClient::anonymous(server, ca)?;
        Ok(ApiClient { token: Some(Zeroizing::new(token.to_owned())), ..anonymous })
    }

    /// Builds a client of the public endpoint `server` that sends no credentials.
    fn anonymous(server: &str, ca: &Path) -> Result<ApiClient, ClientError> {
        if !server.starts_with("https://") {
            return Err(ClientError::InvalidServer { url: server.to_owned() });
        }
        tls::install_crypto_provider();
        let requests = Arc::new(tls::CertificateRequests::default());
        let http = tls::anonymous_http_client_recording(ca, Arc::clone(&requests))?;
        let server = server.trim_end_matches('/').to_owned();
        Ok(ApiClient { http, server, token: None, certificate_requests: Some(requests) })
    }

    /// Issues an operator token for `identity`, valid for `ttl_secs`.
    pub async fn create_operator_token(
        &self,
        identity: &str,
        ttl_secs: Option<u64>,
    ) -> Result<crate::api::tokens::OperatorToken, ClientError> {
        let url = format!("{}/tokens", self.url(&["operators", identity])?);
        let body = crate::api::tokens::TokenRequest { ttl_secs };
        self.json(self.http.post(url).json(&body).timeout(REQUEST_TIMEOUT)).await
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Writes a new version of a secret.
    pub async fn put_secret(
        &self,
        name: &str,
        content: Vec<u8>,
        options: &PutOptions,
    ) -> Result<WriteResponse, ClientError> {
        let mut request = self.http.put(self.secret_url(name)?).timeout(REQUEST_TIMEOUT).body(content);
        let query = [
            ("mode", &options.mode),
            ("owner_group", &options.owner_group),
            ("description", &options.description),
            ("file_name", &options.file_name),
            ("file_owner", &options.file_owner),
            ("file_group", &options.file_group),
            ("expires_at", &options.expires_at),
        ];
        for (key, value) in query {
            if let Some(value) = value {
                request = request.query(&[(key, value)]);
            }
        }
        self.json(options.conditions.apply(request)).await
    }

    /// Writes a version with its content and metadata in one event.
    pub async fn post_version(
        &self,
        name: &str,
        body: &serde_json::Value,
        conditions: &Conditions,
    ) -> Result<WriteResponse, ClientError> {
        let url = format!("{}/versions", self.secret_url(name)?);
        self.json(conditions.apply(self.http.post(url).json(body).timeout(REQUEST_TIMEOUT))).await
    }

    /// Returns everything recorded about a secret but its content.
    pub async fn get_metadata(&self, name: &str) -> Result<crate::api::SecretDescription, ClientError> {
        let url = format!("{}/metadata", self.secret_url(name)?);
        self.json(self.http.get(url).timeout(REQUEST_TIMEOUT)).await
    }

    /// Replaces a secret's metadata.
    pub async fn put_metadata(
        &self,
        name: &str,
        metadata: &crate::secrets::metadata::MetadataJson,
        conditions: &Conditions,
    ) -> Result<WriteResponse, ClientError> {
        let url = format!("{}/metadata", self.secret_url(name)?);
        self.json(conditions.apply(self.http.put(url).json(metadata).timeout(REQUEST_TIMEOUT))).await
    }

    /// Sends a lifecycle command on a secret: `action` is empty for `DELETE
    /// /v1/secrets/{name}`, or a path below it such as `restore` or `versions/3/destroy`.
    pub async fn secret_command(
        &self,
        method: reqwest::Method,
        name: &str,
        action: &str,
        body: Option<&serde_json::Value>,
        conditions: &Conditions,
    ) -> Result<WriteResponse, ClientError> {
        let mut url = self.secret_url(name)?;
        if !action.is_empty() {
            url = format!("{url}/{action}");
        }
        let mut request = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.json(conditions.apply(request)).await
    }

    /// Lists the secrets whose current version expires within `within_secs`.
    pub async fn expiring(&self, within_secs: u64) -> Result<crate::api::ExpiringList, ClientError> {
        let request = self.http.get(format!("{}/v1/expiring", self.server)).query(&[("within_secs", within_secs)]);
        self.json(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// Reads a secret, waiting until the server's read model reflects `min_sequence`.
    pub async fn get_secret(&self, name: &str, min_sequence: Option<u64>) -> Result<SecretContent, ClientError> {
        let mut request = self.http.get(self.secret_url(name)?).timeout(REQUEST_TIMEOUT);
        if let Some(sequence) = min_sequence {
            request = request.query(&[("min_sequence", sequence)]);
        }
        self.content(request).await
    }

    /// Reads one version of a secret (administrators only).
    pub async fn get_version(&self, name: &str, version: u64) -> Result<SecretContent, ClientError> {
        let url = format!("{}/versions/{version}", self.secret_url(name)?);
        self.content(self.http.get(url).timeout(REQUEST_TIMEOUT)).await
    }

    /// Lists the versions of a secret, oldest first (metadata only).
    pub async fn list_versions(&self, name: &str) -> Result<crate::api::VersionList, ClientError> {
        let url = format!("{}/versions", self.secret_url(name)?);
        self.json(self.http.get(url).timeout(REQUEST_TIMEOUT)).await
    }

    async fn content(&self, request: reqwest::RequestBuilder) -> Result<SecretContent, ClientError> {
        let response = self.send(request).await?;
        let headers = response.headers().clone();
        let number = |name: &str| -> Result<u64, ClientError> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ClientError::Protocol(format!("missing or invalid {name} header")))
        };
        let mode = match headers.get("watchword-mode").and_then(|v| v.to_str().ok()) {
            Some(text) => Some(
                u32::from_str_radix(text, 8)
                    .map_err(|_| ClientError::Protocol(format!("invalid watchword-mode {text:?}")))?,
            ),
            None => None,
        };
        let (version, revision, sequence) =
            (number("watchword-version")?, number("watchword-revision")?, number("watchword-sequence")?);
        // NOTE: reqwest's own buffer of the body is not zeroized; only this copy is.
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(SecretContent { content: Zeroizing::new(body.to_vec()), version, revision, sequence, mode })
    }

    /// Lists the secrets this client may read, once the server reflects `min_sequence`.
    pub async fn list_secrets(&self, min_sequence: Option<u64>) -> Result<SecretList, ClientError> {
        self.list_secrets_with(min_sequence, false).await
    }

    /// Lists secrets; with `all`, operators also get deleted and destroyed secrets.
    pub async fn list_secrets_with(&self, min_sequence: Option<u64>, all: bool) -> Result<SecretList, ClientError> {
        let mut request = self.http.get(format!("{}/v1/secrets", self.server)).timeout(REQUEST_TIMEOUT);
        if all {
            request = request.query(&[("all", true)]);
        }
        if let Some(sequence) = min_sequence {
            request = request.query(&[("min_sequence", sequence)]);
        }
        self.json(request).await
    }

    /// Waits until the server has applied events past `after` (or `wait` passes) and
    /// lists the secrets this client may read.
    pub async fn watch(&self, after: u64, wait: Duration) -> Result<SecretList, ClientError> {
        let request = self
            .http
            .get(format!("{}/v1/watch", self.server))
            .query(&[("after", after), ("timeout_secs", wait.as_secs())])
            .timeout(wait + REQUEST_TIMEOUT);
        self.json(request).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.json(self.http.get(format!("{}/v1/status", self.server)).timeout(REQUEST_TIMEOUT)).await
    }

    /// Replaces an operator's roles.
    pub async fn set_roles(&self, identity: &str, roles: &[&str]) -> Result<CommandResponse, ClientError> {
        let url = format!("{}/roles", self.url(&["operators", identity])?);
        let body = crate::api::operators::RolesRequest { roles: roles.iter().map(|r| r.to_string()).collect() };
        self.json(self.http.put(url).json(&body).timeout(REQUEST_TIMEOUT)).await
    }

    pub async fn list_operators(&self) -> Result<Directory<crate::api::operators::OperatorSummary>, ClientError> {
        self.json(self.http.get(self.url(&["operators"])?).timeout(REQUEST_TIMEOUT)).await
    }

    /// Issues a one-time enrolment token for a client.
    pub async fn create_enrolment_token(
        &self,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<TokenResponse, ClientError> {
        let url = format!("{}/enrolment-tokens", self.url(&["clients", name])?);
        self.json(self.http.post(url).json(&TokenRequest { ttl_secs }).timeout(REQUEST_TIMEOUT)).await
    }

    /// Exchanges this client's current certificate for a new one with the CSR's key.
    pub async fn renew(&self, csr_pem: String) -> Result<CertificateResponse, ClientError> {
        let request = self.http.post(self.url(&["renew"])?).json(&RenewRequest { csr_pem });
        self.json(request.timeout(REQUEST_TIMEOUT)).await
    }

    /// Exchanges an enrolment token and a CSR for a certificate at the enrolment
    /// endpoint `server`, which needs no client certificate.
    pub async fn enrol(server: &str, ca: &Path, request: &EnrolRequest) -> Result<CertificateResponse, ClientError> {
        let anonymous = ApiClient::anonymous(server, ca)?;
        let url = anonymous.url(&["enrol"])?;
        anonymous.json(anonymous.http.post(url).json(request).timeout(REQUEST_TIMEOUT)).await
    }

    /// Registers a client by its certificate identity.
    pub async fn create_client(&self, request: &CreateRequest) -> Result<CommandResponse, ClientError> {
        self.json(self.http.post(format!("{}/v1/clients", self.server)).json(request).timeout(REQUEST_TIMEOUT)).await
    }

    /// Creates a group.
    pub async fn create_group(&self, request: &CreateRequest) -> Result<CommandResponse, ClientError> {
        self.json(self.http.post(format!("{}/v1/groups", self.server)).json(request).timeout(REQUEST_TIMEOUT)).await
    }

    /// Sends a command to a path below `/v1/`, each segment percent-encoded.
    pub async fn command(&self, method: reqwest::Method, segments: &[&str]) -> Result<CommandResponse, ClientError> {
        let url = self.url(segments)?;
        self.json(self.http.request(method, url).timeout(REQUEST_TIMEOUT)).await
    }

    pub async fn list_clients(&self) -> Result<Directory<ClientSummary>, ClientError> {
        self.json(self.http.get(self.url(&["clients"])?).timeout(REQUEST_TIMEOUT)).await
    }

    pub async fn get_client(&self, name: &str) -> Result<ClientSummary, ClientError> {
        self.json(self.http.get(self.url(&["clients", name])?).timeout(REQUEST_TIMEOUT)).await
    }

    pub async fn list_groups(&self) -> Result<Directory<GroupSummary>, ClientError> {
        self.json(self.http.get(self.url(&["groups"])?).timeout(REQUEST_TIMEOUT)).await
    }

    pub async fn get_group(&self, name: &str) -> Result<GroupSummary, ClientError> {
        self.json(self.http.get(self.url(&["groups", name])?).timeout(REQUEST_TIMEOUT)).await
    }

    /// Builds a URL below `/v1/`; every segment must be a valid client or group name,
    /// which the fixed words of the paths are too.
    fn url(&self, segments: &[&str]) -> Result<String, ClientError> {
        let mut url = format!("{}/v1", self.server);
        for segment in segments {
            watchword_events::names::validate_entity_name(segment)?;
            url.push('/');
            url.extend(utf8_percent_encode(segment, SEGMENT));
        }
        Ok(url)
    }

    fn secret_url(&self, name: &str) -> Result<String, ClientError> {
        watchword_events::names::validate_secret_name(name)?;
        Ok(format!("{}/v1/secrets/{}", self.server, utf8_percent_encode(name, SEGMENT)))
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token.as_str()),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Err(api_error(status, &text))
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        let server = self.server.clone();
        match &self.certificate_requests {
            Some(requests) if requests.seen() => ClientError::CertificateRequired { server },
            _ => ClientError::Unreachable { server, source },
        }
    }
}

/// Joins an error and its causes, so that a TLS failure such as an unknown CA
/// shows through reqwest's generic "error sending request".
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn api_error(status: StatusCode, text: &str) -> ClientError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
            current_revision: body.current_revision,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http_error".to_owned(),
            message: format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()),
            current_revision: None,
        },
    }
}
