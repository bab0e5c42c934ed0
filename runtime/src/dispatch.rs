//! Chains on the data path: which NFs a flow's packets visit, publishing
//! them as `PKT/...` events into the NFs' arena rings, and acting on the
//! answers.
//!
//! The control thread compiles a chain file into a [`ChainSnapshot`] and
//! posts it on the [`ChainBoard`]; each worker picks new snapshots up between
//! bursts. A flow is assigned a chain when it starts (its flow-table tag
//! remembers the snapshot version and chain), so applying new chains affects
//! new flows while old ones keep theirs.
//!
//! Per packet: for each stage of its chain, if the stage's NF is alive and
//! subscribes to the packet's type, the worker writes an event header into a
//! slot, pushes the slot on the NF's ring and parks the mbuf under the slot
//! index; the answer (Pass/Drop) moves it on. An absent or dead NF gets the
//! stage's policy: `fail-open` skips it, `fail-closed` drops the packet.
//! When an NF dies, the worker reclaims everything it held (answers still in
//! its ring, events it never took, packets parked on it) and acknowledges,
//! so the slot can be reused by the NF's next run.
//!
//! A parallel group's NFs get the packet at once, each through an event
//! slot of its own pointing at the same packet bytes (zero copy); the parked
//! packet counts the answers still due and moves on when none is left. Any
//! Drop answer, or a `fail-closed` member that is absent or died, drops it,
//! but only after every member that holds it has answered (they read its
//! bytes meanwhile).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use controller::chain::Policy;
use controller::registry::FlowFilter;
use ubox_shm::event::{
    EventHeader, FlowEnd, StreamRef, RING_PUBLISH, SIDE_CLIENT, SIDE_SERVER, SNAPSHOT_LEN, VERDICT_DROP,
    VERDICT_MODIFIED,
};
use ubox_shm::{Arena, RingRef, SlotIdx, SlotPool};
use ustack::event::{self, EventTypeId};
use ustack::flow::{EndReason, FlowKey, FlowRecord, Side};

use crate::counters::{RuntimeDrop, WorkerCounters};
use crate::dpdk::mbuf::Mbuf;
use crate::dpdk::mempool::Mempool;
use crate::monitor::{Monitor, Needs, Report};
use crate::nfs::{filters_take, NfCount, NfTable, SubFilters, DEAD, LIVE};

/// Snapshots a worker keeps for flows assigned under older versions.
const KEEP_SNAPSHOTS: usize = 8;

/// Most NFs in one parallel group (checked when chains are applied).
pub const MAX_GROUP: usize = 8;

/// One chain, with its NFs resolved to slots.
#[derive(Debug)]
pub struct ChainPlan {
    pub name: String,
    pub filter: FlowFilter,
    /// Per stage, in order: the NF slots that see the packet (several for a
    /// parallel group) and each one's policy.
    pub stages: Vec<Vec<(usize, Policy)>>,
    /// The NFs' names, per stage (for `uboxctl chain show`).
    pub names: Vec<Vec<String>>,
}

/// The chains in force, as the workers see them.
#[derive(Debug, Default)]
pub struct ChainSnapshot {
    /// 1, 2, ... (0 = none applied yet).
    pub version: u32,
    pub origin: String,
    pub chains: Vec<ChainPlan>,
}

impl ChainSnapshot {
    fn select(&self, key: &FlowKey) -> Option<usize> {
        self.chains.iter().position(|c| c.filter.matches(key))
    }
}

/// Where the control thread posts new snapshots for the workers.
pub struct ChainBoard {
    current: Mutex<Arc<ChainSnapshot>>,
    version: AtomicU32,
}

impl Default for ChainBoard {
    fn default() -> Self {
        ChainBoard { current: Mutex::new(Arc::new(ChainSnapshot::default())), version: AtomicU32::new(0) }
    }
}

impl ChainBoard {
    pub fn publish(&self, snap: ChainSnapshot) {
        let v = snap.version;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        self.version.store(v, Ordering::Release);
    }

    pub fn version(&self) -> u32 {
        self.version.load(Ordering::Acquire)
    }

