//! The NF life cycle: [`NfBuilder`] (manifest and callbacks), [`Nf`]
//! (registered session, mapped arena) and [`Nf::run`] (the poll loop).
//!
//! This module owns the control connection and the NF's side of its
//! channels: it pops descriptors in bursts, calls the callbacks, and pushes
//! one [`Answer`] per event (the event's cookie and verdict) back in one
//! burst. It neither allocates nor frees slots (the pool is read-only
//! here): it publishes an event in its channel's publish area (announced
//! with [`Answer::publish`], copied out by the worker), and writes packet
//! bytes only for NFs that declared it (only they get the packet region
//! writable).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::api::{self, NfSession, NfWakeup, Request, Response};
use controller::registry::{FlowFilter, NfManifest, Subscription};
use ubox_shm::event::{Answer, Desc, EventHeader, EVENT_HEADER_LEN, VERDICT_DROP, VERDICT_MODIFIED, VERDICT_PASS};
use ubox_shm::{Arena, Consumer, Grant, Producer, PubWriter, SlotIdx, SlotPool};
use ustack::event::EventTypeId;

use crate::event::{Context, Outgoing};
use crate::{Event, NfError, Verdict};

/// Instance used when neither the builder nor the environment names one.
pub const DEFAULT_INSTANCE: &str = "ubox";
/// Environment variable naming the runtime instance (socket
/// `/run/ubox/<instance>.sock`).
pub const ENV_INSTANCE: &str = "UBOX_INSTANCE";
/// Environment variable naming the control socket path directly.
pub const ENV_SOCKET: &str = "UBOX_SOCKET";

/// How long registration may take before `connect` gives up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest registration answer read (a session is a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;
/// How often `run` checks that the control connection is still open.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);
/// Most events popped from one channel per poll. Large, so that when the
/// NF falls behind (another NF had the core) it catches up in one burst
/// and pays its per-burst costs (index lines, a yield) once for many.
const BURST: usize = 256;

type Callback = Box<dyn FnMut(&Event<'_>) -> Verdict + Send>;

struct Handler {
    path: String,
    type_id: EventTypeId,
    callback: Callback,
}

/// Collects the manifest and callbacks of an NF; [`connect`](Self::connect)
/// registers it. Made by [`Nf::builder`].
pub struct NfBuilder {
    manifest: NfManifest,
    callbacks: Vec<Callback>,
    instance: Option<String>,
    socket: Option<PathBuf>,
    handle_signals: bool,
    pin: bool,
    stop: StopHandle,
    on_reregister: Option<Hook>,
    backoff: ReconnectBackoff,
    join: api::Join,
}

/// What [`NfBuilder::on_reregister`] calls.
type Hook = Box<dyn FnMut(&NfSession) + Send>;

impl std::fmt::Debug for NfBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfBuilder")
            .field("manifest", &self.manifest)
            .field("instance", &self.instance)
            .field("socket", &self.socket)
            .field("handle_signals", &self.handle_signals)
            .finish_non_exhaustive()
    }
}

impl NfBuilder {
    fn new(name: &str) -> NfBuilder {
        NfBuilder {
            manifest: NfManifest {
                name: name.to_owned(),
                version: "0.0.0".to_owned(),
                subscriptions: Vec::new(),
                publications: Vec::new(),
                declares: Vec::new(),
                modifies_packets: false,
                requests_stack_actions: false,
            },
            callbacks: Vec::new(),
            instance: None,
            socket: None,
            handle_signals: true,
            pin: true,
            stop: StopHandle::default(),
            on_reregister: None,
            backoff: ReconnectBackoff::default(),
            join: api::Join::Exclusive,
        }
    }

    /// What to do when the name already runs (default: be refused):
    /// [`api::Join::Instance`] adds this process as another instance (the
    /// runtime spreads new flows over the instances, each flow staying on
    /// its own), [`api::Join::Takeover`] makes it the new version that
    /// takes every new flow while the old instances drain and exit.
    pub fn join(mut self, join: api::Join) -> Self {
        self.join = join;
        self
    }

    /// The NF's own version string (informational; default `0.0.0`).
    pub fn version(mut self, version: &str) -> Self {
        self.manifest.version = version.to_owned();
        self
    }

