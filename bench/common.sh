# Shared by the bench scripts: build the release binary and the helper tool, and small
# helpers to read figures. Source it from bash.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/target/bench}
DURATION=${BENCH_SECONDS:-5}
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release --quiet --target x86_64-unknown-linux-musl)
fi
BIN=${FWATCHDOG_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/fwatchdog}
[ "$OUT/tools" -nt "$ROOT/bench/tools.rs" ] || rustc -O --edition 2021 -o "$OUT/tools" "$ROOT/bench/tools.rs"
TOOLS=$OUT/tools
printf 'wrk.method = "POST"\nwrk.body = "hello"\n' > "$OUT/post.lua"

# A free port below the kernel's ephemeral range, which wrk's own connections draw from
# (a server binding a port from that range now and then found it taken).
free_port() {
  python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for port in random.sample(range(max(1024, low - 10000), low), 200):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()
PY
}
wait_port() { for _ in $(seq 1 500); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.01; done; echo "port $1 never opened" >&2; return 1; }
# requests/s from wrk output
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
# p50 latency in microseconds from wrk --latency output
p50_us() { awk '/^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000}}' "$1"; }
# the median of the arguments, to one decimal
med() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]),1))" "$@"; }
# CPU time (user + system) process $1 has used, in clock ticks
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
pct() { python3 -c "print(f'{100*$1/$2:.0f}')"; }
# Leftover servers and watchdogs (from killed test runs, say) wake up on their own and skew
# every figure on a small VM; say so before measuring.
stray=$(pgrep -fc 'tests/upstream.py|target/debug/fwatchdog' || true)
if [ "${stray:-0}" -gt 0 ]; then
  echo "warning: $stray leftover test processes are running (pgrep -fa 'tests/upstream.py|target/debug/fwatchdog'); figures will be low" >&2
fi
echo "machine: load average $(cut -d' ' -f1-3 /proc/loadavg), $(ls -d /proc/[0-9]* | wc -l) processes" >&2
