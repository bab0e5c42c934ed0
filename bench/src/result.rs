//! Scenario results: JSON files and the printed table.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One measurement window of one contender.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub mpps: f64,
    pub gbps: f64,
}

/// Which way of the metric favours ubox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput, rates: a ratio above 1 favours ubox.
    #[default]
    Higher,
    /// Latency: a ratio below 1 favours ubox.
    Lower,
}

/// `bench/results/<scenario>.json` (read back by `ubox-bench plot`: the
/// fields after `ratio` may be absent in files of older runs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub metric: String,
    /// ubox's median.
    pub ubox: f64,
    pub peer_name: String,
    /// The peer's median.
    pub peer: f64,
    /// ubox / peer; `better` says which way favours ubox.
    pub ratio: f64,
    #[serde(default)]
    pub better: Better,
    #[serde(default)]
    pub rounds: usize,
    #[serde(default)]
    pub window_s: f64,
    #[serde(default)]
    pub samples_ubox: Vec<f64>,
    #[serde(default)]
    pub samples_peer: Vec<f64>,
    /// Scenario-specific figures (e.g. event round trip).
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "figures_without_nulls"
    )]
    pub extra: std::collections::BTreeMap<String, f64>,
    /// Set by scenarios that check correctness as they measure (`l7lb`):
    /// `true` when a measurement behind this result saw errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
    /// What went wrong, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Latency percentiles of both contenders (wrk workloads of `e2e` and
    /// `l7lb`, on their p99 result), for the latency CDF of `ubox-bench plot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// The latency distribution wrk reports (`--latency`: 50, 75, 90, 99 %, and
/// its maximum as 100 %) for both contenders of a result: per percentile
/// the median over the rounds, in ms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// What was measured, e.g. `e2e wrk-keepalive`, `l7lb close`.
    pub case: String,
    /// ubox's contender label (the peer's is `peer_name`).
    pub ubox_label: String,
    /// Percentiles, ascending, 100 meaning the maximum.
    pub percentiles: Vec<f64>,
    pub ubox_ms: Vec<f64>,
    pub peer_ms: Vec<f64>,
}

/// The percentiles of [`Latency`], as wrk prints them plus its maximum.
pub const LATENCY_PERCENTILES: [f64; 5] = [50.0, 75.0, 90.0, 99.0, 100.0];

impl ScenarioResult {
    pub fn new(scenario: &str, metric: &str, ubox: f64, peer_name: &str, peer: f64) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            metric: metric.into(),
            ubox,
            peer_name: peer_name.into(),
            peer,
            ratio: if peer > 0.0 { ubox / peer } else { 0.0 },
            better: Better::Higher,
            rounds: 0,
            window_s: 0.0,
            samples_ubox: Vec::new(),
            samples_peer: Vec::new(),
            extra: Default::default(),
            failed: None,
            failures: Vec::new(),
            latency: None,
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(format!("{}.json", self.scenario));
        let json = serde_json::to_string_pretty(self).expect("serialise");
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// `extra` as written: serde_json writes a NaN or infinite figure as
/// `null`, read back as absent.
fn figures_without_nulls<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, f64>, D::Error> {
    let m: std::collections::BTreeMap<String, Option<f64>> = Deserialize::deserialize(d)?;
    Ok(m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
}

pub fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn table(results: &[ScenarioResult]) -> String {
    let mut t = controller::table::Table::new(&["scenario", "metric", "ubox", "peer", "peer value", "ratio", "better"]);
    for r in results {
        t.row(vec![
            r.scenario.clone(),
            r.metric.clone(),
            format!("{:.3}", r.ubox),
            r.peer_name.clone(),
            format!("{:.3}", r.peer),
            format!("{:.3}", r.ratio),
            match r.better {
                Better::Higher => "higher".into(),
                Better::Lower => "lower".into(),
            },
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn ratio_is_ubox_over_peer() {
        let r = ScenarioResult::new("s", "Mpps", 9.0, "p", 10.0);
        assert!((r.ratio - 0.9).abs() < 1e-12);
        let dir = std::env::temp_dir().join(format!("ubox-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        r.write(&dir).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("s.json")).unwrap()).unwrap();
        assert_eq!(v["better"], "higher");
        for k in ["scenario", "metric", "ubox", "peer_name", "peer", "ratio"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
