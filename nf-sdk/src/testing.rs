//! [`FakeRuntime`]: the runtime's side of an NF session, without DPDK, for
//! testing NFs (yours and ours).
//!
//! It creates a real arena in a fresh temporary directory, listens on a Unix
//! socket there, answers one `Register` (validated by the controller's real
//! [`Registry`], so it refuses what the runtime would) with a session for one
//! worker (arena channel 0), and then lets the test publish events and
//! collect verdicts:
//!
//! ```no_run
//! use nf_sdk::{testing::FakeRuntime, Nf, Verdict};
//! use ustack::event::PKT_TCP;
//!
//! let mut rt = FakeRuntime::start().unwrap();
//! let socket = rt.socket().to_owned();
//! let nf = std::thread::spawn(move || {
//!     let mut nf = Nf::builder("t").socket(socket).subscribe("PKT", |_| Verdict::Drop).connect()?;
//!     nf.run()
//! });
//! rt.publish(PKT_TCP, 1, b"bytes").unwrap();
//! let verdicts = rt.wait_verdicts(1, std::time::Duration::from_secs(5));
//! rt.close_control(); // the NF's run() now fails with RuntimeGone
//! # drop((nf, verdicts));
//! ```
//!
//! Packets are written into the arena's data region, where the real runtime
//! keeps its mbufs (see [`FakeRuntime::write_packet`]). The NF gets its part
//! of the arena as from the runtime: descriptors with the registration
//! answer, the packet region read-only unless its manifest says it modifies
//! packets, the slot pool read-only, its channel read-write.
//!
//! The fake sends events exactly as the runtime does: a packet event is a
//! descriptor naming the packet bytes; an event with a header or payload
//! of its own goes in a slot the fake allocates, keeps while the NF holds
//! the event, and releases in [`collect_verdicts`](FakeRuntime::collect_verdicts).
//! Each event gets an [`EventId`] (the cookie the NF echoes).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use controller::api::{NfRings, NfSession, Request, Response};
use controller::registry::{NfManifest, Registry};
use ubox_shm::event::{Desc, EventHeader, ANSWER_PUBLISH, ANSWER_VERDICT, DESC_SLOT, EVENT_HEADER_LEN, SIDE_CLIENT};
use ubox_shm::{Arena, ArenaConfig, Grant, SlotIdx};
use ustack::event::EventTypeId;

/// The arena channel the fake uses (worker 0).
pub const CHANNEL: u32 = 0;
/// Bytes of packet space (the arena's data region).
pub const DATA_BYTES: u64 = 4 << 20;
/// Alignment of packets in the data region.
const PKT_ALIGN: u64 = 64;

/// What the fake could not do.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("fake runtime: {0}")]
    Io(#[from] io::Error),
    #[error("fake runtime arena: {0}")]
    Arena(#[from] ubox_shm::Error),
    #[error("fake runtime: no free event slot; collect verdicts first")]
    NoSlots,
    #[error("fake runtime: the NF's descriptor ring is full; let the NF run or collect verdicts first")]
    RingFull,
    #[error("fake runtime: {len}-byte packet does not fit in the data region next to the outstanding ones; collect verdicts first")]
    DataFull { len: usize },
}

/// The NF session as the fake's listener thread sees it.
#[derive(Default)]
struct Shared {
    manifest: Option<NfManifest>,
    control: Option<UnixStream>,
}

/// Which event an answer is for: the cookie the fake gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u32);

/// What an uncollected event holds: packet space (offset relative to the
/// data region, length) and its slot, if it has one.
#[derive(Clone, Copy, Debug)]
struct Held {
    space: Option<(u64, u64)>,
    slot: Option<SlotIdx>,
}

/// A runtime stand-in for one NF on one worker; see the [module docs](self).
pub struct FakeRuntime {
    dir: PathBuf,
    socket: PathBuf,
    arena: Arena,
    shared: Arc<Mutex<Shared>>,
    quit: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
    /// Next packet offset, relative to the data region.
    next_data: u64,
    /// What events not collected yet hold, by cookie.
    outstanding: HashMap<u32, Held>,
    seq: u32,
    /// Events the NF published, collected with the verdicts.
    published: Vec<(EventHeader, Vec<u8>)>,
    /// The NF's next publish record.
    pub_next: u32,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRuntime").field("socket", &self.socket).field("arena", &self.arena).finish_non_exhaustive()
    }
}

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

