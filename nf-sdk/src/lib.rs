//! `nf-sdk`: what a ubox network function (NF) is written against.
//!
//! An NF is an ordinary Rust binary, a separate process from
//! `ubox-runtime`. It registers with the runtime over the control socket
//! (`/run/ubox/<instance>.sock`), sending a manifest: its name, the μEvent
//! types it subscribes to (`PKT/TCP`, `FLOW/START`, `DATA_RDY/CLIENT`, ...),
//! what it publishes and whether it modifies packets. The runtime answers
//! with the arena to map and one pair of rings per worker. From then on the
//! NF polls: each event arrives as a slot index, the SDK calls the callback
//! of the subscription that covers the event's type with a borrowed
//! [`Event`] (header fields plus zero-copy packet bytes), and hands the
//! callback's [`Verdict`] back. No syscalls on the data path, no DPDK, and
//! no `unsafe` in the SDK or in NFs.
//!
//! An NF needs no privilege: it connects to the control socket, mode 0660
//! for the runtime's group (`runtime.group`, default `ubox`), maps the
//! part of the arena the runtime hands it there, and moves its poll thread onto the CPUs the runtime
//! offers NFs (its own affinity, which any process may narrow). Run it as
//! any user in that group; outside it, [`NfBuilder::connect`] fails with
//! [`NfError::PermissionDenied`], one line naming the group and how to
//! join it. No mlock, no hugepage reservation, no capability.
//!
//! # Entry points
//!
//! | step | call |
//! |------|------|
//! | describe | [`Nf::builder`] → [`NfBuilder::subscribe`], [`publishes`](NfBuilder::publishes), [`declares`](NfBuilder::declares), [`modifies_packets`](NfBuilder::modifies_packets), [`instance`](NfBuilder::instance) / [`socket`](NfBuilder::socket) |
//! | register | [`NfBuilder::connect`] → [`Nf`] |
//! | run | [`Nf::run`] → [`RunSummary`]; [`Nf::run_reconnecting`] outlives the runtime (registers again when it comes back, [`NfBuilder::on_reregister`]) |
//! | stop | SIGINT / SIGTERM, or [`Nf::stop_handle`] → [`StopHandle::stop`]; drop the [`Nf`] to leave |
//! | test | [`testing::FakeRuntime`] plays the runtime without DPDK |
//! | command line | `cli` (feature `cli`): the flags every NF binary takes (`--instance`, `--socket`, `--name`, `--reconnect`), logging, exit status, report files |
//!
//! # Example
//!
//! Count TCP packets and bytes, pass everything:
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use nf_sdk::{Event, Nf, NfError, Verdict};
//!
//! fn main() -> Result<(), NfError> {
//!     let bytes = Arc::new(AtomicU64::new(0));
//!     let seen = Arc::clone(&bytes);
//!     let mut nf = Nf::builder("tcp-count")
//!         .version("1.0")
//!         .subscribe("PKT/TCP", move |ev: &Event| {
//!             let len = ev.packet().map_or(0, |p| p.len());
//!             seen.fetch_add(len as u64, Ordering::Relaxed);
//!             Verdict::Pass
//!         })
//!         .connect()?; // instance from $UBOX_INSTANCE / $UBOX_SOCKET, else `ubox`
//!     let summary = nf.run()?; // until Ctrl-C
//!     println!("{} TCP packets, {} bytes", summary.events, bytes.load(Ordering::Relaxed));
//!     Ok(())
//! }
//! ```
//!
//! # Dispatch
//!
//! A subscription to `X` receives `X` and every subtype of `X` (a `PKT`
//! subscriber gets `PKT/TCP`). When several of an NF's subscriptions cover
//! an event, the most specific one (deepest path) gets it, so `PKT/TCP`
//! next to `PKT` means "TCP here, everything else there". Subscribing to one
//! path twice is refused. A flow filter ([`NfBuilder::subscribe_filtered`]:
//! protocol, ports, address prefixes) narrows a subscription: the runtime
//! does not even send events of other flows (they skip this NF, counted as
//! nothing).
//!
//! # Publishing events
//!
//! An NF declares its own types under existing ones
//! ([`NfBuilder::declares`]`("FLOW/ACL_DENY")`), lists what it publishes
//! ([`NfBuilder::publishes`]) and, inside a callback, publishes with
//! [`Event::publish`] or [`Event::publish_value`] (a `#[repr(C)]` payload
//! deriving [`bytemuck::Pod`]). The event concerns the same flow and side;
//! the runtime checks the type against the manifest (counted `bad_publish`
//! otherwise) and copies it to every other live NF subscribed to it or a
//! supertype, which reads the payload with [`Event::payload_as`]. An NF that
//! subscribes to another NF's type must register after it (the type exists
//! once declared).
//!
//! ```no_run
//! use nf_sdk::bytemuck::{Pod, Zeroable};
//! use nf_sdk::{Event, Nf, Verdict};
//!
//! #[derive(Clone, Copy, Pod, Zeroable)]
//! #[bytemuck(crate = "nf_sdk::bytemuck")]
//! #[repr(C)]
//! struct Big { len: u32 }
//!
//! let nf = Nf::builder("big-spotter")
//!     .declares("FLOW/BIG_PACKET")
//!     .publishes("FLOW/BIG_PACKET")
//!     .subscribe("PKT/TCP", |ev: &Event| {
//!         let len = ev.packet().map_or(0, |p| p.len());
//!         if len > 1400 {
//!             let _ = ev.publish_value("FLOW/BIG_PACKET", &Big { len: len as u32 });
//!         }
//!         Verdict::Pass
//!     });
//! # drop(nf);
//! ```
//!
//! # Polling policy
//!
//! [`Nf::run`] is a poll loop sized for NFs that share a couple of cores
//! with the runtime:
//!
//! 1. while events arrive it spins (`std::hint::spin_loop`) between polls;
//! 2. after 1024 empty polls it calls `std::thread::yield_now` for 64 polls;
//! 3. then it sleeps until a worker pushes events: it arms the doorbell of
//!    its first channel (a futex word in the arena), looks at its rings once
//!    more, and blocks; a worker that pushes to an armed NF wakes it
//!    (`runtime.nf_wakeup = "futex"`, the default). With
//!    `runtime.nf_wakeup = "poll"` it sleeps instead, 16 µs first, doubling
//!    up to 1 ms, and workers never make a system call.
//!
//! Any event resets it to spinning. An idle NF so costs nothing (futex) or
//! one wake-up per millisecond (poll); with `poll` a busy one adds up to
//! ~1 ms of latency to the first event after a quiet spell. It takes up to
//! 256 events per channel at once, so an NF that fell behind catches up in
//! a few bursts. After every non-empty burst it yields the
//! core once (NFs of one chain often share a core; alone on it, the yield
//! returns at once), and `run` first moves its thread onto the CPUs the
//! runtime offers NFs (`runtime.nf_cpus`, by default those its poll-mode
//! workers do not use; [`NfBuilder::pin_to_nf_cpus`] turns this off). Every ~100 ms (and while waiting for room on
//! a full `from_nf` ring) it checks, with a non-blocking read, that the
//! control connection is open; if it closed, `run` returns
//! [`NfError::RuntimeGone`], and [`Nf::run_reconnecting`] instead logs
//! it once, waits for the runtime (an attempt every 50 ms, backing off to
//! every second), registers again with the same manifest and goes on.
//!
//! The SDK logs through `tracing` (a warning when it cannot pin, the
//! runtime going and coming back); install a subscriber to see them
//! (`cli::init` does).
//!
//! # Contract
//!
//! - **Read-only unless declared.** [`Event::packet`] gives `&[u8]`. Only an
//!   NF with `modifies_packets(true)` may rewrite bytes in place with
//!   [`Event::write_packet`] (same length; `nfs/rewrite` is an example) and
//!   answer [`Verdict::Modified`]: the runtime then refreshes the IPv4 and
//!   TCP/UDP checksums. Such an NF is run in order, never in a parallel
//!   group; a Modified answer from an NF that did not declare it counts as
//!   Pass (`bad_verdict`).
//! - **The runtime owns slots and packets.** An NF maps only what the
//!   runtime grants it at registration: the slot pool and (unless it
//!   declared `modifies_packets`) the packet region read-only, and its own
//!   channels read-write; other NFs' channels are not in its address space.
//!   The SDK neither allocates nor frees slots: it publishes an event by
//!   writing it into its channel's publish area (the worker copies it
//!   out), and answers every event it popped on the same worker's answer
//!   ring, waiting while that ring is full, never dropping one. The
//!   process makes itself non-dumpable when it connects, so other NFs of
//!   the same user cannot read or write its memory (`/proc/PID/mem`,
//!   ptrace); only root can. A callback must not keep packet bytes past its return
//!   (the borrow ends there).
//! - **Callbacks are short.** They run on the polling thread; the event's
//!   packet is parked in the runtime until they answer.
//! - **Stopping.** On SIGINT/SIGTERM or [`StopHandle::stop`], `run` answers
//!   the events already popped and returns; a second signal exits the
//!   process. Dropping the [`Nf`] closes the control connection, which the
//!   runtime takes as the NF leaving.

