#!/usr/bin/env python3
"""Soak test: `bench/soak.py` runs valid and hostile traffic against the watchdog at the same
time, for a long time, and checks that nothing leaks or goes wrong.

```sh
python3 bench/soak.py                   # 30 min per mode, about 2 h in all
SOAK_SECONDS=60 python3 bench/soak.py   # the CI run, about 7 min
```

It needs only python3 (standard library). It builds nothing when a binary is there: it takes
`FWATCHDOG_BIN`, else `target/x86_64-unknown-linux-musl/release/fwatchdog`, else
`target/release/fwatchdog`, and runs `cargo build --release` only if neither exists.

The modes run one after the other: `streaming` (plain output), `serializing` and `file` (both
with `cgi_response=true`), and `http` in front of `tests/upstream.py`. Each gets its own
watchdog on a free port, a private `TMPDIR`, `metrics_port=0`, `read_header_timeout=2s` and
5 s for `idle_timeout`, `read_timeout`, `write_timeout` and `exec_timeout`. The function is a
shell script the soak test writes; what it does depends on the request path. For
`SOAK_SECONDS` (default 1800) these clients run at once:

- **valid traffic:** `SOAK_CLIENTS` (default 4) threads POST random bodies (0 to 64 KiB,
  each starting with its own request id) to the echo path on kept-alive connections, with a
  30 s timeout. Every answer must be 200 with exactly the body sent and the request's own
  `X-Call-Id`.
- **slowloris:** 50 sockets at a time that dribble a header byte a second or send nothing,
  replaced as the watchdog closes them.
- **hostile requests**, each on a new connection: 100 KiB and 200 KiB heads, `X-Timeout`
  values `1e20` and `99999999999d`, bad and repeated `Host` headers, two different
  `Content-Length`s, Content-Length with chunked, obsolete line folding, an unknown HTTP
  version, random bytes, half an HTTP/2 preface, a body or a function cut off by a client
  that hangs up, and (file mode) invalid JSON. Each must get its documented answer (431,
  400, ...), or a close where nothing else is possible, within 30 s.
- **bad function output**, on kept-alive connections, each followed by a valid request on
  the same connection: 40,000 header lines, `Content-Length: 0` followed by a body,
  `Status: 999`, a function that sleeps past `exec_timeout` (or past `X-Timeout: 1s`), and
  one that exits 3. With `cgi_response` these must get 502, 504 and 500; in plain
  streaming mode the first three are ordinary output and must come back byte for byte. In
  http mode the upstream instead drops the connection after answering (also with an unread
  body, so the watchdog sees a reset), answers garbage, is slow, answers 204, ends its body
  by closing, and sends a chunked body with a wrong Content-Length. `/crash` is left out:
  it kills the upstream. A `/drop` close is unannounced (no `Connection: close`), so a
  valid POST that reaches the watchdog just before the upstream's FIN goes out on the
  pooled connection and gets 502: no client may resend a POST with a body (Go's, used by
  of-watchdog, does not; under load it lost 3-6 % of such requests, fwatchdog 0.3-0.7 %).
  Those are counted apart, and a mode fails if there are more of them than `/drop`s.

Each mode first runs everything for a warm-up (`SOAK_WARMUP`, default 10 s), stops the
clients and waits 12 s (`idle_timeout` closes what is left, and idle runtime threads exit),
then measures the watchdog's RSS (`VmRSS`) and open descriptors (`/proc/PID/fd`). It does
the same after the soak and also reads the peak RSS (`VmHWM`). A mode passes when:

- the watchdog is still running and logged no panic;
- the end RSS is within 10 % of the warm-up figure, and so is the descriptor count (or
  within 3 of it, for small counts);
- every valid request got the right answer, no answer belonged to another request, every
  hostile request got an expected answer and no request or client thread hung;
- no function process outlived its request, and in file mode no request folder was left
  in `TMPDIR`.

It prints one line per mode (valid requests, valid failures, hostile requests sent, RSS at
start, end and peak in kB, descriptors at start and end, PASS or FAIL), followed by the
first failures with the exact request, and exits 1 if any mode failed. `SOAK_MODES` (e.g.
`http,file`) picks modes. It asserts nothing about latency, and it kills every watchdog and
function process it started, also on failure or Ctrl-C.
"""

