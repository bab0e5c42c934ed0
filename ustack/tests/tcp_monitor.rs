//! Crafted segment sequences through the TCP monitor: handshake, data,
//! close, resets, retransmissions, overlaps, windows, wrap-around,
//! mid-stream pickup, buffer limits, terminate and timeouts.

use ustack::event;
use ustack::flow::Side;
use ustack::tcp::{
    Action, ConnPhase, MonitorConfig, OverlapPolicy, Reassembler, Segment, SegmentOptions, Sides, StopReason, Stream,
    Streams, TcpConn, TcpEvent, TcpSnapshot, TcpState, SECOND,
};
use ustack::wire::{TcpFlags, TcpPacket};

const C: Side = Side::Client;
const S: Side = Side::Server;
const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// One connection, both reassemblers with Vec rings, and what a reader
/// collected from the DATA_RDY events.
struct H {
    cfg: MonitorConfig,
    conn: TcpConn,
    reasm: [Reassembler; 2],
    rings: [Vec<u8>; 2],
    /// Bytes read on DataReady, per side.
    read: [Vec<u8>; 2],
    events: Vec<(TcpEvent, TcpSnapshot)>,
    now: u64,
    /// Release the floor to the frontier after reading.
    release: bool,
}

impl H {
    fn new(cfg: MonitorConfig) -> H {
        H::with_ring(cfg, 4096)
    }

    fn with_ring(cfg: MonitorConfig, cap: usize) -> H {
        H {
            cfg,
            conn: TcpConn::new(),
            reasm: [Reassembler::from_config(&cfg), Reassembler::from_config(&cfg)],
            rings: [vec![0; cap], vec![0; cap]],
            read: [Vec::new(), Vec::new()],
            events: Vec::new(),
            now: 0,
            release: true,
        }
    }

    fn seg(&mut self, side: Side, seg: Segment<'_>) -> Action {
        self.now += 1000;
        let [rc, rs] = &mut self.reasm;
        let [gc, gs] = &mut self.rings;
        let streams =
            Streams { client: Some(Stream { reasm: rc, ring: gc }), server: Some(Stream { reasm: rs, ring: gs }) };
        let mut evs = Vec::new();
        let action = self.conn.on_segment(&self.cfg, &seg, side, self.now, streams, &mut |e, s| evs.push((e, s)));
        for (e, s) in &evs {
            assert!(e.type_id().is_subtype_of(event::FLOW_TCP) || e.type_id().is_subtype_of(event::DATA_RDY));
            assert_eq!(Some(s.side()), e.side().or(Some(s.side())), "the snapshot is of the event's side");
            if let TcpEvent::DataReady { side, start, end } = *e {
                let i = idx(side);
                assert_eq!(start, self.read[i].len() as u64, "DataReady ranges are contiguous");
                let bytes = self.reasm[i].reader(&self.rings[i]).read_vec(start..end).expect("readable");
                self.read[i].extend_from_slice(&bytes);
                if self.release {
                    self.reasm[i].release(end);
                }
            }
        }
        self.events.extend(evs);
        action
    }

    fn send(&mut self, side: Side, flags: TcpFlags, seq: u32, ack: u32, payload: &[u8]) -> Action {
        self.seg(side, Segment::new(flags, seq, ack, 65535, payload))
    }

    fn take(&mut self) -> Vec<TcpEvent> {
        self.events.drain(..).map(|(e, _)| e).collect()
    }

    /// SYN (ISN `c`), SYN-ACK (ISN `s`), ACK, with window scaling 7 both
    /// ways, SACK, timestamps and MSS 1460; events drained.
    fn handshake(&mut self, c: u32, s: u32) {
        let opts = SegmentOptions { mss: Some(1460), wscale: Some(7), sack_permitted: true, timestamps: Some((1, 0)) };
        self.seg(C, Segment::new(SYN, c, 0, 64240, b"").with_options(opts));
        self.seg(S, Segment::new(SYN | ACK, s, c.wrapping_add(1), 65160, b"").with_options(opts));
        self.send(C, ACK, c.wrapping_add(1), s.wrapping_add(1), b"");
        assert_eq!(self.take(), [TcpEvent::Syn, TcpEvent::Established]);
    }

    fn client(&self) -> &[u8] {
        &self.read[0]
    }

    fn server(&self) -> &[u8] {
        &self.read[1]
    }
}

fn cfg() -> MonitorConfig {
    MonitorConfig::default()
}

