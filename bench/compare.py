#!/usr/bin/env python3
"""The measuring half of bench/compare.sh (standard library only).

compare.sh installs what is missing, builds the static musl binary, finds the peer and
moves into a private network namespace; then it runs this, which measures every subject in
interleaved rounds, prints the table and writes docs/perf/compare.json. Run compare.sh,
not this: it expects the settings compare.sh exports (FWATCHDOG_BIN, OFWATCHDOG, TOOLS,
NGINX, COMPARE_WORK, COMPARE_JSON).

Subjects. http mode, wrk GET / against:
  direct       nginx itself (`return 200 "ok"`, one worker): the upstream of all the others
  nginx-proxy  a second nginx (one worker per CPU) as a keep-alive reverse proxy to it
  fwatchdog    mode=http upstream_url=<that nginx>, fprocess=sleep (shipped defaults)
  of-watchdog  the same settings
fork mode, wrk POST 5 bytes, the function `cat`:
  spawn-loop   bench/tools.rs spawn: threads that only fork+exec+wait `cat` (the limit)
  fwatchdog    mode=streaming fprocess=cat
  of-watchdog  mode=streaming fprocess=cat
"""
import hashlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E = os.environ
QUICK = E.get("COMPARE_QUICK", "") not in ("", "0")
ROUNDS = int(E.get("COMPARE_ROUNDS") or (1 if QUICK else 3))
SECONDS = int(E.get("COMPARE_SECONDS") or (1 if QUICK else 4))
STARTS = int(E.get("COMPARE_STARTS") or (5 if QUICK else 10))
HTTP_CONNS = [1, 4, 16, 64]
FORK_CONNS = [1, 16]
SETTLE = 2.0  # seconds of quiet before idle RSS is read
BIN = E["FWATCHDOG_BIN"]
OFW = E.get("OFWATCHDOG") or None
TOOLS = E["TOOLS"]
NGINX = E.get("NGINX", "nginx")
WORK = E.get("COMPARE_WORK") or tempfile.mkdtemp(prefix="compare.")
OUT_JSON = E.get("COMPARE_JSON", os.path.join(ROOT, "docs/perf/compare.json"))
LUA = os.path.join(ROOT, "bench/wrk_report.lua")
CPUS = len(os.sched_getaffinity(0))
CLK = os.sysconf("SC_CLK_TCK")
HTTP = ["direct", "nginx-proxy", "fwatchdog", "of-watchdog"]
FORK = ["spawn-loop", "fwatchdog", "of-watchdog"]
WATCHDOGS = ["fwatchdog", "of-watchdog"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

LIVE = []  # every process started and not yet stopped


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    todo, seen = children(pid), []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


class Proc:
    """A process we started; stop() ends it and every process under it, by pid."""

    def __init__(self, name, argv, env, stderr=subprocess.DEVNULL):
        self.name = name
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
        self.pid = self.p.pid
        LIVE.append(self)

    def tree(self):
        return [self.pid] + descendants(self.pid)

    def alive(self):
        return self.p.poll() is None

    def stop(self, term=False):
        kids = descendants(self.pid)
        if term and self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(3)
            except subprocess.TimeoutExpired:
                pass
        for k in kids:  # a function the watchdog started, nginx's workers
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        if self.alive():
            self.p.kill()
        self.p.wait()
        if self in LIVE:
            LIVE.remove(self)


def stop_all(*_):
    for p in list(LIVE):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


def on_signal(sig, _frame):
    stop_all()
    sys.exit(128 + sig)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)

USED_PORTS = set()


