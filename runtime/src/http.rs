//! The runtime's HTTP side: the Prometheus endpoint (`[metrics] listen`,
//! [`crate::metrics`]) and the live web view (`[web] listen`,
//! [`crate::web`]), both read-only, served by `hyper` (HTTP/1.1) on one
//! thread running a current-thread `tokio` runtime. The same address for
//! both is one socket serving both; two addresses are two sockets served by
//! the same thread.
//!
//! Nothing here reads a counter. A request that needs numbers asks the main
//! loop, over a bounded channel, for a [`Snapshot`]: the same [`Stats`]
//! value `uboxctl stats` gets, and the chains in force. The main loop
//! answers between its control polls ([`HttpServer::answer`]: one
//! `try_recv` when nobody asks, one snapshot for all who wait when some
//! do), never waiting on this thread. A main loop that does not answer
//! within the wait (busy registering an NF, or stopping) gets the request a
//! 503. So a request costs the data path what `uboxctl stats` costs:
//! relaxed loads of the workers' single-writer counters, by the main lcore.
//!
//! Bounds, whatever clients do: at most [`MAX_CONNECTIONS`] connections
//! (more get a canned 503 and are closed at once), [`MAX_REQUEST_HEAD`]
//! bytes of request line and headers (431 beyond), the head within
//! [`HEAD_TIMEOUT`] and the whole exchange within [`CONNECTION_DEADLINE`]
//! (then the connection is closed), one request per connection (no
//! keep-alive to hold a slot), no request body read. Only GET and HEAD.
//!
//! The listeners are bound before EAL starts ([`Endpoints::bind`], so an
//! address in use is a one-line error at start-up), and the thread is
//! started on the main lcore ([`Endpoints::start`]), so it inherits its CPU
//! and never takes a worker's.
//!
//! This module must not touch the data path, DPDK, or the counters.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use controller::api::Stats;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::web;

/// How long a request waits for the main loop before it gets a 503.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections open at once, over all listeners; more are refused.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections over the limit answered 503 at once (for a second at
/// most each); beyond these, closed without a word.
pub const MAX_REFUSALS: usize = 16;
/// Bytes of request line and headers (hyper's smallest buffer).
pub const MAX_REQUEST_HEAD: usize = 8192;
/// Time for a client to send its request line and headers.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole connection: request, the main loop's answer, response.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// What the main loop hands a request: the counters of `uboxctl stats`
/// and the chains in force, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub stats: Stats,
    pub chains: web::Chains,
}

/// Which paths a listener serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// `/metrics`.
    pub metrics: bool,
    /// `/` (the page) and `/api/view` (its JSON).
    pub web: bool,
}

impl Routes {
    /// The config keys that gave this listener its address.
    fn keys(self) -> &'static str {
        match (self.metrics, self.web) {
            (true, true) => "metrics.listen and web.listen",
            (false, true) => "web.listen",
            _ => "metrics.listen",
        }
    }

    /// The paths served, for a 404's text.
    fn paths(self) -> &'static str {
        match (self.metrics, self.web) {
            (true, true) => "/ (the web view), /api/view (its JSON) and /metrics",
            (false, true) => "/ (the web view) and /api/view (its JSON)",
            _ => "/metrics",
        }
    }
}

/// The bound listeners, not yet serving.
pub struct Endpoints {
    listeners: Vec<(TcpListener, SocketAddr, Routes)>,
}

impl Endpoints {
    /// Binds `metrics.listen` and `web.listen` (one socket when they are
    /// the same address); `None` when neither is given. The error is one
    /// line naming the key and the fix.
    pub fn bind(metrics: Option<SocketAddr>, web: Option<SocketAddr>) -> Result<Option<Endpoints>, String> {
        let mut want: Vec<(SocketAddr, Routes)> = Vec::new();
        if let Some(a) = metrics {
            want.push((a, Routes { metrics: true, web: false }));
        }
        if let Some(a) = web {
            match want.iter_mut().find(|(m, _)| *m == a && a.port() != 0) {
                Some((_, r)) => r.web = true,
                None => want.push((a, Routes { metrics: false, web: true })),
            }
        }
        if want.is_empty() {
            return Ok(None);
        }
        let mut listeners = Vec::new();
        for (addr, routes) in want {
            let l = bind_one(addr, routes.keys())?;
            let bound = l.local_addr().unwrap_or(addr);
            listeners.push((l, bound, routes));
        }
        Ok(Some(Endpoints { listeners }))
    }

    /// The addresses bound (their ports, when a test gave 0) and what each
    /// serves.
    pub fn addrs(&self) -> Vec<(SocketAddr, Routes)> {
        self.listeners.iter().map(|(_, a, r)| (*a, *r)).collect()
    }

