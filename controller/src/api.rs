//! Control-socket protocol: one JSON object per line each way.
//!
//! A client connects to the runtime's Unix socket (by default
//! `/run/ubox/<instance>.sock`), writes one [`Request`] as a JSON line and
//! reads one [`Response`] line back.
//!
//! **NF sessions.** An NF process sends [`Request::Register`] with its
//! manifest and receives [`Response::Registered`]: per worker, the index of
//! its channel in the arena; and, attached to the answer's first bytes
//! (`SCM_RIGHTS`), the descriptors of its part of the arena in this order:
//! the arena file (read-only), the packet region (read-only, or read-write
//! for an NF that modifies packets), then its channels in the order of
//! [`NfSession::rings`] (`ubox_shm::Grant`). The NF then keeps the
//! connection open for as long as it runs: the runtime takes the connection
//! closing (exit, crash, `kill -9`) as the NF's death.
//!
//! **Data path** (rings in the arena, no syscalls): the worker pushes a
//! 32-byte `ubox_shm::event::Desc` per event on the channel's descriptor
//! ring (type, flow, side, the packet's arena offset and length, a cookie;
//! events with a snapshot or payload name a slot holding the full header).
//! The NF reads it and the packet bytes in place and pushes an 8-byte
//! `ubox_shm::event::Answer` (the cookie and its verdict) on the answer
//! ring. The runtime owns the packet and any slot throughout; the NF
//! publishes an event into its channel's publish area and names the record
//! with an answer; it never allocates or frees a slot.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default control socket of an instance.
pub fn default_socket(instance: &str) -> PathBuf {
    PathBuf::from(format!("/run/ubox/{instance}.sock"))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// All counters.
    Stats,
    /// Liveness and identity.
    Ping,
    /// An NF process registers (and keeps the connection open while it runs).
    /// `join` says what to do when the name already runs: refuse (the
    /// default), add an instance, or take over (a release).
    Register {
        manifest: crate::registry::NfManifest,
        #[serde(default)]
        join: Join,
    },
    /// Stop giving new flows to an NF's instances (one with `instance`,
    /// else all of them); each is told to exit once its flows have ended,
    /// or `timeout_ms` (default 30 s) after the drain began.
    NfDrain { name: String, instance: Option<u32>, timeout_ms: Option<u64> },
    /// Arm a release of an NF: the next registration of `name` (even
    /// without `--takeover`) registers next to the running instances, takes
    /// the new flows, and they drain (`timeout_ms`, default 30 s).
    NfRelease { name: String, timeout_ms: Option<u64> },
    /// Ask every running instance of an NF to read its configuration again
    /// (SIGHUP to its process; refused for an NF that does not catch it,
    /// which SIGHUP would kill).
    NfReload { name: String },
    /// The registered NFs.
    NfList,
    /// Apply a chain file (its text; `origin` names it in errors). New flows
    /// use the new chains; flows already running keep theirs.
    ChainApply { text: String, origin: String },
    /// The chains in force.
    ChainShow,
    /// Arm a capture (`uboxctl capture`): at most `count` packets and
    /// `max_bytes` bytes of `target`'s packets, each cut at `snaplen`, for at
    /// most `timeout_ms`. One capture at a time.
    CaptureStart { target: crate::capture::CaptureTarget, count: u64, max_bytes: u64, snaplen: u32, timeout_ms: u64 },
    /// Take up to `max` records of capture `id` (answered with what is
    /// queued now, possibly none). A capture nobody reads for 5 s ends.
    CaptureRead { id: u64, max: u32 },
    /// End capture `id` now; the answer has the records still queued.
    CaptureStop { id: u64 },
}

impl Request {
    /// Whether only root may make this request: it changes what the
    /// runtime does (which NFs see which flows). Everything else reads, or
    /// registers an NF, which the runtime's group may do.
    pub fn needs_root(&self) -> bool {
        // A capture hands out packet contents, drain and release end NFs: root's too.
        matches!(
            self,
            Request::ChainApply { .. }
                | Request::CaptureStart { .. }
                | Request::CaptureRead { .. }
                | Request::CaptureStop { .. }
                | Request::NfDrain { .. }
                | Request::NfRelease { .. }
                | Request::NfReload { .. }
        )
    }

    /// The `uboxctl` command that makes this request, for messages.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Stats => "stats",
            Request::Ping => "ping",
            Request::Register { .. } => "register",
            Request::NfList => "nf list",
            Request::ChainApply { .. } => "chain apply",
            Request::ChainShow => "chain show",
            Request::CaptureStart { .. } | Request::CaptureRead { .. } | Request::CaptureStop { .. } => "capture",
            Request::NfDrain { .. } => "nf drain",
            Request::NfRelease { .. } => "nf release",
            Request::NfReload { .. } => "nf reload",
        }
    }
}

/// What a registration does when its NF name already runs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Join {
    /// Refuse it (the name is taken), unless a release was armed
    /// ([`Request::NfRelease`]): then as `Takeover`.
    #[default]
    Exclusive,
    /// Another instance of the NF: the runtime spreads new flows over the
    /// live instances; a flow stays with the one it started on.
    Instance,
    /// A new version: it takes every new flow; the instances running
    /// before drain (their flows stay on them until they end, at most
    /// `drain_ms`), then are told to exit.
    Takeover { drain_ms: u64 },
}

