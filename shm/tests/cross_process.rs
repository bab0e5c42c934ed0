//! Two real processes share one arena: the test binary re-executes itself
//! (`current_exe --ignored --exact <child>`) with the arena path in
//! `UBOX_SHM_CHILD_ARENA`, and the `#[ignore]`d child function attaches.
//! Children do nothing when run without that variable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ubox_shm::{Arena, ArenaConfig, RingRef, SlotIdx};

const ENV: &str = "UBOX_SHM_CHILD_ARENA";
const PING_COUNT: u32 = 1_000_000;
const STRESS_EVENTS: u32 = 200_000;
const END: u32 = u32::MAX;
const DEADLINE: Duration = Duration::from_secs(60);

fn arena_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ubox-shm-xproc-{}-{name}.arena", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn spawn_child(test: &str, arena: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", test, "--nocapture", "--test-threads=1"])
        .env(ENV, arena)
        .spawn()
        .unwrap()
}

/// Pops `n` values from `ring`, failing if the child exits or time runs out.
fn recv_n(ring: &RingRef<'_>, n: usize, child: &mut Child) -> Vec<u32> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        match ring.pop() {
            Some(v) => out.push(v),
            None => {
                if let Some(status) = child.try_wait().unwrap() {
                    // It may have pushed everything and exited: drain once more.
                    if ring.is_empty() {
                        panic!("child exited ({status}) before sending its summary");
                    }
                }
                assert!(start.elapsed() < DEADLINE, "timed out waiting for the child");
                std::thread::yield_now();
            }
        }
    }
    out
}

/// Pushes `v`, yielding while the ring is full; fails if the child died.
fn send(ring: &RingRef<'_>, v: u32, child: &mut Child) {
    let start = Instant::now();
    let mut spins = 0u32;
    while ring.push(v).is_err() {
        spins += 1;
        if spins & 1023 == 0 {
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            assert!(start.elapsed() < DEADLINE, "timed out: child stopped consuming");
        }
        std::thread::yield_now();
    }
}

fn wait_ok(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// Child side: blocks until a value is available (the parent outlives us).
fn pop_wait(ring: &RingRef<'_>) -> u32 {
    let start = Instant::now();
    loop {
        if let Some(v) = ring.pop() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "child timed out");
        std::thread::yield_now();
    }
}

fn push_wait(ring: &RingRef<'_>, v: u32) {
    while ring.push(v).is_err() {
        std::thread::yield_now();
    }
}

// ---- a. ring ping-pong: 1,000,000 sequence numbers, strict order ----

#[test]
fn ring_sequence_across_processes() {
    let path = arena_path("ping");
    let cfg =
        ArenaConfig { instance: "ping".into(), slots: 1, slot_size: 8, rings: 2, ring_capacity: 1024, data_bytes: 0 };
    let arena = Arena::create(&path, &cfg).unwrap();
    let mut child = spawn_child("child_sequence_consumer", &path);
    let tx = arena.ring(0).unwrap();
    let mut next = 0u32;
    let mut batch = Vec::with_capacity(64);
    while next < PING_COUNT {
        // Vary the burst size: single pushes and bursts both cross the boundary.
        let k = (next % 61 + 1).min(PING_COUNT - next);
        batch.clear();
        batch.extend(next..next + k);
        let mut sent = 0;
        while sent < batch.len() {
            let n = tx.push_burst(&batch[sent..]);
            if n == 0 {
                send(&tx, batch[sent], &mut child);
                sent += 1;
            }
            sent += n;
        }
        next += k;
    }
    let summary = recv_n(&arena.ring(1).unwrap(), 3, &mut child);
    wait_ok(child);
    let expected_sum = (0..PING_COUNT).fold(0u32, |s, v| s.wrapping_add(v));
    assert_eq!(summary, vec![PING_COUNT, 0, expected_sum], "[received, out-of-order, sum]");
}

