//! `ubox-bench`: ubox measured side by side with a peer in one run.
//!
//! Absolute numbers drift on shared machines, so every scenario runs ubox
//! and its peer in the same invocation, interleaved over several rounds, and
//! reports the ratio of medians. Each scenario writes
//! `bench/results/<scenario>.json` and the run prints a table.
//!
//! Scenarios:
//! - `wire`: `ubox-runtime` in wire mode against `dpdk-testpmd` in `macswap`
//!   and `io` forwarding modes, on the same vdevs (`net_pcap` replaying a
//!   real HTTP capture with `infinite_rx=1` into a `net_null` sink), one
//!   forwarding core each.
//! - `events`: the same replay through chains of 0, 1, 2 and 3 sequential
//!   NF processes and a parallel group of 3 (`counter` NFs), with the mean
//!   event round trip; ratios against the 0-NF run.
//! - `monitor`: the TCP monitor against plain forwarding (Gbit/s).
//! - `e2e`: real traffic (wrk keep-alive and `Connection: close`, iperf3)
//!   on the namespace testbed through ubox (af_packet and af_xdp ports),
//!   `dpdk-testpmd` io on the same vdevs, and the kernel's bridge.
//! - `l7lb`: HTTP load balancing over two nginx backends through ubox's
//!   TCP splicer and the `http-lb` NF, against HAProxy and the kernel
//!   forwarding to one backend.
//! - `l4lb`: the `l4lb` NF (1 VIP, 100 backends, L2 DSR) on a replay of
//!   all SYNs and one of established connections, against wire mode on
//!   the same capture (Mpps).
//!
//! `ubox-bench plot` draws SVG charts of the results (`plot.rs`).

mod capture;
mod e2e;
mod events;
mod l4lb;
mod l7lb;
mod noise;
mod plot;
mod result;
mod testbed;
mod testpmd;
mod traffic;
mod ubox;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use result::{median, ScenarioResult};

