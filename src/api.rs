//! The HTTPS API under `/v1/`: routes, handlers and the one place that maps errors
//! to HTTP statuses and stable JSON codes.
//!
//! Every route sits behind the mTLS accept loop, which rejects a connection without
//! a valid client certificate before any request reaches a handler.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use watchword_events::Actor;
use watchword_events::fold::SecretState;
use zeroize::Zeroizing;

use crate::access::{AccessConfig, Action};
use crate::config::parse_mode;
use crate::reader::{MAX_SEQUENCE_WAIT, ReadError, Reader};
use crate::tls::ClientIdentity;
use crate::writer::{
    Committed, MAX_CONTENT_BYTES, Precondition, WriteContext, WriteError, WriteSecret, Writer, content_version,
};

pub mod enrolment;
pub mod entities;
pub mod events;
pub mod operators;
pub mod tokens;

/// Maximum wait of one watch request.
const MAX_WATCH: Duration = Duration::from_secs(60);

/// Maximum time a write waits for this node's read model to reflect it.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(2);

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub region: String,
    pub access: std::sync::Arc<AccessConfig>,
    pub reader: Reader,
    pub writer: Writer,
    /// The CA that issues client certificates, when enrolment is on.
    pub ca: Option<std::sync::Arc<crate::ca::ClientCa>>,
    /// The HSM root public key, which verifies operator tokens.
    pub root_public_key: [u8; 32],
    /// Turns true when the server shuts down, so long-polls end at once.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The notices stream, which the event feed reads.
    pub changes: crate::changes::ChangeStream,
}

impl AppState {
    /// Returns the roles of a client: `admin` for the configured operators, and the
    /// roles its operator events set. A stored role that no longer parses is skipped.
    pub async fn roles(&self, client: &ClientIdentity) -> Result<Vec<crate::access::Role>, ApiError> {
        let mut roles = Vec::new();
        if self.access.operators.iter().any(|operator| operator == &client.name) {
            roles.push(crate::access::Role::Admin);
        }
        if let Some(operator) = self.reader.operator(&client.name).await? {
            for text in &operator.roles {
                match crate::access::Role::parse(text) {
                    Ok(role) => roles.push(role),
                    Err(error) => tracing::warn!(client.id = %client.name, %error, "skipping an invalid stored role"),
                }
            }
        }
        Ok(roles)
    }

    /// Rejects the request unless the client has `permission`.
    pub async fn require(
        &self,
        client: &ClientIdentity,
        permission: crate::access::Permission<'_>,
    ) -> Result<Vec<crate::access::Role>, ApiError> {
        let roles = self.roles(client).await?;
        if crate::access::permits(&roles, permission) {
            return Ok(roles);
        }
        tracing::info!(client.id = %client.name, ?permission, "request denied");
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("client {:?} lacks the role for this request", client.name),
        ))
    }
}

/// Builds the router of the `/v1/` API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", get(get_secret).put(put_secret))
        .route("/v1/secrets/{name}/versions", get(list_versions))
        .route("/v1/secrets/{name}/versions/{version}", get(get_version))
        .route("/v1/watch", get(watch))
        .route("/v1/events", get(events::stream_events))
        .route("/v1/status", get(status))
        .merge(entities::routes())
        .merge(enrolment::routes())
        .merge(operators::routes())
        .merge(tokens::routes())
        // One byte above the maximum reaches the handler, which returns 413 with the limit.
        .layer(DefaultBodyLimit::max(MAX_CONTENT_BYTES + 1))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_writes_when_stopped))
        .with_state(state)
}

/// Rejects every change while this node's projection has stopped. The change would
/// be committed to the stream but never visible here, so a client that received
/// success would wrongly believe that a revocation or rotation took effect.
async fn refuse_writes_when_stopped(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let safe = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if let crate::projector::Progress::Stopped { applied, reason } = state.reader.progress() {
        if !safe {
            let message = format!(
                "this server's projection stopped after stream sequence {applied} ({reason}); \
                 changes are refused until an operator repairs it (see projector.skip_sequences)"
            );
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "projection_stopped", message).into_response();
        }
    }
    next.run(request).await
}

