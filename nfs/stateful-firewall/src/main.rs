//! `stateful-firewall`: a sample ubox NF that lets through only the TCP
//! connections opened from the inside.
//!
//! It subscribes to `PKT/TCP` (it answers a verdict for every TCP segment)
//! and to `FLOW/TCP` and `FLOW/END` (connection state from the runtime's TCP
//! monitor, which a `FLOW/TCP` subscription turns on). Per segment:
//!
//! 1. a segment of an allowed flow passes;
//! 2. a SYN (without ACK or RST) whose source is inside (`--inside`) opens
//!    the flow: it is allowed from then on, the SYN passes;
//! 3. any other SYN (from outside) is dropped, counted `unsolicited_syn`;
//! 4. anything else (a segment of a flow never opened, or forgotten) is
//!    dropped, counted `stray`. So is a frame it cannot parse as TCP over
//!    IPv4/IPv6 unless its flow is allowed.
//!
//! `FLOW/TCP/CLOSED`, `FLOW/TCP/RST`, `FLOW/TCP/TIMEOUT` and `FLOW/END`
//! forget the flow: its later segments are stray. `FLOW/TCP/ESTABLISHED`
//! on an allowed flow counts it under `established` (once). UDP and other
//! protocols are not its business: it does not subscribe to them.
//!
//! At most `--max-flows` flows (default 65536) are remembered; past that
//! the oldest opened is forgotten (FIFO, counted `evicted`), so its later
//! segments are dropped as stray. Flows are keyed by worker and flow id.
//!
//! On exit (SIGINT/SIGTERM, or the runtime going away) it prints its
//! counters and, with `--json-out FILE`, writes them:
//!
//! ```text
//! {"allowed_flows":3,"established":3,"unsolicited_syn":1,"stray":2,"passed":40,"dropped":3,
//!  "evicted":0,"tracked":1}
//! ```
//!
//! ```text
//! stateful-firewall --inside PREFIX [--inside PREFIX]... [--max-flows N]
//!                   [--instance NAME | --socket PATH] [--name NAME] [--json-out FILE] [--reconnect]
//! ```
//!
//! With `--reconnect`, registering again (the runtime restarted, or
//! dropped it) forgets every allowed flow and keeps the counters: a
//! restarted runtime numbers flows anew, so an old flow id may name a
//! flow nobody inside opened.
//!
//! PREFIX is an IPv4 or IPv6 address or prefix (`10.10.0.0/24`,
//! `2001:db8::/32`; a bare address is a host).
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use clap::Parser;
use controller::registry::Prefix;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, NfBuilder, Verdict};
use serde::Serialize;
use ustack::event::{FLOW_END, FLOW_TCP_CLOSED, FLOW_TCP_ESTABLISHED, FLOW_TCP_RST, FLOW_TCP_TIMEOUT};
use ustack::wire::{protocol, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket, VlanTag};

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: let through only the TCP connections opened from the inside")]
struct Args {
    /// Inside address or prefix, e.g. 10.10.0.0/24 (repeatable, at least one).
    #[arg(long, required = true)]
    inside: Vec<Prefix>,
    /// Most flows remembered; the oldest is forgotten past it.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    max_flows: u64,
    #[command(flatten)]
    common: Common,
    /// Write the counters as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// What the firewall needs of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub flags: TcpFlags,
}

impl Segment {
    /// A connection attempt: SYN without ACK (and without RST).
    pub fn is_syn(&self) -> bool {
        self.flags.contains(TcpFlags::SYN) && !self.flags.intersects(TcpFlags::ACK | TcpFlags::RST)
    }
}

/// Most VLAN tags skipped before the IP header (QinQ), as the L2/L3 stack does.
const MAX_VLAN_TAGS: usize = 2;

