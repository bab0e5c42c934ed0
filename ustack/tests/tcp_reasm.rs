//! The reassembler and the ring reader on their own: ring wrap, floor and
//! frontier, reader errors, overlap policies, range limits.

use ustack::tcp::{OverlapPolicy, ReadError, Reassembler, RingReader, StopReason, MAX_OOO_RANGES};

fn fw() -> Reassembler {
    Reassembler::new(OverlapPolicy::FirstWins, MAX_OOO_RANGES)
}

#[test]
fn reader_reads_across_the_wrap_and_reports_errors() {
    let mut r = fw();
    let mut ring = [0u8; 8];
    assert_eq!(r.insert(&mut ring, 0, b"abcdefgh").ready, Some((0, 8)));
    r.release(8);
    assert_eq!(r.insert(&mut ring, 8, b"ijkl").ready, Some((8, 12)));
    assert_eq!((r.frontier(), r.written_end(), r.floor()), (12, 12, 8));
    let rd = r.reader(&ring);
    assert_eq!(rd.readable(), 4..12);
    // Two slices: offsets 6, 7 at the end of the ring, 8..10 at its start.
    assert_eq!(rd.read(6..10), Ok((&b"gh"[..], &b"ij"[..])));
    assert_eq!(rd.read(4..12), Ok((&b"efgh"[..], &b"ijkl"[..])));
    assert_eq!(rd.read(8..12), Ok((&b"ijkl"[..], &b""[..])));
    assert_eq!(rd.read(5..5), Ok((&b""[..], &b""[..])));
    assert_eq!(rd.read(3..6), Err(ReadError::Overwritten), "offset 3 now holds offset 11");
    assert_eq!(rd.read(10..13), Err(ReadError::NotYet));
    assert_eq!(rd.read(std::ops::Range { start: 7, end: 6 }), Err(ReadError::Invalid));
    assert_eq!(rd.read_vec(5..11).unwrap(), b"fghijk");
    // Out-of-order data raises written_end past the frontier: older slots go.
    assert!(r.insert(&mut ring, 14, b"op").ready.is_none());
    assert_eq!(r.written_end(), 16);
    let rd = r.reader(&ring);
    assert_eq!(rd.read(7..12), Err(ReadError::Overwritten));
    assert_eq!(rd.read(8..12), Ok((&b"ijkl"[..], &b""[..])));
    assert_eq!(rd.read(8..13), Err(ReadError::NotYet));
    // Just the bytes and two numbers, as an NF has them.
    let nf = RingReader::new(&ring, 12, 16);
    assert_eq!(nf.read_vec(8..12).unwrap(), b"ijkl");
    assert_eq!(ReadError::Overwritten.to_string(), "stream range overwritten: the reader fell behind the ring");
}

#[test]
fn reader_over_an_empty_or_inconsistent_ring() {
    let empty = RingReader::new(&[], 5, 5);
    assert_eq!(empty.read(0..1), Err(ReadError::Overwritten));
    assert_eq!(empty.read(5..5), Ok((&b""[..], &b""[..])));
    // A frontier above the written end is capped at it.
    let ring = [1u8, 2, 3, 4];
    let rd = RingReader::new(&ring, 10, 3);
    assert_eq!(rd.read(0..4), Err(ReadError::NotYet));
    assert_eq!(rd.read(0..3), Ok((&[1u8, 2, 3][..], &b""[..])));
}

#[test]
fn floor_is_monotonic_and_at_most_the_frontier() {
    let mut r = fw();
    let mut ring = [0u8; 16];
    let _ = r.insert(&mut ring, 0, b"0123");
    r.release(10);
    assert_eq!(r.floor(), 4);
    r.release(2);
    assert_eq!(r.floor(), 4);
    // Pinned at 4: [4, 20) fits, [4, 21) does not.
    let _ = r.insert(&mut ring, 19, b"x");
    assert_eq!(r.stopped(), None);
    let out = r.insert(&mut ring, 20, b"y");
    assert_eq!(out.stopped, Some(StopReason::BufferFull));
    assert_eq!(out.ready, None);
    assert!(!r.stop(StopReason::NoBuffer), "already stopped");
    assert_eq!(r.stopped(), Some(StopReason::BufferFull));
    // Stopped: nothing moves any more.
    let out = r.insert(&mut ring, 4, b"4567");
    assert_eq!(out, Default::default());
    assert_eq!(r.frontier(), 4);
    r.reset();
    assert_eq!((r.frontier(), r.floor(), r.written_end(), r.stopped()), (0, 0, 0, None));
    assert_eq!(r.counters(), Default::default());
}

