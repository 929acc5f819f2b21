#!/usr/bin/env bash
# Network-namespace lab for ZProxy: client ns <-veth-> proxy ns <-veth-> upstream ns (nginx).
#
#   ${P}-client    cli0 10.71.0.1/24, default via 10.71.0.2 (ZProxy client-side address)
#   ${P}-proxy     cli1, ups1 (no addresses; DPDK af_xdp/af_packet binds to them)
#   ${P}-upstream  ups0 10.72.0.1/24, default via 10.72.0.2 (ZProxy upstream-side address)
#                  nginx on 10.72.0.1:80
#
# Usage: bench/lab.sh [--prefix P] up|down|status|exec ROLE CMD...
# Env:   LAB_PREFIX (default zp), LAB_QUEUES (veth rx/tx queues, default 1),
#        LAB_RUN_ROOT (default /run/zproxy-lab)
# Nothing is routed out of the machine: all addresses live inside the lab namespaces.
set -euo pipefail

PREFIX=${LAB_PREFIX:-zp}
QUEUES=${LAB_QUEUES:-1}
RUN_ROOT=${LAB_RUN_ROOT:-/run/zproxy-lab}

CLIENT_IP=10.71.0.1
PROXY_CLIENT_IP=10.71.0.2
UPSTREAM_IP=10.72.0.1
PROXY_UPSTREAM_IP=10.72.0.2
UPSTREAM_BODY="hello from upstream"
# /bytes/N sizes: decimal steps, 1 MiB and 100 MiB (the throughput benchmark).
BYTES_SIZES=(100 1000 10000 100000 1000000 1048576 104857600)

usage() {
    cat <<EOF
Usage: $0 [--prefix P] up|down|status
       $0 [--prefix P] exec client|proxy|upstream CMD [ARGS...]

  up      create namespaces \${P}-client, \${P}-proxy, \${P}-upstream, veth pairs
          cli0(client)<->cli1(proxy) and ups0(upstream)<->ups1(proxy), start nginx on
          $UPSTREAM_IP:80 in the upstream namespace. Recreates an existing lab.
  down    stop nginx and anything else running in the lab namespaces, delete them
  status  show namespaces, links, addresses and nginx state
  exec    run CMD inside namespace \${P}-ROLE

  client   cli0 $CLIENT_IP/24, default via $PROXY_CLIENT_IP
  proxy    cli1, ups1 without addresses (ZProxy owns $PROXY_CLIENT_IP and $PROXY_UPSTREAM_IP)
  upstream ups0 $UPSTREAM_IP/24, default via $PROXY_UPSTREAM_IP; nginx serves
           / -> "$UPSTREAM_BODY" and /bytes/N (N in ${BYTES_SIZES[*]}) -> N bytes

Env: LAB_PREFIX (default zp; or --prefix), LAB_QUEUES (veth queues, default 1),
     LAB_RUN_ROOT (default /run/zproxy-lab; runtime dir is \$LAB_RUN_ROOT/\$P;
     the /bytes files are made once in \$LAB_RUN_ROOT/.bytes and linked into each lab)
EOF
}

msg() { echo "lab[$PREFIX]: $*"; }
err() { echo "lab[$PREFIX]: error: $*" >&2; }
die() { err "$*"; exit 1; }

CMD=""
while [[ $# -gt 0 ]]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        up|down|status|exec) CMD=$1; shift; break ;;
        *) err "unknown argument '$1'"; usage >&2; exit 2 ;;
    esac
done
[[ -n $CMD ]] || { usage >&2; exit 2; }
[[ $PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$ ]] || die "bad prefix '$PREFIX' (letters, digits, _ . -; max 31 chars)"
[[ $QUEUES =~ ^[1-9][0-9]*$ ]] || die "LAB_QUEUES must be a positive integer, got '$QUEUES'"
[[ $(id -u) -eq 0 ]] || { err "must run as root"; exit 2; }

NS_CLIENT=$PREFIX-client
NS_PROXY=$PREFIX-proxy
NS_UPSTREAM=$PREFIX-upstream
ALL_NS=("$NS_CLIENT" "$NS_PROXY" "$NS_UPSTREAM")
RUN_DIR=$RUN_ROOT/$PREFIX

ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$1"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---- down ------------------------------------------------------------------
kill_ns_pids() { # ns: TERM then KILL whatever still runs inside the namespace
    local ns=$1 pids i
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] || return 0
    kill -TERM $pids 2>/dev/null || true
    for i in $(seq 1 20); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [[ -n $pids ]] || return 0
        sleep 0.1
    done
    msg "killing leftover processes in $ns: $pids"
    kill -KILL $pids 2>/dev/null || true
}

