//! `watchword-load`: benchmark scenarios against a running Watchword server and
//! its nats-server, each next to a baseline measured in the same run.
//!
//! Every scenario prints one JSON line per measured run and a summary line with
//! the medians and the ratios to the baselines (see `report.rs`). Every request
//! is awaited and a failed one fails the run. `load-tests/REPORT.md` describes
//! the scenarios, the commands and the results.
#![forbid(unsafe_code)]

mod clients;
mod lag;
mod measure;
mod procstat;
mod raw;
mod read;
mod replay;
mod report;
mod smoke;
mod write;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use watchword::client::ApiClient;

use clients::{Clients, ServerArgs};
use procstat::Watched;

#[derive(Debug, Parser)]
#[command(name = "watchword-load", version, about = "Benchmark scenarios against a running Watchword server")]
struct Cli {
    /// Process id of `watchword serve`, whose memory and CPU time each run reports.
    #[arg(long, global = true, env = "WATCHWORD_SERVER_PID")]
    server_pid: Option<u32>,
    /// Process id of nats-server, whose CPU time each run reports.
    #[arg(long, global = true, env = "WATCHWORD_NATS_PID")]
    nats_pid: Option<u32>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Args)]
struct NatsArgs {
    /// URL of the nats-server that the Watchword server uses.
    #[arg(long, env = "WATCHWORD_LOAD_NATS")]
    nats: String,
    /// Name of Watchword's event stream.
    #[arg(long, default_value = "WATCHWORD_EVENTS")]
    stream: String,
}

