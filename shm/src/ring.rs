//! Bounded single-producer single-consumer ring of `u32` values (slot indices
//! in practice) living in the arena.
//!
//! Roles are by convention and not checked: **exactly one producer** (one
//! thread in one process) calls `push`/`push_burst` on a given ring, and
//! **exactly one consumer** calls `pop`/`pop_burst`. Two producers (or two
//! consumers) on one ring lose or duplicate entries; they never cause
//! undefined behaviour, since every shared word is an atomic and every entry
//! index is masked into bounds.
//!
//! Indices are free-running `u32` counters (`prod` counts pushes, `cons`
//! pops) compared with wrapping arithmetic; with a power-of-two capacity of
//! at most 2^30 the difference `prod - cons` is always the fill level.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::layout::{RingHeader, RING_HEADER_SIZE};
use crate::raw::Mapping;

/// `push` on a full ring; carries the value back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full, value {0} not pushed")]
pub struct Full(pub u32);

/// A handle on one ring of the arena. Cheap to obtain; borrow of the arena.
#[derive(Debug, Clone, Copy)]
pub struct RingRef<'a> {
    hdr: &'a RingHeader,
    entries: &'a [AtomicU32],
    mask: u32,
}

/// Resets a ring to empty. Only the creator calls this, before READY.
pub(crate) fn init(ring: &RingRef<'_>) {
    ring.hdr.prod.0.store(0, Ordering::Relaxed);
    ring.hdr.cons.0.store(0, Ordering::Relaxed);
}

