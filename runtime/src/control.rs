//! The control socket: a Unix stream socket serving `controller::api`
//! requests (one JSON line in, one out).
//!
//! One I/O thread owns every connection: it accepts, reads request lines
//! from all of them at once (`poll(2)`, non-blocking sockets), and writes
//! the answers back. The main loop only ever sees complete requests, so a
//! client that connects and sends nothing, sends half a line, or never
//! reads its answer delays nobody: not `uboxctl`, not an NF registering,
//! not the NF liveness checks the main loop runs between requests.
//!
//! Limits, each counted in `uboxctl stats` when hit:
//! - a request line is at most [`MAX_REQUEST`] bytes (a longer one gets an
//!   error naming the limit once its newline arrives, or is cut off at the
//!   request timeout);
//! - a connection has [`REQUEST_TIMEOUT`] to finish its request line, and
//!   as long to take its answer;
//! - at most [`MAX_CONNECTIONS`] connections are open at once; past that
//!   the oldest one still sending its request is closed to make room.
//!
//! Access: the socket is root's and, with `runtime.group`, that group's
//! (mode 0660; 0600 without a group), in a directory anyone may search.
//! Whoever can connect may register an NF and use the read-only requests;
//! requests that change what the runtime does ([`Request::needs_root`]:
//! `chain apply`) are refused unless the peer is root, by its credentials
//! as the kernel recorded them at `connect` (`SO_PEERCRED`), counted as
//! `denied`.
//!
//! (The acceptor used to be a non-blocking `accept` every pass of the main
//! loop. Linux allocates a socket before it knows there is no connection
//! and frees it through RCU, so every empty `accept` started RCU work that
//! then preempted the worker on its CPU; the thread sleeps in `poll`
//! instead, which allocates for real connections only.)

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use controller::api::{ControlStats, Request, Response};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Longest request line accepted (a chain file travels in one).
pub const MAX_REQUEST: usize = 4 << 20;
/// Time a client has to send its request line, and again to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once (idle, sending, waiting or reading an answer).
pub const MAX_CONNECTIONS: usize = 4096;

/// The limits a control socket enforces (the constants above by default;
/// tests use smaller ones).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_request: usize,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_request: MAX_REQUEST, request_timeout: REQUEST_TIMEOUT, max_connections: MAX_CONNECTIONS }
    }
}

/// Requests the main loop serves per pass at most.
const MAX_PER_POLL: usize = 64;

/// What the control socket counted (shared with the I/O thread).
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    too_long: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
    denied: AtomicU64,
    open: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A complete request, read by the I/O thread, for the main loop.
struct Incoming {
    id: u64,
    request: Request,
    /// A second handle on the connection (an NF's registration keeps one).
    stream: UnixStream,
}

struct Io {
    requests: Mutex<Receiver<Incoming>>,
    replies: Sender<(u64, Vec<u8>, Vec<std::fs::File>)>,
    /// Written (one byte) after each reply, so the I/O thread wakes.
    wake: UnixStream,
}

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Started by the first `poll` (on the main lcore, so the thread
    /// inherits its CPU).
    io: OnceLock<Option<Io>>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    limits: Limits,
}

/// Who is at the other end of a connection, as the kernel recorded it when
/// the peer connected (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Peer { pid: u32::try_from(c.pid()).ok()?, uid: c.uid(), gid: c.gid() })
}

/// Who may connect: `None` root only (mode 0600), or root and the members
/// of this group (0660).
pub type Group = Option<crate::preflight::NfGroup>;

impl ControlSocket {
    pub fn bind(path: &Path, group: &Group) -> Result<ControlSocket, String> {
        ControlSocket::bind_with(path, group, Limits::default())
    }

