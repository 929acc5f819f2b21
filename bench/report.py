"""Builds bench/results/report.md from one bench/run-lab.sh run.

Usage: report.py OUT_DIR DEVICE CONCURRENCY DURATION CLK_TCK [TP_CONCURRENCY TP_DURATION TP_BUFFER REPEAT]

Reads, per run LABEL, OUT_DIR/LABEL.json (zproxy-bench) and OUT_DIR/LABEL.meta
(run-lab.sh: the server's CPU ticks or ZProxy's counters before and after,
wall time, peak RSS, core-0 jiffies); links OUT_DIR/plots/LABEL-*.svg. Sections
whose runs are absent are left out.
"""
import datetime
import json
import os
import sys

out, device, conc, dur, clk_tck = sys.argv[1:6]
tp_conc = sys.argv[6] if len(sys.argv) > 6 else "4"
tp_dur = sys.argv[7] if len(sys.argv) > 7 else dur
tp_buf = int(sys.argv[8]) if len(sys.argv) > 8 else 262144
repeat = int(sys.argv[9]) if len(sys.argv) > 9 else 1
clk_tck = int(clk_tck)

MAIN_ROWS = [
    ("zproxy", "ZProxy (HTTP proxy, DPDK)"),
    ("zproxy+log", "ZProxy, access log on (file)"),
    ("zproxy-baseline", "ZProxy, `--baseline` build"),
    ("zproxy+rules", "ZProxy, header rules and rate limits set, not hit"),
    ("zproxy+exception", "ZProxy, TAP exception path on the client port"),
    ("zproxy+capture", "ZProxy, `zproxy capture` running (`tcp port 80`, to /dev/null)"),
    ("zproxy-v6", "ZProxy, IPv6 clients (`--ipv6`)"),
    ("haproxy", "HAProxy 2.6 (proxy, kernel TCP)"),
    ("haproxy-v6", "HAProxy 2.6, IPv6 clients"),
    ("haproxy+log", "HAProxy 2.6, httplog on (UNIX socket, sink to a file)"),
    ("nginx", "nginx 1.22 (proxy, kernel TCP)"),
    ("nginx-v6", "nginx 1.22, IPv6 clients"),
    ("direct", "no proxy (kernel forwarding)"),
    ("zproxy-static", "ZProxy static responder"),
    ("nginx-static", "nginx static `return 200`"),
]
PROXIES = [
    ("zproxy", "ZProxy"),
    ("haproxy", "HAProxy"),
    ("nginx", "nginx"),
    ("direct", "no proxy"),
]
SIZES = [("1m", "1 MiB", 1 << 20), ("100m", "100 MiB", 100 << 20)]


def tsc_hz(label):
    for path in (f"{out}/{label}.counters", f"{out}/tsc_hz"):
        if os.path.exists(path):
            text = open(path).read()
            for tok in text.replace("\n", " ").split():
                if tok.startswith("tsc_hz="):
                    return int(tok.split("=")[1])
            if text.strip().isdigit():
                return int(text.strip())
    return None


def zproxy_delta(before, after):
    """Per-worker counter deltas between two `zproxy stats` documents."""
    return [
        {k: a[k] - b.get(k, 0) for k in a if isinstance(a[k], int)}
        for b, a in zip(before["workers"], after["workers"])
    ]


