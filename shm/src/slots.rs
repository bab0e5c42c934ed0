//! The event slot pool: `slots` fixed-size slots, each a [`SlotHeader`]
//! (reference count, generation, free-list link) followed by `slot_size`
//! payload bytes, with a lock-free free list shared by every process.
//!
//! The free list is a Treiber stack whose head packs `(tag << 32) | index`
//! in one `AtomicU64`; every successful update bumps the tag, so a stale
//! head seen by a slow thread (the ABA case: pop X, pop Y, push X) fails its
//! compare-exchange instead of installing a dead link. Links are slot
//! indices, never pointers.
//!
//! ## Aliasing contract
//! A slot's payload belongs to whoever holds references to it (refcount ≥ 1).
//! While the refcount is exactly 1, the single holder may write it
//! ([`SlotPool::payload_mut`] checks this and takes `&mut self`); once it
//! hands the index to others (after [`retain`](SlotPool::retain), or by
//! pushing it on a ring and giving up its reference), everybody only reads.
//! Other threads and processes must follow the same rule; the pool checks
//! the refcount but cannot see which handle holds a reference, so use one
//! `SlotPool` handle per thread and never touch a payload you do not hold.

use std::sync::atomic::Ordering;

use crate::layout::{PoolHeader, SlotHeader, NIL, POOL_HEADER_SIZE, SLOT_HEADER_SIZE};
use crate::raw::Mapping;
use crate::Arena;

/// Index of a slot in the pool; what travels over rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct SlotIdx(pub u32);

/// Misuse of the slot pool. None of these corrupts the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("slot {idx} out of range: the pool has {capacity} slots")]
    OutOfRange { idx: u32, capacity: u32 },
    #[error("slot {idx} released while already free (double release); the release was ignored and counted")]
    DoubleRelease { idx: u32 },
    #[error("slot {idx} is free; take a reference (alloc) before using it")]
    NotAllocated { idx: u32 },
    #[error("slot {idx} reference count would overflow")]
    RefcountOverflow { idx: u32 },
    #[error("slot {idx} has {refcount} references; only the sole holder may write its payload")]
    NotExclusive { idx: u32, refcount: u32 },
    #[error("the slot pool is read-only in this process (NFs neither allocate nor free slots)")]
    ReadOnly,
}

fn pack(tag: u32, idx: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(idx)
}

fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// Builds the free list 0 → 1 → … → n-1. Only the creator calls this, before
/// READY.
pub(crate) fn init(arena: &Arena) -> crate::Result<()> {
    let pool = arena.slot_pool()?;
    for i in 0..pool.capacity {
        let slot = pool.slot(SlotIdx(i)).map_err(|e| crate::Error::BadConfig(e.to_string()))?;
        slot.refcount.store(0, Ordering::Relaxed);
        slot.generation.store(0, Ordering::Relaxed);
        slot.next.store(if i + 1 < pool.capacity { i + 1 } else { NIL }, Ordering::Relaxed);
    }
    let first = if pool.capacity > 0 { 0 } else { NIL };
    pool.hdr.head.0.store(pack(0, first), Ordering::Relaxed);
    pool.hdr.free.0.store(pool.capacity, Ordering::Relaxed);
    pool.hdr.double_releases.0.store(0, Ordering::Relaxed);
    Ok(())
}

/// A handle on the arena's slot pool. Not `Clone`: create one per thread with
/// [`Arena::slot_pool`], so that `payload_mut(&mut self)` is exclusive within
/// that thread.
#[derive(Debug)]
pub struct SlotPool<'a> {
    map: &'a Mapping,
    hdr: &'a PoolHeader,
    slots_off: usize,
    stride: usize,
    capacity: u32,
    payload_len: usize,
    /// False in NF processes, which map the pool read-only: allocating,
    /// retaining and releasing are refused there.
    writable: bool,
}

impl<'a> SlotPool<'a> {
    pub(crate) fn new(
        map: &'a Mapping,
        off: usize,
        capacity: u32,
        stride: usize,
        payload_len: usize,
        writable: bool,
    ) -> Option<SlotPool<'a>> {
        let hdr = map.get::<PoolHeader>(off)?;
        let slots_off = off.checked_add(POOL_HEADER_SIZE)?;
        // Bounds of the whole slot array, checked once; each access checks again.
        let len = stride.checked_mul(capacity as usize)?;
        map.bytes(slots_off, len)?;
        Some(SlotPool { map, hdr, slots_off, stride, capacity, payload_len, writable })
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Payload bytes per slot.
    pub fn payload_size(&self) -> usize {
        self.payload_len
    }

    /// Free slots. Exact when no alloc/release is in flight; while some are,
    /// it may briefly count a slot being freed before it is on the list.
    pub fn free_count(&self) -> u32 {
        self.hdr.free.0.load(Ordering::Relaxed)
    }

