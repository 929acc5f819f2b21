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
//! dropped while the worker is behind its rx queue, and when taking it
//! would bring the flow slots in use past `flow_limit`.
//!
//! Behind means overloaded, not merely catching up: after a stall (the
//! core pre-empted, a page fault storm) the queue is full too, but at a
//! load the worker carries it drains within milliseconds, and dropping the
//! SYNs in it would cost those clients a second each for nothing. So the
//! worker is behind once every rx burst has come back full (frames left
//! waiting) for `backlog_us` of polling, with no stall between polls (on a
//! core it shares, a worker pre-empted for time slices finds its queue
//! full at every return, at any load); it stays behind until a burst comes
//! back short; and within `RECENT_US` of having been behind, `QUICK_POLLS`
//! full bursts in a row are enough (the overload goes on). SYN cookies are
//! for floods of SYNs that never complete; they are sent only when there
//! is room to serve the clients they admit. An ACK carrying a valid cookie
//! when no slot is left is dropped too (the client resends it), never
//! answered with a RST: that client was admitted.

use crate::net::counters::Counter;

/// After having been behind, the worker counts as overloaded for this long.
const RECENT_US: u64 = 1_000_000;
/// Full bursts in a row that mean behind again while overloaded.
const QUICK_POLLS: u32 = 8;
/// A longer gap between polls is a stall (the core pre-empted, the process
/// stopped), not work: the backlog it leaves is counted from the next poll.
const MAX_POLL_GAP_US: u64 = 2_000;

/// The limits, from `runtime.*` (see `StackSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmitLimits {
    /// Flow slots in use (and promised) past which a new client is not taken.
    pub flow_limit: usize,
    /// How long every rx burst must come back full before the worker is
    /// behind (0: never).
    pub backlog_us: u64,
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
    /// Full rx bursts in a row (polls that left frames waiting), and when
    /// the first of them was.
    full_polls: u32,
    full_since_us: u64,
    /// When the last poll was (to see stalls between polls).
    last_poll_us: u64,
    behind: bool,
    /// The last poll at which the worker was behind (0: never).
    last_behind_us: u64,
    /// The last poll at which frames of ours may have been lost here (the
    /// rx queue backed up for `QUICK_POLLS` bursts, or a tx queue full); 0: never.
    last_local_loss_us: u64,
    /// Tx drops seen so far (the ports' running total).
    tx_dropped: u64,
}

