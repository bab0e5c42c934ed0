//! Two real processes share one arena: the test binary re-executes itself
//! (`current_exe --ignored --exact <child>`) with a socket path in
//! `UBOX_SHM_CHILD_SOCKET`, the `#[ignore]`d child function connects and
//! gets its grant (channel 0) over it, as an NF does from the runtime.
//! Children do nothing when run without that variable.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ubox_shm::event::{Answer, Desc, ANSWER_PUBLISH, ANSWER_VERDICT, DESC_SLOT};
use ubox_shm::pass::{read_line_with_files, send_with_files};
use ubox_shm::{Arena, ArenaConfig, Consumer, Grant, Producer, SlotIdx};

const ENV: &str = "UBOX_SHM_CHILD_SOCKET";
const ENV_ARENA: &str = "UBOX_SHM_CHILD_ARENA";
const PING_COUNT: u32 = 1_000_000;
const STRESS_EVENTS: u32 = 200_000;
const DEADLINE: Duration = Duration::from_secs(60);

fn arena_path(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ubox-shm-xproc-{}-{name}.arena", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Starts the child and hands it channel 0 (and the packet region, read-only).
fn spawn_child(test: &str, arena: &Arena) -> Child {
    let sock = arena.path().with_extension("sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", test, "--nocapture", "--test-threads=1"])
        .env(ENV, &sock)
        .env(ENV_ARENA, arena.path())
        .spawn()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) => {
                assert!(child.try_wait().unwrap().is_none(), "child exited before connecting");
                assert!(start.elapsed() < DEADLINE, "child never connected");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    stream.set_nonblocking(false).unwrap();
    let files = arena.grant(&[0], false).unwrap().into_files();
    assert_eq!(send_with_files(&stream, b"\n", &files).unwrap(), 1);
    let _ = std::fs::remove_file(&sock);
    child
}

/// In a child: the arena as its grant maps it, or `None` when not run as one.
fn child_arena() -> Option<Arena> {
    let sock = std::env::var(ENV).ok()?;
    let stream = UnixStream::connect(sock).unwrap();
    let (_, files) = read_line_with_files(&stream, 16).unwrap();
    Some(Arena::attach(Grant::from_files(files, &[0]).unwrap(), std::env::var(ENV_ARENA).unwrap()).unwrap())
}

