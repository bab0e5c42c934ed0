//! The Prometheus endpoint (`[metrics] listen`): `GET /metrics` answers
//! in the text format of [`controller::metrics::render`], served by
//! [`crate::http`] (which also serves the web view, from the same socket
//! when `web.listen` is the same address).
//!
//! A scrape reads no counter itself: [`crate::http`] asks the main loop for
//! the same [`Stats`] value `uboxctl stats` gets, fresh for each scrape
//! (so that a scrape taken after `uboxctl stats` never shows less), and
//! this renders it. A main loop busy for more than
//! [`crate::http::ANSWER_TIMEOUT`] gets the scrape a 503.
//!
//! This module must not touch the data path, DPDK, or the counters.

use controller::api::Stats;

use crate::http::Reply;

/// The answer to a scrape of `stats`.
pub(crate) fn reply(stats: &Stats) -> Reply {
    Reply::new(controller::metrics::CONTENT_TYPE, controller::metrics::render(stats))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use controller::api::Stats;

    use crate::http::tests::{get, header, local, MainLoop};
    use crate::http::Snapshot;

    #[test]
    fn serves_the_main_loops_stats_at_metrics_only() {
        let ep = local(true, false);
        let addr = ep.addrs()[0].0;
        let main = MainLoop::start(ep.start(Duration::from_secs(5)).unwrap(), |_| Snapshot {
            stats: Stats { instance: "t\"1".into(), uptime_ms: 1500, ..Default::default() },
            ..Default::default()
        });
        let (status, headers, body) = get(addr, "GET", "/metrics");
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "content-type"), "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            body.contains("ubox_info{instance=\"t\\\"1\",") && body.contains("\nubox_uptime_seconds 1.5\n"),
            "{body}"
        );
        let (status, _, body) = get(addr, "GET", "/metrics?x=1");
        assert_eq!(status, 200, "{body}");
        let (status, headers, body) = get(addr, "HEAD", "/metrics");
        assert_eq!((status, body.as_str()), (200, ""));
        assert!(header(&headers, "content-length").parse::<usize>().unwrap() > 100, "{headers:?}");
        let (status, _, body) = get(addr, "GET", "/");
        assert_eq!(status, 404, "no web view on this address");
        assert!(body.contains("this address serves /metrics"), "{body}");
        assert_eq!(get(addr, "GET", "/metricsx").0, 404);
        let (status, headers, _) = get(addr, "POST", "/metrics");
        assert_eq!((status, header(&headers, "allow")), (405, "GET, HEAD"));
        let (_, answered) = main.stop();
        assert_eq!(answered, 3, "one Stats per scrape that reached the main loop");
    }
}
