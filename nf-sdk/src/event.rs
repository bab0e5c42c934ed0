//! [`Event`]: the borrowed view a callback gets of one μEvent.
//!
//! It owns nothing: the header is copied out of the slot, the packet bytes
//! and the payload are borrowed from the arena for the duration of the
//! callback. It must not touch the slot or the packet after the callback
//! returns (the borrow checker enforces that).
//!
//! From inside a callback an NF may also
//! - **publish** events of the types its manifest lists under
//!   `publishes` ([`Event::publish`], [`Event::publish_value`]): they go
//!   about the same flow and side, with a `#[repr(C)]` payload, to every
//!   other NF that subscribes to the type (or a supertype);
//! - **rewrite the packet in place** when its manifest says it modifies
//!   packets ([`Event::write_packet`]), then answer
//!   [`Verdict::Modified`](crate::Verdict::Modified): the runtime refreshes
//!   the IPv4 and TCP/UDP checksums. The packet keeps its length.

use std::cell::RefCell;

use ubox_shm::event::{
    payload_room, EventHeader, FlowDest, FlowEnd, FlowReq, FlowStart, StreamRef, SIDE_SERVER, SNAPSHOT_LEN,
};
use ubox_shm::Arena;
use ustack::event::{EventTypeId, DATA_RDY, FLOW_END, FLOW_REQ, FLOW_START, FLOW_TCP};
use ustack::flow::Side;
use ustack::tcp::{ReadError, RingReader, TcpSnapshot};

/// Most events one callback may publish.
pub const MAX_PUBLISH_PER_EVENT: usize = 8;

/// Why [`Event::publish`] or [`Event::write_packet`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The type is not in the manifest's `publishes` list.
    #[error("cannot publish {path}: the NF's manifest does not list it under `publishes`")]
    NotPublished {
        /// The path asked for.
        path: String,
    },
    /// The payload does not fit in an event slot.
    #[error("payload of {len} bytes does not fit in an event slot ({max} bytes of room)")]
    PayloadTooLarge {
        /// Bytes given.
        len: usize,
        /// Bytes of room after the header.
        max: usize,
    },
    /// This callback already published [`MAX_PUBLISH_PER_EVENT`] events.
    #[error("at most {MAX_PUBLISH_PER_EVENT} events may be published per callback")]
    TooMany,
    /// The manifest does not say the NF modifies packets.
    #[error("this NF may not write packets: declare it with NfBuilder::modifies_packets(true)")]
    NotWritable,
    /// The event carries no packet, or the write would leave it.
    #[error("write of {len} bytes at {at} falls outside the {pkt_len}-byte packet")]
    OutOfPacket {
        /// Offset asked for.
        at: usize,
        /// Bytes asked for.
        len: usize,
        /// Packet length (0 when the event has none).
        pkt_len: usize,
    },
    /// The event was built outside a running NF (a test's `Event::new`).
    #[error("this event is not attached to a running NF session")]
    Detached,
}

/// An event an NF asked to publish, sent after its callback returns.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub type_id: EventTypeId,
    pub flow_id: u64,
    pub side: u8,
    pub payload: Vec<u8>,
}

/// What a callback's events reach of the session: the arena (for packet
/// writes), the NF's publications and the outbox.
pub(crate) struct Context<'a> {
    pub arena: &'a Arena,
    pub modifies: bool,
    pub publications: &'a [(String, EventTypeId)],
    pub slot_size: usize,
    pub outbox: RefCell<Vec<Outgoing>>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("modifies", &self.modifies).field("publications", &self.publications).finish()
    }
}

/// One μEvent as a callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    header: EventHeader,
    type_id: EventTypeId,
    packet: Option<&'a [u8]>,
    payload: &'a [u8],
    ctx: Option<&'a Context<'a>>,
}

