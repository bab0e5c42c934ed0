//! `ids`: a sample ubox NF that finds signatures in reassembled TCP
//! bytestreams.
//!
//! It subscribes to `DATA_RDY` (both sides; the runtime's TCP monitor then
//! reassembles them) and to `FLOW/TCP` and `FLOW/END` (to forget flows). All
//! signature contents go into one Aho-Corasick automaton, built once. Each
//! side of a flow is scanned as one continuous stream across `DATA_RDY`
//! events: the last `longest - 1` bytes of a side are carried over to the
//! next event, so a content split across segments (or across the ring's
//! end) is found, and a match is reported once per occurrence, keyed by
//! its end offset in the stream (see `engine.rs`). It never holds packets:
//! `DATA_RDY` events are notifications, answered `Pass`.
//!
//! For every match it
//! - prints one line to stderr:
//!   `ids: ALERT rule=evil-cmd action=alert flow=12 worker=0 side=client offset=1234`;
//! - publishes `FLOW/ALERT` (declared by this NF) about the flow and side,
//!   with an [`IdsAlert`] payload (rule index, side, end offset);
//! - for `terminate` rules (all rules with `--terminate`), publishes
//!   `FLOW/TCP/TERMINATE` once per flow: the runtime resets both ends and
//!   drops the flow's later packets.
//!
//! On exit (SIGINT/SIGTERM, or the runtime going away) it prints a summary
//! and, with `--json-out FILE`, writes:
//!
//! ```text
//! {"alerts":[{"flow_id":3,"rule":"evil-cmd","side":"client","offset":1234}],
//!  "events":42,"bytes_scanned":65536, "alerts_total":1,"terminations":0,...}
//! ```
//!
//! `events` counts every event the NF got; `bytes_scanned` the stream bytes
//! scanned (each byte once). At most 100 000 alerts are kept for the JSON
//! file; `alerts_total` counts them all.
//!
//! ```text
//! ids --rules FILE [--terminate] [--max-flows N] [--instance NAME | --socket PATH]
//!     [--name NAME] [--json-out FILE] [--reconnect] [--check]
//! ```
//!
//! With `--reconnect`, when it registers again (the runtime restarted or
//! dropped it) it forgets the flows it was scanning (a new runtime numbers
//! flows anew) and keeps its alerts and counters.
//!
//! # Signatures
//!
//! One per line; blank lines and lines starting with `#` are ignored, and a
//! `#` after the content starts a comment:
//!
//! ```text
//! alert|terminate  NAME  client|server|any  "CONTENT"
//! ```
//!
//! - NAME: 1 to 64 letters, digits, `-`, `_`, `.`, `:`; unique in the file.
//! - side: `client` scans the bytes the client sends, `server` those the
//!   server sends, `any` both.
//! - CONTENT: text with Snort-style `|hex|` blocks (`"evil|0d 0a|cmd"`,
//!   `"|47 45 54|"`); `\"`, `\\` and `\|` escape those characters. 1 to
//!   1024 bytes, matched case-sensitively anywhere in the stream.
//!
//! ```text
//! # shell download over HTTP
//! alert     wget-sh   client "wget http://"
//! terminate bin-sh    any    "|2f 62 69 6e 2f 73 68|"   # /bin/sh
//! alert     crlf-cmd  client "evil|0d 0a|cmd"
//! ```
//!
//! A bad line stops the NF before it registers, with one line on stderr
//! naming the file, the line number and what is wrong, and exit code 2.
//! `--check` prints the parsed signatures (in the file's syntax) and exits.
//!
//! # Bounds
//!
//! State is kept per flow (both sides' carry, at most 2 x 1023 bytes, and
//! scan offsets) for at most `--max-flows` flows (default 65536); past that
//! the oldest flow is forgotten (FIFO), losing only its carry. Flows are
//! forgotten on `FLOW/TCP/CLOSED`, `FLOW/TCP/RST`, `FLOW/TCP/TIMEOUT` and
//! `FLOW/END`; a side's carry is freed after its last `DATA_RDY`
//! (reassembly stopped).
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

#![forbid(unsafe_code)]

