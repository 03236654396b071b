//! Routes that manage clients, groups, memberships and grants. Only operators
//! listed in the configuration may call them.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use watchword_events::fold::{ClientState, GroupState};

use super::extract::{Json, Path};
use super::{ApiError, AppState, format_micros, wait_for_projection, write_context};
use crate::access::Permission;
use crate::entities::{ClientCommand, GroupCommand, run_client, run_group};
use crate::tls::ClientIdentity;
use crate::writer::Committed;

/// Body of `POST /v1/clients` and `POST /v1/groups`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub owner_group: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// Outcome of a command on a client or a group.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandResponse {
    pub kind: String,
    pub revision: u64,
    pub sequence: u64,
    pub replayed: bool,
}

/// A client as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSummary {
    pub name: String,
    pub enabled: bool,
    pub owner_group: Option<String>,
    pub description: String,
    pub created_at: String,
    pub created_by: String,
}

/// A group as the API shows it, with members and grants when read alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    pub owner_group: Option<String>,
    pub description: String,
    pub created_at: String,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
}

/// Clients and groups with the stream sequence they reflect.
#[derive(Debug, Serialize, Deserialize)]
pub struct Directory<T> {
    pub sequence: u64,
    pub items: Vec<T>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/clients", get(list_clients).post(create_client))
        .route("/v1/clients/{name}", get(get_client).delete(delete_client))
        .route("/v1/clients/{name}/disable", post(disable_client))
        .route("/v1/clients/{name}/enable", post(enable_client))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route("/v1/groups/{name}", get(get_group).delete(delete_group))
        .route("/v1/groups/{name}/members/{client}", put(add_member).delete(remove_member))
        .route("/v1/groups/{name}/grants/{secret}", put(add_grant).delete(remove_grant))
}

/// Rejects a client without a role that reads the directory.
pub(super) async fn require_directory(state: &AppState, client: &ClientIdentity) -> Result<(), ApiError> {
    state.require(client, Permission::ReadDirectory).await.map(|_| ())
}

/// Rejects a client that may not manage the client `name` (owned by its owner group).
pub(super) async fn require_client_manager(
    state: &AppState,
    client: &ClientIdentity,
    name: &str,
) -> Result<(), ApiError> {
    let (owner, _) = state.reader.owners(Some(name), None).await?;
    state.require(client, Permission::ManageClient { owner: owner.as_deref() }).await.map(|_| ())
}

async fn client_command(
    state: AppState,
    client: ClientIdentity,
    headers: HeaderMap,
    name: String,
    command: ClientCommand,
) -> Result<Response, ApiError> {
    match &command {
        ClientCommand::Create { owner_group, .. } => {
            state.require(&client, Permission::ManageClient { owner: owner_group.as_deref() }).await?;
        }
        _ => require_client_manager(&state, &client, &name).await?,
    }
    let context = write_context(&client, &headers)?;
    let committed = run_client(&state.writer, &name, &command, &context).await?;
    tracing::info!(client.id = %client.name, target.client = %name, event.kind = %committed.event.kind, event.seq = committed.sequence, "client changed");
    Ok(command_response(&state, committed).await)
}

async fn group_command(
    state: AppState,
    client: ClientIdentity,
    headers: HeaderMap,
    name: String,
    command: GroupCommand,
) -> Result<Response, ApiError> {
    let (_, owner) = state.reader.owners(None, Some(&name)).await?;
    let secret_owner = match &command {
        GroupCommand::AddGrant { secret } | GroupCommand::RemoveGrant { secret } => {
            state.reader.metadata(secret).await?.0.and_then(|s| s.metadata.owner_group)
        }
        _ => None,
    };
    let permission = match &command {
        GroupCommand::Create { owner_group, .. } => Permission::ManageGroup { owner: owner_group.as_deref() },
        GroupCommand::Delete => Permission::DeleteGroup { owner: owner.as_deref() },
        GroupCommand::AddMember { .. } | GroupCommand::RemoveMember { .. } => {
            Permission::ManageGroup { owner: owner.as_deref() }
        }
        // Granting a secret is managing who reads it: a right of the secret's owners.
        GroupCommand::AddGrant { .. } | GroupCommand::RemoveGrant { .. } => {
            Permission::ManageSecret { owner: secret_owner.as_deref() }
        }
    };
    state.require(&client, permission).await?;
    if matches!(command, GroupCommand::Delete) {
        refuse_to_delete_grants(&state, &name).await?;
    }
    let context = write_context(&client, &headers)?;
    let committed = run_group(&state.writer, &name, &command, &context).await?;
    tracing::info!(client.id = %client.name, group.name = %name, event.kind = %committed.event.kind, event.seq = committed.sequence, "group changed");
    Ok(command_response(&state, committed).await)
}

