//! The per-flow monitor: twin TCP state machines seen from the middle,
//! events with snapshots, and connection termination.
//!
//! See the [module docs](super) for the rules this code follows.

use core::fmt;

use super::reasm::{Insert, OverlapPolicy, Reassembler, StopReason, MAX_OOO_RANGES};
use super::seq::{rel_offset, seq_at, seq_diff, seq_gt, seq_max};
use crate::event::{self, EventTypeId};
use crate::flow::Side;
use crate::wire::{TcpFlags, TcpOption, TcpPacket};

/// One second in the monitor's time unit (nanoseconds).
pub const SECOND: u64 = 1_000_000_000;

/// Window assumed when the receiver's window is unknown (never advertised,
/// or its scale not seen): the largest TCP can express, `65535 << 14`
/// (about 1 GiB).
pub const UNKNOWN_WINDOW: u64 = 65_535 << 14;

/// Shift assumed for window checks when the real one was not seen.
const LENIENT_SHIFT: u8 = 14;

/// The other side.
#[inline]
fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// Which sides of a connection to reassemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sides {
    /// Neither: state tracking only.
    None,
    /// The client's stream only.
    Client,
    /// The server's stream only.
    Server,
    /// Both streams.
    #[default]
    Both,
}

impl Sides {
    /// Whether `side` is included.
    #[inline]
    pub fn contains(self, side: Side) -> bool {
        matches!((self, side), (Sides::Both, _) | (Sides::Client, Side::Client) | (Sides::Server, Side::Server))
    }
}

/// Settings of the TCP monitor, shared by all connections of a worker and
/// passed to every call. Times are in the caller's unit (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Which bytes win on overlaps. Default [`OverlapPolicy::FirstWins`].
    pub overlap: OverlapPolicy,
    /// Out-of-order ranges held per side, at most [`MAX_OOO_RANGES`].
    /// Default 16.
    pub max_ooo_ranges: usize,
    /// Sides whose streams are fed to the reassemblers the caller passes
    /// (a stream passed for another side is left untouched). The runtime
    /// sets it from what the flow's subscribers need. Default both.
    pub reassemble: Sides,
    /// Idle timeout before the handshake completes (and for flows with
    /// nothing valid seen yet). Default 30 s.
    pub handshake_timeout: u64,
    /// Idle timeout of an established connection. Default 300 s.
    pub established_timeout: u64,
    /// Idle timeout once a FIN was seen and the close is not complete
    /// (half-closed connections can idle a while). Default 60 s.
    pub closing_timeout: u64,
    /// How long a closed (FIN/FIN/ACK, RST or terminated) connection keeps
    /// its state, so late retransmissions and ACKs are recognised (and, once
    /// terminated, dropped) rather than picked up as a new flow. Default 10 s.
    pub linger: u64,
    /// Bytes accepted beyond the receiver's advertised right window edge
    /// (and before the left one) before data counts as out of window.
    /// Default 65536.
    pub window_slack: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            overlap: OverlapPolicy::FirstWins,
            max_ooo_ranges: MAX_OOO_RANGES,
            reassemble: Sides::Both,
            handshake_timeout: 30 * SECOND,
            established_timeout: 300 * SECOND,
            closing_timeout: 60 * SECOND,
            linger: 10 * SECOND,
            window_slack: 65_536,
        }
    }
}

/// TCP options the monitor uses, parsed from one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SegmentOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift (as sent; values above 14 are treated as 14).
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Timestamps `(TSval, TSecr)`.
    pub timestamps: Option<(u32, u32)>,
}

impl SegmentOptions {
    /// Parses an option iterator, keeping what came before a malformed option.
    pub fn parse<'a>(opts: impl Iterator<Item = crate::wire::Result<TcpOption<'a>>>) -> SegmentOptions {
        let mut o = SegmentOptions::default();
        for opt in opts {
            match opt {
                Ok(TcpOption::MaxSegmentSize(m)) => o.mss = Some(m),
                Ok(TcpOption::WindowScale(w)) => o.wscale = Some(w),
                Ok(TcpOption::SackPermitted) => o.sack_permitted = true,
                Ok(TcpOption::Timestamps { tsval, tsecr }) => o.timestamps = Some((tsval, tsecr)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        o
    }

    /// Parses the raw option bytes (the header after byte 20). The layouts
    /// nearly every segment has, none and Linux's `NOP NOP TS`, are read
    /// directly (same result as [`parse`](Self::parse), 10 ns less per
    /// segment than the general walk).
    #[inline]
    pub fn from_raw(raw: &[u8]) -> SegmentOptions {
        match raw {
            [] => SegmentOptions::default(),
            [1, 1, 8, 10, ts @ ..] if ts.len() == 8 => SegmentOptions {
                timestamps: Some((
                    u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]]),
                    u32::from_be_bytes([ts[4], ts[5], ts[6], ts[7]]),
                )),
                ..SegmentOptions::default()
            },
            _ => SegmentOptions::parse(crate::wire::tcp::TcpOptions::new(raw)),
        }
    }
}

/// The parts of a TCP segment the monitor reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Flags.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Window field, unscaled as on the wire.
    pub window: u16,
    /// Options.
    pub options: SegmentOptions,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    /// A segment without options (tests, tools).
    pub fn new(flags: TcpFlags, seq: u32, ack: u32, window: u16, payload: &'a [u8]) -> Segment<'a> {
        Segment { flags, seq, ack, window, options: SegmentOptions::default(), payload }
    }

    /// The same segment with `options`.
    pub fn with_options(mut self, options: SegmentOptions) -> Segment<'a> {
        self.options = options;
        self
    }

    /// Reads a segment from a TCP header view (checked with `new_checked`).
    pub fn from_packet<T: AsRef<[u8]>>(packet: &'a TcpPacket<T>) -> Segment<'a> {
        Segment {
            flags: packet.flags(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            window: packet.window_len(),
            options: SegmentOptions::from_raw(packet.options_raw()),
            payload: packet.payload(),
        }
    }
}

/// The state of one endpoint as inferred from the middle (RFC 9293 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpState {
    /// Nothing seen from it, or the connection is over (closed or reset).
    Closed = 0,
    /// It has not sent anything, but its peer sent a SYN.
    Listen = 1,
    /// Sent a SYN, has not acknowledged the peer's.
    SynSent = 2,
    /// Sent a SYN-ACK, its SYN not yet acknowledged.
    SynReceived = 3,
    /// Open both ways (or picked up mid-stream).
    Established = 4,
    /// Closed first; its FIN not acknowledged yet.
    FinWait1 = 5,
    /// Closed first; its FIN acknowledged, the peer's not received.
    FinWait2 = 6,
    /// Acknowledged the peer's FIN, has not sent its own.
    CloseWait = 7,
    /// Both closed at once; its FIN not acknowledged yet.
    Closing = 8,
    /// Closed second; its FIN not acknowledged yet.
    LastAck = 9,
    /// Closed first; both FINs acknowledged.
    TimeWait = 10,
}