mod engine;
mod rules;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::Parser;
use engine::{Engine, Scan};
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, EventError, NfBuilder, Side, Verdict, MAX_PUBLISH_PER_EVENT};
use rules::{Action, RuleSet};
use serde::Serialize;
use ustack::event::{FLOW_END, FLOW_TCP_CLOSED, FLOW_TCP_RST, FLOW_TCP_SYN, FLOW_TCP_TIMEOUT};

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: signature IDS over reassembled TCP bytestreams")]
struct Args {
    /// Signatures file: `alert|terminate NAME client|server|any "CONTENT"` per line.
    #[arg(long)]
    rules: PathBuf,
    /// Treat every signature as `terminate` (reset the flow on any match).
    #[arg(long)]
    terminate: bool,
    /// Most flows with matching state; the oldest is forgotten past it.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    max_flows: u64,
    #[command(flatten)]
    common: Common,
    /// Write the alerts and counters as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Only check the signatures file, print the signatures and exit.
    #[arg(long)]
    check: bool,
}

/// The event type the IDS declares and publishes for every match.
pub const ALERT_EVENT: &str = "FLOW/ALERT";
/// The builtin stack action it publishes for `terminate` signatures.
pub const TERMINATE_EVENT: &str = "FLOW/TCP/TERMINATE";
/// Alerts kept for `--json-out` (all are counted).
const MAX_ALERTS_KEPT: usize = 100_000;

/// Payload of [`ALERT_EVENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, nf_sdk::bytemuck::Pod, nf_sdk::bytemuck::Zeroable)]
#[bytemuck(crate = "nf_sdk::bytemuck")]
#[repr(C)]
pub struct IdsAlert {
    /// Index of the signature in the file (0 = first signature line).
    pub rule: u32,
    /// 0 client, 1 server (`ubox_shm::event::SIDE_*`).
    pub side: u8,
    pub _pad: [u8; 3],
    /// Stream offset just past the match's last byte.
    pub offset: u64,
}

/// One alert in the JSON report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    pub flow_id: u64,
    pub rule: String,
    pub side: &'static str,
    pub offset: u64,
}

/// What `--json-out` writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub alerts: Vec<AlertRecord>,
    /// Every event the NF got (`DATA_RDY`, `FLOW/TCP/...`, `FLOW/END`).
    pub events: u64,
    pub bytes_scanned: u64,
    pub alerts_total: u64,
    /// `DATA_RDY` events.
    pub data_events: u64,
    /// `FLOW/TCP/TERMINATE` published.
    pub terminations: u64,
    /// Alerts or terminations that could not be published (per-event limit,
    /// no free slot): still printed and listed.
    pub publish_failed: u64,
    /// `DATA_RDY` events whose bytes could not be read (a runtime bug).
    pub read_errors: u64,
    /// Events starting past the scanned offset (carry dropped).
    pub gaps: u64,
    /// Flows forgotten to stay under `--max-flows`.
    pub flows_evicted: u64,
}

/// The IDS: the matching engine plus what it reported.
#[derive(Debug)]
pub struct Ids {
    rules: Arc<RuleSet>,
    force_terminate: bool,
    engine: Engine,
    alerts: Vec<AlertRecord>,
    alerts_total: u64,
    events: u64,
    data_events: u64,
    terminations: u64,
    publish_failed: u64,
    read_errors: u64,
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

impl Ids {
    /// An IDS over `rules`, tracking at most `max_flows` flows; with
    /// `force_terminate` every match terminates its flow.
    pub fn new(rules: Arc<RuleSet>, max_flows: usize, force_terminate: bool) -> Ids {
        Ids {
            engine: Engine::new(Arc::clone(&rules), max_flows, force_terminate),
            rules,
            force_terminate,
            alerts: Vec::new(),
            alerts_total: 0,
            events: 0,
            data_events: 0,
            terminations: 0,
            publish_failed: 0,
            read_errors: 0,
        }
    }

    /// Handles one `DATA_RDY`: scans the new bytes, reports the matches.
    fn on_data(&mut self, ev: &Event<'_>) {
        self.events += 1;
        self.data_events += 1;
        let Some(stream) = ev.stream() else {
            self.read_errors += 1;
            return;
        };
        let Ok(bytes) = stream.new_bytes() else {
            self.read_errors += 1; // the next event starts past a gap: the engine drops the carry
            return;
        };
        let flow = (ev.worker(), ev.flow_id());
        let scan = self.engine.scan(flow, ev.side(), stream.new_range().start, bytes, stream.stopped() != 0);
        self.report(ev, &scan);
    }