/// Rejects deleting a group that still has grants. Each grant must be removed on
/// its own first, so that every revocation is an event with its own change notice
/// for the services of that group.
///
/// NOTE: this reads this node's read model, so a grant added on another node just
/// before the deletion can still be removed with the group, without a notice.
async fn refuse_to_delete_grants(state: &AppState, name: &str) -> Result<(), ApiError> {
    let Some((_, grants)) = state.reader.group_detail(name).await? else {
        return Ok(());
    };
    if grants.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = grants.iter().take(5).map(String::as_str).collect();
    let more =
        if grants.len() > shown.len() { format!(" and {} more", grants.len() - shown.len()) } else { String::new() };
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!(
            "group {name:?} still has grants on {} ({}{more}); remove them first \
             (watchword grant remove {name:?} SECRET), so that each revocation is recorded and announced",
            if grants.len() == 1 { "1 secret".to_owned() } else { format!("{} secrets", grants.len()) },
            shown.join(", ")
        ),
    ))
}

pub(super) async fn command_response(state: &AppState, committed: Committed) -> Response {
    wait_for_projection(state, &committed).await;
    let status = if committed.revision() == 1 && !committed.replayed { StatusCode::CREATED } else { StatusCode::OK };
    let body = CommandResponse {
        kind: committed.event.kind.clone(),
        revision: committed.revision(),
        sequence: committed.sequence,
        replayed: committed.replayed,
    };
    (status, Json(body)).into_response()
}

async fn create_client(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Json(request): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    let command = ClientCommand::Create { owner_group: request.owner_group, description: request.description };
    client_command(state, client, headers, request.name, command).await
}

async fn disable_client(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    client_command(state, client, headers, name, ClientCommand::Disable).await
}

async fn enable_client(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    client_command(state, client, headers, name, ClientCommand::Enable).await
}

async fn delete_client(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    client_command(state, client, headers, name, ClientCommand::Delete).await
}

async fn create_group(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Json(request): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    let command = GroupCommand::Create { owner_group: request.owner_group, description: request.description };
    group_command(state, client, headers, request.name, command).await
}

async fn delete_group(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    group_command(state, client, headers, name, GroupCommand::Delete).await
}

async fn add_member(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path((name, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    group_command(state, client, headers, name, GroupCommand::AddMember { client: member }).await
}

async fn remove_member(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path((name, member)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    group_command(state, client, headers, name, GroupCommand::RemoveMember { client: member }).await
}

async fn add_grant(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path((name, secret)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    group_command(state, client, headers, name, GroupCommand::AddGrant { secret }).await
}

async fn remove_grant(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    headers: HeaderMap,
    Path((name, secret)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    group_command(state, client, headers, name, GroupCommand::RemoveGrant { secret }).await
}

async fn list_clients(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
) -> Result<Json<Directory<ClientSummary>>, ApiError> {
    require_directory(&state, &client).await?;
    let (clients, _, sequence) = state.reader.directory().await?;
    Ok(Json(Directory { sequence, items: clients.iter().map(client_summary).collect() }))
}

async fn get_client(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
) -> Result<Json<ClientSummary>, ApiError> {
    require_directory(&state, &client).await?;
    let (clients, _, _) = state.reader.directory().await?;
    let found = clients.iter().find(|c| c.name == name).ok_or_else(|| not_found("client", &name))?;
    Ok(Json(client_summary(found)))
}

async fn list_groups(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
) -> Result<Json<Directory<GroupSummary>>, ApiError> {
    require_directory(&state, &client).await?;
    let (_, groups, sequence) = state.reader.directory().await?;
    Ok(Json(Directory { sequence, items: groups.iter().map(|g| group_summary(g, None)).collect() }))
}

async fn get_group(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
) -> Result<Json<GroupSummary>, ApiError> {
    require_directory(&state, &client).await?;
    let (_, groups, _) = state.reader.directory().await?;
    let found = groups.iter().find(|g| g.name == name).ok_or_else(|| not_found("group", &name))?;
    let detail = state.reader.group_detail(&name).await?.ok_or_else(|| not_found("group", &name))?;
    Ok(Json(group_summary(found, Some(detail))))
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{kind} {name:?} not found"))
}

fn client_summary(state: &ClientState) -> ClientSummary {
    ClientSummary {
        name: state.name.clone(),
        enabled: state.enabled,
        owner_group: state.owner_group.clone(),
        description: state.description.clone(),
        created_at: format_micros(state.created_at_micros),
        created_by: state.created_by.clone(),
    }
}

fn group_summary(state: &GroupState, detail: Option<(Vec<String>, Vec<String>)>) -> GroupSummary {
    let (members, grants) = detail.map_or((None, None), |(m, g)| (Some(m), Some(g)));
    GroupSummary {
        name: state.name.clone(),
        owner_group: state.owner_group.clone(),
        description: state.description.clone(),
        created_at: format_micros(state.created_at_micros),
        created_by: state.created_by.clone(),
        members,
        grants,
    }
}
