//! The runtime's TOML configuration: parsing, defaults and validation.
//!
//! Every error is one line naming the file, the key and the fix. Nothing
//! here touches DPDK; [`Config::eal_args`] turns a validated config into the
//! EAL command line.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration error, already formatted as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub flow_table: FlowTableSection,
    #[serde(default)]
    pub monitor: MonitorSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub web: WebSection,
    /// The TCP splicer (off when absent).
    #[serde(default)]
    pub splicer: Option<SplicerSection>,
    #[serde(rename = "port", default)]
    pub ports: Vec<PortConfig>,
    #[serde(rename = "wire", default)]
    pub wires: Vec<WireConfig>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Bridge port pairs transparently (`[[wire]]`).
    Wire,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Instance name: names the control socket and DPDK's file prefix.
    pub name: String,
    pub mode: Mode,
    /// Worker lcores (each polls one RX/TX queue pair of every port).
    pub workers: u16,
    /// CPU of the main (control) lcore.
    pub main_cpu: u32,
    /// CPUs of the workers; default: the CPUs after `main_cpu`, wrapping.
    pub worker_cpus: Option<Vec<u32>>,
    /// Use hugepages (the default). `false` runs EAL with --no-huge.
    pub hugepages: bool,
    /// Memory for EAL when running without hugepages, in MiB.
    pub no_huge_memory_mb: u32,
    /// Mbufs in the packet pool; default: computed from ports, queues and
    /// descriptors.
    pub mbufs: Option<u32>,
    /// RX/TX burst size.
    pub burst: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Slots of each worker-to-worker handoff ring (software steering).
    pub handoff_ring: u32,
    /// Control socket; default /run/ubox/<name>.sock.
    pub control_socket: Option<PathBuf>,
    /// The group whose members may run NFs and read-only `uboxctl`
    /// commands: the control socket gets mode 0660 and this group (it must
    /// exist: scripts/setup.sh creates `ubox`). `""` keeps it root's only
    /// (0600). The arena file is root's either way: NFs get their part of
    /// it over the socket. `uboxctl chain apply` needs root either way.
    pub group: String,
    /// Extra EAL arguments, appended last (e.g. ["--log-level=pmd.*:debug"]).
    pub eal_args: Vec<String>,
    /// Arena file shared with NF processes; default
    /// /dev/hugepages/ubox-<name>.arena (or /dev/shm without hugepages).
    pub arena: Option<PathBuf>,
    /// Event slots in the arena.
    pub event_slots: u32,
    /// NF processes that can be registered at once.
    pub max_nfs: u32,
    /// Entries of each NF ring (a power of two).
    pub nf_ring_size: u32,
    /// An NF that holds events but answers none for this long is declared
    /// dead (its session is closed, its events reclaimed, the chain policy
    /// applies), as if it had exited.
    pub nf_timeout_ms: u64,
    /// What a full NF ring does: `false` (default) drops the event, counted
    /// as `nf_ring_full` (the chain's policy decides the packet's fate);
    /// `true` pauses RX on the worker while an NF's ring has less room than
    /// a burst, so traffic waits in the NIC queue instead.
    pub nf_backpressure: bool,
    /// CPUs NF processes are asked to run on (the SDK pins its poll thread
    /// there); default: every CPU no worker uses, or no pinning when the
    /// workers use them all. A busy-polling NF on a worker's CPU would
    /// steal the worker's time slices.
    pub nf_cpus: Option<Vec<u32>>,
    /// How idle NFs wait: `futex` (default: they sleep on a doorbell in the
    /// arena and workers wake them when they push events) or `poll` (spin,
    /// yield, then timed sleeps up to 1 ms; workers never make a system
    /// call).
    pub nf_wakeup: controller::api::NfWakeup,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            name: "ubox".into(),
            mode: Mode::Wire,
            workers: 1,
            main_cpu: 0,
            worker_cpus: None,
            hugepages: true,
            no_huge_memory_mb: 512,
            mbufs: None,
            burst: 32,
            rx_desc: 1024,
            tx_desc: 1024,
            handoff_ring: 1024,
            control_socket: None,
            group: "ubox".into(),
            eal_args: Vec::new(),
            arena: None,
            event_slots: 8192,
            max_nfs: 16,
            nf_ring_size: 1024,
            nf_timeout_ms: 2000,
            nf_backpressure: false,
            nf_cpus: None,
            nf_wakeup: controller::api::NfWakeup::Futex,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowTableSection {
    /// Flows per worker; at the bound the least recently used embryonic
    /// flow is evicted, or, if there is none, the least recently used one.
    pub capacity: usize,
    /// A flow idle this long ends (FLOW/END).
    pub idle_timeout_ms: u64,
    /// Embryonic flows per worker at most (the initiator has not spoken
    /// since the other side answered: a TCP handshake not completed, a
    /// spoofed SYN); past it the least recently used embryonic flow is
    /// evicted. Default half the capacity.
    pub embryonic_capacity: Option<usize>,
    /// An embryonic flow idle this long ends. Default 10000 (capped at
    /// `idle_timeout_ms`).
    pub embryonic_timeout_ms: u64,
}

/// The TCP monitor μStack: runs for flows whose chain has an NF subscribed
/// to `FLOW/TCP/...` or `DATA_RDY/...`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSection {
    /// TCP flows monitored at once per worker; further ones are forwarded
    /// unmonitored (counted `monitor_full`).
    pub max_flows: usize,
    /// Bytestream rings in the arena (shared by the workers); a side that
    /// finds none is not reassembled (`FLOW/TCP/REASM_STOPPED`, no buffer).
    pub stream_buffers: u32,
    /// Bytes of each ring (KiB, a power of two): how far a side's
    /// reassembly may run ahead of the slowest NF reading it.
    pub stream_buffer_kb: u32,
    /// Overlapping bytes that differ: `first-wins` (keep what came first,
    /// as most end hosts do) or `last-wins` (before delivery only).
    pub overlap: String,
    /// Out-of-order ranges held per side.
    pub max_holes: usize,
    /// How long a TCP connection closed by FIN/FIN/ACK or RST keeps its
    /// flow (late retransmissions are recognised) before `FLOW/END`.
    pub linger_ms: u64,
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            max_flows: 16384,
            stream_buffers: 256,
            stream_buffer_kb: 1024,
            overlap: "first-wins".into(),
            max_holes: 16,
            linger_ms: 2000,
        }
    }
}

