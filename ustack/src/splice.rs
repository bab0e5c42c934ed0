//! The TCP splicer μStack: L7 redirection by sequence and acknowledgement
//! translation, sans-IO.
//!
//! A client connects to a VIP; the splicer answers its SYN itself, with a
//! SYN cookie (no state for a half-open connection, so a SYN flood fills
//! nothing). Once the handshake completes and the client's first request
//! segment arrives, the splicer holds that segment and *asks* (an [`Ask`]:
//! the runtime publishes `FLOW_REQ` to the policy NF) where the connection
//! should go. The answer ([`Splicer::dest`]) names a backend, or rejects
//! (RST, or a canned `HTTP/1.1 503`). The splicer then opens a connection
//! to the backend from its SNAT address, reusing the client's initial
//! sequence number and options, and replays the held segments. From then
//! on every segment is forwarded with addresses, ports, sequence and
//! acknowledgement numbers, SACK blocks, timestamps and windows translated
//! in place, the checksums updated incrementally (RFC 1624). No copy, no
//! retransmission queue: loss recovery stays end to end.
//!
//! # Translation, and the options chosen
//!
//! - **Sequence numbers.** The SYN to the backend carries the client's ISN,
//!   so client → backend sequence numbers need no change; only the
//!   backend's ISN differs from the box's (the cookie), by one constant:
//!   backend → client `seq + d`, client → backend `ack - d`, client SACK
//!   edges `- d` (the backend's SACK edges are client sequence numbers,
//!   unchanged).
//! - **Timestamps.** The SYN to the backend carries the client's own TSval,
//!   so the backend echoes client clock values (unchanged). The backend's
//!   TSval is shifted onto the box's clock (the cookie's TSval) and the
//!   client's TSecr shifted back.
//! - **Window scale.** The box offers `wscale` (default 7) to the client and
//!   the client's own shift to the backend. Windows are rescaled where the
//!   two handshakes differ (a backend that refuses scaling, or scales by
//!   another shift), rounding down and never to zero from non-zero.
//! - **MSS and SACK** are offered to the backend as the client offered them
//!   (MSS from the cookie's table of 4 values). A backend that drops SACK
//!   or timestamps the client was promised is counted (`option_mismatch`)
//!   and spliced anyway: Linux peers accept segments without them.
//! - **SYN cookies** follow Linux's layout: a keyed SipHash of the
//!   4-tuple, the client's ISN, a 64-second counter in the top byte and
//!   an MSS index; accepted for two counter periods. With timestamps, the
//!   client's window scale and SACK permission ride in the low 5 bits of
//!   the box's TSval (echoed back in TSecr); a client without timestamps
//!   gets neither scaling nor SACK, as from Linux under syncookies.
//!
//! # What is bounded
//! Flows per splicer (`max_flows`; closing flows are evicted first,
//! counted; else the client gets a RST), segments held before the splice
//! (`max_held` per flow, `max_held_total` in all; more are dropped unacked
//! and the client retransmits them later), the neighbour table, and every
//! wait: the policy's answer (`request_timeout`), the backend's SYN-ACK
//! (`connect_timeout`, SYN resent every `syn_rto`), idleness, and the
//! linger of a closed flow.
//!
//! IPv4 without VLAN tags only: other frames are not the splicer's
//! ([`Splicer::claims`] says no) and are bridged as usual.

use core::net::Ipv4Addr;
use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashMap;

use crate::wire::checksum::{fold, ones_complement_sum, pseudo_header_v4};

/// Bytes a frame owner gives the splicer to read and rewrite.
pub trait Frame {
    /// The frame's bytes.
    fn bytes(&self) -> &[u8];
    /// The frame's bytes, to rewrite in place.
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl Frame for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// How a rejected connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A RST to the client.
    Reset,
    /// `HTTP/1.1 503 Service Unavailable`, then FIN.
    Http503,
}

/// The splicer's settings (times in nanoseconds).
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses and ports the splicer takes connections for.
    pub vips: Vec<(Ipv4Addr, u16)>,
    /// Source address toward the backends.
    pub snat: Ipv4Addr,
    /// The box's MAC on the clients' port and on the backends' port.
    pub client_side_mac: [u8; 6],
    /// See `client_side_mac`.
    pub backend_side_mac: [u8; 6],
    /// Flows at most.
    pub max_flows: usize,
    /// Client segments held per flow before the splice.
    pub max_held: usize,
    /// Client segments held in all.
    pub max_held_total: usize,
    /// How long the policy has to answer.
    pub request_timeout: u64,
    /// How long a backend has to answer the SYN.
    pub connect_timeout: u64,
    /// SYN (and ARP) retransmission interval.
    pub syn_rto: u64,
    /// A flow with no packet for this long is reset both ways.
    pub idle_timeout: u64,
    /// A closed flow's entry stays this long (late segments translated).
    pub linger: u64,
    /// Backends tried per connection (the first included).
    pub max_attempts: u8,
    /// How rejects end.
    pub reject: Reject,
    /// SNAT source ports to use.
    pub ports: Range<u16>,
    /// Window scale offered to clients.
    pub wscale: u8,
}

impl Config {
    /// Defaults for everything but the addresses.
    pub fn new(vips: Vec<(Ipv4Addr, u16)>, snat: Ipv4Addr) -> Config {
        const MS: u64 = 1_000_000;
        Config {
            vips,
            snat,
            client_side_mac: [0; 6],
            backend_side_mac: [0; 6],
            max_flows: 65536,
            max_held: 4,
            max_held_total: 4096,
            request_timeout: 1000 * MS,
            connect_timeout: 1000 * MS,
            syn_rto: 200 * MS,
            idle_timeout: 60_000 * MS,
            linger: 2000 * MS,
            max_attempts: 3,
            reject: Reject::Http503,
            ports: 10000..65535,
            wscale: 7,
        }
    }
}

/// Which way a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toward {
    /// Out of the clients' port.
    Client,
    /// Out of the backends' port.
    Backend,
}

/// Where a frame the splicer claims comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A client, to a VIP.
    Client,
    /// A backend, to the SNAT address.
    Backend,
}

/// Why the splicer asks the policy again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskReason {
    /// A new connection.
    New,
    /// The previous backend answered the SYN with RST.
    Reset,
    /// The previous backend did not answer the SYN in time.
    Timeout,
}

/// A request for the policy: where should this connection go?
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The flow (answer with [`Splicer::dest`] under this id).
    pub flow_id: u64,
    /// The client and the VIP it connected to.
    pub client: (Ipv4Addr, u16),
    /// See `client`.
    pub vip: (Ipv4Addr, u16),
    /// 0 first, then 1, 2, ... for retries.
    pub attempt: u8,
    /// Why.
    pub reason: AskReason,
    /// The backend of the previous attempt.
    pub last: Option<(Ipv4Addr, u16)>,
    /// Where the request bytes are in the flow's first held frame
    /// ([`Splicer::held_frame`]).
    pub payload: Range<usize>,
}

/// What the policy answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Splice to this backend.
    Connect(Ipv4Addr, u16),
    /// Reject with the configured way, or as given.
    Reject(Reject),
}

/// How a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndWhy {
    /// FIN both ways.
    Closed,
    /// A RST from either side.
    Reset,
    /// Idle past `idle_timeout`.
    Idle,
    /// Rejected (by the policy, a timeout, or no backend).
    Rejected,
    /// Evicted to make room.
    Evicted,
    /// The runtime stopped.
    Shutdown,
}

/// A flow that left the splicer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// Its id.
    pub flow_id: u64,
    /// The client.
    pub client: (Ipv4Addr, u16),
    /// The VIP.
    pub vip: (Ipv4Addr, u16),
    /// The backend last chosen, if any.
    pub backend: Option<(Ipv4Addr, u16)>,
    /// How.
    pub why: EndWhy,
    /// Packets and bytes from the client, and to it.
    pub client_packets: u64,
    /// See `client_packets`.
    pub client_bytes: u64,
    /// See `client_packets`.
    pub server_packets: u64,
    /// See `client_packets`.
    pub server_bytes: u64,
    /// When it was created and last seen (ns).
    pub first_seen: u64,
    /// See `first_seen`.
    pub last_seen: u64,
}

/// What one call produced.
pub struct Out<F> {
    /// Frames rewritten in place, to send.
    pub tx: Vec<(F, Toward)>,
    /// Frames the splicer made (SYN-ACKs, SYNs, RSTs, ARP requests, 503s).
    pub made: Vec<(Vec<u8>, Toward)>,
    /// Questions for the policy.
    pub asks: Vec<Ask>,
    /// Flows that ended.
    pub ended: Vec<Ended>,
}

impl<F> Default for Out<F> {
    fn default() -> Self {
        Out { tx: Vec::new(), made: Vec::new(), asks: Vec::new(), ended: Vec::new() }
    }
}

impl<F> Out<F> {
    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty() && self.made.is_empty() && self.asks.is_empty() && self.ended.is_empty()
    }
}

/// Everything the splicer counts (taken and added by the runtime).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// SYN-ACKs with a cookie sent.
    pub syn_cookies: u64,
    /// Handshakes completed with a valid cookie.
    pub cookies_ok: u64,
    /// ACKs to a VIP with no flow and no valid cookie (answered RST).
    pub cookies_bad: u64,
    /// Questions to the policy (retries included).
    pub asks: u64,
    /// Of which retries after a failed backend.
    pub retries: u64,
    /// Connections spliced to a backend.
    pub spliced: u64,
    /// Rejected with RST / with 503.
    pub rejected_rst: u64,
    /// See `rejected_rst`.
    pub rejected_503: u64,
    /// The policy did not answer in time.
    pub policy_timeouts: u64,
    /// No policy NF to ask (absent, or its ring full).
    pub no_policy: u64,
    /// Backends that did not answer the SYN in time.
    pub connect_timeouts: u64,
    /// Backends that answered the SYN with RST.
    pub backend_resets: u64,
    /// Flows closed by FIN both ways, reset, idle.
    pub closed: u64,
    /// See `closed`.
    pub reset: u64,
    /// See `closed`.
    pub idle: u64,
    /// New flows refused because the table was full (client got RST).
    pub table_full: u64,
    /// Closing flows evicted to make room.
    pub evicted: u64,
    /// Client segments dropped before the splice (out of order, or no
    /// room to hold them): the client retransmits them.
    pub held_dropped: u64,
    /// SYNs resent to backends.
    pub syn_retransmits: u64,
    /// ARP requests sent for backends.
    pub arp_requests: u64,
    /// Segments from a backend for no flow of ours (dropped).
    pub backend_unknown: u64,
    /// Answers from the policy for no flow waiting for one.
    pub stray_dests: u64,
    /// Backends that dropped SACK or timestamps the client was promised.
    pub option_mismatch: u64,
    /// Segments translated client → backend and backend → client.
    pub to_backend: u64,
    /// See `to_backend`.
    pub to_client: u64,
    /// Segments dropped for no flow, bad shape, or an unexpected state.
    pub dropped: u64,
    /// Old connections on a reused SNAT port cleared with a RST (the
    /// backend answered the SYN with the old connection's ACK).
    pub stale_resets: u64,
}

