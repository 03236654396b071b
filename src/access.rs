//! Authorization: the configuration's allow-list, and the roles of operators.
//!
//! The allow-list makes the listed operators administrators and lets each listed
//! reader read the secrets its patterns match, besides what its groups' grants give.
//! A pattern is an exact secret name, or a prefix followed by `*` (`*` alone matches
//! every name). [`Role`] and [`permits`] decide the management routes.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[access]` section of the server's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Client identities (certificate URI SAN or common name) with full rights.
    #[serde(default)]
    pub operators: Vec<String>,
    /// Client identity to the patterns of the secret names it may read.
    #[serde(default)]
    pub readers: BTreeMap<String, Vec<String>>,
}

/// An operation on a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
}

impl AccessConfig {
    /// Returns whether `client` may perform `action` on the secret `name`.
    pub fn allows(&self, client: &str, action: Action, name: &str) -> bool {
        if self.operators.iter().any(|operator| operator == client) {
            return true;
        }
        match action {
            Action::Write => false,
            Action::Read => {
                self.readers.get(client).is_some_and(|patterns| patterns.iter().any(|pattern| matches(pattern, name)))
            }
        }
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AccessConfig {
        AccessConfig {
            operators: vec!["operator".to_owned()],
            readers: BTreeMap::from([("agent".to_owned(), vec!["db/*".to_owned(), "tls".to_owned()])]),
        }
    }

    #[test]
    fn operator_reads_and_writes_everything() {
        assert!(config().allows("operator", Action::Write, "anything"));
        assert!(config().allows("operator", Action::Read, "anything"));
    }

    #[test]
    fn reader_reads_only_matching_names() {
        let access = config();
        assert!(access.allows("agent", Action::Read, "db/password"));
        assert!(access.allows("agent", Action::Read, "tls"));
        assert!(!access.allows("agent", Action::Read, "tls2"));
        assert!(!access.allows("agent", Action::Read, "dbx"));
        assert!(!access.allows("agent", Action::Write, "db/password"));
    }

    #[test]
    fn unknown_client_gets_nothing() {
        assert!(!config().allows("stranger", Action::Read, "tls"));
    }
}

/// A role an operator holds. Roles are events on the operator's aggregate, except
/// the administrators listed in the configuration, who hold `admin` from start-up.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every operation, including roles and grants.
    Admin,
    /// Reads metadata of every secret, client, group and operator; never content.
    Auditor,
    /// Manages the clients, groups and secrets that the group owns, and the members
    /// of its groups.
    Owner(String),
    /// Like an owner, for deployment systems, but never deletes groups nor destroys secrets.
    Automation(String),
}

impl Role {
    /// Parses `admin`, `auditor`, `owner:<group>` or `automation:<group>`.
    pub fn parse(text: &str) -> Result<Role, String> {
        let scoped = |group: &str| -> Result<String, String> {
            watchword_events::names::validate_entity_name(group).map_err(|e| format!("role {text:?}: {e}"))?;
            Ok(group.to_owned())
        };
        match text.split_once(':') {
            None if text == "admin" => Ok(Role::Admin),
            None if text == "auditor" => Ok(Role::Auditor),
            Some(("owner", group)) => Ok(Role::Owner(scoped(group)?)),
            Some(("automation", group)) => Ok(Role::Automation(scoped(group)?)),
            _ => Err(format!("invalid role {text:?}: use admin, auditor, owner:<group> or automation:<group>")),
        }
    }

    fn scope(&self) -> Option<&str> {
        match self {
            Role::Owner(group) | Role::Automation(group) => Some(group),
            Role::Admin | Role::Auditor => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => write!(f, "admin"),
            Role::Auditor => write!(f, "auditor"),
            Role::Owner(group) => write!(f, "owner:{group}"),
            Role::Automation(group) => write!(f, "automation:{group}"),
        }
    }
}

