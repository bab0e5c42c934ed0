//! Flow keys and the per-worker flow table.
//!
//! Owns the direction-free [`FlowKey`] (and its symmetric hash, which the
//! runtime uses to pick the worker that owns a flow) and the [`FlowTable`]:
//! a fixed-capacity, exact-LRU table of [`FlowRecord`]s that emits
//! [`FlowEvent::Start`] and [`FlowEvent::End`] (`FLOW/START`, `FLOW/END`).
//!
//! The table is single-threaded by design (one per worker, no locks) and
//! preallocates everything in [`FlowTable::new`]: a slab of slots linked
//! into intrusive doubly-linked LRU lists by `u32` indices, a free list
//! threaded through the same slots, and a hash map from key to slot index
//! created with its final capacity. `touch`, eviction and expiry are O(1)
//! per flow and never allocate. Time is whatever unit the caller passes
//! (the runtime uses nanoseconds); the table never reads a clock.
//!
//! **Embryonic flows go first.** A flow is *embryonic* until its initiator
//! sends a packet after the other side answered (for TCP: the handshake's
//! last ACK, not a resent SYN; for UDP: a second request after a reply),
//! then *established*
//! ([`FlowRecord::established`]), as Linux conntrack's "assured". The two
//! kinds sit in separate LRU lists: embryonic flows are bounded on their own
//! ([`FlowTable::with_embryonic`]), idle out after their own (shorter)
//! timeout, and are evicted before any established flow when the table is
//! full. A flood of spoofed SYNs or one-packet flows therefore only ever
//! evicts its own kind, never a connection that completed its handshake.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hashbrown::HashTable;

use crate::wire::protocol;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Canonical, direction-free key of a bidirectional flow: the (address,
/// port) pair that compares lower is `lo`. IPv4 addresses are stored
/// IPv4-mapped (`::ffff:a.b.c.d`) with a family tag, so an IPv4 flow and an
/// IPv6 flow between `::ffff:`-mapped addresses never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// 8-byte aligned: the key is built in one place and read in another at
// millions of packets per second; aligned, it moves in whole words.
#[repr(C, align(8))]
pub struct FlowKey {
    /// Addresses as big-endian integers (IPv4 as IPv4-mapped IPv6): built
    /// and compared in registers, never byte by byte.
    lo_addr: u128,
    hi_addr: u128,
    /// `lo` port in the low 16 bits, `hi` port in the high 16 bits: one
    /// word, written and read whole (see [`FlowSeed::hash`]).
    ports: u32,
    /// IP protocol in the low 8 bits, address family above.
    meta: u32,
}

/// Which way a packet travels relative to a [`FlowKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the `lo` endpoint to the `hi` endpoint.
    LoToHi,
    /// From the `hi` endpoint to the `lo` endpoint.
    HiToLo,
}

impl Direction {
    /// The other direction.
    #[inline]
    pub fn reverse(self) -> Direction {
        match self {
            Direction::LoToHi => Direction::HiToLo,
            Direction::HiToLo => Direction::LoToHi,
        }
    }
}

impl FlowKey {
    #[inline(always)]
    fn from_parts(family: u8, src: u128, sp: u16, dst: u128, dp: u16, proto: u8) -> (FlowKey, Direction) {
        if (src, sp) <= (dst, dp) {
            let key = FlowKey { lo_addr: src, hi_addr: dst, ports: pack_ports(sp, dp), meta: pack_meta(proto, family) };
            (key, Direction::LoToHi)
        } else {
            let key = FlowKey { lo_addr: dst, hi_addr: src, ports: pack_ports(dp, sp), meta: pack_meta(proto, family) };
            (key, Direction::HiToLo)
        }
    }

    /// Key of the flow a packet from `src:src_port` to `dst:dst_port` belongs
    /// to, and the packet's direction. Mixed families are keyed as IPv6 (the
    /// IPv4 side IPv4-mapped); real packets never mix them.
    pub fn new(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16, proto: u8) -> (FlowKey, Direction) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Self::from_v4(s, src_port, d, dst_port, proto),
            (s, d) => Self::from_v6(to_v6(s), src_port, to_v6(d), dst_port, proto),
        }
    }

    /// [`FlowKey::new`] for IPv4, without going through `IpAddr`.
    #[inline]
    pub fn from_v4(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, proto: u8) -> (FlowKey, Direction) {
        // IPv4-mapped IPv6 (::ffff:a.b.c.d), as an integer.
        let mapped = |a: Ipv4Addr| (0xffff_u128 << 32) | u128::from(a.to_bits());
        Self::from_parts(FAMILY_V4, mapped(src), sp, mapped(dst), dp, proto)
    }

    /// [`FlowKey::new`] for IPv6, without going through `IpAddr`.
    #[inline]
    pub fn from_v6(src: Ipv6Addr, sp: u16, dst: Ipv6Addr, dp: u16, proto: u8) -> (FlowKey, Direction) {
        Self::from_parts(FAMILY_V6, src.to_bits(), sp, dst.to_bits(), dp, proto)
    }

    /// IP protocol number.
    #[inline]
    pub fn proto(&self) -> u8 {
        self.meta as u8
    }

    /// Whether this is an IPv4 flow.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.family() == FAMILY_V4
    }

    #[inline]
    fn addr(&self, bits: u128) -> IpAddr {
        let v6 = Ipv6Addr::from_bits(bits);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.family() == FAMILY_V4 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    }

    /// The endpoint that compares lower.
    #[inline]
    pub fn lo(&self) -> (IpAddr, u16) {
        (self.addr(self.lo_addr), self.ports as u16)
    }

    /// The endpoint that compares higher.
    #[inline]
    pub fn hi(&self) -> (IpAddr, u16) {
        (self.addr(self.hi_addr), (self.ports >> 16) as u16)
    }

    /// Source and destination of a packet travelling in `dir`.
    #[inline]
    pub fn endpoints(&self, dir: Direction) -> ((IpAddr, u16), (IpAddr, u16)) {
        match dir {
            Direction::LoToHi => (self.lo(), self.hi()),
            Direction::HiToLo => (self.hi(), self.lo()),
        }
    }

    /// Deterministic (unseeded) hash of the key. Symmetric by construction:
    /// both directions of a flow have the same key, hence the same hash.
    /// The runtime uses it to pick the worker that owns a flow.
    #[inline]
    pub fn symmetric_hash(&self) -> u32 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let w = |b: &u128, i: usize| (*b >> (8 * i)) as u64;
        let tail = u64::from(self.ports) | (u64::from(self.meta) << 32);
        let mut h: u64 = 0;
        for v in [w(&self.lo_addr, 0), w(&self.lo_addr, 8), w(&self.hi_addr, 0), w(&self.hi_addr, 8), tail] {
            h = (h.rotate_left(5) ^ v).wrapping_mul(K);
        }
        // murmur3 finalizer for avalanche in the low bits.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as u32
    }

    /// A placeholder key for unused slots.
    const EMPTY: FlowKey = FlowKey { lo_addr: 0, hi_addr: 0, ports: 0, meta: 0 };

    #[inline(always)]
    fn family(&self) -> u8 {
        (self.meta >> 8) as u8
    }
}

