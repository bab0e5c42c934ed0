"""The l4lb NF (issue 11) doing L2 direct server return over the real
testbed: both servers hold the VIP on lo (and answer no ARP for it), the
box answers ARP and ping for the VIP, and a chain sends the VIP's TCP flows
through l4lb, which rewrites each client packet's destination MAC to the
backend's. Checked as a user would: curl and wrk from the client reach both
nginx servers through the VIP, a keep-alive connection stays on its
backend even when a reload (SIGHUP) drains that backend, new connections
then go to the other one, and the counters add up (l4lb's own, per VIP and
backend, and the runtime's for the NF)."""
import json
import re
import subprocess
import time

from ubox_e2e import BIN, BOX_IP, ROOT, Runtime, netns, nf_row, run, wait_listening, wire_config

VIP = "10.10.0.100"

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


def lb_config(macs, weights=(1, 1)):
    return f"""
[lb]
mode = "dsr"
table_capacity = 4096

[[vip]]
address = "{VIP}"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.10.0.11"
mac = "{macs[0]}"
weight = {weights[0]}
server_id = 11

[[vip.backend]]
address = "10.10.0.12"
mac = "{macs[1]}"
weight = {weights[1]}
server_id = 12
"""


def mac_of(ns):
    rc, out = run(["ip", "-n", ns, "-j", "link", "show", "eth0"])
    assert rc == 0, out
    return json.loads(out)[0]["address"]