#[test]
fn handshake_data_and_fin_fin_ack_close() {
    let mut h = H::new(cfg());
    h.seg(C, Segment::new(SYN, 1000, 0, 64240, b""));
    assert_eq!(h.conn.state(C), TcpState::SynSent);
    assert_eq!(h.conn.state(S), TcpState::Listen);
    assert_eq!(h.conn.phase(), ConnPhase::Handshake);
    h.seg(S, Segment::new(SYN | ACK, 5000, 1001, 65160, b""));
    assert_eq!(h.conn.state(S), TcpState::SynReceived);
    h.send(C, ACK, 1001, 5001, b"");
    assert_eq!(h.conn.state(C), TcpState::Established);
    assert_eq!(h.conn.state(S), TcpState::Established);
    let evs: Vec<_> = h.events.iter().map(|(e, s)| (*e, s.side())).collect();
    assert_eq!(evs, [(TcpEvent::Syn, C), (TcpEvent::Established, C)]);
    h.take();

    assert_eq!(h.send(C, ACK | PSH, 1001, 5001, b"GET / HTTP/1.1\r\n\r\n"), Action::Forward);
    h.send(S, ACK, 5001, 1019, b"");
    h.send(S, ACK | PSH, 5001, 1019, b"HTTP/1.1 200 OK\r\n");
    h.send(S, ACK | PSH, 5018, 1019, b"\r\nhello");
    h.send(C, ACK, 1019, 5025, b"");
    assert_eq!(
        h.take(),
        [
            TcpEvent::DataReady { side: C, start: 0, end: 18 },
            TcpEvent::DataReady { side: S, start: 0, end: 17 },
            TcpEvent::DataReady { side: S, start: 17, end: 24 },
        ]
    );
    assert_eq!(h.client(), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(h.server(), b"HTTP/1.1 200 OK\r\n\r\nhello");

    // Client closes first.
    h.send(C, FIN | ACK, 1019, 5025, b"");
    assert_eq!(h.conn.state(C), TcpState::FinWait1);
    assert_eq!(h.conn.phase(), ConnPhase::Closing);
    let (e, snap) = h.events[0];
    assert_eq!(e, TcpEvent::Fin { side: C });
    assert!(snap.has(TcpSnapshot::FIN_SENT));
    assert_eq!(snap.seq, 1020, "the FIN takes a sequence number");
    h.send(S, ACK, 5025, 1020, b"");
    assert_eq!(h.conn.state(C), TcpState::FinWait2);
    assert_eq!(h.conn.state(S), TcpState::CloseWait);
    h.send(S, FIN | ACK, 5025, 1020, b"");
    assert_eq!(h.conn.state(S), TcpState::LastAck);
    h.send(C, ACK, 1020, 5026, b"");
    assert_eq!(h.conn.state(C), TcpState::TimeWait);
    assert_eq!(h.conn.state(S), TcpState::Closed);
    assert_eq!(h.take(), [TcpEvent::Fin { side: C }, TcpEvent::Fin { side: S }, TcpEvent::Closed]);
    assert_eq!(h.conn.phase(), ConnPhase::Closed);

    // A late retransmitted FIN is counted, reports nothing, is forwarded.
    assert_eq!(h.send(S, FIN | ACK, 5025, 1020, b""), Action::Forward);
    assert!(h.take().is_empty());
    assert_eq!(h.conn.counters(S).retransmits, 1);
    for side in [C, S] {
        let c = h.conn.counters(side);
        assert_eq!((c.out_of_window, c.rst_ignored, c.invalid, c.out_of_order), (0, 0, 0, 0));
    }
    // Linger, then finished without a Timeout.
    let cfg = h.cfg;
    assert!(!h.conn.poll(&cfg, h.now + cfg.linger, &mut |e, _| panic!("{e:?}")));
    assert!(h.conn.poll(&cfg, h.now + cfg.linger + 1, &mut |e, _| panic!("{e:?}")));
    assert_eq!(h.conn.phase(), ConnPhase::Finished);
}

#[test]
fn simultaneous_close() {
    let mut h = H::new(cfg());
    h.handshake(10, 20);
    h.send(C, FIN | ACK, 11, 21, b"");
    h.send(S, FIN | ACK, 21, 11, b""); // does not acknowledge the client's FIN
    assert_eq!(h.conn.state(C), TcpState::FinWait1);
    assert_eq!(h.conn.state(S), TcpState::FinWait1);
    h.send(C, ACK, 12, 22, b"");
    assert_eq!(h.conn.state(C), TcpState::Closing);
    assert_eq!(h.conn.state(S), TcpState::FinWait2);
    assert_eq!(h.conn.phase(), ConnPhase::Closing);
    h.send(S, ACK, 22, 12, b"");
    assert_eq!(h.conn.state(C), TcpState::TimeWait);
    assert_eq!(h.conn.state(S), TcpState::TimeWait);
    assert_eq!(h.take(), [TcpEvent::Fin { side: C }, TcpEvent::Fin { side: S }, TcpEvent::Closed]);
    assert_eq!(h.conn.phase(), ConnPhase::Closed);
}

#[test]
fn rst_in_window_is_accepted() {
    let mut h = H::new(cfg());
    h.handshake(100, 200);
    h.send(C, ACK | PSH, 101, 201, b"hello");
    // In the server's window but not exact: accepted (counted as in window).
    assert_eq!(h.send(C, RST, 106 + 1000, 0, b""), Action::Forward);
    let evs: Vec<_> = h.events.iter().map(|(e, s)| (*e, s.side(), s.has(TcpSnapshot::RST_SENT))).collect();
    assert_eq!(
        evs,
        [
            (TcpEvent::DataReady { side: C, start: 0, end: 5 }, C, false),
            (TcpEvent::Rst { side: C }, C, true),
            (TcpEvent::Closed, C, true)
        ]
    );
    assert_eq!(h.conn.phase(), ConnPhase::Closed);
    assert_eq!(h.conn.state(C), TcpState::Closed);
    assert_eq!(h.conn.state(S), TcpState::Closed);
    // Exact RST afterwards: already closed, no more events.
    h.take();
    h.send(S, RST, 201, 0, b"");
    assert!(h.take().is_empty());
}

#[test]
fn rst_out_of_window_is_ignored_and_counted() {
    let mut h = H::new(cfg());
    h.handshake(100, 200);
    // Window 65535 << 7 from the server: far beyond, and before.
    h.send(C, RST, 101 + (65535 << 7) + 10, 0, b"");
    h.send(C, RST, 50, 0, b"");
    h.send(S, RST | ACK, 200, 101, b""); // the ISN, one before the next sequence number
    assert!(h.take().is_empty());
    assert_eq!(h.conn.counters(C).rst_ignored, 2);
    assert_eq!(h.conn.counters(S).rst_ignored, 1);
    assert_eq!(h.conn.phase(), ConnPhase::Established);
    // The exact one is accepted.
    h.send(S, RST, 201, 0, b"");
    assert_eq!(h.take(), [TcpEvent::Rst { side: S }, TcpEvent::Closed]);
}

#[test]
fn rst_answering_a_syn_must_acknowledge_it() {
    let mut h = H::new(cfg());
    h.send(C, SYN, 7000, 0, b"");
    h.send(S, RST | ACK, 0, 7000, b""); // wrong ack
    h.send(S, RST, 7001, 0, b""); // no ACK
    assert_eq!(h.take(), [TcpEvent::Syn]);
    assert_eq!(h.conn.counters(S).rst_ignored, 2);
    h.send(S, RST | ACK, 0, 7001, b""); // Linux's answer on a closed port
    assert_eq!(h.take(), [TcpEvent::Rst { side: S }, TcpEvent::Closed]);
}

#[test]
fn identical_retransmission_is_no_conflict() {
    let mut h = H::new(cfg());
    h.handshake(0, 0);
    h.send(C, ACK, 1, 1, b"abcdef");
    h.send(C, ACK, 1, 1, b"abcdef");
    h.send(C, ACK, 4, 1, b"defgh"); // partial overlap, identical bytes, then new
    assert_eq!(
        h.take(),
        [TcpEvent::DataReady { side: C, start: 0, end: 6 }, TcpEvent::DataReady { side: C, start: 6, end: 8 }]
    );
    assert_eq!(h.client(), b"abcdefgh");
    assert_eq!(h.conn.counters(C).retransmits, 2);
    let rc = h.reasm[0].counters();
    assert_eq!((rc.retransmits, rc.conflicts), (2, 0));
}

#[test]
fn retransmission_with_other_bytes_is_a_conflict_and_changes_nothing() {
    for policy in [OverlapPolicy::FirstWins, OverlapPolicy::LastWins] {
        let mut h = H::new(MonitorConfig { overlap: policy, ..cfg() });
        h.handshake(0, 0);
        h.send(C, ACK, 1, 1, b"abcdef");
        h.take();
        h.send(C, ACK, 2, 1, b"bXdYf"); // offsets 1..6, differs at 2 and 4
        assert_eq!(h.take(), [TcpEvent::OverlapConflict { side: C, offset: 2, len: 3 }], "{policy:?}");
        let r = h.reasm[0].reader(&h.rings[0]);
        assert_eq!(r.read_vec(0..6).unwrap(), b"abcdef", "{policy:?}: delivered bytes never change");
        assert_eq!(h.reasm[0].counters().conflicts, 1);
        assert_eq!(h.reasm[0].counters().retransmits, 0);
        assert_eq!(h.conn.counters(C).retransmits, 1);
    }
}

#[test]
fn overlapping_out_of_order_data_under_each_policy() {
    // Stream "abcdefghij": [5, 10) arrives first, then [3, 8) with two
    // different bytes at 5 and 6, then [0, 3) fills the gap.
    for (policy, expect) in [(OverlapPolicy::FirstWins, &b"abcdefghij"[..]), (OverlapPolicy::LastWins, b"abcdeXYhij")] {
        let mut h = H::new(MonitorConfig { overlap: policy, ..cfg() });
        h.handshake(0, 0);
        h.send(C, ACK, 6, 1, b"fghij");
        h.send(C, ACK, 4, 1, b"deXYh");
        assert_eq!(h.take(), [TcpEvent::OverlapConflict { side: C, offset: 5, len: 2 }], "{policy:?}");
        assert_eq!(h.reasm[0].ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(3, 10)]);
        h.send(C, ACK, 1, 1, b"abc");
        assert_eq!(h.take(), [TcpEvent::DataReady { side: C, start: 0, end: 10 }]);
        assert_eq!(h.client(), expect, "{policy:?}");
        let rc = h.reasm[0].counters();
        assert_eq!((rc.conflicts, rc.out_of_order, rc.retransmits), (1, 2, 0), "{policy:?}");
        // Conflicting bytes before the frontier never change, whatever the policy.
        h.send(C, ACK, 1, 1, b"ABCDEFGHIJ");
        assert_eq!(h.take(), [TcpEvent::OverlapConflict { side: C, offset: 0, len: 10 }]);
        assert_eq!(h.reasm[0].reader(&h.rings[0]).read_vec(0..10).unwrap(), expect);
    }
}

