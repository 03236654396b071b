//! Secret metadata as the API carries it, and the rules every value must follow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use watchword_events::body::{Delivery, SecretMetadata};

use crate::config::parse_mode;

/// Maximum length of a description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Maximum number of labels on one secret.
pub const MAX_LABELS: usize = 64;
/// Maximum length of a label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 63;
/// Maximum length of a label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 255;
/// Maximum length of a file owner or group name (the usual limit of user names).
pub const MAX_ACCOUNT_NAME_BYTES: usize = 32;

/// A secret's metadata in JSON: the body of `PUT /v1/secrets/{name}/metadata` and
/// part of every secret description.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataJson {
    /// Group whose owners and automation manage the secret; `null` for administrators only.
    #[serde(default)]
    pub owner_group: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// File name agents write; `null` derives it from the secret name.
    #[serde(default)]
    pub file_name: Option<String>,
    /// File owner (user name or numeric id); `null` for the agent's user.
    #[serde(default)]
    pub file_owner: Option<String>,
    /// File group (group name or numeric id); `null` for the agent's group.
    #[serde(default)]
    pub file_group: Option<String>,
    /// Octal file mode such as `"0440"`; `null` for the agent's default.
    #[serde(default)]
    pub mode: Option<String>,
}

impl MetadataJson {
    /// Checks every field and converts to the stored form.
    pub fn parse(&self, max_encoded_bytes: usize) -> Result<SecretMetadata, String> {
        let metadata = SecretMetadata {
            owner_group: self.owner_group.clone(),
            description: self.description.clone(),
            labels: self.labels.clone(),
            delivery: Delivery {
                file_name: self.file_name.clone(),
                owner: self.file_owner.clone(),
                group: self.file_group.clone(),
                mode: self.mode.as_deref().map(parse_delivery_mode).transpose()?,
            },
        };
        validate(&metadata, max_encoded_bytes)?;
        Ok(metadata)
    }

    /// Returns the JSON form of stored metadata.
    pub fn from_stored(metadata: &SecretMetadata) -> MetadataJson {
        MetadataJson {
            owner_group: metadata.owner_group.clone(),
            description: metadata.description.clone(),
            labels: metadata.labels.clone(),
            file_name: metadata.delivery.file_name.clone(),
            file_owner: metadata.delivery.owner.clone(),
            file_group: metadata.delivery.group.clone(),
            mode: metadata.delivery.mode.map(|m| format!("{m:04o}")),
        }
    }
}

/// Parses the file mode of a secret: an octal mode without write bits for group or
/// others, because a secret file that others can change is never what is meant.
pub fn parse_delivery_mode(text: &str) -> Result<u32, String> {
    let mode = parse_mode(text)?;
    if mode & 0o022 != 0 {
        return Err(format!("file mode {text:?} lets group or others write the file; use a mode such as 0440"));
    }
    Ok(mode)
}

/// Checks stored metadata against the rules above and the size limit.
pub fn validate(metadata: &SecretMetadata, max_encoded_bytes: usize) -> Result<(), String> {
    if let Some(group) = &metadata.owner_group {
        watchword_events::names::validate_entity_name(group).map_err(|e| format!("owner_group: {e}"))?;
    }
    check_description(&metadata.description)?;
    if metadata.labels.len() > MAX_LABELS {
        return Err(format!("{} labels is above the maximum of {MAX_LABELS}", metadata.labels.len()));
    }
    for (key, value) in &metadata.labels {
        check_label_key(key)?;
        check_text(&format!("label {key:?}"), value, MAX_LABEL_VALUE_BYTES, false)?;
    }
    if let Some(file_name) = &metadata.delivery.file_name {
        check_file_name(file_name)?;
    }
    for (field, account) in [("file_owner", &metadata.delivery.owner), ("file_group", &metadata.delivery.group)] {
        if let Some(account) = account {
            check_account(field, account)?;
        }
    }
    let encoded = watchword_events::body::encode_body(metadata).len();
    if encoded > max_encoded_bytes {
        return Err(format!("metadata is {encoded} bytes encoded, above the maximum of {max_encoded_bytes} bytes"));
    }
    Ok(())
}

