#!/usr/bin/env python3
"""Container tests for fwatchdog: the watchdog image, every template, the fwfn script, the
examples, the Knative manifests and the faas-cli template layout.

    python3 tests/containers/run.py            # SKIPPED (exit 0) when docker is unreachable
    FWATCHDOG_REQUIRE_DOCKER=1 python3 tests/containers/run.py   # CI: no docker = failure
    python3 tests/containers/run.py --manifests   # only the fwfn manifest checks (no docker)

Python 3 standard library only (python3-yaml and Pillow are used when present; setup.sh
installs them), and on the host the CloudEvents SDK (pip install cloudevents) as the client of
the python3-cloudevents template and the order-events example. Prints PASS/FAIL per check and
exits 1 on any failure.

Environment:
  FWATCHDOG_REQUIRE_DOCKER=1   fail instead of skipping without docker
  FWATCHDOG_BIN=path           use this static binary instead of target/x86_64-unknown-linux-musl
  FWATCHDOG_TEST_BASE_IMAGE    base image for every template (default: a local Debian image
                               built with debootstrap: fwatchdog-test/base:bookworm)
  FWATCHDOG_TEST_KEEP=1        leave the containers running at the end
  FWATCHDOG_DEBIAN_MIRROR      mirror for debootstrap (default http://deb.debian.org/debian)
  FWATCHDOG_TEST_RUST_IMAGE    also build images/watchdog/Dockerfile from source with this
                               local RUST_IMAGE (needs network in the build: --network host)
"""

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
FWFN = os.path.join(ROOT, "fwfn")
MUSL_TARGET = "x86_64-unknown-linux-musl"
MAX_BINARY_BYTES = 2_621_440  # 2.5 MiB
MUSL_BIN = os.path.join(ROOT, "target", MUSL_TARGET, "release", "fwatchdog")
WATCHDOG_IMAGE = "fwatchdog-test/watchdog:dev"
BASE_IMAGE = os.environ.get("FWATCHDOG_TEST_BASE_IMAGE", "fwatchdog-test/base:bookworm")
BASE_PACKAGES = "python3,python3-pil,python3-pip,nodejs,bash,passwd"
LABEL = "fwatchdog-test=1"
KEEP = os.environ.get("FWATCHDOG_TEST_KEEP") == "1"
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
OFFICIAL_BASE = {
    "python3-http": "python:3.12-slim-bookworm",
    "python3": "python:3.12-slim-bookworm",
    "python3-file": "python:3.12-slim-bookworm",
    "python3-cloudevents": "python:3.12-slim-bookworm",
    "node": "node:20-bookworm-slim",
    "node-classic": "node:20-bookworm-slim",
    "bash-streaming": "debian:bookworm-slim",
    "dockerfile": "debian:bookworm-slim",
}
EXAMPLES = ["streaming-shell", "grayscale", "protected", "json-stats", "sse-clock", "order-events"]
WORKER_TEMPLATES = ("python3", "node-classic")  # mode=worker by default

START = time.monotonic()
RESULTS = []  # (name, ok, message)
FAILED_CONTAINERS = set()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - START, msg), flush=True)


# ---------------------------------------------------------------------------- checks


@contextlib.contextmanager
def check(name, container=None):
    """A named check: plain asserts inside; PASS/FAIL printed; never raises."""
    try:
        yield
    except AssertionError as e:
        RESULTS.append((name, False, str(e)))
        print("FAIL %s: %s" % (name, e), flush=True)
        if container:
            FAILED_CONTAINERS.add(container)
    except Exception as e:  # an unexpected error is a failure of that check too
        RESULTS.append((name, False, "%s: %s" % (type(e).__name__, e)))
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        traceback.print_exc(limit=3)
        if container:
            FAILED_CONTAINERS.add(container)
    else:
        RESULTS.append((name, True, ""))
        print("PASS %s" % name, flush=True)


def sh(args, check_rc=True, timeout=600, env=None, cwd=None, input=None):
    """Run a command; return CompletedProcess with text stdout/stderr."""
    p = subprocess.run(args, cwd=cwd or ROOT, env=env, input=input, capture_output=True,
                       timeout=timeout, text=True)
    if check_rc and p.returncode != 0:
        raise AssertionError("`%s` exited %d: %s" % (" ".join(args), p.returncode,
                                                      (p.stderr or p.stdout).strip()[-2000:]))
    return p


def fwfn(args, env=None, cwd=None, check_rc=True, timeout=900):
    e = dict(os.environ)
    e.update(env or {})
    return sh([FWFN] + args, env=e, cwd=cwd, check_rc=check_rc, timeout=timeout)


def published_port(name):
    """The host port Docker chose for a container started with `-p 127.0.0.1:0:8080`: Docker
    binds it itself, so no port is probed, released and raced for."""
    out = sh(["docker", "port", name, "8080/tcp"]).stdout.split()
    assert out, "%s publishes no port" % name
    return int(out[0].rsplit(":", 1)[1])


# ---------------------------------------------------------------------------- HTTP


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


def request(port, method="GET", path="/", body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.getheaders(), data)
    finally:
        conn.close()


def timed_stream(port, method="GET", path="/", body=None, headers=None, timeout=30):
    """Read a response as it arrives: returns (Resp, [(seconds since request, bytes)], total)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        pieces = []
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            pieces.append((time.monotonic() - t0, chunk))
        return Resp(r.status, r.getheaders(), b"".join(c for _, c in pieces)), pieces, time.monotonic() - t0
    finally:
        conn.close()


def wait_healthy(port, timeout=30):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            r = request(port, "GET", "/_/health", timeout=2)
            if r.status == 200:
                return
            last = "status %d" % r.status
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    raise AssertionError("no 200 from /_/health on port %d within %ds (last: %s)" % (port, timeout, last))


# ---------------------------------------------------------------------------- PNG


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_rgb_png(w, h):
    rows = []
    for y in range(h):
        row = bytearray([0])
        for x in range(w):
            row += bytes(((x * 255) // (w - 1), (y * 255) // (h - 1), 255 - (x * 255) // (w - 1)))
        rows.append(bytes(row))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + png_chunk(b"IEND", b""))


def rgb_at(w, h, x, y):
    return ((x * 255) // (w - 1), (y * 255) // (h - 1), 255 - (x * 255) // (w - 1))


def parse_png(data):
    """Return (width, height, bit_depth, color_type, pixel rows) of an 8-bit grayscale PNG;
    rows is None for other kinds."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG (starts with %r)" % data[:8]
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    assert ihdr, "PNG without IHDR"
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype != 0 or interlace:
        return w, h, depth, ctype, None
    raw = zlib.decompress(idat)
    rows, prev = [], bytearray(w)
    for y in range(h):
        f = raw[y * (w + 1)]
        line = bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
        for i in range(w):
            a = line[i - 1] if i else 0
            b = prev[i]
            c = prev[i - 1] if i else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, depth, ctype, rows


