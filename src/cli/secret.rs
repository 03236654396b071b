//! `watchword secret ...`: write, read, list, describe and manage the lifecycle of secrets.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use base64::Engine;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::{Failure, Output, print_line, print_out, print_rows, write_private};
use crate::api::{SecretSummary, WriteResponse};
use crate::client::{ApiClient, Conditions, PutOptions};
use crate::secrets::metadata::MetadataJson;

#[derive(Debug, Subcommand)]
pub(super) enum SecretCommand {
    /// Write a new version of a secret (creating it if needed).
    Put(PutArgs),
    /// Print a secret's current content.
    Get {
        name: String,
        /// Write the content to this file (mode 0600) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Wait until the server reflects this stream sequence (read-your-writes).
        #[arg(long, conflicts_with = "version")]
        min_sequence: Option<u64>,
        /// Read this earlier version instead of the current one (administrators and
        /// owners of the secret's owner group).
        #[arg(long)]
        version: Option<u64>,
    },
    /// List the versions of a secret: who wrote each, when, and its keyed digest (no content).
    Versions { name: String },
    /// List secrets (metadata only).
    List {
        /// Wait until the server reflects this stream sequence (read-your-writes).
        #[arg(long)]
        min_sequence: Option<u64>,
        /// Also list deleted and destroyed secrets (operators only).
        #[arg(long)]
        all: bool,
    },
    /// Show a secret's metadata, status and incarnation.
    Show { name: String },
    /// Change a secret's metadata; fields not given keep their value.
    SetMetadata(SetMetadataArgs),
    /// Delete a secret softly: no one reads it and agents remove its file, until it is restored.
    Delete {
        name: String,
        #[command(flatten)]
        conditions: ConditionArgs,
    },
    /// Restore a deleted secret with its versions and metadata.
    Restore {
        name: String,
        #[command(flatten)]
        conditions: ConditionArgs,
    },
    /// Add a version whose content is that of an earlier version, recorded as a rollback.
    Rollback {
        name: String,
        /// The earlier version to return to.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        conditions: ConditionArgs,
    },
    /// Destroy a secret or one version for good: its content becomes unrecoverable.
    Destroy {
        name: String,
        /// Destroy only this version.
        #[arg(long)]
        version: Option<u64>,
        /// Confirm that the content must become unrecoverable.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conditions: ConditionArgs,
    },
    /// Write many secrets from a directory of files or a JSON document.
    Import(super::transfer::ImportArgs),
    /// Write the metadata (and with --with-content the content) of secrets to a JSON document.
    Export(super::transfer::ExportArgs),
    /// List secrets whose current version expires within a window.
    Expiring {
        /// Window from now, such as 90s, 30m, 12h or 7d.
        #[arg(long, value_parser = parse_duration)]
        within: u64,
    },
}

/// Preconditions and idempotency key of a command.
#[derive(Debug, Args)]
pub(super) struct ConditionArgs {
    /// Apply only if the secret's current revision is this one.
    #[arg(long)]
    if_revision: Option<u64>,
    /// Key that makes a retried command apply once (1 to 255 visible ASCII characters).
    #[arg(long)]
    idempotency_key: Option<String>,
}

