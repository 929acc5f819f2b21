//! Admission under overload: which new connections a worker takes, decided
//! at the SYN, before a slot, a socket or an upstream connection is spent.
//!
//! Offered more than it can carry, a worker that takes every SYN collapses:
//! its rx ring overflows and drops segments of connections it already
//! holds at random (their retransmissions hold slots for a second or more),
//! its half-open backlog spills into SYN cookies (dearer per connection),
//! its table fills and it resets new clients. So excess SYNs are dropped
//! here, silently: the client's TCP sends the SYN again later, nothing is
//! held for it meanwhile, and those already admitted are served. A SYN is
//! dropped while the worker is behind its rx queue (`backlog_polls` full
//! bursts in a row, until a burst comes back short), and when taking it
//! would bring the flow slots in use past `flow_limit`. SYN cookies are
//! for floods of SYNs that never complete; they are sent only when there
//! is room to serve the clients they admit. An ACK carrying a valid cookie
//! when no slot is left is dropped too (the client resends it), never
//! answered with a RST: that client was admitted.

use crate::net::counters::Counter;

/// The limits, from `runtime.*` (see `StackSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitLimits {
    /// Flow slots in use (and promised) past which a new client is not taken.
    pub flow_limit: usize,
    /// Consecutive full rx bursts after which the worker is behind (0: never).
    pub backlog_polls: u32,
    /// Half-open connections held; past that, SYNs get cookies.
    pub syn_backlog: usize,
}

/// The worker's state when a SYN arrives.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Slots in use or promised to peers.
    pub in_use: usize,
    /// Slots the new client takes (2 when one is promised to its upstream).
    pub needed: usize,
    /// Accepted connections still in the handshake.
    pub half_open: usize,
}

/// What to do with a SYN (or a cookie's ACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Make a flow for it.
    Accept,
    /// Answer with a SYN cookie and keep nothing.
    Cookie,
    /// Drop it, counted under this counter; the client sends it again.
    Drop(Counter),
}

pub struct Admission {
    limits: AdmitLimits,
    /// Full rx bursts in a row (polls that left frames waiting).
    full_polls: u32,
    behind: bool,
    /// The last poll at which frames of ours may have been lost here (the
    /// worker behind, or a tx queue full); 0: never.
    last_local_loss_us: u64,
    /// Tx drops seen so far (the ports' running total).
    tx_dropped: u64,
}

impl Admission {
    pub fn new(limits: AdmitLimits) -> Admission {
        Admission {
            limits,
            full_polls: 0,
            behind: false,
            last_local_loss_us: 0,
            tx_dropped: 0,
        }
    }

    pub fn limits(&self) -> AdmitLimits {
        self.limits
    }

    /// After each poll: whether an rx burst came back full (frames were
    /// left in a queue), and the ports' total of frames tx dropped.
    pub fn after_poll(&mut self, burst_full: bool, tx_dropped: u64, now_us: u64) {
        self.full_polls = if burst_full {
            self.full_polls.saturating_add(1)
        } else {
            0
        };
        self.behind = self.limits.backlog_polls > 0 && self.full_polls >= self.limits.backlog_polls;
        if self.behind || tx_dropped > self.tx_dropped {
            self.last_local_loss_us = now_us;
        }
        self.tx_dropped = tx_dropped;
    }

    /// The worker is behind its rx queue now.
    pub fn behind(&self) -> bool {
        self.behind
    }

    /// Frames may have been lost on this worker since `since_us` (its rx
    /// queue backed up, or a tx queue full): a connect that timed out in
    /// that time may have failed here, not at the server.
    pub fn lost_locally_since(&self, since_us: u64) -> bool {
        self.last_local_loss_us != 0 && self.last_local_loss_us >= since_us
    }

    /// A SYN for a listener.
    pub fn syn(&self, load: Load) -> Verdict {
        if self.behind {
            return Verdict::Drop(Counter::SynDroppedBehind);
        }
        if !self.room(load) {
            return Verdict::Drop(Counter::SynDroppedFull);
        }
        if load.half_open >= self.limits.syn_backlog {
            return Verdict::Cookie;
        }
        Verdict::Accept
    }

