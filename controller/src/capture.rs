//! Capture on demand (`uboxctl capture`): what to capture, the `--flow`
//! filter syntax, the records the runtime hands out over the control
//! socket, and the pcapng file `uboxctl` writes from them.
//!
//! The runtime copies matching frames (up to the snap length) where their
//! verdict is known and keeps them in a bounded queue; `uboxctl` reads them
//! with [`Request::CaptureRead`](crate::api::Request::CaptureRead) until the
//! capture ends and writes each as a pcapng Enhanced Packet Block whose
//! comment ([`CaptureRecord::comment`]) says which flow, worker, verdict and
//! NF it was.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use ustack::flow::FlowKey;

use crate::registry::Prefix;

/// The `--flow` filter syntax, for `uboxctl capture --help` and errors.
pub const FLOW_SYNTAX: &str = "terms separated by commas or spaces, all of which must hold; each names \
either end of the flow, so both directions of a matching flow are captured: \
`tcp` | `udp` | `icmp` | `proto=N` (IP protocol); `ADDR` or `ADDR/LEN` (an end's address is in it); \
`ADDR:PORT` or `[V6ADDR]:PORT` (an end is that address and port); `:PORT` or `port=PORT` (an end has that port). \
Example: `tcp,10.10.0.11:80`";

/// What a capture takes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CaptureTarget {
    /// Packets of the flows the chain of this name was given.
    Chain { name: String },
    /// Packets of the flows whose chain has this NF in some stage.
    Nf { name: String },
    /// Packets of the flows this `--flow` filter ([`FlowMatch`]) matches,
    /// with a chain or without.
    Flow { filter: String },
}

impl fmt::Display for CaptureTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureTarget::Chain { name } => write!(f, "--chain {name}"),
            CaptureTarget::Nf { name } => write!(f, "--nf {name}"),
            CaptureTarget::Flow { filter } => write!(f, "--flow '{filter}'"),
        }
    }
}

/// A parsed `--flow` filter (see [`FLOW_SYNTAX`]). Every term must match
/// (AND); the default (no term) matches every flow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    proto: Option<u8>,
    prefixes: Vec<Prefix>,
    endpoints: Vec<(IpAddr, u16)>,
    ports: Vec<u16>,
}

/// Why a `--flow` filter was refused; the message names the term and the syntax.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad --flow filter term {term:?}: {why}; the syntax: {FLOW_SYNTAX}")]
pub struct FilterError {
    term: String,
    why: String,
}

impl FromStr for FlowMatch {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<FlowMatch, FilterError> {
        let mut m = FlowMatch::default();
        let terms: Vec<&str> = s.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).collect();
        if terms.is_empty() {
            return Err(FilterError { term: s.to_string(), why: "the filter is empty".into() });
        }
        for t in terms {
            let err = |why: String| FilterError { term: t.to_string(), why };
            let port = |p: &str| p.parse::<u16>().map_err(|_| err(format!("{p:?} is not a port (0-65535)")));
            let proto = match t.to_ascii_lowercase().as_str() {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" | "icmp6" => Some(58),
                _ => None,
            };
            if let Some(p) = proto {
                m.set_proto(p).map_err(err)?;
            } else if let Some(p) = t.strip_prefix("proto=") {
                let p = p.parse::<u8>().map_err(|_| err(format!("{p:?} is not an IP protocol number (0-255)")))?;
                m.set_proto(p).map_err(err)?;
            } else if let Some(p) = t.strip_prefix("port=").or_else(|| t.strip_prefix(':')) {
                m.ports.push(port(p)?);
            } else if let Some(rest) = t.strip_prefix('[') {
                let (a, p) = rest.split_once("]:").ok_or_else(|| err("an IPv6 end is written [ADDR]:PORT".into()))?;
                let a: IpAddr = a.parse().map_err(|_| err(format!("{a:?} is not an IP address")))?;
                m.endpoints.push((a, port(p)?));
            } else if let Some((a, p)) = t.rsplit_once(':').filter(|(a, _)| a.parse::<std::net::Ipv4Addr>().is_ok()) {
                m.endpoints.push((a.parse().expect("checked"), port(p)?));
            } else {
                let p: Prefix = t.parse().map_err(|e: crate::registry::PrefixError| {
                    err(format!("not a protocol, port, address or prefix ({e})"))
                })?;
                m.prefixes.push(p);
            }
        }
        Ok(m)
    }
}

