//! Operator tokens, and the public endpoint that accepts them without a client
//! certificate.
//!
//! A token is `ww1.<payload>.<signature>`, both parts unpadded base64url. The
//! payload is the MessagePack array `[identity, token id, expiry in microseconds]`
//! and the signature is the HSM root key's Ed25519 signature over
//! `watchword operator token v1\0` followed by the payload, so a token cannot be
//! mistaken for a signed event. The issuance and any revocation are operator
//! events; the token itself is never recorded or logged. A token is accepted only
//! on the public endpoint and only on its routes: it cannot read secret content,
//! set roles or issue tokens, so a stolen token cannot mint more.

use std::convert::Infallible;

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use watchword_events::Aggregate;
use watchword_events::body::{
    KIND_OPERATOR_TOKEN_ISSUED, KIND_OPERATOR_TOKEN_REVOKED, TokenIssued, TokenRevoked, encode_body,
};

use super::extract::{Json, Path};
use super::{ApiError, AppState, format_micros, write_context};
use crate::access::Permission;
use crate::signer::now_micros;
use crate::tls::ClientIdentity;
use crate::writer::Draft;

const PREFIX: &str = "ww1";
const SIGNING_CONTEXT: &[u8] = b"watchword operator token v1\0";

/// Body of `POST /v1/operators/{identity}/tokens`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds, 1 to 2592000 (30 days). Default 3600.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A new operator token, shown once.
#[derive(Debug, Serialize, Deserialize)]
pub struct OperatorToken {
    pub identity: String,
    pub token_id: String,
    pub token: String,
    pub expires_at: String,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/operators/{identity}/tokens", post(issue_token))
        .route("/v1/operators/{identity}/tokens/{token_id}", delete(revoke_token))
}

/// Builds the router of the public endpoint: enrolment, and the routes that accept
/// operator tokens. Every other route of the main endpoint rejects a token with 403
/// and the reason, and an unknown path gets the main endpoint's 404.
pub fn public_router(state: AppState) -> Router {
    let token_routes = Router::new()
        .route("/v1/secrets", get(super::secrets::list_secrets))
        .route("/v1/secrets/{name}", put(super::secrets::put_secret))
        .route("/v1/status", get(super::status))
        .merge(super::entities::routes())
        .route("/v1/operators", get(super::operators::list_operators))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::refuse_writes_when_stopped))
        .layer(axum::extract::DefaultBodyLimit::max(crate::writer::MAX_CONTENT_BYTES + 1));
    let denied = token_denied_routes(state.clone());
    let forward_to_denied = {
        let denied = denied.clone();
        move |request: Request| async move { denied.oneshot(request).await }
    };
    Router::new()
        .route("/v1/enrol", post(super::enrolment::enrol_client))
        .method_not_allowed_fallback(super::method_not_allowed)
        .merge(token_routes)
        // Reaches only the token routes, because enrolment has its fallback already. A
        // method they lack here may be one the main endpoint serves, such as GET on
        // /v1/secrets/{name}, so the main endpoint's routes decide between 403 and 405.
        .method_not_allowed_fallback(forward_to_denied)
        .fallback_service(denied)
        .with_state(state)
}

/// Builds the main endpoint's routes as a token caller sees them: each route
/// authenticates the token and then returns 403. [`deny_token`] replaces the
/// routes' handlers rather than running before them, so none of those handlers can
/// run for a token. Unknown paths and methods get the main endpoint's 404 and 405.
fn token_denied_routes(state: AppState) -> Router {
    let deny = tower::layer::layer_fn(|_handler: axum::routing::Route| tower::service_fn(deny_token));
    let routes = super::routes()
        .route_layer(deny)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate));
    super::with_fallbacks(routes).with_state(state)
}

/// Returns 403 to an operator token on a route that needs a client certificate.
async fn deny_token(request: Request) -> Result<Response, Infallible> {
    let client = request.extensions().get::<ClientIdentity>().map_or("", |client| client.name.as_str());
    let (method, path) = (request.method(), request.uri().path());
    tracing::info!(client.id = %client, http.method = %method, http.path = path, "operator token denied on a route that needs a client certificate");
    let message = format!(
        "{method} {path} does not accept operator tokens: a token manages clients, groups and grants, lists \
         secrets and writes them, but cannot read secret content, set roles or issue tokens; send this request \
         with a client certificate to the server's main endpoint (its listen address)"
    );
    Ok(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response())
}

/// Checks the bearer token and passes the request on as its operator.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return unauthenticated("an operator token is required: send Authorization: Bearer <token>");
    };
    match verify(&state, token).await {
        Ok(identity) => {
            request.extensions_mut().insert(ClientIdentity { name: identity, authentication: "token" });
            next.run(request).await
        }
        Err(reason) => {
            tracing::info!(%reason, "operator token rejected");
            unauthenticated(&format!("operator token rejected: {reason}"))
        }
    }
}

