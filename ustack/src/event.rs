//! μEvent type ids: hierarchical, path-named event types packed into a `u64`.
//!
//! This module owns the *names and numbers* of μEvent types and nothing else:
//! the shared-memory event header, rings and dispatch live elsewhere (the
//! shared layout crate and the runtime) and must not be defined here. It does
//! no I/O, needs no clock and contains no `unsafe`.
//!
//! # Encoding
//!
//! A type is a path of up to [`MAX_DEPTH`] (8) components, `PKT`, `PKT/TCP`,
//! `FLOW/TCP/ESTABLISHED`. Its [`EventTypeId`] stores one byte per level,
//! level 1 in the top byte, and `0` for "no component at this level":
//!
//! ```text
//!   FLOW/TCP/SYN = 0x02_03_01_00_00_00_00_00
//!                    |  |  +-- level 3: SYN is child 1 of FLOW/TCP
//!                    |  +----- level 2: TCP is child 3 of FLOW
//!                    +-------- level 1: FLOW is top-level type 2
//! ```
//!
//! Components are contiguous from the top (no zero byte above a non-zero
//! one), so "`a` is `b` or below it" is one mask-and-compare:
//! `a & mask_for_depth(b.depth()) == b` ([`EventTypeId::is_subtype_of`]). A
//! subscriber to `X` receives `X/Y` too. The id `0` is [`EventTypeId::ROOT`],
//! the parent of the top-level types, of which every type is a subtype.
//!
//! # Built-in types
//!
//! Child numbers `1..=63` ([`BUILTIN_CHILD_MAX`]) of every parent are
//! reserved for built-ins; NF-declared children are numbered from `64`
//! ([`NF_CHILD_MIN`]) up to `255`, so at most [`MAX_NF_CHILDREN`] (192) per
//! parent. The built-in ids are fixed and part of the NF ABI:
//!
//! | constant | path | levels |
//! |---|---|---|
//! | [`PKT`] | `PKT` | 1 |
//! | [`PKT_TCP`] | `PKT/TCP` | 1.1 |
//! | [`PKT_UDP`] | `PKT/UDP` | 1.2 |
//! | [`FLOW`] | `FLOW` | 2 |
//! | [`FLOW_START`] | `FLOW/START` | 2.1 |
//! | [`FLOW_END`] | `FLOW/END` | 2.2 |
//! | [`FLOW_TCP`] | `FLOW/TCP` | 2.3 |
//! | [`FLOW_TCP_SYN`] | `FLOW/TCP/SYN` | 2.3.1 |
//! | [`FLOW_TCP_ESTABLISHED`] | `FLOW/TCP/ESTABLISHED` | 2.3.2 |
//! | [`FLOW_TCP_FIN`] | `FLOW/TCP/FIN` | 2.3.3 |
//! | [`FLOW_TCP_RST`] | `FLOW/TCP/RST` | 2.3.4 |
//! | [`FLOW_TCP_CLOSED`] | `FLOW/TCP/CLOSED` | 2.3.5 |
//! | [`FLOW_TCP_TIMEOUT`] | `FLOW/TCP/TIMEOUT` | 2.3.6 |
//! | [`FLOW_TCP_OVERLAP_CONFLICT`] | `FLOW/TCP/OVERLAP_CONFLICT` | 2.3.7 |
//! | [`FLOW_TCP_TERMINATE`] | `FLOW/TCP/TERMINATE` | 2.3.8 |
//! | [`FLOW_TCP_REASM_STOPPED`] | `FLOW/TCP/REASM_STOPPED` | 2.3.9 |
//! | [`DATA_RDY`] | `DATA_RDY` | 3 |
//! | [`DATA_RDY_CLIENT`] | `DATA_RDY/CLIENT` | 3.1 |
//! | [`DATA_RDY_SERVER`] | `DATA_RDY/SERVER` | 3.2 |
//! | [`FLOW_REQ`] | `FLOW_REQ` | 4 |
//! | [`FLOW_DEST`] | `FLOW_DEST` | 5 |
//!
//! # NF-declared types
//!
//! [`EventTypeRegistry`] maps paths to ids and back. It starts with the
//! built-ins; an NF declares its own types under an existing parent
//! (`PKT/TCP/HTTP_REQ`). Top-level types are reserved for the runtime, so an
//! NF cannot declare one. Declared numbers are handed out in declaration
//! order, so the same path may get a different id in another controller run;
//! NFs learn their ids from the controller at registration, never hard-code
//! them.
//!
//! ```
//! use ustack::event::{EventTypeRegistry, FLOW_TCP, FLOW_TCP_SYN, PKT_TCP};
//!
//! assert!(FLOW_TCP_SYN.is_subtype_of(FLOW_TCP));
//! assert!(!PKT_TCP.is_subtype_of(FLOW_TCP));
//!
//! let mut types = EventTypeRegistry::new();
//! let http = types.declare("PKT/TCP/HTTP_REQ").unwrap();
//! assert!(http.is_subtype_of(PKT_TCP));
//! assert_eq!(types.path_of(http), Some("PKT/TCP/HTTP_REQ"));
//! ```

