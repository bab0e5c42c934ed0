"""The live web view (`[web] listen`, issue 12 section 4): the runtime
serves a self-contained page at / that draws /api/view every second. Here
iperf3 runs through a chain with the counter NF while Debian's
headless Chromium loads the page, lets its script poll, takes a
screenshot (kept in the test's directory as web.png) and dumps the DOM:
the NF's row shows its state and an event count between the `uboxctl
stats --json` reads taken around the browser, the chain shows the NF as
its stage, and the rates show the traffic. Once the traffic stops the
view's JSON equals `stats --json`."""
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser

from ubox_e2e import BIN, SERVER_IP, netns, nf_row, one_line, run, wire_config

CHAIN = """[[chain]]
name = "web"
nfs = ["counter"]
[chain.match]
protocol = "tcp"
[chain.policy]
counter = "fail-closed"
"""


def free_port():
    """A local TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url):
    """(status, headers, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


class Dom(HTMLParser):
    """What the page drew: the body's data-* attributes, and per row
    (data-nf, data-port, data-reason) or chain (data-chain) its cells'
    data-field -> data-value (and the NFs its stages show)."""

    KINDS = ("data-nf", "data-port", "data-reason", "data-chain")

    def __init__(self, text):
        super().__init__()
        self.body = {}
        self.rows = {k: {} for k in self.KINDS}
        self.stack = []  # (tag, (kind, name) or None)
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = {k[5:]: v for k, v in a.items() if k.startswith("data-")}
        owner = next(((k, a[k]) for k in self.KINDS if k in a and tag in ("tr", "div")), None)
        if owner:
            self.rows[owner[0]][owner[1]] = {"stages": []}
        if tag not in ("br", "img", "meta", "link", "input"):
            self.stack.append((tag, owner))
        row = next((o for _, o in reversed(self.stack) if o), None)
        if row:
            cells = self.rows[row[0]][row[1]]
            if "data-field" in a:
                cells[a["data-field"]] = a.get("data-value", "")
            if "data-stage-nf" in a:
                cells["stages"].append(a["data-stage-nf"])

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break


def chromium(url, tdir, name):
    """Headless Chromium loads url, runs its script for 4 s of virtual
    time (a few polls), saves a screenshot NAME.png and prints the DOM."""
    exe = shutil.which("chromium")
    assert exe, "chromium not found: scripts/setup.sh installs Debian's chromium"
    shot = tdir / f"{name}.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tdir / 'chromium-profile'}", "--window-size=1280,1100",
           "--virtual-time-budget=4000", f"--screenshot={shot}", "--dump-dom", url]
    with open(tdir / f"{name}-chromium.log", "w") as log:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, timeout=120)
    assert p.returncode == 0, f"chromium exit {p.returncode} (see {name}-chromium.log)"
    (tdir / f"{name}.html").write_text(p.stdout)
    assert shot.exists() and shot.stat().st_size > 10_000, "no screenshot"
    shutil.rmtree(tdir / "chromium-profile", ignore_errors=True)
    return Dom(p.stdout)