def free_port():
    """A free loopback port below the ephemeral range (wrk's own sockets take those)."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    import random
    for port in random.sample(range(max(1024, low - 10000), low), 500):
        if port in USED_PORTS or port == 8081:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        USED_PORTS.add(port)
        return port
    raise RuntimeError("no free port")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def get(port, path="/_/health", timeout=1.0):
    """Status code of one GET, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def wait_healthy(proc, port, path="/_/health", limit=10.0, poll=0.0002):
    """Seconds from the process's spawn to its first 200 on path."""
    while True:
        if get(port, path) == 200:
            return time.perf_counter() - proc.t0
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.p.returncode} before it was healthy")
        if time.perf_counter() - proc.t0 > limit:
            raise RuntimeError(f"{proc.name} not healthy on :{port} after {limit}s")
        time.sleep(poll)


def wait_port(port, limit=10.0):
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"port {port} never opened")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])  # utime, stime (the whole thread group)
        except (OSError, IndexError):
            pass
    return total


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Sampler(threading.Thread):
    """VmRSS of some processes every `interval` seconds, with the time since `t0`."""

    def __init__(self, pids, interval=0.05, t0=None):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.t0 = t0 if t0 is not None else time.perf_counter()
        self.samples = {name: [] for name in pids}
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = time.perf_counter() - self.t0
            for name, pid in self.pids.items():
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples[name].append((round(t, 3), kb))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join()
        return self.samples


def child_env(**settings):
    env = {"PATH": E.get("PATH", "/usr/bin:/bin"), "HOME": E.get("HOME", "/root"),
           "TMPDIR": tempfile.mkdtemp(dir=WORK, prefix="tmp.")}
    env.update({k: str(v) for k, v in settings.items()})
    return env


# ---------------------------------------------------------------- subjects

