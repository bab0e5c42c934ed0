//! Foreign CPU load during a measurement window: CPU time used by processes
//! that are neither this benchmark nor its descendants (the forwarder,
//! wrk, nginx, iperf3) nor kernel threads, read from `/proc`. On a machine
//! shared with other work this says how much a round was disturbed; it is
//! printed with each round and kept in the results, never subtracted.
//! Kernel threads' CPU (ksoftirqd, kworkers) is reported beside it: part of
//! it is work our own traffic caused, so it only informs.
//!
//! It also counts how often the scheduler preempted a DPDK forwarder's
//! worker lcore thread ([`worker_preemptions`]): a busy-polling forwarder
//! that shares its CPU with anything runnable is time-sliced, and packets
//! wait for its next slice.
//!
//! Processes that exit inside the window are missed (their time is gone
//! from `/proc`), so the figure is a lower bound.

use std::collections::HashMap;
use std::time::Instant;

/// (pid, ppid, utime + stime in clock ticks) from one `/proc/<pid>/stat`.
pub fn parse_stat(s: &str) -> Option<(u32, u32, u64)> {
    let pid = s.split_whitespace().next()?.parse().ok()?;
    // The command name is in parentheses and may hold spaces and ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pid, ppid, utime + stime))
}

fn snapshot() -> Vec<(u32, u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .collect()
}

/// Whose a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// This benchmark or one of its descendants.
    Ours,
    /// A kernel thread (pid 2 and its children): softirq threads, workers.
    Kernel,
    /// Anything else: other people's work on the machine.
    Foreign,
}

/// Ticks of every process by pid, with its owner as seen from `me`.
pub fn classify(procs: &[(u32, u32, u64)], me: u32) -> HashMap<u32, (Owner, u64)> {
    let parent: HashMap<u32, u32> = procs.iter().map(|&(p, pp, _)| (p, pp)).collect();
    let owner = |mut p: u32| {
        for _ in 0..64 {
            if p == me {
                return Owner::Ours;
            }
            if p == 2 {
                return Owner::Kernel;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return Owner::Foreign,
            }
        }
        Owner::Foreign
    };
    procs.iter().map(|&(p, _, t)| (p, (owner(p), t))).collect()
}

/// Started at the beginning of a window; [`ForeignCpu::cpus`] at its end.
pub struct ForeignCpu {
    start: Instant,
    base: HashMap<u32, (Owner, u64)>,
    me: u32,
    hz: f64,
}

/// CPUs kept busy over a window, on average, by owner.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub foreign: f64,
    /// Kernel threads (ksoftirqd, kworkers, ...): partly work our traffic
    /// caused, so informational only.
    pub kernel: f64,
}

impl ForeignCpu {
    pub fn start() -> ForeignCpu {
        let me = std::process::id();
        ForeignCpu { start: Instant::now(), base: classify(&snapshot(), me), me, hz: clock_ticks() }
    }

    /// What foreign processes and kernel threads used since `start`.
    pub fn cpus(&self) -> Load {
        let now = classify(&snapshot(), self.me);
        let dt = self.start.elapsed().as_secs_f64();
        if dt <= 0.0 {
            return Load::default();
        }
        let used = |who: Owner| {
            let ticks: u64 = now
                .iter()
                .filter(|(_, (o, _))| *o == who)
                .map(|(p, &(_, t))| t.saturating_sub(self.base.get(p).map_or(0, |b| b.1)))
                .sum();
            ticks as f64 / self.hz / dt
        };
        Load { foreign: used(Owner::Foreign), kernel: used(Owner::Kernel) }
    }
}

/// Involuntary context switches of the DPDK worker lcore thread of process
/// `pid` (the thread EAL names `rte-worker-N`): how often the scheduler took
/// the forwarding core away from the poll loop. `None` without one.
pub fn worker_preemptions(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("rte-worker") {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).ok()?;
        let n = parse_nonvoluntary(&status)?;
        total = Some(total.unwrap_or(0) + n);
    }
    total
}

/// The `nonvoluntary_ctxt_switches` line of a `/proc/.../status`.
pub fn parse_nonvoluntary(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:")).and_then(|v| v.trim().parse().ok())
}

/// `getconf CLK_TCK` (100 on Linux, whatever the kernel's HZ).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let s = "4242 (rustc (x) y) R 4100 4242 4100 0 -1 4194304 9000 0 0 0 150 25 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_stat(s), Some((4242, 4100, 175)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_and_kernel_threads_are_not_foreign() {
        // 1 init, 2 kthreadd, 10 kworker (child of 2), 100 bench (me), 101
        // forwarder (child of me), 102 nginx worker (child of 101), 200 rustc.
        let procs = [(1, 0, 5), (2, 0, 1), (10, 2, 7), (100, 1, 3), (101, 100, 50), (102, 101, 40), (200, 1, 90)];
        let c = classify(&procs, 100);
        let of = |o: Owner| {
            let mut v: Vec<u32> = c.iter().filter(|(_, (w, _))| *w == o).map(|(p, _)| *p).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(of(Owner::Foreign), vec![1, 200]);
        assert_eq!(of(Owner::Kernel), vec![2, 10]);
        assert_eq!(of(Owner::Ours), vec![100, 101, 102]);
        assert_eq!(c[&200], (Owner::Foreign, 90));
    }

    #[test]
    fn reads_involuntary_context_switches() {
        let st = "Name:\trte-worker-1\nvoluntary_ctxt_switches:\t3\nnonvoluntary_ctxt_switches:\t1742\n";
        assert_eq!(parse_nonvoluntary(st), Some(1742));
        assert_eq!(parse_nonvoluntary("Name:\tx\n"), None);
        // This test process has no DPDK worker thread.
        assert_eq!(worker_preemptions(std::process::id()), None);
    }

    #[test]
    fn measures_something_plausible_here() {
        let f = ForeignCpu::start();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let l = f.cpus();
        assert!((0.0..64.0).contains(&l.foreign) && (0.0..64.0).contains(&l.kernel), "{l:?}");
    }
}