impl<'a> RingRef<'a> {
    pub(crate) fn new(map: &'a Mapping, off: usize, capacity: u32) -> Option<RingRef<'a>> {
        debug_assert!(capacity.is_power_of_two());
        let hdr = map.get::<RingHeader>(off)?;
        let entries = map.slice::<AtomicU32>(off.checked_add(RING_HEADER_SIZE)?, capacity as usize)?;
        Some(RingRef { hdr, entries, mask: capacity - 1 })
    }

    /// Number of entries the ring holds when full.
    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Current fill level (a snapshot; exact for the producer's lower bound
    /// of free space and the consumer's lower bound of available entries).
    pub fn len(&self) -> u32 {
        let cons = self.hdr.cons.0.load(Ordering::Acquire);
        let prod = self.hdr.prod.0.load(Ordering::Acquire);
        // `min` keeps a corrupted peer index from reporting more than fits.
        prod.wrapping_sub(cons).min(self.capacity())
    }

    /// True when [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Producer only: appends `v`, or returns it in [`Full`].
    pub fn push(&self, v: u32) -> Result<(), Full> {
        if self.push_burst(&[v]) == 1 {
            Ok(())
        } else {
            Err(Full(v))
        }
    }

    /// Producer only: appends as many leading values of `vals` as fit and
    /// returns how many.
    pub fn push_burst(&self, vals: &[u32]) -> usize {
        // Relaxed: only this producer writes `prod`, so we read our own value.
        let prod = self.hdr.prod.0.load(Ordering::Relaxed);
        // Acquire pairs with the consumer's Release store of `cons`: its reads
        // of the entries it freed happen-before our overwriting them.
        let cons = self.hdr.cons.0.load(Ordering::Acquire);
        let used = prod.wrapping_sub(cons).min(self.capacity());
        let n = (self.capacity() - used).min(u32::try_from(vals.len()).unwrap_or(u32::MAX));
        for (i, &v) in vals[..n as usize].iter().enumerate() {
            let at = prod.wrapping_add(i as u32) & self.mask;
            // Relaxed: the Release store of `prod` below publishes it.
            self.entries[at as usize].store(v, Ordering::Relaxed);
        }
        if n > 0 {
            // Release: the entry stores above happen-before a consumer's
            // Acquire load that sees the new `prod`.
            self.hdr.prod.0.store(prod.wrapping_add(n), Ordering::Release);
        }
        n as usize
    }

    /// Consumer only: removes the oldest value.
    pub fn pop(&self) -> Option<u32> {
        let mut one = [0];
        (self.pop_burst(&mut one) == 1).then_some(one[0])
    }

    /// Consumer only: removes up to `out.len()` oldest values into `out` and
    /// returns how many.
    pub fn pop_burst(&self, out: &mut [u32]) -> usize {
        // Relaxed: only this consumer writes `cons`.
        let cons = self.hdr.cons.0.load(Ordering::Relaxed);
        // Acquire pairs with the producer's Release store of `prod`: the
        // entries it wrote are visible to the loads below.
        let prod = self.hdr.prod.0.load(Ordering::Acquire);
        let avail = prod.wrapping_sub(cons).min(self.capacity());
        let n = avail.min(u32::try_from(out.len()).unwrap_or(u32::MAX));
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            let at = cons.wrapping_add(i as u32) & self.mask;
            *slot = self.entries[at as usize].load(Ordering::Relaxed);
        }
        if n > 0 {
            // Release: our entry reads happen-before the producer's Acquire
            // load that sees the new `cons` and reuses those entries.
            self.hdr.cons.0.store(cons.wrapping_add(n), Ordering::Release);
        }
        n as usize
    }

    /// Test hook: sets both indices to `v` (ring must be empty), to exercise
    /// the `u32` wrap of the free-running counters.
    #[cfg(test)]
    pub(crate) fn force_indices(&self, v: u32) {
        self.hdr.prod.0.store(v, Ordering::Relaxed);
        self.hdr.cons.0.store(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Arena, ArenaConfig};

    fn arena(name: &str, cap: u32) -> Arena {
        let p = std::env::temp_dir().join(format!("ubox-shm-test-{}-ring-{name}.arena", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let cfg =
            ArenaConfig { instance: "r".into(), slots: 1, slot_size: 8, rings: 2, ring_capacity: cap, data_bytes: 0 };
        Arena::create(&p, &cfg).unwrap()
    }

    #[test]
    fn full_and_empty() {
        let a = arena("full", 4);
        let r = a.ring(0).unwrap();
        assert_eq!(r.capacity(), 4);
        assert!(r.is_empty());
        assert_eq!(r.pop(), None);
        for v in 0..4 {
            r.push(v).unwrap();
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.push(9), Err(super::Full(9)));
        assert_eq!(r.push_burst(&[1, 2]), 0);
        for v in 0..4 {
            assert_eq!(r.pop(), Some(v));
        }
        assert_eq!(r.pop(), None);
        assert_eq!(r.pop_burst(&mut [0; 3]), 0);
        // The other ring is independent.
        assert!(a.ring(1).unwrap().is_empty());
    }

    #[test]
    fn bursts_partial() {
        let a = arena("burst", 8);
        let r = a.ring(0).unwrap();
        assert_eq!(r.push_burst(&[1, 2, 3, 4, 5]), 5);
        assert_eq!(r.push_burst(&[6, 7, 8, 9, 10]), 3);
        let mut out = [0; 6];
        assert_eq!(r.pop_burst(&mut out), 6);
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.pop_burst(&mut out), 2);
        assert_eq!(&out[..2], &[7, 8]);
        assert_eq!(r.push_burst(&[]), 0);
        assert_eq!(r.pop_burst(&mut []), 0);
    }

    #[test]
    fn wrap_around_entries_and_counters() {
        let a = arena("wrap", 8);
        let r = a.ring(0).unwrap();
        // Start near u32::MAX so the free-running counters wrap mid-test.
        r.force_indices(u32::MAX - 20);
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..100u32 {
            let k = (round % 7 + 1) as usize;
            let vals: Vec<u32> = (next_in..next_in + k as u32).collect();
            let pushed = r.push_burst(&vals);
            next_in += pushed as u32;
            assert!(r.len() <= 8);
            let mut out = vec![0; (round % 5 + 1) as usize];
            let got = r.pop_burst(&mut out);
            for &v in &out[..got] {
                assert_eq!(v, next_out);
                next_out += 1;
            }
            assert_eq!(r.len(), next_in - next_out);
        }
        while let Some(v) = r.pop() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 40, "the counters must have wrapped");
    }

    #[test]
    fn threads_spsc_order() {
        let a = arena("threads", 16);
        const N: u32 = 100_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                let r = a.ring(0).unwrap();
                let mut v = 0;
                while v < N {
                    if r.push(v).is_ok() {
                        v += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            });
            let r = a.ring(0).unwrap();
            let mut expect = 0;
            while expect < N {
                match r.pop() {
                    Some(v) => {
                        assert_eq!(v, expect);
                        expect += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
    }
}
