//! [`Balancer`]: the decisions, without I/O.
//!
//! It is fed what the splicer sends (a `FLOW_REQ`: the request bytes, the
//! client, the attempt; a `FLOW/END`) together with the current time in
//! milliseconds, and answers a [`FlowDest`]. It owns the per-backend state
//! (health, balancing cursors, counters) and the [`FlowTable`]; it never
//! looks at a clock or an event slot itself, so tests drive it directly.

use std::fmt::Write as _;
use std::net::SocketAddr;

use nf_sdk::{
    FlowDest, FlowEnd, FlowReq, DEST_503, DEST_CONNECT, DEST_RESET, FLOW_REQ_NEW, FLOW_REQ_RESET, FLOW_REQ_TIMEOUT,
};
use serde::Serialize;

use crate::flows::{Dropped, FlowEntry, FlowKey, FlowTable};
use crate::hash::{fnv1a, hrw_score};
use crate::http::{ParseState, Parser};
use crate::rules::{abi_addr, Balance, Fallback, Reject, RouteConf, Rules};

/// Flows remembered by default (flow id → backend).
pub const DEFAULT_MAX_FLOWS: usize = 1 << 20;
/// How long a flow is remembered by default without its `FLOW/END`.
pub const DEFAULT_FLOW_TTL_MS: u64 = 3_600_000;

/// One backend of one pool: where it is, its health and its counters.
#[derive(Clone, Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
    abi: [u8; 16],
    /// FNV-1a of the ABI address and port: its identity for hashing.
    id_hash: u64,
    /// Skipped until then (ms); 0 = never failed.
    down_until: u64,
    last_failed: Option<u64>,
    /// Smooth weighted round-robin's running weight.
    current: i64,
    /// Connections sent to it.
    pub routed: u64,
    /// Connection attempts that failed (RST or no answer to the SYN).
    pub failures: u64,
    /// Times it was marked down.
    pub marked_down: u64,
    /// Open connections whose flow is in the flow table.
    pub open: u64,
    /// Open connections whose flow left the table (expired or evicted);
    /// their `FLOW/END` is matched by the backend's address.
    pub untracked: u64,
}

impl Backend {
    fn new(addr: SocketAddr, weight: u32) -> Backend {
        let abi = abi_addr(addr.ip());
        let mut id = abi.to_vec();
        id.extend_from_slice(&addr.port().to_be_bytes());
        Backend {
            addr,
            weight,
            abi,
            id_hash: fnv1a(&id),
            down_until: 0,
            last_failed: None,
            current: 0,
            routed: 0,
            failures: 0,
            marked_down: 0,
            open: 0,
            untracked: 0,
        }
    }

    fn is(&self, addr: [u8; 16], port: u16) -> bool {
        self.abi == addr && self.addr.port() == port
    }

    /// Connections it carries now, as least-connections counts them.
    pub fn connections(&self) -> u64 {
        self.open + self.untracked
    }

    /// Whether it is skipped at `now`.
    pub fn is_down(&self, now: u64) -> bool {
        now < self.down_until
    }
}

/// One pool at run time.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub balance: Balance,
    pub down_ms: u64,
    pub backends: Vec<Backend>,
    /// Where least-connections starts looking, to spread ties.
    cursor: usize,
}

/// Counters of everything the balancer decided or saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `FLOW_REQ` events answered.
    pub requests: u64,
    /// Of those, retries after a failed backend (`attempt > 0`).
    pub retries: u64,
    /// Answered with a backend.
    pub routed: u64,
    pub rejected_503: u64,
    pub rejected_rst: u64,
    /// Of the 503s: retries past the pool's size, or nothing left to try.
    pub exhausted: u64,
    pub parse_complete: u64,
    pub parse_partial: u64,
    /// Partial requests without a `Host` line yet (sent to the default).
    pub partial_no_host: u64,
    /// Not HTTP/1 or cut inside the request line (sent to the default).
    pub unparsed: u64,
    /// Retries because the backend answered the SYN with RST.
    pub failed_reset: u64,
    /// Retries because the backend did not answer the SYN.
    pub failed_timeout: u64,
    /// Retries with a reason this version does not know.
    pub failed_other: u64,
    /// Retries naming a backend that is in no pool.
    pub failed_unknown_backend: u64,
    /// hash-header requests without the header (hashed on the client).
    pub hash_header_missing: u64,
    pub flow_ends: u64,
    /// `FLOW/END`s matched through the flow table.
    pub flow_end_tracked: u64,
    /// Matched by the backend's address (their entry had left the table).
    pub flow_end_by_addr: u64,
    /// Of no connection this balancer counts (rejected, not spliced, from
    /// before a restart).
    pub flow_end_other: u64,
    pub flows_expired: u64,
    pub flows_evicted: u64,
    /// Events without the expected payload.
    pub bad_events: u64,
    /// Answers the SDK refused to publish.
    pub publish_errors: u64,
}

/// One route in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    pub line: usize,
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub pool: String,
    pub hits: u64,
}

/// One backend in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendReport {
    pub addr: String,
    pub weight: u32,
    pub routed: u64,
    pub failures: u64,
    pub marked_down: u64,
    /// Open now (tracked and untracked).
    pub open: u64,
    pub untracked: u64,
    pub down: bool,
}

