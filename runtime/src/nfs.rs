//! NF sessions: registration over the control socket, liveness, and the
//! table the workers read to know which NFs are alive.
//!
//! Owns the controller's [`Registry`] (manifests, type ids) and one slot per
//! possible NF (`runtime.max_nfs`). A slot gives its NF one arena channel
//! (descriptor ring and answer ring) per worker. An NF is alive while its registration connection is open;
//! when it closes (exit, crash, `kill -9`) the slot turns dead, the workers
//! stop sending to it and apply the chain's policy, and the same name may
//! register again into the same slot. Runs on the control thread only; the
//! workers see [`NfTable`] (atomics, no locks).

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use controller::api::{NfInfo, NfRings, NfSession, NfStats, Response};
use controller::registry::{FlowFilter, NfManifest, Registry};
use ustack::event::EventTypeId;
use ustack::flow::FlowKey;

/// Slot states in [`NfTable`].
pub const ABSENT: u8 = 0;
pub const LIVE: u8 = 1;
pub const DEAD: u8 = 2;

/// Subscriptions per NF that workers check (an NF's further ones are
/// refused at registration).
pub const MAX_SUBS: usize = 8;

/// Per-NF drop and event counters, by reason (indices into
/// [`NfSlot::counts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum NfCount {
    /// An event for it was not delivered: its ring was full.
    RingFull,
    /// An event for it was not delivered: no free event slot.
    NoSlot,
    /// Packets it answered with Drop.
    VerdictDrop,
    /// Packets it answered with Modified (checksums refreshed).
    Modified,
    /// Packets dropped because it was absent or dead in a fail-closed stage.
    FailClosed,
    /// Packets that skipped it because it was absent or dead (fail-open).
    Skipped,
    /// Events it held when it died, reclaimed by the runtime.
    Reclaimed,
    /// Events it published that were accepted.
    Published,
    /// Events it published that were refused (type it did not declare,
    /// unreadable header, slot not its to give).
    BadPublish,
    /// Modified answers from an NF whose manifest does not say it modifies
    /// packets (treated as Pass).
    BadVerdict,
    /// Times a worker found its ring indices impossible (it is then
    /// declared dead).
    CorruptRing,
    /// Answers that matched nothing it owed: an unknown or stale cookie, a
    /// packet it was not asked about, an unknown answer kind (its answer
    /// ring is its own memory: whatever is there is checked).
    StrayAnswer,
}

impl NfCount {
    pub const ALL: [NfCount; 12] = [
        NfCount::RingFull,
        NfCount::NoSlot,
        NfCount::VerdictDrop,
        NfCount::Modified,
        NfCount::FailClosed,
        NfCount::Skipped,
        NfCount::Reclaimed,
        NfCount::Published,
        NfCount::BadPublish,
        NfCount::BadVerdict,
        NfCount::StrayAnswer,
        NfCount::CorruptRing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NfCount::RingFull => "ring_full",
            NfCount::NoSlot => "no_event_slot",
            NfCount::VerdictDrop => "verdict_drop",
            NfCount::Modified => "modified",
            NfCount::FailClosed => "fail_closed",
            NfCount::Skipped => "skipped_absent",
            NfCount::Reclaimed => "reclaimed",
            NfCount::Published => "published",
            NfCount::BadPublish => "bad_publish",
            NfCount::BadVerdict => "bad_verdict",
            NfCount::StrayAnswer => "stray_answer",
            NfCount::CorruptRing => "corrupt_ring",
        }
    }
}

/// An NF's subscriptions with their flow filters, as workers check them
/// when the NF has any filter.
pub type SubFilters = Arc<Vec<(EventTypeId, Option<FlowFilter>)>>;

