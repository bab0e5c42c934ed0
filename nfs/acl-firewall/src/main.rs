//! `acl-firewall`: a sample ubox NF that drops what five-tuple rules deny.
//!
//! Subscribes to `PKT` read-only (it never modifies packets), parses each
//! frame's Ethernet (up to two VLAN tags), IPv4/IPv6 and TCP/UDP headers,
//! and answers `Drop` when the first matching rule is `deny`, `Pass`
//! otherwise. On SIGINT/SIGTERM (or when the runtime goes away) it prints
//! the hits of every rule and, with `--json-out FILE`, writes them as JSON:
//!
//! ```text
//! {"rules":[{"line":3,"rule":"deny tcp any any 10.10.0.11 8080","hits":2}],
//!  "default":"allow","default_hits":8,"not_ip":0,"passed":8,"dropped":2}
//! ```
//!
//! ```text
//! acl-firewall --rules FILE [--instance NAME | --socket PATH] [--json-out FILE] [--name NAME] [--reconnect] [--check]
//! ```
//!
//! # Rules
//!
//! One rule per line; `#` starts a comment; blank lines are ignored:
//!
//! ```text
//! allow|deny  PROTO  SRC[/LEN]|any  SPORT|any  DST[/LEN]|any  DPORT|any
//! default allow|deny
//! ```
//!
//! - PROTO: `tcp`, `udp`, `icmp`, `any` or an IP protocol number (0-255).
//! - SRC, DST: an IPv4 or IPv6 address or prefix (`10.0.0.0/8`,
//!   `2001:db8::/32`; host bits must be zero), or `any`. A bare address is
//!   a host. Source and destination of one rule must be of one family.
//! - SPORT, DPORT: a port, an inclusive range `1000-2000`, or `any`. Ports
//!   need PROTO `tcp`, `udp` or `any`; a rule naming a port matches only
//!   TCP and UDP packets that carry ports (not non-first fragments).
//! - The first rule that matches wins; when none does, the `default`
//!   policy applies (`allow` unless a `default` line says otherwise; at
//!   most one). Frames that are not IP or are malformed match no rule and
//!   get the default policy too.
//!
//! ```text
//! # web server: only HTTP from the LAN
//! allow tcp 10.0.0.0/8 any 10.10.0.11 80
//! deny  tcp any any 10.10.0.11 any
//! allow udp any any any 53
//! deny  17 any any any 1000-2000
//! default allow
//! ```
//!
//! A rule matches a packet only as written: its source against the
//! packet's source, its destination against the packet's destination. It
//! is not mirrored for the reply direction. A denied TCP connection still
//! shows no replies, because its SYN is dropped and the server never
//! answers; to block traffic both ways without that, write two rules.
//!
//! A bad line stops the NF before it registers, with one line on stderr
//! naming the file, the line number and what is wrong, and exit code 2.
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

mod rules;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nf_sdk::cli::{self, Common, Exit};
use nf_sdk::{Event, NfBuilder, Verdict};
use rules::{Action, RuleSet};

#[derive(Parser, Debug)]
#[command(version, about = "ubox sample NF: drop the packets five-tuple rules deny (read-only)")]
struct Args {
    /// Rules file: `allow|deny PROTO SRC SPORT DST DPORT` per line, `default allow|deny`.
    #[arg(long)]
    rules: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Write the per-rule hits as JSON to this file on exit.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Only check the rules file, print the rules and exit.
    #[arg(long)]
    check: bool,
}

/// The event type the firewall publishes for every packet it drops.
pub const DENY_EVENT: &str = "FLOW/ACL_DENY";

/// Payload of [`DENY_EVENT`]: which line of the rules file denied the
/// packet (0 for the `default deny`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, nf_sdk::bytemuck::Pod, nf_sdk::bytemuck::Zeroable)]
#[bytemuck(crate = "nf_sdk::bytemuck")]
#[repr(C)]
pub struct AclDeny {
    pub line: u32,
}

