#!/usr/bin/env python3
"""python3-http template entry point (fwatchdog mode=http).

A persistent HTTP/1.1 server from the standard library (no Flask). fwatchdog starts it once
(fprocess="python3 index.py") and proxies every request to upstream_url, where this server
listens (default http://127.0.0.1:5000; "unix:/path" also works).

The handler, function/handler.py:

    def handle(event, context):
        return {"statusCode": 200, "body": "Hello", "headers": {"Content-Type": "text/plain"}}

event.body     str (UTF-8), or bytes when RAW_BODY=true
event.headers  case-insensitive header mapping (event.headers.get("content-type"))
event.method   "GET", "POST", ...
event.query    dict of query parameters (first value of each); event.query_list has all
event.path     request path ("/" ...), event.raw_query the query string
context.hostname, context.get_secret(name)

Return values: see fwatchdog_sdk.normalize_result (dict envelope, str, bytes, JSON-able
value, Flask-style tuple, or an iterator/generator body to stream chunk by chunk).
"""

import os
import signal
import socket
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn, UnixStreamServer
from urllib.parse import parse_qs, urlsplit

import fwatchdog_sdk
from fwatchdog_sdk import get_secret, normalize_result, raw_body_enabled, text_error
from function import handler

RAW_BODY = raw_body_enabled()
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class BadRequest(Exception):
    pass


class Event:
    def __init__(self, body, headers, method, path, raw_query):
        self.body = body
        self.headers = headers
        self.method = method
        self.path = path
        self.raw_query = raw_query
        self.query_list = parse_qs(raw_query, keep_blank_values=True)
        self.query = {k: v[0] for k, v in self.query_list.items()}


class Context:
    def __init__(self):
        self.hostname = os.environ.get("HOSTNAME", socket.gethostname())

    @staticmethod
    def get_secret(name, *default):
        return get_secret(name, *default)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "fwatchdog-python3-http"

    def log_message(self, fmt, *args):  # no access log: fwatchdog has metrics
        pass

    def setup(self):
        super().setup()
        # Without TCP_NODELAY a head and a body sent apart meet the client's delayed ACK:
        # 40 ms a request on a kept-alive connection. (Unix sockets have no Nagle.)
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadRequest("truncated chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size line")
                if size == 0:
                    while True:  # trailers, up to the empty line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return b"".join(chunks)
                data = self.rfile.read(size)
                if len(data) != size:
                    raise BadRequest("truncated chunked body")
                chunks.append(data)
                self.rfile.readline(3)  # CRLF after the chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("bad Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BadRequest("truncated body")
        return data

    def _send(self, status, headers, body):
        head_only = self.command == "HEAD"
        self.send_response(status)
        stream = not isinstance(body, bytes)
        for k, v in headers:
            if k.lower() in ("content-length", "transfer-encoding", "connection"):
                continue
            self.send_header(k, v)
        if stream:
            self.send_header("Transfer-Encoding", "chunked")
        elif status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        if not stream and not head_only:
            # Head and body leave in one send.
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(body)
            self.flush_headers()
            return
        self.end_headers()
        if head_only:
            if stream and hasattr(body, "close"):
                body.close()
            return
        try:
            for chunk in body:
                if isinstance(chunk, str):
                    chunk = chunk.encode("utf-8")
                if not chunk:
                    continue
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            # The status is already sent: end the connection without the last chunk so the
            # client sees an incomplete response, not a complete 200.
            traceback.print_exc()
            self.close_connection = True
        finally:
            if hasattr(body, "close"):
                body.close()

    def _handle(self):
        try:
            raw = self._read_body()
        except BadRequest as e:
            self.close_connection = True
            self._send(*text_error(400, "bad request: %s" % e))
            return
        if RAW_BODY:
            body = raw
        else:
            try:
                body = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self._send(*text_error(
                    400,
                    "request body is not valid UTF-8 (byte %d); send text, or set RAW_BODY=true "
                    "to receive the body as bytes" % e.start))
                return
        split = urlsplit(self.path)
        event = Event(body, self.headers, self.command, split.path or "/", split.query)
        try:
            result = handler.handle(event, Context())
            status, headers, payload = normalize_result(result, allow_stream=True)
        except Exception as e:
            traceback.print_exc()
            self._send(*text_error(500, "function handler failed: %s (see the function's logs)"
                                   % type(e).__name__))
            return
        self._send(status, headers, payload)


for _m in METHODS:
    setattr(Handler, "do_" + _m, Handler._handle)


class UnixHTTPServer(ThreadingMixIn, UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = super().get_request()
        return conn, ("unix", 0)


def make_server():
    url = os.environ.get("upstream_url") or os.environ.get("http_upstream_url") or "http://127.0.0.1:5000"
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return UnixHTTPServer(path, Handler), url
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    port = u.port or 80
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    return ThreadingHTTPServer((host, port), Handler), url


def main():
    server, url = make_server()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("python3-http: listening on %s (RAW_BODY=%s)" % (url, RAW_BODY), file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