    /// Calls `callback` for every event of type `path` (e.g. `"PKT/TCP"`) or
    /// one of its subtypes. When several subscriptions match an event, the
    /// most specific one (deepest path) gets it.
    pub fn subscribe<F>(self, path: &str, callback: F) -> Self
    where
        F: FnMut(&Event<'_>) -> Verdict + Send + 'static,
    {
        self.subscribe_filtered(path, None, callback)
    }

    /// [`subscribe`](Self::subscribe) for the flows `filter` accepts only.
    /// The runtime applies the filter (it knows the flow keys); the SDK
    /// dispatches by type alone.
    pub fn subscribe_filtered<F>(mut self, path: &str, filter: Option<FlowFilter>, callback: F) -> Self
    where
        F: FnMut(&Event<'_>) -> Verdict + Send + 'static,
    {
        self.manifest.subscriptions.push(Subscription { event: path.to_owned(), filter });
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Declares that the NF publishes events of type `path`.
    pub fn publishes(mut self, path: &str) -> Self {
        self.manifest.publications.push(path.to_owned());
        self
    }

    /// Declares a new event type `path` under an existing one
    /// (e.g. `PKT/TCP/HTTP_REQ`).
    pub fn declares(mut self, path: &str) -> Self {
        self.manifest.declares.push(path.to_owned());
        self
    }

    /// Whether the NF rewrites packets in place (default `false`).
    pub fn modifies_packets(mut self, yes: bool) -> Self {
        self.manifest.modifies_packets = yes;
        self
    }

    /// Whether the NF asks stacks for changes such as `FLOW/TCP/TERMINATE`
    /// (default `false`).
    pub fn requests_stack_actions(mut self, yes: bool) -> Self {
        self.manifest.requests_stack_actions = yes;
        self
    }

    /// The runtime instance to register with (socket
    /// `/run/ubox/<instance>.sock`).
    pub fn instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_owned());
        self
    }

    /// The control socket path; wins over [`instance`](Self::instance).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Where a command line pointed the NF: `--instance` and/or `--socket`,
    /// either may be absent (the socket wins; with neither, the
    /// environment and then the default instance decide).
    pub fn target(mut self, instance: Option<&str>, socket: Option<&Path>) -> Self {
        if let Some(i) = instance {
            self = self.instance(i);
        }
        if let Some(s) = socket {
            self = self.socket(s);
        }
        self
    }

    /// Whether [`Nf::run`] stops on SIGINT/SIGTERM (default `true`). A
    /// second signal while the first is being handled exits the process.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.handle_signals = yes;
        self
    }

    /// The manifest that [`connect`](Self::connect) will send.
    pub fn manifest(&self) -> &NfManifest {
        &self.manifest
    }

    /// The control socket [`connect`](Self::connect) will use: the
    /// builder's [`socket`](Self::socket), else its
    /// [`instance`](Self::instance), else `$UBOX_SOCKET`, else
    /// `$UBOX_INSTANCE`, else instance `ubox`.
    pub fn socket_path(&self) -> PathBuf {
        resolve_socket(
            self.socket.clone(),
            self.instance.as_deref(),
            std::env::var_os(ENV_SOCKET),
            std::env::var(ENV_INSTANCE).ok(),
        )
    }

    /// Whether [`Nf::run`] moves its thread onto the CPUs the runtime offers
    /// NFs (`runtime.nf_cpus`: by default the CPUs its workers do not
    /// use), so a busy NF never competes with a poll-mode worker for its
    /// core. Default true.
    pub fn pin_to_nf_cpus(mut self, yes: bool) -> Self {
        self.pin = yes;
        self
    }

    /// Called after each re-registration by [`Nf::reconnect`] (so by
    /// [`Nf::run_reconnecting`]), with the new session, before any event of
    /// it is handled. An NF whose state names the runtime's flows (by flow
    /// id, which a restarted runtime hands out anew) forgets them here;
    /// counters it keeps. Not called for the first registration.
    pub fn on_reregister<F>(mut self, hook: F) -> Self
    where
        F: FnMut(&NfSession) + Send + 'static,
    {
        self.on_reregister = Some(Box::new(hook));
        self
    }

    /// How long [`connect_waiting`](Self::connect_waiting) and
    /// [`Nf::run_reconnecting`] wait between attempts: `min` first,
    /// doubling up to `max` (default 50 ms to 1 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        self.backoff = ReconnectBackoff { min, max: max.max(min) };
        self
    }

    /// A handle that stops [`connect_waiting`](Self::connect_waiting), and
    /// then the [`Nf`]'s [`run`](Nf::run) (the same handle as
    /// [`Nf::stop_handle`]).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Registers with the runtime, maps the arena and resolves the rings.
    /// The control connection stays open until the [`Nf`] drops.
    pub fn connect(self) -> Result<Nf, NfError> {
        self.check()?;
        let socket = self.socket_path();
        let attached = attach(&socket, &self.manifest, self.join)?;
        Ok(self.into_nf(socket, attached))
    }

    /// [`connect`](Self::connect), waiting for the runtime while it is
    /// not there (no socket, nobody listening, closed during the
    /// handshake): one log line, then an attempt every 50 ms, backing off
    /// to every second (see [`reconnect_backoff`](Self::reconnect_backoff)).
    /// What waiting cannot mend fails at once: a refusal
    /// ([`NfError::Refused`]), a socket closed to this user, a bad
    /// definition. SIGINT/SIGTERM (with [`handle_signals`](Self::handle_signals))
    /// or the [`stop_handle`](Self::stop_handle) end the wait with
    /// [`NfError::Stopped`].
    pub fn connect_waiting(self) -> Result<Nf, NfError> {
        self.check()?;
        let socket = self.socket_path();
        let _signals = Signals::install(self.handle_signals, &self.stop)?;
        let attached = wait_attach(&socket, &self.manifest, self.join, &self.stop, self.backoff, false)?;
        Ok(self.into_nf(socket, attached))
    }

    fn check(&self) -> Result<(), NfError> {
        let mut seen = std::collections::HashSet::new();
        for s in &self.manifest.subscriptions {
            if !seen.insert(s.event.as_str()) {
                return Err(NfError::Definition(format!(
                    "NF '{}' subscribes to {} twice; use one subscription per type",
                    self.manifest.name, s.event
                )));
            }
        }
        Ok(())
    }

    fn into_nf(self, socket: PathBuf, a: Attached) -> Nf {
        let handlers = self
            .manifest
            .subscriptions
            .iter()
            .zip(&a.subscriptions)
            .zip(self.callbacks)
            .map(|((sub, &type_id), callback)| Handler { path: sub.event.clone(), type_id, callback })
            .collect();
        Nf {
            session: a.session,
            arena: a.arena,
            control: a.control,
            socket,
            dispatch: Dispatch { handlers },
            publications: a.publications,
            modifies: self.manifest.modifies_packets,
            manifest: self.manifest,
            stop: self.stop,
            handle_signals: self.handle_signals,
            pin: self.pin,
            totals: RunSummary::default(),
            on_reregister: self.on_reregister,
            backoff: self.backoff,
            join: self.join,
        }
    }
}

