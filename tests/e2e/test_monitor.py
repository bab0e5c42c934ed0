"""The TCP monitor: NFs over reassembled streams (ids, stateful-firewall,
flow-logger) through the box, and replays of real Linux TCP through loss,
reordering and duplication."""
import json
import os
import subprocess
import time

from ubox_e2e import BIN, CLIENT_IP, MONITOR_EXTRA, PYTHON, ROOT, SERVER_IP, load, netns, same_file

# The signature "evil-\rsignature" split over two segments of one HTTP
# request (TCP_NODELAY, a pause between the sends).
SPLIT_REQUEST = """
import socket, time
s = socket.create_connection(("10.10.0.11", 80), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(b"GET /small.bin?q=evil-")
time.sleep(0.3)
s.sendall(b"\\rsignature HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print(f"    split request answered with {len(data)} bytes")
"""


def ids_chain(rt, nf, tdir, chain_file, quiet=False, more_rules="", chain_keys=""):
    """The ids NF (alerting on "evil-signature" in client bytes, and on
    `more_rules`; alerts in tdir/ids.json) alone in a TCP chain applied as
    tdir/chain_file: the NF process and the chain text."""
    rules = tdir / "ids.rules"
    rules.write_text('alert sig client "evil-signature"\n' + more_rules)
    ids = nf(rt, "ids", "--rules", rules, "--json-out", tdir / "ids.json")
    time.sleep(0.5)
    chain = f'[[chain]]\nname = "inspect"\nnfs = ["ids"]\n{chain_keys}[chain.match]\nprotocol = "tcp"\n'
    rt.apply_chain(tdir / chain_file, chain, quiet=quiet)
    return ids, chain


def monitor_runtime(runtime, suffix, **config):
    """A runtime for the monitor tests: deep stream rings."""
    return runtime(suffix, extra=MONITOR_EXTRA, **config)


