//! The live web view (`[web] listen`): a page at `/` that shows the chains,
//! the NFs with their queue depths, the drops and the throughput, and
//! updates itself every second from `GET /api/view`; both served by
//! [`crate::http`]. Read-only: nothing served here changes the runtime.
//!
//! The page is one self-contained file (`web/index.html`, inline CSS and
//! JavaScript, no external resource), compiled in. `/api/view` is the
//! JSON it draws ([`View`]): the counters of a [`Snapshot`] (what `uboxctl
//! stats` shows, read through the main loop) arranged for the page, with
//! rates: the differences from an earlier snapshot kept here ([`Rates`])
//! over the time between the two reads, at least [`MIN_WINDOW_MS`] apart.
//! Computed here rather than in the page, so that every viewer sees the
//! same rates and a test can read them.
//!
//! This module must not touch the data path, DPDK, or the counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use controller::api::{PoolStats, Stats};
use controller::registry::FlowFilter;
use serde::Serialize;

use crate::http::{Reply, Snapshot};

/// The page.
pub const PAGE: &str = include_str!("web/index.html");

/// Rates come from two reads at least this far apart (ms).
pub const MIN_WINDOW_MS: u64 = 500;
/// Snapshots kept for rates: at most this many, this far back (ms), one
/// per this spacing (ms).
const KEEP_SAMPLES: usize = 64;
const KEEP_MS: u64 = 10_000;
const SAMPLE_SPACING_MS: u64 = 100;

/// Content-Security-Policy of the page: nothing from elsewhere, requests
/// only to where it came from, no framing.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub(crate) fn page() -> Reply {
    let mut r = Reply::new("text/html; charset=utf-8", PAGE);
    r.headers.push((hyper::header::CONTENT_SECURITY_POLICY, CSP));
    r.headers.push((hyper::header::X_FRAME_OPTIONS, "DENY"));
    r.headers.push((hyper::header::REFERRER_POLICY, "no-referrer"));
    r
}

/// `GET /api/view`: the view of `snap`, with rates against an earlier one.
pub(crate) fn view_reply(rates: &mut Rates, snap: &Arc<Snapshot>, accepted: u64, refused: u64) -> Reply {
    let mut v = rates.view(snap);
    v.http = HttpCounts { connections: accepted, refused };
    match serde_json::to_string(&v) {
        Ok(json) => Reply::new("application/json", json),
        Err(e) => Reply::text(500, format!("cannot encode the view: {e}\n")),
    }
}

/// The chains in force, as `uboxctl chain show` has them, structured.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Chains {
    /// 0 until chains are applied.
    pub version: u32,
    /// Where they came from (the file given to `chain apply`).
    pub origin: String,
    pub chains: Vec<Chain>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Chain {
    pub name: String,
    /// The flows it takes (the first chain whose filter matches).
    pub filter: FlowFilter,
    /// Stages in order; a stage of several NFs is a parallel group.
    pub stages: Vec<Vec<Member>>,
    /// `drop` or `pass`: a flow the TCP monitor cannot serve.
    pub on_unmonitored: &'static str,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Member {
    pub nf: String,
    /// `fail-open` or `fail-closed`.
    pub policy: &'static str,
}

