//! Secret names, the NATS subjects derived from aggregate ids, and the file names
//! agents derive from secret names.
//!
//! One rule decides whether a name is valid, so the API, the CLI and the agent
//! accept or reject the same names with the same message.

use sha2::{Digest, Sha256};

use crate::error::NameError;
use crate::event::AggregateType;

/// Prefix of every event subject: `watchword.ev.<aggregate-type>.<token>`.
pub const EVENT_SUBJECT_PREFIX: &str = "watchword.ev";

/// Maximum length of a secret name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// Maximum length of a file name on the file systems agents write to (ext4, xfs, tmpfs).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Returns the subject token of an aggregate id: lowercase hex SHA-256 of its UTF-8 bytes.
///
/// Any id (dots, spaces, slashes, wildcards, unicode) maps to a valid NATS token,
/// and distinct ids map to distinct tokens unless SHA-256 collides.
pub fn subject_token(aggregate_id: &str) -> String {
    hex::encode(Sha256::digest(aggregate_id.as_bytes()))
}

/// Returns the subject carrying the events of one aggregate.
pub fn event_subject(kind: AggregateType, aggregate_id: &str) -> String {
    format!("{EVENT_SUBJECT_PREFIX}.{}.{}", kind.as_str(), subject_token(aggregate_id))
}

/// Checks a secret name: a valid name (see [`validate_entity_name`]) whose file
/// name (see [`file_name`]) fits in 255 bytes.
pub fn validate_secret_name(name: &str) -> Result<(), NameError> {
    validate_entity_name(name)?;
    let encoded = encode_file_name(name);
    if encoded.len() > MAX_FILE_NAME_BYTES {
        return Err(NameError::FileNameTooLong { bytes: encoded.len(), max: MAX_FILE_NAME_BYTES });
    }
    Ok(())
}

/// Checks a name of a secret, client or group: 1 to 255 bytes of UTF-8 with no
/// control or invisible format character, not `.` or `..`.
///
/// `.` and `..` are rejected because HTTP clients resolve them as dot segments of
/// the URL path (RFC 3986, section 5.2.4), even percent-encoded, so no client could
/// address them.
pub fn validate_entity_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotSegment);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { bytes: name.len(), max: MAX_NAME_BYTES });
    }
    check_characters(name)
}

/// Rejects control characters, and the invisible format characters (zero-width
/// spaces and joiners, bidirectional overrides, the byte order mark) that make two
/// different names look alike.
fn check_characters(name: &str) -> Result<(), NameError> {
    if let Some(position) = name.chars().position(char::is_control) {
        return Err(NameError::ControlCharacter { position });
    }
    if let Some(position) = name.chars().position(is_invisible_format) {
        return Err(NameError::InvisibleCharacter { position });
    }
    Ok(())
}

/// Returns whether `c` is one of Unicode's invisible format characters (general
/// category Cf) that names could hide.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// Maximum length of one part of an application name, in bytes.
pub const MAX_APPLICATION_PART_BYTES: usize = 64;

/// Returns the group of a deployment system's application: `/<org>/<assembly>/<env>`,
/// or `<domain>/<org>/<assembly>/<env>` under a domain.
///
/// Each part is 1 to 64 bytes of `A-Z a-z 0-9 _ - . @`, starts with a letter or a
/// digit, and is not `.` or `..`, so the mapping is injective: no part can contain
/// the `/` that separates them, and no two applications share a group.
pub fn application_group(
    domain: Option<&str>,
    org: &str,
    assembly: &str,
    env: &str,
) -> Result<String, ApplicationNameError> {
    let mut parts = vec![("org", org), ("assembly", assembly), ("env", env)];
    if let Some(domain) = domain {
        parts.insert(0, ("domain", domain));
    }
    for (field, value) in &parts {
        check_application_part(field, value)?;
    }
    let path = format!("/{org}/{assembly}/{env}");
    Ok(match domain {
        Some(domain) => format!("{domain}{path}"),
        None => path,
    })
}

fn check_application_part(field: &'static str, value: &str) -> Result<(), ApplicationNameError> {
    let invalid = |reason: &'static str| ApplicationNameError { field, value: value.to_owned(), reason };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_APPLICATION_PART_BYTES {
        return Err(invalid("it is longer than 64 bytes"));
    }
    if !value.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err(invalid("it must start with a letter or a digit"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b)) {
        return Err(invalid("only A-Z a-z 0-9 _ - . @ are allowed"));
    }
    Ok(())
}

