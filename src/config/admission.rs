//! The admission keys (`runtime.admit_flows_percent`,
//! `runtime.admit_backlog_polls`; see `net::admission`) and their checks.

use super::validate::invalid;
use super::{Config, ConfigError};

/// By default a worker takes clients until its table is full (then drops
/// their SYNs rather than reset them).
pub const DEFAULT_ADMIT_FLOWS_PERCENT: u32 = 100;
/// By default 8 full rx bursts in a row (256 frames left waiting) mean a
/// worker is behind and drops new SYNs.
pub const DEFAULT_ADMIT_BACKLOG_POLLS: u32 = 8;
/// More full bursts than this is never a useful threshold.
pub const MAX_ADMIT_BACKLOG_POLLS: u32 = 65_536;

impl Config {
    pub(super) fn validate_admission(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|n| n + 1);
        let pct = self.runtime.admit_flows_percent;
        if !(1..=100).contains(&pct) {
            return Err(invalid(at("admit_flows_percent"), "runtime.admit_flows_percent", format!("runtime.admit_flows_percent = {pct}: must be 1..=100 (the share of max_flows in use past which new clients' SYNs are dropped)")));
        }
        let polls = self.runtime.admit_backlog_polls;
        if polls > MAX_ADMIT_BACKLOG_POLLS {
            return Err(invalid(at("admit_backlog_polls"), "runtime.admit_backlog_polls", format!("runtime.admit_backlog_polls = {polls}: must be 0..={MAX_ADMIT_BACKLOG_POLLS} (full rx bursts in a row before new SYNs are dropped; 0: never)")));
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
