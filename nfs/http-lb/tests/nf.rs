//! The NF against `FakeRuntime`, in a thread: it registers with the right
//! manifest, answers each `FLOW_REQ` (request bytes as packet, `FlowReq`
//! as payload) with a `FLOW_DEST` about the same flow, follows `FLOW/END`
//! and retries.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_lb::rules::from_abi_addr;
use http_lb::{lb_nf, Balancer, Rules, Shared};
use nf_sdk::testing::{EventId, FakeRuntime};
use nf_sdk::{FlowDest, FlowEnd, FlowReq, Nf, DEST_503, DEST_CONNECT, FLOW_REQ_RESET};
use ubox_shm::event::{EventHeader, SIDE_CLIENT, VERDICT_PASS};
use ustack::event::{FLOW_DEST, FLOW_END, FLOW_REQ};

const RULES: &str = r#"
[[pool]]
name = "api"
backends = ["10.10.1.1:8080", "10.10.1.2:8080"]
balance = "least-connections"

[[pool]]
name = "web"
backends = ["10.10.0.11:80", "10.10.0.12:80"]

[[route]]
host = "api.test"
pool = "api"

[[route]]
path_prefix = "/static/"
pool = "web"

[default]
reject = "503"
"#;

fn v4(a: [u8; 4]) -> [u8; 16] {
    Ipv4Addr::from(a).to_ipv6_mapped().octets()
}

fn flow_req(rt: &mut FakeRuntime, flow_id: u64, req: FlowReq, bytes: &[u8]) -> EventId {
    let header = EventHeader { type_id: FLOW_REQ.raw(), flow_id, side: SIDE_CLIENT, ..EventHeader::default() };
    rt.publish_packet_payload(header, bytes, &req.to_bytes()).unwrap()
}

fn flow_end(rt: &mut FakeRuntime, flow_id: u64, server: &str) -> EventId {
    let s: SocketAddr = server.parse().unwrap();
    let end = FlowEnd {
        client_addr: v4([192, 0, 2, 1]),
        server_addr: http_lb::rules::abi_addr(s.ip()),
        server_port: s.port(),
        proto: 6,
        ..FlowEnd::default()
    };
    let header = EventHeader { type_id: FLOW_END.raw(), flow_id, side: SIDE_CLIENT, ..EventHeader::default() };
    rt.publish_payload(header, &end.to_bytes()).unwrap()
}

fn new_req() -> FlowReq {
    FlowReq {
        client_addr: v4([192, 0, 2, 1]),
        vip_addr: v4([10, 0, 0, 1]),
        client_port: 40000,
        vip_port: 80,
        ..FlowReq::default()
    }
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes()
}

/// Waits for `n` verdicts (all Pass) and returns the `FLOW_DEST`s
/// published meanwhile as (flow id, where).
fn answers(rt: &mut FakeRuntime, n: usize) -> Vec<(u64, String)> {
    let v = rt.wait_verdicts(n, Duration::from_secs(10));
    assert_eq!(v.len(), n, "{v:?}");
    assert!(v.iter().all(|&(_, v)| v == VERDICT_PASS), "{v:?}");
    rt.take_published()
        .into_iter()
        .map(|(h, payload)| {
            assert_eq!(h.type_id, FLOW_DEST.raw());
            let d = FlowDest::from_bytes(&payload).unwrap();
            let shown = match d.action {
                DEST_CONNECT => SocketAddr::new(from_abi_addr(d.addr), d.port).to_string(),
                DEST_503 => "503".to_owned(),
                a => format!("action {a}"),
            };
            (h.flow_id, shown)
        })
        .collect()
}

#[test]
fn answers_flow_req_with_flow_dest_and_follows_flow_end() {
    let mut rt = FakeRuntime::start().unwrap();
    let shared = Shared::new(Balancer::new(Rules::parse(RULES, "rules.toml").unwrap(), 1000, 60_000));
    let builder = lb_nf(Nf::builder("http-lb").socket(rt.socket()).handle_signals(false), shared.clone());
    let mut nf = builder.connect().unwrap();
    let m = rt.manifest().unwrap();
    let subs: Vec<&str> = m.subscriptions.iter().map(|s| s.event.as_str()).collect();
    assert_eq!(subs, ["FLOW_REQ", "FLOW/END"]);
    assert_eq!((m.publications.as_slice(), m.modifies_packets), (&["FLOW_DEST".to_owned()][..], false));
    let stop = nf.stop_handle();
    let nf = std::thread::spawn(move || nf.run());

    flow_req(&mut rt, 1, new_req(), &get("api.test", "/v1"));
    flow_req(&mut rt, 2, new_req(), &get("API.test:80", "/v2"));
    flow_req(&mut rt, 3, new_req(), &get("www.test", "/static/a.css"));
    flow_req(&mut rt, 4, new_req(), &get("www.test", "/static/b.css"));
    flow_req(&mut rt, 5, new_req(), &get("www.test", "/"));
    flow_req(&mut rt, 6, new_req(), b"\x16\x03\x01 not http");
    let got = answers(&mut rt, 6);
    assert_eq!(
        got,
        [
            (1, "10.10.1.1:8080".to_owned()),
            (2, "10.10.1.2:8080".to_owned()),
            (3, "10.10.0.11:80".to_owned()),
            (4, "10.10.0.12:80".to_owned()),
            (5, "503".to_owned()),
            (6, "503".to_owned()),
        ]
    );

    // Flow 1 ends: least-connections sends the next api request to .1.
    flow_end(&mut rt, 1, "10.10.1.1:8080");
    flow_req(&mut rt, 7, new_req(), &get("api.test", "/"));
    assert_eq!(answers(&mut rt, 2), [(7, "10.10.1.1:8080".to_owned())]);

    // Flow 7's backend resets the splicer's SYN: the retry goes to .2.
    let retry =
        FlowReq { attempt: 1, reason: FLOW_REQ_RESET, last_addr: v4([10, 10, 1, 1]), last_port: 8080, ..new_req() };
    flow_req(&mut rt, 7, retry, &get("api.test", "/"));
    assert_eq!(answers(&mut rt, 1), [(7, "10.10.1.2:8080".to_owned())]);

    stop.stop();
    let summary = nf.join().unwrap().unwrap();
    assert_eq!(summary.events, 9);
    let r = shared.report();
    let api: Vec<(u64, u64, u64)> = r.pools[0].backends.iter().map(|b| (b.routed, b.failures, b.open)).collect();
    assert_eq!(api, [(2, 1, 0), (2, 0, 2)]);
    assert!(r.pools[0].backends[0].down);
    let c = &r.counts;
    assert_eq!((c.requests, c.retries, c.routed, c.rejected_503, c.flow_ends, c.bad_events), (8, 1, 6, 2, 1, 0));
    assert_eq!(rt.free_slots(), 4096, "every slot came back");
}
