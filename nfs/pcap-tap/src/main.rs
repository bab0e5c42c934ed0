//! `pcap-tap`: a sample ubox NF that writes the packets it is given to a
//! pcap file.
//!
//! Subscribes to `PKT` read-only and answers `Pass` for every packet, after
//! appending it to `--out FILE`: a classic pcap (version 2.4, microsecond
//! timestamps, linktype Ethernet, snaplen 262144) that tcpdump and
//! Wireshark open. The timestamp is the time the tap received the packet.
//! Frames longer than the snaplen are cut to it (the record keeps their
//! original length).
//!
//! The file is bounded with `--max-packets N`: after N packets the tap
//! stops writing and only counts what it skipped. A write error never
//! stops the NF nor changes a verdict: it is reported once on stderr, the
//! tap stops writing (the file may end in a partial record) and counts the
//! rest as skipped. The output is buffered and flushed on exit (SIGINT,
//! SIGTERM, or the runtime going away); a `kill -9` loses what was still
//! buffered.
//!
//! On exit it prints packets written and skipped and, with
//! `--json-out FILE`, writes:
//!
//! ```text
//! {"out":"tap.pcap","written":10,"bytes":1540,"skipped":0,"no_packet":0,"write_errors":0,"first_error":null}
//! ```
//!
//! and exits with status 1 if a write error made the capture incomplete.
//!
//! ```text
//! pcap-tap --out FILE [--max-packets N] [--instance NAME | --socket PATH] [--json-out FILE] [--name NAME]
//!          [--reconnect]
//! ```
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, NfBuilder, Verdict};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, PcapError};
use serde::{Deserialize, Serialize};

/// Largest number of bytes of one frame written (tcpdump's default).
pub const SNAPLEN: u32 = 262_144;

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: write every packet to a pcap file (read-only, passes everything)")]
struct Args {
    /// The pcap file to write (created or truncated).
    #[arg(long)]
    out: PathBuf,
    /// Stop writing after this many packets (default: unlimited); later ones are counted as skipped.
    #[arg(long)]
    max_packets: Option<u64>,
    #[command(flatten)]
    common: Common,
    /// Write the counts as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// What `--json-out` writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The pcap file.
    pub out: String,
    /// Packets written, and their bytes (as captured, after the snaplen).
    pub written: u64,
    pub bytes: u64,
    /// Packets not written: past `--max-packets`, or after a write error.
    pub skipped: u64,
    /// Events that carried no packet (nothing to write).
    pub no_packet: u64,
    /// Failed writes (including the final flush).
    pub write_errors: u64,
    /// The first write error, as reported on stderr.
    pub first_error: Option<String>,
}

impl Report {
    /// The lines printed on exit.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: {} packets written ({} bytes), {} skipped, {} without packet\n",
            self.out, self.written, self.bytes, self.skipped, self.no_packet
        );
        if let Some(e) = &self.first_error {
            out.push_str(&format!("{} write errors; first: {e}\n", self.write_errors));
        }
        out
    }
}

/// The pcap writer and its counters.
pub struct Tap<W: Write> {
    writer: Option<PcapWriter<W>>,
    max_packets: Option<u64>,
    report: Report,
}

impl<W: Write> Tap<W> {
    /// Starts a capture on `w` (the pcap header is written at once), named
    /// `name` in reports, writing at most `max_packets` packets.
    pub fn new(w: W, name: &str, max_packets: Option<u64>) -> io::Result<Tap<W>> {
        let header = PcapHeader { snaplen: SNAPLEN, datalink: DataLink::ETHERNET, ..PcapHeader::default() };
        let writer = PcapWriter::with_header(w, header).map_err(io_error)?;
        Ok(Tap { writer: Some(writer), max_packets, report: Report { out: name.to_owned(), ..Report::default() } })
    }

    /// Appends one frame received at `ts` (since the Unix epoch), unless the
    /// bound is reached or writing failed before. Never fails.
    pub fn record(&mut self, frame: &[u8], ts: Duration) {
        if frame.is_empty() {
            self.report.no_packet += 1;
            return;
        }
        let full = self.max_packets.is_some_and(|m| self.report.written >= m);
        let Some(w) = self.writer.as_mut().filter(|_| !full) else {
            self.report.skipped += 1;
            return;
        };
        let data = &frame[..frame.len().min(SNAPLEN as usize)];
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        match w.write_packet(&PcapPacket::new(ts, orig_len, data)) {
            Ok(_) => {
                self.report.written += 1;
                self.report.bytes += data.len() as u64;
            }
            Err(e) => {
                // The record may be half written: stop here rather than
                // append after garbage.
                self.writer = None;
                self.report.skipped += 1;
                let e = io_error(e);
                self.error(format!("writing packet {}: {e}; not writing any more", self.report.written + 1));
            }
        }
    }

    fn error(&mut self, msg: String) {
        self.report.write_errors += 1;
        if self.report.first_error.is_none() {
            tracing::error!("{}: {msg}", self.report.out);
            self.report.first_error = Some(msg);
        }
    }

