//! `watchword serve`: wires the HSM, the event stream, the projector, the read model
//! and the HTTPS API together, and runs them until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use watchword_events::readmodel::ReadModel;
use watchword_events::verify::RootKeys;

use crate::api::tokens::public_router;
use crate::api::{self, AppState};
use crate::ca::{ClientCa, HsmCaKey};
use crate::changes::ChangeStream;
use crate::checkpoint;
use crate::config::ServerConfig;
use crate::digest::DigestKey;
use crate::hsm::Hsm;
use crate::projector::{self, Progress};
use crate::reader::Reader;
use crate::secrets::Secrets;
use crate::signer::EventSigner;
use crate::stream::EventStore;
use crate::tls;
use crate::writer::Writer;

/// Start-up failure; each variant maps to its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong: the message names it and the fix.
    #[error("{0}")]
    Config(String),
    /// A dependency (HSM, NATS, the read-model file) is not usable now.
    #[error("{0}")]
    Unavailable(String),
}

impl StartError {
    /// Exit status: 78 (EX_CONFIG) for a misconfiguration, 69 (EX_UNAVAILABLE) otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => 78,
            StartError::Unavailable(_) => 69,
        }
    }
}

/// Runs the server. `ready_file`, when given, receives the bound address once the
/// server accepts requests.
pub async fn run(config: ServerConfig, ready_file: Option<&Path>) -> Result<(), StartError> {
    tls::install_crypto_provider();
    let tls_config = tls::server_config(&config.tls.cert, &config.tls.key, &config.tls.client_ca)
        .map_err(|e| StartError::Config(format!("tls: {e}")))?;

    let hsm_config = config.hsm.clone();
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(&hsm_config))
        .await
        .map_err(|e| StartError::Unavailable(format!("HSM start-up task failed: {e}")))?
        .map_err(|e| StartError::Unavailable(format!("HSM: {e}")))?;
    let store = EventStore::connect(&config.nats).await.map_err(|e| StartError::Unavailable(e.to_string()))?;
    let model = open_read_model(&config)?;

    let roots = RootKeys::new(&[hsm.root_public_key()])
        .map_err(|e| StartError::Config(format!("the HSM root public key is not a valid Ed25519 key: {e}")))?;
    let applied = model.last_applied().map_err(|e| StartError::Unavailable(e.to_string()))?;
    let (progress_sender, progress) = watch::channel(Progress::Applied(applied));
    tokio::spawn(projector::run(Arc::clone(&model), store.clone(), roots, config.projector.clone(), progress_sender));

    let startup_id = uuid::Uuid::now_v7().to_string();
    let signer = EventSigner::certify(&hsm, &store, &startup_id)
        .await
        .map_err(|e| StartError::Unavailable(format!("certifying the event signing key: {e}")))?;
    tracing::info!(signing_key.id = signer.key_id(), "event signing key certified by the HSM root key");

    let digest = DigestKey::load_or_create(&store, &hsm)
        .await
        .map_err(|e| StartError::Unavailable(format!("loading the content digest key: {e}")))?;
    let ca = load_ca(&config, &hsm)?;
    let root_public_key = hsm.root_public_key();
    let (stop, stopping) = watch::channel(false);
    let changes = start_changes(&config, &store, &model, &progress, &stopping).await?;
    if config.checkpoint.enabled {
        tokio::spawn(checkpoint::run(store.clone(), hsm.clone(), config.checkpoint.clone(), stopping.clone()));
    }
    let writer = Writer::new(store.clone(), hsm.clone(), Arc::new(signer));
    let reader = Reader::new(model, store, hsm, progress);
    let secrets = Secrets::new(writer.clone(), reader.clone(), Arc::new(digest), config.limits.clone());
    tokio::spawn(crate::secrets::expiry::run(secrets.clone(), config.expiry.clone(), stopping.clone()));
    let state = AppState {
        region: config.region.clone(),
        access: Arc::new(config.access.clone()),
        writer,
        reader,
        secrets,
        ca,
        root_public_key,
        stopping: stopping.clone(),
        changes,
    };
    if let Some(address) = config.public_listen {
        start_public(&config, address, state.clone(), ready_file).await?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Config(format!("cannot listen on {} (listen): {e}", config.listen)))?;
    let address = listener.local_addr().map_err(|e| StartError::Unavailable(e.to_string()))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        server.addr = %address,
        region = %config.region,
        stream = %config.nats.stream,
        "watchword server started"
    );
    if let Some(path) = ready_file {
        std::fs::write(path, address.to_string())
            .map_err(|e| StartError::Config(format!("cannot write the ready file {}: {e}", path.display())))?;
    }

    // One signal handler stops both endpoints and ends every long-poll.
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    tls::serve(listener, tls_config, api::router(state), stopped(stopping))
        .await
        .map_err(|e| StartError::Unavailable(format!("HTTPS server failed: {e}")))?;
    tracing::info!("watchword server stopped");
    Ok(())
}

