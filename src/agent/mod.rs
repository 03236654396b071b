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
use files::SecretDir;

/// Maximum pause between retries while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Revisions the agent has written, by secret name.
type Held = BTreeMap<String, u64>;

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let mut client = ApiClient::new(&config.server, &config.ca, &config.cert, &config.key)?;
    let dir = SecretDir::open(&config.secrets_dir)?;
    let default_mode = parse_mode(&config.default_mode).map_err(anyhow::Error::msg)?;
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
            Ok(list) => match sync(&client, &dir, default_mode, &list, &mut held).await {
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

/// Brings the directory in step with `list`.
pub async fn sync(
    client: &ApiClient,
    dir: &SecretDir,
    default_mode: u32,
    list: &SecretList,
    held: &mut Held,
) -> Result<(), SyncError> {
    let mut keep = BTreeSet::new();
    for secret in &list.secrets {
        let Ok(file) = file_name(&secret.name) else {
            tracing::warn!(secret.name = %secret.name, "skipping a secret whose name has no valid file name");
            continue;
        };
        keep.insert(file.clone());
        if held.get(&secret.name) == Some(&secret.revision) && dir.path().join(&file).exists() {
            continue;
        }
        if fetch_and_write(client, dir, default_mode, secret, &file, list.sequence).await? {
            held.insert(secret.name.clone(), secret.revision);
        } else {
            keep.remove(&file);
        }
    }

    for removed in dir.remove_others(&keep).map_err(SyncError::Io)? {
        tracing::info!(file = %removed, "removed the file of a secret no longer granted");
    }
    held.retain(|name, _| list.secrets.iter().any(|s| &s.name == name));
    Ok(())
}

/// Fetches one secret and writes its file; returns false if the secret vanished meanwhile.
async fn fetch_and_write(
    client: &ApiClient,
    dir: &SecretDir,
    default_mode: u32,
    secret: &SecretSummary,
    file: &str,
    sequence: u64,
) -> Result<bool, SyncError> {
    let fetched = match client.get_secret(&secret.name, Some(sequence)).await {
        Ok(fetched) => fetched,
        Err(ClientError::Api { status: 404 | 410, .. }) => return Ok(false),
        Err(error) => return Err(SyncError::Fetch { name: secret.name.clone(), source: error }),
    };
    let mode = fetched.mode.unwrap_or(default_mode);
    dir.write(file, &fetched.content, mode).map_err(SyncError::Io)?;
    tracing::info!(secret.name = %secret.name, secret.version = fetched.version, file = %file, "wrote secret file");
    Ok(true)
}

/// A sync step that failed; the agent keeps its files and retries.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("fetching secret {name:?}: {source}")]
    Fetch { name: String, source: ClientError },
    #[error("writing the secrets directory: {0}")]
    Io(std::io::Error),
}
