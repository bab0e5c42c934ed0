//! `ubox-bench e2e`: real traffic through the box on the namespace testbed,
//! for ubox and its peers, in one run.
//!
//! What it owns: the testbed for the length of the run (brought up with
//! `scripts/testbed.sh up` when it is not up, taken down at the end only
//! then; otherwise left as found), the servers in `ubox-s1` (nginx serving a
//! 1 KB object, `iperf3 -s`), the forwarder between the box ports `ubx-c`
//! and `ubx-s`, and the client sysctls it changes in `ubox-c` (restored at
//! the end). It must not touch anything else: it starts no forwarder while
//! something else already forwards between the two ports (it checks with a
//! ping before the first one).
//!
//! Contenders (a forwarder each, started and stopped once per round):
//! - `ubox-afp`: `ubox-runtime` in wire mode on `net_af_packet` ports, one
//!   worker (as `examples/wire.toml`);
//! - `ubox-xdp`: the same on `net_af_xdp` ports (`driver = "af_xdp"`);
//! - `testpmd-afp`, `testpmd-xdp`: `dpdk-testpmd --forward-mode=io` on the
//!   same vdevs with the same device arguments, one forwarding core;
//! - `kernel-bridge`: no forwarding process; `ubx-c` and `ubx-s` are put in
//!   a Linux bridge (`ubx-br`) in the root namespace. The testbed is one
//!   /24 and the box is an L2 wire, so a bridge is the kernel's own way of
//!   doing exactly that job (a router namespace would need two subnets and
//!   would add TTL and ARP work the box does not do). The bridge is left to
//!   the kernel's defaults as found (`bridge-nf-call-iptables` included,
//!   recorded in the results).
//!
//! Workloads, each against every contender: wrk with N keep-alive
//! connections fetching the 1 KB object (req/s, p50, p99), the same with
//! `Connection: close` (a TCP handshake per request), and a single-stream
//! iperf3 upload (Gbit/s, as received by the server).
//!
//! CPUs: the forwarding core (ubox's worker, testpmd's forwarding lcore) on
//! `--fwd-cpu` (default 1); wrk, nginx, iperf3 and the forwarders' main
//! lcores on `--app-cpus` (default 0), pinned with `taskset` and EAL
//! `--lcores`; this process too (it polls its children). Kernel forwarding
//! has no process to pin: the bridge runs in the softirqs of whichever CPU
//! sends.
//!
//! Rounds interleave the contenders (the order rotates each round, so none
//! always runs first after the others), and the median over rounds is
//! reported. Before the first round every workload runs once through the
//! first contender (the first measurement after the servers start is
//! otherwise colder than all later ones), and each contender gets a 1 s
//! wrk warm-up after it starts; neither is measured. Every measurement also records the CPU time foreign
//! processes used meanwhile (`noise.rs`); one during which they kept more
//! than `--max-foreign` CPUs busy is printed, discarded and taken again
//! (up to `--retries` times, then kept and flagged), because a busy-polling
//! forwarder that shares its CPU is time-sliced and its latency then says
//! more about the other work than about the forwarder. The counts of
//! repeated measurements go into the results. Results: `e2e-<workload>-<metric>-<ubox>-vs-<peer>.json`
//! (ubox vs testpmd io on the same driver, ubox vs the kernel bridge, and
//! ubox af_xdp vs ubox af_packet) and two tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::noise::{worker_preemptions, ForeignCpu};
use crate::result::{median, Better, ScenarioResult};
use crate::testbed::{self, iface_exists, ip, repo_root, sh, wait_listening, Names, Nginx, Proc, OBJECT};
use crate::testpmd;
use crate::traffic::{self, Connections, IperfResult, WrkResult};
use crate::ubox::Running;

/// The testbed's names (scripts/testbed.sh).
const CLIENT_NS: &str = "ubox-c";
const SERVER_NS: &str = "ubox-s1";
const SERVER_IP: &str = "10.10.0.11";
const IFACE_CLIENT: &str = "ubx-c";
const IFACE_SERVER: &str = "ubx-s";
/// The kernel-forwarding contender's bridge in the root namespace.
const BRIDGE: &str = "ubx-br";
const IPERF_PORT: u16 = 5201;

/// What forwards between the box ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ubox,
    Testpmd,
    Kernel,
}

/// The vdev driver of a DPDK contender's two ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    AfPacket,
    AfXdp,
}

