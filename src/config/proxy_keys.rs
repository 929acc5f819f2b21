//! Checks of the PROXY protocol keys: `accept_proxy_protocol` and
//! `trusted_proxies` on a listener (`proxy_protocol` on a group is an enum
//! serde checks).

use super::ipv6::parse_net;
use super::locate::Place;
use super::{Config, ConfigError, ListenerMode};

impl Config {
    pub(super) fn validate_proxy_keys(&self, text: &str) -> Result<(), ConfigError> {
        for (i, l) in self.listeners.iter().enumerate() {
            let bad = |key: &str, message: String| ConfigError::Invalid {
                file: None,
                line: Place::new("listener", i).line(text, key),
                key: format!("listener.{key}"),
                message: format!("listener on tcp_port {}: {message}", l.tcp_port),
            };
            if let Some(net) = l.trusted_proxies.iter().find(|a| parse_net(a).is_none()) {
                return Err(bad("trusted_proxies", format!("trusted_proxies entry \"{net}\" is not an IPv4 or IPv6 network with a prefix length (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")")));
            }
            match (l.accept_proxy_protocol, l.trusted_proxies.is_empty()) {
                (true, true) => return Err(bad("accept_proxy_protocol", "accept_proxy_protocol = true needs trusted_proxies: the networks of the load balancers whose PROXY headers are believed".into())),
                (false, false) => return Err(bad("trusted_proxies", "trusted_proxies does nothing without accept_proxy_protocol = true".into())),
                _ => {}
            }
            if l.accept_proxy_protocol && l.mode == ListenerMode::Static {
                return Err(bad("accept_proxy_protocol", "accept_proxy_protocol needs mode = \"tcp\" or \"http\" (a static listener does not read it)".into()));
            }
        }
        Ok(())
    }
}
