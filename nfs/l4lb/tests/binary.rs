//! The real `l4lb` process: `--check` on bad and good files, `--help`,
//! refused configs, and a run against `FakeRuntime`: packets to the VIP
//! come back `Modified` with a backend's MAC in the arena, others `Pass`;
//! SIGHUP takes a new file (and refuses a bad one); SIGTERM writes the
//! counters.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use ubox_shm::event::{VERDICT_MODIFIED, VERDICT_PASS};
use ustack::event::PKT_TCP;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("l4lb-bin-{}-{name}", std::process::id()))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l4lb"))
}

const BAD: &str = r#"[lb]
mode = "nat"

[[vip]]
address = "10.10.0.100"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.10.0.11"
weight = -1
mac = "02:00:00:00:00:11"

[[vip.backend]]
address = "10.10.0.12"
"#;

#[test]
fn check_prints_one_line_per_problem_and_exits_1() {
    let path = temp("bad.toml");
    std::fs::write(&path, BAD).unwrap();
    let out = bin().arg("--check").arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let p = path.display();
    let want = [
        format!("{p}:2: mode \"nat\" is unknown; use \"dsr\""),
        format!("{p}:11: weight = -1 is out of range; use an integer from 0 to 65536"),
        format!("{p}:14: backend 10.10.0.12 has no `mac`; in dsr mode packets go to the backend's MAC"),
    ];
    assert_eq!(lines.len(), want.len(), "{stdout}");
    for (l, w) in lines.iter().zip(&want) {
        assert!(l.starts_with(w.as_str()), "got  {l}\nwant {w}…");
    }
    let out = bin().args(["--check", "/nonexistent/l4lb.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/nonexistent/l4lb.toml: cannot read the config"));
}

#[test]
fn check_accepts_the_examples_with_a_summary() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/l4lb.toml");
    let out = bin().args(["--check", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{example}: ok: 1 VIP, 2 backends, mode dsr, hash maglev\n")
    );
    let katran = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/katran/provision.toml");
    let out = bin().args(["--check", katran]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("ok: 9 VIPs, 6 backends, mode ipip, hash maglev\n"));
}