/// Number of [`Counters`] fields.
pub const COUNTER_FIELDS: usize = 27;

impl Counters {
    /// Every field with its name, in declaration order (for stats).
    pub fn fields(&self) -> [(&'static str, u64); COUNTER_FIELDS] {
        [
            ("syn_cookies", self.syn_cookies),
            ("cookies_ok", self.cookies_ok),
            ("cookies_bad", self.cookies_bad),
            ("asks", self.asks),
            ("retries", self.retries),
            ("spliced", self.spliced),
            ("rejected_rst", self.rejected_rst),
            ("rejected_503", self.rejected_503),
            ("policy_timeouts", self.policy_timeouts),
            ("no_policy", self.no_policy),
            ("connect_timeouts", self.connect_timeouts),
            ("backend_resets", self.backend_resets),
            ("closed", self.closed),
            ("reset", self.reset),
            ("idle", self.idle),
            ("table_full", self.table_full),
            ("evicted", self.evicted),
            ("held_dropped", self.held_dropped),
            ("syn_retransmits", self.syn_retransmits),
            ("arp_requests", self.arp_requests),
            ("backend_unknown", self.backend_unknown),
            ("stray_dests", self.stray_dests),
            ("option_mismatch", self.option_mismatch),
            ("to_backend", self.to_backend),
            ("to_client", self.to_client),
            ("dropped", self.dropped),
            ("stale_resets", self.stale_resets),
        ]
    }
}

/// Flow states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Handshake with the client done; no request byte yet.
    Waiting,
    /// The first request segment is held; the policy was asked.
    Asked,
    /// The backend's MAC is being resolved.
    Resolving,
    /// SYN sent to the backend.
    Connecting,
    /// Translating both ways.
    Spliced,
    /// Closed or reset; lingering for late segments.
    Closing,
    /// Rejected with a 503 and FIN; waiting for the client's FIN.
    Rejected,
}

/// A TCP option set from a SYN or the handshake's ACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Opts {
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    /// TSval, TSecr.
    ts: Option<(u32, u32)>,
}

struct Flow<F> {
    gen: u32,
    live: bool,
    state: State,
    client: (Ipv4Addr, u16),
    vip: (Ipv4Addr, u16),
    client_mac: [u8; 6],
    backend: (Ipv4Addr, u16),
    backend_mac: [u8; 6],
    snat_port: u16,
    /// Client's ISN, the box's (the cookie), the backend's.
    c_isn: u32,
    b_isn: u32,
    /// backend → client: seq + d; client → backend: ack - d.
    d: u32,
    /// Next client sequence number expected while holding.
    c_next: u32,
    mss: u16,
    /// Client's window scale (None: not negotiated with the box).
    c_ws: Option<u8>,
    sack: bool,
    ts: bool,
    /// Latest client TSval (for SYNs and segments the box makes).
    c_tsval: u32,
    /// The box's TSval in the SYN-ACK, and the backend's in its SYN-ACK.
    box_ts0: u32,
    /// Backend TSval + ts_d = what the client sees.
    ts_d: u32,
    /// Shifts for window rescaling: client's windows from `c_ws` to what
    /// the backend believes; the backend's from its own to the box's.
    c_shift: (u8, u8),
    b_shift: (u8, u8),
    /// Client window as last seen (for the backend SYN).
    c_win: u16,
    attempt: u8,
    last: Option<(Ipv4Addr, u16)>,
    held: Vec<F>,
    deadline: u64,
    connect_deadline: u64,
    /// The time the flow's timer entry is due (u64::MAX: none).
    timer: u64,
    fin_c: bool,
    fin_b: bool,
    /// The backend answered: segments are translated (also while closing).
    spliced: bool,
    /// The backend's next sequence number, in the client's space.
    b_next: u32,
    /// Our own seq toward the client after a 503 (+FIN).
    sent_503: u32,
    first_seen: u64,
    last_seen: u64,
    c_pkts: u64,
    c_bytes: u64,
    s_pkts: u64,
    s_bytes: u64,
}

/// MSS values a cookie can say.
const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];
/// Cookie counter periods accepted.
const COOKIE_MAX_AGE: u32 = 2;
/// Cookie counter period (ns): 64 s.
const COOKIE_PERIOD: u64 = 64_000_000_000;
/// No window scale, in the TSval's option bits.
const WS_NONE: u32 = 0xf;
/// Neighbour entries kept.
const MAX_NEIGHBOURS: usize = 4096;

const RESPONSE_503: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n";

/// A parsed TCP/IPv4 segment in an untagged Ethernet frame.
#[derive(Clone, Copy, Debug)]
struct Seg {
    l4: usize,
    hlen: usize,
    end: usize,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

impl Seg {
    /// Parses an untagged Ethernet/IPv4/TCP frame (unfragmented, with its
    /// whole TCP header). The IPv4 header checksum is the caller's (l3).
    fn parse(f: &[u8]) -> Option<Seg> {
        if f.len() < 14 + 20 || rd16(f, 12) != 0x0800 || f[14] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[14] & 0xf) * 4;
        let total = usize::from(rd16(f, 16));
        if ihl < 20 || total < ihl + 20 || 14 + total > f.len() || f[23] != 6 || rd16(f, 20) & 0x3fff != 0 {
            return None;
        }
        let l4 = 14 + ihl;
        let hlen = usize::from(f[l4 + 12] >> 4) * 4;
        if hlen < 20 || l4 + hlen > 14 + total {
            return None;
        }
        Some(Seg {
            l4,
            hlen,
            end: 14 + total,
            src: Ipv4Addr::from(rd32(f, 26)),
            dst: Ipv4Addr::from(rd32(f, 30)),
            sport: rd16(f, l4),
            dport: rd16(f, l4 + 2),
            seq: rd32(f, l4 + 4),
            ack: rd32(f, l4 + 8),
            flags: f[l4 + 13],
            win: rd16(f, l4 + 14),
        })
    }

    fn payload(&self) -> Range<usize> {
        self.l4 + self.hlen..self.end
    }

    /// Sequence space the segment takes (payload, plus SYN and FIN).
    fn seq_len(&self) -> u32 {
        (self.end - self.l4 - self.hlen) as u32 + u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0)
    }

    fn opts(&self, f: &[u8]) -> Opts {
        let mut o = Opts::default();
        walk_options(&f[self.l4 + 20..self.l4 + self.hlen], |kind, data| match (kind, data.len()) {
            (2, 2) => o.mss = Some(rd16(data, 0)),
            (3, 1) => o.ws = Some(data[0].min(14)),
            (4, 0) => o.sack_perm = true,
            (8, 8) => o.ts = Some((rd32(data, 0), rd32(data, 4))),
            _ => {}
        });
        o
    }
}

/// Calls `f(kind, data)` for each well-formed option; stops at the end of
/// list or at a malformed one.
fn walk_options(opts: &[u8], mut f: impl FnMut(u8, &[u8])) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                f(kind, &opts[i + 2..i + len]);
                i += len;
            }
        }
    }
}

/// An incremental checksum update (RFC 1624): the sum of `~old + new`
/// over the changed 16-bit words.
#[derive(Default)]
struct Delta(u64);

impl Delta {
    fn word(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }
    fn dword(&mut self, old: u32, new: u32) {
        self.word((old >> 16) as u16, (new >> 16) as u16);
        self.word(old as u16, new as u16);
    }
    /// Equal-length, even-aligned (relative to the checksummed data) spans.
    fn span(&mut self, old: &[u8], new: &[u8]) {
        let o = ones_complement_sum(old, 0);
        let n = ones_complement_sum(new, 0);
        self.word(o as u16, n as u16);
    }
    /// The checksum field after the change.
    fn apply(&self, csum: u16) -> u16 {
        let mut s = u64::from(!csum) + self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

/// Rescales a window from shift `from` to shift `to`, rounding down but
/// never to zero from non-zero, at most 65535.
fn rescale(win: u16, (from, to): (u8, u8)) -> u16 {
    if from == to || win == 0 {
        return win;
    }
    let bytes = u64::from(win) << from;
    ((bytes >> to).clamp(1, 65535)) as u16
}

/// Builds an Ethernet/IPv4/TCP frame (checksums filled, padded to 60).
#[allow(clippy::too_many_arguments)]
fn build(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    debug_assert!(opts.len() % 4 == 0 && opts.len() <= 40);
    let hlen = 20 + opts.len();
    let total = 20 + hlen + payload.len();
    let mut f = vec![0u8; (14 + total).max(60)];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&eth_src);
    wr16(&mut f, 12, 0x0800);
    f[14] = 0x45;
    wr16(&mut f, 16, total as u16);
    wr16(&mut f, 20, 0x4000); // DF
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.0.octets());
    f[30..34].copy_from_slice(&dst.0.octets());
    let ipc = fold(ones_complement_sum(&f[14..34], 0));
    wr16(&mut f, 24, ipc);
    let t = 34;
    wr16(&mut f, t, src.1);
    wr16(&mut f, t + 2, dst.1);
    wr32(&mut f, t + 4, seq);
    wr32(&mut f, t + 8, ack);
    f[t + 12] = ((hlen / 4) as u8) << 4;
    f[t + 13] = flags;
    wr16(&mut f, t + 14, win);
    f[t + 20..t + hlen].copy_from_slice(opts);
    f[t + hlen..t + hlen + payload.len()].copy_from_slice(payload);
    let ph = pseudo_header_v4(src.0, dst.0, 6, hlen as u32 + payload.len() as u32);
    let c = fold(ones_complement_sum(&f[t..t + hlen + payload.len()], ph));
    wr16(&mut f, t + 16, c);
    f
}

