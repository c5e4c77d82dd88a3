#!/usr/bin/env bash
# busy_poll=auto (the default) against busy_poll=0 in front of functions that take 50 µs to
# 1 ms, sleeping or burning CPU (bench/tools.rs upstream), at 1 and 16 connections. Prints
# throughput, p50 and the watchdogs' CPU per request. From 200 µs on, polling cannot pay,
# and auto should cost (almost) nothing; at 50 µs it polls. (A sleep is at least 50 µs
# longer than asked, the kernel's default timer slack, hence burn for the quick one.)
# Usage: bench/busy_poll.sh   (BENCH_SECONDS=5, BENCH_ROUNDS=2, FUNCTIONS="50 burn,200 sleep,...")
source "$(dirname "$0")/common.sh"
ROUNDS=${BENCH_ROUNDS:-2}
# one wrk run against port $2 with $3 connections; prints "req/s p50_us cpu_us_per_request"
measure() {
  local wd=$1 p=$2 c=$3 t0 used r
  t0=$(cpu_ticks "$wd")
  wrk -t1 -c"$c" -d"${DURATION}s" --latency "http://127.0.0.1:$p/" > "$OUT/bp.txt"
  used=$(( $(cpu_ticks "$wd") - t0 ))
  r=$(rps "$OUT/bp.txt")
  echo "$r $(p50_us "$OUT/bp.txt") $(python3 -c "print(round($used*10000/($r*$DURATION),1))")"
}
echo "== busy_poll: default (auto) vs busy_poll=0 behind slower functions, $ROUNDS interleaved rounds of ${DURATION}s, medians"
IFS=, read -ra FUNCTIONS <<< "${FUNCTIONS:-50 burn,200 sleep,1000 sleep,1000 burn}"
for fn in "${FUNCTIONS[@]}"; do
  set -- $fn
  up=$(free_port); a=$(free_port); b=$(free_port)
  "$TOOLS" upstream "$up" "$1" "$2" & upid=$!
  wait_port "$up"
  mode=http upstream_url="http://127.0.0.1:$up" PORT=$a metrics_port=0 \
    "$BIN" -- sleep 1000000 2>"$OUT/bp-auto.log" & apid=$!
  mode=http upstream_url="http://127.0.0.1:$up" PORT=$b metrics_port=0 busy_poll=0 \
    "$BIN" -- sleep 1000000 2>"$OUT/bp-off.log" & bpid=$!
  # A watchdog that did not come up says why (its log), rather than only its port.
  wait_port "$a" || { tail -3 "$OUT/bp-auto.log"; exit 1; }
  wait_port "$b" || { tail -3 "$OUT/bp-off.log"; exit 1; }
  for c in 1 16; do
    A=(); B=()
    for r in $(seq 1 "$ROUNDS"); do
      if (( r % 2 )); then A+=("$(measure $apid $a $c)"); B+=("$(measure $bpid $b $c)")
      else B+=("$(measure $bpid $b $c)"); A+=("$(measure $apid $a $c)"); fi
    done
    col() { local i=$1; shift; med $(printf '%s\n' "$@" | awk -v i="$i" '{print $i}'); }
    echo "function ${1}us ${2}, ${c}c: auto $(col 1 "${A[@]}") req/s p50 $(col 2 "${A[@]}")us CPU $(col 3 "${A[@]}")us/req" \
         "| off $(col 1 "${B[@]}") req/s p50 $(col 2 "${B[@]}")us CPU $(col 3 "${B[@]}")us/req"
  done
  kill "$apid" "$bpid" "$upid"; wait "$apid" "$bpid" "$upid" 2>/dev/null || true
done
