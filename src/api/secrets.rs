//! Routes on secrets: content, versions, metadata, lifecycle, listing and watch.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use watchword_events::fold::{SecretState, SecretStatus, SecretVersion};
use zeroize::Zeroizing;

use super::extract::{Json, Path, Query};
use super::{ApiError, AppState, format_micros, internal, wait_for_projection, write_context};
use crate::access::{Action, Permission, Role};
use crate::reader::MAX_SEQUENCE_WAIT;
use crate::secrets::metadata::{MetadataJson, parse_delivery_mode};
use crate::secrets::{
    MetadataChange, MetadataPatch, WriteVersion, content_version, readable_versions, unreadable_version,
};
use crate::signer::now_micros;
use crate::tls::ClientIdentity;
use crate::writer::{Committed, MAX_CONTENT_BYTES};

/// Maximum wait of one watch request.
const MAX_WATCH: Duration = Duration::from_secs(60);

/// Largest JSON body of `POST /v1/secrets/{name}/versions`: base64 content at the
/// content limit, plus metadata.
const MAX_JSON_WRITE_BYTES: usize = MAX_CONTENT_BYTES / 3 * 4 + 64 * 1024;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", get(get_secret).put(put_secret).delete(delete_secret))
        .route(
            "/v1/secrets/{name}/versions",
            get(list_versions).post(post_version).layer(DefaultBodyLimit::max(MAX_JSON_WRITE_BYTES)),
        )
        .route("/v1/secrets/{name}/versions/{version}", get(get_version))
        .route("/v1/secrets/{name}/versions/{version}/destroy", post(destroy_version))
        .route("/v1/secrets/{name}/metadata", get(get_metadata).put(put_metadata))
        .route("/v1/secrets/{name}/restore", post(restore_secret))
        .route("/v1/secrets/{name}/rollback", post(rollback_secret))
        .route("/v1/secrets/{name}/destroy", post(destroy_secret))
        .route("/v1/expiring", get(list_expiring))
        .route("/v1/watch", get(watch))
}

/// Query of `PUT /v1/secrets/{name}`: metadata fields to change with the new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PutQuery {
    /// File mode agents give the secret, in octal such as `0440`.
    mode: Option<String>,
    owner_group: Option<String>,
    description: Option<String>,
    file_name: Option<String>,
    file_owner: Option<String>,
    file_group: Option<String>,
    /// RFC 3339 time after which computes no longer receive this version.
    expires_at: Option<String>,
}

/// Body of `POST /v1/secrets/{name}/versions`, which writes content and metadata in one event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonWrite {
    /// Content in standard base64.
    pub content_base64: String,
    /// Metadata that replaces the current metadata; absent keeps it.
    #[serde(default)]
    pub metadata: Option<MetadataJson>,
    /// RFC 3339 time after which computes no longer receive this version.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Query of reads: the minimum stream sequence the read model must reflect.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadQuery {
    min_sequence: Option<u64>,
}

/// Query of `GET /v1/secrets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    min_sequence: Option<u64>,
    /// Also list deleted and destroyed secrets (operators only).
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchQuery {
    #[serde(default)]
    after: u64,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpiringQuery {
    /// Window from now, in seconds.
    within_secs: u64,
}

/// Body of `POST /v1/secrets/{name}/rollback`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The earlier version whose content becomes a new version.
    pub version: u64,
}

/// The outcome of a command on a secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct WriteResponse {
    pub name: String,
    /// The secret's current content version after the command.
    pub version: u64,
    pub revision: u64,
    pub sequence: u64,
    pub replayed: bool,
    /// Kind of the recorded event, such as `secret.deleted`.
    #[serde(default)]
    pub kind: String,
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
    /// `active`, `deleted` or `destroyed`.
    #[serde(default = "active")]
    pub status: String,
    /// File name agents write the secret to.
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_owner: Option<String>,
    #[serde(default)]
    pub file_group: Option<String>,
    /// RFC 3339 expiry time of the current version.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The current version has expired.
    #[serde(default)]
    pub expired: bool,
    /// Computes may receive the current version now.
    #[serde(default = "yes")]
    pub servable: bool,
}

fn active() -> String {
    "active".to_owned()
}

fn yes() -> bool {
    true
}

/// A list of secrets and the stream sequence it reflects.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretList {
    pub sequence: u64,
    pub secrets: Vec<SecretSummary>,
}

