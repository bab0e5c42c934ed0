//! Shared-memory layout of ubox: the arena file, SPSC rings and the event slot
//! pool, used alike by the runtime (a DPDK process) and NF processes (which
//! never link DPDK). Nothing here depends on DPDK.
//!
//! # Layout
//!
//! One arena file per runtime instance (`/dev/hugepages/ubox-<instance>.arena`,
//! or `/dev/shm` as a fallback, see [`default_path`]), mapped by every process:
//!
//! ```text
//! offset 0     ┌──────────────────────────────┐
//!              │ ArenaHeader (256 B)          │ magic "UBOXARNA", layout version,
//!              │                              │ state, owner pid, sizes, instance,
//!              │                              │ config, region table
//! 256          ├──────────────────────────────┤
//!              │ PoolHeader (3 cache lines)   │ free-list head (tag|index),
//!              │                              │ free count, double releases
//!              │ slot 0: SlotHeader | payload │ refcount, generation, next
//!              │ slot 1: …  (stride 64·k B)   │
//!              ├──────────────────────────────┤ 64 B aligned
//!              │ ring 0: prod line | cons line│ free-running u32 indices
//!              │         entries [u32; cap]   │
//!              │ ring 1: …                    │
//!              ├──────────────────────────────┤ 2 MiB aligned
//!              │ data region (packet buffers) │ reserved for the runtime's
//!              │                              │ mbuf pool (rte_extmem_register)
//! total_size   └──────────────────────────────┘ multiple of the page size
//! ```
//!
//! # Rules
//!
//! * **Offsets, never pointers.** Each process maps the arena at a different
//!   address. Nothing stored in the arena may be a pointer, a reference, a
//!   `Box`, a `Vec`, a `&str` or anything else holding an address; links are
//!   slot indices or byte offsets from the arena base.
//! * **Roles.** The runtime [`Arena::create`]s the file (mode 0600) and removes
//!   it when its `Arena` drops; NF processes [`Arena::attach`], which checks
//!   magic, version and sizes. Each ring has exactly one producer and one
//!   consumer ([`RingRef`]). A slot's payload is written only by the holder of
//!   its only reference; everyone else who holds a reference reads
//!   ([`SlotPool`]).
//! * **Shared words are atomics.** Every field another process may change
//!   concurrently is an atomic; every index read from the arena is bounds
//!   checked, so a misbehaving peer can cause wrong values but not undefined
//!   behaviour in this process (payload bytes excepted: see the slot pool's
//!   aliasing contract).
//! * **Unsafe code** lives in one private module that turns `(base, offset)`
//!   into references after bounds and alignment checks.
//!
//! # Example
//!
//! ```
//! use ubox_shm::{Arena, ArenaConfig};
//! let path = std::env::temp_dir().join(format!("ubox-doc-{}.arena", std::process::id()));
//! let runtime = Arena::create(&path, &ArenaConfig::new("doc")).unwrap();
//! let nf = Arena::attach(&path).unwrap();
//!
//! let mut pool = runtime.slot_pool().unwrap();
//! let slot = pool.alloc().unwrap();
//! pool.payload_mut(slot).unwrap()[..5].copy_from_slice(b"hello");
//! runtime.ring(0).unwrap().push(slot.0).unwrap(); // the runtime gives up its reference
//!
//! let nf_pool = nf.slot_pool().unwrap();
//! let got = ubox_shm::SlotIdx(nf.ring(0).unwrap().pop().unwrap());
//! assert_eq!(&nf_pool.payload(got).unwrap()[..5], b"hello");
//! assert!(nf_pool.release(got).unwrap()); // back on the free list
//! ```

mod arena;
pub mod event;
mod layout;
mod raw;
mod ring;
mod slots;

pub use arena::{default_path, Arena, ArenaConfig, ArenaLocation, Error, Result};
pub use layout::{Region, LAYOUT_VERSION, MAGIC};
pub use ring::{Full, RingRef};
pub use slots::{SlotError, SlotIdx, SlotPool};
