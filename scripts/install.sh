#!/usr/bin/env bash
# scripts/install.sh — install ubox as services: the release binaries, the
# systemd units deploy/ubox-runtime.service and deploy/ubox-nf@.service,
# and a starting configuration in /etc/ubox/. Idempotent; --uninstall
# takes it away again.
#
#   scripts/install.sh                    # /usr/local/bin, /etc/systemd/system, /etc/ubox (as root)
#   scripts/install.sh --prefix /opt/ubox # everything under /opt/ubox: bin/, lib/systemd/system/, etc/ubox/
#   scripts/install.sh --uninstall        # stop and disable the units, remove binaries and units (config kept)
#   scripts/install.sh --uninstall --purge   # ... and /etc/ubox too
#
# Options (paths default as in the first line; --prefix moves all three):
#   --prefix DIR     binaries in DIR/bin, units in DIR/lib/systemd/system, config in DIR/etc/ubox
#   --bin-dir DIR    --unit-dir DIR    --conf-dir DIR    one of them only
#   --no-reload      do not run systemctl daemon-reload
#   --uninstall [--purge]
#
# The binaries come from target/release (UBOX_BIN to change): build them
# first with `cargo build --release` (or scripts/lib.sh's build_release).
# The units are rewritten to the chosen paths. Existing configuration is
# never overwritten. When systemd runs and the units went to a directory
# it reads, `systemctl daemon-reload` follows; nothing is enabled or
# started: `systemctl enable --now ubox-runtime ubox-nf@counter`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_BIN=${UBOX_BIN:-$ROOT/target/release}
GROUP=${UBOX_GROUP:-ubox}
BINARIES=(ubox-runtime uboxctl counter acl-firewall ids stateful-firewall flow-logger pcap-tap rewrite http-lb)
UNITS=(ubox-runtime.service ubox-nf@.service)
DEFAULT_BIN=/usr/local/bin DEFAULT_UNIT=/etc/systemd/system DEFAULT_CONF=/etc/ubox

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

bin_dir= unit_dir= conf_dir= prefix= reload=1 uninstall=0 purge=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
    --unit-dir) [ $# -ge 2 ] || die "--unit-dir needs a directory"; unit_dir=$2; shift 2 ;;
    --conf-dir) [ $# -ge 2 ] || die "--conf-dir needs a directory"; conf_dir=$2; shift 2 ;;
    --no-reload) reload=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ $purge -eq 0 ] || [ $uninstall -eq 1 ] || die "--purge goes with --uninstall"
if [ -n "$prefix" ]; then
  case $prefix in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
  prefix=${prefix%/}
  bin_dir=${bin_dir:-$prefix/bin} unit_dir=${unit_dir:-$prefix/lib/systemd/system} conf_dir=${conf_dir:-$prefix/etc/ubox}
