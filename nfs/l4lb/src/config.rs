//! The configuration file: the load balancer's settings and its VIPs with
//! their backends, read from TOML and checked with line numbers.
//!
//! This module owns the file format and its validation only; it keeps no
//! run-time state (see [`crate::lb`]). Checking does not stop at the first
//! problem: [`Config::parse`] reports every bad entry it finds, one
//! [`Diag`] each, with its line (from the TOML spans). A file that is not
//! TOML, has a key this format does not know or a value of the wrong type
//! gets the TOML parser's one error instead. `examples/l4lb.toml` is a
//! commented example.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::maglev::Variant;

/// Most VIPs (Katran's `MAX_VIPS`).
pub const MAX_VIPS: usize = 512;
/// Most distinct backends over all VIPs (Katran's default `maxReals`).
pub const MAX_BACKENDS: usize = 4096;
/// Largest weight.
pub const MAX_WEIGHT: u32 = 65536;
/// Largest server id (Katran keeps them as positive `int`s).
pub const MAX_SERVER_ID: u32 = i32::MAX as u32;
/// Most entries per worker's connection table.
pub const MAX_TABLE_CAPACITY: usize = 1 << 24;
/// `table_capacity` when the file does not say.
pub const DEFAULT_TABLE_CAPACITY: usize = 65536;
/// `udp_timeout_ms` when the file does not say (Katran's `LRU_UDP_TIMEOUT`).
pub const DEFAULT_UDP_TIMEOUT_MS: u64 = 30_000;
/// `max_packet_size` when the file does not say (Katran's `MAX_PCKT_SIZE`).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1514;

/// How a packet reaches its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// L2 direct server return: the destination MAC becomes the backend's;
    /// the backend holds the VIP (on `lo`) and answers the client itself.
    #[default]
    Dsr,
    /// IP-in-IP (or IPv4/IPv6-in-IPv6) to the backend's address, as
    /// Katran encapsulates.
    Ipip,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Dsr => "dsr",
            Mode::Ipip => "ipip",
        }
    }
}

/// A VIP's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `[[vip.backend]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConf {
    pub address: IpAddr,
    /// 0 (drained: off the ring, still reached by its server id and by the
    /// connections the table holds) to [`MAX_WEIGHT`].
    pub weight: u32,
    /// Where DSR sends its packets.
    pub mac: Option<[u8; 6]>,
    /// Server ids that name it (in TCP options and QUIC connection ids).
    pub server_ids: Vec<u32>,
    pub line: usize,
}

/// One `[[vip]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipConf {
    pub address: IpAddr,
    /// 0: every port (the destination port is then not hashed, as in Katran).
    pub port: u16,
    pub proto: Proto,
    /// Route by the server id in QUIC connection ids (UDP only).
    pub quic: bool,
    pub hash: Variant,
    pub backends: Vec<BackendConf>,
    pub line: usize,
}

impl VipConf {
    /// `10.10.0.100:80/tcp`, `[fc00::1]:443/udp`.
    pub fn label(&self) -> String {
        match self.address {
            IpAddr::V4(a) => format!("{a}:{}/{}", self.port, self.proto.name()),
            IpAddr::V6(a) => format!("[{a}]:{}/{}", self.port, self.proto.name()),
        }
    }
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// The ring's variant for VIPs that do not name one.
    pub hash: Variant,
    /// Connection-table entries per worker.
    pub table_capacity: usize,
    /// A UDP flow's entry is used only this long after it was last seen.
    pub udp_timeout_ms: u64,
    /// IPIP: the next hop's MAC, destination of every encapsulated packet.
    pub gateway_mac: Option<[u8; 6]>,
    /// IPIP: frames longer than this are dropped (they would not fit once encapsulated).
    pub max_packet_size: usize,
    pub vips: Vec<VipConf>,
}

/// One problem, on one line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub line: usize,
    pub msg: String,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// It could not be read.
    Read { file: String, source: std::io::Error },
    /// It was read and is wrong: every problem found, in line order.
    Invalid { file: String, diags: Vec<Diag> },
}

