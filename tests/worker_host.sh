#!/bin/sh
# Host-level checks of the worker-mode templates (template/python3, template/node-classic)
# and of examples/worker-c, under the real watchdog binary: real processes on loopback, no
# Docker (tests/containers/run.py checks the images). A part whose runtime (python3, node,
# cc) is missing is skipped with a message; without curl the whole script is skipped.
#
#   sh tests/worker_host.sh                                   # builds target/debug/fwatchdog
#   FWATCHDOG_BIN=target/release/fwatchdog sh tests/worker_host.sh
#
# FWATCHDOG_HOST_PORT_BASE (default 18380) is the first port tried. Exits 1 on any failure.
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if ! command -v curl >/dev/null 2>&1; then
	echo "worker_host: SKIPPED: no curl"
	exit 0
fi
if [ -n "${FWATCHDOG_BIN:-}" ]; then
	BIN=$FWATCHDOG_BIN
else
	cargo build --quiet --bin fwatchdog
	BIN=$ROOT/target/debug/fwatchdog
fi
case "$BIN" in /*) ;; *) BIN=$ROOT/$BIN ;; esac

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fwatchdog-worker-host.XXXXXX")
PIDS=''
NEXT_PORT=${FWATCHDOG_HOST_PORT_BASE:-18380}
PASSED=0
FAILED=0
SKIPPED=''

cleanup() {
	for p in $PIDS; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in $PIDS; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() {
	PASSED=$((PASSED + 1))
	echo "PASS $1"
}
fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL $1: $2"
}

# start_wd DIR LOG [VAR=VALUE]...: the watchdog in DIR with the settings given; sets PORT
# and WD_PID once /_/health answers 200. Ports in use are skipped.
start_wd() {
	dir=$1 log=$2
	shift 2
	tries=0
	while :; do
		PORT=$NEXT_PORT
		NEXT_PORT=$((NEXT_PORT + 1))
		(cd "$dir" && exec env port="$PORT" metrics_port=0 suppress_lock=true "$@" "$BIN") >"$log" 2>&1 &
		WD_PID=$!
		PIDS="$PIDS $WD_PID"
		i=0
		while [ $i -lt 100 ]; do
			code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/_/health" 2>/dev/null || true)
			[ "$code" = 200 ] && return 0
			kill -0 "$WD_PID" 2>/dev/null || break
			sleep 0.1
			i=$((i + 1))
		done
		kill -TERM "$WD_PID" 2>/dev/null || true
		wait "$WD_PID" 2>/dev/null || true
		tries=$((tries + 1))
		if grep -qi 'in use' "$log" && [ $tries -lt 20 ]; then
			continue
		fi
		echo "watchdog in $dir ($*) did not become healthy; its log:" >&2
		tail -n 20 "$log" >&2
		return 1
	done
}

stop_wd() {
	kill -TERM "$WD_PID" 2>/dev/null || true
	wait "$WD_PID" 2>/dev/null || true
}

# call METHOD PATH BODYFILE [CURL ARGS]...: the status; the body in $TMP/out, the head in $TMP/head.
call() {
	method=$1 path=$2 file=$3
	shift 3
	curl -s -X "$method" --data-binary "@$file" -o "$TMP/out" -D "$TMP/head" -w '%{http_code}' \
		-H 'Content-Type: text/plain' "$@" "http://127.0.0.1:$PORT$path" || echo "curl-failed"
}

# post TEXT [CURL ARGS]...: POST / with TEXT as the body.
post() {
	printf '%s' "$1" >"$TMP/in"
	shift
	call POST / "$TMP/in" "$@"
}

# header NAME (lower case): its first value in the last response.
header() {
	tr -d '\r' <"$TMP/head" | awk -v n="$1" 'tolower(substr($0, 1, length(n) + 1)) == n ":" { sub(/^[^:]*: */, ""); print; exit }'
}

body() {
	cat "$TMP/out"
}