/// An ARP request for `target` from `(mac, ip)`.
fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    wr16(&mut f, 12, 0x0806);
    wr16(&mut f, 14, 1);
    wr16(&mut f, 16, 0x0800);
    f[18] = 6;
    f[19] = 4;
    wr16(&mut f, 20, 1);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// Says whether a SNAT port may be used: `(snat, port, backend, backend port)`.
pub type PortFilter = Box<dyn Fn(Ipv4Addr, u16, Ipv4Addr, u16) -> bool + Send>;

/// The splicer of one worker. `F` is the runtime's frame (an mbuf).
pub struct Splicer<F: Frame> {
    cfg: Config,
    flows: Vec<Flow<F>>,
    free: Vec<u32>,
    live: usize,
    by_client: HashMap<(u32, u16, u32, u16), u32>,
    by_backend: HashMap<(u32, u16, u16), u32>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Closed flows, oldest first, for eviction (entries may be stale).
    closing: std::collections::VecDeque<(u32, u32)>,
    neighbours: HashMap<Ipv4Addr, [u8; 6]>,
    keys: RandomState,
    next_port: u16,
    held_total: usize,
    /// Counts since the runtime last took them.
    pub counters: Counters,
    /// Which SNAT ports may be used toward a backend `(snat, port,
    /// backend, backend port)`: with several workers, only those whose
    /// replies the runtime steers to this worker.
    pub port_ok: Option<PortFilter>,
}

fn flow_id(idx: u32, gen: u32) -> u64 {
    (1u64 << 63) | (u64::from(gen) << 32) | u64::from(idx)
}

impl<F: Frame> Splicer<F> {
    /// A splicer with nothing in it.
    pub fn new(cfg: Config) -> Splicer<F> {
        let keys = RandomState::new();
        // A random first port: a restarted runtime does not reuse the
        // ports its last run left in the backends' TIME_WAIT first.
        let span = u64::from(cfg.ports.end.saturating_sub(cfg.ports.start)).max(1);
        let next_port = cfg.ports.start + (keys.hash_one(0xab5u32) % span) as u16;
        Splicer {
            cfg,
            flows: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_client: HashMap::new(),
            by_backend: HashMap::new(),
            timers: BinaryHeap::new(),
            closing: std::collections::VecDeque::new(),
            neighbours: HashMap::new(),
            keys,
            next_port,
            held_total: 0,
            counters: Counters::default(),
            port_ok: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Flows now.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Segments held now (waiting for the splice).
    pub fn held(&self) -> usize {
        self.held_total
    }

    /// Whether a frame is the splicer's, and from whom: TCP to a VIP (from
    /// a client) or to the SNAT address on a SNAT port (from a backend).
    pub fn claims(&self, frame: &[u8]) -> Option<Source> {
        if frame.len() < 38 || rd16(frame, 12) != 0x0800 || frame[23] != 6 {
            return None;
        }
        let dst = Ipv4Addr::from(rd32(frame, 30));
        let l4 = 14 + usize::from(frame[14] & 0xf) * 4;
        let dport = if frame.len() >= l4 + 4 { rd16(frame, l4 + 2) } else { return None };
        if dst == self.cfg.snat && self.cfg.ports.contains(&dport) {
            return Some(Source::Backend);
        }
        self.cfg.vips.iter().any(|&(a, p)| a == dst && p == dport).then_some(Source::Client)
    }

    /// Whether a client's segment to a VIP is part of a connection the
    /// splicer holds, or is the ACK that completes one (a fresh, valid SYN
    /// cookie): what the runtime may give flow state, chains and the
    /// monitor. SYNs, and ACKs with a bad or stale cookie, are not: a
    /// flood of them must cost no state anywhere. Changes nothing.
    pub fn admits(&self, frame: &[u8], now: u64) -> bool {
        let Some(s) = Seg::parse(frame) else { return false };
        if self.by_client.contains_key(&(s.src.to_bits(), s.sport, s.dst.to_bits(), s.dport)) {
            return true;
        }
        s.flags & (SYN | RST | ACK) == ACK
            && self
                .check_cookie((s.src, s.sport), (s.dst, s.dport), s.seq.wrapping_sub(1), s.ack.wrapping_sub(1), now)
                .is_some()
    }

    /// Learns a neighbour (from any ARP frame seen); flows waiting for its
    /// MAC send their SYN.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6], now: u64, out: &mut Out<F>) {
        if mac == [0; 6] || mac[0] & 1 != 0 {
            return;
        }
        if self.neighbours.get(&ip) == Some(&mac) {
            return;
        }
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&ip) {
            self.neighbours.clear();
        }
        self.neighbours.insert(ip, mac);
        for idx in 0..self.flows.len() {
            let f = &self.flows[idx];
            if f.live && f.state == State::Resolving && f.backend.0 == ip {
                self.flows[idx].backend_mac = mac;
                self.send_syn(idx as u32, now, out);
            }
        }
    }

    /// The first held frame of a flow (the request bytes of its [`Ask`]).
    pub fn held_frame(&self, flow_id: u64) -> Option<&F> {
        let idx = self.index(flow_id)?;
        self.flows[idx as usize].held.first()
    }

    fn index(&self, flow_id: u64) -> Option<u32> {
        if flow_id >> 63 == 0 {
            return None;
        }
        let idx = flow_id as u32;
        let gen = ((flow_id >> 32) & 0x7fff_ffff) as u32;
        let f = self.flows.get(idx as usize)?;
        (f.live && f.gen & 0x7fff_ffff == gen).then_some(idx)
    }

    fn cookie_hash(&self, tag: u8, client: (Ipv4Addr, u16), vip: (Ipv4Addr, u16), count: u32) -> u32 {
        self.keys.hash_one((tag, client.0.to_bits(), client.1, vip.0.to_bits(), vip.1, count)) as u32
    }

    fn cookie(&self, client: (Ipv4Addr, u16), vip: (Ipv4Addr, u16), isn: u32, count: u32, mss_idx: u32) -> u32 {
        let h1 = self.cookie_hash(0, client, vip, 0);
        let h2 = self.cookie_hash(1, client, vip, count);
        h1.wrapping_add(isn).wrapping_add(count << 24).wrapping_add(h2.wrapping_add(mss_idx) & 0xff_ffff)
    }

    /// The MSS index a cookie names, if it is ours and fresh.
    fn check_cookie(
        &self,
        client: (Ipv4Addr, u16),
        vip: (Ipv4Addr, u16),
        isn: u32,
        cookie: u32,
        now: u64,
    ) -> Option<u32> {
        let h1 = self.cookie_hash(0, client, vip, 0);
        let t = cookie.wrapping_sub(h1).wrapping_sub(isn);
        let now_count = (now / COOKIE_PERIOD) as u32;
        let age = now_count.wrapping_sub(t >> 24) & 0xff;
        if age > COOKIE_MAX_AGE {
            return None;
        }
        let count = now_count.wrapping_sub(age);
        let h2 = self.cookie_hash(1, client, vip, count);
        let idx = t.wrapping_sub(h2) & 0xff_ffff;
        (idx < MSS_TABLE.len() as u32).then_some(idx)
    }

    fn ts_now(now: u64) -> u32 {
        (now / 1_000_000) as u32
    }

    /// A segment from a client to a VIP (`frame` is the whole frame, which
    /// the splicer takes: forwarded, held or dropped). `in_mac` is the
    /// frame's source MAC.
    pub fn from_client(&mut self, mut frame: F, now: u64, out: &mut Out<F>) {
        let Some(s) = Seg::parse(frame.bytes()) else {
            self.counters.dropped += 1;
            return;
        };
        let key = (s.src.to_bits(), s.sport, s.dst.to_bits(), s.dport);
        let Some(&idx) = self.by_client.get(&key) else {
            return self.no_flow_from_client(frame, &s, now, out);
        };
        let f = &mut self.flows[idx as usize];
        f.last_seen = now;
        f.c_pkts += 1;
        f.c_bytes += frame.bytes().len() as u64;
        if let Some((val, _)) = s.opts_ts(frame.bytes()) {
            f.c_tsval = val;
        }
        if f.state == State::Spliced || f.state == State::Closing && f.spliced {
            if s.flags & SYN != 0 {
                if f.state == State::Closing {
                    // A new connection on the same ports: the old one is done.
                    self.finish(idx, EndWhy::Closed, out);
                    return self.no_flow_from_client(frame, &s, now, out);
                }
                self.counters.dropped += 1;
                return;
            }
            let end = s.seq.wrapping_add(s.seq_len());
            if seq_after(end, f.c_next) {
                f.c_next = end;
            }
            f.c_win = s.win;
            if s.flags & RST != 0 {
                self.closing_after(idx, EndWhy::Reset, now);
            } else if s.flags & FIN != 0 {
                f.fin_c = true;
            }
            self.translate_to_backend(idx, &mut frame);
            self.counters.to_backend += 1;
            out.tx.push((frame, Toward::Backend));
            return self.check_closed(idx, now);
        }
        match f.state {
            State::Spliced => unreachable!("handled above"),
            State::Closing => {
                // Closed before any backend answered.
                if s.flags & SYN != 0 {
                    self.finish(idx, EndWhy::Closed, out);
                    return self.no_flow_from_client(frame, &s, now, out);
                }
                self.counters.dropped += 1;
            }
            State::Rejected => {
                if s.flags & RST != 0 {
                    self.finish(idx, EndWhy::Rejected, out);
                } else if s.flags & FIN != 0 {
                    // Their FIN after our 503 and FIN: ACK it, done.
                    let fin_end = s.seq.wrapping_add(s.seq_len());
                    let seq = f.sent_503;
                    let seg = self.make_to_client(idx, seq, fin_end, ACK, &[], now);
                    out.made.push((seg, Toward::Client));
                    self.finish(idx, EndWhy::Rejected, out);
                } else if s.end > s.l4 + s.hlen {
                    // The request again (our 503 was lost): send it again.
                    self.send_503(idx, now, out);
                }
            }
            State::Waiting | State::Asked | State::Resolving | State::Connecting => {
                if s.flags & RST != 0 {
                    if f.state == State::Connecting {
                        let seq = f.c_isn.wrapping_add(1);
                        let seg = self.make_to_backend(idx, seq, 0, RST, &[]);
                        out.made.push((seg, Toward::Backend));
                    }
                    self.counters.reset += 1;
                    return self.finish(idx, EndWhy::Reset, out);
                }
                if s.flags & SYN != 0 {
                    self.counters.dropped += 1;
                    return;
                }
                let len = s.seq_len();
                if len == 0 {
                    return; // a pure ACK: nothing to hold
                }
                if s.seq != f.c_next || f.held.len() >= self.cfg.max_held || self.held_total >= self.cfg.max_held_total
                {
                    self.counters.held_dropped += 1;
                    return;
                }
                f.c_next = s.seq.wrapping_add(len);
                f.c_win = s.win;
                let first = f.held.is_empty();
                f.held.push(frame);
                self.held_total += 1;
                if first && f.state == State::Waiting {
                    let payload = s.payload();
                    self.ask(idx, AskReason::New, payload, now, out);
                }
            }
        }
    }