/// An operation on clients, groups, roles or metadata, with what decides it.
#[derive(Debug, Clone, Copy)]
pub enum Permission<'a> {
    /// Roles, grants, secret writes and operator tokens: administrators only.
    Administer,
    /// Listing and showing clients, groups and operators.
    ReadDirectory,
    /// Creating, disabling, enabling or deleting a client, or issuing its enrolment
    /// token; `owner` is the client's owner group (requested, for a new one).
    ManageClient { owner: Option<&'a str> },
    /// Creating a group or changing its members; `owner` is its owner group.
    ManageGroup { owner: Option<&'a str> },
    /// Deleting a group.
    DeleteGroup { owner: Option<&'a str> },
    /// Writing a secret's content or metadata, rolling it back, deleting or restoring
    /// it, granting it to groups, and reading its earlier versions; `owner` is the
    /// secret's owner group (requested, for a new one).
    ManageSecret { owner: Option<&'a str> },
    /// Destroying a secret or one of its versions, which cannot be undone.
    DestroySecret { owner: Option<&'a str> },
}

impl Permission<'_> {
    /// Describes the roles that grant this permission, as [`permits`] decides, for
    /// the message of a denial: "needs the role admin, owner:web or ...".
    pub fn requirement(&self) -> String {
        match *self {
            Permission::Administer => "needs the role admin".to_owned(),
            Permission::ReadDirectory => {
                "needs the role admin, auditor, or owner:<group> or automation:<group> of any group".to_owned()
            }
            Permission::ManageClient { owner: Some(group) }
            | Permission::ManageGroup { owner: Some(group) }
            | Permission::ManageSecret { owner: Some(group) } => {
                format!("needs the role admin, owner:{group} or automation:{group} (the owner group is {group:?})")
            }
            Permission::DeleteGroup { owner: Some(group) } | Permission::DestroySecret { owner: Some(group) } => {
                format!("needs the role admin or owner:{group} (the owner group is {group:?})")
            }
            Permission::ManageClient { owner: None }
            | Permission::ManageGroup { owner: None }
            | Permission::ManageSecret { owner: None }
            | Permission::DeleteGroup { owner: None }
            | Permission::DestroySecret { owner: None } => {
                "needs the role admin, because only administrators manage what has no owner group".to_owned()
            }
        }
    }
}

/// Returns whether a principal with `roles` has `permission`.
pub fn permits(roles: &[Role], permission: Permission<'_>) -> bool {
    if roles.contains(&Role::Admin) {
        return true;
    }
    let in_scope = |owner: Option<&str>, automation_allowed: bool| {
        owner.is_some_and(|owner| {
            roles.iter().any(|role| match role {
                Role::Owner(group) => group == owner,
                Role::Automation(group) => automation_allowed && group == owner,
                Role::Admin | Role::Auditor => false,
            })
        })
    };
    match permission {
        Permission::Administer => false,
        Permission::ReadDirectory => roles.iter().any(|r| r == &Role::Auditor || r.scope().is_some()),
        Permission::ManageClient { owner } | Permission::ManageGroup { owner } | Permission::ManageSecret { owner } => {
            in_scope(owner, true)
        }
        Permission::DeleteGroup { owner } | Permission::DestroySecret { owner } => in_scope(owner, false),
    }
}

#[cfg(test)]
mod role_tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for text in ["admin", "auditor", "owner:/acme/shop/prod", "automation:web"] {
            assert_eq!(Role::parse(text).unwrap().to_string(), text);
        }
        assert!(Role::parse("root").is_err());
        assert!(Role::parse("owner:").is_err());
    }

    #[test]
    fn owner_scope_limits_management() {
        let roles = [Role::Owner("web".to_owned())];
        assert!(permits(&roles, Permission::ManageClient { owner: Some("web") }));
        assert!(!permits(&roles, Permission::ManageClient { owner: Some("db") }));
        assert!(!permits(&roles, Permission::ManageClient { owner: None }));
        assert!(permits(&roles, Permission::DeleteGroup { owner: Some("web") }));
        assert!(!permits(&roles, Permission::Administer));
    }

    #[test]
    fn automation_never_deletes_groups() {
        let roles = [Role::Automation("web".to_owned())];
        assert!(permits(&roles, Permission::ManageGroup { owner: Some("web") }));
        assert!(!permits(&roles, Permission::DeleteGroup { owner: Some("web") }));
    }

    #[test]
    fn secret_owners_manage_and_destroy_only_their_secrets() {
        let owner = [Role::Owner("web".to_owned())];
        let automation = [Role::Automation("web".to_owned())];
        assert!(permits(&owner, Permission::ManageSecret { owner: Some("web") }));
        assert!(permits(&owner, Permission::DestroySecret { owner: Some("web") }));
        assert!(!permits(&owner, Permission::ManageSecret { owner: Some("db") }));
        assert!(!permits(&owner, Permission::ManageSecret { owner: None }));
        assert!(permits(&automation, Permission::ManageSecret { owner: Some("web") }));
        assert!(!permits(&automation, Permission::DestroySecret { owner: Some("web") }));
    }

    #[test]
    fn auditor_only_reads_directory() {
        let roles = [Role::Auditor];
        assert!(permits(&roles, Permission::ReadDirectory));
        assert!(!permits(&roles, Permission::ManageClient { owner: Some("web") }));
    }

    #[test]
    fn requirement_names_roles_that_permit() {
        let permissions = [
            Permission::Administer,
            Permission::ManageClient { owner: Some("web") },
            Permission::ManageGroup { owner: Some("web") },
            Permission::ManageSecret { owner: Some("web") },
            Permission::DeleteGroup { owner: Some("web") },
            Permission::DestroySecret { owner: Some("web") },
            Permission::ManageSecret { owner: None },
        ];
        for permission in permissions {
            let requirement = permission.requirement();
            for role in ["admin", "auditor", "owner:web", "automation:web", "owner:db"] {
                let named = requirement.split([' ', ',']).any(|word| word == role);
                let permitted = permits(&[Role::parse(role).unwrap()], permission);
                assert_eq!(named, permitted, "{role} for {permission:?}: {requirement}");
            }
        }
    }
}
