//! The ubox controller: the control-plane API the runtime serves and
//! `uboxctl` speaks.
//!
//! This crate owns:
//!
//! - [`api`]: the wire format of the control socket, newline-delimited JSON
//!   requests and responses over a Unix socket, and the statistics the
//!   runtime reports.
//! - [`registry`]: NF manifests, flow filters, the registry of NFs and the
//!   event types they declare, and the wiring type check (a published type
//!   must equal or be a subtype of the subscribed type).
//! - [`chain`]: chain files (TOML), their validation, and compilation into
//!   ordered stages with per-NF fail-open/fail-closed policy.
//! - [`capture`]: capture on demand (`uboxctl capture`): targets, the
//!   `--flow` filter syntax, records, and the pcapng file they make.
//! - [`metrics`]: the statistics in the Prometheus text format (what the
//!   runtime serves at `/metrics`).
//!
//! This crate never touches DPDK or the data path.

pub mod api;
pub mod capture;
pub mod chain;
pub mod metrics;
pub mod registry;
pub mod table;