#[inline(always)]
fn pack_ports(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | (u32::from(hi) << 16)
}

#[inline(always)]
fn pack_meta(proto: u8, family: u8) -> u32 {
    u32::from(proto) | (u32::from(family) << 8)
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

impl fmt::Display for FlowKey {
    /// `tcp 10.0.0.1:4000 <-> 10.0.0.2:80`, `udp [2001:db8::1]:53 <-> ...`,
    /// or `proto 47 ...` for protocols without a short name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match protocol::name(self.proto()) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "proto {}", self.proto())?,
        }
        let (la, lp) = self.lo();
        let (ha, hp) = self.hi();
        write!(f, " {} <-> {}", SocketAddr::new(la, lp), SocketAddr::new(ha, hp))
    }
}

/// Which end of a flow sent a packet: the client is whoever sent the first
/// packet the table saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that sent the first packet seen.
    Client,
    /// The other endpoint.
    Server,
}

/// Flow identifier: unique per table, never reused (a monotonic counter).
pub type FlowId = u64;

/// Packet and byte counts of one side of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideStats {
    /// Packets sent by this side.
    pub packets: u64,
    /// Bytes sent by this side (as counted by the caller of `touch`).
    pub bytes: u64,
}

/// What the table knows about one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// Identifier, unique per table.
    pub id: FlowId,
    /// The flow's key.
    pub key: FlowKey,
    /// Direction of the client's packets.
    pub client_dir: Direction,
    /// Time of the first packet.
    pub first_seen: u64,
    /// Time of the latest packet.
    pub last_seen: u64,
    /// Counts of the client's packets.
    pub client: SideStats,
    /// Counts of the server's packets.
    pub server: SideStats,
    /// The caller's own per-flow value (0 when the flow starts); the runtime
    /// keeps here which chain the flow was assigned when it started.
    pub tag: u32,
    /// The initiator sent a packet after the other side answered (see the
    /// module docs); until then the flow is embryonic.
    pub established: bool,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// No packet for longer than the idle timeout.
    IdleTimeout,
    /// Evicted (least recently used) to make room for a new flow.
    Evicted,
    /// The table was drained at shutdown.
    Shutdown,
    /// Its transport ended it: the caller removed it with
    /// [`FlowTable::remove`] (the runtime does so a short linger after a
    /// monitored TCP connection closed).
    Closed,
}

/// Events the flow table emits (`FLOW/START`, `FLOW/END`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A flow was created; the record includes its first packet.
    Start(FlowRecord),
    /// A flow left the table; the record is final.
    End(FlowRecord, EndReason),
}

/// Lifetime counters of a flow table. At any time
/// `started == ended_idle + evicted + ended_shutdown + ended_closed + len()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTableCounters {
    /// Flows created.
    pub started: u64,
    /// Flows ended by the idle timeout.
    pub ended_idle: u64,
    /// Flows evicted at capacity (embryonic ones included).
    pub evicted: u64,
    /// Of `evicted`, the embryonic flows.
    pub evicted_embryonic: u64,
    /// Flows ended by [`FlowTable::drain`].
    pub ended_shutdown: u64,
    /// Flows ended by [`FlowTable::remove`] with [`EndReason::Closed`].
    pub ended_closed: u64,
    /// Flows that became established.
    pub established: u64,
}

const NIL: u32 = u32::MAX;

/// Keys of the flow table's hash. Random per process by default, so nobody
/// outside can craft flows that collide in the table (and lengthen its
/// probe chains); tables that must agree share one seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSeed([u64; 4]);

impl FlowSeed {
    /// A seed from the process's randomly keyed std hasher.
    pub fn random() -> FlowSeed {
        use std::hash::{BuildHasher, Hasher};
        let rs = std::collections::hash_map::RandomState::new();
        let mut k = [0u64; 4];
        for (i, v) in k.iter_mut().enumerate() {
            let mut h = rs.build_hasher();
            h.write_usize(i);
            *v = h.finish() | 1;
        }
        FlowSeed(k)
    }

    /// A fixed seed (tests, reproducible runs).
    pub const fn fixed(k: [u64; 4]) -> FlowSeed {
        FlowSeed(k)
    }