class Backends:
    """The VIP on lo of both servers, with arp_ignore=1 / arp_announce=2
    (the VIP stays the box's on the wire); undone at the end, since the
    testbed outlives the test."""

    def __init__(self, testbed):
        self.ns = [testbed.n.s1, testbed.n.s2]

    def __enter__(self):
        for ns in self.ns:
            for cmd in (["ip", "-n", ns, "addr", "add", f"{VIP}/32", "dev", "lo"],
                        netns(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1",
                              "net.ipv4.conf.all.arp_announce=2")):
                rc, out = run(cmd)
                assert rc == 0, out
        return self

    def __exit__(self, *exc):
        for ns in self.ns:
            run(["ip", "-n", ns, "addr", "del", f"{VIP}/32", "dev", "lo"])
            run(netns(ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0"))


def second_nginx(testbed, procs, tdir):
    """nginx on the second server; who.txt says "two" there, "one" on the first."""
    root = tdir / "www2"
    root.mkdir()
    root.chmod(0o755)
    (root / "who.txt").write_text("two\n")
    (testbed.www / "who.txt").write_text("one\n")
    conf = tdir / "nginx2"
    rc, out = run(["bash", "-c", '. "$0"/scripts/lib.sh && write_nginx_conf "$1" "$2"', ROOT, conf, root])
    assert rc == 0, out
    p = procs.start("nginx2", netns(testbed.n.s2, "nginx", "-c", conf / "nginx.conf", "-p", conf))
    wait_listening(testbed.n.s2, 80, proc=p)


def start_runtime(names, procs, tdir):
    """The wire runtime, its client port answering ARP and ping for the VIP too."""
    name = names.instance("l4lb")
    cfg = tdir / "runtime.toml"
    text = wire_config(name, names.ic, names.is_)
    text = text.replace(f'ipv4 = ["{BOX_IP}"]', f'ipv4 = ["{BOX_IP}", "{VIP}"]', 1)
    assert VIP in text
    cfg.write_text(text)
    return procs.add(Runtime(name, cfg, tdir / "runtime.log"))


def who(traffic, n=1, extra=()):
    """GET /who.txt n times over one connection: (bodies, local ports)."""
    urls = [f"http://{VIP}/who.txt"] * n
    cmd = netns(traffic.n.c, "curl", "-fsS", "--max-time", "20", "-w", "port=%{local_port}\\n", *extra, *urls)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bodies = re.findall(r"^(one|two)$", r.stdout, re.M)
    ports = re.findall(r"^port=(\d+)$", r.stdout, re.M)
    assert len(bodies) == n and len(ports) == n, r.stdout
    return bodies, ports


def test_l4lb_dsr_balances_and_keeps_connections(testbed, nf, traffic, procs, tdir, names):
    second_nginx(testbed, procs, tdir)
    macs = [mac_of(testbed.n.s1), mac_of(testbed.n.s2)]
    cfg = tdir / "l4lb.toml"
    cfg.write_text(lb_config(macs))
    rc, out = run([BIN / "l4lb", "--check", cfg])
    assert rc == 0 and out.strip().endswith("ok: 1 VIP, 2 backends, mode dsr, hash maglev"), out
    with Backends(testbed):
        rt = start_runtime(names, procs, tdir)
        lb = nf(rt, "l4lb", "--config", cfg, "--stats-json", tdir / "l4lb.json")
        assert rt.wait_nf_state("l4lb=running"), lb.tail()
        rt.apply_chain(tdir / "chain.toml", CHAIN)
        # The box answers for the VIP (ARP, ping); the servers stay silent.
        assert traffic.ping(VIP, 2)

        # New connections go to both backends.
        seen = [who(traffic)[0][0] for _ in range(16)]
        print("16 connections:", seen)
        assert set(seen) == {"one", "two"}, seen

        # wrk, keep-alive, through the VIP: no error.
        r = subprocess.run(netns(testbed.n.c, "wrk", "-t1", "-c8", "-d2", f"http://{VIP}/who.txt"),
                           capture_output=True, text=True, timeout=60)
        (tdir / "wrk.txt").write_text(r.stdout + r.stderr)
        assert r.returncode == 0, r.stderr
        assert "Socket errors" not in r.stdout and "Non-2xx" not in r.stdout, r.stdout
        done = int(r.stdout.split(" requests in ")[0].split()[-1])
        assert done > 200, r.stdout

        # One keep-alive connection, 12 requests at 3/s; once it has
        # answered, its backend is drained by a reload. It stays there.
        out = tdir / "long.txt"
        urls = [f"http://{VIP}/who.txt"] * 12
        long = procs.start("curl-long", netns(testbed.n.c, "curl", "-fsS", "-N", "--rate", "3/s", "--max-time", "30",
                                              "-w", "port=%{local_port}\\n", *urls), stdout=out)
        for _ in range(100):
            first = re.findall(r"^(one|two)$", out.read_text(), re.M)
            if first:
                break
            time.sleep(0.05)
        assert first, out.read_text()
        held = first[0]
        drained = (0, 1) if held == "one" else (1, 0)
        cfg.write_text(lb_config(macs, drained))
        # Applied live through the runtime (SIGHUP to the NF's process).
        said = rt.ctl("nf", "reload", "l4lb")
        print(f"uboxctl nf reload l4lb: {said.strip()}")
        assert "SIGHUP" in said and f"pid {lb.p.pid}" in said, said
        time.sleep(0.5)
        # New connections avoid the drained backend...
        after = [who(traffic)[0][0] for _ in range(8)]
        print(f"long connection on {held}; after draining it, new connections: {after}")
        assert all(a != held for a in after), after
        # ...while the held connection goes on with it to the end.
        assert long.wait(timeout=40) == 0, long.tail()
        text = out.read_text()
        bodies = re.findall(r"^(one|two)$", text, re.M)
        ports = set(re.findall(r"^port=(\d+)$", text, re.M))
        print(f"long connection: {len(bodies)} answers from {set(bodies)} over local port(s) {ports}")
        assert bodies == [held] * 12 and len(ports) == 1, text

        # An NF that does not catch SIGHUP (it would die of it) is refused.
        cnt = nf(rt, "counter", log=tdir / "counter.log")
        assert rt.wait_nf_state("l4lb=running,counter=running"), cnt.tail()
        p = subprocess.run([str(BIN / "uboxctl"), "-i", rt.instance, "nf", "reload", "counter"],
                           capture_output=True, text=True, timeout=30)
        print(f"uboxctl nf reload counter: exit {p.returncode}: {p.stderr.strip()}")
        assert p.returncode != 0 and "does not catch SIGHUP" in p.stderr, p.stderr
        assert cnt.alive(), "the counter was signalled"
        p = subprocess.run([str(BIN / "uboxctl"), "-i", rt.instance, "nf", "reload", "nosuch"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "no NF named 'nosuch'" in p.stderr, p.stderr

        time.sleep(0.5)  # stragglers (last ACKs) counted on both sides
        stats = rt.stats(save=tdir / "stats.json")
        assert lb.stop() == 0, lb.tail()
    report = json.loads((tdir / "l4lb.json").read_text())
    print(json.dumps({k: report[k] for k in ("packets", "forwarded", "passed", "table_entries", "reloads")}))
    vip = report["vips"][0]
    print("vip:", vip)
    print("backends:", report["backends"])
    # Every client packet to the VIP was forwarded (DSR), nothing dropped;
    # the servers' answers (from the VIP, to the client) passed untouched.
    assert sum(report["drops"].values()) == 0, report["drops"]
    assert report["forwarded"] == vip["packets"] > 0
    assert sum(b["packets"] for b in report["backends"]) == report["forwarded"]
    assert all(b["packets"] > 0 for b in report["backends"]), report["backends"]
    assert report["passed"] > 0 and report["reloads"] == 1
    # 16 + 8 + 1 curl connections and wrk's 8 at least (SYNs resent count too).
    assert vip["syns"] >= 33 and vip["table_hits"] > 0 and vip["table_misses"] == 0, vip
    assert vip["ring"] == vip["syns"], vip
    # The runtime saw l4lb modify each of those packets and drop none.
    row = nf_row(stats, "l4lb")
    print("runtime's counts for l4lb:", row["counts"])
    assert row["counts"].get("modified", 0) == report["forwarded"], row
    assert row["counts"].get("verdict_drop", 0) == 0, row
