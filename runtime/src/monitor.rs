//! The TCP monitor μStack on a worker: per-flow [`TcpConn`] state, one
//! bytestream ring per reassembled side in the arena, and what NFs read.
//!
//! The sans-IO monitor is `ustack::tcp`; this module gives it storage and
//! bookkeeping, and the dispatcher publishes what it reports:
//!
//! - **Which flows.** A TCP flow is monitored when, at its start, an NF of
//!   its chain subscribes to a `FLOW/TCP/...` or `DATA_RDY/...` type; a side
//!   is reassembled only when one subscribes to its `DATA_RDY/...` (or to
//!   `DATA_RDY`). A chain of `PKT` subscribers never pays for TCP.
//! - **Stream rings.** `monitor.stream_buffers` rings of
//!   `monitor.stream_buffer_kb` KiB sit in the arena's data region after the
//!   mbufs, split evenly between workers. Each has an 8-byte "written up to"
//!   cell before it. A side takes a ring with its first payload byte (a
//!   handshake that never completes costs no ring) and gives it back when
//!   the flow has ended and no NF still reads it. No ring left: under the
//!   chain's `on_unmonitored = "drop"` the flow is terminated (RSTs both
//!   ways, the packet dropped, counted `unmonitored`); under `pass` the side
//!   is not reassembled (`FLOW/TCP/REASM_STOPPED`, no buffer).
//! - **Room for new flows.** At `monitor.max_flows` a new flow first evicts
//!   a connection that closed (lingering) and then one whose handshake never
//!   completed, oldest first, neither with bytes an NF still reads; it is
//!   refused only when every monitored flow is a live, established one.
//!   The evicted flow gets its last `FLOW/TCP/TIMEOUT` and leaves the flow
//!   table (`FLOW/END`, evicted).
//! - **Closed flows end soon.** A connection closed by FIN/FIN/ACK or an
//!   accepted RST ends its flow (`FLOW/END` with the TCP reason)
//!   `monitor.linger_ms` after the close, not at the flow table's idle
//!   timeout.
//! - **Pins.** Each `DATA_RDY` event pins its range until every NF it went
//!   to answered (or died); the reassembler's floor follows the oldest
//!   pinned range, so bytes an NF may still read are never overwritten.
//!   A segment that needs ring space the slowest reader still holds stops
//!   that side (`BufferFull`) and the flow goes on being forwarded; for a
//!   strict flow it is dropped instead ([`Seg::Full`]), to be sent again.
//!   Under `runtime.nf_backpressure` the worker holds RX before that
//!   happens ([`Monitor::readers_behind`]).
//! - **One `DATA_RDY` per burst.** New in-order bytes are announced when
//!   the worker flushes its RX burst (or before the flow's next state
//!   event), one event per flow and side covering every segment of the
//!   burst, not one per segment.
//! - **Port reuse.** A new SYN on a closed connection restarts it at
//!   stream offset 0. A ring NFs still read is retired (freed once its
//!   pins are answered) and the new connection gets a fresh one.
//! - **Memory.** A monitored flow costs `size_of::<MonFlow>()` (a few
//!   hundred bytes, see `uboxctl stats`; the map of them grows up to
//!   `max_flows`), and each reassembled side its state and one ring
//!   from its first payload byte on; all bounded by the config.

use std::collections::VecDeque;
use std::net::IpAddr;

// hashbrown's default hasher (foldhash): a lookup per segment, keys are the
// runtime's own flow ids (not attacker-chosen), so SipHash buys nothing.
use hashbrown::HashMap;
use ubox_shm::Arena;
use ustack::flow::{FlowKey, Side};
use ustack::tcp::{ConnPhase, MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent, TcpSnapshot};
use ustack::wire::TcpPacket;

/// Bytes before each ring: the "written up to" cell (cache-line sized).
const CELL: u64 = 64;
/// `DATA_RDY` events outstanding per side at most; past that the next
/// event covers a longer range instead.
const MAX_PINS: usize = 64;

/// What to do with a segment [`Monitor::segment`] was fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Forward,
    /// The flow was terminated: drop.
    Drop,
    /// It brought a side's first payload byte, that side must be
    /// reassembled (the flow is strict) and no ring is free.
    NoRing,
    /// A strict flow's segment whose new bytes the side could not keep
    /// (out-of-order ranges full): drop it. Forwarded, the receiver would
    /// acknowledge bytes the monitor never saw, its sender would never send
    /// them again, and the side would stop on a gap (the flow reset);
    /// dropped, the sender sends them again, in order by then or once a
    /// range frees up.
    Unkept,
    /// A strict flow's segment that needs ring space its readers still
    /// hold: drop it. Its sender sends it again, by when the readers will
    /// have caught up (or been declared dead); TCP's own loss recovery
    /// slows the flow to what its NFs read, where stopping the side would
    /// reset the connection.
    Full,
}

/// This worker's share of the arena's stream rings.
pub struct StreamBufs {
    /// Arena offset of the first ring's cell.
    base: u64,
    stride: u64,
    ring_len: u32,
    free: Vec<u32>,
}

impl StreamBufs {
    /// `count` rings of `ring_len` bytes starting at arena offset `base`.
    pub fn new(base: u64, count: u32, ring_len: u32) -> StreamBufs {
        StreamBufs { base, stride: CELL + u64::from(ring_len), ring_len, free: (0..count).rev().collect() }
    }

    /// Arena bytes `count` rings of `ring_len` take.
    pub fn bytes(count: u32, ring_len: u32) -> u64 {
        u64::from(count) * (CELL + u64::from(ring_len))
    }

    fn cell(&self, i: u32) -> u64 {
        self.base + u64::from(i) * self.stride
    }

    fn ring(&self, i: u32) -> u64 {
        self.cell(i) + CELL
    }
}

/// One reassembled side.
pub struct SideStream {
    reasm: Reassembler,
    buf: u32,
    /// Ends of announced ranges not answered by everyone yet, and how many
    /// answers each still waits for.
    pins: VecDeque<(u64, u32)>,
    /// End of the last announced range.
    announced: u64,
    stopped: u32,
    /// Snapshot of the last segment that brought new bytes not announced
    /// yet (`Some` = an announcement is due).
    due: Option<TcpSnapshot>,
    /// In the monitor's list of sides whose readers hold nearly the whole
    /// ring (see [`Monitor::readers_behind`]).
    tight: bool,
    /// The written-up-to value last stored in the ring's cell.
    published: u64,
}

impl SideStream {
    /// `strict`: the flow's chain does not let bytes pass unseen, so a
    /// segment with no room in the ring is refused (and dropped) rather
    /// than stopping the side.
    fn new(cfg: &MonitorConfig, buf: u32, strict: bool) -> SideStream {
        let mut reasm = Reassembler::from_config(cfg);
        if strict {
            reasm.refuse_when_full();
        }
        SideStream {
            reasm,
            buf,
            pins: VecDeque::new(),
            announced: 0,
            stopped: 0,
            due: None,
            tight: false,
            // Never a real value: the first segment stores the cell (the
            // ring may come from another flow, its cell still says so).
            published: u64::MAX,
        }
    }

    /// Whether the bytes readers still hold (announced or due, not all
    /// answered) leave less than `room` of the `cap`-byte ring.
    fn behind(&self, cap: u64, room: u64) -> bool {
        self.reasm.stopped().is_none() && self.reasm.frontier() - self.reasm.floor() + room > cap
    }
}

impl SideStream {
    /// The `DATA_RDY` of the bytes from the last announced one to `end`.
    fn range_to(&self, side: Side, end: u64, bufs: &StreamBufs, stopped: u32) -> DataReady {
        DataReady {
            side,
            buf: self.buf,
            start: self.announced,
            end,
            ring_off: bufs.ring(self.buf),
            cell_off: bufs.cell(self.buf),
            ring_len: bufs.ring_len,
            stopped,
        }
    }
}

/// A ring whose connection restarted while NFs still read it: freed once
/// every pinned range is answered.
struct Retired {
    buf: u32,
    pins: VecDeque<(u64, u32)>,
}

/// Counts one answer for the range ending at `end`; returns the end of the
/// answered prefix to release, if it moved.
fn answer(pins: &mut VecDeque<(u64, u32)>, end: u64) -> Option<u64> {
    if let Some(p) = pins.iter_mut().find(|p| p.0 == end && p.1 > 0) {
        p.1 -= 1;
    }
    let mut released = None;
    while let Some(&(e, 0)) = pins.front() {
        pins.pop_front();
        released = Some(e);
    }
    released
}

/// How long a closed connection's end is put off, at a time, while bytes
/// of it wait to be announced, and how many times: at most 2 s past the
/// linger.
const END_WAIT: u64 = 50_000_000;
const END_WAITS: u8 = 40;

/// Where to send a frame impersonating one side: its Ethernet header (as
/// the side's first frame had it), its address and port, the port its
/// frames leave the box by and the one they come in by.
#[derive(Clone, Copy, Default)]
struct Endpoint {
    l2: [u8; 18],
    l2_len: u8,
    addr: Option<(IpAddr, u16)>,
    out_port: u8,
    in_port: u8,
}

