//! The worker's side of the access log: each finished exchange (sampled 1
//! in N) is copied into this worker's bounded lock-free ring, which the
//! writer thread (`crate::access_log`) drains. A push never blocks and
//! never allocates: when the ring is full the line is dropped and the
//! caller counts it (`Counter::AccessLogDropped`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

use super::outcome::Outcome;

/// One worker's lines for the writer. Entries carry Unix time (µs) in
/// `start_us`, not the worker's clock.
pub type Ring = ArrayQueue<Outcome>;

pub struct AccessLog {
    ring: Arc<Ring>,
    /// Log 1 exchange in `sample`.
    sample: u32,
    /// Exchanges since the last one logged.
    skipped: u32,
    /// Unix time (µs) less the worker's clock, taken once at start.
    wall_offset_us: u64,
}

impl AccessLog {
    /// The ring must be allocated up front (`Ring::new(entries)`).
    pub fn new(ring: Arc<Ring>, sample: u32) -> AccessLog {
        AccessLog {
            ring,
            sample: sample.max(1),
            skipped: 0,
            wall_offset_us: 0,
        }
    }

    /// Ties the worker's clock (`now_us`, read now) to the wall clock.
    pub fn set_clock(&mut self, now_us: u64) {
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.wall_offset_us = unix_us.saturating_sub(now_us);
    }

    /// Queues `o` for the writer (or skips it, sampling); false when the
    /// ring was full and the line was dropped.
    pub fn record(&mut self, o: &Outcome) -> bool {
        self.skipped += 1;
        if self.skipped < self.sample {
            return true;
        }
        self.skipped = 0;
        let mut line = *o;
        line.start_us = o.start_us.wrapping_add(self.wall_offset_us);
        self.ring.push(line).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_drops_and_says_so() {
        let ring = Arc::new(Ring::new(3));
        let mut log = AccessLog::new(ring.clone(), 1);
        let o = Outcome::default();
        let kept: Vec<bool> = (0..5).map(|_| log.record(&o)).collect();
        assert_eq!(kept, [true, true, true, false, false]);
        assert_eq!(ring.len(), 3);
        ring.pop();
        assert!(log.record(&o), "room again once the writer took one");
    }

    #[test]
    fn sampling_keeps_one_in_n_and_times_become_unix() {
        let ring = Arc::new(Ring::new(100));
        let mut log = AccessLog::new(ring.clone(), 4);
        log.set_clock(5_000_000);
        let o = Outcome {
            start_us: 5_000_000,
            ..Outcome::default()
        };
        for _ in 0..40 {
            assert!(log.record(&o));
        }
        assert_eq!(ring.len(), 10);
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        let logged = ring.pop().unwrap().start_us;
        assert!(unix_us - logged < 10_000_000, "{unix_us} vs {logged}");
    }
}
