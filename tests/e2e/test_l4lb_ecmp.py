"""Scale-out of l4lb behind ECMP (issue 11, section 5): two ubox boxes,
each running its own l4lb with the same VIP and backends, behind a Linux
router that spreads the VIP's flows over both with its own multipath
routing (`ip route add VIP nexthop via A nexthop via B`,
`fib_multipath_hash_policy = 1`: the 5-tuple picks the nexthop).

The topology is this test's own (namespaces `ecm-*`, root-namespace
veths `ecm-*`), apart from scripts/testbed.sh's `ubox-*`:

    ns ecm-c         ns ecm-r (router)        root ns                        ns ecm-sw       ns ecm-s1, ecm-s2
    eth0 10.30.1.1 == rc 10.30.1.254
                      ra 10.30.2.254 == ecm-ac [box A] ecm-as == sw-a --+
                      rb 10.30.3.254 == ecm-bc [box B] ecm-bs == sw-b --+-- br0 --+-- sw-s1 == eth0 10.30.9.11
                      rs 10.30.9.254 ================================= sw-r --+         +-- sw-s2 == eth0 10.30.9.12
                                                                                      (the VIP on lo of both)

    router: 10.30.0.100/32 (the VIP) nexthop via 10.30.2.1 (box A's client port) nexthop via 10.30.3.1 (box B's)

- Client to VIP: client -> router -> box A or B (the router ARPs the
  box's client-port address; the box answers) -> the box's l4lb rewrites
  the destination MAC to the backend's (L2 DSR) and the box wires the
  frame out of its server port -> bridge -> the backend, which holds the
  VIP on lo (arp_ignore=1, arp_announce=2).
- Backend to client (DSR): the backend's default route is the router's
  leg on the server LAN (rs), never a box. The router has rp_filter off:
  answers from the VIP come in on rs while the VIP's route points at the
  boxes.
- No L2 loop: each box joins two segments that nothing else joins (its
  own point-to-point link to the router, which routes, and the server
  LAN). The server LAN sends the boxes nothing: on sw-a and sw-b the
  bridge floods no broadcast, multicast or unknown unicast (`bridge link
  set ... flood off mcast_flood off bcast_flood off`), and nobody there
  addresses a box, so no frame enters one box's server port from the
  other's, and the boxes only ever carry client-to-VIP packets (and the
  router's ARP for their own addresses).
- Both runtimes have one worker, pinned to CPU 1 (`worker_cpus = [1]`):
  two busy-polling workers share that CPU, time-sliced by the kernel.

Checked as a user would, with 20 keep-alive HTTP connections from a
Python client in ecm-c, each asking nginx for who.txt every 100 ms (it
says "one" on ecm-s1, "two" on ecm-s2):

- a box leaves ECMP (its nexthop is removed): the connections that were
  hashed to it go on through the other box, whose l4lb, knowing nothing of
  them, picks the same backend from the same Maglev ring (the backends set
  no server-id option, so ring agreement is what is tested); box A is then
  shut down; not one connection breaks or changes backend (with box B's
  config giving the backends each other's MAC, every moved connection
  breaks: the test fails);
- a backend is removed from both l4lb configs (SIGHUP): exactly the
  connections to it break (reset), the fraction is printed, and the
  others keep going."""
import json
import time

import pytest

from ubox_e2e import BIN, BOX_IP, PYTHON, ROOT, Procs, Runtime, netns, nf_row, run, wait_listening, wire_config

P = "ecm"
NS_C, NS_R, NS_SW, NS_S1, NS_S2 = (f"{P}-{x}" for x in ("c", "r", "sw", "s1", "s2"))
NAMESPACES = (NS_C, NS_R, NS_SW, NS_S1, NS_S2)
VIP = "10.30.0.100"
CLIENT = "10.30.1.1"
# Box name -> (client-side veth, server-side veth, router's peer, switch's peer, box address, router's address)
BOXES = {
    "a": ("ecm-ac", "ecm-as", "ra", "sw-a", "10.30.2.1", "10.30.2.254"),
    "b": ("ecm-bc", "ecm-bs", "rb", "sw-b", "10.30.3.1", "10.30.3.254"),
}
SERVERS = {NS_S1: ("10.30.9.11", "one"), NS_S2: ("10.30.9.12", "two")}
ROUTER_LAN = "10.30.9.254"
CONNECTIONS = 20
INTERVAL_S = 0.1

