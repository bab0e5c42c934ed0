//! Per-side bytestream reassembly into a caller-provided ring, and the
//! reader NFs use on that ring.
//!
//! The [`Reassembler`] owns only metadata (a few offsets and a bounded set
//! of out-of-order ranges, 344 bytes); the bytes live in a ring the
//! caller passes to every [`Reassembler::insert`] call, so that the runtime
//! can keep them in the shared-memory arena where NF processes read them.
//! Stream offset `o` lives at index `o % ring.len()`. The caller must pass
//! the same ring (same length) on every call for one stream; an empty ring
//! means "no storage" and stops reassembly with [`StopReason::NoBuffer`].
//!
//! Three offsets describe a stream, with `floor <= frontier <= written_end`:
//!
//! - **frontier**: the end of the contiguous stream. Bytes before it are
//!   final: they never change again (whatever the overlap policy), and
//!   [`TcpEvent::DataReady`](super::TcpEvent::DataReady) announces each
//!   advance.
//! - **floor**: the lowest offset a reader may still need, set by the caller
//!   with [`Reassembler::release`] (monotonic, at most the frontier). Bytes
//!   at or after the floor are never overwritten: data that would need ring
//!   space still pinned (`offset + len > floor + capacity`) stops
//!   reassembly for the side with [`StopReason::BufferFull`], or, with
//!   [`Reassembler::refuse_when_full`], is refused and counted.
//! - **written_end**: the highest offset ever written into the ring,
//!   out-of-order data included. Ring bytes for offsets in
//!   `[written_end - capacity, frontier)` are valid stream bytes; a reader
//!   asking for anything older gets [`ReadError::Overwritten`], never
//!   silently wrong bytes.
//!
//! Out-of-order data is written at its place in the ring but held apart, in
//! a set of at most [`MAX_OOO_RANGES`] ranges (the configured limit may be
//! lower), until the gap before it fills. A segment that would need one
//! range more than the limit is not reassembled (counted in
//! [`ReasmCounters::ooo_dropped`]); since the receiver will acknowledge
//! those bytes and the sender will not send them again, the monitor then
//! stops the side with [`StopReason::Gap`] when the receiver's ACK passes
//! the frontier (see [`Reassembler::acked`]).
//!
//! Overlaps are checked byte by byte against what the ring holds: bytes
//! that differ are a conflict (counted, reported once per segment with the
//! span from the first to the last differing byte); identical overlaps are
//! retransmissions. Under [`OverlapPolicy::FirstWins`] the stored bytes stay;
//! under [`OverlapPolicy::LastWins`] new bytes replace held out-of-order
//! bytes, but never bytes before the frontier.

use core::fmt;
use core::ops::Range;

/// Hard upper bound on out-of-order ranges per side (the inline array size).
pub const MAX_OOO_RANGES: usize = 16;

/// Which bytes win when a segment overlaps bytes already stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OverlapPolicy {
    /// Keep the bytes seen first (the default; what most TCP stacks do).
    #[default]
    FirstWins,
    /// Replace held out-of-order bytes with later ones. Bytes before the
    /// frontier, already released to readers, never change.
    LastWins,
}

/// Why reassembly stopped for one side. Once stopped, a side stays stopped
/// (until [`Reassembler::reset`]); the flow is still forwarded and tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StopReason {
    /// New data needed ring space still pinned by the floor
    /// (`offset + len > floor + capacity`): readers are too slow or a hole
    /// held the frontier back for a whole ring.
    BufferFull = 1,
    /// The caller had no storage to give (an empty ring: the global bound
    /// on reassembly memory was reached).
    NoBuffer = 2,
    /// The receiver acknowledged bytes the reassembler never got (dropped
    /// because the out-of-order range set was full, judged out of window, or
    /// not seen at all): the stream can no longer be completed.
    Gap = 3,
}

