//! The tap proper: one record per TCP connection, its two files, the
//! bounds, and the index. It owns the output directory and knows nothing
//! of the NF session: `main.rs` turns events into calls ([`Tap::data`],
//! [`Tap::tcp`], [`Tap::flow_end`]), so this module is tested on its own.
//!
//! # Records
//!
//! A record is one TCP connection: a flow key (worker, flow id) from its
//! first `FLOW/TCP/SYN`, `ESTABLISHED` or `DATA_RDY` until its `FLOW/END`.
//! A SYN on a flow whose connection already carried bytes or closed (a
//! client reusing its port) starts a new record; the old one waits in the
//! flow's entry (at most [`PENDING_PER_FLOW`]) for the `FLOW/END` that
//! names the five-tuple they share. Records get ids 1, 2, ... in the order
//! they start, continuing after the highest id already in the directory.
//!
//! # Files
//!
//! A side's bytes go to `NNNNNN-wW-fF.c2s` (what the client sent) or
//! `.s2c` (what the server sent), created with its first byte (a side that
//! sent nothing has no file). Bytes are written in stream order, each
//! once: a range announced again is skipped, and bytes the tap did not get
//! (a `DATA_RDY` it missed, a record started mid-stream) are read back from
//! the stream ring when still there, else recorded as a gap (offset and
//! length in the index) and not written, so the file holds the stream
//! minus its gaps. For each side the index says
//! `stream_bytes = bytes + not_written + gap_bytes`.
//!
//! # Bounds
//!
//! - `max_bytes` per side of a record; past it the side is `capped` and
//!   its file closed, the rest counted as `not_written`.
//! - `max_total` bytes written by this process to all files; past it
//!   every side is capped the same way.
//! - `max_flows` flow entries; a new flow past it evicts the one idle the
//!   longest (its records are finished as `tap_evicted`).
//! - `max_open_files`; past it the least recently written file is closed,
//!   and reopened (appending) when its side writes again.
//!
//! Each bound reached is counted in the [`Report`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nf_sdk::{FlowEnd, Side};
use serde::Serialize;
use ubox_shm::event::{
    FLOW_END_EVICTED, FLOW_END_IDLE, FLOW_END_SHUTDOWN, FLOW_END_TCP_CLOSED, FLOW_END_TCP_RESET, FLOW_END_TCP_TIMEOUT,
    FLOW_END_TERMINATED,
};

/// A flow as the tap keys it: flow ids are unique per worker only.
pub type FlowKey = (u32, u64);

/// The index's file name in the output directory.
pub const INDEX_FILE: &str = "index.jsonl";
/// Gap ranges listed per side in the index (all are counted).
pub const GAP_RANGES_KEPT: usize = 16;
/// Finished records of one flow kept for its `FLOW/END` (port reuse); the
/// oldest is written without its five-tuple past it.
pub const PENDING_PER_FLOW: usize = 8;

/// The bounds (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_total: u64,
    pub max_flows: usize,
    pub max_open_files: usize,
}

/// What one `DATA_RDY` announces.
#[derive(Clone, Debug)]
pub struct Chunk<'a> {
    /// Stream offsets of the new bytes.
    pub range: Range<u64>,
    /// The bytes: first slice, then the part past the ring's end.
    pub bytes: (&'a [u8], &'a [u8]),
    /// The monitor's stop reason (`StreamRef::stopped`, 0: not stopped):
    /// no further bytes follow on this side.
    pub stopped: u32,
}

/// A `FLOW/TCP/...` event as the tap tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpKind {
    Syn,
    Established,
    Fin,
    Rst,
    Closed,
    Timeout,
    Conflict,
    ReasmStopped,
    Other,
}

/// The name of a `FlowEnd::reason` (as `flow-logger` writes them).
pub fn end_name(reason: u8) -> &'static str {
    match reason {
        FLOW_END_IDLE => "idle",
        FLOW_END_EVICTED => "evicted",
        FLOW_END_SHUTDOWN => "shutdown",
        FLOW_END_TCP_CLOSED => "tcp_closed",
        FLOW_END_TCP_RESET => "tcp_reset",
        FLOW_END_TCP_TIMEOUT => "tcp_timeout",
        FLOW_END_TERMINATED => "terminated",
        _ => "unknown",
    }
}

/// The name of a `StreamRef::stopped` reason.
pub fn stop_name(stopped: u32) -> &'static str {
    match stopped {
        1 => "buffer_full",
        2 => "no_buffer",
        3 => "gap",
        _ => "stopped",
    }
}

/// `addr:port`, IPv4-mapped addresses as IPv4.
fn endpoint(addr: [u8; 16], port: u16) -> String {
    let v6 = Ipv6Addr::from(addr);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, port).to_string()
}

/// `t` as RFC 3339 UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

const EXT: [&str; 2] = ["c2s", "s2c"];

/// One side of a record.
#[derive(Debug, Default)]
struct SideState {
    /// The file's name, once its first byte was written.
    file: Option<String>,
    /// Stream offset seen up to (what `DATA_RDY` announced).
    next: u64,
    written: u64,
    not_written: u64,
    capped: Option<&'static str>,
    gaps: u64,
    gap_bytes: u64,
    gap_ranges: Vec<[u64; 2]>,
    stopped: Option<&'static str>,
    conflicts: u64,
    fin: bool,
    write_error: Option<String>,
}