    pub fn load(&self) -> Arc<ChainSnapshot> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `Dispatcher::room` before the ring was looked at in this flush cycle.
const ROOM_UNKNOWN: u32 = u32::MAX;

/// Flow tag bit: the flow runs the TCP monitor (its chain wants it).
pub const MONITORED: u32 = 0x8000;
/// Flow tag bits naming the chain (index + 1; 0 = none).
pub const CHAIN_MASK: u32 = 0x7fff;

/// Tag of a flow that started before any chain was applied (never 0, which
/// the flow table gives a flow before the worker tags it).
const NO_CHAIN: u32 = 0xffff_0000;

/// Flow tag meaning "assigned under version v, no chain matched".
fn tag(version: u32, chain: Option<usize>) -> u32 {
    ((version & 0xffff) << 16) | chain.map_or(0, |c| (c as u32 + 1) & CHAIN_MASK)
}

/// A packet parked while NFs hold its events.
struct Parked {
    m: Mbuf,
    out: usize,
    snap: Arc<ChainSnapshot>,
    chain: usize,
    stage: usize,
    ty: EventTypeId,
    key: FlowKey,
    flow_id: u64,
    side: u8,
    /// Answers still due for the current stage.
    pending: u32,
    /// Why the packet will be dropped once `pending` reaches 0.
    doom: Option<RuntimeDrop>,
}

/// `Outstanding::group` of an event that carries no packet (an event an NF
/// published, delivered to its subscribers): nothing waits for its answer.
const NOTICE: u32 = u32::MAX;

/// Which parked packet an outstanding event slot belongs to (or
/// [`NOTICE`]), and to whom it was given.
#[derive(Clone, Copy)]
struct Outstanding {
    group: u32,
    nf: usize,
    gen: u32,
    policy: Policy,
    /// TSC when published, for the event round-trip time.
    sent: u64,
    /// For a `DATA_RDY` notice: the flow, side (1 client, 2 server; 0 for
    /// other events), ring and range end it pins.
    pin_flow: u64,
    pin_end: u64,
    pin_buf: u32,
    pin_side: u8,
}

/// What the dispatcher did with a packet.
pub enum Outcome {
    /// Send it out of `out` now.
    Forward(Mbuf, usize),
    /// Parked at an NF, or dropped (counted).
    Taken,
}

/// One worker's side of the event data path. Lives for the worker loop and
/// borrows the arena.
pub struct Dispatcher<'a> {
    w: usize,
    pool: SlotPool<'a>,
    to_nf: Vec<RingRef<'a>>,
    from_nf: Vec<RingRef<'a>>,
    table: Arc<NfTable>,
    board: Arc<ChainBoard>,
    counters: Arc<WorkerCounters>,
    snaps: Vec<Arc<ChainSnapshot>>,
    seen_version: u32,
    seen_deaths: u32,
    /// Parked packets (a slab) and its free list.
    groups: Vec<Option<Parked>>,
    free_groups: Vec<u32>,
    /// Per event slot: the event outstanding there, if this worker owns one.
    outstanding: Vec<Option<Outstanding>>,
    parked_count: usize,
    /// Outstanding [`NOTICE`] events.
    notices: usize,
    /// Per NF slot: its subscriptions with flow filters, cached for the
    /// generation it was read at.
    filters: Vec<(u32, SubFilters)>,
    /// `runtime.nf_backpressure`: pause RX while an NF's ring is nearly full.
    backpressure: bool,
    /// Ring room below which RX pauses.
    rx_room: u32,
    seq: u32,
    answers: Vec<u32>,
    /// Events for each NF not pushed yet: a loop's events go out in one
    /// ring burst per NF ([`flush`](Self::flush)), so the NF's core sees
    /// one index update per burst instead of one per packet.
    pending: Vec<Vec<u32>>,
    /// Per NF: ring room left for `pending` (`ROOM_UNKNOWN` until needed).
    room: Vec<u32>,
    room_known: bool,
    any_pending: bool,
    /// Events given and answered per NF since the last flush (added to the
    /// shared counters once per flush).
    given: Vec<u64>,
    /// TSC of the current loop iteration ([`tick`](Self::tick)), and the
    /// same instant in nanoseconds (the flow table's clock).
    now: u64,
    now_ns: u64,
    /// The TCP monitor's flows and stream rings.
    mon: Monitor,
    arena: &'a Arena,
    /// For frames the runtime makes (RSTs).
    mbufs: Arc<Mempool>,
    /// Flows that left the flow table with a chain (for `FLOW/END`), filled
    /// by the worker.
    pub ended: Vec<(FlowRecord, EndReason)>,
    /// The flow whose monitor reports wait for [`publish_reports`](Self::publish_reports).
    report_for: Option<(u32, FlowKey, u64)>,
    /// `DATA_RDY` announcements due at a flush (reused).
    due: Vec<(u64, u32, FlowKey, Report)>,
    /// Monitor needs per chain of the newest snapshot, as of (snapshot
    /// version, registrations seen).
    needs_cache: Vec<Needs>,
    needs_epoch: (u32, u32),
    /// The data region: its address here and its offset in the arena.
    data_start: usize,
    data_len: usize,
    data_off: u64,
}

