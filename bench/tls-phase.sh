# TLS rows of bench/run-lab.sh (--tls), sourced by it: ZProxy, HAProxy and
# nginx (OpenSSL) terminating TLS on core 1 with the same certificates and
# the same proxying to the lab's nginx, measured from core 0:
#
#   full-ecdsa / full-rsa  full handshakes/s: wrk, 100 connections,
#                          "Connection: close" (a new TLS 1.3 connection per
#                          request; wrk does not resume), ECDSA P-256 / RSA-2048
#   resumed                resumed handshakes/s: openssl s_time -reuse (one
#                          client, sequential: a latency-bound rate)
#   keepalive              requests/s over TLS, keep-alive, 100 connections
#
# Then the handshake flood (ZProxy only, ECDSA): 20 established keep-alive
# HTTPS clients (wrk --latency) while 100 more open full handshakes as fast
# as they can (wrk, "Connection: close"), once with the default
# runtime.tls_handshakes_per_poll and once with it at 1024 (the bound
# effectively off): the keep-alive clients' p50/p99 and the flood's rate,
# in $OUT/tls-flood.md.
#
# Each row also gives the server's CPU per request (its utime+stime over
# the run; ZProxy's busy cycles are not used: its worker polls). Rows go to
# $OUT/tls.md. Uses: $RUN, $OUT, $ZPROXY, $CONFIG (via zproxy_config),
# $DURATION, $PROXY_CORE, fill, cpu_ticks, step (from run-lab.sh).

tls_certs() { # in $RUN/tls: ca, ecdsa and rsa leaves for tls.lab, and HAProxy's bundles
  local d=$RUN/tls
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 30 -subj /CN=lab-ca 2>/dev/null
  printf 'subjectAltName=DNS:tls.lab\nbasicConstraints=CA:FALSE\n' > "$d/ext"
  for k in ecdsa rsa; do
    local newkey="ec -pkeyopt ec_paramgen_curve:P-256"
    [ $k = rsa ] && newkey=rsa:2048
    openssl req -newkey $newkey -nodes -keyout "$d/$k.key" -out "$d/$k.csr" -subj /CN=tls.lab 2>/dev/null
    openssl x509 -req -in "$d/$k.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -set_serial 1 -days 30 -extfile "$d/ext" -out "$d/$k.pem" 2>/dev/null
    cat "$d/$k.pem" "$d/$k.key" > "$d/$k.bundle"
  done
}

tls_zproxy_config() { # FILE KIND: the main config plus an https listener on :443
  zproxy_config "$1" "$DEVICE" 1
  printf '\n[[listener]]\nport = "client"\ntcp_port = 443\nmode = "https"\nupstream = "web"\nmax_connections_per_source = 0\n[listener.tls]\n[[listener.tls.certificate]]\ncert = "%s"\nkey = "%s"\n' \
    "$RUN/tls/$2.pem" "$RUN/tls/$2.key" >> "$1"
}

tls_peer_config() { # PEER KIND -> config path
  local conf=$RUN/$1-tls-$2.conf
  case "$1" in
    haproxy)
      fill bench/peers/haproxy.cfg "$conf"
      sed -i -e "s|haproxy.pid|$1-tls.pid|" \
        -e "s|bind 10.71.0.2:80 backlog 4096|bind 10.71.0.2:443 backlog 4096 ssl crt $RUN/tls/$2.bundle alpn http/1.1|" "$conf" ;;
    nginx)
      fill bench/peers/nginx-proxy.conf "$conf"
      sed -i -e "s|nginx-proxy.pid|$1-tls.pid|" \
        -e "s|listen 10.71.0.2:80 reuseport backlog=4096;|listen 10.71.0.2:443 ssl reuseport backlog=4096; ssl_certificate $RUN/tls/$2.pem; ssl_certificate_key $RUN/tls/$2.key; ssl_session_tickets on; ssl_session_cache shared:tls:10m;|" "$conf" ;;
  esac
  echo "$conf"
}

# tls_measure LABEL MODE PID...: one load run against :443; a row in tls.md.
tls_measure() {
  local label=$1 mode=$2; shift 2
  local t0 t1 out rate n
  local url=https://10.71.0.2:443/
  t0=$(cpu_ticks "$@")
  case "$mode" in
    full) out=$(bash bench/lab.sh exec client taskset -c 0 wrk -t1 -c100 -d"$DURATION" -H "Connection: close" "$url" 2>&1) ;;
    keepalive) out=$(bash bench/lab.sh exec client taskset -c 0 wrk -t1 -c100 -d"$DURATION" "$url" 2>&1) ;;
    resumed) out=$(bash bench/lab.sh exec client taskset -c 0 openssl s_time -connect 10.71.0.2:443 -www / -reuse -time "${DURATION%s}" 2>&1) ;;
  esac
  t1=$(cpu_ticks "$@")
  case "$mode" in
    resumed) # the last "N connections in T real seconds" line
             n=$(echo "$out" | grep -E "^[0-9]+ connections in [0-9]+ real" | tail -1 | awk '{print $1}')
             rate=$(echo "$out" | grep -E "^[0-9]+ connections in [0-9]+ real" | tail -1 | awk '{printf "%.0f", $1 / $4}') ;;
    *) rate=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
       n=$(echo "$out" | awk '/requests in/ {print $1}') ;;
  esac
  local cpu_us
  cpu_us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }')
  printf '| %s | %s | %s | %s |\n' "$label" "$mode" "${rate:-0}" "$cpu_us" | tee -a "$OUT/tls.md"
}

