//! Per-thread counters, their merge, and the final results.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

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
        self.last_completion = self.last_completion.max(at);
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
    }

    /// Total failures.
    pub fn failed(&self) -> u64 {
        self.failures.iter().sum()
    }
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
}

impl Results {
    /// Builds the results from merged counters and the measured window length.
    pub fn from_stats(s: &ThreadStats, elapsed: Duration) -> Results {
        let secs = elapsed.as_secs_f64();
        let completed = s.successes + s.failed();
        let per = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let latency = if s.successes > 0 {
            Latency {
                avg_us: s.latency_sum_us as f64 / s.successes as f64,
                min_us: s.latency_min_us,
                max_us: s.latency_max_us,
                p50_us: s.hist.value_at_quantile(0.50),
                p90_us: s.hist.value_at_quantile(0.90),
                p99_us: s.hist.value_at_quantile(0.99),
                p999_us: s.hist.value_at_quantile(0.999),
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
        }
    }

    /// Count of failures of one kind.
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures.get(kind.name()).copied().unwrap_or(0)
    }
}
