//! Connection limits on the real client behind a trusted load balancer.
//!
//! The stack applies `max_connections_per_source` and
//! `connection_rate_limit` at the SYN, to the peer; behind a balancer that
//! sends the PROXY protocol every client is that one peer. So the stack
//! leaves a listener's trusted proxies alone (`Listen::exempt`) and a
//! session takes these limits here, once the header has named the client.
//! Like the stack's, they are per worker.

use std::collections::HashMap;
use std::net::IpAddr;

use super::proxy_protocol::AcceptProxy;
use super::ratelimit::RequestLimiter;

/// Why a real client was turned away after its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not in the listener's `allow` networks.
    Acl,
    /// It holds `max_connections_per_source` connections already.
    PerSource,
    /// Over its `connection_rate_limit`.
    Rate,
}

/// Open connections per real client, on listeners that accept PROXY headers.
#[derive(Default)]
pub struct OpenPerClient {
    /// Keyed by [`AcceptProxy::source_key`] (an IPv6 client's prefix).
    open: HashMap<IpAddr, u32>,
}

impl OpenPerClient {
    /// Room for `flows` clients, so counting never allocates in the loop:
    /// a worker never holds more connections than flow slots.
    pub fn reserve(&mut self, flows: usize) {
        self.open.reserve(flows.saturating_sub(self.open.len()));
    }

    /// Admits one more connection of `client` under `policy` at `now_us`,
    /// counting it under the key it returns (release that with
    /// [`OpenPerClient::release`]).
    pub fn admit(
        &mut self,
        policy: &AcceptProxy,
        client: IpAddr,
        rates: &mut RequestLimiter,
        now_us: u64,
    ) -> Result<IpAddr, Refused> {
        if !policy.allows(client) {
            return Err(Refused::Acl);
        }
        let client = policy.source_key(client);
        let open = self.open.get(&client).copied().unwrap_or(0);
        if policy.max_per_source > 0 && open >= policy.max_per_source {
            return Err(Refused::PerSource);
        }
        if let Some(rate) = policy.conn_rate {
            if !rates.admit_connection(policy.limit_id, rate, client, policy.prefix6, now_us) {
                return Err(Refused::Rate);
            }
        }
        *self.open.entry(client).or_insert(0) += 1;
        Ok(client)
    }

