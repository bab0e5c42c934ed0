//! `hostile_nf`: an NF that misbehaves on purpose, for the isolation e2e
//! test (`tests/e2e/test_isolation.py`, issue 9 §3). It registers like any
//! NF and answers `Verdict::Pass` to every event, while a second thread
//! attacks every piece of ubox shared memory the process can reach:
//!
//! * every mapping of the arena file (`ubox-*.arena`) or of a memfd named
//!   `ubox-data` / `ubox-channel` (`/proc/self/maps`) that is writable gets
//!   random bytes in random runs (1 to 256 bytes at random offsets,
//!   `--rate` runs a second);
//! * every read-only one: `mprotect(PROT_READ | PROT_WRITE)` and
//!   `madvise(MADV_REMOVE)` are tried (both must be refused);
//! * the arena file is reopened read-write by its path, every descriptor
//!   of those files (`/proc/self/fd`) is reopened read-write through its
//!   `/proc/self/fd/N` link, and each descriptor (kept or reopened) is
//!   tried for a way to write: a shared writable mapping, `pwrite`,
//!   `ftruncate` to a smaller size (the runtime's own mappings would fault
//!   past the new end) and a punched hole. The descriptors the SDK closes
//!   after mapping are kept (see [`close`]): a real attacker would not
//!   have closed them;
//! * `--peer PID` processes (the runtime, other NFs): `/proc/PID/mem` and
//!   the descriptors under `/proc/PID/fd` are opened read-write.
//!
//! Writing into its own channel is allowed and breaks its own rings; that
//! is intended: the runtime must survive it (the NF may be declared dead).
//! A mapping or descriptor the attack manages to make writable is attacked
//! too: this NF does not stop at finding a hole.
//!
//! Every second, and once more when the attack ends or on SIGTERM, it
//! prints one JSON line to stdout:
//!
//! ```text
//! {"writable_mappings":[{"kind":"channel",...}],"readonly_mappings":[...],"bytes_written":N,
//!  "mprotect_refused":N,"mprotect_allowed":N,"reopen_refused":N,"reopen_allowed":N,
//!  "probes":{"reopen":{"fd_data":{"refused":N,"allowed":N,"error":"..."}},...},"breaches":[...],...}
//! ```
//!
//! `breaches` lists every probe that succeeded where it must not: a way to
//! write the arena file or the packet memfd (a writable mapping, `mprotect`,
//! `pwrite`, a punched hole, `MADV_REMOVE`), any way to shrink a shared
//! file, any peer's memory or descriptors. A descriptor reopened read-write
//! is counted (`reopen_allowed`) but is no breach by itself: a sealed memfd
//! opens read-write and refuses every write. Expected to succeed, and no
//! breaches: writing, reopening and punching holes in its own channel.
//!
//! ```text
//! hostile_nf [--instance NAME | --socket PATH] [--name NAME] [--seconds N] [--seed N]
//!            [--rate RUNS_PER_S] [--events TYPE]... [--peer PID]... [--arena PATH]
//! ```
//!
//! This is the one place in the workspace where an NF uses `unsafe`: raw
//! writes, `mprotect`, `mmap` and a `close` interposer are the point of it.
//! Each `unsafe` block says what it does and why it stays within memory or
//! descriptors of this process.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{IntoRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nf_sdk::{Event, Nf, StopHandle, Verdict};
use serde_json::{json, Value};

const USAGE: &str = "usage: hostile_nf [--instance NAME | --socket PATH] [--name NAME] [--seconds N] [--seed N] \
                     [--rate RUNS_PER_S] [--events TYPE]... [--peer PID]... [--arena PATH]";