do_down() {
    local pid ns
    if [[ -r $RUN_DIR/nginx.pid ]]; then
        pid=$(cat "$RUN_DIR/nginx.pid" 2>/dev/null || true)
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            kill -QUIT "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            kill_ns_pids "$ns"
            ip netns delete "$ns" 2>/dev/null || err "could not delete netns $ns"
        fi
    done
    rm -rf "$RUN_DIR"
    msg "down"
}

# ---- up --------------------------------------------------------------------
offload_off() { # ns iface [tx]: turn off segmentation offloads (and tx checksum if asked)
    local ns=$1 ifc=$2 f
    for f in tso gso gro; do
        in_ns "$ns" ethtool -K "$ifc" "$f" off >/dev/null 2>&1 || true
    done
    if [[ ${3:-} == tx ]]; then
        in_ns "$ns" ethtool -K "$ifc" tx off >/dev/null 2>&1 || true
        # mandatory: verify (partial checksums make ZProxy drop every SYN)
        if ! in_ns "$ns" ethtool -k "$ifc" | grep -q '^tx-checksumming: off'; then
            die "could not turn off tx checksum offload on $ifc in $ns"
        fi
    fi
}

# bytes_file N: path of a file of N 'x' bytes, made once per run root (the
# 100 MiB one takes a moment) and shared read-only by every lab.
bytes_file() {
    local n=$1 dir=$RUN_ROOT/.bytes tmp
    if [[ $(stat -c %s "$dir/$n" 2>/dev/null) != "$n" ]]; then
        mkdir -p "$dir"
        chmod 755 "$dir"
        tmp=$(mktemp "$dir/.$n.XXXXXX")
        head -c "$n" /dev/zero | tr '\0' 'x' > "$tmp"
        chmod 644 "$tmp"
        mv -f "$tmp" "$dir/$n"
    fi
    echo "$dir/$n"
}

write_nginx_conf() {
    local www=$RUN_DIR/www n
    mkdir -p "$www/bytes" "$RUN_DIR/tmp"
    printf '%s\n' "$UPSTREAM_BODY" > "$www/index.txt"
    for n in "${BYTES_SIZES[@]}"; do
        ln -s "$(bytes_file "$n")" "$www/bytes/$n"
    done
    chmod -R a+rX "$RUN_DIR"
    cat > "$RUN_DIR/nginx.conf" <<EOF
# generated by bench/lab.sh for lab '$PREFIX'
worker_processes 1;
# Room for 10,000+ proxied connections (bench/run-lab.sh --sweep), within a
# 20,000 open-files hard limit.
worker_rlimit_nofile 19000;
daemon on;
pid $RUN_DIR/nginx.pid;
error_log $RUN_DIR/error.log warn;
events { worker_connections 18000; }
http {
    access_log $RUN_DIR/access.log;
    client_body_temp_path $RUN_DIR/tmp/body;
    proxy_temp_path $RUN_DIR/tmp/proxy;
    fastcgi_temp_path $RUN_DIR/tmp/fastcgi;
    uwsgi_temp_path $RUN_DIR/tmp/uwsgi;
    scgi_temp_path $RUN_DIR/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    server {
        listen $UPSTREAM_IP:80 reuseport backlog=16384;
        server_name _;
        root $www;
        location = / {
            default_type text/plain;
            return 200 "$UPSTREAM_BODY\n";
        }
        location /bytes/ { }
    }
}
EOF
}

UP_DONE=0
cleanup_failed_up() {
    local rc=$?
    if [[ $UP_DONE != 1 ]]; then
        err "'up' failed (exit $rc); cleaning up what was created"
        if [[ -s $RUN_DIR/error.log ]]; then
            err "nginx error.log:"; tail -n 20 "$RUN_DIR/error.log" >&2
        fi
        set +e
        do_down >/dev/null 2>&1
        (( rc != 0 )) || rc=1
        exit "$rc"
    fi
}

make_pair() { # name nsA peer nsB
    ip link add name "$1" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$2" \
        type veth peer name "$3" numtxqueues "$QUEUES" numrxqueues "$QUEUES" netns "$4"
}

