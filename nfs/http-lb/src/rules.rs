//! The rules file: pools of backends, routes and the default, read from
//! TOML and checked with line numbers.
//!
//! This module owns the file format and its validation only; it keeps no
//! run-time state (see [`crate::balancer`]). Checking does not stop at the
//! first problem: [`Rules::parse`] reports every bad field it can find, one
//! [`Diag`] each, with the line it is on (from the TOML spans). A file that
//! is not valid TOML, or has a key this format does not know, or a value of
//! the wrong type, gives the TOML parser's single error instead.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

/// Most pools in one file.
pub const MAX_POOLS: usize = 1024;
/// Most backends in one pool.
pub const MAX_BACKENDS: usize = 256;
/// Most routes in one file.
pub const MAX_ROUTES: usize = 4096;
/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 1000;
/// `down_ms` when a pool does not say.
pub const DEFAULT_DOWN_MS: u64 = 10_000;
/// Largest `down_ms` (one hour).
pub const MAX_DOWN_MS: u64 = 3_600_000;
/// Longest `hash_header` name.
const MAX_HEADER_NAME: usize = 128;

/// How a pool spreads connections over its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// The fewest open connections per unit of weight.
    LeastConnections,
    /// Rendezvous hashing on the client's address.
    HashClient,
    /// Rendezvous hashing on the value of this request header (stored
    /// lowercase); the client's address when the header is absent.
    HashHeader(String),
}

impl Balance {
    /// The name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastConnections => "least-connections",
            Balance::HashClient => "hash-client",
            Balance::HashHeader(_) => "hash-header",
        }
    }
}

/// One backend of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConf {
    pub addr: SocketAddr,
    /// 1 to [`MAX_WEIGHT`].
    pub weight: u32,
    pub line: usize,
}

/// One `[[pool]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConf {
    pub name: String,
    pub backends: Vec<BackendConf>,
    pub balance: Balance,
    /// How long a failed backend is skipped (0: never skipped, only
    /// excluded from the retries of the flow that saw it fail).
    pub down_ms: u64,
    pub line: usize,
}

/// What a route's `host` matches (case-insensitive, without port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// Exactly this host (lowercase).
    Exact(String),
    /// `*.test`: any host ending in `.test` (stored as `.test`, lowercase),
    /// not `test` itself.
    Suffix(String),
}

impl HostMatch {
    /// Whether the request's host (already without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// One `[[route]]`: every condition it names must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConf {
    pub host: Option<HostMatch>,
    /// Plain string prefix of the request path (query excluded).
    pub path_prefix: Option<String>,
    /// Index into [`Rules::pools`].
    pub pool: usize,
    pub line: usize,
}

impl RouteConf {
    /// Whether a request with this host (`None`: the request names none)
    /// and path matches.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(m), Some(h)) => m.matches(h),
            (Some(_), None) => false,
        };
        host_ok && self.path_prefix.as_deref().map_or(true, |p| path.starts_with(p))
    }
}

/// How a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `HTTP/1.1 503 Service Unavailable` and a FIN.
    Http503,
    /// A TCP RST.
    Reset,
}

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::Http503 => "503",
            Reject::Reset => "rst",
        }
    }
}

/// What applies when no route matches (or the request cannot be parsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Index into [`Rules::pools`].
    Pool(usize),
    Reject(Reject),
}

/// A checked rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub pools: Vec<PoolConf>,
    /// In file order: the first that matches wins.
    pub routes: Vec<RouteConf>,
    pub default: Fallback,
    /// Line of `[default]` (0 when the file has none: reject with 503).
    pub default_line: usize,
}

/// One problem in a rules file: its line (1-based) and a message saying
/// what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub line: usize,
    pub msg: String,
}

/// Why a rules file was refused.
#[derive(Debug)]
pub enum RulesError {
    /// It could not be read.
    Read { file: String, source: std::io::Error },
    /// It was read and is wrong: every problem found, in line order.
    Invalid { file: String, diags: Vec<Diag> },
}

impl RulesError {
    /// One line per problem: `FILE:LINE: what is wrong; how to fix`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            RulesError::Read { file, source } => {
                vec![format!("{file}: cannot read the rules: {source}; check the path and its permissions")]
            }
            RulesError::Invalid { file, diags } => {
                diags.iter().map(|d| format!("{file}:{}: {}", d.line, d.msg)).collect()
            }
        }
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for RulesError {}

