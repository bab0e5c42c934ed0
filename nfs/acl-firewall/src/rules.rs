//! The rule language, the rule set and the packet side of matching.
//!
//! See the crate docs for the syntax. Parsing is line by line; the first
//! bad line stops it with a [`RuleError`] naming the file, the line and
//! what is wrong.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use controller::registry::{Prefix, PrefixError};
use serde::{Deserialize, Serialize};
use ustack::wire::{protocol, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, VlanTag};

/// Most VLAN tags skipped before the IP header (QinQ), as the L2/L3 stack does.
const MAX_VLAN_TAGS: usize = 2;

/// What a rule (or the default policy) does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// An inclusive port range; a single port is `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

/// One `allow|deny` line. `None` fields are `any`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub proto: Option<u8>,
    pub src: Option<Prefix>,
    pub sport: Option<PortRange>,
    pub dst: Option<Prefix>,
    pub dport: Option<PortRange>,
    /// Line number in the file (1-based).
    pub line: usize,
    /// The rule as written (comment stripped, blanks collapsed).
    pub text: String,
}

/// The five-tuple of one packet as seen on the wire (not direction-free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Source and destination ports: `None` when the packet is not TCP or
    /// UDP, or is a non-first fragment, or its L4 header is cut short.
    pub ports: Option<(u16, u16)>,
}

impl Rule {
    /// Whether the rule matches `key`: every given field must match, as
    /// written (source against the packet's source, destination against
    /// its destination). A rule naming a port never matches a packet
    /// without ports.
    pub fn matches(&self, key: &PacketKey) -> bool {
        if self.proto.is_some_and(|p| p != key.proto) {
            return false;
        }
        if self.src.is_some_and(|p| !p.contains(key.src)) || self.dst.is_some_and(|p| !p.contains(key.dst)) {
            return false;
        }
        if self.sport.is_none() && self.dport.is_none() {
            return true;
        }
        let Some((sp, dp)) = key.ports else {
            return false;
        };
        self.sport.map_or(true, |r| r.contains(sp)) && self.dport.map_or(true, |r| r.contains(dp))
    }
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected 6 fields `allow|deny PROTO SRC SPORT DST DPORT` (or `default allow|deny`), found {0}")]
    FieldCount(usize),
    #[error("unknown action {0:?}; expected allow, deny or default")]
    Action(String),
    #[error("unknown protocol {0:?}; expected tcp, udp, icmp, any or a number 0-255")]
    Proto(String),
    #[error("{which}: {err}")]
    Prefix { which: &'static str, err: PrefixError },
    #[error("{which} port {text:?}: {why}")]
    Port { which: &'static str, text: String, why: &'static str },
    #[error("{which} port given for protocol {proto}; ports apply only to tcp, udp or any")]
    PortsWithoutL4 { which: &'static str, proto: String },
    #[error("source {src} and destination {dst} are of different address families; the rule could never match")]
    MixedFamilies { src: Prefix, dst: Prefix },
    #[error("default policy {0:?}; expected `default allow` or `default deny`")]
    Default(String),
    #[error("second default policy (the first is on line {0})")]
    DuplicateDefault(usize),
}

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: cannot read the rules: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {err}")]
    Line { file: String, line: usize, err: LineError },
}

/// The parsed rules plus their hit counters.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Action,
    hits: Vec<AtomicU64>,
    default_hits: AtomicU64,
    no_key: AtomicU64,
}

/// One rule in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    pub line: usize,
    pub rule: String,
    pub hits: u64,
}

/// What `--json-out` writes and what is printed on exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every rule in file order with its hits (first match wins, so a
    /// packet counts under one rule at most).
    pub rules: Vec<RuleHits>,
    /// The default policy and the packets no rule matched.
    pub default: Action,
    pub default_hits: u64,
    /// Packets without an IP five-tuple (non-IP, malformed, empty): they
    /// match no rule and are counted in `default_hits` too.
    pub not_ip: u64,
    pub passed: u64,
    pub dropped: u64,
}

