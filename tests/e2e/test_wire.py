"""Traffic through the box in wire mode: real ping, curl, nginx and iperf3
between the testbed's namespaces, checked against the runtime's counters."""
import json
import re
import signal
import subprocess
import time

from ubox_e2e import (BIN, BOX_IP, HUGEPAGES_NR, PYTHON, ROOT, SERVER_IP, drops_sum, flows_sum, load, log_has,
                      netns, one_line, run, same_file, sha256, wire_config)


def test_ping(runtime, traffic, tdir):
    # No box, no path.
    assert not traffic.ping(SERVER_IP, 1, interval=None, wait=1), "client reaches server without the box"
    rt = runtime("ping")
    assert traffic.ping(SERVER_IP, 5, show=True), "ping through the box"
    assert traffic.ping(BOX_IP, 3, show=True), "ping to the box's own address"
    s = rt.stats(tdir / "ping.json")
    replies = sum(w["replies"] for w in s["workers"])
    print(f"    box replies (ARP + ICMP): {replies}")
    assert replies >= 4, f"expected >= 3 echo replies + 1 ARP reply, got {replies}"
    # SIGUSR1 prints the counters without stopping anything.
    rt.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    assert log_has(rt.log, r"^worker  lcore"), "SIGUSR1 printed no counters"
    assert rt.alive(), "runtime died on SIGUSR1"
    assert rt.stop() == 0, "runtime exit code"


def test_no_hugepages(runtime, traffic, tdir, names):
    saved = HUGEPAGES_NR.read_text().strip()
    cfg = tdir / "nohuge.toml"
    cfg.write_text(wire_config(names.instance("nohuge"), names.ic, names.is_))
    HUGEPAGES_NR.write_text("0")
    try:
        rc, out = run([BIN / "ubox-runtime", "--config", cfg])
    finally:
        HUGEPAGES_NR.write_text(saved)
    print(f"    got: {out}")
    assert rc != 0, "exit code 0 without hugepages"
    assert one_line(out), "error is not one line"
    # "no free hugepages", or "not enough free hugepages" when pages released
    # by the previous test's process are still on their way back.
    assert re.search(r" free hugepages.*scripts/setup\.sh", out, re.S), "error does not say what and how to fix"
    # --no-huge runs, with a loud warning, and forwards.
    rt = runtime("nohuge", args=["--no-huge"])
    assert log_has(rt.log, "WARNING: ubox-runtime is running WITHOUT hugepages"), "no warning"
    assert traffic.ping(SERVER_IP, 2), "ping with --no-huge"
    assert rt.stop() == 0, "runtime exit code"


def test_download_10mb(runtime, traffic, testbed, tdir):
    rt = runtime("dl")
    got = tdir / "got.bin"
    assert traffic.fetch("10M.bin", got, max_time=60), "curl failed"
    want, have = sha256(testbed.www / "10M.bin"), sha256(got)
    print(f"    sha256 sent {want}\n    sha256 got  {have}")
    assert want == have, "checksum mismatch"
    s = rt.stats(tdir / "dl.json")
    fwd_srv = s["ports"][0]["tx_bytes"]
    print(f"    bytes forwarded server->client: {fwd_srv}")
    assert fwd_srv >= 10_000_000, "runtime forwarded fewer bytes than the file"
    assert rt.stop() == 0, "runtime exit code"


def test_iperf3(runtime, traffic, tdir):
    traffic.iperf_server(5201)
    rt = runtime("iperf")
    time.sleep(0.3)
    client = traffic.iperf_client(5201, 5, tdir / "iperf.json")
    assert client.wait(timeout=60) == 0, "iperf3 failed"
    st = rt.stats(tdir / "iperf.json.stats")
    assert rt.stop() == 0, "runtime exit code"
    r = load(tdir / "iperf.json")
    sent, recv = r["end"]["sum_sent"]["bytes"], r["end"]["sum_received"]["bytes"]
    # Client -> server payload leaves the box on the server port.
    fwd = st["ports"][1]["tx_bytes"]
    print(f"    iperf3 sent {sent} B, received {recv} B; box forwarded {fwd} B client->server")
    # Every payload byte the server received crossed the box, plus
    # Ethernet/IP/TCP headers (66 B per <=1448 B segment, ~4.6%), the control
    # connection and any retransmissions: the box's count must lie between
    # recv and recv * 1.10 + 1 MB.
    lo, hi = recv, recv * 1.10 + 1_000_000
    print(f"    ratio forwarded/received = {fwd / recv:.4f} (allowed {lo / recv:.2f}..{hi / recv:.4f})")
    assert lo <= fwd <= hi, "runtime byte count inconsistent with iperf3"


