//! Single-writer counters shared between a worker and the control thread.
//!
//! Each worker owns one [`WorkerCounters`]; only that worker writes it (a
//! relaxed load and store, which on x86 is a plain `mov`: no locked
//! instruction on the data path). The control thread reads with relaxed
//! loads: a snapshot may be a few packets behind, never torn per counter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use controller::api::RttHistogram;
use ustack::l3::DropReason;

/// One monotonically increasing counter with a single writer.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The [`RttHistogram`] bucket of a round trip of `ticks` TSC ticks, with
/// `ns_per_tick_q32` the nanoseconds per tick in 32.32 fixed point: a
/// multiply, a shift, a leading-zero count and a minimum.
#[inline(always)]
pub fn rtt_bucket(ticks: u64, ns_per_tick_q32: u64) -> usize {
    RttHistogram::bucket(((ticks as u128 * ns_per_tick_q32 as u128) >> 32) as u64)
}

/// Drops the runtime decides on, beyond the parse errors of `ustack::l3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RuntimeDrop {
    /// The ingress port is not part of any `[[wire]]`.
    NoRoute,
    /// The flow's owner worker's handoff ring was full.
    HandoffFull,
    /// A chained (multi-segment) mbuf; ports here deliver whole frames.
    MultiSegment,
    /// An NF answered Drop.
    NfVerdict,
    /// A `fail-closed` NF was absent or died holding the packet.
    NfFailClosed,
    /// An NF's ring was full.
    NfRingFull,
    /// No free event slot in the arena.
    NoEventSlot,
    /// A later packet of a flow an NF had terminated (`FLOW/TCP/TERMINATE`).
    TcpTerminated,
    /// A packet of a flow the TCP monitor could not track or reassemble for
    /// its chain (table full, no stream ring), under `on_unmonitored = "drop"`.
    Unmonitored,
    /// No mbuf for a frame the runtime made (a splicer's SYN-ACK, RST, ...).
    NoMbuf,
    /// A segment of a strict flow (`on_unmonitored = "drop"`) the TCP
    /// monitor could not keep (its side's out-of-order ranges full): not
    /// forwarded, so that its sender sends it again once the hole before it
    /// fills, instead of a hole the receiver acknowledges and nobody fills.
    MonitorUnkept,
    /// A segment of a strict flow that needed stream-ring space its NFs
    /// still read: not forwarded, so that its sender sends it again once
    /// they caught up, instead of the side stopping and the flow reset.
    MonitorRingFull,
}

impl RuntimeDrop {
    pub const ALL: [RuntimeDrop; 12] = [
        RuntimeDrop::NoRoute,
        RuntimeDrop::HandoffFull,
        RuntimeDrop::MultiSegment,
        RuntimeDrop::NfVerdict,
        RuntimeDrop::NfFailClosed,
        RuntimeDrop::NfRingFull,
        RuntimeDrop::NoEventSlot,
        RuntimeDrop::TcpTerminated,
        RuntimeDrop::Unmonitored,
        RuntimeDrop::NoMbuf,
        RuntimeDrop::MonitorUnkept,
        RuntimeDrop::MonitorRingFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RuntimeDrop::NoRoute => "no_route",
            RuntimeDrop::HandoffFull => "handoff_full",
            RuntimeDrop::MultiSegment => "multi_segment",
            RuntimeDrop::NfVerdict => "nf_verdict_drop",
            RuntimeDrop::NfFailClosed => "nf_fail_closed",
            RuntimeDrop::NfRingFull => "nf_ring_full",
            RuntimeDrop::NoEventSlot => "no_event_slot",
            RuntimeDrop::TcpTerminated => "tcp_terminated",
            RuntimeDrop::Unmonitored => "unmonitored",
            RuntimeDrop::NoMbuf => "no_mbuf",
            RuntimeDrop::MonitorUnkept => "monitor_holes_full",
            RuntimeDrop::MonitorRingFull => "monitor_ring_full",
        }
    }
}

/// Events the runtime could not deliver to an NF. These are events, not
/// packets: the chain's policy decides what happens to the packet (a
/// `fail-open` stage lets it by, a `fail-closed` one drops it, counted as
/// a [`RuntimeDrop`] too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventSkip {
    /// The NF's descriptor ring was full (no backpressure).
    RingFull,
    /// No free event slot or in-flight entry.
    NoSlot,
    /// The NF is absent or dead and its stage is `fail-open`.
    NfAbsent,
}

impl EventSkip {
    pub const ALL: [EventSkip; 3] = [EventSkip::RingFull, EventSkip::NoSlot, EventSkip::NfAbsent];

