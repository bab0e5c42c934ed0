//! `ubox-bench events`: the μEvent data path with 0, 1, 2 and 3 sequential
//! NF processes and a parallel group of 3, on the same `net_pcap` replay as
//! `wire`. Each NF is a real `counter` process (nfs/counter) registered with
//! the runtime; a chain sends every TCP packet through them.
//!
//! Every case runs with `runtime.nf_backpressure = true`, so the replay is
//! paced by the slowest NF and every packet visits every NF of its chain:
//! an event skipped for any reason (full ring, no slot, absent NF) is
//! counted in the JSON, and any skipped event fails the scenario.
//!
//! # Per-event costs, and how they are counted
//! From the runtime's and the NFs' own counters over the window:
//! - **events per packet**: NF answers / packets forwarded.
//! - **worker ns per packet**: the worker's busy time (loop iterations that
//!   received frames or took answers) / packets; **worker ns per event**:
//!   its excess over the 0-NF case of the same round, / events per packet.
//! - **NF ns per event**: the NFs' busy time (each NF measures each burst,
//!   from its first pop to the push of its answers) / events they handled.
//! - **events per burst**: descriptors per descriptor-ring push (worker)
//!   and per non-empty pop (NF).
//! - **shared cache lines per event, by design**: a descriptor is 32 bytes
//!   and an answer 8, so `40/64` of a line per event; per burst, each
//!   ring's producer index crosses to the consumer once and the consumer's
//!   index back at most once, so `2/burst` per ring: `0.625 +
//!   2/worker burst + 2/NF burst`. The packet bytes an NF reads are not
//!   counted (the counter NF reads none: it counts lengths).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use controller::api::{self, Request, Response, Stats};

use crate::result::Measurement;
use crate::ubox::{measure_running, sibling_binary, wire_config, Running};

/// One configuration of the event path.
pub struct Case {
    pub scenario: &'static str,
    pub label: &'static str,
    /// NF names per stage.
    pub stages: Vec<Vec<&'static str>>,
    /// NF binary (next to ubox-bench) and its extra arguments.
    pub nf: &'static str,
    pub args: Vec<String>,
    /// `runtime.nf_backpressure`: the runtime waits for slow NFs instead of
    /// skipping events (and, for `DATA_RDY`, bytes) they have no room for.
    pub backpressure: bool,
    /// TOML appended to the runtime's config.
    pub extra: &'static str,
}

impl Case {
    fn counters(scenario: &'static str, label: &'static str, stages: Vec<Vec<&'static str>>) -> Case {
        Case { scenario, label, stages, nf: "counter", args: Vec::new(), backpressure: true, extra: "" }
    }
}

/// `ubox-bench monitor`: plain forwarding, the TCP monitor reassembling both
/// sides for an empty `DATA_RDY` subscriber, and the ids NF on top. Both
/// monitor cases run with backpressure, so the figure is the rate at which
/// every byte is reassembled and handed to the NF, not a rate reached by
/// skipping what a slow NF had no room for.
pub fn monitor_cases(rules: &Path) -> Vec<Case> {
    let empty = ["--no-packets", "--events", "DATA_RDY", "--events", "FLOW/TCP"];
    vec![
        Case::counters("monitor-wire", "wire (no monitor)", vec![]),
        Case {
            scenario: "monitor-reassembly",
            label: "monitor, both sides",
            stages: vec![vec!["sink"]],
            nf: "counter",
            args: empty.iter().map(|s| s.to_string()).collect(),
            backpressure: true,
            // As for the ids below: rings for the backlog of announced
            // ranges, else connections that find none are refused (strict
            // chain) and their packets dropped, not reassembled.
            extra: MONITOR_RINGS,
        },
        Case {
            scenario: "monitor-ids",
            label: "monitor + ids NF",
            stages: vec![vec!["ids"]],
            nf: "ids",
            args: vec!["--rules".into(), rules.display().to_string()],
            backpressure: true,
            // The ids NF answers slower than the monitor announces, so up to
            // a whole NF ring of DATA_RDY events (1024) is outstanding, many
            // for connections that already closed and restarted: each keeps
            // its ring until answered. Enough rings for that backlog, so
            // every connection is reassembled and scanned.
            extra: MONITOR_RINGS,
        },
    ]
}

