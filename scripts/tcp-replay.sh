#!/usr/bin/env bash
# scripts/tcp-replay.sh [--keep] [--runs "clean loss ..."] [--make-fixture]
#
# Replay test of the TCP monitor (ustack/src/tcp) on real Linux TCP, run as
# root. Builds its own testbed (namespaces and veths prefixed ubr, never the
# e2e's ubox-*/ubx-*):
#
#   ubr-c (curl, 10.20.0.1) ubrc0 == ubrc1 [ubr-m: impair.py] ubrs1 == ubrs0 ubr-s (nginx, 10.20.0.2)
#
# The middle namespace runs scripts/tools/impair.py, a user-space bridge
# that drops, holds back (reorders) and duplicates TCP frames. Offloads are
# off on every veth (TSO, GSO, GRO, checksums), so frames are wire-sized
# with real checksums; IPv6 is off. nginx serves random files (1 KB, 64 KB,
# 1 MB, 3 MB) with keepalive off and accepts PUT under /up/ (dav module).
#
# Runs (bridge impairments; "drop" is iptables statistic DROP in the INPUT
# chain of both endpoints):
#   clean    none
#   loss     bridge loss 1% + endpoint drop 1%
#   reorder  bridge reorder 5%
#   dup      bridge duplicate 5%
#   all      bridge loss 1%, reorder 5%, duplicate 5% + endpoint drop 1%
#   heavy    (not run by default) bridge loss 3%, reorder 15% (held for up
#            to 6 frames or 5 ms), duplicate 10% + endpoint drop 2%
# In each, curl in ubr-c downloads every file (one connection per file) and
# uploads two files with PUT, while tcpdump captures in ubr-m.
#
# Capture point: for each direction, where the bridge hands frames to the
# receiving endpoint, i.e. what the bridge sent out of ubrs1
# (client -> server) and out of ubrc1 (server -> client): one tcpdump per
# interface with `-Q out`, merged by (nanosecond) timestamp, which is the
# order the bridge sent them in. This is the hardest stream that is still
# complete, as for a monitor placed between two impaired links: every bridge
# impairment is in it (holes from loss, reordered and duplicated frames, as
# the receiver gets them), and every byte a receiver accepted passed there.
# Endpoint drops happen after the capture point, so the capture also holds
# segments the receiver never got, then their retransmissions. Capturing on
# the bridge's input side instead would show each sender's clean order and
# hide the bridge's impairments from the monitor.
#
# Then `reassemble` (ustack example) replays each capture through the
# monitor and writes every flow's streams; for every flow the client stream
# must be exactly one request (for PUT, its body equal to the uploaded file)
# and the server stream exactly one response whose body equals the served
# file, byte for byte, with no overlap conflicts and no stopped reassembly.
# Flows that curl did not finish (a retry) are only checked to be prefixes.
# One line per run; exit status 1 on any mismatch (the work directory with
# the captures is kept then, and always with --keep).
#
# --make-fixture: instead, make ustack/tests/data/impaired.{pcap,body} for
# ustack/tests/tcp_impaired.rs: one 48 KB GET and one 48 KB PUT through a
# heavily impaired bridge, retried with other seeds until the capture holds
# holes, reordered and duplicated segments in both streams.
#
# Environment: REASSEMBLE=path to a built reassemble binary (otherwise it is
# built with cargo, honouring CARGO_TARGET_DIR); RING=reassembly ring bytes
# per side (default 8 MiB). The ring must span the receiver's window: data
# held beyond a hole can reach a whole window, and Linux's default tcp_rmem
# (up to 6 MB) lets windows grow past 256 KB here, so with the example's
# default ring (256 KB) loss runs stop some streams with buffer_full, which
# is the monitor's documented behaviour, not a reassembly error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

KEEP=0 FIXTURE=0 RUNS="clean loss reorder dup all"
while [ $# -gt 0 ]; do
  case $1 in
    --keep) KEEP=1 ;;
    --runs) RUNS=$2; shift ;;
    --make-fixture) FIXTURE=1 ;;
    *) sed -n '2,3p' "$0" >&2; exit 2 ;;
  esac
  shift
