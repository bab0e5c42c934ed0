//! The Maglev ring against Katran's own test vectors, re-expressed as data
//! from `katran/lib/tests/MaglevHashTest.cpp`, `CHHelpersTest.cpp` and
//! `VipTest.cpp` (facebookincubator/katran): the same endpoints (numbers,
//! weights, and the endpoint hashes those tests use: 1000/2000, or the
//! endpoint's index), the same ring sizes, the same expected counts.
//!
//! `VipTest` measures a change as the number of slots that differ between
//! the ring before and after (`delta.size()`); Katran's `Vip` drops
//! weight-0 reals and sorts the rest by hash before building, which
//! [`vip_ring`] does too.

use l4lb::maglev::{self, changed, count, Endpoint, Variant, EMPTY, RING_SIZE};

fn ep(num: u32, weight: u32, hash: u64) -> Endpoint {
    Endpoint { num, weight, hash }
}

/// Katran's `Vip::getEndpoints` + `calculateHashRing`: weight-0 reals out,
/// sorted by hash, then the ring.
fn vip_ring(reals: &[Endpoint], variant: Variant) -> Vec<u32> {
    let mut eps: Vec<Endpoint> = reals.iter().copied().filter(|e| e.weight != 0).collect();
    maglev::sort_endpoints(&mut eps);
    maglev::ring(&eps, RING_SIZE, variant).unwrap()
}

/// Slot counts per endpoint number 0..n, sorted ascending (as the tests sort `freq`).
fn sorted_freq(ring: &[u32], n: u32) -> Vec<usize> {
    let mut f: Vec<usize> = (0..n).map(|i| count(ring, i)).collect();
    assert_eq!(f.iter().sum::<usize>(), ring.len(), "every slot is taken");
    f.sort_unstable();
    f
}

