//! HTTP request rate limits: which limit a request falls under (its route's
//! `rate_limit`, else its listener's) and the `429 Too Many Requests` it
//! gets when its client is over it. The buckets are `net::ratelimit`'s, in
//! one fixed-size table per worker (no lock: each worker limits the
//! clients RSS gives it; see INSTALL.md "Rate limits").

use std::io::Write as _;
use std::net::IpAddr;

use crate::net::ratelimit::{Limiter, Rate};

/// A request rate limit as routing finds it: `id` names its buckets (one
/// per route or listener), so clients are limited per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    pub id: u32,
    pub rate: Rate,
}

impl RouteLimit {
    /// The limit of route `route` (`None`: the listener's own) of listener
    /// `listener`: ids are unique per worker.
    pub fn new(listener: usize, route: Option<usize>, per_second: f64, burst: u32) -> RouteLimit {
        let route = route.map_or(0xffff, |r| r.min(0xfffe) as u32);
        RouteLimit {
            id: ((listener as u32) << 16) | route,
            rate: Rate::new(per_second, burst),
        }
    }
}

/// Per route of `l` (listener number `index`), then for its default
/// upstream: the limit requests fall under (the route's own, else the
/// listener's); empty when there is none at all.
pub fn route_limits(index: usize, l: &crate::config::Listener) -> Vec<Option<RouteLimit>> {
    let own = l
        .rate_limit
        .map(|r| RouteLimit::new(index, None, r.requests_per_second, r.burst));
    if own.is_none() && l.routes.iter().all(|r| r.rate_limit.is_none()) {
        return Vec::new();
    }
    l.routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.rate_limit
                .map(|r| RouteLimit::new(index, Some(i), r.requests_per_second, r.burst))
                .or(own)
        })
        .chain([own])
        .collect()
}

/// The worker's request buckets.
pub struct RequestLimiter {
    table: Limiter,
}

impl RequestLimiter {
    pub fn new(entries: usize, key: [u8; 16]) -> RequestLimiter {
        RequestLimiter {
            table: Limiter::new(entries, key),
        }
    }

    /// `None` when `client` may go on under `limit`, else the whole seconds
    /// (at least 1) it should wait: `Retry-After`.
    #[inline]
    pub fn check(&mut self, limit: Option<RouteLimit>, client: IpAddr, now_us: u64) -> Option<u64> {
        let limit = limit?;
        // An IPv6 client by its /64 (a route's limit has no prefix of its own).
        let wait_us = self
            .table
            .check_ip(limit.id, client, 64, limit.rate, now_us)
            .err()?;
        Some(wait_us.div_ceil(1_000_000).max(1))
    }

    /// One new connection of `client` within `rate` (bucket `id`: see
    /// `AcceptProxy::limit_id_of`); an IPv6 one by its first `prefix6` bits.
    #[inline]
    pub fn admit_connection(
        &mut self,
        id: u32,
        rate: Rate,
        client: IpAddr,
        prefix6: u8,
        now_us: u64,
    ) -> bool {
        self.table
            .check_ip(id, client, prefix6, rate, now_us)
            .is_ok()
    }

    pub fn used(&self) -> usize {
        self.table.used()
    }

    pub fn evictions(&self) -> u64 {
        self.table.evictions()
    }
}

/// The complete 429 response into `buf` (no allocation); its length.
pub fn too_many_requests(retry_after_s: u64, buf: &mut [u8; 192]) -> usize {
    const BODY: &str = "too many requests\n";
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        cur,
        "HTTP/1.1 429 Too Many Requests\r\nServer: zproxy\r\nRetry-After: {retry_after_s}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    cur.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let mut l = RequestLimiter::new(64, [1; 16]);
        let fast = Some(RouteLimit::new(0, Some(0), 10.0, 1));
        assert_eq!(l.check(fast, C.into(), 1_000_000), None);
        assert_eq!(l.check(fast, C.into(), 1_000_000), Some(1), "100 ms: 1 s");
        let slow = Some(RouteLimit::new(0, Some(1), 0.4, 1));
        assert_eq!(l.check(slow, C.into(), 1_000_000), None);
        assert_eq!(l.check(slow, C.into(), 1_000_000), Some(3), "2.5 s: 3 s");
        assert_eq!(l.check(None, C.into(), 1_000_000), None, "no limit");
    }

    #[test]
    fn routes_and_listeners_have_their_own_buckets() {
        let a = RouteLimit::new(1, Some(0), 1.0, 1);
        let b = RouteLimit::new(1, Some(1), 1.0, 1);
        let own = RouteLimit::new(1, None, 1.0, 1);
        let other = RouteLimit::new(2, Some(0), 1.0, 1);
        let ids = [a.id, b.id, own.id, other.id];
        for (i, x) in ids.iter().enumerate() {
            assert!(!ids[i + 1..].contains(x), "{ids:?}");
        }
    }

    #[test]
    fn a_route_without_its_own_limit_takes_the_listeners() {
        let l: crate::config::Listener = toml::from_str(
            r#"
port = "client"
tcp_port = 80
mode = "http"
upstream = "web"
rate_limit = { requests_per_second = 2.0, burst = 4 }
[[route]]
path_prefix = "/api"
upstream = "web"
rate_limit = { requests_per_second = 1.0, burst = 1 }
[[route]]
path_prefix = "/static"
upstream = "web"
"#,
        )
        .unwrap();
        let own = Some(RouteLimit::new(3, None, 2.0, 4));
        assert_eq!(
            route_limits(3, &l),
            [Some(RouteLimit::new(3, Some(0), 1.0, 1)), own, own]
        );
        let mut none = l.clone();
        none.rate_limit = None;
        none.routes[0].rate_limit = None;
        assert!(
            route_limits(3, &none).is_empty(),
            "no limit: nothing to look up"
        );
    }

    #[test]
    fn the_429_page_is_well_formed() {
        let mut buf = [0u8; 192];
        let n = too_many_requests(12, &mut buf);
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(head.contains("\r\nRetry-After: 12\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        // The longest Retry-After still fits.
        let n = too_many_requests(u64::MAX, &mut buf);
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .ends_with("too many requests\n"));
    }
}