    /// Seeded hash of a canonical key: three 64x64->128 folded multiplies
    /// over the key's 38 bytes. Symmetric because the key is canonical.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        #[inline(always)]
        fn fold(a: u64, b: u64) -> u64 {
            let p = u128::from(a) * u128::from(b);
            (p as u64) ^ ((p >> 64) as u64)
        }
        let w = |b: &u128, i: usize| (*b >> (8 * i)) as u64;
        let tail = u64::from(key.ports) | (u64::from(key.meta) << 32);
        let [s0, s1, s2, s3] = self.0;
        let h = fold(w(&key.lo_addr, 0) ^ s0, w(&key.lo_addr, 8) ^ s1);
        let h = fold(h ^ w(&key.hi_addr, 0) ^ s2, w(&key.hi_addr, 8) ^ s3);
        fold(h ^ tail ^ s1, s2 ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// Which of `n` workers owns a flow with table hash `hash`. Uses bits
    /// the table's buckets and tags do not, so each worker's table still
    /// spreads its flows over all buckets.
    #[inline]
    pub fn owner(hash: u64, n: usize) -> usize {
        (((hash >> 32) & 0xff_ffff) as usize) % n.max(1)
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    rec: FlowRecord,
    /// The table's hash of `rec.key`.
    hash: u64,
    /// Neighbour towards the least recently used end (NIL at the head).
    prev: u32,
    /// Neighbour towards the most recently used end (NIL at the tail); for a
    /// free slot, the next free slot.
    next: u32,
}

/// One LRU list: embryonic or established flows.
#[derive(Clone, Copy, Debug)]
struct Lru {
    /// Least recently used.
    head: u32,
    /// Most recently used.
    tail: u32,
    len: usize,
}

const EMBRYONIC: usize = 0;
const ESTABLISHED: usize = 1;

fn list_of(rec: &FlowRecord) -> usize {
    if rec.established {
        ESTABLISHED
    } else {
        EMBRYONIC
    }
}

/// A fixed-capacity flow table with exact LRU eviction and idle expiry,
/// embryonic flows first (see the module docs).
#[derive(Debug)]
pub struct FlowTable {
    slots: Vec<Slot>,
    /// Slot indices, found by the seeded hash stored in each slot.
    map: HashTable<u32>,
    seed: FlowSeed,
    /// The slot touched last (NIL if none or freed): consecutive packets of
    /// one flow skip the hash probe.
    last: u32,
    /// Embryonic and established flows, each least recently used first.
    lists: [Lru; 2],
    free: u32,
    len: usize,
    idle_timeout: u64,
    /// At most this many embryonic flows.
    embryonic_max: usize,
    embryonic_timeout: u64,
    next_id: FlowId,
    counters: FlowTableCounters,
}

impl FlowTable {
    /// Preallocates everything: `capacity` entries (clamped to
    /// `1..=u32::MAX - 1`) and the idle timeout in the caller's time unit
    /// (the runtime passes nanoseconds). No allocation after construction.
    pub fn new(capacity: usize, idle_timeout: u64) -> FlowTable {
        FlowTable::with_seed(capacity, idle_timeout, FlowSeed::random())
    }

    /// [`FlowTable::new`] with a given hash seed. Tables that must agree on
    /// [`FlowTable::hash`] (the runtime's workers, which steer flows by it)
    /// share one seed.
    pub fn with_seed(capacity: usize, idle_timeout: u64, seed: FlowSeed) -> FlowTable {
        let capacity = capacity.clamp(1, (NIL - 1) as usize);
        let empty = FlowRecord {
            id: 0,
            key: FlowKey::EMPTY,
            client_dir: Direction::LoToHi,
            first_seen: 0,
            last_seen: 0,
            client: SideStats::default(),
            server: SideStats::default(),
            tag: 0,
            established: false,
        };
        let slots = (0..capacity)
            .map(|i| Slot { rec: empty, hash: 0, prev: NIL, next: if i + 1 < capacity { (i + 1) as u32 } else { NIL } })
            .collect();
        FlowTable {
            slots,
            map: HashTable::with_capacity(capacity),
            seed,
            last: NIL,
            lists: [Lru { head: NIL, tail: NIL, len: 0 }; 2],
            free: 0,
            len: 0,
            idle_timeout,
            embryonic_max: capacity,
            embryonic_timeout: idle_timeout,
            next_id: 1,
            counters: FlowTableCounters::default(),
        }
    }

    /// Bounds embryonic flows to `max` (clamped to `1..=capacity`; a new one
    /// past it evicts the least recently used embryonic flow) and ends them
    /// after `timeout` without a packet (capped at the idle timeout). By
    /// default they share the whole capacity and the idle timeout.
    pub fn with_embryonic(mut self, max: usize, timeout: u64) -> FlowTable {
        self.embryonic_max = max.clamp(1, self.slots.len());
        self.embryonic_timeout = timeout.min(self.idle_timeout);
        self
    }

    /// Finds or creates the flow of a packet seen at `now` in direction
    /// `dir`, counts `bytes` for the side that sent it, marks the flow most
    /// recently used, and returns its id and the sender's side. Creating at
    /// full capacity first evicts the least recently used flow
    /// (`End(.., Evicted)`); a created flow emits `Start`.
    pub fn touch(
        &mut self,
        key: &FlowKey,
        dir: Direction,
        bytes: u32,
        now: u64,
        on_event: &mut impl FnMut(FlowEvent),
    ) -> (FlowId, Side) {
        self.touch_as(key, dir, bytes, now, true, on_event)
    }

    /// [`FlowTable::touch`] for a packet that may establish the flow or not
    /// (`may_establish`): the caller that parses TCP passes false for a SYN
    /// or RST, so that a spoofer resending SYNs cannot make its half-open
    /// flows look established.
    pub fn touch_as(
        &mut self,
        key: &FlowKey,
        dir: Direction,
        bytes: u32,
        now: u64,
        may_establish: bool,
        on_event: &mut impl FnMut(FlowEvent),
    ) -> (FlowId, Side) {
        // Packets come in trains: the same flow as last time needs no hash.
        let hash = match self.slots.get(self.last as usize) {
            Some(s) if s.rec.key == *key => s.hash,
            _ => self.hash(key),
        };
        self.touch_hashed(key, hash, dir, bytes, now, may_establish, on_event)
    }

    /// The table's seeded hash of `key`: symmetric (the key is canonical)
    /// and the same in every table built with the same [`FlowSeed`].
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.seed.hash(key)
    }

    /// [`FlowTable::touch_as`] with `hash == self.hash(key)` computed by the
    /// caller (the runtime hashes once per packet, for steering and lookup).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn touch_hashed(
        &mut self,
        key: &FlowKey,
        hash: u64,
        dir: Direction,
        bytes: u32,
        now: u64,
        may_establish: bool,
        on_event: &mut impl FnMut(FlowEvent),
    ) -> (FlowId, Side) {
        let slots = &self.slots;
        let hit = match slots.get(self.last as usize) {
            Some(s) if s.hash == hash && s.rec.key == *key => Some(self.last),
            _ => self.map.find(hash, |&i| slots.get(i as usize).is_some_and(|s| s.rec.key == *key)).copied(),
        };
        if let Some(idx) = hit {
            let (id, side, promote) = match self.slots.get_mut(idx as usize) {
                Some(slot) => {
                    let rec = &mut slot.rec;
                    let side = if dir == rec.client_dir { Side::Client } else { Side::Server };
                    let stats = match side {
                        Side::Client => &mut rec.client,
                        Side::Server => &mut rec.server,
                    };
                    stats.packets += 1;
                    stats.bytes += u64::from(bytes);
                    rec.last_seen = now;
                    let promote = may_establish && !rec.established && side == Side::Client && rec.server.packets > 0;
                    rec.established |= promote;
                    (rec.id, side, promote)
                }
                None => (0, Side::Client, false), // unreachable: map values are slot indices
            };
            if promote {
                self.unlink_from(idx, EMBRYONIC);
                self.push_tail(idx, ESTABLISHED);
                self.counters.established += 1;
            } else {
                let list = self.slots.get(idx as usize).map_or(EMBRYONIC, |s| list_of(&s.rec));
                if idx != self.lists[list].tail {
                    self.unlink_from(idx, list);
                    self.push_tail(idx, list);
                }
            }
            self.last = idx;
            return (id, side);
        }

        // Room for a new (embryonic) flow: past the embryonic bound, or at
        // capacity with embryonic flows around, the oldest embryonic one
        // goes; only a table of established flows evicts one of those.
        let victim =
            if self.lists[EMBRYONIC].len >= self.embryonic_max || self.free == NIL && self.lists[EMBRYONIC].len > 0 {
                Some(EMBRYONIC)
            } else if self.free == NIL {
                Some(ESTABLISHED)
            } else {
                None
            };
        if let Some(list) = victim {
            if let Some(rec) = self.remove_head(list) {
                self.counters.evicted += 1;
                self.counters.evicted_embryonic += u64::from(!rec.established);
                on_event(FlowEvent::End(rec, EndReason::Evicted));
            }
        }
        let idx = self.free;
        let Some(slot) = self.slots.get_mut(idx as usize) else {
            return (0, Side::Client); // unreachable: capacity >= 1 and we just evicted
        };
        self.free = slot.next;
        let id = self.next_id;
        self.next_id += 1;
        slot.rec = FlowRecord {
            id,
            key: *key,
            client_dir: dir,
            first_seen: now,
            last_seen: now,
            client: SideStats { packets: 1, bytes: u64::from(bytes) },
            server: SideStats::default(),
            tag: 0,
            established: false,
        };
        slot.hash = hash;
        let rec = slot.rec;
        let slots = &self.slots;
        // Capacity was reserved up front, so this never rehashes; the hasher
        // closure is only there for the API.
        self.map.insert_unique(hash, idx, |&i| slots.get(i as usize).map_or(0, |s| s.hash));
        self.push_tail(idx, EMBRYONIC);
        self.last = idx;
        self.len += 1;
        self.counters.started += 1;
        on_event(FlowEvent::Start(rec));
        (id, Side::Client)
    }

