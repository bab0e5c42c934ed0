"""The TCP splicer and the http-lb NF (issue 10), over the real testbed:
curl and wrk in the client namespace connect to a VIP that only the box
answers for; http-lb picks a backend by Host and path, and the splicer
joins the client to nginx in either server namespace. Checked as a user
would: the right backend's bytes arrive (a 100 MB download hash-equal,
also under 1 % loss), wrk sees no error, a killed backend gets no new
connection while the other takes over, a SYN flood at the VIP leaves
requests working and costs no state, and with the policy NF gone clients
get a 503. Under loss, reordering and duplication (scripts/tools/impair.py
between the box and the servers), captures on both sides, reassembled by
tshark, hold the same bytes both ways."""
import os
import re
import subprocess
import time

from ubox_e2e import BIN, MONITOR_EXTRA, PYTHON, ROOT, load, netns, run, sha256, wait_listening

VIP = "10.10.0.100"
S2_IP = "10.10.0.12"

SPLICER = f"""
[splicer]
vips = ["{VIP}:80"]
policy = "http-lb"
snat = "10.10.0.254"
"""

RULES = """
[[pool]]
name = "one"
backends = ["10.10.0.11:80"]

[[pool]]
name = "two"
backends = ["10.10.0.12:80"]

[[pool]]
name = "both"
backends = ["10.10.0.11:80", "10.10.0.12:80"]
balance = "round-robin"
down_ms = 30000

[[route]]
host = "two.test"
pool = "two"

[[route]]
path_prefix = "/one/"
pool = "one"

[default]
pool = "both"
"""


def second_server(testbed, procs, tdir):
    """nginx on the second server (10.10.0.12:80) with a root of its own:
    who.txt says "two"; the first server's says "one"; both hold big.bin."""
    root = tdir / "www2"
    (root / "one").mkdir(parents=True)
    (root / "who.txt").write_text("two\n")
    (root / "one" / "who.txt").write_text("two\n")
    (testbed.www / "who.txt").write_text("one\n")
    (testbed.www / "one").mkdir(exist_ok=True)
    (testbed.www / "one" / "who.txt").write_text("one\n")
    root.chmod(0o755)
    conf = tdir / "nginx2"
    rc, out = run(["bash", "-c", '. "$0"/scripts/lib.sh && write_nginx_conf "$1" "$2"',
                   BIN.parents[1], conf, root])
    assert rc == 0, out
    p = procs.start("nginx2", netns(testbed.n.s2, "nginx", "-c", conf / "nginx.conf", "-p", conf))
    wait_listening(testbed.n.s2, 80, proc=p)
    return root, p


def start(runtime, nf, tdir, **kw):
    rt = runtime("spl", extra=SPLICER, **kw)
    rules = tdir / "rules.toml"
    rules.write_text(RULES)
    lb = nf(rt, "http-lb", "--rules", rules, "--stats-json", tdir / "lb.json")
    rt.wait_nf_state({"http-lb": "running"})
    return rt, lb


def get(traffic, path, host=None, max_time=10):
    extra = ("-H", f"Host: {host}") if host else ()
    r = traffic.curl(f"http://{VIP}{path}", out="-", max_time=max_time, extra=extra)
    return r.returncode, r.stdout.strip()


def splicer_counts(rt):
    s = rt.stats()
    counts = {}
    for w in s["workers"]:
        for k, v in w["splicer"]["counts"].items():
            counts[k] = counts.get(k, 0) + v
    return counts, sum(w["splicer"]["active"] for w in s["workers"])