impl Driver {
    fn config_name(self) -> &'static str {
        match self {
            Driver::AfPacket => "af_packet",
            Driver::AfXdp => "af_xdp",
        }
    }

    /// The vdev strings, exactly as ubox-runtime builds them for one worker
    /// (config.rs `eal_args`), so testpmd gets the same device arguments.
    fn vdevs(self, args: Option<&str>) -> [String; 2] {
        let extra = args.map(|a| format!(",{a}")).unwrap_or_default();
        let dev = |i: usize, iface: &str| match self {
            Driver::AfPacket => format!("net_af_packet{i},iface={iface},qpairs=1{extra}"),
            Driver::AfXdp => format!("net_af_xdp{i},iface={iface},start_queue=0,queue_count=1{extra}"),
        };
        [dev(0, IFACE_CLIENT), dev(1, IFACE_SERVER)]
    }
}

/// One contender: a preset or `LABEL=KIND[;key=value...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Contender {
    pub label: String,
    pub kind: Kind,
    pub driver: Driver,
    /// Extra device arguments for both ports.
    pub args: Option<String>,
    /// RX/TX burst (ubox `runtime.burst`, testpmd `--burst`).
    pub burst: Option<u16>,
    /// Another ubox-runtime binary (e.g. an experimental build).
    pub binary: Option<PathBuf>,
    /// Extra `[runtime]` TOML lines (ubox only), e.g. `rx_desc = 512`.
    pub runtime_toml: Vec<String>,
    /// Extra environment of the ubox-runtime process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

/// The presets, in the default order.
pub const PRESETS: [&str; 5] = ["ubox-afp", "testpmd-afp", "kernel-bridge", "ubox-xdp", "testpmd-xdp"];

impl Contender {
    fn new(label: &str, kind: Kind, driver: Driver) -> Contender {
        Contender {
            label: label.into(),
            kind,
            driver,
            args: None,
            burst: None,
            binary: None,
            runtime_toml: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Parses a preset name or `LABEL=KIND[;key=value...]` with KIND `ubox`,
    /// `testpmd` or `kernel` and keys `driver` (af_packet | af_xdp), `args`
    /// (device arguments), `burst`, `binary`, `runtime` (a `[runtime]`
    /// TOML line) and `env` (`NAME=VALUE` for the runtime's environment);
    /// the last three for ubox only, `runtime` and `env` repeatable.
    pub fn parse(spec: &str) -> Result<Contender, String> {
        match spec {
            "ubox-afp" => return Ok(Contender::new(spec, Kind::Ubox, Driver::AfPacket)),
            "ubox-xdp" => return Ok(Contender::new(spec, Kind::Ubox, Driver::AfXdp)),
            "testpmd-afp" => return Ok(Contender::new(spec, Kind::Testpmd, Driver::AfPacket)),
            "testpmd-xdp" => return Ok(Contender::new(spec, Kind::Testpmd, Driver::AfXdp)),
            "kernel-bridge" => return Ok(Contender::new(spec, Kind::Kernel, Driver::AfPacket)),
            _ => {}
        }
        let usage = "a preset (ubox-afp, ubox-xdp, testpmd-afp, testpmd-xdp, kernel-bridge) or \
                     LABEL=KIND[;key=value...] with KIND ubox|testpmd|kernel and keys driver, args, burst, binary, runtime, env";
        let Some((label, rest)) = spec.split_once('=') else {
            return Err(format!("contender '{spec}': expected {usage}"));
        };
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            return Err(format!("contender '{spec}': label '{label}' must be letters, digits, '-', '_' or '.'"));
        }
        let mut parts = rest.split(';');
        let kind = match parts.next().unwrap_or("") {
            "ubox" => Kind::Ubox,
            "testpmd" => Kind::Testpmd,
            "kernel" => Kind::Kernel,
            k => return Err(format!("contender '{spec}': unknown kind '{k}' (ubox, testpmd or kernel)")),
        };
        let mut c = Contender::new(label, kind, Driver::AfPacket);
        for kv in parts.filter(|p| !p.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| format!("contender '{spec}': '{kv}' is not key=value"))?;
            match k {
                "driver" => {
                    c.driver = match v {
                        "af_packet" => Driver::AfPacket,
                        "af_xdp" => Driver::AfXdp,
                        _ => return Err(format!("contender '{spec}': driver '{v}' is not af_packet or af_xdp")),
                    }
                }
                "args" => c.args = Some(v.to_string()),
                "burst" => {
                    c.burst = Some(
                        v.parse()
                            .ok()
                            .filter(|&b| (1..=512).contains(&b))
                            .ok_or_else(|| format!("contender '{spec}': burst '{v}' is not a number from 1 to 512"))?,
                    )
                }
                "binary" => c.binary = Some(PathBuf::from(v)),
                "runtime" => c.runtime_toml.push(v.to_string()),
                "env" => {
                    let (name, val) =
                        v.split_once('=').ok_or_else(|| format!("contender '{spec}': env '{v}' is not NAME=VALUE"))?;
                    c.env.push((name.to_string(), val.to_string()));
                }
                _ => {
                    return Err(format!(
                        "contender '{spec}': unknown key '{k}' (driver, args, burst, binary, runtime, env)"
                    ))
                }
            }
        }
        if c.kind != Kind::Ubox && (c.binary.is_some() || !c.runtime_toml.is_empty() || !c.env.is_empty()) {
            return Err(format!("contender '{spec}': binary, runtime and env apply to ubox contenders only"));
        }
        if c.kind == Kind::Kernel && (c.args.is_some() || c.burst.is_some()) {
            return Err(format!("contender '{spec}': the kernel bridge takes no args or burst"));
        }
        Ok(c)
    }
}

