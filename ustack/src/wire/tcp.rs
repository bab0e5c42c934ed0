//! TCP segments (RFC 9293): header view, flags and options.
//!
//! Owns the TCP header layout, its length validation, the TCP checksum with
//! the IPv4/IPv6 pseudo-header, the [`TcpFlags`] set and the lazy option
//! iterator [`TcpOptions`]. It holds no connection state: that belongs to
//! the TCP μStacks. The view's buffer should be exactly the segment (the IP
//! payload), since the checksum covers all of it.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::ops::{BitAnd, BitOr, BitOrAssign};

use super::checksum::{fold, ones_complement_sum, pseudo_header_v4, pseudo_header_v6};
use super::{protocol, rd_u16, rd_u32, rd_u8, sub, wr_u16, wr_u32, wr_u8, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// The eight TCP flag bits of header byte 13.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every bit of `other` is set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether at least one bit of `other` is set in `self`.
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Display for TcpFlags {
    /// Flag letters in tcpdump order (`S`, `F`, `R`, `P`, `.` for ACK, `U`, `E`, `W`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(TcpFlags, char); 8] = [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'W'),
        ];
        for (flag, c) in NAMES {
            if self.contains(flag) {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self} 0x{:02x})", self.0)
    }
}

/// One TCP option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: end of option list.
    EndOfList,
    /// Kind 1: padding.
    NoOp,
    /// Kind 2: maximum segment size.
    MaxSegmentSize(u16),
    /// Kind 3: window scale shift count.
    WindowScale(u8),
    /// Kind 4: SACK permitted.
    SackPermitted,
    /// Kind 5: up to four SACK blocks (left edge, right edge).
    SackRange([Option<(u32, u32)>; 4]),
    /// Kind 8: timestamps.
    Timestamps {
        /// Sender's timestamp value.
        tsval: u32,
        /// Echoed timestamp.
        tsecr: u32,
    },
    /// Any other kind, with the bytes after kind and length.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data (without kind and length bytes).
        data: &'a [u8],
    },
}

mod opt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WS: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TSTAMP: u8 = 8;
}

