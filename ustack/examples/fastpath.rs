//! Measures the per-packet fast path (`l3::process` + `FlowTable::touch`)
//! over a pcap file, without DPDK: `cargo run --release -p ustack --example
//! fastpath -- bench/data/http.pcap`. Prints nanoseconds per packet.

use std::time::Instant;

use ustack::flow::FlowTable;
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::wire::ethernet::EthernetAddress;

fn read_pcap(path: &str) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read pcap");
    assert!(data.len() >= 24, "not a pcap file");
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => panic!("not a pcap file"),
    };
    let rd = |b: &[u8]| {
        let a: [u8; 4] = b.try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = rd(&data[off + 8..off + 12]) as usize;
        off += 16;
        if off + incl > data.len() {
            break;
        }
        out.push(data[off..off + incl].to_vec());
        off += incl;
    }
    out
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "bench/data/http.pcap".into());
    let mut pkts = read_pcap(&path);
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let mut table = FlowTable::new(65536, u64::MAX / 2);
    let rounds = 2000;
    let start = Instant::now();
    let mut fwd = 0u64;
    let mut now = 0u64;
    for _ in 0..rounds {
        for p in pkts.iter_mut() {
            now += 1;
            if let Verdict::Forward { flow: Some(f) } = l3::process(p, &local) {
                table.touch(&f.key, f.dir, p.len() as u32, now, &mut |_| {});
                fwd += 1;
            }
        }
    }
    let n = (rounds * pkts.len()) as f64;
    let ns = start.elapsed().as_nanos() as f64 / n;
    println!(
        "{} packets x {rounds}: {ns:.1} ns/packet ({fwd} forwarded with a flow, {} flows)",
        pkts.len(),
        table.len()
    );
}