#[test]
fn last_wins_replaces_held_bytes_only() {
    let mut r = Reassembler::new(OverlapPolicy::LastWins, 4);
    let mut ring = [0u8; 32];
    let _ = r.insert(&mut ring, 0, b"abc");
    let _ = r.insert(&mut ring, 5, b"fgh");
    let out = r.insert(&mut ring, 4, b"WVUT"); // 4 new; f, g, h held: replaced
    assert_eq!(out.conflict, Some((5, 3)));
    assert_eq!(out.ready, None);
    assert_eq!(r.ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(4, 8)]);
    let out = r.insert(&mut ring, 1, b"XYde"); // b, c final: kept; d new; e replaces W
    assert_eq!(out.ready, Some((3, 8)));
    assert_eq!(out.conflict, Some((1, 4)));
    assert_eq!(r.reader(&ring).read_vec(0..8).unwrap(), b"abcdeVUT");
    assert_eq!(r.policy(), OverlapPolicy::LastWins);
    assert_eq!(r.counters().conflicts, 2);
}

#[test]
fn first_wins_fills_only_the_gaps() {
    let mut r = fw();
    let mut ring = [0u8; 64];
    let _ = r.insert(&mut ring, 2, b"cd");
    let _ = r.insert(&mut ring, 6, b"gh");
    let _ = r.insert(&mut ring, 10, b"kl");
    assert_eq!(r.ooo_len(), 3);
    // Covers everything, agrees with the held bytes: a retransmission.
    let out = r.insert(&mut ring, 0, b"abcdefghijklmn");
    assert_eq!(out, ustack::tcp::Insert { conflict: None, ready: Some((0, 14)), stopped: None });
    assert_eq!(r.reader(&ring).read_vec(0..14).unwrap(), b"abcdefghijklmn");
    assert_eq!(r.ooo_len(), 0);
    let c = r.counters();
    assert_eq!((c.retransmits, c.conflicts, c.out_of_order, c.segments), (1, 0, 3, 4));
}

#[test]
fn range_limit_drops_data_and_zero_holds_nothing_apart() {
    let mut r = Reassembler::new(OverlapPolicy::FirstWins, 2);
    let mut ring = [0u8; 64];
    let _ = r.insert(&mut ring, 10, b"a");
    let _ = r.insert(&mut ring, 20, b"b");
    let _ = r.insert(&mut ring, 30, b"c"); // a third range: dropped
    let _ = r.insert(&mut ring, 11, b"a"); // extends one: fine
    assert_eq!(r.ooo_ranges().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(10, 12), (20, 21)]);
    assert_eq!(r.counters().ooo_dropped, 1);
    assert_eq!(r.acked(0), None, "acknowledging up to the frontier is fine");
    let mut r = Reassembler::new(OverlapPolicy::FirstWins, 0);
    let _ = r.insert(&mut ring, 1, b"x");
    assert_eq!(r.ooo_len(), 0);
    assert_eq!(r.counters().ooo_dropped, 1);
    assert_eq!(r.insert(&mut ring, 0, b"ab").ready, Some((0, 2)));
    assert_eq!(r.acked(3), Some(StopReason::Gap));
    assert_eq!(r.acked(4), None, "reported once");
    assert_eq!(Reassembler::new(OverlapPolicy::FirstWins, 1000).max_ranges(), MAX_OOO_RANGES);
    assert_eq!(StopReason::Gap.to_string(), "gap");
}

#[test]
fn many_out_of_order_segments_merge_into_few_ranges() {
    let mut r = fw();
    let mut ring = vec![0u8; 1 << 12];
    let data: Vec<u8> = (0..2000u32).map(|i| (i % 253) as u8).collect();
    // Odd 100-byte blocks first (10 ranges), then the even ones.
    for pass in [1, 0] {
        for (i, block) in data.chunks(100).enumerate() {
            if i % 2 == pass {
                let _ = r.insert(&mut ring, (i * 100) as u64, block);
                assert!(r.ooo_len() <= 10);
            }
        }
    }
    assert_eq!(r.frontier(), 2000);
    assert_eq!(r.reader(&ring).read_vec(0..2000).unwrap(), data);
}
