//! The hash functions Katran's choices depend on, so that `l4lb` picks the
//! backends Katran would for the same VIPs, backends and packets.
//!
//! This module owns arithmetic only: no tables, no packets.
//!
//! - [`murmur3_x64_64`]: the two-word MurmurHash3 variant Katran's Maglev
//!   uses for each endpoint's offset and skip (seeds in [`crate::maglev`]).
//! - [`jhash`] and [`jhash_2words`]: Bob Jenkins' lookup3 as the Linux
//!   kernel's `jhash.h` has it; Katran's XDP program hashes a flow with it
//!   ([`flow_hash_v4`], [`flow_hash_v6`]).
//! - [`real_hash`]: what `folly::IPAddress::hash()` gives for a backend's
//!   address, which Katran's control plane uses as the endpoint hash that
//!   orders and places backends on the ring (FNV-32 for IPv4, SpookyHash V2
//!   for IPv6, combined with the address family by `hash_128_to_64`).
//!
//! Katran runs on little-endian hosts and reads packet words in place, so
//! the flow hash takes addresses and ports as the little-endian `u32` their
//! wire bytes make; this module does the same explicitly, on any host.

use std::net::IpAddr;

/// Katran's `MAX_VIPS`: its flow-hash seeds derive from it.
pub const KATRAN_MAX_VIPS: u32 = 512;
/// `INIT_JHASH_SEED` (`CH_RINGS_SIZE` = `MAX_VIPS` × ring size).
pub const JHASH_SEED: u32 = KATRAN_MAX_VIPS * crate::maglev::RING_SIZE;
/// `INIT_JHASH_SEED_V6` (`MAX_VIPS`).
pub const JHASH_SEED_V6: u32 = KATRAN_MAX_VIPS;

const JHASH_INITVAL: u32 = 0xdead_beef;

/// MurmurHash3_x64_64 of the two 64-bit words `a` and `b` with `seed`, as
/// Katran's `MurmurHash3.cpp` computes it (one 16-byte block, no tail).
pub fn murmur3_x64_64(a: u64, b: u64, seed: u32) -> u64 {
    const C1: u64 = 0x87c3_7b91_1142_53d5;
    const C2: u64 = 0x4cf5_ad43_2745_937f;
    let mut h1 = u64::from(seed);
    let mut h2 = u64::from(seed);

    let k1 = a.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    h1 ^= k1;
    h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);

    let k2 = b.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    h2 ^= k2;
    h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);

    h1 ^= 16;
    h2 ^= 16;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1.wrapping_add(h2)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

fn jhash_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn jhash_final(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

fn le32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

/// `jhash(key, len, initval)`: whole 12-byte blocks as little-endian
/// words, the tail byte by byte.
pub fn jhash(key: &[u8], initval: u32) -> u32 {
    let len = key.len() as u32;
    let mut a = JHASH_INITVAL.wrapping_add(len).wrapping_add(initval);
    let mut b = a;
    let mut c = a;
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(le32(&k[0..]));
        b = b.wrapping_add(le32(&k[4..]));
        c = c.wrapping_add(le32(&k[8..]));
        jhash_mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let byte = |i: usize, shift: u32| k.get(i).map_or(0, |&x| u32::from(x) << shift);
    c = c.wrapping_add(byte(8, 0) | byte(9, 8) | byte(10, 16) | byte(11, 24));
    b = b.wrapping_add(byte(4, 0) | byte(5, 8) | byte(6, 16) | byte(7, 24));
    a = a.wrapping_add(byte(0, 0) | byte(1, 8) | byte(2, 16) | byte(3, 24));
    jhash_final(a, b, c)
}

/// `jhash_2words(a, b, initval)`.
pub fn jhash_2words(a: u32, b: u32, initval: u32) -> u32 {
    let iv = initval.wrapping_add(JHASH_INITVAL).wrapping_add(2 << 2);
    jhash_final(a.wrapping_add(iv), b.wrapping_add(iv), iv)
}

/// The `ports` word of Katran's flow: source then destination port as
/// they lie on the wire, read as a little-endian `u32`.
fn ports_word(sport: u16, dport: u16) -> u32 {
    let [s0, s1] = sport.to_be_bytes();
    let [d0, d1] = dport.to_be_bytes();
    u32::from_le_bytes([s0, s1, d0, d1])
}

/// Katran's `get_packet_hash` for an IPv4 flow: only the source address
/// and the two ports (the VIP is not hashed).
pub fn flow_hash_v4(src: [u8; 4], sport: u16, dport: u16) -> u32 {
    jhash_2words(u32::from_le_bytes(src), ports_word(sport, dport), JHASH_SEED)
}

/// Katran's `get_packet_hash` for an IPv6 flow (`hash_16bytes`).
pub fn flow_hash_v6(src: [u8; 16], sport: u16, dport: u16) -> u32 {
    jhash_2words(jhash(&src, JHASH_SEED_V6), ports_word(sport, dport), JHASH_SEED)
}

/// folly's `hash_128_to_64` (CityHash's Hash128to64).
pub fn hash_128_to_64(upper: u64, lower: u64) -> u64 {
    const K_MUL: u64 = 0x9ddf_ea08_eb38_2d69;
    let mut a = (lower ^ upper).wrapping_mul(K_MUL);
    a ^= a >> 47;
    let mut b = (upper ^ a).wrapping_mul(K_MUL);
    b ^= b >> 47;
    b.wrapping_mul(K_MUL)
}

/// folly's `fnv32_buf`, which XORs each byte in sign-extended (its
/// `_BROKEN` variant, kept because the hashes it made are in use).
pub fn fnv32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &c in bytes {
        h = h.wrapping_add(h << 1).wrapping_add(h << 4).wrapping_add(h << 7).wrapping_add(h << 8).wrapping_add(h << 24);
        h ^= i32::from(c as i8) as u32;
    }
    h
}

