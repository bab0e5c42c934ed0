#!/usr/bin/env bash
# scripts/demo.sh — see ubox move real traffic, start to finish.
#
# Sets the machine up if needed, builds, brings the namespace testbed up,
# starts ubox-runtime in wire mode between the client and the servers, then
# sends real traffic through it and shows each capability in turn:
#   1. the wire: ping, a 20 MB download whose checksum is compared, wrk;
#   2. an NF process in a chain (the counter NF);
#   3. the Prometheus metrics endpoint (curl /metrics) and the web view
#      (its URL, and the JSON behind it);
#   4. the TCP monitor with the ids NF catching a signature in a download,
#      and resetting a connection that carries a terminate signature;
#   5. the runtime's counters (uboxctl stats) and its final counters;
#   6. the L7 load balancer: the TCP splicer with the http-lb NF over two
#      nginx servers;
#   7. the L4 load balancer: the l4lb NF (Maglev, L2 direct server return)
#      splitting connections over both servers;
#   8. a zero-downtime NF release: stateful-firewall replaced with
#      --takeover under a running iperf3.
# Every step checks what it shows and the demo stops with "DEMO FAILED"
# when a capability is broken. Tears everything down at the end. Run as
# root; takes under a minute once built.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then echo "demo.sh: run as root (sudo $0)" >&2; exit 1; fi

T0=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { printf '\033[32mok\033[0m: %s\n' "$*"; SUMMARY+=("ok: $*"); }
fail() { printf '\033[31mDEMO FAILED\033[0m: %s\n' "$*" >&2; exit 1; }
SUMMARY=()
WORK=$(mktemp -d /tmp/ubox-demo.XXXXXX)
chmod 755 "$WORK"  # nginx workers (www-data) read the web root below it
BG=()              # NF processes started in the background
METRICS=127.0.0.1:9417 WEB=127.0.0.1:9418
VIP=10.10.0.100
cleanup() {
  local p
  for p in "${BG[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  stop_runtime >/dev/null 2>&1 || true
  undo_dsr_backends >/dev/null 2>&1 || true
  scripts/testbed.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# stop_nf PID: SIGTERM an NF started in the background and wait for it.
stop_nf() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" || true
}

# wait_nf NAME: until `uboxctl nf list` shows NAME running (5 s).
wait_nf() {
  local i
  for i in $(seq 1 50); do
    "$UBOX_BIN/uboxctl" -i ubox nf list 2>/dev/null | grep -Eq "^[0-9]+ +$1 .*running" && return 0
    sleep 0.1
  done
  "$UBOX_BIN/uboxctl" -i ubox nf list || true
  fail "the $1 NF did not register"
}

# metric NAME{LABELS}: the value of one sample on the metrics page.
metric() {
  curl -fsS "http://$METRICS/metrics" | awk -v k="$1" '$1 == k { print $2; found = 1 } END { if (!found) print "missing" }'
}

# fetch URL FILE: download through the box, fail loudly on any error.
fetch() {
  ip netns exec ubox-c curl -fsS --max-time 60 -o "$2" -w '  downloaded %{size_download} bytes at %{speed_download} B/s\n' "$1" \
    || fail "download of $1 failed"
}

same() { [ "$(sha256sum < "$1" | cut -c1-64)" = "$(sha256sum < "$2" | cut -c1-64)" ]; }

step "setup (packages, hugepages)"
bash scripts/setup.sh
step "build (release)"
build_release
step "testbed up"
scripts/testbed.sh up
mkdir -p "$WORK/www"; head -c 20000000 /dev/urandom > "$WORK/www/20M.bin"; echo hello > "$WORK/www/index.html"
# Two 8 MB downloads with a signature in the middle, for the ids.
for f in sig kill; do
  { head -c 4000000 /dev/urandom; printf 'ubox-demo-%s-signature' "$f"; head -c 4000000 /dev/urandom; } > "$WORK/www/$f.bin"
done
start_nginx ubox-s1 "$WORK/www"

step "without the box, the client cannot reach the server"
if ip netns exec ubox-c ping -c1 -W1 10.10.0.11; then fail "the client reaches the server without the box"; fi
ok "no path from the client to the server without the box"

step "ubox-runtime up (examples/wire.toml with [metrics] and [web] listening, deeper stream rings)"
# examples/wire.toml with its commented-out metrics, web and monitor keys on.
sed -e "s|^# listen = \"$METRICS\"|listen = \"$METRICS\"|" -e "s|^# listen = \"$WEB\"|listen = \"$WEB\"|" \
    -e 's|^# stream_buffers = 256 |stream_buffers = 16 |' -e 's|^# stream_buffer_kb = 1024 |stream_buffer_kb = 8192 |' \
    examples/wire.toml > "$WORK/wire.toml"