/// Benchmarks of ubox against peers measured in the same run.
///
/// Run as root after scripts/setup.sh and a release build
/// (`cargo build --release`). Results go to bench/results/<scenario>.json.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Measurement window per round, in seconds.
    #[arg(long, default_value_t = 4, global = true)]
    seconds: u64,
    /// Rounds per contender (interleaved); the median is reported.
    #[arg(long, default_value_t = 3, global = true)]
    rounds: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results", global = true)]
    out: PathBuf,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// ubox-runtime wire mode vs dpdk-testpmd macswap and io.
    Wire {
        /// Capture replayed in a loop (net_pcap infinite_rx).
        #[arg(long, default_value = "bench/data/http.pcap")]
        pcap: PathBuf,
    },
    /// The event path through 0-3 sequential NF processes and a parallel
    /// group of 3, against the 0-NF run.
    Events {
        #[arg(long, default_value = "bench/data/http.pcap")]
        pcap: PathBuf,
    },
    /// The TCP monitor reassembling both sides for an empty subscriber, and
    /// the ids NF on top, against plain forwarding (Gbit/s).
    Monitor {
        #[arg(long, default_value = "bench/data/http.pcap")]
        pcap: PathBuf,
        /// ids rules for the ids case.
        #[arg(long, default_value = "bench/data/ids.rules")]
        rules: PathBuf,
    },
    /// Real traffic (wrk, iperf3) on the namespace testbed through ubox
    /// (af_packet and af_xdp), dpdk-testpmd io and the kernel's bridge.
    ///
    /// Brings the testbed up if it is down (and down again at the end),
    /// starts nginx and iperf3 -s in ubox-s1, and for each round starts each
    /// contender in turn and runs each workload through it.
    E2e {
        /// A contender, repeatable (default: ubox-afp, testpmd-afp,
        /// kernel-bridge, ubox-xdp, testpmd-xdp). A preset or
        /// LABEL=KIND[;key=value...] with KIND ubox|testpmd|kernel and keys
        /// driver=af_packet|af_xdp, args=DEVARGS (both ports), burst=N,
        /// binary=PATH (another ubox-runtime), runtime=TOML-LINE (ubox
        /// [runtime] key), env=NAME=VALUE (ubox's environment), e.g.
        /// 'ubox-fc=ubox;args=framecnt=2048'.
        #[arg(long = "contender", value_parser = parse_contender)]
        contenders: Vec<e2e::Contender>,
        /// A workload, repeatable (default: all three).
        #[arg(long = "workload", value_enum)]
        workloads: Vec<e2e::Workload>,
        /// CPUs (taskset list) of wrk, nginx, iperf3 and the forwarders'
        /// main lcores.
        #[arg(long, default_value = "0")]
        app_cpus: String,
        /// CPU of the forwarding core (ubox worker, testpmd forwarding lcore).
        #[arg(long, default_value_t = 1)]
        fwd_cpu: u32,
        /// wrk connections.
        #[arg(long, default_value_t = 16)]
        connections: u32,
        /// Take a measurement again when other processes kept more than
        /// this many CPUs busy during it (see --retries).
        #[arg(long, default_value_t = 0.2)]
        max_foreign: f64,
        /// How many times a disturbed measurement is taken again before it
        /// is kept (flagged).
        #[arg(long, default_value_t = 2)]
        retries: u32,
    },
    /// HTTP load balancing (issue 10): wrk against a VIP with two nginx
    /// backends, through ubox's TCP splicer with the http-lb NF, through
    /// HAProxy, and the kernel forwarding to one backend (the floor).
    ///
    /// Uses the testbed named by UBOX_TB, UBOX_TB_IC and UBOX_TB_IS (as
    /// scripts/testbed.sh; brought up if it is down, and down again at the
    /// end); HAProxy and the kernel bridge run in a namespace $UBOX_TB-box that
    /// the box ports move into for their rounds. ubox is skipped, saying
    /// why, while the splicer or target/release/http-lb is not there.
    L7lb {
        /// Contenders (repeatable or comma-separated; default: ubox,
        /// haproxy, kernel).
        #[arg(long = "contender", alias = "contenders", value_enum, value_delimiter = ',')]
        contenders: Vec<l7lb::Contender>,
        /// Cases (repeatable or comma-separated; default: keepalive, close).
        #[arg(long = "case", alias = "cases", value_enum, value_delimiter = ',')]
        cases: Vec<l7lb::Case>,
        /// CPUs (taskset list) of wrk, nginx, the NF and ubox's main lcore.
        #[arg(long, default_value = "0")]
        app_cpus: String,
        /// CPU of the proxy: HAProxy's thread, ubox's worker.
        #[arg(long, default_value_t = 1)]
        fwd_cpu: u32,
        /// wrk connections.
        #[arg(long, default_value_t = 16)]
        connections: u32,
        /// Take a measurement again when other processes kept more than
        /// this many CPUs busy during it (see --retries).
        #[arg(long, default_value_t = 0.2)]
        max_foreign: f64,
        /// How many times a disturbed measurement is taken again before it
        /// is kept (flagged).
        #[arg(long, default_value_t = 2)]
        retries: u32,
    },
    /// The l4lb NF (issue 11: Maglev, connection table, L2 DSR) with 1 VIP
    /// and 100 backends on two generated captures, all SYNs and mostly
    /// established connections, against ubox's wire mode on the same
    /// capture (Mpps, with backpressure: every packet visits the NF).
    L4lb,
    /// SVG charts of results: throughput against the peers, the event path
    /// by number of NFs, latency CDFs (no root needed).
    ///
    /// Reads the JSON files given, or every *.json in the directories given
    /// (default: the --out directory, bench/results), and writes
    /// throughput.svg, events.svg and latency-cdf.svg for what they hold.
    Plot {
        /// Result files or directories (default: --out).
        inputs: Vec<PathBuf>,
        /// Where to write the SVGs.
        #[arg(long, default_value = "bench/plots")]
        charts: PathBuf,
    },
}

