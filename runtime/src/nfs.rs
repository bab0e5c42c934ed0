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
    /// The slot of the first instance of its NF (the one chains name):
    /// its own index unless it runs as a further instance.
    pub group: AtomicU32,
    /// It takes no new flows (drained, or replaced by a release).
    pub draining: AtomicBool,
    /// Per worker: flows pinned to it now (each worker writes its own).
    pub pinned: Vec<AtomicU64>,
    /// Flows ever pinned to it (summed over workers).
    pub assigned: AtomicU64,
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
        let slot = |k: u32| NfSlot {
            reclaimed: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            pinned: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            group: AtomicU32::new(k),
            ..Default::default()
        };
        NfTable {
            slots: (0..max_nfs).map(slot).collect(),
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

    /// Flows pinned to slot `k` now, over all workers.
    pub fn pinned(&self, k: usize) -> u64 {
        self.slots.get(k).map_or(0, |s| s.pinned.iter().map(|p| p.load(Ordering::Relaxed)).sum())
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
    /// The slot of its NF's first instance (its own for that one), and its
    /// instance number (1, 2, ...: the lowest no other live one has).
    group: usize,
    instance: u32,
    /// Being drained: when it is told to exit at the latest, and when it
    /// was told.
    drain: Option<(std::time::Instant, Option<std::time::Instant>)>,
}

/// How long an NF told to exit may take before it is declared dead.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Registration and liveness of NF processes (control thread).
pub struct NfManager {
    registry: Registry,
    table: Arc<NfTable>,
    sessions: Vec<Option<Session>>,
    slot_of: HashMap<String, usize>,
    arena: Arc<ubox_shm::Arena>,
    nf_cpus: Vec<u32>,
    wakeup: controller::api::NfWakeup,
    /// Releases armed with `uboxctl nf release`: name → drain timeout (ms).
    releases: HashMap<String, u64>,
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
            releases: HashMap::new(),
        }
    }

    /// The slots of NF `primary`'s instances (it included), live or not.
    fn members(&self, primary: usize) -> Vec<usize> {
        (0..self.sessions.len()).filter(|&k| self.sessions[k].as_ref().is_some_and(|s| s.group == primary)).collect()
    }

    /// How slot `k` is named in logs and stats: `NAME#N` when its NF has
    /// (or had) several instances, else `NAME`.
    fn label(&self, k: usize) -> String {
        let Some(s) = self.sessions.get(k).and_then(|s| s.as_ref()) else { return String::new() };
        if self.members(s.group).len() > 1 {
            format!("{}#{}", s.name, s.instance.max(1))
        } else {
            s.name.clone()
        }
    }

    /// `uboxctl nf release NAME`: the next registration of `name` takes over.
    pub fn arm_release(&mut self, name: &str, timeout_ms: u64) -> Response {
        let running =
            self.slot_of.get(name).is_some_and(|&p| self.members(p).iter().any(|&k| self.table.state(k) == LIVE));
        if !running {
            return Response::Error {
                message: format!("NF '{name}' is not running: start it as usual, there is nothing to release"),
            };
        }
        self.releases.insert(name.to_string(), timeout_ms);
        tracing::info!("release of NF '{name}' armed: its next registration takes over, the running instances drain (at most {timeout_ms} ms)");
        Response::Done {
            message: format!(
                "release of '{name}' armed: start the new build; it takes every new flow and the running instances drain (at most {timeout_ms} ms)"
            ),
        }
    }

    /// `uboxctl nf reload NAME`: SIGHUP to every running instance's process,
    /// each checked first to catch SIGHUP (`SigCgt` in /proc/PID/status),
    /// since the default action of SIGHUP is to terminate. The pid is the
    /// one the kernel gave for the registration's connection, which is still
    /// open (the instance is live), so it is that process.
    pub fn reload(&mut self, name: &str) -> Response {
        let Some(&primary) = self.slot_of.get(name) else {
            return Response::Error { message: format!("no NF named '{name}' (see uboxctl nf list)") };
        };
        let live: Vec<usize> = self.members(primary).into_iter().filter(|&k| self.table.state(k) == LIVE).collect();
        let pids: Vec<(String, u32)> =
            live.iter().filter_map(|&k| Some((self.label(k), self.sessions[k].as_ref()?.peer?.pid))).collect();
        if pids.is_empty() {
            return Response::Error { message: format!("NF '{name}' is not running: nothing to reload") };
        }
        for (label, pid) in &pids {
            if !catches_sighup(*pid) {
                return Response::Error {
                    message: format!(
                        "NF '{label}' (pid {pid}) does not catch SIGHUP, which would kill it: it has no live reload \
                         (restart it, or release a new one: uboxctl nf release {name})"
                    ),
                };
            }
        }
        let mut sent = Vec::new();
        for (label, pid) in &pids {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGHUP) {
                Ok(()) => sent.push(format!("{label} (pid {pid})")),
                Err(e) => return Response::Error { message: format!("SIGHUP to NF '{label}' (pid {pid}): {e}") },
            }
        }
        tracing::info!("NF '{name}': SIGHUP sent to {} to reload its configuration", sent.join(", "));
        Response::Done { message: format!("asked {} to read its configuration again (SIGHUP)", sent.join(", ")) }
    }

    /// `uboxctl nf drain NAME[#N]`: instance `instance` (or every instance)
    /// of `name` takes no new flows and is told to exit once its flows have
    /// ended, or when `timeout_ms` has passed.
    pub fn drain(&mut self, name: &str, instance: Option<u32>, timeout_ms: u64) -> Response {
        let Some(&primary) = self.slot_of.get(name) else {
            return Response::Error { message: format!("no NF named '{name}' (see uboxctl nf list)") };
        };
        let live: Vec<usize> = self.members(primary).into_iter().filter(|&k| self.table.state(k) == LIVE).collect();
        let chosen: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&k| instance.map_or(true, |i| self.sessions[k].as_ref().is_some_and(|s| s.instance.max(1) == i)))
            .collect();
        if chosen.is_empty() {
            let running: Vec<String> = live.iter().map(|&k| self.label(k)).collect();
            let what = instance.map_or(name.to_string(), |i| format!("{name}#{i}"));
            return Response::Error {
                message: format!(
                    "no running instance '{what}' (running: {})",
                    if running.is_empty() { "none".into() } else { running.join(", ") }
                ),
            };
        }
        let mut said = Vec::new();
        for &k in &chosen {
            self.start_drain(k, timeout_ms);
            said.push(format!("{} ({} flows)", self.label(k), self.table.pinned(k)));
        }
        Response::Done {
            message: format!(
                "draining {}: no new flows; each exits when its flows have ended, at most in {timeout_ms} ms",
                said.join(", ")
            ),
        }
    }

    fn start_drain(&mut self, k: usize, timeout_ms: u64) {
        let label = self.label(k);
        let Some(sess) = self.sessions.get_mut(k).and_then(|s| s.as_mut()) else { return };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
        match &mut sess.drain {
            Some((d, _)) => *d = (*d).min(deadline),
            None => sess.drain = Some((deadline, None)),
        }
        self.table.slots[k].draining.store(true, Ordering::Release);
        // The workers pick it up with the registrations.
        self.table.registrations.fetch_add(1, Ordering::AcqRel);
        tracing::info!("NF '{label}' draining: no new flows, {} flows pinned to it", self.table.pinned(k));
    }

    /// Draining instances whose flows have ended (or whose drain timed out)
    /// are told to exit; one that does not within [`EXIT_GRACE`] is
    /// declared dead.
    fn poll_drains(&mut self) {
        let now = std::time::Instant::now();
        for k in 0..self.sessions.len() {
            let Some((deadline, told)) = self.sessions[k].as_ref().and_then(|s| s.stream.as_ref().and(s.drain)) else {
                continue;
            };
            if self.table.state(k) != LIVE {
                continue;
            }
            let flows = self.table.pinned(k);
            match told {
                None if flows == 0 || now >= deadline => {
                    let label = self.label(k);
                    let reason = if flows == 0 {
                        "drained: its flows have ended".to_string()
                    } else {
                        format!("drain timeout: {flows} flows still pinned to it get the chain's policy")
                    };
                    let mut line =
                        serde_json::to_string(&Response::Exit { reason: reason.clone() }).unwrap_or_default();
                    line.push('\n');
                    let sess = self.sessions[k].as_mut().expect("checked");
                    let sent =
                        sess.stream.as_mut().is_some_and(|s| std::io::Write::write_all(s, line.as_bytes()).is_ok());
                    sess.drain = Some((deadline, Some(now)));
                    if sent {
                        tracing::info!("NF '{label}' {reason}; told it to exit");
                    } else {
                        self.declare_dead(k, "could not be told to exit (its session is broken)");
                    }
                }
                Some(at) if now.duration_since(at) > EXIT_GRACE => {
                    self.declare_dead(k, "did not exit within 5 s of being told to: declaring it dead");
                }
                _ => {}
            }
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
    pub fn register(
        &mut self,
        manifest: NfManifest,
        stream: &UnixStream,
        join: controller::api::Join,
    ) -> crate::control::Reply {
        use controller::api::Join;
        let name = manifest.name.clone();
        let refuse = |message: String| Response::Error { message }.into();
        let primary = self.slot_of.get(&name).copied();
        let mut live = Vec::new();
        for k in primary.map(|p| self.members(p)).unwrap_or_default() {
            // A run killed just now may not have been noticed yet by `poll`:
            // look at its connection before calling the name taken.
            if self.table.state(k) == LIVE && self.session_closed(k) {
                self.declare_dead(k, "is gone (its session closed)");
            }
            if self.table.state(k) == LIVE {
                live.push(k);
            }
        }
        let mut join = join;
        if join == Join::Exclusive && !live.is_empty() {
            match self.releases.remove(&name) {
                Some(ms) => join = Join::Takeover { drain_ms: ms },
                None => {
                    return refuse(format!(
                        "NF '{name}' is already registered and running; stop it first, pick another name, \
                         or start it with --add-instance (one more instance) or --takeover (a release)"
                    ))
                }
            }
        }
        let free = self.sessions.iter().position(|s| s.is_none());
        let slot = match (primary, live.is_empty()) {
            // None runs: into the slot of the instance with the most flows
            // pinned to it (they resume on this run, as for a restart),
            // else the first instance's.
            (Some(p), true) => {
                let mut best = p;
                for k in self.members(p) {
                    if self.table.pinned(k) > self.table.pinned(best) {
                        best = k;
                    }
                }
                best
            }
            (None, _) => match free {
                Some(k) => k,
                None => {
                    return refuse(format!(
                        "cannot register NF '{name}': all {} NF slots are taken (raise runtime.max_nfs)",
                        self.sessions.len()
                    ))
                }
            },
            // One more instance: a dead one's slot that no flow is pinned
            // to, else a free one.
            (Some(p), false) => {
                let idle = self
                    .members(p)
                    .into_iter()
                    .find(|&k| self.table.state(k) == crate::nfs::DEAD && self.table.pinned(k) == 0);
                match idle.or(free) {
                    Some(k) => k,
                    None => {
                        return refuse(format!(
                            "cannot add an instance of NF '{name}': all {} NF slots are taken (raise runtime.max_nfs)",
                            self.sessions.len()
                        ))
                    }
                }
            }
        };
        let group = primary.unwrap_or(slot);
        // Its slot's number again (a restart), else the lowest free one.
        let used: Vec<u32> =
            live.iter().filter_map(|&k| self.sessions[k].as_ref().map(|s| s.instance.max(1))).collect();
        let before = self.sessions[slot].as_ref().map_or(0, |s| s.instance);
        let instance =
            if before > 0 && !used.contains(&before) { before } else { (1..).find(|i| !used.contains(i)).unwrap_or(1) };
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
        s.group.store(group as u32, Ordering::Relaxed);
        s.draining.store(false, Ordering::Relaxed);
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
            group,
            instance,
            drain: None,
        });
        self.slot_of.insert(name.clone(), group);
        let who = peer.map_or_else(String::new, |p| format!(" (pid {}, uid {}, gid {})", p.pid, p.uid, p.gid));
        let label = self.label(slot);
        tracing::info!("NF '{label}' registered as {id} in slot {slot}{who}");
        if let Join::Takeover { drain_ms } = join {
            for &k in &live {
                self.start_drain(k, drain_ms);
            }
            tracing::info!("NF '{label}' takes over from {} running instance(s), which drain", live.len());
        }
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
            group: k,
            instance: 0,
            drain: None,
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
        let told = sess.drain.take().is_some_and(|(_, told)| told.is_some());
        self.table.slots[k].state.store(DEAD, Ordering::Release);
        self.table.deaths.fetch_add(1, Ordering::AcqRel);
        let label = self.label(k);
        if told {
            tracing::info!("NF '{label}' exited after its drain");
        } else {
            tracing::warn!("NF '{label}' {why}");
        }
    }

    /// Notice NFs whose connection closed, or that hold events without
    /// answering any for `timeout` (hung, stopped): both are dead from then
    /// on. Returns the slots that died now.
    pub fn poll(&mut self, timeout: std::time::Duration) -> Vec<usize> {
        self.poll_drains();
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
            let scaled = self.members(sess.group).len() > 1;
            out.push(NfStats {
                name: self.label(k),
                instance: if scaled { sess.instance.max(1) } else { 0 },
                draining: slot.draining.load(Ordering::Relaxed),
                flows: self.table.pinned(k),
                flows_assigned: slot.assigned.load(Ordering::Relaxed),
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
                name: self.label(k),
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

    /// As stats name it: `NAME#N` for one of several instances.
    fn name(&self, slot: usize) -> Option<String> {
        let l = self.label(slot);
        if !l.is_empty() {
            return Some(l);
        }
        self.slot_of.iter().find(|(_, &k)| k == slot).map(|(n, _)| n.clone())
    }

    fn all(&self) -> Vec<String> {
        let mut v: Vec<String> = self.slot_of.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Whether process `pid` catches SIGHUP (its `SigCgt` mask in
/// /proc/PID/status has bit 0 set, SIGHUP being signal 1).
fn catches_sighup(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 != 0)
}
