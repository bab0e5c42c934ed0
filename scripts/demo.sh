#!/usr/bin/env bash
# scripts/demo.sh — see ubox move real traffic, start to finish.
#
# Sets the machine up if needed, builds, brings the namespace testbed up,
# starts ubox-runtime in wire mode between the client and the servers, then
# sends real traffic through it: ping, a 20 MB download whose checksum is
# compared, and a short wrk run against nginx. Shows the runtime's counters
# (uboxctl stats), runs the counter NF as a separate process in a chain,
# then the box as an L7 load balancer (the TCP splicer with the http-lb
# NF over two nginx servers), and tears everything down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then echo "demo.sh: run as root (sudo $0)" >&2; exit 1; fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
WORK=$(mktemp -d /tmp/ubox-demo.XXXXXX)
chmod 755 "$WORK"  # nginx workers (www-data) read the web root below it
cleanup() {
  stop_runtime >/dev/null 2>&1 || true
  scripts/testbed.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "setup (packages, hugepages)"
bash scripts/setup.sh
step "build (release)"
build_release
step "testbed up"
scripts/testbed.sh up
mkdir -p "$WORK/www"; head -c 20000000 /dev/urandom > "$WORK/www/20M.bin"; echo hello > "$WORK/www/index.html"
start_nginx ubox-s1 "$WORK/www"

step "without the box, the client cannot reach the server"
ip netns exec ubox-c ping -c1 -W1 10.10.0.11 || echo "(as expected: no path)"

step "ubox-runtime up (examples/wire.toml)"
start_runtime examples/wire.toml "$WORK/runtime.log"
head -3 "$WORK/runtime.log"

step "ping the server through the box, and the box itself"
ip netns exec ubox-c ping -c3 -i0.2 10.10.0.11
ip netns exec ubox-c ping -c3 -i0.2 10.10.0.254

step "download 20 MB through the box and compare checksums"
ip netns exec ubox-c curl -fsS -o "$WORK/got.bin" -w 'downloaded %{size_download} bytes at %{speed_download} B/s\n' http://10.10.0.11/20M.bin
sent=$(sha256sum < "$WORK/www/20M.bin" | cut -c1-64); got=$(sha256sum < "$WORK/got.bin" | cut -c1-64)
echo "sent $sent"; echo "got  $got"
[ "$sent" = "$got" ] && echo "checksums match" || { echo "CHECKSUM MISMATCH"; exit 1; }

step "wrk: 5 seconds of HTTP requests through the box"
ip netns exec ubox-c wrk -t1 -c16 -d5s http://10.10.0.11/index.html

step "an NF process in a chain: every TCP packet visits the counter NF"
"$UBOX_BIN/counter" --instance ubox --json-out "$WORK/counter.json" > "$WORK/counter.log" 2>&1 &
COUNTER=$!
sleep 0.5
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
ip netns exec ubox-c curl -fsS -o /dev/null -w 'downloaded %{size_download} bytes through the chain\n' http://10.10.0.11/20M.bin
"$UBOX_BIN/uboxctl" -i ubox nf list
kill -TERM "$COUNTER"; wait "$COUNTER" || true
tail -3 "$WORK/counter.log"

step "the runtime's counters (uboxctl stats)"
"$UBOX_BIN/uboxctl" -i ubox stats

step "stop the runtime (SIGTERM): final counters"
stop_runtime
tail -n +4 "$WORK/runtime.log" | grep -v '^$' | tail -20

step "an L7 load balancer: the TCP splicer and the http-lb NF (examples/splicer.toml)"
mkdir -p "$WORK/www2"; echo "hello from server two" > "$WORK/www2/index.html"; echo "hello from server one" > "$WORK/www/index.html"
start_nginx ubox-s2 "$WORK/www2"
"$UBOX_BIN/ubox-runtime" --check --config examples/splicer.toml
start_runtime examples/splicer.toml "$WORK/runtime-splicer.log"
"$UBOX_BIN/http-lb" --instance ubox --rules examples/http-lb.toml > "$WORK/http-lb.log" 2>&1 &
LB=$!
for i in $(seq 1 50); do "$UBOX_BIN/uboxctl" -i ubox nf list 2>/dev/null | grep -q "http-lb .*running" && break; sleep 0.1; done
echo "six requests to the VIP 10.10.0.100, round-robin over both servers:"
for i in 1 2 3 4 5 6; do ip netns exec ubox-c curl -fsS http://10.10.0.100/; done
echo "Host: two.test goes to server two only:"
for i in 1 2; do ip netns exec ubox-c curl -fsS -H 'Host: two.test' http://10.10.0.100/; done
ip netns exec ubox-c wrk -t1 -c16 -d3s -H 'Connection: close' http://10.10.0.100/index.html
"$UBOX_BIN/uboxctl" -i ubox stats | grep -E "tcp splicer|http-lb"
kill -TERM "$LB"; wait "$LB" || true
tail -4 "$WORK/http-lb.log"
stop_runtime
step "done; tearing down the testbed"
