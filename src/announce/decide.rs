//! Whether the VIP should be announced now: a pure function of what the
//! control thread sees, so that it is tested without BIRD or root.

use std::time::{Duration, Instant};

use crate::app::proxy::engine::UpstreamStat;

/// What the decision reads on each control tick.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// Every worker is polling (the appliance serves).
    pub up: bool,
    /// SIGTERM arrived: no new connections, so no new traffic either.
    pub draining: bool,
    /// Every followed group has a healthy, live primary server.
    pub healthy: bool,
}

/// Why the VIP is (or is not) wanted, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Healthy,
    NotUp,
    Draining,
    GroupDown,
    HoldDown,
}

impl Reason {
    pub fn says(self) -> &'static str {
        match self {
            Reason::Healthy => "up and every followed group has a healthy server",
            Reason::NotUp => "the workers are not all polling yet",
            Reason::Draining => "draining",
            Reason::GroupDown => "a followed upstream group has no healthy server",
            Reason::HoldDown => "healthy, waiting out the hold-down",
        }
    }
}

/// Withdraws at once; announces only after `hold_down` of uninterrupted
/// health (at start too, so a first health check can fail before any
/// router sends traffic), so a flapping group does not flap the route.
#[derive(Debug, Default)]
pub struct Decider {
    healthy_since: Option<Instant>,
    wanted: bool,
}

impl Decider {
    /// The decision at `now`, and why.
    pub fn want(&mut self, now: Instant, i: Inputs, hold_down: Duration) -> (bool, Reason) {
        let blocked = if !i.up {
            Some(Reason::NotUp)
        } else if i.draining {
            Some(Reason::Draining)
        } else if !i.healthy {
            Some(Reason::GroupDown)
        } else {
            None
        };
        if let Some(why) = blocked {
            self.healthy_since = None;
            self.wanted = false;
            return (false, why);
        }
        let since = *self.healthy_since.get_or_insert(now);
        if !self.wanted && now.duration_since(since) < hold_down {
            return (false, Reason::HoldDown);
        }
        self.wanted = true;
        (true, Reason::Healthy)
    }
}

/// Every group in `groups` has at least one primary server that is healthy
/// and not retired by a reload (a group missing from `stats` is not healthy:
/// its worker has not published yet). Backups do not count: an instance
/// whose own servers are gone withdraws, and its backups serve only what
/// still reaches it before the route changes.
pub fn groups_healthy(groups: &[&str], stats: &[UpstreamStat]) -> bool {
    groups.iter().all(|g| {
        stats
            .iter()
            .any(|s| s.group == *g && s.healthy && !s.retired && !s.backup)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(3);
    const OK: Inputs = Inputs {
        up: true,
        draining: false,
        healthy: true,
    };

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn announces_only_after_the_hold_down_and_withdraws_at_once() {
        let t0 = Instant::now();
        let mut d = Decider::default();
        assert_eq!(d.want(t0, OK, HOLD), (false, Reason::HoldDown));
        assert_eq!(d.want(at(t0, 2_999), OK, HOLD), (false, Reason::HoldDown));
        assert_eq!(d.want(at(t0, 3_000), OK, HOLD), (true, Reason::Healthy));
        assert_eq!(d.want(at(t0, 60_000), OK, HOLD), (true, Reason::Healthy));
        let down = Inputs {
            healthy: false,
            ..OK
        };
        assert_eq!(
            d.want(at(t0, 60_001), down, HOLD),
            (false, Reason::GroupDown)
        );
        // Back: the hold-down starts again from the recovery.
        assert_eq!(d.want(at(t0, 61_000), OK, HOLD), (false, Reason::HoldDown));
        assert_eq!(d.want(at(t0, 63_999), OK, HOLD), (false, Reason::HoldDown));
        assert_eq!(d.want(at(t0, 64_000), OK, HOLD), (true, Reason::Healthy));
    }

    #[test]
    fn a_flapping_group_keeps_the_vip_withdrawn() {
        let t0 = Instant::now();
        let mut d = Decider::default();
        let down = Inputs {
            healthy: false,
            ..OK
        };
        // Up 2 s, down a moment, up 2 s...: never 3 s in a row.
        for cycle in 0..10 {
            let base = cycle * 2_100;
            for ms in (0..2_000).step_by(100) {
                assert!(
                    !d.want(at(t0, base + ms), OK, HOLD).0,
                    "cycle {cycle} +{ms}"
                );
            }
            assert!(!d.want(at(t0, base + 2_050), down, HOLD).0);
        }
    }

    #[test]
    fn not_up_and_draining_win_over_health() {
        let t0 = Instant::now();
        let mut d = Decider::default();
        let not_up = Inputs { up: false, ..OK };
        assert_eq!(d.want(t0, not_up, Duration::ZERO), (false, Reason::NotUp));
        assert_eq!(d.want(t0, OK, Duration::ZERO), (true, Reason::Healthy));
        let draining = Inputs {
            draining: true,
            ..OK
        };
        assert_eq!(
            d.want(at(t0, 1), draining, Duration::ZERO),
            (false, Reason::Draining)
        );
        let both = Inputs {
            draining: true,
            healthy: false,
            ..OK
        };
        assert_eq!(
            d.want(at(t0, 2), both, Duration::ZERO),
            (false, Reason::Draining)
        );
    }

    fn stat(group: &str, port: u16, healthy: bool, retired: bool) -> UpstreamStat {
        UpstreamStat {
            group: group.into(),
            server: std::net::SocketAddr::from(([10, 0, 0, 1], port)),
            requests: 0,
            connect_failures: 0,
            active: 0,
            healthy,
            retired,
            backup: false,
            response_us_sum: 0,
            responses: 0,
        }
    }

    #[test]
    fn every_group_needs_one_live_healthy_server() {
        let stats = vec![
            stat("web", 1, false, false),
            stat("web", 2, true, false),
            stat("api", 1, true, true),
            stat("api", 2, false, false),
        ];
        assert!(groups_healthy(&["web"], &stats));
        assert!(!groups_healthy(&["api"], &stats), "retired or down only");
        assert!(!groups_healthy(&["web", "api"], &stats));
        assert!(!groups_healthy(&["img"], &stats), "not published yet");
        assert!(groups_healthy(&[], &stats));
    }

    #[test]
    fn a_healthy_backup_does_not_keep_the_vip() {
        let mut stats = vec![stat("web", 1, false, false), stat("web", 2, true, false)];
        stats[1].backup = true;
        assert!(!groups_healthy(&["web"], &stats), "primaries all down");
        stats[0].healthy = true;
        assert!(groups_healthy(&["web"], &stats), "a primary back");
    }
}