use core::fmt;
use std::collections::BTreeMap;

/// Number of levels an id can hold.
pub const MAX_DEPTH: u8 = 8;
/// Highest child number reserved for built-in types under any parent.
pub const BUILTIN_CHILD_MAX: u8 = 63;
/// Lowest child number handed to an NF-declared type.
pub const NF_CHILD_MIN: u8 = BUILTIN_CHILD_MAX + 1;
/// How many NF-declared children one parent can have (`64..=255`).
pub const MAX_NF_CHILDREN: usize = (u8::MAX - BUILTIN_CHILD_MAX) as usize;

/// Bits per level.
const LEVEL_BITS: u32 = 8;

/// Mask selecting the top `depth` levels of an id (`0` for depth 0; depths
/// above [`MAX_DEPTH`] are treated as [`MAX_DEPTH`]).
#[inline]
pub const fn mask_for_depth(depth: u8) -> u64 {
    let d = if depth > MAX_DEPTH { MAX_DEPTH } else { depth } as u32;
    if d == 0 {
        0
    } else {
        u64::MAX << (64 - d * LEVEL_BITS)
    }
}

/// Id of a μEvent type: its path packed one byte per level, level 1 in the
/// top byte (see the [module docs](self)). Always well formed: components
/// are contiguous from the top.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTypeId(u64);

impl EventTypeId {
    /// The root of the hierarchy (id 0, depth 0): every type is a subtype
    /// of it. Not an event type anyone publishes.
    pub const ROOT: EventTypeId = EventTypeId(0);

    /// The id with these child numbers from the top; `None` if there are
    /// more than [`MAX_DEPTH`] or one is zero.
    pub const fn from_levels(levels: &[u8]) -> Option<EventTypeId> {
        if levels.len() > MAX_DEPTH as usize {
            return None;
        }
        let mut raw = 0u64;
        let mut i = 0;
        while i < levels.len() {
            if levels[i] == 0 {
                return None;
            }
            raw |= (levels[i] as u64) << (64 - (i as u32 + 1) * LEVEL_BITS);
            i += 1;
        }
        Some(EventTypeId(raw))
    }

    /// Built-in constant constructor: panics (at compile time) on a bad
    /// level list.
    const fn builtin(levels: &[u8]) -> EventTypeId {
        match EventTypeId::from_levels(levels) {
            Some(id) => id,
            None => panic!("bad built-in event type levels"),
        }
    }

    /// Rebuild an id from its raw `u64` (as carried in an event header);
    /// `None` when a zero level sits above a non-zero one.
    pub const fn from_raw(raw: u64) -> Option<EventTypeId> {
        let id = EventTypeId(raw);
        // Well formed iff every bit below the id's depth is clear, which
        // holds by construction, and no level above it is zero.
        let depth = id.depth();
        let mut level = 1;
        while level <= depth {
            if id.level(level) == 0 {
                return None;
            }
            level += 1;
        }
        Some(id)
    }

    /// The raw `u64`, as carried in an event header.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Number of path components: 0 for [`ROOT`](Self::ROOT), 1 for `PKT`,
    /// 3 for `FLOW/TCP/SYN`.
    #[inline]
    pub const fn depth(self) -> u8 {
        // The lowest non-zero byte is the last level; trailing_zeros is 64
        // for ROOT, giving depth 0.
        (MAX_DEPTH as u32 - self.0.trailing_zeros() / LEVEL_BITS) as u8
    }

