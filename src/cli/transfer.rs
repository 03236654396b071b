//! `watchword secret import` and `watchword secret export`: bulk transfer of
//! secrets in the `watchword.secrets.v1` document (see `docs/import-export.md`).
//!
//! An import runs in two phases. Validation checks every entry locally and
//! against the server without writing: name, size, metadata, expiry, duplicate
//! names and file names, and whether the secret exists. The write phase then
//! writes each entry with a precondition on the state validation saw and an
//! idempotency key, so that a retried import is applied once within the server's
//! duplicate window.

mod source;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;

use base64::Engine;
use clap::Args;
use hmac::{Hmac, Mac};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use self::source::{Document, DocumentEntry, Entry, FORMAT, SecretText, SourceFormat};
use super::{Failure, Output, print_rows, write_private};
use crate::api::{SecretDescription, WriteResponse};
use crate::client::{ApiClient, ClientError, Conditions};
use crate::config::{self, ClientConfig};
use crate::secrets::metadata::MetadataJson;

/// Maximum length of `--idempotency-prefix`, which leaves room in the 255 bytes of
/// an idempotency key for the name digest and a revision.
const MAX_PREFIX_BYTES: usize = 128;

#[derive(Debug, Args)]
pub(super) struct ImportArgs {
    /// A directory of files (each secret named by its relative path) or a
    /// watchword.secrets.v1 JSON document.
    source: PathBuf,
    /// How to read SOURCE (default: json for a name ending in .json, dir otherwise).
    #[arg(long, value_enum)]
    format: Option<SourceFormat>,
    /// Validate every entry locally and against the server, print the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write nothing if any entry is invalid. When a write fails, undo this
    /// import's writes: new secrets are deleted softly, updated ones rolled back.
    #[arg(long)]
    all_or_nothing: bool,
    /// Read the current content of each existing secret and skip entries whose
    /// content and metadata are unchanged (needs read access to those secrets).
    #[arg(long)]
    skip_unchanged: bool,
    /// Prefix of the idempotency keys, 1 to 128 visible ASCII characters (default:
    /// a keyed digest of each entry, so that the same source gets the same keys).
    #[arg(long)]
    idempotency_prefix: Option<String>,
    /// Owner group of the secrets created from entries without metadata.
    #[arg(long)]
    owner_group: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// File to write, replaced atomically, with mode 0600.
    #[arg(long)]
    out: PathBuf,
    /// Export only the secrets whose name starts with this prefix.
    #[arg(long)]
    prefix: Option<String>,
    /// Include each secret's current content (needs read access to each secret).
    #[arg(long)]
    with_content: bool,
    /// With --with-content, export the secrets this client cannot read without
    /// content instead of failing.
    #[arg(long, requires = "with_content")]
    skip_unreadable: bool,
}

/// The step an import plans for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    /// The secret does not exist: the write requires that it still does not.
    Create,
    /// The secret exists (active, deleted or destroyed): the write requires the
    /// revision validation saw.
    Update,
    /// `--skip-unchanged` found the same content and metadata.
    Unchanged,
    Invalid,
}

/// The outcome of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryResult {
    Planned,
    Written,
    /// An earlier run with the same idempotency key wrote this version.
    AlreadyWritten,
    Skipped,
    Failed,
    /// Valid, but not written because another entry failed (`--all-or-nothing`).
    NotWritten,
    RolledBack,
    RollbackFailed,
}

/// One line of the import report.
#[derive(Debug, Serialize)]
struct Outcome {
    name: String,
    action: Action,
    result: EntryResult,
    /// The secret's revision after this import's write.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// Exit status this entry's failure maps to.
    #[serde(skip)]
    status: u8,
}

/// An entry with the validation's findings.
struct Planned {
    entry: Entry,
    /// The secret as validation found it; `None` when it does not exist.
    found: Option<SecretDescription>,
    /// Metadata the write sends; `None` keeps the current metadata.
    metadata: Option<MetadataJson>,
    outcome: Outcome,
}

impl Planned {
    fn reject(&mut self, status: u8, message: String) {
        if self.outcome.action != Action::Invalid {
            self.outcome.action = Action::Invalid;
            self.outcome.result = EntryResult::Failed;
            self.outcome.status = status;
            self.outcome.message = Some(message);
        }
    }