import collections
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "1800"))
WARMUP_SECONDS = float(os.environ.get("SOAK_WARMUP", "10"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "4"))
MODES = [m for m in os.environ.get("SOAK_MODES", "streaming,serializing,file,http").split(",") if m]
GRACE = 12.0  # > idle_timeout (5 s), and > tokio's 10 s keep-alive for idle blocking threads
CLIENT_TIMEOUT = 30.0
SLOWLORIS = 50
EXEC_TIMEOUT = 5.0
MAX_FAILURES_SHOWN = 10

BAD_HEADER_LINES = 40000
PLAIN_BAD = {  # what the function prints on these paths (also the expected body without CGI)
    "/bad-headers": b"X-Junk: x\n" * BAD_HEADER_LINES + b"\r\nbody after 40000 header lines",
    "/bad-length": b"Content-Length: 0\r\n\r\nthis body should not be here",
    "/bad-status": b"Status: 999\r\n\r\nbad status",
}

FORK_FUNCTION = r"""#!/bin/sh
# Soak-test function. Fork modes: the body is stdin. File mode: the body is the file named
# by the last argument, and the answer goes to $OUTPUT_FILE.
FILE_MODE=@FILE_MODE@
CGI=@CGI@
if [ "$FILE_MODE" = 1 ]; then
  for last; do :; done
  exec < "$last"
fi
case "$Http_Path" in
  /echo)
    if [ "$CGI" = 1 ]; then printf 'Status: 200 OK\r\nContent-Type: application/octet-stream\r\nX-Soak: echo\r\n\r\n'; fi
    if [ "$FILE_MODE" = 1 ]; then exec cat > "$OUTPUT_FILE"; fi
    exec cat ;;
  /bad-headers)
    yes 'X-Junk: x' | head -n @LINES@
    printf '\r\nbody after @LINES@ header lines' ;;
  /bad-length)
    if [ "$FILE_MODE" = 1 ]; then printf 'a body of 28 bytes, not zero' > "$OUTPUT_FILE"; fi
    printf 'Content-Length: 0\r\n\r\nthis body should not be here' ;;
  /bad-status)
    printf 'Status: 999\r\n\r\nbad status' ;;
  /sleep)
    sleep 30 ;;
  /exit)
    exit 3 ;;
  *)
    printf 'Status: 404 Not Found\r\n\r\nno such path %s' "$Http_Path"; exit 1 ;;
esac
"""


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def find_binary():
    explicit = os.environ.get("FWATCHDOG_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            sys.exit("FWATCHDOG_BIN=%s is not an executable file" % explicit)
        return os.path.abspath(explicit)
    candidates = [
        os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/fwatchdog"),
        os.path.join(ROOT, "target/release/fwatchdog"),
    ]
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    log("no fwatchdog binary found; running cargo build --release")
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    if os.access(candidates[1], os.X_OK):
        return candidates[1]
    sys.exit("cargo build --release did not produce %s" % candidates[1])


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, ValueError):
        return None
    return out


def marked_processes(marker):
    """PIDs of the processes whose environment holds marker (the watchdog and its functions)."""
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                if needle in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.valid = 0
        self.valid_failures = 0
        self.crossed = 0
        self.hostile = 0
        self.drops = 0
        self.raced = 0
        self.hostile_failures = 0
        self.outcomes = collections.Counter()
        self.failures = []
        self.slowloris_max_life = 0.0

    def fail(self, kind, what, got):
        with self.lock:
            if kind == "valid":
                self.valid_failures += 1
            else:
                self.hostile_failures += 1
            if len(self.failures) < MAX_FAILURES_SHOWN:
                self.failures.append("%s: %s -> %s" % (kind, what, got))

    def count(self, field, n=1):
        with self.lock:
            setattr(self, field, getattr(self, field) + n)

    def outcome(self, name, result):
        with self.lock:
            self.outcomes["%s=%s" % (name, result)] += 1


