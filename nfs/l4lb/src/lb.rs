//! [`Lb`]: the load balancer's packet function and its state (VIPs and
//! their rings, backends, server ids, the connection tables, counters).
//!
//! [`Lb::process`] takes one Ethernet frame, the worker it came from and
//! the time, and answers an [`Action`]; it does no I/O, so a table of
//! frames tests it (`tests/katran_fixtures.rs`). It follows Katran's XDP
//! program (`balancer.bpf.c`, `pckt_parsing.h`, `handle_icmp.h`,
//! `pckt_encap.h`) step for step:
//!
//! 1. **Parse.** Ethernet, then IPv4 (dropped when it has options or is a
//!    fragment) or IPv6 (dropped when its next header is a fragment
//!    header); anything else passes. ICMP: an echo request to a VIP address
//!    is answered in place ([`Action::Reply`]); a destination-unreachable
//!    (v4) or packet-too-big / destination-unreachable (v6) is routed by
//!    the packet it quotes, turned around (so it reaches the backend that
//!    holds the connection); other ICMP passes. Then TCP or UDP; other
//!    protocols pass.
//! 2. **VIP.** `(destination, port, protocol)`, else `(destination, 0,
//!    protocol)` with the destination port then left out of the hash and
//!    the table key. No VIP: pass.
//! 3. **Backend**, first found of:
//!    - QUIC VIPs: the server id in the destination connection ID of
//!      packets other than Initial and 0-RTT ([`quic_server_id`]);
//!    - TCP packets other than SYNs: the server id in a TCP option of kind
//!      `0xB7`, length 6 ([`tpr_server_id`]);
//!    - packets other than SYNs: the worker's connection table (UDP
//!      entries only for `udp_timeout_ms` after they were last seen);
//!    - the VIP's Maglev ring, at Katran's flow hash (source address and
//!      ports) modulo 65537, and the answer is written to the table
//!      (except for RSTs and ICMP errors).
//!
//!    A server id routes only when it is not 0 and names a configured
//!    backend (of any VIP, as Katran's server-id map is global); otherwise
//!    it falls back to the table and the ring, counted. A backend found by
//!    server id is written to the table too, so the flow's later packets
//!    without one stay with it.
//! 4. **Out.** DSR ([`Mode::Dsr`]): the destination MAC becomes the
//!    backend's, [`Action::Forward`]. IPIP ([`Mode::Ipip`]):
//!    [`Action::Encap`] with the Ethernet and outer IP header to put in
//!    front of the frame's IP packet, byte for byte as Katran writes them
//!    (outer source `172.16.x.y` or `100::x:y` from the client's address
//!    and port, TTL 64, the inner ToS copied, Ethernet to the gateway MAC).
//!
//! Counters: per VIP (packets, IP bytes, SYNs, table hits and misses,
//! server-id hits and fallbacks, ring picks, drops for want of a backend),
//! per backend (packets, IP bytes), and overall (passed, replies, drops by
//! reason, table inserts, evictions and expired UDP entries).
//!
//! Where `l4lb` parts from Katran, on purpose:
//! - it answers ICMP echo only for VIP addresses (Katran answers any);
//! - an ICMP error is routed by table then ring, and never written to
//!   the table (Katran takes a quoted SYN for a new connection);
//! - the size limit (`max_packet_size`) applies to IPIP only, where the
//!   packet grows; DSR does not change a packet's size;
//! - a packet whose only backend would need IPv6 in IPv4 is dropped
//!   (`family`), where Katran would write a broken header.

use std::net::{IpAddr, Ipv4Addr};

use hashbrown::{HashMap, HashSet};
use serde::Serialize;

use crate::config::{Config, Mode, VipConf};
use crate::hash;
use crate::maglev::{self, Endpoint, EMPTY, RING_SIZE};
use crate::table::{ConnTable, Entry, FlowKey};

/// Most workers with a table of their own; a higher worker index shares
/// (index modulo this).
pub const MAX_WORKERS: usize = 64;

/// TCP option kind of Katran's TCP packet routing (TPR) server id.
pub const TPR_KIND: u8 = 0xB7;
/// Its length: kind, length, a 32-bit id.
pub const TPR_LEN: usize = 6;
/// Most TCP options looked at for it (Katran's `TCP_HDR_OPT_MAX_OPT_CHECKS`).
pub const TPR_MAX_OPTIONS: usize = 15;
/// Shortest QUIC connection id routed on (Katran's `QUIC_MIN_CONNID_LEN`).
pub const QUIC_MIN_CID_LEN: usize = 8;
/// TTL / hop limit of the packets it writes (Katran's `DEFAULT_TTL`).
pub const TTL: u8 = 64;

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ICMPV6: u8 = 58;

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers.
    Truncated,
    /// A wrong IP version.
    Malformed,
    /// An IPv4 header with options (Katran parses fixed offsets).
    IpOptions,
    /// An IP fragment (it has no ports to hash, or not all of them).
    Fragment,
    /// IPIP: longer than `max_packet_size`.
    TooBig,
    /// The VIP's ring is empty (every backend weight 0 or removed).
    NoBackend,
    /// IPIP: the backend is IPv4 and the packet IPv6.
    Family,
    /// DSR: the backend has no MAC (a config built past [`Config::parse`]).
    NoMac,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::IpOptions,
        DropReason::Fragment,
        DropReason::TooBig,
        DropReason::NoBackend,
        DropReason::Family,
        DropReason::NoMac,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::IpOptions => "ip_options",
            DropReason::Fragment => "fragment",
            DropReason::TooBig => "too_big",
            DropReason::NoBackend => "no_backend",
            DropReason::Family => "family",
            DropReason::NoMac => "no_mac",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The Ethernet and outer IP header of an IPIP packet: the packet to send
