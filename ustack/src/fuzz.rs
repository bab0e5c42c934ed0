//! Drivers for fuzzing the sans-IO stacks: each takes arbitrary bytes,
//! decodes them into a run of operations, and panics only when an
//! invariant breaks. The `cargo fuzz` targets in `fuzz/` call them under
//! libFuzzer; property tests call them on random bytes in every `cargo
//! test`, so CI runs the same checks without a nightly toolchain.

use core::net::Ipv4Addr;

use crate::splice::{Config, Dest, Out, Reject, Source, Splicer, Toward};
use crate::wire::checksum::{fold, ones_complement_sum, pseudo_header_v4};

const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 10, 0, 100), 80);
const SNAT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 1);
const BACKENDS: [(Ipv4Addr, u16); 2] = [(Ipv4Addr::new(10, 10, 0, 11), 80), (Ipv4Addr::new(10, 10, 0, 12), 8080)];
const BOXC: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BOXS: [u8; 6] = [2, 0, 0, 0, 0, 0x5];
const MS: u64 = 1_000_000;
const MAX_FLOWS: usize = 6;
const MAX_HELD_TOTAL: usize = 10;

/// Reads the input a field at a time; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

/// What the driver remembers of a client connection, to answer in kind.
#[derive(Clone, Copy, Default)]
struct Client {
    isn: u32,
    sent: u32,
    /// The box's ISN (the cookie) and TSval from its SYN-ACK.
    cookie: Option<(u32, u32)>,
}

