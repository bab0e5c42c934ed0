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
/// the NFs see and needs root (e.g. sudo uboxctl chain apply FILE).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone().unwrap_or_else(|| api::default_socket(&cli.instance));
    let req = match &cli.cmd {
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
        Ok(Response::Registered(_) | Response::Exit { .. }) => {
            eprintln!("uboxctl: unexpected answer (registration) from the runtime");
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
