#!/usr/bin/env bash
# ZProxy's main job, end to end, in the netns lab on this machine:
# dependencies, release build, hugepages, lab topology (client / proxy /
# upstream namespaces, nginx upstream), ZProxy on DPDK virtual devices, the
# connection benchmark (zproxy-bench: 500 concurrent, keep-alive off, path /)
# through ZProxy, then through HAProxy and nginx as proxies on the same core
# (bench/peers/), the no-proxy path (kernel forwarding), and the static
# responders; prints a report (bench/results/report.md, with SVG charts of
# every run in bench/results/plots/).
#
#   bench/run-lab.sh [--duration 10s] [--concurrency 500] [--device af_xdp|af_packet]
#                    [--only zproxy,haproxy,nginx,direct,static] [--config FILE] [--out DIR]
#                    [--throughput] [--scaling] [--sweep] [--all] [--no-main] [--no-build] [--repeat N]
#                    [--tp-concurrency 4] [--tp-duration 10s] [--tp-buffer 262144]
#                    [--sweep-levels 100,1000,10000] [--baseline BIN] [--access-log]
#
# Optional sections (each adds a few minutes):
#   --throughput  1 MiB and 100 MiB responses (keep-alive, --tp-concurrency
#                 streams) through ZProxy, HAProxy, nginx and direct, in Gbit/s
#   --scaling     ZProxy with 1 and 2 workers (the second on a 2-queue lab)
#   --sweep       100 / 1,000 / 10,000 concurrent connections, CPU per connection
#   --all         all three; --no-main skips the default connection benchmark,
#                 --no-build the dependencies and the build (binaries already built)
#   --repeat N    every run N times, in N rounds; the report shows medians
#   --baseline BIN  also run the connection benchmark (and each --sweep level)
#                 through another zproxy build (e.g. the previous commit's),
#                 labelled zproxy-baseline
#   --access-log  also run the connection benchmark through ZProxy with its
#                 access log on (text, to a file) and HAProxy with its log on
#                 (option httplog, to a UNIX socket a sink appends to a file):
#                 rows zproxy+log and haproxy+log
#   --gateway     also run the connection benchmark through ZProxy with header
#                 rules (set, remove, a response header from $request_id) and
#                 request and connection rate limits set far above the load
#                 (configured, never hit): row zproxy+rules
#   --exception   also run the connection benchmark through ZProxy with a TAP
#                 exception path on its client port (row zproxy+exception) and
#                 with `zproxy capture -w /dev/null tcp port 80` running
#                 (row zproxy+capture; the capture's frame and drop counts go
#                 to OUT/zproxy+capture*.capture)
#   --kernel-free only the kernel-free bench (bench/kernel-free.sh): ZProxy's
#                 own per-core capacity between zproxy-world's generator and
#                 origin over memif (no kernel, no veth lab); report in
#                 OUT/kernel-free.md. With --overload also 0.5x..3x of its peak;
#                 with --stall, 20 and 200 ms freezes of ZProxy at 70 % of it.
#   --ipv6        also run the connection benchmark with IPv6 clients (the client
#                 namespace gets fd00:71::1, the proxy fd00:71::2; upstreams stay
#                 IPv4): rows zproxy-v6, haproxy-v6, nginx-v6
#   --tls         TLS rows (bench/tls-phase.sh): full handshakes/s (ECDSA
#                 P-256, RSA-2048), resumed handshakes/s and keep-alive
#                 requests/s over TLS, ZProxy vs HAProxy vs nginx: tls.md
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=10s CONCURRENCY=500 DEVICE=af_xdp OUT=bench/results ONLY=zproxy,haproxy,nginx,direct,static CONFIG=configs/lab.toml
REPEAT=1 BUILD=1 MAIN=1 THROUGHPUT=0 SCALING=0 SWEEP=0 TP_CONC=4 TP_DURATION="" TP_BUFFER=262144 SWEEP_LEVELS=100,1000,10000
BASELINE="" ACCESS_LOG=0 GATEWAY=0 EXCEPTION=0 IPV6=0 KERNEL_FREE=0 OVERLOAD=0 STALL=0 TLS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --throughput) THROUGHPUT=1; shift ;;
    --scaling) SCALING=1; shift ;;
    --sweep) SWEEP=1; shift ;;
    --all) THROUGHPUT=1 SCALING=1 SWEEP=1; shift ;;
    --no-main) MAIN=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --tp-concurrency) TP_CONC=$2; shift 2 ;;
    --tp-duration) TP_DURATION=$2; shift 2 ;;
    --tp-buffer) TP_BUFFER=$2; shift 2 ;;
    --sweep-levels) SWEEP_LEVELS=$2; shift 2 ;;
    --baseline) BASELINE=$2; shift 2 ;;
    --access-log) ACCESS_LOG=1; shift ;;
    --gateway) GATEWAY=1; shift ;;
    --exception) EXCEPTION=1; shift ;;
    --ipv6) IPV6=1; shift ;;
    --kernel-free) KERNEL_FREE=1; shift ;;
    --overload) OVERLOAD=1; shift ;;
    --stall) STALL=1; shift ;;
    --tls) TLS=1; shift ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) echo "run-lab: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
