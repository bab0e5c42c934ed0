"""The pieces the end-to-end tests are made of: the testbed's names, the
runtime's config, processes with their logs, and the traffic tools.

conftest.py turns them into fixtures; the tests use them through those
fixtures and import only the small helpers at the bottom of this file.
Nothing here asserts what a test checks: it starts, stops and reads.
"""
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("UBOX_BIN", ROOT / "target" / "release"))
# Interpreter for the Python helpers run inside the namespaces (the one that
# runs pytest: only the standard library is needed there).
PYTHON = sys.executable
HUGEPAGES_NR = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")

# Client and server addresses of scripts/testbed.sh.
CLIENT_IP = "10.10.0.1"
SERVER_IP = "10.10.0.11"
BOX_IP = "10.10.0.254"


class Names:
    """The testbed's names, as scripts/lib.sh derives them: namespaces with
    the prefix UBOX_TB (default "ubox"), the box's interfaces UBOX_TB_IC and
    UBOX_TB_IS, so that two testbeds can run side by side. Runtime instances
    are named UBOX_E2E_PREFIX-<test's name> (default "e2e-...")."""

    def __init__(self, env=os.environ):
        self.prefix = env.get("UBOX_TB", "ubox")
        self.ic = env.get("UBOX_TB_IC", "ubx-c")
        self.is_ = env.get("UBOX_TB_IS", "ubx-s")
        self.c = f"{self.prefix}-c"
        self.s1 = f"{self.prefix}-s1"
        self.s2 = f"{self.prefix}-s2"
        self.instance_prefix = env.get("UBOX_E2E_PREFIX", "e2e")

    def export(self):
        """Put the names in the environment, for the scripts run from here
        (scripts/testbed.sh reads them)."""
        os.environ.update(UBOX_TB=self.prefix, UBOX_TB_IC=self.ic, UBOX_TB_IS=self.is_)

    def instance(self, suffix):
        return f"{self.instance_prefix}-{suffix}"


def wire_config(name, ic, is_, *, workers=1, nf_timeout_ms=2000, nf_ring_size=1024,
                nf_backpressure=False, flow_capacity=65536, flow_idle_ms=60000, extra=""):
    """The runtime config of scripts/lib.sh's write_wire_config: the client
    port (interface ic, the box's address 10.10.0.254) wired to the server
    port (interface is_); `extra` is TOML appended at the end."""
    return f"""[runtime]
name = "{name}"
workers = {workers}
nf_timeout_ms = {nf_timeout_ms}
nf_ring_size = {nf_ring_size}
nf_backpressure = {"true" if nf_backpressure else "false"}

[flow_table]
capacity = {flow_capacity}
idle_timeout_ms = {flow_idle_ms}

[[port]]
name = "client"
driver = "af_packet"
iface = "{ic}"
ipv4 = ["{BOX_IP}"]

[[port]]
name = "server"
driver = "af_packet"
iface = "{is_}"

[[wire]]
ports = ["client", "server"]
{extra}
"""


# Deep rings for the monitor tests, so that an NF sharing a busy CI core
# rarely falls a ring behind (when it does, reassembly stops for that side:
# counted, not lost).
MONITOR_EXTRA = "[monitor]\nstream_buffers = 16\nstream_buffer_kb = 8192"


def run(cmd, timeout=60, **kw):
    """Run cmd to the end; returns (exit code, stdout and stderr together)."""
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, text=True, **kw)
    return p.returncode, p.stdout


def netns(ns, *cmd):
    return ["ip", "netns", "exec", ns, *[str(c) for c in cmd]]


