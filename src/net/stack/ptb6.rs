//! ICMPv6 Packet Too Big for our IPv6 flows (see `net::pmtu6`): a valid one
//! lowers the quoted flow's path MTU; anything else is dropped and counted.

use super::Stack;
use crate::dpdk::Mbuf;
use crate::net::counters::Counter;
use crate::net::pmtu6::{self, Refused};

impl Stack {
    /// Takes an IPv6 frame that is a Packet Too Big quoting TCP from one of
    /// our addresses; gives any other frame back (for `net::ipv6`).
    pub(super) fn on_ptb6(&mut self, port: usize, m: Mbuf, handed: bool) -> Option<Mbuf> {
        let v6 = self.ports[port].v6.as_ref()?;
        let ptb = match pmtu6::parse(m.data(), |a| v6.is_preferred(a)) {
            Ok(ptb) => ptb,
            Err(Refused::NotPtb) => return Some(m),
            Err(Refused::Malformed | Refused::TooSmall) => {
                self.counters.add(Counter::Ipv6PtbDropped, 1);
                return None;
            }
        };
        let Some(f) = self.v6.lookup(&ptb.key) else {
            if !handed && self.inboxes.len() > 1 {
                let owner = self.owner6(port, &ptb.key);
                if owner != self.index {
                    self.hand_off(owner, port, m, false);
                    return None;
                }
            }
            self.counters.add(Counter::Ipv6PtbDropped, 1);
            return None; // not a flow of ours
        };
        let port_mtu = (self.ports[port].caps.max_transmission_unit - 14) as u32;
        let flow = self.flows.get_mut(f);
        let current = match flow.path_mtu {
            0 => port_mtu,
            n => u32::from(n),
        };
        let snd_nxt = flow.sent.snd_nxt;
        let queued = flow.socket().send_queue();
        // Off-path guesses quote sequence numbers not in flight.
        if ptb.mtu >= current || !pmtu6::in_flight(snd_nxt, queued, ptb.seq) {
            self.counters.add(Counter::Ipv6PtbDropped, 1);
            return None;
        }
        flow.path_mtu = ptb.mtu as u16; // below the port's MTU, so it fits
        self.counters.add(Counter::Ipv6PtbApplied, 1);
        // What is queued and was too big goes again, cut, when smoltcp resends it.
        None
    }
}
