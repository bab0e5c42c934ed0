//! `http-lb`: the policy NF of the runtime's TCP splicer. It tells the
//! splicer, for each client connection to a VIP, which backend to splice
//! it to, from the connection's first HTTP request.
//!
//! # What it does
//!
//! The splicer accepts a client's connection to the VIP, buffers the
//! first request segment and publishes `FLOW_REQ` (payload
//! [`nf_sdk::FlowReq`]: client, VIP, attempt, reason; the request bytes
//! are the event's packet). `http-lb` parses the request with `httparse`
//! (method, path, `Host`, the header a `hash-header` pool hashes on),
//! routes it by host and path prefix to a pool of backends, picks one
//! backend of the pool and answers by publishing `FLOW_DEST`
//! ([`nf_sdk::FlowDest`]: `DEST_CONNECT` with the backend's address and
//! port, or `DEST_503` / `DEST_RESET` to refuse). Its verdict on the
//! event is always `Pass`. It also subscribes to `FLOW/END`, which the
//! splicer sends for each spliced flow (same flow id, the backend as
//! server), to keep its count of open connections per backend. It never
//! touches packets.
//!
//! # Rules
//!
//! A TOML file (`nfs/http-lb/rules.example.toml` is a commented one):
//!
//! ```toml
//! [[pool]]
//! name = "web"
//! backends = ["10.10.0.11:80", { addr = "10.10.0.12:80", weight = 2 }]
//! balance = "round-robin"     # round-robin | least-connections | hash-client | hash-header
//! # hash_header = "X-User"    # the header hash-header hashes on (required for it)
//! down_ms = 10000             # a backend that failed is skipped this long (0..3600000)
//!
//! [[route]]
//! host = "*.test"             # optional: exact host, or `*.domain` for its subdomains
//! path_prefix = "/api/"       # optional: the path starts with this
//! pool = "web"
//!
//! [default]
//! pool = "web"                # or: reject = "503" | "rst"
//! ```
//!
//! - **Pools.** A name (unique) and 1 to 256 backends, each `"ADDR:PORT"`
//!   (IPv4, or `"[v6]:PORT"`; names are not resolved) or
//!   `{ addr = "ADDR:PORT", weight = N }` with a weight of 1 to 1000
//!   (default 1). IPv4 backends go to the splicer as IPv4-mapped IPv6.
//! - **Routes** are tried in file order and the first that matches wins,
//!   so put the specific ones first. A route matches when every condition
//!   it names holds: `host` compared without port and trailing dot, in any
//!   case (`*.test` matches `a.test` and `a.b.test`, not `test`), and
//!   `path_prefix` a plain string prefix of the path without the query
//!   (`"/api"` matches `/apix` too; write `"/api/"` to avoid that). A route
//!   with neither matches every parsed request. For an absolute-form
//!   target (`GET http://a.test/x`) the host is the target's.
//! - **Default**: where a request goes when no route matches, when the
//!   request line cannot be parsed at all (not HTTP/1, TLS, cut inside the
//!   first line), and when a request is cut short before its `Host` line.
//!   Without a `[default]` these are refused with a 503. `reject = "503"`
//!   answers `HTTP/1.1 503`, `"rst"` resets the connection.
//! - A request cut short by the end of the segment (httparse `Partial`)
//!   is routed on what arrived: its request line and complete header
//!   lines. A complete request without `Host` (HTTP/1.0) only matches
//!   routes without `host`.
//!
//! `http-lb --check FILE` checks a file without connecting to anything:
//! one line `FILE:LINE: what is wrong; how to fix` per problem (unknown
//! pool names, bad addresses or weights, empty or duplicate pools,
//! duplicate backends, unknown balance modes, `hash-header` without
//! `hash_header`, ...), exit status 1; or a one-line summary and 0.
//!
//! # Balancing
//!
//! Per pool, among the backends that are up and not excluded (below):
//!
//! - `round-robin`: smooth weighted round-robin (as nginx does): with
//!   equal weights the backends simply alternate; weights 2 and 1 give
//!   `a b a` in every three connections.
//! - `least-connections`: the fewest open connections per unit of weight;
//!   ties go round. A connection counts as open from the answer until its
//!   `FLOW/END`.
//! - `hash-client`: rendezvous (highest random weight) hashing of the
//!   client's address (not its port): every client has a fixed order of
//!   preference over the backends (64-bit FNV-1a and a SplitMix64 mix,
//!   no seed, so the same on every instance and after a restart) and goes
//!   to the first of its order that is up. A backend that goes down so
//!   moves only its own clients, spread over the others, and they come
//!   back when it does; the other clients stay where they are. Weights
//!   scale a backend's share.
//! - `hash-header`: the same on the value of the `hash_header` request
//!   header (exact bytes, trimmed); requests without it hash on the
//!   client's address (counted).
//!
//! # Passive health
//!
//! There are no probes. When a backend answers the splicer's SYN with RST
//! or not at all, the splicer asks again about the same flow with
//! `attempt > 0`, the reason (`RESET`, `TIMEOUT`) and the failed backend.
//! `http-lb` then marks that backend down for the pool's `down_ms` (in
//! every pool that lists it: health is the server's), counts the failure,
//! and picks another backend of the same pool, excluding every backend
//! this flow already tried. When every remaining backend is down it takes
//! the one that failed longest ago (a new connection too: passive health
//! can be wrong, and trying beats refusing). A retry whose attempt
//! reaches the pool's number of backends is refused with a 503.
//!
//! # The splicer's keep-alive caveat
//!
//! The decision is made once per connection, on its first request: a
//! spliced connection stays with the backend that request picked, and
//! later requests on the same keep-alive connection go there too, whatever
//! their host or path. This differs from HAProxy's `mode http`, which
//! parses every request of a connection and may route each one
//! separately. Clients that need per-request routing must open a
//! connection per route (browsers do for different hosts), or the
//! backends must close connections after each response.
//!
//! # Bounded memory
//!
//! The rules are bounded (1024 pools, 256 backends each, 4096 routes); a
//! request is parsed in place (up to 64 headers, 16 KiB). The flow table
//! (flow id → backend, for `FLOW/END` and retries) holds at most
//! `--max-flows` entries (default 1 Mi) for at most `--flow-ttl-s`
//! (default an hour); the oldest make room. A flow dropped from the table
//! is still counted as open on its backend, as *untracked*, until a
//! `FLOW/END` naming that backend as server comes.
//!
//! # Counters
//!
//! On SIGINT/SIGTERM (or when the runtime goes away) it prints per
//! backend the connections routed, the failures and those open, and the
//! totals (requests, retries, rejects, parse results, flow ends); with
//! `--stats-json FILE` it writes the same as JSON ([`Report`]).
//!
//! It is written only against `nf-sdk`: no DPDK, no `unsafe`.