impl TcpState {
    /// From the `u8` of a [`TcpSnapshot`].
    pub fn from_u8(v: u8) -> Option<TcpState> {
        use TcpState::*;
        [Closed, Listen, SynSent, SynReceived, Established, FinWait1, FinWait2, CloseWait, Closing, LastAck, TimeWait]
            .get(usize::from(v))
            .copied()
    }

    /// RFC name, e.g. `"FIN-WAIT-1"`.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::Closed => "CLOSED",
            TcpState::Listen => "LISTEN",
            TcpState::SynSent => "SYN-SENT",
            TcpState::SynReceived => "SYN-RECEIVED",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait1 => "FIN-WAIT-1",
            TcpState::FinWait2 => "FIN-WAIT-2",
            TcpState::CloseWait => "CLOSE-WAIT",
            TcpState::Closing => "CLOSING",
            TcpState::LastAck => "LAST-ACK",
            TcpState::TimeWait => "TIME-WAIT",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a connection is in its life, as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ConnPhase {
    /// Nothing valid seen yet.
    #[default]
    Idle,
    /// A SYN was seen; the handshake has not completed.
    Handshake,
    /// Open (the handshake completed, or picked up mid-stream).
    Established,
    /// A FIN was seen; the close has not completed.
    Closing,
    /// Closed by FIN/FIN/ACK, an accepted RST or [`TcpConn::terminate`];
    /// lingers for [`MonitorConfig::linger`].
    Closed,
    /// Timed out or done lingering: the caller should free the connection.
    Finished,
}

impl ConnPhase {
    /// Lower-case name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            ConnPhase::Idle => "idle",
            ConnPhase::Handshake => "handshake",
            ConnPhase::Established => "established",
            ConnPhase::Closing => "closing",
            ConnPhase::Closed => "closed",
            ConnPhase::Finished => "finished",
        }
    }
}

impl fmt::Display for ConnPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller does with the segment it passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send it on.
    Forward,
    /// Drop it (the connection was terminated).
    Drop,
}

/// An event of the TCP monitor. Each comes with a [`TcpSnapshot`] of the
/// side it is about (for events without a side: the side whose segment
/// caused it; the client for [`TcpEvent::Timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    /// A connection attempt (the first SYN, or a SYN-ACK when the SYN was
    /// missed). Once per connection.
    Syn,
    /// The handshake completed, or the flow was picked up mid-stream
    /// (snapshot flag [`TcpSnapshot::MIDSTREAM`]). Once per connection.
    Established,
    /// `side` sent its FIN (first time seen, within the window).
    Fin {
        /// Who closed.
        side: Side,
    },
    /// `side` sent an acceptable RST; [`TcpEvent::Closed`] follows.
    Rst {
        /// Who reset.
        side: Side,
    },
    /// The connection is over: both FINs acknowledged, an accepted RST, or
    /// terminated. Once per connection; it then lingers.
    Closed,
    /// The connection idled out before closing. Once per connection.
    Timeout,
    /// New contiguous bytes of `side`'s stream: `start..end`, where `end`
    /// is the new frontier.
    DataReady {
        /// Whose stream.
        side: Side,
        /// First new offset (the previous frontier).
        start: u64,
        /// The new frontier.
        end: u64,
    },
    /// Bytes of a segment differ from bytes already stored for `side`.
    OverlapConflict {
        /// Whose stream.
        side: Side,
        /// Offset of the first differing byte.
        offset: u64,
        /// Length up to the last differing byte.
        len: u32,
    },
    /// Reassembly of `side` stopped; the flow is still forwarded.
    ReassemblyStopped {
        /// Whose stream.
        side: Side,
        /// Why.
        reason: StopReason,
    },
}

impl TcpEvent {
    /// The μEvent type this is published as. `ReassemblyStopped` has no
    /// built-in type of its own yet and is published as `FLOW/TCP`.
    pub fn type_id(&self) -> EventTypeId {
        match self {
            TcpEvent::Syn => event::FLOW_TCP_SYN,
            TcpEvent::Established => event::FLOW_TCP_ESTABLISHED,
            TcpEvent::Fin { .. } => event::FLOW_TCP_FIN,
            TcpEvent::Rst { .. } => event::FLOW_TCP_RST,
            TcpEvent::Closed => event::FLOW_TCP_CLOSED,
            TcpEvent::Timeout => event::FLOW_TCP_TIMEOUT,
            TcpEvent::DataReady { side: Side::Client, .. } => event::DATA_RDY_CLIENT,
            TcpEvent::DataReady { side: Side::Server, .. } => event::DATA_RDY_SERVER,
            TcpEvent::OverlapConflict { .. } => event::FLOW_TCP_OVERLAP_CONFLICT,
            TcpEvent::ReassemblyStopped { .. } => event::FLOW_TCP_REASM_STOPPED,
        }
    }

    /// The side the event is about, when it has one.
    pub fn side(&self) -> Option<Side> {
        match *self {
            TcpEvent::Fin { side }
            | TcpEvent::Rst { side }
            | TcpEvent::DataReady { side, .. }
            | TcpEvent::OverlapConflict { side, .. }
            | TcpEvent::ReassemblyStopped { side, .. } => Some(side),
            TcpEvent::Syn | TcpEvent::Established | TcpEvent::Closed | TcpEvent::Timeout => None,
        }
    }
}

