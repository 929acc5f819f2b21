#!/usr/bin/env bash
# Soak: ZProxy in the netns lab under the seed's load shape (zproxy-bench,
# 500 concurrent, keep-alive off, GET /) for a long time, with an upstream
# failure injected every interval. A benchmark script, not a CI test.
#
# Upstreams: the lab's nginx (10.72.0.1:80) and a second nginx (10.72.0.11:80)
# in one group, with active HTTP health checks. Every interval the fault is
# injected a third of the way in, for --outage:
#   flap      the second nginx stops, then starts again (default)
#   stop-all  both nginx stop, then start again (clients see 502/503 meanwhile)
#   none      no fault
#
# Each interval prints: requests, success rate, failures by kind, status
# codes, ZProxy's RSS, mbufs in use (peak sampled under load, and idle after
# the interval) and open flows. At the end: whether RSS stayed flat after the
# first third of the run (warm-up) and idle mbufs from the start, and ZProxy's
# own accounting at exit (every mbuf back in its pool).
# Exits 1 when memory grew, mbufs leaked or ZProxy failed.
#
#   bench/soak.sh [--duration 10m] [--interval 60s] [--concurrency 500]
#                 [--fault flap|stop-all|none] [--outage 5s] [--device af_xdp|af_packet]
#                 [--rss-tolerance-kb 4096] [--no-build] [--out DIR]
#
# Root only. Takes the lab lock (/run/zproxy-lab/.lab_proxy.lock, the one the
# lab tests take), so it never runs alongside them. Binaries come from
# ${CARGO_TARGET_DIR:-target}/release (built first unless --no-build).
# Try it short: bench/soak.sh --duration 1m
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=10m INTERVAL=60s CONCURRENCY=500 FAULT=flap OUTAGE=5s DEVICE=af_xdp
RSS_TOL_KB=4096 BUILD=1 OUT=bench/results/soak
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --fault) FAULT=$2; shift 2 ;;
    --outage) OUTAGE=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --rss-tolerance-kb) RSS_TOL_KB=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "soak: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "soak: $*" >&2; exit 2; }
# seconds DURATION: "90", "90s", "10m", "1h" -> seconds
seconds() {
  case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
TOTAL_S=$(seconds "$DURATION") INTERVAL_S=$(seconds "$INTERVAL") OUTAGE_S=$(seconds "$OUTAGE")
for v in "$TOTAL_S" "$INTERVAL_S" "$OUTAGE_S" "$CONCURRENCY" "$RSS_TOL_KB"; do
  [[ $v =~ ^[0-9]+$ ]] || die "durations are N, Ns, Nm or Nh; counts are integers (got '$v')"
done
(( INTERVAL_S >= 10 )) || die "--interval must be at least 10s"
(( TOTAL_S >= INTERVAL_S )) || die "--duration must be at least one --interval"
(( OUTAGE_S * 3 < INTERVAL_S * 2 )) || die "--outage must end before the interval does"
case "$FAULT" in flap|stop-all|none) ;; *) die "--fault must be flap, stop-all or none" ;; esac
case "$DEVICE" in
  af_xdp) VDEV_C="net_af_xdp0,iface=cli1,start_queue=0,queue_count=1"; VDEV_U="net_af_xdp1,iface=ups1,start_queue=0,queue_count=1" ;;
  af_packet) VDEV_C="net_af_packet0,iface=cli1,qpairs=1"; VDEV_U="net_af_packet1,iface=ups1,qpairs=1" ;;
  *) die "--device must be af_xdp or af_packet" ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, hugepages, DPDK)"
INTERVALS=$(( TOTAL_S / INTERVAL_S ))

# The lab lock, on a descriptor that daemons started below do not keep.
mkdir -p /run/zproxy-lab
exec {LOCK_FD}>>/run/zproxy-lab/.lab_proxy.lock
if ! flock -n "$LOCK_FD"; then
  echo "soak: waiting for the lab lock (a lab test or another soak is running)"
  flock "$LOCK_FD"
fi

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ "$BUILD" = 1 ]; then
  cargo build --release --locked -p zproxy -p zproxy-bench 2>&1 | tail -1
fi
[ -x "$BIN/zproxy" ] && [ -x "$BIN/zproxy-bench" ] || die "no $BIN/zproxy or zproxy-bench: build them (or drop --no-build)"
bash hugepages/setup.sh --check >/dev/null 2>&1 || bash hugepages/setup.sh --pages 512 >/dev/null