/// An API failure: a stable `code`, a status and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    current_revision: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_revision: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), current_revision: None }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Returns the error for a missing secret, which is also the error for a secret
    /// the caller may not read, so that existence does not leak.
    fn not_found(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("secret {name:?} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code, message: &self.message, current_revision: self.current_revision };
        (self.status, Json(body)).into_response()
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        let message = error.to_string();
        match error {
            WriteError::InvalidName(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", message),
            WriteError::Invalid(_) => ApiError::bad_request(message),
            WriteError::State(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            WriteError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            WriteError::Rejected(_) => ApiError::new(StatusCode::FORBIDDEN, "rejected", message),
            WriteError::Ca(crate::ca::CaError::InvalidCsr(_)) => ApiError::bad_request(message),
            WriteError::Ca(_) => unavailable(message),
            WriteError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "content_too_large", message),
            WriteError::Conflict { current, .. } => {
                ApiError { current_revision: current, ..ApiError::new(StatusCode::CONFLICT, "conflict", message) }
            }
            WriteError::IdempotencyKeyReused { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", message)
            }
            WriteError::Contended(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "contended", message),
            WriteError::Hsm(_) | WriteError::Stream(_) => unavailable(message),
            WriteError::CorruptHead { .. } => internal(message),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> ApiError {
        let message = error.to_string();
        match error {
            ReadError::NotYetProjected { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_yet_projected", message)
            }
            ReadError::DataKeyErased { .. } => ApiError::new(StatusCode::GONE, "destroyed", message),
            ReadError::Hsm(_) | ReadError::Stream(_) | ReadError::ProjectionStopped { .. } => unavailable(message),
            ReadError::ReadModel(_)
            | ReadError::DataKeyMismatch { .. }
            | ReadError::Content { .. }
            | ReadError::Task(_) => internal(message),
        }
    }
}

fn unavailable(message: String) -> ApiError {
    tracing::warn!(error = %message, "dependency unavailable");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
}

fn internal(message: String) -> ApiError {
    tracing::error!(error = %message, "internal error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// Query of `PUT /v1/secrets/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    /// File mode agents give the secret, in octal such as `0440`.
    mode: Option<String>,
}

/// Query of reads: the minimum stream sequence the read model must reflect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    min_sequence: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    #[serde(default)]
    after: u64,
    timeout_secs: Option<u64>,
}

/// A written version, as returned by `PUT`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteResponse {
    pub name: String,
    pub version: u64,
    pub revision: u64,
    pub sequence: u64,
    pub replayed: bool,
}

/// A secret's metadata, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSummary {
    pub name: String,
    pub version: u64,
    pub revision: u64,
    pub size: u64,
    /// Octal file mode, or `None` for the agent's default.
    pub mode: Option<String>,
    pub updated_at: String,
    pub updated_by: String,
    pub sequence: u64,
}

/// A list of secrets and the stream sequence it reflects.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretList {
    pub sequence: u64,
    pub secrets: Vec<SecretSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub region: String,
    pub applied_sequence: u64,
    pub projection: String,
    pub version: String,
}

async fn put_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    state.require(&client, crate::access::Permission::Administer).await?;
    // A body above the limit is cut off before this handler reads it all.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "content_too_large",
            format!("content is above the maximum of {MAX_CONTENT_BYTES} bytes"),
        ),
        _ => ApiError::bad_request(format!("cannot read the request body: {rejection}")),
    })?;
    let request = WriteSecret {
        mode: query.mode.as_deref().map(parse_mode).transpose().map_err(ApiError::bad_request)?,
        context: write_context(&client, &headers)?,
        content: Zeroizing::new(body.to_vec()),
        name,
    };

    let committed = state.writer.write_secret(&request).await?;
    wait_for_projection(&state, &committed).await;
    let version = content_version(&committed.event).map_err(|e| internal(e.to_string()))?;
    tracing::info!(client.id = %client.name, secret.name = %request.name, secret.version = version, event.seq = committed.sequence, replayed = committed.replayed, "secret written");
    Ok(write_response(&request.name, version, committed))
}

/// Builds the context of a write from the caller and the request headers.
fn write_context(client: &ClientIdentity, headers: &HeaderMap) -> Result<WriteContext, ApiError> {
    Ok(WriteContext {
        precondition: precondition(headers)?,
        idempotency_key: idempotency_key(headers)?,
        actor: Actor { principal: client.name.clone(), authentication: client.authentication.to_owned() },
        correlation_id: correlation_id(headers),
    })
}