def check_grayscale_png(body, w, h):
    pw, ph, depth, ctype, rows = parse_png(body)
    assert (pw, ph) == (w, h), "grayscale PNG is %dx%d, sent %dx%d" % (pw, ph, w, h)
    assert ctype == 0, "PNG color type is %d, expected 0 (grayscale)" % ctype
    assert depth == 8, "PNG bit depth %d, expected 8" % depth
    for x, y in ((0, 0), (w - 1, 0), (w // 2, h // 2), (w - 1, h - 1), (3, h - 2)):
        r, g, b = rgb_at(w, h, x, y)
        want = (r * 299 + g * 587 + b * 114) / 1000
        got = rows[y][x]
        assert abs(got - want) <= 1.5, "pixel (%d,%d): gray %d, expected ~%.1f from RGB %r" % (x, y, got, want, (r, g, b))
    try:
        import io

        from PIL import Image
    except ImportError:
        return
    with Image.open(io.BytesIO(body)) as im:
        assert im.mode == "L", "Pillow reads mode %s, expected L" % im.mode


# ---------------------------------------------------------------------------- docker


class Container:
    def __init__(self, name, port, image):
        self.name = name
        self.port = port
        self.image = image
        self.stopped = False


CONTAINERS = []


def docker_logs(name, lines=40):
    p = sh(["docker", "logs", "--tail", str(lines), name], check_rc=False, timeout=30)
    return (p.stdout + p.stderr).strip()


def start_fn(fn_dir, image, name, env=None, secrets=None, docker_args=(), cwd=None, fwfn_env=None):
    """Start a function container with `fwfn run -d` on a fresh port; returns a Container."""
    sh(["docker", "rm", "-f", name], check_rc=False)
    args = ["run", fn_dir, "--tag", image, "-p", "127.0.0.1:0", "-d", "--name", name]
    for k, v in (env or {}).items():
        args += ["-e", "%s=%s" % (k, v)]
    if secrets:
        args += ["--secrets", secrets]
    args += ["--", "--label", LABEL] + list(docker_args)
    fwfn(args, cwd=cwd, env=fwfn_env)
    c = Container(name, published_port(name), image)
    CONTAINERS.append(c)
    return c


def stop_container(c):
    t0 = time.monotonic()
    p = sh(["docker", "stop", "-t", "10", c.name], check_rc=False, timeout=60)
    took = time.monotonic() - t0
    c.stopped = True
    state = sh(["docker", "inspect", "-f", "{{.State.ExitCode}} {{.State.Running}}", c.name],
               check_rc=False).stdout.strip()
    return took, p.returncode, state


# ---------------------------------------------------------------------------- setup


def docker_available():
    if not shutil.which("docker"):
        return False, "no docker command"
    try:
        p = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "docker version timed out"
    if p.returncode != 0:
        return False, (p.stderr or p.stdout).strip()
    return True, p.stdout.strip()


def newest_source_mtime():
    newest = 0.0
    for base in ("src", "Cargo.toml", "Cargo.lock", "build.rs"):
        path = os.path.join(ROOT, base)
        if os.path.isfile(path):
            newest = max(newest, os.path.getmtime(path))
        for dirpath, _, files in os.walk(path):
            for f in files:
                newest = max(newest, os.path.getmtime(os.path.join(dirpath, f)))
    return newest


def ensure_binary():
    if os.environ.get("FWATCHDOG_BIN"):
        return os.environ["FWATCHDOG_BIN"]
    if os.path.isfile(MUSL_BIN) and os.path.getmtime(MUSL_BIN) >= newest_source_mtime():
        return MUSL_BIN
    why = "missing" if not os.path.isfile(MUSL_BIN) else "older than the sources"
    log("musl binary %s: cargo build --release --target %s" % (why, MUSL_TARGET))
    if shutil.which("rustup"):
        installed = sh(["rustup", "target", "list", "--installed"], check_rc=False).stdout.split()
        if MUSL_TARGET not in installed:
            sh(["rustup", "target", "add", MUSL_TARGET], timeout=600)
    p = subprocess.run(["cargo", "build", "--release", "--target", MUSL_TARGET], cwd=ROOT, timeout=1800)
    assert p.returncode == 0, "cargo build --release --target %s failed" % MUSL_TARGET
    return MUSL_BIN


def ensure_base_image():
    if sh(["docker", "image", "inspect", BASE_IMAGE], check_rc=False).returncode == 0:
        return
    assert BASE_IMAGE == "fwatchdog-test/base:bookworm", \
        "FWATCHDOG_TEST_BASE_IMAGE=%s does not exist locally" % BASE_IMAGE
    assert shutil.which("debootstrap"), "debootstrap is not installed (run tests/containers/setup.sh)"
    mirror = os.environ.get("FWATCHDOG_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    work = tempfile.mkdtemp(prefix="fwatchdog-base-")
    rootfs = os.path.join(work, "rootfs")
    try:
        log("building base image %s with debootstrap (%s)" % (BASE_IMAGE, BASE_PACKAGES))
        p = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + BASE_PACKAGES,
                            "bookworm", rootfs, mirror], capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, "debootstrap failed: %s" % (p.stderr or p.stdout)[-2000:]
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in os.listdir(os.path.join(rootfs, d)):
                path = os.path.join(rootfs, d, entry)
                if os.path.isfile(path) and not entry.startswith("lock"):
                    os.unlink(path)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import",
                              "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "--change", "ENV LANG=C.UTF-8", "-", BASE_IMAGE],
                             stdin=tar.stdout, capture_output=True, text=True, timeout=900)
        tar.stdout.close()
        tar.wait()
        assert imp.returncode == 0, "docker import failed: %s" % imp.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cleanup_containers():
    ids = sh(["docker", "ps", "-aq", "--filter", "label=" + LABEL], check_rc=False).stdout.split()
    if ids:
        sh(["docker", "rm", "-f"] + ids, check_rc=False, timeout=120)


# ---------------------------------------------------------------------------- static checks


def static_checks(tmp):
    langs = sorted(d for d in os.listdir(os.path.join(ROOT, "template"))
                   if os.path.isfile(os.path.join(ROOT, "template", d, "template.yml")))
    with check("layout: template/ holds the %d templates, templates -> template" % len(OFFICIAL_BASE)):
        assert langs == sorted(OFFICIAL_BASE), "template/ languages are %s, expected %s" % (langs, sorted(OFFICIAL_BASE))
        link = os.path.join(ROOT, "templates")
        assert os.path.islink(link) and os.readlink(link) == "template", "templates must be a symlink to template"

    with check("images/watchdog: source Dockerfile is multi-stage, FROM scratch, /fwatchdog entrypoint"):
        text = open(os.path.join(ROOT, "images", "watchdog", "Dockerfile")).read()
        assert "ARG RUST_IMAGE=rust:1-bookworm" in text, "no ARG RUST_IMAGE=rust:1-bookworm"
        assert re.search(r"^FROM \$\{RUST_IMAGE\} AS build", text, re.M), "no builder stage FROM ${RUST_IMAGE}"
        assert "musl" in text, "builder does not target musl"
        assert re.search(r"^FROM scratch\s*$", text, re.M), "final stage is not FROM scratch"
        assert 'ENTRYPOINT ["/fwatchdog"]' in text, "no ENTRYPOINT [\"/fwatchdog\"]"
        pre = open(os.path.join(ROOT, "images", "watchdog", "Dockerfile.prebuilt")).read()
        assert re.search(r"^FROM scratch\s*$", pre, re.M) and 'ENTRYPOINT ["/fwatchdog"]' in pre, \
            "Dockerfile.prebuilt must be FROM scratch with ENTRYPOINT [\"/fwatchdog\"]"

    for lang in langs:
        tdir = os.path.join(ROOT, "template", lang)
        dockerfile = os.path.join(tdir, "function", "Dockerfile") if lang == "dockerfile" else os.path.join(tdir, "Dockerfile")
        with check("template %s: Dockerfile conventions" % lang):
            text = open(dockerfile).read()
            assert "ARG WATCHDOG_IMAGE=fwatchdog:latest" in text, "no ARG WATCHDOG_IMAGE default"
            assert re.search(r"^FROM \$\{WATCHDOG_IMAGE\} AS watchdog$", text, re.M), "no FROM ${WATCHDOG_IMAGE} AS watchdog"
            assert "COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog" in text, "watchdog not copied to /usr/bin/fwatchdog"
            assert "ARG BASE_IMAGE=%s" % OFFICIAL_BASE[lang] in text, "no ARG BASE_IMAGE=%s" % OFFICIAL_BASE[lang]
            assert re.search(r'^HEALTHCHECK .*CMD \["fwatchdog", ?"--run-healthcheck"\]', text, re.M), \
                "no HEALTHCHECK CMD [\"fwatchdog\",\"--run-healthcheck\"]"
            assert "useradd" in text and re.search(r"^USER \S+", text, re.M), "no non-root user"
            assert re.search(r"\bfprocess=", text) and re.search(r"\bmode=\w+", text), "no ENV fprocess/mode"
            if lang in ("python3-http", "node"):
                assert "mode=http" in text and "upstream_url=http://127.0.0.1:" in text, "http template without mode=http/upstream_url"
            if lang in WORKER_TEMPLATES:
                assert re.search(r"^\s*mode=worker\b", text, re.M), "worker template without mode=worker"
                assert "cgi_response" not in re.sub(r"#.*", "", text), "cgi_response set in worker mode (it is ignored there)"
            if lang.startswith("python3"):
                assert "PYTHONDONTWRITEBYTECODE=1" in text and "PYTHONUNBUFFERED=1" in text, "python env not set"
        with check("template %s: template.yml (language, fprocess, welcome_message) and skeleton" % lang):
            yml = open(os.path.join(tdir, "template.yml")).read()
            assert re.search(r"^language: %s$" % re.escape(lang), yml, re.M), "language is not %s" % lang
            assert re.search(r"^fprocess: \S", yml, re.M), "no fprocess"
            assert re.search(r"^welcome_message:", yml, re.M), "no welcome_message"
            fn = os.path.join(tdir, "function")
            assert os.path.isdir(fn) and os.listdir(fn), "no function/ skeleton"

    with check("python templates share one fwatchdog_sdk.py"):
        texts = {l: open(os.path.join(ROOT, "template", l, "fwatchdog_sdk.py")).read()
                 for l in ("python3", "python3-http", "python3-file", "python3-cloudevents")}
        assert len(set(texts.values())) == 1, "fwatchdog_sdk.py differs between the python templates"
    with check("node templates share one sdk.js"):
        texts = {l: open(os.path.join(ROOT, "template", l, "sdk.js")).read() for l in ("node", "node-classic")}
        assert len(set(texts.values())) == 1, "sdk.js differs between the node templates"

    with check("fwfn: shellcheck clean"):
        assert shutil.which("shellcheck"), "shellcheck is not installed (run tests/containers/setup.sh)"
        p = sh(["shellcheck", "-s", "sh", FWFN], check_rc=False)
        assert p.returncode == 0, "shellcheck fwfn:\n" + p.stdout
        p = sh(["shellcheck", "-s", "bash", "template/bash-streaming/index.sh",
                "template/bash-streaming/function/handler.sh", "examples/streaming-shell/handler.sh"], check_rc=False)
        assert p.returncode == 0, "shellcheck (bash scripts):\n" + p.stdout
        p = sh(["shellcheck", "-s", "sh", "tests/worker_host.sh"], check_rc=False)
        assert p.returncode == 0, "shellcheck tests/worker_host.sh:\n" + p.stdout

    with check("fwfn: POSIX sh (runs under dash), --help, --version"):
        head = open(FWFN).readline().strip()
        assert head == "#!/bin/sh", "fwfn must start with #!/bin/sh, not %s" % head
        assert "set -eu" in open(FWFN).read(), "fwfn must set -eu"
        shell = shutil.which("dash") or "/bin/sh"
        p = sh([shell, FWFN, "--help"])
        for word in ("new", "build", "run", "push", "manifest", "fn.env"):
            assert word in p.stdout, "--help does not mention %s" % word
        assert sh([FWFN, "--version"]).stdout.startswith("fwfn "), "--version"

    proj = os.path.join(tmp, "errors")
    os.makedirs(proj)
    with check("fwfn: unknown language is one line listing the known ones"):
        p = fwfn(["new", "x", "--lang", "cobol"], cwd=proj, check_rc=False)
        err = p.stderr.strip()
        assert p.returncode != 0, "fwfn new --lang cobol succeeded"
        assert len(err.splitlines()) == 1 and "unknown language 'cobol'" in err, "message: %r" % err
        for lang in langs:
            assert lang in err, "known language %s not listed in %r" % (lang, err)
    with check("fwfn: missing handler is a one-line error"):
        fwfn(["new", "nohandler", "--lang", "python3"], cwd=proj)
        os.unlink(os.path.join(proj, "nohandler", "handler.py"))
        p = fwfn(["build", "nohandler", "--shrinkwrap"], cwd=proj, check_rc=False,
                 env={"FWFN_BUILD_DIR": os.path.join(tmp, "build-errors")})
        err = p.stderr.strip()
        assert p.returncode != 0 and len(err.splitlines()) == 1 and "missing handler.py" in err, "message: %r" % err
    with check("fwfn: missing docker is a one-line error"):
        fwfn(["new", "nodocker", "--lang", "bash-streaming"], cwd=proj)
        for cmd in (["build", "nodocker"], ["run", "nodocker"], ["push", "nodocker"]):
            p = fwfn(cmd, cwd=proj, check_rc=False, env={"DOCKER": "/nonexistent/docker",
                                                         "FWFN_BUILD_DIR": os.path.join(tmp, "build-errors")})
            err = p.stderr.strip()
            assert p.returncode != 0 and len(err.splitlines()) == 1 and "docker not found" in err, \
                "fwfn %s without docker: %r" % (cmd[0], err)
    with check("fwfn: missing function folder, fn.env errors and existing folder are one-line errors"):
        for args, want in ((["build", "does-not-exist"], "no such function folder"),
                           (["new", "nodocker", "--lang", "python3"], "already exists"),
                           (["new", "Bad_Name", "--lang", "python3"], "must be lower case")):
            p = fwfn(args, cwd=proj, check_rc=False)
            assert p.returncode != 0 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, \
                "fwfn %s: %r" % (" ".join(args), p.stderr)
        with open(os.path.join(proj, "nodocker", "fn.env"), "a") as f:
            f.write("not a pair\n")
        p = fwfn(["manifest", "nodocker"], cwd=proj, check_rc=False)
        assert p.returncode != 0 and "expected KEY=VALUE" in p.stderr, "bad fn.env line: %r" % p.stderr
    with check("fwfn: build/run/push hand docker the right arguments (fake docker)"):
        fake = os.path.join(tmp, "fake-docker")
        calls = os.path.join(tmp, "fake-docker.calls")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\n[ \"$1\" = version ] && exit 0\nfor a in \"$@\"; do printf '%%s\\n' \"$a\"; done > %s\n" % calls)
        os.chmod(fake, 0o755)
        fd = os.path.join(proj, "argcheck")
        fwfn(["new", fd, "--lang", "python3"])
        with open(os.path.join(fd, "fn.env"), "a") as f:
            f.write("FN_BUILD_ARG_ADDITIONAL_PACKAGE=curl jq\nRAW_BODY=true\nexec_timeout=\"45s\"\n")
        os.makedirs(os.path.join(fd, ".secrets"))
        env = {"DOCKER": fake, "FWFN_BUILD_DIR": os.path.join(tmp, "build-fake")}

        fwfn(["build", fd, "--build-arg", "BASE_IMAGE=python:3.11-slim"], env=env)
        args = open(calls).read().splitlines()
        assert args[:3] == ["build", "--tag", "argcheck:latest"], "build args %r" % args
        assert ["--build-arg", "ADDITIONAL_PACKAGE=curl jq"] == args[3:5], "FN_BUILD_ARG_ not passed: %r" % args
        assert ["--build-arg", "BASE_IMAGE=python:3.11-slim"] == args[5:7], "--build-arg not passed: %r" % args
        assert args[-1] == os.path.join(tmp, "build-fake", "argcheck"), "context %r" % args[-1]
        ctx = args[-1]
        assert os.path.isfile(os.path.join(ctx, "function", "handler.py")), "handler not overlaid"
        assert not os.path.exists(os.path.join(ctx, "function", ".secrets")), ".secrets copied into the build context"

        fwfn(["run", fd, "-p", "9999", "-e", "A=b c", "--", "--read-only", "--user", "12345"], env=env)
        args = open(calls).read().splitlines()
        assert args[0] == "run" and args[-1] == "argcheck:latest", "run args %r" % args
        assert args[1:4] == ["--read-only", "--user", "12345"], "extra docker args not kept first: %r" % args
        assert "9999:8080" in args and "--rm" in args, "port/--rm: %r" % args
        for e in ("RAW_BODY=true", "exec_timeout=45s", "A=b c"):
            assert e in args, "env %s not passed: %r" % (e, args)
        assert not any(a.startswith("FN_") for a in args), "FN_ keys passed as env: %r" % args
        assert os.path.realpath(os.path.join(fd, ".secrets")) + ":/var/openfaas/secrets:ro" in args, \
            "NAME/.secrets not mounted read-only: %r" % args

        fwfn(["push", fd], env=dict(env, FWFN_PREFIX="ghcr.io/me/"))
        args = open(calls).read().splitlines()
        assert args == ["push", "ghcr.io/me/argcheck:latest"], "push args %r" % args

    with check("fwfn new: scaffolds handler and fn.env, prints the welcome message"):
        p = fwfn(["new", "hello-fn", "--lang", "python3-http"], cwd=proj)
        files = sorted(os.listdir(os.path.join(proj, "hello-fn")))
        assert "handler.py" in files and "fn.env" in files and "requirements.txt" in files, files
        assert "FN_LANG=python3-http" in open(os.path.join(proj, "hello-fn", "fn.env")).read()
        assert "http mode" in p.stderr, "welcome message not printed: %r" % p.stderr
    return langs


# ---------------------------------------------------------------------------- manifests


def load_yaml(text):
    try:
        import yaml
    except ImportError:
        # This python has no yaml module: the system python may (Debian's python3-yaml).
        if os.path.exists("/usr/bin/python3"):
            p = subprocess.run(["/usr/bin/python3", "-c",
                                "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                               input=text, capture_output=True, text=True, timeout=60)
            if p.returncode == 0:
                return json.loads(p.stdout)
            if "No module named" not in p.stderr:
                raise AssertionError("YAML does not parse: %s" % p.stderr.strip()[-500:])
        raise AssertionError("python3-yaml is needed to parse manifests (run tests/containers/setup.sh)")
    return yaml.safe_load(text)


def load_yaml_all(text):
    """Every document of a multi-document YAML stream (a Service, then a Trigger)."""
    try:
        import yaml
    except ImportError:
        if os.path.exists("/usr/bin/python3"):
            p = subprocess.run(["/usr/bin/python3", "-c",
                                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))"],
                               input=text, capture_output=True, text=True, timeout=60)
            if p.returncode == 0:
                return json.loads(p.stdout)
            if "No module named" not in p.stderr:
                raise AssertionError("YAML does not parse: %s" % p.stderr.strip()[-500:])
        raise AssertionError("python3-yaml is needed to parse manifests (run tests/containers/setup.sh)")
    return list(yaml.safe_load_all(text))


_CRD_SCHEMA = []


def crd_schema():
    if not _CRD_SCHEMA:
        crd = load_yaml(open(os.path.join(HERE, "knative-service-crd.yaml")).read())
        version = [v for v in crd["spec"]["versions"] if v["name"] == "v1"][0]
        _CRD_SCHEMA.append(version["schema"]["openAPIV3Schema"])
    return _CRD_SCHEMA[0]


def schema_errors(value, schema, path="$"):
    """Structural check against an OpenAPI v3 (CRD) schema: types, unknown fields, required."""
    errors = []
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append("%s: expected int or string" % path)
        return errors
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if t in types and not isinstance(value, types[t]):
        return ["%s: expected %s, got %s" % (path, t, type(value).__name__)]
    if t == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        return ["%s: expected integer, got %r" % (path, value)]
    if t == "object":
        props = schema.get("properties")
        for req in schema.get("required", []):
            if req not in value:
                errors.append("%s: missing required %s" % (path, req))
        for k, v in value.items():
            if props is not None and k in props:
                errors += schema_errors(v, props[k], "%s.%s" % (path, k))
            elif "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
                errors += schema_errors(v, schema["additionalProperties"], "%s.%s" % (path, k))
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append("%s: unknown field %s" % (path, k))
    if t == "array" and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], "%s[%d]" % (path, i))
    return errors