    /// Ends up to `max` flows idle for longer than their timeout (`now -
    /// last_seen > timeout`: the embryonic timeout for embryonic flows, the
    /// idle timeout for established ones), embryonic flows first, each list
    /// least recently used first; emits `End(.., IdleTimeout)` for each and
    /// returns how many ended.
    pub fn expire(&mut self, now: u64, max: usize, on_event: &mut impl FnMut(FlowEvent)) -> usize {
        let mut n = 0;
        for (list, timeout) in [(EMBRYONIC, self.embryonic_timeout), (ESTABLISHED, self.idle_timeout)] {
            while n < max {
                let Some(head) = self.slots.get(self.lists[list].head as usize) else {
                    break;
                };
                if now.saturating_sub(head.rec.last_seen) <= timeout {
                    break;
                }
                let Some(rec) = self.remove_head(list) else {
                    break;
                };
                self.counters.ended_idle += 1;
                on_event(FlowEvent::End(rec, EndReason::IdleTimeout));
                n += 1;
            }
        }
        n
    }

    /// Ends every flow (at shutdown), embryonic ones first, each list least
    /// recently used first, emitting `End(.., Shutdown)`.
    pub fn drain(&mut self, on_event: &mut impl FnMut(FlowEvent)) {
        for list in [EMBRYONIC, ESTABLISHED] {
            while let Some(rec) = self.remove_head(list) {
                self.counters.ended_shutdown += 1;
                on_event(FlowEvent::End(rec, EndReason::Shutdown));
            }
        }
    }

    /// Ends the flow of `key` now, if it is in the table, emitting `End(..,
    /// reason)` and counting it by `reason`. Returns whether it was there.
    pub fn remove(&mut self, key: &FlowKey, reason: EndReason, on_event: &mut impl FnMut(FlowEvent)) -> bool {
        let slots = &self.slots;
        let hash = self.hash(key);
        let Some(&idx) = self.map.find(hash, |&i| slots.get(i as usize).is_some_and(|s| s.rec.key == *key)) else {
            return false;
        };
        let Some(rec) = self.free_slot(idx) else { return false };
        let c = &mut self.counters;
        match reason {
            EndReason::IdleTimeout => c.ended_idle += 1,
            EndReason::Evicted => {
                c.evicted += 1;
                c.evicted_embryonic += u64::from(!rec.established);
            }
            EndReason::Shutdown => c.ended_shutdown += 1,
            EndReason::Closed => c.ended_closed += 1,
        }
        on_event(FlowEvent::End(rec, reason));
        true
    }

    /// The record of a flow, if it is in the table.
    pub fn get(&self, key: &FlowKey) -> Option<&FlowRecord> {
        let slots = &self.slots;
        let idx = *self.map.find(self.hash(key), |&i| slots.get(i as usize).is_some_and(|s| s.rec.key == *key))?;
        self.slots.get(idx as usize).map(|s| &s.rec)
    }

    /// Number of flows in the table.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of embryonic flows in the table.
    #[inline]
    pub fn embryonic(&self) -> usize {
        self.lists[EMBRYONIC].len
    }

    /// Whether the table holds no flow.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of flows.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The idle timeout given at construction.
    #[inline]
    pub fn idle_timeout(&self) -> u64 {
        self.idle_timeout
    }

    /// Lifetime counters.
    #[inline]
    pub fn counters(&self) -> FlowTableCounters {
        self.counters
    }

