//! NFs built with the SDK, run on a thread against `FakeRuntime`: what an
//! NF author relies on (bytes intact, verdicts delivered, dispatch by type,
//! stopping, the runtime going away, refusals).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use nf_sdk::{Event, EventTypeId, Nf, NfBuilder, NfError, RunSummary, Side, StopHandle, Verdict};
use ubox_shm::event::{VERDICT_DROP, VERDICT_MODIFIED, VERDICT_PASS};
use ustack::event::{PKT, PKT_TCP, PKT_UDP};

const WAIT: Duration = Duration::from_secs(10);

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn packet(i: u64) -> Vec<u8> {
    let len = 40 + (i as usize * 37) % 1460;
    (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect()
}

fn builder(rt: &FakeRuntime, name: &str) -> NfBuilder {
    Nf::builder(name).socket(rt.socket()).handle_signals(false)
}

/// Connects on this thread (the fake answers from its own thread) and runs
/// on another.
fn spawn(b: NfBuilder) -> (StopHandle, JoinHandle<Result<RunSummary, NfError>>) {
    let mut nf = b.connect().expect("connect to the fake runtime");
    let stop = nf.stop_handle();
    (stop, std::thread::spawn(move || nf.run()))
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    type_id: EventTypeId,
    flow: u64,
    seq: u32,
    side: Side,
    worker: u32,
    len: usize,
    sum: u64,
}

#[test]
fn thousand_tcp_packets_arrive_intact_and_verdicts_come_back() {
    let mut rt = FakeRuntime::start().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let (stop, nf) = spawn(builder(&rt, "checker").version("1.2").subscribe("PKT/TCP", move |ev: &Event<'_>| {
        let p = ev.packet().expect("PKT events carry a packet");
        log.lock().unwrap().push(Seen {
            type_id: ev.type_id(),
            flow: ev.flow_id(),
            seq: ev.seq(),
            side: ev.side(),
            worker: ev.worker(),
            len: p.len(),
            sum: fnv(p),
        });
        if ev.flow_id() % 3 == 0 {
            Verdict::Drop
        } else {
            Verdict::Pass
        }
    }));
    let manifest = rt.manifest().expect("registered");
    assert_eq!((manifest.name.as_str(), manifest.version.as_str()), ("checker", "1.2"));
    assert_eq!(manifest.subscriptions[0].event, "PKT/TCP");
    assert!(!manifest.modifies_packets);

    let mut flow_of_slot = HashMap::new();
    let mut verdicts = Vec::new();
    for i in 0..1000u64 {
        let slot = rt.publish(PKT_TCP, i, &packet(i)).unwrap();
        flow_of_slot.insert(slot.0, i);
        if i % 100 == 99 {
            // Cookies are distinct; map them as they are collected.
            for (slot, v) in rt.wait_verdicts(100, WAIT) {
                verdicts.push((flow_of_slot[&slot.0], v));
            }
        }
    }
    assert_eq!(verdicts.len(), 1000);
    for (flow, v) in &verdicts {
        assert_eq!(*v, if flow % 3 == 0 { VERDICT_DROP } else { VERDICT_PASS }, "flow {flow}");
    }

    stop.stop();
    let summary = nf.join().unwrap().unwrap();
    let dropped = (0..1000).filter(|i| i % 3 == 0).count() as u64;
    assert_eq!(summary.events, 1000);
    assert_eq!((summary.dropped, summary.passed, summary.modified), (dropped, 1000 - dropped, 0));
    assert_eq!((summary.unmatched, summary.bad_events), (0, 0));
    assert_eq!(rt.free_slots(), 4096, "every slot came back and was released");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1000);
    for (i, s) in seen.iter().enumerate() {
        let p = packet(i as u64);
        let want = Seen {
            type_id: PKT_TCP,
            flow: i as u64,
            seq: i as u32,
            side: Side::Client,
            worker: 0,
            len: p.len(),
            sum: fnv(&p),
        };
        assert_eq!(*s, want, "event {i}");
    }

    // The Nf was dropped with its thread: the runtime sees the NF leave.
    let until = Instant::now() + WAIT;
    while !rt.nf_disconnected() {
        assert!(Instant::now() < until, "control connection still open after the Nf dropped");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn subscribers_receive_subtypes_and_the_most_specific_one_wins() {
    let mut rt = FakeRuntime::start().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = (Arc::clone(&got), Arc::clone(&got));
    let (stop, nf) = spawn(
        builder(&rt, "dispatch")
            .subscribe("PKT", move |ev: &Event<'_>| {
                a.lock().unwrap().push(("PKT", ev.type_id(), ev.packet().map(<[u8]>::to_vec)));
                Verdict::Pass
            })
            .subscribe("PKT/UDP", move |ev: &Event<'_>| {
                b.lock().unwrap().push(("PKT/UDP", ev.type_id(), ev.packet().map(<[u8]>::to_vec)));
                Verdict::Drop
            }),
    );
    rt.publish(PKT_TCP, 1, b"tcp").unwrap();
    rt.publish(PKT_UDP, 2, b"udp").unwrap();
    rt.publish(PKT, 3, b"").unwrap();
    let v: Vec<u8> = rt.wait_verdicts(3, WAIT).into_iter().map(|(_, v)| v).collect();
    assert_eq!(v, [VERDICT_PASS, VERDICT_DROP, VERDICT_PASS]);
    stop.stop();
    nf.join().unwrap().unwrap();
    assert_eq!(
        *got.lock().unwrap(),
        [
            ("PKT", PKT_TCP, Some(b"tcp".to_vec())),
            ("PKT/UDP", PKT_UDP, Some(b"udp".to_vec())),
            ("PKT", PKT, None), // no packet attached
        ]
    );
}