/// Longest run of random bytes written at once.
const MAX_RUN: usize = 256;
/// How often the maps are read again and the probes repeated.
const SURVEY_EVERY: Duration = Duration::from_millis(250);
/// How often the `--peer` processes are probed.
const PEERS_EVERY: Duration = Duration::from_secs(1);
/// How often the JSON line is printed.
const PRINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Args {
    instance: Option<String>,
    socket: Option<PathBuf>,
    name: String,
    seconds: f64,
    seed: u64,
    rate: u64,
    events: Vec<String>,
    peers: Vec<u32>,
    arena: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        instance: None,
        socket: None,
        name: "hostile".into(),
        seconds: 10.0,
        seed: 0,
        rate: 20_000,
        events: Vec::new(),
        peers: Vec::new(),
        arena: None,
    };
    let mut seed = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--instance" => a.instance = Some(value),
            "--socket" => a.socket = Some(value.into()),
            "--name" => a.name = value,
            "--seconds" => a.seconds = value.parse().map_err(|e| format!("--seconds {value}: {e}"))?,
            "--seed" => seed = Some(num(&value)?),
            "--rate" => a.rate = num(&value)?,
            "--events" => a.events.push(value),
            "--peer" => a.peers.push(num(&value)? as u32),
            "--arena" => a.arena = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    a.seed = seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
    });
    Ok(a)
}

// --- keeping the descriptors the SDK would close ---------------------------

/// Descriptors of ubox files that the SDK closed, duplicated first (-1:
/// free place).
static KEPT: [AtomicI32; 64] = [const { AtomicI32::new(-1) }; 64];
/// How many descriptors were kept that way.
static KEPT_COUNT: AtomicU64 = AtomicU64::new(0);

/// Interposes close(2) for this executable (the SDK and std call `close`
/// through the libc symbol, and an executable's own definition wins): a
/// descriptor of the arena or of a ubox memfd is duplicated before it is
/// closed, so the attack can try it even when the SDK closes what it
/// received once it has mapped it. Everything else is closed as usual.
#[no_mangle]
pub extern "C" fn close(fd: libc::c_int) -> libc::c_int {
    if fd >= 0 && kind_of_link(&fd_link(fd)).is_some() {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor of this process makes
        // another descriptor of this process; nothing else is touched.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup >= 0 {
            match KEPT.iter().find(|k| k.compare_exchange(-1, dup, Ordering::AcqRel, Ordering::Relaxed).is_ok()) {
                Some(_) => {
                    KEPT_COUNT.fetch_add(1, Ordering::Relaxed);
                }
                None => real_close(dup),
            }
        }
    }
    // SAFETY: the close(2) system call on the descriptor the caller asked
    // to close, as libc's close would make it.
    unsafe { libc::syscall(libc::SYS_close, fd) as libc::c_int }
}

/// close(2) without the interposer (for descriptors this program made).
fn real_close(fd: RawFd) {
    // SAFETY: closes a descriptor this program opened and no one else uses.
    unsafe { libc::syscall(libc::SYS_close, fd) };
}

/// A descriptor this program opened, closed for real when dropped.
struct Own(RawFd);

impl Drop for Own {
    fn drop(&mut self) {
        real_close(self.0);
    }
}

fn fd_link(fd: RawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
}

// --- what is ubox memory ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The arena file (header and event slot pool; everything, before
    /// isolation).
    Arena,
    /// The packet-buffer memfd.
    Data,
    /// One of this NF's channel memfds.
    Channel,
    /// Another memfd whose name starts with `ubox`.
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Arena => "arena",
            Kind::Data => "data",
            Kind::Channel => "channel",
            Kind::Other => "other",
        }
    }
}

/// `--arena`, when given: an arena file whatever its name.
static ARENA: OnceLock<String> = OnceLock::new();