export LAB_PREFIX="zsoak$$"
RUN=/run/zproxy-lab/$LAB_PREFIX
lab() { bash bench/lab.sh "$@"; }
ZPID=""
cleanup() {
  [ -n "$ZPID" ] && kill -KILL "$ZPID" 2>/dev/null || true
  lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT
lab up {LOCK_FD}>&- >/dev/null
mkdir -p "$OUT"

# The second upstream: an nginx on 10.72.0.11:80 answering like the first.
lab exec upstream ip addr add 10.72.0.11/24 dev ups0
B="$RUN/b"
mkdir -p "$B/tmp"
cat > "$B/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 19000;
daemon on;
pid $B/nginx.pid;
error_log $B/error.log warn;
events { worker_connections 18000; }
http {
    access_log off;
    client_body_temp_path $B/tmp/body;
    proxy_temp_path $B/tmp/proxy;
    fastcgi_temp_path $B/tmp/fastcgi;
    uwsgi_temp_path $B/tmp/uwsgi;
    scgi_temp_path $B/tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen 10.72.0.11:80 reuseport backlog=4096;
        location = / { default_type text/plain; return 200 "hello from upstream\n"; }
    }
}
EOF
chmod -R a+rwX "$B"
# The lab's own nginx writes an access line per request: not for hours.
sed -i 's|access_log .*;|access_log off;|' "$RUN/nginx.conf"
lab exec upstream nginx -p "$RUN" -c "$RUN/nginx.conf" -s reload

nginx_start() { # dir conf
  lab exec upstream nginx -q -p "$1" -e "$1/error.log" -c "$2" {LOCK_FD}>&-
}
nginx_stop() { # pidfile: fast shutdown, wait until gone
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
nginx_start "$B" "$B/nginx.conf"

cat > "$RUN/zproxy.toml" <<EOF
[runtime]
worker_lcores = [1]
mbufs = 16383
max_flows = 16384

[[port]]
name = "client"
vdev = "$VDEV_C"
address = "10.71.0.2/24"
gateway = "10.71.0.1"

[[port]]
name = "upstream"
vdev = "$VDEV_U"
address = "10.72.0.2/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "http"
upstream = "web"

[[upstream]]
name = "web"
port = "upstream"
servers = [{ address = "10.72.0.1:80" }, { address = "10.72.0.11:80" }]
keepalive = 256
[upstream.health_check]
kind = "http"
path = "/"
interval_ms = 500
timeout_ms = 300
fall = 2
rise = 2
EOF
LOG="$OUT/zproxy.log"
# Not through the `lab` function: lab.sh and `ip netns exec` exec, so $! is zproxy.
bash bench/lab.sh exec proxy "$BIN/zproxy" run -c "$RUN/zproxy.toml" > "$LOG" 2>&1 {LOCK_FD}>&- &
ZPID=$!
for _ in $(seq 100); do grep -q polling "$LOG" && break; sleep 0.1; done
grep -q polling "$LOG" || { cat "$LOG"; die "ZProxy did not start"; }
lab exec client curl -s --retry 10 --retry-connrefused --retry-delay 1 --max-time 2 -o /dev/null http://10.71.0.2/ \
  || { tail -20 "$LOG"; die "no answer through ZProxy"; }

stats_json() { # zproxy stats, retried (it fails now and then; see tests/common/proxy.rs)
  local i out
  for i in 1 2 3 4 5; do
    if out=$(lab exec proxy "$BIN/zproxy" stats 2>/dev/null) && [[ $out == *'"workers"'* ]]; then
      echo "$out"; return 0
    fi
    sleep 0.1
  done
  echo '{}'
}
# field NAME < stats JSON: a top-level gauge, or a counter summed over workers
field() {
  python3 -c 'import json,sys
d = json.load(sys.stdin); k = sys.argv[1]
print(d[k] if k in d else sum(w.get(k, 0) for w in d.get("workers", [])))' "$1" 2>/dev/null || echo 0
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$ZPID/status" 2>/dev/null || echo 0; }
alive() { kill -0 "$ZPID" 2>/dev/null; }

inject() { # runs in the background during one interval
  sleep $(( INTERVAL_S / 3 ))
  case "$FAULT" in
    flap) nginx_stop "$B/nginx.pid"; sleep "$OUTAGE_S"; nginx_start "$B" "$B/nginx.conf" ;;
    stop-all)
      nginx_stop "$B/nginx.pid"; nginx_stop "$RUN/nginx.pid"; sleep "$OUTAGE_S"
      nginx_start "$RUN" "$RUN/nginx.conf"; nginx_start "$B" "$B/nginx.conf" ;;
  esac
}

echo "soak: $INTERVALS x $INTERVAL_S s, $CONCURRENCY concurrent, keep-alive off, GET /, net_$DEVICE;" \
  "fault '$FAULT' for $OUTAGE_S s every interval (at +$(( INTERVAL_S / 3 )) s); log $LOG"
printf '%-4s %9s %8s %8s  %-24s %-24s %9s %13s %11s %6s\n' \
  int requests success% conn/s failures codes rss_kB mbufs_peak mbufs_idle flows
