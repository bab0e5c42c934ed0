//! Wrapping TCP sequence-number arithmetic (RFC 9293 §3.4) and the mapping
//! from 32-bit sequence numbers to 64-bit stream offsets.
//!
//! Sequence numbers are compared modulo 2^32: `a` is "before" `b` when the
//! signed 32-bit distance `a - b` is negative. That is only meaningful for
//! numbers less than 2^31 apart, which TCP guarantees for live data (windows
//! are at most 2^30).
//!
//! Stream offsets are `u64` byte counts from the start of one side's stream
//! (the first byte after its SYN, or the first byte seen when a flow is
//! picked up mid-stream). They never wrap. [`rel_offset`] turns a sequence
//! number into an offset by measuring its signed distance to a nearby offset
//! whose sequence number is known, so a stream can cross 2^32 any number of
//! times.

/// Signed distance `a - b` in sequence space.
#[inline]
pub const fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// `a` comes strictly before `b`.
#[inline]
pub const fn seq_lt(a: u32, b: u32) -> bool {
    seq_diff(a, b) < 0
}

/// `a` comes before `b` or equals it.
#[inline]
pub const fn seq_le(a: u32, b: u32) -> bool {
    seq_diff(a, b) <= 0
}

/// `a` comes strictly after `b`.
#[inline]
pub const fn seq_gt(a: u32, b: u32) -> bool {
    seq_diff(a, b) > 0
}

/// `a` comes after `b` or equals it.
#[inline]
pub const fn seq_ge(a: u32, b: u32) -> bool {
    seq_diff(a, b) >= 0
}

/// The later of two sequence numbers.
#[inline]
pub const fn seq_max(a: u32, b: u32) -> u32 {
    if seq_gt(a, b) {
        a
    } else {
        b
    }
}

/// Sequence number of stream offset `off` in a stream whose offset 0 has
/// sequence number `base`.
#[inline]
pub const fn seq_at(base: u32, off: u64) -> u32 {
    base.wrapping_add(off as u32)
}

/// Stream offset of sequence number `seq`, in a stream whose offset 0 has
/// sequence number `base`, resolved to the candidate nearest to the offset
/// `near` (within 2^31 either way). Negative when `seq` lies before the
/// start of the stream (e.g. the ISN itself, whose offset is -1). Saturates
/// instead of overflowing for offsets near 2^63, which no stream reaches.
#[inline]
pub fn rel_offset(seq: u32, base: u32, near: u64) -> i64 {
    let d = i64::from(seq_diff(seq, seq_at(base, near)));
    i64::try_from(near).unwrap_or(i64::MAX).saturating_add(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_wrap() {
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_gt(0, u32::MAX));
        assert!(seq_le(5, 5) && seq_ge(5, 5));
        assert_eq!(seq_diff(2, u32::MAX - 1), 4);
        assert_eq!(seq_max(u32::MAX - 3, 2), 2);
        assert_eq!(seq_max(7, 3), 7);
        assert_eq!(seq_at(u32::MAX, 2), 1);
    }

    #[test]
    fn offsets_cross_the_wrap() {
        let base = u32::MAX - 9; // offset 10 is seq 0
        assert_eq!(rel_offset(0, base, 0), 10);
        assert_eq!(rel_offset(base.wrapping_sub(1), base, 0), -1);
        // Far along the stream (several wraps), near the reference.
        let near = 5 * (1u64 << 32) + 1000;
        assert_eq!(rel_offset(seq_at(base, near + 77), base, near), (near + 77) as i64);
        assert_eq!(rel_offset(seq_at(base, near - 77), base, near), (near - 77) as i64);
        assert_eq!(rel_offset(0, 0, u64::MAX), i64::MAX.saturating_add(seq_diff(0, u64::MAX as u32).into()));
    }
}
