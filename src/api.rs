//! The HTTPS API under `/v1/`: routes, handlers and the one place that maps errors
//! to HTTP statuses and stable JSON codes.
//!
//! Every route sits behind the mTLS accept loop, which rejects a connection without
//! a valid client certificate before any request reaches a handler. Handlers read
//! bodies, query strings and path parameters through the `extract` module, so a
//! malformed request gets a JSON error too.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use watchword_events::Actor;

use self::extract::Json;
use crate::access::AccessConfig;
use crate::reader::{ReadError, Reader};
use crate::tls::ClientIdentity;
use crate::writer::{Committed, MAX_CONTENT_BYTES, Precondition, WriteContext, WriteError, Writer};

pub mod enrolment;
pub mod entities;
pub mod events;
mod extract;
pub mod operators;
pub mod secrets;
pub mod tokens;

pub use secrets::{
    ExpiringList, JsonWrite, RollbackRequest, SecretDescription, SecretList, SecretSummary, VersionList,
    VersionSummary, WriteResponse,
};

/// Maximum time a write waits for this node's read model to reflect it.
const READ_YOUR_WRITE_WAIT: Duration = Duration::from_secs(2);

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub region: String,
    pub access: std::sync::Arc<AccessConfig>,
    pub reader: Reader,
    pub writer: Writer,
    pub secrets: crate::secrets::Secrets,
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
            format!("client {:?} lacks the role for this request: it {}", client.name, permission.requirement()),
        ))
    }
}

/// Builds the router of the `/v1/` API.
pub fn router(state: AppState) -> Router {
    with_fallbacks(routes())
        // One byte above the maximum reaches the handler, which returns 413 with the limit.
        .layer(DefaultBodyLimit::max(MAX_CONTENT_BYTES + 1))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_writes_when_stopped))
        .with_state(state)
}

/// Returns every route of the main endpoint, without fallbacks or layers.
fn routes() -> Router<AppState> {
    Router::new()
        .merge(secrets::routes())
        .route("/v1/events", get(events::stream_events))
        .route("/v1/status", get(status))
        .merge(entities::routes())
        .merge(enrolment::routes())
        .merge(operators::routes())
        .merge(tokens::routes())
}

/// Adds the handlers that return JSON errors for unknown paths and unsupported
/// methods. axum gives the method fallback only to the routes `router` holds when
/// this is called, so call it after adding them.
fn with_fallbacks(router: Router<AppState>) -> Router<AppState> {
    router.fallback(route_not_found).method_not_allowed_fallback(method_not_allowed)
}

/// Returns the error for a path that matches no route. A secret name is one path
/// segment, so a name with an unencoded `/` ends up here.
async fn route_not_found(uri: Uri) -> ApiError {
    let message = format!(
        "no API route matches the path {:?}; a secret name in a path must be percent-encoded as one segment (`/` as %2F)",
        uri.path()
    );
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
}

/// Returns the error for a method that a known path does not accept. axum adds the
/// `Allow` header.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let message =
        format!("method {method} is not allowed on {}; the Allow header lists the methods it accepts", uri.path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message)
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
            WriteError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            WriteError::FileNameTaken { .. } => ApiError::new(StatusCode::CONFLICT, "file_name_taken", message),
            WriteError::Read(error) => ApiError::from(error),
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

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusResponse {
    pub region: String,
    pub applied_sequence: u64,
    pub projection: String,
    pub version: String,
    /// The server's maximum secret content size, in bytes.
    #[serde(default)]
    pub max_content_bytes: Option<u64>,
    /// The server's maximum encoded metadata size, in bytes.
    #[serde(default)]
    pub max_metadata_bytes: Option<u64>,
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
        max_content_bytes: Some(state.secrets.limits().max_content_bytes as u64),
        max_metadata_bytes: Some(state.secrets.limits().max_metadata_bytes as u64),
    })
}

/// Formats microseconds since the Unix epoch as RFC 3339.
pub fn format_micros(micros: i64) -> String {
    watchword_events::changes::format_micros(micros)
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
