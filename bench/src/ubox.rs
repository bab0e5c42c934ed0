//! Runs `ubox-runtime` (the release binary next to this one) and reads its
//! counters over the control socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use controller::api::{self, Request, Response, Stats};

use crate::result::Measurement;

const WARMUP: Duration = Duration::from_millis(1500);
/// The runtime instance this bench process starts: its own name, so that
/// two benches on one machine never talk to each other's runtime.
pub fn instance() -> String {
    format!("ubox-bench-{}", std::process::id())
}

/// A binary built next to this one (`cargo build --release`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(name);
    if !bin.exists() {
        bail!("{} not found: build it with cargo build --release", bin.display());
    }
    Ok(bin)
}

pub fn runtime_binary() -> anyhow::Result<PathBuf> {
    sibling_binary("ubox-runtime")
}

pub struct Running {
    child: Child,
    pub socket: PathBuf,
}

impl Running {
    pub fn start(config: &str) -> anyhow::Result<Running> {
        Self::start_with_chains(config, None)
    }

    /// Starts the runtime with `chains` (a chain file's text) applied before
    /// the first packet, so the replayed flows, which never end, get them.
    pub fn start_with_chains(config: &str, chains: Option<&str>) -> anyhow::Result<Running> {
        Self::start_binary(&runtime_binary()?, config, chains, &[])
    }

    /// Starts `binary` (an `ubox-runtime`, e.g. an experimental build) with
    /// `config`, optional `chains` and extra environment variables.
    pub fn start_binary(
        binary: &Path,
        config: &str,
        chains: Option<&str>,
        env: &[(String, String)],
    ) -> anyhow::Result<Running> {
        if !binary.exists() {
            bail!("{} not found: build it with cargo build --release", binary.display());
        }
        let dir = std::env::temp_dir().join(format!("ubox-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("runtime.toml");
        std::fs::write(&cfg, config)?;
        let mut extra = Vec::new();
        if let Some(text) = chains {
            let file = dir.join("chains.toml");
            std::fs::write(&file, text)?;
            extra = vec!["--chains".into(), file.into_os_string()];
        }
        let log = std::fs::File::create(dir.join("runtime.log"))?;
        let child = Command::new(binary)
            .args(&extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting ubox-runtime")?;
        let mut r = Running { child, socket: api::default_socket(&instance()) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Response::Pong { .. }) = api::call(&r.socket, &Request::Ping, Duration::from_secs(1)) {
                return Ok(r);
            }
            if let Some(st) = r.child.try_wait()? {
                bail!("ubox-runtime exited ({st}) during start-up; log: {}", dir.join("runtime.log").display());
            }
            if Instant::now() > deadline {
                r.stop();
                bail!("ubox-runtime did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The runtime's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&self) -> anyhow::Result<(Instant, Stats)> {
        let t = Instant::now();
        match api::call(&self.socket, &Request::Stats, Duration::from_secs(5)).map_err(|e| anyhow!(e))? {
            Response::Stats(s) => Ok((t, s)),
            other => bail!("unexpected answer {other:?}"),
        }
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The runtime config for wire mode from a `net_pcap` replay of `pcap`
/// into a `net_null` sink, one worker on CPU 1.
pub fn wire_config(pcap: &Path) -> String {
    format!(
        r#"[runtime]
name = "{instance}"
workers = 1
main_cpu = 0
worker_cpus = [1]

[[port]]
name = "replay"
driver = "pcap"
args = "rx_pcap={},infinite_rx=1"

[[port]]
name = "sink"
driver = "null"
args = "no-rx=1"

[[wire]]
ports = ["replay", "sink"]
"#,
        pcap.display(),
        instance = instance()
    )
}

/// Forwarded packets and bytes on the sink port.
pub fn sink_counts(s: &Stats) -> (u64, u64) {
    s.port("sink").map(|p| (p.tx_packets, p.tx_bytes)).unwrap_or_default()
}

/// Measure a running runtime's forwarding over `window` after a warm-up.
pub fn measure_running(rt: &Running, window: Duration) -> anyhow::Result<(Measurement, Stats, Stats)> {
    std::thread::sleep(WARMUP);
    let (t0, a) = rt.stats()?;
    std::thread::sleep(window);
    let (t1, b) = rt.stats()?;
    let dt = (t1 - t0).as_secs_f64();
    let (p0, b0) = sink_counts(&a);
    let (p1, b1) = sink_counts(&b);
    if p1 <= p0 {
        bail!("ubox-runtime forwarded nothing in the window");
    }
    Ok((Measurement { mpps: (p1 - p0) as f64 / dt / 1e6, gbps: (b1 - b0) as f64 * 8.0 / dt / 1e9 }, a, b))
}

/// Wire mode from a `net_pcap` replay of `pcap` into a `net_null` sink.
pub fn measure_wire(pcap: &Path, window: Duration) -> anyhow::Result<Measurement> {
    let mut rt = Running::start(&wire_config(pcap))?;
    let m = measure_running(&rt, window)?.0;
    rt.stop();
    Ok(m)
}