impl StopReason {
    /// snake_case name, for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::BufferFull => "buffer_full",
            StopReason::NoBuffer => "no_buffer",
            StopReason::Gap => "gap",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Lifetime counters of one side's reassembly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasmCounters {
    /// Non-empty segments processed while running.
    pub segments: u64,
    /// Segments that overlapped stored bytes, all of them identical.
    pub retransmits: u64,
    /// Segments with at least one byte differing from stored bytes.
    pub conflicts: u64,
    /// Segments held apart beyond the frontier.
    pub out_of_order: u64,
    /// Out-of-order segments not reassembled: the range set was full.
    pub ooo_dropped: u64,
    /// Segments not reassembled because they needed ring space readers
    /// still hold, with [`Reassembler::refuse_when_full`] (else the side
    /// stops with [`StopReason::BufferFull`]).
    pub full_refused: u64,
    /// Bytes offered after reassembly stopped.
    pub bytes_after_stop: u64,
}

/// What one [`Reassembler::insert`] did, for the caller to publish. At most
/// one of each; the monitor turns them into events in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Insert {
    /// Some bytes of the segment differ from stored ones: offset of the
    /// first differing byte and length up to the last one.
    pub conflict: Option<(u64, u32)>,
    /// The frontier advanced: the newly contiguous range `(start, end)`,
    /// `end` being the new frontier.
    pub ready: Option<(u64, u64)>,
    /// Reassembly stopped during this call.
    pub stopped: Option<StopReason>,
}

/// Sorted, disjoint, non-adjacent ranges in a fixed inline array.
#[derive(Clone, Copy, Debug)]
struct RangeSet {
    r: [(u64, u64); MAX_OOO_RANGES],
    len: u8,
}

impl RangeSet {
    const EMPTY: RangeSet = RangeSet { r: [(0, 0); MAX_OOO_RANGES], len: 0 };

    #[inline]
    fn as_slice(&self) -> &[(u64, u64)] {
        self.r.get(..usize::from(self.len)).unwrap_or(&[])
    }

    #[inline]
    fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether `[s, e)` overlaps or touches a range.
    fn touches(&self, s: u64, e: u64) -> bool {
        self.as_slice().iter().any(|&(a, b)| a <= e && s <= b)
    }

    /// Adds `[s, e)`, merging what it overlaps or touches. Returns false,
    /// changing nothing, when that needs a new range and `limit` (or the
    /// array) is full.
    fn insert(&mut self, s: u64, e: u64, limit: usize) -> bool {
        let n = self.len();
        let rs = self.as_slice();
        // Ranges i..j overlap or touch [s, e] (ends are sorted like starts).
        let i = rs.iter().position(|&(_, b)| b >= s).unwrap_or(n);
        let j = rs.iter().position(|&(a, _)| a > e).unwrap_or(n);
        if i >= j {
            if n >= limit.min(MAX_OOO_RANGES) {
                return false;
            }
            if let Some(tail) = self.r.get_mut(i..=n) {
                tail.rotate_right(1);
            }
            if let Some(slot) = self.r.get_mut(i) {
                *slot = (s, e);
            }
            self.len += 1;
        } else {
            let lo = rs.get(i).map_or(s, |r| r.0.min(s));
            let hi = rs.get(j - 1).map_or(e, |r| r.1.max(e));
            if let Some(slot) = self.r.get_mut(i) {
                *slot = (lo, hi);
            }
            // Drop i+1..j by rotating them past the end of the live part.
            if let Some(tail) = self.r.get_mut(i + 1..n) {
                tail.rotate_left(j - i - 1);
            }
            self.len -= (j - i - 1) as u8;
        }
        true
    }

    fn first(&self) -> Option<(u64, u64)> {
        self.as_slice().first().copied()
    }

    fn remove_first(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Some(live) = self.r.get_mut(..usize::from(self.len)) {
            live.rotate_left(1);
            self.len -= 1;
        }
    }
}

/// First and last differing offsets seen while comparing overlaps.
#[derive(Clone, Copy, Debug, Default)]
struct Diff {
    span: Option<(u64, u64)>,
}

impl Diff {
    /// Compares `data` with the ring bytes at stream offset `off`.
    fn compare(&mut self, ring: &[u8], off: u64, data: &[u8]) {
        let (a, b) = ring_slices(ring, off, data.len());
        let (d1, d2) = (data.get(..a.len()).unwrap_or(&[]), data.get(a.len()..).unwrap_or(&[]));
        self.part(off, a, d1);
        self.part(off + a.len() as u64, b, d2);
    }

