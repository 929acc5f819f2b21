#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root: installs what
# it needs (tests/deps.sh), reserves hugepages, builds, lints, and runs every
# test (unit, DPDK net_ring, netns lab on af_xdp/af_packet, load generator).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
bash hugepages/setup.sh --pages 512
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
