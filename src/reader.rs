//! The read side: reads from the region's read model and decrypts on demand.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use watchword_events::body::{content_aad, data_key_aad};
use watchword_events::error::ViewError;
use watchword_events::fold::{SecretState, SecretVersion};
use watchword_events::readmodel::ReadModel;
use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmError};
use crate::projector::Progress;
use crate::seal;
use crate::stream::{EventStore, StreamError};

/// Maximum wait for the read model to reach a requested sequence.
pub const MAX_SEQUENCE_WAIT: Duration = Duration::from_secs(10);

/// Reason a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read model: {0}")]
    ReadModel(#[from] ViewError),
    #[error("read model has not reached stream sequence {wanted} (it is at {applied}); retry later")]
    NotYetProjected { wanted: u64, applied: u64 },
    #[error("projection stopped at stream sequence {applied}: {reason}")]
    ProjectionStopped { applied: u64, reason: String },
    #[error("the wrapped data key of {name:?} version {version} is gone: the version was destroyed")]
    DataKeyErased { name: String, version: u64 },
    #[error("the wrapped data key of {name:?} version {version} does not match the hash its event commits to")]
    DataKeyMismatch { name: String, version: u64 },
    #[error("HSM: {0}")]
    Hsm(#[from] HsmError),
    #[error("data-key store: {0}")]
    Stream(#[from] StreamError),
    #[error("content of {name:?} version {version} failed authentication")]
    Content { name: String, version: u64 },
    #[error("read task failed: {0}")]
    Task(String),
}

/// Reads secrets from the read model.
#[derive(Debug, Clone)]
pub struct Reader {
    model: Arc<ReadModel>,
    store: EventStore,
    hsm: Hsm,
    progress: watch::Receiver<Progress>,
}

impl Reader {
    pub fn new(model: Arc<ReadModel>, store: EventStore, hsm: Hsm, progress: watch::Receiver<Progress>) -> Reader {
        Reader { model, store, hsm, progress }
    }

    /// Returns the current projection progress.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until the read model has applied `sequence` (read-your-writes).
    pub async fn wait_for(&self, sequence: u64, limit: Duration) -> Result<u64, ReadError> {
        let mut progress = self.progress.clone();
        let reached = tokio::time::timeout(
            limit,
            progress.wait_for(|p| p.applied() >= sequence || matches!(p, Progress::Stopped { .. })),
        );
        match reached.await {
            Ok(Ok(current)) => match &*current {
                Progress::Stopped { applied, reason } if *applied < sequence => {
                    Err(ReadError::ProjectionStopped { applied: *applied, reason: reason.clone() })
                }
                other => Ok(other.applied()),
            },
            Ok(Err(_)) | Err(_) => {
                Err(ReadError::NotYetProjected { wanted: sequence, applied: self.progress().applied() })
            }
        }
    }

    /// Waits until the read model moves past `after`, or `limit` passes; returns the applied sequence.
    pub async fn wait_past(&self, after: u64, limit: Duration) -> u64 {
        let mut progress = self.progress.clone();
        let _ = tokio::time::timeout(limit, progress.wait_for(|p| p.applied() > after)).await;
        self.progress().applied()
    }

    /// Returns a secret's metadata and the stream sequence the read model reflects.
    pub async fn metadata(&self, name: &str) -> Result<(Option<SecretState>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        let name = name.to_owned();
        blocking(move || model.secret(&name)).await
    }

    /// Returns every secret's metadata and the stream sequence the read model reflects.
    pub async fn list(&self) -> Result<(Vec<SecretState>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        blocking(move || model.secrets()).await
    }

    /// Returns which of `names` the client may read under the read model's grants,
    /// all read in one read transaction.
    pub async fn granted(&self, client: &str, names: Vec<String>) -> Result<Vec<bool>, ReadError> {
        let model = Arc::clone(&self.model);
        let client = client.to_owned();
        blocking(move || {
            model
                .read(|view| names.iter().map(|name| watchword_events::fold::may_read(view, &client, name)).collect())
                .map(|(granted, _)| granted)
        })
        .await
    }

    /// Returns the secrets a client may read through its groups' grants, by name,
    /// all read in one read transaction. It visits only the grants of the client's
    /// groups, so an agent's watch does not scan every secret.
    pub async fn granted_secrets(&self, client: &str) -> Result<(Vec<SecretState>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        let client = client.to_owned();
        blocking(move || {
            model.read(|view| {
                let mut candidates = std::collections::BTreeSet::new();
                for group in view.client_groups(&client)? {
                    candidates.extend(view.group_grants(&group)?);
                }
                // The candidates are checked with the one read rule that every path uses.
                let mut granted = Vec::new();
                for name in candidates {
                    if watchword_events::fold::may_read(view, &client, &name)?
                        && let Some(secret) = view.secret(&name)?
                    {
                        granted.push(secret);
                    }
                }
                Ok(granted)
            })
        })
        .await
    }

    /// Returns the groups a client is a member of, ordered by name.
    pub async fn client_groups(&self, client: &str) -> Result<Vec<String>, ReadError> {
        let model = Arc::clone(&self.model);
        let client = client.to_owned();
        blocking(move || model.read(|view| view.client_groups(&client)).map(|(groups, _)| groups)).await
    }

    /// Returns every client and every group, with the sequence the read model reflects.
    pub async fn directory(
        &self,
    ) -> Result<(Vec<watchword_events::fold::ClientState>, Vec<watchword_events::fold::GroupState>, u64), ReadError>
    {
        let model = Arc::clone(&self.model);
        blocking(move || {
            let (clients, sequence) = model.clients()?;
            let (groups, _) = model.groups()?;
            Ok((clients, groups, sequence))
        })
        .await
    }

    /// Returns an operator's recorded roles and tokens.
    pub async fn operator(&self, identity: &str) -> Result<Option<watchword_events::fold::OperatorState>, ReadError> {
        let model = Arc::clone(&self.model);
        let identity = identity.to_owned();
        blocking(move || model.read(|view| view.operator(&identity)).map(|(state, _)| state)).await
    }

    /// Returns every operator with recorded roles or tokens.
    pub async fn operators(&self) -> Result<(Vec<watchword_events::fold::OperatorState>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        blocking(move || model.operators()).await
    }

    /// Returns the owner group of a client and of a group, when they exist.
    pub async fn owners(
        &self,
        client: Option<&str>,
        group: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), ReadError> {
        let model = Arc::clone(&self.model);
        let (client, group) = (client.map(str::to_owned), group.map(str::to_owned));
        blocking(move || {
            model
                .read(|view| {
                    let client_owner = match &client {
                        Some(name) => view.client(name)?.and_then(|c| c.owner_group),
                        None => None,
                    };
                    let group_owner = match &group {
                        Some(name) => view.group(name)?.and_then(|g| g.owner_group),
                        None => None,
                    };
                    Ok((client_owner, group_owner))
                })
                .map(|(owners, _)| owners)
        })
        .await
    }

    /// Returns a group's members and the secrets it may read.
    pub async fn group_detail(&self, group: &str) -> Result<Option<(Vec<String>, Vec<String>)>, ReadError> {
        let model = Arc::clone(&self.model);
        let group = group.to_owned();
        blocking(move || {
            model
                .read(|view| {
                    if view.group(&group)?.is_none() {
                        return Ok(None);
                    }
                    Ok(Some((view.group_members(&group)?, view.group_grants(&group)?)))
                })
                .map(|(detail, _)| detail)
        })
        .await
    }

    /// Decrypts the current version of a secret. Call only after authorizing the read.
    pub async fn content(&self, state: &SecretState) -> Result<Zeroizing<Vec<u8>>, ReadError> {
        self.version_content(&state.name, &state.current).await
    }

    /// Decrypts one version of a secret. Call only after authorizing the read.
    ///
    /// `version` may come without its ciphertext (from the secret record or
    /// [`Reader::versions`]), so the ciphertext is read from the version record.
    pub async fn version_content(&self, name: &str, version: &SecretVersion) -> Result<Zeroizing<Vec<u8>>, ReadError> {
        let erased = || ReadError::DataKeyErased { name: name.to_owned(), version: version.version };
        let record = self.version(name, version.version).await?.ok_or_else(erased)?;
        let wrapped = self.store.data_key(&record.data_key.store_key).await?.ok_or_else(erased)?;
        if <[u8; 32]>::from(Sha256::digest(&wrapped)) != record.data_key.wrapped_sha256 {
            return Err(ReadError::DataKeyMismatch { name: name.to_owned(), version: record.version });
        }

        let data_key = self.hsm.decrypt_data_key(&wrapped, &data_key_aad(name, record.revision)).await?;
        seal::open(&data_key, &record.content, &content_aad(name, record.revision))
            .map_err(|_| ReadError::Content { name: name.to_owned(), version: record.version })
    }

    /// Returns the secret that claims `file_name`, if one does.
    pub async fn file_name_owner(&self, file_name: &str) -> Result<Option<String>, ReadError> {
        let model = Arc::clone(&self.model);
        let file_name = file_name.to_owned();
        blocking(move || model.read(|view| view.file_name_owner(&file_name)).map(|(owner, _)| owner)).await
    }

    /// Returns the secrets whose current version expires before `before_micros` and
    /// has no expiry event yet, soonest first.
    pub async fn expiring(&self, before_micros: i64) -> Result<(Vec<(i64, String)>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        blocking(move || model.expiring(before_micros)).await
    }

    /// Returns every version of a secret, oldest first and without ciphertexts, with
    /// the sequence the read model reflects. [`Reader::version`] returns one with it.
    pub async fn versions(&self, name: &str) -> Result<(Vec<SecretVersion>, u64), ReadError> {
        let model = Arc::clone(&self.model);
        let name = name.to_owned();
        blocking(move || model.version_summaries(&name)).await
    }

    /// Returns one version of a secret with its ciphertext.
    pub async fn version(&self, name: &str, number: u64) -> Result<Option<SecretVersion>, ReadError> {
        let model = Arc::clone(&self.model);
        let name = name.to_owned();
        blocking(move || model.read(|view| view.secret_version(&name, number)).map(|(v, _)| v)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ViewError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ReadError::Task(e.to_string()))?.map_err(ReadError::from)
}
