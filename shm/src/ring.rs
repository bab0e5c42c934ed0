//! Bounded single-producer single-consumer rings of fixed-size entries
//! living in the arena: the event path between a worker and an NF.
//!
//! A ring is a [`RingHeader`] (producer line, consumer line, doorbell line)
//! followed by `capacity` entries of [`Entry::WORDS`] `u64` words each.
//! Indices are free-running `u32` counters (`prod` counts pushes, `cons`
//! pops) compared with wrapping arithmetic; with a power-of-two capacity of
//! at most 2^30 the difference `prod - cons` is the fill level.
//!
//! # Cost per burst, not per entry
//! [`Producer`] and [`Consumer`] are stateful handles in the manner of
//! rigtorp's SPSCQueue: each keeps its own index locally and a cached copy
//! of the other side's. The producer re-reads the consumer's index only
//! when the cached copy shows less room than the burst needs, the consumer
//! re-reads the producer's only when the cached copy shows fewer entries
//! than it asks for, and each side publishes its own index once per burst. A burst of `n` entries thus
//! costs the entries' own lines (`n · WORDS · 8 / 64`) plus about two index
//! lines crossing between cores, whatever `n` is.
//!
//! # Roles and bad peers
//! Roles are by convention: **exactly one producer** (one thread in one
//! process) pushes on a ring and **exactly one consumer** pops. A second
//! producer or consumer loses or duplicates entries; it never causes
//! undefined behaviour, since every shared word is an atomic and every entry
//! index is masked into bounds. A peer's index that no peer could have
//! written (a producer more than the capacity ahead, a consumer ahead of the
//! producer) makes the handle report nothing to pop or no room, and
//! `broken()` from then on: the ring's memory was written by something else,
//! and the runtime stops using it. Entries are plain values: whoever reads
//! one must validate it.
//!
//! When a consumer dies its producer may take over the consumer's role
//! (the runtime drains a dead NF's ring): make a fresh [`Consumer`], which
//! starts from the index the dead one published.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::layout::{RingHeader, RING_HEADER_SIZE};
use crate::raw::{futex_wait, futex_wake, Mapping};

/// A fixed-size value carried by a ring, stored as `WORDS` atomic `u64`s.
pub trait Entry: Copy {
    /// Words per entry.
    const WORDS: usize;
    /// Stores `self` into `to` (exactly `WORDS` words), relaxed.
    fn store(&self, to: &[AtomicU64]);
    /// Loads a value from `from` (exactly `WORDS` words), relaxed. Any bit
    /// pattern must give a value (a peer may have written anything).
    fn load(from: &[AtomicU64]) -> Self;
}

impl Entry for u64 {
    const WORDS: usize = 1;
    #[inline(always)]
    fn store(&self, to: &[AtomicU64]) {
        to[0].store(*self, Ordering::Relaxed);
    }
    #[inline(always)]
    fn load(from: &[AtomicU64]) -> Self {
        from[0].load(Ordering::Relaxed)
    }
}

/// A view of one ring: its header and entries. Cheap to copy; borrows the
/// arena. Make a [`Producer`] or [`Consumer`] from it to move entries.
pub struct RingView<'a, E: Entry> {
    hdr: &'a RingHeader,
    words: &'a [AtomicU64],
    mask: u32,
    _e: PhantomData<E>,
}

impl<E: Entry> Clone for RingView<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E: Entry> Copy for RingView<'_, E> {}

impl<E: Entry> std::fmt::Debug for RingView<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingView").field("capacity", &self.capacity()).field("len", &self.len()).finish()
    }
}

