#!/usr/bin/env python3
"""python3-cloudevents template entry point: a worker of fwatchdog's mode=worker
(docs/worker-protocol.md) with cloudevents=true.

The handler is imported once, then the worker answers requests one at a time: a head line
of JSON and the body on stdin, the answer's head line and body on descriptor 3; what the
handler prints goes to the log. The watchdog has decoded each CloudEvent: its attributes
are the CE_* entries of the head's env, the body is its data. handle(event) returns the
reply's data (see fwatchdog_events); the watchdog makes it a reply event (200) when the
sender asked for one, else a 202.

Answers: the reply (200), an empty one for no reply, 400 for DropEvent and for a request
that is not a CloudEvent, 500 for any other exception (the broker retries).
"""

import json
import os
import re
import sys
import traceback

from fwatchdog_events import DropEvent, NotAnEvent, event_from_head, raw_body_enabled, reply_of

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
# The request's own variables: set for the request, gone before the next one.
_PER_REQUEST = re.compile(r"(Http_|CE_)|TRACEPARENT\Z|TRACESTATE\Z")


def text(status, message):
    return status, [("Content-Type", "text/plain; charset=utf-8")], (message + "\n").encode("utf-8")


def check_headers(headers):
    """What fwatchdog accepts from a worker; anything else would cost the process (a 502)."""
    for k, v in headers:
        if not _TOKEN.match(k) or not _VALUE.match(v):
            raise ValueError("header %r: %r is not a valid header" % (k, v))


class Worker:
    """The protocol's two streams, kept away from the handler: they move to private
    (close-on-exec) descriptors, descriptor 0 becomes /dev/null and 3 is closed, so neither
    a handler reading sys.stdin nor a subprocess it starts can touch the protocol."""

    def __init__(self):
        self.requests = open(os.dup(0), "rb", buffering=65536)
        self.responses = open(os.dup(3), "wb", buffering=65536)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.close(3)
        self.base_env = dict(os.environ)

    def send(self, status, headers, body):
        head = {"status": status, "headers": [[k, v] for k, v in headers], "length": len(body)}
        self.responses.write(json.dumps(head, separators=(",", ":")).encode("utf-8") + b"\n")
        self.responses.write(body)
        self.responses.flush()

    def next_request(self):
        """(head, body), or None at the end of input (fwatchdog is done with this worker)."""
        line = self.requests.readline()
        if not line or not line.endswith(b"\n"):
            return None
        head = json.loads(line)
        length = head["length"]
        body = self.requests.read(length) if length else b""
        return (head, body) if len(body) == length else None

    def set_env(self, env):
        """This request's Http_*, CE_* and trace variables; the last request's go."""
        for key in [k for k in os.environ if _PER_REQUEST.match(k)]:
            if key in self.base_env:
                os.environ[key] = self.base_env[key]
            else:
                del os.environ[key]
        os.environ.update(env)

    def answer(self, handler, head, body):
        env = head.get("env") or {}
        self.set_env(env)
        try:
            event = event_from_head(env, body, raw_body_enabled())
            headers, payload = reply_of(handler.handle(event), os.environ.get("content_type"))
            check_headers(headers)
            return 200, headers, payload
        except (DropEvent, NotAnEvent) as e:
            return text(400, str(e))
        except Exception as e:
            traceback.print_exc()
            return text(500, "function handler failed: %s (see the function's logs)" % type(e).__name__)


def serve_forever():
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # prints reach the log as they happen
    worker = Worker()
    try:
        # Imported before the ready line: a handler that cannot be imported never takes an
        # event, and the watchdog logs each failed start and tries again.
        from function import handler
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    worker.responses.write(b'{"ready":true}\n')
    worker.responses.flush()
    while True:
        request = worker.next_request()
        if request is None:
            return 0
        response = worker.answer(handler, *request)
        sys.stdout.flush()
        sys.stderr.flush()
        worker.send(*response)


if __name__ == "__main__":
    try:
        sys.exit(serve_forever())
    except BrokenPipeError:
        sys.exit(0)  # the watchdog closed the response stream: nothing left to answer
