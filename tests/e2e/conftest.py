"""Fixtures of the end-to-end suite, in the manner of FRR's topotests.

- `testbed` (session): scripts/testbed.sh up, nginx serving the web root
  (`testbed.www`: 10M.bin, small.bin) in the first server's namespace;
  down at the end. Only tests that ask for it bring it up.
- `tdir`: the test's own directory under the session's work directory;
  every log and file the test makes goes there.
- `runtime(suffix, args=(), log=None, **config)`: a ubox-runtime instance
  named UBOX_E2E_PREFIX-suffix (default e2e-suffix) started with the wire
  config of scripts/lib.sh (keywords: workers, nf_timeout_ms, nf_ring_size,
  nf_backpressure, flow_capacity, flow_idle_ms, extra); up when returned.
  `.stats()`, `.nf_list()`, `.apply_chain()`, `.stop()` (its exit code).
- `nf(rt, binary, *args, log=None)`: an NF process of instance rt.
- `traffic`: ping, curl, iperf3 and http.server in the namespaces.
- `procs`: every background process of a test; whatever is still running
  at the test's end is stopped there (the runtime last).

Logs: a passing test's directory is removed; a failing one's is kept, with
output.txt (what the test printed), and the tail of each of its logs is
shown with the failure. UBOX_E2E_KEEP=1 keeps every directory. The work
directory (/tmp/ubox-e2e.XXXXXX: the web root, nginx's and the testbed's
logs, the tests' directories) is removed when everything passed.
"""
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from ubox_e2e import BIN, Names, Procs, Runtime, Testbed, Traffic, tail, wire_config

NAMES = Names()
KEEP = os.environ.get("UBOX_E2E_KEEP", "0") not in ("", "0")
# The order of scripts/e2e.sh's test list: modules in this order, tests in
# file order within each; the hardening tests and the soak (the longest) last.
MODULE_ORDER = ["test_errors", "test_wire", "test_nf", "test_monitor", "test_stream_tap", "test_splicer", "test_l4lb", "test_l4lb_ecmp", "test_capture", "test_scaling", "test_bench", "test_hardening", "test_perms",
                "test_metrics", "test_web", "test_isolation", "test_service", "test_soak"]
_failed = []
_work = []


def pytest_configure(config):
    # SIGTERM (a CI timeout, kill) ends the run as Ctrl-C does: the fixtures'
    # teardown still stops the runtimes (they busy-poll a core) and the testbed.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_collection_modifyitems(session, config, items):
    def key(item):
        mod = item.module.__name__
        return MODULE_ORDER.index(mod) if mod in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=key)  # stable: file order kept within a module


@pytest.fixture(scope="session")
def work():
    if os.geteuid() != 0:
        pytest.exit("the e2e tests must run as root (network namespaces, hugepages, DPDK); try sudo", returncode=1)
    for b in ["ubox-runtime", "uboxctl", "counter"]:
        if not (BIN / b).exists():
            pytest.exit(f"{BIN / b} not found: build first (scripts/lib.sh build_release), or set UBOX_BIN",
                        returncode=1)
    NAMES.export()
    d = Path(tempfile.mkdtemp(prefix="ubox-e2e."))
    d.chmod(0o755)  # nginx workers (www-data) read the web root below it
    _work.append(d)
    return d


@pytest.fixture(scope="session")
def testbed(work):
    tb = Testbed(NAMES, work)
    try:
        tb.up()
        yield tb
    finally:
        tb.down()


@pytest.fixture(autouse=True)
def tdir(request, work):
    d = work / request.node.name
    d.mkdir()
    request.node.ubox_dir = d
    return d


@pytest.fixture
def procs(tdir):
    p = Procs(tdir)
    yield p
    p.cleanup()


@pytest.fixture
def runtime(procs, tdir):
    def start(suffix, args=(), log=None, ic=None, **config):
        name = NAMES.instance(suffix)
        cfg = tdir / f"{suffix}.toml"
        cfg.write_text(wire_config(name, ic or NAMES.ic, NAMES.is_, **config))
        rt = Runtime(name, cfg, log or tdir / f"runtime-{suffix}.log", args)
        return procs.add(rt)

    return start


@pytest.fixture
def nf(procs):
    def start(rt, binary, *args, log=None):
        return procs.start(binary, [BIN / binary, "--instance", rt.instance, *args],
                           log=log or procs.tdir / f"{binary}.log")

    return start


@pytest.fixture
def traffic(testbed, procs):
    return Traffic(testbed, procs)


@pytest.fixture
def names():
    return NAMES


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    d = getattr(item, "ubox_dir", None)
    if d is None:
        return
    if rep.failed:
        item.ubox_failed = True
        if rep.when != "teardown":
            rep.sections.append(("ubox logs", logs_tail(d)))
    if rep.when == "teardown":
        # Sections accumulate over the phases: the teardown report has all.
        out = "".join(f"----- {name}\n{text}\n" for name, text in rep.sections if name.startswith("Captured"))
        (d / "output.txt").write_text(out)
        if getattr(item, "ubox_failed", False):
            _failed.append(d)
        elif not KEEP:
            shutil.rmtree(d, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    # Here, not in the fixture's teardown: the last test's report comes after
    # the session fixtures are torn down. Kept after a failure or an
    # interruption.
    if _work and exitstatus == 0 and not _failed and not KEEP:
        shutil.rmtree(_work[0], ignore_errors=True)


def logs_tail(d, n=15):
    """The last lines of each log of a test's directory, runtime logs first."""
    logs = sorted(d.glob("*.log"), key=lambda p: (not p.name.startswith("runtime"), p.name))
    parts = [f"logs kept in {d}"]
    for p in logs:
        parts.append(f"--- {p.name} (tail)\n{tail(p, n)}")
    return "\n".join(parts)


def pytest_terminal_summary(terminalreporter, exitstatus):
    if _failed:
        terminalreporter.write_line("e2e: logs of the failed tests kept in:")
        for d in _failed:
            terminalreporter.write_line(f"    {d}")
    elif _work and (KEEP or exitstatus != 0):
        terminalreporter.write_line(f"e2e: work directory kept: {_work[0]}")
