//! A running `zproxy capture` as this core sees it: the frames its queue of
//! the captured port receives (here) and sends (`TxQueue::flush`).

use std::sync::Arc;

use super::Stack;
use crate::capture::Session;
use crate::dpdk::MbufBurst;
use crate::net::device::BURST;

impl Stack {
    /// Starts (`Some`) or stops (`None`) capturing for `s`, if it is about
    /// one of this core's queues.
    pub fn set_capture(&mut self, s: Option<Arc<Session>>) {
        if let Some(s) = &s {
            s.attached
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        let s = s.filter(|s| s.port < self.ports.len() && s.wants(s.port, self.index));
        for (i, p) in self.ports.iter_mut().enumerate() {
            p.tx.set_capture(s.clone().filter(|s| s.port == i));
        }
        self.capture = s;
    }

    /// Offers a received burst to the capture: one branch when none runs.
    #[inline]
    pub(super) fn capture_rx(&self, port: usize, rx: &MbufBurst<BURST>) {
        if let Some(c) = &self.capture {
            if c.port == port {
                rx.frames().for_each(|f| c.offer(f));
            }
        }
    }
}
