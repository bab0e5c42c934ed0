//! Measures the runtime's TCP monitor per segment (`Monitor::segment`: the
//! flow lookup, the tracker, reassembly into arena rings, counters and
//! report bookkeeping; then one `DATA_RDY` announcement per flow and side
//! per burst of 32, released at once as if no NF read it) over a pcap,
//! without DPDK or NFs:
//!
//! ```text
//! cargo run --release -p ubox-runtime --example monitor_segments -- bench/data/http.pcap [RING_KIB]
//! ```
//!
//! Every pass restarts each connection on its port with new sequence
//! numbers (as `ubox-bench monitor` replays it). Set beside `cargo run -p ustack --example
//! reassemble` (the sans-IO monitor alone), the difference is what the
//! runtime's bookkeeping around it costs.

use std::collections::HashMap;
use std::time::Instant;

use ubox_runtime::monitor::{Monitor, Needs, Report, StreamBufs};
use ubox_shm::{Arena, ArenaConfig};
use ustack::flow::{Direction, FlowKey, Side};
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::tcp::MonitorConfig;
use ustack::wire::EthernetAddress;

const RINGS: u32 = 256;
const PASSES: usize = 200;
const BURST: usize = 32;

struct Pkt {
    frame: Vec<u8>,
    l4: std::ops::Range<usize>,
    flow: u64,
    side: Side,
    dir: Direction,
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "bench/data/http.pcap".into());
    let ring_kb: u32 = std::env::args().nth(2).map_or(512, |v| v.parse().expect("ring size in KiB"));
    let ring = ring_kb * 1024;
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let mut ids: HashMap<FlowKey, (u64, Direction)> = HashMap::new();
    let mut pkts = Vec::new();
    while let Some(rec) = reader.next_packet() {
        let mut frame = rec.unwrap_or_else(|e| panic!("{path}: {e}")).data.into_owned();
        let Verdict::Forward { flow: Some(f) } = l3::process(&mut frame, &local) else { continue };
        if f.key.proto() != 6 {
            continue;
        }
        let n = ids.len() as u64 + 1;
        let (flow, client_dir) = *ids.entry(f.key).or_insert((n, f.dir));
        let side = if f.dir == client_dir { Side::Client } else { Side::Server };
        let l4 = usize::from(f.l4_offset)..usize::from(f.l4_offset) + usize::from(f.ip_payload_len);
        pkts.push(Pkt { frame, l4, flow, side, dir: f.dir });
    }

    let dir = std::env::temp_dir().join(format!("ubox-monitor-segments-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = ArenaConfig { data_bytes: StreamBufs::bytes(RINGS, ring), ..ArenaConfig::new("monseg") };
    let arena = Arena::create(dir.join("a.arena"), &cfg).expect("arena");
    let base = arena.data_region().offset;
    let mut mon = Monitor::new(MonitorConfig::default(), 65536, StreamBufs::new(base, RINGS, ring));
    let needs = Needs { tcp: true, client: true, server: true };
    for (key, (id, _)) in &ids {
        assert!(mon.open(*id, 1, *key, needs, true));
    }
    let mut due = Vec::new();
    let (mut now, mut elapsed, mut announced) = (0u64, std::time::Duration::ZERO, 0u64);
    for pass in 0..=PASSES {
        if pass > 0 {
            // New connections on the same ports: new sequence numbers
            // (a SYN with the old ISN would be a retransmission).
            for p in &mut pkts {
                let t = p.l4.start;
                let shift = |b: &mut [u8]| {
                    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]).wrapping_add(0x1000_0000);
                    b.copy_from_slice(&v.to_be_bytes());
                };
                shift(&mut p.frame[t + 4..t + 8]);
                if p.frame[t + 13] & 0x10 != 0 {
                    shift(&mut p.frame[t + 8..t + 12]);
                }
            }
        }
        let start = Instant::now();
        for burst in pkts.chunks(BURST) {
            for p in burst {
                now += 1_000;
                let r = mon.segment(&arena, p.flow, &p.frame, p.l4.clone(), p.side, p.dir, (0, 1), now);
                let _ = r;
                // What the dispatcher publishes with the segment (state
                // events, and bytes announced ahead of them).
                let mut reports = std::mem::take(&mut mon.reports);
                for r in reports.drain(..) {
                    if let Report::Data(d, _) = r {
                        announced += 1;
                        mon.pin(p.flow, d.side, d.buf, d.end, 0);
                    }
                }
                mon.reports = reports;
            }
            mon.take_due(&mut due);
            for (id, _, _, r) in due.drain(..) {
                if let Report::Data(d, _) = r {
                    announced += 1;
                    mon.pin(id, d.side, d.buf, d.end, 0);
                }
            }
        }
        if pass > 0 {
            elapsed += start.elapsed(); // pass 0 touches the rings' pages
        }
    }
    let ns = elapsed.as_nanos() as f64 / (PASSES * pkts.len()) as f64;
    println!(
        "{} flows, {} TCP packets x {PASSES} passes, {:.0} DATA_RDY per pass: {ns:.1} ns/segment (rings {} KiB)",
        ids.len(),
        pkts.len(),
        announced as f64 / (PASSES + 1) as f64,
        ring_kb
    );
    let _ = std::fs::remove_dir_all(&dir);
}
