//! How far a flow's peer has sent, as seen before smoltcp: the end of the
//! furthest segment received. smoltcp keeps out-of-order data in the
//! receive ring past what `recv_queue` counts (its private assembler) and
//! exposes nothing of it; comparing this end with the RCV.NXT the socket
//! last acknowledged (`SentSeq`) tells whether such data can exist. The
//! buffer sweep (`reclaim`) gives a live flow's pages back only when not.

use crate::net::device::SentSeq;

/// The furthest sequence number (exclusive) any segment to the flow carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RxEnd {
    end: u32,
    /// A segment has been recorded (`end` is meaningful).
    seen: bool,
    /// A frame whose headers were not read reached the socket: its end is
    /// unknown, so the pages stay for the flow's life (none is expected:
    /// the demux hands sockets only TCP over IPv4 or plain IPv6).
    blind: bool,
}

/// `a` is after `b` in sequence space (RFC 1982 serial arithmetic).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl RxEnd {
    /// Notes a frame handed to the flow's socket: a compare and a store.
    pub(super) fn record(&mut self, frame: &[u8]) {
        let Some(span) = crate::net::segment::span(frame) else {
            self.blind = true;
            return;
        };
        if span.rst {
            return; // carries no data the socket keeps
        }
        if !self.seen || after(span.end, self.end) {
            self.end = span.end;
            self.seen = true;
        }
    }

    /// No segment reached past what the socket last acknowledged, so its
    /// receive ring holds nothing beyond `recv_queue` (no out-of-order data
    /// waiting for a hole to fill). A delayed ACK, or a segment smoltcp
    /// dropped, only makes this say no for a while: never yes wrongly,
    /// because an ACK never runs ahead of the data the socket holds in order.
    pub(super) fn no_holes(&self, sent: &SentSeq) -> bool {
        !self.blind && (!self.seen || (sent.acked && !after(self.end, sent.rcv_nxt)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(rcv_nxt: u32) -> SentSeq {
        SentSeq {
            snd_nxt: 0,
            rcv_nxt,
            acked: true,
        }
    }

    #[test]
    fn the_furthest_end_counts_across_the_wrap() {
        let mut r = RxEnd::default();
        assert!(r.no_holes(&SentSeq::default()), "nothing received");
        r.end = u32::MAX - 10;
        r.seen = true;
        assert!(!r.no_holes(&SentSeq::default()), "received, never acked");
        assert!(r.no_holes(&sent(u32::MAX - 10)));
        assert!(!r.no_holes(&sent(u32::MAX - 11)), "a byte beyond the ACK");
        // Acked past the wrap.
        assert!(r.no_holes(&sent(5)));
        // An old segment (a retransmission) does not move the end back.
        assert!(!after(u32::MAX - 20, r.end));
        assert!(after(3, r.end), "3 is past u32::MAX - 10");
    }

    #[test]
    fn a_frame_it_cannot_read_keeps_the_pages() {
        let mut r = RxEnd::default();
        r.record(&[0u8; 20]);
        assert!(!r.no_holes(&sent(0)));
    }
}
