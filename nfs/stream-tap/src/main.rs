//! `stream-tap`: a sample ubox NF that saves each TCP connection's
//! reassembled bytes to files, in the manner of tcpflow.
//!
//! It subscribes to `DATA_RDY` (both sides, or one with `--side`: the
//! runtime's TCP monitor then reassembles them), to `FLOW/TCP` (a SYN
//! starts a connection, FIN/RST/CLOSED/TIMEOUT end it, overlap conflicts
//! and stopped reassembly are noted) and to `FLOW/END` (the five-tuple and
//! how the flow ended). It never holds packets: every event is answered
//! `Pass` after its bytes are written.
//!
//! In `--dir` (made if missing) each connection gets a record id (1, 2, ...,
//! continuing after the highest id already there) and up to two files:
//!
//! ```text
//! 000001-w0-f12.c2s     what the client sent (its reassembled stream)
//! 000001-w0-f12.s2c     what the server sent
//! index.jsonl           one line per connection, appended when it ends
//! ```
//!
//! (`w0-f12`: worker 0, flow 12). An index line (one line in the file):
//!
//! ```text
//! {"id":1,"worker":0,"flow_id":12,"client":"10.10.0.1:40000","server":"10.10.0.11:80",
//!  "start_time":"2024-05-01T12:00:00.123Z","end_time":"2024-05-01T12:00:00.163Z","duration_ms":40,
//!  "end":"tcp_closed","gap":false,"truncated":false,
//!  "c2s":{"file":"000001-w0-f12.c2s","bytes":78,"stream_bytes":78,"not_written":0,"gap_bytes":0,"gaps":0,
//!         "gap_ranges":[],"capped":null,"stopped":null,"conflicts":0,"fin":true,"write_error":null},
//!  "s2c":{...}}
//! ```
//!
//! - `end`: the `FLOW/END` reason (`tcp_closed`, `tcp_reset`,
//!   `tcp_timeout`, `idle`, `evicted`, `shutdown`, `terminated`); for a
//!   record written before its flow ended, the TCP end seen, else
//!   `unfinished` (the tap stopped, or the runtime went away), or
//!   `tap_evicted` (dropped at `--max-flows`). `client` and `server` come
//!   with `FLOW/END` and are null without it.
//! - Per side, `stream_bytes = bytes + not_written + gap_bytes`: `bytes`
//!   are in the file, in stream order; `not_written` were cut by a cap
//!   (`capped`: `max_bytes` or `max_total`) or a write error; `gap_bytes`
//!   the tap never got (`gap_ranges`: `[offset, length]`, the first 16).
//!   `stopped` says the monitor stopped reassembling the side
//!   (`buffer_full`, `no_buffer`, `gap`): the stream ends there.
//! - `gap` is true when a side had a gap or was stopped, `truncated` when
//!   one was capped: then the files are not the whole connection.
//!
//! Bytes the tap missed (a `DATA_RDY` skipped while it was behind, a
//! connection picked up mid-stream) are read back from the stream ring
//! when still there (`bytes_recovered`), else become a gap.
//!
//! # Bounds
//!
//! `--max-bytes` per side of a connection (default 64 MiB),
//! `--max-total` for all files of one run (default 1 GiB), `--max-flows`
//! followed at once (default 65536; past it the flow idle the longest is
//! finished as `tap_evicted`), `--max-open-files` (default 128; past it
//! the least recently written file is closed and later reopened to
//! append). What each bound cut is counted in the report.
//!
//! # Exit
//!
//! On exit (SIGINT/SIGTERM, or the runtime going away) the records still
//! open are written to the index, a summary is printed, and with
//! `--json-out FILE` the counters ([`tap::Report`]) are written as JSON. A
//! directory it cannot create files in stops it before it registers, with
//! one line naming the directory, status 1; so does a write or index error
//! during the run, at the end (the capture is incomplete).
//!
//! ```text
//! stream-tap --dir DIR [--side client|server|both] [--max-bytes SIZE] [--max-total SIZE] [--max-flows N]
//!            [--max-open-files N] [--instance NAME | --socket PATH] [--name NAME] [--json-out FILE] [--reconnect]
//! ```
//!
//! With `--reconnect`, when it registers again it writes out the records
//! it held (as `unfinished`: a new runtime numbers flows anew) and goes on
//! numbering after them.
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