fn unauthenticated(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response()
}

#[derive(Serialize, Deserialize)]
struct Payload(String, String, i64);

/// Returns the operator a token names, after checking its signature, expiry and
/// that it was issued and not revoked.
async fn verify(state: &AppState, token: &str) -> Result<String, &'static str> {
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed token");
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| "malformed token")?;
    let signature: [u8; 64] =
        URL_SAFE_NO_PAD.decode(signature).ok().and_then(|s| s.try_into().ok()).ok_or("malformed token")?;

    let root = VerifyingKey::from_bytes(&state.root_public_key).map_err(|_| "the server's root key is invalid")?;
    let message = [SIGNING_CONTEXT, &payload].concat();
    root.verify_strict(&message, &Signature::from_bytes(&signature)).map_err(|_| "invalid signature")?;

    let Payload(identity, token_id, expires_at) = rmp_serde::from_slice(&payload).map_err(|_| "malformed token")?;
    if now_micros() > expires_at {
        return Err("the token has expired");
    }
    let operator = state.reader.operator(&identity).await.map_err(|_| "the read model is unavailable")?;
    let issued = operator.as_ref().and_then(|o| o.tokens.get(&token_id));
    match issued {
        Some(token) if !token.revoked => Ok(identity),
        Some(_) => Err("the token was revoked"),
        None => Err("the token is not known to this server yet; retry shortly"),
    }
}

async fn issue_token(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(identity): Path<String>,
    Json(request): Json<TokenRequest>,
) -> Result<Json<OperatorToken>, ApiError> {
    state.require(&client, Permission::Administer).await?;
    let ttl = request.ttl_secs.unwrap_or(3600);
    if !(1..=30 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::bad_request(format!("token lifetime {ttl} s must be between 1 s and 30 days")));
    }
    let token_id = uuid::Uuid::now_v7().to_string();
    let expires_at = now_micros() + i64::try_from(ttl).unwrap_or(0) * 1_000_000;
    let payload = rmp_serde::to_vec(&Payload(identity.clone(), token_id.clone(), expires_at)).expect("payload encodes");
    let signature = state.writer.sign_with_root(&[SIGNING_CONTEXT, &payload].concat()).await?;

    let body = encode_body(&TokenIssued { token_id: token_id.clone(), expires_at_micros: expires_at });
    let committed = append(&state, &client, &headers, &identity, KIND_OPERATOR_TOKEN_ISSUED, body).await?;
    super::wait_for_projection(&state, &committed).await;
    tracing::info!(client.id = %client.name, operator = %identity, token.id = %token_id, event.seq = committed.sequence, "operator token issued");
    let token = format!("{PREFIX}.{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(signature));
    Ok(Json(OperatorToken { identity, token_id, token, expires_at: format_micros(expires_at) }))
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path((identity, token_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.require(&client, Permission::Administer).await?;
    if uuid::Uuid::parse_str(&token_id).is_err() {
        return Err(ApiError::bad_request(format!(
            "token id {token_id:?} is not a token id: use the UUID printed when the token was issued"
        )));
    }
    // Every issued token is in the read model before its issuer got the token, so an
    // id it does not know was never issued to this operator.
    let issued = state.reader.operator(&identity).await?.and_then(|o| o.tokens.get(&token_id).cloned());
    match issued {
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("operator {identity:?} has no token {token_id}; check the identity and the token id"),
            ));
        }
        Some(token) if token.revoked => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("token {token_id} of operator {identity:?} is already revoked"),
            ));
        }
        Some(_) => {}
    }
    let body = encode_body(&TokenRevoked { token_id: token_id.clone() });
    let committed = append(&state, &client, &headers, &identity, KIND_OPERATOR_TOKEN_REVOKED, body).await?;
    tracing::info!(client.id = %client.name, operator = %identity, token.id = %token_id, event.seq = committed.sequence, "operator token revoked");
    Ok(super::entities::command_response(&state, committed).await)
}

async fn append(
    state: &AppState,
    client: &ClientIdentity,
    headers: &HeaderMap,
    identity: &str,
    kind: &'static str,
    body: Vec<u8>,
) -> Result<crate::writer::Committed, ApiError> {
    watchword_events::names::validate_entity_name(identity).map_err(crate::writer::WriteError::from)?;
    let context = write_context(client, headers)?;
    let aggregate = Aggregate::operator(identity);
    let committed = state
        .writer
        .append(&aggregate, &context, &|_, _, _| {
            let draft = Draft { kind, body: body.clone(), data_key: None };
            Box::pin(async move { Ok(draft) })
        })
        .await?;
    Ok(committed)
}
