//! Active health checks: a probe connection to each server every interval,
//! TCP (the connect must succeed) or HTTP (a GET must answer the expected
//! status). `fall` failures in a row take a server out; `rise` successes in a
//! row bring it back. The worker runs the probes like any other flow.

use smoltcp::socket::tcp::{Socket, State};

use crate::config::{HealthCheckConfig, HealthKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub http: Option<(String, u16)>,
    pub interval_us: u64,
    pub timeout_us: u64,
    pub fall: u32,
    pub rise: u32,
}

impl HealthCheck {
    pub fn new(c: &HealthCheckConfig) -> Self {
        HealthCheck {
            http: (c.kind == HealthKind::Http).then(|| (c.path.clone(), c.expect_status)),
            interval_us: c.interval_ms * 1000,
            timeout_us: c.timeout_ms * 1000,
            fall: c.fall,
            rise: c.rise,
        }
    }
}

/// One server's probing state.
#[derive(Debug, Clone, Default)]
pub struct ServerHealth {
    pub next_probe_us: u64,
    pub probing: bool,
    oks: u32,
    fails: u32,
    /// Added by a reload and not probed yet: out of rotation until its
    /// first probe passes (one probe decides, not `rise`).
    undecided: bool,
}

impl ServerHealth {
    /// A server a reload added to a group with a health check.
    pub fn undecided() -> Self {
        ServerHealth {
            undecided: true,
            ..Self::default()
        }
    }

    pub fn is_undecided(&self) -> bool {
        self.undecided
    }

    /// The check changed: counts start over and a probe goes out now.
    pub fn restart(&mut self) {
        self.next_probe_us = 0;
        self.oks = 0;
        self.fails = 0;
    }

    /// Counts a probe result; `Some(healthy)` when the server changes state.
    pub fn record(
        &mut self,
        ok: bool,
        currently_healthy: bool,
        check: &HealthCheck,
    ) -> Option<bool> {
        self.probing = false;
        if std::mem::take(&mut self.undecided) {
            (self.oks, self.fails) = if ok { (1, 0) } else { (0, 1) };
            return (ok != currently_healthy).then_some(ok);
        }
        if ok {
            self.fails = 0;
            self.oks += 1;
            (!currently_healthy && self.oks >= check.rise).then_some(true)
        } else {
            self.oks = 0;
            self.fails += 1;
            (currently_healthy && self.fails >= check.fall).then_some(false)
        }
    }
}

/// Advances a probe on its socket: `Some(result)` once decided. `sent`
/// remembers that the HTTP request went out.
pub fn probe(
    check: &HealthCheck,
    sock: &mut Socket,
    host: &str,
    sent: &mut bool,
    scratch: &mut [u8],
) -> Option<bool> {
    if sock.state() != State::Established && !*sent {
        return None; // still connecting (failures arrive as a closed socket)
    }
    let Some((path, expect)) = &check.http else {
        return Some(true); // TCP check: the connect succeeded
    };
    if !*sent {
        let req = [
            "GET ",
            path.as_str(),
            " HTTP/1.1\r\nHost: ",
            host,
            "\r\nUser-Agent: zproxy-health\r\nConnection: close\r\n\r\n",
        ];
        let len: usize = req.iter().map(|p| p.len()).sum();
        if crate::app::send_room(sock) < len {
            return Some(false); // cannot even send a request: count it as failed
        }
        for part in req {
            let _ = sock.send_slice(part.as_bytes());
        }
        *sent = true;
    }
    let n = sock.peek_slice(scratch).unwrap_or(0);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&scratch[..n]) {
        // The status line is all we need; headers may still be coming.
        Ok(_) if resp.code.is_some() => Some(resp.code == Some(*expect)),
        Ok(_) if sock.may_recv() => None,
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> HealthCheck {
        HealthCheck {
            http: None,
            interval_us: 1,
            timeout_us: 1,
            fall: 2,
            rise: 3,
        }
    }

    #[test]
    fn fall_and_rise_need_consecutive_results() {
        let c = check();
        let mut h = ServerHealth::default();
        assert_eq!(h.record(false, true, &c), None);
        assert_eq!(h.record(true, true, &c), None); // resets the fail count
        assert_eq!(h.record(false, true, &c), None);
        assert_eq!(h.record(false, true, &c), Some(false));
        assert_eq!(h.record(true, false, &c), None);
        assert_eq!(h.record(true, false, &c), None);
        assert_eq!(h.record(true, false, &c), Some(true));
    }

    #[test]
    fn a_new_server_is_decided_by_its_first_probe() {
        let c = check();
        let mut h = ServerHealth::undecided();
        assert_eq!(
            h.record(true, false, &c),
            Some(true),
            "in at once, not after rise"
        );
        let mut h = ServerHealth::undecided();
        assert_eq!(h.record(false, false, &c), None, "stays out");
        assert!(!h.is_undecided());
        assert_eq!(h.record(true, false, &c), None, "then rise as usual");
        assert_eq!(h.record(true, false, &c), None);
        assert_eq!(h.record(true, false, &c), Some(true));
    }
}
