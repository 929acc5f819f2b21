#!/usr/bin/env bash
# ZProxy's main job, end to end, in the netns lab on this machine:
# dependencies, release build, hugepages, lab topology (client / proxy /
# upstream namespaces, nginx upstream), ZProxy on DPDK virtual devices, the
# connection benchmark (zproxy-bench: 500 concurrent, keep-alive off, path /)
# through ZProxy, then through HAProxy and nginx as proxies on the same core
# (bench/peers/), the no-proxy path (kernel forwarding), and the static
# responders; prints a report (bench/results/report.md).
#
#   bench/run-lab.sh [--duration 10s] [--concurrency 500] [--device af_xdp|af_packet]
#                    [--only zproxy,haproxy,nginx,direct,static] [--config FILE] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=10s CONCURRENCY=500 DEVICE=af_xdp OUT=bench/results ONLY=zproxy,haproxy,nginx,direct,static CONFIG=configs/lab.toml
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run-lab: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  af_xdp) VDEV_C="net_af_xdp0,iface=cli1,start_queue=0,queue_count=1"; VDEV_U="net_af_xdp1,iface=ups1,start_queue=0,queue_count=1" ;;
  af_packet) VDEV_C="net_af_packet0,iface=cli1,qpairs=1"; VDEV_U="net_af_packet1,iface=ups1,qpairs=1" ;;
  *) echo "run-lab: --device must be af_xdp or af_packet" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "run-lab: must run as root (namespaces, hugepages, DPDK)" >&2; exit 2; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

