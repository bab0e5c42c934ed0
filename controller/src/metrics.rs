//! The Prometheus text exposition format (version 0.0.4) of [`Stats`]:
//! what `ubox-runtime` serves at `/metrics` when `[metrics] listen` is set.
//!
//! [`render`] is a pure function of one `Stats` value, the very one
//! `uboxctl stats` gets, so the page and `uboxctl stats --json` taken at
//! the same moment agree number for number. It covers every counter there:
//! per port (with the PMD's own), worker, drop reason, skipped event, flow
//! table, TCP monitor (with its segment counters), NF (with its counts by
//! reason), pool and the control socket, and the NF round trips as a
//! histogram (`ubox_nf_event_rtt_seconds`). A test fills every number of
//! `Stats` through its JSON and looks for each on the page, so a counter
//! added to `Stats` without its metric fails it.
//!
//! Names follow Prometheus' conventions: the `ubox_` prefix, snake_case,
//! `_total` for counters, base units (`_seconds`, `_bytes`); labels
//! `port`, `worker`, `nf`, `reason`, `state`, `pool`; gauges for what goes
//! up and down (active flows, queue depths, free pool entries). Label
//! values and help texts are escaped as the format says.
//!
//! This module only formats: it never talks to a runtime.

use std::fmt::Write;