/// Stream rings for the monitor cases (see the ids case).
const MONITOR_RINGS: &str = "[monitor]\nstream_buffers = 1536\nstream_buffer_kb = 512\n";

pub fn cases() -> Vec<Case> {
    vec![
        Case::counters("events-0nf", "0 NFs", vec![]),
        Case::counters("events-1nf", "1 NF", vec![vec!["nf1"]]),
        Case::counters("events-2nf", "2 NFs in sequence", vec![vec!["nf1"], vec!["nf2"]]),
        Case::counters("events-3nf", "3 NFs in sequence", vec![vec!["nf1"], vec!["nf2"], vec!["nf3"]]),
        Case::counters("events-parallel3", "3 NFs in parallel", vec![vec!["nf1", "nf2", "nf3"]]),
    ]
}

/// What one run of a case measured.
pub struct EventRun {
    pub m: Measurement,
    /// Mean publish-to-answer time of an event, in microseconds.
    pub rtt_us: f64,
    /// Packets dropped in the window (any reason).
    pub dropped: u64,
    /// Events not delivered in the window, any reason (must be 0).
    pub skipped: u64,
    pub costs: Costs,
}

/// Per-event figures of one run (see the module docs for how).
#[derive(Clone, Copy, Debug, Default)]
pub struct Costs {
    pub events_per_packet: f64,
    pub worker_ns_per_packet: f64,
    pub nf_ns_per_event: f64,
    pub worker_events_per_burst: f64,
    pub nf_events_per_burst: f64,
}

impl Costs {
    fn between(a: &Stats, b: &Stats) -> Costs {
        let w = |f: fn(&controller::api::WorkerStats) -> u64| {
            b.workers.iter().map(f).sum::<u64>().saturating_sub(a.workers.iter().map(f).sum::<u64>())
        };
        let n = |f: fn(&controller::api::NfStats) -> u64| {
            b.nfs.iter().map(f).sum::<u64>().saturating_sub(a.nfs.iter().map(f).sum::<u64>())
        };
        let div = |x: u64, y: u64| if y == 0 { 0.0 } else { x as f64 / y as f64 };
        let packets = w(|w| w.rx_packets);
        Costs {
            events_per_packet: div(w(|w| w.nf_answers), packets),
            worker_ns_per_packet: div(w(|w| w.busy_ns), packets),
            nf_ns_per_event: div(n(|n| n.nf_busy_ns), n(|n| n.nf_events)),
            worker_events_per_burst: div(w(|w| w.events_pushed), w(|w| w.event_bursts)),
            nf_events_per_burst: div(n(|n| n.nf_events), n(|n| n.nf_bursts)),
        }
    }

    /// Shared cache lines an event moves between cores by design (module
    /// docs); 0 for a case without events.
    pub fn lines_per_event(&self) -> f64 {
        if self.events_per_packet == 0.0 {
            return 0.0;
        }
        let per_burst = |b: f64| if b > 0.0 { 2.0 / b } else { 2.0 };
        40.0 / 64.0 + per_burst(self.worker_events_per_burst) + per_burst(self.nf_events_per_burst)
    }
}

struct Nfs(Vec<Child>);

