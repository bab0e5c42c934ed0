//! Chains on the data path: which NFs a flow's packets visit, publishing
//! them as events on the NFs' arena channels, and acting on the answers.
//!
//! The control thread compiles a chain file into a [`ChainSnapshot`] and
//! posts it on the [`ChainBoard`]; each worker picks new snapshots up between
//! bursts. A flow is assigned a chain when it starts (its flow-table tag
//! remembers the snapshot version and chain), so applying new chains affects
//! new flows while old ones keep theirs.
//!
//! # The event path
//! Per packet and stage: for each NF of the stage that is alive and wants
//! the packet's type (and flow), the worker queues a 32-byte [`Desc`] on
//! that NF's channel, carrying everything a `PKT` event needs (type, flow,
//! side, the packet's arena offset and length) and a **cookie**: the index
//! of the packet's entry in this worker's in-flight slab, with an 8-bit tag
//! that changes each time the entry is reused. The mbuf stays parked in the
//! slab. Queued descriptors go out in one ring burst per NF when the worker
//! flushes (after each RX burst and each answer poll). The NF answers with
//! an 8-byte [`Answer`] (cookie, verdict) on its answer ring; the worker
//! finds the entry by the cookie, checks the tag and that the answering NF
//! is a member of the packet's current stage with an answer still due
//! (member bits), and moves the packet on. No slot, no shared refcount, no
//! cross-process compare-and-swap on the way: per event, the descriptor's
//! half cache line out and an eighth of a line back, plus a few index lines
//! per burst (see `ubox_shm::ring`).
//!
//! Events that carry more than a packet reference (monitor events with a
//! snapshot or a `DATA_RDY` range, `FLOW/END`, events NFs publish) put the
//! full header and payload in an arena slot named by the descriptor
//! ([`DESC_SLOT`]); the worker frees the slot when the NF answers.
//!
//! # Policies and faults
//! An absent or dead NF gets the stage's policy: `fail-open` skips it,
//! `fail-closed` drops the packet. An event that cannot be delivered (ring
//! full without backpressure, no event slot) is *skipped* and counted
//! apart from packet drops; the stage's policy decides the packet's fate.
//! A `DATA_RDY` is the exception: skipping it for a `fail-closed` NF would
//! let its bytes pass unseen, so it goes to nobody until that NF has room,
//! and is announced again later (see `deliver`).
//! With `runtime.nf_backpressure` nothing is skipped for a full ring: the
//! descriptor waits in the worker's queue and RX pauses until the NF
//! catches up. When an NF dies, the worker reclaims everything it held
//! (answers still in its ring, descriptors it never took, every in-flight
//! entry with its answer still due) and acknowledges, so the slot can be
//! reused by the NF's next run.
//!
//! A parallel group's NFs get the packet at once, each through a descriptor
//! of its own pointing at the same packet bytes (zero copy) under the same
//! cookie; the entry's member bits track who still owes an answer, and the
//! packet moves on when none does. Any Drop answer, or a `fail-closed`
//! member that is absent or died, drops it, but only after every member
//! that holds it has answered (they read its bytes meanwhile).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use controller::api::RttHistogram;
use controller::chain::Policy;
use controller::registry::FlowFilter;
use ubox_shm::event::{
    Answer, Desc, EventHeader, FlowDest, FlowEnd, FlowReq, FlowStart, StreamRef, ANSWER_PUBLISH, ANSWER_VERDICT,
    DESC_SLOT, EVENT_HEADER_LEN, SIDE_CLIENT, SIDE_SERVER, SNAPSHOT_LEN, VERDICT_DROP, VERDICT_MODIFIED,
};
use ubox_shm::{Arena, Bell, Consumer, Producer, PubReader, SlotIdx, SlotPool};
use ustack::event::{self, EventTypeId};
use ustack::flow::{EndReason, FlowKey, FlowRecord, Side};

use crate::counters::{EventSkip, RuntimeDrop, WorkerCounters};
use crate::dpdk::mbuf::Mbuf;
use crate::dpdk::mempool::Mempool;
use crate::monitor::{Monitor, Needs, Report, Seg};
use crate::nfs::{filters_take, NfCount, NfTable, SubFilters, LIVE};

/// Snapshots a worker keeps for flows assigned under older versions (more
/// while parked packets still use them).
const KEEP_SNAPSHOTS: usize = 8;

/// Most NFs in one parallel group (checked when chains are applied).
pub const MAX_GROUP: usize = 8;

/// Answers popped from one NF per ring read.
const ANSWER_BURST: usize = 256;

/// In-flight entries at most (cookie index bits).
const MAX_INFLIGHT: usize = 1 << 24;

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
    /// A flow the monitor cannot serve is dropped (else passed unseen).
    pub unmonitored_drop: bool,
}

/// What [`Dispatcher::monitor`] says of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorVerdict {
    /// On through the chain.
    Forward,
    /// Drop: an NF terminated the flow.
    Terminated,
    /// Drop: the monitor cannot serve the flow (a side it must reassemble
    /// found no ring) and its chain says `on_unmonitored = "drop"`; the flow
    /// is terminated at [`Dispatcher::terminate_refused`].
    Unmonitored,
    /// Drop: no room to monitor a new flow (`max_flows`, every flow live and
    /// established) under `on_unmonitored = "drop"`; its sender gets a RST
    /// ([`crate::monitor::reset_reply`]).
    Refused,
    /// Drop, no RST: a strict flow's segment the monitor could not keep
    /// (holes full); its sender will send it again.
    Unkept,
    /// Dropped: a strict flow's segment with no room behind slow readers
    /// (see `monitor::Seg::Full`).
    RingFull,
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

/// The `PKT` types a packet can have, as bits of [`NfView::pkt`].
const PKT_TYPES: [EventTypeId; 3] = [event::PKT, event::PKT_TCP, event::PKT_UDP];

fn pkt_kind(proto: u8) -> u8 {
    match proto {
        6 => 1,
        17 => 2,
        _ => 0,
    }
}

/// What a worker needs to know about an NF slot on the packet path, read
/// from the shared table only when a registration or death happened.
#[derive(Clone, Copy, Debug, Default)]
struct NfView {
    live: bool,
    gen: u32,
    /// Some subscription has a flow filter.
    filtered: bool,
    /// Bit `i`: subscribes to `PKT_TYPES[i]` (or a supertype).
    pkt: u8,
}

/// A packet parked while NFs hold its events. Small, so that an in-flight
/// entry is one cache line (its flow key, needed only for NFs with flow
/// filters, sits in `Dispatcher::keys`).
struct Parked {
    m: Mbuf,
    flow_id: u64,
    /// TSC when its current stage was published.
    sent: u64,
    /// Index into the worker's snapshots.
    snap: u32,
    /// Its current stage in the snapshot's flat stage table, and the end
    /// of its chain's stages there.
    at: u32,
    end: u32,
    out: u8,
    side: u8,
    /// Index into [`PKT_TYPES`].
    kind: u8,
    /// Members of the current stage whose answer is still due.
    pending: u8,
    /// Its flow key is in `Dispatcher::keys` (some NF had a filter when
    /// it started).
    keyed: bool,
    /// Why the packet will be dropped once `pending` reaches 0.
    doom: Option<RuntimeDrop>,
    /// A capture wants it when it leaves its chain (`uboxctl capture`).
    cap: bool,
    /// Its route's index in the snapshot (the chain, resolved to instances).
    chain: u16,
    /// The NF slot + 1 that decided its fate so far (0: none): the first
    /// to doom it, else the last to pass it.
    decider: u16,
}

/// An event without a packet that nothing waits for (a monitor event, an
/// event another NF published): its slot, and what it pins.
struct Notice {
    nf: usize,
    slot: u32,
    sent: u64,
    /// For a `DATA_RDY`: the flow, side, ring and range end it pins.
    pin: Option<(u64, Side, u32, u64)>,
}

enum Inflight {
    Free,
    Packet(Parked),
    Notice(Notice),
}

/// An in-flight entry on a cache line of its own: an answer touches one
/// line of the slab, and answers for different entries never share one.
#[repr(align(64))]
struct Entry(Inflight);

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// What the dispatcher did with a packet.
pub enum Outcome {
    /// Send it out of `out` now.
    Forward(Mbuf, usize),
    /// Parked at an NF, or dropped (counted).
    Taken,
}

/// One stage as the packet path reads it: its NF slots (a parallel group
/// has several) and which of them are `fail-closed`, in one small value.
#[derive(Clone, Copy, Debug, Default)]
struct Stage {
    n: u8,
    /// Bit `i`: member `i` is fail-closed.
    closed: u8,
    nfs: [u16; MAX_GROUP],
}

impl Stage {
    /// The member that is NF `k` and still owes an answer (bit set in
    /// `pending`).
    #[inline]
    fn member(&self, k: usize, pending: u8) -> Option<usize> {
        (0..self.n as usize).find(|&i| self.nfs[i] as usize == k && pending & (1 << i) != 0)
    }

    #[inline]
    fn closed(&self, i: usize) -> bool {
        self.closed & (1 << i) != 0
    }
}

/// A snapshot of the chains, its stages flattened for the packet path
/// (one table, no pointer chasing per packet), and how many parked packets
/// still use it.
struct Snap {
    snap: Arc<ChainSnapshot>,
    /// `snap.version` (read per packet: no pointer to chase).
    version: u32,
    /// Every chain's stages back to back.
    stages: Vec<Stage>,
    /// Route `r`'s stages are `stages[bounds[r].0..bounds[r].1]`.
    bounds: Vec<(u32, u32)>,
    /// Route `c` is chain `c` with the NFs it names (the slots of their
    /// first instances); the routes after those are the chains with some
    /// member resolved to another instance, made as flows are pinned to
    /// them ([`Snap::route`]). A flow's tag names its route.
    routes: Vec<Route>,
    parked: u32,
    /// Flows in the flow table tagged with this version and a chain: the
    /// snapshot is kept while there are any (their packets still visit it).
    flows: u32,
}

impl Snap {
    fn new(snap: Arc<ChainSnapshot>) -> Snap {
        let mut stages = Vec::new();
        let mut bounds = Vec::with_capacity(snap.chains.len());
        let mut routes = Vec::with_capacity(snap.chains.len());
        for (ci, c) in snap.chains.iter().enumerate() {
            let start = stages.len() as u32;
            let mut members = Vec::new();
            for st in &c.stages {
                let mut s = Stage::default();
                for &(k, policy) in st.iter().take(MAX_GROUP) {
                    let i = s.n as usize;
                    s.nfs[i] = k as u16;
                    if policy == Policy::FailClosed {
                        s.closed |= 1 << i;
                    }
                    s.n += 1;
                    members.push((k as u16, policy == Policy::FailClosed));
                }
                stages.push(s);
            }
            bounds.push((start, stages.len() as u32));
            routes.push(Route::new(ci as u32, members));
        }
        Snap { version: snap.version, snap, stages, bounds, routes, parked: 0, flows: 0 }
    }

