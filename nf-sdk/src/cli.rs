//! `nf_sdk::cli` (feature `cli`): the command-line plumbing every NF
//! binary shares, so that each `main.rs` holds only what is its own.
//!
//! - [`Common`]: the flags every NF takes, to `#[command(flatten)]` into
//!   its clap `Args`: `--instance`, `--socket`, `--name` (default: the
//!   NF's own name), `--reconnect`, and `--add-instance` / `--takeover`
//!   (`--drain-timeout-ms`) to run next to instances of the name already
//!   running (see README, "Scaling NFs and releases").
//! - [`main`]: logging ([`init`]), parsing ([`parse`]), the NF's own
//!   `run`, and the exit status ([`Exit`], [`exit_code`]), with every
//!   error one line.
//! - [`connect`] and [`run`]: [`NfBuilder::connect`] and [`Nf::run`], or
//!   with `--reconnect` [`NfBuilder::connect_waiting`] and
//!   [`Nf::run_reconnecting`].
//! - [`write_json`] (and [`write_json_line`]): a report file, written atomically (a temporary file
//!   in the same directory, renamed over the old one).
//!
//! ```no_run
//! use clap::Parser;
//! use nf_sdk::cli::{self, Common, Exit};
//! use nf_sdk::{Event, Verdict};
//!
//! #[derive(Parser, Debug)]
//! #[command(version, about = "drop big TCP packets")]
//! struct Args {
//!     #[command(flatten)]
//!     common: Common,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     cli::main("drop-big", |args: Args| -> Result<(), Exit> {
//!         let builder = args.common.builder().subscribe("PKT/TCP", |ev: &Event<'_>| {
//!             if ev.packet().map_or(0, |p| p.len()) > 1400 { Verdict::Drop } else { Verdict::Pass }
//!         });
//!         let mut nf = cli::connect(builder, &args.common)?;
//!         tracing::info!("registered as NF {} on {}; Ctrl-C to stop", nf.id(), nf.socket().display());
//!         cli::run(&mut nf, &args.common)?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! # Exit status
//!
//! | status | when |
//! |---|---|
//! | 0 | stopped by SIGINT/SIGTERM (also while waiting for the runtime), `--help`, `--version`, a good `--check` |
//! | 1 | a failure a restart may mend: the runtime is not there or went away (without `--reconnect`), an output file cannot be written |
//! | 2 | a usage or configuration error a restart cannot mend ([`EXIT_CONFIG`]): a bad flag (clap's usage errors), a bad rules file or argument, the runtime refusing the registration (a bad name or type, the name taken), the control socket closed to this user |
//! | 128+N | a second SIGINT/SIGTERM (N) while the first was being handled |
//!
//! The units say `RestartPreventExitStatus=2`, so systemd restarts an NF
//! that failed (1) but not one whose configuration is wrong (2).
//!
//! # Logs
//!
//! [`init`] sends `tracing` to stderr as `NAME: message` lines, filtered
//! by `$UBOX_LOG` (default `info`); under systemd the lines carry
//! journald's `<N>` priority prefix instead (see the `ubox-log` crate).
//! An NF logs with `tracing::info!` and friends; its report (tables,
//! JSON) goes to stdout or files as before.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::{Nf, NfBuilder, NfError, RunSummary};

/// Exit status of a failure a restart may mend.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage or configuration error (clap's usage errors
/// exit with it too): a restart cannot mend it.
pub const EXIT_CONFIG: u8 = 2;

/// The flags every NF takes; `#[command(flatten)]` it into the NF's
/// `Args`, and parse those with [`parse`] (or [`main`]) so that `--name`
/// defaults to the NF's own name.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// Runtime instance (socket /run/ubox/<instance>.sock); default $UBOX_INSTANCE or `ubox`.
    #[arg(long)]
    pub instance: Option<String>,
    /// Control socket path; wins over --instance; default $UBOX_SOCKET.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// NF name to register under (the name chains refer to).
    #[arg(long, default_value = "nf")]
    pub name: String,
    /// Outlive the runtime: wait for it at start-up, and when it goes away
    /// (exits, restarts) wait and register again, keeping this NF's state.
    /// Without it the NF exits with status 1 when the runtime is not there.
    #[arg(long)]
    pub reconnect: bool,
    /// Run as one more instance of an NF whose name already runs: the
    /// runtime spreads new flows over the live instances, and a flow stays
    /// with the instance it started on for its whole life.
    #[arg(long, conflicts_with = "takeover")]
    pub add_instance: bool,
    /// Release: register next to the running instances of the name and
    /// take every new flow; they keep their flows until those end (at most
    /// --drain-timeout-ms), then are told to exit.
    #[arg(long)]
    pub takeover: bool,
    /// With --takeover: most milliseconds the old instances keep their flows.
    #[arg(long, default_value_t = controller::api::DEFAULT_DRAIN_MS, requires = "takeover")]
    pub drain_timeout_ms: u64,
}

