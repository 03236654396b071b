//! Sources of `watchword secret import`: the `watchword.secrets.v1` JSON document
//! and directories of files, read into entries with the problems found locally.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::invalid;
use crate::cli::Failure;
use crate::secrets::metadata::MetadataJson;

/// Value of the `format` field of an import or export document.
pub const FORMAT: &str = "watchword.secrets.v1";

/// An import or export document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    pub secrets: Vec<DocumentEntry>,
}

/// One secret of a document. `version` and `status` are written by export for
/// people and ignored by import.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentEntry {
    pub name: String,
    /// Content in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<SecretText>,
    /// Content as UTF-8 text, for hand-written documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataJson>,
    /// RFC 3339 expiry time of the version the import writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Text that contains secret content: zeroized on drop, and never shown by `Debug`.
#[derive(Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretText({} bytes)", self.0.len())
    }
}

/// A secret to import, as read from the source.
pub struct Entry {
    pub name: String,
    pub content: Option<Zeroizing<Vec<u8>>>,
    pub metadata: Option<MetadataJson>,
    pub expires_at: Option<String>,
    /// Reason the source itself makes this entry unusable, such as a symbolic link.
    pub problem: Option<String>,
}

impl Entry {
    fn rejected(name: String, problem: String) -> Entry {
        Entry { name, content: None, metadata: None, expires_at: None, problem: Some(problem) }
    }

    /// Returns the SHA-256 of everything the import writes for this entry: name,
    /// content, metadata and expiry, each length-prefixed.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let metadata = self.metadata.as_ref().map(|m| serde_json::to_vec(m).unwrap_or_default());
        let content = self.content.as_ref().map(|c| c.as_slice());
        for part in
            [Some(self.name.as_bytes()), content, metadata.as_deref(), self.expires_at.as_ref().map(|e| e.as_bytes())]
        {
            let part = part.unwrap_or_default();
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }
}

/// How to read the import source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// A `watchword.secrets.v1` JSON document.
    Json,
    /// A directory: each regular file is a secret named by its relative path.
    Dir,
}

/// Reads the entries of `source`; `format` defaults to JSON for a `.json` file
/// and to a directory otherwise.
pub fn read_source(source: &Path, format: Option<SourceFormat>) -> Result<Vec<Entry>, Failure> {
    let format = format.unwrap_or(if source.extension().is_some_and(|e| e == "json") {
        SourceFormat::Json
    } else {
        SourceFormat::Dir
    });
    match format {
        SourceFormat::Json => read_document(source),
        SourceFormat::Dir => read_directory(source),
    }
}

fn read_document(path: &Path) -> Result<Vec<Entry>, Failure> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?);
    let mut document: Document = serde_json::from_slice(&bytes).map_err(|e| document_error(path, &e))?;
    if document.format != FORMAT {
        return Err(invalid(format!(
            "{} has format {:?}; this version of watchword reads {FORMAT:?}",
            path.display(),
            document.format
        )));
    }
    Ok(document.secrets.iter_mut().map(document_entry).collect())
}

/// Describes a parse failure by its position only, because serde_json's own
/// message can quote a value found in the document, which may be secret content.
fn document_error(path: &Path, error: &serde_json::Error) -> Failure {
    let problem = match error.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Eof => "ends before the JSON document does",
        serde_json::error::Category::Data => {
            "does not match the import document: a field is unknown, missing or of the wrong type"
        }
    };
    let (line, column) = (error.line(), error.column());
    invalid(format!("{} {problem} (line {line}, column {column})", path.display()))
}

fn document_entry(entry: &mut DocumentEntry) -> Entry {
    let name = entry.name.clone();
    let content = match (entry.content_base64.take(), entry.content.take()) {
        (Some(_), Some(_)) => return Entry::rejected(name, "has both content_base64 and content; keep one".to_owned()),
        (None, None) => {
            let problem = "has no content: give content_base64 or content (an export without --with-content \
                           contains metadata only)";
            return Entry::rejected(name, problem.to_owned());
        }
        (Some(encoded), None) => match base64::engine::general_purpose::STANDARD.decode(encoded.0.as_bytes()) {
            Ok(content) => Zeroizing::new(content),
            // The decoder's message would quote a byte of the content.
            Err(_) => return Entry::rejected(name, "content_base64 is not valid standard base64".to_owned()),
        },
        (None, Some(mut text)) => Zeroizing::new(std::mem::take(&mut text.0).into_bytes()),
    };
    Entry {
        name,
        content: Some(content),
        metadata: entry.metadata.take(),
        expires_at: entry.expires_at.take(),
        problem: None,
    }
}