/// The three workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    /// wrk, keep-alive connections.
    Keepalive,
    /// wrk with `Connection: close`.
    Close,
    /// Single-stream iperf3.
    Iperf3,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Keepalive => "wrk-keepalive",
            Workload::Close => "wrk-close",
            Workload::Iperf3 => "iperf3",
        }
    }

    /// (metric, unit, which way is better for ubox).
    fn metrics(self) -> &'static [(&'static str, &'static str, Better)] {
        match self {
            Workload::Keepalive | Workload::Close => &[
                ("rps", "req/s", Better::Higher),
                ("p50", "p50 latency ms", Better::Lower),
                ("p99", "p99 latency ms", Better::Lower),
            ],
            Workload::Iperf3 => &[("gbps", "Gbit/s", Better::Higher)],
        }
    }
}

pub struct Opts {
    pub rounds: usize,
    pub seconds: u64,
    pub out: PathBuf,
    pub contenders: Vec<Contender>,
    pub workloads: Vec<Workload>,
    /// CPUs of wrk, nginx, iperf3 and the forwarders' main lcores (taskset
    /// list); the first one hosts the main lcores.
    pub app_cpus: String,
    pub fwd_cpu: u32,
    pub connections: u32,
    /// A measurement during which foreign processes kept more CPUs than
    /// this busy is taken again, up to `retries` times (then kept, flagged).
    pub max_foreign: f64,
    pub retries: u32,
}

/// The e2e testbed (the default names), with no bridge of ours left over
/// and nothing else forwarding between the box ports.
struct Testbed {
    _tb: testbed::Testbed,
}

impl Testbed {
    fn ensure(root: &Path) -> anyhow::Result<Testbed> {
        let tb = Testbed { _tb: testbed::Testbed::ensure(root, &Names::default())? };
        // A leftover bridge of an interrupted run would forward alongside
        // every contender.
        if iface_exists(BRIDGE) {
            ip(&["link", "del", BRIDGE])?;
        }
        if ping_through(Duration::from_millis(800)) {
            bail!(
                "something already forwards between {IFACE_CLIENT} and {IFACE_SERVER} (another ubox-runtime, testpmd or bridge?): stop it first"
            );
        }
        // An XDP program left by an af_xdp forwarder that was killed would
        // change how the veths receive for every contender after it.
        detach_xdp();
        Ok(tb)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Before the inner guard takes the testbed down or restores it.
        if iface_exists(BRIDGE) {
            let _ = ip(&["link", "del", BRIDGE]);
        }
    }
}

/// Removes any XDP program from the box ports (a no-op without one).
fn detach_xdp() {
    for i in [IFACE_CLIENT, IFACE_SERVER] {
        let _ = Command::new("ip").args(["link", "set", i, "xdp", "off"]).stderr(Stdio::null()).status();
    }
}

/// One ping from the client to server 1 within `wait`.
fn ping_through(wait: Duration) -> bool {
    testbed::ping(CLIENT_NS, SERVER_IP, wait)
}

fn wait_for_path(timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ping_through(Duration::from_millis(500)) {
            return Ok(());
        }
    }
    bail!("no ping from {CLIENT_NS} to {SERVER_IP} through the forwarder within {} s", timeout.as_secs())
}

/// nginx (serving the 1 KB object) and `iperf3 -s` in server 1's namespace.
struct Servers {
    _nginx: Nginx,
    _iperf3: Proc,
    dir: PathBuf,
}

