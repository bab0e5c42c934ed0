# scripts/lib.sh — helpers shared by demo.sh, test.sh and the benchmarks
# (tests/e2e has its own, in Python, but writes nginx.conf with this file's
# write_nginx_conf). Source it; it defines functions only.

UBOX_ROOT=${UBOX_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
UBOX_BIN=${UBOX_BIN:-$UBOX_ROOT/target/release}

# The testbed's names (scripts/testbed.sh): namespaces with the prefix
# UBOX_TB (default "ubox") and the box's interfaces UBOX_TB_IC/UBOX_TB_IS,
# so that two testbeds can coexist on one machine.
export UBOX_TB=${UBOX_TB:-ubox} UBOX_TB_IC=${UBOX_TB_IC:-ubx-c} UBOX_TB_IS=${UBOX_TB_IS:-ubx-s}
TB_C=$UBOX_TB-c TB_S1=$UBOX_TB-s1 TB_S2=$UBOX_TB-s2 TB_IC=$UBOX_TB_IC TB_IS=$UBOX_TB_IS

# build_release: compile the runtime, uboxctl and the bench in release mode.
build_release() {
  (cd "$UBOX_ROOT" && cargo build --release --locked -p ubox-runtime -p controller -p ubox-bench -p counter -p acl-firewall -p pcap-tap -p rewrite \
    -p ids -p stateful-firewall -p flow-logger -p http-lb -p l4lb -p stream-tap "$@" && cargo build --release --locked -p ustack --example reassemble && cargo build --release --locked -p nf-sdk --example hostile_nf)
}

# write_wire_config FILE NAME [extra TOML appended]
write_wire_config() {
  local file=$1 name=$2 extra=${3:-}
  cat > "$file" <<TOML
[runtime]
name = "$name"
workers = ${UBOX_WORKERS:-1}
nf_timeout_ms = ${UBOX_NF_TIMEOUT_MS:-2000}
nf_ring_size = ${UBOX_NF_RING_SIZE:-1024}
nf_backpressure = ${UBOX_NF_BACKPRESSURE:-false}

[flow_table]
capacity = ${UBOX_FLOW_CAPACITY:-65536}
idle_timeout_ms = ${UBOX_FLOW_IDLE_MS:-60000}

[[port]]
name = "client"
driver = "af_packet"
iface = "$TB_IC"
ipv4 = ["10.10.0.254"]

[[port]]
name = "server"
driver = "af_packet"
iface = "$TB_IS"

[[wire]]
ports = ["client", "server"]
$extra
TOML
}

# start_runtime CONFIG LOG [args...]: start ubox-runtime in the background,
# wait until its control socket answers. Sets RUNTIME_PID and RUNTIME_NAME.
start_runtime() {
  local cfg=$1 log=$2; shift 2
  # runtime.name: the `name` key inside the [runtime] table (default "ubox").
  RUNTIME_NAME=$(awk -F'"' '/^\[/ { r = ($0 ~ /^\[runtime\]/) } r && /^name *=/ { print $2; exit }' "$cfg")
  RUNTIME_NAME=${RUNTIME_NAME:-ubox}
  "$UBOX_BIN/ubox-runtime" --config "$cfg" "$@" > "$log" 2>&1 &
  RUNTIME_PID=$!
  local i
  for i in $(seq 1 100); do
    if "$UBOX_BIN/uboxctl" -i "$RUNTIME_NAME" ping >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$RUNTIME_PID" 2>/dev/null; then
      echo "ubox-runtime exited during start-up:" >&2; tail -20 "$log" >&2; return 1
    fi
    sleep 0.1
  done
  echo "ubox-runtime did not answer on its control socket within 10s" >&2; tail -20 "$log" >&2
  return 1
}

# stop_runtime: SIGTERM the runtime, wait; returns its exit code.
stop_runtime() {
  [ -n "${RUNTIME_PID:-}" ] || return 0
  kill -TERM "$RUNTIME_PID" 2>/dev/null || true
  local rc=0
  wait "$RUNTIME_PID" || rc=$?
  RUNTIME_PID=
  return $rc
}

# json_get FILE EXPR: evaluate a Python expression over a JSON file bound to
# `s`, e.g. json_get stats.json "s['ports'][0]['rx_packets']".
json_get() {
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# runtime_stats FILE: save the running runtime's counters as JSON.
runtime_stats() {
  "$UBOX_BIN/uboxctl" -i "$RUNTIME_NAME" --json stats > "$1"
}

# write_nginx_conf CONF DIR: an nginx.conf in CONF (with its logs/ and pid
# file) serving DIR over HTTP on port 80 in the foreground, one worker,
# keep-alive connections that last (the benchmarks' wrk runs reuse them).
write_nginx_conf() {
  local conf=$1 dir=$2
  mkdir -p "$conf/logs"
  cat > "$conf/nginx.conf" <<NGX
daemon off;
worker_processes 1;
pid $conf/nginx.pid;
error_log $conf/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  server { listen 80; root $dir; }
}
NGX
}

# start_nginx NS DIR: serve DIR over HTTP on port 80 in namespace NS.
start_nginx() {
  local ns=$1 dir=$2 conf
  conf=$(mktemp -d)
  write_nginx_conf "$conf" "$dir"
  ip netns exec "$ns" nginx -c "$conf/nginx.conf" -p "$conf" &
  local i
  for i in $(seq 1 50); do
    ip netns exec "$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/80' 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nginx did not start in $ns" >&2; return 1
}
