//! The `http-lb` process: command line, registration, the report on exit.
//! The NF itself (rules, balancing, health) is the library; see its docs.
//!
//! ```text
//! http-lb --rules FILE [--stats-json FILE] [--name NAME] [--instance NAME | --socket PATH]
//!         [--max-flows N] [--flow-ttl-s S] [--reconnect]
//! http-lb --check FILE
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use http_lb::balancer::{DEFAULT_FLOW_TTL_MS, DEFAULT_MAX_FLOWS};
use http_lb::{lb_nf, Balancer, Rules, Shared};
use nf_sdk::cli::{self, Common, Exit};

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
problems (one line FILE:LINE: what; how to fix, each) or the NF fails
(the runtime not there, or gone without --reconnect); 2 when the --rules
file is bad or the runtime refuses the registration (a usage error: a
restart cannot mend it).

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
    #[command(flatten)]
    common: Common,
    /// Most flows remembered (flow id -> backend, for FLOW/END and retries; ~100 bytes each); the oldest make room.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FLOWS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=(1 << 24)))]
    max_flows: usize,
    /// Seconds a flow is remembered without its FLOW/END (then counted as untracked).
    #[arg(long, value_name = "S", default_value_t = DEFAULT_FLOW_TTL_MS / 1000,
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    flow_ttl_s: u64,
}

fn main() -> ExitCode {
    cli::main("http-lb", run)
}

fn run(args: Args) -> Result<(), Exit> {
    if let Some(path) = &args.check {
        return match Rules::load(path) {
            Ok(r) => {
                println!("{}: ok: {}", path.display(), r.summary());
                Ok(())
            }
            Err(e) => {
                for line in e.lines() {
                    println!("{line}");
                }
                Err(Exit::Code(cli::EXIT_FAILURE))
            }
        };
    }
    let Some(path) = args.rules.clone() else {
        return Err(Exit::config("--rules FILE is needed (or --check FILE)"));
    };
    // A bad rules file: one line per problem, status 2.
    let rules = Rules::load(&path).map_err(|e| Exit::config(e.lines().join("\n")))?;
    serve(&args, &path, rules)
}

fn serve(args: &Args, path: &Path, rules: Rules) -> Result<(), Exit> {
    let summary = rules.summary();
    let shared = Shared::new(Balancer::new(rules, args.max_flows, args.flow_ttl_s * 1000));
    let mut nf = cli::connect(lb_nf(args.common.builder(), std::sync::Arc::clone(&shared)), &args.common)?;
    tracing::info!(
        "{summary} from {}; registered as NF {} on {}; Ctrl-C to stop",
        path.display(),
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    let report = shared.report();
    print!("{}", report.render());
    if let Some(path) = &args.stats_json {
        cli::write_json(path, &report)?;
    }
    result?;
    Ok(())
}