    pub fn name(self) -> &'static str {
        match self {
            EventSkip::RingFull => "ring_full",
            EventSkip::NoSlot => "no_slot",
            EventSkip::NfAbsent => "nf_absent",
        }
    }
}

/// Per-port counters of one worker.
#[derive(Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub tx_dropped: Counter,
}

/// Everything one worker counts. Cache-line aligned so two workers' counters
/// never share a line.
#[repr(align(64))]
pub struct WorkerCounters {
    pub ports: Vec<PortCounters>,
    pub rx_packets: Counter,
    pub forwarded: Counter,
    pub replies: Counter,
    pub consumed: Counter,
    pub handoff_out: Counter,
    pub handoff_in: Counter,
    /// Indexed by `DropReason::index()`.
    pub parse_drops: Vec<Counter>,
    /// Indexed by `RuntimeDrop as usize`.
    pub runtime_drops: Vec<Counter>,
    pub flows_active: Counter,
    pub flows_started: Counter,
    pub flows_ended_idle: Counter,
    pub flows_evicted: Counter,
    pub flows_ended_shutdown: Counter,
    /// Monitored TCP connections ended a linger after they closed.
    pub flows_ended_closed: Counter,
    /// Of `flows_evicted`, the embryonic ones.
    pub flows_evicted_embryonic: Counter,
    /// Embryonic flows in the table now (a gauge).
    pub flows_embryonic: Counter,
    /// Events handed back by the NF that were not waiting (a bug or a
    /// confused NF); counted, ignored.
    pub nf_stray_answers: Counter,
    /// Events reclaimed from NFs that died holding them.
    pub nf_reclaimed: Counter,
    /// Events answered by NFs, and the sum of their round trips (TSC ticks
    /// from publish to answer).
    pub nf_answers: Counter,
    pub nf_rtt_ticks: Counter,
    /// The same round trips by bucket ([`RttHistogram`]: log2-spaced from
    /// 1 µs), counted locally per answer and added here once per flush.
    pub nf_rtt_buckets: [Counter; RttHistogram::SLOTS],
    /// Loop iterations that skipped RX because an NF ring was nearly full
    /// (`runtime.nf_backpressure`).
    pub rx_paused: Counter,
    /// Events not delivered, by [`EventSkip`].
    pub skipped: Vec<Counter>,
    /// Descriptor ring bursts pushed to NFs, and the descriptors in them.
    pub event_bursts: Counter,
    pub events_pushed: Counter,
    /// Sleeping NFs woken by a push (`runtime.nf_wakeup = "futex"`).
    pub nf_wakeups: Counter,
    /// TSC ticks of loop iterations that did work (received frames or took
    /// answers): the worker's busy time.
    pub busy_ticks: Counter,
    /// Of those, the ticks of taking NF answers (and moving their packets
    /// on or out).
    pub answer_ticks: Counter,
    /// TCP monitor: flows monitored now, monitored in all, refused at
    /// `monitor.max_flows`, sides without a stream ring, RSTs sent for
    /// terminated flows.
    pub mon_active: Counter,
    pub mon_flows: Counter,
    pub mon_full: Counter,
    /// Monitored flows evicted at `max_flows` to make room (closed, then
    /// half-open).
    pub mon_evicted: Counter,
    pub mon_no_buffer: Counter,
    /// Flows the monitor could not serve that their chain let pass unseen
    /// (`on_unmonitored = "pass"`).
    pub mon_unmonitored_passed: Counter,
    pub mon_rsts: Counter,
    pub mon_restarts: Counter,
    pub mon_retired: Counter,
    pub mon_stopped: Counter,
    pub mon_data_events: Counter,
    /// `DATA_RDY` announcements held back for a `fail-closed` reader with
    /// no room, and made again later.
    pub mon_deferred: Counter,
    /// Worker loops that received nothing because some stream's readers
    /// held nearly its whole ring (`runtime.nf_backpressure`).
    pub mon_rx_held: Counter,
    pub mon_unannounced: Counter,
    /// The monitor's segment counters (`monitor::SegTally`, as an array).
    pub mon_tally: [Counter; crate::monitor::TALLY_FIELDS],
    /// The TCP splicer: flows now, segments held, its counters by field.
    pub splice_active: Counter,
    pub splice_held: Counter,
    pub splice: [Counter; ustack::splice::COUNTER_FIELDS],
}