/// One TCP connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    start: SystemTime,
    end: Option<SystemTime>,
    /// How the TCP events said it ended (`tcp_closed`, `tcp_reset`, `tcp_timeout`).
    tcp_end: Option<&'static str>,
    sides: [SideState; 2],
}

impl Conn {
    /// It carried bytes or ended: a new SYN on its flow is a new connection.
    fn used(&self) -> bool {
        self.tcp_end.is_some() || self.sides.iter().any(|s| s.next > 0 || s.fin)
    }
}

/// A flow's records: the last one is current.
#[derive(Debug)]
struct FlowEntry {
    conns: Vec<Conn>,
    /// Its key in [`Tap::activity`].
    tick: u64,
}

/// One side in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SideLine {
    /// The file (in the output directory), if the side sent a byte.
    pub file: Option<String>,
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes of the stream the monitor announced (the offset reached).
    pub stream_bytes: u64,
    /// Bytes announced but not written: past a cap, or after a write error.
    pub not_written: u64,
    /// Bytes the tap never got (`gaps` ranges of them).
    pub gap_bytes: u64,
    pub gaps: u64,
    /// The first [`GAP_RANGES_KEPT`] gaps: `[stream offset, length]`.
    pub gap_ranges: Vec<[u64; 2]>,
    /// `max_bytes` or `max_total` once a cap cut the side short.
    pub capped: Option<&'static str>,
    /// Why the monitor stopped reassembling the side (`buffer_full`,
    /// `no_buffer`, `gap`, or `stopped` when only `REASM_STOPPED` said so).
    pub stopped: Option<&'static str>,
    /// `FLOW/TCP/OVERLAP_CONFLICT` events (retransmitted bytes that differed).
    pub conflicts: u64,
    /// The side sent its FIN.
    pub fin: bool,
    pub write_error: Option<String>,
}

/// One line of `index.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IndexLine {
    pub id: u64,
    pub worker: u32,
    pub flow_id: u64,
    /// `addr:port`, from the flow's `FLOW/END` (null when the tap stopped first).
    pub client: Option<String>,
    pub server: Option<String>,
    /// When the tap saw the connection's first event, and its end.
    pub start_time: String,
    pub end_time: String,
    /// The flow's duration as the runtime measured it (from `FLOW/END`).
    pub duration_ms: Option<u64>,
    /// How it ended.
    pub end: &'static str,
    /// A side had a gap or was stopped by the monitor: its file is not the whole stream.
    pub gap: bool,
    /// A side was capped.
    pub truncated: bool,
    pub c2s: SideLine,
    pub s2c: SideLine,
}

/// The tap's counters (`--json-out`, and the summary on exit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub dir: String,
    /// Every event the NF got: `data_events + tcp_events + flow_end_events`.
    pub events: u64,
    pub data_events: u64,
    pub tcp_events: u64,
    pub flow_end_events: u64,
    /// Records started (connections).
    pub connections: u64,
    /// Index lines written.
    pub index_lines: u64,
    /// Records written before their flow ended (the tap stopped, or the
    /// runtime went away), with end `unfinished` (or the TCP end seen).
    pub unfinished: u64,
    /// Flow entries evicted at `--max-flows`.
    pub flows_evicted: u64,
    pub bytes_written: u64,
    pub bytes_c2s: u64,
    pub bytes_s2c: u64,
    pub bytes_over_max_bytes: u64,
    pub bytes_over_max_total: u64,
    /// Sides cut short by a cap.
    pub sides_capped: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Missed bytes read back from the stream ring (so not gaps).
    pub bytes_recovered: u64,
    /// Sides whose reassembly the monitor stopped.
    pub sides_stopped: u64,
    pub conflicts: u64,
    /// `DATA_RDY` ranges announced again (skipped: already written).
    pub rescans: u64,
    pub files_created: u64,
    pub files_reopened: u64,
    /// Files closed to stay under `--max-open-files`.
    pub files_closed_lru: u64,
    pub write_errors: u64,
    pub bytes_write_failed: u64,
    pub index_errors: u64,
    /// `DATA_RDY` events whose bytes (or `FLOW/END` events whose payload)
    /// could not be read: a runtime bug.
    pub read_errors: u64,
    /// `FLOW/END` of flows the tap held no record of.
    pub flow_end_untracked: u64,
    /// The first write or index error.
    pub first_error: Option<String>,
}

