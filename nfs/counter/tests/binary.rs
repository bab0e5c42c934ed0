//! The real `counter` process against `FakeRuntime`: counts, SIGTERM, the
//! table on stdout and `--json-out`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use ubox_shm::event::VERDICT_PASS;
use ustack::event::{PKT_TCP, PKT_UDP};

#[test]
fn counter_process_counts_and_writes_json_on_sigterm() {
    let mut rt = FakeRuntime::start().unwrap();
    let json = std::env::temp_dir().join(format!("counter-bin-{}.json", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_counter"))
        .arg("--socket")
        .arg(rt.socket())
        .arg("--json-out")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rt.wait_registered(Duration::from_secs(10)), "counter did not register");
    assert_eq!(rt.manifest().unwrap().subscriptions[0].event, "PKT");
    for i in 0..50u64 {
        rt.publish(if i % 2 == 0 { PKT_TCP } else { PKT_UDP }, i % 5, &[0u8; 100]).unwrap();
    }
    let v = rt.wait_verdicts(50, Duration::from_secs(10));
    assert_eq!(v.len(), 50);
    assert!(v.iter().all(|&(_, v)| v == VERDICT_PASS));

    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("total") && stdout.contains("5000"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!((report["packets"].as_u64(), report["bytes"].as_u64()), (Some(50), Some(5000)));
    let flows = report["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 5);
    for (i, f) in flows.iter().enumerate() {
        assert_eq!(f["flow_id"].as_u64(), Some(i as u64));
        assert_eq!((f["packets"].as_u64(), f["bytes"].as_u64()), (Some(10), Some(1000)));
    }
    assert!(rt.nf_disconnected());
}
