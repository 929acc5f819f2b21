//! Second-chance forwarding (as GitHub's GLB and Cloudflare's Unimog do it):
//! when the router re-hashes a flow onto this instance (a peer was withdrawn
//! to drain, or left), a segment of it matches nothing here. Rather than
//! answer it with a RST, the frame goes, unchanged but for its Ethernet
//! addresses, to every peer on the shared segment; the one that owns the
//! flow takes it, the others drop it. A frame that came from a peer is never
//! forwarded again (no loops) and never answered with a RST.

use std::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

use super::Stack;
use crate::dpdk::Mbuf;
use crate::net::counters::Counter;
use crate::net::flow::FlowKey;

/// A port's fleet, as the config gives it.
#[derive(Debug, Clone, Default)]
pub struct FleetSpec {
    /// The shared service address, answered besides the port's own.
    pub vip: Option<Ipv4Addr>,
    /// The other instances' MACs on this port's segment.
    pub peers: Vec<[u8; 6]>,
}

/// A port's fleet, as the data path uses it.
pub struct Fleet {
    pub vip: Option<Ipv4Addr>,
    /// Kept as the config gives them, so a reload's list (built on the
    /// control thread) is swapped in as it comes.
    peers: Vec<[u8; 6]>,
}

impl Fleet {
    pub fn new(spec: &FleetSpec) -> Fleet {
        Fleet {
            vip: spec.vip,
            peers: spec.peers.clone(),
        }
    }

    /// True when `mac` is a peer's (a handful at most: a scan is cheapest).
    pub fn is_peer(&self, mac: EthernetAddress) -> bool {
        self.peers.contains(&mac.0)
    }

    /// A reload's peers in place of these (the VIP needs a restart); the
    /// old list is handed back, to be freed off the packet path.
    pub fn swap_peers(&mut self, peers: Vec<[u8; 6]>) -> Vec<[u8; 6]> {
        std::mem::replace(&mut self.peers, peers)
    }
}

/// What becomes of a non-SYN segment for a listener that matched no flow,
/// no TIME-WAIT entry and no SYN cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No fleet (or no peers): answered with a RST, as a lone host would.
    Reset,
    /// To every peer: one of them may own the flow.
    Forward,
    /// A peer's second chance that is not ours either: nobody owns it, and
    /// a RST from here could kill a connection a third instance still has.
    Drop,
}

/// The decision, apart from any device (see the tests).
pub fn decide(peers: usize, from_peer: bool) -> Verdict {
    if from_peer {
        Verdict::Drop
    } else if peers > 0 {
        Verdict::Forward
    } else {
        Verdict::Reset
    }
}

/// Makes `frame` go from `src` to `dst` on the segment (the IP packet is untouched).
fn readdress(frame: &mut [u8], dst: EthernetAddress, src: EthernetAddress) {
    frame[0..6].copy_from_slice(dst.as_bytes());
    frame[6..12].copy_from_slice(src.as_bytes());
}

impl Stack {
    /// A reload's peers for every port in a fleet (one port has `[fleet]`),
    /// between bursts: no allocation here, the list came built.
    pub fn retune_fleet_peers(&mut self, peers: Vec<[u8; 6]>) -> Option<Vec<[u8; 6]>> {
        let fleet = self.ports.iter_mut().find_map(|p| p.fleet.as_mut())?;
        Some(fleet.swap_peers(peers))
    }

    /// True when a TCP frame on `port` came from a peer (counted once, on
    /// the core that took it from the wire).
    pub(super) fn came_from_peer(
        &mut self,
        port: usize,
        src: EthernetAddress,
        handed: bool,
    ) -> bool {
        let peer = self.ports[port]
            .fleet
            .as_ref()
            .is_some_and(|f| f.is_peer(src));
        if peer && !handed {
            self.counters.add(Counter::SecondChanceReceived, 1);
        }
        peer
    }

    /// A non-SYN segment that is no one's here (see `Verdict`). Only the
    /// service's own connections (to the VIP's listeners) have an owner
    /// elsewhere; others (late upstream segments) get the usual RST.
    pub(super) fn second_chance(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey,
        from_peer: bool,
        now_us: u64,
    ) {
        match decide(self.service_peers(port, &key), from_peer) {
            Verdict::Reset => self.answer_stateless(port, m, now_us),
            Verdict::Drop => self.counters.add(Counter::SecondChanceDropped, 1),
            Verdict::Forward => self.forward_to_peers(port, m),
        }
    }

