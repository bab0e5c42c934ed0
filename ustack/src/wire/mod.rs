//! Zero-copy views over protocol headers, one file per protocol.
//!
//! Each view `XxxPacket<T: AsRef<[u8]>>` wraps a buffer and reads fields
//! straight from it; setters need `T: AsMut<[u8]>`. `new_checked` validates
//! every length the accessors rely on and is what callers should use on
//! bytes from the network. `new_unchecked` skips validation; even then no
//! accessor panics: a read outside the buffer returns 0 (or an empty slice)
//! and a write outside the buffer is ignored.
//!
//! This module owns header layouts, field validation and checksums. It does
//! not decide what to do with a packet: that is [`crate::l3`]'s job.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, VlanTag};
pub use icmpv4::Icmpv4Packet;
pub use ip::protocol;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::{TcpFlags, TcpOption, TcpOptions, TcpPacket};
pub use udp::UdpPacket;

/// Why a buffer could not be viewed or parsed as a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the fixed part of the header.
    #[error("packet truncated: the buffer is shorter than the header")]
    Truncated,
    /// The IP version field does not match the header being parsed.
    #[error("bad IP version field")]
    BadVersion,
    /// A header length field is below the minimum or runs past the buffer.
    #[error("bad header length field (below the minimum or past the buffer)")]
    BadHeaderLen,
    /// A total/payload length field is inconsistent with the header or the buffer.
    #[error("bad length field (shorter than the header or longer than the buffer)")]
    BadLength,
    /// A well-formed packet of a kind this code does not handle (e.g. ARP for a non-Ethernet/IPv4 pair).
    #[error("unsupported packet kind")]
    Unsupported,
    /// A structurally broken packet (e.g. a TCP option or IPv6 extension header with a bad length).
    #[error("malformed packet")]
    Malformed,
    /// A non-first IP fragment: the upper-layer header is not in this packet.
    #[error("non-first IP fragment: no upper-layer header")]
    Fragment,
}

/// Result of parsing wire data.
pub type Result<T> = core::result::Result<T, Error>;

// Bounds-safe byte access shared by the views. Out-of-range reads give 0 and
// out-of-range writes are ignored, so even a `new_unchecked` view cannot panic.

#[inline(always)]
pub(crate) fn rd_u8(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

#[inline(always)]
pub(crate) fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(rd_array::<2>(b, at))
}

#[inline(always)]
pub(crate) fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(rd_array::<4>(b, at))
}

#[inline(always)]
pub(crate) fn rd_array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    match b.get(at..at.saturating_add(N)) {
        Some(s) => s.try_into().unwrap_or([0; N]),
        None => [0; N],
    }
}

#[inline(always)]
pub(crate) fn wr_u8(b: &mut [u8], at: usize, v: u8) {
    if let Some(x) = b.get_mut(at) {
        *x = v;
    }
}

#[inline(always)]
pub(crate) fn wr_u16(b: &mut [u8], at: usize, v: u16) {
    wr_bytes(b, at, &v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn wr_u32(b: &mut [u8], at: usize, v: u32) {
    wr_bytes(b, at, &v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn wr_bytes(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(at..at.saturating_add(v.len())) {
        s.copy_from_slice(v);
    }
}

/// `&b[from..to]`, or an empty slice when the range does not fit.
#[inline(always)]
pub(crate) fn sub(b: &[u8], from: usize, to: usize) -> &[u8] {
    b.get(from..to).unwrap_or(&[])
}

/// `&mut b[from..to]`, or an empty slice when the range does not fit.
#[inline(always)]
pub(crate) fn sub_mut(b: &mut [u8], from: usize, to: usize) -> &mut [u8] {
    b.get_mut(from..to).unwrap_or(&mut [])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_never_panic_out_of_range() {
        let mut b = [1u8, 2, 3];
        assert_eq!(rd_u16(&b, 1), 0x0203);
        assert_eq!(rd_u16(&b, 2), 0);
        assert_eq!(rd_u32(&b, usize::MAX), 0);
        assert_eq!(rd_u8(&b, 3), 0);
        wr_u32(&mut b, 1, 7);
        wr_u16(&mut b, usize::MAX, 7);
        assert_eq!(b, [1, 2, 3]);
        assert!(sub(&b, 2, 1).is_empty());
        assert!(sub_mut(&mut b, 0, 9).is_empty());
    }
}