impl Drop for Nfs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn chain_toml(stages: &[Vec<&str>]) -> String {
    let nfs: Vec<String> = stages
        .iter()
        .map(|g| {
            if g.len() == 1 {
                format!("\"{}\"", g[0])
            } else {
                format!("[{}]", g.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "))
            }
        })
        .collect();
    // A policy per NF lets the chain stand before its NFs register.
    let policy: Vec<String> = stages.iter().flatten().map(|n| format!("{n} = \"fail-closed\"\n")).collect();
    format!(
        "[[chain]]\nname = \"bench\"\nnfs = [{}]\n[chain.match]\nprotocol = \"tcp\"\n[chain.policy]\n{}",
        nfs.join(", "),
        policy.concat()
    )
}

pub fn wait_registered(socket: &Path, names: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Response::Nfs { nfs }) = api::call(socket, &Request::NfList, Duration::from_secs(2)) {
            if names.iter().all(|n| nfs.iter().any(|i| i.name == *n && i.state == "running")) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("NFs {names:?} did not register within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drops(s: &Stats) -> u64 {
    s.workers.iter().map(|w| w.dropped).sum()
}

fn skipped(s: &Stats) -> u64 {
    s.workers.iter().flat_map(|w| w.events_skipped.values()).sum()
}

/// [`measure`], also returning the monitor counters at the end.
pub fn measure_monitor(
    pcap: &Path,
    case: &Case,
    window: Duration,
) -> anyhow::Result<(EventRun, controller::api::MonitorStats)> {
    let mut mon = controller::api::MonitorStats::default();
    let r = measure_with(pcap, case, window, &mut |st: &Stats| {
        if let Some(w) = st.workers.first() {
            mon = w.monitor.clone();
        }
    })?;
    Ok((r, mon))
}

pub fn measure(pcap: &Path, case: &Case, window: Duration) -> anyhow::Result<EventRun> {
    measure_with(pcap, case, window, &mut |_| {})
}

fn measure_with(pcap: &Path, case: &Case, window: Duration, last: &mut dyn FnMut(&Stats)) -> anyhow::Result<EventRun> {
    // The replayed flows never end, so they must meet their chain at their
    // first packet: the chain is applied at start-up, and the NFs register
    // into the slots it reserved.
    let chains = (!case.stages.is_empty()).then(|| chain_toml(&case.stages));
    let mut config = wire_config(pcap);
    if case.backpressure {
        config = config.replacen("[runtime]\n", "[runtime]\nnf_backpressure = true\n", 1);
    }
    config.push_str(case.extra);
    let mut rt = Running::start_with_chains(&config, chains.as_deref())?;
    let names: Vec<&str> = case.stages.iter().flatten().copied().collect();
    let counter = sibling_binary(case.nf)?;
    let mut nfs = Nfs(Vec::new());
    for n in &names {
        let child = Command::new(&counter)
            .args(["--socket", &rt.socket.display().to_string(), "--name", n])
            .args(&case.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the {} NF", case.nf))?;
        nfs.0.push(child);
    }
    wait_registered(&rt.socket, &names)?;
    let (m, a, b) = measure_running(&rt, window)?;
    last(&b);
    drop(nfs);
    rt.stop();
    let answers: u64 =
        b.workers.iter().map(|w| w.nf_answers).sum::<u64>() - a.workers.iter().map(|w| w.nf_answers).sum::<u64>();
    let rtt_ns: u64 = b.workers.iter().map(|w| w.nf_rtt_ns_total).sum::<u64>()
        - a.workers.iter().map(|w| w.nf_rtt_ns_total).sum::<u64>();
    let rtt_us = if answers > 0 { rtt_ns as f64 / answers as f64 / 1000.0 } else { 0.0 };
    Ok(EventRun {
        m,
        rtt_us,
        dropped: drops(&b) - drops(&a),
        skipped: skipped(&b) - skipped(&a),
        costs: Costs::between(&a, &b),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_file_for_sequence_and_group() {
        let t = super::chain_toml(&[vec!["a"], vec!["b", "c"]]);
        assert!(t.contains(r#"nfs = ["a", ["b", "c"]]"#), "{t}");
        let set = controller::chain::ChainSet::parse(&t, "t").unwrap();
        assert_eq!(set.chains().len(), 1);
    }
}