/// `[splicer]`: the TCP splicer μStack (L7 redirection), off when absent.
///
/// ```toml
/// [splicer]
/// vips = ["10.10.0.100:80"]   # the box takes TCP connections to these (answers ARP for them on client_port)
/// policy = "http-lb"          # the NF asked where each connection goes (FLOW_REQ -> FLOW_DEST)
/// snat = "10.10.0.254"        # source address toward the backends (answered for on backend_port)
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplicerSection {
    /// `"a.b.c.d:port"` of each VIP.
    pub vips: Vec<String>,
    /// The policy NF's name.
    pub policy: String,
    /// Source address toward the backends (default: the backend port's
    /// first `ipv4`, else the client port's).
    #[serde(default)]
    pub snat: Option<Ipv4Addr>,
    /// Port the clients reach the VIPs on (default: the first port of the
    /// first `[[wire]]`) and port toward the backends (default: its wire peer).
    #[serde(default)]
    pub client_port: Option<String>,
    #[serde(default)]
    pub backend_port: Option<String>,
    /// Connections per worker at most.
    #[serde(default = "splice_max_flows")]
    pub max_flows: usize,
    /// How a rejected connection ends: `"503"` (an HTTP 503 and FIN) or `"rst"`.
    #[serde(default = "splice_reject")]
    pub reject: String,
    /// Time the policy has to answer, and a backend to answer the SYN.
    #[serde(default = "splice_second")]
    pub request_timeout_ms: u64,
    #[serde(default = "splice_second")]
    pub connect_timeout_ms: u64,
    /// Backends tried per connection (the first included).
    #[serde(default = "splice_attempts")]
    pub max_attempts: u8,
    /// Idle connections are reset both ways after this long.
    #[serde(default = "splice_idle")]
    pub idle_timeout_ms: u64,
    /// A closed connection's entry stays this long for late segments.
    #[serde(default = "splice_linger")]
    pub linger_ms: u64,
}

fn splice_max_flows() -> usize {
    65536
}
fn splice_reject() -> String {
    "503".into()
}
fn splice_second() -> u64 {
    1000
}
fn splice_attempts() -> u8 {
    3
}
fn splice_idle() -> u64 {
    60_000
}
fn splice_linger() -> u64 {
    2000
}

impl SplicerSection {
    /// The VIPs, parsed (validated at load).
    pub fn vip_addrs(&self) -> Vec<(Ipv4Addr, u16)> {
        self.vips.iter().filter_map(|v| v.parse::<std::net::SocketAddrV4>().ok()).map(|a| (*a.ip(), a.port())).collect()
    }
}

/// `[metrics]`: the Prometheus endpoint, off unless `listen` is given.
///
/// ```toml
/// [metrics]
/// listen = "127.0.0.1:9417"   # an IP address and port; [::1]:9417 for IPv6
/// ```
///
/// The runtime then serves the Prometheus text format (0.0.4) at
/// `http://<listen>/metrics` (404 elsewhere, unless `web.listen` is the
/// same address, which serves the web view too): every counter of `uboxctl
/// stats` and the NF round-trip histogram (see `controller::metrics`). A
/// scrape reads the same counters `uboxctl stats` does, through the main
/// loop, never the data path. No authentication: keep it on a loopback or
/// management address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address and port to serve on, e.g. "127.0.0.1:9417".
    #[serde(deserialize_with = "listen_address")]
    pub listen: Option<SocketAddr>,
}

/// `[web]`: the live web view, off unless `listen` is given.
///
/// ```toml
/// [web]
/// listen = "127.0.0.1:9418"   # an IP address and port; [::1]:9418 for IPv6
/// ```
///
/// The runtime then serves a page at `http://<listen>/` showing the
/// chains, NFs, queue depths, drops and throughput, which updates itself
/// every second from `GET /api/view` (JSON). Read-only: nothing it serves
/// changes the runtime. Its numbers are the counters `uboxctl stats`
/// reads, through the main loop; the rates are differences of successive
/// reads. The same address as `metrics.listen` serves both from one
/// socket. No authentication: keep it on a loopback or management address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSection {
    /// Address and port to serve on, e.g. "127.0.0.1:9418".
    #[serde(deserialize_with = "web_listen_address")]
    pub listen: Option<SocketAddr>,
}

/// `metrics.listen`: an IP address and a port other than 0.
fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_listen(d, 9417)
}

/// `web.listen`: the same, with the web view's port in the examples.
fn web_listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_listen(d, 9418)
}

fn parse_listen<'de, D: serde::Deserializer<'de>>(d: D, port: u16) -> Result<Option<SocketAddr>, D::Error> {
    use serde::de::Error;
    let s = String::deserialize(d)?;
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => {
            Err(D::Error::custom(format!("{s:?} has port 0: give the port to serve on, e.g. \"127.0.0.1:{port}\"")))
        }
        Ok(a) => Ok(Some(a)),
        Err(_) => Err(D::Error::custom(format!(
            "{s:?} is not an IP address and port, e.g. \"127.0.0.1:{port}\" or \"[::1]:{port}\" (no host names)"
        ))),
    }
}