/// One side's TCP state copied at event time: 24 bytes, `#[repr(C)]`, for
/// the common μEvent header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct TcpSnapshot {
    /// [`TcpState`] of this side, as `u8`.
    pub state: u8,
    /// Flag bits: [`TcpSnapshot::MIDSTREAM`] and the others.
    pub flags: u8,
    /// This side's window scale shift (0 when not in use or unknown).
    pub wscale: u8,
    /// 0 for the client, 1 for the server.
    pub side: u8,
    /// The next sequence number this side will send (its highest sequence
    /// end seen, SYN and FIN included); valid with [`TcpSnapshot::SEQ_VALID`].
    pub seq: u32,
    /// The highest acknowledgment number this side sent; valid with
    /// [`TcpSnapshot::ACK_VALID`].
    pub ack: u32,
    /// The receive window this side last advertised, scaled when the scale
    /// is known ([`TcpSnapshot::WSCALE_OK`]), saturating.
    pub window: u32,
    /// Latest TSval this side sent (0 if none).
    pub ts_val: u32,
    /// Latest TSecr this side sent (0 if none).
    pub ts_ecr: u32,
}

const _: () = assert!(core::mem::size_of::<TcpSnapshot>() == 24);

impl TcpSnapshot {
    /// Size in bytes.
    pub const SIZE: usize = 24;
    /// The connection was picked up mid-stream.
    pub const MIDSTREAM: u8 = 0x01;
    /// Window scaling is in use and this side's shift is known.
    pub const WSCALE_OK: u8 = 0x02;
    /// SACK was negotiated.
    pub const SACK_OK: u8 = 0x04;
    /// Timestamps were negotiated.
    pub const TS_OK: u8 = 0x08;
    /// `seq` is valid.
    pub const SEQ_VALID: u8 = 0x10;
    /// `ack` is valid.
    pub const ACK_VALID: u8 = 0x20;
    /// This side sent a FIN.
    pub const FIN_SENT: u8 = 0x40;
    /// This side sent an accepted RST.
    pub const RST_SENT: u8 = 0x80;

    /// The state field as a [`TcpState`].
    pub fn tcp_state(&self) -> Option<TcpState> {
        TcpState::from_u8(self.state)
    }

    /// The side field as a [`Side`].
    pub fn side(&self) -> Side {
        if self.side == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// Whether every bit of `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }

    /// The `#[repr(C)]` layout as bytes (native endian).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        let head = u32::from_ne_bytes([self.state, self.flags, self.wscale, self.side]);
        let words = [head, self.seq, self.ack, self.window, self.ts_val, self.ts_ecr];
        for (dst, w) in b.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// Inverse of [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(b: &[u8; 24]) -> TcpSnapshot {
        let w = |i: usize| u32::from_ne_bytes(b.get(i..i + 4).and_then(|x| x.try_into().ok()).unwrap_or([0; 4]));
        let [state, flags, wscale, side, ..] = *b;
        TcpSnapshot { state, flags, wscale, side, seq: w(4), ack: w(8), window: w(12), ts_val: w(16), ts_ecr: w(20) }
    }
}

/// Per-side monitor counters (saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideCounters {
    /// Segments (or SYNs, FINs) carrying sequence space already seen.
    pub retransmits: u32,
    /// Data segments starting beyond everything seen so far (a gap).
    pub out_of_order: u32,
    /// Segments whose data (in part or whole) was ignored: beyond the
    /// receiver's window, far behind it, before the stream or after the FIN.
    pub out_of_window: u32,
    /// RSTs from this side that were not acceptable (out of window).
    pub rst_ignored: u32,
    /// SYNs and SYN-ACKs that fit no handshake (ignored).
    pub invalid: u32,
}

/// A reset segment to build for [`TcpConn::terminate`]: flags, sequence and
/// acknowledgment numbers (ports and addresses are those of the flow, from
/// the impersonated side to the target; window 0, no payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RstSegment {
    /// `RST|ACK` when `ack` is known, else `RST`.
    pub flags: TcpFlags,
    /// Sequence number: the impersonated side's next sequence number.
    pub seq: u32,
    /// Acknowledgment number: the target's next sequence number.
    pub ack: u32,
    /// The target's last acknowledgment number when it differs from `seq`:
    /// if segments between the box and the target may have been lost, a
    /// second RST with this sequence number also resets it.
    pub alt_seq: Option<u32>,
}

/// The two resets [`TcpConn::terminate`] asks the caller to send. `None`
/// when too little is known to build one that would be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminate {
    /// Sent to the server, impersonating the client.
    pub to_server: Option<RstSegment>,
    /// Sent to the client, impersonating the server.
    pub to_client: Option<RstSegment>,
}

/// Reassembly storage of one side for one call: the side's metadata and its
/// ring (see [`Reassembler`]).
#[derive(Debug)]
pub struct Stream<'a> {
    /// The side's reassembler.
    pub reasm: &'a mut Reassembler,
    /// The side's ring (same one every call; empty = no storage).
    pub ring: &'a mut [u8],
}

/// The streams passed to one [`TcpConn::on_segment`] call. Only sides in
/// [`MonitorConfig::reassemble`] are used.
#[derive(Debug, Default)]
pub struct Streams<'a> {
    /// The client's stream, if reassembled.
    pub client: Option<Stream<'a>>,
    /// The server's stream, if reassembled.
    pub server: Option<Stream<'a>>,
}

impl<'a> Streams<'a> {
    /// No reassembly.
    pub fn none() -> Streams<'a> {
        Streams { client: None, server: None }
    }

    fn get(&mut self, side: Side) -> Option<&mut Stream<'a>> {
        match side {
            Side::Client => self.client.as_mut(),
            Side::Server => self.server.as_mut(),
        }
    }
}

