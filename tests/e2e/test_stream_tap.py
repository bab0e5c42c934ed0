"""stream-tap (issue 12 §7): each TCP connection's reassembled bytes saved
to files through the box, in the manner of tcpflow. Files are downloaded
with the TCP monitor on and two stream-taps subscribed (one saving both
sides, one only the first 100 KiB of each server side), under loss
(iptables statistic drops before and after the box), reordering and
duplication (scripts/tools/impair.py between the box and the servers).
Checked as a user of tcpflow would: each saved server stream, minus its
HTTP header, hashes equal to the file served; each client stream is its
request; the index accounts for every byte; the capped tap's files are
the prefixes of the full ones."""
import hashlib
import json
import os
import re
import subprocess
import time

from ubox_e2e import BIN, CLIENT_IP, MONITOR_EXTRA, PYTHON, ROOT, SERVER_IP, load, netns, one_line

SIZES = (1_000_000, 2_500_000, 5_000_000)
CAP = 100 * 1024
CHAIN = """[[chain]]
name = "tap"
nfs = [["stream-tap", "tap-capped"]]
[chain.match]
protocol = "tcp"
"""


def index_lines(d):
    p = d / "index.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def split_http(stream):
    """(header, body) of one HTTP response."""
    head, sep, body = stream.partition(b"\r\n\r\n")
    assert sep, f"no end of header in {stream[:200]!r}"
    return head.decode("latin-1"), body


def insert_impair(procs, tdir, sw):
    """impair.py bridging the box's server-side veth (sw-up) into the
    switch: 5 % of the TCP frames reordered, 5 % duplicated, both ways.
    Returns the process; undo_impair puts the veth back."""
    sh = lambda *a: subprocess.run(netns(sw, *a), check=True)  # noqa: E731
    sh("ip", "link", "add", "imp-a", "type", "veth", "peer", "name", "imp-b")
    for ifc in ("imp-a", "imp-b"):
        subprocess.run(netns(sw, "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"),
                       capture_output=True)
    sh("ip", "link", "set", "sw-up", "nomaster")
    sh("ip", "link", "set", "imp-b", "master", "br0", "up")
    for ifc in ("imp-a", "sw-up"):
        sh("ip", "link", "set", ifc, "up", "promisc", "on")
    imp = procs.start("impair", netns(sw, PYTHON, ROOT / "scripts" / "tools" / "impair.py", "--a", "sw-up", "--b", "imp-a",
                                      "--reorder", "0.05", "--dup", "0.05", "--seed", "12"),
                      log=tdir / "impair.err", stdout=tdir / "impair.out")
    time.sleep(0.5)
    return imp


def undo_impair(sw):
    subprocess.run(netns(sw, "ip", "link", "del", "imp-a"), capture_output=True)
    subprocess.run(netns(sw, "ip", "link", "set", "sw-up", "master", "br0"), capture_output=True)