    /// A segment from a backend to the SNAT address.
    pub fn from_backend(&mut self, mut frame: F, now: u64, out: &mut Out<F>) {
        let Some(s) = Seg::parse(frame.bytes()) else {
            self.counters.dropped += 1;
            return;
        };
        let Some(&idx) = self.by_backend.get(&(s.src.to_bits(), s.sport, s.dport)) else {
            self.counters.backend_unknown += 1;
            return;
        };
        let f = &mut self.flows[idx as usize];
        f.last_seen = now;
        f.s_pkts += 1;
        f.s_bytes += frame.bytes().len() as u64;
        match f.state {
            State::Connecting => {
                let expect = f.c_isn.wrapping_add(1);
                if s.flags & RST != 0 {
                    if s.flags & ACK != 0 && s.ack == expect {
                        self.counters.backend_resets += 1;
                        return self.failed(idx, AskReason::Reset, now, out);
                    }
                    self.counters.dropped += 1;
                    return;
                }
                if s.flags & (SYN | ACK) == ACK && s.ack != expect {
                    // An old connection's ACK (the backend still holds the
                    // 4-tuple in TIME_WAIT): as in SYN-SENT (RFC 9293
                    // 3.10.7.3), a RST with the ACK's number clears it, and
                    // the SYN goes again at once.
                    self.counters.stale_resets += 1;
                    let rst = self.make_to_backend(idx, s.ack, 0, RST, &[]);
                    out.made.push((rst, Toward::Backend));
                    let syn = self.syn_frame(idx, now);
                    out.made.push((syn, Toward::Backend));
                    return;
                }
                if s.flags & (SYN | ACK) != SYN | ACK || s.ack != expect {
                    self.counters.dropped += 1;
                    return;
                }
                let o = s.opts(frame.bytes());
                self.established(idx, s.seq, &o, now, out);
            }
            State::Spliced | State::Closing if f.spliced => {
                if s.flags & SYN != 0 {
                    // A retransmitted SYN-ACK: the backend missed the ACK
                    // that the first held segment carried. Answer for the
                    // client with the ACK it would send.
                    if f.state == State::Spliced {
                        let ack = s.seq.wrapping_add(1);
                        let seq = f.c_isn.wrapping_add(1);
                        let seg = self.make_to_backend(idx, seq, ack, ACK, &[]);
                        out.made.push((seg, Toward::Backend));
                    }
                    return;
                }
                let f = &mut self.flows[idx as usize];
                let end = s.seq.wrapping_add(s.seq_len()).wrapping_add(f.d);
                if seq_after(end, f.b_next) {
                    f.b_next = end;
                }
                if s.flags & RST != 0 {
                    self.closing_after(idx, EndWhy::Reset, now);
                } else if s.flags & FIN != 0 {
                    f.fin_b = true;
                }
                self.translate_to_client(idx, &mut frame);
                self.counters.to_client += 1;
                out.tx.push((frame, Toward::Client));
                self.check_closed(idx, now);
            }
            _ => self.counters.dropped += 1,
        }
    }

    /// The policy's answer for `flow_id`.
    pub fn dest(&mut self, flow_id: u64, dest: Dest, now: u64, out: &mut Out<F>) {
        let Some(idx) = self.index(flow_id) else {
            self.counters.stray_dests += 1;
            return;
        };
        if self.flows[idx as usize].state != State::Asked {
            self.counters.stray_dests += 1;
            return;
        }
        match dest {
            Dest::Reject(how) => self.reject(idx, how, now, out),
            Dest::Connect(ip, port) => {
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || port == 0 {
                    self.counters.stray_dests += 1;
                    return self.reject(idx, self.cfg.reject, now, out);
                }
                self.connect(idx, (ip, port), now, out);
            }
        }
    }

    /// The policy cannot be asked (absent, or no room on its ring): reject.
    pub fn no_policy(&mut self, flow_id: u64, now: u64, out: &mut Out<F>) {
        if let Some(idx) = self.index(flow_id) {
            self.counters.no_policy += 1;
            self.reject(idx, self.cfg.reject, now, out);
        }
    }

    /// Timers due by `now`. Once per loop; cheap when none is.
    pub fn tick(&mut self, now: u64, out: &mut Out<F>) {
        while let Some(&Reverse((at, idx, gen))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(f) = self.flows.get_mut(idx as usize) else { continue };
            if !f.live || f.gen != gen || f.timer != at {
                continue; // stale
            }
            f.timer = u64::MAX;
            self.expire(idx, now, out);
        }
    }

    /// Ends every flow (shutdown).
    pub fn drain(&mut self, out: &mut Out<F>) {
        for idx in 0..self.flows.len() as u32 {
            if self.flows[idx as usize].live {
                self.finish(idx, EndWhy::Shutdown, out);
            }
        }
    }

    fn expire(&mut self, idx: u32, now: u64, out: &mut Out<F>) {
        let f = &self.flows[idx as usize];
        match f.state {
            State::Waiting | State::Asked if now >= f.deadline => {
                if f.state == State::Asked {
                    self.counters.policy_timeouts += 1;
                    self.reject(idx, self.cfg.reject, now, out);
                } else {
                    // Connected, never sent a byte: the box will not wait.
                    self.reset_client(idx, now, out);
                    self.finish(idx, EndWhy::Idle, out);
                }
            }
            State::Resolving | State::Connecting => {
                if now >= f.connect_deadline {
                    self.counters.connect_timeouts += 1;
                    self.failed(idx, AskReason::Timeout, now, out);
                } else {
                    if f.state == State::Resolving {
                        self.counters.arp_requests += 1;
                        out.made.push((
                            arp_request(self.cfg.backend_side_mac, self.cfg.snat, f.backend.0),
                            Toward::Backend,
                        ));
                    } else {
                        self.counters.syn_retransmits += 1;
                        let syn = self.syn_frame(idx, now);
                        out.made.push((syn, Toward::Backend));
                    }
                    let next = (now + self.cfg.syn_rto).min(self.flows[idx as usize].connect_deadline);
                    self.schedule(idx, next);
                }
            }
            State::Spliced => {
                let due = f.last_seen + self.cfg.idle_timeout;
                if now >= due {
                    self.counters.idle += 1;
                    self.reset_client(idx, now, out);
                    let f = &self.flows[idx as usize];
                    let rst = self.make_to_backend(idx, f.c_next, 0, RST, &[]);
                    out.made.push((rst, Toward::Backend));
                    self.finish(idx, EndWhy::Idle, out);
                } else {
                    self.schedule(idx, due);
                }
            }
            State::Closing | State::Rejected => {
                if now >= f.deadline {
                    let why = if f.state == State::Rejected { EndWhy::Rejected } else { EndWhy::Closed };
                    self.finish(idx, why, out);
                } else {
                    self.schedule(idx, f.deadline);
                }
            }
            _ => {
                let d = f.deadline;
                self.schedule(idx, d);
            }
        }
    }

    fn schedule(&mut self, idx: u32, at: u64) {
        let f = &mut self.flows[idx as usize];
        if at < f.timer {
            f.timer = at;
            self.timers.push(Reverse((at, idx, f.gen)));
        }
    }

