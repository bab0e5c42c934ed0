//! What travels between a worker and an NF: the ring entries
//! ([`Desc`] to the NF, [`Answer`] back) and, for events that carry more
//! than a packet reference, the [`EventHeader`] and payload in a slot.
//!
//! A `PKT` event is one 32-byte [`Desc`] on the NF's descriptor ring: type,
//! flow, side, the packet's arena offset and length, and a cookie the NF
//! echoes in its [`Answer`]. No slot, no header: everything the NF needs is
//! in the entry. Events with a stack snapshot, a frontier or a payload
//! (`FLOW/TCP/...`, `DATA_RDY`, `FLOW/END`, events NFs publish) put the
//! full [`EventHeader`] and payload in a slot and name it in the
//! descriptor ([`DESC_SLOT`]). Everything is a plain `#[repr(C)]` value
//! with offsets, never pointers, so both sides agree whatever address they
//! mapped the arena at. Sizes are fixed by const assertions; change
//! [`crate::LAYOUT_VERSION`] with them.

use std::sync::atomic::AtomicU64;

use crate::ring::Entry;

/// No answer yet.
pub const VERDICT_PENDING: u8 = 0;
/// Let the packet continue.
pub const VERDICT_PASS: u8 = 1;
/// Drop the packet.
pub const VERDICT_DROP: u8 = 2;
/// The NF rewrote the packet in place (only NFs that declared it).
pub const VERDICT_MODIFIED: u8 = 3;

/// [`Desc::flags`]: `data` is the index of a slot whose payload starts with
/// the full [`EventHeader`] (and the event's payload after it); the
/// event carries no packet.
pub const DESC_SLOT: u8 = 1;

/// One event on an NF's descriptor ring (32 bytes, four words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// Hierarchical type id (`ustack::event::EventTypeId`).
    pub type_id: u64,
    /// Flow the event belongs to (unique per worker).
    pub flow_id: u64,
    /// Without [`DESC_SLOT`]: the packet's offset from the arena base (0:
    /// no packet). With it: the slot index holding header and payload.
    pub data: u64,
    /// Packet length in bytes (0 with [`DESC_SLOT`]).
    pub len: u16,
    /// `SIDE_CLIENT` or `SIDE_SERVER`.
    pub side: u8,
    /// `DESC_*` bits.
    pub flags: u8,
    /// The worker's handle for this event: the NF echoes it in its answer.
    pub cookie: u32,
}

const _: () = assert!(std::mem::size_of::<Desc>() == 32);

impl Desc {
    /// The slot this event's header and payload sit in, if it has one.
    pub fn slot(&self) -> Option<u32> {
        (self.flags & DESC_SLOT != 0).then(|| self.data.min(u64::from(u32::MAX)) as u32)
    }
}

impl Entry for Desc {
    const WORDS: usize = 4;
    #[inline(always)]
    fn store(&self, to: &[AtomicU64]) {
        use std::sync::atomic::Ordering::Relaxed;
        to[0].store(self.type_id, Relaxed);
        to[1].store(self.flow_id, Relaxed);
        to[2].store(self.data, Relaxed);
        let w3 = u64::from(self.len)
            | u64::from(self.side) << 16
            | u64::from(self.flags) << 24
            | u64::from(self.cookie) << 32;
        to[3].store(w3, Relaxed);
    }
    #[inline(always)]
    fn load(from: &[AtomicU64]) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let w3 = from[3].load(Relaxed);
        Desc {
            type_id: from[0].load(Relaxed),
            flow_id: from[1].load(Relaxed),
            data: from[2].load(Relaxed),
            len: w3 as u16,
            side: (w3 >> 16) as u8,
            flags: (w3 >> 24) as u8,
            cookie: (w3 >> 32) as u32,
        }
    }
}

/// [`Answer::kind`]: the verdict on the event with this cookie.
pub const ANSWER_VERDICT: u8 = 0;
/// [`Answer::kind`]: an event the NF publishes; the cookie field is the
/// slot it allocated and filled (the runtime frees it).
pub const ANSWER_PUBLISH: u8 = 1;

/// One entry of an NF's answer ring (8 bytes): `cookie | verdict << 32 |
/// kind << 40`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer(pub u64);

impl Answer {
    /// The verdict (`VERDICT_*`) on the event `cookie` names.
    pub fn verdict(cookie: u32, verdict: u8) -> Answer {
        Answer(u64::from(cookie) | u64::from(verdict) << 32 | u64::from(ANSWER_VERDICT) << 40)
    }

