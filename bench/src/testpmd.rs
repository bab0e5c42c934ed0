//! Drives `dpdk-testpmd` in interactive mode over a pipe: start forwarding,
//! read port counters at the start and end of the window, quit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
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

fn field(line: &str, name: &str) -> Option<u64> {
    line.split(name).nth(1)?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_testpmd_stat_fields() {
        let l = "  TX-packets: 34842336   TX-errors: 0          TX-bytes:  0";
        assert_eq!(super::field(l, "TX-packets:"), Some(34842336));
        assert_eq!(super::field(l, "TX-bytes:"), Some(0));
        assert_eq!(super::field(l, "RX-bytes:"), None);
    }
}
