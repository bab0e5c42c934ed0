//! `--reconnect` in the SDK: an NF outlives its runtime. The fake runtime
//! stops (its socket and arena go, the NF's connection closes) and a new
//! one starts on the same socket; the NF registers again by itself, with
//! the same manifest and callbacks, and its own state goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use nf_sdk::{Event, Nf, NfError, Verdict};
use ubox_shm::event::{VERDICT_DROP, VERDICT_PASS};
use ustack::event::{PKT_TCP, PKT_UDP};

const WAIT: Duration = Duration::from_secs(10);

/// Publishes `n` TCP packets and checks each is answered `want`.
fn traffic(rt: &mut FakeRuntime, n: u64, want: u8) {
    for i in 0..n {
        rt.publish(PKT_TCP, i, &[i as u8; 60]).unwrap();
    }
    let v = rt.wait_verdicts(n as usize, WAIT);
    assert_eq!(v.len(), n as usize, "verdicts");
    assert!(v.iter().all(|&(_, code)| code == want), "{v:?}");
}

#[test]
fn run_reconnecting_registers_again_after_the_runtime_restarts_and_keeps_state() {
    let mut rt = FakeRuntime::start().unwrap();
    let dir = rt.dir().to_owned();
    let seen = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let (s, log) = (Arc::clone(&seen), Arc::clone(&sessions));
    let mut nf = Nf::builder("keeper")
        .socket(rt.socket())
        .handle_signals(false)
        .subscribe("PKT/TCP", move |_: &Event<'_>| {
            // Drops every 3rd packet it ever saw: the count must go on.
            if s.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                Verdict::Drop
            } else {
                Verdict::Pass
            }
        })
        .subscribe("PKT/UDP", |_: &Event<'_>| Verdict::Drop)
        .on_reregister(move |session| log.lock().unwrap().push(session.name.clone()))
        .connect()
        .unwrap();
    let stop = nf.stop_handle();
    let t = std::thread::spawn(move || nf.run_reconnecting());

    traffic(&mut rt, 2, VERDICT_PASS);
    assert_eq!(seen.load(Ordering::Relaxed), 2);

    // The runtime goes away, and comes back a little later.
    drop(rt);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "run_reconnecting returned when the runtime went away");
    let mut rt = FakeRuntime::start_in(&dir).unwrap();
    let t0 = Instant::now();
    assert!(rt.wait_registered(Duration::from_secs(5)), "the NF did not register again");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "registered again after {took:?}");
    let m = rt.manifest().unwrap();
    let subs: Vec<&str> = m.subscriptions.iter().map(|s| s.event.as_str()).collect();
    assert_eq!((m.name.as_str(), subs), ("keeper", vec!["PKT/TCP", "PKT/UDP"]), "the same manifest");

    // The 3rd packet ever is dropped: the callback's state survived.
    traffic(&mut rt, 1, VERDICT_DROP);
    // (Called before the NF polled the new session.)
    assert_eq!(*sessions.lock().unwrap(), ["keeper"], "on_reregister called once");
    traffic(&mut rt, 2, VERDICT_PASS);
    rt.publish(PKT_UDP, 9, b"udp").unwrap();
    assert_eq!(rt.wait_verdicts(1, WAIT)[0].1, VERDICT_DROP, "dispatch by type after re-registering");

    // And once more, quickly.
    drop(rt);
    let mut rt = FakeRuntime::start_in(&dir).unwrap();
    assert!(rt.wait_registered(Duration::from_secs(5)), "the NF did not register a second time");
    traffic(&mut rt, 1, VERDICT_DROP);

    stop.stop();
    let summary = t.join().unwrap().unwrap();
    assert_eq!((summary.events, summary.dropped), (7, 3), "{summary:?}");
    assert_eq!(sessions.lock().unwrap().len(), 2);
}

#[test]
fn plain_run_still_ends_when_the_runtime_goes() {
    let rt = FakeRuntime::start().unwrap();
    let mut nf =
        Nf::builder("once").socket(rt.socket()).handle_signals(false).subscribe("PKT", |_: &Event<'_>| Verdict::Pass);
    nf = nf.on_reregister(|_| panic!("no re-registration without reconnecting"));
    let mut nf = nf.connect().unwrap();
    let t = std::thread::spawn(move || nf.run());
    drop(rt);
    assert!(matches!(t.join().unwrap(), Err(NfError::RuntimeGone { .. })));
}

#[test]
fn connect_waiting_waits_for_a_runtime_that_starts_later() {
    let dir = std::env::temp_dir().join(format!("ubox-late-{}", std::process::id()));
    let socket = dir.join("control.sock");
    let b = Nf::builder("early").socket(&socket).handle_signals(false).subscribe("PKT", |_: &Event<'_>| Verdict::Pass);
    let t = std::thread::spawn(move || b.connect_waiting());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.is_finished(), "connect_waiting gave up without a runtime");
    let mut rt = FakeRuntime::start_in(&dir).unwrap();
    let mut nf = t.join().unwrap().expect("connected once the runtime started");
    let stop = nf.stop_handle();
    let run = std::thread::spawn(move || nf.run());
    traffic(&mut rt, 3, VERDICT_PASS);
    stop.stop();
    assert_eq!(run.join().unwrap().unwrap().events, 3);
}

#[test]
fn connect_waiting_does_not_wait_out_a_refusal_and_stops_on_request() {
    let rt = FakeRuntime::start_refusing("NF name 'bad name' is not valid").unwrap();
    let t0 = Instant::now();
    let err = Nf::builder("x")
        .socket(rt.socket())
        .handle_signals(false)
        .subscribe("PKT", |_: &Event<'_>| Verdict::Pass)
        .connect_waiting()
        .unwrap_err();
    assert!(matches!(err, NfError::Refused { .. }), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    let socket = std::env::temp_dir().join(format!("ubox-never-{}.sock", std::process::id()));
    let b = Nf::builder("w").socket(&socket).handle_signals(false).subscribe("PKT", |_: &Event<'_>| Verdict::Pass);
    let stop = b.stop_handle();
    let t = std::thread::spawn(move || b.connect_waiting());
    std::thread::sleep(Duration::from_millis(200));
    stop.stop();
    let err = t.join().unwrap().unwrap_err();
    assert!(matches!(err, NfError::Stopped { .. }), "{err:?}");
}