TP_DURATION=${TP_DURATION:-$DURATION}
if [ $KERNEL_FREE = 1 ]; then
  KF=(--duration "$DURATION" --out "$OUT")
  [ $BUILD = 1 ] || KF+=(--no-build)
  [ $OVERLOAD = 0 ] || KF+=(--overload)
  [ $STALL = 0 ] || KF+=(--stall)
  [ $BUILD = 0 ] || bash tests/deps.sh
  exec bash bench/kernel-free.sh "${KF[@]}"
fi
[ $OVERLOAD = 0 ] && [ $STALL = 0 ] || { echo "run-lab: --overload and --stall go with --kernel-free" >&2; exit 2; }
vdevs() { # DEVICE QUEUES -> "client-vdev upstream-vdev"
  case "$1" in
    af_xdp) echo "net_af_xdp0,iface=cli1,start_queue=0,queue_count=$2 net_af_xdp1,iface=ups1,start_queue=0,queue_count=$2" ;;
    af_packet) echo "net_af_packet0,iface=cli1,qpairs=$2 net_af_packet1,iface=ups1,qpairs=$2" ;;
    *) return 1 ;;
  esac
}
vdevs "$DEVICE" 1 >/dev/null || { echo "run-lab: --device must be af_xdp or af_packet" >&2; exit 2; }
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "run-lab: --repeat takes a positive number" >&2; exit 2; }
[[ $SWEEP_LEVELS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "run-lab: --sweep-levels takes numbers separated by commas" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "run-lab: must run as root (namespaces, hugepages, DPDK)" >&2; exit 2; }
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "run-lab: --baseline $BASELINE is not an executable" >&2; exit 2; }
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

