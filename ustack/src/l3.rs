//! The per-frame L2/L3 fast path: [`process`] is called by the runtime's
//! worker once per received frame.
//!
//! This module owns the decision for one frame: parse Ethernet (with up to
//! two VLAN tags), answer ARP requests and ICMPv4 echo requests for the box's
//! own addresses by rewriting the frame in place, validate IPv4/IPv6 and
//! TCP/UDP headers, and classify everything else into the flow it belongs
//! to. It does not touch the flow table, count drops or transmit: the caller
//! does that with the returned [`Verdict`].
//!
//! Choices made here:
//! - Every IPv4 header checksum is verified; TCP/UDP checksums are not (the
//!   stacks that need payload integrity verify them).
//! - ICMPv4 to one of our addresses has its checksum verified whatever its
//!   type; echo requests (code 0) are answered, anything else is consumed.
//!   A fragmented ICMP message to us is consumed without an answer.
//! - An ARP request for one of our addresses is answered; any other ARP
//!   packet whose target IP is ours (replies, unknown operations) is
//!   consumed; ARP for other addresses is forwarded. ARP that is not
//!   Ethernet/IPv4 is forwarded as non-IP; truncated ARP is dropped.
//! - IPv4 and IPv6 non-first fragments become flows with ports 0. For a first
//!   fragment the UDP length field (which covers the whole datagram) is not
//!   checked against the fragment.
//! - ICMPv6 (neighbour discovery included) is forwarded, never answered.
//! - A frame with a third VLAN tag is forwarded as non-IP.
//! - No allocation, no option parsing, no iterators on this path.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::{Direction, FlowKey};
use crate::wire::{
    icmpv4, protocol, sub, sub_mut, ArpOperation, ArpPacket, ArpRepr, Error, EtherType, EthernetAddress, EthernetFrame,
    Icmpv4Packet, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket, UdpPacket, VlanTag,
};

/// Why a frame was dropped; one counter per variant in the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    EthTruncated,
    /// A VLAN tag announced but cut short.
    VlanTruncated,
    /// Ethernet/IPv4 ARP shorter than 28 bytes.
    ArpMalformed,
    /// Shorter than a 20-byte IPv4 header.
    Ipv4Truncated,
    /// EtherType IPv4 but version is not 4.
    Ipv4BadVersion,
    /// IHL below 5 or past the frame.
    Ipv4BadHeaderLen,
    /// Total length below the header length or past the frame.
    Ipv4BadTotalLen,
    /// Wrong IPv4 header checksum.
    Ipv4BadChecksum,
    /// TTL expired (only used if we ever route).
    Ipv4TtlExpired,
    /// Shorter than a 40-byte IPv6 header.
    Ipv6Truncated,
    /// Payload length past the frame.
    Ipv6BadLength,
    /// An extension header that does not fit.
    Ipv6BadExtHeader,
    /// Shorter than a 20-byte TCP header.
    TcpTruncated,
    /// Data offset below 5 or past the segment.
    TcpBadHeaderLen,
    /// Malformed TCP options (not checked on the fast path; reserved).
    TcpBadOptions,
    /// Shorter than an 8-byte UDP header.
    UdpTruncated,
    /// UDP length below 8 or past the datagram.
    UdpBadLength,
    /// ICMP to us shorter than its 8-byte header.
    IcmpTruncated,
    /// ICMP to us with a wrong checksum.
    IcmpBadChecksum,
    /// EtherType IPv6 but version is not 6.
    Ipv6BadVersion,
}

impl DropReason {
    /// Number of variants.
    pub const COUNT: usize = 20;

    /// Every variant, in [`DropReason::index`] order.
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::EthTruncated,
        DropReason::VlanTruncated,
        DropReason::ArpMalformed,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadHeaderLen,
        DropReason::Ipv4BadTotalLen,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4TtlExpired,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6BadLength,
        DropReason::Ipv6BadExtHeader,
        DropReason::TcpTruncated,
        DropReason::TcpBadHeaderLen,
        DropReason::TcpBadOptions,
        DropReason::UdpTruncated,
        DropReason::UdpBadLength,
        DropReason::IcmpTruncated,
        DropReason::IcmpBadChecksum,
        DropReason::Ipv6BadVersion,
    ];

    /// snake_case name, e.g. `"ipv4_bad_checksum"`, for counters.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::EthTruncated => "eth_truncated",
            DropReason::VlanTruncated => "vlan_truncated",
            DropReason::ArpMalformed => "arp_malformed",
            DropReason::Ipv4Truncated => "ipv4_truncated",
            DropReason::Ipv4BadVersion => "ipv4_bad_version",
            DropReason::Ipv4BadHeaderLen => "ipv4_bad_header_len",
            DropReason::Ipv4BadTotalLen => "ipv4_bad_total_len",
            DropReason::Ipv4BadChecksum => "ipv4_bad_checksum",
            DropReason::Ipv4TtlExpired => "ipv4_ttl_expired",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6BadLength => "ipv6_bad_length",
            DropReason::Ipv6BadExtHeader => "ipv6_bad_ext_header",
            DropReason::TcpTruncated => "tcp_truncated",
            DropReason::TcpBadHeaderLen => "tcp_bad_header_len",
            DropReason::TcpBadOptions => "tcp_bad_options",
            DropReason::UdpTruncated => "udp_truncated",
            DropReason::UdpBadLength => "udp_bad_length",
            DropReason::IcmpTruncated => "icmp_truncated",
            DropReason::IcmpBadChecksum => "icmp_bad_checksum",
            DropReason::Ipv6BadVersion => "ipv6_bad_version",
        }
    }

    /// Position in [`DropReason::ALL`] (the counter index).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The box's own identity on one port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    /// The port's MAC address (source of our replies).
    pub mac: EthernetAddress,
    /// IPv4 addresses we answer ARP and ICMP echo for.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of the box (not answered yet: ICMPv6 is forwarded).
    pub ipv6: Vec<Ipv6Addr>,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the frame on (wire mode forwards it to the peer port). `flow` is
    /// the L4 flow when the frame is IPv4/IPv6 TCP, UDP or another IP
    /// protocol (ports 0 then), None for non-IP (ARP not for us, LLDP, etc.).
    Forward {
        /// The frame's flow, if it is IP.
        flow: Option<FlowPacket>,
    },
    /// The frame was rewritten in place into a reply (ARP reply, ICMP echo
    /// reply); send it back out of the port it came in on. Same length as
    /// the input.
    Reply,
    /// The frame is for the box but needs no answer (e.g. an ARP reply
    /// addressed to us, ICMP that is not an echo request): consume it.
    Consume,
    /// Drop the frame and count the reason.
    Drop(DropReason),
}

