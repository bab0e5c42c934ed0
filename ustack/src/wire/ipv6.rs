//! IPv6 headers (RFC 8200) and the walk over common extension headers.
//!
//! Owns the fixed 40-byte header layout, its validation, and skipping
//! hop-by-hop, routing, destination-options and fragment headers to find the
//! upper-layer protocol. It does not reassemble fragments or interpret the
//! options inside extension headers.

use core::net::Ipv6Addr;

use super::{rd_array, rd_u16, rd_u32, rd_u8, sub, wr_bytes, wr_u16, wr_u32, wr_u8, Error, Result};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// Extension header numbers skipped by [`Ipv6Packet::upper_layer`].
pub mod ext {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header.
    pub const FRAGMENT: u8 = 44;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}

/// Where the upper layer starts, as found by walking extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UpperLayer {
    /// Final next-header value.
    pub next_header: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// A fragment header with offset 0 and more-fragments set was seen.
    pub first_fragment: bool,
    /// A fragment header with a non-zero offset was seen: there is no
    /// upper-layer header, `offset` points just after the fragment header.
    pub non_first_fragment: bool,
}

/// A view of an IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer, checking it with [`Ipv6Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates the header: buffer shorter than 40 bytes: `Truncated`;
    /// version not 6: `BadVersion`; `40 + payload_len` past the buffer:
    /// `BadLength` (trailing padding is allowed).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::PAYLOAD {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        if field::PAYLOAD + usize::from(self.payload_len()) > len {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (rd_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        rd_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::NXT_HDR)
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(rd_array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(rd_array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// Payload (extension headers included), stopping at `40 + payload_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = field::PAYLOAD + usize::from(self.payload_len());
        sub(self.buffer.as_ref(), field::PAYLOAD, end)
    }

    /// Skips hop-by-hop, routing, destination-options and fragment headers
    /// and returns the final next header with its payload. A non-first
    /// fragment gives `Err(Fragment)`; an extension header that does not fit
    /// in the payload gives `Err(Malformed)`.
    #[inline]
    pub fn upper_layer(&self) -> Result<(u8, &[u8])> {
        let ul = self.walk_ext_headers()?;
        if ul.non_first_fragment {
            return Err(Error::Fragment);
        }
        let payload = self.payload();
        Ok((ul.next_header, sub(payload, ul.offset, payload.len())))
    }

    /// The extension header walk behind [`Ipv6Packet::upper_layer`], which
    /// also reports fragments instead of failing on them.
    pub(crate) fn walk_ext_headers(&self) -> Result<UpperLayer> {
        let payload = self.payload();
        let mut ul =
            UpperLayer { next_header: self.next_header(), offset: 0, first_fragment: false, non_first_fragment: false };
        loop {
            let rest = sub(payload, ul.offset, payload.len());
            match ul.next_header {
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS => {
                    // Length in 8-byte units, not counting the first 8 bytes.
                    let len = (usize::from(rd_u8(rest, 1)) + 1) * 8;
                    if rest.len() < len {
                        return Err(Error::Malformed);
                    }
                    ul.next_header = rd_u8(rest, 0);
                    ul.offset += len;
                }
                ext::FRAGMENT => {
                    if rest.len() < 8 {
                        return Err(Error::Malformed);
                    }
                    let off_flags = rd_u16(rest, 2);
                    ul.next_header = rd_u8(rest, 0);
                    ul.offset += 8;
                    if off_flags & 0xfff8 != 0 {
                        ul.non_first_fragment = true;
                        return Ok(ul);
                    }
                    if off_flags & 1 != 0 {
                        ul.first_fragment = true;
                    }
                }
                _ => return Ok(ul),
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, the traffic class and the flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        wr_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::NXT_HDR, v);
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::HOP_LIMIT, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        wr_bytes(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        wr_bytes(self.buffer.as_mut(), field::DST, &a.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(payload.len() as u16);
        p.set_next_header(next);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8::2".parse().unwrap());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn good_packet_with_ext_headers() {
        // hop-by-hop (8 bytes: PadN) -> dest opts (16 bytes) -> UDP (4 bytes of "data")
        let mut pl = vec![ext::DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        pl.extend_from_slice(&[protocol::UDP, 1, 1, 12]);
        pl.extend_from_slice(&[0; 12]);
        pl.extend_from_slice(&[1, 2, 3, 4]);
        let mut b = header(ext::HOP_BY_HOP, &pl);
        b.extend_from_slice(&[0xee; 6]); // padding
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(usize::from(p.payload_len()), pl.len());
        assert_eq!(p.next_header(), ext::HOP_BY_HOP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &pl[..]);
        assert_eq!(p.upper_layer().unwrap(), (protocol::UDP, &[1u8, 2, 3, 4][..]));
    }

    #[test]
    fn no_ext_headers() {
        let b = header(protocol::TCP, &[9; 20]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap(), (protocol::TCP, &[9u8; 20][..]));
    }

    #[test]
    fn fragments() {
        // First fragment (offset 0, M=1): the upper layer is there.
        let mut pl = vec![protocol::TCP, 0, 0x00, 0x01, 0, 0, 0, 1];
        pl.extend_from_slice(&[7; 20]);
        let b = header(ext::FRAGMENT, &pl);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap().0, protocol::TCP);
        assert!(p.walk_ext_headers().unwrap().first_fragment);
        // Non-first fragment (offset 1480).
        pl[2..4].copy_from_slice(&(1480u16).to_be_bytes());
        let b = header(ext::FRAGMENT, &pl);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::Fragment);
        let ul = p.walk_ext_headers().unwrap();
        assert!(ul.non_first_fragment);
        assert_eq!((ul.next_header, ul.offset), (protocol::TCP, 8));
    }

    #[test]
    fn malformed_ext_headers() {
        // Hop-by-hop claiming 16 bytes in an 8-byte payload.
        let b = header(ext::HOP_BY_HOP, &[protocol::TCP, 1, 0, 0, 0, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::Malformed);
        // Routing header cut short, and an empty payload announcing one.
        for pl in [&[protocol::TCP, 0, 0][..], &[][..]] {
            let b = header(ext::ROUTING, pl);
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.upper_layer().unwrap_err(), Error::Malformed);
        }
        let b = header(ext::FRAGMENT, &[protocol::TCP, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::Malformed);
    }

    #[test]
    fn bad_lengths() {
        let b = header(protocol::UDP, &[0; 8]);
        for n in 0..40 {
            assert_eq!(Ipv6Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        for n in 40..48 {
            assert_eq!(Ipv6Packet::new_checked(&b[..n]).unwrap_err(), Error::BadLength);
        }
        let mut v = b.clone();
        v[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&v[..]).unwrap_err(), Error::BadVersion);
        let mut v = b;
        v[4..6].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(Ipv6Packet::new_checked(&v[..]).unwrap_err(), Error::BadLength);
        let p = Ipv6Packet::new_unchecked(&v[..]);
        assert!(p.payload().is_empty());
    }
}
