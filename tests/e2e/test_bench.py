"""The benchmark runs from a fresh clone and writes its JSON (one short
round; the figures themselves are not judged here: timings on CI are noise)."""
import json
import os
import subprocess

from ubox_e2e import BIN, ROOT


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


# The event-path bench (every packet through every NF, nothing skipped) and
# the real-traffic bench (wrk through ubox and testpmd on the testbed) run
# and write their JSON with the per-event costs and latencies.
def test_bench_events_and_e2e_smoke(tdir, names):
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
    if (names.c, names.ic, names.is_) != ("ubox-c", "ubx-c", "ubx-s"):
        print("    e2e bench skipped: it drives the default testbed names only")
        return
    e2e_log = tdir / "bench-e2e.log"
    with open(e2e_log, "w") as f:
        rc = subprocess.run([str(a) for a in bench + ["e2e", "--contender", "ubox-afp", "--contender", "testpmd-afp",
                                                      "--workload", "keepalive"]],
                            stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    text = e2e_log.read_text(errors="replace")
    print(text)
    assert rc == 0, "ubox-bench e2e failed"
    r = json.load(open(out / "e2e-wrk-keepalive-rps-ubox-afp-vs-testpmd-afp.json"))
    assert r["ubox"] > 0 and r["peer"] > 0, r
