//! Request metrics of one worker: what its finished exchanges (`Outcome`s)
//! looked like, by listener. Relaxed atomics written only by their worker
//! (a load and a store, no locked instruction), read by the control thread,
//! which sums the workers at each scrape. Sized when the worker is built:
//! recording never allocates.

use std::sync::atomic::{AtomicU64, Ordering};

use super::outcome::{Kind, Outcome};
use super::proxy::session::Cause;

/// Upper bounds of the latency histograms' buckets, in microseconds (the
/// exposition shows them in seconds); one more bucket takes the rest (+Inf).
pub const BUCKET_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Status classes of HTTP requests; the last, "none", is for requests cut
/// before a response was sent.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// A counter with a single writer: the worker adds with a plain load and
/// store, others read.
#[derive(Default)]
struct Cell(AtomicU64);

impl Cell {
    #[inline]
    fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram: per-bucket (not cumulative) counts and the sum.
#[derive(Default)]
struct Histogram {
    buckets: [Cell; BUCKETS],
    sum_us: Cell,
}

impl Histogram {
    #[inline]
    fn observe(&self, us: u64) {
        let i = BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i].add(1);
        self.sum_us.add(us);
    }
}

#[derive(Default)]
struct ListenerCells {
    requests: [Cell; STATUS_CLASSES.len()],
    tcp_connections: Cell,
    failures: [Cell; Cause::ALL.len()],
    request_time: Histogram,
    upstream_response_time: Histogram,
}

/// One worker's request metrics.
pub struct RequestStats {
    listeners: Box<[ListenerCells]>,
}

impl RequestStats {
    pub fn new(listeners: usize) -> RequestStats {
        RequestStats {
            listeners: (0..listeners).map(|_| ListenerCells::default()).collect(),
        }
    }

    /// Counts one finished exchange (on its worker only).
    #[inline]
    pub fn record(&self, o: &Outcome) {
        // An index from a listener list that changed under the exchange
        // is not worth a crash: it is not counted.
        let Some(l) = self.listeners.get(usize::from(o.listener)) else {
            return;
        };
        if let Some(cause) = o.cause {
            l.failures[cause as usize].add(1);
        }
        match o.kind {
            Kind::Tcp => l.tcp_connections.add(1),
            Kind::Http => {
                l.requests[status_class(o.status)].add(1);
                l.request_time.observe(o.total_us);
                if let Some(us) = o.response_us {
                    l.upstream_response_time.observe(us);
                }
            }
        }
    }

    /// Adds this worker's figures into `into` (one entry per listener).
    pub fn add_to(&self, into: &mut [ListenerTotals]) {
        for (t, l) in into.iter_mut().zip(self.listeners.iter()) {
            for (a, b) in t.requests.iter_mut().zip(&l.requests) {
                *a += b.get();
            }
            t.tcp_connections += l.tcp_connections.get();
            for (a, b) in t.failures.iter_mut().zip(&l.failures) {
                *a += b.get();
            }
            t.request_time.add(&l.request_time);
            t.upstream_response_time.add(&l.upstream_response_time);
        }
    }
}

/// Index in `STATUS_CLASSES` of a status sent to the client (0: none sent).
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// A histogram summed over the workers, for the exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramTotals {
    /// Per-bucket counts (not cumulative), the last one past every bound.
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramTotals {
    fn add(&mut self, h: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&h.buckets) {
            *a += b.get();
        }
        self.sum_us += h.sum_us.get();
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// (upper bound in seconds, count in that bucket alone) of every
    /// bucket, +Inf last: what the exposition encoder accumulates.
    pub fn buckets_s(&self) -> Vec<(f64, u64)> {
        BUCKET_BOUNDS_US
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets)
            .collect()
    }
}

/// One listener's figures summed over the workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerTotals {
    /// By `STATUS_CLASSES`.
    pub requests: [u64; STATUS_CLASSES.len()],
    pub tcp_connections: u64,
    /// By `Cause::ALL`.
    pub failures: [u64; Cause::ALL.len()],
    pub request_time: HistogramTotals,
    pub upstream_response_time: HistogramTotals,
}

/// Every listener's figures summed over `workers`.
pub fn totals<'a>(
    listeners: usize,
    workers: impl IntoIterator<Item = &'a RequestStats>,
) -> Vec<ListenerTotals> {
    let mut out = vec![ListenerTotals::default(); listeners];
    for w in workers {
        w.add_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(listener: u16, status: u16, total_us: u64, response_us: Option<u64>) -> Outcome {
        Outcome {
            listener,
            status,
            total_us,
            response_us,
            ..Outcome::default()
        }
    }

    #[test]
    fn counts_by_listener_status_class_and_cause() {
        let s = RequestStats::new(2);
        s.record(&http(0, 200, 300, Some(200)));
        s.record(&http(0, 204, 600, Some(400)));
        s.record(&http(0, 404, 100, None));
        s.record(&Outcome {
            cause: Some(Cause::ClientAbort),
            ..http(1, 0, 20_000_000, None)
        });
        s.record(&Outcome {
            kind: Kind::Tcp,
            cause: Some(Cause::Refused),
            ..http(1, 0, 1_000, None)
        });
        // An index past the listeners is dropped, not a crash.
        s.record(&http(7, 200, 1, None));
        let t = totals(2, [&s, &s]);
        assert_eq!(t[0].requests, [0, 4, 0, 2, 0, 0]);
        assert_eq!(t[1].requests, [0, 0, 0, 0, 0, 2]);
        assert_eq!(t[1].tcp_connections, 2);
        assert_eq!(t[1].failures[Cause::ClientAbort as usize], 2);
        assert_eq!(t[1].failures[Cause::Refused as usize], 2);
        assert_eq!(t[0].failures, [0; Cause::ALL.len()]);
        // 100 and 300 µs fall under 0.5 ms, 600 µs under 1 ms.
        let h = &t[0].request_time;
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_us, 2 * (300 + 600 + 100));
        assert_eq!(&h.buckets_s()[..3], &[(0.0005, 4), (0.001, 2), (0.0025, 0)]);
        assert_eq!(t[0].upstream_response_time.count(), 4);
        // Past the last bound: only in +Inf.
        let slow = t[1].request_time.buckets_s();
        assert_eq!(slow[BUCKET_BOUNDS_US.len() - 1], (10.0, 0));
        assert_eq!(slow[BUCKET_BOUNDS_US.len()], (f64::INFINITY, 2));
    }

    #[test]
    fn a_bound_is_inclusive() {
        let s = RequestStats::new(1);
        s.record(&http(0, 200, 500, None));
        let t = totals(1, [&s]);
        assert_eq!(t[0].request_time.buckets_s()[0], (0.0005, 1));
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(502)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(0)], "none");
        assert_eq!(STATUS_CLASSES[status_class(999)], "none");
    }
}