fn wait_ok(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// The descriptor the parent sends as event number `n`.
fn desc_of(n: u32) -> Desc {
    Desc {
        type_id: 0x0101_0000_0000_0000 | u64::from(n % 3),
        flow_id: u64::from(n) * 0x9e37_79b9,
        data: u64::from(n) << 6,
        len: (n % 1500) as u16,
        side: (n & 1) as u8,
        flags: 0,
        cookie: n,
    }
}

/// What the child answers to event `n`.
fn verdict_of(n: u32) -> u8 {
    (n % 3 + 1) as u8
}

/// Pops every answer available and checks it is the next one expected.
fn take_answers(rx: &mut Consumer<'_, Answer>, next: &mut u32, out: &mut [Answer]) {
    let n = rx.pop_burst(out);
    for a in &out[..n] {
        assert_eq!((a.kind(), a.cookie(), a.code()), (ANSWER_VERDICT, *next, verdict_of(*next)), "answer {next}");
        *next += 1;
    }
}

// ---- a. a million events and their answers, strict order, every field ----

#[test]
fn descriptors_and_answers_across_processes() {
    let path = arena_path("ping");
    let cfg = ArenaConfig {
        instance: "ping".into(),
        slots: 1,
        slot_size: 8,
        channels: 2,
        channel_capacity: 1024,
        data_bytes: 0,
    };
    let arena = Arena::create(&path, &cfg).unwrap();
    let mut child = spawn_child("child_answers_each_event", &arena);
    // Channel 1 exists too, untouched: it must stay empty.
    let ch = arena.channel(0).unwrap();
    let (mut tx, mut rx) = (ch.desc.producer(), ch.answer.consumer());
    let (mut next, mut answered) = (0u32, 0u32);
    let mut batch = Vec::with_capacity(64);
    let mut answers = [Answer::default(); 97];
    let start = Instant::now();
    while answered < PING_COUNT {
        if next < PING_COUNT {
            // Vary the burst size: single pushes and bursts both cross the boundary.
            let k = (next % 61 + 1).min(PING_COUNT - next);
            batch.clear();
            batch.extend((next..next + k).map(desc_of));
            next += tx.push_burst(&batch) as u32;
            // The child sleeps on the descriptor ring's bell when idle.
            ch.desc.bell().wake();
        }
        let before = answered;
        take_answers(&mut rx, &mut answered, &mut answers);
        if answered == before {
            assert!(start.elapsed() < DEADLINE, "timed out at {answered} answers");
            if let Some(status) = child.try_wait().unwrap() {
                take_answers(&mut rx, &mut answered, &mut answers);
                assert_eq!(answered, PING_COUNT, "child exited ({status}) early");
            }
            std::thread::yield_now();
        }
    }
    wait_ok(child);
    assert!(ch.desc.is_empty() && ch.answer.is_empty());
    let other = arena.channel(1).unwrap();
    assert!(other.desc.is_empty() && other.answer.is_empty());
    let r = ch.desc.consumer_report();
    assert_eq!(r.items, u64::from(PING_COUNT), "the child reports what it popped");
    assert!(r.bursts > 0 && r.bursts <= r.items);
}

#[test]
#[ignore = "child process of descriptors_and_answers_across_processes"]
fn child_answers_each_event() {
    let Some(arena) = child_arena() else { return };
    assert!(!arena.is_creator());
    assert!(arena.channel(1).is_err(), "only channel 0 was granted");
    let ch = arena.channel(0).unwrap();
    let (mut rx, mut tx) = (ch.desc.consumer(), ch.answer.producer());
    let mut received = 0u32;
    let mut buf = [Desc::default(); 37];
    let mut answers = Vec::with_capacity(37);
    let start = Instant::now();
    let bell = ch.desc.bell();
    while received < PING_COUNT {
        let n = rx.pop_burst(&mut buf[..1 + received as usize % 37]);
        if n == 0 {
            assert!(start.elapsed() < DEADLINE, "child timed out after {received}");
            // Sleep until the parent rings (a lost wake-up costs the whole
            // timeout, and the deadline above catches a habit of that).
            bell.arm();
            if rx.available(1) == 0 {
                bell.wait(Duration::from_millis(500));
            } else {
                bell.disarm();
            }
            continue;
        }
        answers.clear();
        for d in &buf[..n] {
            assert_eq!(*d, desc_of(received), "event {received}");
            answers.push(Answer::verdict(d.cookie, verdict_of(d.cookie)));
            received += 1;
        }
        rx.report(n as u64, 1);
        push_all(&mut tx, &answers);
    }
}

fn push_all<E: ubox_shm::ring::Entry>(tx: &mut Producer<'_, E>, vals: &[E]) {
    let mut done = 0;
    let start = Instant::now();
    while done < vals.len() {
        let n = tx.push_burst(&vals[done..]);
        done += n;
        if n == 0 {
            assert!(start.elapsed() < DEADLINE, "peer stopped consuming");
            std::thread::yield_now();
        }
    }
}

// ---- b. slot events both ways, with checksums ----

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

/// The protocol of slot events: the parent (a worker) allocates a slot per
/// event and frees it when answered; the child (an NF) never frees nor
/// allocates (the pool is read-only to it), and every 4th event also
/// publishes one in its channel's publish area, which the parent copies
/// out and checks.
#[test]
fn slot_events_across_processes() {
    let path = arena_path("stress");
    let cfg = ArenaConfig {
        instance: "stress".into(),
        slots: 512,
        slot_size: 256,
        channels: 1,
        channel_capacity: 128,
        data_bytes: 0,
    };
    let arena = Arena::create(&path, &cfg).unwrap();
    let mut child = spawn_child("child_checks_and_publishes", &arena);
    let mut pool = arena.slot_pool().unwrap();
    let ch = arena.channel(0).unwrap();
    let (mut tx, mut rx) = (ch.desc.producer(), ch.answer.consumer());
    let mut reader = ch.publish.reader();
    let mut record = [0u8; 256];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut sent, mut answered, mut published, mut bad) = (0u32, 0u32, 0u32, 0u32);
    let mut answers = [Answer::default(); 64];
    let start = Instant::now();
    while answered < STRESS_EVENTS {
        if sent < STRESS_EVENTS && tx.room(1) > 0 {
            if let Some(idx) = pool.alloc() {
                fill_event(pool.payload_mut(idx).unwrap(), &mut rng);
                assert!(tx.push(Desc { data: u64::from(idx.0), flags: DESC_SLOT, cookie: idx.0, ..Desc::default() }));
                sent += 1;
            }
        }
        let n = rx.pop_burst(&mut answers);
        for a in &answers[..n] {
            match a.kind() {
                ANSWER_VERDICT => {
                    answered += 1;
                    pool.release(SlotIdx(a.cookie())).unwrap();
                }
                ANSWER_PUBLISH => {
                    published += 1;
                    if reader.take(a.cookie(), &mut record) != Some(256) || !event_ok(&record) {
                        bad += 1;
                    }
                }
                k => panic!("answer kind {k}: the child found a corrupt event in slot {}", a.cookie()),
            }
        }
        if n == 0 {
            assert!(start.elapsed() < DEADLINE, "timed out at {answered} answers");
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            std::thread::yield_now();
        }
    }
    // The child's last publications may still be on their way.
    while published < STRESS_EVENTS / 4 {
        let n = rx.pop_burst(&mut answers);
        for a in &answers[..n] {
            assert_eq!(a.kind(), ANSWER_PUBLISH);
            published += 1;
            if reader.take(a.cookie(), &mut record) != Some(256) || !event_ok(&record) {
                bad += 1;
            }
        }
        assert!(start.elapsed() < DEADLINE, "timed out at {published} publications");
    }
    wait_ok(child);
    assert_eq!((bad, published), (0, STRESS_EVENTS / 4), "[corrupt publications, publications]");
    assert_eq!(pool.free_count(), pool.capacity(), "slots leaked");
    assert_eq!(pool.double_releases(), 0);
    // The free list itself is intact: every slot comes out exactly once.
    let all: std::collections::HashSet<_> = std::iter::from_fn(|| pool.alloc()).collect();
    assert_eq!(all.len(), 512);
}

