#!/usr/bin/env python3
"""The function behind tests/cloudevents.rs, in every mode (standard library only):
fork modes read the body on stdin, file mode from the file named by the last argument,
and with --worker it speaks the worker protocol (docs/worker-protocol.md).

What it does is the event's type (CE_TYPE); a plain request gets the report:
  test.echo     a JSON report (application/json): the CE_*, TRACEPARENT, TRACESTATE and
                Http_Content_* variables it got, the data (base64), the input file's name
  test.silent   no output
  test.fail     prints a line, then fails (exit 3; a worker answers 500)
  test.poison   Status: 400 (a CGI header; a worker's status)
  test.typed    a reply with its own Ce-Type and Ce-Source headers
  test.slow     sleeps 30 s
Each run appends CE_ID (or "plain") to the file FN_RUN_LOG names, if set.
"""

import base64
import json
import os
import sys
import time


def run(env, data, input_file=None):
    """(status, [(header, value)], body) for one request."""
    log = os.environ.get("FN_RUN_LOG")
    if log:
        with open(log, "a") as f:
            f.write(env.get("CE_ID", "plain") + "\n")
    kind = env.get("CE_TYPE", "")
    if kind == "test.silent":
        return 200, [], b""
    if kind == "test.fail":
        return 500, [], b"failing on purpose\n"
    if kind == "test.poison":
        return 400, [("Content-Type", "text/plain")], b"poison event, dropped\n"
    if kind == "test.typed":
        return 200, [("Content-Type", "text/plain"), ("Ce-Type", "com.example.custom"),
                     ("Ce-Source", "/custom/source")], b"typed"
    if kind == "test.slow":
        time.sleep(30)
        return 200, [], b"late"
    seen = {k: v for k, v in env.items()
            if k.startswith("CE_") or k in ("TRACEPARENT", "TRACESTATE")
            or k.startswith("Http_Content_")}
    report = {"env": seen, "data_b64": base64.b64encode(data).decode(),
              "input": os.path.basename(input_file) if input_file else None}
    return 200, [("Content-Type", "application/json")], json.dumps(report).encode()


def fork():
    if len(sys.argv) > 1:
        with open(sys.argv[-1], "rb") as f:
            data = f.read()
        status, headers, body = run(dict(os.environ), data, sys.argv[-1])
    else:
        status, headers, body = run(dict(os.environ), sys.stdin.buffer.read())
    # cgi_response=true: a header block first, then the body.
    head = "Status: %d\n" % status + "".join("%s: %s\n" % h for h in headers) + "\n"
    sys.stdout.buffer.write(head.encode() + body)
    sys.stdout.flush()
    return 3 if status == 500 else 0


def worker():
    out = os.fdopen(3, "wb")
    out.write(b'{"ready":true}\n')
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        req = json.loads(line)
        data = stdin.read(req["length"])
        status, headers, body = run(req["env"], data)
        head = {"status": status, "headers": [list(h) for h in headers], "length": len(body)}
        out.write(json.dumps(head).encode() + b"\n" + body)
        out.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(worker())
    sys.exit(fork())
