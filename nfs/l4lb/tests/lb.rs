//! The packet function beyond Katran's fixtures, in DSR mode: the lookup
//! order (server id, table, ring), the table's bounds and UDP ageing,
//! fallbacks, reloads, spreading, and random bytes.

use std::net::{IpAddr, Ipv4Addr};

use l4lb::lb::{quic_server_id, tpr_server_id, Quic, Tpr};
use l4lb::{Action, Config, DropReason, Lb};
use proptest::prelude::*;

const VIP: &str = "10.10.0.100";
const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
const MAC2: [u8; 6] = [2, 0, 0, 0, 0, 0x12];

fn config(extra_lb: &str, weights: (u32, u32)) -> Config {
    let text = format!(
        r#"
[lb]
{extra_lb}

[[vip]]
address = "{VIP}"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.10.0.11"
mac = "02:00:00:00:00:11"
weight = {}
server_id = 11

[[vip.backend]]
address = "10.10.0.12"
mac = "02:00:00:00:00:12"
weight = {}
server_id = [12, 0x03000c]

[[vip]]
address = "{VIP}"
port = 443
protocol = "udp"
quic = true

[[vip.backend]]
address = "10.10.0.11"

[[vip.backend]]
address = "10.10.0.12"
"#,
        weights.0, weights.1
    );
    Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn lb() -> Lb {
    Lb::new(config("", (1, 1)))
}

/// Ethernet / IPv4 / TCP from `src:sport` to `dst:dport` with `flags` and TCP `options`.
fn tcp(src: [u8; 4], sport: u16, dst: &str, dport: u16, flags: u8, options: &[u8]) -> Vec<u8> {
    assert!(options.len() % 4 == 0);
    let dst: Ipv4Addr = dst.parse().unwrap();
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]); // the box
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x01]); // the client
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let tcp_len = 20 + options.len();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst.octets());
    f.extend_from_slice(&ip);
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = flags;
    f.extend_from_slice(&t);
    f.extend_from_slice(options);
    f
}

