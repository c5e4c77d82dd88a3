#!/usr/bin/env bash
# The http-mode templates against the server stacks of OpenFaaS's own templates, on the host,
# in one run and interleaved rounds (POST "hello", echoed):
#   python3-http   template/python3-http behind fwatchdog
#   flask-waitress a Flask app under waitress (upstream's python3-http stack), behind of-watchdog
#   node           template/node behind fwatchdog
#   express        an express app (upstream's node template stack), behind of-watchdog
# Prints req/s and p50 at 1 and 16 connections and the ratios issue 14 asks for.
#   bench/templates.sh     (BENCH_SECONDS=3, BENCH_ROUNDS=2; PEER_OFWATCHDOG names of-watchdog)
# Needs python3-flask and python3-waitress (Debian) and express (npm); installs them when
# missing. Without of-watchdog it measures the fwatchdog side only and says so.
source "$(dirname "$0")/common.sh"
ROUNDS=${BENCH_ROUNDS:-2}; DURATION=${BENCH_SECONDS:-3}
OFW=${PEER_OFWATCHDOG:-$ROOT/../shared/peers/of-watchdog}
[ -x "$OFW" ] || { echo "no of-watchdog (set PEER_OFWATCHDOG): measuring the fwatchdog templates only" >&2; OFW=; }
# Debian's python (the packages are Debian's), which may not be the python3 first on PATH.
DEBPY=/usr/bin/python3
"$DEBPY" -c 'import flask, waitress' 2>/dev/null || apt-get install -y -qq python3-flask python3-waitress >/dev/null
APPS=$OUT/template-apps; mkdir -p "$APPS"
[ -d "$APPS/node_modules/express" ] || (cd "$APPS" && npm install --silent --no-audit --no-fund express@4 >/dev/null)
cat > "$APPS/flask_app.py" <<'PY'
# The shape of upstream's python3-http template: Flask under waitress, echoing the body.
from flask import Flask, request
from waitress import serve
app = Flask(__name__)
@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def main(path):
    return request.get_data(), 200
serve(app, host="127.0.0.1", port=5000)
PY
cat > "$APPS/express_app.js" <<'JS'
// The shape of upstream's node template: express with a raw body parser, echoing the body.
const express = require('express');
const app = express();
app.use(express.raw({ type: () => true }));
app.all('*', (req, res) => res.status(200).send(req.body));
app.listen(3000, '127.0.0.1');
JS
cat > "$OUT/post.lua" <<'LUA'
wrk.method = "POST"; wrk.body = "hello"
LUA
pid=
trap '[ -n "$pid" ] && kill -- -"$pid" 2>/dev/null; wait 2>/dev/null' EXIT

start() { # subject port → starts it in its own process group, waits for 200 on POST
  local tmp; tmp=$(mktemp -d)
  case $1 in
    python3-http)
      (cd "$ROOT/template/python3-http" && exec setsid env mode=http upstream_url=http://127.0.0.1:5000 PORT="$2" metrics_port=0 TMPDIR="$tmp" "$BIN" -- python3 index.py >/dev/null 2>&1) & ;;
    node)
      (cd "$ROOT/template/node" && exec setsid env mode=http upstream_url=http://127.0.0.1:3000 PORT="$2" metrics_port=0 TMPDIR="$tmp" "$BIN" -- node index.js >/dev/null 2>&1) & ;;
    flask-waitress)
      (cd "$APPS" && exec setsid env mode=http upstream_url=http://127.0.0.1:5000 port="$2" fprocess="$DEBPY flask_app.py" "$OFW" >/dev/null 2>&1) & ;;
    express)
      (cd "$APPS" && exec setsid env mode=http upstream_url=http://127.0.0.1:3000 port="$2" fprocess="node express_app.js" "$OFW" >/dev/null 2>&1) & ;;
  esac
  pid=$!
  for _ in $(seq 1 500); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -d hello "http://127.0.0.1:$2/")" = 200 ] && return 0
    sleep 0.02
  done
  echo "$1 never answered" >&2; return 1
}
stop() { kill -- -"$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; sleep 0.3; }
p50_of() { awk '$1 == "50%" { v = $2; if (v ~ /ms$/) { sub(/ms/, "", v); v *= 1000 } else if (v ~ /us$/) { sub(/us/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000000 } print v }' "$1"; }

subjects=(python3-http node)
[ -n "$OFW" ] && subjects=(python3-http flask-waitress node express)
declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for s in "${subjects[@]}"; do
    p=$(free_port)
    start "$s" "$p" || { stop; continue; }
    wrk -t1 -c4 -d1s -s "$OUT/post.lua" "http://127.0.0.1:$p/" >/dev/null 2>&1
    for c in 1 16; do
      wrk -t1 -c$c -d"${DURATION}s" --latency -s "$OUT/post.lua" "http://127.0.0.1:$p/" > "$OUT/tpl-$s-$c.txt" 2>&1 || true
      runs[$s,$c,rps]+=" $(rps "$OUT/tpl-$s-$c.txt")"
      runs[$s,$c,p50]+=" $(p50_of "$OUT/tpl-$s-$c.txt")"
    done
    stop
  done
done
printf '\n%-16s %12s %10s %12s %10s\n' subject "c1 req/s" "c1 p50 us" "c16 req/s" "c16 p50 us"
declare -A m
for s in "${subjects[@]}"; do
  for c in 1 16; do
    # shellcheck disable=SC2086 # the list of figures is meant to split
    m[$s,$c,rps]=$(med ${runs[$s,$c,rps]:-0})
    # shellcheck disable=SC2086
    m[$s,$c,p50]=$(med ${runs[$s,$c,p50]:-0})
  done
  printf '%-16s %12s %10s %12s %10s\n' "$s" "${m[$s,1,rps]}" "${m[$s,1,p50]}" "${m[$s,16,rps]}" "${m[$s,16,p50]}"
done
echo
echo "python3-http p50 at 1 connection = ${m[python3-http,1,p50]} us   (target <= 1000)"
if [ -n "$OFW" ]; then
  ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
  echo "c16: python3-http / flask+waitress behind of-watchdog = $(ratio "${m[python3-http,16,rps]}" "${m[flask-waitress,16,rps]}")x   (target >= 2)"
  echo "c16: node / express behind of-watchdog                = $(ratio "${m[node,16,rps]}" "${m[express,16,rps]}")x   (target >= 2)"
fi
echo "(medians of $ROUNDS interleaved rounds of ${DURATION}s; binary $BIN; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg))"