impl<'a, E: Entry> RingView<'a, E> {
    pub(crate) fn new(map: &'a Mapping, off: usize, capacity: u32) -> Option<RingView<'a, E>> {
        debug_assert!(capacity.is_power_of_two());
        let hdr = map.get::<RingHeader>(off)?;
        let words = map.slice::<AtomicU64>(off.checked_add(RING_HEADER_SIZE)?, capacity as usize * E::WORDS)?;
        Some(RingView { hdr, words, mask: capacity - 1, _e: PhantomData })
    }

    /// Resets the ring to empty. Only the arena's creator calls this,
    /// before READY.
    pub(crate) fn init(&self) {
        self.hdr.prod.0.index.store(0, Ordering::Relaxed);
        self.hdr.cons.0.index.store(0, Ordering::Relaxed);
        self.hdr.cons.0.bursts.store(0, Ordering::Relaxed);
        self.hdr.cons.0.items.store(0, Ordering::Relaxed);
        self.hdr.cons.0.busy_ns.store(0, Ordering::Relaxed);
        self.hdr.bell.0.store(0, Ordering::Relaxed);
    }

    /// Entries the ring holds when full.
    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Current fill level as the shared indices say (a snapshot, for
    /// stats; clamped to the capacity).
    pub fn len(&self) -> u32 {
        let cons = self.hdr.cons.0.index.load(Ordering::Acquire);
        let prod = self.hdr.prod.0.index.load(Ordering::Acquire);
        prod.wrapping_sub(cons).min(self.capacity())
    }

    /// True when [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the consumer reported about its work (see
    /// [`Consumer::report`]): bursts popped, entries popped and busy
    /// nanoseconds, as written by the consumer.
    pub fn consumer_report(&self) -> ConsumerReport {
        let c = &self.hdr.cons.0;
        ConsumerReport {
            bursts: c.bursts.load(Ordering::Relaxed),
            items: c.items.load(Ordering::Relaxed),
            busy_ns: c.busy_ns.load(Ordering::Relaxed),
        }
    }

    /// The ring's doorbell (see [`Bell`]).
    pub fn bell(&self) -> Bell<'a> {
        Bell { word: &self.hdr.bell.0 }
    }

    /// A producer handle starting from the shared producer index.
    pub fn producer(&self) -> Producer<'a, E> {
        let prod = self.hdr.prod.0.index.load(Ordering::Relaxed);
        let cons_cache = self.hdr.cons.0.index.load(Ordering::Acquire);
        Producer { ring: *self, prod, cons_cache, broken: false }
    }

    /// A consumer handle starting from the shared consumer index.
    pub fn consumer(&self) -> Consumer<'a, E> {
        let cons = self.hdr.cons.0.index.load(Ordering::Relaxed);
        let prod_cache = self.hdr.prod.0.index.load(Ordering::Acquire);
        Consumer { ring: *self, cons, prod_cache, broken: false }
    }

    /// Test hook: writes the shared indices as a peer gone wrong might.
    #[cfg(test)]
    pub(crate) fn poke(&self, prod: Option<u32>, cons: Option<u32>) {
        if let Some(p) = prod {
            self.hdr.prod.0.index.store(p, Ordering::Release);
        }
        if let Some(c) = cons {
            self.hdr.cons.0.index.store(c, Ordering::Release);
        }
    }

    #[inline(always)]
    fn entry(&self, index: u32) -> &'a [AtomicU64] {
        let at = (index & self.mask) as usize * E::WORDS;
        &self.words[at..at + E::WORDS]
    }
}

/// A doorbell in shared memory: lets an idle consumer sleep in the kernel
/// instead of polling, and costs its producers one load of a line that only
/// changes when the consumer goes to sleep.
///
/// The consumer [`arm`](Self::arm)s it, checks its rings once more, and
/// only if they are still empty [`wait`](Self::wait)s. A producer calls
/// [`wake`](Self::wake) after publishing a burst; that wakes the consumer
/// only when it is armed. The two fences make the race safe: either the
/// producer sees the bell armed and wakes, or the consumer's re-check sees
/// the new entries (Dekker's pattern).
///
/// A consumer serving several rings (an NF with one channel per worker) uses
/// one bell for all of them; every producer wakes that one.
#[derive(Clone, Copy, Debug)]
pub struct Bell<'a> {
    word: &'a AtomicU32,
}

