//! Capture on demand (`uboxctl capture`).
//!
//! The control thread arms a capture on the [`CaptureBoard`]: what to take
//! ([`Target`]), how much, and a bounded queue for the records. Workers
//! look at the board's generation once per loop iteration (one relaxed
//! load; nothing else when no capture is armed) and keep the armed capture
//! in their dispatcher. With one armed, a packet is matched when it enters
//! its chain (or, without a chain, when it is forwarded), and a matching
//! one is copied (up to the snap length) where its fate is known: as it
//! leaves the chain, passed or dropped, with the NF that decided. The
//! copies go into a bounded MPSC queue (`std::sync::mpsc::sync_channel`);
//! a full queue drops the copy and counts it, the packet itself is never
//! held up. The control thread hands the records to `uboxctl` over the
//! control socket ([`CaptureControl`]), which writes the pcapng file.
//!
//! Bounds: `count` records, `max_bytes` captured bytes, a deadline, and 5 s
//! without a reader; the queue holds at most [`QUEUE`] records and, with
//! the byte cap, `max_bytes` of frame data.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use controller::api::Response;
use controller::capture::{CaptureCounts, CaptureRecord, CaptureStats, CaptureTarget, FlowMatch};

use crate::counters::RuntimeDrop;
use crate::dispatch::{ChainBoard, ChainSnapshot};

/// Records the queue holds at most.
pub const QUEUE: usize = 4096;
/// A capture nobody reads for this long ends.
pub const IDLE: Duration = Duration::from_secs(5);
/// Limits of a capture request.
pub const MAX_COUNT: u64 = 1_000_000;
pub const MAX_BYTES: u64 = 256 << 20;
pub const MAX_SNAPLEN: u32 = 65535;
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// What an armed capture takes, resolved by the control thread.
#[derive(Debug)]
pub enum Target {
    /// Flows whose chain has this name.
    Chain(String),
    /// Flows whose chain has this NF slot in a stage.
    Nf(usize),
    /// Flows this filter matches, with a chain or without.
    Flow(FlowMatch),
}

/// Who decided a captured packet's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider {
    /// It had no chain.
    Wire,
    /// Its chain's NFs took no part.
    None,
    /// This NF slot: the one that dropped it, or the last that passed it.
    Nf(u16),
}

impl Decider {
    /// From a parked packet's `decider` (NF slot + 1, 0 for none).
    pub fn of_parked(d: u16) -> Decider {
        d.checked_sub(1).map_or(Decider::None, Decider::Nf)
    }
}

/// One captured packet on its way to the control thread.
pub struct Rec {
    /// The worker's clock (ns) when its fate was known.
    ns: u64,
    worker: u8,
    flow_id: u64,
    drop: Option<RuntimeDrop>,
    decider: Decider,
    /// Its flow's chain: the snapshot and the chain's index in it.
    chain: Option<(Arc<ChainSnapshot>, usize)>,
    orig_len: u32,
    data: Box<[u8]>,
}

/// A capture as the workers see it.
pub struct Armed {
    pub target: Target,
    count: u64,
    max_bytes: u64,
    snaplen: usize,
    /// Records reserved (captured or on their way into the queue).
    taken: AtomicU64,
    bytes: AtomicU64,
    captured: AtomicU64,
    full: AtomicU64,
    truncated: AtomicU64,
    over_bytes: AtomicBool,
    tx: SyncSender<Rec>,
}