/// Waits until this node's read model reflects a write, so a client that writes and
/// reads back gets its own write. The write is committed either way: past the bound
/// the response still reports success, and `min_sequence` gives the same guarantee
/// on other nodes.
async fn wait_for_projection(state: &AppState, committed: &Committed) {
    if let Err(error) = state.reader.wait_for(committed.sequence, READ_YOUR_WRITE_WAIT).await {
        tracing::debug!(event.seq = committed.sequence, %error, "write returned before the read model reflected it");
    }
}

fn write_response(name: &str, version: u64, committed: Committed) -> Response {
    let status = if committed.revision() == 1 && !committed.replayed { StatusCode::CREATED } else { StatusCode::OK };
    let etag = etag(committed.revision());
    let body = WriteResponse {
        name: name.to_owned(),
        version,
        revision: committed.revision(),
        sequence: committed.sequence,
        replayed: committed.replayed,
    };
    (status, [(header::ETAG, etag)], Json(body)).into_response()
}

async fn get_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    if let Some(sequence) = query.min_sequence {
        state.reader.wait_for(sequence, MAX_SEQUENCE_WAIT).await?;
    }
    if !may_read(&state, &client, std::slice::from_ref(&name)).await?[0] {
        tracing::info!(client.id = %client.name, secret.name = %name, "read denied");
        return Err(ApiError::not_found(&name));
    }
    let (secret, sequence) = state.reader.metadata(&name).await?;
    let secret = secret.ok_or_else(|| ApiError::not_found(&name))?;

    let content = state.reader.content(&secret).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::ETAG, etag(secret.revision));
    headers.insert("watchword-version", secret.current.version.into());
    headers.insert("watchword-revision", secret.revision.into());
    headers.insert("watchword-sequence", sequence.into());
    if let Some(mode) = secret.current.mode {
        headers.insert(
            "watchword-mode",
            HeaderValue::from_str(&format!("{mode:04o}")).expect("octal digits are a valid header"),
        );
    }
    // NOTE: the response body leaves this buffer for hyper's, which is not zeroized.
    Ok((headers, content.to_vec()).into_response())
}

/// One version of a secret, as `GET /v1/secrets/{name}/versions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: u64,
    pub revision: u64,
    pub size: u64,
    pub mode: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

/// The versions of a secret, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionList {
    pub name: String,
    pub sequence: u64,
    pub versions: Vec<VersionSummary>,
}

/// Lists a secret's versions (metadata only) to clients that may read the secret,
/// and to administrators and auditors.
async fn list_versions(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let roles = state.roles(&client).await?;
    let privileged = roles.iter().any(|r| matches!(r, crate::access::Role::Admin | crate::access::Role::Auditor));
    if !privileged && !may_read(&state, &client, std::slice::from_ref(&name)).await?[0] {
        return Err(ApiError::not_found(&name));
    }
    let (versions, sequence) = state.reader.versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(&name));
    }
    let versions = versions
        .iter()
        .map(|v| VersionSummary {
            version: v.version,
            revision: v.revision,
            size: v.size,
            mode: v.mode.map(|m| format!("{m:04o}")),
            created_at: format_micros(v.created_at_micros),
            created_by: v.created_by.clone(),
        })
        .collect();
    Ok(Json(VersionList { name, sequence, versions }))
}

/// Returns the content of one version; administrators only, because an earlier
/// version may hold a credential that was rotated away on purpose.
async fn get_version(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    if !state.roles(&client).await?.contains(&crate::access::Role::Admin) {
        tracing::info!(client.id = %client.name, secret.name = %name, secret.version = version, "version read denied");
        return Err(ApiError::not_found(&name));
    }
    let (versions, sequence) = state.reader.versions(&name).await?;
    let found = versions.iter().find(|v| v.version == version).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("secret {name:?} has no version {version}"))
    })?;
    let content = state.reader.version_content(&name, found).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("watchword-version", found.version.into());
    headers.insert("watchword-revision", found.revision.into());
    headers.insert("watchword-sequence", sequence.into());
    Ok((headers, content.to_vec()).into_response())
}

async fn list_secrets(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Query(query): Query<ReadQuery>,
) -> Result<Json<SecretList>, ApiError> {
    if let Some(sequence) = query.min_sequence {
        state.reader.wait_for(sequence, MAX_SEQUENCE_WAIT).await?;
    }
    Ok(Json(readable_secrets(&state, &client).await?))
}