/// What workers may read about one NF slot.
#[derive(Default)]
pub struct NfSlot {
    pub state: AtomicU8,
    pub nf_id: AtomicU32,
    /// Bumped at every registration into this slot: events published to an
    /// earlier generation are reclaimed, never answered by a newcomer.
    pub gen: AtomicU32,
    /// Subscribed type ids (`nsubs` of them), set before `state` turns LIVE.
    pub subs: [AtomicU64; MAX_SUBS],
    pub nsubs: AtomicU8,
    /// Per worker: the generation whose events that worker has reclaimed
    /// after the NF died. A dead slot is reusable once every worker caught up.
    pub reclaimed: Vec<AtomicU32>,
    /// Events published to this NF, summed over workers (each worker adds
    /// its own; relaxed, for stats).
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
    /// Counters by [`NfCount`], summed over workers.
    pub counts: [AtomicU64; NfCount::ALL.len()],
    /// Published type ids (`npubs` of them): what the NF may publish.
    pub pubs: [AtomicU64; MAX_SUBS],
    pub npubs: AtomicU8,
    /// The manifest says it modifies packets.
    pub modifies: AtomicBool,
    /// A worker found one of its rings' indices impossible (the NF, or
    /// something in its process, wrote its channel memory at random): the
    /// worker stops using it, and the control thread declares it dead.
    pub faulty: AtomicBool,
    /// Some subscription has a flow filter (then workers consult `filters`).
    pub filtered: AtomicBool,
    /// Subscriptions with filters, replaced at registration (workers cache
    /// it per generation; locked only when the generation changes).
    pub filters: Mutex<SubFilters>,
}

impl NfSlot {
    #[inline]
    pub fn count(&self, c: NfCount, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the NF may publish `ty`.
    pub fn may_publish(&self, ty: EventTypeId) -> bool {
        let n = (self.npubs.load(Ordering::Acquire) as usize).min(MAX_SUBS);
        self.pubs[..n].iter().any(|t| t.load(Ordering::Relaxed) == ty.raw())
    }
}

/// Whether subscriptions `subs` take an event of type `ty` for flow `key`.
pub fn filters_take(subs: &[(EventTypeId, Option<FlowFilter>)], ty: EventTypeId, key: &FlowKey) -> bool {
    subs.iter().any(|(t, f)| ty.is_subtype_of(*t) && f.as_ref().map_or(true, |f| f.matches(key)))
}

/// The NF slots, shared with the workers.
pub struct NfTable {
    pub slots: Vec<NfSlot>,
    pub workers: u32,
    /// Bumped at every NF death, so workers look for reclaim work only then.
    pub deaths: AtomicU32,
    /// Bumped at every registration (subscriptions may have changed).
    pub registrations: AtomicU32,
    /// The splicer's policy NF (`splicer.policy`), and the slot it
    /// registered in (`u32::MAX` until it does; a name keeps its slot).
    pub policy_name: std::sync::OnceLock<String>,
    pub policy_slot: AtomicU32,
}

impl NfTable {
    pub fn new(max_nfs: u32, workers: u32) -> NfTable {
        let slot = || NfSlot { reclaimed: (0..workers).map(|_| AtomicU32::new(0)).collect(), ..Default::default() };
        NfTable {
            slots: (0..max_nfs).map(|_| slot()).collect(),
            workers,
            deaths: AtomicU32::new(0),
            registrations: AtomicU32::new(0),
            policy_name: std::sync::OnceLock::new(),
            policy_slot: AtomicU32::new(u32::MAX),
        }
    }

    /// Whether slot `k` subscribes to `ty` (or a supertype of it).
    #[inline]
    pub fn wants(&self, k: usize, ty: ustack::event::EventTypeId) -> bool {
        let Some(s) = self.slots.get(k) else { return false };
        let n = (s.nsubs.load(Ordering::Acquire) as usize).min(MAX_SUBS);
        s.subs[..n].iter().any(|t| {
            ustack::event::EventTypeId::from_raw(t.load(Ordering::Relaxed)).is_some_and(|sub| ty.is_subtype_of(sub))
        })
    }

    /// Arena channel between slot `k` and worker `w`.
    pub fn channel(&self, k: usize, w: usize) -> u32 {
        (k * self.workers as usize + w) as u32
    }