def wait_listening(ns, port, proto="t", timeout=10.0, proc=None):
    """Wait until something listens on `port` (TCP) in namespace ns."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(netns(ns, "ss", "-Hln" + proto, "sport", "=", f":{port}"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        if out.strip():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode} before listening on {port} in {ns}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {ns} after {timeout} s")


class Proc:
    """A background process whose stdout and stderr go to a log file."""

    def __init__(self, name, cmd, log, stdout=None, env=None):
        """stdout: a file for the process's stdout apart from its log; env:
        its whole environment (default: this process's)."""
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log = Path(log)
        self._files = [open(self.log, "w")]
        if stdout is not None:
            self._files.append(open(stdout, "w"))
        self.p = subprocess.Popen(self.cmd, stdout=self._files[-1], stderr=self._files[0], stdin=subprocess.DEVNULL,
                                  env=env)
        self.pid = self.p.pid

    def _close(self):
        for f in self._files:
            f.close()

    @property
    def returncode(self):
        return self.p.returncode

    def poll(self):
        return self.p.poll()

    def alive(self):
        return self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout=None):
        """Exit code (negative: killed by that signal); raises on timeout."""
        rc = self.p.wait(timeout)
        self._close()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the process and wait for it: its exit code."""
        self.send_signal(sig)
        return self.wait(timeout)

    def kill9(self):
        self.send_signal(signal.SIGKILL)
        return self.wait(10)

    def cleanup(self):
        """Leave nothing running (at a test's end): SIGCONT in case it was
        stopped, SIGTERM, then SIGKILL."""
        if self.alive():
            self.send_signal(signal.SIGCONT)
            self.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.p.wait(10)
        self._close()

    def tail(self, n=15):
        return tail(self.log, n)


def tail(path, n=15):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"({e})"
    return "\n".join(lines[-n:]) if lines else "(empty)"


class Procs:
    """Every background process a test starts, stopped at its end (the last
    started first, so NFs and traffic before the runtime)."""

    def __init__(self, tdir):
        self.tdir = Path(tdir)
        self.all = []

    def start(self, name, cmd, log=None, stdout=None, env=None):
        p = Proc(name, cmd, log or self.tdir / f"{name}.log", stdout=stdout, env=env)
        self.all.append(p)
        return p

    def add(self, p):
        self.all.append(p)
        return p

    def cleanup(self):
        for p in reversed(self.all):
            p.cleanup()


class Runtime(Proc):
    """A ubox-runtime process of one instance name; it is up (its control
    socket answers) once the constructor returns."""

    def __init__(self, name, config_path, log, args=()):
        self.instance = name
        self.config = Path(config_path)
        super().__init__(f"ubox-runtime {name}", [BIN / "ubox-runtime", "--config", config_path, *args], log)
        for _ in range(100):
            if self.ctl_rc("ping") == 0:
                return
            if not self.alive():
                self.cleanup()
                raise RuntimeError(f"ubox-runtime exited during start-up ({self.returncode}):\n{self.tail(20)}")
            time.sleep(0.1)
        self.cleanup()
        raise RuntimeError(f"ubox-runtime did not answer on its control socket within 10s:\n{self.tail(20)}")

    def ctl_rc(self, *args):
        return subprocess.run([str(BIN / "uboxctl"), "-i", self.instance, *map(str, args)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode

    def ctl(self, *args, check=True):
        """uboxctl -i NAME ARGS...: its stdout (raises on a non-zero exit)."""
        p = subprocess.run([str(BIN / "uboxctl"), "-i", self.instance, *map(str, args)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"uboxctl {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def stats(self, save=None):
        """The counters (uboxctl --json stats), also saved to `save`."""
        out = self.ctl("--json", "stats")
        if save:
            Path(save).write_text(out)
        return json.loads(out)

    def nf_list(self, save=None):
        out = self.ctl("--json", "nf", "list")
        if save:
            Path(save).write_text(out)
        return json.loads(out)

    def nf_state(self):
        """"name=state,..." of every NF the runtime knows."""
        return ",".join(f"{n['name']}={n['state']}" for n in self.nf_list()["nfs"])

    def wait_nf_state(self, want, tries=50):
        """Poll the NF list (every 0.1 s) until it reads `want`."""
        for _ in range(tries):
            if self.nf_state() == want:
                return True
            time.sleep(0.1)
        print(f"    state: {self.nf_state()}")
        return False

    def apply_chain(self, path, text=None, quiet=False):
        """uboxctl chain apply PATH (written from text first, if given)."""
        if text is not None:
            Path(path).write_text(text)
        out = self.ctl("chain", "apply", path)
        if not quiet:
            print(out, end="")
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """SIGTERM, wait: the runtime's exit code."""
        return super().stop(sig, timeout)


class Testbed:
    """scripts/testbed.sh's namespaces, with nginx serving a web root (a
    random 10 MB file and a 2,000 B one) on port 80 of the first server."""

    def __init__(self, names, work):
        self.n = names
        self.work = Path(work)
        self.www = self.work / "www"
        self.nginx = None

    def script(self, action):
        rc, out = run(["bash", ROOT / "scripts" / "testbed.sh", action], timeout=120)
        if rc != 0:
            raise RuntimeError(f"scripts/testbed.sh {action}: exit {rc}:\n{out}")
        return out

    def up(self):
        self.n.export()
        out = self.script("up")
        (self.work / "testbed.log").write_text(out)
        self.www.mkdir(exist_ok=True)
        (self.www / "10M.bin").write_bytes(os.urandom(10_000_000))
        (self.www / "small.bin").write_bytes(os.urandom(2000))
        self.start_nginx()

    def start_nginx(self):
        conf = self.work / "nginx"
        # The nginx.conf of scripts/lib.sh, which the benchmarks use too.
        rc, out = run(["bash", "-c", '. "$0"/scripts/lib.sh && write_nginx_conf "$1" "$2"', ROOT, conf, self.www])
        if rc != 0:
            raise RuntimeError(f"write_nginx_conf: {out}")
        self.nginx = Proc("nginx", netns(self.n.s1, "nginx", "-c", conf / "nginx.conf", "-p", conf),
                          self.work / "nginx.log")
        wait_listening(self.n.s1, 80, proc=self.nginx)

    def stop_nginx(self):
        if self.nginx is not None:
            self.nginx.cleanup()
            self.nginx = None

    @contextlib.contextmanager
    def without_nginx(self):
        """Port 80 of the first server free (a benchmark starts its own
        nginx there), the testbed's nginx back afterwards."""
        self.stop_nginx()
        try:
            yield
        finally:
            self.start_nginx()

    def down(self):
        self.stop_nginx()
        self.script("down")


class Traffic:
    """The traffic tools, run in the testbed's namespaces: ping, curl,
    iperf3 and Python's http.server. Background ones join the test's
    processes (stopped at its end); their logs go to the test's directory."""

    def __init__(self, testbed, procs):
        self.tb = testbed
        self.n = testbed.n
        self.procs = procs
        self.tdir = procs.tdir

    def ping(self, dst, count, interval=0.2, wait=2, ns=None, show=False):
        """ping -cCOUNT -iINTERVAL -WWAIT from the client (or ns): True when
        it succeeded; show prints its output."""
        opts = [f"-c{count}"] + ([f"-i{interval}"] if interval is not None else []) + [f"-W{wait}"]
        rc, out = run(netns(ns or self.n.c, "ping", *opts, dst), timeout=count * (wait + 1) + 10)
        if show:
            print(out, end="")
        return rc == 0

    def curl(self, url, out="/dev/null", max_time=60, flags="-fsS", ns=None, extra=()):
        """curl in the client namespace (or ns): a CompletedProcess with
        stdout and stderr apart."""
        cmd = netns(ns or self.n.c, "curl", flags, "--max-time", max_time, "-o", out, *extra, url)
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=float(max_time) + 30)

    def fetch(self, path, out="/dev/null", max_time=60, **kw):
        """curl -fsS of http://10.10.0.11/PATH: True when it succeeded."""
        r = self.curl(f"http://{SERVER_IP}/{path}", out=out, max_time=max_time, **kw)
        if r.returncode != 0:
            print(f"    curl {path}: exit {r.returncode}: {r.stderr.strip()}")
        return r.returncode == 0

    def iperf_server(self, port):
        """A one-off iperf3 server on the first server (-s -1), listening
        once this returns."""
        p = self.procs.start(f"iperf3-server-{port}", netns(self.n.s1, "iperf3", "-s", "-1", "-p", port,
                                                            "--logfile", self.tdir / f"iperf-{port}.log"),
                             log=self.tdir / f"iperf-{port}.stderr")
        wait_listening(self.n.s1, port, proc=p)
        return p

    def iperf_client(self, port, seconds, out, json_out=True):
        """iperf3 -c 10.10.0.11 in the client namespace, in the background:
        its stdout (JSON with json_out) goes to `out`."""
        args = ["-J"] if json_out else []
        name = f"iperf3-client-{port}"
        if json_out:
            return self.procs.start(name, netns(self.n.c, "iperf3", "-c", SERVER_IP, "-p", port, "-t", seconds, *args),
                                    log=self.tdir / f"{name}.stderr", stdout=out)
        return self.procs.start(name, netns(self.n.c, "iperf3", "-c", SERVER_IP, "-p", port, "-t", seconds),
                                log=out)

    def iperf_through(self, port, seconds, out):
        """A client->server iperf3 stream that keeps sending for `seconds`
        whatever the buffers (unlike a download), started in the background;
        .wait() gives the client's exit code, .result() its JSON."""
        return Iperf(self, port, seconds, out)

    def http_server(self, ns, port, bind):
        """python3 -m http.server serving the web root on bind:port in ns."""
        p = self.procs.start(f"http-server-{port}", netns(ns, PYTHON, "-m", "http.server", port, "--bind", bind,
                                                          "--directory", self.tb.www))
        wait_listening(ns, port, proc=p)
        return p