# The page, loaded in headless Chromium during iperf3 traffic through the
# counter NF, shows the NF's row with an event count that `uboxctl stats
# --json` brackets, the chain with the NF as its stage, and live rates;
# afterwards /api/view equals stats --json.
def test_web_view(runtime, nf, traffic, procs, names, tdir):
    port = free_port()
    rt = runtime("web", extra=f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    base = f"http://127.0.0.1:{port}"
    c = nf(rt, "counter")
    assert rt.wait_nf_state("counter=running"), "counter did not register"
    rt.apply_chain(tdir / "chain.toml", CHAIN)

    status, headers, page = fetch(base + "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8", (status, headers)
    assert headers["Content-Security-Policy"].startswith("default-src 'none'"), headers
    assert "api/view" in page
    assert fetch(base + "/metrics")[0] == 404, "/metrics is not served without [metrics]"
    req = urllib.request.Request(base + "/api/view", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a POST was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405, e.code

    # Paced traffic that outlasts the browser's visit: iperf3 at 40 Mbit/s
    # for 5 s, client to server.
    traffic.iperf_server(5202)
    ip = procs.start("iperf3-client", netns(names.c, "iperf3", "-c", SERVER_IP, "-p", 5202, "-t", 5, "-b", "40M", "-J"),
                     stdout=tdir / "iperf.json", log=tdir / "iperf3-client.stderr")
    time.sleep(1)
    # A first read, so that the page's reads have one to compute rates from.
    status, _, body = fetch(base + "/api/view")
    assert status == 200, body
    warm = json.loads(body)
    time.sleep(0.6)
    before = rt.stats(tdir / "stats-before.json")
    t = time.monotonic()
    dom = chromium(base + "/", tdir, "web")
    took = time.monotonic() - t
    after = rt.stats(tdir / "stats-after.json")
    still = ip.poll() is None
    print(f"    chromium took {took:.1f} s; traffic still running: {still}")

    assert dom.body.get("status") == "live", f"the page's script did not draw a view: {dom.body}"
    assert dom.body.get("instance") == rt.instance, dom.body
    nf_cells = dom.rows["data-nf"].get("counter")
    assert nf_cells, f"no row for the counter NF: {dom.rows['data-nf']}"
    lo, hi = nf_row(before, "counter")["events_in"], nf_row(after, "counter")["events_in"]
    shown = int(nf_cells["events_in"])
    print(f"    counter row: events in {shown} (stats --json before {lo}, after {hi}), "
          f"events/s {float(nf_cells['events_per_s']):.0f}, queue {nf_cells['queue_depth']}")
    assert lo <= shown <= hi, f"the page's event count {shown} is not between stats --json's {lo} and {hi}"
    assert nf_cells["state"] == "running", nf_cells
    assert dom.rows["data-chain"].get("web", {}).get("stages") == ["counter"], dom.rows["data-chain"]
    # Live: the page read the view more than once, and rates moved.
    window = int(dom.body["window"])
    assert 500 <= window <= 60_000, window
    polls = int(dom.body["connections"]) - warm["http"]["connections"]
    assert polls >= 3, f"the page read the view {polls - 1} time(s)"
    if still:
        assert shown > warm["nfs"][0]["events_in"], "the page shows no events newer than the first read"
        assert float(nf_cells["events_per_s"]) > 0, "no event rate while the traffic ran"
        assert float(dom.rows["data-port"]["client"]["rx_bps"]) > 1e6, "no bit rate on the client port"

    assert ip.wait(60) == 0, "iperf3 through the chain"
    sent = json.loads((tdir / "iperf.json").read_text())["end"]["sum_received"]["bytes"]
    assert sent > 5_000_000, f"iperf3 moved only {sent} bytes"
    # Quiet: the view's JSON equals stats --json (retried while a stray
    # frame, an ARP probe, moves a counter between the reads).
    for _ in range(10):
        st = rt.stats(tdir / "stats.json")
        view = json.loads(fetch(base + "/api/view")[2])
        st2 = rt.stats()
        if st2["ports"] == st["ports"] and nf_row(st2, "counter") == nf_row(st, "counter"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the counters never stood still")
    (tdir / "view.json").write_text(json.dumps(view, indent=1))
    v_nf = next(n for n in view["nfs"] if n["name"] == "counter")
    s_nf = nf_row(st, "counter")
    assert (v_nf["events_in"], v_nf["events_out"], v_nf["queue_depth"], v_nf["state"]) == \
        (s_nf["events_in"], s_nf["events_out"], s_nf["queue_depth"], s_nf["state"]), (v_nf, s_nf)
    assert {p["name"]: p["rx_packets"] for p in view["ports"]} == {p["name"]: p["rx_packets"] for p in st["ports"]}
    assert view["totals"]["dropped"] == sum(w["dropped"] for w in st["workers"])
    assert view["chains"]["chains"][0]["stages"] == [[{"nf": "counter", "policy": "fail-closed"}]]
    assert c.stop() == 0, "counter exit code"
    assert rt.stop() == 0, "runtime exit code"


# A bad web.listen is a one-line config error naming the key.
def test_web_config_errors(names, tdir):
    for listen, want in [("localhost:9418", "is not an IP address and port"), ("127.0.0.1:0", "has port 0")]:
        bad = tdir / "bad.toml"
        bad.write_text(wire_config(names.instance("wbad"), names.ic, names.is_,
                                   extra=f'\n[web]\nlisten = "{listen}"\n'))
        rc, out = run([BIN / "ubox-runtime", "--config", bad, "--check"])
        print(f"    got: {out}")
        assert rc == 2 and one_line(out), "a bad address is not a one-line error"
        assert "key `web.listen`" in out and want in out, out