/// What one registration gave: the connection, the session, the mapped
/// arena and the resolved type ids (subscriptions in manifest order).
struct Attached {
    control: UnixStream,
    session: NfSession,
    arena: Arena,
    subscriptions: Vec<EventTypeId>,
    publications: Vec<(String, EventTypeId)>,
}

/// Registers `manifest` on `socket` and maps what the runtime granted.
fn attach(socket: &Path, manifest: &NfManifest, join: api::Join) -> Result<Attached, NfError> {
    let (control, session, files) = register(socket, manifest, join)?;
    let socket = socket.to_owned();
    if session.subscriptions.len() != manifest.subscriptions.len() {
        return Err(NfError::Protocol {
            socket,
            what: format!(
                "{} subscriptions sent, {} resolved type ids received",
                manifest.subscriptions.len(),
                session.subscriptions.len()
            ),
        });
    }
    let mut subscriptions = Vec::with_capacity(session.subscriptions.len());
    for (sub, &raw) in manifest.subscriptions.iter().zip(&session.subscriptions) {
        let type_id = EventTypeId::from_raw(raw).ok_or_else(|| NfError::Protocol {
            socket: socket.clone(),
            what: format!("subscription {} resolved to malformed type id {raw:#018x}", sub.event),
        })?;
        subscriptions.push(type_id);
    }
    let mut publications = Vec::with_capacity(manifest.publications.len());
    for (path, &raw) in manifest.publications.iter().zip(&session.publications) {
        let type_id = EventTypeId::from_raw(raw).ok_or_else(|| NfError::Protocol {
            socket: socket.clone(),
            what: format!("publication {path} resolved to malformed type id {raw:#018x}"),
        })?;
        publications.push((path.clone(), type_id));
    }
    // Other processes of the same user (other NFs) may not read or write
    // our memory through /proc/PID/mem or ptrace: only root may. Before
    // anything is mapped. (It also means no core dumps; run under a
    // debugger started as root.)
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("NF '{}': cannot make the process non-dumpable: {e}", manifest.name);
    }
    // What the runtime granted: its arena file and packet region
    // (read-only, or the region read-write if we modify packets) and our
    // own channels; nothing else of the arena is in this process.
    let channels: Vec<u32> = session.rings.iter().map(|r| r.channel).collect();
    let arena =
        Grant::from_files(files, &channels).and_then(|g| Arena::attach(g, &session.arena)).map_err(NfError::Arena)?;
    let session_err = |what: String| NfError::Session { arena: session.arena.clone(), what };
    if manifest.modifies_packets && !arena.data_writable() {
        return Err(session_err("the runtime gave the packet region read-only to an NF that modifies packets".into()));
    }
    if session.rings.is_empty() {
        return Err(session_err("no rings: the session gives the NF no worker to serve".into()));
    }
    for r in &session.rings {
        arena.channel(r.channel).map_err(|e| session_err(format!("worker {}: {e}", r.worker)))?;
    }
    arena.slot_pool().map_err(|e| session_err(format!("slot pool: {e}")))?;
    control.set_read_timeout(None).ok();
    control.set_nonblocking(true).map_err(|source| NfError::Control {
        socket: socket.clone(),
        what: "making the connection non-blocking",
        source,
    })?;
    Ok(Attached { control, session, arena, subscriptions, publications })
}

/// Whether waiting may mend `e`: the runtime is not there (yet), or is
/// going away or starting. With `registered` (the manifest was accepted
/// once, by this or an earlier runtime), a refusal is waited out too: the
/// types it names may not be declared yet (their NF has not registered
/// again), or the runtime still counts the NF's previous session.
fn transient(e: &NfError, registered: bool) -> bool {
    match e {
        NfError::Connect { .. }
        | NfError::Control { .. }
        | NfError::Protocol { .. }
        | NfError::Arena(_)
        | NfError::Session { .. }
        | NfError::RuntimeGone { .. } => true,
        NfError::Refused { .. } => registered,
        NfError::Definition(_) | NfError::PermissionDenied { .. } | NfError::Signals(_) | NfError::Stopped { .. } => {
            false
        }
    }
}