# tls_flood BUDGET FLOOD: ZProxy (ECDSA) with that handshake budget per
# poll (empty: the default), with the flood ("flood") or without it
# ("none", the reference); a row in tls-flood.md.
tls_flood() {
  local budget=$1 conf=$RUN/zproxy-tls-flood.toml url=https://10.71.0.2:443/ flood="" keep
  tls_zproxy_config "$conf" ecdsa
  if [ -n "$budget" ]; then sed -i "0,/^\[runtime\]/s//[runtime]\ntls_handshakes_per_poll = $budget/" "$conf"; fi
  bash bench/lab.sh exec proxy "$ZPROXY" run -c "$conf" > "$RUN/zproxy-tls-flood.log" 2>&1 &
  ZPID=$!
  for _ in $(seq 100); do grep -q " polling" "$RUN/zproxy-tls-flood.log" && break; sleep 0.1; done
  bash bench/lab.sh exec client curl -sk --retry 5 --retry-connrefused --max-time 2 -o /dev/null "$url"
  local secs=${DURATION%s}
  : > "$RUN/tls-flood.out"
  if [ "$2" = flood ]; then
    # The flood starts first and outlasts the measured keep-alive run.
    bash bench/lab.sh exec client taskset -c 0 wrk -t1 -c100 -d"$((secs + 2))s" -H "Connection: close" "$url" > "$RUN/tls-flood.out" 2>&1 &
    flood=$!
    sleep 1
  fi
  keep=$(bash bench/lab.sh exec client taskset -c 0 wrk -t1 -c20 -d"$DURATION" --latency "$url" 2>&1)
  if [ -n "$flood" ]; then wait "$flood" || true; fi
  kill -INT "$ZPID"; wait "$ZPID" || true; ZPID=""
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${budget:-default}" "$2" \
    "$(echo "$keep" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
    "$(echo "$keep" | awk '$1 == "50%" {print $2}')" \
    "$(echo "$keep" | awk '$1 == "99%" {print $2}')" \
    "$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$RUN/tls-flood.out")" \
    "$(awk '/requests in/ {print $1}' "$RUN/tls-flood.out")" | tee -a "$OUT/tls-flood.md"
}

tls_phase() {
  step "TLS: ZProxy, HAProxy and nginx on :443 (ECDSA P-256 and RSA-2048), $DURATION each"
  tls_certs
  printf '| server | row | per second | server CPU per request (us) |\n| --- | --- | --- | --- |\n' > "$OUT/tls.md"
  local kind conf master
  for kind in ecdsa rsa; do
    if wants zproxy; then
      tls_zproxy_config "$RUN/zproxy-tls-$kind.toml" "$kind"
      bash bench/lab.sh exec proxy "$ZPROXY" run -c "$RUN/zproxy-tls-$kind.toml" > "$RUN/zproxy-tls-$kind.log" 2>&1 &
      ZPID=$!
      for _ in $(seq 100); do grep -q " polling" "$RUN/zproxy-tls-$kind.log" && break; sleep 0.1; done
      bash bench/lab.sh exec client curl -sk --retry 5 --retry-connrefused --max-time 2 -o /dev/null https://10.71.0.2:443/
      tls_measure "zproxy-$kind" full "$ZPID"
      if [ $kind = ecdsa ]; then
        tls_measure "zproxy-$kind" resumed "$ZPID"
        tls_measure "zproxy-$kind" keepalive "$ZPID"
      fi
      kill -INT "$ZPID"; wait "$ZPID" || true; ZPID=""
    fi
  done
  if wants zproxy; then
    step "TLS: handshake flood against established keep-alive clients, default budget and 1024"
    printf '| tls_handshakes_per_poll | flood | keep-alive req/s | keep-alive p50 | keep-alive p99 | flood handshakes/s | flood connections |\n| --- | --- | --- | --- | --- | --- | --- |\n' > "$OUT/tls-flood.md"
    tls_flood "" none
    tls_flood "" flood
    tls_flood 1024 flood
  fi
  bash bench/lab.sh exec proxy ip addr add 10.71.0.2/24 dev cli1
  bash bench/lab.sh exec proxy ip addr add 10.72.0.2/24 dev ups1
  for peer in haproxy nginx; do
    wants "$peer" || continue
    for kind in ecdsa rsa; do
      conf=$(tls_peer_config "$peer" "$kind")
      if [ "$peer" = haproxy ]; then bash bench/lab.sh exec proxy haproxy -f "$conf"; else bash bench/lab.sh exec proxy nginx -c "$conf"; fi
      sleep 0.5
      master=$(cat "$RUN/$peer-tls.pid")
      # shellcheck disable=SC2046
      tls_measure "$peer-$kind" full "$master" $(pgrep -P "$master" || true)
      if [ $kind = ecdsa ]; then
        # shellcheck disable=SC2046
        tls_measure "$peer-$kind" resumed "$master" $(pgrep -P "$master" || true)
        # shellcheck disable=SC2046
        tls_measure "$peer-$kind" keepalive "$master" $(pgrep -P "$master" || true)
      fi
      kill "$master"
      for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
    done
  done
  bash bench/lab.sh exec proxy ip addr del 10.71.0.2/24 dev cli1
  bash bench/lab.sh exec proxy ip addr del 10.72.0.2/24 dev ups1
  echo "   TLS rows: $OUT/tls.md"
}
