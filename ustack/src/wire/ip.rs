//! Values shared by IPv4 and IPv6: the IP protocol / next-header numbers.
//!
//! Owns only constants; the headers themselves live in `ipv4` and `ipv6`.

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next_header`).
pub mod protocol {
    /// Internet Control Message Protocol (v4).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;

    /// Short lowercase name of a protocol number, if it is one of the above.
    pub fn name(proto: u8) -> Option<&'static str> {
        match proto {
            ICMP => Some("icmp"),
            TCP => Some("tcp"),
            UDP => Some("udp"),
            ICMPV6 => Some("icmpv6"),
            _ => None,
        }
    }
}