/// One version of a secret, as `GET /v1/secrets/{name}/versions` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: u64,
    pub revision: u64,
    pub size: u64,
    /// Always `None` now: the file mode belongs to the secret's metadata.
    pub mode: Option<String>,
    pub created_at: String,
    pub created_by: String,
    /// Hex HMAC-SHA256 of the content under the deployment's digest key.
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub expired: bool,
    #[serde(default)]
    pub destroyed: bool,
    /// The version this one repeats, for a rollback.
    #[serde(default)]
    pub rolled_back_from: Option<u64>,
    /// Operators may read this version's content (not destroyed, among the newest kept readable).
    #[serde(default)]
    pub readable: bool,
}

/// The versions of a secret's current incarnation, oldest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionList {
    pub name: String,
    pub sequence: u64,
    pub versions: Vec<VersionSummary>,
}

/// Everything recorded about a secret but its content.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretDescription {
    pub name: String,
    /// `active`, `deleted` or `destroyed`.
    pub status: String,
    pub incarnation: u64,
    pub revision: u64,
    pub version: u64,
    /// RFC 3339 expiry time of the current version.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The current version has expired: computes no longer receive it.
    #[serde(default)]
    pub expired: bool,
    pub metadata: MetadataJson,
    pub sequence: u64,
}

/// A secret whose current version expires soon.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExpiringSecret {
    pub name: String,
    pub version: u64,
    pub expires_at: String,
}

/// Secrets that expire within a window, soonest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExpiringList {
    pub sequence: u64,
    pub secrets: Vec<ExpiringSecret>,
}

pub(super) async fn put_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let max = state.secrets.limits().max_content_bytes;
    // A body above the limit is cut off before this handler reads it all.
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(max),
        _ => ApiError::bad_request(format!("cannot read the request body: {rejection}")),
    })?;
    let patch = MetadataPatch {
        mode: query.mode.as_deref().map(parse_delivery_mode).transpose().map_err(ApiError::bad_request)?,
        owner_group: query.owner_group,
        description: query.description,
        file_name: query.file_name,
        file_owner: query.file_owner,
        file_group: query.file_group,
    };
    let request = WriteVersion {
        metadata: MetadataChange::Patch(patch),
        expires_at_micros: query.expires_at.as_deref().map(parse_time).transpose()?,
        context: write_context(&client, &headers)?,
        content: Zeroizing::new(body.to_vec()),
        name,
    };
    write_version(&state, &client, request).await
}

async fn post_version(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<JsonWrite>,
) -> Result<Response, ApiError> {
    let content = base64::engine::general_purpose::STANDARD
        .decode(body.content_base64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| ApiError::bad_request(format!("content_base64 is not valid base64: {e}")))?;
    let limits = state.secrets.limits();
    let metadata = match &body.metadata {
        Some(json) => MetadataChange::Replace(json.parse(limits.max_metadata_bytes).map_err(ApiError::bad_request)?),
        None => MetadataChange::Keep,
    };
    let request = WriteVersion {
        metadata,
        expires_at_micros: body.expires_at.as_deref().map(parse_time).transpose()?,
        context: write_context(&client, &headers)?,
        content,
        name,
    };
    write_version(&state, &client, request).await
}

async fn write_version(state: &AppState, client: &ClientIdentity, request: WriteVersion) -> Result<Response, ApiError> {
    if request.content.len() > state.secrets.limits().max_content_bytes {
        return Err(too_large(state.secrets.limits().max_content_bytes));
    }
    if request.expires_at_micros.is_some_and(|at| at <= now_micros()) {
        return Err(ApiError::bad_request("expires_at is in the past; give a time in the future"));
    }
    let roles = state.roles(client).await?;
    let committed = state.secrets.write(&request, &roles).await?;
    wait_for_projection(state, &committed).await;
    let version = content_version(&committed.event).map_err(|e| internal(e.to_string()))?;
    tracing::info!(client.id = %client.name, secret.name = %request.name, secret.version = version, event.seq = committed.sequence, replayed = committed.replayed, "secret written");
    Ok(write_response(&request.name, version, committed))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "content_too_large",
        format!("content is above the maximum of {max} bytes"),
    )
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
        kind: committed.event.kind.clone(),
    };
    (status, [(header::ETAG, etag)], Json(body)).into_response()
}

