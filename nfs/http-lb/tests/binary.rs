//! The real `http-lb` process: `--check` on bad and good files, `--help`,
//! a bad `--rules` file, and a run against `FakeRuntime` stopped by
//! SIGTERM (answers, the table on stdout and `--stats-json`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nf_sdk::testing::FakeRuntime;
use nf_sdk::{FlowDest, FlowReq, DEST_CONNECT};
use ubox_shm::event::{EventHeader, VERDICT_PASS};
use ustack::event::FLOW_REQ;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("http-lb-bin-{}-{name}", std::process::id()))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_http-lb"))
}

const BAD: &str = r#"[[pool]]
name = "web"
backends = ["10.0.0.1:80", "10.0.0.300:80"]
balance = "random"

[[pool]]
name = "web"
backends = []

[[pool]]
name = "h"
backends = ["10.0.0.2:80"]
balance = "hash-header"

[[route]]
host = "a.test"
pool = "wbe"

[default]
pool = "web"
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
        format!("{p}:3: backend \"10.0.0.300:80\" is not ADDRESS:PORT"),
        format!("{p}:4: unknown balance \"random\"; use round-robin, least-connections, hash-client or hash-header"),
        format!("{p}:7: pool \"web\" is defined twice (first on line 2); rename one"),
        format!("{p}:8: pool has no backends"),
        format!("{p}:13: balance = \"hash-header\" without `hash_header`"),
        format!("{p}:17: no pool named \"wbe\"; use one of: h, web"),
    ];
    assert_eq!(lines.len(), want.len(), "{stdout}");
    for (l, w) in lines.iter().zip(&want) {
        assert!(l.starts_with(w.as_str()), "got  {l}\nwant {w}…");
    }

    let out = bin().args(["--check", "/nonexistent/rules.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/nonexistent/rules.toml: cannot read the rules"));
}

#[test]
fn check_accepts_the_example_with_a_summary() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/rules.example.toml");
    let out = bin().args(["--check", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, format!("{example}: ok: 4 pools (9 backends), 3 routes, default pool web\n"));
}

#[test]
fn help_explains_and_bad_rules_exit_2() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in
        ["--rules <FILE>", "--check <FILE>", "--stats-json <FILE>", "[[route]]", "least-connections", "Exit status"]
    {
        assert!(help.contains(s), "--help lacks {s}:\n{help}");
    }
    let out = bin().output().unwrap();
    assert!(!out.status.success(), "neither --rules nor --check");

    let path = temp("bad-run.toml");
    std::fs::write(&path, BAD).unwrap();
    let out = bin().arg("--rules").arg(&path).args(["--socket", "/nonexistent.sock"]).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
    assert!(stderr.starts_with(&format!("http-lb: {}:3: ", path.display())), "{stderr}");
}

#[test]
fn process_routes_and_writes_stats_on_sigterm() {
    let mut rt = FakeRuntime::start().unwrap();
    let rules = temp("run.toml");
    let json = temp("run.json");
    std::fs::write(
        &rules,
        "[[pool]]\nname = \"web\"\nbackends = [\"10.10.0.11:80\", \"10.10.0.12:80\"]\n[default]\npool = \"web\"\n",
    )
    .unwrap();
    let child = bin()
        .arg("--rules")
        .arg(&rules)
        .arg("--socket")
        .arg(rt.socket())
        .arg("--stats-json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(rt.wait_registered(Duration::from_secs(10)), "http-lb did not register");
    assert_eq!(rt.manifest().unwrap().publications, ["FLOW_DEST"]);
    let req = FlowReq {
        client_addr: Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets(),
        client_port: 40000,
        vip_port: 80,
        ..FlowReq::default()
    };
    for i in 0..10u64 {
        let header = EventHeader { type_id: FLOW_REQ.raw(), flow_id: i, ..EventHeader::default() };
        rt.publish_packet_payload(header, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &req.to_bytes()).unwrap();
    }
    let v = rt.wait_verdicts(10, Duration::from_secs(10));
    assert_eq!(v.len(), 10);
    assert!(v.iter().all(|&(_, v)| v == VERDICT_PASS));
    let dests: Vec<String> = rt
        .take_published()
        .iter()
        .map(|(_, p)| {
            let d = FlowDest::from_bytes(p).unwrap();
            assert_eq!(d.action, DEST_CONNECT);
            SocketAddr::new(http_lb::rules::from_abi_addr(d.addr), d.port).to_string()
        })
        .collect();
    assert_eq!(dests, ["10.10.0.11:80", "10.10.0.12:80"].repeat(5));

    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(&rules).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("10.10.0.12:80") && stdout.contains("requests 10 (retries 0): routed 10"), "{stdout}");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    let backends = report["pools"][0]["backends"].as_array().unwrap();
    let routed: Vec<u64> = backends.iter().map(|b| b["routed"].as_u64().unwrap()).collect();
    let open: Vec<u64> = backends.iter().map(|b| b["open"].as_u64().unwrap()).collect();
    assert_eq!((routed, open), (vec![5, 5], vec![5, 5]));
    assert_eq!(report["counts"]["requests"].as_u64(), Some(10));
    assert!(rt.nf_disconnected());
}
