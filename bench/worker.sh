#!/usr/bin/env bash
# Worker mode against its alternatives, in one run and interleaved rounds: the python3
# template's handler (template/python3: classic handle(req)) in worker mode and in
# serializing mode (one python3 per request), the python3-http template in http mode,
# and a C worker (examples/worker-c, or a copy built here) as the bare protocol baseline,
# at 1 and 16 connections (POST "hello"). Prints req/s and p50 per subject, and the ratios
# the worker-mode issue asks for: worker / serializing, worker / python3-http, and the
# p50 the watchdog adds to a C worker over nginx answering directly.
#   bench/worker.sh            (BENCH_SECONDS=3, BENCH_ROUNDS=3, WORKERS=auto)
source "$(dirname "$0")/common.sh"
ROUNDS=${BENCH_ROUNDS:-3}; DURATION=${BENCH_SECONDS:-3}
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
command -v cc >/dev/null || apt-get install -y -qq gcc libc6-dev >/dev/null
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

# The bare baseline: nginx answering "ok" itself.
ngx_port=$(free_port); mkdir -p "$OUT/worker-nginx/logs"
cat > "$OUT/worker-nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; error_log stderr error; pid $OUT/worker-nginx/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$ngx_port; location / { return 200 "ok"; } } }
CONF
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$OUT/worker-nginx" -c "$OUT/worker-nginx/nginx.conf" & pids+=($!)
wait_port "$ngx_port"

cworker="$OUT/worker-c"
src="$ROOT/examples/worker-c/worker.c"
[ -f "$src" ] || src="$OUT/worker-min.c"
if [ ! -f "$ROOT/examples/worker-c/worker.c" ]; then
  cat > "$src" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) { static char line[65536], body[1 << 20]; FILE *o = fdopen(3, "w");
  fputs("{\"ready\":true}\n", o); fflush(o);
  while (fgets(line, sizeof line, stdin)) { char *p = strstr(line, "\"length\":");
    long n = p ? atol(p + 9) : 0; if (n < 0 || n > (long)sizeof body) return 1;
    if (n && fread(body, 1, n, stdin) != (size_t)n) return 0;
    fprintf(o, "{\"status\":200,\"length\":%ld}\n", n); fwrite(body, 1, n, o); fflush(o); }
  return 0; }
C
fi
cc -O2 -o "$cworker" "$src"

subjects=(nginx worker-c python3-worker python3-serializing python3-http)
declare -A port
port[nginx]=$ngx_port
start() { # subject → starts it, sets port[subject]
  local p; p=$(free_port); port[$1]=$p
  local tmp; tmp=$(mktemp -d)
  case $1 in
    worker-c)
      (mode=worker workers="${WORKERS:-auto}" PORT="$p" metrics_port=0 TMPDIR="$tmp" "$BIN" -- "$cworker" 2>/dev/null) & ;;
    python3-worker)
      (cd "$ROOT/template/python3" && mode=worker workers="${WORKERS:-auto}" PORT="$p" metrics_port=0 TMPDIR="$tmp" "$BIN" -- python3 index.py 2>/dev/null) & ;;
    python3-serializing)
      (cd "$ROOT/template/python3" && mode=serializing cgi_response=true PORT="$p" metrics_port=0 TMPDIR="$tmp" "$BIN" -- python3 index.py 2>/dev/null) & ;;
    python3-http)
      local up; up=$(free_port)
      (cd "$ROOT/template/python3-http" && mode=http upstream_url="http://127.0.0.1:$up" port="$up" PORT="$p" metrics_port=0 TMPDIR="$tmp" "$BIN" -- python3 index.py 2>/dev/null) & ;;
  esac
  pids+=($!)
  wait_port "$p"
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/_/health")" = 200 ] && return 0
    sleep 0.02
  done
  echo "$1 never became healthy" >&2; return 1
}
for s in "${subjects[@]:1}"; do start "$s"; done
for s in "${subjects[@]}"; do
  got=$(curl -s -d hello "http://127.0.0.1:${port[$s]}/")
  echo "$s answers: $got" >&2
done

declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for s in "${subjects[@]}"; do
    for c in 1 16; do
      wrk -t1 -c$c -d"${DURATION}s" --latency -s "$OUT/post.lua" "http://127.0.0.1:${port[$s]}/" > "$OUT/worker-$s-$c.txt" 2>&1 || true
      runs[$s,$c,rps]+=" $(rps "$OUT/worker-$s-$c.txt")"
      runs[$s,$c,p50]+=" $(p50_us "$OUT/worker-$s-$c.txt")"
    done
  done
done
printf '\n%-22s %12s %10s %12s %10s\n' subject "c1 req/s" "c1 p50 us" "c16 req/s" "c16 p50 us"
declare -A m
for s in "${subjects[@]}"; do
  for c in 1 16; do
    # shellcheck disable=SC2086 # the list of figures is meant to split
    m[$s,$c,rps]=$(med ${runs[$s,$c,rps]})
    # shellcheck disable=SC2086
    m[$s,$c,p50]=$(med ${runs[$s,$c,p50]})
  done
  printf '%-22s %12s %10s %12s %10s\n' "$s" "${m[$s,1,rps]}" "${m[$s,1,p50]}" "${m[$s,16,rps]}" "${m[$s,16,p50]}"
done
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo
for c in 1 16; do
  echo "c$c: python3 worker / serializing  = $(ratio "${m[python3-worker,$c,rps]}" "${m[python3-serializing,$c,rps]}")x   (target >= 50)"
  echo "c$c: python3 worker / python3-http = $(ratio "${m[python3-worker,$c,rps]}" "${m[python3-http,$c,rps]}")x   (target >= 0.8)"
done
echo "c1: p50 added by the watchdog to a C worker over nginx direct = $(python3 -c "print(round(${m[worker-c,1,p50]} - ${m[nginx,1,p50]}, 1))") us   (target <= 50)"
echo "(medians of $ROUNDS interleaved rounds of ${DURATION}s; binary $BIN, $(stat -c %s "$BIN") bytes; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg))"
