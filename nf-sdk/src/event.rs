//! [`Event`]: the borrowed view a callback gets of one μEvent.
//!
//! It owns nothing: the header is copied out of the slot, the packet bytes
//! are borrowed from the arena for the duration of the callback. It must not
//! touch the slot or the packet after the callback returns (the borrow
//! checker enforces that for the packet).

use ubox_shm::event::{EventHeader, SIDE_SERVER, SNAPSHOT_LEN};
use ustack::event::EventTypeId;
use ustack::flow::Side;

/// One μEvent as a callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    header: EventHeader,
    type_id: EventTypeId,
    packet: Option<&'a [u8]>,
}

impl<'a> Event<'a> {
    /// A view over a header and the packet bytes it names (already resolved
    /// in the arena). Used by the run loop and by tests of callbacks.
    pub fn new(header: EventHeader, type_id: EventTypeId, packet: Option<&'a [u8]>) -> Event<'a> {
        Event { header, type_id, packet }
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

    /// The raw header as the runtime wrote it.
    pub fn header(&self) -> &EventHeader {
        &self.header
    }
}
