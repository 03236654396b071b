//! The `lag` scenario: time from a write's acknowledgement by JetStream to its
//! visibility in the server's read model, at a fixed write rate.
//!
//! Method:
//!
//! 1. Writes start on a fixed schedule (`--rate` per second, open loop), each on a
//!    secret of its own among `--names`, with at most `--max-in-flight` pending.
//!    Each response carries the event's stream sequence.
//! 2. A separate connection polls `GET /v1/status` every `--poll-interval-ms` and
//!    records the applied sequence with the wall-clock time the response arrived.
//! 3. Afterwards, an ordered consumer reads the stream time of every written
//!    event: the time nats-server stored it, just before it sent the
//!    acknowledgement. nats-server runs on this machine, so both times come from
//!    the same clock.
//! 4. An event's lag is the arrival time of the first poll whose applied sequence
//!    reaches the event, minus its stream time. That is an upper bound: the true
//!    lag is at most one poll interval and one status round trip shorter.
//!
//! The server's `PUT` returns only after its read model applied the event (for up
//! to 2 s), so the write latency also contains this lag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use watchword::client::{ApiClient, PutOptions};

use crate::clients::Clients;
use crate::measure::{Stats, median, new_histogram, record_micros, stats};
use crate::procstat::{Monitor, Watched};
use crate::report::{Comparison, PRODUCT};

/// Maximum wait for the read model to apply the last write after the run.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

/// Parameters of a lag measurement.
#[derive(Debug, Clone)]
pub struct LagLoad {
    /// Writes started per second.
    pub rate: f64,
    pub seconds: f64,
    pub size: usize,
    pub names: usize,
    pub max_in_flight: usize,
    pub poll_interval: Duration,
    pub runs: usize,
}

/// One response of `/v1/status`.
#[derive(Debug, Clone, Copy)]
struct Poll {
    received_ns: i128,
    applied: u64,
}

/// Outcome of one run of writes.
struct Writes {
    sequences: Vec<u64>,
    latency: Stats,
    /// Writes that waited for a free slot because `max_in_flight` were pending.
    delayed: u64,
    sent_seconds: f64,
}

/// Runs the lag scenario.
pub async fn run(
    clients: &Clients,
    poller: &ApiClient,
    nats: &str,
    stream: &str,
    load: &LagLoad,
    watched: &Watched,
) -> anyhow::Result<()> {
    anyhow::ensure!(load.rate > 0.0 && load.seconds > 0.0, "--rate and --seconds must be positive");
    clients.warm_up().await?;
    poller.status().await.context("the status poller cannot reach the server")?;
    let events = event_stream(nats, stream).await?;
    let parameters = json!({
        "rate": load.rate, "seconds": load.seconds, "size": load.size, "max_in_flight": load.max_in_flight,
        "poll_interval_ms": load.poll_interval.as_secs_f64() * 1000.0, "connections": clients.connections(),
    });
    let mut comparison = Comparison::new("lag", parameters);

    for run in 0..load.runs {
        let monitor = Monitor::start(watched);
        let (last_written, last_to_see) = watch::channel(None);
        let polling = tokio::spawn(poll_status(poller.clone(), load.poll_interval, last_to_see));
        let writes = write_at_rate(clients, load, run).await?;
        let _ = last_written.send(Some(writes.sequences.iter().copied().max().unwrap_or(0)));
        let polls = polling.await.context("the status poller panicked")??;
        let usage = monitor.finish().await;

        let stored = stream_times(&events, &writes.sequences).await?;
        let lag = lag_stats(&writes.sequences, &stored, &polls)?;
        let extra = json!({
            "measures": "projection lag (p50_ms..max_ms); per_second is writes committed per second",
            "sent_per_second": writes.sequences.len() as f64 / writes.sent_seconds,
            "delayed_by_max_in_flight": writes.delayed,
            "write_p50_ms": writes.latency.p50_ms,
            "write_p99_ms": writes.latency.p99_ms,
            "write_p999_ms": writes.latency.p999_ms,
            "polls": polls.len(),
            "poll_gap_median_ms": poll_gap_median_ms(&polls),
        });
        let committed = Stats { per_second: writes.latency.per_second, seconds: writes.latency.seconds, ..lag };
        comparison.record(PRODUCT, run, &committed, &usage, extra);
    }
    comparison.summarize();
    Ok(())
}

async fn event_stream(nats: &str, stream: &str) -> anyhow::Result<jetstream::stream::Stream> {
    let client = async_nats::connect(nats).await.with_context(|| format!("cannot connect to NATS at {nats}"))?;
    jetstream::new(client).get_stream(stream).await.with_context(|| format!("cannot open stream {stream}"))
}