#[cfg(feature = "cli")]
pub mod cli;
mod error;
mod event;
mod nf;
pub mod testing;

pub use bytemuck;
pub use error::NfError;
pub use event::{Event, EventError, StreamData, MAX_PUBLISH_PER_EVENT};
pub use nf::{Nf, NfBuilder, RunSummary, StopHandle, DEFAULT_INSTANCE, ENV_INSTANCE, ENV_SOCKET};
pub use ubox_shm::event::{
    FlowDest, FlowEnd, FlowReq, FlowStart, DEST_503, DEST_CONNECT, DEST_RESET, FLOW_REQ_NEW, FLOW_REQ_RESET,
    FLOW_REQ_TIMEOUT,
};
pub use ustack::tcp::{ReadError, TcpSnapshot, TcpState};

pub use controller::registry::FlowFilter;
pub use ustack::event::EventTypeId;
pub use ustack::flow::{Direction, FlowKey, Side};

/// An NF's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet continue along the chain unchanged.
    Pass,
    /// Drop the packet; the runtime counts it under this NF's name.
    Drop,
    /// The NF rewrote the packet in place (allowed only when its manifest
    /// declares that it modifies packets).
    Modified,
}

#[cfg(test)]
mod tests {
    #[test]
    fn verdicts_are_distinct() {
        use super::Verdict::*;
        assert_ne!(Pass, Drop);
        assert_ne!(Drop, Modified);
    }
}