    pub fn state(&self, k: usize) -> u8 {
        self.slots.get(k).map_or(ABSENT, |s| s.state.load(Ordering::Acquire))
    }
}

struct Session {
    /// Open while the NF runs; EOF means it is gone.
    stream: Option<UnixStream>,
    name: String,
    version: String,
    /// Answers seen at the last check, and when they last moved.
    progress: (u64, std::time::Instant),
    /// The NF process of the last registration (`SO_PEERCRED`).
    peer: Option<crate::control::Peer>,
}

/// Registration and liveness of NF processes (control thread).
pub struct NfManager {
    registry: Registry,
    table: Arc<NfTable>,
    sessions: Vec<Option<Session>>,
    slot_of: HashMap<String, usize>,
    arena: Arc<ubox_shm::Arena>,
    nf_cpus: Vec<u32>,
    wakeup: controller::api::NfWakeup,
}

impl NfManager {
    pub fn new(
        table: Arc<NfTable>,
        arena: Arc<ubox_shm::Arena>,
        nf_cpus: Vec<u32>,
        wakeup: controller::api::NfWakeup,
    ) -> NfManager {
        let n = table.slots.len();
        NfManager {
            registry: Registry::new(),
            table,
            sessions: (0..n).map(|_| None).collect(),
            slot_of: HashMap::new(),
            arena,
            nf_cpus,
            wakeup,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Slot of a registered NF name.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slot_of.get(name).copied()
    }

    /// Handle `Register`: on success the connection is kept as the NF's
    /// liveness signal, and the answer carries the NF's part of the arena:
    /// the arena file and the packet region read-only (the region
    /// read-write if its manifest says it modifies packets) and its own
    /// channels, in new memory.
    pub fn register(&mut self, manifest: NfManifest, stream: &UnixStream) -> crate::control::Reply {
        let name = manifest.name.clone();
        let refuse = |message: String| Response::Error { message }.into();
        if let Some(&k) = self.slot_of.get(&name) {
            // A run killed just now may not have been noticed yet by `poll`:
            // look at its connection before calling the name taken.
            if self.table.state(k) == LIVE && self.session_closed(k) {
                self.declare_dead(k, "is gone (its session closed)");
            }
            if self.table.state(k) == LIVE {
                return refuse(format!(
                    "NF '{name}' is already registered and running; stop it first or pick another name"
                ));
            }
        }
        let slot = match self.slot_of.get(&name) {
            Some(&k) => k,
            None => match self.sessions.iter().position(|s| s.is_none()) {
                Some(k) => k,
                None => {
                    return refuse(format!(
                        "cannot register NF '{name}': all {} NF slots are taken (raise runtime.max_nfs)",
                        self.sessions.len()
                    ))
                }
            },
        };
        if manifest.subscriptions.len() > MAX_SUBS || manifest.publications.len() > MAX_SUBS {
            return refuse(format!(
                "NF '{name}' has {} subscriptions and {} publications; at most {MAX_SUBS} of each",
                manifest.subscriptions.len(),
                manifest.publications.len()
            ));
        }
        if !self.wait_reclaimed(slot) {
            return refuse(format!("NF '{name}' is still being cleaned up after its last run; retry in a moment"));
        }
        // No worker uses the slot's channels now (it is absent, or dead and
        // reclaimed by every worker): give them new memory, so nothing the
        // last NF there left behind, or still writes, reaches this one.
        let channels: Vec<u32> = (0..self.table.workers as usize).map(|w| self.table.channel(slot, w)).collect();
        let grant =
            self.arena.renew_channels(&channels).and_then(|()| self.arena.grant(&channels, manifest.modifies_packets));
        let grant = match grant {
            Ok(g) => g,
            Err(e) => return refuse(format!("cannot give NF '{name}' its part of the arena: {e}")),
        };
        let version = manifest.version.clone();
        let id = match self.registry.register(manifest) {
            Ok(id) => id,
            Err(e) => return refuse(format!("cannot register NF '{name}': {e}")),
        };
        let keep = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => return refuse(format!("cannot keep the session of NF '{name}': {e}")),
        };
        if keep.set_nonblocking(true).is_err() {
            return refuse(format!("cannot keep the session of NF '{name}'"));
        }
        let entry = self.registry.get(&name).expect("just registered");
        let session = NfSession {
            nf_id: id.0,
            name: name.clone(),
            arena: self.arena.path().to_path_buf(),
            rings: (0..self.table.workers as usize)
                .map(|w| NfRings { worker: w as u32, channel: self.table.channel(slot, w) })
                .collect(),
            subscriptions: entry.subscriptions.iter().map(|s| s.event.raw()).collect(),
            publications: entry.publications.iter().map(|p| p.raw()).collect(),
            cpus: self.nf_cpus.clone(),
            wakeup: self.wakeup,
        };
        let s = &self.table.slots[slot];
        for (i, sub) in entry.subscriptions.iter().take(MAX_SUBS).enumerate() {
            s.subs[i].store(sub.event.raw(), Ordering::Relaxed);
        }
        s.nsubs.store(entry.subscriptions.len().min(MAX_SUBS) as u8, Ordering::Relaxed);
        for (i, p) in entry.publications.iter().take(MAX_SUBS).enumerate() {
            s.pubs[i].store(p.raw(), Ordering::Relaxed);
        }
        s.npubs.store(entry.publications.len().min(MAX_SUBS) as u8, Ordering::Relaxed);
        s.modifies.store(entry.manifest.modifies_packets, Ordering::Relaxed);
        let filters: Vec<_> = entry.subscriptions.iter().map(|r| (r.event, r.filter.clone())).collect();
        s.filtered.store(filters.iter().any(|(_, f)| f.is_some()), Ordering::Relaxed);
        *s.filters.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(filters);
        s.nf_id.store(id.0, Ordering::Relaxed);
        s.faulty.store(false, Ordering::Relaxed);
        s.gen.fetch_add(1, Ordering::AcqRel);
        s.state.store(LIVE, Ordering::Release);
        if self.table.policy_name.get() == Some(&name) {
            self.table.policy_slot.store(slot as u32, Ordering::Release);
        }
        self.table.registrations.fetch_add(1, Ordering::AcqRel);
        let answered = s.events_out.load(Ordering::Relaxed);
        let peer = crate::control::peer_of(stream);
        self.sessions[slot] = Some(Session {
            stream: Some(keep),
            name: name.clone(),
            version,
            progress: (answered, std::time::Instant::now()),
            peer,
        });
        self.slot_of.insert(name.clone(), slot);
        let who = peer.map_or_else(String::new, |p| format!(" (pid {}, uid {}, gid {})", p.pid, p.uid, p.gid));
        tracing::info!("NF '{name}' registered as {id} in slot {slot}{who}");
        crate::control::Reply { response: Response::Registered(session), files: grant.into_files() }
    }

