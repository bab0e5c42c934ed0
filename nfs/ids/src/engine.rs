//! Streaming matching: per-stream carry-over, dedupe, bounded flow state.
//!
//! Each side of a flow is scanned as one continuous bytestream. A stream
//! remembers `next`, the offset it has been scanned up to, and `carry`,
//! the last `longest - 1` bytes before `next`. A `DATA_RDY` announcing
//! `start..end` is scanned as `carry + bytes[next..end]`:
//!
//! - a content split across two events (or across the ring's end) is found,
//!   because the part in the earlier event is in the carry;
//! - a match is reported only when it ends after `next` (it holds at least
//!   one new byte), so each occurrence (content, end offset) is reported
//!   once per flow side, even when a later event re-announces bytes already
//!   scanned (those are skipped) or the carry holds a whole match;
//! - when `start` is past `next` (a gap: state evicted, an event missed),
//!   the carry is dropped rather than joined to bytes it does not precede.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use nf_sdk::Side;

use crate::rules::{Action, RuleSet};

/// A map holding at most `cap` entries, evicting the oldest inserted.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: HashMap<K, (u64, V)>,
    /// Insertion order; entries whose generation no longer matches the
    /// map's were removed (or re-inserted) meanwhile and are skipped.
    order: VecDeque<(K, u64)>,
    cap: usize,
    generation: u64,
    evicted: u64,
}

impl<K: Copy + Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map for at most `cap` (at least 1) entries.
    pub fn new(cap: usize) -> Self {
        BoundedMap { map: HashMap::new(), order: VecDeque::new(), cap: cap.max(1), generation: 0, evicted: 0 }
    }

    /// The entry of `k`, inserting `make()` first (evicting the oldest
    /// entry when full).
    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&k) {
            while self.map.len() >= self.cap {
                let Some((old, g)) = self.order.pop_front() else { break };
                if self.map.get(&old).is_some_and(|(og, _)| *og == g) {
                    self.map.remove(&old);
                    self.evicted += 1;
                }
            }
            self.generation += 1;
            self.order.push_back((k, self.generation));
            self.map.insert(k, (self.generation, make()));
            if self.order.len() > 2 * self.cap + 64 {
                let map = &self.map;
                self.order.retain(|(k, g)| map.get(k).is_some_and(|(mg, _)| mg == g));
            }
        }
        &mut self.map.get_mut(&k).expect("present").1
    }

    /// Forgets `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(_, v)| v)
    }

    /// Forgets every entry (the eviction count stays).
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries evicted to make room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// A flow as the IDS keys it: flow ids are unique per worker only.
pub type FlowKey = (u32, u64);

/// Scan progress of one side.
#[derive(Debug, Default)]
struct Stream {
    /// Stream offset scanned up to (`None` before the first event).
    next: Option<u64>,
    /// The bytes just before `next` (at most `longest - 1`).
    carry: Vec<u8>,
}

#[derive(Debug, Default)]
struct FlowState {
    sides: [Stream; 2],
    /// A `FLOW/TCP/TERMINATE` was asked for already.
    terminated: bool,
}

/// One signature match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Index of the rule in the rule set.
    pub rule: usize,
    /// Stream offset just past the match's last byte.
    pub end: u64,
}

/// What one scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// In stream order.
    pub hits: Vec<Hit>,
    /// A terminate rule (or `--terminate`) matched on a flow not asked to
    /// terminate before: publish `FLOW/TCP/TERMINATE` now.
    pub terminate: bool,
}

/// Counters of the matching engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// New bytes scanned (carry and re-announced bytes not counted).
    pub bytes_scanned: u64,
    /// Events whose range was already scanned entirely.
    pub rescans_skipped: u64,
    /// Events starting past the scanned offset (carry dropped).
    pub gaps: u64,
    /// Flows whose state was evicted to stay under the bound.
    pub evicted: u64,
    /// Flows tracked now.
    pub tracked: usize,
}