    fn will_write(&self) -> bool {
        matches!(self.outcome.action, Action::Create | Action::Update)
    }
}

/// The import report, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct Report<'a> {
    dry_run: bool,
    all_or_nothing: bool,
    entries: Vec<&'a Outcome>,
    /// Secrets that still hold this import's writes after a failed rollback, one line each.
    remaining: &'a [String],
}

/// Limits that validation applies, as the server reports them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    content_bytes: usize,
    metadata_bytes: usize,
}

fn invalid(message: String) -> Failure {
    Failure { status: 2, message }
}

/// Imports the secrets of `args.source`. `config` is the client configuration,
/// whose credential keys the default idempotency keys.
pub(super) async fn import(
    client: &ApiClient,
    output: Output,
    config: &Option<PathBuf>,
    args: ImportArgs,
) -> Result<(), Failure> {
    let key_source = idempotency_source(config, args.idempotency_prefix.as_deref())?;
    let entries = source::read_source(&args.source, args.format)?;
    let mut planned = validate(client, output, entries, &args).await?;

    let any_invalid = planned.iter().any(|p| p.outcome.action == Action::Invalid);
    let mut remaining = Vec::new();
    if args.all_or_nothing && any_invalid && !args.dry_run {
        for entry in planned.iter_mut().filter(|p| p.will_write()) {
            entry.outcome.result = EntryResult::NotWritten;
        }
    } else if !args.dry_run {
        remaining = write_all(client, output, &mut planned, &key_source, args.all_or_nothing).await;
    }

    print_report(output, &args, &planned, &remaining);
    import_status(&planned, &remaining, args.dry_run)
}

/// Runs the validation phase; it writes nothing.
async fn validate(
    client: &ApiClient,
    output: Output,
    entries: Vec<Entry>,
    args: &ImportArgs,
) -> Result<Vec<Planned>, Failure> {
    let status = client.status().await?;
    let limits = Limits {
        content_bytes: status.max_content_bytes.map_or(crate::writer::MAX_CONTENT_BYTES, |m| m as usize),
        metadata_bytes: status.max_metadata_bytes.map_or(crate::config::MAX_METADATA_BYTES, |m| m as usize),
    };
    if let Some(group) = &args.owner_group {
        watchword_events::names::validate_entity_name(group)
            .map_err(|e| invalid(format!("invalid --owner-group: {e}")))?;
    }

    let mut planned: Vec<Planned> = entries.into_iter().map(|entry| check_locally(entry, limits)).collect();
    reject_duplicate_names(&mut planned);

    let bar = progress_bar(planned.len(), output, "validating");
    for entry in planned.iter_mut() {
        bar.inc(1);
        if entry.outcome.action == Action::Invalid {
            continue;
        }
        look_up(client, entry, args).await?;
    }
    bar.finish_and_clear();

    reject_file_name_collisions(client, &mut planned, limits).await?;
    Ok(planned)
}

/// Checks what needs no server: the source's own problems, the name, the size,
/// the metadata and the expiry time.
fn check_locally(entry: Entry, limits: Limits) -> Planned {
    let outcome = Outcome {
        name: entry.name.clone(),
        action: Action::Create,
        result: EntryResult::Planned,
        revision: None,
        message: None,
        status: 0,
    };
    let mut planned = Planned { metadata: entry.metadata.clone(), entry, found: None, outcome };
    if let Some(problem) = planned.entry.problem.clone() {
        planned.reject(2, problem);
        return planned;
    }
    if let Err(error) = watchword_events::names::validate_secret_name(&planned.entry.name) {
        planned.reject(2, error.to_string());
    }
    let size = planned.entry.content.as_ref().map_or(0, |c| c.len());
    if size > limits.content_bytes {
        let message = format!("content is {size} bytes, above the server's maximum of {} bytes", limits.content_bytes);
        planned.reject(2, message);
    }
    if let Some(Err(error)) = planned.entry.metadata.as_ref().map(|m| m.parse(limits.metadata_bytes)) {
        planned.reject(2, format!("invalid metadata: {error}"));
    }
    if let Some(Err(error)) = planned.entry.expires_at.as_deref().map(check_expiry) {
        planned.reject(2, error);
    }
    planned
}