/// What `/api/view` answers. Counters are totals since the start; fields
/// ending in `_per_s` (and `rx_pps`, `rx_bps`, ...) are rates over
/// `window_ms`, `null` until there is an earlier read to compare with.
#[derive(Debug, Default, Serialize)]
pub struct View {
    pub instance: String,
    pub uptime_ms: u64,
    pub steering: String,
    /// The time between the reads the rates come from.
    pub window_ms: Option<u64>,
    pub totals: Totals,
    pub chains: Chains,
    pub nfs: Vec<NfView>,
    pub ports: Vec<PortView>,
    pub workers: Vec<WorkerView>,
    /// Drops by reason, summed over workers (only reasons seen).
    pub drops: Vec<DropView>,
    pub pools: PoolStats,
    /// This server's own connections: accepted, and refused at the limit.
    pub http: HttpCounts,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Over all ports.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_pps: Option<f64>,
    pub tx_pps: Option<f64>,
    /// Bits per second.
    pub rx_bps: Option<f64>,
    pub tx_bps: Option<f64>,
    /// Over all workers.
    pub dropped: u64,
    pub drops_per_s: Option<f64>,
    pub flows_active: u64,
    /// Events given to NFs (all NFs).
    pub events_per_s: Option<f64>,
    pub nfs_running: u64,
    pub nfs: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct NfView {
    pub name: String,
    /// `running`, `dead` or `absent`.
    pub state: String,
    /// The chains it is a stage of.
    pub chains: Vec<String>,
    pub events_in: u64,
    pub events_out: u64,
    pub events_per_s: Option<f64>,
    /// Events waiting in its rings now.
    pub queue_depth: u64,
    /// Packets it dropped (`verdict_drop`) or that its absence dropped
    /// under `fail-closed` (`fail_closed`).
    pub dropped: u64,
    /// Events it was not given: ring full, no event slot, absent under
    /// `fail-open`.
    pub missed: u64,
    /// The share of the window it reported being busy (0 to 1).
    pub busy: Option<f64>,
    /// Every count by reason (only non-zero ones).
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct PortView {
    pub name: String,
    pub device: String,
    pub driver: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the TX queue had no room for.
    pub tx_dropped: u64,
    /// Frames the device dropped before the runtime saw them (`imissed`,
    /// `rx_nombuf`, `ierrors`).
    pub rx_missed: u64,
    pub rx_pps: Option<f64>,
    pub tx_pps: Option<f64>,
    pub rx_bps: Option<f64>,
    pub tx_bps: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct WorkerView {
    pub id: u32,
    pub lcore: u32,
    pub rx_packets: u64,
    pub dropped: u64,
    pub flows_active: u64,
    pub rx_pps: Option<f64>,
    pub drops_per_s: Option<f64>,
    /// The share of the window it did work (0 to 1).
    pub busy: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct DropView {
    pub reason: String,
    pub packets: u64,
    pub per_s: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct HttpCounts {
    pub connections: u64,
    pub refused: u64,
}

/// The snapshots the rates are computed against.
#[derive(Default)]
pub struct Rates {
    history: VecDeque<Arc<Snapshot>>,
}

impl Rates {
    /// The view of `now`, with rates against the latest kept snapshot at
    /// least [`MIN_WINDOW_MS`] older; keeps `now` for later views.
    pub fn view(&mut self, now: &Arc<Snapshot>) -> View {
        let t = now.stats.uptime_ms;
        if self.history.back().is_some_and(|b| b.stats.uptime_ms > t) {
            self.history.clear(); // cannot happen within one runtime; harmless
        }
        let base = self.history.iter().rev().find(|s| s.stats.uptime_ms + MIN_WINDOW_MS <= t).cloned();
        if self.history.back().map_or(true, |b| b.stats.uptime_ms + SAMPLE_SPACING_MS <= t) {
            self.history.push_back(Arc::clone(now));
        }
        // Keep the base of the next views: drop only what is older than it.
        while self.history.len() > KEEP_SAMPLES
            || self.history.len() > 1 && self.history[1].stats.uptime_ms + KEEP_MS <= t
        {
            self.history.pop_front();
        }
        build(now, base.as_deref())
    }
}

/// The NF counts that are drops and misses (see [`NfView`]).
const NF_DROPPED: [&str; 2] = ["verdict_drop", "fail_closed"];
const NF_MISSED: [&str; 3] = ["ring_full", "no_event_slot", "skipped_absent"];

fn build(now: &Snapshot, base: Option<&Snapshot>) -> View {
    let st = &now.stats;
    let window_ms = base.map(|b| st.uptime_ms - b.stats.uptime_ms);
    let secs = window_ms.map(|ms| ms as f64 / 1000.0);
    // The rate of a counter from its earlier value (a counter that went
    // back, an NF's after it re-registered, counts as no change).
    let rate = |cur: u64, prev: Option<u64>| -> Option<f64> { Some(cur.saturating_sub(prev?) as f64 / secs?) };
    let bstats: Option<&Stats> = base.map(|b| &b.stats);

    let ports: Vec<PortView> = st
        .ports
        .iter()
        .map(|p| {
            let b = bstats.and_then(|b| b.ports.iter().find(|q| q.name == p.name));
            PortView {
                name: p.name.clone(),
                device: p.device.clone(),
                driver: p.driver.clone(),
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                tx_dropped: p.tx_dropped,
                rx_missed: p.pmd.imissed + p.pmd.rx_nombuf + p.pmd.ierrors,
                rx_pps: rate(p.rx_packets, b.map(|b| b.rx_packets)),
                tx_pps: rate(p.tx_packets, b.map(|b| b.tx_packets)),
                rx_bps: rate(p.rx_bytes, b.map(|b| b.rx_bytes)).map(|r| r * 8.0),
                tx_bps: rate(p.tx_bytes, b.map(|b| b.tx_bytes)).map(|r| r * 8.0),
            }
        })
        .collect();
    let workers: Vec<WorkerView> = st
        .workers
        .iter()
        .map(|w| {
            let b = bstats.and_then(|b| b.workers.iter().find(|x| x.id == w.id));
            WorkerView {
                id: w.id,
                lcore: w.lcore,
                rx_packets: w.rx_packets,
                dropped: w.dropped,
                flows_active: w.flows.active,
                rx_pps: rate(w.rx_packets, b.map(|b| b.rx_packets)),
                drops_per_s: rate(w.dropped, b.map(|b| b.dropped)),
                busy: share(w.busy_ns, b.map(|b| b.busy_ns), window_ms),
            }
        })
        .collect();
    let sum_drops = |s: &Stats| {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for w in &s.workers {
            for (k, v) in &w.drops {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m
    };
    let base_drops = bstats.map(sum_drops);
    let drops = sum_drops(st)
        .into_iter()
        .map(|(reason, packets)| {
            let prev = base_drops.as_ref().map(|d| d.get(&reason).copied().unwrap_or(0));
            DropView { per_s: rate(packets, prev), reason, packets }
        })
        .collect();
    let nfs: Vec<NfView> = st
        .nfs
        .iter()
        .map(|n| {
            let b = bstats.and_then(|b| b.nfs.iter().find(|x| x.name == n.name));
            let count = |names: &[&str]| names.iter().map(|k| n.counts.get(*k).copied().unwrap_or(0)).sum();
            NfView {
                name: n.name.clone(),
                state: n.state.clone(),
                chains: now
                    .chains
                    .chains
                    .iter()
                    .filter(|c| c.stages.iter().flatten().any(|m| m.nf == n.name))
                    .map(|c| c.name.clone())
                    .collect(),
                events_in: n.events_in,
                events_out: n.events_out,
                events_per_s: rate(n.events_in, b.map(|b| b.events_in)),
                queue_depth: n.queue_depth,
                dropped: count(&NF_DROPPED),
                missed: count(&NF_MISSED),
                busy: share(n.nf_busy_ns, b.map(|b| b.nf_busy_ns), window_ms),
                counts: n.counts.clone(),
            }
        })
        .collect();
    let sum = |f: &dyn Fn(&PortView) -> Option<f64>| ports.iter().map(f).sum::<Option<f64>>();
    let totals = Totals {
        rx_packets: st.ports.iter().map(|p| p.rx_packets).sum(),
        tx_packets: st.ports.iter().map(|p| p.tx_packets).sum(),
        rx_pps: sum(&|p| p.rx_pps),
        tx_pps: sum(&|p| p.tx_pps),
        rx_bps: sum(&|p| p.rx_bps),
        tx_bps: sum(&|p| p.tx_bps),
        dropped: st.workers.iter().map(|w| w.dropped).sum(),
        drops_per_s: workers.iter().map(|w| w.drops_per_s).sum(),
        flows_active: st.workers.iter().map(|w| w.flows.active).sum(),
        events_per_s: nfs.iter().map(|n| n.events_per_s).sum(),
        nfs_running: nfs.iter().filter(|n| n.state == "running").count() as u64,
        nfs: nfs.len() as u64,
    };
    View {
        instance: st.instance.clone(),
        uptime_ms: st.uptime_ms,
        steering: st.steering.clone(),
        window_ms,
        totals,
        chains: now.chains.clone(),
        nfs,
        ports,
        workers,
        drops,
        pools: st.pools.clone(),
        http: HttpCounts::default(),
    }
}

/// The share of `window_ms` that a nanosecond counter grew by, 0 to 1 (an
/// NF reports its own: any value).
fn share(cur: u64, prev: Option<u64>, window_ms: Option<u64>) -> Option<f64> {
    let ns = cur.checked_sub(prev?)? as f64;
    let window = window_ms? as f64 * 1e6;
    (window > 0.0).then(|| (ns / window).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use controller::api::{NfStats, PortStats, WorkerStats};
    use serde_json::Value;

    use super::*;
    use crate::http::tests::{get, header, local, MainLoop};

    fn snap(uptime_ms: u64, rx: u64, events: u64) -> Arc<Snapshot> {
        let mut drops = BTreeMap::new();
        drops.insert("no_route".to_string(), rx / 10);
        Arc::new(Snapshot {
            stats: Stats {
                instance: "box".into(),
                uptime_ms,
                ports: vec![PortStats {
                    name: "client".into(),
                    rx_packets: rx,
                    rx_bytes: rx * 1000,
                    ..Default::default()
                }],
                workers: vec![WorkerStats {
                    rx_packets: rx,
                    dropped: rx / 10,
                    drops,
                    busy_ns: uptime_ms * 250_000, // a quarter of the time
                    ..Default::default()
                }],
                nfs: vec![NfStats {
                    name: "counter".into(),
                    state: "running".into(),
                    events_in: events,
                    events_out: events,
                    queue_depth: 3,
                    counts: [("verdict_drop".to_string(), 2), ("ring_full".to_string(), 5)].into_iter().collect(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            chains: Chains {
                version: 1,
                origin: "c.toml".into(),
                chains: vec![Chain {
                    name: "web".into(),
                    filter: FlowFilter::default(),
                    stages: vec![vec![Member { nf: "counter".into(), policy: "fail-closed" }]],
                    on_unmonitored: "pass",
                }],
            },
        })
    }

    #[test]
    fn rates_are_differences_over_the_time_between_reads() {
        let mut r = Rates::default();
        let v = r.view(&snap(1000, 100, 50));
        assert_eq!(v.window_ms, None);
        assert_eq!((v.totals.rx_pps, v.ports[0].rx_pps, v.nfs[0].events_per_s), (None, None, None));
        assert_eq!(v.totals.rx_packets, 100);
        // Too soon after: still no earlier read far enough back.
        assert_eq!(r.view(&snap(1200, 300, 150)).window_ms, None);
        // The latest read at least MIN_WINDOW_MS back: 1200, not 1000.
        let v = r.view(&snap(3000, 2100, 1050));
        assert_eq!(v.window_ms, Some(1800));
        assert_eq!(v.ports[0].rx_pps, Some(1000.0));
        assert_eq!(v.ports[0].rx_bps, Some(8_000_000.0));
        assert_eq!(v.totals.rx_pps, Some(1000.0));
        assert_eq!(v.nfs[0].events_per_s, Some(500.0));
        assert_eq!(v.totals.events_per_s, Some(500.0));
        assert_eq!(v.workers[0].drops_per_s, Some(100.0));
        assert_eq!(v.drops[0].reason, "no_route");
        assert_eq!((v.drops[0].packets, v.drops[0].per_s), (210, Some(100.0)));
        assert_eq!(v.workers[0].busy, Some(0.25));
        // The next read compares with 3000, a second back.
        let v = r.view(&snap(4000, 3100, 1050));
        assert_eq!((v.window_ms, v.ports[0].rx_pps, v.nfs[0].events_per_s), (Some(1000), Some(1000.0), Some(0.0)));
        // A counter that went back (an NF re-registered) is no change.
        let v = r.view(&snap(5000, 4100, 10));
        assert_eq!(v.nfs[0].events_per_s, Some(0.0));
        // The NF's row: its chain, drops and misses from its counts.
        let n = &v.nfs[0];
        assert_eq!((n.chains.as_slice(), n.dropped, n.missed, n.queue_depth), (&["web".to_string()][..], 2, 5, 3));
        assert_eq!((v.totals.nfs, v.totals.nfs_running), (1, 1));
    }

    #[test]
    fn the_history_stays_bounded_and_keeps_a_base() {
        let mut r = Rates::default();
        // A read every 20 ms (the main loop's pace) for 60 s.
        for i in 0..3000u64 {
            let v = r.view(&snap(i * 20, i, i));
            if i * 20 >= MIN_WINDOW_MS {
                let w = v.window_ms.expect("a base once MIN_WINDOW_MS passed");
                assert!((MIN_WINDOW_MS..MIN_WINDOW_MS + SAMPLE_SPACING_MS + 20).contains(&w), "{w}");
            }
            assert!(r.history.len() <= KEEP_SAMPLES, "{}", r.history.len());
        }
        // One read every 30 s: each compares with the one before.
        let mut r = Rates::default();
        for i in 1..5u64 {
            let v = r.view(&snap(i * 30_000, i * 30_000, 0));
            assert_eq!(v.window_ms, (i > 1).then_some(30_000));
            assert!(r.history.len() <= 2);
        }
    }

    #[test]
    fn busy_shares_are_clamped() {
        assert_eq!(share(100, Some(0), Some(0)), None);
        assert_eq!(share(3_000_000_000, Some(0), Some(1000)), Some(1.0), "an NF's own report: any value");
        assert_eq!(share(0, Some(10), Some(1000)), None);
        assert_eq!(share(500_000_000, Some(0), Some(1000)), Some(0.5));
    }

    #[test]
    fn serves_the_page_and_its_json() {
        let ep = local(false, true);
        let addr = ep.addrs()[0].0;
        let main = MainLoop::start(ep.start(Duration::from_secs(5)).unwrap(), |n| {
            // Uptime advances a second per answer: the second view has rates.
            Snapshot::clone(&snap(n as u64 * 1000, n as u64 * 100, n as u64 * 10))
        });
        let (status, headers, body) = get(addr, "GET", "/");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        assert!(header(&headers, "content-security-policy").starts_with("default-src 'none';"), "{headers:?}");
        assert_eq!(body, PAGE);
        assert_eq!(get(addr, "GET", "/index.html").0, 200);
        // No resource from elsewhere: the page is self-contained (the one
        // URL in it names the SVG namespace).
        for bad in ["https:", "src=", "@import", "url(", "href=\"http"] {
            assert!(!PAGE.contains(bad), "the page refers to {bad}");
        }
        assert_eq!(PAGE.matches("http:").count(), PAGE.matches("'http://www.w3.org/2000/svg'").count());
        let (status, headers, body) = get(addr, "GET", "/api/view");
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "content-type"), "application/json");
        assert_eq!(header(&headers, "cache-control"), "no-store");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["instance"], "box");
        assert_eq!(v["window_ms"], Value::Null);
        assert_eq!(v["chains"]["chains"][0]["stages"][0][0]["nf"], "counter");
        assert_eq!(v["nfs"][0]["events_in"], 10);
        let (_, _, body) = get(addr, "GET", "/api/view");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["window_ms"], 1000);
        assert_eq!(v["nfs"][0]["events_per_s"], 10.0);
        assert_eq!(v["ports"][0]["rx_pps"], 100.0);
        assert_eq!(v["http"]["connections"], 4);
        assert_eq!(get(addr, "GET", "/metrics").0, 404, "no metrics on this address");
        assert_eq!(get(addr, "DELETE", "/api/view").0, 405);
        main.stop();
    }
}
