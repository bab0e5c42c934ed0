//! Property tests of the TCP monitor and reassembly.
//!
//! - Arbitrary segment sequences (flags, sequence and acknowledgment
//!   numbers, windows, options, payloads), mixed with floor releases, time
//!   passing and terminate: no panic, range sets within their bound,
//!   frontier monotonic, floor <= frontier <= written end, delivered bytes
//!   never change, DATA_RDY ranges contiguous and readable, at most one
//!   ending event per connection, everything dropped after terminate.
//! - Mutations of a valid session (segments split, duplicated, delayed as
//!   if lost and retransmitted, reordered within a bounded distance, extra
//!   retransmissions of sub-ranges, optionally no handshake): every byte is
//!   delivered at least once, so both reassembled streams must equal the
//!   original bytes, with no conflict, no stop and exactly one `Closed`.
//!
//! The case count follows `PROPTEST_CASES` (default 256).

use proptest::prelude::*;
use ustack::flow::Side;
use ustack::tcp::{
    Action, ConnPhase, MonitorConfig, OverlapPolicy, Reassembler, Segment, SegmentOptions, Stream, Streams, TcpConn,
    TcpEvent, TcpSnapshot, SECOND,
};
use ustack::wire::TcpFlags;

const SIDES: [Side; 2] = [Side::Client, Side::Server];

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// A connection, its two reassemblers and rings, and the checks run after
/// every call.
struct Rig {
    cfg: MonitorConfig,
    conn: TcpConn,
    reasm: [Reassembler; 2],
    rings: [Vec<u8>; 2],
    /// Bytes read on DataReady (what a reader saw), per side.
    read: [Vec<u8>; 2],
    events: Vec<(TcpEvent, TcpSnapshot)>,
    generation: u32,
    /// Ending events (Closed, Timeout) in this generation.
    endings: usize,
    syns: usize,
    now: u64,
    release: bool,
}

impl Rig {
    fn new(cfg: MonitorConfig, cap: usize) -> Rig {
        Rig {
            cfg,
            conn: TcpConn::new(),
            reasm: [Reassembler::from_config(&cfg), Reassembler::from_config(&cfg)],
            rings: [vec![0; cap], vec![0; cap]],
            read: [Vec::new(), Vec::new()],
            events: Vec::new(),
            generation: 0,
            endings: 0,
            syns: 0,
            now: 0,
            release: true,
        }
    }

    fn seg(&mut self, side: Side, seg: &Segment<'_>) -> Result<Action, TestCaseError> {
        self.now += 1000;
        let before = [self.reasm_frontier(Side::Client), self.reasm_frontier(Side::Server)];
        let [rc, rs] = &mut self.reasm;
        let [gc, gs] = &mut self.rings;
        let streams =
            Streams { client: Some(Stream { reasm: rc, ring: gc }), server: Some(Stream { reasm: rs, ring: gs }) };
        let mut evs = Vec::new();
        let action = self.conn.on_segment(&self.cfg, seg, side, self.now, streams, &mut |e, s| evs.push((e, s)));
        let restarted = self.conn.generation() != self.generation;
        if restarted {
            self.generation = self.conn.generation();
            self.read = [Vec::new(), Vec::new()];
            self.endings = 0;
            self.syns = 0;
        }
        for side in SIDES {
            if !restarted {
                prop_assert!(self.reasm_frontier(side) >= before[idx(side)], "frontier went back");
            }
        }
        self.absorb(evs)?;
        self.check()?;
        Ok(action)
    }

    fn reasm_frontier(&self, side: Side) -> u64 {
        self.reasm[idx(side)].frontier()
    }