done
for t in ip ethtool iptables tcpdump nginx curl python3; do
  command -v $t >/dev/null || { echo "missing $t (scripts/setup.sh installs it)" >&2; exit 1; }
done

NS_C=ubr-c NS_S=ubr-s NS_M=ubr-m
C_IP=10.20.0.1 S_IP=10.20.0.2
RING=${RING:-8388608}
WORK=$(mktemp -d /tmp/ubr-replay.XXXXXX)
chmod 755 "$WORK"
PIDS=()
FAILED=1

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in $NS_C $NS_S $NS_M; do ip netns del $p 2>/dev/null || true; done
  if [ $FAILED -eq 0 ] && [ $KEEP -eq 0 ]; then rm -rf "$WORK"; else echo "work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the monitor's replay tool -------------------------------------------
if [ -z "${REASSEMBLE:-}" ]; then
  cargo build --quiet --release -p ustack --example reassemble
  REASSEMBLE=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/reassemble
fi
[ -x "$REASSEMBLE" ] || { echo "no reassemble binary at $REASSEMBLE" >&2; exit 1; }

# --- testbed --------------------------------------------------------------
for ns in $NS_C $NS_S $NS_M; do
  ip netns del $ns 2>/dev/null || true
  ip netns add $ns
  ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n $ns link set lo up
done
ip link add ubrc0 netns $NS_C type veth peer name ubrc1 netns $NS_M
ip link add ubrs0 netns $NS_S type veth peer name ubrs1 netns $NS_M
for x in $NS_C:ubrc0 $NS_M:ubrc1 $NS_M:ubrs1 $NS_S:ubrs0; do
  ns=${x%%:*} dev=${x#*:}
  ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off tx off rx off >/dev/null 2>&1 \
    || ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null
  ip -n "$ns" link set "$dev" up
done
ip -n $NS_M link set ubrc1 promisc on
ip -n $NS_M link set ubrs1 promisc on
ip -n $NS_C addr add $C_IP/24 dev ubrc0
ip -n $NS_S addr add $S_IP/24 dev ubrs0

# --- content and server ---------------------------------------------------
WWW=$WORK/www
mkdir -p "$WWW/up" "$WORK/nginx/logs" "$WORK/nginx/body"
if [ $FIXTURE -eq 1 ]; then
  FILES="impaired.body:49152"
  UPLOADS="impaired.body"
else
  FILES="f1k.bin:1024 f64k.bin:65536 f1m.bin:1048576 f3m.bin:3145728"
  UPLOADS="f64k.bin f1m.bin"
fi
for f in $FILES; do head -c "${f#*:}" /dev/urandom > "$WWW/${f%%:*}"; done
cat > "$WORK/nginx/nginx.conf" <<NGX
daemon off;
user root;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  keepalive_timeout 0;
  client_max_body_size 0;
  client_body_temp_path $WORK/nginx/body;
  server {
    listen $S_IP:80;
    root $WWW;
    location /up/ { dav_methods PUT; create_full_put_path on; }
  }
}
NGX
ip netns exec $NS_S nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
for i in $(seq 1 50); do
  ip netns exec $NS_S bash -c "exec 3<>/dev/tcp/$S_IP/80" 2>/dev/null && break
  [ "$i" -lt 50 ] || { echo "nginx did not start" >&2; exit 1; }
  sleep 0.1
done

# --- helpers (Python, stdlib) ---------------------------------------------
cat > "$WORK/replay.py" <<'PY'
"""merge OUT IN...: merge pcaps by timestamp (nanosecond output).
check RUN DIR WWW: check a run's streams, print its summary line."""
import os, re, struct, sys

def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0xA1B2C3D4: scale = 1000
    elif magic == 0xA1B23C4D: scale = 1
    else: raise SystemExit(f"{path}: not a little-endian pcap")
    link = struct.unpack("<I", data[20:24])[0]
    off, recs = 24, []
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        recs.append((sec * 10**9 + frac * scale, data[off + 16:off + 16 + incl], orig))
        off += 16 + incl
    return link, recs

def merge(out, paths):
    recs, link = [], 1
    for i, p in enumerate(paths):
        link, r = read_pcap(p)
        recs += [(ts, i, j, d, o) for j, (ts, d, o) in enumerate(r)]
    recs.sort(key=lambda r: r[:3])
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, link))
        for ts, _, _, d, o in recs:
            f.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(d), o) + d)