/// The kind of a mapping's path or a descriptor's link target, if it is
/// ubox memory: `/memfd:ubox-data (deleted)`, `/dev/hugepages/ubox-x.arena`.
fn kind_of_link(path: &str) -> Option<Kind> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    if let Some(name) = path.strip_prefix("/memfd:") {
        return if name.starts_with("ubox-data") {
            Some(Kind::Data)
        } else if name.starts_with("ubox-channel") {
            Some(Kind::Channel)
        } else if name.starts_with("ubox") {
            Some(Kind::Other)
        } else {
            None
        };
    }
    let file = path.rsplit('/').next().unwrap_or("");
    let named = ARENA.get().is_some_and(|a| a == path);
    (named || file.starts_with("ubox") && file.ends_with(".arena")).then_some(Kind::Arena)
}

#[derive(Clone, Debug)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    inode: u64,
    path: String,
    kind: Kind,
}

impl Mapping {
    fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }

    /// MAP_SHARED (`s`): writes reach the file. A private mapping's writes
    /// land in copies of this process's own.
    fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }

    fn json(&self) -> Value {
        json!({"kind": self.kind.name(), "path": self.path, "perms": self.perms, "inode": self.inode,
               "start": format!("{:#x}", self.start), "len": self.end - self.start})
    }
}

/// The ubox mappings of /proc/self/maps.
fn ubox_mappings() -> Vec<Mapping> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        // start-end perms offset dev inode   path (the path may hold spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start().to_string();
        let Some(kind) = kind_of_link(&path) else { continue };
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) else { continue };
        out.push(Mapping { start, end, perms: perms.into(), inode: inode.parse().unwrap_or(0), path, kind });
    }
    out
}

// --- figures ---------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Tally {
    refused: u64,
    allowed: u64,
    /// The first refusal's error.
    error: Option<String>,
}

#[derive(Default)]
struct Figures {
    /// Writable and read-only mappings seen, by (kind, path, start).
    writable: BTreeMap<(Kind, String, usize), Mapping>,
    readonly: BTreeMap<(Kind, String, usize), Mapping>,
    bytes_written: u64,
    write_runs: u64,
    /// By probe, then by what it was tried on.
    probes: BTreeMap<&'static str, BTreeMap<String, Tally>>,
    /// Distinct access modes and seals of the descriptors seen, by kind.
    fd_modes: BTreeMap<String, BTreeSet<String>>,
    breaches: BTreeSet<String>,
    surveys: u64,
}

