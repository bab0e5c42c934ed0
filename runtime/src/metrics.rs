//! The Prometheus endpoint (`[metrics] listen`): a small HTTP thread
//! (`tiny_http`) serving `GET /metrics` in the text format of
//! [`controller::metrics::render`], and 404 for any other path.
//!
//! The thread reads no counter itself. For each scrape it asks the main
//! loop, over a bounded channel, for the same [`Stats`] value `uboxctl
//! stats` gets; the main loop answers between its control polls
//! ([`MetricsServer::answer`], as it answers the control socket's
//! requests), and the thread renders it. A main loop that does not answer
//! within the wait (busy registering an NF, or stopping) gets the scrape a
//! 503. So a scrape costs the data path what `uboxctl stats` costs: relaxed
//! loads of the workers' single-writer counters, by the main lcore.
//!
//! The listener is bound before EAL starts ([`Endpoint::bind`], so an
//! address in use is a one-line error at start-up), and the threads are
//! started on the main lcore ([`Endpoint::start`]), so they inherit its
//! CPU and never take a worker's.
//!
//! This module must not touch the data path, DPDK, or the counters.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use controller::api::Stats;

/// How long a scrape waits for the main loop before it gets a 503.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Scrapes waiting for the main loop at most (more get a 503 at once).
const PENDING: usize = 4;

/// The bound listener, not yet serving.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (`metrics.listen`); the error is one line naming the
    /// key and the fix.
    pub fn bind(addr: SocketAddr) -> Result<Endpoint, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
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
            format!("metrics.listen = \"{addr}\": cannot listen: {e}: {fix}")
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Endpoint { listener, addr })
    }

    /// The address bound (its port, when the config gave 0 in a test).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving: tiny_http's accept thread and ours, which waits up
    /// to `wait` for the main loop's answer to each scrape.
    pub fn start(self, wait: Duration) -> Result<MetricsServer, String> {
        let addr = self.addr;
        let server = tiny_http::Server::from_listener(self.listener, None)
            .map_err(|e| format!("metrics.listen = \"{addr}\": cannot serve: {e}"))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let (asks_tx, asks) = mpsc::sync_channel(PENDING);
        let thread = std::thread::Builder::new()
            .name("ubox-metrics".into())
            .spawn({
                let server = Arc::clone(&server);
                let stop = Arc::clone(&stop);
                move || serve(&server, &asks_tx, &stop, wait)
            })
            .map_err(|e| format!("metrics: cannot start its thread: {e}"))?;
        Ok(MetricsServer { addr, asks, server, stop, thread: Some(thread) })
    }
}