fn parse_contender(s: &str) -> Result<e2e::Contender, String> {
    e2e::Contender::parse(s)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Plot { inputs, charts } = &cli.scenario {
        return plot_command(if inputs.is_empty() { std::slice::from_ref(&cli.out) } else { inputs }, charts);
    }
    if unsafe_free_euid() != 0 {
        bail!("ubox-bench must run as root (DPDK needs hugepages): run it with sudo");
    }
    let window = Duration::from_secs(cli.seconds.max(1));
    match &cli.scenario {
        Scenario::Wire { pcap } => wire(&cli, pcap, window),
        Scenario::Events { pcap } => events_scenario(&cli, pcap, window),
        Scenario::Monitor { pcap, rules } => monitor_scenario(&cli, pcap, rules, window),
        Scenario::E2e { contenders, workloads, app_cpus, fwd_cpu, connections, max_foreign, retries } => {
            let contenders = if contenders.is_empty() {
                e2e::PRESETS.iter().map(|p| e2e::Contender::parse(p).expect("presets parse")).collect()
            } else {
                contenders.clone()
            };
            let mut labels: Vec<&str> = contenders.iter().map(|c| c.label.as_str()).collect();
            labels.sort_unstable();
            if labels.windows(2).any(|w| w[0] == w[1]) {
                bail!("two contenders have the same label: give each its own (LABEL=KIND...)");
            }
            let workloads = if workloads.is_empty() {
                vec![e2e::Workload::Keepalive, e2e::Workload::Close, e2e::Workload::Iperf3]
            } else {
                workloads.clone()
            };
            e2e::run(&e2e::Opts {
                rounds: cli.rounds.max(1),
                seconds: window.as_secs(),
                out: cli.out.clone(),
                contenders,
                workloads,
                app_cpus: app_cpus.clone(),
                fwd_cpu: *fwd_cpu,
                connections: *connections,
                max_foreign: *max_foreign,
                retries: *retries,
            })
        }
        Scenario::L7lb { contenders, cases, app_cpus, fwd_cpu, connections, max_foreign, retries } => {
            let mut contenders =
                if contenders.is_empty() { l7lb::DEFAULT_CONTENDERS.to_vec() } else { contenders.clone() };
            let mut seen = std::collections::BTreeSet::new();
            contenders.retain(|c| seen.insert(*c));
            let mut cases =
                if cases.is_empty() { vec![l7lb::Case::Keepalive, l7lb::Case::Close] } else { cases.clone() };
            let mut seen = std::collections::BTreeSet::new();
            cases.retain(|c| seen.insert(*c));
            l7lb::run(&l7lb::Opts {
                rounds: cli.rounds.max(1),
                seconds: window.as_secs(),
                out: cli.out.clone(),
                contenders,
                cases,
                app_cpus: app_cpus.clone(),
                fwd_cpu: *fwd_cpu,
                connections: *connections,
                max_foreign: *max_foreign,
                retries: *retries,
            })
        }
        Scenario::L4lb => l4lb_scenario(&cli, window),
        Scenario::Plot { .. } => unreachable!("handled above"),
    }
}

fn plot_command(inputs: &[PathBuf], charts: &std::path::Path) -> anyhow::Result<()> {
    let loaded = plot::load(inputs)?;
    let (written, skipped) = plot::plot(&loaded, charts)?;
    println!("read {} result files", loaded.files);
    for p in &written {
        println!("wrote {}", p.display());
    }
    for s in &skipped {
        println!("not written: {s}");
    }
    if written.is_empty() {
        bail!("nothing to chart in {} result files", loaded.files);
    }
    Ok(())
}

