//! SIGTERM stops a running NF cleanly: its own test binary, since the
//! signal goes to the whole process.

use std::time::Duration;

use nf_sdk::testing::FakeRuntime;
use nf_sdk::{Event, Nf, Verdict};
use ubox_shm::event::VERDICT_PASS;
use ustack::event::PKT_TCP;

#[test]
fn sigterm_stops_run_after_answering() {
    let mut rt = FakeRuntime::start().unwrap();
    let mut nf =
        Nf::builder("sig").socket(rt.socket()).subscribe("PKT", |_: &Event<'_>| Verdict::Pass).connect().unwrap();
    let stop = nf.stop_handle();
    let t = std::thread::spawn(move || nf.run());
    // An answered event proves run() is polling, so its handlers are in.
    rt.publish(PKT_TCP, 1, b"one").unwrap();
    assert_eq!(rt.wait_verdicts(1, Duration::from_secs(10))[0].1, VERDICT_PASS);
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    let summary = t.join().unwrap().unwrap();
    assert!(stop.is_stopped());
    assert_eq!((summary.events, summary.passed), (1, 1));
}