    /// A connection [`OpenPerClient::admit`] counted has closed.
    pub fn release(&mut self, client: IpAddr) {
        if let Some(n) = self.open.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&client);
            }
        }
    }

    /// Clients with an open connection counted here.
    pub fn clients(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ratelimit::Rate;

    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn policy(max: u32, rate: Option<Rate>) -> AcceptProxy {
        AcceptProxy {
            trusted: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
            trusted6: vec![("2001:db8:ff::".parse().unwrap(), 48)],
            allow: vec![(Ipv4Addr::new(192, 0, 2, 0), 24)],
            allow6: crate::net::source6::Allow6::new(&[
                (Ipv4Addr::new(192, 0, 2, 0).into(), 24),
                ("2001:db8::".parse::<Ipv6Addr>().unwrap().into(), 32),
            ]),
            prefix6: 64,
            max_per_source: max,
            conn_rate: rate,
            limit_id: AcceptProxy::limit_id_of(0),
        }
    }

    #[test]
    fn counts_open_connections_per_real_client() {
        let (mut open, mut rates) = (OpenPerClient::default(), RequestLimiter::new(64, [1; 16]));
        let p = policy(2, None);
        assert_eq!(open.admit(&p, A, &mut rates, 1), Ok(A));
        assert_eq!(open.admit(&p, A, &mut rates, 1), Ok(A));
        assert_eq!(open.admit(&p, A, &mut rates, 1), Err(Refused::PerSource));
        assert_eq!(open.admit(&p, B, &mut rates, 1), Ok(B), "another client");
        open.release(A);
        assert_eq!(open.admit(&p, A, &mut rates, 1), Ok(A), "one closed");
        for c in [A, A, B] {
            open.release(c);
        }
        assert_eq!(open.clients(), 0, "nothing left behind");
    }

    #[test]
    fn no_limit_still_counts_and_checks_the_allow_list() {
        let (mut open, mut rates) = (OpenPerClient::default(), RequestLimiter::new(64, [1; 16]));
        let p = policy(0, None);
        for _ in 0..100 {
            assert_eq!(open.admit(&p, A, &mut rates, 1), Ok(A));
        }
        let outside = Ipv4Addr::new(198, 51, 100, 7).into();
        assert_eq!(open.admit(&p, outside, &mut rates, 1), Err(Refused::Acl));
    }

    #[test]
    fn connection_rate_is_per_real_client() {
        let (mut open, mut rates) = (OpenPerClient::default(), RequestLimiter::new(64, [1; 16]));
        let p = policy(0, Some(Rate::new(1.0, 2)));
        assert_eq!(open.admit(&p, A, &mut rates, 1_000_000), Ok(A));
        assert_eq!(open.admit(&p, A, &mut rates, 1_000_000), Ok(A));
        assert_eq!(open.admit(&p, A, &mut rates, 1_000_000), Err(Refused::Rate));
        assert_eq!(open.admit(&p, B, &mut rates, 1_000_000), Ok(B));
        assert_eq!(
            open.admit(&p, A, &mut rates, 2_000_000),
            Ok(A),
            "a second later"
        );
    }

    #[test]
    fn balancers_are_trusted_by_network_on_either_family() {
        let p = policy(0, None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.trusts(ip("10.1.2.3")));
        assert!(!p.trusts(ip("11.1.2.3")));
        assert!(p.trusts(ip("2001:db8:ff:1::9")));
        assert!(!p.trusts(ip("2001:db8:fe::9")));
        // An IPv4 balancer's address mapped into IPv6 is not the same peer.
        assert!(!p.trusts(ip("::ffff:10.1.2.3")));
    }

    #[test]
    fn an_ipv6_real_client_is_limited_by_its_prefix() {
        let ip = |s: &str| IpAddr::V6(s.parse::<Ipv6Addr>().unwrap());
        let (mut open, mut rates) = (OpenPerClient::default(), RequestLimiter::new(64, [1; 16]));
        let p = policy(2, Some(Rate::new(1.0, 3)));
        let net = ip("2001:db8:1:2::");
        // Rotating through one /64 is one source.
        assert_eq!(
            open.admit(&p, ip("2001:db8:1:2::1"), &mut rates, 1_000_000),
            Ok(net)
        );
        assert_eq!(
            open.admit(&p, ip("2001:db8:1:2::2"), &mut rates, 1_000_000),
            Ok(net)
        );
        assert_eq!(
            open.admit(&p, ip("2001:db8:1:2::3"), &mut rates, 1_000_000),
            Err(Refused::PerSource)
        );
        // Another /64 is another source; outside the allow-list is refused.
        let other = ip("2001:db8:1:3::1");
        assert_eq!(
            open.admit(&p, other, &mut rates, 1_000_000),
            Ok(ip("2001:db8:1:3::"))
        );
        assert_eq!(
            open.admit(&p, ip("2001:db9::1"), &mut rates, 1_000_000),
            Err(Refused::Acl)
        );
        // The rate (3 a second) is per /64 too: the fourth in the second is refused.
        open.release(net);
        open.release(net);
        assert_eq!(
            open.admit(&p, ip("2001:db8:1:2::4"), &mut rates, 1_000_000),
            Ok(net)
        );
        assert_eq!(
            open.admit(&p, ip("2001:db8:1:2::5"), &mut rates, 1_000_000),
            Err(Refused::Rate)
        );
        for key in [net, ip("2001:db8:1:3::")] {
            open.release(key);
        }
        assert_eq!(open.clients(), 0, "released under the keys admitted");
    }
}
