"""The Prometheus endpoint (`[metrics] listen`, issue 12 section 1): the
runtime serves the text format at /metrics, scraped here with urllib
during and after traffic (ping, and a download through a chain with the
counter NF). Every page parses line by line; during the traffic each
counter `uboxctl stats --json` shows lies between the scrapes taken just
before and just after it, and once the traffic stops the page and the
JSON agree exactly (ports, workers, the NF's events, pools, flows), with
the NF round-trip histogram counting every answer."""
import re
import socket
import time
import urllib.error
import urllib.request

from ubox_e2e import BIN, BOX_IP, SERVER_IP, netns, nf_row, one_line, run, same_file, wire_config

CHAIN = """[[chain]]
name = "web"
nfs = ["counter"]
[chain.match]
protocol = "tcp"
[chain.policy]
counter = "fail-closed"
"""

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
ESCAPE = re.compile(r'\\([\\"n])')


def free_port():
    """A local TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text):
    """{(name, ((label, value), ...)): value} of a page, checking that every
    line is a HELP or TYPE comment or `name{labels} value`, that every
    sample comes after its family's TYPE, and that no series comes twice."""
    assert text.endswith("\n"), "the page ends with a newline"
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# "):
            kind, name, rest = line[2:].split(" ", 2)
            assert kind in ("HELP", "TYPE") and rest, line
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram"), line
                assert name not in types, f"TYPE twice: {line!r}"
                types[name] = rest
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        pairs = []
        pos = 0
        while labels and pos < len(labels):
            lm = LABEL.match(labels, pos)
            assert lm, f"bad labels in {line!r}"
            pairs.append((lm.group(1), ESCAPE.sub(lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), lm.group(2))))
            pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert types.get(name) in ("counter", "gauge") or types.get(family) == "histogram", f"no TYPE for {line!r}"
        assert (types.get(name) == "counter") == name.endswith("_total"), f"_total is for counters: {line!r}"
        key = (name, tuple(pairs))
        assert key not in samples, f"series twice: {line!r}"
        samples[key] = float(value)
    return samples


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200, r.status
        ctype = r.headers["Content-Type"]
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        text = r.read().decode()
    return text, parse(text)


def value(samples, name, **labels):
    for (n, ls), v in samples.items():
        if n == name and dict(ls) == labels:
            return v
    raise AssertionError(f"no sample {name}{labels}")


def from_stats(st):
    """What the page must show for the counters and gauges of `uboxctl
    stats --json` compared here: {(name, labels as a tuple of pairs): value}."""
    e = {}
    for p in st["ports"]:
        for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes"):
            e[(f"ubox_port_{k}_total", (("port", p["name"]),))] = p[k]
        e[("ubox_port_pmd_rx_packets_total", (("port", p["name"]),))] = p["pmd"]["ipackets"]
    for w in st["workers"]:
        wl = (("worker", str(w["id"])),)
        e[("ubox_worker_rx_packets_total", wl)] = w["rx_packets"]
        e[("ubox_worker_forwarded_packets_total", wl)] = w["forwarded"]
        e[("ubox_worker_replies_total", wl)] = w["replies"]
        e[("ubox_worker_dropped_packets_total", wl)] = w["dropped"]
        e[("ubox_worker_events_pushed_total", wl)] = w["events_pushed"]
        e[("ubox_worker_nf_answers_total", wl)] = w["nf_answers"]
        e[("ubox_nf_event_rtt_seconds_count", wl)] = sum(w["nf_rtt_histogram"]["counts"])
        e[("ubox_flows_started_total", wl)] = w["flows"]["started"]
        e[("ubox_flows_active", wl)] = w["flows"]["active"]
        for reason, n in w["drops"].items():
            e[("ubox_worker_drops_total", wl + (("reason", reason),))] = n
    for n in st["nfs"]:
        nl = (("nf", n["name"]),)
        e[("ubox_nf_events_in_total", nl)] = n["events_in"]
        e[("ubox_nf_events_out_total", nl)] = n["events_out"]
        e[("ubox_nf_queue_depth", nl)] = n["queue_depth"]
        e[("ubox_nf_state", nl + (("state", n["state"]),))] = 1
        for reason, v in n["counts"].items():
            e[("ubox_nf_events_by_reason_total", nl + (("reason", reason),))] = v
    pools = st["pools"]
    for pool in ("mbufs", "event_slots"):
        e[("ubox_pool_capacity", (("pool", pool),))] = pools[f"{pool}_total"]
        e[("ubox_pool_free", (("pool", pool),))] = pools[f"{pool}_free"]
    return e


def check_histograms(samples):
    """Each worker's round-trip histogram: cumulative buckets with rising
    bounds, the +Inf bucket equal to the count. Returns the total count."""
    total = 0
    workers = {dict(ls)["worker"] for (n, ls) in samples if n == "ubox_nf_event_rtt_seconds_count"}
    assert workers, "no ubox_nf_event_rtt_seconds histogram"
    for w in workers:
        buckets = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
                          if n == "ubox_nf_event_rtt_seconds_bucket" and dict(ls)["worker"] == w))
        assert len(buckets) >= 2 and buckets[-1][0] == float("inf"), buckets
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), f"worker {w}: buckets not cumulative: {buckets}"
        count = value(samples, "ubox_nf_event_rtt_seconds_count", worker=w)
        assert counts[-1] == count, f"worker {w}: +Inf bucket {counts[-1]} != count {count}"
        total += count
    return total