#[test]
fn out_of_order_data_is_released_when_the_gap_fills() {
    let mut h = H::new(cfg());
    h.handshake(500, 900);
    h.send(S, ACK, 901 + 6, 501, b"world");
    h.send(S, ACK, 901 + 20, 501, b"!!");
    assert!(h.take().is_empty(), "nothing contiguous yet");
    assert_eq!(h.reasm[1].frontier(), 0);
    assert_eq!(h.reasm[1].ooo_len(), 2);
    assert_eq!(h.conn.counters(S).out_of_order, 2);
    h.send(S, ACK, 901, 501, b"hello ");
    assert_eq!(h.take(), [TcpEvent::DataReady { side: S, start: 0, end: 11 }]);
    h.send(S, ACK, 901 + 11, 501, b"123456789");
    assert_eq!(h.take(), [TcpEvent::DataReady { side: S, start: 11, end: 22 }]);
    assert_eq!(h.server(), b"hello world123456789!!");
    assert_eq!(h.reasm[1].ooo_len(), 0);
}

#[test]
fn out_of_window_data_is_ignored() {
    let mut h = H::new(MonitorConfig { window_slack: 0, ..cfg() });
    h.seg(C, Segment::new(SYN, 0, 0, 1000, b""));
    h.seg(S, Segment::new(SYN | ACK, 0, 1, 100, b"")); // no window scaling: 100 bytes
    h.seg(C, Segment::new(ACK, 1, 1, 50, b""));
    h.take();
    h.seg(C, Segment::new(ACK, 1 + 200, 1, 50, b"far")); // beyond the server's window
    h.seg(S, Segment::new(ACK, 1 + 40, 1, 100, b"0123456789abcdef")); // client window 50: straddles
    h.seg(C, Segment::new(ACK, 1 + 98, 1, 50, b"xyz")); // keeps "xy"
    assert_eq!(h.conn.counters(C).out_of_window, 2);
    assert_eq!(h.conn.counters(S).out_of_window, 1);
    assert!(h.take().is_empty());
    assert_eq!(h.reasm[0].ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(98, 100)]);
    assert_eq!(h.reasm[1].ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(40, 50)]);
    // Far behind the stream: before offset 0, counted too.
    h.seg(C, Segment::new(ACK, 0u32.wrapping_sub(70_000), 1, 50, b"old"));
    assert_eq!(h.conn.counters(C).out_of_window, 3);
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut h = H::with_ring(cfg(), 256);
    let (c, s) = (u32::MAX - 5, u32::MAX - 40);
    h.handshake(c, s);
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut seq = c.wrapping_add(1);
    for chunk in data.chunks(7) {
        h.send(C, ACK, seq, s.wrapping_add(1), chunk);
        seq = seq.wrapping_add(chunk.len() as u32);
    }
    // The server's chunks arrive in swapped pairs (out of order across the wrap).
    let chunks: Vec<(u32, &[u8])> = data
        .chunks(30)
        .scan(s.wrapping_add(1), |q, ch| {
            let at = *q;
            *q = q.wrapping_add(ch.len() as u32);
            Some((at, ch))
        })
        .collect();
    for pair in chunks.chunks(2) {
        for &(at, ch) in pair.iter().rev() {
            h.send(S, ACK, at, seq, ch);
        }
    }
    assert_eq!(h.client(), &data[..]);
    assert_eq!(h.server(), &data[..]);
    assert_eq!(h.conn.snapshot(C).seq, c.wrapping_add(1001));
    assert_eq!(h.conn.snapshot(S).seq, s.wrapping_add(1001));
    assert_eq!(h.conn.snapshot(S).seq, 960);
    assert_eq!(h.conn.next_seq(S), Some(960));
    assert_eq!(h.conn.counters(C).retransmits + h.conn.counters(C).out_of_window, 0);
    assert_eq!(h.conn.counters(S).out_of_window, 0);
    assert!(h.conn.counters(S).out_of_order > 0);
}