/// The addresses and TCP flags of an Ethernet frame (up to two VLAN tags,
/// IPv4 or IPv6 with extension headers), or `None` when it is not a TCP
/// segment with its header (other protocols, non-first fragments,
/// truncated or malformed). Never panics.
pub fn parse_segment(frame: &[u8]) -> Option<Segment> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mut ethertype = eth.ethertype();
    let mut rest = eth.payload();
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan() {
            break;
        }
        ethertype = VlanTag::new_checked(rest).ok()?.inner_ethertype();
        rest = rest.get(VlanTag::<&[u8]>::HEADER_LEN..)?;
    }
    let flags = |l4: &[u8]| TcpPacket::new_checked(l4).ok().map(|t| t.flags());
    let (src, dst, flags): (IpAddr, IpAddr, TcpFlags) = match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(rest).ok()?;
            if ip.protocol() != protocol::TCP || ip.frag_offset() != 0 {
                return None;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), flags(ip.payload())?)
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(rest).ok()?;
            let (next, l4) = ip.upper_layer().ok()?;
            if next != protocol::TCP {
                return None;
            }
            (ip.src_addr().into(), ip.dst_addr().into(), flags(l4)?)
        }
        _ => return None,
    };
    Some(Segment { src, dst, flags })
}

/// A map holding at most `cap` entries, evicting the oldest inserted.
#[derive(Debug)]
struct BoundedMap<K, V> {
    map: HashMap<K, (u64, V)>,
    /// Insertion order; entries whose generation no longer matches the
    /// map's were removed (or re-inserted) meanwhile and are skipped.
    order: VecDeque<(K, u64)>,
    cap: usize,
    generation: u64,
    evicted: u64,
}

impl<K: Copy + Eq + std::hash::Hash, V> BoundedMap<K, V> {
    fn new(cap: usize) -> Self {
        BoundedMap { map: HashMap::new(), order: VecDeque::new(), cap: cap.max(1), generation: 0, evicted: 0 }
    }

    /// Inserts `k` (if absent), evicting the oldest entry when full.
    fn insert(&mut self, k: K, v: V) {
        if self.map.contains_key(&k) {
            return;
        }
        while self.map.len() >= self.cap {
            let Some((old, g)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|(og, _)| *og == g) {
                self.map.remove(&old);
                self.evicted += 1;
            }
        }
        self.generation += 1;
        self.order.push_back((k, self.generation));
        self.map.insert(k, (self.generation, v));
        if self.order.len() > 2 * self.cap + 64 {
            let map = &self.map;
            self.order.retain(|(k, g)| map.get(k).is_some_and(|(mg, _)| mg == g));
        }
    }

    fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|(_, v)| v)
    }

    fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Flow ids are unique per worker only.
type FlowKey = (u32, u64);

/// What `--json-out` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Flows opened from the inside (SYNs that created an entry).
    pub allowed_flows: u64,
    /// Allowed flows the monitor saw established.
    pub established: u64,
    /// SYNs from outside, dropped.
    pub unsolicited_syn: u64,
    /// Other segments of flows not allowed, dropped.
    pub stray: u64,
    pub passed: u64,
    pub dropped: u64,
    /// Allowed flows forgotten to stay under `--max-flows`.
    pub evicted: u64,
    /// Allowed flows remembered now.
    pub tracked: u64,
}

/// The firewall's state: inside prefixes, allowed flows and counters.
#[derive(Debug)]
pub struct Firewall {
    inside: Vec<Prefix>,
    /// Allowed flows; the value says whether ESTABLISHED was counted.
    flows: BoundedMap<FlowKey, bool>,
    counts: Report,
}

impl Firewall {
    /// A firewall whose inside is `inside`, remembering at most `max_flows` flows.
    pub fn new(inside: Vec<Prefix>, max_flows: usize) -> Firewall {
        Firewall { inside, flows: BoundedMap::new(max_flows), counts: Report::default() }
    }

    /// Whether `ip` is inside.
    pub fn is_inside(&self, ip: IpAddr) -> bool {
        self.inside.iter().any(|p| p.contains(ip))
    }

