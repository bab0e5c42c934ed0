//! `counter`: the first sample ubox NF.
//!
//! Subscribes to `PKT` read-only, counts packets and bytes per flow id, and
//! passes every packet. On SIGINT/SIGTERM (or when the runtime goes away) it
//! prints a per-flow table and, with `--json-out FILE`, writes the same
//! counts as JSON so an end-to-end test can compare them with the runtime's
//! counters:
//!
//! ```text
//! {"flows":[{"flow_id":1,"packets":10,"bytes":1540}],"packets":10,"bytes":1540}
//! ```
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.
//!
//! ```text
//! counter [--instance NAME | --socket PATH] [--json-out FILE] [--name NAME] [--reconnect]
//!         [--port P]... [--events TYPE]... [--slow-us N]
//! ```
//!
//! With `--reconnect` it outlives the runtime: its counts go on across
//! runtime restarts (a restarted runtime numbers flows anew, so a flow id
//! of the new runtime that an old flow had adds to that flow's row).
//!
//! `--port` narrows the subscription with a flow filter (the runtime sends
//! only flows with that port at either end); `--events` also subscribes to
//! event types other NFs publish (e.g. `FLOW/ACL_DENY`) and counts them per
//! type under `"events"`; `--slow-us` spins that long per event, to exercise
//! full rings and backpressure in tests.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, FlowFilter, NfBuilder, Verdict};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: count packets and bytes per flow (read-only)")]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Write the per-flow counts as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Only flows with this port at either end (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Also count events of this type (repeatable), e.g. FLOW/ACL_DENY.
    #[arg(long = "events")]
    events: Vec<String>,
    /// Busy-wait this many microseconds per event, packets and --events
    /// types alike (for tests: a slow reader).
    #[arg(long, default_value_t = 0)]
    slow_us: u64,
    /// Do not subscribe to packets at all, only to the --events types (an
    /// empty subscriber of, say, DATA_RDY for benchmarks).
    #[arg(long)]
    no_packets: bool,
}

/// Packets and bytes of one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowCount {
    pub flow_id: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// What `--json-out` writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Per flow, ordered by flow id.
    pub flows: Vec<FlowCount>,
    pub packets: u64,
    pub bytes: u64,
    /// Other events seen, by type path (`--events`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, u64>,
}

/// Counts per flow id.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<u64, FlowCount>,
    events: BTreeMap<String, u64>,
}

impl FlowTable {
    /// Counts one packet of `len` bytes on `flow_id`.
    pub fn record(&mut self, flow_id: u64, len: usize) {
        let c = self.flows.entry(flow_id).or_insert(FlowCount { flow_id, ..FlowCount::default() });
        c.packets += 1;
        c.bytes += len as u64;
    }

    /// Counts one event of type `path`.
    pub fn record_event(&mut self, path: &str) {
        *self.events.entry(path.to_owned()).or_default() += 1;
    }

    /// The counts, ordered by flow id, with totals.
    pub fn report(&self) -> Report {
        let mut flows: Vec<FlowCount> = self.flows.values().copied().collect();
        flows.sort_by_key(|c| c.flow_id);
        Report {
            packets: flows.iter().map(|c| c.packets).sum(),
            bytes: flows.iter().map(|c| c.bytes).sum(),
            flows,
            events: self.events.clone(),
        }
    }
}

impl Report {
    /// The table printed on exit.
    pub fn render(&self) -> String {
        let mut out = format!("{:>20} {:>12} {:>14}\n", "flow", "packets", "bytes");
        for c in &self.flows {
            out.push_str(&format!("{:>20} {:>12} {:>14}\n", c.flow_id, c.packets, c.bytes));
        }
        out.push_str(&format!("{:>20} {:>12} {:>14}\n", "total", self.packets, self.bytes));
        for (ty, n) in &self.events {
            out.push_str(&format!("{ty:>20} {n:>12} events\n"));
        }
        out
    }
}

/// What the counter subscribes to beyond all of `PKT`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Flow filter on ports (empty: every flow).
    pub ports: Vec<u16>,
    /// Further event types to count.
    pub events: Vec<String>,
    /// Busy-wait per packet event.
    pub slow: Duration,
    /// Skip the `PKT` subscription.
    pub no_packets: bool,
}

