//! IPv4 headers (RFC 791).
//!
//! Owns the IPv4 header layout, its validation and its header checksum. It
//! does not reassemble fragments or route; upper-layer parsing happens on
//! [`Ipv4Packet::payload`], which stops at `total_len` so that Ethernet
//! padding never leaks into the upper layer.

use core::net::Ipv4Addr;

use super::checksum::{fold, ones_complement_sum};
use super::{rd_array, rd_u16, rd_u8, sub, sub_mut, wr_bytes, wr_u16, wr_u8, Error, Result};

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const OPTIONS: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;

    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer, checking it with [`Ipv4Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates the header:
    /// - buffer shorter than 20 bytes: `Truncated`;
    /// - version not 4: `BadVersion`;
    /// - IHL below 5 or header longer than the buffer: `BadHeaderLen`;
    /// - `total_len` below the header length or above the buffer length:
    ///   `BadLength` (bytes after `total_len`, such as Ethernet padding, are
    ///   allowed).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPTIONS {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let hlen = self.header_len();
        if hlen < field::OPTIONS || hlen > len {
            return Err(Error::BadHeaderLen);
        }
        let total = usize::from(self.total_len());
        if total < hlen || total > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(rd_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0f) * 4
    }

    /// DSCP and ECN byte.
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::DSCP_ECN)
    }

    /// Total length (header plus payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        rd_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        rd_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (rd_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment (first or not) of a larger datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        rd_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::TTL)
    }

    /// Protocol of the payload (see [`super::protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(rd_array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(rd_array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// Option bytes (between the fixed header and `header_len`).
    #[inline]
    pub fn options(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// Payload: from `header_len` up to `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(self.buffer.as_ref(), self.header_len(), usize::from(self.total_len()))
    }

    /// Whether the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        // Fast path for the common option-less header: five fixed words.
        if let Some(h) = self.buffer.as_ref().first_chunk::<20>() {
            if self.header_len() == 20 {
                let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
                let mut sum = w(0) + w(4) + w(8) + w(12) + w(16);
                while sum >> 16 != 0 {
                    sum = (sum & 0xffff) + (sum >> 16);
                }
                return sum == 0xffff;
            }
        }
        let hdr = sub(self.buffer.as_ref(), 0, self.header_len());
        !hdr.is_empty() && fold(ones_complement_sum(hdr, 0)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (rounded down to 4).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = (header_len / 4).min(15) as u8;
        wr_u8(self.buffer.as_mut(), field::VER_IHL, 0x40 | ihl);
    }

    /// Sets the DSCP and ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::DSCP_ECN, v);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets flags and fragment offset (in bytes, a multiple of 8).
    #[inline]
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        wr_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::TTL, v);
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::PROTOCOL, v);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        wr_bytes(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        wr_bytes(self.buffer.as_mut(), field::DST, &a.octets());
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hlen = self.header_len();
        let sum = ones_complement_sum(sub(self.buffer.as_ref(), 0, hlen), 0);
        self.set_checksum(fold(sum));
    }

    /// Mutable payload: from `header_len` up to `total_len`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (from, to) = (self.header_len(), usize::from(self.total_len()));
        sub_mut(self.buffer.as_mut(), from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol;
    use proptest::prelude::*;

    proptest! {
        /// The 20-byte fast path of `verify_checksum` agrees with the general
        /// one's-complement sum, for valid and corrupted headers alike.
        #[test]
        fn checksum_fast_path_matches_general_sum(mut h in proptest::array::uniform20(any::<u8>()), fix in any::<bool>()) {
            h[0] = 0x45;
            if fix {
                h[10] = 0;
                h[11] = 0;
                let c = fold(ones_complement_sum(&h, 0));
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let general = fold(ones_complement_sum(&h, 0)) == 0;
            prop_assert_eq!(Ipv4Packet::new_unchecked(&h[..]).verify_checksum(), general);
            if fix {
                prop_assert!(general);
            }
        }
    }

    /// 20-byte header + 4 bytes payload + 2 bytes Ethernet padding.
    fn packet() -> Vec<u8> {
        let mut b = vec![
            0x45, 0x10, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1, 10, 0, 0, 2, 0xde,
            0xad, 0xbe, 0xef, 0, 0,
        ];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        b
    }

    #[test]
    fn good_packet() {
        let b = packet();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0x10);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(!p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
        assert_ne!(p.checksum(), 0);
    }

    #[test]
    fn options_and_fragments() {
        let mut b = [0u8; 28];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(24);
        p.set_total_len(28);
        p.set_frag(false, true, 1480);
        p.set_ttl(1);
        p.set_protocol(protocol::TCP);
        p.set_ident(7);
        p.set_dscp_ecn(0);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().len(), 4);
        assert_eq!(p.payload().len(), 4);
        assert!(p.more_frags());
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.verify_checksum());
    }

    #[test]
    fn bad_checksum() {
        let mut b = packet();
        b[8] = 63; // TTL changed without updating the checksum
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
        let mut b = packet();
        b[10] ^= 0x01;
        assert!(!Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn truncated() {
        let b = packet();
        for n in 0..20 {
            assert_eq!(Ipv4Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        // Cut inside the payload: total_len now exceeds the buffer.
        for n in 20..24 {
            assert_eq!(Ipv4Packet::new_checked(&b[..n]).unwrap_err(), Error::BadLength);
        }
        assert!(Ipv4Packet::new_checked(&b[..24]).is_ok());
    }

    #[test]
    fn bad_fields() {
        let mut b = packet();
        b[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadVersion);
        for ihl in 0..5 {
            b[0] = 0x40 | ihl;
            assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadHeaderLen);
        }
        b[0] = 0x47; // 28-byte header in a 26-byte buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadHeaderLen);
        let mut b = packet();
        b[3] = 19; // total_len < header len
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        b[3] = 27; // total_len > buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), Error::BadLength);
        b[3] = 26; // exactly the buffer
        assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap().payload().len(), 6);
    }

    #[test]
    fn unchecked_never_panics() {
        let mut b = [0x4fu8, 0, 0xff, 0xff];
        let p = Ipv4Packet::new_unchecked(&b[..]);
        assert!(p.payload().is_empty());
        assert!(p.options().is_empty());
        assert!(!p.verify_checksum());
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        p.set_dst_addr(Ipv4Addr::LOCALHOST);
        assert!(p.payload_mut().is_empty());
    }
}
