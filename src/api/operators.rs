//! Routes that set and list operators' roles. Only administrators set roles.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};

use super::entities::{command_response, require_directory};
use super::extract::{Json, Path};
use super::{ApiError, AppState, write_context};
use crate::access::{Permission, Role};
use crate::entities::set_roles;
use crate::tls::ClientIdentity;

/// Body of `PUT /v1/operators/{identity}/roles`: the whole new set.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    pub roles: Vec<String>,
}

/// An operator as the API shows it; token ids only, never tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorSummary {
    pub identity: String,
    pub roles: Vec<String>,
    pub active_tokens: usize,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/operators", get(list_operators)).route("/v1/operators/{identity}/roles", put(put_roles))
}

async fn put_roles(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(identity): Path<String>,
    Json(request): Json<RolesRequest>,
) -> Result<Response, ApiError> {
    state.require(&client, Permission::Administer).await?;
    let roles =
        request.roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>().map_err(ApiError::bad_request)?;
    let context = write_context(&client, &headers)?;
    let committed = set_roles(&state.writer, &identity, &roles, &context).await?;
    tracing::info!(client.id = %client.name, operator = %identity, roles = ?request.roles, event.seq = committed.sequence, "operator roles set");
    Ok(command_response(&state, committed).await)
}

pub(super) async fn list_operators(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
) -> Result<Json<super::entities::Directory<OperatorSummary>>, ApiError> {
    require_directory(&state, &client).await?;
    let (operators, sequence) = state.reader.operators().await?;
    let now = crate::signer::now_micros();
    let items = operators
        .into_iter()
        .map(|o| OperatorSummary {
            active_tokens: o.tokens.values().filter(|t| !t.revoked && t.expires_at_micros > now).count(),
            identity: o.identity,
            roles: o.roles,
        })
        .collect();
    Ok(Json(super::entities::Directory { sequence, items }))
}