# The ids NF over reassembled streams: a signature sent split across two TCP
# segments of one HTTP request is found once; with a terminate rule the
# connection is reset both ways (curl sees the reset) and later packets of
# the flow are dropped; a clean download through the same chain is intact.
def test_monitor_ids(runtime, nf, traffic, testbed, tdir, names):
    rt = monitor_runtime(runtime, "ids")
    rules = tdir / "ids.rules"
    rules.write_text('# e2e rules\nalert split-sig client "evil-|0d|signature"\nterminate kill-sig client "kill-me-now"\n')
    ids = nf(rt, "ids", "--rules", rules, "--json-out", tdir / "ids.json")
    time.sleep(0.5)
    rt.apply_chain(tdir / "ids-chain.toml", '[[chain]]\nname = "inspect"\nnfs = ["ids"]\n[chain.match]\nprotocol = "tcp"\n')
    clean = tdir / "ids-clean.bin"
    assert traffic.fetch("10M.bin", clean, max_time=30), "clean download"
    assert same_file(clean, testbed.www / "10M.bin"), "clean download corrupted through the monitor"
    p = subprocess.run(netns(names.c, PYTHON, "-c", SPLIT_REQUEST), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    print(p.stdout, end="")
    assert p.returncode == 0, "split request"
    kill = tdir / "ids-kill.bin"
    r = traffic.curl(f"http://{SERVER_IP}/10M.bin?q=kill-me-now", out=kill, max_time=20, flags="-sS")
    (tdir / "ids-curl.err").write_text(r.stderr)
    size = kill.stat().st_size if kill.exists() else 0
    print(f"    curl with the terminate signature: exit {r.returncode}, {size} bytes: {r.stderr.strip()}")
    assert r.returncode != 0, "the terminated download completed"
    assert "reset" in r.stderr.lower(), "curl did not see a reset"
    time.sleep(0.3)
    st = rt.stats(tdir / "ids-stats.json")
    ids.stop()
    assert rt.stop() == 0, "runtime exit code"
    res = load(tdir / "ids.json")
    alerts = [(a["rule"], a["side"]) for a in res["alerts"]]
    mon = [w["monitor"] for w in st["workers"]]
    drops = sum(w["drops"].get("tcp_terminated", 0) for w in st["workers"])
    print(f"    alerts {alerts}; monitor flows {sum(m['flows'] for m in mon)}, RSTs {sum(m['rsts'] for m in mon)}, "
          f"later packets dropped {drops}; ids scanned {res['bytes_scanned']} bytes")
    assert alerts.count(("split-sig", "client")) == 1, "the split signature is found exactly once"
    assert alerts.count(("kill-sig", "client")) == 1
    assert sum(m["rsts"] for m in mon) >= 2, "an RST to each end"
    assert res["bytes_scanned"] >= 5_000_000, "the clean download's server stream was scanned"


# stateful-firewall: flows opened from the inside (the client namespace) go
# through; a connection opened from outside is refused.
def test_stateful_firewall(runtime, nf, traffic, testbed, tdir, names):
    rt = monitor_runtime(runtime, "sfw")
    inside_web = traffic.http_server(names.c, 8081, CLIENT_IP)
    time.sleep(0.5)
    inside_url = f"http://{CLIENT_IP}:8081/small.bin"
    assert traffic.curl(inside_url, max_time=5, ns=names.s1).returncode == 0, \
        "inside server unreachable without the firewall"
    fw = nf(rt, "stateful-firewall", "--inside", "10.10.0.1/32", "--json-out", tdir / "sfw.json",
            log=tdir / "sfw.log")
    time.sleep(0.5)
    rt.apply_chain(tdir / "sfw-chain.toml",
                   '[[chain]]\nname = "edge"\nnfs = ["stateful-firewall"]\n[chain.match]\nprotocol = "tcp"\n')
    got = tdir / "sfw.bin"
    assert traffic.fetch("10M.bin", got, max_time=30), "outbound download"
    assert same_file(got, testbed.www / "10M.bin"), "outbound download corrupted"
    assert traffic.curl(inside_url, max_time=3, ns=names.s1).returncode != 0, "an inbound connection got through"
    fw.stop()
    inside_web.cleanup()
    assert rt.stop() == 0, "runtime exit code"
    r = load(tdir / "sfw.json")
    print(f"    stateful-firewall: {r}")
    assert r["allowed_flows"] >= 1 and r["established"] >= 1
    assert r["unsolicited_syn"] >= 1, "the inbound SYN(s) were dropped and counted"


# flow-logger: one JSON line per finished flow; its byte counts equal what
# curl sent and received, and a connection closed by FIN/FIN/ACK ends its
# flow a linger (monitor.linger_ms = 500) after the close, not at the flow
# table's idle timeout (60 s).
def test_flow_logger(runtime, nf, traffic, tdir):
    rt = runtime("log", extra=MONITOR_EXTRA + "\nlinger_ms = 500")
    fl = nf(rt, "flow-logger", "--out", tdir / "flows.jsonl")
    time.sleep(0.5)
    rt.apply_chain(tdir / "log-chain.toml",
                   '[[chain]]\nname = "log"\nnfs = ["flow-logger"]\n[chain.match]\nprotocol = "tcp"\n')
    r = traffic.curl(f"http://{SERVER_IP}/10M.bin", max_time=30,
                     extra=["-w", "%{size_request} %{size_header} %{size_download} %{local_port}\n"])
    (tdir / "curl-sizes.txt").write_text(r.stdout)
    assert r.returncode == 0, f"download: {r.stderr.strip()}"
    port = r.stdout.split()[-1]
    t0 = time.monotonic()
    logged = None
    while time.monotonic() - t0 < 10 and logged is None:
        text = (tdir / "flows.jsonl").read_text() if (tdir / "flows.jsonl").exists() else ""
        if f':{port}"' in text:
            logged = time.monotonic() - t0
        time.sleep(0.05)
    print(f"    FLOW/END logged {logged if logged is None else round(logged, 2)} s after curl returned")
    assert logged is not None and logged < 3, "a closed connection's FLOW/END waited for the idle timeout"
    fl.stop()
    assert rt.stop() == 0, "runtime exit code"
    lines = [json.loads(line) for line in open(tdir / "flows.jsonl") if line.strip()]
    req, hdr, body, port = map(int, r.stdout.split())
    mine = [line for line in lines if line["client"].endswith(f":{port}")]
    print(f"    {len(lines)} flow line(s); curl sent {req} B, received {hdr}+{body} B; logged {mine}")
    assert len(mine) == 1
    f = mine[0]
    assert f["server"] == "10.10.0.11:80" and f["proto"] == "tcp"
    assert f["client_payload"] == req, "request bytes"
    assert f["server_payload"] == hdr + body, "response bytes"
    assert f["end"] == "tcp_closed", f["end"]


# Replays of real Linux TCP through loss, reordering and duplication: every
# reassembled stream equals what the application sent (scripts/tcp-replay.sh,
# its own namespaces ubr-*).
def test_tcp_replay(tdir):
    log = tdir / "tcp-replay.log"
    with open(log, "w") as f:
        rc = subprocess.run(["bash", ROOT / "scripts" / "tcp-replay.sh"], stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "REASSEMBLE": str(BIN / "examples" / "reassemble")},
                            timeout=1200).returncode
    print(log.read_text(errors="replace"), end="")
    assert rc == 0, "tcp-replay"


