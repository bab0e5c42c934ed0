#!/usr/bin/env bash
# scripts/setup.sh — prepare a Debian 12 machine for ubox. Idempotent.
#
# Installs what a fresh machine lacks (DPDK 22.11, the bindgen toolchain,
# network tools, the test peers, pytest and headless Chromium for the
# end-to-end suite), reserves 2 MiB hugepages, mounts hugetlbfs on
# /dev/hugepages and creates the group whose members may run NFs (`ubox`,
# the runtime's default runtime.group). Safe to run again: every step checks first.
#
# Environment:
#   UBOX_HUGEPAGES   number of 2 MiB pages to reserve (default 1024 = 2 GiB)
#   UBOX_GROUP       the NF group to create (default ubox)
set -euo pipefail

HUGEPAGES=${UBOX_HUGEPAGES:-1024}
GROUP=${UBOX_GROUP:-ubox}
PKGS=(
  libdpdk-dev dpdk dpdk-dev
  clang libclang-dev pkg-config
  iproute2 ethtool tcpdump iptables iputils-ping procps psmisc
  nginx-light curl iperf3 wrk haproxy
  python3-pytest tshark
  chromium fonts-dejavu-core
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: must run as root (it installs packages and reserves hugepages); try: sudo $0" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts nginx on install; the testbed runs its own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  pkill -x nginx 2>/dev/null || true
else
  echo "setup.sh: packages already installed"
fi

nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
if [ -w "$nr" ]; then
  cur=$(cat "$nr")
  if [ "$cur" -lt "$HUGEPAGES" ]; then
    echo "$HUGEPAGES" > "$nr" || true
  fi
  echo "setup.sh: 2 MiB hugepages reserved: $(cat "$nr")"
else
  echo "setup.sh: warning: cannot write $nr; hugepages not reserved" >&2
fi
mkdir -p /dev/hugepages
if ! mountpoint -q /dev/hugepages; then
  mount -t hugetlbfs nodev /dev/hugepages
fi
echo "setup.sh: hugetlbfs mounted on /dev/hugepages"

# NFs need not be root: the runtime gives its control socket and arena to
# this group (mode 0660). Add a user with: usermod -aG ubox USER (it takes
# effect at the user's next login).
if getent group "$GROUP" >/dev/null; then
  echo "setup.sh: group $GROUP exists"
else
  groupadd --system "$GROUP"
  echo "setup.sh: group $GROUP created (add NF users: usermod -aG $GROUP USER)"
fi