#[test]
fn help_explains_and_bad_configs_exit_2() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in [
        "--config <FILE>",
        "--check <FILE>",
        "--stats-json <FILE>",
        "[[vip.backend]]",
        "server_id",
        "arp_ignore",
        "SIGHUP",
        "Exit status",
    ] {
        assert!(help.contains(s), "--help lacks {s}:\n{help}");
    }
    assert!(!bin().output().unwrap().status.success(), "neither --config nor --check");

    let path = temp("bad-run.toml");
    std::fs::write(&path, BAD).unwrap();
    let out = bin().arg("--config").arg(&path).args(["--socket", "/nonexistent.sock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(stderr.starts_with(&format!("l4lb: {}:2: ", path.display())), "{stderr}");

    // ipip passes --check but cannot run as an NF.
    let katran = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/katran/provision.toml");
    let out = bin().args(["--config", katran, "--socket", "/nonexistent.sock"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use mode = \"dsr\""));
    std::fs::remove_file(&path).unwrap();
}

const MAC11: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
const MAC12: [u8; 6] = [2, 0, 0, 0, 0, 0x12];

fn config(backends: &[(&str, [u8; 6])]) -> String {
    let mut s = String::from("[[vip]]\naddress = \"10.10.0.100\"\nport = 80\nprotocol = \"tcp\"\n");
    for (a, m) in backends {
        s += &format!(
            "[[vip.backend]]\naddress = \"{a}\"\nmac = \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"\n",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
    }
    s
}

/// Ethernet / IPv4 / TCP SYN from 192.0.2.1:`sport` to `dst`:80.
fn syn(sport: u16, dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[192, 0, 2, 1]);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x02;
    f
}

/// Publishes the frames, waits for their verdicts; returns each verdict
/// and the destination MAC the arena then holds.
fn exchange(rt: &mut FakeRuntime, frames: &[Vec<u8>]) -> Vec<(u8, [u8; 6])> {
    let mut ids = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let id = rt.publish(PKT_TCP, i as u64, f).unwrap();
        ids.push((id, rt.packet_offset(id).unwrap()));
    }
    let v = rt.wait_verdicts(frames.len(), Duration::from_secs(10));
    assert_eq!(v.len(), frames.len());
    ids.iter()
        .map(|(id, off)| {
            let verdict = v.iter().find(|(i, _)| i == id).unwrap().1;
            let mac = rt.arena().packet(*off, 6).unwrap();
            (verdict, [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
        })
        .collect()
}

#[test]
fn process_balances_reloads_and_writes_stats_on_sigterm() {
    let mut rt = FakeRuntime::start().unwrap();
    let cfg = temp("run.toml");
    let json = temp("run.json");
    std::fs::write(&cfg, config(&[("10.10.0.11", MAC11), ("10.10.0.12", MAC12)])).unwrap();
    let child = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(rt.socket())
        .arg("--stats-json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rt.wait_registered(Duration::from_secs(10)), "l4lb did not register");
    let m = rt.manifest().unwrap();
    assert!(m.modifies_packets, "{m:?}");

    // 20 connections to the VIP and one SYN to another host.
    let mut frames: Vec<Vec<u8>> = (0..20).map(|p| syn(30000 + p, [10, 10, 0, 100])).collect();
    frames.push(syn(1, [10, 10, 0, 11]));
    let got = exchange(&mut rt, &frames);
    assert_eq!(got[20], (VERDICT_PASS, [2, 0, 0, 0, 0, 0xfe]), "not for a VIP: untouched");
    let to11 = got[..20].iter().filter(|g| **g == (VERDICT_MODIFIED, MAC11)).count();
    let to12 = got[..20].iter().filter(|g| **g == (VERDICT_MODIFIED, MAC12)).count();
    assert_eq!(to11 + to12, 20, "{got:?}");
    assert!(to11 > 0 && to12 > 0, "both backends get connections: {to11} / {to12}");

    // A bad file is refused on SIGHUP; a good one (without .12) is taken.
    let hup = || assert!(Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap().success());
    std::fs::write(&cfg, "[[vip]]\naddress = \"10.10.0.100\"\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(300));
    let again = exchange(&mut rt, &[syn(30000, [10, 10, 0, 100])]);
    assert_eq!(again[0], got[0], "the running config stays");
    std::fs::write(&cfg, config(&[("10.10.0.11", MAC11)])).unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(300));
    let after = exchange(&mut rt, &frames[..20]);
    assert!(after.iter().all(|g| *g == (VERDICT_MODIFIED, MAC11)), "{after:?}");

    assert!(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap().success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(&cfg).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("reload refused: keeping the running config"), "{stderr}");
    assert!(stderr.contains("reloaded") && stderr.contains("1 VIP, 1 backend"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("10.10.0.100:80/tcp") && stdout.contains("reloads: 1 applied, 1 refused"), "{stdout}");

    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(r["packets"].as_u64(), Some(42));
    assert_eq!(r["forwarded"].as_u64(), Some(41));
    assert_eq!(r["passed"].as_u64(), Some(1));
    let vip = &r["vips"][0];
    assert_eq!(vip["packets"].as_u64(), Some(41));
    assert_eq!(vip["syns"].as_u64(), Some(41));
    let b = &r["backends"][0];
    assert_eq!(b["address"].as_str(), Some("10.10.0.11"));
    let again_to11 = usize::from(got[0].1 == MAC11);
    assert_eq!(b["packets"].as_u64(), Some((to11 + again_to11 + 20) as u64), "{r}");
    assert_eq!(r["reloads"].as_u64(), Some(1));
    assert!(rt.nf_disconnected());
}