#![forbid(unsafe_code)]

mod tap;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, NfBuilder, Verdict};
use tap::{Chunk, Limits, Tap, TcpKind};
use ustack::event::{
    FLOW_TCP_CLOSED, FLOW_TCP_ESTABLISHED, FLOW_TCP_FIN, FLOW_TCP_OVERLAP_CONFLICT, FLOW_TCP_REASM_STOPPED,
    FLOW_TCP_RST, FLOW_TCP_SYN, FLOW_TCP_TIMEOUT,
};

const LONG_ABOUT: &str = "\
ubox sample NF: save each TCP connection's reassembled bytes to files, in the manner of tcpflow.

It reads the TCP monitor's bytestreams (DATA_RDY) and connection events (FLOW/TCP, FLOW/END) and
writes, in --dir, for each connection, NNNNNN-wW-fF.c2s (what the client sent) and NNNNNN-wW-fF.s2c
(what the server sent), and a line in DIR/index.jsonl when it ends: id, worker and flow id,
client and server address:port, start and end time, how it ended, and per side the file, the
bytes written, the stream's length, and whether a cap, a gap (bytes the tap never got) or a stop
of the monitor's reassembly cut it short. Bytes are written in stream order, each once.

Put it in a chain that matches TCP, e.g.

    [[chain]]
    name = \"tap\"
    nfs = [\"stream-tap\"]
    [chain.match]
    protocol = \"tcp\"

Fail-closed (the default) means the monitor waits for the tap rather than skipping bytes; with a
deep enough stream ring ([monitor] stream_buffer_kb) nothing is missed.";

const AFTER_HELP: &str = "\
SIZE: bytes, or with K, M, G or T (powers of 1024): 65536, 64K, 16M, 1G.
On exit it prints its counters (and writes them to --json-out); status 1 when the directory
could not be written to or a write failed (the capture is incomplete).
See nfs/stream-tap (cargo doc -p stream-tap) and README \"stream-tap\".";

/// Which sides are saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sides {
    /// What clients send (DATA_RDY/CLIENT).
    Client,
    /// What servers send (DATA_RDY/SERVER).
    Server,
    /// Both.
    Both,
}

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: each TCP connection's reassembled bytes to files, with an index (like tcpflow)",
          long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Output directory (made if missing): the connections' files and index.jsonl.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Which sides to save (the monitor reassembles only those).
    #[arg(long, value_enum, default_value_t = Sides::Both)]
    side: Sides,
    /// Most bytes saved per side of a connection; the rest is counted, not written.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    max_bytes: u64,
    /// Most bytes this run writes to all files together.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    max_total: u64,
    /// Most flows followed at once; past it the one idle longest is finished (`tap_evicted`).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    max_flows: u64,
    /// Most files open at once; past it the least recently written is closed (reopened to append).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_open_files: u64,
    #[command(flatten)]
    common: Common,
    /// Write the counters as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// A size: bytes, or with a K, M, G or T suffix (powers of 1024; `KiB`,
/// `MB` and the like read the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let bad = || format!("`{s}`: expected a size in bytes, e.g. 65536, 64K, 16M or 1G");
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match t[digits..].trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("`{s}`: too large"))
}

/// This process's soft limit on open files, from `/proc/self/limits`.
fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Descriptors the NF needs besides its files (control socket, arena, channels, index, logs).
const FDS_RESERVED: u64 = 64;

fn lock(t: &Mutex<Tap>) -> MutexGuard<'_, Tap> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kind of a `FLOW/TCP/...` event.
fn tcp_kind(ev: &Event<'_>) -> TcpKind {
    [
        (FLOW_TCP_SYN, TcpKind::Syn),
        (FLOW_TCP_ESTABLISHED, TcpKind::Established),
        (FLOW_TCP_FIN, TcpKind::Fin),
        (FLOW_TCP_RST, TcpKind::Rst),
        (FLOW_TCP_CLOSED, TcpKind::Closed),
        (FLOW_TCP_TIMEOUT, TcpKind::Timeout),
        (FLOW_TCP_OVERLAP_CONFLICT, TcpKind::Conflict),
        (FLOW_TCP_REASM_STOPPED, TcpKind::ReasmStopped),
    ]
    .into_iter()
    .find(|&(t, _)| ev.is(t))
    .map_or(TcpKind::Other, |(_, k)| k)
}

