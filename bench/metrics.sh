#!/usr/bin/env bash
# What do Prometheus metrics cost on the request path?
#
# Serves one small file in static mode (the cheapest request the watchdog handles, so the
# per-request metrics work is the largest share of it) and drives it with wrk, once with
# metrics_port=0 (nothing recorded, no listener) and once with metrics on, alternating
# ROUNDS times so that drift on a shared machine hits both sides alike. Prints requests/s
# per run, the mean of each side and the ratio on/off.
#
# Env: DURATION (s, default 5), CONNECTIONS (16), THREADS (2), ROUNDS (2),
#      SKIP_BUILD=1 to use an existing target/release/fwatchdog.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
BIN=target/release/fwatchdog

if ! command -v wrk >/dev/null; then
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release --quiet
fi

work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/public" "$work/tmp"
# 1 KiB: small enough that file I/O does not hide the metrics cost.
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/public/index.html"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# run <metrics_port or 0>: prints requests/s
run() {
    local mport=$1 port
    port=$(free_port)
    mode=static static_path="$work/public" PORT=$port metrics_port=$mport TMPDIR="$work/tmp" \
        "$BIN" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:$port/_/health" >/dev/null 2>&1 && break
        sleep 0.05
    done
    # Warm-up, not measured.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port/index.html" >/dev/null
    local rps
    rps=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/index.html" |
        awk '/^Requests\/sec:/ {print $2}')
    if [ "$mport" != 0 ]; then
        # Proof the "on" side really recorded every request.
        local counted
        counted=$(curl -fs "http://127.0.0.1:$mport/metrics" |
            awk '/^http_requests_total\{/ {n += $2} END {print n + 0}')
        echo "    (metrics on: http_requests_total = $counted)" >&2
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    echo "$rps"
}

echo "fwatchdog static mode, 1 KiB file, wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s per run, $ROUNDS rounds"
off_all=()
on_all=()
for r in $(seq 1 "$ROUNDS"); do
    off=$(run 0)
    on=$(run "$(free_port)")
    printf 'round %d: metrics off %10.0f req/s   metrics on %10.0f req/s\n' "$r" "$off" "$on"
    off_all+=("$off")
    on_all+=("$on")
done
printf '%s\n' "${off_all[@]}" | awk '{s += $1} END {printf "mean off: %.0f req/s\n", s / NR}'
printf '%s\n' "${on_all[@]}" | awk '{s += $1} END {printf "mean on:  %.0f req/s\n", s / NR}'
{ printf '%s\n' "${off_all[@]}" | awk '{s += $1} END {print s / NR}'
  printf '%s\n' "${on_all[@]}" | awk '{s += $1} END {print s / NR}'; } |
    paste -sd' ' | awk '{printf "ratio on/off: %.3f (metrics cost %+.1f%% of throughput)\n", $2 / $1, 100 * ($1 - $2) / $1}'
