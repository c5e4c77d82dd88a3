"""A small real upstream for the http-mode tests (Python standard library only).

Usage: upstream.py (PORT | unix:/path.sock | fd:N) [--delay SECONDS] [--sigterm-file PATH]
                   [--idle-close SECONDS] [--ready-file PATH] [--signal-file PATH]

--idle-close  closes a keep-alive connection idle for SECONDS (as Node, gunicorn... do)
--ready-file  /ready answers 200 only while PATH exists, 503 before
--signal-file appends the name of each SIGHUP, SIGUSR1, SIGUSR2 or SIGQUIT received to PATH

/echo   reports what arrived: method, path, query, headers, body and its framing
/sse    two Server-Sent Events, 2 s apart
/slow   answers after 3 s
/ready  200
/count  the size of the request body, read in pieces
/ws     a minimal WebSocket echo of one text frame
/crash  exits the process with status 3
/drop   answers normally, then closes the connection (an idle keep-alive timeout)
/eof    a body delimited by closing the connection (no Content-Length, not chunked)
/trailers  a chunked body with a trailer field
/nocontent 204
/stream-echo  echoes a chunked request body back chunk by chunk as it arrives
/early  413 without reading the body
/garbage   something that is not HTTP
/te-and-cl a chunked body that also claims a (wrong) Content-Length
/echo also answers HEAD (headers only) and reports the client's port as "peer_port".
/smuggle?after=head|204|304|length[&split=1]  a response followed by a second, unasked one
           ("STALE"); split=1 sends the extra bytes 50 ms after the answer
/short     Content-Length 100, then 10 bytes and a close
/reset     reads the request, then resets the connection without answering
/cl?v=..   "hello" with each v as a raw Content-Length line
/te?v=..   a chunked "hello" with each v as a raw Transfer-Encoding line
/rawchunks?c=..  Transfer-Encoding: chunked, then c as the raw body, then a close
/ka?t=N    /echo with "Keep-Alive: timeout=N"
/sink      reads a chunked body, counting its bytes as they arrive
/stats     what arrived so far: {"requests": n, "hits": {path: n}, "bytes_in": {path: n}}
"""

import base64
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


STATS_LOCK = threading.Lock()
STATS = {"requests": 0, "hits": {}, "bytes_in": {}}
READY_FILE = None
STALE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE"