impl Bell<'_> {
    /// Consumer: about to sleep. Re-check the rings after this.
    pub fn arm(&self) {
        self.word.store(1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Consumer: not sleeping after all (or woken).
    pub fn disarm(&self) {
        self.word.store(0, Ordering::Relaxed);
    }

    /// Consumer: sleep until woken or `timeout` passes (or at once if a
    /// producer already rang). Disarms.
    pub fn wait(&self, timeout: std::time::Duration) {
        futex_wait(self.word, 1, timeout);
        self.disarm();
    }

    /// Producer, after publishing entries: wake the consumer if it is
    /// armed. Returns whether it was (a system call was made).
    #[inline]
    pub fn wake(&self) -> bool {
        // Orders our index store before the load of the bell.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) == 0 || self.word.swap(0, Ordering::SeqCst) == 0 {
            return false;
        }
        futex_wake(self.word);
        true
    }
}

/// Counts a consumer publishes about itself on its own cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Non-empty bursts popped.
    pub bursts: u64,
    /// Entries popped.
    pub items: u64,
    /// Time spent handling them, in nanoseconds, as the consumer measured.
    pub busy_ns: u64,
}

/// The producer's handle on a ring. Not `Clone`: one per producer.
pub struct Producer<'a, E: Entry> {
    ring: RingView<'a, E>,
    /// Our index (the shared one is published by [`push_burst`](Self::push_burst)).
    prod: u32,
    /// The consumer's index as last read.
    cons_cache: u32,
    /// The consumer's index was once impossible (ahead of ours).
    broken: bool,
}

impl<E: Entry> std::fmt::Debug for Producer<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("prod", &self.prod).field("cons_cache", &self.cons_cache).finish()
    }
}

impl<'a, E: Entry> Producer<'a, E> {
    /// The ring this handle pushes on.
    pub fn view(&self) -> RingView<'a, E> {
        self.ring
    }

    /// Room for at least `want` entries? Reads the consumer's index only when
    /// the cached copy says there is less room than that. Returns the room
    /// known now (which may exceed `want`).
    #[inline]
    pub fn room(&mut self, want: u32) -> u32 {
        let cap = self.ring.capacity();
        let used = self.prod.wrapping_sub(self.cons_cache).min(cap);
        if cap - used >= want {
            return cap - used;
        }
        // Acquire pairs with the consumer's Release store of `cons`: its
        // reads of the entries it freed happen-before we overwrite them.
        self.cons_cache = self.ring.hdr.cons.0.index.load(Ordering::Acquire);
        if self.prod.wrapping_sub(self.cons_cache) > cap {
            // The consumer claims entries we never pushed: its memory was
            // written by something other than a consumer. Report no room.
            self.broken = true;
            return 0;
        }
        cap - self.prod.wrapping_sub(self.cons_cache)
    }

    /// Whether the consumer's index was ever seen ahead of ours (more
    /// consumed than produced): a peer that wrote the ring's memory
    /// arbitrarily. The ring can no longer be trusted.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Appends as many leading values of `vals` as fit, publishes the new
    /// index once, and returns how many.
    #[inline]
    pub fn push_burst(&mut self, vals: &[E]) -> usize {
        let want = u32::try_from(vals.len()).unwrap_or(u32::MAX);
        let n = self.room(want).min(want);
        for (i, v) in vals[..n as usize].iter().enumerate() {
            // Relaxed: the Release store of `prod` below publishes them.
            v.store(self.ring.entry(self.prod.wrapping_add(i as u32)));
        }
        if n > 0 {
            self.prod = self.prod.wrapping_add(n);
            // Release: the entry stores above happen-before a consumer's
            // Acquire load that sees the new `prod`.
            self.ring.hdr.prod.0.index.store(self.prod, Ordering::Release);
        }
        n as usize
    }

    /// Appends `v` if there is room.
    pub fn push(&mut self, v: E) -> bool {
        self.push_burst(&[v]) == 1
    }
}

/// The consumer's handle on a ring. Not `Clone`: one per consumer.
pub struct Consumer<'a, E: Entry> {
    ring: RingView<'a, E>,
    cons: u32,
    /// The producer's index as last read.
    prod_cache: u32,
    /// The producer's index was once impossible (more than a ring ahead).
    broken: bool,
}