/// Drain timeout when none is given: how long a draining instance keeps
/// flows before it is told to exit regardless.
pub const DEFAULT_DRAIN_MS: u64 = 30_000;

/// The arena channel of one NF on one worker: its descriptor ring (the
/// worker produces, the NF consumes) and its answer ring (the other way).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NfRings {
    pub worker: u32,
    /// Channel index in the arena.
    pub channel: u32,
}

/// What a registered NF needs to run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NfSession {
    pub nf_id: u32,
    pub name: String,
    /// The arena file, for messages (the NF gets its parts as descriptors
    /// with this answer and never opens the path).
    pub arena: PathBuf,
    pub rings: Vec<NfRings>,
    /// Resolved type ids of the manifest's subscriptions, in order.
    pub subscriptions: Vec<u64>,
    /// Resolved type ids of the manifest's publications, in order.
    pub publications: Vec<u64>,
    /// CPUs the NF should run its poll loop on (none: anywhere).
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// How the NF waits when it has nothing to do.
    #[serde(default)]
    pub wakeup: NfWakeup,
}

/// How an idle NF waits for events (`runtime.nf_wakeup`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NfWakeup {
    /// After a short spin, sleep on the doorbell of its first channel (a
    /// futex in the arena); a worker that pushes events wakes it. No CPU
    /// burnt while idle, no timer latency when work comes.
    #[default]
    Futex,
    /// Spin, then yield, then sleep in growing steps up to 1 ms; workers
    /// never make a system call.
    Poll,
}

/// One registered NF, as `uboxctl nf list` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NfInfo {
    pub nf_id: u32,
    pub name: String,
    pub version: String,
    /// `running` while its session is open, `dead` after it closed.
    pub state: String,
    pub subscriptions: Vec<String>,
    pub publications: Vec<String>,
    pub events_in: u64,
    pub events_out: u64,
    /// The NF process (of its last run, for a dead one) and its user, as
    /// the kernel recorded them when it connected (`SO_PEERCRED`); none
    /// for an NF a chain names that never registered.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub uid: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Stats(Stats),
    Pong {
        instance: String,
        pid: u32,
    },
    Registered(NfSession),
    Nfs {
        nfs: Vec<NfInfo>,
    },
    /// The chains in force: version (0 = none applied), where they came from,
    /// one line per chain.
    Chains {
        version: u32,
        origin: String,
        chains: Vec<String>,
    },
    /// A capture's records since the last read, and its counts so far;
    /// `ended` says why it is over (`count`, `bytes`, `timeout`, `stopped`,
    /// `idle`), once it is and every record was handed out.
    Capture {
        id: u64,
        snaplen: u32,
        records: Vec<crate::capture::CaptureRecord>,
        counts: crate::capture::CaptureCounts,
        #[serde(default)]
        ended: Option<String>,
    },
    Error {
        message: String,
    },
    /// A request that changes something was carried out (what it did).
    Done {
        message: String,
    },
    /// Sent by the runtime on an NF's registration connection (after
    /// `Registered`): exit now (it was drained or replaced by a release).
    Exit {
        reason: String,
    },
}

/// Counters of a whole runtime instance at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub instance: String,
    pub uptime_ms: u64,
    /// How flows reach their worker: `rss` or `software`.
    pub steering: String,
    pub ports: Vec<PortStats>,
    pub workers: Vec<WorkerStats>,
    #[serde(default)]
    pub pools: PoolStats,
    /// One row per registered (or chain-reserved) NF.
    #[serde(default)]
    pub nfs: Vec<NfStats>,
    #[serde(default)]
    pub control: ControlStats,
    /// Capture on demand (`uboxctl capture`).
    #[serde(default)]
    pub capture: crate::capture::CaptureStats,
}

/// The control socket's own counters: requests served, and each limit that
/// was hit (line length, time to send a request or take an answer, open
/// connections).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlStats {
    /// Connections accepted since start, and open now.
    pub connections: u64,
    pub open: u64,
    /// Well-formed requests passed to the runtime.
    pub requests: u64,
    /// Lines that were not a request (answered with an error).
    pub bad_requests: u64,
    /// Lines over the length limit (answered with an error).
    pub too_long: u64,
    /// Connections closed for not finishing a request, or not reading the
    /// answer, in time.
    pub timed_out: u64,
    /// Connections closed to make room at the connection limit.
    pub evicted: u64,
    /// Requests refused because only root may make them (`chain apply`
    /// from a member of the runtime's group).
    #[serde(default)]
    pub denied: u64,
}