impl Report {
    /// The table printed on exit.
    pub fn render(&self) -> String {
        let mut out = format!("{:>6} {:>12}  rule\n", "line", "hits");
        for r in &self.rules {
            out.push_str(&format!("{:>6} {:>12}  {}\n", r.line, r.hits, r.rule));
        }
        out.push_str(&format!(
            "{:>6} {:>12}  default {} ({} not IP)\n",
            "-", self.default_hits, self.default, self.not_ip
        ));
        out.push_str(&format!("passed {}, dropped {}\n", self.passed, self.dropped));
        out
    }
}

fn parse_proto(s: &str) -> Result<Option<u8>, LineError> {
    match s.to_ascii_lowercase().as_str() {
        "any" => Ok(None),
        "tcp" => Ok(Some(protocol::TCP)),
        "udp" => Ok(Some(protocol::UDP)),
        "icmp" => Ok(Some(protocol::ICMP)),
        n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse::<u8>().map(Some).map_err(|_| LineError::Proto(s.to_owned()))
        }
        _ => Err(LineError::Proto(s.to_owned())),
    }
}

fn parse_addr(s: &str, which: &'static str) -> Result<Option<Prefix>, LineError> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|err| LineError::Prefix { which, err })
}

fn parse_port(s: &str, which: &'static str) -> Result<Option<PortRange>, LineError> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(None);
    }
    let err = |why| LineError::Port { which, text: s.to_owned(), why };
    let num = |t: &str| {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("not a port number, a range LO-HI or any"));
        }
        t.parse::<u16>().map_err(|_| err("port numbers go up to 65535"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let p = num(s)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(err("the range is empty (LO is above HI)"));
    }
    Ok(Some(PortRange { lo, hi }))
}

/// Parses one rule line (already stripped of its comment, not blank).
pub fn parse_rule(line: &str, line_no: usize) -> Result<Rule, LineError> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let action = match f.first().map(|a| a.to_ascii_lowercase()) {
        Some(a) if a == "allow" => Action::Allow,
        Some(a) if a == "deny" => Action::Deny,
        Some(_) if f.len() != 6 => return Err(LineError::FieldCount(f.len())),
        _ => return Err(LineError::Action(f.first().copied().unwrap_or_default().to_owned())),
    };
    if f.len() != 6 {
        return Err(LineError::FieldCount(f.len()));
    }
    let proto = parse_proto(f[1])?;
    let src = parse_addr(f[2], "source")?;
    let sport = parse_port(f[3], "source")?;
    let dst = parse_addr(f[4], "destination")?;
    let dport = parse_port(f[5], "destination")?;
    if let (Some(s), Some(d)) = (src, dst) {
        if s.addr().is_ipv4() != d.addr().is_ipv4() {
            return Err(LineError::MixedFamilies { src: s, dst: d });
        }
    }
    if proto.is_some_and(|p| p != protocol::TCP && p != protocol::UDP) {
        let which = match (sport, dport) {
            (Some(_), _) => Some("source"),
            (None, Some(_)) => Some("destination"),
            _ => None,
        };
        if let Some(which) = which {
            return Err(LineError::PortsWithoutL4 { which, proto: f[1].to_owned() });
        }
    }
    Ok(Rule { action, proto, src, sport, dst, dport, line: line_no, text: f.join(" ") })
}

impl RuleSet {
    /// A rule set from parsed rules.
    pub fn new(rules: Vec<Rule>, default: Action) -> RuleSet {
        let hits = rules.iter().map(|_| AtomicU64::new(0)).collect();
        RuleSet { rules, default, hits, default_hits: AtomicU64::new(0), no_key: AtomicU64::new(0) }
    }

