//! The `l4lb` process: command line, registration, reloads, the report on
//! exit. The load balancer itself is the library; see its docs.
//!
//! ```text
//! l4lb --config FILE [--stats-json FILE] [--name NAME] [--instance NAME | --socket PATH] [--reconnect]
//! l4lb --check FILE
//! ```

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use clap::Parser;
use l4lb::nf::{l4lb_nf, Shared};
use l4lb::{Config, Lb, Mode};
use nf_sdk::cli::{self, Common, Exit};

const ABOUT: &str = "ubox L4 load balancer NF in Katran's style: picks a backend per connection \
                     (server id in a TCP option or QUIC connection id, else the per-worker connection \
                     table, else the VIP's Maglev ring) and sends the packet there by rewriting its \
                     destination MAC (L2 direct server return)";

const AFTER_HELP: &str = "\
Config (TOML; examples/l4lb.toml is a commented example):
  [lb]             mode = \"dsr\" (default) | \"ipip\", hash = \"maglev\" (default) | \"maglev-v2\",
                   table_capacity = 65536 (entries per worker), udp_timeout_ms = 30000,
                   gateway_mac and max_packet_size (ipip only)
  [[vip]]          address, port (0: every port), protocol = \"tcp\" | \"udp\",
                   quic = true (UDP: route by QUIC connection id), hash (overrides [lb])
  [[vip.backend]]  address, weight (default 1; 0 drains), mac (dsr: required),
                   server_id = N or [N, M] (ids in TCP option 0xB7 and QUIC connection ids)

In DSR mode each backend holds the VIP on lo (and answers no ARP for it:
arp_ignore=1, arp_announce=2); the runtime's client-side port should list
the VIP in its ipv4 so that the box answers ARP and ping for it. The chain
sends the VIP's flows to l4lb (it passes what is not for a VIP). The NF
cannot grow packets, so mode = \"ipip\" is checked by --check but refused
at start-up (the packet function in the library implements it).

SIGHUP (`uboxctl nf reload l4lb`) reads the config again: new rings at
once, connections in the tables stay with their backends unless those were
removed; a bad file is refused with one line per problem and the running
config kept.

Exit status: 0 after a clean stop or a good --check; 1 when --check finds
problems (one line FILE:LINE: what; how to fix, each) or the NF fails
(the runtime not there, or gone without --reconnect); 2 when the --config
file is bad or the runtime refuses the registration.

On SIGINT/SIGTERM it prints the counters per VIP and backend and writes
them as JSON to --stats-json.";

#[derive(Parser, Debug)]
#[command(version, about = ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Config file to run with: VIPs and their backends (TOML).
    #[arg(long, value_name = "FILE", required_unless_present = "check", conflicts_with = "check")]
    config: Option<PathBuf>,
    /// Only check FILE: print each problem as FILE:LINE: what is wrong; how to fix
    /// (exit 1), or a one-line summary (exit 0). Connects to nothing.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Write the counters (per VIP and backend, and totals) as JSON to FILE on exit.
    #[arg(long, value_name = "FILE", alias = "json-out")]
    stats_json: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

fn main() -> ExitCode {
    cli::main("l4lb", run)
}

fn run(args: Args) -> Result<(), Exit> {
    if let Some(path) = &args.check {
        return match Config::load(path) {
            Ok(c) => {
                println!("{}: ok: {}", path.display(), c.summary());
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
    let Some(path) = args.config.clone() else {
        return Err(Exit::config("--config FILE is needed (or --check FILE)"));
    };
    let cfg = Config::load(&path).map_err(|e| Exit::config(e.lines().join("\n")))?;
    if cfg.mode == Mode::Ipip {
        return Err(Exit::config(format!(
            "{}: mode = \"ipip\" makes packets longer, and an NF can only rewrite them in place; use mode = \"dsr\" \
             (IPIP is in the library's packet function, checked against Katran's fixtures)",
            path.display()
        )));
    }
    serve(&args, &path, cfg)
}

fn serve(args: &Args, path: &Path, cfg: Config) -> Result<(), Exit> {
    let summary = cfg.summary();
    let shared = Shared::new(Lb::new(cfg), path.to_path_buf());
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&shared.reload))
        .map_err(|e| Exit::Failed(format!("cannot handle SIGHUP: {e}")))?;
    let mut nf = cli::connect(l4lb_nf(args.common.builder(), Arc::clone(&shared)), &args.common)?;
    tracing::info!(
        "{summary} from {}; registered as NF {} on {}; SIGHUP reloads, Ctrl-C stops",
        path.display(),
        nf.id(),
        nf.socket().display()
    );
    let result = cli::run(&mut nf, &args.common);
    let report = shared.lb().report();
    print!("{}", report.render());
    let (reloads, refused) = (shared.reloads.load(Ordering::Relaxed), shared.reloads_refused.load(Ordering::Relaxed));
    let echo = shared.echo_passed.load(Ordering::Relaxed);
    println!("reloads: {reloads} applied, {refused} refused; echo requests passed on: {echo}");
    if let Some(out) = &args.stats_json {
        let mut v = serde_json::to_value(&report).map_err(|e| Exit::Failed(e.to_string()))?;
        v["reloads"] = reloads.into();
        v["reloads_refused"] = refused.into();
        v["echo_passed"] = echo.into();
        cli::write_json(out, &v)?;
    }
    result?;
    Ok(())
}
