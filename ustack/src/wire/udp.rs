//! UDP datagrams (RFC 768).
//!
//! Owns the 8-byte UDP header layout, its length validation and the UDP
//! checksum with the IPv4/IPv6 pseudo-header. The view's buffer should be
//! the IP payload (after extension headers for IPv6).

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::{fold, ones_complement_sum, pseudo_header_v4, pseudo_header_v6};
use super::{protocol, rd_u16, sub, wr_u16, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// A view of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer, checking it with [`UdpPacket::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` when the buffer is shorter than 8 bytes; `BadLength`
    /// when the length field is below 8 or past the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < field::PAYLOAD || field_len > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    #[inline]
    pub fn len(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= field::PAYLOAD
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Payload, stopping at the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::PAYLOAD, usize::from(self.len()))
    }

    #[inline]
    fn datagram(&self) -> &[u8] {
        sub(self.buffer.as_ref(), 0, usize::from(self.len()))
    }

    /// Verifies the checksum over IPv4; a zero checksum means "none" and
    /// verifies.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = self.datagram();
        let ph = pseudo_header_v4(src, dst, protocol::UDP, d.len() as u32);
        d.len() >= field::PAYLOAD && fold(ones_complement_sum(d, ph)) == 0
    }

    /// Verifies the checksum over IPv6 (where it is mandatory).
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let d = self.datagram();
        let ph = pseudo_header_v6(src, dst, protocol::UDP, d.len() as u32);
        self.checksum() != 0 && d.len() >= field::PAYLOAD && fold(ones_complement_sum(d, ph)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    fn fill_with(&mut self, pseudo: impl FnOnce(u32) -> u32) {
        self.set_checksum(0);
        let d = self.datagram();
        let c = fold(ones_complement_sum(d, pseudo(d.len() as u32)));
        // A computed 0 is sent as all ones: 0 means "no checksum".
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes and stores the checksum over IPv4.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill_with(|len| pseudo_header_v4(src, dst, protocol::UDP, len));
    }

    /// Computes and stores the checksum over IPv6.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.fill_with(|len| pseudo_header_v6(src, dst, protocol::UDP, len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// DNS-like datagram 5353 -> 53 with 4 payload bytes and 2 bytes of padding.
    fn datagram() -> Vec<u8> {
        let mut b = vec![0x14, 0xe9, 0x00, 0x35, 0x00, 0x0c, 0, 0, 1, 2, 3, 4, 0xaa, 0xbb];
        UdpPacket::new_unchecked(&mut b[..]).fill_checksum_v4(SRC, DST);
        b
    }

    #[test]
    fn good_datagram() {
        let b = datagram();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 5353);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        // By hand: pseudo 0x0a00+0x0001+0x0a00+0x0002+0x0011+0x000c = 0x1420,
        // datagram 0x14e9+0x0035+0x000c+0x0102+0x0304 = 0x1930; !0x2d50 = 0xd2af.
        assert_eq!(p.checksum(), 0xd2af);
    }

    #[test]
    fn zero_checksum_means_none_on_v4_only() {
        let mut b = datagram();
        b[6] = 0;
        b[7] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum_v4(SRC, DST));
        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert!(!p.verify_checksum_v6(s6, s6));
    }

    #[test]
    fn v6_checksum() {
        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut b = datagram();
        UdpPacket::new_unchecked(&mut b[..]).fill_checksum_v6(s6, d6);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum_v6(s6, d6));
        assert!(!p.verify_checksum_v6(d6, d6));
    }

    #[test]
    fn bad_checksum() {
        let mut b = datagram();
        b[9] ^= 0x40;
        assert!(!UdpPacket::new_checked(&b[..]).unwrap().verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn bad_lengths() {
        let b = datagram();
        for n in 0..8 {
            assert_eq!(UdpPacket::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        for n in 8..12 {
            assert_eq!(UdpPacket::new_checked(&b[..n]).unwrap_err(), Error::BadLength);
        }
        for l in [0u16, 7, 15, 0xffff] {
            let mut v = b.clone();
            v[4..6].copy_from_slice(&l.to_be_bytes());
            assert_eq!(UdpPacket::new_checked(&v[..]).unwrap_err(), Error::BadLength);
            let p = UdpPacket::new_unchecked(&v[..]);
            assert!(p.payload().is_empty());
        }
        let mut v = b;
        v[4..6].copy_from_slice(&8u16.to_be_bytes());
        let p = UdpPacket::new_checked(&v[..]).unwrap();
        assert!(p.is_empty());
        assert!(p.payload().is_empty());
    }
}
