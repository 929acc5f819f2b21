//! Per-thread counters, their merge, and the final results.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Resolution of the timeline (successes and bytes received over time).
pub const TICK: Duration = Duration::from_millis(100);

/// Percentiles kept in the JSON results (`latency_percentiles`).
pub const PERCENTILES: [f64; 20] = [
    0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 95.0, 99.0, 99.5,
    99.9, 99.95, 99.99, 100.0,
];

/// Kinds of failed requests. A failed request is never counted as a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// connect() answered with ECONNREFUSED.
    ConnectRefused,
    /// The connection was not established within `--timeout`.
    ConnectTimeout,
    /// Any other connect() error (e.g. EADDRNOTAVAIL, unreachable).
    ConnectError,
    /// Connected, but the whole request took longer than `--timeout`.
    Timeout,
    /// ECONNRESET / EPIPE / ECONNABORTED while sending or receiving.
    Reset,
    /// EOF before the response was complete.
    Truncated,
    /// Unparsable status line, headers or body framing.
    Malformed,
    /// Complete response with a status outside 200-299.
    Status,
    /// Complete 2xx response whose body size differs from `--expect-size`.
    SizeMismatch,
    /// Any other I/O error.
    Io,
}

impl FailureKind {
    /// Every kind, in report order.
    pub const ALL: [FailureKind; 10] = [
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::ConnectError,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::Truncated,
        FailureKind::Malformed,
        FailureKind::Status,
        FailureKind::SizeMismatch,
        FailureKind::Io,
    ];

    /// Stable machine-readable name (JSON key).
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::ConnectError => "connect_error",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Truncated => "truncated",
            FailureKind::Malformed => "malformed",
            FailureKind::Status => "non_2xx",
            FailureKind::SizeMismatch => "size_mismatch",
            FailureKind::Io => "io_error",
        }
    }

    /// Human description for the report.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect refused",
            FailureKind::ConnectTimeout => "connect timeout",
            FailureKind::ConnectError => "other connect error",
            FailureKind::Timeout => "request timeout",
            FailureKind::Reset => "connection reset",
            FailureKind::Truncated => "truncated response (EOF before complete)",
            FailureKind::Malformed => "malformed response",
            FailureKind::Status => "non-2xx status",
            FailureKind::SizeMismatch => "body size mismatch",
            FailureKind::Io => "other I/O error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters kept by one worker thread (merged at the end).