/// One pool in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    pub name: String,
    pub balance: &'static str,
    pub backends: Vec<BackendReport>,
}

/// What `--stats-json` writes and what is printed on exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub pools: Vec<PoolReport>,
    pub routes: Vec<RouteReport>,
    /// `pool NAME`, `reject 503` or `reject rst`.
    pub default: String,
    pub default_hits: u64,
    /// Flows in the flow table now, and its bound.
    pub flows_tracked: usize,
    pub flows_capacity: usize,
    pub counts: Counts,
}

impl Report {
    /// The table printed on exit.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<12} {:<24} {:>6} {:>10} {:>9} {:>8}  {}\n",
            "pool", "backend", "weight", "routed", "failures", "open", "state"
        );
        for p in &self.pools {
            for b in &p.backends {
                let _ = writeln!(
                    out,
                    "{:<12} {:<24} {:>6} {:>10} {:>9} {:>8}  {}",
                    p.name,
                    b.addr,
                    b.weight,
                    b.routed,
                    b.failures,
                    b.open,
                    if b.down { "down" } else { "up" }
                );
            }
        }
        let c = &self.counts;
        let _ = writeln!(
            out,
            "requests {} (retries {}): routed {}, rejected {} (503 {}, rst {}, exhausted {}); default {} hits {}",
            c.requests,
            c.retries,
            c.routed,
            c.rejected_503 + c.rejected_rst,
            c.rejected_503,
            c.rejected_rst,
            c.exhausted,
            self.default,
            self.default_hits
        );
        let _ = writeln!(
            out,
            "parsed {} complete, {} partial ({} without Host), {} unparsed; flow ends {} ({} by address, {} other); \
             flows tracked {} of {}",
            c.parse_complete,
            c.parse_partial,
            c.partial_no_host,
            c.unparsed,
            c.flow_ends,
            c.flow_end_by_addr,
            c.flow_end_other,
            self.flows_tracked,
            self.flows_capacity
        );
        out
    }
}

/// The load balancer's state; see the [module docs](self).
#[derive(Debug)]
pub struct Balancer {
    pools: Vec<Pool>,
    routes: Vec<RouteConf>,
    route_hits: Vec<u64>,
    default: Fallback,
    default_hits: u64,
    flows: FlowTable,
    parser: Parser,
    counts: Counts,
}

/// What routing made of a request.
struct Routed {
    state: ParseState,
    no_host: bool,
    route: Option<usize>,
    target: Fallback,
    header_hash: Option<u64>,
}

fn reject(r: Reject) -> FlowDest {
    FlowDest { action: if r == Reject::Reset { DEST_RESET } else { DEST_503 }, ..FlowDest::default() }
}

/// A flow left the table while its connection may be open: from now on it
/// is counted as untracked.
fn orphan(pools: &mut [Pool], counts: &mut Counts, e: FlowEntry, why: Dropped) {
    if let Some(b) = pools.get_mut(usize::from(e.pool)).and_then(|p| p.backends.get_mut(usize::from(e.backend))) {
        b.open = b.open.saturating_sub(1);
        b.untracked += 1;
    }
    match why {
        Dropped::Expired => counts.flows_expired += 1,
        Dropped::Evicted => counts.flows_evicted += 1,
    }
}

fn bit(i: usize) -> u64 {
    if i < 64 {
        1 << i
    } else {
        0
    }
}

