#!/usr/bin/env bash
# bench/scripts/make-capture.sh [OUT.pcap] — capture real HTTP traffic for
# the benchmarks: in the testbed, server 2 (10.10.0.12) fetches a mix of
# 1 KB to 1 MB objects from nginx on server 1 (10.10.0.11) over curl with
# keep-alive off (one TCP connection per object, handshakes and teardowns
# included). Real Linux TCP, full checksums (offloads are off in the
# testbed). The committed bench/data/http.pcap was made with this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
OUT=${1:-bench/data/http.pcap}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
WORK=$(mktemp -d /tmp/ubox-cap.XXXXXX); chmod 755 "$WORK"
trap 'kill $TCPDUMP 2>/dev/null || true; scripts/testbed.sh down >/dev/null 2>&1 || true' EXIT
scripts/testbed.sh up >/dev/null
mkdir -p "$WORK/www"
for s in 1k:1024 4k:4096 16k:16384 64k:65536 256k:262144 1m:1048576; do
  head -c "${s#*:}" /dev/urandom > "$WORK/www/${s%%:*}.bin"
done
start_nginx ubox-s1 "$WORK/www"
ip netns exec ubox-s2 tcpdump -i eth0 -s 0 -U -w "$OUT.tmp" tcp port 80 >/dev/null 2>&1 &
TCPDUMP=$!
sleep 1
urls=()
for obj in 1k:40 4k:20 16k:10 64k:6 256k:2 1m:1; do
  for _ in $(seq 1 "${obj#*:}"); do urls+=("http://10.10.0.11/${obj%%:*}.bin"); done
done
for u in "${urls[@]}"; do ip netns exec ubox-s2 curl -fsS -o /dev/null "$u"; done
sleep 1
kill -INT $TCPDUMP; wait $TCPDUMP || true
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT: $(stat -c %s "$OUT") bytes, ${#urls[@]} HTTP transfers"