    /// An ACK carrying a valid cookie: the client holds an open connection.
    pub fn cookie_ack(&self, load: Load) -> Verdict {
        if self.room(load) {
            Verdict::Accept
        } else {
            Verdict::Drop(Counter::CookieAcksDropped)
        }
    }

    fn room(&self, load: Load) -> bool {
        load.in_use + load.needed <= self.limits.flow_limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AdmitLimits = AdmitLimits {
        flow_limit: 100,
        backlog_polls: 4,
        syn_backlog: 10,
    };

    fn load(in_use: usize, half_open: usize) -> Load {
        Load {
            in_use,
            needed: 2,
            half_open,
        }
    }

    #[test]
    fn a_syn_is_taken_while_there_is_room_and_no_backlog() {
        let a = Admission::new(LIMITS);
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        assert_eq!(a.syn(load(98, 9)), Verdict::Accept);
    }

    #[test]
    fn past_the_flow_limit_a_syn_is_dropped_not_reset_or_cookied() {
        let a = Admission::new(LIMITS);
        // The client and the slot promised to its upstream must both fit.
        assert_eq!(a.syn(load(99, 0)), Verdict::Drop(Counter::SynDroppedFull));
        // A full backlog would send a cookie; with no room to serve the
        // client it admits, the SYN is dropped instead.
        assert_eq!(a.syn(load(99, 10)), Verdict::Drop(Counter::SynDroppedFull));
        assert_eq!(a.syn(load(50, 10)), Verdict::Cookie);
    }

    #[test]
    fn a_worker_behind_its_rx_queue_drops_new_syns_until_it_catches_up() {
        let mut a = Admission::new(LIMITS);
        for t in 1..=3 {
            a.after_poll(true, 0, t);
            assert_eq!(a.syn(load(0, 0)), Verdict::Accept, "poll {t}");
        }
        a.after_poll(true, 0, 4);
        assert!(a.behind());
        assert_eq!(a.syn(load(0, 0)), Verdict::Drop(Counter::SynDroppedBehind));
        assert_eq!(a.syn(load(0, 10)), Verdict::Drop(Counter::SynDroppedBehind));
        // Still behind while bursts come back full; one short burst ends it.
        a.after_poll(true, 0, 5);
        assert!(a.behind());
        a.after_poll(false, 0, 6);
        assert!(!a.behind());
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        // A short burst in between starts the count again.
        for t in 7..=9 {
            a.after_poll(true, 0, t);
        }
        a.after_poll(false, 0, 10);
        a.after_poll(true, 0, 11);
        assert!(!a.behind());
    }

    #[test]
    fn backlog_polls_zero_never_drops_for_the_queue() {
        let mut a = Admission::new(AdmitLimits {
            backlog_polls: 0,
            ..LIMITS
        });
        for t in 1..1000 {
            a.after_poll(true, 0, t);
        }
        assert!(!a.behind());
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        assert!(!a.lost_locally_since(1));
    }

    #[test]
    fn a_valid_cookie_ack_without_room_is_dropped_not_reset() {
        let a = Admission::new(LIMITS);
        assert_eq!(a.cookie_ack(load(98, 50)), Verdict::Accept);
        assert_eq!(
            a.cookie_ack(load(99, 0)),
            Verdict::Drop(Counter::CookieAcksDropped)
        );
        // Being behind does not drop it: the client already holds the connection.
        let mut b = Admission::new(LIMITS);
        for t in 1..=4 {
            b.after_poll(true, 0, t);
        }
        assert_eq!(b.cookie_ack(load(0, 0)), Verdict::Accept);
    }

    #[test]
    fn local_loss_is_remembered_from_the_backlog_and_from_tx_drops() {
        let mut a = Admission::new(LIMITS);
        a.after_poll(false, 0, 1_000);
        assert!(!a.lost_locally_since(0));
        for t in 2_000..2_004 {
            a.after_poll(true, 0, t);
        }
        assert!(a.lost_locally_since(2_003));
        assert!(!a.lost_locally_since(2_004));
        a.after_poll(false, 0, 3_000);
        assert!(a.lost_locally_since(2_000), "remembered after catching up");
        a.after_poll(false, 5, 4_000);
        assert!(a.lost_locally_since(4_000), "tx drops are local loss");
        a.after_poll(false, 5, 5_000);
        assert!(!a.lost_locally_since(4_001), "no new drops since");
    }
}