    /// The tag of the flow touched last (by [`FlowTable::touch`] and
    /// friends), to read or set right after the touch.
    #[inline]
    pub fn last_tag_mut(&mut self) -> Option<&mut u32> {
        self.slots.get_mut(self.last as usize).map(|s| &mut s.rec.tag)
    }

    /// Flows in eviction order (for inspection and tests): embryonic ones
    /// from least to most recently used, then established ones likewise.
    pub fn iter_lru(&self) -> impl Iterator<Item = &FlowRecord> + '_ {
        let mut list = EMBRYONIC;
        let mut cur = self.lists[EMBRYONIC].head;
        core::iter::from_fn(move || loop {
            match self.slots.get(cur as usize) {
                Some(slot) => {
                    cur = slot.next;
                    return Some(&slot.rec);
                }
                None if list == EMBRYONIC => {
                    list = ESTABLISHED;
                    cur = self.lists[ESTABLISHED].head;
                }
                None => return None,
            }
        })
    }

    fn unlink_from(&mut self, idx: u32, list: usize) {
        let Some(&Slot { prev, next, .. }) = self.slots.get(idx as usize) else {
            return;
        };
        let l = &mut self.lists[list];
        l.len -= 1;
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => l.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => l.tail = prev,
        }
    }

    fn push_tail(&mut self, idx: u32, list: usize) {
        let l = &mut self.lists[list];
        let tail = l.tail;
        l.len += 1;
        l.tail = idx;
        if let Some(s) = self.slots.get_mut(idx as usize) {
            s.prev = tail;
            s.next = NIL;
        }
        match self.slots.get_mut(tail as usize) {
            Some(t) => t.next = idx,
            None => self.lists[list].head = idx,
        }
    }

    /// Unlinks the least recently used flow of `list`, frees its slot and
    /// returns its record.
    fn remove_head(&mut self, list: usize) -> Option<FlowRecord> {
        self.free_slot(self.lists[list].head)
    }

    /// Unlinks the flow in slot `idx`, frees the slot and returns its record.
    fn free_slot(&mut self, idx: u32) -> Option<FlowRecord> {
        let (rec, hash) = self.slots.get(idx as usize).map(|s| (s.rec, s.hash))?;
        self.unlink_from(idx, list_of(&rec));
        if let Ok(entry) = self.map.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        if self.last == idx {
            self.last = NIL;
        }
        if let Some(s) = self.slots.get_mut(idx as usize) {
            s.next = self.free;
            s.prev = NIL;
        }
        self.free = idx;
        self.len -= 1;
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, d)
    }

    fn key(n: u16) -> FlowKey {
        FlowKey::from_v4(v4(1), 1000 + n, v4(2), 80, protocol::TCP).0
    }

    fn collect(events: &mut Vec<FlowEvent>) -> impl FnMut(FlowEvent) + '_ {
        move |e| events.push(e)
    }

    #[test]
    fn tables_with_one_seed_agree_on_hash_and_owner() {
        let seed = FlowSeed::fixed([1, 2, 3, 4]);
        let a = FlowTable::with_seed(4, 10, seed);
        let b = FlowTable::with_seed(4, 10, seed);
        let (k1, _) = FlowKey::from_v4(v4(1), 5000, v4(2), 80, protocol::TCP);
        let (k2, _) = FlowKey::from_v4(v4(2), 80, v4(1), 5000, protocol::TCP);
        assert_eq!(a.hash(&k1), b.hash(&k2), "both directions, both tables");
        let owners: std::collections::HashSet<usize> = (0..64).map(|n| FlowSeed::owner(a.hash(&key(n)), 4)).collect();
        assert_eq!(owners.len(), 4, "64 flows spread over all 4 workers");
        assert_ne!(FlowSeed::random(), FlowSeed::random(), "random seeds differ");
    }

    #[test]
    fn tag_belongs_to_the_flow_touched_last_and_starts_at_zero() {
        let mut t = FlowTable::new(4, 1_000);
        let mut ev = Vec::new();
        t.touch(&key(1), Direction::LoToHi, 10, 0, &mut collect(&mut ev));
        *t.last_tag_mut().unwrap() = 7;
        t.touch(&key(2), Direction::LoToHi, 10, 1, &mut collect(&mut ev));
        assert_eq!(*t.last_tag_mut().unwrap(), 0, "a new flow starts untagged");
        t.touch(&key(1), Direction::HiToLo, 10, 2, &mut collect(&mut ev));
        assert_eq!(*t.last_tag_mut().unwrap(), 7);
        assert_eq!(t.get(&key(1)).unwrap().tag, 7);
    }

    #[test]
    fn last_hit_shortcut_never_returns_an_evicted_flow() {
        let mut t = FlowTable::new(1, 1_000);
        let mut ev = Vec::new();
        let (id1, _) = t.touch(&key(1), Direction::LoToHi, 10, 0, &mut collect(&mut ev));
        let (id1b, _) = t.touch(&key(1), Direction::HiToLo, 10, 1, &mut collect(&mut ev));
        assert_eq!(id1, id1b);
        // Evicts flow 1; the same key afterwards is a new flow.
        t.touch(&key(2), Direction::LoToHi, 10, 2, &mut collect(&mut ev));
        let (id1c, side) = t.touch(&key(1), Direction::HiToLo, 10, 3, &mut collect(&mut ev));
        assert_ne!(id1c, id1);
        assert_eq!(side, Side::Client, "the new flow's first sender is its client");
        assert_eq!(t.counters().evicted, 2);
        assert_eq!(t.get(&key(1)).map(|r| r.id), Some(id1c));
        assert!(t.get(&key(2)).is_none());
    }

    #[test]
    fn key_is_canonical() {
        let (k1, d1) = FlowKey::from_v4(v4(2), 80, v4(1), 4000, protocol::TCP);
        let (k2, d2) = FlowKey::from_v4(v4(1), 4000, v4(2), 80, protocol::TCP);
        assert_eq!(k1, k2);
        assert_eq!((d1, d2), (Direction::HiToLo, Direction::LoToHi));
        assert_eq!(d1.reverse(), d2);
        assert_eq!(k1.lo(), (IpAddr::V4(v4(1)), 4000));
        assert_eq!(k1.hi(), (IpAddr::V4(v4(2)), 80));
        assert_eq!(k1.proto(), protocol::TCP);
        assert!(k1.is_ipv4());
        assert_eq!(k1.to_string(), "tcp 10.0.0.1:4000 <-> 10.0.0.2:80");
        assert_eq!(k1.endpoints(d1).0, (IpAddr::V4(v4(2)), 80));
        let (k3, _) = FlowKey::new(v4(1).into(), 4000, v4(2).into(), 80, protocol::TCP);
        assert_eq!(k3, k1);
        assert_eq!(k3.symmetric_hash(), k1.symmetric_hash());
        // Same address, ports decide.
        let (k4, d4) = FlowKey::from_v4(v4(1), 9, v4(1), 8, protocol::UDP);
        assert_eq!((k4.lo().1, d4), (8, Direction::HiToLo));
    }

    #[test]
    fn v4_and_mapped_v6_differ() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let (k, _) = FlowKey::from_v6(b, 53, a, 5353, protocol::UDP);
        assert!(!k.is_ipv4());
        assert_eq!(k.to_string(), "udp [2001:db8::1]:5353 <-> [2001:db8::2]:53");
        let (k4, _) = FlowKey::from_v4(v4(1), 1, v4(2), 2, 47);
        let (k6, _) = FlowKey::from_v6(v4(1).to_ipv6_mapped(), 1, v4(2).to_ipv6_mapped(), 2, 47);
        assert_ne!(k4, k6);
        assert_eq!(k6.lo().0, IpAddr::V6(v4(1).to_ipv6_mapped()));
        assert_eq!(k4.to_string(), "proto 47 10.0.0.1:1 <-> 10.0.0.2:2");
        let (mixed, _) = FlowKey::new(v4(1).into(), 1, a.into(), 2, 17);
        assert!(!mixed.is_ipv4());
    }

    #[test]
    fn both_directions_one_entry() {
        let mut t = FlowTable::new(4, 100);
        let mut ev = Vec::new();
        let (k, d_c2s) = FlowKey::from_v4(v4(9), 5555, v4(2), 443, protocol::TCP);
        let (id1, s1) = t.touch(&k, d_c2s, 60, 1, &mut collect(&mut ev));
        let (id2, s2) = t.touch(&k, d_c2s.reverse(), 1500, 2, &mut collect(&mut ev));
        let (id3, s3) = t.touch(&k, d_c2s, 40, 3, &mut collect(&mut ev));
        assert_eq!((id1, id2, id3), (1, 1, 1));
        assert_eq!((s1, s2, s3), (Side::Client, Side::Server, Side::Client));
        assert_eq!(t.len(), 1);
        let r = t.get(&k).unwrap();
        assert_eq!(r.client_dir, d_c2s);
        assert_eq!(r.client, SideStats { packets: 2, bytes: 100 });
        assert_eq!(r.server, SideStats { packets: 1, bytes: 1500 });
        assert_eq!((r.first_seen, r.last_seen), (1, 3));
        assert_eq!(ev.len(), 1);
        assert!(matches!(ev[0], FlowEvent::Start(r) if r.id == 1 && r.client.bytes == 60));
    }

    #[test]
    fn idle_timeout() {
        let mut t = FlowTable::new(2, 10);
        let mut ev = Vec::new();
        t.touch(&key(1), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        t.touch(&key(2), Direction::LoToHi, 1, 5, &mut collect(&mut ev));
        ev.clear();
        assert_eq!(t.expire(10, 10, &mut collect(&mut ev)), 0); // exactly the timeout: not yet
        assert_eq!(t.expire(11, 10, &mut collect(&mut ev)), 1);
        assert!(matches!(ev[0], FlowEvent::End(r, EndReason::IdleTimeout) if r.key == key(1)));
        assert!(t.get(&key(1)).is_none());
        assert_eq!(t.len(), 1);
        // The freed slot is reused without evicting, and ids are not reused.
        ev.clear();
        let (id, _) = t.touch(&key(3), Direction::LoToHi, 1, 12, &mut collect(&mut ev));
        assert_eq!(id, 3);
        assert_eq!(ev.len(), 1);
        assert_eq!(t.len(), 2);
        // max bounds the work.
        ev.clear();
        assert_eq!(t.expire(1000, 1, &mut collect(&mut ev)), 1);
        assert_eq!(t.expire(1000, 0, &mut collect(&mut ev)), 0);
        assert_eq!(t.expire(1000, 5, &mut collect(&mut ev)), 1);
        assert!(t.is_empty());
        assert_eq!(t.counters().ended_idle, 3);
    }

    #[test]
    fn capacity_evicts_lru() {
        let cap = 8;
        let k = 3;
        let mut t = FlowTable::new(cap, 1_000);
        let mut ev = Vec::new();
        for i in 0..cap as u16 {
            t.touch(&key(i), Direction::LoToHi, 1, u64::from(i), &mut collect(&mut ev));
        }
        // Refresh flows 0 and 1: now 2, 3, 4 are the least recently used.
        t.touch(&key(0), Direction::HiToLo, 1, 20, &mut collect(&mut ev));
        t.touch(&key(1), Direction::LoToHi, 1, 21, &mut collect(&mut ev));
        ev.clear();
        for i in 0..k {
            t.touch(&key(100 + i), Direction::LoToHi, 1, 30, &mut collect(&mut ev));
            assert_eq!(t.len(), cap);
        }
        let evicted: Vec<FlowKey> = ev
            .iter()
            .filter_map(|e| match e {
                FlowEvent::End(r, EndReason::Evicted) => Some(r.key),
                _ => None,
            })
            .collect();
        assert_eq!(evicted, [key(2), key(3), key(4)]);
        assert_eq!(ev.iter().filter(|e| matches!(e, FlowEvent::Start(_))).count(), 3);
        // End comes before the Start it makes room for.
        assert!(matches!(ev[0], FlowEvent::End(..)));
        assert!(matches!(ev[1], FlowEvent::Start(..)));
        for i in [0, 1, 5, 6, 7, 100, 101, 102] {
            assert!(t.get(&key(i)).is_some(), "{i}");
        }
        assert_eq!(t.counters().evicted, 3);
        let order: Vec<FlowKey> = t.iter_lru().map(|r| r.key).collect();
        assert_eq!(order.first(), Some(&key(5)));
        assert_eq!(order.last(), Some(&key(102)));
    }

    #[test]
    fn touching_refreshes_lru() {
        let mut t = FlowTable::new(3, 1_000);
        let mut ev = Vec::new();
        for i in 0..3 {
            t.touch(&key(i), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        }
        t.touch(&key(0), Direction::LoToHi, 1, 1, &mut collect(&mut ev));
        let order: Vec<FlowKey> = t.iter_lru().map(|r| r.key).collect();
        assert_eq!(order, [key(1), key(2), key(0)]);
        t.touch(&key(2), Direction::LoToHi, 1, 2, &mut collect(&mut ev));
        let order: Vec<FlowKey> = t.iter_lru().map(|r| r.key).collect();
        assert_eq!(order, [key(1), key(0), key(2)]);
        ev.clear();
        t.touch(&key(9), Direction::LoToHi, 1, 3, &mut collect(&mut ev));
        assert!(matches!(ev[0], FlowEvent::End(r, EndReason::Evicted) if r.key == key(1)));
    }

    #[test]
    fn capacity_one_and_zero() {
        let mut t = FlowTable::new(0, 5);
        assert_eq!(t.capacity(), 1);
        assert_eq!(t.idle_timeout(), 5);
        let mut ev = Vec::new();
        t.touch(&key(1), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        t.touch(&key(2), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        assert_eq!(t.len(), 1);
        assert!(t.get(&key(2)).is_some());
        assert_eq!(t.counters().evicted, 1);
    }

    #[test]
    fn drain_empties() {
        let mut t = FlowTable::new(4, 10);
        let mut ev = Vec::new();
        for i in 0..3 {
            t.touch(&key(i), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        }
        ev.clear();
        t.drain(&mut collect(&mut ev));
        assert!(t.is_empty());
        assert_eq!(ev.len(), 3);
        assert!(ev.iter().all(|e| matches!(e, FlowEvent::End(_, EndReason::Shutdown))));
        assert_eq!(t.iter_lru().count(), 0);
        let c = t.counters();
        assert_eq!((c.started, c.ended_shutdown), (3, 3));
        // Still usable: all slots are free again.
        for i in 10..14 {
            t.touch(&key(i), Direction::LoToHi, 1, 0, &mut collect(&mut ev));
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.counters().evicted, 0);
    }

    /// Client packet, server answer, client again: established.
    fn handshake(t: &mut FlowTable, k: &FlowKey, now: u64, ev: &mut Vec<FlowEvent>) {
        t.touch(k, Direction::LoToHi, 60, now, &mut collect(ev));
        t.touch(k, Direction::HiToLo, 60, now, &mut collect(ev));
        t.touch(k, Direction::LoToHi, 60, now, &mut collect(ev));
    }

    #[test]
    fn a_flood_of_embryonic_flows_never_evicts_an_established_one() {
        let mut t = FlowTable::new(8, 1_000).with_embryonic(4, 10);
        let mut ev = Vec::new();
        for i in 0..3 {
            handshake(&mut t, &key(i), 0, &mut ev);
        }
        // A server answer alone does not establish a flow.
        t.touch(&key(3), Direction::LoToHi, 60, 0, &mut collect(&mut ev));
        t.touch(&key(3), Direction::HiToLo, 60, 0, &mut collect(&mut ev));
        assert!(!t.get(&key(3)).unwrap().established);
        // Nor does the initiator again with a packet that cannot complete a
        // handshake (a resent SYN).
        t.touch_as(&key(3), Direction::LoToHi, 60, 0, false, &mut collect(&mut ev));
        assert!(!t.get(&key(3)).unwrap().established);
        assert!(t.get(&key(0)).unwrap().established);
        assert_eq!((t.len(), t.embryonic(), t.counters().established), (4, 1, 3));
        ev.clear();
        for i in 100..1100 {
            t.touch(&key(i), Direction::LoToHi, 60, 1, &mut collect(&mut ev));
        }
        for i in 0..3 {
            assert!(t.get(&key(i)).is_some_and(|r| r.established), "established flow {i} kept");
        }
        assert_eq!(t.embryonic(), 4, "embryonic flows stay within their bound");
        let c = t.counters();
        assert_eq!((c.evicted, c.evicted_embryonic), (997, 997));
        // Embryonic flows idle out after their own timeout, established
        // ones after the idle timeout.
        ev.clear();
        assert_eq!(t.expire(12, 100, &mut collect(&mut ev)), 4);
        assert_eq!(t.len(), 3);
        assert_eq!(t.expire(1_001, 100, &mut collect(&mut ev)), 3);
        assert!(ev.iter().all(|e| matches!(e, FlowEvent::End(_, EndReason::IdleTimeout))));
    }

    #[test]
    fn a_full_table_of_established_flows_evicts_the_least_recent_one() {
        let mut t = FlowTable::new(3, 1_000).with_embryonic(3, 1_000);
        let mut ev = Vec::new();
        for i in 0..3 {
            handshake(&mut t, &key(i), u64::from(i), &mut ev);
        }
        ev.clear();
        t.touch(&key(9), Direction::LoToHi, 60, 5, &mut collect(&mut ev));
        assert!(matches!(ev[0], FlowEvent::End(r, EndReason::Evicted) if r.key == key(0) && r.established));
        let c = t.counters();
        assert_eq!((c.evicted, c.evicted_embryonic), (1, 0));
    }

    #[test]
    fn remove_ends_a_flow_with_the_reason_given() {
        let mut t = FlowTable::new(4, 1_000);
        let mut ev = Vec::new();
        handshake(&mut t, &key(1), 0, &mut ev);
        t.touch(&key(2), Direction::LoToHi, 60, 0, &mut collect(&mut ev));
        ev.clear();
        assert!(t.remove(&key(1), EndReason::Closed, &mut collect(&mut ev)));
        assert!(!t.remove(&key(1), EndReason::Closed, &mut collect(&mut ev)), "gone already");
        assert!(matches!(ev[..], [FlowEvent::End(r, EndReason::Closed)] if r.key == key(1)));
        assert!(t.remove(&key(2), EndReason::Evicted, &mut collect(&mut ev)));
        let c = t.counters();
        assert_eq!((c.ended_closed, c.evicted, c.evicted_embryonic, t.len()), (1, 1, 1, 0));
        // The shortcut slot of the last touch is gone too.
        let (id, side) = t.touch(&key(2), Direction::HiToLo, 1, 1, &mut collect(&mut ev));
        assert_eq!((id, side), (3, Side::Client));
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            // Small space so that equal addresses show up.
            (0u8..3).prop_map(|d| IpAddr::V4(Ipv4Addr::new(10, 0, 0, d))),
        ]
    }

    #[derive(Clone, Debug)]
    enum Op {
        Touch { flow: u8, rev: bool, bytes: u16, dt: u8 },
        Expire { dt: u8, max: u8 },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..24, any::<bool>(), any::<u16>(), 0u8..4)
                .prop_map(|(flow, rev, bytes, dt)| Op::Touch { flow, rev, bytes, dt }),
            1 => (0u8..30, 0u8..6).prop_map(|(dt, max)| Op::Expire { dt, max }),
        ]
    }

    proptest! {
        #[test]
        fn hash_is_symmetric(a in arb_ip(), ap in any::<u16>(), b in arb_ip(), bp in any::<u16>(), proto in any::<u8>()) {
            let (k1, d1) = FlowKey::new(a, ap, b, bp, proto);
            let (k2, d2) = FlowKey::new(b, bp, a, ap, proto);
            prop_assert_eq!(k1, k2);
            prop_assert_eq!(k1.symmetric_hash(), k2.symmetric_hash());
            if (a, ap) != (b, bp) {
                prop_assert_ne!(d1, d2);
            }
            let (src, dst) = k1.endpoints(d1);
            let norm = |x: IpAddr| IpAddr::V6(to_v6(x));
            prop_assert_eq!((norm(src.0), src.1, norm(dst.0), dst.1), (norm(a), ap, norm(b), bp));
        }

        #[test]
        fn table_matches_model(
            cap in 1usize..8,
            emb_max in 1usize..9,
            timeout in 0u64..20,
            emb_timeout in 0u64..20,
            ops in proptest::collection::vec(arb_op(), 0..200),
        ) {
            let mut t = FlowTable::new(cap, timeout).with_embryonic(emb_max, emb_timeout);
            let (emb_max, emb_timeout) = (emb_max.min(cap), emb_timeout.min(timeout));
            // Model: per list (embryonic, established) keys in LRU order
            // (front = least recent) with (last_seen, client dir, server seen).
            type Entry = (FlowKey, u64, Direction, bool);
            let mut model: [Vec<Entry>; 2] = [Vec::new(), Vec::new()];
            let mut now = 0u64;
            let mut last_id = 0;
            for op in ops {
                let mut ev = Vec::new();
                match op {
                    Op::Touch { flow, rev, bytes, dt } => {
                        now += u64::from(dt);
                        let k = key(u16::from(flow));
                        let dir = if rev { Direction::HiToLo } else { Direction::LoToHi };
                        let known = (0..2).find_map(|l| model[l].iter().position(|e| e.0 == k).map(|i| (l, i)));
                        let (id, side) = t.touch(&k, dir, u32::from(bytes), now, &mut collect(&mut ev));
                        match known {
                            Some((l, i)) => {
                                let (_, _, cdir, server_seen) = model[l].remove(i);
                                prop_assert!(ev.is_empty());
                                prop_assert!(id <= last_id);
                                let is_client = dir == cdir;
                                prop_assert_eq!(side, if is_client { Side::Client } else { Side::Server });
                                let l2 = if l == 0 && is_client && server_seen { 1 } else { l };
                                model[l2].push((k, now, cdir, server_seen || !is_client));
                            }
                            None => {
                                prop_assert_eq!(side, Side::Client);
                                prop_assert!(id > last_id);
                                last_id = id;
                                let full = model[0].len() + model[1].len() == cap;
                                let victim = if model[0].len() >= emb_max || full && !model[0].is_empty() {
                                    Some(model[0].remove(0))
                                } else if full {
                                    Some(model[1].remove(0))
                                } else {
                                    None
                                };
                                if let Some((v, ..)) = victim {
                                    prop_assert!(matches!(ev[0], FlowEvent::End(r, EndReason::Evicted) if r.key == v));
                                }
                                prop_assert!(matches!(ev.last(), Some(FlowEvent::Start(r)) if r.key == k));
                                model[0].push((k, now, dir, false));
                            }
                        }
                    }
                    Op::Expire { dt, max } => {
                        now += u64::from(dt);
                        let n = t.expire(now, usize::from(max), &mut collect(&mut ev));
                        let mut expected = Vec::new();
                        for (l, to) in [(0, emb_timeout), (1, timeout)] {
                            let left = usize::from(max) - expected.len();
                            let k = model[l].iter().take(left).take_while(|e| now - e.1 > to).count();
                            expected.extend(model[l].drain(..k).map(|e| e.0));
                        }
                        prop_assert_eq!(n, expected.len());
                        prop_assert_eq!(ev.len(), n);
                        for (e, k) in ev.iter().zip(expected) {
                            prop_assert!(matches!(e, FlowEvent::End(r, EndReason::IdleTimeout) if r.key == k));
                        }
                    }
                }
                prop_assert!(t.len() <= cap);
                prop_assert!(t.embryonic() <= emb_max);
                prop_assert_eq!(t.len(), model[0].len() + model[1].len());
                prop_assert_eq!(t.embryonic(), model[0].len());
                let order: Vec<FlowKey> = t.iter_lru().map(|r| r.key).collect();
                let model_order: Vec<FlowKey> = model.iter().flatten().map(|e| e.0).collect();
                prop_assert_eq!(order, model_order);
                let c = t.counters();
                prop_assert_eq!(c.started, c.ended_idle + c.evicted + c.ended_shutdown + c.ended_closed + t.len() as u64);
            }
            let mut ev = Vec::new();
            t.drain(&mut collect(&mut ev));
            let c = t.counters();
            prop_assert_eq!(c.started, c.ended_idle + c.evicted + c.ended_shutdown);
            prop_assert!(t.is_empty());
        }
    }
}