/// Builds the response to a lifecycle command, with the secret's current version after it.
async fn lifecycle_response(state: &AppState, name: &str, committed: Committed) -> Result<Response, ApiError> {
    wait_for_projection(state, &committed).await;
    let version = match content_version(&committed.event) {
        Ok(version) => version,
        Err(_) => state.reader.metadata(name).await?.0.map_or(0, |s| s.current.version),
    };
    tracing::info!(secret.name = %name, event.kind = %committed.event.kind, event.seq = committed.sequence, "secret changed");
    Ok(write_response(name, version, committed))
}

async fn put_metadata(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<MetadataJson>,
) -> Result<Response, ApiError> {
    let metadata = body.parse(state.secrets.limits().max_metadata_bytes).map_err(ApiError::bad_request)?;
    let roles = state.roles(&client).await?;
    let context = write_context(&client, &headers)?;
    let committed = state.secrets.set_metadata(&name, &metadata, &context, &roles).await?;
    lifecycle_response(&state, &name, committed).await
}

async fn delete_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let roles = state.roles(&client).await?;
    let committed = state.secrets.delete(&name, &write_context(&client, &headers)?, &roles).await?;
    lifecycle_response(&state, &name, committed).await
}

async fn restore_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let roles = state.roles(&client).await?;
    let committed = state.secrets.restore(&name, &write_context(&client, &headers)?, &roles).await?;
    lifecycle_response(&state, &name, committed).await
}

async fn rollback_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<RollbackRequest>,
) -> Result<Response, ApiError> {
    let roles = state.roles(&client).await?;
    let committed = state.secrets.rollback(&name, body.version, &write_context(&client, &headers)?, &roles).await?;
    lifecycle_response(&state, &name, committed).await
}

async fn destroy_secret(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let roles = state.roles(&client).await?;
    let committed = state.secrets.destroy(&name, None, &write_context(&client, &headers)?, &roles).await?;
    lifecycle_response(&state, &name, committed).await
}

async fn destroy_version(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path((name, version)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let roles = state.roles(&client).await?;
    let committed = state.secrets.destroy(&name, Some(version), &write_context(&client, &headers)?, &roles).await?;
    lifecycle_response(&state, &name, committed).await
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
    let (secret, sequence) = state.reader.metadata(&name).await?;
    let roles = state.roles(&client).await?;
    let owner_reads = secret.as_ref().is_some_and(|secret| owns(&roles, secret));
    if !owner_reads && !may_read_with(&state, &client, &roles, std::slice::from_ref(&name)).await?[0] {
        tracing::info!(client.id = %client.name, secret.name = %name, "read denied");
        return Err(ApiError::not_found(&name));
    }
    let secret = secret.filter(|s| s.status == SecretStatus::Active).ok_or_else(|| ApiError::not_found(&name))?;
    if !secret.servable(now_micros()) {
        let reason = if secret.current.destroyed { "was destroyed" } else { "has expired" };
        return Err(ApiError::new(
            StatusCode::GONE,
            if secret.current.destroyed { "destroyed" } else { "expired" },
            format!("the current version of secret {name:?} {reason}; write a new version"),
        ));
    }

    let content = state.reader.content(&secret).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::ETAG, etag(secret.revision));
    headers.insert("watchword-version", secret.current.version.into());
    headers.insert("watchword-revision", secret.revision.into());
    headers.insert("watchword-sequence", sequence.into());
    if let Some(mode) = secret.metadata.delivery.mode {
        headers.insert(
            "watchword-mode",
            HeaderValue::from_str(&format!("{mode:04o}")).expect("octal digits are a valid header"),
        );
    }
    // NOTE: the response body leaves this buffer for hyper's, which is not zeroized.
    Ok((headers, content.to_vec()).into_response())
}

/// Returns whether `roles` make the caller an owner of the secret's owner group,
/// who may read its content, current and earlier. Automation may not.
fn owns(roles: &[Role], secret: &SecretState) -> bool {
    secret.metadata.owner_group.as_ref().is_some_and(|group| roles.contains(&Role::Owner(group.clone())))
}

/// Returns whether the caller may see a secret's metadata: administrators,
/// auditors, the owners and automation of its owner group, and clients that may read it.
async fn may_see_metadata(state: &AppState, client: &ClientIdentity, secret: &SecretState) -> Result<bool, ApiError> {
    let roles = state.roles(client).await?;
    if roles.iter().any(|r| matches!(r, Role::Admin | Role::Auditor))
        || crate::access::permits(&roles, Permission::ManageSecret { owner: secret.metadata.owner_group.as_deref() })
    {
        return Ok(true);
    }
    Ok(may_read(state, client, std::slice::from_ref(&secret.name)).await?[0])
}

