//! The poll-mode worker loop: RX burst → L2/L3 → flow table → TX burst.
//!
//! A worker owns one RX/TX queue pair on every port, its flow table and its
//! counters; nothing here takes a lock. When ports cannot spread flows with
//! symmetric RSS and there are several workers, a frame whose flow belongs
//! to another worker (by the flow key's symmetric hash) is handed to that
//! worker over an SPSC ring, so both directions of a flow always meet the
//! same flow-table entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ustack::flow::{EndReason, FlowEvent, FlowRecord, FlowSeed, FlowTable};
use ustack::l3::{self, LocalAddrs, Verdict};

use crate::counters::{RuntimeDrop, WorkerCounters};
use crate::dispatch::{ChainBoard, Dispatcher, MonitorVerdict, Outcome};
use crate::dpdk::eal::rdtsc;
use crate::dpdk::mbuf::Mbuf;
use crate::dpdk::port::{RxQueue, TxQueue};
use crate::dpdk::ring::MbufRing;
use crate::nfs::NfTable;

/// Largest burst a worker handles at once.
pub const MAX_BURST: usize = 512;

/// Flows expired per loop iteration at most, so a mass timeout never stalls
/// the data path.
const EXPIRE_BATCH: usize = 64;

/// Where a worker's flows live when there are several workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// One worker: every flow is on it.
    Single,
    /// The NIC's symmetric RSS already put the flow on this worker's queue.
    Rss,
    /// Software symmetric hash of the flow key; frames may be handed over.
    Software,
}

impl Steering {
    pub fn name(self) -> &'static str {
        match self {
            Steering::Single => "none (1 worker)",
            Steering::Rss => "rss",
            Steering::Software => "software",
        }
    }
}

/// Everything one worker owns. Built on the main lcore, moved to the worker
/// lcore, dropped there at shutdown.
pub struct Worker {
    pub id: usize,
    pub nworkers: usize,
    pub steering: Steering,
    pub burst: usize,
    /// Per port index (config order).
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
    /// Wire peer of each port index.
    pub peer: Vec<Option<usize>>,
    pub local: Vec<LocalAddrs>,
    /// DPDK port id → port index.
    pub index_of_port: Vec<u8>,
    pub table: FlowTable,
    /// Rings to each other worker (None for self).
    pub handoff_out: Vec<Option<Arc<MbufRing>>>,
    /// Rings from each other worker.
    pub handoff_in: Vec<Arc<MbufRing>>,
    pub counters: Arc<WorkerCounters>,
    /// Nanoseconds per TSC tick in 32.32 fixed point.
    pub ns_per_tick_q32: u64,
    /// The arena (event slots, NF rings, packet buffers).
    pub arena: Arc<ubox_shm::Arena>,
    pub nf_table: Arc<NfTable>,
    pub chains: Arc<ChainBoard>,
    /// `runtime.nf_backpressure`.
    pub nf_backpressure: bool,
    /// `runtime.nf_wakeup = "futex"`: ring an NF's doorbell after pushing.
    pub nf_wake: bool,
    /// This worker's TCP monitor (moved into its dispatcher).
    pub monitor: Option<crate::monitor::Monitor>,
    /// The mbuf pool, for frames the runtime makes (RSTs).
    pub mbufs: Arc<crate::dpdk::mempool::Mempool>,
    /// This worker's TCP splicer, if configured (moved into its dispatcher).
    pub splice: Option<crate::dispatch::SpliceSide>,
    /// Where captures are armed (`uboxctl capture`).
    pub capture: Arc<crate::capture::CaptureBoard>,
}

/// Frames on their way out: one buffer per port, and with a splicer one
/// more (index `tx.len()`, see [`Worker::splice_pump`]) for client frames
/// that passed their chain on their way into the splicer.
struct TxBufs {
    bufs: Vec<Vec<Mbuf>>,
    /// Frames the splicer sent toward clients, between the splicer and
    /// the worker's path (reused, to keep its capacity).
    from_splicer: Vec<Mbuf>,
}