for k in "listen = \"$METRICS\"" "listen = \"$WEB\"" "stream_buffers = 16" "stream_buffer_kb = 8192"; do
  grep -q "^$k" "$WORK/wire.toml" || fail "examples/wire.toml changed: cannot turn on '$k'"
done
start_runtime "$WORK/wire.toml" "$WORK/runtime.log"
head -3 "$WORK/runtime.log"

step "1. the wire: ping the server through the box, and the box itself"
ip netns exec ubox-c ping -c3 -i0.2 10.10.0.11 || fail "no ping through the box"
ip netns exec ubox-c ping -c3 -i0.2 10.10.0.254 || fail "the box does not answer ping"
ok "ping through the box and to the box"

step "1. the wire: download 20 MB through the box and compare checksums"
fetch http://10.10.0.11/20M.bin "$WORK/got.bin"
same "$WORK/www/20M.bin" "$WORK/got.bin" || fail "checksum mismatch"
ok "20 MB downloaded through the box, checksums match"

step "1. the wire: wrk, 3 seconds of HTTP requests through the box"
ip netns exec ubox-c wrk -t1 -c16 -d3s http://10.10.0.11/index.html | tee "$WORK/wrk.txt"
grep -q "Requests/sec" "$WORK/wrk.txt" && ! grep -q "Socket errors\|Non-2xx" "$WORK/wrk.txt" || fail "wrk saw errors"
ok "wrk: $(awk '/Requests\/sec/ { print $2 }' "$WORK/wrk.txt") requests/s, no errors"

step "2. an NF process in a chain: every TCP packet visits the counter NF"
"$UBOX_BIN/counter" --instance ubox --json-out "$WORK/counter.json" > "$WORK/counter.log" 2>&1 &
COUNTER=$!; BG+=("$COUNTER")
wait_nf counter
cat > "$WORK/chain.toml" <<TOML
[[chain]]
name = "tcp"
nfs = ["counter"]
[chain.match]
protocol = "tcp"
[chain.policy]
counter = "fail-open"
TOML
"$UBOX_BIN/uboxctl" -i ubox chain apply "$WORK/chain.toml"
fetch http://10.10.0.11/20M.bin "$WORK/got.bin"
same "$WORK/www/20M.bin" "$WORK/got.bin" || fail "checksum mismatch through the counter NF"
"$UBOX_BIN/uboxctl" -i ubox nf list

step "3. the metrics endpoint: curl http://$METRICS/metrics ([metrics] listen)"
curl -fsS "http://$METRICS/metrics" > "$WORK/metrics.txt" || fail "no metrics page at http://$METRICS/metrics"
grep -E '^ubox_(port_rx_packets_total|nf_state|nf_events_in_total|flows_active|pool_free)\{' "$WORK/metrics.txt" | head -12
echo "  ($(grep -vc '^#' "$WORK/metrics.txt") samples on the page)"
rx=$(metric 'ubox_port_rx_packets_total{port="server"}')
ev=$(metric 'ubox_nf_events_in_total{nf="counter"}')
[ "$rx" != missing ] && [ "$rx" -gt 14000 ] || fail "server port rx packets on /metrics: $rx (a 20 MB download is > 14000 packets)"
[ "$ev" != missing ] && [ "$ev" -gt 14000 ] || fail "counter NF events on /metrics: $ev"
ok "/metrics: $rx packets in on the server port, $ev events to the counter NF"

step "3. the web view: open http://$WEB/ ([web] listen; ssh -L 9418:$WEB from elsewhere)"
curl -fsS -o "$WORK/web.html" "http://$WEB/" && grep -qi "<html" "$WORK/web.html" || fail "no web view at http://$WEB/"
sleep 0.6  # the page's rates need two reads 0.5 s apart
curl -fsS "http://$WEB/api/view" > /dev/null
sleep 0.6
curl -fsS "http://$WEB/api/view" > "$WORK/view.json" || fail "no /api/view"
python3 - "$WORK/view.json" <<'PY' || fail "the web view's JSON does not show the counter NF"
import json, sys
v = json.load(open(sys.argv[1]))
nfs = {n["name"]: n for n in v["nfs"]}
print("  /api/view: NFs", {k: (n.get("state"), n.get("events_per_s")) for k, n in nfs.items()})
assert nfs["counter"]["state"] == "running", nfs
PY
ok "the web view serves its page and shows the counter NF running"