impl FlowMatch {
    fn set_proto(&mut self, p: u8) -> Result<(), String> {
        match self.proto {
            Some(q) if q != p => Err(format!("a flow has one protocol, and {q} was given already")),
            _ => {
                self.proto = Some(p);
                Ok(())
            }
        }
    }

    /// Whether the flow `key` passes every term.
    pub fn matches(&self, key: &FlowKey) -> bool {
        let (lo, hi) = (key.lo(), key.hi());
        self.proto.map_or(true, |p| p == key.proto())
            && self.ports.iter().all(|&p| p == lo.1 || p == hi.1)
            && self.prefixes.iter().all(|p| p.contains(lo.0) || p.contains(hi.0))
            && self.endpoints.iter().all(|&e| e == lo || e == hi)
    }
}

/// What a packet's chain did with it.
pub const VERDICT_PASS: &str = "pass";
pub const VERDICT_DROP: &str = "drop";

/// One captured packet, as the runtime hands it to `uboxctl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureRecord {
    /// When the verdict was known: nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub worker: u32,
    /// The flow-table id of its flow (as in `FLOW/*` events), 0 for none.
    pub flow_id: u64,
    /// `pass` or `drop`.
    pub verdict: String,
    /// The NF that decided: the one that dropped it, or the last one that
    /// passed it; `none` when its chain's NFs took no part (no subscriber,
    /// absent fail-open NFs), `wire` when it had no chain.
    pub nf: String,
    /// Its flow's chain, `-` for none.
    pub chain: String,
    /// For a drop: the reason, as in `uboxctl stats` (`nf_verdict_drop`,
    /// `nf_fail_closed`, ...); empty otherwise.
    #[serde(default)]
    pub reason: String,
    /// The frame's length on the wire; `data` holds at most the snap length of it.
    pub orig_len: u32,
    /// The frame's first bytes, hex.
    pub data: String,
}

impl CaptureRecord {
    /// The pcapng comment: `flow=ID worker=W verdict=V nf=NAME chain=C`
    /// and, for a drop, ` reason=R`.
    pub fn comment(&self) -> String {
        let mut c = format!(
            "flow={} worker={} verdict={} nf={} chain={}",
            self.flow_id, self.worker, self.verdict, self.nf, self.chain
        );
        if !self.reason.is_empty() {
            c.push_str(" reason=");
            c.push_str(&self.reason);
        }
        c
    }
}

/// What one capture counted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureCounts {
    /// Packets copied into the capture queue.
    pub captured: u64,
    /// Matching packets not captured because the queue was full (the
    /// reader fell behind).
    pub dropped_full: u64,
    /// Captured packets cut at the snap length.
    pub truncated: u64,
    /// Bytes captured (after the snap length).
    pub bytes: u64,
}

/// Capture counters of a runtime instance, in `uboxctl stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureStats {
    /// Captures started since the runtime started.
    pub sessions: u64,
    /// A capture is armed now.
    pub active: bool,
    /// Summed over every capture.
    #[serde(flatten)]
    pub counts: CaptureCounts,
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of a hex string, `None` if it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    s.as_bytes().chunks(2).map(|p| Some(d(p[0])? << 4 | d(p[1])?)).collect()
}

/// A pcapng file being written: one section, one Ethernet interface
/// (nanosecond timestamps), an Enhanced Packet Block with a comment per
/// record. Written with the `pcap-file` crate.
pub struct PcapngOut<W: Write> {
    w: pcap_file::pcapng::PcapNgWriter<W>,
}

