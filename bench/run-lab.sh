#!/usr/bin/env bash
# ZProxy's main job, end to end, in the netns lab on this machine:
# dependencies, release build, hugepages, lab topology (client / proxy /
# upstream namespaces, nginx upstream), ZProxy on DPDK virtual devices, the
# connection benchmark (zproxy-bench: 500 concurrent, keep-alive off, path /),
# and a report. For comparison the same benchmark runs against nginx serving
# the same response from the proxy namespace's kernel stack, same core.
#
#   bench/run-lab.sh [--duration 10s] [--concurrency 500] [--device af_xdp|af_packet] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=10s CONCURRENCY=500 DEVICE=af_xdp OUT=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "run-lab: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  af_xdp) VDEV_C="net_af_xdp0,iface=cli1,start_queue=0,queue_count=1"; VDEV_U="net_af_xdp1,iface=ups1,start_queue=0,queue_count=1" ;;
  af_packet) VDEV_C="net_af_packet0,iface=cli1,qpairs=1"; VDEV_U="net_af_packet1,iface=ups1,qpairs=1" ;;
  *) echo "run-lab: --device must be af_xdp or af_packet" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "run-lab: must run as root (namespaces, hugepages, DPDK)" >&2; exit 2; }

export LAB_PREFIX="zprun$$"
PROXY_CORE=1
RUN="/run/zproxy-lab/$LAB_PREFIX"
cleanup() { bash bench/lab.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "dependencies"; bash tests/deps.sh
step "build (release)"; cargo build --release --locked -p zproxy -p zproxy-bench 2>&1 | tail -1
step "hugepages"; bash hugepages/setup.sh --pages 512
mkdir -p "$OUT"
BENCH="$ROOT/target/release/zproxy-bench"

# cpu_ticks PID...: utime+stime of the processes, in clock ticks.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }

run_bench() { # label -> $OUT/<label>.json and .md
  bash bench/lab.sh exec client "$BENCH" --host 10.71.0.2 --port 80 --path / \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1s --keep-alive off \
    --label "$1" --json "$OUT/$1.json" --report "$OUT/$1.md" >/dev/null
}

# --- ZProxy: static responder on DPDK ------------------------------------------------
step "lab up"; bash bench/lab.sh up >/dev/null
sed -e "s|net_af_packet0,iface=cli1,qpairs=1|$VDEV_C|" -e "s|net_af_packet1,iface=ups1,qpairs=1|$VDEV_U|" \
  configs/lab.toml > "$RUN/zproxy.toml"
step "ZProxy ($DEVICE) on lcore $PROXY_CORE"
bash bench/lab.sh exec proxy "$ROOT/target/release/zproxy" run -c "$RUN/zproxy.toml" > "$RUN/zproxy.log" 2>&1 &
ZPID=$!
for _ in $(seq 100); do grep -q polling "$RUN/zproxy.log" && break; sleep 0.1; done
grep -q polling "$RUN/zproxy.log" || { cat "$RUN/zproxy.log"; echo "run-lab: ZProxy did not start" >&2; exit 1; }
bash bench/lab.sh exec client curl -s --retry 5 --retry-connrefused --max-time 2 http://10.71.0.2/ >/dev/null
step "benchmark: ZProxy, $CONCURRENCY concurrent, keep-alive off, $DURATION"
run_bench zproxy
ZRSS=$(awk '/VmHWM/ {print $2}' /proc/$ZPID/status)
kill -INT $ZPID; wait $ZPID || { tail -20 "$RUN/zproxy.log"; echo "run-lab: ZProxy exited with an error" >&2; exit 1; }
FINAL=$(grep "final counters" "$RUN/zproxy.log")
grep -E "in use at exit" "$RUN/zproxy.log" | sed 's/.*\] //'

# --- nginx: the same response from the kernel stack, same namespace and core ---------
step "nginx (kernel stack) on core $PROXY_CORE, same topology"
bash bench/lab.sh exec proxy ip addr add 10.71.0.2/24 dev cli1
bash bench/lab.sh exec proxy ethtool -K cli1 tx off >/dev/null 2>&1 || true
cat > "$RUN/nginx-static.conf" <<NGX
worker_processes 1;
worker_cpu_affinity $(awk -v c=$PROXY_CORE 'BEGIN { s = "1"; for (i = 0; i < c; i++) s = s "0"; print s }');
pid $RUN/nginx-static.pid;
error_log $RUN/nginx-static.error.log;
events { worker_connections 4096; multi_accept on; }
http {
  access_log off;
  server {
    listen 10.71.0.2:80 reuseport backlog=4096;
    location / { default_type text/plain; return 200 "hello from zproxy\n"; }
  }
}
NGX
bash bench/lab.sh exec proxy nginx -c "$RUN/nginx-static.conf"
sleep 0.5
NMASTER=$(cat "$RUN/nginx-static.pid")
NPIDS="$NMASTER $(pgrep -P "$NMASTER" | tr '\n' ' ')"
T0=$(cpu_ticks $NPIDS)
run_bench nginx
T1=$(cpu_ticks $NPIDS)
NRSS=0; for p in $NPIDS; do NRSS=$((NRSS + $(awk '/VmHWM/ {print $2}' /proc/$p/status))); done
kill "$NMASTER"

# --- report ---------------------------------------------------------------------------
step "report"
python3 - "$OUT" "$FINAL" "$ZRSS" "$T0" "$T1" "$NRSS" "$(getconf CLK_TCK)" "$DEVICE" "$CONCURRENCY" "$DURATION" <<'PY'
import json, re, sys, datetime
out, final, zrss, t0, t1, nrss, hz, device, conc, dur = sys.argv[1:]
z = json.load(open(f"{out}/zproxy.json"))["results"]
n = json.load(open(f"{out}/nginx.json"))["results"]
c = dict(re.findall(r"(\w+)=(\d+)", final))
tsc = int(c["tsc_hz"])
# ZProxy busy-polls, so OS CPU time is always 100%: count cycles of loop
# iterations that did work, over every connection it accepted in the run.
z_cpu_us = int(c["busy_cycles"]) / tsc * 1e6 / max(int(c["flows_accepted"]), 1)
n_secs = (int(t1) - int(t0)) / int(hz)
n_cpu_us = n_secs * 1e6 / max(n["completed"], 1)
n_busy = n_secs / n["elapsed_secs"] * 100
def row(name, r, cpu, busy, rss):
    l = r["latency"]
    return (f"| {name} | {r['connections_per_sec']:,.0f} | {r['success_rate']:.2f}% | {r['failures_total']} | "
            f"{l['avg_us']/1000:.2f} | {l['p50_us']/1000:.2f} | {l['p99_us']/1000:.2f} | {l['max_us']/1000:.2f} | "
            f"{cpu:.1f} | {busy} | {int(rss)/1024:.1f} |")
lines = [
    f"# ZProxy lab run, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
    "",
    "## Test Configuration",
    "",
    f"- Benchmark: zproxy-bench, {conc} concurrent connections, keep-alive off, path `/`, {dur} after a 1 s warm-up",
    f"- Lab: client / proxy / upstream network namespaces on veth pairs; ZProxy on DPDK `net_{device}` vdevs, worker on lcore 1",
    "- ZProxy: static responder (`configs/lab.toml`); nginx 1.22: `return 200` from the kernel stack in the same namespace, 1 worker pinned to the same core, access log off",
    "- Machine: 2 cores; the client (and nginx upstream) share core 0, the server under test has core 1",
    "",
    "## Results",
    "",
    "| server | conn/s | success | failures | avg ms | p50 ms | p99 ms | max ms | CPU µs/conn | core busy | RSS MiB |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    row("ZProxy static responder", z, z_cpu_us, f"{100*int(c['busy_cycles'])/max(int(c['total_cycles']),1):.0f}% of loop (polls 100%)", zrss),
    row("nginx (kernel TCP)", n, n_cpu_us, f"{n_busy:.0f}%", nrss),
    "",
    f"Ratio ZProxy / nginx: {z['connections_per_sec']/max(n['connections_per_sec'],1):.2f}x connections/s, "
    f"{n_cpu_us/max(z_cpu_us,1e-9):.1f}x less CPU per connection.",
    "",
    "ZProxy's CPU per connection counts the TSC cycles of poll-loop iterations that did work (busy polling makes OS CPU time meaningless), divided by connections accepted. nginx's is utime+stime of its processes over completed requests.",
    "When the client core is saturated, the rates are the lab's ceiling, not the server's: compare CPU per connection.",
]
open(f"{out}/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo; echo "report: $OUT/report.md (details: $OUT/zproxy.md, $OUT/nginx.md)"