/// The firewall NF on top of `builder`: one read-only `PKT` subscription
/// deciding with `rules` (which count the hits); every drop is also
/// published as a [`DENY_EVENT`] (for loggers and counters subscribed to it).
pub fn firewall_nf(builder: NfBuilder, rules: Arc<RuleSet>) -> NfBuilder {
    builder
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .declares(DENY_EVENT)
        .publishes(DENY_EVENT)
        .subscribe("PKT", move |ev: &Event<'_>| match rules.decide_rule(ev.packet().unwrap_or_default()) {
            (Action::Allow, _) => Verdict::Pass,
            (Action::Deny, rule) => {
                let line = rule.and_then(|i| rules.rules().get(i)).map_or(0, |r| r.line as u32);
                // A full slot pool only loses the notification; the drop stands.
                let _ = ev.publish_value(DENY_EVENT, &AclDeny { line });
                Verdict::Drop
            }
        })
}

fn main() -> ExitCode {
    cli::main("acl-firewall", run)
}

fn run(args: Args) -> Result<(), Exit> {
    // A bad rules file: one line naming the file and line, status 2.
    let rules = Arc::new(RuleSet::load(&args.rules).map_err(Exit::config)?);
    if args.check {
        for r in rules.rules() {
            println!("{:>6}  {}", r.line, r.text);
        }
        println!("{:>6}  default {}", "-", rules.default_action());
        return Ok(());
    }
    let builder = firewall_nf(args.common.builder(), Arc::clone(&rules));
    let mut nf = cli::connect(builder, &args.common)?;
    tracing::info!(
        "{} rules from {}, default {}; registered as NF {} on {}; Ctrl-C to stop",
        rules.rules().len(),
        args.rules.display(),
        rules.default_action(),
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    let report = rules.report();
    print!("{}", report.render());
    if let Some(path) = &args.json_out {
        cli::write_json(path, &report)?;
    }
    let totals = nf.totals();
    tracing::info!("{} events, {} passed, {} dropped", totals.events, totals.passed, totals.dropped);
    result?;
    Ok(())
}

#[cfg(test)]
mod frames;

#[cfg(test)]
mod tests {
    use super::*;
    use frames::{ipv4_frame, ipv6_frame, TCP, UDP};
    use nf_sdk::testing::FakeRuntime;
    use nf_sdk::Nf;
    use rules::RuleHits;
    use std::time::Duration;
    use ubox_shm::event::{VERDICT_DROP, VERDICT_PASS};
    use ustack::event::{PKT, PKT_TCP, PKT_UDP};

    const RULES: &str = "\
# test rules
deny tcp any any 10.10.0.11 8080
allow udp 10.0.0.0/8 any any 53
deny udp any any any 53      # everyone else's DNS
deny tcp 192.168.0.0/16 1000-2000 any any
deny any 2001:db8::/32 any any any
";

    #[test]
    fn end_to_end_verdicts_and_json_counts() {
        let mut rt = FakeRuntime::start().unwrap();
        let rules = Arc::new(RuleSet::parse(RULES, "rules.acl").unwrap());
        let builder =
            firewall_nf(Nf::builder("acl-firewall").socket(rt.socket()).handle_signals(false), Arc::clone(&rules));
        let mut nf = builder.connect().unwrap();
        assert_eq!(rt.manifest().unwrap().subscriptions[0].event, "PKT");
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());

        // (type, frame, expected verdict)
        let cases: Vec<(_, Vec<u8>, u8)> = vec![
            (PKT_TCP, ipv4_frame(TCP, [10, 0, 0, 5], 40000, [10, 10, 0, 11], 8080), VERDICT_DROP), // rule 1
            (PKT_TCP, ipv4_frame(TCP, [10, 0, 0, 5], 40000, [10, 10, 0, 11], 80), VERDICT_PASS),   // default
            (PKT_TCP, ipv4_frame(TCP, [10, 10, 0, 11], 8080, [10, 0, 0, 5], 40000), VERDICT_PASS), // reply: as written
            (PKT_UDP, ipv4_frame(UDP, [10, 1, 2, 3], 5353, [8, 8, 8, 8], 53), VERDICT_PASS),       // rule 2
            (PKT_UDP, ipv4_frame(UDP, [172, 16, 0, 1], 5353, [8, 8, 8, 8], 53), VERDICT_DROP),     // rule 3
            (PKT_TCP, ipv4_frame(TCP, [192, 168, 1, 1], 1500, [1, 1, 1, 1], 443), VERDICT_DROP),   // rule 4
            (PKT_TCP, ipv4_frame(TCP, [192, 168, 1, 1], 2001, [1, 1, 1, 1], 443), VERDICT_PASS),   // default
            (PKT_UDP, ipv6_frame(UDP, "2001:db8::1", 1, "2001:db9::1", 2), VERDICT_DROP),          // rule 5
            (PKT_UDP, ipv6_frame(UDP, "2001:db9::1", 1, "2001:db8::1", 54), VERDICT_PASS),         // default
            (PKT, vec![0xff; 9], VERDICT_PASS),                                                    // not IP
        ];
        let mut expect = Vec::new();
        for _ in 0..3 {
            for (ty, frame, v) in &cases {
                let slot = rt.publish(*ty, 1, frame).unwrap();
                expect.push((slot, *v));
            }
            // Collect per round so that slots are not reused within one.
            let got = rt.wait_verdicts(cases.len(), Duration::from_secs(10));
            assert_eq!(got.len(), cases.len());
            for (slot, v) in got {
                let want = expect.iter().find(|(s, _)| *s == slot).unwrap().1;
                assert_eq!(v, want, "slot {slot:?}");
            }
            expect.clear();
        }
        stop.stop();
        let summary = nf.join().unwrap().unwrap();
        assert_eq!((summary.events, summary.passed, summary.dropped), (30, 18, 12));

        let report = rules.report();
        let hits: Vec<u64> = report.rules.iter().map(|r| r.hits).collect();
        assert_eq!(hits, vec![3, 3, 3, 3, 3]);
        assert_eq!((report.default_hits, report.not_ip, report.passed, report.dropped), (15, 3, 18, 12));
        assert_eq!(
            report.rules[2],
            RuleHits { line: 4, rule: "deny udp any any any 53".into(), hits: 3 },
            "comments stripped, blanks collapsed"
        );

        let path = std::env::temp_dir().join(format!("acl-firewall-test-{}.json", std::process::id()));
        cli::write_json(&path, &report).unwrap();
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back["passed"], 18);
        assert_eq!(back["dropped"], 12);
        assert_eq!(back["default"], "allow");
        assert_eq!(back["rules"][0]["rule"], "deny tcp any any 10.10.0.11 8080");
        assert_eq!(back["rules"][0]["hits"], 3);
        assert!(report.render().contains("dropped 12"), "{}", report.render());
    }

    #[test]
    fn default_deny_drops_what_no_rule_allows() {
        let mut rt = FakeRuntime::start().unwrap();
        let rules = Arc::new(RuleSet::parse("allow tcp any any any 22\ndefault deny\n", "r").unwrap());
        let mut nf = firewall_nf(Nf::builder("fw").socket(rt.socket()).handle_signals(false), Arc::clone(&rules))
            .connect()
            .unwrap();
        let stop = nf.stop_handle();
        let nf = std::thread::spawn(move || nf.run());
        let ssh = rt.publish(PKT_TCP, 1, &ipv4_frame(TCP, [1, 2, 3, 4], 5000, [5, 6, 7, 8], 22)).unwrap();
        let web = rt.publish(PKT_TCP, 2, &ipv4_frame(TCP, [1, 2, 3, 4], 5000, [5, 6, 7, 8], 80)).unwrap();
        let mut got = rt.wait_verdicts(2, Duration::from_secs(10));
        got.sort_by_key(|&(s, _)| s != ssh);
        assert_eq!(got, vec![(ssh, VERDICT_PASS), (web, VERDICT_DROP)]);
        stop.stop();
        nf.join().unwrap().unwrap();
        let r = rules.report();
        assert_eq!((r.rules[0].hits, r.default_hits, r.passed, r.dropped), (1, 1, 1, 1));
    }
}
