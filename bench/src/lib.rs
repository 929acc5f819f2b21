//! `zproxy-bench`: an HTTP/1.1 load generator measuring connection rate and
//! latency, the benchmark ZProxy is judged by.
//!
//! Each worker thread runs a `mio` event loop that keeps its share of
//! `--concurrency` requests in flight at all times; a request that finishes or
//! fails is replaced at once. See `bench/README.md`.

pub mod config;
pub mod engine;
pub mod http;
pub mod plot;
pub mod report;
pub mod stats;

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::{Args, KeepAlive};
pub use report::Run;
pub use stats::{FailureKind, Results, ThreadStats};

/// Builds the request bytes sent for every request.
pub fn build_request(args: &Args) -> Vec<u8> {
    // An IPv6 literal goes in brackets (RFC 7230 5.4).
    let name = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]", args.host)
    } else {
        args.host.clone()
    };
    let host = if args.port == 80 {
        name
    } else {
        format!("{name}:{}", args.port)
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: zproxy-bench/{}\r\nAccept: */*\r\n",
        args.method(),
        args.path,
        host,
        env!("CARGO_PKG_VERSION")
    );
    if args.keep_alive == KeepAlive::Off {
        head.push_str("Connection: close\r\n");
    }
    if args.body_size > 0 {
        head.push_str("Content-Type: application/octet-stream\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", args.body_size));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.resize(req.len() + args.body_size, b'x');
    req
}

/// Runs the benchmark described by `args`.
pub fn run(args: &Args) -> Result<Run, String> {
    args.validate()?;
    let target = args.target()?;
    raise_fd_limit(args.concurrency as u64 + 64);
    let threads = args.threads as usize;
    let concurrency = args.concurrency as usize;
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let start = Instant::now();
    let window_start = start + args.warmup;
    let plan = engine::Plan {
        target,
        request: build_request(args),
        keep_alive: args.keep_alive == KeepAlive::On,
        nodelay: args.keep_alive == KeepAlive::On || args.body_size > 0,
        timeout: args.timeout,
        expect_size: args.expect_size,
        window_start,
        end: args.measured_duration().map(|d| window_start + d),
        tickets: args.requests.map(AtomicU64::new),
    };
    let rate = args.rate.map(|r| r / threads as f64);
    let outcomes: Vec<Result<ThreadStats, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = concurrency / threads + usize::from(t < concurrency % threads);
                let plan = &plan;
                std::thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(scope, move || {
                        let mut w = engine::Worker::new(plan, share, rate)
                            .map_err(|e| format!("worker setup: {e}"))?;
                        w.run().map_err(|e| format!("event loop: {e}"))?;
                        Ok(w.stats)
                    })
                    .map_err(|e| format!("spawn worker: {e}"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|_| Err("worker panicked".into())),
                Err(e) => Err(e),
            })
            .collect()
    });
    let finished = Instant::now();
    let mut total = ThreadStats::new();
    for o in outcomes {
        total.merge(&o?);
    }
    let stop = plan.end.map_or(finished, |end| end.min(finished));
    let elapsed = stop.saturating_duration_since(window_start);
    Ok(Run {
        args: args.clone(),
        target,
        started_at,
        results: Results::from_stats(&total, elapsed.max(Duration::from_micros(1))),
        latency_hist: total.hist,
    })
}

/// Raises the soft open-files limit towards `want` (bounded by the hard limit).
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur >= want as libc::rlim_t {
        return;
    }
    lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
    // SAFETY: `lim` is a valid rlimit struct; setrlimit only reads it.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}
