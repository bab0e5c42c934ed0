//! The request as the splicer hands it over: the client's first data
//! segment, parsed with `httparse` without copying.
//!
//! This module only reads bytes; it knows nothing of rules or backends.
//! The segment may end anywhere (it is at most one MSS): a request whose
//! header block is cut short is still read up to its last complete line,
//! so the request line and the headers before the cut are there
//! ([`ParseState::Partial`]). A request line that cannot be read at all
//! gives [`ParseState::Unparsed`] and nothing else.

use httparse::{ParserConfig, Status, EMPTY_HEADER};

/// Most headers read from one request; a request with more is unparsed.
pub const MAX_HEADERS: usize = 64;
/// Most request bytes looked at (the rest is treated as not yet arrived).
pub const MAX_REQUEST: usize = 16 * 1024;

/// How much of the request could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseState {
    /// The whole header block (up to the blank line).
    Complete,
    /// The request line and the header lines before the segment ended.
    Partial,
    /// Not even a request line: not HTTP/1, or cut inside the first line.
    Unparsed,
}

/// One parsed request, borrowing the segment (or the parser's scratch).
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub state: ParseState,
    /// `GET`, `POST`, ... (empty when unparsed).
    pub method: &'a str,
    /// The path of the target, query and fragment cut off (for an
    /// absolute-form target `http://host/p`, just `/p`).
    pub path: &'a str,
    /// The host: from an absolute-form target, else the first `Host`
    /// header; without port and trailing dot, case as sent.
    pub host: Option<&'a str>,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> Request<'a> {
    fn unparsed() -> Request<'static> {
        Request { state: ParseState::Unparsed, method: "", path: "", host: None, headers: &[] }
    }

    /// The value of the first header called `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.trim_ascii())
    }

    /// How many headers were read.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
}

/// `a.test:8080` → `a.test`, `[::1]:80` → `[::1]`, `a.test.` → `a.test`.
pub fn strip_port(raw: &str) -> Option<&str> {
    let h = raw.trim();
    let h = match h.strip_prefix('[') {
        Some(_) => h.find(']').map_or(h, |i| &h[..=i]),
        None => h.split(':').next().unwrap_or(h),
    };
    let h = h.trim_end_matches('.');
    (!h.is_empty()).then_some(h)
}

/// Splits an absolute-form target (`http://a.test:80/x?y`) into its host
/// and path; `None` for origin form (`/x`) and everything else.
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme_end = target.find("://")?;
    if !target[..scheme_end].eq_ignore_ascii_case("http") && !target[..scheme_end].eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let (authority, path) = rest.find(['/', '?', '#']).map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    Some((authority, if path.starts_with('/') { path } else { "/" }))
}

fn view<'a>(state: ParseState, req: &'a httparse::Request<'_, 'a>) -> Request<'a> {
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Request::unparsed();
    };
    let headers: &'a [httparse::Header<'a>] = req.headers;
    let from_header = || {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(strip_port)
    };
    let (host, path) = match absolute_form(target) {
        Some((authority, path)) => (strip_port(authority).or_else(from_header), path),
        None => (from_header(), target),
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Request { state, method, path, host, headers }
}

fn config() -> ParserConfig {
    let mut c = ParserConfig::default();
    c.allow_multiple_spaces_in_request_line_delimiters(true).ignore_invalid_headers_in_requests(true);
    c
}

/// Parses requests; keeps a scratch buffer for cut-short ones so that
/// parsing allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Parser {
    scratch: Vec<u8>,
}

