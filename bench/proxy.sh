#!/usr/bin/env bash
# http-mode proxy overhead: wrk against a trivial fast upstream (nginx returning a 2-byte
# body), directly and through the watchdog, in the same run.
# Usage: bench/proxy.sh   (BENCH_SECONDS=5 by default)
source "$(dirname "$0")/common.sh"
command -v nginx >/dev/null || { echo "installing nginx" >&2; apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
up=$(free_port); port=$(free_port)
mkdir -p "$OUT/nginx/logs"
cat > "$OUT/nginx/nginx.conf" <<CONF
daemon off; worker_processes 1; error_log stderr error; pid $OUT/nginx/nginx.pid;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up; location / { return 200 "ok"; } } }
CONF
mode=http upstream_url="http://127.0.0.1:$up" PORT=$port metrics_port=0 \
  "$BIN" -- "$NGINX" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" 2>"${PROXY_LOG:-$OUT/proxy-watchdog.log}" & pid=$!
wait_port "$port"; wait_port "$up"
until curl -sf "http://127.0.0.1:$port/_/health" >/dev/null; do sleep 0.01; done
ROUNDS=${BENCH_ROUNDS:-3}
echo "== http mode: nginx upstream (2-byte body), $ROUNDS interleaved rounds of ${DURATION}s, medians"
med() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
wrk -t2 -c16 -d1s "http://127.0.0.1:$port/" >/dev/null   # warm the pool
D16=(); P16=(); DL=(); PL=(); D1=(); P1=()
for r in $(seq 1 "$ROUNDS"); do
  wrk -t2 -c16 -d"${DURATION}s" "http://127.0.0.1:$up/" > "$OUT/direct-16.txt"
  wrk -t2 -c16 -d"${DURATION}s" "http://127.0.0.1:$port/" > "$OUT/proxy-16.txt"
  wrk -t1 -c1 -d"${DURATION}s" --latency "http://127.0.0.1:$up/" > "$OUT/direct-1.txt"
  wrk -t1 -c1 -d"${DURATION}s" --latency "http://127.0.0.1:$port/" > "$OUT/proxy-1.txt"
  D16+=("$(rps "$OUT/direct-16.txt")"); P16+=("$(rps "$OUT/proxy-16.txt")")
  DL+=("$(p50_us "$OUT/direct-1.txt")"); PL+=("$(p50_us "$OUT/proxy-1.txt")")
  D1+=("$(rps "$OUT/direct-1.txt")"); P1+=("$(rps "$OUT/proxy-1.txt")")
  echo "round $r: 16c direct=${D16[-1]} proxy=${P16[-1]} req/s; 1c p50 direct=${DL[-1]}us proxy=${PL[-1]}us"
done
d16=$(med "${D16[@]}"); p16=$(med "${P16[@]}"); dl=$(med "${DL[@]}"); pl=$(med "${PL[@]}")
echo "16 connections: direct=${d16} req/s  through watchdog=${p16} req/s  ratio=$(pct "$p16" "$d16")%  (target >= 35%)"
echo "1 connection: p50 direct=${dl}us  through watchdog=${pl}us  added=$(python3 -c "print(round($pl-$dl,1))")us  (target <= 25us)"
echo "1 connection: direct=$(med "${D1[@]}") req/s  through watchdog=$(med "${P1[@]}") req/s"
echo "watchdog RSS after load: $(rss_kb $pid) kB, peak $(hwm_kb $pid) kB  (target <= 8192 kB)"
kill "$pid"; wait "$pid" || true
