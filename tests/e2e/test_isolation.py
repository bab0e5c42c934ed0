"""Isolation of NF processes (issue 9, section 3): an NF maps the arena file
(header, event slot pool) and the packet memfd `ubox-data` read-only, its
own channel memfds `ubox-channel` (one per worker) read-write, and nothing
of any other NF. A deliberately hostile NF (nf-sdk/examples/hostile_nf.rs:
random bytes into everything it can write, mprotect, reopening its
descriptors and the arena read-write, truncation, the other processes'
memory and descriptors) runs as an ordinary member of group ubox, in the
chain of two good NFs, behind them and fail-open; the good NFs' counts, the
traffic through the box and the runtime must not notice it.

The hostile NF is an example of nf-sdk: `cargo build --release -p nf-sdk
--example hostile_nf` (target/release/examples/hostile_nf)."""
import grp
import json
import re
import shutil
import signal
import time

import pytest

from test_perms import GROUP, _make_user
from ubox_e2e import BIN, BOX_IP, SERVER_IP, Names, drops_sum, log_has, netns, nf_row, run, sha256

HOSTILE = BIN / "examples" / "hostile_nf"
GOOD = ("count-a", "count-b")
SERVER2_IP = "10.10.0.12"
# How long the hostile NF attacks, and how many runs of it at most (a run
# the runtime declared dead is followed by another while time remains).
ATTACK_S = 10
MAX_RUNS = 6
# Echo requests to the box itself during the attack (answered by the worker:
# a stalled worker loses them), and through the chain after the attack.
BOX_PINGS = 40
AFTER_PINGS = 10
AFTER_PING_SIZE = 1234

_POLICY = '[chain.policy]\ncount-a = "fail-closed"\ncount-b = "fail-closed"\nhostile = "fail-open"\n'
CHAIN = f"""[[chain]]
name = "web"
nfs = ["count-a", "count-b", "hostile"]
[chain.match]
protocol = "tcp"
ports = [80]
{_POLICY}
[[chain]]
name = "icmp"
nfs = ["count-a", "count-b", "hostile"]
[chain.match]
protocol = "icmp"
{_POLICY}"""

# Counts a good NF must not have: each would mean an event of the chain
# missed it, or it was taken for dead.
BAD_COUNTS = ("ring_full", "no_event_slot", "reclaimed", "fail_closed", "skipped_absent", "bad_verdict",
              "bad_publish")


@pytest.fixture
def hostile_user():
    """A member of group ubox (not root) to run the hostile NF; None (root)
    when the machine has no group ubox."""
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        yield None
        return
    name = f"ubx-{Names().instance_prefix}-hostile"[:32]
    user = _make_user(name, [GROUP])
    try:
        yield user
    finally:
        run(["userdel", name])


def _nf(rt, name):
    """The NF list's row of `name`, or None."""
    return next((n for n in rt.nf_list()["nfs"] if n["name"] == name), None)