    /// Parses the text of a rules file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        let mut default: Option<(Action, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |err| RuleError::Line { file: file.to_owned(), line: line_no, err };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f[0].eq_ignore_ascii_case("default") {
                if let Some((_, first)) = default {
                    return Err(err(LineError::DuplicateDefault(first)));
                }
                let action = match f[1..] {
                    [a] if a.eq_ignore_ascii_case("allow") => Action::Allow,
                    [a] if a.eq_ignore_ascii_case("deny") => Action::Deny,
                    _ => return Err(err(LineError::Default(f[1..].join(" ")))),
                };
                default = Some((action, line_no));
                continue;
            }
            rules.push(parse_rule(line, line_no).map_err(err)?);
        }
        Ok(RuleSet::new(rules, default.map_or(Action::Allow, |(a, _)| a)))
    }

    /// Reads and parses a rules file.
    pub fn load(path: &Path) -> Result<RuleSet, RuleError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read { file: file.clone(), source })?;
        RuleSet::parse(&text, &file)
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The default policy.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// The index of the first rule matching `key`, if any (no counting).
    pub fn first_match(&self, key: &PacketKey) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(key))
    }

    /// Decides one frame and counts the hit: the first matching rule's
    /// action, else the default policy (also for frames without a key).
    pub fn decide(&self, frame: &[u8]) -> Action {
        self.decide_rule(frame).0
    }

    /// [`decide`](Self::decide), also naming the deciding rule (its index,
    /// `None` for the default).
    pub fn decide_rule(&self, frame: &[u8]) -> (Action, Option<usize>) {
        let Some(key) = packet_key(frame) else {
            self.no_key.fetch_add(1, Ordering::Relaxed);
            self.default_hits.fetch_add(1, Ordering::Relaxed);
            return (self.default, None);
        };
        match self.first_match(&key) {
            Some(i) => {
                self.hits[i].fetch_add(1, Ordering::Relaxed);
                (self.rules[i].action, Some(i))
            }
            None => {
                self.default_hits.fetch_add(1, Ordering::Relaxed);
                (self.default, None)
            }
        }
    }

    /// The counters so far. Passed/dropped follow from the hits.
    pub fn report(&self) -> Report {
        let rules: Vec<RuleHits> = self
            .rules
            .iter()
            .zip(&self.hits)
            .map(|(r, h)| RuleHits { line: r.line, rule: r.text.clone(), hits: h.load(Ordering::Relaxed) })
            .collect();
        let default_hits = self.default_hits.load(Ordering::Relaxed);
        let (mut passed, mut dropped) = (0, 0);
        let mut add = |a: Action, n: u64| match a {
            Action::Allow => passed += n,
            Action::Deny => dropped += n,
        };
        for (r, h) in self.rules.iter().zip(&rules) {
            add(r.action, h.hits);
        }
        add(self.default, default_hits);
        Report {
            rules,
            default: self.default,
            default_hits,
            not_ip: self.no_key.load(Ordering::Relaxed),
            passed,
            dropped,
        }
    }
}

/// The L4 ports of a TCP or UDP header (both start with them), if present.
fn l4_ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    if proto != protocol::TCP && proto != protocol::UDP {
        return None;
    }
    match l4 {
        [a, b, c, d, ..] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// The five-tuple of an Ethernet frame (up to two VLAN tags, IPv4 or
/// IPv6), or `None` when it is not IP or is malformed. Never panics.
pub fn packet_key(frame: &[u8]) -> Option<PacketKey> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mut ethertype = eth.ethertype();
    let mut rest = eth.payload();
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan() {
            break;
        }
        let tag = VlanTag::new_checked(rest).ok()?;
        ethertype = tag.inner_ethertype();
        rest = rest.get(VlanTag::<&[u8]>::HEADER_LEN..)?;
    }
    match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(rest).ok()?;
            let proto = ip.protocol();
            let ports = if ip.frag_offset() != 0 { None } else { l4_ports(proto, ip.payload()) };
            Some(PacketKey { proto, src: ip.src_addr().into(), dst: ip.dst_addr().into(), ports })
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(rest).ok()?;
            match ip.upper_layer() {
                Ok((proto, l4)) => Some(PacketKey {
                    proto,
                    src: ip.src_addr().into(),
                    dst: ip.dst_addr().into(),
                    ports: l4_ports(proto, l4),
                }),
                // A non-first fragment: the upper-layer protocol sits behind
                // the fragment header, which only the L2/L3 stack's walk
                // reports; ask it on a copy (rare path). Ports stay unknown.
                Err(_) => ipv6_fragment_key(frame),
            }
        }
        _ => None,
    }
}