/// Flow classification of an IP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPacket {
    /// Direction-free flow key (ports 0 for non-TCP/UDP and non-first fragments).
    pub key: FlowKey,
    /// Direction of this frame within the flow.
    pub dir: Direction,
    /// Offset of the L4 header from the start of the frame (after VLAN tags,
    /// IP options and IPv6 extension headers).
    pub l4_offset: u16,
    /// Bytes of L4 data from `l4_offset` to the end of the IP packet
    /// (Ethernet padding excluded).
    pub ip_payload_len: u16,
    /// TCP flags when this is a TCP segment with its header.
    pub tcp_flags: Option<TcpFlags>,
}

/// Time to live of the echo replies we send.
const REPLY_TTL: u8 = 64;
/// Most VLAN tags we skip (QinQ).
const MAX_VLAN_TAGS: usize = 2;

/// Parses one Ethernet frame (with up to two VLAN tags) and decides what to
/// do with it; see the module docs for the rules. Replies are written into
/// `frame` in place. Never panics, whatever the bytes.
#[inline(always)] // one call site per worker loop; keeps the verdict in registers
pub fn process(frame: &mut [u8], local: &LocalAddrs) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
        return Verdict::Drop(DropReason::EthTruncated);
    };
    let mut ethertype = eth.ethertype();
    let mut off = EthernetFrame::<&[u8]>::HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan() {
            break;
        }
        let Ok(tag) = VlanTag::new_checked(sub(frame, off, frame.len())) else {
            return Verdict::Drop(DropReason::VlanTruncated);
        };
        ethertype = tag.inner_ethertype();
        off += VlanTag::<&[u8]>::HEADER_LEN;
    }
    match ethertype {
        EtherType::IPV4 => ipv4(frame, off, local),
        EtherType::IPV6 => ipv6(frame, off),
        EtherType::ARP => arp(frame, off, local),
        _ => Verdict::Forward { flow: None },
    }
}

/// Recomputes the checksums of an IP frame whose bytes were rewritten in
/// place (an NF that modifies packets): the IPv4 header checksum, and the
/// TCP or UDP checksum over the pseudo-header when the frame holds a whole
/// first fragment's L4 header. The frame's length and headers' lengths must
/// be unchanged by the rewrite. Returns false (and changes nothing) when the
/// frame no longer parses as IPv4/IPv6; non-IP frames are left as they are
/// and count as done.
pub fn refresh_checksums(frame: &mut [u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(&*frame) else { return false };
    let mut ethertype = eth.ethertype();
    let mut off = EthernetFrame::<&[u8]>::HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan() {
            break;
        }
        let Ok(tag) = VlanTag::new_checked(sub(frame, off, frame.len())) else { return false };
        ethertype = tag.inner_ethertype();
        off += VlanTag::<&[u8]>::HEADER_LEN;
    }
    let len = frame.len();
    match ethertype {
        EtherType::IPV4 => {
            let Ok(mut ip) = Ipv4Packet::new_checked(sub_mut(frame, off, len)) else { return false };
            ip.fill_checksum();
            let (src, dst, proto, whole) = (ip.src_addr(), ip.dst_addr(), ip.protocol(), !ip.is_fragment());
            if whole {
                fill_l4(proto, ip.payload_mut(), |t| t.fill_checksum_v4(src, dst), |u| u.fill_checksum_v4(src, dst));
            }
            true
        }
        EtherType::IPV6 => {
            let Ok(ip) = Ipv6Packet::new_checked(sub(frame, off, len)) else { return false };
            let Ok(ul) = ip.walk_ext_headers() else { return false };
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let start = off + Ipv6Packet::<&[u8]>::HEADER_LEN;
            let end = start + ip.payload().len();
            if !ul.first_fragment && !ul.non_first_fragment {
                let l4 = sub_mut(frame, start + ul.offset, end);
                fill_l4(ul.next_header, l4, |t| t.fill_checksum_v6(src, dst), |u| u.fill_checksum_v6(src, dst));
            }
            true
        }
        _ => true,
    }
}

/// Where the TCP payload of an Ethernet frame lies (after VLAN tags, IP
/// options, IPv6 extension headers and TCP options), for NFs that look at
/// or rewrite segment data. `None` for anything but a well-formed,
/// unfragmented TCP segment.
pub fn tcp_payload(frame: &[u8]) -> Option<core::ops::Range<usize>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let mut ethertype = eth.ethertype();
    let mut off = EthernetFrame::<&[u8]>::HEADER_LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !ethertype.is_vlan() {
            break;
        }
        ethertype = VlanTag::new_checked(sub(frame, off, frame.len())).ok()?.inner_ethertype();
        off += VlanTag::<&[u8]>::HEADER_LEN;
    }
    let (l4_start, l4_end) = match ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(sub(frame, off, frame.len())).ok()?;
            if ip.is_fragment() || ip.protocol() != protocol::TCP {
                return None;
            }
            (off + ip.header_len(), off + usize::from(ip.total_len()))
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(sub(frame, off, frame.len())).ok()?;
            let ul = ip.walk_ext_headers().ok()?;
            if ul.first_fragment || ul.non_first_fragment || ul.next_header != protocol::TCP {
                return None;
            }
            let start = off + Ipv6Packet::<&[u8]>::HEADER_LEN;
            (start + ul.offset, start + ip.payload().len())
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(sub(frame, l4_start, l4_end)).ok()?;
    Some(l4_start + tcp.header_len()..l4_end)
}

