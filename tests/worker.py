"""A test worker for mode=worker (see docs/worker-protocol.md), standard library only.

Usage: worker.py [--die-at-start] [--log PATH]

/echo      the body back, byte for byte; X-Echo-Head: the request head's method, path, query
/head      the request head as JSON
/pid       this worker's pid
/sleep?s=N sleeps N seconds (appending "start end pid" to --log), then answers "slept"
/exit      exits at once without answering (os._exit(7))
/print     prints to stdout and stderr, then answers "printed"
/garbage   writes a head line that is not JSON
/extra     answers "ok", then writes bytes past the answer's length
/forkwait  starts a grandchild that sleeps (marker in argv), then sleeps itself
"""

import json
import os
import subprocess
import sys
import time

args = sys.argv[1:]
if "--die-at-start" in args:
    print("worker: giving up before the ready line", file=sys.stderr, flush=True)
    sys.exit(5)
log = args[args.index("--log") + 1] if "--log" in args else None

out = os.fdopen(3, "wb")


def answer(body, status=200, headers=()):
    head = {"status": status, "headers": [list(h) for h in headers], "length": len(body)}
    out.write(json.dumps(head).encode() + b"\n" + body)
    out.flush()


out.write(b'{"ready":true}\n')
out.flush()
stdin = sys.stdin.buffer
while True:
    line = stdin.readline()
    if not line:
        break
    req = json.loads(line)
    body = stdin.read(req["length"])
    path = req["path"]
    query = dict(p.split("=", 1) for p in req["query"].split("&") if "=" in p)
    if path == "/echo":
        answer(body, headers=[("content-type", "application/octet-stream"),
                              ("x-echo-head", "%s %s %s" % (req["method"], path, req["query"]))])
    elif path == "/head":
        answer(json.dumps(req).encode(), headers=[("content-type", "application/json")])
    elif path == "/pid":
        answer(str(os.getpid()).encode())
    elif path == "/sleep":
        start = time.time()
        time.sleep(float(query.get("s", "1")))
        if log:
            with open(log, "a") as f:
                f.write("%f %f %d\n" % (start, time.time(), os.getpid()))
        answer(b"slept")
    elif path == "/exit":
        os._exit(7)
    elif path == "/print":
        print("hello from the worker's stdout", flush=True)
        print("and from its stderr", file=sys.stderr, flush=True)
        answer(b"printed")
    elif path == "/extra":
        out.write(b'{"length":2}\nokEXTRA{"length":5}\nSTALE')
        out.flush()
    elif path == "/garbage":
        out.write(b"this is not json\n")
        out.flush()
    elif path == "/forkwait":
        subprocess.Popen(["sh", "-c", "sleep 30; echo %s" % query.get("mark", "x")])
        time.sleep(30)
    else:
        answer(b"no such path", status=404)
