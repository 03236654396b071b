//! Commands on clients and groups: each decides from the aggregate's last event in
//! the stream and appends one signed event.
//!
//! A client's state follows from its last event alone (`created` or `enabled`:
//! enabled, `disabled`: disabled, `deleted` or none: absent), and so does a group's,
//! so the server decides from the same chain the fold checks.

use watchword_events::Aggregate;
use watchword_events::body::{
    Created, Empty, Grant, KIND_CLIENT_CREATED, KIND_CLIENT_DELETED, KIND_CLIENT_DISABLED, KIND_CLIENT_ENABLED,
    KIND_GROUP_CREATED, KIND_GROUP_DELETED, KIND_GROUP_GRANT_ADDED, KIND_GROUP_GRANT_REMOVED, KIND_GROUP_MEMBER_ADDED,
    KIND_GROUP_MEMBER_REMOVED, Membership, encode_body,
};
use watchword_events::names::{validate_entity_name, validate_secret_name};

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
    if let ClientCommand::Create { owner_group: Some(owner), .. } = command {
        validate_entity_name(owner)?;
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