impl ConfigError {
    /// One line per problem: `FILE:LINE: what is wrong; how to fix`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { file, source } => {
                vec![format!("{file}: cannot read the config: {source}; check the path and its permissions")]
            }
            ConfigError::Invalid { file, diags } => {
                diags.iter().map(|d| format!("{file}:{}: {}", d.line, d.msg)).collect()
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {}

// The file as TOML gives it: everything optional and spanned, so that the
// checks can name the line of each problem and report them all.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    lb: Option<Spanned<LbDef>>,
    #[serde(default)]
    vip: Vec<Spanned<VipDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LbDef {
    mode: Option<Spanned<String>>,
    hash: Option<Spanned<String>>,
    table_capacity: Option<Spanned<i64>>,
    udp_timeout_ms: Option<Spanned<i64>>,
    gateway_mac: Option<Spanned<String>>,
    max_packet_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VipDef {
    address: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    quic: Option<Spanned<bool>>,
    hash: Option<Spanned<String>>,
    #[serde(default)]
    backend: Vec<Spanned<BackendDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendDef {
    address: Option<Spanned<String>>,
    weight: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
    server_id: Option<Spanned<toml::Value>>,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Collects diagnostics with their lines.
struct Checker<'t> {
    text: &'t str,
    diags: Vec<Diag>,
}

impl Checker<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(self.text, s.span().start)
    }

    fn err<T>(&mut self, at: &Spanned<T>, msg: String) {
        let line = self.line(at);
        self.diags.push(Diag { line, msg });
    }

    /// An integer field in `lo..=hi`, or `default` when absent.
    fn int(&mut self, v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: i64) -> Option<i64> {
        match v {
            None => Some(default),
            Some(s) if (lo..=hi).contains(s.get_ref()) => Some(*s.get_ref()),
            Some(s) => {
                self.err(s, format!("{name} = {} is out of range; use an integer from {lo} to {hi}", s.get_ref()));
                None
            }
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), a unicast, non-zero MAC.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let mut mac = [0u8; 6];
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok {
        return Err(format!("mac {s:?} is not a MAC address; write six hex pairs, e.g. \"02:00:0a:0a:00:0b\""));
    }
    if mac == [0; 6] || mac[0] & 1 == 1 {
        return Err(format!("mac {s:?} is not a unicast address; give the interface's own MAC (ip link show)"));
    }
    Ok(mac)
}

/// `02:00:0a:0a:00:0b`.
pub fn format_mac(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

fn parse_variant(s: &str) -> Result<Variant, String> {
    match s {
        "maglev" | "maglev-v1" => Ok(Variant::V1),
        "maglev-v2" => Ok(Variant::V2),
        other => Err(format!(
            "hash {other:?} is unknown; use \"maglev\" (Katran's default, weights act in the first round) or \"maglev-v2\" (shares follow the weights)"
        )),
    }
}

fn parse_addr(s: &str, what: &str) -> Result<IpAddr, String> {
    let a: IpAddr = s.parse().map_err(|_| {
        format!("{what} {s:?} is not an IP address (names are not resolved); write \"10.10.0.100\" or \"fc00::1\"")
    })?;
    let bad = match a {
        IpAddr::V4(v) => v.is_unspecified() || v.is_multicast() || v.is_broadcast(),
        IpAddr::V6(v) => v.is_unspecified() || v.is_multicast(),
    };
    if bad {
        return Err(format!("{what} {s:?} is not a unicast address; give a host's own address"));
    }
    Ok(a)
}

/// `server_id = 7` or `server_id = [1022, 0x0303fe]`.
fn parse_server_ids(v: &toml::Value) -> Result<Vec<u32>, String> {
    let one = |x: &toml::Value| {
        match x {
        toml::Value::Integer(i) if (1..=i64::from(MAX_SERVER_ID)).contains(i) => Ok(*i as u32),
        other => Err(format!(
            "server_id {other} is not an integer from 1 to {MAX_SERVER_ID}; write server_id = 11 or server_id = [1022, 0x0303fe] (0 means none)"
        )),
    }
    };
    match v {
        toml::Value::Array(items) if !items.is_empty() => items.iter().map(one).collect(),
        toml::Value::Array(_) => Err("server_id = [] names no id; leave it out or give ids".into()),
        x => one(x).map(|i| vec![i]),
    }
}

/// What is known of one backend address over all VIPs (for the checks
/// that span VIPs).
struct Seen {
    mac: Option<([u8; 6], usize)>,
    /// Some entry of it has a `mac` key (valid or not).
    mac_given: bool,
    /// Where it first appears.
    line: usize,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::parse(&text, &file)
    }

    /// Checks `text` (the contents of `file`, named in the errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid = |diags: Vec<Diag>| ConfigError::Invalid { file: file.to_owned(), diags };
        let def: FileDef = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            let what = e.message().trim().replace('\n', ", ");
            invalid(vec![Diag { line, msg: format!("{what}; fix the TOML (the format is in examples/l4lb.toml)") }])
        })?;
        let mut c = Checker { text, diags: Vec::new() };
        let mut cfg = Config {
            mode: Mode::Dsr,
            hash: Variant::V1,
            table_capacity: DEFAULT_TABLE_CAPACITY,
            udp_timeout_ms: DEFAULT_UDP_TIMEOUT_MS,
            gateway_mac: None,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            vips: Vec::new(),
        };
        if let Some(lb) = &def.lb {
            check_lb(&mut c, lb, &mut cfg);
        }
        if def.vip.is_empty() {
            c.diags.push(Diag {
                line: 1,
                msg: "no [[vip]] defined; add one with address, port, protocol and its [[vip.backend]] entries".into(),
            });
        }
        if def.vip.len() > MAX_VIPS {
            c.err(&def.vip[MAX_VIPS], format!("more than {MAX_VIPS} VIPs; split them over several load balancers"));
        }
        let mut vip_lines: HashMap<(IpAddr, u16, Proto), usize> = HashMap::new();
        let mut seen: HashMap<IpAddr, Seen> = HashMap::new();
        let mut ids: HashMap<u32, (IpAddr, usize)> = HashMap::new();
        for v in def.vip.iter().take(MAX_VIPS) {
            let (key, vip) = check_vip(&mut c, v, &cfg, &mut seen, &mut ids);
            // A VIP is a duplicate even when its own entries are bad.
            if let Some(key) = key {
                if let Some(first) = vip_lines.get(&key) {
                    let probe = VipConf {
                        address: key.0,
                        port: key.1,
                        proto: key.2,
                        quic: false,
                        hash: cfg.hash,
                        backends: Vec::new(),
                        line: 0,
                    };
                    c.err(v, format!("VIP {} is defined twice (first on line {first}); merge the two", probe.label()));
                    continue;
                }
                vip_lines.insert(key, c.line(v));
            }
            if let Some(vip) = vip {
                cfg.vips.push(vip);
            }
        }
        if cfg.mode == Mode::Dsr {
            // A host's MAC is needed once, on any of its entries.
            for (address, s) in &seen {
                if !s.mac_given {
                    c.diags.push(Diag {
                        line: s.line,
                        msg: format!(
                            "backend {address} has no `mac`; in dsr mode packets go to the backend's MAC: add mac = \"..\" (ip link show on the backend)"
                        ),
                    });
                }
            }
        }
        if seen.len() > MAX_BACKENDS {
            c.diags.push(Diag {
                line: 1,
                msg: format!(
                    "{} distinct backends, more than {MAX_BACKENDS}; split the VIPs over several load balancers",
                    seen.len()
                ),
            });
        }
        if !c.diags.is_empty() {
            c.diags.sort_by_key(|d| d.line);
            return Err(invalid(c.diags));
        }
        Ok(cfg)
    }

    /// `2 VIPs, 3 backends, mode dsr, hash maglev`.
    pub fn summary(&self) -> String {
        let mut addrs: Vec<IpAddr> = self.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.address)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        format!(
            "{} VIP{}, {} backend{}, mode {}, hash {}",
            self.vips.len(),
            if self.vips.len() == 1 { "" } else { "s" },
            addrs.len(),
            if addrs.len() == 1 { "" } else { "s" },
            self.mode.name(),
            self.hash.name()
        )
    }
}