use crate::api::{NfStats, PortStats, RttHistogram, Stats, WorkerStats};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The NF states a `ubox_nf_state` series exists for (1 for the NF's own).
const NF_STATES: [&str; 3] = ["running", "dead", "absent"];

/// A sample's value.
#[derive(Clone, Copy)]
enum V {
    N(u64),
    /// Nanoseconds, shown in seconds.
    Ns(u64),
    /// Milliseconds, shown in seconds.
    Ms(u64),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family of something there is one of per port, worker or NF.
struct M<T: 'static> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    get: fn(&T) -> V,
}

const C: Kind = Kind::Counter;
const G: Kind = Kind::Gauge;

const PORT: &[M<PortStats>] = &[
    M {
        name: "ubox_port_rx_packets_total",
        kind: C,
        help: "Packets received on the port (all workers).",
        get: |p| V::N(p.rx_packets),
    },
    M {
        name: "ubox_port_rx_bytes_total",
        kind: C,
        help: "Bytes received on the port (all workers).",
        get: |p| V::N(p.rx_bytes),
    },
    M {
        name: "ubox_port_tx_packets_total",
        kind: C,
        help: "Packets sent on the port (all workers).",
        get: |p| V::N(p.tx_packets),
    },
    M {
        name: "ubox_port_tx_bytes_total",
        kind: C,
        help: "Bytes sent on the port (all workers).",
        get: |p| V::N(p.tx_bytes),
    },
    M {
        name: "ubox_port_tx_dropped_packets_total",
        kind: C,
        help: "Packets the port's TX queue refused (full), freed and counted (drop reason tx_full).",
        get: |p| V::N(p.tx_dropped),
    },
    M {
        name: "ubox_port_pmd_rx_packets_total",
        kind: C,
        help: "Packets the PMD received (rte_eth_stats ipackets).",
        get: |p| V::N(p.pmd.ipackets),
    },
    M {
        name: "ubox_port_pmd_tx_packets_total",
        kind: C,
        help: "Packets the PMD sent (rte_eth_stats opackets).",
        get: |p| V::N(p.pmd.opackets),
    },
    M {
        name: "ubox_port_pmd_rx_bytes_total",
        kind: C,
        help: "Bytes the PMD received (rte_eth_stats ibytes).",
        get: |p| V::N(p.pmd.ibytes),
    },
    M {
        name: "ubox_port_pmd_tx_bytes_total",
        kind: C,
        help: "Bytes the PMD sent (rte_eth_stats obytes).",
        get: |p| V::N(p.pmd.obytes),
    },
    M {
        name: "ubox_port_pmd_rx_missed_packets_total",
        kind: C,
        help: "Packets the NIC dropped because no RX descriptor was free (rte_eth_stats imissed).",
        get: |p| V::N(p.pmd.imissed),
    },
    M {
        name: "ubox_port_pmd_rx_errors_total",
        kind: C,
        help: "Erroneous received packets (rte_eth_stats ierrors).",
        get: |p| V::N(p.pmd.ierrors),
    },
    M {
        name: "ubox_port_pmd_tx_errors_total",
        kind: C,
        help: "Failed transmitted packets (rte_eth_stats oerrors).",
        get: |p| V::N(p.pmd.oerrors),
    },
    M {
        name: "ubox_port_pmd_rx_nombuf_total",
        kind: C,
        help: "RX mbuf allocation failures (rte_eth_stats rx_nombuf).",
        get: |p| V::N(p.pmd.rx_nombuf),
    },
];

const WORKER: &[M<WorkerStats>] = &[
    M {
        name: "ubox_worker_rx_packets_total",
        kind: C,
        help: "Packets the worker received (from ports and handoff rings).",
        get: |w| V::N(w.rx_packets),
    },
    M {
        name: "ubox_worker_forwarded_packets_total",
        kind: C,
        help: "Packets the worker forwarded.",
        get: |w| V::N(w.forwarded),
    },
    M {
        name: "ubox_worker_replies_total",
        kind: C,
        help: "ARP and ICMP echo replies sent for the box's own addresses.",
        get: |w| V::N(w.replies),
    },
    M {
        name: "ubox_worker_consumed_packets_total",
        kind: C,
        help: "Frames for the box that needed no answer.",
        get: |w| V::N(w.consumed),
    },
    M {
        name: "ubox_worker_handoff_out_packets_total",
        kind: C,
        help: "Packets handed to the worker that owns their flow (software steering).",
        get: |w| V::N(w.handoff_out),
    },
    M {
        name: "ubox_worker_handoff_in_packets_total",
        kind: C,
        help: "Packets taken from other workers (software steering).",
        get: |w| V::N(w.handoff_in),
    },
    M {
        name: "ubox_worker_dropped_packets_total",
        kind: C,
        help: "Packets dropped, all reasons (by reason: ubox_worker_drops_total).",
        get: |w| V::N(w.dropped),
    },
    M {
        name: "ubox_worker_event_bursts_total",
        kind: C,
        help: "Descriptor bursts pushed to NF rings.",
        get: |w| V::N(w.event_bursts),
    },
    M {
        name: "ubox_worker_events_pushed_total",
        kind: C,
        help: "Event descriptors pushed to NF rings.",
        get: |w| V::N(w.events_pushed),
    },
    M {
        name: "ubox_worker_nf_answers_total",
        kind: C,
        help: "Events NFs answered (their round trips: ubox_nf_event_rtt_seconds).",
        get: |w| V::N(w.nf_answers),
    },
    M {
        name: "ubox_worker_nf_reclaimed_events_total",
        kind: C,
        help: "Events reclaimed from NFs that died holding them.",
        get: |w| V::N(w.nf_reclaimed),
    },
    M {
        name: "ubox_worker_nf_wakeups_total",
        kind: C,
        help: "Sleeping NFs woken by a push (runtime.nf_wakeup = \"futex\").",
        get: |w| V::N(w.nf_wakeups),
    },
    M {
        name: "ubox_worker_rx_paused_total",
        kind: C,
        help: "Loop iterations that left RX alone because an NF ring was nearly full (runtime.nf_backpressure).",
        get: |w| V::N(w.rx_paused),
    },
    M {
        name: "ubox_worker_busy_seconds_total",
        kind: C,
        help: "Time of the worker's loop iterations that did work (frames received or answers taken).",
        get: |w| V::Ns(w.busy_ns),
    },
    M {
        name: "ubox_worker_answer_seconds_total",
        kind: C,
        help: "Of the busy time, the time spent taking NF answers and moving their packets on.",
        get: |w| V::Ns(w.answer_ns),
    },
    M { name: "ubox_flows_active", kind: G, help: "Flows in the worker's flow table.", get: |w| V::N(w.flows.active) },
    M {
        name: "ubox_flows_capacity",
        kind: G,
        help: "Flows the worker's flow table holds at most.",
        get: |w| V::N(w.flows.capacity),
    },
    M {
        name: "ubox_flows_embryonic",
        kind: G,
        help: "Flows in the table whose handshake has not completed.",
        get: |w| V::N(w.flows.embryonic),
    },
    M {
        name: "ubox_flows_started_total",
        kind: C,
        help: "Flows started (FLOW/START).",
        get: |w| V::N(w.flows.started),
    },
    M {
        name: "ubox_flows_evicted_embryonic_total",
        kind: C,
        help: "Of the flows evicted at the table's bound, the embryonic ones.",
        get: |w| V::N(w.flows.evicted_embryonic),
    },
    M {
        name: "ubox_splicer_flows_active",
        kind: G,
        help: "Connections in the TCP splicer now.",
        get: |w| V::N(w.splicer.active),
    },
    M {
        name: "ubox_splicer_segments_held",
        kind: G,
        help: "Client segments the splicer holds until their backend answers.",
        get: |w| V::N(w.splicer.held),
    },
    M {
        name: "ubox_splicer_spliced_total",
        kind: C,
        help: "Connections the splicer spliced to a backend.",
        get: |w| V::N(w.splicer.counts.get("spliced").copied().unwrap_or(0)),
    },
    M {
        name: "ubox_monitor_flows_active",
        kind: G,
        help: "TCP flows the monitor follows now.",
        get: |w| V::N(w.monitor.active),
    },
    M {
        name: "ubox_monitor_flows_total",
        kind: C,
        help: "TCP flows the monitor followed.",
        get: |w| V::N(w.monitor.flows),
    },
    M {
        name: "ubox_monitor_flows_refused_total",
        kind: C,
        help: "TCP flows refused at monitor.max_flows.",
        get: |w| V::N(w.monitor.full),
    },
    M {
        name: "ubox_monitor_flows_evicted_total",
        kind: C,
        help: "Monitored flows evicted at monitor.max_flows to make room (closed, then half-open).",
        get: |w| V::N(w.monitor.evicted),
    },
    M {
        name: "ubox_monitor_sides_without_ring_total",
        kind: C,
        help: "Connection sides left without a stream ring.",
        get: |w| V::N(w.monitor.no_buffer),
    },
    M {
        name: "ubox_monitor_unmonitored_passed_flows_total",
        kind: C,
        help: "Flows the monitor could not serve that their chain let pass unseen (on_unmonitored = \"pass\").",
        get: |w| V::N(w.monitor.unmonitored_passed),
    },
    M {
        name: "ubox_monitor_rsts_sent_total",
        kind: C,
        help: "RSTs sent for terminated flows.",
        get: |w| V::N(w.monitor.rsts),
    },
    M {
        name: "ubox_monitor_restarts_total",
        kind: C,
        help: "Connections restarted by a new SYN on a reused port.",
        get: |w| V::N(w.monitor.restarts),
    },
    M {
        name: "ubox_monitor_rings_retired_total",
        kind: C,
        help: "Of the restarts, those that left their old ring to readers still holding it.",
        get: |w| V::N(w.monitor.rings_retired),
    },
    M {
        name: "ubox_monitor_sides_stopped_total",
        kind: C,
        help: "Connection sides whose reassembly stopped (still forwarded).",
        get: |w| V::N(w.monitor.reasm_stopped),
    },
    M {
        name: "ubox_monitor_data_events_total",
        kind: C,
        help: "DATA_RDY announcements made.",
        get: |w| V::N(w.monitor.data_events),
    },
    M {
        name: "ubox_monitor_data_deferred_total",
        kind: C,
        help: "DATA_RDY announcements held back for a fail-closed reader without room, made again later.",
        get: |w| V::N(w.monitor.data_deferred),
    },
    M {
        name: "ubox_monitor_rx_held_total",
        kind: C,
        help: "Worker loops that received nothing because a stream's readers held nearly its whole ring (nf_backpressure).",
        get: |w| V::N(w.monitor.rx_held),
    },
    M {
        name: "ubox_monitor_flows_unannounced_total",
        kind: C,
        help: "Flows that ended with stream bytes never announced to a fail-closed reader that stayed without room.",
        get: |w| V::N(w.monitor.data_unannounced),
    },
    M {
        name: "ubox_monitor_retransmitted_segments_total",
        kind: C,
        help: "Segments below the highest sequence their sender had sent: retransmissions and late segments of a reordering.",
        get: |w| V::N(w.monitor.segments.retransmits),
    },
    M {
        name: "ubox_monitor_out_of_order_segments_total",
        kind: C,
        help: "Data segments starting beyond everything seen (a hole before them).",
        get: |w| V::N(w.monitor.segments.out_of_order),
    },
    M {
        name: "ubox_monitor_out_of_window_segments_total",
        kind: C,
        help: "Segments whose data was (partly) outside the receiver's window; those bytes were ignored.",
        get: |w| V::N(w.monitor.segments.out_of_window),
    },
    M {
        name: "ubox_monitor_ignored_rsts_total",
        kind: C,
        help: "RSTs that were not acceptable (out of window), ignored.",
        get: |w| V::N(w.monitor.segments.rst_ignored),
    },
    M {
        name: "ubox_monitor_invalid_syns_total",
        kind: C,
        help: "SYNs and SYN-ACKs that fit no handshake, ignored.",
        get: |w| V::N(w.monitor.segments.invalid_syn),
    },
    M {
        name: "ubox_monitor_duplicate_segments_total",
        kind: C,
        help: "Reassembled segments whose overlap with stored bytes was identical.",
        get: |w| V::N(w.monitor.segments.duplicates),
    },
    M {
        name: "ubox_monitor_conflicting_segments_total",
        kind: C,
        help: "Segments with at least one byte differing from stored bytes (monitor.overlap decides).",
        get: |w| V::N(w.monitor.segments.conflicts),
    },
    M {
        name: "ubox_monitor_holes_full_segments_total",
        kind: C,
        help: "Out-of-order segments not kept because every hole slot was taken (monitor.max_holes).",
        get: |w| V::N(w.monitor.segments.holes_full),
    },
    M {
        name: "ubox_monitor_flow_state_bytes",
        kind: G,
        help: "Bytes of monitor state per monitored flow (rings not included).",
        get: |w| V::N(w.monitor.state_bytes_per_flow),
    },
    M {
        name: "ubox_monitor_side_state_bytes",
        kind: G,
        help: "Bytes of state per reassembled side besides its ring.",
        get: |w| V::N(w.monitor.state_bytes_per_side),
    },
    M {
        name: "ubox_monitor_stream_ring_bytes",
        kind: G,
        help: "Bytes of each stream ring.",
        get: |w| V::N(w.monitor.ring_bytes),
    },
];

const NF: &[M<NfStats>] = &[
    M {
        name: "ubox_nf_flows",
        kind: G,
        help: "Flows pinned to the NF instance now (their events all go to it).",
        get: |n| V::N(n.flows),
    },
    M {
        name: "ubox_nf_flows_assigned_total",
        kind: C,
        help: "Flows ever pinned to the NF instance.",
        get: |n| V::N(n.flows_assigned),
    },
    M {
        name: "ubox_nf_instance",
        kind: G,
        help: "The instance number of an NF running as several (its nf label is NAME#N); 0 for a single one.",
        get: |n| V::N(u64::from(n.instance)),
    },
    M { name: "ubox_nf_events_in_total", kind: C, help: "Events given to the NF.", get: |n| V::N(n.events_in) },
    M { name: "ubox_nf_events_out_total", kind: C, help: "Events the NF answered.", get: |n| V::N(n.events_out) },
    M {
        name: "ubox_nf_queue_depth",
        kind: G,
        help: "Events waiting in the NF's rings now (all workers).",
        get: |n| V::N(n.queue_depth),
    },
    M {
        name: "ubox_nf_reported_bursts_total",
        kind: C,
        help: "Non-empty bursts the NF reported taking.",
        get: |n| V::N(n.nf_bursts),
    },
    M {
        name: "ubox_nf_reported_events_total",
        kind: C,
        help: "Events the NF reported taking.",
        get: |n| V::N(n.nf_events),
    },
    M {
        name: "ubox_nf_reported_busy_seconds_total",
        kind: C,
        help: "Time the NF reported spending on its events (first pop to its answers' push).",
        get: |n| V::Ns(n.nf_busy_ns),
    },
];

/// The page for `stats`, in the Prometheus text format 0.0.4.
pub fn render(stats: &Stats) -> String {
    let mut p = Page { out: String::with_capacity(16 * 1024) };

    p.family("ubox_info", G, "The runtime instance: its name, flow steering and version (always 1).");
    p.sample(
        "ubox_info",
        &[("instance", &stats.instance), ("steering", &stats.steering), ("version", env!("CARGO_PKG_VERSION"))],
        V::N(1),
    );
    p.family("ubox_uptime_seconds", G, "Time since the runtime started.");
    p.sample("ubox_uptime_seconds", &[], V::Ms(stats.uptime_ms));

    p.family("ubox_port_info", G, "A port: its device and PMD driver (always 1).");
    for port in &stats.ports {
        p.sample(
            "ubox_port_info",
            &[("port", &port.name), ("device", &port.device), ("driver", &port.driver)],
            V::N(1),
        );
    }
    p.each(PORT, &stats.ports, "port", |x| x.name.clone());

    p.family("ubox_worker_info", G, "A worker: the lcore it runs on (always 1).");
    for w in &stats.workers {
        p.sample("ubox_worker_info", &[("worker", &w.id.to_string()), ("lcore", &w.lcore.to_string())], V::N(1));
    }
    p.each(WORKER, &stats.workers, "worker", |w| w.id.to_string());
    p.family("ubox_worker_drops_total", C, "Packets dropped, by reason (reasons that occurred).");
    for w in &stats.workers {
        for (reason, &n) in &w.drops {
            p.sample("ubox_worker_drops_total", &[("worker", &w.id.to_string()), ("reason", reason)], V::N(n));
        }
    }
    p.family(
        "ubox_worker_events_skipped_total",
        C,
        "Events not delivered to an NF, by reason; events, not packets (the stage's policy decided the packet).",
    );
    for w in &stats.workers {
        for (reason, &n) in &w.events_skipped {
            p.sample("ubox_worker_events_skipped_total", &[("worker", &w.id.to_string()), ("reason", reason)], V::N(n));
        }
    }
    p.family(
        "ubox_flows_ended_total",
        C,
        "Flows ended (FLOW/END), by reason: idle timeout, evicted at the table's bound, closed (a monitored \
         connection, after monitor.linger_ms), open at shutdown.",
    );
    for w in &stats.workers {
        let f = &w.flows;
        for (reason, n) in
            [("idle", f.ended_idle), ("evicted", f.evicted), ("closed", f.ended_closed), ("shutdown", f.ended_shutdown)]
        {
            p.sample("ubox_flows_ended_total", &[("worker", &w.id.to_string()), ("reason", reason)], V::N(n));
        }
    }
    p.family(
        "ubox_monitor_sides_stopped_by_reason_total",
        C,
        "Connection sides whose reassembly stopped, by reason: ring full behind a slow reader, no ring, a hole \
         that will never fill (their sum: ubox_monitor_sides_stopped_total).",
    );
    for w in &stats.workers {
        let s = &w.monitor.segments;
        for (reason, n) in
            [("buffer_full", s.stopped_buffer_full), ("no_buffer", s.stopped_no_buffer), ("gap", s.stopped_gap)]
        {
            p.sample(
                "ubox_monitor_sides_stopped_by_reason_total",
                &[("worker", &w.id.to_string()), ("reason", reason)],
                V::N(n),
            );
        }
    }
    p.rtt_histograms(&stats.workers);

    p.family("ubox_pool_capacity", G, "Entries of a shared pool: packet buffers (mbufs) and arena event slots.");
    p.sample("ubox_pool_capacity", &[("pool", "mbufs")], V::N(stats.pools.mbufs_total));
    p.sample("ubox_pool_capacity", &[("pool", "event_slots")], V::N(stats.pools.event_slots_total));
    p.family(
        "ubox_pool_free",
        G,
        "Free entries of a shared pool (back at capacity less the idle use once traffic stops).",
    );
    p.sample("ubox_pool_free", &[("pool", "mbufs")], V::N(stats.pools.mbufs_free));
    p.sample("ubox_pool_free", &[("pool", "event_slots")], V::N(stats.pools.event_slots_free));

    p.family(
        "ubox_nf_state",
        G,
        "An NF's state: 1 for the one it is in (running, dead, or absent: named by a chain, never registered).",
    );
    for n in &stats.nfs {
        for state in NF_STATES {
            p.sample("ubox_nf_state", &[("nf", &n.name), ("state", state)], V::N(u64::from(n.state == state)));
        }
        if !NF_STATES.contains(&n.state.as_str()) {
            p.sample("ubox_nf_state", &[("nf", &n.name), ("state", &n.state)], V::N(1));
        }
    }
    p.each(NF, &stats.nfs, "nf", |n| n.name.clone());
    p.family(
        "ubox_nf_events_by_reason_total",
        C,
        "An NF's events by what became of them (ring_full, no_event_slot, verdict_drop, modified, fail_closed, \
         skipped_absent, reclaimed, published, bad_publish, bad_verdict, stray_answer, corrupt_ring; those that \
         occurred).",
    );
    for n in &stats.nfs {
        for (reason, &v) in &n.counts {
            p.sample("ubox_nf_events_by_reason_total", &[("nf", &n.name), ("reason", reason)], V::N(v));
        }
    }

    let c = &stats.control;
    p.family("ubox_control_connections_total", C, "Connections the control socket accepted.");
    p.sample("ubox_control_connections_total", &[], V::N(c.connections));
    p.family("ubox_control_connections_open", G, "Connections open on the control socket now.");
    p.sample("ubox_control_connections_open", &[], V::N(c.open));
    p.family("ubox_control_requests_total", C, "Well-formed requests the control socket passed to the runtime.");
    p.sample("ubox_control_requests_total", &[], V::N(c.requests));
    p.family(
        "ubox_control_refused_total",
        C,
        "Control socket lines or connections refused, by reason: not a request, over the length limit, too slow, \
         evicted at the connection limit, not root's to make.",
    );
    for (reason, n) in [
        ("bad_request", c.bad_requests),
        ("too_long", c.too_long),
        ("timed_out", c.timed_out),
        ("evicted", c.evicted),
        ("denied", c.denied),
    ] {
        p.sample("ubox_control_refused_total", &[("reason", reason)], V::N(n));
    }
    let cap = &stats.capture;
    p.family("ubox_capture_sessions_total", C, "Captures started (uboxctl capture).");
    p.sample("ubox_capture_sessions_total", &[], V::N(cap.sessions));
    p.family("ubox_capture_active", G, "1 while a capture is armed.");
    p.sample("ubox_capture_active", &[], V::N(u64::from(cap.active)));
    p.family("ubox_capture_packets_total", C, "Packets copied into a capture's queue.");
    p.sample("ubox_capture_packets_total", &[], V::N(cap.counts.captured));
    p.family("ubox_capture_bytes_total", C, "Bytes captured (after the snap length).");
    p.sample("ubox_capture_bytes_total", &[], V::N(cap.counts.bytes));
    p.family("ubox_capture_truncated_total", C, "Captured packets cut at the snap length.");
    p.sample("ubox_capture_truncated_total", &[], V::N(cap.counts.truncated));
    p.family("ubox_capture_queue_full_total", C, "Matching packets not captured: the capture queue was full.");
    p.sample("ubox_capture_queue_full_total", &[], V::N(cap.counts.dropped_full));
    p.out
}

struct Page {
    out: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.header(name, kind.name(), help);
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: V) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, val);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = match v {
            V::N(n) => writeln!(self.out, " {n}"),
            V::Ns(ns) => writeln!(self.out, " {}", ns as f64 / 1e9),
            V::Ms(ms) => writeln!(self.out, " {}", ms as f64 / 1e3),
        };
    }

    /// Each metric of `metrics` for every item, labelled `label="key(item)"`.
    fn each<T>(&mut self, metrics: &[M<T>], items: &[T], label: &str, key: impl Fn(&T) -> String) {
        let keys: Vec<String> = items.iter().map(key).collect();
        for m in metrics {
            self.family(m.name, m.kind, m.help);
            for (item, k) in items.iter().zip(&keys) {
                self.sample(m.name, &[(label, k)], (m.get)(item));
            }
        }
    }

    /// `ubox_nf_event_rtt_seconds`, one histogram per worker: cumulative
    /// buckets, the sum of the round trips and their count (which equals
    /// the `+Inf` bucket, as the format wants; the worker's
    /// `ubox_worker_nf_answers_total` once the counters are still).
    fn rtt_histograms(&mut self, workers: &[WorkerStats]) {
        const NAME: &str = "ubox_nf_event_rtt_seconds";
        self.header(
            NAME,
            "histogram",
            "Round trips of the events NFs answered, from the worker's publish to its taking the answer.",
        );
        for w in workers {
            let worker = w.id.to_string();
            let standard;
            let h = if w.nf_rtt_histogram.counts.is_empty() {
                standard = RttHistogram::from_counts(std::iter::repeat(0).take(RttHistogram::SLOTS));
                &standard
            } else {
                &w.nf_rtt_histogram
            };
            let mut seen = 0u64;
            let bucket = format!("{NAME}_bucket");
            for (i, &n) in h.counts.iter().enumerate() {
                seen += n;
                let le = match h.le_ns.get(i) {
                    Some(&ns) => format!("{}", ns as f64 / 1e9),
                    None => "+Inf".to_string(),
                };
                self.sample(&bucket, &[("worker", &worker), ("le", &le)], V::N(seen));
            }
            if h.counts.len() <= h.le_ns.len() {
                // No unbounded bucket in the data: the format needs one.
                self.sample(&bucket, &[("worker", &worker), ("le", "+Inf")], V::N(seen));
            }
            self.sample(&format!("{NAME}_sum"), &[("worker", &worker)], V::Ns(w.nf_rtt_ns_total));
            self.sample(&format!("{NAME}_count"), &[("worker", &worker)], V::N(seen));
        }
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape_label(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text as the format wants it: `\` and newlines escaped.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::api::{ControlStats, PmdStats, PoolStats};

    /// One sample line, parsed.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, k: &str) -> Option<&str> {
            self.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
        }
    }

    fn is_name(s: &str, colons: bool) -> bool {
        let mut cs = s.chars();
        let first = cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'));
        first && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
    }

    /// `name{labels} value` (labels optional), strictly: panics naming the
    /// line otherwise.
    fn parse_sample(line: &str) -> Sample {
        let bad = |why: &str| -> ! { panic!("not a sample line ({why}): {line:?}") };
        let end = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
        let name = &line[..end];
        if !is_name(name, true) {
            bad("metric name");
        }
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').unwrap_or_else(|| bad("label without ="));
                let key = &rest[..eq];
                if !is_name(key, false) || key.starts_with("__") {
                    bad("label name");
                }
                rest = rest[eq + 1..].strip_prefix('"').unwrap_or_else(|| bad("label value not quoted"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let close = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => bad("bad escape"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, '\n')) => bad("raw newline in a label value"),
                        Some((_, c)) => value.push(c),
                        None => bad("unterminated label value"),
                    }
                };
                labels.push((key.to_string(), value));
                rest = &rest[close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    bad("labels not separated by commas");
                }
            }
        }
        let v = rest.strip_prefix(' ').unwrap_or_else(|| bad("no space before the value"));
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || ".-+eE".contains(c)) => {
                v.parse().unwrap_or_else(|_| bad("value"))
            }
            _ => bad("value (or a timestamp, which we never write)"),
        };
        Sample { name: name.to_string(), labels, value }
    }

    /// Parse a whole page, checking the format's rules: every line a
    /// comment or a sample; HELP and TYPE once per family, before its
    /// samples, which are contiguous; counters end in `_total`; histogram
    /// samples are `_bucket` (with `le`), `_sum` and `_count`; no series
    /// twice. Returns the samples and each family's type.
    fn parse(page: &str) -> (Vec<Sample>, HashMap<String, String>) {
        assert!(page.ends_with('\n'), "the page ends with a newline");
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helps = HashSet::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        let mut done = HashSet::new();
        let mut series = HashSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (what, name, text) =
                    (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                assert!(is_name(name, true), "comment names no metric: {line:?}");
                assert!(!done.contains(name), "family {name} comes back after others: {line:?}");
                match what {
                    "HELP" => {
                        assert!(helps.insert(name.to_string()), "HELP twice for {name}");
                        assert!(!text.is_empty(), "empty help for {name}");
                    }
                    "TYPE" => {
                        assert!(["counter", "gauge", "histogram"].contains(&text), "type {text:?} of {name}");
                        assert!(types.insert(name.to_string(), text.to_string()).is_none(), "TYPE twice for {name}");
                    }
                    _ => panic!("unknown comment {line:?}"),
                }
                if let Some(prev) = current.replace(name.to_string()) {
                    if prev != name {
                        done.insert(prev);
                    }
                }
                continue;
            }
            assert!(!line.is_empty() && !line.starts_with('#'), "stray line {line:?}");
            let s = parse_sample(line);
            let family = current.clone().unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
            let kind = &types[&family];
            match kind.as_str() {
                "histogram" => {
                    let suffix = s.name.strip_prefix(family.as_str()).unwrap_or_else(|| panic!("{line:?} in {family}"));
                    assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line:?}");
                    assert_eq!(suffix == "_bucket", s.label("le").is_some(), "le only on buckets: {line:?}");
                }
                k => {
                    assert_eq!(s.name, family, "sample of another family under {family}'s TYPE: {line:?}");
                    assert_eq!(k == "counter", s.name.ends_with("_total"), "_total is for counters: {line:?}");
                }
            }
            assert!(s.name.starts_with("ubox_"), "{line:?}");
            let mut key = s.labels.clone();
            key.sort();
            assert!(series.insert((s.name.clone(), key)), "series twice: {line:?}");
            samples.push(s);
        }
        assert_eq!(helps.len(), types.len(), "a HELP for every TYPE");
        (samples, types)
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        samples
            .iter()
            .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    fn example() -> Stats {
        let port = |name: &str, n: u64| PortStats {
            name: name.into(),
            device: format!("net_af_packet{n}"),
            driver: "net_af_packet".into(),
            rx_packets: 10 + n,
            rx_bytes: 1000 + n,
            tx_packets: 20 + n,
            tx_bytes: 2000 + n,
            tx_dropped: n,
            pmd: PmdStats { ipackets: 11 + n, imissed: 5, ..Default::default() },
        };
        let mut w0 = WorkerStats { id: 0, lcore: 1, rx_packets: 31, busy_ns: 1_500_000_000, ..Default::default() };
        w0.drops.insert("ipv4_bad_checksum".into(), 3);
        w0.drops.insert("tx_full".into(), 1);
        w0.events_skipped.insert("ring_full".into(), 4);
        w0.flows.active = 2;
        w0.flows.ended_idle = 7;
        w0.nf_answers = 6;
        w0.nf_rtt_ns_total = 60_000;
        let mut counts = vec![0; RttHistogram::SLOTS];
        counts[0] = 1; // <= 1.024 us
        counts[3] = 2; // <= 8.192 us
        counts[16] = 3; // above 33.6 ms
        w0.nf_rtt_histogram = RttHistogram::from_counts(counts);
        let w1 = WorkerStats { id: 1, lcore: 2, ..Default::default() };
        let mut nf = NfStats {
            name: "counter".into(),
            state: "running".into(),
            events_in: 9,
            events_out: 8,
            queue_depth: 1,
            ..Default::default()
        };
        nf.counts.insert("verdict_drop".into(), 2);
        Stats {
            instance: "ubox".into(),
            uptime_ms: 12_345,
            steering: "rss".into(),
            ports: vec![port("client", 0), port("server", 1)],
            workers: vec![w0, w1],
            pools: PoolStats { mbufs_total: 16383, mbufs_free: 16000, event_slots_total: 8192, event_slots_free: 8190 },
            nfs: vec![nf, NfStats { name: "ids".into(), state: "absent".into(), ..Default::default() }],
            control: ControlStats { connections: 5, open: 1, requests: 4, too_long: 1, ..Default::default() },
            capture: Default::default(),
        }
    }

    #[test]
    fn names_labels_and_values_follow_the_conventions() {
        let page = render(&example());
        for line in [
            "ubox_port_rx_packets_total{port=\"client\"} 10",
            "ubox_port_rx_bytes_total{port=\"server\"} 1001",
            "ubox_port_pmd_rx_missed_packets_total{port=\"client\"} 5",
            "ubox_port_info{port=\"client\",device=\"net_af_packet0\",driver=\"net_af_packet\"} 1",
            "ubox_worker_rx_packets_total{worker=\"0\"} 31",
            "ubox_worker_info{worker=\"1\",lcore=\"2\"} 1",
            "ubox_worker_drops_total{worker=\"0\",reason=\"ipv4_bad_checksum\"} 3",
            "ubox_worker_drops_total{worker=\"0\",reason=\"tx_full\"} 1",
            "ubox_worker_events_skipped_total{worker=\"0\",reason=\"ring_full\"} 4",
            "ubox_worker_busy_seconds_total{worker=\"0\"} 1.5",
            "ubox_flows_active{worker=\"0\"} 2",
            "ubox_flows_ended_total{worker=\"0\",reason=\"idle\"} 7",
            "ubox_nf_events_in_total{nf=\"counter\"} 9",
            "ubox_nf_queue_depth{nf=\"counter\"} 1",
            "ubox_nf_events_by_reason_total{nf=\"counter\",reason=\"verdict_drop\"} 2",
            "ubox_nf_state{nf=\"counter\",state=\"running\"} 1",
            "ubox_nf_state{nf=\"counter\",state=\"dead\"} 0",
            "ubox_nf_state{nf=\"ids\",state=\"absent\"} 1",
            "ubox_pool_free{pool=\"mbufs\"} 16000",
            "ubox_pool_capacity{pool=\"event_slots\"} 8192",
            "ubox_control_refused_total{reason=\"too_long\"} 1",
            "ubox_control_connections_open 1",
            "ubox_uptime_seconds 12.345",
            "# TYPE ubox_port_rx_packets_total counter",
            "# TYPE ubox_nf_queue_depth gauge",
            "# TYPE ubox_pool_free gauge",
            "# TYPE ubox_flows_active gauge",
            "# TYPE ubox_nf_event_rtt_seconds histogram",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
        }
        assert!(page.contains(&format!(
            "ubox_info{{instance=\"ubox\",steering=\"rss\",version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        let (samples, types) = parse(&page);
        // Snake case, base units: no ms, us, ns or kb in a name.
        for name in types.keys() {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
            for unit in ["_ms", "_us", "_ns", "_kb", "_mb", "millis", "micro", "nano"] {
                assert!(!name.contains(unit), "{name}: base units only");
            }
        }
        assert!(samples.len() > 100, "{}", samples.len());
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut st = example();
        let odd = "a\"b\\c\nd";
        st.ports[0].name = odd.into();
        st.nfs[0].name = "nf \"x\"".into();
        let page = render(&st);
        assert!(page.contains(r#"ubox_port_rx_packets_total{port="a\"b\\c\nd"} 10"#), "{page}");
        assert!(page.contains(r#"ubox_nf_events_in_total{nf="nf \"x\""} 9"#), "{page}");
        let (samples, _) = parse(&page);
        assert_eq!(find(&samples, "ubox_port_rx_packets_total", &[("port", odd)]).value, 10.0);
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        let mut out = String::new();
        escape_label(&mut out, "plain é");
        assert_eq!(out, "plain é");
    }

    #[test]
    fn the_rtt_histogram_has_cumulative_buckets_sum_and_count() {
        let st = example();
        let page = render(&st);
        let (samples, _) = parse(&page);
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "ubox_nf_event_rtt_seconds_bucket" && s.label("worker") == Some("0"))
            .collect();
        assert_eq!(buckets.len(), RttHistogram::SLOTS);
        let les: Vec<f64> = buckets.iter().map(|s| s.label("le").unwrap().parse::<f64>().unwrap()).collect();
        assert_eq!(les[0], 1.024e-6);
        assert_eq!(les[15], 0.033554432);
        assert_eq!(buckets[16].label("le"), Some("+Inf"));
        assert!(les.windows(2).all(|w| w[0] < w[1]), "le increasing: {les:?}");
        let values: Vec<f64> = buckets.iter().map(|s| s.value).collect();
        assert_eq!(values[..4], [1.0, 1.0, 1.0, 3.0]);
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "cumulative: {values:?}");
        assert_eq!(values[15], 3.0);
        assert_eq!(values[16], 6.0);
        assert_eq!(find(&samples, "ubox_nf_event_rtt_seconds_count", &[("worker", "0")]).value, 6.0);
        assert_eq!(find(&samples, "ubox_nf_event_rtt_seconds_sum", &[("worker", "0")]).value, 0.00006);
        assert!(page.contains("ubox_nf_event_rtt_seconds_bucket{worker=\"0\",le=\"0.000001024\"} 1\n"), "{page}");
        // A worker whose stats have no histogram (an older runtime) still
        // gets well-formed, empty buckets.
        assert_eq!(find(&samples, "ubox_nf_event_rtt_seconds_bucket", &[("worker", "1"), ("le", "+Inf")]).value, 0.0);
        assert_eq!(find(&samples, "ubox_nf_event_rtt_seconds_count", &[("worker", "1")]).value, 0.0);
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        for st in [example(), Stats::default()] {
            let page = render(&st);
            let (samples, types) = parse(&page);
            for s in &samples {
                assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
            }
            // Every family has its HELP and TYPE even with nothing to show.
            assert!(types.contains_key("ubox_worker_drops_total") && types.contains_key("ubox_nf_events_in_total"));
        }
    }

    /// Every number of `uboxctl stats --json` is on the page: fill a Stats
    /// (through its JSON, so a field added later is filled too) with a
    /// different number in every field, and look for each (ns and ms are
    /// shown in seconds). A new counter in `Stats` fails here until it has
    /// its metric.
    #[test]
    fn every_counter_of_stats_json_is_on_the_page() {
        let mut st = example();
        // One of every reason map entry, so those fields exist.
        st.workers[1].drops.insert("no_route".into(), 1);
        st.workers[1].events_skipped.insert("nf_absent".into(), 1);
        let mut v = serde_json::to_value(&st).unwrap();
        let mut next = 1_000_003u64;
        let mut want: Vec<(String, f64)> = Vec::new();
        fn fill(v: &mut serde_json::Value, path: &str, next: &mut u64, want: &mut Vec<(String, f64)>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m.iter_mut() {
                        // Labels, not values; the histogram has its own test.
                        if ["id", "lcore", "nf_rtt_histogram"].contains(&k.as_str()) {
                            continue;
                        }
                        fill(x, &format!("{path}.{k}"), next, want);
                    }
                }
                serde_json::Value::Array(a) => {
                    for (i, x) in a.iter_mut().enumerate() {
                        fill(x, &format!("{path}[{i}]"), next, want);
                    }
                }
                serde_json::Value::Number(_) => {
                    *next += 1000;
                    *v = serde_json::Value::from(*next);
                    let shown = if path.ends_with("_ns") || path.ends_with("_ns_total") {
                        *next as f64 / 1e9
                    } else if path.ends_with("_ms") {
                        *next as f64 / 1e3
                    } else {
                        *next as f64
                    };
                    want.push((path.to_string(), shown));
                }
                _ => {}
            }
        }
        fill(&mut v, "", &mut next, &mut want);
        let st: Stats = serde_json::from_value(v).unwrap();
        let (samples, _) = parse(&render(&st));
        let mut missing = Vec::new();
        for (path, value) in &want {
            if !samples.iter().any(|s| (s.value - value).abs() <= value.abs() * 1e-12) {
                missing.push(path.as_str());
            }
        }
        assert!(missing.is_empty(), "counters of stats --json with no metric: {missing:?}");
        assert!(want.len() > 80, "{}", want.len());
    }
}