/// Checks a description of a secret, client or group: at most
/// [`MAX_DESCRIPTION_BYTES`], no control characters but newlines and tabs.
pub fn check_description(description: &str) -> Result<(), String> {
    check_text("description", description, MAX_DESCRIPTION_BYTES, true)
}

fn check_text(field: &str, text: &str, max: usize, multiline: bool) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("{field} is {} bytes, above the maximum of {max} bytes", text.len()));
    }
    let allowed = |c: char| !c.is_control() || (multiline && (c == '\n' || c == '\t'));
    if let Some(c) = text.chars().find(|c| !allowed(*c)) {
        return Err(format!("{field} contains the control character {c:?}; remove it"));
    }
    Ok(())
}

fn check_label_key(key: &str) -> Result<(), String> {
    let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/');
    let valid = (1..=MAX_LABEL_KEY_BYTES).contains(&key.len())
        && key.bytes().all(valid_char)
        && key.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return Err(format!(
            "label key {key:?} is invalid: use 1 to {MAX_LABEL_KEY_BYTES} characters from A-Z a-z 0-9 . _ - /, \
             starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks that a file name is one path component that cannot be taken for agent
/// state: not empty, no `/`, no NUL or other control characters, not starting with
/// `.`, at most 255 bytes.
pub fn check_file_name(file_name: &str) -> Result<(), String> {
    let problem = if file_name.is_empty() {
        Some("is empty")
    } else if file_name.len() > 255 {
        Some("is longer than 255 bytes")
    } else if file_name.contains('/') {
        Some("contains '/'; a file name is a single path component")
    } else if file_name.starts_with('.') {
        Some("starts with '.', which the agent keeps for its own files")
    } else if file_name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("file_name {file_name:?} {problem}")),
        None => Ok(()),
    }
}

fn check_account(field: &str, account: &str) -> Result<(), String> {
    let valid_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if account.bytes().all(|b| b.is_ascii_digit()) && account.parse::<u32>().is_err() {
        return Err(format!("{field} {account:?} is not a valid numeric id: ids go up to {}", u32::MAX));
    }
    let valid = (1..=MAX_ACCOUNT_NAME_BYTES).contains(&account.len())
        && account.bytes().all(valid_char)
        && !account.starts_with('-');
    if !valid {
        return Err(format!(
            "{field} {account:?} is invalid: use a numeric id or a name of 1 to {MAX_ACCOUNT_NAME_BYTES} characters \
             from A-Z a-z 0-9 . _ -, not starting with '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_that_escape_or_hide_are_rejected() {
        for bad in ["", ".env", "a/b", "..", "a\nb", &"x".repeat(256)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["db.env", "tls key.pem", "100%", "é"] {
            assert!(check_file_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn writable_modes_are_rejected() {
        assert!(parse_delivery_mode("0440").is_ok());
        assert!(parse_delivery_mode("0460").is_err());
        assert!(parse_delivery_mode("0402").is_err());
        assert!(parse_delivery_mode("4400").is_err());
    }

    #[test]
    fn labels_are_checked() {
        let mut json = MetadataJson::default();
        json.labels.insert("team/owner".to_owned(), "payments".to_owned());
        assert!(json.parse(16 * 1024).is_ok());
        json.labels.insert("-bad".to_owned(), "x".to_owned());
        assert!(json.parse(16 * 1024).unwrap_err().contains("label key"));
    }

    #[test]
    fn metadata_size_limit_applies() {
        let json = MetadataJson { description: "d".repeat(1000), ..Default::default() };
        assert!(json.parse(1024).is_ok());
        assert!(json.parse(900).unwrap_err().contains("above the maximum"));
    }

    #[test]
    fn accounts_are_names_or_ids() {
        assert!(check_account("file_owner", "www-data").is_ok());
        assert!(check_account("file_owner", "1000").is_ok());
        assert!(check_account("file_owner", "-root").is_err());
        assert!(check_account("file_owner", "4294967295").is_ok());
        assert!(check_account("file_owner", "99999999999").unwrap_err().contains("not a valid numeric id"));
        assert!(check_account("file_owner", "a b").is_err());
    }
}