impl<'a> Event<'a> {
    /// A view over a header and the packet bytes it names (already resolved
    /// in the arena), with no payload and no session: for tests of
    /// callbacks. `publish` and `write_packet` answer [`EventError::Detached`].
    pub fn new(header: EventHeader, type_id: EventTypeId, packet: Option<&'a [u8]>) -> Event<'a> {
        Event { header, type_id, packet, payload: &[], ctx: None }
    }

    /// A detached view that also carries a published event's payload bytes.
    pub fn with_payload(header: EventHeader, type_id: EventTypeId, payload: &'a [u8]) -> Event<'a> {
        Event { header, type_id, packet: None, payload, ctx: None }
    }

    pub(crate) fn attached(
        header: EventHeader,
        type_id: EventTypeId,
        packet: Option<&'a [u8]>,
        payload: &'a [u8],
        ctx: &'a Context<'a>,
    ) -> Event<'a> {
        Event { header, type_id, packet, payload, ctx: Some(ctx) }
    }

    /// The event's type, e.g. `PKT/TCP`.
    pub fn type_id(&self) -> EventTypeId {
        self.type_id
    }

    /// True when the event's type is `t` or one of its subtypes.
    pub fn is(&self, t: EventTypeId) -> bool {
        self.type_id.is_subtype_of(t)
    }

    /// The flow the event belongs to (unique per worker).
    pub fn flow_id(&self) -> u64 {
        self.header.flow_id
    }

    /// Which endpoint of the flow the event concerns.
    pub fn side(&self) -> Side {
        if self.header.side == SIDE_SERVER {
            Side::Server
        } else {
            Side::Client
        }
    }

    /// The worker that published it.
    pub fn worker(&self) -> u32 {
        u32::from(self.header.worker)
    }

    /// Sequence number of the event on its worker.
    pub fn seq(&self) -> u32 {
        self.header.seq
    }

    /// For bytestream events: the stream offset before which the stream will
    /// not change while this event is outstanding (0 for packet events).
    pub fn frontier(&self) -> u64 {
        self.header.frontier
    }

    /// Publisher: 0 for the runtime's stacks, else an NF id.
    pub fn publisher(&self) -> u16 {
        self.header.publisher
    }

    /// The stack snapshot copied at publish time (TCP state, seq/ack, ...).
    pub fn snapshot(&self) -> &[u8; SNAPSHOT_LEN] {
        &self.header.snapshot
    }

    /// The packet bytes, zero-copy from the arena, when the event carries a
    /// packet (and its reference lies inside the arena's data region).
    pub fn packet(&self) -> Option<&'a [u8]> {
        self.packet
    }

    /// The bytes after the header in the event's slot: the payload of an
    /// event another NF published (zeros past what it wrote).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The payload read as `T` (unaligned copy), or `None` when the slot
    /// holds fewer than `size_of::<T>()` payload bytes.
    pub fn payload_as<T: bytemuck::AnyBitPattern>(&self) -> Option<T> {
        let b = self.payload.get(..std::mem::size_of::<T>())?;
        Some(bytemuck::pod_read_unaligned(b))
    }

    /// For `FLOW/TCP/...` and `DATA_RDY/...` events: the TCP monitor's
    /// snapshot of the side the event concerns (state, next sequence number,
    /// acknowledgment, window, timestamps), copied when it was published.
    pub fn tcp(&self) -> Option<TcpSnapshot> {
        (self.is(FLOW_TCP) || self.is(DATA_RDY)).then(|| TcpSnapshot::from_bytes(&self.header.snapshot))
    }

