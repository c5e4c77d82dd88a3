#!/usr/bin/env python3
"""python3 template entry point: the classic OpenFaaS handle(req), run by fwatchdog.

    def handle(req):
        return "Hello " + req

req is a str (the body decoded as UTF-8), or bytes when RAW_BODY=true. A body that is not
valid UTF-8 without RAW_BODY gets a 400. The return value becomes the response (see
fwatchdog_sdk.normalize_result: str, bytes, dict/list as JSON, a dict with
statusCode/body/headers, or a (body, status[, headers]) tuple). Request metadata is in the
environment: Http_Method, Http_Path, Http_Query, Http_<Header>.

Two ways to run, one handler:

- mode=worker (the image's default): fwatchdog starts this script `workers` times and keeps
  each process. It imports the handler once, says it is ready on descriptor 3, then serves
  requests one after another (docs/worker-protocol.md: a JSON head line and `length` body
  bytes on stdin, the same back on descriptor 3). What the handler prints goes to the log.
- mode=serializing with cgi_response=true: a fresh process per request reads the body on
  stdin and writes the response with CGI headers to stdout.

fwatchdog sets WORKER_PROTOCOL=1 in worker mode; that is how this script tells them apart.
"""

import json
import os
import re
import sys
import traceback

from fwatchdog_sdk import normalize_result, raw_body_enabled, text_error, write_cgi_response

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")
_MAX_HEADERS = 100


def not_utf8(e):
    return text_error(
        400,
        "request body is not valid UTF-8 (byte %d); send text, or set RAW_BODY=true "
        "to receive the body as bytes" % e.start)


def handler_failed(e):
    return text_error(500, "function handler failed: %s (see the function's logs)" % type(e).__name__)


# ---------------------------------------------------------------------------- serializing


def serve_once():
    """One request: the body on stdin, a CGI response on stdout (mode=serializing)."""
    raw = sys.stdin.buffer.read()
    if raw_body_enabled():
        req = raw
    else:
        try:
            req = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            write_cgi_response(*not_utf8(e))
            return 0
    try:
        from function import handler

        result = handler.handle(req)
        response = normalize_result(result, default_content_type=os.environ.get("content_type"))
    except Exception as e:
        traceback.print_exc()
        write_cgi_response(*handler_failed(e))
        return 0  # the status is in the CGI header; fwatchdog would send a failed run's output raw
    write_cgi_response(*response)
    return 0


# ---------------------------------------------------------------------------- worker


def check_response(status, headers):
    """What fwatchdog accepts from a worker; anything else would cost the process (a 502)."""
    if not 200 <= status <= 599:
        raise ValueError("status %d: a worker answers with 200 to 599" % status)
    if len(headers) > _MAX_HEADERS:
        raise ValueError("%d headers: at most %d" % (len(headers), _MAX_HEADERS))
    for k, v in headers:
        if not _TOKEN.match(k):
            raise ValueError("%r is not a valid header name" % k)
        if not _VALUE.match(v):
            raise ValueError("header %s: %r is not a valid value (printable ASCII only)" % (k, v))


class Worker:
    """The protocol's two streams, kept away from the handler.

    The request stream (stdin) and the response stream (descriptor 3) move to private,
    close-on-exec descriptors: descriptor 0 becomes /dev/null and 3 is closed, so neither a
    handler reading sys.stdin nor a subprocess it starts can touch the protocol.
    """

    def __init__(self):
        self.requests = open(os.dup(0), "rb", buffering=65536)
        self.responses = open(os.dup(3), "wb", buffering=65536)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.close(3)
        self.base_env = dict(os.environ)
        self.request_env = ()

    def send(self, status, headers, body):
        head = {"status": status, "headers": [[k, v] for k, v in headers], "length": len(body)}
        self.responses.write(json.dumps(head, separators=(",", ":")).encode("utf-8") + b"\n")
        self.responses.write(body)
        self.responses.flush()

    def next_request(self):
        """(head, body), or None at end of input (fwatchdog is done with this worker)."""
        line = self.requests.readline()
        if not line:
            return None
        if not line.endswith(b"\n"):
            return None  # cut short: the watchdog went away mid-line
        head = json.loads(line)
        length = head["length"]
        body = self.requests.read(length) if length else b""
        if len(body) != length:
            return None
        return head, body

    def set_env(self, env):
        """This request's Http_* variables; the last request's (and any a handler set) go."""
        for key in self.request_env:
            if key in self.base_env:
                os.environ[key] = self.base_env[key]
            else:
                os.environ.pop(key, None)
        for key in [k for k in os.environ if k.startswith("Http_") and k not in self.base_env]:
            del os.environ[key]
        for key, value in env.items():
            os.environ[key] = value
        self.request_env = tuple(env)

    def answer(self, handle, head, body):
        self.set_env(head.get("env") or {})
        if raw_body_enabled():
            req = body
        else:
            try:
                req = body.decode("utf-8")
            except UnicodeDecodeError as e:
                return not_utf8(e)
        try:
            result = handle(req)
            status, headers, payload = normalize_result(
                result, default_content_type=os.environ.get("content_type"))
            check_response(status, headers)
            return status, headers, payload
        except Exception as e:
            traceback.print_exc()
            return handler_failed(e)


def serve_forever():
    """mode=worker: import once, say ready, answer requests until stdin ends."""
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # prints reach the log as they happen
    worker = Worker()
    try:
        from function import handler
    except Exception:
        # Not ready, ever: the traceback goes to the log and the watchdog retries. _exit
        # ends the process with descriptor 3, so the log shows exit status 1 (a normal exit
        # closes descriptor 3 early in finalization, and the watchdog would stop the rest).
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)

    worker.responses.write(b'{"ready":true}\n')
    worker.responses.flush()
    while True:
        request = worker.next_request()
        if request is None:
            return 0
        response = worker.answer(handler.handle, *request)
        sys.stdout.flush()  # a last line without a newline still goes out with its request
        sys.stderr.flush()
        worker.send(*response)


def main():
    if os.environ.get("WORKER_PROTOCOL") == "1":
        try:
            return serve_forever()
        except BrokenPipeError:
            return 0  # the watchdog closed the response stream: nothing left to answer
    return serve_once()


if __name__ == "__main__":
    sys.exit(main())
