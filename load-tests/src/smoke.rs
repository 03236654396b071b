//! The `smoke` scenario: every other scenario once, with tiny counts, so a test
//! run proves that the tool and its baselines work against a live server in a few
//! seconds. Its numbers mean nothing.

use std::time::Duration;

use watchword::client::ApiClient;

use crate::clients::Clients;
use crate::lag::{self, LagLoad};
use crate::procstat::Watched;
use crate::raw::RawStreams;
use crate::read::{self, Baselines, ReadLoad};
use crate::replay::{self, ReplayLoad};
use crate::write::{self, WriteLoad};

/// Addresses of the stack under test.
#[derive(Debug)]
pub struct SmokeTargets {
    pub nats: String,
    pub stream: String,
    pub baselines: Baselines,
    pub replay: ReplayLoad,
}

/// Runs each scenario once with tiny counts.
pub async fn run(
    clients: &Clients,
    poller: &ApiClient,
    targets: &SmokeTargets,
    watched: &Watched,
) -> anyhow::Result<()> {
    let raw = RawStreams::connect(&targets.nats, &targets.stream).await?;
    write::run(clients, Some(&raw), WriteLoad { concurrency: 2, count: 20, size: 100, runs: 1 }, watched).await?;

    let load = ReadLoad { readers: 2, count: 20, secrets: 5, size: 100, runs: 1, populate: true, populate_writers: 2 };
    read::run(clients, &load, &targets.baselines, watched).await?;

    let load = LagLoad {
        rate: 50.0,
        seconds: 1.0,
        size: 100,
        names: 16,
        max_in_flight: 16,
        poll_interval: Duration::from_millis(5),
        runs: 1,
    };
    lag::run(clients, poller, &targets.nats, &targets.stream, &load, watched).await?;

    replay::run(&targets.replay, watched).await
}
