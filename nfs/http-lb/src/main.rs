//! The `http-lb` process: command line, registration, the report on exit.
//! The NF itself (rules, balancing, health) is the library; see its docs.
//!
//! ```text
//! http-lb --rules FILE [--stats-json FILE] [--name NAME] [--instance NAME | --socket PATH]
//!         [--max-flows N] [--flow-ttl-s S]
//! http-lb --check FILE
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use http_lb::balancer::{DEFAULT_FLOW_TTL_MS, DEFAULT_MAX_FLOWS};
use http_lb::{lb_nf, Balancer, Report, Rules, Shared};
use nf_sdk::{Nf, NfError};

const ABOUT: &str = "ubox policy NF for the TCP splicer: routes each client connection to a backend \
                     by its first HTTP request (Host, path prefix), with round-robin, least-connections \
                     or consistent hashing per pool and passive health checks";

const AFTER_HELP: &str = "\
Rules (TOML; nfs/http-lb/rules.example.toml is a commented example):
  [[pool]]   name, backends = [\"ADDR:PORT\", { addr = \"ADDR:PORT\", weight = N }],
             balance = round-robin | least-connections | hash-client | hash-header,
             hash_header = \"X-User\" (for hash-header), down_ms = 10000
  [[route]]  host = \"a.test\" | \"*.test\", path_prefix = \"/api/\", pool = NAME
             (tried in file order; the first that matches wins)
  [default]  pool = NAME, or reject = \"503\" | \"rst\" (without it: 503)

Exit status: 0 after a clean stop or a good --check; 1 when --check finds
problems (one line FILE:LINE: what; how to fix, each) or the NF fails;
2 when the --rules file is bad.

On SIGINT/SIGTERM it prints per backend the connections routed, failures
and those open, and writes them as JSON to --stats-json.";

#[derive(Parser, Debug)]
#[command(version, about = ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Rules file to run with: pools, routes and the default (TOML).
    #[arg(long, value_name = "FILE", required_unless_present = "check", conflicts_with = "check")]
    rules: Option<PathBuf>,
    /// Only check FILE: print each problem as FILE:LINE: what is wrong; how to fix
    /// (exit 1), or a one-line summary (exit 0). Connects to nothing.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Write the counters (per pool and backend, and totals) as JSON to FILE on exit.
    #[arg(long, value_name = "FILE", alias = "json-out")]
    stats_json: Option<PathBuf>,
    /// NF name to register under (the splicer's config names its policy NF).
    #[arg(long, default_value = "http-lb")]
    name: String,
    /// Runtime instance (socket /run/ubox/<instance>.sock); default $UBOX_INSTANCE or `ubox`.
    #[arg(long)]
    instance: Option<String>,
    /// Control socket path; wins over --instance; default $UBOX_SOCKET.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Most flows remembered (flow id -> backend, for FLOW/END and retries; ~100 bytes each); the oldest make room.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FLOWS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=(1 << 24)))]
    max_flows: usize,
    /// Seconds a flow is remembered without its FLOW/END (then counted as untracked).
    #[arg(long, value_name = "S", default_value_t = DEFAULT_FLOW_TTL_MS / 1000,
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    flow_ttl_s: u64,
}

/// Exit status for a `--rules` file that is bad (as `acl-firewall`).
const EXIT_BAD_RULES: u8 = 2;

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report).context("serialising the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing --stats-json {}", path.display()))
}

/// `NfError` messages already say what and how to fix, source included.
fn one_line(e: NfError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return match Rules::load(path) {
            Ok(r) => {
                println!("{}: ok: {}", path.display(), r.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                for line in e.lines() {
                    println!("{line}");
                }
                ExitCode::FAILURE
            }
        };
    }
    let path = args.rules.clone().expect("clap requires --rules without --check");
    let rules = match Rules::load(&path) {
        Ok(r) => r,
        Err(e) => {
            for line in e.lines() {
                eprintln!("http-lb: {line}");
            }
            return ExitCode::from(EXIT_BAD_RULES);
        }
    };
    match run(&args, &path, rules) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, path: &Path, rules: Rules) -> anyhow::Result<()> {
    let summary = rules.summary();
    let shared = Shared::new(Balancer::new(rules, args.max_flows, args.flow_ttl_s * 1000));
    let builder = lb_nf(Nf::builder(&args.name), std::sync::Arc::clone(&shared))
        .target(args.instance.as_deref(), args.socket.as_deref());
    let mut nf = builder.connect().map_err(one_line)?;
    eprintln!(
        "http-lb: {summary} from {}; registered as NF {} on {}; Ctrl-C to stop",
        path.display(),
        nf.id(),
        nf.socket().display()
    );
    let result = nf.run();
    let report = shared.report();
    print!("{}", report.render());
    if let Some(path) = &args.stats_json {
        write_json(path, &report)?;
    }
    result.map_err(one_line)?;
    Ok(())
}