    /// Child number at `level` (1-based from the top), or 0 past the depth
    /// or outside `1..=8`.
    #[inline]
    pub const fn level(self, level: u8) -> u8 {
        if level == 0 || level > MAX_DEPTH {
            return 0;
        }
        (self.0 >> (64 - level as u32 * LEVEL_BITS)) as u8
    }

    /// Child number of the last component (0 for [`ROOT`](Self::ROOT)).
    #[inline]
    pub const fn last(self) -> u8 {
        self.level(self.depth())
    }

    /// The parent type; `None` for [`ROOT`](Self::ROOT). The parent of a
    /// top-level type is [`ROOT`](Self::ROOT).
    #[inline]
    pub const fn parent(self) -> Option<EventTypeId> {
        match self.depth() {
            0 => None,
            d => Some(EventTypeId(self.0 & mask_for_depth(d - 1))),
        }
    }

    /// The child numbered `n` below this type; `None` when `n` is 0 or this
    /// type is already [`MAX_DEPTH`] deep.
    #[inline]
    pub const fn child(self, n: u8) -> Option<EventTypeId> {
        let d = self.depth();
        if n == 0 || d >= MAX_DEPTH {
            return None;
        }
        Some(EventTypeId(self.0 | ((n as u64) << (64 - (d as u32 + 1) * LEVEL_BITS))))
    }

    /// Whether `self` is `other` or below it: one mask and one compare.
    #[inline]
    pub const fn is_subtype_of(self, other: EventTypeId) -> bool {
        self.0 & mask_for_depth(other.depth()) == other.0
    }

    /// Whether this is a built-in type (every level at most
    /// [`BUILTIN_CHILD_MAX`]); [`ROOT`](Self::ROOT) counts as built-in.
    pub const fn is_builtin(self) -> bool {
        let mut level = 1;
        while level <= self.depth() {
            if self.level(level) > BUILTIN_CHILD_MAX {
                return false;
            }
            level += 1;
        }
        true
    }
}

/// Dotted child numbers from the top (`2.3.1`), or `ROOT`. Use
/// [`EventTypeRegistry::path_of`] for the name.
impl fmt::Display for EventTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.depth() == 0 {
            return f.write_str("ROOT");
        }
        for level in 1..=self.depth() {
            if level > 1 {
                f.write_str(".")?;
            }
            write!(f, "{}", self.level(level))?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventTypeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventTypeId({self})")
    }
}

/// `PKT`: every packet a flow's chain sees.
pub const PKT: EventTypeId = EventTypeId::builtin(&[1]);
/// `PKT/TCP`: TCP packets.
pub const PKT_TCP: EventTypeId = EventTypeId::builtin(&[1, 1]);
/// `PKT/UDP`: UDP packets.
pub const PKT_UDP: EventTypeId = EventTypeId::builtin(&[1, 2]);
/// `FLOW`: flow life-cycle events.
pub const FLOW: EventTypeId = EventTypeId::builtin(&[2]);
/// `FLOW/START`: the flow table saw a new flow.
pub const FLOW_START: EventTypeId = EventTypeId::builtin(&[2, 1]);
/// `FLOW/END`: a flow left the flow table (idle, evicted, its TCP connection
/// closed a linger ago, shutdown).
pub const FLOW_END: EventTypeId = EventTypeId::builtin(&[2, 2]);
/// `FLOW/TCP`: TCP connection state events from the TCP stacks.
pub const FLOW_TCP: EventTypeId = EventTypeId::builtin(&[2, 3]);
/// `FLOW/TCP/SYN`: a connection attempt.
pub const FLOW_TCP_SYN: EventTypeId = EventTypeId::builtin(&[2, 3, 1]);
/// `FLOW/TCP/ESTABLISHED`: the handshake completed.
pub const FLOW_TCP_ESTABLISHED: EventTypeId = EventTypeId::builtin(&[2, 3, 2]);
/// `FLOW/TCP/FIN`: one side closed its half.
pub const FLOW_TCP_FIN: EventTypeId = EventTypeId::builtin(&[2, 3, 3]);
/// `FLOW/TCP/RST`: the connection was reset.
pub const FLOW_TCP_RST: EventTypeId = EventTypeId::builtin(&[2, 3, 4]);
/// `FLOW/TCP/CLOSED`: both halves closed.
pub const FLOW_TCP_CLOSED: EventTypeId = EventTypeId::builtin(&[2, 3, 5]);
/// `FLOW/TCP/TIMEOUT`: the stack gave up on the connection.
pub const FLOW_TCP_TIMEOUT: EventTypeId = EventTypeId::builtin(&[2, 3, 6]);
/// `FLOW/TCP/OVERLAP_CONFLICT`: retransmitted bytes differ from the
/// original ones (possible evasion attempt).
pub const FLOW_TCP_OVERLAP_CONFLICT: EventTypeId = EventTypeId::builtin(&[2, 3, 7]);
/// `FLOW/TCP/TERMINATE`: an NF asks the stack to tear the connection down.
pub const FLOW_TCP_TERMINATE: EventTypeId = EventTypeId::builtin(&[2, 3, 8]);
/// `FLOW/TCP/REASM_STOPPED`: reassembly of one side stopped (buffer full,
/// no buffer, or a gap that will never fill); the flow is still forwarded.
pub const FLOW_TCP_REASM_STOPPED: EventTypeId = EventTypeId::builtin(&[2, 3, 9]);
/// `DATA_RDY`: reassembled bytestream data is ready.
pub const DATA_RDY: EventTypeId = EventTypeId::builtin(&[3]);
/// `DATA_RDY/CLIENT`: new bytes from the client side.
pub const DATA_RDY_CLIENT: EventTypeId = EventTypeId::builtin(&[3, 1]);
/// `DATA_RDY/SERVER`: new bytes from the server side.
pub const DATA_RDY_SERVER: EventTypeId = EventTypeId::builtin(&[3, 2]);
/// `FLOW_REQ`: a stack asks a policy NF where a flow should go.
pub const FLOW_REQ: EventTypeId = EventTypeId::builtin(&[4]);
/// `FLOW_DEST`: a policy NF's answer to `FLOW_REQ`.
pub const FLOW_DEST: EventTypeId = EventTypeId::builtin(&[5]);