impl FakeRuntime {
    /// A fake that registers the first NF that connects (if the controller's
    /// registry accepts its manifest).
    pub fn start() -> Result<FakeRuntime, FakeError> {
        Self::start_inner(None, None)
    }

    /// A fake (as [`start`](Self::start)) whose files, its control socket
    /// `control.sock` and its arena, are in `dir`, made if missing and
    /// removed when it drops. A runtime restarting under an NF: drop one
    /// fake, then start another in its [`dir`](Self::dir).
    pub fn start_in(dir: &Path) -> Result<FakeRuntime, FakeError> {
        Self::start_inner(None, Some(dir.to_owned()))
    }

    /// The directory of its socket and arena.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fake that answers the first `Register` with
    /// `Response::Error { message }`.
    pub fn start_refusing(message: &str) -> Result<FakeRuntime, FakeError> {
        Self::start_inner(Some(message.to_owned()), None)
    }

    fn start_inner(refuse: Option<String>, dir: Option<PathBuf>) -> Result<FakeRuntime, FakeError> {
        let dir = dir.unwrap_or_else(|| {
            let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
            std::env::temp_dir().join(format!("ubox-fake-{}-{n}", std::process::id()))
        });
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let arena_path = dir.join("fake.arena");
        let config = ArenaConfig {
            instance: "fake".into(),
            slots: 4096,
            slot_size: 256,
            channels: 1,
            channel_capacity: 2048,
            data_bytes: DATA_BYTES,
        };
        let arena = Arena::create(&arena_path, &config)?;
        // What the NF gets, as the runtime would grant it: packets read-only,
        // or read-write for an NF that modifies them (the manifest decides).
        let grants = (arena.grant(&[CHANNEL], false)?, arena.grant(&[CHANNEL], true)?);
        let socket = dir.join("control.sock");
        let listener = UnixListener::bind(&socket)?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let quit = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, quit) = (Arc::clone(&shared), Arc::clone(&quit));
            std::thread::spawn(move || serve_one(listener, arena_path, grants, refuse, shared, quit))
        };
        Ok(FakeRuntime {
            dir,
            socket,
            arena,
            shared,
            quit,
            listener: Some(thread),
            next_data: 0,
            outstanding: HashMap::new(),
            seq: 0,
            published: Vec::new(),
            pub_next: 0,
        })
    }

    /// The control socket to point the NF at (`.socket(..)` or `UBOX_SOCKET`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The arena (as the runtime maps it).
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// The manifest of the registered NF, once one registered.
    pub fn manifest(&self) -> Option<NfManifest> {
        self.lock().manifest.clone()
    }

    /// Waits until an NF registered (or was refused); false on timeout.
    pub fn wait_registered(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.lock().manifest.is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Publishes a client-side event of type `type_id` on flow `flow_id`
    /// carrying a copy of `packet` (no packet when it is empty), as the
    /// runtime publishes `PKT` events: one descriptor, no slot.
    pub fn publish(&mut self, type_id: EventTypeId, flow_id: u64, packet: &[u8]) -> Result<EventId, FakeError> {
        let space = self.copy_packet(packet)?;
        let d = Desc {
            type_id: type_id.raw(),
            flow_id,
            data: space.map_or(0, |(rel, _)| self.arena.data_region().offset + rel),
            len: packet.len() as u16,
            side: SIDE_CLIENT,
            flags: 0,
            cookie: self.seq,
        };
        self.send(d, Held { space, slot: None })
    }

    /// Arena offset of the packet bytes of event `id`, while it is not
    /// collected yet (to look at what the NF wrote there).
    pub fn packet_offset(&self, id: EventId) -> Option<u64> {
        let (rel, _) = self.outstanding.get(&id.0)?.space?;
        Some(self.arena.data_region().offset + rel)
    }

    /// Publishes `header` with `payload` written after it (a published
    /// event's `#[repr(C)]` payload, e.g. `FlowEnd::to_bytes()`), no packet.
    pub fn publish_payload(&mut self, header: EventHeader, payload: &[u8]) -> Result<EventId, FakeError> {
        self.publish_slot(header, None, payload)
    }

    /// Publishes `header` with both a copy of `packet` (no packet when it is
    /// empty) and `payload` after the header, as a stack publishes an event
    /// that carries bytes and a `#[repr(C)]` payload (e.g. the splicer's
    /// `FLOW_REQ`: the request bytes and a `FlowReq`).
    pub fn publish_packet_payload(
        &mut self,
        header: EventHeader,
        packet: &[u8],
        payload: &[u8],
    ) -> Result<EventId, FakeError> {
        let space = self.copy_packet(packet)?;
        self.publish_slot(header, space, payload)
    }

    /// Puts `header` (packet reference set to `space`, `worker` 0, `seq` the
    /// cookie) and `payload` in a fresh slot and sends a descriptor naming it.
    fn publish_slot(
        &mut self,
        mut header: EventHeader,
        space: Option<(u64, u64)>,
        payload: &[u8],
    ) -> Result<EventId, FakeError> {
        let mut pool = self.arena.slot_pool()?;
        let slot = pool.alloc().ok_or(FakeError::NoSlots)?;
        header.pkt_off = space.map_or(0, |(rel, _)| self.arena.data_region().offset + rel);
        header.pkt_len = space.map_or(0, |(_, len)| len as u32);
        header.worker = 0;
        header.seq = self.seq;
        header.reserved = 0;
        let written = pool.payload_mut(slot).ok().and_then(|p| {
            header.write(p)?;
            let room = p.get_mut(EVENT_HEADER_LEN..)?;
            room.fill(0);
            room.get_mut(..payload.len())?.copy_from_slice(payload);
            Some(())
        });
        if written.is_none() {
            let _ = pool.release(slot);
            return Err(FakeError::NoSlots);
        }
        let d = Desc {
            type_id: header.type_id,
            flow_id: header.flow_id,
            data: u64::from(slot.0),
            side: header.side,
            flags: DESC_SLOT,
            cookie: self.seq,
            ..Desc::default()
        };
        self.send(d, Held { space, slot: Some(slot) }).inspect_err(|_| {
            let _ = self.arena.slot_pool().map(|p| p.release(slot));
        })
    }

    /// Pushes `d` on the channel and remembers what it holds.
    fn send(&mut self, d: Desc, held: Held) -> Result<EventId, FakeError> {
        let ring = self.arena.channel(CHANNEL)?.desc;
        if !ring.producer().push(d) {
            return Err(FakeError::RingFull);
        }
        // Wake the NF if it sleeps on its doorbell, as a worker does.
        ring.bell().wake();
        self.seq = self.seq.wrapping_add(1);
        if let Some((rel, len)) = held.space {
            self.next_data = rel + len;
        }
        self.outstanding.insert(d.cookie, held);
        Ok(EventId(d.cookie))
    }

    /// Copies a non-empty `packet` into free packet space.
    fn copy_packet(&mut self, packet: &[u8]) -> Result<Option<(u64, u64)>, FakeError> {
        if packet.is_empty() {
            return Ok(None);
        }
        let rel = self.place(packet.len())?;
        self.write_packet(self.arena.data_region().offset + rel, packet)?;
        Ok(Some((rel, packet.len() as u64)))
    }

    /// Publishes a `DATA_RDY/CLIENT` or `DATA_RDY/SERVER` event for flow
    /// `flow_id` announcing `stream[new_from..]`, the way the runtime's TCP
    /// monitor does: the whole `stream` so far is laid out in a ring of
    /// `ring_len` bytes in the data region (offset `o` at `o % ring_len`,
    /// so only the last `ring_len` bytes survive), with its "written up
    /// to" cell, and the header's frontier is `stream.len()`.
    pub fn publish_stream(
        &mut self,
        side: ustack::flow::Side,
        flow_id: u64,
        stream: &[u8],
        new_from: u64,
        ring_len: u32,
    ) -> Result<EventId, FakeError> {
        use ubox_shm::event::{StreamRef, SIDE_SERVER};
        let space = self.place(ring_len as usize + 64)?;
        let base = self.arena.data_region().offset + space;
        let cell = base.div_ceil(8) * 8;
        let ring_off = cell + 8;
        let mut ring = vec![0u8; ring_len as usize];
        let keep = stream.len().saturating_sub(ring_len as usize);
        for (i, &b) in stream.iter().enumerate().skip(keep) {
            ring[i % ring_len as usize] = b;
        }
        self.write_packet(ring_off, &ring)?;
        self.arena.store_u64(cell, stream.len() as u64).ok_or(FakeError::DataFull { len: 8 })?;
        let r =
            StreamRef { start: new_from, end: stream.len() as u64, ring_off, written_off: cell, ring_len, stopped: 0 };
        let (ty, s) = match side {
            ustack::flow::Side::Client => (ustack::event::DATA_RDY_CLIENT, SIDE_CLIENT),
            ustack::flow::Side::Server => (ustack::event::DATA_RDY_SERVER, SIDE_SERVER),
        };
        let header = EventHeader { type_id: ty.raw(), flow_id, side: s, frontier: r.end, ..EventHeader::default() };
        let id = self.publish_payload(header, &r.to_bytes())?;
        if let Some(h) = self.outstanding.get_mut(&id.0) {
            h.space = Some((space, ring_len as u64 + 64));
        }
        self.next_data = space + ring_len as u64 + 64;
        Ok(id)
    }

    /// Publishes `header` as given in a slot (the way the runtime sends
    /// events with a snapshot or frontier), except for the packet reference
    /// (set to the copy of `packet`), `worker` (0) and `seq` (the cookie).
    pub fn publish_header(&mut self, header: EventHeader, packet: &[u8]) -> Result<EventId, FakeError> {
        let space = self.copy_packet(packet)?;
        self.publish_slot(header, space, &[])
    }

    /// Where a packet of `len` bytes goes (relative to the data region): a
    /// bump allocator that wraps, refusing space an uncollected event
    /// still names.
    fn place(&self, len: usize) -> Result<u64, FakeError> {
        let len64 = len as u64;
        let cap = self.arena.data_region().len;
        let mut at = self.next_data.div_ceil(PKT_ALIGN) * PKT_ALIGN;
        if at + len64 > cap {
            at = 0;
        }
        let overlaps =
            |a: u64| self.outstanding.values().filter_map(|h| h.space).any(|(o, l)| a < o + l && o < a + len64);
        if len64 > cap || overlaps(at) {
            return Err(FakeError::DataFull { len });
        }
        Ok(at)
    }

    /// Copies `bytes` to arena offset `off` (inside the data region).
    pub fn write_packet(&self, off: u64, bytes: &[u8]) -> io::Result<()> {
        self.arena
            .write_packet(off, bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "packet does not fit in the data region"))
    }

    /// Pops every answer, returning each event's verdict
    /// (`ubox_shm::event::VERDICT_*`) and freeing what it held. Events the
    /// NF published meanwhile are kept for
    /// [`take_published`](Self::take_published). An answer with an unknown
    /// cookie or kind is returned with verdict `u8::MAX`.
    pub fn collect_verdicts(&mut self) -> Vec<(EventId, u8)> {
        let mut out = Vec::new();
        let (Ok(ch), Ok(pool)) = (self.arena.channel(CHANNEL), self.arena.slot_pool()) else {
            return out;
        };
        let mut answers = ch.answer.consumer();
        let mut publications = ch.publish.reader_at(self.pub_next);
        let mut record = vec![0u8; ch.publish.record_len()];
        while let Some(a) = answers.pop() {
            match a.kind() {
                ANSWER_PUBLISH => {
                    let b = publications.take(a.cookie(), &mut record).map(|n| &record[..n]);
                    match b.and_then(|b| Some((EventHeader::read(b)?, b))) {
                        Some((h, b)) => self.published.push((h, b.get(EVENT_HEADER_LEN..).unwrap_or(&[]).to_vec())),
                        None => out.push((EventId(a.cookie()), u8::MAX)),
                    }
                }
                ANSWER_VERDICT => match self.outstanding.remove(&a.cookie()) {
                    Some(held) => {
                        if let Some(slot) = held.slot {
                            let _ = pool.release(slot);
                        }
                        out.push((EventId(a.cookie()), a.code()));
                    }
                    None => out.push((EventId(a.cookie()), u8::MAX)),
                },
                _ => out.push((EventId(a.cookie()), u8::MAX)),
            }
        }
        self.pub_next = publications.next();
        out
    }

    /// [`collect_verdicts`](Self::collect_verdicts) until `n` arrived or
    /// `timeout` passed.
    pub fn wait_verdicts(&mut self, n: usize, timeout: Duration) -> Vec<(EventId, u8)> {
        let until = Instant::now() + timeout;
        let mut out = self.collect_verdicts();
        while out.len() < n && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
            out.extend(self.collect_verdicts());
        }
        out
    }

    /// Events the NF published (header and payload bytes, the whole room
    /// after the header), in order, since the last call.
    pub fn take_published(&mut self) -> Vec<(EventHeader, Vec<u8>)> {
        std::mem::take(&mut self.published)
    }

    /// Free event slots (all of them once every verdict is collected).
    pub fn free_slots(&self) -> u32 {
        self.arena.slot_pool().map_or(0, |p| p.free_count())
    }

    /// Closes the NF's control connection, as a runtime exit would.
    pub fn close_control(&self) {
        if let Some(s) = self.lock().control.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// True once the NF closed its control connection (it dropped its `Nf`
    /// or exited). False while it is open or before one registered.
    pub fn nf_disconnected(&self) -> bool {
        let shared = self.lock();
        let Some(s) = shared.control.as_ref() else {
            return false;
        };
        let mut buf = [0u8; 64];
        matches!((&*s).read(&mut buf), Ok(0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Release);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        self.close_control();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The listener thread: accept one NF, answer its `Register`, keep the
/// connection in `shared`.
fn serve_one(
    listener: UnixListener,
    arena: PathBuf,
    grants: (Grant, Grant),
    refuse: Option<String>,
    shared: Arc<Mutex<Shared>>,
    quit: Arc<AtomicBool>,
) {
    let stream = loop {
        if quit.load(Ordering::Acquire) {
            return;
        }
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return,
        }
    };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let (manifest, response) = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Register { manifest, .. }) => {
            let response = match refuse {
                Some(message) => Response::Error { message },
                None => answer(&manifest, arena),
            };
            (Some(manifest), response)
        }
        Ok(other) => (None, Response::Error { message: format!("fake runtime only answers register, not {other:?}") }),
        Err(e) => (None, Response::Error { message: format!("bad request: {e}") }),
    };
    let mut out = serde_json::to_string(&response).unwrap_or_default();
    out.push('\n');
    // A registered NF gets its part of the arena with the answer's first bytes.
    let files = match (&response, &manifest) {
        (Response::Registered(_), Some(m)) => if m.modifies_packets { grants.1 } else { grants.0 }.into_files(),
        _ => Vec::new(),
    };
    // The manifest is known before the NF has its answer: a test that
    // looks at it right after connect() returns finds it.
    shared.lock().unwrap_or_else(|e| e.into_inner()).manifest = manifest;
    let sent = if files.is_empty() { Ok(0) } else { ubox_shm::pass::send_with_files(&stream, out.as_bytes(), &files) };
    let _ = sent.and_then(|n| (&stream).write_all(&out.as_bytes()[n..]));
    let _ = stream.set_nonblocking(true);
    shared.lock().unwrap_or_else(|e| e.into_inner()).control = Some(stream);
}

/// The session the real controller's registry would give `manifest`.
fn answer(manifest: &NfManifest, arena: PathBuf) -> Response {
    let mut registry = Registry::new();
    let id = match registry.register(manifest.clone()) {
        Ok(id) => id,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    let Some(entry) = registry.get(&manifest.name) else {
        return Response::Error { message: "registered NF vanished".into() };
    };
    Response::Registered(NfSession {
        cpus: Vec::new(),
        wakeup: controller::api::NfWakeup::Futex,
        nf_id: id.0,
        name: manifest.name.clone(),
        arena,
        rings: vec![NfRings { worker: 0, channel: CHANNEL }],
        subscriptions: entry.subscriptions.iter().map(|s| s.event.raw()).collect(),
        publications: entry.publications.iter().map(|p| p.raw()).collect(),
    })
}