export LAB_PREFIX="zprun$$"
PROXY_CORE=1
MASK=$(awk -v c=$PROXY_CORE 'BEGIN { s = "1"; for (i = 0; i < c; i++) s = s "0"; print s }')
RUN="/run/zproxy-lab/$LAB_PREFIX"
cleanup() { bash bench/lab.sh down >/dev/null 2>&1 || true; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

if [ $BUILD = 1 ]; then
  step "dependencies"; bash tests/deps.sh
  step "build (release)"; cargo build --release --locked -p zproxy -p zproxy-bench 2>&1 | tail -1
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
step "hugepages"; bash hugepages/setup.sh --pages 512
mkdir -p "$OUT/plots"
rm -f "$OUT"/*.json "$OUT"/*.meta "$OUT"/*.md "$OUT"/*.counters "$OUT"/*.ports "$OUT"/*.log "$OUT"/*.loglines "$OUT"/tsc_hz "$OUT"/plots/*.svg
BENCH="$TARGET/release/zproxy-bench"
ZPROXY="$TARGET/release/zproxy"

# lab_up QUEUES: the lab, with the client (zproxy-bench) and the upstream nginx
# on core 0 so the server under test has core 1 to itself.
lab_up() {
  LAB_QUEUES=$1 bash bench/lab.sh up >/dev/null
  local master p
  master=$(cat "$RUN/nginx.pid")
  for p in $master $(pgrep -P "$master"); do taskset -pc 0 "$p" >/dev/null; done
}
step "lab"; lab_up 1

# utime+stime (clock ticks) of the given processes, and utime alone.
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
user_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
# Peak RSS (kB) of the given processes, summed.
rss_kb() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
# "idle total" jiffies of core 0 (the client's and upstream's core).
core0() { awk '/^cpu0 / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# ZProxy's counters (management endpoint), or null for the kernel peers.
zstats() { if [ -n "${ZPID:-}" ]; then bash bench/lab.sh exec proxy "$ZPROXY" stats; else echo null; fi; }

# measure LABEL HOST PORT PID... : one zproxy-bench run with BENCH_ARGS, pinned
# to core 0; writes LABEL.json, LABEL.md, LABEL.meta and plots/LABEL-*.svg.
# The server's CPU (its processes' ticks, or ZProxy's busy cycles from its
# counters) is taken around the whole benchmark run, warm-up included, and
# report.py divides it by the requests that ended in that time.
measure() {
  local label=$1 host=$2 port=$3; shift 3
  local t0 t1 u0 u1 c0 c1 w0 w1 z0 z1
  z0=$(zstats); t0=$(cpu_ticks "$@"); u0=$(user_ticks "$@"); c0=$(core0); w0=$(date +%s.%N)
  bash bench/lab.sh exec client taskset -c 0 "$BENCH" --host "$host" --port "$port" "${BENCH_ARGS[@]}" \
    --label "$label" --json "$OUT/$label.json" --report "$OUT/$label.md" --plots "$OUT/plots/$label" >/dev/null
  w1=$(date +%s.%N); t1=$(cpu_ticks "$@"); u1=$(user_ticks "$@"); c1=$(core0)
  # Workers publish their counters every 100 ms.
  [ -z "${ZPID:-}" ] || sleep 0.25
  z1=$(zstats)
  printf '{"cpu_ticks": %s, "user_ticks": %s, "wall_s": %s, "rss_kb": %s, "core0": [%s, %s], "hugepages_used": %s, "load1": %s, "zproxy": [%s, %s]}\n' \
    $((t1 - t0)) $((u1 - u0)) "$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')" "$(rss_kb "$@")" "$(echo "$c0" | tr ' ' ',')" "$(echo "$c1" | tr ' ' ',')" \
    "${HUGE_USED:-0}" "$(cut -d' ' -f1 /proc/loadavg)" "$z0" "$z1" > "$OUT/$label.meta"
  python3 - "$OUT/$label.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r = d["results"]
extra = f"{r['gbit_per_sec']:.2f} Gbit/s" if d["config"]["keep_alive"] else f"{r['connections_per_sec']:,.0f} conn/s"
print(f"   {d['label']:<24} {r['requests_per_sec']:>9,.0f} req/s  {extra:>14}  {r['failures_total']} failed")
PY
}

# zproxy_run LABEL CONFIG PORT: a fresh ZProxy with CONFIG, one benchmark on PORT, stop.
zproxy_run() {
  local label=$1 config=$2 port=$3
  bash bench/lab.sh exec proxy "$ZPROXY" run -c "$config" > "$RUN/$label.log" 2>&1 &
  ZPID=$!
  local workers
  # Wait for every worker listed in worker_lcores (one when not listed).
  workers=$(python3 -c "import re,sys; m = re.search(r'(?m)^worker_lcores\s*=\s*\[(.*)\]', open(sys.argv[1]).read()); print(len(m.group(1).split(',')) if m else 1)" "$config")
  for _ in $(seq 100); do [ "$(grep -c " polling" "$RUN/$label.log")" -ge "$workers" ] && break; sleep 0.1; done
  [ "$(grep -c " polling" "$RUN/$label.log")" -ge "$workers" ] || { cat "$RUN/$label.log"; echo "run-lab: ZProxy did not start" >&2; exit 1; }
  bash bench/lab.sh exec client curl -s --retry 5 --retry-connrefused --max-time 2 -o /dev/null "http://$(url_host "$HOST"):$port/"
  HUGE_USED=$(awk '/HugePages_Total/ {t=$2} /HugePages_Free/ {f=$2} END {print t - f}' /proc/meminfo)
  local capture=""
  if [[ $label == zproxy+capture* ]]; then
    # A capture for the whole measurement (warm-up included), to /dev/null:
    # the worker's copies and the capture thread are what it costs.
    bash bench/lab.sh exec proxy "$ZPROXY" capture --port client -w /dev/null -s 128 \
      --seconds "$(( ${DURATION%s} + 3 ))" tcp port 80 > "$OUT/$label.capture" 2>&1 &
    capture=$!
    sleep 0.5
  fi
  measure "$label" "$HOST" "$port" "$ZPID"
  if [ -n "$capture" ]; then
    wait "$capture" || { cat "$OUT/$label.capture"; echo "run-lab: zproxy capture failed" >&2; exit 1; }
    sed 's/^/     capture: /' "$OUT/$label.capture"
  fi
  kill -INT "$ZPID"; wait "$ZPID" || { tail -20 "$RUN/$label.log"; echo "run-lab: ZProxy exited with an error" >&2; exit 1; }
  ZPID=""
  cp "$RUN/$label.log" "$OUT/$label.log"
  grep "final counters" "$RUN/$label.log" | grep -o 'tsc_hz=.*' > "$OUT/$label.counters"
  grep -o 'tsc_hz=[0-9]*' "$OUT/$label.counters" | cut -d= -f2 > "$OUT/tsc_hz"
  grep -E "\] port .*: rx [0-9]+ frames" "$RUN/$label.log" | sed 's/.*\] //' > "$OUT/$label.ports" || true
  sed 's/^/     /' "$OUT/$label.ports"
  grep "in use at exit" "$RUN/$label.log" | sed 's/.*\] /     /'
  if [[ $label == zproxy+log* ]]; then
    log_lines "$label" "$RUN/zproxy-access.log" "$(grep "final counters" "$RUN/$label.log" | grep -o 'access_log_dropped=[0-9]*' | cut -d= -f2 || true)"
  fi
  HUGE_USED=0
}

# The address clients connect to: 10.71.0.2, or fd00:71::2 for the IPv6 rows.
HOST=10.71.0.2 HOST6=fd00:71::2
url_host() { if [[ $1 == *:* ]]; then echo "[$1]"; else echo "$1"; fi; }

fill() {
  local v6=()
  [[ $HOST != *:* ]] || v6=(-e "s|bind 10.71.0.2:|bind $HOST:|" -e "s|listen 10.71.0.2:|listen [$HOST]:|")
  sed -e "s|@RUN@|$RUN|g" -e "s|@CORE@|$PROXY_CORE|g" -e "s|@MASK@|$MASK|g" "${v6[@]}" "$1" > "$2"
}

# peer_run LABEL haproxy|nginx-proxy|nginx-static PORT: a fresh kernel-stack
# peer on core 1, one benchmark, stop.
peer_run() {
  local label=$1 peer=$2 port=$3 master pids conf
  case "$peer" in
    haproxy) conf="$RUN/haproxy.cfg"; fill bench/peers/haproxy.cfg "$conf"
             bash bench/lab.sh exec proxy haproxy -f "$conf" ;;
    haproxy+log)
      # The same HAProxy, logging every request (option httplog) to a UNIX
      # socket whose sink (core 0, like ZProxy's writer thread on the
      # control core) appends the lines to a file.
      conf="$RUN/haproxy+log.cfg"; fill bench/peers/haproxy.cfg "$conf"
      rm -f "$RUN/haproxy-access.log"
      sed -i -e "s|haproxy.pid|haproxy+log.pid|" \
        -e "/^global/a\\    log $RUN/haproxy-log.sock len 4096 format raw local0" \
        -e "/^defaults/a\\    log global\n    option httplog" "$conf"
      taskset -c 0 python3 bench/peers/log-sink.py "$RUN/haproxy-log.sock" "$RUN/haproxy-access.log" &
      SINK=$!
      for _ in $(seq 50); do [ -S "$RUN/haproxy-log.sock" ] && break; sleep 0.1; done
      bash bench/lab.sh exec proxy haproxy -f "$conf" ;;
    *) conf="$RUN/$peer.conf"; fill "bench/peers/$peer.conf" "$conf"
       bash bench/lab.sh exec proxy nginx -c "$conf" ;;
  esac
  sleep 0.5
  master=$(cat "$RUN/$peer.pid")
  pids="$master $( (pgrep -P "$master" || true) | tr "\n" " ")"
  # shellcheck disable=SC2086
  measure "$label" "$HOST" "$port" $pids
  kill "$master"
  for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
  if [ -n "${SINK:-}" ]; then
    sleep 0.3 # the sink flushes every 100 ms
    kill "$SINK"; wait "$SINK" 2>/dev/null || true; SINK=""
    # HAProxy drops what the socket does not take, uncounted here: null.
    log_lines "$label" "$RUN/haproxy-access.log" null
  fi
}

# log_lines LABEL FILE DROPPED: the lines a run's log got, for the report.
log_lines() {
  printf '{"lines": %s, "dropped": %s}\n' "$(wc -l < "$2")" "${3:-0}" > "$OUT/$1.loglines"
  echo "     log: $(wc -l < "$2") lines, ${3:-0} dropped"
}

# direct_run LABEL: no proxy, the proxy namespace's kernel only forwards packets.
direct_run() {
  bash bench/lab.sh exec proxy sysctl -qw net.ipv4.ip_forward=1
  HUGE_USED=0 measure "$1" 10.72.0.1 80
  bash bench/lab.sh exec proxy sysctl -qw net.ipv4.ip_forward=0
}

# zproxy_config FILE DEVICE QUEUES [TOML-LINES...]: CONFIG on DEVICE with
# QUEUES queues; each "key = value" sets a [runtime] key, each
# "upstream:key = value" a key of every [[upstream]] group.
zproxy_config() {
  local file=$1 device=$2 queues=$3 vc vu; shift 3
  read -r vc vu < <(vdevs "$device" "$queues")
  sed -e "s|net_af_packet0,iface=cli1,qpairs=1|$vc|" -e "s|net_af_packet1,iface=ups1,qpairs=1|$vu|" "$CONFIG" > "$file"
  python3 - "$file" "$@" <<'PY'
import re, sys
path, extra = sys.argv[1], sys.argv[2:]
# Split into tables: [header, body] pairs ("" for what precedes the first).
parts = re.split(r"(?m)^(\[\[?[^\]]+\]\]?)[ \t]*\n", open(path).read())
tables = [["", parts[0]]] + [[parts[i], parts[i + 1]] for i in range(1, len(parts), 2)]
for item in extra:
    section, line = ("[[upstream]]", item.split(":", 1)[1]) if item.startswith("upstream:") else ("[runtime]", item)
    key = line.split("=")[0].strip()
    found = False
    for t in tables:
        if t[0] != section:
            continue
        found = True
        t[1], n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", line, t[1], count=1)
        if n == 0:
            t[1] = line + "\n" + t[1]
    if not found:
        sys.exit(f"run-lab: no {section} table in {path} for {item!r}")
open(path, "w").write("".join(h + ("\n" if h else "") + b for h, b in tables))
PY
}

# make_configs: the 1-queue ZProxy configs (again after each lab up: the lab's
# runtime directory goes with it).
make_configs() {
  zproxy_config "$RUN/zproxy.toml" "$DEVICE" 1
  # Throughput: bigger socket buffers (the default 16 KiB bound one
  # connection's window); the kernel peers autotune theirs.
  zproxy_config "$RUN/zproxy-tp.toml" "$DEVICE" 1 "socket_rx_buffer = $TP_BUFFER" "socket_tx_buffer = $TP_BUFFER"
  # Sweep: room for 10,000 client flows plus their upstream flows, and an
  # upstream connect timeout that outlasts one lost SYN (1 s retransmit): with
  # the default 1 s, SYN-ACKs lost in the first 10,000-connection burst mark
  # the only upstream down for 5 s (answered with 503s).
  zproxy_config "$RUN/zproxy-sweep.toml" "$DEVICE" 1 "max_flows = 32768" "mbufs = 32767" "upstream:connect_timeout_ms = 3000"
  # Scaling runs on net_af_packet whatever --device says: net_af_xdp takes
  # one queue per "combined" channel, and veth has none (only rx/tx ones).
  zproxy_config "$RUN/zproxy-1w.toml" af_packet 1 "idle_sleep_us = 50" "mbufs = 32767"
  # The main config with an IPv6 address on the client port (--ipv6).
  sed "s|^address = \"10.71.0.2/24\"|&\naddresses = [\"$HOST6/64\"]|" "$RUN/zproxy.toml" > "$RUN/zproxy-v6.toml"
  grep -q "$HOST6" "$RUN/zproxy-v6.toml" || { echo "run-lab: no client address in $RUN/zproxy.toml for --ipv6" >&2; exit 1; }
  # The main config with the access log on (--access-log).
  cp "$RUN/zproxy.toml" "$RUN/zproxy+log.toml"
  printf '\n[access_log]\npath = "%s"\nformat = "text"\n' "$RUN/zproxy-access.log" >> "$RUN/zproxy+log.toml"
  # The main config with a TAP exception path on the client port (--exception).
  python3 - "$RUN/zproxy.toml" "$RUN/zproxy+exc.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
port = 'name = "client"\n'
if port not in text:
    sys.exit("run-lab: no client port for --exception")
tap = port + 'exception = { kind = "tap", iface = "zpx0" }\n'
open(sys.argv[2], "w").write(text.replace(port, tap, 1))
PY
  # The main config with the gateway's per-request rules on the :80 listener (--gateway).
  python3 - "$RUN/zproxy.toml" "$RUN/zproxy+rules.toml" <<'PY'
import sys
text = open(sys.argv[1]).read()
rules = """tcp_port = 80
request_headers = { set = { "X-Gateway" = "zproxy", "X-Client" = "$client_addr:$client_port" }, remove = ["X-Debug"] }
response_headers = { set = { "X-Request-Id" = "$request_id" } }
rate_limit = { requests_per_second = 1000000000.0, burst = 1000000 }
connection_rate_limit = { connections_per_second = 1000000000.0, burst = 1000000 }
"""
if "tcp_port = 80\n" not in text:
    sys.exit("run-lab: no tcp_port = 80 listener for --gateway")
open(sys.argv[2], "w").write(text.replace("tcp_port = 80\n", rules, 1))
PY
}
SIZES="1m:1048576 100m:104857600"
tp_args() { BENCH_ARGS=(--path "/bytes/$1" --expect-size "$1" --concurrency "$TP_CONC" --keep-alive on
                        --duration "$TP_DURATION" --warmup 2s --timeout 120s); }
main_args() { BENCH_ARGS=(--path / --concurrency "$CONCURRENCY" --keep-alive off --duration "$DURATION" --warmup 1s); }
sweep_args() { BENCH_ARGS=(--path / --concurrency "$1" --keep-alive off --duration "$DURATION" --warmup 3s); }
close_args() { BENCH_ARGS=(--path / --concurrency 500 --keep-alive off --duration "$DURATION" --warmup 1s); }
ka_args() { BENCH_ARGS=(--path / --concurrency 100 --keep-alive on --duration "$DURATION" --warmup 1s); }

# ZProxy runs: the proxy namespace's veth ends carry no kernel addresses.
zproxy_phase() {
  if [ $MAIN = 1 ]; then
    step "ZProxy on net_$DEVICE, lcore $PROXY_CORE: $CONCURRENCY concurrent, keep-alive off, $DURATION$ROUND"
    main_args
    if wants zproxy; then zproxy_run "zproxy$SFX" "$RUN/zproxy.toml" 80; fi
    if wants zproxy && [ $ACCESS_LOG = 1 ]; then
      rm -f "$RUN/zproxy-access.log"
      zproxy_run "zproxy+log$SFX" "$RUN/zproxy+log.toml" 80
    fi
    if wants zproxy && [ $GATEWAY = 1 ]; then zproxy_run "zproxy+rules$SFX" "$RUN/zproxy+rules.toml" 80; fi
    if wants zproxy && [ $EXCEPTION = 1 ]; then
      zproxy_run "zproxy+exception$SFX" "$RUN/zproxy+exc.toml" 80
      zproxy_run "zproxy+capture$SFX" "$RUN/zproxy.toml" 80
    fi
    if wants zproxy && [ -n "$BASELINE" ]; then
      local current=$ZPROXY
      ZPROXY=$BASELINE; zproxy_run "zproxy-baseline$SFX" "$RUN/zproxy.toml" 80; ZPROXY=$current
    fi
    if wants static; then zproxy_run "zproxy-static$SFX" "$RUN/zproxy.toml" 8080; fi
    if wants zproxy && [ $IPV6 = 1 ]; then
      client_ipv6
      HOST=$HOST6; zproxy_run "zproxy-v6$SFX" "$RUN/zproxy-v6.toml" 80; HOST=10.71.0.2
    fi
  fi
  if [ $THROUGHPUT = 1 ] && wants zproxy; then
    step "throughput through ZProxy: 1 MiB and 100 MiB, keep-alive, $TP_CONC streams, $TP_DURATION$ROUND"
    for s in $SIZES; do
      tp_args "${s#*:}"
      zproxy_run "tp-${s%%:*}-zproxy$SFX" "$RUN/zproxy-tp.toml" 80
    done
  fi
  if [ $SWEEP = 1 ] && wants zproxy; then
    step "sweep through ZProxy: ${SWEEP_LEVELS//,/ / } concurrent, keep-alive off, $DURATION$ROUND"
    for c in ${SWEEP_LEVELS//,/ }; do
      sweep_args "$c"
      zproxy_run "sweep-$c-zproxy$SFX" "$RUN/zproxy-sweep.toml" 80
      # The A/B of two builds, level by level (--baseline).
      if [ -n "$BASELINE" ]; then
        local current=$ZPROXY
        ZPROXY=$BASELINE; zproxy_run "sweep-$c-zproxy-baseline$SFX" "$RUN/zproxy-sweep.toml" 80; ZPROXY=$current
      fi
    done
  fi
  if [ $SCALING = 1 ]; then
    step "scaling: ZProxy with 1 worker (lcore 1, net_af_packet, 1-queue lab)$ROUND"
    close_args; zproxy_run "scale-1w-close$SFX" "$RUN/zproxy-1w.toml" 80
    ka_args; zproxy_run "scale-1w-ka$SFX" "$RUN/zproxy-1w.toml" 80
  fi
}

# client_ipv6: IPv6 on the client namespace's link (once per lab; no DAD wait).
client_ipv6() {
  local have; have=$(bash bench/lab.sh exec client ip -6 addr show dev cli0 2>/dev/null || true)
  [[ $have != *fd00:71::1/* ]] || return 0
  bash bench/lab.sh exec client sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.cli0.disable_ipv6=0
  bash bench/lab.sh exec client ip addr add fd00:71::1/64 dev cli0 nodad
}

# Kernel-stack peers: they get the addresses ZProxy had, on the same veth ends.
kernel_phase() {
  { [ $MAIN = 1 ] || [ $THROUGHPUT = 1 ] || [ $SWEEP = 1 ]; } || return 0
  { wants haproxy || wants nginx || wants direct || wants static; } || return 0
  step "kernel-stack peers on core $PROXY_CORE$ROUND"
  bash bench/lab.sh exec proxy ip addr add 10.71.0.2/24 dev cli1
  bash bench/lab.sh exec proxy ip addr add 10.72.0.2/24 dev ups1
  if [ $MAIN = 1 ]; then
    main_args
    if wants haproxy; then peer_run "haproxy$SFX" haproxy 80; fi
    if wants haproxy && [ $ACCESS_LOG = 1 ]; then peer_run "haproxy+log$SFX" haproxy+log 80; fi
    if wants nginx; then peer_run "nginx$SFX" nginx-proxy 80; fi
    if wants static; then peer_run "nginx-static$SFX" nginx-static 8080; fi
    if wants direct; then direct_run "direct$SFX"; fi
    if [ $IPV6 = 1 ]; then
      client_ipv6
      bash bench/lab.sh exec proxy sysctl -qw net.ipv6.conf.cli1.disable_ipv6=0
      bash bench/lab.sh exec proxy ip addr add "$HOST6/64" dev cli1 nodad
      HOST=$HOST6
      if wants haproxy; then peer_run "haproxy-v6$SFX" haproxy 80; fi
      if wants nginx; then peer_run "nginx-v6$SFX" nginx-proxy 80; fi
      HOST=10.71.0.2
      bash bench/lab.sh exec proxy ip addr del "$HOST6/64" dev cli1
      bash bench/lab.sh exec proxy sysctl -qw net.ipv6.conf.cli1.disable_ipv6=1
    fi
  fi
  if [ $THROUGHPUT = 1 ]; then
    for s in $SIZES; do
      tp_args "${s#*:}"
      if wants haproxy; then peer_run "tp-${s%%:*}-haproxy$SFX" haproxy 80; fi
      if wants nginx; then peer_run "tp-${s%%:*}-nginx$SFX" nginx-proxy 80; fi
      if wants direct; then direct_run "tp-${s%%:*}-direct$SFX"; fi
    done
  fi
  if [ $SWEEP = 1 ]; then
    for c in ${SWEEP_LEVELS//,/ }; do
      sweep_args "$c"
      if wants haproxy; then peer_run "sweep-$c-haproxy$SFX" haproxy 80; fi
      if wants nginx; then peer_run "sweep-$c-nginx$SFX" nginx-proxy 80; fi
    done
  fi
  bash bench/lab.sh exec proxy ip addr del 10.71.0.2/24 dev cli1
  bash bench/lab.sh exec proxy ip addr del 10.72.0.2/24 dev ups1
}

# Two workers: a lab whose veth pairs have two queues.
two_worker_phase() {
  [ $SCALING = 1 ] || return 0
  step "scaling: ZProxy with 2 workers (lcores 1 and 2 on CPUs 1 and 0, net_af_packet, 2-queue lab)$ROUND"
  bash bench/lab.sh down >/dev/null
  lab_up 2
  # Worker 1 shares CPU 0 with the clients, the upstream and the control
  # thread, so it sleeps when idle (as in tests/lab_proxy_appliance.rs).
  zproxy_config "$RUN/zproxy-2w.toml" af_packet 2 "worker_lcores = [1, 2]" "worker_cpus = [1, 0]" "idle_sleep_us = 50" "mbufs = 32767"
  close_args; zproxy_run "scale-2w-close$SFX" "$RUN/zproxy-2w.toml" 80
  ka_args; zproxy_run "scale-2w-ka$SFX" "$RUN/zproxy-2w.toml" 80
  bash bench/lab.sh down >/dev/null
  lab_up 1
  make_configs
}

# With --repeat N every run is made N times, in N rounds of the whole
# sequence (so load from elsewhere on the machine spreads over all servers);
# LABEL-rK holds round K, and the report shows each row's median round.
make_configs
for round in $(seq "$REPEAT"); do
  SFX="" ROUND=""
  if [ "$REPEAT" -gt 1 ]; then SFX="-r$round" ROUND=" (round $round of $REPEAT)"; fi
  zproxy_phase
  kernel_phase
  two_worker_phase
done
if [ $TLS = 1 ]; then
  # shellcheck source=bench/tls-phase.sh
  source bench/tls-phase.sh
  tls_phase
fi

step "report"
python3 bench/report.py "$OUT" "$DEVICE" "$CONCURRENCY" "$DURATION" "$(getconf CLK_TCK)" "$TP_CONC" "$TP_DURATION" "$TP_BUFFER" "$REPEAT"
echo; echo "report: $OUT/report.md (per-run details: $OUT/*.md, $OUT/*.json, charts: $OUT/plots/)"