    /// Double releases detected since creation, by any process.
    pub fn double_releases(&self) -> u64 {
        self.hdr.double_releases.0.load(Ordering::Relaxed)
    }

    fn slot_off(&self, idx: SlotIdx) -> Result<usize, SlotError> {
        if idx.0 >= self.capacity {
            return Err(SlotError::OutOfRange { idx: idx.0, capacity: self.capacity });
        }
        Ok(self.slots_off + idx.0 as usize * self.stride)
    }

    fn slot(&self, idx: SlotIdx) -> Result<&'a SlotHeader, SlotError> {
        let off = self.slot_off(idx)?;
        self.map.get::<SlotHeader>(off).ok_or(SlotError::OutOfRange { idx: idx.0, capacity: self.capacity })
    }

    /// Takes a free slot with refcount 1, or `None` when the pool is empty.
    pub fn alloc(&self) -> Option<SlotIdx> {
        if !self.writable {
            return None;
        }
        // Acquire pairs with the Release CAS of the push that put the top
        // slot there: its `next` link (and the last holder's payload
        // accesses) are visible to us.
        let mut head = self.hdr.head.0.load(Ordering::Acquire);
        loop {
            let (tag, top) = unpack(head);
            if top == NIL {
                return None;
            }
            // A head outside the pool means a peer corrupted it: report empty
            // rather than touch memory we cannot vouch for.
            let slot = self.slot(SlotIdx(top)).ok()?;
            // May be stale if another thread pops `top` concurrently; then
            // the tag has moved on and the CAS below fails.
            let next = slot.next.load(Ordering::Relaxed);
            match self.hdr.head.0.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), next),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Relaxed: the new holder publishes the index (and so this
                    // store) with a Release ring push before anyone else uses it.
                    slot.refcount.store(1, Ordering::Relaxed);
                    slot.generation.fetch_add(1, Ordering::Relaxed);
                    // Decrement after the pop, increment before the push (in
                    // `release`): the counter never underflows.
                    self.hdr.free.0.fetch_sub(1, Ordering::Relaxed);
                    return Some(SlotIdx(top));
                }
                Err(h) => head = h,
            }
        }
    }

    /// Adds `n` references to an allocated slot.
    pub fn retain(&self, idx: SlotIdx, n: u32) -> Result<(), SlotError> {
        if !self.writable {
            return Err(SlotError::ReadOnly);
        }
        let slot = self.slot(idx)?;
        let mut rc = slot.refcount.load(Ordering::Relaxed);
        loop {
            if rc == 0 {
                return Err(SlotError::NotAllocated { idx: idx.0 });
            }
            let new = rc.checked_add(n).ok_or(SlotError::RefcountOverflow { idx: idx.0 })?;
            // Relaxed, as in `Arc::clone`: the caller already holds a
            // reference, so the slot cannot be freed under us.
            match slot.refcount.compare_exchange_weak(rc, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(r) => rc = r,
            }
        }
    }

    /// Drops one reference. Returns `Ok(true)` when it was the last one and
    /// the slot went back to the free list. A release of a free slot is
    /// refused with [`SlotError::DoubleRelease`] and counted.
    pub fn release(&self, idx: SlotIdx) -> Result<bool, SlotError> {
        if !self.writable {
            return Err(SlotError::ReadOnly);
        }
        let slot = self.slot(idx)?;
        let mut rc = slot.refcount.load(Ordering::Relaxed);
        loop {
            if rc == 0 {
                self.hdr.double_releases.0.fetch_add(1, Ordering::Relaxed);
                return Err(SlotError::DoubleRelease { idx: idx.0 });
            }
            // AcqRel, as in `Arc::drop`: Release orders our payload accesses
            // before the decrement; Acquire lets the last releaser see every
            // other holder's accesses before the slot is recycled.
            match slot.refcount.compare_exchange_weak(rc, rc - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(r) => rc = r,
            }
        }
        if rc != 1 {
            return Ok(false);
        }
        self.hdr.free.0.fetch_add(1, Ordering::Relaxed);
        let mut head = self.hdr.head.0.load(Ordering::Relaxed);
        loop {
            let (tag, top) = unpack(head);
            // Relaxed: published by the Release CAS below.
            slot.next.store(top, Ordering::Relaxed);
            match self.hdr.head.0.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), idx.0),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(true),
                Err(h) => head = h,
            }
        }
    }

    /// Current reference count (0 = free).
    pub fn refcount(&self, idx: SlotIdx) -> Result<u32, SlotError> {
        Ok(self.slot(idx)?.refcount.load(Ordering::Acquire))
    }

    /// How many times the slot has been allocated; lets a holder detect that
    /// an index it kept was recycled.
    pub fn generation(&self, idx: SlotIdx) -> Result<u32, SlotError> {
        Ok(self.slot(idx)?.generation.load(Ordering::Relaxed))
    }

    fn payload_off(&self, idx: SlotIdx) -> Result<usize, SlotError> {
        Ok(self.slot_off(idx)? + SLOT_HEADER_SIZE)
    }

    /// The payload of a slot the caller holds a reference to (read-only).
    pub fn payload(&self, idx: SlotIdx) -> Result<&[u8], SlotError> {
        if self.refcount(idx)? == 0 {
            return Err(SlotError::NotAllocated { idx: idx.0 });
        }
        let off = self.payload_off(idx)?;
        self.map.bytes(off, self.payload_len).ok_or(SlotError::OutOfRange { idx: idx.0, capacity: self.capacity })
    }

    /// The payload of a slot the caller holds the **only** reference to.
    /// Fails with [`SlotError::NotExclusive`] (or `NotAllocated`) otherwise.
    pub fn payload_mut(&mut self, idx: SlotIdx) -> Result<&mut [u8], SlotError> {
        if !self.writable {
            return Err(SlotError::ReadOnly);
        }
        match self.refcount(idx)? {
            0 => return Err(SlotError::NotAllocated { idx: idx.0 }),
            1 => {}
            refcount => return Err(SlotError::NotExclusive { idx: idx.0, refcount }),
        }
        let off = self.payload_off(idx)?;
        // SAFETY: refcount 1 means the caller holds the only reference
        // (module-level contract), so no other thread or process accesses
        // these bytes; `&mut self` ties the slice to an exclusive borrow of
        // this handle, so this handle hands out no other view meanwhile.
        unsafe { self.map.bytes_mut(off, self.payload_len) }
            .ok_or(SlotError::OutOfRange { idx: idx.0, capacity: self.capacity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArenaConfig;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering as O};

    static SEQ: AtomicUsize = AtomicUsize::new(0);

    fn arena(slots: u32) -> Arena {
        let n = SEQ.fetch_add(1, O::Relaxed);
        let p = std::env::temp_dir().join(format!("ubox-shm-test-{}-slots-{n}.arena", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let cfg =
            ArenaConfig { instance: "s".into(), slots, slot_size: 40, channels: 1, channel_capacity: 8, data_bytes: 0 };
        Arena::create(&p, &cfg).unwrap()
    }

    #[test]
    fn alloc_until_empty_then_release() {
        let a = arena(8);
        let pool = a.slot_pool().unwrap();
        assert_eq!(pool.capacity(), 8);
        assert_eq!(pool.free_count(), 8);
        let mut got = HashSet::new();
        while let Some(i) = pool.alloc() {
            assert_eq!(pool.refcount(i), Ok(1));
            assert!(got.insert(i), "slot {i:?} handed out twice");
        }
        assert_eq!(got.len(), 8);
        assert_eq!(pool.free_count(), 0);
        assert_eq!(pool.alloc(), None);
        for &i in &got {
            assert_eq!(pool.release(i), Ok(true));
        }
        assert_eq!(pool.free_count(), 8);
        let i = pool.alloc().unwrap();
        assert_eq!(pool.generation(i), Ok(2));
    }

    #[test]
    fn double_release_detected() {
        let a = arena(4);
        let pool = a.slot_pool().unwrap();
        let i = pool.alloc().unwrap();
        assert_eq!(pool.release(i), Ok(true));
        assert_eq!(pool.release(i), Err(SlotError::DoubleRelease { idx: i.0 }));
        assert_eq!(pool.release(i), Err(SlotError::DoubleRelease { idx: i.0 }));
        assert_eq!(pool.double_releases(), 2);
        // The list is intact: exactly 4 distinct slots come out.
        assert_eq!(pool.free_count(), 4);
        let all: HashSet<_> = std::iter::from_fn(|| pool.alloc()).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn retain_and_release_counts() {
        let a = arena(2);
        let mut pool = a.slot_pool().unwrap();
        let i = pool.alloc().unwrap();
        pool.payload_mut(i).unwrap().fill(0xab);
        pool.retain(i, 2).unwrap();
        assert_eq!(pool.refcount(i), Ok(3));
        assert_eq!(pool.payload_mut(i), Err(SlotError::NotExclusive { idx: i.0, refcount: 3 }));
        assert!(pool.payload(i).unwrap().iter().all(|&b| b == 0xab));
        assert_eq!(pool.release(i), Ok(false));
        assert_eq!(pool.release(i), Ok(false));
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.release(i), Ok(true));
        assert_eq!(pool.free_count(), 2);
        assert_eq!(pool.retain(i, 1), Err(SlotError::NotAllocated { idx: i.0 }));
        assert_eq!(pool.payload(i), Err(SlotError::NotAllocated { idx: i.0 }));
        let j = pool.alloc().unwrap();
        assert_eq!(pool.retain(j, u32::MAX), Err(SlotError::RefcountOverflow { idx: j.0 }));
    }

    #[test]
    fn out_of_range_is_an_error() {
        let a = arena(3);
        let mut pool = a.slot_pool().unwrap();
        let bad = SlotIdx(3);
        let e = SlotError::OutOfRange { idx: 3, capacity: 3 };
        assert_eq!(pool.release(bad), Err(e));
        assert_eq!(pool.retain(bad, 1), Err(e));
        assert_eq!(pool.payload(bad), Err(e));
        assert_eq!(
            pool.payload_mut(SlotIdx(u32::MAX)).unwrap_err(),
            SlotError::OutOfRange { idx: u32::MAX, capacity: 3 }
        );
        assert_eq!(pool.double_releases(), 0);
        assert_eq!(pool.payload_size(), 40);
    }

    #[test]
    fn payloads_do_not_overlap() {
        let a = arena(5);
        let mut pool = a.slot_pool().unwrap();
        let ids: Vec<_> = std::iter::from_fn(|| pool.alloc()).collect();
        for &i in &ids {
            pool.payload_mut(i).unwrap().fill(i.0 as u8 + 1);
        }
        for &i in &ids {
            assert!(pool.payload(i).unwrap().iter().all(|&b| b == i.0 as u8 + 1));
        }
    }

    #[test]
    fn threads_alloc_release_no_loss() {
        let a = arena(64);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let a = &a;
                s.spawn(move || {
                    let mut pool = a.slot_pool().unwrap();
                    for _ in 0..20_000 {
                        if let Some(i) = pool.alloc() {
                            pool.payload_mut(i).unwrap()[0] = t;
                            assert_eq!(pool.payload(i).unwrap()[0], t, "slot shared between threads");
                            assert_eq!(pool.release(i), Ok(true));
                        }
                    }
                });
            }
        });
        let pool = a.slot_pool().unwrap();
        assert_eq!(pool.free_count(), 64);
        assert_eq!(std::iter::from_fn(|| pool.alloc()).collect::<HashSet<_>>().len(), 64);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc,
        Retain(u32, u32),
        Release(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Indices up to 9 on a pool of 8: some are out of range.
        prop_oneof![
            Just(Op::Alloc),
            (0u32..10, 0u32..3).prop_map(|(i, n)| Op::Retain(i, n)),
            (0u32..10).prop_map(Op::Release),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn matches_model(ops in proptest::collection::vec(op(), 1..200)) {
            const CAP: u32 = 8;
            let a = arena(CAP);
            let pool = a.slot_pool().unwrap();
            let mut rc = [0u32; CAP as usize];
            let mut doubles = 0u64;
            for op in ops {
                match op {
                    Op::Alloc => match pool.alloc() {
                        Some(i) => {
                            prop_assert!(i.0 < CAP);
                            prop_assert_eq!(rc[i.0 as usize], 0, "allocated a held slot");
                            rc[i.0 as usize] = 1;
                        }
                        None => prop_assert!(rc.iter().all(|&r| r > 0)),
                    },
                    Op::Retain(i, n) => {
                        let got = pool.retain(SlotIdx(i), n);
                        if i >= CAP {
                            prop_assert_eq!(got, Err(SlotError::OutOfRange { idx: i, capacity: CAP }));
                        } else if rc[i as usize] == 0 {
                            prop_assert_eq!(got, Err(SlotError::NotAllocated { idx: i }));
                        } else {
                            prop_assert_eq!(got, Ok(()));
                            rc[i as usize] += n;
                        }
                    }
                    Op::Release(i) => {
                        let got = pool.release(SlotIdx(i));
                        if i >= CAP {
                            prop_assert_eq!(got, Err(SlotError::OutOfRange { idx: i, capacity: CAP }));
                        } else if rc[i as usize] == 0 {
                            doubles += 1;
                            prop_assert_eq!(got, Err(SlotError::DoubleRelease { idx: i }));
                        } else {
                            rc[i as usize] -= 1;
                            prop_assert_eq!(got, Ok(rc[i as usize] == 0));
                        }
                    }
                }
                let free = rc.iter().filter(|&&r| r == 0).count() as u32;
                prop_assert_eq!(pool.free_count(), free);
                prop_assert_eq!(pool.double_releases(), doubles);
                for (i, &r) in rc.iter().enumerate() {
                    prop_assert_eq!(pool.refcount(SlotIdx(i as u32)), Ok(r));
                }
            }
        }
    }
}