    /// Starts serving on a thread of its own, which waits up to `wait` for
    /// the main loop's answer to each request that needs one.
    pub fn start(self, wait: Duration) -> Result<HttpServer, String> {
        let addrs = self.addrs();
        for (l, a, r) in &self.listeners {
            l.set_nonblocking(true).map_err(|e| format!("{} = \"{a}\": cannot serve: {e}", r.keys()))?;
        }
        let (asks_tx, asks) = mpsc::sync_channel(MAX_CONNECTIONS);
        let shared = Arc::new(Shared {
            asks: asks_tx,
            wait,
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS)),
            rates: Mutex::new(web::Rates::default()),
            counts: Counts::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("http: cannot make its runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("ubox-http".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || serve(rt, self.listeners, shared, stopped)
            })
            .map_err(|e| format!("http: cannot start its thread: {e}"))?;
        Ok(HttpServer { addrs, asks, shared, stop: Some(stop), thread: Some(thread) })
    }
}

fn bind_one(addr: SocketAddr, keys: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        let fix = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another process listens there (ss -ltnp 'sport = :{}' names it): stop it or pick another port",
                addr.port()
            ),
            std::io::ErrorKind::AddrNotAvailable => {
                "no interface of this machine has that address: use 127.0.0.1 or one of `ip -br addr`".to_string()
            }
            _ => "pick another address".to_string(),
        };
        format!("{keys} = \"{addr}\": cannot listen: {e}: {fix}")
    })
}

/// The server while it serves; stops (and joins its thread) when dropped.
pub struct HttpServer {
    addrs: Vec<(SocketAddr, Routes)>,
    /// Requests waiting for the main loop: where to send its snapshot.
    asks: Receiver<oneshot::Sender<Arc<Snapshot>>>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn addrs(&self) -> &[(SocketAddr, Routes)] {
        &self.addrs
    }

    /// Answers the requests waiting, all with one `snapshot()` (called
    /// only when some wait: one `try_recv` otherwise). For the main loop,
    /// between its control polls; never blocks.
    pub fn answer(&self, snapshot: impl FnOnce() -> Snapshot) {
        let Ok(first) = self.asks.try_recv() else { return };
        let snap = Arc::new(snapshot());
        for reply in self.asks.try_iter() {
            // A request that gave up waiting has dropped its end: nothing to do.
            let _ = reply.send(Arc::clone(&snap));
        }
        let _ = first.send(snap);
    }

    /// Connections accepted and refused (at [`MAX_CONNECTIONS`]) so far.
    pub fn connections(&self) -> (u64, u64) {
        (self.shared.counts.accepted.load(Ordering::Relaxed), self.shared.counts.refused.load(Ordering::Relaxed))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// What the connections share.
struct Shared {
    asks: SyncSender<oneshot::Sender<Arc<Snapshot>>>,
    wait: Duration,
    connections: Arc<Semaphore>,
    /// Connections over the limit being told so ([`MAX_REFUSALS`]).
    refusals: Arc<Semaphore>,
    /// The web view's earlier snapshots, for its rates.
    rates: Mutex<web::Rates>,
    counts: Counts,
}

impl Shared {
    /// A fresh snapshot from the main loop, or the 503 to answer.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, Reply> {
        let (tx, rx) = oneshot::channel();
        match self.asks.try_send(tx) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Reply::text(
                    503,
                    format!("{MAX_CONNECTIONS} requests already wait for the runtime's main loop: try again\n"),
                ))
            }
            Err(TrySendError::Disconnected(_)) => return Err(Reply::text(503, "the runtime is stopping\n".into())),
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(snap)) => Ok(snap),
            Ok(Err(_)) => Err(Reply::text(503, "the runtime is stopping\n".into())),
            Err(_) => Err(Reply::text(
                503,
                format!(
                    "the runtime's main loop did not answer within {} ms (busy or stopping): try again\n",
                    self.wait.as_millis()
                ),
            )),
        }
    }
}