/// Iterator over the options of a TCP header.
///
/// Yields `Err(Malformed)` for an option with a length below 2, a length
/// running past the header, or a wrong length for a known kind, and stops
/// after it. Stops after [`TcpOption::EndOfList`].
#[derive(Clone, Debug)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterates over raw option bytes (the header after byte 20).
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        TcpOptions { rest: bytes }
    }

    fn parse_one(&mut self) -> Result<TcpOption<'a>> {
        let rest = self.rest;
        let kind = rd_u8(rest, 0);
        match kind {
            opt::END => {
                self.rest = &[];
                return Ok(TcpOption::EndOfList);
            }
            opt::NOP => {
                self.rest = sub(rest, 1, rest.len());
                return Ok(TcpOption::NoOp);
            }
            _ => {}
        }
        let len = usize::from(rd_u8(rest, 1));
        if rest.len() < 2 || len < 2 || len > rest.len() {
            return Err(Error::Malformed);
        }
        let data = sub(rest, 2, len);
        self.rest = sub(rest, len, rest.len());
        let option = match (kind, len) {
            (opt::MSS, 4) => TcpOption::MaxSegmentSize(rd_u16(data, 0)),
            (opt::WS, 3) => TcpOption::WindowScale(rd_u8(data, 0)),
            (opt::SACK_PERM, 2) => TcpOption::SackPermitted,
            (opt::SACK, 10 | 18 | 26 | 34) => {
                let mut blocks = [None; 4];
                for (i, block) in blocks.iter_mut().enumerate().take((len - 2) / 8) {
                    *block = Some((rd_u32(data, i * 8), rd_u32(data, i * 8 + 4)));
                }
                TcpOption::SackRange(blocks)
            }
            (opt::TSTAMP, 10) => TcpOption::Timestamps { tsval: rd_u32(data, 0), tsecr: rd_u32(data, 4) },
            (opt::MSS | opt::WS | opt::SACK_PERM | opt::SACK | opt::TSTAMP, _) => return Err(Error::Malformed),
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        Ok(option)
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.parse_one();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

/// A view of a TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;

    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer, checking it with [`TcpPacket::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` when the buffer is shorter than 20 bytes; `BadHeaderLen`
    /// when the data offset is below 5 or the header runs past the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::OPTIONS {
            return Err(Error::Truncated);
        }
        let hlen = self.header_len();
        if hlen < field::OPTIONS || hlen > len {
            return Err(Error::BadHeaderLen);
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        rd_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        rd_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(rd_u8(self.buffer.as_ref(), field::DATA_OFF) >> 4) * 4
    }

    /// Flags.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(rd_u8(self.buffer.as_ref(), field::FLAGS))
    }

    /// Window size (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Raw option bytes.
    #[inline]
    pub fn options_raw(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// Iterator over the options.
    #[inline]
    pub fn options(&self) -> TcpOptions<'_> {
        TcpOptions::new(self.options_raw())
    }

    /// Data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, self.header_len(), b.len())
    }

    /// Verifies the checksum over IPv4.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = pseudo_header_v4(src, dst, protocol::TCP, b.len() as u32);
        b.len() >= field::OPTIONS && fold(ones_complement_sum(b, ph)) == 0
    }

    /// Verifies the checksum over IPv6.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = pseudo_header_v6(src, dst, protocol::TCP, b.len() as u32);
        b.len() >= field::OPTIONS && fold(ones_complement_sum(b, ph)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        wr_u32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        wr_u32(self.buffer.as_mut(), field::ACK_NUM, v);
    }

    /// Sets the header length in bytes (rounded down to 4, at most 60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let off = (len / 4).min(15) as u8;
        let b = self.buffer.as_mut();
        let low = rd_u8(b, field::DATA_OFF) & 0x0f;
        wr_u8(b, field::DATA_OFF, (off << 4) | low);
    }

    /// Sets the flags.
    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        wr_u8(self.buffer.as_mut(), field::FLAGS, flags.0);
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::WIN_SIZE, v);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes and stores the checksum over IPv4.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = pseudo_header_v4(src, dst, protocol::TCP, b.len() as u32);
        let c = fold(ones_complement_sum(b, ph));
        self.set_checksum(c);
    }

    /// Computes and stores the checksum over IPv6.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = pseudo_header_v6(src, dst, protocol::TCP, b.len() as u32);
        let c = fold(ones_complement_sum(b, ph));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    /// A Linux-style SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    pub(crate) const SYN: [u8; 40] = [
        0xc3, 0x50, 0x00, 0x50, // 50000 -> 80
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0xa0, 0x02, 0xfa, 0xf0, // data offset 10, SYN, window 64240
        0x00, 0x00, 0x00, 0x00, // checksum (filled by tests), urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x01, 0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, // timestamps
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];

    fn syn() -> Vec<u8> {
        let mut b = SYN.to_vec();
        TcpPacket::new_unchecked(&mut b[..]).fill_checksum_v4(SRC, DST);
        b
    }

    #[test]
    fn good_syn() {
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 50000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x1234_5678);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(!p.flags().contains(TcpFlags::ACK));
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.urgent_at(), 0);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(DST, SRC.to_bits().wrapping_add(1).into()));
        let opts: Vec<_> = p.options().collect::<Result<_>>().unwrap();
        assert_eq!(
            opts,
            [
                TcpOption::MaxSegmentSize(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 123_456, tsecr: 0 },
                TcpOption::NoOp,
                TcpOption::WindowScale(7),
            ]
        );
    }

    #[test]
    fn checksum_by_hand_matches() {
        let b = syn();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        // Independent 16-bit sum over pseudo-header and segment.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&SRC.octets());
        bytes.extend_from_slice(&DST.octets());
        bytes.extend_from_slice(&[0, 6, 0, 40]);
        bytes.extend_from_slice(&SYN);
        let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(c[1])).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(p.checksum(), !(sum as u16));
    }

    #[test]
    fn bad_checksum_and_v6() {
        let mut b = syn();
        b[7] ^= 1;
        assert!(!TcpPacket::new_checked(&b[..]).unwrap().verify_checksum_v4(SRC, DST));
        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum_v6(s6, d6);
        assert!(p.verify_checksum_v6(s6, d6));
        assert!(!p.verify_checksum_v6(d6, s6.to_bits().wrapping_add(1).into()));
        assert!(!p.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn setters_and_payload() {
        let mut b = [0u8; 24];
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_header_len(20);
        p.set_flags(TcpFlags::ACK | TcpFlags::PSH);
        p.set_window_len(5);
        p.set_urgent_at(6);
        p.fill_checksum_v4(SRC, DST);
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()), (1, 2, 3, 4));
        assert_eq!((p.window_len(), p.urgent_at()), (5, 6));
        assert!(p.flags().contains(TcpFlags::ACK | TcpFlags::PSH));
        assert!(p.flags().intersects(TcpFlags::PSH | TcpFlags::FIN));
        assert!(!p.flags().contains(TcpFlags::ACK | TcpFlags::FIN));
        assert_eq!(p.flags().to_string(), "P.");
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.options().count(), 0);
        assert!(p.verify_checksum_v4(SRC, DST));
        let mut f = TcpFlags::SYN;
        f |= TcpFlags::ACK;
        assert_eq!(f & TcpFlags::SYN, TcpFlags::SYN);
        assert_eq!(f.bits(), 0x12);
    }

    #[test]
    fn truncated_and_bad_offsets() {
        let b = syn();
        for n in 0..20 {
            assert_eq!(TcpPacket::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
        }
        for n in 20..40 {
            assert_eq!(TcpPacket::new_checked(&b[..n]).unwrap_err(), Error::BadHeaderLen);
        }
        for off in 0..5u8 {
            let mut v = b.clone();
            v[12] = off << 4;
            assert_eq!(TcpPacket::new_checked(&v[..]).unwrap_err(), Error::BadHeaderLen);
        }
        let mut v = b;
        v[12] = 0xf0; // 60 bytes in a 40-byte buffer
        assert_eq!(TcpPacket::new_checked(&v[..]).unwrap_err(), Error::BadHeaderLen);
        let p = TcpPacket::new_unchecked(&v[..]);
        assert!(p.payload().is_empty());
        assert_eq!(p.options().count(), 0);
    }

    fn opts(bytes: &[u8]) -> Vec<Result<TcpOption<'_>>> {
        TcpOptions::new(bytes).collect()
    }

    #[test]
    fn odd_options() {
        // Length 0 and 1.
        assert_eq!(opts(&[0x02, 0x00, 0x05, 0xb4]), [Err(Error::Malformed)]);
        assert_eq!(opts(&[0x01, 0x22, 0x01, 0x01]), [Ok(TcpOption::NoOp), Err(Error::Malformed)]);
        // Length runs past the header; kind with no length byte at all.
        assert_eq!(opts(&[0x08, 0x0a, 0, 0, 0, 1]), [Err(Error::Malformed)]);
        assert_eq!(opts(&[0x01, 0x02]), [Ok(TcpOption::NoOp), Err(Error::Malformed)]);
        // MSS with length 3, and a malformed option stops the iterator.
        assert_eq!(opts(&[0x02, 0x03, 0x05, 0x01, 0x01]), [Err(Error::Malformed)]);
        // Wrong lengths for every other known kind.
        for bad in [&[0x03, 0x02][..], &[0x04, 0x03, 0], &[0x05, 0x06, 0, 0, 0, 0], &[0x08, 0x08, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(opts(bad), [Err(Error::Malformed)], "{bad:?}");
        }
        // Unknown kind with data, then EndOfList, then garbage that is ignored.
        assert_eq!(
            opts(&[0x1e, 0x04, 0xaa, 0xbb, 0x00, 0xff, 0x00, 0x02]),
            [Ok(TcpOption::Unknown { kind: 0x1e, data: &[0xaa, 0xbb] }), Ok(TcpOption::EndOfList),]
        );
        // Unknown kind with no data.
        assert_eq!(opts(&[0xfd, 0x02]), [Ok(TcpOption::Unknown { kind: 0xfd, data: &[] })]);
    }

    #[test]
    fn sack_blocks() {
        let mut b = vec![0x01, 0x01, 0x05, 0x12];
        for v in [1u32, 2, 3, 4] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            opts(&b),
            [
                Ok(TcpOption::NoOp),
                Ok(TcpOption::NoOp),
                Ok(TcpOption::SackRange([Some((1, 2)), Some((3, 4)), None, None])),
            ]
        );
        let mut b = vec![0x05, 34];
        for v in 0u32..8 {
            b.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(opts(&b), [Ok(TcpOption::SackRange([Some((0, 1)), Some((2, 3)), Some((4, 5)), Some((6, 7))]))]);
    }

    proptest::proptest! {
        #[test]
        fn options_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..60)) {
            let n = TcpOptions::new(&bytes).count();
            proptest::prop_assert!(n <= bytes.len());
        }

        #[test]
        fn view_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let p = TcpPacket::new_unchecked(&bytes[..]);
            let _ = (p.header_len(), p.flags(), p.payload().len(), p.options().count());
            let _ = p.verify_checksum_v4(SRC, DST);
            if let Ok(p) = TcpPacket::new_checked(&bytes[..]) {
                proptest::prop_assert!(p.header_len() >= 20 && p.header_len() <= bytes.len());
            }
        }
    }
}