/// Opens the notices stream and starts the publisher that moves notices from the
/// read model's outbox to it (with `changes.publish` off, it only prunes).
async fn start_changes(
    config: &ServerConfig,
    store: &EventStore,
    model: &Arc<ReadModel>,
    progress: &watch::Receiver<Progress>,
    stopping: &watch::Receiver<bool>,
) -> Result<ChangeStream, StartError> {
    let stream = crate::stream::ensure_changes_stream(store.jetstream(), &config.nats, &config.changes)
        .await
        .map_err(|e| StartError::Unavailable(e.to_string()))?;
    let changes = ChangeStream::new(store.jetstream().clone(), stream);
    let publisher = crate::changes::run_publisher(
        Arc::clone(model),
        changes.clone(),
        config.changes.publish,
        progress.clone(),
        stopping.clone(),
    );
    tokio::spawn(publisher);
    Ok(changes)
}

fn load_ca(config: &ServerConfig, hsm: &Hsm) -> Result<Option<Arc<ClientCa>>, StartError> {
    let Some(ca_config) = &config.ca else {
        return Ok(None);
    };
    let label = config.hsm.ca_key_label.clone().unwrap_or_default();
    let key = HsmCaKey::new(hsm).map_err(|e| StartError::Config(e.to_string()))?;
    let lifetime = time::Duration::try_from(ca_config.leaf_lifetime())
        .map_err(|e| StartError::Config(format!("ca.leaf_secs or ca.leaf_hours: {e}")))?;
    let ca = ClientCa::load(key, &ca_config.cert, lifetime, &label).map_err(|e| StartError::Config(e.to_string()))?;
    Ok(Some(Arc::new(ca)))
}

/// Starts the public endpoint, which accepts clients without certificates and
/// serves enrolment and the routes that take operator tokens. Its bound address
/// goes to the ready file's name with the extension `public`.
async fn start_public(
    config: &ServerConfig,
    address: std::net::SocketAddr,
    state: AppState,
    ready_file: Option<&Path>,
) -> Result<(), StartError> {
    let tls_config = tls::server_config_without_client_auth(&config.tls.cert, &config.tls.key)
        .map_err(|e| StartError::Config(format!("tls: {e}")))?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| StartError::Config(format!("cannot listen on {address} (public_listen): {e}")))?;
    let address = listener.local_addr().map_err(|e| StartError::Unavailable(e.to_string()))?;
    tracing::info!(server.addr = %address, "public endpoint started");
    if let Some(path) = ready_file {
        let path = path.with_extension("public");
        std::fs::write(&path, address.to_string())
            .map_err(|e| StartError::Config(format!("cannot write {}: {e}", path.display())))?;
    }
    tokio::spawn(async move {
        let stopping = state.stopping.clone();
        if let Err(error) = tls::serve_anonymous(listener, tls_config, public_router(state), stopped(stopping)).await {
            tracing::error!(%error, "public endpoint failed");
        }
    });
    Ok(())
}

fn open_read_model(config: &ServerConfig) -> Result<Arc<ReadModel>, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Config(format!("cannot create data_dir {}: {e}", config.data_dir.display())))?;
    let path = config.data_dir.join(format!("{}.redb", config.region));
    let model = ReadModel::open(&path, config.projector.cache_mib * 1024 * 1024)
        .map_err(|e| StartError::Unavailable(format!("cannot open the read model {}: {e}", path.display())))?;
    if let Some(found) = model.reset_from_schema() {
        tracing::warn!(path = %path.display(), schema.found = found, schema.expected = watchword_events::readmodel::SCHEMA_VERSION, "the read model was written with another schema; rebuilding it from the stream");
    }
    Ok(Arc::new(model))
}

/// Completes once `stopping` turns true.
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
