#!/usr/bin/env bash
# Two builds side by side, in interleaved rounds: http mode in front of nginx (`return 200`,
# 16 connections: req/s; 1 connection: p50 and p99) and fork mode with `cat` (16
# connections), each figure for A and then B. For "did this change cost anything":
#   bench/ab.sh OLD_BINARY NEW_BINARY      (BENCH_SECONDS=3, BENCH_ROUNDS=3)
# Build the old one from a worktree: git worktree add ../old REV && (cd ../old &&
# cargo build --release --target x86_64-unknown-linux-musl).
BENCH_NO_BUILD=1 source "$(dirname "$0")/common.sh"
A=${1:?usage: bench/ab.sh A_BINARY B_BINARY}; B=${2:?usage: bench/ab.sh A_BINARY B_BINARY}
DURATION=${BENCH_SECONDS:-3}; ROUNDS=${BENCH_ROUNDS:-3}
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
up=$(free_port); mkdir -p "$OUT/ab-nginx/logs"
cat > "$OUT/ab-nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; error_log stderr error; pid $OUT/ab-nginx/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { return 200 "ok"; } } }
CONF
"$(command -v nginx || echo /usr/sbin/nginx)" -p "$OUT/ab-nginx" -c "$OUT/ab-nginx/nginx.conf" & ngx=$!
pids=($ngx)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
start() { # binary mode port → pid
  local tmp; tmp=$(mktemp -d)
  if [ "$2" = http ]; then
    mode=http upstream_url="http://127.0.0.1:$up" PORT=$3 metrics_port=0 TMPDIR=$tmp "$1" -- sleep 1000000 2>/dev/null &
  else
    PORT=$3 metrics_port=0 TMPDIR=$tmp "$1" -- cat 2>/dev/null &
  fi
  pids+=($!); wait_port "$3"
}
ha=$(free_port); hb=$(free_port); fa=$(free_port); fb=$(free_port)
wait_port "$up"; start "$A" http "$ha"; start "$B" http "$hb"; start "$A" fork "$fa"; start "$B" fork "$fb"
for p in $ha $hb; do wrk -t1 -c16 -d1s "http://127.0.0.1:$p/" >/dev/null; done
declare -A res
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    h=$ha; f=$fa; [ $side = B ] && { h=$hb; f=$fb; }
    wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$h/" > "$OUT/ab.$side.c16"
    res[$side.c16]+=" $(rps "$OUT/ab.$side.c16")"
    wrk -t1 -c1 -d"${DURATION}s" --latency "http://127.0.0.1:$h/" > "$OUT/ab.$side.c1"
    res[$side.p50]+=" $(p50_us "$OUT/ab.$side.c1")"
    res[$side.p99]+=" $(awk '/^ +99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000}}' "$OUT/ab.$side.c1")"
    wrk -t1 -c16 -d"${DURATION}s" "http://127.0.0.1:$f/" > "$OUT/ab.$side.fork"
    res[$side.fork]+=" $(rps "$OUT/ab.$side.fork")"
  done
done
echo "== A: $A"; echo "== B: $B"; echo "   ($ROUNDS interleaved rounds of ${DURATION}s, medians; every round's figure in brackets)"
for k in c16:"http 16 conns req/s" p50:"http 1 conn p50 us" p99:"http 1 conn p99 us" fork:"fork cat 16 conns req/s"; do
  key=${k%%:*}; label=${k#*:}
  # shellcheck disable=SC2086 # the lists are meant to split
  printf '%-26s A %10s [%s]   B %10s [%s]\n' "$label" "$(med ${res[A.$key]})" "${res[A.$key]# }" "$(med ${res[B.$key]})" "${res[B.$key]# }"
done
