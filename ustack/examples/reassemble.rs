//! Replays a pcap (Ethernet, IPv4/IPv6, TCP) through the TCP monitor and
//! reassembles both streams of every flow:
//!
//! ```text
//! cargo run --release -p ustack --example reassemble -- FILE.pcap [OUTDIR] [--ring BYTES] [--track-only]
//! ```
//!
//! Prints one line per flow (client -> server, stream lengths, state at the
//! end, counters as client/server pairs) and, with OUTDIR, writes the
//! streams to `OUTDIR/<n>.client` and `OUTDIR/<n>.server`. Each flow gets
//! one `TcpConn` and two reassemblers over `Vec` rings of `--ring` bytes
//! (default 262144) whose floor is released as soon as the bytes are copied
//! out. Then 200 timed passes run the monitor alone (segment parsing,
//! `on_segment`, reassembly into the rings, releasing the floor; no frame
//! parsing, no copying out) and prints its ns/packet; with `--track-only`
//! the timed passes track the connections without reassembling (the cost
//! of the state machine alone).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use ustack::flow::{Direction, FlowKey, Side};
use ustack::l3::{self, LocalAddrs, Verdict};
use ustack::tcp::{MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent, TcpSnapshot};
use ustack::wire::{protocol, EthernetAddress, TcpPacket};

/// A TCP segment of the capture, located in its frame.
struct Pkt {
    frame: Vec<u8>,
    l4: std::ops::Range<usize>,
    flow: usize,
    side: Side,
    ts: u64,
}

struct Flow {
    key: FlowKey,
    client_dir: Direction,
    conn: TcpConn,
    reasm: [Reassembler; 2],
    rings: [Vec<u8>; 2],
    streams: [Vec<u8>; 2],
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// Both sides' storage for one `on_segment` call, or none (tracking only).
fn streams_of<'a>(reasm: &'a mut [Reassembler; 2], rings: &'a mut [Vec<u8>; 2], reassemble: bool) -> Streams<'a> {
    if !reassemble {
        return Streams { client: None, server: None };
    }
    let ([rc, rs], [gc, gs]) = (reasm, rings);
    Streams { client: Some(Stream { reasm: rc, ring: gc }), server: Some(Stream { reasm: rs, ring: gs }) }
}

fn usage() -> ! {
    eprintln!("usage: reassemble FILE.pcap [OUTDIR] [--ring BYTES] [--track-only]");
    std::process::exit(2);
}

fn main() {
    let mut pos = Vec::new();
    let mut ring = 1usize << 18;
    let mut track_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--track-only" {
            track_only = true;
        } else if a == "--ring" {
            ring = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage());
        } else if a.starts_with('-') {
            usage();
        } else {
            pos.push(a);
        }
    }
    let (path, outdir) = match pos.as_slice() {
        [p] => (p.clone(), None),
        [p, o] => (p.clone(), Some(PathBuf::from(o))),
        _ => usage(),
    };

    let (pkts, mut flows) = load(&path, ring);
    let cfg = MonitorConfig::default();

    // Pass 1: reassemble and copy the streams out.
    let mut events = Vec::new();
    for p in &pkts {
        let Ok(tcp) = TcpPacket::new_checked(&p.frame[p.l4.clone()]) else { continue };
        let seg = Segment::from_packet(&tcp);
        let f = &mut flows[p.flow];
        let streams = streams_of(&mut f.reasm, &mut f.rings, true);
        events.clear();
        f.conn.on_segment(&cfg, &seg, p.side, p.ts, streams, &mut |e, s| events.push((e, s)));
        for &(e, _) in &events {
            if let TcpEvent::DataReady { side, start, end } = e {
                let i = idx(side);
                match f.reasm[i].reader(&f.rings[i]).read(start..end) {
                    Ok((a, b)) => {
                        f.streams[i].extend_from_slice(a);
                        f.streams[i].extend_from_slice(b);
                    }
                    Err(err) => eprintln!("{}: read {start}..{end}: {err}", f.key),
                }
                f.reasm[i].release(end);
            }
        }
    }

    if let Some(dir) = &outdir {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    let (mut total_c, mut total_s) = (0usize, 0usize);
    for (n, f) in flows.iter().enumerate() {
        let ((ca, cp), (sa, sp)) = f.key.endpoints(f.client_dir);
        let pair = |g: &dyn Fn(Side) -> u64| format!("{}/{}", g(Side::Client), g(Side::Server));
        let stop = |s: Side| f.reasm[idx(s)].stopped().map_or("-".to_string(), |r| r.to_string());
        println!(
            "{n:3} {} {ca}:{cp} -> {sa}:{sp} client={}B server={}B {} {}/{}{} retx={} conflicts={} ooo={} oow={} stop={}/{}",
            protocol::name(f.key.proto()).unwrap_or("?"),
            f.streams[0].len(),
            f.streams[1].len(),
            f.conn.phase(),
            f.conn.state(Side::Client),
            f.conn.state(Side::Server),
            if f.conn.snapshot(Side::Client).has(TcpSnapshot::MIDSTREAM) { " midstream" } else { "" },
            pair(&|s| u64::from(f.conn.counters(s).retransmits)),
            pair(&|s| f.reasm[idx(s)].counters().conflicts),
            pair(&|s| f.reasm[idx(s)].counters().out_of_order),
            pair(&|s| u64::from(f.conn.counters(s).out_of_window)),
            stop(Side::Client),
            stop(Side::Server),
        );
        total_c += f.streams[0].len();
        total_s += f.streams[1].len();
        if let Some(dir) = &outdir {
            for (i, ext) in [(0, "client"), (1, "server")] {
                let file = dir.join(format!("{n}.{ext}"));
                std::fs::write(&file, &f.streams[i]).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
            }
        }
    }

    // Then, timed: the monitor's work alone, on fresh state each pass (as
    // a connection restarting on its port), `PASSES` passes over rings
    // already touched once (pass 1), so page faults are not counted.
    const PASSES: usize = 200;
    let mut n_events = 0usize;
    let mut elapsed = std::time::Duration::ZERO;
    for _ in 0..PASSES {
        for f in &mut flows {
            f.conn = TcpConn::new();
            f.reasm = [Reassembler::from_config(&cfg), Reassembler::from_config(&cfg)];
        }
        let start = Instant::now();
        for p in &pkts {
            let Ok(tcp) = TcpPacket::new_checked(&p.frame[p.l4.clone()]) else { continue };
            let seg = Segment::from_packet(&tcp);
            let f = &mut flows[p.flow];
            let streams = streams_of(&mut f.reasm, &mut f.rings, !track_only);
            let mut released = [None, None];
            f.conn.on_segment(&cfg, &seg, p.side, p.ts, streams, &mut |e, _| {
                n_events += 1;
                if let TcpEvent::DataReady { side, end, .. } = e {
                    released[idx(side)] = Some(end);
                }
            });
            for (r, end) in f.reasm.iter_mut().zip(released) {
                if let Some(end) = end {
                    r.release(end);
                }
            }
        }
        elapsed += start.elapsed();
    }
    let ns = elapsed.as_nanos() as f64 / (PASSES * pkts.len()).max(1) as f64;
    println!(
        "{} flows, {} TCP packets, client bytes {total_c}, server bytes {total_s}, {} events per pass; \
         {}: {ns:.1} ns/packet (mean of {PASSES} passes, ring {ring} B)",
        flows.len(),
        pkts.len(),
        n_events / PASSES,
        if track_only { "monitor, tracking only" } else { "monitor + reassembly" },
    );
}

