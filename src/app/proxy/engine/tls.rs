//! The engine's TLS steps: the poll iteration's handshake budget, and TLS
//! on new upstream connections of `tls = true` groups.

use super::Proxy;
use crate::net::stack::{FlowId, Stack};

impl Proxy {
    /// A new poll iteration: the handshake budget is full again, and the
    /// clients whose handshakes waited for it go on.
    pub fn begin_poll(&mut self, stack: &mut Stack, now_us: u64) {
        let mut waited = std::mem::take(&mut self.deferred);
        self.tls.begin_poll(&mut waited);
        for &c in &waited {
            self.drive(stack, c, now_us);
        }
        self.deferred = waited; // kept for its capacity
        self.tls.count(&mut stack.counters);
    }

    /// Upstream `u` (just connecting to `server`) of `group` speaks TLS if
    /// its group does. False when rustls cannot start it.
    pub(super) fn start_upstream_tls(
        &mut self,
        stack: &mut Stack,
        u: FlowId,
        group: usize,
        server: std::net::IpAddr,
    ) -> bool {
        let Some(tls) = &self.groups[group].spec.tls else {
            return true;
        };
        let plain_len = stack.socket(u).recv_capacity();
        // No deadline of its own: the session's read timeout and the
        // flow's idle timeout bound a stalled handshake.
        self.tls.connect(u, tls, server, plain_len, 0)
    }
}
