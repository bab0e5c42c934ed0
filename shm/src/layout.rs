//! Byte layout of the arena: the `#[repr(C)]` types placed in shared memory and
//! the arithmetic that places them.
//!
//! This module owns every offset and size in the arena and nothing else: it
//! never touches the mapping. The runtime and NF processes compute the same
//! [`Layout`] from the same [`ArenaConfig`](crate::ArenaConfig), and `attach`
//! rejects a header whose region table disagrees with that computation.
//!
//! Rules for anything placed here: `#[repr(C)]`, sizes checked by const
//! assertions, plain integers or atomics only, valid for every bit pattern
//! (a peer may write anything), and **no pointers or references**: every
//! process maps the arena at a different address, so links are offsets or
//! indices.

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `b"UBOXARNA"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"UBOXARNA");
/// Bumped on every incompatible change of anything in this module.
pub const LAYOUT_VERSION: u32 = 3;
/// Length of the fixed instance-name field of the header.
pub const INSTANCE_LEN: usize = 32;
/// Cache line size assumed for padding (x86-64 and most arm64 parts).
pub const CACHE_LINE: usize = 64;
/// Alignment and size granule of the data region (one 2 MiB hugepage).
pub const DATA_ALIGN: u64 = 2 << 20;
/// "No slot" in the free list links and the free-list head.
pub const NIL: u32 = u32::MAX;
/// Largest slot count: indices must stay below [`NIL`].
pub const MAX_SLOTS: u32 = 1 << 30;
/// Largest channel capacity (descriptors per ring; the answer ring holds
/// twice as many); free-running `u32` indices need `capacity <= 2^30`.
pub const MAX_CHANNEL_CAPACITY: u32 = 1 << 24;
/// Largest number of channels.
pub const MAX_CHANNELS: u32 = 1 << 16;
/// Words of one descriptor ([`crate::event::Desc`]).
pub const DESC_WORDS: usize = 4;
/// Words of one answer ([`crate::event::Answer`]).
pub const ANSWER_WORDS: usize = 1;
/// Largest payload per slot.
pub const MAX_SLOT_SIZE: u32 = 1 << 20;
/// Records in each channel's publish area (events an NF publishes wait
/// there until the worker copies them out).
pub const PUB_RECORDS: u32 = 32;
/// Alignment and size granule of one channel: each is its own file (a
/// memfd of 4 KiB pages) mapped into the arena's address range.
pub const CHANNEL_ALIGN: u64 = 4096;

/// Header state while the creator is still initialising the regions.
pub const STATE_INIT: u32 = 0;
/// Header state once every region is initialised; published with `Release`.
pub const STATE_READY: u32 = 1;

/// A value padded to its own cache line, so that two counters written by
/// different cores never share a line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct CachePadded<T>(pub T);

/// An `(offset, len)` pair, both in bytes from the arena base.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    /// Offset from the arena base.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Region {
    /// First byte past the region.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The configuration as stored in the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawConfig {
    pub slots: u32,
    pub slot_size: u32,
    pub channels: u32,
    pub channel_capacity: u32,
    pub data_bytes: u64,
}

/// Where each region sits, as computed by [`Layout::compute`].
///
/// The arena is one range of addresses backed by several files, so that
/// each process can map each part with the rights it needs:
/// - `[0, channels.offset)`: header and slot pool, the arena *file*
///   (written by the runtime only; NFs map it read-only);
/// - each channel: a file of its own (a memfd), read-write for the runtime
///   and for the one NF it belongs to, not mapped at all by other NFs;
/// - `data`: the packet buffers, a file of their own (a memfd), read-only
///   for NFs unless they declared that they modify packets.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionTable {
    /// Pool header followed by `slots` slots of `slot_stride` bytes.
    pub slot_pool: Region,
    /// `channels` channels of `channel_stride` bytes, 2 MiB aligned: each a
    /// descriptor ring of `channel_capacity` entries, an answer ring of
    /// twice that, then the publish area at `pub_offset` ([`PubHeader`] and
    /// [`PUB_RECORDS`] records of `record_stride` bytes).
    pub channels: Region,
    /// Raw packet-buffer region, 2 MiB aligned (may be empty).
    pub data: Region,
    pub slot_stride: u32,
    pub channel_stride: u32,
    pub pub_offset: u32,
    pub record_stride: u32,
}

/// The arena header at offset 0.
///
/// The first 64 bytes are a stable prefix that keeps its meaning across layout
/// versions (magic, version, state, owner pid), so that a process can always
/// tell *which* version and *whose* file it is looking at.
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArenaHeader {
    pub magic: u64,
    pub version: u32,
    /// [`STATE_INIT`] or [`STATE_READY`]; accessed atomically.
    pub state: u32,
    /// Pid of the creating process (the runtime).
    pub owner_pid: u32,
    pub header_size: u32,
    /// Size of the file the creator made, a multiple of its page size.
    pub total_size: u64,
    /// Instance name, NUL padded.
    pub instance: [u8; INSTANCE_LEN],
    pub config: RawConfig,
    pub regions: RegionTable,
    pub _reserved: [u64; 13],
}

pub const HEADER_SIZE: usize = size_of::<ArenaHeader>();
pub const MAGIC_OFFSET: usize = offset_of!(ArenaHeader, magic);
pub const VERSION_OFFSET: usize = offset_of!(ArenaHeader, version);
pub const STATE_OFFSET: usize = offset_of!(ArenaHeader, state);
pub const PID_OFFSET: usize = offset_of!(ArenaHeader, owner_pid);

const _: () = {
    assert!(HEADER_SIZE == 256);
    assert!(align_of::<ArenaHeader>() == CACHE_LINE);
    // The stable prefix: never move these.
    assert!(MAGIC_OFFSET == 0);
    assert!(VERSION_OFFSET == 8);
    assert!(STATE_OFFSET == 12);
    assert!(PID_OFFSET == 16);
    assert!(offset_of!(ArenaHeader, instance) == 32);
    assert!(offset_of!(ArenaHeader, config) == 64);
    assert!(size_of::<RawConfig>() == 24);
    assert!(size_of::<RegionTable>() == 64);
};

/// What the producer of a ring writes: its index.
#[repr(C)]
#[derive(Debug, Default)]
pub struct ProdLine {
    /// Free-running count of pushed entries.
    pub index: AtomicU32,
}

/// What the consumer of a ring writes: its index and counts about its own
/// work (on the same line, so reporting them costs no extra line).
#[repr(C)]
#[derive(Debug, Default)]
pub struct ConsLine {
    /// Free-running count of popped entries.
    pub index: AtomicU32,
    pub _reserved: u32,
    /// Non-empty bursts, entries, and busy nanoseconds the consumer reported.
    pub bursts: AtomicU64,
    pub items: AtomicU64,
    pub busy_ns: AtomicU64,
}

/// Ring header: the producer's line, the consumer's line and a doorbell
/// word (a sleeping consumer's futex word), each on its own cache line.
/// Followed by `capacity` entries of whole `AtomicU64` words.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingHeader {
    pub prod: CachePadded<ProdLine>,
    pub cons: CachePadded<ConsLine>,
    pub bell: CachePadded<AtomicU32>,
}

pub const RING_HEADER_SIZE: usize = size_of::<RingHeader>();
const _: () = {
    assert!(RING_HEADER_SIZE == 3 * CACHE_LINE);
    assert!(align_of::<RingHeader>() == CACHE_LINE);
    assert!(offset_of!(RingHeader, cons) == CACHE_LINE);
    assert!(offset_of!(RingHeader, bell) == 2 * CACHE_LINE);
};

/// Bytes of one channel's descriptor ring, then of its answer ring, for a
/// capacity (each a multiple of the cache line).
pub fn channel_rings(capacity: u32) -> Option<(u64, u64)> {
    let ring = |words: usize, n: u64| {
        align_up((RING_HEADER_SIZE as u64).checked_add(n.checked_mul(words as u64 * 8)?)?, CACHE_LINE as u64)
    };
    Some((ring(DESC_WORDS, u64::from(capacity))?, ring(ANSWER_WORDS, 2 * u64::from(capacity))?))
}

/// Head of a channel's publish area: how many records the worker has
/// copied out (free-running; the NF may reuse a record once this passed it).
#[repr(C)]
#[derive(Debug, Default)]
pub struct PubHeader {
    pub cons: CachePadded<AtomicU32>,
}

pub const PUB_HEADER_SIZE: usize = size_of::<PubHeader>();
const _: () = assert!(PUB_HEADER_SIZE == CACHE_LINE);

/// Slot pool header: the free-list head, the free counter and the fault
/// counter, each on its own line.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PoolHeader {
    /// Treiber stack head: `(tag << 32) | index`, index [`NIL`] when empty.
    pub head: CachePadded<AtomicU64>,
    /// Number of free slots (exact when no operation is in flight).
    pub free: CachePadded<AtomicU32>,
    /// Releases (and retains) of slots whose refcount was already zero.
    pub double_releases: CachePadded<AtomicU64>,
}

pub const POOL_HEADER_SIZE: usize = size_of::<PoolHeader>();
const _: () = {
    assert!(POOL_HEADER_SIZE == 3 * CACHE_LINE);
    assert!(align_of::<PoolHeader>() == CACHE_LINE);
};

/// Per-slot header, followed by the payload.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SlotHeader {
    /// 0 while free, >= 1 while allocated.
    pub refcount: AtomicU32,
    /// Incremented on every allocation.
    pub generation: AtomicU32,
    /// Next free slot while on the free list, [`NIL`] at the end.
    pub next: AtomicU32,
    pub _reserved: u32,
}

pub const SLOT_HEADER_SIZE: usize = size_of::<SlotHeader>();
const _: () = {
    assert!(SLOT_HEADER_SIZE == 16);
    assert!(align_of::<SlotHeader>() == 4);
};

/// Rounds `v` up to a multiple of `to` (a power of two), `None` on overflow.
pub fn align_up(v: u64, to: u64) -> Option<u64> {
    debug_assert!(to.is_power_of_two());
    Some(v.checked_add(to - 1)? & !(to - 1))
}

/// Why a configuration cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

/// Offsets of everything, derived from a [`RawConfig`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub config: RawConfig,
    pub regions: RegionTable,
    /// Bytes needed before rounding to the file system's page size.
    pub min_size: u64,
}

impl Layout {
    pub fn compute(config: RawConfig) -> Result<Layout, LayoutError> {
        let err = |m: String| Err(LayoutError(m));
        if config.slots > MAX_SLOTS {
            return err(format!("slots = {} exceeds the maximum {MAX_SLOTS}", config.slots));
        }
        if config.slot_size == 0 || config.slot_size > MAX_SLOT_SIZE {
            return err(format!("slot_size = {} must be in 1..={MAX_SLOT_SIZE}", config.slot_size));
        }
        if config.channels > MAX_CHANNELS {
            return err(format!("channels = {} exceeds the maximum {MAX_CHANNELS}", config.channels));
        }
        if !config.channel_capacity.is_power_of_two() || config.channel_capacity > MAX_CHANNEL_CAPACITY {
            return err(format!(
                "channel_capacity = {} must be a power of two in 1..={MAX_CHANNEL_CAPACITY}",
                config.channel_capacity
            ));
        }
        let overflow = || LayoutError("arena size overflows u64; reduce the configuration".into());
        let line = CACHE_LINE as u64;

        let slot_stride = align_up(SLOT_HEADER_SIZE as u64 + u64::from(config.slot_size), line).ok_or_else(overflow)?;
        let pool_len = (POOL_HEADER_SIZE as u64)
            .checked_add(slot_stride.checked_mul(u64::from(config.slots)).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let slot_pool = Region { offset: HEADER_SIZE as u64, len: pool_len };

        let (desc, answer) = channel_rings(config.channel_capacity).ok_or_else(overflow)?;
        let record_stride = align_up(u64::from(config.slot_size), line).ok_or_else(overflow)?;
        let pub_offset = desc.checked_add(answer).ok_or_else(overflow)?;
        let pub_len = (PUB_HEADER_SIZE as u64)
            .checked_add(record_stride.checked_mul(u64::from(PUB_RECORDS)).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let channel_stride =
            align_up(pub_offset.checked_add(pub_len).ok_or_else(overflow)?, CHANNEL_ALIGN).ok_or_else(overflow)?;
        let channels_off = align_up(slot_pool.end(), DATA_ALIGN).ok_or_else(overflow)?;
        let channels_len = channel_stride.checked_mul(u64::from(config.channels)).ok_or_else(overflow)?;
        let channels = Region { offset: channels_off, len: channels_len };
        let rings_end = channels_off.checked_add(channels_len).ok_or_else(overflow)?;

        let offset = align_up(rings_end, DATA_ALIGN).ok_or_else(overflow)?;
        let len = align_up(config.data_bytes, DATA_ALIGN).ok_or_else(overflow)?;
        offset.checked_add(len).ok_or_else(overflow)?;
        let data = Region { offset, len };
        let min_size = data.end();
        // Strides must fit the u32 fields of the region table.
        let slot_stride = u32::try_from(slot_stride).map_err(|_| overflow())?;
        let channel_stride = u32::try_from(channel_stride).map_err(|_| overflow())?;
        let pub_offset = u32::try_from(pub_offset).map_err(|_| overflow())?;
        let record_stride = u32::try_from(record_stride).map_err(|_| overflow())?;
        if usize::try_from(min_size).is_err() {
            return Err(overflow());
        }
        let regions = RegionTable { slot_pool, channels, data, slot_stride, channel_stride, pub_offset, record_stride };
        Ok(Layout { config, regions, min_size })
    }

    /// Bytes of the arena file: header and slot pool, up to the channels.
    pub fn file_len(&self) -> u64 {
        self.regions.channels.offset
    }

    /// Arena offset of channel `i`.
    pub fn channel_offset(&self, i: u32) -> u64 {
        self.regions.channels.offset + u64::from(i) * u64::from(self.regions.channel_stride)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(slots: u32, slot_size: u32, channels: u32, cap: u32, data: u64) -> RawConfig {
        RawConfig { slots, slot_size, channels, channel_capacity: cap, data_bytes: data }
    }

    #[test]
    fn regions_are_aligned_and_disjoint() {
        let l = Layout::compute(cfg(100, 200, 3, 1024, 5 << 20)).unwrap();
        let r = l.regions;
        assert_eq!(r.slot_stride % 64, 0);
        assert!(r.slot_stride as usize >= SLOT_HEADER_SIZE + 200);
        assert_eq!(r.slot_pool.offset, HEADER_SIZE as u64);
        assert_eq!(r.channels.offset % DATA_ALIGN, 0);
        assert!(r.channels.offset >= r.slot_pool.end());
        assert_eq!(l.file_len(), r.channels.offset);
        // 1024 descriptors of 32 bytes, 2048 answers of 8, two headers, then
        // the publish area: a line and 32 records of 256 bytes; 4 KiB pages.
        assert_eq!(r.pub_offset as usize, 2 * RING_HEADER_SIZE + 32 * 1024 + 8 * 2048);
        assert_eq!(r.record_stride, 256);
        let want = r.pub_offset as u64 + 64 + 32 * 256;
        assert_eq!(u64::from(r.channel_stride), want.div_ceil(4096) * 4096);
        assert_eq!(l.channel_offset(2), r.channels.offset + 2 * u64::from(r.channel_stride));
        assert_eq!(r.channels.len, 3 * u64::from(r.channel_stride));
        assert_eq!(r.data.offset % DATA_ALIGN, 0);
        assert_eq!(r.data.len, 6 << 20);
        assert!(r.data.offset >= r.channels.end());
        assert_eq!(l.min_size, r.data.end());
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(Layout::compute(cfg(1, 8, 1, 1000, 0)).is_err());
        assert!(Layout::compute(cfg(1, 8, 1, 0, 0)).is_err());
        assert!(Layout::compute(cfg(1, 0, 1, 8, 0)).is_err());
        assert!(Layout::compute(cfg(MAX_SLOTS + 1, 8, 1, 8, 0)).is_err());
        assert!(Layout::compute(cfg(1, 8, 1, 8, u64::MAX - 10)).is_err());
    }
}
