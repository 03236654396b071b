//! Output: one JSON line per measured run, then one summary line per comparison.
//!
//! A run line has `"type": "run"`, the scenario, the target (`watchword` or a
//! baseline), the run's parameters, its [`Stats`] and the processes' [`Usage`].
//! A summary line has `"type": "summary"`, the median of each statistic per
//! target, and for each other target the median of the per-run ratios
//! `reference / target` of operations per second, where the reference is
//! `watchword` unless the scenario names another. Each ratio compares two
//! measurements taken one after the other in the same run, so a slow phase of
//! the shared machine affects both sides of it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::measure::{Stats, median};
use crate::procstat::Usage;

/// The product itself, as opposed to a baseline.
pub const PRODUCT: &str = "watchword";

/// Runs of one scenario with fixed parameters, by target.
#[derive(Debug)]
pub struct Comparison {
    scenario: &'static str,
    parameters: Value,
    reference: &'static str,
    runs: BTreeMap<&'static str, Vec<Stats>>,
}

impl Comparison {
    /// Starts a comparison; `parameters` must be a JSON object.
    pub fn new(scenario: &'static str, parameters: Value) -> Comparison {
        debug_assert!(parameters.is_object());
        Comparison { scenario, parameters, reference: PRODUCT, runs: BTreeMap::new() }
    }

    /// Sets the target that the ratios compare the others with.
    pub fn with_reference(self, reference: &'static str) -> Comparison {
        Comparison { reference, ..self }
    }

    /// Prints one run's line and keeps its statistics for the summary.
    pub fn record(&mut self, target: &'static str, run: usize, stats: &Stats, usage: &Usage, extra: Value) {
        let mut line = self.header("run");
        line.insert("target".to_owned(), target.into());
        line.insert("run".to_owned(), run.into());
        merge(&mut line, &self.parameters);
        merge(&mut line, &extra);
        merge(&mut line, &serde_json::to_value(stats).expect("stats serialize"));
        merge(&mut line, &serde_json::to_value(usage).expect("usage serializes"));
        println!("{}", Value::Object(line));
        self.runs.entry(target).or_default().push(stats.clone());
    }

    /// Prints the summary line.
    pub fn summarize(&self) {
        let mut line = self.header("summary");
        merge(&mut line, &self.parameters);
        let medians: Map<String, Value> =
            self.runs.iter().map(|(target, runs)| ((*target).to_owned(), medians(runs))).collect();
        line.insert("median".to_owned(), Value::Object(medians));
        line.insert("ratio_per_second".to_owned(), Value::Object(self.ratios()));
        println!("{}", Value::Object(line));
    }

    fn header(&self, kind: &str) -> Map<String, Value> {
        let mut line = Map::new();
        line.insert("type".to_owned(), kind.into());
        line.insert("scenario".to_owned(), self.scenario.into());
        line
    }

    /// Returns, per other target, the median over runs of `reference / target`.
    fn ratios(&self) -> Map<String, Value> {
        let Some(reference) = self.runs.get(self.reference) else {
            return Map::new();
        };
        let mut ratios = Map::new();
        for (target, runs) in self.runs.iter().filter(|(target, _)| **target != self.reference) {
            let mut per_run: Vec<f64> = reference.iter().zip(runs).map(|(r, t)| r.per_second / t.per_second).collect();
            ratios.insert(format!("{}/{target}", self.reference), json!(median(&mut per_run)));
        }
        ratios
    }
}

fn medians(runs: &[Stats]) -> Value {
    let median_of = |field: fn(&Stats) -> f64| median(&mut runs.iter().map(field).collect::<Vec<_>>());
    json!({
        "runs": runs.len(),
        "per_second": median_of(|s| s.per_second),
        "p50_ms": median_of(|s| s.p50_ms),
        "p99_ms": median_of(|s| s.p99_ms),
        "p999_ms": median_of(|s| s.p999_ms),
        "max_ms": median_of(|s| s.max_ms),
    })
}

fn merge(line: &mut Map<String, Value>, object: &Value) {
    if let Value::Object(fields) = object {
        line.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}
