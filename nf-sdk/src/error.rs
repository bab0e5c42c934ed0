//! [`NfError`]: everything that can stop an NF from connecting or running.
//!
//! Each message is one line that names the thing (socket, arena, ring) and,
//! where there is one, the fix.

use std::io;
use std::path::PathBuf;

/// Why an NF could not connect, register or keep running.
#[derive(Debug, thiserror::Error)]
pub enum NfError {
    /// The builder was given something the runtime would refuse anyway.
    #[error("bad NF definition: {0}")]
    Definition(String),
    /// Nobody listens on the control socket.
    #[error("cannot connect to {}: {source} (is ubox-runtime running? set UBOX_INSTANCE or UBOX_SOCKET)", socket.display())]
    Connect {
        /// The socket that was tried.
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The control socket, or the arena, is closed to this user: `hint`
    /// says which group it is open to and how to join it (or that it is
    /// root's only), as [`controller::api::permission_denied`] words it.
    #[error("{hint}")]
    PermissionDenied {
        /// The socket or arena file.
        path: PathBuf,
        /// One line: what was refused, why, and the fix.
        hint: String,
    },
    /// Reading or writing the control socket failed during registration.
    #[error("control socket {}: {what}: {source}", socket.display())]
    Control {
        /// The socket.
        socket: PathBuf,
        /// What was being done (`sending the manifest`, ...).
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The runtime answered something this SDK does not understand.
    #[error("control socket {}: {what} (is the NF built against the runtime's version of nf-sdk?)", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// The runtime refused the registration; `message` is its reason.
    #[error("the runtime refused to register NF '{name}': {message}")]
    Refused {
        /// The NF name.
        name: String,
        /// The runtime's message.
        message: String,
    },
    /// The arena the runtime named could not be mapped.
    #[error("cannot attach the arena the runtime named: {0}")]
    Arena(#[from] ubox_shm::Error),
    /// The session names a ring the arena does not have, or similar.
    #[error("the runtime's session is inconsistent with its arena {}: {what}", arena.display())]
    Session {
        /// The arena file.
        arena: PathBuf,
        /// What does not fit.
        what: String,
    },
    /// The control connection closed while the NF ran: the runtime exited,
    /// crashed or dropped this NF.
    #[error("the runtime at {} went away (control connection closed); restart the NF once ubox-runtime runs again", socket.display())]
    RuntimeGone {
        /// The socket the NF was registered on.
        socket: PathBuf,
    },
    /// SIGINT/SIGTERM (or a [`StopHandle`](crate::StopHandle)) came while
    /// the NF waited for the runtime ([`NfBuilder::connect_waiting`](crate::NfBuilder::connect_waiting),
    /// [`Nf::reconnect`](crate::Nf::reconnect)): not a failure.
    #[error("stopped while waiting for the runtime at {}", socket.display())]
    Stopped {
        /// The socket waited for.
        socket: PathBuf,
    },
    /// Installing the SIGINT/SIGTERM handlers failed.
    #[error("cannot install SIGINT/SIGTERM handlers: {0}")]
    Signals(#[source] io::Error),
}