fn check_expiry(text: &str) -> Result<(), String> {
    let format = &time::format_description::well_known::Rfc3339;
    let at = time::OffsetDateTime::parse(text, format)
        .map_err(|_| format!("expires_at {text:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z"))?;
    if at <= time::OffsetDateTime::now_utc() {
        return Err(format!("expires_at {text:?} is in the past"));
    }
    Ok(())
}

fn reject_duplicate_names(planned: &mut [Planned]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for entry in planned.iter() {
        *counts.entry(entry.entry.name.clone()).or_default() += 1;
    }
    for entry in planned.iter_mut() {
        if counts[&entry.entry.name] > 1 {
            entry.reject(2, "the name appears more than once in this import".to_owned());
        }
    }
}

/// Finds whether the secret exists and decides the action; with
/// `--skip-unchanged`, compares the current content and metadata.
async fn look_up(client: &ApiClient, planned: &mut Planned, args: &ImportArgs) -> Result<(), Failure> {
    let name = planned.entry.name.clone();
    let found = match client.get_metadata(&name).await {
        Ok(found) => Some(found),
        Err(ClientError::Api { status: 404, .. }) => None,
        Err(error @ (ClientError::Unreachable { .. } | ClientError::Api { status: 503, .. })) => {
            return Err(error.into());
        }
        Err(error) => {
            let failure = Failure::from(error);
            planned.reject(failure.status, failure.message);
            return Ok(());
        }
    };
    planned.outcome.action = if found.is_some() { Action::Update } else { Action::Create };
    if planned.metadata.is_none() && found.is_none() {
        planned.metadata = args
            .owner_group
            .as_ref()
            .map(|group| MetadataJson { owner_group: Some(group.clone()), ..Default::default() });
    }
    let active = found.as_ref().filter(|f| f.status == "active");
    if let Some(current) = active.filter(|_| args.skip_unchanged) {
        let same_metadata = planned.metadata.as_ref().is_none_or(|m| *m == current.metadata);
        if same_metadata && planned.entry.expires_at.is_none() && same_content(client, planned).await {
            planned.outcome.action = Action::Unchanged;
            planned.outcome.result = EntryResult::Skipped;
            planned.outcome.message = Some("content and metadata are unchanged".to_owned());
        }
    }
    planned.found = found;
    Ok(())
}

/// Returns whether the secret's current content equals the entry's; a secret this
/// client cannot read counts as changed.
async fn same_content(client: &ApiClient, planned: &Planned) -> bool {
    match (client.get_secret(&planned.entry.name, None).await, &planned.entry.content) {
        (Ok(current), Some(content)) => current.content.as_slice() == content.as_slice(),
        _ => false,
    }
}

/// Rejects entries whose effective file name (the one agents write) another entry
/// of the import or another existing secret already uses.
async fn reject_file_name_collisions(
    client: &ApiClient,
    planned: &mut [Planned],
    limits: Limits,
) -> Result<(), Failure> {
    let existing = client.list_secrets_with(None, true).await?;
    let mut owners: BTreeMap<String, String> = existing
        .secrets
        .iter()
        .filter(|s| s.status != "destroyed")
        .filter_map(|s| Some((s.file_name.clone()?, s.name.clone())))
        .collect();
    let importing: Vec<String> = planned.iter().filter(|p| p.will_write()).map(|p| p.entry.name.clone()).collect();
    owners.retain(|_, owner| !importing.contains(owner));

    let mut claimed: HashMap<String, String> = HashMap::new();
    for entry in planned.iter_mut().filter(|p| p.will_write()) {
        let Some(file_name) = effective_file_name(entry, limits) else {
            continue;
        };
        if let Some(other) = owners.get(&file_name) {
            entry.reject(4, format!("file name {file_name:?} is already used by secret {other:?}"));
        } else if let Some(other) = claimed.get(&file_name) {
            entry.reject(2, format!("file name {file_name:?} is also the file name of {other:?} in this import"));
        } else {
            claimed.insert(file_name, entry.entry.name.clone());
        }
    }
    Ok(())
}