impl Armed {
    /// Copies a frame whose fate is known into the queue, if the capture
    /// still has room (count, bytes) and the queue has. Never blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &self,
        frame: &[u8],
        ns: u64,
        worker: usize,
        flow_id: u64,
        drop: Option<RuntimeDrop>,
        decider: Decider,
        chain: Option<(Arc<ChainSnapshot>, usize)>,
    ) {
        if self.taken.fetch_add(1, Ordering::Relaxed) >= self.count {
            self.taken.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let cut = frame.len().min(self.snaplen);
        if self.bytes.fetch_add(cut as u64, Ordering::Relaxed) + cut as u64 > self.max_bytes {
            self.bytes.fetch_sub(cut as u64, Ordering::Relaxed);
            self.taken.fetch_sub(1, Ordering::Relaxed);
            self.over_bytes.store(true, Ordering::Relaxed);
            return;
        }
        let rec = Rec {
            ns,
            worker: worker as u8,
            flow_id,
            drop,
            decider,
            chain,
            orig_len: frame.len() as u32,
            data: frame[..cut].into(),
        };
        match self.tx.try_send(rec) {
            Ok(()) => {
                self.captured.fetch_add(1, Ordering::Relaxed);
                if cut < frame.len() {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                // Its reservation goes back: a later packet may take it.
                self.bytes.fetch_sub(cut as u64, Ordering::Relaxed);
                self.taken.fetch_sub(1, Ordering::Relaxed);
                // (Disconnected: the capture is over, this worker has not
                // seen it yet.)
                if matches!(e, TrySendError::Full(_)) {
                    self.full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn counts(&self) -> CaptureCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CaptureCounts {
            captured: g(&self.captured),
            dropped_full: g(&self.full),
            truncated: g(&self.truncated),
            bytes: g(&self.bytes),
        }
    }
}

/// Where the control thread posts the armed capture for the workers.
#[derive(Default)]
pub struct CaptureBoard {
    /// Bumped at each arm and disarm.
    gen: AtomicU32,
    armed: Mutex<Option<Arc<Armed>>>,
}

impl CaptureBoard {
    /// What a worker compares once per loop iteration.
    #[inline(always)]
    pub fn gen(&self) -> u32 {
        self.gen.load(Ordering::Relaxed)
    }

    /// The capture armed now (read when `gen` changed).
    pub fn current(&self) -> Option<Arc<Armed>> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, a: Option<Arc<Armed>>) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = a;
        self.gen.fetch_add(1, Ordering::Release);
    }
}

/// A capture on the control thread's side.
struct Session {
    id: u64,
    what: String,
    armed: Arc<Armed>,
    rx: Receiver<Rec>,
    snaplen: u32,
    deadline: Instant,
    last_read: Instant,
    ended: Option<&'static str>,
    /// Records handed to the reader so far.
    handed: u64,
    /// The workers' clock and the wall clock (ns since the epoch) at the start.
    mono_base: u64,
    wall_base: u64,
}

/// The control thread's end: serves the capture requests.
pub struct CaptureControl {
    board: Arc<CaptureBoard>,
    /// The workers' TSC-to-ns factor (32.32 fixed point).
    ns_per_tick_q32: u64,
    session: Option<Session>,
    next_id: u64,
    sessions: u64,
    /// Counts of the captures that are over.
    done: CaptureCounts,
}

/// Names the control thread resolves for the capture: NF slots and chains.
pub trait Names {
    /// The slot of an NF name (registered, or named by a chain).
    fn slot(&self, name: &str) -> Option<usize>;
    /// The name of an NF slot.
    fn name(&self, slot: usize) -> Option<String>;
    /// Every NF name known, sorted.
    fn all(&self) -> Vec<String>;
}

impl CaptureControl {
    pub fn new(board: Arc<CaptureBoard>, ns_per_tick_q32: u64) -> CaptureControl {
        CaptureControl { board, ns_per_tick_q32, session: None, next_id: 1, sessions: 0, done: Default::default() }
    }

    fn mono_now(&self) -> u64 {
        ((crate::dpdk::eal::rdtsc() as u128 * self.ns_per_tick_q32 as u128) >> 32) as u64
    }

    /// `CaptureStart`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        target: CaptureTarget,
        count: u64,
        max_bytes: u64,
        snaplen: u32,
        timeout_ms: u64,
        chains: &ChainBoard,
        names: &dyn Names,
    ) -> Response {
        let fail = |message: String| Response::Error { message };
        self.poll();
        if let Some(s) = self.session.as_ref().filter(|s| s.ended.is_none()) {
            let c = s.armed.counts();
            return fail(format!(
                "capture {} ({}) is running: {} of {} packets so far, at most {} s more; one capture at a time: \
                 wait for it to end",
                s.id,
                s.what,
                c.captured,
                s.armed.count,
                s.deadline.saturating_duration_since(Instant::now()).as_secs() + 1
            ));
        }
        if !(1..=MAX_COUNT).contains(&count) {
            return fail(format!("--count {count}: between 1 and {MAX_COUNT}"));
        }
        if !(1..=MAX_BYTES).contains(&max_bytes) {
            return fail(format!("--max-bytes {max_bytes}: between 1 and {MAX_BYTES}"));
        }
        if !(1..=MAX_SNAPLEN).contains(&snaplen) {
            return fail(format!("--snaplen {snaplen}: between 1 and {MAX_SNAPLEN}"));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return fail(format!("--timeout of {timeout_ms} ms: between 1 ms and {} s", MAX_TIMEOUT_MS / 1000));
        }
        let what = target.to_string();
        let t = match target {
            CaptureTarget::Chain { name } => {
                let snap = chains.load();
                if !snap.chains.iter().any(|c| c.name == name) {
                    let known: Vec<&str> = snap.chains.iter().map(|c| c.name.as_str()).collect();
                    return fail(if known.is_empty() {
                        format!("no chain named '{name}': no chains are applied (uboxctl chain apply FILE)")
                    } else {
                        format!("no chain named '{name}'; the chains in force: {}", known.join(", "))
                    });
                }
                Target::Chain(name)
            }
            CaptureTarget::Nf { name } => match names.slot(&name) {
                Some(k) => Target::Nf(k),
                None => {
                    let known = names.all();
                    return fail(if known.is_empty() {
                        format!("no NF named '{name}': no NF has registered or been named by a chain")
                    } else {
                        format!("no NF named '{name}'; the NFs known: {}", known.join(", "))
                    });
                }
            },
            CaptureTarget::Flow { filter } => match filter.parse::<FlowMatch>() {
                Ok(m) => Target::Flow(m),
                Err(e) => return fail(e.to_string()),
            },
        };
        let (tx, rx) = sync_channel(QUEUE.min(count as usize));
        let armed = Arc::new(Armed {
            target: t,
            count,
            max_bytes,
            snaplen: snaplen as usize,
            taken: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            captured: AtomicU64::new(0),
            full: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            over_bytes: AtomicBool::new(false),
            tx,
        });
        let id = self.next_id;
        self.next_id += 1;
        self.sessions += 1;
        let now = Instant::now();
        let wall_base =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        self.retire();
        self.session = Some(Session {
            id,
            what: what.clone(),
            armed: Arc::clone(&armed),
            rx,
            snaplen,
            deadline: now + Duration::from_millis(timeout_ms),
            last_read: now,
            ended: None,
            handed: 0,
            mono_base: self.mono_now(),
            wall_base,
        });
        self.board.set(Some(armed));
        tracing::info!(
            "capture {id} armed: {what}, {count} packets, {max_bytes} bytes, snaplen {snaplen}, {timeout_ms} ms"
        );
        Response::Capture { id, snaplen, records: Vec::new(), counts: CaptureCounts::default(), ended: None }
    }

    /// Ends captures whose bound was reached; drops one nobody reads.
    /// Once per main-loop pass.
    pub fn poll(&mut self) {
        let Some(s) = self.session.as_mut() else { return };
        if s.ended.is_none() {
            let a = &s.armed;
            let why = if a.captured.load(Ordering::Relaxed) >= a.count {
                Some("count")
            } else if a.over_bytes.load(Ordering::Relaxed) {
                Some("bytes")
            } else if Instant::now() >= s.deadline {
                Some("timeout")
            } else {
                None
            };
            if let Some(why) = why {
                s.ended = Some(why);
                self.board.set(None);
                tracing::info!("capture {} ended: {why}", s.id);
            }
        }
        if self.session.as_ref().is_some_and(|s| s.last_read.elapsed() >= IDLE) {
            let id = self.session.as_ref().map_or(0, |s| s.id);
            tracing::warn!("capture {id}: nobody read it for {} s; ended", IDLE.as_secs());
            self.retire();
        }
    }

    /// Forgets the session (after its last records went out, or its reader
    /// left), keeping its counts.
    fn retire(&mut self) {
        if let Some(s) = self.session.take() {
            if s.ended.is_none() {
                self.board.set(None);
            }
            let c = s.armed.counts();
            self.done.captured += c.captured;
            self.done.dropped_full += c.dropped_full;
            self.done.truncated += c.truncated;
            self.done.bytes += c.bytes;
        }
    }

    /// `CaptureRead` (`stop`: `CaptureStop`).
    pub fn read(&mut self, id: u64, max: u32, stop: bool, names: &dyn Names) -> Response {
        self.poll();
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            return Response::Error {
                message: format!("no capture {id} (it ended, or was not read for {} s)", IDLE.as_secs()),
            };
        };
        if stop && s.ended.is_none() {
            s.ended = Some("stopped");
            self.board.set(None);
        }
        s.last_read = Instant::now();
        let max = if stop { QUEUE } else { (max as usize).clamp(1, QUEUE) };
        let mut records = Vec::new();
        while records.len() < max {
            let Ok(r) = s.rx.try_recv() else { break };
            records.push(record(r, s.mono_base, s.wall_base, names));
        }
        s.handed += records.len() as u64;
        let counts = s.armed.counts();
        // Over once every record captured went out.
        let ended = s.ended.filter(|_| s.handed >= counts.captured).map(str::to_string);
        let (id, snaplen) = (s.id, s.snaplen);
        if ended.is_some() {
            self.retire();
        }
        Response::Capture { id, snaplen, records, counts, ended }
    }

    /// For `uboxctl stats`.
    pub fn stats(&self) -> CaptureStats {
        let mut counts = self.done.clone();
        let active = self.session.as_ref().is_some_and(|s| s.ended.is_none());
        if let Some(s) = &self.session {
            let c = s.armed.counts();
            counts.captured += c.captured;
            counts.dropped_full += c.dropped_full;
            counts.truncated += c.truncated;
            counts.bytes += c.bytes;
        }
        CaptureStats { sessions: self.sessions, active, counts }
    }
}