    pub fn bind_with(path: &Path, group: &Group, limits: Limits) -> Result<ControlSocket, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                // Searchable by all, whatever the umask: the socket's own
                // mode decides who may connect.
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
            }
        }
        if path.exists() {
            // A live runtime answers; a stale socket from a crash does not.
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {} is in use: another ubox-runtime runs with this runtime.name; stop it or pick another name",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
        }
        let listener = bind_private(path, group)?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            io: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(Counters::default()),
            limits,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The I/O thread's channels, starting the thread on first use.
    fn io(&self) -> Option<&Io> {
        self.io
            .get_or_init(|| match self.start() {
                Ok(io) => Some(io),
                Err(e) => {
                    tracing::error!("control socket: cannot start its I/O thread: {e}");
                    None
                }
            })
            .as_ref()
    }

    fn start(&self) -> std::io::Result<Io> {
        let listener = self.listener.try_clone()?;
        listener.set_nonblocking(true)?;
        let (wake, wake_rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let (req_tx, req_rx) = mpsc::channel();
        let (rep_tx, rep_rx) = mpsc::channel();
        let mut thread = IoThread {
            listener,
            wake: wake_rx,
            requests: req_tx,
            replies: rep_rx,
            stop: Arc::clone(&self.stop),
            counters: Arc::clone(&self.counters),
            limits: self.limits,
            conns: HashMap::new(),
            next_id: 1,
        };
        std::thread::Builder::new().name("ubox-control".into()).spawn(move || thread.run())?;
        Ok(Io { requests: Mutex::new(req_rx), replies: rep_tx, wake })
    }

    /// Serve the requests that came in, waiting up to `wait` for the first:
    /// `answer` also gets the connection (an NF's registration keeps a
    /// clone of it open).
    pub fn poll(&self, wait: Duration, answer: &mut impl FnMut(Request, &UnixStream) -> Reply) {
        let Some(io) = self.io() else {
            std::thread::sleep(wait);
            return;
        };
        let rx = io.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = rx.recv_timeout(wait).ok();
        let mut served = 0;
        while let Some(inc) = next {
            let Reply { response, files } = answer(inc.request, &inc.stream);
            let mut out = serde_json::to_vec(&response).unwrap_or_else(|e| {
                format!("{{\"status\":\"error\",\"message\":\"cannot encode the answer: {e}\"}}").into_bytes()
            });
            out.push(b'\n');
            if io.replies.send((inc.id, out, files)).is_ok() {
                let _ = (&io.wake).write(&[1]);
            }
            served += 1;
            // Bounded, so a client storm cannot starve the NF checks the
            // main loop runs between polls.
            next = if served < MAX_PER_POLL { rx.try_recv().ok() } else { None };
        }
    }

    /// What the control socket has counted so far.
    pub fn stats(&self) -> ControlStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ControlStats {
            connections: g(&c.accepted),
            open: g(&c.open),
            requests: g(&c.requests),
            bad_requests: g(&c.bad_requests),
            too_long: g(&c.too_long),
            timed_out: g(&c.timed_out),
            evicted: g(&c.evicted),
            denied: g(&c.denied),
        }
    }
}

