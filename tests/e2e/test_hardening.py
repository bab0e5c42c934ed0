"""Hardening (issue 9): the control plane under idle and hostile clients,
and an NF restarted after kill -9 that must stay live."""

import json
import socket
import subprocess
import time

from test_nf import chain_toml
from ubox_e2e import BIN, log_has


def _ping_ms(path):
    t = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b'{"cmd":"ping"}\n')
    resp = s.makefile().readline()
    s.close()
    assert json.loads(resp)["status"] == "pong", resp
    return (time.monotonic() - t) * 1000


# 1,000 idle and 200 half-written connections on the control socket: ping
# still answers at once, a kill -9'd NF is still declared dead within
# nf_timeout_ms + 100 ms, its fail-closed chain blocks, a restarted NF is
# let in, and the stats count what the socket did.
def test_control_plane_under_idle_clients(runtime, nf, traffic, tdir):
    rt = runtime("ctl", nf_timeout_ms=500)
    c1 = nf(rt, "counter", log=tdir / "c1.log")
    time.sleep(0.5)
    rt.apply_chain(tdir / "closed.toml", chain_toml("fail-closed"), quiet=True)
    assert traffic.fetch("small.bin", max_time=10), "fetch through the chain"
    path = f"/run/ubox/{rt.instance}.sock"
    held = []
    for i in range(1200):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        if i >= 1000:
            s.send(b'{"cmd":"sta')
        held.append(s)
    time.sleep(0.5)
    lat = sorted(_ping_ms(path) for _ in range(20))
    print(f"    ping with 1000 idle + 200 half-written clients: median {lat[10]:.2f} ms, max {lat[-1]:.2f} ms")
    assert lat[-1] < 50, f"ping took {lat[-1]:.1f} ms behind idle clients"
    t0 = time.monotonic()
    c1.kill9()
    dead_ms = None
    while time.monotonic() - t0 < 5:
        if rt.nf_state() == "counter=dead":
            dead_ms = (time.monotonic() - t0) * 1000
            break
        time.sleep(0.01)
    print(f"    kill -9'd NF declared dead after {dead_ms} ms (nf_timeout_ms 500)")
    assert dead_ms is not None and dead_ms <= 600, "NF death not noticed in time behind idle clients"
    assert not traffic.fetch("small.bin", max_time=3), "fail-closed chain passed a flow with its NF dead"
    c2 = nf(rt, "counter", log=tdir / "c2.log")
    assert rt.wait_nf_state("counter=running"), "restarted NF did not register behind idle clients"
    assert traffic.fetch("small.bin", max_time=10), "restarted NF not let in behind idle clients"
    st = rt.stats(tdir / "ctl-stats.json")["control"]
    print(f"    control socket: {st}")
    assert st["open"] >= 1200, "idle clients were dropped early"
    # A chain file over the line limit is refused with the limit named.
    big = tdir / "big.toml"
    big.write_text(chain_toml("fail-closed") + "#" * (5 << 20) + "\n")
    p = subprocess.run([str(BIN / "uboxctl"), "-i", rt.instance, "chain", "apply", str(big)],
                       capture_output=True, text=True, timeout=30)
    out = (p.stdout + p.stderr).strip()
    print(f"    5 MiB chain file: exit {p.returncode}: {out[:200]}")
    assert p.returncode != 0 and "limit" in out and "4 MiB" in out, "over-long request not refused with its limit"
    for s in held:
        s.close()
    c2.stop()
    assert rt.stop() == 0, "runtime exit code"


# Issue 9 §1b: an NF killed under traffic and started again under the same
# name answers everything; idling longer than nf_timeout_ms afterwards must
# not get it declared dead, and its fail-closed chain keeps passing flows.
def test_restarted_nf_stays_live(runtime, nf, traffic, tdir):
    rt = runtime("restart", nf_timeout_ms=500)
    c1 = nf(rt, "counter", log=tdir / "c1.log")
    time.sleep(0.5)
    rt.apply_chain(tdir / "closed.toml", chain_toml("fail-closed"), quiet=True)
    dl = traffic.iperf_through(5311, 4, tdir / "r1.json")
    time.sleep(1.5)
    c1.kill9()
    c2 = nf(rt, "counter", log=tdir / "c2.log")
    assert rt.wait_nf_state("counter=running"), "restarted NF did not register"
    dl.wait()
    mid = rt.stats(tdir / "restart-mid.json")
    n = [x for x in mid["nfs"] if x["name"] == "counter"][0]
    print(f"    after the restart: in {n['events_in']} out {n['events_out']} counts {n['counts']}")
    assert traffic.fetch("small.bin", max_time=10), "fetch through the restarted NF"
    time.sleep(2.0)  # idle for 4 x nf_timeout_ms
    state = rt.nf_state()
    print(f"    after 2 s idle: {state}")
    assert state == "counter=running", "restarted NF declared dead while idle"
    assert c2.alive(), "restarted NF exited"
    assert traffic.fetch("small.bin", max_time=10), "chain blocks new flows after the idle period"
    assert not log_has(rt.log, "declaring it dead"), "runtime declared the restarted NF dead"
    c2.stop()
    assert rt.stop() == 0, "runtime exit code"

