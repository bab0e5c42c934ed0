//! Scenario results: JSON files and the printed table.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// One measurement window of one contender.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub mpps: f64,
    pub gbps: f64,
}

/// Which way of the metric favours ubox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput, rates: a ratio above 1 favours ubox.
    #[default]
    Higher,
    /// Latency: a ratio below 1 favours ubox.
    Lower,
}

/// `bench/results/<scenario>.json`.
#[derive(Clone, Debug, Serialize)]
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
    pub better: Better,
    pub rounds: usize,
    pub window_s: f64,
    pub samples_ubox: Vec<f64>,
    pub samples_peer: Vec<f64>,
    /// Scenario-specific figures (e.g. event round trip).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, f64>,
    /// Set by scenarios that check correctness as they measure (`l7lb`):
    /// `true` when a measurement behind this result saw errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
    /// What went wrong, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

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
        }
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(format!("{}.json", self.scenario));
        let json = serde_json::to_string_pretty(self).expect("serialise");
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
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