/// Per-half flag bits.
mod hf {
    /// Some segment from this side was processed.
    pub const SEEN: u32 = 1 << 0;
    /// `base` is set: sequence numbers map to offsets.
    pub const SEQ_KNOWN: u32 = 1 << 1;
    /// It sent a SYN (seen, or implied by the peer's SYN-ACK).
    pub const SYN_SENT: u32 = 1 << 2;
    /// Its SYN was seen and its options recorded.
    pub const SYN_OPTS: u32 = 1 << 3;
    /// Its SYN carried ACK (it answered the handshake).
    pub const RESPONDER: u32 = 1 << 4;
    /// The peer acknowledged its SYN.
    pub const SYN_ACKED: u32 = 1 << 5;
    /// It sent an ACK.
    pub const ACK_SEEN: u32 = 1 << 6;
    /// It sent a FIN.
    pub const FIN_SENT: u32 = 1 << 7;
    /// The peer acknowledged its FIN.
    pub const FIN_ACKED: u32 = 1 << 8;
    /// It sent its FIN before acknowledging the peer's.
    pub const ACTIVE_CLOSE: u32 = 1 << 9;
    /// It sent an accepted RST.
    pub const RST_SENT: u32 = 1 << 10;
    /// Its stream was picked up mid-stream.
    pub const MIDSTREAM: u32 = 1 << 11;
    /// Its SYN offered window scaling.
    pub const WS_OFFERED: u32 = 1 << 12;
    /// Its SYN offered SACK.
    pub const SACK_OFFERED: u32 = 1 << 13;
    /// Its SYN offered timestamps.
    pub const TS_OFFERED: u32 = 1 << 14;
    /// `edge` is set.
    pub const EDGE_KNOWN: u32 = 1 << 15;
    /// It advertised a window.
    pub const WIN_SEEN: u32 = 1 << 16;
    /// Its last window came from a SYN (never scaled).
    pub const WIN_SYN: u32 = 1 << 17;
}

/// What the monitor knows of one side.
#[derive(Clone, Copy, Debug, Default)]
struct Half {
    /// Offset just after the highest sequence number it sent (FIN included).
    snd_end: u64,
    /// Highest right window edge the peer advertised for its stream.
    edge: u64,
    /// Offset of its FIN.
    fin_off: u64,
    /// Sequence number of stream offset 0 (ISN + 1, or the first seen).
    base: u32,
    /// Highest acknowledgment number it sent.
    ack: u32,
    ts_val: u32,
    ts_ecr: u32,
    /// Largest window it advertised (scaled, leniently when unknown).
    max_win: u32,
    flags: u32,
    /// Its last window field, unscaled.
    win: u16,
    mss: u16,
    /// The shift its SYN offered (clamped to 14).
    wscale: u8,
    counters: SideCounters,
}

impl Half {
    #[inline]
    fn has(&self, f: u32) -> bool {
        self.flags & f == f
    }

    #[inline]
    fn isn(&self) -> u32 {
        self.base.wrapping_sub(1)
    }

    #[inline]
    fn snd_nxt(&self) -> u32 {
        seq_at(self.base, self.snd_end)
    }

    fn take_syn(&mut self, seg: &Segment<'_>) {
        use hf::*;
        self.base = seg.seq.wrapping_add(1);
        self.snd_end = 0;
        self.flags &= !(WS_OFFERED | SACK_OFFERED | TS_OFFERED);
        self.flags |= SEQ_KNOWN | SYN_SENT | SYN_OPTS;
        let o = &seg.options;
        if let Some(ws) = o.wscale {
            self.flags |= WS_OFFERED;
            self.wscale = ws.min(LENIENT_SHIFT);
        }
        if o.sack_permitted {
            self.flags |= SACK_OFFERED;
        }
        if o.timestamps.is_some() {
            self.flags |= TS_OFFERED;
        }
        self.mss = o.mss.unwrap_or(0);
    }
}

/// Per-flow monitor state of both sides, without ring storage.
///
/// `size_of::<TcpConn>()` is 184 bytes on 64-bit targets (a test keeps it
/// at most 256).
#[derive(Clone, Debug, Default)]
pub struct TcpConn {
    client: Half,
    server: Half,
    last_seen: u64,
    dropped: u32,
    generation: u32,
    phase: ConnPhase,
    reset: bool,
    terminated: bool,
}

impl TcpConn {
    /// A connection with nothing seen.
    pub fn new() -> TcpConn {
        TcpConn::default()
    }

    fn half(&self, side: Side) -> &Half {
        match side {
            Side::Client => &self.client,
            Side::Server => &self.server,
        }
    }

    /// (the side's half, its peer's half)
    fn pair(&mut self, side: Side) -> (&mut Half, &mut Half) {
        match side {
            Side::Client => (&mut self.client, &mut self.server),
            Side::Server => (&mut self.server, &mut self.client),
        }
    }

    /// Processes one segment sent by `from` at time `now`, feeding its data
    /// to `from`'s stream in `streams` and reporting events (each with a
    /// snapshot) to `on_event`. Never panics, whatever the segment.
    pub fn on_segment(
        &mut self,
        cfg: &MonitorConfig,
        seg: &Segment<'_>,
        from: Side,
        now: u64,
        mut streams: Streams<'_>,
        on_event: &mut impl FnMut(TcpEvent, TcpSnapshot),
    ) -> Action {
        self.last_seen = now;
        if self.terminated {
            self.dropped = self.dropped.saturating_add(1);
            return Action::Drop;
        }
        let flags = seg.flags;
        if flags.contains(TcpFlags::RST) {
            self.on_rst(seg, from, on_event);
            return Action::Forward;
        }
        // The first event of a connection, reported once the segment's
        // window and timestamps are in the snapshot.
        let first = if flags.contains(TcpFlags::SYN) {
            let Some(syn) = self.on_syn(seg, from, &mut streams) else {
                return Action::Forward;
            };
            syn.map(|side| (TcpEvent::Syn, side))
        } else {
            match self.phase {
                ConnPhase::Finished => return Action::Forward,
                ConnPhase::Idle => {
                    self.phase = ConnPhase::Established;
                    let h = self.pair(from).0;
                    h.flags |= hf::MIDSTREAM;
                    if !seg.payload.is_empty() || flags.contains(TcpFlags::FIN) {
                        // Mid-stream: the first data (or FIN) sets the stream's start.
                        h.base = seg.seq;
                        h.flags |= hf::SEQ_KNOWN;
                    }
                    if flags.contains(TcpFlags::ACK) {
                        h.ack = seg.ack;
                        h.flags |= hf::ACK_SEEN;
                    }
                    Some((TcpEvent::Established, from))
                }
                _ => None,
            }
        };
        self.note_window(seg, from);
        if let Some((event, side)) = first {
            on_event(event, self.snapshot(side));
        }
        if flags.contains(TcpFlags::ACK) {
            self.on_ack(cfg, seg, from, &mut streams, on_event);
        }
        let fin = flags.contains(TcpFlags::FIN) && !flags.contains(TcpFlags::SYN);
        if !seg.payload.is_empty() || fin {
            self.on_data(cfg, seg, from, &mut streams, on_event);
        }
        if matches!(self.phase, ConnPhase::Handshake | ConnPhase::Established | ConnPhase::Closing)
            && self.client.has(hf::FIN_ACKED)
            && self.server.has(hf::FIN_ACKED)
        {
            self.phase = ConnPhase::Closed;
            on_event(TcpEvent::Closed, self.snapshot(from));
        }
        Action::Forward
    }

