//! The stack's side of admission (see `net::admission`): the load a SYN
//! meets, pooled connections closed to make room, the worker's backlog and
//! its gauges.

use super::Stack;
use crate::net::admission::{Load, Verdict};
use crate::net::counters::Counter;

impl Stack {
    /// What to do with a SYN for `listener`: idle pooled connections are
    /// closed first when the client would not fit otherwise.
    pub(super) fn admit_syn(&mut self, listener: usize, now_us: u64) -> Verdict {
        let load = self.admit_load(listener, now_us);
        self.admission.syn(load)
    }

    /// What to do with an ACK that carries a valid cookie for `listener`.
    pub(super) fn admit_cookie_ack(&mut self, listener: usize, now_us: u64) -> Verdict {
        let load = self.admit_load(listener, now_us);
        self.admission.cookie_ack(load)
    }

    fn admit_load(&mut self, listener: usize, now_us: u64) -> Load {
        let needed = if self.listeners[listener].reserve_peer {
            2
        } else {
            1
        };
        let limit = self.admission.limits().flow_limit;
        while self.slots_in_use() + needed > limit && self.evict_one(now_us) {}
        Load {
            in_use: self.slots_in_use(),
            needed,
            half_open: self.half_open,
        }
    }

    /// Slots taken or promised to peers.
    fn slots_in_use(&self) -> usize {
        (self.flows.capacity() as isize - self.spare_slots()).max(0) as usize
    }

    /// After a poll: whether a burst left frames in an rx queue, and what
    /// the tx queues dropped (see `Admission::after_poll`).
    pub(super) fn note_backlog(&mut self, burst_full: bool, now_us: u64) {
        let tx_dropped = self.ports.iter().map(|p| p.tx.dropped).sum();
        self.admission.after_poll(burst_full, tx_dropped, now_us);
    }

    /// Frames may have been lost on this worker since `since_us` (behind
    /// its rx queue or a tx queue full): a connect that timed out then says
    /// nothing sure about its server.
    pub fn lost_locally_since(&self, since_us: u64) -> bool {
        self.admission.lost_locally_since(since_us)
    }

    /// Sets the stack's gauges in `counters` before they are published.
    pub fn update_gauges(&mut self) {
        let c = &mut self.counters;
        c.set(Counter::FlowsActive, self.flows.active() as u64);
        c.set(Counter::SlotsBuilt, self.flows.built() as u64);
        c.set(Counter::TimeWaitEntries, self.time_wait.len() as u64);
        c.set(
            Counter::ConnRateLimitEntries,
            self.syn_limiter.used() as u64,
        );
        c.set(Counter::RateLimitEvictions, self.syn_limiter.evictions());
        c.set(
            Counter::TxFrames,
            self.ports.iter().map(|p| p.tx.sent).sum(),
        );
        c.set(
            Counter::TxDropped,
            self.ports.iter().map(|p| p.tx.dropped).sum(),
        );
        c.set(
            Counter::TxBytes,
            self.ports.iter().map(|p| p.tx.sent_bytes).sum(),
        );
        let limits = self.admission.limits();
        c.set(Counter::AdmitFlowLimit, limits.flow_limit as u64);
        c.set(Counter::AdmitBacklogMs, limits.backlog_us / 1000);
        c.set(Counter::SynBacklog, limits.syn_backlog as u64);
        c.set(Counter::WorkerBehind, u64::from(self.admission.behind()));
    }
}
