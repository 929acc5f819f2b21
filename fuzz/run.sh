#!/usr/bin/env bash
# Bounded fuzzing, as CI runs it (tests/run.sh): builds the targets with
# cargo-fuzz (stable Rust: RUSTC_BOOTSTRAP=1 lets it pass its -Z flags), then
# runs each for FUZZ_SECONDS (default 60) from its seed corpus, and fails on
# the first crash, printing the input (base64) and how to replay it.
#
#   sudo fuzz/run.sh                         # all targets, 60 s each
#   sudo FUZZ_SECONDS=300 fuzz/run.sh config # one target, 5 minutes
#
# worker_frames needs root (DPDK EAL, as tests/dpdk_ring.rs). New inputs go
# to a scratch directory, not to the committed corpora.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(http_request config worker_frames tls_records)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -q '^cargo-fuzz 0\.13\.'; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    opts=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1)
    env=()
    case "$t" in
        http_request) opts+=(-dict=dicts/http.dict) ;;
        config) opts+=(-dict=dicts/config.dict -max_len=8192) ;;
        # One worker for the whole run (EAL once per process; its socket
        # arena lives as long as the process): not a leak.
        worker_frames) opts+=(-detect_leaks=0); env=(ASAN_OPTIONS=detect_leaks=0) ;;
        # The same worker harness, with its HTTPS listener; records are small.
        tls_records) opts+=(-detect_leaks=0 -max_len=4096); env=(ASAN_OPTIONS=detect_leaks=0) ;;
    esac
    mkdir -p "$scratch/$t" "artifacts/$t"
    ls "artifacts/$t" >"$scratch/$t.before"
    echo "fuzz: $t for ${seconds}s"
    if ! env "${env[@]}" cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- "${opts[@]}" \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log"
        for a in $(ls "artifacts/$t" | comm -13 "$scratch/$t.before" -); do
            echo "fuzz: $t crashed on artifacts/$t/$a; base64 of the input:"
            base64 "artifacts/$t/$a"
            echo "replay: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t artifacts/$t/$a"
        done
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done' "$scratch/$t.log" || true
done