    /// The route of chain `chain` whose members are the slots `picks` (in
    /// the order of the chain's route's members), made if there is none
    /// yet; `None` when the snapshot has as many routes as a tag can name.
    fn route(&mut self, chain: usize, picks: &[u16]) -> Option<usize> {
        if let Some(r) = self.routes.iter().position(|r| {
            r.chain as usize == chain
                && r.members.len() == picks.len()
                && r.members.iter().zip(picks).all(|(m, p)| m.0 == *p)
        }) {
            return Some(r);
        }
        if self.routes.len() >= CHAIN_MASK as usize || self.routes.get(chain)?.members.len() != picks.len() {
            return None;
        }
        let (at, end) = *self.bounds.get(chain)?;
        let start = self.stages.len() as u32;
        let mut members = Vec::with_capacity(picks.len());
        let mut i = 0;
        for si in at..end {
            let mut st = self.stages[si as usize];
            for j in 0..st.n as usize {
                st.nfs[j] = *picks.get(i)?;
                members.push((st.nfs[j], st.closed(j)));
                i += 1;
            }
            self.stages.push(st);
        }
        self.bounds.push((start, self.stages.len() as u32));
        self.routes.push(Route::new(chain as u32, members));
        Some(self.routes.len() - 1)
    }
}

/// One way through a chain: its members resolved to NF slots (instances).
struct Route {
    chain: u32,
    /// Every member in stage order (one in several stages, several times),
    /// and whether it is fail-closed there.
    members: Vec<(u16, bool)>,
    /// Its distinct slots: a flow of this route is pinned to each.
    slots: Vec<u16>,
}

impl Route {
    fn new(chain: u32, members: Vec<(u16, bool)>) -> Route {
        let mut slots: Vec<u16> = Vec::with_capacity(members.len());
        for &(k, _) in &members {
            if !slots.contains(&k) {
                slots.push(k);
            }
        }
        Route { chain, members, slots }
    }
}

/// The worker's end of one NF's channel, and what waits to go on it.
struct Link<'a> {
    events: Producer<'a, Desc>,
    answers: Consumer<'a, Answer>,
    /// Copies out what the NF publishes (in its channel's publish area).
    pubs: PubReader<'a>,
    /// Descriptors queued for the next flush.
    pending: Vec<Desc>,
    /// Events queued and answers taken since the shared counters were last
    /// updated.
    given: u64,
    answered: u64,
    /// The NF's doorbell (its first channel's), rung after each push
    /// (`runtime.nf_wakeup = "futex"`).
    bell: Option<Bell<'a>>,
    /// In the dispatcher's `dirty` list (something to push or count).
    dirty: bool,
}

impl Link<'_> {
    /// Queue `d` if the ring will have room for it at the flush (the
    /// worker is the ring's only producer, so room seen now stays), or
    /// always with `force` (backpressure: the flush leaves what does not
    /// fit queued, and RX pauses meanwhile).
    #[inline]
    fn queue(&mut self, d: Desc, force: bool) -> bool {
        if !self.has_room(force) {
            return false;
        }
        self.pending.push(d);
        self.given += 1;
        true
    }

    /// Whether [`queue`](Self::queue) would take one more descriptor now.
    #[inline]
    fn has_room(&mut self, force: bool) -> bool {
        let want = self.pending.len() as u32 + 1;
        force || self.events.room(want) >= want
    }
}

