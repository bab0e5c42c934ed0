"""Service units and reconnection (issue 12 §5): scripts/install.sh, the
units in deploy/, and NFs that outlive the runtime with --reconnect.

systemd is not PID 1 in this sandbox (nor, necessarily, in CI), so the
tests do what the units say instead of asking systemd: they install with
scripts/install.sh --prefix, read ExecStart=, Environment= and
EnvironmentFile= of the installed units (the specifiers %i and %S, $VAR
and ${VAR} expanded as systemd does) and run exactly that command line,
with stderr as the "journal stream" ($JOURNAL_STREAM naming the log
file), and they decide "restarted or not" from the unit's Restart= and
RestartPreventExitStatus= as systemd does. `systemd-analyze verify`
checks the units where it is installed.
"""
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ubox_e2e import BIN, ROOT, Proc, Runtime, load, nf_row, run, same_file, wire_config

BINARIES = ["ubox-runtime", "uboxctl", "counter", "acl-firewall", "ids", "stateful-firewall", "flow-logger",
            "pcap-tap", "rewrite", "http-lb"]
UNITS = ["ubox-runtime.service", "ubox-nf@.service"]

CHAIN = """[[chain]]
name = "tcp"
nfs = ["counter"]
[chain.match]
protocol = "tcp"
[chain.policy]
counter = "fail-closed"
"""


# --- what systemd would do with a unit ----------------------------------------

def service_section(unit):
    """The [Service] settings of a unit file: name -> values, in order."""
    out, section = {}, None
    for raw in Path(unit).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def specifiers(text, instance):
    """%i/%I (the instance), %S (the state directory), %%."""
    table = {"i": instance, "I": instance, "S": "/var/lib", "%": "%"}
    return re.sub(r"%(.)", lambda m: table[m.group(1)], text)


def read_env_file(path):
    env = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        env[k.strip()] = v
    return env


def exec_start(unit, instance=""):
    """The argv and the environment systemd would start the unit's
    ExecStart= with: Environment= then EnvironmentFile= (a leading '-':
    optional), "$VAR" alone splits into words, "${VAR}" does not."""
    svc = service_section(unit)
    env = {}
    for v in svc.get("Environment", []):
        for word in shlex.split(specifiers(v, instance)):
            k, _, val = word.partition("=")
            env[k] = val
    for v in svc.get("EnvironmentFile", []):
        v = specifiers(v, instance)
        path = Path(v.lstrip("-"))
        if path.exists():
            env.update(read_env_file(path))
        else:
            assert v.startswith("-"), f"{unit}: EnvironmentFile {path} is missing"
    cmd = [c for c in svc["ExecStart"] if c][-1].lstrip("-@+!:")
    argv = []
    for word in shlex.split(specifiers(cmd, instance)):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv, env


def would_restart(unit, rc):
    """Whether systemd restarts the service after it exited with rc."""
    svc = service_section(unit)
    restart = svc.get("Restart", ["no"])[-1]
    prevent = " ".join(svc.get("RestartPreventExitStatus", [])).split()
    if rc == 0 or restart == "no":
        return restart == "always"
    if str(rc) in prevent:
        return False
    return restart in ("on-failure", "always")