/// The per-flow matching state over one rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    force_terminate: bool,
    flows: BoundedMap<FlowKey, FlowState>,
    scratch: Vec<u8>,
    bytes_scanned: u64,
    rescans_skipped: u64,
    gaps: u64,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl Engine {
    /// An engine tracking at most `max_flows` flows; with `force_terminate`
    /// every rule acts as `terminate`.
    pub fn new(rules: Arc<RuleSet>, max_flows: usize, force_terminate: bool) -> Self {
        Engine {
            rules,
            force_terminate,
            flows: BoundedMap::new(max_flows),
            scratch: Vec::new(),
            bytes_scanned: 0,
            rescans_skipped: 0,
            gaps: 0,
        }
    }

    /// Scans stream bytes `start..start + a.len() + b.len()` of `side` of
    /// `flow` (given as two slices, as a read across the ring's end
    /// returns them). `last` says no further bytes follow on this side
    /// (reassembly stopped): its state is freed.
    pub fn scan(&mut self, flow: FlowKey, side: Side, start: u64, (a, b): (&[u8], &[u8]), last: bool) -> Scan {
        let keep = self.rules.longest().saturating_sub(1);
        let end = start + (a.len() + b.len()) as u64;
        let state = self.flows.get_or_insert_with(flow, FlowState::default);
        let stream = &mut state.sides[side_index(side)];
        let skip = match stream.next {
            Some(next) if end <= next => {
                self.rescans_skipped += u64::from(end > start);
                return Scan::default();
            }
            Some(next) if start <= next => (next - start) as usize,
            Some(_) => {
                self.gaps += 1;
                stream.carry.clear();
                0
            }
            None => 0,
        };
        let from = start + skip as u64; // first new byte
        let base = from - stream.carry.len() as u64; // offset of scratch[0]
        self.scratch.clear();
        self.scratch.extend_from_slice(&stream.carry);
        self.scratch.extend_from_slice(a.get(skip..).unwrap_or_default());
        self.scratch.extend_from_slice(b.get(skip.saturating_sub(a.len())..).unwrap_or_default());
        self.bytes_scanned += end - from;

        let mut out = Scan::default();
        for m in self.rules.automaton().find_overlapping_iter(self.scratch.as_slice()) {
            let abs_end = base + m.end() as u64;
            if abs_end <= from {
                continue; // wholly in the carry: reported by the scan that saw its end
            }
            for &rule in self.rules.rules_of(m.pattern().as_usize()) {
                if self.rules.rules()[rule].side.covers(side) {
                    out.hits.push(Hit { rule, end: abs_end });
                }
            }
        }
        out.hits.sort_by_key(|h| (h.end, h.rule));
        let terminating =
            out.hits.iter().any(|h| self.force_terminate || self.rules.rules()[h.rule].action == Action::Terminate);
        if terminating && !state.terminated {
            state.terminated = true;
            out.terminate = true;
        }
        let stream = &mut state.sides[side_index(side)];
        stream.next = Some(end);
        stream.carry.clear();
        if !last {
            stream.carry.extend_from_slice(&self.scratch[self.scratch.len().saturating_sub(keep)..]);
        }
        out
    }

    /// Forgets a flow (closed, reset, timed out, ended).
    pub fn forget(&mut self, flow: FlowKey) {
        self.flows.remove(&flow);
    }

    /// Forgets every flow (the counters stay): after registering again,
    /// when the runtime's flow ids may name other flows.
    pub fn forget_all(&mut self) {
        self.flows.clear();
    }

    /// The counters so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            bytes_scanned: self.bytes_scanned,
            rescans_skipped: self.rescans_skipped,
            gaps: self.gaps,
            evicted: self.flows.evicted(),
            tracked: self.flows.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Arc<RuleSet> {
        Arc::new(RuleSet::parse(text, "t").unwrap())
    }

    fn ends(s: &Scan) -> Vec<(usize, u64)> {
        s.hits.iter().map(|h| (h.rule, h.end)).collect()
    }

    #[test]
    fn finds_matches_split_across_scans_and_ring_wraps_once() {
        let r = rules("alert evil any \"EVILCMD\"\nalert cmd client \"CMD\"\n");
        let mut e = Engine::new(r, 16, false);
        let f = (0, 1);
        assert!(ends(&e.scan(f, Side::Client, 0, (b"xxEVI", b""), false)).is_empty());
        // Completed in the next event, which arrives as two ring slices.
        let s = e.scan(f, Side::Client, 5, (b"LC", b"MDyy"), false);
        assert_eq!(ends(&s), [(0, 9), (1, 9)]);
        // Re-announced bytes (overlap) report nothing again; new ones do.
        assert!(ends(&e.scan(f, Side::Client, 0, (b"xxEVILCMDyy", b""), false)).is_empty());
        assert_eq!(ends(&e.scan(f, Side::Client, 2, (b"EVILCMDyyCMD", b""), false)), [(1, 14)]);
        // The server side is its own stream, and `cmd` is client-only.
        assert_eq!(ends(&e.scan(f, Side::Server, 0, (b"CMD EVILCMD", b""), false)), [(0, 11)]);
        let st = e.stats();
        assert_eq!((st.bytes_scanned, st.rescans_skipped, st.gaps, st.tracked), (14 + 11, 1, 0, 1));
    }

    #[test]
    fn a_gap_drops_the_carry_and_forget_resets() {
        let r = rules("terminate t any \"abcd\"\n");
        let mut e = Engine::new(r, 16, false);
        let f = (0, 7);
        assert!(e.scan(f, Side::Client, 0, (b"ab", b""), false).hits.is_empty());
        // Bytes 2..10 never arrived: "ab" + "cd" is not a match.
        assert!(e.scan(f, Side::Client, 10, (b"cd", b""), false).hits.is_empty());
        assert_eq!(e.stats().gaps, 1);
        let s = e.scan(f, Side::Client, 12, (b"abcdabcd", b""), false);
        assert_eq!((ends(&s), s.terminate), (vec![(0, 16), (0, 20)], true));
        // Asked to terminate once per flow.
        assert!(!e.scan(f, Side::Client, 20, (b"abcd", b""), false).terminate);
        e.forget(f);
        assert_eq!(e.stats().tracked, 0);
        let s = e.scan(f, Side::Client, 0, (b"abcd", b""), false);
        assert_eq!((ends(&s), s.terminate), (vec![(0, 4)], true));
    }

    #[test]
    fn flow_state_is_bounded_fifo() {
        let r = rules("alert a any \"0123\"\n");
        let mut e = Engine::new(r, 2, true);
        e.scan((0, 1), Side::Client, 0, (b"01", b""), false);
        e.scan((0, 2), Side::Client, 0, (b"01", b""), false);
        e.forget((0, 2));
        e.scan((0, 3), Side::Client, 0, (b"01", b""), false);
        e.scan((0, 4), Side::Client, 0, (b"01", b""), false); // evicts flow 1, the oldest
        let st = e.stats();
        assert_eq!((st.tracked, st.evicted), (2, 1));
        // Flow 3 kept its carry, flow 1 lost it.
        assert_eq!(ends(&e.scan((0, 3), Side::Client, 2, (b"23", b""), false)), [(0, 4)]);
        assert!(e.scan((0, 1), Side::Client, 2, (b"23", b""), false).hits.is_empty());
    }

    #[test]
    fn bounded_map_keeps_its_order_queue_small() {
        let mut m: BoundedMap<u64, ()> = BoundedMap::new(4);
        for i in 0..10_000u64 {
            m.get_or_insert_with(i, || ());
            if i % 2 == 0 {
                m.remove(&i);
            }
        }
        assert!(m.len() <= 4);
        assert!(m.order.len() <= 2 * 4 + 64 + 1, "{}", m.order.len());
    }
}