    /// An event the NF published in `slot`.
    pub fn publish(slot: u32) -> Answer {
        Answer(u64::from(slot) | u64::from(ANSWER_PUBLISH) << 40)
    }

    /// The cookie (or, for a publication, the slot).
    pub fn cookie(self) -> u32 {
        self.0 as u32
    }

    /// The `VERDICT_*` code.
    pub fn code(self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// `ANSWER_VERDICT` or `ANSWER_PUBLISH` (anything else is malformed).
    pub fn kind(self) -> u8 {
        (self.0 >> 40) as u8
    }
}

impl Entry for Answer {
    const WORDS: usize = 1;
    #[inline(always)]
    fn store(&self, to: &[AtomicU64]) {
        self.0.store(to);
    }
    #[inline(always)]
    fn load(from: &[AtomicU64]) -> Self {
        Answer(u64::load(from))
    }
}

/// Bytes after the header in a slot of `slot_size` bytes: room for a
/// published event's `#[repr(C)]` payload.
pub const fn payload_room(slot_size: usize) -> usize {
    slot_size.saturating_sub(EVENT_HEADER_LEN)
}

/// Payload of a `DATA_RDY/...` event: where the side's bytestream ring is
/// and which range is new. Bytes `[start, end)` sit at stream offsets, at
/// ring index `offset % ring_len`; `end` is also the header's `frontier`.
/// The `u64` at `written_off` says how far the ring has been written (a
/// reader of older bytes checks it to detect overwriting).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamRef {
    pub start: u64,
    pub end: u64,
    /// Arena offset of the ring's first byte.
    pub ring_off: u64,
    /// Arena offset of the ring's "written up to" cell.
    pub written_off: u64,
    pub ring_len: u32,
    /// Non-zero once reassembly of this side stopped (1 buffer full,
    /// 2 no buffer, 3 gap): no further `DATA_RDY` follows.
    pub stopped: u32,
}

/// Payload of `FLOW/START`: a new flow's five-tuple (client first: the
/// sender of its first packet) and when it was first seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStart {
    /// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub client_addr: [u8; 16],
    pub server_addr: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
    /// Nanoseconds, on the runtime's monotonic clock (as `FlowEnd`'s).
    pub first_seen: u64,
}

/// Payload of `FLOW/END`: the finished flow's five-tuple (client first),
/// counts and how it ended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEnd {
    /// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub client_addr: [u8; 16],
    pub server_addr: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub proto: u8,
    /// `FLOW_END_*`.
    pub reason: u8,
    pub _pad: [u8; 2],
    pub client_packets: u64,
    pub client_bytes: u64,
    pub server_packets: u64,
    pub server_bytes: u64,
    /// TCP payload bytes each side sent in order (monitored flows; 0 else).
    pub client_payload: u64,
    pub server_payload: u64,
    /// Nanoseconds, on the runtime's monotonic clock.
    pub first_seen: u64,
    pub last_seen: u64,
}

/// `FlowEnd::reason`: idle past the flow table's timeout.
pub const FLOW_END_IDLE: u8 = 1;
/// Evicted to make room.
pub const FLOW_END_EVICTED: u8 = 2;
/// The runtime stopped.
pub const FLOW_END_SHUTDOWN: u8 = 3;
/// TCP closed by FIN from both sides.
pub const FLOW_END_TCP_CLOSED: u8 = 4;
/// TCP reset.
pub const FLOW_END_TCP_RESET: u8 = 5;
/// TCP timed out in the monitor.
pub const FLOW_END_TCP_TIMEOUT: u8 = 6;
/// Terminated on an NF's `FLOW/TCP/TERMINATE`.
pub const FLOW_END_TERMINATED: u8 = 7;

