//! Shared-memory layout of ubox: the arena, the channels (SPSC rings of
//! event descriptors and answers) and the event slot pool, used alike by the
//! runtime (a DPDK process) and NF processes (which never link DPDK).
//! Nothing here depends on DPDK.
//!
//! # Layout
//!
//! One range of addresses per process, the same offsets everywhere, backed
//! by several files so that each process maps each part with the rights it
//! needs (the arena file is `/dev/hugepages/ubox-<instance>.arena`, or
//! `/dev/shm` as a fallback, see [`default_path`]; the rest are memfds):
//!
//! ```text
//! offset 0     ┌──────────────────────────────┐ the arena file (mode 0600):
//!              │ ArenaHeader (256 B)          │ magic "UBOXARNA", layout version,
//!              │                              │ state, owner pid, sizes, instance,
//!              │                              │ config, region table
//! 256          ├──────────────────────────────┤
//!              │ PoolHeader (3 cache lines)   │ free-list head (tag|index),
//!              │                              │ free count, double releases
//!              │ slot 0: SlotHeader | payload │ refcount, generation, next
//!              │ slot 1: …  (stride 64·k B)   │ NFs: read-only
//!              ├──────────────────────────────┤ 2 MiB aligned
//!              │ channel 0: its own memfd     │ one per NF slot and worker
//!              │  descriptor ring             │ prod line | cons line | bell
//!              │   [Desc; cap] (32 B each)    │ line, free-running u32 indices
//!              │  answer ring                 │ same header
//!              │   [Answer; 2·cap] (8 B each) │
//!              │  publish area                │ copied-out count, 32 records
//!              │ channel 1: …  (4 KiB pages)  │ NFs: their own read-write,
//!              │                              │ others' not mapped at all
//!              ├──────────────────────────────┤ 2 MiB aligned
//!              │ data region: its own memfd   │ the runtime's mbuf buffers
//!              │ (2 MiB pages on hugetlbfs)   │ (rte_extmem_register); NFs:
//!              │                              │ read-only unless they modify
//!              └──────────────────────────────┘ packets
//! ```
//!
//! # Rules
//!
//! * **Offsets, never pointers.** Each process maps the arena at a different
//!   address. Nothing stored in the arena may be a pointer, a reference, a
//!   `Box`, a `Vec`, a `&str` or anything else holding an address; links are
//!   slot indices or byte offsets from the arena base.
//! * **Roles.** The runtime [`Arena::create`]s the arena and removes the
//!   file when its `Arena` drops. An NF process gets a [`Grant`] (the
//!   descriptors, over the control socket with `SCM_RIGHTS`, see
//!   [`pass`]) and [`Arena::attach`]es it, which checks magic, version
//!   and sizes. The kernel enforces the rights: read-only descriptors
//!   cannot be mapped writable, and the memfds are sealed against resizing.
//!   Each ring has exactly one producer and one consumer ([`Producer`],
//!   [`Consumer`]). Slots are the runtime's: it allocates, writes and frees
//!   them, NFs read the ones they were given ([`SlotPool`]) and publish in
//!   their channel's [`PublishArea`].
//! * **Fresh memory per NF.** [`Arena::renew_channels`] gives a slot's
//!   channels new memfds at each registration, so nothing a dead NF left
//!   (or still writes, through a mapping a child of it kept) reaches the
//!   next one.
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
//! // What an NF granted channel 0 (packets read-only) maps; the runtime sends
//! // these descriptors over its control socket.
//! let nf = Arena::attach(runtime.grant(&[0], false).unwrap(), &path).unwrap();
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
pub mod pass;
pub mod publish;
mod raw;
pub mod ring;
mod slots;

pub use arena::{default_path, Arena, ArenaConfig, ArenaLocation, Channel, Error, Grant, Result};
pub use layout::{Region, LAYOUT_VERSION, MAGIC};
pub use publish::{PubReader, PubWriter, PublishArea};
pub use ring::{Bell, Consumer, ConsumerReport, Producer, RingView};
pub use slots::{SlotError, SlotIdx, SlotPool};