    /// Prints, records and publishes what a scan found.
    fn report(&mut self, ev: &Event<'_>, scan: &Scan) {
        let side = ev.side();
        // Leave room for the TERMINATE among the events one callback may publish.
        let budget = MAX_PUBLISH_PER_EVENT - usize::from(scan.terminate);
        for (n, hit) in scan.hits.iter().enumerate() {
            let rule = &self.rules.rules()[hit.rule];
            let action = if self.force_terminate || rule.action == Action::Terminate { "terminate" } else { "alert" };
            tracing::warn!(
                "ALERT rule={} action={action} flow={} worker={} side={} offset={}",
                rule.name,
                ev.flow_id(),
                ev.worker(),
                side_name(side),
                hit.end
            );
            self.alerts_total += 1;
            if self.alerts.len() < MAX_ALERTS_KEPT {
                self.alerts.push(AlertRecord {
                    flow_id: ev.flow_id(),
                    rule: rule.name.clone(),
                    side: side_name(side),
                    offset: hit.end,
                });
            }
            let payload = IdsAlert { rule: hit.rule as u32, side: ev.header().side, _pad: [0; 3], offset: hit.end };
            if n >= budget || ev.publish_value(ALERT_EVENT, &payload).is_err() {
                self.publish_failed += 1;
            }
        }
        if scan.terminate {
            match ev.publish(TERMINATE_EVENT, &[]) {
                Ok(()) | Err(EventError::Detached) => self.terminations += 1,
                Err(_) => self.publish_failed += 1,
            }
        }
    }

    /// Handles a `FLOW/TCP/...` or `FLOW/END` event.
    fn on_flow(&mut self, ev: &Event<'_>) {
        self.events += 1;
        // A SYN starts a (possibly reused) connection at stream offset 0.
        if [FLOW_TCP_SYN, FLOW_TCP_CLOSED, FLOW_TCP_RST, FLOW_TCP_TIMEOUT, FLOW_END].iter().any(|&t| ev.is(t)) {
            self.engine.forget((ev.worker(), ev.flow_id()));
        }
    }

    /// Forgets every flow, keeping alerts and counters (see `--reconnect`).
    pub fn forget_flows(&mut self) {
        self.engine.forget_all();
    }

    /// Flows with matching state now.
    pub fn tracked_flows(&self) -> usize {
        self.engine.stats().tracked
    }

    /// The report so far.
    pub fn report_json(&self) -> Report {
        let st = self.engine.stats();
        Report {
            alerts: self.alerts.clone(),
            events: self.events,
            bytes_scanned: st.bytes_scanned,
            alerts_total: self.alerts_total,
            data_events: self.data_events,
            terminations: self.terminations,
            publish_failed: self.publish_failed,
            read_errors: self.read_errors,
            gaps: st.gaps,
            flows_evicted: st.evicted,
        }
    }
}

fn lock(ids: &Mutex<Ids>) -> MutexGuard<'_, Ids> {
    ids.lock().unwrap_or_else(|e| e.into_inner())
}

/// The IDS NF on top of `builder`: `DATA_RDY` feeds the matcher,
/// `FLOW/TCP` and `FLOW/END` forget flows; it declares and publishes
/// [`ALERT_EVENT`] and may publish [`TERMINATE_EVENT`] (a stack action).
/// Registered again (`--reconnect`), it forgets its flows.
pub fn ids_nf(builder: NfBuilder, ids: Arc<Mutex<Ids>>) -> NfBuilder {
    let (data, tcp, end, again) = (Arc::clone(&ids), Arc::clone(&ids), Arc::clone(&ids), ids);
    builder
        .on_reregister(move |_| lock(&again).forget_flows())
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .requests_stack_actions(true)
        .declares(ALERT_EVENT)
        .publishes(ALERT_EVENT)
        .publishes(TERMINATE_EVENT)
        .subscribe("DATA_RDY", move |ev: &Event<'_>| {
            lock(&data).on_data(ev);
            Verdict::Pass // a notification: the runtime ignores the verdict
        })
        .subscribe("FLOW/TCP", move |ev: &Event<'_>| {
            lock(&tcp).on_flow(ev);
            Verdict::Pass
        })
        .subscribe("FLOW/END", move |ev: &Event<'_>| {
            lock(&end).on_flow(ev);
            Verdict::Pass
        })
}