class UnitProc(Proc):
    """A unit's ExecStart run as systemd would, its stderr the journal
    stream ($JOURNAL_STREAM names the log file, so the lines carry
    journald's <N> priorities)."""

    def __init__(self, unit, log, instance=""):
        self.unit = Path(unit)
        self.argv, unit_env = exec_start(unit, instance)
        log = Path(log)
        log.touch()
        st = log.stat()
        env = {**os.environ, **unit_env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        Proc.__init__(self, f"{self.unit.name} {instance}".strip(), self.argv, log, env=env)


class UnitRuntime(UnitProc, Runtime):
    """ubox-runtime started from its unit (Runtime's uboxctl helpers); up
    (it answers ping) once made."""

    def __init__(self, unit, instance, log):
        self.instance = instance
        self.config = None
        UnitProc.__init__(self, unit, log)
        for _ in range(100):
            if self.ctl_rc("ping") == 0:
                return
            if not self.alive():
                raise RuntimeError(f"ubox-runtime exited during start-up ({self.returncode}):\n{self.tail(20)}")
            time.sleep(0.1)
        raise RuntimeError(f"ubox-runtime did not answer within 10 s:\n{self.tail(20)}")


def install(prefix, *args):
    rc, out = run(["bash", ROOT / "scripts" / "install.sh", "--prefix", prefix, "--no-reload", *args],
                  env={**os.environ, "UBOX_BIN": str(BIN)})
    print(out, end="")
    assert rc == 0, f"install.sh {' '.join(map(str, args))}: exit {rc}"
    return out


def units_of(prefix):
    return Path(prefix) / "lib" / "systemd" / "system"


# --- the tests ------------------------------------------------------------------

# install.sh --prefix installs the binaries, both units (pointing at the
# prefix) and a configuration it never overwrites; systemd-analyze accepts
# the units; --uninstall takes it all back (config kept unless --purge).
def test_install_script(tdir):
    prefix = tdir / "inst"
    out = install(prefix)
    for b in BINARIES:
        p = prefix / "bin" / b
        assert os.access(p, os.X_OK) and same_file(p, BIN / b), f"{p} not installed"
    units = units_of(prefix)
    for u in UNITS:
        text = (units / u).read_text()
        assert f"{prefix}/bin/" in text and "/usr/local/bin" not in text, f"{u}: paths not rewritten"
        assert f"{prefix}/etc/ubox/" in text and "=/etc/ubox" not in text and "-/etc/ubox" not in text, u
    conf = prefix / "etc" / "ubox"
    assert same_file(conf / "runtime.toml", ROOT / "examples" / "wire.toml"), "runtime.toml"
    assert (conf / "runtime.env").exists() and (conf / "nf.env.example").exists()

    rt_argv, _ = exec_start(units / "ubox-runtime.service")
    assert rt_argv == [str(prefix / "bin" / "ubox-runtime"), "--config", str(conf / "runtime.toml")], rt_argv
    nf_argv, _ = exec_start(units / "ubox-nf@.service", "ids")
    assert nf_argv == [str(prefix / "bin" / "ids"), "--reconnect"], nf_argv
    svc = service_section(units / "ubox-nf@.service")
    assert svc["Restart"] == ["on-failure"] and svc["RestartPreventExitStatus"] == ["2"], svc

    analyze = shutil.which("systemd-analyze")
    if analyze:
        # An instance of the template, next to the runtime's unit.
        vdir = tdir / "verify"
        vdir.mkdir()
        shutil.copy(units / "ubox-runtime.service", vdir)
        shutil.copy(units / "ubox-nf@.service", vdir)
        (vdir / "ubox-nf@counter.service").symlink_to("ubox-nf@.service")
        rc, text = run([analyze, "verify", "--man=no", vdir / "ubox-runtime.service", vdir / "ubox-nf@counter.service"],
                       env={**os.environ, "SYSTEMD_UNIT_PATH": f"{vdir}:", "SYSTEMD_LOG_LEVEL": "notice"})
        print(f"    systemd-analyze verify: exit {rc}\n{text}", end="")
        ours = [ln for ln in text.splitlines() if "ubox" in ln]
        assert rc == 0 and not ours, "systemd-analyze verify complains about the units"
    else:
        print("    systemd-analyze not installed: units not verified")

    # Again: the configuration is kept, edits and all.
    (conf / "runtime.toml").write_text("# mine\n")
    out = install(prefix)
    assert "kept" in out and (conf / "runtime.toml").read_text() == "# mine\n", "install.sh overwrote the config"

    install(prefix, "--uninstall")
    assert not any((prefix / "bin" / b).exists() for b in BINARIES), "binaries left behind"
    assert not any((units / u).exists() for u in UNITS), "units left behind"
    assert (conf / "runtime.toml").exists(), "--uninstall without --purge removed the config"
    install(prefix, "--uninstall", "--purge")
    assert not conf.exists(), "--purge left the config"
    rc, text = run(["bash", ROOT / "scripts" / "install.sh", "--prefix"])
    assert rc != 0 and text.strip().count("\n") == 0 and "--prefix needs a directory" in text, text


# The runtime restarts under a running NF (both started as their units
# start them): the NF logs it once, waits, and is back in the chain within
# 2 s of the new runtime answering, traffic through the fail-closed chain
# works again, and its counters went on (its final count is both runtimes').
def test_service_reconnect(traffic, testbed, procs, tdir, names):
    prefix = tdir / "inst"
    install(prefix)
    units, conf = units_of(prefix), prefix / "etc" / "ubox"
    instance = names.instance("svc")
    (conf / "runtime.toml").write_text(wire_config(instance, names.ic, names.is_))
    (tdir / "chains.toml").write_text(CHAIN)
    (conf / "runtime.env").write_text(f"UBOX_RUNTIME_ARGS=--chains {tdir / 'chains.toml'}\n")
    counter_json = tdir / "counter.json"
    (conf / "nf-counter.env").write_text(f"UBOX_INSTANCE={instance}\nUBOX_NF_ARGS=--json-out {counter_json}\n")

    rt_unit, nf_unit = units / "ubox-runtime.service", units / "ubox-nf@.service"
    rt = procs.add(UnitRuntime(rt_unit, instance, tdir / "runtime-1.log"))
    nf = procs.add(UnitProc(nf_unit, tdir / "counter.log", instance="counter"))
    print(f"    runtime: {' '.join(rt.cmd)}\n    NF: {' '.join(nf.cmd)}")
    assert "--reconnect" in nf.cmd and nf.cmd[0] == str(prefix / "bin" / "counter")
    assert rt.wait_nf_state("counter=running"), "counter did not register"
    assert traffic.fetch("small.bin", tdir / "one.bin", max_time=20), "download through the chain"
    time.sleep(0.3)
    before = nf_row(rt.stats(tdir / "stats-1.json"), "counter")["events_in"]
    assert before > 0, "the counter saw nothing of the download"

    assert rt.stop() == 0, "runtime exit code"
    time.sleep(0.5)
    assert nf.alive(), f"the NF exited with the runtime ({nf.returncode}):\n{nf.tail()}"
    spawned = time.monotonic()
    rt = procs.add(UnitRuntime(rt_unit, instance, tdir / "runtime-2.log"))
    t0 = time.monotonic()
    back = None
    while time.monotonic() - t0 < 5:
        if rt.nf_state() == "counter=running":
            back = time.monotonic() - t0
            break
        time.sleep(0.05)
    print(f"    the NF was back {back if back is None else round(back, 2)} s after the runtime answered "
          f"({round(time.monotonic() - spawned, 2)} s after it started)")
    assert back is not None and back < 2.0, "the NF was not back in the chain within 2 s"
    assert traffic.fetch("small.bin", tdir / "two.bin", max_time=20), "download through the chain after the restart"
    assert same_file(tdir / "two.bin", testbed.www / "small.bin")
    time.sleep(0.3)
    after = nf_row(rt.stats(tdir / "stats-2.json"), "counter")["events_in"]
    assert after > 0, "the restarted runtime sent the NF nothing: not in the chain"

    assert nf.stop() == 0, "NF exit code on SIGTERM"
    assert rt.stop() == 0, "runtime exit code"
    report = load(counter_json)
    print(f"    counter: {report['packets']} packets; runtime 1 gave {before}, runtime 2 {after}")
    assert report["packets"] >= before + after, "the counter's counts did not survive the reconnect"
    log = nf.log.read_text(errors="replace").splitlines()
    gone = [ln for ln in log if "went away" in ln]
    again = [ln for ln in log if "registered again" in ln]
    assert len(gone) == 1 and len(again) == 1, f"not one line each for gone and back:\n{nf.tail(20)}"
    assert gone[0].startswith("<4>") and again[0].startswith("<6>"), "no journald priorities on the NF's lines"
    assert [ln for ln in log if ln.startswith("<6>registered as NF")], "no journald priority on the first line"
    rt_log = rt.log.read_text(errors="replace")
    assert re.search(r"^<6>NF 'counter' registered", rt_log, re.M), "no journald priorities on the runtime's lines"


# An NF started with a bad argument exits 2, which its unit does not
# restart: a usage error (clap), and a refusal at registration (a type the
# runtime does not know), --reconnect or not. A failure (1) it restarts.
def test_service_bad_argument_not_restarted(runtime, procs, tdir):
    prefix = tdir / "inst"
    install(prefix)
    units, conf = units_of(prefix), prefix / "etc" / "ubox"
    nf_unit = units / "ubox-nf@.service"
    rt = runtime("svc-bad")
    cases = {"usage": "--port notaport", "refused": "--events FLOW/NO_SUCH_TYPE"}
    for what, args in cases.items():
        (conf / "nf-counter.env").write_text(f"UBOX_INSTANCE={rt.instance}\nUBOX_NF_ARGS={args}\n")
        p = procs.add(UnitProc(nf_unit, tdir / f"counter-{what}.log", instance="counter"))
        rc = p.wait(timeout=10)
        text = p.log.read_text(errors="replace").strip()
        print(f"    {what} ({args}): exit {rc}: {text.splitlines()[-1] if text else ''}")
        assert rc == 2, f"{what}: exit {rc}, not 2"
        assert not would_restart(nf_unit, rc), f"{what}: the unit would restart it"
    assert "refused" in (tdir / "counter-refused.log").read_text(), "the refusal is not said"
    assert rt.nf_list()["nfs"] == [], "something registered"
    assert would_restart(nf_unit, 1) and not would_restart(nf_unit, 0), "Restart=on-failure semantics"
    assert rt.stop() == 0, "runtime exit code"
    # And clap's own error line is one line on a terminal too.
    r = subprocess.run([BIN / "counter", "--port", "x"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid value 'x'" in r.stderr, r.stderr