impl Parser {
    /// Parses `bytes` and calls `f` with what could be read.
    pub fn with_request<R>(&mut self, bytes: &[u8], f: impl FnOnce(&Request<'_>) -> R) -> R {
        let cut = bytes.len() > MAX_REQUEST;
        let bytes = &bytes[..bytes.len().min(MAX_REQUEST)];
        let config = config();
        {
            let mut headers = [EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match config.parse_request(&mut req, bytes) {
                Ok(Status::Complete(_)) => return f(&view(ParseState::Complete, &req)),
                Ok(Status::Partial) => {}
                Err(_) if cut => {}
                Err(_) => return f(&Request::unparsed()),
            }
        }
        // Cut short: keep the complete lines, end the header block there.
        let Some(last_nl) = bytes.iter().rposition(|&b| b == b'\n') else {
            return f(&Request::unparsed());
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(&bytes[..=last_nl]);
        self.scratch.extend_from_slice(b"\r\n");
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match config.parse_request(&mut req, &self.scratch) {
            Ok(Status::Complete(_)) => f(&view(ParseState::Partial, &req)),
            _ => f(&Request::unparsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (ParseState, String, String, Option<String>, Option<Vec<u8>>) {
        Parser::default().with_request(bytes, |r| {
            (
                r.state,
                r.method.to_owned(),
                r.path.to_owned(),
                r.host.map(str::to_owned),
                r.header("x-user").map(<[u8]>::to_vec),
            )
        })
    }

    #[test]
    fn complete_request() {
        let (s, m, p, h, u) = parse(b"GET /api/x?y=1 HTTP/1.1\r\nhOsT: A.Test:8080\r\nX-User:  alice \r\n\r\nbody");
        assert_eq!((s, m.as_str(), p.as_str(), h.as_deref()), (ParseState::Complete, "GET", "/api/x", Some("A.Test")));
        assert_eq!(u.as_deref(), Some(&b"alice"[..]));
    }

    #[test]
    fn partial_request_keeps_complete_lines() {
        let (s, m, p, h, u) = parse(b"POST /up HTTP/1.1\r\nHost: a.test\r\nX-User: bo");
        assert_eq!(
            (s, m.as_str(), p.as_str(), h.as_deref(), u),
            (ParseState::Partial, "POST", "/up", Some("a.test"), None)
        );
        let (s, _, p, h, _) = parse(b"GET /only-line HTTP/1.1\r\n");
        assert_eq!((s, p.as_str(), h), (ParseState::Partial, "/only-line", None));
        let (s, _, _, h, _) = parse(b"GET / HTTP/1.1\r\nHost: a.test\r\nX-");
        assert_eq!((s, h.as_deref()), (ParseState::Partial, Some("a.test")));
    }

    #[test]
    fn garbage_and_cut_request_lines_are_unparsed() {
        for bytes in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET /no-end HTT",
            b"",
            b"\r\n\r\n",
            b"hello world\r\n",
        ] {
            let (s, m, _, h, _) = parse(bytes);
            assert_eq!((s, m.as_str(), h), (ParseState::Unparsed, "", None), "{bytes:?}");
        }
    }

    #[test]
    fn absolute_form_target_names_the_host() {
        let (_, _, p, h, _) = parse(b"GET http://b.test:81/p/q?x HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!((p.as_str(), h.as_deref()), ("/p/q", Some("b.test")));
        let (_, _, p, h, _) = parse(b"GET https://user@c.test HTTP/1.1\r\n\r\n");
        assert_eq!((p.as_str(), h.as_deref()), ("/", Some("c.test")));
    }

    #[test]
    fn hosts_lose_port_and_trailing_dot() {
        assert_eq!(strip_port("a.test:80"), Some("a.test"));
        assert_eq!(strip_port(" a.test. "), Some("a.test"));
        assert_eq!(strip_port("[::1]:8080"), Some("[::1]"));
        assert_eq!(strip_port(":80"), None);
    }

    #[test]
    fn too_many_headers_is_unparsed_and_long_requests_are_cut() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many).0, ParseState::Unparsed);
        let mut long = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Long: ".to_vec();
        long.resize(MAX_REQUEST + 100, b'a');
        let (s, _, _, h, _) = parse(&long);
        assert_eq!((s, h.as_deref()), (ParseState::Partial, Some("a.test")));
    }
}