// The file as TOML gives it: everything optional and spanned, so that the
// checks below can name the line of each problem and report them all.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    pool: Vec<Spanned<PoolDef>>,
    #[serde(default)]
    route: Vec<Spanned<RouteDef>>,
    default: Option<Spanned<DefaultDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolDef {
    name: Option<Spanned<String>>,
    backends: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    balance: Option<Spanned<String>>,
    hash_header: Option<Spanned<String>>,
    down_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDef {
    host: Option<Spanned<String>>,
    path_prefix: Option<Spanned<String>>,
    pool: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultDef {
    pool: Option<Spanned<String>>,
    reject: Option<Spanned<toml::Value>>,
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Collects diagnostics with their lines.
struct Checker<'t> {
    text: &'t str,
    diags: Vec<Diag>,
}

impl Checker<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> usize {
        line_of(self.text, s.span().start)
    }

    fn err<T>(&mut self, at: &Spanned<T>, msg: String) {
        let line = self.line(at);
        self.diags.push(Diag { line, msg });
    }
}

/// Parses a backend: `"ADDR:PORT"` or `{ addr = "ADDR:PORT", weight = N }`.
fn parse_backend(v: &toml::Value) -> Result<(SocketAddr, u32), String> {
    let (addr, weight) = match v {
        toml::Value::String(s) => (s.as_str(), 1),
        toml::Value::Table(t) => {
            if let Some(k) = t.keys().find(|k| *k != "addr" && *k != "weight") {
                return Err(format!("unknown key `{k}` in a backend; a backend table has only `addr` and `weight`"));
            }
            let addr = match t.get("addr") {
                Some(toml::Value::String(s)) => s.as_str(),
                Some(_) => return Err("backend `addr` is not a string; write addr = \"10.10.0.11:80\"".into()),
                None => return Err("backend table without `addr`; write { addr = \"10.10.0.11:80\", weight = 2 }".into()),
            };
            let weight = match t.get("weight") {
                None => 1,
                Some(toml::Value::Integer(w)) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
                Some(w) => {
                    return Err(format!("backend weight {w} is out of range; use an integer from 1 to {MAX_WEIGHT}"))
                }
            };
            (addr, weight)
        }
        other => {
            return Err(format!(
                "backend {other} is neither \"ADDR:PORT\" nor {{ addr = \"ADDR:PORT\", weight = N }}; write \"10.10.0.11:80\""
            ))
        }
    };
    let sa: SocketAddr = addr.parse().map_err(|_| {
        format!(
            "backend {addr:?} is not ADDRESS:PORT (names are not resolved); write \"10.10.0.11:80\" or \"[2001:db8::1]:80\""
        )
    })?;
    if sa.port() == 0 {
        return Err(format!("backend {addr:?} has port 0; give the port the backend listens on"));
    }
    if sa.ip().is_unspecified() || sa.ip().is_multicast() {
        return Err(format!("backend {addr:?} is not a unicast address; give the backend's own address"));
    }
    Ok((sa, weight))
}

/// The address as the splicer's ABI carries it: IPv4 as IPv4-mapped IPv6.
pub fn abi_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address the ABI's bytes name (IPv4-mapped shown as IPv4).
pub fn from_abi_addr(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a route's `host`: lowercase, without port or trailing dot.
fn parse_host(raw: &str) -> Result<HostMatch, String> {
    let h = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if let Some(rest) = h.strip_prefix("*.") {
        return if label_ok(rest) {
            Ok(HostMatch::Suffix(format!(".{rest}")))
        } else {
            Err(format!("host {raw:?} is not a wildcard `*.example.com`; write a `*.` and then a domain"))
        };
    }
    if h.starts_with('[') && h.ends_with(']') && h[1..h.len() - 1].parse::<Ipv6Addr>().is_ok() {
        return Ok(HostMatch::Exact(h));
    }
    if h.contains(':') {
        return Err(format!("host {raw:?} has a port; hosts are matched without port, write it without `:PORT`"));
    }
    if !label_ok(&h) {
        return Err(format!(
            "host {raw:?} is not a host name; write `a.test`, `*.test` or an address (letters, digits, `-`, `.` only)"
        ));
    }
    Ok(HostMatch::Exact(h))
}

/// A pool name as a route or the default names it.
fn pool_ref(c: &mut Checker<'_>, names: &HashMap<String, usize>, name: &Spanned<String>) -> Option<usize> {
    let found = names.get(name.get_ref()).copied();
    if found.is_none() {
        let mut known: Vec<&str> = names.keys().map(String::as_str).collect();
        known.sort_unstable();
        let hint = if known.is_empty() {
            "define it with [[pool]] name = ...".to_owned()
        } else {
            format!("use one of: {}", known.join(", "))
        };
        c.err(name, format!("no pool named {:?}; {hint}", name.get_ref()));
    }
    found
}

impl Rules {
    /// Reads and checks the rules file at `path`.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read { file: file.clone(), source })?;
        Rules::parse(&text, &file)
    }

    /// Checks `text` (the contents of `file`, named in the errors).
    pub fn parse(text: &str, file: &str) -> Result<Rules, RulesError> {
        let invalid = |diags: Vec<Diag>| RulesError::Invalid { file: file.to_owned(), diags };
        let def: FileDef = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            let what = e.message().trim().replace('\n', ", ");
            invalid(vec![Diag { line, msg: format!("{what}; fix the TOML (the format is in rules.example.toml)") }])
        })?;
        let mut c = Checker { text, diags: Vec::new() };
        let mut pools = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        if def.pool.is_empty() {
            c.diags.push(Diag {
                line: 1,
                msg: "no [[pool]] defined; add one with `name` and `backends = [\"ADDR:PORT\", ...]`".into(),
            });
        }
        if def.pool.len() > MAX_POOLS {
            let at = &def.pool[MAX_POOLS];
            c.err(at, format!("more than {MAX_POOLS} pools; merge pools or split the load balancer"));
        }
        for p in def.pool.iter().take(MAX_POOLS) {
            if let Some(pool) = check_pool(&mut c, p, &mut first_line) {
                names.insert(pool.name.clone(), pools.len());
                pools.push(pool);
            } else if let Some(n) = &p.get_ref().name {
                // A bad pool still has its name, so routes naming it are
                // not reported a second time.
                names.entry(n.get_ref().clone()).or_insert(usize::MAX);
            }
        }
        let mut routes = Vec::new();
        if def.route.len() > MAX_ROUTES {
            let at = &def.route[MAX_ROUTES];
            c.err(at, format!("more than {MAX_ROUTES} routes; use wildcard hosts or shorter prefixes"));
        }
        for r in def.route.iter().take(MAX_ROUTES) {
            let line = c.line(r);
            let rd = r.get_ref();
            let host = rd.host.as_ref().and_then(|h| parse_host(h.get_ref()).map_err(|m| c.err(h, m)).ok());
            let prefix = rd.path_prefix.as_ref().and_then(|p| {
                let s = p.get_ref();
                if !s.starts_with('/') || s.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
                    c.err(
                        p,
                        format!(
                            "path_prefix {s:?} does not start with `/`; write it as the path begins, e.g. \"/api/\""
                        ),
                    );
                    None
                } else {
                    Some(s.clone())
                }
            });
            let pool = match &rd.pool {
                Some(p) => pool_ref(&mut c, &names, p),
                None => {
                    c.err(r, "route without `pool`; add pool = \"NAME\" naming a [[pool]]".into());
                    None
                }
            };
            let ok_host = rd.host.is_none() || host.is_some();
            let ok_prefix = rd.path_prefix.is_none() || prefix.is_some();
            if let (Some(pool), true, true) = (pool, ok_host, ok_prefix) {
                routes.push(RouteConf { host, path_prefix: prefix, pool, line });
            }
        }
        let (default, default_line) = match &def.default {
            None => (Some(Fallback::Reject(Reject::Http503)), 0),
            Some(d) => (check_default(&mut c, d, &names), c.line(d)),
        };
        if !c.diags.is_empty() {
            c.diags.sort_by_key(|d| d.line);
            return Err(invalid(c.diags));
        }
        // No diagnostics: every pool was good, so the indices are real.
        let default = default.expect("a default without diagnostics");
        Ok(Rules { pools, routes, default, default_line })
    }

    /// `2 pools (5 backends), 3 routes, default pool web`.
    pub fn summary(&self) -> String {
        let backends: usize = self.pools.iter().map(|p| p.backends.len()).sum();
        let default = match self.default {
            Fallback::Pool(i) => format!("default pool {}", self.pools[i].name),
            Fallback::Reject(r) => format!("default reject {}", r.name()),
        };
        format!(
            "{} pool{} ({backends} backend{}), {} route{}, {default}",
            self.pools.len(),
            if self.pools.len() == 1 { "" } else { "s" },
            if backends == 1 { "" } else { "s" },
            self.routes.len(),
            if self.routes.len() == 1 { "" } else { "s" },
        )
    }
}