    fn on_rst(&mut self, seg: &Segment<'_>, from: Side, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) {
        if !self.rst_acceptable(seg, from) {
            let c = &mut self.pair(from).0.counters.rst_ignored;
            *c = c.saturating_add(1);
            return;
        }
        self.pair(from).0.flags |= hf::SEEN | hf::RST_SENT;
        if matches!(self.phase, ConnPhase::Handshake | ConnPhase::Established | ConnPhase::Closing) {
            self.reset = true;
            self.phase = ConnPhase::Closed;
            on_event(TcpEvent::Rst { side: from }, self.snapshot(from));
            on_event(TcpEvent::Closed, self.snapshot(from));
        }
    }

    /// RFC 9293 §3.10.7 acceptance, from the middle: a reply to a SYN must
    /// acknowledge it; otherwise the sequence number must be the sender's
    /// next one or lie in the receiver's window.
    fn rst_acceptable(&self, seg: &Segment<'_>, from: Side) -> bool {
        let (h, p) = (self.half(from), self.half(other(from)));
        if p.has(hf::SYN_SENT) && !p.has(hf::RESPONDER) && !h.has(hf::SYN_SENT) {
            let rel = rel_offset(seg.ack, p.base, p.snd_end);
            return seg.flags.contains(TcpFlags::ACK) && u64::try_from(rel).is_ok_and(|o| o <= p.snd_end);
        }
        if h.has(hf::SEQ_KNOWN) && seg.seq == h.snd_nxt() {
            return true;
        }
        if p.has(hf::ACK_SEEN) {
            let d = seq_diff(seg.seq, p.ack);
            return d >= 0 && (d as u64) < self.lenient_window(other(from)).max(1);
        }
        false
    }

    /// Handles a SYN or SYN-ACK: None when the segment is to be ignored,
    /// else whether to report `Syn` (with a snapshot of which side).
    fn on_syn(&mut self, seg: &Segment<'_>, from: Side, streams: &mut Streams<'_>) -> Option<Option<Side>> {
        let ack = seg.flags.contains(TcpFlags::ACK);
        if matches!(self.phase, ConnPhase::Closed | ConnPhase::Finished) {
            if !self.restarts_on(seg, from) {
                let h = self.pair(from).0;
                let old = h.has(hf::SYN_SENT) && seg.seq == h.isn();
                let c = if old { &mut h.counters.retransmits } else { &mut h.counters.invalid };
                *c = c.saturating_add(1);
                return None;
            }
            self.restart(streams);
        }
        let phase = self.phase;
        let (h, p) = self.pair(from);
        if !ack {
            if h.has(hf::SYN_SENT) {
                if seg.seq == h.isn() {
                    if seg.payload.is_empty() {
                        h.counters.retransmits = h.counters.retransmits.saturating_add(1);
                    }
                    return Some(None);
                }
                if p.has(hf::SEEN) || h.snd_end > 0 {
                    h.counters.invalid = h.counters.invalid.saturating_add(1);
                    return None;
                }
                // A new attempt with another ISN before any answer: take it.
            } else if !matches!(phase, ConnPhase::Idle | ConnPhase::Handshake) || h.has(hf::SEEN) {
                h.counters.invalid = h.counters.invalid.saturating_add(1);
                return None;
            }
            h.take_syn(seg);
            h.flags |= hf::SEEN;
            if phase == ConnPhase::Idle {
                self.phase = ConnPhase::Handshake;
                return Some(Some(from));
            }
            return Some(None);
        }
        // SYN-ACK.
        if h.has(hf::SYN_SENT) {
            if seg.seq != h.isn() {
                h.counters.invalid = h.counters.invalid.saturating_add(1);
                return None;
            }
            if h.has(hf::RESPONDER) {
                if seg.payload.is_empty() {
                    h.counters.retransmits = h.counters.retransmits.saturating_add(1);
                }
            } else {
                h.flags |= hf::RESPONDER; // simultaneous open
            }
            return Some(None);
        }
        if p.has(hf::SYN_SENT) {
            let rel = rel_offset(seg.ack, p.base, p.snd_end);
            if !u64::try_from(rel).is_ok_and(|o| o <= p.snd_end) || h.has(hf::SEEN) {
                h.counters.invalid = h.counters.invalid.saturating_add(1);
                return None;
            }
        } else if phase == ConnPhase::Idle {
            // Picked up at the SYN-ACK: the SYN it answers was not seen.
            p.base = seg.ack;
            p.snd_end = 0;
            p.flags |= hf::SEQ_KNOWN | hf::SYN_SENT;
        } else {
            h.counters.invalid = h.counters.invalid.saturating_add(1);
            return None;
        }
        h.take_syn(seg);
        h.flags |= hf::SEEN | hf::RESPONDER;
        if phase == ConnPhase::Idle {
            self.phase = ConnPhase::Handshake;
            return Some(Some(other(from)));
        }
        Some(None)
    }

    /// A new connection on the same flow: start over, streams included.
    fn restart(&mut self, streams: &mut Streams<'_>) {
        let (generation, last_seen) = (self.generation.wrapping_add(1), self.last_seen);
        *self = TcpConn { generation, last_seen, ..TcpConn::new() };
        for s in [streams.client.as_mut(), streams.server.as_mut()].into_iter().flatten() {
            s.reasm.reset();
        }
    }

    fn note_window(&mut self, seg: &Segment<'_>, from: Side) {
        let syn = seg.flags.contains(TcpFlags::SYN);
        let h = self.pair(from).0;
        h.win = seg.window;
        h.flags |= hf::WIN_SEEN | hf::SEEN;
        if syn {
            h.flags |= hf::WIN_SYN;
        } else {
            h.flags &= !hf::WIN_SYN;
        }
        if let Some((v, e)) = seg.options.timestamps {
            h.ts_val = v;
            h.ts_ecr = e;
        }
        let w = u32::try_from(self.lenient_window(from)).unwrap_or(u32::MAX);
        let h = self.pair(from).0;
        h.max_win = h.max_win.max(w);
    }

