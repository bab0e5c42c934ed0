//! Replays `tests/data/impaired.pcap` through the TCP monitor: real Linux
//! TCP (curl <-> nginx) through an impairment bridge that dropped, reordered
//! and duplicated frames, captured where the bridge handed them to the
//! receivers (made by `scripts/tcp-replay.sh --make-fixture`). One flow GETs
//! `tests/data/impaired.body` (48 KB of random bytes), the other PUTs it.
//! Both must close cleanly and reassemble byte for byte, through holes,
//! late segments and duplicates, with a ring big enough for the whole
//! stream and with one the stream wraps.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// Data segments per side, and how many repeated an earlier one exactly
    /// (same sequence number and length).
    seen: [HashSet<(u32, usize)>; 2],
    exact_dups: [u32; 2],
    /// The most bytes held beyond the frontier at once, per side.
    max_span: [u64; 2],
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
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
fn http_messages(mut s: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
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

/// Replays the capture with rings of `ring` bytes per side.
fn replay(ring: usize) -> Vec<Flow> {
    let path = data("impaired.pcap");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap");
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let cfg = MonitorConfig::default();
    let mut index: HashMap<FlowKey, usize> = HashMap::new();
    let mut flows: Vec<Flow> = Vec::new();
    while let Some(rec) = reader.next_packet() {
        let rec = rec.expect("pcap record");
        let now = u64::try_from(rec.timestamp.as_nanos()).unwrap();
        let mut frame = rec.data.into_owned();
        let Verdict::Forward { flow: Some(fp) } = l3::process(&mut frame, &local) else {
            panic!("every frame of the capture is forwarded TCP")
        };
        assert_eq!(fp.key.proto(), protocol::TCP);
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
    flows
}

/// Checks both flows of one replay; returns the largest span held beyond a
/// hole.
fn check(flows: &[Flow], ring: usize) -> u64 {
    let body = std::fs::read(data("impaired.body")).expect("impaired.body");
    assert_eq!(body.len(), 48 * 1024);
    assert_eq!(flows.len(), 2, "ring {ring}");
    let mut methods = Vec::new();
    for (n, f) in flows.iter().enumerate() {
        let what = format!("flow {n}, ring {ring}");
        assert_eq!(f.conn.phase(), ConnPhase::Closed, "{what}");
        assert_eq!(f.events.first(), Some(&TcpEvent::Syn), "{what}");
        assert_eq!(f.events.iter().filter(|e| **e == TcpEvent::Closed).count(), 1, "{what}");
        assert!(!f.events.iter().any(|e| matches!(e, TcpEvent::OverlapConflict { .. })), "{what}");
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
        let req = http_messages(&f.streams[0]).unwrap_or_else(|e| panic!("{what} request: {e}"));
        let resp = http_messages(&f.streams[1]).unwrap_or_else(|e| panic!("{what} response: {e}"));
        assert_eq!((req.len(), resp.len()), (1, 1), "{what}");
        let (method, path) = req[0].0.split_once(' ').map(|(m, rest)| (m, rest.split(' ').next().unwrap())).unwrap();
        // The stream carrying the file: the response to a GET, the request
        // of a PUT. It went through holes, late and duplicated segments.
        let side = match method {
            "GET" => {
                assert_eq!(path, "/impaired.body", "{what}");
                assert!(resp[0].0.starts_with("HTTP/1.1 200 "), "{what}: {}", resp[0].0);
                assert!(req[0].1.is_empty(), "{what}");
                assert!(resp[0].1 == body, "{what}: the GET response body differs from impaired.body");
                Side::Server
            }
            "PUT" => {
                assert!(path.starts_with("/up/"), "{what}: {path}");
                assert!(resp[0].0.starts_with("HTTP/1.1 201 "), "{what}: {}", resp[0].0);
                assert!(req[0].1 == body, "{what}: the PUT request body differs from impaired.body");
                Side::Client
            }
            m => panic!("{what}: method {m}"),
        };
        methods.push(method.to_string());
        let i = idx(side);
        assert!(f.conn.counters(side).retransmits > 0, "{what}: no retransmitted data in the capture");
        assert!(f.exact_dups[i] > 0, "{what}: no duplicated segment in the capture");
        assert!(f.reasm[i].counters().out_of_order > 0, "{what}: no hole in the capture");
    }
    methods.sort();
    assert_eq!(methods, ["GET", "PUT"]);
    flows.iter().flat_map(|f| f.max_span).max().unwrap()
}

#[test]
fn impaired_pcap_reassembles_byte_for_byte() {
    // A ring larger than the streams: no wrap.
    let span = check(&replay(256 * 1024), 256 * 1024);
    // A ring the 48 KB streams wrap; it must still hold the most bytes ever
    // held beyond a hole (if a regenerated capture holds more, raise it).
    let small = 32 * 1024;
    assert!(span < small as u64, "this capture holds {span} bytes beyond a hole; the small ring is {small}");
    check(&replay(small), small);
}
