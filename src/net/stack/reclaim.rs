//! Gives socket buffer pages back to the kernel. A flow's rings touch pages
//! as data flows; without this they stay resident for the life of the
//! process, so RSS climbs to the high-water mark of every slot ever used.
//! Off the per-packet path: every `SWEEP_EVERY_US` the sweep looks at up to
//! `SLOTS_PER_SWEEP` built slots round-robin and drops (`MADV_DONTNEED`) the
//! buffer pages of those quiet for `IDLE_US` whose flow is gone (a cold free
//! slot) or holds nothing in its rings (an idle keep-alive connection: both
//! queues empty and no out-of-order data, see `releasable`). Nothing reads
//! an empty ring before writing it, and a reused socket's rings are
//! cleared, so zeroed pages change nothing.

use super::Flow;
use crate::net::flow::FlowTable;

/// How often the sweep runs.
pub(super) const SWEEP_EVERY_US: u64 = 10_000;
/// Slots looked at per sweep (a field read each: cheap).
pub(super) const SLOTS_PER_SWEEP: u32 = 1024;
/// `madvise` calls per sweep at most (adjacent slots share one call).
pub(super) const CALLS_PER_SWEEP: u32 = 32;
/// A flow (or free slot) quiet this long has its buffer pages given back: a
/// keep-alive connection between requests, or a slot no longer hot. The
/// default of `runtime.buffer_release_idle_ms`.
pub(super) const IDLE_US: u64 = 1_000_000;

pub(super) struct Reclaim {
    /// Address of slot 0's buffers; slot `i`'s are `slot_len` bytes further.
    base: usize,
    slot_len: usize,
    page: usize,
    /// Quiet this long first (`IDLE_US` unless configured).
    pub(super) idle_us: u64,
    /// The next slot the sweep looks at.
    cursor: u32,
    next_sweep_us: u64,
    /// Per built slot: its `last_rx_us` when its pages were last given back
    /// (no frame since: nothing was touched since).
    released_at: Vec<u64>,
}

impl Reclaim {
    pub(super) fn new(base: usize, slot_len: usize, max_flows: usize) -> Reclaim {
        // SAFETY: sysconf only reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        Reclaim {
            base,
            slot_len,
            page,
            idle_us: IDLE_US,
            cursor: 0,
            next_sweep_us: 0,
            // Reserved, grown as slots are built: no reallocation.
            released_at: Vec::with_capacity(max_flows),
        }
    }

    /// Whether `slot`'s pages may go: quiet for `IDLE_US`, touched since
    /// last given back, and its rings hold nothing or its flow is gone.
    fn releasable(&self, slot: u32, flow: &mut Flow, live: bool, now_us: u64) -> bool {
        if now_us < flow.last_rx_us.saturating_add(self.idle_us)
            || flow.last_rx_us == self.released_at[slot as usize]
        {
            return false;
        }
        if !live {
            return true;
        }
        // Empty queues alone do not prove a ring unused: smoltcp keeps
        // out-of-order segments in the receive ring past what `recv_queue`
        // counts, and zeroing them corrupted relayed bodies (8c02934). None
        // can be there while no segment reached past the last ACK sent.
        if !flow.rx_end.no_holes(&flow.sent) {
            return false;
        }
        // The send ring is read only within `send_queue` (unacknowledged
        // and unsent bytes); an empty one is written before it is read.
        let sock = flow.socket();
        sock.recv_queue() == 0 && sock.send_queue() == 0
    }

    /// One bounded sweep when due: slots whose pages were given back.
    pub(super) fn sweep(&mut self, flows: &mut FlowTable<Flow>, now_us: u64) -> u64 {
        if now_us < self.next_sweep_us {
            return 0;
        }
        self.next_sweep_us = now_us + SWEEP_EVERY_US;
        let built = flows.built() as u32;
        if built == 0 {
            return 0;
        }
        // Within the capacity reserved at start: no reallocation.
        self.released_at.resize(built as usize, u64::MAX);
        let (mut released, mut calls) = (0u64, 0u32);
        // A run of adjacent releasable slots, given back in one call.
        let mut run: Option<(u32, u32)> = None;
        for _ in 0..SLOTS_PER_SWEEP.min(built) {
            let slot = self.cursor;
            self.cursor = if slot + 1 >= built { 0 } else { slot + 1 };
            let live = flows.key(slot).is_some();
            let flow = flows.get_mut(slot);
            if !self.releasable(slot, flow, live, now_us) {
                continue;
            }
            self.released_at[slot as usize] = flow.last_rx_us;
            released += 1;
            match run {
                Some((start, end)) if end == slot => run = Some((start, slot + 1)),
                Some((start, end)) => {
                    self.give_back(start, end);
                    calls += 1;
                    run = Some((slot, slot + 1));
                }
                None => run = Some((slot, slot + 1)),
            }
            if calls + 1 >= CALLS_PER_SWEEP {
                break;
            }
        }
        if let Some((start, end)) = run {
            self.give_back(start, end);
        }
        released
    }

    /// Drops the whole pages of slots `start..end`'s buffers.
    fn give_back(&self, start: u32, end: u32) {
        let from = self.base + start as usize * self.slot_len;
        let to = self.base + end as usize * self.slot_len;
        // Only pages wholly inside the range: a neighbour's bytes stay.
        let from = from.div_ceil(self.page) * self.page;
        let to = to / self.page * self.page;
        if to <= from {
            return;
        }
        // SAFETY: [from, to) lies inside the leaked buffer mapping, within
        // slots whose rings hold nothing (no queued, no out-of-order bytes)
        // or whose flow is gone; a private anonymous page reads back as
        // zeros, which no empty ring reads before writing. DONTNEED changes no mapping, only residency.
        let rc =
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
        if rc != 0 {
            log::debug!(
                "socket buffer pages stay resident (madvise: {})",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
#[path = "reclaim_flow_tests.rs"]
mod flow_tests;
#[cfg(test)]
#[path = "reclaim_tests.rs"]
mod tests;
