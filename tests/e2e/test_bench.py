"""The benchmark runs from a fresh clone and writes its JSON (one short
round; the figures themselves are not judged here: timings on CI are noise)."""
import json
import os
import subprocess

from ubox_e2e import BIN, ROOT


def plot(out, charts, want):
    """`ubox-bench plot` on the results in `out`: each chart in `want`
    (file -> strings its SVG must hold: scenario names, series labels) is
    written, and no other."""
    p = subprocess.run([str(BIN / "ubox-bench"), "plot", str(out), "--charts", str(charts)],
                       capture_output=True, text=True, timeout=60)
    print(p.stdout + p.stderr, end="")
    assert p.returncode == 0, "ubox-bench plot failed"
    assert sorted(os.listdir(charts)) == sorted(want), os.listdir(charts)
    for f, strings in want.items():
        svg = (charts / f).read_text()
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>"), f"{f} is not a whole SVG"
        missing = [s for s in strings if s not in svg]
        assert not missing, f"{f} lacks {missing}"
    # A result file that is not one is refused, naming it.
    bad = out / "zz-broken.json"
    bad.write_text('{"scenario": "x"')
    p = subprocess.run([str(BIN / "ubox-bench"), "plot", str(out), "--charts", str(charts)],
                       capture_output=True, text=True, timeout=60)
    bad.unlink()
    assert p.returncode != 0 and "zz-broken.json" in p.stderr, p.stderr


def test_bench_smoke(tdir):
    out = tdir / "bench"
    pcap = ROOT / "bench" / "data" / "http.pcap"
    bench = [BIN / "ubox-bench", "--rounds", 1, "--seconds", 1, "--out", out]
    wire_log = tdir / "bench-wire.log"
    with open(wire_log, "w") as f:
        rc = subprocess.run([str(a) for a in bench + ["wire", "--pcap", pcap]], stdout=f, stderr=subprocess.STDOUT,
                            timeout=600).returncode
    print(wire_log.read_text(errors="replace"), end="")
    assert rc == 0, "ubox-bench wire failed"
    mon_log = tdir / "bench-monitor.log"
    with open(mon_log, "w") as f:
        rc = subprocess.run([str(a) for a in bench + ["monitor", "--pcap", pcap,
                                                      "--rules", ROOT / "bench" / "data" / "ids.rules"]],
                            stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    text = mon_log.read_text(errors="replace")
    if rc != 0:
        print(text)
    assert rc == 0, "ubox-bench monitor failed"
    for line in text.splitlines():
        if "round 1" in line:
            print(f"  {line}")
    files = sorted(os.listdir(out))
    print(f"    wrote {files}")
    for f in ["wire-vs-testpmd-macswap.json", "wire-vs-testpmd-io.json", "monitor-reassembly.json", "monitor-ids.json"]:
        r = json.load(open(out / f))
        assert all(k in r for k in ["scenario", "metric", "ubox", "peer_name", "peer", "ratio"]), r
        assert r["ubox"] > 0 and r["peer"] > 0 and r["ratio"] > 0, r
    # No events or wrk results here: the throughput chart only.
    plot(out, tdir / "plots", {"throughput.svg": ["wire-vs-testpmd-macswap", "wire-gbps-vs-testpmd-macswap",
                                                  "monitor-ids", "dpdk-testpmd macswap", "ubox wire", "Mpps",
                                                  "Gbit/s", "ubox"]})


# The event-path bench (every packet through every NF, nothing skipped) and
# the real-traffic bench (wrk through ubox and testpmd on the testbed) run
# and write their JSON with the per-event costs and latencies.
def test_bench_events_and_e2e_smoke(tdir, names, testbed):
    out = tdir / "bench"
    bench = [BIN / "ubox-bench", "--rounds", 1, "--seconds", 1, "--out", out]
    ev_log = tdir / "bench-events.log"
    with open(ev_log, "w") as f:
        rc = subprocess.run([str(a) for a in bench + ["events"]], stdout=f, stderr=subprocess.STDOUT,
                            timeout=600).returncode
    text = ev_log.read_text(errors="replace")
    print(text if rc else "\n".join(l for l in text.splitlines() if "round 1" in l))
    assert rc == 0, "ubox-bench events failed"
    for s in ["events-1nf", "events-2nf", "events-3nf", "events-parallel3"]:
        r = json.load(open(out / f"{s}.json"))
        assert r["ubox"] > 0 and r["ratio"] > 0, r
        x = r["extra"]
        assert x["skipped_events"] == 0, r
        assert "worker_ns_per_event" in x and x["nf_ns_per_event"] > 0 and x["shared_lines_per_event"] > 0, r
    charts = {"throughput.svg": ["events-1nf", "events-parallel3", "ubox 0 NFs", "ubox"],
              "events.svg": ["sequential", "parallel group", "worker ns/event, sequential", "NF ns/event, sequential"]}
    if (names.c, names.ic, names.is_) != ("ubox-c", "ubx-c", "ubx-s"):
        print("    e2e bench skipped: it drives the default testbed names only")
        plot(out, tdir / "plots", charts)
        return
    e2e_log = tdir / "bench-e2e.log"
    # The bench serves its own object from its own nginx on the testbed's
    # first server (it refuses a port 80 already taken): the session's
    # nginx steps aside meanwhile.
    with open(e2e_log, "w") as f, testbed.without_nginx():
        rc = subprocess.run([str(a) for a in bench + ["e2e", "--contender", "ubox-afp", "--contender", "testpmd-afp",
                                                      "--workload", "keepalive"]],
                            stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    text = e2e_log.read_text(errors="replace")
    print(text)
    assert rc == 0, "ubox-bench e2e failed"
    r = json.load(open(out / "e2e-wrk-keepalive-rps-ubox-afp-vs-testpmd-afp.json"))
    assert r["ubox"] > 0 and r["peer"] > 0, r
    # The p99 result carries both contenders' latency percentiles, rising.
    lat = json.load(open(out / "e2e-wrk-keepalive-p99-ubox-afp-vs-testpmd-afp.json"))["latency"]
    assert lat["case"] == "e2e wrk-keepalive" and lat["ubox_label"] == "ubox-afp", lat
    assert lat["percentiles"] == [50, 75, 90, 99, 100], lat
    for k in ["ubox_ms", "peer_ms"]:
        assert all(0 < a <= b for a, b in zip(lat[k], lat[k][1:])), lat
    charts["throughput.svg"] += ["e2e-wrk-keepalive-rps-ubox-afp-vs-testpmd-afp", "testpmd-afp", "req/s"]
    charts["latency-cdf.svg"] = ["e2e wrk-keepalive", "ubox-afp", "testpmd-afp", "percentile"]
    plot(out, tdir / "plots", charts)
