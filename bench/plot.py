#!/usr/bin/env python3
"""Draws what bench/compare.sh measured, from its compare.json, next to that file:
  throughput.svg  http mode req/s against connection count, all four subjects
  latency-c1.svg  http mode latency at 1 connection, by percentile
  rss.svg         both watchdogs' RSS over a load run
  compare.md      the table, the conditions and the command, with the pictures
Usage: plot.py [--no-pictures] DIR/compare.json   (matplotlib: Debian's python3-matplotlib)
"""
import json
import os
import sys

COLORS = {"direct": "#7f7f7f", "nginx-proxy": "#2ca02c", "fwatchdog": "#d62728",
          "of-watchdog": "#1f77b4", "spawn-loop": "#9467bd"}
STYLE = {"direct": ":", "nginx-proxy": "--", "fwatchdog": "-", "of-watchdog": "-."}


def med(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def caption(res):
    s = res["settings"]
    m = res["machine"]
    return (f"{m['nproc']} CPUs, {s['rounds']} round(s) of {s['seconds']} s, "
            f"{res['binaries']['fwatchdog']['version'] or 'fwatchdog'} (static musl), {res['generated'][:10]}")


def pictures(res, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, FixedLocator
    plt.rcParams.update({"svg.hashsalt": "fwatchdog-compare", "svg.fonttype": "none",
                         "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    meta = {"Date": None, "Creator": "bench/plot.py"}
    written = []

    # ---- throughput against connections
    conns = res["settings"]["http_connections"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ends = []
    for s in res["subjects"]["http"]:
        per_c = [[rd["http"][str(c)][s]["rps"] for rd in res["rounds"]] for c in conns]
        mid = [med(v) for v in per_c]
        lo = [m - min(v) for m, v in zip(mid, per_c)]
        hi = [max(v) - m for m, v in zip(mid, per_c)]
        ax.errorbar(conns, mid, yerr=[lo, hi], label=s, color=COLORS[s], linestyle=STYLE[s],
                    marker="o", capsize=3, linewidth=2 if s == "fwatchdog" else 1.5)
        ends.append((mid[-1], s))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(conns))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(conns[0] / 1.3, conns[-1] * 1.8)
    ax.set_ylim(bottom=0)
    # the value at the last count beside each line, nudged apart where lines end close together
    top = ax.get_ylim()[1]
    placed = []
    for v, s in sorted(ends):
        y = max([v] + [p + 0.045 * top for p in placed[-1:]])
        placed.append(y)
        ax.annotate(f"{v:,.0f}", (conns[-1], v), xytext=(conns[-1] * 1.08, y), textcoords="data",
                    va="center", fontsize=8, color=COLORS[s])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_xlabel("concurrent connections (wrk)")
    ax.set_ylabel("requests per second")
    ax.set_title("http mode: a 2-byte nginx answer, direct and through each proxy", fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    fig.text(0.99, 0.01, caption(res) + "; bars: range over rounds", ha="right", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(os.path.join(outdir, "throughput.svg"), metadata=meta)
    plt.close(fig)
    written.append("throughput.svg")

    # ---- latency by percentile at 1 connection
    import math
    fig, ax = plt.subplots(figsize=(7, 4.2))
    tx = lambda p: -math.log10(1 - p / 100)  # noqa: E731 - 90 → 1, 99 → 2, 99.9 → 3
    for s, pts in res["latency_c1_us"].items():
        pts = [(p, v) for p, v in pts if v is not None and p <= 99.99]
        ax.plot([tx(p) for p, _ in pts], [v for _, v in pts], label=s, color=COLORS[s],
                linestyle=STYLE[s], linewidth=2 if s == "fwatchdog" else 1.5, marker=".", markersize=4)
    ticks = [50, 90, 99, 99.9, 99.99]
    ax.xaxis.set_major_locator(FixedLocator([tx(p) for p in ticks]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 - 100 * 10 ** -v:.10g}"))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (µs, log scale)")
    ax.set_title("http mode, 1 connection: latency by percentile (median over rounds)", fontsize=10)
    ax.legend(loc="upper left", fontsize=9)
    fig.text(0.99, 0.01, caption(res), ha="right", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(os.path.join(outdir, "latency-c1.svg"), metadata=meta)
    plt.close(fig)
    written.append("latency-c1.svg")

    # ---- RSS over a run
    runs = res["rss_run"]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        first = next(iter(runs.values()))
        shades = ["#ffffff", "#f3f3f3", "#e6e6e6", "#d9d9d9", "#ffffff"]
        for i, (label, a, b) in enumerate(first["phases"]):
            ax.axvspan(a, b, color=shades[i % len(shades)], zorder=0)
            ax.text((a + b) / 2, 1.01, label, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, color="#444")
        for who, run in runs.items():
            t = [x for x, _ in run["samples"]]
            mib = [kb / 1024 for _, kb in run["samples"]]
            ax.plot(t, mib, label=f"{who} (peak {run['peak_kb'] / 1024:.1f} MiB)", color=COLORS[who],
                    linewidth=2 if who == "fwatchdog" else 1.5, linestyle=STYLE[who])
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.set_xlabel("seconds since the watchdog was started")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title("http mode: resident memory over a load run (VmRSS every 50 ms)", fontsize=10, pad=18)
        ax.legend(loc="center right", fontsize=9)
        fig.text(0.99, 0.01, caption(res), ha="right", fontsize=7, color="#555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(os.path.join(outdir, "rss.svg"), metadata=meta)
        plt.close(fig)
        written.append("rss.svg")
    return written


def fmt(v, unit):
    if v is None:
        return "–"
    if unit in ("req/s", "kB", "bytes") or abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def ratio_text(row):
    parts = [f"{r:.2f}× {b}" for b, r in row["ratios"].items()]
    if row.get("added_us_vs_direct") is not None:
        parts.append(f"{row['added_us_vs_direct']:+.0f} µs vs direct")
    return ", ".join(parts)


def spread(row):
    vs = [v for v in row["rounds"] if v is not None]
    if len(vs) < 2:
        return ""
    return f"{fmt(min(vs), row['unit'])}–{fmt(max(vs), row['unit'])}"


def markdown(res, pics):
    s, m, b = res["settings"], res["machine"], res["binaries"]
    fw, ofw = b["fwatchdog"], b["of-watchdog"]
    L = ["# fwatchdog side by side: one run", "",
         f"Generated by `bench/compare.sh` on {res['generated'].replace('T', ' ').replace('Z', ' UTC')}; "
         "do not edit, run it again (about 6 minutes on 2 cores). The numbers are in "
         "[compare.json](compare.json), every round of them.", ""]
    if res.get("of_watchdog_note"):
        L += [f"**{res['of_watchdog_note']}**; the other subjects were measured.", ""]
    L += ["## Targets", "", "| target | goal | this run | met |", "|---|---|---|---|"]
    for t in res["targets"]:
        if t["got"] is None:
            L.append(f"| {t['what']} | {t['goal']} | not measured | – |")
            continue
        rs = [x for x in (t.get("rounds") or []) if x is not None]
        each = f" (rounds: {', '.join(f'{x:.2f}' for x in rs)})" if len(rs) > 1 else ""
        L.append(f"| {t['what']} | {t['goal']} | {t['got']}{each} | {'yes' if t['met'] else '**no**'} |")
    L += [""]
    names = {"throughput.svg": "http mode throughput against connections",
             "latency-c1.svg": "http mode latency by percentile at 1 connection",
             "rss.svg": "RSS of both watchdogs over a load run"}
    if pics:
        L += ["## Pictures", ""]
        for p in pics:
            L += [f"![{names[p]}]({p})", ""]
    L += ["## Every figure and its baselines", "",
          f"Median over {s['rounds']} interleaved round(s) of {s['seconds']} s per run (range over the rounds "
          "beside it). A ratio is the median of the ratios taken within each round. Start to healthy is "
          f"the median of {s['starts']} starts.", "",
          "| scenario | figure | subject | median | range | ratio to baselines |", "|---|---|---|---:|---|---|"]
    group = None
    for row in res["rows"]:
        g = row["group"] if row["group"] != group else ""
        group = row["group"]
        subj = f"**{row['subject']}**" if row["subject"] == "fwatchdog" else row["subject"]
        L.append(f"| {g} | {row['figure']} ({row['unit']}) | {subj} | {fmt(row['median'], row['unit'])} | "
                 f"{spread(row)} | {ratio_text(row)} |")
    L += ["", "## Conditions", ""]
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_total_kb'] / 1048576:.0f} GiB, "
             f"{m['os']}, kernel {m['kernel']}.")
    L.append(f"- Other processes on the machine used {m['other_cpu_pct']} % of its CPUs during the run "
             f"({m['busy_pct_before']} % busy in the second before it); load average "
             f"{' '.join(m['loadavg_before'])} before, {' '.join(m['loadavg_after'])} after."
             + (" It was busy: the figures are lower and noisier than on a quiet machine, and the ranges over "
                "the rounds say by how much." if m["other_cpu_pct"] >= 5 else ""))
    L.append(f"- fwatchdog: `{fw['path']}` ({fw['version']}), {fw['size_bytes']:,} bytes, {fw['file']}; "
             f"sha256 {fw['sha256']}…; built with `{fw.get('build') or '?'}` ({res['tools'].get('rustc') or 'rustc ?'}).")
    if ofw:
        L.append(f"- of-watchdog {ofw['version']}, {ofw['size_bytes']:,} bytes, {ofw['file']}.")
    wrk = (res["tools"]["wrk"] or "wrk").split(" Copyright")[0]
    ngx = (res["tools"]["nginx"] or "nginx").replace("nginx version: ", "")
    L.append(f"- Load: {wrk}, `-t` = min(connections, {m['cpus_usable']}), on the same machine "
             "(so it takes CPU from the subject, the same for all). Upstream: "
             f"{ngx}, one worker, `return 200 \"ok\"`.")
    L.append("- nginx-proxy: a second nginx, one worker per CPU, `proxy_pass` to an `upstream` with "
             "`keepalive 64`, `proxy_http_version 1.1`, `proxy_set_header Connection \"\"`.")
    L.append("- Watchdogs: their defaults but the ports (metrics on for both, as of-watchdog's always are; "
             "logs to /dev/null). http mode: `mode=http upstream_url=<the nginx> fprocess='sleep 1000000'`. "
             "Fork mode: `mode=streaming fprocess=cat`, POST of 5 bytes.")
    L.append("- spawn-loop: `bench/tools.rs spawn`: threads that only start `cat`, write the 5 bytes, read "
             "its output and wait for it, as many threads as connections: the machine's limit for fork mode.")
    L.append("- Per round every subject runs once per scenario, in an order rotated each round; the watchdogs "
             "are started fresh each round and warmed up (1 s at 16 connections, not measured). Non-2xx "
             "answers do not count as throughput.")
    L.append("- Proxy CPU per request: utime+stime of the proxy's processes (/proc/PID/stat) over the run, "
             "divided by its requests. RSS under load: the peak VmRSS sampled every 50 ms during the 16 and "
             "64 connection runs. Idle RSS: after start, 20 requests and 2 s of quiet. Start to healthy: "
             "from spawn to the first 200 on `/_/health`, polled every 0.1 ms by `bench/tools.rs healthy`.")
    netns = "a private network namespace (its own loopback)" if m["network"] == "private" else "the host's network namespace"
    L.append(f"- All in {netns}; the run took {s['duration_s']:.0f} s.")
    L += ["", "Command: `bench/compare.sh` (`COMPARE_ROUNDS`, `COMPARE_SECONDS`; `COMPARE_QUICK=1` for a "
          "quick look that writes to `target/bench/compare/` instead).", ""]
    return "\n".join(L) + "\n"


def main():
    args = sys.argv[1:]
    no_pics = "--no-pictures" in args
    args = [a for a in args if a != "--no-pictures"]
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "docs/perf/compare.json")
    with open(path) as f:
        res = json.load(f)
    outdir = os.path.dirname(os.path.abspath(path))
    pics = [] if no_pics else pictures(res, outdir)
    with open(os.path.join(outdir, "compare.md"), "w") as f:
        f.write(markdown(res, pics))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    where = os.path.relpath(outdir, root) if outdir.startswith(root + os.sep) else outdir
    print(f"plot: wrote {', '.join(pics + ['compare.md'])} in {where}", file=sys.stderr)


if __name__ == "__main__":
    main()