impl Endpoint {
    /// The other end of `key`, as far as this (seen) end tells: toward it
    /// by this end's in-port, with the Ethernet addresses swapped. For a
    /// side never seen (a spliced connection whose server has sent nothing
    /// yet: the splicer answered the handshake).
    fn peer_of(&self, key: &FlowKey) -> Option<Endpoint> {
        let a = self.addr?;
        let mut e = Endpoint { addr: Some(if key.lo() == a { key.hi() } else { key.lo() }), ..*self };
        e.out_port = self.in_port;
        e.in_port = self.out_port;
        if self.l2_len >= 12 {
            e.l2[..6].copy_from_slice(&self.l2[6..12]);
            e.l2[6..12].copy_from_slice(&self.l2[..6]);
        }
        Some(e)
    }
}

/// Monitor state of one flow.
pub struct MonFlow {
    conn: TcpConn,
    tag: u32,
    key: FlowKey,
    /// Boxed: a flow that never sends payload (a half-open one) pays for
    /// none.
    sides: [Option<Box<SideStream>>; 2],
    ends: [Endpoint; 2],
    /// In-order payload bytes per side (what `DATA_RDY` announced).
    payload: [u64; 2],
    /// How the TCP connection ended (`FLOW_END_*`), 0 while open.
    pub tcp_end: u8,
    /// The flow left the flow table; freed once no NF reads its rings.
    ended: bool,
    /// Times its end was put off for bytes not yet announced (see
    /// [`Monitor::closed_due`]).
    end_waits: u8,
    /// In the monitor's list of flows with an announcement due.
    due: bool,
    /// Which sides the chain wants reassembled.
    wants: [bool; 2],
    /// The side's first payload byte came (and it took a ring or found
    /// none); a side that found none tries again when the connection
    /// restarts.
    ring_tried: [bool; 2],
    /// A side that must be reassembled and finds no ring refuses the flow
    /// (`on_unmonitored = "drop"`).
    strict: bool,
}

/// A `DATA_RDY` to publish: side, range, where the ring is.
pub struct DataReady {
    pub side: Side,
    /// The ring (this worker's index), which its pins name.
    pub buf: u32,
    pub start: u64,
    pub end: u64,
    pub ring_off: u64,
    pub cell_off: u64,
    pub ring_len: u32,
    pub stopped: u32,
}

/// What one segment produced, for the dispatcher to publish.
pub enum Report {
    /// A state event with the snapshot of the side it concerns.
    Tcp(TcpEvent, TcpSnapshot),
    /// New in-order bytes on a side.
    Data(DataReady, TcpSnapshot),
}

/// Which sides a new flow's chain wants.
#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub tcp: bool,
    pub client: bool,
    pub server: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.tcp || self.client || self.server
    }
}

/// What the monitor saw of TCP segments, summed over flows and sides (the
/// connection trackers' and the reassemblers' counters, and the sides that
/// stopped reassembling by reason), as `uboxctl stats` shows it. The
/// monitor keeps a delta since the last look (the worker adds it to its
/// counters and clears it).
pub use controller::api::MonitorSegments as SegTally;

/// Fields of a [`SegTally`] (for counters kept as an array).
pub const TALLY_FIELDS: usize = 11;

/// The counters of both sides of one flow now (saturating u32s of the
/// tracker, u64s of the reassemblers; the stops are counted apart).
fn tally_of(conn: &TcpConn, sides: &[Option<Box<SideStream>>; 2]) -> SegTally {
    let mut t = SegTally::default();
    for side in [Side::Client, Side::Server] {
        let c = conn.counters(side);
        t.retransmits += u64::from(c.retransmits);
        t.out_of_order += u64::from(c.out_of_order);
        t.out_of_window += u64::from(c.out_of_window);
        t.rst_ignored += u64::from(c.rst_ignored);
        t.invalid_syn += u64::from(c.invalid);
    }
    for s in sides.iter().flatten() {
        let r = s.reasm.counters();
        t.duplicates += r.retransmits;
        t.conflicts += r.conflicts;
        t.holes_full += r.ooo_dropped;
    }
    t
}

/// The fields in declaration order.
pub fn tally_to_array(t: &SegTally) -> [u64; TALLY_FIELDS] {
    [
        t.retransmits,
        t.out_of_order,
        t.out_of_window,
        t.rst_ignored,
        t.invalid_syn,
        t.duplicates,
        t.conflicts,
        t.holes_full,
        t.stopped_buffer_full,
        t.stopped_no_buffer,
        t.stopped_gap,
    ]
}

/// The inverse of [`tally_to_array`].
pub fn tally_from_array(a: [u64; TALLY_FIELDS]) -> SegTally {
    let mut t = SegTally::default();
    let fields = [
        &mut t.retransmits,
        &mut t.out_of_order,
        &mut t.out_of_window,
        &mut t.rst_ignored,
        &mut t.invalid_syn,
        &mut t.duplicates,
        &mut t.conflicts,
        &mut t.holes_full,
        &mut t.stopped_buffer_full,
        &mut t.stopped_no_buffer,
        &mut t.stopped_gap,
    ];
    for (f, v) in fields.into_iter().zip(a) {
        *f = v;
    }
    t
}

/// Adds to `to` what grew from `before` to `after` (counters only grow
/// while a connection lasts; saturating, whatever they say).
fn tally_add_delta(to: &mut SegTally, before: &SegTally, after: &SegTally) {
    let (b, a) = (tally_to_array(before), tally_to_array(after));
    let mut sum = tally_to_array(to);
    for i in 0..TALLY_FIELDS {
        sum[i] += a[i].saturating_sub(b[i]);
    }
    *to = tally_from_array(sum);
}

/// The monitor state of one worker.
pub struct Monitor {
    pub cfg: MonitorConfig,
    flows: HashMap<u64, MonFlow>,
    max: usize,
    bufs: StreamBufs,
    /// What the last [`segment`](Self::segment) produced (take it, publish
    /// it, put the emptied vector back).
    pub reports: Vec<Report>,
    /// Reused by `finish_reports` (no allocation per segment).
    scratch: Vec<Report>,
    /// Flows with new bytes to announce at the next [`take_due`](Self::take_due).
    due: Vec<u64>,
    /// Rings of restarted connections still pinned by readers.
    retired: Vec<Retired>,
    /// Sides that found no ring since the last look (a counter's delta).
    pub no_buffer: u64,
    /// Connections restarted on a reused port since the last look.
    pub restarts: u64,
    /// Rings retired at a restart because readers still held them, since
    /// the last look.
    pub retired_rings: u64,
    /// Sides whose reassembly stopped (`FLOW/TCP/REASM_STOPPED`), since the
    /// last look.
    pub stopped: u64,
    /// Flows that ended with bytes never announced (their reader stayed
    /// without room past the wait at the close, or the flow was evicted or
    /// idled out meanwhile), since the last look.
    pub unannounced: u64,
    /// Segment counters since the last look.
    pub tally: SegTally,
    /// Flows in the order they were opened, for evicting those whose
    /// handshake never completed (entries of flows that completed it or
    /// went are skipped, and compacted away).
    embryonic: VecDeque<u64>,
    /// Connections that closed, in order: `(when their flow ends, flow,
    /// connection generation)`.
    closing: VecDeque<(u64, u64, u32)>,
    /// `closing`'s length that triggers its next compaction.
    closing_limit: usize,
    /// Ring room one loop's RX can need (`runtime.nf_backpressure`), 0 when
    /// the worker never waits for stream readers.
    hold_room: u64,
    /// Sides whose readers left less than `hold_room` of their ring:
    /// `(flow, side index)`.
    tight: Vec<(u64, u8)>,
    /// Connections closed by FIN/FIN/ACK whose rings go back at the next
    /// [`closed_due`](Self::closed_due): `(flow, connection generation)`.
    release: Vec<(u64, u32)>,
}