/// Returns the file name agents would write the secret to after the import.
fn effective_file_name(planned: &Planned, limits: Limits) -> Option<String> {
    let current = planned.found.as_ref().filter(|f| f.status == "active").map(|f| &f.metadata);
    let metadata = planned.metadata.as_ref().or(current).cloned().unwrap_or_default();
    let stored = metadata.parse(limits.metadata_bytes).ok()?;
    watchword_events::fold::effective_file_name(&planned.entry.name, &stored)
}

/// Runs the write phase and, for `--all-or-nothing`, the rollback; returns what a
/// failed rollback left behind.
async fn write_all(
    client: &ApiClient,
    output: Output,
    planned: &mut [Planned],
    keys: &KeySource,
    all_or_nothing: bool,
) -> Vec<String> {
    let bar = progress_bar(planned.iter().filter(|p| p.will_write()).count(), output, "writing");
    let mut written: Vec<usize> = Vec::new();
    let mut failed = false;
    for (index, entry) in planned.iter_mut().enumerate() {
        if !entry.will_write() {
            continue;
        }
        if failed && all_or_nothing {
            entry.outcome.result = EntryResult::NotWritten;
            continue;
        }
        bar.inc(1);
        match write_entry(client, entry, keys).await {
            Ok(response) => {
                entry.outcome.revision = Some(response.revision);
                if response.replayed {
                    entry.outcome.result = EntryResult::AlreadyWritten;
                } else {
                    entry.outcome.result = EntryResult::Written;
                    written.push(index);
                }
            }
            Err(error) => {
                let failure = Failure::from(error);
                entry.outcome.result = EntryResult::Failed;
                entry.outcome.status = failure.status;
                entry.outcome.message = Some(failure.message);
                failed = true;
            }
        }
    }
    bar.finish_and_clear();

    if !(failed && all_or_nothing) {
        return Vec::new();
    }
    let mut remaining = Vec::new();
    for index in written.into_iter().rev() {
        if let Err(left) = roll_back(client, &mut planned[index]).await {
            remaining.push(left);
        }
    }
    remaining
}

/// Writes one entry with its precondition and idempotency key. When the server
/// returns an earlier run's write that is no longer the current revision (the
/// secret changed since, for example by that run's rollback), the entry is
/// written again under a key that adds the revision validation saw.
async fn write_entry(client: &ApiClient, planned: &Planned, keys: &KeySource) -> Result<WriteResponse, ClientError> {
    let content = planned.entry.content.as_ref().map(|c| c.as_slice()).unwrap_or_default();
    // NOTE: this JSON value and reqwest's request buffer hold the content in base64
    // and are not zeroized.
    let mut body = serde_json::json!({
        "content_base64": base64::engine::general_purpose::STANDARD.encode(content),
    });
    if let Some(metadata) = &planned.metadata {
        body["metadata"] = serde_json::to_value(metadata).unwrap_or_default();
    }
    if let Some(expires_at) = &planned.entry.expires_at {
        body["expires_at"] = expires_at.clone().into();
    }
    let seen = planned.found.as_ref().map(|f| f.revision);
    let mut conditions = Conditions {
        if_revision: seen,
        if_absent: seen.is_none(),
        idempotency_key: Some(keys.key(&planned.entry, None)),
    };
    let response = client.post_version(&planned.entry.name, &body, &conditions).await?;
    if !response.replayed || seen == Some(response.revision) {
        return Ok(response);
    }
    conditions.idempotency_key = Some(keys.key(&planned.entry, Some(seen.unwrap_or(0))));
    client.post_version(&planned.entry.name, &body, &conditions).await
}

