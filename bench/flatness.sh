#!/usr/bin/env bash
# Is ZProxy's per-packet cost flat as open connections grow? Measures the
# worker's CPU per proxied connection (busy TSC cycles from its counters)
# for the seed's shape at a low concurrency, first with no other connection
# open, then with IDLE (default 10,000) idle connections held open.
#
#   bench/flatness.sh [--idle 10000] [--concurrency 100] [--duration 8s] [--device af_packet|af_xdp]
# Run from the repository root as root; builds nothing (run bench/run-lab.sh once first).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
IDLE=10000 CONC=100 DURATION=8s DEVICE=af_packet
while [ $# -gt 0 ]; do
  case "$1" in
    --idle) IDLE=$2; shift 2 ;;
    --concurrency) CONC=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "flatness: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "flatness: must run as root" >&2; exit 2; }
export LAB_PREFIX="zpflat$$"
RUN="/run/zproxy-lab/$LAB_PREFIX"
cleanup() { bash bench/lab.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
bash bench/lab.sh up >/dev/null
if [ "$DEVICE" = af_xdp ]; then
  sed -e 's|net_af_packet0,iface=cli1,qpairs=1|net_af_xdp0,iface=cli1,start_queue=0,queue_count=1|' \
      -e 's|net_af_packet1,iface=ups1,qpairs=1|net_af_xdp1,iface=ups1,start_queue=0,queue_count=1|' configs/lab.toml > "$RUN/zproxy.toml"
else
  cp configs/lab.toml "$RUN/zproxy.toml"
fi
bash bench/lab.sh exec proxy "$ROOT/target/release/zproxy" run -c "$RUN/zproxy.toml" > "$RUN/zproxy.log" 2>&1 &
ZPID=$!
for _ in $(seq 100); do grep -q polling "$RUN/zproxy.log" && break; sleep 0.1; done
stat() { bash bench/lab.sh exec proxy "$ROOT/target/release/zproxy" stats | python3 -c "
import json,sys; w=json.load(sys.stdin)['workers'][0]; print(w['busy_cycles'], w['flows_accepted'], w['flows_active'])"; }
tsc=$(grep -o 'tsc_hz=[0-9]*' "$RUN/zproxy.log" | head -1 | cut -d= -f2 || true)

run() { # label
  sleep 0.3
  read -r b0 a0 open0 < <(stat)
  bash bench/lab.sh exec client "$ROOT/target/release/zproxy-bench" --host 10.71.0.2 --port 80 \
    --concurrency "$CONC" --duration "$DURATION" --keep-alive off --json "$RUN/$1.json" >/dev/null
  sleep 0.3
  read -r b1 a1 open1 < <(stat)
  python3 - "$1" "$b0" "$b1" "$a0" "$a1" "$open0" "$RUN/$1.json" "$RUN/zproxy.log" <<'PY'
import json, re, sys
label, b0, b1, a0, a1, open0, js, log = sys.argv[1:]
tsc = int(re.search(r"tsc_hz=(\d+)", open(log).read()).group(1))
r = json.load(open(js))["results"]
conns = int(a1) - int(a0)
us = (int(b1) - int(b0)) / tsc * 1e6 / max(conns, 1)
print(f"| {label} | {int(open0):,} | {r['connections_per_sec']:,.0f} | {r['success_rate']:.2f}% | {us:.2f} |")
PY
}
# Wait for the first 5-s summary so the log carries tsc_hz.
for _ in $(seq 70); do grep -q tsc_hz "$RUN/zproxy.log" && break; sleep 0.1; done
echo "| run | flows open before the run | conn/s | success | worker CPU µs per proxied connection |"
echo "| --- | ---: | ---: | ---: | ---: |"
run baseline
# Idle connections to the HTTP listener: each holds a client flow in ZProxy
# that waits for a request. Two holders: the per-process fd limit.
half=$((IDLE / 2))
for i in 1 2; do
  # tests/peers/holder.py holds them until its stdin ends: 600 s here.
  bash bench/lab.sh exec client bash -c "ulimit -n 20000; sleep 600 | python3 $ROOT/tests/peers/holder.py 10.71.0.2 80 $half" > "$RUN/hold$i.out" &
done
for _ in $(seq 600); do [ "$(cat "$RUN"/hold*.out 2>/dev/null | grep -c '^open')" = 2 ] && break; sleep 0.2; done
cat "$RUN"/hold*.out | sed 's/^/# holder: /' >&2
run "with-idle"
kill -INT $ZPID; wait $ZPID || true
grep -E "leaked" "$RUN/zproxy.log" | sed 's/.*\] /# /' >&2
