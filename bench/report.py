"""Builds bench/results/report.md from one bench/run-lab.sh run.

Usage: report.py OUT_DIR DEVICE CONCURRENCY DURATION CLK_TCK
"""
import datetime
import json
import os
import re
import sys

out, device, conc, dur, clk_tck = sys.argv[1:]
clk_tck = int(clk_tck)

ROWS = [
    ("zproxy", "ZProxy (HTTP proxy, DPDK)"),
    ("haproxy", "HAProxy 2.6 (proxy, kernel TCP)"),
    ("nginx", "nginx 1.22 (proxy, kernel TCP)"),
    ("direct", "no proxy (kernel forwarding)"),
    ("zproxy-static", "ZProxy static responder"),
    ("nginx-static", "nginx static `return 200`"),
]


def load(label):
    path = f"{out}/{label}.json"
    if not os.path.exists(path):
        return None
    r = json.load(open(path))["results"]
    meta = json.load(open(f"{out}/{label}.meta"))
    cpu_us = busy = None
    counters = f"{out}/{label}.counters"
    if os.path.exists(counters):
        # ZProxy busy-polls (its OS CPU time is always 100 %): count the TSC
        # cycles of loop iterations that did work, per connection accepted.
        c = dict(re.findall(r"(\w+)=(\d+)", open(counters).read()))
        tsc = int(c["tsc_hz"])
        cpu_us = int(c["busy_cycles"]) / tsc * 1e6 / max(int(c["flows_accepted"]), 1)
        busy = 100 * int(c["busy_cycles"]) / max(int(c["total_cycles"]), 1)
    elif label != "direct":
        secs = meta["cpu_ticks"] / clk_tck
        cpu_us = secs * 1e6 / max(r["completed"], 1)
        busy = 100 * secs / r["elapsed_secs"]
    (i0, t0), (i1, t1) = meta["core0"][:2], meta["core0"][2:]
    client_idle = 100 * (i1 - i0) / max(t1 - t0, 1)
    return r, meta, cpu_us, busy, client_idle


lines = [
    f"# ZProxy lab run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    "",
    "## Test Configuration",
    "",
    f"- Benchmark: zproxy-bench, {conc} concurrent connections, keep-alive off (`Connection: close`), path `/`, "
    f"{dur} measured after a 1 s warm-up; one run per row, all in one session",
    "- Lab (`bench/lab.sh`): client, proxy and upstream network namespaces joined by veth pairs; "
    "upstream: nginx 1.22 serving `/` (20 bytes)",
    f"- ZProxy: `configs/lab.toml` on DPDK `net_{device}` vdevs, worker on lcore 1; peers: `bench/peers/` "
    "(one worker/thread pinned to core 1, upstream keep-alive, no logging) on the same veth ends",
    f"- Machine: {os.cpu_count()} cores; the client and the upstream share core 0, the server under test has core 1",
    "",
    "## Results",
    "",
    "| server | conn/s | success | failures | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU µs/conn | core-1 busy | RSS MiB | client core idle |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
loaded = {}
for label, name in ROWS:
    got = load(label)
    if got is None:
        continue
    loaded[label] = got
    r, meta, cpu_us, busy, idle = got
    lat = r["latency"]
    ms = lambda k: f"{lat[k] / 1000:.2f}"
    cpu = "-" if cpu_us is None else f"{cpu_us:.1f}"
    busy_s = "-" if busy is None else f"{busy:.0f}%"
    rss = "-" if meta["rss_kb"] == 0 else f"{meta['rss_kb'] / 1024:.1f}"
    if meta.get("hugepages_used"):
        rss += f" + {meta['hugepages_used'] * 2} MiB hugepages"
    lines.append(
        f"| {name} | {r['connections_per_sec']:,.0f} | {r['success_rate']:.2f}% | {r['failures_total']} | "
        f"{ms('p50_us')} | {ms('p90_us')} | {ms('p99_us')} | {ms('p999_us')} | {ms('max_us')} | {cpu} | {busy_s} | "
        f"{rss} | {idle:.0f}% |"
    )

lines += ["", "### Ratios (same run)", ""]
def ratio(a, b, what):
    if a in loaded and b in loaded:
        ra, rb = loaded[a][0]["connections_per_sec"], loaded[b][0]["connections_per_sec"]
        ca, cb = loaded[a][2], loaded[b][2]
        s = f"- {what}: {ra / max(rb, 1):.2f}x the connections/s"
        if ca and cb:
            s += f", {cb / ca:.2f}x less CPU per connection"
        lines.append(s)
ratio("zproxy", "haproxy", "ZProxy vs HAProxy")
ratio("zproxy", "nginx", "ZProxy vs nginx (proxy)")
ratio("zproxy-static", "nginx-static", "ZProxy static responder vs nginx static")

saturated = [n for label, n in ROWS if label in loaded and loaded[label][4] < 5]
lines += [
    "",
    "### How to read this",
    "",
    "- CPU µs/conn: ZProxy busy-polls, so its OS CPU time is always 100 %; the figure is TSC cycles of poll-loop "
    "iterations that did work, divided by connections accepted. On veth, the frames ZProxy sends are processed by "
    "the receiving kernel (the client's TCP stack) inside ZProxy's send call, on ZProxy's core: that work is "
    "included, so the figure overstates ZProxy's own cost. Peers: utime+stime of their processes per completed request.",
    "- client core idle: idle share of core 0 during the run. Below 5 % the client/upstream side was saturated, "
    "so the rate is the lab's ceiling, not the server's: compare CPU per connection instead.",
]
if saturated:
    lines.append(f"- Saturated client side in this run: {', '.join(saturated)}.")
open(f"{out}/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
