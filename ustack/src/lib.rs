//! `ustack`: the sans-IO protocol code of ubox.
//!
//! This crate owns everything ubox knows about packets, and nothing about how
//! they arrive: it never touches DPDK, shared memory, sockets, files or
//! clocks. Callers hand it byte slices and the current time; it hands back
//! views, verdicts and events. That split is what lets the same code run on a
//! poll-mode core, in a unit test, or driven by a pcap.
//!
//! Modules:
//!
//! - [`wire`]: zero-copy views over protocol headers (Ethernet, VLAN, ARP,
//!   IPv4, IPv6, ICMPv4, TCP, UDP) plus the Internet checksum. Every view has
//!   a `new_checked` constructor that validates lengths, so that no accessor
//!   can panic on any input bytes.
//! - [`l3`]: the per-frame fast path the runtime's worker calls once per
//!   received frame: parses L2/L3/L4 headers, answers ARP and ICMP echo
//!   requests for the box's own addresses in place, and classifies the rest
//!   into a [`l3::Verdict`] carrying the flow it belongs to.
//! - [`flow`]: direction-free flow keys with a symmetric hash, and the
//!   preallocated LRU flow table that emits `FLOW/START` and `FLOW/END`
//!   events.
//! - [`tcp`]: the TCP monitor μStack: twin client/server state machines seen
//!   from the middle, per-side bytestream reassembly into caller-provided
//!   rings (and the reader NFs use on them), events with 24-byte snapshots,
//!   and connection termination by RST.
//! - [`event`]: μEvent type ids: hierarchical paths (`FLOW/TCP/SYN`) packed
//!   into a `u64` so a subtype test is one mask-and-compare, the built-in
//!   types, and the registry of path names NFs declare.
//!
//! The crate contains no `unsafe` code.
//!
//! A worker's per-frame loop, in short:
//!
//! ```
//! use ustack::flow::{FlowEvent, FlowTable};
//! use ustack::l3::{process, LocalAddrs, Verdict};
//! use ustack::wire::EthernetAddress;
//!
//! let local = LocalAddrs {
//!     mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
//!     ipv4: vec!["192.168.1.1".parse().unwrap()],
//!     ipv6: vec![],
//! };
//! let mut flows = FlowTable::new(1024, 30_000_000_000);
//! let mut frame = vec![0u8; 60]; // from the NIC
//! let now = 0; // from the caller's clock
//! match process(&mut frame, &local) {
//!     Verdict::Forward { flow: Some(fp) } => {
//!         let len = fp.ip_payload_len.into();
//!         let (_id, _side) = flows.touch(&fp.key, fp.dir, len, now, &mut |ev: FlowEvent| {
//!             // publish FLOW/START or FLOW/END
//!             let _ = ev;
//!         });
//!     }
//!     Verdict::Forward { flow: None } => { /* non-IP: forward as is */ }
//!     Verdict::Reply => { /* send `frame` back out of the same port */ }
//!     Verdict::Consume => { /* free it */ }
//!     Verdict::Drop(reason) => { let _ = reason.index(); /* count and free */ }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod event;
pub mod flow;
pub mod fuzz;
pub mod l3;
pub mod splice;
pub mod tcp;
pub mod wire;
