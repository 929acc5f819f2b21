//! An upgraded connection (RFC 9110 7.8): after a 101 the session relays
//! bytes both ways until both sides closed, half-closes travelling as in
//! `tcp` mode. The exchange's record (status 101) counts every tunnel byte
//! and ends when the tunnel does; the upstream is never pooled again.

use crate::app::proxy::tls::Io as Socket;

use super::relay::{at_eof, relay_both_ways};
use super::{Routes, Session, State, Step};

impl Session {
    /// A 101 went to the client: from now on bytes, not HTTP. The engine
    /// gives both flows the tunnel's idle timeout (`Step::Tunnel`).
    pub(super) fn start_tunnel(&mut self, routes: Option<&Routes>) -> Step {
        self.state = State::Tunnel;
        self.deadline_us = 0; // the flows' idle timers bound the tunnel
        self.x.client_keep_alive = false;
        self.x.upstream_reusable = false;
        self.requests += 1;
        let idle_us = routes.map_or_else(
            || crate::app::proxy::upgrade::Policy::default().tunnel_idle_us,
            |r| r.upgrade.tunnel_idle_us,
        );
        Step::Tunnel { idle_us }
    }

    /// One round of the tunnel. It ends (the record with it) once both
    /// sides sent their FIN and all was relayed.
    pub(super) fn tunnel(&mut self, c: &mut Socket, up: &mut Socket) {
        let (inward, outward) = relay_both_ways(c, up);
        self.rec.bytes_in += inward;
        self.rec.bytes_out += outward;
        if at_eof(c) && at_eof(up) && !c.may_send() && !up.may_send() {
            // Both FINs went through: the sockets finish their closes alone.
            self.finish(None);
            self.state = State::Done;
        }
    }

    /// The session relays bytes (a `tcp` connection or a tunnel): an
    /// upstream that closed cleanly ends it, it is not an upstream failure.
    pub fn relays(&self) -> bool {
        matches!(self.state, State::Relay | State::Tunnel)
    }
}