/// Payload of `FLOW_REQ`: a client connected to a splicer VIP and sent its
/// first request bytes; the stack asks the policy NF where the connection
/// should go. The request bytes themselves are the event's packet
/// (`EventHeader::pkt_off`/`pkt_len` name the TCP payload of the client's
/// first data segment, at most one MSS; `nf_sdk::Event::packet`). The NF
/// answers by publishing `FLOW_DEST` ([`FlowDest`]) about the same flow id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowReq {
    /// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub client_addr: [u8; 16],
    pub vip_addr: [u8; 16],
    pub client_port: u16,
    pub vip_port: u16,
    /// 0 for the first ask, `n` for the `n`-th retry after a failed backend.
    pub attempt: u8,
    /// `FLOW_REQ_NEW`, or why the previous backend failed.
    pub reason: u8,
    pub _pad: [u8; 2],
    /// The backend of the previous attempt (all zero on the first).
    pub last_addr: [u8; 16],
    pub last_port: u16,
    pub _pad2: [u8; 6],
}

/// `FlowReq::reason`: a new connection.
pub const FLOW_REQ_NEW: u8 = 0;
/// The previous backend answered the connection attempt with RST.
pub const FLOW_REQ_RESET: u8 = 1;
/// The previous backend did not answer the SYN within the connect timeout.
pub const FLOW_REQ_TIMEOUT: u8 = 2;

/// Payload of `FLOW_DEST`, published by a policy NF in answer to a
/// `FLOW_REQ` (same flow id): connect the client to `addr:port`, or reject.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowDest {
    /// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    pub port: u16,
    /// `DEST_CONNECT`, `DEST_RESET` or `DEST_503`.
    pub action: u8,
    pub _pad: [u8; 5],
}

/// `FlowDest::action`: splice the client to the backend.
pub const DEST_CONNECT: u8 = 1;
/// Reject: the client gets a RST.
pub const DEST_RESET: u8 = 2;
/// Reject: the client gets `HTTP/1.1 503 Service Unavailable` and a FIN.
pub const DEST_503: u8 = 3;

macro_rules! pod_bytes {
    ($t:ty) => {
        impl $t {
            /// The value's bytes (for a slot payload).
            pub fn to_bytes(&self) -> [u8; std::mem::size_of::<$t>()] {
                let mut out = [0u8; std::mem::size_of::<$t>()];
                // SAFETY: `$t` is repr(C), made of integers and byte arrays
                // with explicit padding fields, so every byte is initialised.
                let src =
                    unsafe { std::slice::from_raw_parts((self as *const $t).cast::<u8>(), std::mem::size_of::<$t>()) };
                out.copy_from_slice(src);
                out
            }

            /// Reads a value from the start of `b` (unaligned), if long enough.
            pub fn from_bytes(b: &[u8]) -> Option<$t> {
                let b = b.get(..std::mem::size_of::<$t>())?;
                // SAFETY: length checked; any bit pattern is a valid `$t`
                // (integers and byte arrays only); read_unaligned copes with
                // any alignment.
                Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<$t>()) })
            }
        }
    };
}
pod_bytes!(StreamRef);
pod_bytes!(FlowEnd);
pod_bytes!(FlowStart);
pod_bytes!(FlowReq);
pod_bytes!(FlowDest);
const _: () = assert!(std::mem::size_of::<StreamRef>() == 40);
const _: () = assert!(std::mem::size_of::<FlowEnd>() == 104);
const _: () = assert!(std::mem::size_of::<FlowStart>() == 48);
const _: () = assert!(std::mem::size_of::<FlowReq>() == 64);
const _: () = assert!(std::mem::size_of::<FlowDest>() == 24);

/// Which endpoint of a flow an event concerns.
pub const SIDE_CLIENT: u8 = 0;
pub const SIDE_SERVER: u8 = 1;

/// Room for a stack's snapshot of one side of a flow (TCP state, seq/ack,
/// window, timestamp), copied at publish time.
pub const SNAPSHOT_LEN: usize = 24;

/// Common header of every event (72 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// Hierarchical type id (`ustack::event::EventTypeId`).
    pub type_id: u64,
    /// Flow the event belongs to (unique per worker).
    pub flow_id: u64,
    /// Packet bytes: offset from the arena base (0 when there is no packet).
    pub pkt_off: u64,
    /// Packet length in bytes.
    pub pkt_len: u32,
    /// Publisher: 0 for the runtime's stacks, else an NF id.
    pub publisher: u16,
    /// Worker that published it (its rings carry the answer back).
    pub worker: u8,
    /// `SIDE_CLIENT` or `SIDE_SERVER`.
    pub side: u8,
    /// Unused (answers travel on the answer ring); zero.
    pub reserved: u32,
    /// Sequence number of the event on its worker (for checks and traces).
    pub seq: u32,
    /// Stack snapshot, copied at publish time.
    pub snapshot: [u8; SNAPSHOT_LEN],
    /// For bytestream events: the stream offset before which the stream will
    /// not change while this event is outstanding (0 otherwise).
    pub frontier: u64,
}