impl Report {
    /// The summary printed on exit.
    pub fn render(&self) -> String {
        format!(
            "stream-tap: {dir}\n\
             \x20 connections {conns} (index lines {lines}, unfinished {unf}, evicted at --max-flows {ev})\n\
             \x20 bytes written {w} (client->server {c}, server->client {s}); not written: {ob} over --max-bytes \
             ({capped} side(s) capped), {ot} over --max-total, {wf} after write errors\n\
             \x20 gaps {g} ({gb} bytes; {rec} missed bytes read back from the ring); sides stopped by the monitor \
             {st}; overlap conflicts {cf}\n\
             \x20 files created {fc}, closed to stay under --max-open-files {fl} (reopened {fr})\n\
             \x20 events {e} (DATA_RDY {de}, FLOW/TCP {te}, FLOW/END {fe}, untracked FLOW/END {fu}); \
             errors: {we} write, {ie} index, {re} read\n",
            dir = self.dir,
            conns = self.connections,
            lines = self.index_lines,
            unf = self.unfinished,
            ev = self.flows_evicted,
            w = self.bytes_written,
            c = self.bytes_c2s,
            s = self.bytes_s2c,
            ob = self.bytes_over_max_bytes,
            capped = self.sides_capped,
            ot = self.bytes_over_max_total,
            wf = self.bytes_write_failed,
            g = self.gaps,
            gb = self.gap_bytes,
            rec = self.bytes_recovered,
            st = self.sides_stopped,
            cf = self.conflicts,
            fc = self.files_created,
            fl = self.files_closed_lru,
            fr = self.files_reopened,
            e = self.events,
            de = self.data_events,
            te = self.tcp_events,
            fe = self.flow_end_events,
            fu = self.flow_end_untracked,
            we = self.write_errors,
            ie = self.index_errors,
            re = self.read_errors,
        )
    }
}

/// The open files, at most `max`, the least recently written closed first.
#[derive(Debug)]
struct OpenFiles {
    max: usize,
    /// (record id, side) -> the file and its key in `lru`.
    open: HashMap<(u64, usize), (File, u64)>,
    lru: BTreeMap<u64, (u64, usize)>,
}

impl OpenFiles {
    /// The file of (record id, side), opened if need be: created
    /// (truncated) when `create`, else appended to.
    fn get(
        &mut self,
        key: (u64, usize),
        path: &Path,
        create: bool,
        tick: u64,
        r: &mut Report,
    ) -> io::Result<&mut File> {
        if let Some((_, t)) = self.open.get(&key) {
            self.lru.remove(t);
        } else {
            while self.open.len() >= self.max.max(1) {
                let Some((_, victim)) = self.lru.pop_first() else { break };
                self.open.remove(&victim);
                r.files_closed_lru += 1;
            }
            let f = if create {
                OpenOptions::new().write(true).create(true).truncate(true).open(path)?
            } else {
                OpenOptions::new().append(true).open(path)?
            };
            if create {
                r.files_created += 1;
            } else {
                r.files_reopened += 1;
            }
            self.open.insert(key, (f, tick));
        }
        self.lru.insert(tick, key);
        let e = self.open.get_mut(&key).ok_or_else(|| io::Error::other("open file table out of step"))?;
        e.1 = tick;
        Ok(&mut e.0)
    }

    fn close(&mut self, key: (u64, usize)) {
        if let Some((_, t)) = self.open.remove(&key) {
            self.lru.remove(&t);
        }
    }
}

/// What writes files: the directory, the bounds, the open files, the counters.
#[derive(Debug)]
struct Writer {
    dir: PathBuf,
    limits: Limits,
    files: OpenFiles,
    total: u64,
    report: Report,
}

impl Writer {
    fn error(&mut self, what: String) {
        if self.report.first_error.is_none() {
            tracing::error!("{what}");
            self.report.first_error = Some(what);
        }
    }

    /// Appends `a` then `b` to side `s` of record `id` of flow `key`, within the caps.
    fn write(&mut self, key: FlowKey, id: u64, s: usize, side: &mut SideState, (a, b): (&[u8], &[u8]), tick: u64) {
        let n = (a.len() + b.len()) as u64;
        if n == 0 {
            return;
        }
        if side.write_error.is_some() {
            side.not_written += n;
            return;
        }
        let room_side = self.limits.max_bytes.saturating_sub(side.written);
        let room_total = self.limits.max_total.saturating_sub(self.total);
        let allowed = n.min(room_side).min(room_total);
        if allowed < n {
            let over = n - allowed;
            side.not_written += over;
            if room_side <= room_total {
                self.report.bytes_over_max_bytes += over;
            } else {
                self.report.bytes_over_max_total += over;
            }
            if side.capped.is_none() {
                side.capped = Some(if room_side <= room_total { "max_bytes" } else { "max_total" });
                self.report.sides_capped += 1;
            }
        }
        if allowed > 0 {
            let name = side.file.get_or_insert_with(|| format!("{id:06}-w{}-f{}.{}", key.0, key.1, EXT[s])).clone();
            let path = self.dir.join(&name);
            let create = side.written == 0;
            let cut = allowed as usize;
            let (a, b) = if cut <= a.len() { (&a[..cut], &b[..0]) } else { (a, &b[..cut - a.len()]) };
            let result = self
                .files
                .get((id, s), &path, create, tick, &mut self.report)
                .and_then(|f| f.write_all(a).and_then(|()| f.write_all(b)));
            match result {
                Ok(()) => {
                    side.written += allowed;
                    self.total += allowed;
                    self.report.bytes_written += allowed;
                    if s == 0 {
                        self.report.bytes_c2s += allowed;
                    } else {
                        self.report.bytes_s2c += allowed;
                    }
                }
                Err(e) => {
                    side.not_written += allowed;
                    side.write_error = Some(e.to_string());
                    self.report.write_errors += 1;
                    self.report.bytes_write_failed += allowed;
                    self.files.close((id, s));
                    self.error(format!("cannot write {}: {e}; that side is not written further", path.display()));
                }
            }
        }
        if side.written >= self.limits.max_bytes {
            self.files.close((id, s));
        }
    }
}

