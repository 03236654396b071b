//! The `write` and `raw-publish` scenarios.
//!
//! `write`: each writer owns one secret and writes new versions of it, one request
//! at a time, so writers never conflict. A write counts when the server returns
//! it as committed, which is after JetStream acknowledged the event and (for up to
//! 2 s) after the server's read model applied it. With `--nats`, the baselines of
//! [`crate::raw`] run side by side in every run, with as many publishers as
//! writers and messages as large as the events the writes stored.

use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use watchword::client::PutOptions;
use watchword_events::Aggregate;

use crate::clients::Clients;
use crate::measure::closed_loop;
use crate::procstat::{Monitor, Watched};
use crate::raw::{Protocol, RawStreams};
use crate::report::{Comparison, PRODUCT};

/// Parameters of a write or raw-publish measurement.
#[derive(Debug, Clone, Copy)]
pub struct WriteLoad {
    pub concurrency: usize,
    pub count: usize,
    /// Secret content size in bytes.
    pub size: usize,
    pub runs: usize,
}

/// Runs the write scenario, with the raw baselines when `raw` is given.
pub async fn run(
    clients: &Clients,
    raw: Option<&RawStreams>,
    load: WriteLoad,
    watched: &Watched,
) -> anyhow::Result<()> {
    clients.warm_up().await?;
    let names = Arc::new(writer_names(load.concurrency));
    let content = Bytes::from(vec![0x5a; load.size]);
    let message_bytes = match raw {
        Some(raw) => Some(stored_event_size(clients, raw, &names[0], &content).await?),
        None => None,
    };
    let mut parameters = parameters(load);
    parameters["connections"] = clients.connections().into();
    let mut comparison = Comparison::new("write", parameters);

    for run in 0..load.runs {
        let mut targets = vec![PRODUCT];
        if raw.is_some() {
            targets.extend([Protocol::Plain.target(), Protocol::WritePath.target()]);
        }
        // Alternating the order keeps a drift of the machine from always favouring one target.
        if run % 2 == 1 {
            targets.reverse();
        }
        for target in targets {
            let monitor = Monitor::start(watched);
            let stats = match (raw, message_bytes) {
                (Some(raw), Some(size)) if target != PRODUCT => {
                    let protocol =
                        if target == Protocol::Plain.target() { Protocol::Plain } else { Protocol::WritePath };
                    publish_raw(raw, protocol, size, load).await?
                }
                _ => write_secrets(clients, &names, &content, load).await?,
            };
            let usage = monitor.finish().await;
            comparison.record(target, run, &stats, &usage, json!({ "message_bytes": message_bytes }));
        }
    }
    comparison.summarize();
    Ok(())
}

/// Writes one version of `name` (not measured) and returns the size of the event
/// the server stored for it, which the baselines then publish.
async fn stored_event_size(clients: &Clients, raw: &RawStreams, name: &str, content: &Bytes) -> anyhow::Result<usize> {
    let client = clients.for_worker(0);
    client.put_secret(name, content.to_vec(), &PutOptions::default()).await.context("warm-up write failed")?;
    raw.last_event_size(&Aggregate::secret(name).subject()).await
}

/// Runs the raw baseline alone, with messages of `load.size` bytes.
pub async fn run_raw(raw: &RawStreams, protocol: Protocol, load: WriteLoad, watched: &Watched) -> anyhow::Result<()> {
    let mut comparison = Comparison::new("raw-publish", parameters(load));
    for run in 0..load.runs {
        let monitor = Monitor::start(watched);
        let stats = publish_raw(raw, protocol, load.size, load).await?;
        let usage = monitor.finish().await;
        comparison.record(protocol.target(), run, &stats, &usage, json!({ "message_bytes": load.size }));
    }
    comparison.summarize();
    Ok(())
}

fn parameters(load: WriteLoad) -> serde_json::Value {
    json!({ "concurrency": load.concurrency, "size": load.size, "count": load.count })
}

/// Names of the writers' secrets, unique to this process.
fn writer_names(writers: usize) -> Vec<String> {
    let pid = std::process::id();
    (0..writers).map(|w| format!("load/write/{pid}/{w}")).collect()
}

async fn write_secrets(
    clients: &Clients,
    names: &Arc<Vec<String>>,
    content: &Bytes,
    load: WriteLoad,
) -> anyhow::Result<crate::measure::Stats> {
    let (clients, names, content) = (clients.clone(), Arc::clone(names), content.clone());
    closed_loop(load.concurrency, load.count, move |writer, _| {
        let (client, name, content) = (clients.for_worker(writer).clone(), names[writer].clone(), content.clone());
        async move {
            client.put_secret(&name, content.to_vec(), &PutOptions::default()).await?;
            Ok(())
        }
    })
    .await
}

async fn publish_raw(
    raw: &RawStreams,
    protocol: Protocol,
    message_bytes: usize,
    load: WriteLoad,
) -> anyhow::Result<crate::measure::Stats> {
    raw.purge().await?;
    let raw = raw.clone();
    let payload = Bytes::from(vec![0x5a; message_bytes]);
    closed_loop(load.concurrency, load.count, move |publisher, operation| {
        let (raw, payload) = (raw.clone(), payload.clone());
        async move { raw.operate(protocol, publisher, operation, payload).await }
    })
    .await
}
