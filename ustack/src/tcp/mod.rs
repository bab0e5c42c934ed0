//! The TCP monitor μStack: twin-side TCP state and per-side bytestream
//! reassembly, sans-IO.
//!
//! A [`TcpConn`] (184 bytes, no storage) follows one TCP flow from the
//! middle: the client's and the server's endpoint state, each inferred from
//! the segments it sends and the acknowledgments it gets. The caller feeds
//! it `(segment, side, now)` with [`TcpConn::on_segment`] and gets an
//! [`Action`] back, plus [`TcpEvent`]s, each paired with a 24-byte
//! [`TcpSnapshot`] of the side it concerns, through a callback. Payload goes
//! to a per-side [`Reassembler`], which keeps only metadata and writes the
//! bytes into a ring the caller passes on every call (the runtime's rings
//! live in the shared-memory arena); NFs read them back with a
//! [`RingReader`], built from the ring bytes and two published numbers.
//! Nothing here allocates after construction, reads a clock or touches a
//! device.
//!
//! Files: [`seq`] (wrapping sequence arithmetic), `conn.rs` (state
//! machines, events, snapshots, timeouts, terminate), `reasm.rs`
//! (reassembler, range set, reader).
//!
//! # Rules the monitor follows
//!
//! - **Handshake.** The first SYN reports [`TcpEvent::Syn`]; a SYN-ACK must
//!   acknowledge it; once each side's SYN is acknowledged by the other,
//!   [`TcpEvent::Established`]. A connection first seen at its SYN-ACK is
//!   picked up from there (the missed SYN's options count as offered when
//!   the SYN-ACK carries them, as RFC 7323 implies). Window scaling, SACK
//!   permitted, timestamps and the MSS are recorded; window fields are
//!   scaled except on SYNs. A retransmitted SYN or SYN-ACK is counted, a
//!   SYN that fits no handshake is counted as invalid and ignored.
//! - **Mid-stream pickup.** A flow whose first segment is not a SYN is
//!   established at once (snapshot flag [`TcpSnapshot::MIDSTREAM`]); each
//!   side's first data (or FIN) segment sets its stream offset 0. Its window
//!   scale is unknown, so window checks assume the largest (shift 14).
//! - **Sequence space.** Stream offsets are `u64` from the first byte after
//!   the SYN; sequence numbers map to them by signed distance to the
//!   highest offset sent, so streams cross 2^32 freely.
//! - **Windows.** Data beyond the highest right edge the receiver
//!   advertised (ACK + scaled window) plus [`MonitorConfig::window_slack`],
//!   after the side's FIN, before its stream start, or further behind than
//!   the receiver's largest window plus the slack, is not reassembled and
//!   is counted in [`SideCounters::out_of_window`] (a segment straddling a
//!   limit keeps its part inside).
//! - **RST.** Accepted when its sequence number is the sender's next one or
//!   lies in the receiver's window (from the receiver's latest ACK, one
//!   scaled window wide), or, answering a SYN, when it acknowledges that
//!   SYN; then [`TcpEvent::Rst`] and [`TcpEvent::Closed`]. Others are
//!   counted in [`SideCounters::rst_ignored`]. Data after an accepted RST is
//!   still reassembled when in window (an endpoint may have answered the
//!   RST with a challenge ACK and gone on), so an in-window RST cannot blind
//!   the NFs.
//! - **Close.** Each side's first FIN reports [`TcpEvent::Fin`]; when both
//!   FINs are acknowledged (normal or simultaneous close),
//!   [`TcpEvent::Closed`], and the connection lingers
//!   ([`ConnPhase::Closed`]) for [`MonitorConfig::linger`]. A SYN with a new
//!   ISN while closed or finished restarts the connection on the same flow
//!   (port reuse): state and the streams passed are reset, `Syn` comes
//!   again and [`TcpConn::generation`] goes up.
//! - **Timeouts.** [`TcpConn::deadline`] is the last segment's time plus the
//!   timeout of the phase: [`MonitorConfig::handshake_timeout`] (30 s),
//!   [`MonitorConfig::established_timeout`] (300 s),
//!   [`MonitorConfig::closing_timeout`] (60 s), then the linger (10 s).
//!   [`TcpConn::poll`] after it reports [`TcpEvent::Timeout`] for a live
//!   connection and says when the connection can be freed. Every connection
//!   that reported `Syn` or `Established` ends with exactly one `Closed` or
//!   `Timeout`.
//! - **Terminate.** [`TcpConn::terminate`] returns the sequence and
//!   acknowledgment numbers of one RST to each end (see there for the exact
//!   rule, which matches RFC 5961 as Linux applies it), and every later
//!   segment of the flow gets [`Action::Drop`]. Otherwise the monitor always
//!   forwards: what it cannot follow, it counts.
//! - **Reassembly** (see [`Reassembler`]): per side, into the caller's ring;
//!   [`TcpEvent::DataReady`] for each advance of the frontier,
//!   [`TcpEvent::OverlapConflict`] for bytes that differ from stored ones,
//!   [`TcpEvent::ReassemblyStopped`] (reasons [`StopReason::BufferFull`],
//!   [`StopReason::NoBuffer`], [`StopReason::Gap`]) when the side stops.
//!
//! Within one segment events come in this order: `Syn`/`Established`, then
//! what its ACK caused (a stop of the peer's stream), then its data
//! (`OverlapConflict`, `DataReady`, `ReassemblyStopped`), then `Fin`, then
//! `Closed`.
//!
//! # Driving it
//!
//! ```
//! use ustack::flow::Side;
//! use ustack::tcp::{Action, MonitorConfig, Reassembler, Segment, Stream, Streams, TcpConn, TcpEvent};
//! use ustack::wire::TcpFlags;
//!
//! let cfg = MonitorConfig::default();
//! let mut conn = TcpConn::new();
//! // Reassembly metadata per side; the bytes go to rings the caller owns.
//! let mut client = Reassembler::from_config(&cfg);
//! let mut server = Reassembler::from_config(&cfg);
//! let (mut client_ring, mut server_ring) = (vec![0u8; 4096], vec![0u8; 4096]);
//!
//! let (syn, ack) = (TcpFlags::SYN, TcpFlags::ACK);
//! let segments = [
//!     (Side::Client, Segment::new(syn, 100, 0, 65535, b"")),
//!     (Side::Server, Segment::new(syn | ack, 500, 101, 65535, b"")),
//!     (Side::Client, Segment::new(ack, 101, 501, 65535, b"")),
//!     (Side::Client, Segment::new(ack | TcpFlags::PSH, 101, 501, 65535, b"GET / HTTP/1.1\r\n\r\n")),
//! ];
//! let mut events = Vec::new();
//! for (now, (side, seg)) in segments.iter().enumerate() {
//!     // Usually built from a wire view: Segment::from_packet(&TcpPacket::new_checked(bytes)?).
//!     let streams = Streams {
//!         client: Some(Stream { reasm: &mut client, ring: &mut client_ring }),
//!         server: Some(Stream { reasm: &mut server, ring: &mut server_ring }),
//!     };
//!     let action = conn.on_segment(&cfg, seg, *side, now as u64, streams, &mut |ev, snap| events.push((ev, snap)));
//!     assert_eq!(action, Action::Forward);
//! }
//! assert_eq!(events[0].0, TcpEvent::Syn);
//! assert_eq!(events[1].0, TcpEvent::Established);
//! let (TcpEvent::DataReady { side: Side::Client, start, end }, snap) = events[2] else { panic!() };
//! assert_eq!(snap.seq, 101 + 18); // the client's next sequence number
//! // What an NF does with the ring bytes and the two published numbers:
//! let (a, b) = client.reader(&client_ring).read(start..end).unwrap();
//! assert_eq!([a, b].concat(), b"GET / HTTP/1.1\r\n\r\n");
//! client.release(end); // no reader needs these bytes any more
//! // Timers: poll at the deadline or later.
//! assert!(!conn.poll(&cfg, conn.deadline(&cfg), &mut |_, _| {}));
//! ```

mod conn;
mod reasm;
pub mod seq;

pub use conn::{
    Action, ConnPhase, MonitorConfig, RstSegment, Segment, SegmentOptions, SideCounters, Sides, Stream, Streams,
    TcpConn, TcpEvent, TcpSnapshot, TcpState, Terminate, SECOND, UNKNOWN_WINDOW,
};
pub use reasm::{Insert, OverlapPolicy, ReadError, ReasmCounters, Reassembler, RingReader, StopReason, MAX_OOO_RANGES};