/// Tries [`attach`] until it works, a non-[`transient`] error, or a stop.
/// Logs once when it starts waiting (and once more for a refusal, with
/// the runtime's reason).
fn wait_attach(
    socket: &Path,
    manifest: &NfManifest,
    join: api::Join,
    stop: &StopHandle,
    backoff: ReconnectBackoff,
    registered: bool,
) -> Result<Attached, NfError> {
    let mut delay = backoff.min;
    let mut said_waiting = registered; // run_reconnecting said it already
    let mut said_refused = false;
    loop {
        if stop.is_stopped() {
            return Err(NfError::Stopped { socket: socket.to_owned() });
        }
        match attach(socket, manifest, join) {
            Ok(a) => return Ok(a),
            Err(e) if !transient(&e, registered) => return Err(e),
            Err(e) => {
                if let NfError::Refused { message, .. } = &e {
                    if !said_refused {
                        tracing::warn!(
                            "NF '{}': the runtime refused it for now: {message}; trying again",
                            manifest.name
                        );
                        said_refused = true;
                    }
                } else if !said_waiting {
                    tracing::warn!("NF '{}': waiting for the runtime: {e}", manifest.name);
                    said_waiting = true;
                }
            }
        }
        if !sleep_unless_stopped(delay, stop) {
            return Err(NfError::Stopped { socket: socket.to_owned() });
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// Sleeps `d` in short naps, false as soon as a stop is asked.
fn sleep_unless_stopped(d: Duration, stop: &StopHandle) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.is_stopped() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// The wait between two attempts to reach the runtime: from `min`,
/// doubling, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReconnectBackoff {
    min: Duration,
    max: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        ReconnectBackoff { min: Duration::from_millis(50), max: Duration::from_secs(1) }
    }
}

/// SIGINT/SIGTERM set the stop flag while this lives (a second signal
/// exits the process); nothing when `handle` is false.
struct Signals(Vec<signal_hook::SigId>);

impl Signals {
    fn install(handle: bool, stop: &StopHandle) -> Result<Signals, NfError> {
        // Dropped on an error: what was installed is uninstalled.
        let mut guard = Signals(Vec::new());
        if handle {
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                // Registered first so that it sees the flag as it was before
                // this signal: a second signal exits the process.
                let exit = signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&stop.0));
                guard.0.push(exit.map_err(NfError::Signals)?);
                guard.0.push(signal_hook::flag::register(sig, Arc::clone(&stop.0)).map_err(NfError::Signals)?);
            }
        }
        Ok(guard)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Socket precedence: explicit path, explicit instance, `$UBOX_SOCKET`,
/// `$UBOX_INSTANCE`, [`DEFAULT_INSTANCE`].
fn resolve_socket(
    socket: Option<PathBuf>,
    instance: Option<&str>,
    env_socket: Option<OsString>,
    env_instance: Option<String>,
) -> PathBuf {
    if let Some(s) = socket {
        return s;
    }
    if let Some(i) = instance {
        return api::default_socket(i);
    }
    if let Some(s) = env_socket.filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    let instance = env_instance.filter(|i| !i.is_empty()).unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
    api::default_socket(&instance)
}

/// The handshake: one request line, one response line.
fn register(
    socket: &Path,
    manifest: &NfManifest,
    join: api::Join,
) -> Result<(UnixStream, NfSession, Vec<std::fs::File>), NfError> {
    let control = UnixStream::connect(socket).map_err(|source| {
        if source.kind() == io::ErrorKind::PermissionDenied {
            NfError::PermissionDenied {
                path: socket.into(),
                hint: api::permission_denied(socket, "the control socket"),
            }
        } else {
            NfError::Connect { socket: socket.into(), source }
        }
    })?;
    let ctl_err = |what: &'static str| move |source| NfError::Control { socket: socket.into(), what, source };
    control.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(ctl_err("setting a timeout"))?;
    control.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(ctl_err("setting a timeout"))?;
    let mut line = serde_json::to_string(&Request::Register { manifest: manifest.clone(), join })
        .map_err(|e| NfError::Definition(format!("manifest of '{}' does not serialise: {e}", manifest.name)))?;
    line.push('\n');
    (&control).write_all(line.as_bytes()).map_err(ctl_err("sending the manifest"))?;
    // The answer's first bytes carry the NF's part of the arena (descriptors).
    let (answer, files) = match ubox_shm::pass::read_line_with_files(&control, MAX_ANSWER) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(NfError::Protocol {
                socket: socket.into(),
                what: "the runtime closed the connection during registration".into(),
            })
        }
        r => r.map_err(ctl_err("waiting for the registration answer"))?,
    };
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Registered(session)) => Ok((control, session, files)),
        Ok(Response::Error { message }) => Err(NfError::Refused { name: manifest.name.clone(), message }),
        Ok(other) => {
            Err(NfError::Protocol { socket: socket.into(), what: format!("unexpected answer to register: {other:?}") })
        }
        Err(e) => Err(NfError::Protocol { socket: socket.into(), what: format!("unreadable answer to register: {e}") }),
    }
}

/// Callbacks by type: the most specific subscription that covers the
/// event's type wins.
struct Dispatch {
    handlers: Vec<Handler>,
}

