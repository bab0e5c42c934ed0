#!/usr/bin/env bash
# scripts/test.sh — the whole ubox test suite.
#
#   1. setup (idempotent: packages, hugepages)
#   2. cargo fmt --check, clippy -D warnings
#   3. unit and property tests of every crate (cargo test --workspace)
#   4. release build and the end-to-end tests through a real DPDK runtime
#      between network namespaces (tests/e2e, pytest)
#
# Must run as root (namespaces, hugepages, raw sockets). Exits non-zero on
# any failure. UBOX_SKIP_E2E=1 runs only steps 1-3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: must run as root (network namespaces, hugepages, DPDK); try: sudo $0" >&2
  exit 1
fi

echo "== setup"
bash scripts/setup.sh

echo "== format and lint"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== unit and property tests"
cargo test --locked --workspace

if [ "${UBOX_SKIP_E2E:-0}" = 1 ]; then
  echo "== end-to-end tests skipped (UBOX_SKIP_E2E=1)"
  exit 0
fi

echo "== release build"
. scripts/lib.sh
build_release

echo "== end-to-end tests (tests/e2e)"
export UBOX_BIN
# Debian's python3, which python3-pytest is installed for (another python3
# may come first in PATH).
exec "${UBOX_PYTHON:-/usr/bin/python3}" -m pytest tests/e2e -v
