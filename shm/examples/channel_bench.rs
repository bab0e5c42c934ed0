//! The cost of one channel between two processes, nothing else: a producer
//! pushes descriptors in bursts and takes the answers, a consumer answers
//! every descriptor. Run the two halves pinned to different CPUs:
//!
//! ```text
//! cargo build --release -p ubox-shm --example channel_bench
//! B=target/release/examples/channel_bench
//! taskset -c 0 $B consume /dev/hugepages/chbench.arena & taskset -c 1 $B produce /dev/hugepages/chbench.arena 32
//! ```
//!
//! The producer creates the arena, hands channel 0 to the consumer over a
//! socket next to it (`<path>.sock`, as the runtime hands an NF its
//! channels), waits for the consumer, and prints events per second and
//! nanoseconds per event on its side (the consumer only answers, so this is
//! the fabric's ceiling).

use std::time::{Duration, Instant};

use std::os::unix::net::{UnixListener, UnixStream};

use ubox_shm::event::{Answer, Desc, VERDICT_PASS};
use ubox_shm::pass::{read_line_with_files, send_with_files};
use ubox_shm::{Arena, ArenaConfig, Grant};

const EVENTS: u64 = 20_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (role, path) = (args[1].as_str(), &args[2]);
    let burst: usize = args.get(3).and_then(|b| b.parse().ok()).unwrap_or(32);
    match role {
        "produce" => produce(path, burst),
        _ => consume(path),
    }
}

fn produce(path: &str, burst: usize) {
    let _ = std::fs::remove_file(path);
    let cfg =
        ArenaConfig { channels: 1, channel_capacity: 1024, slots: 1, slot_size: 8, ..ArenaConfig::new("chbench") };
    let arena = Arena::create(path, &cfg).expect("arena");
    let sock = format!("{path}.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).expect("socket");
    let (stream, _) = listener.accept().expect("consumer");
    let _ = std::fs::remove_file(&sock);
    send_with_files(&stream, b"\n", &arena.grant(&[0], false).unwrap().into_files()).expect("grant");
    let ch = arena.channel(0).unwrap();
    let (mut tx, mut rx) = (ch.desc.producer(), ch.answer.consumer());
    // Wait for the consumer's hello.
    while rx.pop().is_none() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut batch = vec![Desc::default(); burst];
    let mut answers = vec![Answer::default(); 256];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    while got < EVENTS {
        if sent < EVENTS && tx.room(burst as u32) >= burst as u32 {
            for (i, d) in batch.iter_mut().enumerate() {
                *d = Desc {
                    type_id: 1,
                    flow_id: sent + i as u64,
                    data: 64,
                    len: 60,
                    cookie: (sent as u32).wrapping_add(i as u32),
                    ..Desc::default()
                };
            }
            sent += tx.push_burst(&batch) as u64;
        }
        let n = rx.pop_burst(&mut answers);
        for a in &answers[..n] {
            assert_eq!(a.cookie(), got as u32);
            got += 1;
        }
    }
    let dt = start.elapsed();
    println!(
        "burst {burst}: {:.1} M events/s, {:.1} ns/event at the producer (round trips included)",
        EVENTS as f64 / dt.as_secs_f64() / 1e6,
        dt.as_nanos() as f64 / EVENTS as f64
    );
    drop(arena);
}

fn consume(path: &str) {
    let stream = loop {
        match UnixStream::connect(format!("{path}.sock")) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let (_, files) = read_line_with_files(&stream, 16).expect("grant");
    let arena = Arena::attach(Grant::from_files(files, &[0]).expect("grant"), path).expect("arena");
    let ch = arena.channel(0).unwrap();
    let (mut rx, mut tx) = (ch.desc.consumer(), ch.answer.producer());
    assert!(tx.push(Answer(u64::MAX)));
    let mut buf = vec![Desc::default(); 256];
    let mut out = Vec::with_capacity(256);
    let mut done = 0u64;
    while done < EVENTS {
        let n = rx.pop_burst(&mut buf);
        out.clear();
        out.extend(buf[..n].iter().map(|d| Answer::verdict(d.cookie, VERDICT_PASS)));
        let mut k = 0;
        while k < out.len() {
            k += tx.push_burst(&out[k..]);
        }
        done += n as u64;
    }
}
