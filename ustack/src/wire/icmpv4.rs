//! ICMPv4 messages (RFC 792), with echo request/reply fields.
//!
//! Owns the 8-byte ICMP header layout and the ICMP checksum (over the whole
//! message). The view's buffer must be exactly the ICMP message, i.e. the
//! IPv4 payload. Answering echoes lives in [`crate::l3`].

use super::checksum::{fold, ones_complement_sum};
use super::{rd_u16, rd_u8, sub, wr_u16, wr_u8, Error, Result};

/// Echo reply message type.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable message type.
pub const DEST_UNREACHABLE: u8 = 3;
/// Echo request message type.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded message type.
pub const TIME_EXCEEDED: u8 = 11;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const DATA: usize = 8;
}

/// A view of an ICMPv4 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Length of the ICMP header.
    pub const HEADER_LEN: usize = field::DATA;

    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer, checking it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` when the buffer is shorter than 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < field::DATA {
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

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        rd_u8(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        rd_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, field::DATA, b.len())
    }

    /// Whether the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        b.len() >= field::DATA && fold(ones_complement_sum(b, 0)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::TYPE, v);
    }

    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        wr_u8(self.buffer.as_mut(), field::CODE, v);
    }

    /// Sets the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        wr_u16(self.buffer.as_mut(), field::ECHO_SEQNO, v);
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = ones_complement_sum(self.buffer.as_ref(), 0);
        self.set_checksum(fold(sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echo request id 0x1234 seq 1 with "abcd" as data, checksum filled.
    fn echo() -> Vec<u8> {
        let mut b = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];
        Icmpv4Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn good_echo() {
        let b = echo();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.data(), b"abcd");
        assert!(p.verify_checksum());
        // 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb -> !0xdefb
        assert_eq!(p.checksum(), 0x2104);
    }

    #[test]
    fn rewrite_to_reply() {
        let mut b = echo();
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(ECHO_REPLY);
        p.set_code(0);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.set_echo_ident(1);
        p.set_echo_seq_no(2);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn truncated_and_bad_checksum() {
        let b = echo();
        for n in 0..8 {
            assert_eq!(Icmpv4Packet::new_checked(&b[..n]).unwrap_err(), Error::Truncated);
            assert!(!Icmpv4Packet::new_unchecked(&b[..n]).verify_checksum());
        }
        let mut b = echo();
        b[11] ^= 0xff;
        assert!(!Icmpv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }
}
