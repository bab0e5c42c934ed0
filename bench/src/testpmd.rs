//! Drives `dpdk-testpmd`: in interactive mode over a pipe (start
//! forwarding, read port counters at the start and end of the window,
//! quit) for the replay scenarios, and as a plain forwarder that runs until
//! its stdin closes ([`Forwarding`]) for real traffic.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::result::Measurement;

/// Warm-up before the window opens.
const WARMUP: Duration = Duration::from_millis(1500);

#[derive(Default, Clone, Copy, Debug)]
struct PortCounts {
    rx_bytes: u64,
    tx_packets: u64,
}

/// Forward from port 0 to port 1 with `mode` (`io`, `macswap`, ...) on one
/// forwarding lcore, and measure what leaves port 1.
pub fn measure(vdevs: &[String], mode: &str, window: Duration) -> anyhow::Result<Measurement> {
    // testpmd's stdout is block-buffered on a pipe; stdbuf makes it
    // line-buffered so each stats answer arrives when asked for.
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "dpdk-testpmd", "-l", "0,1", "--in-memory", "--no-pci", "--file-prefix=ubox-bench-testpmd"]);
    for v in vdevs {
        cmd.args(["--vdev", v]);
    }
    cmd.args(["--", "-i", &format!("--forward-mode={mode}"), "--total-num-mbufs=16384", "--nb-cores=1"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dpdk-testpmd (install dpdk-dev: scripts/setup.sh)")?;
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let result = (|| -> anyhow::Result<Measurement> {
        // The prompt that follows has no newline; the last full line before
        // it is the link check.
        wait_for(&rx, |l| l.contains("Checking link statuses"), Duration::from_secs(20))
            .context("testpmd did not come up")?;
        std::thread::sleep(Duration::from_millis(500));
        writeln!(stdin, "start")?;
        std::thread::sleep(WARMUP);
        let (t0, a) = snapshot(&mut stdin, &rx)?;
        std::thread::sleep(window);
        let (t1, b) = snapshot(&mut stdin, &rx)?;
        let dt = (t1 - t0).as_secs_f64();
        let pkts = b[1].tx_packets.saturating_sub(a[1].tx_packets) as f64;
        // net_null does not count TX bytes; every packet the pcap port
        // received is forwarded, so its RX bytes are the forwarded bytes.
        let bytes = b[0].rx_bytes.saturating_sub(a[0].rx_bytes) as f64;
        if pkts == 0.0 {
            bail!("testpmd forwarded nothing in the window");
        }
        Ok(Measurement { mpps: pkts / dt / 1e6, gbps: bytes * 8.0 / dt / 1e9 })
    })();
    let _ = writeln!(stdin, "stop");
    let _ = writeln!(stdin, "quit");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = reader.join();
    result
}

fn wait_for(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Ok(()),
            Ok(_) => {}
            Err(_) => bail!("timed out"),
        }
    }
}

/// Ask for port stats of ports 0 and 1 and parse them.
fn snapshot(stdin: &mut impl Write, rx: &mpsc::Receiver<String>) -> anyhow::Result<(Instant, [PortCounts; 2])> {
    while rx.try_recv().is_ok() {}
    let t = Instant::now();
    writeln!(stdin, "show port stats all")?;
    stdin.flush()?;
    let mut ports = [PortCounts::default(); 2];
    let mut cur: Option<usize> = None;
    let mut seen = [false; 2];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen[0] && seen[1]) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| anyhow!("no port stats from testpmd"))?;
        if let Some(rest) = line.split("NIC statistics for port").nth(1) {
            cur = rest.split_whitespace().next().and_then(|n| n.parse().ok()).filter(|&n: &usize| n < 2);
            continue;
        }
        let Some(p) = cur else { continue };
        if let Some(v) = field(&line, "RX-bytes:") {
            ports[p].rx_bytes = v;
        }
        if let Some(v) = field(&line, "TX-packets:") {
            ports[p].tx_packets = v;
            seen[p] = true;
        }
    }
    Ok((t, ports))
}

