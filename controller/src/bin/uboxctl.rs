//! `uboxctl`: talk to a running ubox-runtime over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use controller::api::{self, Request, Response};

/// Control a running ubox-runtime.
///
/// uboxctl connects to the runtime's Unix control socket (by default
/// `/run/ubox/<instance>.sock`, where `<instance>` is `runtime.name` in the
/// runtime's config) and prints what it answers: readable tables by default,
/// JSON with --json.
///
/// Who may: root, and members of the runtime's group (`runtime.group`,
/// default `ubox`, created by scripts/setup.sh) for the read-only commands
/// (stats, ping, nf list, chain show). `chain apply` changes what traffic
/// the NFs see and `capture` hands out packet contents: both need root
/// (e.g. sudo uboxctl chain apply FILE).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Instance name (the runtime config's `runtime.name`).
    #[arg(short, long, global = true, default_value = "ubox")]
    instance: String,
    /// Control socket path; overrides --instance.
    #[arg(short, long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Counters per port, per worker and per drop reason.
    Stats,
    /// Check that the runtime answers.
    Ping,
    /// Network functions.
    #[command(subcommand)]
    Nf(NfCmd),
    /// Service chains: which NFs, in which order, see which flows.
    #[command(subcommand)]
    Chain(ChainCmd),
    /// Capture packets, with their verdicts, to a pcapng file.
    ///
    /// Takes the packets of one chain's flows (--chain), of the flows whose
    /// chain has an NF (--nf), or of the flows a filter matches (--flow),
    /// where the runtime knows their fate: as they leave their chain, passed
    /// or dropped, or as they are forwarded without one. Each packet's
    /// pcapng comment reads `flow=ID worker=W verdict=pass|drop nf=NAME
    /// chain=NAME` (and `reason=R` for a drop): NAME is the NF that dropped
    /// it or the last one that passed it, `none` if no NF of its chain took
    /// part, `wire` if it had no chain. Read them with
    /// `tshark -r FILE -T fields -e frame.comment`.
    ///
    /// Bounded: it ends at --count packets, --max-bytes captured bytes or
    /// --timeout, whichever comes first (and if uboxctl stops reading for
    /// 5 s); frames are cut at --snaplen. Ctrl-C ends it early with a
    /// complete file of what was captured so far. One capture at a time
    /// per runtime. Needs root.
    Capture(CaptureArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["chain", "nf", "flow"])))]
struct CaptureArgs {
    /// Packets of the flows this chain was given (a name from `chain show`).
    #[arg(long, value_name = "NAME")]
    chain: Option<String>,
    /// Packets of the flows whose chain has this NF in a stage.
    #[arg(long, value_name = "NAME")]
    nf: Option<String>,
    /// Packets of the flows this filter matches, with a chain or without:
    /// terms separated by commas or spaces, all of which must hold, each
    /// about either end of the flow (so both directions are captured):
    /// `tcp`, `udp`, `icmp` or `proto=N`; `ADDR` or `ADDR/LEN`; `ADDR:PORT`
    /// or `[V6ADDR]:PORT`; `:PORT` or `port=PORT`.
    /// E.g. `tcp,10.10.0.11:80` or `10.10.0.0/24 :443`.
    #[arg(long, value_name = "FILTER")]
    flow: Option<String>,
    /// Packets to capture at most.
    #[arg(short = 'c', long, default_value_t = 100, value_name = "N")]
    count: u64,
    /// The pcapng file to write (replaced if it exists).
    #[arg(short = 'o', long, value_name = "FILE.pcapng")]
    out: PathBuf,
    /// Bytes kept of each frame.
    #[arg(long, default_value_t = 1518, value_name = "BYTES")]
    snaplen: u32,
    /// Captured bytes at most (after --snaplen), e.g. 16M.
    #[arg(long, default_value = "16M", value_parser = parse_size, value_name = "BYTES")]
    max_bytes: u64,
    /// Seconds the capture lasts at most.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    timeout: f64,
}

/// `123`, `64K`, `16M`, `1G` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (n, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a size (bytes, or with K, M or G)"))
}

#[derive(Subcommand)]
enum ChainCmd {
    /// Apply a chain file (see examples/chain.toml); new flows use it,
    /// running flows keep their chain. Nothing is applied if it has an error.
    /// Needs root.
    Apply {
        /// The chain file (TOML).
        file: PathBuf,
    },
    /// The chains in force.
    Show,
}

