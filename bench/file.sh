#!/usr/bin/env bash
# File-mode overhead: the same command, `cat`, behind serializing mode and behind file mode,
# in the same run, with the same small JSON POST.
#
# Why `cat` is a fair pair: it is one binary that does the same work in both modes. Serializing
# mode pipes the body to its stdin and `cat` copies stdin to stdout; file mode appends the
# input file's path, so the command is `cat $TMPDIR/.../input.json` (stdin is /dev/null), which
# copies the file to stdout. Both answer the body back, so the difference is exactly what file
# mode adds: a private folder and file per request, the JSON check (RAW_BODY is unset), the
# OUTPUT_FILE probe and the folder's removal.
#
# The watchdogs run side by side and wrk alternates between them in 1 s slices (BENCH_SECONDS
# slices each, 5 by default, 16 connections), so load from anything else on the machine hits
# both alike. Requests/s is the total over all slices. Because other load on a small machine
# still skews throughput, the script also reports CPU time per request (the watchdog's threads
# plus its reaped children, from /proc). Kernel threads doing deferred filesystem work (the
# ext4 journal) are not in that figure; they are in the throughput.
#
# File mode runs twice: with TMPDIR on $BENCH_TMP (default /tmp, whatever filesystem that is
# here) and on /dev/shm (tmpfs, as with `docker run --read-only --tmpfs /tmp` or a Kubernetes
# emptyDir with medium Memory). Creating and removing a folder and a file per request is cheap
# on tmpfs and costs what the filesystem charges elsewhere.
#
# Usage: bench/file.sh   (target: file mode costs < 20 % more per request)
source "$(dirname "$0")/common.sh"
BODY='{"name":"bench","values":[1,2,3],"nested":{"ok":true}}'
cat > "$OUT/post-json.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF
DISK_TMP=${BENCH_TMP:-/tmp}
SETUPS=("serializing:$DISK_TMP" "file:$DISK_TMP" "file:/dev/shm")

declare -A PORT_OF PID_OF TMP_OF REQS_OF TICKS_OF
cleanup() {
  for k in "${!PID_OF[@]}"; do kill "${PID_OF[$k]}" 2>/dev/null || true; done
  for k in "${!TMP_OF[@]}"; do rm -rf "${TMP_OF[$k]}"; done
}
trap cleanup EXIT
# utime + stime + cutime + cstime, in clock ticks: the waited-for functions' CPU counts too
cpu_ticks_with_children() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
calc() { python3 -c "print($1)"; }

for k in "${SETUPS[@]}"; do
  mode=${k%%:*}
  PORT_OF[$k]=$(free_port)
  TMP_OF[$k]=$(mktemp -d -p "${k#*:}")
  TMPDIR=${TMP_OF[$k]} PORT=${PORT_OF[$k]} metrics_port=0 mode=$mode fprocess=cat "$BIN" 2>/dev/null &
  PID_OF[$k]=$!
  wait_port "${PORT_OF[$k]}"
  # The body must come back unchanged in every setup, or the comparison means nothing.
  got=$(curl -s -H 'Content-Type: application/json' --data-binary "$BODY" "http://127.0.0.1:${PORT_OF[$k]}/")
  [ "$got" = "$BODY" ] || { echo "$k: unexpected answer: $got" >&2; exit 1; }
  wrk -t2 -c16 -d1s -s "$OUT/post-json.lua" "http://127.0.0.1:${PORT_OF[$k]}/" >/dev/null # warm-up
  REQS_OF[$k]=0
  TICKS_OF[$k]=0
done

echo "== file mode vs serializing mode (fprocess=cat, POST ${#BODY}-byte JSON, 16 connections, ${DURATION} x 1 s each, alternating)"
echo "   $DISK_TMP is on: $(df --output=fstype "$DISK_TMP" | tail -1) ($(findmnt -no OPTIONS -T "$DISK_TMP" 2>/dev/null || echo '?'))"
for _ in $(seq 1 "$DURATION"); do
  for k in "${SETUPS[@]}"; do
    t0=$(cpu_ticks_with_children "${PID_OF[$k]}")
    wrk -t2 -c16 -d1s -s "$OUT/post-json.lua" "http://127.0.0.1:${PORT_OF[$k]}/" > "$OUT/file-slice.txt"
    sleep 0.2 # let the last children be reaped and the janitor finish
    t1=$(cpu_ticks_with_children "${PID_OF[$k]}")
    if grep -q 'Non-2xx\|Socket errors' "$OUT/file-slice.txt"; then
      echo "$k: errors during the run:" >&2; cat "$OUT/file-slice.txt" >&2; exit 1
    fi
    TICKS_OF[$k]=$(( ${TICKS_OF[$k]} + t1 - t0 ))
    REQS_OF[$k]=$(( ${REQS_OF[$k]} + $(awk '/requests in/ {print $1}' "$OUT/file-slice.txt") ))
  done
done

for k in "${SETUPS[@]}"; do
  kill "${PID_OF[$k]}"; wait "${PID_OF[$k]}" || true
  unset "PID_OF[$k]"
  left=$(find "${TMP_OF[$k]}" -mindepth 1 -name 'fwatchdog-*' | wc -l)
  [ "$left" = 0 ] || { echo "$k: $left scratch folder(s) left behind" >&2; exit 1; }
done
tick_us=$(calc "1e6 / __import__('os').sysconf('SC_CLK_TCK')")
base="serializing:$DISK_TMP"
base_rps=$(calc "round(${REQS_OF[$base]} / $DURATION, 1)")
base_cpu=$(calc "round(${TICKS_OF[$base]} * $tick_us / ${REQS_OF[$base]})")
printf '%-28s %9s req/s   CPU %5s us/request\n' "serializing" "$base_rps" "$base_cpu"
for k in "file:$DISK_TMP" "file:/dev/shm"; do
  rps=$(calc "round(${REQS_OF[$k]} / $DURATION, 1)")
  cpu=$(calc "round(${TICKS_OF[$k]} * $tick_us / ${REQS_OF[$k]})")
  printf '%-28s %9s req/s   CPU %5s us/request   overhead: %s%% time, %s%% CPU per request (target < 20%%)\n' \
    "file (TMPDIR on ${k#*:})" "$rps" "$cpu" \
    "$(calc "f'{100*($base_rps/$rps-1):.1f}'")" "$(calc "f'{100*($cpu/$base_cpu-1):.1f}'")"
done
