//! Connections this side opens: a free local port whose replies RSS brings
//! back to this core, and the neighbours they go through.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use smoltcp::socket::tcp;

use super::{Connect, ConnectError, FlowId, Stack, LOCAL_PORT_TRIES};
use crate::net::counters::Counter;
use crate::net::flow::FlowKey;

impl Stack {
    /// Opens a connection from a free local port whose replies RSS brings
    /// to this core; its SYN leaves at the next flush.
    pub fn connect(&mut self, mut c: Connect, now_us: u64) -> Result<FlowId, ConnectError> {
        let server = match c.server {
            SocketAddr::V4(s) => s,
            SocketAddr::V6(s) => return self.connect6(c, s, now_us),
        };
        let local_ip = self.ports[c.port_index].ip;
        let local_port = self
            .free_local_port(&mut c, server, local_ip)
            .ok_or(ConnectError::NoLocalPort)?;
        let key = FlowKey {
            remote_ip: *server.ip(),
            remote_port: server.port(),
            local_ip,
            local_port,
        };
        let Some(f) = self.flows.insert(key) else {
            self.counters.add(Counter::FlowsRefused, 1);
            return Err(ConnectError::NoSlot);
        };
        self.reset_flow(f, c.port_index, None, c.idle_timeout_us, now_us);
        let flow = self.flows.get_mut(f);
        flow.connect_deadline_us = now_us + c.connect_timeout_us;
        let p = &mut self.ports[c.port_index];
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        // Our own deadline ends a connect; smoltcp's is for established flows.
        sock.set_timeout(None);
        if let Err(e) = sock.connect(p.iface.context(), (*server.ip(), server.port()), local_port) {
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

    /// Asks for the MAC of `ip`'s next hop on `port`, so that connects and
    /// replies never wait on ARP or NDP (and entries never expire).
    pub fn resolve(&mut self, port: usize, ip: IpAddr) {
        let ip = match ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => return self.resolve6(port, ip),
        };
        let p = &mut self.ports[port];
        if let Some(hop) = p.next_hop(ip) {
            p.send_arp_request(hop);
        }
    }

    /// Resolves every port's gateway (see [`resolve`](Self::resolve)).
    pub fn resolve_gateways(&mut self) {
        for p in &mut self.ports {
            if let Some(gw) = p.gateway {
                p.send_arp_request(gw);
            }
        }
    }

    /// A local port for a new connection, whose 4-tuple is neither open nor
    /// in TIME-WAIT and whose replies RSS puts on this core's queue.
    fn free_local_port(
        &self,
        c: &mut Connect,
        server: SocketAddrV4,
        local_ip: Ipv4Addr,
    ) -> Option<u16> {
        let steering = &self.ports[c.port_index].steering;
        let (range, core) = (c.local_ports, self.index as u16);
        let remote = (*server.ip(), server.port());
        probe_local_ports(
            c,
            |next| steering.steered_port(remote, local_ip, range, next, core),
            |local_port| {
                let key = FlowKey {
                    remote_ip: remote.0,
                    remote_port: remote.1,
                    local_ip,
                    local_port,
                };
                self.flows.lookup(&key).is_none() && !self.time_wait.contains(&key)
            },
        )
    }
}

/// The probe both families share: up to `LOCAL_PORT_TRIES` ports from
/// `c.next_local_port` on, each the next one `steer` says RSS brings back
/// to this core, until `is_free` takes one; where to go on from is kept
/// for the next connect.
pub(super) fn probe_local_ports(
    c: &mut Connect,
    mut steer: impl FnMut(u16) -> Option<u16>,
    mut is_free: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (lo, hi) = c.local_ports;
    let mut next = *c.next_local_port;
    for _ in 0..LOCAL_PORT_TRIES {
        let port = steer(next)?;
        next = if port >= hi { lo } else { port + 1 };
        if is_free(port) {
            *c.next_local_port = next;
            return Some(port);
        }
    }
    *c.next_local_port = next;
    None
}
