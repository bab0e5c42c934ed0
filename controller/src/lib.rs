//! The ubox controller: the control-plane API the runtime serves and
//! `uboxctl` speaks.
//!
//! Today this crate owns the wire format of the control socket ([`api`]):
//! newline-delimited JSON requests and responses over a Unix socket, and the
//! statistics the runtime reports. The NF registry, wiring type checks and
//! chain compilation come with the μEvent work and will live here too; this
//! crate never touches DPDK or the data path.

pub mod api;
pub mod table;