/// Every built-in type with its path, parents before children.
pub const BUILTINS: &[(&str, EventTypeId)] = &[
    ("PKT", PKT),
    ("PKT/TCP", PKT_TCP),
    ("PKT/UDP", PKT_UDP),
    ("FLOW", FLOW),
    ("FLOW/START", FLOW_START),
    ("FLOW/END", FLOW_END),
    ("FLOW/TCP", FLOW_TCP),
    ("FLOW/TCP/SYN", FLOW_TCP_SYN),
    ("FLOW/TCP/ESTABLISHED", FLOW_TCP_ESTABLISHED),
    ("FLOW/TCP/FIN", FLOW_TCP_FIN),
    ("FLOW/TCP/RST", FLOW_TCP_RST),
    ("FLOW/TCP/CLOSED", FLOW_TCP_CLOSED),
    ("FLOW/TCP/TIMEOUT", FLOW_TCP_TIMEOUT),
    ("FLOW/TCP/OVERLAP_CONFLICT", FLOW_TCP_OVERLAP_CONFLICT),
    ("FLOW/TCP/TERMINATE", FLOW_TCP_TERMINATE),
    ("FLOW/TCP/REASM_STOPPED", FLOW_TCP_REASM_STOPPED),
    ("DATA_RDY", DATA_RDY),
    ("DATA_RDY/CLIENT", DATA_RDY_CLIENT),
    ("DATA_RDY/SERVER", DATA_RDY_SERVER),
    ("FLOW_REQ", FLOW_REQ),
    ("FLOW_DEST", FLOW_DEST),
];

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    /// A component is empty or has characters outside `[A-Z0-9_]`.
    #[error(
        "bad event type path {path:?}: component {component:?} must be non-empty upper-case letters, digits or '_' \
         (components are separated by '/', e.g. PKT/TCP/HTTP_REQ)"
    )]
    BadName {
        /// The whole path.
        path: String,
        /// The offending component.
        component: String,
    },
    /// More than [`MAX_DEPTH`] components.
    #[error("bad event type path {path:?}: {depth} levels, at most {max} are allowed", max = MAX_DEPTH)]
    TooDeep {
        /// The whole path.
        path: String,
        /// How many components it has.
        depth: usize,
    },
    /// The parent path is not a known type.
    #[error("cannot declare event type {path}: its parent {parent} is not a known type; declare {parent} first")]
    UnknownParent {
        /// The path being declared.
        path: String,
        /// Its parent path.
        parent: String,
    },
    /// An NF tried to declare a top-level type.
    #[error(
        "cannot declare event type {path}: top-level types are reserved for the runtime; \
         declare it under an existing type (e.g. FLOW/{path})"
    )]
    TopLevel {
        /// The path being declared.
        path: String,
    },
    /// The parent already has [`MAX_NF_CHILDREN`] declared children.
    #[error("cannot declare event type {path}: {parent} already has {max} declared subtypes", max = MAX_NF_CHILDREN)]
    ParentFull {
        /// The path being declared.
        path: String,
        /// Its parent path.
        parent: String,
    },
    /// The path is well formed but names no known type.
    #[error("unknown event type {path}; use a built-in type or one an NF declares")]
    Unknown {
        /// The path looked up.
        path: String,
    },
}