/// Undoes this import's write of one entry: a secret that was not active before is
/// deleted softly, an active one gets its previous content back through a rollback
/// and then its previous metadata. Returns what is left when a step fails.
async fn roll_back(client: &ApiClient, planned: &mut Planned) -> Result<(), String> {
    let name = planned.entry.name.clone();
    let revision = planned.outcome.revision.unwrap_or_default();
    let on_revision = |revision: u64| Conditions { if_revision: Some(revision), ..Default::default() };
    let outcome = &mut planned.outcome;
    let previous = planned.found.as_ref().filter(|f| f.status == "active");

    let undone = match previous {
        None => client.secret_command(Method::DELETE, &name, "", None, &on_revision(revision)).await.map(|_| ()),
        Some(previous) => {
            let body = serde_json::json!({ "version": previous.version });
            let conditions = on_revision(revision);
            match client.secret_command(Method::POST, &name, "rollback", Some(&body), &conditions).await {
                Ok(response) if planned.metadata.as_ref().is_some_and(|m| *m != previous.metadata) => {
                    client.put_metadata(&name, &previous.metadata, &on_revision(response.revision)).await.map(|_| ())
                }
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            }
        }
    };
    match undone {
        Ok(()) => {
            outcome.result = EntryResult::RolledBack;
            Ok(())
        }
        Err(error) => {
            outcome.result = EntryResult::RollbackFailed;
            let left = match previous {
                None => "the secret created by this import is still active",
                Some(_) => "the content or metadata written by this import is still current",
            };
            outcome.message = Some(format!("{left}: {error}"));
            Err(format!("{name}: {left}: {error}"))
        }
    }
}

fn print_report(output: Output, args: &ImportArgs, planned: &[Planned], remaining: &[String]) {
    let entries: Vec<&Outcome> = planned.iter().map(|p| &p.outcome).collect();
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                serde_label(&o.action),
                serde_label(&o.result),
                o.revision.map_or(String::new(), |r| r.to_string()),
                o.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let report = Report { dry_run: args.dry_run, all_or_nothing: args.all_or_nothing, entries, remaining };
    print_rows(output, &report, &["NAME", "ACTION", "RESULT", "REVISION", "MESSAGE"], &rows);
    if output == Output::Table {
        if args.dry_run {
            eprintln!("dry run: nothing was written");
        }
        for left in remaining {
            eprintln!("left after a failed rollback: {left}");
        }
    }
}

fn serde_label(value: &impl Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Returns the exit status of an import: the status of the first failed entry.
fn import_status(planned: &[Planned], remaining: &[String], dry_run: bool) -> Result<(), Failure> {
    let failures: Vec<&Outcome> = planned
        .iter()
        .map(|p| &p.outcome)
        .filter(|o| matches!(o.result, EntryResult::Failed | EntryResult::RollbackFailed))
        .collect();
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let verb = if dry_run { "would fail" } else { "failed" };
    let mut message = format!("{} of {} entries {verb}; the first is {:?}", failures.len(), planned.len(), first.name);
    if !remaining.is_empty() {
        message.push_str(&format!("; {} secrets could not be rolled back", remaining.len()));
    }
    Err(Failure { status: first.status.max(1), message })
}

/// Derives each entry's idempotency key.
enum KeySource {
    /// Keys are `import:` and an HMAC of the entry under a key derived from the
    /// client's credential, so the key reveals nothing about the content to those
    /// who read the stream's message ids.
    Keyed(Zeroizing<Vec<u8>>),
    /// Keys are the prefix and a digest of the secret name.
    Prefix(String),
}

impl KeySource {
    fn key(&self, entry: &Entry, after_revision: Option<u64>) -> String {
        let mut key = match self {
            KeySource::Keyed(secret) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_slice()).expect("HMAC takes keys of any length");
                mac.update(&entry.digest());
                format!("import:{}", hex::encode(mac.finalize().into_bytes()))
            }
            KeySource::Prefix(prefix) => {
                format!("{prefix}:{}", &hex::encode(Sha256::digest(entry.name.as_bytes()))[..40])
            }
        };
        if let Some(revision) = after_revision {
            key.push_str(&format!(":r{revision}"));
        }
        key
    }
}