_TRIGGER_SCHEMA = []


def trigger_schema():
    if not _TRIGGER_SCHEMA:
        crd = load_yaml(open(os.path.join(HERE, "knative-trigger-crd.yaml")).read())
        version = [v for v in crd["spec"]["versions"] if v["name"] == "v1"][0]
        _TRIGGER_SCHEMA.append(version["schema"]["openAPIV3Schema"])
    return _TRIGGER_SCHEMA[0]


DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"


def trigger_errors(doc):
    """A Trigger against the CRD's openAPIV3Schema and the rules Knative's webhook adds
    (pkg/apis/eventing/v1/trigger_validation.go, noted at the end of the CRD file)."""
    errors = []
    if doc.get("apiVersion") != "eventing.knative.dev/v1" or doc.get("kind") != "Trigger":
        errors.append("not an eventing.knative.dev/v1 Trigger: %r %r" % (doc.get("apiVersion"), doc.get("kind")))
    name = (doc.get("metadata") or {}).get("name") or ""
    if not (re.fullmatch(DNS1123_SUBDOMAIN, name) and len(name) <= 253):
        errors.append("metadata.name %r is not a DNS-1123 subdomain" % name)
    # apiVersion, kind and metadata are every object's; the CRD's schema covers the rest.
    errors += schema_errors({k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")},
                            trigger_schema())
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    if not (isinstance(spec.get("broker"), str) and spec["broker"]):
        errors.append("spec.broker is required")
    sub = spec.get("subscriber")
    if not isinstance(sub, dict) or not (sub.get("ref") or sub.get("uri")):
        errors.append("spec.subscriber needs a ref or a uri")
    elif sub.get("ref"):
        for field in ("apiVersion", "kind", "name"):
            if not (sub["ref"].get(field) if isinstance(sub["ref"], dict) else None):
                errors.append("spec.subscriber.ref.%s is required" % field)
    attrs = (spec.get("filter") or {}).get("attributes") if isinstance(spec.get("filter"), dict) else None
    for k, v in (attrs or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9]*", k):
            errors.append("spec.filter.attributes: %r is not ^[a-z][a-z0-9]*$" % k)
        if not isinstance(v, str):
            errors.append("spec.filter.attributes.%s: %r is not a string" % (k, v))
    return errors


def validate_trigger(doc, name, broker, filters, namespace=None):
    errors = trigger_errors(doc)
    assert not errors, "invalid Trigger: %s" % "; ".join(errors)
    ref = doc["spec"]["subscriber"]["ref"]
    assert ref == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name}, \
        "the Trigger does not subscribe the Service %s: %r" % (name, ref)
    assert doc["spec"]["broker"] == broker, "broker %r" % doc["spec"]["broker"]
    got = (doc["spec"].get("filter") or {}).get("attributes") or {}
    assert got == filters, "filter %r, expected %r" % (got, filters)
    assert doc["metadata"].get("namespace") == namespace, "namespace %r" % doc["metadata"].get("namespace")


def trigger_checks(tmp):
    with check("trigger: the validator refuses what Knative refuses"):
        good = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "t"},
                "spec": {"broker": "default", "filter": {"attributes": {"type": "x"}},
                         "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "f"}}}}
        assert trigger_errors(good) == [], trigger_errors(good)
        bad = [
            ("no broker", lambda d: d["spec"].pop("broker")),
            ("empty broker", lambda d: d["spec"].update(broker="")),
            ("no subscriber", lambda d: d["spec"].pop("subscriber")),
            ("filter name", lambda d: d["spec"]["filter"]["attributes"].update({"Type": "x"})),
            ("filter value", lambda d: d["spec"]["filter"]["attributes"].update(type=7)),
            ("unknown field", lambda d: d["spec"].update(subscribers=[])),
            ("broker type", lambda d: d["spec"].update(broker=["a"])),
            ("name", lambda d: d["metadata"].update(name="Bad_Name")),
        ]
        for what, spoil in bad:
            d = json.loads(json.dumps(good))
            spoil(d)
            assert trigger_errors(d), "a Trigger with a bad %s passed" % what
    with check("manifest examples/order-events --trigger: a valid Service and Trigger"):
        image = "registry.example.com/fn/order-events:1.0"
        p = fwfn(["manifest", "examples/order-events", "--tag", image, "--namespace", "shop",
                  "--trigger", "default", "--filter", "type=com.example.order.created", "--filter=source=/shop"])
        assert "warning" not in p.stderr, "warned: %r" % p.stderr
        docs = [d for d in load_yaml_all(p.stdout) if d is not None]
        assert [d["kind"] for d in docs] == ["Service", "Trigger"], [d.get("kind") for d in docs]
        validate_manifest(docs[0], "order-events", read_fn_env(os.path.join(ROOT, "examples", "order-events", "fn.env")),
                          image)
        validate_trigger(docs[1], "order-events", "default",
                         {"type": "com.example.order.created", "source": "/shop"}, "shop")
    with check("manifest --trigger without filters; a function without cloudevents gets a warning"):
        p = fwfn(["manifest", "examples/json-stats", "--trigger", "my-broker.v2"])
        docs = [d for d in load_yaml_all(p.stdout) if d is not None]
        validate_trigger(docs[1], "json-stats", "my-broker.v2", {})
        assert "cloudevents=true" in p.stderr, "no warning: %r" % p.stderr
    with check("manifest --trigger/--filter: what Knative would refuse is a one-line error"):
        for args, want in ((["--filter", "type=x"], "needs --trigger"),
                           (["--trigger", "Default"], "broker name"),
                           (["--trigger", ""], "broker name"),
                           (["--trigger", "b", "--filter", "Type=x"], "attribute name"),
                           (["--trigger", "b", "--filter", "my-ext=x"], "attribute name"),
                           (["--trigger", "b", "--filter", "type"], "ATTRIBUTE=VALUE"),
                           (["--trigger", "b", "--filter", "type="], "empty"),
                           (["--trigger", "b", "--filter", "type=a", "--filter", "type=b"], "twice")):
            p = fwfn(["manifest", "examples/order-events"] + args, check_rc=False)
            err = p.stderr.strip()
            assert p.returncode != 0 and want in err and len(err.splitlines()) == 1, \
                "fwfn manifest %s: rc %d %r" % (" ".join(args), p.returncode, err)


def duration_seconds(text):
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text):
        assert m.start() == pos, "cannot parse duration %r" % text
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos, "cannot parse duration %r" % text
    return total


