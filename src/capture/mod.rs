//! `zproxy capture`: copies of the frames a port receives and sends, taken
//! by the workers, filtered by a classic BPF program (tcpdump's syntax,
//! compiled by libpcap on the client's side), written as pcap.
//!
//! - [`Session`]: one running capture. Workers copy matching frames into
//!   slots taken from a free ring and put them on a full ring; the capture
//!   thread (`serve`) writes them out and gives the slots back. Neither side
//!   ever waits: with no free slot the frame is dropped and counted.
//! - [`Board`]: where the control thread posts a session for the workers,
//!   who look at it between bursts (when they publish their counters).
//! - [`bpf`], [`compile`], [`pcap`]: the filter and the file format.
//! - [`serve`] (control side) and [`client`] (the CLI's side).

pub mod bpf;
pub mod client;
pub mod compile;
pub mod pcap;
pub mod serve;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use crate::dpdk::rdtsc;

/// The longest frame kept (a 9216-byte jumbo payload and its Ethernet header).
pub const MAX_SNAPLEN: u32 = 9216 + 14;
/// Frames in flight between the workers and the capture thread.
const SLOTS: usize = 2048;

/// One captured frame.
pub struct Slot {
    pub ts_us: u64,
    pub wire_len: u32,
    pub len: usize,
    pub data: Box<[u8]>,
}

/// One running capture.
pub struct Session {
    pub port: usize,
    /// Only this worker's queue (the worker with this index), if given.
    pub queue: Option<usize>,
    pub snaplen: u32,
    filter: bpf::Program,
    free: ArrayQueue<Slot>,
    full: ArrayQueue<Slot>,
    pub captured: AtomicU64,
    pub dropped: AtomicU64,
    /// Set when the capture ends: the workers let go of it.
    pub done: AtomicBool,
    /// Workers that have seen it (the capture is live once all have).
    pub attached: AtomicUsize,
    /// Unix time (µs) at `tsc0`, and the TSC's rate: timestamps without a syscall.
    unix_us0: u64,
    tsc0: u64,
    tsc_per_us: u64,
}

impl Session {
    pub fn new(
        port: usize,
        queue: Option<usize>,
        snaplen: u32,
        filter: bpf::Program,
    ) -> Arc<Session> {
        let snaplen = snaplen.clamp(1, MAX_SNAPLEN);
        let free = ArrayQueue::new(SLOTS);
        for _ in 0..SLOTS {
            let _ = free.push(Slot {
                ts_us: 0,
                wire_len: 0,
                len: 0,
                data: vec![0u8; snaplen as usize].into_boxed_slice(),
            });
        }
        let unix_us0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Arc::new(Session {
            port,
            queue,
            snaplen,
            filter,
            free,
            full: ArrayQueue::new(SLOTS),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            done: AtomicBool::new(false),
            attached: AtomicUsize::new(0),
            unix_us0,
            tsc0: rdtsc(),
            tsc_per_us: (crate::dpdk::tsc_hz() / 1_000_000).max(1),
        })
    }

    /// Whether worker `worker` captures on port `port` for this session.
    pub fn wants(&self, port: usize, worker: usize) -> bool {
        self.port == port && self.queue.is_none_or(|q| q == worker)
    }

    /// Copies `frame` if the filter keeps it and a slot is free. Never waits.
    pub fn offer(&self, frame: &[u8]) {
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        let keep = self.filter.run(frame, frame.len() as u32);
        if keep == 0 {
            return;
        }
        let Some(mut slot) = self.free.pop() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = frame.len().min(keep as usize).min(slot.data.len());
        slot.data[..len].copy_from_slice(&frame[..len]);
        slot.len = len;
        slot.wire_len = frame.len() as u32;
        slot.ts_us = self.unix_us0 + rdtsc().wrapping_sub(self.tsc0) / self.tsc_per_us;
        // Cannot fail: there are as many places as slots.
        let _ = self.full.push(slot);
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    /// The next captured frame, for the capture thread.
    pub fn take(&self) -> Option<Slot> {
        self.full.pop()
    }

    /// A written frame's slot, free again.
    pub fn give_back(&self, slot: Slot) {
        let _ = self.free.push(slot);
    }
}

/// Where the control thread posts the running session (one at a time).
#[derive(Default)]
pub struct Board {
    /// Bumped at every change, so a worker looks at `current` only then.
    generation: AtomicU64,
    current: Mutex<Option<Arc<Session>>>,
}

impl Board {
    /// Posts `s`; false when another capture runs.
    pub fn post(&self, s: Arc<Session>) -> bool {
        let Ok(mut cur) = self.current.lock() else {
            return false;
        };
        if cur
            .as_ref()
            .is_some_and(|c| !c.done.load(Ordering::Relaxed))
        {
            return false;
        }
        *cur = Some(s);
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    /// Ends `s` (the workers let go of it at their next look).
    pub fn end(&self, s: &Session) {
        s.done.store(true, Ordering::Relaxed);
        if let Ok(mut cur) = self.current.lock() {
            *cur = None;
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// For a worker between bursts: `Some(new)` when the posted session
    /// changed since `seen` (which is updated), else `None`. Never waits: a
    /// board being written is looked at next time.
    pub fn changed(&self, seen: &mut u64) -> Option<Option<Arc<Session>>> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == *seen {
            return None;
        }
        let cur = self.current.try_lock().ok()?;
        *seen = generation;
        Some(cur.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_copies_what_the_filter_keeps_and_counts_what_it_cannot() {
        // `ret #4`: keep four bytes of everything.
        let keep4 = bpf::Program::new(vec![bpf::Insn {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 4,
        }])
        .unwrap();
        let s = Session::new(0, Some(1), 100, keep4);
        assert!(s.wants(0, 1) && !s.wants(0, 0) && !s.wants(1, 1));
        s.offer(&[1, 2, 3, 4, 5, 6]);
        let slot = s.take().unwrap();
        assert_eq!(
            (&slot.data[..slot.len], slot.wire_len),
            (&[1, 2, 3, 4][..], 6)
        );
        s.give_back(slot);
        // The ring full: frames are dropped, counted, never waited for.
        for _ in 0..SLOTS + 10 {
            s.offer(&[9; 60]);
        }
        assert_eq!(s.dropped.load(Ordering::Relaxed), 10);
        assert_eq!(s.captured.load(Ordering::Relaxed), 1 + SLOTS as u64);
        let board = Board::default();
        let mut seen = 0;
        assert!(board.changed(&mut seen).is_none());
        assert!(board.post(s.clone()));
        assert!(!board.post(s.clone()), "one capture at a time");
        assert!(board.changed(&mut seen).unwrap().is_some());
        board.end(&s);
        assert!(board.changed(&mut seen).unwrap().is_none());
        s.offer(&[1; 60]);
        assert_eq!(
            s.captured.load(Ordering::Relaxed),
            1 + SLOTS as u64,
            "ended"
        );
    }
}