#[derive(Subcommand)]
enum NfCmd {
    /// Registered NFs: state, process and user, subscriptions,
    /// publications, events in/out.
    List,
    /// Stop giving new flows to an NF instance (`NAME#N`, as `uboxctl
    /// stats` lists it) or to every instance of `NAME`; each is told to
    /// exit (its process exits 0) once its flows have ended, or when the
    /// timeout passes (its remaining flows then get the chain's policy, as
    /// for a dead NF). Needs root.
    Drain {
        /// `NAME` or `NAME#N`.
        target: String,
        /// Most milliseconds the instance keeps its flows before it is told
        /// to exit regardless.
        #[arg(long, default_value_t = api::DEFAULT_DRAIN_MS)]
        timeout_ms: u64,
    },
    /// Arm a release: the next registration of NAME (the new build, started
    /// as usual, or with --takeover) runs next to the old instances and takes
    /// every new flow; the old ones drain as with `nf drain`. Needs root.
    Release {
        name: String,
        #[arg(long, default_value_t = api::DEFAULT_DRAIN_MS)]
        timeout_ms: u64,
    },
    /// Apply an NF's edited configuration live: every running instance of
    /// NAME gets SIGHUP and reads its files again (l4lb: VIPs and backends;
    /// see the NF's --help). Refused for an NF whose process does not catch
    /// SIGHUP (the signal would kill it). Needs root.
    Reload { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone().unwrap_or_else(|| api::default_socket(&cli.instance));
    if let Cmd::Capture(args) = &cli.cmd {
        return match capture(&socket, args, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uboxctl: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let req = match &cli.cmd {
        Cmd::Capture(_) => unreachable!("handled above"),
        Cmd::Stats => Request::Stats,
        Cmd::Ping => Request::Ping,
        Cmd::Nf(NfCmd::List) => Request::NfList,
        Cmd::Nf(NfCmd::Drain { target, timeout_ms }) => {
            let (name, instance) = match target.split_once('#') {
                None => (target.clone(), None),
                Some((n, i)) => match i.parse::<u32>() {
                    Ok(i) if i > 0 => (n.to_string(), Some(i)),
                    _ => {
                        eprintln!("uboxctl: bad instance in '{target}': write NAME or NAME#N (N = 1, 2, ...)");
                        return ExitCode::FAILURE;
                    }
                },
            };
            Request::NfDrain { name, instance, timeout_ms: Some(*timeout_ms) }
        }
        Cmd::Nf(NfCmd::Release { name, timeout_ms }) => {
            Request::NfRelease { name: name.clone(), timeout_ms: Some(*timeout_ms) }
        }
        Cmd::Nf(NfCmd::Reload { name }) => Request::NfReload { name: name.clone() },
        Cmd::Chain(ChainCmd::Show) => Request::ChainShow,
        Cmd::Chain(ChainCmd::Apply { file }) => match std::fs::read_to_string(file) {
            Ok(text) => Request::ChainApply { text, origin: file.display().to_string() },
            Err(e) => {
                eprintln!("uboxctl: cannot read {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        },
    };
    match api::call(&socket, &req, Duration::from_secs(5)) {
        Ok(Response::Error { message }) => {
            eprintln!("uboxctl: runtime refused: {message}");
            ExitCode::FAILURE
        }
        Ok(resp) if cli.json => {
            println!("{}", serde_json::to_string_pretty(&resp).expect("serialise"));
            ExitCode::SUCCESS
        }
        Ok(Response::Stats(st)) => {
            print!("{}", st.render());
            ExitCode::SUCCESS
        }
        Ok(Response::Pong { instance, pid }) => {
            println!("instance '{instance}' (pid {pid}) is up");
            ExitCode::SUCCESS
        }
        Ok(Response::Nfs { nfs }) => {
            let mut t = controller::table::Table::new(&[
                "id",
                "name",
                "version",
                "state",
                "pid",
                "user",
                "subscribes",
                "publishes",
                "events in",
                "events out",
            ]);
            for n in nfs {
                t.row(vec![
                    n.nf_id.to_string(),
                    n.name,
                    n.version,
                    n.state,
                    n.pid.map_or("-".into(), |p| p.to_string()),
                    n.uid.map_or("-".into(), user_name),
                    n.subscriptions.join(","),
                    n.publications.join(","),
                    n.events_in.to_string(),
                    n.events_out.to_string(),
                ]);
            }
            print!("{}", t.render());
            ExitCode::SUCCESS
        }
        Ok(Response::Chains { version, origin, chains }) => {
            if version == 0 {
                println!("no chains applied: every flow is forwarded without NFs");
            } else {
                println!("chains version {version} from {origin}:");
                for c in chains {
                    println!("  {c}");
                }
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Response::Registered(_) | Response::Exit { .. } | Response::Capture { .. }) => {
            eprintln!("uboxctl: unexpected answer from the runtime");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("uboxctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `name (uid)` of a user id, or the bare id when no user has it.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} ({uid})", u.name),
        _ => uid.to_string(),
    }
}

/// `uboxctl capture`: arm the capture, read its records until it ends,
/// write them to the pcapng file.
fn capture(socket: &std::path::Path, a: &CaptureArgs, json: bool) -> Result<(), String> {
    use controller::capture::{CaptureTarget, FlowMatch, PcapngOut};
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let target = match (&a.chain, &a.nf, &a.flow) {
        (Some(name), _, _) => CaptureTarget::Chain { name: name.clone() },
        (_, Some(name), _) => CaptureTarget::Nf { name: name.clone() },
        (_, _, Some(filter)) => {
            filter.parse::<FlowMatch>().map_err(|e| e.to_string())?;
            CaptureTarget::Flow { filter: filter.clone() }
        }
        _ => return Err("say what to capture: --chain NAME, --nf NAME or --flow FILTER".into()),
    };
    if !(a.timeout > 0.0 && a.timeout <= 3600.0) {
        return Err(format!("--timeout {}: between 0 and 3600 seconds", a.timeout));
    }
    let timeout = Duration::from_secs_f64(a.timeout);
    let call = |req: &Request| match api::call(socket, req, Duration::from_secs(5)) {
        Ok(Response::Error { message }) => Err(format!("runtime refused: {message}")),
        Ok(Response::Capture { id, snaplen, records, counts, ended }) => Ok((id, snaplen, records, counts, ended)),
        Ok(_) => Err("unexpected answer from the runtime".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let start = Request::CaptureStart {
        target: target.clone(),
        count: a.count,
        max_bytes: a.max_bytes,
        snaplen: a.snaplen,
        timeout_ms: timeout.as_millis() as u64,
    };
    let (id, snaplen, _, _, _) = call(&start)?;
    let file = std::fs::File::create(&a.out).map_err(|e| {
        let _ = call(&Request::CaptureStop { id });
        format!("cannot create {}: {e}", a.out.display())
    });
    let file = file?;
    let mut out = PcapngOut::new(std::io::BufWriter::new(file), snaplen, &target.to_string())
        .map_err(|e| format!("writing {}: {e}", a.out.display()))?;
    // Ctrl-C (or SIGTERM) ends the capture as an operator expects: the
    // runtime stops it and hands over what it holds, and the file is
    // complete. A second signal still kills at once (signal-hook's
    // conditional default).
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&interrupted))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&interrupted)))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    // The runtime ends it at the timeout; this is in case it cannot answer.
    let give_up = std::time::Instant::now() + timeout + Duration::from_secs(5);
    let mut written = 0u64;
    let (counts, ended) = loop {
        let req = if interrupted.load(Ordering::Relaxed) || std::time::Instant::now() > give_up {
            Request::CaptureStop { id }
        } else {
            Request::CaptureRead { id, max: 512 }
        };
        let (_, _, records, counts, ended) = call(&req)?;
        for r in records.iter().take(a.count.saturating_sub(written) as usize) {
            out.write(r).map_err(|e| format!("writing {}: {e}", a.out.display()))?;
            written += 1;
        }
        if let Some(why) = ended {
            break (counts, why);
        }
        if records.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    out.into_inner()
        .into_inner()
        .map_err(|e| e.to_string())
        .and_then(|mut f| f.flush().map_err(|e| e.to_string()))
        .map_err(|e| format!("writing {}: {e}", a.out.display()))?;
    if json {
        let v = serde_json::json!({
            "file": a.out.display().to_string(), "written": written, "ended": ended, "counts": counts,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialise"));
    } else {
        println!(
            "{written} packets written to {} ({target}; ended: {ended}); the runtime captured {}, {} truncated at {snaplen} bytes, {} dropped on a full queue",
            a.out.display(),
            counts.captured,
            counts.truncated,
            counts.dropped_full
        );
    }
    Ok(())
}
