//! [`ConnTable`]: one worker's connection table, flow → backend, an exact
//! LRU of bounded size (Katran's per-CPU `LRU_HASH` map).
//!
//! This module owns the table's memory and order only; what a hit or a
//! miss means, and the counters, belong to [`crate::lb`]. The table holds
//! at most its capacity: inserting into a full table evicts the least
//! recently used entry (reported, so it can be counted). Entries sit in
//! one vector linked in use order, found through a hash map of indices, so
//! a lookup, an insert and an eviction are O(1) and nothing is allocated
//! once the table has been full.

use hashbrown::HashMap;

/// A flow as the table keys it: Katran's `flow_key` (addresses, the two
/// ports as the VIP lookup left them, protocol). IPv4 addresses fill the
/// first 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// What the table remembers of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Index of the backend in the load balancer's backend list.
    pub backend: u32,
    /// When the flow was last seen (ms on the caller's clock); Katran ages
    /// UDP entries by it.
    pub atime_ms: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Debug)]
struct Node {
    key: FlowKey,
    entry: Entry,
    prev: u32,
    next: u32,
}

/// Flow → backend, least recently used first out; see the [module docs](self).
#[derive(Debug)]
pub struct ConnTable {
    map: HashMap<FlowKey, u32>,
    nodes: Vec<Node>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    /// Nodes taken out by [`ConnTable::remove`] or [`ConnTable::retain`],
    /// reused first.
    free: Vec<u32>,
    cap: usize,
}

impl ConnTable {
    /// A table of at most `cap` (at least 1) entries. Memory grows with use
    /// up to the capacity, never past it.
    pub fn new(cap: usize) -> ConnTable {
        ConnTable { map: HashMap::new(), nodes: Vec::new(), head: NIL, tail: NIL, free: Vec::new(), cap: cap.max(1) }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        match old {
            NIL => self.tail = i,
            o => self.nodes[o as usize].prev = i,
        }
        self.head = i;
    }

    /// The entry of `key`, made the most recently used.
    pub fn get(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        let i = *self.map.get(key)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&mut self.nodes[i as usize].entry)
    }

    /// The entry of `key` without touching the use order.
    pub fn peek(&self, key: &FlowKey) -> Option<&Entry> {
        self.map.get(key).map(|&i| &self.nodes[i as usize].entry)
    }

    /// Sets `key`'s entry (the most recently used now). Returns true when
    /// the table was full and its least recently used entry made room.
    pub fn insert(&mut self, key: FlowKey, entry: Entry) -> bool {
        if let Some(&i) = self.map.get(&key) {
            self.nodes[i as usize].entry = entry;
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return false;
        }
        let mut evicted = false;
        let i = if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = Node { key, entry, prev: NIL, next: NIL };
            i
        } else if self.nodes.len() < self.cap {
            self.nodes.push(Node { key, entry, prev: NIL, next: NIL });
            (self.nodes.len() - 1) as u32
        } else {
            // Full: the least recently used entry's node takes the new flow.
            let i = self.tail;
            self.unlink(i);
            let old = self.nodes[i as usize].key;
            self.map.remove(&old);
            self.nodes[i as usize] = Node { key, entry, prev: NIL, next: NIL };
            evicted = true;
            i
        };
        self.map.insert(key, i);
        self.push_front(i);
        evicted
    }

    /// Forgets `key`; returns its entry.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry> {
        let i = self.map.remove(key)?;
        self.unlink(i);
        self.free.push(i);
        Some(self.nodes[i as usize].entry)
    }

    /// Keeps the entries for which `f` gives a backend (possibly another
    /// index: used when the backend list changes), drops the others.
    /// Returns how many were dropped.
    pub fn retain(&mut self, mut f: impl FnMut(&Entry) -> Option<u32>) -> usize {
        let mut dropped = 0;
        let mut i = self.head;
        while i != NIL {
            let next = self.nodes[i as usize].next;
            match f(&self.nodes[i as usize].entry) {
                Some(b) => self.nodes[i as usize].entry.backend = b,
                None => {
                    let key = self.nodes[i as usize].key;
                    self.map.remove(&key);
                    self.unlink(i);
                    self.free.push(i);
                    dropped += 1;
                }
            }
            i = next;
        }
        dropped
    }

    /// The keys from most to least recently used (for tests and reports).
    pub fn keys(&self) -> Vec<FlowKey> {
        let mut out = Vec::with_capacity(self.len());
        let mut i = self.head;
        while i != NIL {
            out.push(self.nodes[i as usize].key);
            i = self.nodes[i as usize].next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u16) -> FlowKey {
        FlowKey { sport: n, proto: 6, ..FlowKey::default() }
    }

    fn e(b: u32) -> Entry {
        Entry { backend: b, atime_ms: 0 }
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut t = ConnTable::new(3);
        assert!(!t.insert(key(1), e(1)));
        assert!(!t.insert(key(2), e(2)));
        assert!(!t.insert(key(3), e(3)));
        assert_eq!(t.get(&key(1)).map(|x| x.backend), Some(1)); // 1 is fresh now
        assert!(t.insert(key(4), e(4))); // 2 goes
        assert_eq!(t.peek(&key(2)), None);
        assert_eq!(t.keys(), [key(4), key(1), key(3)]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn retain_remaps_and_drops() {
        let mut t = ConnTable::new(8);
        for n in 0..6 {
            t.insert(key(n), e(u32::from(n % 3)));
        }
        let dropped = t.retain(|x| match x.backend {
            0 => None,
            b => Some(b + 10),
        });
        assert_eq!(dropped, 2);
        assert_eq!(t.len(), 4);
        assert_eq!(t.peek(&key(1)).map(|x| x.backend), Some(11));
        assert_eq!(t.peek(&key(3)), None);
        // Freed nodes are reused before the table grows.
        t.insert(key(100), e(1));
        t.insert(key(101), e(1));
        assert_eq!(t.nodes.len(), 6);
    }

    proptest! {
        /// Against a plain model (a vector in use order): same contents,
        /// same order, never more than the capacity.
        #[test]
        fn matches_a_model(cap in 1usize..8, ops in proptest::collection::vec((0u8..3, 0u16..12), 0..200)) {
            let mut t = ConnTable::new(cap);
            let mut model: Vec<(u16, u32)> = Vec::new(); // most recent first
            for (i, (op, k)) in ops.into_iter().enumerate() {
                match op {
                    0 => {
                        let was_full = model.len() == cap && !model.iter().any(|m| m.0 == k);
                        model.retain(|m| m.0 != k);
                        if was_full { model.pop(); }
                        model.insert(0, (k, i as u32));
                        prop_assert_eq!(t.insert(key(k), e(i as u32)), was_full);
                    }
                    1 => {
                        let got = t.get(&key(k)).map(|x| x.backend);
                        let want = model.iter().position(|m| m.0 == k).map(|p| { let m = model.remove(p); model.insert(0, m); m.1 });
                        prop_assert_eq!(got, want);
                    }
                    _ => {
                        let got = t.remove(&key(k)).map(|x| x.backend);
                        let want = model.iter().position(|m| m.0 == k).map(|p| model.remove(p).1);
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert!(t.len() <= cap);
                let keys: Vec<FlowKey> = model.iter().map(|m| key(m.0)).collect();
                prop_assert_eq!(t.keys(), keys);
            }
        }
    }
}