declare -a RSS_AT MBUF_AT
TOTAL_OK=0 TOTAL_REQ=0 FAILED=0
for i in $(seq 1 "$INTERVALS"); do
  json="$OUT/interval-$i.json"
  inject {LOCK_FD}>&- &
  INJ=$!
  lab exec client "$BIN/zproxy-bench" --host 10.71.0.2 --port 80 --path / \
    --concurrency "$CONCURRENCY" --duration "${INTERVAL_S}s" --keep-alive off \
    --label "soak-$i" --json "$json" > /dev/null {LOCK_FD}>&- &
  BENCH=$!
  peak=0
  while kill -0 "$BENCH" 2>/dev/null; do
    sleep 5
    alive || break
    m=$(stats_json | field mbufs_in_use)
    (( m > peak )) && peak=$m
  done
  wait "$BENCH" || true
  wait "$INJ" || true
  if ! alive; then
    echo "soak: ZProxy exited during interval $i"; tail -30 "$LOG"; FAILED=1; break
  fi
  sleep 1 # idle: the last connections close
  s=$(stats_json)
  idle=$(field mbufs_in_use <<< "$s") flows=$(field flows_active <<< "$s")
  rss=$(rss_kb)
  RSS_AT[i]=$rss MBUF_AT[i]=$idle
  read -r ok req cps fails codes < <(python3 - "$json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["results"]
except (OSError, ValueError, KeyError):
    print(0, 0, 0, "no-bench-result", "-")
    sys.exit()
f = ",".join(f"{k}:{v}" for k, v in r["failures"].items() if v) or "-"
c = ",".join(f"{k}:{v}" for k, v in sorted(r["status_codes"].items()))
print(r["successes"], r["successes"] + r["failures_total"], round(r["connections_per_sec"]), f, c)
EOF
)
  TOTAL_OK=$(( TOTAL_OK + ok )) TOTAL_REQ=$(( TOTAL_REQ + req ))
  rate=$(python3 -c "print(f'{100 * $ok / max($req, 1):.3f}')")
  printf '%-4s %9s %8s %8s  %-24s %-24s %9s %13s %11s %6s\n' \
    "$i" "$req" "$rate" "$cps" "$fails" "$codes" "$rss" "$peak/$(field mbufs <<< "$s")" "$idle" "$flows"
done

echo
echo "soak: health-check transitions:"
grep -E "out of rotation|back in rotation|marked down" "$LOG" | sed 's/^\[[^ ]* /  [/' | sort | uniq -c | sort -rn | head -8 || true
if alive; then
  kill -INT "$ZPID"
  if ! wait "$ZPID"; then echo "soak: ZProxy exited with an error"; FAILED=1; fi
else
  wait "$ZPID" || true
  FAILED=1
fi
ZPID=""
echo "soak: $(grep -o 'final counters: .*requests [0-9]*' "$LOG" || echo 'no final counters')"
grep -E "port .*no-mbuf" "$LOG" | sed 's/^.*\] /soak: /' || true
final=$(grep "in use at exit" "$LOG" | sed 's/^.*\] //' || true)
echo "soak: at exit: ${final:-no mbuf accounting line in the log}"
echo "soak: overall success rate $(python3 -c "print(f'{100 * $TOTAL_OK / max($TOTAL_REQ, 1):.3f}')")% ($TOTAL_OK of $TOTAL_REQ)"

n=${#RSS_AT[@]}
if (( n >= 1 )); then
  # The first third of the run warms up (socket buffers of flow slots and
  # TIME-WAIT entries are touched as the peak number of connections creeps
  # up): RSS must be flat from there on.
  warm=$(( n / 3 > 1 ? n / 3 : 1 ))
  base=${RSS_AT[$warm]} last=${RSS_AT[$n]} m1=${MBUF_AT[1]} mn=${MBUF_AT[$n]}
  grow=$(( last - base ))
  tol=$(( base / 50 > RSS_TOL_KB ? base / 50 : RSS_TOL_KB ))
  trend=""
  for j in $(seq 2 "$n"); do trend+=" $(( RSS_AT[j] - RSS_AT[j - 1] ))"; done
  echo "soak: RSS after each interval (kB): ${RSS_AT[*]}; change per interval (kB):${trend:- -}"
  if (( grow <= tol )); then
    echo "soak: memory flat: RSS ${base} kB after interval $warm (warm-up), ${last} kB after interval $n (${grow} kB, tolerance ${tol} kB)"
  else
    echo "soak: MEMORY GREW: RSS ${base} kB after interval $warm (warm-up), ${last} kB after interval $n (+${grow} kB > ${tol} kB)"; FAILED=1
  fi
  if (( mn <= m1 + 64 )); then
    echo "soak: idle mbufs flat: ${m1} in use after interval 1, ${mn} after interval $n"
  else
    echo "soak: IDLE MBUFS GREW: ${m1} in use after interval 1, ${mn} after interval $n"; FAILED=1
  fi
fi
if [[ $final == *" 0 leaked"* ]]; then
  echo "soak: every mbuf came back to its pool"
else
  echo "soak: MBUF ACCOUNTING FAILED"; FAILED=1
fi
exit "$FAILED"