    fn part(&mut self, off: u64, stored: &[u8], new: &[u8]) {
        let differs = |(x, y): (&u8, &u8)| x != y;
        let Some(first) = stored.iter().zip(new).position(differs) else { return };
        let last = stored.iter().zip(new).rposition(differs).unwrap_or(first);
        let (f, l) = (off + first as u64, off + last as u64);
        self.span = Some(match self.span {
            Some((a, b)) => (a.min(f), b.max(l)),
            None => (f, l),
        });
    }

    fn conflict(&self) -> Option<(u64, u32)> {
        self.span.map(|(f, l)| (f, u32::try_from(l - f + 1).unwrap_or(u32::MAX)))
    }
}

/// The (up to two) ring slices holding `len` bytes from stream offset `off`.
/// Empty slices when the ring is empty; `len` is capped at the ring size.
fn ring_slices(ring: &[u8], off: u64, len: usize) -> (&[u8], &[u8]) {
    let cap = ring.len();
    if cap == 0 {
        return (&[], &[]);
    }
    let pos = (off % cap as u64) as usize;
    let len = len.min(cap);
    let first = len.min(cap - pos);
    (ring.get(pos..pos + first).unwrap_or(&[]), ring.get(..len - first).unwrap_or(&[]))
}

/// Writes `data` (at most the ring size) at stream offset `off`.
fn ring_write(ring: &mut [u8], off: u64, data: &[u8]) {
    let cap = ring.len();
    if cap == 0 {
        return;
    }
    let pos = (off % cap as u64) as usize;
    let first = data.len().min(cap - pos);
    let (d1, d2) = (data.get(..first).unwrap_or(&[]), data.get(first..).unwrap_or(&[]));
    if let Some(dst) = ring.get_mut(pos..pos + first) {
        dst.copy_from_slice(d1);
    }
    if let Some(dst) = ring.get_mut(..d2.len()) {
        dst.copy_from_slice(d2);
    }
}

/// The bytes of `data` (which starts at stream offset `off`) for offsets
/// `from..to`.
fn chunk(data: &[u8], off: u64, from: u64, to: u64) -> &[u8] {
    let s = usize::try_from(from.saturating_sub(off)).unwrap_or(usize::MAX);
    let e = usize::try_from(to.saturating_sub(off)).unwrap_or(usize::MAX);
    data.get(s..e).unwrap_or(&[])
}

/// Reassembly metadata of one side of a TCP connection (the bytes live in
/// the caller's ring). See the module docs.
#[derive(Clone, Debug)]
pub struct Reassembler {
    frontier: u64,
    floor: u64,
    written_end: u64,
    counters: ReasmCounters,
    ranges: RangeSet,
    max_ranges: u8,
    policy: OverlapPolicy,
    stopped: Option<StopReason>,
    refuse_when_full: bool,
}

impl Reassembler {
    /// An empty stream at offset 0. `max_ranges` is the out-of-order range
    /// limit, clamped to `0..=MAX_OOO_RANGES` (0 holds nothing apart:
    /// out-of-order data is not reassembled).
    pub fn new(policy: OverlapPolicy, max_ranges: usize) -> Reassembler {
        Reassembler {
            frontier: 0,
            floor: 0,
            written_end: 0,
            counters: ReasmCounters::default(),
            ranges: RangeSet::EMPTY,
            max_ranges: max_ranges.min(MAX_OOO_RANGES) as u8,
            policy,
            stopped: None,
            refuse_when_full: false,
        }
    }

    /// A segment that needs ring space readers still hold is refused
    /// (counted in [`ReasmCounters::full_refused`], nothing stored, the
    /// side goes on) instead of stopping the side: for a caller that drops
    /// such a segment, so that its sender sends it again once the readers
    /// caught up. Kept by [`reset`](Self::reset).
    pub fn refuse_when_full(&mut self) {
        self.refuse_when_full = true;
    }

    /// [`Reassembler::new`] with the policy and range limit of a monitor
    /// configuration.
    pub fn from_config(cfg: &super::MonitorConfig) -> Reassembler {
        Reassembler::new(cfg.overlap, cfg.max_ooo_ranges)
    }