/// is these bytes, then the frame from its IP header on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapHeader {
    buf: [u8; ETH_LEN + 40],
    len: u8,
}

impl EncapHeader {
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The packet to send for `frame` (the frame the action was given for).
    pub fn apply(&self, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::from(self.len) + frame.len().saturating_sub(ETH_LEN));
        out.extend_from_slice(self.bytes());
        out.extend_from_slice(frame.get(ETH_LEN..).unwrap_or(&[]));
        out
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Not for the load balancer (not IP, no VIP, another protocol, ARP):
    /// let it go on unchanged (Katran's `XDP_PASS`).
    Pass,
    /// Drop it (Katran's `XDP_DROP`), counted by reason.
    Drop(DropReason),
    /// DSR: the frame was rewritten in place (its destination MAC is the
    /// backend's); send it on (Katran's `XDP_TX`).
    Forward { backend: u32 },
    /// IPIP: send [`EncapHeader::apply`] of the frame (Katran's `XDP_TX`);
    /// the frame itself is unchanged.
    Encap { backend: u32, header: EncapHeader },
    /// The frame was rewritten in place into an ICMP echo reply; send it
    /// back where it came from (Katran's `XDP_TX`).
    Reply,
}

impl Action {
    /// Katran's return code for this action.
    pub fn xdp(&self) -> &'static str {
        match self {
            Action::Pass => "XDP_PASS",
            Action::Drop(_) => "XDP_DROP",
            Action::Forward { .. } | Action::Encap { .. } | Action::Reply => "XDP_TX",
        }
    }
}

/// A server id found in a TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tpr {
    /// No option of kind `0xB7` among the first options.
    Absent,
    /// The option with id 0 (none), or with a length other than 6.
    Unusable,
    Id(u32),
}

/// The server id of a TCP segment whose header starts at `tcp` (Katran's
/// `tcp_hdr_opt_lookup_server_id`): at most [`TPR_MAX_OPTIONS`] options
/// are looked at, an end-of-options or a length running past the header
/// ends the search, and the id is read as Katran reads it (the four bytes
/// as a little-endian `u32`).
pub fn tpr_server_id(frame: &[u8], tcp: usize) -> Tpr {
    let Some(&off_byte) = frame.get(tcp + 12) else { return Tpr::Absent };
    let doff = usize::from(off_byte >> 4) * 4;
    if doff < 20 || doff - 20 < TPR_LEN {
        return Tpr::Absent;
    }
    let mut remaining = doff - 20;
    let mut at = tcp + 20;
    for _ in 0..TPR_MAX_OPTIONS {
        let Some(&kind) = frame.get(at) else { return Tpr::Absent };
        match kind {
            0 => return Tpr::Absent, // end of options
            1 => {
                remaining -= 1;
                at += 1;
            }
            _ => {
                if remaining < 2 {
                    return Tpr::Absent;
                }
                let Some(&len) = frame.get(at + 1) else { return Tpr::Absent };
                let len = usize::from(len);
                if len > remaining {
                    return Tpr::Absent;
                }
                if kind == TPR_KIND {
                    if len != TPR_LEN {
                        return Tpr::Unusable;
                    }
                    let Some(b) = frame.get(at + 2..at + 6) else { return Tpr::Absent };
                    let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    return if id == 0 { Tpr::Unusable } else { Tpr::Id(id) };
                }
                remaining -= len;
                at += len;
            }
        }
        if remaining == 0 {
            return Tpr::Absent;
        }
    }
    Tpr::Absent
}

/// What a QUIC packet says of its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quic {
    /// A long-header Initial or 0-RTT packet: its connection id is the
    /// client's choice, so the ring decides.
    Initial,
    /// No usable id: too short, a connection id shorter than 8 bytes, or
    /// version 0.
    NoId,
    /// The server id of a connection id of version 1, 2 or 3.
    Id { version: u8, id: u32 },
}