fn udp(src: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = tcp(src, sport, VIP, dport, 0, &[]);
    f.truncate(34);
    f[23] = 17;
    f[16..18].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;

fn tpr(id: u32) -> Vec<u8> {
    let mut o = vec![0xb7, 6];
    o.extend_from_slice(&id.to_le_bytes());
    o.extend_from_slice(&[1, 1]); // NOP NOP
    o
}

fn backend_of(a: Action) -> Option<u32> {
    match a {
        Action::Forward { backend } | Action::Encap { backend, .. } => Some(backend),
        _ => None,
    }
}

fn send(lb: &mut Lb, mut f: Vec<u8>, now: u64) -> (Action, Vec<u8>) {
    let a = lb.process(&mut f, 0, now);
    (a, f)
}

#[test]
fn dsr_rewrites_only_the_destination_mac() {
    let mut lb = lb();
    let f = tcp([192, 0, 2, 1], 40000, VIP, 80, SYN, &[]);
    let (a, out) = send(&mut lb, f.clone(), 0);
    let b = backend_of(a).expect("forwarded");
    let mac = if lb.backend_address(b) == Some("10.10.0.11".parse().unwrap()) { MAC1 } else { MAC2 };
    assert_eq!(out[..6], mac);
    assert_eq!(out[6..], f[6..]);
    // The other direction, another host, ARP: passed untouched.
    for f in [
        tcp([10, 10, 0, 100], 80, "192.0.2.1", 40000, ACK, &[]),
        tcp([192, 0, 2, 1], 40000, "10.10.0.11", 80, SYN, &[]),
        tcp([192, 0, 2, 1], 40000, VIP, 81, SYN, &[]),
    ] {
        let (a, out) = send(&mut lb, f.clone(), 0);
        assert_eq!((a, out), (Action::Pass, f));
    }
}

#[test]
fn a_connection_stays_on_its_backend_even_when_the_ring_changes() {
    let mut lb = lb();
    // Find a client port whose flow the ring gives to backend 1 (10.10.0.12).
    let b12 = lb.backend("10.10.0.12".parse().unwrap()).unwrap();
    let port = (1000..2000)
        .find(|&p| backend_of(lb.process(&mut tcp([192, 0, 2, 1], p, VIP, 80, SYN, &[]), 0, 0)) == Some(b12))
        .unwrap();
    // Drain .12 (weight 0): off the ring, but its connection stays.
    lb.reconfigure(config("", (1, 0)));
    assert_eq!(backend_of(send(&mut lb, tcp([192, 0, 2, 1], port, VIP, 80, ACK, &[]), 1).0), Some(b12));
    // A new connection from the same port (a SYN) goes to the ring: .11.
    let b11 = lb.backend("10.10.0.11".parse().unwrap()).unwrap();
    assert_eq!(backend_of(send(&mut lb, tcp([192, 0, 2, 1], port, VIP, 80, SYN, &[]), 2).0), Some(b11));
}

#[test]
fn server_id_routes_non_syns_and_falls_back() {
    let mut lb = lb();
    let b11 = lb.backend("10.10.0.11".parse().unwrap()).unwrap();
    let b12 = lb.backend("10.10.0.12".parse().unwrap()).unwrap();
    let vip = lb.vip(VIP.parse().unwrap(), 80, 6).unwrap();
    // A SYN's option is ignored: the ring decides.
    let syn_to = backend_of(send(&mut lb, tcp([192, 0, 2, 7], 5555, VIP, 80, SYN, &tpr(12)), 0).0).unwrap();
    let other = if syn_to == b11 { (b12, 12) } else { (b11, 11) };
    // The next packet names the other backend: it goes there, and the table follows.
    let (a, _) = send(&mut lb, tcp([192, 0, 2, 7], 5555, VIP, 80, ACK, &tpr(other.1)), 1);
    assert_eq!(backend_of(a), Some(other.0));
    let (a, _) = send(&mut lb, tcp([192, 0, 2, 7], 5555, VIP, 80, ACK, &[]), 2);
    assert_eq!(backend_of(a), Some(other.0), "the table learnt the server id's backend");
    // id 0, an unknown id, a bad length: fall back to the table, counted.
    let bad_len = vec![0xb7, 4, 11, 0, 1, 1, 1, 1];
    for opts in [tpr(0), tpr(99), bad_len] {
        assert_eq!(backend_of(send(&mut lb, tcp([192, 0, 2, 7], 5555, VIP, 80, ACK, &opts), 3).0), Some(other.0));
    }
    // The CIDv2-style second id of .12 works too.
    assert_eq!(backend_of(send(&mut lb, tcp([192, 0, 2, 8], 1, VIP, 80, ACK, &tpr(0x03000c)), 4).0), Some(b12));
    let c = lb.vip_counters(vip).unwrap();
    assert_eq!((c.server_id_hits, c.server_id_fallbacks, c.syns), (2, 3, 1), "{c:?}");
}

#[test]
fn tpr_scans_at_most_15_options() {
    let mk = |nops: usize| {
        let mut o = vec![1u8; nops];
        o.extend_from_slice(&[0xb7, 6, 7, 0, 0, 0]);
        while o.len() % 4 != 0 {
            o.push(0);
        }
        tcp([1, 2, 3, 4], 1, VIP, 80, ACK, &o)
    };
    assert_eq!(tpr_server_id(&mk(14), 34), Tpr::Id(7));
    assert_eq!(tpr_server_id(&mk(15), 34), Tpr::Absent, "the 16th option is not looked at");
    let eol_first = tcp([1, 2, 3, 4], 1, VIP, 80, ACK, &[0, 0xb7, 6, 7, 0, 0, 0, 0]);
    assert_eq!(tpr_server_id(&eol_first, 34), Tpr::Absent);
    let past_end = tcp([1, 2, 3, 4], 1, VIP, 80, ACK, &[1, 1, 0xb7, 6]);
    assert_eq!(tpr_server_id(&past_end, 34), Tpr::Absent, "an option longer than the header");
}

#[test]
fn quic_connection_id_versions() {
    let short = |cid: [u8; 8]| {
        let mut p = vec![0x40];
        p.extend_from_slice(&cid);
        udp([1, 1, 1, 1], 1, 443, &p)
    };
    assert_eq!(quic_server_id(&short([0x41, 0x00, 0x83, 4, 5, 6, 7, 0]), 34), Quic::Id { version: 1, id: 1026 });
    assert_eq!(quic_server_id(&short([0x80, 3, 4, 2, 5, 6, 7, 0]), 34), Quic::Id { version: 2, id: 0x030402 });
    assert_eq!(quic_server_id(&short([0xc0, 1, 2, 3, 4, 6, 7, 0]), 34), Quic::Id { version: 3, id: 0x01020304 });
    assert_eq!(quic_server_id(&short([0x00, 1, 2, 3, 4, 6, 7, 0]), 34), Quic::NoId);
    // Long header: Initial and 0-RTT go to the ring; Handshake with a
    // connection id shorter than 8 bytes has none.
    let long = |flags: u8, cid_len: u8| {
        let mut p = vec![flags, 0, 0, 0, 1, cid_len];
        p.extend_from_slice(&[0x80, 0, 0, 12, 0, 0, 0, 0]);
        udp([1, 1, 1, 1], 1, 443, &p)
    };
    assert_eq!(quic_server_id(&long(0xc0, 8), 34), Quic::Initial);
    assert_eq!(quic_server_id(&long(0xd0, 8), 34), Quic::Initial);
    assert_eq!(quic_server_id(&long(0xe0, 8), 34), Quic::Id { version: 2, id: 12 });
    assert_eq!(quic_server_id(&long(0xe0, 7), 34), Quic::NoId);
    // Through the load balancer: 12 is .12's id.
    let mut lb = lb();
    let b12 = lb.backend("10.10.0.12".parse().unwrap()).unwrap();
    assert_eq!(backend_of(send(&mut lb, long(0xe0, 8), 0).0), Some(b12));
}

#[test]
fn udp_entries_age_out() {
    let mut lb = lb();
    let cfg = config("udp_timeout_ms = 1000", (1, 1));
    lb.reconfigure(cfg);
    let f = || udp([192, 0, 2, 9], 777, 443, &[0x40]);
    send(&mut lb, f(), 0); // ring, remembered
    let vip = lb.vip(VIP.parse().unwrap(), 443, 17).unwrap();
    send(&mut lb, f(), 900);
    assert_eq!(lb.vip_counters(vip).unwrap().table_hits, 1);
    send(&mut lb, f(), 2000); // 1100 ms after it was last seen
    assert_eq!(lb.vip_counters(vip).unwrap().table_hits, 1);
    assert_eq!(lb.totals().table_expired, 1);
}

#[test]
fn tables_are_per_worker_bounded_and_skip_rsts() {
    let mut lb = Lb::new(config("table_capacity = 4", (1, 1)));
    for p in 0..10u16 {
        lb.process(&mut tcp([192, 0, 2, 1], 1000 + p, VIP, 80, SYN, &[]), 0, 0);
    }
    lb.process(&mut tcp([192, 0, 2, 1], 9, VIP, 80, SYN, &[]), 1, 0);
    lb.process(&mut tcp([192, 0, 2, 1], 10, VIP, 80, RST, &[]), 1, 0);
    assert_eq!(lb.table_entries(), 4 + 1);
    assert_eq!(lb.totals().table_evictions, 6);
    let peer = |p: u16| ((IpAddr::from([192, 0, 2, 1]), p), (VIP.parse::<IpAddr>().unwrap(), 80u16));
    let ((s, sp), (d, dp)) = peer(1009);
    assert!(lb.table_lookup(0, (s, sp), (d, dp), 6).is_some());
    assert!(lb.table_lookup(0, (s, 1000), (d, dp), 6).is_none(), "the oldest was evicted");
    assert!(lb.table_lookup(1, (s, 9), (d, dp), 6).is_some());
    assert!(lb.table_lookup(1, (s, 10), (d, dp), 6).is_none(), "a RST is not remembered");
    assert!(lb.table_lookup(0, (s, 9), (d, dp), 6).is_none(), "each worker has its own table");
}

#[test]
fn removing_a_backend_moves_only_its_connections() {
    let mut lb = lb();
    let flows: Vec<u16> = (0..200).collect();
    let first: Vec<IpAddr> = flows
        .iter()
        .map(|&p| {
            let b = backend_of(lb.process(&mut tcp([192, 0, 2, 1], 20000 + p, VIP, 80, SYN, &[]), 0, 0)).unwrap();
            lb.backend_address(b).unwrap()
        })
        .collect();
    let gone: IpAddr = "10.10.0.12".parse().unwrap();
    let on_gone = first.iter().filter(|&&a| a == gone).count();
    assert!(on_gone > 50 && on_gone < 150, "both backends get flows: {on_gone} of 200 on .12");
    // Remove .12 from both VIPs.
    let text = format!(
        "[[vip]]\naddress = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"10.10.0.11\"\nmac = \"02:00:00:00:00:11\"\n"
    );
    let dropped = lb.reconfigure(Config::parse(&text, "t.toml").unwrap());
    assert_eq!(dropped, on_gone);
    for (&p, was) in flows.iter().zip(&first) {
        let b = backend_of(lb.process(&mut tcp([192, 0, 2, 1], 20000 + p, VIP, 80, ACK, &[]), 0, 1)).unwrap();
        let now = lb.backend_address(b).unwrap();
        if *was != gone {
            assert_eq!(now, *was, "a connection of a remaining backend moved");
        }
    }
    // Counters of what stayed survive the reload.
    let b11 = lb.backend("10.10.0.11".parse().unwrap()).unwrap();
    assert_eq!(lb.backend_counters(b11).unwrap().packets, (400 - on_gone) as u64);
}

#[test]
fn an_empty_ring_drops_counted() {
    let text = format!(
        "[[vip]]\naddress = \"{VIP}\"\nport = 80\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"10.10.0.11\"\nmac = \"02:00:00:00:00:11\"\nweight = 0\n[[vip.backend]]\naddress = \"10.10.0.12\"\nmac = \"02:00:00:00:00:12\"\n"
    );
    let mut cfg = Config::parse(&text, "t.toml").unwrap();
    cfg.vips[0].backends[1].weight = 0; // past the check, as a reload might leave it
    let mut lb = Lb::new(cfg);
    assert_eq!(send(&mut lb, tcp([1, 2, 3, 4], 1, VIP, 80, SYN, &[]), 0).0, Action::Drop(DropReason::NoBackend));
    assert_eq!(lb.vip_counters(0).unwrap().no_backend, 1);
}

#[test]
fn weights_shape_the_spread() {
    // Many clients, weights 3 : 1. Under the default (V1, as Katran) a
    // weight only counts in the first round, so on 65537 slots the two
    // backends get about half each; under maglev-v2 the share is 3 : 1.
    for (hash, lo, hi) in [("", 0.48, 0.52), ("hash = \"maglev-v2\"", 0.72, 0.78)] {
        let mut lb = Lb::new(config(hash, (3, 1)));
        let b11 = lb.backend("10.10.0.11".parse().unwrap()).unwrap();
        let n = 20000u32;
        let to11 = (0..n)
            .filter(|i| {
                let src = [10, 1, (i >> 8) as u8, *i as u8];
                backend_of(lb.process(&mut tcp(src, 40000, VIP, 80, SYN, &[]), 0, 0)) == Some(b11)
            })
            .count() as f64
            / f64::from(n);
        assert!(to11 > lo && to11 < hi, "{hash:?}: {to11} of new connections on the weight-3 backend");
    }
}

proptest! {
    /// Whatever the bytes, no panic, and only Forward / Reply change the frame.
    #[test]
    fn random_frames_never_panic(mut f in proptest::collection::vec(any::<u8>(), 0..200), eth in 0u8..3) {
        if f.len() >= 14 {
            f[12..14].copy_from_slice(match eth { 0 => &[0x08, 0x00], 1 => &[0x86, 0xdd], _ => &[0x08, 0x06] });
        }
        if f.len() >= 34 && eth == 0 {
            f[14] = 0x45;
            f[30..34].copy_from_slice(&[10, 10, 0, 100]);
        }
        let mut lb = lb();
        let before = f.clone();
        let a = lb.process(&mut f, 0, 0);
        if !matches!(a, Action::Forward { .. } | Action::Reply) {
            prop_assert_eq!(f, before);
        }
    }

    /// A valid TCP frame to the VIP cut anywhere: dropped as truncated or
    /// routed, never a panic.
    #[test]
    fn cut_frames(cut in 0usize..80, opts in proptest::collection::vec(any::<u8>(), 0..10)) {
        let mut o = opts;
        while o.len() % 4 != 0 { o.push(1); }
        let mut f = tcp([192, 0, 2, 1], 1, VIP, 80, ACK, &o);
        f.truncate(cut.min(f.len()));
        let mut lb = lb();
        let a = lb.process(&mut f, 0, 0);
        prop_assert!(matches!(a, Action::Forward { .. } | Action::Drop(DropReason::Truncated) | Action::Pass), "{:?}", a);
    }
}