# A runtime with [metrics] listen serves /metrics while a download runs
# through a chain with the counter NF: during the traffic the JSON's
# counters lie between the scrapes around it; after it, scrape and JSON are
# equal, and the round-trip histogram counts every NF answer.
def test_metrics_match_stats(runtime, nf, traffic, testbed, procs, names, tdir):
    port = free_port()
    rt = runtime("metrics", extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    base = f"http://127.0.0.1:{port}"
    c = nf(rt, "counter", "--json-out", tdir / "counter.json")
    assert rt.wait_nf_state("counter=running"), "counter did not register"
    text, idle = scrape(base + "/metrics")
    (tdir / "metrics-idle.txt").write_text(text)
    assert value(idle, "ubox_nf_state", nf="counter", state="running") == 1
    try:
        urllib.request.urlopen(base + "/", timeout=10)
        raise AssertionError("/ did not get a 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e.code
    rt.apply_chain(tdir / "chain.toml", CHAIN)

    assert traffic.ping(SERVER_IP, 3), "ping through the box"
    assert traffic.ping(BOX_IP, 2), "ping of the box"
    got = tdir / "10M.bin"
    # Paced, so that the download lasts a few seconds of scrapes.
    dl = procs.start("curl", netns(names.c, "curl", "-fsS", "--limit-rate", "4M", "--max-time", "60", "-o", got,
                                   f"http://{SERVER_IP}/10M.bin"))
    during = 0
    while dl.poll() is None:
        _, before = scrape(base + "/metrics")
        st = rt.stats()
        _, after = scrape(base + "/metrics")
        if dl.poll() is None:
            during += 1
        for key, want in from_stats(st).items():
            if key[0].endswith(("_total", "_count")):
                lo, hi = before.get(key, 0), after.get(key)
                assert hi is not None, f"no sample {key} after uboxctl stats showed it"
                assert lo <= want <= hi, f"{key}: stats --json {want} not between the scrapes {lo} and {hi}"
        check_histograms(after)
        time.sleep(0.2)
    assert dl.wait(90) == 0, "download through the chain"
    assert same_file(got, testbed.www / "10M.bin"), "download corrupted"
    print(f"    {during} scrape pairs while the download ran")
    assert during >= 3, "too few scrapes during the traffic"

    # Quiet now: the page and the JSON agree exactly (retried while a
    # stray frame, an ARP probe, moves a counter between the reads).
    for attempt in range(10):
        text, m1 = scrape(base + "/metrics")
        st = rt.stats(tdir / "stats.json")
        _, m2 = scrape(base + "/metrics")
        want = from_stats(st)
        if all(m1.get(k) == m2.get(k) for k in want):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the counters never stood still for two scrapes")
    (tdir / "metrics.txt").write_text(text)
    print("\n".join(line for line in text.splitlines()
                    if re.match(r"ubox_(port_rx_packets_total|nf_events_(in|out)_total|pool_free|"
                                r"nf_event_rtt_seconds_(count|sum|bucket\{worker=\"0\",le=\"0\.0000(08192|16384)))", line)))
    wrong = {k: (v, m1.get(k)) for k, v in want.items() if m1.get(k) != v}
    assert not wrong, f"page differs from stats --json (json, page): {wrong}"
    answers = sum(w["nf_answers"] for w in st["workers"])
    hist = check_histograms(m1)
    row = nf_row(st, "counter")
    print(f"    counter: events in {row['events_in']} out {row['events_out']}; NF answers {answers}, "
          f"histogram count {hist:.0f}, sum {value(m1, 'ubox_nf_event_rtt_seconds_sum', worker='0'):.6f} s")
    assert row["events_in"] > 10_000_000 // 1500, "the download's packets went through the counter"
    assert hist == answers == row["events_out"], "the histogram counts every NF answer"
    assert all(sum(w["nf_rtt_histogram"]["counts"]) == w["nf_answers"] for w in st["workers"]), \
        "stats --json: the histogram's counts add up to nf_answers"
    rtt_ns = sum(w["nf_rtt_ns_total"] for w in st["workers"])
    rtt_sum = sum(v for (n, _), v in m1.items() if n == "ubox_nf_event_rtt_seconds_sum")
    assert abs(rtt_sum - rtt_ns / 1e9) <= 1e-9 * max(1, rtt_ns), (rtt_sum, rtt_ns)
    assert value(m1, "ubox_worker_replies_total", worker="0") >= 2, "the box answered its pings"
    assert value(m1, "ubox_pool_free", pool="event_slots") == value(m1, "ubox_pool_capacity", pool="event_slots"), \
        "no event slot held once the traffic stopped"
    assert c.stop() == 0, "counter exit code"
    assert rt.stop() == 0, "runtime exit code"


# A bad metrics.listen is a one-line config error naming the key; an address
# in use stops the start-up with one line naming it.
def test_metrics_config_errors(testbed, names, tdir):
    bad = tdir / "bad.toml"
    bad.write_text(wire_config(names.instance("mbad"), names.ic, names.is_,
                               extra='\n[metrics]\nlisten = "localhost:9417"\n'))
    rc, out = run([BIN / "ubox-runtime", "--config", bad, "--check"])
    print(f"    got: {out}")
    assert rc != 0 and one_line(out), "a bad address is not a one-line error"
    assert "key `metrics.listen`" in out and "is not an IP address and port" in out, out
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tdir / "inuse.toml"
        cfg.write_text(wire_config(names.instance("minuse"), names.ic, names.is_,
                                   extra=f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'))
        rc, out = run([BIN / "ubox-runtime", "--config", cfg], timeout=60)
    print(f"    got: {out}")
    lines = [line for line in out.splitlines() if "metrics.listen" in line]
    assert rc != 0, "started with the metrics address in use"
    assert len(lines) == 1 and "cannot listen" in lines[0] and str(port) in lines[0], out