fn check_lb(c: &mut Checker<'_>, lb: &Spanned<LbDef>, cfg: &mut Config) {
    let d = lb.get_ref();
    if let Some(m) = &d.mode {
        match m.get_ref().as_str() {
            "dsr" => cfg.mode = Mode::Dsr,
            "ipip" => cfg.mode = Mode::Ipip,
            other => c.err(
                m,
                format!("mode {other:?} is unknown; use \"dsr\" (rewrite the destination MAC) or \"ipip\" (encapsulate as Katran)"),
            ),
        }
    }
    if let Some(h) = &d.hash {
        match parse_variant(h.get_ref()) {
            Ok(v) => cfg.hash = v,
            Err(m) => c.err(h, m),
        }
    }
    if let Some(n) =
        c.int(&d.table_capacity, "table_capacity", 1, MAX_TABLE_CAPACITY as i64, DEFAULT_TABLE_CAPACITY as i64)
    {
        cfg.table_capacity = n as usize;
    }
    if let Some(n) = c.int(&d.udp_timeout_ms, "udp_timeout_ms", 1, 3_600_000, DEFAULT_UDP_TIMEOUT_MS as i64) {
        cfg.udp_timeout_ms = n as u64;
    }
    if let Some(n) = c.int(&d.max_packet_size, "max_packet_size", 64, 65535, DEFAULT_MAX_PACKET_SIZE as i64) {
        cfg.max_packet_size = n as usize;
    }
    if let Some(g) = &d.gateway_mac {
        match parse_mac(g.get_ref()) {
            Ok(m) => cfg.gateway_mac = Some(m),
            Err(m) => c.err(g, format!("gateway_{m}")),
        }
    }
    if cfg.mode == Mode::Ipip && d.gateway_mac.is_none() {
        c.err(
            lb,
            "mode = \"ipip\" needs gateway_mac, the MAC of the next hop toward the backends (Katran's default_mac)"
                .into(),
        );
    }
}

