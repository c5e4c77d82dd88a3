#!/usr/bin/env bash
# Fork-mode throughput against this machine's limit (a plain Rust loop spawning the same
# `cat` at the same concurrency), idle RSS, start-to-listening time and binary size.
# Usage: bench/fork.sh   (BENCH_SECONDS=5 by default)
source "$(dirname "$0")/common.sh"
echo "== fork mode (streaming, fprocess=cat, POST 5 bytes), ${DURATION}s per run"
for c in 1 16; do
  port=$(free_port)
  PORT=$port metrics_port=0 fprocess=cat "$BIN" 2>/dev/null & pid=$!
  wait_port "$port"
  wrk -t"$(( c < 2 ? 1 : 2 ))" -c"$c" -d"${DURATION}s" -s "$OUT/post.lua" "http://127.0.0.1:$port/" > "$OUT/fork-$c.txt"
  kill "$pid"; wait "$pid" || true
  limit=$("$TOOLS" spawn "$c" "$DURATION" cat)
  got=$(rps "$OUT/fork-$c.txt")
  echo "connections=$c  watchdog=${got} req/s  spawn-loop limit=${limit} /s  ratio=$(pct "$got" "$limit")%  (target >= 80%)"
done
port=$(free_port)
PORT=$port metrics_port=0 fprocess=cat "$BIN" 2>/dev/null & pid=$!
wait_port "$port"; sleep 0.5
echo "idle RSS: $(rss_kb $pid) kB  (target <= 3072 kB)"
kill "$pid"; wait "$pid" || true
echo "start to listening (median of 21): $("$TOOLS" startup 21 "$BIN") ms  (target <= 10 ms)"
size=$(stat -c %s "$BIN")
echo "binary: $size bytes ($(python3 -c "print(round($size/1048576,2))") MiB, target <= 2 MiB); $(file -b "$BIN" | cut -d, -f1-2,5 | tr -s ' ')"
