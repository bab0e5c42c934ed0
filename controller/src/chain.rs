//! Chains: which NFs a flow runs through, in which order, and what happens
//! when one of them is missing.
//!
//! Owns the chain file format (TOML, see `examples/chain.toml`), its
//! validation ([`ChainSet::parse`]) and its compilation against the NF
//! [`Registry`] into ordered [`Stage`]s ([`ChainSet::compile`]), plus flow
//! selection ([`CompiledChains::select`]). It does not apply chains to the
//! data path; the runtime does that with the compiled form.
//!
//! ```toml
//! [[chain]]
//! name = "web"
//! nfs = ["acl-firewall", ["counter", "pcap-tap"], "logger"]  # nested = parallel group
//! [chain.match]                # a FlowFilter; omitted = every flow
//! protocol = "tcp"
//! ports = [80, 443]
//! [chain.policy]               # per NF; default fail-closed
//! counter = "fail-open"
//! ```
//!
//! `on_unmonitored = "drop" | "pass"` (under `[[chain]]`) says what happens
//! to a TCP flow the monitor cannot track or reassemble for the chain's
//! subscribers (its table full, no stream ring free); by default `drop`
//! when any NF of the chain is fail-closed, else `pass`.
//!
//! Rules, each refused with a one-line error naming the file, the chain and
//! the key or NF:
//!
//! - unknown keys anywhere; a bad protocol, port or CIDR prefix; a bad
//!   policy value (only `fail-open` and `fail-closed`);
//! - no `[[chain]]` at all; two chains with one name; an empty chain or
//!   parallel group; an NF twice in one chain; a policy for an NF that is not
//!   in the chain (a typo would otherwise be silently ignored);
//! - at compile time: an NF that is not registered and has no explicit
//!   policy (chains may be applied before their NFs start, but then the
//!   operator must say what happens meanwhile); an NF whose manifest says
//!   `modifies_packets` inside a parallel group; an NF that subscribes only
//!   to TCP events in a chain that matches only another protocol.
//!
//! A one-NF parallel group compiles to a single stage. Compiling is a
//! snapshot of the registry: recompile when NFs (re-)register, since an NF
//! unknown at compile time was not checked for `modifies_packets`.
//!
//! Policy: [`Policy::FailOpen`] skips the NF while it is absent or dead (the
//! packet goes on to the next stage); [`Policy::FailClosed`], the default,
//! drops the packet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use ustack::flow::FlowKey;

use crate::registry::{valid_nf_name, FlowFilter, NfId, Registry};

/// What happens to a packet when an NF of the chain is absent or dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Skip the NF: the packet goes on to the next stage.
    FailOpen,
    /// Drop the packet (the default).
    #[default]
    FailClosed,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::FailOpen => "fail-open",
            Policy::FailClosed => "fail-closed",
        })
    }
}

/// One entry of a chain's `nfs` list as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageSpec {
    /// `"name"`: one NF.
    Single(String),
    /// `["a", "b"]`: NFs that see the packet in parallel.
    Parallel(Vec<String>),
}