/// The server id in a QUIC packet whose UDP header starts at `udp`
/// (Katran's `parse_quic`). The destination connection id is at byte 6 of
/// a long header (after flags, version and its length, which must be at
/// least 8), at byte 1 of a short one. Its first byte's top two bits are
/// the version: v1 holds a 16-bit id in bits 2..18, v2 a 24-bit id in
/// bytes 1..4, v3 a 32-bit id in bytes 1..5.
pub fn quic_server_id(frame: &[u8], udp: usize) -> Quic {
    let q = udp + 8;
    let Some(&flags) = frame.get(q) else { return Quic::NoId };
    let cid = if flags & 0x80 != 0 {
        let Some(h) = frame.get(q..q + 6 + QUIC_MIN_CID_LEN) else { return Quic::NoId };
        if flags & 0x30 < 0x20 {
            return Quic::Initial;
        }
        if usize::from(h[5]) < QUIC_MIN_CID_LEN {
            return Quic::NoId;
        }
        &h[6..]
    } else {
        let Some(h) = frame.get(q..q + 1 + QUIC_MIN_CID_LEN) else { return Quic::NoId };
        &h[1..]
    };
    let c = |i: usize| u32::from(cid[i]);
    let version = cid[0] >> 6;
    let id = match version {
        1 => ((c(0) & 0x3f) << 10) | (c(1) << 2) | (c(2) >> 6),
        2 => (c(1) << 16) | (c(2) << 8) | c(3),
        3 => (c(1) << 24) | (c(2) << 16) | (c(3) << 8) | c(4),
        _ => return Quic::NoId,
    };
    Quic::Id { version, id }
}

/// Counters of one VIP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VipCounters {
    pub packets: u64,
    /// IP bytes (header and payload).
    pub bytes: u64,
    /// TCP SYNs (new connections, always routed by the ring).
    pub syns: u64,
    pub table_hits: u64,
    /// Packets other than SYNs that the table did not know.
    pub table_misses: u64,
    pub server_id_hits: u64,
    /// A server id was looked for and was 0, malformed or unknown (QUIC:
    /// any packet past the Initial without a usable id).
    pub server_id_fallbacks: u64,
    /// Routed by the ring.
    pub ring: u64,
    /// Dropped: the ring was empty.
    pub no_backend: u64,
}

/// Counters of one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendCounters {
    pub packets: u64,
    pub bytes: u64,
}

/// Counters of the whole load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub packets: u64,
    pub passed: u64,
    pub forwarded: u64,
    pub encapsulated: u64,
    pub replies: u64,
    /// ICMP errors routed to a backend by the packet they quote.
    pub icmp_errors: u64,
    pub drops: [u64; DropReason::ALL.len()],
    pub table_inserts: u64,
    pub table_evictions: u64,
    /// UDP entries found older than `udp_timeout_ms` (then a miss).
    pub table_expired: u64,
}

impl Totals {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct VipKey {
    addr: [u8; 16],
    port: u16,
    proto: u8,
}

#[derive(Debug)]
struct Vip {
    conf: VipConf,
    /// Backend index per slot, or [`EMPTY`].
    ring: Vec<u32>,
    counters: VipCounters,
}

#[derive(Debug)]
struct Backend {
    address: IpAddr,
    mac: Option<[u8; 6]>,
    counters: BackendCounters,
}

/// An address as tables key it: IPv4 as IPv4-mapped IPv6, so that the two
/// families never meet.
fn key_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

fn mapped_v4(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&b[..4]);
    a
}

