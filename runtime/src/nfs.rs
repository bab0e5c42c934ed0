//! NF sessions: registration over the control socket, liveness, and the
//! table the workers read to know which NFs are alive.
//!
//! Owns the controller's [`Registry`] (manifests, type ids) and one slot per
//! possible NF (`runtime.max_nfs`). A slot gives its NF a pair of arena rings
//! per worker. An NF is alive while its registration connection is open;
//! when it closes (exit, crash, `kill -9`) the slot turns dead, the workers
//! stop sending to it and apply the chain's policy, and the same name may
//! register again into the same slot. Runs on the control thread only; the
//! workers see [`NfTable`] (atomics, no locks).

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use controller::api::{NfInfo, NfRings, NfSession, Response};
use controller::registry::{NfManifest, Registry};

/// Slot states in [`NfTable`].
pub const ABSENT: u8 = 0;
pub const LIVE: u8 = 1;
pub const DEAD: u8 = 2;

/// What workers may read about one NF slot.
#[derive(Default)]
pub struct NfSlot {
    pub state: AtomicU8,
    pub nf_id: AtomicU32,
    /// Events published to this NF, summed over workers (each worker adds
    /// its own; relaxed, for stats).
    pub events_in: AtomicU64,
    pub events_out: AtomicU64,
}

/// The NF slots, shared with the workers.
pub struct NfTable {
    pub slots: Vec<NfSlot>,
    pub workers: u32,
}

impl NfTable {
    pub fn new(max_nfs: u32, workers: u32) -> NfTable {
        NfTable { slots: (0..max_nfs).map(|_| NfSlot::default()).collect(), workers }
    }

    /// Ring the runtime publishes on for slot `k`, worker `w`.
    pub fn to_nf_ring(&self, k: usize, w: usize) -> u32 {
        ((k * self.workers as usize + w) * 2) as u32
    }

    /// Ring the NF answers on for slot `k`, worker `w`.
    pub fn from_nf_ring(&self, k: usize, w: usize) -> u32 {
        self.to_nf_ring(k, w) + 1
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
}

/// Registration and liveness of NF processes (control thread).
pub struct NfManager {
    registry: Registry,
    table: Arc<NfTable>,
    sessions: Vec<Option<Session>>,
    slot_of: HashMap<String, usize>,
    arena: PathBuf,
}

impl NfManager {
    pub fn new(table: Arc<NfTable>, arena: PathBuf) -> NfManager {
        let n = table.slots.len();
        NfManager {
            registry: Registry::new(),
            table,
            sessions: (0..n).map(|_| None).collect(),
            slot_of: HashMap::new(),
            arena,
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
    /// liveness signal.
    pub fn register(&mut self, manifest: NfManifest, stream: &UnixStream) -> Response {
        let name = manifest.name.clone();
        let refuse = |message: String| Response::Error { message };
        if let Some(&k) = self.slot_of.get(&name) {
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
            arena: self.arena.clone(),
            rings: (0..self.table.workers as usize)
                .map(|w| NfRings {
                    worker: w as u32,
                    to_nf: self.table.to_nf_ring(slot, w),
                    from_nf: self.table.from_nf_ring(slot, w),
                })
                .collect(),
            subscriptions: entry.subscriptions.iter().map(|s| s.event.raw()).collect(),
            publications: entry.publications.iter().map(|p| p.raw()).collect(),
        };
        let s = &self.table.slots[slot];
        s.nf_id.store(id.0, Ordering::Relaxed);
        s.state.store(LIVE, Ordering::Release);
        self.sessions[slot] = Some(Session { stream: Some(keep), name: name.clone(), version });
        self.slot_of.insert(name.clone(), slot);
        tracing::info!("NF '{name}' registered as {id} in slot {slot}");
        Response::Registered(session)
    }

    /// Notice NFs whose connection closed. Returns the slots that died now.
    pub fn poll(&mut self) -> Vec<usize> {
        let mut died = Vec::new();
        for (k, s) in self.sessions.iter_mut().enumerate() {
            let Some(sess) = s else { continue };
            let Some(stream) = sess.stream.as_mut() else { continue };
            let mut buf = [0u8; 256];
            let gone = match stream.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false, // NFs send nothing more yet; ignore
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => false,
                Err(_) => true,
            };
            if gone {
                sess.stream = None;
                self.table.slots[k].state.store(DEAD, Ordering::Release);
                tracing::warn!("NF '{}' is gone (its session closed)", sess.name);
                died.push(k);
            }
        }
        died
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
            });
        }
        out
    }
}
