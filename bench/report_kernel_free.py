"""The kernel-free section of the report, from one bench/kernel-free.sh run.

Usage: report_kernel_free.py OUT_DIR DURATION [LEVELS [STALLS STALL_RUNS]]

Reads, per run LABEL (kf-*), OUT_DIR/LABEL.json (zproxy-world, in
zproxy-bench's shape), OUT_DIR/LABEL.world.json (the world's own busy share
and stack counters) and OUT_DIR/LABEL.meta (ZProxy's counters 0.5 s into the
measured window and 0.5 s before its end, and its TSC rate); writes
OUT_DIR/kernel-free.md and prints it; appends it to OUT_DIR/report.md (the veth
report of an earlier bench/run-lab.sh run) when there is one.
"""
import datetime
import json
import os
import sys

out, dur = sys.argv[1:3]
levels = sys.argv[3].split(",") if len(sys.argv) > 3 else []
stalls = sys.argv[4].split(",") if len(sys.argv) > 4 else []
stall_runs = int(sys.argv[5]) if len(sys.argv) > 5 else 0
opens = [n for n in (sys.argv[6].split(",") if len(sys.argv) > 6 else []) if n]
sweep = [n for n in (sys.argv[7].split(",") if len(sys.argv) > 7 else []) if n]

SHAPES = [
    ("close", "keep-alive off, 64 B (a fresh upstream connection per request)", "conn"),
    ("ka", "keep-alive on, 64 B (64 connections, pooled upstream)", "req"),
    ("1m", "1 MiB responses, keep-alive on (4 streams, 256 KiB socket buffers)", "bulk"),
]


def load(label):
    try:
        doc = json.load(open(f"{out}/{label}.json"))
        world = json.load(open(f"{out}/{label}.world.json"))
        meta = json.load(open(f"{out}/{label}.meta"))
    except FileNotFoundError:
        return None
    return {"r": doc["results"], "cfg": doc["config"], "world": world, "meta": meta}


def zproxy(run):
    """ZProxy's busy share, busy seconds and requests between the two samples."""
    z = run["meta"].get("zproxy")
    hz = run["meta"].get("tsc_hz")
    if not z or not hz:
        return None
    before, after = z
    # A counter an older build lacks reads as None.
    d = lambda k: (
        sum(a[k] - b[k] for a, b in zip(after["workers"], before["workers"]))
        if all(k in w for w in after["workers"] + before["workers"])
        else None
    )
    busy, total = d("busy_cycles"), d("total_cycles")
    return {
        "busy": busy / max(total, 1),
        "busy_s": busy / hz,
        "requests": d("requests"),
        "refused": d("flows_refused"),
        "cookies": d("syn_cookies_sent"),
        "proxy_errors": d("proxy_errors"),
        "syn_behind": d("syn_dropped_behind"),
        "syn_full": d("syn_dropped_table_full"),
        "excused": d("upstream_timeouts_excused"),
        "connect_failures": d("upstream_connect_failures"),
        "tx_dropped": d("tx_dropped"),
    }


def perf_stat(label):
    """`perf stat -x,` counters of ZProxy over the window (--perf-stat), by event."""
    try:
        rows = [l.split(",") for l in open(f"{out}/{label}.perf") if l.count(",") >= 3]
    except FileNotFoundError:
        return {}
    return {r[2]: float(r[0]) for r in rows if r[0].replace(".", "", 1).isdigit()}


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def fail_text(r):
    if not r["failures_total"]:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in r["failures"].items() if v)
    return f"{r['failures_total']} ({kinds})"