# wait_log LOG TEXT: true once TEXT is in LOG (5 s at most).
wait_log() {
	i=0
	while [ $i -lt 50 ]; do
		grep -qF "$2" "$1" && return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# expect NAME GOT WANT
expect() {
	if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$2', expected '$3'"; fi
}

head -c 1048576 /dev/urandom >"$TMP/blob"
printf 'caf\351 \377' >"$TMP/latin1"
NOT_UTF8_PY='request body is not valid UTF-8 (byte 3); send text, or set RAW_BODY=true to receive the body as bytes'
NOT_UTF8_JS='request body is not valid UTF-8; send text, or set RAW_BODY=true to receive the body as a Buffer'

# ---------------------------------------------------------------------------- python3

python_checks() {
	tpl=$TMP/python3
	cp -R "$ROOT/template/python3" "$tpl"
	start_wd "$tpl" "$TMP/py.log" mode=worker fprocess="python3 index.py" workers=2

	expect "python3 worker: UTF-8 text echoes" "$(post 'héllo ✓'):$(body)" "200:héllo ✓"
	expect "python3 worker: str result is text/plain" "$(header content-type)" "text/plain; charset=utf-8"
	expect "python3 worker: non-UTF-8 body is 400" "$(call POST / "$TMP/latin1"):$(body)" "400:$NOT_UTF8_PY"
	expect "python3 worker: the next request is 200" "$(post again):$(body)" "200:again"
	stop_wd

	start_wd "$tpl" "$TMP/py-raw.log" mode=worker fprocess="python3 index.py" workers=1 RAW_BODY=true
	code=$(call POST / "$TMP/blob" -H 'Content-Type: application/octet-stream')
	if [ "$code" = 200 ] && cmp -s "$TMP/out" "$TMP/blob"; then
		pass "python3 worker: RAW_BODY=true echoes 1 MiB of random bytes exactly"
	else
		fail "python3 worker: RAW_BODY=true echoes 1 MiB of random bytes exactly" "status $code, $(wc -c <"$TMP/out") bytes back"
	fi
	stop_wd

	chk=$TMP/python3-check
	cp -R "$ROOT/template/python3" "$chk"
	cat >"$chk/function/handler.py" <<'EOF'
import json
import os

PID = os.getpid()
served = 0


def handle(req):
    global served
    served += 1
    print("worker-check: request %d in pid %d" % (served, PID))
    if req == "boom":
        raise RuntimeError("boom on purpose")
    if req == "env":
        return sorted(k for k in os.environ if k.startswith("Http_X_") and k != "Http_X_Call_Id")
    if req == "created":
        return {"statusCode": 201, "body": {"pid": PID}, "headers": {"X-Served": str(served)}}
    return "%d %d" % (PID, served)
EOF
	start_wd "$chk" "$TMP/py-check.log" mode=worker fprocess="python3 index.py" workers=1
	post a >/dev/null
	first=$(body)
	post b >/dev/null
	second=$(body)
	expect "python3 worker: one process serves request after request" "${second% *} ${first#* } ${second#* }" "${first% *} 1 2"
	if wait_log "$TMP/py-check.log" "worker-check: request 2 in pid"; then
		pass "python3 worker: print() reaches the watchdog's log"
	else
		fail "python3 worker: print() reaches the watchdog's log" "not in the log"
	fi
	expect "python3 worker: an exception is a 500" "$(post boom):$(body)" "500:function handler failed: RuntimeError (see the function's logs)"
	if wait_log "$TMP/py-check.log" "RuntimeError: boom on purpose"; then
		pass "python3 worker: the traceback is in the log"
	else
		fail "python3 worker: the traceback is in the log" "not in the log"
	fi
	expect "python3 worker: the same process serves the next request" "$(post c):$(body)" "200:${first% *} 4"
	expect "python3 worker: dict result sets status and headers" "$(post created):$(header x-served)" "201:5"
	post env -H 'X-First: 1' >/dev/null
	expect "python3 worker: Http_* of the request" "$(body)" '["Http_X_First"]'
	expect "python3 worker: Http_* of the last request are gone" "$(post env):$(body)" "200:[]"
	stop_wd

	# The old way still works with the same index.py: a process per request.
	start_wd "$chk" "$TMP/py-serializing.log" mode=serializing cgi_response=true fprocess="python3 index.py"
	expect "python3 serializing: a fresh process per request" "$(post a):$(body | cut -d' ' -f2)" "200:1"
	expect "python3 serializing: again a fresh one" "$(post a):$(body | cut -d' ' -f2)" "200:1"
	expect "python3 serializing: an exception is a 500" "$(post boom):$(body)" "500:function handler failed: RuntimeError (see the function's logs)"
	expect "python3 serializing: non-UTF-8 body is 400" "$(call POST / "$TMP/latin1"):$(body)" "400:$NOT_UTF8_PY"
	expect "python3 serializing: dict result sets status and headers" "$(post created):$(header x-served)" "201:1"
	stop_wd
}

# ---------------------------------------------------------------------------- node-classic

node_checks() {
	tpl=$TMP/node-classic
	cp -R "$ROOT/template/node-classic" "$tpl"
	start_wd "$tpl" "$TMP/node.log" mode=worker fprocess="node index.js" workers=2
	expect "node-classic: async handler's returned string echoes" "$(post 'héllo ✓'):$(body)" "200:héllo ✓"
	expect "node-classic: string result is text/plain" "$(header content-type)" "text/plain; charset=utf-8"
	expect "node-classic: non-UTF-8 body is 400" "$(call POST / "$TMP/latin1"):$(body)" "400:$NOT_UTF8_JS"
	expect "node-classic: the next request is 200" "$(post again):$(body)" "200:again"
	stop_wd

	start_wd "$tpl" "$TMP/node-raw.log" mode=worker fprocess="node index.js" workers=1 RAW_BODY=true
	code=$(call POST / "$TMP/blob" -H 'Content-Type: application/octet-stream')
	if [ "$code" = 200 ] && cmp -s "$TMP/out" "$TMP/blob"; then
		pass "node-classic: RAW_BODY=true echoes 1 MiB of random bytes exactly"
	else
		fail "node-classic: RAW_BODY=true echoes 1 MiB of random bytes exactly" "status $code, $(wc -c <"$TMP/out") bytes back"
	fi
	stop_wd

	chk=$TMP/node-check
	cp -R "$ROOT/template/node-classic" "$chk"
	cat >"$chk/function/handler.js" <<'EOF'
'use strict';
let served = 0;
module.exports = (context, callback) => {
  served++;
  console.log(`worker-check: request ${served} in pid ${process.pid}`);
  if (context === 'boom') return callback(new TypeError('boom on purpose'));
  if (context === 'later') {
    setTimeout(() => callback(null, `later ${served}`), 50);
    return undefined;
  }
  if (context === 'async') return (async () => ({ served, how: 'async' }))();
  if (context === 'env') return callback(null, Object.keys(process.env).filter((k) => k.startsWith('Http_X_') && k !== 'Http_X_Call_Id'));
  return callback(null, { pid: process.pid, served });
};
EOF
	start_wd "$chk" "$TMP/node-check.log" mode=worker fprocess="node index.js" workers=1
	post a >/dev/null
	first=$(body)
	expect "node-classic: callback object is JSON and a newline" "$(header content-type):$(od -An -c "$TMP/out" | tr -d ' \n' | tail -c 3)" 'application/json:}\n'
	pid=$(printf '%s' "$first" | sed 's/.*"pid":\([0-9]*\).*/\1/')
	expect "node-classic: one process serves request after request" "$(post b):$(body)" "200:{\"pid\":$pid,\"served\":2}"
	expect "node-classic: a callback called later" "$(post later):$(body)" "200:later 3"
	expect "node-classic: a returned promise's value" "$(post async):$(body)" '200:{"served":4,"how":"async"}'
	expect "node-classic: callback(err) is a 500" "$(post boom):$(body)" "500:function handler failed: TypeError (see the function's logs)"
	expect "node-classic: the same process serves the next request" "$(post c):$(body)" "200:{\"pid\":$pid,\"served\":6}"
	if wait_log "$TMP/node-check.log" "worker-check: request 6 in pid $pid"; then
		pass "node-classic: console.log reaches the watchdog's log"
	else
		fail "node-classic: console.log reaches the watchdog's log" "not in the log"
	fi
	post env -H 'X-First: 1' >/dev/null
	expect "node-classic: Http_* of the request" "$(body)" '["Http_X_First"]'
	expect "node-classic: Http_* of the last request are gone" "$(post env):$(body)" '200:[]'
	stop_wd
}

# ---------------------------------------------------------------------------- worker-c

c_checks() {
	cdir=$TMP/worker-c
	mkdir -p "$cdir"
	if ! cc -O2 -Wall -Wextra -Werror -o "$cdir/worker" "$ROOT/examples/worker-c/worker.c" 2>"$TMP/cc.log"; then
		fail "worker-c: builds with cc -O2 -Wall -Wextra -Werror" "$(cat "$TMP/cc.log")"
		return
	fi
	pass "worker-c: builds with cc -O2 -Wall -Wextra -Werror"
	start_wd "$cdir" "$TMP/c.log" mode=worker fprocess=./worker workers=1
	expect "worker-c: the body comes back reversed" "$(post 'hello world'):$(body)" "200:dlrow olleh"
	expect "worker-c: content-type text/plain" "$(header content-type)" "text/plain"
	pid=$(header x-worker-pid)
	code=$(call POST /a%22length%22:9 "$TMP/blob" -H 'Content-Type: application/octet-stream' -H 'X-Trick: "length":3')
	cp "$TMP/out" "$TMP/blob.rev"
	code2=$(call POST / "$TMP/blob.rev" -H 'Content-Type: application/octet-stream')
	if [ "$code:$code2" = 200:200 ] && cmp -s "$TMP/out" "$TMP/blob" && ! cmp -s "$TMP/blob.rev" "$TMP/blob"; then
		pass "worker-c: 1 MiB of random bytes, reversed twice, is itself"
	else
		fail "worker-c: 1 MiB of random bytes, reversed twice, is itself" "status $code $code2"
	fi
	expect "worker-c: one process serves the three requests" "$(header x-worker-pid):$(header x-worker-requests)" "$pid:3"
	: >"$TMP/empty"
	expect "worker-c: an empty body" "$(call POST / "$TMP/empty"):$(wc -c <"$TMP/out" | tr -d ' ')" "200:0"
	stop_wd
}

if command -v python3 >/dev/null 2>&1; then python_checks; else SKIPPED="$SKIPPED python3"; fi
if command -v node >/dev/null 2>&1; then node_checks; else SKIPPED="$SKIPPED node"; fi
if command -v cc >/dev/null 2>&1; then c_checks; else SKIPPED="$SKIPPED cc"; fi

echo
echo "worker_host: $PASSED passed, $FAILED failed"
for s in $SKIPPED; do
	echo "worker_host: SKIPPED the $s part: no $s in PATH"
done
[ "$FAILED" -eq 0 ]
