#!/usr/bin/env bash
# scripts/testbed.sh up|down|status — the ubox namespace testbed.
#
# One client and two servers in network namespaces, joined through the box:
#
#   ns ubox-c                root ns (ubox-runtime)              ns ubox-sw            ns ubox-s1 / ubox-s2
#   eth0 10.10.0.1/24 ==veth== ubx-c  [net_af_packet]            br0 --- sw-s1 ==veth== eth0 10.10.0.11/24
#                               ubx-s  [net_af_packet] ==veth== sw-up    `- sw-s2 ==veth== eth0 10.10.0.12/24
#
# - The runtime takes the root-namespace ends `ubx-c` (client side) and
#   `ubx-s` (server side) as net_af_packet ports and bridges them (wire
#   mode). Without the runtime, client and servers cannot reach each other.
# - All hosts share 10.10.0.0/24; the box itself answers ARP and ping on
#   10.10.0.254 (see examples/wire.toml).
# - Segmentation and checksum offloads are off on every veth, so frames on
#   the wire are real, full-checksum, MTU-sized frames, as on a NIC.
# - IPv6 and multicast (IGMP) are off inside the namespaces, so the only
#   traffic is the tests' own and flow counts in tests are exact.
# - Namespaces are named with the prefix UBOX_TB (default "ubox"), so two
#   testbeds can coexist: UBOX_TB=t2 scripts/testbed.sh up.
set -euo pipefail

P=${UBOX_TB:-ubox}
C=$P-c; SW=$P-sw; S1=$P-s1; S2=$P-s2
# Interface names are limited to 15 characters.
IC=${UBOX_TB_IC:-ubx-c}; IS=${UBOX_TB_IS:-ubx-s}

need_root() { [ "$(id -u)" -eq 0 ] || { echo "testbed.sh: must run as root" >&2; exit 1; }; }

quiet_offloads() { # ns iface
  local ns=$1 ifc=$2 x=()
  [ -n "$ns" ] && x=(ip netns exec "$ns")
  "${x[@]}" ethtool -K "$ifc" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
}

up() {
  need_root
  down >/dev/null 2>&1 || true
  for ns in "$C" "$SW" "$S1" "$S2"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # IPv4 only: router solicitations and MLD reports would add flows
    # nobody asked for and make counters in tests nondeterministic.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done

  # Client side.
  ip link add "$IC" type veth peer name eth0 netns "$C"
  ip -n "$C" addr add 10.10.0.1/24 dev eth0
  ip -n "$C" link set eth0 multicast off up

  # Server switch and servers.
  ip -n "$SW" link add br0 type bridge mcast_snooping 0
  ip -n "$SW" link set br0 multicast off up
  ip link add "$IS" type veth peer name sw-up netns "$SW"
  ip -n "$SW" link set sw-up master br0 up
  local i=1
  for s in "$S1" "$S2"; do
    ip -n "$SW" link add "sw-s$i" type veth peer name eth0 netns "$s"
    ip -n "$SW" link set "sw-s$i" master br0 up
    ip -n "$s" addr add "10.10.0.1$i/24" dev eth0
    ip -n "$s" link set eth0 multicast off up
    quiet_offloads "$SW" "sw-s$i"
    quiet_offloads "$s" eth0
    i=$((i + 1))
  done
  quiet_offloads "$SW" sw-up
  quiet_offloads "$C" eth0

  # Root-namespace ends: no addresses, no IPv6 chatter, taken by the runtime.
  for ifc in "$IC" "$IS"; do
    sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1" || true
    ip link set "$ifc" up
    quiet_offloads "" "$ifc"
  done
  echo "testbed '$P' up: client $C 10.10.0.1, servers $S1 10.10.0.11 and $S2 10.10.0.12; box ports $IC (client side), $IS (server side)"
}

down() {
  need_root
  for ns in "$C" "$SW" "$S1" "$S2"; do
    if ip netns pids "$ns" >/dev/null 2>&1; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    fi
  done
  sleep 0.2
  for ns in "$C" "$SW" "$S1" "$S2"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$IC" 2>/dev/null || true
  ip link del "$IS" 2>/dev/null || true
  echo "testbed '$P' down"
}

status() {
  ip netns list | grep -E "^$P-" || echo "testbed '$P' is down"
  ip -br link show "$IC" 2>/dev/null || true
  ip -br link show "$IS" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