    fn on_ack(
        &mut self,
        cfg: &MonitorConfig,
        seg: &Segment<'_>,
        from: Side,
        streams: &mut Streams<'_>,
        on_event: &mut impl FnMut(TcpEvent, TcpSnapshot),
    ) {
        let to = other(from);
        let win = self.lenient_window(from);
        let (h, p) = self.pair(from);
        if !h.has(hf::ACK_SEEN) || seq_gt(seg.ack, h.ack) {
            h.ack = seg.ack;
        }
        h.flags |= hf::ACK_SEEN;
        if !p.has(hf::SEQ_KNOWN) {
            return;
        }
        let Ok(ack_off) = u64::try_from(rel_offset(seg.ack, p.base, p.snd_end)) else {
            return; // acknowledges nothing of the stream (e.g. the ISN)
        };
        if p.has(hf::SYN_SENT) {
            p.flags |= hf::SYN_ACKED;
        }
        let edge = ack_off.saturating_add(win);
        p.edge = if p.has(hf::EDGE_KNOWN) { p.edge.max(edge) } else { edge };
        p.flags |= hf::EDGE_KNOWN;
        if p.has(hf::FIN_SENT) && ack_off > p.fin_off {
            p.flags |= hf::FIN_ACKED;
        }
        let data_acked = if p.has(hf::FIN_SENT) { ack_off.min(p.fin_off) } else { ack_off };
        self.maybe_established(from, on_event);
        if cfg.reassemble.contains(to) {
            if let Some(st) = streams.get(to) {
                if let Some(reason) = st.reasm.acked(data_acked) {
                    on_event(TcpEvent::ReassemblyStopped { side: to, reason }, self.snapshot(to));
                }
            }
        }
    }

    fn maybe_established(&mut self, from: Side, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) {
        let both = hf::SYN_SENT | hf::SYN_ACKED;
        if self.phase == ConnPhase::Handshake && self.client.has(both) && self.server.has(both) {
            self.phase = ConnPhase::Established;
            on_event(TcpEvent::Established, self.snapshot(from));
        }
    }

    fn on_data(
        &mut self,
        cfg: &MonitorConfig,
        seg: &Segment<'_>,
        from: Side,
        streams: &mut Streams<'_>,
        on_event: &mut impl FnMut(TcpEvent, TcpSnapshot),
    ) {
        let syn = seg.flags.contains(TcpFlags::SYN);
        let mut fin = seg.flags.contains(TcpFlags::FIN) && !syn;
        let slack = u64::from(cfg.window_slack);
        let peer_max_win = {
            let p = self.half(other(from));
            if p.has(hf::WIN_SEEN) {
                u64::from(p.max_win)
            } else {
                UNKNOWN_WINDOW
            }
        };
        let (h, p) = self.pair(from);
        if !h.has(hf::SEQ_KNOWN) {
            // Mid-stream: the first data (or FIN) sets the stream's start.
            h.base = seg.seq;
            h.snd_end = 0;
            h.flags |= hf::SEQ_KNOWN | hf::MIDSTREAM;
        }
        let rel = rel_offset(seg.seq.wrapping_add(u32::from(syn)), h.base, h.snd_end);
        let mut payload = seg.payload;
        let off = match u64::try_from(rel) {
            Ok(o) => o,
            Err(_) => {
                // Starts before the stream: keep what lies inside it.
                let skip = usize::try_from(rel.unsigned_abs()).unwrap_or(usize::MAX);
                match payload.get(skip..) {
                    Some(rest) if !rest.is_empty() => {
                        payload = rest;
                        0
                    }
                    _ => {
                        h.counters.out_of_window = h.counters.out_of_window.saturating_add(1);
                        return;
                    }
                }
            }
        };
        let mut ignored = off == 0 && rel < 0;
        // Nothing after the FIN; a FIN elsewhere than the first one is bogus.
        let mut limit = if h.has(hf::FIN_SENT) { h.fin_off } else { u64::MAX };
        // Nothing beyond the receiver's window.
        let right = if h.has(hf::EDGE_KNOWN) { h.edge } else { h.snd_end.saturating_add(UNKNOWN_WINDOW) };
        limit = limit.min(right.saturating_add(slack));
        let full_end = off.saturating_add(payload.len() as u64);
        if full_end > limit {
            let keep = usize::try_from(limit.saturating_sub(off)).unwrap_or(usize::MAX);
            payload = payload.get(..keep).unwrap_or(payload);
            ignored = true;
            fin = false;
        }
        let end = off.saturating_add(payload.len() as u64);
        if fin && h.has(hf::FIN_SENT) && end != h.fin_off {
            fin = false;
            ignored = true;
        }
        // Nothing far behind what was already sent.
        if end.saturating_add(peer_max_win).saturating_add(slack) < h.snd_end {
            h.counters.out_of_window = h.counters.out_of_window.saturating_add(1);
            return;
        }
        if ignored {
            h.counters.out_of_window = h.counters.out_of_window.saturating_add(1);
        }
        if payload.is_empty() && !fin {
            return;
        }
        if !payload.is_empty() {
            if off < h.snd_end {
                h.counters.retransmits = h.counters.retransmits.saturating_add(1);
            } else if off > h.snd_end {
                h.counters.out_of_order = h.counters.out_of_order.saturating_add(1);
            }
            if h.has(hf::RESPONDER) {
                // It sends data, so its SYN was acknowledged (the ACK may
                // have been missed).
                h.flags |= hf::SYN_ACKED;
            }
        } else if fin && h.has(hf::FIN_SENT) {
            h.counters.retransmits = h.counters.retransmits.saturating_add(1);
        }
        h.snd_end = h.snd_end.max(end.saturating_add(u64::from(fin)));
        let new_fin = fin && !h.has(hf::FIN_SENT);
        if new_fin {
            h.flags |= hf::FIN_SENT;
            h.fin_off = end;
            if !p.has(hf::FIN_ACKED) {
                h.flags |= hf::ACTIVE_CLOSE;
            }
        }
        self.maybe_established(from, on_event);
        if !payload.is_empty() && cfg.reassemble.contains(from) {
            if let Some(st) = streams.get(from) {
                let ins = st.reasm.insert(st.ring, off, payload);
                self.report(from, ins, on_event);
            }
        }
        if new_fin {
            if matches!(self.phase, ConnPhase::Handshake | ConnPhase::Established) {
                self.phase = ConnPhase::Closing;
            }
            on_event(TcpEvent::Fin { side: from }, self.snapshot(from));
        }
    }