/// Counters of one NF, summed over workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NfStats {
    pub name: String,
    /// `running`, `dead` or `absent` (named by a chain, never registered).
    pub state: String,
    /// Events given to it and events it answered.
    pub events_in: u64,
    pub events_out: u64,
    /// Events waiting in its rings now (all workers).
    pub queue_depth: u64,
    /// What the NF reported about its own work (summed over its channels):
    /// non-empty bursts it took, events in them, and the nanoseconds it
    /// spent handling them (from its first pop to its answers' push).
    #[serde(default)]
    pub nf_bursts: u64,
    #[serde(default)]
    pub nf_events: u64,
    #[serde(default)]
    pub nf_busy_ns: u64,
    /// By reason: `ring_full`, `no_event_slot`, `verdict_drop`, `modified`,
    /// `fail_closed`, `skipped_absent`, `reclaimed`, `published`,
    /// `bad_publish`, `bad_verdict`, `stray_answer` (only non-zero ones).
    pub counts: std::collections::BTreeMap<String, u64>,
    /// The instance number (1, 2, ...) of an NF running as several
    /// instances (`name` is then `NAME#N`); 0 for a single one.
    #[serde(default)]
    pub instance: u32,
    /// It takes no new flows (drained or being replaced).
    #[serde(default)]
    pub draining: bool,
    /// Flows pinned to it now, and every flow ever given to it.
    #[serde(default)]
    pub flows: u64,
    #[serde(default)]
    pub flows_assigned: u64,
}

/// Free counts of the shared pools: back at their idle values once traffic
/// stops, whatever NFs did (died, restarted) meanwhile.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolStats {
    pub mbufs_total: u64,
    pub mbufs_free: u64,
    pub event_slots_total: u64,
    pub event_slots_free: u64,
}

/// One port, summed over the workers that poll it, plus the PMD's own view.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub device: String,
    pub driver: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the TX queue refused (full), freed and counted here.
    pub tx_dropped: u64,
    pub pmd: PmdStats,
}

/// `rte_eth_stats` of a port.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PmdStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// One worker lcore.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    pub id: u32,
    pub lcore: u32,
    pub rx_packets: u64,
    pub forwarded: u64,
    /// ARP and ICMP echo replies sent for the box's own addresses.
    pub replies: u64,
    /// Frames for the box that needed no answer.
    pub consumed: u64,
    /// Packets handed to the worker that owns their flow (software steering).
    pub handoff_out: u64,
    pub handoff_in: u64,
    pub dropped: u64,
    /// Drops by reason (only reasons with a non-zero count).
    pub drops: std::collections::BTreeMap<String, u64>,
    pub flows: FlowStats,
    /// Events NFs answered, events reclaimed from dead NFs, and the total
    /// publish-to-answer time of the answered ones (ns).
    #[serde(default)]
    pub nf_answers: u64,
    #[serde(default)]
    pub nf_reclaimed: u64,
    #[serde(default)]
    pub nf_rtt_ns_total: u64,
    /// Loop iterations that left RX alone because an NF ring was nearly
    /// full (`runtime.nf_backpressure = true`).
    #[serde(default)]
    pub rx_paused: u64,
    /// Events not delivered to an NF, by reason (`ring_full`, `no_slot`,
    /// `nf_absent`; only non-zero ones). Events, not packets: what happened
    /// to the packet is in `drops` (fail-closed) or it was forwarded
    /// (fail-open).
    #[serde(default)]
    pub events_skipped: std::collections::BTreeMap<String, u64>,
    /// Descriptor bursts pushed to NFs and the descriptors in them.
    #[serde(default)]
    pub event_bursts: u64,
    #[serde(default)]
    pub events_pushed: u64,
    /// Sleeping NFs woken by a push (`runtime.nf_wakeup = "futex"`).
    #[serde(default)]
    pub nf_wakeups: u64,
    /// Nanoseconds of loop iterations that did work (frames received or
    /// answers taken): the worker's busy time.
    #[serde(default)]
    pub busy_ns: u64,
    /// Of `busy_ns`, the time spent taking NF answers and moving their
    /// packets on (to the next stage, or out).
    #[serde(default)]
    pub answer_ns: u64,
    /// The answered events' round trips (publish to answer) by bucket:
    /// `nf_answers` and `nf_rtt_ns_total` as a histogram.
    #[serde(default)]
    pub nf_rtt_histogram: RttHistogram,
    /// TCP monitor: flows followed now and in all, flows refused at
    /// `monitor.max_flows`, sides left without a stream ring, RSTs sent for
    /// terminated flows, and the bytes of state per monitored flow (rings
    /// not included).
    #[serde(default)]
    pub monitor: MonitorStats,
    /// The TCP splicer (all zero when none is configured).
    #[serde(default)]
    pub splicer: SplicerStats,
}

/// Event round trips (from the worker's publish to the NF's answer) of one
/// worker, counted in log2-spaced buckets: bucket `i < BUCKETS` holds the
/// round trips of more than `le_ns[i - 1]` and at most `le_ns[i]`
/// nanoseconds (`le_ns[i]` = 1.024 µs · 2^i, so 1.024 µs to 33.6 ms), and
/// the last one those above 33.6 ms. The counts are not cumulative; the
/// bounds travel with them, so a reader never has to know the scheme.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RttHistogram {
    /// Upper bounds of the buckets (ns), increasing; the last bucket has none.
    pub le_ns: Vec<u64>,
    /// Round trips per bucket: one more entry than `le_ns`.
    pub counts: Vec<u64>,
}

impl RttHistogram {
    /// Buckets with an upper bound; one more holds what is above the last.
    pub const BUCKETS: usize = 16;
    /// Entries of `counts`.
    pub const SLOTS: usize = Self::BUCKETS + 1;

