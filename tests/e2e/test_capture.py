"""Capture on demand: `uboxctl capture` writes a pcapng file that tshark
reads, each packet with a comment naming its flow, worker, verdict and the
NF that decided; bounded by --count; --flow takes only matching flows;
unknown names, bad filters and a second capture get clear errors; Ctrl-C
ends a capture with a complete file."""
import re
import signal
import subprocess
import time

from ubox_e2e import BIN, SERVER_IP

COMMENT = re.compile(r"^flow=(\d+) worker=(\d+) verdict=(pass|drop) nf=(\S+) chain=(\S+)(?: reason=(\S+))?$")


def uboxctl(rt, *args, timeout=60):
    return subprocess.run([str(BIN / "uboxctl"), "-i", rt.instance, *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


def start_capture(rt, tdir, name, *args):
    """uboxctl capture ARGS in the background, returned once it is armed."""
    log = open(tdir / f"{name}.log", "w")
    p = subprocess.Popen([str(BIN / "uboxctl"), "-i", rt.instance, "capture", *map(str, args)], stdout=log,
                         stderr=subprocess.STDOUT)
    for _ in range(100):
        if rt.stats()["capture"]["active"] or p.poll() is not None:
            break
        time.sleep(0.05)
    assert p.poll() is None, f"uboxctl capture exited at once: {(tdir / f'{name}.log').read_text()}"
    return p


def tshark(path, *fields):
    """One tuple of the fields per packet of the file, read by tshark."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0, f"tshark cannot read {path}: {p.stderr}"
    return [tuple(line.split("|")) for line in p.stdout.splitlines() if line]


# Chain acl-firewall -> counter: a capture of the chain holds the SYNs the
# firewall dropped (verdict=drop nf=acl-firewall) and the download's packets
# it passed, exactly --count of them, each commented; --nf takes the chain's
# flows too; the counts are in `uboxctl stats`.
def test_capture_chain_verdicts(runtime, nf, traffic, testbed, tdir, names):
    web8080 = traffic.http_server(names.s1, 8080, SERVER_IP)
    rt = runtime("capture")
    rules = tdir / "rules.txt"
    rules.write_text("deny tcp any any 10.10.0.11 8080\ndefault allow\n")
    fw = nf(rt, "acl-firewall", "--rules", rules, "--json-out", tdir / "acl.json")
    time.sleep(0.5)
    ct = nf(rt, "counter", "--json-out", tdir / "counter.json")
    assert rt.wait_nf_state("acl-firewall=running,counter=running") or \
        rt.wait_nf_state("counter=running,acl-firewall=running"), "NFs did not register"
    rt.apply_chain(tdir / "chain.toml", """[[chain]]
name = "guarded"
nfs = ["acl-firewall", "counter"]
[chain.match]
protocol = "tcp"
""")
    out = tdir / "chain.pcapng"
    n = 12
    cap = start_capture(rt, tdir, "capture-chain", "--chain", "guarded", "--count", n, "--out", out,
                        "--timeout", 40)
    # First the denied connection (its SYN and a retransmission or two are
    # dropped), then a download the firewall lets through.
    assert traffic.curl(f"http://{SERVER_IP}:8080/small.bin", max_time=3).returncode != 0, "port 8080 not denied"
    assert traffic.fetch("10M.bin", max_time=60), "allowed download"
    assert cap.wait(30) == 0, (tdir / "capture-chain.log").read_text()
    said = (tdir / "capture-chain.log").read_text()
    print(f"    {said.strip()}")
    assert f"{n} packets written" in said and "ended: count" in said, said
    rows = tshark(out, "frame.comment", "tcp.srcport", "tcp.dstport", "frame.len", "frame.cap_len")
    assert len(rows) == n, f"{len(rows)} packets in the file, --count {n}"
    flows = {}
    for comment, sport, dport, flen, clen in rows:
        m = COMMENT.match(comment)
        assert m, f"comment {comment!r}"
        flow, worker, verdict, nfname, chain, reason = m.groups()
        assert worker == "0" and chain == "guarded", comment
        assert int(clen) == min(int(flen), 1518), (flen, clen)
        ports = {int(sport), int(dport)}
        if verdict == "drop":
            assert nfname == "acl-firewall" and reason == "nf_verdict_drop", comment
            assert int(dport) == 8080, f"a dropped packet not to the denied port: {comment} {sport}->{dport}"
        else:
            assert 80 in ports and reason is None, comment
            assert nfname in ("counter", "acl-firewall"), comment
        flows.setdefault((flow, verdict), 0)
        flows[(flow, verdict)] += 1
    drops = [k for k in flows if k[1] == "drop"]
    passes = [k for k in flows if k[1] == "pass"]
    print(f"    {len(rows)} packets: {flows}")
    assert len(drops) == 1 and flows[drops[0]] >= 1, f"the denied connection's SYNs, one flow: {flows}"
    assert len(passes) == 1 and passes[0][0] != drops[0][0], f"the download, another flow: {flows}"
    by_counter = sum(1 for r in rows if " verdict=pass nf=counter " in r[0])
    assert by_counter >= 1, "the chain's last NF passed none of them"
    st = rt.stats(tdir / "stats.json")["capture"]
    assert st["sessions"] == 1 and not st["active"] and st["captured"] == n, st

    # --nf: the flows whose chain has the NF; a shorter snap length.
    out2 = tdir / "nf.pcapng"
    cap = start_capture(rt, tdir, "capture-nf", "--nf", "counter", "--count", 5, "--snaplen", 64, "-o", out2)
    assert traffic.fetch("small.bin", max_time=30), "download"
    assert cap.wait(30) == 0, (tdir / "capture-nf.log").read_text()
    rows = tshark(out2, "frame.comment", "frame.len", "frame.cap_len")
    assert len(rows) == 5, rows
    assert all(COMMENT.match(c) and " chain=guarded" in c for c, _, _ in rows), rows
    assert all(int(c) <= 64 for _, _, c in rows), rows
    st = rt.stats()["capture"]
    assert st["sessions"] == 2 and st["captured"] == n + 5, st
    assert st["truncated"] == sum(1 for _, f, c in rows if int(f) > int(c)), st
    for p in (fw, ct):
        p.stop()
    web8080.cleanup()
    assert rt.stop() == 0, "runtime exit code"


# --flow: only the flows the filter matches (both directions), here without
# any chain (nf=wire), while other traffic (ping, another port) runs.
def test_capture_flow_filter(runtime, traffic, testbed, tdir, names):
    web8080 = traffic.http_server(names.s1, 8080, SERVER_IP)
    rt = runtime("capflow")
    out = tdir / "flow.pcapng"
    n = 20
    cap = start_capture(rt, tdir, "capture-flow", "--flow", f"tcp,{SERVER_IP}:8080", "--count", n, "--out", out,
                        "--timeout", 40)
    ping = subprocess.Popen(["ip", "netns", "exec", names.c, "ping", "-c", "20", "-i", "0.1", SERVER_IP],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert traffic.fetch("small.bin", max_time=30), "port 80 download"
    for _ in range(3):
        assert traffic.curl(f"http://{SERVER_IP}:8080/small.bin", max_time=10).returncode == 0, "port 8080"
    ping.wait(30)
    rc = cap.wait(40)
    said = (tdir / "capture-flow.log").read_text()
    print(f"    {said.strip()}")
    assert rc == 0, said
    rows = tshark(out, "frame.comment", "ip.proto", "tcp.srcport", "tcp.dstport")
    assert len(rows) == n, f"{len(rows)} packets, --count {n}: {said}"
    dirs = set()
    for comment, proto, sport, dport in rows:
        m = COMMENT.match(comment)
        assert m and m.group(3) == "pass" and m.group(4) == "wire" and m.group(5) == "-", comment
        assert proto == "6" and 8080 in (int(sport), int(dport)), f"a packet the filter does not match: {proto} " \
                                                                  f"{sport}->{dport}"
        dirs.add(int(dport) == 8080)
    assert dirs == {True, False}, "both directions of the flows"
    web8080.cleanup()
    assert rt.stop() == 0, "runtime exit code"


# Errors: an unknown chain or NF names the known ones; a bad filter shows the
# syntax; a second capture while one runs is refused; a capture nobody
# feeds ends at its timeout with an empty (but valid) file.
def test_capture_errors(runtime, nf, testbed, tdir):
    rt = runtime("caperr")
    r = uboxctl(rt, "capture", "--chain", "web", "-o", tdir / "x.pcapng")
    assert r.returncode != 0 and "no chains are applied" in r.stderr, r.stderr
    c = nf(rt, "counter")
    assert rt.wait_nf_state("counter=running"), "counter did not register"
    rt.apply_chain(tdir / "chain.toml", '[[chain]]\nname = "tcp"\nnfs = ["counter"]\n[chain.match]\nprotocol = "tcp"\n')
    r = uboxctl(rt, "capture", "--chain", "web", "-o", tdir / "x.pcapng")
    assert r.returncode != 0 and "no chain named 'web'; the chains in force: tcp" in r.stderr, r.stderr
    r = uboxctl(rt, "capture", "--nf", "ids", "-o", tdir / "x.pcapng")
    assert r.returncode != 0 and "no NF named 'ids'; the NFs known: counter" in r.stderr, r.stderr
    r = uboxctl(rt, "capture", "--flow", "host 10.10.0.1 and port 80", "-o", tdir / "x.pcapng")
    assert r.returncode != 0 and "bad --flow filter term \"host\"" in r.stderr and "ADDR:PORT" in r.stderr, r.stderr
    r = uboxctl(rt, "capture", "-o", tdir / "x.pcapng")
    assert r.returncode != 0 and "--chain" in r.stderr, r.stderr
    out = tdir / "idle.pcapng"
    cap = start_capture(rt, tdir, "capture-idle", "--chain", "tcp", "--count", 5, "-o", out, "--timeout", 2)
    r = uboxctl(rt, "capture", "--flow", "udp", "-o", tdir / "y.pcapng")
    assert r.returncode != 0 and "one capture at a time" in r.stderr, r.stderr
    assert cap.wait(20) == 0
    said = (tdir / "capture-idle.log").read_text()
    assert "0 packets written" in said and "ended: timeout" in said, said
    assert tshark(out, "frame.comment") == [], "no packet in the file"
    assert rt.stats()["capture"]["active"] is False
    # Another capture is fine once that one is over.
    r = uboxctl(rt, "capture", "--flow", "udp", "-o", tdir / "y.pcapng", "--timeout", 0.5)
    assert r.returncode == 0, r.stderr
    c.stop()
    assert rt.stop() == 0, "runtime exit code"


# Ctrl-C ends a capture early with a complete file: the packets captured so
# far, each commented, and the runtime free for the next capture at once.
def test_capture_interrupted(runtime, testbed, tdir, names):
    rt = runtime("capint")
    out = tdir / "int.pcapng"
    cap = start_capture(rt, tdir, "capture-int", "--flow", "icmp", "--count", 100000, "-o", out, "--timeout", 120)
    ping = subprocess.run(["ip", "netns", "exec", names.c, "ping", "-c", "10", "-i", "0.1", SERVER_IP],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert ping.returncode == 0, f"ping through the box: {ping.stdout}"
    replies = int(re.search(r"(\d+) received", ping.stdout).group(1))
    time.sleep(0.3)
    t0 = time.monotonic()
    cap.send_signal(signal.SIGINT)
    rc = cap.wait(10)
    took = time.monotonic() - t0
    said = (tdir / "capture-int.log").read_text()
    print(f"    after Ctrl-C ({took:.2f} s): {said.strip()}")
    assert rc == 0, said
    assert "ended: stopped" in said, said
    rows = tshark(out, "frame.comment", "icmp.type")
    written = int(re.search(r"^(\d+) packets written", said, re.M).group(1))
    # The 10 echo requests and their replies went through the box: all captured.
    assert len(rows) == written == 10 + replies, (len(rows), replies, said)
    assert all(COMMENT.match(c) and t in ("0", "8") for c, t in rows), rows[:3]
    assert rt.stats()["capture"]["active"] is False, "the runtime still holds the capture"
    r = uboxctl(rt, "capture", "--flow", "udp", "-o", tdir / "next.pcapng", "--timeout", 0.5)
    assert r.returncode == 0, r.stderr
    assert rt.stop() == 0, "runtime exit code"