/// Bytes of [`EventHeader`].
pub const EVENT_HEADER_LEN: usize = std::mem::size_of::<EventHeader>();
const _: () = assert!(EVENT_HEADER_LEN == 72);
const _: () = assert!(std::mem::align_of::<EventHeader>() == 8);

impl EventHeader {
    /// Reads a header from the start of a slot payload (copying it out).
    pub fn read(payload: &[u8]) -> Option<EventHeader> {
        let b = payload.get(..EVENT_HEADER_LEN)?;
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let mut snapshot = [0u8; SNAPSHOT_LEN];
        snapshot.copy_from_slice(&b[40..40 + SNAPSHOT_LEN]);
        Some(EventHeader {
            type_id: u64_at(0),
            flow_id: u64_at(8),
            pkt_off: u64_at(16),
            pkt_len: u32_at(24),
            publisher: u16::from_ne_bytes([b[28], b[29]]),
            worker: b[30],
            side: b[31],
            reserved: u32_at(32),
            seq: u32_at(36),
            snapshot,
            frontier: u64_at(64),
        })
    }

    /// Writes the header to the start of a slot payload.
    pub fn write(&self, payload: &mut [u8]) -> Option<()> {
        let b = payload.get_mut(..EVENT_HEADER_LEN)?;
        b[0..8].copy_from_slice(&self.type_id.to_ne_bytes());
        b[8..16].copy_from_slice(&self.flow_id.to_ne_bytes());
        b[16..24].copy_from_slice(&self.pkt_off.to_ne_bytes());
        b[24..28].copy_from_slice(&self.pkt_len.to_ne_bytes());
        b[28..30].copy_from_slice(&self.publisher.to_ne_bytes());
        b[30] = self.worker;
        b[31] = self.side;
        b[32..36].copy_from_slice(&self.reserved.to_ne_bytes());
        b[36..40].copy_from_slice(&self.seq.to_ne_bytes());
        b[40..40 + SNAPSHOT_LEN].copy_from_slice(&self.snapshot);
        b[64..72].copy_from_slice(&self.frontier.to_ne_bytes());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_its_declared_offsets() {
        let h = EventHeader {
            type_id: 0x0101_0000_0000_0000,
            flow_id: 7,
            pkt_off: 4 << 20,
            pkt_len: 1514,
            publisher: 3,
            worker: 1,
            side: SIDE_SERVER,
            reserved: 0,
            seq: 42,
            snapshot: [9; SNAPSHOT_LEN],
            frontier: 1 << 40,
        };
        let mut buf = [0u8; 128];
        h.write(&mut buf).unwrap();
        assert_eq!(EventHeader::read(&buf), Some(h));
        // The byte offsets used by read/write are the repr(C) field offsets.
        assert_eq!(std::mem::offset_of!(EventHeader, reserved), 32);
        assert_eq!(std::mem::offset_of!(EventHeader, snapshot), 40);
        assert_eq!(std::mem::offset_of!(EventHeader, frontier), 64);
        assert!(EventHeader::read(&buf[..71]).is_none());
    }

    #[test]
    fn desc_and_answer_round_trip_through_words() {
        let d = Desc {
            type_id: 0x0101_0000_0000_0000,
            flow_id: u64::MAX - 3,
            data: (1 << 40) + 130,
            len: 1514,
            side: SIDE_SERVER,
            flags: DESC_SLOT,
            cookie: 0xdead_beef,
        };
        let words: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        d.store(&words);
        assert_eq!(Desc::load(&words), d);
        assert_eq!(d.slot(), Some(u32::MAX), "an out-of-range slot saturates, and the pool refuses it");
        assert_eq!(Desc { flags: 0, ..d }.slot(), None);
        let a = Answer::verdict(0xffff_fff0, VERDICT_DROP);
        assert_eq!((a.cookie(), a.code(), a.kind()), (0xffff_fff0, VERDICT_DROP, ANSWER_VERDICT));
        let p = Answer::publish(77);
        assert_eq!((p.cookie(), p.kind()), (77, ANSWER_PUBLISH));
        a.store(&words[..1]);
        assert_eq!(Answer::load(&words[..1]), a);
    }
}