    /// The upper bound of bucket `i` (ns): 1024 · 2^i.
    pub const fn bound_ns(i: usize) -> u64 {
        1024 << i
    }

    /// The bucket of a round trip of `ns` nanoseconds: the first whose bound
    /// is at least `ns` (a shift, a leading-zero count and a minimum).
    #[inline(always)]
    pub fn bucket(ns: u64) -> usize {
        let units = ns.saturating_sub(1) >> 10;
        ((u64::BITS - units.leading_zeros()) as usize).min(Self::BUCKETS)
    }

    /// A histogram of these bucket counts (`SLOTS` of them) and the standard bounds.
    pub fn from_counts(counts: impl IntoIterator<Item = u64>) -> RttHistogram {
        RttHistogram { le_ns: (0..Self::BUCKETS).map(Self::bound_ns).collect(), counts: counts.into_iter().collect() }
    }

    /// Round trips counted in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound (ns) of the bucket holding the `q` quantile (0..=1)
    /// of the round trips; `None` when there are none, or it is in the
    /// last bucket, which has no bound.
    pub fn quantile_bound_ns(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return self.le_ns.get(i).copied();
            }
        }
        None
    }

    /// Adds `other`'s counts to these (same bounds, as in one instance).
    pub fn add(&mut self, other: &RttHistogram) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
}

/// The TCP splicer of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SplicerStats {
    /// Flows in the splicer now, and client segments held for the splice.
    pub active: u64,
    pub held: u64,
    /// Every splicer counter by name (`ustack::splice::Counters`), those
    /// that are non-zero.
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// The TCP monitor of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonitorStats {
    pub active: u64,
    pub flows: u64,
    pub full: u64,
    pub no_buffer: u64,
    /// Flows the monitor could not serve (full, no ring) that their chain
    /// let pass unseen (`on_unmonitored = "pass"`); under `"drop"` their
    /// packets are counted in `drops.unmonitored` instead.
    #[serde(default)]
    pub unmonitored_passed: u64,
    pub rsts: u64,
    /// Connections restarted by a new SYN on a reused port.
    #[serde(default)]
    pub restarts: u64,
    /// Of those, how many left their old ring to readers still holding it
    /// and took another.
    #[serde(default)]
    pub rings_retired: u64,
    /// Sides whose reassembly stopped (ring full behind a slow reader,
    /// no ring, or a hole that will never fill); still forwarded.
    #[serde(default)]
    pub reasm_stopped: u64,
    /// `DATA_RDY` announcements made (one per flow and side per burst).
    #[serde(default)]
    pub data_events: u64,
    /// Announcements held back because a `fail-closed` reader had no room
    /// (ring full, no event slot), made again at a later flush.
    #[serde(default)]
    pub data_deferred: u64,
    /// Worker loops that left frames in the NIC queues because some
    /// stream's readers held nearly its whole ring (`runtime.nf_backpressure`:
    /// waiting instead of stopping the side).
    #[serde(default)]
    pub rx_held: u64,
    /// Flows that ended with stream bytes never announced: a `fail-closed`
    /// reader stayed without room through the wait at the close (2 s past
    /// the linger), or the flow idled out or was evicted meanwhile.
    #[serde(default)]
    pub data_unannounced: u64,
    /// What the monitor saw of the segments, summed over flows.
    #[serde(default)]
    pub segments: MonitorSegments,
    /// Flows evicted at `max_flows` to make room for a new one: closed
    /// connections first, then handshakes that never completed.
    #[serde(default)]
    pub evicted: u64,
    pub state_bytes_per_flow: u64,
    /// State of each reassembled side besides its ring, allocated with the
    /// side's first payload byte.
    #[serde(default)]
    pub state_bytes_per_side: u64,
    pub ring_bytes: u64,
}

/// The TCP monitor's segment counters of one worker, summed over its flows
/// and both sides: the connection tracker's view (sequence space and
/// windows) and the reassembler's (bytes compared on overlap), and the
/// sides that stopped reassembling by reason (`reasm_stopped` is their sum).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorSegments {
    /// Segments below the highest sequence their sender had sent:
    /// retransmissions, and late segments of a reordering.
    pub retransmits: u64,
    /// Data segments starting beyond everything seen (a hole before them).
    pub out_of_order: u64,
    /// Segments whose data was (partly) outside the receiver's window,
    /// before the stream or after the FIN: those bytes were ignored.
    pub out_of_window: u64,
    /// RSTs that were not acceptable (out of window), ignored.
    pub rst_ignored: u64,
    /// SYNs and SYN-ACKs that fit no handshake, ignored.
    pub invalid_syn: u64,
    /// Reassembled segments whose overlap with stored bytes was identical.
    pub duplicates: u64,
    /// Segments with at least one byte differing from stored bytes (an
    /// evasion attempt or a broken sender; `[monitor] overlap` decides).
    pub conflicts: u64,
    /// Out-of-order segments not kept because every hole slot was taken
    /// (`[monitor] max_holes`).
    pub holes_full: u64,
    pub stopped_buffer_full: u64,
    pub stopped_no_buffer: u64,
    pub stopped_gap: u64,
}