fn unix_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// Polls the applied sequence until it reaches the sequence that `last_to_see`
/// receives once the writes are done.
async fn poll_status(
    poller: ApiClient,
    interval: Duration,
    mut last_to_see: watch::Receiver<Option<u64>>,
) -> anyhow::Result<Vec<Poll>> {
    let mut polls = Vec::new();
    let mut deadline = None;
    loop {
        let status = poller.status().await.context("status poll failed")?;
        let applied = status.applied_sequence;
        polls.push(Poll { received_ns: unix_nanos(), applied });

        let target = *last_to_see.borrow_and_update();
        if let Some(target) = target {
            if applied >= target {
                return Ok(polls);
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + CATCH_UP_LIMIT);
            anyhow::ensure!(
                Instant::now() < deadline,
                "the read model is at sequence {applied}, still short of {target} after {CATCH_UP_LIMIT:?}"
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// Starts writes on schedule and waits for all of them.
async fn write_at_rate(clients: &Clients, load: &LagLoad, run: usize) -> anyhow::Result<Writes> {
    let total = (load.rate * load.seconds).round() as usize;
    let content = vec![0x5a; load.size];
    let slots = Arc::new(Semaphore::new(load.max_in_flight.max(1)));
    let pid = std::process::id();
    let mut tasks = JoinSet::new();
    let mut delayed = 0;
    let start = tokio::time::Instant::now();

    for index in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / load.rate)).await;
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                delayed += 1;
                Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        let client = clients.for_worker(index).clone();
        let (name, content) = (format!("load/lag/{pid}/{run}/{}", index % load.names), content.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let written = client.put_secret(&name, content, &PutOptions::default()).await;
            let latency = began.elapsed();
            drop(slot);
            written.map(|w| (w.sequence, latency))
        });
    }
    let sent_seconds = start.elapsed().as_secs_f64();

    let mut sequences = Vec::with_capacity(total);
    let mut histogram = new_histogram();
    while let Some(result) = tasks.join_next().await {
        let (sequence, latency) = result.context("a write task panicked")?.context("a write failed")?;
        record_micros(&mut histogram, latency);
        sequences.push(sequence);
    }
    let latency = stats(&histogram, start.elapsed());
    Ok(Writes { sequences, latency, delayed, sent_seconds })
}

/// Returns the stream time, in nanoseconds since the Unix epoch, of each sequence.
async fn stream_times(events: &jetstream::stream::Stream, sequences: &[u64]) -> anyhow::Result<HashMap<u64, i128>> {
    let (Some(&first), Some(&last)) = (sequences.iter().min(), sequences.iter().max()) else {
        return Ok(HashMap::new());
    };
    let consumer = events
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: first },
            ..Default::default()
        })
        .await
        .context("cannot create an ordered consumer on the event stream")?;
    let mut messages = consumer.messages().await.context("cannot read the event stream")?;
    let mut times = HashMap::with_capacity(sequences.len());
    while let Some(message) = messages.next().await {
        let message = message.context("reading the event stream failed")?;
        let info = message.info().map_err(|e| anyhow::anyhow!("message without stream metadata: {e}"))?;
        times.insert(info.stream_sequence, info.published.unix_timestamp_nanos());
        if info.stream_sequence >= last {
            break;
        }
    }
    Ok(times)
}

/// Computes the lag of every written event from the polls, which arrive in order.
fn lag_stats(sequences: &[u64], stored: &HashMap<u64, i128>, polls: &[Poll]) -> anyhow::Result<Stats> {
    let mut histogram = new_histogram();
    for sequence in sequences {
        let stored_ns = *stored.get(sequence).with_context(|| format!("no stream time for sequence {sequence}"))?;
        let first = polls.partition_point(|poll| poll.applied < *sequence);
        let poll = polls.get(first).with_context(|| format!("no poll saw sequence {sequence} applied"))?;
        let micros = u64::try_from((poll.received_ns - stored_ns) / 1000).unwrap_or(0);
        histogram.saturating_record(micros.max(1));
    }
    Ok(stats(&histogram, Duration::ZERO))
}

fn poll_gap_median_ms(polls: &[Poll]) -> Option<f64> {
    let mut gaps: Vec<f64> = polls.windows(2).map(|w| (w[1].received_ns - w[0].received_ns) as f64 / 1e6).collect();
    median(&mut gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_uses_first_poll_at_or_past_sequence() {
        let polls = [
            Poll { received_ns: 1_000_000, applied: 4 },
            Poll { received_ns: 3_000_000, applied: 6 },
            Poll { received_ns: 5_000_000, applied: 9 },
        ];
        let stored = HashMap::from([(5, 500_000), (9, 4_000_000)]);
        let lag = lag_stats(&[5, 9], &stored, &polls).unwrap();
        assert_eq!(lag.operations, 2);
        assert!((lag.p50_ms - 1.0).abs() < 0.01, "lag of sequence 9 is 1 ms, got {}", lag.p50_ms);
        assert!((lag.max_ms - 2.5).abs() < 0.01, "lag of sequence 5 is 2.5 ms, got {}", lag.max_ms);
    }

    #[test]
    fn lag_fails_without_a_poll_past_the_event() {
        let polls = [Poll { received_ns: 1_000_000, applied: 4 }];
        let stored = HashMap::from([(5, 500_000)]);
        assert!(lag_stats(&[5], &stored, &polls).is_err());
    }
}