/// The endpoint while it serves; stops (and joins its thread) when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    /// Scrapes waiting for the main loop: where to send its `Stats`.
    asks: Receiver<SyncSender<Stats>>,
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the scrapes waiting, all with one `stats()` (called only when
    /// some wait: one `try_recv` otherwise). For the main loop, between its
    /// control polls.
    pub fn answer(&self, stats: impl FnOnce() -> Stats) {
        let Ok(first) = self.asks.try_recv() else { return };
        let st = stats();
        for reply in self.asks.try_iter() {
            // A scrape that gave up waiting has dropped its end: nothing to do.
            let _ = reply.try_send(st.clone());
        }
        let _ = first.try_send(st);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP thread: one request at a time (tiny_http reads them on its own
/// threads).
fn serve(server: &tiny_http::Server, asks: &SyncSender<SyncSender<Stats>>, stop: &AtomicBool, wait: Duration) {
    while !stop.load(Ordering::Acquire) {
        let request = match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("metrics endpoint: {e}: it serves no more scrapes");
                return;
            }
        };
        let (status, content_type, body) = reply(request.method(), request.url(), asks, wait);
        let header =
            tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("ASCII header");
        let mut response = tiny_http::Response::from_string(body).with_status_code(status).with_header(header);
        if status == 405 {
            response.add_header(tiny_http::Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..]).expect("ASCII header"));
        }
        // A client gone before its answer is its business.
        let _ = request.respond(response);
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Status, content type and body for a request.
fn reply(
    method: &tiny_http::Method,
    url: &str,
    asks: &SyncSender<SyncSender<Stats>>,
    wait: Duration,
) -> (u16, &'static str, String) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if path != "/metrics" {
        return (404, TEXT, format!("not found: {path}: the metrics are at /metrics\n"));
    }
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return (405, TEXT, format!("method {method} not allowed: GET /metrics\n"));
    }
    let (tx, rx) = mpsc::sync_channel(1);
    match asks.try_send(tx) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return (503, TEXT, format!("{PENDING} scrapes already wait for the runtime's main loop: try again\n"))
        }
        Err(TrySendError::Disconnected(_)) => return (503, TEXT, "the runtime is stopping\n".to_string()),
    }
    match rx.recv_timeout(wait) {
        Ok(stats) => (200, controller::metrics::CONTENT_TYPE, controller::metrics::render(&stats)),
        Err(_) => (
            503,
            TEXT,
            format!(
                "the runtime's main loop did not answer within {} ms (busy or stopping): try again\n",
                wait.as_millis()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;

    fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: ").or_else(|| l.strip_prefix("content-type: ")))
            .unwrap_or("")
            .to_string();
        (status, ctype, body.to_string())
    }

    fn local() -> Endpoint {
        Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap()
    }

    #[test]
    fn serves_the_main_loops_stats_at_metrics_only() {
        let ep = local();
        let addr = ep.addr();
        let m = ep.start(Duration::from_secs(5)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        // The "main loop": answers between its polls, as the runtime's does.
        let main = std::thread::spawn({
            let done = Arc::clone(&done);
            move || {
                let mut answered = 0;
                while !done.load(Ordering::Acquire) {
                    m.answer(|| {
                        answered += 1;
                        Stats { instance: "t\"1".into(), uptime_ms: 1500, ..Default::default() }
                    });
                    std::thread::sleep(Duration::from_millis(20));
                }
                answered
            }
        });
        let (status, ctype, body) = get(addr, "GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("ubox_info{instance=\"t\\\"1\",") && body.contains("\nubox_uptime_seconds 1.5\n"),
            "{body}"
        );
        let (status, _, body) = get(addr, "GET", "/metrics?x=1");
        assert_eq!(status, 200, "{body}");
        let (status, _, body) = get(addr, "HEAD", "/metrics");
        assert_eq!((status, body.as_str()), (200, ""));
        let (status, _, body) = get(addr, "GET", "/");
        assert_eq!(status, 404);
        assert!(body.contains("/metrics"), "{body}");
        assert_eq!(get(addr, "GET", "/metricsx").0, 404);
        assert_eq!(get(addr, "POST", "/metrics").0, 405);
        done.store(true, Ordering::Release);
        assert_eq!(main.join().unwrap(), 3, "one Stats per scrape that reached the main loop");
    }

    #[test]
    fn a_main_loop_that_does_not_answer_gets_the_scrape_a_503() {
        let ep = local();
        let addr = ep.addr();
        let m = ep.start(Duration::from_millis(300)).unwrap();
        let t = Instant::now();
        let (status, _, body) = get(addr, "GET", "/metrics");
        assert_eq!(status, 503);
        assert!(body.contains("did not answer within 300 ms"), "{body}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // A late answer for a scrape that gave up goes nowhere, harmlessly.
        m.answer(Stats::default);
        drop(m);
        // tiny_http's accept thread lets go of the socket a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "still listening after the server was dropped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn an_address_in_use_is_one_line_naming_the_key() {
        let ep = local();
        let e = Endpoint::bind(ep.addr()).err().unwrap();
        assert!(e.starts_with(&format!("metrics.listen = \"{}\": cannot listen: ", ep.addr())), "{e}");
        assert!(e.contains("another process listens there") && !e.contains('\n'), "{e}");
        let e = Endpoint::bind("192.0.2.1:9417".parse().unwrap()).err().unwrap();
        assert!(e.contains("no interface of this machine has that address"), "{e}");
    }
}