def count(key, path, n=1):
    with STATS_LOCK:
        STATS[key][path] = STATS[key].get(path, 0) + n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def parse_request(self):
        ok = super().parse_request()
        with STATS_LOCK:
            STATS["requests"] += 1
        return ok

    def log_message(self, fmt, *args):
        sys.stderr.write("upstream: " + (fmt % args) + "\n")

    def read_chunks(self):
        """Yields a chunked request body chunk by chunk as it arrives (trailers skipped)."""
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            data = self.rfile.read(size)
            count("bytes_in", self.path.partition("?")[0], len(data))
            self.rfile.readline()
            yield data

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            return b"".join(self.read_chunks()), "chunked"
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length)), "content-length"
        return b"", "none"

    def send(self, status, body, ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def raw(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def handle_any(self):
        path, _, query = self.path.partition("?")
        count("hits", path)
        args = urllib.parse.parse_qs(query, keep_blank_values=True)
        if path in ("/stats", "/api/stats"):
            with STATS_LOCK:
                body = json.dumps(STATS).encode()
            return self.send(200, body)
        if path == "/smuggle":
            after = args.get("after", ["length"])[0]
            self.read_body()
            head = {
                "head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                "204": b"HTTP/1.1 204 No Content\r\n\r\n",
                "304": b"HTTP/1.1 304 Not Modified\r\n\r\n",
                "length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            }[after]
            if args.get("split"):
                self.raw(head)
                time.sleep(0.05)
                self.raw(STALE)
            else:
                self.raw(head + STALE)
            return
        if path == "/short":
            self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            self.close_connection = True
            return
        if path == "/reset":
            self.read_body()
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            return
        if path == "/cl":
            lines = b"".join(b"Content-Length: %s\r\n" % v.encode() for v in args.get("v", []))
            self.raw(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\nhello")
            self.close_connection = True
            return
        if path == "/te":
            lines = b"".join(b"Transfer-Encoding: %s\r\n" % v.encode() for v in args.get("v", []))
            self.raw(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n5\r\nhello\r\n0\r\n\r\n")
            self.close_connection = True
            return
        if path == "/rawchunks":
            body = args.get("c", [""])[0].encode("latin-1")
            self.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
            self.close_connection = True
            return
        if path == "/sink":
            total = sum(len(d) for d in self.read_chunks())
            return self.send(200, str(total).encode(), "text/plain")
        if path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, msg in enumerate(["one", "two"]):
                if i:
                    time.sleep(2)
                self.write_chunk(("data: %s\n\n" % msg).encode())
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/slow":
            time.sleep(3)
            return self.send(200, b"slow done", "text/plain")
        if path == "/count":
            # Reads the body in pieces and reports its size, never holding it whole.
            left, total = int(self.headers.get("Content-Length", "0")), 0
            while left:
                piece = self.rfile.read(min(left, 1 << 20))
                if not piece:
                    break
                left -= len(piece)
                total += len(piece)
            return self.send(200, str(total).encode(), "text/plain")
        if path == "/drop":
            self.send(200, b"dropping", "text/plain")
            self.close_connection = True
            return
        if path == "/eof":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"until the end" * 1000)
            self.close_connection = True
            return
        if path == "/trailers":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Checksum: 42\r\n\r\n")
            return
        if path == "/nocontent":
            self.send_response(204)
            self.end_headers()
            return
        if path == "/stream-echo":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for data in self.read_chunks():
                self.write_chunk(data)
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/early":
            self.send(413, b"too big for me", "text/plain")
            self.close_connection = True
            return
        if path == "/te-and-cl":
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.send_header("Content-Length", "3")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")
            return
        if path == "/garbage":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.close_connection = True
            return
        if path == "/ready":
            if READY_FILE and not os.path.exists(READY_FILE):
                return self.send(503, b"not yet", "text/plain")
            return self.send(200, b"ready", "text/plain")
        if path == "/crash":
            os._exit(3)
        if path == "/ws":
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            head = self.rfile.read(2)
            n = head[1] & 0x7F
            mask = self.rfile.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            reply = b"echo: " + payload
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
            self.close_connection = True
            return
        body, framing = self.read_body()
        report = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "framing": framing,
            "body": body.decode("latin-1"),
            "peer_port": self.client_address[1],
        }
        keep = "timeout=%s" % args["t"][0] if path == "/ka" else "timeout=5"
        self.send(200, json.dumps(report).encode(), extra={"X-Upstream": "yes", "Keep-Alive": keep, "X-Empty": ""})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = handle_any


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("127.0.0.1", 0)


def main():
    where = sys.argv[1]
    args = sys.argv[2:]
    if "--delay" in args:
        time.sleep(float(args[args.index("--delay") + 1]))
    if "--idle-close" in args:
        # BaseHTTPRequestHandler closes a connection whose next request does not start in time.
        Handler.timeout = float(args[args.index("--idle-close") + 1])
    if "--ready-file" in args:
        global READY_FILE
        READY_FILE = args[args.index("--ready-file") + 1]
    if "--sigterm-file" in args:
        marker = args[args.index("--sigterm-file") + 1]

        def on_term(*_):
            with open(marker, "w") as f:
                f.write("got SIGTERM")
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
    if "--signal-file" in args:
        log = args[args.index("--signal-file") + 1]

        def on_signal(num, _frame):
            with open(log, "a") as f:
                f.write(signal.Signals(num).name + "\n")

        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT):
            signal.signal(sig, on_signal)
    if where.startswith("unix:"):
        path = where[5:]
        if os.path.exists(path):
            os.unlink(path)
        server = UnixServer(path, Handler)
    elif where.startswith("fd:"):
        # A listening socket bound by the test and inherited: its port was never free
        # for anyone else to take.
        ThreadingHTTPServer.daemon_threads = True
        sock = socket.socket(fileno=int(where[3:]))
        server = ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    else:
        ThreadingHTTPServer.daemon_threads = True
        server = ThreadingHTTPServer(("127.0.0.1", int(where)), Handler)
    print("upstream listening on", where, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
