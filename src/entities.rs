//! Commands on clients and groups: each decides from the aggregate's last event in
//! the stream and appends one signed event.
//!
//! A client's state follows from its last event alone (`created` or `enabled`:
//! enabled, `disabled`: disabled, `deleted` or none: absent), and so does a group's,
//! so the server decides from the same chain the fold checks.

use watchword_events::Aggregate;
use watchword_events::body::{
    CertificateIssued, EnrolmentTokenIssued, KIND_CLIENT_CERTIFICATE_ISSUED, KIND_CLIENT_ENROLMENT_TOKEN_ISSUED,
    decode_body,
};
use watchword_events::body::{
    Created, Empty, Grant, KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED,
    KIND_GROUP_CREATED, KIND_GROUP_DELETED, KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED,
    KIND_GROUP_MEMBER_REMOVED, Membership, encode_body,
};
use watchword_events::names::{validate_entity_name, validate_secret_name};

use std::sync::{Arc, Mutex};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::ca::{ClientCa, IssuedClientCert};
use crate::signer::now_micros;
use crate::writer::{Committed, Draft, Head, WriteContext, WriteError, Writer, describe};

/// A command on a client.
#[derive(Debug, Clone)]
pub enum ClientCommand {
    Create { owner_group: Option<String>, description: String },
    Disable,
    Enable,
    Delete,
}

/// A command on a group.
#[derive(Debug, Clone)]
pub enum GroupCommand {
    Create { owner_group: Option<String>, description: String },
    Delete,
    AddMember { client: String },
    RemoveMember { client: String },
    AddGrant { secret: String },
    RemoveGrant { secret: String },
}

/// State of a client as its last event leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStatus {
    Absent,
    Enabled,
    Disabled,
}

fn client_status(head: Option<&Head>) -> ClientStatus {
    match head.map(|h| h.event.kind.as_str()) {
        None | Some(KIND_CLIENT_DELETED) => ClientStatus::Absent,
        Some(KIND_CLIENT_DISABLED) => ClientStatus::Disabled,
        Some(_) => ClientStatus::Enabled,
    }
}

fn group_exists(head: Option<&Head>) -> bool {
    !matches!(head.map(|h| h.event.kind.as_str()), None | Some(KIND_GROUP_DELETED))
}

/// Runs a client command.
pub async fn run_client(
    writer: &Writer,
    name: &str,
    command: &ClientCommand,
    context: &WriteContext,
) -> Result<Committed, WriteError> {
    validate_entity_name(name)?;
    if let ClientCommand::Create { owner_group, description } = command {
        if let Some(owner) = owner_group {
            validate_entity_name(owner)?;
        }
        crate::secrets::metadata::check_description(description).map_err(WriteError::Invalid)?;
    }
    let aggregate = Aggregate::client(name);
    writer
        .append(&aggregate, context, &|head, _, _| {
            let draft = decide_client(&aggregate, client_status(head.as_ref()), command);
            Box::pin(async move { draft })
        })
        .await
}

fn decide_client(aggregate: &Aggregate, status: ClientStatus, command: &ClientCommand) -> Result<Draft, WriteError> {
    let (kind, body) = match (command, status) {
        (ClientCommand::Create { owner_group, description }, ClientStatus::Absent) => (
            KIND_CLIENT_CREATED,
            encode_body(&Created { owner_group: owner_group.clone(), description: description.clone() }),
        ),
        (ClientCommand::Create { .. }, _) => {
            return Err(WriteError::State(format!("{} already exists", describe(aggregate))));
        }
        (_, ClientStatus::Absent) => return Err(WriteError::NotFound(aggregate.clone())),
        (ClientCommand::Disable, ClientStatus::Enabled) => (KIND_CLIENT_DISABLED, encode_body(&Empty {})),
        (ClientCommand::Enable, ClientStatus::Disabled) => (KIND_CLIENT_ENABLED, encode_body(&Empty {})),
        (ClientCommand::Disable, _) => {
            return Err(WriteError::State(format!("{} is already disabled", describe(aggregate))));
        }
        (ClientCommand::Enable, _) => {
            return Err(WriteError::State(format!("{} is already enabled", describe(aggregate))));
        }
        (ClientCommand::Delete, _) => (KIND_CLIENT_DELETED, encode_body(&Empty {})),
    };
    Ok(Draft { kind, body, data_key: None })
}

