//! Connections this side opens to IPv6 servers (issue #15): a local port
//! whose replies `Steering6` brings back to this core, a slot found by its
//! `FlowKey6` (see `flows6`), and the neighbour's MAC for smoltcp, which
//! learns IPv6 neighbours only from the advertisements fed to it here.

use std::net::{Ipv6Addr, SocketAddrV6};

use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::{Connect, ConnectError, FlowId, Stack};
use crate::dpdk::Mbuf;
use crate::net::counters::Counter;
use crate::net::flow6::FlowKey6;
use crate::net::ipv6::ext;
use crate::net::ipv6::icmp;

const ETH_LEN: usize = 14;

/// True for an Ethernet frame carrying an ICMPv6 neighbour advertisement
/// straight after the IPv6 header (the form every NDP sender uses).
pub(super) fn is_advert(frame: &[u8]) -> bool {
    frame.len() >= ETH_LEN + ext::HEADER_LEN + icmp::NDP_LEN
        && frame[12..14] == [0x86, 0xdd]
        && frame[ETH_LEN + 6] == ext::ICMPV6
        && frame[ETH_LEN + ext::HEADER_LEN] == icmp::NEIGHBOR_ADVERT
}

impl Stack {
    /// `connect` to an IPv6 server: from the port's IPv6 address that
    /// suits it (same prefix, else same scope), on a steered local port.
    pub(super) fn connect6(
        &mut self,
        mut c: Connect,
        server: SocketAddrV6,
        now_us: u64,
    ) -> Result<FlowId, ConnectError> {
        let local_ip = self.ports[c.port_index]
            .v6
            .as_ref()
            .and_then(|v6| v6.source_for(*server.ip()))
            .ok_or(ConnectError::NoIpv6Address)?;
        let local_port = self
            .free_local_port6(&mut c, server, local_ip)
            .ok_or(ConnectError::NoLocalPort)?;
        let key = FlowKey6 {
            remote_ip: *server.ip(),
            remote_port: server.port(),
            local_ip,
            local_port,
        };
        let Some(f) = self.flows.insert_with(super::flows6::placeholder) else {
            self.counters.add(Counter::FlowsRefused, 1);
            return Err(ConnectError::NoSlot);
        };
        self.v6.time_wait.remove(&key);
        self.v6.insert(f, key, None);
        self.counters.add(Counter::Ipv6TcpConnects, 1);
        self.reset_flow(f, c.port_index, None, c.idle_timeout_us, now_us);
        let flow = self.flows.get_mut(f);
        flow.connect_deadline_us = now_us + c.connect_timeout_us;
        let p = &mut self.ports[c.port_index];
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        // Our own deadline ends a connect; smoltcp's is for established flows.
        sock.set_timeout(None);
        let remote = IpEndpoint::new(IpAddress::Ipv6(*server.ip()), server.port());
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(local_ip)),
            port: local_port,
        };
        if let Err(e) = sock.connect(p.iface.context(), remote, local) {
            self.release6(f, tcp::State::Closed, now_us);
            self.flows.remove(f);
            return Err(e.into());
        }
        if self.connecting.len() == self.connecting.capacity() {
            let flows = &mut self.flows;
            self.connecting
                .retain(|&s| flows.key(s).is_some() && flows.get_mut(s).connect_deadline_us != 0);
        }
        self.connecting.push(f);
        self.mark_dirty(f);
        Ok(f)
    }

    /// Keeps `ip`'s next hop known to smoltcp: a solicitation, whose
    /// advertisement `learn_advert` feeds to smoltcp (as `resolve` sends
    /// ARP requests; run often enough that smoltcp's entries never expire).
    pub(super) fn resolve6(&mut self, port: usize, ip: Ipv6Addr) {
        let link = &mut self.ports[port];
        let Some(ns) = link.v6.as_ref().and_then(|v6| v6.solicit(v6.next_hop(ip)?)) else {
            return; // no route, or still in DAD: the next round asks
        };
        link.send_frame(ns.frame_len(), |buf| ns.emit(buf, &[]));
    }

    /// A neighbour advertisement (an upstream's or the gateway's answer):
    /// smoltcp learns the MAC from it, and connects waiting for it send
    /// their SYN now.
    pub(super) fn learn_advert(&mut self, port: usize, m: Mbuf, now_us: u64) {
        self.answer_stateless(port, m, now_us);
        self.wake_connecting(now_us);
    }

    /// `free_local_port` for IPv6: steered by `Steering6`, neither open
    /// nor in TIME-WAIT.
    fn free_local_port6(
        &self,
        c: &mut Connect,
        server: SocketAddrV6,
        local_ip: Ipv6Addr,
    ) -> Option<u16> {
        let steering = self.ports[c.port_index].steering6.as_ref()?;
        let (range, core) = (c.local_ports, self.index as u16);
        let remote = (*server.ip(), server.port());
        super::connect::probe_local_ports(
            c,
            |next| steering.steered_port(remote, local_ip, range, next, core),
            |local_port| {
                let key = FlowKey6 {
                    remote_ip: remote.0,
                    remote_port: remote.1,
                    local_ip,
                    local_port,
                };
                self.v6.lookup(&key).is_none() && !self.v6.time_wait.contains(&key)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ipv6::icmp::{Msg, Out};

    /// An NA from `2001:db8::9` to `2001:db8::2`, as `Out` writes it.
    fn advert() -> Vec<u8> {
        let out = Out {
            eth_src: [2, 0, 0, 0, 0, 9],
            eth_dst: [2, 0, 0, 0, 0, 2],
            src: "2001:db8::9".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            msg: Msg::Advert {
                target: "2001:db8::9".parse().unwrap(),
                solicited: true,
            },
        };
        let mut f = vec![0; out.frame_len()];
        out.emit(&mut f, &[]);
        f
    }

    #[test]
    fn adverts_are_told_from_other_frames() {
        let na = advert();
        assert!(is_advert(&na));
        let mut ns = na.clone();
        ns[ETH_LEN + ext::HEADER_LEN] = icmp::NEIGHBOR_SOLICIT;
        assert!(!is_advert(&ns), "a solicitation");
        let mut tcp = na.clone();
        tcp[ETH_LEN + 6] = ext::TCP;
        assert!(!is_advert(&tcp), "not ICMPv6");
        let mut v4 = na.clone();
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(!is_advert(&v4), "not IPv6");
        assert!(!is_advert(&na[..60]), "cut short");
    }
}
