//! The background task that records expiries and finishes interrupted destructions.

use tokio::sync::watch;

use super::Secrets;
use crate::config::ExpiryConfig;
use crate::signer::now_micros;

/// Records a `secret.version_expired` event for each current version whose expiry
/// time passed, until the server stops. Computes stop receiving such a version at
/// its expiry time whether or not the event is recorded yet. The event records for
/// change subscribers and auditors when it happened.
///
/// At start it also erases the data keys of destroyed versions that a crash left behind.
pub async fn run(secrets: Secrets, config: ExpiryConfig, mut stopping: watch::Receiver<bool>) {
    match secrets.erase_destroyed_keys().await {
        Ok(0) => {}
        Ok(erased) => {
            tracing::warn!(count = erased, "erased data keys of destroyed versions left by an interrupted destruction")
        }
        Err(error) => {
            tracing::error!(%error, "cannot check for data keys of destroyed versions; retrying at the next start")
        }
    }

    let mut interval = tokio::time::interval(std::time::Duration::from_secs(config.check_interval_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        if let Err(error) = record_due(&secrets).await {
            tracing::warn!(%error, "recording expiries failed; retrying");
        }
    }
}

async fn record_due(secrets: &Secrets) -> Result<(), crate::writer::WriteError> {
    let (due, _) = secrets.reader.expiring(now_micros()).await?;
    for (_, name) in due {
        let Some(state) = secrets.reader.metadata(&name).await?.0 else {
            continue;
        };
        if let Some(committed) = secrets.expire(&name, state.current.version).await? {
            tracing::info!(secret.name = %name, secret.version = state.current.version, event.seq = committed.sequence, "secret version expired");
        }
    }
    Ok(())
}
