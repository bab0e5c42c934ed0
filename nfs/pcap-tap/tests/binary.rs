//! The real `pcap-tap` process against `FakeRuntime`, stopped by SIGTERM:
//! the pcap on disk (bounded by `--max-packets`), the summary on stdout,
//! `--json-out`, and a disk that is full.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use pcap_file::pcap::PcapReader;
use ubox_shm::event::VERDICT_PASS;
use ustack::event::PKT_TCP;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pcap-tap-bin-{}-{name}", std::process::id()))
}

fn spawn(rt: &FakeRuntime, args: &[&Path]) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_pcap-tap"))
        .args(args)
        .arg("--socket")
        .arg(rt.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rt.wait_registered(Duration::from_secs(10)), "pcap-tap did not register");
    child
}

fn publish_all_pass(rt: &mut FakeRuntime, n: u8, len: usize) -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = (0..n).map(|i| vec![i; len]).collect();
    for f in &frames {
        rt.publish(PKT_TCP, 1, f).unwrap();
    }
    let v = rt.wait_verdicts(frames.len(), Duration::from_secs(10));
    assert_eq!(v.len(), frames.len());
    assert!(v.iter().all(|&(_, v)| v == VERDICT_PASS));
    frames
}

fn sigterm(child: Child) -> Output {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    out
}

#[test]
fn tap_process_writes_bounded_pcap_and_json_on_sigterm() {
    let mut rt = FakeRuntime::start().unwrap();
    let (pcap, json) = (temp("run.pcap"), temp("run.json"));
    let child = spawn(
        &rt,
        &[Path::new("--out"), &pcap, Path::new("--max-packets"), Path::new("30"), Path::new("--json-out"), &json],
    );
    assert!(!rt.manifest().unwrap().modifies_packets);
    let frames = publish_all_pass(&mut rt, 40, 100);
    let out = sigterm(child);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("30 packets written (3000 bytes), 10 skipped"), "{stdout}");

    let mut r = PcapReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
    let mut got = Vec::new();
    while let Some(p) = r.next_packet() {
        got.push(p.unwrap().data.into_owned());
    }
    assert_eq!(got, frames[..30]);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((report["written"].as_u64(), report["skipped"].as_u64()), (Some(30), Some(10)));
    assert_eq!((report["write_errors"].as_u64(), report["first_error"].is_null()), (Some(0), true));
    std::fs::remove_file(&pcap).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert!(rt.nf_disconnected());
}

#[test]
fn full_disk_is_reported_once_and_packets_still_pass() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full; skipped");
        return;
    }
    let mut rt = FakeRuntime::start().unwrap();
    let json = temp("full.json");
    let child = spawn(&rt, &[Path::new("--out"), Path::new("/dev/full"), Path::new("--json-out"), &json]);
    // 400 KB: more than the 256 KiB buffer, so writes fail while running.
    publish_all_pass(&mut rt, 200, 2000);
    let out = sigterm(child);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.matches("No space left").count(), 2, "once when it happens, once in the exit line: {stderr}");
    assert!(stderr.contains("the capture in /dev/full is incomplete"), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let (written, skipped) = (report["written"].as_u64().unwrap(), report["skipped"].as_u64().unwrap());
    assert_eq!(written + skipped, 200);
    assert!(skipped > 0 && report["write_errors"].as_u64() == Some(1), "{report}");
}