class Run:
    def __init__(self, label):
        self.label = label
        doc = json.load(open(f"{out}/{label}.json"))
        self.cfg, self.r = doc["config"], doc["results"]
        m = self.meta = json.load(open(f"{out}/{label}.meta"))
        self.cpu_s = self.busy = None
        self.workers = []
        z = m.get("zproxy") or [None, None]
        if z[0] and z[1]:
            # ZProxy busy-polls (its OS CPU time is always 100 %): count the TSC
            # cycles of loop iterations that did work.
            self.workers = zproxy_delta(z[0], z[1])
            hz = tsc_hz(label)
            busy = sum(w["busy_cycles"] for w in self.workers)
            total = sum(w["total_cycles"] for w in self.workers)
            if hz:
                self.cpu_s = busy / hz
            self.busy = 100 * busy / max(total, 1)
        elif m["rss_kb"]:
            self.cpu_s = m["cpu_ticks"] / clk_tck
            self.busy = 100 * self.cpu_s / m["wall_s"]
        (i0, t0), (i1, t1) = m["core0"][:2], m["core0"][2:]
        self.client_idle = 100 * (i1 - i0) / max(t1 - t0, 1)

    def cpu_us_per_req(self):
        if self.cpu_s is None:
            return None
        return self.cpu_s * 1e6 / max(self.r["requests_all"], 1)

    def cpu_s_per_gb(self):
        if self.cpu_s is None or not self.r["bytes_received_all"]:
            return None
        return self.cpu_s / (self.r["bytes_received_all"] / 1e9)

    def rss(self):
        if not self.meta["rss_kb"]:
            return "-"
        s = f"{self.meta['rss_kb'] / 1024:.1f}"
        if self.meta.get("hugepages_used"):
            s += f" + {self.meta['hugepages_used'] * 2} MiB hugepages"
        return s

    def busy_text(self):
        if self.busy is None:
            return "-"
        if len(self.workers) > 1:
            each = " / ".join(
                f"{100 * w['busy_cycles'] / max(w['total_cycles'], 1):.0f}%" for w in self.workers
            )
            return f"{self.busy:.0f}% ({each})"
        return f"{self.busy:.0f}%"

    def lat_ms(self, key):
        if not self.r["successes"]:
            return "-"
        return f"{self.r['latency'][key] / 1000:.2f}"

    def lat_s(self, key):
        if not self.r["successes"]:
            return "-"
        return f"{self.r['latency'][key] / 1e6:.2f}"

    def spread(self, spec):
        """" (min-max of N)" across the rounds of a repeated run, else ""."""
        rounds = getattr(self, "all_rounds", None)
        if not rounds or len(rounds) < 2:
            return ""
        return f" ({format(min(rounds), spec)}–{format(max(rounds), spec)}, {len(rounds)} runs)"

    def charts(self):
        links = []
        for kind, name in (("latency", "CDF"), ("rate", "rate")):
            if os.path.exists(f"{out}/plots/{self.label}-{kind}.svg"):
                links.append(f"[{name}](plots/{self.label}-{kind}.svg)")
        return " ".join(links) or "-"

    def saturation(self):
        notes = []
        if self.client_idle < 5:
            notes.append("client core")
        if self.busy is not None and self.busy >= 90:
            notes.append("server core")
        return ", ".join(notes) or "-"


def primary(x):
    """The figure a row is ranked by: Gbit/s for throughput runs, else successes/s."""
    return x.r["gbit_per_sec"] if x.label.startswith("tp-") else x.r["connections_per_sec"]