impl Servers {
    fn start(root: &Path, app_cpus: &str) -> anyhow::Result<Servers> {
        let dir = std::env::temp_dir().join(format!("ubox-bench-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let www = testbed::write_www(&dir)?;
        // The same nginx.conf as the e2e tests (scripts/lib.sh).
        let nginx = Nginx::start(root, SERVER_NS, app_cpus, &dir, &www, false)?;
        let mut iperf = traffic::in_ns(SERVER_NS, app_cpus, "iperf3");
        iperf.args(["-s", "-p", &IPERF_PORT.to_string()]);
        let mut iperf = Proc::spawn("iperf3 -s", iperf, &dir.join("iperf3-s.log"))?;
        wait_listening(SERVER_NS, IPERF_PORT, &mut iperf)?;
        Ok(Servers { _nginx: nginx, _iperf3: iperf, dir })
    }
}

/// A running contender.
enum Forwarder {
    Ubox(Running),
    Testpmd(testpmd::Forwarding),
    Kernel,
}

impl Forwarder {
    /// The forwarding process, if there is one.
    fn pid(&self) -> Option<u32> {
        match self {
            Forwarder::Ubox(rt) => Some(rt.pid()),
            Forwarder::Testpmd(t) => Some(t.pid()),
            Forwarder::Kernel => None,
        }
    }

    fn start(c: &Contender, opts: &Opts, logdir: &Path) -> anyhow::Result<Forwarder> {
        let main_cpu = opts.app_cpus.split([',', '-']).next().unwrap_or("0").trim().to_string();
        let f = match c.kind {
            Kind::Ubox => {
                let bin = match &c.binary {
                    Some(b) => b.clone(),
                    None => crate::ubox::runtime_binary()?,
                };
                let cfg = ubox_config(c, &main_cpu, opts.fwd_cpu);
                Forwarder::Ubox(Running::start_binary(&bin, &cfg, None, &c.env)?)
            }
            Kind::Testpmd => {
                let mut extra = vec!["--total-num-mbufs=32768".to_string(), "--rxd=1024".into(), "--txd=1024".into()];
                if let Some(b) = c.burst {
                    extra.push(format!("--burst={b}"));
                }
                let log = logdir.join(format!("testpmd-{}.log", c.label));
                Forwarder::Testpmd(testpmd::Forwarding::start(
                    &c.driver.vdevs(c.args.as_deref()),
                    "io",
                    &format!("0@{main_cpu},1@{}", opts.fwd_cpu),
                    &extra,
                    &log,
                )?)
            }
            Kind::Kernel => {
                testbed::kernel_bridge(None, BRIDGE, &[IFACE_CLIENT, IFACE_SERVER])?;
                Forwarder::Kernel
            }
        };
        wait_for_path(Duration::from_secs(15)).with_context(|| format!("{} is up but does not forward", c.label))?;
        Ok(f)
    }

    /// Stops the forwarder and says what it dropped over its life, by its
    /// own counters (empty for the kernel bridge).
    fn stop(self) -> anyhow::Result<String> {
        match self {
            Forwarder::Ubox(mut rt) => {
                let (_, s) = rt.stats()?;
                rt.stop();
                let tx: u64 = s.ports.iter().map(|p| p.tx_dropped).sum();
                let missed: u64 = s.ports.iter().map(|p| p.pmd.imissed + p.pmd.rx_nombuf).sum();
                let w: u64 = s.workers.iter().map(|w| w.dropped).sum();
                Ok(format!("drops: worker {w}, tx_full {tx}, rx missed {missed}"))
            }
            Forwarder::Testpmd(mut t) => {
                let f = t.stop()?;
                Ok(format!("drops: rx {}, tx {}", f.rx_dropped, f.tx_dropped))
            }
            Forwarder::Kernel => {
                ip(&["link", "del", BRIDGE])?;
                Ok(String::new())
            }
        }
    }
}

/// ubox-runtime's config for contender `c`: wire mode between the two box
/// ports, one worker on `fwd_cpu` (as examples/wire.toml).
fn ubox_config(c: &Contender, main_cpu: &str, fwd_cpu: u32) -> String {
    ubox_config_for(c, main_cpu, fwd_cpu, IFACE_CLIENT, IFACE_SERVER)
}

/// [`ubox_config`] on the box ports `iface_client` and `iface_server` (of
/// another testbed).
pub fn ubox_config_for(c: &Contender, main_cpu: &str, fwd_cpu: u32, iface_client: &str, iface_server: &str) -> String {
    let mut rt = format!(
        "name = \"{}\"\nmode = \"wire\"\nworkers = 1\nmain_cpu = {main_cpu}\nworker_cpus = [{fwd_cpu}]\n",
        crate::ubox::instance()
    );
    if let Some(b) = c.burst {
        rt.push_str(&format!("burst = {b}\n"));
    }
    for l in &c.runtime_toml {
        rt.push_str(l);
        rt.push('\n');
    }
    let args = c.args.as_ref().map(|a| format!("args = \"{a}\"\n")).unwrap_or_default();
    let d = c.driver.config_name();
    format!(
        "[runtime]\n{rt}\n[[port]]\nname = \"client\"\ndriver = \"{d}\"\niface = \"{iface_client}\"\nipv4 = [\"10.10.0.254\"]\n{args}\n\
         [[port]]\nname = \"server\"\ndriver = \"{d}\"\niface = \"{iface_server}\"\n{args}\n\
         [[wire]]\nports = [\"client\", \"server\"]\n"
    )
}

/// One workload's figures, by metric key.
fn figures(w: Workload, wrk: Option<&WrkResult>, ip: Option<&IperfResult>) -> Vec<(&'static str, f64)> {
    match (w, wrk, ip) {
        (Workload::Keepalive | Workload::Close, Some(r), _) => {
            vec![
                ("rps", r.requests_per_s),
                ("p50", r.p50_ms),
                ("p75", r.p75_ms),
                ("p90", r.p90_ms),
                ("p99", r.p99_ms),
                ("max", r.max_ms),
            ]
        }
        (Workload::Iperf3, _, Some(r)) => vec![("gbps", r.gbps)],
        _ => Vec::new(),
    }
}

/// Samples per contender, per (workload, metric).
type Samples = Vec<BTreeMap<(Workload, &'static str), Vec<f64>>>;

/// Runs workload `w` for `seconds`: its figures (plus `foreign`, the CPUs
/// other processes used meanwhile, and `kernel`, kernel threads' CPUs)
/// and a line for the round.
fn measure_workload(
    w: Workload,
    opts: &Opts,
    seconds: u64,
    fwd: &Forwarder,
) -> anyhow::Result<(Vec<(&'static str, f64)>, String)> {
    let foreign = ForeignCpu::start();
    let pid = fwd.pid();
    let pre0 = pid.and_then(worker_preemptions);
    let t0 = Instant::now();
    let (mut figs, line) = run_workload(w, opts, seconds)?;
    let pre = match (pre0, pid.and_then(worker_preemptions)) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / t0.elapsed().as_secs_f64()),
        _ => None,
    };
    let l = foreign.cpus();
    figs.push(("foreign", l.foreign));
    figs.push(("kernel", l.kernel));
    let pre_note = match pre {
        Some(p) => {
            figs.push(("preempted", p));
            format!(", forwarder preempted {p:.0}/s")
        }
        None => String::new(),
    };
    Ok((figs, format!("{line}  [foreign CPU {:.2}, kernel threads {:.2}{pre_note}]", l.foreign, l.kernel)))
}

fn run_workload(w: Workload, opts: &Opts, seconds: u64) -> anyhow::Result<(Vec<(&'static str, f64)>, String)> {
    let url = format!("http://{SERVER_IP}/{OBJECT}");
    match w {
        Workload::Keepalive | Workload::Close => {
            let mode = if w == Workload::Close { Connections::Close } else { Connections::KeepAlive };
            let r = traffic::wrk(CLIENT_NS, &opts.app_cpus, &url, opts.connections, seconds, mode)?;
            if r.requests == 0 {
                bail!("wrk completed no request");
            }
            if r.bad_status > 0 {
                // Not the object: a measurement of error pages is no measurement.
                bail!("wrk got {} non-2xx answers for {url} (another server on port 80?)", r.bad_status);
            }
            let note = if r.socket_errors + r.bad_status > 0 {
                format!(
                    "  (errors: socket {} incl. {} timeouts, non-2xx {})",
                    r.socket_errors, r.timeouts, r.bad_status
                )
            } else {
                String::new()
            };
            let line = format!(
                "{:>9.0} req/s  p50 {:>6.3} ms  p90 {:>6.3} ms  p99 {:>6.3} ms{note}",
                r.requests_per_s, r.p50_ms, r.p90_ms, r.p99_ms
            );
            Ok((figures(w, Some(&r), None), line))
        }
        Workload::Iperf3 => {
            let r = traffic::iperf3(CLIENT_NS, &opts.app_cpus, SERVER_IP, IPERF_PORT, seconds)?;
            Ok((figures(w, None, Some(&r)), format!("{:>7.3} Gbit/s  retransmits {}", r.gbps, r.retransmits)))
        }
    }
}

/// Which pairs get a ratio: every ubox contender against each testpmd
/// contender on the same driver and against each kernel one; every other
/// ubox contender against the first.
fn pairs(cs: &[Contender]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let first_ubox = cs.iter().position(|c| c.kind == Kind::Ubox);
    for (u, cu) in cs.iter().enumerate().filter(|(_, c)| c.kind == Kind::Ubox) {
        for (p, cp) in cs.iter().enumerate() {
            let peer = match cp.kind {
                Kind::Testpmd => cp.driver == cu.driver,
                Kind::Kernel => true,
                Kind::Ubox => false,
            };
            if peer {
                out.push((u, p));
            }
        }
        if let Some(f) = first_ubox.filter(|&f| f != u) {
            out.push((u, f));
        }
    }
    out
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    if opts.contenders.is_empty() || opts.workloads.is_empty() {
        bail!("nothing to measure: give at least one contender and one workload");
    }
    let root = repo_root()?;
    let cs = &opts.contenders;
    // This process polls its children: keep it off the forwarding core too
    // (its threads, present and future, inherit the mask).
    sh(
        Command::new("taskset").args(["-a", "-p", "-c", &opts.app_cpus, &std::process::id().to_string()]),
        "taskset (pinning ubox-bench to --app-cpus)",
    )?;
    println!(
        "e2e: {} rounds x {} s per workload; contenders {}; workloads {}; wrk {} connections, 1 KB object; \
         forwarding core CPU {}, wrk/nginx/iperf3 and main lcores on CPU {}",
        opts.rounds,
        opts.seconds,
        cs.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join(", "),
        opts.workloads.iter().map(|w| w.name()).collect::<Vec<_>>().join(", "),
        opts.connections,
        opts.fwd_cpu,
        opts.app_cpus
    );
    let bridge_nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "n/a (br_netfilter not loaded)".into());
    // SIGINT/SIGTERM end the run after the current measurement, cleaning
    // up (servers, forwarder, bridge, testbed) on the way out.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let testbed = Testbed::ensure(&root)?;
    let servers = Servers::start(&root, &opts.app_cpus)?;
    let logdir = servers.dir.clone();
    let mut samples: Samples = cs.iter().map(|_| BTreeMap::new()).collect();
    // Measurements taken again per contender (foreign load).
    let mut repeated: BTreeMap<usize, u32> = BTreeMap::new();
    let result = (|| -> anyhow::Result<()> {
        // The very first measurement after the servers start runs colder
        // than every later one (caches, nginx, TCP state): a warm-up pass of
        // every workload through the first contender, not measured.
        {
            let c = &cs[0];
            println!("  warm-up: {} workloads through {}, 2 s each, not measured", opts.workloads.len(), c.label);
            let fwd = Forwarder::start(c, opts, &logdir).with_context(|| format!("starting {}", c.label))?;
            for &w in &opts.workloads {
                run_workload(w, opts, 2).with_context(|| format!("warm-up {} through {}", w.name(), c.label))?;
            }
            fwd.stop().with_context(|| format!("stopping {}", c.label))?;
            if c.driver == Driver::AfXdp {
                detach_xdp();
            }
        }
        for round in 0..opts.rounds {
            for k in 0..cs.len() {
                let ci = (round + k) % cs.len();
                let c = &cs[ci];
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted: stopped after round {} of {}, cleaned up", round, opts.rounds);
                }
                let fwd = Forwarder::start(c, opts, &logdir).with_context(|| format!("starting {}", c.label))?;
                // Warm-up, not measured.
                let _ = run_workload(Workload::Keepalive, opts, 1);
                for &w in &opts.workloads {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    for attempt in 0..=opts.retries {
                        let (figs, line) = measure_workload(w, opts, opts.seconds, &fwd)
                            .with_context(|| format!("{} through {}", w.name(), c.label))?;
                        let foreign = figs.iter().find(|(m, _)| *m == "foreign").map_or(0.0, |f| f.1);
                        let disturbed = foreign > opts.max_foreign;
                        if disturbed && attempt < opts.retries {
                            println!(
                                "  round {}: {:<14} {:<13} {line}  disturbed (foreign CPU above {}): measuring again",
                                round + 1,
                                c.label,
                                w.name(),
                                opts.max_foreign
                            );
                            *repeated.entry(ci).or_default() += 1;
                            continue;
                        }
                        let flag = if disturbed { "  disturbed, kept (retries used up)" } else { "" };
                        println!("  round {}: {:<14} {:<13} {line}{flag}", round + 1, c.label, w.name());
                        for (m, v) in figs {
                            samples[ci].entry((w, m)).or_default().push(v);
                        }
                        break;
                    }
                }
                let drops = fwd.stop().with_context(|| format!("stopping {}", c.label))?;
                if c.driver == Driver::AfXdp {
                    detach_xdp();
                }
                if !drops.is_empty() {
                    println!("  round {}: {:<14} {drops}", round + 1, c.label);
                }
            }
        }
        Ok(())
    })();
    drop(servers);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&logdir);
    } else {
        eprintln!("logs kept in {}", logdir.display());
    }
    drop(testbed);
    result?;

    // Medians per contender.
    let med = |ci: usize, w: Workload, m: &str| samples[ci].get(&(w, m)).map(|v| median(v.iter().copied()));
    let mut header = vec!["contender".to_string()];
    for &w in &opts.workloads {
        for (_, unit, _) in w.metrics() {
            header.push(format!("{} {unit}", w.name()));
        }
    }
    header.push("foreign CPU".into());
    let hdr: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = controller::table::Table::new(&hdr);
    for (ci, c) in cs.iter().enumerate() {
        let mut row = vec![c.label.clone()];
        for &w in &opts.workloads {
            for (m, _, _) in w.metrics() {
                row.push(
                    med(ci, w, m)
                        .map(|v| if *m == "rps" { format!("{v:.0}") } else { format!("{v:.3}") })
                        .unwrap_or_default(),
                );
            }
        }
        let all = samples[ci].iter().filter(|((_, m), _)| *m == "foreign").flat_map(|(_, v)| v.iter().copied());
        row.push(format!("{:.2}", median(all)));
        t.row(row);
    }
    println!();
    println!("medians over {} rounds:", opts.rounds);
    print!("{}", t.render());

    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut results = Vec::new();
    for (u, p) in pairs(cs) {
        for &w in &opts.workloads {
            for &(m, unit, better) in w.metrics() {
                let (Some(mu), Some(mp)) = (med(u, w, m), med(p, w, m)) else { continue };
                let name = format!("e2e-{}-{m}-{}-vs-{}", w.name(), cs[u].label, cs[p].label);
                let mut r = ScenarioResult::new(&name, unit, mu, &cs[p].label, mp);
                r.better = better;
                r.rounds = opts.rounds;
                r.window_s = opts.seconds as f64;
                r.samples_ubox = samples[u][&(w, m)].clone();
                r.samples_peer = samples[p][&(w, m)].clone();
                r.extra.insert("connections".into(), f64::from(opts.connections));
                // CPUs other processes kept busy while each was measured.
                if let (Some(fu), Some(fp)) = (med(u, w, "foreign"), med(p, w, "foreign")) {
                    r.extra.insert("foreign_cpu_ubox".into(), fu);
                    r.extra.insert("foreign_cpu_peer".into(), fp);
                }
                if let (Some(pu), Some(pp)) = (med(u, w, "preempted"), med(p, w, "preempted")) {
                    r.extra.insert("forwarder_preempted_per_s_ubox".into(), pu);
                    r.extra.insert("forwarder_preempted_per_s_peer".into(), pp);
                }
                if let (Some(ku), Some(kp)) = (med(u, w, "kernel"), med(p, w, "kernel")) {
                    r.extra.insert("kernel_threads_cpu_ubox".into(), ku);
                    r.extra.insert("kernel_threads_cpu_peer".into(), kp);
                }
                r.extra.insert("max_foreign_cpu".into(), opts.max_foreign);
                r.extra.insert("repeated_ubox".into(), f64::from(repeated.get(&u).copied().unwrap_or(0)));
                r.extra.insert("repeated_peer".into(), f64::from(repeated.get(&p).copied().unwrap_or(0)));
                r.extra.insert("fwd_cpu".into(), f64::from(opts.fwd_cpu));
                if let Ok(v) = bridge_nf.parse::<f64>() {
                    r.extra.insert("bridge_nf_call_iptables".into(), v);
                }
                if m == "p99" {
                    let pcts = |c: usize| -> Option<Vec<f64>> {
                        ["p50", "p75", "p90", "p99", "max"].iter().map(|k| med(c, w, k)).collect()
                    };
                    if let (Some(ubox_ms), Some(peer_ms)) = (pcts(u), pcts(p)) {
                        r.latency = Some(crate::result::Latency {
                            case: format!("e2e {}", w.name()),
                            ubox_label: cs[u].label.clone(),
                            percentiles: crate::result::LATENCY_PERCENTILES.to_vec(),
                            ubox_ms,
                            peer_ms,
                        });
                    }
                }
                r.write(&opts.out)?;
                results.push(r);
            }
        }
    }
    println!();
    println!("ratios (ubox / peer; `better` says which way favours ubox); kernel bridge-nf-call-iptables: {bridge_nf}");
    print!("{}", crate::result::table(&results));
    println!("results in {}/e2e-*.json", opts.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_specs_parse() {
        for p in PRESETS {
            assert_eq!(Contender::parse(p).unwrap().label, p);
        }
        let c = Contender::parse("fc=ubox;args=framecnt=4096,blocksz=8192;burst=8;runtime=rx_desc = 512").unwrap();
        assert_eq!((c.kind, c.driver, c.burst), (Kind::Ubox, Driver::AfPacket, Some(8)));
        assert_eq!(c.args.as_deref(), Some("framecnt=4096,blocksz=8192"));
        assert_eq!(c.runtime_toml, vec!["rx_desc = 512".to_string()]);
        let c = Contender::parse("e=ubox;env=RUST_LOG=debug;env=A=").unwrap();
        assert_eq!(c.env, vec![("RUST_LOG".into(), "debug".into()), ("A".into(), String::new())]);
        let c = Contender::parse("tx=testpmd;driver=af_xdp;args=busy_budget=0").unwrap();
        assert_eq!((c.kind, c.driver), (Kind::Testpmd, Driver::AfXdp));
        assert_eq!(
            c.driver.vdevs(c.args.as_deref())[1],
            "net_af_xdp1,iface=ubx-s,start_queue=0,queue_count=1,busy_budget=0"
        );
    }

    #[test]
    fn bad_specs_say_why() {
        let e = |s: &str| Contender::parse(s).unwrap_err();
        assert!(e("ubox").contains("preset"), "{}", e("ubox"));
        assert!(e("x=vpp").contains("unknown kind 'vpp'"));
        assert!(e("x=ubox;driver=tap").contains("not af_packet or af_xdp"));
        assert!(e("x=ubox;burst=0").contains("1 to 512"));
        assert!(e("x=ubox;speed=9").contains("unknown key 'speed'"));
        assert!(e("x=ubox;env=FOO").contains("NAME=VALUE"));
        assert!(e("x=testpmd;binary=/bin/true").contains("ubox contenders only"));
        assert!(e("x=kernel;burst=8").contains("no args or burst"));
        assert!(e("a b=ubox").contains("label"));
    }

    #[test]
    fn ubox_config_is_valid_wire_config() {
        let c = Contender::parse("v=ubox;driver=af_xdp;args=busy_budget=0;burst=16;runtime=rx_desc = 512").unwrap();
        let t = ubox_config(&c, "0", 1);
        let cfg = ubox_runtime::config::Config::parse(&t, "e2e").unwrap();
        let a = cfg.eal_args(2, false);
        assert!(a.contains(&"net_af_xdp0,iface=ubx-c,start_queue=0,queue_count=1,busy_budget=0".to_string()), "{a:?}");
        assert_eq!(a[1], "0@0,1@1");
        assert_eq!((cfg.runtime.burst, cfg.runtime.rx_desc), (16, 512));
        // testpmd gets exactly the vdevs ubox-runtime builds.
        for (i, v) in c.driver.vdevs(c.args.as_deref()).iter().enumerate() {
            assert!(a.contains(v), "{v} not in {a:?} (port {i})");
        }
        let afp = ubox_config(&Contender::parse("ubox-afp").unwrap(), "0", 1);
        let a = ubox_runtime::config::Config::parse(&afp, "e2e").unwrap().eal_args(2, false);
        for v in Driver::AfPacket.vdevs(None) {
            assert!(a.contains(&v), "{v} not in {a:?}");
        }
    }

    #[test]
    fn ratio_pairs() {
        let cs: Vec<Contender> = PRESETS.iter().map(|p| Contender::parse(p).unwrap()).collect();
        let names: Vec<(String, String)> =
            pairs(&cs).into_iter().map(|(u, p)| (cs[u].label.clone(), cs[p].label.clone())).collect();
        let want = [
            ("ubox-afp", "testpmd-afp"),
            ("ubox-afp", "kernel-bridge"),
            ("ubox-xdp", "kernel-bridge"),
            ("ubox-xdp", "testpmd-xdp"),
            ("ubox-xdp", "ubox-afp"),
        ];
        assert_eq!(names, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }
}