    /// Flushes and closes the capture; later packets count as skipped.
    /// Gives the writer back when it is still good.
    pub fn finish(&mut self) -> Option<W> {
        let mut w = self.writer.take()?.into_writer();
        match w.flush() {
            Ok(()) => Some(w),
            Err(e) => {
                self.error(format!("flushing: {e}"));
                None
            }
        }
    }

    /// The counters so far.
    pub fn report(&self) -> &Report {
        &self.report
    }
}

/// A pcap-file error as an I/O error: the I/O cause itself when there is
/// one (its own message is only "Error reading bytes").
fn io_error(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

/// Now, since the Unix epoch (zero if the clock is before it).
fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The tap NF on top of `builder`: one read-only `PKT` subscription
/// recording into `tap`, always answering `Pass`.
pub fn tap_nf<W: Write + Send + 'static>(builder: NfBuilder, tap: Arc<Mutex<Tap<W>>>) -> NfBuilder {
    builder.version(env!("CARGO_PKG_VERSION")).modifies_packets(false).subscribe("PKT", move |ev: &Event<'_>| {
        let ts = now();
        tap.lock().unwrap_or_else(|e| e.into_inner()).record(ev.packet().unwrap_or_default(), ts);
        Verdict::Pass
    })
}

fn main() -> ExitCode {
    cli::main("pcap-tap", run)
}