/// An application name part that would make the group name ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid application {field} {value:?}: {reason}")]
pub struct ApplicationNameError {
    pub field: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Returns the file name an agent writes a secret to, inside its target directory.
///
/// Bytes outside `A-Z a-z 0-9 - _ . @ + = , ~ :` become `%XX` (uppercase hex), and so
/// does a leading `.`. The mapping is injective, the result never contains `/`, is
/// never `.` or `..` and never starts with `.`, so it cannot leave the directory and
/// cannot collide with an agent's own dot-files.
pub fn file_name(name: &str) -> Result<String, NameError> {
    validate_secret_name(name)?;
    Ok(encode_file_name(name))
}

fn encode_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (index, byte) in name.bytes().enumerate() {
        let keep = byte.is_ascii_alphanumeric() || b"-_.@+=,~:".contains(&byte);
        if keep && !(index == 0 && byte == b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_escapes_path_syntax() {
        assert_eq!(file_name("db/password").unwrap(), "db%2Fpassword");
        assert_eq!(file_name("...").unwrap(), "%2E..");
        assert_eq!(file_name(".env").unwrap(), "%2Eenv");
        assert_eq!(file_name("100%").unwrap(), "100%25");
        assert_eq!(file_name("a b").unwrap(), "a%20b");
        assert_eq!(file_name("x\\y").unwrap(), "x%5Cy");
        assert_eq!(file_name("é").unwrap(), "%C3%A9");
        assert_eq!(file_name("app@prod:key").unwrap(), "app@prod:key");
    }

    #[test]
    fn file_name_is_injective_on_escapes() {
        assert_ne!(file_name("a/b").unwrap(), file_name("a%2Fb").unwrap());
        assert_ne!(file_name(".a").unwrap(), file_name("%2Ea").unwrap());
    }

    #[test]
    fn invalid_names_rejected() {
        assert!(matches!(validate_secret_name(""), Err(NameError::Empty)));
        assert!(matches!(validate_secret_name("."), Err(NameError::DotSegment)));
        assert!(matches!(validate_secret_name(".."), Err(NameError::DotSegment)));
        assert!(matches!(validate_secret_name("a\nb"), Err(NameError::ControlCharacter { position: 1 })));
        assert!(matches!(validate_secret_name("\u{7f}"), Err(NameError::ControlCharacter { .. })));
        for invisible in ["db\u{200B}/password", "\u{202E}txt", "\u{FEFF}db", "a\u{2066}b"] {
            assert!(
                matches!(validate_secret_name(invisible), Err(NameError::InvisibleCharacter { .. })),
                "{invisible:?}"
            );
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(validate_secret_name(&long), Err(NameError::TooLong { .. })));
        let wide = "/".repeat(100);
        assert!(matches!(validate_secret_name(&wide), Err(NameError::FileNameTooLong { bytes: 300, .. })));
    }

    #[test]
    fn application_group_joins_parts() {
        assert_eq!(application_group(None, "acme", "web_shop", "prod-1").unwrap(), "/acme/web_shop/prod-1");
        assert_eq!(application_group(Some("oneops"), "a.b", "c@d", "e").unwrap(), "oneops/a.b/c@d/e");
    }

    #[test]
    fn ambiguous_application_parts_rejected() {
        for (org, field) in [("a/b", "org"), ("", "org"), ("..", "org"), (".x", "org"), ("a b", "org"), ("é", "org")] {
            let error = application_group(None, org, "x", "y").unwrap_err();
            assert_eq!(error.field, field, "{org:?}");
        }
        let long = "a".repeat(65);
        assert!(application_group(None, "a", &long, "y").is_err());
        assert_eq!(application_group(Some("-d"), "a", "b", "c").unwrap_err().field, "domain");
    }

    #[test]
    fn max_length_name_accepted() {
        assert!(validate_secret_name(&"a".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn subject_token_is_a_single_token() {
        for id in ["a.b", "a b", "*", ">", "x/y", "ü"] {
            let token = subject_token(id);
            assert_eq!(token.len(), 64);
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(subject_token("a.b"), subject_token("a_b"));
    }
}