/// Flow table of one worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowStats {
    pub active: u64,
    pub capacity: u64,
    /// FLOW/START events.
    pub started: u64,
    /// FLOW/END events for flows idle past the timeout.
    pub ended_idle: u64,
    /// FLOW/END events for flows evicted because the table was full.
    pub evicted: u64,
    /// FLOW/END events for flows still open when the runtime stopped.
    /// `started == ended_idle + evicted + ended_shutdown + ended_closed + active`.
    #[serde(default)]
    pub ended_shutdown: u64,
    /// FLOW/END events for monitored TCP connections that closed (FIN/FIN/ACK
    /// or RST), `monitor.linger_ms` after the close.
    #[serde(default)]
    pub ended_closed: u64,
    /// Flows whose handshake has not completed now (the initiator has not
    /// spoken after the other side answered).
    #[serde(default)]
    pub embryonic: u64,
    /// Of `evicted`, the embryonic ones (evicted before any established flow).
    #[serde(default)]
    pub evicted_embryonic: u64,
}

impl Stats {
    /// Total drops over all workers, by reason.
    pub fn drops(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for w in &self.workers {
            for (k, v) in &w.drops {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }

    pub fn port(&self, name: &str) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Flow-table counters summed over workers.
    pub fn flows(&self) -> FlowStats {
        let mut f = FlowStats::default();
        for w in &self.workers {
            f.active += w.flows.active;
            f.capacity += w.flows.capacity;
            f.started += w.flows.started;
            f.ended_idle += w.flows.ended_idle;
            f.evicted += w.flows.evicted;
            f.ended_shutdown += w.flows.ended_shutdown;
            f.ended_closed += w.flows.ended_closed;
            f.embryonic += w.flows.embryonic;
            f.evicted_embryonic += w.flows.evicted_embryonic;
        }
        f
    }

    /// A human-readable multi-line report.
    pub fn render(&self) -> String {
        use crate::table::Table;
        let mut out = format!(
            "ubox instance '{}' up {:.1}s, steering: {}\n",
            self.instance,
            self.uptime_ms as f64 / 1000.0,
            self.steering
        );
        let mut t = Table::new(&[
            "port",
            "device",
            "rx pkts",
            "rx bytes",
            "tx pkts",
            "tx bytes",
            "tx drop",
            "pmd imissed",
            "pmd ierrors",
        ]);
        for p in &self.ports {
            t.row(vec![
                p.name.clone(),
                p.device.clone(),
                p.rx_packets.to_string(),
                p.rx_bytes.to_string(),
                p.tx_packets.to_string(),
                p.tx_bytes.to_string(),
                p.tx_dropped.to_string(),
                p.pmd.imissed.to_string(),
                p.pmd.ierrors.to_string(),
            ]);
        }
        out.push_str(&t.render());
        let mut t = Table::new(&[
            "worker",
            "lcore",
            "rx",
            "fwd",
            "replies",
            "consumed",
            "handoff out/in",
            "dropped",
            "flows (embryonic)",
            "started",
            "idle-ended",
            "closed",
            "evicted (embryonic)",
        ]);
        for w in &self.workers {
            t.row(vec![
                w.id.to_string(),
                w.lcore.to_string(),
                w.rx_packets.to_string(),
                w.forwarded.to_string(),
                w.replies.to_string(),
                w.consumed.to_string(),
                format!("{}/{}", w.handoff_out, w.handoff_in),
                w.dropped.to_string(),
                format!("{}/{} ({})", w.flows.active, w.flows.capacity, w.flows.embryonic),
                w.flows.started.to_string(),
                w.flows.ended_idle.to_string(),
                w.flows.ended_closed.to_string(),
                format!("{} ({})", w.flows.evicted, w.flows.evicted_embryonic),
            ]);
        }
        out.push_str(&t.render());
        out.push_str(&format!(
            "pools: mbufs {}/{} free, event slots {}/{} free\n",
            self.pools.mbufs_free, self.pools.mbufs_total, self.pools.event_slots_free, self.pools.event_slots_total
        ));
        let mut skipped = std::collections::BTreeMap::<&str, u64>::new();
        for w in &self.workers {
            for (k, v) in &w.events_skipped {
                *skipped.entry(k.as_str()).or_default() += v;
            }
        }
        if skipped.values().any(|&v| v > 0) {
            // Events are not packets: a skipped event's packet went on (or,
            // at a fail-closed stage, is counted in the drops above).
            let list: Vec<String> = skipped.iter().filter(|(_, &v)| v > 0).map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!(
                "events skipped (their packets went on unless dropped above): {}\n",
                list.join(", ")
            ));
        }
        let mut rtt = RttHistogram::default();
        for w in &self.workers {
            rtt.add(&w.nf_rtt_histogram);
        }
        let answers: u64 = self.workers.iter().map(|w| w.nf_answers).sum();
        if answers > 0 {
            let rtt_ns: u64 = self.workers.iter().map(|w| w.nf_rtt_ns_total).sum();
            let at_most = |q: f64| match rtt.quantile_bound_ns(q) {
                Some(ns) => format!("<= {:.1} us", ns as f64 / 1000.0),
                None if rtt.count() > 0 => {
                    format!("> {:.1} ms", RttHistogram::bound_ns(RttHistogram::BUCKETS - 1) as f64 / 1e6)
                }
                None => "-".into(),
            };
            out.push_str(&format!(
                "nf round trips: {answers} answered, mean {:.1} us, p50 {}, p99 {}\n",
                rtt_ns as f64 / answers as f64 / 1000.0,
                at_most(0.5),
                at_most(0.99)
            ));
        }
        let c = &self.control;
        out.push_str(&format!(
            "control socket: {} requests, {} connections ({} open); refused: {} bad, {} too long, {} timed out, {} evicted at the connection limit, {} not root's to make\n",
            c.requests, c.connections, c.open, c.bad_requests, c.too_long, c.timed_out, c.evicted, c.denied
        ));
        let cap = &self.capture;
        if cap.sessions > 0 {
            out.push_str(&format!(
                "capture: {} session(s){}, {} packets captured ({} bytes, {} truncated at the snap length), {} dropped on a full queue\n",
                cap.sessions,
                if cap.active { ", one armed now" } else { "" },
                cap.counts.captured,
                cap.counts.bytes,
                cap.counts.truncated,
                cap.counts.dropped_full
            ));
        }
        let mon: u64 = self.workers.iter().map(|w| w.monitor.flows).sum();
        if mon > 0 {
            let w0 = &self.workers[0].monitor;
            out.push_str(&format!(
                "tcp monitor: {} flows now, {} in all, {} evicted (closed or half-open) and {} refused at max_flows, {} sides without a ring, {} packets passed unmonitored, {} RSTs sent, {} sides stopped reassembling, \
                 {} restarts on reused ports ({} rings kept for readers), {} DATA_RDY announcements ({} held back for a fail-closed reader without room, {} flows ended with bytes never announced, {} loops RX waited for readers); {} B state per flow + {} B and a {} KiB ring per reassembled side\n",
                self.workers.iter().map(|w| w.monitor.active).sum::<u64>(),
                mon,
                self.workers.iter().map(|w| w.monitor.evicted).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.full).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.no_buffer).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.unmonitored_passed).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.rsts).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.reasm_stopped).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.restarts).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.rings_retired).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.data_events).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.data_deferred).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.data_unannounced).sum::<u64>(),
                self.workers.iter().map(|w| w.monitor.rx_held).sum::<u64>(),
                w0.state_bytes_per_flow,
                w0.state_bytes_per_side,
                w0.ring_bytes / 1024
            ));
            let sum = |f: fn(&MonitorSegments) -> u64| self.workers.iter().map(|w| f(&w.monitor.segments)).sum::<u64>();
            out.push_str(&format!(
                "tcp monitor segments: {} retransmitted or late, {} out of order, {} outside the window, {} identical overlaps, {} overlap conflicts, \
                 {} not kept (holes full), {} RSTs and {} SYNs ignored; sides stopped: {} ring full, {} no ring, {} gap\n",
                sum(|m| m.retransmits),
                sum(|m| m.out_of_order),
                sum(|m| m.out_of_window),
                sum(|m| m.duplicates),
                sum(|m| m.conflicts),
                sum(|m| m.holes_full),
                sum(|m| m.rst_ignored),
                sum(|m| m.invalid_syn),
                sum(|m| m.stopped_buffer_full),
                sum(|m| m.stopped_no_buffer),
                sum(|m| m.stopped_gap),
            ));
        }
        let mut splice = std::collections::BTreeMap::<&str, u64>::new();
        for w in &self.workers {
            for (k, v) in &w.splicer.counts {
                *splice.entry(k.as_str()).or_default() += v;
            }
        }
        if !splice.is_empty() || self.workers.iter().any(|w| w.splicer.active > 0) {
            let counts: Vec<String> = splice.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!(
                "tcp splicer: {} flows now, {} segments held; {}\n",
                self.workers.iter().map(|w| w.splicer.active).sum::<u64>(),
                self.workers.iter().map(|w| w.splicer.held).sum::<u64>(),
                counts.join(" ")
            ));
        }
        if !self.nfs.is_empty() {
            let mut t = Table::new(&["nf", "state", "flows", "assigned", "events in", "answered", "queued", "counts"]);
            for n in &self.nfs {
                let counts: Vec<String> = n.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                t.row(vec![
                    n.name.clone(),
                    if n.draining && n.state == "running" { "draining".into() } else { n.state.clone() },
                    n.flows.to_string(),
                    n.flows_assigned.to_string(),
                    n.events_in.to_string(),
                    n.events_out.to_string(),
                    n.queue_depth.to_string(),
                    if counts.is_empty() { "-".into() } else { counts.join(" ") },
                ]);
            }
            out.push_str(&t.render());
        }
        let drops = self.drops();
        if drops.is_empty() {
            out.push_str("drops: none\n");
        } else {
            let mut t = Table::new(&["drop reason", "packets"]);
            for (k, v) in drops {
                t.row(vec![k, v.to_string()]);
            }
            out.push_str(&t.render());
        }
        out
    }
}