#[test]
fn midstream_pickup() {
    let mut h = H::new(cfg());
    h.send(C, ACK | PSH, 1_000_000, 7_000_000, b"request");
    let (e, snap) = h.events[0];
    assert_eq!(e, TcpEvent::Established);
    assert!(snap.has(TcpSnapshot::MIDSTREAM));
    assert_eq!((snap.seq, snap.ack, snap.window), (1_000_000, 7_000_000, 65535), "before its data");
    assert!(snap.has(TcpSnapshot::SEQ_VALID | TcpSnapshot::ACK_VALID));
    assert!(!snap.has(TcpSnapshot::WSCALE_OK));
    assert_eq!(h.conn.phase(), ConnPhase::Established);
    assert!(h.conn.is_midstream());
    h.send(S, ACK | PSH, 7_000_000, 1_000_007, b"response");
    h.send(C, ACK | PSH, 1_000_007, 7_000_008, b" more");
    // An older segment from before the pickup point is ignored (counted).
    h.send(C, ACK, 999_990, 7_000_000, b"0123456789");
    assert_eq!(h.conn.counters(C).out_of_window, 1);
    assert_eq!(h.client(), b"request more");
    assert_eq!(h.server(), b"response");
    assert_eq!(h.conn.window_scale(C), None);
    assert_eq!(h.conn.state(C), TcpState::Established);
    // Closing works as usual.
    h.send(C, FIN | ACK, 1_000_012, 7_000_008, b"");
    h.send(S, FIN | ACK, 7_000_008, 1_000_013, b"");
    h.send(C, ACK, 1_000_013, 7_000_009, b"");
    let evs = h.take();
    assert_eq!(evs.last(), Some(&TcpEvent::Closed));
    assert_eq!(evs.iter().filter(|e| **e == TcpEvent::Established).count(), 1);
}

