//! Katran's packet fixtures through [`Lb::process`], table-driven: every
//! case of `tests/katran/fixtures.toml` (input frame, expected XDP return
//! code, expected output frame) on a load balancer provisioned as Katran's
//! tester provisions its own (`tests/katran/provision.toml`). See the data
//! file for the source and the cases left out.
//!
//! A case passes when the action maps to Katran's return code and the
//! frame that would leave is byte for byte Katran's: for `XDP_TX` the
//! encapsulated frame (outer header + the frame from its IP header) or
//! the echo reply written in place; for `XDP_DROP` and `XDP_PASS` the
//! input, untouched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use l4lb::config::Mode;
use l4lb::{Action, Config, Lb};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixtures {
    case: Vec<Case>,
    skipped: Vec<Skipped>,
}

#[derive(Deserialize)]
struct Case {
    set: String,
    katran: u32,
    description: String,
    expect: String,
    #[allow(dead_code)]
    note: Option<String>,
    input: String,
    output: String,
}

#[derive(Deserialize)]
struct Skipped {
    set: String,
    katran: u32,
    #[allow(dead_code)]
    description: String,
    why: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/katran")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn fixtures() -> Fixtures {
    let text = std::fs::read_to_string(dir().join("fixtures.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

fn provision() -> Config {
    Config::load(&dir().join("provision.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The frame that would leave for `action` on `input` (`frame` is the
/// buffer after `process`).
fn leaving(action: &Action, input: &[u8], frame: &[u8]) -> Vec<u8> {
    match action {
        Action::Encap { header, .. } => header.apply(input),
        _ => frame.to_vec(),
    }
}

/// Runs every case of `set`, in order, on one fresh load balancer;
/// returns one line per failing case, and each case's action.
fn run_set(cfg: Config, cases: &[&Case]) -> (Vec<String>, Vec<Action>) {
    let mut lb = Lb::new(cfg);
    let mut failures = Vec::new();
    let mut actions = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let input = unhex(&c.input);
        let mut frame = input.clone();
        let action = lb.process(&mut frame, 0, i as u64);
        let out = leaving(&action, &input, &frame);
        let want = unhex(&c.output);
        if action.xdp() != c.expect || out != want {
            failures.push(format!(
                "{} #{} {:?}: got {} ({action:?}) {}\n   want {} {}",
                c.set,
                c.katran,
                c.description,
                action.xdp(),
                hex(&out),
                c.expect,
                c.output
            ));
        }
        actions.push(action);
    }
    (failures, actions)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn katran_fixtures_pass_byte_for_byte() {
    let f = fixtures();
    let mut by_set: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for c in &f.case {
        by_set.entry(c.set.as_str()).or_default().push(c);
    }
    assert_eq!(by_set.keys().copied().collect::<Vec<_>>(), ["base", "tpr"]);
    let mut failures = Vec::new();
    for cases in by_set.values() {
        failures.extend(run_set(provision(), cases).0);
    }
    let ported = f.case.len();
    println!("{ported} Katran fixtures ported, {} left out, {} failed", f.skipped.len(), failures.len());
    assert!(failures.is_empty(), "{} of {ported} fixtures differ:\n{}", failures.len(), failures.join("\n"));
    // What the issue names is all there: IPIP v4 and v6, TPR, QUIC CIDs v1
    // and v2, ICMP, drop and pass.
    for word in ["TPR", "CIDv2", "Conn Id V1", "ICMP", "drop", "pass", "v6 real", "v4 real"] {
        assert!(f.case.iter().any(|c| c.description.contains(word)), "no ported case about {word}");
    }
    assert_eq!(ported, 50);
    for s in &f.skipped {
        assert!(!s.why.is_empty() && !f.case.iter().any(|c| c.set == s.set && c.katran == s.katran));
    }
}

#[test]
fn dsr_picks_the_backends_ipip_encapsulates_to() {
    // The same cases in DSR mode: every packet IPIP sends to a backend goes
    // to the same backend with only its destination MAC changed.
    let f = fixtures();
    for set in ["base", "tpr"] {
        let cases: Vec<&Case> = f.case.iter().filter(|c| c.set == set).collect();
        let (_, ipip) = run_set(provision(), &cases);
        let mut cfg = provision();
        cfg.mode = Mode::Dsr;
        let mut n = 0u8;
        for v in &mut cfg.vips {
            for b in &mut v.backends {
                n += 1;
                b.mac = Some([0x02, 0, 0, 0, 0, n]);
            }
        }
        let mut lb = Lb::new(cfg);
        for (i, (c, want)) in cases.iter().zip(&ipip).enumerate() {
            let input = unhex(&c.input);
            let mut frame = input.clone();
            let got = lb.process(&mut frame, 0, i as u64);
            match (want, got) {
                (Action::Encap { backend: a, .. }, Action::Forward { backend: b }) => {
                    assert_eq!(a, &b, "{set} #{}", c.katran);
                    assert_eq!(frame[6..], input[6..], "{set} #{}: only the destination MAC changes", c.katran);
                    assert_eq!(frame[..5], [0x02, 0, 0, 0, 0], "{set} #{}", c.katran);
                }
                (Action::Reply, Action::Reply) => {}
                // DSR has no size limit: the too-big UDP packet is forwarded.
                (Action::Drop(l4lb::DropReason::TooBig), Action::Forward { .. }) => {}
                (a, b) => assert_eq!(a.xdp(), b.xdp(), "{set} #{}: {a:?} vs {b:?}", c.katran),
            }
        }
    }
}

#[test]
fn katran_counters_add_up() {
    // Over the base set: what each VIP counted adds up to what was routed.
    let f = fixtures();
    let cases: Vec<&Case> = f.case.iter().filter(|c| c.set == "base").collect();
    let mut lb = Lb::new(provision());
    for (i, c) in cases.iter().enumerate() {
        let mut frame = unhex(&c.input);
        lb.process(&mut frame, 0, i as u64);
    }
    let r = lb.report();
    let routed = r.forwarded + r.encapsulated;
    let vip_packets: u64 = r.vips.iter().map(|v| v.counters.packets).sum();
    let backend_packets: u64 = r.backends.iter().map(|b| b.counters.packets).sum();
    assert_eq!(backend_packets, routed);
    // The too-big packet is dropped before it is counted for its VIP.
    assert_eq!(vip_packets, routed);
    assert_eq!(r.packets, cases.len() as u64);
    assert_eq!(r.packets, routed + r.passed + r.replies + r.drops.values().sum::<u64>());
    let quic = lb.vip("10.200.1.5".parse().unwrap(), 443, 17).unwrap();
    let q = lb.vip_counters(quic).unwrap();
    // Handshake, Retry, CIDv1 1026 and CIDv2 0x030402 routed by id; 1092,
    // host id 0, 0x030444 and the empty short header fell back.
    assert_eq!((q.server_id_hits, q.server_id_fallbacks), (4, 4), "{q:?}");
    println!("{}", r.render());
}

#[test]
fn every_fixture_cut_anywhere_or_scrambled_never_panics() {
    // Truncations and byte flips of real frames reach the ICMP, QUIC and
    // TPR parsers with every length; the answer is an action, never a panic.
    let f = fixtures();
    let mut lb = Lb::new(provision());
    let mut x: u32 = 0x1234_5678;
    for c in &f.case {
        let input = unhex(&c.input);
        for cut in 0..input.len().min(200) {
            let mut frame = input[..cut].to_vec();
            let _ = lb.process(&mut frame, 0, 0);
        }
        for _ in 0..64 {
            let mut frame = input.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let at = 14 + (x as usize) % (frame.len() - 14);
            frame[at] ^= (x >> 24) as u8 | 1;
            let _ = lb.process(&mut frame, (x % 3) as usize, 0);
        }
    }
    assert!(lb.totals().packets > 5000);
}