    fn absorb(&mut self, evs: Vec<(TcpEvent, TcpSnapshot)>) -> Result<(), TestCaseError> {
        for &(e, s) in &evs {
            if let Some(side) = e.side() {
                prop_assert_eq!(s.side(), side);
            }
            match e {
                TcpEvent::DataReady { side, start, end } => {
                    let i = idx(side);
                    prop_assert_eq!(start, self.read[i].len() as u64, "DataReady ranges are contiguous");
                    prop_assert!(end > start);
                    prop_assert_eq!(end, self.reasm[i].frontier());
                    let bytes = self.reasm[i].reader(&self.rings[i]).read_vec(start..end);
                    prop_assert!(bytes.is_ok(), "new bytes must be readable: {:?}", bytes);
                    self.read[i].extend_from_slice(&bytes.unwrap_or_default());
                    if self.release {
                        self.reasm[i].release(end);
                    }
                }
                TcpEvent::Closed | TcpEvent::Timeout => {
                    self.endings += 1;
                    prop_assert_eq!(self.endings, 1, "one ending per connection");
                }
                TcpEvent::Syn => {
                    self.syns += 1;
                    prop_assert_eq!(self.syns, 1, "one Syn per connection");
                }
                _ => {}
            }
        }
        self.events.extend(evs);
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for side in SIDES {
            let i = idx(side);
            let r = &self.reasm[i];
            let cap = self.rings[i].len() as u64;
            prop_assert!(r.ooo_len() <= r.max_ranges());
            prop_assert!(r.floor() <= r.frontier() && r.frontier() <= r.written_end());
            prop_assert_eq!(r.frontier(), self.read[i].len() as u64);
            let mut prev = r.frontier();
            for rg in r.ooo_ranges() {
                prop_assert!(rg.start > prev && rg.start < rg.end, "ranges sorted, apart, past the frontier");
                prop_assert!(rg.end <= r.floor() + cap, "held data within the ring");
                prev = rg.end;
            }
            // What the ring still holds of the delivered stream is unchanged.
            let rd = r.reader(&self.rings[i]);
            let readable = rd.readable();
            let held = rd.read_vec(readable.clone());
            prop_assert!(held.is_ok());
            let (a, b) = (readable.start as usize, readable.end as usize);
            prop_assert_eq!(held.unwrap_or_default(), self.read[i][a..b].to_vec(), "delivered bytes changed");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Arbitrary segments.

#[derive(Clone, Debug)]
enum Num {
    Any(u32),
    /// Relative to an ISN.
    Rel(i32),
}

#[derive(Clone, Debug)]
enum Op {
    Seg { server: bool, flags: u8, seq: Num, ack: Num, window: u16, len: u8, fill: u8, ws: Option<u8>, ts: bool },
    Release { server: bool, frac: u8 },
    Advance { secs: u16 },
    Terminate,
}

fn num() -> impl Strategy<Value = Num> {
    prop_oneof![
        1 => any::<u32>().prop_map(Num::Any),
        6 => (-40i32..400).prop_map(Num::Rel),
        1 => (-70_000i32..70_000).prop_map(Num::Rel),
    ]
}

/// Acknowledgment numbers: mostly near the start of the peer's stream, so
/// that they rarely pass its frontier (which stops reassembly with a gap).
fn ack_num() -> impl Strategy<Value = Num> {
    prop_oneof![
        6 => (-2i32..4).prop_map(Num::Rel),
        2 => num(),
    ]
}

fn flags() -> impl Strategy<Value = u8> {
    let f = |x: TcpFlags| x.bits();
    prop_oneof![
        1 => any::<u8>(),
        1 => Just(f(TcpFlags::SYN)),
        1 => Just(f(TcpFlags::SYN | TcpFlags::ACK)),
        6 => Just(f(TcpFlags::ACK)),
        3 => Just(f(TcpFlags::ACK | TcpFlags::PSH)),
        1 => Just(f(TcpFlags::FIN | TcpFlags::ACK)),
        1 => Just(f(TcpFlags::RST)),
        1 => Just(f(TcpFlags::RST | TcpFlags::ACK)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        80 => (any::<bool>(), flags(), num(), ack_num(), any::<u16>(), 0u8..64, any::<u8>(), proptest::option::of(0u8..20), any::<bool>())
            .prop_map(|(server, flags, seq, ack, window, len, fill, ws, ts)| Op::Seg { server, flags, seq, ack, window, len, fill, ws, ts }),
        10 => (any::<bool>(), any::<u8>()).prop_map(|(server, frac)| Op::Release { server, frac }),
        3 => (0u16..20).prop_map(|secs| Op::Advance { secs }),
        1 => (0u16..400).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Terminate),
    ]
}

fn config() -> impl Strategy<Value = (MonitorConfig, usize)> {
    (
        any::<bool>(),
        0usize..=16,
        0u32..2000,
        prop_oneof![1 => Just(0usize), 1 => Just(16), 2 => Just(64), 2 => Just(300), 4 => Just(4096)],
    )
        .prop_map(|(last, max_ooo_ranges, window_slack, cap)| {
            let overlap = if last { OverlapPolicy::LastWins } else { OverlapPolicy::FirstWins };
            (MonitorConfig { overlap, max_ooo_ranges, window_slack, ..MonitorConfig::default() }, cap)
        })
}

fn run_arbitrary(cfg: MonitorConfig, cap: usize, isns: [u32; 2], ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut rig = Rig::new(cfg, cap);
    rig.release = false;
    let mut payload = Vec::with_capacity(64);
    for op in ops {
        match op {
            Op::Seg { server, flags, seq, ack, window, len, fill, ws, ts } => {
                let side = if server { Side::Server } else { Side::Client };
                let resolve = |n: &Num, isn: u32| match *n {
                    Num::Any(v) => v,
                    Num::Rel(d) => isn.wrapping_add(d as u32),
                };
                let seq = resolve(&seq, isns[idx(side)]);
                let ack = resolve(&ack, isns[idx(other(side))]);
                // Even fill: bytes consistent with the sequence space (overlaps
                // agree); odd: arbitrary (overlaps conflict).
                payload.clear();
                payload.extend((0..u32::from(len)).map(|i| {
                    if fill % 2 == 0 {
                        (seq.wrapping_add(i) % 251) as u8
                    } else {
                        fill.wrapping_mul(i as u8 + 1)
                    }
                }));
                let opts = SegmentOptions {
                    mss: Some(1460),
                    wscale: ws,
                    sack_permitted: ts,
                    timestamps: ts.then_some((seq, ack)),
                };
                let seg = Segment::new(TcpFlags(flags), seq, ack, window, &payload).with_options(opts);
                let terminated = rig.conn.is_terminated();
                let action = rig.seg(side, &seg)?;
                prop_assert_eq!(action == Action::Drop, terminated);
            }
            Op::Release { server, frac } => {
                let r = &mut rig.reasm[usize::from(server)];
                let span = r.frontier() - r.floor();
                r.release(r.floor() + span * u64::from(frac) / 255);
                rig.check()?;
            }
            Op::Advance { secs } => {
                rig.now += u64::from(secs) * SECOND;
                let mut evs = Vec::new();
                let finished = rig.conn.poll(&rig.cfg, rig.now, &mut |e, s| evs.push((e, s)));
                prop_assert_eq!(finished, rig.conn.phase() == ConnPhase::Finished);
                rig.absorb(evs)?;
            }
            Op::Terminate => {
                let mut evs = Vec::new();
                let _ = rig.conn.terminate(rig.now, &mut |e, s| evs.push((e, s)));
                rig.absorb(evs)?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mutations of a valid session.

/// A piece of one side's stream to send: `[start, end)`, or its FIN.
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: usize,
    end: usize,
    fin: bool,
    /// Sort key: position in the original order, plus displacement.
    key: u32,
}

#[derive(Clone, Debug)]
struct Mutation {
    /// Segment sizes (cycled).
    sizes: Vec<usize>,
    /// Per piece: 0 keep, 1 split, 2 duplicate later, 3 delay (lost, sent later).
    kinds: Vec<u8>,
    /// Displacements added to the sort key (bounded reorder).
    jitter: Vec<u8>,
    /// Extra retransmissions of sub-ranges, as fractions of the stream.
    extra: Vec<(u8, u8)>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        proptest::collection::vec(1usize..300, 1..8),
        proptest::collection::vec(prop_oneof![5 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)], 1..16),
        proptest::collection::vec(0u8..=24, 1..16),
        proptest::collection::vec((any::<u8>(), any::<u8>()), 0..6),
    )
        .prop_map(|(sizes, kinds, jitter, extra)| Mutation { sizes, kinds, jitter, extra })
}

/// The pieces of a `len`-byte stream plus its FIN, mutated and ordered.
/// With `keep_first`, the first piece stays first (mid-stream pickup needs
/// it: the first data seen sets the stream start).
fn pieces(len: usize, m: &Mutation, keep_first: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    let (mut at, mut n) = (0usize, 0usize);
    while at < len {
        let size = m.sizes[n % m.sizes.len()].min(len - at);
        let key = (n as u32) * 4;
        let kind = if keep_first && n == 0 { 0 } else { m.kinds[n % m.kinds.len()] };
        let jit = u32::from(m.jitter[n % m.jitter.len()]);
        let p = Piece { start: at, end: at + size, fin: false, key: key + jit };
        match kind {
            1 if size > 1 => {
                let mid = at + size / 2;
                out.push(Piece { end: mid, ..p });
                out.push(Piece { start: mid, key: key + 1 + u32::from(m.jitter[(n + 1) % m.jitter.len()]), ..p });
            }
            2 => {
                out.push(p);
                out.push(Piece { key: key + 4 + jit, ..p });
            }
            3 => out.push(Piece { key: key + 24, ..p }),
            _ => out.push(p),
        }
        at += size;
        n += 1;
    }
    if keep_first {
        if let Some(first) = out.first_mut() {
            first.key = 0;
        }
    }
    // Retransmissions of sub-ranges of what was already sent.
    for (i, &(a, b)) in m.extra.iter().enumerate() {
        if len == 0 {
            break;
        }
        let (a, b) = (usize::from(a) * len / 256, usize::from(b) * len / 256);
        let (s, e) = (a.min(b), a.max(b).max(a.min(b) + 1).min(len));
        let key = (e.div_ceil(m.sizes[0]) as u32) * 4 + 4 + i as u32;
        out.push(Piece { start: s, end: e, fin: false, key });
    }
    out.push(Piece { start: len, end: len, fin: true, key: (n as u32) * 4 + u32::from(m.jitter[0]) });
    out.sort_by_key(|p| p.key);
    out
}

/// What a receiver got of the peer's stream: contiguous end and FIN.
#[derive(Default)]
struct Receiver {
    got: Vec<bool>,
    fin: bool,
    len: usize,
}

impl Receiver {
    fn new(len: usize) -> Receiver {
        Receiver { got: vec![false; len], fin: false, len }
    }

    /// Sequence distance from ISN + 1 that it acknowledges.
    fn ack(&self) -> u32 {
        let contiguous = self.got.iter().position(|g| !g).unwrap_or(self.len);
        (contiguous + usize::from(contiguous == self.len && self.fin)) as u32
    }
}

#[allow(clippy::too_many_arguments)]
fn run_session(
    data: [Vec<u8>; 2],
    isns: [u32; 2],
    muts: [Mutation; 2],
    interleave: Vec<bool>,
    acks: Vec<bool>,
    handshake: bool,
    policy: bool,
) -> Result<(), TestCaseError> {
    let overlap = if policy { OverlapPolicy::LastWins } else { OverlapPolicy::FirstWins };
    let cfg = MonitorConfig { overlap, ..MonitorConfig::default() };
    let mut rig = Rig::new(cfg, 4096);
    let (c, s) = (Side::Client, Side::Server);
    let ws = SegmentOptions { wscale: Some(7), sack_permitted: true, ..SegmentOptions::default() };
    let (ic, is) = (isns[0], isns[1]);
    if handshake {
        rig.seg(c, &Segment::new(TcpFlags::SYN, ic, 0, 65535, b"").with_options(ws))?;
        rig.seg(s, &Segment::new(TcpFlags::SYN | TcpFlags::ACK, is, ic.wrapping_add(1), 65535, b"").with_options(ws))?;
        rig.seg(c, &Segment::new(TcpFlags::ACK, ic.wrapping_add(1), is.wrapping_add(1), 65535, b""))?;
    }
    let queues = [pieces(data[0].len(), &muts[0], !handshake), pieces(data[1].len(), &muts[1], !handshake)];
    let mut next = [0usize, 0];
    // receivers[i] = what side i received of the other side's stream.
    let mut receivers = [Receiver::new(data[1].len()), Receiver::new(data[0].len())];
    let mut step = 0usize;
    while next[0] < queues[0].len() || next[1] < queues[1].len() {
        let pick_server = interleave.get(step % interleave.len().max(1)).copied().unwrap_or(false);
        let side = match (next[0] < queues[0].len(), next[1] < queues[1].len()) {
            (true, true) => {
                if pick_server {
                    s
                } else {
                    c
                }
            }
            (true, false) => c,
            _ => s,
        };
        let i = idx(side);
        let p = queues[i][next[i]];
        next[i] += 1;
        let isn = isns[i];
        let ack = isns[1 - i].wrapping_add(1).wrapping_add(receivers[i].ack());
        let flags = if p.fin { TcpFlags::FIN | TcpFlags::ACK } else { TcpFlags::ACK | TcpFlags::PSH };
        let seq = isn.wrapping_add(1).wrapping_add(p.start as u32);
        rig.seg(side, &Segment::new(flags, seq, ack, 65535, &data[i][p.start..p.end]))?;
        // The peer receives it.
        let r = &mut receivers[1 - i];
        r.got[p.start..p.end].iter_mut().for_each(|g| *g = true);
        r.fin |= p.fin;
        if acks.get(step % acks.len().max(1)).copied().unwrap_or(true) {
            let peer = other(side);
            let pseq = isns[1 - i].wrapping_add(1).wrapping_add(queues_sent_end(&queues[1 - i], next[1 - i]));
            let pack = isn.wrapping_add(1).wrapping_add(receivers[1 - i].ack());
            rig.seg(peer, &Segment::new(TcpFlags::ACK, pseq, pack, 65535, b""))?;
        }
        step += 1;
    }
    // Final ACKs both ways.
    for side in [c, s] {
        let i = idx(side);
        let seq = isns[i].wrapping_add(1).wrapping_add(data[i].len() as u32 + 1);
        let ack = isns[1 - i].wrapping_add(1).wrapping_add(receivers[i].ack());
        rig.seg(side, &Segment::new(TcpFlags::ACK, seq, ack, 65535, b""))?;
    }
    for side in SIDES {
        let i = idx(side);
        let r = &rig.reasm[i];
        prop_assert_eq!(r.stopped(), None, "{:?}", side);
        prop_assert_eq!(r.counters().conflicts, 0);
        prop_assert_eq!(r.counters().ooo_dropped, 0);
        prop_assert_eq!(rig.conn.counters(side).out_of_window, 0);
        prop_assert!(
            rig.read[i] == data[i],
            "{:?} stream differs: {} of {} bytes",
            side,
            rig.read[i].len(),
            data[i].len()
        );
    }
    prop_assert_eq!(rig.conn.phase(), ConnPhase::Closed);
    let count = |want: TcpEvent| rig.events.iter().filter(|(e, _)| *e == want).count();
    prop_assert_eq!(count(TcpEvent::Closed), 1);
    prop_assert_eq!(count(TcpEvent::Established), 1);
    prop_assert_eq!(count(TcpEvent::Fin { side: c }), 1);
    prop_assert_eq!(count(TcpEvent::Fin { side: s }), 1);
    prop_assert_eq!(rig.conn.is_midstream(), !handshake);
    Ok(())
}

/// Sequence offset (from ISN + 1) a side has sent up to, after sending the
/// first `n` pieces of its queue: the end of the furthest piece (FIN included).
fn queues_sent_end(q: &[Piece], n: usize) -> u32 {
    q.iter().take(n).map(|p| p.end + usize::from(p.fin)).max().unwrap_or(0) as u32
}

fn isn() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), (0u32..4000).prop_map(|d| u32::MAX - d)]
}

proptest! {
    #[test]
    fn arbitrary_segments_keep_invariants(
        (cfg, cap) in config(),
        isns in [isn(), isn()],
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        run_arbitrary(cfg, cap, isns, ops)?;
    }

    #[test]
    fn mutated_sessions_reassemble_exactly(
        client in proptest::collection::vec(any::<u8>(), 0..3000),
        server in proptest::collection::vec(any::<u8>(), 0..3000),
        isns in [isn(), isn()],
        muts in [mutation(), mutation()],
        interleave in proptest::collection::vec(any::<bool>(), 1..32),
        acks in proptest::collection::vec(any::<bool>(), 1..8),
        handshake in prop_oneof![4 => Just(true), 1 => Just(false)],
        last_wins in any::<bool>(),
    ) {
        run_session([client, server], isns, muts, interleave, acks, handshake, last_wins)?;
    }
}

/// Option bytes: arbitrary, or built around the layouts `from_raw` reads
/// directly (none, `NOP NOP TS`), possibly cut short or with a wrong byte.
fn option_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        (any::<[u8; 8]>(), 0usize..13, any::<Option<(usize, u8)>>()).prop_map(|(ts, len, flip)| {
            let mut v = vec![1, 1, 8, 10];
            v.extend_from_slice(&ts);
            v.truncate(len);
            if let Some((i, b)) = flip {
                if !v.is_empty() {
                    let n = v.len();
                    v[i % n] = b;
                }
            }
            v
        }),
    ]
}

proptest! {
    #[test]
    fn options_read_directly_equal_the_general_walk(raw in option_bytes()) {
        let walked = SegmentOptions::parse(ustack::wire::TcpOptions::new(&raw));
        prop_assert_eq!(SegmentOptions::from_raw(&raw), walked);
    }
}

#[test]
fn linux_timestamp_layout_is_read_directly() {
    let raw = [1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 1, 0];
    let o = SegmentOptions::from_raw(&raw);
    assert_eq!(o.timestamps, Some((7, 256)));
    assert_eq!(o, SegmentOptions::parse(ustack::wire::TcpOptions::new(&raw)));
    assert_eq!(SegmentOptions::from_raw(&[]), SegmentOptions::default());
}