def wrk(testbed, seconds, close, tdir):
    args = ["wrk", "-t1", "-c16", f"-d{seconds}", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    r = subprocess.run(netns(testbed.n.c, *args, f"http://{VIP}/who.txt"), capture_output=True, text=True,
                       timeout=seconds + 30)
    (tdir / f"wrk-{'close' if close else 'ka'}.txt").write_text(r.stdout + r.stderr)
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    assert "Socket errors" not in r.stdout, r.stdout
    assert "Non-2xx" not in r.stdout, r.stdout
    done = int(r.stdout.split(" requests in ")[0].split()[-1])
    return done


def test_splicer_routes_balances_and_keeps_bytes(testbed, runtime, nf, traffic, procs, tdir):
    root2, _ = second_server(testbed, procs, tdir)
    big = os.urandom(1 << 20) * 100  # 100 MiB
    (testbed.www / "big.bin").write_bytes(big)
    (root2 / "big.bin").write_bytes(big)
    try:
        rt, _ = start(runtime, nf, tdir)
        # The box answers for the VIP itself (ARP, ping).
        assert traffic.ping(VIP, 2)
        assert get(traffic, "/who.txt", host="two.test") == (0, "two")
        assert get(traffic, "/one/who.txt") == (0, "one")
        seen = [get(traffic, "/who.txt")[1] for _ in range(6)]
        assert sorted(set(seen)) == ["one", "two"], seen
        assert seen.count("one") == 3, "round-robin alternates"
        out = tdir / "big.out"
        r = traffic.curl(f"http://{VIP}/big.bin", out=out, max_time=120)
        assert r.returncode == 0, r.stderr
        assert sha256(out) == sha256(testbed.www / "big.bin")
        out.unlink()
        ka = wrk(testbed, 2, False, tdir)
        cl = wrk(testbed, 2, True, tdir)
        assert ka > 1000 and cl > 500, (ka, cl)
        counts, _ = splicer_counts(rt)
        print("splicer:", counts)
        # Every connection was asked about and spliced, but for those wrk
        # cut when it stopped (at most one per connection of its 16, each
        # of the two runs); none was refused.
        assert counts["cookies_ok"] >= counts["asks"] >= counts["spliced"] >= cl + 9, counts
        assert counts["cookies_ok"] - counts["spliced"] <= 32, counts
        for bad in ("rejected_503", "rejected_rst", "no_policy", "policy_timeouts", "table_full", "cookies_bad"):
            assert counts.get(bad, 0) == 0, (bad, counts)
    finally:
        (testbed.www / "big.bin").unlink(missing_ok=True)


def test_spliced_connections_go_through_the_chain_and_the_monitor(testbed, runtime, nf, traffic, procs, tdir):
    """A fail-closed chain with the ids NF (both streams reassembled) on
    every TCP flow: spliced connections enter the flow table at the ACK
    that completes their SYN cookie, the monitor follows them in the
    client's view (client <-> VIP, the backend's bytes as the splicer
    hands them to the client), ids finds a signature in a response and
    one in a request, and its terminate resets the connection. The
    policy's FLOW_REQ names a connection by the same flow id as ids's
    events about it."""
    root2, _ = second_server(testbed, procs, tdir)
    body = os.urandom(3_000_000) + b"splice-server-signature" + os.urandom(1000)
    (testbed.www / "sig.bin").write_bytes(body)
    (root2 / "sig.bin").write_bytes(body)
    try:
        rt = runtime("splmon", extra=SPLICER + MONITOR_EXTRA)
        rules = tdir / "rules.toml"
        rules.write_text(RULES)
        # Debug lines: one per decision, "flow W:ID "REQUEST LINE" -> BACKEND".
        env = {**os.environ, "UBOX_LOG": "info,http_lb=debug"}
        lb = procs.start("http-lb", [BIN / "http-lb", "--instance", rt.instance, "--rules", rules], env=env)
        sigs = tdir / "ids.rules"
        sigs.write_text('alert resp-sig server "splice-server-signature"\nterminate kill-sig client "kill-me-now"\n')
        ids = nf(rt, "ids", "--rules", sigs, "--json-out", tdir / "ids.json")
        counter = nf(rt, "counter", "--json-out", tdir / "counter.json", "--events", "FLOW/START")
        rt.wait_nf_state({"http-lb": "running", "ids": "running", "counter": "running"})
        # counter takes every packet (PKT events, held until its verdict), ids the streams.
        rt.apply_chain(tdir / "chain.toml",
                       '[[chain]]\nname = "inspect"\nnfs = ["counter", "ids"]\n[chain.match]\nprotocol = "tcp"\n')
        assert get(traffic, "/who.txt", host="two.test") == (0, "two")
        assert get(traffic, "/one/who.txt") == (0, "one")
        out = tdir / "sig.out"
        r = traffic.curl(f"http://{VIP}/sig.bin", out=out, max_time=60)
        assert r.returncode == 0, r.stderr
        assert sha256(out) == sha256(testbed.www / "sig.bin"), "download corrupted through splicer and monitor"
        out.unlink()
        r = traffic.curl(f"http://{VIP}/sig.bin?q=kill-me-now", out=out, max_time=20, flags="-sS")
        size = out.stat().st_size if out.exists() else 0
        print(f"    with the terminate signature: curl exit {r.returncode}, {size} bytes: {r.stderr.strip()}")
        assert r.returncode != 0 and size < len(body), "the terminated download completed"
        assert "reset" in r.stderr.lower(), r.stderr
        time.sleep(0.5)
        st = rt.stats(tdir / "stats.json")
        counts, _ = splicer_counts(rt)
        ids.stop()
        counter.stop()
        lb.stop()
        assert rt.stop() == 0
        res = load(tdir / "ids.json")
        cres = load(tdir / "counter.json")
        pkts = {f["flow_id"]: f for f in cres["flows"]}
        mon = [w["monitor"] for w in st["workers"]]
        flows = sum(w["flows"]["started"] for w in st["workers"])
        print(f"    alerts {res['alerts']}; scanned {res['bytes_scanned']} bytes; monitor flows "
              f"{sum(m['flows'] for m in mon)}, RSTs {sum(m['rsts'] for m in mon)}; table flows {flows}; "
              f"splicer {counts}")
        alerts = {a["rule"]: a for a in res["alerts"]}
        assert sorted(a["rule"] for a in res["alerts"]) == ["kill-sig", "resp-sig"], res["alerts"]
        assert alerts["resp-sig"]["side"] == "server" and alerts["kill-sig"]["side"] == "client"
        assert res["bytes_scanned"] >= len(body), "the response stream was reassembled whole"
        # Every packet of the download, both ways, passed counter's verdict.
        dl = pkts.get(alerts["resp-sig"]["flow_id"], {})
        print(f"    counter: {dl}")
        assert dl.get("bytes", 0) > len(body) and dl.get("packets", 0) > len(body) / 1500, dl
        # A FLOW/START for each spliced connection (client <-> VIP), none for a SYN.
        print(f"    counter events: {cres.get('events')}")
        assert cres["events"].get("FLOW/START") == 4, cres.get("events")
        # One flow-table flow and one monitored connection per request.
        assert flows == 4 and sum(m["flows"] for m in mon) == 4, (flows, mon)
        assert sum(m["rsts"] for m in mon) >= 2, "an RST to each end"
        # The terminated one may have been reset before its backend answered.
        assert counts["asks"] == 4 and counts["spliced"] >= 3, counts
        # The policy knew each connection by the id its stream events had.
        decided = dict(re.findall(r'flow \d+:(\d+) "GET (\S+) HTTP', (tdir / "http-lb.log").read_text()))
        print(f"    http-lb decisions by flow id: {decided}")
        assert decided.get(str(alerts["resp-sig"]["flow_id"])) == "/sig.bin", decided
        assert decided.get(str(alerts["kill-sig"]["flow_id"])) == "/sig.bin?q=kill-me-now", decided
    finally:
        (testbed.www / "sig.bin").unlink(missing_ok=True)


def test_splicer_under_loss(testbed, runtime, nf, traffic, procs, tdir):
    """1 % of the frames between the box and the servers dropped (iptables
    statistic in the switch namespace): the spliced download still arrives
    whole, recovered end to end by client and server."""
    root2, _ = second_server(testbed, procs, tdir)
    data = os.urandom(20_000_000)
    (testbed.www / "loss.bin").write_bytes(data)
    (root2 / "loss.bin").write_bytes(data)
    sw = f"{testbed.n.prefix}-sw"
    drop = ["-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"]
    bridged = subprocess.run(netns(sw, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"),
                             capture_output=True, text=True).stdout.strip() or "0"
    subprocess.run(netns(sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"), check=True)
    subprocess.run(netns(sw, "iptables", "-I", "FORWARD", *drop), check=True)
    try:
        rt, _ = start(runtime, nf, tdir)
        for i in range(2):
            out = tdir / f"loss{i}.out"
            r = traffic.curl(f"http://{VIP}/loss.bin", out=out, max_time=120)
            assert r.returncode == 0, r.stderr
            assert sha256(out) == sha256(testbed.www / "loss.bin")
        p = subprocess.run(netns(sw, "iptables", "-L", "FORWARD", "-v", "-x", "-n"), capture_output=True, text=True)
        hits = [int(ln.split()[0]) for ln in p.stdout.splitlines() if "statistic" in ln]
        assert hits and hits[0] > 0, p.stdout
        counts, _ = splicer_counts(rt)
        assert counts["spliced"] == 2, counts
    finally:
        subprocess.run(netns(sw, "iptables", "-D", "FORWARD", *drop), check=False)
        subprocess.run(netns(sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={bridged}"), check=False)
        (testbed.www / "loss.bin").unlink(missing_ok=True)


def test_a_dead_backend_gets_no_new_connections(testbed, runtime, nf, traffic, procs, tdir):
    _, nginx2 = second_server(testbed, procs, tdir)
    rt, _ = start(runtime, nf, tdir)
    assert sorted({get(traffic, "/who.txt")[1] for _ in range(4)}) == ["one", "two"]
    nginx2.stop()
    # The closed port answers the splicer's SYN with RST: http-lb marks the
    # backend down and the splicer retries on the other one.
    seen = [get(traffic, "/who.txt") for _ in range(10)]
    assert seen == [(0, "one")] * 10, seen
    counts, _ = splicer_counts(rt)
    assert counts.get("backend_resets", 0) == 1, counts
    assert counts.get("retries", 0) == 1, counts


def test_a_syn_flood_leaves_requests_working(testbed, runtime, nf, traffic, procs, tdir):
    second_server(testbed, procs, tdir)
    rt, _ = start(runtime, nf, tdir)
    # The flood runs in the client namespace (a thread of a child process
    # there: setns is per thread, so a helper process keeps it simple).
    flood = subprocess.Popen(netns(testbed.n.c, "python3", "-c", FLOOD_SCRIPT, "6"), stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    try:
        results = [get(traffic, "/who.txt") for _ in range(20)]
    finally:
        out, _ = flood.communicate(timeout=30)
    sent = int(out.strip() or 0)
    assert all(rc == 0 and body in ("one", "two") for rc, body in results), results
    counts, active = splicer_counts(rt)
    print(f"flood: {sent} SYNs sent; splicer: {counts}, {active} flows now")
    assert sent > 5000
    # Cookies, not state: a SYN-ACK per SYN and no flow for any of them.
    assert counts["syn_cookies"] >= sent * 0.9 + 20, (counts, sent)
    assert active <= 20
    assert counts["spliced"] == 20
    # Nor in the flow table: a connection enters it with its cookie's ACK.
    flows = sum(w["flows"]["started"] for w in rt.stats()["workers"])
    assert flows <= 20, flows


def test_no_policy_means_503(testbed, runtime, nf, traffic, procs, tdir):
    second_server(testbed, procs, tdir)
    rt, lb = start(runtime, nf, tdir)
    assert get(traffic, "/who.txt")[0] == 0
    lb.stop()
    rt.wait_nf_state({"http-lb": "dead"})
    r = traffic.curl(f"http://{VIP}/who.txt", out="-", flags="-sS", max_time=10,
                     extra=("-w", "%{http_code}"))
    assert r.stdout.strip().endswith("503"), (r.stdout, r.stderr)
    counts, _ = splicer_counts(rt)
    assert counts.get("no_policy", 0) == 1 and counts.get("rejected_503", 0) == 1, counts
    # --check names each bad rule with its line.
    bad = tdir / "bad.toml"
    bad.write_text('[[pool]]\nname = "p"\nbackends = ["10.10.0.11:80"]\n[[route]]\npool = "nope"\n')
    r = subprocess.run([BIN / "http-lb", "--check", bad], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}:5:" in r.stdout, r.stdout + r.stderr


FLOOD_SCRIPT = r"""
import random, socket, struct, sys, time
def checksum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton("10.10.0.100")
end = time.time() + float(sys.argv[1])
sent = 0
while time.time() < end:
    for _ in range(100):
        src = socket.inet_aton(f"10.10.0.{random.randint(20, 250)}")
        tcp = struct.pack("!HHIIBBHHH", random.randint(1024, 65535), 80, random.getrandbits(32), 0, 5 << 4, 2, 64240, 0, 0)
        tcp = tcp[:16] + struct.pack("!H", checksum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst)
        s.sendto(ip + tcp, ("10.10.0.100", 0))
        sent += 1
    time.sleep(0.002)
print(sent)
"""


def tshark_streams(pcap, a, b):
    """The bytes of the TCP connection between a and b ((addr, port)) in
    pcap, each way, reassembled by tshark (its own TCP code: retransmitted,
    duplicated and reordered segments are put right by it, not by us)."""
    conv = f"{a[0]}:{a[1]},{b[0]}:{b[1]}"
    r = subprocess.run(["tshark", "-n", "-r", pcap, "-q", "-o", "tcp.reassemble_out_of_order:TRUE",
                        "-z", f"follow,tcp,raw,{conv}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    nodes, ab, ba = {}, [], []
    for line in r.stdout.splitlines():
        m = re.match(r"Node (\d): (.+):(\d+)$", line)
        if m:
            nodes[m.group(1)] = (m.group(2), int(m.group(3)))
        elif re.fullmatch(r"\t?[0-9a-f]+", line):
            (ba if line.startswith("\t") else ab).append(bytes.fromhex(line.strip()))
    assert nodes.get("0") == a, (nodes, r.stdout[:500])
    return b"".join(ab), b"".join(ba)


def test_splicer_streams_equal_under_reorder_and_duplication(testbed, runtime, nf, traffic, procs, tdir):
    """impair.py bridges the box's server-side veth into the switch (1 %
    loss, 5 % reordered, 5 % duplicated, both ways), so the backend side of
    every spliced connection sees all three and the client side sees their
    effects. Three files on one keep-alive connection (curl, path /one/ to
    the first server) arrive whole; tcpdump captures the client's and the
    first server's interface; per connection, what the client sent is
    exactly what the server received, and the reverse."""
    n = testbed.n
    sw = f"{n.prefix}-sw"
    files = []
    for i, size in enumerate((3_000_000, 64_000, 1_000_000)):
        data = os.urandom(size)
        (testbed.www / "one").mkdir(exist_ok=True)
        (testbed.www / "one" / f"imp{i}.bin").write_bytes(data)
        files.append(data)
    sh = lambda *a: subprocess.run(netns(sw, *a), check=True)  # noqa: E731
    sh("ip", "link", "add", "imp-a", "type", "veth", "peer", "name", "imp-b")
    try:
        for ifc in ("imp-a", "imp-b"):
            subprocess.run(netns(sw, "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                                 "rx", "off"), capture_output=True)
        sh("ip", "link", "set", "sw-up", "nomaster")
        sh("ip", "link", "set", "imp-b", "master", "br0", "up")
        for ifc in ("imp-a", "sw-up"):
            sh("ip", "link", "set", ifc, "up", "promisc", "on")
        imp = procs.start("impair", netns(sw, PYTHON, ROOT / "scripts" / "tools" / "impair.py", "--a", "sw-up",
                                          "--b", "imp-a", "--loss", "0.01", "--reorder", "0.05", "--dup", "0.05",
                                          "--seed", "10"),
                          log=tdir / "impair.err", stdout=tdir / "impair.out")
        time.sleep(0.5)
        rt, _ = start(runtime, nf, tdir)
        caps, dumps = {}, {}
        for side, ns, flt in (("client", n.c, f"tcp and host {VIP}"), ("server", n.s1, "tcp and host 10.10.0.254")):
            caps[side] = tdir / f"{side}.pcap"
            dumps[side] = procs.start(f"tcpdump-{side}", netns(ns, "tcpdump", "-i", "eth0", "-n", "-s", "0", "-B", "16384", "-U",
                                                 "-w", caps[side], flt), log=tdir / f"tcpdump-{side}.log")
        time.sleep(1.0)
        outs = [tdir / f"imp{i}.out" for i in range(len(files))]
        args = []
        for i, o in enumerate(outs):
            args += [f"http://{VIP}/one/imp{i}.bin", "-o", str(o)]
        r = subprocess.run(netns(n.c, "curl", "-sS", "--max-time", "120", *args), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        for o, data in zip(outs, files):
            assert o.read_bytes() == data, f"{o.name} differs from what the server holds"
        time.sleep(1.0)
        for d in dumps.values():
            d.stop()
        imp.stop()
        report = (tdir / "impair.out").read_text()
        print("    " + report.strip())
        got = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", report)}
        assert got["reordered"] > 0 and got["duplicated"] > 0 and got["dropped"] > 0, report
        counts, _ = splicer_counts(rt)
        assert counts["spliced"] == 1, f"one connection, one splice: {counts}"
    finally:
        subprocess.run(netns(sw, "ip", "link", "del", "imp-a"), capture_output=True)
        subprocess.run(netns(sw, "ip", "link", "set", "sw-up", "master", "br0"), capture_output=True)
        for i in range(len(files)):
            (testbed.www / "one" / f"imp{i}.bin").unlink(missing_ok=True)
    # The connection on each side: the client's to the VIP, the box's
    # (from its SNAT address) to the first server.
    out = subprocess.run(["tshark", "-n", "-r", caps["client"], "-T", "fields", "-e", "tcp.srcport", "-Y",
                          f"ip.dst == {VIP} && tcp.flags.syn == 1"], capture_output=True, text=True).stdout.split()
    assert len(set(out)) == 1, f"one client connection: {out}"
    client = ("10.10.0.1", int(out[0]))
    out = subprocess.run(["tshark", "-n", "-r", caps["server"], "-T", "fields", "-e", "tcp.srcport", "-Y",
                          "ip.src == 10.10.0.254 && tcp.flags.syn == 1"], capture_output=True, text=True).stdout.split()
    assert len(set(out)) == 1, f"one backend connection: {out}"
    snat = ("10.10.0.254", int(out[0]))
    c_sent, c_got = tshark_streams(caps["client"], client, (VIP, 80))
    s_got, s_sent = tshark_streams(caps["server"], snat, ("10.10.0.11", 80))
    print(f"    client side: {len(c_sent)} bytes sent, {len(c_got)} received; server side: {len(s_got)} received, "
          f"{len(s_sent)} sent")
    assert c_sent.count(b"GET /one/imp") == 3, "the three requests on one connection"
    assert s_got == c_sent, "the server received exactly what the client sent"
    assert c_got == s_sent, "the client received exactly what the server sent"
    assert len(c_got) > sum(len(d) for d in files), "the replies hold the files"


def test_splicer_on_two_workers(testbed, runtime, nf, traffic, procs, tdir):
    """Two workers with software steering: each spliced connection lives on
    the worker its client's packets hash to, and the SNAT port chosen for
    it makes the backend's replies hash there too. 40 connections, each
    checked for its backend's answer, spread over both workers, none
    handed to a worker that does not own it after the handshake."""
    second_server(testbed, procs, tdir)
    rt, _ = start(runtime, nf, tdir, workers=2)
    seen = {"one": 0, "two": 0}
    for i in range(40):
        rc, body = get(traffic, "/who.txt")
        assert rc == 0 and body in seen, f"request {i}: rc {rc}, {body!r}"
        seen[body] += 1
    s = rt.stats()
    per = [w["splicer"]["counts"].get("spliced", 0) for w in s["workers"]]
    hand = [w["handoff_out"] for w in s["workers"]]
    print(f"    steering {s['steering']}; backends {seen}; spliced per worker {per}; handoffs {hand}")
    assert seen["one"] == seen["two"] == 20, f"round-robin over both backends: {seen}"
    assert sum(per) == 40 and min(per) > 0, f"both workers splice: {per}"
    assert rt.stop() == 0, "runtime exit code"
