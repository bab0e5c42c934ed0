//! [`FlowTable`]: which backend each spliced flow went to, so that its
//! `FLOW/END` (or a retry) can find it.
//!
//! Bounded in entries and in age: an entry older than the table's TTL is
//! dropped, and when the table is full the oldest entry makes room. A
//! dropped entry is handed back to the caller (the balancer then counts
//! its flow as *untracked*: it still holds a connection, found again by
//! address when its `FLOW/END` comes). The table owns no counters of
//! backends; it only remembers. An entry costs about 100 bytes at most
//! (map slot and age-queue records), so the default million is ~100 MB
//! in the worst case and nothing until flows come.

use std::collections::{HashMap, VecDeque};

/// A flow: the worker that saw it and its flow id there (flow ids are
/// unique per worker).
pub type FlowKey = (u32, u64);

/// What is remembered of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// Index of the pool, and of the backend in it.
    pub pool: u16,
    pub backend: u16,
    /// Backends (by index below 64) this flow already tried.
    pub tried: u64,
    /// When it was inserted (ms on the balancer's clock).
    pub since: u64,
    generation: u32,
}

impl FlowEntry {
    pub fn new(pool: usize, backend: usize, tried: u64) -> FlowEntry {
        FlowEntry { pool: pool as u16, backend: backend as u16, tried, since: 0, generation: 0 }
    }
}

/// Why an entry left the table without its flow ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Older than the TTL.
    Expired,
    /// The oldest when the table was full.
    Evicted,
}

/// Flow → backend, bounded; see the [module docs](self).
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<FlowKey, FlowEntry>,
    /// Insertion order (so age order) of entries; records of entries removed
    /// since are skipped (their generation no longer matches).
    order: VecDeque<(FlowKey, u32)>,
    cap: usize,
    ttl_ms: u64,
    next_generation: u32,
}

impl FlowTable {
    /// A table of at most `cap` (at least 1) entries kept at most `ttl_ms`.
    pub fn new(cap: usize, ttl_ms: u64) -> FlowTable {
        let cap = cap.max(1);
        FlowTable {
            map: HashMap::with_capacity(cap.min(1 << 16)),
            order: VecDeque::new(),
            cap,
            ttl_ms,
            next_generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn get(&self, key: FlowKey) -> Option<&FlowEntry> {
        self.map.get(&key)
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Forgets `key` (its flow ended or is being re-decided).
    pub fn remove(&mut self, key: FlowKey) -> Option<FlowEntry> {
        self.map.remove(&key)
    }

    /// Drops the entries older than the TTL at `now`, handing each to `gone`.
    pub fn expire(&mut self, now: u64, mut gone: impl FnMut(FlowEntry, Dropped)) {
        while let Some(&(key, generation)) = self.order.front() {
            match self.map.get(&key) {
                Some(e) if e.generation == generation => {
                    if now.saturating_sub(e.since) < self.ttl_ms {
                        break;
                    }
                    let e = self.map.remove(&key).expect("just found");
                    gone(e, Dropped::Expired);
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }

    /// Remembers `entry` for `key` at `now` (replacing any entry of `key`,
    /// which is returned), making room first if the table is full (the
    /// oldest goes to `gone`).
    pub fn insert(
        &mut self,
        key: FlowKey,
        mut entry: FlowEntry,
        now: u64,
        mut gone: impl FnMut(FlowEntry, Dropped),
    ) -> Option<FlowEntry> {
        let old = self.map.remove(&key);
        while self.map.len() >= self.cap {
            let Some((k, generation)) = self.order.pop_front() else { break };
            if self.map.get(&k).is_some_and(|e| e.generation == generation) {
                let e = self.map.remove(&k).expect("just found");
                gone(e, Dropped::Evicted);
            }
        }
        entry.since = now;
        entry.generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.map.insert(key, entry);
        self.order.push_back((key, entry.generation));
        // Records of removed entries pile up when flows end quickly; keep
        // the queue within twice the table.
        if self.order.len() > 2 * self.cap.max(1024) {
            let map = &self.map;
            self.order.retain(|(k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
        old
    }

    /// Records in the age queue (for tests of the bound).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_by_age_and_evicts_the_oldest() {
        let mut t = FlowTable::new(3, 100);
        let mut gone = Vec::new();
        for i in 0..3u64 {
            t.insert((0, i), FlowEntry::new(0, i as usize, 0), i * 10, |e, why| gone.push((e.backend, why)));
        }
        assert!(gone.is_empty());
        t.insert((0, 9), FlowEntry::new(0, 9, 0), 40, |e, why| gone.push((e.backend, why)));
        assert_eq!(gone, vec![(0, Dropped::Evicted)]);
        assert_eq!(t.len(), 3);
        assert!(t.remove((0, 1)).is_some());
        t.expire(125, |e, why| gone.push((e.backend, why)));
        assert_eq!(gone, vec![(0, Dropped::Evicted), (2, Dropped::Expired)], "1 was removed, 9 is young");
        assert_eq!(t.len(), 1);
        t.expire(140, |e, why| gone.push((e.backend, why)));
        assert_eq!(gone.last(), Some(&(9, Dropped::Expired)));
        assert!(t.is_empty());
    }

    #[test]
    fn reinserting_a_flow_replaces_it_and_the_age_queue_stays_bounded() {
        let mut t = FlowTable::new(4, u64::MAX);
        let old = t.insert((1, 1), FlowEntry::new(0, 1, 0), 0, |_, _| panic!());
        assert!(old.is_none());
        let old = t.insert((1, 1), FlowEntry::new(0, 2, 0), 1, |_, _| panic!());
        assert_eq!(old.map(|e| e.backend), Some(1));
        assert_eq!(t.get((1, 1)).map(|e| e.backend), Some(2));
        for i in 0..100_000u64 {
            t.insert((0, i), FlowEntry::new(0, 0, 0), i, |_, _| {});
            t.remove((0, i));
        }
        assert!(t.queued() <= 2 * 1024 + 1, "{}", t.queued());
        assert_eq!(t.len(), 1);
    }
}
