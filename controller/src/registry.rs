//! The NF registry and the wiring type checks.
//!
//! Owns what the controller knows about network functions: the manifest an
//! NF sends when it registers ([`NfManifest`]), the flow filters used by
//! subscriptions and chain matches ([`FlowFilter`]), the table of registered
//! NFs ([`Registry`]) with the [`EventTypeRegistry`] their declared types
//! live in, and the rule that accepts or refuses a publisher → subscriber
//! wiring ([`Registry::check_wiring`], [`Registry::wire`]).
//!
//! It is plain data and checks: no sockets, no shared memory, no DPDK. The
//! runtime's control thread feeds it manifests and applies what it returns.
//!
//! Choices made here:
//!
//! - NF names are 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
//! - Registering is all or nothing: if any declared type or path is bad, no
//!   type is declared and no entry changes.
//! - Re-registering a name replaces its entry and keeps its [`NfId`], also
//!   after [`Registry::unregister`]: a restarted NF comes back under the same
//!   id. Declared types are never forgotten (ids stay stable).
//! - An NF that publishes `FLOW/TCP/TERMINATE` (a stack action) must say
//!   `requests_stack_actions = true`.
//! - A publication of `X` covers its subtypes: an NF publishing `FLOW` may be
//!   wired as a publisher of `FLOW/START`.
//! - Manifests and filters refuse unknown fields, so a misspelt key is an
//!   error rather than silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ustack::event::{EventTypeError, EventTypeId, EventTypeRegistry, FLOW_TCP_TERMINATE};
use ustack::flow::FlowKey;

/// An IP protocol number; written in files as `"tcp"`, `"udp"`, `"icmp"`,
/// `"icmpv6"` or a number `0..=255`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// TCP (6).
    pub const TCP: Protocol = Protocol(6);
    /// UDP (17).
    pub const UDP: Protocol = Protocol(17);
    /// ICMP (1).
    pub const ICMP: Protocol = Protocol(1);
    /// ICMPv6 (58).
    pub const ICMPV6: Protocol = Protocol(58);

    const NAMES: [(&'static str, Protocol); 4] =
        [("tcp", Protocol::TCP), ("udp", Protocol::UDP), ("icmp", Protocol::ICMP), ("icmpv6", Protocol::ICMPV6)];

    /// The protocol called `name` (case-insensitive), if it has a name.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Self::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, p)| p)
    }

    /// Its name, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(_, p)| *p == self).map(|&(n, _)| n)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_u8(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"tcp\", \"udp\", \"icmp\", \"icmpv6\" or a protocol number 0 to 255")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Protocol, E> {
                Protocol::from_name(v).ok_or_else(|| {
                    E::custom(format!(
                        "unknown protocol {v:?}; use \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or a number 0 to 255"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v).map(Protocol).map_err(|_| E::custom(format!("protocol {v} is not in 0 to 255")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v).map(Protocol).map_err(|_| E::custom(format!("protocol {v} is not in 0 to 255")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An IPv4 or IPv6 prefix in CIDR form (`10.0.0.0/8`, `2001:db8::/32`); a
/// bare address is a host prefix. Host bits must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix string was refused; the message names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad prefix {text:?}: {why}")]
pub struct PrefixError {
    text: String,
    why: String,
}

impl Prefix {
    /// The prefix `addr/len`, refusing a too-long length or set host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let text = format!("{addr}/{len}");
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError { text, why: format!("length {len} is longer than {max}") });
        }
        let p = Prefix { addr, len };
        if p.network() != addr {
            let fix = Prefix { addr: p.network(), len };
            return Err(PrefixError { text, why: format!("host bits are set; did you mean {fix}?") });
        }
        Ok(p)
    }

    /// The address part.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is `/0` (matches every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask128(len: u8, width: u32) -> u128 {
        if len == 0 {
            0
        } else {
            (u128::MAX << (width - u32::from(len))) & (u128::MAX >> (128 - width))
        }
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = Self::mask128(self.len, 32) as u32;
                IpAddr::V4((a.to_bits() & m).into())
            }
            IpAddr::V6(a) => IpAddr::V6((a.to_bits() & Self::mask128(self.len, 128)).into()),
        }
    }

    /// Whether `ip` is inside this prefix (families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = Self::mask128(self.len, 32) as u32;
                a.to_bits() & m == n.to_bits()
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => a.to_bits() & Self::mask128(self.len, 128) == n.to_bits(),
            _ => false,
        }
    }
}