/// What it remembers of a connection the splicer opened to a backend.
#[derive(Clone, Copy)]
struct Backend {
    backend: (Ipv4Addr, u16),
    port: u16,
    /// The client ISN the SYN carried, the backend's ISN, bytes it sent.
    syn_seq: u32,
    isn: u32,
    sent: u32,
    tsval: Option<u32>,
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    src_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + opts.len().div_ceil(4) * 4;
    let total = 20 + hlen + payload.len();
    let mut f = vec![0u8; 14 + total];
    f[0..6].copy_from_slice(if src_mac == BOXC { &BOXS } else { &BOXC });
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let c = fold(ones_complement_sum(ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&src.1.to_be_bytes());
    t[2..4].copy_from_slice(&dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((hlen / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t[20..20 + opts.len()].copy_from_slice(opts);
    t[hlen..].copy_from_slice(payload);
    let ph = pseudo_header_v4(src.0, dst.0, 6, (hlen + payload.len()) as u32);
    let c = fold(ones_complement_sum(t, ph));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    debug_assert_eq!(fold(ones_complement_sum(&f[14..34], 0)), 0);
    f
}

/// Options from one byte of input: which of MSS, SACK-permitted,
/// timestamps, window scale (its shift from the byte), plus a SACK block.
fn options(sel: u8, tsval: u32, tsecr: u32, sack: Option<(u32, u32)>) -> Vec<u8> {
    let mut o = Vec::new();
    if sel & 1 != 0 {
        o.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    }
    if sel & 2 != 0 {
        o.extend_from_slice(&[4, 2]);
    }
    if sel & 4 != 0 {
        o.extend_from_slice(&[8, 10]);
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&tsecr.to_be_bytes());
    }
    if sel & 8 != 0 {
        o.extend_from_slice(&[3, 3, sel >> 4]);
    }
    if let Some((a, b)) = sack.filter(|_| sel & 0x40 != 0) {
        o.extend_from_slice(&[1, 1, 5, 10]);
        o.extend_from_slice(&a.to_be_bytes());
        o.extend_from_slice(&b.to_be_bytes());
    }
    while o.len() % 4 != 0 {
        o.push(1);
    }
    o.truncate(40);
    o
}

/// Recomputes the IPv4 and TCP checksums of a frame whose lengths are
/// consistent; leaves any other frame as it is.
fn fix_checksums(f: &mut [u8]) {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(f[14] & 0xf) * 4;
    let total = usize::from(rd16(f, 16));
    if ihl < 20 || total < ihl + 20 || 14 + total > f.len() {
        return;
    }
    f[24..26].fill(0);
    let c = fold(ones_complement_sum(&f[14..14 + ihl], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    if f[23] != 6 {
        return;
    }
    let l4 = 14 + ihl;
    f[l4 + 16..l4 + 18].fill(0);
    let ph = pseudo_header_v4(Ipv4Addr::from(rd32(f, 26)), Ipv4Addr::from(rd32(f, 30)), 6, (total - ihl) as u32);
    let c = fold(ones_complement_sum(&f[l4..14 + total], ph));
    f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

fn rd16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn rd32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// TSval in a frame's options, if any.
fn tsval_of(f: &[u8], l4: usize, hlen: usize) -> Option<u32> {
    let mut i = l4 + 20;
    while i < l4 + hlen {
        match f[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = usize::from(*f.get(i + 1)?);
                if len < 2 || i + len > l4 + hlen {
                    return None;
                }
                if kind == 8 && len == 10 {
                    return Some(rd32(f, i + 2));
                }
                i += len;
            }
        }
    }
    None
}

/// Checks one frame the splicer sent, and learns from it what a peer
/// would: a SYN-ACK's cookie, a SYN to a backend.
fn check_out(f: &[u8], to: Toward, clients: &mut [Client; 4], backends: &mut Vec<Backend>) {
    if f.len() >= 14 && f[12..14] == [0x08, 0x06] {
        return; // an ARP request
    }
    assert!(f.len() >= 54 && f[12..14] == [0x08, 0x00] && f[23] == 6, "the splicer sends TCP/IPv4 or ARP only");
    let ihl = usize::from(f[14] & 0xf) * 4;
    let total = usize::from(rd16(f, 16));
    assert!(ihl >= 20 && 14 + total <= f.len(), "a consistent IPv4 header");
    assert_eq!(fold(ones_complement_sum(&f[14..14 + ihl], 0)), 0, "IPv4 checksum {to:?} {f:02x?}");
    let l4 = 14 + ihl;
    let src = Ipv4Addr::from(rd32(f, 26));
    let dst = Ipv4Addr::from(rd32(f, 30));
    let ph = pseudo_header_v4(src, dst, 6, (14 + total - l4) as u32);
    assert_eq!(fold(ones_complement_sum(&f[l4..14 + total], ph)), 0, "TCP checksum {to:?} {f:02x?}");
    let hlen = usize::from(f[l4 + 12] >> 4) * 4;
    assert!(hlen >= 20 && l4 + hlen <= 14 + total, "a consistent TCP header");
    let (sport, dport) = (rd16(f, l4), rd16(f, l4 + 2));
    let (seq, ack, flags) = (rd32(f, l4 + 4), rd32(f, l4 + 8), f[l4 + 13]);
    match to {
        Toward::Client => {
            assert_eq!((src, sport), VIP, "frames to a client come from the VIP");
            assert_eq!(dst, CLIENT);
            assert_eq!(&f[6..12], &BOXC, "from the box's client-side MAC");
            if flags & 0x12 == 0x12 {
                if let Some(c) = clients.iter_mut().find(|c| c.isn.wrapping_add(1) == ack) {
                    c.cookie = Some((seq, tsval_of(f, l4, hlen).unwrap_or(0)));
                }
            }
        }
        Toward::Backend => {
            assert_eq!(src, SNAT, "frames to a backend come from the SNAT address");
            assert!(BACKENDS.contains(&(dst, dport)), "only to a backend the policy chose");
            assert_eq!(&f[6..12], &BOXS, "from the box's backend-side MAC");
            if flags & 0x12 == 0x02 && !backends.iter().any(|b| b.port == sport && b.syn_seq == seq) {
                backends.retain(|b| b.port != sport);
                backends.push(Backend {
                    backend: (dst, dport),
                    port: sport,
                    syn_seq: seq,
                    isn: 0,
                    sent: 0,
                    tsval: None,
                });
                backends.truncate(8);
            }
        }
    }
}

/// Drives a [`Splicer`] with clients, a policy and backends played from
/// `data`: SYNs with any options, handshakes completed with the cookie
/// (or not), requests, FINs, RSTs, the policy's answers, backend SYN-ACKs
/// and replies, time passing, ARP, and raw garbage from either side.
/// After every step: every frame sent has right checksums and goes only
/// where it may (to the client from the VIP, to a chosen backend from the
/// SNAT address), and the flows and held segments stay within bounds. At
/// the end, a drain leaves nothing behind. Returns the splicer's counters
/// (how far the run got).
pub fn splice(data: &[u8]) -> crate::splice::Counters {
    let mut cfg = Config::new(vec![VIP], SNAT);
    cfg.client_side_mac = BOXC;
    cfg.backend_side_mac = BOXS;
    cfg.max_flows = MAX_FLOWS;
    cfg.max_held = 3;
    cfg.max_held_total = MAX_HELD_TOTAL;
    cfg.max_attempts = 2;
    cfg.ports = 20000..20016;
    let mut sp: Splicer<Vec<u8>> = Splicer::new(cfg);
    let mut inp = Input { data };
    let mut out = Out::default();
    let mut now = 0u64;
    let mut clients = [Client::default(); 4];
    let mut backends: Vec<Backend> = Vec::new();
    let mut asks = Vec::new();
    for (i, b) in BACKENDS.iter().enumerate() {
        if inp.u8() & 1 == 0 {
            sp.learn(b.0, [2, 0, 0, 0, 1, i as u8], now, &mut out);
        }
    }
    while !inp.data.is_empty() {
        let op = inp.u8();
        let c = usize::from(op >> 4) % clients.len();
        let port = 40000 + c as u16;
        let frame_c = |seq, ack, flags, opts: &[u8], payload: &[u8]| {
            tcp_frame([2, 0, 0, 0, 0, 1], (CLIENT, port), VIP, seq, ack, flags, 502, opts, payload)
        };
        let mut frame = None;
        let mut from_backend = false;
        match op & 0xf {
            0 => {
                let isn = inp.u32();
                clients[c] = Client { isn, sent: 0, cookie: None };
                let o = options(inp.u8(), inp.u32(), 0, None);
                frame = Some(frame_c(isn, 0, 0x02, &o, &[]));
            }
            1..=4 => {
                let cl = clients[c];
                let (cookie, ts) = match cl.cookie {
                    Some(c) => c,
                    None => (inp.u32(), 0),
                };
                let mut ack = cookie.wrapping_add(1);
                if inp.u8() & 7 == 0 {
                    ack = ack.wrapping_add(inp.u32()); // a wrong or stale one
                }
                let sel = inp.u8() & !0x0b; // no MSS or scaling after the SYN
                let o = options(sel, inp.u32(), ts, Some((ack.wrapping_add(1), ack.wrapping_add(100))));
                let seq = cl.isn.wrapping_add(1).wrapping_add(cl.sent);
                let n = usize::from(inp.u8() % 48);
                let payload = inp.bytes(n).to_vec();
                let flags = match op & 0xf {
                    1 => 0x10,
                    2 => 0x18,
                    3 => 0x11,
                    _ => 0x14,
                };
                let payload = if flags == 0x18 { payload } else { Vec::new() };
                clients[c].sent = cl.sent.wrapping_add(payload.len() as u32 + u32::from(flags & 1));
                frame = Some(frame_c(seq, ack, flags, &o, &payload));
            }
            5 => {
                if !asks.is_empty() {
                    let a: crate::splice::Ask = asks.remove(usize::from(inp.u8()) % asks.len());
                    let how = inp.u8();
                    match how % 8 {
                        0 => sp.no_policy(a.flow_id, now, &mut out),
                        1 => sp.dest(a.flow_id, Dest::Reject(Reject::Reset), now, &mut out),
                        2 => sp.dest(a.flow_id, Dest::Reject(Reject::Http503), now, &mut out),
                        k => {
                            let b = BACKENDS[usize::from(k) % 2];
                            sp.dest(a.flow_id, Dest::Connect(b.0, b.1), now, &mut out);
                        }
                    }
                }
            }
            6..=10 if !backends.is_empty() => {
                let k = usize::from(inp.u8()) % backends.len();
                let b = backends[k];
                let src = b.backend;
                let dst = (SNAT, b.port);
                let sel = inp.u8();
                let tsval = inp.u32();
                let bmac = [2, 0, 0, 0, 1, 9];
                frame = Some(match op & 0xf {
                    6 => {
                        let isn = inp.u32();
                        backends[k].isn = isn;
                        backends[k].sent = 0;
                        backends[k].tsval = Some(tsval);
                        let o = options(sel, tsval, 0, None);
                        tcp_frame(bmac, src, dst, isn, b.syn_seq.wrapping_add(1), 0x12, 65535, &o, &[])
                    }
                    7..=9 => {
                        let n = usize::from(inp.u8() % 64);
                        let payload = if op & 0xf == 7 { inp.bytes(n).to_vec() } else { Vec::new() };
                        let flags = [0x18, 0x11, 0x14][usize::from(op & 0xf) - 7];
                        let seq = b.isn.wrapping_add(1).wrapping_add(b.sent);
                        backends[k].sent = b.sent.wrapping_add(payload.len() as u32 + u32::from(flags & 1));
                        let ack = b.syn_seq.wrapping_add(1).wrapping_add(inp.u16().into());
                        let o = options(sel & !0x0b, tsval, 0, Some((ack, ack.wrapping_add(10))));
                        tcp_frame(bmac, src, dst, seq, ack, flags, 1000, &o, &payload)
                    }
                    _ => {
                        // A late or foreign ACK on the SNAT port.
                        tcp_frame(bmac, src, dst, inp.u32(), inp.u32(), 0x10, 1000, &[], &[])
                    }
                });
                from_backend = true;
            }
            11 => {
                now += u64::from(inp.u8()) * 10 * MS; // up to 2.5 s: every timeout is reachable
                sp.tick(now, &mut out);
            }
            12 => {
                let b = BACKENDS[usize::from(inp.u8()) % 2];
                sp.learn(b.0, [2, 0, 0, 0, 1, inp.u8() | 2], now, &mut out);
            }
            _ => {
                // Garbage: a frame that claims to be for the VIP or the SNAT
                // address, with the rest of its bytes from the input.
                from_backend = op & 1 != 0;
                let mut f = if from_backend {
                    tcp_frame(
                        [2, 0, 0, 0, 1, 9],
                        BACKENDS[0],
                        (SNAT, 20000 + u16::from(op & 0xf)),
                        0,
                        0,
                        0,
                        0,
                        &[],
                        &[],
                    )
                } else {
                    frame_c(0, 0, 0, &[], &[])
                };
                let n = usize::from(inp.u8() % 64);
                let at = 14 + usize::from(inp.u8() % 40);
                let junk = inp.bytes(n).to_vec();
                f.resize(f.len().max(at + junk.len()), 0);
                f[at..at + junk.len()].copy_from_slice(&junk);
                f.truncate(usize::from(inp.u8()).max(14).min(f.len()));
                // Right checksums over whatever headers it now has, as a
                // NIC's checks would leave it: what the splicer forwards
                // must then still have right ones (an incremental update
                // keeps a wrong one wrong, as it should).
                fix_checksums(&mut f);
                frame = Some(f);
            }
        }
        now += MS / 10;
        if let Some(f) = frame {
            match (sp.claims(&f), from_backend) {
                (Some(Source::Client), false) => sp.from_client(f, now, &mut out),
                (Some(Source::Backend), true) => sp.from_backend(f, now, &mut out),
                _ => {} // not the splicer's: bridged by the runtime
            }
        }
        settle(&mut sp, &mut out, &mut clients, &mut backends, &mut asks);
    }
    let reached = sp.counters;
    sp.drain(&mut out);
    settle(&mut sp, &mut out, &mut clients, &mut backends, &mut asks);
    assert!(sp.is_empty() && sp.held() == 0, "a drain ends every flow and lets go of every held segment");
    reached
}

/// Checks what one step produced and what it left.
fn settle(
    sp: &mut Splicer<Vec<u8>>,
    out: &mut Out<Vec<u8>>,
    clients: &mut [Client; 4],
    backends: &mut Vec<Backend>,
    asks: &mut Vec<crate::splice::Ask>,
) {
    for (f, to) in out.tx.drain(..).chain(out.made.drain(..)) {
        check_out(&f, to, clients, backends);
    }
    for a in out.asks.drain(..) {
        assert_eq!((a.client.0, a.vip), (CLIENT, VIP));
        let held = sp.held_frame(a.flow_id).expect("an ask names a flow holding its request");
        assert!(
            a.payload.end <= held.len() && a.payload.start <= a.payload.end,
            "the request bytes are in the frame: {a:?}, {} bytes",
            held.len()
        );
        asks.push(a);
        asks.truncate(16);
    }
    for e in out.ended.drain(..) {
        assert!(e.first_seen <= e.last_seen);
        asks.retain(|a| a.flow_id != e.flow_id);
    }
    assert!(sp.len() <= MAX_FLOWS, "flows within max_flows");
    assert!(sp.held() <= MAX_HELD_TOTAL, "held segments within max_held_total");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// A full splice, op by op, so the driver is known to reach deep
    /// states (the random runs below mostly do not get that far).
    #[test]
    fn a_scripted_run_reaches_the_spliced_state() {
        let mut d = vec![0, 0]; // both backends' MACs known
        d.extend_from_slice(&[0x00, 0, 0, 0, 100, 0x0f, 0, 0, 0, 1]); // client 0 SYN, isn 100, all options
        d.extend_from_slice(&[0x02, 1, 0x04, 0, 0, 0, 2, 5]); // the ACK with the request "hello"
        d.extend_from_slice(b"hello");
        d.extend_from_slice(&[0x05, 0, 3]); // the policy: backend 1
        d.extend_from_slice(&[0x06, 0, 0x0f, 0, 0, 0, 9, 0, 0, 0, 50]); // its SYN-ACK
        d.extend_from_slice(&[0x07, 0, 0x04, 0, 0, 0, 10, 4, 0, 6]);
        d.extend_from_slice(b"ok!!");
        let c = super::splice(&d);
        assert_eq!((c.syn_cookies, c.cookies_ok, c.spliced), (1, 1, 1), "{c:?}");
    }

    const WEIGHTED: [u8; 24] = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 9, 10, 11, 12, 1];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// Random runs: no panic, no broken invariant.
        #[test]
        fn random_runs_keep_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = super::splice(&data);
        }

        /// Runs made of valid-looking steps only (op codes 0..=12, weighted
        /// toward requests, the policy's answers and backend segments, few
        /// clients), which get further into handshakes and splices than raw
        /// bytes.
        #[test]
        fn runs_of_valid_steps_keep_the_invariants(
            steps in proptest::collection::vec((0usize..WEIGHTED.len(), 0u8..2, proptest::collection::vec(any::<u8>(), 12)), 0..80)
        ) {
            let mut d = vec![0, 0];
            for (op, c, body) in steps {
                d.push(WEIGHTED[op] | c << 4);
                d.extend_from_slice(&body);
            }
            let _ = super::splice(&d);
        }
    }
}
