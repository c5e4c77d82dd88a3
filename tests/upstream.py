"""A small real upstream for the http-mode tests (Python standard library only).

Usage: upstream.py (PORT | unix:/path.sock) [--delay SECONDS] [--sigterm-file PATH]

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
"""

import base64
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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

    def handle_any(self):
        path, _, query = self.path.partition("?")
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
        self.send(200, json.dumps(report).encode(), extra={"X-Upstream": "yes", "Keep-Alive": "timeout=5", "X-Empty": ""})

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
    if "--sigterm-file" in args:
        marker = args[args.index("--sigterm-file") + 1]

        def on_term(*_):
            with open(marker, "w") as f:
                f.write("got SIGTERM")
            os._exit(0)

        signal.signal(signal.SIGTERM, on_term)
    if where.startswith("unix:"):
        path = where[5:]
        if os.path.exists(path):
            os.unlink(path)
        server = UnixServer(path, Handler)
    else:
        ThreadingHTTPServer.daemon_threads = True
        server = ThreadingHTTPServer(("127.0.0.1", int(where)), Handler)
    print("upstream listening on", where, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