impl Balancer {
    /// A balancer for `rules`, remembering at most `max_flows` flows for
    /// at most `flow_ttl_ms`.
    pub fn new(rules: Rules, max_flows: usize, flow_ttl_ms: u64) -> Balancer {
        let pools = rules
            .pools
            .into_iter()
            .map(|p| Pool {
                name: p.name,
                balance: p.balance,
                down_ms: p.down_ms,
                backends: p.backends.iter().map(|b| Backend::new(b.addr, b.weight)).collect(),
                cursor: 0,
            })
            .collect();
        Balancer {
            pools,
            route_hits: vec![0; rules.routes.len()],
            routes: rules.routes,
            default: rules.default,
            default_hits: 0,
            flows: FlowTable::new(max_flows, flow_ttl_ms),
            parser: Parser::default(),
            counts: Counts::default(),
        }
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Counts an event that came without the payload its type needs.
    pub fn count_bad_event(&mut self) {
        self.counts.bad_events += 1;
    }

    /// Counts an answer the SDK would not publish.
    pub fn count_publish_error(&mut self) {
        self.counts.publish_errors += 1;
    }

    /// The backend a flow is remembered with, if it is.
    pub fn flow_backend(&self, key: FlowKey) -> Option<(&str, SocketAddr)> {
        let e = self.flows.get(key)?;
        let p = &self.pools[usize::from(e.pool)];
        Some((p.name.as_str(), p.backends[usize::from(e.backend)].addr))
    }

    fn expire(&mut self, now: u64) {
        let (pools, counts) = (&mut self.pools, &mut self.counts);
        self.flows.expire(now, |e, why| orphan(pools, counts, e, why));
    }

    /// Marks the backend at `addr:port` failed at `now`: skipped for each
    /// pool's `down_ms` in every pool that lists it (health belongs to the
    /// server, not to a pool); its failure is counted in `pool` (or the
    /// first pool that lists it).
    fn mark_failed(&mut self, addr: [u8; 16], port: u16, pool: Option<usize>, now: u64) -> bool {
        let mut counted = false;
        let mut found = false;
        let counted_in = pool.or_else(|| self.pools.iter().position(|p| p.backends.iter().any(|b| b.is(addr, port))));
        for (pi, p) in self.pools.iter_mut().enumerate() {
            for b in p.backends.iter_mut().filter(|b| b.is(addr, port)) {
                found = true;
                if !b.is_down(now) && p.down_ms > 0 {
                    b.marked_down += 1;
                }
                b.down_until = b.down_until.max(now + p.down_ms);
                b.last_failed = Some(now);
                if Some(pi) == counted_in && !counted {
                    b.failures += 1;
                    counted = true;
                }
            }
        }
        found
    }

    /// Picks a backend of pool `p` for a request hashing to `key_hash`,
    /// skipping those this flow `tried` (by index) and the one at
    /// `failed`; `None` when the attempt is past the pool's size or
    /// nothing is left.
    fn pick(
        &mut self,
        p: usize,
        key_hash: u64,
        tried: u64,
        failed: Option<([u8; 16], u16)>,
        attempt: u8,
        now: u64,
    ) -> Option<usize> {
        let pool = &mut self.pools[p];
        let n = pool.backends.len();
        if usize::from(attempt) >= n {
            return None;
        }
        let allowed =
            |i: usize, b: &Backend| tried & bit(i) == 0 && failed.map_or(true, |(addr, port)| !b.is(addr, port));
        let up = |i: usize, b: &Backend| allowed(i, b) && !b.is_down(now);
        let candidates = || pool.backends.iter().enumerate().filter(|&(i, b)| up(i, b));
        if candidates().next().is_none() {
            // All down: the one that failed longest ago (never is longest).
            return pool
                .backends
                .iter()
                .enumerate()
                .filter(|&(i, b)| allowed(i, b))
                .min_by_key(|&(_, b)| b.last_failed.map_or(0, |t| t + 1))
                .map(|(i, _)| i);
        }
        let chosen = match pool.balance {
            Balance::RoundRobin => {
                // Smooth weighted round-robin (nginx): the eligible add
                // their weight, the largest wins and gives back the total.
                let mut total = 0i64;
                let mut best: Option<(usize, i64)> = None;
                for i in 0..n {
                    if !up(i, &pool.backends[i]) {
                        continue;
                    }
                    let b = &mut pool.backends[i];
                    b.current += i64::from(b.weight);
                    total += i64::from(b.weight);
                    if best.map_or(true, |(_, c)| b.current > c) {
                        best = Some((i, b.current));
                    }
                }
                let (best, _) = best.expect("a candidate exists");
                pool.backends[best].current -= total;
                best
            }
            Balance::LeastConnections => {
                // Fewest connections per weight; ties go to the first at or
                // after the cursor, which then moves past the winner.
                let start = pool.cursor % n;
                let mut best: Option<usize> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    let b = &pool.backends[i];
                    if !up(i, b) {
                        continue;
                    }
                    let better = best.map_or(true, |j| {
                        let c = &pool.backends[j];
                        u128::from(b.connections()) * u128::from(c.weight)
                            < u128::from(c.connections()) * u128::from(b.weight)
                    });
                    if better {
                        best = Some(i);
                    }
                }
                let best = best.expect("a candidate exists");
                pool.cursor = best + 1;
                best
            }
            Balance::HashClient | Balance::HashHeader(_) => candidates()
                .map(|(i, b)| (i, hrw_score(key_hash, b.id_hash, b.weight)))
                .fold(None, |acc: Option<(usize, f64)>, (i, s)| match acc {
                    Some((_, best)) if best >= s => acc,
                    _ => Some((i, s)),
                })
                .map(|(i, _)| i)
                .expect("a candidate exists"),
        };
        Some(chosen)
    }

    /// Routes a request (no state changes but the scratch buffer).
    fn route(&mut self, bytes: &[u8], known_pool: Option<usize>) -> Routed {
        let (routes, pools, default) = (&self.routes, &self.pools, self.default);
        self.parser.with_request(bytes, |r| {
            let no_host = r.state == ParseState::Partial && r.host.is_none();
            let route = match r.state {
                ParseState::Unparsed => None,
                ParseState::Partial if no_host => None,
                _ => routes.iter().position(|rt| rt.matches(r.host, r.path)),
            };
            let target = route.map_or(default, |i| Fallback::Pool(routes[i].pool));
            let pool = known_pool.or(match target {
                Fallback::Pool(p) => Some(p),
                Fallback::Reject(_) => None,
            });
            let header_hash = match pool.map(|p| &pools[p].balance) {
                Some(Balance::HashHeader(name)) => r.header(name).map(fnv1a),
                _ => None,
            };
            Routed { state: r.state, no_host, route, target, header_hash }
        })
    }