    fn no_flow_from_client(&mut self, frame: F, s: &Seg, now: u64, out: &mut Out<F>) {
        let b = frame.bytes();
        let client = (s.src, s.sport);
        let vip = (s.dst, s.dport);
        let mut client_mac = [0u8; 6];
        client_mac.copy_from_slice(&b[6..12]);
        if s.flags & RST != 0 {
            self.counters.dropped += 1;
            return;
        }
        if s.flags & SYN != 0 {
            if s.flags & ACK != 0 {
                self.counters.dropped += 1;
                return;
            }
            // Stateless SYN-ACK with a cookie.
            let o = s.opts(b);
            let mss = o.mss.unwrap_or(536);
            let idx = MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
            let count = (now / COOKIE_PERIOD) as u32;
            let cookie = self.cookie(client, vip, s.seq, count, idx);
            let mut opts = Vec::with_capacity(20);
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&MSS_TABLE[idx as usize].to_be_bytes());
            if let Some((tsval, _)) = o.ts {
                let ws = o.ws.map_or(WS_NONE, u32::from);
                let bits = ws | (u32::from(o.sack_perm) << 4);
                let ours = (Self::ts_now(now) & !0x1f) | bits;
                if o.sack_perm {
                    opts.extend_from_slice(&[4, 2, 8, 10]);
                } else {
                    opts.extend_from_slice(&[1, 1, 8, 10]);
                }
                opts.extend_from_slice(&ours.to_be_bytes());
                opts.extend_from_slice(&tsval.to_be_bytes());
                if o.ws.is_some() {
                    opts.extend_from_slice(&[1, 3, 3, self.cfg.wscale]);
                }
            }
            let seg = build(
                client_mac,
                self.cfg.client_side_mac,
                vip,
                client,
                cookie,
                s.seq.wrapping_add(1),
                SYN | ACK,
                65535,
                &opts,
                &[],
            );
            self.counters.syn_cookies += 1;
            out.made.push((seg, Toward::Client));
            return;
        }
        if s.flags & ACK == 0 {
            self.counters.dropped += 1;
            return;
        }
        let isn = s.seq.wrapping_sub(1);
        let cookie = s.ack.wrapping_sub(1);
        let Some(mss_idx) = self.check_cookie(client, vip, isn, cookie, now) else {
            self.counters.cookies_bad += 1;
            // As from a closed port (RFC 9293 3.10.7.1): <SEQ=SEG.ACK><CTL=RST>.
            let rst = build(client_mac, self.cfg.client_side_mac, vip, client, s.ack, 0, RST, 0, &[], &[]);
            out.made.push((rst, Toward::Client));
            return;
        };
        if self.live >= self.cfg.max_flows && !self.evict_one(out) {
            self.counters.table_full += 1;
            let rst = build(client_mac, self.cfg.client_side_mac, vip, client, s.ack, 0, RST, 0, &[], &[]);
            out.made.push((rst, Toward::Client));
            return;
        }
        self.counters.cookies_ok += 1;
        let o = s.opts(b);
        let (c_ws, sack, ts, box_ts0, c_tsval) = match o.ts {
            Some((val, ecr)) => {
                let ws = ecr & 0xf;
                (if ws == WS_NONE { None } else { Some(ws.min(14) as u8) }, ecr & 0x10 != 0, true, ecr, val)
            }
            None => (None, false, false, 0, 0),
        };
        let idx = self.alloc();
        let f = Flow {
            gen: self.flows.get(idx as usize).map_or(1, |f| f.gen),
            live: true,
            state: State::Waiting,
            client,
            vip,
            client_mac,
            backend: (Ipv4Addr::UNSPECIFIED, 0),
            backend_mac: [0; 6],
            snat_port: 0,
            c_isn: isn,
            b_isn: cookie,
            d: 0,
            c_next: s.seq,
            mss: MSS_TABLE[mss_idx as usize],
            c_ws,
            sack,
            ts,
            c_tsval,
            box_ts0,
            ts_d: 0,
            c_shift: (0, 0),
            b_shift: (0, 0),
            c_win: s.win,
            attempt: 0,
            last: None,
            held: Vec::new(),
            deadline: now + self.cfg.request_timeout,
            connect_deadline: 0,
            timer: u64::MAX,
            fin_c: false,
            fin_b: false,
            spliced: false,
            b_next: cookie.wrapping_add(1),
            sent_503: 0,
            first_seen: now,
            last_seen: now,
            c_pkts: 0,
            c_bytes: 0,
            s_pkts: 0,
            s_bytes: 0,
        };
        if (idx as usize) < self.flows.len() {
            self.flows[idx as usize] = f;
        } else {
            self.flows.push(f);
        }
        self.by_client.insert((client.0.to_bits(), client.1, vip.0.to_bits(), vip.1), idx);
        let deadline = self.flows[idx as usize].deadline;
        self.schedule(idx, deadline);
        // The handshake's ACK may carry the request already.
        if s.seq_len() > 0 {
            self.from_client(frame, now, out);
        } else {
            let f = &mut self.flows[idx as usize];
            f.c_pkts = 1;
            f.c_bytes = frame.bytes().len() as u64;
        }
    }

    fn alloc(&mut self) -> u32 {
        self.live += 1;
        if let Some(i) = self.free.pop() {
            return i;
        }
        self.flows.len() as u32
    }

    /// Evicts the oldest closing flow; false if there is none.
    fn evict_one(&mut self, out: &mut Out<F>) -> bool {
        while let Some((idx, gen)) = self.closing.pop_front() {
            let f = &self.flows[idx as usize];
            if f.live && f.gen == gen && matches!(f.state, State::Closing | State::Rejected) {
                self.counters.evicted += 1;
                self.finish(idx, EndWhy::Evicted, out);
                return true;
            }
        }
        false
    }

    fn ask(&mut self, idx: u32, reason: AskReason, payload: Range<usize>, now: u64, out: &mut Out<F>) {
        let f = &mut self.flows[idx as usize];
        f.state = State::Asked;
        f.deadline = now + self.cfg.request_timeout;
        let ask = Ask {
            flow_id: flow_id(idx, f.gen & 0x7fff_ffff),
            client: f.client,
            vip: f.vip,
            attempt: f.attempt,
            reason,
            last: f.last,
            payload,
        };
        let d = f.deadline;
        self.counters.asks += 1;
        if reason != AskReason::New {
            self.counters.retries += 1;
        }
        out.asks.push(ask);
        self.schedule(idx, d);
    }

    /// A backend failed (RST to the SYN, or no answer): ask again, or reject.
    fn failed(&mut self, idx: u32, why: AskReason, now: u64, out: &mut Out<F>) {
        self.unbind_backend(idx);
        let f = &mut self.flows[idx as usize];
        f.last = Some(f.backend);
        f.attempt += 1;
        if f.attempt >= self.cfg.max_attempts {
            return self.reject(idx, self.cfg.reject, now, out);
        }
        let Some(first) = f.held.first() else {
            return self.reject(idx, self.cfg.reject, now, out);
        };
        let payload = Seg::parse(first.bytes()).map_or(0..0, |s| s.payload());
        self.ask(idx, why, payload, now, out);
    }

    fn unbind_backend(&mut self, idx: u32) {
        let f = &mut self.flows[idx as usize];
        if f.snat_port != 0 {
            self.by_backend.remove(&(f.backend.0.to_bits(), f.backend.1, f.snat_port));
            f.snat_port = 0;
        }
    }

    fn connect(&mut self, idx: u32, backend: (Ipv4Addr, u16), now: u64, out: &mut Out<F>) {
        // A SNAT port free toward this backend.
        let span = u32::from(self.cfg.ports.end - self.cfg.ports.start).max(1);
        let mut port = None;
        for _ in 0..span.min(4096) {
            let p = self.next_port;
            self.next_port = if p + 1 >= self.cfg.ports.end { self.cfg.ports.start } else { p + 1 };
            let steered = self.port_ok.as_ref().map_or(true, |ok| ok(self.cfg.snat, p, backend.0, backend.1));
            if steered && !self.by_backend.contains_key(&(backend.0.to_bits(), backend.1, p)) {
                port = Some(p);
                break;
            }
        }
        let Some(port) = port else {
            self.counters.table_full += 1;
            return self.reject(idx, self.cfg.reject, now, out);
        };
        self.by_backend.insert((backend.0.to_bits(), backend.1, port), idx);
        let connect_deadline = now + self.cfg.connect_timeout;
        let f = &mut self.flows[idx as usize];
        f.backend = backend;
        f.snat_port = port;
        f.connect_deadline = connect_deadline;
        match self.neighbours.get(&backend.0) {
            Some(&mac) => {
                self.flows[idx as usize].backend_mac = mac;
                self.send_syn(idx, now, out);
            }
            None => {
                self.flows[idx as usize].state = State::Resolving;
                self.counters.arp_requests += 1;
                out.made.push((arp_request(self.cfg.backend_side_mac, self.cfg.snat, backend.0), Toward::Backend));
                self.schedule(idx, now + self.cfg.syn_rto.min(self.cfg.connect_timeout));
            }
        }
    }

    fn syn_frame(&self, idx: u32, _now: u64) -> Vec<u8> {
        let f = &self.flows[idx as usize];
        let mut opts = Vec::with_capacity(20);
        opts.extend_from_slice(&[2, 4]);
        opts.extend_from_slice(&f.mss.to_be_bytes());
        if f.ts {
            opts.extend_from_slice(if f.sack { &[4, 2, 8, 10] } else { &[1, 1, 8, 10] });
            opts.extend_from_slice(&f.c_tsval.to_be_bytes());
            opts.extend_from_slice(&0u32.to_be_bytes());
        }
        if let Some(ws) = f.c_ws {
            opts.extend_from_slice(&[1, 3, 3, ws]);
        }
        let win = (u32::from(f.c_win) << f.c_ws.unwrap_or(0)).min(65535) as u16;
        build(
            f.backend_mac,
            self.cfg.backend_side_mac,
            (self.cfg.snat, f.snat_port),
            f.backend,
            f.c_isn,
            0,
            SYN,
            win,
            &opts,
            &[],
        )
    }

    fn send_syn(&mut self, idx: u32, now: u64, out: &mut Out<F>) {
        let syn = self.syn_frame(idx, now);
        out.made.push((syn, Toward::Backend));
        let f = &mut self.flows[idx as usize];
        f.state = State::Connecting;
        let next = (now + self.cfg.syn_rto).min(f.connect_deadline);
        self.schedule(idx, next);
    }

    /// The backend's SYN-ACK: set the translation up and replay what is held.
    fn established(&mut self, idx: u32, r_isn: u32, o: &Opts, now: u64, out: &mut Out<F>) {
        let wscale = self.cfg.wscale;
        let f = &mut self.flows[idx as usize];
        f.d = f.b_isn.wrapping_sub(r_isn);
        if f.ts {
            match o.ts {
                Some((val, _)) => f.ts_d = f.box_ts0.wrapping_sub(val),
                None => self.counters.option_mismatch += 1,
            }
        }
        if f.sack && !o.sack_perm {
            self.counters.option_mismatch += 1;
        }
        // Scaling is on between two ends only if both offered it.
        let box_ws = if f.c_ws.is_some() { wscale } else { 0 };
        let (c_eff, b_ws) = match (f.c_ws, o.ws) {
            (Some(c), Some(b)) => (c, b),
            _ => (0, 0),
        };
        f.c_shift = (f.c_ws.unwrap_or(0), c_eff);
        f.b_shift = (b_ws, box_ws);
        f.state = State::Spliced;
        f.spliced = true;
        f.b_next = f.b_isn.wrapping_add(1);
        let held = std::mem::take(&mut f.held);
        self.held_total -= held.len();
        self.counters.spliced += 1;
        for mut frame in held {
            self.translate_to_backend(idx, &mut frame);
            self.counters.to_backend += 1;
            out.tx.push((frame, Toward::Backend));
        }
        let due = now + self.cfg.idle_timeout;
        self.flows[idx as usize].timer = u64::MAX;
        self.schedule(idx, due);
    }

    fn check_closed(&mut self, idx: u32, now: u64) {
        let f = &self.flows[idx as usize];
        if f.state == State::Spliced && f.fin_c && f.fin_b {
            self.closing_after(idx, EndWhy::Closed, now);
        }
    }

    /// Into `Closing` (translate late segments for `linger`, then end).
    fn closing_after(&mut self, idx: u32, why: EndWhy, now: u64) {
        let f = &mut self.flows[idx as usize];
        if f.state == State::Closing {
            return;
        }
        match why {
            EndWhy::Reset => self.counters.reset += 1,
            EndWhy::Closed => self.counters.closed += 1,
            _ => {}
        }
        f.state = if f.state == State::Rejected { State::Rejected } else { State::Closing };
        f.deadline = now + self.cfg.linger;
        let (d, gen) = (f.deadline, f.gen);
        f.timer = u64::MAX;
        self.closing.push_back((idx, gen));
        self.schedule(idx, d);
    }

    fn reject(&mut self, idx: u32, how: Reject, now: u64, out: &mut Out<F>) {
        self.unbind_backend(idx);
        match how {
            Reject::Reset => {
                self.counters.rejected_rst += 1;
                self.reset_client(idx, now, out);
                self.finish(idx, EndWhy::Rejected, out);
            }
            Reject::Http503 => {
                self.counters.rejected_503 += 1;
                self.send_503(idx, now, out);
                let f = &mut self.flows[idx as usize];
                self.held_total -= f.held.len();
                f.held.clear();
                f.state = State::Rejected;
                f.deadline = now + self.cfg.linger;
                let (d, gen) = (f.deadline, f.gen);
                f.timer = u64::MAX;
                self.closing.push_back((idx, gen));
                self.schedule(idx, d);
            }
        }
    }

    fn send_503(&mut self, idx: u32, now: u64, out: &mut Out<F>) {
        let f = &mut self.flows[idx as usize];
        let seq = f.b_isn.wrapping_add(1);
        f.sent_503 = seq.wrapping_add(RESPONSE_503.len() as u32 + 1);
        let ack = f.c_next;
        let seg = self.make_to_client(idx, seq, ack, ACK | PSH | FIN, RESPONSE_503, now);
        out.made.push((seg, Toward::Client));
    }

    fn reset_client(&mut self, idx: u32, now: u64, out: &mut Out<F>) {
        let f = &self.flows[idx as usize];
        // Where the backend's stream is, in the client's sequence space.
        let (seq, ack) = (f.b_next, f.c_next);
        let seg = self.make_to_client(idx, seq, ack, RST | ACK, &[], now);
        out.made.push((seg, Toward::Client));
    }

    fn make_to_client(&self, idx: u32, seq: u32, ack: u32, flags: u8, payload: &[u8], now: u64) -> Vec<u8> {
        let f = &self.flows[idx as usize];
        let mut opts = Vec::new();
        if f.ts && flags & RST == 0 {
            opts.extend_from_slice(&[1, 1, 8, 10]);
            opts.extend_from_slice(&Self::ts_now(now).max(f.box_ts0).to_be_bytes());
            opts.extend_from_slice(&f.c_tsval.to_be_bytes());
        }
        build(f.client_mac, self.cfg.client_side_mac, f.vip, f.client, seq, ack, flags, 65535 >> 2, &opts, payload)
    }

    fn make_to_backend(&self, idx: u32, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let f = &self.flows[idx as usize];
        let flags = if ack != 0 { flags | ACK } else { flags };
        let mut opts = Vec::new();
        if f.ts && flags & RST == 0 {
            opts.extend_from_slice(&[1, 1, 8, 10]);
            opts.extend_from_slice(&f.c_tsval.to_be_bytes());
            opts.extend_from_slice(&0u32.to_be_bytes());
        }
        let win = rescale(f.c_win, f.c_shift);
        build(
            f.backend_mac,
            self.cfg.backend_side_mac,
            (self.cfg.snat, f.snat_port),
            f.backend,
            seq,
            ack,
            flags,
            win,
            &opts,
            payload,
        )
    }

    /// Removes a flow for good.
    fn finish(&mut self, idx: u32, why: EndWhy, out: &mut Out<F>) {
        self.unbind_backend(idx);
        let f = &mut self.flows[idx as usize];
        if !f.live {
            return;
        }
        self.held_total -= f.held.len();
        f.held.clear();
        self.by_client.remove(&(f.client.0.to_bits(), f.client.1, f.vip.0.to_bits(), f.vip.1));
        out.ended.push(Ended {
            flow_id: flow_id(idx, f.gen & 0x7fff_ffff),
            client: f.client,
            vip: f.vip,
            backend: (f.backend.1 != 0).then_some(f.backend),
            why,
            client_packets: f.c_pkts,
            client_bytes: f.c_bytes,
            server_packets: f.s_pkts,
            server_bytes: f.s_bytes,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
        });
        f.live = false;
        f.gen = f.gen.wrapping_add(1);
        f.timer = u64::MAX;
        self.live -= 1;
        self.free.push(idx);
    }

    /// Rewrites a client's segment for the backend, in place.
    fn translate_to_backend(&self, idx: u32, frame: &mut F) {
        let f = &self.flows[idx as usize];
        let b = frame.bytes_mut();
        let Some(s) = Seg::parse(b) else { return };
        b[0..6].copy_from_slice(&f.backend_mac);
        b[6..12].copy_from_slice(&self.cfg.backend_side_mac);
        let mut ip = Delta::default();
        let mut tcp = Delta::default();
        let (old_src, old_dst) = (s.src.to_bits(), s.dst.to_bits());
        let (new_src, new_dst) = (self.cfg.snat.to_bits(), f.backend.0.to_bits());
        ip.dword(old_src, new_src);
        ip.dword(old_dst, new_dst);
        tcp.dword(old_src, new_src);
        tcp.dword(old_dst, new_dst);
        wr32(b, 26, new_src);
        wr32(b, 30, new_dst);
        let c = ip.apply(rd16(b, 24));
        wr16(b, 24, c);
        let t = s.l4;
        tcp.word(s.sport, f.snat_port);
        tcp.word(s.dport, f.backend.1);
        wr16(b, t, f.snat_port);
        wr16(b, t + 2, f.backend.1);
        if s.flags & ACK != 0 {
            let ack = s.ack.wrapping_sub(f.d);
            tcp.dword(s.ack, ack);
            wr32(b, t + 8, ack);
        }
        let win = rescale(s.win, f.c_shift);
        tcp.word(s.win, win);
        wr16(b, t + 14, win);
        // Options: TSecr back onto the backend's clock, SACK edges into its
        // sequence space.
        if s.hlen > 20 {
            let (d, ts_d) = (f.d, f.ts_d);
            let mut old = [0u8; 40];
            let n = s.hlen - 20;
            old[..n].copy_from_slice(&b[t + 20..t + s.hlen]);
            let opts = &mut b[t + 20..t + s.hlen];
            rewrite_options(opts, |kind, data| match kind {
                8 if data.len() == 8 => {
                    let ecr = rd32(data, 4);
                    if ecr != 0 {
                        wr32(data, 4, ecr.wrapping_sub(ts_d));
                    }
                }
                5 => {
                    for e in data.chunks_exact_mut(4) {
                        let v = rd32(e, 0).wrapping_sub(d);
                        wr32(e, 0, v);
                    }
                }
                _ => {}
            });
            tcp.span(&old[..n], &b[t + 20..t + s.hlen]);
        }
        let c = tcp.apply(rd16(b, t + 16));
        wr16(b, t + 16, c);
    }

    /// Rewrites a backend's segment for the client, in place.
    fn translate_to_client(&self, idx: u32, frame: &mut F) {
        let f = &self.flows[idx as usize];
        let b = frame.bytes_mut();
        let Some(s) = Seg::parse(b) else { return };
        b[0..6].copy_from_slice(&f.client_mac);
        b[6..12].copy_from_slice(&self.cfg.client_side_mac);
        let mut ip = Delta::default();
        let mut tcp = Delta::default();
        let (old_src, old_dst) = (s.src.to_bits(), s.dst.to_bits());
        let (new_src, new_dst) = (f.vip.0.to_bits(), f.client.0.to_bits());
        ip.dword(old_src, new_src);
        ip.dword(old_dst, new_dst);
        tcp.dword(old_src, new_src);
        tcp.dword(old_dst, new_dst);
        wr32(b, 26, new_src);
        wr32(b, 30, new_dst);
        let c = ip.apply(rd16(b, 24));
        wr16(b, 24, c);
        let t = s.l4;
        tcp.word(s.sport, f.vip.1);
        tcp.word(s.dport, f.client.1);
        wr16(b, t, f.vip.1);
        wr16(b, t + 2, f.client.1);
        let seq = s.seq.wrapping_add(f.d);
        tcp.dword(s.seq, seq);
        wr32(b, t + 4, seq);
        let win = rescale(s.win, f.b_shift);
        tcp.word(s.win, win);
        wr16(b, t + 14, win);
        if s.hlen > 20 {
            let ts_d = f.ts_d;
            let mut old = [0u8; 40];
            let n = s.hlen - 20;
            old[..n].copy_from_slice(&b[t + 20..t + s.hlen]);
            let opts = &mut b[t + 20..t + s.hlen];
            rewrite_options(opts, |kind, data| {
                if kind == 8 && data.len() == 8 {
                    let val = rd32(data, 0).wrapping_add(ts_d);
                    wr32(data, 0, val);
                }
            });
            tcp.span(&old[..n], &b[t + 20..t + s.hlen]);
        }
        let c = tcp.apply(rd16(b, t + 16));
        wr16(b, t + 16, c);
    }
}