fn addr16(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    a
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// One's-complement `a + b` (16 bits, end-around carry).
fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The flow as parsed (after ICMP's turn-around), with what the later
/// steps need.
struct Pkt {
    v6: bool,
    /// The ToS / traffic class of the outer header.
    tos: u8,
    /// Katran's `pkt_bytes`: IPv4 total length, IPv6 payload length.
    pkt_bytes: u16,
    key: FlowKey,
    /// The client's address as on the wire (4 or 16 bytes).
    src_wire: [u8; 16],
    l4: usize,
    icmp: bool,
    syn: bool,
    rst: bool,
}

impl Pkt {
    fn ip_bytes(&self) -> u64 {
        u64::from(self.pkt_bytes) + if self.v6 { 40 } else { 0 }
    }

    fn hash(&self) -> u32 {
        if self.v6 {
            hash::flow_hash_v6(self.src_wire, self.key.sport, self.key.dport)
        } else {
            let s = &self.src_wire;
            hash::flow_hash_v4([s[0], s[1], s[2], s[3]], self.key.sport, self.key.dport)
        }
    }
}

/// Parse result: go on with a flow, or stop with an action.
enum Parsed {
    Flow(Pkt),
    Done(Action),
}

/// The load balancer; see the [module docs](self).
#[derive(Debug)]
pub struct Lb {
    mode: Mode,
    gateway_mac: [u8; 6],
    max_packet_size: usize,
    udp_timeout_ms: u64,
    table_capacity: usize,
    vips: Vec<Vip>,
    vip_index: HashMap<VipKey, u32>,
    vip_addrs: HashSet<[u8; 16]>,
    backends: Vec<Backend>,
    server_ids: HashMap<u32, u32>,
    tables: Vec<ConnTable>,
    totals: Totals,
}

/// The ring of one VIP over the global backend list.
fn vip_ring(conf: &VipConf, index_of: &HashMap<IpAddr, u32>) -> Vec<u32> {
    let mut eps: Vec<Endpoint> = conf
        .backends
        .iter()
        .filter(|b| b.weight > 0)
        .filter_map(|b| {
            index_of.get(&b.address).map(|&num| Endpoint { num, weight: b.weight, hash: hash::real_hash(b.address) })
        })
        .collect();
    maglev::sort_endpoints(&mut eps);
    // RING_SIZE is prime, so this cannot fail; an empty ring drops.
    maglev::ring(&eps, RING_SIZE, conf.hash).unwrap_or_else(|_| vec![EMPTY; RING_SIZE as usize])
}

impl Lb {
    /// A load balancer for `cfg` (checked by [`Config::parse`]).
    pub fn new(cfg: Config) -> Lb {
        let mut lb = Lb {
            mode: cfg.mode,
            gateway_mac: [0; 6],
            max_packet_size: cfg.max_packet_size,
            udp_timeout_ms: cfg.udp_timeout_ms,
            table_capacity: cfg.table_capacity,
            vips: Vec::new(),
            vip_index: HashMap::new(),
            vip_addrs: HashSet::new(),
            backends: Vec::new(),
            server_ids: HashMap::new(),
            tables: Vec::new(),
            totals: Totals::default(),
        };
        lb.reconfigure(cfg);
        lb
    }

    /// Takes a new configuration live: rings rebuilt, counters of VIPs and
    /// backends that stay are kept, table entries that name a backend still
    /// there are kept (and follow it), the others dropped. Returns how
    /// many table entries were dropped.
    pub fn reconfigure(&mut self, cfg: Config) -> usize {
        let mut index_of: HashMap<IpAddr, u32> = HashMap::new();
        let mut backends: Vec<Backend> = Vec::new();
        let mut server_ids = HashMap::new();
        let old_addrs: Vec<IpAddr> = self.backends.iter().map(|b| b.address).collect();
        let old_backends: HashMap<IpAddr, BackendCounters> =
            self.backends.drain(..).map(|b| (b.address, b.counters)).collect();
        for v in &cfg.vips {
            for b in &v.backends {
                let i = *index_of.entry(b.address).or_insert_with(|| {
                    backends.push(Backend {
                        address: b.address,
                        mac: None,
                        counters: old_backends.get(&b.address).cloned().unwrap_or_default(),
                    });
                    (backends.len() - 1) as u32
                });
                if b.mac.is_some() {
                    backends[i as usize].mac = b.mac;
                }
                for id in &b.server_ids {
                    server_ids.insert(*id, i);
                }
            }
        }
        let old_vips: HashMap<String, VipCounters> =
            self.vips.drain(..).map(|v| (v.conf.label(), v.counters)).collect();
        let mut vip_index = HashMap::new();
        let mut vip_addrs = HashSet::new();
        let mut vips = Vec::with_capacity(cfg.vips.len());
        for conf in cfg.vips {
            let key = VipKey { addr: key_addr(conf.address), port: conf.port, proto: conf.proto.number() };
            vip_index.insert(key, vips.len() as u32);
            vip_addrs.insert(key_addr(conf.address));
            let ring = vip_ring(&conf, &index_of);
            let counters = old_vips.get(&conf.label()).cloned().unwrap_or_default();
            vips.push(Vip { conf, ring, counters });
        }
        // Table entries follow their backend to its new index.
        let remap: Vec<Option<u32>> = old_addrs.iter().map(|a| index_of.get(a).copied()).collect();
        let mut dropped = 0;
        for t in &mut self.tables {
            dropped += t.retain(|e| remap.get(e.backend as usize).copied().flatten());
        }
        self.mode = cfg.mode;
        self.gateway_mac = cfg.gateway_mac.unwrap_or([0; 6]);
        self.max_packet_size = cfg.max_packet_size;
        self.udp_timeout_ms = cfg.udp_timeout_ms;
        if cfg.table_capacity != self.table_capacity {
            // A new size starts the tables afresh.
            self.table_capacity = cfg.table_capacity;
            self.tables.clear();
        }
        self.vips = vips;
        self.vip_index = vip_index;
        self.vip_addrs = vip_addrs;
        self.backends = backends;
        self.server_ids = server_ids;
        dropped
    }
}

impl Lb {
    /// Decides what to do with `frame` (an Ethernet frame) that arrived on
    /// `worker` at `now_ms` (any monotonic clock in milliseconds); see the
    /// [module docs](self). [`Action::Forward`] and [`Action::Reply`] have
    /// rewritten `frame`; every other action leaves it as it was. Never
    /// panics, whatever the bytes.
    pub fn process(&mut self, frame: &mut [u8], worker: usize, now_ms: u64) -> Action {
        self.totals.packets += 1;
        let action = match self.parse(frame) {
            Parsed::Done(a) => a,
            Parsed::Flow(p) => self.route(frame, p, worker, now_ms),
        };
        match action {
            Action::Pass => self.totals.passed += 1,
            Action::Drop(r) => self.totals.drops[r.index()] += 1,
            Action::Forward { .. } => self.totals.forwarded += 1,
            Action::Encap { .. } => self.totals.encapsulated += 1,
            Action::Reply => self.totals.replies += 1,
        }
        action
    }

    fn parse(&self, frame: &mut [u8]) -> Parsed {
        use Parsed::Done;
        if frame.len() < ETH_LEN {
            return Done(Action::Drop(DropReason::Truncated));
        }
        let mut p = Pkt {
            v6: false,
            tos: 0,
            pkt_bytes: 0,
            key: FlowKey::default(),
            src_wire: [0; 16],
            l4: 0,
            icmp: false,
            syn: false,
            rst: false,
        };
        match be16(frame, 12) {
            ETH_P_IP => {
                let ip = ETH_LEN;
                if frame.len() < ip + 20 {
                    return Done(Action::Drop(DropReason::Truncated));
                }
                if frame[ip] >> 4 != 4 {
                    return Done(Action::Drop(DropReason::Malformed));
                }
                if frame[ip] & 0x0f != 5 {
                    return Done(Action::Drop(DropReason::IpOptions));
                }
                if be16(frame, ip + 6) & 0x3fff != 0 {
                    return Done(Action::Drop(DropReason::Fragment));
                }
                p.tos = frame[ip + 1];
                p.pkt_bytes = be16(frame, ip + 2);
                p.key.proto = frame[ip + 9];
                p.l4 = ip + 20;
                if p.key.proto == IPPROTO_ICMP {
                    if let Some(done) = self.icmp4(frame, &mut p) {
                        return Done(done);
                    }
                } else {
                    p.src_wire[..4].copy_from_slice(&frame[ip + 12..ip + 16]);
                    p.key.src = mapped_v4(&frame[ip + 12..]);
                    p.key.dst = mapped_v4(&frame[ip + 16..]);
                }
            }
            ETH_P_IPV6 => {
                let ip = ETH_LEN;
                if frame.len() < ip + 40 {
                    return Done(Action::Drop(DropReason::Truncated));
                }
                if frame[ip] >> 4 != 6 {
                    return Done(Action::Drop(DropReason::Malformed));
                }
                p.v6 = true;
                p.tos = (frame[ip] << 4) | (frame[ip + 1] >> 4);
                p.pkt_bytes = be16(frame, ip + 4);
                p.key.proto = frame[ip + 6];
                p.l4 = ip + 40;
                match p.key.proto {
                    IPPROTO_FRAGMENT => return Done(Action::Drop(DropReason::Fragment)),
                    IPPROTO_ICMPV6 => {
                        if let Some(done) = self.icmp6(frame, &mut p) {
                            return Done(done);
                        }
                    }
                    _ => {
                        p.src_wire = addr16(&frame[ip + 8..]);
                        p.key.src = p.src_wire;
                        p.key.dst = addr16(&frame[ip + 24..]);
                    }
                }
            }
            _ => return Done(Action::Pass),
        }
        // The transport header: ports (turned around for an ICMP error's
        // quoted packet) and TCP flags.
        let l4 = p.l4;
        let need = match (p.key.proto, p.icmp) {
            (IPPROTO_TCP, false) => 20,
            (IPPROTO_TCP, true) => 14,
            (IPPROTO_UDP, _) => 8,
            _ => return Done(Action::Pass),
        };
        if frame.len() < l4 + need {
            return Done(Action::Drop(DropReason::Truncated));
        }
        let (a, b) = (be16(frame, l4), be16(frame, l4 + 2));
        (p.key.sport, p.key.dport) = if p.icmp { (b, a) } else { (a, b) };
        if p.key.proto == IPPROTO_TCP {
            p.syn = frame[l4 + 13] & 0x02 != 0;
            p.rst = frame[l4 + 13] & 0x04 != 0;
        }
        Parsed::Flow(p)
    }

    /// ICMPv4 at `p.l4`: `Some(action)` when done, `None` to route the
    /// quoted packet (then `p` holds its turned-around flow).
    fn icmp4(&self, frame: &mut [u8], p: &mut Pkt) -> Option<Action> {
        let icmp = p.l4;
        if frame.len() < icmp + 8 {
            return Some(Action::Drop(DropReason::Truncated));
        }
        match frame[icmp] {
            8 => {
                if !self.vip_addrs.contains(&mapped_v4(&frame[ETH_LEN + 16..])) {
                    return Some(Action::Pass);
                }
                echo_reply_v4(frame);
                return Some(Action::Reply);
            }
            3 => {}
            _ => return Some(Action::Pass),
        }
        let inner = icmp + 8;
        if frame.len() < inner + 20 {
            return Some(Action::Drop(DropReason::Truncated));
        }
        if frame[inner] & 0x0f != 5 {
            return Some(Action::Drop(DropReason::IpOptions));
        }
        p.icmp = true;
        p.key.proto = frame[inner + 9];
        p.src_wire[..4].copy_from_slice(&frame[inner + 16..inner + 20]);
        p.key.src = mapped_v4(&frame[inner + 16..]);
        p.key.dst = mapped_v4(&frame[inner + 12..]);
        p.l4 = inner + 20;
        None
    }

    /// ICMPv6 at `p.l4`; as [`Lb::icmp4`].
    fn icmp6(&self, frame: &mut [u8], p: &mut Pkt) -> Option<Action> {
        let icmp = p.l4;
        if frame.len() < icmp + 8 {
            return Some(Action::Drop(DropReason::Truncated));
        }
        match frame[icmp] {
            128 => {
                if !self.vip_addrs.contains(&addr16(&frame[ETH_LEN + 24..])) {
                    return Some(Action::Pass);
                }
                echo_reply_v6(frame);
                return Some(Action::Reply);
            }
            1 | 2 => {}
            _ => return Some(Action::Pass),
        }
        let inner = icmp + 8;
        if frame.len() < inner + 40 {
            return Some(Action::Drop(DropReason::Truncated));
        }
        p.icmp = true;
        p.key.proto = frame[inner + 6];
        p.src_wire = addr16(&frame[inner + 24..]);
        p.key.src = p.src_wire;
        p.key.dst = addr16(&frame[inner + 8..]);
        p.l4 = inner + 40;
        None
    }

    fn table(&mut self, worker: usize) -> &mut ConnTable {
        let w = worker % MAX_WORKERS;
        while self.tables.len() <= w {
            self.tables.push(ConnTable::new(self.table_capacity));
        }
        &mut self.tables[w]
    }

    /// Writes `backend` as the flow's (Katran's LRU update).
    fn remember(&mut self, worker: usize, key: FlowKey, backend: u32, now_ms: u64) {
        let evicted = self.table(worker).insert(key, Entry { backend, atime_ms: now_ms });
        self.totals.table_inserts += 1;
        if evicted {
            self.totals.table_evictions += 1;
        }
    }

    fn route(&mut self, frame: &mut [u8], mut p: Pkt, worker: usize, now_ms: u64) -> Action {
        let mut key = VipKey { addr: p.key.dst, port: p.key.dport, proto: p.key.proto };
        let vi = match self.vip_index.get(&key) {
            Some(&i) => i as usize,
            None => {
                key.port = 0;
                match self.vip_index.get(&key) {
                    Some(&i) => {
                        // A VIP of every port: the port is not part of the flow.
                        p.key.dport = 0;
                        i as usize
                    }
                    None => return Action::Pass,
                }
            }
        };
        if self.mode == Mode::Ipip && frame.len() > self.max_packet_size {
            return Action::Drop(DropReason::TooBig);
        }
        let ip_bytes = p.ip_bytes();
        let quic = self.vips[vi].conf.quic;
        let c = &mut self.vips[vi].counters;
        c.packets += 1;
        c.bytes += ip_bytes;
        if p.icmp {
            self.totals.icmp_errors += 1;
        }

        let mut dst: Option<u32> = None;
        if quic && p.key.proto == IPPROTO_UDP && !p.icmp {
            match quic_server_id(frame, p.l4) {
                Quic::Initial => {}
                Quic::Id { id, .. } if id != 0 => match self.server_ids.get(&id) {
                    Some(&b) => dst = Some(b),
                    None => self.vips[vi].counters.server_id_fallbacks += 1,
                },
                _ => self.vips[vi].counters.server_id_fallbacks += 1,
            }
        }
        if dst.is_none() && p.key.proto == IPPROTO_TCP && !p.syn && !p.icmp {
            match tpr_server_id(frame, p.l4) {
                Tpr::Absent => {}
                Tpr::Id(id) => match self.server_ids.get(&id) {
                    Some(&b) => dst = Some(b),
                    None => self.vips[vi].counters.server_id_fallbacks += 1,
                },
                Tpr::Unusable => self.vips[vi].counters.server_id_fallbacks += 1,
            }
        }
        if let Some(b) = dst {
            self.vips[vi].counters.server_id_hits += 1;
            self.remember(worker, p.key, b, now_ms);
        }
        if dst.is_none() && !p.syn {
            let udp = p.key.proto == IPPROTO_UDP;
            let timeout = self.udp_timeout_ms;
            let mut expired = false;
            if let Some(e) = self.table(worker).get(&p.key) {
                if udp && now_ms.saturating_sub(e.atime_ms) > timeout {
                    expired = true;
                } else {
                    e.atime_ms = now_ms;
                    dst = Some(e.backend);
                }
            }
            let c = &mut self.vips[vi].counters;
            if dst.is_some() {
                c.table_hits += 1;
            } else {
                c.table_misses += 1;
            }
            if expired {
                self.totals.table_expired += 1;
            }
        }
        let backend = match dst {
            Some(b) => b,
            None => {
                let slot = p.hash() % RING_SIZE;
                let b = self.vips[vi].ring[slot as usize];
                let c = &mut self.vips[vi].counters;
                if b == EMPTY {
                    c.no_backend += 1;
                    return Action::Drop(DropReason::NoBackend);
                }
                c.ring += 1;
                if p.syn {
                    c.syns += 1;
                }
                if !p.rst && !p.icmp {
                    self.remember(worker, p.key, b, now_ms);
                }
                b
            }
        };
        let be = &mut self.backends[backend as usize];
        be.counters.packets += 1;
        be.counters.bytes += ip_bytes;
        match self.mode {
            Mode::Dsr => match be.mac {
                Some(mac) => {
                    frame[..6].copy_from_slice(&mac);
                    Action::Forward { backend }
                }
                None => Action::Drop(DropReason::NoMac),
            },
            Mode::Ipip => match encap(frame, &p, be.address, self.gateway_mac) {
                Some(header) => Action::Encap { backend, header },
                None => Action::Drop(DropReason::Family),
            },
        }
    }
}

/// Katran's outer header for `p` to `to`: Ethernet to the gateway from
/// the frame's destination MAC, then IPv4 (`172.16.x.y`, ID 0, TTL 64,
/// protocol 4) or IPv6 (`100::x:y`, hop limit 64, next header 4 or 41),
/// the inner ToS / traffic class copied. `None` for an IPv6 packet to an
/// IPv4 backend.
fn encap(frame: &[u8], p: &Pkt, to: IpAddr, gateway: [u8; 6]) -> Option<EncapHeader> {
    let mut h = EncapHeader { buf: [0; ETH_LEN + 40], len: 0 };
    let b = &mut h.buf;
    b[..6].copy_from_slice(&gateway);
    b[6..12].copy_from_slice(&frame[..6]);
    let [sport_hi, sport_lo] = p.key.sport.to_be_bytes();
    // The client's last four address bytes (all of an IPv4 address).
    let s: [u8; 4] = if p.v6 {
        [p.src_wire[12], p.src_wire[13], p.src_wire[14], p.src_wire[15]]
    } else {
        [p.src_wire[0], p.src_wire[1], p.src_wire[2], p.src_wire[3]]
    };
    match to {
        IpAddr::V4(dst) => {
            if p.v6 {
                return None;
            }
            b[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
            let ip = &mut b[ETH_LEN..ETH_LEN + 20];
            ip[0] = 0x45;
            ip[1] = p.tos;
            ip[2..4].copy_from_slice(&p.pkt_bytes.wrapping_add(20).to_be_bytes());
            ip[8] = TTL;
            ip[9] = IPPROTO_IPIP;
            let src = Ipv4Addr::new(172, 16, s[2] ^ sport_lo, s[3] ^ sport_hi);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = ustack::wire::checksum::fold(ustack::wire::checksum::ones_complement_sum(ip, 0));
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            h.len = (ETH_LEN + 20) as u8;
        }
        IpAddr::V6(dst) => {
            b[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let ip = &mut b[ETH_LEN..ETH_LEN + 40];
            ip[0] = 0x60 | (p.tos >> 4);
            ip[1] = (p.tos & 0x0f) << 4;
            let (len, next) =
                if p.v6 { (p.pkt_bytes.wrapping_add(40), IPPROTO_IPV6) } else { (p.pkt_bytes, IPPROTO_IPIP) };
            ip[4..6].copy_from_slice(&len.to_be_bytes());
            ip[6] = next;
            ip[7] = TTL;
            let mut src = [0u8; 16];
            src[0] = 0x01;
            src[12] = s[0] ^ sport_hi;
            src[13] = s[1] ^ sport_lo;
            src[14] = s[2];
            src[15] = s[3];
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst.octets());
            h.len = (ETH_LEN + 40) as u8;
        }
    }
    Some(h)
}

fn swap_macs(frame: &mut [u8]) {
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&frame[..6]);
    frame.copy_within(6..12, 0);
    frame[6..12].copy_from_slice(&dst);
}

/// Turns an ICMPv4 echo request into its reply in place (Katran's
/// `send_icmp_reply`): type 0, checksum adjusted, TTL 64, addresses and
/// MACs swapped, IP checksum recomputed.
fn echo_reply_v4(frame: &mut [u8]) {
    let ip = ETH_LEN;
    let icmp = ip + 20;
    frame[icmp] = 0;
    // The type is the high byte of the first word: 8 -> 0 lowers the sum
    // by 0x0800, so the checksum rises by as much.
    let c = ones_add(be16(frame, icmp + 2), 0x0800);
    frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    frame[ip + 8] = TTL;
    let mut a = [0u8; 4];
    a.copy_from_slice(&frame[ip + 12..ip + 16]);
    frame.copy_within(ip + 16..ip + 20, ip + 12);
    frame[ip + 16..ip + 20].copy_from_slice(&a);
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let sum = ustack::wire::checksum::fold(ustack::wire::checksum::ones_complement_sum(&frame[ip..ip + 20], 0));
    frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    swap_macs(frame);
}

/// Turns an ICMPv6 echo request into its reply in place (Katran's
/// `send_icmp6_reply`): type 129, checksum adjusted, hop limit 64,
/// addresses and MACs swapped.
fn echo_reply_v6(frame: &mut [u8]) {
    let ip = ETH_LEN;
    let icmp = ip + 40;
    frame[icmp] = 129;
    // 128 -> 129 raises the sum by 0x0100: the checksum falls by as much.
    let c = ones_add(be16(frame, icmp + 2), !0x0100);
    frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    frame[ip + 7] = TTL;
    let src = addr16(&frame[ip + 8..]);
    frame.copy_within(ip + 24..ip + 40, ip + 8);
    frame[ip + 24..ip + 40].copy_from_slice(&src);
    swap_macs(frame);
}

/// Counters of one VIP, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct VipReport {
    pub vip: String,
    pub hash: &'static str,
    pub backends: usize,
    #[serde(flatten)]
    pub counters: VipCounters,
}

/// Counters of one backend, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct BackendReport {
    pub address: IpAddr,
    #[serde(flatten)]
    pub counters: BackendCounters,
}

