//! ARP (RFC 826) for IPv4 over Ethernet.
//!
//! Owns the 28-byte ARP packet layout and its parsed form [`ArpRepr`]. Any
//! other hardware/protocol pair is reported as [`Error::Unsupported`].
//! Deciding whether to answer lives in [`crate::l3`].

use core::net::Ipv4Addr;

use super::{rd_array, rd_u16, rd_u8, wr_bytes, wr_u16, wr_u8, Error, EthernetAddress, Result};

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const END: usize = 28;
}

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

/// ARP operation code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1: who has `target_ip`?
    Request,
    /// 2: `source_ip` is at `source_hw`.
    Reply,
    /// Any other code.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            v => ArpOperation::Unknown(v),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> u16 {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps a buffer, checking it is a whole Ethernet/IPv4 ARP packet.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the fixed 8-byte part or the 28 bytes are missing;
    /// `Unsupported` if the hardware/protocol pair is not Ethernet/IPv4.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::SHA {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != PTYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        if len < field::END {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 = Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 = IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::HLEN)
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::PLEN)
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        rd_u16(self.buffer.as_ref(), field::OPER).into()
    }

    /// Sender hardware address.
    #[inline]
    pub fn source_hw(&self) -> EthernetAddress {
        EthernetAddress(rd_array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender protocol address.
    #[inline]
    pub fn source_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(rd_array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn target_hw(&self) -> EthernetAddress {
        EthernetAddress(rd_array(self.buffer.as_ref(), field::THA))
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(rd_array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed Ethernet/IPv4 header fields (types and lengths).
    #[inline]
    pub fn set_ethernet_ipv4_header(&mut self) {
        let b = self.buffer.as_mut();
        wr_u16(b, field::HTYPE, HTYPE_ETHERNET);
        wr_u16(b, field::PTYPE, PTYPE_IPV4);
        wr_u8(b, field::HLEN, 6);
        wr_u8(b, field::PLEN, 4);
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: ArpOperation) {
        wr_u16(self.buffer.as_mut(), field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_source_hw(&mut self, a: EthernetAddress) {
        wr_bytes(self.buffer.as_mut(), field::SHA, &a.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_source_ip(&mut self, a: Ipv4Addr) {
        wr_bytes(self.buffer.as_mut(), field::SPA, &a.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_hw(&mut self, a: EthernetAddress) {
        wr_bytes(self.buffer.as_mut(), field::THA, &a.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        wr_bytes(self.buffer.as_mut(), field::TPA, &a.octets());
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request, reply or other.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub source_hw: EthernetAddress,
    /// Sender IPv4 address.
    pub source_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_hw: EthernetAddress,
    /// Target IPv4 address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = field::END;

    /// Parses a packet (validating it first, so an unchecked view is fine).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &ArpPacket<&T>) -> Result<ArpRepr> {
        packet.check_len()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hw: packet.source_hw(),
            source_ip: packet.source_ip(),
            target_hw: packet.target_hw(),
            target_ip: packet.target_ip(),
        })
    }

    /// Writes all 28 bytes into `packet` (whose buffer must be at least
    /// [`ArpRepr::LEN`] long; shorter buffers are written partially).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, packet: &mut ArpPacket<&mut T>) {
        packet.set_ethernet_ipv4_header();
        packet.set_operation(self.operation);
        packet.set_source_hw(self.source_hw);
        packet.set_source_ip(self.source_ip);
        packet.set_target_hw(self.target_hw);
        packet.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ARP payload of a captured request: who has 192.168.1.1? tell 192.168.1.100.
    pub(crate) const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // header, op 1
        0x00, 0x0c, 0x29, 0x3e, 0x5c, 0x7a, // sha
        0xc0, 0xa8, 0x01, 0x64, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0xc0, 0xa8, 0x01, 0x01, // tpa
    ];

    #[test]
    fn parse_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(r.source_hw, EthernetAddress([0x00, 0x0c, 0x29, 0x3e, 0x5c, 0x7a]));
        assert_eq!(r.source_ip, Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(r.target_hw, EthernetAddress([0; 6]));
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 168, 1, 1));
    }

    #[test]
    fn emit_roundtrip() {
        let r = ArpRepr {
            operation: ArpOperation::Reply,
            source_hw: EthernetAddress([2, 0, 0, 0, 0, 1]),
            source_ip: Ipv4Addr::new(10, 0, 0, 1),
            target_hw: EthernetAddress([2, 0, 0, 0, 0, 2]),
            target_ip: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut buf = [0u8; ArpRepr::LEN];
        r.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..8], &[0, 1, 8, 0, 6, 4, 0, 2]);
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap(), r);
        let unknown = ArpRepr { operation: ArpOperation::Unknown(9), ..r };
        unknown.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(ArpPacket::new_unchecked(&buf[..]).operation(), ArpOperation::Unknown(9));
    }

    #[test]
    fn truncated_and_unsupported() {
        for n in 0..ArpRepr::LEN {
            assert_eq!(ArpPacket::new_checked(&REQUEST[..n]).unwrap_err(), Error::Truncated);
        }
        for (i, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(ArpPacket::new_checked(&b[..]).unwrap_err(), Error::Unsupported);
        }
        // parse validates even an unchecked view.
        let p = ArpPacket::new_unchecked(&REQUEST[..20]);
        assert_eq!(ArpRepr::parse(&p).unwrap_err(), Error::Truncated);
    }
}