/// The thread: accept loops on every listener until told to stop; then the
/// runtime, its connections and the listeners are dropped (closed).
fn serve(
    rt: tokio::runtime::Runtime,
    listeners: Vec<(TcpListener, SocketAddr, Routes)>,
    shared: Arc<Shared>,
    stopped: oneshot::Receiver<()>,
) {
    rt.block_on(async move {
        for (l, addr, routes) in listeners {
            let l = match tokio::net::TcpListener::from_std(l) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!("{} = \"{addr}\": cannot serve: {e}", routes.keys());
                    continue;
                }
            };
            tokio::spawn(accept(l, routes, Arc::clone(&shared)));
        }
        // Until the server is dropped (or, should that ever be, forgotten).
        let _ = stopped.await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The canned answer to a connection over the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 38\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections open: try again\r\n";

async fn accept(listener: tokio::net::TcpListener, routes: Routes, shared: Arc<Shared>) {
    let mut last_error = None;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: once per kind, then a pause so
                // that the loop does not spin.
                if last_error != Some(e.kind()) {
                    tracing::warn!("{}: cannot accept a connection: {e}", routes.keys());
                    last_error = Some(e.kind());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            // The 503 on a slot of its own, while there is one; else closed.
            if let Ok(slot) = Arc::clone(&shared.refusals).try_acquire_owned() {
                tokio::spawn(refuse(stream, slot));
            }
            continue;
        };
        shared.counts.accepted.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .keep_alive(false);
            let service = hyper::service::service_fn(|req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&req, routes, &shared).await.into_response()) }
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A client too slow for the deadline is dropped, connection and all.
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(permit);
        });
    }
}

/// Answers a connection over the limit with [`BUSY`] within a second:
/// writes it, closes its side, and reads (and drops) what the client sent,
/// up to a request head's worth, so that closing does not reset the
/// connection before the client read the answer.
async fn refuse(mut stream: tokio::net::TcpStream, _slot: OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        let mut left = MAX_REQUEST_HEAD;
        while left > 0 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A response before it is encoded.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(header::HeaderName, &'static str)>,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    pub(crate) fn text(status: u16, body: String) -> Reply {
        Reply { status, content_type: TEXT, body: body.into(), headers: Vec::new() }
    }

    pub(crate) fn new(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply { status: 200, content_type, body: body.into(), headers: Vec::new() }
    }

    /// The response (hyper leaves the body out for HEAD).
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(self.body));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        // Counters change all the time: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        for (k, v) in self.headers {
            h.insert(k, HeaderValue::from_static(v));
        }
        r
    }
}