/// The tap: flow entries and the writer (see the module docs).
#[derive(Debug)]
pub struct Tap {
    w: Writer,
    index: File,
    flows: HashMap<FlowKey, FlowEntry>,
    /// Flow entries by last activity (the oldest is evicted first).
    activity: BTreeMap<u64, FlowKey>,
    tick: u64,
    next_id: u64,
}

/// The highest record id among the names `NNNNNN-...` in `dir`.
fn highest_id(dir: &Path) -> io::Result<u64> {
    let mut max = 0;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        let digits = name.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && name[digits..].starts_with('-') {
            max = max.max(name[..digits].parse().unwrap_or(0));
        }
    }
    Ok(max)
}

impl Tap {
    /// A tap writing into `dir` (made if missing). Fails with one line
    /// naming the directory when it cannot create files there.
    pub fn create(dir: &Path, limits: Limits) -> anyhow::Result<Tap> {
        let shown = dir.display();
        let fail = |what: &str, e: io::Error| {
            anyhow::anyhow!(
                "--dir {shown}: cannot {what}: {e}; give a directory this user can write (it is made if missing)"
            )
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("make the directory", e))?;
        let probe = dir.join(format!(".stream-tap-probe.{}", std::process::id()));
        File::create(&probe).and_then(|_| std::fs::remove_file(&probe)).map_err(|e| fail("create files there", e))?;
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(INDEX_FILE))
            .map_err(|e| fail(&format!("open {INDEX_FILE} for appending"), e))?;
        let next_id = highest_id(dir).map_err(|e| fail("list the directory", e))? + 1;
        Ok(Tap {
            w: Writer {
                dir: dir.to_owned(),
                limits,
                files: OpenFiles { max: limits.max_open_files, open: HashMap::new(), lru: BTreeMap::new() },
                total: 0,
                report: Report { dir: shown.to_string(), ..Report::default() },
            },
            index,
            flows: HashMap::new(),
            activity: BTreeMap::new(),
            tick: 0,
            next_id,
        })
    }

    /// The id the next record gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Flow entries held now.
    pub fn tracked_flows(&self) -> usize {
        self.flows.len()
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.w.files.open.len()
    }

    fn new_conn(&mut self, now: SystemTime) -> Conn {
        let id = self.next_id;
        self.next_id += 1;
        self.w.report.connections += 1;
        Conn { id, start: now, end: None, tcp_end: None, sides: Default::default() }
    }

    /// Marks `key` active; with `create`, makes its entry (evicting the
    /// flow idle the longest at `max_flows`). False when it has none.
    fn touch(&mut self, key: FlowKey, create: bool, now: SystemTime) -> bool {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.flows.get_mut(&key) {
            self.activity.remove(&e.tick);
            e.tick = tick;
            self.activity.insert(tick, key);
            return true;
        }
        if !create {
            return false;
        }
        while self.flows.len() >= self.w.limits.max_flows.max(1) {
            let Some((_, old)) = self.activity.pop_first() else { break };
            if let Some(e) = self.flows.remove(&old) {
                self.w.report.flows_evicted += 1;
                for c in e.conns {
                    let end = c.tcp_end.unwrap_or("tap_evicted");
                    self.finish(old, c, None, end, None, now);
                }
            }
        }
        let conn = self.new_conn(now);
        self.flows.insert(key, FlowEntry { conns: vec![conn], tick });
        self.activity.insert(tick, key);
        true
    }

    /// Handles one `DATA_RDY` of `side` of `key` (see [`Chunk`]).
    /// `read_back` reads older bytes of the stream from the ring, if
    /// still there.
    pub fn data<'a>(
        &mut self,
        key: FlowKey,
        side: Side,
        chunk: Chunk<'a>,
        read_back: impl FnOnce(Range<u64>) -> Option<(&'a [u8], &'a [u8])>,
        now: SystemTime,
    ) {
        let Chunk { range, bytes: new, stopped } = chunk;
        self.w.report.events += 1;
        self.w.report.data_events += 1;
        if range.start > range.end || (range.end - range.start) as usize != new.0.len() + new.1.len() {
            self.w.report.read_errors += 1;
            return;
        }
        self.touch(key, true, now);
        let tick = self.tick;
        let s = side_index(side);
        let Some(conn) = self.flows.get_mut(&key).and_then(|e| e.conns.last_mut()) else { return };
        let id = conn.id;
        let st = &mut conn.sides[s];
        let next = st.next;
        if range.start > next {
            let missing = next..range.start;
            let len = missing.end - missing.start;
            match read_back(missing.clone()) {
                Some(got) if (got.0.len() + got.1.len()) as u64 == len => {
                    self.w.report.bytes_recovered += len;
                    self.w.write(key, id, s, st, got, tick);
                }
                _ => {
                    st.gaps += 1;
                    st.gap_bytes += len;
                    if st.gap_ranges.len() < GAP_RANGES_KEPT {
                        st.gap_ranges.push([missing.start, len]);
                    }
                    self.w.report.gaps += 1;
                    self.w.report.gap_bytes += len;
                }
            }
        } else if range.end <= next && range.end > range.start {
            self.w.report.rescans += 1;
        }
        let skip = next.saturating_sub(range.start).min(range.end - range.start) as usize;
        let fresh =
            if skip <= new.0.len() { (&new.0[skip..], new.1) } else { (&new.0[..0], &new.1[skip - new.0.len()..]) };
        self.w.write(key, id, s, st, fresh, tick);
        st.next = st.next.max(range.end);
        if stopped != 0 && st.stopped.is_none() {
            st.stopped = Some(stop_name(stopped));
            self.w.report.sides_stopped += 1;
            self.w.files.close((id, s));
        }
    }

    /// Handles one `FLOW/TCP/...` event about `side` of `key`.
    pub fn tcp(&mut self, key: FlowKey, side: Side, kind: TcpKind, now: SystemTime) {
        self.w.report.events += 1;
        self.w.report.tcp_events += 1;
        let create = matches!(kind, TcpKind::Syn | TcpKind::Established | TcpKind::Conflict | TcpKind::ReasmStopped);
        if !self.touch(key, create, now) {
            return;
        }
        let s = side_index(side);
        if kind == TcpKind::Syn {
            self.syn(key, now);
            return;
        }
        let Some(conn) = self.flows.get_mut(&key).and_then(|e| e.conns.last_mut()) else { return };
        let id = conn.id;
        match kind {
            TcpKind::Fin => {
                conn.sides[s].fin = true;
                self.w.files.close((id, s));
            }
            TcpKind::Rst | TcpKind::Closed | TcpKind::Timeout => {
                let name = match kind {
                    TcpKind::Rst => "tcp_reset",
                    TcpKind::Closed => "tcp_closed",
                    _ => "tcp_timeout",
                };
                conn.tcp_end.get_or_insert(name);
                conn.end.get_or_insert(now);
                self.w.files.close((id, 0));
                self.w.files.close((id, 1));
            }
            TcpKind::Conflict => {
                conn.sides[s].conflicts += 1;
                self.w.report.conflicts += 1;
            }
            TcpKind::ReasmStopped => {
                if conn.sides[s].stopped.is_none() {
                    conn.sides[s].stopped = Some("stopped");
                    self.w.report.sides_stopped += 1;
                }
                self.w.files.close((id, s));
            }
            TcpKind::Syn | TcpKind::Established | TcpKind::Other => {}
        }
    }

    /// A SYN: a new record when the flow's current one was used.
    fn syn(&mut self, key: FlowKey, now: SystemTime) {
        let used = self.flows.get(&key).and_then(|e| e.conns.last()).is_some_and(Conn::used);
        if !used {
            return;
        }
        let conn = self.new_conn(now);
        let Some(e) = self.flows.get_mut(&key) else { return };
        if let Some(old) = e.conns.last_mut() {
            old.end.get_or_insert(now);
            self.w.files.close((old.id, 0));
            self.w.files.close((old.id, 1));
        }
        e.conns.push(conn);
        if e.conns.len() > PENDING_PER_FLOW + 1 {
            let oldest = e.conns.remove(0);
            let end = oldest.tcp_end.unwrap_or("unfinished");
            self.finish(key, oldest, None, end, None, now);
        }
    }

    /// Handles `FLOW/END` of `key`: its records are written to the index
    /// with the five-tuple, and forgotten.
    pub fn flow_end(&mut self, key: FlowKey, f: &FlowEnd, now: SystemTime) {
        self.w.report.events += 1;
        self.w.report.flow_end_events += 1;
        let Some(e) = self.flows.remove(&key) else {
            self.w.report.flow_end_untracked += 1;
            return;
        };
        self.activity.remove(&e.tick);
        let tuple = (endpoint(f.client_addr, f.client_port), endpoint(f.server_addr, f.server_port));
        let n = e.conns.len();
        for (i, c) in e.conns.into_iter().enumerate() {
            let last = i + 1 == n;
            let (end, duration) = if last {
                (end_name(f.reason), Some(f.last_seen.saturating_sub(f.first_seen) / 1_000_000))
            } else {
                (c.tcp_end.unwrap_or("tcp_closed"), None)
            };
            self.finish(key, c, Some(tuple.clone()), end, duration, now);
        }
    }

    /// Counts a `DATA_RDY` that could not be read.
    pub fn read_error(&mut self) {
        self.w.report.events += 1;
        self.w.report.data_events += 1;
        self.w.report.read_errors += 1;
    }

    /// Counts a `FLOW/END` without a readable payload.
    pub fn bad_flow_end(&mut self) {
        self.w.report.events += 1;
        self.w.report.flow_end_events += 1;
        self.w.report.read_errors += 1;
    }

    /// Writes every record still held to the index (end `unfinished`
    /// unless the TCP events said how it ended) and forgets them: on exit,
    /// and when the NF registers again (a new runtime numbers flows anew).
    pub fn finish_all(&mut self, now: SystemTime) {
        let mut all: Vec<(FlowKey, Conn)> =
            self.flows.drain().flat_map(|(k, e)| e.conns.into_iter().map(move |c| (k, c))).collect();
        self.activity.clear();
        all.sort_by_key(|(_, c)| c.id);
        for (k, c) in all {
            let end = c.tcp_end.unwrap_or("unfinished");
            self.w.report.unfinished += 1;
            self.finish(k, c, None, end, None, now);
        }
    }

    /// Closes a record's files and writes its index line.
    fn finish(
        &mut self,
        key: FlowKey,
        c: Conn,
        tuple: Option<(String, String)>,
        end: &'static str,
        duration_ms: Option<u64>,
        now: SystemTime,
    ) {
        self.w.files.close((c.id, 0));
        self.w.files.close((c.id, 1));
        let [c2s, s2c] = c.sides.map(|s| SideLine {
            file: s.file,
            bytes: s.written,
            stream_bytes: s.next,
            not_written: s.not_written,
            gap_bytes: s.gap_bytes,
            gaps: s.gaps,
            gap_ranges: s.gap_ranges,
            capped: s.capped,
            stopped: s.stopped,
            conflicts: s.conflicts,
            fin: s.fin,
            write_error: s.write_error,
        });
        let (client, server) = tuple.unzip();
        let line = IndexLine {
            id: c.id,
            worker: key.0,
            flow_id: key.1,
            client,
            server,
            start_time: rfc3339(c.start),
            end_time: rfc3339(c.end.unwrap_or(now)),
            duration_ms,
            end,
            gap: [&c2s, &s2c].iter().any(|s| s.gaps > 0 || s.stopped.is_some()),
            truncated: c2s.capped.is_some() || s2c.capped.is_some(),
            c2s,
            s2c,
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        match self.index.write_all(text.as_bytes()) {
            Ok(()) => self.w.report.index_lines += 1,
            Err(e) => {
                self.w.report.index_errors += 1;
                let path = self.w.dir.join(INDEX_FILE);
                self.w.error(format!("cannot write to {}: {e}", path.display()));
            }
        }
    }

    /// The counters so far.
    pub fn report(&self) -> &Report {
        &self.w.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    static N: AtomicU32 = AtomicU32::new(0);

    /// A fresh directory for one test.
    pub fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "stream-tap-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const BIG: Limits = Limits { max_bytes: 1 << 30, max_total: 1 << 40, max_flows: 64, max_open_files: 64 };

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_714_564_800_123) // 2024-05-01T12:00:00.123Z
    }

    fn none<'a>(_: Range<u64>) -> Option<(&'a [u8], &'a [u8])> {
        None
    }

    /// One `DATA_RDY` with nothing to read back.
    fn put(t: &mut Tap, key: FlowKey, side: Side, range: Range<u64>, bytes: (&[u8], &[u8]), stopped: u32) {
        t.data(key, side, Chunk { range, bytes, stopped }, none, t0());
    }

    fn index(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join(INDEX_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn mapped(a: [u8; 4]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&a);
        m
    }

    fn end_of(reason: u8) -> FlowEnd {
        FlowEnd {
            client_addr: mapped([10, 10, 0, 1]),
            server_addr: mapped([10, 10, 0, 11]),
            client_port: 40000,
            server_port: 80,
            proto: 6,
            reason,
            first_seen: 1_000_000_000,
            last_seen: 1_250_000_000,
            ..FlowEnd::default()
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(t0()), "2024-05-01T12:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn a_connection_becomes_two_files_and_an_index_line() {
        let dir = temp_dir("basic");
        let mut t = Tap::create(&dir, BIG).unwrap();
        let k = (0, 7);
        t.tcp(k, Side::Client, TcpKind::Syn, t0());
        t.tcp(k, Side::Server, TcpKind::Established, t0());
        put(&mut t, k, Side::Client, 0..5, (b"GET /", b""), 0);
        put(&mut t, k, Side::Client, 5..15, (b" HTTP", b"/1.1\n"), 0);
        put(&mut t, k, Side::Server, 0..6, (b"200 ok", b""), 0);
        // Re-announced bytes are written once.
        put(&mut t, k, Side::Server, 0..6, (b"200 ok", b""), 0);
        put(&mut t, k, Side::Server, 3..9, (b" ok\nb", b"o"), 0);
        t.tcp(k, Side::Client, TcpKind::Fin, t0());
        t.tcp(k, Side::Server, TcpKind::Fin, t0());
        t.tcp(k, Side::Client, TcpKind::Closed, t0() + Duration::from_millis(40));
        assert_eq!(t.open_files(), 0, "closed with the connection");
        t.flow_end(k, &end_of(FLOW_END_TCP_CLOSED), t0() + Duration::from_secs(2));
        assert_eq!(t.tracked_flows(), 0);
        assert_eq!(std::fs::read(dir.join("000001-w0-f7.c2s")).unwrap(), b"GET / HTTP/1.1\n");
        assert_eq!(std::fs::read(dir.join("000001-w0-f7.s2c")).unwrap(), b"200 ok\nbo");
        let lines = index(&dir);
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["id"], 1);
        assert_eq!((l["client"].as_str(), l["server"].as_str()), (Some("10.10.0.1:40000"), Some("10.10.0.11:80")));
        assert_eq!(l["start_time"], "2024-05-01T12:00:00.123Z");
        assert_eq!(l["end_time"], "2024-05-01T12:00:00.163Z");
        assert_eq!((l["duration_ms"].as_u64(), l["end"].as_str()), (Some(250), Some("tcp_closed")));
        assert_eq!((l["gap"].as_bool(), l["truncated"].as_bool()), (Some(false), Some(false)));
        assert_eq!(l["c2s"]["file"], "000001-w0-f7.c2s");
        assert_eq!((l["c2s"]["bytes"].as_u64(), l["s2c"]["bytes"].as_u64()), (Some(15), Some(9)));
        assert_eq!(l["s2c"]["stream_bytes"], 9, "the offset reached");
        let r = t.report();
        assert_eq!((r.connections, r.index_lines, r.bytes_written, r.rescans), (1, 1, 24, 1));
        assert_eq!(r.events, r.data_events + r.tcp_events + r.flow_end_events);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn caps_per_side_and_in_total_are_counted() {
        let dir = temp_dir("caps");
        let mut t = Tap::create(&dir, Limits { max_bytes: 10, max_total: 16, ..BIG }).unwrap();
        put(&mut t, (0, 1), Side::Server, 0..8, (b"01234567", b""), 0);
        put(&mut t, (0, 1), Side::Server, 8..14, (b"89", b"abcd"), 0);
        assert_eq!(t.open_files(), 0, "a capped side's file is closed");
        put(&mut t, (0, 1), Side::Server, 14..20, (b"efghij", b""), 0);
        // 10 written so far: the total leaves 6 for everyone else.
        put(&mut t, (0, 2), Side::Client, 0..8, (b"ABCDEFGH", b""), 0);
        t.finish_all(t0());
        assert_eq!(std::fs::read(dir.join("000001-w0-f1.s2c")).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(dir.join("000002-w0-f2.c2s")).unwrap(), b"ABCDEF");
        let lines = index(&dir);
        let (a, b) = (&lines[0]["s2c"], &lines[1]["c2s"]);
        assert_eq!(
            (a["bytes"].as_u64(), a["not_written"].as_u64(), a["stream_bytes"].as_u64()),
            (Some(10), Some(10), Some(20))
        );
        assert_eq!((a["capped"].as_str(), b["capped"].as_str()), (Some("max_bytes"), Some("max_total")));
        assert_eq!((b["bytes"].as_u64(), b["not_written"].as_u64()), (Some(6), Some(2)));
        assert!(lines.iter().all(|l| l["truncated"] == true && l["gap"] == false && l["end"] == "unfinished"));
        let r = t.report();
        assert_eq!((r.bytes_written, r.bytes_over_max_bytes, r.bytes_over_max_total, r.sides_capped), (16, 10, 2, 2));
        assert_eq!((r.unfinished, r.index_lines), (2, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missed_bytes_are_read_back_or_become_a_gap() {
        let dir = temp_dir("gaps");
        let mut t = Tap::create(&dir, BIG).unwrap();
        let k = (1, 3);
        put(&mut t, k, Side::Client, 0..4, (b"abcd", b""), 0);
        // 4..6 was announced to us in an event we missed; the ring still has it.
        let ring = |r: Range<u64>| (r == (4..6)).then_some((&b"e"[..], &b"f"[..]));
        t.data(k, Side::Client, Chunk { range: 6..8, bytes: (b"gh", b""), stopped: 0 }, ring, t0());
        // 8..12 is gone from the ring: a gap, and the stream goes on after it.
        put(&mut t, k, Side::Client, 12..14, (b"mn", b""), 0);
        // The monitor stops the side (a hole that never filled) with its last bytes.
        put(&mut t, k, Side::Client, 14..15, (b"o", b""), 3);
        t.tcp(k, Side::Client, TcpKind::ReasmStopped, t0());
        t.flow_end(k, &end_of(FLOW_END_TCP_RESET), t0());
        assert_eq!(std::fs::read(dir.join("000001-w1-f3.c2s")).unwrap(), b"abcdefghmno");
        let l = &index(&dir)[0];
        assert_eq!(
            (l["gap"].as_bool(), l["end"].as_str(), l["worker"].as_u64()),
            (Some(true), Some("tcp_reset"), Some(1))
        );
        let c = &l["c2s"];
        assert_eq!(
            (c["bytes"].as_u64(), c["gap_bytes"].as_u64(), c["stream_bytes"].as_u64()),
            (Some(11), Some(4), Some(15))
        );
        assert_eq!(c["gap_ranges"], serde_json::json!([[8, 4]]));
        assert_eq!(c["stopped"], "gap");
        assert_eq!(l["s2c"]["file"], serde_json::Value::Null, "the server sent nothing: no file");
        let r = t.report();
        assert_eq!((r.gaps, r.gap_bytes, r.bytes_recovered, r.sides_stopped), (1, 4, 2, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_picked_up_mid_stream_starts_with_a_gap() {
        let dir = temp_dir("mid");
        let mut t = Tap::create(&dir, BIG).unwrap();
        put(&mut t, (0, 9), Side::Server, 1000..1003, (b"xyz", b""), 0);
        t.finish_all(t0());
        let l = &index(&dir)[0];
        assert_eq!(l["s2c"]["gap_ranges"], serde_json::json!([[0, 1000]]));
        assert_eq!((l["s2c"]["bytes"].as_u64(), l["gap"].as_bool()), (Some(3), Some(true)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn port_reuse_makes_a_new_record_and_both_get_the_five_tuple() {
        let dir = temp_dir("reuse");
        let mut t = Tap::create(&dir, BIG).unwrap();
        let k = (0, 5);
        t.tcp(k, Side::Client, TcpKind::Syn, t0());
        t.tcp(k, Side::Client, TcpKind::Syn, t0()); // a retransmitted SYN: same connection
        put(&mut t, k, Side::Client, 0..3, (b"one", b""), 0);
        t.tcp(k, Side::Client, TcpKind::Closed, t0());
        t.tcp(k, Side::Client, TcpKind::Syn, t0()); // the client reuses its port
        put(&mut t, k, Side::Client, 0..3, (b"two", b""), 0);
        t.tcp(k, Side::Server, TcpKind::Conflict, t0());
        t.flow_end(k, &end_of(FLOW_END_TCP_CLOSED), t0());
        assert_eq!(std::fs::read(dir.join("000001-w0-f5.c2s")).unwrap(), b"one");
        assert_eq!(std::fs::read(dir.join("000002-w0-f5.c2s")).unwrap(), b"two");
        let lines = index(&dir);
        assert_eq!(lines.len(), 2);
        for l in &lines {
            assert_eq!((l["client"].as_str(), l["end"].as_str()), (Some("10.10.0.1:40000"), Some("tcp_closed")));
        }
        assert_eq!((lines[0]["duration_ms"].as_u64(), lines[1]["duration_ms"].as_u64()), (None, Some(250)));
        assert_eq!(lines[1]["s2c"]["conflicts"], 1);
        assert_eq!(t.report().connections, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_files_are_bounded_and_reopened_to_append() {
        let dir = temp_dir("lru");
        let mut t = Tap::create(&dir, Limits { max_open_files: 2, ..BIG }).unwrap();
        for round in 0..3u64 {
            for flow in 1..=3u64 {
                let b = [b'a' + round as u8];
                put(&mut t, (0, flow), Side::Client, round..round + 1, (&b, b""), 0);
                assert!(t.open_files() <= 2);
            }
        }
        t.finish_all(t0());
        for flow in 1..=3u64 {
            assert_eq!(std::fs::read(dir.join(format!("{flow:06}-w0-f{flow}.c2s"))).unwrap(), b"abc");
        }
        let r = t.report();
        assert_eq!((r.files_created, r.files_closed_lru), (3, r.files_reopened + 1));
        assert!(r.files_reopened >= 6, "{r:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flows_are_bounded_the_idlest_evicted() {
        let dir = temp_dir("evict");
        let mut t = Tap::create(&dir, Limits { max_flows: 2, ..BIG }).unwrap();
        t.tcp((0, 1), Side::Client, TcpKind::Syn, t0());
        t.tcp((0, 2), Side::Client, TcpKind::Syn, t0());
        put(&mut t, (0, 1), Side::Client, 0..1, (b"x", b""), 0); // flow 1 active again
        t.tcp((0, 3), Side::Client, TcpKind::Syn, t0()); // evicts flow 2
        assert_eq!(t.tracked_flows(), 2);
        let lines = index(&dir);
        assert_eq!(
            (lines.len(), lines[0]["flow_id"].as_u64(), lines[0]["end"].as_str()),
            (1, Some(2), Some("tap_evicted"))
        );
        // Events of flows the tap does not follow create nothing but FLOW/TCP/SYN, ESTABLISHED and data.
        t.tcp((0, 9), Side::Client, TcpKind::Fin, t0());
        t.flow_end((0, 9), &end_of(FLOW_END_IDLE), t0());
        assert_eq!(t.tracked_flows(), 2);
        let r = t.report();
        assert_eq!((r.flows_evicted, r.flow_end_untracked), (1, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_one_line_naming_it() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a-file");
        std::fs::write(&file, "x").unwrap();
        let e = format!("{:#}", Tap::create(&file.join("sub"), BIG).unwrap_err());
        assert!(e.starts_with(&format!("--dir {}/sub: cannot make the directory:", file.display())), "{e}");
        assert!(e.contains("give a directory this user can write") && !e.contains('\n'), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn numbering_goes_on_after_what_the_directory_holds() {
        let dir = temp_dir("again");
        let mut t = Tap::create(&dir, BIG).unwrap();
        put(&mut t, (0, 1), Side::Client, 0..1, (b"x", b""), 0);
        put(&mut t, (0, 2), Side::Client, 0..1, (b"y", b""), 0);
        t.finish_all(t0());
        drop(t);
        std::fs::write(dir.join("notes-7.txt"), "not a record").unwrap();
        let mut t = Tap::create(&dir, BIG).unwrap();
        assert_eq!(t.next_id(), 3);
        put(&mut t, (0, 1), Side::Client, 0..1, (b"z", b""), 0);
        t.finish_all(t0());
        let ids: Vec<_> = index(&dir).iter().map(|l| l["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3], "the index is appended to");
        assert_eq!(std::fs::read(dir.join("000003-w0-f1.c2s")).unwrap(), b"z");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