    fn report(&self, side: Side, ins: Insert, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) {
        if ins == Insert::default() {
            return;
        }
        let snap = self.snapshot(side);
        if let Some((offset, len)) = ins.conflict {
            on_event(TcpEvent::OverlapConflict { side, offset, len }, snap);
        }
        if let Some((start, end)) = ins.ready {
            on_event(TcpEvent::DataReady { side, start, end }, snap);
        }
        if let Some(reason) = ins.stopped {
            on_event(TcpEvent::ReassemblyStopped { side, reason }, snap);
        }
    }

    /// When [`poll`](Self::poll) has something to do: the last segment's
    /// time plus the timeout of the current phase (handshake, established,
    /// closing, or linger once closed or terminated).
    pub fn deadline(&self, cfg: &MonitorConfig) -> u64 {
        let t = if self.terminated {
            cfg.linger
        } else {
            match self.phase {
                ConnPhase::Idle | ConnPhase::Handshake => cfg.handshake_timeout,
                ConnPhase::Established => cfg.established_timeout,
                ConnPhase::Closing => cfg.closing_timeout,
                ConnPhase::Closed => cfg.linger,
                ConnPhase::Finished => 0,
            }
        };
        self.last_seen.saturating_add(t)
    }

    /// Applies timeouts at `now`: once past the [`deadline`](Self::deadline)
    /// a live connection reports [`TcpEvent::Timeout`] and a lingering one
    /// ends quietly. Returns true when the connection is
    /// [`ConnPhase::Finished`] and can be freed.
    pub fn poll(&mut self, cfg: &MonitorConfig, now: u64, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) -> bool {
        if self.phase == ConnPhase::Finished {
            return true;
        }
        if now <= self.deadline(cfg) {
            return false;
        }
        let was = self.phase;
        self.phase = ConnPhase::Finished;
        if !self.terminated && matches!(was, ConnPhase::Handshake | ConnPhase::Established | ConnPhase::Closing) {
            on_event(TcpEvent::Timeout, self.snapshot(Side::Client));
        }
        true
    }

    /// Tears the connection down (an NF's `FLOW/TCP/TERMINATE`): every
    /// later segment of the flow gets [`Action::Drop`], a live connection
    /// reports [`TcpEvent::Closed`], and the result says which resets the
    /// caller sends, one to each end, to make both give up:
    ///
    /// - to the server, as if from the client: `seq` = the client's next
    ///   sequence number (the highest sequence end the client sent, SYN and
    ///   FIN counted, or the server's ACK if that is later), `ack` = the
    ///   server's next sequence number, flags `RST|ACK`;
    /// - to the client, as if from the server: the same with the roles
    ///   swapped.
    ///
    /// Inline, every segment the impersonated side sent has been forwarded,
    /// so `seq` is exactly the target's `RCV.NXT`: Linux (RFC 5961 §3.2)
    /// resets at once only on that exact value and answers any other
    /// in-window RST with a challenge ACK. An endpoint still in SYN-SENT
    /// instead checks that `ack` acknowledges its SYN (`seq` is then 0 if
    /// the peer never spoke). Calling it again returns the same resets.
    pub fn terminate(&mut self, now: u64, on_event: &mut impl FnMut(TcpEvent, TcpSnapshot)) -> Terminate {
        self.last_seen = now;
        let t = Terminate { to_server: self.rst_to(Side::Server), to_client: self.rst_to(Side::Client) };
        if !self.terminated {
            self.terminated = true;
            let live = matches!(self.phase, ConnPhase::Handshake | ConnPhase::Established | ConnPhase::Closing);
            if self.phase != ConnPhase::Finished {
                self.phase = ConnPhase::Closed;
            }
            if live {
                on_event(TcpEvent::Closed, self.snapshot(Side::Client));
            }
        }
        t
    }

    fn rst_to(&self, target: Side) -> Option<RstSegment> {
        let ack = self.next_seq(target);
        let t = self.half(target);
        let seq = match self.next_seq(other(target)) {
            Some(s) => s,
            // The target is in SYN-SENT: only the ACK matters.
            None if t.has(hf::SYN_SENT) && !t.has(hf::RESPONDER) && ack.is_some() => 0,
            None => return None,
        };
        let flags = if ack.is_some() { TcpFlags::RST | TcpFlags::ACK } else { TcpFlags::RST };
        let alt_seq = (t.has(hf::ACK_SEEN) && t.ack != seq).then_some(t.ack);
        Some(RstSegment { flags, seq, ack: ack.unwrap_or(0), alt_seq })
    }

    /// The next sequence number `side` will send: the highest sequence end
    /// it sent, or the peer's latest ACK if that is later; None if neither
    /// was seen.
    pub fn next_seq(&self, side: Side) -> Option<u32> {
        let (h, p) = (self.half(side), self.half(other(side)));
        let own = h.has(hf::SEQ_KNOWN).then(|| h.snd_nxt());
        let acked = p.has(hf::ACK_SEEN).then_some(p.ack);
        match (own, acked) {
            (Some(a), Some(b)) => Some(seq_max(a, b)),
            (a, b) => a.or(b),
        }
    }

    /// The window scale shift of `side`: `Some(0)` when scaling is not in
    /// use, None when unknown (the handshake was not seen).
    pub fn window_scale(&self, side: Side) -> Option<u8> {
        let (h, p) = (self.half(side), self.half(other(side)));
        let opts_resp = hf::SYN_OPTS | hf::RESPONDER;
        let responder = if h.has(opts_resp) {
            Some(h)
        } else if p.has(opts_resp) {
            Some(p)
        } else {
            None
        };
        match responder {
            Some(r) if !r.has(hf::WS_OFFERED) => Some(0),
            Some(_) => h.has(hf::SYN_OPTS).then_some(h.wscale),
            None => {
                let declined = |x: &Half| x.has(hf::SYN_OPTS) && !x.has(hf::WS_OFFERED);
                (declined(h) || declined(p)).then_some(0)
            }
        }
    }