impl<E: Entry> std::fmt::Debug for Consumer<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("cons", &self.cons).field("prod_cache", &self.prod_cache).finish()
    }
}

impl<'a, E: Entry> Consumer<'a, E> {
    /// The ring this handle pops from.
    pub fn view(&self) -> RingView<'a, E> {
        self.ring
    }

    /// Entries available now, at least `want` if there are; re-reads the
    /// producer's index only when the cached copy shows fewer than `want`.
    #[inline]
    pub fn available(&mut self, want: u32) -> u32 {
        let cap = self.ring.capacity();
        let avail = self.prod_cache.wrapping_sub(self.cons).min(cap);
        if avail >= want {
            return avail;
        }
        // Acquire pairs with the producer's Release store of `prod`: the
        // entries it wrote are visible to our loads.
        self.prod_cache = self.ring.hdr.prod.0.index.load(Ordering::Acquire);
        if self.prod_cache.wrapping_sub(self.cons) > cap {
            // More than a ring's worth ahead (or behind us): not a producer's
            // doing. Report nothing to pop.
            self.broken = true;
            self.prod_cache = self.cons;
            return 0;
        }
        self.prod_cache.wrapping_sub(self.cons)
    }

    /// Whether the producer's index was ever seen more than the capacity
    /// ahead of ours: a peer that wrote the ring's memory arbitrarily. The
    /// ring can no longer be trusted.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Removes up to `out.len()` oldest values into `out`, publishes the new
    /// index once, and returns how many.
    #[inline]
    pub fn pop_burst(&mut self, out: &mut [E]) -> usize {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = self.available(want).min(want);
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            *slot = E::load(self.ring.entry(self.cons.wrapping_add(i as u32)));
        }
        if n > 0 {
            self.cons = self.cons.wrapping_add(n);
            // Release: our entry reads happen-before the producer's Acquire
            // load that sees the new `cons` and reuses those entries.
            self.ring.hdr.cons.0.index.store(self.cons, Ordering::Release);
        }
        n as usize
    }

    /// Removes the oldest value.
    pub fn pop(&mut self) -> Option<E>
    where
        E: Default,
    {
        let mut one = [E::default()];
        (self.pop_burst(&mut one) == 1).then_some(one[0])
    }

    /// Adds to the counts this consumer publishes on its own line (read by
    /// the other side with [`RingView::consumer_report`]). Call once per
    /// burst: the line is the one `pop_burst` writes anyway.
    #[inline]
    pub fn report(&self, items: u64, busy_ns: u64) {
        let c = &self.ring.hdr.cons.0;
        // Single writer (this consumer): load + store, no locked instruction.
        c.bursts.store(c.bursts.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        c.items.store(c.items.load(Ordering::Relaxed).wrapping_add(items), Ordering::Relaxed);
        c.busy_ns.store(c.busy_ns.load(Ordering::Relaxed).wrapping_add(busy_ns), Ordering::Relaxed);
    }

    /// Test hook: sets both indices to `v` (ring must be empty), to exercise
    /// the `u32` wrap of the free-running counters.
    #[cfg(test)]
    pub(crate) fn force_indices(&mut self, p: &mut Producer<'_, E>, v: u32) {
        self.ring.hdr.prod.0.index.store(v, Ordering::Relaxed);
        self.ring.hdr.cons.0.index.store(v, Ordering::Relaxed);
        (self.cons, self.prod_cache, p.prod, p.cons_cache) = (v, v, v, v);
    }
}

#[cfg(test)]
mod tests {
    use crate::event::{Answer, Desc};
    use crate::{Arena, ArenaConfig};