    /// For `DATA_RDY/CLIENT` and `DATA_RDY/SERVER`: the side's reassembled
    /// bytestream, readable up to the frontier ([`Event::frontier`]).
    pub fn stream(&self) -> Option<StreamData<'a>> {
        if !self.is(DATA_RDY) {
            return None;
        }
        let r = StreamRef::from_bytes(self.payload)?;
        let ctx = self.ctx?;
        let ring = ctx.arena.packet(r.ring_off, r.ring_len)?;
        Some(StreamData { r, ring, written: ctx.arena.load_u64(r.written_off).unwrap_or(r.end), ctx })
    }

    /// For `FLOW/START`: the new flow's five-tuple (client first) and when
    /// it was first seen. Delivered before the flow's first `PKT` event.
    pub fn flow_start(&self) -> Option<FlowStart> {
        self.is(FLOW_START).then(|| FlowStart::from_bytes(self.payload)).flatten()
    }

    /// For `FLOW/END`: the flow's five-tuple, counts and how it ended.
    pub fn flow_end(&self) -> Option<FlowEnd> {
        self.is(FLOW_END).then(|| FlowEnd::from_bytes(self.payload)).flatten()
    }

    /// For `FLOW_REQ` (the splicer asks where a connection should go): the
    /// client, the VIP and the attempt; the request bytes are
    /// [`packet`](Self::packet).
    pub fn flow_req(&self) -> Option<FlowReq> {
        self.is(FLOW_REQ).then(|| FlowReq::from_bytes(self.payload)).flatten()
    }

    /// Answers a `FLOW_REQ`: publishes `FLOW_DEST` with `dest` about this
    /// event's flow (the manifest must declare `.publishes("FLOW_DEST")`).
    pub fn answer_dest(&self, dest: &FlowDest) -> Result<(), EventError> {
        self.publish("FLOW_DEST", &dest.to_bytes())
    }

    /// The raw header as the runtime wrote it.
    pub fn header(&self) -> &EventHeader {
        &self.header
    }

    /// Publishes an event of type `path` (one of the manifest's
    /// `publishes`) about this event's flow and side, carrying `payload`.
    /// It is sent when the callback returns, before its verdict.
    pub fn publish(&self, path: &str, payload: &[u8]) -> Result<(), EventError> {
        let ctx = self.ctx.ok_or(EventError::Detached)?;
        let type_id = ctx
            .publications
            .iter()
            .find(|(p, _)| p == path)
            .map(|&(_, t)| t)
            .ok_or_else(|| EventError::NotPublished { path: path.to_owned() })?;
        let max = payload_room(ctx.slot_size);
        if payload.len() > max {
            return Err(EventError::PayloadTooLarge { len: payload.len(), max });
        }
        let mut outbox = ctx.outbox.borrow_mut();
        if outbox.len() >= MAX_PUBLISH_PER_EVENT {
            return Err(EventError::TooMany);
        }
        outbox.push(Outgoing {
            type_id,
            flow_id: self.header.flow_id,
            side: self.header.side,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    /// [`publish`](Self::publish) with a `#[repr(C)]` value
    /// (`#[derive(Pod, Zeroable)]` through [`crate::bytemuck`]) as payload.
    pub fn publish_value<T: bytemuck::NoUninit>(&self, path: &str, value: &T) -> Result<(), EventError> {
        self.publish(path, bytemuck::bytes_of(value))
    }

    /// Overwrites packet bytes `at..at + bytes.len()` in place (zero copy:
    /// the arena holds the runtime's mbuf). Only for NFs whose manifest
    /// says they modify packets; answer `Verdict::Modified` afterwards so
    /// the runtime refreshes the checksums. [`packet`](Self::packet) shows
    /// the new bytes.
    pub fn write_packet(&self, at: usize, bytes: &[u8]) -> Result<(), EventError> {
        let ctx = self.ctx.ok_or(EventError::Detached)?;
        if !ctx.modifies {
            return Err(EventError::NotWritable);
        }
        let pkt_len = self.packet.map_or(0, <[u8]>::len);
        let out = || EventError::OutOfPacket { at, len: bytes.len(), pkt_len };
        let end = at.checked_add(bytes.len()).ok_or_else(out)?;
        if self.packet.is_none() || end > pkt_len {
            return Err(out());
        }
        ctx.arena.write_packet(self.header.pkt_off + at as u64, bytes).ok_or_else(out)
    }
}

/// One side's reassembled bytestream, as a `DATA_RDY` event shows it.
///
/// Stream offsets count the side's payload bytes from its first one. The
/// event announces [`new_range`](Self::new_range) (`start..end`, `end` being
/// the frontier); those bytes are pinned until the callback returns, so
/// [`new_bytes`](Self::new_bytes) always succeeds. Older bytes may still be
/// in the ring: [`read`](Self::read) gives them back, or
/// [`ReadError::Overwritten`] once the ring has moved past them (never
/// silently different bytes). Reads return up to two slices because the
/// range may cross the ring's end.
#[derive(Clone, Copy)]
pub struct StreamData<'a> {
    r: StreamRef,
    ring: &'a [u8],
    written: u64,
    ctx: &'a Context<'a>,
}

impl std::fmt::Debug for StreamData<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamData").field("ref", &self.r).field("written", &self.written).finish()
    }
}

impl<'a> StreamData<'a> {
    /// The range this event announces.
    pub fn new_range(&self) -> std::ops::Range<u64> {
        self.r.start..self.r.end
    }

    /// The announced bytes (first slice, then the wrapped remainder).
    pub fn new_bytes(&self) -> Result<(&'a [u8], &'a [u8]), ReadError> {
        self.read(self.r.start..self.r.end)
    }

    /// Bytes `range` of the stream, if still in the ring and below the
    /// frontier. Re-checks the writer's progress after the read, so bytes
    /// overwritten meanwhile give an error.
    pub fn read(&self, range: std::ops::Range<u64>) -> Result<(&'a [u8], &'a [u8]), ReadError> {
        let out = RingReader::new(self.ring, self.r.end, self.written).read(range.clone())?;
        let now = self.ctx.arena.load_u64(self.r.written_off).unwrap_or(self.written);
        if range.start < now.saturating_sub(self.ring.len() as u64) {
            return Err(ReadError::Overwritten);
        }
        Ok(out)
    }

    /// Non-zero when reassembly of this side stopped (1 buffer full, 2 no
    /// buffer, 3 gap): this is the last `DATA_RDY` of the side.
    pub fn stopped(&self) -> u32 {
        self.r.stopped
    }

    /// Bytes the ring holds (how far back [`read`](Self::read) can reach).
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }
}