/// Long-polls until the read model moves past `after`, then lists what the caller may read.
async fn watch(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Query(query): Query<WatchQuery>,
) -> Result<Json<SecretList>, ApiError> {
    let limit = Duration::from_secs(query.timeout_secs.unwrap_or(30)).min(MAX_WATCH);
    let mut stopping = state.stopping.clone();
    tokio::select! {
        _ = state.reader.wait_past(query.after, limit) => {}
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
    Ok(Json(readable_secrets(&state, &client).await?))
}

async fn status(State(state): State<AppState>) -> Json<StatusResponse> {
    let progress = state.reader.progress();
    let projection = match &progress {
        crate::projector::Progress::Applied(_) => "running".to_owned(),
        crate::projector::Progress::Stopped { reason, .. } => format!("stopped: {reason}"),
    };
    Json(StatusResponse {
        region: state.region.clone(),
        applied_sequence: progress.applied(),
        projection,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn readable_secrets(state: &AppState, client: &ClientIdentity) -> Result<SecretList, ApiError> {
    let (secrets, sequence) = state.reader.list().await?;
    let roles = state.roles(client).await?;
    if roles.iter().any(|r| matches!(r, crate::access::Role::Admin | crate::access::Role::Auditor)) {
        // Administrators and auditors see the metadata of every secret.
        return Ok(SecretList { sequence, secrets: secrets.iter().map(summary).collect() });
    }
    let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
    let allowed = may_read(state, client, &names).await?;
    let secrets = secrets.iter().zip(allowed).filter(|(_, allowed)| *allowed).map(|(s, _)| summary(s)).collect();
    Ok(SecretList { sequence, secrets })
}

/// Returns, for each name, whether the client may read that secret: the one read
/// rule of the read, list and watch paths. A client may read a secret that the
/// configuration's allow-list grants it, or that a group it belongs to has a
/// grant on while the client is enabled.
pub(crate) async fn may_read(
    state: &AppState,
    client: &ClientIdentity,
    names: &[String],
) -> Result<Vec<bool>, ApiError> {
    if state.roles(client).await?.contains(&crate::access::Role::Admin) {
        return Ok(vec![true; names.len()]);
    }
    let granted = state.reader.granted(&client.name, names.to_vec()).await?;
    Ok(names
        .iter()
        .zip(granted)
        .map(|(name, granted)| granted || state.access.allows(&client.name, Action::Read, name))
        .collect())
}

fn summary(state: &SecretState) -> SecretSummary {
    SecretSummary {
        name: state.name.clone(),
        version: state.current.version,
        revision: state.revision,
        size: state.current.size,
        mode: state.current.mode.map(|m| format!("{m:04o}")),
        updated_at: format_micros(state.current.created_at_micros),
        updated_by: state.current.created_by.clone(),
        sequence: state.sequence,
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339.
pub fn format_micros(micros: i64) -> String {
    watchword_events::changes::format_micros(micros)
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits and quotes are a valid header")
}

/// Reads `If-Match` (a revision) or `If-None-Match: *` (must not exist).
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let if_match = header_text(headers, "if-match")?;
    let if_none_match = header_text(headers, "if-none-match")?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("send either If-Match or If-None-Match, not both")),
        (None, None) => Ok(Precondition::None),
        (None, Some("*")) => Ok(Precondition::Absent),
        (None, Some(other)) => Err(ApiError::bad_request(format!(
            "unsupported If-None-Match value {other:?}: only \"*\" (the secret must not exist) is supported"
        ))),
        (Some(value), None) => {
            let revision = value.trim().trim_matches('"');
            revision.parse().map(Precondition::Revision).map_err(|_| {
                ApiError::bad_request(format!(
                    "unsupported If-Match value {value:?}: send one revision as returned in ETag, such as \"3\""
                ))
            })
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(key) = header_text(headers, "idempotency-key")? else {
        return Ok(None);
    };
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters"));
    }
    Ok(Some(key.to_owned()))
}

fn correlation_id(headers: &HeaderMap) -> String {
    match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.to_owned(),
        _ => Uuid::now_v7().to_string(),
    }
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => {
            value.to_str().map(Some).map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))
        }
    }
}