    /// Stores `data`, which starts at stream offset `offset`, into `ring`
    /// (always the same ring for this stream; `ring.len()` is the capacity)
    /// and reports what happened. Never panics and never writes outside
    /// `ring` or below the floor, whatever the arguments.
    pub fn insert(&mut self, ring: &mut [u8], offset: u64, data: &[u8]) -> Insert {
        let mut out = Insert::default();
        if data.is_empty() {
            return out;
        }
        if self.stopped.is_some() {
            self.counters.bytes_after_stop += data.len() as u64;
            return out;
        }
        let cap = ring.len() as u64;
        if cap == 0 {
            self.counters.bytes_after_stop += data.len() as u64;
            out.stopped = self.stop(StopReason::NoBuffer).then_some(StopReason::NoBuffer);
            return out;
        }
        self.counters.segments += 1;
        let end = offset.saturating_add(data.len() as u64);
        let mut diff = Diff::default();
        let mut overlapped = false;

        // Bytes before the frontier are final: compare what the ring still holds.
        if offset < self.frontier {
            overlapped = true;
            let old_end = end.min(self.frontier);
            let from = offset.max(self.written_end.saturating_sub(cap));
            if from < old_end {
                diff.compare(ring, from, chunk(data, offset, from, old_end));
            }
        }

        let start = offset.max(self.frontier);
        if start < end {
            if end > self.floor.saturating_add(cap) {
                out.conflict = diff.conflict();
                self.count_overlap(&diff, overlapped);
                if self.refuse_when_full {
                    self.counters.full_refused += 1;
                    return out;
                }
                self.counters.bytes_after_stop += end - start;
                out.stopped = self.stop(StopReason::BufferFull).then_some(StopReason::BufferFull);
                return out;
            }
            let extends = start == self.frontier;
            if !extends && !self.ranges.touches(start, end) && self.ranges.len() >= usize::from(self.max_ranges) {
                self.counters.ooo_dropped += 1;
                out.conflict = diff.conflict();
                self.count_overlap(&diff, overlapped);
                return out;
            }
            // Compare with held out-of-order bytes, then write.
            for &(a, b) in self.ranges.as_slice() {
                let (s, e) = (a.max(start), b.min(end));
                if s < e {
                    overlapped = true;
                    diff.compare(ring, s, chunk(data, offset, s, e));
                }
            }
            match self.policy {
                OverlapPolicy::LastWins => ring_write(ring, start, chunk(data, offset, start, end)),
                OverlapPolicy::FirstWins => {
                    // Only the parts no range covers.
                    let mut pos = start;
                    for &(a, b) in self.ranges.as_slice() {
                        if b <= pos {
                            continue;
                        }
                        if a >= end {
                            break;
                        }
                        if a > pos {
                            ring_write(ring, pos, chunk(data, offset, pos, a));
                        }
                        pos = b;
                    }
                    if pos < end {
                        ring_write(ring, pos, chunk(data, offset, pos, end));
                    }
                }
            }
            self.written_end = self.written_end.max(end);
            if extends {
                let old = self.frontier;
                let mut f = end;
                while let Some((a, b)) = self.ranges.first() {
                    if a > f {
                        break;
                    }
                    f = f.max(b);
                    self.ranges.remove_first();
                }
                self.frontier = f;
                out.ready = Some((old, f));
            } else {
                // Cannot fail: a new range was checked for above.
                let _ = self.ranges.insert(start, end, usize::from(self.max_ranges));
                self.counters.out_of_order += 1;
            }
        }
        out.conflict = diff.conflict();
        self.count_overlap(&diff, overlapped);
        out
    }

    fn count_overlap(&mut self, diff: &Diff, overlapped: bool) {
        if diff.span.is_some() {
            self.counters.conflicts += 1;
        } else if overlapped {
            self.counters.retransmits += 1;
        }
    }

    /// The receiver acknowledged stream bytes up to `offset` (exclusive;
    /// the FIN excluded). If that passes the frontier, the missing bytes
    /// will never be sent again: stops with [`StopReason::Gap`] and returns
    /// it (None if nothing changed).
    pub fn acked(&mut self, offset: u64) -> Option<StopReason> {
        if offset > self.frontier && self.stop(StopReason::Gap) {
            return Some(StopReason::Gap);
        }
        None
    }