    /// The verdict for one segment (`None`: not parseable) of `flow`.
    pub fn decide(&mut self, flow: FlowKey, seg: Option<Segment>) -> Verdict {
        let verdict = if self.flows.get_mut(&flow).is_some() {
            Verdict::Pass
        } else {
            match seg {
                Some(s) if s.is_syn() && self.is_inside(s.src) => {
                    self.flows.insert(flow, false);
                    self.counts.allowed_flows += 1;
                    Verdict::Pass
                }
                Some(s) if s.is_syn() => {
                    self.counts.unsolicited_syn += 1;
                    Verdict::Drop
                }
                _ => {
                    self.counts.stray += 1;
                    Verdict::Drop
                }
            }
        };
        match verdict {
            Verdict::Drop => self.counts.dropped += 1,
            _ => self.counts.passed += 1,
        }
        verdict
    }

    /// Handles a `FLOW/TCP/...` or `FLOW/END` event.
    fn on_flow(&mut self, ev: &Event<'_>) {
        let flow = (ev.worker(), ev.flow_id());
        if ev.is(FLOW_TCP_ESTABLISHED) {
            if let Some(counted) = self.flows.get_mut(&flow) {
                if !*counted {
                    *counted = true;
                    self.counts.established += 1;
                }
            }
        } else if [FLOW_TCP_CLOSED, FLOW_TCP_RST, FLOW_TCP_TIMEOUT, FLOW_END].iter().any(|&t| ev.is(t)) {
            self.flows.remove(&flow);
        }
    }

    /// Forgets every allowed flow, keeping the counters (see `--reconnect`).
    pub fn forget_flows(&mut self) {
        self.flows.clear();
    }

    /// The counters so far.
    pub fn report(&self) -> Report {
        Report { evicted: self.flows.evicted, tracked: self.flows.len() as u64, ..self.counts }
    }
}

fn lock(fw: &Mutex<Firewall>) -> MutexGuard<'_, Firewall> {
    fw.lock().unwrap_or_else(|e| e.into_inner())
}

/// The firewall NF on top of `builder`: verdicts on `PKT/TCP`, state from
/// `FLOW/TCP` and `FLOW/END`; registered again, it forgets its flows.
pub fn firewall_nf(builder: NfBuilder, fw: Arc<Mutex<Firewall>>) -> NfBuilder {
    let (pkt, tcp, end, again) = (Arc::clone(&fw), Arc::clone(&fw), Arc::clone(&fw), fw);
    builder
        .on_reregister(move |_| lock(&again).forget_flows())
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .subscribe("PKT/TCP", move |ev: &Event<'_>| {
            let seg = ev.packet().and_then(parse_segment);
            lock(&pkt).decide((ev.worker(), ev.flow_id()), seg)
        })
        .subscribe("FLOW/TCP", move |ev: &Event<'_>| {
            lock(&tcp).on_flow(ev);
            Verdict::Pass
        })
        .subscribe("FLOW/END", move |ev: &Event<'_>| {
            lock(&end).on_flow(ev);
            Verdict::Pass
        })
}

fn main() -> ExitCode {
    cli::main("stateful-firewall", run)
}