lines = [
    f"## Kernel-free: ZProxy's own capacity per core ({datetime.date.today()}, {dur} per run)",
    "",
    "The question this section answers: how much one ZProxy core carries when nothing else is the limit. "
    "zproxy-world (a load generator and an origin on DPDK + the project's own smoltcp stack, one process on "
    "core 0) and ZProxy (core 1) are joined by two `net_memif` pairs: no kernel anywhere on the path, and "
    "nothing else on ZProxy's core. The world alone (its generator straight to its origin over a memif pair) "
    "runs in the same session, so a reader sees whether ZProxy or the world was the limit. The veth sections "
    "answer a different question (ZProxy side by side with HAProxy and nginx, all behind the same kernel "
    "client and upstream); their figures include kernel work charged to the server's core and a saturated "
    "client core, so the two are not comparable row by row.",
    "",
    "| shape | path | rate | success | failures | p50 ms | p99 ms | world busy | ZProxy busy "
    "| ZProxy CPU µs per conn/req | at 100 % busy | charts |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
for key, name, unit in SHAPES:
    for path, label in (("world alone", f"kf-world-{key}"), ("through ZProxy", f"kf-zproxy-{key}")):
        run = load(label)
        if not run:
            continue
        r, z = run["r"], zproxy(run)
        if unit == "bulk":
            rate = f"{r['gbit_per_sec']:.2f} Gbit/s"
        else:
            rate = f"{r['connections_per_sec']:,.0f}/s"
        per = at_full = None
        if z and z["requests"]:
            per = z["busy_s"] * 1e6 / z["requests"]
            if unit == "bulk":
                at_full = f"{r['gbit_per_sec'] / max(z['busy'], 1e-9):.1f} Gbit/s"
            else:
                at_full = f"{1e6 / per:,.0f}/s"
        lat = lambda k: f"{r['latency'][k] / 1000:.3f}" if r["successes"] else "-"
        charts = " ".join(
            f"[{n}](plots/{label}-{k}.svg)"
            for k, n in (("latency", "CDF"), ("rate", "rate"))
            if os.path.exists(f"{out}/plots/{label}-{k}.svg")
        )
        lines.append(
            f"| {name} | {path} | {rate} | {r['success_rate']:.2f} % | {fail_text(r)} | {lat('p50_us')} | "
            f"{lat('p99_us')} | {100 * run['world']['busy']:.0f} % | "
            f"{fmt(z and 100 * z['busy'], '.0f')}{' %' if z else ''} | {fmt(per, '.2f')} | {at_full or '-'} | "
            f"{charts or '-'} |"
        )

def frames(run):
    z = run["meta"].get("zproxy")
    if not z:
        return "-"
    d = lambda k: sum(a.get(k, 0) - b.get(k, 0) for a, b in zip(z[1]["workers"], z[0]["workers"]))
    n = d("requests")
    return f"{d('rx_frames') / n:.2f} / {d('tx_frames') / n:.2f}" if n else "-"


def on_cpu(run, label):
    ms = perf_stat(label).get("task-clock")
    return f"{ms / 10 / run['meta']['wall_s']:.0f} %" if ms and run["meta"].get("wall_s") else "-"


# The active-connection sweep: does a connection cost more when many are open?
swept = [(int(c), load(f"kf-sweep-{c}")) for c in sweep]
swept = [(c, run) for c, run in swept if run]
if swept:
    lines += [
        "",
        "### Active-connection sweep (keep-alive off, 64 B, through ZProxy)",
        "",
        "Each level closed-loop with that many client connections at once. A request that waited for a SYN "
        "retransmission shows as a p99 or max of 1 s or more; tx dropped = frames ZProxy's transmit queue "
        "could not hand to the device.",
        "",
        "| concurrent | rate | success | failures | p50 ms | p99 ms | max ms | world busy | ZProxy busy "
        "| ZProxy CPU µs per conn | tx dropped | ZProxy frames rx / tx per conn | ZProxy on CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c, run in swept:
        r, z = run["r"], zproxy(run)
        per = z["busy_s"] * 1e6 / z["requests"] if z and z["requests"] else None
        lat = lambda k: f"{r['latency'][k] / 1000:.1f}" if r["successes"] else "-"
        lines.append(
            f"| {c:,} | {r['connections_per_sec']:,.0f}/s | {r['success_rate']:.2f} % | {fail_text(r)} | "
            f"{lat('p50_us')} | {lat('p99_us')} | {lat('max_us')} | {100 * run['world']['busy']:.0f} % | "
            f"{fmt(z and 100 * z['busy'], '.0f')}{' %' if z else ''} | {fmt(per, '.2f')} | "
            f"{fmt(z and z['tx_dropped'], ',')} | {frames(run)} | {on_cpu(run, f'kf-sweep-{c}')} |"
        )
    lines += [
        "",
        "- frames per conn: ZProxy's rx and tx frames (both ports) per proxied request; more at higher "
        "concurrency is extra work (delayed ACKs that fired, retransmissions), not a larger footprint.",
        "- on CPU: ZProxy's task-clock over the window (`--perf-stat`) per second of wall time; below 100 % "
        "another process pre-empted its busy-polling worker, and the CPU µs column counts that time as busy.",
    ]

# Each level as configured, then with shedding off (admit_backlog_ms = 0).
over = [(lv, tag, load(f"kf-overload-{pre}{lv}")) for lv in levels for tag, pre in (("", ""), ("off", "off-"))]
over = [(lv, tag, run) for lv, tag, run in over if run]
if over:
    # --peak N: given on the command line instead of measured in this run.
    peak = float(os.environ.get("PEAK") or 0) or (
        load("kf-zproxy-close") or {"r": {"connections_per_sec": 0}}
    )["r"]["connections_per_sec"]
    lines += [
        "",
        f"### Overload (keep-alive off, 64 B; offered as a multiple of the {peak:,.0f} conn/s ZProxy served above)",
        "",
        "A client ZProxy admitted and then reset shows as `reset`; one refused at the SYN with a RST as "
        "`connect_refused`. SYNs ZProxy dropped (no RST, no state; the client's TCP sends them again) are "
        "counted by ZProxy: while it was behind its rx queue, or with its flow table at `admit_flows_percent`. "
        "`opened` is what the world could really offer (below the offered rate, the world was the limit).",
        "",
        "Each level runs twice: with shedding (`admit_backlog_ms = 20`), then without (`= 0`, the default, "
        "marked `no shed`): the flow-table limit, cookie rules and health rule stay on in both.",
        "",
        "| offered | opened | served | of peak | resets to admitted clients | refused at SYN | other failures "
        "| ZProxy busy | SYNs dropped (behind / table full) | flows refused | SYN cookies | upstream connect "
        "failures (excused) | proxy errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lv, tag, run in over:
        r, z = run["r"], zproxy(run)
        resets = r["failures"].get("reset", 0)
        refused = r["failures"].get("connect_refused", 0)
        other = r["failures_total"] - resets - refused
        served = r["connections_per_sec"]
        # Connections the world really opened per second (warm-up included):
        # below the offered rate, the world could not offer more.
        opened = r["connections_opened"] / max(r["elapsed_secs"] + run["cfg"]["warmup_secs"], 1e-9)
        lines.append(
            f"| {lv}x ({run['cfg']['rate'] or 0:,.0f}/s){' no shed' if tag else ''} | {opened:,.0f}/s | {served:,.0f}/s | "
            f"{100 * served / max(peak, 1):.0f} % | "
            f"{resets} | {refused} | {other} | {fmt(z and 100 * z['busy'], '.0f')} % | "
            f"{fmt(z and z['syn_behind'], 'd')} / {fmt(z and z['syn_full'], 'd')} | "
            f"{fmt(z and z['refused'], 'd')} | {fmt(z and z['cookies'], 'd')} | "
            f"{fmt(z and z['connect_failures'], 'd')} ({fmt(z and z['excused'], 'd')}) | "
            f"{fmt(z and z['proxy_errors'], 'd')} |"
        )

def recovery(run):
    """Seconds from the end of the stall until the rate is back (five 100 ms
    ticks in a row at 90 % of the offered rate or more), or None."""
    stall = run["meta"].get("stall")
    rate = run["cfg"]["rate"]
    t = run["r"]["timeline"]
    if not stall or not rate:
        return None
    per_tick = rate * t["interval_ms"] / 1000
    ticks = t["successes"]
    start = int(stall[1] * 1000 // t["interval_ms"])
    for i in range(start, len(ticks) - 4):
        if all(x >= 0.9 * per_tick for x in ticks[i : i + 5]):
            return max(0.0, i * t["interval_ms"] / 1000 - stall[1])
    return None


stall_rows = []
for ms in stalls:
    for n in range(1, stall_runs + 1):
        run = load(f"kf-stall-{ms}-{n}")
        if run:
            stall_rows.append((ms, n, run))
if stall_rows:
    lines += [
        "",
        "### Stalls (ZProxy frozen by SIGSTOP/SIGCONT at 70 % of its peak, keep-alive off, 64 B)",
        "",
        "Passes when the rate is back within 1 s of the stall's end (five 100 ms ticks at 90 % of the offered "
        "rate) and no request failed. The stall's place in the window is taken from the script's clock "
        "(about ±0.2 s).",
        "",
        "| stall | run | offered | served | failures | back after | SYNs dropped while behind | pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    passed = {}
    for ms, n, run in stall_rows:
        r, back, z = run["r"], recovery(run), zproxy(run)
        ok = back is not None and back <= 1.0 and r["failures_total"] == 0
        passed.setdefault(ms, []).append(ok)
        lines.append(
            f"| {ms} ms | {n} | {run['cfg']['rate'] or 0:,.0f}/s | {r['connections_per_sec']:,.0f}/s | "
            f"{fail_text(r)} | {'never' if back is None else f'{back:.2f} s'} | "
            f"{fmt(z and z['syn_behind'], 'd')} | {'yes' if ok else 'no'} |"
        )
    lines.append("")
    lines.append(
        "Passed: " + ", ".join(f"{ms} ms: {sum(v)} of {len(v)}" for ms, v in passed.items()) + "."
    )

mem = []
for n in (["1"] + list(opens)) if opens else []:
    run = load(f"kf-memory-{n}")
    if run and "VmRSS_kb" in run["meta"]:
        after = run["meta"]["zproxy"][1]["workers"]
        mem.append((int(n), sum(w["flows_active"] for w in after), run))


def released(stats):
    return sum(w.get("socket_buffers_released", 0) for w in stats["workers"]) if stats else None


if mem:
    lines += [
        "",
        "### Memory per connection (idle keep-alive clients that each made one request)",
        "",
        "ZProxy's resident memory (`VmRSS`, hugepages not included) and the hugepages it maps (`HugetlbPages`), "
        "read from /proc at the end of the measured window with N client connections open and idle (the world's "
        "`--hold-open`: one request each, then nothing); held = the world's connections still open at its end; "
        "flows = ZProxy's `flows_active` (clients and pooled upstream connections). Bytes per idle connection = "
        "(RSS(N) - RSS(1)) / (held - 1). After: RSS 3 s after the world reset every connection, and the flow slots "
        "whose buffer pages ZProxy gave back (`socket_buffers_released`; 0 for a build without the release).",
        "",
        "| clients | held | flows open | RSS MiB | anon / file / shmem MiB | hugepages MiB | bytes per idle connection | RSS after MiB | slots released |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = mem[0][2]["meta"]["VmRSS_kb"] * 1024 if mem[0][0] == 1 else None
    for n, flows, run in mem:
        m = run["meta"]
        rss = m["VmRSS_kb"] * 1024
        held = run["world"].get("held_open", n)
        per = f"{(rss - base) / (held - 1):,.0f} B" if base is not None and held > 1 else "-"
        after = m.get("after_VmRSS_kb")
        rel = released(m.get("after"))
        lines.append(
            f"| {n:,} | {run['world'].get('held_open', '-'):,} | {flows:,} | {rss / 2**20:.1f} | "
            f"{' / '.join(f'{m.get(k, 0) / 1024:.1f}' for k in ('RssAnon_kb', 'RssFile_kb', 'RssShmem_kb'))} | "
            f"{m.get('HugetlbPages_kb', 0) / 1024:.0f} | {per} | "
            f"{'-' if after is None else f'{after / 1024:.1f}'} | {'-' if rel is None else f'{rel:,}'} |"
        )

lines += [
    "",
    "- rate: successful requests (keep-alive off: connections) per second of the measured window, or Gbit/s of "
    "response bytes received.",
    "- world busy: the world's share of loop time that did work (core 0). Near 100 % the world, not ZProxy, was "
    "the limit.",
    "- ZProxy busy, CPU µs: ZProxy's busy cycles (loop iterations that did work) and its `requests` counter "
    "between two samples inside the measured window; CPU µs = busy seconds x 1e6 / requests; at 100 % busy = "
    "the rate one core would carry if all its time went to such work (1 / CPU µs). Bulk rows: the Gbit/s "
    "received divided by ZProxy's busy share.",
    "- At low load these overstate the cost: an iteration that found any work counts whole, with the polls "
    "around it; read CPU µs from rows where ZProxy is busy (above about 50 %).",
    "- The world's capacity bounds what it can show: where the world is near 100 % busy and ZProxy is not, the "
    "rate at 100 % busy is an extrapolation, not a measured rate.",
]
text = "\n".join(lines) + "\n"
open(f"{out}/kernel-free.md", "w").write(text)
# The veth report of an earlier run into the same directory gets this section
# (in place of an older one), so one report answers both questions.
report = f"{out}/report.md"
if os.path.exists(report):
    veth = open(report).read()
    cut = veth.find("\n## Kernel-free: ")
    veth = (veth if cut < 0 else veth[:cut]).rstrip("\n")
    open(report, "w").write(veth + "\n\n" + text)
print(text)