fn check_vip(
    c: &mut Checker<'_>,
    v: &Spanned<VipDef>,
    cfg: &Config,
    seen: &mut HashMap<IpAddr, Seen>,
    ids: &mut HashMap<u32, (IpAddr, usize)>,
) -> (Option<(IpAddr, u16, Proto)>, Option<VipConf>) {
    let d = v.get_ref();
    let line = c.line(v);
    let address = match &d.address {
        Some(a) => parse_addr(a.get_ref(), "VIP address").map_err(|m| c.err(a, m)).ok(),
        None => {
            c.err(v, "[[vip]] without `address`; add address = \"10.10.0.100\"".into());
            None
        }
    };
    let port = match &d.port {
        Some(p) if (0..=65535).contains(p.get_ref()) => Some(*p.get_ref() as u16),
        Some(p) => {
            c.err(p, format!("port = {} is out of range; use 1 to 65535, or 0 for every port", p.get_ref()));
            None
        }
        None => {
            c.err(v, "[[vip]] without `port`; add port = 80 (or port = 0 for every port)".into());
            None
        }
    };
    let proto = match &d.protocol {
        Some(p) => match p.get_ref().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            other => {
                c.err(p, format!("protocol {other:?} is unknown; use \"tcp\" or \"udp\""));
                None
            }
        },
        None => {
            c.err(v, "[[vip]] without `protocol`; add protocol = \"tcp\" or \"udp\"".into());
            None
        }
    };
    let quic = d.quic.as_ref().is_some_and(|q| *q.get_ref());
    if let (Some(q), Some(Proto::Tcp)) = (&d.quic, proto) {
        if *q.get_ref() {
            c.err(q, "quic = true on a TCP VIP; QUIC runs over UDP: set protocol = \"udp\" or drop `quic`".into());
        }
    }
    let hash = match &d.hash {
        Some(h) => parse_variant(h.get_ref()).map_err(|m| c.err(h, m)).ok(),
        None => Some(cfg.hash),
    };
    if d.backend.is_empty() {
        c.err(v, "VIP without backends; add [[vip.backend]] entries with address (and mac for dsr)".into());
    }
    let mut backends = Vec::new();
    let mut here: HashMap<IpAddr, usize> = HashMap::new();
    let mut bad = false;
    for b in &d.backend {
        match check_backend(c, b, cfg, address, seen, ids) {
            Some(be) => {
                if let Some(first) = here.get(&be.address) {
                    c.err(
                        b,
                        format!("backend {} appears twice in this VIP (first on line {first}); keep one", be.address),
                    );
                    bad = true;
                } else {
                    here.insert(be.address, be.line);
                    backends.push(be);
                }
            }
            None => bad = true,
        }
    }
    if !backends.is_empty() && !bad && backends.iter().all(|b| b.weight == 0) {
        c.err(
            v,
            "every backend of this VIP has weight 0, so new connections would be dropped; give one a weight > 0".into(),
        );
    }
    let (Some(address), Some(port), Some(proto)) = (address, port, proto) else { return (None, None) };
    let key = Some((address, port, proto));
    match hash {
        Some(hash) if !bad => (key, Some(VipConf { address, port, proto, quic, hash, backends, line })),
        _ => (key, None),
    }
}