/// Reads the capture and locates every TCP segment and its flow.
fn load(path: &str, ring: usize) -> (Vec<Pkt>, Vec<Flow>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap_or_else(|e| panic!("{path}: not a pcap file: {e}"));
    let link = reader.header().datalink;
    if link != pcap_file::DataLink::ETHERNET {
        eprintln!("{path}: link type {link:?} is not Ethernet; capture with an Ethernet interface");
        std::process::exit(1);
    }
    let local = LocalAddrs { mac: EthernetAddress([2, 0, 0, 0, 0, 1]), ipv4: vec![], ipv6: vec![] };
    let cfg = MonitorConfig::default();
    let mut index: HashMap<FlowKey, usize> = HashMap::new();
    let mut flows = Vec::new();
    let mut pkts = Vec::new();
    while let Some(rec) = reader.next_packet() {
        let rec = rec.unwrap_or_else(|e| panic!("{path}: bad pcap record: {e}"));
        let ts = u64::try_from(rec.timestamp.as_nanos()).unwrap_or(u64::MAX);
        let mut frame = rec.data.into_owned();
        let Verdict::Forward { flow: Some(fp) } = l3::process(&mut frame, &local) else { continue };
        if fp.key.proto() != protocol::TCP || fp.tcp_flags.is_none() {
            continue;
        }
        let l4 = usize::from(fp.l4_offset)..usize::from(fp.l4_offset) + usize::from(fp.ip_payload_len);
        let n = *index.entry(fp.key).or_insert_with(|| {
            flows.push(Flow {
                key: fp.key,
                client_dir: fp.dir,
                conn: TcpConn::new(),
                reasm: [Reassembler::from_config(&cfg), Reassembler::from_config(&cfg)],
                rings: [vec![0; ring], vec![0; ring]],
                streams: [Vec::new(), Vec::new()],
            });
            flows.len() - 1
        });
        let side = if fp.dir == flows[n].client_dir { Side::Client } else { Side::Server };
        pkts.push(Pkt { frame, l4, flow: n, side, ts });
    }
    (pkts, flows)
}