#[test]
#[ignore = "child process of slot_events_across_processes"]
fn child_checks_and_publishes() {
    let Some(arena) = child_arena() else { return };
    let pool = arena.slot_pool().unwrap();
    let ch = arena.channel(0).unwrap();
    let (mut rx, mut tx) = (ch.desc.consumer(), ch.answer.producer());
    let mut publisher = ch.publish.writer();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut events = 0u32;
    let mut buf = [Desc::default(); 16];
    let start = Instant::now();
    while events < STRESS_EVENTS {
        let n = rx.pop_burst(&mut buf);
        if n == 0 {
            assert!(start.elapsed() < DEADLINE, "child timed out after {events}");
            std::thread::yield_now();
            continue;
        }
        let mut out = Vec::new();
        for d in &buf[..n] {
            let slot = d.slot().expect("slot events only");
            // A corrupt event is answered Drop, which the parent rejects.
            let ok = pool.payload(SlotIdx(slot)).is_ok_and(event_ok);
            if events % 4 == 0 {
                let mut record = [0u8; 256];
                fill_event(&mut record, &mut rng);
                // The parent frees records as it takes the answers naming
                // them; wait for one if all are taken.
                let n = loop {
                    if let Some(n) = publisher.write(&record) {
                        break n;
                    }
                    if !out.is_empty() {
                        push_all(&mut tx, &out);
                        out.clear();
                    }
                    assert!(start.elapsed() < DEADLINE, "publish area never freed");
                    std::thread::yield_now();
                };
                publisher.commit();
                out.push(Answer::publish(n));
            }
            out.push(if ok { Answer::verdict(d.cookie, 1) } else { Answer(u64::MAX) });
            events += 1;
        }
        push_all(&mut tx, &out);
    }
}
