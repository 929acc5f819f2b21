#!/usr/bin/env bash
# Where frames go at one level of the connection-count sweep: one
# zproxy-bench run (keep-alive off, path /) through ZProxy on net_af_xdp in
# the netns lab, with ZProxy's /stats and the kernel's counters (nstat,
# ip -s link, ss -s, ethtool -S of the veths) taken before and after it.
#
#   sudo bench/sweep-probe.sh [--zproxy BIN] [--concurrency 10000] [--duration 5s]
#                             [--out DIR] [--qdisc N] [--rx-descriptors N] [--perf]
#
#   --qdisc N     a pfifo of N packets on the client's and the upstream's veth
#                 (cli0, ups0): a veth whose peer runs XDP drops what its peer's
#                 256-entry ring cannot take when it has no qdisc (noqueue, the
#                 default); with one, kernels from 6.16 hold the frame back instead
#   --rx-descriptors N  rx ring of both ZProxy ports (default 1024)
#   --perf        perf record -g (cpu-clock) of ZProxy for 3 s after the warm-up
#
# Writes DIR/{stats0,stats1}.json, nstat-*.txt, link-*.txt, ethtool1-*.txt,
# bench.{json,md}, and prints what moved. Wrap it in
# `flock -o /tmp/zproxy-bench.lock` when others measure on the machine (-o:
# the lab's nginx must not inherit the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$(pwd)/target}
ZP=$TARGET/release/zproxy BENCH=$TARGET/release/zproxy-bench C=10000 D=5s O=bench/results/sweep-probe
QDISC="" RXD="" PERF=0
while [ $# -gt 0 ]; do
  case "$1" in
    --zproxy) ZP=$2; shift 2 ;;
    --concurrency) C=$2; shift 2 ;;
    --duration) D=$2; shift 2 ;;
    --out) O=$2; shift 2 ;;
    --qdisc) QDISC=$2; shift 2 ;;
    --rx-descriptors) RXD=$2; shift 2 ;;
    --perf) PERF=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "sweep-probe: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "sweep-probe: must run as root (namespaces, hugepages, DPDK)" >&2; exit 2; }
[ -x "$ZP" ] && [ -x "$BENCH" ] || { echo "sweep-probe: build first (cargo build --release -p zproxy -p zproxy-bench)" >&2; exit 2; }
# 10,000 client sockets in one process.
ulimit -n 20000
mkdir -p "$O"
export LAB_PREFIX="zpprobe$$"
RUN=/run/zproxy-lab/$LAB_PREFIX
L() { bash bench/lab.sh exec "$@"; }
stop_zproxy() { [ -z "${ZPID:-}" ] || { kill -TERM "$ZPID"; wait "$ZPID" || true; }; ZPID=""; }
trap 'stop_zproxy; bash bench/lab.sh down >/dev/null 2>&1 || true' EXIT
bash hugepages/setup.sh --pages 512 >/dev/null
bash bench/lab.sh up >/dev/null
if [ -n "$QDISC" ]; then
  L client tc qdisc replace dev cli0 root pfifo limit "$QDISC"
  L upstream tc qdisc replace dev ups0 root pfifo limit "$QDISC"
fi
m=$(cat "$RUN/nginx.pid"); for p in $m $(pgrep -P "$m"); do taskset -pc 0 "$p" >/dev/null; done
# run-lab.sh's sweep config: room for 10,000 proxied clients, a connect
# timeout that outlasts one lost SYN.
sed -e "s|net_af_packet0,iface=cli1,qpairs=1|net_af_xdp0,iface=cli1,start_queue=0,queue_count=1|" \
    -e "s|net_af_packet1,iface=ups1,qpairs=1|net_af_xdp1,iface=ups1,start_queue=0,queue_count=1|" \
    -e "s|^mbufs = .*|mbufs = 32767|" \
    -e "s|^balance = \"round_robin\"|&\nconnect_timeout_ms = 3000|" configs/lab.toml > "$RUN/z.toml"
[ -z "$RXD" ] || sed -i -E "s|^(address = \"10\.7[12]\.0\.2/24\")|\1\nrx_descriptors = $RXD|" "$RUN/z.toml"
# exec: $! is ZProxy itself, not a subshell.
bash bench/lab.sh exec proxy "$ZP" run -c "$RUN/z.toml" > "$O/zproxy.log" 2>&1 &
ZPID=$!
for _ in $(seq 100); do grep -q " polling" "$O/zproxy.log" && break; sleep 0.1; done
grep -q " polling" "$O/zproxy.log" || { cat "$O/zproxy.log"; echo "sweep-probe: ZProxy did not start" >&2; exit 1; }
L client curl -s --retry 5 --retry-connrefused --max-time 2 -o /dev/null http://10.71.0.2:80/
for ns in client upstream; do L "$ns" nstat -n; done
L proxy "$ZP" stats > "$O/stats0.json"
if [ $PERF = 1 ]; then (sleep 4; perf record -e cpu-clock -F 1999 -g -p "$ZPID" -o "$O/perf.data" -- sleep 3 >/dev/null 2>&1) & fi
L client taskset -c 0 "$BENCH" --host 10.71.0.2 --port 80 --path / --concurrency "$C" --keep-alive off \
  --duration "$D" --warmup 3s --json "$O/bench.json" --report "$O/bench.md" > "$O/bench.out" 2>&1 || true
sleep 0.3 # workers publish every 100 ms
L proxy "$ZP" stats > "$O/stats1.json"
for ns in client upstream; do
  L "$ns" nstat -a > "$O/nstat-$ns.txt"; L "$ns" ss -s > "$O/ss-$ns.txt"; L "$ns" ip -s link > "$O/link-$ns.txt"
done
L proxy ip -s link > "$O/link-proxy.txt"
L proxy ethtool -S cli1 > "$O/ethtool1-cli1.txt" 2>&1 || true
L proxy ethtool -S ups1 > "$O/ethtool1-ups1.txt" 2>&1 || true
stop_zproxy
wait
python3 - "$O" <<'PY'
import json, sys
o = sys.argv[1]
def flat(d, p=""):
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{p}.{k}" if p else k).items()}
    if isinstance(d, list):
        return {k2: v2 for i, v in enumerate(d) for k2, v2 in flat(v, f"{p}[{i}]").items()}
    return {p: d}
a, b = flat(json.load(open(o + "/stats0.json"))), flat(json.load(open(o + "/stats1.json")))
print("ZProxy /stats that moved:")
for k, v in b.items():
    if isinstance(v, (int, float)) and v != a.get(k, 0):
        print(f"  {k}: +{v - (a.get(k) or 0)}")
def counters(path, names):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 2 and (f[0].rstrip(":") in names):
            out[f[0].rstrip(":")] = f[1]
    return out
print("client kernel:", counters(o + "/nstat-client.txt", {"TcpActiveOpens", "TcpRetransSegs", "TcpExtTCPSynRetrans", "TcpExtTCPRetransFail"}))
print("cli1 (ZProxy's client veth):", counters(o + "/ethtool1-cli1.txt", {"rx_queue_0_xdp_packets", "rx_queue_0_xdp_redirect", "rx_queue_0_drops"}))
r = json.load(open(o + "/bench.json"))["results"]
print("bench:", {k: r[k] for k in ("connections_per_sec", "successes", "failures_total", "connections_opened")})
PY
grep -A2 "^| avg" "$O/bench.md" | tail -1