#[test]
fn midstream_pickup_from_a_pure_ack() {
    let mut h = H::new(cfg());
    h.send(S, ACK, 50, 60, b"");
    assert_eq!(h.take(), [TcpEvent::Established]);
    h.send(C, ACK, 60, 50, b"abc");
    h.send(S, ACK, 50, 63, b"");
    h.send(C, ACK, 63, 50, b"def");
    assert_eq!(h.client(), b"abcdef");
    assert_eq!(h.reasm[0].stopped(), None);
}

#[test]
fn picked_up_at_the_syn_ack() {
    let mut h = H::new(cfg());
    let opts = SegmentOptions { wscale: Some(5), sack_permitted: true, ..SegmentOptions::default() };
    h.seg(S, Segment::new(SYN | ACK, 300, 101, 1000, b"").with_options(opts));
    h.send(C, ACK, 101, 301, b"hi");
    assert_eq!(h.take()[..2], [TcpEvent::Syn, TcpEvent::Established]);
    assert_eq!(h.client(), b"hi");
    assert!(h.conn.sack_permitted());
    assert_eq!(h.conn.window_scale(S), Some(5));
    assert_eq!(h.conn.window_scale(C), None, "the SYN was not seen");
}

#[test]
fn window_scaling_is_recorded_and_applied() {
    let mut h = H::with_ring(MonitorConfig { window_slack: 0, ..cfg() }, 16_384);
    let c_opts = SegmentOptions { mss: Some(1460), wscale: Some(7), sack_permitted: true, timestamps: Some((11, 0)) };
    let s_opts = SegmentOptions { mss: Some(1400), wscale: Some(9), sack_permitted: true, timestamps: Some((22, 11)) };
    h.seg(C, Segment::new(SYN, 0, 0, 64240, b"").with_options(c_opts));
    let snap = h.events[0].1;
    assert_eq!(snap.window, 64240, "SYN windows are not scaled");
    h.seg(S, Segment::new(SYN | ACK, 0, 1, 65160, b"").with_options(s_opts));
    let ts = SegmentOptions { timestamps: Some((12, 22)), ..SegmentOptions::default() };
    h.seg(C, Segment::new(ACK, 1, 1, 100, b"").with_options(ts));
    assert_eq!((h.conn.window_scale(C), h.conn.window_scale(S)), (Some(7), Some(9)));
    assert_eq!((h.conn.mss(C), h.conn.mss(S)), (Some(1460), Some(1400)));
    assert!(h.conn.sack_permitted() && h.conn.timestamps());
    let snap = h.conn.snapshot(C);
    assert_eq!((snap.window, snap.wscale, snap.ts_val, snap.ts_ecr), (12_800, 7, 12, 22));
    assert!(snap.has(TcpSnapshot::WSCALE_OK | TcpSnapshot::SACK_OK | TcpSnapshot::TS_OK));
    assert_eq!(snap.tcp_state(), Some(TcpState::Established));
    // The server may send up to 12800 bytes past the client's ACK.
    h.send(S, ACK, 1 + 12_790, 1, b"0123456789");
    assert_eq!(h.conn.counters(S).out_of_window, 0);
    h.send(S, ACK, 1 + 12_800, 1, b"x");
    assert_eq!(h.conn.counters(S).out_of_window, 1);
    // A larger window from the client opens more room.
    h.seg(C, Segment::new(ACK, 1, 1, 101, b""));
    h.send(S, ACK, 1 + 12_800, 1, b"x");
    assert_eq!(h.conn.counters(S).out_of_window, 1);
    assert_eq!(h.reasm[1].ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(12_790, 12_801)]);
}

#[test]
fn without_scaling_on_both_syns_windows_are_unscaled() {
    let mut h = H::new(cfg());
    let ws = SegmentOptions { wscale: Some(7), ..SegmentOptions::default() };
    h.seg(C, Segment::new(SYN, 0, 0, 1000, b"").with_options(ws));
    h.seg(S, Segment::new(SYN | ACK, 0, 1, 1000, b""));
    h.seg(C, Segment::new(ACK, 1, 1, 1000, b""));
    assert_eq!(h.conn.window_scale(C), Some(0));
    assert_eq!(h.conn.snapshot(C).window, 1000);
    assert!(!h.conn.snapshot(C).has(TcpSnapshot::WSCALE_OK));
}

#[test]
fn buffer_full_with_a_pinned_floor_stops_and_keeps_pinned_bytes() {
    let mut h = H::with_ring(cfg(), 16);
    h.release = false;
    h.handshake(0, 0);
    h.send(C, ACK, 1, 1, b"0123456789");
    assert_eq!(h.take(), [TcpEvent::DataReady { side: C, start: 0, end: 10 }]);
    h.reasm[0].release(4); // a reader still needs [4, 10)
    let before = h.rings[0].clone();
    // [10, 22) would overwrite offsets 4 and 5.
    assert_eq!(h.send(C, ACK, 11, 1, b"abcdefghijkl"), Action::Forward);
    let (e, snap) = h.events[0];
    assert_eq!(e, TcpEvent::ReassemblyStopped { side: C, reason: StopReason::BufferFull });
    assert_eq!(snap.side(), C);
    assert_eq!(h.rings[0], before, "nothing written");
    assert_eq!(h.reasm[0].reader(&h.rings[0]).read_vec(4..10).unwrap(), b"456789");
    assert_eq!(h.reasm[0].stopped(), Some(StopReason::BufferFull));
    // The flow goes on; the stopped side reports nothing more.
    h.take();
    assert_eq!(h.send(C, ACK, 23, 1, b"more"), Action::Forward);
    assert_eq!(h.send(S, ACK, 1, 27, b"reply"), Action::Forward);
    assert_eq!(h.take(), [TcpEvent::DataReady { side: S, start: 0, end: 5 }]);
    assert_eq!(h.reasm[0].counters().bytes_after_stop, 12 + 4);
}

