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
//!   cell before it. A side takes a ring when its flow starts being
//!   monitored and gives it back when the flow has ended and no NF still
//!   reads it. No ring left: the side is not reassembled
//!   (`FLOW/TCP/REASM_STOPPED`).
//! - **Pins.** Each `DATA_RDY` event pins its range until every NF it went
//!   to answered (or died); the reassembler's floor follows the oldest
//!   pinned range, so bytes an NF may still read are never overwritten.
//!   Reassembly running a whole ring ahead of the slowest reader stops for
//!   that side (`BufferFull`), and the flow goes on being forwarded.
//! - **Memory.** A monitored flow costs `size_of::<MonFlow>()` (about
//!   1 KiB, see `uboxctl stats`) plus one ring per reassembled side; both
//!   are bounded by the config.

use std::collections::VecDeque;
use std::net::IpAddr;

use std::collections::HashMap;
use ubox_shm::Arena;
use ustack::flow::{FlowKey, Side};
use ustack::tcp::{MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent, TcpSnapshot};
use ustack::wire::TcpPacket;

/// Bytes before each ring: the "written up to" cell (cache-line sized).
const CELL: u64 = 64;
/// `DATA_RDY` events outstanding per side at most; past that the next
/// event covers a longer range instead.
const MAX_PINS: usize = 64;

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
}

/// Where to send a frame impersonating one side: its Ethernet header (as
/// the side's last frame had it), its address and port, and the port its
/// frames leave the box by.
#[derive(Clone, Copy, Default)]
struct Endpoint {
    l2: [u8; 18],
    l2_len: u8,
    addr: Option<(IpAddr, u16)>,
    out_port: u8,
}

/// Monitor state of one flow.
pub struct MonFlow {
    conn: TcpConn,
    tag: u32,
    key: FlowKey,
    sides: [Option<SideStream>; 2],
    ends: [Endpoint; 2],
    /// In-order payload bytes per side (what `DATA_RDY` announced).
    payload: [u64; 2],
    /// How the TCP connection ended (`FLOW_END_*`), 0 while open.
    pub tcp_end: u8,
    /// The flow left the flow table; freed once no NF reads its rings.
    ended: bool,
}

/// A `DATA_RDY` to publish: side, range, where the ring is.
pub struct DataReady {
    pub side: Side,
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
}

