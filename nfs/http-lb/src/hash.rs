//! The hashes of the hashing balancers: 64-bit FNV-1a, a SplitMix64
//! finaliser and weighted rendezvous (highest random weight) scores.
//!
//! Everything here is fixed (no per-process seed), so a client maps to the
//! same backend across restarts of the NF and on every instance of it.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's finaliser: spreads every input bit over the output.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous score of backend `backend` (its [`fnv1a`] identity) for
/// request key `key` (a [`fnv1a`] too), with `weight`: `weight / -ln(u)`
/// for `u` uniform in (0, 1) drawn from the pair. Every key goes to the
/// backend with the highest score among those eligible, so taking a
/// backend out moves only the keys it had, and a backend of weight 2 gets
/// twice the keys of one of weight 1.
pub fn hrw_score(key: u64, backend: u64, weight: u32) -> f64 {
    let h = mix(key ^ mix(backend));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn scores_are_positive_and_follow_weight() {
        for k in 0..1000u64 {
            let s1 = hrw_score(mix(k), 7, 1);
            assert!(s1 > 0.0 && s1.is_finite());
            assert!((hrw_score(mix(k), 7, 3) - 3.0 * s1).abs() < 1e-9 * s1.max(1.0));
        }
    }
}
