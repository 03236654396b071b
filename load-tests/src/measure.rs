//! Closed-loop runs and their statistics.
//!
//! A closed-loop run starts a fixed number of workers, each with one operation in
//! flight at a time, until a fixed number of operations has completed. Every
//! operation's latency goes into a histogram. The first failed operation fails the
//! run, because a benchmark that hides errors measures the wrong thing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Throughput and latency of one run, with latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub operations: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Latency histogram in microseconds, from 1 µs to 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the bounds are valid")
}

/// Records the time since `began` in microseconds.
pub fn record_since(histogram: &mut Histogram<u64>, began: Instant) {
    record_micros(histogram, began.elapsed());
}

/// Records a duration in microseconds.
pub fn record_micros(histogram: &mut Histogram<u64>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Summarizes a histogram of operations that took `elapsed` in total.
pub fn stats(histogram: &Histogram<u64>, elapsed: Duration) -> Stats {
    let ms = |micros: u64| micros as f64 / 1000.0;
    let seconds = elapsed.max(Duration::from_micros(1)).as_secs_f64();
    Stats {
        operations: histogram.len(),
        seconds,
        per_second: histogram.len() as f64 / seconds,
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

/// Runs `count` operations on `workers` tokio tasks, each with one operation in
/// flight. `operation` receives the worker's index and the operation's index.
pub async fn closed_loop<F, Fut>(workers: usize, count: usize, operation: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    anyhow::ensure!(workers > 0, "the number of workers must be at least 1");
    let operation = Arc::new(operation);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let (operation, next) = (Arc::clone(&operation), Arc::clone(&next));
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        return Ok::<_, anyhow::Error>(histogram);
                    }
                    let began = Instant::now();
                    operation(worker, index).await.with_context(|| format!("operation {index} failed"))?;
                    record_since(&mut histogram, began);
                }
            })
        })
        .collect();

    let mut merged = new_histogram();
    for task in tasks {
        let histogram = task.await.context("a worker task panicked")??;
        merged.add(&histogram).expect("histograms with the same bounds add up");
    }
    Ok(stats(&merged, start.elapsed()))
}

/// Returns the median of `values`, or `None` when there are none.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_count() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn median_of_even_count() {
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_of_nothing() {
        assert_eq!(median(&mut []), None);
    }

    #[tokio::test]
    async fn closed_loop_runs_every_operation() {
        let done = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&done);
        let stats = closed_loop(3, 10, move |_, _| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(stats.operations, 10);
        assert_eq!(done.load(Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn closed_loop_fails_on_error() {
        let result = closed_loop(2, 5, |_, index| async move {
            anyhow::ensure!(index != 3, "planned failure");
            Ok(())
        })
        .await;
        assert!(result.is_err());
    }
}
