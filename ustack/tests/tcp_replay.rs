//! Replays `bench/data/http.pcap` (79 curl <-> nginx HTTP transfers, 1 KB
//! to 1 MB random bodies) through the TCP monitor: every flow must close
//! cleanly and reassemble without holes, and every server stream must be an
//! HTTP response whose Content-Length matches the body that follows.

use std::collections::HashMap;
use std::path::Path;

use ustack::flow::{Direction, FlowKey, Side};
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::tcp::{ConnPhase, MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent};
use ustack::wire::{protocol, EthernetAddress, TcpPacket};

struct Flow {
    client_dir: Direction,
    conn: TcpConn,
    reasm: [Reassembler; 2],
    rings: [Vec<u8>; 2],
    streams: [Vec<u8>; 2],
    events: Vec<TcpEvent>,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
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
fn http_messages(mut s: &[u8]) -> Result<Vec<(String, usize)>, String> {
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
        s = &body[len..];
        out.push((head, len));
    }
    Ok(out)
}

#[test]
fn http_pcap_reassembles_completely() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/data/http.pcap");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap");
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    // A ring smaller than most responses: it must wrap many times.
    let cfg = MonitorConfig::default();
    let ring = 192 * 1024;
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
            });
            flows.len() - 1
        });
        let f = &mut flows[n];
        let side = if fp.dir == f.client_dir { Side::Client } else { Side::Server };
        let [rc, rs] = &mut f.reasm;
        let [gc, gs] = &mut f.rings;
        let streams =
            Streams { client: Some(Stream { reasm: rc, ring: gc }), server: Some(Stream { reasm: rs, ring: gs }) };
        let mut evs = Vec::new();
        f.conn.on_segment(&cfg, &seg, side, now, streams, &mut |e, _| evs.push(e));
        for &e in &evs {
            if let TcpEvent::DataReady { side, start, end } = e {
                let i = idx(side);
                assert_eq!(start, f.streams[i].len() as u64);
                let (a, b) = f.reasm[i].reader(&f.rings[i]).read(start..end).expect("fresh bytes are readable");
                f.streams[i].extend_from_slice(a);
                f.streams[i].extend_from_slice(b);
                f.reasm[i].release(end);
            }
        }
        f.events.extend(evs);
        packets += 1;
    }
    assert_eq!(packets, 2784);
    assert_eq!(flows.len(), 79);
    let mut body_total = 0;
    for (n, f) in flows.iter().enumerate() {
        assert_eq!(f.conn.phase(), ConnPhase::Closed, "flow {n}");
        assert_eq!(f.events.first(), Some(&TcpEvent::Syn), "flow {n}");
        assert_eq!(f.events.iter().filter(|e| **e == TcpEvent::Closed).count(), 1, "flow {n}");
        for side in [Side::Client, Side::Server] {
            let i = idx(side);
            let r = &f.reasm[i];
            assert_eq!(r.stopped(), None, "flow {n} {side:?}");
            assert_eq!(r.ooo_len(), 0, "flow {n} {side:?}: holes left");
            let c = r.counters();
            assert_eq!((c.conflicts, c.ooo_dropped), (0, 0), "flow {n} {side:?}");
            // Everything up to the FIN arrived.
            assert_eq!(r.frontier() + 1, f.conn.stream_end(side), "flow {n} {side:?}");
            assert_eq!(f.streams[i].len() as u64, r.frontier());
            let cc = f.conn.counters(side);
            assert_eq!((cc.out_of_window, cc.rst_ignored, cc.invalid), (0, 0, 0), "flow {n} {side:?}");
        }
        let req = http_messages(&f.streams[0]).unwrap_or_else(|e| panic!("flow {n} request: {e}"));
        assert_eq!(req.len(), 1);
        assert!(req[0].0.starts_with("GET /"), "flow {n}: {}", req[0].0);
        let resp = http_messages(&f.streams[1]).unwrap_or_else(|e| panic!("flow {n} response: {e}"));
        assert_eq!(resp.len(), 1, "flow {n}");
        assert!(resp[0].0.starts_with("HTTP/1.1 200"), "flow {n}: {}", resp[0].0);
        assert!(resp[0].1 >= 1024, "flow {n}");
        body_total += resp[0].1;
    }
    assert!(body_total > 2_000_000, "{body_total}");
}
