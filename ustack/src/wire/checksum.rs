//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers.
//!
//! This module owns checksum arithmetic only; each protocol view decides
//! which bytes it covers. The usual pattern is
//! `fold(ones_complement_sum(segment, pseudo_header_v4(..)))`: `0` means a
//! segment with a correct checksum field, and over a segment whose checksum
//! field is zeroed it gives the value to store.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words (an odd last byte is padded with
/// zero) to `initial`, in one's-complement arithmetic. The result is
/// partially folded (it is at most `0xffff`) and can be fed back as
/// `initial` to continue the sum over more data, provided the data so far
/// had an even length.
#[inline]
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    // Since 2^16 == 1 (mod 2^16 - 1), summing 32-bit words and folding is
    // the same as summing 16-bit words; the remainder starts word-aligned.
    acc += match *words.remainder() {
        [a] => u64::from(a) << 8,
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => 0,
    };
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Folds a sum from [`ones_complement_sum`] to 16 bits and complements it:
/// the value to store in a checksum field, or `0` when verifying data that
/// includes a correct checksum field.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let mut s = sum;
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Sum of the IPv4 pseudo-header (RFC 793/768) for an upper-layer segment of
/// `len` bytes with protocol `proto`; pass it as `initial`.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(proto)
        + (len >> 16)
        + (len & 0xffff)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet
/// of `len` bytes with the final `next_header`; pass it as `initial`.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let addrs = src.segments().into_iter().chain(dst.segments());
    addrs.map(u32::from).sum::<u32>() + u32::from(next_header) + (len >> 16) + (len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward 16-bit reference implementation.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u64 = 0;
        for c in data.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            let lo = c.get(1).copied().map_or(0, u64::from);
            sum += hi | lo;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data, 0), 0xddf2);
        assert_eq!(fold(ones_complement_sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic example header; checksum field 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(fold(ones_complement_sum(&hdr, 0)), 0);
        let mut z = hdr;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(fold(ones_complement_sum(&z, 0)), 0xb861);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let s = Ipv4Addr::new(10, 0, 0, 1);
        let d = Ipv4Addr::new(192, 168, 1, 200);
        let mut ph = Vec::new();
        ph.extend_from_slice(&s.octets());
        ph.extend_from_slice(&d.octets());
        ph.extend_from_slice(&[0, 6, 0x01, 0x02]);
        assert_eq!(fold(pseudo_header_v4(s, d, 6, 0x0102)), reference(&ph));

        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "fe80::ffff:1234".parse().unwrap();
        let mut ph6 = Vec::new();
        ph6.extend_from_slice(&s6.octets());
        ph6.extend_from_slice(&d6.octets());
        ph6.extend_from_slice(&[0, 1, 0, 0x10, 0, 0, 0, 17]);
        assert_eq!(fold(pseudo_header_v6(s6, d6, 17, 0x10010)), reference(&ph6));
    }

    proptest::proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            proptest::prop_assert_eq!(fold(ones_complement_sum(&data, 0)), reference(&data));
        }

        #[test]
        fn chaining_even_prefix(a in proptest::collection::vec(proptest::num::u8::ANY, 0..50),
                                b in proptest::collection::vec(proptest::num::u8::ANY, 0..50)) {
            let mut a = a;
            if a.len() % 2 == 1 { a.pop(); }
            let mut all = a.clone();
            all.extend_from_slice(&b);
            let chained = ones_complement_sum(&b, ones_complement_sum(&a, 0));
            proptest::prop_assert_eq!(fold(chained), reference(&all));
        }
    }
}