fn events_scenario(cli: &Cli, pcap: &std::path::Path, window: Duration) -> anyhow::Result<()> {
    let pcap = std::fs::canonicalize(pcap).with_context(|| format!("capture {} not found", pcap.display()))?;
    let cases = events::cases();
    println!(
        "events: {} rounds x {} s per case; net_pcap replay of {} through counter NF processes, with backpressure \
         (every packet visits every NF); worker on CPU 1, NFs on CPU 0",
        cli.rounds,
        window.as_secs(),
        pcap.display()
    );
    let mut runs: Vec<Vec<events::EventRun>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=cli.rounds {
        for (i, case) in cases.iter().enumerate() {
            let r = events::measure(&pcap, case, window).with_context(|| format!("{} run", case.scenario))?;
            let c = &r.costs;
            println!(
                "  round {round}: {:<18} {:>7.3} Mpps  round trip {:>7.1} us  drops {}  skipped {}  \
                 ev/pkt {:.2}  worker {:.0} ns/pkt  NF {:.0} ns/ev  burst w {:.1} nf {:.1}",
                case.label,
                r.m.mpps,
                r.rtt_us,
                r.dropped,
                r.skipped,
                c.events_per_packet,
                c.worker_ns_per_packet,
                c.nf_ns_per_event,
                c.worker_events_per_burst,
                c.nf_events_per_burst
            );
            runs[i].push(r);
        }
    }
    let base = median(runs[0].iter().map(|r| r.m.mpps));
    let base_worker_ns = median(runs[0].iter().map(|r| r.costs.worker_ns_per_packet));
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let mut results = Vec::new();
    let mut skipped_total = 0;
    for (case, rs) in cases.iter().zip(&runs) {
        let mut r = ScenarioResult::new(case.scenario, "Mpps", median(rs.iter().map(|r| r.m.mpps)), "ubox 0 NFs", base);
        r.rounds = cli.rounds;
        r.window_s = window.as_secs_f64();
        r.samples_ubox = rs.iter().map(|r| r.m.mpps).collect();
        r.samples_peer = runs[0].iter().map(|r| r.m.mpps).collect();
        let med = |f: &dyn Fn(&events::EventRun) -> f64| median(rs.iter().map(f));
        let skipped: u64 = rs.iter().map(|r| r.skipped).sum();
        skipped_total += skipped;
        let evpp = med(&|r| r.costs.events_per_packet);
        let worker_ns = med(&|r| r.costs.worker_ns_per_packet);
        r.extra.insert("event_round_trip_us".into(), med(&|r| r.rtt_us));
        r.extra.insert("dropped".into(), med(&|r| r.dropped as f64));
        r.extra.insert("skipped_events".into(), skipped as f64);
        r.extra.insert("events_per_packet".into(), evpp);
        r.extra.insert("worker_ns_per_packet".into(), worker_ns);
        if evpp > 0.0 {
            r.extra.insert("worker_ns_per_event".into(), (worker_ns - base_worker_ns) / evpp);
            r.extra.insert("nf_ns_per_event".into(), med(&|r| r.costs.nf_ns_per_event));
            r.extra.insert("worker_events_per_burst".into(), med(&|r| r.costs.worker_events_per_burst));
            r.extra.insert("nf_events_per_burst".into(), med(&|r| r.costs.nf_events_per_burst));
            r.extra.insert("shared_lines_per_event".into(), med(&|r| r.costs.lines_per_event()));
        }
        r.write(&cli.out)?;
        results.push(r);
    }
    println!();
    print!("{}", result::table(&results));
    println!();
    let mut t = controller::table::Table::new(&[
        "scenario",
        "ev/pkt",
        "worker ns/ev",
        "NF ns/ev",
        "ev/burst w",
        "ev/burst NF",
        "lines/ev",
        "round trip us",
        "skipped",
    ]);
    for r in &results {
        let x = |k: &str| r.extra.get(k).copied().unwrap_or(0.0);
        t.row(vec![
            r.scenario.clone(),
            format!("{:.2}", x("events_per_packet")),
            format!("{:.1}", x("worker_ns_per_event")),
            format!("{:.1}", x("nf_ns_per_event")),
            format!("{:.1}", x("worker_events_per_burst")),
            format!("{:.1}", x("nf_events_per_burst")),
            format!("{:.3}", x("shared_lines_per_event")),
            format!("{:.1}", x("event_round_trip_us")),
            format!("{}", x("skipped_events")),
        ]);
    }
    print!("{}", t.render());
    if skipped_total > 0 {
        bail!("{skipped_total} events were skipped: the figures do not show every packet visiting every NF");
    }
    Ok(())
}