stop_nf "$COUNTER"
tail -3 "$WORK/counter.log"
pk=$(json_get "$WORK/counter.json" "s['packets']")
[ "$pk" -ge "$ev" ] || fail "the counter NF counted $pk packets, the runtime sent it $ev events"
ok "the counter NF counted $pk packets (>= the $ev events /metrics showed before the last ones)"

step "4. the TCP monitor with the ids NF: signatures in downloads (server bytes)"
cat > "$WORK/ids.rules" <<'RULES'
# demo signatures, in the bytes the server sends
alert demo-sig server "ubox-demo-sig-signature"
terminate demo-kill server "ubox-demo-kill-signature"
RULES
"$UBOX_BIN/ids" --check --rules "$WORK/ids.rules"
"$UBOX_BIN/ids" --instance ubox --rules "$WORK/ids.rules" --json-out "$WORK/ids.json" > "$WORK/ids.log" 2>&1 &
IDS=$!; BG+=("$IDS")
wait_nf ids
cat > "$WORK/ids-chain.toml" <<TOML
[[chain]]
name = "inspect"
nfs = ["ids"]
[chain.match]
protocol = "tcp"
TOML
"$UBOX_BIN/uboxctl" -i ubox chain apply "$WORK/ids-chain.toml"
echo "a clean 20 MB download, then one with an alert signature in its middle:"
fetch http://10.10.0.11/20M.bin "$WORK/got.bin"
same "$WORK/www/20M.bin" "$WORK/got.bin" || fail "the clean download was corrupted through the monitor"
fetch http://10.10.0.11/sig.bin "$WORK/sig.bin"
same "$WORK/www/sig.bin" "$WORK/sig.bin" || fail "the alert download was corrupted through the monitor"
grep "ALERT rule=demo-sig" "$WORK/ids.log" || fail "the ids did not alert on the signature in the download"
echo "a download with a terminate signature: the box resets the connection"
if ip netns exec ubox-c curl -fsS --max-time 20 -o "$WORK/kill.bin" http://10.10.0.11/kill.bin 2> "$WORK/kill.err"; then
  fail "the download with the terminate signature completed"
fi
cat "$WORK/kill.err"
grep -qi reset "$WORK/kill.err" || fail "curl did not see a reset"
"$UBOX_BIN/uboxctl" -i ubox stats | grep -E "tcp monitor" || true
stop_nf "$IDS"
tail -3 "$WORK/ids.log"
python3 - "$WORK/ids.json" <<'PY' || fail "the ids alerts are not what the downloads carried"
import json, sys
r = json.load(open(sys.argv[1]))
alerts = [(a["rule"], a["side"]) for a in r["alerts"]]
print(f"  ids: alerts {alerts}, {r['bytes_scanned']} bytes scanned, {r['terminations']} terminations")
assert alerts.count(("demo-sig", "server")) == 1 and alerts.count(("demo-kill", "server")) == 1, alerts
assert r["bytes_scanned"] >= 28_000_000, "the ids did not scan both full downloads"
PY
ok "the ids caught the signature in a download (once), and the terminate signature reset its connection"

step "5. the runtime's counters (uboxctl stats)"
"$UBOX_BIN/uboxctl" -i ubox stats

step "5. stop the runtime (SIGTERM): final counters"
stop_runtime || fail "ubox-runtime exited with an error"
tail -n +4 "$WORK/runtime.log" | grep -v '^$' | tail -20
ok "the runtime stopped cleanly"

step "6. an L7 load balancer: the TCP splicer and the http-lb NF (examples/splicer.toml)"
mkdir -p "$WORK/www2"; echo "hello from server two" > "$WORK/www2/index.html"; echo "hello from server one" > "$WORK/www/index.html"
echo one > "$WORK/www/who.txt"; echo two > "$WORK/www2/who.txt"
start_nginx ubox-s2 "$WORK/www2"
"$UBOX_BIN/ubox-runtime" --check --config examples/splicer.toml
start_runtime examples/splicer.toml "$WORK/runtime-splicer.log"
"$UBOX_BIN/http-lb" --instance ubox --rules examples/http-lb.toml > "$WORK/http-lb.log" 2>&1 &
LB=$!; BG+=("$LB")
wait_nf http-lb
echo "six requests to the VIP $VIP, round-robin over both servers:"
for i in 1 2 3 4 5 6; do ip netns exec ubox-c curl -fsS "http://$VIP/" || fail "request $i to the VIP"; done | tee "$WORK/l7.txt"
[ "$(grep -c "server one" "$WORK/l7.txt")" -ge 1 ] && [ "$(grep -c "server two" "$WORK/l7.txt")" -ge 1 ] \
  || fail "the splicer did not use both servers"
