//! Enrolment: operators issue one-time tokens; a compute exchanges its token and a
//! CSR for a short-lived client certificate, and renews it with its current one.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use watchword_events::Actor;

use super::entities::require_client_manager;
use super::extract::{Json, Path};
use super::{ApiError, AppState, correlation_id, format_micros, write_context};
use crate::ca::{ClientCa, IssuedClientCert};
use crate::entities::{enrol, issue_enrolment_token, renew};
use crate::tls::ClientIdentity;
use crate::writer::{Precondition, WriteContext};

/// Default lifetime of an enrolment token, in seconds.
const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;

/// Body of `POST /v1/clients/{name}/enrolment-tokens`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds, 1 to 604800. Default 3600.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A new enrolment token, shown once.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub client: String,
    pub token: String,
    pub expires_at: String,
    pub sequence: u64,
}

/// Body of `POST /v1/enrol`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub client: String,
    pub token: String,
    pub csr_pem: String,
}

/// Body of `POST /v1/renew`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

/// An issued client certificate with the CA that issued it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub not_after: String,
    pub serial: String,
    pub sequence: u64,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/clients/{name}/enrolment-tokens", post(create_token))
        .route("/v1/renew", post(renew_certificate))
}

fn ca(state: &AppState) -> Result<&Arc<ClientCa>, ApiError> {
    state.ca.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "enrolment_disabled", "enrolment is off: the server has no [ca] section")
    })
}

async fn create_token(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(request): Json<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    require_client_manager(&state, &client, &name).await?;
    ca(&state)?;
    let context = write_context(&client, &headers)?;
    let ttl = request.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
    let issued = issue_enrolment_token(&state.writer, &name, ttl, &context).await?;
    // The token itself is never logged.
    tracing::info!(client.id = %client.name, target.client = %name, event.seq = issued.committed.sequence, "enrolment token issued");
    Ok(Json(TokenResponse {
        client: name,
        token: issued.token.to_string(),
        expires_at: format_micros(issued.expires_at_micros),
        sequence: issued.committed.sequence,
    }))
}

pub(super) async fn enrol_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<EnrolRequest>,
) -> Result<Json<CertificateResponse>, ApiError> {
    let ca = ca(&state)?;
    let context = WriteContext {
        precondition: Precondition::None,
        idempotency_key: None,
        actor: Actor { principal: request.client.clone(), authentication: "enrolment-token".to_owned() },
        correlation_id: correlation_id(&headers),
    };
    let result = enrol(&state.writer, ca, &request.client, &request.token, &request.csr_pem, &context).await;
    let (certificate, committed) = result.inspect_err(|error| {
        tracing::info!(target.client = %request.client, %error, "enrolment rejected");
    })?;
    tracing::info!(target.client = %request.client, certificate.serial = %certificate.serial, event.seq = committed.sequence, "client enrolled");
    Ok(Json(certificate_response(ca, certificate, committed.sequence)))
}

async fn renew_certificate(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Json(request): Json<RenewRequest>,
) -> Result<Json<CertificateResponse>, ApiError> {
    let ca = ca(&state)?;
    let context = write_context(&client, &headers)?;
    let (certificate, committed) = renew(&state.writer, ca, &client.name, &request.csr_pem, &context).await?;
    tracing::info!(client.id = %client.name, certificate.serial = %certificate.serial, event.seq = committed.sequence, "client certificate renewed");
    Ok(Json(certificate_response(ca, certificate, committed.sequence)))
}

fn certificate_response(ca: &ClientCa, certificate: IssuedClientCert, sequence: u64) -> CertificateResponse {
    let micros = i64::try_from(certificate.not_after.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    CertificateResponse {
        certificate_pem: certificate.cert_pem,
        ca_pem: ca.ca_pem().to_owned(),
        not_after: format_micros(micros),
        serial: certificate.serial,
        sequence,
    }
}
