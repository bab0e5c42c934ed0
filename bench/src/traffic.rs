//! Real traffic generators for the e2e scenario: `wrk` (HTTP requests per
//! second and latency percentiles) and `iperf3` (TCP throughput), run in
//! the testbed's client namespace and pinned to CPUs with `taskset`, and
//! the parsers for what they print (`wrk --latency`, `iperf3 -J`).
//!
//! Owns nothing long-lived: each call starts one client, waits for it (with
//! a deadline) and parses its output. The servers (nginx, `iperf3 -s`) are
//! the e2e module's.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// What one `wrk --latency` run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// The slowest request (the `Max` of wrk's latency line).
    pub max_ms: f64,
    pub requests: u64,
    /// connect + read + write + timeout socket errors.
    pub socket_errors: u64,
    pub timeouts: u64,
    /// Responses that were not 2xx or 3xx.
    pub bad_status: u64,
}

/// What one `iperf3 -J` client run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IperfResult {
    /// Received by the server, over the test.
    pub gbps: f64,
    pub retransmits: u64,
}

/// A duration as wrk prints it (`165.00us`, `1.69ms`, `2.01s`, `1.00m`), in
/// milliseconds.
pub fn parse_wrk_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(v * scale)
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p90, mut p99) = (None, None, None, None);
    let mut in_dist = false;
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, val)) = t.split_once('%') {
                let v = parse_wrk_duration_ms(val);
                match pct.trim() {
                    "50" => p50 = v,
                    "90" => p90 = v,
                    "99" => p99 = v,
                    "75" => r.p75_ms = v.unwrap_or(0.0),
                    _ => in_dist = false,
                }
                continue;
            }
            in_dist = false;
        }
        if let Some(v) = t.strip_prefix("Latency ") {
            // "Latency   798.23us  623.05us  15.12ms   98.63%": avg, stdev, max.
            if let Some(max) = v.split_whitespace().nth(2).and_then(parse_wrk_duration_ms) {
                r.max_ms = max;
            }
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.bad_status = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                let mut it = part.split_whitespace();
                if let (Some(kind), Some(n)) = (it.next(), it.next().and_then(|n| n.parse::<u64>().ok())) {
                    r.socket_errors += n;
                    if kind == "timeout" {
                        r.timeouts = n;
                    }
                }
            }
        } else if let Some((n, rest)) = t.split_once(" requests in ") {
            if rest.contains("read") {
                r.requests = n.trim().parse().unwrap_or(0);
            }
        }
    }
    match (rps, p50, p90, p99) {
        (Some(rps), Some(p50), Some(p90), Some(p99)) => {
            r.requests_per_s = rps;
            r.p50_ms = p50;
            r.p90_ms = p90;
            r.p99_ms = p99;
            Ok(r)
        }
        _ => bail!("cannot parse wrk output (was --latency given?): {}", first_lines(out, 12)),
    }
}

/// Parses `iperf3 -J` client output.
pub fn parse_iperf3(json: &str) -> anyhow::Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("iperf3 -J output is not JSON: {}", first_lines(json, 5)))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let end = v.get("end").ok_or_else(|| anyhow!("iperf3 -J output has no `end` section"))?;
    let bps = end
        .pointer("/sum_received/bits_per_second")
        .and_then(|b| b.as_f64())
        .ok_or_else(|| anyhow!("iperf3 -J output has no end.sum_received.bits_per_second"))?;
    let retransmits = end.pointer("/sum_sent/retransmits").and_then(|r| r.as_u64()).unwrap_or(0);
    Ok(IperfResult { gbps: bps / 1e9, retransmits })
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join(" | ")
}

/// Run `cmd` to completion within `timeout`, returning its stdout; stderr
/// goes into the error when it fails.
pub fn run_with_deadline(cmd: &mut Command, what: &str, timeout: Duration) -> anyhow::Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        None => bail!("{what} did not finish within {} s", timeout.as_secs()),
        // iperf3 -J reports its errors as JSON on stdout with a non-zero exit.
        Some(st) if !st.success() && out.trim().is_empty() => {
            bail!("{what} failed ({st}): {}", first_lines(&err, 5))
        }
        Some(_) => Ok(out),
    }
}

/// `ip netns exec NS taskset -c CPUS PROG ARGS...`
pub fn in_ns(ns: &str, cpus: &str, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "taskset", "-c", cpus, prog]);
    c
}

/// How a wrk run treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// Keep-alive: each connection carries request after request.
    KeepAlive,
    /// `Connection: close`: a TCP handshake and teardown per request.
    Close,
}