def test_stream_tap_saves_streams_under_loss_reorder_and_duplication(testbed, runtime, nf, traffic, procs, tdir, names):
    files = {}
    for i, size in enumerate(SIZES):
        name = f"tap{i}.bin"
        files[name] = os.urandom(size)
        (testbed.www / name).write_bytes(files[name])
    sw = f"{names.prefix}-sw"
    drop = ["-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"]
    # Before the box (the switch's bridge, server to box): holes the monitor
    # must wait for; after it (the client's input): retransmissions of bytes
    # the box already had.
    loss = [(sw, ["FORWARD", "-p", "tcp", "--sport", "80"]), (names.c, ["INPUT", "-p", "tcp", "--sport", "80"])]
    bridged = subprocess.run(netns(sw, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"),
                             stdout=subprocess.PIPE, text=True).stdout.strip() or "0"
    ports = {}
    try:
        imp = insert_impair(procs, tdir, sw)
        rt = runtime("tap", extra=MONITOR_EXTRA + "\nlinger_ms = 300")
        full, capped = tdir / "tap", tdir / "tap-capped"
        tap = nf(rt, "stream-tap", "--dir", full, "--json-out", tdir / "tap.json")
        tap2 = procs.start("tap-capped", [BIN / "stream-tap", "--instance", rt.instance, "--name", "tap-capped",
                                          "--dir", capped, "--side", "server", "--max-bytes", "100K",
                                          "--json-out", tdir / "tap-capped.json"])
        for _ in range(50):
            if set(rt.nf_state().split(",")) == {"stream-tap=running", "tap-capped=running"}:
                break
            time.sleep(0.1)
        assert set(rt.nf_state().split(",")) == {"stream-tap=running", "tap-capped=running"}, "the taps did not register"
        rt.apply_chain(tdir / "chain.toml", CHAIN)
        subprocess.run(netns(sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"), check=True)
        for ns, rule in loss:
            subprocess.run(netns(ns, "iptables", "-A", *rule, *drop), check=True)
        for name in files:
            got = tdir / name
            r = traffic.curl(f"http://{SERVER_IP}/{name}", out=got, max_time=60, extra=["-w", "%{local_port}"])
            assert r.returncode == 0, f"download of {name}: {r.stderr.strip()}"
            assert got.read_bytes() == files[name], f"{name} corrupted through the box"
            ports[name] = int(r.stdout.strip())
        # FLOW/END (a linger after each close) brings the index lines; the
        # impairments stay while the connections close.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (len(index_lines(full)) < 3 or len(index_lines(capped)) < 3):
            time.sleep(0.1)
        for ns, rule in loss:
            p = subprocess.run(netns(ns, "iptables", "-L", rule[0], "-v", "-n", "-x"), stdout=subprocess.PIPE, text=True)
            hits = [int(ln.split()[0]) for ln in p.stdout.splitlines() if "statistic" in ln]
            print(f"    {ns} {rule[0]}: {hits[0] if hits else '?'} packets dropped")
            assert hits and hits[0] > 0, f"no loss in {ns}"
        imp.stop()
    finally:
        for ns, rule in loss:
            subprocess.run(netns(ns, "iptables", "-D", *rule, *drop), check=False)
        subprocess.run(netns(sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={bridged}"), check=False)
        undo_impair(sw)
        for name in files:
            (testbed.www / name).unlink(missing_ok=True)
    st = rt.stats(tdir / "stats.json")
    assert tap.stop() == 0 and tap2.stop() == 0, "stream-tap exit code"
    assert rt.stop() == 0, "runtime exit code"
    report = (tdir / "impair.out").read_text()
    print("    " + report.strip())
    got = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", report)}
    assert got["reordered"] > 0 and got["duplicated"] > 0, report
    seg = {k: sum(w["monitor"]["segments"][k] for w in st["workers"]) for k in st["workers"][0]["monitor"]["segments"]}
    print(f"    monitor segments: {seg}")
    assert seg["out_of_order"] > 0 and seg["duplicates"] > 0 and seg["retransmits"] > 0, \
        "the impairments did not reach the monitor"

    lines = index_lines(full)
    res = load(tdir / "tap.json")
    keys = ("connections", "bytes_written", "bytes_over_max_bytes", "gaps", "bytes_recovered", "sides_stopped",
            "write_errors")
    print(f"    stream-tap: {len(lines)} index line(s); {', '.join(f'{k} {res[k]}' for k in keys)}")
    assert len(lines) == 3, "one record per download"
    for name, data in files.items():
        mine = [ln for ln in lines if ln["client"] == f"{CLIENT_IP}:{ports[name]}"]
        assert len(mine) == 1, f"no index line for {name}'s connection (port {ports[name]})"
        ln = mine[0]
        assert ln["server"] == f"{SERVER_IP}:80" and ln["end"] == "tcp_closed", ln
        assert not ln["gap"] and not ln["truncated"], f"{name}: {ln}"
        c2s, s2c = (full / ln["c2s"]["file"]).read_bytes(), (full / ln["s2c"]["file"]).read_bytes()
        for side, saved in (("c2s", c2s), ("s2c", s2c)):
            assert ln[side]["bytes"] == ln[side]["stream_bytes"] == len(saved), f"{name} {side}: {ln[side]}"
            assert ln[side]["fin"], f"{name} {side}: no FIN seen"
        head, body = split_http(s2c)
        print(f"    {name}: client stream {len(c2s)} B, server stream {len(s2c)} B ({len(head) + 4} B of header)")
        assert head.startswith("HTTP/1.1 200"), head
        assert re.search(rf"(?im)^content-length: {len(data)}\r?$", head), head
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest(), \
            f"{name}: the saved server stream minus its header differs from the file"
        assert c2s.startswith(f"GET /{name} HTTP/1.1\r\n".encode()) and c2s.endswith(b"\r\n\r\n"), c2s
        assert f"\r\nHost: {SERVER_IP}\r\n".encode() in c2s and c2s.count(b"GET ") == 1, c2s
    saved = sum(p.stat().st_size for p in full.iterdir() if p.name != "index.jsonl")
    assert res["bytes_written"] == saved == sum(ln[s]["bytes"] for ln in lines for s in ("c2s", "s2c"))
    assert res["connections"] == res["index_lines"] == 3 and res["unfinished"] == 0
    for k in ("gaps", "write_errors", "index_errors", "read_errors", "sides_stopped", "flows_evicted"):
        assert res[k] == 0, f"{k}: {res}"
    assert res["events"] == res["data_events"] + res["tcp_events"] + res["flow_end_events"]

    # The capped tap: only server sides, each the first 100 KiB of the full one.
    lines2 = index_lines(capped)
    res2 = load(tdir / "tap-capped.json")
    print(f"    tap-capped: {', '.join(f'{k} {res2[k]}' for k in keys)}")
    assert len(lines2) == 3
    for ln in lines2:
        whole = [x for x in lines if x["client"] == ln["client"]][0]
        assert ln["c2s"]["file"] is None and ln["c2s"]["bytes"] == 0, "--side server saved a client side"
        s = ln["s2c"]
        assert ln["truncated"] and s["capped"] == "max_bytes" and s["bytes"] == CAP, ln
        assert s["stream_bytes"] == whole["s2c"]["stream_bytes"] == s["bytes"] + s["not_written"], ln
        assert (capped / s["file"]).read_bytes() == (full / whole["s2c"]["file"]).read_bytes()[:CAP]
    assert res2["bytes_written"] == 3 * CAP and res2["sides_capped"] == 3
    assert res2["bytes_over_max_bytes"] == sum(ln["s2c"]["not_written"] for ln in lines2)


def test_stream_tap_refuses_an_unwritable_directory(tdir):
    """A --dir it cannot create files in: one line naming it, status 1,
    before it tries to register."""
    (tdir / "a-file").write_text("x")
    bad = tdir / "a-file" / "out"
    p = subprocess.run([BIN / "stream-tap", "--dir", bad, "--socket", tdir / "no.sock"], capture_output=True,
                       text=True, timeout=10)
    print(f"    exit {p.returncode}: {p.stderr.strip()}")
    assert p.returncode == 1
    assert one_line(p.stderr) and f"--dir {bad}: cannot make the directory" in p.stderr, p.stderr
    assert "give a directory this user can write" in p.stderr
    assert "connect" not in p.stderr, "it tried the runtime first"