/// Split `path` into components, checking names and depth.
fn components(path: &str) -> Result<Vec<&str>, EventTypeError> {
    let parts: Vec<&str> = path.split('/').collect();
    for c in &parts {
        let ok = !c.is_empty() && c.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(EventTypeError::BadName { path: path.to_string(), component: c.to_string() });
        }
    }
    if parts.len() > MAX_DEPTH as usize {
        return Err(EventTypeError::TooDeep { path: path.to_string(), depth: parts.len() });
    }
    Ok(parts)
}

/// Two-way map between type paths and ids: the built-ins plus the types
/// NFs declared. Lives in the controller; NFs get ids from it.
#[derive(Clone, Debug)]
pub struct EventTypeRegistry {
    by_path: BTreeMap<String, EventTypeId>,
    by_id: BTreeMap<EventTypeId, String>,
    /// Next NF child number per parent that has declared children.
    next_child: BTreeMap<EventTypeId, u16>,
}

impl Default for EventTypeRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EventTypeRegistry {
    /// A registry holding the [`BUILTINS`].
    pub fn new() -> EventTypeRegistry {
        let mut r = EventTypeRegistry { by_path: BTreeMap::new(), by_id: BTreeMap::new(), next_child: BTreeMap::new() };
        for &(path, id) in BUILTINS {
            r.insert(path.to_string(), id);
        }
        r
    }

    fn insert(&mut self, path: String, id: EventTypeId) {
        self.by_id.insert(id, path.clone());
        self.by_path.insert(path, id);
    }

    /// Declare an NF type under an existing parent and return its id.
    /// Declaring a path that already exists (built-in or declared) returns
    /// its id unchanged.
    pub fn declare(&mut self, path: &str) -> Result<EventTypeId, EventTypeError> {
        let parts = components(path)?;
        if let Some(&id) = self.by_path.get(path) {
            return Ok(id);
        }
        if parts.len() == 1 {
            return Err(EventTypeError::TopLevel { path: path.to_string() });
        }
        let parent_path = &path[..path.len() - parts[parts.len() - 1].len() - 1];
        let Some(&parent) = self.by_path.get(parent_path) else {
            return Err(EventTypeError::UnknownParent { path: path.to_string(), parent: parent_path.to_string() });
        };
        let next = self.next_child.get(&parent).copied().unwrap_or(u16::from(NF_CHILD_MIN));
        let id = match u8::try_from(next).ok().and_then(|n| parent.child(n)) {
            Some(id) => id,
            // components() bounds the depth, so child() only fails on overflow.
            None => return Err(EventTypeError::ParentFull { path: path.to_string(), parent: parent_path.to_string() }),
        };
        self.next_child.insert(parent, next + 1);
        self.insert(path.to_string(), id);
        Ok(id)
    }

    /// The id of `path`, if it is known.
    pub fn lookup(&self, path: &str) -> Option<EventTypeId> {
        self.by_path.get(path).copied()
    }

    /// [`lookup`](Self::lookup) with an error naming the path: a malformed
    /// path gives its parse error, a well-formed unknown one
    /// [`EventTypeError::Unknown`].
    pub fn resolve(&self, path: &str) -> Result<EventTypeId, EventTypeError> {
        if let Some(id) = self.lookup(path) {
            return Ok(id);
        }
        components(path)?;
        Err(EventTypeError::Unknown { path: path.to_string() })
    }