    fn arena(name: &str, cap: u32) -> Arena {
        let p = std::env::temp_dir().join(format!("ubox-shm-test-{}-ring-{name}.arena", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let cfg = ArenaConfig {
            instance: "r".into(),
            slots: 1,
            slot_size: 8,
            channels: 2,
            channel_capacity: cap,
            data_bytes: 0,
        };
        Arena::create(&p, &cfg).unwrap()
    }

    #[test]
    fn impossible_peer_indices_break_the_handle_and_move_nothing() {
        let a = arena("broken", 8);
        let ch = a.channel(0).unwrap();
        // A producer that claims a billion answers.
        let mut rx = ch.answer.consumer();
        ch.answer.poke(Some(1_000_000_000), None);
        let mut out = [Answer::default(); 64];
        assert_eq!(rx.pop_burst(&mut out), 0);
        assert!(rx.broken());
        // A consumer that claims to have taken what was never pushed.
        let mut tx = ch.desc.producer();
        assert!(tx.push(desc(1)));
        ch.desc.poke(None, Some(5));
        assert_eq!(tx.room(16), 0, "no room is reported");
        assert!(tx.broken());
        assert_eq!(tx.push_burst(&[desc(2)]), 0);
        // An honest pair stays whole.
        let other = a.channel(1).unwrap();
        let (mut p, mut c) = (other.desc.producer(), other.desc.consumer());
        for i in 0..100 {
            assert!(p.push(desc(i)));
            assert_eq!(c.pop().map(|d| d.type_id), Some(i));
        }
        assert!(!p.broken() && !c.broken());
    }

    fn desc(i: u64) -> Desc {
        Desc { type_id: i, flow_id: !i, data: i * 3, len: i as u16, side: (i & 1) as u8, flags: 0, cookie: i as u32 }
    }

    #[test]
    fn full_and_empty() {
        let a = arena("full", 4);
        let ch = a.channel(0).unwrap();
        let (mut p, mut c) = (ch.desc.producer(), ch.desc.consumer());
        assert_eq!(ch.desc.capacity(), 4);
        assert_eq!(ch.answer.capacity(), 8, "answer rings hold twice the descriptors");
        assert!(ch.desc.is_empty());
        assert_eq!(c.pop(), None);
        for v in 0..4 {
            assert!(p.push(desc(v)));
        }
        assert_eq!(ch.desc.len(), 4);
        assert!(!p.push(desc(9)));
        assert_eq!(p.push_burst(&[desc(1), desc(2)]), 0);
        for v in 0..4 {
            assert_eq!(c.pop(), Some(desc(v)));
        }
        assert_eq!(c.pop(), None);
        assert_eq!(c.pop_burst(&mut [Desc::default(); 3]), 0);
        // The other channel and this channel's answer ring are independent.
        assert!(a.channel(1).unwrap().desc.is_empty());
        assert!(ch.answer.is_empty());
    }

    #[test]
    fn bursts_partial_and_cached_indices() {
        let a = arena("burst", 8);
        let ch = a.channel(0).unwrap();
        let (mut p, mut c) = (ch.answer.producer(), ch.answer.consumer());
        let v: Vec<Answer> = (0..20).map(|i| Answer::verdict(i, 1)).collect();
        assert_eq!(p.push_burst(&v[..10]), 10);
        assert_eq!(p.push_burst(&v[10..]), 6, "16 entries of room");
        let mut out = [Answer::default(); 6];
        assert_eq!(c.pop_burst(&mut out), 6);
        assert_eq!(&out[..], &v[..6]);
        // The producer still believes the ring is full until it asks again.
        assert_eq!(p.room(1), 6);
        assert_eq!(p.push_burst(&v[16..]), 4);
        let mut rest = [Answer::default(); 32];
        assert_eq!(c.pop_burst(&mut rest), 14);
        assert_eq!(&rest[..10], &v[6..16]);
        assert_eq!(&rest[10..14], &v[16..]);
        assert_eq!(p.push_burst(&[]), 0);
        assert_eq!(c.pop_burst(&mut []), 0);
    }

    #[test]
    fn wrap_around_entries_and_counters() {
        let a = arena("wrap", 8);
        let ch = a.channel(0).unwrap();
        let (mut p, mut c) = (ch.desc.producer(), ch.desc.consumer());
        // Start near u32::MAX so the free-running counters wrap mid-test.
        c.force_indices(&mut p, u32::MAX - 20);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        for round in 0..100u64 {
            let k = round % 7 + 1;
            let vals: Vec<Desc> = (next_in..next_in + k).map(desc).collect();
            next_in += p.push_burst(&vals) as u64;
            assert!(ch.desc.len() <= 8);
            let mut out = vec![Desc::default(); (round % 5 + 1) as usize];
            let got = c.pop_burst(&mut out);
            for v in &out[..got] {
                assert_eq!(*v, desc(next_out));
                next_out += 1;
            }
            assert_eq!(u64::from(ch.desc.len()), next_in - next_out);
        }
        while let Some(v) = c.pop() {
            assert_eq!(v, desc(next_out));
            next_out += 1;
        }
        assert_eq!(next_in, next_out);
        assert!(next_in > 40, "the counters must have wrapped");
    }

    #[test]
    fn a_fresh_consumer_resumes_where_the_last_one_stopped() {
        let a = arena("takeover", 8);
        let ch = a.channel(0).unwrap();
        let mut p = ch.desc.producer();
        for i in 0..6 {
            assert!(p.push(desc(i)));
        }
        {
            let mut dead = ch.desc.consumer();
            assert_eq!(dead.pop(), Some(desc(0)));
            assert_eq!(dead.pop(), Some(desc(1)));
        }
        // The producer takes over the dead consumer's role.
        let mut heir = ch.desc.consumer();
        let mut out = [Desc::default(); 8];
        assert_eq!(heir.pop_burst(&mut out), 4);
        assert_eq!(out[0], desc(2));
        assert!(ch.desc.is_empty());
        // A consumer made later (the NF's next run) starts on an empty ring.
        assert_eq!(ch.desc.consumer().pop(), None);
    }

    #[test]
    fn consumer_reports_add_up() {
        let a = arena("report", 8);
        let ch = a.channel(1).unwrap();
        let c = ch.desc.consumer();
        c.report(32, 1000);
        c.report(8, 500);
        let r = ch.desc.consumer_report();
        assert_eq!((r.bursts, r.items, r.busy_ns), (2, 40, 1500));
    }

    #[test]
    fn a_sleeping_consumer_is_woken_by_the_producer() {
        use std::time::{Duration, Instant};
        let a = arena("bell", 16);
        let ch = a.channel(0).unwrap();
        let bell = ch.desc.bell();
        // Nobody armed it: no wake-up call is made.
        assert!(!bell.wake());
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut c = a.channel(0).unwrap().desc.consumer();
                let t = Instant::now();
                loop {
                    if let Some(d) = c.pop() {
                        return (d, t.elapsed());
                    }
                    bell.arm();
                    if c.available(1) > 0 {
                        bell.disarm();
                        continue;
                    }
                    bell.wait(Duration::from_secs(30));
                }
            });
            std::thread::sleep(Duration::from_millis(50));
            let mut p = ch.desc.producer();
            assert!(p.push(desc(5)));
            bell.wake();
            let (d, waited) = waiter.join().unwrap();
            assert_eq!(d, desc(5));
            assert!(waited < Duration::from_secs(10), "woken by the push, not by the timeout: {waited:?}");
        });
    }

    #[test]
    fn threads_spsc_order() {
        let a = arena("threads", 16);
        const N: u64 = 100_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut p = a.channel(0).unwrap().desc.producer();
                let mut v = 0;
                while v < N {
                    let burst: Vec<Desc> = (v..(v + 5).min(N)).map(desc).collect();
                    let n = p.push_burst(&burst);
                    v += n as u64;
                    if n == 0 {
                        std::thread::yield_now();
                    }
                }
            });
            let mut c = a.channel(0).unwrap().desc.consumer();
            let mut expect = 0;
            let mut out = [Desc::default(); 7];
            while expect < N {
                let n = c.pop_burst(&mut out);
                for v in &out[..n] {
                    assert_eq!(*v, desc(expect));
                    expect += 1;
                }
                if n == 0 {
                    std::thread::yield_now();
                }
            }
        });
    }
}