/// The reassembly storage of one side for one call: its metadata and its
/// ring in the arena.
fn stream_of<'s>(arena: &'s Arena, bufs: &StreamBufs, s: &'s mut Option<Box<SideStream>>) -> Option<Stream<'s>> {
    let s = s.as_mut()?;
    // SAFETY: ring `s.buf` belongs to this worker's share and to this flow
    // alone until freed; NFs only read it, below the published
    // written-up-to cell and at or after the floor the reassembler keeps
    // (see the module docs). No other reference to these bytes exists in
    // this process while the slice lives (one `segment` call).
    let ring = unsafe { arena.data_bytes_mut(bufs.ring(s.buf), bufs.ring_len as usize) }?;
    Some(Stream { reasm: &mut s.reasm, ring })
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl Monitor {
    pub fn new(cfg: MonitorConfig, max: usize, bufs: StreamBufs) -> Monitor {
        Monitor {
            cfg,
            // Grows as needed (at most log2(max_flows) rehashes): sized for
            // max_flows at once, its buckets' pages get touched one by one as
            // flows come and go, and RSS creeps up for hours.
            flows: HashMap::new(),
            max,
            bufs,
            reports: Vec::with_capacity(16),
            scratch: Vec::with_capacity(16),
            due: Vec::new(),
            retired: Vec::new(),
            no_buffer: 0,
            restarts: 0,
            retired_rings: 0,
            stopped: 0,
            unannounced: 0,
            tally: SegTally::default(),
            embryonic: VecDeque::new(),
            closing: VecDeque::new(),
            closing_limit: 2 * max.max(64),
            hold_room: 0,
            tight: Vec::new(),
            release: Vec::new(),
        }
    }

    /// Under `runtime.nf_backpressure`: the worker receives at most `bytes`
    /// of payload per loop, and waits ([`readers_behind`](Self::readers_behind))
    /// while some side's readers leave less than that of its ring, instead
    /// of stopping the side on a full ring. At most half a ring, so readers
    /// that caught up always let RX go on.
    pub fn hold_for_readers(&mut self, bytes: u64) {
        self.hold_room = bytes.min(u64::from(self.bufs.ring_len) / 2);
    }

    /// True while some reassembled side's readers hold so much of its ring
    /// that one more loop of RX could fill it (see
    /// [`hold_for_readers`](Self::hold_for_readers)): the worker then only
    /// polls answers. What they hold was announced (or is due and announced
    /// at the next flush), so their answers, or their death, free it
    /// without any new packet: waiting cannot deadlock.
    pub fn readers_behind(&mut self) -> bool {
        if self.tight.is_empty() {
            return false;
        }
        let (flows, cap, room) = (&mut self.flows, u64::from(self.bufs.ring_len), self.hold_room);
        self.tight.retain(|&(id, i)| {
            let Some(s) = flows.get_mut(&id).and_then(|f| f.sides[usize::from(i)].as_mut()) else { return false };
            s.tight = s.behind(cap, room);
            s.tight
        });
        !self.tight.is_empty()
    }

    /// Flows monitored now (including ended ones whose rings are still read).
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn contains(&self, flow_id: u64) -> bool {
        self.flows.contains_key(&flow_id)
    }

    /// Starts monitoring `flow_id`; false when `monitor.max_flows` flows are
    /// monitored (make room with [`victim`](Self::victim) first). Its sides
    /// take rings with their first payload byte; with `strict`, a side that
    /// `needs` reassembled and finds none then refuses the flow
    /// ([`Seg::NoRing`]), else it is tracked but not reassembled.
    pub fn open(&mut self, flow_id: u64, tag: u32, key: FlowKey, needs: Needs, strict: bool) -> bool {
        if self.flows.len() >= self.max {
            return false;
        }
        self.flows.insert(
            flow_id,
            MonFlow {
                conn: TcpConn::new(),
                tag,
                key,
                sides: [None, None],
                ends: [Endpoint::default(); 2],
                payload: [0; 2],
                tcp_end: 0,
                ended: false,
                end_waits: 0,
                due: false,
                wants: [needs.client, needs.server],
                ring_tried: [false; 2],
                strict,
            },
        );
        self.embryonic.push_back(flow_id);
        if self.embryonic.len() > 2 * self.max.max(64) {
            let flows = &self.flows;
            self.embryonic.retain(|id| flows.get(id).is_some_and(Self::is_embryonic));
        }
        true
    }

    fn is_embryonic(f: &MonFlow) -> bool {
        matches!(f.conn.phase(), ConnPhase::Idle | ConnPhase::Handshake)
    }

    /// Whether the flow could go now without losing anything an NF reads.
    fn evictable(f: &MonFlow) -> bool {
        !f.ended && f.sides.iter().flatten().all(|s| s.pins.is_empty())
    }

    /// A flow to evict to make room at `monitor.max_flows`: the oldest
    /// closed connection, else the oldest whose handshake never completed;
    /// none if every flow is live and established (or still read). The
    /// caller ends it ([`end`](Self::end)) and removes it from the flow table.
    /// The last value says whether it is a closed connection.
    pub fn victim(&mut self) -> Option<(u64, u32, FlowKey, bool)> {
        while let Some((_, id, generation)) = self.closing.pop_front() {
            let Some(f) = self.flows.get(&id) else { continue };
            let closed = matches!(f.conn.phase(), ConnPhase::Closed | ConnPhase::Finished);
            if closed && f.conn.generation() == generation && Self::evictable(f) {
                return Some((id, f.tag, f.key, true));
            }
        }
        while let Some(id) = self.embryonic.pop_front() {
            let Some(f) = self.flows.get(&id) else { continue };
            if Self::is_embryonic(f) && Self::evictable(f) {
                return Some((id, f.tag, f.key, false));
            }
        }
        None
    }

    /// Flows whose connection closed `linger` ago or more (FIN/FIN/ACK or
    /// RST, not restarted since): their keys into `out`, to end them.
    ///
    /// First gives back the rings of connections closed by FIN/FIN/ACK since
    /// the last call (nothing more can be reassembled; a ring NFs still read
    /// is retired, freed when they answer). A RST keeps them: data after it
    /// is still reassembled, so an in-window RST cannot blind the NFs.
    pub fn closed_due(&mut self, now: u64, out: &mut Vec<FlowKey>) {
        while let Some((id, generation)) = self.release.pop() {
            let Some(f) = self.flows.get_mut(&id) else { continue };
            if f.conn.generation() != generation || f.tcp_end != ubox_shm::event::FLOW_END_TCP_CLOSED {
                continue;
            }
            for i in 0..2 {
                if !f.sides[i].as_ref().is_some_and(|s| s.due.is_none()) {
                    continue; // no ring, or bytes still to announce (kept to the end)
                }
                let Some(side) = f.sides[i].take() else { continue };
                f.ring_tried[i] = true;
                if side.pins.is_empty() {
                    self.bufs.free.push(side.buf);
                } else {
                    self.retired.push(Retired { buf: side.buf, pins: side.pins });
                }
            }
        }
        while let Some(&(when, id, generation)) = self.closing.front() {
            if when > now {
                break;
            }
            self.closing.pop_front();
            let Some(f) = self.flows.get_mut(&id) else { continue };
            let closed = matches!(f.conn.phase(), ConnPhase::Closed | ConnPhase::Finished);
            if closed && !f.ended && f.conn.generation() == generation {
                // Bytes still to announce (a fail-closed reader without
                // room, or one MAX_PINS behind): the flow waits for them,
                // a while, before it ends.
                if f.sides.iter().flatten().any(|s| s.due.is_some()) && f.end_waits < END_WAITS {
                    f.end_waits += 1;
                    self.closing.push_back((now.saturating_add(END_WAIT), id, generation));
                    continue;
                }
                out.push(f.key);
            }
        }
    }

    /// Feeds one segment of `flow_id` (`l4` = TCP header and payload) sent
    /// by `side` (in direction `dir` of the flow key), which came in by
    /// `ports.0` and leaves the box by `ports.1`.
    /// Says what to do with it; what to publish is in `reports`.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        arena: &Arena,
        flow_id: u64,
        frame: &[u8],
        l4: std::ops::Range<usize>,
        side: Side,
        dir: ustack::flow::Direction,
        (in_port, out_port): (usize, usize),
        now: u64,
    ) -> Seg {
        self.reports.clear();
        let Some(tcp) = frame.get(l4).and_then(|b| TcpPacket::new_checked(b).ok()) else { return Seg::Forward };
        let seg = Segment::from_packet(&tcp);
        let i = idx(side);
        // One lookup per segment (it used to take three).
        let Some(f) = self.flows.get_mut(&flow_id) else { return Seg::Forward };
        if f.conn.restarts_on(&seg, side) {
            self.restarts += 1;
            self.retired_rings += Self::restart(f, &mut self.retired);
        }
        // Remember how to impersonate this side (for RSTs), from its first
        // segment: a flow's addresses, MACs and ports do not change.
        let e = &mut f.ends[i];
        if e.addr.is_none() {
            let l2_len = if frame.get(12..14) == Some(&[0x81, 0x00]) { 18 } else { 14 };
            if let Some(h) = frame.get(..l2_len) {
                e.l2[..l2_len].copy_from_slice(h);
                e.l2_len = l2_len as u8;
            }
            e.addr = Some(f.key.endpoints(dir).0);
            e.out_port = out_port as u8;
            e.in_port = in_port as u8;
        }
        // A side's first payload byte takes its ring.
        let mut no_ring = false;
        if !seg.payload.is_empty() && f.wants[i] && !f.ring_tried[i] && !f.conn.is_terminated() {
            f.ring_tried[i] = true;
            match self.bufs.free.pop() {
                Some(buf) => f.sides[i] = Some(Box::new(SideStream::new(&self.cfg, buf, f.strict))),
                None => {
                    self.no_buffer += 1;
                    if f.strict {
                        return Seg::NoRing;
                    }
                    no_ring = true;
                }
            }
        }
        let before = tally_of(&f.conn, &f.sides);
        let refused_before = f.sides[i].as_ref().map_or(0, |s| s.reasm.counters().full_refused);
        let (client, server) = f.sides.split_at_mut(1);
        let streams = Streams {
            client: stream_of(arena, &self.bufs, &mut client[0]),
            server: stream_of(arena, &self.bufs, &mut server[0]),
        };
        let reports = &mut self.reports;
        let action = f.conn.on_segment(&self.cfg, &seg, side, now, streams, &mut |ev, snap| {
            reports.push(Report::Tcp(ev, snap));
        });
        let after = tally_of(&f.conn, &f.sides);
        let unkept = f.strict && after.holes_full > before.holes_full;
        let full = f.sides[i].as_ref().is_some_and(|s| s.reasm.counters().full_refused > refused_before);
        if self.hold_room > 0 {
            let cap = u64::from(self.bufs.ring_len);
            for (i, s) in f.sides.iter_mut().enumerate() {
                if let Some(s) = s.as_mut().filter(|s| !s.tight && s.behind(cap, self.hold_room)) {
                    s.tight = true;
                    self.tight.push((flow_id, i as u8));
                }
            }
        }
        tally_add_delta(&mut self.tally, &before, &after);
        if no_ring {
            // Tracked, not reassembled: say so once, as a stop.
            let stop = TcpEvent::ReassemblyStopped { side, reason: ustack::tcp::StopReason::NoBuffer };
            reports.push(Report::Tcp(stop, f.conn.snapshot(side)));
        }
        // Publish how far each ring is written before announcing ranges;
        // only a cell that moved: NFs read it, and a store to it costs the
        // line's round trip from their core (the other side's pure ACKs
        // used to pay it too).
        for s in f.sides.iter_mut().flatten() {
            let w = s.reasm.written_end();
            if w != s.published {
                s.published = w;
                let _ = arena.store_u64(self.bufs.cell(s.buf), w);
            }
        }
        let strict = f.strict;
        let closing = (now.saturating_add(self.cfg.linger), flow_id, f.conn.generation());
        if Self::finish_reports(flow_id, f, &self.bufs, &mut self.reports, &mut self.scratch, &mut self.due) {
            if f.tcp_end == ubox_shm::event::FLOW_END_TCP_CLOSED {
                // Both FINs acknowledged: no byte can follow, the rings go
                // back once this segment's announcements are pinned.
                self.release.push((flow_id, closing.2));
            }
            self.closing.push_back(closing);
            if self.closing.len() > self.closing_limit {
                // Only an entry for a flow's current connection can end it;
                // one for an earlier connection on a reused port is dead
                // weight. The limit then doubles what is left, so the scan
                // is amortized O(1) per close even when every flow is live
                // and closing over and over (it used to rescan 2 x max_flows
                // entries at every close once that many had piled up).
                let flows = &self.flows;
                self.closing.retain(|(_, id, g)| flows.get(id).is_some_and(|f| f.conn.generation() == *g));
                self.closing_limit = (2 * self.closing.len()).max(2 * self.max.max(64));
            }
        }
        let mut stopped_now = false;
        for r in &self.reports {
            if let Report::Tcp(TcpEvent::ReassemblyStopped { reason, .. }, _) = r {
                self.stopped += 1;
                stopped_now = true;
                let t = &mut self.tally;
                match reason {
                    ustack::tcp::StopReason::BufferFull => t.stopped_buffer_full += 1,
                    ustack::tcp::StopReason::NoBuffer => t.stopped_no_buffer += 1,
                    ustack::tcp::StopReason::Gap => t.stopped_gap += 1,
                }
            }
        }
        if stopped_now && strict {
            // A side the chain needs can no longer be reassembled (a hole
            // that will never fill, a ring full behind a slow reader): from
            // here its bytes would pass uninspected, which a strict chain
            // (`on_unmonitored = "drop"`) does not allow. The flow is
            // refused as one that found no ring: RSTs both ways.
            return Seg::NoRing;
        }
        if action != ustack::tcp::Action::Forward {
            Seg::Drop
        } else if unkept {
            Seg::Unkept
        } else if full {
            Seg::Full
        } else {
            Seg::Forward
        }
    }

    /// The connection of `flow_id` is about to restart on a new SYN (port
    /// reuse): its streams go back to offset 0. A ring readers still hold
    /// is retired and the side gets a fresh one, so no pinned byte is
    /// overwritten and no old answer releases new bytes.
    /// Returns how many rings it retired.
    fn restart(f: &mut MonFlow, retired: &mut Vec<Retired>) -> u64 {
        let mut n = 0;
        for i in 0..2 {
            f.payload[i] = 0;
            // A side without a ring tries again with its first payload byte.
            f.ring_tried[i] = f.sides[i].is_some();
            let Some(s) = f.sides[i].as_mut() else { continue };
            s.announced = 0;
            s.stopped = 0;
            s.due = None;
            if s.pins.is_empty() {
                continue; // reset in place by the restart
            }
            let Some(old) = f.sides[i].take() else { continue };
            f.ring_tried[i] = false;
            retired.push(Retired { buf: old.buf, pins: old.pins });
            n += 1;
        }
        n
    }

    /// Notes new bytes as due for announcement and how the connection
    /// ended; any other event first announces what is due, so NFs see a
    /// side's bytes before its FIN or RST. Returns whether the connection
    /// closed (by FIN/FIN/ACK or RST: its flow ends after the linger).
    fn finish_reports(
        flow_id: u64,
        f: &mut MonFlow,
        bufs: &StreamBufs,
        reports: &mut Vec<Report>,
        out: &mut Vec<Report>,
        due: &mut Vec<u64>,
    ) -> bool {
        let mut closed = false;
        out.clear();
        for r in reports.drain(..) {
            match r {
                Report::Tcp(TcpEvent::DataReady { side, end, .. }, snap) => {
                    let i = idx(side);
                    f.payload[i] = end;
                    let Some(s) = f.sides[i].as_mut() else { continue };
                    if end <= s.announced {
                        continue;
                    }
                    s.due = Some(snap);
                    if !f.due {
                        f.due = true;
                        due.push(flow_id);
                    }
                    continue;
                }
                _ if f.due => {
                    Self::announce(f, bufs, out);
                }
                _ => {}
            }
            match r {
                Report::Tcp(TcpEvent::ReassemblyStopped { side, reason }, snap) => {
                    let i = idx(side);
                    if let Some(s) = f.sides[i].as_mut() {
                        s.stopped = match reason {
                            ustack::tcp::StopReason::BufferFull => 1,
                            ustack::tcp::StopReason::NoBuffer => 2,
                            ustack::tcp::StopReason::Gap => 3,
                        };
                        // The side's last DATA_RDY says so (`stopped()`), with
                        // whatever was still due (possibly nothing).
                        let end = f.payload[i].max(s.announced);
                        out.push(Report::Data(s.range_to(side, end, bufs, s.stopped), snap));
                        s.announced = end;
                        s.due = None;
                    }
                    out.push(Report::Tcp(TcpEvent::ReassemblyStopped { side, reason }, snap));
                }
                Report::Tcp(ev, snap) => {
                    match ev {
                        TcpEvent::Rst { .. } => f.tcp_end = ubox_shm::event::FLOW_END_TCP_RESET,
                        TcpEvent::Closed if f.tcp_end == 0 => f.tcp_end = ubox_shm::event::FLOW_END_TCP_CLOSED,
                        TcpEvent::Timeout => f.tcp_end = ubox_shm::event::FLOW_END_TCP_TIMEOUT,
                        _ => {}
                    }
                    closed |= ev == TcpEvent::Closed;
                    out.push(Report::Tcp(ev, snap));
                }
                other => out.push(other),
            }
        }
        std::mem::swap(reports, out);
        closed
    }

    /// Announces the flow's due bytes, one range per side, unless that
    /// side already has `MAX_PINS` ranges pinned. Returns whether some stay
    /// due (then the flow must stay in the due list).
    fn announce(f: &mut MonFlow, bufs: &StreamBufs, out: &mut Vec<Report>) -> bool {
        let mut left = false;
        for (i, side) in [(0, Side::Client), (1, Side::Server)] {
            let Some(s) = f.sides[i].as_mut() else { continue };
            let Some(snap) = s.due else { continue };
            if s.pins.len() >= MAX_PINS {
                left = true;
                continue; // a longer range once readers catch up
            }
            let end = f.payload[i];
            if end > s.announced {
                // A deferred last range keeps its stop reason.
                out.push(Report::Data(s.range_to(side, end, bufs, s.stopped), snap));
                s.announced = end;
            }
            s.due = None;
        }
        f.due = left;
        left
    }

    /// Every announcement due (once per RX burst): `(flow, tag, key,
    /// report)` into `out`. Flows whose readers are `MAX_PINS` behind stay
    /// due.
    /// Whether some flow has an announcement due.
    #[inline]
    pub fn has_due(&self) -> bool {
        !self.due.is_empty()
    }

    pub fn take_due(&mut self, out: &mut Vec<(u64, u32, FlowKey, Report)>) {
        if self.due.is_empty() {
            return;
        }
        let mut due = std::mem::take(&mut self.due);
        for id in due.drain(..) {
            let Some(f) = self.flows.get_mut(&id) else { continue };
            if !f.due {
                continue; // announced with a state event meanwhile
            }
            self.scratch.clear();
            if Self::announce(f, &self.bufs, &mut self.scratch) {
                self.due.push(id);
            }
            out.extend(self.scratch.drain(..).map(|r| (id, f.tag, f.key, r)));
        }
        if self.due.is_empty() {
            self.due = due; // keep the capacity
        }
    }

    /// The flow's chain tag (for delivering its events).
    pub fn tag(&self, flow_id: u64) -> Option<(u32, FlowKey)> {
        self.flows.get(&flow_id).map(|f| (f.tag, f.key))
    }

    /// The announcement `d` went to nobody (a `fail-closed` reader had no
    /// room for it): its range is due again from the same start, so the
    /// next flush announces it (with any bytes that came meanwhile). Its
    /// bytes stay unreleased in the ring; a reader that never catches up
    /// fills it, and the side stops as behind a slow reader.
    pub fn defer(&mut self, flow_id: u64, d: &DataReady, snap: TcpSnapshot) {
        let Some(f) = self.flows.get_mut(&flow_id) else { return };
        let Some(s) = f.sides[idx(d.side)].as_mut() else { return };
        if s.buf != d.buf || s.announced != d.end {
            return; // the connection restarted meanwhile: a new stream
        }
        s.announced = d.start;
        s.due.get_or_insert(snap);
        if !f.due {
            f.due = true;
            self.due.push(flow_id);
        }
    }

    /// A `DATA_RDY` for `side` (ring `buf`) up to `end` went to `n` NFs.
    pub fn pin(&mut self, flow_id: u64, side: Side, buf: u32, end: u64, n: u32) {
        let Some(s) = self.flows.get_mut(&flow_id).and_then(|f| f.sides[idx(side)].as_mut()) else { return };
        if s.buf != buf {
            return;
        }
        if n == 0 {
            if s.pins.is_empty() {
                s.reasm.release(end);
            } else {
                s.pins.push_back((end, 0));
            }
            return;
        }
        s.pins.push_back((end, n));
    }

    /// One NF answered (or will never answer) the `DATA_RDY` on ring
    /// `buf` ending at `end`: advance the floor past every fully answered
    /// range. Frees an ended flow, or a retired ring, once nothing is
    /// pinned.
    pub fn unpin(&mut self, flow_id: u64, side: Side, buf: u32, end: u64) {
        let current = self.flows.get(&flow_id).and_then(|f| f.sides[idx(side)].as_ref()).is_some_and(|s| s.buf == buf);
        if !current {
            if let Some(i) = self.retired.iter().position(|r| r.buf == buf) {
                answer(&mut self.retired[i].pins, end);
                if self.retired[i].pins.is_empty() {
                    let r = self.retired.swap_remove(i);
                    self.bufs.free.push(r.buf);
                }
            }
            return;
        }
        let Some(f) = self.flows.get_mut(&flow_id) else { return };
        if let Some(s) = f.sides[idx(side)].as_mut() {
            if let Some(e) = answer(&mut s.pins, end) {
                s.reasm.release(e);
            }
        }
        if f.ended && f.sides.iter().flatten().all(|s| s.pins.is_empty()) {
            self.remove(flow_id);
        }
    }

    /// The flow left the flow table. Returns its per-side payload bytes and
    /// TCP end (for `FLOW/END`); the state goes once no NF reads its rings.
    /// `on_timeout` gets a last `FLOW/TCP/TIMEOUT` for a connection still
    /// open.
    pub fn end(&mut self, flow_id: u64, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) -> Option<([u64; 2], u8)> {
        let f = self.flows.get_mut(&flow_id)?;
        let cfg = self.cfg;
        if f.tcp_end == 0 {
            let mut timed_out = false;
            f.conn.poll(&cfg, u64::MAX, &mut |ev, snap| {
                timed_out |= ev == TcpEvent::Timeout;
                on_event(ev, snap);
            });
            if timed_out {
                f.tcp_end = ubox_shm::event::FLOW_END_TCP_TIMEOUT;
            }
        }
        f.ended = true;
        if f.sides.iter().flatten().any(|s| s.due.is_some()) {
            self.unannounced += 1;
        }
        // Payload each side sent: the stream length the monitor followed
        // (whether or not the side was reassembled), without the FIN.
        let sent = |side: Side| {
            let end = f.conn.stream_end(side);
            let fin = f.conn.snapshot(side).flags & TcpSnapshot::FIN_SENT != 0;
            end.saturating_sub(u64::from(fin))
        };
        let payload = [f.payload[0].max(sent(Side::Client)), f.payload[1].max(sent(Side::Server))];
        let out = (payload, f.tcp_end);
        if f.sides.iter().flatten().all(|s| s.pins.is_empty()) {
            self.remove(flow_id);
        }
        Some(out)
    }

    fn remove(&mut self, flow_id: u64) {
        if let Some(f) = self.flows.remove(&flow_id) {
            for s in f.sides.into_iter().flatten() {
                self.bufs.free.push(s.buf);
            }
        }
    }

    /// `FLOW/TCP/TERMINATE`: the stack's RSTs for both ends, as frames to
    /// send and the port each leaves by. Later packets of the flow are
    /// dropped by [`segment`](Self::segment).
    pub fn terminate(
        &mut self,
        flow_id: u64,
        now: u64,
        on_event: &mut impl FnMut(TcpEvent, TcpSnapshot),
        out: &mut Vec<(Vec<u8>, usize)>,
    ) -> bool {
        let Some(f) = self.flows.get_mut(&flow_id) else { return false };
        let t = f.conn.terminate(now, on_event);
        f.tcp_end = ubox_shm::event::FLOW_END_TERMINATED;
        // To the server, impersonating the client (leaves by the client's
        // frames' port), and the other way round.
        for (rst, from, to) in [(t.to_server, 0, 1), (t.to_client, 1, 0)] {
            let end = |i: usize| {
                let e = &f.ends[i];
                if e.addr.is_some() {
                    Some(*e)
                } else {
                    f.ends[1 - i].peer_of(&f.key)
                }
            };
            let (Some(rst), Some(e), Some(dst)) = (rst, end(from), end(to).and_then(|e| e.addr)) else { continue };
            let Some(src) = e.addr else { continue };
            for seq in std::iter::once(rst.seq).chain(rst.alt_seq) {
                let mut buf = vec![0u8; 128];
                if let Some(n) = ustack::l3::build_tcp_segment(
                    &e.l2[..e.l2_len as usize],
                    src.0,
                    dst.0,
                    src.1,
                    dst.1,
                    seq,
                    rst.ack,
                    rst.flags,
                    &mut buf,
                ) {
                    buf.truncate(n);
                    out.push((buf, e.out_port as usize));
                }
            }
        }
        true
    }

    /// Bytes of monitor state per flow (without rings), for stats.
    pub fn flow_bytes() -> usize {
        std::mem::size_of::<MonFlow>()
    }

    /// Bytes of state per reassembled side (besides its ring), for stats.
    pub fn side_bytes() -> usize {
        std::mem::size_of::<SideStream>()
    }
}