/// Everything the load balancer counted.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub packets: u64,
    pub passed: u64,
    pub forwarded: u64,
    pub encapsulated: u64,
    pub replies: u64,
    pub icmp_errors: u64,
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    pub table_entries: usize,
    pub table_capacity: usize,
    pub table_workers: usize,
    pub table_inserts: u64,
    pub table_evictions: u64,
    pub table_expired: u64,
    pub vips: Vec<VipReport>,
    pub backends: Vec<BackendReport>,
}

impl Report {
    /// A table for stdout.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let drops: Vec<String> = self.drops.iter().filter(|(_, &n)| n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "l4lb ({}): {} packets, {} forwarded, {} encapsulated, {} passed, {} replies, drops: {}",
            self.mode,
            self.packets,
            self.forwarded,
            self.encapsulated,
            self.passed,
            self.replies,
            if drops.is_empty() { "none".into() } else { drops.join(", ") }
        );
        let _ = writeln!(
            s,
            "connection tables: {} entries in {} worker table(s) of {}, {} inserts, {} evictions, {} expired",
            self.table_entries,
            self.table_workers,
            self.table_capacity,
            self.table_inserts,
            self.table_evictions,
            self.table_expired
        );
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>12} {:>8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>6}",
            "vip", "packets", "bytes", "syns", "tbl_hits", "tbl_miss", "sid_hit", "sid_fall", "ring", "nobk"
        );
        for v in &self.vips {
            let c = &v.counters;
            let _ = writeln!(
                s,
                "{:<28} {:>10} {:>12} {:>8} {:>10} {:>10} {:>8} {:>9} {:>8} {:>6}",
                v.vip,
                c.packets,
                c.bytes,
                c.syns,
                c.table_hits,
                c.table_misses,
                c.server_id_hits,
                c.server_id_fallbacks,
                c.ring,
                c.no_backend
            );
        }
        let _ = writeln!(s, "{:<28} {:>10} {:>12}", "backend", "packets", "bytes");
        for b in &self.backends {
            let _ = writeln!(s, "{:<28} {:>10} {:>12}", b.address.to_string(), b.counters.packets, b.counters.bytes);
        }
        s
    }
}