#[test]
fn out_of_order_data_beyond_the_ring_stops_too() {
    let mut h = H::with_ring(cfg(), 16);
    h.handshake(0, 0);
    h.send(C, ACK, 1 + 10, 1, b"0123456789");
    assert_eq!(h.take(), [TcpEvent::ReassemblyStopped { side: C, reason: StopReason::BufferFull }]);
}

#[test]
fn no_buffer_stops_at_the_first_data() {
    let mut h = H::with_ring(cfg(), 0);
    h.handshake(0, 0);
    h.send(C, ACK, 1, 1, b"x");
    h.send(C, ACK, 2, 1, b"y");
    assert_eq!(h.take(), [TcpEvent::ReassemblyStopped { side: C, reason: StopReason::NoBuffer }]);
}

#[test]
fn dropped_out_of_order_data_becomes_a_gap_once_acknowledged() {
    let mut h = H::new(MonitorConfig { max_ooo_ranges: 1, ..cfg() });
    h.handshake(0, 0);
    h.send(C, ACK, 1 + 10, 1, b"bbbbb");
    h.send(C, ACK, 1 + 20, 1, b"ccccc"); // needs a second range: not reassembled
    assert_eq!(h.reasm[0].counters().ooo_dropped, 1);
    h.send(C, ACK, 1, 1, b"aaaaaaaaaa");
    h.send(C, ACK, 1 + 15, 1, b"BBBBB");
    assert_eq!(
        h.take(),
        [TcpEvent::DataReady { side: C, start: 0, end: 15 }, TcpEvent::DataReady { side: C, start: 15, end: 20 }]
    );
    // The server has everything and says so: [20, 25) will never come again.
    h.send(S, ACK, 1, 26, b"");
    assert_eq!(h.take(), [TcpEvent::ReassemblyStopped { side: C, reason: StopReason::Gap }]);
    // Acknowledging only what was reassembled is fine.
    let mut h = H::new(cfg());
    h.handshake(0, 0);
    h.send(C, ACK, 1, 1, b"abc");
    h.send(S, ACK, 1, 4, b"");
    h.send(C, FIN | ACK, 4, 1, b"");
    h.send(S, ACK, 1, 5, b"");
    assert_eq!(h.reasm[0].stopped(), None);
}

#[test]
fn reassembles_only_configured_sides() {
    let mut h = H::new(MonitorConfig { reassemble: Sides::Server, ..cfg() });
    h.handshake(0, 0);
    h.send(C, ACK, 1, 1, b"abc");
    h.send(S, ACK, 1, 4, b"def");
    assert_eq!(h.take(), [TcpEvent::DataReady { side: S, start: 0, end: 3 }]);
    assert_eq!(h.reasm[0].frontier(), 0);
    assert!(Sides::Both.contains(C) && !Sides::None.contains(S) && Sides::Client.contains(C));
}

#[test]
fn terminate_gives_exact_rst_numbers_and_drops_the_rest() {
    let mut h = H::new(cfg());
    h.handshake(1000, 9000);
    h.send(C, ACK, 1001, 9001, b"request!");
    h.send(S, ACK, 9001, 1009, b"resp");
    h.take();
    let mut evs = Vec::new();
    let t = h.conn.terminate(h.now, &mut |e, _| evs.push(e));
    assert_eq!(evs, [TcpEvent::Closed]);
    let to_server = t.to_server.unwrap();
    assert_eq!((to_server.seq, to_server.ack, to_server.flags), (1009, 9005, RST | ACK));
    assert_eq!(to_server.alt_seq, None, "the server acknowledged everything");
    let to_client = t.to_client.unwrap();
    assert_eq!((to_client.seq, to_client.ack, to_client.flags), (9005, 1009, RST | ACK));
    assert_eq!(to_client.alt_seq, Some(9001), "the client's last ACK lags");
    assert!(h.conn.is_terminated());
    assert_eq!(h.send(C, ACK, 1009, 9005, b"x"), Action::Drop);
    assert_eq!(h.send(S, RST, 9005, 0, b""), Action::Drop);
    assert_eq!(h.conn.dropped(), 2);
    assert!(h.take().is_empty());
    // Again: the same numbers, no second Closed.
    let again = h.conn.terminate(h.now, &mut |e, _| panic!("{e:?}"));
    assert_eq!(again, t);
    // Lingers, then finishes quietly; still dropping meanwhile.
    let cfg = h.cfg;
    assert!(!h.conn.poll(&cfg, h.now + cfg.linger, &mut |e, _| panic!("{e:?}")));
    assert!(h.conn.poll(&cfg, h.now + cfg.linger + 1, &mut |e, _| panic!("{e:?}")));
    assert_eq!(h.send(C, SYN, 5, 0, b""), Action::Drop);
}