async fn get_metadata(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
) -> Result<Json<SecretDescription>, ApiError> {
    let (secret, sequence) = state.reader.metadata(&name).await?;
    let secret = secret.ok_or_else(|| ApiError::not_found(&name))?;
    if !may_see_metadata(&state, &client, &secret).await? {
        return Err(ApiError::not_found(&name));
    }
    Ok(Json(SecretDescription {
        name: secret.name.clone(),
        status: status_name(secret.status).to_owned(),
        incarnation: secret.incarnation,
        revision: secret.revision,
        version: secret.current.version,
        expires_at: secret.current.expires_at_micros.map(format_micros),
        expired: current_expired(&secret, now_micros()),
        metadata: MetadataJson::from_stored(&secret.metadata),
        sequence,
    }))
}

/// Lists the versions of a secret's current incarnation (metadata only) to those
/// who may see its metadata.
async fn list_versions(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let (secret, _) = state.reader.metadata(&name).await?;
    let secret = secret.ok_or_else(|| ApiError::not_found(&name))?;
    if !may_see_metadata(&state, &client, &secret).await? {
        return Err(ApiError::not_found(&name));
    }
    let (versions, sequence) = state.reader.versions(&name).await?;
    let keep = state.secrets.limits().max_readable_versions;
    let readable: Vec<u64> = readable_versions(&versions, secret.incarnation, keep).iter().map(|v| v.version).collect();
    let versions = versions
        .iter()
        .filter(|v| v.incarnation == secret.incarnation)
        .map(|v| version_summary(v, readable.contains(&v.version)))
        .collect();
    Ok(Json(VersionList { name, sequence, versions }))
}

fn version_summary(version: &SecretVersion, readable: bool) -> VersionSummary {
    VersionSummary {
        version: version.version,
        revision: version.revision,
        size: version.size,
        mode: None,
        created_at: format_micros(version.created_at_micros),
        created_by: version.created_by.clone(),
        digest: version.digest.map(hex::encode),
        expires_at: version.expires_at_micros.map(format_micros),
        expired: version.expired,
        destroyed: version.destroyed,
        rolled_back_from: version.rolled_back_from,
        readable,
    }
}