fn run(args: Args) -> Result<(), Exit> {
    let fw = Arc::new(Mutex::new(Firewall::new(args.inside.clone(), args.max_flows as usize)));
    let mut nf = cli::connect(firewall_nf(args.common.builder(), Arc::clone(&fw)), &args.common)?;
    let inside: Vec<String> = args.inside.iter().map(ToString::to_string).collect();
    tracing::info!(
        "inside {}; registered as NF {} on {}; Ctrl-C to stop",
        inside.join(", "),
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    let r = lock(&fw).report();
    tracing::info!(
        "{} flows allowed ({} established), {} unsolicited SYNs, {} stray; {} passed, {} dropped",
        r.allowed_flows,
        r.established,
        r.unsolicited_syn,
        r.stray,
        r.passed,
        r.dropped
    );
    if let Some(path) = &args.json_out {
        cli::write_json_line(path, &r)?;
    }
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::Nf;
    use std::time::Duration;
    use ubox_shm::event::{VERDICT_DROP, VERDICT_PASS};
    use ustack::event::{FLOW_TCP_FIN, PKT_TCP};

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const SYN_ACK: u8 = SYN | ACK;
    const PSH_ACK: u8 = 0x18;
    const RST: u8 = 0x04;

    fn ipv4_sum(h: &[u8]) -> u16 {
        let sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        !(((folded & 0xffff) + (folded >> 16)) as u16)
    }

    fn tcp_header(sp: u16, dp: u16, flags: u8, data: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sp.to_be_bytes());
        t.extend_from_slice(&dp.to_be_bytes());
        t.extend_from_slice(&1000u32.to_be_bytes()); // seq
        t.extend_from_slice(&0u32.to_be_bytes()); // ack
        t.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]); // offset, flags, window, csum, urg
        t.extend_from_slice(data);
        t
    }

    /// Ethernet (with `vlans` tags) / IPv4 / TCP with `flags`.
    fn v4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8, vlans: &[u16]) -> Vec<u8> {
        let tcp = tcp_header(sp, dp, flags, b"data");
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for &v in vlans {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0, 0, 64, protocol::TCP, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = ipv4_sum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }

    /// Ethernet / IPv6 / TCP with `flags`.
    fn v6(src: &str, dst: &str, flags: u8) -> Vec<u8> {
        let tcp = tcp_header(40000, 443, flags, b"");
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0];
        f.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[protocol::TCP, 64]);
        f.extend_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&tcp);
        f
    }

    const IN: [u8; 4] = [10, 10, 0, 1];
    const IN2: [u8; 4] = [10, 10, 0, 2];
    const OUT: [u8; 4] = [192, 0, 2, 7];

    fn firewall(max_flows: usize) -> Firewall {
        Firewall::new(vec!["10.10.0.0/24".parse().unwrap(), "2001:db8:1::/48".parse().unwrap()], max_flows)
    }

    /// After registering again (a restarted runtime, whose flow ids are
    /// new), a flow id the inside had opened no longer lets anything in.
    #[test]
    fn registering_again_forgets_the_flows() {
        let mut rt = FakeRuntime::start().unwrap();
        let dir = rt.dir().to_owned();
        let fw = Arc::new(Mutex::new(firewall(16)));
        let b = firewall_nf(Nf::builder("sfw").socket(rt.socket()).handle_signals(false), Arc::clone(&fw));
        let mut nf = b.connect().unwrap();
        let stop = nf.stop_handle();
        let t = std::thread::spawn(move || nf.run_reconnecting());
        rt.publish(PKT_TCP, 1, &v4(IN, 40000, OUT, 80, SYN, &[])).unwrap();
        rt.publish(PKT_TCP, 1, &v4(OUT, 80, IN, 40000, SYN_ACK, &[])).unwrap();
        let v: Vec<u8> = rt.wait_verdicts(2, Duration::from_secs(10)).into_iter().map(|(_, v)| v).collect();
        assert_eq!(v, [VERDICT_PASS, VERDICT_PASS]);
        drop(rt);
        let mut rt = FakeRuntime::start_in(&dir).unwrap();
        assert!(rt.wait_registered(Duration::from_secs(5)), "the NF did not register again");
        rt.publish(PKT_TCP, 1, &v4(OUT, 80, IN, 40000, PSH_ACK, &[])).unwrap();
        assert_eq!(rt.wait_verdicts(1, Duration::from_secs(10))[0].1, VERDICT_DROP, "an old flow id let a segment in");
        stop.stop();
        t.join().unwrap().unwrap();
        let r = lock(&fw).report();
        assert_eq!((r.allowed_flows, r.stray, r.passed, r.dropped, r.tracked), (1, 1, 2, 1, 0), "counters kept");
    }

    #[test]
    fn parses_addresses_and_flags() {
        let s = parse_segment(&v4(IN, 40000, OUT, 80, SYN, &[])).unwrap();
        assert_eq!((s.src, s.dst, s.is_syn()), (IpAddr::from(IN), IpAddr::from(OUT), true));
        let s = parse_segment(&v4(OUT, 80, IN, 40000, SYN_ACK, &[100, 200])).unwrap();
        assert_eq!((s.src, s.flags.bits(), s.is_syn()), (IpAddr::from(OUT), SYN_ACK, false));
        assert!(!parse_segment(&v4(IN, 1, OUT, 2, SYN | RST, &[])).unwrap().is_syn());
        let s = parse_segment(&v6("2001:db8:1::5", "2001:db8:2::5", SYN)).unwrap();
        assert_eq!(s.src, "2001:db8:1::5".parse::<IpAddr>().unwrap());
        // Not TCP, truncated, not IP.
        let mut udp = v4(IN, 1, OUT, 2, SYN, &[]);
        udp[14 + 9] = protocol::UDP;
        assert_eq!(parse_segment(&udp), None);
        assert_eq!(parse_segment(&v4(IN, 1, OUT, 2, SYN, &[])[..14 + 20 + 10]), None);
        assert_eq!(parse_segment(&[0xff; 9]), None);
        assert_eq!(parse_segment(&[]), None);
    }

    #[test]
    fn decides_by_who_opened_the_flow() {
        let mut fw = firewall(16);
        let seg = |f: Vec<u8>| parse_segment(&f);
        // Inside opens flow 1: both directions pass.
        assert_eq!(fw.decide((0, 1), seg(v4(IN, 40000, OUT, 80, SYN, &[]))), Verdict::Pass);
        assert_eq!(fw.decide((0, 1), seg(v4(OUT, 80, IN, 40000, SYN_ACK, &[]))), Verdict::Pass);
        assert_eq!(fw.decide((0, 1), seg(v4(IN, 40000, OUT, 80, PSH_ACK, &[]))), Verdict::Pass);
        // An unparseable frame of an allowed flow passes too.
        assert_eq!(fw.decide((0, 1), None), Verdict::Pass);
        // Outside tries to open flow 2: dropped, and so is its follow-up.
        assert_eq!(fw.decide((0, 2), seg(v4(OUT, 5555, IN, 22, SYN, &[]))), Verdict::Drop);
        assert_eq!(fw.decide((0, 2), seg(v4(OUT, 5555, IN, 22, ACK, &[]))), Verdict::Drop);
        // A SYN-ACK from inside opens nothing; nor does an unparseable frame.
        assert_eq!(fw.decide((0, 3), seg(v4(IN2, 22, OUT, 5555, SYN_ACK, &[]))), Verdict::Drop);
        assert_eq!(fw.decide((0, 3), None), Verdict::Drop);
        // The same flow id on another worker is another flow.
        assert_eq!(fw.decide((1, 1), seg(v4(OUT, 80, IN, 40000, ACK, &[]))), Verdict::Drop);
        // IPv6 inside.
        assert_eq!(fw.decide((0, 4), seg(v6("2001:db8:1::5", "2001:db8:2::5", SYN))), Verdict::Pass);
        assert_eq!(fw.decide((0, 5), seg(v6("2001:db8:2::5", "2001:db8:1::5", SYN))), Verdict::Drop);
        let r = fw.report();
        assert_eq!(
            r,
            Report {
                allowed_flows: 2,
                established: 0,
                unsolicited_syn: 2,
                stray: 4,
                passed: 5,
                dropped: 6,
                evicted: 0,
                tracked: 2
            }
        );
    }

    #[test]
    fn state_is_bounded_fifo() {
        let mut fw = firewall(2);
        let syn = parse_segment(&v4(IN, 40000, OUT, 80, SYN, &[]));
        let ack = parse_segment(&v4(OUT, 80, IN, 40000, ACK, &[]));
        for id in 1..=3 {
            assert_eq!(fw.decide((0, id), syn), Verdict::Pass);
        }
        assert_eq!(fw.decide((0, 1), ack), Verdict::Drop, "the oldest was forgotten");
        assert_eq!(fw.decide((0, 3), ack), Verdict::Pass);
        let r = fw.report();
        assert_eq!((r.allowed_flows, r.evicted, r.tracked, r.stray), (3, 1, 2, 1));
    }

    /// Publishes one event and returns the NF's verdict.
    fn verdict(rt: &mut FakeRuntime, ty: nf_sdk::EventTypeId, flow: u64, frame: &[u8]) -> u8 {
        rt.publish(ty, flow, frame).unwrap();
        let v = rt.wait_verdicts(1, Duration::from_secs(10));
        assert_eq!(v.len(), 1);
        v[0].1
    }

    #[test]
    fn end_to_end_with_flow_events() {
        let mut rt = FakeRuntime::start().unwrap();
        let fw = Arc::new(Mutex::new(firewall(64)));
        let b =
            firewall_nf(Nf::builder("stateful-firewall").socket(rt.socket()).handle_signals(false), Arc::clone(&fw));
        let mut nf = b.connect().unwrap();
        // The fake stores the manifest just after answering: wait for it.
        assert!(rt.wait_registered(Duration::from_secs(5)));
        let subs: Vec<String> = rt.manifest().unwrap().subscriptions.into_iter().map(|s| s.event).collect();
        assert_eq!(subs, ["PKT/TCP", "FLOW/TCP", "FLOW/END"]);
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());

        let (syn, syn_ack, ack) =
            (v4(IN, 40000, OUT, 80, SYN, &[]), v4(OUT, 80, IN, 40000, SYN_ACK, &[]), v4(IN, 40000, OUT, 80, ACK, &[]));
        let reply = v4(OUT, 80, IN, 40000, PSH_ACK, &[]);
        // Flow 1 (inside out): open, established (counted once), closed.
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &syn), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &syn_ack), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &ack), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, FLOW_TCP_ESTABLISHED, 1, &[]), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, FLOW_TCP_ESTABLISHED, 1, &[]), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &reply), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, FLOW_TCP_FIN, 1, &[]), VERDICT_PASS); // not an end
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &reply), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, FLOW_TCP_CLOSED, 1, &[]), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, PKT_TCP, 1, &reply), VERDICT_DROP, "stray after CLOSED");
        // Flows 2-4 are forgotten on RST, TIMEOUT and FLOW/END.
        for (flow, end) in [(2, FLOW_TCP_RST), (3, FLOW_TCP_TIMEOUT), (4, FLOW_END)] {
            assert_eq!(verdict(&mut rt, PKT_TCP, flow, &syn), VERDICT_PASS);
            assert_eq!(verdict(&mut rt, PKT_TCP, flow, &reply), VERDICT_PASS);
            assert_eq!(verdict(&mut rt, end, flow, &[]), VERDICT_PASS);
            assert_eq!(verdict(&mut rt, PKT_TCP, flow, &reply), VERDICT_DROP, "{end}");
        }
        // Flow 5 (outside in): the SYN and whatever follows are dropped;
        // ESTABLISHED of a flow never allowed is not counted.
        assert_eq!(verdict(&mut rt, PKT_TCP, 5, &v4(OUT, 5555, IN, 22, SYN, &[])), VERDICT_DROP);
        assert_eq!(verdict(&mut rt, FLOW_TCP_ESTABLISHED, 5, &[]), VERDICT_PASS);
        assert_eq!(verdict(&mut rt, PKT_TCP, 5, &v4(OUT, 5555, IN, 22, ACK, &[])), VERDICT_DROP);
        stop.stop();
        let summary = nf.join().unwrap().unwrap();
        assert_eq!(summary.dropped, 6);

        let r = lock(&fw).report();
        let path = std::env::temp_dir().join(format!("stateful-firewall-test-{}.json", std::process::id()));
        cli::write_json_line(&path, &r).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"allowed_flows": 4, "established": 1, "unsolicited_syn": 1, "stray": 5,
                "passed": 11, "dropped": 6, "evicted": 0, "tracked": 0})
        );
    }
}