/// One wrk run: `connections` connections on one thread for `seconds`,
/// fetching `url`, from namespace `ns` on `cpus`.
pub fn wrk(
    ns: &str,
    cpus: &str,
    url: &str,
    connections: u32,
    seconds: u64,
    mode: Connections,
) -> anyhow::Result<WrkResult> {
    let mut c = in_ns(ns, cpus, "wrk");
    c.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "--timeout", "2s"]);
    if mode == Connections::Close {
        c.args(["-H", "Connection: close"]);
    }
    c.arg(url);
    let out = run_with_deadline(&mut c, "wrk", Duration::from_secs(seconds + 20))?;
    parse_wrk(&out)
}

/// One single-stream iperf3 upload of `seconds` from namespace `ns` to
/// `server:port`, the client on `cpus`.
pub fn iperf3(ns: &str, cpus: &str, server: &str, port: u16, seconds: u64) -> anyhow::Result<IperfResult> {
    let mut c = in_ns(ns, cpus, "iperf3");
    c.args(["-c", server, "-p", &port.to_string(), "-t", &seconds.to_string(), "-J", "--connect-timeout", "3000"]);
    let out = run_with_deadline(&mut c, "iperf3", Duration::from_secs(seconds + 20))?;
    parse_iperf3(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 4s test @ http://10.10.0.11/1k.bin
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   798.23us  623.05us  15.12ms   98.63%
    Req/Sec    20.82k     6.03k   32.74k    65.00%
  Latency Distribution
     50%  697.00us
     75%    1.01ms
     90%    1.13ms
     99%    1.69ms
  82817 requests in 4.00s, 99.83MB read
Requests/sec:  20698.35
Transfer/sec:     24.95MB
";

    #[test]
    fn parses_wrk_latency_output() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests_per_s, 20698.35);
        assert!((r.p50_ms - 0.697).abs() < 1e-9, "{r:?}");
        assert!((r.p75_ms - 1.01).abs() < 1e-9);
        assert!((r.p90_ms - 1.13).abs() < 1e-9);
        assert!((r.p99_ms - 1.69).abs() < 1e-9);
        assert!((r.max_ms - 15.12).abs() < 1e-9);
        assert_eq!(r.requests, 82817);
        assert_eq!((r.socket_errors, r.timeouts, r.bad_status), (0, 0, 0));
    }

    #[test]
    fn parses_wrk_errors_and_long_latencies() {
        let out = WRK.replace("     99%    1.69ms", "     99%    2.01s").replace(
            "Requests/sec:",
            "  Socket errors: connect 3, read 2, write 0, timeout 7\n  Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let r = parse_wrk(&out).unwrap();
        assert!((r.p99_ms - 2010.0).abs() < 1e-9, "{r:?}");
        assert_eq!((r.socket_errors, r.timeouts, r.bad_status), (12, 7, 5));
    }

    #[test]
    fn wrk_without_latency_distribution_is_an_error() {
        let out: String =
            WRK.lines().filter(|l| !l.contains('%') || l.contains("Stdev")).collect::<Vec<_>>().join("\n");
        let e = parse_wrk(&out).unwrap_err().to_string();
        assert!(e.contains("--latency"), "{e}");
        assert!(parse_wrk("unable to connect to 10.10.0.11:80 Connection refused").is_err());
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(parse_wrk_duration_ms("165.00us"), Some(0.165));
        assert_eq!(parse_wrk_duration_ms(" 1.5ms"), Some(1.5));
        assert_eq!(parse_wrk_duration_ms("2.00s"), Some(2000.0));
        assert_eq!(parse_wrk_duration_ms("1.00m"), Some(60000.0));
        assert_eq!(parse_wrk_duration_ms("12"), None);
        assert_eq!(parse_wrk_duration_ms("1.0xs"), None);
    }

    #[test]
    fn parses_iperf3_json() {
        let j = r#"{"start": {"connected": []}, "intervals": [],
            "end": {"sum_sent": {"bytes": 1000, "bits_per_second": 2.6e9, "retransmits": 12},
                    "sum_received": {"bytes": 990, "bits_per_second": 2.5e9}}}"#;
        let r = parse_iperf3(j).unwrap();
        assert_eq!(r, IperfResult { gbps: 2.5, retransmits: 12 });
    }

    #[test]
    fn iperf3_errors_are_reported() {
        let e = parse_iperf3(
            r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(parse_iperf3("iperf3: error").is_err());
        assert!(parse_iperf3(r#"{"end": {}}"#).unwrap_err().to_string().contains("sum_received"));
    }
}
