//! Replays `tests/data/impaired.pcap` through the TCP monitor: real Linux
//! TCP (curl <-> nginx) through an impairment bridge that dropped, reordered
//! and duplicated frames, captured where the bridge handed them to the
//! receivers (made by `scripts/tcp-replay.sh --make-fixture`). One flow GETs
//! `tests/data/impaired.body` (48 KB of random bytes), the other PUTs it.
//! Both must close cleanly and reassemble byte for byte, through holes,
//! late segments and duplicates, with a ring big enough for the whole
//! stream and with one the stream wraps.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_complete, http_messages, idx, Flow};
use ustack::flow::Side;
use ustack::tcp::TcpEvent;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Replays the capture with rings of `ring` bytes per side; every frame of
/// it is TCP.
fn replay(ring: usize) -> Vec<Flow> {
    let path = data("impaired.pcap");
    let (flows, packets) = common::replay(&path, ring);
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).expect("capture")).expect("pcap");
    let mut frames = 0;
    while let Some(rec) = reader.next_packet() {
        rec.expect("pcap record");
        frames += 1;
    }
    assert_eq!(packets, frames, "every frame of the capture is TCP");
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
        assert_complete(f, &what);
        assert!(!f.events.iter().any(|e| matches!(e, TcpEvent::OverlapConflict { .. })), "{what}");
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