async fn handle(req: &Request<Incoming>, routes: Routes, shared: &Shared) -> Reply {
    #[derive(PartialEq)]
    enum Route {
        Metrics,
        Page,
        View,
    }
    let path = req.uri().path();
    let route = match path {
        "/metrics" if routes.metrics => Route::Metrics,
        "/" | "/index.html" if routes.web => Route::Page,
        "/api/view" if routes.web => Route::View,
        _ => return Reply::text(404, format!("not found: {path}: this address serves {}\n", routes.paths())),
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = Reply::text(405, format!("method {} not allowed: GET {path} (read-only)\n", req.method()));
        r.headers.push((header::ALLOW, "GET, HEAD"));
        return r;
    }
    match route {
        Route::Page => web::page(),
        Route::Metrics => match shared.snapshot().await {
            Ok(snap) => crate::metrics::reply(&snap.stats),
            Err(r) => r,
        },
        Route::View => match shared.snapshot().await {
            Ok(snap) => {
                let (accepted, refused) =
                    (shared.counts.accepted.load(Ordering::Relaxed), shared.counts.refused.load(Ordering::Relaxed));
                let mut rates = shared.rates.lock().unwrap_or_else(|e| e.into_inner());
                web::view_reply(&mut rates, &snap, accepted, refused)
            }
            Err(r) => r,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    use super::*;

    /// Status, headers (lower-cased names) and body of one raw exchange.
    pub(crate) fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    pub(crate) fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<(String, String)>, String) {
        exchange(addr, format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
    }

    pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    pub(crate) fn local(metrics: bool, web: bool) -> Endpoints {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Endpoints::bind(metrics.then_some(a), web.then_some(a)).unwrap().unwrap()
    }

    /// A stand-in for the runtime's main loop: answers between its "polls"
    /// with the snapshots `make` gives, until dropped; counts its answers.
    pub(crate) struct MainLoop {
        done: Arc<AtomicBool>,
        thread: Option<JoinHandle<(HttpServer, usize)>>,
    }

    impl MainLoop {
        pub(crate) fn start(server: HttpServer, mut make: impl FnMut(usize) -> Snapshot + Send + 'static) -> MainLoop {
            let done = Arc::new(AtomicBool::new(false));
            let thread = std::thread::spawn({
                let done = Arc::clone(&done);
                move || {
                    let mut answered = 0;
                    while !done.load(Ordering::Acquire) {
                        server.answer(|| {
                            answered += 1;
                            make(answered)
                        });
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    (server, answered)
                }
            });
            MainLoop { done, thread: Some(thread) }
        }

        pub(crate) fn stop(mut self) -> (HttpServer, usize) {
            self.done.store(true, Ordering::Release);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    #[test]
    fn one_address_for_both_is_one_socket_serving_both() {
        let a: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(Endpoints::bind(None, None).unwrap().is_none());
        let ep = Endpoints::bind(Some(a), Some(a)).unwrap().unwrap();
        // Port 0 (tests only) is two sockets; a real port is one.
        assert_eq!(ep.addrs().len(), 2);
        let port = ep.addrs()[0].0;
        drop(ep);
        let ep = Endpoints::bind(Some(port), Some(port)).unwrap().unwrap();
        assert_eq!(ep.addrs(), vec![(port, Routes { metrics: true, web: true })]);
        let addr = port;
        let main = MainLoop::start(ep.start(Duration::from_secs(5)).unwrap(), |_| Snapshot::default());
        assert_eq!(get(addr, "GET", "/metrics").0, 200);
        assert_eq!(get(addr, "GET", "/").0, 200);
        assert_eq!(get(addr, "GET", "/api/view").0, 200);
        let (status, _, body) = get(addr, "GET", "/nope");
        assert_eq!(status, 404);
        assert!(body.contains("/ (the web view), /api/view (its JSON) and /metrics"), "{body}");
        main.stop();
    }

    #[test]
    fn a_main_loop_that_does_not_answer_gets_the_request_a_503() {
        let ep = local(true, false);
        let addr = ep.addrs()[0].0;
        let m = ep.start(Duration::from_millis(300)).unwrap();
        let t = Instant::now();
        let (status, _, body) = get(addr, "GET", "/metrics");
        assert_eq!(status, 503);
        assert!(body.contains("did not answer within 300 ms"), "{body}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // A late answer for a request that gave up goes nowhere, harmlessly.
        m.answer(Snapshot::default);
        drop(m);
        // Dropped: nothing listens any more.
        assert!(TcpStream::connect(addr).is_err(), "still listening after the server was dropped");
    }

    #[test]
    fn an_address_in_use_is_one_line_naming_the_key() {
        let ep = local(true, false);
        let a = ep.addrs()[0].0;
        let e = Endpoints::bind(Some(a), None).err().unwrap();
        assert!(e.starts_with(&format!("metrics.listen = \"{a}\": cannot listen: ")), "{e}");
        assert!(e.contains("another process listens there") && !e.contains('\n'), "{e}");
        let e = Endpoints::bind(None, Some(a)).err().unwrap();
        assert!(e.starts_with(&format!("web.listen = \"{a}\": cannot listen: ")), "{e}");
        let e = Endpoints::bind(Some(a), Some(a)).err().unwrap();
        assert!(e.starts_with(&format!("metrics.listen and web.listen = \"{a}\"")), "{e}");
        let e = Endpoints::bind(None, Some("192.0.2.1:9418".parse().unwrap())).err().unwrap();
        assert!(e.contains("no interface of this machine has that address"), "{e}");
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_and_slow_clients_dropped() {
        let ep = local(false, true);
        let addr = ep.addrs()[0].0;
        let main = MainLoop::start(ep.start(Duration::from_secs(5)).unwrap(), |_| Snapshot::default());
        // Hold every slot with clients that never finish their request.
        let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let (status, headers, body) = get(addr, "GET", "/");
        assert_eq!(status, 503, "{body}");
        assert_eq!(header(&headers, "retry-after"), "1");
        assert!(body.contains("too many connections"), "{body}");
        assert_eq!(header(&headers, "content-length"), body.len().to_string());
        assert!(t.elapsed() < Duration::from_secs(2), "refused at once: {:?}", t.elapsed());
        // The slow clients are closed after HEAD_TIMEOUT, freeing the slots.
        let mut buf = [0u8; 512];
        for s in &mut idle {
            s.set_read_timeout(Some(HEAD_TIMEOUT * 3)).unwrap();
            let _ = s.read(&mut buf);
        }
        let waited = t.elapsed();
        assert!(waited >= HEAD_TIMEOUT - Duration::from_secs(1) && waited < HEAD_TIMEOUT * 2, "{waited:?}");
        assert_eq!(get(addr, "GET", "/").0, 200, "slots free again");
        let (server, _) = main.stop();
        let (accepted, refused) = server.connections();
        assert_eq!((accepted, refused), (MAX_CONNECTIONS as u64 + 1, 1));
    }

    #[test]
    fn a_request_head_over_the_limit_is_refused() {
        let ep = local(true, false);
        let addr = ep.addrs()[0].0;
        let main = MainLoop::start(ep.start(Duration::from_secs(5)).unwrap(), |_| Snapshot::default());
        let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD * 2));
        let (status, _, _) = exchange(addr, big.as_bytes());
        assert_eq!(status, 431);
        let ok = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD / 2));
        assert_eq!(exchange(addr, ok.as_bytes()).0, 200);
        // A body is never read: the answer comes, the connection closes.
        let (status, headers, _) =
            exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\npartial");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "connection"), "close");
        assert_eq!(exchange(addr, b"NOT HTTP\r\n\r\n").0, 400);
        main.stop();
    }
}