/// Handles one `DATA_RDY`: the announced bytes (pinned while we run) go
/// to the tap, which may read missed older ones back from the ring.
fn on_data(tap: &mut Tap, ev: &Event<'_>) {
    let Some(stream) = ev.stream() else { return tap.read_error() };
    let Ok(new) = stream.new_bytes() else { return tap.read_error() };
    let key = (ev.worker(), ev.flow_id());
    let read_back = |r| stream.read(r).ok();
    let chunk = Chunk { range: stream.new_range(), bytes: new, stopped: stream.stopped() };
    tap.data(key, ev.side(), chunk, read_back, SystemTime::now());
}

/// The stream-tap NF on top of `builder`: `DATA_RDY` (of `sides`) to
/// files, `FLOW/TCP` and `FLOW/END` for the connections' life and
/// five-tuple. Registered again (`--reconnect`), it writes out the
/// records it held.
pub fn tap_nf(builder: NfBuilder, tap: Arc<Mutex<Tap>>, sides: Sides) -> NfBuilder {
    let data_type = match sides {
        Sides::Both => "DATA_RDY",
        Sides::Client => "DATA_RDY/CLIENT",
        Sides::Server => "DATA_RDY/SERVER",
    };
    let (data, tcp, end, again) = (Arc::clone(&tap), Arc::clone(&tap), Arc::clone(&tap), tap);
    builder
        .on_reregister(move |_| lock(&again).finish_all(SystemTime::now()))
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .subscribe(data_type, move |ev: &Event<'_>| {
            on_data(&mut lock(&data), ev);
            Verdict::Pass // a notification: the runtime ignores the verdict
        })
        .subscribe("FLOW/TCP", move |ev: &Event<'_>| {
            lock(&tcp).tcp((ev.worker(), ev.flow_id()), ev.side(), tcp_kind(ev), SystemTime::now());
            Verdict::Pass
        })
        .subscribe("FLOW/END", move |ev: &Event<'_>| {
            let mut t = lock(&end);
            match ev.flow_end() {
                Some(f) => t.flow_end((ev.worker(), ev.flow_id()), &f, SystemTime::now()),
                None => t.bad_flow_end(),
            }
            Verdict::Pass
        })
}

fn main() -> ExitCode {
    cli::main("stream-tap", run)
}