impl<W: Write> PcapngOut<W> {
    /// Starts the file: its section header and its interface, described by
    /// `description` (what was captured), with `snaplen`.
    pub fn new(out: W, snaplen: u32, description: &str) -> Result<PcapngOut<W>, pcap_file::PcapError> {
        use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
        let mut w = pcap_file::pcapng::PcapNgWriter::new(out)?;
        let idb = InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName("ubox".into()),
                InterfaceDescriptionOption::IfDescription(description.to_string().into()),
                // The crate writes packet timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        w.write_pcapng_block(idb)?;
        Ok(PcapngOut { w })
    }

    /// Appends one record; its data must be hex.
    pub fn write(&mut self, r: &CaptureRecord) -> Result<(), String> {
        use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
        let data = unhex(&r.data).ok_or("a record's data is not hex")?;
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_nanos(r.ts_ns),
            original_len: r.orig_len.max(data.len() as u32),
            data: data.into(),
            options: vec![EnhancedPacketOption::Comment(r.comment().into())],
        };
        self.w.write_pcapng_block(epb).map(|_| ()).map_err(|e| e.to_string())
    }

    pub fn into_inner(self) -> W {
        self.w.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str, ap: u16, b: &str, bp: u16, proto: u8) -> FlowKey {
        FlowKey::new(a.parse().unwrap(), ap, b.parse().unwrap(), bp, proto).0
    }

    #[test]
    fn flow_filters_match_either_direction() {
        let k = key("10.10.0.1", 40000, "10.10.0.11", 80, 6);
        let back = key("10.10.0.11", 80, "10.10.0.1", 40000, 6);
        for f in ["tcp", "10.10.0.11:80", ":80", "port=80", "10.10.0.0/24", "tcp, 10.10.0.1 port=40000", "proto=6"] {
            let m: FlowMatch = f.parse().unwrap();
            assert!(m.matches(&k) && m.matches(&back), "{f}");
        }
        for f in ["udp", "10.10.0.11:81", ":443", "10.10.1.0/24", "tcp 10.10.0.2"] {
            let m: FlowMatch = f.parse().unwrap();
            assert!(!m.matches(&k), "{f}");
        }
        let v6 = key("fd00::1", 5000, "fd00::2", 53, 17);
        assert!("[fd00::2]:53,udp".parse::<FlowMatch>().unwrap().matches(&v6));
        assert!(!"[fd00::2]:54".parse::<FlowMatch>().unwrap().matches(&v6));
    }

    #[test]
    fn bad_filters_name_the_term_and_the_syntax() {
        for (f, want) in [
            ("", "empty"),
            ("tcp,udp", "one protocol"),
            (":99999", "not a port"),
            ("host 10.1.1.1", "\"host\""),
            ("10.10.0.1/33", "longer than 32"),
            ("[fd00::1]", "[ADDR]:PORT"),
            ("proto=x", "protocol number"),
        ] {
            let e = f.parse::<FlowMatch>().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("the syntax"), "{f}: {e}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }

    #[test]
    fn pcapng_has_the_frames_and_their_comments() {
        let r = CaptureRecord {
            ts_ns: 1_700_000_000_123_456_789,
            worker: 1,
            flow_id: 42,
            verdict: VERDICT_DROP.into(),
            nf: "acl-firewall".into(),
            chain: "guarded".into(),
            reason: "nf_verdict_drop".into(),
            orig_len: 1514,
            data: hex(&[0xaa; 60]),
        };
        let mut out = PcapngOut::new(Vec::new(), 128, "--chain guarded").unwrap();
        out.write(&r).unwrap();
        let bytes = out.into_inner();
        let mut rd = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut n = 0;
        while let Some(b) = rd.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                n += 1;
                assert_eq!((p.data.len(), p.original_len), (60, 1514));
                assert_eq!(p.timestamp.as_nanos(), 1_700_000_000_123_456_789);
                let c = format!("{:?}", p.options);
                assert!(
                    c.contains("flow=42 worker=1 verdict=drop nf=acl-firewall chain=guarded reason=nf_verdict_drop"),
                    "{c}"
                );
            }
        }
        assert_eq!(n, 1);
    }
}