impl StageSpec {
    /// The NF names in this entry.
    pub fn nfs(&self) -> &[String] {
        match self {
            StageSpec::Single(n) => std::slice::from_ref(n),
            StageSpec::Parallel(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for StageSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StageSpec, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StageSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an NF name or an array of NF names (a parallel group)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StageSpec, E> {
                Ok(StageSpec::Single(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StageSpec, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(StageSpec::Parallel(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[chain]]` as written (validated by [`ChainSet::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    /// Unique chain name.
    pub name: String,
    /// Which flows it applies to; every flow when omitted.
    #[serde(rename = "match", default)]
    pub filter: FlowFilter,
    /// Its stages, in order.
    pub nfs: Vec<StageSpec>,
    /// Explicit per-NF policies.
    #[serde(default)]
    pub policy: BTreeMap<String, Policy>,
    /// What happens to a flow the TCP monitor cannot track or reassemble
    /// for this chain's subscribers (its table full, no stream ring free).
    /// Default: `drop` when any NF of the chain is fail-closed, else `pass`.
    #[serde(default)]
    pub on_unmonitored: Option<Unmonitored>,
}

/// `on_unmonitored`: a flow the monitor cannot serve is dropped (the
/// chain's NFs would not see what they subscribed to) or passed unseen.
/// Either way it is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmonitored {
    Drop,
    Pass,
}

impl fmt::Display for Unmonitored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unmonitored::Drop => "drop",
            Unmonitored::Pass => "pass",
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    #[serde(default)]
    chain: Vec<ChainSpec>,
}

/// Why a chain file was refused. Every message is one line starting with
/// the file it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The file cannot be read.
    #[error("cannot read chain file {origin}: {msg}")]
    Read {
        /// The file.
        origin: String,
        /// The I/O error.
        msg: String,
    },
    /// Not valid TOML.
    #[error("{origin}:{line}:{column}: bad TOML: {msg}")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        msg: String,
    },
    /// A key is unknown, missing or has a bad value.
    #[error("{}", key_message(origin, chain.as_deref(), key, msg, *line))]
    Key {
        /// The file.
        origin: String,
        /// The chain, as `chain 'web'` or `chain[2]` when it has no name.
        chain: Option<String>,
        /// The key path inside the chain (or the file, outside one); empty
        /// when the error is about the chain table itself.
        key: String,
        /// What is wrong.
        msg: String,
        /// 1-based line, when known.
        line: Option<usize>,
    },
    /// The file has no `[[chain]]`.
    #[error("{origin}: no [[chain]] found; a chain file holds one or more [[chain]] tables")]
    NoChains {
        /// The file.
        origin: String,
    },
    /// A rule about one chain is broken (the message says which and how to
    /// fix it).
    #[error("{origin}: chain '{chain}': {msg}")]
    Chain {
        /// The file.
        origin: String,
        /// The chain name.
        chain: String,
        /// What is wrong.
        msg: String,
    },
}

fn key_message(origin: &str, chain: Option<&str>, key: &str, msg: &str, line: Option<usize>) -> String {
    let mut out = format!("{origin}: ");
    if let Some(c) = chain {
        out.push_str(&format!("{c}: "));
    }
    if !key.is_empty() {
        out.push_str(&format!("key `{key}`: "));
    }
    out.push_str(msg);
    if let Some(l) = line {
        out.push_str(&format!(" (line {l})"));
    }
    out
}

/// A validated chain file, not yet checked against the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSet {
    origin: String,
    chains: Vec<ChainSpec>,
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl ChainSet {
    /// Read and parse the chain file at `path`.
    pub fn load(path: &std::path::Path) -> Result<ChainSet, ChainError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChainError::Read { origin: origin.clone(), msg: e.to_string() })?;
        ChainSet::parse(&text, &origin)
    }

    /// Parse and validate chain file `text`; `origin` (usually the file
    /// name) starts every error message.
    pub fn parse(text: &str, origin: &str) -> Result<ChainSet, ChainError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            ChainError::Syntax { origin: origin.to_string(), line, column, msg: one_line(e.message()) }
        })?;
        let file: ChainFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| key_error(e, &table, text, origin))?;
        if file.chain.is_empty() {
            return Err(ChainError::NoChains { origin: origin.to_string() });
        }
        let mut names = BTreeSet::new();
        for c in &file.chain {
            let err = |msg: String| ChainError::Chain { origin: origin.to_string(), chain: c.name.clone(), msg };
            if !valid_nf_name(&c.name) {
                return Err(err("bad chain name: use 1 to 64 letters, digits, '-', '_' or '.'".into()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(err("two chains have this name; chain names must be unique".into()));
            }
            validate_stages(c).map_err(err)?;
        }
        Ok(ChainSet { origin: origin.to_string(), chains: file.chain })
    }

    /// Where it came from (as given to [`parse`](Self::parse)).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The chains, in file order.
    pub fn chains(&self) -> &[ChainSpec] {
        &self.chains
    }

    /// Check every chain against the registered NFs and build the stages.
    pub fn compile(&self, registry: &Registry) -> Result<CompiledChains, ChainError> {
        let mut chains = Vec::with_capacity(self.chains.len());
        for c in &self.chains {
            let err = |msg: String| ChainError::Chain { origin: self.origin.clone(), chain: c.name.clone(), msg };
            let mut stages = Vec::with_capacity(c.nfs.len());
            for spec in &c.nfs {
                let parallel = spec.nfs().len() > 1;
                let mut members = Vec::with_capacity(spec.nfs().len());
                for name in spec.nfs() {
                    let explicit = c.policy.get(name).copied();
                    let entry = registry.get(name);
                    if entry.is_none() && explicit.is_none() {
                        return Err(err(format!(
                            "NF '{name}' is not registered; start it first, or give it a policy \
                             ({name} = \"fail-open\" or \"fail-closed\" under [chain.policy]) to apply the chain before it starts"
                        )));
                    }
                    if let (Some(e), Some(p)) = (entry, c.filter.protocol) {
                        let subs = &e.manifest.subscriptions;
                        if p.0 != 6 && !subs.is_empty() && subs.iter().all(|s| tcp_only(&s.event)) {
                            let names: Vec<&str> = subs.iter().map(|s| s.event.as_str()).collect();
                            return Err(err(format!(
                                "NF '{name}' subscribes only to TCP events ({}) but chain '{}' matches protocol {} flows only: \
                                 it would never see an event; match tcp, or put an NF that handles these flows in this chain",
                                names.join(", "),
                                c.name,
                                p
                            )));
                        }
                    }
                    if parallel && entry.is_some_and(|e| e.manifest.modifies_packets) {
                        return Err(err(format!(
                            "NF '{name}' modifies packets and cannot sit in a parallel group; give it a stage of its own"
                        )));
                    }
                    members.push(StageNf {
                        name: name.clone(),
                        id: entry.map(|e| e.id),
                        policy: explicit.unwrap_or_default(),
                    });
                }
                stages.push(if parallel { Stage::Parallel(members) } else { Stage::Single(members.remove(0)) });
            }
            let any_closed = stages.iter().any(|st| st.nfs().iter().any(|n| n.policy == Policy::FailClosed));
            let on_unmonitored =
                c.on_unmonitored.unwrap_or(if any_closed { Unmonitored::Drop } else { Unmonitored::Pass });
            chains.push(CompiledChain { name: c.name.clone(), filter: c.filter.clone(), stages, on_unmonitored });
        }
        Ok(CompiledChains { chains })
    }
}