const SPOOKY_CONST: u64 = 0xdead_beef_dead_beef;

fn spooky_short_mix(h: &mut [u64; 4]) {
    for (r2, r3, r0, r1) in [(50, 52, 30, 41), (54, 48, 38, 37), (62, 34, 5, 36)] {
        h[2] = h[2].rotate_left(r2).wrapping_add(h[3]);
        h[0] ^= h[2];
        h[3] = h[3].rotate_left(r3).wrapping_add(h[0]);
        h[1] ^= h[3];
        h[0] = h[0].rotate_left(r0).wrapping_add(h[1]);
        h[2] ^= h[0];
        h[1] = h[1].rotate_left(r1).wrapping_add(h[2]);
        h[3] ^= h[1];
    }
}

fn spooky_short_end(h: &mut [u64; 4]) {
    // (x, y, r): h[x] ^= h[y]; h[y] = rot(h[y], r); h[x] += h[y]
    const STEPS: [(usize, usize, u32); 11] = [
        (3, 2, 15),
        (0, 3, 52),
        (1, 0, 26),
        (2, 1, 51),
        (3, 2, 28),
        (0, 3, 9),
        (1, 0, 47),
        (2, 1, 54),
        (3, 2, 32),
        (0, 3, 25),
        (1, 0, 63),
    ];
    for (x, y, r) in STEPS {
        h[x] ^= h[y];
        h[y] = h[y].rotate_left(r);
        h[x] = h[x].wrapping_add(h[y]);
    }
}

/// SpookyHash V2 `Hash128` of a 16-byte message with both seeds 0 (its
/// short path: one 16-byte block, then the length).
pub fn spooky128_16(msg: [u8; 16]) -> (u64, u64) {
    let mut w = [0u8; 8];
    w.copy_from_slice(&msg[..8]);
    let m0 = u64::from_le_bytes(w);
    w.copy_from_slice(&msg[8..]);
    let m1 = u64::from_le_bytes(w);
    let mut h = [0, 0, SPOOKY_CONST.wrapping_add(m0), SPOOKY_CONST.wrapping_add(m1)];
    spooky_short_mix(&mut h);
    // No bytes remain: the length goes into the top byte, then the constant.
    h[3] = h[3].wrapping_add(16u64 << 56).wrapping_add(SPOOKY_CONST);
    h[2] = h[2].wrapping_add(SPOOKY_CONST);
    spooky_short_end(&mut h);
    (h[0], h[1])
}

/// `AF_INET` and `AF_INET6` on Linux, the seeds folly combines in.
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// The endpoint hash Katran gives a backend at `addr`
/// (`folly::IPAddress::hash()`); an IPv4-mapped IPv6 address hashes as
/// its IPv4 address, as in folly.
pub fn real_hash(addr: IpAddr) -> u64 {
    let v4 = |a: std::net::Ipv4Addr| hash_128_to_64(AF_INET, u64::from(fnv32(&a.octets())));
    match addr {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4(m),
            None => {
                let (h1, h2) = spooky128_16(a.octets());
                hash_128_to_64(AF_INET6, hash_128_to_64(h1, h2))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_mixes_every_input() {
        // Katran's MurmurHash3Test: outputs differ when A, B or the seed do,
        // and (0, 0, 0) does not hash to 0.
        let h = 0x1234_5678_9abc_def0;
        assert_ne!(murmur3_x64_64(h, 42, 0), murmur3_x64_64(h, 42, 2307));
        assert_ne!(murmur3_x64_64(h, 42, 0), murmur3_x64_64(h, 2_718_281_828, 0));
        assert_ne!(murmur3_x64_64(1, 42, 0), murmur3_x64_64(2, 42, 0));
        assert_ne!(murmur3_x64_64(0, 0, 0), 0);
        assert_eq!(murmur3_x64_64(h, 42, 0), murmur3_x64_64(h, 42, 0));
    }

    #[test]
    fn jhash_tail_lengths_are_all_mixed() {
        // Every length 0..=13 gives a distinct value for the same prefix,
        // and a 16-byte key takes one block and a 4-byte tail.
        let key: Vec<u8> = (1..=16).collect();
        let mut seen = std::collections::HashSet::new();
        for n in 0..=16 {
            assert!(seen.insert(jhash(&key[..n], 7)), "length {n} collides");
        }
    }

    #[test]
    fn fnv32_sign_extends_high_bytes() {
        // 0x80 XORs in as 0xffffff80, unlike plain FNV-1.
        let start: u32 = 2_166_136_261;
        let m = start
            .wrapping_add(start << 1)
            .wrapping_add(start << 4)
            .wrapping_add(start << 7)
            .wrapping_add(start << 8)
            .wrapping_add(start << 24);
        assert_eq!(fnv32(&[0x80]), m ^ 0xffff_ff80);
        assert_eq!(fnv32(&[0x7f]), m ^ 0x7f);
    }

    #[test]
    fn mapped_v6_hashes_as_v4() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(real_hash(v4), real_hash(mapped));
        assert_ne!(real_hash("fc00::1".parse().unwrap()), real_hash("fc00::2".parse().unwrap()));
    }
}