def nginx_conf(name, body, workers):
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes {workers}; error_log stderr error; pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
{body}
}}
""")
    return d, conf


def start_nginx(name, body, workers, port):
    d, conf = nginx_conf(name, body, workers)
    p = Proc(name, [NGINX, "-p", d, "-c", conf], child_env())
    wait_port(port)
    return p


def watchdog_cmd(who, mode, port, upstream=None):
    """argv and environment of fwatchdog or of-watchdog, both with the same settings."""
    if mode == "http":
        settings = {"mode": "http", "upstream_url": f"http://127.0.0.1:{upstream}",
                    "fprocess": "sleep 1000000"}
    else:
        settings = {"mode": "streaming", "fprocess": "cat"}
    if who == "fwatchdog":
        # Shipped defaults but for the ports; metrics stay on, as of-watchdog's always are.
        settings.update(PORT=port, metrics_port=free_port())
        return [BIN], child_env(**settings)
    settings.update(port=port)  # of-watchdog: lowercase port, metrics always on 8081
    return [OFW], child_env(**settings)


def start_watchdog(who, mode, port, upstream=None):
    argv, env = watchdog_cmd(who, mode, port, upstream)
    return Proc(f"{who}-{mode}", argv, env)


def time_to_healthy(who, mode, port, upstream):
    """Milliseconds from spawn to the first 200 on /_/health, by bench/tools.rs (no Python
    in the way); it kills the watchdog and its function afterwards."""
    argv, env = watchdog_cmd(who, mode, port, upstream)
    out = subprocess.run([TOOLS, "healthy", str(port)] + argv, env=env, capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{who} ({mode} mode) never became healthy: {out.stderr.strip()}")
    return float(out.stdout.strip())


def warm(port, n=20, path="/"):
    for _ in range(n):
        get(port, path)


def wrk(port, conns, secs, body=None):
    threads = max(1, min(conns, CPUS))
    env = dict(E)
    env.pop("WRK_BODY", None)
    if body is not None:
        env["WRK_BODY"] = body
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
            "-s", LUA, f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=secs + 60)
    rep = {"pcts": []}
    for line in out.stdout.splitlines():
        f = line.split()
        if not f or f[0] != "REPORT":
            continue
        if f[1] == "requests":
            rep["requests"] = int(f[2])
        elif f[1] == "duration_us":
            rep["duration_s"] = int(f[2]) / 1e6
        elif f[1] == "errors":
            rep["errors"] = dict(zip(["connect", "read", "write", "status", "timeout"], map(int, f[2:7])))
        elif f[1] == "latency_us":
            rep["lat_min_us"], rep["lat_max_us"] = int(f[2]), int(f[3])
            rep["lat_mean_us"] = float(f[4])
        elif f[1] == "p":
            rep["pcts"].append([float(f[2]), int(f[3])])
    if "requests" not in rep or not rep.get("duration_s"):
        raise RuntimeError(f"wrk gave no report: {out.stdout[-500:]} {out.stderr[-500:]}")
    good = rep["requests"] - rep["errors"]["status"]  # non-2xx answers do not count
    rep["rps"] = round(good / rep["duration_s"], 1)
    pc = dict((p, v) for p, v in rep["pcts"])
    rep["p50_us"], rep["p99_us"] = pc.get(50.0), pc.get(99.0)
    if sum(rep["errors"].values()):
        log(f"   warning: errors on :{port} at {conns} connections: {rep['errors']}")
    return rep


def measure(fn, cpu_pids=None, rss_pid=None):
    """Run fn() (a wrk run) and add the CPU the given processes used per request, and
    the peak RSS of rss_pid while it ran."""
    sampler = Sampler({"x": rss_pid}) if rss_pid else None
    if sampler:
        sampler.start()
    t0 = cpu_ticks(cpu_pids) if cpu_pids else 0
    rep = fn()
    if cpu_pids:
        used = cpu_ticks(cpu_pids) - t0
        rep["cpu_us_per_req"] = round(used / CLK * 1e6 / max(1, rep["requests"]), 2)
    if sampler:
        s = sampler.stop()["x"]
        if s:
            rep["rss_peak_kb"] = max(kb for _, kb in s)
    return rep


def spawn_loop(conns, secs):
    out = subprocess.run([TOOLS, "spawn", str(conns), str(secs), "cat"],
                         capture_output=True, text=True, timeout=secs + 60, check=True)
    return {"rps": float(out.stdout.strip())}


def rotate(xs, r):
    r %= len(xs)
    return xs[r:] + xs[:r]


# ---------------------------------------------------------------- machine

def proc_stat_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]


def own_ticks():
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system) * CLK


def busy_pct(seconds=1.0):
    a = proc_stat_busy()
    time.sleep(seconds)
    return min(100.0, round(100 * (proc_stat_busy() - a) / CLK / seconds / os.cpu_count(), 1))


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def os_name():
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def binary_info(path, label):
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    info = {"path": label, "size_bytes": os.path.getsize(path), "sha256": digest[:16],
            "file": first_line(["file", "-b", path])}
    if info["file"]:
        info["static"] = "statically linked" in info["file"] or "static-pie" in info["file"]
        info["file"] = ", ".join(p.strip() for p in info["file"].split(",")
                                 if "BuildID" not in p)
    return info


def rel(path):
    p = os.path.abspath(path)
    return os.path.relpath(p, ROOT) if p.startswith(ROOT + os.sep) else os.path.basename(p)


# ---------------------------------------------------------------- the run

def main():
    t_start = time.time()
    have_ofw = OFW is not None
    subjects_http = [s for s in HTTP if have_ofw or s != "of-watchdog"]
    subjects_fork = [s for s in FORK if have_ofw or s != "of-watchdog"]
    per_round = (len(subjects_http) * len(HTTP_CONNS) + len(subjects_fork) * len(FORK_CONNS)) * (SECONDS + 0.3) \
        + 2 * SETTLE + len(subjects_http) + 2
    est = ROUNDS * per_round + 2 * (3 * SECONDS + 2.5) + 4 * STARTS * 0.05 + 2
    log(f"== {ROUNDS} interleaved round(s) of {SECONDS}s runs; about {est / 60:.1f} min of measuring")
    machine = {
        "nproc": os.cpu_count(), "cpus_usable": CPUS, "kernel": platform.release(),
        "cpu_model": cpu_model(), "os": os_name(),
        "mem_total_kb": int(open("/proc/meminfo").readline().split()[1]),
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
        "busy_pct_before": busy_pct(),
        "network": E.get("COMPARE_NETNS", "host"),
    }
    log(f"   machine: {machine['nproc']} CPUs ({machine['cpu_model']}), load {' '.join(machine['loadavg_before'])},"
        f" {machine['busy_pct_before']}% busy before the run")
    busy0, own0, wall0 = proc_stat_busy(), own_ticks(), time.perf_counter()

    ofw_info = None
    if have_ofw:
        ofw_info = binary_info(OFW, E.get("OFWATCHDOG_LABEL", "of-watchdog (peer binary)"))
        v = first_line([OFW, "-version"]) or ""
        m = re.search(r"Version:\s*(\S+)\s+SHA:\s*(\w+)", v)
        ofw_info["version"] = f"{m.group(1)} ({m.group(2)[:12]})" if m else v
    fw_info = binary_info(BIN, rel(BIN))
    fw_info["version"] = first_line([BIN, "--version"])
    fw_info["build"] = E.get("FWATCHDOG_BUILD", "")

    up = free_port()
    upstream = start_nginx("nginx-upstream", f'  server {{ listen 127.0.0.1:{up}; location / {{ return 200 "ok"; }} }}', 1, up)
    px = free_port()
    proxy = start_nginx("nginx-proxy", f"""  upstream fn {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; keepalive_timeout 300s; }}
  server {{ listen 127.0.0.1:{px};
    location / {{ proxy_pass http://fn; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}""", "auto", px)
    nginx_version = first_line([NGINX, "-v"])

    rounds = []
    for r in range(ROUNDS):
        rd = {"round": r + 1, "http": {}, "fork": {}, "idle_rss_kb": {"http": {}, "fork": {}}}
        # ---- http mode: fresh watchdogs each round
        wd = {}
        ports = {"direct": up, "nginx-proxy": px}
        for who in WATCHDOGS:
            if who == "of-watchdog" and not have_ofw:
                continue
            ports[who] = free_port()
            wd[who] = start_watchdog(who, "http", ports[who], up)
            wait_healthy(wd[who], ports[who], poll=0.005)
            warm(ports[who])
        time.sleep(SETTLE)
        for who, p in wd.items():
            rd["idle_rss_kb"]["http"][who] = rss_kb(p.pid)
        for s in subjects_http:  # warm the pools, not measured
            wrk(ports[s], 16, 1)
        order = rotate(subjects_http, r)
        log(f"-- round {r + 1}/{ROUNDS}: http mode, order {', '.join(order)}")
        for c in HTTP_CONNS:
            rd["http"][str(c)] = {}
            for s in order:
                cpu_pids = wd[s].tree() if s in wd else (proxy.tree() if s == "nginx-proxy" else None)
                rss_pid = wd[s].pid if s in wd else None
                rep = measure(lambda: wrk(ports[s], c, SECONDS), cpu_pids, rss_pid)
                rd["http"][str(c)][s] = rep
            log("   c=%-3d %s" % (c, "  ".join(f"{s} {rd['http'][str(c)][s]['rps']:,.0f}" for s in subjects_http)))
        for p in wd.values():
            p.stop()
        # ---- fork mode
        wd = {}
        ports = {}
        for who in WATCHDOGS:
            if who == "of-watchdog" and not have_ofw:
                continue
            ports[who] = free_port()
            wd[who] = start_watchdog(who, "fork", ports[who])
            wait_healthy(wd[who], ports[who], poll=0.005)
            warm(ports[who])
        time.sleep(SETTLE)
        for who, p in wd.items():
            rd["idle_rss_kb"]["fork"][who] = rss_kb(p.pid)
        order = rotate(subjects_fork, r)
        log(f"-- round {r + 1}/{ROUNDS}: fork mode (cat), order {', '.join(order)}")
        for c in FORK_CONNS:
            rd["fork"][str(c)] = {}
            for s in order:
                if s == "spawn-loop":
                    rep = spawn_loop(c, SECONDS)
                else:
                    rep = measure(lambda: wrk(ports[s], c, SECONDS, body="hello"), [wd[s].pid], wd[s].pid)
                rd["fork"][str(c)][s] = rep
            log("   c=%-3d %s" % (c, "  ".join(f"{s} {rd['fork'][str(c)][s]['rps']:,.0f}" for s in subjects_fork)))
        for p in wd.values():
            p.stop()
        rounds.append(rd)

    # ---- RSS over a run: each watchdog alone, fresh, sampled from its spawn
    log("-- RSS over a run (http mode): idle, then 1, 16 and 64 connections, then idle")
    rss_run = {}
    for who in WATCHDOGS:
        if who == "of-watchdog" and not have_ofw:
            continue
        port = free_port()
        p = start_watchdog(who, "http", port, up)
        sampler = Sampler({who: p.pid}, 0.05, t0=p.t0)
        sampler.start()
        phases = []
        wait_healthy(p, port, poll=0.001)
        t = time.perf_counter() - p.t0
        time.sleep(max(0.0, 1.0 - t))
        phases.append(["start, idle", 0.0, round(time.perf_counter() - p.t0, 3)])
        for c in (1, 16, 64):
            a = time.perf_counter() - p.t0
            wrk(port, c, SECONDS)
            phases.append([f"{c} conn" + ("s" if c > 1 else ""), round(a, 3), round(time.perf_counter() - p.t0, 3)])
        a = time.perf_counter() - p.t0
        time.sleep(1.5)
        phases.append(["idle", round(a, 3), round(time.perf_counter() - p.t0, 3)])
        samples = sampler.stop()[who]
        rss_run[who] = {"samples": samples, "phases": phases,
                        "peak_kb": max(kb for _, kb in samples), "end_kb": samples[-1][1]}
        p.stop()
        log(f"   {who}: peak {rss_run[who]['peak_kb']} kB, at the end {rss_run[who]['end_kb']} kB")

    # ---- start to healthy, alternating the two watchdogs
    log(f"-- start to healthy, median of {STARTS}")
    startup = {"http": {}, "fork": {}}
    for mode in ("http", "fork"):
        for i in range(STARTS):
            for who in (WATCHDOGS if i % 2 == 0 else WATCHDOGS[::-1]):
                if who == "of-watchdog" and not have_ofw:
                    continue
                if who == "of-watchdog" and not port_free(8081):
                    time.sleep(0.05)
                startup[mode].setdefault(who, []).append(time_to_healthy(who, mode, free_port(), up))
        log("   %s mode: %s" % (mode, "  ".join(f"{w} {statistics.median(v):.2f} ms" for w, v in startup[mode].items())))

    proxy.stop(term=True)
    upstream.stop(term=True)
    wall = time.perf_counter() - wall0
    other = (proc_stat_busy() - busy0) - (own_ticks() - own0)
    machine["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    machine["other_cpu_pct"] = round(max(0.0, 100 * other / CLK / wall / os.cpu_count()), 1)
    machine["busy_pct_after"] = busy_pct()

    result = {
        "schema": 1,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "command": "bench/compare.sh",
        "settings": {"rounds": ROUNDS, "seconds": SECONDS, "quick": QUICK, "starts": STARTS,
                     "http_connections": HTTP_CONNS, "fork_connections": FORK_CONNS,
                     "wrk_threads": f"min(connections, {CPUS})", "settle_s": SETTLE,
                     "duration_s": round(time.time() - t_start, 1)},
        "machine": machine,
        "tools": {"wrk": first_line(["wrk", "--version"]), "nginx": nginx_version,
                  "rustc": E.get("RUSTC_VERSION")},
        "binaries": {"fwatchdog": fw_info, "of-watchdog": ofw_info},
        "of_watchdog_note": None if have_ofw else "of-watchdog not found: set PEER_OFWATCHDOG to its binary",
        "subjects": {"http": subjects_http, "fork": subjects_fork},
        "rounds": rounds,
        "rss_run": rss_run,
        "startup_ms": startup,
    }
    summarize(result)
    os.makedirs(os.path.dirname(OUT_JSON), exist_ok=True)
    with open(OUT_JSON, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print_table(result)
    log(f"wrote {rel(OUT_JSON)} ({result['settings']['duration_s']:.0f} s in all)")


# ---------------------------------------------------------------- summary

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(res):
    """Medians over rounds, and each figure as a ratio to its baselines: the median of
    the ratios taken within each round (a round's subjects ran minutes apart at most)."""
    rounds = res["rounds"]
    have_ofw = res["binaries"]["of-watchdog"] is not None
    rows = []

    def per_round(getter):
        out = []
        for rd in rounds:
            try:
                out.append(getter(rd))
            except (KeyError, TypeError):
                out.append(None)
        return out

    def ratios(vals, bases):
        out = {}
        for name, bvals in bases.items():
            rs = [v / b for v, b in zip(vals, bvals) if v is not None and b]
            if rs:
                out[name] = round(statistics.median(rs), 3)
        return out

    def add(group, figure, unit, subject, vals, bases, better, extra=None):
        row = {"group": group, "figure": figure, "unit": unit, "subject": subject,
               "median": med(vals), "rounds": vals, "ratios": ratios(vals, bases), "better": better,
               "ratio_rounds": {b: [round(v / x, 3) if v is not None and x else None for v, x in zip(vals, bv)]
                                for b, bv in bases.items()}}
        if extra:
            row.update(extra)
        rows.append(row)
        return row

    hs = res["subjects"]["http"]

    def http_bases(s, table):
        """direct: none; nginx-proxy: direct; the watchdogs: both nginx, and fwatchdog also of-watchdog."""
        names = {"direct": [], "nginx-proxy": ["direct"], "of-watchdog": ["direct", "nginx-proxy"],
                 "fwatchdog": ["direct", "nginx-proxy", "of-watchdog"]}[s]
        return {b: table[b] for b in names if b in table}

    for c in HTTP_CONNS:
        g = f"http mode, {c} connection" + ("s" if c > 1 else "")
        tput = {s: per_round(lambda rd, s=s: rd["http"][str(c)][s]["rps"]) for s in hs}
        for s in hs:
            add(g, "throughput", "req/s", s, tput[s], http_bases(s, tput), "higher")
        if c in (1, 16):
            for q in ("p50", "p99"):
                lat = {s: per_round(lambda rd, s=s: rd["http"][str(c)][s][f"{q}_us"]) for s in hs}
                for s in hs:
                    bases = http_bases(s, lat)
                    extra = None
                    if s != "direct" and q == "p50":
                        adds = [v - d for v, d in zip(lat[s], lat["direct"]) if v is not None and d is not None]
                        extra = {"added_us_vs_direct": med(adds)}
                    add(g, f"latency {q}", "µs", s, lat[s], bases, "lower", extra)
            cpu = {s: per_round(lambda rd, s=s: rd["http"][str(c)][s]["cpu_us_per_req"]) for s in hs if s not in ("direct",)}
            for s in cpu:
                bases = {}
                if s != "nginx-proxy":
                    bases["nginx-proxy"] = cpu["nginx-proxy"]
                if s == "fwatchdog" and have_ofw:
                    bases["of-watchdog"] = cpu["of-watchdog"]
                add(g, "proxy CPU per request", "µs", s, cpu[s], bases, "lower")
    # RSS under load: the peak over the 16- and 64-connection runs
    wds = [w for w in WATCHDOGS if w in hs]
    rss = {w: per_round(lambda rd, w=w: max(rd["http"][c][w].get("rss_peak_kb") or 0 for c in ("16", "64"))) for w in wds}
    for w in wds:
        add("http mode, 16 and 64 connections", "RSS under load (peak)", "kB", w, rss[w],
            {"of-watchdog": rss["of-watchdog"]} if w == "fwatchdog" and have_ofw else {}, "lower")
    fs = res["subjects"]["fork"]
    for c in FORK_CONNS:
        g = f"fork mode (cat), {c} connection" + ("s" if c > 1 else "")
        tput = {s: per_round(lambda rd, s=s: rd["fork"][str(c)][s]["rps"]) for s in fs}
        for s in fs:
            bases = {b: tput[b] for b in fs if b != s and (b == "spawn-loop" or (s == "fwatchdog" and b == "of-watchdog"))}
            add(g, "throughput", "req/s", s, tput[s], bases, "higher")
        lat = {s: per_round(lambda rd, s=s: rd["fork"][str(c)][s]["p50_us"]) for s in fs if s != "spawn-loop"}
        for s in lat:
            add(g, "latency p50", "µs", s, lat[s], {"of-watchdog": lat["of-watchdog"]} if s == "fwatchdog" and have_ofw else {}, "lower")
        cpu = {s: per_round(lambda rd, s=s: rd["fork"][str(c)][s]["cpu_us_per_req"]) for s in fs if s != "spawn-loop"}
        for s in cpu:
            add(g, "watchdog CPU/request (cat not counted)", "µs", s, cpu[s],
                {"of-watchdog": cpu["of-watchdog"]} if s == "fwatchdog" and have_ofw else {}, "lower")
    for mode in ("http", "fork"):
        idle = {w: per_round(lambda rd, w=w: rd["idle_rss_kb"][mode][w]) for w in wds}
        for w in wds:
            add(f"idle ({mode} mode)", "RSS", "kB", w, idle[w],
                {"of-watchdog": idle["of-watchdog"]} if w == "fwatchdog" and have_ofw else {}, "lower")
    for mode in ("http", "fork"):
        st = res["startup_ms"][mode]
        for w in wds:
            row = add(f"start ({mode} mode)", "start to healthy", "ms", w, st[w], {}, "lower")
            row["rounds_are"] = "starts"
            if w == "fwatchdog" and have_ofw:
                row["ratios"] = {"of-watchdog": round(med(st[w]) / med(st["of-watchdog"]), 3)}
    sizes = {w: res["binaries"][w]["size_bytes"] for w in wds}
    for w in wds:
        add("binary", "size", "bytes", w, [sizes[w]],
            {"of-watchdog": [sizes["of-watchdog"]]} if w == "fwatchdog" and have_ofw else {}, "lower")
    res["rows"] = rows

    # the latency distribution at 1 connection: per percentile, the median over rounds
    dist = {}
    for s in hs:
        by_p = {}
        for rd in rounds:
            for p, v in rd["http"]["1"][s]["pcts"]:
                by_p.setdefault(p, []).append(v)
        dist[s] = [[p, med(v)] for p, v in sorted(by_p.items())]
    res["latency_c1_us"] = dist

    def find(group, figure, subject):
        for row in rows:
            if row["group"] == group and row["figure"] == figure and row["subject"] == subject:
                return row
        return None

    # Every target of the performance issue: a ratio to a baseline of the same run, or a
    # bound on a figure. "got" is what the table shows, "rounds" the per-round ratios.
    targets = []

    def ratio_target(what, group, figure, base, target, at_most=False):
        row = find(group, figure, "fwatchdog")
        ratio = row["ratios"].get(base) if row else None
        met = ratio is not None and (ratio <= target if at_most else ratio >= target)
        targets.append({"what": what, "goal": f"{'≤' if at_most else '≥'} {target:g}×", "target": target,
                        "ratio": ratio, "got": None if ratio is None else f"{ratio:.2f}×",
                        "rounds": row["ratio_rounds"].get(base) if row else None, "met": met})

    def bound_target(what, value, bound, unit, fmt_v="{:.2f}"):
        targets.append({"what": what, "goal": f"≤ {bound:g} {unit}", "target": bound, "ratio": None,
                        "got": None if value is None else f"{fmt_v.format(value)} {unit}",
                        "met": value is not None and value <= bound})

    g16, g1 = "http mode, 16 connections", "http mode, 1 connection"
    ratio_target("http mode, 16 connections: throughput vs of-watchdog", g16, "throughput", "of-watchdog", 3.0)
    ratio_target("http mode, 16 connections: throughput vs nginx-proxy", g16, "throughput", "nginx-proxy", 0.8)
    p50 = find(g1, "latency p50", "fwatchdog")
    bound_target("http mode, 1 connection: p50 added over direct", p50 and p50.get("added_us_vs_direct"),
                 20, "µs", "{:+.0f}")
    ratio_target("http mode, 1 connection: p99 no worse than of-watchdog's", g1, "latency p99", "of-watchdog",
                 1.0, at_most=True)
    gf = "fork mode (cat), 16 connections"
    ratio_target("fork mode (cat), 16 connections: throughput vs of-watchdog", gf, "throughput", "of-watchdog", 1.4)
    ratio_target("fork mode (cat), 16 connections: throughput vs the spawn loop", gf, "throughput", "spawn-loop", 0.85)
    for mode in ("http", "fork"):
        rss = find(f"idle ({mode} mode)", "RSS", "fwatchdog")
        bound_target(f"idle RSS, {mode} mode", rss and rss["median"] / 1000, 3, "MB", "{:.1f}")
        st = find(f"start ({mode} mode)", "start to healthy", "fwatchdog")
        bound_target(f"exec to first healthy answer, {mode} mode (median)", st and st["median"], 2, "ms")
    res["targets"] = targets


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("req/s", "kB", "bytes") or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def ratio_text(row):
    parts = [f"{r:.2f}x {b}" for b, r in row["ratios"].items()]
    if row.get("added_us_vs_direct") is not None:
        parts.append(f"{row['added_us_vs_direct']:+.0f} µs vs direct")
    return ", ".join(parts)


def spread(row):
    vs = [v for v in row["rounds"] if v is not None]
    if len(vs) < 2:
        return ""
    return f"{fmt(min(vs), row['unit'])}–{fmt(max(vs), row['unit'])}"


def print_table(res):
    s = res["settings"]
    print()
    print(f"fwatchdog vs baselines: {s['rounds']} interleaved round(s), {s['seconds']} s per run, medians "
          f"(range over rounds); each ratio is the median of the per-round ratios")
    if res["of_watchdog_note"]:
        print(f"note: {res['of_watchdog_note']}; the other subjects were measured")
    group = None
    for row in res["rows"]:
        if row["group"] != group:
            group = row["group"]
            print(f"\n== {group}")
        print(f"  {row['figure'] + ' (' + row['unit'] + ')':<40} {row['subject']:<12} {fmt(row['median'], row['unit']):>11}"
              f"  {spread(row):<17} {ratio_text(row)}")
    print()
    for t in res["targets"]:
        if t["got"] is None:
            print(f"target: {t['what']}: not measured")
            continue
        r = t["got"]
        if t.get("rounds") and len(t["rounds"]) > 1:
            r += " (rounds: " + ", ".join(f"{x:.2f}" for x in t["rounds"] if x is not None) + ")"
        print(f"target: {t['what']}: {r} (target {t['goal']}): {'met' if t['met'] else 'NOT met'}")
    m = res["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}; other processes used "
          f"{m['other_cpu_pct']}% of the CPUs during the run; load {' '.join(m['loadavg_before'])} before, "
          f"{' '.join(m['loadavg_after'])} after")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