fn check_pool(c: &mut Checker<'_>, p: &Spanned<PoolDef>, first_line: &mut HashMap<String, usize>) -> Option<PoolConf> {
    let before = c.diags.len();
    let line = c.line(p);
    let pd = p.get_ref();
    let name = match &pd.name {
        None => {
            c.err(p, "pool without `name`; add name = \"NAME\" (routes and [default] refer to it)".into());
            None
        }
        Some(n) if n.get_ref().trim().is_empty() => {
            c.err(n, "pool name is empty; give it a name such as \"web\"".into());
            None
        }
        Some(n) => {
            let nl = c.line(n);
            match first_line.get(n.get_ref()) {
                Some(&first) => {
                    c.err(n, format!("pool {:?} is defined twice (first on line {first}); rename one", n.get_ref()));
                    None
                }
                None => {
                    first_line.insert(n.get_ref().clone(), nl);
                    Some(n.get_ref().clone())
                }
            }
        }
    };
    let mut backends = Vec::new();
    match &pd.backends {
        None => c.err(p, "pool without `backends`; add backends = [\"10.10.0.11:80\", ...]".into()),
        Some(list) if list.get_ref().is_empty() => {
            c.err(list, "pool has no backends; list at least one: backends = [\"10.10.0.11:80\"]".into())
        }
        Some(list) if list.get_ref().len() > MAX_BACKENDS => {
            c.err(list, format!("more than {MAX_BACKENDS} backends in one pool; split it into several pools"))
        }
        Some(list) => {
            let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
            for b in list.get_ref() {
                match parse_backend(b.get_ref()) {
                    Err(m) => c.err(b, m),
                    Ok((addr, weight)) => {
                        let bl = c.line(b);
                        if let Some(&first) = seen.get(&addr) {
                            c.err(b, format!("backend {addr} is listed twice (first on line {first}); remove one or give it a weight"));
                        } else {
                            seen.insert(addr, bl);
                            backends.push(BackendConf { addr, weight, line: bl });
                        }
                    }
                }
            }
        }
    }
    let balance = match pd.balance.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "round-robin")) => Some(Balance::RoundRobin),
        Some((_, "least-connections")) => Some(Balance::LeastConnections),
        Some((_, "hash-client")) => Some(Balance::HashClient),
        Some((b, "hash-header")) => match &pd.hash_header {
            Some(h) if is_token(h.get_ref()) && h.get_ref().len() <= MAX_HEADER_NAME => {
                Some(Balance::HashHeader(h.get_ref().to_ascii_lowercase()))
            }
            Some(h) => {
                c.err(h, format!("hash_header {:?} is not a header name; write one such as \"X-User\"", h.get_ref()));
                None
            }
            None => {
                c.err(b, "balance = \"hash-header\" without `hash_header`; add hash_header = \"HEADER-NAME\"".into());
                None
            }
        },
        Some((b, other)) => {
            c.err(
                b,
                format!("unknown balance {other:?}; use round-robin, least-connections, hash-client or hash-header"),
            );
            None
        }
    };
    if let (Some(h), Some(bal)) = (&pd.hash_header, &balance) {
        if !matches!(bal, Balance::HashHeader(_)) {
            c.err(
                h,
                format!(
                    "hash_header is set but balance is {}; set balance = \"hash-header\" or remove hash_header",
                    bal.name()
                ),
            );
        }
    }
    let down_ms = match &pd.down_ms {
        None => Some(DEFAULT_DOWN_MS),
        Some(d) if (0..=MAX_DOWN_MS as i64).contains(d.get_ref()) => Some(*d.get_ref() as u64),
        Some(d) => {
            c.err(d, format!("down_ms {} is out of range; use 0 to {MAX_DOWN_MS} milliseconds", d.get_ref()));
            None
        }
    };
    if c.diags.len() > before {
        return None;
    }
    Some(PoolConf { name: name?, backends, balance: balance?, down_ms: down_ms?, line })
}