    /// The path of `id`, if it is known.
    pub fn path_of(&self, id: EventTypeId) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// Every known type, ordered by id (parents before their children).
    pub fn iter(&self) -> impl Iterator<Item = (EventTypeId, &str)> + '_ {
        self.by_id.iter().map(|(&id, p)| (id, p.as_str()))
    }

    /// Number of known types, built-ins included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Always false: the built-ins are always there.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn masks() {
        assert_eq!(mask_for_depth(0), 0);
        assert_eq!(mask_for_depth(1), 0xff00_0000_0000_0000);
        assert_eq!(mask_for_depth(3), 0xffff_ff00_0000_0000);
        assert_eq!(mask_for_depth(8), u64::MAX);
        assert_eq!(mask_for_depth(9), u64::MAX);
    }

    #[test]
    fn encoding_of_builtins() {
        assert_eq!(FLOW_TCP_SYN.raw(), 0x0203_0100_0000_0000);
        assert_eq!(FLOW_TCP_SYN.depth(), 3);
        assert_eq!(FLOW_TCP_SYN.to_string(), "2.3.1");
        assert_eq!(EventTypeId::ROOT.to_string(), "ROOT");
        assert_eq!(format!("{:?}", PKT_TCP), "EventTypeId(1.1)");
        for &(path, id) in BUILTINS {
            assert_eq!(usize::from(id.depth()), path.split('/').count(), "{path}");
            assert!(id.is_builtin(), "{path}");
            assert_eq!(EventTypeId::from_raw(id.raw()), Some(id));
            // Each built-in's parent is a built-in (or ROOT).
            let parent = id.parent().unwrap();
            assert!(parent == EventTypeId::ROOT || BUILTINS.iter().any(|&(_, p)| p == parent), "{path}");
        }
        // All ids distinct.
        let mut ids: Vec<u64> = BUILTINS.iter().map(|(_, id)| id.raw()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), BUILTINS.len());
    }

    #[test]
    fn builtin_subtype_relations() {
        // Chains of parents.
        assert!(FLOW_TCP_SYN.is_subtype_of(FLOW_TCP));
        assert!(FLOW_TCP.is_subtype_of(FLOW));
        assert!(FLOW_TCP_SYN.is_subtype_of(FLOW));
        assert!(PKT_TCP.is_subtype_of(PKT));
        assert!(PKT_UDP.is_subtype_of(PKT));
        assert!(DATA_RDY_CLIENT.is_subtype_of(DATA_RDY));
        // Not across trees, not upwards.
        assert!(!PKT_TCP.is_subtype_of(FLOW));
        assert!(!PKT_TCP.is_subtype_of(FLOW_TCP));
        assert!(!FLOW_TCP.is_subtype_of(FLOW_TCP_SYN));
        assert!(!FLOW.is_subtype_of(FLOW_TCP));
        assert!(!FLOW_REQ.is_subtype_of(FLOW));
        assert!(!FLOW_DEST.is_subtype_of(FLOW_REQ));
        // Siblings.
        assert!(!PKT_TCP.is_subtype_of(PKT_UDP));
        assert!(!FLOW_START.is_subtype_of(FLOW_END));
        assert!(!FLOW_TCP_SYN.is_subtype_of(FLOW_TCP_FIN));
        assert!(!DATA_RDY_CLIENT.is_subtype_of(DATA_RDY_SERVER));
        // Exhaustively against the path model: a ⊂ b iff b's path is a's
        // path or a '/'-prefix of it.
        for &(pa, a) in BUILTINS {
            assert!(a.is_subtype_of(a), "{pa} is a subtype of itself");
            assert!(a.is_subtype_of(EventTypeId::ROOT));
            assert!(!EventTypeId::ROOT.is_subtype_of(a));
            for &(pb, b) in BUILTINS {
                let model = pa == pb || pa.starts_with(&format!("{pb}/"));
                assert_eq!(a.is_subtype_of(b), model, "{pa} vs {pb}");
            }
        }
    }

    #[test]
    fn parent_child_depth() {
        assert_eq!(FLOW_TCP_SYN.parent(), Some(FLOW_TCP));
        assert_eq!(FLOW.parent(), Some(EventTypeId::ROOT));
        assert_eq!(EventTypeId::ROOT.parent(), None);
        assert_eq!(FLOW_TCP.child(1), Some(FLOW_TCP_SYN));
        assert_eq!(EventTypeId::ROOT.child(4), Some(FLOW_REQ));
        assert_eq!(FLOW.child(0), None);
        let deep = EventTypeId::from_levels(&[1, 2, 3, 4, 5, 6, 7, 255]).unwrap();
        assert_eq!(deep.depth(), 8);
        assert_eq!(deep.last(), 255);
        assert_eq!(deep.child(1), None);
        assert_eq!(deep.parent().unwrap().depth(), 7);
        assert!(!deep.is_builtin());
        assert_eq!(EventTypeId::from_levels(&[1, 0]), None);
        assert_eq!(EventTypeId::from_levels(&[1; 9]), None);
        assert_eq!(EventTypeId::from_raw(0x0100_0100_0000_0000), None);
        assert_eq!(EventTypeId::from_raw(0), Some(EventTypeId::ROOT));
        assert_eq!(EventTypeId::from_raw(u64::MAX).map(|i| i.depth()), Some(8));
    }

    #[test]
    fn declare_and_lookup_round_trip() {
        let mut r = EventTypeRegistry::new();
        assert_eq!(r.len(), BUILTINS.len());
        for &(path, id) in BUILTINS {
            assert_eq!(r.lookup(path), Some(id));
            assert_eq!(r.path_of(id), Some(path));
        }
        let http = r.declare("PKT/TCP/HTTP_REQ").unwrap();
        assert_eq!(http.parent(), Some(PKT_TCP));
        assert_eq!(http.last(), NF_CHILD_MIN);
        assert!(http.is_subtype_of(PKT_TCP) && http.is_subtype_of(PKT));
        assert!(!http.is_builtin());
        let resp = r.declare("PKT/TCP/HTTP_RESP").unwrap();
        assert_eq!(resp.last(), NF_CHILD_MIN + 1);
        assert!(!resp.is_subtype_of(http));
        let get = r.declare("PKT/TCP/HTTP_REQ/GET").unwrap();
        assert!(get.is_subtype_of(http));
        assert_eq!(get.last(), NF_CHILD_MIN);
        assert_eq!(r.lookup("PKT/TCP/HTTP_REQ"), Some(http));
        assert_eq!(r.path_of(get), Some("PKT/TCP/HTTP_REQ/GET"));
        assert_eq!(r.resolve("PKT/TCP/HTTP_RESP"), Ok(resp));
        // Idempotent, for declared and built-in paths alike.
        assert_eq!(r.declare("PKT/TCP/HTTP_REQ"), Ok(http));
        assert_eq!(r.declare("FLOW/TCP/SYN"), Ok(FLOW_TCP_SYN));
        assert_eq!(r.declare("PKT"), Ok(PKT));
        assert_eq!(r.len(), BUILTINS.len() + 3);
        assert_eq!(r.iter().count(), r.len());
        assert_eq!(r.lookup("PKT/TCP/NOPE"), None);
        assert_eq!(r.path_of(EventTypeId::ROOT), None);
    }

    #[test]
    fn bad_paths_refused() {
        let mut r = EventTypeRegistry::new();
        for bad in ["", "PKT/", "/PKT", "PKT//TCP", "pkt/tcp", "PKT/TCP/HTTP-REQ", "PKT/TCP/ÜBER", "PKT TCP"] {
            let e = r.declare(bad).unwrap_err();
            assert!(matches!(e, EventTypeError::BadName { .. }), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        let e = r.declare("PKT/TCP/A/B/C/D/E/F/G").unwrap_err();
        assert!(matches!(e, EventTypeError::TooDeep { depth: 9, .. }), "{e}");
        let e = r.declare("PKT/SCTP/INIT").unwrap_err();
        assert_eq!(e, EventTypeError::UnknownParent { path: "PKT/SCTP/INIT".into(), parent: "PKT/SCTP".into() });
        assert_eq!(
            e.to_string(),
            "cannot declare event type PKT/SCTP/INIT: its parent PKT/SCTP is not a known type; declare PKT/SCTP first"
        );
        let e = r.declare("ALERT").unwrap_err();
        assert!(matches!(e, EventTypeError::TopLevel { .. }), "{e}");
        assert!(e.to_string().contains("ALERT"));
        let e = r.resolve("FLOW/ALERT").unwrap_err();
        assert_eq!(e.to_string(), "unknown event type FLOW/ALERT; use a built-in type or one an NF declares");
        assert!(matches!(r.resolve("flow"), Err(EventTypeError::BadName { .. })));
        // Nothing was half-declared.
        assert_eq!(r.len(), BUILTINS.len());
    }

    #[test]
    fn depth_eight_declares_then_stops() {
        let mut r = EventTypeRegistry::new();
        let mut path = String::from("FLOW");
        for _ in 2..=8 {
            path.push_str("/X");
            assert_eq!(usize::from(r.declare(&path).unwrap().depth()), path.split('/').count());
        }
        path.push_str("/X");
        assert!(matches!(r.declare(&path), Err(EventTypeError::TooDeep { .. })));
    }

    #[test]
    fn at_most_192_nf_children_per_parent() {
        let mut r = EventTypeRegistry::new();
        for i in 0..MAX_NF_CHILDREN {
            let id = r.declare(&format!("FLOW/T{i}")).unwrap();
            assert_eq!(usize::from(id.last()), usize::from(NF_CHILD_MIN) + i);
        }
        let e = r.declare("FLOW/ONE_MORE").unwrap_err();
        assert_eq!(e, EventTypeError::ParentFull { path: "FLOW/ONE_MORE".into(), parent: "FLOW".into() });
        // Existing ones still resolve; other parents are unaffected.
        assert_eq!(r.declare("FLOW/T0").unwrap().last(), NF_CHILD_MIN);
        assert!(r.declare("PKT/ONE_MORE").is_ok());
    }

    /// Random path as child numbers, with a readable name per component.
    fn name_of(levels: &[u8]) -> String {
        levels.iter().map(|n| format!("C{n}")).collect::<Vec<_>>().join("/")
    }

    proptest! {
        /// `is_subtype_of` agrees with a string-prefix model on the path
        /// components. Both paths share a random prefix so that related
        /// pairs are common.
        #[test]
        fn subtype_matches_path_prefix_model(
            common in proptest::collection::vec(1u8..=255, 0..=8),
            a_tail in proptest::collection::vec(1u8..=255, 0..=8),
            b_tail in proptest::collection::vec(1u8..=255, 0..=8),
        ) {
            let mut a_levels = common.clone();
            a_levels.extend(&a_tail);
            a_levels.truncate(8);
            let mut b_levels = common;
            b_levels.extend(&b_tail);
            b_levels.truncate(8);
            // Build through child() to exercise it.
            let build = |levels: &[u8]| levels.iter().fold(EventTypeId::ROOT, |id, &n| id.child(n).unwrap());
            let a = build(&a_levels);
            let b = build(&b_levels);
            prop_assert_eq!(Some(a), EventTypeId::from_levels(&a_levels));
            prop_assert_eq!(usize::from(a.depth()), a_levels.len());
            let (pa, pb) = (name_of(&a_levels), name_of(&b_levels));
            let model = pb.is_empty() || pa == pb || pa.starts_with(&format!("{pb}/"));
            prop_assert_eq!(a.is_subtype_of(b), model, "{} vs {}", pa, pb);
            prop_assert_eq!(a.is_subtype_of(b) && b.is_subtype_of(a), a == b);
            if let Some(p) = a.parent() {
                prop_assert!(a.is_subtype_of(p) && !p.is_subtype_of(a));
                prop_assert_eq!(p.child(a.last()), Some(a));
            }
            prop_assert_eq!(EventTypeId::from_raw(a.raw()), Some(a));
        }

        /// Declared paths round-trip through lookup/path_of and keep the
        /// subtype relation of their paths.
        #[test]
        fn declared_paths_round_trip(paths in proptest::collection::vec(
            proptest::collection::vec(0u8..4, 1..=6), 1..20)
        ) {
            let mut r = EventTypeRegistry::new();
            let mut declared = Vec::new();
            for p in &paths {
                // Declare every prefix under PKT/TCP, parents first.
                let mut path = String::from("PKT/TCP");
                for n in p {
                    path.push_str(&format!("/N{n}"));
                    let id = r.declare(&path).unwrap();
                    declared.push((path.clone(), id));
                }
            }
            for (path, id) in &declared {
                prop_assert_eq!(r.lookup(path), Some(*id));
                prop_assert_eq!(r.path_of(*id), Some(path.as_str()));
                prop_assert!(id.is_subtype_of(PKT_TCP));
                for (other, oid) in &declared {
                    let model = path == other || path.starts_with(&format!("{other}/"));
                    prop_assert_eq!(id.is_subtype_of(*oid), model);
                }
            }
        }
    }
}