#[test]
fn a_udp_subscriber_does_not_receive_tcp() {
    let mut rt = FakeRuntime::start().unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let c = Arc::clone(&calls);
    let (stop, nf) = spawn(builder(&rt, "udp-only").subscribe("PKT/UDP", move |_: &Event<'_>| {
        *c.lock().unwrap() += 1;
        Verdict::Drop
    }));
    // The runtime would not send it; if it did, the NF answers Pass.
    rt.publish(PKT_TCP, 1, b"tcp").unwrap();
    assert_eq!(rt.wait_verdicts(1, WAIT)[0].1, VERDICT_PASS);
    stop.stop();
    let s = nf.join().unwrap().unwrap();
    assert_eq!((s.events, s.unmatched, s.passed), (1, 1, 1));
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[test]
fn runtime_closing_the_socket_gives_runtime_gone() {
    let rt = FakeRuntime::start().unwrap();
    let (_stop, nf) = spawn(builder(&rt, "orphan").subscribe("PKT", |_: &Event<'_>| Verdict::Pass));
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    rt.close_control();
    let err = nf.join().unwrap().unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "noticed after {:?}", t0.elapsed());
    assert!(matches!(err, NfError::RuntimeGone { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("went away") && msg.contains(&rt.socket().display().to_string()), "{msg}");
}

#[test]
fn refused_registration_carries_the_runtimes_message() {
    let rt = FakeRuntime::start_refusing("chain 'edge' has no slot for NF 'late'").unwrap();
    let err = builder(&rt, "late").subscribe("PKT", |_: &Event<'_>| Verdict::Pass).connect().unwrap_err();
    assert!(matches!(&err, NfError::Refused { name, .. } if name == "late"), "{err:?}");
    assert_eq!(err.to_string(), "the runtime refused to register NF 'late': chain 'edge' has no slot for NF 'late'");

    // The fake validates with the controller's registry, like the runtime.
    let rt = FakeRuntime::start().unwrap();
    let err = builder(&rt, "typo").subscribe("PKT/TPC", |_: &Event<'_>| Verdict::Pass).connect().unwrap_err();
    assert!(matches!(err, NfError::Refused { .. }) && err.to_string().contains("PKT/TPC"), "{err}");
}

#[test]
fn connect_errors_name_the_socket_and_the_fix() {
    let socket = std::env::temp_dir().join(format!("ubox-no-such-{}.sock", std::process::id()));
    let err = Nf::builder("x").socket(&socket).connect().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NfError::Connect { .. }), "{err:?}");
    assert!(msg.contains(&socket.display().to_string()), "{msg}");
    assert!(msg.contains("is ubox-runtime running? set UBOX_INSTANCE or UBOX_SOCKET"), "{msg}");

    let rt = FakeRuntime::start().unwrap();
    let err = builder(&rt, "twice")
        .subscribe("PKT", |_: &Event<'_>| Verdict::Pass)
        .subscribe("PKT", |_: &Event<'_>| Verdict::Drop)
        .connect()
        .unwrap_err();
    assert!(matches!(err, NfError::Definition(_)) && err.to_string().contains("twice"), "{err}");
}

#[test]
fn stop_before_run_returns_at_once_and_totals_add_up() {
    let mut rt = FakeRuntime::start().unwrap();
    let mut nf = builder(&rt, "stopper").subscribe("PKT", |_: &Event<'_>| Verdict::Pass).connect().unwrap();
    rt.publish(PKT_TCP, 1, b"x").unwrap();
    let stop = nf.stop_handle();
    stop.stop();
    assert!(stop.is_stopped());
    assert_eq!(nf.run().unwrap(), RunSummary::default());
    assert!(rt.collect_verdicts().is_empty());
    assert_eq!(nf.totals().events, 0);
}

/// The payload an NF below publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, nf_sdk::bytemuck::Pod, nf_sdk::bytemuck::Zeroable)]
#[repr(C)]
struct Hit {
    at: u32,
    len: u32,
}

#[test]
fn a_modifying_nf_rewrites_in_place_and_publishes_its_own_event() {
    let mut rt = FakeRuntime::start().unwrap();
    let (stop, nf) =
        spawn(builder(&rt, "masker").declares("FLOW/HIT").publishes("FLOW/HIT").modifies_packets(true).subscribe(
            "PKT/TCP",
            |ev: &Event<'_>| {
                let p = ev.packet().unwrap_or(&[]);
                let Some(at) = p.windows(6).position(|w| w == b"secret") else { return Verdict::Pass };
                ev.write_packet(at, b"XXXXXX").unwrap();
                // Writes past the end, and undeclared types, are refused.
                assert!(matches!(ev.write_packet(p.len() - 2, b"abc"), Err(nf_sdk::EventError::OutOfPacket { .. })));
                assert!(matches!(ev.publish("FLOW/OTHER", b""), Err(nf_sdk::EventError::NotPublished { .. })));
                ev.publish_value("FLOW/HIT", &Hit { at: at as u32, len: 6 }).unwrap();
                Verdict::Modified
            },
        ));
    let id = rt.publish(PKT_TCP, 7, b"GET /?q=secret HTTP/1.1").unwrap();
    let off = rt.packet_offset(id).unwrap();
    rt.publish(PKT_TCP, 8, b"nothing to see").unwrap();
    let v: Vec<u8> = rt.wait_verdicts(2, WAIT).into_iter().map(|(_, v)| v).collect();
    assert_eq!(v, [VERDICT_MODIFIED, VERDICT_PASS]);
    assert_eq!(rt.arena().packet(off, 23).unwrap(), b"GET /?q=XXXXXX HTTP/1.1");
    let published = rt.take_published();
    assert_eq!(published.len(), 1);
    let (h, payload) = &published[0];
    assert_eq!((h.flow_id, h.pkt_len), (7, 0));
    let ev = Event::with_payload(*h, EventTypeId::from_raw(h.type_id).unwrap(), payload);
    assert_eq!(ev.payload_as::<Hit>(), Some(Hit { at: 8, len: 6 }));
    stop.stop();
    let summary = nf.join().unwrap().unwrap();
    assert_eq!((summary.modified, summary.published, summary.publish_failed), (1, 1, 0));
    assert_eq!(rt.free_slots(), rt.arena().slot_pool().unwrap().capacity(), "every slot is back");
}

#[test]
fn a_read_only_nf_cannot_write_packets() {
    let mut rt = FakeRuntime::start().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&errors);
    let (stop, nf) = spawn(builder(&rt, "reader").subscribe("PKT", move |ev: &Event<'_>| {
        log.lock().unwrap().push(ev.write_packet(0, b"x").unwrap_err());
        Verdict::Pass
    }));
    rt.publish(PKT_TCP, 1, b"abc").unwrap();
    assert_eq!(rt.wait_verdicts(1, WAIT).len(), 1);
    stop.stop();
    nf.join().unwrap().unwrap();
    assert_eq!(*errors.lock().unwrap(), [nf_sdk::EventError::NotWritable]);
    // Detached events (unit tests of callbacks) say so.
    let ev = Event::new(Default::default(), PKT, None);
    assert_eq!(ev.publish("X", b""), Err(nf_sdk::EventError::Detached));
}

#[test]
fn data_ready_events_give_the_new_bytes_across_the_ring_wrap() {
    let mut rt = FakeRuntime::start().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&got);
    let (stop, nf) = spawn(builder(&rt, "reader").subscribe("DATA_RDY/CLIENT", move |ev: &Event<'_>| {
        let s = ev.stream().expect("DATA_RDY carries a stream");
        let (a, b) = s.new_bytes().unwrap();
        let mut bytes = a.to_vec();
        bytes.extend_from_slice(b);
        // Bytes the ring no longer holds are an error, never other bytes.
        let old = s.read(0..1);
        log.lock().unwrap().push((s.new_range(), bytes, ev.frontier(), old.is_ok(), ev.tcp().is_some()));
        Verdict::Pass
    }));
    let stream = b"GET /index.html HTTP/1.1\r\n";
    rt.publish_stream(Side::Client, 9, &stream[..10], 0, 16).unwrap();
    rt.publish_stream(Side::Client, 9, stream, 10, 16).unwrap(); // 26 bytes in a 16-byte ring: wraps
    assert_eq!(rt.wait_verdicts(2, WAIT).len(), 2);
    stop.stop();
    nf.join().unwrap().unwrap();
    let got = got.lock().unwrap();
    assert_eq!(got[0], (0..10, stream[..10].to_vec(), 10, true, true));
    assert_eq!(got[1], (10..26, stream[10..].to_vec(), 26, false, true));
}
