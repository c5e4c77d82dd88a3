#!/usr/bin/env python3
"""python3-cloudevents template entry point: a worker of fwatchdog's mode=worker
(docs/worker-protocol.md) with cloudevents=true.

The handler is imported once, then the worker answers requests one at a time: a head line
of JSON and the body on stdin, the answer's head line and body on descriptor 3. The
watchdog has decoded each CloudEvent: its attributes are the CE_* entries of the head's
env, the body is its data. handle(event) returns the reply's data (see fwatchdog_events);
the watchdog makes it a reply event (200) when the sender asked for one, else a 202.

Answers: the reply (200), an empty one for no reply, 400 for DropEvent and for a request
that is not a CloudEvent, 500 for any other exception (the broker retries).
"""

import json
import os
import sys
import traceback

from fwatchdog_events import DropEvent, NotAnEvent, event_from_head, raw_body_enabled, reply_of


def answer(out, status, headers, body):
    head = {"status": status, "headers": [list(h) for h in headers], "length": len(body)}
    out.write(json.dumps(head).encode("utf-8") + b"\n" + body)
    out.flush()


def text(message):
    return [("Content-Type", "text/plain; charset=utf-8")], (message + "\n").encode("utf-8")


def handle_one(handler, req, body):
    try:
        event = event_from_head(req.get("env") or {}, body, raw_body_enabled())
        result = handler.handle(event)
        headers, payload = reply_of(result, os.environ.get("content_type"))
        return 200, headers, payload
    except (DropEvent, NotAnEvent) as e:
        return (400,) + text(str(e))
    except Exception as e:
        traceback.print_exc()
        return (500,) + text("function handler failed: %s (see the function's logs)" % type(e).__name__)


def main():
    out = os.fdopen(3, "wb")
    # Imported before the ready line: a handler that cannot be imported never takes a request,
    # and the watchdog logs each failed start.
    from function import handler

    out.write(b'{"ready":true}\n')
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0  # the watchdog closed stdin: stop
        req = json.loads(line)
        body = stdin.read(req["length"])
        answer(out, *handle_one(handler, req, body))


if __name__ == "__main__":
    sys.exit(main())
