//! The Maglev ring, built as Katran builds it (`MaglevBase.cpp`,
//! `MaglevHash.cpp`, `MaglevHashV2.cpp`).
//!
//! This module owns ring construction only: it knows endpoints (a number,
//! a weight, a 64-bit hash), not addresses or packets.
//!
//! - Each endpoint's permutation: `offset = murmur3(hash, 42, seed 0) % M`,
//!   `skip = murmur3(hash, 2718281828, seed 2307) % (M - 1) + 1`.
//! - Endpoints take slots in turn, each at the next free place along its
//!   permutation, until all `M` slots are taken. [`ring`] does not sort:
//!   it takes the endpoints in the order given, as Katran's
//!   `generateHashRing` does; the VIP layer sorts them by hash first
//!   ([`sort_endpoints`], as Katran's `Vip` does).
//! - Weights, two ways ([`Variant`]):
//!   - **V1** (`Maglev`, Katran's default): in the first round an endpoint
//!     takes `weight` slots, from then on one per round. Weights so only
//!     tilt the shares ([2, 1] on 7 slots gives 4 : 3).
//!   - **V2** (`MaglevV2`): every round an endpoint adds its weight to a
//!     running sum and takes a slot each time the sum reaches the largest
//!     weight (then less that weight), so shares follow the weights
//!     ([2, 1] on 7 slots gives 5 : 2).
//! - No endpoint: every slot [`EMPTY`]; one endpoint: every slot its own.
//!
//! The ring size must be prime (65537, [`RING_SIZE`], in the load
//! balancer; Katran's tests also use 7, 11 and 97), else some skips would
//! not visit every slot; [`ring`] refuses other sizes.

/// Katran's `kDefaultChRingSize` (and `RING_SIZE` in its XDP program).
pub const RING_SIZE: u32 = 65537;

/// A ring slot no endpoint holds (Katran's `-1`).
pub const EMPTY: u32 = u32::MAX;

const OFFSET_B: u64 = 42;
const OFFSET_SEED: u32 = 0;
const SKIP_B: u64 = 2_718_281_828;
const SKIP_SEED: u32 = 2307;

/// One endpoint of a ring (Katran's `Endpoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What its slots hold.
    pub num: u32,
    /// Its weight (see [`Variant`]).
    pub weight: u32,
    /// Where its permutation starts and how it steps.
    pub hash: u64,
}

/// How weights turn into slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Variant {
    /// Katran's `HashFunction::Maglev`: `weight` slots in the first round.
    #[default]
    V1,
    /// Katran's `HashFunction::MaglevV2`: cumulative weights.
    V2,
}

impl Variant {
    /// The name in config files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Variant::V1 => "maglev",
            Variant::V2 => "maglev-v2",
        }
    }
}

/// Why a ring was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The size is not a prime number.
    NotPrime(u32),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::NotPrime(m) => write!(f, "ring size {m} is not prime; use a prime such as 65537"),
        }
    }
}

impl std::error::Error for RingError {}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// `(offset, skip)` of an endpoint with `hash` on a ring of `size` slots
/// (`size` at least 2).
pub fn permutation(hash: u64, size: u32) -> (u32, u32) {
    let m = u64::from(size);
    let offset = crate::hash::murmur3_x64_64(hash, OFFSET_B, OFFSET_SEED) % m;
    let skip = crate::hash::murmur3_x64_64(hash, SKIP_B, SKIP_SEED) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

/// Sorts endpoints by hash, as Katran's `Vip` does before building.
pub fn sort_endpoints(endpoints: &mut [Endpoint]) {
    endpoints.sort_by_key(|e| e.hash);
}

/// Where an endpoint goes next along its permutation. The position is
/// computed in `u32` arithmetic that wraps, as Katran's is: an endpoint
/// that probes more than 2^32 / skip times sees wrapped positions, and the
/// rings (so the slots that change on an update) stay exactly Katran's.
struct Walk {
    offset: u32,
    skip: u32,
    next: u32,
}

impl Walk {
    /// Takes the next free slot of `slots` for `num`.
    fn take(&mut self, slots: &mut [u32], num: u32) {
        let m = slots.len() as u32;
        loop {
            let cur = (self.offset.wrapping_add(self.next.wrapping_mul(self.skip)) % m) as usize;
            self.next = self.next.wrapping_add(1);
            if slots[cur] == EMPTY {
                slots[cur] = num;
                return;
            }
        }
    }
}

/// The ring of `size` slots for `endpoints` (in the given order), each
/// slot the `num` of the endpoint holding it.
pub fn ring(endpoints: &[Endpoint], size: u32, variant: Variant) -> Result<Vec<u32>, RingError> {
    if !is_prime(size) {
        return Err(RingError::NotPrime(size));
    }
    let mut slots = vec![EMPTY; size as usize];
    match endpoints {
        [] => return Ok(slots),
        [only] => {
            slots.fill(only.num);
            return Ok(slots);
        }
        _ => {}
    }
    let mut walks: Vec<Walk> = endpoints
        .iter()
        .map(|e| {
            let (offset, skip) = permutation(e.hash, size);
            Walk { offset, skip, next: 0 }
        })
        .collect();
    let mut left = size;
    match variant {
        Variant::V1 => {
            let mut picks: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
            loop {
                for (i, e) in endpoints.iter().enumerate() {
                    for _ in 0..picks[i] {
                        walks[i].take(&mut slots, e.num);
                        left -= 1;
                        if left == 0 {
                            return Ok(slots);
                        }
                    }
                    picks[i] = 1;
                }
            }
        }
        Variant::V2 => {
            let max = endpoints.iter().map(|e| e.weight).max().unwrap_or(0);
            let mut sums = vec![0u64; endpoints.len()];
            loop {
                for (i, e) in endpoints.iter().enumerate() {
                    sums[i] += u64::from(e.weight);
                    if sums[i] >= u64::from(max) {
                        sums[i] -= u64::from(max);
                        walks[i].take(&mut slots, e.num);
                        left -= 1;
                        if left == 0 {
                            return Ok(slots);
                        }
                    }
                }
            }
        }
    }
}

/// How many slots of `ring` hold `num`.
pub fn count(ring: &[u32], num: u32) -> usize {
    ring.iter().filter(|&&s| s == num).count()
}

/// How many slots differ between two rings of one size.
pub fn changed(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_prime() {
        assert_eq!(ring(&[], 8, Variant::V1), Err(RingError::NotPrime(8)));
        assert_eq!(ring(&[], 1, Variant::V1), Err(RingError::NotPrime(1)));
        assert!(ring(&[], 2, Variant::V1).is_ok());
        assert!(is_prime(RING_SIZE));
    }

    #[test]
    fn permutations_stay_in_range() {
        // Katran's MaglevBaseTest: offset < M, 1 <= skip < M.
        for size in [7, RING_SIZE] {
            for h in [0, 1, 42, 1_234_567, u64::MAX, 3, 6, 100] {
                let (o, s) = permutation(h, size);
                assert!(o < size && (1..size).contains(&s), "hash {h} size {size}: ({o}, {s})");
            }
        }
        assert_ne!(permutation(0, RING_SIZE), permutation(1, RING_SIZE));
    }
}