fn run(args: Args) -> Result<(), Exit> {
    if let Some(limit) = nofile_limit() {
        if args.max_open_files + FDS_RESERVED > limit {
            return Err(Exit::config(format!(
                "--max-open-files {} is more than this process may open: its limit is {limit} files, {FDS_RESERVED} of \
                 them for the NF itself; lower it or raise the limit (ulimit -n, LimitNOFILE= in a unit)",
                args.max_open_files
            )));
        }
    }
    let limits = Limits {
        max_bytes: args.max_bytes,
        max_total: args.max_total,
        max_flows: args.max_flows as usize,
        max_open_files: args.max_open_files as usize,
    };
    let tap = Tap::create(&args.dir, limits)?;
    let first = tap.next_id();
    let tap = Arc::new(Mutex::new(tap));
    let mut nf = cli::connect(tap_nf(args.common.builder(), Arc::clone(&tap), args.side), &args.common)?;
    tracing::info!(
        "saving {} to {} (records from {first}); registered as NF {} on {}; Ctrl-C to stop",
        match args.side {
            Sides::Both => "both sides",
            Sides::Client => "client sides",
            Sides::Server => "server sides",
        },
        args.dir.display(),
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    drop(nf);
    let report = {
        let mut t = lock(&tap);
        t.finish_all(SystemTime::now());
        t.report().clone()
    };
    print!("{}", report.render());
    if let Some(path) = &args.json_out {
        cli::write_json(path, &report)?;
    }
    result?;
    if let Some(e) = &report.first_error {
        return Err(Exit::Failed(format!(
            "the capture in {} is incomplete: {} write error(s), {} index error(s); first: {e}",
            args.dir.display(),
            report.write_errors,
            report.index_errors
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::{FlowEnd, Nf, NfError, Side, StopHandle};
    use std::path::Path;
    use std::thread::JoinHandle;
    use std::time::Duration;
    use ubox_shm::event::{EventHeader, FLOW_END_TCP_CLOSED, SIDE_SERVER, VERDICT_PASS};
    use ustack::event::{EventTypeId, FLOW_END};

    const LIMITS: Limits = Limits { max_bytes: 1 << 30, max_total: 1 << 40, max_flows: 64, max_open_files: 16 };

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("stream-tap-nf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    struct Harness {
        rt: FakeRuntime,
        tap: Arc<Mutex<Tap>>,
        stop: StopHandle,
        nf: Option<JoinHandle<Result<nf_sdk::RunSummary, NfError>>>,
        subscriptions: Vec<String>,
    }

    impl Harness {
        fn start(dir: &Path, sides: Sides) -> Harness {
            let rt = FakeRuntime::start().unwrap();
            let tap = Arc::new(Mutex::new(Tap::create(dir, LIMITS).unwrap()));
            let b =
                tap_nf(Nf::builder("stream-tap").socket(rt.socket()).handle_signals(false), Arc::clone(&tap), sides);
            let nf = b.connect().unwrap();
            assert!(rt.wait_registered(Duration::from_secs(5)));
            let subscriptions = rt.manifest().unwrap().subscriptions.into_iter().map(|s| s.event).collect();
            let stop = nf.stop_handle();
            let mut nf = nf;
            let nf = std::thread::spawn(move || nf.run());
            Harness { rt, tap, stop, nf: Some(nf), subscriptions }
        }

        fn answered(&mut self) {
            let v = self.rt.wait_verdicts(1, Duration::from_secs(10));
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].1, VERDICT_PASS);
        }

        fn data(&mut self, side: Side, flow: u64, stream: &[u8], new_from: u64, ring_len: u32) {
            self.rt.publish_stream(side, flow, stream, new_from, ring_len).unwrap();
            self.answered();
        }

        fn tcp(&mut self, ty: EventTypeId, flow: u64, side: Side) {
            let side = if side == Side::Server { SIDE_SERVER } else { 0 };
            self.rt
                .publish_header(EventHeader { type_id: ty.raw(), flow_id: flow, side, ..EventHeader::default() }, &[])
                .unwrap();
            self.answered();
        }

        fn flow_end(&mut self, flow: u64, f: &FlowEnd) {
            let h = EventHeader { type_id: FLOW_END.raw(), flow_id: flow, ..EventHeader::default() };
            self.rt.publish_payload(h, &f.to_bytes()).unwrap();
            self.answered();
        }

        fn finish(mut self) -> tap::Report {
            self.stop.stop();
            self.nf.take().unwrap().join().unwrap().unwrap();
            let mut t = lock(&self.tap);
            t.finish_all(SystemTime::now());
            t.report().clone()
        }
    }

    fn index(dir: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(tap::INDEX_FILE)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn a_download_through_the_fake_runtime() {
        let dir = temp_dir("download");
        let mut h = Harness::start(&dir, Sides::Both);
        assert_eq!(h.subscriptions, ["DATA_RDY", "FLOW/TCP", "FLOW/END"]);
        let request = b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n";
        let reply: Vec<u8> =
            b"HTTP/1.1 200 OK\r\n\r\n".iter().copied().chain((0..200u8).map(|i| i.wrapping_mul(7))).collect();
        h.tcp(FLOW_TCP_SYN, 4, Side::Client);
        h.tcp(FLOW_TCP_ESTABLISHED, 4, Side::Server);
        h.data(Side::Client, 4, request, 0, 4096);
        // The reply in four events through a 64-byte ring, wrapping it.
        for (from, to) in [(0, 50), (50, 110), (110, 170), (170, reply.len())] {
            h.data(Side::Server, 4, &reply[..to], from as u64, 64);
        }
        h.tcp(FLOW_TCP_FIN, 4, Side::Server);
        h.tcp(FLOW_TCP_FIN, 4, Side::Client);
        h.tcp(FLOW_TCP_CLOSED, 4, Side::Client);
        let mut f = FlowEnd {
            client_port: 40000,
            server_port: 80,
            proto: 6,
            reason: FLOW_END_TCP_CLOSED,
            ..FlowEnd::default()
        };
        f.client_addr[10..].copy_from_slice(&[0xff, 0xff, 10, 10, 0, 1]);
        f.server_addr[10..].copy_from_slice(&[0xff, 0xff, 10, 10, 0, 11]);
        h.flow_end(4, &f);
        let r = h.finish();
        assert_eq!(std::fs::read(dir.join("000001-w0-f4.c2s")).unwrap(), request);
        assert_eq!(std::fs::read(dir.join("000001-w0-f4.s2c")).unwrap(), reply);
        let lines = index(&dir);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!((l["client"].as_str(), l["server"].as_str()), (Some("10.10.0.1:40000"), Some("10.10.0.11:80")));
        assert_eq!((l["end"].as_str(), l["gap"].as_bool()), (Some("tcp_closed"), Some(false)));
        assert_eq!((l["c2s"]["fin"].as_bool(), l["s2c"]["bytes"].as_u64()), (Some(true), Some(reply.len() as u64)));
        assert_eq!((r.events, r.data_events, r.tcp_events, r.flow_end_events), (11, 5, 5, 1));
        assert_eq!((r.bytes_c2s, r.bytes_s2c, r.gaps, r.read_errors), (request.len() as u64, reply.len() as u64, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missed_range_is_read_back_from_the_ring_or_is_a_gap() {
        let dir = temp_dir("missed");
        let mut h = Harness::start(&dir, Sides::Both);
        let stream: Vec<u8> = (0..50u8).collect();
        h.data(Side::Client, 2, &stream[..10], 0, 4096);
        // 10..20 was never announced to the tap, but the ring holds it.
        h.data(Side::Client, 2, &stream[..30], 20, 4096);
        // 30..40 neither, and a 16-byte ring keeps only 34..50.
        h.data(Side::Client, 2, &stream, 40, 16);
        let r = h.finish();
        let mut want = stream[..30].to_vec();
        want.extend_from_slice(&stream[40..]);
        assert_eq!(std::fs::read(dir.join("000001-w0-f2.c2s")).unwrap(), want);
        let c = &index(&dir)[0]["c2s"];
        assert_eq!(c["gap_ranges"], serde_json::json!([[30, 10]]));
        assert_eq!((r.bytes_recovered, r.gaps, r.gap_bytes, r.unfinished), (10, 1, 10, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_side_subscribes_to_its_data_rdy_only() {
        let dir = temp_dir("side");
        let mut h = Harness::start(&dir, Sides::Server);
        assert_eq!(h.subscriptions, ["DATA_RDY/SERVER", "FLOW/TCP", "FLOW/END"]);
        // A range longer than its ring cannot be read: counted, nothing written.
        h.data(Side::Server, 1, &[7u8; 100], 0, 64);
        let r = h.finish();
        assert_eq!((r.read_errors, r.bytes_written, r.connections), (1, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12X").unwrap_err().contains("`12X`: expected a size in bytes"));
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").unwrap_err().contains("too large"));
    }

    #[test]
    fn help_explains_the_files_and_the_bounds() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for want in [".c2s", ".s2c", "index.jsonl", "--max-bytes", "--max-open-files", "[default: 64M]", "SIZE:"] {
            assert!(help.contains(want), "{want} not in the help:\n{help}");
        }
        let a: Args = cli::parse_from("stream-tap", ["stream-tap", "--dir", "d", "--max-total", "2G"]).unwrap();
        assert_eq!(
            (a.max_total, a.max_bytes, a.side, a.common.name.as_str()),
            (2 << 30, 64 << 20, Sides::Both, "stream-tap")
        );
        assert!(cli::parse_from::<Args, _, _>("stream-tap", ["stream-tap"]).is_err(), "--dir is required");
    }

    #[test]
    fn the_open_file_limit_is_read() {
        assert!(nofile_limit().is_some_and(|n| n > 0));
    }
}