def capture_stats(path, by_key=False):
    """Data segments that repeat an earlier one exactly (dup), start behind
    the highest byte seen (late: retransmitted or reordered) or beyond it
    (gaps); totals, or per flow direction ((to_server|to_client, key))."""
    _, recs = read_pcap(path)
    seen, top, dirs = {}, {}, {}
    new = lambda: dict(frames=0, data=0, dup=0, late=0, gaps=0)
    tot = new()
    for _, d, _ in recs:
        if len(d) < 34 or d[12:14] != b"\x08\x00" or d[23] != 6: continue
        ihl = (d[14] & 15) * 4
        t = 14 + ihl
        sport, dport, seq = struct.unpack("!HHI", d[t:t + 8])
        doff = (d[t + 12] >> 4) * 4
        plen = struct.unpack("!H", d[16:18])[0] - ihl - doff
        key = (d[26:30], sport, d[30:34], dport)
        sd = dirs.setdefault(("to_client" if sport == 80 else "to_server", key), new())
        for st in (tot, sd): st["frames"] += 1
        if d[t + 13] & 2:  # SYN: the stream starts after it
            top[key] = (seq + 1) & 0xFFFFFFFF
            continue
        if plen <= 0: continue
        s = seen.setdefault(key, set())
        hi = top.get(key, seq)
        rel = (seq - hi) & 0xFFFFFFFF
        for st in (tot, sd):
            st["data"] += 1
            if (seq, plen) in s: st["dup"] += 1
            if rel >= 1 << 31: st["late"] += 1  # starts before the highest byte seen
            elif rel > 0: st["gaps"] += 1
        s.add((seq, plen))
        end = (seq + plen) & 0xFFFFFFFF
        if ((end - hi) & 0xFFFFFFFF) < 1 << 31: top[key] = end
        elif key not in top: top[key] = end
    return dirs if by_key else tot

def fixture_ok(path):
    """Under 200 KB, and every impairment in the stream that carries the
    file: the GET's response and the PUT's request."""
    st = capture_stats(path, by_key=True)
    ok = os.path.getsize(path) < 200_000
    for d in ("to_server", "to_client"):
        key = max((k for k in st if k[0] == d), key=lambda k: st[k]["data"])
        print(f"fixture {d}: {st[key]}")
        ok = ok and st[key]["dup"] > 0 and st[key]["late"] > 0 and st[key]["gaps"] > 0
    return 0 if ok else 1

def http_message(s, request):
    """(head, body, rest) of the first message of s, 1xx responses skipped;
    None when s holds no complete head."""
    while True:
        end = s.find(b"\r\n\r\n")
        if end < 0: return None
        head = s[:end].decode("latin-1")
        if not request and re.match(r"HTTP/1\.\d 1\d\d ", head):
            s = s[end + 4:]
            continue
        m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
        n = int(m.group(1)) if m else 0
        body = s[end + 4:end + 4 + n]
        return head, body, s[end + 4 + n:], n

LINE = re.compile(r"^\s*(\d+) tcp (\S+) -> (\S+) client=(\d+)B server=(\d+)B (.*?) retx=(\d+)/(\d+) "
                  r"conflicts=(\d+)/(\d+) ooo=(\d+)/(\d+) oow=(\d+)/(\d+) stop=(\S+)/(\S+)")