echo "Host: two.test goes to server two only:"
for i in 1 2; do ip netns exec ubox-c curl -fsS -H 'Host: two.test' "http://$VIP/"; done | tee "$WORK/l7-two.txt"
[ "$(grep -c "server two" "$WORK/l7-two.txt")" = 2 ] || fail "Host: two.test did not go to server two"
ip netns exec ubox-c wrk -t1 -c16 -d3s -H 'Connection: close' "http://$VIP/index.html" | tee "$WORK/wrk-l7.txt"
! grep -q "Socket errors\|Non-2xx" "$WORK/wrk-l7.txt" || fail "wrk through the splicer saw errors"
"$UBOX_BIN/uboxctl" -i ubox stats | grep -E "tcp splicer|http-lb"
stop_nf "$LB"
tail -4 "$WORK/http-lb.log"
stop_runtime || fail "ubox-runtime (splicer) exited with an error"
ok "the splicer balanced over both servers, routed by Host, and served wrk with Connection: close without errors"

# The l4lb backends hold the VIP on lo and answer no ARP for it (DSR).
setup_dsr_backends() {
  local ns
  for ns in ubox-s1 ubox-s2; do
    ip -n "$ns" addr add "$VIP/32" dev lo
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  done
}
undo_dsr_backends() {
  local ns
  for ns in ubox-s1 ubox-s2; do
    ip -n "$ns" addr del "$VIP/32" dev lo 2>/dev/null || true
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0 2>/dev/null || true
  done
}

step "7. an L4 load balancer: the l4lb NF, Maglev and L2 direct server return"
mac() { ip -n "$1" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])'; }
cat > "$WORK/l4lb.toml" <<TOML
[lb]
mode = "dsr"

[[vip]]
address = "$VIP"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "10.10.0.11"
mac = "$(mac ubox-s1)"

[[vip.backend]]
address = "10.10.0.12"
mac = "$(mac ubox-s2)"
TOML
"$UBOX_BIN/l4lb" --check "$WORK/l4lb.toml" || fail "l4lb refuses its config"
setup_dsr_backends
# The wire config, its client port answering ARP and ping for the VIP too.
sed "s|^ipv4 = \[\"10.10.0.254\"\]|ipv4 = [\"10.10.0.254\", \"$VIP\"]|" examples/wire.toml > "$WORK/wire-vip.toml"
grep -q "\"$VIP\"" "$WORK/wire-vip.toml" || fail "examples/wire.toml changed: cannot add the VIP"
start_runtime "$WORK/wire-vip.toml" "$WORK/runtime-l4lb.log"
"$UBOX_BIN/l4lb" --instance ubox --config "$WORK/l4lb.toml" --stats-json "$WORK/l4lb.json" > "$WORK/l4lb.log" 2>&1 &
L4=$!; BG+=("$L4")
wait_nf l4lb
cat > "$WORK/vip-chain.toml" <<TOML
[[chain]]
name = "vip"
nfs = ["l4lb"]
[chain.match]
protocol = "tcp"
prefixes = ["$VIP/32"]
[chain.policy]
l4lb = "fail-closed"
TOML
"$UBOX_BIN/uboxctl" -i ubox chain apply "$WORK/vip-chain.toml"
echo "16 new connections to the VIP $VIP (who.txt says which server answered):"
for i in $(seq 1 16); do ip netns exec ubox-c curl -fsS --max-time 5 "http://$VIP/who.txt" || fail "connection $i to the VIP"; done \
  | tr '\n' ' ' | tee "$WORK/l4.txt"; echo
grep -qw one "$WORK/l4.txt" && grep -qw two "$WORK/l4.txt" || fail "l4lb did not split the connections over both servers"
ip netns exec ubox-c wrk -t1 -c16 -d2s "http://$VIP/index.html" | tee "$WORK/wrk-l4.txt"
! grep -q "Socket errors\|Non-2xx" "$WORK/wrk-l4.txt" || fail "wrk through l4lb saw errors"
stop_nf "$L4"
head -20 "$WORK/l4lb.log" | grep -v "^$" | tail -12
python3 - "$WORK/l4lb.json" <<'PY' || fail "the l4lb counters do not add up"
import json, sys
r = json.load(open(sys.argv[1]))
b = r["backends"]
print("  l4lb backends:", [(x.get("address"), x["packets"]) for x in b], "forwarded", r["forwarded"])
assert all(x["packets"] > 0 for x in b), b
assert sum(x["packets"] for x in b) == r["forwarded"], r
PY
stop_runtime || fail "ubox-runtime (l4lb) exited with an error"
undo_dsr_backends
ok "l4lb split 16 connections over both servers ($(grep -ow one "$WORK/l4.txt" | wc -l) / $(grep -ow two "$WORK/l4.txt" | wc -l)) and served wrk without errors"