impl Lb {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Index of the VIP `(address, port, protocol)` (protocol 6 or 17).
    pub fn vip(&self, address: IpAddr, port: u16, proto: u8) -> Option<usize> {
        self.vip_index.get(&VipKey { addr: key_addr(address), port, proto }).map(|&i| i as usize)
    }

    pub fn vip_counters(&self, vip: usize) -> Option<&VipCounters> {
        self.vips.get(vip).map(|v| &v.counters)
    }

    /// The VIP's ring: a backend index per slot, or [`EMPTY`].
    pub fn ring(&self, vip: usize) -> Option<&[u32]> {
        self.vips.get(vip).map(|v| v.ring.as_slice())
    }

    /// Index of the backend at `address`.
    pub fn backend(&self, address: IpAddr) -> Option<u32> {
        self.backends.iter().position(|b| b.address == address).map(|i| i as u32)
    }

    pub fn backend_address(&self, backend: u32) -> Option<IpAddr> {
        self.backends.get(backend as usize).map(|b| b.address)
    }

    pub fn backend_counters(&self, backend: u32) -> Option<&BackendCounters> {
        self.backends.get(backend as usize).map(|b| &b.counters)
    }

    /// The backend of a server id.
    pub fn server(&self, id: u32) -> Option<u32> {
        self.server_ids.get(&id).copied()
    }

