//! `ubox-bench l4lb` (issue 11): the `l4lb` NF (nfs/l4lb) on the `net_pcap`
//! replay, against ubox's wire mode on the same capture in the same run.
//!
//! One VIP (10.200.0.1:80) with 100 backends (L2 DSR: the NF rewrites each
//! packet's destination MAC in place), and two captures written here:
//! - **syn**: 20 000 SYNs from distinct clients, so every packet is a new
//!   connection: the NF hashes it onto the Maglev ring and writes its
//!   connection table (65 536 entries per worker: the loop keeps them hot,
//!   the first pass fills them);
//! - **established**: 400 connections of 50 packets each (a SYN, then
//!   ACKs, every other one with 512 bytes of payload), interleaved: after
//!   the first pass every packet is a connection-table hit.
//!
//! Every case runs with `runtime.nf_backpressure`, so every packet visits
//! the NF (an event skipped for any reason fails the scenario). The NF is a
//! real process on the other CPU, the worker on CPU 1 (as `events`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use crate::events::Case;

/// The VIP and its port.
pub const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 200, 0, 1), 80);
/// Backends behind it.
pub const BACKENDS: usize = 100;
/// Connections of the `syn` capture (one SYN each).
pub const SYN_FLOWS: u32 = 20_000;
/// Connections of the `established` capture, and packets of each.
pub const EST_FLOWS: u32 = 400;
pub const EST_PACKETS: u32 = 50;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// The captures and the NF's config, in `dir`.
pub struct Inputs {
    pub syn: PathBuf,
    pub established: PathBuf,
    pub config: PathBuf,
}

/// Writes the two captures and the l4lb config into `dir`.
pub fn write_inputs(dir: &Path) -> anyhow::Result<Inputs> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let inputs = Inputs {
        syn: dir.join("l4lb-syn.pcap"),
        established: dir.join("l4lb-established.pcap"),
        config: dir.join("l4lb.toml"),
    };
    write_pcap(&inputs.syn, (0..SYN_FLOWS).map(|i| frame(client(i), VIP, 1000 + i, 0, SYN, 0)))?;
    let est = (0..EST_PACKETS).flat_map(|p| {
        (0..EST_FLOWS).map(move |i| {
            let (flags, len) = match p {
                0 => (SYN, 0),
                p if p % 2 == 0 => (ACK | PSH, 512),
                _ => (ACK, 0),
            };
            let seq = 5000u32.wrapping_add(p.saturating_sub(1) / 2 * 512 + u32::from(p > 0));
            frame(client(i), VIP, seq, if p == 0 { 0 } else { 9001 }, flags, len)
        })
    });
    write_pcap(&inputs.established, est)?;
    std::fs::write(&inputs.config, config()).with_context(|| format!("writing {}", inputs.config.display()))?;
    Ok(inputs)
}

/// Client `i`'s address and port (distinct 5-tuples, spread over /16s).
fn client(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0x0a00_0000 | ((i / 250) << 8) | (i % 250 + 1)), 10_000 + (i % 50_000) as u16)
}

/// The l4lb config: one VIP, [`BACKENDS`] backends with MACs, DSR.
pub fn config() -> String {
    let mut s = String::from(
        "# ubox-bench l4lb: one VIP, 100 backends, L2 DSR\n[lb]\nmode = \"dsr\"\nhash = \"maglev\"\ntable_capacity = 65536\n\n",
    );
    s.push_str(&format!("[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"tcp\"\n", VIP.0, VIP.1));
    for b in 0..BACKENDS {
        s.push_str(&format!(
            "\n[[vip.backend]]\naddress = \"10.201.{}.{}\"\nmac = \"02:00:0a:c9:{:02x}:{:02x}\"\nweight = 1\nserver_id = {}\n",
            b / 250,
            b % 250 + 1,
            b / 250,
            b % 250 + 1,
            b + 1
        ));
    }
    s
}

/// Ethernet + IPv4 + TCP (20-byte header) + `len` bytes, checksums right.
fn frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, ack: u32, flags: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + len];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (40 + len) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.0.octets());
    f[30..34].copy_from_slice(&dst.0.octets());
    let c = fold(sum(&f[14..34], 0));
    f[24..26].copy_from_slice(&(!c).to_be_bytes());
    f[34..36].copy_from_slice(&src.1.to_be_bytes());
    f[36..38].copy_from_slice(&dst.1.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[46] = 0x50;
    f[47] = flags;
    f[48..50].copy_from_slice(&64240u16.to_be_bytes());
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let pseudo = sum(&f[26..34], u32::from(ip_len - 20) + 6);
    let c = fold(sum(&f[34..], pseudo));
    f[50..52].copy_from_slice(&(!c).to_be_bytes());
    f
}

fn sum(b: &[u8], init: u32) -> u32 {
    b.chunks(2).fold(init, |s, c| s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn write_pcap(path: &Path, frames: impl Iterator<Item = Vec<u8>>) -> anyhow::Result<()> {
    let out = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let header = PcapHeader { datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    let mut w = PcapWriter::with_header(out, header).context("writing the pcap header")?;
    for (i, f) in frames.enumerate() {
        let ts = std::time::Duration::from_micros(i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, &f))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The cases on one capture: wire, then the NF.
pub fn cases(which: &'static str, config: &Path) -> [Case; 2] {
    let (wire, nf): (&'static str, &'static str) = match which {
        "syn" => ("l4lb-syn-wire", "l4lb-syn"),
        _ => ("l4lb-established-wire", "l4lb-established"),
    };
    [
        Case { scenario: wire, label: "wire", stages: vec![], nf: "l4lb", args: vec![], backpressure: true, extra: "" },
        Case {
            scenario: nf,
            label: "l4lb NF",
            stages: vec![vec!["l4lb"]],
            nf: "l4lb",
            args: vec!["--config".into(), config.display().to_string()],
            backpressure: true,
            extra: "",
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_right_checksums_and_the_config_checks() {
        let f = frame((Ipv4Addr::new(10, 0, 0, 1), 1234), VIP, 7, 9, ACK | PSH, 33);
        assert_eq!(fold(sum(&f[14..34], 0)), 0xffff, "IPv4 header checksum");
        let pseudo = sum(&f[26..34], u32::from(f.len() as u16 - 34) + 6);
        assert_eq!(fold(sum(&f[34..], pseudo)), 0xffff, "TCP checksum");
        let c = config();
        assert_eq!(c.matches("[[vip.backend]]").count(), BACKENDS);
        let t: toml::Value = toml::from_str(&c).expect("TOML");
        assert_eq!(t["vip"][0]["backend"].as_array().map(Vec::len), Some(BACKENDS));
        if let Err(e) = l4lb::config::Config::parse(&c, "bench") {
            panic!("the NF refuses the bench's config: {e}");
        }
        // Distinct clients.
        let mut seen = std::collections::HashSet::new();
        assert!((0..SYN_FLOWS).all(|i| seen.insert(client(i))));
    }
}