/// Errors talking to a runtime.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// Send one request to the runtime at `socket` and read its response.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError(permission_denied(socket, "the control socket"))
        } else {
            ClientError(format!(
                "cannot connect to {}: {e} (is ubox-runtime running? pass --socket for another instance)",
                socket.display()
            ))
        }
    })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let mut line = serde_json::to_string(req).expect("requests serialise");
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| ClientError(format!("sending to {}: {e}", socket.display())))?;
    let mut resp = String::new();
    BufReader::new(&s)
        .read_line(&mut resp)
        .map_err(|e| ClientError(format!("reading from {}: {e}", socket.display())))?;
    serde_json::from_str(&resp).map_err(|e| ClientError(format!("bad response from {}: {e}", socket.display())))
}

/// Why this process was refused `path` (`what`: "the control socket", "the
/// arena"), as one line with the fix: the directory on the way that is
/// closed to it, or the group the file is open to and how to join it, or
/// that it is root's only.
pub fn permission_denied(path: &Path, what: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let at = format!("permission denied on {what} {}", path.display());
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()).collect();
    dirs.reverse();
    let closed = dirs.into_iter().find(|d| nix::unistd::access(*d, nix::unistd::AccessFlags::X_OK).is_err());
    let meta = std::fs::metadata(path).ok();
    let gid = meta.as_ref().map(|m| nix::unistd::Gid::from_raw(m.gid()));
    let group = gid.and_then(|g| nix::unistd::Group::from_gid(g).ok().flatten());
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name);
    let facts = Denial {
        closed_dir: closed.map(Path::to_path_buf),
        mode: meta.as_ref().map(|m| m.mode() & 0o777),
        group: meta
            .as_ref()
            .filter(|m| m.gid() != 0)
            .map(|m| group.as_ref().map_or(m.gid().to_string(), |g| g.name.clone())),
        listed: matches!((&group, &me), (Some(g), Some(u)) if g.mem.iter().any(|m| m == u)),
        in_session: gid.is_some_and(|g| nix::unistd::getgroups().is_ok_and(|gs| gs.contains(&g))),
        user: me.unwrap_or_else(|| "$USER".into()),
    };
    facts.explain(&at)
}