/// A queued record as `uboxctl` gets it.
fn record(r: Rec, mono_base: u64, wall_base: u64, names: &dyn Names) -> CaptureRecord {
    let nf = match r.decider {
        Decider::Wire => "wire".to_string(),
        Decider::None => "none".to_string(),
        Decider::Nf(k) => names.name(k as usize).unwrap_or_else(|| format!("slot{k}")),
    };
    let chain =
        r.chain.as_ref().and_then(|(s, c)| s.chains.get(*c)).map_or_else(|| "-".to_string(), |c| c.name.clone());
    CaptureRecord {
        ts_ns: wall_base.wrapping_add(r.ns.wrapping_sub(mono_base)),
        worker: u32::from(r.worker),
        flow_id: r.flow_id,
        verdict: if r.drop.is_some() { controller::capture::VERDICT_DROP } else { controller::capture::VERDICT_PASS }
            .to_string(),
        nf,
        chain,
        reason: r.drop.map_or_else(String::new, |d| d.name().to_string()),
        orig_len: r.orig_len,
        data: controller::capture::hex(&r.data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoNames;
    impl Names for NoNames {
        fn slot(&self, name: &str) -> Option<usize> {
            (name == "fw").then_some(3)
        }
        fn name(&self, slot: usize) -> Option<String> {
            (slot == 3).then(|| "fw".to_string())
        }
        fn all(&self) -> Vec<String> {
            vec!["fw".into()]
        }
    }

    fn ctl() -> CaptureControl {
        // rdtsc is callable without EAL; the factor only scales timestamps.
        CaptureControl::new(Arc::new(CaptureBoard::default()), 1 << 32)
    }

    fn start(c: &mut CaptureControl, t: CaptureTarget, count: u64, max_bytes: u64) -> Response {
        c.start(t, count, max_bytes, 64, 10_000, &ChainBoard::default(), &NoNames)
    }

    #[test]
    fn bounded_by_count_and_bytes_and_counted() {
        let mut c = ctl();
        let t = CaptureTarget::Flow { filter: "tcp".into() };
        assert!(matches!(start(&mut c, t.clone(), 3, 1 << 20), Response::Capture { id: 1, .. }));
        let g = c.board.gen();
        let a = c.board.current().unwrap();
        // A second one is refused while this one runs.
        let r = start(&mut c, t.clone(), 3, 1 << 20);
        assert!(matches!(&r, Response::Error { message } if message.contains("one capture at a time")), "{r:?}");
        for i in 0..5u64 {
            a.offer(&[i as u8; 100], i, 0, i, None, Decider::Wire, None);
        }
        a.offer(&[9; 10], 9, 1, 7, Some(RuntimeDrop::NfVerdict), Decider::Nf(3), None);
        let Response::Capture { records, counts, ended, .. } = c.read(1, 100, false, &NoNames) else { panic!() };
        assert_eq!(records.len(), 3);
        assert_eq!((counts.captured, counts.truncated, counts.bytes), (3, 3, 192));
        assert_eq!(ended.as_deref(), Some("count"));
        assert_ne!(c.board.gen(), g, "disarmed");
        assert!(c.board.current().is_none());
        assert_eq!(records[0].data.len(), 128);
        assert_eq!(records[0].nf, "wire");
        // The next one: a byte cap of two frames.
        assert!(matches!(start(&mut c, t, 100, 130), Response::Capture { id: 2, .. }));
        let a = c.board.current().unwrap();
        for i in 0..4u64 {
            a.offer(&[1; 64], i, 0, i, Some(RuntimeDrop::NfVerdict), Decider::Nf(3), None);
        }
        let Response::Capture { records, ended, .. } = c.read(2, 100, false, &NoNames) else { panic!() };
        assert_eq!(records.len(), 2);
        assert_eq!(ended.as_deref(), Some("bytes"));
        assert_eq!(records[1].comment(), "flow=1 worker=0 verdict=drop nf=fw chain=- reason=nf_verdict_drop");
        let st = c.stats();
        assert_eq!((st.sessions, st.active, st.counts.captured), (2, false, 5));
    }

    #[test]
    fn a_full_queue_drops_copies_and_counts_them() {
        let mut c = ctl();
        let t = CaptureTarget::Nf { name: "fw".into() };
        assert!(matches!(start(&mut c, t, MAX_COUNT, MAX_BYTES), Response::Capture { .. }));
        let a = c.board.current().unwrap();
        for i in 0..(QUEUE as u64 + 10) {
            a.offer(&[0; 20], i, 0, i, None, Decider::None, None);
        }
        let Response::Capture { records, counts, ended, .. } = c.read(1, 10_000, true, &NoNames) else { panic!() };
        assert_eq!((records.len(), counts.dropped_full), (QUEUE, 10));
        assert_eq!(ended.as_deref(), Some("stopped"));
        assert!(matches!(c.read(1, 1, false, &NoNames), Response::Error { .. }));
    }

    #[test]
    fn unknown_names_and_bad_filters_are_refused_clearly() {
        let mut c = ctl();
        let r = start(&mut c, CaptureTarget::Chain { name: "web".into() }, 1, 1);
        assert!(matches!(&r, Response::Error { message } if message.contains("no chains are applied")), "{r:?}");
        let r = start(&mut c, CaptureTarget::Nf { name: "ids".into() }, 1, 1);
        assert!(matches!(&r, Response::Error { message } if message.contains("known: fw")), "{r:?}");
        let r = start(&mut c, CaptureTarget::Flow { filter: "host 1.2.3.4".into() }, 1, 1);
        assert!(matches!(&r, Response::Error { message } if message.contains("\"host\"")), "{r:?}");
        let r = start(&mut c, CaptureTarget::Flow { filter: "tcp".into() }, 0, 1);
        assert!(matches!(&r, Response::Error { message } if message.contains("--count")), "{r:?}");
        assert!(c.board.current().is_none() && c.stats().sessions == 0);
    }
}