fi
bin_dir=${bin_dir:-$DEFAULT_BIN} unit_dir=${unit_dir:-$DEFAULT_UNIT} conf_dir=${conf_dir:-$DEFAULT_CONF}
for d in "$bin_dir" "$unit_dir" "$conf_dir"; do
  case $d in /*) ;; *) die "'$d' is not an absolute path" ;; esac
done

# systemd runs (PID 1) and reads units from $unit_dir: then it is told.
systemd_reads() {
  [ -d /run/systemd/system ] || return 1
  case ${unit_dir%/} in /etc/systemd/system|/lib/systemd/system|/usr/lib/systemd/system|/run/systemd/system) return 0 ;; esac
  return 1
}
reload_systemd() {
  if [ $reload -eq 1 ] && systemd_reads; then
    systemctl daemon-reload && echo "install.sh: systemctl daemon-reload"
  fi
}

if [ $uninstall -eq 1 ]; then
  if systemd_reads; then
    mapfile -t running < <(systemctl list-units --all --plain --no-legend 'ubox-nf@*' 'ubox-runtime.service' 2>/dev/null | awk '{print $1}')
    if [ ${#running[@]} -gt 0 ]; then
      systemctl disable --now "${running[@]}" >/dev/null 2>&1 || true
      echo "install.sh: stopped and disabled ${running[*]}"
    fi
    systemctl disable ubox-runtime.service >/dev/null 2>&1 || true
  fi
  for b in "${BINARIES[@]}"; do rm -f "$bin_dir/$b"; done
  for u in "${UNITS[@]}"; do rm -f "$unit_dir/$u"; done
  echo "install.sh: removed ${BINARIES[*]} from $bin_dir and ${UNITS[*]} from $unit_dir"
  if [ $purge -eq 1 ]; then
    rm -rf "$conf_dir"
    echo "install.sh: removed $conf_dir"
  else
    [ -d "$conf_dir" ] && echo "install.sh: kept the configuration in $conf_dir (--purge removes it)"
  fi
  reload_systemd
  exit 0
fi

missing=()
for b in "${BINARIES[@]}"; do [ -x "$SRC_BIN/$b" ] || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] || die "not built: ${missing[*]} in $SRC_BIN: run cargo build --release (or: . scripts/lib.sh; build_release) first"
for u in "${UNITS[@]}"; do [ -f "$ROOT/deploy/$u" ] || die "deploy/$u is missing from $ROOT"; done

install -d -m 0755 "$bin_dir" "$unit_dir" "$conf_dir"
for b in "${BINARIES[@]}"; do install -m 0755 "$SRC_BIN/$b" "$bin_dir/$b"; done
echo "install.sh: ${BINARIES[*]} -> $bin_dir"

# The units name /usr/local/bin and /etc/ubox; point them at where things went.
sed_paths=(-e "s|/usr/local/bin/|${bin_dir%/}/|g" -e "s|/etc/ubox/|${conf_dir%/}/|g")
for u in "${UNITS[@]}"; do
  sed "${sed_paths[@]}" "$ROOT/deploy/$u" > "$unit_dir/.$u.tmp"
  chmod 0644 "$unit_dir/.$u.tmp"
  mv "$unit_dir/.$u.tmp" "$unit_dir/$u"
done
echo "install.sh: ${UNITS[*]} -> $unit_dir"

# Configuration: never overwrite what is there.
put_conf() { # put_conf NAME (content on stdin)
  if [ -e "$conf_dir/$1" ]; then
    cat > /dev/null
    echo "install.sh: kept $conf_dir/$1"
  else
    sed "${sed_paths[@]}" > "$conf_dir/$1"
    chmod 0644 "$conf_dir/$1"
    echo "install.sh: wrote $conf_dir/$1"
  fi
}
put_conf runtime.toml < "$ROOT/examples/wire.toml"
put_conf runtime.env <<'EOF'
# Environment of ubox-runtime.service.
# Extra arguments after --config (see ubox-runtime --help), e.g. a chain file
# applied before the first packet:
#UBOX_RUNTIME_ARGS=--chains /etc/ubox/chains.toml
# Log filter (tracing EnvFilter syntax): error, warn, info, debug.
#UBOX_LOG=info
EOF
put_conf nf.env.example <<'EOF'
# Copy to nf-NAME.env for ubox-nf@NAME.service (NAME: the NF binary).
# Its arguments (--reconnect is always given by the unit); relative paths
# are in its state directory, /var/lib/ubox-nf/NAME. Examples:
#   nf-counter.env:       UBOX_NF_ARGS=--port 80 --json-out counter.json
#   nf-acl-firewall.env:  UBOX_NF_ARGS=--rules /etc/ubox/acl.rules --json-out acl.json
#   nf-http-lb.env:       UBOX_NF_ARGS=--rules /etc/ubox/http-lb.toml --stats-json lb.json
UBOX_NF_ARGS=
# Another runtime instance than `ubox`:
#UBOX_INSTANCE=ubox
#UBOX_LOG=info
EOF

# The runtime refuses to start without its NF group (runtime.group).
if systemd_reads && ! getent group "$GROUP" >/dev/null; then
  groupadd --system "$GROUP" && echo "install.sh: created group $GROUP (its members may run NFs)"
fi
reload_systemd
if ! systemd_reads; then
  echo "install.sh: systemd does not read $unit_dir here (or is not running): no daemon-reload"
fi
echo "install.sh: done; edit $conf_dir/runtime.toml, then: systemctl enable --now ubox-runtime ubox-nf@counter"
