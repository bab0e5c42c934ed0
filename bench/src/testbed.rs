//! What the real-traffic scenarios (`e2e`, `l7lb`) share: the namespace
//! testbed of `scripts/testbed.sh` (its names, bringing it up for a run and
//! down again), processes started in it and stopped by pid, nginx serving
//! the 1 KB object, and the kernel bridge contender.
//!
//! Owns only what a caller asks it to start: a [`Testbed`] guard takes the
//! testbed down at the end if it brought it up (otherwise restores the
//! client sysctls it changed), a [`Proc`] stops its process on drop, an
//! [`Nginx`] is a [`Proc`] with its config directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::traffic;

/// The object nginx serves and its size.
pub const OBJECT: &str = "1k.bin";
pub const OBJECT_BYTES: usize = 1024;

/// The testbed's names (scripts/testbed.sh): namespaces `<prefix>-c`,
/// `<prefix>-sw`, `<prefix>-s1`, `<prefix>-s2` and the box ports in the
/// root namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
    /// The box's client-side port (`UBOX_TB_IC`).
    pub iface_client: String,
    /// The box's server-side port (`UBOX_TB_IS`).
    pub iface_server: String,
}

impl Default for Names {
    /// The default testbed: `ubox-*`, `ubx-c`, `ubx-s`.
    fn default() -> Names {
        Names { prefix: "ubox".into(), iface_client: "ubx-c".into(), iface_server: "ubx-s".into() }
    }
}

impl Names {
    /// From `UBOX_TB`, `UBOX_TB_IC` and `UBOX_TB_IS`, as scripts/testbed.sh
    /// and scripts/lib.sh read them (the defaults where unset or empty).
    pub fn from_env() -> Names {
        let d = Names::default();
        let get = |k: &str, dflt: String| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or(dflt);
        Names {
            prefix: get("UBOX_TB", d.prefix),
            iface_client: get("UBOX_TB_IC", d.iface_client),
            iface_server: get("UBOX_TB_IS", d.iface_server),
        }
    }

    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// Server `i` (1 or 2).
    pub fn server_ns(&self, i: usize) -> String {
        format!("{}-s{i}", self.prefix)
    }

    pub fn namespaces(&self) -> [String; 4] {
        [self.client_ns(), format!("{}-sw", self.prefix), self.server_ns(1), self.server_ns(2)]
    }

    /// The environment scripts/testbed.sh reads these names from.
    fn env(&self) -> [(&'static str, &str); 3] {
        [("UBOX_TB", &self.prefix), ("UBOX_TB_IC", &self.iface_client), ("UBOX_TB_IS", &self.iface_server)]
    }
}

/// The repository root: where `scripts/testbed.sh` is, next to the binary
/// (target/release/..) or the current directory.
pub fn repo_root() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut cands: Vec<PathBuf> = exe.ancestors().skip(1).take(4).map(Path::to_path_buf).collect();
    cands.push(std::env::current_dir()?);
    cands
        .into_iter()
        .find(|d| d.join("scripts/testbed.sh").exists())
        .ok_or_else(|| anyhow!("scripts/testbed.sh not found next to the binary or here: run from the ubox checkout"))
}

/// Runs `cmd` to completion: its stdout, or an error with its stderr.
pub fn sh(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    sh(Command::new("ip").args(args), &format!("ip {}", args.join(" ")))
}

/// An interface of this (the root) namespace.
pub fn iface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The network namespaces that exist.
pub fn netns_list() -> Vec<String> {
    let list = ip(&["netns", "list"]).unwrap_or_default();
    list.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

/// `sysctl -qw K=V` in namespace `ns`.
pub fn sysctl_in(ns: &str, k: &str, v: &str) -> anyhow::Result<()> {
    sh(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &format!("{k}={v}")]), "sysctl").map(drop)
}

/// The testbed for a run: brought up when it is not, and then taken down
/// at the end; otherwise the client namespace's sysctls are restored.
pub struct Testbed {
    pub names: Names,
    root: PathBuf,
    brought_up: bool,
    saved_sysctls: Vec<(String, String)>,
}

impl Testbed {
    pub fn is_up(names: &Names) -> bool {
        let have = netns_list();
        names.namespaces().iter().all(|ns| have.contains(ns))
            && iface_exists(&names.iface_client)
            && iface_exists(&names.iface_server)
    }