do_up() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            msg "lab already exists, tearing it down first"
            do_down >/dev/null
            break
        fi
    done
    command -v nginx >/dev/null || die "nginx not installed"
    command -v ethtool >/dev/null || die "ethtool not installed"

    trap cleanup_failed_up EXIT
    mkdir -p "$RUN_DIR"
    chmod 755 "$RUN_ROOT" "$RUN_DIR"
    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        # no IPv6 chatter (RS/DAD/MLD) on the links ZProxy sees
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
    done

    make_pair cli0 "$NS_CLIENT" cli1 "$NS_PROXY"
    make_pair ups0 "$NS_UPSTREAM" ups1 "$NS_PROXY"

    offload_off "$NS_CLIENT" cli0 tx
    offload_off "$NS_UPSTREAM" ups0 tx
    offload_off "$NS_PROXY" cli1
    offload_off "$NS_PROXY" ups1

    in_ns "$NS_CLIENT" ip addr add "$CLIENT_IP/24" dev cli0
    in_ns "$NS_UPSTREAM" ip addr add "$UPSTREAM_IP/24" dev ups0
    in_ns "$NS_PROXY" ip link set cli1 up
    in_ns "$NS_PROXY" ip link set ups1 up
    in_ns "$NS_CLIENT" ip link set cli0 up
    in_ns "$NS_UPSTREAM" ip link set ups0 up
    in_ns "$NS_CLIENT" ip route add default via "$PROXY_CLIENT_IP" dev cli0
    in_ns "$NS_UPSTREAM" ip route add default via "$PROXY_UPSTREAM_IP" dev ups0

    in_ns "$NS_CLIENT" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
    in_ns "$NS_CLIENT" sysctl -qw net.ipv4.tcp_tw_reuse=1
    # Bursts of thousands of proxied connects (bench/run-lab.sh --sweep) must
    # wait in the upstream's queues, not be dropped.
    in_ns "$NS_UPSTREAM" sysctl -qw net.core.somaxconn=16384 net.ipv4.tcp_max_syn_backlog=16384

    write_nginx_conf
    in_ns "$NS_UPSTREAM" nginx -q -p "$RUN_DIR" -e "$RUN_DIR/error.log" -c "$RUN_DIR/nginx.conf" \
        || die "nginx failed to start (see $RUN_DIR/error.log)"
    local ok=0
    for _ in $(seq 1 50); do
        if [[ -s $RUN_DIR/nginx.pid ]] && in_ns "$NS_UPSTREAM" bash -c "exec 3<>/dev/tcp/$UPSTREAM_IP/80" 2>/dev/null; then
            ok=1; break
        fi
        sleep 0.1
    done
    [[ $ok == 1 ]] || die "nginx does not accept connections on $UPSTREAM_IP:80 (see $RUN_DIR/error.log)"

    UP_DONE=1
    trap - EXIT
    cat <<EOF
lab[$PREFIX]: up  (veth queues: $QUEUES, runtime dir: $RUN_DIR)
  $NS_CLIENT    cli0 $CLIENT_IP/24  default via $PROXY_CLIENT_IP
        |  veth
  $NS_PROXY     cli1 (no addr)  ups1 (no addr)   <- ZProxy: $PROXY_CLIENT_IP / $PROXY_UPSTREAM_IP
                                    |  veth
  $NS_UPSTREAM  ups0 $UPSTREAM_IP/24  default via $PROXY_UPSTREAM_IP  nginx :80 (pid $(cat "$RUN_DIR/nginx.pid"))
  run: $0 --prefix $PREFIX exec client curl http://$UPSTREAM_IP/
EOF
}

# ---- status ----------------------------------------------------------------
do_status() {
    local ns any=0 pid
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            any=1
            echo "== netns $ns"
            in_ns "$ns" ip -br link
            in_ns "$ns" ip -br -4 addr
            in_ns "$ns" ip -4 route | sed 's/^/route: /'
        else
            echo "== netns $ns: absent"
        fi
    done
    if [[ -r $RUN_DIR/nginx.pid ]] && pid=$(cat "$RUN_DIR/nginx.pid") && kill -0 "$pid" 2>/dev/null; then
        echo "== nginx: running (pid $pid), access log $RUN_DIR/access.log ($(wc -l < "$RUN_DIR/access.log" 2>/dev/null || echo 0) lines)"
    else
        echo "== nginx: not running"
    fi
    [[ $any == 1 ]] || return 1
}

# ---- exec ------------------------------------------------------------------
do_exec() {
    [[ $# -ge 2 ]] || { err "usage: $0 exec client|proxy|upstream CMD [ARGS...]"; exit 2; }
    local role=$1; shift
    case $role in
        client|proxy|upstream) ;;
        *) err "unknown role '$role' (client, proxy or upstream)"; exit 2 ;;
    esac
    ns_exists "$PREFIX-$role" || die "namespace $PREFIX-$role does not exist (run: $0 --prefix $PREFIX up)"
    exec ip netns exec "$PREFIX-$role" "$@"
}

case $CMD in
    up) [[ $# -eq 0 ]] || die "'up' takes no arguments"; do_up ;;
    down) do_down ;;
    status) do_status ;;
    exec) do_exec "$@" ;;
esac
