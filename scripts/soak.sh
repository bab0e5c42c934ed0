#!/usr/bin/env bash
# scripts/soak.sh [SECONDS] [PYTEST OPTION...] — the soak test (issue 9 §5)
# for SECONDS (default 600; CI runs the same test for 120 s as part of
# tests/e2e).
#
# wrk (8 keep-alive connections) and iperf3 (one upload, capped at 300
# Mbit/s) through a chain of three NFs (ids fail-closed, counter fail-open,
# flow-logger fail-open) while the counter is killed and restarted every
# 10 s, the chain re-applied every 5 s and a burst of malformed frames sent
# every 3 s; afterwards the pools must be back at idle, no NF may hold an
# event, the runtime's RSS must be flat (first minute against last) and no
# log may show a panic. The test prints a summary table; what it checks and
# why is in tests/e2e/test_soak.py.
#
#   sudo scripts/soak.sh            # 10 minutes
#   sudo scripts/soak.sh 120 -x     # 2 minutes, as in CI
#
# This runs tests/e2e/test_soak.py::test_soak with UBOX_SOAK_SECONDS=SECONDS,
# so the script and CI run the very same code. It builds the release
# binaries first unless UBOX_BIN is set. The testbed and instance names
# come from the environment as for every e2e test (UBOX_TB, UBOX_TB_IC,
# UBOX_TB_IS, UBOX_E2E_PREFIX; README "Tests"), e.g. beside another run:
#
#   sudo UBOX_TB=sk UBOX_TB_IC=sk-c UBOX_TB_IS=sk-s UBOX_E2E_PREFIX=sk scripts/soak.sh 600
#
# Pinning (the 2-CPU layout the benchmarks use): the runtime's worker on
# CPU 1 (the config's default: main lcore on CPU 0, workers after it); the
# NFs pin themselves through nf-sdk to runtime.nf_cpus, which defaults to
# the CPUs no worker uses (CPU 0); wrk, iperf3 (client and server), nginx,
# curl, the long-lived client and the malformed-frame sender run on CPU 0
# under taskset.
#
# Needs root (namespaces, hugepages, DPDK) and what scripts/setup.sh
# installs (wrk, iperf3, nginx, python3-pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "soak.sh: must run as root (network namespaces, hugepages, DPDK); try: sudo $0 $*" >&2
  exit 1
fi
seconds=600
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  seconds=$1; shift
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 30 ]; then
  echo "soak.sh: SECONDS must be a whole number of at least 30 (got '$seconds')" >&2
  exit 2
fi
for t in wrk iperf3 nginx; do
  command -v "$t" >/dev/null || { echo "soak.sh: $t not found: run scripts/setup.sh" >&2; exit 1; }
done

if [ -z "${UBOX_BIN:-}" ]; then
  . scripts/lib.sh
  build_release
fi
export UBOX_BIN=${UBOX_BIN:-$PWD/target/release}
export UBOX_SOAK_SECONDS=$seconds
echo "soak.sh: ${seconds} s (testbed ${UBOX_TB:-ubox}, instances ${UBOX_E2E_PREFIX:-e2e}-*, binaries $UBOX_BIN)"
exec "${UBOX_PYTHON:-/usr/bin/python3}" -m pytest "tests/e2e/test_soak.py::test_soak" -v "$@"