    /// Wait (briefly) until every worker reclaimed the events of the slot's
    /// previous, dead generation.
    fn wait_reclaimed(&self, k: usize) -> bool {
        let s = &self.table.slots[k];
        if s.state.load(Ordering::Acquire) != DEAD {
            return true;
        }
        let gen = s.gen.load(Ordering::Acquire);
        for _ in 0..200 {
            if s.reclaimed.iter().all(|r| r.load(Ordering::Acquire) >= gen) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// Reserve a slot for an NF named by a chain before it registers, so the
    /// chain can point at the slot; `None` when every slot is taken.
    pub fn reserve(&mut self, name: &str) -> Option<usize> {
        if let Some(&k) = self.slot_of.get(name) {
            return Some(k);
        }
        let k = self.sessions.iter().position(|s| s.is_none())?;
        self.sessions[k] = Some(Session {
            stream: None,
            name: name.to_string(),
            version: String::new(),
            progress: (0, std::time::Instant::now()),
            peer: None,
        });
        self.slot_of.insert(name.to_string(), k);
        Some(k)
    }

    /// Whether slot `k`'s session connection has closed (the NF exited).
    fn session_closed(&mut self, k: usize) -> bool {
        match self.sessions.get_mut(k).and_then(|s| s.as_mut()).and_then(|s| s.stream.as_mut()) {
            Some(stream) => stream_closed(stream),
            None => false,
        }
    }

    /// Ends slot `k`'s session: the workers reclaim what it held.
    fn declare_dead(&mut self, k: usize, why: &str) {
        let Some(sess) = self.sessions.get_mut(k).and_then(|s| s.as_mut()) else { return };
        // Dropping the stream closes the session: a hung NF that wakes up
        // finds the runtime gone and exits.
        sess.stream = None;
        self.table.slots[k].state.store(DEAD, Ordering::Release);
        self.table.deaths.fetch_add(1, Ordering::AcqRel);
        tracing::warn!("NF '{}' {why}", sess.name);
    }

    /// Notice NFs whose connection closed, or that hold events without
    /// answering any for `timeout` (hung, stopped): both are dead from then
    /// on. Returns the slots that died now.
    pub fn poll(&mut self, timeout: std::time::Duration) -> Vec<usize> {
        let mut died = Vec::new();
        let now = std::time::Instant::now();
        for (k, s) in self.sessions.iter_mut().enumerate() {
            let Some(sess) = s else { continue };
            let Some(stream) = sess.stream.as_mut() else { continue };
            let closed = stream_closed(stream);
            let slot = &self.table.slots[k];
            let answered = slot.events_out.load(Ordering::Relaxed);
            // Events of an earlier run that the workers reclaimed are
            // settled too: without them a restarted NF would look as if it
            // held them forever.
            let settled = answered + slot.counts[NfCount::Reclaimed as usize].load(Ordering::Relaxed);
            let holding = slot.events_in.load(Ordering::Relaxed) > settled;
            if answered != sess.progress.0 || !holding {
                sess.progress = (answered, now);
            }
            let stuck = holding && now.duration_since(sess.progress.1) > timeout;
            let faulty = slot.faulty.load(Ordering::Acquire);
            if closed || stuck || faulty {
                died.push((k, closed, faulty));
            }
        }
        for &(k, closed, faulty) in &died {
            if closed {
                self.declare_dead(k, "is gone (its session closed)");
            } else if faulty {
                self.declare_dead(
                    k,
                    "wrote impossible indices into its rings (its channel memory was overwritten): declaring it dead",
                );
            } else {
                let why =
                    format!("answered nothing for {} ms while holding events: declaring it dead", timeout.as_millis());
                self.declare_dead(k, &why);
            }
        }
        died.into_iter().map(|(k, ..)| k).collect()
    }

    /// Per-NF counters and queue depths for `uboxctl stats`.
    pub fn stats(&self, arena: &ubox_shm::Arena) -> Vec<NfStats> {
        let mut out = Vec::new();
        for (k, s) in self.sessions.iter().enumerate() {
            let Some(sess) = s else { continue };
            let slot = &self.table.slots[k];
            let state = match slot.state.load(Ordering::Acquire) {
                LIVE => "running",
                DEAD => "dead",
                _ => "absent",
            };
            let channels: Vec<_> =
                (0..self.table.workers as usize).filter_map(|w| arena.channel(self.table.channel(k, w)).ok()).collect();
            let queue_depth = channels.iter().map(|c| u64::from(c.desc.len()) + u64::from(c.answer.len())).sum();
            let report =
                channels.iter().map(|c| c.desc.consumer_report()).fold(ubox_shm::ConsumerReport::default(), |a, r| {
                    // The NF writes these (since it registered): any value.
                    ubox_shm::ConsumerReport {
                        bursts: a.bursts.wrapping_add(r.bursts),
                        items: a.items.wrapping_add(r.items),
                        busy_ns: a.busy_ns.wrapping_add(r.busy_ns),
                    }
                });
            let counts = NfCount::ALL
                .iter()
                .map(|&c| (c.name().to_string(), slot.counts[c as usize].load(Ordering::Relaxed)))
                .filter(|&(_, v)| v > 0)
                .collect();
            out.push(NfStats {
                name: sess.name.clone(),
                state: state.into(),
                events_in: slot.events_in.load(Ordering::Relaxed),
                events_out: slot.events_out.load(Ordering::Relaxed),
                queue_depth,
                nf_bursts: report.bursts,
                nf_events: report.items,
                nf_busy_ns: report.busy_ns,
                counts,
            });
        }
        out
    }

    /// `uboxctl nf list`.
    pub fn list(&self) -> Vec<NfInfo> {
        let types = self.registry.types();
        let path = |id: ustack::event::EventTypeId| types.path_of(id).unwrap_or("?").to_string();
        let mut out = Vec::new();
        for (k, s) in self.sessions.iter().enumerate() {
            let Some(sess) = s else { continue };
            let Some(entry) = self.registry.get(&sess.name) else { continue };
            let slot = &self.table.slots[k];
            out.push(NfInfo {
                nf_id: entry.id.0,
                name: sess.name.clone(),
                version: sess.version.clone(),
                state: if slot.state.load(Ordering::Acquire) == LIVE { "running" } else { "dead" }.into(),
                subscriptions: entry.subscriptions.iter().map(|s| path(s.event)).collect(),
                publications: entry.publications.iter().map(|&p| path(p)).collect(),
                events_in: slot.events_in.load(Ordering::Relaxed),
                events_out: slot.events_out.load(Ordering::Relaxed),
                pid: sess.peer.map(|p| p.pid),
                uid: sess.peer.map(|p| p.uid),
            });
        }
        out
    }
}

/// Non-blocking EOF check of a session connection (NFs send nothing after
/// registering, so any byte is ignored).
fn stream_closed(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => false,
        Err(_) => true,
    }
}

impl crate::capture::Names for NfManager {
    fn slot(&self, name: &str) -> Option<usize> {
        self.slot_of.get(name).copied()
    }

    fn name(&self, slot: usize) -> Option<String> {
        self.slot_of.iter().find(|(_, &k)| k == slot).map(|(n, _)| n.clone())
    }

    fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = self.slot_of.keys().cloned().collect();
        v.sort();
        v
    }
}
