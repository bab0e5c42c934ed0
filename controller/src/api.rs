//! Control-socket protocol: one JSON object per line each way.
//!
//! A client connects to the runtime's Unix socket (by default
//! `/run/ubox/<instance>.sock`), writes one [`Request`] as a JSON line and
//! reads one [`Response`] line back.
//!
//! **NF sessions.** An NF process sends [`Request::Register`] with its
//! manifest and receives [`Response::Registered`]: the arena file to map and,
//! per worker, the index of its channel in the arena. The NF then keeps the
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
//! allocates a slot only to publish an event, and never frees one.

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
    Register { manifest: crate::registry::NfManifest },
    /// The registered NFs.
    NfList,
    /// Apply a chain file (its text; `origin` names it in errors). New flows
    /// use the new chains; flows already running keep theirs.
    ChainApply { text: String, origin: String },
    /// The chains in force.
    ChainShow,
}

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
    /// Arena file to attach.
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
    Error {
        message: String,
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
    /// `bad_publish`, `bad_verdict` (only non-zero ones).
    pub counts: std::collections::BTreeMap<String, u64>,
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
    /// TCP monitor: flows followed now and in all, flows refused at
    /// `monitor.max_flows`, sides left without a stream ring, RSTs sent for
    /// terminated flows, and the bytes of state per monitored flow (rings
    /// not included).
    #[serde(default)]
    pub monitor: MonitorStats,
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
        let c = &self.control;
        out.push_str(&format!(
            "control socket: {} requests, {} connections ({} open); refused: {} bad, {} too long, {} timed out, {} evicted at the connection limit\n",
            c.requests, c.connections, c.open, c.bad_requests, c.too_long, c.timed_out, c.evicted
        ));
        let mon: u64 = self.workers.iter().map(|w| w.monitor.flows).sum();
        if mon > 0 {
            let w0 = &self.workers[0].monitor;
            out.push_str(&format!(
                "tcp monitor: {} flows now, {} in all, {} evicted (closed or half-open) and {} refused at max_flows, {} sides without a ring, {} packets passed unmonitored, {} RSTs sent, {} sides stopped reassembling, \
                 {} restarts on reused ports ({} rings kept for readers), {} DATA_RDY announcements; {} B state per flow + {} B and a {} KiB ring per reassembled side\n",
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
                w0.state_bytes_per_flow,
                w0.state_bytes_per_side,
                w0.ring_bytes / 1024
            ));
        }
        if !self.nfs.is_empty() {
            let mut t = Table::new(&["nf", "state", "events in", "answered", "queued", "counts"]);
            for n in &self.nfs {
                let counts: Vec<String> = n.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                t.row(vec![
                    n.name.clone(),
                    n.state.clone(),
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
            ClientError(format!(
                "permission denied on {}: the control socket is root's (mode 0600); run this as root, e.g. with sudo",
                socket.display()
            ))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
