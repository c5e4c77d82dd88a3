#!/usr/bin/env bash
# One comparison, in one run and in interleaved rounds: nginx direct, nginx as a keep-alive
# reverse proxy, fwatchdog and of-watchdog in http mode (1, 4, 16 and 64 connections:
# throughput, p50/p99, proxy CPU per request, RSS under load); fork mode with `cat` at 1 and
# 16 connections against the spawn-loop limit and of-watchdog; idle RSS and start to healthy
# for both watchdogs. Every figure is printed with its ratio to its baselines from the same
# run. Writes docs/perf/compare.json, the pictures docs/perf/{throughput,latency-c1,rss}.svg
# and docs/perf/compare.md (bench/plot.py draws them from the JSON).
#
# Usage: bench/compare.sh
#   COMPARE_ROUNDS=3    interleaved rounds (every subject once per scenario per round)
#   COMPARE_SECONDS=4   seconds per wrk run
#   COMPARE_QUICK=1     1 round of 1 s runs, written to target/bench/compare/ (not docs/)
#   COMPARE_OUT=DIR     where the JSON, the pictures and compare.md go
#   COMPARE_NETNS=0     measure in this network namespace, not a private one
#   FWATCHDOG_BIN=PATH  measure this binary instead of building the musl release binary
#   PEER_OFWATCHDOG=PATH  of-watchdog to compare with (default: ../shared/peers/of-watchdog
#                       beside the repository); without one, the rest is still measured
# As root it installs what is missing (wrk, nginx-light, python3-matplotlib) from Debian.
# About 6 minutes with the defaults on a 2-core machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# paths given relative to where the command was run
for v in FWATCHDOG_BIN PEER_OFWATCHDOG COMPARE_OUT; do
  if [ -n "${!v:-}" ]; then printf -v "$v" '%s' "$(realpath -m -- "${!v}")"; fi
done
cd "$ROOT"
case "${1:-}" in -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

say() { echo "compare: $*" >&2; }
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing $*: install it (apt-get install -y $*) or run as root"; return 1
  fi
  say "installing $*"
  apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null; }
}

# ---- tools
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light || apt_install nginx
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v file >/dev/null || apt_install file || true
PLOT_PY=""
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null && "$py" -c 'import matplotlib' 2>/dev/null; then PLOT_PY=$py; break; fi
done
if [ -z "$PLOT_PY" ]; then
  if apt_install python3-matplotlib && /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    PLOT_PY=/usr/bin/python3
  else
    say "no matplotlib: the pictures are not drawn (apt-get install -y python3-matplotlib)"
  fi
fi

# ---- the shipped binary: static musl release, as images/watchdog/ builds it
TARGET=x86_64-unknown-linux-musl
if [ -n "${FWATCHDOG_BIN:-}" ]; then
  export BENCH_NO_BUILD=1
  BUILD="given by FWATCHDOG_BIN"
else
  sysroot=$(rustc --print sysroot)
  [ -d "$sysroot/lib/rustlib/$TARGET" ] || rustup target add "$TARGET"
  say "building the release binary for $TARGET"
  BUILD="cargo build --release --target $TARGET"
fi
# shellcheck source=common.sh source-path=SCRIPTDIR disable=SC1091
source "$ROOT/bench/common.sh"   # builds (unless BENCH_NO_BUILD), sets BIN and TOOLS
[ -x "$BIN" ] || { say "no binary at $BIN"; exit 1; }
file -b "$BIN" 2>/dev/null | grep -q 'statically linked\|static-pie' \
  || say "warning: $BIN is not statically linked; the shipped binary is"

# ---- the peer
OFW=""; OFW_LABEL=""
if [ -n "${PEER_OFWATCHDOG:-}" ]; then
  if [ -x "$PEER_OFWATCHDOG" ]; then OFW=$PEER_OFWATCHDOG; OFW_LABEL="of-watchdog (PEER_OFWATCHDOG)"
  else say "PEER_OFWATCHDOG=$PEER_OFWATCHDOG is not an executable: measuring without of-watchdog"; fi
elif [ -x "$ROOT/../shared/peers/of-watchdog" ]; then
  OFW=$(cd "$ROOT/../shared/peers" && pwd)/of-watchdog; OFW_LABEL="of-watchdog (peer binary)"
else
  say "no of-watchdog (neither PEER_OFWATCHDOG nor ../shared/peers/of-watchdog): measuring the rest"
fi

# ---- where results go
if [ -n "${COMPARE_OUT:-}" ]; then OUTDIR=$COMPARE_OUT
elif [ -n "${COMPARE_QUICK:-}" ] && [ "${COMPARE_QUICK}" != 0 ]; then OUTDIR=$ROOT/target/bench/compare
else OUTDIR=$ROOT/docs/perf; fi
mkdir -p "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX")

# ---- a private network namespace: no port clashes with anything else on the machine
# (of-watchdog always binds 8081 for its metrics), and nothing else's traffic on its loopback
NETNS=host
if [ "${COMPARE_NETNS:-1}" != 0 ] && command -v unshare >/dev/null && command -v ip >/dev/null \
   && unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
  NETNS=private
else
  say "measuring in the host's network namespace"
  if [ -n "$OFW" ] && (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null; then
    say "port 8081 is taken and of-watchdog always binds it for metrics: measuring without of-watchdog"
    OFW=""
  fi
fi

driver=""
cleanup() {
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true; wait "$driver" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

RUSTC_VERSION=$(rustc --version 2>/dev/null || true)
export FWATCHDOG_BIN=$BIN OFWATCHDOG=$OFW OFWATCHDOG_LABEL=$OFW_LABEL TOOLS NGINX \
  COMPARE_WORK=$WORK COMPARE_JSON=$OUTDIR/compare.json COMPARE_NETNS=$NETNS \
  FWATCHDOG_BUILD=$BUILD RUSTC_VERSION
if [ "$NETNS" = private ]; then
  # unshare and sh exec in turn, so $driver is the python process itself
  unshare -n sh -c 'ip link set lo up && exec "$@"' sh python3 "$ROOT/bench/compare.py" & driver=$!
else
  python3 "$ROOT/bench/compare.py" & driver=$!
fi
wait "$driver"; driver=""

if [ -n "$PLOT_PY" ]; then
  "$PLOT_PY" "$ROOT/bench/plot.py" "$OUTDIR/compare.json"
else
  python3 "$ROOT/bench/plot.py" --no-pictures "$OUTDIR/compare.json"
fi