/// The counter NF on top of `builder` (which carries the name and socket):
/// a read-only `PKT` subscription (filtered by `opts.ports`) recording into
/// `table`, plus one per `opts.events` type.
pub fn counter_nf(builder: NfBuilder, table: Arc<Mutex<FlowTable>>, opts: &Options) -> NfBuilder {
    let filter = (!opts.ports.is_empty()).then(|| FlowFilter { ports: opts.ports.clone(), ..FlowFilter::default() });
    let slow = opts.slow;
    let spin = move || {
        if !slow.is_zero() {
            let until = Instant::now() + slow;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    };
    let t = Arc::clone(&table);
    let mut b = builder.version(env!("CARGO_PKG_VERSION")).modifies_packets(false);
    if opts.no_packets {
        return opts.events.iter().fold(b, |b, path| {
            let t = Arc::clone(&table);
            let p = path.clone();
            b.subscribe(path, move |_ev: &Event<'_>| {
                t.lock().unwrap_or_else(|e| e.into_inner()).record_event(&p);
                spin();
                Verdict::Pass
            })
        });
    }
    b = b.subscribe_filtered("PKT", filter, move |ev: &Event<'_>| {
        let len = ev.packet().map_or(0, <[u8]>::len);
        t.lock().unwrap_or_else(|e| e.into_inner()).record(ev.flow_id(), len);
        spin();
        Verdict::Pass
    });
    for path in &opts.events {
        let t = Arc::clone(&table);
        let p = path.clone();
        b = b.subscribe(path, move |_ev: &Event<'_>| {
            t.lock().unwrap_or_else(|e| e.into_inner()).record_event(&p);
            spin();
            Verdict::Pass
        });
    }
    b
}

fn main() -> ExitCode {
    cli::main("counter", run)
}

fn run(args: Args) -> Result<(), Exit> {
    let table = Arc::new(Mutex::new(FlowTable::default()));
    let opts = Options {
        ports: args.ports.clone(),
        events: args.events.clone(),
        slow: Duration::from_micros(args.slow_us),
        no_packets: args.no_packets,
    };
    let builder = counter_nf(args.common.builder(), Arc::clone(&table), &opts);
    let mut nf = cli::connect(builder, &args.common)?;
    tracing::info!("registered as NF {} on {}; Ctrl-C to stop", nf.id(), nf.socket().display());
    let result = cli::run(&mut nf, &args.common);
    let report = table.lock().unwrap_or_else(|e| e.into_inner()).report();
    print!("{}", report.render());
    if let Some(path) = &args.json_out {
        cli::write_json(path, &report)?;
    }
    let totals = nf.totals();
    tracing::info!("{} events, {} passed", totals.events, totals.passed);
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use ubox_shm::event::VERDICT_PASS;
    use ustack::event::{PKT_TCP, PKT_UDP};

    #[test]
    fn table_counts_per_flow_and_renders() {
        let mut t = FlowTable::default();
        t.record(2, 100);
        t.record(1, 60);
        t.record(2, 40);
        let r = t.report();
        assert_eq!(
            r.flows,
            vec![FlowCount { flow_id: 1, packets: 1, bytes: 60 }, FlowCount { flow_id: 2, packets: 2, bytes: 140 }]
        );
        t.record_event("FLOW/ACL_DENY");
        assert_eq!(t.report().events.get("FLOW/ACL_DENY"), Some(&1));
        assert_eq!((r.packets, r.bytes), (3, 200));
        assert!(r.render().contains("total"), "{}", r.render());
    }

    #[test]
    fn counts_what_the_fake_runtime_publishes_and_passes_everything() {
        let mut rt = FakeRuntime::start().unwrap();
        let table = Arc::new(Mutex::new(FlowTable::default()));
        let builder = counter_nf(
            nf_sdk::Nf::builder("counter").socket(rt.socket()).handle_signals(false),
            Arc::clone(&table),
            &Options::default(),
        );
        let mut nf = builder.connect().unwrap();
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());

        let mut expect = FlowTable::default();
        for i in 0..300u64 {
            let flow = i % 7;
            let len = 60 + (i as usize * 13) % 1400;
            let ty = if i % 3 == 0 { PKT_UDP } else { PKT_TCP };
            rt.publish(ty, flow, &vec![i as u8; len]).unwrap();
            expect.record(flow, len);
        }
        let verdicts = rt.wait_verdicts(300, Duration::from_secs(10));
        assert_eq!(verdicts.len(), 300);
        assert!(verdicts.iter().all(|&(_, v)| v == VERDICT_PASS));
        stop.stop();
        let summary = nf.join().unwrap().unwrap();
        assert_eq!((summary.events, summary.passed), (300, 300));
        let report = table.lock().unwrap().report();
        assert_eq!(report, expect.report());

        let path = std::env::temp_dir().join(format!("counter-test-{}.json", std::process::id()));
        cli::write_json(&path, &report).unwrap();
        let back: Report = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, report);
    }
}