/// The reassembly storage of one side for one call: its metadata and its
/// ring in the arena.
fn stream_of<'s>(arena: &'s Arena, bufs: &StreamBufs, s: &'s mut Option<SideStream>) -> Option<Stream<'s>> {
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
            flows: HashMap::new(),
            max,
            bufs,
            reports: Vec::with_capacity(16),
            scratch: Vec::with_capacity(16),
        }
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

    /// Starts monitoring `flow_id`. False when `monitor.max_flows` is
    /// reached. `no_buffer` counts sides that found no ring.
    pub fn open(&mut self, flow_id: u64, tag: u32, key: FlowKey, needs: Needs, no_buffer: &mut u64) -> bool {
        if self.flows.len() >= self.max {
            return false;
        }
        let mut side = |want: bool| -> Option<SideStream> {
            if !want {
                return None;
            }
            let Some(buf) = self.bufs.free.pop() else {
                *no_buffer += 1;
                return None;
            };
            Some(SideStream {
                reasm: Reassembler::from_config(&self.cfg),
                buf,
                pins: VecDeque::new(),
                announced: 0,
                stopped: 0,
            })
        };
        let sides = [side(needs.client), side(needs.server)];
        let conn = TcpConn::new();
        self.flows.insert(
            flow_id,
            MonFlow {
                conn,
                tag,
                key,
                sides,
                ends: [Endpoint::default(); 2],
                payload: [0; 2],
                tcp_end: 0,
                ended: false,
            },
        );
        true
    }

    /// Feeds one segment of `flow_id` (`l4` = TCP header and payload) sent
    /// by `side` (in direction `dir` of the flow key), which leaves the box
    /// by `out_port`.
    /// Returns whether to forward it; what to publish is in `reports`.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        arena: &Arena,
        flow_id: u64,
        frame: &[u8],
        l4: std::ops::Range<usize>,
        side: Side,
        dir: ustack::flow::Direction,
        out_port: usize,
        now: u64,
    ) -> bool {
        self.reports.clear();
        let Some(f) = self.flows.get_mut(&flow_id) else { return true };
        let Some(tcp) = frame.get(l4).and_then(|b| TcpPacket::new_checked(b).ok()) else { return true };
        let seg = Segment::from_packet(&tcp);
        // Remember how to impersonate this side (for RSTs).
        let e = &mut f.ends[idx(side)];
        let l2_len = if frame.get(12..14) == Some(&[0x81, 0x00]) { 18 } else { 14 };
        if let Some(h) = frame.get(..l2_len) {
            e.l2[..l2_len].copy_from_slice(h);
            e.l2_len = l2_len as u8;
        }
        e.addr = Some(f.key.endpoints(dir).0);
        e.out_port = out_port as u8;
        let (client, server) = f.sides.split_at_mut(1);
        let streams = Streams {
            client: stream_of(arena, &self.bufs, &mut client[0]),
            server: stream_of(arena, &self.bufs, &mut server[0]),
        };
        let reports = &mut self.reports;
        let action = f.conn.on_segment(&self.cfg, &seg, side, now, streams, &mut |ev, snap| {
            reports.push(Report::Tcp(ev, snap));
        });
        // Publish how far each ring is written before announcing ranges.
        for s in f.sides.iter().flatten() {
            let _ = arena.store_u64(self.bufs.cell(s.buf), s.reasm.written_end());
        }
        Self::finish_reports(f, &self.bufs, &mut self.reports, &mut self.scratch);
        action == ustack::tcp::Action::Forward
    }

    /// Turns `DataReady`s into announcements (coalescing when too many are
    /// pinned) and notes how the connection ended.
    fn finish_reports(f: &mut MonFlow, bufs: &StreamBufs, reports: &mut Vec<Report>, out: &mut Vec<Report>) {
        out.clear();
        for r in reports.drain(..) {
            match r {
                Report::Tcp(TcpEvent::DataReady { side, end, .. }, snap) => {
                    let i = idx(side);
                    f.payload[i] = end;
                    let Some(s) = f.sides[i].as_mut() else { continue };
                    if s.pins.len() >= MAX_PINS || end <= s.announced {
                        continue; // the next announcement covers it
                    }
                    out.push(Report::Data(
                        DataReady {
                            side,
                            start: s.announced,
                            end,
                            ring_off: bufs.ring(s.buf),
                            cell_off: bufs.cell(s.buf),
                            ring_len: bufs.ring_len,
                            stopped: 0,
                        },
                        snap,
                    ));
                    s.announced = end;
                }
                Report::Tcp(TcpEvent::ReassemblyStopped { side, reason }, snap) => {
                    if let Some(s) = f.sides[idx(side)].as_mut() {
                        s.stopped = match reason {
                            ustack::tcp::StopReason::BufferFull => 1,
                            ustack::tcp::StopReason::NoBuffer => 2,
                            ustack::tcp::StopReason::Gap => 3,
                        };
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
                    out.push(Report::Tcp(ev, snap));
                }
                other => out.push(other),
            }
        }
        std::mem::swap(reports, out);
    }

    /// The flow's chain tag (for delivering its events).
    pub fn tag(&self, flow_id: u64) -> Option<(u32, FlowKey)> {
        self.flows.get(&flow_id).map(|f| (f.tag, f.key))
    }

    /// A `DATA_RDY` for `side` up to `end` went to `n` NFs.
    pub fn pin(&mut self, flow_id: u64, side: Side, end: u64, n: u32) {
        let Some(s) = self.flows.get_mut(&flow_id).and_then(|f| f.sides[idx(side)].as_mut()) else { return };
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

    /// One NF answered (or will never answer) the `DATA_RDY` ending at
    /// `end`: advance the floor past every fully answered range. Frees an
    /// ended flow once nothing is pinned.
    pub fn unpin(&mut self, flow_id: u64, side: Side, end: u64) {
        let Some(f) = self.flows.get_mut(&flow_id) else { return };
        if let Some(s) = f.sides[idx(side)].as_mut() {
            if let Some(p) = s.pins.iter_mut().find(|p| p.0 == end && p.1 > 0) {
                p.1 -= 1;
            }
            while let Some(&(e, 0)) = s.pins.front() {
                s.pins.pop_front();
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
            let (Some(rst), Some(src), Some(dst)) = (rst, f.ends[from].addr, f.ends[to].addr) else { continue };
            let e = &f.ends[from];
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
        std::mem::size_of::<MonFlow>() + 2 * std::mem::size_of::<SideStream>()
    }
}