    /// A SYN for the service while this instance drains: the router has
    /// not heard the withdrawal yet (BGP takes milliseconds to seconds).
    /// Rather than a RST, one peer (chosen by the client's port) opens the
    /// connection and answers the client itself; the client's next
    /// segments, still routed here, go on to it as second chances. One
    /// peer, not all: two would each answer the SYN. A peer's SYN, or no
    /// peers: the RST of a closed port.
    pub(super) fn syn_while_draining(
        &mut self,
        port: usize,
        mut m: Mbuf,
        key: FlowKey,
        from_peer: bool,
        now_us: u64,
    ) {
        let n = self.service_peers(port, &key);
        if decide(n, from_peer) != Verdict::Forward {
            return self.answer_stateless(port, m, now_us);
        }
        let p = &mut self.ports[port];
        let Some(fleet) = &p.fleet else { return };
        let peer = fleet.peers[usize::from(key.remote_port) % n];
        readdress(m.data_mut(), EthernetAddress(peer), p.mac);
        p.tx.push_frame(m);
        self.counters.add(Counter::SecondChanceForwarded, 1);
    }

    /// The peers a segment for `key` could belong to: only the service's
    /// own connections (to the VIP's listeners) have an owner elsewhere;
    /// 0 for others (late upstream segments get the usual RST).
    fn service_peers(&self, port: usize, key: &FlowKey) -> usize {
        let p = &self.ports[port];
        match &p.fleet {
            Some(f)
                if f.vip.unwrap_or(p.ip) == key.local_ip
                    && self.listening(port, key.local_port) =>
            {
                f.peers.len()
            }
            _ => 0,
        }
    }

    /// The frame itself goes to the last peer (rewritten in place); only a
    /// fleet of three or more needs copies, taken from the pool.
    fn forward_to_peers(&mut self, port: usize, mut m: Mbuf) {
        let p = &mut self.ports[port];
        let Some(fleet) = &p.fleet else { return };
        let Some((&last, others)) = fleet.peers.split_last() else {
            return;
        };
        for &peer in others {
            let Some(mut copy) = self.pool.alloc() else {
                break;
            };
            let Some(buf) = copy.append(m.data().len()) else {
                break;
            };
            buf.copy_from_slice(m.data());
            readdress(buf, EthernetAddress(peer), p.mac);
            p.tx.push_frame(copy);
        }
        readdress(m.data_mut(), EthernetAddress(last), p.mac);
        p.tx.push_frame(m);
        self.counters.add(Counter::SecondChanceForwarded, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphan_goes_to_the_peers_only_when_there_are_peers() {
        assert_eq!(decide(0, false), Verdict::Reset);
        assert_eq!(decide(1, false), Verdict::Forward);
        assert_eq!(decide(3, false), Verdict::Forward);
    }

    #[test]
    fn a_peers_frame_is_never_forwarded_again_nor_reset() {
        for peers in [0, 1, 3] {
            assert_eq!(decide(peers, true), Verdict::Drop, "{peers} peers");
        }
    }

    #[test]
    fn peers_are_known_by_mac() {
        let f = Fleet::new(&FleetSpec {
            vip: None,
            peers: vec![[2, 0, 0, 0, 0, 0x0b], [2, 0, 0, 0, 0, 0x0c]],
        });
        assert!(f.is_peer(EthernetAddress([2, 0, 0, 0, 0, 0x0c])));
        assert!(!f.is_peer(EthernetAddress([2, 0, 0, 0, 0, 0x0d])));
    }

    #[test]
    fn a_reload_swaps_the_peers_in_place() {
        let (b, c) = ([2, 0, 0, 0, 0, 0x0b], [2, 0, 0, 0, 0, 0x0c]);
        let mut f = Fleet::new(&FleetSpec {
            vip: None,
            peers: vec![],
        });
        assert!(!f.is_peer(EthernetAddress(b)));
        let next = vec![b, c];
        let at = next.as_ptr();
        let old = f.swap_peers(next);
        assert!(old.is_empty());
        assert!(f.is_peer(EthernetAddress(b)) && f.is_peer(EthernetAddress(c)));
        // The control thread's list itself, not a copy made here.
        assert_eq!(f.peers.as_ptr(), at);
        f.swap_peers(vec![c]);
        assert!(!f.is_peer(EthernetAddress(b)));
        assert_eq!(decide(f.peers.len(), false), Verdict::Forward);
    }

    #[test]
    fn forwarding_rewrites_only_the_ethernet_addresses() {
        let mut frame: Vec<u8> = (0..60).collect();
        let before = frame.clone();
        let (peer, us) = (
            EthernetAddress([2, 0, 0, 0, 0, 0x0b]),
            EthernetAddress([2, 0, 0, 0, 0, 0x0a]),
        );
        readdress(&mut frame, peer, us);
        assert_eq!(&frame[0..6], peer.as_bytes());
        assert_eq!(&frame[6..12], us.as_bytes());
        assert_eq!(frame[12..], before[12..]);
    }
}