/// (test, ring size, variant, endpoints as (num, weight, hash), expected slots per num)
type SmallCase = (&'static str, u32, Variant, &'static [(u32, u32, u64)], &'static [(u32, usize)]);

/// MaglevHashTest.cpp, both variants.
const SMALL: &[SmallCase] = &[
    ("EmptyEndpointsAllNegativeOne", 7, Variant::V1, &[], &[(EMPTY, 7)]),
    ("SingleEndpointFillsRing", 7, Variant::V1, &[(5, 1, 42)], &[(5, 7)]),
    ("HigherWeightGetsMoreSlots (4 vs 3)", 7, Variant::V1, &[(0, 2, 1000), (1, 1, 2000)], &[(0, 4), (1, 3)]),
    ("V2 EmptyEndpointsAllNegativeOne", 7, Variant::V2, &[], &[(EMPTY, 7)]),
    ("V2 SingleEndpointFillsRing", 7, Variant::V2, &[(3, 1, 99)], &[(3, 7)]),
    ("V2 HigherWeightGetsMoreSlots (5 vs 2)", 7, Variant::V2, &[(0, 2, 1000), (1, 1, 2000)], &[(0, 5), (1, 2)]),
];

#[test]
fn maglev_hash_test_small_rings() {
    for (name, size, variant, eps, want) in SMALL {
        let eps: Vec<Endpoint> = eps.iter().map(|&(n, w, h)| ep(n, w, h)).collect();
        let ring = maglev::ring(&eps, *size, *variant).unwrap();
        assert_eq!(ring.len(), *size as usize, "{name}");
        for &(num, slots) in *want {
            assert_eq!(count(&ring, num), slots, "{name}: slots of {num} in {ring:?}");
        }
    }
}

#[test]
fn maglev_hash_test_two_endpoints_no_holes_and_deterministic() {
    for variant in [Variant::V1, Variant::V2] {
        let two = [ep(0, 1, 1000), ep(1, 1, 2000)];
        let ring = maglev::ring(&two, 7, variant).unwrap();
        assert!(ring.iter().all(|&s| s == 0 || s == 1), "{variant:?}: {ring:?}");
        let eps = [ep(0, 1, 111), ep(1, 2, 222)];
        assert_eq!(maglev::ring(&eps, 11, variant).unwrap(), maglev::ring(&eps, 11, variant).unwrap());
    }
    // V1 and V2 differ for unequal weights.
    let eps = [ep(0, 2, 1000), ep(1, 1, 2000)];
    assert_ne!(maglev::ring(&eps, 7, Variant::V1).unwrap(), maglev::ring(&eps, 7, Variant::V2).unwrap());
}

fn indexed(n: u32, weight: u32) -> Vec<Endpoint> {
    (0..n).map(|i| ep(i, weight, u64::from(i))).collect()
}

#[test]
fn ch_helpers_400_equal_backends_differ_by_at_most_one() {
    // testMaglevCHSameWeight / testMaglevV2CHSameWeight: 400 reals, weight 1, hash = index.
    for variant in [Variant::V1, Variant::V2] {
        let ring = maglev::ring(&indexed(400, 1), RING_SIZE, variant).unwrap();
        let f = sorted_freq(&ring, 400);
        assert_eq!(f[399] - f[0], 1, "{variant:?}");
    }
}

#[test]
fn ch_helpers_unequal_weights() {
    // testMaglevCHDiffWeight (diff 2) / testMaglevV2CHDiffWeight (diff 16385):
    // 3 reals, hash = index, real 0 of weight 2.
    for (variant, diff) in [(Variant::V1, 2), (Variant::V2, 16385)] {
        let mut eps = indexed(3, 1);
        eps[0].weight = 2;
        let ring = maglev::ring(&eps, RING_SIZE, variant).unwrap();
        let f = sorted_freq(&ring, 3);
        assert_eq!(f[2] - f[0], diff, "{variant:?}");
    }
}

#[test]
fn ch_helpers_weights_summing_past_and_below_the_ring() {
    // testMaglevWeightsSumLargerThanRing: weight (65537 * 2) / 400 each; only
    // the first half of the reals (in order) get their full weight, one gets
    // part, the rest none (V1 spends the first round on them).
    let weight = RING_SIZE * 2 / 400;
    let ring = maglev::ring(&indexed(400, weight), RING_SIZE, Variant::V1).unwrap();
    for i in 0..400u32 {
        let n = count(&ring, i);
        match i {
            0..=199 => assert_eq!(n, weight as usize, "real {i}"),
            200 => assert!(n > 0, "real {i}"),
            _ => assert_eq!(n, 0, "real {i}"),
        }
    }
    // testMaglevWeightsSumBelowRingSize: weight 65537 / 400 - 1; all get a share, differing by 1.
    let ring = maglev::ring(&indexed(400, RING_SIZE / 400 - 1), RING_SIZE, Variant::V1).unwrap();
    let f = sorted_freq(&ring, 400);
    assert_eq!(f[399] - f[0], 1);
    assert!(f[0] > 0);
}

#[test]
fn vip_test_deleting_one_of_100_changes_1009_v1_and_1020_v2_slots() {
    // VipTestF: 100 reals, weight 10, hash = index; delReal(0).
    for (variant, delta) in [(Variant::V1, 1009), (Variant::V2, 1020)] {
        let all = indexed(100, 10);
        let before = vip_ring(&all, variant);
        assert!(before.iter().all(|&s| s != EMPTY));
        let after = vip_ring(&all[1..], variant);
        assert_eq!(changed(&before, &after), delta, "{variant:?}");
        assert_eq!(count(&after, 0), 0);
        // Real 0's slots all moved, and they are most of the change (Maglev
        // moves a few slots of others too: 1009 > 65537 / 100).
        let of_zero = count(&before, 0);
        let moved_zero = before.iter().zip(&after).filter(|(b, a)| b != a && **b == 0).count();
        assert_eq!(moved_zero, of_zero, "{variant:?}");
        assert!(of_zero * 2 > delta, "{variant:?}: {of_zero} of {delta}");
    }
}

#[test]
fn vip_test_weight_changes() {
    // testBatchUpdateRealsWeight: all 100 reals from weight 10 to 13 changes
    // 17 slots under V1 and none under V2; then real 0 alone to 26 changes
    // 109 (V1) and 1013 (V2).
    for (variant, to13, to26) in [(Variant::V1, 17, 109), (Variant::V2, 0, 1013)] {
        let w10 = vip_ring(&indexed(100, 10), variant);
        let mut reals = indexed(100, 13);
        let w13 = vip_ring(&reals, variant);
        assert_eq!(changed(&w10, &w13), to13, "{variant:?} 10 -> 13");
        reals[0].weight = 26;
        let w26 = vip_ring(&reals, variant);
        assert_eq!(changed(&w13, &w26), to26, "{variant:?} real 0 13 -> 26");
    }
}

#[test]
fn vip_test_add_and_remove_a_second_real() {
    // testAddRemoveReal: one real (hash 0) fills the ring; adding real 1
    // (hash 1) moves 32768 slots, removing it moves them back.
    let one = vip_ring(&[ep(0, 1, 0)], Variant::V1);
    assert_eq!(count(&one, 0), RING_SIZE as usize);
    let two = vip_ring(&[ep(0, 1, 0), ep(1, 1, 1)], Variant::V1);
    assert_eq!(changed(&one, &two), 32768);
    assert_eq!(changed(&two, &one), 32768);
}

#[test]
fn vip_test_zero_weight_real_is_left_out() {
    // ZeroWeightRealExcludedFromHashRing: reals 0 and 1 of weight 5; real 0
    // to weight 0 gives every slot to real 1.
    let both = vip_ring(&[ep(0, 5, 0), ep(1, 5, 1)], Variant::V1);
    let drained = vip_ring(&[ep(0, 0, 0), ep(1, 5, 1)], Variant::V1);
    assert!(changed(&both, &drained) > 0);
    assert_eq!(count(&drained, 1), RING_SIZE as usize);
}