fn check_backend(
    c: &mut Checker<'_>,
    b: &Spanned<BackendDef>,
    cfg: &Config,
    vip: Option<IpAddr>,
    seen: &mut HashMap<IpAddr, Seen>,
    ids: &mut HashMap<u32, (IpAddr, usize)>,
) -> Option<BackendConf> {
    let d = b.get_ref();
    let line = c.line(b);
    let before = c.diags.len();
    let address = match &d.address {
        Some(a) => parse_addr(a.get_ref(), "backend address").map_err(|m| c.err(a, m)).ok(),
        None => {
            c.err(b, "[[vip.backend]] without `address`; add address = \"10.10.0.11\"".into());
            None
        }
    };
    let weight = c.int(&d.weight, "weight", 0, i64::from(MAX_WEIGHT), 1).map(|w| w as u32);
    let mac = match &d.mac {
        Some(m) => parse_mac(m.get_ref()).map_err(|e| c.err(m, e)).ok(),
        None => None,
    };
    let server_ids = match &d.server_id {
        Some(s) => parse_server_ids(s.get_ref()).map_err(|e| c.err(s, e)).ok(),
        None => Some(Vec::new()),
    };
    let address = address?;
    if let (Mode::Ipip, Some(IpAddr::V6(_)), IpAddr::V4(_)) = (cfg.mode, vip, address) {
        c.err(
            b,
            format!("backend {address} is IPv4 behind an IPv6 VIP; ipip cannot carry IPv6 in IPv4 (nor can Katran): give an IPv6 backend"),
        );
    }
    let entry = seen.entry(address).or_insert(Seen { mac: None, mac_given: false, line });
    entry.mac_given |= d.mac.is_some();
    if let (Some(m), Some(ms)) = (mac, &d.mac) {
        match entry.mac {
            Some((other, at)) if other != m => c.err(
                ms,
                format!(
                    "backend {address} has mac {} here but {} on line {at}; one host has one MAC: make them equal",
                    format_mac(m),
                    format_mac(other)
                ),
            ),
            Some(_) => {}
            None => entry.mac = Some((m, line)),
        }
    }
    if let (Some(list), Some(s)) = (&server_ids, &d.server_id) {
        for id in list {
            match ids.get(id) {
                Some((other, at)) if *other != address => c.err(
                    s,
                    format!("server_id {id} names backend {other} on line {at} already; each id names one backend: pick another"),
                ),
                Some(_) => {}
                None => {
                    ids.insert(*id, (address, c.line(s)));
                }
            }
        }
    }
    if c.diags.len() > before {
        return None;
    }
    Some(BackendConf { address, weight: weight?, mac, server_ids: server_ids?, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[lb]
mode = "dsr"

[[vip]]
address = "10.10.0.100"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.10.0.11"
mac = "02:00:00:00:00:11"
server_id = 11

[[vip.backend]]
address = "10.10.0.12"
mac = "02:00:00:00:00:12"
weight = 2
server_id = [12, 0x03000c]
"#;

    #[test]
    fn a_good_file() {
        let c = Config::parse(GOOD, "x.toml").unwrap();
        assert_eq!(c.mode, Mode::Dsr);
        assert_eq!(c.vips.len(), 1);
        let v = &c.vips[0];
        assert_eq!((v.port, v.proto, v.quic, v.hash, v.line), (80, Proto::Tcp, false, Variant::V1, 5));
        assert_eq!(v.backends[1].server_ids, [12, 0x03000c]);
        assert_eq!(v.backends[1].weight, 2);
        assert_eq!(v.backends[0].mac, Some([2, 0, 0, 0, 0, 0x11]));
        assert_eq!(c.summary(), "1 VIP, 2 backends, mode dsr, hash maglev");
    }

    fn errs(text: &str) -> Vec<String> {
        Config::parse(text, "x.toml").unwrap_err().lines()
    }

    #[test]
    fn every_problem_gets_its_own_line() {
        let text = r#"
[lb]
mode = "nat"
table_capacity = 0

[[vip]]
address = "10.10.0.300"
port = 70000
protocol = "sctp"

[[vip.backend]]
address = "10.10.0.11"
mac = "ff:ff:ff:ff:ff:ff"
server_id = 0

[[vip]]
address = "10.10.0.101"
port = 80
protocol = "tcp"
quic = true

[[vip.backend]]
address = "10.10.0.12"
"#;
        let e = errs(text);
        let lines: Vec<&str> = e.iter().map(|l| l.split(':').nth(1).unwrap()).collect();
        assert_eq!(lines, ["3", "4", "7", "8", "9", "13", "14", "20", "22"], "{e:#?}");
        assert!(e[0].contains("mode \"nat\" is unknown; use \"dsr\""), "{}", e[0]);
        assert!(e[6].contains("server_id 0 is not an integer from 1"), "{}", e[6]);
        assert!(e[8].contains("has no `mac`"), "{}", e[8]);
        assert!(e.iter().all(|l| l.starts_with("x.toml:") && l.contains(';')), "{e:#?}");
    }

    #[test]
    fn checks_across_vips() {
        let text = r#"
[[vip]]
address = "10.10.0.100"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.10.0.11"
mac = "02:00:00:00:00:11"
server_id = 5
[[vip.backend]]
address = "10.10.0.11"
mac = "02:00:00:00:00:11"

[[vip]]
address = "10.10.0.100"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.10.0.12"
mac = "02:00:00:00:00:11"
server_id = 5
[[vip.backend]]
address = "10.10.0.11"
mac = "02:00:00:00:00:99"
"#;
        let e = errs(text);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(
            e[0].starts_with("x.toml:10:") && e[0].contains("appears twice in this VIP (first on line 6)"),
            "{e:#?}"
        );
        assert!(e[1].starts_with("x.toml:14:") && e[1].contains("defined twice (first on line 2)"), "{e:#?}");
        assert!(e[2].starts_with("x.toml:21:") && e[2].contains("server_id 5 names backend 10.10.0.11"), "{e:#?}");
        assert!(e[3].starts_with("x.toml:24:") && e[3].contains("one host has one MAC"), "{e:#?}");
    }

    #[test]
    fn duplicate_vips_and_ipip_rules() {
        let text = r#"
[lb]
mode = "ipip"

[[vip]]
address = "fc00:1::1"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.0.0.1"

[[vip]]
address = "fc00:1::1"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "fc00::1"
weight = 0
"#;
        let e = errs(text);
        assert_eq!(e.len(), 4, "{e:#?}");
        assert!(e[0].starts_with("x.toml:2:") && e[0].contains("needs gateway_mac"), "{e:#?}");
        assert!(e[1].starts_with("x.toml:9:") && e[1].contains("IPv4 behind an IPv6 VIP"), "{e:#?}");
        assert!(e[2].starts_with("x.toml:12:") && e[2].contains("weight 0"), "{e:#?}");
        assert!(e[3].starts_with("x.toml:12:") && e[3].contains("defined twice (first on line"), "{e:#?}");
    }

    #[test]
    fn toml_errors_name_the_line() {
        let e = errs("[[vip]]\naddress = \"10.0.0.1\"\nbogus = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("x.toml:3:") && e[0].contains("unknown field `bogus`"), "{e:#?}");
        assert!(errs("")[0].contains("no [[vip]] defined"));
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02-00-0a-0a-00-0b"), Ok([2, 0, 10, 10, 0, 11]));
        assert!(parse_mac("02:00:0a:0a:00").is_err());
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert_eq!(format_mac([2, 0, 10, 10, 0, 11]), "02:00:0a:0a:00:0b");
    }
}
