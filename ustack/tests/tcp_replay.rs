//! Replays `bench/data/http.pcap` (79 curl <-> nginx HTTP transfers, 1 KB
//! to 1 MB random bodies) through the TCP monitor: every flow must close
//! cleanly and reassemble without holes, and every server stream must be an
//! HTTP response whose Content-Length matches the body that follows.

mod common;

use std::path::Path;

use common::{assert_complete, http_messages, replay};

#[test]
fn http_pcap_reassembles_completely() {
    // A ring smaller than most responses: it must wrap many times.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/data/http.pcap");
    let (flows, packets) = replay(&path, 192 * 1024);
    assert_eq!(packets, 2784);
    assert_eq!(flows.len(), 79);
    let mut body_total = 0;
    for (n, f) in flows.iter().enumerate() {
        assert_complete(f, &format!("flow {n}"));
        let req = http_messages(&f.streams[0]).unwrap_or_else(|e| panic!("flow {n} request: {e}"));
        assert_eq!(req.len(), 1);
        assert!(req[0].0.starts_with("GET /"), "flow {n}: {}", req[0].0);
        let resp = http_messages(&f.streams[1]).unwrap_or_else(|e| panic!("flow {n} response: {e}"));
        assert_eq!(resp.len(), 1, "flow {n}");
        assert!(resp[0].0.starts_with("HTTP/1.1 200"), "flow {n}: {}", resp[0].0);
        assert!(resp[0].1.len() >= 1024, "flow {n}");
        body_total += resp[0].1.len();
    }
    assert!(body_total > 2_000_000, "{body_total}");
}