fn idempotency_source(config: &Option<PathBuf>, prefix: Option<&str>) -> Result<KeySource, Failure> {
    if let Some(prefix) = prefix {
        let valid = (1..=MAX_PREFIX_BYTES).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_graphic());
        if !valid {
            return Err(invalid(format!(
                "invalid --idempotency-prefix: use 1 to {MAX_PREFIX_BYTES} visible ASCII characters"
            )));
        }
        return Ok(KeySource::Prefix(prefix.to_owned()));
    }
    let path = super::config_path(config)?;
    let config: ClientConfig = config::load(&path).map_err(|e| Failure { status: 1, message: e.to_string() })?;
    let credential = config
        .key
        .or(config.token_file)
        .ok_or_else(|| Failure { status: 1, message: "the client configuration has no credentials".to_owned() })?;
    let bytes = Zeroizing::new(std::fs::read(&credential).map_err(|e| Failure {
        status: 1,
        message: format!("cannot read the credential {}: {e}", credential.display()),
    })?);
    let mut hasher = Sha256::new();
    hasher.update(b"watchword import idempotency key\0");
    hasher.update(bytes.as_slice());
    Ok(KeySource::Keyed(Zeroizing::new(hasher.finalize().to_vec())))
}

fn progress_bar(len: usize, output: Output, message: &'static str) -> ProgressBar {
    if output == Output::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}") {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

/// Summary of an export, as `--output json` prints it.
#[derive(Debug, Serialize)]
struct ExportReport {
    out: String,
    secrets: usize,
    with_content: bool,
    /// Secrets exported without content, with the reason (`--skip-unreadable`).
    unreadable: Vec<String>,
}

/// Writes the secrets this client may list to `args.out`.
pub(super) async fn export(client: &ApiClient, output: Output, args: ExportArgs) -> Result<(), Failure> {
    let list = client.list_secrets_with(None, false).await?;
    let prefix = args.prefix.as_deref().unwrap_or_default();
    let names: Vec<&str> = list.secrets.iter().map(|s| s.name.as_str()).filter(|n| n.starts_with(prefix)).collect();

    let bar = progress_bar(names.len(), output, "exporting");
    let mut secrets = Vec::new();
    let mut unreadable = Vec::new();
    for name in names {
        bar.inc(1);
        let description = client.get_metadata(name).await?;
        let summary = list.secrets.iter().find(|s| s.name == name);
        let mut entry = DocumentEntry {
            name: name.to_owned(),
            metadata: Some(description.metadata),
            expires_at: summary.and_then(|s| s.expires_at.clone()).filter(|at| check_expiry(at).is_ok()),
            version: Some(description.version),
            status: Some(description.status),
            ..Default::default()
        };
        if args.with_content {
            match read_content(client, name, description.version).await {
                Ok(content) => {
                    entry.content_base64 =
                        Some(SecretText(base64::engine::general_purpose::STANDARD.encode(content.as_slice())));
                }
                Err(error) => unreadable.push(format!("{name}: {error}")),
            }
        }
        secrets.push(entry);
    }
    bar.finish_and_clear();

    if !unreadable.is_empty() && !args.skip_unreadable {
        return Err(Failure {
            status: 3,
            message: format!(
                "cannot read {} of the secrets to export, so nothing was written: {}; \
                 pass --skip-unreadable to export them without content",
                unreadable.len(),
                unreadable.join("; ")
            ),
        });
    }
    let document = Document { format: FORMAT.to_owned(), secrets };
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(&document)
            .map_err(|e| Failure { status: 1, message: format!("cannot encode the export: {e}") })?,
    );
    write_private(&args.out, &json)?;

    for reason in &unreadable {
        eprintln!("exported without content: {reason}");
    }
    let report = ExportReport {
        out: args.out.display().to_string(),
        secrets: document.secrets.len(),
        with_content: args.with_content,
        unreadable,
    };
    let row = vec![report.out.clone(), report.secrets.to_string(), report.with_content.to_string()];
    print_rows(output, &report, &["FILE", "SECRETS", "CONTENT"], &[row]);
    Ok(())
}

/// Reads a secret's current content: through the read path for readers and
/// administrators, else through its version for the owners of its owner group.
async fn read_content(client: &ApiClient, name: &str, version: u64) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    match client.get_secret(name, None).await {
        Ok(secret) => Ok(secret.content),
        Err(ClientError::Api { status: 404 | 410, .. }) => Ok(client.get_version(name, version).await?.content),
        Err(error) => Err(error),
    }
}