impl Dispatch {
    fn find(&self, t: EventTypeId) -> Option<usize> {
        let mut best: Option<(usize, u8)> = None;
        for (i, h) in self.handlers.iter().enumerate() {
            if t.is_subtype_of(h.type_id) && !matches!(best, Some((_, d)) if h.type_id.depth() <= d) {
                best = Some((i, h.type_id.depth()));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Stops a running [`Nf`] from another thread: [`Nf::run`] answers the
/// events it has popped and returns. Once stopped, `run` returns at once.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the NF to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a stop was asked (by this handle, a clone, or a signal).
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// What one [`Nf::run`] (or, from [`Nf::totals`], every run) handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Events popped and answered.
    pub events: u64,
    /// Answered [`Verdict::Pass`] (including unmatched and bad events).
    pub passed: u64,
    /// Answered [`Verdict::Drop`].
    pub dropped: u64,
    /// Answered [`Verdict::Modified`].
    pub modified: u64,
    /// Events no subscription covered (a runtime bug); answered Pass.
    pub unmatched: u64,
    /// Events whose slot, type id or packet reference was unreadable
    /// (a runtime bug); answered Pass.
    pub bad_events: u64,
    /// Events published (handed to the runtime).
    pub published: u64,
    /// Events a callback asked to publish that could not be sent (no free
    /// event slot).
    pub publish_failed: u64,
}

impl RunSummary {
    fn add(&mut self, o: &RunSummary) {
        self.events += o.events;
        self.passed += o.passed;
        self.dropped += o.dropped;
        self.modified += o.modified;
        self.unmatched += o.unmatched;
        self.bad_events += o.bad_events;
        self.published += o.published;
        self.publish_failed += o.publish_failed;
    }
}

/// What an idle poll loop does next; see [`Backoff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    Spin,
    Yield,
    Sleep(Duration),
}

impl Idle {
    fn run(self) {
        match self {
            Idle::Spin => std::hint::spin_loop(),
            Idle::Yield => std::thread::yield_now(),
            Idle::Sleep(d) => std::thread::sleep(d),
        }
    }
}

/// The adaptive polling policy (documented in the crate docs): spin for
/// [`SPIN_POLLS`](Self::SPIN_POLLS) empty polls, then `yield_now` for
/// [`YIELD_POLLS`](Self::YIELD_POLLS), then sleep from
/// [`MIN_SLEEP`](Self::MIN_SLEEP) doubling up to
/// [`MAX_SLEEP`](Self::MAX_SLEEP). Any event resets it.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    empty: u32,
    sleep: Duration,
}

impl Backoff {
    pub(crate) const SPIN_POLLS: u32 = 1024;
    pub(crate) const YIELD_POLLS: u32 = 64;
    pub(crate) const MIN_SLEEP: Duration = Duration::from_micros(16);
    pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(1);

    pub(crate) fn reset(&mut self) {
        self.empty = 0;
        self.sleep = Duration::ZERO;
    }

    pub(crate) fn next(&mut self) -> Idle {
        if self.empty < Self::SPIN_POLLS {
            self.empty += 1;
            return Idle::Spin;
        }
        if self.empty < Self::SPIN_POLLS + Self::YIELD_POLLS {
            self.empty += 1;
            return Idle::Yield;
        }
        self.sleep = if self.sleep.is_zero() { Self::MIN_SLEEP } else { (self.sleep * 2).min(Self::MAX_SLEEP) };
        Idle::Sleep(self.sleep)
    }

    pub(crate) fn idle(&mut self) {
        self.next().run();
    }
}

/// A registered NF: the open control connection, the mapped arena and the
/// callbacks. Dropping it closes the connection, which the runtime takes as
/// the NF leaving.
pub struct Nf {
    session: NfSession,
    arena: Arena,
    control: UnixStream,
    socket: PathBuf,
    dispatch: Dispatch,
    /// Publishable types by path, from the manifest and the session.
    publications: Vec<(String, EventTypeId)>,
    modifies: bool,
    /// What it registered with (and registers again with).
    manifest: NfManifest,
    stop: StopHandle,
    handle_signals: bool,
    pin: bool,
    totals: RunSummary,
    on_reregister: Option<Hook>,
    backoff: ReconnectBackoff,
    join: api::Join,
}

impl std::fmt::Debug for Nf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subs: Vec<&str> = self.dispatch.handlers.iter().map(|h| h.path.as_str()).collect();
        f.debug_struct("Nf")
            .field("session", &self.session)
            .field("socket", &self.socket)
            .field("subscriptions", &subs)
            .finish_non_exhaustive()
    }
}

impl Nf {
    /// Starts describing an NF named `name` (1 to 64 letters, digits, `-`,
    /// `_` or `.`; the key chains refer to).
    pub fn builder(name: &str) -> NfBuilder {
        NfBuilder::new(name)
    }

    /// The id the runtime gave this NF.
    pub fn id(&self) -> u32 {
        self.session.nf_id
    }

    /// The session the runtime answered with (arena, rings, resolved ids).
    pub fn session(&self) -> &NfSession {
        &self.session
    }

    /// The control socket this NF registered on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A handle that stops [`run`](Self::run) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Counters summed over every [`run`](Self::run) so far, including
    /// runs that ended in an error.
    pub fn totals(&self) -> RunSummary {
        self.totals
    }

    /// Polls every worker's `to_nf` ring, calls the matching callback for
    /// each event, answers it on `from_nf`, until stopped (SIGINT, SIGTERM
    /// or a [`StopHandle`]). Returns what this run handled.
    ///
    /// Fails with [`NfError::RuntimeGone`] when the control connection
    /// closes (checked about every 100 ms).
    pub fn run(&mut self) -> Result<RunSummary, NfError> {
        let _signals = Signals::install(self.handle_signals, &self.stop)?;
        self.pin();
        let mut summary = RunSummary::default();
        let result = self.poll_loop(&mut summary);
        self.totals.add(&summary);
        result.map(|()| summary)
    }

