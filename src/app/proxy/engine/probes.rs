//! Active health checks: probes started when due, advanced on their
//! flows' events, and their results (moved out of `engine.rs` for size).

use super::{health, Conn, Proxy};
use crate::net::stack::{Connect, FlowId, Stack};

impl Proxy {
    /// Starts the health probes that are due.
    pub fn launch_probes(&mut self, stack: &mut Stack, now_us: u64) {
        for gi in 0..self.groups.len() {
            let g = &mut self.groups[gi];
            let Some(check) = g.spec.health.clone() else {
                continue;
            };
            for s in 0..g.health.len() {
                let h = &g.health[s];
                if h.probing || now_us < h.next_probe_us || g.spec.balancer.servers[s].retired {
                    continue;
                }
                g.health[s].next_probe_us = now_us + check.interval_us;
                if stack.spare_slots() < 1 {
                    continue; // clients' upstreams come first; probe next interval
                }
                let opened = stack.connect(
                    Connect {
                        port_index: g.spec.port_index,
                        server: g.spec.balancer.servers[s].address,
                        local_ports: g.spec.local_ports,
                        next_local_port: &mut g.next_local_port,
                        connect_timeout_us: check.timeout_us,
                        idle_timeout_us: check.timeout_us,
                    },
                    now_us,
                );
                if let Ok(f) = opened {
                    self.conns[f as usize] = Conn::Probe {
                        group: gi,
                        server: s,
                        sent: false,
                        decided: false,
                    };
                    g.health[s].probing = true;
                }
            }
        }
    }

    pub(super) fn advance_probe(&mut self, stack: &mut Stack, f: FlowId) {
        let Conn::Probe {
            group,
            server,
            sent,
            decided: decided @ false,
        } = &mut self.conns[f as usize]
        else {
            return;
        };
        let (g, s) = (*group, *server);
        let Some(check) = &self.groups[g].spec.health else {
            return;
        };
        let host = self.groups[g].spec.balancer.servers[s]
            .address
            .ip()
            .to_string();
        let sock = stack.socket(f);
        if let Some(ok) = health::probe(check, sock, &host, sent, &mut self.scratch) {
            *decided = true;
            sock.abort(); // a probe needs no goodbye, and leaves no TIME-WAIT
            self.probe_result(g, s, ok);
        }
    }

    pub(super) fn probe_result(&mut self, g: usize, s: usize, ok: bool) {
        let group = &mut self.groups[g];
        let Some(check) = &group.spec.health else {
            return;
        };
        let server = &mut group.spec.balancer.servers[s];
        let first = group.health[s].is_undecided();
        if first && !ok {
            log::warn!(
                "upstream {}: added by a reload, failed its first health check: not in rotation",
                server.address
            );
        }
        if let Some(healthy) = group.health[s].record(ok, server.healthy, check) {
            server.healthy = healthy;
            if first {
                log::info!(
                    "upstream {}: added by a reload, passed its first health check: in rotation",
                    server.address
                );
            } else if healthy {
                log::info!(
                    "upstream {}: health check passed {} times: back in rotation",
                    server.address,
                    check.rise
                );
            } else {
                log::warn!(
                    "upstream {}: health check failed {} times: out of rotation",
                    server.address,
                    check.fall
                );
            }
        }
    }
}