impl Figures {
    /// Counts one try of `probe` on `what`; `breach`: whether success is a
    /// hole in the isolation.
    fn count(&mut self, probe: &'static str, what: &str, result: Result<(), io::Error>, breach: bool) -> bool {
        let t = self.probes.entry(probe).or_default().entry(what.to_string()).or_default();
        match result {
            Ok(()) => {
                t.allowed += 1;
                if breach {
                    self.breaches.insert(format!("{probe} on {what}"));
                }
                true
            }
            Err(e) => {
                t.refused += 1;
                t.error.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }

    fn sum(&self, probe: &str, filter: impl Fn(&str) -> bool) -> (u64, u64) {
        self.probes.get(probe).map_or((0, 0), |m| {
            m.iter().filter(|(k, _)| filter(k)).fold((0, 0), |(r, a), (_, t)| (r + t.refused, a + t.allowed))
        })
    }

    fn json(&self, a: &Args, started: Instant, events: u64, done: bool, nf_state: &str) -> Value {
        let not_channel = |k: &str| !k.contains("channel");
        let (mp_r, mp_a) = self.sum("mprotect", |_| true);
        let (ro_r, ro_a) = self.sum("reopen", not_channel);
        let (rp_r, rp_a) = self.sum("reopen_path", |_| true);
        let probes: BTreeMap<&str, BTreeMap<&str, Value>> = self
            .probes
            .iter()
            .map(|(p, m)| {
                let m = m
                    .iter()
                    .map(|(k, t)| (k.as_str(), json!({"refused": t.refused, "allowed": t.allowed, "error": t.error})))
                    .collect();
                (*p, m)
            })
            .collect();
        json!({
            "name": a.name,
            "pid": std::process::id(),
            // SAFETY: getuid/geteuid only read this process's credentials.
            "uid": unsafe { libc::getuid() },
            "euid": unsafe { libc::geteuid() },
            "seed": a.seed,
            "rate": a.rate,
            "elapsed_s": (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "done": done,
            "nf": nf_state,
            "events": events,
            "surveys": self.surveys,
            "writable_mappings": self.writable.values().map(Mapping::json).collect::<Vec<_>>(),
            "readonly_mappings": self.readonly.values().map(Mapping::json).collect::<Vec<_>>(),
            "bytes_written": self.bytes_written,
            "write_runs": self.write_runs,
            "mprotect_refused": mp_r,
            "mprotect_allowed": mp_a,
            // Reopened read-write by path or /proc/self/fd: the arena file
            // and the packet memfd (the channels are the NF's to write).
            "reopen_refused": ro_r + rp_r,
            "reopen_allowed": ro_a + rp_a,
            "fds_kept": KEPT_COUNT.load(Ordering::Relaxed),
            "fd_modes": self.fd_modes,
            "probes": probes,
            "breaches": self.breaches,
        })
    }
}

// --- the attack ------------------------------------------------------------

/// splitmix64: small, seeded, good enough to scatter writes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A writable range this thread attacks: a writable ubox mapping of the
/// SDK's, or one the probes managed to make or map writable.
#[derive(Clone, Debug)]
struct Target {
    start: usize,
    len: usize,
    /// What the probes made writable (empty for the SDK's mappings).
    what: String,
}

struct Attack {
    args: Args,
    fig: Figures,
    rng: Rng,
    /// From /proc/self/maps at the last survey.
    targets: Vec<Target>,
    /// Writable mappings made by the probes (kept mapped, attacked too).
    made: Vec<Target>,
    /// Arena paths to reopen: `--arena`, the instance's default, and every
    /// arena file found mapped.
    arena_paths: BTreeSet<PathBuf>,
    started: Instant,
    events: Arc<AtomicU64>,
    nf_state: Arc<Mutex<String>>,
}

fn errno() -> io::Error {
    io::Error::last_os_error()
}

fn rc(r: libc::c_int) -> Result<(), io::Error> {
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

impl Attack {
    fn print(&self, done: bool) {
        let state = self.nf_state.lock().map(|s| s.clone()).unwrap_or_default();
        let line = self.fig.json(&self.args, self.started, self.events.load(Ordering::Relaxed), done, &state);
        println!("{line}");
    }

    /// Reads the maps again, tries the read-only mappings and every
    /// descriptor.
    fn survey(&mut self) {
        self.fig.surveys += 1;
        let maps = ubox_mappings();
        self.targets.clear();
        for m in maps {
            let key = (m.kind, m.path.clone(), m.start);
            if m.kind == Kind::Arena {
                self.arena_paths.insert(PathBuf::from(m.path.strip_suffix(" (deleted)").unwrap_or(&m.path)));
            }
            if m.writable() {
                if m.kind != Kind::Channel && m.shared() {
                    self.fig.breaches.insert(format!("{} mapped writable ({})", m.kind.name(), m.path));
                }
                self.targets.push(Target { start: m.start, len: m.end - m.start, what: String::new() });
                self.fig.writable.entry(key).or_insert(m);
            } else {
                self.probe_readonly(&m);
                self.fig.readonly.entry(key).or_insert(m);
            }
        }
        self.probe_fds();
        let paths: Vec<PathBuf> = self.arena_paths.iter().cloned().collect();
        for p in paths {
            match OpenOptions::new().read(true).write(true).open(&p) {
                Ok(f) => {
                    let f = Own(f.into_raw_fd());
                    self.fig.count("reopen_path", "arena", Ok(()), false);
                    self.write_paths(f.0, Kind::Arena, "path_arena");
                }
                Err(e) => {
                    self.fig.count("reopen_path", "arena", Err(e), false);
                }
            }
        }
    }

    /// A read-only mapping: it must stay so.
    fn probe_readonly(&mut self, m: &Mapping) {
        let (addr, len) = (m.start as *mut libc::c_void, m.end - m.start);
        // SAFETY: asks the kernel to make a mapping of this process (listed
        // in its own /proc/self/maps) writable; it must refuse. If it does
        // not, the range is this process's to write, and is attacked.
        let r = rc(unsafe { libc::mprotect(addr, len, libc::PROT_READ | libc::PROT_WRITE) });
        if self.fig.count("mprotect", m.kind.name(), r, m.shared()) {
            self.made.push(Target { start: m.start, len, what: format!("mprotect {}", m.kind.name()) });
        }
        // SAFETY: MADV_REMOVE on a range of this process's own mapping
        // (frees the backing pages of a shared file: must be refused on a
        // read-only mapping).
        let r = rc(unsafe { libc::madvise(addr, len.min(4096), libc::MADV_REMOVE) });
        self.fig.count("madvise_remove", m.kind.name(), r, true);
    }

    /// Every descriptor of ubox memory in /proc/self/fd (the SDK's, and the
    /// ones kept from its closes).
    fn probe_fds(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
        let fds: Vec<(RawFd, Kind)> = dir
            .filter_map(|e| {
                let e = e.ok()?;
                let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
                Some((fd, kind_of_link(&fd_link(fd))?))
            })
            .collect();
        for (fd, kind) in fds {
            let what = format!("fd_{}", kind.name());
            // SAFETY: fcntl queries and F_DUPFD on a descriptor of this
            // process; the duplicate is this function's (closed by `Own`).
            let (fl, seals, dup) = unsafe {
                (
                    libc::fcntl(fd, libc::F_GETFL),
                    libc::fcntl(fd, libc::F_GET_SEALS),
                    libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0),
                )
            };
            if fl < 0 || dup < 0 {
                continue; // closed meanwhile
            }
            let dup = Own(dup);
            let mode = match fl & libc::O_ACCMODE {
                libc::O_RDONLY => "ro",
                libc::O_WRONLY => "wo",
                _ => "rw",
            };
            let seals = if seals < 0 { "no seals".to_string() } else { format!("seals {seals:#x}") };
            self.fig.fd_modes.entry(kind.name().into()).or_default().insert(format!("{mode}, {seals}"));
            // The descriptor as it is: whatever its mode, the file must not
            // shrink under the runtime's mappings.
            self.shrink(dup.0, &what);
            drop(dup);
            let link = format!("/proc/self/fd/{fd}");
            match OpenOptions::new().read(true).write(true).open(&link) {
                Ok(f) => {
                    let f = Own(f.into_raw_fd());
                    self.fig.count("reopen", &what, Ok(()), false);
                    self.write_paths(f.0, kind, &what);
                }
                Err(e) => {
                    self.fig.count("reopen", &what, Err(e), false);
                }
            }
        }
    }

    /// Tries `ftruncate` to a smaller size (restored at once if allowed):
    /// a shared file the runtime maps must not shrink under it, the NF's
    /// own channels included.
    fn shrink(&mut self, fd: RawFd, what: &str) {
        let Some((size, page)) = size_of(fd) else { return };
        let smaller = size.saturating_sub(page);
        // SAFETY: ftruncate on a descriptor of this process.
        let r = rc(unsafe { libc::ftruncate(fd, smaller as libc::off_t) });
        if self.fig.count("truncate", what, r, true) {
            // SAFETY: as above; puts the size back (the bytes past `smaller`
            // read as zeros now).
            unsafe { libc::ftruncate(fd, size as libc::off_t) };
        }
    }

    /// Every way to write through a descriptor opened read-write.
    fn write_paths(&mut self, fd: RawFd, kind: Kind, what: &str) {
        let breach = kind != Kind::Channel;
        let Some((size, page)) = size_of(fd) else { return };
        if size < page {
            return;
        }
        // A shared writable mapping of its first page.
        // SAFETY: maps a new range into this process; nothing existing is
        // replaced (no MAP_FIXED).
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        let r = if p == libc::MAP_FAILED { Err(errno()) } else { Ok(()) };
        if self.fig.count("mmap_write", what, r, breach) {
            if breach && !self.made.iter().any(|t| t.what == what) {
                // Kept mapped for good (one per way in): a hole is attacked,
                // not just found.
                self.made.push(Target { start: p as usize, len: page, what: what.to_string() });
            } else {
                // SAFETY: unmaps exactly the range mapped just above.
                unsafe { libc::munmap(p, page) };
            }
        }
        // pwrite of the byte already there (a write either way).
        let at = (self.rng.below(size) & !7) as libc::off_t;
        let mut b = 0u8;
        // SAFETY: pread/pwrite of one byte between this local and a
        // descriptor of this process.
        let r = unsafe {
            let p = (&mut b as *mut u8).cast();
            if libc::pread(fd, p, 1, at) == 1 && libc::pwrite(fd, p, 1, at) == 1 {
                Ok(())
            } else {
                Err(errno())
            }
        };
        self.fig.count("pwrite", what, r, breach);
        self.shrink(fd, what);
        // A hole punched in a page (the pages read as zeros after).
        let off = (self.rng.below(size / page) * page) as libc::off_t;
        // SAFETY: fallocate on a descriptor of this process.
        let r = rc(unsafe {
            libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, page as libc::off_t)
        });
        self.fig.count("punch_hole", what, r, breach);
    }

    /// Other processes: their memory and descriptors.
    fn probe_peers(&mut self) {
        for pid in self.args.peers.clone() {
            let open_rw = |p: &std::path::Path| {
                OpenOptions::new().read(true).write(true).open(p).map(|f| drop(Own(f.into_raw_fd())))
            };
            let r = open_rw(std::path::Path::new(&format!("/proc/{pid}/mem")));
            self.fig.count("peer_mem", "mem", r, true);
            match std::fs::read_dir(format!("/proc/{pid}/fd")) {
                Err(e) => {
                    self.fig.count("peer_fd_list", "fd", Err(e), true);
                }
                Ok(dir) => {
                    self.fig.count("peer_fd_list", "fd", Ok(()), true);
                    for e in dir.flatten() {
                        let path = e.path();
                        let link = std::fs::read_link(&path).map(|p| p.to_string_lossy().into_owned());
                        let Some(kind) = link.ok().as_deref().and_then(kind_of_link) else { continue };
                        let r = open_rw(&path);
                        self.fig.count("peer_fd", &format!("fd_{}", kind.name()), r, true);
                    }
                }
            }
        }
    }

    /// `runs` random runs of random bytes at random places of the targets.
    fn write_runs(&mut self, runs: u64) {
        let n = self.targets.len() + self.made.len();
        if n == 0 {
            return;
        }
        let mut buf = [0u8; MAX_RUN];
        for _ in 0..runs {
            let i = self.rng.below(n);
            let t = if i < self.targets.len() { &self.targets[i] } else { &self.made[i - self.targets.len()] };
            let (start, len) = (t.start, t.len);
            let off = self.rng.below(len);
            let run = (1 + self.rng.below(MAX_RUN)).min(len - off);
            for chunk in buf[..run].chunks_mut(8) {
                let r = self.rng.next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            // SAFETY: [start + off, start + off + run) lies inside a mapping
            // of this process that was writable when last seen: one the SDK
            // made (listed writable in /proc/self/maps at the last survey,
            // and never unmapped while this thread runs: the Nf that owns
            // it outlives the thread), or one this thread made writable
            // itself and never unmaps. Other processes may share the
            // bytes; that is the point: the runtime must survive whatever
            // an NF writes where it can. The writes race with the SDK's
            // atomic accesses in the NF's other thread, deliberately;
            // volatile keeps the compiler from merging or dropping them.
            unsafe {
                let p = (start + off) as *mut u8;
                for (k, b) in buf[..run].iter().enumerate() {
                    std::ptr::write_volatile(p.add(k), *b);
                }
            }
            self.fig.bytes_written += run as u64;
            self.fig.write_runs += 1;
        }
    }

    fn run(mut self, stop: StopHandle) {
        let deadline = self.started + Duration::from_secs_f64(self.args.seconds.max(0.0));
        let per_ms = (self.args.rate / 1000).max(1);
        let (mut next_survey, mut next_peers, mut next_print) = (self.started, self.started, self.started);
        loop {
            let now = Instant::now();
            if now >= next_survey {
                self.survey();
                next_survey = now + SURVEY_EVERY;
            }
            if now >= next_peers {
                self.probe_peers();
                next_peers = now + PEERS_EVERY;
            }
            if now >= deadline || stop.is_stopped() {
                break;
            }
            if self.args.rate > 0 {
                self.write_runs(per_ms);
            }
            if now >= next_print {
                self.print(false);
                next_print = now + PRINT_EVERY;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.print(true);
    }
}

/// Size and page size (the huge page size on hugetlbfs) of a descriptor's
/// file.
fn size_of(fd: RawFd) -> Option<(usize, usize)> {
    // SAFETY: fstat fills this local from a descriptor of this process.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then(|| (st.st_size as usize, (st.st_blksize as usize).max(4096)))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile_nf: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = &args.arena {
        let _ = ARENA.set(p.to_string_lossy().into_owned());
    }
    let events = Arc::new(AtomicU64::new(0));
    let mut builder = Nf::builder(&args.name).version("0.1.0").modifies_packets(false);
    for path in std::iter::once("PKT").chain(args.events.iter().map(String::as_str)) {
        let n = Arc::clone(&events);
        builder = builder.subscribe(path, move |_ev: &Event<'_>| {
            n.fetch_add(1, Ordering::Relaxed);
            Verdict::Pass
        });
    }
    let mut nf = match builder.target(args.instance.as_deref(), args.socket.as_deref()).connect() {
        Ok(nf) => nf,
        Err(e) => {
            eprintln!("hostile_nf: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "hostile_nf: registered as NF {} ({}) on {}; attacking for {} s (seed {}, {} runs/s)",
        nf.id(),
        args.name,
        nf.socket().display(),
        args.seconds,
        args.seed,
        args.rate
    );
    let nf_state = Arc::new(Mutex::new("running".to_string()));
    let mut arena_paths = BTreeSet::new();
    if let Some(p) = &args.arena {
        arena_paths.insert(p.clone());
    }
    if let Some(i) = &args.instance {
        arena_paths.insert(PathBuf::from(format!("/dev/hugepages/ubox-{i}.arena")));
    }
    let attack = Attack {
        rng: Rng(args.seed),
        args,
        fig: Figures::default(),
        targets: Vec::new(),
        made: Vec::new(),
        arena_paths,
        started: Instant::now(),
        events: Arc::clone(&events),
        nf_state: Arc::clone(&nf_state),
    };
    let stop = nf.stop_handle();
    let attacker = std::thread::Builder::new()
        .name("attack".into())
        .spawn(move || attack.run(stop))
        .expect("spawning the attack thread");
    // Answers Pass to everything until SIGTERM or until the runtime lets
    // go of it (declared dead: its corrupted rings are expected to get it
    // there); the attack goes on until --seconds either way.
    let result = nf.run();
    let state = match &result {
        Ok(s) => format!("stopped after {} events", s.events),
        Err(e) => format!("run ended: {e}"),
    };
    eprintln!("hostile_nf: {state}");
    if let Ok(mut s) = nf_state.lock() {
        *s = state;
    }
    let _ = attacker.join();
    // The mappings (the Nf) outlive the attack thread.
    drop(nf);
    ExitCode::SUCCESS
}