#[test]
fn terminate_counts_the_fin() {
    let mut h = H::new(cfg());
    h.handshake(1000, 9000);
    h.send(C, FIN | ACK, 1001, 9001, b"");
    let t = h.conn.terminate(h.now, &mut |_, _| {});
    assert_eq!(t.to_server.unwrap().seq, 1002);
    assert_eq!(t.to_client.unwrap().ack, 1002);
}

#[test]
fn terminate_during_the_handshake() {
    let mut h = H::new(cfg());
    h.send(C, SYN, 4000, 0, b"");
    let t = h.conn.terminate(h.now, &mut |_, _| {});
    // The client is in SYN-SENT: an RST that acknowledges its SYN.
    assert_eq!(t.to_client.map(|r| (r.seq, r.ack, r.flags)), Some((0, 4001, RST | ACK)));
    // The server has said nothing: no ACK to give.
    assert_eq!(t.to_server.map(|r| (r.seq, r.flags)), Some((4001, RST)));
    // Nothing known at all: nothing to build.
    let t = TcpConn::new().terminate(0, &mut |_, _| {});
    assert_eq!((t.to_client, t.to_server), (None, None));
}

#[test]
fn timeouts_per_phase() {
    let cfg = cfg();
    let never = &mut |e: TcpEvent, _| panic!("{e:?}");
    // Handshake.
    let mut h = H::new(cfg);
    h.send(C, SYN, 1, 0, b"");
    let t0 = h.now;
    assert_eq!(h.conn.deadline(&cfg), t0 + 30 * SECOND);
    assert!(!h.conn.poll(&cfg, t0 + 30 * SECOND, never));
    let mut evs = Vec::new();
    assert!(h.conn.poll(&cfg, t0 + 30 * SECOND + 1, &mut |e, s| evs.push((e, s.side()))));
    assert_eq!(evs, [(TcpEvent::Timeout, C)]);
    assert_eq!(h.conn.phase(), ConnPhase::Finished);
    assert!(h.conn.poll(&cfg, t0 + 31 * SECOND, never), "finished stays finished, once");
    // Established.
    let mut h = H::new(cfg);
    h.handshake(1, 1);
    assert_eq!(h.conn.deadline(&cfg), h.now + 300 * SECOND);
    assert!(!h.conn.poll(&cfg, h.now + 299 * SECOND, never));
    h.send(C, ACK, 2, 2, b"x"); // activity pushes the deadline
    assert_eq!(h.conn.deadline(&cfg), h.now + 300 * SECOND);
    let mut n = 0;
    assert!(h.conn.poll(&cfg, h.now + 301 * SECOND, &mut |e, _| n += usize::from(e == TcpEvent::Timeout)));
    assert_eq!(n, 1);
    // Closing.
    let mut h = H::new(cfg);
    h.handshake(1, 1);
    h.send(C, FIN | ACK, 2, 2, b"");
    assert_eq!(h.conn.deadline(&cfg), h.now + 60 * SECOND);
    let mut n = 0;
    assert!(h.conn.poll(&cfg, h.now + 61 * SECOND, &mut |e, _| n += usize::from(e == TcpEvent::Timeout)));
    assert_eq!(n, 1);
    // Nothing valid seen: finishes without an event.
    let mut h = H::new(cfg);
    h.send(C, RST, 1, 0, b"");
    assert_eq!(h.conn.phase(), ConnPhase::Idle);
    assert!(h.conn.poll(&cfg, h.now + 31 * SECOND, never));
}

#[test]
fn a_new_syn_after_close_restarts_the_connection() {
    let mut h = H::new(cfg());
    h.handshake(100, 200);
    h.send(C, ACK, 101, 201, b"first");
    h.send(S, FIN | ACK, 201, 106, b"");
    h.send(C, FIN | ACK, 106, 202, b"");
    h.send(S, ACK, 202, 107, b"");
    assert_eq!(h.conn.phase(), ConnPhase::Closed);
    h.take();
    // The old SYN again is a retransmission; a new ISN is a new connection.
    // `restarts_on` tells the caller beforehand, without changing anything.
    assert!(!h.conn.restarts_on(&Segment::new(SYN, 100, 0, 65535, b""), C));
    assert!(!h.conn.restarts_on(&Segment::new(SYN | ACK, 5000, 1, 65535, b""), C));
    assert!(h.conn.restarts_on(&Segment::new(SYN, 5000, 0, 65535, b""), C));
    assert_eq!(h.conn.generation(), 0);
    h.send(C, SYN, 100, 0, b"");
    assert!(h.take().is_empty());
    h.send(C, SYN, 5000, 0, b"");
    assert_eq!(h.take(), [TcpEvent::Syn]);
    assert_eq!(h.conn.generation(), 1);
    assert!(!h.conn.restarts_on(&Segment::new(SYN, 9000, 0, 65535, b""), C), "open again");
    assert_eq!(h.reasm[0].frontier(), 0, "streams start over");
    h.read = [Vec::new(), Vec::new()];
    h.send(S, SYN | ACK, 7000, 5001, b"");
    h.send(C, ACK | PSH, 5001, 7001, b"second");
    assert_eq!(h.client(), b"second");
    assert_eq!(h.conn.phase(), ConnPhase::Established);
}