/// Runs a group command.
pub async fn run_group(
    writer: &Writer,
    name: &str,
    command: &GroupCommand,
    context: &WriteContext,
) -> Result<Committed, WriteError> {
    validate_entity_name(name)?;
    if let GroupCommand::Create { description, .. } = command {
        crate::secrets::metadata::check_description(description).map_err(WriteError::Invalid)?;
    }
    match command {
        GroupCommand::Create { owner_group: Some(owner), .. } => validate_entity_name(owner)?,
        GroupCommand::AddMember { client } | GroupCommand::RemoveMember { client } => validate_entity_name(client)?,
        GroupCommand::AddGrant { secret } | GroupCommand::RemoveGrant { secret } => validate_secret_name(secret)?,
        _ => {}
    }
    if let GroupCommand::AddMember { client } = command {
        // The fold records a membership of an absent client without effect; the
        // server rejects it so that the operator learns of the mistyped name.
        let member = Aggregate::client(client);
        if client_status(writer.head(&member.subject()).await?.as_ref()) == ClientStatus::Absent {
            return Err(WriteError::NotFound(member));
        }
    }
    let aggregate = Aggregate::group(name);
    writer
        .append(&aggregate, context, &|head, _, _| {
            let draft = decide_group(&aggregate, group_exists(head.as_ref()), command);
            Box::pin(async move { draft })
        })
        .await
}

fn decide_group(aggregate: &Aggregate, exists: bool, command: &GroupCommand) -> Result<Draft, WriteError> {
    let (kind, body) = match (command, exists) {
        (GroupCommand::Create { owner_group, description }, false) => (
            KIND_GROUP_CREATED,
            encode_body(&Created { owner_group: owner_group.clone(), description: description.clone() }),
        ),
        (GroupCommand::Create { .. }, true) => {
            return Err(WriteError::State(format!("{} already exists", describe(aggregate))));
        }
        (_, false) => return Err(WriteError::NotFound(aggregate.clone())),
        (GroupCommand::Delete, true) => (KIND_GROUP_DELETED, encode_body(&Empty {})),
        (GroupCommand::AddMember { client }, true) => {
            (KIND_GROUP_MEMBER_ADDED, encode_body(&Membership { client: client.clone() }))
        }
        (GroupCommand::RemoveMember { client }, true) => {
            (KIND_GROUP_MEMBER_REMOVED, encode_body(&Membership { client: client.clone() }))
        }
        (GroupCommand::AddGrant { secret }, true) => {
            (KIND_GROUP_GRANT_ADDED, encode_body(&Grant { secret: secret.clone() }))
        }
        (GroupCommand::RemoveGrant { secret }, true) => {
            (KIND_GROUP_GRANT_REMOVED, encode_body(&Grant { secret: secret.clone() }))
        }
    };
    Ok(Draft { kind, body, data_key: None })
}

/// An enrolment token as shown, once, to the operator who issued it.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: zeroize::Zeroizing<String>,
    pub expires_at_micros: i64,
    pub committed: Committed,
}

/// Issues a one-time enrolment token for an enabled client, valid for `ttl_secs`.
/// Only the token's SHA-256 is recorded; a new token replaces any unused one.
pub async fn issue_enrolment_token(
    writer: &Writer,
    name: &str,
    ttl_secs: u64,
    context: &WriteContext,
) -> Result<IssuedToken, WriteError> {
    validate_entity_name(name)?;
    if !(1..=7 * 24 * 3600).contains(&ttl_secs) {
        return Err(WriteError::Invalid(format!("token lifetime {ttl_secs} s must be between 1 s and 7 days")));
    }
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let token = zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let expires_at_micros = now_micros() + i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2) * 1_000_000;
    let body = EnrolmentTokenIssued { token_sha256: Sha256::digest(token.as_bytes()).into(), expires_at_micros };

    let aggregate = Aggregate::client(name);
    let committed = writer
        .append(&aggregate, context, &|head, _, _| {
            let draft = match client_status(head.as_ref()) {
                ClientStatus::Enabled => {
                    Ok(Draft { kind: KIND_CLIENT_ENROLMENT_TOKEN_ISSUED, body: encode_body(&body), data_key: None })
                }
                ClientStatus::Disabled => Err(WriteError::State(format!("{} is disabled", describe(&aggregate)))),
                ClientStatus::Absent => Err(WriteError::NotFound(aggregate.clone())),
            };
            Box::pin(async move { draft })
        })
        .await?;
    Ok(IssuedToken { token, expires_at_micros, committed })
}