/// Event types only TCP flows raise.
fn tcp_only(event: &str) -> bool {
    let under = |root: &str| event == root || event.strip_prefix(root).is_some_and(|r| r.starts_with('/'));
    under("PKT/TCP") || under("FLOW/TCP") || under("DATA_RDY")
}

/// The stage rules that need no registry.
fn validate_stages(c: &ChainSpec) -> Result<(), String> {
    if c.nfs.is_empty() {
        return Err("`nfs` is empty; list at least one NF".into());
    }
    let mut seen = BTreeSet::new();
    for (i, spec) in c.nfs.iter().enumerate() {
        if spec.nfs().is_empty() {
            return Err(format!("key `nfs[{i}]`: empty parallel group; remove it or list NFs in it"));
        }
        for name in spec.nfs() {
            if !valid_nf_name(name) {
                return Err(format!("bad NF name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"));
            }
            if !seen.insert(name.as_str()) {
                return Err(format!("NF '{name}' appears twice; an NF may appear once per chain"));
            }
        }
    }
    if let Some(stray) = c.policy.keys().find(|k| !seen.contains(k.as_str())) {
        return Err(format!("key `policy.{stray}`: '{stray}' is not in this chain's nfs; fix the name or remove it"));
    }
    Ok(())
}

/// Turn a deserialization error into a [`ChainError::Key`] naming the chain
/// (by name when the file gives one) and the key inside it.
fn key_error(
    e: serde_path_to_error::Error<toml::de::Error>,
    table: &toml::Table,
    text: &str,
    origin: &str,
) -> ChainError {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = e.path().iter().collect();
    let mut chain = None;
    let mut rest: &[&Segment] = &segments;
    if let [Segment::Map { key }, Segment::Seq { index }, tail @ ..] = segments.as_slice() {
        if key == "chain" {
            let name =
                table.get("chain").and_then(|c| c.get(*index)).and_then(|c| c.get("name")).and_then(|n| n.as_str());
            chain = Some(match name {
                Some(n) => format!("chain '{n}'"),
                None => format!("chain[{index}]"),
            });
            rest = tail;
        }
    }
    let mut key = String::new();
    for s in rest {
        match s {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
            }
            Segment::Enum { variant } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    let inner = e.into_inner();
    let line = inner.span().map(|s| line_col(text, s.start).0);
    ChainError::Key { origin: origin.to_string(), chain, key, msg: one_line(inner.message()), line }
}

/// One NF in a compiled stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageNf {
    /// The NF name.
    pub name: String,
    /// Its id if it was registered at compile time.
    pub id: Option<NfId>,
    /// What happens when it is absent or dead.
    pub policy: Policy,
}