/// Returns the content of one version to administrators and to the owners of the
/// secret's owner group only, because an earlier version may hold a credential that
/// was rotated away on purpose.
async fn get_version(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    let (secret, sequence) = state.reader.metadata(&name).await?;
    let roles = state.roles(&client).await?;
    let allowed = secret.as_ref().is_some_and(|s| roles.contains(&Role::Admin) || owns(&roles, s));
    let Some(secret) = secret.filter(|_| allowed) else {
        tracing::info!(client.id = %client.name, secret.name = %name, secret.version = version, "version read denied");
        return Err(ApiError::not_found(&name));
    };
    let (versions, _) = state.reader.versions(&name).await?;
    let keep = state.secrets.limits().max_readable_versions;
    let readable = readable_versions(&versions, secret.incarnation, keep);
    let found = readable.into_iter().find(|v| v.version == version).ok_or_else(|| {
        let reason = unreadable_version(&name, &versions, secret.incarnation, keep, version);
        ApiError::new(StatusCode::NOT_FOUND, "not_found", reason)
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

pub(super) async fn list_secrets(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Query(query): Query<ListQuery>,
) -> Result<Json<SecretList>, ApiError> {
    if let Some(sequence) = query.min_sequence {
        state.reader.wait_for(sequence, MAX_SEQUENCE_WAIT).await?;
    }
    Ok(Json(listed_secrets(&state, &client, query.all).await?))
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
    Ok(Json(listed_secrets(&state, &client, false).await?))
}

async fn list_expiring(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    Query(query): Query<ExpiringQuery>,
) -> Result<Json<ExpiringList>, ApiError> {
    let within_micros = i64::try_from(query.within_secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let (expiring, sequence) = state.reader.expiring(now_micros().saturating_add(within_micros)).await?;
    let mut secrets = Vec::new();
    for (at_micros, name) in expiring {
        let Some(secret) = state.reader.metadata(&name).await?.0 else {
            continue;
        };
        if may_see_metadata(&state, &client, &secret).await? {
            secrets.push(ExpiringSecret {
                name,
                version: secret.current.version,
                expires_at: format_micros(at_micros),
            });
        }
    }
    Ok(Json(ExpiringList { sequence, secrets }))
}

/// Lists secrets for the caller. Administrators and auditors see every secret,
/// owners and automation the secrets of their groups, and clients the secrets they
/// may read. With `all`, operators also get deleted and destroyed secrets.
async fn listed_secrets(state: &AppState, client: &ClientIdentity, all: bool) -> Result<SecretList, ApiError> {
    let roles = state.roles(client).await?;
    if roles.is_empty() && !state.access.readers.contains_key(&client.name) {
        // A client without roles or allow-list patterns may list only what its
        // groups' grants give it, which the read model finds without a scan.
        let (secrets, sequence) = state.reader.granted_secrets(&client.name).await?;
        let now = now_micros();
        return Ok(SecretList { sequence, secrets: secrets.iter().map(|s| summary(s, now)).collect() });
    }
    let (secrets, sequence) = state.reader.list().await?;
    let operator = roles.iter().any(|r| matches!(r, Role::Admin | Role::Auditor));
    let now = now_micros();
    let names: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
    let readable = may_read_with(state, client, &roles, &names).await?;
    let listed = secrets
        .iter()
        .zip(readable)
        .filter(|(secret, readable)| {
            let managed = crate::access::permits(
                &roles,
                Permission::ManageSecret { owner: secret.metadata.owner_group.as_deref() },
            );
            let visible = operator || managed;
            let active = secret.status == SecretStatus::Active;
            (visible && (all || active)) || (*readable && active)
        })
        .map(|(secret, _)| summary(secret, now))
        .collect();
    Ok(SecretList { sequence, secrets: listed })
}

/// Returns, for each name, whether the client may read that secret: the one read
/// rule of the read, list and watch paths. A client may read a secret that the
/// configuration's allow-list grants it, or that a group it belongs to has a
/// grant on while the client is enabled.
pub(super) async fn may_read(
    state: &AppState,
    client: &ClientIdentity,
    names: &[String],
) -> Result<Vec<bool>, ApiError> {
    let roles = state.roles(client).await?;
    may_read_with(state, client, &roles, names).await
}

/// Returns what [`may_read`] returns, for a caller whose roles are known.
async fn may_read_with(
    state: &AppState,
    client: &ClientIdentity,
    roles: &[Role],
    names: &[String],
) -> Result<Vec<bool>, ApiError> {
    if roles.contains(&Role::Admin) {
        return Ok(vec![true; names.len()]);
    }
    let granted = state.reader.granted(&client.name, names.to_vec()).await?;
    Ok(names
        .iter()
        .zip(granted)
        .map(|(name, granted)| granted || state.access.allows(&client.name, Action::Read, name))
        .collect())
}

fn summary(state: &SecretState, now_micros: i64) -> SecretSummary {
    let delivery = &state.metadata.delivery;
    SecretSummary {
        name: state.name.clone(),
        version: state.current.version,
        revision: state.revision,
        size: state.current.size,
        mode: delivery.mode.map(|m| format!("{m:04o}")),
        updated_at: format_micros(state.current.created_at_micros),
        updated_by: state.current.created_by.clone(),
        sequence: state.sequence,
        status: status_name(state.status).to_owned(),
        file_name: state.file_name(),
        file_owner: delivery.owner.clone(),
        file_group: delivery.group.clone(),
        expires_at: state.current.expires_at_micros.map(format_micros),
        expired: current_expired(state, now_micros),
        servable: state.servable(now_micros),
    }
}

/// Returns whether the current version expired, recorded or not yet.
fn current_expired(state: &SecretState, now_micros: i64) -> bool {
    state.current.expired || state.current.expires_at_micros.is_some_and(|at| at <= now_micros)
}

fn status_name(status: SecretStatus) -> &'static str {
    match status {
        SecretStatus::Active => "active",
        SecretStatus::Deleted => "deleted",
        SecretStatus::Destroyed => "destroyed",
    }
}

fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits and quotes are a valid header")
}

/// Parses an RFC 3339 time into microseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, ApiError> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::bad_request(format!("expires_at {text:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z"))
    })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000)
        .map_err(|_| ApiError::bad_request(format!("expires_at {text:?} is out of range")))
}
