#!/usr/bin/env bash
# File-mode overhead: the same command, `cat`, behind serializing mode and behind file mode,
# in the same run, with the same small JSON POST.
#
# Why `cat` is a fair pair: it is one binary that does the same work in both modes. Serializing
# mode pipes the body to its stdin and `cat` copies stdin to stdout; file mode appends the
# input file's path, so the command is `cat /tmp/.../input.json` (stdin is /dev/null), which
# copies the file to stdout. Both answer the body back, so the difference is exactly what file
# mode adds: a private folder and file per request, the JSON check (RAW_BODY is unset), the
# OUTPUT_FILE probe and the folder's removal.
#
# Usage: bench/file.sh   (BENCH_SECONDS=5 by default; 16 connections; target overhead < 20 %)
source "$(dirname "$0")/common.sh"
BODY='{"name":"bench","values":[1,2,3],"nested":{"ok":true}}'
cat > "$OUT/post-json.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF

run() { # mode -> writes $OUT/file-<mode>.txt
  local mode=$1 port tmp pid
  port=$(free_port)
  tmp=$(mktemp -d)
  TMPDIR=$tmp PORT=$port metrics_port=0 mode=$mode fprocess=cat "$BIN" 2>/dev/null &
  pid=$!
  wait_port "$port"
  # The body must come back unchanged in both modes, or the comparison means nothing.
  got=$(curl -s -H 'Content-Type: application/json' --data-binary "$BODY" "http://127.0.0.1:$port/")
  [ "$got" = "$BODY" ] || { echo "$mode: unexpected answer: $got" >&2; exit 1; }
  wrk -t2 -c16 -d1s -s "$OUT/post-json.lua" "http://127.0.0.1:$port/" >/dev/null # warm-up
  wrk -t2 -c16 -d"${DURATION}s" --latency -s "$OUT/post-json.lua" "http://127.0.0.1:$port/" > "$OUT/file-$mode.txt"
  kill "$pid"; wait "$pid" || true
  if grep -q 'Non-2xx' "$OUT/file-$mode.txt"; then
    echo "$mode: errors during the run:" >&2; cat "$OUT/file-$mode.txt" >&2; exit 1
  fi
  left=$(find "$tmp" -mindepth 1 -name 'fwatchdog-*' | wc -l)
  [ "$left" = 0 ] || { echo "$mode: $left scratch folder(s) left in $tmp" >&2; exit 1; }
  rm -rf "$tmp"
}

echo "== file mode vs serializing mode (fprocess=cat, POST ${#BODY}-byte JSON, 16 connections, ${DURATION}s each)"
run serializing
run file
ser=$(rps "$OUT/file-serializing.txt")
fil=$(rps "$OUT/file-file.txt")
echo "serializing: ${ser} req/s   p50 $(p50_us "$OUT/file-serializing.txt") us"
echo "file:        ${fil} req/s   p50 $(p50_us "$OUT/file-file.txt") us"
echo "file-mode overhead: $(python3 -c "print(f'{100*($ser/$fil-1):.1f}')")% more time per request (target < 20%)"