    /// Brings testbed `names` up if it is not (scripts/testbed.sh with the
    /// names in its environment), and widens the client's port range and
    /// lets it reuse its TIME_WAIT ports (Connection: close at thousands of
    /// handshakes a second).
    pub fn ensure(root: &Path, names: &Names) -> anyhow::Result<Testbed> {
        let brought_up = if Testbed::is_up(names) {
            println!("  testbed '{}' already up: using it, leaving it up", names.prefix);
            false
        } else {
            sh(Command::new(root.join("scripts/testbed.sh")).arg("up").envs(names.env()), "scripts/testbed.sh up")?;
            println!("  testbed '{}' brought up (scripts/testbed.sh up); it is taken down at the end", names.prefix);
            true
        };
        let mut tb = Testbed { names: names.clone(), root: root.to_path_buf(), brought_up, saved_sysctls: Vec::new() };
        let c = names.client_ns();
        for (k, v) in [("net.ipv4.ip_local_port_range", "1024 65535"), ("net.ipv4.tcp_tw_reuse", "1")] {
            let old = sh(Command::new("ip").args(["netns", "exec", &c, "sysctl", "-n", k]), "sysctl")?;
            sysctl_in(&c, k, v)?;
            tb.saved_sysctls.push((k.to_string(), old.trim().replace('\t', " ")));
        }
        Ok(tb)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.brought_up {
            let _ = sh(
                Command::new(self.root.join("scripts/testbed.sh")).arg("down").envs(self.names.env()),
                "scripts/testbed.sh down",
            );
            return;
        }
        for (k, v) in &self.saved_sysctls {
            let _ = sysctl_in(&self.names.client_ns(), k, v);
        }
    }
}

/// One ping from namespace `ns` to `dst` within `wait`.
pub fn ping(ns: &str, dst: &str, wait: Duration) -> bool {
    let w = format!("{:.1}", wait.as_secs_f64().max(0.2));
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c1", "-q", "-W", &w, dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A process we started, stopped (SIGTERM, then SIGKILL) on drop, by pid.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { name, child })
    }

    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("  {} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of a log file, joined with ` | `.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Waits until something listens on TCP `port` in namespace `ns`.
pub fn wait_listening(ns: &str, port: u16, proc_: &mut Proc) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = sh(Command::new("ip").args(["netns", "exec", ns, "ss", "-Hltn", &format!("sport = :{port}")]), "ss")?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if let Some(st) = proc_.child.try_wait()? {
            bail!("{} exited ({st}) before listening on port {port} in {ns}", proc_.name);
        }
        if Instant::now() > deadline {
            bail!("{} does not listen on port {port} in {ns} after 10 s", proc_.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The document root with the 1 KB object, world-readable (nginx's
/// workers run as an unprivileged user); `dir` too.
pub fn write_www(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    for d in [dir, &www] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    let body: Vec<u8> = (0..OBJECT_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(www.join(OBJECT), body)?;
    std::fs::set_permissions(www.join(OBJECT), std::fs::Permissions::from_mode(0o644))?;
    Ok(www)
}

/// The port of the stub_status server an [`Nginx`] may add, on the server
/// namespace's loopback only (not reachable through the box).
pub const NGINX_STATUS_PORT: u16 = 8081;

/// The stub_status server added inside nginx.conf's `http { }` block.
fn status_server() -> String {
    format!("  server {{ listen 127.0.0.1:{NGINX_STATUS_PORT}; location = /status {{ stub_status; }} }}\n")
}

/// Adds the stub_status server to an nginx.conf (before the `http` block's
/// closing brace, its last one).
pub fn with_status_server(conf: &str) -> anyhow::Result<String> {
    let end = conf.rfind('}').ok_or_else(|| anyhow!("nginx.conf has no http block"))?;
    Ok(format!("{}{}{}", &conf[..end], status_server(), &conf[end..]))
}

/// The `requests` count of an nginx stub_status page.
pub fn parse_stub_status(s: &str) -> Option<u64> {
    // Active connections: 1
    // server accepts handled requests
    //  16 16 31
    let mut lines = s.lines().skip_while(|l| !l.trim_start().starts_with("server accepts"));
    lines.next()?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

/// nginx (one worker, `scripts/lib.sh`'s nginx.conf) serving `www` in
/// namespace `ns`, on `cpus`.
pub struct Nginx {
    pub ns: String,
    /// Stopped on drop.
    _proc: Proc,
    status: bool,
}

impl Nginx {
    /// Starts nginx with the config of the e2e tests (`write_nginx_conf` in
    /// scripts/lib.sh) in `dir/nginx`, plus a stub_status server on
    /// 127.0.0.1:[`NGINX_STATUS_PORT`] if `status`; waits until it listens.
    pub fn start(root: &Path, ns: &str, cpus: &str, dir: &Path, www: &Path, status: bool) -> anyhow::Result<Nginx> {
        let conf = dir.join("nginx");
        std::fs::create_dir_all(&conf)?;
        let lib = root.join("scripts/lib.sh");
        sh(
            Command::new("bash").args([
                "-c",
                r#". "$1" && write_nginx_conf "$2" "$3""#,
                "bash",
                &lib.display().to_string(),
                &conf.display().to_string(),
                &www.display().to_string(),
            ]),
            "write_nginx_conf (scripts/lib.sh)",
        )?;
        if status {
            let file = conf.join("nginx.conf");
            let text = std::fs::read_to_string(&file)?;
            std::fs::write(&file, with_status_server(&text)?)?;
        }
        // Another server on port 80 would answer wrk instead (this nginx
        // would fail to bind while wait_listening saw the other listen):
        // refuse, naming it.
        let taken = sh(Command::new("ip").args(["netns", "exec", ns, "ss", "-Hltnp", "sport = :80"]), "ss")?;
        if !taken.trim().is_empty() {
            bail!(
                "port 80 in {ns} is already taken ({}): the bench serves its own object from its own nginx; \
                 stop that server first",
                taken.split_whitespace().last().unwrap_or("?")
            );
        }
        let mut cmd = traffic::in_ns(ns, cpus, "nginx");
        cmd.arg("-c").arg(conf.join("nginx.conf")).arg("-p").arg(&conf);
        let mut proc_ = Proc::spawn("nginx", cmd, &dir.join("nginx.log"))?;
        wait_listening(ns, 80, &mut proc_).with_context(|| format!("nginx in {ns}: see {}", dir.display()))?;
        Ok(Nginx { ns: ns.to_string(), _proc: proc_, status })
    }

    /// Requests served so far (stub_status, which counts this request
    /// too); needs `status` at start.
    pub fn requests(&self) -> anyhow::Result<u64> {
        if !self.status {
            bail!("nginx in {} was started without its status server", self.ns);
        }
        let url = format!("http://127.0.0.1:{NGINX_STATUS_PORT}/status");
        let out = sh(
            Command::new("ip").args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "2", &url]),
            "curl (nginx stub_status)",
        )?;
        parse_stub_status(&out).ok_or_else(|| anyhow!("cannot parse nginx stub_status in {}: {out}", self.ns))
    }
}

/// `curl` from namespace `ns`: (HTTP status, body bytes).
pub fn http_get(ns: &str, url: &str) -> anyhow::Result<(u16, u64)> {
    let out = sh(
        Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "2",
            "-w",
            "%{http_code} %{size_download}",
            url,
        ]),
        &format!("curl {url} in {ns}"),
    )?;
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(code), Some(n)) => Ok((code as u16, n)),
        _ => bail!("curl {url}: unexpected output {out:?}"),
    }
}