impl Common {
    /// A builder named `--name`, aimed at `--instance` / `--socket`.
    pub fn builder(&self) -> NfBuilder {
        let join = if self.takeover {
            controller::api::Join::Takeover { drain_ms: self.drain_timeout_ms }
        } else if self.add_instance {
            controller::api::Join::Instance
        } else {
            controller::api::Join::Exclusive
        };
        Nf::builder(&self.name).target(self.instance.as_deref(), self.socket.as_deref()).join(join)
    }
}

/// Sets up logging for the NF `prog` (once): `prog: message` lines on
/// stderr, journald's priorities under systemd, `$UBOX_LOG` filters.
pub fn init(prog: &'static str) {
    ubox_log::init(ubox_log::Style::Prefixed(prog));
}

/// Parses the command line into `A`, with `--name` (of a flattened
/// [`Common`]) defaulting to `prog`. Exits like clap: 0 after `--help`
/// or `--version`, 2 ([`EXIT_CONFIG`]) with its message on a usage error.
pub fn parse<A: Parser>(prog: &'static str) -> A {
    parse_from(prog, std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] of the given arguments (the program's name first), the
/// error returned.
pub fn parse_from<A, I, T>(prog: &'static str, args: I) -> Result<A, clap::Error>
where
    A: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = A::command();
    if cmd.get_arguments().any(|a| a.get_id() == "name") {
        cmd = cmd.mut_arg("name", |a| a.default_value(prog));
    }
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    A::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// The whole `main` of an NF: [`init`], [`parse`], then `run`; its error
/// is logged (each line of it as one line) and sets the exit status
/// ([`Exit::code`]).
pub fn main<A: Parser>(prog: &'static str, run: impl FnOnce(A) -> Result<(), Exit>) -> ExitCode {
    init(prog);
    let args = parse::<A>(prog);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}

/// Registers: [`NfBuilder::connect_waiting`] with `--reconnect`, else
/// [`NfBuilder::connect`].
pub fn connect(builder: NfBuilder, common: &Common) -> Result<Nf, NfError> {
    if common.reconnect {
        builder.connect_waiting()
    } else {
        builder.connect()
    }
}

/// Runs until stopped: [`Nf::run_reconnecting`] with `--reconnect`, else
/// [`Nf::run`].
pub fn run(nf: &mut Nf, common: &Common) -> Result<RunSummary, NfError> {
    if common.reconnect {
        nf.run_reconnecting()
    } else {
        nf.run()
    }
}

/// The exit status for an SDK error: [`EXIT_CONFIG`] for what a restart
/// cannot mend (a refusal, a bad definition, a socket closed to this
/// user), 0 for a stop while waiting, [`EXIT_FAILURE`] otherwise.
pub fn exit_code(e: &NfError) -> u8 {
    match e {
        NfError::Refused { .. } | NfError::Definition(_) | NfError::PermissionDenied { .. } => EXIT_CONFIG,
        NfError::Stopped { .. } => 0,
        _ => EXIT_FAILURE,
    }
}

/// How an NF's `run` ends other than well; `?` makes one of an
/// [`NfError`] (status by [`exit_code`]) or an `anyhow::Error` (status 1).
#[derive(Debug)]
pub enum Exit {
    /// A usage or configuration error: status 2.
    Config(String),
    /// Any other failure: status 1.
    Failed(String),
    /// From the SDK: status by [`exit_code`].
    Nf(NfError),
    /// Already reported (e.g. a `--check` printed its findings): this
    /// status, nothing logged.
    Code(u8),
}

impl Exit {
    /// A configuration error (status 2) saying `e`.
    pub fn config(e: impl fmt::Display) -> Exit {
        Exit::Config(e.to_string())
    }

    /// The process's exit status.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Config(_) => EXIT_CONFIG,
            Exit::Failed(_) => EXIT_FAILURE,
            Exit::Nf(e) => exit_code(e),
            Exit::Code(c) => *c,
        }
    }

    /// Logs it: an error line per line of the message (nothing for
    /// [`Exit::Code`], one info line for a stop while waiting).
    pub fn report(&self) {
        match self {
            Exit::Code(_) => {}
            Exit::Nf(e @ NfError::Stopped { .. }) => tracing::info!("{e}"),
            e => {
                for line in e.to_string().lines() {
                    tracing::error!("{line}");
                }
            }
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Config(m) | Exit::Failed(m) => f.write_str(m),
            // NfError messages already say what and how to fix, source included.
            Exit::Nf(e) => write!(f, "{e}"),
            Exit::Code(c) => write!(f, "exit status {c}"),
        }
    }
}

impl From<NfError> for Exit {
    fn from(e: NfError) -> Exit {
        Exit::Nf(e)
    }
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Exit {
        Exit::Failed(format!("{e:#}"))
    }
}

/// Writes `value` as pretty JSON (and a newline) to `path` atomically: a
/// temporary file beside it, synced, then renamed over it, so that a
/// reader never sees half a report. A path that exists and is not a
/// regular file (`/dev/stdout`, a FIFO) is written in place.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("serialising the report")?;
    write_text(path, text)
}