/// Exchanges an enrolment token and a CSR for a client certificate. The token must
/// be the last thing issued to the client, unexpired and unused: recording the
/// issuance appends after the token's event, so two uses of one token cannot both
/// succeed.
pub async fn enrol(
    writer: &Writer,
    ca: &Arc<ClientCa>,
    name: &str,
    token: &str,
    csr_pem: &str,
    context: &WriteContext,
) -> Result<(IssuedClientCert, Committed), WriteError> {
    validate_entity_name(name)?;
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let aggregate = Aggregate::client(name);
    let issued = Mutex::new(None);
    let committed = writer
        .append(&aggregate, context, &|head, _, _| {
            let check = check_token(&aggregate, head.as_ref(), &presented);
            let (ca, name, csr, issued) = (Arc::clone(ca), name.to_owned(), csr_pem.to_owned(), &issued);
            Box::pin(async move {
                check?;
                let certificate = issue_blocking(ca, name, csr).await?;
                let body = CertificateIssued {
                    serial: certificate.serial.clone(),
                    not_after_micros: micros(certificate.not_after),
                    token_sha256: Some(presented),
                };
                *issued.lock().expect("issued certificate lock") = Some(certificate);
                Ok(Draft { kind: KIND_CLIENT_CERTIFICATE_ISSUED, body: encode_body(&body), data_key: None })
            })
        })
        .await?;
    let certificate = issued.into_inner().expect("issued certificate lock").expect("a committed enrolment issued one");
    Ok((certificate, committed))
}

/// Issues a fresh certificate to an enabled client that authenticated with its
/// current one.
pub async fn renew(
    writer: &Writer,
    ca: &Arc<ClientCa>,
    name: &str,
    csr_pem: &str,
    context: &WriteContext,
) -> Result<(IssuedClientCert, Committed), WriteError> {
    let aggregate = Aggregate::client(name);
    let issued = Mutex::new(None);
    let committed = writer
        .append(&aggregate, context, &|head, _, _| {
            let status = client_status(head.as_ref());
            let (ca, name, csr, issued, aggregate) =
                (Arc::clone(ca), name.to_owned(), csr_pem.to_owned(), &issued, aggregate.clone());
            Box::pin(async move {
                if status != ClientStatus::Enabled {
                    return Err(WriteError::Rejected(format!("{} is not an enabled client", describe(&aggregate))));
                }
                let certificate = issue_blocking(ca, name, csr).await?;
                let body = CertificateIssued {
                    serial: certificate.serial.clone(),
                    not_after_micros: micros(certificate.not_after),
                    token_sha256: None,
                };
                *issued.lock().expect("issued certificate lock") = Some(certificate);
                Ok(Draft { kind: KIND_CLIENT_CERTIFICATE_ISSUED, body: encode_body(&body), data_key: None })
            })
        })
        .await?;
    let certificate = issued.into_inner().expect("issued certificate lock").expect("a committed renewal issued one");
    Ok((certificate, committed))
}

fn check_token(aggregate: &Aggregate, head: Option<&Head>, presented: &[u8; 32]) -> Result<(), WriteError> {
    let rejected =
        |reason: &str| WriteError::Rejected(format!("enrolment of {} rejected: {reason}", describe(aggregate)));
    let Some(head) = head.filter(|h| h.event.kind == KIND_CLIENT_ENROLMENT_TOKEN_ISSUED) else {
        return Err(rejected("no unused enrolment token; ask an operator for a new one"));
    };
    let body: EnrolmentTokenIssued =
        decode_body(&head.event.body).map_err(|source| WriteError::CorruptHead { sequence: head.sequence, source })?;
    if &body.token_sha256 != presented {
        return Err(rejected("the token does not match; ask an operator for a new one"));
    }
    if now_micros() > body.expires_at_micros {
        return Err(rejected("the token has expired; ask an operator for a new one"));
    }
    Ok(())
}

async fn issue_blocking(ca: Arc<ClientCa>, name: String, csr: String) -> Result<IssuedClientCert, WriteError> {
    tokio::task::spawn_blocking(move || ca.issue(&name, &csr))
        .await
        .map_err(|e| WriteError::Invalid(format!("certificate task failed: {e}")))?
        .map_err(WriteError::from)
}

fn micros(time: time::OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Replaces the roles of an operator; the roles must already be valid.
pub async fn set_roles(
    writer: &Writer,
    identity: &str,
    roles: &[crate::access::Role],
    context: &WriteContext,
) -> Result<Committed, WriteError> {
    validate_entity_name(identity)?;
    let mut roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
    roles.sort();
    roles.dedup();
    let body = encode_body(&watchword_events::body::RolesSet { roles });
    let aggregate = Aggregate::operator(identity);
    writer
        .append(&aggregate, context, &|_, _, _| {
            let draft =
                Draft { kind: watchword_events::body::KIND_OPERATOR_ROLES_SET, body: body.clone(), data_key: None };
            Box::pin(async move { Ok(draft) })
        })
        .await
}