pub struct ThreadStats {
    /// Latency of successful requests in microseconds.
    pub hist: Histogram<u64>,
    pub successes: u64,
    pub failures: [u64; FailureKind::ALL.len()],
    pub latency_sum_us: u128,
    pub latency_min_us: u64,
    pub latency_max_us: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Successes per second of the measured window.
    pub per_second: Vec<u64>,
    /// Responses by status code (index = code).
    pub status: Vec<u64>,
    /// Time of the last measured completion, relative to the window start.
    pub last_completion: Duration,
    /// Connections opened (measured or not).
    pub connections: u64,
    /// Requests that ended (success or failure) at any time, warm-up included.
    pub ended_all: u64,
    /// Bytes received inside the measured window by any request (one started in
    /// the warm-up too).
    pub window_bytes: u64,
    /// Bytes received at any time, warm-up included.
    pub received_all: u64,
    /// Successes per [`TICK`] of the measured window.
    pub tick_successes: Vec<u64>,
    /// Bytes received per [`TICK`] of the measured window.
    pub tick_bytes: Vec<u64>,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadStats {
    /// Empty counters.
    pub fn new() -> Self {
        ThreadStats {
            // 1us .. 1h, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            successes: 0,
            failures: [0; FailureKind::ALL.len()],
            latency_sum_us: 0,
            latency_min_us: u64::MAX,
            latency_max_us: 0,
            bytes_received: 0,
            bytes_sent: 0,
            per_second: Vec::with_capacity(64),
            status: vec![0; 1000],
            last_completion: Duration::ZERO,
            connections: 0,
            ended_all: 0,
            window_bytes: 0,
            received_all: 0,
            tick_successes: Vec::with_capacity(128),
            tick_bytes: Vec::with_capacity(128),
        }
    }

    /// Records a successful request that completed `at` after the window start.
    pub fn success(&mut self, latency: Duration, at: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        self.hist.saturating_record(us);
        self.successes += 1;
        self.latency_sum_us += us as u128;
        self.latency_min_us = self.latency_min_us.min(us);
        self.latency_max_us = self.latency_max_us.max(us);
        let sec = at.as_secs() as usize;
        if self.per_second.len() <= sec {
            self.per_second.resize(sec + 1, 0);
        }
        self.per_second[sec] += 1;
        *bucket(&mut self.tick_successes, at) += 1;
        self.last_completion = self.last_completion.max(at);
    }

    /// Records `n` bytes received; `at` is the time since the window start when
    /// they arrived inside the measured window.
    pub fn received(&mut self, n: u64, at: Option<Duration>) {
        self.received_all += n;
        if let Some(at) = at {
            self.window_bytes += n;
            *bucket(&mut self.tick_bytes, at) += n;
        }
    }

    /// Records a failed request that ended `at` after the window start.
    pub fn failure(&mut self, kind: FailureKind, at: Duration) {
        self.failures[kind.index()] += 1;
        self.last_completion = self.last_completion.max(at);
    }

    /// Records the status code of a complete response.
    pub fn status(&mut self, code: u16) {
        if let Some(c) = self.status.get_mut(code as usize) {
            *c += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ThreadStats) {
        self.hist
            .add(&other.hist)
            .expect("histograms have equal bounds");
        self.successes += other.successes;
        for (a, b) in self.failures.iter_mut().zip(other.failures.iter()) {
            *a += b;
        }
        self.latency_sum_us += other.latency_sum_us;
        self.latency_min_us = self.latency_min_us.min(other.latency_min_us);
        self.latency_max_us = self.latency_max_us.max(other.latency_max_us);
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        if self.per_second.len() < other.per_second.len() {
            self.per_second.resize(other.per_second.len(), 0);
        }
        for (a, b) in self.per_second.iter_mut().zip(other.per_second.iter()) {
            *a += b;
        }
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        self.last_completion = self.last_completion.max(other.last_completion);
        self.connections += other.connections;
        self.ended_all += other.ended_all;
        self.window_bytes += other.window_bytes;
        self.received_all += other.received_all;
        add_series(&mut self.tick_successes, &other.tick_successes);
        add_series(&mut self.tick_bytes, &other.tick_bytes);
    }

    /// Total failures.
    pub fn failed(&self) -> u64 {
        self.failures.iter().sum()
    }
}

/// The counter of the [`TICK`] containing `at`, growing `series` as needed.
fn bucket(series: &mut Vec<u64>, at: Duration) -> &mut u64 {
    let i = (at.as_nanos() / TICK.as_nanos()) as usize;
    if series.len() <= i {
        series.resize(i + 1, 0);
    }
    &mut series[i]
}

/// Adds `other` into `into` element by element.
fn add_series(into: &mut Vec<u64>, other: &[u64]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(other) {
        *a += b;
    }
}

/// Successes and bytes received over the measured window, per `interval_ms`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    pub interval_ms: u64,
    pub successes: Vec<u64>,
    pub bytes: Vec<u64>,
}

/// Latency figures in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub avg_us: f64,
    pub min_us: u64,
    pub max_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// Final, merged results of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// Length of the measured window in seconds.
    pub elapsed_secs: f64,
    /// Requests that ended (successes + failures) in the measured window.
    pub completed: u64,
    pub successes: u64,
    pub failures_total: u64,
    /// Successes per second over the measured window.
    pub connections_per_sec: f64,
    /// Completed requests per second over the measured window.
    pub requests_per_sec: f64,
    /// successes / completed * 100.
    pub success_rate: f64,
    /// Latency of successful requests (connect start to full response for new
    /// connections, request start to full response for reused ones).
    pub latency: Latency,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// TCP connections opened during the whole run, warm-up included.
    pub connections_opened: u64,
    /// Failures by kind (all kinds present, zero or not).
    pub failures: BTreeMap<&'static str, u64>,
    /// Complete responses by status code.
    pub status_codes: BTreeMap<u16, u64>,
    /// Successes completed in each second of the measured window.
    pub per_second: Vec<u64>,
    /// Requests that ended during the whole run, warm-up included: divide the
    /// server's CPU time over the whole run by this.
    pub requests_all: u64,
    /// Bytes received inside the measured window by any request, including
    /// those started in the warm-up or still running at the end.
    pub window_bytes_received: u64,
    /// Bytes received during the whole run, warm-up included: divide the
    /// server's CPU time over the whole run by this.
    pub bytes_received_all: u64,
    /// `window_bytes_received` in Gbit/s (10^9 bits) over the measured window.
    pub gbit_per_sec: f64,
    /// `[percentile, latency_us]` pairs at [`PERCENTILES`] (empty without successes).
    pub latency_percentiles: Vec<(f64, u64)>,
    /// Successes and bytes over time.
    pub timeline: Timeline,
}