def _wait_running(rt, name, pid, proc, timeout=10.0):
    """Until NF `name` runs as process `pid`; False if it did not (or the
    process exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _nf(rt, name)
        if row and row["state"] == "running" and row.get("pid") == pid:
            return True
        if not proc.alive():
            return False
        time.sleep(0.05)
    return False


def _last_json(path):
    """The last complete JSON line of a file (None if there is none)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _load(path):
    """A counter's --json-out report (an empty one if it wrote none)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"packets": -1, "bytes": -1, "flows": []}


def _csum_errors(names):
    """InCsumErrors of TCP and ICMP in the client's and the servers'
    namespaces (a packet corrupted in the box fails its checksum there)."""
    out = {}
    for ns in (names.c, names.s1, names.s2):
        rc, text = run(netns(ns, "cat", "/proc/net/snmp"))
        assert rc == 0, text
        lines = text.splitlines()
        for head, vals in zip(lines[::2], lines[1::2]):
            proto, keys = head.split(":", 1)
            d = dict(zip(keys.split(), vals.split(":", 1)[1].split()))
            if proto in ("Tcp", "Icmp") and "InCsumErrors" in d:
                out[f"{ns} {proto}"] = int(d["InCsumErrors"])
    return out


def _ping_received(text):
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _pools(stats):
    p = stats["pools"]
    return {k: p[k] for k in ("event_slots_free", "mbufs_free")}


# Two counters (fail-closed) and the hostile NF (fail-open, last) in the
# chains of port 80 and of ICMP. While the hostile NF attacks for 10 s
# (started again whenever the runtime declares it dead) pings to the box
# and 10 MB downloads run: the runtime stays up and answers every ping,
# every download is intact and no packet reached a host with a bad checksum;
# the hostile NF finds only its own channels writable and every other way
# in closed (mprotect, madvise, reopening, truncation, other processes);
# the good NFs saw exactly the same packets, each answered, as many as the
# runtime gave them. A last run, stopped while it holds a download's first
# packets and events, is killed with kill -9: the pools are back at their
# idle counts within seconds, the download completes, and new traffic is
# counted exactly by both good NFs.
def test_hostile_nf_cannot_reach_the_runtime_or_other_nfs(runtime, nf, procs, traffic, testbed, tdir, names,
                                                         hostile_user):
    if not HOSTILE.exists():
        pytest.fail(f"{HOSTILE} not found: cargo build --release -p nf-sdk --example hostile_nf")
    user = hostile_user
    who = f"{user.name} (uid {user.uid}, group {GROUP})" if user else "root (no group ubox)"
    print(f"    hostile NF runs as {who}")
    bins = tdir / "bin"
    bins.mkdir()
    shutil.copy2(HOSTILE, bins / "hostile_nf")
    (bins / "hostile_nf").chmod(0o755)

    # The good NFs share CPU 0 with the hostile one's busy loop (and, on a
    # loaded machine, with whatever else runs): rings deep enough for tens
    # of milliseconds of starvation, so that a skipped event (BAD_COUNTS)
    # says something about isolation, not about CPU share.
    rt = runtime("iso", nf_timeout_ms=1000, nf_ring_size=4096)
    good = {n: nf(rt, "counter", "--name", n, "--json-out", tdir / f"{n}.json", log=tdir / f"{n}.log") for n in GOOD}
    for n, p in good.items():
        assert _wait_running(rt, n, p.pid, p), f"{n} did not register"
    rt.apply_chain(tdir / "chain.toml", CHAIN)
    # Warm up (ARP, nginx) through the chain, the hostile NF absent.
    assert traffic.fetch("small.bin", max_time=10), "download through the chain before the attack"
    assert traffic.ping(SERVER_IP, 2), "ping through the chain before the attack"
    time.sleep(1)
    idle = rt.stats(tdir / "stats-idle.json")
    csum0 = _csum_errors(names)
    want = sha256(testbed.www / "10M.bin")

    peers = [a for p in (rt, *good.values()) for a in ("--peer", p.pid)]
    runs = []

    def start_hostile(seconds, *extra):
        g = len(runs) + 1
        cmd = [bins / "hostile_nf", "--instance", rt.instance, "--name", "hostile", "--seconds", f"{seconds:.1f}",
               "--seed", 1000 + g, "--events", "FLOW/TCP", *peers, *extra]
        p = procs.start(f"hostile-{g}", user.cmd(*cmd) if user else cmd, log=tdir / f"hostile-{g}.log",
                        stdout=tdir / f"hostile-{g}.json")
        ok = _wait_running(rt, "hostile", p.pid, p)
        runs.append({"proc": p, "out": tdir / f"hostile-{g}.json", "registered": ok, "started": time.monotonic()})
        print(f"    hostile run {g} (pid {p.pid}): {'registered' if ok else 'did not register: ' + p.tail(3)}")
        return ok

    t_end = time.monotonic() + ATTACK_S
    assert start_hostile(ATTACK_S), "the hostile NF did not register"
    box_ping = procs.start("ping-box", netns(names.c, "ping", "-c", BOX_PINGS, "-i", ATTACK_S / BOX_PINGS, "-W", 2,
                                             BOX_IP), stdout=tdir / "ping-box.txt")
    chain_ping = procs.start("ping-chain", netns(names.c, "ping", "-c", BOX_PINGS, "-i", ATTACK_S / BOX_PINGS, "-W",
                                                 2, SERVER_IP), stdout=tdir / "ping-chain.txt")
    downloads = []
    while time.monotonic() < t_end:
        if not downloads or not downloads[-1][0].alive():
            i = len(downloads) + 1
            out = tdir / f"dl-{i}.bin"
            downloads.append((procs.start(f"curl-{i}", netns(names.c, "curl", "-fsS", "--max-time", 60, "-o", out,
                                                               f"http://{SERVER_IP}/10M.bin")), out))
        row = _nf(rt, "hostile")
        left = t_end - time.monotonic()
        if (row and row["state"] == "dead" and left > 2 and len(runs) < MAX_RUNS
                and time.monotonic() - runs[-1]["started"] > 1):
            start_hostile(left)
        time.sleep(0.1)
    for p, _ in downloads:
        p.wait(timeout=90)
    box_ping.wait(timeout=30)
    chain_ping.wait(timeout=30)
    # Each run prints its last figures when its time is up.
    for r in runs:
        deadline = time.monotonic() + 5
        while r["proc"].alive() and not (_last_json(r["out"]) or {}).get("done") and time.monotonic() < deadline:
            time.sleep(0.1)
    assert rt.alive(), f"the runtime died under the attack:\n{rt.tail(20)}"
    during = rt.stats(tdir / "stats-attack.json")
    hrow = nf_row(during, "hostile")
    print(f"    runtime after the attack: hostile NF {hrow['state']}, events in {hrow['events_in']} out "
          f"{hrow['events_out']}, counts {hrow['counts']}; pools {during['pools']}")

    # kill -9 every run still alive.
    for r in runs:
        if r["proc"].alive():
            r["proc"].kill9()
    for _ in range(50):
        if _nf(rt, "hostile")["state"] == "dead":
            break
        time.sleep(0.1)

    # One more run, which probes but writes nothing, stopped (SIGSTOP) while
    # a download starts: its stage holds the download's first packets and
    # FLOW/TCP events (mbufs, event slots) until kill -9 gives them back
    # (before nf_timeout_ms would have).
    for _ in range(3):  # refused while the last run's events are still being reclaimed
        if start_hostile(30, "--rate", 0):
            break
        time.sleep(1)
    assert runs[-1]["registered"], "the last hostile run did not register"
    hold = runs[-1]["proc"]
    time.sleep(0.3)  # a survey and a JSON line
    hold.send_signal(signal.SIGSTOP)
    held_dl = procs.start("curl-held", netns(names.c, "curl", "-fsS", "--max-time", 30, "-o", tdir / "held.bin",
                                            f"http://{SERVER_IP}/small.bin"))
    held, t = None, time.monotonic()
    while held is None and time.monotonic() - t < 0.6:
        now = rt.stats()
        if _pools(now) != _pools(idle):
            held = now["pools"]
        time.sleep(0.02)
    killed = time.monotonic()
    hold.kill9()
    back_s, now = None, None
    while time.monotonic() - killed < 10:
        now = rt.stats()
        if _pools(now) == _pools(idle) and _nf(rt, "hostile")["state"] == "dead":
            back_s = time.monotonic() - killed
            break
        time.sleep(0.05)
    held_ok = held_dl.wait(timeout=40) == 0 and sha256(tdir / "held.bin") == sha256(testbed.www / "small.bin")
    print(f"    pools idle {idle['pools']}\n    held by the stopped hostile run {held}\n    after its kill -9 "
          f"{now['pools']} ({'back after %.2f s' % back_s if back_s is not None else 'not back in 10 s'}); the "
          f"download it held {'completed intact' if held_ok else 'failed'}")

    # New traffic after the attack: counted exactly by both good NFs.
    before = rt.stats(tdir / "stats-before-after.json")
    _, text = run(netns(names.c, "ping", "-c", AFTER_PINGS, "-i", 0.1, "-W", 2, "-s", AFTER_PING_SIZE, SERVER2_IP))
    after_ping = _ping_received(text)
    got_after = tdir / "after.bin"
    after_dl = traffic.fetch("small.bin", got_after, max_time=10)
    time.sleep(0.5)
    final = rt.stats(tdir / "stats-final.json")
    nfs = rt.nf_list(tdir / "nfs-final.json")
    exits = {n: p.stop() for n, p in good.items()}
    reports = {n: _load(tdir / f"{n}.json") for n in GOOD}
    rt_alive, rt_exit = rt.alive(), rt.stop()

    # --- what happened -------------------------------------------------------
    # The runs that registered (one may be refused while the last one's
    # events are still being reclaimed).
    figs = [(i + 1, _last_json(r["out"])) for i, r in enumerate(runs) if r["registered"]]
    for g, f in figs:
        if f is None:
            print(f"    hostile run {g}: no figures")
            continue
        print(f"    hostile run {g}: {f['elapsed_s']} s, {f['events']} events, {f['bytes_written']} bytes in "
              f"{f['write_runs']} runs into {[m['kind'] for m in f['writable_mappings']]}; read-only "
              f"{sorted({m['kind'] for m in f['readonly_mappings']})}; mprotect refused {f['mprotect_refused']} "
              f"allowed {f['mprotect_allowed']}; reopen refused {f['reopen_refused']} allowed {f['reopen_allowed']}; "
              f"descriptors {f['fd_modes']} ({f['fds_kept']} kept from the SDK's closes); nf: {f['nf']}")
        for probe, by in sorted(f["probes"].items()):
            print(f"      {probe}: " + ", ".join(f"{k} {t['refused']} refused / {t['allowed']} allowed"
                                                 + (f" ({t['error']})" if t["error"] else "") for k, t in by.items()))
        if f["breaches"]:
            print(f"      BREACHES: {f['breaches']}")
    box = _ping_received((tdir / "ping-box.txt").read_text())
    chain = _ping_received((tdir / "ping-chain.txt").read_text())
    dls = [(p.returncode, out.exists() and sha256(out) == want) for p, out in downloads]
    for _, out in downloads:
        out.unlink(missing_ok=True)  # 10 MB each
    csum1 = _csum_errors(names)
    print(f"    during the attack: pings to the box {box[1]}/{box[0]}, through the chain {chain[1]}/{chain[0]}; "
          f"downloads (exit, intact) {dls}; checksum errors before {csum0} after {csum1}")
    rows = {n: nf_row(final, n) for n in GOOD}
    grew = {n: rows[n]["events_in"] - nf_row(before, n)["events_in"] for n in GOOD}
    print(f"    after the attack: ping to {SERVER2_IP} {after_ping[1]}/{after_ping[0]}, download "
          f"{'ok' if after_dl else 'failed'}; the good NFs counted {grew} more events")
    for n in GOOD:
        r, row = reports[n], rows[n]
        print(f"    {n}: runtime in {row['events_in']} out {row['events_out']} counts {row['counts']}; NF saw "
              f"{r['packets']} packets / {r['bytes']} bytes in {len(r['flows'])} flows")

    # --- the hostile NF found no way in ----------------------------------------
    assert all(f is not None for _, f in figs), "a hostile run printed no figures"
    assert sum(f["bytes_written"] for _, f in figs) > 100_000, "the hostile NF hardly attacked"
    for g, f in figs:
        # Shared ones (a private mapping's writes stay in this process).
        kinds = {m["kind"] for m in f["writable_mappings"] if m["perms"][3] == "s"}
        assert kinds == {"channel"}, f"run {g}: writable mappings {kinds}, not only its channel"
        channels = {m["inode"] for m in f["writable_mappings"] if m["kind"] == "channel"}
        assert len(channels) == len(final["workers"]), f"run {g}: {len(channels)} channels mapped, not one per worker"
        ro = {m["kind"] for m in f["readonly_mappings"]}
        assert {"arena", "data"} <= ro, f"run {g}: read-only mappings {ro}, not the arena and the packet memfd"
        mp = f["probes"]["mprotect"]
        assert f["mprotect_allowed"] == 0 and mp["arena"]["refused"] > 0 and mp["data"]["refused"] > 0, \
            f"run {g}: mprotect {mp}"
        breaches = f["breaches"]
        if user is None:
            # Root passes every permission check on a path or /proc (the
            # arena's path, /proc/self/fd links, other processes): only what
            # the mappings and the memfds' seals allow counts.
            breaches = [b for b in breaches
                        if not (b.startswith(("reopen", "peer_")) or b.endswith(("path_arena", "fd_arena")))]
        assert breaches == [], f"run {g}: the hostile NF got in: {breaches}"

    # --- the runtime and the traffic --------------------------------------------
    assert rt_alive and rt_exit == 0 and not log_has(rt.log, "panicked"), f"runtime: exit {rt_exit}"
    assert box[0] == BOX_PINGS and box[1] == box[0], "pings to the box were lost during the attack (a stalled worker?)"
    assert dls and all(rc == 0 and ok for rc, ok in dls), "a download during the attack failed or was corrupted"
    assert csum1 == csum0, "a packet reached a host with a bad checksum"
    # The hostile stage may drop what it holds (its answers are its own to
    # break), but a good NF's fail-closed stage never dropped anything.
    assert drops_sum(final).get("nf_fail_closed", 0) == 0, drops_sum(final)

    # --- the good NFs ------------------------------------------------------------
    for n in GOOD:
        row, r = rows[n], reports[n]
        assert row["state"] == "running" and nf_row(nfs, n)["state"] == "running", f"{n} was taken for dead"
        assert exits[n] == 0, f"{n} exit code {exits[n]}"
        assert row["events_in"] == row["events_out"] == r["packets"], f"{n}: runtime in/out and the NF's count differ"
        assert not any(row["counts"].get(k, 0) for k in BAD_COUNTS), f"{n}: {row['counts']}"
    a, b = (reports[n] for n in GOOD)
    assert a["flows"] == b["flows"], "the two good NFs did not see the same packets of the same flows"

    # --- after kill -9 ---------------------------------------------------------
    assert held is not None, "the stopped hostile run held no mbuf or event slot (nothing to give back)"
    assert back_s is not None, "the pools did not come back to their idle counts after kill -9 of the hostile NF"
    assert held_ok, "the download the stopped hostile run held did not complete after its kill -9"
    assert after_ping == (AFTER_PINGS, AFTER_PINGS), f"ping through the chain after the attack: {after_ping}"
    assert after_dl and sha256(got_after) == sha256(testbed.www / "small.bin"), "download after the attack"
    assert grew["count-a"] == grew["count-b"] >= 2 * AFTER_PINGS + 8, "new traffic not counted by both good NFs"
    # The ping to the second server is a flow of its own: every echo
    # request and reply, once, in both.
    ping_flows = [x for x in a["flows"] if x["packets"] == 2 * AFTER_PINGS and x["bytes"] % (2 * AFTER_PINGS) == 0
                  and x["bytes"] // (2 * AFTER_PINGS) in (AFTER_PING_SIZE + 28, AFTER_PING_SIZE + 42)]
    assert len(ping_flows) == 1 and ping_flows[0] in b["flows"], "the pings after the attack were not counted exactly"