#[derive(Debug, Args)]
struct ReadModelArgs {
    /// The server's read-model file; the baselines read a copy of it.
    #[arg(long, env = "WATCHWORD_READ_MODEL")]
    read_model: Option<PathBuf>,
    /// Page cache of the copy in MiB (the server's default is 64).
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// Threads that read the copy.
    #[arg(long, default_value_t = 2)]
    raw_threads: usize,
    /// Client identity whose access the baselines check.
    #[arg(long, default_value = "spiffe://watchword.dev/operator")]
    client_id: String,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// HSM root public key in hex (`watchword hsm root-key`). Without it, only the decode baseline runs.
    #[arg(long, env = "WATCHWORD_ROOT_KEY")]
    root_key: Option<String>,
    /// The `watchword-replay` binary. By default, the one next to this program.
    #[arg(long)]
    replay_bin: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Writers commit new versions of their own secrets. With --nats, the raw
    /// JetStream baselines run side by side.
    Write {
        #[command(flatten)]
        server: ServerArgs,
        /// Number of concurrent writers, each with one request in flight.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Writes per run.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Secret content size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// nats-server of the Watchword server. When set, the baselines run too.
        #[arg(long, env = "WATCHWORD_LOAD_NATS")]
        nats: Option<String>,
        /// Name of Watchword's event stream.
        #[arg(long, default_value = "WATCHWORD_EVENTS")]
        stream: String,
    },
    /// Publish to a stream of the tool's own and await each acknowledgement.
    RawPublish {
        #[command(flatten)]
        nats: NatsArgs,
        /// Number of concurrent publishers, each with one message in flight.
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        /// Messages per run.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// JetStream requests per operation.
        #[arg(long, value_enum, default_value = "plain")]
        protocol: raw::Protocol,
    },
    /// Readers read secrets written beforehand. With --read-model (and --nats),
    /// the read-model baselines run side by side.
    Read {
        #[command(flatten)]
        server: ServerArgs,
        /// Number of concurrent readers, each with one request in flight.
        #[arg(long, default_value_t = 16)]
        readers: usize,
        /// Reads per run.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Number of distinct secrets read, round robin.
        #[arg(long, default_value_t = 1000)]
        secrets: usize,
        /// Content size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Reuse the secrets an earlier run wrote with the same --secrets and --size.
        #[arg(long)]
        skip_populate: bool,
        /// Concurrent writers that write the secrets before the runs.
        #[arg(long, default_value_t = 64)]
        populate_writers: usize,
        #[command(flatten)]
        read_model: ReadModelArgs,
        /// nats-server of the Watchword server, for the baseline that also fetches data keys.
        #[arg(long, env = "WATCHWORD_LOAD_NATS")]
        nats: Option<String>,
    },
    /// Writes at a fixed rate while polling the applied sequence, and reports the
    /// time from each event's acknowledgement to its visibility in the read model.
    Lag {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        nats: NatsArgs,
        /// Writes started per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Length of each run in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Content size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Number of distinct secrets written, round robin.
        #[arg(long, default_value_t = 4096)]
        names: usize,
        /// Maximum number of writes in flight. A write that is due while this many are pending waits.
        #[arg(long, default_value_t = 1024)]
        max_in_flight: usize,
        /// Pause between two status polls in milliseconds.
        #[arg(long, default_value_t = 1)]
        poll_interval_ms: u64,
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Times `watchword-replay verify` over the whole stream next to an ordered
    /// consumer that only decodes.
    Replay {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        replay: ReplayArgs,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Every scenario once with tiny counts, in a few seconds.
    Smoke {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        read_model: ReadModelArgs,
        #[command(flatten)]
        replay: ReplayArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let watched = Watched { server: cli.server_pid, nats: cli.nats_pid };
    match cli.scenario {
        Scenario::Write { server, writers, count, size, runs, nats, stream } => {
            let raw = match nats {
                Some(url) => Some(raw::RawStreams::connect(&url, &stream).await?),
                None => None,
            };
            let load = write::WriteLoad { concurrency: writers, count, size, runs };
            write::run(&Clients::new(&server)?, raw.as_ref(), load, &watched).await
        }
        Scenario::RawPublish { nats, publishers, count, size, runs, protocol } => {
            let raw = raw::RawStreams::connect(&nats.nats, &nats.stream).await?;
            let load = write::WriteLoad { concurrency: publishers, count, size, runs };
            write::run_raw(&raw, protocol, load, &watched).await
        }
        Scenario::Read {
            server,
            readers,
            count,
            secrets,
            size,
            runs,
            skip_populate,
            populate_writers,
            read_model,
            nats,
        } => {
            anyhow::ensure!(secrets > 0, "--secrets must be at least 1");
            let load =
                read::ReadLoad { readers, count, secrets, size, runs, populate: !skip_populate, populate_writers };
            read::run(&Clients::new(&server)?, &load, &baselines(read_model, nats), &watched).await
        }
        Scenario::Lag { server, nats, rate, seconds, size, names, max_in_flight, poll_interval_ms, runs } => {
            let poll_interval = Duration::from_millis(poll_interval_ms);
            let load = lag::LagLoad { rate, seconds, size, names: names.max(1), max_in_flight, poll_interval, runs };
            let poller = status_poller(&server)?;
            lag::run(&Clients::new(&server)?, &poller, &nats.nats, &nats.stream, &load, &watched).await
        }
        Scenario::Replay { nats, replay, runs } => replay::run(&replay_load(nats, replay, runs)?, &watched).await,
        Scenario::Smoke { server, nats, read_model, replay } => {
            let targets = smoke::SmokeTargets {
                nats: nats.nats.clone(),
                stream: nats.stream.clone(),
                baselines: baselines(read_model, Some(nats.nats.clone())),
                replay: replay_load(nats, replay, 1)?,
            };
            smoke::run(&Clients::new(&server)?, &status_poller(&server)?, &targets, &watched).await
        }
    }
}

fn baselines(args: ReadModelArgs, nats: Option<String>) -> read::Baselines {
    read::Baselines {
        read_model: args.read_model,
        cache_mib: args.cache_mib,
        threads: args.raw_threads,
        client_id: args.client_id,
        nats,
    }
}

/// Returns a client with a connection of its own, so polls never queue behind writes.
fn status_poller(server: &ServerArgs) -> anyhow::Result<ApiClient> {
    let clients = Clients::new(&ServerArgs { connections: 1, ..server.clone() })?;
    Ok(clients.for_worker(0).clone())
}

fn replay_load(nats: NatsArgs, args: ReplayArgs, runs: usize) -> anyhow::Result<replay::ReplayLoad> {
    let replay_bin = match args.replay_bin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot locate this program to find watchword-replay next to it")?
            .with_file_name("watchword-replay"),
    };
    Ok(replay::ReplayLoad { nats: nats.nats, stream: nats.stream, root_key: args.root_key, replay_bin, runs })
}