    /// Readers no longer need bytes before `offset`: moves the floor up to
    /// it (never down, never past the frontier), freeing that ring space.
    pub fn release(&mut self, offset: u64) {
        self.floor = self.floor.max(offset.min(self.frontier));
    }

    /// Stops reassembly for this side (e.g. [`StopReason::NoBuffer`] when
    /// the caller cannot give it storage). Returns true if it was running.
    /// The caller reports a stop it makes itself; to have the monitor
    /// report it as an event instead, pass an empty ring.
    pub fn stop(&mut self, reason: StopReason) -> bool {
        if self.stopped.is_some() {
            return false;
        }
        self.stopped = Some(reason);
        true
    }

    /// Back to an empty stream at offset 0, running, counters cleared (a new
    /// connection on the same flow); policy, range limit and
    /// [`refuse_when_full`](Self::refuse_when_full) are kept.
    pub fn reset(&mut self) {
        let refuse = self.refuse_when_full;
        *self = Reassembler::new(self.policy, usize::from(self.max_ranges));
        self.refuse_when_full = refuse;
    }

    /// End of the contiguous stream.
    #[inline]
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Lowest offset readers may still need.
    #[inline]
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Highest offset ever written into the ring (what readers need, with
    /// the frontier, to build a [`RingReader`]).
    #[inline]
    pub fn written_end(&self) -> u64 {
        self.written_end
    }

    /// Why reassembly stopped, if it did.
    #[inline]
    pub fn stopped(&self) -> Option<StopReason> {
        self.stopped
    }

    /// The out-of-order ranges held apart, in stream order.
    pub fn ooo_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.as_slice().iter().map(|&(a, b)| a..b)
    }

    /// Number of out-of-order ranges held apart (at most the configured limit).
    #[inline]
    pub fn ooo_len(&self) -> usize {
        self.ranges.len()
    }

    /// The configured out-of-order range limit.
    #[inline]
    pub fn max_ranges(&self) -> usize {
        usize::from(self.max_ranges)
    }

    /// The overlap policy.
    #[inline]
    pub fn policy(&self) -> OverlapPolicy {
        self.policy
    }

    /// Lifetime counters.
    #[inline]
    pub fn counters(&self) -> ReasmCounters {
        self.counters
    }

    /// A reader over `ring` (the ring this reassembler writes) at the
    /// current frontier and written end.
    pub fn reader<'a>(&self, ring: &'a [u8]) -> RingReader<'a> {
        RingReader::new(ring, self.frontier, self.written_end)
    }
}

/// Why a [`RingReader::read`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ReadError {
    /// Part of the range was overwritten by newer data (the range starts
    /// before `written_end - capacity`): the reader fell behind.
    #[error("stream range overwritten: the reader fell behind the ring")]
    Overwritten,
    /// Part of the range is beyond the frontier: not reassembled yet.
    #[error("stream range not reassembled yet: it ends beyond the frontier")]
    NotYet,
    /// The range starts after its end.
    #[error("invalid stream range: start after end")]
    Invalid,
}

/// Read access to a reassembly ring from just the ring bytes and two
/// numbers the writer publishes: the frontier and the written end. This is
/// what an NF gets over the shared-memory arena.
///
/// A reader that has pinned its range (the writer's floor is at or below
/// its start) always gets valid bytes. An unpinned reader racing the writer
/// must re-read the published written end after copying and discard the
/// copy if the range now fails with [`ReadError::Overwritten`].
#[derive(Clone, Copy, Debug)]
pub struct RingReader<'a> {
    ring: &'a [u8],
    frontier: u64,
    written_end: u64,
}

