//! RFC 5961 3.2 for a flow's RST, either family: what to do with it, from
//! what the flow last told its peer (`SentSeq`, read from the segments
//! smoltcp built) and the RST's own sequence number.

use crate::net::device::SentSeq;
use crate::net::segment::{self, Segment};

/// What becomes of a RST for a live flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rst {
    /// Exactly RCV.NXT (or nothing acknowledged yet: smoltcp checks it).
    Take,
    /// Elsewhere in the window: answered with a challenge ACK, not taken.
    Challenge(Segment),
    /// Outside the window (or unreadable): dropped.
    Drop,
}

/// `handshake`: the socket is still in SYN-SENT or LISTEN; `window`: its
/// receive window in bytes.
pub(super) fn check(sent: SentSeq, handshake: bool, window: u32, frame: &[u8]) -> Rst {
    if !sent.acked || handshake {
        return Rst::Take;
    }
    let Some(seg) = segment::parse(frame) else {
        return Rst::Drop;
    };
    if seg.seq == sent.rcv_nxt {
        Rst::Take
    } else if seg.seq.wrapping_sub(sent.rcv_nxt) < window.max(1) {
        Rst::Challenge(seg)
    } else {
        Rst::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::segment::Build;
    use smoltcp::wire::EthernetAddress;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// A frame from `src` to `dst` with `seq`/`ack` (RST when `rst`).
    fn frame(src: IpAddr, dst: IpAddr, seq: u32, ack: u32, rst: bool) -> Vec<u8> {
        let b = Build {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: (src, 40000),
            dst: (dst, 80),
            syn: false,
            seq,
            ack: Some(ack),
            window: 1000,
            mss: None,
        };
        let mut f = vec![0u8; b.frame_len()];
        b.emit(&mut f);
        if rst {
            let tcp = segment::tcp_offset(&f).unwrap();
            f[tcp + 13] |= 0x04; // (checksums do not matter to the check)
        }
        f
    }

    /// What our side sent (an ACK of 5000), as `FrameDevice` records it.
    fn sent_from(us: IpAddr, them: IpAddr) -> SentSeq {
        let mut sent = SentSeq::default();
        sent.record(&frame(us, them, 9000, 5000, false));
        assert!(sent.acked && sent.rcv_nxt == 5000, "{us}: {sent:?}");
        sent
    }

    #[test]
    fn only_an_exact_rst_is_taken_in_both_families() {
        let v4: (IpAddr, IpAddr) = (
            Ipv4Addr::new(10, 0, 0, 2).into(),
            Ipv4Addr::new(10, 0, 0, 1).into(),
        );
        let v6: (IpAddr, IpAddr) = (
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
        );
        for (us, them) in [v4, v6] {
            let sent = sent_from(us, them);
            let rst = |seq| frame(them, us, seq, 0, true);
            assert_eq!(check(sent, false, 65535, &rst(5000)), Rst::Take, "{us}");
            match check(sent, false, 65535, &rst(6000)) {
                Rst::Challenge(seg) => assert!(seg.rst && seg.seq == 6000, "{us}"),
                other => panic!("{us}: in-window RST: {other:?}"),
            }
            assert_eq!(check(sent, false, 65535, &rst(5000 + 70_000)), Rst::Drop);
            assert_eq!(check(sent, false, 65535, &rst(4999)), Rst::Drop, "behind");
            // Before anything was acknowledged, or in the handshake: smoltcp's.
            assert_eq!(check(SentSeq::default(), false, 65535, &rst(1)), Rst::Take);
            assert_eq!(check(sent, true, 65535, &rst(1)), Rst::Take);
            // An IPv6 frame with an extension header is not read: dropped.
            let mut odd = rst(6000);
            if us.is_ipv6() {
                odd[14 + 6] = 0;
                assert_eq!(check(sent, false, 65535, &odd), Rst::Drop);
            }
        }
    }
}
