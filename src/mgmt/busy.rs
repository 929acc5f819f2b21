//! Each worker's busy fraction over a recent window, from the busy and total
//! cycle counters it publishes: a share since start would hide a core that
//! saturated a minute ago behind an hour of idling.

use std::time::{Duration, Instant};

use crate::net::counters::{Counter, SharedCounters};

/// Length of the window a ratio covers.
pub const WINDOW: Duration = Duration::from_secs(1);

pub struct BusyWindow {
    opened: Instant,
    /// (busy, total) cycles of each worker when the window opened.
    start: Vec<(u64, u64)>,
    /// Each worker's ratio over the last closed window (over the time
    /// since start until one closed).
    ratio: Vec<f64>,
}

fn cycles(w: &SharedCounters) -> (u64, u64) {
    (w.get(Counter::BusyCycles), w.get(Counter::TotalCycles))
}

fn share((busy, total): (u64, u64)) -> f64 {
    if total == 0 {
        0.0
    } else {
        busy as f64 / total as f64
    }
}

impl BusyWindow {
    pub fn new(workers: usize, now: Instant) -> BusyWindow {
        BusyWindow {
            opened: now,
            start: vec![(0, 0); workers],
            ratio: vec![0.0; workers],
        }
    }

    /// Call often (each control tick): closes the window once `WINDOW` has passed.
    pub fn update(&mut self, now: Instant, workers: &[&SharedCounters]) {
        let closing = now.duration_since(self.opened) >= WINDOW;
        for ((start, ratio), w) in self.start.iter_mut().zip(&mut self.ratio).zip(workers) {
            let (busy, total) = cycles(w);
            let delta = (busy.wrapping_sub(start.0), total.wrapping_sub(start.1));
            // Counters are published every 100 ms: a window without a
            // publish keeps the last ratio.
            if delta.1 > 0 {
                *ratio = share(delta);
            }
            if closing {
                *start = (busy, total);
            }
        }
        if closing {
            self.opened = now;
        }
    }

    pub fn ratios(&self) -> &[f64] {
        &self.ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::counters::Counters;

    fn publish(shared: &SharedCounters, busy: u64, total: u64) {
        let mut c = Counters::new();
        c.set(Counter::BusyCycles, busy);
        c.set(Counter::TotalCycles, total);
        shared.publish(&c);
    }

    #[test]
    fn ratio_of_the_last_window_not_since_start() {
        let t0 = Instant::now();
        let w = SharedCounters::default();
        let mut b = BusyWindow::new(1, t0);
        // First second: fully busy.
        publish(&w, 1000, 1000);
        b.update(t0 + WINDOW / 2, &[&w]);
        assert_eq!(b.ratios(), &[1.0]);
        b.update(t0 + WINDOW, &[&w]);
        // Next second: a quarter busy; since start it would be 62.5 %.
        publish(&w, 1250, 2000);
        b.update(t0 + WINDOW * 2, &[&w]);
        assert_eq!(b.ratios(), &[0.25]);
        // No publish since: the ratio stays.
        b.update(t0 + WINDOW * 3, &[&w]);
        assert_eq!(b.ratios(), &[0.25]);
    }
}