/// What [`permission_denied`] found out.
struct Denial {
    /// A directory on the way this user may not search.
    closed_dir: Option<PathBuf>,
    /// The file's mode, if it could be read.
    mode: Option<u32>,
    /// The file's group (name, or number), unless it is root's.
    group: Option<String>,
    /// This user is listed as a member of that group.
    listed: bool,
    /// This process has that group (the user's session began after joining).
    in_session: bool,
    user: String,
}

impl Denial {
    fn explain(&self, at: &str) -> String {
        if let Some(d) = &self.closed_dir {
            let d = d.display();
            return format!("{at}: directory {d} is closed to this user: run as root, or open it (chmod o+x {d})");
        }
        let Some(mode) = self.mode else {
            return format!("{at}: run as root, or as a member of the runtime's group (runtime.group, default 'ubox')");
        };
        let (group, user) = match &self.group {
            Some(g) if mode & 0o060 == 0o060 => (g, &self.user),
            _ => {
                return format!(
                    "{at}: it is root's only (mode {mode:04o}: the runtime's runtime.group is \"\"): run this as root, e.g. with sudo"
                )
            }
        };
        if self.listed && !self.in_session {
            return format!(
                "{at}: it is open to root and group '{group}' (mode {mode:04o}), and user {user} joined the group after this session began: \
                 log in again (or run: newgrp {group}), or run as root"
            );
        }
        format!(
            "{at}: it is open to root and group '{group}' (mode {mode:04o}), and user {user} is not in it: \
             add it (sudo usermod -aG {group} {user}, then log in again) or run as root"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chain_apply_needs_root() {
        let apply = Request::ChainApply { text: String::new(), origin: "x".into() };
        assert!(apply.needs_root());
        assert_eq!(apply.command(), "chain apply");
        for r in [Request::Stats, Request::Ping, Request::NfList, Request::ChainShow] {
            assert!(!r.needs_root(), "{r:?}");
        }
    }

    #[test]
    fn permission_denied_names_the_group_or_root() {
        let d = |closed: Option<&str>, mode: Option<u32>, group: Option<&str>, listed, in_session| Denial {
            closed_dir: closed.map(PathBuf::from),
            mode,
            group: group.map(String::from),
            listed,
            in_session,
            user: "alice".into(),
        };
        let at = "permission denied on the control socket /run/ubox/u.sock";
        let m = d(None, Some(0o660), Some("ubox"), false, false).explain(at);
        assert_eq!(
            m,
            format!("{at}: it is open to root and group 'ubox' (mode 0660), and user alice is not in it: add it (sudo usermod -aG ubox alice, then log in again) or run as root")
        );
        let m = d(None, Some(0o660), Some("ubox"), true, false).explain(at);
        assert!(m.contains("joined the group after this session began") && m.contains("newgrp ubox"), "{m}");
        let m = d(None, Some(0o600), Some("ubox"), false, false).explain(at);
        assert!(m.contains("root's only (mode 0600"), "{m}");
        let m = d(None, Some(0o660), None, false, false).explain(at);
        assert!(m.contains("root's only"), "{m}");
        let m = d(Some("/run/ubox"), None, None, false, false).explain(at);
        assert!(m.contains("directory /run/ubox is closed") && m.contains("chmod o+x /run/ubox"), "{m}");
        for m in [m, d(None, None, None, false, false).explain(at)] {
            assert!(!m.contains('\n') && m.starts_with(at), "{m}");
        }
        // The real thing, on a file of ours: one line, naming the file.
        let f = std::env::temp_dir().join(format!("ubox-api-perm-{}", std::process::id()));
        std::fs::write(&f, b"").unwrap();
        let m = permission_denied(&f, "the arena");
        assert!(
            m.starts_with(&format!("permission denied on the arena {}: ", f.display())) && !m.contains('\n'),
            "{m}"
        );
        std::fs::remove_file(&f).ok();
    }

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let s = serde_json::to_string(&Request::Stats).unwrap();
        assert_eq!(s, r#"{"cmd":"stats"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), Request::Stats);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn stats_sum_over_workers() {
        let mut st = Stats::default();
        for i in 0..2 {
            let mut w = WorkerStats { id: i, ..Default::default() };
            w.drops.insert("ipv4_bad_checksum".into(), 3);
            w.flows.started = 5;
            w.flows.evicted = 1;
            st.workers.push(w);
        }
        assert_eq!(st.drops()["ipv4_bad_checksum"], 6);
        assert_eq!(st.flows().started, 10);
        assert_eq!(st.flows().evicted, 2);
        let text = st.render();
        assert!(text.contains("ipv4_bad_checksum"), "{text}");
        assert!(!text.contains("events skipped"), "no line when nothing was skipped");
    }

    #[test]
    fn rtt_buckets_are_log2_from_1us_with_inclusive_bounds() {
        assert_eq!(RttHistogram::bucket(0), 0);
        assert_eq!(RttHistogram::bucket(1024), 0);
        assert_eq!(RttHistogram::bucket(1025), 1);
        assert_eq!(RttHistogram::bucket(2048), 1);
        assert_eq!(RttHistogram::bucket(2049), 2);
        for i in 0..RttHistogram::BUCKETS {
            let b = RttHistogram::bound_ns(i);
            assert_eq!(RttHistogram::bucket(b), i, "{b} ns");
            assert_eq!(RttHistogram::bucket(b + 1), i + 1, "{b} + 1 ns");
        }
        assert_eq!(RttHistogram::bound_ns(RttHistogram::BUCKETS - 1), 33_554_432);
        assert_eq!(RttHistogram::bucket(u64::MAX), RttHistogram::BUCKETS);
        let mut h = RttHistogram::from_counts((0..RttHistogram::SLOTS as u64).map(|i| u64::from(i == 3) * 10));
        assert_eq!((h.le_ns.len(), h.counts.len(), h.count()), (16, 17, 10));
        assert_eq!(h.quantile_bound_ns(0.5), Some(8192));
        h.counts[16] = 90;
        assert_eq!(h.quantile_bound_ns(0.05), Some(8192));
        assert_eq!(h.quantile_bound_ns(0.99), None, "in the unbounded bucket");
        // uboxctl stats: one line, summed over workers.
        let mut st = Stats::default();
        for id in 0..2 {
            let w = WorkerStats {
                id,
                nf_answers: 50,
                nf_rtt_ns_total: 500_000,
                nf_rtt_histogram: h.clone(),
                ..Default::default()
            };
            st.workers.push(w);
        }
        let text = st.render();
        let line = text.lines().find(|l| l.starts_with("nf round trips")).expect(&text);
        assert_eq!(line, "nf round trips: 100 answered, mean 10.0 us, p50 > 33.6 ms, p99 > 33.6 ms");
        st.workers[1].nf_rtt_histogram.counts[16] = 0;
        st.workers[0].nf_rtt_histogram.counts[16] = 0;
        let text = st.render();
        assert!(text.contains("nf round trips: 100 answered, mean 10.0 us, p50 <= 8.2 us, p99 <= 8.2 us\n"), "{text}");
        assert!(!Stats::default().render().contains("nf round trips"), "no line without answers");
        // Old JSON (before the histogram) still parses.
        let w: WorkerStats = serde_json::from_str(
            r#"{"id":0,"lcore":1,"rx_packets":0,"forwarded":0,"replies":0,"consumed":0,"handoff_out":0,
                "handoff_in":0,"dropped":0,"drops":{},"flows":{"active":0,"capacity":1,"started":0,"ended_idle":0,"evicted":0}}"#,
        )
        .unwrap();
        assert_eq!(w.nf_rtt_histogram, RttHistogram::default());
    }

    #[test]
    fn skipped_events_are_shown_apart_from_dropped_packets() {
        let mut st = Stats::default();
        for i in 0..2 {
            let mut w = WorkerStats { id: i, ..Default::default() };
            w.events_skipped.insert("ring_full".into(), 4);
            w.events_skipped.insert("nf_absent".into(), 0);
            st.workers.push(w);
        }
        let text = st.render();
        let line = text.lines().find(|l| l.starts_with("events skipped")).expect(&text);
        assert!(line.ends_with(": ring_full 8"), "{line}");
        assert!(st.drops().is_empty(), "a skipped event is not a dropped packet");
    }
}