def check(run, rdir, www):
    flows = []
    for l in open(os.path.join(rdir, "reassemble.txt")):
        m = LINE.match(l)
        if m: flows.append(m)
    manifest = [l.split() for l in open(os.path.join(rdir, "manifest"))]
    files = {}
    for method, path, local, rc in manifest:
        files[path] = open(local, "rb").read()
    done = {path: 0 for _, path, _, _ in manifest}
    problems, partial = [], 0
    tot = dict(c=0, s=0, retx=0, ooo=0, conflicts=0, oow=0)
    for m in flows:
        n = int(m.group(1))
        what = f"flow {n} ({m.group(2)} -> {m.group(3)})"
        cs = open(os.path.join(rdir, "streams", f"{n}.client"), "rb").read()
        ss = open(os.path.join(rdir, "streams", f"{n}.server"), "rb").read()
        tot["c"] += len(cs); tot["s"] += len(ss)
        g = [int(m.group(i)) for i in range(7, 15)]
        tot["retx"] += g[0] + g[1]; tot["conflicts"] += g[2] + g[3]
        tot["ooo"] += g[4] + g[5]; tot["oow"] += g[6] + g[7]
        if g[2] + g[3]:
            problems.append(f"{what}: {g[2]}/{g[3]} overlap conflicts")
        if (m.group(15), m.group(16)) != ("-", "-"):
            problems.append(f"{what}: reassembly stopped {m.group(15)}/{m.group(16)}")
        req = http_message(cs, True)
        if req is None:
            partial += 1
            if cs and not any(m_.startswith(cs[:4]) for m_ in (b"GET ", b"PUT ")):
                problems.append(f"{what}: client stream is no request prefix: {cs[:60]!r}")
            continue
        head, body, rest, n_body = req
        method, path = head.split(" ")[:2]
        if path not in files:
            problems.append(f"{what}: request for unknown {method} {path}")
            continue
        want = files[path]
        complete = True
        if method == "PUT":
            if len(body) < n_body:
                complete = False
                if body != want[:len(body)]:
                    problems.append(f"{what}: PUT {path}: client body differs from the file (prefix)")
            elif body != want:
                problems.append(f"{what}: PUT {path}: client body ({len(body)} B) differs from the file "
                                f"({len(want)} B), first difference at {first_diff(body, want)}")
        if rest:
            problems.append(f"{what}: {len(rest)} bytes after the request")
        resp = http_message(ss, False)
        if resp is None:
            complete = False
            if ss and not b"HTTP/1.1 ".startswith(ss[:9]):
                problems.append(f"{what}: server stream is no response prefix: {ss[:60]!r}")
        else:
            rhead, rbody, rrest, rn = resp
            status = rhead.split(" ")[1]
            if method == "GET":
                if status != "200" or rn != len(want):
                    problems.append(f"{what}: GET {path}: {rhead.splitlines()[0]}, Content-Length {rn}, file {len(want)} B")
                elif len(rbody) < rn:
                    complete = False
                    if rbody != want[:len(rbody)]:
                        problems.append(f"{what}: GET {path}: server body differs from the file "
                                        f"at {first_diff(rbody, want)} (prefix)")
                elif rbody != want:
                    problems.append(f"{what}: GET {path}: server body differs from the file, "
                                    f"first difference at {first_diff(rbody, want)}")
            elif status not in ("201", "204"):
                problems.append(f"{what}: PUT {path}: {rhead.splitlines()[0]}")
            if rrest:
                problems.append(f"{what}: {len(rrest)} bytes after the response")
        if complete: done[path] += 1
        else: partial += 1
    for method, path, local, rc in manifest:
        if rc != "0":
            problems.append(f"curl {method} {path} failed (exit {rc})")
        elif done[path] == 0:
            problems.append(f"{method} {path}: no flow with complete, equal streams")
    cap = capture_stats(os.path.join(rdir, "capture.pcap"))
    extra = open(os.path.join(rdir, "counters")).read().split()
    kv = dict(x.split("=") for x in extra)
    # Everything the bridge sent is in the capture (its other frames: ARP, ping).
    sent = int(kv["bridge_forwarded"]) - int(kv.pop("bridge_passed_other"))
    if cap["frames"] != sent:
        problems.append(f"capture incomplete: {cap['frames']} TCP frames, the bridge sent {sent}")
    extra = [f"{k}={v}" for k, v in kv.items()]
    detail = (f"client {tot['c']} B, server {tot['s']} B; monitor retx={tot['retx']} ooo={tot['ooo']} "
              f"conflicts={tot['conflicts']} oow={tot['oow']}; capture {cap['frames']} frames, "
              f"{cap['data']} data segments, dup={cap['dup']} late={cap['late']} gaps={cap['gaps']}; "
              + " ".join(extra))
    part = f" ({partial} partial, prefixes equal)" if partial else ""
    if problems:
        print(f"replay {run}: {len(flows)} flows, {len(problems)} problems{part}; {detail}")
        for p in problems: print(f"  {p}")
        return 1
    print(f"replay {run}: {len(flows)} flows, all streams equal{part}; {detail}")
    return 0