#[test]
fn bogus_syns_are_counted_and_ignored() {
    let mut h = H::new(cfg());
    h.handshake(100, 200);
    h.send(C, SYN, 555, 0, b"");
    h.send(S, SYN | ACK, 777, 101, b"");
    h.send(S, SYN | ACK, 200, 101, b""); // the same SYN-ACK again: a retransmission
    assert!(h.take().is_empty());
    assert_eq!(h.conn.counters(C).invalid, 1);
    assert_eq!(h.conn.counters(S).invalid, 1);
    assert_eq!(h.conn.counters(S).retransmits, 1);
    // A SYN-ACK that does not acknowledge the SYN.
    let mut h = H::new(cfg());
    h.send(C, SYN, 100, 0, b"");
    h.send(S, SYN | ACK, 300, 555, b"");
    assert_eq!(h.conn.counters(S).invalid, 1);
    assert_eq!(h.conn.state(S), TcpState::Listen);
}

#[test]
fn data_after_the_fin_is_ignored() {
    let mut h = H::new(cfg());
    h.handshake(0, 0);
    h.send(C, FIN | ACK | PSH, 1, 1, b"abc");
    h.send(C, ACK, 4, 1, b"zzz");
    assert_eq!(h.take(), [TcpEvent::DataReady { side: C, start: 0, end: 3 }, TcpEvent::Fin { side: C }]);
    assert_eq!(h.conn.counters(C).out_of_window, 1);
    assert_eq!(h.conn.stream_end(C), 4);
}

#[test]
fn syn_with_data() {
    let mut h = H::new(cfg());
    h.send(C, SYN, 10, 0, b"early");
    h.send(S, SYN | ACK, 20, 16, b"");
    h.send(C, ACK, 16, 21, b"");
    assert_eq!(h.take(), [TcpEvent::Syn, TcpEvent::DataReady { side: C, start: 0, end: 5 }, TcpEvent::Established]);
    assert_eq!(h.client(), b"early");
}

#[test]
fn event_type_ids() {
    use event::*;
    let cases = [
        (TcpEvent::Syn, FLOW_TCP_SYN),
        (TcpEvent::Established, FLOW_TCP_ESTABLISHED),
        (TcpEvent::Fin { side: C }, FLOW_TCP_FIN),
        (TcpEvent::Rst { side: S }, FLOW_TCP_RST),
        (TcpEvent::Closed, FLOW_TCP_CLOSED),
        (TcpEvent::Timeout, FLOW_TCP_TIMEOUT),
        (TcpEvent::DataReady { side: C, start: 0, end: 1 }, DATA_RDY_CLIENT),
        (TcpEvent::DataReady { side: S, start: 0, end: 1 }, DATA_RDY_SERVER),
        (TcpEvent::OverlapConflict { side: C, offset: 0, len: 1 }, FLOW_TCP_OVERLAP_CONFLICT),
        (TcpEvent::ReassemblyStopped { side: C, reason: StopReason::Gap }, FLOW_TCP_REASM_STOPPED),
    ];
    for (e, id) in cases {
        assert_eq!(e.type_id(), id, "{e:?}");
    }
    assert_eq!(TcpEvent::Closed.side(), None);
    assert_eq!(TcpEvent::Fin { side: S }.side(), Some(S));
}

#[test]
fn sizes_and_snapshot_bytes() {
    assert_eq!(std::mem::size_of::<TcpSnapshot>(), 24);
    let size = std::mem::size_of::<TcpConn>();
    assert!(size <= 256, "TcpConn grew to {size} bytes");
    let mut h = H::new(cfg());
    h.handshake(u32::MAX, 77);
    let s = h.conn.snapshot(S);
    assert_eq!(TcpSnapshot::from_bytes(&s.to_bytes()), s);
    assert_eq!(s.side(), S);
    assert_eq!(s.seq, 78);
    assert_eq!(s.ack, 0);
    assert!(s.has(TcpSnapshot::SEQ_VALID | TcpSnapshot::ACK_VALID));
    assert_eq!(TcpState::from_u8(10), Some(TcpState::TimeWait));
    assert_eq!(TcpState::from_u8(11), None);
}

#[test]
fn segment_from_a_wire_packet() {
    let mut b = vec![
        0xc3, 0x50, 0x00, 0x50, // ports
        0x12, 0x34, 0x56, 0x78, // seq
        0x00, 0x00, 0x00, 0x09, // ack
        0xa0, 0x12, 0xfa, 0xf0, // data offset 10, SYN|ACK, window 64240
        0x00, 0x00, 0x00, 0x00, // checksum, urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x04, 0x02, // SACK permitted
        0x08, 0x0a, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x03, // timestamps 7, 3
        0x01, // NOP
        0x03, 0x03, 0x07, // window scale 7
    ];
    b.extend_from_slice(b"data");
    let p = TcpPacket::new_checked(&b[..]).unwrap();
    let seg = Segment::from_packet(&p);
    assert_eq!((seg.flags, seg.seq, seg.ack, seg.window), (SYN | ACK, 0x1234_5678, 9, 64240));
    assert_eq!(
        seg.options,
        SegmentOptions { mss: Some(1460), wscale: Some(7), sack_permitted: true, timestamps: Some((7, 3)) }
    );
    assert_eq!(seg.payload, b"data");
}