#[test]
#[ignore = "child process of ring_sequence_across_processes"]
fn child_sequence_consumer() {
    let Ok(path) = std::env::var(ENV) else { return };
    let arena = Arena::attach(&path).unwrap();
    assert!(!arena.is_creator());
    let rx = arena.ring(0).unwrap();
    let (mut received, mut bad, mut sum) = (0u32, 0u32, 0u32);
    let mut buf = [0u32; 37];
    let start = Instant::now();
    while received < PING_COUNT {
        let n = if received % 2 == 0 { rx.pop_burst(&mut buf) } else { rx.pop().map_or(0, |v| (buf[0] = v, 1).1) };
        if n == 0 {
            assert!(start.elapsed() < DEADLINE, "child timed out after {received}");
            std::thread::yield_now();
        }
        for &v in &buf[..n] {
            if v != received {
                bad += 1;
            }
            sum = sum.wrapping_add(v);
            received += 1;
        }
    }
    let tx = arena.ring(1).unwrap();
    for v in [received, bad, sum] {
        push_wait(&tx, v);
    }
}

// ---- b. slot stress with checksums ----

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn fill_event(payload: &mut [u8], rng: &mut u64) {
    for chunk in payload[8..].chunks_mut(8) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a(&payload[8..]);
    payload[..8].copy_from_slice(&sum.to_le_bytes());
}

fn event_ok(payload: &[u8]) -> bool {
    payload[..8] == fnv1a(&payload[8..]).to_le_bytes()
}

#[test]
fn checksum_detects_corruption() {
    let mut p = [0u8; 64];
    let mut rng = 7;
    fill_event(&mut p, &mut rng);
    assert!(event_ok(&p));
    p[40] ^= 1;
    assert!(!event_ok(&p));
}

#[test]
fn slot_stress_across_processes() {
    let path = arena_path("stress");
    let cfg = ArenaConfig {
        instance: "stress".into(),
        slots: 512,
        slot_size: 256,
        rings: 2,
        ring_capacity: 256,
        data_bytes: 0,
    };
    let arena = Arena::create(&path, &cfg).unwrap();
    let mut child = spawn_child("child_checksum_consumer", &path);
    let mut pool = arena.slot_pool().unwrap();
    let tx = arena.ring(0).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    // Every 8th event the parent keeps a second reference for a while, so
    // both processes release the same slots concurrently.
    let mut kept = std::collections::VecDeque::new();
    let start = Instant::now();
    for n in 0..STRESS_EVENTS {
        let idx = loop {
            if let Some(i) = pool.alloc() {
                break i;
            }
            assert!(start.elapsed() < DEADLINE, "pool exhausted: the child stopped releasing");
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::yield_now();
        };
        fill_event(pool.payload_mut(idx).unwrap(), &mut rng);
        if n & 7 == 0 {
            pool.retain(idx, 1).unwrap();
            kept.push_back(idx);
            if kept.len() > 32 {
                pool.release(kept.pop_front().unwrap()).unwrap();
            }
        }
        send(&tx, idx.0, &mut child);
    }
    send(&tx, END, &mut child);
    for idx in kept.drain(..) {
        pool.release(idx).unwrap();
    }
    let summary = recv_n(&arena.ring(1).unwrap(), 3, &mut child);
    wait_ok(child);
    assert_eq!(summary, vec![STRESS_EVENTS, 0, 0], "[events, checksum failures, release errors]");
    assert_eq!(pool.free_count(), pool.capacity(), "slots leaked");
    assert_eq!(pool.double_releases(), 0);
    // The free list itself is intact: every slot comes out exactly once.
    let all: std::collections::HashSet<_> = std::iter::from_fn(|| pool.alloc()).collect();
    assert_eq!(all.len(), 512);
}

#[test]
#[ignore = "child process of slot_stress_across_processes"]
fn child_checksum_consumer() {
    let Ok(path) = std::env::var(ENV) else { return };
    let arena = Arena::attach(&path).unwrap();
    let pool = arena.slot_pool().unwrap();
    let rx = arena.ring(0).unwrap();
    let (mut events, mut failures, mut release_errors) = (0u32, 0u32, 0u32);
    loop {
        let v = pop_wait(&rx);
        if v == END {
            break;
        }
        events += 1;
        let idx = SlotIdx(v);
        match pool.payload(idx) {
            Ok(p) if event_ok(p) => {}
            _ => failures += 1,
        }
        if pool.release(idx).is_err() {
            release_errors += 1;
        }
    }
    let tx = arena.ring(1).unwrap();
    for v in [events, failures, release_errors] {
        push_wait(&tx, v);
    }
}
