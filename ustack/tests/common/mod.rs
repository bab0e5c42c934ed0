//! Shared by the pcap replay tests: feed a capture's TCP frames through one
//! `TcpConn` and two reassemblers per flow, collecting the streams, and
//! split HTTP messages out of them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use ustack::flow::{Direction, FlowKey, Side};
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::tcp::{ConnPhase, MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent};
use ustack::wire::{protocol, EthernetAddress, TcpPacket};

pub struct Flow {
    pub client_dir: Direction,
    pub conn: TcpConn,
    pub reasm: [Reassembler; 2],
    pub rings: [Vec<u8>; 2],
    pub streams: [Vec<u8>; 2],
    pub events: Vec<TcpEvent>,
    /// Data segments per side, and how many repeated an earlier one exactly
    /// (same sequence number and length).
    pub seen: [HashSet<(u32, usize)>; 2],
    pub exact_dups: [u32; 2],
    /// The most bytes held beyond the frontier at once, per side.
    pub max_span: [u64; 2],
}

pub fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// Replays the TCP frames of the capture at `path` with rings of `ring`
/// bytes per side, releasing each range as soon as it is read. Returns the
/// flows in order of appearance and how many TCP frames there were.
pub fn replay(path: &Path, ring: usize) -> (Vec<Flow>, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap");
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let cfg = MonitorConfig::default();
    let mut index: HashMap<FlowKey, usize> = HashMap::new();
    let mut flows: Vec<Flow> = Vec::new();
    let mut packets = 0;
    while let Some(rec) = reader.next_packet() {
        let rec = rec.expect("pcap record");
        let now = u64::try_from(rec.timestamp.as_nanos()).unwrap();
        let mut frame = rec.data.into_owned();
        let Verdict::Forward { flow: Some(fp) } = l3::process(&mut frame, &local) else { continue };
        if fp.key.proto() != protocol::TCP {
            continue;
        }
        packets += 1;
        let l4 = usize::from(fp.l4_offset)..usize::from(fp.l4_offset) + usize::from(fp.ip_payload_len);
        let tcp = TcpPacket::new_checked(&frame[l4]).expect("TCP header");
        let seg = Segment::from_packet(&tcp);
        let n = *index.entry(fp.key).or_insert_with(|| {
            flows.push(Flow {
                client_dir: fp.dir,
                conn: TcpConn::new(),
                reasm: [Reassembler::from_config(&cfg), Reassembler::from_config(&cfg)],
                rings: [vec![0; ring], vec![0; ring]],
                streams: [Vec::new(), Vec::new()],
                events: Vec::new(),
                seen: [HashSet::new(), HashSet::new()],
                exact_dups: [0, 0],
                max_span: [0, 0],
            });
            flows.len() - 1
        });
        let f = &mut flows[n];
        let side = if fp.dir == f.client_dir { Side::Client } else { Side::Server };
        if !tcp.payload().is_empty() && !f.seen[idx(side)].insert((tcp.seq_number(), tcp.payload().len())) {
            f.exact_dups[idx(side)] += 1;
        }
        let [rc, rs] = &mut f.reasm;
        let [gc, gs] = &mut f.rings;
        let streams =
            Streams { client: Some(Stream { reasm: rc, ring: gc }), server: Some(Stream { reasm: rs, ring: gs }) };
        let mut evs = Vec::new();
        f.conn.on_segment(&cfg, &seg, side, now, streams, &mut |e, _| evs.push(e));
        for &e in &evs {
            if let TcpEvent::DataReady { side, start, end } = e {
                let i = idx(side);
                assert_eq!(start, f.streams[i].len() as u64, "ring {ring}");
                let (a, b) = f.reasm[i].reader(&f.rings[i]).read(start..end).expect("fresh bytes are readable");
                f.streams[i].extend_from_slice(a);
                f.streams[i].extend_from_slice(b);
                f.reasm[i].release(end);
            }
        }
        let r = &f.reasm[idx(side)];
        if let Some(last) = r.ooo_ranges().last() {
            f.max_span[idx(side)] = f.max_span[idx(side)].max(last.end - r.frontier());
        }
        f.events.extend(evs);
    }
    (flows, packets)
}

/// A flow that closed cleanly and reassembled both sides completely: one
/// SYN, one Closed, no stop, no holes, no conflicts, everything up to each
/// FIN delivered, nothing out of window.
pub fn assert_complete(f: &Flow, what: &str) {
    assert_eq!(f.conn.phase(), ConnPhase::Closed, "{what}");
    assert_eq!(f.events.first(), Some(&TcpEvent::Syn), "{what}");
    assert_eq!(f.events.iter().filter(|e| **e == TcpEvent::Closed).count(), 1, "{what}");
    for side in [Side::Client, Side::Server] {
        let i = idx(side);
        let r = &f.reasm[i];
        assert_eq!(r.stopped(), None, "{what} {side:?}");
        assert_eq!(r.ooo_len(), 0, "{what} {side:?}: holes left");
        let c = r.counters();
        assert_eq!((c.conflicts, c.ooo_dropped), (0, 0), "{what} {side:?}");
        assert_eq!(r.frontier() + 1, f.conn.stream_end(side), "{what} {side:?}");
        assert_eq!(f.streams[i].len() as u64, r.frontier(), "{what} {side:?}");
        let cc = f.conn.counters(side);
        assert_eq!((cc.out_of_window, cc.rst_ignored, cc.invalid), (0, 0, 0), "{what} {side:?}");
    }
}

/// The value of header `name` (case-insensitive) in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Splits a stream of HTTP messages into (head, body) pairs using
/// Content-Length; fails on anything else.
pub fn http_messages(mut s: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let end = s.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
        let head = std::str::from_utf8(&s[..end]).map_err(|_| "headers not UTF-8")?.to_string();
        let len: usize = match header(&head, "content-length") {
            Some(v) => v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?,
            None => 0,
        };
        let body = &s[end + 4..];
        if body.len() < len {
            return Err(format!("body has {} bytes, Content-Length says {len}", body.len()));
        }
        out.push((head, &body[..len]));
        s = &body[len..];
    }
    Ok(out)
}