impl std::str::FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let err = |why: &str| PrefixError { text: s.to_string(), why: why.to_string() };
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr =
            a.parse().map_err(|_| err("not an IPv4 or IPv6 address; write address/length, e.g. 10.0.0.0/8"))?;
        let len = match l {
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().map_err(|_| err("the length is not a number of bits 0 to 128"))?
            }
            Some(_) => return Err(err("the length after '/' is not a number of bits")),
        };
        Prefix::new(addr, len).map_err(|e| PrefixError { text: s.to_string(), why: e.why })
    }
}

impl TryFrom<String> for Prefix {
    type Error = PrefixError;
    fn try_from(s: String) -> Result<Prefix, PrefixError> {
        s.parse()
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which flows something applies to. Every given field must match (AND);
/// within a list any entry may match (OR); an absent or empty field matches
/// everything, so the default filter matches every flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    /// IP protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Ports, matched against either endpoint of the flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Prefixes, matched against either endpoint's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<Prefix>,
}

impl FlowFilter {
    /// Whether the flow `key` passes this filter.
    pub fn matches(&self, key: &FlowKey) -> bool {
        let (lo, hi) = (key.lo(), key.hi());
        let proto_ok = match self.protocol {
            Some(p) => p.0 == key.proto(),
            None => true,
        };
        proto_ok
            && (self.ports.is_empty() || self.ports.iter().any(|&p| p == lo.1 || p == hi.1))
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| p.contains(lo.0) || p.contains(hi.0)))
    }
}

/// One subscription in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Event type path, e.g. `PKT/TCP`; subtypes are delivered too.
    pub event: String,
    /// Only events of flows passing this filter; `None` = all flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FlowFilter>,
}

/// What an NF sends when it registers: who it is, what it consumes and
/// produces, and what it is allowed to change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfManifest {
    /// Unique NF name, the key chains refer to (e.g. `acl-firewall`).
    pub name: String,
    /// The NF's own version string (informational).
    pub version: String,
    /// Event types it wants, with optional flow filters.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// Event type paths it publishes (built-in or declared).
    #[serde(default)]
    pub publications: Vec<String>,
    /// New event type paths it declares, each under an existing type.
    #[serde(default)]
    pub declares: Vec<String>,
    /// Whether it writes packets in place (then it never runs in parallel).
    #[serde(default)]
    pub modifies_packets: bool,
    /// Whether it asks stacks for changes (e.g. `FLOW/TCP/TERMINATE`).
    #[serde(default)]
    pub requests_stack_actions: bool,
}

/// Stable id of a registered NF name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NfId(pub u32);

impl fmt::Display for NfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nf#{}", self.0)
    }
}

/// A subscription with its path resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSubscription {
    /// The subscribed type.
    pub event: EventTypeId,
    /// Its flow filter, if any.
    pub filter: Option<FlowFilter>,
}

/// A registered NF: its manifest and the resolved ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfEntry {
    /// Its id (stable across re-registration).
    pub id: NfId,
    /// The manifest it registered with.
    pub manifest: NfManifest,
    /// Resolved subscriptions, in manifest order.
    pub subscriptions: Vec<ResolvedSubscription>,
    /// Resolved publications, in manifest order.
    pub publications: Vec<EventTypeId>,
    /// Ids of the types its manifest declares, in manifest order.
    pub declared: Vec<EventTypeId>,
}

impl NfEntry {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// Why a manifest was refused. Messages name the NF and the path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is empty, too long or has other characters.
    #[error("bad NF name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName {
        /// The refused name.
        name: String,
    },
    /// A declared, subscribed or published path is bad or unknown.
    #[error("NF '{nf}': manifest key `{what}`: {source}")]
    Type {
        /// The NF name.
        nf: String,
        /// Which manifest list the path came from: `declares`, `subscriptions`, `publications`.
        what: &'static str,
        /// The underlying path error (it names the path).
        source: EventTypeError,
    },
    /// A stack-action type is published without `requests_stack_actions`.
    #[error(
        "NF '{nf}' publishes {event}, a stack action, but its manifest says requests_stack_actions = false; \
         set it to true"
    )]
    StackActionNotRequested {
        /// The NF name.
        nf: String,
        /// The stack-action path.
        event: String,
    },
}