/// Marks link `k` as having work for the next flush.
#[inline]
fn touch(links: &mut [Link<'_>], dirty: &mut Vec<u16>, k: usize) {
    let l = &mut links[k];
    if !l.dirty {
        l.dirty = true;
        dirty.push(k as u16);
    }
}

/// One worker's side of the event data path. Lives for the worker loop and
/// borrows the arena.
pub struct Dispatcher<'a> {
    w: usize,
    pool: SlotPool<'a>,
    links: Vec<Link<'a>>,
    /// Links with descriptors queued or counts to add since the last flush.
    dirty: Vec<u16>,
    nfv: Vec<NfView>,
    /// The NF slots live now (whose answer rings are polled).
    live: Vec<usize>,
    table: Arc<NfTable>,
    board: Arc<ChainBoard>,
    counters: Arc<WorkerCounters>,
    /// Snapshots by stable index (`None`: evicted, reusable); the newest,
    /// and its version.
    snaps: Vec<Option<Snap>>,
    newest: Option<usize>,
    newest_version: u32,
    /// Some chain of the newest snapshot needs the monitor now (as of
    /// `needs_epoch`): only then may a flow be upgraded.
    needs_any: bool,
    seen_version: u32,
    /// Registrations and deaths as of the last `nfv` refresh.
    seen_epoch: (u32, u32),
    /// Per NF slot that chains name (an NF's first instance): its live
    /// instances that take new flows, and one live that is draining (new
    /// flows go there only when no other is live). Read at `refresh`.
    groups: Vec<Vec<u16>>,
    spare: Vec<Option<u16>>,
    /// Some NF runs as several instances (else a flow's route is its chain).
    scaled: bool,
    /// Per NF slot: flows of this worker pinned to it now (mirrored in
    /// `NfSlot::pinned`).
    pins: Vec<u64>,
    /// Turns among equally loaded instances.
    rr: usize,
    /// Parked packets and outstanding notices, by cookie index; the tag of
    /// each entry; free entries.
    inflight: Vec<Entry>,
    tags: Vec<u8>,
    /// Flow keys of parked packets, by entry, written only while some NF
    /// has a flow filter (`any_filtered`).
    keys: Vec<FlowKey>,
    any_filtered: bool,
    free: Vec<u32>,
    parked_count: usize,
    notices: usize,
    /// What an NF published, copied out of its publish area (reused).
    record: Vec<u8>,
    /// Per NF slot: its subscriptions with flow filters, cached for the
    /// generation it was read at.
    filters: Vec<(u32, SubFilters)>,
    /// `runtime.nf_backpressure`: pause RX while an NF's ring is nearly full.
    backpressure: bool,
    /// Ring room below which RX pauses.
    rx_room: u32,
    answers: Vec<Answer>,
    /// Answers and their summed round trips since the last flush, and
    /// those round trips by histogram bucket (nanoseconds per TSC tick in
    /// 32.32 fixed point, for the bucket).
    answers_acc: u64,
    rtt_acc: u64,
    rtt_hist: [u64; RttHistogram::SLOTS],
    ns_per_tick_q32: u64,
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
    /// Flows refused a stream ring under `on_unmonitored = "drop"`, to
    /// terminate at [`terminate_refused`](Self::terminate_refused).
    refused: Vec<u64>,
    /// Flows the worker must end in its flow table now: evicted from the
    /// monitor to make room, or closed and done lingering.
    pub to_end: Vec<(FlowKey, EndReason)>,
    /// Reused by [`closed_due`](Self::closed_due).
    closed: Vec<FlowKey>,
    /// The flow whose monitor reports wait for [`publish_reports`](Self::publish_reports).
    report_for: Option<(u32, FlowKey, u64)>,
    /// `DATA_RDY` announcements due at a flush (reused).
    due: Vec<(u64, u32, FlowKey, Report)>,
    /// Monitor needs per chain of the newest snapshot, as of (snapshot
    /// version, registrations seen).
    needs_cache: Vec<Needs>,
    needs_epoch: (u32, u32),
    /// The TCP splicer, when configured.
    pub splice: Option<SpliceSide>,
    /// Where captures are armed (`uboxctl capture`), the generation last
    /// seen there, and the capture armed then, if any.
    capture: Arc<crate::capture::CaptureBoard>,
    cap_gen: u32,
    cap: Option<Arc<crate::capture::Armed>>,
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
        wake: bool,
        rx_room: usize,
        mon: Monitor,
        mbufs: Arc<Mempool>,
    ) -> Result<Dispatcher<'a>, String> {
        let pool = arena.slot_pool().map_err(|e| format!("arena slot pool: {e}"))?;
        let n = table.slots.len();
        let mut links = Vec::with_capacity(n);
        for k in 0..n {
            let ch = arena.channel(table.channel(k, w)).map_err(|e| format!("arena channel: {e}"))?;
            let bell = if wake {
                Some(arena.channel(table.channel(k, 0)).map_err(|e| format!("arena channel: {e}"))?.desc.bell())
            } else {
                None
            };
            links.push(Link {
                events: ch.desc.producer(),
                answers: ch.answer.consumer(),
                pubs: ch.publish.reader(),
                pending: Vec::with_capacity(ch.desc.capacity() as usize),
                given: 0,
                answered: 0,
                bell,
                dirty: false,
            });
        }
        let cap = pool.capacity() as usize;
        let payload = pool.payload_size();
        let region = arena.data_region();
        let mut mon = mon;
        if backpressure {
            // A frame's TCP payload fits in one mbuf's data room (the
            // worker does not reassemble chained mbufs), under 2 KiB.
            mon.hold_for_readers(rx_room as u64 * 2048);
        }
        Ok(Dispatcher {
            data_start: arena.data_ptr() as usize,
            data_len: region.len as usize,
            data_off: region.offset,
            w,
            pool,
            links,
            dirty: Vec::with_capacity(n),
            nfv: vec![NfView::default(); n],
            live: Vec::with_capacity(n),
            table,
            board,
            counters,
            snaps: Vec::new(),
            newest: None,
            newest_version: 0,
            needs_any: false,
            seen_version: 0,
            seen_epoch: (u32::MAX, u32::MAX),
            groups: vec![Vec::new(); n],
            spare: vec![None; n],
            scaled: false,
            pins: vec![0; n],
            rr: 0,
            inflight: Vec::with_capacity(cap),
            tags: Vec::with_capacity(cap),
            keys: Vec::new(),
            any_filtered: false,
            free: Vec::new(),
            parked_count: 0,
            notices: 0,
            record: vec![0; payload],
            filters: (0..n).map(|_| (u32::MAX, SubFilters::default())).collect(),
            backpressure,
            rx_room: rx_room as u32,
            answers: vec![Answer::default(); ANSWER_BURST],
            answers_acc: 0,
            rtt_acc: 0,
            rtt_hist: [0; RttHistogram::SLOTS],
            ns_per_tick_q32: ((1_000_000_000u128 << 32) / crate::dpdk::eal::tsc_hz().max(1) as u128) as u64,
            now: 0,
            now_ns: 0,
            mon,
            arena,
            mbufs,
            ended: Vec::new(),
            to_end: Vec::new(),
            closed: Vec::new(),
            refused: Vec::new(),
            report_for: None,
            due: Vec::new(),
            needs_cache: Vec::new(),
            needs_epoch: (u32::MAX, u32::MAX),
            splice: None,
            capture: Arc::default(),
            cap_gen: 0,
            cap: None,
        })
    }

    /// Whether any chain is in force (else the worker skips tagging).
    #[inline]
    pub fn active(&self) -> bool {
        self.seen_version != 0
    }

    /// Where this worker looks for captures (`uboxctl capture`).
    pub fn set_capture(&mut self, board: Arc<crate::capture::CaptureBoard>) {
        self.capture = board;
    }

    /// A capture is armed (the worker then offers it packets without a chain).
    #[inline(always)]
    pub fn capturing(&self) -> bool {
        self.cap.is_some()
    }

    /// Offers a packet forwarded without a chain to the armed capture.
    #[cold]
    pub fn capture_unchained(&self, data: &[u8], key: &FlowKey, flow_id: u64) {
        if let Some(a) = &self.cap {
            if let crate::capture::Target::Flow(m) = &a.target {
                if m.matches(key) {
                    a.offer(data, self.now_ns, self.w, flow_id, None, crate::capture::Decider::Wire, None);
                }
            }
        }
    }

    /// Whether the armed capture takes the packets of route `r` of
    /// snapshot `si` with flow `key`. A route is its chain with some
    /// members resolved to other instances: `--chain` and `--nf` (the NF's
    /// name, as the chain's plan names it) match on the chain.
    #[cold]
    fn capture_wants(&self, si: usize, r: usize, key: &FlowKey) -> bool {
        let (Some(a), Some(s)) = (&self.cap, self.snaps[si].as_ref()) else { return false };
        let Some(plan) = s.routes.get(r).and_then(|r| s.snap.chains.get(r.chain as usize)) else { return false };
        match &a.target {
            crate::capture::Target::Chain(name) => plan.name == *name,
            crate::capture::Target::Nf(k) => plan.stages.iter().flatten().any(|&(slot, _)| slot == *k),
            crate::capture::Target::Flow(m) => m.matches(key),
        }
    }

    /// Offers a packet of route `r` of snapshot `si` whose fate is known.
    #[cold]
    fn capture_leaving(&self, data: &[u8], flow_id: u64, si: usize, r: usize, doom: Option<RuntimeDrop>, d: u16) {
        if let (Some(a), Some(s)) = (&self.cap, self.snaps[si].as_ref()) {
            let decider = crate::capture::Decider::of_parked(d);
            let c = s.routes.get(r).map_or(r, |r| r.chain as usize);
            a.offer(data, self.now_ns, self.w, flow_id, doom, decider, Some((Arc::clone(&s.snap), c)));
        }
    }

    /// Pick up new chains, NF registrations and deaths, and reclaim what
    /// dead NFs held. Once per loop; cheap when nothing changed.
    pub fn refresh(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        let g = self.capture.gen();
        if g != self.cap_gen {
            self.cap_gen = g;
            self.cap = self.capture.current();
        }
        let v = self.board.version();
        if v != self.seen_version {
            let snap = self.board.load();
            self.seen_version = snap.version;
            self.add_snapshot(snap);
        }
        let epoch = (self.table.registrations.load(Ordering::Acquire), self.table.deaths.load(Ordering::Acquire));
        if epoch == self.seen_epoch {
            return;
        }
        let deaths_changed = epoch.1 != self.seen_epoch.1;
        self.seen_epoch = epoch;
        let table = Arc::clone(&self.table);
        for k in 0..self.nfv.len() {
            let s = &table.slots[k];
            let gen = s.gen.load(Ordering::Acquire);
            let live = s.state.load(Ordering::Acquire) == LIVE && !s.faulty.load(Ordering::Acquire);
            if live && gen != self.nfv[k].gen {
                // A new registration: its channels are new memory (the
                // control thread renewed them before publishing `gen`),
                // whose indices start at 0.
                self.relink(k);
            }
            let mut pkt = 0;
            for (i, &t) in PKT_TYPES.iter().enumerate() {
                if live && self.table.wants(k, t) {
                    pkt |= 1 << i;
                }
            }
            self.nfv[k] = NfView { live, gen, filtered: s.filtered.load(Ordering::Acquire), pkt };
        }
        self.live = (0..self.nfv.len()).filter(|&k| self.nfv[k].live).collect();
        // Which instances take new flows.
        let n = self.nfv.len();
        self.groups.iter_mut().for_each(Vec::clear);
        self.spare.iter_mut().for_each(|s| *s = None);
        self.scaled = false;
        for k in 0..n {
            let s = &table.slots[k];
            let g = (s.group.load(Ordering::Acquire) as usize).min(n - 1);
            if g != k && s.state.load(Ordering::Acquire) != crate::nfs::ABSENT {
                self.scaled = true;
            }
            if self.nfv[k].live {
                if s.draining.load(Ordering::Acquire) {
                    self.spare[g] = Some(k as u16);
                } else {
                    self.groups[g].push(k as u16);
                }
            }
        }
        self.any_filtered = self.nfv.iter().any(|v| v.live && v.filtered);
        if !deaths_changed {
            return;
        }
        for k in 0..self.nfv.len() {
            let (dead, gen, done) = {
                let s = &self.table.slots[k];
                let gen = s.gen.load(Ordering::Acquire);
                (
                    s.state.load(Ordering::Acquire) == crate::nfs::DEAD,
                    gen,
                    s.reclaimed[self.w].load(Ordering::Acquire) >= gen,
                )
            };
            if dead && !done {
                self.reclaim(k, emit);
                self.table.slots[k].reclaimed[self.w].store(gen, Ordering::Release);
            }
        }
    }

    /// Handles on NF slot `k`'s channel made afresh (after a registration
    /// gave it new memory). Nothing is queued for it: it was absent, or dead
    /// and reclaimed.
    fn relink(&mut self, k: usize) {
        let Ok(ch) = self.arena.channel(self.table.channel(k, self.w)) else { return };
        let l = &mut self.links[k];
        l.events = ch.desc.producer();
        l.answers = ch.answer.consumer();
        l.pubs = ch.publish.reader();
        l.pending.clear();
    }

    /// Keep `snap` as the newest; forget the oldest unused ones (no parked
    /// packet, no flow tagged with them) beyond [`KEEP_SNAPSHOTS`] (indices
    /// of the others never move). One whose version tag (16 bits) the new
    /// one reuses goes in any case: 65,536 applies later its flows, if any
    /// are left, follow the new chains.
    fn add_snapshot(&mut self, snap: Arc<ChainSnapshot>) {
        self.newest_version = snap.version;
        for s in self.snaps.iter_mut() {
            if s.as_ref().is_some_and(|o| o.version & 0xffff == snap.version & 0xffff && o.parked == 0) {
                *s = None;
            }
        }
        let entry = Some(Snap::new(snap));
        let at = match self.snaps.iter().position(Option::is_none) {
            Some(i) => {
                self.snaps[i] = entry;
                i
            }
            None => {
                self.snaps.push(entry);
                self.snaps.len() - 1
            }
        };
        self.newest = Some(at);
        while self.snaps.iter().flatten().count() > KEEP_SNAPSHOTS {
            let oldest = self
                .snaps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    s.as_ref().filter(|s| s.parked == 0 && s.flows == 0 && i != at).map(|s| (s.snap.version, i))
                })
                .min();
            match oldest {
                Some((_, i)) => self.snaps[i] = None,
                None => break, // every older one still has flows or parked packets
            }
        }
    }

    /// The snapshot index for a flow tag's version.
    #[inline]
    fn snap_of(&self, ver: u32) -> Option<usize> {
        if let Some(n) = self.newest {
            if self.snaps[n].as_ref().is_some_and(|s| s.version & 0xffff == ver) {
                return Some(n);
            }
        }
        self.snaps.iter().position(|s| s.as_ref().is_some_and(|s| s.version & 0xffff == ver))
    }

    fn newest_snap(&self) -> Option<&Arc<ChainSnapshot>> {
        self.newest.and_then(|n| self.snaps[n].as_ref()).map(|s| &s.snap)
    }

    /// The tag for a new flow: which chain (if any) its packets visit, and
    /// whether a TCP flow runs the monitor. A flow with a chain keeps its
    /// snapshot alive until it ends ([`flows_ended`](Self::flows_ended)).
    ///
    /// Where an NF of the chain runs as several instances, the flow is
    /// pinned to one of them here, for its whole life: the least loaded
    /// (flows of this worker pinned to it) of those taking new flows, in
    /// turns among equals. Its tag names the route with those instances,
    /// so every event of the flow goes to them; instances that come or go
    /// later move no flow.
    pub fn assign(&mut self, key: &FlowKey) -> u32 {
        let Some(n) = self.newest else { return NO_CHAIN }; // no chain applied yet
        let Some(s) = self.snaps[n].as_ref().map(|s| &s.snap) else { return NO_CHAIN };
        let (version, chain) = (s.version, s.select(key));
        let mut t = tag(version, chain);
        let Some(chain) = chain else { return t };
        if let Some(s) = self.snaps[n].as_mut() {
            s.flows += 1;
        }
        let route = if self.scaled { self.pick_route(n, chain) } else { chain };
        if route != chain {
            t = tag(version, Some(route));
        }
        self.pin(n, route, true);
        if key.proto() == 6 && self.needs(t).any() {
            t | MONITORED
        } else {
            t
        }
    }

    /// The route of chain `chain` (snapshot `n`) a new flow takes: each
    /// member resolved to one of its NF's instances ([`choose`](Self::choose)).
    fn pick_route(&mut self, n: usize, chain: usize) -> usize {
        let Some(base) = self.snaps[n].as_ref().and_then(|s| s.routes.get(chain)) else { return chain };
        let members: Vec<u16> = base.members.iter().map(|m| m.0).collect();
        let mut picks: Vec<u16> = Vec::with_capacity(members.len());
        for (i, &k) in members.iter().enumerate() {
            // An NF in two stages: the same instance in both.
            let c = match members[..i].iter().position(|&j| j == k) {
                Some(j) => picks[j],
                None => self.choose(k as usize),
            };
            picks.push(c);
        }
        if picks == members {
            return chain;
        }
        match self.snaps[n].as_mut().and_then(|s| s.route(chain, &picks)) {
            Some(r) => r,
            None => {
                // Every route a tag can name is taken: the chain's own NFs.
                self.counters.skip_event(EventSkip::NfAbsent);
                chain
            }
        }
    }

    /// The instance of the NF whose first instance is slot `k` a new flow
    /// goes to: the least loaded taking new flows (in turns among equals),
    /// else a draining one, else `k` (its policy then applies).
    fn choose(&mut self, k: usize) -> u16 {
        let Some(g) = self.groups.get(k) else { return k as u16 };
        match g.len() {
            0 => self.spare.get(k).copied().flatten().unwrap_or(k as u16),
            1 => g[0],
            len => {
                let least = g.iter().map(|&j| self.pins[j as usize]).min().unwrap_or(0);
                let start = self.rr % len;
                self.rr = self.rr.wrapping_add(1);
                (0..len).map(|i| g[(start + i) % len]).find(|&j| self.pins[j as usize] == least).unwrap_or(g[0])
            }
        }
    }

    /// Counts a flow of route `route` (snapshot `si`) in (`add`) or out on
    /// every NF slot it is pinned to.
    fn pin(&mut self, si: usize, route: usize, add: bool) {
        let Some(r) = self.snaps[si].as_ref().and_then(|s| s.routes.get(route)) else { return };
        for &k in &r.slots {
            let k = k as usize;
            let Some(p) = self.pins.get_mut(k) else { continue };
            *p = if add { *p + 1 } else { p.saturating_sub(1) };
            let slot = &self.table.slots[k];
            if let Some(c) = slot.pinned.get(self.w) {
                c.store(*p, Ordering::Relaxed);
            }
            if add {
                slot.assigned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// For a TCP flow of a chain that did not need the monitor when it
    /// started: whether it does now (an NF subscribed to TCP events has
    /// registered since), as the new tag. The monitor then picks the flow up
    /// mid-stream. Cheap when nothing changed: two loads and a compare.
    #[inline]
    pub fn monitor_upgrade(&mut self, flow_tag: u32) -> Option<u32> {
        let latest = self.newest_version;
        if flow_tag >> 16 != latest & 0xffff {
            return None; // flows of older chain versions keep what they had
        }
        // Registrations as of the last refresh (once per loop).
        let epoch = (latest, self.seen_epoch.0);
        if epoch != self.needs_epoch {
            self.needs_epoch = epoch;
            let n = self.newest_snap().map_or(0, |s| s.chains.len());
            self.needs_cache = (0..n).map(|c| self.needs(tag(latest, Some(c)))).collect();
            self.needs_any = self.needs_cache.iter().any(Needs::any);
        }
        if !self.needs_any {
            return None;
        }
        let (si, route) = self.route_of(flow_tag)?;
        let chain = self.snaps[si].as_ref()?.routes.get(route)?.chain as usize;
        let needs = self.needs_cache.get(chain)?;
        needs.any().then_some(flow_tag | MONITORED)
    }

    /// The snapshot (index) and route a flow tag names.
    fn route_of(&self, flow_tag: u32) -> Option<(usize, usize)> {
        let route = (flow_tag & CHAIN_MASK) as usize;
        if route == 0 {
            return None;
        }
        let si = self.snap_of(flow_tag >> 16)?;
        (route <= self.snaps[si].as_ref()?.routes.len()).then_some((si, route - 1))
    }

    /// The route a flow tag names: its members (slot, fail-closed), and the
    /// chain's plan.
    fn route_members(&self, flow_tag: u32) -> Option<(&[(u16, bool)], &ChainPlan)> {
        let (si, r) = self.route_of(flow_tag)?;
        let s = self.snaps[si].as_ref()?;
        let route = s.routes.get(r)?;
        Some((&route.members, s.snap.chains.get(route.chain as usize)?))
    }

    /// What the monitor must do for a flow of this tag: the union of what
    /// its chain's NFs subscribe to.
    fn needs(&self, flow_tag: u32) -> Needs {
        let mut n = Needs::default();
        let Some((members, _)) = self.route_members(flow_tag) else { return n };
        for &(k, _) in members {
            let s = &self.table.slots[k as usize];
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
    /// publishes what it reports to the chain's NFs; says what to do with
    /// the packet.
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
        ports: (usize, usize),
    ) -> MonitorVerdict {
        if !self.mon.contains(flow_id) {
            let needs = self.needs(flow_tag);
            let drop = self.route_members(flow_tag).is_some_and(|(_, c)| c.unmonitored_drop);
            let mut opened = self.mon.open(flow_id, flow_tag, *key, needs, drop);
            if !opened {
                if let Some(victim) = self.mon.victim() {
                    self.evict_monitored(victim);
                    opened = self.mon.open(flow_id, flow_tag, *key, needs, drop);
                }
            }
            if opened {
                self.counters.mon_flows.add(1);
                self.counters.mon_active.set(self.mon.len() as u64);
            } else {
                self.counters.mon_full.add(1);
                if drop {
                    return MonitorVerdict::Refused;
                }
                self.counters.mon_unmonitored_passed.add(1);
                return MonitorVerdict::Forward;
            }
        }
        let seg = self.mon.segment(self.arena, flow_id, m.data(), l4, side, dir, ports, self.now_ns);
        if self.mon.no_buffer > 0 {
            self.counters.mon_no_buffer.add(std::mem::take(&mut self.mon.no_buffer));
        }
        if self.mon.stopped > 0 {
            self.counters.mon_stopped.add(std::mem::take(&mut self.mon.stopped));
        }
        if self.mon.tally != crate::monitor::SegTally::default() {
            let t = crate::monitor::tally_to_array(&std::mem::take(&mut self.mon.tally));
            for (c, v) in self.counters.mon_tally.iter().zip(t) {
                if v > 0 {
                    c.add(v);
                }
            }
        }
        if self.mon.restarts > 0 {
            self.counters.mon_restarts.add(std::mem::take(&mut self.mon.restarts));
            self.counters.mon_retired.add(std::mem::take(&mut self.mon.retired_rings));
        }
        if seg == Seg::NoRing {
            // Strict and nowhere to reassemble (no ring, or a side that
            // stopped): end it now, RSTs both ways.
            self.refused.push(flow_id);
            return MonitorVerdict::Unmonitored;
        }
        if !self.mon.reports.is_empty() {
            self.report_for = Some((flow_tag, *key, flow_id));
        }
        match seg {
            Seg::Forward => MonitorVerdict::Forward,
            Seg::Unkept => MonitorVerdict::Unkept,
            Seg::Full => MonitorVerdict::RingFull,
            Seg::Drop | Seg::NoRing => MonitorVerdict::Terminated,
        }
    }

    /// Flows refused a ring (strict) since the last call: terminated, their
    /// RSTs through `emit`. Once per burst, with the worker's TX buffers.
    pub fn terminate_refused(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        while let Some(id) = self.refused.pop() {
            self.terminate(id, emit);
        }
    }

    /// Ends a monitored flow evicted to make room: its last TCP events now,
    /// its flow-table entry (and `FLOW/END`) through [`to_end`](Self::to_end),
    /// as closed for a connection that closed, else as evicted.
    fn evict_monitored(&mut self, (flow_id, tag, key, closed): (u64, u32, FlowKey, bool)) {
        let mut last = Vec::new();
        self.mon.end(flow_id, &mut |ev, snap| last.push((ev, snap)));
        for (ev, snap) in last {
            self.report(tag, &key, flow_id, Report::Tcp(ev, snap));
        }
        self.counters.mon_evicted.add(1);
        self.to_end.push((key, if closed { EndReason::Closed } else { EndReason::Evicted }));
    }

    /// Monitored connections closed `monitor.linger_ms` ago: their flows
    /// go to [`to_end`](Self::to_end). Once per loop.
    pub fn closed_due(&mut self) {
        if self.mon.unannounced > 0 {
            self.counters.mon_unannounced.add(std::mem::take(&mut self.mon.unannounced));
        }
        self.mon.closed_due(self.now_ns, &mut self.closed);
        self.to_end.extend(self.closed.drain(..).map(|k| (k, EndReason::Closed)));
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
    #[inline]
    fn publish_due(&mut self) {
        if !self.mon.has_due() {
            return;
        }
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
                match n {
                    Some(n) => {
                        self.mon.pin(flow_id, d.side, d.buf, d.end, n);
                        self.counters.mon_data_events.add(1);
                    }
                    // A fail-closed reader had no room: the range is
                    // announced again, from the same start, at a later flush.
                    None => {
                        self.mon.defer(flow_id, &d, snap);
                        self.counters.mon_deferred.add(1);
                    }
                }
            }
        }
    }

    /// Gives an event without a packet to every NF of the flow's chain that
    /// subscribes to `ty` (for this flow). Returns how many got it.
    ///
    /// A `DATA_RDY` (`pin` set) goes to nobody, and `None` is returned,
    /// when a `fail-closed` subscriber has no room for it (ring full, no
    /// event slot): skipping it would let the bytes pass that NF unseen.
    /// The caller announces the range again later; a reader that never
    /// catches up fills the side's ring, which stops the side, and a strict
    /// chain then refuses the flow. Other events are skipped and counted,
    /// as for a `fail-open` NF.
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
    ) -> Option<u32> {
        // The route's members, each once (even when in several stages).
        let mut cand = [(usize::MAX, false); 16];
        let mut nc = 0;
        {
            let Some((members, _)) = self.route_members(flow_tag) else { return Some(0) };
            for &(k, closed) in members {
                if nc < cand.len() && !cand[..nc].iter().any(|c| c.0 == k as usize) {
                    cand[nc] = (k as usize, closed);
                    nc += 1;
                }
            }
        }
        let h = EventHeader {
            type_id: ty.raw(),
            flow_id,
            pkt_off: 0,
            pkt_len: 0,
            publisher: 0,
            worker: self.w as u8,
            side,
            reserved: 0,
            seq: 0,
            snapshot: *snapshot,
            frontier,
        };
        let mut buf = [0u8; 256];
        let len = EVENT_HEADER_LEN + payload.len();
        let Some(bytes) = buf.get_mut(..len) else { return Some(0) };
        let _ = h.write(bytes);
        bytes[EVENT_HEADER_LEN..].copy_from_slice(payload);
        let bytes = &buf[..len];
        // The NFs that get it: each once, even when in several stages.
        let mut to = [(usize::MAX, false); 16];
        let mut m = 0;
        for &(k, closed) in &cand[..nc] {
            let v = self.nfv[k];
            if v.live && self.wants(k, v.gen, ty, key) {
                to[m] = (k, closed);
                m += 1;
            }
        }
        let to = &to[..m];
        // Every slot up front when all must go or none: then, with room in
        // each fail-closed ring (the worker is its only producer, so room
        // seen now stays) and entries to spare, none can fail below.
        let mut slots = [None; 16];
        if pin.is_some() && to.iter().any(|t| t.1) {
            let force = self.backpressure;
            let entries = self.free.len() + MAX_INFLIGHT.saturating_sub(self.inflight.len());
            if entries < m || to.iter().any(|&(k, closed)| closed && !self.links[k].has_room(force)) {
                return None;
            }
            for i in 0..m {
                slots[i] = self.pool.alloc();
                if slots[i].is_none() {
                    for s in slots.iter_mut().filter_map(Option::take) {
                        let _ = self.pool.release(s);
                    }
                    return None;
                }
            }
        }
        let mut n = 0;
        for (i, &(k, _)) in to.iter().enumerate() {
            if self.notice(k, slots[i].take(), &h, bytes, pin.map(|(s, b, e)| (flow_id, s, b, e))) {
                n += 1;
            }
        }
        Some(n)
    }

    /// Flows that left the flow table (`ended`): their last TCP events and
    /// `FLOW/END` to the chain's NFs that want them; monitor state goes once
    /// no NF reads its rings. Once per loop.
    /// `FLOW/START` of a flow that just entered the flow table with tag
    /// `flow_tag`, to its chain's NFs that subscribe (before its first
    /// packet's event). `dir`: the direction of its first packet, whose
    /// sender is the client.
    pub fn flow_started(&mut self, flow_tag: u32, key: &FlowKey, flow_id: u64, dir: ustack::flow::Direction) {
        if flow_tag & CHAIN_MASK == 0 {
            return;
        }
        let (client, server) = key.endpoints(dir);
        let v6 = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(a) => a.octets(),
        };
        let fs = FlowStart {
            client_addr: v6(client.0),
            server_addr: v6(server.0),
            client_port: client.1,
            server_port: server.1,
            proto: key.proto(),
            _pad: [0; 3],
            first_seen: self.now_ns,
        };
        let zero = [0u8; SNAPSHOT_LEN];
        self.deliver(flow_tag, key, flow_id, SIDE_CLIENT, event::FLOW_START, &zero, 0, &fs.to_bytes(), None);
    }

    pub fn flows_ended(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        // Their last bytes go out before their last events.
        self.publish_due();
        let mut ended = std::mem::take(&mut self.ended);
        for (rec, why) in ended.drain(..) {
            if let Some(s) = self.snap_of(rec.tag >> 16).and_then(|i| self.snaps[i].as_mut()) {
                s.flows = s.flows.saturating_sub(1);
            }
            if let Some((si, route)) = self.route_of(rec.tag) {
                self.pin(si, route, false);
            }
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
                (_, EndReason::Closed) => ubox_shm::event::FLOW_END_TCP_CLOSED,
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
    #[inline]
    pub fn start(&mut self, m: Mbuf, out: usize, flow_tag: u32, key: &FlowKey, flow_id: u64, side: Side) -> Outcome {
        let chain = (flow_tag & CHAIN_MASK) as usize;
        if chain == 0 {
            if self.cap.is_some() {
                self.capture_unchained(m.data(), key, flow_id);
            }
            return Outcome::Forward(m, out);
        }
        let Some(si) = self.snap_of(flow_tag >> 16) else {
            // Assigned under a version this worker no longer keeps: forward.
            return Outcome::Forward(m, out);
        };
        let Some(&(at, end)) = self.snaps[si].as_ref().and_then(|s| s.bounds.get(chain - 1)) else {
            return Outcome::Forward(m, out);
        };
        let cap = self.cap.is_some() && self.capture_wants(si, chain - 1, key);
        let Some(idx) = self.take_entry() else {
            // No room to park it: the event cannot be made.
            if cap {
                self.capture_leaving(m.data(), flow_id, si, chain - 1, Some(RuntimeDrop::NoEventSlot), 0);
            }
            self.counters.skip_event(EventSkip::NoSlot);
            self.counters.drop_runtime(RuntimeDrop::NoEventSlot);
            return Outcome::Taken;
        };
        if let Some(s) = self.snaps[si].as_mut() {
            s.parked += 1;
        }
        if self.any_filtered {
            if self.keys.len() <= idx {
                self.keys.resize(self.inflight.len(), *key);
            }
            self.keys[idx] = *key;
        }
        self.inflight[idx] = Entry(Inflight::Packet(Parked {
            m,
            flow_id,
            sent: 0,
            snap: si as u32,
            at,
            end,
            out: out as u8,
            side: side_code(side),
            kind: pkt_kind(key.proto()),
            pending: 0,
            keyed: self.any_filtered,
            doom: None,
            cap,
            chain: (chain - 1) as u16,
            decider: 0,
        }));
        self.parked_count += 1;
        self.advance(idx)
    }

    /// An in-flight entry (growing the slab up to [`MAX_INFLIGHT`]).
    #[inline]
    fn take_entry(&mut self) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            return Some(i as usize);
        }
        if self.inflight.len() >= MAX_INFLIGHT {
            return None;
        }
        self.inflight.push(Entry(Inflight::Free));
        self.tags.push(0);
        Some(self.inflight.len() - 1)
    }

    /// A new cookie for entry `idx` (answers to an older one are strays).
    #[inline]
    fn cookie(&mut self, idx: usize) -> u32 {
        let t = self.tags[idx].wrapping_add(1);
        self.tags[idx] = t;
        idx as u32 | u32::from(t) << 24
    }

    /// The entry a cookie names, if its tag is current.
    #[inline]
    fn entry_of(&self, cookie: u32) -> Option<usize> {
        let idx = (cookie & (MAX_INFLIGHT as u32 - 1)) as usize;
        (self.tags.get(idx) == Some(&((cookie >> 24) as u8))).then_some(idx)
    }

    /// Move the packet parked in entry `idx` on: publish its current stage
    /// to the NFs of it that want it, skipping stages none of whose NFs do,
    /// or let it out (forwarded, or dropped if doomed) after the last.
    /// The packet stays in its entry while NFs hold it.
    #[inline]
    fn advance(&mut self, idx: usize) -> Outcome {
        let Inflight::Packet(p) = &mut self.inflight[idx].0 else { return Outcome::Taken };
        // Where the packet is, for its descriptors (looked up once, and
        // only if a stage is left: the mbuf header may be cold by now).
        let mut place: Option<(u64, u16)> = None;
        // A snapshot is kept while packets are parked under it; were it
        // gone, the packet could not be inspected: drop it.
        let stages: &[Stage] = match self.snaps[p.snap as usize].as_ref() {
            Some(s) => &s.stages,
            None => {
                p.doom.get_or_insert(RuntimeDrop::NfFailClosed);
                &[]
            }
        };
        while p.doom.is_none() && p.at < p.end {
            let Some(&stage) = stages.get(p.at as usize) else {
                p.doom = Some(RuntimeDrop::NfFailClosed);
                break;
            };
            let t = self.tags[idx].wrapping_add(1);
            self.tags[idx] = t;
            let (pkt_off, len) = *place.get_or_insert_with(|| {
                let data = p.m.data();
                (arena_offset(self.data_start, self.data_len, self.data_off, data), data.len() as u16)
            });
            let d = Desc {
                type_id: PKT_TYPES[p.kind as usize].raw(),
                flow_id: p.flow_id,
                data: pkt_off,
                len,
                side: p.side,
                flags: 0,
                cookie: idx as u32 | u32::from(t) << 24,
            };
            let mut bits = 0u8;
            for i in 0..stage.n as usize {
                let k = stage.nfs[i] as usize;
                let v = self.nfv[k];
                if !v.live {
                    if stage.closed(i) {
                        if p.doom.is_none() {
                            p.decider = k as u16 + 1;
                        }
                        p.doom = Some(RuntimeDrop::NfFailClosed);
                        self.table.slots[k].count(NfCount::FailClosed, 1);
                    } else {
                        self.table.slots[k].count(NfCount::Skipped, 1);
                        self.counters.skip_event(EventSkip::NfAbsent);
                    }
                    continue;
                }
                let wants = if v.filtered && p.keyed {
                    let key = &self.keys[idx];
                    filter_wants(&self.table, &mut self.filters[k], k, v.gen, PKT_TYPES[p.kind as usize], key)
                } else {
                    // No filter, or a packet parked before the first NF with
                    // a filter registered (its key was not kept): by type.
                    v.pkt & (1 << p.kind) != 0
                };
                if !wants {
                    continue; // not subscribed to this type (or flow): not its business
                }
                if self.links[k].queue(d, self.backpressure) {
                    touch(&mut self.links, &mut self.dirty, k);
                    bits |= 1 << i;
                } else {
                    self.counters.skip_event(EventSkip::RingFull);
                    self.table.slots[k].count(NfCount::RingFull, 1);
                    if stage.closed(i) {
                        if p.doom.is_none() {
                            p.decider = k as u16 + 1;
                        }
                        p.doom = Some(RuntimeDrop::NfRingFull);
                    }
                }
            }
            if bits != 0 {
                // Even when doomed meanwhile: the members it went to read
                // its bytes until they answer.
                p.pending = bits;
                p.sent = self.now;
                return Outcome::Taken;
            }
            if p.doom.is_none() {
                p.at += 1;
            }
        }
        match self.leave(idx) {
            Some((m, out)) => Outcome::Forward(m, out),
            None => Outcome::Taken,
        }
    }

    /// The packet in entry `idx` leaves its chain: the entry is free
    /// again, and the packet goes out (`Some`) or, if doomed, is dropped
    /// and counted.
    #[inline]
    fn leave(&mut self, idx: usize) -> Option<(Mbuf, usize)> {
        let Inflight::Packet(p) = std::mem::replace(&mut self.inflight[idx].0, Inflight::Free) else { return None };
        self.free.push(idx as u32);
        self.parked_count -= 1;
        if let Some(s) = self.snaps[p.snap as usize].as_mut() {
            s.parked -= 1;
        }
        if p.cap {
            self.capture_leaving(p.m.data(), p.flow_id, p.snap as usize, p.chain as usize, p.doom, p.decider);
        }
        match p.doom {
            Some(reason) => {
                self.counters.drop_runtime(reason);
                None // the mbuf is freed with `p`
            }
            None => Some((p.m, p.out as usize)),
        }
    }

    /// Whether NF `k` (generation `gen`) subscribes to `ty` for flow `key`
    /// (events other than packets: monitor events, publications).
    fn wants(&mut self, k: usize, gen: u32, ty: EventTypeId, key: &FlowKey) -> bool {
        if !self.nfv[k].filtered {
            return self.table.wants(k, ty);
        }
        filter_wants(&self.table, &mut self.filters[k], k, gen, ty, key)
    }

    /// With `runtime.nf_backpressure`: true while some live NF's ring has
    /// less room than one loop's RX bursts (or descriptors wait in the
    /// worker's queue for room), so the worker leaves frames in the NIC's
    /// RX queue (where the port counts what it cannot hold) instead of
    /// skipping events. A dead NF's rings are drained by reclaim, so this
    /// never waits on it for longer than `runtime.nf_timeout_ms`.
    ///
    /// Also true while a reassembled side's readers hold so much of its
    /// stream ring that this loop's RX could fill it: bytes are then not
    /// skipped either (the side would stop, and a strict chain reset the
    /// flow); counted `monitor.rx_held`.
    pub fn congested(&mut self) -> bool {
        if !self.backpressure {
            return false;
        }
        if self.mon.readers_behind() {
            self.counters.mon_rx_held.add(1);
            return true;
        }
        if self.parked_count == 0 && self.notices == 0 {
            return false;
        }
        let rx_room = self.rx_room;
        self.live.iter().any(|&k| {
            let l = &mut self.links[k];
            let want = rx_room.min(l.events.view().capacity());
            !l.pending.is_empty() || l.events.room(want) < want
        })
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
    /// each answer poll; touches only the NFs that had events or answers.
    pub fn flush(&mut self) {
        self.publish_due();
        if self.dirty.is_empty() {
            return;
        }
        let mut keep = 0;
        for i in 0..self.dirty.len() {
            let k = self.dirty[i] as usize;
            let l = &mut self.links[k];
            if !l.pending.is_empty() {
                let n = l.events.push_burst(&l.pending);
                // All of them, but under backpressure (room was checked when
                // they were queued, and only this worker produces).
                l.pending.drain(..n);
                if n > 0 {
                    self.counters.event_bursts.add(1);
                    self.counters.events_pushed.add(n as u64);
                    if l.bell.is_some_and(|b| b.wake()) {
                        self.counters.nf_wakeups.add(1);
                    }
                }
            }
            let slot = &self.table.slots[k];
            if l.given > 0 {
                slot.events_in.fetch_add(std::mem::take(&mut l.given), Ordering::Relaxed);
            }
            if l.answered > 0 {
                slot.events_out.fetch_add(std::mem::take(&mut l.answered), Ordering::Relaxed);
            }
            // What did not fit (backpressure) stays for the next flush.
            if l.pending.is_empty() {
                l.dirty = false;
            } else {
                self.dirty[keep] = k as u16;
                keep += 1;
            }
        }
        self.dirty.truncate(keep);
        if self.answers_acc > 0 {
            self.counters.nf_answers.add(std::mem::take(&mut self.answers_acc));
            self.counters.nf_rtt_ticks.add(std::mem::take(&mut self.rtt_acc));
            for (c, n) in self.counters.nf_rtt_buckets.iter().zip(&mut self.rtt_hist) {
                if *n > 0 {
                    c.add(std::mem::take(n));
                }
            }
        }
    }

    /// Act on the NFs' answers; returns how many were taken.
    pub fn poll(&mut self, emit: &mut impl FnMut(Mbuf, usize)) -> usize {
        if self.parked_count == 0 && self.notices == 0 {
            return 0;
        }
        let mut taken = 0;
        let mut i = 0;
        while i < self.live.len() {
            let k = self.live[i];
            taken += self.take_answers(k, emit);
            if self.links[k].answers.broken() || self.links[k].events.broken() {
                // `live` lost k: the same index is the next NF now.
                self.fault(k);
                continue;
            }
            i += 1;
        }
        self.flush();
        taken
    }

    /// NF `k`'s channel holds impossible ring indices: something wrote its
    /// memory at random. Stop using it now (its events follow the stage
    /// policy as for a dead NF until the control thread declares it dead
    /// and the workers reclaim what it held).
    fn fault(&mut self, k: usize) {
        let slot = &self.table.slots[k];
        if !slot.faulty.swap(true, Ordering::AcqRel) {
            slot.count(NfCount::CorruptRing, 1);
        }
        self.nfv[k].live = false;
        self.nfv[k].pkt = 0;
        self.live.retain(|&j| j != k);
        self.any_filtered = self.nfv.iter().any(|v| v.live && v.filtered);
    }

    fn take_answers(&mut self, k: usize, emit: &mut impl FnMut(Mbuf, usize)) -> usize {
        let mut taken = 0;
        // At most a ring's worth per poll, whatever the NF's index says.
        let most = self.links[k].answers.view().capacity() as usize;
        loop {
            let mut buf = std::mem::take(&mut self.answers);
            let n = self.links[k].answers.pop_burst(&mut buf);
            // Pull the burst's entries in while the first ones are handled.
            for a in &buf[..n] {
                if let Some(e) = self.inflight.get((a.cookie() & (MAX_INFLIGHT as u32 - 1)) as usize) {
                    crate::dpdk::prefetch(e);
                }
            }
            for &a in &buf[..n] {
                self.answered(k, a, emit);
            }
            self.answers = buf;
            taken += n;
            if n < ANSWER_BURST || taken >= most {
                return taken;
            }
        }
    }

    fn answered(&mut self, k: usize, a: Answer, emit: &mut impl FnMut(Mbuf, usize)) {
        match a.kind() {
            ANSWER_VERDICT => {}
            ANSWER_PUBLISH => return self.published(k, a.cookie(), emit),
            _ => return self.stray(k),
        }
        let Some(idx) = self.entry_of(a.cookie()) else {
            return self.stray(k);
        };
        match &mut self.inflight[idx].0 {
            Inflight::Packet(p) => {
                let stage = self.snaps[p.snap as usize].as_ref().and_then(|s| s.stages.get(p.at as usize));
                let Some(i) = stage.and_then(|st| st.member(k, p.pending)) else {
                    return self.stray(k);
                };
                p.pending &= !(1 << i);
                let rtt = self.now.saturating_sub(p.sent);
                self.rtt_acc += rtt;
                self.rtt_hist[crate::counters::rtt_bucket(rtt, self.ns_per_tick_q32)] += 1;
                self.answers_acc += 1;
                self.links[k].answered += 1;
                touch(&mut self.links, &mut self.dirty, k);
                let slot = &self.table.slots[k];
                // The first to doom it, else the last to pass it, decided.
                if p.doom.is_none() {
                    p.decider = k as u16 + 1;
                }
                match a.code() {
                    VERDICT_DROP => {
                        slot.count(NfCount::VerdictDrop, 1);
                        p.doom.get_or_insert(RuntimeDrop::NfVerdict);
                    }
                    VERDICT_MODIFIED if slot.modifies.load(Ordering::Relaxed) => {
                        slot.count(NfCount::Modified, 1);
                        // The NF rewrote the bytes in place; the checksums are
                        // ours to fix. A frame it broke beyond parsing is dropped.
                        if !ustack::l3::refresh_checksums(p.m.data_mut()) {
                            p.doom.get_or_insert(RuntimeDrop::NfVerdict);
                        }
                    }
                    ubox_shm::event::VERDICT_PASS => {}
                    _ => slot.count(NfCount::BadVerdict, 1),
                }
                if p.pending != 0 {
                    return;
                }
                if p.doom.is_none() {
                    p.at += 1;
                    if p.at == p.end {
                        // Its last stage passed it: out, without the stage walk.
                        if let Some(m) = self.leave(idx) {
                            emit(m.0, m.1);
                        }
                        return;
                    }
                }
                if let Outcome::Forward(m, out) = self.advance(idx) {
                    emit(m, out);
                }
            }
            Inflight::Notice(n) if n.nf == k => {
                let rtt = self.now.saturating_sub(n.sent);
                self.rtt_acc += rtt;
                self.rtt_hist[crate::counters::rtt_bucket(rtt, self.ns_per_tick_q32)] += 1;
                self.answers_acc += 1;
                self.links[k].answered += 1;
                touch(&mut self.links, &mut self.dirty, k);
                self.settle_notice(idx);
            }
            _ => self.stray(k),
        }
    }

    /// NF `k` gave an answer that matched nothing it owed.
    fn stray(&self, k: usize) {
        self.counters.nf_stray_answers.add(1);
        self.table.slots[k].count(NfCount::StrayAnswer, 1);
    }

    /// A notice was answered or reclaimed: free its slot and entry, unpin
    /// its range.
    fn settle_notice(&mut self, idx: usize) {
        let Inflight::Notice(n) = std::mem::replace(&mut self.inflight[idx].0, Inflight::Free) else { return };
        self.free.push(idx as u32);
        self.notices -= 1;
        let _ = self.pool.release(SlotIdx(n.slot));
        if let Some((flow, side, buf, end)) = n.pin {
            self.mon.unpin(flow, side, buf, end);
        }
    }

    /// NF `k` published its record `n` (event header and payload, in its
    /// channel's publish area): copy it out, check it, and give a copy to
    /// every other live NF that subscribes to its type. A record out of
    /// order, an unreadable header or a type the NF did not declare is
    /// counted (`bad_publish`) and goes nowhere.
    fn published(&mut self, k: usize, n: u32, emit: &mut impl FnMut(Mbuf, usize)) {
        let slot = &self.table.slots[k];
        let mut bytes = std::mem::take(&mut self.record);
        let len = self.links[k].pubs.take(n, &mut bytes);
        let header = len.and_then(|len| EventHeader::read(&bytes[..len]));
        let ty = header.and_then(|h| EventTypeId::from_raw(h.type_id)).filter(|&t| slot.may_publish(t));
        let (Some(mut h), Some(ty), Some(len)) = (header, ty, len) else {
            slot.count(NfCount::BadPublish, 1);
            self.record = bytes;
            return;
        };
        slot.count(NfCount::Published, 1);
        if ty == event::FLOW_TCP_TERMINATE {
            // A request to the stack, not an event for other NFs.
            self.record = bytes;
            self.terminate(h.flow_id, emit);
            return;
        }
        if ty == event::FLOW_DEST {
            // The policy's answer to the splicer: from the policy NF only.
            let dest = FlowDest::from_bytes(&bytes[EVENT_HEADER_LEN..len]);
            self.record = bytes;
            let policy = self.table.policy_slot.load(Ordering::Acquire) as usize == k;
            match (dest, policy, self.splice.is_some()) {
                (Some(d), true, true) => {
                    // Named by its flow-table id (or the splicer's own).
                    let id = self.splice.as_ref().and_then(|s| s.by_table.get(&h.flow_id)).copied();
                    self.splice_dest(id.unwrap_or(h.flow_id), &d, emit)
                }
                _ => slot.count(NfCount::BadPublish, 1),
            }
            return;
        }
        h.publisher = slot.nf_id.load(Ordering::Relaxed) as u16;
        h.worker = self.w as u8;
        h.pkt_off = 0;
        h.pkt_len = 0;
        h.reserved = 0;
        let _ = h.write(&mut bytes[..len]);
        for j in 0..self.links.len() {
            if j == k || !self.nfv[j].live || !self.table.wants(j, ty) {
                continue;
            }
            self.notice(j, None, &h, &bytes[..len], None);
        }
        self.record = bytes;
    }

    /// Gives NF `k` a copy of `bytes` (header `h` and payload) in a slot,
    /// as an event nothing waits on; `pin` = (flow, side, ring, end) of the
    /// `DATA_RDY` range it pins. Counted on the NF when it cannot.
    /// `slot`: one allocated for it already, if any.
    fn notice(
        &mut self,
        k: usize,
        slot: Option<SlotIdx>,
        h: &EventHeader,
        bytes: &[u8],
        pin: Option<(u64, Side, u32, u64)>,
    ) -> bool {
        let skipped = |me: &mut Self, c: NfCount, why: EventSkip| {
            me.table.slots[k].count(c, 1);
            me.counters.skip_event(why);
            false
        };
        let Some(slot) = slot.or_else(|| self.pool.alloc()) else {
            return skipped(self, NfCount::NoSlot, EventSkip::NoSlot);
        };
        let written =
            self.pool.payload_mut(slot).ok().and_then(|b| b.get_mut(..bytes.len())).map(|b| b.copy_from_slice(bytes));
        let entry = if written.is_some() { self.take_entry() } else { None };
        let Some(idx) = entry else {
            let _ = self.pool.release(slot);
            return skipped(self, NfCount::NoSlot, EventSkip::NoSlot);
        };
        let d = Desc {
            type_id: h.type_id,
            flow_id: h.flow_id,
            data: u64::from(slot.0),
            len: 0,
            side: h.side,
            flags: DESC_SLOT,
            cookie: self.cookie(idx),
        };
        if !self.links[k].queue(d, self.backpressure) {
            let _ = self.pool.release(slot);
            self.free.push(idx as u32);
            return skipped(self, NfCount::RingFull, EventSkip::RingFull);
        }
        touch(&mut self.links, &mut self.dirty, k);
        self.inflight[idx] = Entry(Inflight::Notice(Notice { nf: k, slot: slot.0, sent: self.now, pin }));
        self.notices += 1;
        true
    }

    /// An NF died: settle everything it held on this worker.
    fn reclaim(&mut self, k: usize, emit: &mut impl FnMut(Mbuf, usize)) {
        // Answers it gave before dying still count (unless its rings are
        // broken: then nothing in them is to be believed).
        if !self.table.slots[k].faulty.load(Ordering::Acquire) {
            self.take_answers(k, emit);
        }
        // Descriptors it never took are settled below with the rest; its
        // next run gets new channel memory (and handles, at `relink`).
        self.links[k].pending.clear();
        // Its queued events were given (counted in), reclaimed below.
        touch(&mut self.links, &mut self.dirty, k);
        // Every entry still waiting for its answer: those descriptors, the
        // events it took and never answered, and the queued ones.
        for idx in 0..self.inflight.len() {
            match &mut self.inflight[idx].0 {
                Inflight::Packet(p) => {
                    let Some(stage) = self.snaps[p.snap as usize].as_ref().and_then(|s| s.stages.get(p.at as usize))
                    else {
                        continue;
                    };
                    while let Some(i) = stage.member(k, p.pending) {
                        p.pending &= !(1 << i);
                        self.counters.nf_reclaimed.add(1);
                        self.table.slots[k].count(NfCount::Reclaimed, 1);
                        if stage.closed(i) {
                            if p.doom.is_none() {
                                p.decider = k as u16 + 1;
                            }
                            p.doom.get_or_insert(RuntimeDrop::NfFailClosed);
                        }
                    }
                    if p.pending != 0 {
                        continue;
                    }
                    if p.doom.is_none() {
                        p.at += 1;
                    }
                    if let Outcome::Forward(m, out) = self.advance(idx) {
                        emit(m, out);
                    }
                }
                Inflight::Notice(n) if n.nf == k => {
                    self.counters.nf_reclaimed.add(1);
                    self.table.slots[k].count(NfCount::Reclaimed, 1);
                    self.settle_notice(idx);
                }
                _ => {}
            }
        }
        self.flush();
    }

    /// Flows the monitor follows now.
    pub fn monitored(&self) -> usize {
        self.mon.len()
    }

    /// Shutdown: free every parked packet and notice slot.
    pub fn drain(&mut self) {
        for i in 0..self.inflight.len() {
            if let Inflight::Notice(n) = std::mem::replace(&mut self.inflight[i].0, Inflight::Free) {
                let _ = self.pool.release(SlotIdx(n.slot));
            }
        }
        self.inflight.clear();
        self.tags.clear();
        self.keys.clear();
        self.free.clear();
        self.parked_count = 0;
        self.notices = 0;
        self.links.iter_mut().for_each(|l| {
            l.pending.clear();
            l.dirty = false;
        });
        self.dirty.clear();
    }
}

/// The splicer of one worker, with what it produced not yet acted on.
pub struct SpliceSide {
    pub sp: ustack::splice::Splicer<Mbuf>,
    out: ustack::splice::Out<Mbuf>,
    /// Port indices toward the clients and the backends.
    pub client_port: usize,
    pub backend_port: usize,
    /// Neighbours learnt by every worker's splicer, and the board's version
    /// this one has applied.
    neighbours: Arc<Neighbours>,
    seen: u64,
    /// Frames the splicer sent toward clients, for the worker to pass
    /// through the flow table, the monitor and the chains (those of
    /// connections the table knows) on their way out.
    to_client: Vec<Mbuf>,
    /// Flow-table ids of connections to a VIP (by flow key), and the
    /// splicer's id of each one the policy was asked about (by flow-table
    /// id): the policy's `FLOW_REQ`, `FLOW_DEST` and `FLOW_END` name a
    /// spliced connection by the same id as its `FLOW/TCP` and `DATA_RDY`
    /// events. Bounded (see [`SpliceSide::MAX_IDS`]).
    table_ids: HashMap<FlowKey, u64>,
    by_table: HashMap<u64, u64>,
}

impl SpliceSide {
    pub fn new(
        sp: ustack::splice::Splicer<Mbuf>,
        client_port: usize,
        backend_port: usize,
        neighbours: Arc<Neighbours>,
    ) -> SpliceSide {
        SpliceSide {
            sp,
            out: ustack::splice::Out::default(),
            client_port,
            backend_port,
            neighbours,
            seen: 0,
            to_client: Vec::new(),
            table_ids: HashMap::new(),
            by_table: HashMap::new(),
        }
    }

    /// At most this many more ids kept than the splicer has flows (ids of
    /// connections the splicer refused or never heard of again); past it
    /// the stale ones go (live ones are kept).
    const MAX_IDS: usize = 1024;

    /// The client's view of a connection the splicer names.
    fn key_of(client: (std::net::Ipv4Addr, u16), vip: (std::net::Ipv4Addr, u16)) -> FlowKey {
        FlowKey::from_v4(client.0, client.1, vip.0, vip.1, 6).0
    }
}

/// The neighbours (IPv4 address → MAC) the workers' splicers learnt from
/// ARP, shared: an ARP reply lands on whichever worker's queue the kernel
/// or NIC picks, not always on the one whose flow asked (each worker's
/// splicer looks for it on its next tick). Touched only for ARP frames
/// (the lock) and once per loop (one relaxed load), bounded like a
/// splicer's own table.
#[derive(Default)]
pub struct Neighbours {
    version: AtomicU64,
    table: Mutex<Vec<(std::net::Ipv4Addr, [u8; 6])>>,
}

impl Neighbours {
    const MAX: usize = 4096;

    /// Notes `ip` at `mac`; bumps the version when that is news.
    fn learn(&self, ip: std::net::Ipv4Addr, mac: [u8; 6]) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.iter_mut().find(|e| e.0 == ip) {
            Some(e) if e.1 == mac => return,
            Some(e) => e.1 = mac,
            None => {
                if t.len() >= Self::MAX {
                    t.clear();
                }
                t.push((ip, mac));
            }
        }
        self.version.fetch_add(1, Ordering::Release);
    }
}

