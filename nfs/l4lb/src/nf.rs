//! The NF around [`Lb`]: a `PKT` subscriber that modifies packets.
//!
//! This module owns the glue only: a copy of each packet goes through
//! [`Lb::process`], and the answer becomes a verdict:
//!
//! | action | verdict |
//! |---|---|
//! | [`Action::Forward`] (DSR) | the new destination MAC written into the arena, `Modified` |
//! | [`Action::Pass`] | `Pass` (not for a VIP: the other direction, ARP, other hosts) |
//! | [`Action::Drop`] | `Drop` |
//! | [`Action::Reply`] | `Pass`: an NF cannot send a packet back out of its port; list the VIP in the runtime port's `ipv4` and the runtime answers ARP and ping for it before any NF |
//! | [`Action::Encap`] | `Drop`: an NF cannot grow a packet (`nf_sdk` writes in place), so `mode = "ipip"` is refused at start-up and never gets here |
//!
//! The load balancer sits behind a mutex shared with the process's main
//! thread, which reads its counters for the report; the callback is the
//! only other user, so the lock is never contended on the data path. A
//! reload (SIGHUP) is applied by the callback itself, between two packets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nf_sdk::{Event, NfBuilder, Verdict};

use crate::config::Config;
use crate::lb::{Action, Lb};

/// What the NF shares with its main thread.
#[derive(Debug)]
pub struct Shared {
    lb: Mutex<Lb>,
    /// Set (by SIGHUP) to read the config file again.
    pub reload: Arc<AtomicBool>,
    /// The file reloads read.
    pub path: PathBuf,
    /// Packets answered `Pass` because they asked for an echo reply.
    pub echo_passed: AtomicU64,
    /// Reloads applied and refused.
    pub reloads: AtomicU64,
    pub reloads_refused: AtomicU64,
    start: Instant,
}

impl Shared {
    pub fn new(lb: Lb, path: PathBuf) -> Arc<Shared> {
        Arc::new(Shared {
            lb: Mutex::new(lb),
            reload: Arc::new(AtomicBool::new(false)),
            path,
            echo_passed: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// The load balancer (for reports); a panic elsewhere does not make it unreadable.
    pub fn lb(&self) -> MutexGuard<'_, Lb> {
        self.lb.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Reads the file again; on success the new config is live, on error
    /// the old one stays (each problem logged as one line).
    pub fn reload_now(&self, lb: &mut Lb) {
        match Config::load(&self.path) {
            Ok(cfg) if cfg.mode != lb.mode() => {
                self.reloads_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{}: mode changed from {} to {}; restart l4lb to change modes (keeping the running config)",
                    self.path.display(),
                    lb.mode().name(),
                    cfg.mode.name()
                );
            }
            Ok(cfg) => {
                let summary = cfg.summary();
                let dropped = lb.reconfigure(cfg);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "reloaded {}: {summary}; {dropped} connection-table entries named a backend no longer there",
                    self.path.display()
                );
            }
            Err(e) => {
                self.reloads_refused.fetch_add(1, Ordering::Relaxed);
                for line in e.lines() {
                    tracing::warn!("{line} (reload refused: keeping the running config)");
                }
            }
        }
    }
}

/// The NF on top of `builder`: subscribes to `PKT`, modifies packets.
pub fn l4lb_nf(builder: NfBuilder, shared: Arc<Shared>) -> NfBuilder {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    builder.version(env!("CARGO_PKG_VERSION")).modifies_packets(true).subscribe("PKT", move |ev: &Event<'_>| {
        let Some(pkt) = ev.packet() else { return Verdict::Pass };
        let mut lb = shared.lb();
        if shared.reload.swap(false, Ordering::Relaxed) {
            shared.reload_now(&mut lb);
        }
        buf.clear();
        buf.extend_from_slice(pkt);
        match lb.process(&mut buf, ev.worker() as usize, shared.now_ms()) {
            Action::Forward { .. } => match ev.write_packet(0, &buf[..6]) {
                Ok(()) => Verdict::Modified,
                Err(_) => Verdict::Drop, // cannot happen: a 6-byte write into a frame of 14 or more
            },
            Action::Pass => Verdict::Pass,
            Action::Drop(_) => Verdict::Drop,
            Action::Reply => {
                shared.echo_passed.fetch_add(1, Ordering::Relaxed);
                Verdict::Pass
            }
            Action::Encap { .. } => Verdict::Drop,
        }
    })
}
