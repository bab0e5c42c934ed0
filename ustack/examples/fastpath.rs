//! Measures the per-packet fast path (`l3::process` + `FlowTable::touch`)
//! over a pcap file, without DPDK: `cargo run --release -p ustack --example
//! fastpath -- bench/data/http.pcap`. Prints nanoseconds per packet.

use std::time::Instant;

use ustack::flow::FlowTable;
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::wire::ethernet::EthernetAddress;

fn read_pcap(path: &str) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap_or_else(|e| panic!("{path}: not a pcap file: {e}"));
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        out.push(pkt.expect("pcap record").data.into_owned());
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
