//! The real `acl-firewall` process: a bad rules file (exit code 2, one line
//! naming file and line), and a run against `FakeRuntime` stopped by
//! SIGTERM (verdicts, the table on stdout and `--json-out`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use ubox_shm::event::{VERDICT_DROP, VERDICT_PASS};
use ustack::event::{PKT_TCP, PKT_UDP};

#[allow(dead_code)]
#[path = "../src/frames.rs"]
mod frames;
use frames::{ipv4_frame, TCP, UDP};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("acl-firewall-bin-{}-{name}", std::process::id()))
}

#[test]
fn bad_rules_exit_2_with_file_and_line() {
    let rules = temp("bad.rules");
    std::fs::write(&rules, "# ok\nallow tcp any any any 22\ndeny tcp any any any 80-\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_acl-firewall"))
        .arg("--rules")
        .arg(&rules)
        .arg("--socket")
        .arg("/nonexistent.sock")
        .output()
        .unwrap();
    std::fs::remove_file(&rules).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("{}:3: destination port \"80-\"", rules.display())), "{stderr}");

    let out =
        Command::new(env!("CARGO_BIN_EXE_acl-firewall")).args(["--rules", "/nonexistent/x.rules"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.rules: cannot read the rules"));
}

#[test]
fn check_prints_the_rules() {
    let rules = temp("check.rules");
    std::fs::write(&rules, "deny   udp any any any 53 # dns\ndefault deny\n").unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_acl-firewall")).arg("--rules").arg(&rules).arg("--check").output().unwrap();
    std::fs::remove_file(&rules).unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("1  deny udp any any any 53") && stdout.contains("default deny"), "{stdout}");
}

#[test]
fn firewall_process_drops_denied_and_writes_json_on_sigterm() {
    let mut rt = FakeRuntime::start().unwrap();
    let rules = temp("run.rules");
    let json = temp("run.json");
    std::fs::write(
        &rules,
        "deny tcp any any 10.10.0.11 8080\nallow udp 10.0.0.0/8 any any 53\ndeny udp any any any 53\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_acl-firewall"))
        .arg("--rules")
        .arg(&rules)
        .arg("--socket")
        .arg(rt.socket())
        .arg("--json-out")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rt.wait_registered(Duration::from_secs(10)), "acl-firewall did not register");
    let m = rt.manifest().unwrap();
    assert_eq!((m.subscriptions[0].event.as_str(), m.modifies_packets), ("PKT", false));

    let mut expect = Vec::new();
    for i in 0..20u8 {
        let (ty, frame, v) = match i % 4 {
            0 => (PKT_TCP, ipv4_frame(TCP, [10, 0, 0, i], 40000, [10, 10, 0, 11], 8080), VERDICT_DROP),
            1 => (PKT_TCP, ipv4_frame(TCP, [10, 0, 0, i], 40000, [10, 10, 0, 11], 443), VERDICT_PASS),
            2 => (PKT_UDP, ipv4_frame(UDP, [10, 0, 0, i], 5000, [8, 8, 8, 8], 53), VERDICT_PASS),
            _ => (PKT_UDP, ipv4_frame(UDP, [172, 16, 0, i], 5000, [8, 8, 8, 8], 53), VERDICT_DROP),
        };
        expect.push((rt.publish(ty, u64::from(i), &frame).unwrap(), v));
    }
    let got = rt.wait_verdicts(20, Duration::from_secs(10));
    assert_eq!(got.len(), 20);
    for (slot, v) in got {
        assert_eq!(Some(v), expect.iter().find(|(s, _)| *s == slot).map(|e| e.1), "slot {slot:?}");
    }

    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(&rules).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("deny tcp any any 10.10.0.11 8080") && stdout.contains("dropped 10"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!((report["passed"].as_u64(), report["dropped"].as_u64()), (Some(10), Some(10)));
    let hits: Vec<u64> = report["rules"].as_array().unwrap().iter().map(|r| r["hits"].as_u64().unwrap()).collect();
    assert_eq!(hits, vec![5, 5, 5]);
    assert_eq!(report["default_hits"].as_u64(), Some(5));
    assert!(rt.nf_disconnected());
}