impl ustack::splice::Frame for Mbuf {
    fn bytes(&self) -> &[u8] {
        self.data()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

fn mapped(a: std::net::Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

impl Dispatcher<'_> {
    /// Whether a frame is the splicer's, and from which side.
    #[inline]
    pub fn splice_claims(&self, frame: &[u8]) -> Option<ustack::splice::Source> {
        self.splice.as_ref()?.sp.claims(frame)
    }

    /// Whether a client's frame to a VIP may have flow state (the table,
    /// chains, the monitor): see [`ustack::splice::Splicer::admits`].
    #[inline]
    pub fn splice_admits(&self, frame: &[u8]) -> bool {
        self.splice.as_ref().is_some_and(|s| s.sp.admits(frame, self.now_ns))
    }

    /// A connection to a VIP entered the flow table as `id`.
    pub fn splice_flow_started(&mut self, key: &FlowKey, id: u64) {
        let Some(s) = self.splice.as_mut() else { return };
        if s.table_ids.len() >= s.sp.len() + SpliceSide::MAX_IDS {
            // Keep the ids of connections the policy was asked about.
            let live: std::collections::HashSet<u64> = s.by_table.keys().copied().collect();
            s.table_ids.retain(|_, id| live.contains(id));
        }
        s.table_ids.insert(*key, id);
    }

    /// The frames the splicer sent toward clients since the last call.
    pub fn splice_to_client(&mut self, into: &mut Vec<Mbuf>) {
        if let Some(s) = self.splice.as_mut() {
            into.append(&mut s.to_client);
        }
    }

    /// A frame the splicer claimed.
    pub fn splice_input(&mut self, m: Mbuf, from: ustack::splice::Source, emit: &mut impl FnMut(Mbuf, usize)) {
        let now = self.now_ns;
        let Some(s) = self.splice.as_mut() else { return };
        match from {
            ustack::splice::Source::Client => s.sp.from_client(m, now, &mut s.out),
            ustack::splice::Source::Backend => s.sp.from_backend(m, now, &mut s.out),
        }
        self.splice_drain(emit);
    }

    /// An ARP frame seen on any port: the splicer learns the sender.
    pub fn splice_learn(&mut self, frame: &[u8], emit: &mut impl FnMut(Mbuf, usize)) {
        let now = self.now_ns;
        let Some(s) = self.splice.as_mut() else { return };
        // Untagged Ethernet/IPv4 ARP: sender MAC at 22, sender IP at 28.
        if frame.len() < 42 || frame[12..14] != [0x08, 0x06] || frame[14..20] != [0, 1, 8, 0, 6, 4] {
            return;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&frame[22..28]);
        let ip = std::net::Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
        if mac == [0; 6] || mac[0] & 1 != 0 {
            return;
        }
        s.sp.learn(ip, mac, now, &mut s.out);
        s.neighbours.learn(ip, mac);
        self.splice_drain(emit);
    }

    /// The splicer's timers. Once per loop.
    pub fn splice_tick(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        let now = self.now_ns;
        let Some(s) = self.splice.as_mut() else { return };
        let v = s.neighbours.version.load(Ordering::Acquire);
        if v != s.seen {
            // What other workers learnt (flows waiting for a MAC send their SYN).
            s.seen = v;
            let t = s.neighbours.table.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (ip, mac) in t {
                s.sp.learn(ip, mac, now, &mut s.out);
            }
        }
        s.sp.tick(now, &mut s.out);
        if !s.out.is_empty() {
            self.splice_drain(emit);
        }
    }

    /// Shutdown: every splice ends (`FLOW/END` to the policy).
    pub fn splice_shutdown(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        let Some(s) = self.splice.as_mut() else { return };
        s.sp.drain(&mut s.out);
        self.splice_drain(emit);
    }

    fn splice_dest(&mut self, flow_id: u64, d: &FlowDest, emit: &mut impl FnMut(Mbuf, usize)) {
        use ustack::splice::{Dest, Reject};
        let now = self.now_ns;
        let Some(s) = self.splice.as_mut() else { return };
        let addr = std::net::Ipv6Addr::from(d.addr).to_ipv4_mapped();
        let dest = match (d.action, addr) {
            (ubox_shm::event::DEST_CONNECT, Some(a)) => Dest::Connect(a, d.port),
            (ubox_shm::event::DEST_RESET, _) => Dest::Reject(Reject::Reset),
            (ubox_shm::event::DEST_503, _) => Dest::Reject(Reject::Http503),
            // An IPv6 backend or an unknown action: the configured reject.
            _ => Dest::Reject(s.sp.config().reject),
        };
        s.sp.dest(flow_id, dest, now, &mut s.out);
        self.splice_drain(emit);
    }

    /// Acts on what the splicer produced: frames out, questions to the
    /// policy NF (a refused one is rejected at once), `FLOW/END`s, counts.
    fn splice_drain(&mut self, emit: &mut impl FnMut(Mbuf, usize)) {
        loop {
            let Some(s) = self.splice.as_mut() else { return };
            if s.out.is_empty() {
                break;
            }
            let bp = s.backend_port;
            let mut out = std::mem::take(&mut s.out);
            for (m, t) in out.tx.drain(..) {
                match t {
                    ustack::splice::Toward::Client => s.to_client.push(m),
                    ustack::splice::Toward::Backend => emit(m, bp),
                }
            }
            for (bytes, t) in out.made.drain(..) {
                match (self.mbufs.alloc_frame(&bytes), t) {
                    (Some(m), ustack::splice::Toward::Client) => s.to_client.push(m),
                    (Some(m), ustack::splice::Toward::Backend) => emit(m, bp),
                    (None, _) => self.counters.drop_runtime(RuntimeDrop::NoMbuf),
                }
            }
            for ask in out.asks.drain(..) {
                if !self.splice_ask(&ask) {
                    let now = self.now_ns;
                    if let Some(s) = self.splice.as_mut() {
                        s.sp.no_policy(ask.flow_id, now, &mut s.out);
                    }
                }
            }
            for e in out.ended.drain(..) {
                self.splice_ended(&e);
            }
            if let Some(s) = self.splice.as_mut() {
                // Keep the vectors' capacity for the next round.
                if s.out.is_empty() {
                    s.out = out;
                }
            }
        }
        let Some(s) = self.splice.as_mut() else { return };
        let c = std::mem::take(&mut s.sp.counters);
        for (counter, (_, v)) in self.counters.splice.iter().zip(c.fields()) {
            if v > 0 {
                counter.add(v);
            }
        }
        self.counters.splice_active.set(s.sp.len() as u64);
        self.counters.splice_held.set(s.sp.held() as u64);
    }

    /// The live policy NF's slot, if it takes `ty`.
    fn policy(&self, ty: EventTypeId) -> Option<usize> {
        let k = self.table.policy_slot.load(Ordering::Acquire) as usize;
        (self.nfv.get(k)?.live && self.table.wants(k, ty)).then_some(k)
    }

    /// `FLOW_REQ` to the policy NF, the held request as its packet.
    fn splice_ask(&mut self, ask: &ustack::splice::Ask) -> bool {
        let Some(k) = self.policy(event::FLOW_REQ) else { return false };
        let flow_id = self.splice_table_id(ask.flow_id, ask.client, ask.vip);
        let Some(frame) = self.splice.as_ref().and_then(|s| s.sp.held_frame(ask.flow_id)) else { return false };
        let data = frame.data();
        let Some(req) = data.get(ask.payload.clone()) else { return false };
        let pkt_off = arena_offset(self.data_start, self.data_len, self.data_off, req);
        let reason = match ask.reason {
            ustack::splice::AskReason::New => ubox_shm::event::FLOW_REQ_NEW,
            ustack::splice::AskReason::Reset => ubox_shm::event::FLOW_REQ_RESET,
            ustack::splice::AskReason::Timeout => ubox_shm::event::FLOW_REQ_TIMEOUT,
        };
        let payload = FlowReq {
            client_addr: mapped(ask.client.0),
            vip_addr: mapped(ask.vip.0),
            client_port: ask.client.1,
            vip_port: ask.vip.1,
            attempt: ask.attempt,
            reason,
            last_addr: ask.last.map_or([0; 16], |l| mapped(l.0)),
            last_port: ask.last.map_or(0, |l| l.1),
            ..FlowReq::default()
        };
        let h = EventHeader {
            type_id: event::FLOW_REQ.raw(),
            flow_id,
            pkt_off: if pkt_off == 0 { 0 } else { pkt_off },
            pkt_len: if pkt_off == 0 { 0 } else { req.len() as u32 },
            worker: self.w as u8,
            side: SIDE_CLIENT,
            ..EventHeader::default()
        };
        let mut bytes = [0u8; EVENT_HEADER_LEN + std::mem::size_of::<FlowReq>()];
        let _ = h.write(&mut bytes);
        bytes[EVENT_HEADER_LEN..].copy_from_slice(&payload.to_bytes());
        self.notice(k, None, &h, &bytes, None)
    }

    /// The id the policy knows splicer flow `id` by: its flow-table id, when
    /// the connection has one (noted for the answer), else the splicer's.
    fn splice_table_id(&mut self, id: u64, client: (std::net::Ipv4Addr, u16), vip: (std::net::Ipv4Addr, u16)) -> u64 {
        let Some(s) = self.splice.as_mut() else { return id };
        match s.table_ids.get(&SpliceSide::key_of(client, vip)) {
            Some(&t) => {
                s.by_table.insert(t, id);
                t
            }
            None => id,
        }
    }

    /// `FLOW/END` of a spliced connection to the policy NF.
    fn splice_ended(&mut self, e: &ustack::splice::Ended) {
        use ustack::splice::EndWhy;
        let flow_id = match self.splice.as_mut() {
            Some(s) => match s.table_ids.remove(&SpliceSide::key_of(e.client, e.vip)) {
                Some(t) if s.by_table.get(&t) == Some(&e.flow_id) => {
                    s.by_table.remove(&t);
                    t
                }
                Some(t) => {
                    s.table_ids.insert(SpliceSide::key_of(e.client, e.vip), t);
                    e.flow_id
                }
                None => e.flow_id,
            },
            None => return,
        };
        let Some(k) = self.policy(event::FLOW_END) else { return };
        let fe = FlowEnd {
            client_addr: mapped(e.client.0),
            server_addr: e.backend.map_or([0; 16], |b| mapped(b.0)),
            client_port: e.client.1,
            server_port: e.backend.map_or(0, |b| b.1),
            proto: 6,
            reason: match e.why {
                EndWhy::Closed => ubox_shm::event::FLOW_END_TCP_CLOSED,
                EndWhy::Reset => ubox_shm::event::FLOW_END_TCP_RESET,
                EndWhy::Idle => ubox_shm::event::FLOW_END_IDLE,
                EndWhy::Rejected => ubox_shm::event::FLOW_END_TERMINATED,
                EndWhy::Evicted => ubox_shm::event::FLOW_END_EVICTED,
                EndWhy::Shutdown => ubox_shm::event::FLOW_END_SHUTDOWN,
            },
            _pad: [0; 2],
            client_packets: e.client_packets,
            client_bytes: e.client_bytes,
            server_packets: e.server_packets,
            server_bytes: e.server_bytes,
            client_payload: 0,
            server_payload: 0,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        };
        let h = EventHeader {
            type_id: event::FLOW_END.raw(),
            flow_id,
            worker: self.w as u8,
            side: SIDE_CLIENT,
            ..EventHeader::default()
        };
        let mut bytes = [0u8; EVENT_HEADER_LEN + std::mem::size_of::<FlowEnd>()];
        let _ = h.write(&mut bytes);
        bytes[EVENT_HEADER_LEN..].copy_from_slice(&fe.to_bytes());
        self.notice(k, None, &h, &bytes, None);
    }
}

/// Arena offset of packet bytes (0 if they are not in the data region,
/// which cannot happen for mbufs of the arena-backed pool).
#[inline]
fn arena_offset(start: usize, len: usize, off: u64, data: &[u8]) -> u64 {
    let a = data.as_ptr() as usize;
    if a >= start && a + data.len() <= start + len {
        off + (a - start) as u64
    } else {
        0
    }
}

/// Whether NF `k` (generation `gen`) takes `ty` for flow `key`, by its
/// subscriptions with flow filters (cached per generation).
fn filter_wants(
    table: &NfTable,
    cache: &mut (u32, SubFilters),
    k: usize,
    gen: u32,
    ty: EventTypeId,
    key: &FlowKey,
) -> bool {
    if cache.0 != gen {
        let f = Arc::clone(&table.slots[k].filters.lock().unwrap_or_else(|e| e.into_inner()));
        *cache = (gen, f);
    }
    filters_take(&cache.1, ty, key)
}

fn side_code(s: Side) -> u8 {
    match s {
        Side::Client => SIDE_CLIENT,
        Side::Server => SIDE_SERVER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snap {
        let plan = |name: &str, stages: Vec<Vec<(usize, Policy)>>| ChainPlan {
            name: name.into(),
            filter: FlowFilter::default(),
            names: Vec::new(),
            stages,
            unmonitored_drop: false,
        };
        Snap::new(Arc::new(ChainSnapshot {
            version: 1,
            origin: "t".into(),
            chains: vec![
                plan("a", vec![vec![(0, Policy::FailClosed)], vec![(1, Policy::FailOpen), (2, Policy::FailClosed)]]),
                plan("b", vec![vec![(1, Policy::FailOpen)]]),
            ],
        }))
    }

    #[test]
    fn routes_resolve_members_to_instances_and_are_made_once() {
        let mut s = snap();
        assert_eq!(s.routes.len(), 2, "one route per chain to begin with");
        assert_eq!(s.routes[0].slots, vec![0, 1, 2]);
        // Chain a with NF 0 as its instance in slot 5.
        let r = s.route(0, &[5, 1, 2]).unwrap();
        assert_eq!(r, 2);
        assert_eq!(s.route(0, &[5, 1, 2]), Some(2), "the same picks, the same route");
        assert_eq!(s.route(1, &[5]), Some(3), "another chain, another route");
        let (at, end) = s.bounds[r];
        let stages = &s.stages[at as usize..end as usize];
        assert_eq!((stages.len(), stages[0].nfs[0], stages[1].n), (2, 5, 2));
        // Policies stay with their positions; the base route is untouched.
        assert!(stages[0].closed(0) && !stages[1].closed(0) && stages[1].closed(1));
        assert_eq!(s.stages[s.bounds[0].0 as usize].nfs[0], 0);
        assert_eq!(s.routes[r].members, vec![(5, true), (1, false), (2, true)]);
        let n = s.stages.len();
        assert_eq!(s.route(0, &[5]), None, "picks that do not fit the chain");
        assert_eq!(s.stages.len(), n, "and nothing half made");
    }
}
