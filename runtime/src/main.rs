//! `ubox-runtime --config FILE.toml`: start the ubox daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ubox_runtime::config::Config;

/// The ubox NFV runtime: DPDK poll-mode workers that bridge ports and track
/// flows.
///
/// Reads a TOML config (see examples/wire.toml), starts DPDK, forwards until
/// SIGINT or SIGTERM, then prints its counters. SIGUSR1 prints them at any
/// time; `uboxctl stats` reads them over the control socket. With
/// `[metrics] listen` it serves them to Prometheus at /metrics, with `[web]
/// listen` a live read-only web view at / (both off by default). Must run
/// as root with hugepages reserved (scripts/setup.sh does both).
///
/// NFs need not be root: the control socket is mode 0660 for the group
/// `runtime.group` (default `ubox`, which must exist: scripts/setup.sh
/// creates it; `""` keeps it root's only), so members of the group may run
/// NFs (each gets its part of the arena over the socket; the arena file
/// stays root's) and the read-only uboxctl commands. `uboxctl
/// chain apply` needs root.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The runtime's TOML configuration file.
    #[arg(short, long)]
    config: PathBuf,
    /// Override runtime.workers.
    #[arg(short, long)]
    workers: Option<u16>,
    /// Override runtime.name (the instance name).
    #[arg(long)]
    name: Option<String>,
    /// Run without hugepages. For tests only: memory is not pinned and
    /// throughput suffers.
    #[arg(long)]
    no_huge: bool,
    /// Write the final counters as JSON to this file on exit.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Print the counters every N seconds.
    #[arg(long, value_name = "SECONDS")]
    stats_interval: Option<u64>,
    /// Check the config and print the EAL arguments, then exit.
    #[arg(long)]
    check: bool,
    /// Apply this chain file before the first packet (as `uboxctl chain
    /// apply` would later): flows that start at once get these chains.
    #[arg(long, value_name = "FILE")]
    chains: Option<PathBuf>,
}

fn main() -> ExitCode {
    // $UBOX_LOG filters; under systemd, lines carry journald's <N> priorities.
    ubox_log::init(ubox_log::Style::Timestamped);
    let cli = Cli::parse();
    let mut cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            ubox_log::error_line(&format!("ubox-runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    if let Some(w) = cli.workers {
        cfg.runtime.workers = w;
    }
    if let Some(n) = cli.name {
        cfg.runtime.name = n;
    }
    if let Err(e) = cfg.revalidate(&cli.config.display().to_string()) {
        ubox_log::error_line(&format!("ubox-runtime: {e}"));
        return ExitCode::from(2);
    }
    // The group must exist: a config error (with --check too), before
    // anything starts.
    if let Err(e) = ubox_runtime::preflight::nf_group(&cfg.runtime.group) {
        ubox_log::error_line(&format!("ubox-runtime: bad config {}: {e}", cli.config.display()));
        return ExitCode::from(2);
    }
    if cli.check {
        let ncpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        println!("config OK; EAL arguments: {}", cfg.eal_args(ncpus, cli.no_huge).join(" "));
        return ExitCode::SUCCESS;
    }
    let chains = match &cli.chains {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((text, path.display().to_string())),
            Err(e) => {
                ubox_log::error_line(&format!("ubox-runtime: cannot read --chains {}: {e}", path.display()));
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let opts = ubox_runtime::Options {
        chains,
        no_huge: cli.no_huge,
        stats_json: cli.stats_json,
        stats_interval: cli.stats_interval.map(Duration::from_secs),
    };
    match ubox_runtime::run(cfg, opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            ubox_log::error_line(&format!("ubox-runtime: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
