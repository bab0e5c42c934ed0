//! `rewrite`: the sample NF that modifies packets.
//!
//! Subscribes to `PKT/TCP`, finds `--from` in each segment's payload and
//! overwrites it with `--to` (same length) in place, in the arena, then
//! answers `Modified`; the runtime refreshes the IP and TCP checksums
//! before the segment leaves. Its manifest says it modifies packets, so the
//! controller refuses to put it in a parallel group.
//!
//! It works per segment: an occurrence split across two segments is left
//! alone (rewriting the bytestream is the split proxy's job). With
//! `--json-out FILE` it writes `{"segments": N, "rewrites": M}` on exit.
//!
//! ```text
//! rewrite --from BYTES --to BYTES [--instance NAME | --socket PATH] [--name NAME] [--json-out FILE] [--reconnect]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, NfBuilder, Verdict};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: rewrite a byte string in TCP segments in place (same length)")]
struct Args {
    /// Bytes to look for in TCP payloads.
    #[arg(long)]
    from: String,
    /// Replacement, exactly as long as --from.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    common: Common,
    /// Write the counts as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// What the NF did.
#[derive(Debug, Default)]
pub struct Counts {
    /// Segments that had at least one occurrence rewritten.
    pub segments: AtomicU64,
    /// Occurrences rewritten.
    pub rewrites: AtomicU64,
}

#[derive(Serialize)]
struct Report {
    segments: u64,
    rewrites: u64,
}

/// Non-overlapping occurrences of `pat` in `hay`, left to right.
pub fn occurrences(hay: &[u8], pat: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while !pat.is_empty() && i + pat.len() <= hay.len() {
        if &hay[i..i + pat.len()] == pat {
            out.push(i);
            i += pat.len();
        } else {
            i += 1;
        }
    }
    out
}

/// The NF on top of `builder`.
pub fn rewrite_nf(builder: NfBuilder, from: Vec<u8>, to: Vec<u8>, counts: Arc<Counts>) -> NfBuilder {
    builder.version(env!("CARGO_PKG_VERSION")).modifies_packets(true).subscribe("PKT/TCP", move |ev: &Event<'_>| {
        let Some(frame) = ev.packet() else { return Verdict::Pass };
        let Some(range) = ustack::l3::tcp_payload(frame) else { return Verdict::Pass };
        let start = range.start;
        let hits = occurrences(&frame[range], &from);
        if hits.is_empty() {
            return Verdict::Pass;
        }
        for at in &hits {
            if ev.write_packet(start + at, &to).is_err() {
                return Verdict::Pass; // cannot happen for in-range writes of a declared modifier
            }
        }
        counts.segments.fetch_add(1, Ordering::Relaxed);
        counts.rewrites.fetch_add(hits.len() as u64, Ordering::Relaxed);
        Verdict::Modified
    })
}

fn main() -> ExitCode {
    cli::main("rewrite", run)
}

fn run(args: Args) -> Result<(), Exit> {
    if args.from.is_empty() || args.from.len() != args.to.len() {
        return Err(Exit::config(format!(
            "--from and --to must be non-empty and of equal length ({} and {} bytes): segments keep their length",
            args.from.len(),
            args.to.len()
        )));
    }
    let counts = Arc::new(Counts::default());
    let builder = rewrite_nf(
        args.common.builder(),
        args.from.clone().into_bytes(),
        args.to.clone().into_bytes(),
        Arc::clone(&counts),
    );
    let mut nf = cli::connect(builder, &args.common)?;
    tracing::info!("registered as NF {} on {}; Ctrl-C to stop", nf.id(), nf.socket().display());
    let result = cli::run(&mut nf, &args.common);
    let report =
        Report { segments: counts.segments.load(Ordering::Relaxed), rewrites: counts.rewrites.load(Ordering::Relaxed) };
    tracing::info!("{} occurrence(s) rewritten in {} segment(s)", report.rewrites, report.segments);
    if let Some(path) = &args.json_out {
        cli::write_json_line(path, &report)?;
    }
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::Nf;
    use std::time::Duration;
    use ubox_shm::event::{VERDICT_MODIFIED, VERDICT_PASS};
    use ustack::event::PKT_TCP;

    #[test]
    fn occurrences_do_not_overlap() {
        assert_eq!(occurrences(b"aaaa", b"aa"), [0, 2]);
        assert_eq!(occurrences(b"xsecretysecret", b"secret"), [1, 8]);
        assert!(occurrences(b"sec", b"secret").is_empty());
        assert!(occurrences(b"abc", b"").is_empty());
    }

    /// An Ethernet/IPv4/TCP frame carrying `data`.
    fn frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + data.len()) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[14 + 20 + 12] = 5 << 4;
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn rewrites_payload_bytes_in_the_arena_and_answers_modified() {
        let mut rt = FakeRuntime::start().unwrap();
        let counts = Arc::new(Counts::default());
        let b = rewrite_nf(
            Nf::builder("rewrite").socket(rt.socket()).handle_signals(false),
            b"secret".to_vec(),
            b"XXXXXX".to_vec(),
            Arc::clone(&counts),
        );
        let mut nf = b.connect().unwrap();
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());
        let with = frame(b"a secret and another secret");
        let id = rt.publish(PKT_TCP, 1, &with).unwrap();
        let off = rt.packet_offset(id).unwrap();
        rt.publish(PKT_TCP, 1, &frame(b"nothing")).unwrap();
        let v: Vec<u8> = rt.wait_verdicts(2, Duration::from_secs(10)).into_iter().map(|(_, v)| v).collect();
        assert_eq!(v, [VERDICT_MODIFIED, VERDICT_PASS]);
        let after = rt.arena().packet(off, with.len() as u32).unwrap();
        assert_eq!(&after[..54], &with[..54], "headers untouched");
        assert_eq!(&after[54..], b"a XXXXXX and another XXXXXX");
        stop.stop();
        nf.join().unwrap().unwrap();
        assert_eq!((counts.segments.load(Ordering::Relaxed), counts.rewrites.load(Ordering::Relaxed)), (1, 2));
    }
}