    /// Decides where flow `key` goes: a `FLOW_REQ` with its request
    /// `bytes`, at `now` (ms).
    pub fn on_request(&mut self, key: FlowKey, req: &FlowReq, bytes: &[u8], now: u64) -> FlowDest {
        self.expire(now);
        self.counts.requests += 1;
        // An earlier decision for this flow: its connection attempt failed
        // (a retry), or the flow id came back; either way it holds no
        // connection any more.
        let prev = self.flows.remove(key);
        if let Some(e) = prev {
            let b = &mut self.pools[usize::from(e.pool)].backends[usize::from(e.backend)];
            b.open = b.open.saturating_sub(1);
        }
        let retry = req.attempt > 0;
        let mut failed = None;
        let mut tried = 0;
        let mut known_pool = None;
        if retry {
            self.counts.retries += 1;
            if let Some(e) = prev {
                let b = &self.pools[usize::from(e.pool)].backends[usize::from(e.backend)];
                failed = Some((b.abi, b.addr.port()));
                tried = e.tried;
                known_pool = Some(usize::from(e.pool));
            } else if req.last_addr != [0; 16] || req.last_port != 0 {
                failed = Some((req.last_addr, req.last_port));
            }
            match req.reason {
                FLOW_REQ_RESET => self.counts.failed_reset += 1,
                FLOW_REQ_TIMEOUT => self.counts.failed_timeout += 1,
                _ => self.counts.failed_other += 1,
            }
            if matches!(req.reason, FLOW_REQ_RESET | FLOW_REQ_TIMEOUT) {
                let found = failed.is_some_and(|(addr, port)| self.mark_failed(addr, port, known_pool, now));
                if !found {
                    self.counts.failed_unknown_backend += 1;
                }
            }
        } else if req.reason != FLOW_REQ_NEW {
            self.counts.failed_other += 1;
        }

        let routed = self.route(bytes, known_pool);
        match routed.state {
            ParseState::Complete => self.counts.parse_complete += 1,
            ParseState::Partial => self.counts.parse_partial += 1,
            ParseState::Unparsed => self.counts.unparsed += 1,
        }
        if routed.no_host {
            self.counts.partial_no_host += 1;
        }
        let pool = match known_pool {
            Some(p) => p,
            None => {
                match routed.route {
                    Some(i) => self.route_hits[i] += 1,
                    None => self.default_hits += 1,
                }
                match routed.target {
                    Fallback::Pool(p) => p,
                    Fallback::Reject(r) => {
                        match r {
                            Reject::Http503 => self.counts.rejected_503 += 1,
                            Reject::Reset => self.counts.rejected_rst += 1,
                        }
                        return reject(r);
                    }
                }
            }
        };
        let client_hash = fnv1a(&req.client_addr);
        let key_hash = match &self.pools[pool].balance {
            Balance::HashClient => client_hash,
            Balance::HashHeader(_) => routed.header_hash.unwrap_or_else(|| {
                self.counts.hash_header_missing += 1;
                client_hash
            }),
            Balance::RoundRobin | Balance::LeastConnections => 0,
        };
        let Some(b) = self.pick(pool, key_hash, tried, failed, req.attempt, now) else {
            self.counts.exhausted += 1;
            self.counts.rejected_503 += 1;
            return reject(Reject::Http503);
        };
        let backend = &mut self.pools[pool].backends[b];
        backend.routed += 1;
        backend.open += 1;
        let dest =
            FlowDest { addr: backend.abi, port: backend.addr.port(), action: DEST_CONNECT, ..FlowDest::default() };
        self.counts.routed += 1;
        let (pools, counts) = (&mut self.pools, &mut self.counts);
        self.flows.insert(key, FlowEntry::new(pool, b, tried | bit(b)), now, |e, why| orphan(pools, counts, e, why));
        dest
    }

    /// Forgets every flow and counts no connection open (routing counts
    /// and health stay): after registering again (`--reconnect`), when the
    /// runtime restarted, its spliced connections went with it and its
    /// flow ids start anew.
    pub fn forget_flows(&mut self) {
        self.flows.clear();
        for b in self.pools.iter_mut().flat_map(|p| p.backends.iter_mut()) {
            b.open = 0;
            b.untracked = 0;
        }
    }

    /// A flow ended (`FLOW/END` of flow `key`) at `now` (ms).
    pub fn on_flow_end(&mut self, key: FlowKey, end: &FlowEnd, now: u64) {
        self.expire(now);
        self.counts.flow_ends += 1;
        if let Some(e) = self.flows.remove(key) {
            let b = &mut self.pools[usize::from(e.pool)].backends[usize::from(e.backend)];
            b.open = b.open.saturating_sub(1);
            self.counts.flow_end_tracked += 1;
            return;
        }
        let by_addr = self
            .pools
            .iter_mut()
            .flat_map(|p| p.backends.iter_mut())
            .find(|b| b.untracked > 0 && b.is(end.server_addr, end.server_port));
        match by_addr {
            Some(b) => {
                b.untracked -= 1;
                self.counts.flow_end_by_addr += 1;
            }
            None => self.counts.flow_end_other += 1,
        }
    }

