//! `flow-logger`: a sample ubox NF that writes one JSON line per finished
//! flow.
//!
//! It subscribes to `FLOW/END`, which the runtime sends when a flow leaves
//! its flow table (idle timeout, eviction, shutdown, TCP close/reset/timeout,
//! termination), and to `FLOW/TCP/ESTABLISHED`, only so that the runtime
//! runs its TCP monitor on the chain's TCP flows and fills in the payload
//! byte counts (the events themselves are ignored). It never holds packets.
//!
//! Each `FLOW/END` becomes one line, appended to `--out FILE` (created if
//! missing, flushed after every line) or written to stdout:
//!
//! ```text
//! {"client":"10.10.0.1:40000","server":"10.10.0.11:80","proto":"tcp","client_packets":6,"client_bytes":520,
//!  "server_packets":5,"server_bytes":1900,"client_payload":78,"server_payload":1500,"duration_ms":12,"end":"tcp_closed"}
//! ```
//!
//! (one line in the file). Addresses are printed as IPv4 when they are
//! IPv4-mapped, else as `[v6]:port`. `proto` is `tcp`, `udp`, `icmp`,
//! `icmpv6` or the protocol number. `*_payload` are the in-order TCP
//! payload bytes each side sent (0 for flows the monitor did not follow).
//! `duration_ms` is last seen minus first seen. `end` is one of `idle`,
//! `evicted`, `shutdown`, `tcp_closed`, `tcp_reset`, `tcp_timeout`,
//! `terminated` (`unknown` for a reason this version does not know).
//!
//! On exit (SIGINT/SIGTERM, or the runtime going away) it prints how many
//! lines it wrote and, with `--json-out FILE`, writes
//! `{"flows":N,"write_errors":N,"bad_events":N}`. A line that could not be
//! written is counted, reported once on stderr, and makes the exit status 1.
//!
//! ```text
//! flow-logger [--out FILE] [--instance NAME | --socket PATH] [--name NAME] [--json-out FILE] [--reconnect]
//! ```
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, FlowEnd, NfBuilder, Verdict};
use serde::Serialize;
use ubox_shm::event::{
    FLOW_END_EVICTED, FLOW_END_IDLE, FLOW_END_SHUTDOWN, FLOW_END_TCP_CLOSED, FLOW_END_TCP_RESET, FLOW_END_TCP_TIMEOUT,
    FLOW_END_TERMINATED,
};

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: one JSON line per finished flow")]
struct Args {
    /// Append the lines to this file (created if missing); default stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    /// Write the counters as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// One output line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowLine {
    pub client: String,
    pub server: String,
    pub proto: String,
    pub client_packets: u64,
    pub client_bytes: u64,
    pub server_packets: u64,
    pub server_bytes: u64,
    pub client_payload: u64,
    pub server_payload: u64,
    pub duration_ms: u64,
    pub end: &'static str,
}

/// `addr:port`, IPv4-mapped addresses as IPv4.
fn endpoint(addr: [u8; 16], port: u16) -> String {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, port).to_string()
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// The name of a `FlowEnd::reason`.
pub fn end_name(reason: u8) -> &'static str {
    match reason {
        FLOW_END_IDLE => "idle",
        FLOW_END_EVICTED => "evicted",
        FLOW_END_SHUTDOWN => "shutdown",
        FLOW_END_TCP_CLOSED => "tcp_closed",
        FLOW_END_TCP_RESET => "tcp_reset",
        FLOW_END_TCP_TIMEOUT => "tcp_timeout",
        FLOW_END_TERMINATED => "terminated",
        _ => "unknown",
    }
}

impl FlowLine {
    /// The line for one finished flow.
    pub fn new(f: &FlowEnd) -> FlowLine {
        FlowLine {
            client: endpoint(f.client_addr, f.client_port),
            server: endpoint(f.server_addr, f.server_port),
            proto: proto_name(f.proto),
            client_packets: f.client_packets,
            client_bytes: f.client_bytes,
            server_packets: f.server_packets,
            server_bytes: f.server_bytes,
            client_payload: f.client_payload,
            server_payload: f.server_payload,
            duration_ms: f.last_seen.saturating_sub(f.first_seen) / 1_000_000,
            end: end_name(f.reason),
        }
    }
}