# The watchdog's 502 for a request sent on a pooled connection the upstream had just closed.
RACED_CLOSE = re.compile(rb"upstream request failed: (upstream closed the connection without answering|.*Connection reset by peer|.*Broken pipe)")


def describe(method, path, headers, body):
    h = "".join("%s: %s; " % (k, v if len(str(v)) < 60 else str(v)[:40] + "...") for k, v in headers.items())
    return "%s %s [%s] body %d bytes %r" % (method, path, h, len(body), body[:40])


# ---------------------------------------------------------------- raw HTTP/1.1 response reader


def read_response(sock, deadline):
    """Reads one response from sock. Returns ("closed", None) if the peer closed (or reset)
    before a full head, ("timeout", None) at the deadline, else (status, body) where body is
    None when the body was cut off."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock, deadline)
        if chunk is None:
            return "timeout", None
        if not chunk:
            return "closed", None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return "garbage", None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                chunk = _recv(sock, deadline)
                if not chunk:
                    return status, None
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                return "garbage", None
            while len(rest) < size + 2:
                chunk = _recv(sock, deadline)
                if not chunk:
                    return status, None
                rest += chunk
            if size == 0:
                return status, body  # (trailer fields are not expected here)
            body += rest[:size]
            rest = rest[size + 2 :]
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        return "garbage", None
    while len(rest) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            return status, None
        rest += chunk
    return status, rest[:length]


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except socket.timeout:
        return None
    except OSError:
        return b""


# ---------------------------------------------------------------- one mode


class Mode:
    def __init__(self, name, binary, workdir):
        self.name = name
        self.binary = binary
        self.dir = os.path.join(workdir, name)
        self.tmpdir = os.path.join(self.dir, "tmp")
        os.makedirs(self.tmpdir)
        self.cgi = name in ("serializing", "file")
        self.stats = Stats()
        self.stop = threading.Event()
        self.proc = None
        self.marker = "SOAK_MARK=" + uuid.uuid4().hex
        self.log_tail = collections.deque(maxlen=40)
        self.log_lines = 0
        self.panics = 0
        self.seq = 0
        self.seq_lock = threading.Lock()
        self.samples = []  # proc_status() every 5 s while the clients run

    # -------------------------------------------------- watchdog

    def env(self):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "LANG": "C",
            "mode": self.name,
            "PORT": str(self.port),
            "metrics_port": "0",
            "TMPDIR": self.tmpdir,
            "read_header_timeout": "2s",
            "idle_timeout": "5s",
            "read_timeout": "5s",
            "write_timeout": "5s",
            "exec_timeout": "5s",
            "cgi_response": "true" if self.cgi else "false",
        }
        env[self.marker.split("=")[0]] = self.marker.split("=")[1]
        if self.name == "http":
            self.upstream_port = free_port()
            upstream = os.path.join(ROOT, "tests", "upstream.py")
            env["fprocess"] = "%s %s %d" % (sys.executable, upstream, self.upstream_port)
            env["upstream_url"] = "http://127.0.0.1:%d" % self.upstream_port
        else:
            script = os.path.join(self.dir, "fn.sh")
            text = (
                FORK_FUNCTION.replace("@FILE_MODE@", "1" if self.name == "file" else "0")
                .replace("@CGI@", "1" if self.cgi else "0")
                .replace("@LINES@", str(BAD_HEADER_LINES))
            )
            with open(script, "w") as f:
                f.write(text)
            os.chmod(script, 0o755)
            env["fprocess"] = "/bin/sh " + script
        return env

    def start(self):
        for attempt in range(3):
            self.port = free_port()
            env = self.env()
            self.proc = subprocess.Popen(
                [self.binary],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            threading.Thread(target=self.read_log, args=(self.proc.stdout,), daemon=True).start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                    c.request("GET", "/_/health")
                    if c.getresponse().status == 200:
                        c.close()
                        log("%s: watchdog pid %d on port %d" % (self.name, self.proc.pid, self.port))
                        return
                    c.close()
                except OSError:
                    pass
                time.sleep(0.05)
            log("%s: watchdog did not become healthy (attempt %d); log:" % (self.name, attempt + 1))
            for line in list(self.log_tail)[-10:]:
                print("    " + line)
            self.kill()
        raise RuntimeError("%s: the watchdog would not start" % self.name)

    def read_log(self, pipe):
        pending = b""
        while True:
            try:
                data = os.read(pipe.fileno(), 65536)
            except OSError:
                break
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                self.log_lines += 1
                if "panicked" in text:
                    self.panics += 1
                self.log_tail.append(text[:300])

    def kill(self):
        """SIGTERM the watchdog's group, then SIGKILL it and every process of this mode."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in [self.proc.pid] + marked_processes(self.marker):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def alive(self):
        return self.proc.poll() is None

    # -------------------------------------------------- clients

    def next_id(self):
        with self.seq_lock:
            self.seq += 1
            return "soak-%s-%d-%s" % (self.name, self.seq, uuid.uuid4().hex[:8])

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)

    def valid_request(self, conn, size=None):
        """One checked echo request on conn. Returns True if it was right."""
        rid = self.next_id()
        if size is None:
            size = random.choice([0, 1, 100, random.randrange(0, 4096), random.randrange(0, 65536)])
        body = (rid + ":").encode() + os.urandom(size)
        headers = {"X-Call-Id": rid, "Content-Type": "application/octet-stream"}
        what = describe("POST", "/echo", headers, body)
        try:
            conn.request("POST", "/echo", body=body, headers=headers)
            resp = conn.getresponse()
            got = resp.read()
            call_id = resp.getheader("X-Call-Id")
            closes = resp.getheader("Connection", "").lower() == "close"
        except (OSError, http.client.HTTPException) as e:
            self.stats.fail("valid", what, "%s: %s" % (type(e).__name__, e))
            return False
        self.stats.count("valid")
        if self.name == "http" and resp.status == 502 and RACED_CLOSE.search(got[:200]):
            # The upstream's /drop closes a kept-alive connection right after answering,
            # without Connection: close. A request that went out on it before the FIN did
            # cannot be told from one the upstream took and then crashed on, so no client
            # retries a POST with a body (Go's, and so of-watchdog's, does not either). Each
            # /drop can cost at most one such request; more is a pool bug (checked in run).
            self.stats.count("raced")
            return True
        if self.name == "http" and resp.status == 200:
            try:
                report = json.loads(got)
                echoed = report["body"].encode("latin-1")
                if report["headers"].get("x-call-id") != rid:
                    echoed = b"(upstream saw X-Call-Id %r) " % report["headers"].get("x-call-id") + echoed
            except (ValueError, KeyError, AttributeError) as e:
                echoed = b"(not an /echo report: %r) " % e + got[:60]
        else:
            echoed = got
        if resp.status == 200 and echoed == body and call_id == rid and not closes:
            return True
        if call_id != rid or (b"soak-" in echoed[:80] and not echoed.startswith(rid.encode())):
            self.stats.count("crossed")
        self.stats.fail(
            "valid",
            what,
            "%d X-Call-Id %s%s, body %d bytes %r" % (resp.status, call_id, " Connection: close" if closes else "", len(echoed), echoed[:60]),
        )
        return False

    def valid_client(self):
        conn, used, last = None, 0, 0.0
        while not self.stop.is_set():
            # A connection idle for almost idle_timeout may be closed as we send: start afresh.
            if conn is None or used >= 200 or time.monotonic() - last > EXEC_TIMEOUT - 1.5:
                if conn:
                    conn.close()
                conn, used = self.connect(), 0
            ok = self.valid_request(conn)
            used += 1
            last = time.monotonic()
            if not ok:
                conn.close()
                conn = None
                if not self.alive():
                    time.sleep(0.5)
        if conn:
            conn.close()

    def bad_paths(self):
        """(method, path, headers, body, check) for this mode; check(status, body) -> bool."""
        def status_is(*codes):
            return lambda s, b: s in codes

        def exactly(code, want):
            return lambda s, b: s == code and b == want

        small = b"0123456789"
        if self.name == "http":
            return [
                ("GET", "/drop", {}, b"", exactly(200, b"dropping")),
                # An unread body: the upstream's close becomes a reset.
                ("POST", "/drop", {}, os.urandom(256 * 1024), lambda s, b: (s, b) == (200, b"dropping") or s == 502),
                ("GET", "/garbage", {}, b"", status_is(502)),
                ("GET", "/slow", {}, b"", lambda s, b: (s, b) == (200, b"slow done") or s == 504),
                ("GET", "/slow", {"X-Timeout": "1s"}, b"", status_is(504)),
                ("GET", "/nocontent", {}, b"", exactly(204, b"")),
                ("GET", "/eof", {}, b"", exactly(200, b"until the end" * 1000)),
                ("GET", "/te-and-cl", {}, b"", lambda s, b: (s, b) == (200, b"hello") or s == 502),
            ]
        paths = []
        for path, printed in PLAIN_BAD.items():
            paths.append(("POST", path, {}, small, status_is(502) if self.cgi else exactly(200, printed)))
        paths += [
            ("POST", "/sleep", {}, small, status_is(504)),
            ("POST", "/sleep", {"X-Timeout": "1s"}, small, status_is(504)),
            ("POST", "/exit", {}, small, status_is(500)),
        ]
        return paths

    def bad_path_client(self):
        paths = self.bad_paths()
        conn = None
        while not self.stop.is_set():
            method, path, headers, body, check = random.choice(paths)
            if conn is None:
                conn = self.connect()
            what = describe(method, path, headers, body)
            self.stats.count("hostile")
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                got = resp.read()
                closes = resp.will_close
                status = resp.status
            except (OSError, http.client.HTTPException) as e:
                status, got, closes = type(e).__name__, b"", True
                if not self.alive():
                    time.sleep(0.5)
            self.stats.outcome(path, status)
            if path == "/drop":
                self.stats.count("drops")
            if not check(status, got):
                self.stats.fail("bad-output", what, "%s, body %d bytes %r" % (status, len(got), got[:80]))
            if closes:
                conn.close()
                conn = None
                continue
            # The next request on the same connection must be unaffected.
            if not self.valid_request(conn):
                self.stats.fail("bad-output", "poisoned: the valid request after " + what,
                                "which was answered %s without Connection: close (see the valid failure)" % status)
                conn.close()
                conn = None
        if conn:
            conn.close()

    def raw_attacks(self):
        """(name, bytes to send, allowed outcomes, hold) for one new connection."""
        host = b"Host: 127.0.0.1\r\n"
        echo = b"POST /echo HTTP/1.1\r\n" + host
        attacks = [
            ("head-100k", b"GET /echo HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 100 * 1024 + b"\r\n\r\n", {431}),
            ("head-200k", b"GET /echo HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 200 * 1024 + b"\r\n\r\n", {431}),
            ("many-headers", b"GET /echo HTTP/1.1\r\n" + host + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n", {431}),
            ("x-timeout-1e20", echo + b"X-Timeout: 1e20\r\nContent-Length: 5\r\n\r\nhello", {400, "echo"}),
            ("x-timeout-99999999999d", echo + b"X-Timeout: 99999999999d\r\nContent-Length: 5\r\n\r\nhello", {400, "echo"}),
            ("x-timeout-junk", echo + b"X-Timeout: soon\r\nContent-Length: 5\r\n\r\nhello", {400}),
            ("host-space", b"POST /echo HTTP/1.1\r\nHost: exa mple\r\nContent-Length: 0\r\n\r\n", {400}),
            ("host-bracket", b"POST /echo HTTP/1.1\r\nHost: [::1\r\nContent-Length: 0\r\n\r\n", {400}),
            ("host-slash", b"POST /echo HTTP/1.1\r\nHost: a/b\r\nContent-Length: 0\r\n\r\n", {400}),
            ("host-twice", echo + host + b"Content-Length: 0\r\n\r\n", {400}),
            ("content-length-twice", echo + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", {400}),
            ("content-length-list", echo + b"Content-Length: 3, 4\r\n\r\nabcd", {400}),
            ("cl-and-chunked", echo + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", {400, "echo"}),
            ("obs-fold", echo + b"X-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n", {400}),
            ("http-9.9", b"GET /echo HTTP/9.9\r\n" + host + b"\r\n", {400, 505, "closed"}),
            ("garbage", os.urandom(512), {400, "closed"}),
            ("h2-half-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n", {"closed"}),
            ("body-cut-off", echo + b"Content-Length: 100000\r\n\r\n" + b"x" * 1000, {"hangup"}),
            # Streaming mode echoes as the body arrives, so its 200 has started: it is cut off.
            ("body-too-slow", echo + b"Content-Length: 100000\r\n\r\n" + b"x" * 1000,
             {"200 cut"} if self.name == "streaming" else {408}),
        ]
        if self.name != "http":
            attacks.append(("function-cut-off", b"POST /sleep HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n", {"hangup"}))
        if self.name == "file":
            attacks.append(("invalid-json", echo + b"Content-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\": [1,", {400}))
        return attacks

    def echoed(self, body):
        """The body an echo answer carries (http mode: the upstream's /echo report)."""
        if self.name != "http" or body is None:
            return body
        try:
            return json.loads(body)["body"].encode("latin-1")
        except (ValueError, KeyError, TypeError):
            return body

    def raw_client(self):
        attacks = self.raw_attacks()
        while not self.stop.is_set():
            name, data, allowed = random.choice(attacks)
            self.stats.count("hostile")
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=CLIENT_TIMEOUT)
            except OSError as e:
                self.stats.fail("hostile", name, "connect: %s" % e)
                time.sleep(0.5)
                continue
            try:
                try:
                    sock.sendall(data)
                except OSError:
                    pass  # the watchdog may answer and close before it has read everything
                if "hangup" in allowed:
                    time.sleep(random.uniform(0.05, 1.0))
                    result = "hangup"
                else:
                    status, body = read_response(sock, time.monotonic() + CLIENT_TIMEOUT)
                    result = status
                    if status == 200 and self.echoed(body) == b"hello":
                        result = "echo"
                    elif isinstance(status, int) and body is None:
                        result = "%d cut" % status
                self.stats.outcome(name, result)
                if result not in allowed:
                    self.stats.fail("hostile", "%s (%d bytes: %r...)" % (name, len(data), data[:70]), result)
            finally:
                sock.close()

    def slowloris_client(self):
        socks = {}  # sock -> (opened, dribble?, next byte index)
        prefix = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10000
        max_life = 0.0
        while not self.stop.is_set():
            while len(socks) < SLOWLORIS and not self.stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                except OSError:
                    time.sleep(0.2)
                    break
                s.setblocking(False)
                socks[s] = [time.monotonic(), random.random() < 0.5, 0]
                self.stats.count("hostile")
            readable, _, _ = select.select(list(socks), [], [], 1.0)
            now = time.monotonic()
            closed = set(readable)
            for s, st in socks.items():
                if s in closed or not st[1]:
                    continue
                try:
                    s.send(prefix[st[2] : st[2] + 1])
                    st[2] += 1
                except OSError:
                    closed.add(s)
            for s in closed:
                max_life = max(max_life, now - socks[s][0])
                del socks[s]
                s.close()
        now = time.monotonic()
        for s, st in socks.items():
            max_life = max(max_life, now - st[0])
            s.close()
        with self.stats.lock:
            self.stats.slowloris_max_life = max(self.stats.slowloris_max_life, max_life)

    def watch(self):
        """Stops the clients if the watchdog dies; samples its RSS and descriptors under load."""
        began = next_sample = next_progress = time.monotonic()
        next_progress += 300
        while not self.stop.is_set():
            if not self.alive():
                log("%s: the watchdog exited with %s during the run" % (self.name, self.proc.returncode))
                self.stop.set()
                return
            now = time.monotonic()
            if now >= next_sample:
                next_sample += 5
                st = proc_status(self.proc.pid)
                if st:
                    self.samples.append(st)
            if now >= next_progress:
                next_progress += 300
                s = self.stats
                log("%s: %.0f s: %d valid (%d failed), %d hostile, RSS %s kB, %s fds"
                    % (self.name, now - began, s.valid, s.valid_failures, s.hostile,
                       self.samples[-1]["VmRSS"] if self.samples else "?", self.samples[-1]["fds"] if self.samples else "?"))
            time.sleep(0.25)

    def run_clients(self, seconds):
        self.stop.clear()
        targets = [self.valid_client] * CLIENTS + [self.bad_path_client] * 2 + [self.raw_client] * 2 + [self.slowloris_client]
        threads = [threading.Thread(target=t, daemon=True) for t in targets]
        watcher = threading.Thread(target=self.watch, daemon=True)
        for t in threads + [watcher]:
            t.start()
        self.stop.wait(seconds)
        self.stop.set()
        stuck = 0
        deadline = time.monotonic() + 2 * CLIENT_TIMEOUT + 10
        for t in threads + [watcher]:
            t.join(max(0.1, deadline - time.monotonic()))
            stuck += t.is_alive()
        if stuck:
            self.stats.fail("hostile", "client threads", "%d still running %d s after the stop" % (stuck, 2 * CLIENT_TIMEOUT + 10))

    def leftovers(self):
        """Function processes still running, and file-mode request folders left in TMPDIR."""
        procs = [p for p in marked_processes(self.marker) if p != self.proc.pid]
        if self.name == "http":
            procs = [p for p in procs if p not in self.upstream_pids()]
        folders = []
        for entry in os.listdir(self.tmpdir):
            full = os.path.join(self.tmpdir, entry)
            if entry.startswith("fwatchdog-file-") and os.path.isdir(full):
                folders += [os.path.join(entry, e) for e in os.listdir(full)]
        return procs, folders

    def upstream_pids(self):
        pids = []
        for p in marked_processes(self.marker):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    if b"upstream.py" in f.read():
                        pids.append(p)
            except OSError:
                pass
        return pids

    # -------------------------------------------------- the whole mode

    def run(self):
        self.start()
        log("%s: warm-up %.0f s" % (self.name, WARMUP_SECONDS))
        self.run_clients(WARMUP_SECONDS)
        time.sleep(GRACE)
        start = proc_status(self.proc.pid) if self.alive() else None
        log("%s: warm-up figures %s; soak %.0f s" % (self.name, start, SOAK_SECONDS))
        if self.alive():
            self.run_clients(SOAK_SECONDS)
        time.sleep(GRACE)
        alive = self.alive()
        end = proc_status(self.proc.pid) if alive else None
        procs, folders = self.leftovers() if alive else ([], [])
        return self.verdict(alive, start, end, procs, folders)

    def verdict(self, alive, start, end, procs, folders):
        s = self.stats
        why = []
        if not alive:
            why.append("the watchdog exited (status %s)" % self.proc.returncode)
        if self.panics:
            why.append("%d panic lines in the log" % self.panics)
        if start and end:
            if end["VmRSS"] > start["VmRSS"] * 1.10:
                why.append("RSS grew from %d to %d kB" % (start["VmRSS"], end["VmRSS"]))
            if end["fds"] > max(start["fds"] * 1.10, start["fds"] + 3):
                why.append("descriptors grew from %d to %d" % (start["fds"], end["fds"]))
        elif alive:
            why.append("no figures")
        if s.valid_failures:
            why.append("%d valid requests failed" % s.valid_failures)
        if s.raced > s.drops:
            why.append("%d valid requests met a closed pooled connection, more than the %d /drop answers that closed one" % (s.raced, s.drops))
        if s.crossed:
            why.append("%d answers belonged to another request" % s.crossed)
        if s.hostile_failures:
            why.append("%d hostile requests got an unexpected answer or hung" % s.hostile_failures)
        if procs:
            why.append("%d function processes still running: %s" % (len(procs), procs[:5]))
        if folders:
            why.append("%d request folders left in TMPDIR: %s" % (len(folders), folders[:3]))
        return {
            "mode": self.name,
            "valid": s.valid,
            "fail": s.valid_failures,
            "hostile": s.hostile,
            "rss": (start or {}).get("VmRSS"),
            "rss_end": (end or {}).get("VmRSS"),
            "rss_peak": (end or {}).get("VmHWM"),
            "fds": (start or {}).get("fds"),
            "fds_end": (end or {}).get("fds"),
            "ok": not why,
            "why": why,
        }


def fmt(v):
    return "-" if v is None else str(v)


def main():
    binary = find_binary()
    for m in MODES:
        if m not in ("streaming", "serializing", "file", "http"):
            sys.exit("SOAK_MODES: unknown mode %r" % m)
    log("soak: %s, %.0f s per mode (+ %.0f s warm-up), modes %s" % (binary, SOAK_SECONDS, WARMUP_SECONDS, ",".join(MODES)))
    workdir = tempfile.mkdtemp(prefix="fwatchdog-soak-")
    results, details = [], []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        for name in MODES:
            mode = Mode(name, binary, workdir)
            try:
                r = mode.run()
            except Exception as e:  # a mode that cannot even start is a failed mode
                r = {"mode": name, "ok": False, "why": ["%s: %s" % (type(e).__name__, e)]}
            finally:
                mode.stop.set()
                mode.kill()
            results.append(r)
            outcomes = ", ".join("%s:%d" % kv for kv in sorted(mode.stats.outcomes.items()))
            log("%s: %s%s" % (name, "PASS" if r["ok"] else "FAIL: " + "; ".join(r["why"]), ""))
            if mode.samples:
                rss = [x["VmRSS"] for x in mode.samples]
                fds = [x["fds"] for x in mode.samples]
                load = "RSS %d-%d kB (last %d), fds %d-%d" % (min(rss), max(rss), rss[-1], min(fds), max(fds))
            else:
                load = "no samples"
            details.append((name, r, mode.stats, outcomes, load, list(mode.log_tail)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("%-12s %9s %6s %9s %10s %8s %9s %6s %6s  %s" % ("mode", "valid", "fail", "hostile", "rss_start", "rss_end", "rss_peak", "fds", "fds_end", "result"))
    for r in results:
        print(
            "%-12s %9s %6s %9s %10s %8s %9s %6s %6s  %s"
            % (r["mode"], fmt(r.get("valid")), fmt(r.get("fail")), fmt(r.get("hostile")), fmt(r.get("rss")), fmt(r.get("rss_end")),
               fmt(r.get("rss_peak")), fmt(r.get("fds")), fmt(r.get("fds_end")), "PASS" if r["ok"] else "FAIL")
        )
    for name, r, stats, outcomes, load, tail in details:
        raced = "; %d valid requests raced a /drop close (of %d drops)" % (stats.raced, stats.drops) if stats.drops else ""
        print("\n%s: slowloris sockets lived up to %.1f s; under load: %s; outcomes: %s%s"
              % (name, stats.slowloris_max_life, load, outcomes, raced))
        if not r["ok"]:
            print("  FAIL: " + "; ".join(r["why"]))
            for f in stats.failures:
                print("  - " + f)
            print("  last log lines:")
            for line in tail[-10:]:
                print("    " + line)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
