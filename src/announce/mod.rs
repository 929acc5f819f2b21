//! Announcing the VIP through BIRD (`[announce]`): on the control thread,
//! never on a worker. Each tick decides (`decide`) whether the VIP should
//! be announced and, when that differs from what BIRD was last told, enables
//! or disables the BIRD `protocol static` that routes it (`bird`).
//!
//! Enable/disable of a named static protocol rather than a generated
//! include file and `configure`: it touches that one protocol and nothing
//! else of BIRD's config, needs no file ZProxy writes, and BIRD's config
//! marks the protocol `disabled`, so a BIRD without a running ZProxy
//! announces nothing.
//!
//! BIRD errors are logged and retried every [`RETRY`]; they never stop
//! the appliance. Every [`RESYNC`] the state is told again, which re-enables
//! the protocol after a BIRD restart (it comes back `disabled`).

pub mod bird;
pub mod decide;

use std::time::{Duration, Instant};

use crate::app::proxy::engine::UpstreamStat;
use crate::config::{Announce, Config};
use bird::Bird;
use decide::{Decider, Inputs, Reason};

/// Wait before telling BIRD again after an error.
pub const RETRY: Duration = Duration::from_secs(1);
/// Tell BIRD the state again this often, even when nothing changed.
pub const RESYNC: Duration = Duration::from_secs(10);

/// What `/stats` and `/metrics` show.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub vip: String,
    pub protocol: String,
    /// BIRD confirmed the protocol enabled (the VIP is announced).
    pub announced: bool,
    /// Announcements plus withdrawals BIRD confirmed.
    pub transitions: u64,
    /// Commands BIRD did not carry out (unreachable, refused).
    pub errors: u64,
}

pub struct Announcer {
    bird: Bird,
    decider: Decider,
    /// What BIRD was last told successfully; `None`: unknown (start, error).
    told: Option<bool>,
    next_try: Instant,
    last_error: Option<String>,
    status: Status,
}

impl Announcer {
    pub fn new(a: &Announce) -> Self {
        log::info!(
            "announce: VIP {} through BIRD protocol '{}' on {} (withdrawn until healthy for {} ms)",
            a.vip,
            a.protocol,
            a.bird_socket.display(),
            a.hold_down_ms
        );
        Announcer {
            bird: Bird::new(&a.bird_socket),
            decider: Decider::default(),
            told: None,
            next_try: Instant::now(),
            last_error: None,
            status: Status {
                vip: a.vip.clone(),
                protocol: a.protocol.clone(),
                ..Status::default()
            },
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// One control tick: `cfg` is the running config (a reload may change
    /// the listeners followed and the hold-down), `upstreams` the merged
    /// per-server stats.
    pub fn tick(
        &mut self,
        now: Instant,
        cfg: &Config,
        upstreams: &[UpstreamStat],
        up: bool,
        draining: bool,
    ) {
        let Some(a) = &cfg.announce else { return };
        let groups = a.groups(cfg);
        let inputs = Inputs {
            up,
            draining,
            healthy: decide::groups_healthy(&groups, upstreams),
        };
        let hold_down = Duration::from_millis(a.hold_down_ms);
        let (want, why) = self.decider.want(now, inputs, hold_down);
        // A change is told at once; after an error (`told` unknown) only
        // at the retry time, so a dead BIRD is not hammered every tick.
        let changed = self.told.is_some_and(|t| t != want);
        if changed || now >= self.next_try {
            self.tell(now, want, why);
        }
    }

    /// Withdraws before the process exits (SIGINT, a worker's death, the
    /// end of a drain).
    pub fn withdraw(&mut self, why: &str) {
        if self.told != Some(false) {
            self.tell(Instant::now(), false, Reason::NotUp);
            if self.told == Some(false) {
                log::info!("announce: withdrawn at exit ({why})");
            }
        }
    }

    fn tell(&mut self, now: Instant, want: bool, why: Reason) {
        let protocol = self.status.protocol.clone();
        match self.bird.set_enabled(&protocol, want) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    log::info!("announce: BIRD carries out commands again");
                }
                if self.status.announced != want {
                    self.status.transitions += 1;
                    self.status.announced = want;
                    log::info!(
                        "announce: VIP {} {} (BIRD protocol '{protocol}' {}): {}",
                        self.status.vip,
                        if want { "announced" } else { "withdrawn" },
                        if want { "enabled" } else { "disabled" },
                        why.says()
                    );
                }
                self.told = Some(want);
                self.next_try = now + RESYNC;
            }
            Err(e) => {
                self.status.errors += 1;
                let message = crate::error::Chain(&e).to_string();
                // Once per distinct error, not once per retry.
                if self.last_error.as_deref() != Some(message.as_str()) {
                    log::warn!(
                        "announce: could not {} VIP {}: {message}; retrying every {} ms (the data path is not affected)",
                        if want { "announce" } else { "withdraw" },
                        self.status.vip,
                        RETRY.as_millis()
                    );
                    self.last_error = Some(message);
                }
                // Unknown now: BIRD may or may not have acted.
                self.told = None;
                self.next_try = now + RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests;
