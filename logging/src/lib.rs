//! `ubox-log`: where the logs of `ubox-runtime` and of the NFs go.
//!
//! Everything logs through `tracing`; [`init`] installs the one
//! subscriber, writing to stderr, filtered by `$UBOX_LOG` (an
//! `EnvFilter` directive such as `debug` or `warn`; default `info`).
//!
//! Under systemd (stderr is the journal stream named by
//! `$JOURNAL_STREAM`) each line starts with its syslog priority, `<3>`
//! for errors, `<4>` warnings, `<6>` info and `<7>` debug and trace, which
//! journald takes as the entry's priority (`SyslogLevelPrefix=`, on by
//! default) and strips; no timestamp (the journal has its own) and no
//! colours. `journalctl -p warning -u ubox-runtime` then shows the
//! warnings and errors only. We chose this over the `tracing-journald`
//! crate: no extra dependency and no second socket, the same lines as on
//! a terminal, and a child whose stderr is redirected elsewhere (a
//! pipe, a file) gets no prefix, because only a stderr that *is* the
//! journal stream (same device and inode) counts.
//!
//! This crate owns the format of log lines only; what is logged is each
//! caller's.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter.
pub const ENV_FILTER: &str = "UBOX_LOG";

/// How lines look outside the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// tracing's default: time, level, message (the runtime's log).
    Timestamped,
    /// `PROGRAM: message`, as an NF's messages read on a terminal.
    Prefixed(&'static str),
}

/// The syslog priority journald reads from a `<N>` prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Whether `journal_stream` (the value of `$JOURNAL_STREAM`,
/// `DEVICE:INODE`) names the file `dev`/`ino`.
pub fn is_journal_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.split_once(':') else {
        return false;
    };
    d.trim().parse::<u64>() == Ok(dev) && i.trim().parse::<u64>() == Ok(ino)
}

/// Whether this process's stderr is the journal stream systemd gave it.
pub fn stderr_is_journal() -> bool {
    let Some(js) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(js) = js.to_str() else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => is_journal_stream(js, m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Writes one line to stderr, as is on a terminal, `<3>`-prefixed (an
/// error) in the journal: for a program's last words, written before or
/// instead of a subscriber's lines (a usage or config error).
pub fn error_line(line: &str) {
    use std::io::Write;
    let text = if stderr_is_journal() { format!("<3>{line}\n") } else { format!("{line}\n") };
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Lines for the journal (`<N>message`) or in the [`Style::Prefixed`]
/// manner (`PROGRAM: message`).
#[derive(Clone, Copy, Debug)]
pub struct Line {
    journal: bool,
    prefix: Option<&'static str>,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if self.journal {
            write!(w, "<{}>", priority(*event.metadata().level()))?;
        } else if let Some(p) = self.prefix {
            write!(w, "{p}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the subscriber (once; later calls do nothing): stderr,
/// `$UBOX_LOG` or `info`, lines as [`Style`] says or, under systemd, as
/// journald wants them.
pub fn init(style: Style) {
    let filter = || EnvFilter::try_from_env(ENV_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_writer(std::io::stderr);
    let _ = match (journal, style) {
        (false, Style::Timestamped) => builder.with_target(false).with_ansi(std::io::stderr().is_terminal()).try_init(),
        (_, style) => {
            let prefix = match style {
                Style::Prefixed(p) => Some(p),
                Style::Timestamped => None,
            };
            builder.with_ansi(false).event_format(Line { journal, prefix }).try_init()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(is_journal_stream("8:12345", 8, 12345));
        assert!(!is_journal_stream("8:12345", 8, 12346));
        assert!(!is_journal_stream("8:12345", 9, 12345));
        assert!(!is_journal_stream("", 8, 12345));
        assert!(!is_journal_stream("8", 8, 12345));
        assert!(!is_journal_stream("x:y", 8, 12345));
    }

    /// What the formatter writes, through a real subscriber.
    fn render(journal: bool, prefix: Option<&'static str>, f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || buf.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .event_format(Line { journal, prefix })
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn journal_lines_carry_the_priority_and_nothing_else() {
        let out = render(true, Some("counter"), || {
            tracing::error!("cannot connect");
            tracing::warn!("runtime went away");
            tracing::info!(n = 3, "registered");
            tracing::debug!("detail");
        });
        assert_eq!(out, "<3>cannot connect\n<4>runtime went away\n<6>registered n=3\n<7>detail\n");
    }

    #[test]
    fn terminal_lines_read_as_the_nf_printed_them() {
        let out = render(false, Some("counter"), || tracing::info!("registered as NF 1"));
        assert_eq!(out, "counter: registered as NF 1\n");
    }
}