/// The kernel forwarding the box ports: `ifaces` in Linux bridge `bridge`
/// (in namespace `ns`, or the root namespace), STP off, no forwarding
/// delay, no multicast snooping, otherwise the kernel's defaults as found.
pub fn kernel_bridge(ns: Option<&str>, bridge: &str, ifaces: &[&str]) -> anyhow::Result<()> {
    let ipn = |args: &[&str]| -> anyhow::Result<String> {
        match ns {
            Some(n) => ip(&[&["-n", n], args].concat()),
            None => ip(args),
        }
    };
    ipn(&["link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"])?;
    let key = format!("net.ipv6.conf.{bridge}.disable_ipv6=1");
    let _ = match ns {
        Some(n) => Command::new("ip").args(["netns", "exec", n, "sysctl", "-qw", &key]).status(),
        None => Command::new("sysctl").args(["-qw", &key]).status(),
    };
    for i in ifaces {
        ipn(&["link", "set", i, "master", bridge])?;
    }
    ipn(&["link", "set", bridge, "up"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_and_derived() {
        let n = Names { prefix: "l7".into(), iface_client: "l7-c".into(), iface_server: "l7-s".into() };
        assert_eq!(n.namespaces(), ["l7-c", "l7-sw", "l7-s1", "l7-s2"].map(String::from));
        assert_eq!(Names::default().client_ns(), "ubox-c");
        assert_eq!(Names::default().iface_server, "ubx-s");
    }

    #[test]
    fn status_server_goes_inside_http() {
        let conf = "daemon off;\nhttp {\n  access_log off;\n  server { listen 80; root /w; }\n}\n";
        let c = with_status_server(conf).unwrap();
        assert!(c.ends_with("location = /status { stub_status; } }\n}\n"), "{c}");
        assert!(c.contains("root /w; }\n  server { listen 127.0.0.1:8081;"), "{c}");
        assert!(with_status_server("daemon off;").is_err());
    }

    #[test]
    fn parses_stub_status() {
        let s =
            "Active connections: 1 \nserver accepts handled requests\n 16 16 31 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(parse_stub_status(s), Some(31));
        assert_eq!(parse_stub_status("<html>404</html>"), None);
    }
}