HOLD = """
import socket, sys, time
s = socket.create_connection(("10.10.0.11", 80), timeout=5)
print("held", flush=True)
time.sleep(float(sys.argv[1]))
"""


# A flow the monitor cannot track (here: monitor.max_flows = 1, taken by a
# held connection) does not pass a fail-closed ids unseen: its packets are
# dropped and counted (`unmonitored`); with `on_unmonitored = "pass"` it
# passes, counted as such. Issue 9 §1.
def test_unmonitored_flows_follow_the_chain_policy(runtime, nf, traffic, procs, tdir, names):
    rt = runtime("unmon", extra="[monitor]\nmax_flows = 1\nstream_buffers = 8\nstream_buffer_kb = 1024")
    ids, chain = ids_chain(rt, nf, tdir, "closed.toml")
    hold = procs.start("hold", netns(names.c, PYTHON, "-c", HOLD, "20"), log=tdir / "hold.log")
    for _ in range(50):
        if "held" in (tdir / "hold.log").read_text(errors="replace"):
            break
        time.sleep(0.1)
    assert hold.alive(), "could not hold a connection open"
    r = traffic.curl(f"http://{SERVER_IP}/small.bin?q=evil-signature", max_time=3, flags="-sS")
    st = rt.stats(tdir / "closed-stats.json")
    dropped = sum(w["drops"].get("unmonitored", 0) for w in st["workers"])
    full = sum(w["monitor"]["full"] for w in st["workers"])
    print(f"    fail-closed, monitor full: curl exit {r.returncode}; packets dropped as unmonitored {dropped}, "
          f"refused at max_flows {full}")
    assert r.returncode != 0, "a flow the monitor could not track passed a fail-closed ids"
    assert dropped > 0 and full > 0, "unmonitored drop not counted"

    chain_pass = chain.replace('nfs = ["ids"]\n', 'nfs = ["ids"]\non_unmonitored = "pass"\n')
    rt.apply_chain(tdir / "open.toml", chain_pass)
    r = traffic.curl(f"http://{SERVER_IP}/small.bin?q=evil-signature", max_time=10, flags="-sS")
    st = rt.stats(tdir / "open-stats.json")
    passed = sum(w["monitor"]["unmonitored_passed"] for w in st["workers"])
    print(f"    on_unmonitored = pass: curl exit {r.returncode}; packets passed unmonitored {passed}")
    assert r.returncode == 0, "on_unmonitored = pass did not pass the flow"
    assert passed > 0, "unmonitored pass not counted"
    assert "passed unmonitored" in rt.ctl("stats"), "stats do not show unmonitored flows passed"
    hold.stop()
    ids.stop()
    assert rt.stop() == 0, "runtime exit code"
    alerts = load(tdir / "ids.json")["alerts"]
    print(f"    ids alerts: {len(alerts)} (the held connection carried no signature)")
    assert alerts == [], "the ids saw a flow it should not have"