def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y: return i
    return min(len(a), len(b))

if __name__ == "__main__":
    if sys.argv[1] == "merge": merge(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "check": sys.exit(check(*sys.argv[2:5]))
    elif sys.argv[1] == "fixture-ok": sys.exit(fixture_ok(sys.argv[2]))
PY

# --- one run --------------------------------------------------------------
# run NAME DROP IMPAIR_ARGS...: one capture with the given impairments.
run() {
  local name=$1 drop=$2; shift 2
  local dir=$WORK/$name ns f u rc
  mkdir -p "$dir/dl" "$dir/streams"
  : > "$dir/manifest"

  ip netns exec $NS_M python3 "$ROOT/scripts/tools/impair.py" --a ubrc1 --b ubrs1 "$@" \
    > "$dir/impair.out" 2> "$dir/impair.err" &
  local bridge=$!
  PIDS+=($bridge)
  for ns in $NS_C $NS_S; do
    ip netns exec $ns iptables -F INPUT
    if [ "$drop" != 0 ]; then
      ip netns exec $ns iptables -A INPUT -p tcp -m statistic --mode random --probability "$drop" -j DROP
    fi
  done
  ip netns exec $NS_M tcpdump -i ubrs1 -Q out -s 0 -U -B 16384 --immediate-mode --time-stamp-precision=nano \
    -w "$dir/to-server.pcap" tcp port 80 2> "$dir/tcpdump-s.err" &
  local td_s=$!
  ip netns exec $NS_M tcpdump -i ubrc1 -Q out -s 0 -U -B 16384 --immediate-mode --time-stamp-precision=nano \
    -w "$dir/to-client.pcap" tcp port 80 2> "$dir/tcpdump-c.err" &
  local td_c=$!
  PIDS+=($td_s $td_c)
  for i in $(seq 1 100); do
    grep -q listening "$dir/tcpdump-s.err" && grep -q listening "$dir/tcpdump-c.err" \
      && grep -q "^impair:" "$dir/impair.err" && break
    [ "$i" -lt 100 ] || { echo "replay $name: tcpdump or impair.py did not start" >&2; return 1; }
    sleep 0.05
  done
  # ARP through the bridge, before the captured traffic.
  ip netns exec $NS_C ping -c 1 -W 2 $S_IP >/dev/null || { echo "replay $name: no path" >&2; return 1; }

  local curl=(ip netns exec $NS_C curl -sS --no-keepalive --max-time 60 --retry 3 --retry-all-errors
    --retry-delay 0 -H "Expect:")
  for f in $FILES; do
    f=${f%%:*} rc=0
    "${curl[@]}" -f -o "$dir/dl/$f" "http://$S_IP/$f" || rc=$?
    echo "GET /$f $WWW/$f $rc" >> "$dir/manifest"
    [ $rc -ne 0 ] || cmp -s "$dir/dl/$f" "$WWW/$f" || { echo "replay $name: curl got a different $f" >&2; return 1; }
  done
  for f in $UPLOADS; do
    u=up/$name-$f rc=0
    "${curl[@]}" -f -o /dev/null -T "$WWW/$f" "http://$S_IP/$u" || rc=$?
    echo "PUT /$u $WWW/$f $rc" >> "$dir/manifest"
    [ $rc -ne 0 ] || cmp -s "$WWW/$u" "$WWW/$f" || { echo "replay $name: nginx stored a different $u" >&2; return 1; }
  done

  # Let every connection finish its close (retransmitted FINs included):
  # nothing but TIME-WAIT left on either end.
  for i in $(seq 1 100); do
    [ -z "$(ip netns exec $NS_C ss -Htn state all '( dport = :80 )' | grep -v TIME-WAIT)" ] \
      && [ -z "$(ip netns exec $NS_S ss -Htn state all '( sport = :80 )' | grep -v -e TIME-WAIT -e LISTEN)" ] && break
    sleep 0.1
  done
  # tcpdump exits on SIGINT without reading what is still queued for it:
  # stop it once both capture files have stopped growing.
  local sizes last=
  for i in $(seq 1 50); do
    sleep 0.1
    sizes=$(stat -c %s "$dir/to-server.pcap" "$dir/to-client.pcap" | tr '\n' ' ')
    [ "$sizes" != "$last" ] || break
    last=$sizes
  done
  kill -INT $td_s $td_c
  wait $td_s $td_c || true
  kill -TERM $bridge
  wait $bridge || true
  local p d drops=0
  for ns in $NS_C $NS_S; do
    d=$(ip netns exec $ns iptables -L INPUT -v -x -n | awk '/statistic/ { print $1 }')
    drops=$((drops + ${d:-0}))
    ip netns exec $ns iptables -F INPUT
  done
  for p in s c; do
    d=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel/\1/p' "$dir/tcpdump-$p.err")
    [ "${d:-0}" -eq 0 ] || { echo "replay $name: tcpdump dropped $d packets; capture incomplete" >&2; return 1; }
  done
  grep -q "^impair:" "$dir/impair.out" || { echo "replay $name: impair.py gave no counters" >&2; return 1; }
  echo "$(sed 's/^impair: //; s/ send_errors=0$//; s/\([a-z_]*=\)/bridge_\1/g' \
    "$dir/impair.out") endpoint_drops=$drops" > "$dir/counters"

  python3 "$WORK/replay.py" merge "$dir/capture.pcap" "$dir/to-server.pcap" "$dir/to-client.pcap"
  "$REASSEMBLE" "$dir/capture.pcap" "$dir/streams" --ring "$RING" > "$dir/reassemble.txt" 2> "$dir/reassemble.err" \
    || { echo "replay $name: reassemble failed:" >&2; cat "$dir/reassemble.err" >&2; return 1; }
  python3 "$WORK/replay.py" check "$name" "$dir" "$WWW"
}

START=$(date +%s.%N)
if [ $FIXTURE -eq 1 ]; then
  ok=0
  for seed in 1 2 3 4 5 6 7 8 9 10 11 12; do
    rm -f "$WWW"/up/*
    run fixture$seed 0 --loss 0.04 --reorder 0.12 --dup 0.08 --seed $seed || continue
    # Holes, late (reordered or retransmitted) and duplicated segments in
    # both directions, a file small enough to commit, and streams that
    # reassemble in a 32 KB ring too (the test's small ring, which they wrap).
    d=$WORK/fixture$seed
    "$REASSEMBLE" "$d/capture.pcap" --ring 32768 > "$d/small-ring.txt"
    if python3 "$WORK/replay.py" fixture-ok "$d/capture.pcap" && ! grep ' tcp ' "$d/small-ring.txt" | grep -qv 'stop=-/-'
    then
      mkdir -p ustack/tests/data
      cp "$WORK/fixture$seed/capture.pcap" ustack/tests/data/impaired.pcap
      cp "$WWW/impaired.body" ustack/tests/data/impaired.body
      echo "wrote ustack/tests/data/impaired.pcap ($(stat -c %s ustack/tests/data/impaired.pcap) bytes, seed $seed)" \
        "and ustack/tests/data/impaired.body"
      ok=1
      break
    fi
  done
  [ $ok -eq 1 ] || { echo "no seed gave a capture with every impairment" >&2; exit 1; }
  FAILED=0
  exit 0
fi

status=0
for r in $RUNS; do
  case $r in
    clean) run clean 0 --seed 1 || status=1 ;;
    loss) run loss 0.01 --loss 0.01 --seed 2 || status=1 ;;
    reorder) run reorder 0 --reorder 0.05 --seed 3 || status=1 ;;
    dup) run dup 0 --dup 0.05 --seed 4 || status=1 ;;
    all) run all 0.01 --loss 0.01 --reorder 0.05 --dup 0.05 --seed 5 || status=1 ;;
    heavy) run heavy 0.02 --loss 0.03 --reorder 0.15 --dup 0.10 --hold 6 --delay-ms 5 --seed 6 || status=1 ;;
    *) echo "unknown run $r" >&2; status=1 ;;
  esac
done
awk -v s="$START" -v e="$(date +%s.%N)" -v r="$([ $status -eq 0 ] && echo ok || echo FAILED)" \
  'BEGIN { printf "tcp-replay: %s in %.1f s\n", r, e - s }'
[ $status -ne 0 ] || FAILED=0
exit $status