fn run(args: Args) -> Result<(), Exit> {
    let name = args.out.display().to_string();
    let file = File::create(&args.out).with_context(|| format!("creating --out {name}"))?;
    let tap = Tap::new(BufWriter::with_capacity(256 * 1024, file), &name, args.max_packets)
        .with_context(|| format!("writing the pcap header to {name}"))?;
    let tap = Arc::new(Mutex::new(tap));
    let mut nf = cli::connect(tap_nf(args.common.builder(), Arc::clone(&tap)), &args.common)?;
    tracing::info!("writing to {name}; registered as NF {} on {}; Ctrl-C to stop", nf.id(), nf.socket().display());
    let result = cli::run(&mut nf, &args.common);
    let report = {
        let mut tap = tap.lock().unwrap_or_else(|e| e.into_inner());
        tap.finish();
        tap.report().clone()
    };
    print!("{}", report.render());
    if let Some(path) = &args.json_out {
        cli::write_json(path, &report)?;
    }
    result?;
    if let Some(e) = &report.first_error {
        return Err(Exit::Failed(format!("the capture in {name} is incomplete: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::Nf;
    use pcap_file::pcap::PcapReader;
    use std::path::Path;
    use std::time::Instant;
    use ubox_shm::event::VERDICT_PASS;
    use ustack::event::{PKT, PKT_TCP, PKT_UDP};

    /// Ethernet / IPv4 / UDP frame `i`, `len` bytes long (at least 42).
    fn frame(i: u32, len: usize) -> Vec<u8> {
        let len = len.max(42);
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let ip_len = (len - 14) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&ip_len.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&(1000 + (i % 1000) as u16).to_be_bytes());
        f.extend_from_slice(&53u16.to_be_bytes());
        f.extend_from_slice(&(ip_len - 20).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..len - 42).map(|j| (i as usize * 31 + j * 7) as u8));
        f
    }

    /// The packets of a pcap, in order, with its header.
    fn read_back(bytes: &[u8]) -> (PcapHeader, Vec<(Duration, u32, Vec<u8>)>) {
        let mut r = PcapReader::new(bytes).unwrap();
        let header = r.header();
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            out.push((p.timestamp, p.orig_len, p.data.into_owned()));
        }
        (header, out)
    }

    fn tcpdump() -> Option<&'static str> {
        ["/usr/sbin/tcpdump", "/usr/bin/tcpdump"].into_iter().find(|p| Path::new(p).exists())
    }

    #[test]
    fn tap_writes_bounds_and_truncates() {
        let mut tap = Tap::new(Vec::new(), "mem", Some(3)).unwrap();
        let ts = Duration::new(1_700_000_000, 123_456_000);
        tap.record(&frame(0, 60), ts);
        tap.record(&[], ts);
        let jumbo = vec![0xee; SNAPLEN as usize + 10];
        tap.record(&jumbo, ts);
        tap.record(&frame(2, 100), ts);
        tap.record(&frame(3, 100), ts);
        tap.record(&frame(4, 100), ts);
        let r = tap.report().clone();
        assert_eq!((r.written, r.skipped, r.no_packet, r.write_errors), (3, 2, 1, 0));
        assert_eq!(r.bytes, 60 + u64::from(SNAPLEN) + 100);
        let bytes = tap.finish().unwrap();
        // pcap-file's checked reader refuses a record whose original length
        // exceeds the snaplen (libpcap, tcpdump and Wireshark accept it), so
        // read the raw records here.
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert_eq!((r.header().datalink, r.header().snaplen), (DataLink::ETHERNET, SNAPLEN));
        let mut pkts = Vec::new();
        while let Some(p) = r.next_raw_packet() {
            let p = p.unwrap();
            pkts.push((p.ts_sec, p.ts_frac, p.incl_len, p.orig_len, p.data.into_owned()));
        }
        assert_eq!(pkts.len(), 3);
        assert_eq!(pkts[0], (1_700_000_000, 123_456, 60, 60, frame(0, 60)));
        assert_eq!((pkts[1].2, pkts[1].3, pkts[1].4.len()), (SNAPLEN, SNAPLEN + 10, SNAPLEN as usize));
        assert_eq!(pkts[2].4, frame(2, 100));
        if let Some(tcpdump) = tcpdump() {
            let path = std::env::temp_dir().join(format!("pcap-tap-trunc-{}.pcap", std::process::id()));
            std::fs::write(&path, &bytes).unwrap();
            let out = std::process::Command::new(tcpdump).arg("-nn").arg("-r").arg(&path).output().unwrap();
            std::fs::remove_file(&path).unwrap();
            assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
        }
        tap.record(&frame(5, 100), ts);
        assert_eq!(tap.report().skipped, 3, "after finish");
    }

    /// Accepts `room` bytes, then fails every write and flush.
    struct Full {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_counted_reported_once_and_never_panic() {
        let mut tap = Tap::new(Full { room: 24 + 2 * (16 + 100) + 50, got: Vec::new() }, "full", None).unwrap();
        for i in 0..10 {
            tap.record(&frame(i, 100), now());
        }
        let r = tap.report().clone();
        assert_eq!((r.written, r.skipped, r.write_errors), (2, 8, 1));
        assert!(r.first_error.as_deref().unwrap().contains("writing packet 3: "), "{:?}", r.first_error);
        assert!(r.render().contains("1 write errors"), "{}", r.render());
        assert!(tap.finish().is_none());

        // A header that does not fit is an error at start.
        assert!(Tap::new(Full { room: 10, got: Vec::new() }, "x", None).is_err());
        // A failing flush counts too.
        let mut tap = Tap::new(BufWriter::new(Full { room: 30, got: Vec::new() }), "buffered", None).unwrap();
        tap.record(&frame(0, 100), now());
        assert!(tap.finish().is_none());
        assert_eq!(tap.report().write_errors, 1);
        assert!(tap.report().first_error.as_deref().unwrap().starts_with("flushing: "));
    }

    #[test]
    fn every_published_frame_is_in_the_pcap_in_order() {
        let mut rt = FakeRuntime::start().unwrap();
        let path = std::env::temp_dir().join(format!("pcap-tap-test-{}.pcap", std::process::id()));
        let file = BufWriter::new(File::create(&path).unwrap());
        let tap = Arc::new(Mutex::new(Tap::new(file, "test", None).unwrap()));
        let builder = tap_nf(Nf::builder("pcap-tap").socket(rt.socket()).handle_signals(false), Arc::clone(&tap));
        let mut nf = builder.connect().unwrap();
        assert_eq!(rt.manifest().unwrap().subscriptions[0].event, "PKT");
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());

        let t0 = now();
        let n = 500u32;
        let mut sent = Vec::new();
        for i in 0..n {
            let f = frame(i, 42 + (i as usize * 97) % 9000);
            let ty = [PKT_TCP, PKT_UDP, PKT][i as usize % 3];
            rt.publish(ty, u64::from(i % 7), &f).unwrap();
            sent.push(f);
            if i % 50 == 49 {
                let v = rt.wait_verdicts(50, Duration::from_secs(10));
                assert_eq!(v.len(), 50);
                assert!(v.iter().all(|&(_, v)| v == VERDICT_PASS));
            }
        }
        stop.stop();
        let summary = nf.join().unwrap().unwrap();
        assert_eq!((summary.events, summary.passed), (u64::from(n), u64::from(n)));
        let t1 = now();
        let report = {
            let mut tap = tap.lock().unwrap();
            assert!(tap.finish().is_some());
            tap.report().clone()
        };
        assert_eq!((report.written, report.skipped, report.write_errors), (u64::from(n), 0, 0));
        assert_eq!(report.bytes, sent.iter().map(|f| f.len() as u64).sum::<u64>());

        let (header, pkts) = read_back(&std::fs::read(&path).unwrap());
        assert_eq!(header.datalink, DataLink::ETHERNET);
        assert_eq!(pkts.len(), sent.len());
        let mut last = Duration::ZERO;
        for (i, ((ts, orig, data), want)) in pkts.iter().zip(&sent).enumerate() {
            assert_eq!(data, want, "packet {i}");
            assert_eq!(*orig as usize, want.len());
            // Microsecond resolution: compare at that grain.
            assert!(ts.as_micros() >= t0.as_micros() && ts.as_micros() <= t1.as_micros(), "packet {i} at {ts:?}");
            assert!(*ts >= last, "timestamps in order");
            last = *ts;
        }

        if let Some(tcpdump) = tcpdump() {
            let started = Instant::now();
            let out = std::process::Command::new(tcpdump).arg("-nn").arg("-r").arg(&path).output().unwrap();
            assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            assert_eq!(lines, n as usize, "one line per packet");
            assert!(started.elapsed() < Duration::from_secs(30));
        } else {
            eprintln!("tcpdump not found; skipped reading the capture with it");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