/// [`write_json`] on one line (`{"flows":3,...}`), for reports whose
/// documented form is one line.
pub fn write_json_line<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string(value).context("serialising the report")?;
    write_text(path, text)
}

fn write_text(path: &Path, mut text: String) -> anyhow::Result<()> {
    text.push('\n');
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    let result = if special { std::fs::write(path, &text) } else { write_atomically(path, text.as_bytes()) };
    result.with_context(|| format!("writing {}", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name =
        path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[derive(Parser, Debug)]
    #[command(name = "t")]
    struct Args {
        #[arg(long)]
        rules: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    }

    #[test]
    fn name_defaults_to_the_program_and_flags_parse() {
        let a: Args = parse_from("counter", ["t"]).unwrap();
        assert_eq!(
            a.common,
            Common {
                instance: None,
                socket: None,
                name: "counter".into(),
                reconnect: false,
                add_instance: false,
                takeover: false,
                drain_timeout_ms: controller::api::DEFAULT_DRAIN_MS,
            }
        );
        let a: Args = parse_from("counter", ["t", "--takeover", "--drain-timeout-ms", "500"]).unwrap();
        assert!(a.common.takeover && a.common.drain_timeout_ms == 500);
        assert!(parse_from::<Args, _, _>("counter", ["t", "--takeover", "--add-instance"]).is_err());
        let a: Args =
            parse_from("counter", ["t", "--instance", "lab", "--name", "c2", "--reconnect", "--rules", "r"]).unwrap();
        assert_eq!(
            (a.common.instance.as_deref(), a.common.name.as_str(), a.common.reconnect),
            (Some("lab"), "c2", true)
        );
        assert_eq!(a.rules, Some(PathBuf::from("r")));
        let help = Args::command().mut_arg("name", |a| a.default_value("counter")).render_help().to_string();
        assert!(help.contains("--reconnect") && help.contains("[default: counter]"), "{help}");
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = parse_from::<Args, _, _>("counter", ["t", "--nope"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_CONFIG));
    }

    #[test]
    fn exit_codes() {
        let refused = NfError::Refused { name: "c".into(), message: "bad".into() };
        assert_eq!(exit_code(&refused), EXIT_CONFIG);
        assert_eq!(exit_code(&NfError::Definition("x".into())), EXIT_CONFIG);
        let denied = NfError::PermissionDenied { path: "/s".into(), hint: "no".into() };
        assert_eq!(exit_code(&denied), EXIT_CONFIG);
        assert_eq!(exit_code(&NfError::RuntimeGone { socket: "/s".into() }), EXIT_FAILURE);
        let connect = NfError::Connect { socket: "/s".into(), source: std::io::ErrorKind::NotFound.into() };
        assert_eq!(exit_code(&connect), EXIT_FAILURE);
        assert_eq!(exit_code(&NfError::Stopped { socket: "/s".into() }), 0);
        assert_eq!(Exit::config("bad rules").code(), 2);
        assert_eq!(Exit::from(anyhow::anyhow!("disk full")).code(), 1);
        assert_eq!(Exit::Code(1).code(), 1);
        assert_eq!(Exit::from(refused).code(), 2);
    }

    #[test]
    fn write_json_replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("nf-sdk-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        std::fs::write(&path, "old and longer than the new one").unwrap();
        write_json(&path, &serde_json::json!({"packets": 3})).unwrap();
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["packets"], 3);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("r.json")], "no temporary file left");
        let e = write_json(&dir.join("no/such/dir.json"), &1).unwrap_err();
        assert!(format!("{e:#}").contains("no/such/dir.json"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
