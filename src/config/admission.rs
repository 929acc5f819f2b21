//! The admission keys (`runtime.admit_flows_percent`,
//! `runtime.admit_backlog_ms`; see `net::admission`) and their checks.

use super::validate::invalid;
use super::{Config, ConfigError};

/// By default a worker takes clients until its table is full (then drops
/// their SYNs rather than reset them).
pub const DEFAULT_ADMIT_FLOWS_PERCENT: u32 = 100;
/// By default a backed-up rx queue drops no SYN: measured kernel-free
/// (bench/RESULTS.md), shedding raised what an open-loop 2x overload served
/// but cut a closed-loop load at saturation to about a fifth (each dropped SYN
/// costs its client a 1 s retransmission), so it is opt-in (20 ms works).
pub const DEFAULT_ADMIT_BACKLOG_MS: u32 = 0;
/// Longer than this, the queue has long overflowed: never a useful threshold.
pub const MAX_ADMIT_BACKLOG_MS: u32 = 10_000;

impl Config {
    pub(super) fn validate_admission(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|n| n + 1);
        let pct = self.runtime.admit_flows_percent;
        if !(1..=100).contains(&pct) {
            return Err(invalid(at("admit_flows_percent"), "runtime.admit_flows_percent", format!("runtime.admit_flows_percent = {pct}: must be 1..=100 (the share of max_flows in use past which new clients' SYNs are dropped)")));
        }
        let ms = self.runtime.admit_backlog_ms;
        if ms > MAX_ADMIT_BACKLOG_MS {
            return Err(invalid(at("admit_backlog_ms"), "runtime.admit_backlog_ms", format!("runtime.admit_backlog_ms = {ms}: must be 0..={MAX_ADMIT_BACKLOG_MS} (how long the rx queue stays backed up before new SYNs are dropped; 0: never)")));
        }
        Ok(())
    }
}

impl super::Runtime {
    /// Flow slots in use past which a worker takes no new client.
    pub fn admit_flow_limit(&self) -> usize {
        (u64::from(self.max_flows) * u64::from(self.admit_flows_percent) / 100) as usize
    }
}