def test_malformed_frames(runtime, traffic, tdir, names):
    rt = runtime("malformed")
    p = subprocess.run(netns(names.c, PYTHON, ROOT / "scripts" / "tools" / "send_malformed.py", "eth0",
                             "02:00:00:00:00:11", 25), stdout=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, "sender"
    sent = json.loads(p.stdout)
    time.sleep(0.5)
    st = rt.stats(tdir / "bad-frames.json")
    assert traffic.ping(SERVER_IP, 2), "good traffic stopped after bad frames"
    assert rt.stop() == 0, "runtime exit code"
    drops = drops_sum(st)
    print(f"    sent {sent}")
    print(f"    dropped {drops}")
    assert all(drops.get(k) == v for k, v in sent.items()), "drop counters do not match what was sent"


def test_flow_bound(runtime, traffic, testbed, tdir):
    final = tdir / "bound-final.json"
    rt = runtime("bound", args=["--stats-json", final], flow_capacity=8)
    ok = sum(traffic.fetch("small.bin", max_time=5) for _ in range(40))
    print(f"    {ok} of 40 connections succeeded with an 8-flow table")
    assert ok == 40, "traffic did not keep flowing at the flow-table bound"
    got = tdir / "got2.bin"
    assert traffic.fetch("10M.bin", got, max_time=60), "download at bound"
    assert same_file(got, testbed.www / "10M.bin"), "download at bound corrupted"
    s = rt.stats(tdir / "bound.json")
    started, evicted = flows_sum(s, "started"), flows_sum(s, "evicted")
    active, ended = flows_sum(s, "active"), flows_sum(s, "ended_idle")
    print(f"    flows started {started}, evicted {evicted}, idle-ended {ended}, active {active} (capacity 8)")
    assert started >= 41, "expected >= 41 flows started"
    assert active <= 8, "more flows active than the bound"
    assert evicted >= started - 8, "evictions not counted"
    assert started == evicted + ended + active, "flow counters do not add up"
    assert rt.stop() == 0, "runtime exit code"
    # The final counters (--stats-json, written at exit) still add up, with
    # the flows open at shutdown ended too.
    fl = [w["flows"] for w in load(final)["workers"]]
    t = {k: sum(x[k] for x in fl) for k in fl[0]}
    print(f"    final: {t}")
    assert t["active"] == 0 and t["started"] == t["ended_idle"] + t["evicted"] + t["ended_shutdown"] > 0, \
        "final counters do not add up"


def test_flow_idle_timeout(runtime, traffic, tdir):
    rt = runtime("idle", flow_idle_ms=300)
    assert traffic.fetch("small.bin", max_time=5), "curl"
    time.sleep(1)
    s = rt.stats(tdir / "idle.json")
    ended, active = flows_sum(s, "ended_idle"), flows_sum(s, "active")
    print(f"    after 1 s idle: ended_idle {ended}, active {active}")
    assert ended >= 1 and active == 0, "idle flow did not end"
    assert rt.stop() == 0, "runtime exit code"


def test_two_workers(runtime, traffic, testbed, tdir):
    rt = runtime("w2", workers=2)
    got = tdir / "w2.bin"
    for i in range(1, 7):
        assert traffic.fetch("10M.bin", got, max_time=30), f"download {i}"
        assert same_file(got, testbed.www / "10M.bin"), f"download {i} corrupted"
    s = rt.stats(tdir / "w2.json")
    started = flows_sum(s, "started")
    w0, w1 = (s["workers"][i]["flows"]["started"] for i in (0, 1))
    print(f"    steering {s['steering']}; flows per worker {w0} / {w1}; "
          f"handoffs {[w['handoff_out'] for w in s['workers']]}")
    # Each TCP connection is one flow on exactly one worker: both directions
    # met the same table entry (else a flow would start twice).
    assert started == 6, f"expected 6 flows (one per connection), got {started}"
    assert rt.stop() == 0, "runtime exit code"
