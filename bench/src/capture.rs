//! Captures prepared for replay.
//!
//! `net_pcap` loops a capture forever. Replayed as is, a TCP connection is
//! new only on the first pass: on the next, its SYN carries the same ISN
//! and a monitor rightly takes it for an old duplicate, so every later
//! segment is a retransmission of bytes it already reassembled. That is not
//! the work a monitor does on live traffic. [`with_port_reuse`] appends a
//! second copy of the capture whose TCP sequence and acknowledgement
//! numbers are shifted, as if every client reused its port for a new
//! connection: each pass then starts new connections with new data.

use std::path::Path;

use anyhow::Context;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::wire::EthernetAddress;

/// How far the second copy's sequence numbers are moved.
const SHIFT: u32 = 0x4000_0000;

/// Writes `src` followed by its port-reuse copy to `dst`. Returns the
/// number of TCP frames shifted in the copy.
pub fn with_port_reuse(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let read = || -> anyhow::Result<PcapReader<std::fs::File>> {
        let f = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        PcapReader::new(f).with_context(|| format!("reading {}", src.display()))
    };
    let header = read()?.header();
    let out = std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut w = PcapWriter::with_header(out, header).context("writing the pcap header")?;
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let mut shifted = 0;
    for pass in 0..2 {
        let mut r = read()?;
        while let Some(rec) = r.next_packet() {
            let rec = rec.with_context(|| format!("a record of {}", src.display()))?;
            let mut frame = rec.data.into_owned();
            if pass == 1 {
                // l3::process rewrites (TTL); look on a copy, shift the original.
                let mut probe = frame.clone();
                if let Verdict::Forward { flow: Some(f) } = l3::process(&mut probe, &local) {
                    let t = usize::from(f.l4_offset);
                    if f.key.proto() == 6 && frame.len() >= t + 20 && usize::from(f.ip_payload_len) >= 20 {
                        let shift = |b: &mut [u8]| {
                            let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(SHIFT);
                            b.copy_from_slice(&v.to_be_bytes());
                        };
                        shift(&mut frame[t + 4..t + 8]);
                        if frame[t + 13] & 0x10 != 0 {
                            shift(&mut frame[t + 8..t + 12]);
                        }
                        l3::refresh_checksums(&mut frame);
                        shifted += 1;
                    }
                }
            }
            w.write_packet(&PcapPacket::new(rec.timestamp, rec.orig_len, &frame))
                .with_context(|| format!("writing {}", dst.display()))?;
        }
    }
    Ok(shifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(p: &Path) -> Vec<Vec<u8>> {
        let mut r = PcapReader::new(std::fs::File::open(p).unwrap()).unwrap();
        let mut v = Vec::new();
        while let Some(rec) = r.next_packet() {
            v.push(rec.unwrap().data.into_owned());
        }
        v
    }

    #[test]
    fn the_copy_shifts_tcp_sequence_numbers_only() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/http.pcap");
        let dst = std::env::temp_dir().join(format!("ubox-bench-capture-test-{}.pcap", std::process::id()));
        let shifted = with_port_reuse(&src, &dst).unwrap();
        let (a, b) = (records(&src), records(&dst));
        let _ = std::fs::remove_file(&dst);
        assert_eq!(b.len(), 2 * a.len());
        assert_eq!(&b[..a.len()], &a[..], "the first copy is the capture itself");
        assert!(shifted > 1000, "{shifted}");
        let mut changed = 0;
        for (x, y) in a.iter().zip(&b[a.len()..]) {
            assert_eq!(x.len(), y.len());
            if x != y {
                changed += 1;
                // Ethernet + IPv4 (20 bytes here) + TCP: seq at 38..42.
                let seq = |f: &[u8]| u32::from_be_bytes([f[38], f[39], f[40], f[41]]);
                assert_eq!(seq(y), seq(x).wrapping_add(SHIFT));
                // Flags, window, options and payload untouched (the checksum at 50..52 moves).
                assert_eq!((&x[46..50], &x[52..]), (&y[46..50], &y[52..]));
                let mut again = y.clone();
                assert!(l3::refresh_checksums(&mut again));
                assert_eq!(&again, y, "checksums valid");
            }
        }
        assert_eq!(changed, shifted);
    }
}