    /// Whether an option (`hf::*_OFFERED`) was negotiated: the answering
    /// SYN-ACK carried it (and the SYN did too, when seen).
    fn negotiated(&self, offered: u32) -> bool {
        let opts_resp = hf::SYN_OPTS | hf::RESPONDER;
        let (c, s) = (&self.client, &self.server);
        let (r, o) = if s.has(opts_resp) {
            (s, c)
        } else if c.has(opts_resp) {
            (c, s)
        } else {
            return false;
        };
        r.has(offered) && (!o.has(hf::SYN_OPTS) || o.has(offered))
    }

    /// Whether SACK was negotiated.
    pub fn sack_permitted(&self) -> bool {
        self.negotiated(hf::SACK_OFFERED)
    }

    /// Whether timestamps were negotiated.
    pub fn timestamps(&self) -> bool {
        self.negotiated(hf::TS_OFFERED)
    }

    /// The MSS `side` announced in its SYN.
    pub fn mss(&self, side: Side) -> Option<u16> {
        let h = self.half(side);
        (h.mss != 0).then_some(h.mss)
    }

    /// `side`'s last window, scaled with the shift assumed for checks (14
    /// when unknown).
    fn lenient_window(&self, side: Side) -> u64 {
        let h = self.half(side);
        let shift = if h.has(hf::WIN_SYN) { 0 } else { self.window_scale(side).unwrap_or(LENIENT_SHIFT) };
        u64::from(h.win) << shift
    }

    /// The state of `side`'s endpoint, inferred.
    pub fn state(&self, side: Side) -> TcpState {
        use hf::*;
        let (h, p) = (self.half(side), self.half(other(side)));
        if self.reset {
            return TcpState::Closed;
        }
        if h.has(FIN_SENT) {
            return match (h.has(ACTIVE_CLOSE), h.has(FIN_ACKED), p.has(FIN_ACKED)) {
                (true, false, false) => TcpState::FinWait1,
                (true, true, false) => TcpState::FinWait2,
                (true, false, true) => TcpState::Closing,
                (true, true, true) => TcpState::TimeWait,
                (false, false, _) => TcpState::LastAck,
                (false, true, _) => TcpState::Closed,
            };
        }
        if p.has(FIN_ACKED) {
            return TcpState::CloseWait;
        }
        if h.has(SYN_SENT) {
            return if h.has(SYN_ACKED) && p.has(SYN_ACKED) {
                TcpState::Established
            } else if h.has(RESPONDER) || p.has(SYN_ACKED) {
                TcpState::SynReceived
            } else {
                TcpState::SynSent
            };
        }
        if h.has(SEEN) {
            return TcpState::Established;
        }
        if p.has(SYN_SENT) {
            return TcpState::Listen;
        }
        TcpState::Closed
    }

    /// A snapshot of `side` now.
    pub fn snapshot(&self, side: Side) -> TcpSnapshot {
        let h = self.half(side);
        let shift = self.window_scale(side);
        let mut flags = 0;
        let mut set = |cond: bool, f: u8| {
            if cond {
                flags |= f;
            }
        };
        set(self.client.has(hf::MIDSTREAM) || self.server.has(hf::MIDSTREAM), TcpSnapshot::MIDSTREAM);
        set(shift.is_some_and(|s| s > 0), TcpSnapshot::WSCALE_OK);
        set(self.sack_permitted(), TcpSnapshot::SACK_OK);
        set(self.timestamps(), TcpSnapshot::TS_OK);
        set(h.has(hf::SEQ_KNOWN), TcpSnapshot::SEQ_VALID);
        set(h.has(hf::ACK_SEEN), TcpSnapshot::ACK_VALID);
        set(h.has(hf::FIN_SENT), TcpSnapshot::FIN_SENT);
        set(h.has(hf::RST_SENT), TcpSnapshot::RST_SENT);
        let win_shift = if h.has(hf::WIN_SYN) { 0 } else { shift.unwrap_or(0) };
        TcpSnapshot {
            state: self.state(side) as u8,
            flags,
            wscale: shift.unwrap_or(0),
            side: match side {
                Side::Client => 0,
                Side::Server => 1,
            },
            seq: if h.has(hf::SEQ_KNOWN) { h.snd_nxt() } else { 0 },
            ack: h.ack,
            window: u32::try_from(u64::from(h.win) << win_shift).unwrap_or(u32::MAX),
            ts_val: h.ts_val,
            ts_ecr: h.ts_ecr,
        }
    }

    /// The connection's phase.
    #[inline]
    pub fn phase(&self) -> ConnPhase {
        self.phase
    }

    /// Whether [`terminate`](Self::terminate) was called.
    #[inline]
    pub fn is_terminated(&self) -> bool {
        self.terminated
    }

    /// Whether the connection was picked up mid-stream (either side).
    pub fn is_midstream(&self) -> bool {
        self.client.has(hf::MIDSTREAM) || self.server.has(hf::MIDSTREAM)
    }

    /// Time of the last segment (or of `terminate`).
    #[inline]
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// How many times a new SYN restarted the connection on this flow (a
    /// SYN while closed or finished: the conn and the streams passed with
    /// it start over from offset 0, and `Syn` is reported again).
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether [`on_segment`](Self::on_segment) would restart the
    /// connection on this segment (a new SYN, not a retransmission of the
    /// old one, while closed or finished). A caller whose readers may still
    /// hold the old streams' bytes gives the new connection fresh storage
    /// first: the restart takes the streams back to offset 0.
    pub fn restarts_on(&self, seg: &Segment<'_>, from: Side) -> bool {
        let f = seg.flags;
        if self.terminated
            || !f.contains(TcpFlags::SYN)
            || f.contains(TcpFlags::ACK)
            || f.contains(TcpFlags::RST)
            || !matches!(self.phase, ConnPhase::Closed | ConnPhase::Finished)
        {
            return false;
        }
        let h = self.half(from);
        !(h.has(hf::SYN_SENT) && seg.seq == h.isn())
    }

    /// Segments dropped after `terminate`.
    #[inline]
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// `side`'s counters.
    pub fn counters(&self, side: Side) -> SideCounters {
        self.half(side).counters
    }

    /// Offset just after the highest sequence number `side` sent (its FIN
    /// included): its stream length plus one once it closed.
    pub fn stream_end(&self, side: Side) -> u64 {
        self.half(side).snd_end
    }
}