    /// [`run`](Self::run), outliving the runtime: when the control
    /// connection closes (the runtime exited, crashed, restarts, or
    /// declared this NF dead), it logs that once, waits for the runtime
    /// (an attempt every 50 ms, backing off to every second; see
    /// [`NfBuilder::reconnect_backoff`]), registers again with the same
    /// manifest (name, subscriptions, publications), calls the
    /// [`on_reregister`](NfBuilder::on_reregister) hook, logs that it is
    /// back, and polls on. The callbacks, and whatever state they keep,
    /// go on as they were. Returns on SIGINT/SIGTERM or a
    /// [`StopHandle`], the summary covering every session; fails on what
    /// waiting cannot mend (a socket closed to this user; a refusal is
    /// waited out, see [`Nf::reconnect`]).
    pub fn run_reconnecting(&mut self) -> Result<RunSummary, NfError> {
        let _signals = Signals::install(self.handle_signals, &self.stop)?;
        let mut total = RunSummary::default();
        loop {
            self.pin();
            let mut summary = RunSummary::default();
            let result = self.poll_loop(&mut summary);
            self.totals.add(&summary);
            total.add(&summary);
            match result {
                Ok(()) => return Ok(total),
                Err(NfError::RuntimeGone { socket }) => {
                    tracing::warn!(
                        "the runtime at {} went away (control connection closed); waiting for it to come back",
                        socket.display()
                    );
                    let gone = Instant::now();
                    match self.reattach() {
                        Ok(()) => tracing::info!(
                            "registered again as NF {} on {} after {:.1} s",
                            self.session.nf_id,
                            self.socket.display(),
                            gone.elapsed().as_secs_f64()
                        ),
                        Err(NfError::Stopped { .. }) => return Ok(total),
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes this session and registers again with the same manifest,
    /// waiting for the runtime as [`NfBuilder::connect_waiting`] does (a
    /// refusal too: the manifest was accepted before, so the types it
    /// names may only not be declared yet), then calls the
    /// [`on_reregister`](NfBuilder::on_reregister) hook. On an error the
    /// old session is closed all the same: call it again, or drop the NF.
    pub fn reconnect(&mut self) -> Result<(), NfError> {
        let _signals = Signals::install(self.handle_signals, &self.stop)?;
        self.reattach()
    }

    fn reattach(&mut self) -> Result<(), NfError> {
        // Leave the old session first: the runtime (if it is still the
        // same) sees the NF gone, and takes its name back.
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        // Back after the runtime went away: another instance at most (a
        // takeover is done once; taking over again would drain the others).
        let join = if self.join == api::Join::Exclusive { api::Join::Exclusive } else { api::Join::Instance };
        let a = wait_attach(&self.socket, &self.manifest, join, &self.stop, self.backoff, true)?;
        for (h, &type_id) in self.dispatch.handlers.iter_mut().zip(&a.subscriptions) {
            h.type_id = type_id;
        }
        self.publications = a.publications;
        self.session = a.session;
        self.arena = a.arena;
        self.control = a.control;
        if let Some(hook) = self.on_reregister.as_mut() {
            hook(&self.session);
        }
        Ok(())
    }

    fn pin(&self) {
        if self.pin {
            if let Err(e) = pin_thread(&self.session.cpus) {
                // Not fatal: the NF works anywhere, it may only compete
                // with a worker for its core.
                tracing::warn!(
                    "NF '{}': cannot move to the CPUs the runtime offers NFs {:?} ({e}); running where the OS put it",
                    self.session.name,
                    self.session.cpus
                );
            }
        }
    }

    fn poll_loop(&mut self, summary: &mut RunSummary) -> Result<(), NfError> {
        let Nf { session, arena, control, socket, dispatch, stop, publications, modifies, .. } = self;
        let live = Liveness { control, socket, line: Default::default(), exit: Default::default() };
        let mut links = Vec::with_capacity(session.rings.len());
        for r in &session.rings {
            // Checked in connect(); an error here means the arena changed.
            let ch = arena
                .channel(r.channel)
                .map_err(|e| NfError::Session { arena: session.arena.clone(), what: e.to_string() })?;
            links.push(Link {
                worker: r.worker as u8,
                events: ch.desc.consumer(),
                answers: ch.answer.producer(),
                publish: ch.publish.writer(),
            });
        }
        // Idle NFs sleep on the doorbell of their first channel; every
        // worker rings it (futex wake-ups, `runtime.nf_wakeup`).
        let bell = match (session.wakeup, session.rings.first()) {
            (NfWakeup::Futex, Some(r)) => arena.channel(r.channel).ok().map(|c| c.desc.bell()),
            _ => None,
        };
        let pool = arena.slot_pool()?;
        let ctx = Context {
            arena,
            modifies: *modifies,
            publications,
            slot_size: pool.payload_size(),
            outbox: std::cell::RefCell::new(Vec::new()),
        };
        let mut record = vec![0u8; pool.payload_size()];
        let mut burst = [Desc::default(); BURST];
        let mut answers: Vec<Answer> = Vec::with_capacity(BURST * (1 + crate::event::MAX_PUBLISH_PER_EVENT));
        let mut backoff = Backoff::default();
        let mut last_check = Instant::now();
        let mut busy_polls = 0u32;
        while !stop.is_stopped() {
            let mut got = 0;
            for link in &mut links {
                let n = link.events.pop_burst(&mut burst);
                if n == 0 {
                    continue;
                }
                let started = Instant::now();
                // Answers (and publications, each before the answer of the
                // event that caused it) go back in one ring burst.
                answers.clear();
                for d in &burst[..n] {
                    let code = handle(&ctx, &pool, dispatch, link.worker, d, summary);
                    let outgoing = std::mem::take(&mut *ctx.outbox.borrow_mut());
                    for o in outgoing {
                        match publish(&mut link.publish, &o, session.nf_id, link.worker, &mut record) {
                            Some(n) => {
                                summary.published += 1;
                                answers.push(Answer::publish(n));
                            }
                            None => summary.publish_failed += 1,
                        }
                    }
                    answers.push(Answer::verdict(d.cookie, code));
                }
                push_back(&mut link.answers, &answers, &live)?;
                link.events.report(n as u64, started.elapsed().as_nanos() as u64);
                got += n;
            }
            if got > 0 {
                backoff.reset();
                // Hand the core over after every burst: NF processes of a
                // chain often share a core (2 here), and the next NF in the
                // chain needs it now, not at the end of our time slice. With
                // the core to ourselves this returns at once.
                std::thread::yield_now();
                busy_polls = busy_polls.wrapping_add(1);
                if busy_polls % 1024 != 0 {
                    continue;
                }
            } else {
                match (backoff.next(), bell) {
                    (Idle::Sleep(_), Some(bell)) => {
                        // Arm, look once more (a push may have raced the
                        // arming), then sleep until a worker rings, but no
                        // longer than the next liveness check is due.
                        bell.arm();
                        if links.iter_mut().any(|l| l.events.available(1) > 0) {
                            bell.disarm();
                        } else {
                            let due = LIVENESS_EVERY.saturating_sub(last_check.elapsed());
                            bell.wait(due.max(Duration::from_millis(1)));
                        }
                    }
                    (idle, _) => idle.run(),
                }
            }
            if last_check.elapsed() >= LIVENESS_EVERY {
                live.check()?;
                last_check = Instant::now();
            }
            if let Some(reason) = live.exit.borrow().as_deref() {
                tracing::info!("NF '{}': the runtime asked it to exit ({reason}); exiting", session.name);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The NF's end of one worker's channel.
struct Link<'a> {
    worker: u8,
    events: Consumer<'a, Desc>,
    answers: Producer<'a, Answer>,
    publish: PubWriter<'a>,
}

/// Writes an event the callback published into the channel's next publish
/// record (`record`: a scratch buffer of the slot size) and returns the
/// record's number, `None` when every record still waits for the worker.
fn publish(to: &mut PubWriter<'_>, o: &Outgoing, nf_id: u32, worker: u8, record: &mut [u8]) -> Option<u32> {
    let header = EventHeader {
        type_id: o.type_id.raw(),
        flow_id: o.flow_id,
        publisher: nf_id as u16,
        worker,
        side: o.side,
        ..EventHeader::default()
    };
    header.write(record)?;
    let room = record.get_mut(EVENT_HEADER_LEN..)?;
    room.fill(0);
    room.get_mut(..o.payload.len())?.copy_from_slice(&o.payload);
    let n = to.write(record)?;
    // Its answer goes in this burst's answers, which are all pushed (or the
    // NF stops): the record is the worker's from here.
    to.commit();
    Some(n)
}

/// The header a packet descriptor stands for (packet events carry no
/// snapshot, frontier or payload; the runtime publishes them).
fn header_of(d: &Desc, worker: u8) -> EventHeader {
    EventHeader {
        type_id: d.type_id,
        flow_id: d.flow_id,
        pkt_off: d.data,
        pkt_len: u32::from(d.len),
        worker,
        side: d.side,
        seq: d.cookie,
        ..EventHeader::default()
    }
}

/// Reads one event, calls its callback and returns the verdict code.
fn handle(
    ctx: &Context<'_>,
    pool: &SlotPool<'_>,
    dispatch: &mut Dispatch,
    worker: u8,
    d: &Desc,
    summary: &mut RunSummary,
) -> u8 {
    summary.events += 1;
    let (header, payload) = match d.slot() {
        None => (header_of(d, worker), &[][..]),
        Some(slot) => {
            let bytes = pool.payload(SlotIdx(slot)).ok();
            match bytes.and_then(|b| Some((EventHeader::read(b)?, b.get(EVENT_HEADER_LEN..)?))) {
                Some(hp) => hp,
                None => {
                    // Not an allocated slot of this pool: nothing to read.
                    summary.bad_events += 1;
                    summary.passed += 1;
                    return VERDICT_PASS;
                }
            }
        }
    };
    let packet = match header.pkt_len {
        0 => None,
        len => {
            let p = ctx.arena.packet(header.pkt_off, len);
            if p.is_none() {
                summary.bad_events += 1;
            }
            p
        }
    };
    let verdict = match EventTypeId::from_raw(header.type_id) {
        None => {
            summary.bad_events += 1;
            Verdict::Pass
        }
        Some(type_id) => match dispatch.find(type_id) {
            Some(i) => {
                let ev = Event::attached(header, type_id, packet, payload, ctx);
                (dispatch.handlers[i].callback)(&ev)
            }
            None => {
                summary.unmatched += 1;
                Verdict::Pass
            }
        },
    };
    match verdict {
        Verdict::Pass => {
            summary.passed += 1;
            VERDICT_PASS
        }
        Verdict::Drop => {
            summary.dropped += 1;
            VERDICT_DROP
        }
        Verdict::Modified => {
            summary.modified += 1;
            VERDICT_MODIFIED
        }
    }
}

/// Hands answers back in order; waits (backing off) while the ring is full,
/// since the runtime drains it. Never drops one.
fn push_back(answers: &mut Producer<'_, Answer>, vals: &[Answer], live: &Liveness<'_>) -> Result<(), NfError> {
    let mut done = answers.push_burst(vals);
    if done == vals.len() {
        return Ok(());
    }
    let mut backoff = Backoff::default();
    let mut last_check = Instant::now();
    while done < vals.len() {
        let n = answers.push_burst(&vals[done..]);
        done += n;
        if n == 0 {
            backoff.idle();
        }
        if last_check.elapsed() >= LIVENESS_EVERY {
            live.check()?;
            last_check = Instant::now();
        }
    }
    Ok(())
}

/// Moves the calling thread onto `cpus` (nothing when empty, or when the
/// set names no CPU this machine has: the thread then stays where it was).
/// Needs no privilege: a thread may narrow its own affinity within what
/// its cgroup allows; a refusal (a cgroup without those CPUs) is returned
/// and leaves the thread where it was.
fn pin_thread(cpus: &[u32]) -> nix::Result<()> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    let mut any = false;
    for &c in cpus {
        any |= set.set(c as usize).is_ok();
    }
    if any {
        sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    }
    Ok(())
}

/// The non-blocking EOF check on the control connection, and what the
/// runtime sends on it after registering: one JSON line, an exit notice
/// ([`Response::Exit`], the NF was drained or replaced by a release).
struct Liveness<'a> {
    control: &'a UnixStream,
    socket: &'a Path,
    /// A line being read (bounded), and the exit reason once one came.
    line: std::cell::RefCell<Vec<u8>>,
    exit: std::cell::RefCell<Option<String>>,
}

impl Liveness<'_> {
    fn check(&self) -> Result<(), NfError> {
        let mut buf = [0u8; 256];
        loop {
            match (&*self.control).read(&mut buf) {
                Ok(0) => return Err(NfError::RuntimeGone { socket: self.socket.to_owned() }),
                Ok(n) => {
                    let mut line = self.line.borrow_mut();
                    for &b in &buf[..n] {
                        if b != b'\n' {
                            // Anything longer than a notice is not one.
                            if line.len() < 4096 {
                                line.push(b);
                            }
                            continue;
                        }
                        match serde_json::from_slice::<Response>(&line) {
                            Ok(Response::Exit { reason }) => *self.exit.borrow_mut() = Some(reason),
                            _ => tracing::warn!("ignoring an unexpected message from the runtime"),
                        }
                        line.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(NfError::RuntimeGone { socket: self.socket.to_owned() }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ustack::event::{PKT, PKT_TCP, PKT_UDP};

    #[test]
    fn target_applies_what_the_command_line_gave() {
        let b = Nf::builder("t").target(Some("edge"), None);
        assert_eq!(b.socket_path(), api::default_socket("edge"));
        let b = Nf::builder("t").target(Some("edge"), Some(Path::new("/tmp/x.sock")));
        assert_eq!(b.socket_path(), PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn socket_precedence() {
        let p = |s: Option<&str>, i: Option<&str>, es: Option<&str>, ei: Option<&str>| {
            resolve_socket(s.map(PathBuf::from), i, es.map(OsString::from), ei.map(String::from))
        };
        assert_eq!(p(None, None, None, None), PathBuf::from("/run/ubox/ubox.sock"));
        assert_eq!(p(None, None, None, Some("lab")), PathBuf::from("/run/ubox/lab.sock"));
        assert_eq!(p(None, None, Some("/tmp/x.sock"), Some("lab")), PathBuf::from("/tmp/x.sock"));
        assert_eq!(p(None, Some("a"), Some("/tmp/x.sock"), None), PathBuf::from("/run/ubox/a.sock"));
        assert_eq!(p(Some("/s"), Some("a"), Some("/tmp/x.sock"), None), PathBuf::from("/s"));
        assert_eq!(p(None, None, Some(""), Some("")), PathBuf::from("/run/ubox/ubox.sock"));
    }

    #[test]
    fn backoff_spins_then_yields_then_sleeps_up_to_a_millisecond() {
        let mut b = Backoff::default();
        for _ in 0..Backoff::SPIN_POLLS {
            assert_eq!(b.next(), Idle::Spin);
        }
        for _ in 0..Backoff::YIELD_POLLS {
            assert_eq!(b.next(), Idle::Yield);
        }
        assert_eq!(b.next(), Idle::Sleep(Backoff::MIN_SLEEP));
        assert_eq!(b.next(), Idle::Sleep(Backoff::MIN_SLEEP * 2));
        let last = (0..20).map(|_| b.next()).last();
        assert_eq!(last, Some(Idle::Sleep(Backoff::MAX_SLEEP)));
        b.reset();
        assert_eq!(b.next(), Idle::Spin);
    }

    #[test]
    fn most_specific_subscription_wins() {
        let h = |type_id| Handler { path: String::new(), type_id, callback: Box::new(|_: &Event<'_>| Verdict::Pass) };
        let d = Dispatch { handlers: vec![h(PKT), h(PKT_TCP)] };
        assert_eq!(d.find(PKT_TCP), Some(1));
        assert_eq!(d.find(PKT_UDP), Some(0));
        assert_eq!(d.find(ustack::event::FLOW), None);
        let d = Dispatch { handlers: vec![h(PKT_TCP), h(PKT)] };
        assert_eq!(d.find(PKT_TCP), Some(0));
        assert_eq!(d.find(PKT), Some(1));
    }
}
