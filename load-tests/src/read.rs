//! The `read` scenario: authorized reads of secrets written beforehand.
//!
//! Targets, measured side by side in every run:
//!
//! - `watchword`: `GET /v1/secrets/{name}` over kept-alive mTLS connections.
//! - `read-model`: the same records read from a copy of the server's redb read
//!   model, opened in this process with `watchword_events::readmodel::ReadModel`:
//!   the access check and the secret's state, as two read transactions like the
//!   server's read path, on `--raw-threads` threads. The copy avoids the lock that
//!   the server holds on its file.
//! - `read-model+data-key`: the same two read transactions on tokio's blocking
//!   pool, followed by the direct get of the version's wrapped data key from
//!   JetStream, with as many reads in flight as readers. This is the server's read
//!   path without HTTPS, the HSM decrypt and AES-GCM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use serde_json::json;
use watchword::client::PutOptions;
use watchword_events::fold::{SecretState, may_read};
use watchword_events::readmodel::ReadModel;

use crate::clients::Clients;
use crate::measure::{Stats, closed_loop, new_histogram, record_since, stats};
use crate::procstat::{Monitor, Watched};
use crate::report::{Comparison, PRODUCT};

const READ_MODEL: &str = "read-model";
const READ_MODEL_AND_DATA_KEY: &str = "read-model+data-key";

/// Stream and subject prefix of wrapped data keys: the server's defaults
/// (`nats.data_key_stream`, and the prefix in `src/stream.rs`).
const DATA_KEY_STREAM: &str = "WATCHWORD_DATA_KEYS";
const DATA_KEY_PREFIX: &str = "watchword.dk";

/// Parameters of a read measurement.
#[derive(Debug, Clone)]
pub struct ReadLoad {
    pub readers: usize,
    pub count: usize,
    pub secrets: usize,
    pub size: usize,
    pub runs: usize,
    /// Whether the run writes the secrets first. Off reuses those of an earlier
    /// run with the same `secrets` and `size`.
    pub populate: bool,
    pub populate_writers: usize,
}

/// Sources of the read baselines.
#[derive(Debug, Clone)]
pub struct Baselines {
    /// The server's read-model file, copied before the runs.
    pub read_model: Option<PathBuf>,
    pub cache_mib: usize,
    pub threads: usize,
    /// Client identity whose access the baselines check, as the server checks the caller's.
    pub client_id: String,
    pub nats: Option<String>,
}

/// Runs the read scenario.
pub async fn run(clients: &Clients, load: &ReadLoad, baselines: &Baselines, watched: &Watched) -> anyhow::Result<()> {
    clients.warm_up().await?;
    let names = Arc::new(secret_names(load.secrets, load.size));
    if load.populate {
        populate(clients, &names, load).await?;
    }
    let copy = match &baselines.read_model {
        Some(path) => Some(ReadModelCopy::new(path, baselines.cache_mib)?),
        None => None,
    };
    let data_keys = match &baselines.nats {
        Some(url) => Some(data_key_stream(url).await?),
        None => None,
    };

    let parameters = json!({
        "concurrency": load.readers, "size": load.size, "count": load.count, "secrets": load.secrets,
        "raw_threads": baselines.threads, "connections": clients.connections(),
    });
    let mut comparison = Comparison::new("read", parameters);
    for run in 0..load.runs {
        let mut targets = vec![PRODUCT];
        if copy.is_some() {
            targets.push(READ_MODEL);
            if data_keys.is_some() {
                targets.push(READ_MODEL_AND_DATA_KEY);
            }
        }
        if run % 2 == 1 {
            targets.reverse();
        }
        for target in targets {
            let monitor = Monitor::start(watched);
            let stats = match (target, &copy, &data_keys) {
                (READ_MODEL, Some(copy), _) => {
                    read_model_loop(Arc::clone(&copy.model), &names, baselines, load.count).await?
                }
                (READ_MODEL_AND_DATA_KEY, Some(copy), Some(data_keys)) => {
                    read_model_and_data_key(Arc::clone(&copy.model), data_keys, &names, baselines, load).await?
                }
                _ => read_secrets(clients, &names, load).await?,
            };
            let usage = monitor.finish().await;
            comparison.record(target, run, &stats, &usage, json!({}));
        }
    }
    comparison.summarize();
    Ok(())
}