impl Default for FlowTableSection {
    fn default() -> Self {
        FlowTableSection {
            capacity: 65536,
            idle_timeout_ms: 60_000,
            embryonic_capacity: None,
            embryonic_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    AfPacket,
    /// `net_af_xdp`: an AF_XDP socket on each of the interface's queues
    /// `0..workers` (XDP native mode where the driver has it, as veth does;
    /// generic otherwise). Its packets live in a separate pool outside the
    /// arena (the PMD's UMEM), so flows through it cannot visit NFs.
    AfXdp,
    Tap,
    Pcap,
    Null,
    Ring,
    Memif,
}

impl Driver {
    fn vdev_prefix(self) -> &'static str {
        match self {
            Driver::AfPacket => "net_af_packet",
            Driver::AfXdp => "net_af_xdp",
            Driver::Tap => "net_tap",
            Driver::Pcap => "net_pcap",
            Driver::Null => "net_null",
            Driver::Ring => "net_ring",
            Driver::Memif => "net_memif",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name used in `[[wire]]`, stats and errors.
    pub name: String,
    /// A virtual device driver; exclusive with `pci`.
    pub driver: Option<Driver>,
    /// Linux interface for `af_packet`, `af_xdp` and `tap`.
    pub iface: Option<String>,
    /// Extra device arguments, e.g. "rx_pcap=x.pcap,infinite_rx=1".
    pub args: Option<String>,
    /// PCI address of a DPDK-bound NIC, e.g. "0000:01:00.0".
    pub pci: Option<String>,
    /// The box's own IPv4 addresses on this port (answers ARP and ping).
    #[serde(default)]
    pub ipv4: Vec<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    /// Two port names bridged both ways.
    pub ports: [String; 2],
}

/// `key=value` pairs of a device argument string.
fn device_args(args: &str) -> impl Iterator<Item = (&str, &str)> {
    args.split(',').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}

/// The `start_queue` an af_xdp port's `args` give (0 by default).
pub fn xdp_start_queue(args: Option<&str>) -> usize {
    args.into_iter()
        .flat_map(device_args)
        .filter(|(k, _)| *k == "start_queue")
        .filter_map(|(_, v)| v.parse().ok())
        .last()
        .unwrap_or(0)
}

/// The device arguments of the drivers whose PMDs only say "failed to
/// initialize" on a bad one: af_packet (`blocksz`, `framesz`, `framecnt`,
/// `qdisc_bypass`) and af_xdp (`start_queue`, `busy_budget`, `force_copy`,
/// `shared_umem`, `xdp_prog`). The queue counts are the runtime's (one per
/// worker).
fn check_device_args(port: &str, driver: Driver, args: &str) -> Result<(), String> {
    let number = |k: &str, v: &str| {
        v.parse::<u32>().map_err(|_| format!("port '{port}': device argument `{k}={v}` must be a number"))
    };
    match driver {
        Driver::AfPacket => {
            // The PMD's defaults: a page per block, 2048-byte frames, 512 of them.
            let (mut blocksz, mut framesz, mut framecnt) = (4096, 2048, 512);
            for (k, v) in device_args(args) {
                match k {
                    "blocksz" => blocksz = number(k, v)?,
                    "framesz" => framesz = number(k, v)?,
                    "framecnt" => framecnt = number(k, v)?,
                    "qdisc_bypass" if v == "0" || v == "1" => {}
                    "qdisc_bypass" => return Err(format!("port '{port}': `qdisc_bypass={v}` must be 0 or 1")),
                    "qpairs" | "iface" => {
                        return Err(format!(
                            "port '{port}': `{k}` is set by the runtime (`iface`, and one queue pair per worker); remove it from `args`"
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "port '{port}': unknown af_packet device argument `{k}` (blocksz, framesz, framecnt, qdisc_bypass)"
                        ))
                    }
                }
            }
            if framesz < 2048 || !framesz.is_power_of_two() {
                return Err(format!(
                    "port '{port}': af_packet `framesz={framesz}` must be a power of two of at least 2048 (a frame holds a full 1518-byte frame and its header)"
                ));
            }
            if blocksz < framesz || blocksz % 4096 != 0 || !blocksz.is_power_of_two() {
                return Err(format!(
                    "port '{port}': af_packet `blocksz={blocksz}` must be a power-of-two multiple of the page size (4096) and at least framesz ({framesz})"
                ));
            }
            if framecnt == 0 || framecnt % (blocksz / framesz) != 0 {
                return Err(format!(
                    "port '{port}': af_packet `framecnt={framecnt}` must be a positive multiple of the frames per block ({})",
                    blocksz / framesz
                ));
            }
        }
        Driver::AfXdp => {
            for (k, v) in device_args(args) {
                match k {
                    "start_queue" | "busy_budget" => {
                        number(k, v)?;
                    }
                    "force_copy" | "shared_umem" if v == "0" || v == "1" => {}
                    "force_copy" | "shared_umem" => {
                        return Err(format!("port '{port}': `{k}={v}` must be 0 or 1"));
                    }
                    "xdp_prog" => {}
                    "queue_count" | "iface" => {
                        return Err(format!(
                            "port '{port}': `{k}` is set by the runtime (`iface`, and one queue per worker); remove it from `args`"
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "port '{port}': unknown af_xdp device argument `{k}` (start_queue, busy_budget, force_copy, shared_umem, xdp_prog)"
                        ))
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

impl Config {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            let msg = inner.message().trim().replace('\n', " ");
            if key == "." || key.is_empty() {
                ConfigError(format!("bad config {origin}: {msg}{at}"))
            } else {
                ConfigError(format!("bad config {origin}: key `{key}`: {msg}{at}"))
            }
        })?;
        cfg.validate().map_err(|m| ConfigError(format!("bad config {origin}: {m}")))?;
        Ok(cfg)
    }

    /// Validate again after command-line overrides.
    pub fn revalidate(&self, origin: &str) -> Result<(), ConfigError> {
        self.validate().map_err(|m| ConfigError(format!("bad config {origin}: {m}")))
    }

    fn validate(&self) -> Result<(), String> {
        let r = &self.runtime;
        if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("key `runtime.name`: {:?} must be non-empty letters, digits, '-' or '_'", r.name));
        }
        let group_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if r.group.len() > 32 || r.group.starts_with('-') || !r.group.chars().all(group_char) {
            return Err(format!(
                "key `runtime.group`: {:?} is not a group name (up to 32 letters, digits, '_', '-', '.'; \"\" for root only)",
                r.group
            ));
        }
        if r.workers == 0 || r.workers > 64 {
            return Err(format!("key `runtime.workers`: {} is out of range (1 to 64)", r.workers));
        }
        if let Some(cpus) = &r.worker_cpus {
            if cpus.len() != r.workers as usize {
                return Err(format!(
                    "key `runtime.worker_cpus`: lists {} CPUs for {} workers; give one per worker",
                    cpus.len(),
                    r.workers
                ));
            }
        }
        if r.burst == 0 || r.burst > 512 {
            return Err(format!("key `runtime.burst`: {} is out of range (1 to 512)", r.burst));
        }
        if !r.handoff_ring.is_power_of_two() || r.handoff_ring < 64 {
            return Err(format!("key `runtime.handoff_ring`: {} must be a power of two >= 64", r.handoff_ring));
        }
        if !r.nf_ring_size.is_power_of_two() || r.nf_ring_size < 64 {
            return Err(format!("key `runtime.nf_ring_size`: {} must be a power of two >= 64", r.nf_ring_size));
        }
        if r.nf_timeout_ms < 10 {
            return Err(format!("key `runtime.nf_timeout_ms`: {} is too short (at least 10)", r.nf_timeout_ms));
        }
        if r.max_nfs == 0 || r.max_nfs > 256 {
            return Err(format!("key `runtime.max_nfs`: {} is out of range (1 to 256)", r.max_nfs));
        }
        if r.event_slots < 64 || r.event_slots > (1 << 24) {
            return Err(format!("key `runtime.event_slots`: {} is out of range (64 to 16777216)", r.event_slots));
        }
        let m = &self.monitor;
        if m.max_flows == 0 || m.max_flows > (1 << 22) {
            return Err(format!("key `monitor.max_flows`: {} is out of range (1 to 4194304)", m.max_flows));
        }
        if !m.stream_buffer_kb.is_power_of_two() || !(4..=16384).contains(&m.stream_buffer_kb) {
            return Err(format!(
                "key `monitor.stream_buffer_kb`: {} must be a power of two from 4 to 16384",
                m.stream_buffer_kb
            ));
        }
        if m.stream_buffers > 65536 {
            return Err(format!("key `monitor.stream_buffers`: {} is out of range (0 to 65536)", m.stream_buffers));
        }
        if m.overlap != "first-wins" && m.overlap != "last-wins" {
            return Err(format!("key `monitor.overlap`: '{}' is not `first-wins` or `last-wins`", m.overlap));
        }
        if m.max_holes > ustack::tcp::MAX_OOO_RANGES {
            return Err(format!(
                "key `monitor.max_holes`: {} is out of range (0 to {})",
                m.max_holes,
                ustack::tcp::MAX_OOO_RANGES
            ));
        }
        if self.flow_table.capacity == 0 || self.flow_table.capacity > (1 << 24) {
            return Err(format!(
                "key `flow_table.capacity`: {} is out of range (1 to 16777216)",
                self.flow_table.capacity
            ));
        }
        if self.flow_table.idle_timeout_ms == 0 {
            return Err("key `flow_table.idle_timeout_ms`: must be > 0".into());
        }
        if let Some(n) = self.flow_table.embryonic_capacity {
            if n == 0 || n > self.flow_table.capacity {
                return Err(format!(
                    "key `flow_table.embryonic_capacity`: {n} is out of range (1 to flow_table.capacity = {})",
                    self.flow_table.capacity
                ));
            }
        }
        if self.flow_table.embryonic_timeout_ms == 0 {
            return Err("key `flow_table.embryonic_timeout_ms`: must be > 0".into());
        }
        if m.linger_ms > 3_600_000 {
            return Err(format!("key `monitor.linger_ms`: {} is out of range (0 to 3600000)", m.linger_ms));
        }
        if self.ports.is_empty() {
            return Err("no [[port]] given; add at least one (see examples/wire.toml)".into());
        }
        if self.ports.len() > 32 {
            return Err(format!("{} ports given; at most 32 are supported", self.ports.len()));
        }
        let mut names = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = format!("port[{i}]");
            if p.name.is_empty() {
                return Err(format!("key `{key}.name`: must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("key `{key}.name`: port name '{}' is used twice", p.name));
            }
            match (p.driver, &p.pci) {
                (Some(_), Some(_)) => {
                    return Err(format!("port '{}': give either `driver` or `pci`, not both", p.name));
                }
                (None, None) => {
                    return Err(format!(
                        "port '{}': give `driver` (af_packet, af_xdp, tap, pcap, null, ring, memif) or `pci`",
                        p.name
                    ));
                }
                (Some(Driver::AfPacket), _) if p.iface.is_none() => {
                    return Err(format!("port '{}': driver af_packet needs `iface` (a Linux interface)", p.name));
                }
                (Some(Driver::AfXdp), _) if p.iface.is_none() => {
                    return Err(format!("port '{}': driver af_xdp needs `iface` (a Linux interface)", p.name));
                }
                _ => {}
            }
            for s in [&p.iface, &p.args, &p.pci].into_iter().flatten() {
                if s.contains(' ') || s.contains('\0') {
                    return Err(format!("port '{}': {s:?} must not contain spaces", p.name));
                }
            }
            if let (Some(d), Some(args)) = (p.driver, &p.args) {
                check_device_args(&p.name, d, args)?;
            }
        }
        if self.runtime.mode == Mode::Wire && self.wires.is_empty() {
            return Err("mode \"wire\" needs at least one [[wire]] ports = [\"a\", \"b\"]".into());
        }
        let mut used = HashSet::new();
        for (i, w) in self.wires.iter().enumerate() {
            if w.ports[0] == w.ports[1] {
                return Err(format!("key `wire[{i}].ports`: a wire needs two different ports"));
            }
            for n in &w.ports {
                if !names.contains(n.as_str()) {
                    return Err(format!("key `wire[{i}].ports`: unknown port '{n}' (ports: {})", self.port_names()));
                }
                if !used.insert(n.as_str()) {
                    return Err(format!("key `wire[{i}].ports`: port '{n}' is in more than one wire"));
                }
            }
        }
        if let Some(sp) = &self.splicer {
            self.validate_splicer(sp)?;
        }
        if let (Some(w), Some(m)) = (self.web.listen, self.metrics.listen) {
            // The same address is one socket serving both; a wildcard and
            // a specific address on one port could not both be bound.
            if w != m && w.port() == m.port() && (w.ip().is_unspecified() || m.ip().is_unspecified()) {
                return Err(format!(
                    "key `web.listen`: \"{w}\" and metrics.listen \"{m}\" overlap on port {}: give both the same \
                     address (one socket serves the page and /metrics) or different ports",
                    w.port()
                ));
            }
        }
        Ok(())
    }

    /// The splicer's client and backend port indices (after validation).
    pub fn splicer_ports(&self) -> Option<(usize, usize)> {
        let sp = self.splicer.as_ref()?;
        let by_name = |n: &str| self.ports.iter().position(|p| p.name == n);
        let client = match &sp.client_port {
            Some(n) => by_name(n)?,
            None => by_name(&self.wires.first()?.ports[0])?,
        };
        let peer = |i: usize| {
            let name = &self.ports[i].name;
            self.wires.iter().find_map(|w| {
                if &w.ports[0] == name {
                    by_name(&w.ports[1])
                } else if &w.ports[1] == name {
                    by_name(&w.ports[0])
                } else {
                    None
                }
            })
        };
        let backend = match &sp.backend_port {
            Some(n) => by_name(n)?,
            None => peer(client)?,
        };
        Some((client, backend))
    }

    /// The splicer's SNAT address (after validation).
    pub fn splicer_snat(&self) -> Option<Ipv4Addr> {
        let sp = self.splicer.as_ref()?;
        let (c, b) = self.splicer_ports()?;
        sp.snat.or_else(|| self.ports[b].ipv4.first().copied()).or_else(|| self.ports[c].ipv4.first().copied())
    }

    fn validate_splicer(&self, sp: &SplicerSection) -> Result<(), String> {
        if sp.vips.is_empty() {
            return Err("key `splicer.vips`: give at least one \"address:port\", e.g. [\"10.10.0.100:80\"]".into());
        }
        for v in &sp.vips {
            match v.parse::<std::net::SocketAddrV4>() {
                Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => {}
                _ => {
                    return Err(format!(
                        "key `splicer.vips`: {v:?} is not an IPv4 address and port, e.g. \"10.10.0.100:80\" (the splicer is IPv4 only)"
                    ))
                }
            }
        }
        if sp.policy.is_empty() {
            return Err("key `splicer.policy`: name the NF that answers FLOW_REQ, e.g. \"http-lb\"".into());
        }
        for (k, n) in [("client_port", &sp.client_port), ("backend_port", &sp.backend_port)] {
            if let Some(n) = n {
                if !self.ports.iter().any(|p| &p.name == n) {
                    return Err(format!("key `splicer.{k}`: unknown port '{n}' (ports: {})", self.port_names()));
                }
            }
        }
        let Some((c, b)) = self.splicer_ports() else {
            return Err("[splicer]: cannot tell the client and backend ports: set `splicer.client_port` and `splicer.backend_port`, or put the client port in a [[wire]]".into());
        };
        if c == b {
            return Err("[splicer]: client_port and backend_port must differ".into());
        }
        if self.splicer_snat().is_none() {
            return Err("key `splicer.snat`: give the source address toward the backends, or an `ipv4` on the backend or client port".into());
        }
        if self.ports.iter().any(|p| p.driver == Some(Driver::AfXdp)) {
            return Err("[splicer]: af_xdp ports receive outside the arena, so the policy NF could not read requests; use af_packet".into());
        }
        if sp.max_flows == 0 || sp.max_flows > (1 << 22) {
            return Err(format!("key `splicer.max_flows`: {} is out of range (1 to 4194304)", sp.max_flows));
        }
        if sp.reject != "503" && sp.reject != "rst" {
            return Err(format!("key `splicer.reject`: {:?} is not \"503\" or \"rst\"", sp.reject));
        }
        for (k, v, lo) in [
            ("request_timeout_ms", sp.request_timeout_ms, 10),
            ("connect_timeout_ms", sp.connect_timeout_ms, 10),
            ("idle_timeout_ms", sp.idle_timeout_ms, 100),
            ("linger_ms", sp.linger_ms, 0),
        ] {
            if v < lo || v > 3_600_000 {
                return Err(format!("key `splicer.{k}`: {v} is out of range ({lo} to 3600000)"));
            }
        }
        if sp.max_attempts == 0 || sp.max_attempts > 16 {
            return Err(format!("key `splicer.max_attempts`: {} is out of range (1 to 16)", sp.max_attempts));
        }
        Ok(())
    }

    fn port_names(&self) -> String {
        self.ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// EAL's device name for port `i` (what `rte_eth_dev_get_port_by_name`
    /// takes).
    pub fn device_name(&self, i: usize) -> String {
        let p = &self.ports[i];
        match (&p.pci, p.driver) {
            (Some(pci), _) => pci.clone(),
            (None, Some(d)) => format!("{}{i}", d.vdev_prefix()),
            (None, None) => unreachable!("validated"),
        }
    }

    /// The CPU each worker runs on.
    pub fn worker_cpus(&self, ncpus: u32) -> Vec<u32> {
        match &self.runtime.worker_cpus {
            Some(c) => c.clone(),
            None => (0..self.runtime.workers as u32).map(|w| (self.runtime.main_cpu + 1 + w) % ncpus.max(1)).collect(),
        }
    }

    /// The EAL command line (without the program name).
    /// CPUs offered to NF processes (see `runtime.nf_cpus`).
    pub fn nf_cpus(&self, ncpus: u32) -> Vec<u32> {
        if let Some(c) = &self.runtime.nf_cpus {
            return c.clone();
        }
        let workers = self.worker_cpus(ncpus);
        (0..ncpus).filter(|c| !workers.contains(c)).collect()
    }

    pub fn eal_args(&self, ncpus: u32, no_huge: bool) -> Vec<String> {
        let r = &self.runtime;
        let mut lcores = vec![format!("0@{}", r.main_cpu)];
        for (w, cpu) in self.worker_cpus(ncpus).iter().enumerate() {
            lcores.push(format!("{}@{cpu}", w + 1));
        }
        let mut a = vec!["--lcores".to_string(), lcores.join(",")];
        a.push(format!("--file-prefix=ubox-{}", r.name));
        if no_huge || !r.hugepages {
            // --in-memory implies unlinking hugepage files, which EAL refuses
            // with --no-huge; --no-shconf keeps instances apart all the same.
            a.push("--no-shconf".into());
            a.push("--no-huge".into());
            a.push("-m".into());
            a.push(r.no_huge_memory_mb.to_string());
        } else {
            // No shared runtime files: several instances (and testpmd) can
            // run side by side.
            a.push("--in-memory".into());
        }
        let mut any_pci = false;
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(pci) = &p.pci {
                any_pci = true;
                a.push("-a".into());
                a.push(pci.clone());
                continue;
            }
            let mut dev = self.device_name(i);
            if let Some(iface) = &p.iface {
                dev.push_str(&format!(",iface={iface}"));
            }
            match p.driver {
                Some(Driver::AfPacket) => dev.push_str(&format!(",qpairs={}", r.workers)),
                // One AF_XDP socket per worker, on the interface's queues
                // 0..workers (preflight checks it has that many).
                Some(Driver::AfXdp) => dev.push_str(&format!(",start_queue=0,queue_count={}", r.workers)),
                _ => {}
            }
            if let Some(args) = &p.args {
                if !args.is_empty() {
                    dev.push(',');
                    dev.push_str(args);
                }
            }
            a.push("--vdev".into());
            a.push(dev);
        }
        if !any_pci {
            // Never probe the machine's own NICs unless the config names one.
            a.push("--no-pci".into());
        }
        a.extend(r.eal_args.iter().cloned());
        a
    }

    /// True when some port uses the af_xdp driver (its packets are not in
    /// the arena).
    pub fn has_af_xdp(&self) -> bool {
        self.ports.iter().any(|p| p.driver == Some(Driver::AfXdp))
    }

    /// Where the control socket lives.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime.control_socket.clone().unwrap_or_else(|| controller::api::default_socket(&self.runtime.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[runtime]
name = "t1"
workers = 2

[[port]]
name = "client"
driver = "af_packet"
iface = "ubx-c"
ipv4 = ["10.10.0.254"]

[[port]]
name = "server"
driver = "af_packet"
iface = "ubx-s"

[[wire]]
ports = ["client", "server"]
"#;

    #[test]
    fn good_config_builds_eal_args_without_pci() {
        let c = Config::parse(GOOD, "t").unwrap();
        let a = c.eal_args(2, false);
        assert!(a.contains(&"--no-pci".to_string()), "{a:?}");
        assert!(a.contains(&"net_af_packet0,iface=ubx-c,qpairs=2".to_string()), "{a:?}");
        assert!(a.contains(&"net_af_packet1,iface=ubx-s,qpairs=2".to_string()), "{a:?}");
        assert_eq!(a[1], "0@0,1@1,2@0");
        assert!(!a.contains(&"--no-huge".to_string()));
        assert!(a.contains(&"--in-memory".to_string()));
        assert_eq!(c.ports[0].ipv4, vec![Ipv4Addr::new(10, 10, 0, 254)]);
    }

    #[test]
    fn af_xdp_ports_get_one_queue_per_worker() {
        let t = GOOD.replace("af_packet", "af_xdp");
        let c = Config::parse(&t, "t").unwrap();
        assert!(c.has_af_xdp());
        let a = c.eal_args(2, false);
        assert!(a.contains(&"net_af_xdp0,iface=ubx-c,start_queue=0,queue_count=2".to_string()), "{a:?}");
        assert!(a.contains(&"net_af_xdp1,iface=ubx-s,start_queue=0,queue_count=2".to_string()), "{a:?}");
        assert_eq!(c.device_name(1), "net_af_xdp1");
        // Extra device arguments come last, so they win (e.g. busy polling off).
        let t = t.replace("iface = \"ubx-s\"", "iface = \"ubx-s\"\nargs = \"busy_budget=0\"");
        let a = Config::parse(&t, "t").unwrap().eal_args(2, false);
        assert!(a.contains(&"net_af_xdp1,iface=ubx-s,start_queue=0,queue_count=2,busy_budget=0".to_string()), "{a:?}");
        assert!(!Config::parse(GOOD, "t").unwrap().has_af_xdp());
    }

    #[test]
    fn af_packet_and_af_xdp_device_args_are_checked() {
        let with = |driver: &str, args: &str| {
            format!("[[port]]\nname = \"a\"\ndriver = \"{driver}\"\niface = \"x\"\nargs = \"{args}\"\n[[port]]\nname = \"b\"\ndriver = \"null\"\n[[wire]]\nports = [\"a\", \"b\"]\n")
        };
        for good in
            ["framecnt=2048", "blocksz=8192,framesz=2048,framecnt=1024", "qdisc_bypass=0", "framesz=4096,blocksz=4096"]
        {
            let c = Config::parse(&with("af_packet", good), "t").unwrap_or_else(|e| panic!("{good}: {e}"));
            assert!(c.eal_args(1, false).iter().any(|a| a.ends_with(good)), "{good}");
        }
        let e = err(&with("af_packet", "framecount=4096"));
        assert!(e.contains("port 'a': unknown af_packet device argument `framecount`"), "{e}");
        assert!(err(&with("af_packet", "qpairs=2")).contains("set by the runtime"));
        assert!(err(&with("af_packet", "qdisc_bypass=2")).contains("0 or 1"));
        assert!(err(&with("af_packet", "framesz=1024")).contains("at least 2048"));
        assert!(err(&with("af_packet", "framesz=8192")).contains("blocksz=4096"));
        assert!(err(&with("af_packet", "blocksz=8192,framecnt=3")).contains("multiple of the frames per block (4)"));
        assert!(err(&with("af_packet", "framecnt=lots")).contains("must be a number"));
        for good in ["busy_budget=0", "start_queue=2,force_copy=1", "xdp_prog=/x.o"] {
            Config::parse(&with("af_xdp", good), "t").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(err(&with("af_xdp", "queue_count=4")).contains("set by the runtime"));
        assert!(err(&with("af_xdp", "zero_copy=1")).contains("unknown af_xdp device argument `zero_copy`"));
        assert!(err(&with("af_xdp", "force_copy=yes")).contains("0 or 1"));
        assert_eq!(xdp_start_queue(Some("busy_budget=0,start_queue=3")), 3);
        assert_eq!(xdp_start_queue(None), 0);
    }

    #[test]
    fn pci_port_turns_pci_scan_on_for_that_device_only() {
        let t = r#"
[[port]]
name = "a"
pci = "0000:01:00.0"
[[port]]
name = "b"
driver = "null"
[[wire]]
ports = ["a", "b"]
"#;
        let a = Config::parse(t, "t").unwrap().eal_args(4, true);
        assert!(!a.contains(&"--no-pci".to_string()));
        assert!(a.windows(2).any(|w| w[0] == "-a" && w[1] == "0000:01:00.0"));
        assert!(a.contains(&"--no-huge".to_string()));
        assert!(!a.contains(&"--in-memory".to_string()), "EAL refuses --in-memory with --no-huge");
    }

    fn err(t: &str) -> String {
        let e = Config::parse(t, "x.toml").unwrap_err().to_string();
        assert!(!e.contains('\n'), "error must be one line: {e}");
        e
    }

    #[test]
    fn the_nf_group_defaults_to_ubox_and_may_be_empty() {
        let c = Config::parse(GOOD, "t").unwrap();
        assert_eq!(c.runtime.group, "ubox");
        let t = GOOD.replace("workers = 2", "workers = 2\ngroup = \"\"");
        assert_eq!(Config::parse(&t, "t").unwrap().runtime.group, "");
        let t = GOOD.replace("workers = 2", "workers = 2\ngroup = \"nf-users\"");
        assert_eq!(Config::parse(&t, "t").unwrap().runtime.group, "nf-users");
        for bad in ["a b", "-x", "x:y", "0123456789012345678901234567890123"] {
            let e = err(&GOOD.replace("workers = 2", &format!("workers = 2\ngroup = {bad:?}")));
            assert!(e.contains("runtime.group") && e.contains("not a group name"), "{bad}: {e}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_listen_is_an_address() {
        assert_eq!(Config::parse(GOOD, "t").unwrap().metrics.listen, None);
        let with = |listen: &str| format!("{GOOD}\n[metrics]\nlisten = {listen:?}\n");
        let c = Config::parse(&with("127.0.0.1:9417"), "t").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9417".parse().unwrap()));
        let c = Config::parse(&with("[::1]:9417"), "t").unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:9417".parse().unwrap()));
        let line = GOOD.lines().count() + 3;
        for bad in ["localhost:9417", "127.0.0.1", "127.0.0.1:99999", "9417", ""] {
            let e = err(&with(bad));
            assert!(e.contains("key `metrics.listen`") && e.contains("is not an IP address and port"), "{bad}: {e}");
            assert!(e.contains(&format!("(line {line})")), "{bad}: {e}");
        }
        assert!(err(&with("127.0.0.1:0")).contains("port 0"));
        let e = err(&format!("{GOOD}\n[metrics]\nport = 9417\n"));
        assert!(e.contains("metrics") && e.contains("port"), "{e}");
        let e = err(&format!("{GOOD}\n[metrics]\nlisten = 9417\n"));
        assert!(e.contains("key `metrics.listen`"), "{e}");
        // The example documents it, commented out: uncommented, it is on.
        let example = include_str!("../../examples/wire.toml");
        assert_eq!(Config::parse(example, "wire.toml").unwrap().metrics.listen, None);
        let on = example.replace("# listen = \"127.0.0.1:9417\"", "listen = \"127.0.0.1:9417\"");
        assert_eq!(Config::parse(&on, "wire.toml").unwrap().metrics.listen, Some("127.0.0.1:9417".parse().unwrap()));
    }

    #[test]
    fn the_web_view_is_off_by_default_and_listen_is_an_address() {
        assert_eq!(Config::parse(GOOD, "t").unwrap().web.listen, None);
        let with = |listen: &str| format!("{GOOD}\n[web]\nlisten = {listen:?}\n");
        let c = Config::parse(&with("127.0.0.1:9418"), "t").unwrap();
        assert_eq!(c.web.listen, Some("127.0.0.1:9418".parse().unwrap()));
        assert_eq!(c.metrics.listen, None);
        let line = GOOD.lines().count() + 3;
        for bad in ["localhost:9418", "127.0.0.1", "http://127.0.0.1:9418/", ""] {
            let e = err(&with(bad));
            assert!(e.contains("key `web.listen`") && e.contains("is not an IP address and port"), "{bad}: {e}");
            assert!(e.contains("e.g. \"127.0.0.1:9418\"") && e.contains(&format!("(line {line})")), "{bad}: {e}");
        }
        assert!(err(&with("[::1]:0")).contains("port 0"));
        let e = err(&format!("{GOOD}\n[web]\nlisten = \"127.0.0.1:9418\"\nrefresh = 1\n"));
        assert!(e.contains("web") && e.contains("refresh"), "{e}");
        // With the metrics: the same address (one socket), or apart.
        let both = |w: &str, m: &str| format!("{GOOD}\n[web]\nlisten = {w:?}\n[metrics]\nlisten = {m:?}\n");
        assert!(Config::parse(&both("127.0.0.1:9417", "127.0.0.1:9417"), "t").is_ok());
        assert!(Config::parse(&both("127.0.0.1:9418", "127.0.0.1:9417"), "t").is_ok());
        assert!(Config::parse(&both("127.0.0.1:9417", "127.0.0.2:9417"), "t").is_ok());
        let e = err(&both("0.0.0.0:9417", "127.0.0.1:9417"));
        assert!(e.contains("key `web.listen`") && e.contains("overlap on port 9417"), "{e}");
        // The example documents it, commented out: uncommented, it is on.
        let example = include_str!("../../examples/wire.toml");
        assert_eq!(Config::parse(example, "wire.toml").unwrap().web.listen, None);
        let on = example.replace("# listen = \"127.0.0.1:9418\"", "listen = \"127.0.0.1:9418\"");
        assert_eq!(Config::parse(&on, "wire.toml").unwrap().web.listen, Some("127.0.0.1:9418".parse().unwrap()));
    }

    #[test]
    fn splicer_section_is_checked_and_finds_its_ports() {
        let example = include_str!("../../examples/splicer.toml");
        let c = Config::parse(example, "splicer.toml").unwrap();
        assert_eq!(c.splicer_ports(), Some((0, 1)));
        assert_eq!(c.splicer_snat(), Some(Ipv4Addr::new(10, 10, 0, 254)));
        assert_eq!(c.splicer.as_ref().unwrap().vip_addrs(), vec![(Ipv4Addr::new(10, 10, 0, 100), 80)]);
        let bad = |from: &str, to: &str| Config::parse(&example.replace(from, to), "s.toml").unwrap_err().0;
        assert!(bad("10.10.0.100:80", "10.10.0.100").contains("key `splicer.vips`"));
        assert!(bad("policy = \"http-lb\"", "policy = \"\"").contains("key `splicer.policy`"));
        assert!(bad("reject = \"503\"", "reject = \"404\"").contains("key `splicer.reject`"));
        let e = bad("reject = \"503\"", "reject = \"503\"\nbackend_port = \"nope\"");
        assert!(e.contains("unknown port 'nope'"), "{e}");
        let e = bad("reject = \"503\"", "reject = \"503\"\nbackend_port = \"client\"");
        assert!(e.contains("must differ"), "{e}");
    }

    #[test]
    fn bad_toml_names_the_key() {
        let e = err("[runtime]\nworkers = \"two\"\n");
        assert!(e.contains("runtime.workers") && e.contains("line 2"), "{e}");
        let e = err("[runtime]\nwrokers = 2\n");
        assert!(e.contains("wrokers"), "{e}");
        let e = err("[[port]]\nname = \"a\"\ndriver = \"e1000\"\n");
        assert!(e.contains("port[0].driver") || e.contains("port.driver"), "{e}");
        let e = err("[runtime\n");
        assert!(e.starts_with("bad config x.toml:"), "{e}");
    }

    #[test]
    fn semantic_errors_are_caught() {
        assert!(err("").contains("no [[port]]"));
        let base = "[[port]]\nname = \"a\"\ndriver = \"null\"\n[[port]]\nname = \"b\"\ndriver = \"null\"\n";
        assert!(err(base).contains("[[wire]]"));
        assert!(err(&format!("{base}[[wire]]\nports = [\"a\", \"c\"]\n")).contains("unknown port 'c'"));
        assert!(err(&format!("{base}[[wire]]\nports = [\"a\", \"a\"]\n")).contains("two different"));
        assert!(err(&format!("{base}[runtime]\nworkers = 0\n")).contains("runtime.workers"));
        assert!(err("[[port]]\nname = \"a\"\ndriver = \"af_packet\"\n").contains("needs `iface`"));
        let e = err("[[port]]\nname = \"a\"\ndriver = \"af_xdp\"\n");
        assert!(e.contains("port 'a': driver af_xdp needs `iface`"), "{e}");
        assert!(err("[[port]]\nname = \"a\"\n").contains("af_xdp"));
        assert!(err("[[port]]\nname = \"a\"\n").contains("give `driver`"));
        let dup = "[[port]]\nname = \"a\"\ndriver = \"null\"\n[[port]]\nname = \"a\"\ndriver = \"null\"\n";
        assert!(err(dup).contains("used twice"));
        assert!(
            err(&format!("{base}[[wire]]\nports = [\"a\", \"b\"]\n[flow_table]\ncapacity = 0\n")).contains("capacity")
        );
    }
}
