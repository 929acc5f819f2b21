#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root: installs what
# it needs (tests/deps.sh), reserves hugepages, builds, lints, and runs every
# test (unit, DPDK net_ring, netns lab on af_xdp/af_packet, load generator).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/deps.sh
bash hugepages/setup.sh --pages 512
# Release builds: the lab tests move real traffic (1 GiB transfers, 10,000
# connections) through zproxy, which an unoptimised build cannot keep up with.
cargo build --workspace --all-targets --locked --release
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --release --no-fail-fast
# Fuzzing (fuzz/README.md): cargo-fuzz, then each target for 60 s from its
# seed corpus; any crash fails the run, with its input printed (base64).
bash fuzz/run.sh
