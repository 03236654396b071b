//! `watchword-load`: drives a running Watchword server over mTLS and reports
//! throughput and latency percentiles.
//!
//! Scenarios:
//! - `write`: concurrent writers each write new versions of their own secrets;
//! - `read`: concurrent readers read a set of secrets written beforehand.
//!
//! Every request is awaited and counted; a failed request fails the run, because a
//! benchmark that hides errors measures the wrong thing.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use watchword::client::{ApiClient, PutOptions};
use watchword::config::{self, ClientConfig};

#[derive(Debug, Parser)]
#[command(name = "watchword-load", version, about = "Benchmark scenarios against a running Watchword server")]
struct Cli {
    /// The CLI configuration file of an operator (server URL and certificates).
    #[arg(long, env = "WATCHWORD_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Concurrent writers commit new versions of secrets.
    Write {
        /// Number of concurrent writers.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Total number of writes.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Content size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
    /// Concurrent readers read secrets written before the measurement.
    Read {
        /// Number of concurrent readers.
        #[arg(long, default_value_t = 16)]
        readers: usize,
        /// Total number of reads.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Number of distinct secrets read.
        #[arg(long, default_value_t = 100)]
        secrets: usize,
        /// Content size in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
    },
}

/// Result of one scenario run; latencies in milliseconds.
#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    operations: u64,
    concurrency: usize,
    size: usize,
    seconds: f64,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: ClientConfig = config::load(&cli.config)?;
    let client = ApiClient::new(&config.server, &config.ca, &config.cert, &config.key)?;
    let run_id = std::process::id();

    let report = match cli.scenario {
        Scenario::Write { writers, count, size } => {
            let content = vec![0x5a; size];
            let names: Vec<String> = (0..writers).map(|w| format!("load/{run_id}/write/{w}")).collect();
            measure("write", writers, size, count, |i| {
                let (client, name, content) = (client.clone(), names[i % writers].clone(), content.clone());
                async move { client.put_secret(&name, content, &PutOptions::default()).await.map(|_| ()) }
            })
            .await?
        }
        Scenario::Read { readers, count, secrets, size } => {
            let names: Vec<String> = (0..secrets).map(|s| format!("load/{run_id}/read/{s}")).collect();
            let mut last = 0;
            for name in &names {
                last = client.put_secret(name, vec![0x5a; size], &PutOptions::default()).await?.sequence;
            }
            client.get_secret(&names[0], Some(last)).await.context("waiting for the projection")?;
            measure("read", readers, size, count, |i| {
                let (client, name) = (client.clone(), names[i % secrets].clone());
                async move { client.get_secret(&name, None).await.map(|_| ()) }
            })
            .await?
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `count` operations with `concurrency` in flight and records each latency.
async fn measure<F, Fut>(
    scenario: &'static str,
    concurrency: usize,
    size: usize,
    count: usize,
    operation: F,
) -> anyhow::Result<Report>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), watchword::client::ClientError>>,
{
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let start = Instant::now();
    let results = futures::stream::iter(0..count)
        .map(|i| {
            let histogram = Arc::clone(&histogram);
            let future = operation(i);
            async move {
                let began = Instant::now();
                future.await?;
                let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.lock().expect("histogram lock").record(micros.max(1)).expect("latency within range");
                Ok::<(), watchword::client::ClientError>(())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = start.elapsed();
    if let Some(error) = results.into_iter().find_map(Result::err) {
        anyhow::bail!("{scenario}: a request failed: {error}");
    }

    let histogram = histogram.lock().expect("histogram lock");
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(Report {
        scenario,
        operations: histogram.len(),
        concurrency,
        size,
        seconds: elapsed.as_secs_f64(),
        per_second: histogram.len() as f64 / elapsed.max(Duration::from_micros(1)).as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}