def validate_manifest(doc, name, fn_env, image):
    """Knative's own validation rules (k8s_validation.go) and ours for a fwfn manifest."""
    assert doc.get("apiVersion") == "serving.knative.dev/v1", "apiVersion %r" % doc.get("apiVersion")
    assert doc.get("kind") == "Service", "kind %r" % doc.get("kind")
    assert doc["metadata"]["name"] == name, "metadata.name %r" % doc["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), "name is not a DNS-1035 label"
    errors = schema_errors(doc, crd_schema())
    assert not errors, "does not match the Knative Service CRD schema: %s" % "; ".join(errors[:10])
    spec = doc["spec"]["template"]["spec"]
    containers = spec["containers"]
    assert len(containers) == 1, "%d containers" % len(containers)
    c = containers[0]
    assert c["image"] == image, "image %r, expected %r" % (c["image"], image)
    ports = c.get("ports", [])
    assert len(ports) == 1, "expected a single container port, got %r" % ports
    port = ports[0]["containerPort"]
    assert port == 8080, "containerPort %r" % port
    assert port not in RESERVED_PORTS, "containerPort %d is reserved" % port
    assert "hostPort" not in ports[0], "hostPort set"
    assert ports[0].get("name", "http1") in ("http1", "h2c"), "port name %r" % ports[0].get("name")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    for reserved in RESERVED_ENV:
        assert reserved not in env, "reserved env %s set" % reserved
    for k, v in fn_env.items():
        assert env.get(k) == v, "env %s=%r, fn.env says %r" % (k, env.get(k), v)
    for k, v in env.items():
        assert isinstance(v, str), "env %s value %r is not a string" % (k, v)
        if k in ("port", "metrics_port"):
            assert int(v) not in RESERVED_PORTS, "%s=%s is reserved" % (k, v)
    probe = c.get("readinessProbe", {})
    assert probe.get("httpGet", {}).get("path") == "/_/ready", "readinessProbe is %r" % probe
    assert probe["httpGet"].get("port", port) == port, "probe port %r is not the container port" % probe["httpGet"].get("port")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        assert m.get("readOnly") is True, "volume mount %s is not readOnly" % m["name"]
        assert m["mountPath"] not in ("/", "/dev", "/dev/log", "/tmp"), "reserved mount path %s" % m["mountPath"]
        assert m["name"] in volumes, "mount of unknown volume %s" % m["name"]
        kinds = set(volumes[m["name"]]) - {"name"}
        assert kinds <= {"secret", "projected", "configMap", "emptyDir"}, "volume kind %s" % kinds
    exec_timeout = duration_seconds(fn_env.get("exec_timeout", "30s"))
    assert isinstance(spec.get("timeoutSeconds"), int), "no integer timeoutSeconds"
    assert exec_timeout < spec["timeoutSeconds"] <= 600, \
        "timeoutSeconds %r must be above exec_timeout %ss and at most 600" % (spec["timeoutSeconds"], exec_timeout)
    assert spec.get("containerConcurrency") == int(fn_env.get("max_inflight", "0")), \
        "containerConcurrency %r, max_inflight %r" % (spec.get("containerConcurrency"), fn_env.get("max_inflight"))
    return c, spec


def read_fn_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("FN_"):
            continue
        k, _, v = line.partition("=")
        env[k] = v
    return env


def manifest_checks(tmp, skeletons):
    targets = [("examples/" + e, os.path.join(ROOT, "examples", e), e) for e in EXAMPLES]
    targets += [("template %s skeleton" % os.path.basename(d)[3:], d, os.path.basename(d)) for d in skeletons]
    for label, fn_dir, name in targets:
        with check("manifest %s: valid Knative Service" % label):
            image = "registry.example.com/fn/%s:1.0" % name
            out = fwfn(["manifest", fn_dir, "--tag", image]).stdout
            doc = load_yaml(out)
            c, spec = validate_manifest(doc, name, read_fn_env(os.path.join(fn_dir, "fn.env")), image)
            if name == "protected":
                mounts = c.get("volumeMounts", [])
                assert len(mounts) == 1 and mounts[0]["mountPath"] == "/var/openfaas/secrets", mounts
                vol = spec["volumes"][0]
                names = [s["secret"]["name"] for s in vol["projected"]["sources"]]
                assert names == ["bw-api-key"], "projected secrets %r" % names
    with check("manifest: -o FILE and --apply pipe to kubectl apply -f -"):
        fake = os.path.join(tmp, "kubectl")
        got = os.path.join(tmp, "kubectl-got")
        with open(fake, "w") as f:
            f.write("#!/bin/sh\nprintf '%%s\\n' \"$*\" > %s.args\ncat > %s\n" % (got, got))
        os.chmod(fake, 0o755)
        out_file = os.path.join(tmp, "protected.yaml")
        fwfn(["manifest", "examples/protected", "-o", out_file])
        fwfn(["manifest", "examples/protected", "--apply", "--namespace", "fns"], env={"KUBECTL": fake})
        assert open(got + ".args").read().strip() == "apply -f -", "kubectl args %r" % open(got + ".args").read()
        applied = load_yaml(open(got).read())
        assert applied["metadata"]["namespace"] == "fns", "namespace not set"
        assert load_yaml(open(out_file).read())["kind"] == "Service", "-o file is not the manifest"
    with check("manifest: reserved env names and queue-proxy ports are refused"):
        d = os.path.join(tmp, "reserved")
        fwfn(["new", d, "--lang", "python3"])
        for line, want in (("PORT=9000", "PORT"), ("K_SERVICE=x", "K_SERVICE"), ("metrics_port=9090", "metrics_port")):
            with open(os.path.join(d, "fn.env"), "w") as f:
                f.write("FN_LANG=python3\n%s\n" % line)
            p = fwfn(["manifest", d], check_rc=False)
            assert p.returncode != 0 and want in p.stderr, "%s accepted: %r" % (line, p.stderr)
    with check("manifest: timeoutSeconds follows exec_timeout (1m30s -> above 90)"):
        d = os.path.join(tmp, "reserved")
        with open(os.path.join(d, "fn.env"), "w") as f:
            f.write("FN_LANG=python3\nexec_timeout=1m30s\nmax_inflight=7\n")
        doc = load_yaml(fwfn(["manifest", d]).stdout)
        validate_manifest(doc, "reserved", {"exec_timeout": "1m30s", "max_inflight": "7"}, "reserved:latest")
    trigger_checks(tmp)


# ---------------------------------------------------------------------------- faas-cli pull


def template_pull_checks(tmp):
    def copy_snapshot(dest):
        files = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout.split("\0")
        for rel in filter(None, files):
            src = os.path.join(ROOT, rel)
            if not os.path.lexists(src):
                continue
            dst = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copy2(src, dst)

    def check_clone(clone, label):
        tdir = os.path.join(clone, "template")
        assert os.path.isdir(tdir), "%s: no top-level template/ folder (faas-cli: can't find templates)" % label
        langs = sorted(d for d in os.listdir(tdir) if os.path.isdir(os.path.join(tdir, d)))
        assert langs, "%s: template/ has no sub-folders" % label
        for lang in langs:
            assert lang == lang.lower(), "%s: template %s is not lower case" % (label, lang)
            yml = os.path.join(tdir, lang, "template.yml")
            assert os.path.isfile(yml), "%s: template/%s has no template.yml" % (label, lang)
            text = open(yml).read()
            assert re.search(r"^language: %s$" % re.escape(lang), text, re.M), "%s/%s: language" % (label, lang)
            if lang != "dockerfile":
                assert os.path.isfile(os.path.join(tdir, lang, "Dockerfile")), "%s/%s: no Dockerfile" % (label, lang)
            assert os.path.isdir(os.path.join(tdir, lang, "function")), "%s/%s: no function/" % (label, lang)
        link = os.path.join(clone, "templates")
        assert os.path.islink(link) and os.path.isdir(link), "%s: templates symlink missing or broken" % label
        return langs

    git = ["git", "-c", "user.name=fwatchdog-test", "-c", "user.email=test@example.invalid",
           "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
    with check("template pull: a clone of the working tree has template/<lang>/template.yml (faas-cli layout)"):
        snap = os.path.join(tmp, "snapshot")
        os.makedirs(snap)
        copy_snapshot(snap)
        sh(git + ["init", "-q", snap])
        sh(git + ["-C", snap, "add", "-A"])
        sh(git + ["-C", snap, "commit", "-q", "-m", "snapshot"])
        clone = os.path.join(tmp, "clone")
        # faas-cli: git clone {repo} {dir} --depth=1 --config core.autocrlf=false
        sh(["git", "clone", "-q", "file://" + snap, clone, "--depth=1", "--config", "core.autocrlf=false"])
        langs = check_clone(clone, "snapshot clone")
        assert sorted(langs) == sorted(OFFICIAL_BASE), "cloned templates %s" % langs

    with check("template pull: pulled templates work with fwfn new/build (faas-cli moveTemplates + build context)"):
        proj = os.path.join(tmp, "pulled-project")
        os.makedirs(os.path.join(proj, "template"))
        for lang in langs:  # moveTemplates: copy each sub-folder, write meta.json
            shutil.copytree(os.path.join(clone, "template", lang), os.path.join(proj, "template", lang), symlinks=True)
            with open(os.path.join(proj, "template", lang, "meta.json"), "w") as f:
                json.dump({"repository": snap, "ref_name": "", "sha": "", "written_at": time.time()}, f)
        for lang in langs:
            name = "pulled-" + lang
            fwfn(["new", name, "--lang", lang], cwd=proj, env={"FWFN_TEMPLATE_DIR": ""})
            fwfn(["build", name, "--shrinkwrap"], cwd=proj, env={"FWFN_TEMPLATE_DIR": ""})
            ctx = os.path.join(proj, "build", name)
            assert os.path.isfile(os.path.join(ctx, "Dockerfile")), "%s: build context has no Dockerfile" % lang
            if lang != "dockerfile":
                handler = [f for f in os.listdir(os.path.join(ctx, "function")) if f.startswith("handler.")]
                assert handler, "%s: build/%s/function has no handler" % (lang, name)
                assert os.path.isfile(os.path.join(ctx, "template.yml")), "%s: template not copied into the context" % lang
            assert not os.path.exists(os.path.join(ctx, "function", "fn.env")), "fn.env leaked into the context"

    head = sh(["git", "rev-parse", "--verify", "-q", "HEAD"], check_rc=False)
    if head.returncode == 0 and sh(["git", "ls-tree", "HEAD", "template"], check_rc=False).stdout.strip():
        with check("template pull: a clone of the committed repository (HEAD) has the faas-cli layout"):
            clone2 = os.path.join(tmp, "clone-head")
            sh(["git", "clone", "-q", "file://" + ROOT, clone2, "--depth=1", "--config", "core.autocrlf=false"])
            check_clone(clone2, "HEAD clone")
    else:
        print("NOTE template pull: HEAD has no template/ yet (uncommitted); only the working-tree snapshot was cloned")


# ---------------------------------------------------------------------------- build


def quick_start_checks(tmp):
    """The README's container quick start, literally, in a fresh clone, with no watchdog
    image and no WATCHDOG_IMAGE: fwfn must make fwatchdog:latest itself."""
    with check("quick start: a fresh clone builds and runs hello without WATCHDOG_IMAGE (fwfn makes fwatchdog:latest)"):
        clone = os.path.join(tmp, "quick-start")
        sh(["git", "clone", "-q", "file://" + os.path.join(tmp, "snapshot"), clone])
        sh(["docker", "rmi", "-f", "fwatchdog:latest"], check_rc=False)
        # The templates' default base image cannot be pulled here: the local Debian image
        # stands in under its name, so the commands below are the README's, unchanged.
        base = re.search(r"^ARG BASE_IMAGE=(\S+)$",
                         open(os.path.join(clone, "template", "python3-http", "Dockerfile")).read(), re.M).group(1)
        sh(["docker", "tag", BASE_IMAGE, base])
        # The clone's cargo build reuses this checkout's compiled crates (same sources).
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target"))
        sh(["./fwfn", "new", "hello", "--lang", "python3-http"], cwd=clone, env=env)
        p = sh(["./fwfn", "build", "hello"], cwd=clone, env=env, timeout=900)
        assert "fwatchdog:latest does not exist" in p.stderr, "fwfn did not say it builds the watchdog image: %r" % p.stderr[-500:]
        assert sh(["docker", "image", "inspect", "fwatchdog:latest"], check_rc=False).returncode == 0, "no fwatchdog:latest"
        sh(["docker", "rm", "-f", "fwatchdog-test-quick-start"], check_rc=False)
        sh(["./fwfn", "run", "hello", "-p", "127.0.0.1:0", "-d", "--name", "fwatchdog-test-quick-start",
            "--", "--label", LABEL], cwd=clone, env=env)
        port = published_port("fwatchdog-test-quick-start")
        c = Container("fwatchdog-test-quick-start", port, "hello:latest")
        CONTAINERS.append(c)
        wait_healthy(port)
        r = request(port, "POST", "/", body=b"world")
        assert r.status == 200, "quick start function answered %d" % r.status
        p = sh(["./fwfn", "manifest", "hello"], cwd=clone, env=env)
        assert "names no registry" in p.stderr, "fwfn manifest did not warn about hello:latest: %r" % p.stderr
        assert "kind: Service" in p.stdout, "fwfn manifest still writes the Service"
    with check("fwfn build: with the watchdog image missing and nothing to build it from, one line names WATCHDOG_IMAGE"):
        lone = os.path.join(tmp, "lone-fwfn")
        os.makedirs(lone)
        shutil.copy(os.path.join(clone, "fwfn"), lone)
        shutil.copytree(os.path.join(clone, "template"), os.path.join(lone, "template"), symlinks=True)
        sh(["docker", "tag", "fwatchdog:latest", "fwatchdog-test/saved:latest"])
        sh(["docker", "rmi", "fwatchdog:latest"])
        try:
            sh(["./fwfn", "new", "lone", "--lang", "python3-http"], cwd=lone)
            p = sh(["./fwfn", "build", "lone"], cwd=lone, check_rc=False)
            last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
            assert p.returncode != 0 and "WATCHDOG_IMAGE" in last and "docker build -f images/watchdog/Dockerfile" in last, \
                "rc %d, last line %r" % (p.returncode, last)
        finally:
            sh(["docker", "tag", "fwatchdog-test/saved:latest", "fwatchdog:latest"], check_rc=False)
            sh(["docker", "rmi", "fwatchdog-test/saved:latest"], check_rc=False)


def faas_cli_path():
    """The real faas-cli: FAAS_CLI, else the peers folder next to the repository."""
    path = os.environ.get("FAAS_CLI") or os.path.join(ROOT, "..", "shared", "peers", "faas-cli")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def faas_cli_checks(tmp, langs):
    """faas-cli itself (not our imitation of it) on a clone of this repository."""
    cli = faas_cli_path()
    if not cli:
        log("SKIP faas-cli checks: no faas-cli binary (set FAAS_CLI to one)")
        return
    snap = os.path.join(tmp, "snapshot")
    env = dict(os.environ, HOME=os.path.join(tmp, "faas-home"))
    projects = {}
    with check("faas-cli: template pull of a clone, then new for every template"):
        for lang in langs:
            proj = os.path.join(tmp, "faas-" + lang)
            os.makedirs(proj)
            sh([cli, "template", "pull", snap], cwd=proj, env=env)
            sh([cli, "new", "fc-" + lang, "--lang", lang], cwd=proj, env=env)
            assert os.path.isfile(os.path.join(proj, "stack.yaml")), "%s: faas-cli new wrote no stack.yaml" % lang
            projects[lang] = proj
    proj = projects.get("python3-http")
    if not proj:
        return
    with check("faas-cli: build python3-http, and the image serves"):
        sh([cli, "build", "-f", "stack.yaml", "--build-arg", "WATCHDOG_IMAGE=" + WATCHDOG_IMAGE,
            "--build-arg", "BASE_IMAGE=" + BASE_IMAGE], cwd=proj, env=env, timeout=900)
        image = "fc-python3-http:latest"
        assert sh(["docker", "image", "inspect", image], check_rc=False).returncode == 0, "no image %s" % image
        name = "fwatchdog-test-faas-cli"
        sh(["docker", "rm", "-f", name], check_rc=False)
        sh(["docker", "run", "-d", "--name", name, "--label", LABEL, "-p", "127.0.0.1:0:8080", image])
        port = published_port(name)
        c = Container(name, port, image)
        CONTAINERS.append(c)
        wait_healthy(port)
        assert request(port, "POST", "/", body=b"x").status == 200, "faas-cli's image did not answer 200"
    with check("faas-cli: build --build-option dev passes the template's build_options as ADDITIONAL_PACKAGE"):
        # A docker that only records its arguments: installing packages needs a Debian
        # mirror, which the containers here cannot reach; what faas-cli asks for is the point.
        fake = os.path.join(tmp, "faas-cli-docker")
        os.makedirs(fake)
        with open(os.path.join(fake, "docker"), "w") as f:
            f.write('#!/bin/sh\nprintf "%s\\n" "$*" >> "$0.log"\n')
        os.chmod(os.path.join(fake, "docker"), 0o755)
        fenv = dict(env, PATH=fake + ":" + os.environ["PATH"])
        sh([cli, "build", "-f", "stack.yaml", "--build-option", "dev"], cwd=proj, env=fenv)
        logged = open(os.path.join(fake, "docker.log")).read()
        assert "ADDITIONAL_PACKAGE=build-essential" in logged, "docker was called with: %r" % logged[-500:]
    with check("faas-cli: generate --api=serving.knative.dev/v1 matches the Knative Service CRD"):
        out = sh([cli, "generate", "--api=serving.knative.dev/v1", "-f", "stack.yaml"], cwd=proj, env=env).stdout
        docs = [d for d in load_yaml_all(out) if d]
        assert docs and docs[0].get("kind") == "Service", "no Service in %r" % out[:300]
        errors = schema_errors(docs[0], crd_schema())
        assert not errors, "does not match the Service CRD: %s" % "; ".join(errors[:10])


def build_image(fn_dir, tag, cwd=None, build_dir=None):
    t0 = time.monotonic()
    fwfn(["build", fn_dir, "--tag", tag, "--build-arg", "BASE_IMAGE=" + BASE_IMAGE,
          "--build-arg", "WATCHDOG_IMAGE=" + WATCHDOG_IMAGE], cwd=cwd, env={"FWFN_BUILD_DIR": build_dir})
    log("built %s in %.1fs" % (tag, time.monotonic() - t0))


# ---------------------------------------------------------------------------- template behaviour


def template_checks(lang, normal, raw, ro):
    n = normal.port
    label = "template %s" % lang

    with check("%s: /_/health and /_/ready are 200" % label, normal.name):
        for path in ("/_/health", "/_/ready"):
            r = request(n, "GET", path)
            assert r.status == 200, "%s -> %r" % (path, r)

    text = "héllo wörld ✓ from %s\n" % lang
    with check("%s: UTF-8 text round-trips" % label, normal.name):
        r = request(n, "POST", "/echo?x=1", text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        assert r.status == 200, "POST text -> %r" % r
        assert r.body == text.encode(), "echo %r, sent %r" % (r.body, text.encode())
        assert r.header("X-Duration-Seconds") is not None, "no X-Duration-Seconds header"

    blob = bytes(random.Random(lang).getrandbits(8) for _ in range(150_000)) + b"\xff\xfe\x00\x80"
    if lang in ("python3-http", "python3", "python3-file", "node", "node-classic"):
        with check("%s: non-UTF-8 body without RAW_BODY is a clear 400" % label, normal.name):
            ctype = "text/plain" if lang == "python3-file" else "application/octet-stream"
            r = request(n, "POST", "/", b"caf\xe9 \xff", {"Content-Type": ctype})
            assert r.status == 400, "expected 400, got %r" % r
            assert "UTF-8" in r.text() and "RAW_BODY" in r.text(), "400 body does not explain: %r" % r.text()
    if lang == "python3-file":
        with check("%s: JSON body becomes input.json (echoed as application/json)" % label, normal.name):
            r = request(n, "POST", "/", b'{"a": [1, 2]}', {"Content-Type": "application/json"})
            assert r.status == 200 and r.body == b'{"a": [1, 2]}', "JSON echo %r" % r
            assert (r.header("Content-Type") or "").startswith("application/json"), "Content-Type %r" % r.header("Content-Type")
        with check("%s: invalid JSON body gets 400" % label, normal.name):
            r = request(n, "POST", "/", b'{"a": ', {"Content-Type": "application/json"})
            assert r.status == 400, "expected 400, got %r" % r
    if lang in ("python3-http", "node"):
        with check("%s: GET / answers the skeleton's greeting" % label, normal.name):
            r = request(n, "GET", "/")
            assert r.status == 200 and b"Hello from fwatchdog" in r.body, "GET / -> %r" % r
        with check("%s: 20 sequential kept-alive requests take well under 20 x 40 ms (no Nagle stall)" % label, normal.name):
            conn = http.client.HTTPConnection("127.0.0.1", n, timeout=30)
            try:
                conn.request("POST", "/echo", b"warm", {"Content-Type": "text/plain"})
                conn.getresponse().read()
                t0 = time.monotonic()
                for i in range(20):
                    conn.request("POST", "/echo", b"x%d" % i, {"Content-Type": "text/plain"})
                    r = conn.getresponse()
                    body = r.read()
                    assert r.status == 200 and body == b"x%d" % i, "request %d -> %d %r" % (i, r.status, body)
                took = time.monotonic() - t0
            finally:
                conn.close()
            # A head and a body sent apart without TCP_NODELAY cost 40 ms each (800 ms in all).
            assert took < 0.4, "20 requests took %.0f ms" % (took * 1000)

    with check("%s: RAW_BODY=true round-trips 150 kB of binary byte-exact" % label, raw.name):
        r = request(raw.port, "POST", "/", blob, {"Content-Type": "application/octet-stream"})
        assert r.status == 200, "POST binary -> %r" % r
        assert r.body == blob, "body differs: got %d bytes, sent %d (first difference at %s)" % (
            len(r.body), len(blob), next((i for i, (a, b) in enumerate(zip(r.body, blob)) if a != b), "end"))

    with check("%s: runs with --read-only --tmpfs /tmp --user 12345" % label, ro.name):
        r = request(ro.port, "POST", "/", text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        assert r.status == 200 and r.body == text.encode(), "read-only/uid 12345 -> %r" % r
        user = sh(["docker", "inspect", "-f", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", ro.name]).stdout.split()
        assert user == ["12345", "true"], "container config %r" % user


def ce_sdk():
    """The CloudEvents SDK on the host: the client that builds events and parses replies."""
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        try:
            from cloudevents.v1.conversion import to_binary, to_structured
            from cloudevents.v1.http import CloudEvent, from_http
        except ImportError:
            from cloudevents.conversion import to_binary, to_structured
            from cloudevents.http import CloudEvent, from_http
    except ImportError as e:
        raise AssertionError("the CloudEvents client is missing on the host (%s): pip install cloudevents" % e)
    return CloudEvent, to_binary, to_structured, from_http


def ce_send(port, headers, body, method="POST"):
    return request(port, method, "/", body, dict(headers))


def ce_reply(r, from_http):
    assert r.status == 200, "expected a 200 reply event, got %r" % r
    ev = from_http({k: v for k, v in r.headers}, r.body)
    assert ev["specversion"] == "1.0" and ev["id"] and ev["source"], "reply attributes %r" % ev
    return ev


def cloudevents_template_checks(normal, raw, ro):
    """python3-cloudevents: the skeleton replies with the event's data (handle returns it)."""
    label = "template python3-cloudevents"
    with check("%s: /_/health and /_/ready are 200, OPTIONS is the data plane's probe" % label, normal.name):
        for path in ("/_/health", "/_/ready"):
            r = request(normal.port, "GET", path)
            assert r.status == 200, "%s -> %r" % (path, r)
        r = request(normal.port, "OPTIONS", "/")
        assert r.status == 200 and r.header("Allow") == "POST", "OPTIONS -> %r" % r
    with check("%s: binary and structured events get a reply event with their data" % label, normal.name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        data = {"order": 7, "note": "héllo ✓"}
        ev = CloudEvent({"type": "com.example.ping", "source": "/containers", "subject": "s1"}, data)
        for to in (to_binary, to_structured):
            headers, body = to(ev)
            reply = ce_reply(ce_send(normal.port, dict(headers, Prefer="reply"), body), from_http)
            assert reply["type"] == "com.example.ping.reply", "reply type %r" % reply["type"]
            assert reply["source"].startswith("/") and reply["id"] != ev["id"], reply
            assert reply.data == data, "reply data %r" % (reply.data,)
        text = CloudEvent({"type": "t", "source": "/c", "datacontenttype": "text/plain"}, "héllo wörld\n")
        headers, body = to_structured(text)
        r = ce_send(normal.port, dict(headers, Prefer="reply"), body)
        assert r.status == 200 and r.body == "héllo wörld\n".encode(), "text event -> %r" % r
    with check("%s: without Prefer: reply the answer is 202; a plain request and a bad event are 400" % label,
               normal.name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        headers, body = to_binary(CloudEvent({"type": "t", "source": "/c"}, {"a": 1}))
        r = ce_send(normal.port, headers, body)
        assert r.status == 202 and r.body == b"", "no Prefer: reply -> %r" % r
        r = request(normal.port, "POST", "/", b"hello", {"Content-Type": "text/plain"})
        assert r.status == 400 and b"not a CloudEvent" in r.body, "plain request -> %r" % r
        r = request(normal.port, "POST", "/", b'{"specversion":"1.0"}', {"Content-Type": "application/cloudevents+json"})
        assert r.status == 400 and b"not a valid CloudEvent" in r.body, "invalid event -> %r" % r
    blob = bytes(random.Random("ce").getrandbits(8) for _ in range(150_000)) + b"\xff\x00"
    with check("%s: RAW_BODY=true: 150 kB of binary data (data_base64) comes back byte-exact" % label, raw.name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        ev = CloudEvent({"type": "t.bin", "source": "/c", "datacontenttype": "application/octet-stream"}, blob)
        headers, body = to_structured(ev)
        assert b"data_base64" in body, "the SDK did not use data_base64"
        r = ce_send(raw.port, dict(headers, Prefer="reply"), body)
        reply = ce_reply(r, from_http)
        assert r.body == blob, "data differs: %d bytes back, %d sent" % (len(r.body), len(blob))
        assert reply["type"] == "t.bin.reply", reply["type"]
    with check("%s: runs with --read-only --tmpfs /tmp --user 12345" % label, ro.name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        headers, body = to_binary(CloudEvent({"type": "t", "source": "/c"}, [1, 2, 3]))
        reply = ce_reply(ce_send(ro.port, dict(headers, Prefer="reply"), body), from_http)
        assert reply.data == [1, 2, 3], reply.data


# ---------------------------------------------------------------------------- worker mode

# Handlers for the worker-mode templates' own checks: each says which process served it and
# how many requests that process has served, prints to the log, fails on demand.
WORKER_HANDLERS = {
    "python3": ("handler.py", """\
import os

PID = os.getpid()
served = 0


def handle(req):
    global served
    served += 1
    print("worker-check: request %d in pid %d" % (served, PID))
    if req in ("boom", b"boom"):
        raise RuntimeError("boom on purpose")
    if req in ("env", b"env"):
        return {k: v for k, v in os.environ.items() if k.startswith("Http_")}
    return {"statusCode": 201, "headers": {"X-Served": str(served)},
            "body": {"pid": PID, "served": served, "type": type(req).__name__}}
"""),
    "node-classic": ("handler.js", """\
'use strict';
const pid = process.pid;
let served = 0;

module.exports = (context, callback) => {
  served++;
  console.log(`worker-check: request ${served} in pid ${pid}`);
  if (context === 'boom') return callback(new TypeError('boom on purpose'));
  if (context === 'throw') throw new RangeError('thrown on purpose');
  if (context === 'later') {
    setTimeout(() => callback(null, `called back later (${served})`), 100);
    return undefined;
  }
  if (context === 'async') {
    return (async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      return { pid, served, how: 'async' };
    })();
  }
  if (context === 'env') {
    return callback(null, Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('Http_'))));
  }
  return callback(null, { pid, served, how: 'callback', type: typeof context });
};
"""),
}


def worker_function_dir(lang, tmp):
    d = os.path.join(tmp, "worker-fns", "wk-" + lang)
    os.makedirs(os.path.dirname(d), exist_ok=True)
    fwfn(["new", d, "--lang", lang])
    name, source = WORKER_HANDLERS[lang]
    with open(os.path.join(d, name), "w") as f:
        f.write(source)
    return d


def wait_log(c, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        logs = docker_logs(c.name, lines=400)
        if needle in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.2)


def serializing_fallback_checks(lang, c):
    """The worker-check function of `lang` run with mode=serializing cgi_response=true."""
    label = "template %s with mode=serializing cgi_response=true" % lang
    with check("%s: a fresh process per request" % label, c.name):
        pids = set()
        for i in range(2):
            r = request(c.port, "POST", "/", b"x%d" % i, {"Content-Type": "text/plain"})
            assert r.status == 201 and r.header("X-Served") == "1", "request %d -> %r" % (i, r)
            got = json.loads(r.body)
            assert got["served"] == 1 and got["type"] == "str", "answer %r" % got
            pids.add(got["pid"])
        assert len(pids) == 2, "one pid %s served both: not a process per request" % pids
    with check("%s: 500 for a failing handler, 400 for a non-UTF-8 body" % label, c.name):
        r = request(c.port, "POST", "/", b"boom", {"Content-Type": "text/plain"})
        assert r.status == 500 and r.text() == "function handler failed: RuntimeError (see the function's logs)\n", \
            "boom -> %r" % r
        r = request(c.port, "POST", "/", b"caf\xe9", {"Content-Type": "text/plain"})
        assert r.status == 400 and "RAW_BODY" in r.text(), "non-UTF-8 -> %r" % r


def worker_template_checks(lang, c, raw, recycle, _serializing=None):
    """c, raw, recycle: containers of worker_function_dir(lang) with workers=1; raw with
    RAW_BODY=true, recycle with worker_max_requests=2."""
    label = "template %s (worker mode)" % lang
    n = c.port
    text_plain = {"Content-Type": "text/plain"}

    def call(body, port=n, headers=None):
        return request(port, "POST", "/", body, dict(text_plain, **(headers or {})))

    pids = {}
    with check("%s: one warm process serves request after request" % label, c.name):
        served = []
        for i in range(3):
            r = call(b"hello %d" % i)
            if lang == "python3":
                assert r.status == 201 and r.header("X-Served") is not None, "dict result -> %r" % r
            else:
                assert r.status == 200 and r.body.endswith(b"}\n"), "object result (JSON + newline) -> %r" % r
            assert (r.header("Content-Type") or "").startswith("application/json"), "Content-Type %r" % r.header("Content-Type")
            got = json.loads(r.body)
            served.append(got["served"])
            pids[got["pid"]] = True
        assert len(pids) == 1, "workers=1 but requests were served by pids %s" % list(pids)
        assert served == sorted(served) and len(set(served)) == 3, "served counts %r: not one process" % served
        assert got["type"] == ("str" if lang == "python3" else "string"), "handler got a %s" % got["type"]

    with check("%s: what the handler prints reaches the log" % label, c.name):
        logs = wait_log(c, "worker-check: request 3 in pid")
        assert "worker-check: request 3 in pid" in logs, "print/console.log not in docker logs:\n%s" % logs[-1500:]

    failures = [(b"boom", "RuntimeError" if lang == "python3" else "TypeError")]
    if lang == "node-classic":
        failures.append((b"throw", "RangeError"))
    for body, kind in failures:
        with check("%s: a failing handler (%s) is a 500, and the same worker serves the next request" % (label, body.decode()), c.name):
            r = call(body)
            assert r.status == 500, "%r -> %r" % (body, r)
            want = "function handler failed: %s (see the function's logs)\n" % kind
            assert r.text() == want, "500 body %r, expected %r" % (r.text(), want)
            r = call(b"after")
            assert r.status in (200, 201), "request after the failure -> %r" % r
            assert list(pids) == [json.loads(r.body)["pid"]], "the worker was replaced after a handler error"
            logs = wait_log(c, "on purpose")
            assert "on purpose" in logs, "the error is not in the log:\n%s" % logs[-1500:]

    with check("%s: a non-UTF-8 body is a 400, and the worker goes on" % label, c.name):
        r = request(n, "POST", "/", b"caf\xe9", {"Content-Type": "application/octet-stream"})
        assert r.status == 400 and "UTF-8" in r.text() and "RAW_BODY" in r.text(), "non-UTF-8 -> %r" % r
        r = call(b"after")
        assert r.status in (200, 201) and list(pids) == [json.loads(r.body)["pid"]], "after the 400 -> %r" % r

    with check("%s: each request sees its own Http_* variables, none of the last one's" % label, c.name):
        r = request(n, "POST", "/first?a=1", b"env", {"Content-Type": "text/plain", "X-Only-First": "yes"})
        env = json.loads(r.body)
        assert env.get("Http_X_Only_First") == "yes" and env.get("Http_Path") == "/first", "first env %r" % env
        assert env.get("Http_Query") == "a=1" and env.get("Http_Method") == "POST", "first env %r" % env
        r = request(n, "PUT", "/second", b"env", {"Content-Type": "text/plain"})
        env = json.loads(r.body)
        assert "Http_X_Only_First" not in env, "a header of the last request is still in the env: %r" % env
        assert env.get("Http_Path") == "/second" and env.get("Http_Method") == "PUT", "second env %r" % env
        assert "Http_Query" not in env, "the last request's query is still in the env: %r" % env

    if lang == "node-classic":
        with check("%s: callback called later, and an async result" % label, c.name):
            r = call(b"later")
            assert r.status == 200 and r.body.startswith(b"called back later"), "later -> %r" % r
            assert (r.header("Content-Type") or "").startswith("text/plain"), "string result Content-Type %r" % r.header("Content-Type")
            r = call(b"async")
            assert r.status == 200 and json.loads(r.body)["how"] == "async", "async -> %r" % r

    with check("%s: RAW_BODY=true hands the handler bytes" % label, raw.name):
        r = request(raw.port, "POST", "/", b"\xff\x00 raw", {"Content-Type": "application/octet-stream"})
        assert r.status in (200, 201), "RAW_BODY -> %r" % r
        got = json.loads(r.body)["type"]
        assert got == ("bytes" if lang == "python3" else "object"), "RAW_BODY handler got a %s" % got

    with check("%s: worker_max_requests=2 replaces the worker after two requests" % label, recycle.name):
        seen = []
        for i in range(5):
            r = call(b"n%d" % i, port=recycle.port)
            assert r.status in (200, 201), "request %d -> %r" % (i, r)
            got = json.loads(r.body)
            seen.append((got["pid"], got["served"]))
        assert [s for _, s in seen] == [1, 2, 1, 2, 1], "served counts %r" % seen
        assert len({p for p, _ in seen}) == 3, "pids %r: expected a new worker every two requests" % seen
        logs = docker_logs(recycle.name, lines=200)
        assert "Traceback" not in logs and "node-classic:" not in logs, \
            "a replaced worker did not end quietly:\n%s" % logs[-1500:]


def secret_helper_checks(images, tmp):
    """get_secret() in each language: $secret_mount_path/NAME, .../NAME/NAME, /run/secrets/NAME."""
    flat = os.path.join(tmp, "sec-flat")
    nested = os.path.join(tmp, "sec-nested", "k")
    runsec = os.path.join(tmp, "sec-run")
    custom = os.path.join(tmp, "sec-custom")
    for d in (flat, nested, runsec, custom):
        os.makedirs(d, exist_ok=True)
    for path, value in ((os.path.join(flat, "k"), "  flat-value \n"), (os.path.join(nested, "k"), "nested-value\n"),
                        (os.path.join(runsec, "k"), "run-value"), (os.path.join(custom, "k"), "\tcustom-value\n\n")):
        with open(path, "w") as f:
            f.write(value)
        os.chmod(path, 0o644)
    layouts = [
        ("flat", ["-v", flat + ":/var/openfaas/secrets:ro"], "flat-value"),
        ("nested", ["-v", os.path.dirname(nested) + ":/var/openfaas/secrets:ro"], "nested-value"),
        ("run-secrets", ["-v", runsec + ":/run/secrets:ro"], "run-value"),
        ("secret_mount_path", ["-v", custom + ":/custom:ro", "-e", "secret_mount_path=/custom"], "custom-value"),
        ("flat wins", ["-v", flat + ":/var/openfaas/secrets:ro", "-v", runsec + ":/run/secrets:ro"], "flat-value"),
    ]
    programs = {
        "python3-http": ["python3", "-c", "from fwatchdog_sdk import get_secret; print('[%s]' % get_secret('k'))"],
        "python3": ["python3", "-c", "from fwatchdog_sdk import get_secret; print('[%s]' % get_secret('k'))"],
        "python3-file": ["python3", "-c", "from fwatchdog_sdk import get_secret; print('[%s]' % get_secret('k'))"],
        "python3-cloudevents": ["python3", "-c", "from fwatchdog_sdk import get_secret; print('[%s]' % get_secret('k'))"],
        "node": ["node", "-e", "console.log('[' + require('/home/app/sdk').get_secret('k') + ']')"],
        "node-classic": ["node", "-e", "console.log('[' + require('/home/app/sdk').get_secret('k') + ']')"],
        "bash-streaming": ["bash", "-c", ". /home/app/index.sh && v=\"$(get_secret k)\" && printf '[%s]\\n' \"$v\""],
    }
    for lang, prog in programs.items():
        with check("template %s: get_secret() lookup order and trimming" % lang):
            for what, args, want in layouts:
                p = sh(["docker", "run", "--rm", "--user", "12345", "--read-only"] + args + [images[lang]] + prog,
                       check_rc=False, timeout=60)
                assert p.stdout.strip() == "[%s]" % want, "%s layout: got %r (stderr %r)" % (
                    what, p.stdout.strip(), p.stderr.strip()[-300:])
            p = sh(["docker", "run", "--rm", images[lang]] + prog, check_rc=False, timeout=60)
            assert p.returncode != 0 and "not found" in p.stderr, "missing secret: rc %d, %r" % (p.returncode, p.stderr[-300:])


# ---------------------------------------------------------------------------- examples


def example_checks(c, key):
    """c: example name -> Container; key: the API key written to protected's secret."""

    def port(name):
        return c[name].port

    with check("example streaming-shell: lines stream before the function ends", c["streaming-shell"].name):
        r, pieces, total = timed_stream(c["streaming-shell"].port, "POST", "/?ticks=2", b"hello\nworld\n",
                                        {"Content-Type": "text/plain"})
        assert r.status == 200, "status %r" % r
        lines = r.text().splitlines()
        assert lines[:3] == ["1: HELLO", "2: WORLD", "read 2 lines (POST /)"], "lines %r" % lines
        assert len(lines) == 5 and lines[3].startswith("tick 1") and lines[4].startswith("tick 2"), "lines %r" % lines
        first = pieces[0][0]
        assert first < 1.5, "first bytes after %.2fs (buffered?)" % first
        assert total >= 1.9, "whole response in %.2fs, expected >= 2 s of ticks" % total
        assert total - first >= 1.5, "first bytes at %.2fs, end at %.2fs: not streamed" % (first, total)

    w, h = 64, 48
    png = make_rgb_png(w, h)
    with check("example grayscale: a color PNG comes back as a grayscale PNG", c["grayscale"].name):
        r = request(port("grayscale"), "POST", "/", png, {"Content-Type": "image/png"})
        assert r.status == 200, "status %r" % r
        assert r.header("Content-Type") == "image/png", "Content-Type %r" % r.header("Content-Type")
        check_grayscale_png(r.body, w, h)
    with check("example grayscale: ?format=jpeg gives a JPEG", c["grayscale"].name):
        r = request(port("grayscale"), "POST", "/?format=jpeg", png, {"Content-Type": "image/png"})
        assert r.status == 200 and r.body[:3] == b"\xff\xd8\xff", "JPEG? %r" % r
    with check("example grayscale: a body that is not an image gets 400", c["grayscale"].name):
        r = request(port("grayscale"), "POST", "/", b"not an image at all", {"Content-Type": "text/plain"})
        assert r.status == 400 and b"image" in r.body, "not an image -> %r" % r

    for variant in ("protected", "protected-nested"):
        if variant not in c:
            continue
        name = c[variant].name
        p = port(variant)
        with check("example %s: no key or a wrong key is 401" % variant, name):
            r = request(p, "POST", "/", png, {"Content-Type": "image/png"})
            assert r.status == 401, "no key -> %r" % r
            r = request(p, "POST", "/", png, {"Content-Type": "image/png", "Authorization": "Bearer wrong"})
            assert r.status == 401, "wrong key -> %r" % r
            r = request(p, "POST", "/", png, {"Content-Type": "image/png", "X-Api-Key": key + "x"})
            assert r.status == 401, "wrong X-Api-Key -> %r" % r
        with check("example %s: the right key is 200 with a grayscale PNG" % variant, name):
            r = request(p, "POST", "/", png, {"Content-Type": "image/png", "Authorization": "Bearer " + key})
            assert r.status == 200, "Bearer key -> %r" % r
            check_grayscale_png(r.body, w, h)
            r = request(p, "GET", "/", None, {"X-Api-Key": key})
            assert r.status == 200 and b"authorized" in r.body, "X-Api-Key -> %r" % r
            assert request(p, "GET", "/_/health").status == 200, "health must not need the key"

    js = port("json-stats")
    with check("example json-stats: sum and average of a JSON list", c["json-stats"].name):
        r = request(js, "POST", "/", b"[1, 2, 3, 4]", {"Content-Type": "application/json"})
        assert r.status == 200, "status %r" % r
        assert json.loads(r.body) == {"count": 4, "sum": 10, "average": 2.5}, "answer %r" % r.body
        assert (r.header("Content-Type") or "").startswith("application/json"), "Content-Type %r" % r.header("Content-Type")
        r = request(js, "POST", "/", b"[]", {"Content-Type": "application/json"})
        assert r.status == 200 and json.loads(r.body) == {"count": 0, "sum": 0, "average": None}, "empty list %r" % r
        r = request(js, "POST", "/", b"[0.5, -1.5]", {"Content-Type": "application/json"})
        assert json.loads(r.body) == {"count": 2, "sum": -1.0, "average": -0.5}, "floats %r" % r
    with check("example json-stats: bad input gets 400 with a message", c["json-stats"].name):
        for body in (b'{"a": 1}', b'[1, "x"]', b"[1, true]", b"[1,"):
            r = request(js, "POST", "/", body, {"Content-Type": "application/json"})
            assert r.status == 400, "%r -> %r" % (body, r)

    with check("example sse-clock: text/event-stream events arrive one by one", c["sse-clock"].name):
        r, pieces, total = timed_stream(port("sse-clock"), "GET", "/?count=3&interval=1", None,
                                        {"Accept": "text/event-stream"})
        assert r.status == 200, "status %r" % r
        assert (r.header("Content-Type") or "").startswith("text/event-stream"), "Content-Type %r" % r.header("Content-Type")
        events = [e for e in r.text().split("\n\n") if "event: tick" in e]
        assert [re.search(r"^id: (\d+)", e, re.M).group(1) for e in events] == ["1", "2", "3"], "events %r" % r.text()
        first_tick = next(t for t, chunk in _accumulate(pieces) if b"event: tick" in chunk)
        assert first_tick < 1.5, "first event after %.2fs" % first_tick
        assert total >= 1.9 and total - first_tick >= 1.5, \
            "first event at %.2fs, end at %.2fs: events were not streamed" % (first_tick, total)
    with check("example sse-clock: bad parameters get 400", c["sse-clock"].name):
        r = request(port("sse-clock"), "GET", "/?count=abc")
        assert r.status == 400, "count=abc -> %r" % r

    order_events_checks(c["order-events"])


def order_events_checks(c):
    name = c.name
    with check("example order-events: an order event gets a confirmation event as the reply", name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        order = {"order": "A-17", "items": [{"sku": "tea", "qty": 2, "price": 3.5}, {"sku": "cup", "qty": 1, "price": 4}]}
        ev = CloudEvent({"type": "com.example.order.created", "source": "/shop"}, order)
        for to in (to_binary, to_structured):
            headers, body = to(ev)
            reply = ce_reply(ce_send(c.port, dict(headers, Prefer="reply"), body), from_http)
            assert reply["type"] == "com.example.order.confirmed", "reply type %r" % reply["type"]
            assert reply.data == {"order": "A-17", "items": 2, "total": 11.0}, "reply data %r" % (reply.data,)
    with check("example order-events: a malformed order is 400 (dropped), other types and no Prefer 202", name):
        CloudEvent, to_binary, to_structured, from_http = ce_sdk()
        headers, body = to_binary(CloudEvent({"type": "com.example.order.created", "source": "/shop"},
                                             {"order": "B", "items": "none"}))
        r = ce_send(c.port, dict(headers, Prefer="reply"), body)
        assert r.status == 400 and b"items" in r.body, "malformed order -> %r" % r
        headers, body = to_binary(CloudEvent({"type": "com.example.order.shipped", "source": "/shop"}, {"order": "A"}))
        r = ce_send(c.port, dict(headers, Prefer="reply"), body)
        assert r.status == 202 and r.body == b"", "another type -> %r" % r
        headers, body = to_binary(CloudEvent({"type": "com.example.order.created", "source": "/shop"},
                                             {"order": "C", "items": []}))
        r = ce_send(c.port, headers, body)
        assert r.status == 202 and r.body == b"", "no Prefer: reply -> %r" % r


def _accumulate(pieces):
    seen = b""
    for t, chunk in pieces:
        seen += chunk
        yield t, seen


# ---------------------------------------------------------------------------- main


def manifests_only():
    """The fwfn manifest checks alone (Knative Services and Triggers against their CRDs), which
    need no docker: tests/manifests.rs runs them with cargo test."""
    tmp = tempfile.mkdtemp(prefix="fwatchdog-manifests-")
    try:
        proj = os.path.join(tmp, "skeletons")
        os.makedirs(proj)
        langs = sorted(d for d in os.listdir(os.path.join(ROOT, "template"))
                       if os.path.isfile(os.path.join(ROOT, "template", d, "template.yml")))
        skeletons = []
        for lang in langs:
            d = os.path.join(proj, "sk-" + lang)
            fwfn(["new", d, "--lang", lang])
            skeletons.append(d)
        manifest_checks(tmp, skeletons)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary()


def main():
    if sys.argv[1:] == ["--manifests"]:
        return manifests_only()
    ok, why = docker_available()
    if not ok:
        banner = "#" * 72
        if os.environ.get("FWATCHDOG_REQUIRE_DOCKER") == "1":
            print("%s\n# FAIL: docker not available (%s)\n# FWATCHDOG_REQUIRE_DOCKER=1: the container suite "
                  "must run (tests/containers/setup.sh starts dockerd)\n%s" % (banner, why, banner), flush=True)
            return 1
        print("%s\n# SKIPPED: docker not available (%s)\n# No container test ran; "
              "FWATCHDOG_REQUIRE_DOCKER=1 makes this a failure.\n%s" % (banner, why, banner), flush=True)
        return 0
    log("docker server %s" % why)
    tmp = tempfile.mkdtemp(prefix="fwatchdog-containers-")
    build_dir = os.path.join(tmp, "build")
    os.chmod(tmp, 0o755)
    cleanup_containers()
    try:
        return run_all(tmp, build_dir)
    finally:
        if KEEP:
            print("FWATCHDOG_TEST_KEEP=1: containers left running; work dir %s" % tmp)
        else:
            cleanup_containers()
            shutil.rmtree(tmp, ignore_errors=True)


def run_all(tmp, build_dir):
    langs = static_checks(tmp)

    setup_ok = True
    with check("setup: static musl binary"):
        binary = ensure_binary()
        out = sh(["file", binary], check_rc=False).stdout if shutil.which("file") else "static"
        assert "dynamically linked" not in out, "%s is dynamically linked: %s" % (binary, out)
        # The size budget holds for the binary the image ships, every mode and feature in it.
        size = os.path.getsize(binary)
        assert size <= MAX_BINARY_BYTES, "%s is %d bytes, over the %d allowed" % (binary, size, MAX_BINARY_BYTES)
    if not RESULTS[-1][1]:
        setup_ok = False
    if setup_ok:
        with check("setup: watchdog image from Dockerfile.prebuilt (FROM scratch, /fwatchdog)"):
            ctx = os.path.join(tmp, "watchdog-ctx")
            os.makedirs(ctx)
            shutil.copy2(binary, os.path.join(ctx, "fwatchdog"))
            sh(["docker", "build", "-q", "-f", os.path.join(ROOT, "images", "watchdog", "Dockerfile.prebuilt"),
                "-t", WATCHDOG_IMAGE, ctx], timeout=300)
            p = sh(["docker", "run", "--rm", WATCHDOG_IMAGE, "--version"], check_rc=False)
            assert p.returncode == 0 and "fwatchdog" in (p.stdout + p.stderr).lower(), \
                "/fwatchdog --version in the scratch image: rc %d %r" % (p.returncode, p.stdout + p.stderr)
        setup_ok = RESULTS[-1][1]
    if setup_ok:
        with check("setup: local base image %s" % BASE_IMAGE):
            ensure_base_image()
        setup_ok = RESULTS[-1][1]

    rust_image = os.environ.get("FWATCHDOG_TEST_RUST_IMAGE")
    if setup_ok and rust_image:
        with check("images/watchdog/Dockerfile builds from source (RUST_IMAGE=%s)" % rust_image):
            tag = "fwatchdog-test/watchdog-from-source:dev"
            sh(["docker", "build", "-q", "--network", "host", "--build-arg", "RUST_IMAGE=" + rust_image,
                "-f", os.path.join(ROOT, "images", "watchdog", "Dockerfile"), "-t", tag, ROOT], timeout=1800)
            p = sh(["docker", "run", "--rm", tag, "--version"], check_rc=False)
            assert p.returncode == 0 and "fwatchdog" in p.stdout + p.stderr, "--version: %r" % (p.stdout + p.stderr)
    else:
        print("NOTE images/watchdog/Dockerfile (source build) not built: set FWATCHDOG_TEST_RUST_IMAGE to a local "
              "rust image (no image can be pulled here)")

    skeleton_dirs = []
    proj = os.path.join(tmp, "skeletons")
    os.makedirs(proj)
    for lang in langs:
        d = os.path.join(proj, "sk-" + lang)
        fwfn(["new", d, "--lang", lang])
        skeleton_dirs.append(d)

    manifest_checks(tmp, skeleton_dirs)
    template_pull_checks(tmp)
    quick_start_checks(tmp)
    faas_cli_checks(tmp, langs)

    if not setup_ok:
        print("FAIL setup: no watchdog or base image, container checks not run", flush=True)
        RESULTS.append(("container checks", False, "setup failed"))
        return summary()

    # Build every template skeleton and every example through fwfn.
    images = {}
    for lang, d in zip(langs, skeleton_dirs):
        tag = "fwatchdog-test/tpl-%s:dev" % lang
        with check("build: template %s skeleton via fwfn build" % lang):
            build_image(d, tag, cwd=proj, build_dir=build_dir)
            images[lang] = tag
            cfg = json.loads(sh(["docker", "image", "inspect", tag]).stdout)[0]["Config"]
            env = dict(e.split("=", 1) for e in cfg.get("Env", []))
            assert env.get("fprocess") and env.get("mode"), "image ENV has no fprocess/mode: %r" % env
            assert cfg.get("User") not in (None, "", "root", "0"), "image runs as root"
            assert cfg.get("Healthcheck", {}).get("Test") == ["CMD", "fwatchdog", "--run-healthcheck"], \
                "healthcheck %r" % cfg.get("Healthcheck")
    worker_images = {}
    for lang in WORKER_TEMPLATES:
        tag = "fwatchdog-test/wk-%s:dev" % lang
        with check("build: a %s function with a worker-check handler via fwfn build" % lang):
            d = worker_function_dir(lang, tmp)
            build_image(d, tag, cwd=os.path.dirname(d), build_dir=build_dir)
            worker_images[lang] = (d, tag)
    ex_images = {}
    for ex in EXAMPLES:
        tag = "fwatchdog-test/ex-%s:dev" % ex
        with check("build: example %s via fwfn build" % ex):
            build_image("examples/" + ex, tag, build_dir=build_dir)
            ex_images[ex] = tag

    # Start everything, then drive it.
    started = {}
    for lang, tag in images.items():
        d = os.path.join(proj, "sk-" + lang)
        with check("run: template %s containers start (normal, RAW_BODY=true, read-only uid 12345)" % lang):
            normal = start_fn(d, tag, "fwt-tpl-%s" % lang, cwd=proj)
            raw = start_fn(d, tag, "fwt-tpl-%s-raw" % lang, env={"RAW_BODY": "true"}, cwd=proj)
            ro = start_fn(d, tag, "fwt-tpl-%s-ro" % lang, cwd=proj,
                          docker_args=["--read-only", "--tmpfs", "/tmp", "--user", "12345"])
            started[lang] = (normal, raw, ro)
    worker_started = {}
    for lang, (d, tag) in worker_images.items():
        with check("run: %s worker-check containers start (workers=1; RAW_BODY=true; worker_max_requests=2)" % lang):
            one = {"workers": "1"}
            worker_started[lang] = (
                start_fn(d, tag, "fwt-wk-%s" % lang, env=one),
                start_fn(d, tag, "fwt-wk-%s-raw" % lang, env=dict(one, RAW_BODY="true")),
                start_fn(d, tag, "fwt-wk-%s-recycle" % lang, env=dict(one, worker_max_requests="2")),
                # template/README.md's way back to a process per request, set at run time
                start_fn(d, tag, "fwt-wk-%s-serializing" % lang, env={"mode": "serializing", "cgi_response": "true"})
                if lang == "python3" else None,
            )
    ex_containers = {}
    secrets_flat = os.path.join(tmp, "bw-secrets")
    secrets_nested = os.path.join(tmp, "bw-secrets-nested", "bw-api-key")
    os.makedirs(secrets_flat)
    os.makedirs(secrets_nested)
    key_holder = {}
    for ex, tag in ex_images.items():
        with check("run: example %s starts with fwfn run" % ex):
            if ex == "protected":
                key = "s3cret-Key-%d" % random.randrange(10**6)
                key_holder["key"] = key
                for path in (os.path.join(secrets_flat, "bw-api-key"), os.path.join(secrets_nested, "bw-api-key")):
                    with open(path, "w") as f:
                        f.write(key + "\n")
                    os.chmod(path, 0o644)
                ex_containers[ex] = start_fn("examples/" + ex, tag, "fwt-ex-" + ex, secrets=secrets_flat)
                ex_containers["protected-nested"] = start_fn(
                    "examples/" + ex, tag, "fwt-ex-protected-nested", secrets=os.path.dirname(secrets_nested))
            else:
                ex_containers[ex] = start_fn("examples/" + ex, tag, "fwt-ex-" + ex)

    for c in CONTAINERS:
        with check("run: %s becomes healthy (/_/health 200)" % c.name, c.name):
            wait_healthy(c.port)

    for lang, (normal, raw, ro) in started.items():
        if lang == "python3-cloudevents":
            cloudevents_template_checks(normal, raw, ro)
        else:
            template_checks(lang, normal, raw, ro)
    for lang, containers in worker_started.items():
        worker_template_checks(lang, *containers)
        if containers[3]:
            serializing_fallback_checks(lang, containers[3])
    secret_helper_checks(images, tmp)

    for ex in EXAMPLES + ["protected-nested"]:
        # An example that did not build or start fails its checks (connection refused).
        ex_containers.setdefault(ex, Container("missing-" + ex, 1, None))
    example_checks(ex_containers, key_holder.get("key", "no-key"))

    with check("run: Docker HEALTHCHECK (fwatchdog --run-healthcheck) reports healthy"):
        deadline = time.monotonic() + 30
        pending = [c.name for c in CONTAINERS]
        while pending and time.monotonic() < deadline:
            states = {n: sh(["docker", "inspect", "-f", "{{.State.Health.Status}}", n], check_rc=False).stdout.strip()
                      for n in pending}
            pending = [n for n, s in states.items() if s != "healthy"]
            if pending:
                time.sleep(1)
        assert not pending, "not healthy after 30 s: %s" % ", ".join(
            "%s=%s" % (n, sh(["docker", "inspect", "-f", "{{.State.Health.Status}}", n], check_rc=False).stdout.strip())
            for n in pending)

    # Container logs of anything that failed, before the containers go.
    for c in CONTAINERS:
        if c.name in FAILED_CONTAINERS:
            print("---- docker logs %s (last 40 lines) ----\n%s\n----" % (c.name, docker_logs(c.name)))

    with ThreadPoolExecutor(max_workers=6) as pool:
        stops = list(pool.map(lambda c: (c, stop_container(c)), [c for c in CONTAINERS if not KEEP]))
    for c, (took, rc, state) in stops:
        with check("stop: docker stop ends %s within 5 s with exit code 0" % c.name, c.name):
            assert rc == 0, "docker stop failed"
            assert took < 5, "docker stop took %.1fs" % took
            assert state == "0 false", "after stop: exit code/running = %r" % state
    return summary()


def summary():
    failed = [r for r in RESULTS if not r[1]]
    print("\n%d checks, %d passed, %d failed (%.0fs)" % (len(RESULTS), len(RESULTS) - len(failed), len(failed),
                                                         time.monotonic() - START))
    for name, _, msg in failed:
        print("  FAIL %s: %s" % (name, msg))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