CHAIN = f"""
[[chain]]
name = "vip"
nfs = ["l4lb"]
[chain.match]
protocol = "tcp"
prefixes = ["{VIP}/32"]
[chain.policy]
l4lb = "fail-closed"
"""

# The client: CONNECTIONS keep-alive connections to the VIP, each sending
# GET /who.txt every INTERVAL_S until the stop file appears; each
# connection's answers (time, body) and how it ended go to a JSON file.
CLIENT_PY = r'''
import json, os, socket, sys, threading, time
vip, n, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
out, ready, stop = sys.argv[4:7]
REQ = ("GET /who.txt HTTP/1.1\r\nHost: %s\r\n\r\n" % vip).encode()
conns = [{"port": None, "answers": [], "error": None} for _ in range(n)]
halt = threading.Event()

def answer(s, buf):
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise EOFError("connection closed by the server")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise ValueError("status: " + lines[0])
    length = [int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:")][0]
    while len(rest) < length:
        d = s.recv(4096)
        if not d:
            raise EOFError("connection closed by the server mid-body")
        rest += d
    return rest[:length].decode().strip(), rest[length:]

def loop(c):
    try:
        s = socket.create_connection((vip, 80), timeout=3)
        c["port"] = s.getsockname()[1]
        buf = b""
        while not halt.is_set():
            t = time.time()
            s.sendall(REQ)
            body, buf = answer(s, buf)
            c["answers"].append([round(t, 3), body])
            time.sleep(max(0.0, t + interval - time.time()))
        s.close()
    except Exception as e:
        c["error"] = [round(time.time(), 3), type(e).__name__ + ": " + str(e)]

threads = [threading.Thread(target=loop, args=(c,)) for c in conns]
for t in threads:
    t.start()
deadline = time.time() + 60
while not os.path.exists(stop) and time.time() < deadline:
    if not os.path.exists(ready) and all(c["answers"] or c["error"] for c in conns):
        open(ready, "w").close()
    time.sleep(0.02)
halt.set()
for t in threads:
    t.join()
json.dump(conns, open(out, "w"))
'''


def sh(*cmd):
    rc, out = run(cmd)
    if rc != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {rc}: {out.strip()}")
    return out