impl Worker {
    /// Poll until `running` goes false, then release everything held.
    pub fn run(mut self, running: &AtomicBool) -> i32 {
        let burst = self.burst.min(MAX_BURST);
        let mut rxb: Vec<Mbuf> = Vec::with_capacity(burst);
        // With a splicer, it is one more port (see `splice_pump`): frames
        // to it enter the splicer, frames from it go to the clients.
        let nbufs = self.tx.len() + usize::from(self.splice.is_some());
        let mut txb =
            TxBufs { bufs: (0..nbufs).map(|_| Vec::with_capacity(2 * burst)).collect(), from_splicer: Vec::new() };
        if let Some(s) = &self.splice {
            self.peer.push(Some(s.client_port));
            self.local.push(LocalAddrs::default());
        }
        let nports = self.rx.len();
        let arena = Arc::clone(&self.arena);
        let mut disp = match Dispatcher::new(
            self.id,
            &arena,
            Arc::clone(&self.nf_table),
            Arc::clone(&self.chains),
            Arc::clone(&self.counters),
            self.nf_backpressure,
            self.nf_wake,
            // Room an NF ring needs before the worker polls RX: every port's
            // burst and every handoff ring's may all be for one NF.
            burst * (self.rx.len() + self.handoff_in.len()),
            self.monitor.take().expect("a monitor per worker"),
            Arc::clone(&self.mbufs),
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(worker = self.id, "cannot set up event dispatch: {e}");
                return 1;
            }
        };
        disp.splice = self.splice.take();
        disp.set_capture(Arc::clone(&self.capture));
        tracing::debug!(worker = self.id, ports = nports, "worker polling");
        // Busy time: the ticks of the sections that did work (answers taken,
        // a non-empty RX burst), each from the previous mark to its end;
        // idle polling and the loop's bookkeeping are not counted.
        while running.load(Ordering::Relaxed) {
            let tsc = rdtsc();
            let mut mark = tsc;
            let now = self.ns_of(tsc);
            disp.tick(tsc, now);
            let answers = {
                let c = &self.counters;
                let ntx = self.tx.len();
                let mut emit = |m: Mbuf, out: usize| {
                    if out < ntx {
                        c.forwarded.add(1);
                    }
                    txb.bufs[out].push(m);
                };
                disp.refresh(&mut emit);
                disp.splice_tick(&mut emit);
                disp.poll(&mut emit)
            };
            self.splice_pump(&mut txb, &mut disp, now);
            disp.flush();
            self.flush(&mut txb);
            if answers > 0 {
                let t = rdtsc();
                self.counters.busy_ticks.add(t.wrapping_sub(mark));
                self.counters.answer_ticks.add(t.wrapping_sub(mark));
                mark = t;
            }
            // Backpressure: leave frames in the NIC queues until the NFs
            // catch up (their answers are polled above).
            let paused = disp.congested();
            if paused {
                self.counters.rx_paused.add(1);
            }
            for pi in 0..if paused { 0 } else { nports } {
                let n = self.rx[pi].recv(&mut rxb, burst);
                if n == 0 {
                    continue;
                }
                let pc = &self.counters.ports[pi];
                pc.rx_packets.add(n as u64);
                pc.rx_bytes.add(rxb.iter().map(|m| m.len() as u64).sum());
                self.counters.rx_packets.add(n as u64);
                for m in &rxb {
                    m.prefetch();
                }
                for m in rxb.drain(..) {
                    self.handle(m, pi, now, &mut txb, false, &mut disp);
                }
                disp.terminate_refused(&mut |m, out| txb.bufs[out].push(m));
                self.splice_pump(&mut txb, &mut disp, now);
                disp.flush();
                self.flush(&mut txb);
                let t = rdtsc();
                self.counters.busy_ticks.add(t.wrapping_sub(mark));
                mark = t;
            }
            if self.steering == Steering::Software && self.nworkers > 1 {
                for r in 0..self.handoff_in.len() {
                    let n = self.handoff_in[r].pop_burst(&mut rxb, burst);
                    if n == 0 {
                        continue;
                    }
                    self.counters.handoff_in.add(n as u64);
                    for m in rxb.drain(..) {
                        let pi = self.port_index(m.port());
                        self.handle(m, pi, now, &mut txb, true, &mut disp);
                    }
                    disp.terminate_refused(&mut |m, out| txb.bufs[out].push(m));
                    self.splice_pump(&mut txb, &mut disp, now);
                    disp.flush();
                    self.flush(&mut txb);
                    let t = rdtsc();
                    self.counters.busy_ticks.add(t.wrapping_sub(mark));
                    mark = t;
                }
            }
            let c = &self.counters;
            self.table.expire(now, EXPIRE_BATCH, &mut |e| count_event(c, e, &mut disp.ended));
            // Flows the monitor evicted or saw close a linger ago.
            disp.closed_due();
            let mut to_end = std::mem::take(&mut disp.to_end);
            for (key, why) in to_end.drain(..) {
                self.table.remove(&key, why, &mut |e| count_event(c, e, &mut disp.ended));
            }
            disp.to_end = to_end;
            c.flows_active.set(self.table.len() as u64);
            c.flows_embryonic.set(self.table.embryonic() as u64);
            disp.flows_ended();
        }
        disp.splice_shutdown(&mut |m, out| txb.bufs[out].push(m));
        self.splice_pump(&mut txb, &mut disp, 0);
        self.flush(&mut txb);
        let c = &self.counters;
        self.table.drain(&mut |e| count_event(c, e, &mut disp.ended));
        disp.flows_ended();
        disp.drain();
        c.flows_active.set(0);
        tracing::debug!(worker = self.id, "worker stopped");
        0
    }

    /// Nanoseconds since an arbitrary origin, from a TSC reading.
    #[inline(always)]
    fn ns_of(&self, tsc: u64) -> u64 {
        ((tsc as u128 * self.ns_per_tick_q32 as u128) >> 32) as u64
    }

    #[inline(always)]
    fn port_index(&self, port_id: u16) -> usize {
        self.index_of_port.get(port_id as usize).copied().unwrap_or(0) as usize
    }

    #[inline(always)]
    fn handle(
        &mut self,
        mut m: Mbuf,
        in_port: usize,
        now: u64,
        txb: &mut TxBufs,
        handed_over: bool,
        disp: &mut Dispatcher<'_>,
    ) {
        if m.nb_segs() != 1 {
            self.counters.drop_runtime(RuntimeDrop::MultiSegment);
            return;
        }
        let len = m.len();
        if disp.splice.is_some() && m.data().get(12..14) == Some(&[0x08, 0x06]) {
            let c = &self.counters;
            disp.splice_learn(m.data(), &mut |m, out| {
                c.forwarded.add(1);
                txb.bufs[out].push(m);
            });
        }
        let verdict = l3::process(m.data_mut(), &self.local[in_port]);
        match verdict {
            Verdict::Forward { flow } => {
                let mut to_splicer = false;
                if let Some(f) = flow.filter(|f| f.key.proto() == 6 && disp.splice.is_some()) {
                    if in_port == self.tx.len() && self.table.get(&f.key).is_none() {
                        // From the splicer, of a connection with no flow
                        // state (a SYN cookie, a RST to a stranger).
                        self.counters.forwarded.add(1);
                        txb.bufs[self.peer[in_port].unwrap_or(0)].push(m);
                        return;
                    }
                    if let Some(from) = disp.splice_claims(m.data()) {
                        if self.steering == Steering::Software && self.nworkers > 1 && !handed_over {
                            let owner = FlowSeed::owner(self.table.hash(&f.key), self.nworkers);
                            if owner != self.id {
                                let ring = self.handoff_out[owner].as_ref().expect("ring to every other worker");
                                match ring.push(m) {
                                    Ok(()) => self.counters.handoff_out.add(1),
                                    Err(_m) => self.counters.drop_runtime(RuntimeDrop::HandoffFull),
                                }
                                return;
                            }
                        }
                        if from == ustack::splice::Source::Client && disp.splice_admits(m.data()) {
                            // A connection the splicer holds (or is about
                            // to): the flow's path as any other's, to the
                            // splicer's port.
                            to_splicer = true;
                        } else {
                            let c = &self.counters;
                            c.consumed.add(1);
                            disp.splice_input(m, from, &mut |m, out| {
                                c.forwarded.add(1);
                                txb.bufs[out].push(m);
                            });
                            return;
                        }
                    }
                }
                let out = if to_splicer {
                    self.tx.len()
                } else {
                    let Some(out) = self.peer[in_port] else {
                        self.counters.drop_runtime(RuntimeDrop::NoRoute);
                        return;
                    };
                    out
                };
                if let Some(f) = flow {
                    let c = &self.counters;
                    let mut started = false;
                    // A SYN or RST never completes a handshake (see FlowTable).
                    let establishes = f
                        .tcp_flags
                        .map_or(true, |t| !t.intersects(ustack::wire::TcpFlags::SYN | ustack::wire::TcpFlags::RST));
                    let (id, side) = if self.steering == Steering::Software && self.nworkers > 1 {
                        let hash = self.table.hash(&f.key);
                        let owner = FlowSeed::owner(hash, self.nworkers);
                        if owner != self.id && !handed_over {
                            let ring = self.handoff_out[owner].as_ref().expect("ring to every other worker");
                            match ring.push(m) {
                                Ok(()) => c.handoff_out.add(1),
                                Err(_m) => c.drop_runtime(RuntimeDrop::HandoffFull),
                            }
                            return;
                        }
                        let ended = &mut disp.ended;
                        self.table.touch_hashed(&f.key, hash, f.dir, len as u32, now, establishes, &mut |e| {
                            started |= matches!(e, FlowEvent::Start(_));
                            count_event(c, e, ended)
                        })
                    } else {
                        let ended = &mut disp.ended;
                        self.table.touch_as(&f.key, f.dir, len as u32, now, establishes, &mut |e| {
                            started |= matches!(e, FlowEvent::Start(_));
                            count_event(c, e, ended)
                        })
                    };
                    // A flow gets its chain (or "none") when it starts and keeps
                    // it: chains applied later affect only flows started later.
                    if started {
                        if let Some(t) = self.table.last_tag_mut() {
                            *t = disp.assign(&f.key);
                            disp.flow_started(*t, &f.key, id, f.dir);
                        }
                        if to_splicer {
                            disp.splice_flow_started(&f.key, id);
                        }
                    }
                    if disp.active() {
                        let Some(&mut mut flow_tag) = self.table.last_tag_mut() else { return };
                        if flow_tag & crate::dispatch::CHAIN_MASK != 0
                            && flow_tag & crate::dispatch::MONITORED == 0
                            && f.key.proto() == 6
                        {
                            if let Some(t) = disp.monitor_upgrade(flow_tag) {
                                flow_tag = t;
                                if let Some(tag) = self.table.last_tag_mut() {
                                    *tag = t;
                                }
                            }
                        }
                        if flow_tag & crate::dispatch::MONITORED != 0 {
                            let l4 = usize::from(f.l4_offset)..usize::from(f.l4_offset) + usize::from(f.ip_payload_len);
                            match disp.monitor(&m, l4.clone(), flow_tag, &f.key, id, side, f.dir, (in_port, out)) {
                                MonitorVerdict::Forward => {}
                                v @ (MonitorVerdict::Terminated | MonitorVerdict::Refused) => {
                                    // A later packet of a terminated flow, or a
                                    // new flow the monitor has no room for: its
                                    // sender gets a RST, as from a closed port.
                                    // For a terminated flow this is what makes the
                                    // end stop when the stack's own RST missed:
                                    // that RST's seq is the monitor's view, which
                                    // can be ahead of what the end has received
                                    // (packets still held by the chain), so Linux
                                    // answers it with a challenge ACK; the RST to
                                    // that ACK carries its ack number, exactly the
                                    // end's rcv_nxt (RFC 5961 §3.2). One RST per
                                    // packet received, none for a RST.
                                    let reason = if v == MonitorVerdict::Terminated {
                                        RuntimeDrop::TcpTerminated
                                    } else {
                                        RuntimeDrop::Unmonitored
                                    };
                                    self.counters.drop_runtime(reason);
                                    let rst = crate::monitor::reset_reply(m.data(), l4, &f.key, f.dir);
                                    if let Some(r) = rst.and_then(|b| self.mbufs.alloc_frame(&b)) {
                                        self.counters.mon_rsts.add(1);
                                        txb.bufs[in_port].push(r);
                                    }
                                    return;
                                }
                                MonitorVerdict::Unmonitored => {
                                    self.counters.drop_runtime(RuntimeDrop::Unmonitored);
                                    return;
                                }
                                MonitorVerdict::Unkept => {
                                    self.counters.drop_runtime(RuntimeDrop::MonitorUnkept);
                                    return;
                                }
                                MonitorVerdict::RingFull => {
                                    self.counters.drop_runtime(RuntimeDrop::MonitorRingFull);
                                    return;
                                }
                            }
                        }
                        match disp.start(m, out, flow_tag, &f.key, id, side) {
                            Outcome::Forward(m, out) => {
                                if out < self.tx.len() {
                                    self.counters.forwarded.add(1);
                                }
                                txb.bufs[out].push(m);
                            }
                            Outcome::Taken => {}
                        }
                        disp.publish_reports();
                        return;
                    }
                    if disp.capturing() {
                        disp.capture_unchained(m.data(), &f.key, id);
                    }
                }
                if out < self.tx.len() {
                    self.counters.forwarded.add(1);
                }
                txb.bufs[out].push(m);
            }
            Verdict::Reply => {
                self.counters.replies.add(1);
                txb.bufs[in_port].push(m);
            }
            Verdict::Consume => self.counters.consumed.add(1),
            Verdict::Drop(reason) => self.counters.drop_parse(reason),
        }
    }

    /// Moves frames between the splicer and the rest of the worker: client
    /// frames that passed their chain (in the splicer port's buffer) go
    /// into the splicer, and what it sends toward clients goes the way of
    /// a frame received on the splicer's port (the flow table, the monitor
    /// and the chain of its connection, then the client port). Bounded
    /// rounds; what is left waits for the next call.
    fn splice_pump(&mut self, txb: &mut TxBufs, disp: &mut Dispatcher<'_>, now: u64) {
        if disp.splice.is_none() {
            return;
        }
        let sp = self.tx.len();
        for _ in 0..8 {
            let mut into = std::mem::take(&mut txb.bufs[sp]);
            let c = &self.counters;
            for m in into.drain(..) {
                c.consumed.add(1);
                disp.splice_input(m, ustack::splice::Source::Client, &mut |m, out| {
                    c.forwarded.add(1);
                    txb.bufs[out].push(m);
                });
            }
            txb.bufs[sp] = into;
            let mut from = std::mem::take(&mut txb.from_splicer);
            disp.splice_to_client(&mut from);
            if from.is_empty() {
                txb.from_splicer = from;
                if txb.bufs[sp].is_empty() {
                    return;
                }
                continue;
            }
            for m in from.drain(..) {
                self.handle(m, sp, now, txb, true, disp);
            }
            txb.from_splicer = from;
        }
    }

    fn flush(&mut self, txb: &mut TxBufs) {
        for (pi, buf) in txb.bufs.iter_mut().enumerate().take(self.tx.len()) {
            if buf.is_empty() {
                continue;
            }
            let bytes: usize = buf.iter().map(Mbuf::len).sum();
            let (sent, dropped, dropped_bytes) = self.tx[pi].send(buf);
            let pc = &self.counters.ports[pi];
            pc.tx_packets.add(sent as u64);
            pc.tx_bytes.add((bytes - dropped_bytes) as u64);
            if dropped > 0 {
                pc.tx_dropped.add(dropped as u64);
            }
        }
    }
}

/// Counts a flow-table event; flows that had a chain and end are queued for
/// the dispatcher (`FLOW/END`, monitor state).
#[inline(always)]
fn count_event(c: &WorkerCounters, e: FlowEvent, ended: &mut Vec<(FlowRecord, EndReason)>) {
    match e {
        FlowEvent::Start(_) => c.flows_started.add(1),
        FlowEvent::End(r, why) => {
            match why {
                EndReason::IdleTimeout => c.flows_ended_idle.add(1),
                EndReason::Evicted => {
                    c.flows_evicted.add(1);
                    if !r.established {
                        c.flows_evicted_embryonic.add(1);
                    }
                }
                EndReason::Shutdown => c.flows_ended_shutdown.add(1),
                EndReason::Closed => c.flows_ended_closed.add(1),
            }
            if r.tag & crate::dispatch::CHAIN_MASK != 0 {
                ended.push((r, why));
            }
        }
    }
}
