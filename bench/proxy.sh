#!/usr/bin/env bash
# http-mode proxy overhead: wrk against a trivial fast upstream (nginx returning a 2-byte
# body), directly and through the watchdog, in the same run. A second watchdog in front of
# the same nginx runs with another busy_poll (off by default), to show what polling before
# sleeping buys and costs. The two watchdogs take turns going first: whichever runs right
# after the direct run measures some 20 % lower at 16 connections on a 2-core VM.
# Usage: bench/proxy.sh   (BENCH_SECONDS=5, BENCH_ROUNDS=4, BUSY_POLL=0 by default)
source "$(dirname "$0")/common.sh"
command -v nginx >/dev/null || { echo "installing nginx" >&2; apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
BUSY=${BUSY_POLL:-0}
up=$(free_port); port=$(free_port); bport=$(free_port)
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
# The second watchdog proxies to the same nginx; its own function is a placeholder.
mode=http upstream_url="http://127.0.0.1:$up" PORT=$bport metrics_port=0 busy_poll=$BUSY \
  "$BIN" -- sleep 1000000 2>"${PROXY_LOG:-$OUT/proxy-busy-watchdog.log}" & bpid=$!
wait_port "$bport"
until curl -sf "http://127.0.0.1:$bport/_/health" >/dev/null; do sleep 0.01; done
ROUNDS=${BENCH_ROUNDS:-4}
echo "== http mode: nginx upstream (2-byte body), $ROUNDS interleaved rounds of ${DURATION}s, medians"
# wrk into $2 against port $3 with args $4...; records the watchdog $1's CPU µs per request
run() {
  local wd=$1 out=$2 p=$3; shift 3
  local t0; t0=$(cpu_ticks "$wd")
  wrk "$@" "http://127.0.0.1:$p/" > "$out"
  local used=$(( $(cpu_ticks "$wd") - t0 ))
  python3 -c "import sys; r=float(sys.argv[1])*$DURATION; print(round($used*10000/r,1) if r else 0)" "$(rps "$out")" > "$out.cpu"
}
wrk -t2 -c16 -d1s "http://127.0.0.1:$port/" >/dev/null   # warm the pools
wrk -t2 -c16 -d1s "http://127.0.0.1:$bport/" >/dev/null
D16=(); P16=(); B16=(); DL=(); PL=(); BL=(); PC=(); BC=()
for r in $(seq 1 "$ROUNDS"); do
  wrk -t2 -c16 -d"${DURATION}s" "http://127.0.0.1:$up/" > "$OUT/direct-16.txt"
  pair() {   # both watchdogs, in this round's order
    if (( r % 2 )); then run "$pid" "$OUT/proxy-$1.txt" "$port" "${@:2}"; run "$bpid" "$OUT/busy-$1.txt" "$bport" "${@:2}"
    else run "$bpid" "$OUT/busy-$1.txt" "$bport" "${@:2}"; run "$pid" "$OUT/proxy-$1.txt" "$port" "${@:2}"; fi
  }
  pair 16 -t2 -c16 -d"${DURATION}s"
  wrk -t1 -c1 -d"${DURATION}s" --latency "http://127.0.0.1:$up/" > "$OUT/direct-1.txt"
  pair 1 -t1 -c1 -d"${DURATION}s" --latency
  D16+=("$(rps "$OUT/direct-16.txt")"); P16+=("$(rps "$OUT/proxy-16.txt")"); B16+=("$(rps "$OUT/busy-16.txt")")
  DL+=("$(p50_us "$OUT/direct-1.txt")"); PL+=("$(p50_us "$OUT/proxy-1.txt")"); BL+=("$(p50_us "$OUT/busy-1.txt")")
  PC+=("$(cat "$OUT/proxy-1.txt.cpu")"); BC+=("$(cat "$OUT/busy-1.txt.cpu")")
  echo "round $r: 16c direct=${D16[-1]} watchdog=${P16[-1]} busy_poll=$BUSY:${B16[-1]} req/s;" \
       "1c p50 direct=${DL[-1]}us watchdog=${PL[-1]}us busy_poll=$BUSY:${BL[-1]}us"
done
d16=$(med "${D16[@]}"); p16=$(med "${P16[@]}"); b16=$(med "${B16[@]}")
dl=$(med "${DL[@]}"); pl=$(med "${PL[@]}"); bl=$(med "${BL[@]}")
echo "16 connections: direct=${d16} req/s  through watchdog=${p16} req/s  ratio=$(pct "$p16" "$d16")%  (target >= 35%)"
echo "16 connections, busy_poll=$BUSY: ${b16} req/s  ratio=$(pct "$b16" "$d16")%"
echo "1 connection: p50 direct=${dl}us  through watchdog=${pl}us  added=$(python3 -c "print(round($pl-$dl,1))")us  (target <= 25us)"
echo "1 connection, busy_poll=$BUSY: p50=${bl}us  added=$(python3 -c "print(round($bl-$dl,1))")us"
echo "1 connection: watchdog CPU per request: default=$(med "${PC[@]}")us  busy_poll=$BUSY: $(med "${BC[@]}")us"
echo "watchdog RSS after load: $(rss_kb $pid) kB, peak $(hwm_kb $pid) kB  (target <= 8192 kB)"
kill "$pid" "$bpid"; wait "$pid" "$bpid" || true