    /// Entries over all workers' tables.
    pub fn table_entries(&self) -> usize {
        self.tables.iter().map(ConnTable::len).sum()
    }

    /// The backend `worker`'s table holds for a flow (addresses, ports as
    /// the table keys them: 0 for the destination port of an every-port VIP).
    pub fn table_lookup(&self, worker: usize, src: (IpAddr, u16), dst: (IpAddr, u16), proto: u8) -> Option<u32> {
        let key = FlowKey { src: key_addr(src.0), dst: key_addr(dst.0), sport: src.1, dport: dst.1, proto };
        self.tables.get(worker % MAX_WORKERS)?.peek(&key).map(|e| e.backend)
    }

    pub fn report(&self) -> Report {
        Report {
            mode: self.mode.name(),
            packets: self.totals.packets,
            passed: self.totals.passed,
            forwarded: self.totals.forwarded,
            encapsulated: self.totals.encapsulated,
            replies: self.totals.replies,
            icmp_errors: self.totals.icmp_errors,
            drops: DropReason::ALL.iter().map(|r| (r.name(), self.totals.dropped(*r))).collect(),
            table_entries: self.table_entries(),
            table_capacity: self.table_capacity,
            table_workers: self.tables.len(),
            table_inserts: self.totals.table_inserts,
            table_evictions: self.totals.table_evictions,
            table_expired: self.totals.table_expired,
            vips: self
                .vips
                .iter()
                .map(|v| VipReport {
                    vip: v.conf.label(),
                    hash: v.conf.hash.name(),
                    backends: v.conf.backends.len(),
                    counters: v.counters.clone(),
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|b| BackendReport { address: b.address, counters: b.counters.clone() })
                .collect(),
        }
    }
}
