#!/usr/bin/env bash
# What do Prometheus metrics cost on the request path?
#
# Serves one small file in static mode (the cheapest request the watchdog handles, so the
# per-request metrics work is the largest share of it) and drives it with wrk, once with
# metrics_port=0 (nothing recorded, no listener) and once with metrics on, ROUNDS times,
# swapping which goes first each round so that drift on a shared machine hits both alike. Prints requests/s
# per run, the mean of each side and the ratio on/off, and the watchdog's own CPU time per
# request (from /proc/PID/stat), which is steadier than requests/s when other work shares
# the machine.
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

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run <metrics_port or 0>: sets RPS and CPU_US (watchdog CPU microseconds per request).
# Runs in this shell, not a subshell, so the EXIT trap always knows the watchdog's pid.
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
    local out rps n t0 t1
    t0=$(cpu_ticks "$pid")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$port/index.html")
    t1=$(cpu_ticks "$pid")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    if [ "$mport" != 0 ]; then
        # Proof the "on" side really recorded every request.
        local counted
        counted=$(curl -fs "http://127.0.0.1:$mport/metrics" |
            awk '/^http_requests_total\{/ {n += $2} END {print n + 0}')
        echo "    (metrics on: http_requests_total = $counted after warm-up + run)"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    RPS=$rps
    CPU_US=$(awk -v n="$n" -v d="$((t1 - t0))" -v hz="$TICKS" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
}

echo "fwatchdog static mode, 1 KiB file, wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s per run, $ROUNDS rounds"
results="$work/results"
for r in $(seq 1 "$ROUNDS"); do
    # Odd rounds measure "off" first, even rounds "on" first, so any advantage of going
    # first or second (caches, CPU frequency, the neighbours' load) falls on both sides.
    if [ $((r % 2)) -eq 1 ]; then
        run 0; off=$RPS off_cpu=$CPU_US
        run "$(free_port)"; on=$RPS on_cpu=$CPU_US
    else
        run "$(free_port)"; on=$RPS on_cpu=$CPU_US
        run 0; off=$RPS off_cpu=$CPU_US
    fi
    printf 'round %d: metrics off %8.0f req/s (%6.2f us CPU/req)   metrics on %8.0f req/s (%6.2f us CPU/req)\n' \
        "$r" "$off" "$off_cpu" "$on" "$on_cpu"
    echo "$off $off_cpu $on $on_cpu" >> "$results"
done
awk '{a += $1; b += $2; c += $3; d += $4} END {
    printf "mean off: %8.0f req/s  %6.2f us CPU/req\n", a / NR, b / NR
    printf "mean on:  %8.0f req/s  %6.2f us CPU/req\n", c / NR, d / NR
    printf "ratio on/off: %.3f requests/s, %.3f CPU per request\n", c / a, d / b
}' "$results"