impl ConditionArgs {
    fn conditions(self) -> Conditions {
        Conditions { if_revision: self.if_revision, if_absent: false, idempotency_key: self.idempotency_key }
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "stdin"])))]
pub(super) struct PutArgs {
    name: String,
    /// Read the content from this file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Read the content from standard input.
    #[arg(long)]
    stdin: bool,
    /// File mode agents give the secret, in octal (default: the agent's, 0400).
    #[arg(long)]
    mode: Option<String>,
    /// Group whose owners and automation manage the secret.
    #[arg(long)]
    owner_group: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// File name agents write the secret to (default: derived from the secret name).
    #[arg(long)]
    file_name: Option<String>,
    /// Owner of the file on computes: a user name or numeric id.
    #[arg(long)]
    file_owner: Option<String>,
    /// Group of the file on computes: a group name or numeric id.
    #[arg(long)]
    file_group: Option<String>,
    /// Time after which computes stop receiving this version, as RFC 3339.
    #[arg(long, conflicts_with = "expires_in")]
    expires_at: Option<String>,
    /// Lifetime of this version, such as 12h or 30d.
    #[arg(long, value_parser = parse_duration)]
    expires_in: Option<u64>,
    /// Write only if the secret's current revision is this one.
    #[arg(long, conflicts_with = "if_absent")]
    if_revision: Option<u64>,
    /// Write only if the secret does not exist yet.
    #[arg(long)]
    if_absent: bool,
    /// Key that makes a retried write apply once (1 to 255 visible ASCII characters).
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct SetMetadataArgs {
    name: String,
    #[arg(long)]
    owner_group: Option<String>,
    /// Remove the owner group: only administrators manage the secret then.
    #[arg(long, conflicts_with = "owner_group")]
    no_owner_group: bool,
    #[arg(long)]
    description: Option<String>,
    /// Set a label, as KEY=VALUE; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Remove a label by key; repeat for several.
    #[arg(long = "remove-label", value_name = "KEY")]
    remove_labels: Vec<String>,
    #[arg(long)]
    file_name: Option<String>,
    /// Go back to the file name derived from the secret name.
    #[arg(long, conflicts_with = "file_name")]
    default_file_name: bool,
    #[arg(long)]
    file_owner: Option<String>,
    /// Go back to the agent's own user as the file owner.
    #[arg(long, conflicts_with = "file_owner")]
    no_file_owner: bool,
    #[arg(long)]
    file_group: Option<String>,
    /// Go back to the agent's own group as the file group.
    #[arg(long, conflicts_with = "file_group")]
    no_file_group: bool,
    /// Octal file mode such as 0440.
    #[arg(long)]
    mode: Option<String>,
    /// Go back to the agent's default file mode.
    #[arg(long, conflicts_with = "mode")]
    default_mode: bool,
    /// Key that makes a retried change apply once.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs a secret command; `config` is the client configuration file, whose
/// credential keys the idempotency keys of an import.
pub(super) async fn run(
    client: &ApiClient,
    output: Output,
    command: SecretCommand,
    config: &Option<PathBuf>,
) -> Result<(), Failure> {
    match command {
        SecretCommand::Import(args) => super::transfer::import(client, output, config, args).await,
        SecretCommand::Export(args) => super::transfer::export(client, output, args).await,
        SecretCommand::Put(args) => put(client, output, args).await,
        SecretCommand::Get { name, out, min_sequence, version } => {
            get(client, output, name, out, min_sequence, version).await
        }
        SecretCommand::Versions { name } => versions(client, output, &name).await,
        SecretCommand::List { min_sequence, all } => list(client, output, min_sequence, all).await,
        SecretCommand::Show { name } => {
            let description = client.get_metadata(&name).await?;
            let metadata = &description.metadata;
            let labels: Vec<String> = metadata.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let expired = description.expired && description.status == "active";
            let row = vec![
                description.name.clone(),
                if expired { "expired".to_owned() } else { description.status.clone() },
                description.version.to_string(),
                description.revision.to_string(),
                description.expires_at.clone().unwrap_or_default(),
                metadata.owner_group.clone().unwrap_or_default(),
                metadata.file_name.clone().unwrap_or_else(|| "(derived)".to_owned()),
                metadata.mode.clone().unwrap_or_default(),
                labels.join(","),
            ];
            let header = ["NAME", "STATUS", "VERSION", "REVISION", "EXPIRES", "OWNER", "FILE", "MODE", "LABELS"];
            print_rows(output, &description, &header, &[row]);
            Ok(())
        }
        SecretCommand::SetMetadata(args) => set_metadata(client, output, args).await,
        SecretCommand::Delete { name, conditions } => {
            let written = client.secret_command(Method::DELETE, &name, "", None, &conditions.conditions()).await?;
            print_written(output, &written);
            Ok(())
        }
        SecretCommand::Restore { name, conditions } => {
            let written = client.secret_command(Method::POST, &name, "restore", None, &conditions.conditions()).await?;
            print_written(output, &written);
            Ok(())
        }
        SecretCommand::Rollback { name, to, conditions } => {
            let body = serde_json::json!({ "version": to });
            let written =
                client.secret_command(Method::POST, &name, "rollback", Some(&body), &conditions.conditions()).await?;
            print_written(output, &written);
            Ok(())
        }
        SecretCommand::Destroy { name, version, yes, conditions } => {
            if !yes {
                return Err(Failure {
                    status: 2,
                    message: format!(
                        "destroying makes the content of {name:?} unrecoverable, for every operator too; \
                         add --yes to confirm"
                    ),
                });
            }
            let action = match version {
                Some(version) => format!("versions/{version}/destroy"),
                None => "destroy".to_owned(),
            };
            let written = client.secret_command(Method::POST, &name, &action, None, &conditions.conditions()).await?;
            print_written(output, &written);
            Ok(())
        }
        SecretCommand::Expiring { within } => {
            let list = client.expiring(within).await?;
            let rows: Vec<Vec<String>> = list
                .secrets
                .iter()
                .map(|s| vec![s.name.clone(), s.version.to_string(), s.expires_at.clone()])
                .collect();
            print_rows(output, &list, &["NAME", "VERSION", "EXPIRES"], &rows);
            Ok(())
        }
    }
}

async fn put(client: &ApiClient, output: Output, args: PutArgs) -> Result<(), Failure> {
    let content = read_content(args.file.as_ref())?;
    let expires_at = match (args.expires_at, args.expires_in) {
        (Some(at), _) => Some(at),
        (None, Some(seconds)) => Some(time_after(seconds)?),
        (None, None) => None,
    };
    let options = PutOptions {
        mode: args.mode,
        owner_group: args.owner_group,
        description: args.description,
        file_name: args.file_name,
        file_owner: args.file_owner,
        file_group: args.file_group,
        expires_at,
        conditions: Conditions {
            if_revision: args.if_revision,
            if_absent: args.if_absent,
            idempotency_key: args.idempotency_key,
        },
    };
    let written = client.put_secret(&args.name, content, &options).await?;
    if written.replayed {
        eprintln!("note: a request with this idempotency key was already applied; this is its outcome");
    }
    print_written(output, &written);
    Ok(())
}

async fn get(
    client: &ApiClient,
    output: Output,
    name: String,
    out: Option<PathBuf>,
    min_sequence: Option<u64>,
    version: Option<u64>,
) -> Result<(), Failure> {
    let secret = match version {
        Some(version) => client.get_version(&name, version).await?,
        None => client.get_secret(&name, min_sequence).await?,
    };
    match (out, output) {
        (Some(path), _) => write_private(&path, &secret.content)?,
        (None, Output::Json) => {
            let json = serde_json::json!({
                "name": name,
                "version": secret.version,
                "revision": secret.revision,
                "sequence": secret.sequence,
                "mode": secret.mode.map(|m| format!("{m:04o}")),
                "content_base64": base64::engine::general_purpose::STANDARD.encode(&*secret.content),
            });
            print_line(&json.to_string());
        }
        (None, Output::Table) => print_out(&secret.content)?,
    }
    Ok(())
}

async fn versions(client: &ApiClient, output: Output, name: &str) -> Result<(), Failure> {
    let list = client.list_versions(name).await?;
    let rows: Vec<Vec<String>> = list
        .versions
        .iter()
        .map(|v| {
            let mut notes = Vec::new();
            if let Some(from) = v.rolled_back_from {
                notes.push(format!("rollback of {from}"));
            }
            if let Some(at) = &v.expires_at {
                notes.push(format!("expires {at}"));
            }
            for (flag, note) in [(v.expired, "expired"), (v.destroyed, "destroyed")] {
                if flag {
                    notes.push(note.to_owned());
                }
            }
            let digest = v.digest.as_deref().map_or(String::new(), |d| d.chars().take(16).collect());
            vec![
                v.version.to_string(),
                v.size.to_string(),
                v.created_at.clone(),
                v.created_by.clone(),
                digest,
                notes.join(", "),
            ]
        })
        .collect();
    print_rows(output, &list, &["VERSION", "SIZE", "CREATED", "BY", "DIGEST", "NOTES"], &rows);
    Ok(())
}

async fn list(client: &ApiClient, output: Output, min_sequence: Option<u64>, all: bool) -> Result<(), Failure> {
    let list = client.list_secrets_with(min_sequence, all).await?;
    let rows: Vec<Vec<String>> = list.secrets.iter().map(summary_row).collect();
    print_rows(output, &list, &["NAME", "STATUS", "VERSION", "REVISION", "SIZE", "UPDATED", "BY"], &rows);
    Ok(())
}

fn summary_row(secret: &SecretSummary) -> Vec<String> {
    let status = if secret.expired && secret.status == "active" { "expired".to_owned() } else { secret.status.clone() };
    vec![
        secret.name.clone(),
        status,
        secret.version.to_string(),
        secret.revision.to_string(),
        secret.size.to_string(),
        secret.updated_at.clone(),
        secret.updated_by.clone(),
    ]
}

/// Reads the current metadata, changes the given fields, and writes it back on
/// the condition that nothing changed meanwhile.
async fn set_metadata(client: &ApiClient, output: Output, args: SetMetadataArgs) -> Result<(), Failure> {
    let current = client.get_metadata(&args.name).await?;
    let mut metadata: MetadataJson = current.metadata;
    if let Some(group) = args.owner_group {
        metadata.owner_group = Some(group);
    }
    if args.no_owner_group {
        metadata.owner_group = None;
    }
    if let Some(description) = args.description {
        metadata.description = description;
    }
    metadata.labels.extend(parse_labels(&args.labels)?);
    for key in &args.remove_labels {
        metadata.labels.remove(key);
    }
    for (clear, field) in [
        (args.default_file_name, &mut metadata.file_name),
        (args.no_file_owner, &mut metadata.file_owner),
        (args.no_file_group, &mut metadata.file_group),
        (args.default_mode, &mut metadata.mode),
    ] {
        if clear {
            *field = None;
        }
    }
    for (field, value) in [
        (&mut metadata.file_name, args.file_name),
        (&mut metadata.file_owner, args.file_owner),
        (&mut metadata.file_group, args.file_group),
        (&mut metadata.mode, args.mode),
    ] {
        if value.is_some() {
            *field = value;
        }
    }
    let conditions =
        Conditions { if_revision: Some(current.revision), if_absent: false, idempotency_key: args.idempotency_key };
    let written = client.put_metadata(&args.name, &metadata, &conditions).await?;
    print_written(output, &written);
    Ok(())
}

fn print_written(output: Output, written: &WriteResponse) {
    print_rows(
        output,
        written,
        &["NAME", "EVENT", "VERSION", "REVISION", "SEQUENCE"],
        &[vec![
            written.name.clone(),
            written.kind.clone(),
            written.version.to_string(),
            written.revision.to_string(),
            written.sequence.to_string(),
        ]],
    );
}

pub(super) fn read_content(file: Option<&PathBuf>) -> Result<Vec<u8>, Failure> {
    match file {
        Some(path) => std::fs::read(path)
            .map_err(|e| Failure { status: 1, message: format!("cannot read {}: {e}", path.display()) }),
        None => {
            let mut content = Vec::new();
            std::io::stdin()
                .read_to_end(&mut content)
                .map_err(|e| Failure { status: 1, message: format!("cannot read standard input: {e}") })?;
            Ok(content)
        }
    }
}

/// Parses a duration such as `90s`, `30m`, `12h` or `7d` into seconds.
pub(super) fn parse_duration(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid duration {text:?}: use a number followed by s, m, h or d, such as 7d");
    let split = text.len().checked_sub(1).filter(|&at| text.is_char_boundary(at)).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number.checked_mul(scale).filter(|&seconds| seconds > 0).ok_or_else(invalid)
}

/// Maximum lifetime `--expires-in` accepts: 100 years, in seconds.
const MAX_EXPIRES_IN_SECS: u64 = 100 * 365 * 86_400;

/// Returns the RFC 3339 time `seconds` from now.
fn time_after(seconds: u64) -> Result<String, Failure> {
    let too_long = || Failure {
        status: 2,
        message: format!("--expires-in of {seconds} s is too long; give at most {} days", MAX_EXPIRES_IN_SECS / 86_400),
    };
    if seconds > MAX_EXPIRES_IN_SECS {
        return Err(too_long());
    }
    let lifetime = time::Duration::seconds(i64::try_from(seconds).map_err(|_| too_long())?);
    let at = time::OffsetDateTime::now_utc().checked_add(lifetime).ok_or_else(too_long)?;
    at.format(&time::format_description::well_known::Rfc3339).map_err(|_| too_long())
}

/// Parses `KEY=VALUE` labels into a map.
pub(super) fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut parsed = BTreeMap::new();
    for label in labels {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| Failure { status: 2, message: format!("label {label:?} must be KEY=VALUE") })?;
        parsed.insert(key.to_owned(), value.to_owned());
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        for bad in ["", "7", "d", "0d", "-1d", "7w", "1.5h", "é"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn huge_lifetime_is_an_error() {
        let error = time_after(parse_duration("99999999d").unwrap()).unwrap_err();
        assert_eq!(error.status, 2);
        assert!(error.message.contains("at most 36500 days"), "{}", error.message);
        assert!(time_after(parse_duration("3650d").unwrap()).is_ok());
    }

    #[test]
    fn labels_need_an_equals_sign() {
        let parsed = parse_labels(&["team=payments".to_owned(), "tier=a=b".to_owned()]).unwrap();
        assert_eq!(parsed["tier"], "a=b");
        assert!(parse_labels(&["bare".to_owned()]).is_err());
    }
}
