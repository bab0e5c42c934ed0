//! Shared-memory layout of ubox: the arena file, the channels (SPSC rings of
//! event descriptors and answers) and the event slot pool, used alike by the
//! runtime (a DPDK process) and NF processes (which never link DPDK).
//! Nothing here depends on DPDK.
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
//!              │ channel 0:                   │ one per NF slot and worker
//!              │  descriptor ring             │ prod line | cons line | bell
//!              │   [Desc; cap] (32 B each)    │ line, free-running u32 indices
//!              │  answer ring                 │ same header
//!              │   [Answer; 2·cap] (8 B each) │
//!              │ channel 1: …                 │
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
//! * **Roles.** The runtime [`Arena::create`]s the file (mode 0600, or 0660
//!   for its NF group with [`Arena::create_for_group`]) and removes it when
//!   its `Arena` drops; NF processes [`Arena::attach`], which checks
//!   magic, version and sizes. Each ring has exactly one producer and one
//!   consumer ([`Producer`], [`Consumer`]). A slot's payload is written only
//!   by the holder of its only reference; everyone else who holds a
//!   reference reads ([`SlotPool`]).
//! * **Per burst.** A packet event is one 32-byte descriptor; its answer is
//!   8 bytes. Ring handles cache the other side's index and publish their
//!   own once per burst, so a burst of `n` events moves about
//!   `n · (32 + 8) / 64` entry lines plus a handful of index lines between
//!   the cores (see [`ring`](crate::ring)).
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
//! use ubox_shm::event::{Answer, Desc, VERDICT_PASS};
//! use ubox_shm::{Arena, ArenaConfig};
//! let path = std::env::temp_dir().join(format!("ubox-doc-{}.arena", std::process::id()));
//! let runtime = Arena::create(&path, &ArenaConfig::new("doc")).unwrap();
//! let nf = Arena::attach(&path).unwrap();
//!
//! // The runtime's worker sends one event on channel 0 ...
//! let mut to_nf = runtime.channel(0).unwrap().desc.producer();
//! assert_eq!(to_nf.push_burst(&[Desc { type_id: 1, flow_id: 7, cookie: 42, ..Desc::default() }]), 1);
//!
//! // ... the NF takes it and answers with the cookie ...
//! let ch = nf.channel(0).unwrap();
//! let mut events = [Desc::default(); 32];
//! let n = ch.desc.consumer().pop_burst(&mut events);
//! assert_eq!((n, events[0].flow_id), (1, 7));
//! ch.answer.producer().push(Answer::verdict(events[0].cookie, VERDICT_PASS));
//!
//! // ... and the worker reads the verdict.
//! let a = runtime.channel(0).unwrap().answer.consumer().pop().unwrap();
//! assert_eq!((a.cookie(), a.code()), (42, VERDICT_PASS));
//! ```

mod arena;
pub mod event;
mod layout;
mod raw;
pub mod ring;
mod slots;

pub use arena::{default_path, Arena, ArenaConfig, ArenaLocation, Channel, Error, Result};
pub use layout::{Region, LAYOUT_VERSION, MAGIC};
pub use ring::{Bell, Consumer, ConsumerReport, Producer, RingView};
pub use slots::{SlotError, SlotIdx, SlotPool};