step "8. a zero-downtime NF release: stateful-firewall replaced under a running iperf3 upload"
start_runtime examples/wire.toml "$WORK/runtime-release.log"
"$UBOX_BIN/stateful-firewall" --instance ubox --inside 10.10.0.1/32 --json-out "$WORK/fw-old.json" > "$WORK/fw-old.log" 2>&1 &
FW_OLD=$!; BG+=("$FW_OLD")
wait_nf stateful-firewall
cat > "$WORK/fw-chain.toml" <<TOML
[[chain]]
name = "guard"
nfs = ["stateful-firewall"]
[chain.match]
protocol = "tcp"
[chain.policy]
stateful-firewall = "fail-closed"
TOML
"$UBOX_BIN/uboxctl" -i ubox chain apply "$WORK/fw-chain.toml"
ip netns exec ubox-s1 iperf3 -s -1 -p 5299 > "$WORK/iperf3-s.log" 2>&1 &
IPS=$!; BG+=("$IPS")
sleep 0.3
# A 6 s upload through the old version; the new one takes over at 2 s.
ip netns exec ubox-c iperf3 -c 10.10.0.11 -p 5299 -t 6 -b 200M --json > "$WORK/iperf3-release.json" 2>&1 &
IPC=$!
sleep 2
echo "the new version (here the same binary) starts with --takeover:"
"$UBOX_BIN/stateful-firewall" --instance ubox --inside 10.10.0.1/32 --takeover --drain-timeout-ms 20000 \
  --json-out "$WORK/fw-new.json" > "$WORK/fw-new.log" 2>&1 &
FW_NEW=$!; BG+=("$FW_NEW")
sleep 0.5
"$UBOX_BIN/uboxctl" -i ubox nf list
echo "a new connection while the old version drains goes to the new one:"
ip netns exec ubox-c curl -fsS --max-time 5 -o /dev/null -w '  HTTP %{http_code}\n' http://10.10.0.11/index.html \
  || fail "a new connection during the release"
wait "$IPC" || fail "iperf3 broke during the release: $(tail -3 "$WORK/iperf3-release.json")"
python3 - "$WORK/iperf3-release.json" <<'PY' || fail "iperf3 through the release"
import json, sys
r = json.load(open(sys.argv[1]))
assert "error" not in r, r.get("error")
b = r["end"]["sum_received"]["bytes"]
print(f"  iperf3 across the release: {b / 1e6:.1f} MB in one unbroken connection")
assert b > 1_000_000, b
PY
# The old version kept the upload to its end, then was told to exit.
for i in $(seq 1 100); do kill -0 "$FW_OLD" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$FW_OLD" 2>/dev/null; then fail "the old version did not exit after its flows ended"; fi
wait "$FW_OLD" || fail "the old version exited with an error"
grep -h "asked it to exit" "$WORK/fw-old.log" | tail -1
"$UBOX_BIN/uboxctl" -i ubox nf list
ip netns exec ubox-c curl -fsS --max-time 5 -o /dev/null http://10.10.0.11/index.html || fail "traffic after the release"
stop_nf "$FW_NEW"
python3 - "$WORK/fw-old.json" "$WORK/fw-new.json" <<'PY' || fail "the firewall counters after the release"
import json, sys
old, new = (json.load(open(f)) for f in sys.argv[1:])
print(f"  old version: {old['allowed_flows']} flows, {old['passed']} packets; "
      f"new version: {new['allowed_flows']} flows, {new['passed']} packets")
assert old["allowed_flows"] >= 1 and new["allowed_flows"] >= 2, (old, new)
PY
stop_runtime || fail "ubox-runtime (release) exited with an error"
ok "stateful-firewall released under a running iperf3: the upload unbroken, new connections on the new version, the old one exited 0"

step "done in $(( $(date +%s) - T0 )) s; tearing down the testbed"
printf '%s\n' "${SUMMARY[@]}"