/// What testpmd's exit report says it forwarded and dropped (all ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardTotals {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// The "Accumulated forward statistics for all ports" block of testpmd's
/// output (printed when forwarding stops).
pub fn parse_forward_totals(out: &str) -> Option<ForwardTotals> {
    let block = out.split("Accumulated forward statistics for all ports").nth(1)?;
    let mut t = ForwardTotals::default();
    let mut seen = 0;
    for line in block.lines().take(4) {
        if let (Some(p), Some(d)) = (field(line, "RX-packets:"), field(line, "RX-dropped:")) {
            (t.rx_packets, t.rx_dropped) = (p, d);
            seen += 1;
        }
        if let (Some(p), Some(d)) = (field(line, "TX-packets:"), field(line, "TX-dropped:")) {
            (t.tx_packets, t.tx_dropped) = (p, d);
            seen += 1;
        }
    }
    (seen == 2).then_some(t)
}

/// A non-interactive `dpdk-testpmd` forwarding from the moment it is up
/// until [`Forwarding::stop`] closes its stdin (testpmd then stops, prints
/// its forward statistics and exits). Stopped on drop.
pub struct Forwarding {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Forwarding {
    /// `lcores` is EAL's `--lcores` (main lcore first, then the one
    /// forwarding lcore); `extra` goes to testpmd after `--`. Output goes to
    /// `log`. Returns once testpmd says it is forwarding.
    pub fn start(
        vdevs: &[String],
        mode: &str,
        lcores: &str,
        extra: &[String],
        log: &Path,
    ) -> anyhow::Result<Forwarding> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        // Line-buffered, so the "forwarding" line reaches the log at once.
        let mut cmd = Command::new("stdbuf");
        cmd.args([
            "-oL",
            "dpdk-testpmd",
            "--lcores",
            lcores,
            "--in-memory",
            "--no-pci",
            "--file-prefix=ubox-bench-e2e",
        ]);
        for v in vdevs {
            cmd.args(["--vdev", v]);
        }
        cmd.args(["--", &format!("--forward-mode={mode}"), "--nb-cores=1"]);
        cmd.args(extra);
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting dpdk-testpmd (install dpdk-dev: scripts/setup.sh)")?;
        let mut f = Forwarding { child, stdin: None, log: log.to_path_buf() };
        f.stdin = f.child.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Press enter to exit") {
                return Ok(f);
            }
            if let Some(st) = f.child.try_wait()? {
                let tail: Vec<&str> = text.lines().rev().take(6).collect();
                bail!(
                    "dpdk-testpmd exited ({st}) during start-up: {} (log {})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!("dpdk-testpmd did not start forwarding within 20 s (log {})", log.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// testpmd's process id (stdbuf execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Close stdin, wait for the exit, and read the forward totals.
    pub fn stop(&mut self) -> anyhow::Result<ForwardTotals> {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("dpdk-testpmd did not exit within 15 s of its stdin closing (killed)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        parse_forward_totals(&text)
            .ok_or_else(|| anyhow!("no forward statistics in dpdk-testpmd's output ({})", self.log.display()))
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.split(name).nth(1)?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_forward_totals() {
        let out = "  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 4              RX-dropped: 0             RX-total: 4
  TX-packets: 4              TX-dropped: 0             TX-total: 4
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 1208           RX-dropped: 3             RX-total: 1211
  TX-packets: 1200           TX-dropped: 8             TX-total: 1208
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
";
        let t = super::parse_forward_totals(out).unwrap();
        assert_eq!(t, super::ForwardTotals { rx_packets: 1208, rx_dropped: 3, tx_packets: 1200, tx_dropped: 8 });
        assert_eq!(super::parse_forward_totals("Press enter to exit"), None);
    }

    #[test]
    fn parses_testpmd_stat_fields() {
        let l = "  TX-packets: 34842336   TX-errors: 0          TX-bytes:  0";
        assert_eq!(super::field(l, "TX-packets:"), Some(34842336));
        assert_eq!(super::field(l, "TX-bytes:"), Some(0));
        assert_eq!(super::field(l, "RX-bytes:"), None);
    }
}