/// Builds a bare TCP segment (20-byte header, no options, no payload) in
/// `out` behind the Ethernet header `l2` (14 bytes, or 18 with one VLAN
/// tag, copied as given; its EtherType must match the address family):
/// how a stack sends the RSTs of a terminated flow. Checksums are filled.
/// Returns the frame length (at least 60, zero-padded), or `None` when
/// `out` is too short or `src` and `dst` are of different families.
#[allow(clippy::too_many_arguments)]
pub fn build_tcp_segment(
    l2: &[u8],
    src: core::net::IpAddr,
    dst: core::net::IpAddr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    out: &mut [u8],
) -> Option<usize> {
    use core::net::IpAddr;
    let ip_len = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20,
        (IpAddr::V6(_), IpAddr::V6(_)) => 40,
        _ => return None,
    };
    let len = l2.len() + ip_len + 20;
    let frame = out.get_mut(..len.max(60))?;
    frame.fill(0);
    frame.get_mut(..l2.len())?.copy_from_slice(l2);
    let (ip_buf, tcp_buf) = frame.get_mut(l2.len()..len)?.split_at_mut(ip_len);
    let mut tcp = TcpPacket::new_unchecked(tcp_buf);
    tcp.set_src_port(src_port);
    tcp.set_dst_port(dst_port);
    tcp.set_seq_number(seq);
    tcp.set_ack_number(ack);
    tcp.set_header_len(20);
    tcp.set_flags(flags);
    tcp.set_window_len(0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut ip = Ipv4Packet::new_unchecked(ip_buf);
            ip.set_version_and_header_len(20);
            ip.set_total_len(40);
            ip.set_frag(true, false, 0);
            ip.set_ttl(64);
            ip.set_protocol(protocol::TCP);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            ip.fill_checksum();
            tcp.fill_checksum_v4(s, d);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ip = Ipv6Packet::new_unchecked(ip_buf);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(20);
            ip.set_next_header(protocol::TCP);
            ip.set_hop_limit(64);
            ip.set_src_addr(s);
            ip.set_dst_addr(d);
            tcp.fill_checksum_v6(s, d);
        }
        _ => return None,
    }
    Some(len.max(60))
}

