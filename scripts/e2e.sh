#!/usr/bin/env bash
# scripts/e2e.sh [TEST...] [PYTEST OPTION...] — the end-to-end tests, which
# live in tests/e2e (pytest; README "Tests"). This wrapper keeps the old
# command working: leading TEST names become one -k expression ("test_ping
# test_iperf3" runs those two), and everything from the first option on is
# passed to pytest as it is.
#
#   sudo scripts/e2e.sh                      # all of them
#   sudo scripts/e2e.sh test_iperf3 -x       # one
#
# Runs Debian's python3 (python3-pytest, installed by scripts/setup.sh), or
# UBOX_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
names=()
while [ $# -gt 0 ] && [[ $1 != -* ]]; do names+=("$1"); shift; done
k=()
if [ ${#names[@]} -gt 0 ]; then
  expr=${names[0]}
  for n in "${names[@]:1}"; do expr+=" or $n"; done
  k=(-k "$expr")
fi
exec "${UBOX_PYTHON:-/usr/bin/python3}" -m pytest tests/e2e -v "${k[@]}" "$@"