def load(label):
    """The run LABEL, or with --repeat the median of its rounds LABEL-rK."""
    if os.path.exists(f"{out}/{label}.json"):
        return Run(label)
    rounds = sorted(
        int(f[len(label) + 2 : -5])
        for f in os.listdir(out)
        if f.startswith(f"{label}-r") and f.endswith(".json") and f[len(label) + 2 : -5].isdigit()
    )
    if not rounds:
        return None
    runs = [Run(f"{label}-r{k}") for k in rounds]
    ranked = sorted(runs, key=primary)
    median = ranked[(len(ranked) - 1) // 2]
    median.all_rounds = [primary(x) for x in runs]
    return median


def success(r):
    return f"{r['success_rate']:.2f}%" if r["completed"] else "none ended"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


lines = [
    f"# ZProxy lab run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
    "",
    "## Test Configuration",
    "",
    "- Lab (`bench/lab.sh`): client, proxy and upstream network namespaces joined by veth pairs; "
    "upstream: nginx 1.22 serving `/` (20 bytes) and `/bytes/N`",
    f"- ZProxy: `configs/lab.toml` on DPDK `net_{device}` vdevs, worker on lcore 1 (CPU 1); peers: `bench/peers/` "
    "(one worker/thread pinned to CPU 1, upstream keep-alive, no logging) on the same veth ends",
    f"- Machine: {os.cpu_count()} cores; the client (zproxy-bench, pinned) and the upstream nginx (pinned) share "
    "CPU 0, the server under test has CPU 1; every run starts a fresh server process",
    "- Server CPU is measured over the whole benchmark run (warm-up included) and divided by the requests that "
    "ended (or bytes received) in that time",
]
if repeat > 1:
    lines.append(
        f"- Every run was made {repeat} times, in {repeat} rounds of the whole sequence; each row shows the round "
        "with the median rate (all its figures from that round), with the range over the rounds after the rate"
    )
loads = []
for f in sorted(os.listdir(out)):
    if f.endswith(".meta"):
        load1 = json.load(open(f"{out}/{f}")).get("load1")
        if load1 is not None:
            loads.append(load1)
if loads:
    lines.append(
        f"- 1-minute load average at the end of each run: {min(loads):.2f} to {max(loads):.2f} (the benchmark "
        "itself accounts for about 2: the client and the server under test; more means other work shared the cores)"
    )

# ---- main: connection benchmark ----------------------------------------------------------
loaded = {label: load(label) for label, _ in MAIN_ROWS}
if any(loaded.values()):
    lines += [
        "",
        "## Connection benchmark",
        "",
        f"zproxy-bench, {conc} concurrent connections, keep-alive off (`Connection: close`), path `/`, "
        f"{dur} measured after a 1 s warm-up; all rows from one session.",
        "",
        "| server | conn/s | success | failures | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | CPU µs/conn "
        "| CPU-1 busy | RSS MiB | client core idle | charts |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, name in MAIN_ROWS:
        x = loaded[label]
        if x is None:
            continue
        r = x.r
        lines.append(
            f"| {name} | {r['connections_per_sec']:,.0f}{x.spread(',.0f')} | {r['success_rate']:.2f}% | "
            f"{r['failures_total']} | {x.lat_ms('p50_us')} | {x.lat_ms('p90_us')} | {x.lat_ms('p99_us')} | {x.lat_ms('p999_us')} | "
            f"{x.lat_ms('max_us')} | {fmt(x.cpu_us_per_req(), '.1f')} | {x.busy_text()} | {x.rss()} | "
            f"{x.client_idle:.0f}% | {x.charts()} |"
        )
    lines += ["", "### Ratios (same run)", ""]

    def ratio(a, b, what):
        if loaded.get(a) and loaded.get(b):
            xa, xb = loaded[a], loaded[b]
            s = f"- {what}: {xa.r['connections_per_sec'] / max(xb.r['connections_per_sec'], 1):.2f}x the connections/s"
            ca, cb = xa.cpu_us_per_req(), xb.cpu_us_per_req()
            if ca and cb:
                s += f", {cb / ca:.2f}x less CPU per connection"
            lines.append(s)

    ratio("zproxy", "zproxy-baseline", "ZProxy vs its `--baseline` build")
    ratio("zproxy+rules", "zproxy", "ZProxy with header rules and rate limits (not hit) vs without")
    ratio("zproxy+exception", "zproxy", "ZProxy with the exception path vs without")
    ratio("zproxy+capture", "zproxy", "ZProxy with a capture running vs without")
    cap = loaded.get("zproxy+capture")
    if cap and os.path.exists(f"{out}/{cap.label}.capture"):
        said = open(f"{out}/{cap.label}.capture").read().strip().splitlines()
        if said:
            lines.append(f"- the capture said: {said[-1]}")
    for label, name in (("zproxy", "ZProxy"), ("zproxy-baseline", "ZProxy `--baseline` build"),
                        ("zproxy+rules", "ZProxy with header rules and rate limits")):
        x = loaded.get(label)
        ticks = x.meta.get("user_ticks") if x else None
        if ticks is not None:
            conns = max(x.r["requests_all"], 1)
            us = ticks / clk_tck * 1e6 / conns
            hz = tsc_hz(x.label)
            cycles = f" (~{us * hz / 1e6:,.0f} cycles at the TSC rate)" if hz else ""
            lines.append(f"- {name}: {us:.2f} µs of user-space CPU per connection{cycles}: the process's "
                         f"utime over the whole run / {conns:,} connections (no PMU here for `perf stat -e cycles:u`)")
    ratio("zproxy", "haproxy", "ZProxy vs HAProxy")
    ratio("zproxy+log", "haproxy+log", "ZProxy vs HAProxy, both logging every request")
    ratio("zproxy+log", "zproxy", "ZProxy with its access log vs without")
    ratio("haproxy+log", "haproxy", "HAProxy with its log vs without")
    for label, name in (("zproxy+log", "ZProxy"), ("haproxy+log", "HAProxy")):
        x = loaded.get(label)
        path = f"{out}/{x.label}.loglines" if x else ""
        if x and os.path.exists(path):
            n = json.load(open(path))
            dropped = "drops not counted" if n["dropped"] is None else f"{n['dropped']:,} dropped"
            lines.append(f"- {name} log: {n['lines']:,} lines written, {dropped} "
                         f"(for {x.r['requests_all']:,} requests)")
    ratio("zproxy", "nginx", "ZProxy vs nginx (proxy)")
    ratio("zproxy-static", "nginx-static", "ZProxy static responder vs nginx static")
    ratio("zproxy-v6", "zproxy", "ZProxy with IPv6 clients vs IPv4 clients (CPU per connection: the issue asks within 10 %)")
    ratio("zproxy-v6", "haproxy-v6", "ZProxy vs HAProxy, IPv6 clients")
    ratio("zproxy-v6", "nginx-v6", "ZProxy vs nginx, IPv6 clients")
    saturated = [n for label, n in MAIN_ROWS if loaded[label] and loaded[label].client_idle < 5]
    if saturated:
        lines += ["", f"Saturated client side (core 0 idle < 5 %): {', '.join(saturated)}."]

# ---- throughput --------------------------------------------------------------------------
tp = {(s, p): load(f"tp-{s}-{p}") for s, _, _ in SIZES for p, _ in PROXIES}
if any(tp.values()):
    lines += [
        "",
        "## Throughput: large responses",
        "",
        f"zproxy-bench, keep-alive on, {tp_conc} concurrent streams of `/bytes/N` (body size checked), {tp_dur} "
        "measured after a 2 s warm-up. Gbit/s: every byte received inside the measured window (responses that "
        f"started in the warm-up or end after the window included) x 8 / window. ZProxy uses {tp_buf // 1024} KiB socket "
        "buffers here (`socket_rx_buffer`/`socket_tx_buffer`; the default 16 KiB caps a connection's window); "
        "the kernel peers autotune theirs.",
        "",
        "| body | server | Gbit/s | responses/s | success | failures | p50 s | p99 s | CPU ms/req | CPU s/GB "
        "| CPU-1 busy | RSS MiB | client core idle | saturated | charts |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for s, sname, size in SIZES:
        for p, pname in PROXIES:
            x = tp[(s, p)]
            if x is None:
                continue
            r = x.r
            per_gb = x.cpu_s_per_gb()
            per_req = None if per_gb is None else per_gb * size / 1e9 * 1e3
            lines.append(
                f"| {sname} | {pname} | {r['gbit_per_sec']:.2f}{x.spread('.2f')} | {r['connections_per_sec']:,.1f} | "
                f"{success(r)} | {r['failures_total']} | {x.lat_s('p50_us')} | {x.lat_s('p99_us')} | "
                f"{fmt(per_req, '.2f')} | {fmt(per_gb, '.2f')} | {x.busy_text()} | {x.rss()} | "
                f"{x.client_idle:.0f}% | {x.saturation()} | {x.charts()} |"
            )

# ---- scaling -----------------------------------------------------------------------------
SCALE = [
    ("scale-1w-close", 1, "500 concurrent, keep-alive off"),
    ("scale-2w-close", 2, "500 concurrent, keep-alive off"),
    ("scale-1w-ka", 1, "100 concurrent, keep-alive on"),
    ("scale-2w-ka", 2, "100 concurrent, keep-alive on"),
]
sc = {label: load(label) for label, _, _ in SCALE}
if any(sc.values()):
    lines += [
        "",
        "## Scaling: one and two ZProxy workers",
        "",
        "Both on `net_af_packet` (`net_af_xdp` cannot open two queues on veth, which has no combined channels). "
        "1 worker: lcore 1 on CPU 1, 1-queue lab. 2 workers: lcores 1 and 2 on CPUs 1 and 0, a lab whose veth "
        "pairs have 2 queues, `qpairs=2`. Both: `idle_sleep_us = 50`, `mbufs = 32767`. The second worker shares CPU 0 "
        f"with the client, the upstream nginx and the control thread. {dur} measured after a 1 s warm-up.",
        "",
        "| workers | load | successful req/s | success | failures | p50 ms | p99 ms | CPU µs/req (all workers) "
        "| busy (per worker) | frames handed over | RSS MiB | client core idle | charts |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, n, load_name in SCALE:
        x = sc[label]
        if x is None:
            continue
        r = x.r
        handed = sum(w.get("handoffs_out", 0) for w in x.workers)
        lines.append(
            f"| {n} | {load_name} | {r['connections_per_sec']:,.0f}{x.spread(',.0f')} | {r['success_rate']:.2f}% | "
            f"{r['failures_total']} | {x.lat_ms('p50_us')} | {x.lat_ms('p99_us')} | "
            f"{fmt(x.cpu_us_per_req(), '.1f')} | {x.busy_text()} | {handed:,} | {x.rss()} | "
            f"{x.client_idle:.0f}% | {x.charts()} |"
        )
    lines += [
        "",
        "A worker's busy cycles are TSC time of loop iterations that did work, preemption included: on CPU 0 "
        "the second worker is preempted by the client and the upstream, which that figure counts as its own work.",
    ]

# ---- sweep -------------------------------------------------------------------------------
levels = sorted(
    {int(f.split("-")[1]) for f in os.listdir(out) if f.startswith("sweep-") and f.endswith(".json")}
)
if levels:
    lines += [
        "",
        "## Connection-count sweep",
        "",
        f"zproxy-bench, keep-alive off, path `/`, {dur} measured after a 3 s warm-up (the first burst of "
        "connections settles), at each concurrency; requests time out after 5 s. ZProxy: `configs/lab.toml` with "
        "`max_flows = 32768`, `mbufs = 32767` and the upstream's `connect_timeout_ms = 3000` (with the default "
        "1 s, SYN-ACKs lost in the first 10,000-connection burst mark the only upstream down for 5 s, answered "
        "with 503s). The kernel peers are capped at 9,000 connections (`maxconn`, `worker_connections`) by this "
        "machine's 20,000 open-files hard limit (each proxied connection holds two descriptors), so 10,000 is "
        "beyond what they are configured for here.",
        "",
        "| concurrent | server | conn/s | success | failures | p50 ms | p99 ms | max ms | CPU µs/conn | CPU-1 busy "
        "| RSS MiB | client core idle | charts |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in levels:
        for p, pname in PROXIES[:1] + [("zproxy-baseline", "ZProxy (baseline)")] + PROXIES[1:]:
            x = load(f"sweep-{c}-{p}")
            if x is None:
                continue
            r = x.r
            lines.append(
                f"| {c:,} | {pname} | {r['connections_per_sec']:,.0f}{x.spread(',.0f')} | {r['success_rate']:.2f}% | "
                f"{r['failures_total']} | {x.lat_ms('p50_us')} | {x.lat_ms('p99_us')} | {x.lat_ms('max_us')} | "
                f"{fmt(x.cpu_us_per_req(), '.1f')} | {x.busy_text()} | {x.rss()} | {x.client_idle:.0f}% | "
                f"{x.charts()} |"
            )

# ---- TLS (--tls, bench/tls-phase.sh) ---------------------------------------------------
if os.path.exists(f"{out}/tls.md"):
    lines += ["", "## TLS", "", f"{dur} per row; the server terminates TLS on core 1, the client runs on core 0.", ""]
    lines += open(f"{out}/tls.md").read().rstrip("\n").split("\n")
if os.path.exists(f"{out}/tls-flood.md"):
    lines += [
        "",
        "### Handshake flood: established clients' latency",
        "",
        "ZProxy, ECDSA P-256: 20 keep-alive HTTPS clients (wrk --latency) while 100 more open full handshakes "
        "(wrk, `Connection: close`), with the default `runtime.tls_handshakes_per_poll` and with 1024 (the bound "
        "effectively off); the `none` row is the same keep-alive load without the flood.",
        "",
    ]
    lines += open(f"{out}/tls-flood.md").read().rstrip("\n").split("\n")

lines += [
    "",
    "## How to read this",
    "",
    "- CPU per request: ZProxy busy-polls, so its OS CPU time is always 100 %; its figure is the TSC cycles of "
    "poll-loop iterations that did work (from its counters before and after the run). Peers: utime+stime of their "
    "processes. On veth, the frames a server sends are processed by the receiving kernel (the client's or the "
    "upstream's TCP stack) inside the server's send call, on the server's core: that work is in both figures "
    "(this kernel charges softirq ticks to the running task), so they overstate each server's own cost. Both cover "
    "the whole benchmark run (warm-up included) and are divided by the requests that ended in it; throughput rows "
    "divide by the bytes received instead (CPU ms/req = that x the body size).",
    "- CPU-1 busy: ZProxy's share of loop time that did work; peers' CPU time / wall time.",
    "- RSS: peak resident set of the server's processes (VmHWM), plus the hugepages ZProxy took.",
    "- client core idle: idle share of core 0 during the run. Below 5 % the client/upstream side was saturated, "
    "so the rate is the lab's ceiling, not the server's: compare CPU per request instead.",
    "- charts: latency CDF and latency by percentile, and requests/s and Mbit/s over time (zproxy-bench `--plots`).",
]
open(f"{out}/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
