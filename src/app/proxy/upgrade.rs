//! Protocol upgrades (RFC 9110 7.8): which `Upgrade` requests go upstream
//! with their `Upgrade` and `Connection: upgrade` headers, per listener or
//! route. A 101 answer then turns the session into a byte tunnel
//! (`session::tunnel`).

/// The tokens taken when a listener or route says nothing.
pub const DEFAULT_TOKENS: &[&str] = &["websocket"];

/// The default idle timeout of a tunnel (ms).
pub const DEFAULT_TUNNEL_IDLE_MS: u64 = 300_000;

/// A listener's upgrade rules, built once from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Lower-case protocol names the listener allows.
    listener: Vec<String>,
    /// Per route (same order as `Routes::routes`): its own list, if it has one.
    routes: Vec<Option<Vec<String>>>,
    /// Idle timeout of an upgraded connection (both flows), µs.
    pub tunnel_idle_us: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new(None, Vec::new(), DEFAULT_TUNNEL_IDLE_MS * 1000)
    }
}

impl Policy {
    /// `listener`: the listener's list (None: the default); `routes`: each route's own list.
    pub fn new(
        listener: Option<&[String]>,
        routes: Vec<Option<&[String]>>,
        tunnel_idle_us: u64,
    ) -> Policy {
        let lower = |l: &[String]| l.iter().map(|t| t.to_ascii_lowercase()).collect();
        Policy {
            listener: listener.map_or_else(
                || DEFAULT_TOKENS.iter().map(|t| t.to_string()).collect(),
                lower,
            ),
            routes: routes.into_iter().map(|r| r.map(lower)).collect(),
            tunnel_idle_us,
        }
    }

    /// The allow-list for a request routed by `route` (None: the listener's default).
    fn tokens(&self, route: Option<usize>) -> &[String] {
        route
            .and_then(|i| self.routes.get(i))
            .and_then(|r| r.as_deref())
            .unwrap_or(&self.listener)
    }

    /// Whether a request's `Upgrade` goes upstream: it must be HTTP/1.1 (a
    /// server ignores Upgrade in 1.0), name `upgrade` in `Connection`, and
    /// offer only allowed protocols. `h2c` is never forwarded: ZProxy
    /// speaks HTTP/1.1 to upstreams and relays no HTTP/2.
    pub fn allows(&self, req: &httparse::Request, route: Option<usize>) -> bool {
        if req.version != Some(1) {
            return false;
        }
        let mut asked = false;
        let mut offer: Option<&[u8]> = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                asked |= list(h.value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                if offer.is_some() {
                    return false; // repeated: ambiguous, not forwarded
                }
                offer = Some(h.value);
            }
        }
        let (true, Some(offer)) = (asked, offer) else {
            return false;
        };
        let allowed = self.tokens(route);
        let mut any = false;
        for protocol in list(offer) {
            // "name/version": the name decides.
            let name = protocol.split(|&b| b == b'/').next().unwrap_or(b"");
            if name.eq_ignore_ascii_case(b"h2c")
                || !allowed
                    .iter()
                    .any(|a| name.eq_ignore_ascii_case(a.as_bytes()))
            {
                return false;
            }
            any = true;
        }
        any
    }
}

/// The non-empty elements of a comma-separated header value, trimmed of SP/HTAB.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::proxy::http::MAX_HEADERS;

    fn allows(p: &Policy, raw: &[u8], route: Option<usize>) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(raw).unwrap();
        p.allows(&req, route)
    }

    #[test]
    fn websocket_by_default_and_only_with_connection_upgrade() {
        let p = Policy::default();
        let ws = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n";
        assert!(allows(&p, ws, None));
        assert!(!allows(
            &p,
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            None
        ));
        assert!(!allows(
            &p,
            b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            None
        ));
        assert!(!allows(
            &p,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo/1\r\n\r\n",
            None
        ));
    }

    #[test]
    fn h2c_is_never_forwarded_and_routes_have_their_own_list() {
        let mine = ["foo".to_string(), "h2c".to_string()];
        let p = Policy::new(None, vec![Some(&mine[..]), None], 1);
        let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        assert!(!allows(&p, h2c, Some(0)));
        let foo = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo/2\r\n\r\n";
        assert!(allows(&p, foo, Some(0)));
        assert!(!allows(&p, foo, Some(1)));
        assert!(!allows(&p, foo, None));
        // One refused protocol among those offered: none is forwarded.
        let mixed =
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo, websocket\r\n\r\n";
        assert!(!allows(&p, mixed, Some(0)));
    }
}
