//! Ethernet II frames and 802.1Q/802.1ad VLAN tags.
//!
//! Owns the MAC address type, the EtherType values ubox cares about, the
//! 14-byte Ethernet header view and the 4-byte VLAN tag view. Walking a tag
//! stack (how many tags, what to do with them) is left to [`crate::l3`].

use core::fmt;

use super::{rd_array, rd_u16, sub, sub_mut, wr_bytes, wr_u16, Error, Result};

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// Whether this is the broadcast address.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, which includes broadcast).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The address as bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// An EtherType value (also the inner type of a VLAN tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: EtherType = EtherType(0x0806);
    /// Internet Protocol version 6.
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// IEEE 802.1Q VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);

    /// Whether this EtherType announces a VLAN tag (802.1Q or 802.1ad).
    #[inline]
    pub fn is_vlan(self) -> bool {
        self == Self::VLAN || self == Self::QINQ
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("ipv4"),
            Self::ARP => f.write_str("arp"),
            Self::IPV6 => f.write_str("ipv6"),
            Self::VLAN => f.write_str("vlan"),
            Self::QINQ => f.write_str("qinq"),
            EtherType(v) => write!(f, "0x{v:04x}"),
        }
    }
}

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;

    pub const VLAN_TCI: usize = 0;
    pub const VLAN_INNER: usize = 2;
    pub const VLAN_PAYLOAD: usize = 4;
}

/// A view of an Ethernet II frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Length of the Ethernet header.
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(Truncated)` when the buffer is shorter than the header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(rd_array(self.buffer.as_ref(), field::DST))
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(rd_array(self.buffer.as_ref(), field::SRC))
    }

    /// EtherType (of the payload, or VLAN/QINQ when tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(rd_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, field::PAYLOAD, b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        wr_bytes(self.buffer.as_mut(), field::DST, &addr.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        wr_bytes(self.buffer.as_mut(), field::SRC, &addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ty: EtherType) {
        wr_u16(self.buffer.as_mut(), field::ETHERTYPE, ty.0);
    }

    /// Mutable access to everything after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        sub_mut(b, field::PAYLOAD, len)
    }
}

/// A view of one 4-byte VLAN tag as it follows an Ethernet header whose
/// EtherType is [`EtherType::VLAN`] or [`EtherType::QINQ`]: the TCI, then
/// the inner EtherType.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Length of a VLAN tag.
    pub const HEADER_LEN: usize = field::VLAN_PAYLOAD;

    /// Wraps a buffer without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole tag.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// `Err(Truncated)` when the buffer is shorter than a tag.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn tci(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::VLAN_TCI)
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// EtherType of what follows the tag.
    #[inline]
    pub fn inner_ethertype(&self) -> EtherType {
        EtherType(rd_u16(self.buffer.as_ref(), field::VLAN_INNER))
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, field::VLAN_PAYLOAD, b.len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the VLAN identifier (low 12 bits of `vid`).
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & 0xf000) | (vid & 0x0fff);
        wr_u16(self.buffer.as_mut(), field::VLAN_TCI, tci);
    }

    /// Sets the inner EtherType.
    #[inline]
    pub fn set_inner_ethertype(&mut self, ty: EtherType) {
        wr_u16(self.buffer.as_mut(), field::VLAN_INNER, ty.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x81, 0x00, // VLAN
        0xb0, 0x64, // pcp 5, dei 1, vid 100
        0x08, 0x00, // IPv4
    ];

    #[test]
    fn good_frame() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert!(f.dst_addr().is_multicast());
        assert_eq!(f.src_addr(), EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(!f.src_addr().is_multicast());
        assert_eq!(f.src_addr().to_string(), "52:54:00:12:34:56");
        assert_eq!(f.ethertype(), EtherType::VLAN);
        assert!(f.ethertype().is_vlan());
        assert_eq!(f.payload(), &FRAME[14..]);
        let tag = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.inner_ethertype(), EtherType::IPV4);
        assert!(tag.payload().is_empty());
        assert_eq!(EtherType::IPV6.to_string(), "ipv6");
        assert_eq!(EtherType(0x88cc).to_string(), "0x88cc");
    }

    #[test]
    fn setters() {
        let mut buf = FRAME;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        f.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
        f.set_ethertype(EtherType::QINQ);
        {
            let mut tag = VlanTag::new_checked(f.payload_mut()).unwrap();
            tag.set_vid(0xfff);
            tag.set_inner_ethertype(EtherType::ARP);
            assert_eq!(tag.pcp(), 5);
        }
        let buf = f.into_inner();
        assert_eq!(&buf[..14], &[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xa8]);
        assert_eq!(&buf[14..], &[0xbf, 0xff, 0x08, 0x06]);
    }

    #[test]
    fn truncated() {
        for n in 0..EthernetFrame::<&[u8]>::HEADER_LEN {
            assert_eq!(EthernetFrame::new_checked(&FRAME[..n]).unwrap_err(), Error::Truncated);
        }
        for n in 0..4 {
            assert_eq!(VlanTag::new_checked(&FRAME[14..14 + n]).unwrap_err(), Error::Truncated);
        }
        // Unchecked views of short buffers read zeros instead of panicking.
        let f = EthernetFrame::new_unchecked(&FRAME[..3]);
        assert_eq!(f.ethertype(), EtherType(0));
        assert!(f.payload().is_empty());
    }
}