/// Whether sequence number `a` is after `b` (RFC 1982 arithmetic).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Calls `f(kind, data)` on each well-formed option, with its data
/// writable.
fn rewrite_options(opts: &mut [u8], mut f: impl FnMut(u8, &mut [u8])) {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    return;
                }
                f(kind, &mut opts[i + 2..i + len]);
                i += len;
            }
        }
    }
}

impl Seg {
    fn opts_ts(&self, f: &[u8]) -> Option<(u32, u32)> {
        if self.hlen <= 20 {
            return None;
        }
        self.opts(f).ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const BOXC: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
    const BOXS: [u8; 6] = [2, 0, 0, 0, 0, 0x5];
    const BMAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
    const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 10, 0, 1), 40000);
    const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 10, 0, 100), 80);
    const SNAT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);
    const BACKEND: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 10, 0, 11), 80);
    const MS: u64 = 1_000_000;

    fn splicer() -> Splicer<Vec<u8>> {
        let mut c = Config::new(vec![VIP], SNAT);
        c.client_side_mac = BOXC;
        c.backend_side_mac = BOXS;
        Splicer::new(c)
    }

    fn ts_opts(val: u32, ecr: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&val.to_be_bytes());
        o.extend_from_slice(&ecr.to_be_bytes());
        o
    }

    fn syn_opts(ws: Option<u8>, ts: Option<u32>) -> Vec<u8> {
        let mut o = vec![2, 4, 0x05, 0xb4];
        if let Some(v) = ts {
            o.extend_from_slice(&[4, 2, 8, 10]);
            o.extend_from_slice(&v.to_be_bytes());
            o.extend_from_slice(&0u32.to_be_bytes());
        }
        if let Some(w) = ws {
            o.extend_from_slice(&[1, 3, 3, w]);
        }
        o
    }

    fn from_client(seq: u32, ack: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        build(BOXC, CMAC, CLIENT, VIP, seq, ack, flags, 502, opts, payload)
    }

    fn from_backend(port: u16, seq: u32, ack: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        build(BOXS, BMAC, BACKEND, (SNAT, port), seq, ack, flags, 509, opts, payload)
    }

    /// Both checksums of a frame are right.
    fn checksums_ok(f: &[u8]) -> bool {
        let s = Seg::parse(f).expect("a TCP frame");
        let ip_ok = fold(ones_complement_sum(&f[14..s.l4], 0)) == 0;
        let ph = pseudo_header_v4(s.src, s.dst, 6, (s.end - s.l4) as u32);
        ip_ok && fold(ones_complement_sum(&f[s.l4..s.end], ph)) == 0
    }

    fn opts_of(f: &[u8]) -> Opts {
        Seg::parse(f).unwrap().opts(f)
    }

    /// Runs a handshake with timestamps and wscale 6 and sends `req`:
    /// returns the splicer, the cookie, the box's TSval and the ask.
    fn handshake(sp: &mut Splicer<Vec<u8>>, req: &[u8]) -> (u32, u32, Ask) {
        let mut out = Out::default();
        sp.from_client(from_client(1000, 0, SYN, &syn_opts(Some(6), Some(777)), &[]), 0, &mut out);
        let (synack, to) = out.made.pop().expect("a SYN-ACK");
        assert_eq!(to, Toward::Client);
        assert!(checksums_ok(&synack));
        let s = Seg::parse(&synack).unwrap();
        assert_eq!((s.flags, s.ack), (SYN | ACK, 1001));
        let o = opts_of(&synack);
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.ws, Some(7));
        assert!(o.sack_perm);
        let (box_ts, ecr) = o.ts.expect("timestamps");
        assert_eq!(ecr, 777);
        assert_eq!(box_ts & 0xf, 6, "the client's wscale rides in the TSval");
        let cookie = s.seq;
        sp.from_client(from_client(1001, cookie + 1, ACK, &ts_opts(778, box_ts), &[]), MS, &mut out);
        assert!(out.is_empty(), "a pure ACK makes the flow, nothing else");
        sp.from_client(from_client(1001, cookie + 1, ACK | PSH, &ts_opts(779, box_ts), req), 2 * MS, &mut out);
        let ask = out.asks.pop().expect("an ask");
        assert!(out.is_empty());
        (cookie, box_ts, ask)
    }

    #[test]
    fn a_spliced_connection_translates_both_ways_with_valid_checksums() {
        let mut sp = splicer();
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let (cookie, box_ts, ask) = handshake(&mut sp, req);
        assert_eq!((ask.client, ask.vip, ask.attempt, ask.reason), (CLIENT, VIP, 0, AskReason::New));
        let held = sp.held_frame(ask.flow_id).unwrap();
        assert_eq!(&held[ask.payload.clone()], req);

        let mut out = Out::default();
        sp.dest(ask.flow_id, Dest::Connect(BACKEND.0, BACKEND.1), 3 * MS, &mut out);
        let (arp, to) = out.made.pop().expect("an ARP request");
        assert_eq!((to, rd16(&arp, 12), rd32(&arp, 38)), (Toward::Backend, 0x0806, BACKEND.0.to_bits()));
        sp.learn(BACKEND.0, BMAC, 4 * MS, &mut out);
        let (syn, _) = out.made.pop().expect("a SYN to the backend");
        assert!(checksums_ok(&syn));
        let s = Seg::parse(&syn).unwrap();
        assert_eq!((s.src, s.dst, s.dport, s.seq, s.flags), (SNAT, BACKEND.0, 80, 1000, SYN));
        assert_eq!(&syn[0..6], &BMAC);
        let o = opts_of(&syn);
        assert_eq!((o.ws, o.sack_perm, o.ts.map(|t| t.0)), (Some(6), true, Some(779)));
        let port = s.sport;

        // The backend answers with another ISN, TS clock and wscale 5.
        let synack = from_backend(
            port,
            50_000,
            1001,
            SYN | ACK,
            &{
                let mut o = vec![2, 4, 5, 0xb4, 4, 2, 8, 10];
                o.extend_from_slice(&9000u32.to_be_bytes());
                o.extend_from_slice(&779u32.to_be_bytes());
                o.extend_from_slice(&[1, 3, 3, 5]);
                o
            },
            &[],
        );
        sp.from_backend(synack, 5 * MS, &mut out);
        let (replay, to) = out.tx.pop().expect("the held request, replayed");
        assert_eq!(to, Toward::Backend);
        assert!(checksums_ok(&replay));
        let s = Seg::parse(&replay).unwrap();
        assert_eq!((s.src, s.sport, s.dst, s.dport), (SNAT, port, BACKEND.0, 80));
        assert_eq!((s.seq, s.ack), (1001, 50_001), "the ack moves into the backend's space");
        assert_eq!(opts_of(&replay).ts, Some((779, 9000)), "TSecr moves onto the backend's clock");
        assert_eq!(&replay[s.payload()], req);
        assert_eq!(&replay[0..12], &[BMAC, BOXS].concat()[..]);

        // Response: seq and TSval move into the client's view, window rescaled 5 -> 7.
        let resp = from_backend(
            port,
            50_001,
            1001 + req.len() as u32,
            ACK | PSH,
            &ts_opts(9010, 779),
            b"HTTP/1.1 200 OK\r\n\r\n",
        );
        sp.from_backend(resp, 6 * MS, &mut out);
        let (r, to) = out.tx.pop().unwrap();
        assert_eq!(to, Toward::Client);
        assert!(checksums_ok(&r));
        let s = Seg::parse(&r).unwrap();
        assert_eq!((s.src, s.sport, s.dst, s.dport), (VIP.0, 80, CLIENT.0, CLIENT.1));
        assert_eq!(s.seq, cookie + 1);
        assert_eq!(opts_of(&r).ts, Some((box_ts + 10, 779)));
        assert_eq!(s.win, 509 >> 2);
        assert_eq!(&r[0..12], &[CMAC, BOXC].concat()[..]);

        // Client SACK edges move into the backend's space.
        let mut o = ts_opts(780, box_ts + 10);
        o.extend_from_slice(&[1, 1, 5, 10]);
        o.extend_from_slice(&(cookie + 100).to_be_bytes());
        o.extend_from_slice(&(cookie + 200).to_be_bytes());
        sp.from_client(from_client(1001 + req.len() as u32, cookie + 1, ACK, &o, &[]), 7 * MS, &mut out);
        let (a, _) = out.tx.pop().unwrap();
        assert!(checksums_ok(&a));
        let mut edges = None;
        walk_options(&a[54..Seg::parse(&a).unwrap().l4 + Seg::parse(&a).unwrap().hlen], |k, d| {
            if k == 5 {
                edges = Some((rd32(d, 0), rd32(d, 4)));
            }
        });
        assert_eq!(edges, Some((50_100, 50_200)));
        assert_eq!(Seg::parse(&a).unwrap().win, 502, "both scale by 6 toward the backend");

        // FIN both ways: closing, then gone after the linger.
        sp.from_backend(from_backend(port, 50_020, 1028, ACK | FIN, &ts_opts(9020, 780), &[]), 8 * MS, &mut out);
        sp.from_client(from_client(1028, cookie + 21, ACK | FIN, &ts_opts(781, box_ts + 20), &[]), 9 * MS, &mut out);
        assert_eq!(out.tx.len(), 2);
        assert_eq!(sp.counters.closed, 1);
        sp.tick(9 * MS + sp.config().linger, &mut out);
        let end = out.ended.pop().expect("ended");
        assert_eq!((end.why, end.backend), (EndWhy::Closed, Some(BACKEND)));
        assert!(sp.is_empty());
        assert_eq!(sp.held(), 0);
    }

    #[test]
    fn bad_cookies_are_reset_and_make_no_state() {
        let mut sp = splicer();
        let mut out = Out::default();
        assert!(!sp.admits(&from_client(5000, 12345, ACK, &[], b"GET /"), 0));
        sp.from_client(from_client(5000, 12345, ACK, &[], b"GET /"), 0, &mut out);
        let (rst, _) = out.made.pop().unwrap();
        let s = Seg::parse(&rst).unwrap();
        assert_eq!((s.flags, s.seq), (RST, 12345));
        assert_eq!((sp.counters.cookies_bad, sp.len()), (1, 0));
        // A cookie from a SYN long ago is stale.
        sp.from_client(from_client(1000, 0, SYN, &syn_opts(None, None), &[]), 0, &mut out);
        let cookie = Seg::parse(&out.made.pop().unwrap().0).unwrap().seq;
        // What the runtime gives flow state: not SYNs, not bad or stale
        // cookies; the completing ACK and what follows on its connection.
        assert!(!sp.admits(&from_client(1000, 0, SYN, &syn_opts(None, None), &[]), 0));
        assert!(!sp.admits(&from_client(1001, cookie + 2, ACK, &[], &[]), COOKIE_PERIOD));
        assert!(!sp.admits(&from_client(1001, cookie + 1, ACK | RST, &[], &[]), COOKIE_PERIOD));
        assert!(!sp.admits(&from_client(1001, cookie + 1, ACK, &[], &[]), 4 * COOKIE_PERIOD));
        assert!(sp.admits(&from_client(1001, cookie + 1, ACK, &[], &[]), COOKIE_PERIOD));
        sp.from_client(from_client(1001, cookie + 1, ACK, &[], &[]), 4 * COOKIE_PERIOD, &mut out);
        assert_eq!((sp.counters.cookies_bad, sp.len()), (2, 0));
        sp.from_client(from_client(1001, cookie + 1, ACK, &[], &[]), COOKIE_PERIOD, &mut out);
        assert_eq!((sp.counters.cookies_ok, sp.len()), (1, 1));
        assert!(sp.admits(&from_client(1001, 0, RST, &[], &[]), COOKIE_PERIOD), "its connection's segments, any");
    }

    #[test]
    fn without_timestamps_the_box_offers_neither_scaling_nor_sack() {
        let mut sp = splicer();
        let mut out = Out::default();
        sp.from_client(from_client(1000, 0, SYN, &syn_opts(Some(7), None), &[]), 0, &mut out);
        let o = opts_of(&out.made.pop().unwrap().0);
        assert_eq!((o.mss, o.ws, o.sack_perm, o.ts), (Some(1460), None, false, None));
    }

    #[test]
    fn a_backend_reset_asks_again_and_the_last_attempt_gets_a_503() {
        let mut sp = splicer();
        sp.learn(BACKEND.0, BMAC, 0, &mut Out::default());
        let (cookie, _, ask) = handshake(&mut sp, b"GET / HTTP/1.1\r\n\r\n");
        let mut out = Out::default();
        let mut ask = ask;
        for attempt in 0..3u8 {
            assert_eq!(ask.attempt, attempt);
            sp.dest(ask.flow_id, Dest::Connect(BACKEND.0, BACKEND.1), 3 * MS, &mut out);
            let (syn, _) = out.made.pop().expect("a SYN");
            let port = Seg::parse(&syn).unwrap().sport;
            sp.from_backend(from_backend(port, 0, 1001, RST | ACK, &[], &[]), 4 * MS, &mut out);
            if attempt < 2 {
                ask = out.asks.pop().expect("asked again");
                assert_eq!((ask.reason, ask.last), (AskReason::Reset, Some(BACKEND)));
            }
        }
        let (resp, _) = out.made.pop().expect("a 503");
        let s = Seg::parse(&resp).unwrap();
        assert!(resp[s.payload()].starts_with(b"HTTP/1.1 503"));
        assert_eq!((s.seq, s.flags & FIN), (cookie + 1, FIN));
        assert_eq!((sp.counters.backend_resets, sp.counters.retries, sp.counters.rejected_503), (3, 2, 1));
        assert_eq!(sp.held(), 0);
    }

    #[test]
    fn a_silent_policy_or_backend_times_out() {
        let mut sp = splicer();
        let (_, _, ask) = handshake(&mut sp, b"GET /");
        let mut out = Out::default();
        sp.tick(2 * MS + sp.config().request_timeout, &mut out);
        assert_eq!(sp.counters.policy_timeouts, 1);
        assert!(out.made.iter().any(|(f, _)| f[Seg::parse(f).unwrap().payload()].starts_with(b"HTTP/1.1 503")));
        sp.dest(ask.flow_id, Dest::Connect(BACKEND.0, 80), 3 * MS, &mut out);
        assert_eq!(sp.counters.stray_dests, 1);

        let mut sp = splicer();
        sp.learn(BACKEND.0, BMAC, 0, &mut out);
        let (_, _, ask) = handshake(&mut sp, b"GET /");
        out = Out::default();
        sp.dest(ask.flow_id, Dest::Connect(BACKEND.0, 80), 3 * MS, &mut out);
        let mut t = 3 * MS;
        while out.asks.is_empty() {
            t += 50 * MS;
            sp.tick(t, &mut out);
            assert!(t < 3 * MS + sp.config().connect_timeout + 100 * MS);
        }
        assert_eq!(out.asks[0].reason, AskReason::Timeout);
        assert!(sp.counters.syn_retransmits >= 3);
    }

    #[test]
    fn a_full_table_resets_new_clients_and_evicts_closed_flows_first() {
        let mut c = Config::new(vec![VIP], SNAT);
        c.max_flows = 1;
        c.reject = Reject::Reset;
        let mut sp: Splicer<Vec<u8>> = Splicer::new(c);
        let (_, _, ask) = handshake(&mut sp, b"GET /");
        let mut out = Out::default();
        let other = (Ipv4Addr::new(10, 10, 0, 2), 1234);
        let syn = build(BOXC, CMAC, other, VIP, 7, 0, SYN, 100, &[], &[]);
        sp.from_client(syn, 0, &mut out);
        let cookie = Seg::parse(&out.made.pop().unwrap().0).unwrap().seq;
        let ack = build(BOXC, CMAC, other, VIP, 8, cookie + 1, ACK, 100, &[], &[]);
        sp.from_client(ack.clone(), 0, &mut out);
        assert_eq!(sp.counters.table_full, 1);
        assert_eq!(Seg::parse(&out.made.pop().unwrap().0).unwrap().flags, RST);
        // Rejected with RST: the first flow is gone, room for the next.
        sp.dest(ask.flow_id, Dest::Reject(Reject::Reset), 0, &mut out);
        sp.from_client(ack, 0, &mut out);
        assert_eq!((sp.len(), sp.counters.cookies_ok), (1, 2));
    }

    #[test]
    fn an_old_connections_ack_is_reset_and_the_syn_sent_again() {
        let mut sp = splicer();
        sp.learn(BACKEND.0, BMAC, 0, &mut Out::default());
        let (_, _, ask) = handshake(&mut sp, b"GET /");
        let mut out = Out::default();
        sp.dest(ask.flow_id, Dest::Connect(BACKEND.0, 80), 3 * MS, &mut out);
        let port = Seg::parse(&out.made.pop().unwrap().0).unwrap().sport;
        sp.from_backend(from_backend(port, 777, 424_242, ACK, &[], &[]), 4 * MS, &mut out);
        let rst = Seg::parse(&out.made[0].0).unwrap();
        let syn = Seg::parse(&out.made[1].0).unwrap();
        assert_eq!((rst.flags, rst.seq, syn.flags, syn.seq), (RST, 424_242, SYN, 1000));
        assert_eq!(sp.counters.stale_resets, 1);
    }

    #[test]
    fn rescaling_rounds_down_but_never_to_zero() {
        assert_eq!(rescale(1000, (7, 7)), 1000);
        assert_eq!(rescale(1000, (5, 7)), 250);
        assert_eq!(rescale(1, (0, 7)), 1);
        assert_eq!(rescale(0, (0, 7)), 0);
        assert_eq!(rescale(1000, (7, 0)), 65535);
    }

    proptest! {
        /// Whatever the fields, options and payload, translation leaves
        /// both checksums right.
        #[test]
        fn translation_keeps_checksums_right(
            seq in any::<u32>(), ack in any::<u32>(), d in any::<u32>(), ts_d in any::<u32>(),
            tsval in any::<u32>(), tsecr in any::<u32>(), sack in any::<(u32, u32)>(),
            pad in 0usize..3, payload in proptest::collection::vec(any::<u8>(), 0..64), flags in any::<u8>(),
        ) {
            let mut sp = splicer();
            let (_, _, ask) = handshake(&mut sp, b"x");
            let idx = sp.index(ask.flow_id).unwrap();
            {
                let f = &mut sp.flows[idx as usize];
                f.d = d;
                f.ts_d = ts_d;
                f.backend = BACKEND;
                f.snat_port = 10001;
                f.c_shift = (6, 0);
                f.b_shift = (3, 7);
            }
            let mut opts = vec![1; pad];
            opts.extend_from_slice(&[8, 10]);
            opts.extend_from_slice(&tsval.to_be_bytes());
            opts.extend_from_slice(&tsecr.to_be_bytes());
            opts.extend_from_slice(&[5, 10]);
            opts.extend_from_slice(&sack.0.to_be_bytes());
            opts.extend_from_slice(&sack.1.to_be_bytes());
            while opts.len() % 4 != 0 {
                opts.push(0);
            }
            let mut f = from_client(seq, ack, flags | ACK, &opts, &payload);
            sp.translate_to_backend(idx, &mut f);
            prop_assert!(checksums_ok(&f));
            let mut g = from_backend(10001, seq, ack, flags, &opts, &payload);
            sp.translate_to_client(idx, &mut g);
            prop_assert!(checksums_ok(&g));
            let s = Seg::parse(&g).unwrap();
            prop_assert_eq!(s.seq, seq.wrapping_add(d));
        }

        /// Garbage never panics the splicer, from either side.
        #[test]
        fn garbage_is_dropped_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), cut in 0usize..120) {
            let mut sp = splicer();
            let mut out = Out::default();
            let mut f = from_client(1, 2, SYN, &syn_opts(Some(3), Some(4)), b"abc");
            let n = cut.min(f.len());
            f[34..].iter_mut().zip(bytes.iter()).for_each(|(a, b)| *a ^= b);
            f.truncate(n);
            sp.from_client(f.clone(), 0, &mut out);
            sp.from_backend(f, 0, &mut out);
            let mut g = bytes.clone();
            g.resize(80, 0);
            sp.from_client(g, 0, &mut out);
        }
    }
}
