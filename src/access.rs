//! Who may do what: the one authorization function every path calls.
//!
//! For now an allow-list in the server's configuration: operators may read and write
//! every secret, and each reader may read the secrets its patterns match. A pattern
//! is an exact secret name, or a prefix followed by `*` (`*` alone matches every name).

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
