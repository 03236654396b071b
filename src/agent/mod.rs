//! `watchword-agent`: keeps a directory of files in step with the secrets this
//! compute may read.
//!
//! The agent long-polls the server's watch endpoint; each answer lists every secret
//! the agent may read with its revision. The agent fetches what changed, writes it
//! atomically, and removes files of secrets it may no longer read. While the server
//! is unreachable the files stay as they are, and the agent retries with back-off.

pub mod enrolment;
pub mod files;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use watchword_events::names::file_name;

use crate::client::{ApiClient, ClientError, SecretList, SecretSummary};
use crate::config::{AgentConfig, parse_mode};
use files::{Ownership, SecretDir};

/// Maximum pause between retries while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Revision and file name the agent has written, by secret name.
type Held = BTreeMap<String, (u64, String)>;

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let mut client = ApiClient::new(&config.server, &config.ca, &config.cert, &config.key)?;
    let dir = SecretDir::open(&config.secrets_dir)?;
    let settings = Settings {
        default_mode: parse_mode(&config.default_mode).map_err(anyhow::Error::msg)?,
        keep_expired: config.keep_expired,
    };
    let wait = Duration::from_secs(config.watch_timeout_secs);
    tracing::info!(server = %client.server(), secrets_dir = %dir.path().display(), "watchword agent started");

    let shutdown = crate::server::shutdown_signal();
    tokio::pin!(shutdown);
    let mut held = Held::new();
    let mut after = 0;
    let mut backoff = Duration::from_millis(250);
    loop {
        match enrolment::renew_if_due(&client, &config.cert, &config.key).await {
            Ok(true) => client = ApiClient::new(&config.server, &config.ca, &config.cert, &config.key)?,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "certificate renewal failed; retrying later"),
        }
        let step = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            step = client.watch(after, wait) => step,
        };
        match step {
            Ok(list) => match sync(&client, &dir, settings, &list, &mut held).await {
                Ok(()) => {
                    after = list.sequence;
                    backoff = Duration::from_millis(250);
                    continue;
                }
                Err(error) => tracing::warn!(%error, "sync failed; keeping current files and retrying"),
            },
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "watch failed; keeping current files")
            }
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// File-writing settings of the agent, from its configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Mode of a file whose secret sets none.
    pub default_mode: u32,
    /// Keep the file of a secret whose current version expired.
    pub keep_expired: bool,
}

/// Brings the directory in step with `list`.
///
/// A secret that computes may not receive now (its current version expired or was
/// destroyed) loses its file, unless it expired and `keep_expired` is set. Two
/// secrets that name the same file are both left unwritten, because neither can be
/// trusted to be the one the service expects.
pub async fn sync(
    client: &ApiClient,
    dir: &SecretDir,
    settings: Settings,
    list: &SecretList,
    held: &mut Held,
) -> Result<(), SyncError> {
    let targets = targets(&list.secrets);
    let mut keep = BTreeSet::new();
    for (secret, file) in &targets {
        if !secret.servable {
            if secret.expired && settings.keep_expired && dir.path().join(file).exists() {
                keep.insert(file.clone());
            }
            continue;
        }
        keep.insert(file.clone());
        let current = (secret.revision, file.clone());
        if held.get(&secret.name) == Some(&current) && dir.path().join(file).exists() {
            continue;
        }
        match fetch_and_write(client, dir, settings, secret, file, list.sequence).await? {
            Written::Yes => {
                held.insert(secret.name.clone(), current);
            }
            Written::Gone => {
                keep.remove(file);
            }
            Written::Failed => {}
        }
    }

    for removed in dir.remove_others(&keep).map_err(SyncError::Io)? {
        tracing::info!(file = %removed, "removed the file of a secret no longer granted, deleted, destroyed or expired");
    }
    held.retain(|name, _| list.secrets.iter().any(|s| &s.name == name));
    Ok(())
}

/// Returns each secret with the file it goes to, leaving out secrets without a
/// valid file name and every secret whose file name another secret also uses.
fn targets(secrets: &[SecretSummary]) -> Vec<(&SecretSummary, String)> {
    let mut by_file: BTreeMap<String, Vec<&SecretSummary>> = BTreeMap::new();
    for secret in secrets {
        let file = match &secret.file_name {
            Some(file) => file.clone(),
            None => match file_name(&secret.name) {
                Ok(file) => file,
                Err(_) => {
                    tracing::warn!(secret.name = %secret.name, "skipping a secret whose name has no valid file name");
                    continue;
                }
            },
        };
        if let Err(error) = crate::secrets::metadata::check_file_name(&file) {
            tracing::error!(secret.name = %secret.name, %error, "skipping a secret with an unsafe file name");
            continue;
        }
        by_file.entry(file).or_default().push(secret);
    }
    let mut targets = Vec::new();
    for (file, claimants) in by_file {
        if let [secret] = claimants[..] {
            targets.push((secret, file));
        } else {
            let names: Vec<&str> = claimants.iter().map(|s| s.name.as_str()).collect();
            tracing::error!(file = %file, secrets = ?names, "several secrets use one file name; writing none of them");
        }
    }
    targets
}

/// The outcome of writing one secret's file.
enum Written {
    Yes,
    /// The secret vanished or stopped being servable meanwhile.
    Gone,
    /// The file could not be written with the metadata's owner or group, so the old file stays.
    Failed,
}

/// Fetches one secret and writes its file.
async fn fetch_and_write(
    client: &ApiClient,
    dir: &SecretDir,
    settings: Settings,
    secret: &SecretSummary,
    file: &str,
    sequence: u64,
) -> Result<Written, SyncError> {
    let ownership = match Ownership::resolve(secret.file_owner.as_deref(), secret.file_group.as_deref()) {
        Ok(ownership) => ownership,
        Err(error) => {
            tracing::error!(secret.name = %secret.name, file = %file, %error, "cannot resolve the file's owner or group; the secret is not written, and its old file, if any, is kept");
            return Ok(Written::Failed);
        }
    };
    let fetched = match client.get_secret(&secret.name, Some(sequence)).await {
        Ok(fetched) => fetched,
        Err(ClientError::Api { status: 404 | 410, .. }) => return Ok(Written::Gone),
        Err(error) => return Err(SyncError::Fetch { name: secret.name.clone(), source: error }),
    };
    let mode = fetched.mode.unwrap_or(settings.default_mode);
    match dir.write(file, &fetched.content, mode, ownership) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::error!(secret.name = %secret.name, file = %file, %error, "cannot give the file its owner or group (the agent must run as root to do so); the secret is not written, and its old file, if any, is kept");
            return Ok(Written::Failed);
        }
        Err(error) => return Err(SyncError::Io(error)),
    }
    tracing::info!(secret.name = %secret.name, secret.version = fetched.version, file = %file, "wrote secret file");
    Ok(Written::Yes)
}

/// A sync step that failed; the agent keeps its files and retries.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("fetching secret {name:?}: {source}")]
    Fetch { name: String, source: ClientError },
    #[error("writing the secrets directory: {0}")]
    Io(std::io::Error),
}