fn fill_l4(
    proto: u8,
    l4: &mut [u8],
    tcp: impl FnOnce(&mut TcpPacket<&mut [u8]>),
    udp: impl FnOnce(&mut UdpPacket<&mut [u8]>),
) {
    match proto {
        protocol::TCP => {
            if let Ok(mut t) = TcpPacket::new_checked(l4) {
                tcp(&mut t);
            }
        }
        protocol::UDP => {
            if let Ok(mut u) = UdpPacket::new_checked(l4) {
                udp(&mut u);
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn ipv4(frame: &mut [u8], off: usize, local: &LocalAddrs) -> Verdict {
    let ip = match Ipv4Packet::new_checked(sub(frame, off, frame.len())) {
        Ok(ip) => ip,
        Err(e) => {
            return Verdict::Drop(match e {
                Error::Truncated => DropReason::Ipv4Truncated,
                Error::BadVersion => DropReason::Ipv4BadVersion,
                Error::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
                _ => DropReason::Ipv4BadTotalLen,
            })
        }
    };
    if !ip.verify_checksum() {
        return Verdict::Drop(DropReason::Ipv4BadChecksum);
    }
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol());
    let l4 = ip.payload();
    let l4_offset = off + ip.header_len();

    if proto == protocol::ICMP && local.ipv4.contains(&dst) {
        if ip.is_fragment() {
            return Verdict::Consume;
        }
        let Ok(icmp) = Icmpv4Packet::new_checked(l4) else {
            return Verdict::Drop(DropReason::IcmpTruncated);
        };
        if !icmp.verify_checksum() {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
        if icmp.msg_type() != icmpv4::ECHO_REQUEST || icmp.code() != 0 {
            return Verdict::Consume;
        }
        let end = off + usize::from(ip.total_len());
        echo_reply(frame, off, end, src, dst, local.mac);
        return Verdict::Reply;
    }

    let ports = if ip.frag_offset() != 0 { Ok(Ports::NONE) } else { l4_ports(proto, l4, ip.more_frags()) };
    match ports {
        Ok(p) => {
            let (key, dir) = FlowKey::from_v4(src, p.sp(), dst, p.dp(), proto);
            forward(key, dir, l4_offset, l4.len(), p.tcp_flags())
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

#[inline(always)]
fn ipv6(frame: &[u8], off: usize) -> Verdict {
    let ip = match Ipv6Packet::new_checked(sub(frame, off, frame.len())) {
        Ok(ip) => ip,
        Err(e) => {
            return Verdict::Drop(match e {
                Error::Truncated => DropReason::Ipv6Truncated,
                Error::BadVersion => DropReason::Ipv6BadVersion,
                _ => DropReason::Ipv6BadLength,
            })
        }
    };
    let Ok(ul) = ip.walk_ext_headers() else {
        return Verdict::Drop(DropReason::Ipv6BadExtHeader);
    };
    let payload = ip.payload();
    let l4 = sub(payload, ul.offset, payload.len());
    let l4_offset = off + Ipv6Packet::<&[u8]>::HEADER_LEN + ul.offset;
    let ports = if ul.non_first_fragment { Ok(Ports::NONE) } else { l4_ports(ul.next_header, l4, ul.first_fragment) };
    match ports {
        Ok(p) => {
            let (key, dir) = FlowKey::from_v6(ip.src_addr(), p.sp(), ip.dst_addr(), p.dp(), ul.next_header);
            forward(key, dir, l4_offset, l4.len(), p.tcp_flags())
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Ports and TCP flags of an L4 header, packed in one `u64` (source port,
/// destination port, flags, is-TCP) so that the hot path keeps it in a
/// register: a struct or tuple here got spilled and reloaded at an odd
/// offset, stalling on store-to-load forwarding at every packet.
#[derive(Clone, Copy)]
struct Ports(u64);

impl Ports {
    const NONE: Ports = Ports(0);

    #[inline(always)]
    fn new(sp: u16, dp: u16, tcp_flags: Option<u8>) -> Ports {
        let (flags, tcp) = match tcp_flags {
            Some(f) => (u64::from(f), 1u64),
            None => (0, 0),
        };
        Ports(u64::from(sp) | (u64::from(dp) << 16) | (flags << 32) | (tcp << 40))
    }

    #[inline(always)]
    fn sp(self) -> u16 {
        self.0 as u16
    }

    #[inline(always)]
    fn dp(self) -> u16 {
        (self.0 >> 16) as u16
    }

    #[inline(always)]
    fn tcp_flags(self) -> Option<TcpFlags> {
        (self.0 >> 40 & 1 == 1).then_some(TcpFlags((self.0 >> 32) as u8))
    }
}

/// Validates the TCP/UDP header at the start of `l4` and returns its ports
/// (and TCP flags); other protocols have ports 0. `first_fragment`: the
/// packet is the first fragment of a larger datagram, so the UDP length
/// field cannot be checked against it.
#[inline(always)]
fn l4_ports(proto: u8, l4: &[u8], first_fragment: bool) -> Result<Ports, DropReason> {
    match proto {
        protocol::TCP => match TcpPacket::new_checked(l4) {
            Ok(tcp) => Ok(Ports::new(tcp.src_port(), tcp.dst_port(), Some(tcp.flags().0))),
            Err(Error::Truncated) => Err(DropReason::TcpTruncated),
            Err(_) => Err(DropReason::TcpBadHeaderLen),
        },
        protocol::UDP => {
            let udp = if first_fragment {
                let udp = UdpPacket::new_unchecked(l4);
                if l4.len() < UdpPacket::<&[u8]>::HEADER_LEN {
                    return Err(DropReason::UdpTruncated);
                }
                udp
            } else {
                match UdpPacket::new_checked(l4) {
                    Ok(udp) => udp,
                    Err(Error::Truncated) => return Err(DropReason::UdpTruncated),
                    Err(_) => return Err(DropReason::UdpBadLength),
                }
            };
            Ok(Ports::new(udp.src_port(), udp.dst_port(), None))
        }
        _ => Ok(Ports::NONE),
    }
}

#[inline(always)]
fn forward(key: FlowKey, dir: Direction, l4_offset: usize, l4_len: usize, tcp_flags: Option<TcpFlags>) -> Verdict {
    // Both fit for any real frame; an IPv6 packet whose extension headers
    // push the L4 header past 64 KiB cannot be described, so it is dropped.
    let (Ok(l4_offset), Ok(ip_payload_len)) = (u16::try_from(l4_offset), u16::try_from(l4_len)) else {
        return Verdict::Drop(DropReason::Ipv6BadExtHeader);
    };
    Verdict::Forward { flow: Some(FlowPacket { key, dir, l4_offset, ip_payload_len, tcp_flags }) }
}

/// Rewrites an ICMP echo request (IPv4 packet at `frame[off..end]`) into the
/// echo reply, in place.
fn echo_reply(frame: &mut [u8], off: usize, end: usize, src: Ipv4Addr, dst: Ipv4Addr, mac: EthernetAddress) {
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    let peer = eth.src_addr();
    eth.set_dst_addr(peer);
    eth.set_src_addr(mac);

    let mut ip = Ipv4Packet::new_unchecked(sub_mut(frame, off, end));
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(REPLY_TTL);
    let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(icmpv4::ECHO_REPLY);
    icmp.fill_checksum();
    ip.fill_checksum();
}

#[inline]
fn arp(frame: &mut [u8], off: usize, local: &LocalAddrs) -> Verdict {
    let repr = match ArpPacket::new_checked(sub(frame, off, frame.len())) {
        Ok(p) => match ArpRepr::parse(&p) {
            Ok(r) => r,
            Err(_) => return Verdict::Drop(DropReason::ArpMalformed),
        },
        Err(Error::Unsupported) => return Verdict::Forward { flow: None },
        Err(_) => return Verdict::Drop(DropReason::ArpMalformed),
    };
    if !local.ipv4.contains(&repr.target_ip) {
        return Verdict::Forward { flow: None };
    }
    if repr.operation != ArpOperation::Request {
        return Verdict::Consume;
    }
    let reply = ArpRepr {
        operation: ArpOperation::Reply,
        source_hw: local.mac,
        source_ip: repr.target_ip,
        target_hw: repr.source_hw,
        target_ip: repr.source_ip,
    };
    let mut eth = EthernetFrame::new_unchecked(&mut *frame);
    let peer = eth.src_addr();
    eth.set_dst_addr(peer);
    eth.set_src_addr(local.mac);
    let len = frame.len();
    reply.emit(&mut ArpPacket::new_unchecked(sub_mut(frame, off, len)));
    Verdict::Reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{fold, ones_complement_sum};
    use crate::wire::ipv6::ext;
    use proptest::prelude::*;

    const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    const PEER_MAC: EthernetAddress = EthernetAddress([0x00, 0x0c, 0x29, 0x3e, 0x5c, 0x7a]);
    const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

    fn local() -> LocalAddrs {
        LocalAddrs {
            mac: OUR_MAC,
            ipv4: vec![Ipv4Addr::new(10, 9, 9, 9), OUR_IP],
            ipv6: vec!["2001:db8::ff".parse().unwrap()],
        }
    }

    fn eth(dst: EthernetAddress, src: EthernetAddress, tags: &[u16], ty: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&dst.0);
        b.extend_from_slice(&src.0);
        for &t in tags {
            b.extend_from_slice(&t.to_be_bytes());
            b.extend_from_slice(&[0x00, 0x64]); // vid 100
        }
        b.extend_from_slice(&ty.to_be_bytes());
        b
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        let mut ip = Ipv4Packet::new_unchecked(&mut b[..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len((20 + l4.len()) as u16);
        ip.set_ident(0x1c46);
        ip.set_frag(frag == 0, false, frag);
        ip.set_ttl(64);
        ip.set_protocol(proto);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
        b.extend_from_slice(l4);
        b
    }

    fn tcp(sp: u16, dp: u16, flags: TcpFlags, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(sp);
        t.set_dst_port(dp);
        t.set_seq_number(1);
        t.set_header_len(20);
        t.set_flags(flags);
        t.set_window_len(1024);
        b.extend_from_slice(data);
        b
    }

    fn udp(sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(sp);
        u.set_dst_port(dp);
        u.set_len((8 + data.len()) as u16);
        b.extend_from_slice(data);
        b
    }

    fn frame_v4(tags: &[u16], ip: &[u8]) -> Vec<u8> {
        let mut f = eth(OUR_MAC, PEER_MAC, tags, 0x0800);
        f.extend_from_slice(ip);
        f
    }

    fn echo_request(data: &[u8]) -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07];
        icmp.extend_from_slice(data);
        Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
        icmp
    }

    /// Captured-style ARP request: who has 192.168.1.1? tell 192.168.1.100,
    /// padded to the 60-byte Ethernet minimum.
    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let mut f = eth(EthernetAddress::BROADCAST, PEER_MAC, &[], 0x0806);
        f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01]);
        f.extend_from_slice(&PEER_MAC.0);
        f.extend_from_slice(&PEER_IP.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f.resize(60, 0);
        f
    }

    fn flow_of(v: Verdict) -> FlowPacket {
        match v {
            Verdict::Forward { flow: Some(f) } => f,
            other => panic!("expected a flow, got {other:?}"),
        }
    }

    #[test]
    fn drop_reason_table() {
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        let mut names = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.name()));
            assert!(r.name().bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
        }
        assert_eq!(DropReason::Ipv4BadChecksum.name(), "ipv4_bad_checksum");
        assert_eq!(DropReason::TcpBadOptions.to_string(), "tcp_bad_options");
    }

    #[test]
    fn arp_request_for_us_is_answered_in_place() {
        let mut f = arp_request(OUR_IP);
        let len = f.len();
        assert_eq!(process(&mut f, &local()), Verdict::Reply);
        assert_eq!(f.len(), len);
        let mut expected = eth(PEER_MAC, OUR_MAC, &[], 0x0806);
        expected.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02]);
        expected.extend_from_slice(&OUR_MAC.0);
        expected.extend_from_slice(&OUR_IP.octets());
        expected.extend_from_slice(&PEER_MAC.0);
        expected.extend_from_slice(&PEER_IP.octets());
        expected.resize(60, 0);
        assert_eq!(f, expected);
    }

    #[test]
    fn arp_other_cases() {
        let mut f = arp_request(Ipv4Addr::new(192, 168, 1, 2));
        let orig = f.clone();
        assert_eq!(process(&mut f, &local()), Verdict::Forward { flow: None });
        assert_eq!(f, orig);
        // A reply addressed to us is consumed.
        let mut f = arp_request(OUR_IP);
        f[21] = 2;
        assert_eq!(process(&mut f, &local()), Verdict::Consume);
        // Truncated ARP.
        let mut f = arp_request(OUR_IP);
        f.truncate(14 + 27);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::ArpMalformed));
        // Not Ethernet/IPv4.
        let mut f = arp_request(OUR_IP);
        f[15] = 6;
        assert_eq!(process(&mut f, &local()), Verdict::Forward { flow: None });
        // VLAN-tagged ARP for us is answered, tag kept.
        let mut f = eth(EthernetAddress::BROADCAST, PEER_MAC, &[0x8100], 0x0806);
        f.extend_from_slice(&arp_request(OUR_IP)[14..]);
        assert_eq!(process(&mut f, &local()), Verdict::Reply);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 0x64]);
        assert_eq!(&f[18 + 8..18 + 14], &OUR_MAC.0);
    }

    #[test]
    fn echo_request_is_answered_in_place() {
        let icmp = echo_request(b"0123456789abcdefXYZ"); // odd length
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &icmp));
        f.extend_from_slice(&[0xee; 4]); // Ethernet padding stays untouched
        let len = f.len();
        assert_eq!(process(&mut f, &local()), Verdict::Reply);
        assert_eq!(f.len(), len);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((e.dst_addr(), e.src_addr()), (PEER_MAC, OUR_MAC));
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (OUR_IP, PEER_IP));
        assert_eq!(ip.ttl(), 64);
        assert!(ip.verify_checksum());
        let reply = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((reply.msg_type(), reply.code()), (icmpv4::ECHO_REPLY, 0));
        assert_eq!((reply.echo_ident(), reply.echo_seq_no()), (0x1234, 7));
        assert_eq!(reply.data(), b"0123456789abcdefXYZ");
        assert!(reply.verify_checksum());
        assert_eq!(fold(ones_complement_sum(ip.payload(), 0)), 0);
        assert_eq!(&f[len - 4..], &[0xee; 4]);
    }

    #[test]
    fn echo_with_bad_icmp_checksum_is_dropped() {
        let mut icmp = echo_request(b"ping");
        icmp[2] ^= 0x10;
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &icmp));
        let orig = f.clone();
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::IcmpBadChecksum));
        assert_eq!(f, orig);
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &[8, 0, 0]));
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::IcmpTruncated));
    }

    #[test]
    fn other_icmp() {
        // Echo reply to us: consumed.
        let mut icmp = echo_request(b"x");
        icmp[0] = 0;
        Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &icmp));
        assert_eq!(process(&mut f, &local()), Verdict::Consume);
        // Echo request to someone else: forwarded as a flow with ports 0.
        let other = Ipv4Addr::new(8, 8, 8, 8);
        let mut f = frame_v4(&[], &ipv4(PEER_IP, other, protocol::ICMP, 0, &echo_request(b"x")));
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!(fl.key, FlowKey::from_v4(PEER_IP, 0, other, 0, protocol::ICMP).0);
        assert_eq!(fl.tcp_flags, None);
        // Fragmented echo to us: consumed, not answered.
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 8, b"12345678"));
        assert_eq!(process(&mut f, &local()), Verdict::Consume);
    }

    #[test]
    fn ipv4_header_errors() {
        let good = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::UDP, 0, &udp(1, 2, b"")));
        let mut f = good.clone();
        f[14 + 10] ^= 0xff;
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4BadChecksum));
        let mut f = good.clone();
        f[14 + 8] = 1; // TTL changed: checksum no longer matches
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4BadChecksum));
        let mut f = good.clone();
        f.truncate(14 + 19);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4Truncated));
        let mut f = good.clone();
        f[14] = 0x55;
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4BadVersion));
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4BadHeaderLen));
        let mut f = good.clone();
        f[14 + 3] = 0xff;
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv4BadTotalLen));
        let mut f = good;
        f.truncate(13);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::EthTruncated));
    }

    #[test]
    fn plain_tcp_and_udp_flows() {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let syn = tcp(40000, 80, TcpFlags::SYN, b"");
        let mut f = frame_v4(&[], &ipv4(PEER_IP, server, protocol::TCP, 0, &syn));
        let fl = flow_of(process(&mut f, &local()));
        let (key, dir) = FlowKey::from_v4(PEER_IP, 40000, server, 80, protocol::TCP);
        assert_eq!((fl.key, fl.dir), (key, dir));
        assert_eq!((fl.l4_offset, fl.ip_payload_len), (34, 20));
        assert_eq!(fl.tcp_flags, Some(TcpFlags::SYN));

        let mut f = frame_v4(&[], &ipv4(server, PEER_IP, protocol::UDP, 0, &udp(53, 5353, b"abc")));
        f.resize(60, 0);
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!(fl.key, FlowKey::from_v4(PEER_IP, 5353, server, 53, protocol::UDP).0);
        assert_eq!((fl.l4_offset, fl.ip_payload_len, fl.tcp_flags), (34, 11, None));

        // TCP to our own address is forwarded too (no stack terminates it here).
        let mut f = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::TCP, 0, &syn));
        assert!(flow_of(process(&mut f, &local())).tcp_flags.is_some());
        // GRE: ports 0.
        let mut f = frame_v4(&[], &ipv4(PEER_IP, server, 47, 0, b"gre!"));
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!(fl.key.lo().1, 0);
        assert_eq!(fl.key.proto(), 47);
    }

    #[test]
    fn l4_header_errors() {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let run = |proto: u8, l4: &[u8]| process(&mut frame_v4(&[], &ipv4(PEER_IP, server, proto, 0, l4)), &local());
        let syn = tcp(1, 2, TcpFlags::SYN, b"");
        assert_eq!(run(protocol::TCP, &syn[..19]), Verdict::Drop(DropReason::TcpTruncated));
        let mut bad = syn.clone();
        bad[12] = 0x40;
        assert_eq!(run(protocol::TCP, &bad), Verdict::Drop(DropReason::TcpBadHeaderLen));
        bad[12] = 0x60;
        assert_eq!(run(protocol::TCP, &bad), Verdict::Drop(DropReason::TcpBadHeaderLen));
        let u = udp(1, 2, b"abcd");
        assert_eq!(run(protocol::UDP, &u[..7]), Verdict::Drop(DropReason::UdpTruncated));
        let mut bad = u.clone();
        bad[5] = 7;
        assert_eq!(run(protocol::UDP, &bad), Verdict::Drop(DropReason::UdpBadLength));
        bad[5] = 13;
        assert_eq!(run(protocol::UDP, &bad), Verdict::Drop(DropReason::UdpBadLength));
    }

    #[test]
    fn ipv4_fragments() {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        // Non-first fragment: ports 0, L4 bytes are not parsed.
        let mut f = frame_v4(&[], &ipv4(PEER_IP, server, protocol::UDP, 1480, b"garbage!"));
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!(fl.key, FlowKey::from_v4(PEER_IP, 0, server, 0, protocol::UDP).0);
        // First fragment of a large UDP datagram: the length field covers the
        // whole datagram, yet the ports are taken.
        let mut ip = ipv4(PEER_IP, server, protocol::UDP, 0, &udp(7, 9, &[0; 16]));
        ip[20 + 4..20 + 6].copy_from_slice(&3000u16.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut ip[..]).set_frag(false, true, 0);
        Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
        let fl = flow_of(process(&mut frame_v4(&[], &ip), &local()));
        assert_eq!(fl.key, FlowKey::from_v4(PEER_IP, 7, server, 9, protocol::UDP).0);
    }

    #[test]
    fn vlan_tagged_tcp() {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let seg = tcp(80, 40000, TcpFlags::SYN | TcpFlags::ACK, b"hi");
        let mut f = frame_v4(&[0x8100], &ipv4(server, PEER_IP, protocol::TCP, 0, &seg));
        let fl = flow_of(process(&mut f, &local()));
        let (key, dir) = FlowKey::from_v4(PEER_IP, 40000, server, 80, protocol::TCP);
        assert_eq!(fl.key, key);
        assert_eq!(fl.dir, dir.reverse());
        assert_eq!((fl.l4_offset, fl.ip_payload_len), (14 + 4 + 20, 22));
        assert_eq!(fl.tcp_flags, Some(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(TcpPacket::new_checked(&f[usize::from(fl.l4_offset)..]).unwrap().dst_port(), 40000);
    }

    #[test]
    fn qinq() {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let seg = udp(1234, 4321, b"q");
        let mut f = frame_v4(&[0x88a8, 0x8100], &ipv4(PEER_IP, server, protocol::UDP, 0, &seg));
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!(fl.key, FlowKey::from_v4(PEER_IP, 1234, server, 4321, protocol::UDP).0);
        assert_eq!(fl.l4_offset, 14 + 8 + 20);
        // ICMP echo through QinQ is answered with both tags kept.
        let mut f = frame_v4(&[0x88a8, 0x8100], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &echo_request(b"q")));
        assert_eq!(process(&mut f, &local()), Verdict::Reply);
        assert_eq!(&f[12..14], &[0x88, 0xa8]);
        assert!(Ipv4Packet::new_checked(&f[22..]).unwrap().verify_checksum());
        // A third tag is not parsed: non-IP.
        let mut f = frame_v4(&[0x88a8, 0x8100, 0x8100], &ipv4(PEER_IP, server, protocol::UDP, 0, &seg));
        assert_eq!(process(&mut f, &local()), Verdict::Forward { flow: None });
    }

    #[test]
    fn truncated_vlan() {
        let f = eth(OUR_MAC, PEER_MAC, &[0x8100], 0x0800);
        for n in 14..18 {
            let mut g = f[..n].to_vec();
            assert_eq!(process(&mut g, &local()), Verdict::Drop(DropReason::VlanTruncated), "{n}");
        }
        let f = eth(OUR_MAC, PEER_MAC, &[0x88a8, 0x8100], 0x0800);
        for n in 18..22 {
            let mut g = f[..n].to_vec();
            assert_eq!(process(&mut g, &local()), Verdict::Drop(DropReason::VlanTruncated), "{n}");
        }
        // Tag complete, IPv4 missing.
        let mut g = f.clone();
        assert_eq!(process(&mut g, &local()), Verdict::Drop(DropReason::Ipv4Truncated));
    }

    #[test]
    fn refresh_checksums_after_an_in_place_rewrite() {
        // IPv4/TCP behind a VLAN tag: rewrite payload bytes, refresh, and the
        // TCP checksum verifies again (and differed before the refresh).
        let (src, dst) = (PEER_IP, Ipv4Addr::new(10, 9, 9, 9));
        let mut l4 = tcp(40000, 80, TcpFlags::ACK | TcpFlags::PSH, b"GET /hello HTTP/1.0\r\n");
        TcpPacket::new_unchecked(&mut l4[..]).fill_checksum_v4(src, dst);
        let mut f = frame_v4(&[0x8100], &ipv4(src, dst, protocol::TCP, 0, &l4));
        let at = f.len() - 8;
        f[at] ^= 0x20; // "hello" -> "Hello"
        let tcp_at = 14 + 4 + 20;
        let ok = |f: &[u8]| TcpPacket::new_checked(&f[tcp_at..]).unwrap().verify_checksum_v4(src, dst);
        assert!(!ok(&f));
        f[14 + 4 + 8] = 17; // and the TTL, so the IPv4 header checksum is stale too
        assert!(refresh_checksums(&mut f));
        assert!(ok(&f));
        assert!(Ipv4Packet::new_checked(&f[18..]).unwrap().verify_checksum());
        // IPv6/UDP.
        let mut u = udp(5353, 53, b"question");
        let mut g = frame_v6(protocol::UDP, &u);
        let n = g.len() - 1;
        g[n] = b'!';
        assert!(refresh_checksums(&mut g));
        u[15] = b'!';
        let (s6, d6) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        UdpPacket::new_unchecked(&mut u[..]).fill_checksum_v6(s6, d6);
        assert_eq!(&g[54..], &u[..]);
        // Garbage is refused without a panic; non-IP is left alone.
        assert!(!refresh_checksums(&mut [0u8; 5]));
        let mut arp = arp_request(OUR_IP);
        let before = arp.clone();
        assert!(refresh_checksums(&mut arp));
        assert_eq!(arp, before);
    }

    #[test]
    fn tcp_payload_is_located_past_every_header() {
        let l4 = tcp(40000, 80, TcpFlags::ACK, b"payload!");
        let f = frame_v4(&[0x8100], &ipv4(PEER_IP, OUR_IP, protocol::TCP, 0, &l4));
        let r = tcp_payload(&f).unwrap();
        assert_eq!(&f[r], b"payload!");
        let mut padded = frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::TCP, 0, &tcp(1, 2, TcpFlags::SYN, b"")));
        padded.resize(60, 0); // Ethernet padding is not payload
        assert_eq!(tcp_payload(&padded).unwrap().len(), 0);
        assert_eq!(tcp_payload(&frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::UDP, 0, &udp(1, 2, b"x")))), None);
        assert_eq!(tcp_payload(&frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::TCP, 8, &l4))), None);
        let g = frame_v6(protocol::TCP, &l4);
        assert_eq!(&g[tcp_payload(&g).unwrap()], b"payload!");
        assert_eq!(tcp_payload(&g[..50]), None);
    }

    #[test]
    fn built_rst_segments_parse_and_verify() {
        let l2 = eth(PEER_MAC, OUR_MAC, &[], 0x0800);
        let mut out = [0u8; 128];
        let n = build_tcp_segment(
            &l2,
            PEER_IP.into(),
            OUR_IP.into(),
            40000,
            80,
            7,
            9,
            TcpFlags::RST | TcpFlags::ACK,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 60);
        let mut f = out[..n].to_vec();
        let fp = flow_of(process(&mut f, &LocalAddrs { ipv4: vec![], ..local() }));
        assert_eq!(fp.tcp_flags, Some(TcpFlags::RST | TcpFlags::ACK));
        let t = TcpPacket::new_checked(&out[34..54]).unwrap();
        assert_eq!((t.seq_number(), t.ack_number()), (7, 9));
        assert!(t.verify_checksum_v4(PEER_IP, OUR_IP));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap());
        let l2 = eth(PEER_MAC, OUR_MAC, &[], 0x86dd);
        let n = build_tcp_segment(&l2, s6.into(), d6.into(), 1, 2, 3, 4, TcpFlags::RST, &mut out).unwrap();
        assert_eq!(n, 74);
        assert!(TcpPacket::new_checked(&out[54..74]).unwrap().verify_checksum_v6(s6, d6));
        assert_eq!(build_tcp_segment(&l2, s6.into(), OUR_IP.into(), 1, 2, 3, 4, TcpFlags::RST, &mut out), None);
        assert_eq!(build_tcp_segment(&l2, s6.into(), d6.into(), 1, 2, 3, 4, TcpFlags::RST, &mut out[..70]), None);
    }

    fn frame_v6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = eth(OUR_MAC, PEER_MAC, &[], 0x86dd);
        let mut h = vec![0u8; 40];
        let mut ip = Ipv6Packet::new_unchecked(&mut h[..]);
        ip.set_version_tc_flow(0, 0);
        ip.set_payload_len(payload.len() as u16);
        ip.set_next_header(next);
        ip.set_hop_limit(64);
        ip.set_src_addr("2001:db8::1".parse().unwrap());
        ip.set_dst_addr("2001:db8::2".parse().unwrap());
        f.extend_from_slice(&h);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ipv6_tcp_with_hop_by_hop() {
        // Hop-by-hop with a Router Alert option, then TCP.
        let mut pl = vec![protocol::TCP, 0, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00];
        pl.extend_from_slice(&tcp(443, 50000, TcpFlags::ACK, b"data"));
        let mut f = frame_v6(ext::HOP_BY_HOP, &pl);
        let fl = flow_of(process(&mut f, &local()));
        let (key, dir) =
            FlowKey::from_v6("2001:db8::1".parse().unwrap(), 443, "2001:db8::2".parse().unwrap(), 50000, protocol::TCP);
        assert_eq!((fl.key, fl.dir), (key, dir));
        assert_eq!((fl.l4_offset, fl.ip_payload_len), (14 + 40 + 8, 24));
        assert_eq!(fl.tcp_flags, Some(TcpFlags::ACK));
    }

    #[test]
    fn ipv6_other_cases() {
        // ICMPv6 (a neighbour solicitation) is forwarded with ports 0.
        let mut f = frame_v6(protocol::ICMPV6, &[135, 0, 0, 0, 0, 0, 0, 0]);
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!((fl.key.proto(), fl.key.lo().1, fl.key.hi().1), (protocol::ICMPV6, 0, 0));
        // Broken hop-by-hop length.
        let mut f = frame_v6(ext::HOP_BY_HOP, &[protocol::TCP, 4, 0, 0, 0, 0, 0, 0]);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv6BadExtHeader));
        // Non-first fragment: ports 0.
        let mut f = frame_v6(ext::FRAGMENT, &[protocol::UDP, 0, 0x05, 0xc8, 0, 0, 0, 1, 9, 9]);
        let fl = flow_of(process(&mut f, &local()));
        assert_eq!((fl.key.proto(), fl.key.lo().1, fl.l4_offset), (protocol::UDP, 0, 14 + 48));
        // Length errors.
        let good = frame_v6(protocol::UDP, &udp(1, 2, b"x"));
        let mut f = good.clone();
        f.truncate(14 + 39);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv6Truncated));
        let mut f = good.clone();
        f.truncate(good.len() - 1);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv6BadLength));
        let mut f = good.clone();
        f[14] = 0x40;
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::Ipv6BadVersion));
        let mut f = frame_v6(protocol::UDP, &udp(1, 2, b"x")[..7]);
        assert_eq!(process(&mut f, &local()), Verdict::Drop(DropReason::UdpTruncated));
    }

    #[test]
    fn non_ip_is_forwarded() {
        let mut f = eth(EthernetAddress([0x01, 0x80, 0xc2, 0, 0, 0x0e]), PEER_MAC, &[], 0x88cc);
        f.resize(60, 0);
        assert_eq!(process(&mut f, &local()), Verdict::Forward { flow: None });
        let mut f = f[..14].to_vec();
        assert_eq!(process(&mut f, &local()), Verdict::Forward { flow: None });
    }

    fn valid_frames() -> Vec<Vec<u8>> {
        let server = Ipv4Addr::new(10, 0, 0, 2);
        let mut hbh = vec![protocol::TCP, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend_from_slice(&tcp(1, 2, TcpFlags::SYN, b"x"));
        vec![
            arp_request(OUR_IP),
            frame_v4(&[], &ipv4(PEER_IP, OUR_IP, protocol::ICMP, 0, &echo_request(b"abcdef"))),
            frame_v4(&[0x8100], &ipv4(PEER_IP, server, protocol::TCP, 0, &tcp(1, 2, TcpFlags::ACK, b"data"))),
            frame_v4(&[0x88a8, 0x8100], &ipv4(PEER_IP, server, protocol::UDP, 0, &udp(1, 2, b"u"))),
            frame_v6(ext::HOP_BY_HOP, &hbh),
            frame_v6(ext::FRAGMENT, &[protocol::UDP, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 2, 0, 9, 0, 0, 1]),
        ]
    }

    #[test]
    fn valid_frames_do_not_drop() {
        for mut f in valid_frames() {
            assert!(!matches!(process(&mut f, &local()), Verdict::Drop(_)), "{f:02x?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let len = bytes.len();
            let _ = process(&mut bytes, &local());
            prop_assert_eq!(bytes.len(), len);
        }

        #[test]
        fn never_panics_on_mutated_frames(
            which in 0usize..6,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            cut in any::<u16>(),
        ) {
            let mut f = valid_frames().swap_remove(which);
            for (at, v) in edits {
                let i = usize::from(at) % f.len();
                f[i] = v;
            }
            let keep = usize::from(cut) % (f.len() + 1);
            if cut % 3 == 0 {
                f.truncate(keep);
            }
            let len = f.len();
            let v = process(&mut f, &local());
            prop_assert_eq!(f.len(), len);
            if let Verdict::Forward { flow: Some(fl) } = v {
                prop_assert!(usize::from(fl.l4_offset) + usize::from(fl.ip_payload_len) <= len);
            }
        }
    }
}
