//! Checks of the upgrade keys: `upgrade` (listener and route) and
//! `tunnel_idle_timeout_ms`.

use super::locate::Place;
use super::validate::invalid;
use super::{Config, ConfigError, ListenerMode, MAX_DURATION_MS};

/// What is wrong with one allow-list entry, if anything.
fn bad_token(t: &str) -> Option<&'static str> {
    // RFC 9110 5.6.2 tchar
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if t.is_empty() || !t.bytes().all(tchar) {
        Some("is not a protocol name (RFC 9110 token, e.g. \"websocket\")")
    } else if t.eq_ignore_ascii_case("h2c") {
        Some("is never forwarded: ZProxy speaks HTTP/1.1 to upstreams, so an h2c upgrade is dropped and the request served as HTTP/1.1")
    } else {
        None
    }
}

impl Config {
    pub(super) fn validate_upgrade(&self, text: &str) -> Result<(), ConfigError> {
        for (i, l) in self.listeners.iter().enumerate() {
            let place = Place::new("listener", i);
            let on = format!("listener on tcp_port {}", l.tcp_port);
            if l.mode.base() != ListenerMode::Http && l.upgrade.is_some() {
                return Err(invalid(place.line(text, "upgrade"), "listener.upgrade", format!("{on}: upgrade only applies to mode = \"http\" (a tcp listener relays any protocol as it is); remove it")));
            }
            if l.tunnel_idle_timeout_ms == 0 || l.tunnel_idle_timeout_ms > MAX_DURATION_MS {
                return Err(invalid(place.line(text, "tunnel_idle_timeout_ms"), "listener.tunnel_idle_timeout_ms", format!("{on}: tunnel_idle_timeout_ms = {}: must be 1..={MAX_DURATION_MS} (the default is {})", l.tunnel_idle_timeout_ms, crate::app::proxy::upgrade::DEFAULT_TUNNEL_IDLE_MS)));
            }
            let lists = std::iter::once((place, "listener.upgrade", &l.upgrade)).chain(
                l.routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| (place.sub("route", j), "listener.route.upgrade", &r.upgrade)),
            );
            for (at, key, list) in lists {
                for t in list.iter().flatten() {
                    if let Some(why) = bad_token(t) {
                        return Err(invalid(
                            at.line(text, "upgrade"),
                            key,
                            format!("{on}: upgrade entry \"{t}\" {why}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