/// Why a wiring was refused. Messages name the types by path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WiringError {
    /// A published type is not the subscribed type or below it.
    #[error("{published} is not {subscribed} or a subtype of it")]
    Mismatch {
        /// Published type path.
        published: String,
        /// Subscribed type path.
        subscribed: String,
    },
    /// Between two named NFs: the subscriber subscribes to nothing above
    /// the published type.
    #[error("{}", nf_mismatch(publisher, published, subscriber, subscribed))]
    NfMismatch {
        /// Publisher NF name.
        publisher: String,
        /// The published path being wired.
        published: String,
        /// Subscriber NF name.
        subscriber: String,
        /// Every path the subscriber subscribes to.
        subscribed: Vec<String>,
    },
    /// The publisher does not publish the type (nor a supertype of it).
    #[error(
        "NF '{nf}' does not publish {event} (it publishes {}); add it to the manifest's publications",
        list(publishes)
    )]
    NotPublished {
        /// Publisher NF name.
        nf: String,
        /// The path being wired.
        event: String,
        /// What it does publish.
        publishes: Vec<String>,
    },
    /// An NF name is not registered.
    #[error("NF '{name}' is not registered")]
    UnknownNf {
        /// The unknown name.
        name: String,
    },
    /// The event path is bad or unknown.
    #[error(transparent)]
    Type(#[from] EventTypeError),
    /// An id the registry does not know (not from this registry).
    #[error("event type id {0} is not known to this registry")]
    UnknownId(EventTypeId),
}

fn list(paths: &[String]) -> String {
    if paths.is_empty() {
        "nothing".to_string()
    } else {
        paths.join(", ")
    }
}

fn nf_mismatch(publisher: &str, published: &str, subscriber: &str, subscribed: &[String]) -> String {
    let head = format!("NF '{publisher}' publishes {published} but '{subscriber}' subscribes to {}", list(subscribed));
    match subscribed {
        [] => format!("{head}: subscribe '{subscriber}' to {published} or a supertype of it"),
        [one] => format!("{head}: {published} is not {one} or a subtype of it"),
        _ => format!("{head}: {published} is not a subtype of any of them"),
    }
}

pub(crate) fn valid_nf_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The registered NFs and the event types they declared.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: EventTypeRegistry,
    nfs: BTreeMap<String, NfEntry>,
    /// Every name ever registered keeps its id.
    ids: BTreeMap<String, NfId>,
    next_id: u32,
}

impl Registry {
    /// An empty registry with the built-in event types.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The event type names and ids, built-in and declared.
    pub fn types(&self) -> &EventTypeRegistry {
        &self.types
    }

    /// Register (or re-register) an NF: declare its new types, resolve
    /// every path, and store it. All or nothing.
    pub fn register(&mut self, manifest: NfManifest) -> Result<NfId, RegistryError> {
        let nf = manifest.name.clone();
        if !valid_nf_name(&nf) {
            return Err(RegistryError::BadName { name: nf });
        }
        let type_err = |what, source| RegistryError::Type { nf: nf.clone(), what, source };
        // Declare into a copy so that a failure leaves nothing declared.
        let mut types = self.types.clone();
        // Parents before children, whatever the manifest's order.
        let mut order: Vec<&String> = manifest.declares.iter().collect();
        order.sort_by_key(|p| p.matches('/').count());
        for path in order {
            types.declare(path).map_err(|e| type_err("declares", e))?;
        }
        let declared = manifest.declares.iter().map(|p| types.resolve(p)).collect::<Result<Vec<_>, _>>();
        let declared = declared.map_err(|e| type_err("declares", e))?;
        let mut subscriptions = Vec::with_capacity(manifest.subscriptions.len());
        for s in &manifest.subscriptions {
            let event = types.resolve(&s.event).map_err(|e| type_err("subscriptions", e))?;
            subscriptions.push(ResolvedSubscription { event, filter: s.filter.clone() });
        }
        let mut publications = Vec::with_capacity(manifest.publications.len());
        for p in &manifest.publications {
            let id = types.resolve(p).map_err(|e| type_err("publications", e))?;
            if id.is_subtype_of(FLOW_TCP_TERMINATE) && !manifest.requests_stack_actions {
                return Err(RegistryError::StackActionNotRequested { nf, event: p.clone() });
            }
            publications.push(id);
        }
        let id = match self.ids.get(&nf) {
            Some(&id) => id,
            None => {
                let id = NfId(self.next_id);
                self.next_id += 1;
                self.ids.insert(nf.clone(), id);
                id
            }
        };
        self.types = types;
        self.nfs.insert(nf, NfEntry { id, manifest, subscriptions, publications, declared });
        Ok(id)
    }