fn secret_names(secrets: usize, size: usize) -> Vec<String> {
    (0..secrets).map(|s| format!("load/read/{size}/{s}")).collect()
}

/// Writes one version of every secret and waits until the read model has them all.
async fn populate(clients: &Clients, names: &Arc<Vec<String>>, load: &ReadLoad) -> anyhow::Result<()> {
    let last_sequence = Arc::new(AtomicU64::new(0));
    let (task_clients, task_names, task_last) = (clients.clone(), Arc::clone(names), Arc::clone(&last_sequence));
    let content = vec![0x5a; load.size];
    let started = Instant::now();
    closed_loop(load.populate_writers, names.len(), move |writer, index| {
        let (client, name) = (task_clients.for_worker(writer).clone(), task_names[index].clone());
        let (content, last) = (content.clone(), Arc::clone(&task_last));
        async move {
            let written = client.put_secret(&name, content, &PutOptions::default()).await?;
            last.fetch_max(written.sequence, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
    .context("writing the secrets to read failed")?;

    let last = last_sequence.load(Ordering::Relaxed);
    clients
        .for_worker(0)
        .get_secret(&names[0], Some(last))
        .await
        .context("the read model did not reach the last written sequence")?;
    eprintln!("wrote {} secrets of {} bytes in {:.1} s", names.len(), load.size, started.elapsed().as_secs_f64());
    Ok(())
}

async fn read_secrets(clients: &Clients, names: &Arc<Vec<String>>, load: &ReadLoad) -> anyhow::Result<Stats> {
    let (clients, names) = (clients.clone(), Arc::clone(names));
    closed_loop(load.readers, load.count, move |reader, index| {
        let (client, name) = (clients.for_worker(reader).clone(), names[index % names.len()].clone());
        async move {
            let secret = client.get_secret(&name, None).await?;
            std::hint::black_box(secret.content.len());
            Ok(())
        }
    })
    .await
}

/// A copy of the server's read model in the system's temporary directory,
/// deleted on drop.
struct ReadModelCopy {
    path: PathBuf,
    model: Arc<ReadModel>,
}

impl ReadModelCopy {
    /// Copies the server's file while the server may still be writing to it (its
    /// checkpoint and change-notice tasks commit after the last write), so a copy
    /// can be torn; such a copy fails to open and is taken again.
    fn new(original: &Path, cache_mib: usize) -> anyhow::Result<ReadModelCopy> {
        const ATTEMPTS: usize = 20;
        let path = std::env::temp_dir().join(format!("watchword-load-{}.redb", std::process::id()));
        for attempt in 1..=ATTEMPTS {
            std::fs::copy(original, &path)
                .with_context(|| format!("cannot copy {} to {}", original.display(), path.display()))?;
            match ReadModel::open(&path, cache_mib * 1024 * 1024) {
                Ok(model) => return Ok(ReadModelCopy { path, model: Arc::new(model) }),
                Err(error) if attempt < ATTEMPTS => {
                    eprintln!("note: the read-model copy is torn ({error}); copying again");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(error) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(error).with_context(|| {
                        format!("cannot open the read-model copy {} after {ATTEMPTS} copies", path.display())
                    });
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

impl Drop for ReadModelCopy {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            eprintln!("warning: cannot remove the read-model copy {}: {error}", self.path.display());
        }
    }
}

/// Reads what the server's read path reads from redb for one request: the
/// access check, then the secret's state.
fn read_record(model: &ReadModel, client_id: &str, name: &str) -> anyhow::Result<SecretState> {
    let (granted, _) = model.read(|view| may_read(view, client_id, name))?;
    std::hint::black_box(granted);
    let (secret, _) = model.secret(name)?;
    let secret = secret.with_context(|| format!("secret {name:?} is missing from the read-model copy"))?;
    // The secret record holds no ciphertext; the server reads the version record too.
    let (version, _) = model.read(|view| view.secret_version(name, secret.current.version))?;
    std::hint::black_box(version);
    Ok(secret)
}

/// Reads like [`read_record`], with one blocking task per read transaction as
/// the server's read path has.
async fn read_record_blocking(
    model: Arc<ReadModel>,
    client_id: Arc<String>,
    names: Arc<Vec<String>>,
    index: usize,
) -> anyhow::Result<SecretState> {
    let (check_model, check_names) = (Arc::clone(&model), Arc::clone(&names));
    let granted = tokio::task::spawn_blocking(move || {
        check_model.read(|view| may_read(view, &client_id, &check_names[index % check_names.len()]))
    })
    .await
    .context("the read task panicked")??;
    std::hint::black_box(granted);
    let name = names[index % names.len()].clone();
    let (secret, _) =
        tokio::task::spawn_blocking(move || model.secret(&name)).await.context("the read task panicked")??;
    secret.context("a secret is missing from the read-model copy")
}

async fn read_model_loop(
    model: Arc<ReadModel>,
    names: &Arc<Vec<String>>,
    baselines: &Baselines,
    count: usize,
) -> anyhow::Result<Stats> {
    let (names, client_id, threads) = (Arc::clone(names), baselines.client_id.clone(), baselines.threads);
    tokio::task::spawn_blocking(move || read_model_threads(&model, &names, &client_id, threads, count))
        .await
        .context("the read-model task panicked")?
}

fn read_model_threads(
    model: &ReadModel,
    names: &[String],
    client_id: &str,
    threads: usize,
    count: usize,
) -> anyhow::Result<Stats> {
    anyhow::ensure!(threads > 0, "--raw-threads must be at least 1");
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let histograms = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut histogram = new_histogram();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return Ok::<_, anyhow::Error>(histogram);
                        }
                        let began = Instant::now();
                        read_record(model, client_id, &names[index % names.len()])?;
                        record_since(&mut histogram, began);
                    }
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a reader thread panicked")).collect::<Vec<_>>()
    });
    let elapsed = start.elapsed();

    let mut merged = new_histogram();
    for histogram in histograms {
        merged.add(histogram?).expect("histograms with the same bounds add up");
    }
    Ok(stats(&merged, elapsed))
}

async fn data_key_stream(url: &str) -> anyhow::Result<jetstream::stream::Stream> {
    let client = async_nats::connect(url).await.with_context(|| format!("cannot connect to NATS at {url}"))?;
    jetstream::new(client)
        .get_stream(DATA_KEY_STREAM)
        .await
        .with_context(|| format!("cannot open stream {DATA_KEY_STREAM}"))
}

async fn read_model_and_data_key(
    model: Arc<ReadModel>,
    data_keys: &jetstream::stream::Stream,
    names: &Arc<Vec<String>>,
    baselines: &Baselines,
    load: &ReadLoad,
) -> anyhow::Result<Stats> {
    let (names, client_id, data_keys) = (Arc::clone(names), Arc::new(baselines.client_id.clone()), data_keys.clone());
    closed_loop(load.readers, load.count, move |_, index| {
        let (model, names, client_id, data_keys) =
            (Arc::clone(&model), Arc::clone(&names), Arc::clone(&client_id), data_keys.clone());
        async move {
            let secret = read_record_blocking(model, client_id, names, index).await?;
            let subject = format!("{DATA_KEY_PREFIX}.{}", secret.current.data_key.store_key);
            match data_keys.direct_get_last_for_subject(subject).await {
                Ok(message) => std::hint::black_box(message.payload.len()),
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => {
                    anyhow::bail!("the wrapped data key of {:?} is missing", secret.name)
                }
                Err(error) => return Err(error).context("data key direct get failed"),
            };
            Ok(())
        }
    })
    .await
}