fn l4lb_scenario(cli: &Cli, window: Duration) -> anyhow::Result<()> {
    let dir = TempDir(std::env::temp_dir().join(format!("ubox-bench-l4lb-{}", std::process::id())));
    let inputs = l4lb::write_inputs(&dir.0)?;
    println!(
        "l4lb: {} rounds x {} s per case; net_pcap replays of {} SYNs and of {} connections x {} packets to one VIP \
         with {} backends (L2 DSR), through the l4lb NF with backpressure (every packet visits it), against wire mode \
         on the same capture; worker on CPU 1, the NF on CPU 0",
        cli.rounds,
        window.as_secs(),
        l4lb::SYN_FLOWS,
        l4lb::EST_FLOWS,
        l4lb::EST_PACKETS,
        l4lb::BACKENDS
    );
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let mut results = Vec::new();
    let mut skipped_total = 0;
    for (which, pcap) in [("syn", &inputs.syn), ("established", &inputs.established)] {
        let cases = l4lb::cases(which, &inputs.config);
        let mut runs: [Vec<events::EventRun>; 2] = [Vec::new(), Vec::new()];
        for round in 1..=cli.rounds {
            for (i, case) in cases.iter().enumerate() {
                let r = events::measure(pcap, case, window).with_context(|| format!("{} run", case.scenario))?;
                println!(
                    "  round {round}: {which:<12} {:<8} {:>7.3} Mpps  drops {}  skipped {}  ev/pkt {:.2}  worker {:.0} ns/pkt  \
                     NF {:.0} ns/ev",
                    case.label,
                    r.m.mpps,
                    r.dropped,
                    r.skipped,
                    r.costs.events_per_packet,
                    r.costs.worker_ns_per_packet,
                    r.costs.nf_ns_per_event
                );
                runs[i].push(r);
            }
        }
        let base = median(runs[0].iter().map(|r| r.m.mpps));
        for (case, rs) in cases.iter().zip(&runs) {
            let mut r =
                ScenarioResult::new(case.scenario, "Mpps", median(rs.iter().map(|r| r.m.mpps)), "ubox wire", base);
            r.rounds = cli.rounds;
            r.window_s = window.as_secs_f64();
            r.samples_ubox = rs.iter().map(|r| r.m.mpps).collect();
            r.samples_peer = runs[0].iter().map(|r| r.m.mpps).collect();
            let skipped: u64 = rs.iter().map(|r| r.skipped).sum();
            skipped_total += skipped;
            r.extra.insert("skipped_events".into(), skipped as f64);
            r.extra.insert("dropped".into(), median(rs.iter().map(|r| r.dropped as f64)));
            r.extra.insert("events_per_packet".into(), median(rs.iter().map(|r| r.costs.events_per_packet)));
            r.extra.insert("worker_ns_per_packet".into(), median(rs.iter().map(|r| r.costs.worker_ns_per_packet)));
            r.extra.insert("nf_ns_per_event".into(), median(rs.iter().map(|r| r.costs.nf_ns_per_event)));
            r.write(&cli.out)?;
            results.push(r);
        }
    }
    println!();
    print!("{}", result::table(&results));
    if skipped_total > 0 {
        bail!("{skipped_total} events were skipped: the figures do not show every packet visiting the NF");
    }
    Ok(())
}