/// What `--json-out` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Lines written.
    pub flows: u64,
    /// Lines that could not be written.
    pub write_errors: u64,
    /// `FLOW/END` events without a readable payload (a runtime bug).
    pub bad_events: u64,
}

/// Where the lines go, and what happened to them.
pub struct Logger {
    out: Box<dyn Write + Send>,
    counts: Report,
    first_error: Option<String>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger").field("counts", &self.counts).finish_non_exhaustive()
    }
}

impl Logger {
    /// A logger writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Logger {
        Logger { out, counts: Report::default(), first_error: None }
    }

    /// Writes the line of `f` and flushes.
    pub fn log(&mut self, f: &FlowEnd) {
        let mut line = serde_json::to_string(&FlowLine::new(f)).unwrap_or_default();
        line.push('\n');
        match self.out.write_all(line.as_bytes()).and_then(|()| self.out.flush()) {
            Ok(()) => self.counts.flows += 1,
            Err(e) => {
                self.counts.write_errors += 1;
                if self.first_error.is_none() {
                    tracing::error!("cannot write a flow line: {e}");
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    fn on_end(&mut self, ev: &Event<'_>) {
        match ev.flow_end() {
            Some(f) => self.log(&f),
            None => self.counts.bad_events += 1,
        }
    }

    /// The counters so far.
    pub fn report(&self) -> Report {
        self.counts
    }
}

fn lock(l: &Mutex<Logger>) -> MutexGuard<'_, Logger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens `path` for appending (created if missing).
pub fn open_out(path: &Path) -> anyhow::Result<Box<dyn Write + Send>> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening --out {}", path.display()))?;
    Ok(Box::new(f))
}

/// The logger NF on top of `builder`.
pub fn logger_nf(builder: NfBuilder, logger: Arc<Mutex<Logger>>) -> NfBuilder {
    builder
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .subscribe("FLOW/END", move |ev: &Event<'_>| {
            lock(&logger).on_end(ev);
            Verdict::Pass
        })
        // Only so that the runtime monitors TCP flows (payload byte counts).
        .subscribe("FLOW/TCP/ESTABLISHED", |_: &Event<'_>| Verdict::Pass)
}

fn main() -> ExitCode {
    cli::main("flow-logger", run)
}

fn run(args: Args) -> Result<(), Exit> {
    let out: Box<dyn Write + Send> = match &args.out {
        Some(path) => open_out(path)?,
        None => Box::new(io::stdout()),
    };
    let dest = args.out.as_ref().map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    let logger = Arc::new(Mutex::new(Logger::new(out)));
    let mut nf = cli::connect(logger_nf(args.common.builder(), Arc::clone(&logger)), &args.common)?;
    tracing::info!("logging to {dest}; registered as NF {} on {}; Ctrl-C to stop", nf.id(), nf.socket().display());
    let result = cli::run(&mut nf, &args.common);
    let (report, first_error) = {
        let l = lock(&logger);
        (l.report(), l.first_error.clone())
    };
    tracing::info!("{} flow(s) logged to {dest}", report.flows);
    if let Some(path) = &args.json_out {
        cli::write_json_line(path, &report)?;
    }
    result?;
    if let Some(e) = first_error {
        return Err(Exit::Failed(format!(
            "{} flow line(s) could not be written to {dest} (first: {e})",
            report.write_errors
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::Nf;
    use std::time::Duration;
    use ubox_shm::event::{EventHeader, VERDICT_PASS};
    use ustack::event::{FLOW_END, FLOW_TCP_ESTABLISHED};

    fn mapped(v4: [u8; 4]) -> [u8; 16] {
        std::net::Ipv4Addr::from(v4).to_ipv6_mapped().octets()
    }

    fn tcp_flow() -> FlowEnd {
        FlowEnd {
            client_addr: mapped([10, 10, 0, 1]),
            server_addr: mapped([10, 10, 0, 11]),
            client_port: 40000,
            server_port: 80,
            proto: 6,
            reason: FLOW_END_TCP_CLOSED,
            client_packets: 6,
            client_bytes: 520,
            server_packets: 5,
            server_bytes: 1900,
            client_payload: 78,
            server_payload: 1500,
            first_seen: 5_000_000_000,
            last_seen: 5_012_345_678,
            ..FlowEnd::default()
        }
    }

    const TCP_LINE: &str = "{\"client\":\"10.10.0.1:40000\",\"server\":\"10.10.0.11:80\",\"proto\":\"tcp\",\
\"client_packets\":6,\"client_bytes\":520,\"server_packets\":5,\"server_bytes\":1900,\
\"client_payload\":78,\"server_payload\":1500,\"duration_ms\":12,\"end\":\"tcp_closed\"}";

    #[test]
    fn formats_endpoints_protocols_and_reasons() {
        assert_eq!(serde_json::to_string(&FlowLine::new(&tcp_flow())).unwrap(), TCP_LINE);
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(endpoint(v6.octets(), 53), "[2001:db8::1]:53");
        assert_eq!(endpoint(mapped([192, 0, 2, 1]), 0), "192.0.2.1:0");
        assert_eq!((proto_name(17), proto_name(58), proto_name(47)), ("udp".into(), "icmpv6".into(), "47".into()));
        let names: Vec<&str> = (0..=8).map(end_name).collect();
        assert_eq!(
            names,
            [
                "unknown",
                "idle",
                "evicted",
                "shutdown",
                "tcp_closed",
                "tcp_reset",
                "tcp_timeout",
                "terminated",
                "unknown"
            ]
        );
        // A clock going backwards does not underflow.
        let odd = FlowEnd { first_seen: 10, last_seen: 5, ..tcp_flow() };
        assert_eq!(FlowLine::new(&odd).duration_ms, 0);
    }

    #[test]
    fn logs_flow_end_events_appending_to_the_file() {
        let path = std::env::temp_dir().join(format!("flow-logger-test-{}.jsonl", std::process::id()));
        std::fs::write(&path, "earlier line\n").unwrap();
        let mut rt = FakeRuntime::start().unwrap();
        let logger = Arc::new(Mutex::new(Logger::new(open_out(&path).unwrap())));
        let b = logger_nf(Nf::builder("flow-logger").socket(rt.socket()).handle_signals(false), Arc::clone(&logger));
        let mut nf = b.connect().unwrap();
        // The fake stores the manifest just after answering: wait for it.
        assert!(rt.wait_registered(Duration::from_secs(5)));
        let subs: Vec<String> = rt.manifest().unwrap().subscriptions.into_iter().map(|s| s.event).collect();
        assert_eq!(subs, ["FLOW/END", "FLOW/TCP/ESTABLISHED"]);
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());

        rt.publish(FLOW_TCP_ESTABLISHED, 1, &[]).unwrap();
        let end = |flow_id| EventHeader { type_id: FLOW_END.raw(), flow_id, ..EventHeader::default() };
        rt.publish_payload(end(1), &tcp_flow().to_bytes()).unwrap();
        let udp = FlowEnd {
            client_addr: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
            server_addr: "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
            client_port: 5353,
            server_port: 53,
            proto: 17,
            reason: FLOW_END_IDLE,
            client_packets: 1,
            client_bytes: 80,
            first_seen: 1,
            last_seen: 2_000_000,
            ..FlowEnd::default()
        };
        rt.publish_payload(end(2), &udp.to_bytes()).unwrap();
        let verdicts = rt.wait_verdicts(3, Duration::from_secs(10));
        assert_eq!(verdicts.len(), 3);
        assert!(verdicts.iter().all(|&(_, v)| v == VERDICT_PASS));
        stop.stop();
        nf.join().unwrap().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "earlier line");
        assert_eq!(lines[1], TCP_LINE);
        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"client": "[2001:db8::1]:5353", "server": "[2001:db8::2]:53", "proto": "udp",
                "client_packets": 1, "client_bytes": 80, "server_packets": 0, "server_bytes": 0,
                "client_payload": 0, "server_payload": 0, "duration_ms": 1, "end": "idle"})
        );
        assert_eq!(lock(&logger).report(), Report { flows: 2, write_errors: 0, bad_events: 0 });
    }

    /// A writer that always fails.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_counted() {
        let mut l = Logger::new(Box::new(Broken));
        l.log(&tcp_flow());
        l.log(&tcp_flow());
        assert_eq!(l.report(), Report { flows: 0, write_errors: 2, bad_events: 0 });
        assert_eq!(l.first_error.as_deref(), Some("disk full"));
        let path = std::env::temp_dir().join(format!("flow-logger-report-{}.json", std::process::id()));
        cli::write_json_line(&path, &l.report()).unwrap();
        let back = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, "{\"flows\":0,\"write_errors\":2,\"bad_events\":0}\n");
    }
}