/// Reads every regular file below `root`, sorted by name. Symbolic links, special
/// files and paths that are not UTF-8 become rejected entries, so that each is
/// reported with its reason.
fn read_directory(root: &Path) -> Result<Vec<Entry>, Failure> {
    let metadata =
        std::fs::symlink_metadata(root).map_err(|e| invalid(format!("cannot read {}: {e}", root.display())))?;
    if !metadata.is_dir() {
        return Err(invalid(format!(
            "{} is not a directory; pass --format json to read it as a JSON document",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = std::fs::read_dir(&dir).map_err(|e| invalid(format!("cannot read {}: {e}", dir.display())))?;
        for item in listing {
            let item = item.map_err(|e| invalid(format!("cannot read {}: {e}", dir.display())))?;
            let path = item.path();
            let file_type = item.file_type().map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            let name = match relative_name(root, &path) {
                Ok(name) => name,
                Err(shown) => {
                    entries.push(Entry::rejected(shown, "path is not valid UTF-8".to_owned()));
                    continue;
                }
            };
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_symlink() {
                entries.push(Entry::rejected(name, "is a symbolic link; only regular files are imported".to_owned()));
            } else if !file_type.is_file() {
                let problem = "is a special file (device, socket or FIFO); only regular files are imported";
                entries.push(Entry::rejected(name, problem.to_owned()));
            } else {
                entries.push(read_file(name, &path));
            }
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn read_file(name: String, path: &Path) -> Entry {
    match std::fs::read(path) {
        Ok(content) => {
            Entry { name, content: Some(Zeroizing::new(content)), metadata: None, expires_at: None, problem: None }
        }
        Err(e) => Entry::rejected(name, format!("cannot be read: {e}")),
    }
}

/// Returns the secret name of `path`: its components below `root` joined by `/`,
/// or, when one is not UTF-8, the lossy form for the report.
fn relative_name(root: &Path, path: &Path) -> Result<String, String> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<Option<&str>> = relative.components().map(|c| c.as_os_str().to_str()).collect();
    if parts.iter().all(Option::is_some) {
        return Ok(parts.into_iter().flatten().collect::<Vec<_>>().join("/"));
    }
    Err(relative.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_entry_needs_one_content() {
        let mut both = DocumentEntry {
            name: "a".to_owned(),
            content: Some(SecretText("x".to_owned())),
            content_base64: Some(SecretText("eA==".to_owned())),
            ..Default::default()
        };
        assert!(document_entry(&mut both).problem.unwrap().contains("both"));
        let mut none = DocumentEntry { name: "a".to_owned(), ..Default::default() };
        assert!(document_entry(&mut none).problem.unwrap().contains("no content"));
        let mut text =
            DocumentEntry { name: "a".to_owned(), content: Some(SecretText("x".to_owned())), ..Default::default() };
        assert_eq!(document_entry(&mut text).content.unwrap().as_slice(), b"x");
    }

    #[test]
    fn entry_digest_covers_every_field() {
        let entry = |name: &str, content: &[u8], expires: Option<&str>| Entry {
            name: name.to_owned(),
            content: Some(Zeroizing::new(content.to_vec())),
            metadata: None,
            expires_at: expires.map(str::to_owned),
            problem: None,
        };
        let base = entry("a", b"bc", None).digest();
        assert_ne!(base, entry("ab", b"c", None).digest(), "the boundary between fields counts");
        assert_ne!(base, entry("a", b"bd", None).digest());
        assert_ne!(base, entry("a", b"bc", Some("2030-01-01T00:00:00Z")).digest());
        assert_eq!(base, entry("a", b"bc", None).digest());
    }
}
