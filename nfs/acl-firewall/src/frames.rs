//! Hand-built test frames: Ethernet / IPv4 or IPv6 / TCP or UDP, byte by byte.

use std::net::Ipv6Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ethernet(ethertype: u16, tags: &[u16], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for &vid in tags {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A TCP SYN or UDP header with `data` after it (checksum left 0).
fn l4(proto: u8, sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sp.to_be_bytes());
    h.extend_from_slice(&dp.to_be_bytes());
    match proto {
        TCP => {
            h.extend_from_slice(&1000u32.to_be_bytes()); // seq
            h.extend_from_slice(&0u32.to_be_bytes()); // ack
            h.extend_from_slice(&[5 << 4, 0x02]); // data offset 5 words, SYN
            h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, checksum, urgent
        }
        UDP => {
            h.extend_from_slice(&(8 + data.len() as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
        _ => h.extend_from_slice(&[0, 0, 0, 0]), // ICMP-ish: type, code, checksum
    }
    h.extend_from_slice(data);
    h
}

fn ipv4_header(proto: u8, src: [u8; 4], dst: [u8; 4], payload_len: usize, frag_off: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(20 + payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&(frag_off / 8).to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let csum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

/// Ethernet / IPv4 / (TCP SYN | UDP | other) with a few payload bytes.
pub fn ipv4_frame(proto: u8, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
    ipv4_frame_tagged(proto, src, sp, dst, dp, &[])
}

/// [`ipv4_frame`] behind the given VLAN tags.
pub fn ipv4_frame_tagged(proto: u8, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, tags: &[u16]) -> Vec<u8> {
    let seg = l4(proto, sp, dp, b"hello");
    let mut ip = ipv4_header(proto, src, dst, seg.len(), 0);
    ip.extend_from_slice(&seg);
    ethernet(0x0800, tags, &ip)
}

/// A non-first IPv4 fragment (offset 1480) of a `proto` packet: no L4 header.
pub fn ipv4_fragment(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let data = [0xabu8; 16];
    let mut ip = ipv4_header(proto, src, dst, data.len(), 1480);
    ip.extend_from_slice(&data);
    ethernet(0x0800, &[], &ip)
}

fn ipv6_packet(next: u8, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[next, 64]);
    ip.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    ip.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    ip.extend_from_slice(payload);
    ethernet(0x86dd, &[], &ip)
}

/// Ethernet / IPv6 / (TCP SYN | UDP).
pub fn ipv6_frame(proto: u8, src: &str, sp: u16, dst: &str, dp: u16) -> Vec<u8> {
    ipv6_packet(proto, src, dst, &l4(proto, sp, dp, b"hello"))
}

/// A non-first IPv6 fragment (offset 1480) of a `proto` packet.
pub fn ipv6_fragment(proto: u8, src: &str, dst: &str) -> Vec<u8> {
    let mut payload = vec![proto, 0];
    payload.extend_from_slice(&(1480u16).to_be_bytes()); // offset 185 * 8, M = 0
    payload.extend_from_slice(&[0, 0, 0, 7]); // identification
    payload.extend_from_slice(&[0xcd; 16]);
    ipv6_packet(44, src, dst, &payload)
}