class Iperf:
    def __init__(self, traffic, port, seconds, out):
        self.out = Path(out)
        self.seconds = seconds
        self.server = traffic.iperf_server(port)
        self.client = traffic.iperf_client(port, seconds, out)

    def wait(self):
        return self.client.wait(timeout=self.seconds + 60)

    def result(self):
        return json.loads(self.out.read_text())


# --- helpers for the tests' checks -----------------------------------------


def one_line(out):
    """True when the output is one line (as `$(...) | wc -l` counted it:
    trailing newlines aside)."""
    return "\n" not in out.rstrip("\n")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def same_file(a, b):
    return Path(a).read_bytes() == Path(b).read_bytes()


def load(path):
    return json.loads(Path(path).read_text())


def flows_sum(stats, key):
    return sum(w["flows"][key] for w in stats["workers"])


def drops_sum(stats):
    """The workers' drop counters, added up per reason."""
    drops = {}
    for w in stats["workers"]:
        for k, v in w["drops"].items():
            drops[k] = drops.get(k, 0) + v
    return drops


def nf_row(stats, name):
    return [n for n in stats["nfs"] if n["name"] == name][0]


def bytes_after(iperf_result, t):
    """Bytes the server received in the iperf3 intervals that started at or
    after t seconds."""
    return int(sum(i["sum"]["bytes"] for i in iperf_result["intervals"] if i["sum"]["start"] >= t))


def log_has(path, pattern, flags=0):
    """grep -q: a line of the file matches the regular expression."""
    return re.search(pattern, Path(path).read_text(errors="replace"), re.M | flags) is not None