fn ipv6_fragment_key(frame: &[u8]) -> Option<PacketKey> {
    let mut copy = frame.to_vec();
    match ustack::l3::process(&mut copy, &ustack::l3::LocalAddrs::default()) {
        ustack::l3::Verdict::Forward { flow: Some(f) } => {
            let ((src, _), (dst, _)) = f.key.endpoints(f.dir);
            Some(PacketKey { proto: f.key.proto(), src, dst, ports: None })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{
        ipv4_fragment, ipv4_frame, ipv4_frame_tagged, ipv6_fragment, ipv6_frame, ICMP, TCP as T, UDP as U,
    };

    fn rule(line: &str) -> Rule {
        parse_rule(line, 1).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn bad(text: &str) -> String {
        RuleSet::parse(text, "fw.rules").unwrap_err().to_string()
    }

    fn key(proto: u8, src: &str, sp: u16, dst: &str, dp: u16) -> PacketKey {
        PacketKey { proto, src: src.parse().unwrap(), dst: dst.parse().unwrap(), ports: Some((sp, dp)) }
    }

    #[test]
    fn good_lines_parse() {
        let r = rule("deny tcp any any 10.10.0.11 8080");
        assert_eq!(r.action, Action::Deny);
        assert_eq!(r.proto, Some(6));
        assert_eq!((r.src, r.sport), (None, None));
        assert_eq!(r.dst, Some("10.10.0.11/32".parse().unwrap()));
        assert_eq!(r.dport, Some(PortRange { lo: 8080, hi: 8080 }));

        let r = rule("  ALLOW   UDP 10.0.0.0/8\tany any 53 ");
        assert_eq!((r.action, r.proto), (Action::Allow, Some(17)));
        assert_eq!(r.src, Some("10.0.0.0/8".parse().unwrap()));
        assert_eq!(r.text, "ALLOW UDP 10.0.0.0/8 any any 53");

        let r = rule("deny any 2001:db8::/32 1000-2000 ::1 any");
        assert_eq!(r.proto, None);
        assert_eq!(r.sport, Some(PortRange { lo: 1000, hi: 2000 }));
        assert_eq!(rule("allow icmp any any any any").proto, Some(1));
        assert_eq!(rule("allow 47 any any any any").proto, Some(47));
        assert_eq!(rule("allow 17 any 0-65535 any 7-7").dport, Some(PortRange { lo: 7, hi: 7 }));

        let set = RuleSet::parse(
            "# header\n\n   \nallow tcp any any any 22 # ssh\ndefault deny\n  # trailing\ndeny udp any any any any\n",
            "f",
        )
        .unwrap();
        assert_eq!(set.default_action(), Action::Deny);
        let lines: Vec<usize> = set.rules().iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![4, 7]);
        assert_eq!(set.rules()[0].text, "allow tcp any any any 22");
        assert_eq!(RuleSet::parse("", "f").unwrap().default_action(), Action::Allow);
        assert_eq!(RuleSet::parse("default allow\n", "f").unwrap().rules().len(), 0);
    }

    #[test]
    fn every_bad_line_is_named_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("deny tcp any any 10.0.0.1", "fw.rules:1: expected 6 fields `allow|deny PROTO SRC SPORT DST DPORT` (or `default allow|deny`), found 5"),
            ("deny tcp any any 10.0.0.1 80 extra", "found 7"),
            ("block tcp any any any any", "fw.rules:1: unknown action \"block\"; expected allow, deny or default"),
            ("deny tpc any any any any", "fw.rules:1: unknown protocol \"tpc\"; expected tcp, udp, icmp, any or a number 0-255"),
            ("deny 256 any any any any", "unknown protocol \"256\""),
            ("deny tcp 10.0.0.1/8 any any any", "fw.rules:1: source: bad prefix \"10.0.0.1/8\": host bits are set; did you mean 10.0.0.0/8?"),
            ("deny tcp any any 10.0.0.0/33 any", "destination: bad prefix \"10.0.0.0/33\": length 33 is longer than 32"),
            ("deny tcp any any 10.0.0.300 any", "destination: bad prefix \"10.0.0.300\": not an IPv4 or IPv6 address"),
            ("deny tcp any 80x any any", "fw.rules:1: source port \"80x\": not a port number, a range LO-HI or any"),
            ("deny tcp any any any 70000", "destination port \"70000\": port numbers go up to 65535"),
            ("deny tcp any any any 2000-1000", "destination port \"2000-1000\": the range is empty (LO is above HI)"),
            ("deny tcp any any any 1000-", "destination port \"1000-\": not a port number"),
            ("deny icmp any 7 any any", "fw.rules:1: source port given for protocol icmp; ports apply only to tcp, udp or any"),
            ("deny 47 any any any 80", "destination port given for protocol 47"),
            ("deny any 10.0.0.0/8 any ::1 any", "different address families; the rule could never match"),
            ("default drop", "fw.rules:1: default policy \"drop\"; expected `default allow` or `default deny`"),
            ("default", "default policy \"\""),
            ("default allow now", "default policy \"allow now\""),
        ];
        for (line, want) in cases {
            let got = bad(line);
            assert!(got.contains(want), "{line:?}: got {got:?}, want {want:?}");
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
        assert_eq!(
            bad("# x\ndefault allow\nallow tcp any any any any\ndefault deny\n"),
            "fw.rules:4: second default policy (the first is on line 2)"
        );
        assert!(bad("allow tcp any any any any\n\ndeny udp any any\n").starts_with("fw.rules:3: "));

        let missing = RuleSet::load(Path::new("/nonexistent/acl.rules")).unwrap_err().to_string();
        assert!(missing.starts_with("/nonexistent/acl.rules: cannot read the rules: "), "{missing}");
    }

    #[test]
    fn matching_prefixes_ports_any_and_proto() {
        let r = rule("deny tcp 10.0.0.0/8 any 192.168.1.0/24 1000-2000");
        assert!(r.matches(&key(6, "10.1.2.3", 5, "192.168.1.200", 1000)));
        assert!(r.matches(&key(6, "10.255.255.255", 65535, "192.168.1.0", 2000)));
        assert!(!r.matches(&key(6, "11.0.0.1", 5, "192.168.1.1", 1500)), "source outside");
        assert!(!r.matches(&key(6, "10.0.0.1", 5, "192.168.2.1", 1500)), "destination outside");
        assert!(!r.matches(&key(6, "10.0.0.1", 5, "192.168.1.1", 999)), "below the range");
        assert!(!r.matches(&key(6, "10.0.0.1", 5, "192.168.1.1", 2001)), "above the range");
        assert!(!r.matches(&key(17, "10.0.0.1", 5, "192.168.1.1", 1500)), "udp");
        assert!(!r.matches(&key(6, "192.168.1.1", 1500, "10.0.0.1", 5)), "not mirrored");
        let mut no_ports = key(6, "10.0.0.1", 0, "192.168.1.1", 0);
        no_ports.ports = None;
        assert!(!r.matches(&no_ports), "a port rule needs ports");

        let any = rule("allow any any any any any");
        assert!(any.matches(&no_ports));
        assert!(any.matches(&key(1, "::1", 0, "::2", 0)));

        let v6 = rule("deny udp 2001:db8::/32 any any 53");
        assert!(v6.matches(&key(17, "2001:db8:1::9", 999, "2001:4860::8888", 53)));
        assert!(!v6.matches(&key(17, "2001:db9::9", 999, "2001:4860::8888", 53)));
        assert!(!v6.matches(&key(17, "10.0.0.1", 999, "8.8.8.8", 53)), "family mismatch");

        let host = rule("deny any 10.0.0.7 any any any");
        assert!(host.matches(&key(47, "10.0.0.7", 0, "1.1.1.1", 0)));
        assert!(!host.matches(&key(47, "10.0.0.8", 0, "1.1.1.1", 0)));
        assert!(rule("deny 47 any any any any").matches(&key(47, "1.1.1.1", 0, "2.2.2.2", 0)));
        assert!(!rule("deny 47 any any any any").matches(&key(6, "1.1.1.1", 0, "2.2.2.2", 0)));
        assert!(rule("deny any any 53 any any").matches(&key(17, "1.1.1.1", 53, "2.2.2.2", 1)));
    }

    #[test]
    fn first_match_wins_and_hits_are_counted() {
        let set = RuleSet::parse(
            "allow tcp 10.0.0.1 any any 80\ndeny tcp 10.0.0.0/24 any any any\nallow tcp any any any any\ndefault deny\n",
            "f",
        )
        .unwrap();
        let f = |src, dp| ipv4_frame(T, src, 1234, [1, 1, 1, 1], dp);
        assert_eq!(set.decide(&f([10, 0, 0, 1], 80)), Action::Allow);
        assert_eq!(set.decide(&f([10, 0, 0, 1], 81)), Action::Deny);
        assert_eq!(set.decide(&f([10, 0, 1, 1], 81)), Action::Allow);
        assert_eq!(set.decide(&ipv4_frame(U, [10, 0, 1, 1], 1, [1, 1, 1, 1], 2)), Action::Deny);
        assert_eq!(set.decide(b"junk"), Action::Deny);
        let r = set.report();
        assert_eq!(r.rules.iter().map(|h| h.hits).collect::<Vec<_>>(), vec![1, 1, 1]);
        assert_eq!((r.default_hits, r.not_ip, r.passed, r.dropped), (2, 1, 2, 3));
    }

    #[test]
    fn keys_from_frames() {
        let k = packet_key(&ipv4_frame(T, [10, 0, 0, 5], 40000, [10, 10, 0, 11], 8080)).unwrap();
        assert_eq!(k, key(6, "10.0.0.5", 40000, "10.10.0.11", 8080));
        let k = packet_key(&ipv4_frame_tagged(U, [1, 2, 3, 4], 53, [5, 6, 7, 8], 9, &[100, 200])).unwrap();
        assert_eq!(k, key(17, "1.2.3.4", 53, "5.6.7.8", 9), "QinQ");
        let k = packet_key(&ipv4_frame(ICMP, [1, 2, 3, 4], 0, [5, 6, 7, 8], 0)).unwrap();
        assert_eq!((k.proto, k.ports), (1, None));
        let k = packet_key(&ipv4_fragment(T, [1, 2, 3, 4], [5, 6, 7, 8])).unwrap();
        assert_eq!((k.proto, k.ports, k.src), (6, None, "1.2.3.4".parse().unwrap()));
        let k = packet_key(&ipv6_frame(T, "2001:db8::1", 1, "2001:db8::2", 443)).unwrap();
        assert_eq!(k, key(6, "2001:db8::1", 1, "2001:db8::2", 443));
        let k = packet_key(&ipv6_fragment(U, "2001:db8::9", "2001:db8::1")).unwrap();
        assert_eq!((k.proto, k.ports), (17, None));
        assert_eq!((k.src, k.dst), ("2001:db8::9".parse().unwrap(), "2001:db8::1".parse().unwrap()), "direction kept");
        let k = packet_key(&ipv6_fragment(U, "2001:db8::1", "2001:db8::9")).unwrap();
        assert_eq!(k.src, "2001:db8::1".parse::<IpAddr>().unwrap(), "direction kept the other way too");
    }

    #[test]
    fn malformed_frames_have_no_key_and_never_panic() {
        let good = ipv4_frame(T, [10, 0, 0, 5], 40000, [10, 10, 0, 11], 8080);
        for len in 0..good.len() {
            // Cut anywhere: either no key, or (once the IP header is whole
            // but the total length is not) still no key; never a panic.
            let _ = packet_key(&good[..len]);
        }
        assert_eq!(packet_key(&good[..14 + 20 + 2]), None, "IPv4 total length beyond the frame");
        assert_eq!(packet_key(&[]), None);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(packet_key(&arp), None);
        let mut v5 = good.clone();
        v5[14] = 0x55;
        assert_eq!(packet_key(&v5), None);
        let six = ipv6_frame(U, "::1", 1, "::2", 2);
        for len in 0..six.len() {
            let _ = packet_key(&six[..len]);
        }
        // Random bytes of every length.
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = packet_key(&junk);
        }
        // A TCP header cut after the IP header: key without ports.
        let mut short = ipv4_frame(T, [1, 1, 1, 1], 1, [2, 2, 2, 2], 2);
        short.truncate(14 + 20 + 2);
        short[16..18].copy_from_slice(&22u16.to_be_bytes());
        short[24..26].copy_from_slice(&[0, 0]);
        let k = packet_key(&short);
        assert_eq!(k.map(|k| k.ports), Some(None));
    }
}