/// A RST answering one TCP segment of a flow the box refuses (RFC 9293
/// §3.10.7.1 as for a closed port): back to its sender, addresses, ports
/// and MACs swapped. `None` for a RST (never answered) or a frame that is
/// not a whole TCP segment.
pub fn reset_reply(
    frame: &[u8],
    l4: std::ops::Range<usize>,
    key: &FlowKey,
    dir: ustack::flow::Direction,
) -> Option<Vec<u8>> {
    use ustack::wire::TcpFlags;
    let tcp = TcpPacket::new_checked(frame.get(l4.clone())?).ok()?;
    let flags = tcp.flags();
    if flags.contains(TcpFlags::RST) {
        return None;
    }
    let l2_len = l4.start.min(if frame.get(12..14) == Some(&[0x81, 0x00]) { 18 } else { 14 });
    let mut l2 = frame.get(..l2_len)?.to_vec();
    if l2.len() < 12 {
        return None;
    }
    let (dst, src) = l2.split_at_mut(6);
    dst.swap_with_slice(&mut src[..6]);
    let (from, to) = key.endpoints(dir);
    let (seq, ack, out) = if flags.contains(TcpFlags::ACK) {
        (tcp.ack_number(), 0, TcpFlags::RST)
    } else {
        let len = tcp.payload().len() as u32
            + u32::from(flags.contains(TcpFlags::SYN))
            + u32::from(flags.contains(TcpFlags::FIN));
        (0, tcp.seq_number().wrapping_add(len), TcpFlags::RST | TcpFlags::ACK)
    };
    let mut buf = vec![0u8; 128];
    let n = ustack::l3::build_tcp_segment(&l2, to.0, from.0, to.1, from.1, seq, ack, out, &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use ubox_shm::ArenaConfig;
    use ustack::flow::Direction;

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RING: u32 = 4096;

    struct H {
        arena: Arena,
        mon: Monitor,
        key: FlowKey,
        dir: Direction,
        _dir: tempdir::Dir,
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn h(name: &str) -> H {
        let dir = std::env::temp_dir().join(format!("ubox-mon-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = ArenaConfig { data_bytes: 1 << 20, ..ArenaConfig::new(format!("mon-{name}")) };
        let arena = Arena::create(dir.join("a.arena"), &cfg).unwrap();
        let base = arena.data_region().offset;
        let mon = Monitor::new(MonitorConfig::default(), 16, StreamBufs::new(base, 4, RING));
        let (key, dir_c) = FlowKey::from_v4(Ipv4Addr::new(10, 0, 0, 1), 40000, Ipv4Addr::new(10, 0, 0, 2), 80, 6);
        H { arena, mon, key, dir: dir_c, _dir: tempdir::Dir(dir) }
    }

    /// Ethernet + IPv4 + a 20-byte TCP header + payload.
    fn frame(seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 54];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 6;
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&ack.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f[48..50].copy_from_slice(&0xffffu16.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    impl H {
        fn send(&mut self, side: Side, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<Report> {
            assert_eq!(self.seg(1, side, seq, ack, flags, payload), Seg::Forward);
            std::mem::take(&mut self.mon.reports)
        }

        fn seg(&mut self, id: u64, side: Side, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Seg {
            let f = frame(seq, ack, flags, payload);
            let dir = if side == Side::Client { self.dir } else { self.dir.reverse() };
            self.mon.segment(&self.arena, id, &f, 34..f.len(), side, dir, (0, 1), 0)
        }

        fn due(&mut self) -> Vec<DataReady> {
            let mut out = Vec::new();
            self.mon.take_due(&mut out);
            out.into_iter()
                .filter_map(|(_, _, _, r)| match r {
                    Report::Data(d, _) => Some(d),
                    Report::Tcp(..) => None,
                })
                .collect()
        }

        fn ring_bytes(&self, d: &DataReady) -> Vec<u8> {
            self.arena.packet(d.ring_off + d.start, (d.end - d.start) as u32).unwrap().to_vec()
        }

        fn handshake(&mut self, c: u32, s: u32) {
            self.send(Side::Client, c, 0, SYN, b"");
            self.send(Side::Server, s, c + 1, SYN | ACK, b"");
            self.send(Side::Client, c + 1, s + 1, ACK, b"");
        }
    }

    fn data_reports(r: &[Report]) -> usize {
        r.iter().filter(|r| matches!(r, Report::Data(..))).count()
    }

    #[test]
    fn a_terminated_flow_whose_server_sent_nothing_still_resets_both_ends() {
        // A spliced connection: the splicer answered the handshake, so the
        // monitor has seen only the client (in by port 0, out by port 2).
        let mut h = h("term1");
        assert!(h.mon.open(1, 1, h.key, Needs { tcp: true, client: true, server: false }, true));
        let mut f = frame(1001, 7001, ACK, b"GET /");
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]); // to the box
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc]); // from the client
        let seg = h.mon.segment(&h.arena, 1, &f, 34..f.len(), Side::Client, h.dir, (0, 2), 0);
        assert_eq!(seg, Seg::Forward);
        let mut frames = Vec::new();
        assert!(h.mon.terminate(1, 1, &mut |_, _| {}, &mut frames));
        let ports: Vec<usize> = frames.iter().map(|(_, p)| *p).collect();
        assert_eq!(ports, [2, 0], "to the server the client's way out, to the client back where it came from");
        let (to_client, _) = &frames[1];
        assert_eq!(&to_client[..12], &[2, 0, 0, 0, 0, 0xc, 2, 0, 0, 0, 0, 0xb], "MACs swapped");
        let ip = ustack::wire::Ipv4Packet::new_checked(&to_client[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)));
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.seq_number()), (80, 40000, 7001), "at the client's ACK");
        assert!(tcp.flags().contains(ustack::wire::TcpFlags::RST));
    }

    #[test]
    fn segment_counters_add_up_over_retransmits_holes_and_conflicts() {
        let mut h = h("tally");
        let needs = Needs { tcp: true, client: true, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        assert_eq!(std::mem::take(&mut h.mon.tally), SegTally::default(), "a clean handshake counts nothing");
        h.send(Side::Client, 101, 501, ACK, b"abcd");
        h.send(Side::Client, 109, 501, ACK, b"ijkl"); // a hole at 4..8
        h.send(Side::Client, 101, 501, ACK, b"abcd"); // retransmitted, identical
        h.send(Side::Client, 105, 501, ACK, b"eXgh"); // fills the hole
        h.send(Side::Client, 105, 501, ACK, b"efgh"); // differs from what is stored
        let t = std::mem::take(&mut h.mon.tally);
        assert_eq!(t.out_of_order, 1, "{t:?}");
        // The tracker counts every segment below the highest sequence seen
        // (the late filler too); the reassembler compares bytes.
        assert_eq!((t.retransmits, t.duplicates, t.conflicts), (3, 1, 1), "{t:?}");
        assert_eq!(tally_from_array(tally_to_array(&t)), t);
        assert_eq!(h.mon.tally, SegTally::default(), "taken");
    }

    #[test]
    fn one_data_ready_per_burst_covers_every_segment() {
        let mut h = h("burst");
        let needs = Needs { tcp: true, client: true, server: true };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        for (i, chunk) in [&b"GET / "[..], b"HTTP/1.1\r\n", b"\r\n"].iter().enumerate() {
            let seq = 101 + [0, 6, 16][i];
            assert_eq!(data_reports(&h.send(Side::Client, seq, 501, ACK, chunk)), 0, "due, not announced");
        }
        let d = h.due();
        assert_eq!(d.len(), 1, "one announcement for three segments");
        assert_eq!((d[0].side, d[0].start, d[0].end), (Side::Client, 0, 18));
        assert_eq!(h.ring_bytes(&d[0]), b"GET / HTTP/1.1\r\n\r\n");
        assert!(h.due().is_empty(), "announced once");
        // A FIN announces the side's due bytes before itself.
        h.send(Side::Server, 501, 119, ACK, b"hello");
        let r = h.send(Side::Server, 506, 119, FIN | ACK, b"");
        assert!(matches!(r.first(), Some(Report::Data(d, _)) if d.side == Side::Server && d.end == 5), "data first");
        assert!(r.iter().any(|r| matches!(r, Report::Tcp(TcpEvent::Fin { .. }, _))));
        assert!(h.due().is_empty());
    }

    #[test]
    fn port_reuse_with_a_pinned_ring_gets_a_fresh_ring() {
        let mut h = h("reuse");
        let needs = Needs { tcp: true, client: true, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        h.send(Side::Client, 101, 501, ACK, b"first connection");
        let free0 = h.mon.bufs.free.len();
        let old = h.due().pop().unwrap();
        h.mon.pin(1, Side::Client, old.buf, old.end, 1); // an NF reads it
        h.send(Side::Client, 117, 501, FIN | ACK, b"");
        h.send(Side::Server, 501, 118, FIN | ACK, b"");
        h.send(Side::Client, 118, 502, ACK, b"");
        // The same four-tuple again, a new ISN: a new connection.
        let r = h.send(Side::Client, 9000, 0, SYN, b"");
        assert!(r.iter().any(|r| matches!(r, Report::Tcp(TcpEvent::Syn, _))));
        h.send(Side::Server, 7000, 9001, SYN | ACK, b"");
        h.send(Side::Client, 9001, 7001, ACK, b"");
        h.send(Side::Client, 9001, 7001, ACK, b"SECOND CONNECTION");
        let new = h.due().pop().unwrap();
        assert_ne!(new.buf, old.buf, "the pinned ring was not reused");
        assert_eq!((new.start, new.end), (0, 17));
        assert_eq!(h.ring_bytes(&new), b"SECOND CONNECTION");
        assert_eq!(h.ring_bytes(&old), b"first connection", "pinned bytes unchanged");
        assert_eq!(h.mon.bufs.free.len(), free0 - 1);
        assert_eq!((h.mon.restarts, h.mon.retired_rings), (1, 1));
        // The old reader answers: its ring is freed, the new one untouched.
        h.mon.unpin(1, Side::Client, old.buf, old.end);
        assert_eq!(h.mon.bufs.free.len(), free0);
        assert!(h.mon.retired.is_empty());
        h.mon.pin(1, Side::Client, new.buf, new.end, 1);
        h.mon.unpin(1, Side::Client, new.buf, new.end);
        let f = &h.mon.flows[&1];
        assert_eq!(f.sides[0].as_ref().unwrap().reasm.floor(), 17, "the new ring's floor follows its own pins");
    }

    #[test]
    fn a_side_takes_its_ring_with_its_first_payload_byte() {
        let mut h = h("first-byte");
        let both = Needs { tcp: true, client: true, server: true };
        let free0 = h.mon.bufs.free.len();
        assert!(h.mon.open(1, 1, h.key, both, true));
        h.handshake(100, 500);
        assert_eq!(h.mon.bufs.free.len(), free0, "a handshake takes no ring");
        h.send(Side::Client, 101, 501, ACK, b"GET /");
        assert_eq!(h.mon.bufs.free.len(), free0 - 1, "the client's first byte took one");
        // Strict: a side that finds no ring refuses the flow.
        while h.mon.bufs.free.pop().is_some() {}
        assert_eq!(h.seg(1, Side::Server, 501, 106, ACK, b"HTTP/1.1 200"), Seg::NoRing);
        assert_eq!(h.mon.no_buffer, 1);
        // Not strict: tracked, not reassembled, said once as a stop.
        let mut h = h2_with_no_rings();
        assert!(h.mon.open(1, 1, h.key, both, false));
        h.handshake(100, 500);
        let r = h.send(Side::Client, 101, 501, ACK, b"GET /");
        let stop = TcpEvent::ReassemblyStopped { side: Side::Client, reason: ustack::tcp::StopReason::NoBuffer };
        assert_eq!(r.iter().filter(|r| matches!(r, Report::Tcp(e, _) if *e == stop)).count(), 1);
        assert_eq!((h.mon.no_buffer, h.mon.stopped), (1, 1));
        assert!(h.send(Side::Client, 106, 501, ACK, b" HTTP/1.1").is_empty(), "reported once");
        assert!(h.due().is_empty());
    }

    #[test]
    fn a_strict_flow_whose_side_stops_is_refused_not_passed_unseen() {
        let both = Needs { tcp: true, client: true, server: true };
        for strict in [true, false] {
            let mut g = h(if strict { "strict-gap" } else { "lax-gap" });
            assert!(g.mon.open(1, 1, g.key, both, strict));
            g.handshake(100, 500);
            assert_eq!(g.seg(1, Side::Client, 101, 501, ACK, b"abcd"), Seg::Forward);
            // The server acknowledges 100 bytes the box never saw: a hole
            // that will never fill (how an evader would slip bytes past).
            let want = if strict { Seg::NoRing } else { Seg::Forward };
            assert_eq!(g.seg(1, Side::Server, 501, 205, ACK, b""), want, "strict {strict}");
            assert_eq!(g.mon.tally.stopped_gap, 1);
        }
    }

    #[test]
    fn a_strict_flows_segment_past_the_holes_is_dropped_to_be_sent_again_not_forwarded() {
        let client = Needs { tcp: true, client: true, server: false };
        for strict in [true, false] {
            let mut g = h(if strict { "strict-holes" } else { "lax-holes" });
            assert!(g.mon.open(1, 1, g.key, client, strict));
            g.handshake(100, 500);
            assert_eq!(g.seg(1, Side::Client, 101, 501, ACK, b"a"), Seg::Forward);
            // 16 out-of-order ranges (the default max_holes), each 1 byte
            // after a 9-byte hole; the 17th does not fit.
            for k in 1..=16u32 {
                assert_eq!(g.seg(1, Side::Client, 102 + 10 * k, 501, ACK, b"x"), Seg::Forward, "range {k}");
            }
            let want = if strict { Seg::Unkept } else { Seg::Forward };
            assert_eq!(g.seg(1, Side::Client, 102 + 10 * 17, 501, ACK, b"y"), want, "strict {strict}");
            assert_eq!(g.mon.tally.holes_full, 1);
            if strict {
                // Dropped, it was not acknowledged: the side goes on, and the
                // segment sent again once the holes filled is kept.
                for k in 0..=16u32 {
                    let fill = vec![b'f'; if k == 0 { 10 } else { 9 }];
                    let at = if k == 0 { 102 } else { 103 + 10 * k };
                    assert_eq!(g.seg(1, Side::Client, at, 501, ACK, &fill), Seg::Forward, "fill {k}");
                }
                assert_eq!(g.seg(1, Side::Client, 102 + 10 * 17, 501, ACK, b"y"), Seg::Forward, "sent again");
                assert_eq!(g.seg(1, Side::Server, 501, 102 + 10 * 17 + 1, ACK, b""), Seg::Forward);
                assert_eq!(g.mon.tally.stopped_gap, 0, "no gap: nothing was acknowledged unseen");
                assert_eq!(g.mon.tally.conflicts, 0, "the fills fit the holes exactly");
            }
        }
    }

    fn h2_with_no_rings() -> H {
        let mut h = h("no-rings");
        while h.mon.bufs.free.pop().is_some() {}
        h
    }

    #[test]
    fn at_max_flows_closed_then_half_open_flows_make_room_never_established_ones() {
        let mut h = h("victims");
        let tcp = Needs { tcp: true, client: false, server: false };
        // 16 flows (max): 1 established, 2 closed, the rest half-open.
        for id in 1..=16 {
            assert!(h.mon.open(id, 1, h.key, tcp, true));
        }
        assert!(!h.mon.open(17, 1, h.key, tcp, true), "full");
        let syn = |h: &mut H, id| h.seg(id, Side::Client, 100, 0, SYN, b"");
        for id in 1..=16 {
            syn(&mut h, id);
        }
        h.seg(1, Side::Server, 500, 101, SYN | ACK, b"");
        h.seg(1, Side::Client, 101, 501, ACK, b"");
        for id in [7, 3] {
            h.seg(id, Side::Server, 500, 101, SYN | ACK, b"");
            h.seg(id, Side::Client, 101, 501, ACK, b"");
            h.seg(id, Side::Client, 101, 501, FIN | ACK, b"");
            h.seg(id, Side::Server, 501, 102, FIN | ACK, b"");
            h.seg(id, Side::Client, 102, 502, ACK, b"");
        }
        let mut order = Vec::new();
        while let Some((id, _, _, closed)) = h.mon.victim() {
            assert_eq!(closed, [7, 3].contains(&id));
            let mut evs = Vec::new();
            h.mon.end(id, &mut |e, _| evs.push(e));
            if ![7, 3].contains(&id) {
                assert_eq!(evs, [TcpEvent::Timeout], "a half-open flow ends with a timeout");
            }
            order.push(id);
        }
        let half_open: Vec<u64> = (2..=16).filter(|id| ![3, 7].contains(id)).collect();
        assert_eq!(order, [[7, 3].as_slice(), &half_open].concat(), "closed first (in close order), then half-open");
        assert!(h.mon.contains(1), "the established flow stays");
        assert!(h.mon.open(17, 1, h.key, tcp, true));
    }

    #[test]
    fn a_closed_connection_is_due_to_end_a_linger_after_its_close() {
        let mut h = h("linger");
        let tcp = Needs { tcp: true, client: false, server: false };
        assert!(h.mon.open(1, 1, h.key, tcp, true));
        let linger = h.mon.cfg.linger;
        let at = |h: &mut H, now: u64, side, seq, ack, flags| {
            let f = frame(seq, ack, flags, b"");
            let dir = if side == Side::Client { h.dir } else { h.dir.reverse() };
            h.mon.segment(&h.arena, 1, &f, 34..f.len(), side, dir, (0, 1), now)
        };
        at(&mut h, 0, Side::Client, 100, 0, SYN);
        at(&mut h, 0, Side::Server, 500, 101, SYN | ACK);
        at(&mut h, 0, Side::Client, 101, 501, ACK);
        at(&mut h, 5, Side::Client, 101, 501, FIN | ACK);
        at(&mut h, 6, Side::Server, 501, 102, FIN | ACK);
        at(&mut h, 7, Side::Client, 102, 502, ACK);
        let mut out = Vec::new();
        h.mon.closed_due(7 + linger - 1, &mut out);
        assert!(out.is_empty(), "still lingering");
        h.mon.closed_due(7 + linger, &mut out);
        assert_eq!(out, [h.key]);
        out.clear();
        h.mon.closed_due(u64::MAX, &mut out);
        assert!(out.is_empty(), "once");
    }

    #[test]
    fn a_side_without_a_ring_gets_one_when_its_connection_restarts() {
        let mut h = h("noring");
        let needs = Needs { tcp: true, client: true, server: false };
        let taken: Vec<u32> = std::iter::from_fn(|| h.mon.bufs.free.pop()).collect();
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        assert_eq!(h.mon.no_buffer, 0, "no ring needed yet");
        h.send(Side::Client, 101, 501, ACK, b"lost");
        assert_eq!(h.mon.no_buffer, 1);
        assert!(h.due().is_empty(), "not reassembled");
        h.send(Side::Client, 105, 501, FIN | ACK, b"");
        h.send(Side::Server, 501, 106, FIN | ACK, b"");
        h.send(Side::Client, 106, 502, ACK, b"");
        h.mon.bufs.free.extend(taken);
        h.send(Side::Client, 3000, 0, SYN, b"");
        h.send(Side::Server, 4000, 3001, SYN | ACK, b"");
        h.send(Side::Client, 3001, 4001, ACK, b"kept");
        let d = h.due().pop().expect("reassembled now");
        assert_eq!(h.ring_bytes(&d), b"kept");
        assert_eq!(h.mon.restarts, 1);
    }

    #[test]
    fn a_connection_closing_over_and_over_on_one_port_keeps_the_closing_list_short() {
        // Port reuse at a high rate: every connection closes and its flow
        // lives on. Only the current connection's entry can end the flow;
        // the list once kept them all and rescanned it at every close.
        let mut h = h("reclose");
        let needs = Needs { tcp: true, client: false, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        for i in 0..2000u32 {
            let (c, s) = (i * 1000, 500_000 + i * 1000);
            h.handshake(c, s);
            h.send(Side::Client, c + 1, s + 1, FIN | ACK, b"");
            h.send(Side::Server, s + 1, c + 2, FIN | ACK, b"");
            h.send(Side::Client, c + 2, s + 2, ACK, b"");
            assert!(h.mon.closing.len() <= h.mon.closing_limit, "{} > {}", h.mon.closing.len(), h.mon.closing_limit);
        }
        assert_eq!(h.mon.restarts, 1999);
        assert!(h.mon.closing_limit <= 2 * 64, "the limit did not grow: {}", h.mon.closing_limit);
        // The entry of the last connection still ends the flow.
        let mut out = Vec::new();
        h.mon.closed_due(u64::MAX, &mut out);
        assert_eq!(out, [h.key]);
    }

    #[test]
    fn under_backpressure_a_reader_a_ring_behind_holds_rx_instead_of_the_side_stopping() {
        let mut h = h("hold");
        h.mon.hold_for_readers(1 << 20);
        assert_eq!(h.mon.hold_room, u64::from(RING) / 2, "at most half a ring");
        let needs = Needs { tcp: true, client: true, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, true));
        h.handshake(100, 500);
        h.send(Side::Client, 101, 501, ACK, &[b'a'; 1500]);
        let d = h.due().pop().unwrap();
        h.mon.pin(1, Side::Client, d.buf, d.end, 1);
        assert!(!h.mon.readers_behind(), "1500 held, 2596 free of 4096");
        h.send(Side::Client, 1601, 501, ACK, &[b'b'; 1000]);
        let d2 = h.due().pop().unwrap();
        h.mon.pin(1, Side::Client, d2.buf, d2.end, 1);
        assert!(h.mon.readers_behind(), "2500 held: another 2048 might not fit");
        h.mon.unpin(1, Side::Client, d.buf, d.end);
        assert!(!h.mon.readers_behind(), "the first range answered: 1000 held");
        assert!(h.mon.tight.is_empty());
        h.mon.unpin(1, Side::Client, d2.buf, d2.end);
        // Without backpressure nothing is ever held.
        let mut h = super::tests::h("nohold");
        assert!(h.mon.open(1, 1, h.key, needs, true));
        h.handshake(100, 500);
        h.send(Side::Client, 101, 501, ACK, &[b'a'; 3000]);
        let d = h.due().pop().unwrap();
        h.mon.pin(1, Side::Client, d.buf, d.end, 1);
        assert!(!h.mon.readers_behind());
    }

    #[test]
    fn a_ring_full_behind_its_reader_stops_the_side_and_is_counted() {
        let mut h = h("full");
        let needs = Needs { tcp: true, client: false, server: true };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        let chunk = [b'x'; 1400];
        let (mut stops, mut announced) = (0, Vec::new());
        for i in 0..4u32 {
            // Nothing is released: a reader still holds byte 0.
            for r in h.send(Side::Server, 501 + i * 1400, 101, ACK, &chunk) {
                match r {
                    Report::Tcp(TcpEvent::ReassemblyStopped { .. }, _) => stops += 1,
                    Report::Data(d, _) => announced.push((d.start, d.end, d.stopped, stops)),
                    Report::Tcp(..) => {}
                }
            }
        }
        assert_eq!(stops, 1, "reported once");
        assert_eq!(h.mon.stopped, 1, "counted once");
        // What fit in the ring (two segments) is announced before the stop,
        // then a last (here empty) range that says the side stopped.
        assert_eq!(announced, [(0, 2800, 0, 0), (2800, 2800, 1, 0)]);
        assert!(h.due().is_empty());
    }

    #[test]
    fn a_strict_flows_segment_with_no_ring_room_is_dropped_to_be_sent_again_not_a_stop() {
        let mut h = h("fullstrict");
        let needs = Needs { tcp: true, client: false, server: true };
        assert!(h.mon.open(1, 1, h.key, needs, true));
        h.handshake(100, 500);
        let chunk = |i: u32| [b'a' + i as u8; 1400];
        assert_eq!(h.seg(1, Side::Server, 501, 101, ACK, &chunk(0)), Seg::Forward);
        assert_eq!(h.seg(1, Side::Server, 1901, 101, ACK, &chunk(1)), Seg::Forward);
        let d = h.due().pop().expect("2800 bytes announced");
        h.mon.pin(1, Side::Server, d.buf, d.end, 1); // a reader holds them
                                                     // 4200 > 4096: no room while the reader holds 0..2800.
        assert_eq!(h.seg(1, Side::Server, 3301, 101, ACK, &chunk(2)), Seg::Full);
        assert_eq!(h.seg(1, Side::Server, 4701, 101, ACK, &chunk(3)), Seg::Full, "later ones too");
        assert_eq!(h.mon.stopped, 0, "the side goes on");
        assert!(h.due().is_empty(), "nothing new kept");
        // The reader answers; the sender sends the dropped segments again.
        h.mon.unpin(1, Side::Server, d.buf, d.end);
        assert_eq!(h.seg(1, Side::Server, 3301, 101, ACK, &chunk(2)), Seg::Forward);
        assert_eq!(h.seg(1, Side::Server, 4701, 101, ACK, &chunk(3)), Seg::Forward);
        let d = h.due().pop().expect("the resent bytes");
        assert_eq!((d.start, d.end), (2800, 5600));
        assert_eq!(h.ring_bytes(&DataReady { end: 4096, ..d }), [b'c'; 1296]);
        assert_eq!(h.mon.stopped, 0);
    }

    #[test]
    fn a_deferred_range_is_announced_again_from_its_start_with_what_came_since() {
        let mut h = h("defer");
        let needs = Needs { tcp: true, client: true, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        h.send(Side::Client, 101, 501, ACK, b"GET /evil");
        let d = h.due().pop().expect("announced");
        assert_eq!((d.start, d.end), (0, 9));
        // A fail-closed reader had no room: nobody got it, nothing pinned.
        let snap = h.mon.flows[&1].conn.snapshot(Side::Client);
        h.mon.defer(1, &d, snap);
        assert!(h.mon.has_due(), "due again");
        h.send(Side::Client, 110, 501, ACK, b"-signature");
        let again = h.due();
        assert_eq!(again.len(), 1, "one range for the side");
        assert_eq!((again[0].start, again[0].end), (0, 19), "from the deferred start, with the new bytes");
        assert_eq!(h.ring_bytes(&again[0]), b"GET /evil-signature", "the held-back bytes are still in the ring");
        h.mon.pin(1, Side::Client, again[0].buf, again[0].end, 1);
        // A stale deferral (the range was announced past it meanwhile) is ignored.
        h.mon.defer(1, &d, snap);
        assert!(!h.mon.has_due());
    }

    /// A connection closed while its reader (fail-closed, without room)
    /// had not been given its last bytes: each announcement went to
    /// nobody and was deferred again.
    fn closed_with_bytes_held_back(name: &str) -> H {
        let mut h = h(name);
        assert!(h.mon.open(1, 1, h.key, Needs { tcp: true, client: true, server: false }, false));
        h.handshake(100, 500);
        let mut reports = h.send(Side::Client, 101, 501, ACK, b"GET /x");
        for (seq, ack, side, flags) in [(107, 501, Side::Client, FIN | ACK), (501, 108, Side::Server, FIN | ACK)] {
            reports.extend(h.send(side, seq, ack, flags, b""));
        }
        reports.extend(h.send(Side::Client, 108, 502, ACK, b""));
        let mut due = Vec::new();
        h.mon.take_due(&mut due);
        reports.extend(due.into_iter().map(|(_, _, _, r)| r));
        for r in reports {
            if let Report::Data(d, snap) = r {
                h.mon.defer(1, &d, snap);
            }
        }
        assert!(h.mon.has_due());
        h
    }

    #[test]
    fn a_closed_connection_waits_a_while_for_its_reader_to_take_its_last_bytes() {
        let linger = MonitorConfig::default().linger;
        let mut out = Vec::new();
        // The reader catches up: the flow ends at the next look after.
        let mut h = closed_with_bytes_held_back("endwait1");
        h.mon.closed_due(linger, &mut out);
        assert!(out.is_empty(), "not while its bytes wait to be announced");
        let again = h.due();
        assert_eq!((again.len(), again[0].start, again[0].end), (1, 0, 6), "the whole held-back range");
        h.mon.pin(1, Side::Client, again[0].buf, again[0].end, 1);
        h.mon.closed_due(linger + END_WAIT, &mut out);
        assert_eq!(out, [h.key]);
        h.mon.end(1, &mut |_, _| {});
        assert_eq!(h.mon.unannounced, 0);

        // It never does: the flow ends 2 s past the linger, counted.
        let mut h = closed_with_bytes_held_back("endwait2");
        out.clear();
        for i in 0..u64::from(END_WAITS) {
            h.mon.closed_due(linger + i * END_WAIT, &mut out);
            assert!(out.is_empty(), "wait {i}");
        }
        h.mon.closed_due(linger + u64::from(END_WAITS) * END_WAIT, &mut out);
        assert_eq!(out, [h.key], "bounded");
        h.mon.end(1, &mut |_, _| {});
        assert_eq!(h.mon.unannounced, 1, "ended with bytes never announced");
    }

    #[test]
    fn port_reuse_without_readers_resets_the_ring_in_place() {
        let mut h = h("inplace");
        let needs = Needs { tcp: true, client: true, server: false };
        assert!(h.mon.open(1, 1, h.key, needs, false));
        h.handshake(100, 500);
        h.send(Side::Client, 101, 501, ACK, b"abc");
        let old = h.due().pop().unwrap();
        h.mon.pin(1, Side::Client, old.buf, old.end, 0); // nobody subscribed
        h.send(Side::Client, 104, 501, FIN | ACK, b"");
        h.send(Side::Server, 501, 105, FIN | ACK, b"");
        h.send(Side::Client, 105, 502, ACK, b"");
        h.send(Side::Client, 3000, 0, SYN, b"");
        h.send(Side::Server, 4000, 3001, SYN | ACK, b"");
        h.send(Side::Client, 3001, 4001, ACK, b"xyz!");
        let new = h.due().pop().unwrap();
        assert_eq!((new.buf, new.start, new.end), (old.buf, 0, 4));
        assert_eq!(h.ring_bytes(&new), b"xyz!");
    }
}