    /// Remove an NF; returns its entry if it was registered. Its name keeps
    /// its id and its declared types stay.
    pub fn unregister(&mut self, name: &str) -> Option<NfEntry> {
        self.nfs.remove(name)
    }

    /// The NF registered as `name`.
    pub fn get(&self, name: &str) -> Option<&NfEntry> {
        self.nfs.get(name)
    }

    /// Every registered NF, by name.
    pub fn list(&self) -> impl Iterator<Item = &NfEntry> + '_ {
        self.nfs.values()
    }

    fn path(&self, id: EventTypeId) -> Result<String, WiringError> {
        self.types.path_of(id).map(str::to_string).ok_or(WiringError::UnknownId(id))
    }

    /// Accept a wiring when the published type equals or is a subtype of
    /// the subscribed type; the refusal names both by path.
    pub fn check_wiring(&self, publisher_type: EventTypeId, subscriber_type: EventTypeId) -> Result<(), WiringError> {
        let published = self.path(publisher_type)?;
        let subscribed = self.path(subscriber_type)?;
        if publisher_type.is_subtype_of(subscriber_type) {
            Ok(())
        } else {
            Err(WiringError::Mismatch { published, subscribed })
        }
    }

    /// Check that `publisher_nf` publishes `event_path` (or a supertype of
    /// it) and that `subscriber_nf` subscribes to it or a supertype.
    pub fn wire(&self, publisher_nf: &str, event_path: &str, subscriber_nf: &str) -> Result<(), WiringError> {
        let unknown = |name: &str| WiringError::UnknownNf { name: name.to_string() };
        let publisher = self.get(publisher_nf).ok_or_else(|| unknown(publisher_nf))?;
        let subscriber = self.get(subscriber_nf).ok_or_else(|| unknown(subscriber_nf))?;
        let event = self.types.resolve(event_path)?;
        if !publisher.publications.iter().any(|&p| event.is_subtype_of(p)) {
            return Err(WiringError::NotPublished {
                nf: publisher_nf.to_string(),
                event: event_path.to_string(),
                publishes: publisher.manifest.publications.clone(),
            });
        }
        if subscriber.subscriptions.iter().any(|s| self.check_wiring(event, s.event).is_ok()) {
            return Ok(());
        }
        Err(WiringError::NfMismatch {
            publisher: publisher_nf.to_string(),
            published: event_path.to_string(),
            subscriber: subscriber_nf.to_string(),
            subscribed: subscriber.manifest.subscriptions.iter().map(|s| s.event.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use ustack::event::{FLOW, FLOW_TCP, FLOW_TCP_SYN, PKT, PKT_TCP};

    fn manifest(name: &str, subs: &[&str], pubs: &[&str], declares: &[&str]) -> NfManifest {
        NfManifest {
            name: name.into(),
            version: "1.0".into(),
            subscriptions: subs.iter().map(|s| Subscription { event: s.to_string(), filter: None }).collect(),
            publications: pubs.iter().map(|s| s.to_string()).collect(),
            declares: declares.iter().map(|s| s.to_string()).collect(),
            modifies_packets: false,
            requests_stack_actions: false,
        }
    }

    fn v4(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, proto: u8) -> FlowKey {
        FlowKey::from_v4(Ipv4Addr::from(a), ap, Ipv4Addr::from(b), bp, proto).0
    }

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "10.0.0.0/8".parse().unwrap();
        assert_eq!(p.len(), 8);
        assert!(p.contains("10.1.2.3".parse().unwrap()));
        assert!(!p.contains("11.0.0.1".parse().unwrap()));
        assert!(!p.contains("::ffff:10.0.0.1".parse().unwrap()));
        let h: Prefix = "192.168.1.7".parse().unwrap();
        assert_eq!(h.to_string(), "192.168.1.7/32");
        let z: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(z.is_empty() && z.contains("1.2.3.4".parse().unwrap()));
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all6: Prefix = "::/0".parse().unwrap();
        assert!(all6.contains("fe80::1".parse().unwrap()));
        let e = "10.0.0.1/8".parse::<Prefix>().unwrap_err();
        assert_eq!(e.to_string(), "bad prefix \"10.0.0.1/8\": host bits are set; did you mean 10.0.0.0/8?");
        for bad in ["10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/x", "host/8", "", "1.2.3.4/-1"]
        {
            let e = bad.parse::<Prefix>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        // serde round trip
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(j, "\"10.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Prefix>(&j).unwrap(), p);
        assert!(serde_json::from_str::<Prefix>("\"10.0.0.0/40\"").is_err());
    }

    #[test]
    fn protocols_parse() {
        let f: FlowFilter = serde_json::from_str(r#"{"protocol":"TCP"}"#).unwrap();
        assert_eq!(f.protocol, Some(Protocol::TCP));
        let f: FlowFilter = serde_json::from_str(r#"{"protocol":132}"#).unwrap();
        assert_eq!(f.protocol, Some(Protocol(132)));
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"protocol":132}"#);
        let f: FlowFilter = serde_json::from_str(r#"{"protocol":"udp","ports":[53]}"#).unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"protocol":"udp","ports":[53]}"#);
        let e = serde_json::from_str::<FlowFilter>(r#"{"protocol":"sctpx"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown protocol \"sctpx\""), "{e}");
        assert!(serde_json::from_str::<FlowFilter>(r#"{"protocol":300}"#).is_err());
        assert!(serde_json::from_str::<FlowFilter>(r#"{"protocol":-1}"#).is_err());
        let e = serde_json::from_str::<FlowFilter>(r#"{"port":[80]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn filter_matches_either_side() {
        let web = v4([10, 0, 0, 5], 40000, [93, 184, 216, 34], 80, 6);
        let dns = v4([10, 0, 0, 5], 5353, [8, 8, 8, 8], 53, 17);
        assert!(FlowFilter::default().matches(&web) && FlowFilter::default().matches(&dns));
        let f = FlowFilter { protocol: Some(Protocol::TCP), ports: vec![80, 443], prefixes: vec![] };
        assert!(f.matches(&web));
        assert!(!f.matches(&dns));
        // Port on the lo side too.
        assert!(FlowFilter { ports: vec![40000], ..Default::default() }.matches(&web));
        let net = FlowFilter { prefixes: vec!["93.184.0.0/16".parse().unwrap()], ..Default::default() };
        assert!(net.matches(&web) && !net.matches(&dns));
        let both = FlowFilter {
            protocol: Some(Protocol::UDP),
            ports: vec![53],
            prefixes: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(both.matches(&dns) && !both.matches(&web));
        let k6 = FlowKey::from_v6("2001:db8::1".parse().unwrap(), 1234, Ipv6Addr::LOCALHOST, 443, 6).0;
        let f6 = FlowFilter { prefixes: vec!["2001:db8::/32".parse().unwrap()], ..Default::default() };
        assert!(f6.matches(&k6) && !f6.matches(&web) && !net.matches(&k6));
    }

    #[test]
    fn manifest_json_round_trip_and_defaults() {
        let j = r#"{"name":"ids","version":"0.3","subscriptions":[{"event":"DATA_RDY",
            "filter":{"protocol":"tcp","ports":[80]}}],"publications":["FLOW/ALERT"],"declares":["FLOW/ALERT"]}"#;
        let m: NfManifest = serde_json::from_str(j).unwrap();
        assert!(!m.modifies_packets && !m.requests_stack_actions);
        assert_eq!(m.subscriptions[0].filter.as_ref().unwrap().ports, vec![80]);
        let back: NfManifest = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let e = serde_json::from_str::<NfManifest>(r#"{"name":"x","version":"1","modifies":true}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `modifies`"), "{e}");
    }

    #[test]
    fn register_declares_and_resolves() {
        let mut r = Registry::new();
        let ids = r.register(manifest("ids", &["DATA_RDY", "PKT/TCP"], &["FLOW/ALERT"], &["FLOW/ALERT"])).unwrap();
        let alert = r.types().lookup("FLOW/ALERT").unwrap();
        assert!(alert.is_subtype_of(FLOW));
        let e = r.get("ids").unwrap();
        assert_eq!(e.id, ids);
        assert_eq!(e.name(), "ids");
        assert_eq!(e.publications, vec![alert]);
        assert_eq!(e.declared, vec![alert]);
        assert_eq!(e.subscriptions[1].event, PKT_TCP);
        // Children declared before parents in the manifest still work.
        let m = manifest("http", &["PKT/TCP"], &["PKT/TCP/HTTP/REQ"], &["PKT/TCP/HTTP/REQ", "PKT/TCP/HTTP"]);
        let http = r.register(m).unwrap();
        assert_ne!(http, ids);
        // Another NF may subscribe to a type someone else declared.
        r.register(manifest("logger", &["FLOW/ALERT", "PKT/TCP/HTTP"], &[], &[])).unwrap();
        let names: Vec<&str> = r.list().map(NfEntry::name).collect();
        assert_eq!(names, ["http", "ids", "logger"]);
    }

    #[test]
    fn re_register_replaces_and_keeps_id() {
        let mut r = Registry::new();
        let a = r.register(manifest("counter", &["PKT"], &[], &[])).unwrap();
        let b = r.register(manifest("other", &["PKT"], &[], &[])).unwrap();
        let mut m = manifest("counter", &["FLOW"], &[], &[]);
        m.version = "2.0".into();
        assert_eq!(r.register(m).unwrap(), a);
        assert_eq!(r.get("counter").unwrap().manifest.version, "2.0");
        assert_eq!(r.get("counter").unwrap().subscriptions[0].event, FLOW);
        assert_eq!(r.list().count(), 2);
        // After unregister the name comes back with the same id.
        assert_eq!(r.unregister("counter").map(|e| e.id), Some(a));
        assert!(r.get("counter").is_none());
        assert!(r.unregister("counter").is_none());
        assert_eq!(r.register(manifest("counter", &["PKT"], &[], &[])).unwrap(), a);
        assert_ne!(a, b);
    }

    #[test]
    fn register_refusals_name_the_path_and_change_nothing() {
        let mut r = Registry::new();
        let e = r.register(manifest("ids", &["PKT/SCTP"], &[], &["FLOW/ALERT"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NF 'ids': manifest key `subscriptions`: unknown event type PKT/SCTP; use a built-in type or one an NF declares"
        );
        // FLOW/ALERT was not half-declared.
        assert_eq!(r.types().lookup("FLOW/ALERT"), None);
        assert!(r.get("ids").is_none());
        let e = r.register(manifest("ids", &[], &["FLOW/ALERT"], &[])).unwrap_err();
        assert!(
            e.to_string().starts_with("NF 'ids': manifest key `publications`: unknown event type FLOW/ALERT"),
            "{e}"
        );
        let e = r.register(manifest("ids", &[], &[], &["NOPE/X"])).unwrap_err();
        assert!(e.to_string().contains("its parent NOPE is not a known type"), "{e}");
        let e = r.register(manifest("ids", &[], &[], &["FLOW/alert"])).unwrap_err();
        assert!(
            e.to_string().starts_with("NF 'ids': manifest key `declares`: bad event type path \"FLOW/alert\""),
            "{e}"
        );
        for bad in ["", "has space", "a/b", &"x".repeat(65)] {
            let e = r.register(manifest(bad, &[], &[], &[])).unwrap_err();
            assert!(matches!(e, RegistryError::BadName { .. }), "{bad}");
        }
        let e = r.register(manifest("killer", &["PKT/TCP"], &["FLOW/TCP/TERMINATE"], &[])).unwrap_err();
        assert!(matches!(e, RegistryError::StackActionNotRequested { .. }), "{e}");
        let mut m = manifest("killer", &["PKT/TCP"], &["FLOW/TCP/TERMINATE"], &[]);
        m.requests_stack_actions = true;
        r.register(m).unwrap();
        // A failed re-registration keeps the old entry.
        let e = r.register(manifest("killer", &["BAD"], &[], &[])).unwrap_err();
        assert!(e.to_string().contains("BAD"));
        assert_eq!(r.get("killer").unwrap().publications, vec![FLOW_TCP_TERMINATE]);
    }

    #[test]
    fn check_wiring_accepts_subtypes_only() {
        let r = Registry::new();
        assert!(r.check_wiring(FLOW_TCP_SYN, FLOW_TCP).is_ok());
        assert!(r.check_wiring(FLOW_TCP_SYN, FLOW).is_ok());
        assert!(r.check_wiring(PKT_TCP, PKT_TCP).is_ok());
        let e = r.check_wiring(FLOW_TCP, FLOW_TCP_SYN).unwrap_err();
        assert_eq!(e.to_string(), "FLOW/TCP is not FLOW/TCP/SYN or a subtype of it");
        let e = r.check_wiring(PKT_TCP, FLOW).unwrap_err();
        assert_eq!(e.to_string(), "PKT/TCP is not FLOW or a subtype of it");
        let stray = EventTypeId::from_levels(&[9, 200]).unwrap();
        assert!(matches!(r.check_wiring(stray, PKT), Err(WiringError::UnknownId(_))));
    }

    #[test]
    fn wire_between_nfs() {
        let mut r = Registry::new();
        r.register(manifest("ids", &["DATA_RDY"], &["FLOW/ALERT"], &["FLOW/ALERT"])).unwrap();
        r.register(manifest("logger", &["PKT/TCP"], &[], &[])).unwrap();
        r.register(manifest("alerts", &["FLOW"], &[], &[])).unwrap();
        r.register(manifest("multi", &["PKT/TCP", "DATA_RDY"], &[], &[])).unwrap();
        r.register(manifest("deaf", &[], &["PKT"], &[])).unwrap();
        assert!(r.wire("ids", "FLOW/ALERT", "alerts").is_ok());
        let e = r.wire("ids", "FLOW/ALERT", "logger").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NF 'ids' publishes FLOW/ALERT but 'logger' subscribes to PKT/TCP: FLOW/ALERT is not PKT/TCP or a subtype of it"
        );
        let e = r.wire("ids", "FLOW/ALERT", "multi").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NF 'ids' publishes FLOW/ALERT but 'multi' subscribes to PKT/TCP, DATA_RDY: \
             FLOW/ALERT is not a subtype of any of them"
        );
        let e = r.wire("ids", "FLOW/ALERT", "deaf").unwrap_err();
        assert!(e.to_string().contains("subscribes to nothing"), "{e}");
        // A publication covers its subtypes.
        assert!(r.wire("deaf", "PKT/TCP", "logger").is_ok());
        assert!(r.wire("deaf", "PKT/TCP", "multi").is_ok());
        let e = r.wire("ids", "PKT/TCP", "logger").unwrap_err();
        assert_eq!(
            e.to_string(),
            "NF 'ids' does not publish PKT/TCP (it publishes FLOW/ALERT); add it to the manifest's publications"
        );
        let e = r.wire("ids", "FLOW/NOPE", "logger").unwrap_err();
        assert!(e.to_string().contains("FLOW/NOPE"));
        let e = r.wire("ghost", "FLOW/ALERT", "logger").unwrap_err();
        assert_eq!(e.to_string(), "NF 'ghost' is not registered");
        assert!(matches!(r.wire("ids", "FLOW/ALERT", "ghost"), Err(WiringError::UnknownNf { .. })));
    }

    proptest! {
        /// A prefix contains exactly the addresses whose top `len` bits
        /// equal its own.
        #[test]
        fn prefix_contains_matches_bit_model(net in any::<u32>(), len in 0u8..=32, addr in any::<u32>()) {
            let masked = if len == 0 { 0 } else { net & (u32::MAX << (32 - u32::from(len))) };
            let p = Prefix::new(IpAddr::V4(Ipv4Addr::from(masked)), len).unwrap();
            let model = len == 0 || (addr ^ masked) >> (32 - u32::from(len)) == 0;
            prop_assert_eq!(p.contains(IpAddr::V4(Ipv4Addr::from(addr))), model);
            prop_assert_eq!(p.to_string().parse::<Prefix>().unwrap(), p);
        }
    }
}