def quiet(ns, ifc):
    """Offloads off, as scripts/testbed.sh does: real checksums on the wire."""
    pre = ["ip", "netns", "exec", ns] if ns else []
    run([*pre, "ethtool", "-K", ifc, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"])


def down():
    for ns in NAMESPACES:
        rc, out = run(["ip", "netns", "pids", ns])
        for pid in out.split() if rc == 0 else []:
            run(["kill", "-9", pid])
        run(["ip", "netns", "del", ns])
    for b in BOXES.values():
        run(["ip", "link", "del", b[0]])
        run(["ip", "link", "del", b[1]])


def up():
    down()
    for ns in NAMESPACES:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(*netns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"))
    # Client.
    sh("ip", "-n", NS_C, "link", "add", "eth0", "type", "veth", "peer", "name", "rc", "netns", NS_R)
    sh("ip", "-n", NS_C, "addr", "add", f"{CLIENT}/24", "dev", "eth0")
    sh("ip", "-n", NS_C, "link", "set", "eth0", "multicast", "off", "up")
    sh("ip", "-n", NS_C, "route", "add", "default", "via", "10.30.1.254")
    quiet(NS_C, "eth0")
    # Router.
    sh(*netns(NS_R, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
              "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
              "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.send_redirects=0",
              "net.ipv4.conf.default.send_redirects=0"))
    sh("ip", "-n", NS_R, "addr", "add", "10.30.1.254/24", "dev", "rc")
    # Server LAN: a bridge.
    sh("ip", "-n", NS_SW, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
    sh("ip", "-n", NS_SW, "link", "set", "br0", "multicast", "off", "up")
    sh("ip", "-n", NS_R, "link", "add", "rs", "type", "veth", "peer", "name", "sw-r", "netns", NS_SW)
    sh("ip", "-n", NS_R, "addr", "add", f"{ROUTER_LAN}/24", "dev", "rs")
    for ns, (addr, _) in SERVERS.items():
        port = "sw-" + ns.split("-")[1]
        sh("ip", "-n", NS_SW, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo")
        sh(*netns(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"))
        sh("ip", "-n", ns, "link", "set", "eth0", "multicast", "off", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", ROUTER_LAN)
        quiet(ns, "eth0")
        sh("ip", "-n", NS_SW, "link", "set", port, "master", "br0", "up")
        quiet(NS_SW, port)
    sh("ip", "-n", NS_SW, "link", "set", "sw-r", "master", "br0", "up")
    quiet(NS_SW, "sw-r")
    # The boxes' links: client side to the router, server side to the bridge.
    for ic, is_, rpeer, swpeer, _, raddr in BOXES.values():
        sh("ip", "link", "add", ic, "type", "veth", "peer", "name", rpeer, "netns", NS_R)
        sh("ip", "-n", NS_R, "addr", "add", f"{raddr}/24", "dev", rpeer)
        sh("ip", "link", "add", is_, "type", "veth", "peer", "name", swpeer, "netns", NS_SW)
        sh("ip", "-n", NS_SW, "link", "set", swpeer, "master", "br0", "up")
        sh("bridge", "-n", NS_SW, "link", "set", "dev", swpeer, "flood", "off", "mcast_flood", "off",
           "bcast_flood", "off")
        quiet(NS_SW, swpeer)
        for ifc in (ic, is_):
            run(["sysctl", "-qw", f"net.ipv6.conf.{ifc}.disable_ipv6=1"])
            sh("ip", "link", "set", ifc, "up")
            quiet("", ifc)
    for ifc in ("rc", "rs", "ra", "rb"):
        sh("ip", "-n", NS_R, "link", "set", ifc, "multicast", "off", "up")
        quiet(NS_R, ifc)
    # The bridge learns where the backends and the router are.
    for ns in SERVERS:
        sh(*netns(ns, "ping", "-c1", "-W2", ROUTER_LAN))


def ecmp_both():
    a, b = BOXES["a"], BOXES["b"]
    sh("ip", "-n", NS_R, "route", "replace", f"{VIP}/32", "nexthop", "via", a[4], "dev", a[2],
       "nexthop", "via", b[4], "dev", b[2])


def ecmp_only(box):
    x = BOXES[box]
    sh("ip", "-n", NS_R, "route", "replace", f"{VIP}/32", "via", x[4], "dev", x[2])


@pytest.fixture(scope="module")
def topo(work):
    """The namespaces and links above, nginx on both backends; torn down
    (every process in the namespaces killed) at the module's end."""
    d = work / "ecmp-topology"
    d.mkdir(exist_ok=True)
    procs = Procs(d)
    try:
        up()
        macs = {}
        for ns, (_, who) in SERVERS.items():
            root = d / f"www-{who}"
            root.mkdir(exist_ok=True)
            root.chmod(0o755)
            (root / "who.txt").write_text(who + "\n")
            conf = d / f"nginx-{who}"
            sh("bash", "-c", '. "$0"/scripts/lib.sh && write_nginx_conf "$1" "$2"', ROOT, conf, root)
            p = procs.start(f"nginx-{who}", netns(ns, "nginx", "-c", conf / "nginx.conf", "-p", conf))
            wait_listening(ns, 80, proc=p)
            macs[who] = json.loads(sh("ip", "-n", ns, "-j", "link", "show", "eth0"))[0]["address"]
        yield macs
    finally:
        procs.cleanup()
        down()


def lb_config(macs, backends=("one", "two")):
    addr = {who: a for a, who in SERVERS.values()}
    text = f'[lb]\nmode = "dsr"\ntable_capacity = 4096\n\n[[vip]]\naddress = "{VIP}"\nport = 80\nprotocol = "tcp"\n'
    for who in backends:
        text += f'\n[[vip.backend]]\naddress = "{addr[who]}"\nmac = "{macs[who]}"\nweight = 1\n'
    return text


class Box:
    """One ubox runtime (one worker on CPU 1, wire mode between its two
    veths, answering ARP for its client-port address) with its own l4lb."""

    def __init__(self, key, macs, procs, tdir):
        ic, is_, _, _, addr, _ = BOXES[key]
        self.key = key
        self.cfg = tdir / f"l4lb-{key}.toml"
        self.cfg.write_text(lb_config(macs))
        self.json = tdir / f"l4lb-{key}.json"
        text = wire_config(f"e2e-ecmp-{key}", ic, is_).replace("workers = 1\n", "workers = 1\nworker_cpus = [1]\n", 1)
        text = text.replace(f'ipv4 = ["{BOX_IP}"]', f'ipv4 = ["{addr}"]', 1)
        assert "worker_cpus = [1]" in text and addr in text
        (tdir / f"runtime-{key}.toml").write_text(text)
        self.rt = procs.add(Runtime(f"e2e-ecmp-{key}", tdir / f"runtime-{key}.toml", tdir / f"runtime-{key}.log"))
        self.lb = procs.start(f"l4lb-{key}", [BIN / "l4lb", "--instance", self.rt.instance, "--config", self.cfg,
                                              "--stats-json", self.json])
        assert self.rt.wait_nf_state("l4lb=running"), self.lb.tail()
        self.rt.apply_chain(tdir / f"chain-{key}.toml", CHAIN, quiet=True)

    def l4lb_modified(self):
        return nf_row(self.rt.stats(), "l4lb")["counts"].get("modified", 0)

    def report(self):
        """Stop l4lb: its counters (JSON written on exit)."""
        assert self.lb.stop() == 0, self.lb.tail()
        return json.loads(self.json.read_text())


def boxes(topo, procs, tdir):
    bx = {k: Box(k, topo, procs, tdir) for k in BOXES}
    ecmp_both()
    # The router reaches both boxes (each answers ARP for its address).
    for k, b in BOXES.items():
        sh(*netns(NS_R, "ping", "-c1", "-W2", b[4]))
    return bx


class Client:
    """The client's 20 connections, in the background in ecm-c."""

    def __init__(self, procs, tdir, name):
        self.script = tdir / "client.py"
        self.script.write_text(CLIENT_PY)
        self.out, self.ready, self.stop_file = (tdir / f"{name}.{x}" for x in ("json", "ready", "stop"))
        self.p = procs.start(name, netns(NS_C, PYTHON, self.script, VIP, CONNECTIONS, INTERVAL_S, self.out,
                                         self.ready, self.stop_file))
        for _ in range(200):
            if self.ready.exists():
                break
            assert self.p.alive(), self.p.tail()
            time.sleep(0.05)
        assert self.ready.exists(), "the client's connections did not all answer within 10 s"

    def finish(self):
        self.stop_file.touch()
        assert self.p.wait(timeout=30) == 0, self.p.tail()
        return json.loads(self.out.read_text())


def summary(conns, t_event):
    """Per connection: its backend(s), answers before and after t_event,
    the longest gap between answers, and its error."""
    rows = []
    for c in conns:
        times = [a[0] for a in c["answers"]]
        gaps = [b - a for a, b in zip(times, times[1:])]
        rows.append({"port": c["port"], "backends": sorted({a[1] for a in c["answers"]}),
                     "before": sum(t < t_event for t in times), "after": sum(t >= t_event for t in times),
                     "max_gap": round(max(gaps, default=0), 3), "error": c["error"]})
    return rows


def test_ecmp_box_leaves(topo, procs, tdir):
    bx = boxes(topo, procs, tdir)
    client = Client(procs, tdir, "client-a")
    time.sleep(1.5)
    # Both boxes carry some of the 20 connections (all on one: 2^-19).
    carried = {k: b.l4lb_modified() for k, b in bx.items()}
    print("packets each box's l4lb forwarded before the change:", carried)
    assert all(carried.values()), carried
    t_event = time.time()
    ecmp_only("b")  # box A leaves
    time.sleep(0.3)
    # ...and, once packets in flight are through, is shut down: its l4lb
    # (fail-closed: a packet still sent to box A would now be dropped),
    # then its runtime. Its l4lb forwarded what the runtime had counted
    # before: nothing came after.
    stats = {"a": bx["a"].rt.stats(save=tdir / "stats-a.json")}
    ra = bx["a"].report()
    assert ra["forwarded"] == nf_row(stats["a"], "l4lb")["counts"]["modified"], "box A got packets after leaving"
    assert bx["a"].rt.stop() == 0, bx["a"].rt.tail()
    time.sleep(2.7)
    conns = client.finish()
    stats["b"] = bx["b"].rt.stats(save=tdir / "stats-b.json")
    rb = bx["b"].report()
    rows = summary(conns, t_event)
    for r in rows:
        print(r)
    moved = rb["vips"][0]["table_misses"]
    broken = [r for r in rows if r["error"] or len(r["backends"]) != 1 or r["after"] < 10]
    print(f"box A's l4lb saw {ra['vips'][0]['syns']} SYNs, box B's {rb['vips'][0]['syns']}; "
          f"{moved} connection(s) moved from A to B; broken: {len(broken)} of {len(rows)}")
    for rep in (ra, rb):
        assert sum(rep["drops"].values()) == 0, rep["drops"]
    # Box B took over the connections box A had: non-SYNs its table did not
    # know, routed by the ring, one each (SYNs resent would make A's more).
    assert ra["vips"][0]["syns"] >= 1 and rb["vips"][0]["syns"] >= 1
    assert 1 <= moved <= ra["vips"][0]["syns"], (ra["vips"][0], rb["vips"][0])
    # No loop, nothing between the boxes: their server ports received nothing.
    for k, st in stats.items():
        rx = {p["name"]: p["rx_packets"] for p in st["ports"]}
        print(f"box {k.upper()} received: {rx}")
        assert rx["server"] == 0 and rx["client"] > 0, rx
    # ...to the same backend: not one connection broke or changed backend.
    assert broken == [], broken
    assert {r["backends"][0] for r in rows} == {"one", "two"}, rows


def test_ecmp_backend_removed(topo, procs, tdir):
    bx = boxes(topo, procs, tdir)
    client = Client(procs, tdir, "client-b")
    time.sleep(1.0)
    t_event = time.time()
    for b in bx.values():  # "two" leaves both configs
        b.cfg.write_text(lb_config(topo, backends=("one",)))
        b.lb.send_signal(1)  # SIGHUP
    time.sleep(2.0)
    conns = client.finish()
    rows = summary(conns, t_event)
    for r in rows:
        print(r)
    on_two = [r for r in rows if r["backends"] == ["two"]]
    on_one = [r for r in rows if r["backends"] == ["one"]]
    broken = [r for r in rows if r["error"]]
    print(f"backend two removed: {len(broken)} of {len(rows)} connections broke "
          f"({100 * len(broken) / len(rows):.0f} %); {len(on_two)} were on it, {len(on_one)} on backend one")
    assert len(on_one) + len(on_two) == CONNECTIONS, rows
    assert on_two and on_one, rows
    # Exactly the connections to the removed backend broke (its traffic now
    # reaches backend one, which knows no such connection and resets it)...
    assert all(r["error"] for r in on_two), on_two
    assert all("Reset" in r["error"][1] or "Broken" in r["error"][1] for r in on_two), on_two
    # ...and the others go on.
    assert all(not r["error"] and r["after"] >= 10 for r in on_one), on_one
    # New connections reach the backend that is left.
    for _ in range(4):
        out = sh(*netns(NS_C, "curl", "-fsS", "--max-time", "5", f"http://{VIP}/who.txt"))
        assert out.strip() == "one", out
    for b in bx.values():
        rep = b.report()
        assert rep["reloads"] == 1 and sum(rep["drops"].values()) == 0, rep