#![forbid(unsafe_code)]

pub mod balancer;
pub mod flows;
pub mod hash;
pub mod http;
pub mod rules;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nf_sdk::{Event, FlowDest, NfBuilder, Verdict, DEST_CONNECT, DEST_RESET};

pub use balancer::{Balancer, Report};
pub use rules::{Rules, RulesError};

/// The event the splicer asks with.
pub const FLOW_REQ: &str = "FLOW_REQ";
/// The event this NF answers with.
pub const FLOW_DEST: &str = "FLOW_DEST";
/// The event that ends a spliced flow.
pub const FLOW_END: &str = "FLOW/END";

/// The balancer as the NF's callbacks share it, with the clock they use.
#[derive(Debug)]
pub struct Shared {
    balancer: Mutex<Balancer>,
    start: Instant,
}

impl Shared {
    pub fn new(balancer: Balancer) -> Arc<Shared> {
        Arc::new(Shared { balancer: Mutex::new(balancer), start: Instant::now() })
    }

    /// Milliseconds since the NF started (the balancer's clock).
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn lock(&self) -> MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The report as of now.
    pub fn report(&self) -> Report {
        let now = self.now();
        self.lock().report(now)
    }

    /// Answers one `FLOW_REQ` event.
    pub fn on_flow_req(&self, ev: &Event<'_>) {
        let now = self.now();
        let mut lb = self.lock();
        let dest = match ev.flow_req() {
            Some(req) => lb.on_request((ev.worker(), ev.flow_id()), &req, ev.packet().unwrap_or_default(), now),
            None => {
                // No FlowReq: nothing to decide on, but the client waits.
                lb.count_bad_event();
                FlowDest { action: DEST_RESET, ..FlowDest::default() }
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            // `UBOX_LOG=debug`: one line per decision, named by the flow id
            // the runtime's other events about the connection carry.
            let bytes = ev.packet().unwrap_or_default();
            let line = bytes.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(&line[..line.len().min(200)]);
            let to = std::net::Ipv6Addr::from(dest.addr).to_ipv4_mapped();
            tracing::debug!(
                "flow {}:{} \"{}\" -> {}",
                ev.worker(),
                ev.flow_id(),
                line.escape_debug(),
                match (dest.action, to) {
                    (DEST_CONNECT, Some(a)) => format!("{a}:{}", dest.port),
                    (DEST_RESET, _) => "reset".to_string(),
                    _ => "503".to_string(),
                }
            );
        }
        if ev.answer_dest(&dest).is_err() {
            lb.count_publish_error();
        }
    }

    /// Takes one `FLOW/END` event into account.
    pub fn on_flow_end(&self, ev: &Event<'_>) {
        let now = self.now();
        let mut lb = self.lock();
        match ev.flow_end() {
            Some(end) => lb.on_flow_end((ev.worker(), ev.flow_id()), &end, now),
            None => lb.count_bad_event(),
        }
    }
}

/// The load balancer NF on top of `builder`: `FLOW_REQ` answered with
/// `FLOW_DEST`, `FLOW/END` counted; read-only, every verdict `Pass`.
/// Registered again (`--reconnect`), it forgets its flows.
pub fn lb_nf(builder: NfBuilder, shared: Arc<Shared>) -> NfBuilder {
    let (ends, again) = (Arc::clone(&shared), Arc::clone(&shared));
    builder
        .on_reregister(move |_| again.lock().forget_flows())
        .version(env!("CARGO_PKG_VERSION"))
        .modifies_packets(false)
        .publishes(FLOW_DEST)
        .subscribe(FLOW_REQ, move |ev: &Event<'_>| {
            shared.on_flow_req(ev);
            Verdict::Pass
        })
        .subscribe(FLOW_END, move |ev: &Event<'_>| {
            ends.on_flow_end(ev);
            Verdict::Pass
        })
}