impl<'a> Dispatcher<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: usize,
        arena: &'a Arena,
        table: Arc<NfTable>,
        board: Arc<ChainBoard>,
        counters: Arc<WorkerCounters>,
        backpressure: bool,
        rx_room: usize,
        mon: Monitor,
        mbufs: Arc<Mempool>,
    ) -> Result<Dispatcher<'a>, String> {
        let pool = arena.slot_pool().map_err(|e| format!("arena slot pool: {e}"))?;
        let n = table.slots.len();
        let mut to_nf = Vec::with_capacity(n);
        let mut from_nf = Vec::with_capacity(n);
        for k in 0..n {
            to_nf.push(arena.ring(table.to_nf_ring(k, w)).map_err(|e| format!("arena ring: {e}"))?);
            from_nf.push(arena.ring(table.from_nf_ring(k, w)).map_err(|e| format!("arena ring: {e}"))?);
        }
        let cap = pool.capacity() as usize;
        let region = arena.data_region();
        Ok(Dispatcher {
            data_start: arena.data_ptr() as usize,
            data_len: region.len as usize,
            data_off: region.offset,
            w,
            pool,
            to_nf,
            from_nf,
            table,
            board,
            counters,
            snaps: Vec::new(),
            seen_version: 0,
            seen_deaths: 0,
            groups: Vec::with_capacity(cap),
            free_groups: Vec::new(),
            outstanding: vec![None; cap],
            parked_count: 0,
            notices: 0,
            filters: (0..n).map(|_| (u32::MAX, SubFilters::default())).collect(),
            backpressure,
            rx_room: rx_room as u32,
            seq: 0,
            answers: vec![0; 64],
            pending: (0..n).map(|_| Vec::with_capacity(64)).collect(),
            room: vec![ROOM_UNKNOWN; n],
            room_known: false,
            any_pending: false,
            given: vec![0; n],
            now: 0,
            now_ns: 0,
            mon,
            arena,
            mbufs,
            ended: Vec::new(),
            report_for: None,
            due: Vec::new(),
            needs_cache: Vec::new(),
            needs_epoch: (u32::MAX, u32::MAX),
        })
    }

    /// Whether any chain is in force (else the worker skips tagging).
    #[inline]
    pub fn active(&self) -> bool {
        self.seen_version != 0
    }

    /// Pick up new chains and reclaim what dead NFs held. Once per loop.
    pub fn refresh(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        let v = self.board.version();
        if v != self.seen_version {
            let snap = self.board.load();
            self.seen_version = snap.version;
            self.snaps.push(snap);
            if self.snaps.len() > KEEP_SNAPSHOTS {
                self.snaps.remove(0);
            }
        }
        // NF deaths are rare: look at the slots only when one happened.
        let deaths = self.table.deaths.load(Ordering::Acquire);
        if deaths == self.seen_deaths {
            return;
        }
        for k in 0..self.table.slots.len() {
            let (dead, gen, done) = {
                let s = &self.table.slots[k];
                let gen = s.gen.load(Ordering::Acquire);
                (s.state.load(Ordering::Acquire) == DEAD, gen, s.reclaimed[self.w].load(Ordering::Acquire) >= gen)
            };
            if dead && !done {
                self.reclaim(k, gen, emit);
                self.table.slots[k].reclaimed[self.w].store(gen, Ordering::Release);
            }
        }
        self.seen_deaths = deaths;
    }

    /// The tag for a new flow: which chain (if any) its packets visit, and
    /// whether a TCP flow runs the monitor.
    pub fn assign(&self, key: &FlowKey) -> u32 {
        match self.snaps.last() {
            Some(s) => {
                let t = tag(s.version, s.select(key));
                if key.proto() == 6 && self.needs(t).any() {
                    t | MONITORED
                } else {
                    t
                }
            }
            // No chain applied yet: this flow never visits one.
            None => NO_CHAIN,
        }
    }

    /// For a TCP flow of a chain that did not need the monitor when it
    /// started: whether it does now (an NF subscribed to TCP events has
    /// registered since), as the new tag. The monitor then picks the flow up
    /// mid-stream. Cheap when nothing changed: two loads and a compare.
    #[inline]
    pub fn monitor_upgrade(&mut self, flow_tag: u32) -> Option<u32> {
        let latest = self.snaps.last()?.version;
        if flow_tag >> 16 != latest & 0xffff {
            return None; // flows of older chain versions keep what they had
        }
        let epoch = (latest, self.table.registrations.load(Ordering::Acquire));
        if epoch != self.needs_epoch {
            self.needs_epoch = epoch;
            let n = self.snaps.last().map_or(0, |s| s.chains.len());
            self.needs_cache = (0..n).map(|c| self.needs(tag(latest, Some(c)))).collect();
        }
        let chain = (flow_tag & CHAIN_MASK) as usize;
        let needs = self.needs_cache.get(chain.checked_sub(1)?)?;
        needs.any().then_some(flow_tag | MONITORED)
    }

    /// The snapshot and chain a flow tag names.
    fn chain_of(&self, flow_tag: u32) -> Option<(Arc<ChainSnapshot>, usize)> {
        let chain = (flow_tag & CHAIN_MASK) as usize;
        if chain == 0 {
            return None;
        }
        let ver = flow_tag >> 16;
        let snap = self.snaps.iter().rev().find(|s| s.version & 0xffff == ver)?;
        (chain <= snap.chains.len()).then(|| (Arc::clone(snap), chain - 1))
    }

    /// What the monitor must do for a flow of this tag: the union of what
    /// its chain's NFs subscribe to.
    fn needs(&self, flow_tag: u32) -> Needs {
        let mut n = Needs::default();
        let Some((snap, chain)) = self.chain_of(flow_tag) else { return n };
        for &(k, _) in snap.chains[chain].stages.iter().flatten() {
            let s = &self.table.slots[k];
            let subs = (s.nsubs.load(Ordering::Acquire) as usize).min(crate::nfs::MAX_SUBS);
            for t in s.subs[..subs].iter().filter_map(|t| EventTypeId::from_raw(t.load(Ordering::Relaxed))) {
                n.tcp |= event::FLOW_TCP_SYN.is_subtype_of(t) || t.is_subtype_of(event::FLOW_TCP);
                n.client |= event::DATA_RDY_CLIENT.is_subtype_of(t);
                n.server |= event::DATA_RDY_SERVER.is_subtype_of(t);
            }
        }
        n
    }

    /// Monitors flows running it: feeds the segment to the TCP monitor and
    /// publishes what it reports to the chain's NFs. False: drop the packet
    /// (the flow was terminated).
    #[allow(clippy::too_many_arguments)]
    pub fn monitor(
        &mut self,
        m: &Mbuf,
        l4: std::ops::Range<usize>,
        flow_tag: u32,
        key: &FlowKey,
        flow_id: u64,
        side: Side,
        dir: ustack::flow::Direction,
        out: usize,
    ) -> bool {
        if !self.mon.contains(flow_id) {
            let needs = self.needs(flow_tag);
            if !self.mon.open(flow_id, flow_tag, *key, needs) {
                self.counters.mon_full.add(1);
                return true;
            }
            self.counters.mon_flows.add(1);
            self.counters.mon_active.set(self.mon.len() as u64);
        }
        let forward = self.mon.segment(self.arena, flow_id, m.data(), l4, side, dir, out, self.now_ns);
        if self.mon.no_buffer > 0 {
            self.counters.mon_no_buffer.add(std::mem::take(&mut self.mon.no_buffer));
        }
        if self.mon.stopped > 0 {
            self.counters.mon_stopped.add(std::mem::take(&mut self.mon.stopped));
        }
        if self.mon.restarts > 0 {
            self.counters.mon_restarts.add(std::mem::take(&mut self.mon.restarts));
            self.counters.mon_retired.add(std::mem::take(&mut self.mon.retired_rings));
        }
        if !self.mon.reports.is_empty() {
            self.report_for = Some((flow_tag, *key, flow_id));
        }
        forward
    }

    /// Publishes what the monitor reported for the last segment. Called
    /// after the segment's own `PKT` event went out, so an NF sees the
    /// packet before the state change it caused (e.g. the last ACK before
    /// `FLOW/TCP/CLOSED`).
    pub fn publish_reports(&mut self) {
        let Some((flow_tag, key, flow_id)) = self.report_for.take() else { return };
        let mut reports = std::mem::take(&mut self.mon.reports);
        for r in reports.drain(..) {
            self.report(flow_tag, &key, flow_id, r);
        }
        self.mon.reports = reports;
    }

    /// Announces the bytes reassembled since the last flush: one
    /// `DATA_RDY` per flow and side for the whole burst.
    fn publish_due(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.mon.take_due(&mut due);
        for (flow_id, tag, key, r) in due.drain(..) {
            self.report(tag, &key, flow_id, r);
        }
        self.due = due;
    }

    /// Publishes one monitor report to the chain's NFs.
    fn report(&mut self, flow_tag: u32, key: &FlowKey, flow_id: u64, r: Report) {
        match r {
            Report::Tcp(ev, snap) => {
                let side = ev.side().map_or(SIDE_CLIENT, side_code);
                self.deliver(flow_tag, key, flow_id, side, ev.type_id(), &snap.to_bytes(), 0, &[], None);
            }
            Report::Data(d, snap) => {
                let ty = if d.side == Side::Client { event::DATA_RDY_CLIENT } else { event::DATA_RDY_SERVER };
                let payload = StreamRef {
                    start: d.start,
                    end: d.end,
                    ring_off: d.ring_off,
                    written_off: d.cell_off,
                    ring_len: d.ring_len,
                    stopped: d.stopped,
                }
                .to_bytes();
                let n = self.deliver(
                    flow_tag,
                    key,
                    flow_id,
                    side_code(d.side),
                    ty,
                    &snap.to_bytes(),
                    d.end,
                    &payload,
                    Some((d.side, d.buf, d.end)),
                );
                self.mon.pin(flow_id, d.side, d.buf, d.end, n);
                self.counters.mon_data_events.add(1);
            }
        }
    }

    /// Gives an event without a packet to every NF of the flow's chain that
    /// subscribes to `ty` (for this flow). Returns how many got it.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        flow_tag: u32,
        key: &FlowKey,
        flow_id: u64,
        side: u8,
        ty: EventTypeId,
        snapshot: &[u8; SNAPSHOT_LEN],
        frontier: u64,
        payload: &[u8],
        pin: Option<(Side, u32, u64)>,
    ) -> u32 {
        let Some((snap, chain)) = self.chain_of(flow_tag) else { return 0 };
        let h = EventHeader {
            type_id: ty.raw(),
            flow_id,
            pkt_off: 0,
            pkt_len: 0,
            publisher: 0,
            worker: self.w as u8,
            side,
            verdict: 0,
            seq: self.seq,
            snapshot: *snapshot,
            frontier,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut buf = [0u8; 256];
        let len = ubox_shm::event::EVENT_HEADER_LEN + payload.len();
        let Some(bytes) = buf.get_mut(..len) else { return 0 };
        let _ = h.write(bytes);
        bytes[ubox_shm::event::EVENT_HEADER_LEN..].copy_from_slice(payload);
        let bytes = &buf[..len];
        let mut n = 0;
        let mut seen = [usize::MAX; 16];
        for &(k, _) in snap.chains[chain].stages.iter().flatten() {
            // An NF in several stages gets the event once.
            if seen.contains(&k) {
                continue;
            }
            if let Some(free) = seen.iter_mut().find(|s| **s == usize::MAX) {
                *free = k;
            }
            let (live, gen) = {
                let s = &self.table.slots[k];
                (s.state.load(Ordering::Acquire) == LIVE, s.gen.load(Ordering::Acquire))
            };
            if !live || !self.wants(k, gen, ty, key) {
                continue;
            }
            if self.notice(k, gen, bytes, pin.map(|(s, b, e)| (flow_id, s, b, e))) {
                n += 1;
            }
        }
        n
    }

    /// Flows that left the flow table (`ended`): their last TCP events and
    /// `FLOW/END` to the chain's NFs that want them; monitor state goes once
    /// no NF reads its rings. Once per loop.
    pub fn flows_ended(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        // Their last bytes go out before their last events.
        self.publish_due();
        let mut ended = std::mem::take(&mut self.ended);
        for (rec, why) in ended.drain(..) {
            let mut last = Vec::new();
            let tcp = self.mon.end(rec.id, &mut |ev, snap| last.push((ev, snap)));
            for (ev, snap) in last {
                self.report(rec.tag, &rec.key, rec.id, Report::Tcp(ev, snap));
            }
            let (payload, tcp_end) = tcp.unwrap_or(([0; 2], 0));
            let (client, server) = rec.key.endpoints(rec.client_dir);
            let v6 = |a: std::net::IpAddr| match a {
                std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(a) => a.octets(),
            };
            let reason = match (tcp_end, why) {
                (r, _) if r != 0 => r,
                (_, EndReason::IdleTimeout) => ubox_shm::event::FLOW_END_IDLE,
                (_, EndReason::Evicted) => ubox_shm::event::FLOW_END_EVICTED,
                (_, EndReason::Shutdown) => ubox_shm::event::FLOW_END_SHUTDOWN,
            };
            let fe = FlowEnd {
                client_addr: v6(client.0),
                server_addr: v6(server.0),
                client_port: client.1,
                server_port: server.1,
                proto: rec.key.proto(),
                reason,
                _pad: [0; 2],
                client_packets: rec.client.packets,
                client_bytes: rec.client.bytes,
                server_packets: rec.server.packets,
                server_bytes: rec.server.bytes,
                client_payload: payload[0],
                server_payload: payload[1],
                first_seen: rec.first_seen,
                last_seen: rec.last_seen,
            };
            let zero = [0u8; SNAPSHOT_LEN];
            self.deliver(rec.tag, &rec.key, rec.id, SIDE_CLIENT, event::FLOW_END, &zero, 0, &fe.to_bytes(), None);
        }
        self.ended = ended;
        self.counters.mon_active.set(self.mon.len() as u64);
    }

    /// `FLOW/TCP/TERMINATE` from an NF: RSTs to both ends, later packets
    /// dropped.
    fn terminate(&mut self, flow_id: u64, emit: &mut impl FnMut(Mbuf, usize)) {
        self.publish_due();
        let mut events = Vec::new();
        let mut frames = Vec::new();
        if !self.mon.terminate(flow_id, self.now_ns, &mut |ev, snap| events.push((ev, snap)), &mut frames) {
            return; // not a monitored flow of this worker (or gone)
        }
        for (bytes, port) in frames {
            if let Some(m) = self.mbufs.alloc_frame(&bytes) {
                self.counters.mon_rsts.add(1);
                emit(m, port);
            }
        }
        if let Some((tag, key)) = self.mon.tag(flow_id) {
            for (ev, snap) in events {
                self.report(tag, &key, flow_id, Report::Tcp(ev, snap));
            }
        }
    }

    /// Start a packet of a tagged flow through its chain.
    pub fn start(&mut self, m: Mbuf, out: usize, flow_tag: u32, key: &FlowKey, flow_id: u64, side: Side) -> Outcome {
        let chain = (flow_tag & CHAIN_MASK) as usize;
        if chain == 0 {
            return Outcome::Forward(m, out);
        }
        let ver = flow_tag >> 16;
        let Some(snap) = self.snaps.iter().rev().find(|s| s.version & 0xffff == ver).cloned() else {
            // Assigned under a version this worker no longer keeps: forward.
            return Outcome::Forward(m, out);
        };
        let ty = match key.proto() {
            6 => ustack::event::PKT_TCP,
            17 => ustack::event::PKT_UDP,
            _ => ustack::event::PKT,
        };
        let side = if side == Side::Client { SIDE_CLIENT } else { SIDE_SERVER };
        let p =
            Parked { m, out, snap, chain: chain - 1, stage: 0, ty, key: *key, flow_id, side, pending: 0, doom: None };
        self.advance(p)
    }

    /// Move a packet to its next stage, or out.
    fn advance(&mut self, mut p: Parked) -> Outcome {
        loop {
            if let (Some(reason), 0) = (p.doom, p.pending) {
                self.counters.drop_runtime(reason);
                return Outcome::Taken;
            }
            let snap = Arc::clone(&p.snap);
            let Some(stage) = snap.chains[p.chain].stages.get(p.stage) else {
                return Outcome::Forward(p.m, p.out);
            };
            // Hand the packet to every NF of the stage that wants it.
            // No allocation per packet: a group has at most MAX_GROUP NFs.
            let mut given = [(0u32, 0usize, 0u32, Policy::FailClosed); MAX_GROUP];
            let mut n = 0;
            for &(k, policy) in stage.iter().take(MAX_GROUP) {
                let (live, gen) = {
                    let slot = &self.table.slots[k];
                    (slot.state.load(Ordering::Acquire) == LIVE, slot.gen.load(Ordering::Acquire))
                };
                if live && !self.wants(k, gen, p.ty, &p.key) {
                    continue; // not subscribed to this type (or flow): not its business
                }
                if !live {
                    if policy == Policy::FailClosed {
                        p.doom = Some(RuntimeDrop::NfFailClosed);
                        self.table.slots[k].count(NfCount::FailClosed, 1);
                    } else {
                        self.table.slots[k].count(NfCount::Skipped, 1);
                    }
                    continue;
                }
                match self.publish(&p, k) {
                    Ok(idx) => {
                        given[n] = (idx, k, gen, policy);
                        n += 1;
                    }
                    Err(reason) => {
                        self.counters.drop_runtime(reason);
                        let c = if reason == RuntimeDrop::NfRingFull { NfCount::RingFull } else { NfCount::NoSlot };
                        self.table.slots[k].count(c, 1);
                        if policy == Policy::FailClosed || reason == RuntimeDrop::NoEventSlot {
                            p.doom = Some(reason);
                        }
                    }
                }
            }
            if n == 0 {
                if p.doom.is_some() {
                    continue; // dropped at the top of the loop
                }
                p.stage += 1;
                continue;
            }
            p.pending = n as u32;
            let g = match self.free_groups.pop() {
                Some(g) => {
                    self.groups[g as usize] = Some(p);
                    g
                }
                None => {
                    self.groups.push(Some(p));
                    (self.groups.len() - 1) as u32
                }
            };
            let sent = self.now;
            for &(idx, nf, gen, policy) in &given[..n] {
                self.outstanding[idx as usize] = Some(Outstanding {
                    group: g,
                    nf,
                    gen,
                    policy,
                    sent,
                    pin_flow: 0,
                    pin_end: 0,
                    pin_buf: 0,
                    pin_side: 0,
                });
                self.given[nf] += 1;
            }
            self.parked_count += 1;
            return Outcome::Taken;
        }
    }

    /// Whether NF `k` (generation `gen`) subscribes to `ty` for flow `key`.
    #[inline]
    fn wants(&mut self, k: usize, gen: u32, ty: EventTypeId, key: &FlowKey) -> bool {
        let slot = &self.table.slots[k];
        if !slot.filtered.load(Ordering::Acquire) {
            return self.table.wants(k, ty);
        }
        if self.filters[k].0 != gen {
            let f = Arc::clone(&slot.filters.lock().unwrap_or_else(|e| e.into_inner()));
            self.filters[k] = (gen, f);
        }
        filters_take(&self.filters[k].1, ty, key)
    }

    /// With `runtime.nf_backpressure`: true while some live NF's ring has
    /// less room than one loop's RX bursts, so the worker leaves frames in the NIC's RX
    /// queue (where the port counts what it cannot hold) instead of
    /// dropping events. A dead NF's rings are drained by reclaim, so this
    /// never waits on it for longer than `runtime.nf_timeout_ms`.
    pub fn congested(&self) -> bool {
        if !self.backpressure || self.parked_count == 0 {
            return false;
        }
        self.to_nf.iter().enumerate().any(|(k, r)| {
            self.table.slots[k].state.load(Ordering::Relaxed) == LIVE
                && r.capacity() - r.len() < self.rx_room.min(r.capacity())
        })
    }

    /// Write an event for `p` into a fresh slot and push it to NF `k`.
    fn publish(&mut self, p: &Parked, k: usize) -> Result<u32, RuntimeDrop> {
        let idx = self.pool.alloc().ok_or(RuntimeDrop::NoEventSlot)?;
        let data = p.m.data();
        let h = EventHeader {
            type_id: p.ty.raw(),
            flow_id: p.flow_id,
            pkt_off: self.pkt_offset(data),
            pkt_len: data.len() as u32,
            publisher: 0,
            worker: self.w as u8,
            side: p.side,
            verdict: 0,
            seq: self.seq,
            snapshot: [0; ubox_shm::event::SNAPSHOT_LEN],
            frontier: 0,
        };
        self.seq = self.seq.wrapping_add(1);
        let written = self.pool.payload_mut(idx).ok().and_then(|b| h.write(b)).is_some();
        if !written || h.pkt_off == 0 {
            let _ = self.pool.release(idx);
            return Err(RuntimeDrop::NoEventSlot);
        }
        if !self.enqueue(k, idx.0) {
            let _ = self.pool.release(idx);
            return Err(RuntimeDrop::NfRingFull);
        }
        Ok(idx.0)
    }

    /// Queue `idx` for NF `k`'s ring if the ring has room for it (the
    /// worker is the ring's only producer, so room seen now stays).
    #[inline]
    fn enqueue(&mut self, k: usize, idx: u32) -> bool {
        if self.room[k] == ROOM_UNKNOWN || self.room[k] == 0 {
            let r = &self.to_nf[k];
            self.room[k] = (r.capacity() - r.len()).saturating_sub(self.pending[k].len() as u32);
            self.room_known = true;
        }
        if self.room[k] == 0 {
            return false;
        }
        self.room[k] -= 1;
        self.pending[k].push(idx);
        self.any_pending = true;
        true
    }

    /// The TSC of this loop iteration (for round-trip times) and the same
    /// instant in nanoseconds.
    #[inline]
    pub fn tick(&mut self, tsc: u64, ns: u64) {
        self.now = tsc;
        self.now_ns = ns;
    }

    /// Push every queued event to its NF's ring, one burst per NF, and add
    /// the per-NF counts to the shared counters. After each RX burst and
    /// each answer poll.
    pub fn flush(&mut self) {
        self.publish_due();
        if self.room_known {
            // Room is re-read from the ring next time: the NF frees entries.
            self.room.fill(ROOM_UNKNOWN);
            self.room_known = false;
        }
        if !self.any_pending {
            return;
        }
        for k in 0..self.pending.len() {
            if self.pending[k].is_empty() {
                continue;
            }
            let n = self.to_nf[k].push_burst(&self.pending[k]);
            // Always all of them (room was checked and only this worker
            // produces); anything left would go out with the next flush.
            self.pending[k].drain(..n);
            self.table.slots[k].events_in.fetch_add(self.given[k], Ordering::Relaxed);
            self.given[k] = 0;
        }
        self.any_pending = self.pending.iter().any(|p| !p.is_empty());
    }

    /// Arena offset of packet bytes (0 if they are not in the data region,
    /// which cannot happen for mbufs of the arena-backed pool).
    #[inline]
    fn pkt_offset(&self, data: &[u8]) -> u64 {
        let a = data.as_ptr() as usize;
        if a >= self.data_start && a + data.len() <= self.data_start + self.data_len {
            self.data_off + (a - self.data_start) as u64
        } else {
            0
        }
    }

    /// Act on the NFs' answers.
    pub fn poll(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        if self.parked_count == 0 && self.notices == 0 {
            return;
        }
        for k in 0..self.from_nf.len() {
            self.take_answers(k, emit);
        }
        self.flush();
    }

    fn take_answers(&mut self, k: usize, emit: &mut impl FnMut(Mbuf, usize)) {
        loop {
            let mut buf = std::mem::take(&mut self.answers);
            let n = self.from_nf[k].pop_burst(&mut buf);
            for &idx in &buf[..n] {
                self.answered(k, idx, emit);
            }
            self.answers = buf;
            if n == 0 {
                break;
            }
        }
    }

    fn answered(&mut self, k: usize, val: u32, emit: &mut impl FnMut(Mbuf, usize)) {
        if val & RING_PUBLISH != 0 {
            self.published(k, val & !RING_PUBLISH, emit);
            return;
        }
        let idx = val;
        let Some(o) = self.outstanding.get_mut(idx as usize).and_then(Option::take) else {
            self.counters.nf_stray_answers.add(1);
            return;
        };
        let verdict = self.pool.payload(SlotIdx(idx)).ok().and_then(EventHeader::read).map_or(0, |h| h.verdict);
        let _ = self.pool.release(SlotIdx(idx));
        let slot = &self.table.slots[k];
        slot.events_out.fetch_add(1, Ordering::Relaxed);
        self.counters.nf_rtt_ticks.add(self.now.saturating_sub(o.sent));
        self.counters.nf_answers.add(1);
        if o.group == NOTICE {
            self.notices -= 1;
            self.unpin(&o);
            return;
        }
        let doom = match verdict {
            VERDICT_DROP => {
                slot.count(NfCount::VerdictDrop, 1);
                Some(RuntimeDrop::NfVerdict)
            }
            VERDICT_MODIFIED if slot.modifies.load(Ordering::Relaxed) => {
                slot.count(NfCount::Modified, 1);
                // The NF rewrote the bytes in place; the checksums are ours
                // to fix. A frame it broke beyond parsing is dropped.
                let fixed = self
                    .groups
                    .get_mut(o.group as usize)
                    .and_then(Option::as_mut)
                    .map_or(true, |p| ustack::l3::refresh_checksums(p.m.data_mut()));
                (!fixed).then_some(RuntimeDrop::NfVerdict)
            }
            VERDICT_MODIFIED => {
                slot.count(NfCount::BadVerdict, 1);
                None
            }
            _ => None,
        };
        self.settle(o.group, doom, emit);
    }

    /// NF `k` published the event in slot `idx` (it allocated the slot and
    /// wrote header and payload): check it, copy it to every other live NF
    /// that subscribes to its type, and free the NF's slot.
    fn published(&mut self, k: usize, idx: u32, emit: &mut impl FnMut(Mbuf, usize)) {
        let slot = &self.table.slots[k];
        // A slot this worker gave out is not the NF's to publish; neither is
        // one beyond the pool.
        let ours = self.outstanding.get(idx as usize).map_or(true, |o| o.is_some());
        let header = if ours { None } else { self.pool.payload(SlotIdx(idx)).ok().and_then(EventHeader::read) };
        let ty = header.and_then(|h| EventTypeId::from_raw(h.type_id)).filter(|&t| slot.may_publish(t));
        let (Some(mut h), Some(ty)) = (header, ty) else {
            slot.count(NfCount::BadPublish, 1);
            if !ours {
                let _ = self.pool.release(SlotIdx(idx));
            }
            return;
        };
        slot.count(NfCount::Published, 1);
        if ty == event::FLOW_TCP_TERMINATE {
            // A request to the stack, not an event for other NFs.
            let _ = self.pool.release(SlotIdx(idx));
            self.terminate(h.flow_id, emit);
            return;
        }
        h.publisher = slot.nf_id.load(Ordering::Relaxed) as u16;
        h.worker = self.w as u8;
        h.pkt_off = 0;
        h.pkt_len = 0;
        h.verdict = 0;
        let mut bytes = [0u8; 512];
        let n = self.pool.payload(SlotIdx(idx)).map_or(0, |b| {
            let n = b.len().min(bytes.len());
            bytes[..n].copy_from_slice(&b[..n]);
            n
        });
        let _ = self.pool.release(SlotIdx(idx));
        let _ = h.write(&mut bytes[..n]);
        for j in 0..self.to_nf.len() {
            let s = &self.table.slots[j];
            if j == k || s.state.load(Ordering::Acquire) != LIVE || !self.table.wants(j, ty) {
                continue;
            }
            let gen = s.gen.load(Ordering::Acquire);
            self.notice(j, gen, &bytes[..n], None);
        }
    }

    /// Gives NF `k` (generation `gen`) a copy of `bytes` (header and
    /// payload) as an event nothing waits on; `pin` = (flow, side, ring,
    /// end) of the `DATA_RDY` range it pins. Counted on the NF when it
    /// cannot.
    fn notice(&mut self, k: usize, gen: u32, bytes: &[u8], pin: Option<(u64, Side, u32, u64)>) -> bool {
        let Some(idx) = self.pool.alloc() else {
            self.table.slots[k].count(NfCount::NoSlot, 1);
            return false;
        };
        let written =
            self.pool.payload_mut(idx).ok().and_then(|b| b.get_mut(..bytes.len())).map(|b| b.copy_from_slice(bytes));
        if written.is_none() || !self.enqueue(k, idx.0) {
            let _ = self.pool.release(idx);
            let c = if written.is_none() { NfCount::NoSlot } else { NfCount::RingFull };
            self.table.slots[k].count(c, 1);
            return false;
        }
        let (pin_flow, pin_side, pin_buf, pin_end) =
            pin.map_or((0, 0, 0, 0), |(f, s, b, e)| (f, side_code(s) + 1, b, e));
        self.outstanding[idx.0 as usize] = Some(Outstanding {
            group: NOTICE,
            nf: k,
            gen,
            policy: Policy::FailOpen,
            sent: self.now,
            pin_flow,
            pin_end,
            pin_buf,
            pin_side,
        });
        self.given[k] += 1;
        self.notices += 1;
        true
    }

    /// One answer (or its absence) for a parked packet's current stage.
    fn settle(&mut self, g: u32, doom: Option<RuntimeDrop>, emit: &mut impl FnMut(Mbuf, usize)) {
        let Some(p) = self.groups.get_mut(g as usize).and_then(Option::as_mut) else { return };
        p.pending -= 1;
        if p.doom.is_none() {
            p.doom = doom;
        }
        if p.pending > 0 {
            return;
        }
        let mut p = self.groups[g as usize].take().expect("checked");
        self.free_groups.push(g);
        self.parked_count -= 1;
        if p.doom.is_none() {
            p.stage += 1;
        }
        if let Outcome::Forward(m, out) = self.advance(p) {
            emit(m, out);
        }
    }

    /// An NF died: settle everything it held on this worker.
    fn reclaim(&mut self, k: usize, gen: u32, emit: &mut impl FnMut(Mbuf, usize)) {
        // Answers it gave before dying still count.
        self.take_answers(k, emit);
        // Events it never took (the runtime is the ring's only consumer now),
        // and events it took but never answered.
        while let Some(idx) = self.to_nf[k].pop() {
            self.unanswered(idx, emit);
        }
        // The NF may also have died between allocating a slot to publish and
        // pushing it: such a slot is lost to the pool until restart (the
        // runtime cannot tell it from a slot another NF is filling).
        let stuck: Vec<u32> = self
            .outstanding
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_some_and(|o| o.nf == k && o.gen <= gen))
            .map(|(i, _)| i as u32)
            .collect();
        for idx in stuck {
            self.unanswered(idx, emit);
        }
    }

    fn unanswered(&mut self, idx: u32, emit: &mut impl FnMut(Mbuf, usize)) {
        let Some(o) = self.outstanding.get_mut(idx as usize).and_then(Option::take) else { return };
        let _ = self.pool.release(SlotIdx(idx));
        self.counters.nf_reclaimed.add(1);
        self.table.slots[o.nf].count(NfCount::Reclaimed, 1);
        if o.group == NOTICE {
            self.notices -= 1;
            self.unpin(&o);
            return;
        }
        let doom = (o.policy == Policy::FailClosed).then_some(RuntimeDrop::NfFailClosed);
        self.settle(o.group, doom, emit);
    }

    /// A `DATA_RDY` notice was answered (or reclaimed): unpin its range.
    fn unpin(&mut self, o: &Outstanding) {
        let side = match o.pin_side {
            1 => Side::Client,
            2 => Side::Server,
            _ => return,
        };
        self.mon.unpin(o.pin_flow, side, o.pin_buf, o.pin_end);
    }

    /// Flows the monitor follows now.
    pub fn monitored(&self) -> usize {
        self.mon.len()
    }

    /// Shutdown: free every parked packet and its slots.
    pub fn drain(&mut self) {
        for i in 0..self.outstanding.len() {
            if self.outstanding[i].take().is_some() {
                let _ = self.pool.release(SlotIdx(i as u32));
            }
        }
        self.groups.clear();
        self.free_groups.clear();
        self.parked_count = 0;
        self.notices = 0;
        self.pending.iter_mut().for_each(Vec::clear);
        self.any_pending = false;
    }
}

fn side_code(s: Side) -> u8 {
    match s {
        Side::Client => SIDE_CLIENT,
        Side::Server => SIDE_SERVER,
    }
}