fn check_default(c: &mut Checker<'_>, d: &Spanned<DefaultDef>, names: &HashMap<String, usize>) -> Option<Fallback> {
    let dd = d.get_ref();
    match (&dd.pool, &dd.reject) {
        (Some(_), Some(r)) => {
            c.err(r, "[default] has both `pool` and `reject`; keep one".into());
            None
        }
        (None, None) => {
            c.err(d, "[default] without `pool` or `reject`; add pool = \"NAME\" or reject = \"503\" or \"rst\"".into());
            None
        }
        (Some(p), None) => pool_ref(c, names, p).map(Fallback::Pool),
        (None, Some(r)) => match r.get_ref() {
            toml::Value::Integer(503) => Some(Fallback::Reject(Reject::Http503)),
            toml::Value::String(s) if s == "503" => Some(Fallback::Reject(Reject::Http503)),
            toml::Value::String(s) if s.eq_ignore_ascii_case("rst") || s.eq_ignore_ascii_case("reset") => {
                Some(Fallback::Reject(Reject::Reset))
            }
            other => {
                c.err(
                    r,
                    format!("unknown reject {other}; use reject = \"503\" (an HTTP 503) or \"rst\" (a TCP reset)"),
                );
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[pool]]
name = "web"
backends = ["10.10.0.11:80", { addr = "10.10.0.12:80", weight = 2 }]

[[pool]]
name = "api"
backends = ["10.10.1.1:8080", "[2001:db8::1]:8080"]
balance = "hash-header"
hash_header = "X-User"
down_ms = 500

[[route]]
host = "API.test"
path_prefix = "/v1/"
pool = "api"

[[route]]
host = "*.Example.com."
pool = "web"

[default]
pool = "web"
"#;

    fn errors(text: &str) -> Vec<String> {
        match Rules::parse(text, "r.toml") {
            Ok(r) => panic!("accepted: {r:?}"),
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn parses_pools_routes_and_default() {
        let r = Rules::parse(GOOD, "r.toml").unwrap();
        assert_eq!(r.pools.len(), 2);
        let web = &r.pools[0];
        assert_eq!((web.name.as_str(), &web.balance, web.down_ms, web.line), ("web", &Balance::RoundRobin, 10_000, 2));
        assert_eq!(web.backends[1], BackendConf { addr: "10.10.0.12:80".parse().unwrap(), weight: 2, line: 4 });
        let api = &r.pools[1];
        assert_eq!((&api.balance, api.down_ms), (&Balance::HashHeader("x-user".into()), 500));
        assert_eq!(api.backends[1].addr, "[2001:db8::1]:8080".parse().unwrap());
        assert_eq!(
            r.routes[0],
            RouteConf {
                host: Some(HostMatch::Exact("api.test".into())),
                path_prefix: Some("/v1/".into()),
                pool: 1,
                line: 13
            }
        );
        assert_eq!(r.routes[1].host, Some(HostMatch::Suffix(".example.com".into())));
        assert_eq!((r.default, r.default_line), (Fallback::Pool(0), 22));
        assert_eq!(r.summary(), "2 pools (4 backends), 2 routes, default pool web");
    }

    #[test]
    fn no_default_rejects_with_503_and_reject_forms() {
        let base = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\"]\n";
        assert_eq!(Rules::parse(base, "f").unwrap().default, Fallback::Reject(Reject::Http503));
        for (w, want) in [("503", Reject::Http503), ("\"503\"", Reject::Http503), ("\"rst\"", Reject::Reset)] {
            let r = Rules::parse(&format!("{base}[default]\nreject = {w}\n"), "f").unwrap();
            assert_eq!(r.default, Fallback::Reject(want), "{w}");
        }
    }

    #[test]
    fn host_matching() {
        let exact = parse_host("A.Test").unwrap();
        assert!(exact.matches("a.test") && exact.matches("A.TEST") && !exact.matches("b.a.test"));
        let wild = parse_host("*.test").unwrap();
        assert!(wild.matches("a.test") && wild.matches("x.Y.TEST") && !wild.matches("test") && !wild.matches("atest"));
        assert_eq!(parse_host("[::1]").unwrap(), HostMatch::Exact("[::1]".into()));
        assert!(parse_host("*.").is_err() && parse_host("a b").is_err() && parse_host("a.test:80").is_err());
    }

    #[test]
    fn every_check_error_has_its_line() {
        let text = r#"[[pool]]
name = "web"
backends = ["10.0.0.1:80", "10.0.0.1", "web1:80", "10.0.0.2:0",
            { addr = "10.0.0.3:80", weight = 0 }, "10.0.0.1:80"]
balance = "rr"

[[pool]]
name = "web"
backends = []

[[pool]]
name = "h"
backends = ["10.0.0.9:80"]
balance = "hash-header"

[[pool]]
name = "x"
backends = ["10.0.0.8:80"]
hash_header = "X-User"
down_ms = -1

[[pool]]
backends = ["10.0.0.7:80"]

[[route]]
host = "a.test:8080"
pool = "web"

[[route]]
path_prefix = "api"
pool = "nope"

[[route]]
host = "b.test"

[default]
reject = "404"
"#;
        let got = errors(text);
        let want = [
            "r.toml:3: backend \"10.0.0.1\" is not ADDRESS:PORT",
            "r.toml:3: backend \"web1:80\" is not ADDRESS:PORT (names are not resolved)",
            "r.toml:3: backend \"10.0.0.2:0\" has port 0",
            "r.toml:4: backend weight 0 is out of range; use an integer from 1 to 1000",
            "r.toml:4: backend 10.0.0.1:80 is listed twice (first on line 3)",
            "r.toml:5: unknown balance \"rr\"; use round-robin, least-connections, hash-client or hash-header",
            "r.toml:8: pool \"web\" is defined twice (first on line 2); rename one",
            "r.toml:9: pool has no backends",
            "r.toml:14: balance = \"hash-header\" without `hash_header`; add hash_header",
            "r.toml:19: hash_header is set but balance is round-robin",
            "r.toml:20: down_ms -1 is out of range",
            "r.toml:22: pool without `name`",
            "r.toml:26: host \"a.test:8080\" has a port",
            "r.toml:30: path_prefix \"api\" does not start with `/`",
            "r.toml:31: no pool named \"nope\"; use one of: h, web, x",
            "r.toml:33: route without `pool`",
            "r.toml:37: unknown reject \"404\"; use reject = \"503\"",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "got {g:?}\nwant {w:?}…");
            assert!(g.contains("; "), "no fix in {g:?}");
        }
    }

    #[test]
    fn default_errors() {
        let base = "[[pool]]\nname = \"p\"\nbackends = [\"10.0.0.1:80\"]\n[default]\n";
        assert_eq!(errors(&format!("{base}pool = \"q\"\n")), ["r.toml:5: no pool named \"q\"; use one of: p"]);
        assert!(
            errors(&format!("{base}pool = \"p\"\nreject = \"rst\"\n"))[0].starts_with("r.toml:6: [default] has both")
        );
        assert!(errors(base)[0].starts_with("r.toml:4: [default] without `pool` or `reject`"));
    }

    #[test]
    fn toml_errors_are_one_line_with_the_line() {
        let got = errors("[[pool]]\nname = \"a\"\nbalanc = \"x\"\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("r.toml:3: unknown field `balanc`, expected one of"), "{got:?}");
        assert!(got[0].ends_with("; fix the TOML (the format is in rules.example.toml)"));
        let got = errors("[[pool]]\nname = \"a\"\nbackends = [\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("r.toml:4: ") && !got[0].contains('\n'), "{got:?}");
        assert!(errors("[pool]\nname = \"a\"\n")[0].starts_with("r.toml:1: invalid type: map, expected a sequence"));
        assert_eq!(
            errors(""),
            ["r.toml:1: no [[pool]] defined; add one with `name` and `backends = [\"ADDR:PORT\", ...]`"]
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../rules.example.toml");
        let r = Rules::parse(text, "rules.example.toml").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.pools.len() >= 3 && r.routes.len() >= 2, "{r:?}");
    }
}
