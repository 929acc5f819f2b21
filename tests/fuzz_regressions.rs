//! Every input with which a fuzzer in `fuzz/` found a bug, replayed through
//! the very checks of its fuzz target (the files of `fuzz/src/`, included
//! here): `fuzz/regressions/<target>/` holds them, one file per bug. See
//! `fuzz/README.md`. Built without `cfg(fuzzing)`, so smoltcp checks
//! checksums here, as in production.

#[allow(dead_code)]
#[path = "../fuzz/src/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../fuzz/src/ops.rs"]
mod ops;
#[allow(dead_code)]
#[path = "../fuzz/src/strict.rs"]
mod strict;
#[allow(dead_code)]
#[path = "../fuzz/src/targets.rs"]
mod targets;
#[allow(dead_code)]
#[path = "../fuzz/src/wire.rs"]
mod wire;

mod common;

use std::path::{Path, PathBuf};

/// The inputs saved for `target`, in name order.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn http_request_regressions() {
    for (file, data) in inputs("http_request") {
        eprintln!("{}", file.display());
        targets::http_request(&data);
    }
}

#[test]
fn config_regressions() {
    let sysfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/sysfs");
    for (file, data) in inputs("config") {
        eprintln!("{}", file.display());
        targets::config(&data, &sysfs);
    }
}

/// A real worker on DPDK `net_ring` ports (EAL once per process: one test).
#[test]
fn worker_frames_regressions() {
    if !common::require_root() {
        return;
    }
    let mut h = harness::Harness::new();
    for (file, data) in inputs("worker_frames") {
        eprintln!("{}", file.display());
        h.run(&data);
    }
    // The HTTPS listener's bad input (`tls_records`), on the same worker.
    for (file, data) in inputs("tls_records") {
        eprintln!("{}", file.display());
        h.run_tls(&data);
    }
}