# Issue 12 §2: the monitor's segment counters, under real loss on both
# sides of the box (1 % iptables statistic drops): in the switch namespace's
# bridge between the server and the box, so the box sees holes and their
# late fillers, and at the client's input after the box, so the box sees
# retransmissions of bytes it had. (Drops in the sender's own OUTPUT would
# not do: its TCP sees them fail and sends again, in order.) The download
# is intact, the ids scanned all of it, and `uboxctl stats` counts what the
# monitor saw.
def test_monitor_counts_loss_and_reordering(runtime, nf, traffic, testbed, tdir, names):
    rt = monitor_runtime(runtime, "segs")
    # A server-side rule, so that the download's stream is reassembled too;
    # "pass": should more holes open at once than max_holes, the stopped
    # side is counted and the download goes on (under the fail-closed
    # default, "drop", the flow would be reset: see the monitor's unit test).
    ids, _ = ids_chain(rt, nf, tdir, "chain.toml", more_rules='alert srv server "never-in-the-file-q8z"\n',
                       chain_keys='on_unmonitored = "pass"\n')
    drop = ["-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"]
    sw = f"{names.prefix}-sw"
    rules_in = [(sw, ["FORWARD", "-p", "tcp", "--sport", "80"]), (names.c, ["INPUT", "-p", "tcp", "--sport", "80"])]
    bridged = subprocess.run(netns(sw, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"),
                             stdout=subprocess.PIPE, text=True).stdout.strip() or "0"
    subprocess.run(netns(sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"), check=True)
    for ns, rule in rules_in:
        subprocess.run(netns(ns, "iptables", "-A", *rule, *drop), check=True)
    try:
        got = tdir / "got.bin"
        assert traffic.fetch("10M.bin", got, max_time=60), "download under loss"
        for ns, rule in rules_in:
            p = subprocess.run(netns(ns, "iptables", "-L", rule[0], "-v", "-n", "-x"), stdout=subprocess.PIPE, text=True)
            hits = [ln.split()[0] for ln in p.stdout.splitlines() if "statistic" in ln]
            print(f"    {ns} {rule[0]}: {hits[0] if hits else '?'} packets dropped")
    finally:
        for ns, rule in rules_in:
            subprocess.run(netns(ns, "iptables", "-D", *rule, *drop), check=False)
        subprocess.run(netns(sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={bridged}"), check=False)
    assert same_file(got, testbed.www / "10M.bin"), "download corrupted"
    time.sleep(0.3)
    st = rt.stats(tdir / "stats.json")
    text = rt.ctl("stats")
    ids.stop()
    assert rt.stop() == 0, "runtime exit code"
    seg = {k: sum(w["monitor"]["segments"][k] for w in st["workers"]) for k in st["workers"][0]["monitor"]["segments"]}
    line = [ln for ln in text.splitlines() if ln.startswith("tcp monitor segments:")]
    print(f"    {line[0] if line else 'no segments line'}")
    res = load(tdir / "ids.json")
    print(f"    ids scanned {res['bytes_scanned']} bytes")
    assert line, "uboxctl stats has no segments line"
    assert seg["retransmits"] > 0, "no retransmission counted under 1 % loss after the box"
    assert seg["out_of_order"] > 0, "no out-of-order segment counted under 1 % loss before the box"
    assert seg["duplicates"] > 0, "no identical overlap counted (retransmitted bytes the box had)"
    assert seg["conflicts"] == 0 and seg["out_of_window"] == 0, "a clean TCP peer sent conflicting or out-of-window data"
    assert seg["stopped_gap"] + seg["stopped_buffer_full"] + seg["stopped_no_buffer"] == \
        sum(w["monitor"]["reasm_stopped"] for w in st["workers"]), "stops by reason do not add up"
    stops = seg["stopped_gap"] + seg["stopped_buffer_full"] + seg["stopped_no_buffer"]
    if stops == 0:
        assert res["bytes_scanned"] >= got.stat().st_size, "the ids did not scan the whole download"
    else:
        # More holes at once than [monitor] max_holes (16) can happen under
        # random loss: the side stops, counted by reason, and the ids saw
        # the bytes up to there.
        assert seg["holes_full"] > 0 and seg["stopped_gap"] > 0, "a stop without its cause counted"
        assert res["bytes_scanned"] < got.stat().st_size, "stopped, yet the ids saw everything"


# A reader slower than the sender, in a strict (fail-closed) chain, with
# small stream rings: segments that need ring space the reader still holds
# are dropped (monitor_ring_full) and sent again by the server's TCP once
# the reader caught up, so the download arrives intact and is never reset;
# the side never stops. (Before, the side stopped on a full ring and the
# strict chain reset the connection.)
def test_a_slow_reader_slows_a_strict_flow_down_instead_of_resetting_it(runtime, nf, traffic, testbed, tdir):
    rt = runtime("slowrd", extra="[monitor]\nstream_buffers = 8\nstream_buffer_kb = 64")
    c = nf(rt, "counter", "--no-packets", "--events", "DATA_RDY", "--slow-us", 100)
    time.sleep(0.5)
    rt.apply_chain(tdir / "slow.toml", '[[chain]]\nname = "slow"\nnfs = ["counter"]\n'
                   '[chain.policy]\ncounter = "fail-closed"\n[chain.match]\nprotocol = "tcp"\n')
    got = tdir / "got.bin"
    t0 = time.time()
    assert traffic.fetch("10M.bin", got, max_time=120), "download through a slow strict reader"
    took = time.time() - t0
    assert same_file(got, testbed.www / "10M.bin"), "download corrupted"
    st = rt.stats(tdir / "stats.json")
    c.stop()
    assert rt.stop() == 0, "runtime exit code"
    full = sum(w["drops"].get("monitor_ring_full", 0) for w in st["workers"])
    seg = {k: sum(w["monitor"]["segments"][k] for w in st["workers"]) for k in st["workers"][0]["monitor"]["segments"]}
    rsts = sum(w["monitor"]["rsts"] for w in st["workers"])
    print(f"    10 MB in {took:.1f} s through a 64 KiB ring and a 100 us/DATA_RDY reader: "
          f"{full} segments dropped as monitor_ring_full, stops {seg['stopped_buffer_full']}, RSTs {rsts}")
    assert full > 0, "the reader was never behind: the test did not test anything"
    assert seg["stopped_buffer_full"] == 0, "a strict flow's side stopped on a full ring"
    assert rsts == 0, "the box reset a connection"