fn main() -> ExitCode {
    cli::main("ids", run)
}

fn run(args: Args) -> Result<(), Exit> {
    // A bad signatures file: one line naming the file and line, status 2.
    let rules = Arc::new(RuleSet::load(&args.rules).map_err(Exit::config)?);
    if args.check {
        for r in rules.rules() {
            println!("{:>6}  {r}", r.line);
        }
        println!("{} signature(s), longest content {} bytes", rules.rules().len(), rules.longest());
        return Ok(());
    }
    let ids = Arc::new(Mutex::new(Ids::new(Arc::clone(&rules), args.max_flows as usize, args.terminate)));
    let mut nf = cli::connect(ids_nf(args.common.builder(), Arc::clone(&ids)), &args.common)?;
    tracing::info!(
        "{} signature(s) from {}{}; registered as NF {} on {}; Ctrl-C to stop",
        rules.rules().len(),
        args.rules.display(),
        if args.terminate { ", all terminating" } else { "" },
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    let report = lock(&ids).report_json();
    if let Some(path) = &args.json_out {
        cli::write_json(path, &report)?;
    }
    tracing::info!(
        "{} events, {} bytes scanned, {} alert(s), {} termination(s), {} publish failure(s)",
        report.events,
        report.bytes_scanned,
        report.alerts_total,
        report.terminations,
        report.publish_failed
    );
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::{Nf, NfError, StopHandle};
    use std::thread::JoinHandle;
    use std::time::Duration;
    use ubox_shm::event::{EventHeader, SIDE_CLIENT, SIDE_SERVER};
    use ustack::event::{FLOW_TCP_ESTABLISHED, FLOW_TCP_TERMINATE};

    const RULES: &str = "\
# test signatures
alert     evil     client \"EVILCMD\"
terminate shell    any    \"|2f 62 69 6e|/sh\"
alert     reply    server \"HTTP/1.1 500\"
";

    struct Harness {
        rt: FakeRuntime,
        ids: Arc<Mutex<Ids>>,
        stop: StopHandle,
        nf: Option<JoinHandle<Result<nf_sdk::RunSummary, NfError>>>,
        alert_type: u64,
        terminate_type: u64,
    }

    impl Harness {
        fn start(rules: &str, force_terminate: bool) -> Harness {
            let rt = FakeRuntime::start().unwrap();
            let rules = Arc::new(RuleSet::parse(rules, "test.rules").unwrap());
            let ids = Arc::new(Mutex::new(Ids::new(rules, 64, force_terminate)));
            let b = ids_nf(Nf::builder("ids").socket(rt.socket()).handle_signals(false), Arc::clone(&ids));
            let mut nf = b.connect().unwrap();
            let pubs = nf.session().publications.clone();
            assert_eq!(pubs.len(), 2);
            assert_eq!(pubs[1], FLOW_TCP_TERMINATE.raw());
            let stop = nf.stop_handle();
            let nf = std::thread::spawn(move || nf.run());
            Harness { rt, ids, stop, nf: Some(nf), alert_type: pubs[0], terminate_type: pubs[1] }
        }

        /// Publishes one DATA_RDY and waits for the NF to answer it.
        fn data(&mut self, side: Side, flow: u64, stream: &[u8], new_from: u64, ring_len: u32) {
            self.rt.publish_stream(side, flow, stream, new_from, ring_len).unwrap();
            assert_eq!(self.rt.wait_verdicts(1, Duration::from_secs(10)).len(), 1);
        }

        fn flow_event(&mut self, ty: nf_sdk::EventTypeId, flow: u64) {
            self.rt.publish(ty, flow, &[]).unwrap();
            assert_eq!(self.rt.wait_verdicts(1, Duration::from_secs(10)).len(), 1);
        }

        /// The ALERT payloads and the number of TERMINATEs published since the last call.
        fn published(&mut self) -> (Vec<(EventHeader, IdsAlert)>, usize) {
            let mut alerts = Vec::new();
            let mut terminates = 0;
            for (h, payload) in self.rt.take_published() {
                if h.type_id == self.alert_type {
                    alerts.push((h, nf_sdk::bytemuck::pod_read_unaligned(&payload[..16])));
                } else if h.type_id == self.terminate_type {
                    terminates += 1;
                } else {
                    panic!("unexpected publication {h:?}");
                }
            }
            (alerts, terminates)
        }

        fn finish(mut self) -> Report {
            self.stop.stop();
            self.nf.take().unwrap().join().unwrap().unwrap();
            let r = lock(&self.ids).report_json();
            r
        }
    }

    fn offsets(alerts: &[(EventHeader, IdsAlert)]) -> Vec<(u64, u32, u8, u64)> {
        alerts.iter().map(|(h, a)| (h.flow_id, a.rule, a.side, a.offset)).collect()
    }

    #[test]
    fn alert_payload_is_16_bytes_without_padding() {
        assert_eq!(std::mem::size_of::<IdsAlert>(), 16);
    }

    #[test]
    fn signature_inside_one_event() {
        let mut h = Harness::start(RULES, false);
        h.data(Side::Client, 1, b"GET /?q=EVILCMD HTTP/1.1\r\n", 0, 4096);
        let (alerts, terminates) = h.published();
        assert_eq!(offsets(&alerts), [(1, 0, SIDE_CLIENT, 15)]);
        assert_eq!(alerts[0].0.side, SIDE_CLIENT);
        assert_eq!(terminates, 0);
        // Client-only signature: not on the server side.
        h.data(Side::Server, 1, b"EVILCMD", 0, 4096);
        assert!(h.published().0.is_empty());
        let r = h.finish();
        assert_eq!(r.alerts, [AlertRecord { flow_id: 1, rule: "evil".into(), side: "client", offset: 15 }]);
        assert_eq!((r.events, r.data_events, r.bytes_scanned, r.alerts_total), (2, 2, 26 + 7, 1));
    }

    #[test]
    fn signature_split_across_two_events() {
        let mut h = Harness::start(RULES, false);
        let stream = b"POST /x HTTP/1.1\r\n\r\nEVILCMD tail";
        let cut = 23; // "EVI" | "LCMD tail"
        h.data(Side::Client, 7, &stream[..cut], 0, 4096);
        assert!(h.published().0.is_empty());
        h.data(Side::Client, 7, stream, cut as u64, 4096);
        assert_eq!(offsets(&h.published().0), [(7, 0, SIDE_CLIENT, 27)]);
        // The same split on another flow is that flow's own stream.
        h.data(Side::Client, 8, b"LCMD", 0, 4096);
        assert!(h.published().0.is_empty());
        let r = h.finish();
        assert_eq!(r.bytes_scanned, stream.len() as u64 + 4);
    }

    #[test]
    fn signature_split_across_the_ring_end() {
        let mut h = Harness::start(RULES, false);
        // A 16-byte ring: stream offsets 8..16 sit at the ring's end, 16..21
        // at its start, and "EVILCMD" (12..19) crosses it.
        let stream = b"aaaaaaaaaaaaEVILCMDzz";
        h.data(Side::Client, 3, stream, 8, 16);
        assert_eq!(offsets(&h.published().0), [(3, 0, SIDE_CLIENT, 19)]);
        // The next two events: "EVI" ends the first (offsets 21..31, ring
        // positions 5..15), "LCMD" starts the second, which wraps again
        // (31..37: ring positions 15, then 0..5).
        let mut longer = stream.to_vec();
        longer.extend_from_slice(b"xxxxxxxEVI");
        h.data(Side::Client, 3, &longer, 21, 16);
        assert!(h.published().0.is_empty());
        longer.extend_from_slice(b"LCMDyy");
        h.data(Side::Client, 3, &longer, 31, 16);
        assert_eq!(offsets(&h.published().0), [(3, 0, SIDE_CLIENT, 35)]);
        h.finish();
    }

    #[test]
    fn found_once_when_later_reads_overlap() {
        let mut h = Harness::start(RULES, false);
        let stream = b"0123456789EVILCMD0123456789abcdef";
        h.data(Side::Client, 5, &stream[..20], 0, 4096);
        assert_eq!(offsets(&h.published().0), [(5, 0, SIDE_CLIENT, 17)]);
        // Re-announced from 10 and from 0: the occurrence ending at 17 is not new.
        h.data(Side::Client, 5, &stream[..26], 10, 4096);
        h.data(Side::Client, 5, stream, 0, 4096);
        assert!(h.published().0.is_empty());
        // A second occurrence further on is.
        let mut more = stream.to_vec();
        more.extend_from_slice(b"EVILCMD");
        h.data(Side::Client, 5, &more, 30, 4096);
        assert_eq!(offsets(&h.published().0), [(5, 0, SIDE_CLIENT, 40)]);
        let r = h.finish();
        assert_eq!(r.alerts_total, 2);
        assert_eq!(r.bytes_scanned, more.len() as u64, "every byte scanned once");
    }

    #[test]
    fn terminate_rule_publishes_terminate_and_alert_once_per_flow() {
        let mut h = Harness::start(RULES, false);
        h.data(Side::Server, 9, b"..../bin/sh....", 0, 4096);
        let (alerts, terminates) = h.published();
        assert_eq!(offsets(&alerts), [(9, 1, SIDE_SERVER, 11)]);
        assert_eq!(alerts[0].0.side, SIDE_SERVER);
        assert_eq!(terminates, 1);
        // A further match on the flow alerts again but terminates no more.
        h.data(Side::Server, 9, b"..../bin/sh..../bin/sh", 15, 4096);
        let (alerts, terminates) = h.published();
        assert_eq!((alerts.len(), terminates), (1, 0));
        // An alert rule does not terminate ...
        h.data(Side::Client, 10, b"EVILCMD", 0, 4096);
        assert_eq!(h.published().1, 0);
        let r = h.finish();
        assert_eq!((r.alerts_total, r.terminations, r.publish_failed), (3, 1, 0));
    }

    #[test]
    fn force_terminate_and_the_publish_limit() {
        let mut h = Harness::start(RULES, true);
        // ... unless --terminate; ten matches in one event: 7 alerts + TERMINATE published.
        h.data(Side::Client, 11, "EVILCMD".repeat(10).as_bytes(), 0, 4096);
        let (alerts, terminates) = h.published();
        assert_eq!((alerts.len(), terminates), (MAX_PUBLISH_PER_EVENT - 1, 1));
        let r = h.finish();
        assert_eq!((r.alerts_total, r.alerts.len(), r.publish_failed), (10, 10, 3));
    }

    #[test]
    fn close_events_forget_flows() {
        let mut h = Harness::start(RULES, false);
        h.data(Side::Client, 1, b"EVI", 0, 4096);
        h.data(Side::Client, 2, b"EVI", 0, 4096);
        h.data(Side::Client, 3, b"EVI", 0, 4096);
        h.data(Side::Client, 4, b"EVI", 0, 4096);
        assert_eq!(lock(&h.ids).tracked_flows(), 4);
        h.flow_event(FLOW_TCP_ESTABLISHED, 1); // not an end
        assert_eq!(lock(&h.ids).tracked_flows(), 4);
        h.flow_event(FLOW_TCP_CLOSED, 1);
        h.flow_event(FLOW_TCP_RST, 2);
        h.flow_event(FLOW_TCP_TIMEOUT, 3);
        h.flow_event(FLOW_END, 4);
        assert_eq!(lock(&h.ids).tracked_flows(), 0);
        let r = h.finish();
        assert_eq!((r.events, r.data_events), (9, 4));
    }

    #[test]
    fn json_report_shape() {
        let rules = Arc::new(RuleSet::parse(RULES, "t").unwrap());
        let mut ids = Ids::new(rules, 4, false);
        ids.alerts.push(AlertRecord { flow_id: 3, rule: "evil".into(), side: "client", offset: 12 });
        ids.events = 5;
        let path = std::env::temp_dir().join(format!("ids-test-{}.json", std::process::id()));
        cli::write_json(&path, &ids.report_json()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(v["alerts"][0], serde_json::json!({"flow_id": 3, "rule": "evil", "side": "client", "offset": 12}));
        assert_eq!((v["events"].as_u64(), v["bytes_scanned"].as_u64()), (Some(5), Some(0)));
    }
}