export LAB_PREFIX="zprun$$"
PROXY_CORE=1
MASK=$(awk -v c=$PROXY_CORE 'BEGIN { s = "1"; for (i = 0; i < c; i++) s = s "0"; print s }')
RUN="/run/zproxy-lab/$LAB_PREFIX"
cleanup() { bash bench/lab.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "dependencies"; bash tests/deps.sh
step "build (release)"; cargo build --release --locked -p zproxy -p zproxy-bench 2>&1 | tail -1
step "hugepages"; bash hugepages/setup.sh --pages 512
mkdir -p "$OUT"; rm -f "$OUT"/*.json "$OUT"/*.meta "$OUT"/*.md
BENCH="$ROOT/target/release/zproxy-bench"
step "lab"; bash bench/lab.sh up | tail -n +1 >/dev/null

# utime+stime (clock ticks) of the given processes.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
# Peak RSS (kB) of the given processes, summed.
rss_kb() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
# "idle total" jiffies of core 0 (the client's and upstream's core).
core0() { awk '/^cpu0 / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# measure LABEL HOST PORT PID... : one benchmark run; writes LABEL.json, LABEL.md, LABEL.meta
measure() {
  local label=$1 host=$2 port=$3; shift 3
  local t0 t1 c0 c1
  t0=$(cpu_ticks "$@"); c0=$(core0)
  bash bench/lab.sh exec client "$BENCH" --host "$host" --port "$port" --path / \
    --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 1s --keep-alive off \
    --label "$label" --json "$OUT/$label.json" --report "$OUT/$label.md" >/dev/null
  t1=$(cpu_ticks "$@"); c1=$(core0)
  printf '{"cpu_ticks": %s, "rss_kb": %s, "core0": [%s, %s], "hugepages_used": %s}\n' \
    $((t1 - t0)) "$(rss_kb "$@")" "$(echo "$c0" | tr ' ' ',')" "$(echo "$c1" | tr ' ' ',')" "${HUGE_USED:-0}" > "$OUT/$label.meta"
  printf '   %-14s %s conn/s\n' "$label" "$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['results']['connections_per_sec']))" "$OUT/$label.json")"
}

# zproxy_run LABEL PORT: ZProxy on lcore 1, one benchmark on PORT, stop, keep its final counters.
zproxy_run() {
  local label=$1 port=$2 zpid
  bash bench/lab.sh exec proxy "$ROOT/target/release/zproxy" run -c "$RUN/zproxy.toml" > "$RUN/$label.log" 2>&1 &
  zpid=$!
  for _ in $(seq 100); do grep -q polling "$RUN/$label.log" && break; sleep 0.1; done
  grep -q polling "$RUN/$label.log" || { cat "$RUN/$label.log"; echo "run-lab: ZProxy did not start" >&2; exit 1; }
  bash bench/lab.sh exec client curl -s --retry 5 --retry-connrefused --max-time 2 -o /dev/null "http://10.71.0.2:$port/"
  HUGE_USED=$(awk '/HugePages_Total/ {t=$2} /HugePages_Free/ {f=$2} END {print t - f}' /proc/meminfo)
  measure "$label" 10.71.0.2 "$port" "$zpid"
  kill -INT "$zpid"; wait "$zpid" || { tail -20 "$RUN/$label.log"; echo "run-lab: ZProxy exited with an error" >&2; exit 1; }
  grep "final counters" "$RUN/$label.log" | grep -o 'tsc_hz=.*' > "$OUT/$label.counters"
  grep "in use at exit" "$RUN/$label.log" | sed 's/.*\] /   /'
  HUGE_USED=0
}

# peer_run LABEL PORT PIDFILE: measure a kernel-stack peer already started.
peer_run() {
  local label=$1 port=$2 master pids
  sleep 0.5
  master=$(cat "$3")
  pids="$master $( (pgrep -P "$master" || true) | tr "\n" " ")"
  measure "$label" 10.71.0.2 "$port" $pids
  kill "$master"; sleep 0.5
}

fill() { sed -e "s|@RUN@|$RUN|g" -e "s|@CORE@|$PROXY_CORE|g" -e "s|@MASK@|$MASK|g" "$1" > "$2"; }

sed -e "s|net_af_packet0,iface=cli1,qpairs=1|$VDEV_C|" -e "s|net_af_packet1,iface=ups1,qpairs=1|$VDEV_U|" \
  "$CONFIG" > "$RUN/zproxy.toml"
step "ZProxy on net_$DEVICE, lcore $PROXY_CORE: $CONCURRENCY concurrent, keep-alive off, $DURATION"
if wants zproxy; then zproxy_run zproxy 80; fi
if wants static; then zproxy_run zproxy-static 8080; fi

# The kernel peers get the addresses ZProxy had, on the same veth ends.
step "kernel-stack peers on core $PROXY_CORE"
bash bench/lab.sh exec proxy ip addr add 10.71.0.2/24 dev cli1
bash bench/lab.sh exec proxy ip addr add 10.72.0.2/24 dev ups1
if wants haproxy; then
  fill bench/peers/haproxy.cfg "$RUN/haproxy.cfg"
  bash bench/lab.sh exec proxy haproxy -f "$RUN/haproxy.cfg"
  peer_run haproxy 80 "$RUN/haproxy.pid"
fi
if wants nginx; then
  fill bench/peers/nginx-proxy.conf "$RUN/nginx-proxy.conf"
  bash bench/lab.sh exec proxy nginx -c "$RUN/nginx-proxy.conf"
  peer_run nginx 80 "$RUN/nginx-proxy.pid"
fi
if wants static; then
  fill bench/peers/nginx-static.conf "$RUN/nginx-static.conf"
  bash bench/lab.sh exec proxy nginx -c "$RUN/nginx-static.conf"
  peer_run nginx-static 8080 "$RUN/nginx-static.pid"
fi
if wants direct; then
  # No proxy: the proxy namespace's kernel only forwards packets.
  bash bench/lab.sh exec proxy sysctl -qw net.ipv4.ip_forward=1
  HUGE_USED=0 measure direct 10.72.0.1 80
fi

step "report"
python3 bench/report.py "$OUT" "$DEVICE" "$CONCURRENCY" "$DURATION" "$(getconf CLK_TCK)"
echo; echo "report: $OUT/report.md (per-run details: $OUT/*.md, $OUT/*.json)"
