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