    /// Everything counted so far, at `now` (ms; for the `down` column).
    pub fn report(&self, now: u64) -> Report {
        let pools = self
            .pools
            .iter()
            .map(|p| PoolReport {
                name: p.name.clone(),
                balance: p.balance.name(),
                backends: p
                    .backends
                    .iter()
                    .map(|b| BackendReport {
                        addr: b.addr.to_string(),
                        weight: b.weight,
                        routed: b.routed,
                        failures: b.failures,
                        marked_down: b.marked_down,
                        open: b.connections(),
                        untracked: b.untracked,
                        down: b.is_down(now),
                    })
                    .collect(),
            })
            .collect();
        let routes = self
            .routes
            .iter()
            .zip(&self.route_hits)
            .map(|(r, &hits)| RouteReport {
                line: r.line,
                host: r.host.as_ref().map(ToString::to_string),
                path_prefix: r.path_prefix.clone(),
                pool: self.pools[r.pool].name.clone(),
                hits,
            })
            .collect();
        let default = match self.default {
            Fallback::Pool(p) => format!("pool {}", self.pools[p].name),
            Fallback::Reject(r) => format!("reject {}", r.name()),
        };
        Report {
            pools,
            routes,
            default,
            default_hits: self.default_hits,
            flows_tracked: self.flows.len(),
            flows_capacity: self.flows.capacity(),
            counts: self.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::from_abi_addr;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn balancer(text: &str) -> Balancer {
        Balancer::new(Rules::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}")), 1000, 60_000)
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        Ipv4Addr::from(a).to_ipv6_mapped().octets()
    }

    fn new_req(client: [u8; 4]) -> FlowReq {
        FlowReq {
            client_addr: v4(client),
            vip_addr: v4([10, 0, 0, 1]),
            client_port: 40000,
            vip_port: 80,
            ..FlowReq::default()
        }
    }

    fn retry(client: [u8; 4], attempt: u8, reason: u8, last: &str) -> FlowReq {
        let last: SocketAddr = last.parse().unwrap();
        FlowReq { attempt, reason, last_addr: abi_addr(last.ip()), last_port: last.port(), ..new_req(client) }
    }

    fn get(host: &str, path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n").into_bytes()
    }

    /// `addr:port` of a connect answer, or `503` / `rst`.
    fn shown(d: FlowDest) -> String {
        match d.action {
            DEST_CONNECT => SocketAddr::new(from_abi_addr(d.addr), d.port).to_string(),
            DEST_503 => "503".into(),
            DEST_RESET => "rst".into(),
            a => format!("action {a}"),
        }
    }

    fn end(server: &str) -> FlowEnd {
        let s: SocketAddr = server.parse().unwrap();
        FlowEnd { server_addr: abi_addr(s.ip()), server_port: s.port(), proto: 6, ..FlowEnd::default() }
    }

    const ROUTED: &str = r#"
[[pool]]
name = "a"
backends = ["10.1.0.1:80"]
[[pool]]
name = "b"
backends = ["10.2.0.1:80"]
[[pool]]
name = "c"
backends = ["10.3.0.1:80"]
[[pool]]
name = "d"
backends = ["10.4.0.1:80"]
[[route]]
host = "shop.test"
path_prefix = "/api/"
pool = "a"
[[route]]
host = "shop.test"
pool = "b"
[[route]]
host = "*.img.test"
pool = "c"
[[route]]
path_prefix = "/static/"
pool = "c"
[default]
pool = "d"
"#;

    #[test]
    fn routes_by_host_and_path_first_match_wins() {
        let mut lb = balancer(ROUTED);
        let cases: &[(&[u8], &str)] = &[
            (b"GET /api/v1?x=1 HTTP/1.1\r\nHost: SHOP.test:8080\r\n\r\n", "10.1.0.1:80"),
            (&get("shop.test", "/api"), "10.2.0.1:80"), // "/api" is not "/api/": the host route
            (&get("shop.test.", "/"), "10.2.0.1:80"),
            (&get("x.img.test", "/api/"), "10.3.0.1:80"),
            (&get("img.test", "/"), "10.4.0.1:80"), // *.img.test is not img.test
            (&get("other.test", "/static/a.png"), "10.3.0.1:80"),
            (&get("other.test", "/"), "10.4.0.1:80"),
            (b"GET /static/x HTTP/1.0\r\n\r\n", "10.3.0.1:80"), // no Host: host-less routes only
            (b"GET /api/x HTTP/1.0\r\n\r\n", "10.4.0.1:80"),
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            let d = lb.on_request((0, i as u64), &new_req([1, 1, 1, 1]), bytes, 0);
            assert_eq!(shown(d), *want, "case {i}: {}", String::from_utf8_lossy(bytes));
        }
        let r = lb.report(0);
        let hits: Vec<u64> = r.routes.iter().map(|r| r.hits).collect();
        assert_eq!(hits, vec![1, 2, 1, 2]);
        assert_eq!((r.default.as_str(), r.default_hits), ("pool d", 3));
        assert_eq!(r.routes[2].host.as_deref(), Some("*.img.test"));
    }

    #[test]
    fn partial_and_garbage_requests() {
        let mut lb = balancer(ROUTED);
        let cases: &[(&[u8], &str)] = &[
            (b"GET /api/x HTTP/1.1\r\nHost: shop.test\r\nCookie: abc", "10.1.0.1:80"), // partial, Host there
            (b"GET /api/x HTTP/1.1\r\nAccept: */*\r\nHo", "10.4.0.1:80"),              // partial, no Host yet
            (b"GET /static/x HTTP/1.1\r\nAccept: */*\r\n", "10.4.0.1:80"),             // same: default, not /static/
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", "10.4.0.1:80"),          // TLS: default
            (b"GET /api/x HTT", "10.4.0.1:80"),                                        // cut in the request line
            (b"", "10.4.0.1:80"),                                                      // no bytes at all
        ];
        for (i, (bytes, want)) in cases.iter().enumerate() {
            let d = lb.on_request((0, i as u64), &new_req([1, 1, 1, 1]), bytes, 0);
            assert_eq!(shown(d), *want, "case {i}");
        }
        let c = lb.counts();
        assert_eq!((c.parse_complete, c.parse_partial, c.partial_no_host, c.unparsed), (0, 3, 2, 3));

        // Without a default, or with a reject, such requests are refused.
        let one = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\"]\n[[route]]\nhost = \"a.test\"\npool = \"p\"\n";
        let mut lb = balancer(one);
        assert_eq!(shown(lb.on_request((0, 1), &new_req([1; 4]), b"garbage", 0)), "503");
        assert_eq!(shown(lb.on_request((0, 2), &new_req([1; 4]), &get("a.test", "/"), 0)), "10.0.0.1:80");
        let mut lb = balancer(&format!("{one}[default]\nreject = \"rst\"\n"));
        assert_eq!(shown(lb.on_request((0, 1), &new_req([1; 4]), &get("b.test", "/"), 0)), "rst");
        let c = lb.counts();
        assert_eq!((c.rejected_rst, c.rejected_503, c.routed), (1, 0, 0));
        assert_eq!(lb.report(0).pools[0].backends[0].open, 0, "a refusal opens nothing");
    }

    const THREE: &str = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\", \"10.0.0.2:80\", \"10.0.0.3:80\"]\n\
                         balance = \"BALANCE\"\ndown_ms = 1000\n[default]\npool = \"p\"\n";

    fn three(balance: &str) -> Balancer {
        balancer(&THREE.replace("BALANCE", balance))
    }

    #[test]
    fn round_robin_alternates_and_follows_weights() {
        let mut lb = balancer(
            "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\", \"10.0.0.2:80\"]\n[default]\npool = \"p\"\n",
        );
        let got: Vec<String> = (0..6).map(|i| shown(lb.on_request((0, i), &new_req([1; 4]), b"", 0))).collect();
        assert_eq!(got, ["10.0.0.1:80", "10.0.0.2:80"].repeat(3));
        let mut lb = balancer(
            "[[pool]]\nname = \"p\"\nbackends = [{ addr = \"10.0.0.1:80\", weight = 2 }, \"10.0.0.2:80\"]\n[default]\npool = \"p\"\n",
        );
        let got: Vec<String> = (0..6).map(|i| shown(lb.on_request((0, i), &new_req([1; 4]), b"", 0))).collect();
        assert_eq!(got, ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"].repeat(2));
    }

    #[test]
    fn least_connections_follows_flow_end() {
        let mut lb = three("least-connections");
        let pick = |lb: &mut Balancer, id: u64| shown(lb.on_request((0, id), &new_req([1; 4]), b"", 0));
        // Equal counts: ties go round.
        assert_eq!(
            [pick(&mut lb, 1), pick(&mut lb, 2), pick(&mut lb, 3)],
            ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
        );
        // Flow 2 (on .2) ends: .2 has the fewest now, twice over.
        lb.on_flow_end((0, 2), &end("10.0.0.2:80"), 1);
        assert_eq!(pick(&mut lb, 4), "10.0.0.2:80");
        lb.on_flow_end((0, 1), &end("10.0.0.1:80"), 1);
        lb.on_flow_end((0, 3), &end("10.0.0.3:80"), 1);
        // .1 and .3 are at 0, .2 at 1.
        let next = [pick(&mut lb, 5), pick(&mut lb, 6)];
        assert!(next.contains(&"10.0.0.1:80".to_owned()) && next.contains(&"10.0.0.3:80".to_owned()), "{next:?}");
        let open: Vec<u64> = lb.report(1).pools[0].backends.iter().map(|b| b.open).collect();
        assert_eq!(open, [1, 1, 1]);
        assert_eq!(lb.counts().flow_end_tracked, 3);
        // A flow-end of a flow it never saw changes nothing.
        lb.on_flow_end((0, 99), &end("10.0.0.1:80"), 1);
        assert_eq!(lb.counts().flow_end_other, 1);
        assert_eq!(lb.report(1).pools[0].backends[0].open, 1);
    }

    /// Client `i`'s address.
    fn client(i: u32) -> [u8; 4] {
        (0x0a64_0000 + i).to_be_bytes()
    }

    fn assignment(lb: &mut Balancer, first_flow: u64, now: u64) -> Vec<String> {
        (0..1000u32)
            .map(|i| {
                let id = first_flow + u64::from(i);
                let d = shown(lb.on_request((0, id), &new_req(client(i)), &get("a.test", "/"), now));
                lb.on_flow_end((0, id), &end(&d), now);
                d
            })
            .collect()
    }

    #[test]
    fn hash_client_is_stable_and_moves_only_the_down_backends_clients() {
        let mut lb = three("hash-client");
        let before = assignment(&mut lb, 0, 0);
        assert_eq!(assignment(&mut lb, 10_000, 0), before, "stable");
        let mut share: HashMap<&str, usize> = HashMap::new();
        for d in &before {
            *share.entry(d.as_str()).or_default() += 1;
        }
        assert!(share.values().all(|&n| n > 250), "spread over all three: {share:?}");
        // .2 fails (RST on a retry) and is down for 1000 ms.
        let failed = lb.on_request((0, 50_000), &retry(client(0), 1, FLOW_REQ_RESET, "10.0.0.2:80"), b"", 10);
        assert_ne!(shown(failed), "10.0.0.2:80");
        lb.on_flow_end((0, 50_000), &end(&shown(failed)), 10);
        let during = assignment(&mut lb, 20_000, 20);
        let mut moved_to: HashMap<&str, usize> = HashMap::new();
        for (b, d) in before.iter().zip(&during) {
            if b == "10.0.0.2:80" {
                assert_ne!(d, b);
                *moved_to.entry(d.as_str()).or_default() += 1;
            } else {
                assert_eq!(d, b, "a client of a backend that is up stays");
            }
        }
        assert!(moved_to.len() == 2 && moved_to.values().all(|&n| n > 50), "spread: {moved_to:?}");
        // Back up after down_ms: everyone is where they were.
        assert_eq!(assignment(&mut lb, 30_000, 1010), before);
    }

    #[test]
    fn hash_header_follows_the_header() {
        let mut lb = balancer(
            "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\", \"10.0.0.2:80\", \"10.0.0.3:80\", \"10.0.0.4:80\"]\n\
             balance = \"hash-header\"\nhash_header = \"X-User\"\n[default]\npool = \"p\"\n",
        );
        let with = |user: &str| format!("GET / HTTP/1.1\r\nHost: a\r\nx-user: {user}\r\n\r\n").into_bytes();
        for user in ["alice", "bob", "carol", "dave", "eve"] {
            let first = shown(lb.on_request((0, 0), &new_req(client(0)), &with(user), 0));
            for i in 1..20 {
                assert_eq!(
                    shown(lb.on_request((0, u64::from(i)), &new_req(client(i)), &with(user), 0)),
                    first,
                    "{user}"
                );
            }
        }
        let users: std::collections::HashSet<String> =
            (0..100).map(|i| shown(lb.on_request((1, i), &new_req(client(0)), &with(&format!("u{i}")), 0))).collect();
        assert_eq!(users.len(), 4, "users spread over the pool");
        // Without the header: the client's address decides.
        let a = shown(lb.on_request((2, 1), &new_req(client(7)), &get("a", "/"), 0));
        assert_eq!(shown(lb.on_request((2, 2), &new_req(client(7)), &get("a", "/x"), 0)), a);
        assert_eq!(lb.counts().hash_header_missing, 2);
    }

    #[test]
    fn a_failed_backend_is_marked_down_and_excluded_from_the_retries() {
        let mut lb = three("round-robin");
        let flow = (0, 7);
        let first = shown(lb.on_request(flow, &new_req([1; 4]), b"", 0));
        assert_eq!(first, "10.0.0.1:80");
        // .1 resets: the retry goes elsewhere, .1 is down for 1000 ms.
        let second = shown(lb.on_request(flow, &retry([1; 4], 1, FLOW_REQ_RESET, &first), b"", 5));
        assert_ne!(second, first);
        // New flows avoid .1 meanwhile.
        for i in 0..4 {
            assert_ne!(shown(lb.on_request((1, i), &new_req([2; 4]), b"", 100)), first);
        }
        // The second backend times out too: the third is the only one left.
        let third = shown(lb.on_request(flow, &retry([1; 4], 2, FLOW_REQ_TIMEOUT, &second), b"", 200));
        assert!(third != first && third != second, "{first} {second} {third}");
        // A third failure: every backend had its try.
        assert_eq!(shown(lb.on_request(flow, &retry([1; 4], 3, FLOW_REQ_RESET, &third), b"", 300)), "503");
        let r = lb.report(300);
        let failures: Vec<u64> = r.pools[0].backends.iter().map(|b| b.failures).collect();
        assert_eq!(failures, [1, 1, 1]);
        assert!(r.pools[0].backends.iter().all(|b| b.down && b.marked_down == 1));
        let c = &r.counts;
        assert_eq!((c.retries, c.failed_reset, c.failed_timeout, c.exhausted, c.rejected_503), (3, 2, 1, 1, 1));
        // Nothing is open: each failed attempt gave its connection back,
        // the refused flow holds none, and the four new flows are open.
        let open: u64 = r.pools[0].backends.iter().map(|b| b.open).sum();
        assert_eq!(open, 4);
        // Down until 1005 for .1: back in rotation afterwards.
        let after: Vec<String> = (0..3).map(|i| shown(lb.on_request((2, i), &new_req([3; 4]), b"", 1005))).collect();
        assert!(after.contains(&first), "{after:?}");
        assert!(!lb.report(1005).pools[0].backends[0].down);
    }

    #[test]
    fn all_down_takes_the_least_recently_failed_and_unknown_flows_use_last_addr() {
        let mut lb = three("round-robin");
        // Retries of flows this balancer does not remember: the splicer's
        // last_addr names the failed backend.
        let d = shown(lb.on_request((0, 1), &retry([1; 4], 1, FLOW_REQ_RESET, "10.0.0.2:80"), b"", 0));
        assert_ne!(d, "10.0.0.2:80");
        lb.on_request((0, 2), &retry([1; 4], 1, FLOW_REQ_RESET, "10.0.0.3:80"), b"", 10);
        lb.on_request((0, 3), &retry([1; 4], 1, FLOW_REQ_TIMEOUT, "10.0.0.1:80"), b"", 20);
        // All three are down: a new flow gets the one that failed first.
        assert_eq!(shown(lb.on_request((0, 4), &new_req([1; 4]), b"", 30)), "10.0.0.2:80");
        // A retry of it excludes it and takes the next oldest failure.
        assert_eq!(
            shown(lb.on_request((0, 4), &retry([1; 4], 1, FLOW_REQ_RESET, "10.0.0.2:80"), b"", 40)),
            "10.0.0.3:80"
        );
        // A retry naming a backend that is in no pool is counted.
        lb.on_request((0, 5), &retry([1; 4], 1, FLOW_REQ_RESET, "192.0.2.1:80"), b"", 50);
        assert_eq!(lb.counts().failed_unknown_backend, 1);
    }

    #[test]
    fn health_is_per_server_across_pools() {
        let mut lb = balancer(
            "[[pool]]\nname = \"a\"\nbackends = [\"10.0.0.1:80\", \"10.0.0.2:80\"]\ndown_ms = 100\n\
             [[pool]]\nname = \"b\"\nbackends = [\"10.0.0.1:80\", \"10.0.0.3:80\"]\ndown_ms = 500\n\
             [[route]]\nhost = \"b\"\npool = \"b\"\n[default]\npool = \"a\"\n",
        );
        lb.on_request((0, 1), &new_req([1; 4]), &get("a", "/"), 0);
        lb.on_request((0, 1), &retry([1; 4], 1, FLOW_REQ_RESET, "10.0.0.1:80"), &get("a", "/"), 0);
        for i in 0..4 {
            assert_eq!(shown(lb.on_request((1, i), &new_req([1; 4]), &get("b", "/"), 200)), "10.0.0.3:80");
        }
        let r = lb.report(200);
        assert_eq!((r.pools[0].backends[0].failures, r.pools[1].backends[0].failures), (1, 0));
        assert_eq!((r.pools[0].backends[0].down, r.pools[1].backends[0].down), (false, true));
    }

    #[test]
    fn expired_and_evicted_flows_are_untracked_until_their_flow_end() {
        let rules = Rules::parse(&THREE.replace("BALANCE", "least-connections"), "t").unwrap();
        let mut lb = Balancer::new(rules, 2, 1000);
        for i in 0..3 {
            lb.on_request((0, i), &new_req([1; 4]), b"", 0); // the third evicts the first
        }
        assert_eq!(lb.counts().flows_evicted, 1);
        assert_eq!(lb.flow_backend((0, 0)), None);
        assert_eq!(
            lb.flow_backend((0, 1)).map(|(p, a)| (p.to_owned(), a.to_string())),
            Some(("p".into(), "10.0.0.2:80".into()))
        );
        let b = &lb.pools()[0].backends;
        assert_eq!((b[0].open, b[0].untracked, b[0].connections()), (0, 1, 1));
        // Flow 0's end comes by address; flows 1 and 2 expire at 1000.
        lb.on_flow_end((0, 0), &end("10.0.0.1:80"), 500);
        assert_eq!(lb.counts().flow_end_by_addr, 1);
        lb.on_flow_end((0, 42), &end("10.0.0.9:80"), 1000);
        assert_eq!((lb.counts().flows_expired, lb.counts().flow_end_other), (2, 1));
        let r = lb.report(1000);
        assert_eq!(r.flows_tracked, 0);
        let untracked: Vec<u64> = r.pools[0].backends.iter().map(|b| b.untracked).collect();
        assert_eq!(untracked, [0, 1, 1]);
        // Least-connections still counts them: the next goes to .1.
        assert_eq!(shown(lb.on_request((0, 9), &new_req([1; 4]), b"", 1000)), "10.0.0.1:80");
        lb.on_flow_end((0, 1), &end("10.0.0.2:80"), 1001);
        lb.on_flow_end((0, 2), &end("10.0.0.3:80"), 1001);
        let open: Vec<u64> = lb.report(1001).pools[0].backends.iter().map(|b| b.open).collect();
        assert_eq!(open, [1, 0, 0]);
    }

    #[test]
    fn report_renders_and_serialises() {
        let mut lb = three("round-robin");
        lb.on_request((0, 1), &new_req([1; 4]), &get("a", "/"), 0);
        let r = lb.report(0);
        let text = r.render();
        assert!(text.contains("10.0.0.1:80") && text.contains("requests 1 (retries 0): routed 1"), "{text}");
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["pools"][0]["backends"][0]["routed"], 1);
        assert_eq!(v["pools"][0]["backends"][0]["open"], 1);
        assert_eq!(v["pools"][0]["balance"], "round-robin");
        assert_eq!(v["counts"]["parse_complete"], 1);
    }
}
