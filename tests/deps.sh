#!/usr/bin/env bash
# Installs what building, testing and the netns lab need on a fresh Debian 12
# machine (root): DPDK 22.11 and its build tools, the lab's peers and clients.
# Idempotent: packages already present are left as they are.
set -euo pipefail

PACKAGES=(
  # build: DPDK headers/libraries, bindgen's libclang, the C shim's compiler
  libdpdk-dev dpdk pkg-config clang libclang-dev build-essential
  # DPDK's PMD dependencies (af_xdp, af_packet, pcap)
  libxdp-dev libbpf-dev libnuma-dev libpcap-dev
  # the lab: namespaces, veth offloads, clients, upstream and peer proxies
  iproute2 ethtool iputils-ping iputils-arping curl nginx haproxy wrk procps python3
  # lab_metrics: the reference parser of the Prometheus text format
  python3-prometheus-client
  # lab_upgrade: WebSocket echo server and clients
  python3-websockets
  # fault injection in the lab (random loss in a namespace)
  nftables
  # the service test: a real systemd in a container (systemd-nspawn)
  systemd systemd-container
  # lab_announce: BIRD 2 on the proxy side and as the router (own sockets and configs)
  bird2
)

if [ "$(id -u)" -ne 0 ]; then
  echo "tests/deps.sh: must run as root (apt-get install)" >&2
  exit 2
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts nginx/haproxy services on install where an init runs; the lab
# starts its own instances, so stop system-wide ones that hold port 80.
for svc in nginx haproxy; do
  if pgrep -x "$svc" >/dev/null && [ -f "/run/$svc.pid" ]; then
    kill "$(cat "/run/$svc.pid")" 2>/dev/null || true
  fi
done

if ! command -v cargo >/dev/null; then
  echo "deps: cargo not found: install Rust (rustup) first" >&2
  exit 2
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "deps: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
echo "deps: ok"