/// A directory removed (with what is in it) when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn monitor_scenario(
    cli: &Cli,
    pcap: &std::path::Path,
    rules: &std::path::Path,
    window: Duration,
) -> anyhow::Result<()> {
    let pcap = std::fs::canonicalize(pcap).with_context(|| format!("capture {} not found", pcap.display()))?;
    let rules = std::fs::canonicalize(rules).with_context(|| format!("rules {} not found", rules.display()))?;
    let cases = events::monitor_cases(&rules);
    // Every pass must be new connections with new bytes (see capture.rs).
    let replay = TempFile(std::env::temp_dir().join(format!("ubox-bench-monitor-{}.pcap", std::process::id())));
    let shifted = capture::with_port_reuse(&pcap, &replay.0)?;
    println!(
        "monitor: {} rounds x {} s per case; net_pcap replay of {} and a port-reuse copy of it ({shifted} TCP frames with \
         shifted sequence numbers), so every pass is new connections",
        cli.rounds,
        window.as_secs(),
        pcap.display()
    );
    let pcap = replay.0.clone();
    let mut runs: Vec<Vec<(events::EventRun, controller::api::MonitorStats)>> =
        cases.iter().map(|_| Vec::new()).collect();
    for round in 1..=cli.rounds {
        for (i, case) in cases.iter().enumerate() {
            let (r, mon) =
                events::measure_monitor(&pcap, case, window).with_context(|| format!("{} run", case.scenario))?;
            println!(
                "  round {round}: {:<20} {:>7.3} Mpps {:>7.2} Gbit/s  worker {:.0} ns/pkt, {:.3} events/pkt  monitored flows {} (restarts {}, rings retired {}, DATA_RDY {}, sides without ring {}, stopped {})  drops {}",
                case.label,
                r.m.mpps,
                r.m.gbps,
                r.costs.worker_ns_per_packet,
                r.costs.events_per_packet,
                mon.flows,
                mon.restarts,
                mon.rings_retired,
                mon.data_events,
                mon.no_buffer,
                mon.reasm_stopped,
                r.dropped
            );
            runs[i].push((r, mon));
        }
    }
    let base = median(runs[0].iter().map(|(r, _)| r.m.gbps));
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let mut results = Vec::new();
    for (case, rs) in cases.iter().zip(&runs) {
        let mut r =
            ScenarioResult::new(case.scenario, "Gbit/s", median(rs.iter().map(|(r, _)| r.m.gbps)), "ubox wire", base);
        r.rounds = cli.rounds;
        r.window_s = window.as_secs_f64();
        r.samples_ubox = rs.iter().map(|(r, _)| r.m.gbps).collect();
        r.samples_peer = runs[0].iter().map(|(r, _)| r.m.gbps).collect();
        r.extra.insert("mpps".into(), median(rs.iter().map(|(r, _)| r.m.mpps)));
        r.extra.insert("worker_ns_per_packet".into(), median(rs.iter().map(|(r, _)| r.costs.worker_ns_per_packet)));
        r.extra.insert("events_per_packet".into(), median(rs.iter().map(|(r, _)| r.costs.events_per_packet)));
        r.extra.insert("dropped".into(), median(rs.iter().map(|(r, _)| r.dropped as f64)));
        if let Some((_, m)) = rs.first() {
            r.extra.insert("state_bytes_per_flow".into(), m.state_bytes_per_flow as f64);
            r.extra.insert("ring_bytes_per_reassembled_side".into(), m.ring_bytes as f64);
        }
        r.write(&cli.out)?;
        results.push(r);
    }
    println!();
    print!("{}", result::table(&results));
    Ok(())
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn unsafe_free_euid() -> u32 {
    // Read from /proc to keep this crate free of unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)?.parse().ok()))
        .unwrap_or(u32::MAX)
}

fn wire(cli: &Cli, pcap: &std::path::Path, window: Duration) -> anyhow::Result<()> {
    let pcap = std::fs::canonicalize(pcap).with_context(|| format!("capture {} not found", pcap.display()))?;
    let vdevs = [format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()), "net_null1,no-rx=1".to_string()];
    println!(
        "wire: {} rounds x {} s per contender; net_pcap replay of {} into net_null, 1 forwarding core",
        cli.rounds,
        window.as_secs(),
        pcap.display()
    );
    let mut ubox_runs = Vec::new();
    let mut macswap_runs = Vec::new();
    let mut io_runs = Vec::new();
    for round in 1..=cli.rounds {
        let u = ubox::measure_wire(&pcap, window).context("ubox-runtime run")?;
        println!("  round {round}: ubox-runtime wire   {:>7.3} Mpps {:>7.2} Gbit/s", u.mpps, u.gbps);
        ubox_runs.push(u);
        let m = testpmd::measure(&vdevs, "macswap", window).context("dpdk-testpmd macswap run")?;
        println!("  round {round}: testpmd macswap     {:>7.3} Mpps {:>7.2} Gbit/s", m.mpps, m.gbps);
        macswap_runs.push(m);
        let i = testpmd::measure(&vdevs, "io", window).context("dpdk-testpmd io run")?;
        println!("  round {round}: testpmd io          {:>7.3} Mpps {:>7.2} Gbit/s", i.mpps, i.gbps);
        io_runs.push(i);
    }
    let ubox_mpps = median(ubox_runs.iter().map(|m| m.mpps));
    let results = [
        ScenarioResult::new(
            "wire-vs-testpmd-macswap",
            "Mpps",
            ubox_mpps,
            "dpdk-testpmd macswap",
            median(macswap_runs.iter().map(|m| m.mpps)),
        ),
        ScenarioResult::new(
            "wire-vs-testpmd-io",
            "Mpps",
            ubox_mpps,
            "dpdk-testpmd io",
            median(io_runs.iter().map(|m| m.mpps)),
        ),
        ScenarioResult::new(
            "wire-gbps-vs-testpmd-macswap",
            "Gbit/s",
            median(ubox_runs.iter().map(|m| m.gbps)),
            "dpdk-testpmd macswap",
            median(macswap_runs.iter().map(|m| m.gbps)),
        ),
    ];
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    for r in &results {
        let mut r = r.clone();
        r.rounds = cli.rounds;
        r.window_s = window.as_secs_f64();
        r.samples_ubox = match r.metric.as_str() {
            "Gbit/s" => ubox_runs.iter().map(|m| m.gbps).collect(),
            _ => ubox_runs.iter().map(|m| m.mpps).collect(),
        };
        r.samples_peer = match (r.peer_name.as_str(), r.metric.as_str()) {
            (_, "Gbit/s") => macswap_runs.iter().map(|m| m.gbps).collect(),
            ("dpdk-testpmd io", _) => io_runs.iter().map(|m| m.mpps).collect(),
            _ => macswap_runs.iter().map(|m| m.mpps).collect(),
        };
        r.write(&cli.out)?;
    }
    println!();
    print!("{}", result::table(&results));
    Ok(())
}