impl<'a> RingReader<'a> {
    /// A reader over `ring` (its length is the capacity), the writer's
    /// frontier and written end. A frontier above the written end is
    /// treated as the written end.
    pub fn new(ring: &'a [u8], frontier: u64, written_end: u64) -> RingReader<'a> {
        RingReader { ring, frontier: frontier.min(written_end), written_end }
    }

    /// The offsets that can be read now: from what the ring still holds
    /// up to the frontier.
    pub fn readable(&self) -> Range<u64> {
        self.written_end.saturating_sub(self.ring.len() as u64).min(self.frontier)..self.frontier
    }

    /// The stream bytes of `range` as up to two slices (the second is
    /// non-empty when the range crosses the end of the ring), or why not.
    pub fn read(&self, range: Range<u64>) -> Result<(&'a [u8], &'a [u8]), ReadError> {
        if range.start > range.end {
            return Err(ReadError::Invalid);
        }
        if range.end > self.frontier {
            return Err(ReadError::NotYet);
        }
        if range.start < self.written_end.saturating_sub(self.ring.len() as u64) {
            return Err(ReadError::Overwritten);
        }
        let len = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
        Ok(ring_slices(self.ring, range.start, len))
    }

    /// [`read`](Self::read) copied into one `Vec` (convenience for tests and
    /// tools; the zero-copy path is `read`).
    pub fn read_vec(&self, range: Range<u64>) -> Result<Vec<u8>, ReadError> {
        let (a, b) = self.read(range)?;
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusing_when_full_keeps_the_side_running_and_takes_the_bytes_once_released() {
        let mut ring = [0u8; 8];
        let mut r = Reassembler::new(OverlapPolicy::FirstWins, 4);
        r.refuse_when_full();
        assert_eq!(r.insert(&mut ring, 0, b"abcdefgh").ready, Some((0, 8)));
        let out = r.insert(&mut ring, 8, b"ij");
        assert_eq!(out, Insert::default(), "refused: nothing ready, no stop");
        assert_eq!((r.counters().full_refused, r.stopped(), r.frontier()), (1, None, 8));
        r.release(4);
        assert_eq!(r.insert(&mut ring, 8, b"ij").ready, Some((8, 10)), "sent again, kept");
        assert_eq!(&ring[..2], b"ij");
        r.reset();
        assert_eq!(r.insert(&mut ring, 0, b"abcdefgh").ready, Some((0, 8)));
        let _ = r.insert(&mut ring, 8, b"x");
        assert_eq!((r.counters().full_refused, r.stopped()), (1, None), "kept across reset");
        // Without it, the side stops.
        let mut r = Reassembler::new(OverlapPolicy::FirstWins, 4);
        let _ = r.insert(&mut ring, 0, b"abcdefgh");
        assert_eq!(r.insert(&mut ring, 8, b"ij").stopped, Some(StopReason::BufferFull));
    }

    #[test]
    fn range_set_merges_and_bounds() {
        let mut r = RangeSet::EMPTY;
        assert!(r.insert(10, 20, 3));
        assert!(r.insert(30, 40, 3));
        assert!(r.insert(50, 60, 3));
        assert!(!r.insert(70, 80, 3), "full");
        assert!(r.insert(20, 30, 3), "touching both neighbours merges");
        assert_eq!(r.as_slice(), &[(10, 40), (50, 60)]);
        assert!(r.insert(0, 5, 3));
        assert_eq!(r.as_slice(), &[(0, 5), (10, 40), (50, 60)]);
        assert!(r.insert(3, 55, 3));
        assert_eq!(r.as_slice(), &[(0, 60)]);
        r.remove_first();
        assert_eq!(r.len(), 0);
        r.remove_first();
        assert_eq!(r.len(), 0);
        for i in 0..MAX_OOO_RANGES as u64 {
            assert!(r.insert(i * 10, i * 10 + 5, 99));
        }
        assert!(!r.insert(1000, 1001, 99), "array bound");
        assert!(r.touches(5, 10) && !r.touches(6, 9));
    }

    #[test]
    fn ring_slices_wrap() {
        let ring: Vec<u8> = (0..8).collect();
        assert_eq!(ring_slices(&ring, 6, 4), (&[6u8, 7][..], &[0u8, 1][..]));
        assert_eq!(ring_slices(&ring, 16, 3), (&[0u8, 1, 2][..], &[][..]));
        assert_eq!(ring_slices(&ring, 3, 100).0.len() + ring_slices(&ring, 3, 100).1.len(), 8);
        assert_eq!(ring_slices(&[], 3, 4), (&[][..], &[][..]));
        let mut ring = [0u8; 8];
        ring_write(&mut ring, 14, &[1, 2, 3, 4]);
        assert_eq!(ring, [3, 4, 0, 0, 0, 0, 1, 2]);
        ring_write(&mut ring, 0, &[9; 20]); // longer than the ring: no panic
    }
}