/// Binds the listener at `path` with its owner and mode already right: it
/// is bound under a temporary name, given its group and mode there, and
/// only then linked to `path` (a hard link, which fails rather than
/// replace a socket another runtime bound meanwhile). So nobody can
/// connect while it still has the umask's mode.
fn bind_private(path: &Path, group: &Group) -> Result<UnixListener, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    let done = (|| {
        let mode = match group {
            Some(g) => {
                std::os::unix::fs::chown(&tmp, None, Some(g.gid))
                    .map_err(|e| format!("cannot give control socket {} to group '{}': {e}", path.display(), g.name))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of control socket {}: {e}", path.display()))?;
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                format!(
                    "control socket {} is in use: another ubox-runtime runs with this runtime.name; stop it or pick another name",
                    path.display()
                )
            } else {
                format!("cannot bind control socket {}: {e}", path.display())
            }
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    done.map(|()| listener)
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(Some(io)) = self.io.get() {
            let _ = (&io.wake).write(&[1]);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An answer and the descriptors that go with it (an NF's grant).
pub struct Reply {
    pub response: Response,
    pub files: Vec<std::fs::File>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply { response, files: Vec::new() }
    }
}

/// Where a connection is.
enum Phase {
    /// Reading its request line (`discard`: past the limit, waiting for the
    /// newline to answer with the error).
    Reading { buf: Vec<u8>, discard: bool },
    /// The main loop has its request.
    Waiting,
    /// Writing the answer from `pos`, with `files` attached to the first
    /// bytes that go.
    Writing { out: Vec<u8>, pos: usize, files: Vec<std::fs::File> },
}

struct Conn {
    stream: UnixStream,
    phase: Phase,
    /// When the current phase must be over.
    deadline: Instant,
    /// Accept order, to evict the oldest.
    seq: u64,
}

struct IoThread {
    listener: UnixListener,
    wake: UnixStream,
    requests: Sender<Incoming>,
    replies: Receiver<(u64, Vec<u8>, Vec<std::fs::File>)>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    limits: Limits,
    conns: HashMap<u64, Conn>,
    next_id: u64,
}

/// A read of up to this much per connection per wake-up.
const READ_CHUNK: usize = 64 * 1024;

impl IoThread {
    fn run(&mut self) {
        let mut ready: Vec<u64> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            // A connection the main loop holds has no deadline here.
            let timeout = self
                .conns
                .values()
                .filter(|c| !matches!(c.phase, Phase::Waiting))
                .map(|c| c.deadline)
                .min()
                .map(|d| d.saturating_duration_since(now));
            ready.clear();
            let (listen_ready, wake_ready) = {
                ids.clear();
                let mut fds = vec![
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                for (&id, c) in &self.conns {
                    let ev = match c.phase {
                        Phase::Reading { .. } => PollFlags::POLLIN,
                        Phase::Writing { .. } => PollFlags::POLLOUT,
                        Phase::Waiting => continue,
                    };
                    ids.push(id);
                    fds.push(PollFd::new(c.stream.as_fd(), ev));
                }
                let t = match timeout {
                    // Round up, so a deadline due in 0.4 ms is not a busy loop.
                    Some(d) => PollTimeout::try_from(d.as_millis().saturating_add(1).min(1000) as u64)
                        .unwrap_or(PollTimeout::MAX),
                    None => PollTimeout::from(1000u16),
                };
                if let Err(e) = poll(&mut fds, t) {
                    if e != nix::errno::Errno::EINTR {
                        tracing::warn!("control socket poll: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    continue;
                }
                let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                for (i, f) in fds.iter().enumerate().skip(2) {
                    if hit(f) {
                        ready.push(ids[i - 2]);
                    }
                }
                (hit(&fds[0]), hit(&fds[1]))
            };
            if wake_ready {
                let mut b = [0u8; 256];
                while matches!((&self.wake).read(&mut b), Ok(n) if n > 0) {}
            }
            while let Ok((id, out, files)) = self.replies.try_recv() {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.phase = Phase::Writing { out, pos: 0, files };
                    c.deadline = Instant::now() + self.limits.request_timeout;
                    ready.push(id);
                }
            }
            for &id in &ready {
                self.service(id, &mut chunk);
            }
            if listen_ready {
                self.accept();
            }
            self.expire();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.conns.len() >= self.limits.max_connections {
                        self.evict_oldest();
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let conn = Conn {
                        stream,
                        phase: Phase::Reading { buf: Vec::new(), discard: false },
                        deadline: Instant::now() + self.limits.request_timeout,
                        seq: id,
                    };
                    self.conns.insert(id, conn);
                    Counters::bump(&self.counters.accepted);
                    self.counters.open.store(self.conns.len() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: close the oldest
                    // idle client so the next one (maybe an NF) gets in.
                    tracing::debug!("control socket accept: {e}");
                    if !self.evict_oldest() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return;
                }
            }
        }
    }

    /// Closes the oldest connection still sending its request. False if
    /// there is none.
    fn evict_oldest(&mut self) -> bool {
        let oldest =
            self.conns.iter().filter(|(_, c)| matches!(c.phase, Phase::Reading { .. })).min_by_key(|(_, c)| c.seq);
        let Some((&id, _)) = oldest else { return false };
        self.close(id);
        Counters::bump(&self.counters.evicted);
        true
    }

    fn close(&mut self, id: u64) {
        self.conns.remove(&id);
        self.counters.open.store(self.conns.len() as u64, Ordering::Relaxed);
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.phase, Phase::Waiting) && c.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.close(id);
            Counters::bump(&self.counters.timed_out);
        }
    }

    fn service(&mut self, id: u64, chunk: &mut [u8]) {
        let max_request = self.limits.max_request;
        let Some(c) = self.conns.get_mut(&id) else { return };
        let after = match &mut c.phase {
            Phase::Waiting => After::Nothing,
            Phase::Writing { out, pos, files } => loop {
                // Descriptors (an NF's part of the arena) travel with the
                // answer's first bytes; our copies close once they went.
                let sent = if files.is_empty() {
                    (&c.stream).write(&out[*pos..])
                } else {
                    ubox_shm::pass::send_with_files(&c.stream, &out[*pos..], files).inspect(|_| files.clear())
                };
                match sent {
                    Ok(n) => {
                        *pos += n;
                        if *pos >= out.len() {
                            break After::Close; // answered: one request per connection
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break After::Nothing,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break After::Close,
                }
            },
            Phase::Reading { buf, discard } => match (&c.stream).read(chunk) {
                Ok(0) => After::Close, // gone before finishing its line
                Ok(n) => {
                    let got = &chunk[..n];
                    let newline = got.iter().position(|&b| b == b'\n');
                    let end = newline.unwrap_or(n);
                    if !*discard && buf.len() + end > max_request {
                        *buf = Vec::new();
                        *discard = true;
                    }
                    match (newline, *discard) {
                        (None, true) => After::Nothing,
                        (Some(_), true) => After::TooLong,
                        (None, false) => {
                            buf.extend_from_slice(got);
                            After::Nothing
                        }
                        (Some(_), false) => {
                            buf.extend_from_slice(&got[..end]);
                            After::Request(std::mem::take(buf))
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => After::Nothing,
                Err(_) => After::Close,
            },
        };
        match after {
            After::Nothing => {}
            After::Close => self.close(id),
            After::TooLong => {
                Counters::bump(&self.counters.too_long);
                let n = self.limits.max_request;
                let limit = if n >= 1 << 20 { format!("{} MiB", n >> 20) } else { format!("{} KiB", n >> 10) };
                let message = format!(
                    "request over {limit}, the control socket's limit for one line (a chain file travels in one): split it into smaller files"
                );
                self.answer_now(id, Response::Error { message });
            }
            After::Request(line) => {
                let request = serde_json::from_slice::<Request>(&line).map_err(|e| format!("bad request: {e}"));
                let Some(c) = self.conns.get_mut(&id) else { return };
                let Ok(stream) = c.stream.try_clone() else {
                    self.close(id);
                    return;
                };
                match request {
                    Ok(request) if request.needs_root() && peer_of(&stream).map_or(true, |p| p.uid != 0) => {
                        Counters::bump(&self.counters.denied);
                        let uid = peer_of(&stream).map_or("unknown".to_string(), |p| p.uid.to_string());
                        let how = match &request {
                            Request::ChainApply { origin, .. } => format!("sudo uboxctl chain apply {origin}"),
                            r => format!("sudo uboxctl {}", r.command()),
                        };
                        let message = format!(
                            "`{}` needs root (it changes which traffic the NFs see) and this client is uid {uid}: run it as root, e.g. {how}; \
                             the runtime's group may read (stats, nf list, chain show, ping) and run NFs",
                            request.command()
                        );
                        self.answer_now(id, Response::Error { message });
                    }
                    Ok(request) => {
                        Counters::bump(&self.counters.requests);
                        c.phase = Phase::Waiting;
                        if self.requests.send(Incoming { id, request, stream }).is_err() {
                            self.close(id);
                        }
                    }
                    Err(message) => {
                        Counters::bump(&self.counters.bad_requests);
                        self.answer_now(id, Response::Error { message });
                    }
                }
            }
        }
    }

    /// Answers `id` without bothering the main loop.
    fn answer_now(&mut self, id: u64, resp: Response) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        c.phase = Phase::Writing { out, pos: 0, files: Vec::new() };
        c.deadline = Instant::now() + self.limits.request_timeout;
        self.service(id, &mut []);
    }
}

/// What a connection needs after it was serviced.
enum After {
    Nothing,
    Close,
    TooLong,
    Request(Vec<u8>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_connections_taken_by_the_acceptor_thread() {
        let dir = std::env::temp_dir().join(format!("ubox-control-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let sock = ControlSocket::bind(&path, &None).unwrap();
        assert!(matches!(ControlSocket::bind(&path, &None), Err(e) if e.contains("in use")));
        let mut answer = |req: Request, _: &UnixStream| -> Reply {
            match req {
                Request::Ping => Response::Pong { instance: "t".into(), pid: 7 },
                _ => Response::Error { message: "no".into() },
            }
            .into()
        };
        sock.poll(Duration::ZERO, &mut answer); // starts the I/O thread
        let client = std::thread::spawn({
            let path = path.clone();
            move || controller::api::call(&path, &Request::Ping, Duration::from_secs(5))
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !client.is_finished() && std::time::Instant::now() < deadline {
            sock.poll(Duration::from_millis(5), &mut answer);
        }
        assert!(matches!(client.join().unwrap(), Ok(Response::Pong { pid: 7, .. })));
        drop(sock);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_socket_is_0600_or_0660_for_its_group_from_the_start() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("ubox-control-mode-{}", std::process::id()));
        let path = dir.join("sub/t.sock");
        let sock = ControlSocket::bind(&path, &None).unwrap();
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o755);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        drop(sock);
        assert!(!path.exists());
        // Our own group (any user may give a file it owns to its group).
        let gid = std::fs::metadata(path.parent().unwrap()).unwrap().gid();
        let group = Some(crate::preflight::NfGroup { name: "g".into(), gid });
        let sock = ControlSocket::bind(&path, &group).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o660, gid));
        // Only the socket is left in the directory: no temporary name.
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("t.sock")]);
        // The peer's credentials are the kernel's record of this process.
        let client = UnixStream::connect(&path).unwrap();
        let p = peer_of(&client).unwrap();
        assert_eq!(p.pid, std::process::id());
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        drop(sock);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A control socket with `limits` whose main loop runs on a thread,
    /// answering pings, until the returned flag is set.
    fn serve(name: &str, limits: Limits) -> (PathBuf, Arc<AtomicBool>, std::thread::JoinHandle<ControlStats>) {
        let dir = std::env::temp_dir().join(format!("ubox-control-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.sock");
        let sock = ControlSocket::bind_with(&path, &None, limits).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let main = std::thread::spawn(move || {
            let mut answer = |req: Request, _: &UnixStream| -> Reply {
                match req {
                    Request::Ping => Response::Pong { instance: "t".into(), pid: 7 },
                    _ => Response::Error { message: "no".into() },
                }
                .into()
            };
            while !d.load(Ordering::Acquire) {
                sock.poll(Duration::from_millis(5), &mut answer);
            }
            sock.stats()
        });
        (path, done, main)
    }

    fn ping(path: &Path) -> (Duration, Result<Response, controller::api::ClientError>) {
        let t = Instant::now();
        let r = controller::api::call(path, &Request::Ping, Duration::from_secs(5));
        (t.elapsed(), r)
    }

    fn line(path: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn idle_and_half_written_clients_delay_nobody_and_time_out() {
        let limits = Limits { request_timeout: Duration::from_millis(300), ..Limits::default() };
        let (path, done, main) = serve("idle", limits);
        let mut held = Vec::new();
        for i in 0..300 {
            let mut s = UnixStream::connect(&path).unwrap();
            if i % 2 == 0 {
                s.write_all(br#"{"cmd":"pi"#).unwrap();
            }
            held.push(s);
        }
        for _ in 0..10 {
            let (took, r) = ping(&path);
            assert!(matches!(r, Ok(Response::Pong { .. })), "{r:?}");
            assert!(took < Duration::from_secs(1), "ping took {took:?} behind idle clients");
        }
        std::thread::sleep(Duration::from_millis(700));
        // The idle ones were closed: reading gives EOF, not a block.
        let mut buf = [0u8; 8];
        held[1].set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(held[1].read(&mut buf).unwrap(), 0);
        done.store(true, Ordering::Release);
        let st = main.join().unwrap();
        assert_eq!(st.timed_out, 300, "{st:?}");
        assert_eq!(st.requests, 10, "{st:?}");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn long_and_bad_lines_get_errors_naming_the_problem() {
        let limits = Limits { max_request: 1024, ..Limits::default() };
        let (path, done, main) = serve("long", limits);
        let mut big = br#"{"cmd":"chain_apply","text":""#.to_vec();
        big.extend(std::iter::repeat(b'#').take(100_000));
        big.extend_from_slice(b"\",\"origin\":\"t\"}\n");
        let got = line(&path, &big);
        assert!(got.contains("over 1 KiB") && got.contains("limit"), "{got}");
        let got = line(&path, b"{not json\n");
        assert!(got.contains("bad request"), "{got}");
        assert!(matches!(ping(&path).1, Ok(Response::Pong { .. })));
        done.store(true, Ordering::Release);
        let st = main.join().unwrap();
        assert_eq!((st.too_long, st.bad_requests, st.requests), (1, 1, 1), "{st:?}");
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    #[test]
    fn at_the_connection_limit_the_oldest_idle_client_makes_room() {
        let limits = Limits { max_connections: 8, ..Limits::default() };
        let (path, done, main) = serve("limit", limits);
        let held: Vec<UnixStream> = (0..8).map(|_| UnixStream::connect(&path).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(ping(&path).1, Ok(Response::Pong { .. })));
        done.store(true, Ordering::Release);
        let st = main.join().unwrap();
        assert_eq!(st.evicted, 1, "{st:?}");
        drop(held);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]
        /// Whatever line a client sends, it gets one JSON answer and the
        /// socket keeps serving.
        #[test]
        fn any_line_gets_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let (path, done, main) = serve("fuzz", Limits::default());
            let mut l: Vec<u8> = bytes.into_iter().filter(|&b| b != b'\n').collect();
            l.push(b'\n');
            let got = line(&path, &l);
            proptest::prop_assert!(serde_json::from_str::<Response>(got.trim()).is_ok(), "answer {:?}", got);
            let pong = matches!(ping(&path).1, Ok(Response::Pong { .. }));
            proptest::prop_assert!(pong);
            done.store(true, Ordering::Release);
            main.join().unwrap();
            std::fs::remove_dir_all(path.parent().unwrap()).ok();
        }
    }
}
