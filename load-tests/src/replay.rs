//! The `replay` scenario: how fast `watchword-replay verify` reads and verifies
//! the event stream, next to an ordered consumer that only reads and decodes.
//!
//! Targets, alternating in every run:
//!
//! - `watchword-replay`: the `watchword-replay verify` binary as a child process,
//!   timed from spawn to exit. It verifies every signature, chain and checkpoint
//!   and folds every event into its in-memory state.
//! - `watchword-replay archive`: the same verification of an archive that
//!   `watchword-replay export` wrote once before the runs, with no NATS involved.
//! - `watchword-replay sequential` and `watchword-replay archive sequential`: the
//!   same two with `--sequential`, which checks signatures on the folding thread
//!   instead of a thread of their own.
//! - `decode`: an ordered consumer in this process that reads the same messages
//!   and decodes each frame and envelope, with no signature check and no fold,
//!   timed from connecting to the last message.
//!
//! Both read the whole stream as it is when the run starts.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use serde_json::json;
use watchword_events::{Event, Frame};

use crate::measure::Stats;
use crate::procstat::{Monitor, Watched};
use crate::report::Comparison;

const VERIFY: &str = "watchword-replay";
const VERIFY_ARCHIVE: &str = "watchword-replay archive";
const VERIFY_SEQUENTIAL: &str = "watchword-replay sequential";
const VERIFY_ARCHIVE_SEQUENTIAL: &str = "watchword-replay archive sequential";
const DECODE: &str = "decode";

/// Parameters of a replay measurement.
#[derive(Debug, Clone)]
pub struct ReplayLoad {
    pub nats: String,
    pub stream: String,
    /// HSM root public key in hex; without it only `decode` runs.
    pub root_key: Option<String>,
    pub replay_bin: PathBuf,
    pub runs: usize,
}

/// Runs the replay scenario.
pub async fn run(load: &ReplayLoad, watched: &Watched) -> anyhow::Result<()> {
    let events = last_sequence(&load.nats, &load.stream).await?;
    let archive_dir = tempfile::tempdir().context("cannot create a directory for the archive")?;
    let archive = archive_dir.path().join("replay.wwa");
    if let Some(root_key) = &load.root_key {
        export(load, root_key, &archive).await?;
    }
    let mut comparison =
        Comparison::new("replay", json!({ "events": events, "stream": load.stream })).with_reference(VERIFY);
    for run in 0..load.runs {
        let mut targets = vec![DECODE];
        if load.root_key.is_some() {
            targets.splice(0..0, [VERIFY, VERIFY_SEQUENTIAL, VERIFY_ARCHIVE, VERIFY_ARCHIVE_SEQUENTIAL]);
        }
        if run % 2 == 1 {
            targets.reverse();
        }
        for target in targets {
            let monitor = Monitor::start(watched);
            let archive = archive.to_str().context("the archive path is not UTF-8")?;
            let stats = match (target, &load.root_key) {
                (DECODE, _) | (_, None) => decode(&load.nats, &load.stream).await?,
                (_, Some(root_key)) => {
                    let mut args = match target {
                        VERIFY | VERIFY_SEQUENTIAL => vec!["--nats", &load.nats, "--stream", &load.stream],
                        _ => vec!["--archive", archive],
                    };
                    args.extend(["--root-key", root_key.as_str()]);
                    if target.ends_with("sequential") {
                        args.push("--sequential");
                    }
                    verify(load, &args).await?
                }
            };
            let usage = monitor.finish().await;
            comparison.record(target, run, &stats, &usage, json!({}));
        }
    }
    comparison.summarize();
    Ok(())
}

async fn last_sequence(nats: &str, stream: &str) -> anyhow::Result<u64> {
    let client = async_nats::connect(nats).await.with_context(|| format!("cannot connect to NATS at {nats}"))?;
    let mut stream =
        jetstream::new(client).get_stream(stream).await.with_context(|| format!("cannot open stream {stream}"))?;
    Ok(stream.info().await.context("cannot read the stream's state")?.state.last_sequence)
}

/// Writes the archive that the `watchword-replay archive` target verifies. It
/// waits for the server's checkpoint, and without one exports all the same.
async fn export(load: &ReplayLoad, root_key: &str, archive: &std::path::Path) -> anyhow::Result<()> {
    let mut command = Command::new(&load.replay_bin);
    command.args(["export", "--nats", &load.nats, "--stream", &load.stream, "--root-key", root_key]);
    command.args(["--wait-secs", "5", "--allow-uncovered", "--out"]).arg(archive);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("the export task panicked")?
        .with_context(|| format!("cannot run {}", load.replay_bin.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "watchword-replay export failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs `watchword-replay verify` with `args` and times it from spawn to exit.
async fn verify(load: &ReplayLoad, args: &[&str]) -> anyhow::Result<Stats> {
    let mut command = Command::new(&load.replay_bin);
    command.arg("verify").args(args);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("the replay task panicked")?
        .with_context(|| format!("cannot run {}", load.replay_bin.display()))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "watchword-replay verify failed with {}: {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let events =
        verified_events(&stdout).with_context(|| format!("unexpected output of watchword-replay: {stdout}"))?;
    Ok(throughput(events, elapsed))
}

/// Parses the event count of `verified N events up to stream sequence M: ...`.
fn verified_events(stdout: &str) -> Option<u64> {
    stdout.trim().strip_prefix("verified ")?.split_whitespace().next()?.parse().ok()
}

/// Reads the stream up to its last message and decodes every frame and envelope.
async fn decode(nats: &str, stream: &str) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let last = last_sequence(nats, stream).await?;
    let client = async_nats::connect(nats).await.with_context(|| format!("cannot connect to NATS at {nats}"))?;
    let stream =
        jetstream::new(client).get_stream(stream).await.with_context(|| format!("cannot open stream {stream}"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .context("cannot create an ordered consumer")?;
    let mut messages = consumer.messages().await.context("cannot read the stream")?;
    let mut events = 0;
    let mut sequence = 0;
    while sequence < last {
        let Some(message) = messages.next().await else {
            anyhow::bail!("the stream ended before sequence {last}");
        };
        let message = message.context("reading the stream failed")?;
        sequence = message.info().map_err(|e| anyhow::anyhow!("message without stream metadata: {e}"))?.stream_sequence;
        let frame = Frame::decode(&message.payload).with_context(|| format!("sequence {sequence}: invalid frame"))?;
        let event =
            Event::from_signed_bytes(&frame.signed).with_context(|| format!("sequence {sequence}: invalid event"))?;
        std::hint::black_box(event);
        events += 1;
    }
    Ok(throughput(events, started.elapsed()))
}

/// Stats of a run that measures only throughput. The latency fields are NaN,
/// which the JSON output writes as `null`.
fn throughput(events: u64, elapsed: Duration) -> Stats {
    let seconds = elapsed.as_secs_f64();
    let unmeasured = f64::NAN;
    Stats {
        operations: events,
        seconds,
        per_second: events as f64 / seconds,
        p50_ms: unmeasured,
        p99_ms: unmeasured,
        p999_ms: unmeasured,
        max_ms: unmeasured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verified_count() {
        let stdout = "verified 1234 events up to stream sequence 1234: 10 secrets, 1 signing keys\n";
        assert_eq!(verified_events(stdout), Some(1234));
    }

    #[test]
    fn rejects_other_output() {
        assert_eq!(verified_events("verification failed"), None);
    }
}