impl Results {
    /// Builds the results from merged counters and the measured window length.
    pub fn from_stats(s: &ThreadStats, elapsed: Duration) -> Results {
        let secs = elapsed.as_secs_f64();
        let completed = s.successes + s.failed();
        let per = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        // The histogram reports a bucket's highest equivalent value, which can
        // lie just above the exact maximum: keep percentiles within min..max.
        let q = |quantile: f64| {
            s.hist
                .value_at_quantile(quantile)
                .clamp(s.latency_min_us.min(s.latency_max_us), s.latency_max_us)
        };
        let latency = if s.successes > 0 {
            Latency {
                avg_us: s.latency_sum_us as f64 / s.successes as f64,
                min_us: s.latency_min_us,
                max_us: s.latency_max_us,
                p50_us: q(0.50),
                p90_us: q(0.90),
                p99_us: q(0.99),
                p999_us: q(0.999),
            }
        } else {
            Latency::default()
        };
        // Keep the per-second series as long as the window, even if the tail is idle.
        let mut per_second = s.per_second.clone();
        let want = elapsed.as_secs_f64().ceil() as usize;
        if per_second.len() < want {
            per_second.resize(want, 0);
        }
        let ticks = (elapsed.as_nanos().div_ceil(TICK.as_nanos()) as usize).max(1);
        let fit = |v: &[u64]| {
            let mut v = v.to_vec();
            v.resize(ticks, 0);
            v
        };
        let latency_percentiles = if s.successes > 0 {
            // The ends are exact; the histogram gives 3 significant digits.
            PERCENTILES
                .iter()
                .map(|&p| match p {
                    0.0 => (p, s.latency_min_us),
                    100.0 => (p, s.latency_max_us),
                    _ => (p, q(p / 100.0)),
                })
                .collect()
        } else {
            Vec::new()
        };
        Results {
            elapsed_secs: secs,
            completed,
            successes: s.successes,
            failures_total: s.failed(),
            connections_per_sec: per(s.successes),
            requests_per_sec: per(completed),
            success_rate: if completed > 0 {
                s.successes as f64 * 100.0 / completed as f64
            } else {
                0.0
            },
            latency,
            bytes_received: s.bytes_received,
            bytes_sent: s.bytes_sent,
            connections_opened: s.connections,
            failures: FailureKind::ALL
                .iter()
                .map(|k| (k.name(), s.failures[k.index()]))
                .collect(),
            status_codes: s
                .status
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(code, &n)| (code as u16, n))
                .collect(),
            per_second,
            requests_all: s.ended_all,
            window_bytes_received: s.window_bytes,
            bytes_received_all: s.received_all,
            gbit_per_sec: if secs > 0.0 {
                s.window_bytes as f64 * 8.0 / secs / 1e9
            } else {
                0.0
            },
            latency_percentiles,
            timeline: Timeline {
                interval_ms: TICK.as_millis() as u64,
                successes: fit(&s.tick_successes),
                bytes: fit(&s.tick_bytes),
            },
        }
    }

    /// Count of failures of one kind.
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures.get(kind.name()).copied().unwrap_or(0)
    }
}