/// One step of a compiled chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// One NF.
    Single(StageNf),
    /// Read-only NFs that see the packet at once; the stage completes when
    /// all have answered.
    Parallel(Vec<StageNf>),
}

impl Stage {
    /// The NFs of this stage.
    pub fn nfs(&self) -> &[StageNf] {
        match self {
            Stage::Single(n) => std::slice::from_ref(n),
            Stage::Parallel(v) => v,
        }
    }
}

/// A chain ready for the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledChain {
    /// Its name.
    pub name: String,
    /// Which flows it applies to.
    pub filter: FlowFilter,
    /// Its stages, in order.
    pub stages: Vec<Stage>,
    /// Resolved `on_unmonitored` (explicit, or from the stages' policies).
    pub on_unmonitored: Unmonitored,
}

impl CompiledChain {
    /// Whether the flow `key` runs through this chain's match.
    pub fn matches(&self, key: &FlowKey) -> bool {
        self.filter.matches(key)
    }
}

/// Every chain of a file, compiled, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledChains {
    chains: Vec<CompiledChain>,
}

impl CompiledChains {
    /// The first chain whose match accepts `key`; `None` when none does.
    pub fn select(&self, key: &FlowKey) -> Option<&CompiledChain> {
        self.chains.iter().find(|c| c.matches(key))
    }