impl Admission {
    pub fn new(limits: AdmitLimits) -> Admission {
        Admission {
            limits,
            full_polls: 0,
            full_since_us: 0,
            last_poll_us: 0,
            behind: false,
            last_behind_us: 0,
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
        if !burst_full {
            self.full_polls = 0;
            self.behind = false;
        } else {
            let stalled = now_us > self.last_poll_us + MAX_POLL_GAP_US;
            if self.full_polls == 0 || stalled {
                self.full_since_us = now_us;
            }
            self.full_polls = self.full_polls.saturating_add(1);
            let overloaded = self.last_behind_us != 0 && now_us < self.last_behind_us + RECENT_US;
            self.behind = self.limits.backlog_us > 0
                && (self.behind
                    || (overloaded && self.full_polls >= QUICK_POLLS)
                    || now_us >= self.full_since_us + self.limits.backlog_us);
        }
        if self.behind {
            self.last_behind_us = now_us;
        }
        self.last_poll_us = now_us;
        // A backed-up queue may have overflowed, shedding on or off.
        let backed_up = self.full_polls >= QUICK_POLLS;
        if backed_up || tx_dropped > self.tx_dropped {
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
        backlog_us: 10_000,
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

    /// Full bursts every 100 µs from `from_us` until `to_us`; whether the
    /// worker was behind at the last.
    fn full_until(a: &mut Admission, from_us: u64, to_us: u64) -> bool {
        for t in (from_us..=to_us).step_by(100) {
            a.after_poll(true, 0, t);
        }
        a.behind()
    }

    #[test]
    fn a_worker_behind_its_rx_queue_drops_new_syns_until_it_catches_up() {
        let mut a = Admission::new(LIMITS);
        let t0 = 5_000_000;
        assert!(!full_until(&mut a, t0, t0 + 9_900), "not yet 10 ms");
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        assert!(full_until(&mut a, t0 + 10_000, t0 + 10_000));
        assert_eq!(a.syn(load(0, 0)), Verdict::Drop(Counter::SynDroppedBehind));
        assert_eq!(a.syn(load(0, 10)), Verdict::Drop(Counter::SynDroppedBehind));
        // Still behind while bursts come back full; one short burst ends it.
        assert!(full_until(&mut a, t0 + 10_100, t0 + 50_000));
        a.after_poll(false, 0, t0 + 50_100);
        assert!(!a.behind());
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        // Overloaded a moment ago: a few full bursts are enough again.
        assert!(!full_until(&mut a, t0 + 60_000, t0 + 60_600), "7 bursts");
        assert!(full_until(&mut a, t0 + 60_700, t0 + 60_700), "the 8th");
        a.after_poll(false, 0, t0 + 60_800);
        // A second later it takes the whole 10 ms again.
        let t1 = t0 + 60_700 + RECENT_US;
        assert!(!full_until(&mut a, t1, t1 + 9_900));
        a.after_poll(false, 0, t1 + 10_000);
        assert!(!a.behind(), "a short burst starts the count again");
        assert!(!full_until(&mut a, t1 + 10_100, t1 + 19_000));
    }

    #[test]
    fn a_stall_the_worker_catches_up_from_drops_nothing() {
        // At 70 % load the queue a 200 ms stall left drains in a few ms.
        let mut a = Admission::new(LIMITS);
        let t0 = 5_000_000;
        assert!(!full_until(&mut a, t0, t0 + 6_000));
        a.after_poll(false, 0, t0 + 6_100);
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        // But the stall may have cost frames: connects are not judged on it.
        assert!(a.lost_locally_since(t0 + 6_000));
    }

    #[test]
    fn a_worker_pre_empted_between_polls_is_not_behind() {
        // Its queue is full whenever it runs again, but it catches up each
        // time: 1 ms of polling, then 3 ms away, for a second.
        let mut a = Admission::new(LIMITS);
        let t0 = 5_000_000;
        for slice in 0..250 {
            let start = t0 + slice * 4_000;
            assert!(!full_until(&mut a, start, start + 1_000), "slice {slice}");
        }
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        // Polling without a gap, the same backlog is an overload.
        assert!(full_until(&mut a, t0 + 2_000_000, t0 + 2_010_000));
    }

    #[test]
    fn backlog_zero_never_drops_for_the_queue() {
        let mut a = Admission::new(AdmitLimits {
            backlog_us: 0,
            ..LIMITS
        });
        for t in 1..100_000 {
            a.after_poll(true, 0, t);
        }
        assert!(!a.behind());
        assert_eq!(a.syn(load(0, 0)), Verdict::Accept);
        // Its frames may still have been lost in the backed-up queue.
        assert!(a.lost_locally_since(99_999));
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
        assert!(full_until(&mut b, 1_000, 20_000));
        assert_eq!(b.cookie_ack(load(0, 0)), Verdict::Accept);
    }

    #[test]
    fn local_loss_is_remembered_from_the_backlog_and_from_tx_drops() {
        let mut a = Admission::new(LIMITS);
        a.after_poll(false, 0, 1_000);
        assert!(!a.lost_locally_since(0));
        for t in 1_100..1_107 {
            a.after_poll(true, 0, t);
        }
        a.after_poll(false, 0, 1_200);
        assert!(!a.lost_locally_since(0), "7 full bursts: a busy moment");
        assert!(full_until(&mut a, 2_000, 12_000));
        assert!(a.lost_locally_since(12_000));
        assert!(!a.lost_locally_since(12_001));
        a.after_poll(false, 0, 13_000);
        assert!(a.lost_locally_since(2_000), "remembered after catching up");
        a.after_poll(false, 5, 14_000);
        assert!(a.lost_locally_since(14_000), "tx drops are local loss");
        a.after_poll(false, 5, 15_000);
        assert!(!a.lost_locally_since(14_001), "no new drops since");
    }
}
