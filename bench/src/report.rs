//! Markdown and JSON rendering of a finished run.

use std::fmt::Write as _;
use std::net::SocketAddr;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{fmt_duration, Args};
use crate::stats::{FailureKind, Results};

/// A finished run: its configuration and results.
#[derive(Clone, Debug)]
pub struct Run {
    pub args: Args,
    pub target: SocketAddr,
    /// Unix time (seconds) the run started.
    pub started_at: u64,
    pub results: Results,
    /// Latency of the successful measured requests in microseconds (for the plots).
    pub latency_hist: Histogram<u64>,
}

#[derive(Serialize)]
struct JsonConfig<'a> {
    host: &'a str,
    port: u16,
    address: String,
    path: &'a str,
    method: &'a str,
    keep_alive: bool,
    concurrency: u32,
    threads: u32,
    duration_secs: Option<f64>,
    warmup_secs: f64,
    rate: Option<f64>,
    body_size: usize,
    expect_size: Option<u64>,
    timeout_secs: f64,
    requests: Option<u64>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    tool: &'static str,
    version: &'static str,
    label: &'a str,
    started_at: u64,
    config: JsonConfig<'a>,
    results: &'a Results,
}

impl Run {
    /// The label shown in reports (`--label`, else the target URL).
    pub fn label(&self) -> String {
        self.args
            .label
            .clone()
            .unwrap_or_else(|| format!("{}:{}{}", self.args.host, self.args.port, self.args.path))
    }

    /// True when at least one request failed.
    pub fn has_failures(&self) -> bool {
        self.results.failures_total > 0
    }

    /// Machine-readable results.
    pub fn to_json(&self) -> String {
        let a = &self.args;
        let label = self.label();
        let doc = JsonRun {
            tool: "zproxy-bench",
            version: env!("CARGO_PKG_VERSION"),
            label: &label,
            started_at: self.started_at,
            config: JsonConfig {
                host: &a.host,
                port: a.port,
                address: self.target.to_string(),
                path: &a.path,
                method: a.method(),
                keep_alive: a.keep_alive == crate::KeepAlive::On,
                concurrency: a.concurrency,
                threads: a.threads,
                duration_secs: a.measured_duration().map(|d| d.as_secs_f64()),
                warmup_secs: a.warmup.as_secs_f64(),
                rate: a.rate,
                body_size: a.body_size,
                expect_size: a.expect_size,
                timeout_secs: a.timeout.as_secs_f64(),
                requests: a.requests,
            },
            results: &self.results,
        };
        let mut s = serde_json::to_string_pretty(&doc).expect("results serialize");
        s.push('\n');
        s
    }

    /// The markdown report.
    pub fn to_markdown(&self) -> String {
        let a = &self.args;
        let r = &self.results;
        let mut o = String::new();
        let _ = writeln!(o, "# zproxy-bench: {}\n", self.label());

        o.push_str("## Test Configuration\n\n| Parameter | Value |\n| --- | --- |\n");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(o, "| {k} | {v} |");
        };
        row("Label", self.label());
        row("Target", format!("`{}` ({})", self.url(), self.target));
        row("Method", a.method().to_string());
        row("Keep-alive", a.keep_alive.to_string());
        row("Concurrency", a.concurrency.to_string());
        row("Threads", a.threads.to_string());
        row(
            "Duration",
            a.measured_duration()
                .map_or_else(|| "until request limit".into(), fmt_duration),
        );
        row("Warm-up", fmt_duration(a.warmup));
        row(
            "Rate limit",
            a.rate
                .map_or_else(|| "unlimited".into(), |r| format!("{r} req/s")),
        );
        row("Request body", format!("{} B", a.body_size));
        row(
            "Expected body size",
            a.expect_size
                .map_or_else(|| "any".into(), |n| format!("{n} B")),
        );
        row("Timeout", fmt_duration(a.timeout));
        row(
            "Request limit",
            a.requests.map_or_else(|| "none".into(), |n| n.to_string()),
        );

        o.push_str("\n## Results\n\n| Metric | Value |\n| --- | --- |\n");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(o, "| {k} | {v} |");
        };
        row("Measured window", format!("{:.3} s", r.elapsed_secs));
        row("Completed requests", r.completed.to_string());
        row("Successes", r.successes.to_string());
        row("Failures", r.failures_total.to_string());
        row("Success rate", format!("{:.2} %", r.success_rate));
        row("Connections/s", format!("{:.1}", r.connections_per_sec));
        row(
            "Requests/s (all completed)",
            format!("{:.1}", r.requests_per_sec),
        );
        row(
            "Bytes received",
            format!(
                "{} ({:.2} MiB/s)",
                r.bytes_received,
                r.bytes_received as f64 / r.elapsed_secs / (1024.0 * 1024.0)
            ),
        );
        row(
            "Received in the window (any request)",
            format!(
                "{} B ({:.3} Gbit/s)",
                r.window_bytes_received, r.gbit_per_sec
            ),
        );
        row("Bytes sent", r.bytes_sent.to_string());
        row("TCP connections opened", r.connections_opened.to_string());

        let l = &r.latency;
        o.push_str("\n### Latency (successful requests)\n\n");
        o.push_str("| avg | min | p50 | p90 | p99 | p99.9 | max |\n");
        o.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            ms(l.avg_us),
            ms(l.min_us as f64),
            ms(l.p50_us as f64),
            ms(l.p90_us as f64),
            ms(l.p99_us as f64),
            ms(l.p999_us as f64),
            ms(l.max_us as f64)
        );

        o.push_str("\n### Failures by kind\n\n| Kind | Count |\n| --- | --- |\n");
        for k in FailureKind::ALL {
            let _ = writeln!(
                o,
                "| {} (`{}`) | {} |",
                k.describe(),
                k.name(),
                r.failures_of(k)
            );
        }

        if !r.status_codes.is_empty() {
            o.push_str("\n### Status codes\n\n| Status | Count |\n| --- | --- |\n");
            for (code, n) in &r.status_codes {
                let _ = writeln!(o, "| {code} | {n} |");
            }
        }
        o
    }

    fn url(&self) -> String {
        format!(
            "http://{}:{}{}",
            self.args.host, self.args.port, self.args.path
        )
    }
}

fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}