    /// The chain called `name`.
    pub fn get(&self, name: &str) -> Option<&CompiledChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// Every chain, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &CompiledChain> + '_ {
        self.chains.iter()
    }

    /// Number of chains.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether there are no chains.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{NfManifest, Subscription};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const EXAMPLE: &str = include_str!("../../examples/chain.toml");

    fn nf(name: &str, modifies: bool) -> NfManifest {
        NfManifest {
            name: name.into(),
            version: "1".into(),
            subscriptions: vec![Subscription { event: "PKT".into(), filter: None }],
            publications: vec![],
            declares: vec![],
            modifies_packets: modifies,
            requests_stack_actions: false,
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        for (name, modifies) in [("acl-firewall", true), ("counter", false), ("logger", false), ("dns-guard", false)] {
            r.register(nf(name, modifies)).unwrap();
        }
        r
    }

    #[test]
    fn on_unmonitored_defaults_from_the_policies_and_can_be_set() {
        let r = registry();
        let compile = |text: &str| ChainSet::parse(text, "c.toml").unwrap().compile(&r).unwrap();
        let base = "[[chain]]\nname = \"a\"\nnfs = [\"counter\"]\n";
        assert_eq!(compile(base).chains[0].on_unmonitored, Unmonitored::Drop, "fail-closed by default");
        let open = format!("{base}[chain.policy]\ncounter = \"fail-open\"\n");
        assert_eq!(compile(&open).chains[0].on_unmonitored, Unmonitored::Pass);
        let set = base.replace("nfs", "on_unmonitored = \"pass\"\nnfs");
        assert_eq!(compile(&set).chains[0].on_unmonitored, Unmonitored::Pass);
        let m = err(&base.replace("nfs", "on_unmonitored = \"maybe\"\nnfs"));
        assert!(m.contains("on_unmonitored") && m.contains("maybe"), "{m}");
    }

    #[test]
    fn a_tcp_only_nf_in_a_udp_only_chain_is_refused_naming_both() {
        let mut r = registry();
        let mut ids = nf("ids", false);
        ids.subscriptions = vec![
            Subscription { event: "DATA_RDY".into(), filter: None },
            Subscription { event: "FLOW/TCP".into(), filter: None },
        ];
        r.register(ids).unwrap();
        let udp = "[[chain]]\nname = \"dns\"\nnfs = [\"ids\"]\n[chain.match]\nprotocol = \"udp\"\n";
        let e = ChainSet::parse(udp, "c.toml").unwrap().compile(&r).unwrap_err().to_string();
        assert!(e.contains("NF 'ids'") && e.contains("chain 'dns'") && e.contains("DATA_RDY, FLOW/TCP"), "{e}");
        // The same NF in a TCP chain, or a PKT subscriber in the UDP chain, is fine.
        let tcp = udp.replace("\"udp\"", "\"tcp\"");
        assert!(ChainSet::parse(&tcp, "c.toml").unwrap().compile(&r).is_ok());
        let counter = udp.replace("\"ids\"", "\"counter\"");
        assert!(ChainSet::parse(&counter, "c.toml").unwrap().compile(&r).is_ok());
        assert!(tcp_only("FLOW/TCP/SYN") && tcp_only("DATA_RDY/CLIENT") && !tcp_only("FLOW") && !tcp_only("PKT"));
        assert!(!tcp_only("DATA_RDYX"));
    }

    fn v4(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, proto: u8) -> FlowKey {
        FlowKey::from_v4(Ipv4Addr::from(a), ap, Ipv4Addr::from(b), bp, proto).0
    }

    /// Parse (and compile, if parsing passes) and return the error message,
    /// checking it is one line starting with the origin.
    fn err(text: &str) -> String {
        let r = registry();
        let e = match ChainSet::parse(text, "chains.toml") {
            Ok(set) => set.compile(&r).expect_err("should be refused"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "not one line: {msg}");
        assert!(msg.starts_with("chains.toml"), "{msg}");
        msg
    }

    #[test]
    fn example_file_parses_and_compiles() {
        let set = ChainSet::parse(EXAMPLE, "examples/chain.toml").unwrap();
        assert_eq!(set.origin(), "examples/chain.toml");
        let names: Vec<&str> = set.chains().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["web", "dns", "lab"]);
        let web = &set.chains()[0];
        assert_eq!(
            web.nfs,
            vec![
                StageSpec::Single("acl-firewall".into()),
                StageSpec::Parallel(vec!["counter".into(), "pcap-tap".into()]),
                StageSpec::Single("logger".into()),
            ]
        );
        assert_eq!(web.policy.get("counter"), Some(&Policy::FailOpen));

        let r = registry();
        let compiled = set.compile(&r).unwrap();
        assert_eq!(compiled.len(), 3);
        let web = compiled.get("web").unwrap();
        let acl = r.get("acl-firewall").unwrap().id;
        assert_eq!(
            web.stages,
            vec![
                Stage::Single(StageNf { name: "acl-firewall".into(), id: Some(acl), policy: Policy::FailClosed }),
                Stage::Parallel(vec![
                    StageNf {
                        name: "counter".into(),
                        id: Some(r.get("counter").unwrap().id),
                        policy: Policy::FailOpen
                    },
                    // Not registered: allowed because its policy is explicit.
                    StageNf { name: "pcap-tap".into(), id: None, policy: Policy::FailOpen },
                ]),
                // Registered without an explicit policy: the default.
                Stage::Single(StageNf {
                    name: "logger".into(),
                    id: Some(r.get("logger").unwrap().id),
                    policy: Policy::FailClosed
                }),
            ]
        );
        assert_eq!(web.stages[1].nfs().len(), 2);
        // A one-NF group is a single stage... and "lab" is one parallel stage.
        assert!(matches!(compiled.get("lab").unwrap().stages.as_slice(), [Stage::Parallel(v)] if v.len() == 2));
        assert_eq!(compiled.iter().count(), 3);
    }

    #[test]
    fn select_picks_the_first_matching_chain() {
        let compiled = ChainSet::parse(EXAMPLE, "x").unwrap().compile(&registry()).unwrap();
        let pick = |k: &FlowKey| compiled.select(k).map(|c| c.name.as_str());
        // TCP port 80, either direction.
        assert_eq!(pick(&v4([10, 0, 0, 1], 40000, [10, 0, 0, 2], 80, 6)), Some("web"));
        assert_eq!(pick(&v4([10, 0, 0, 2], 443, [10, 0, 0, 1], 40000, 6)), Some("web"));
        // UDP 53.
        assert_eq!(pick(&v4([10, 0, 0, 1], 5353, [8, 8, 8, 8], 53, 17)), Some("dns"));
        // TCP 53 is not DNS here; UDP 80 is not web.
        assert_eq!(pick(&v4([10, 0, 0, 1], 5353, [8, 8, 8, 8], 53, 6)), None);
        assert_eq!(pick(&v4([10, 0, 0, 1], 5353, [8, 8, 8, 8], 80, 17)), None);
        // Prefix chain: any protocol and port inside 192.0.2.0/24 or 2001:db8::/32.
        assert_eq!(pick(&v4([192, 0, 2, 9], 1000, [1, 1, 1, 1], 2000, 17)), Some("lab"));
        assert_eq!(pick(&v4([192, 0, 3, 9], 1000, [1, 1, 1, 1], 2000, 17)), None);
        let k6 = FlowKey::from_v6("2001:db8::7".parse().unwrap(), 1, Ipv6Addr::LOCALHOST, 2, 132).0;
        assert_eq!(pick(&k6), Some("lab"));
        // Order matters: web traffic inside the lab prefix goes to web.
        assert_eq!(pick(&v4([192, 0, 2, 9], 1000, [1, 1, 1, 1], 80, 6)), Some("web"));
    }

    #[test]
    fn no_match_table_matches_everything() {
        let set = ChainSet::parse("[[chain]]\nname = \"all\"\nnfs = [\"counter\"]\n", "f").unwrap();
        let c = set.compile(&registry()).unwrap();
        assert_eq!(c.select(&v4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, 47)).unwrap().name, "all");
        // A one-NF parallel group compiles to a single stage.
        let set = ChainSet::parse("[[chain]]\nname = \"g\"\nnfs = [[\"acl-firewall\"]]\n", "f").unwrap();
        let c = set.compile(&registry()).unwrap();
        assert!(matches!(c.get("g").unwrap().stages.as_slice(), [Stage::Single(n)] if n.name == "acl-firewall"));
    }

    #[test]
    fn unknown_key() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\npolcy = 1\n");
        assert!(m.starts_with("chains.toml: chain 'web': "), "{m}");
        assert!(m.contains("unknown field `polcy`"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\n[chain.match]\nport = [80]\n");
        assert!(
            m.contains("chain 'web'") && m.contains("key `match.port`") && m.contains("unknown field `port`"),
            "{m}"
        );
        let m = err("[[chains]]\nname = \"web\"\n");
        assert_eq!(m, "chains.toml: key `chains`: unknown field `chains`, expected `chain` (line 1)");
    }

    #[test]
    fn bad_policy_value() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\n[chain.policy]\ncounter = \"fail-opne\"\n");
        assert!(m.starts_with("chains.toml: chain 'web': key `policy.counter`: "), "{m}");
        assert!(m.contains("fail-opne") && m.contains("fail-open") && m.contains("(line 5)"), "{m}");
    }

    #[test]
    fn bad_cidr_and_match_values() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\n[chain.match]\nprefixes = [\"10.0.0.0/8\", \"10.0.0.1/33\"]\n");
        assert!(m.starts_with("chains.toml: chain 'web': key `match.prefixes[1]`: "), "{m}");
        assert!(m.contains("bad prefix \"10.0.0.1/33\""), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\nmatch = { prefixes = [\"10.0.0.1/8\"] }\n");
        assert!(m.contains("did you mean 10.0.0.0/8?"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\nmatch = { protocol = \"tpc\" }\n");
        assert!(m.contains("key `match.protocol`") && m.contains("unknown protocol \"tpc\""), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\nmatch = { ports = [70000] }\n");
        assert!(m.contains("key `match.ports[0]`"), "{m}");
    }

    #[test]
    fn empty_chains() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = []\n");
        assert_eq!(m, "chains.toml: chain 'web': `nfs` is empty; list at least one NF");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\", []]\n");
        assert!(m.contains("key `nfs[1]`: empty parallel group"), "{m}");
        let m = err("# nothing\n");
        assert!(m.contains("no [[chain]] found"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\n");
        assert_eq!(m, "chains.toml: chain 'web': missing field `nfs` (line 1)");
        let m = err("[[chain]]\nnfs = [\"counter\"]\n");
        assert_eq!(m, "chains.toml: chain[0]: missing field `name` (line 1)");
    }

    #[test]
    fn duplicates() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\", [\"logger\", \"counter\"]]\n");
        assert_eq!(m, "chains.toml: chain 'web': NF 'counter' appears twice; an NF may appear once per chain");
        let m = err("[[chain]]\nname = \"a\"\nnfs = [\"counter\"]\n[[chain]]\nname = \"a\"\nnfs = [\"logger\"]\n");
        assert!(m.starts_with("chains.toml: chain 'a': two chains have this name"), "{m}");
    }

    #[test]
    fn modifying_nf_in_parallel_group() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [[\"counter\", \"acl-firewall\"]]\n");
        assert_eq!(
            m,
            "chains.toml: chain 'web': NF 'acl-firewall' modifies packets and cannot sit in a parallel group; \
             give it a stage of its own"
        );
    }

    #[test]
    fn unknown_nf_without_policy() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\", \"ghost\"]\n");
        assert!(m.starts_with("chains.toml: chain 'web': NF 'ghost' is not registered; start it first"), "{m}");
        assert!(m.contains("ghost = \"fail-open\""), "{m}");
        // With an explicit policy it compiles.
        let text =
            "[[chain]]\nname = \"web\"\nnfs = [\"counter\", \"ghost\"]\n[chain.policy]\nghost = \"fail-closed\"\n";
        let c = ChainSet::parse(text, "f").unwrap().compile(&registry()).unwrap();
        assert_eq!(
            c.get("web").unwrap().stages[1],
            Stage::Single(StageNf { name: "ghost".into(), id: None, policy: Policy::FailClosed })
        );
    }

    #[test]
    fn other_refusals() {
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\"]\n[chain.policy]\ncountr = \"fail-open\"\n");
        assert!(m.contains("key `policy.countr`: 'countr' is not in this chain's nfs"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"counter\", [[\"x\"]]]\n");
        assert!(m.contains("key `nfs[1][0]`"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [42]\n");
        assert!(m.contains("key `nfs[0]`") && m.contains("an NF name or an array of NF names"), "{m}");
        let m = err("[[chain]]\nname = \"bad name\"\nnfs = [\"counter\"]\n");
        assert!(m.contains("bad chain name"), "{m}");
        let m = err("[[chain]]\nname = \"web\"\nnfs = [\"has space\"]\n");
        assert!(m.contains("bad NF name \"has space\""), "{m}");
        let m = err("[[chain]]\nname = \"web\nnfs = 1\n");
        assert!(m.starts_with("chains.toml:2:") && m.contains("bad TOML"), "{m}");
    }

    #[test]
    fn load_reads_files() {
        let e = ChainSet::load(std::path::Path::new("/nonexistent/chains.toml")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read chain file /nonexistent/chains.toml: "), "{e}");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/chain.toml");
        assert_eq!(ChainSet::load(std::path::Path::new(path)).unwrap().chains().len(), 3);
    }
}