impl WorkerCounters {
    pub fn new(nports: usize) -> WorkerCounters {
        WorkerCounters {
            ports: (0..nports).map(|_| PortCounters::default()).collect(),
            rx_packets: Counter::default(),
            forwarded: Counter::default(),
            replies: Counter::default(),
            consumed: Counter::default(),
            handoff_out: Counter::default(),
            handoff_in: Counter::default(),
            parse_drops: (0..DropReason::COUNT).map(|_| Counter::default()).collect(),
            runtime_drops: (0..RuntimeDrop::ALL.len()).map(|_| Counter::default()).collect(),
            flows_active: Counter::default(),
            flows_started: Counter::default(),
            flows_ended_idle: Counter::default(),
            flows_evicted: Counter::default(),
            flows_ended_shutdown: Counter::default(),
            flows_ended_closed: Counter::default(),
            flows_evicted_embryonic: Counter::default(),
            flows_embryonic: Counter::default(),
            nf_stray_answers: Counter::default(),
            nf_reclaimed: Counter::default(),
            nf_answers: Counter::default(),
            nf_rtt_ticks: Counter::default(),
            nf_rtt_buckets: std::array::from_fn(|_| Counter::default()),
            rx_paused: Counter::default(),
            skipped: (0..EventSkip::ALL.len()).map(|_| Counter::default()).collect(),
            event_bursts: Counter::default(),
            events_pushed: Counter::default(),
            nf_wakeups: Counter::default(),
            busy_ticks: Counter::default(),
            answer_ticks: Counter::default(),
            mon_active: Counter::default(),
            mon_flows: Counter::default(),
            mon_full: Counter::default(),
            mon_evicted: Counter::default(),
            mon_no_buffer: Counter::default(),
            mon_unmonitored_passed: Counter::default(),
            mon_rsts: Counter::default(),
            mon_restarts: Counter::default(),
            mon_retired: Counter::default(),
            mon_stopped: Counter::default(),
            mon_data_events: Counter::default(),
            mon_deferred: Counter::default(),
            mon_rx_held: Counter::default(),
            mon_unannounced: Counter::default(),
            mon_tally: Default::default(),
            splice_active: Counter::default(),
            splice_held: Counter::default(),
            splice: Default::default(),
        }
    }

    #[inline(always)]
    pub fn drop_parse(&self, r: DropReason) {
        self.parse_drops[r.index()].add(1);
    }

    #[inline(always)]
    pub fn drop_runtime(&self, r: RuntimeDrop) {
        self.runtime_drops[r as usize].add(1);
    }

    #[inline(always)]
    pub fn skip_event(&self, why: EventSkip) {
        self.skipped[why as usize].add(1);
    }

    /// Skipped events by reason name, non-zero only.
    pub fn skips(&self) -> std::collections::BTreeMap<String, u64> {
        EventSkip::ALL
            .iter()
            .map(|&e| (e.name().to_string(), self.skipped[e as usize].get()))
            .filter(|&(_, v)| v > 0)
            .collect()
    }

    /// Drops by reason name, non-zero only.
    pub fn drops(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for r in DropReason::ALL {
            let v = self.parse_drops[r.index()].get();
            if v > 0 {
                m.insert(r.name().to_string(), v);
            }
        }
        for r in RuntimeDrop::ALL {
            let v = self.runtime_drops[r as usize].get();
            if v > 0 {
                m.insert(r.name().to_string(), v);
            }
        }
        let tx_full: u64 = self.ports.iter().map(|p| p.tx_dropped.get()).sum();
        if tx_full > 0 {
            m.insert("tx_full".to_string(), tx_full);
        }
        m
    }

    pub fn dropped_total(&self) -> u64 {
        self.parse_drops.iter().chain(self.runtime_drops.iter()).map(Counter::get).sum::<u64>()
            + self.ports.iter().map(|p| p.tx_dropped.get()).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_buckets_from_ticks() {
        // A 2 GHz TSC: half a nanosecond per tick.
        let q32 = (1u64 << 32) / 2;
        assert_eq!(rtt_bucket(0, q32), 0);
        assert_eq!(rtt_bucket(2048, q32), 0, "1024 ns");
        assert_eq!(rtt_bucket(2050, q32), 1, "1025 ns");
        assert_eq!(rtt_bucket(20_000, q32), 4, "10 us: <= 16.384 us");
        assert_eq!(rtt_bucket(2 * 33_554_432, q32), 15, "33.55 ms");
        assert_eq!(rtt_bucket(2 * 33_554_433, q32), 16, "above the last bound");
        assert_eq!(rtt_bucket(u64::MAX, u64::MAX), 16, "no overflow");
    }
}
