//! `[announce]`: the service address (VIP) a BIRD `protocol static`
//! announces while this instance is up and its listeners' groups are
//! healthy (`crate::announce` drives it). Checked here: the VIP, the
//! listeners followed, the BIRD names.

use std::path::PathBuf;

use serde::Deserialize;

use super::locate::Place;
use super::{parse_cidr, Config, ConfigError, ListenerMode, MAX_DURATION_MS};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// The service address ("A.B.C.D/len"), as the BIRD static protocol
    /// routes it; used in the log, `/stats` and `/metrics`.
    pub vip: String,
    /// Listeners ("PORT:TCP_PORT") whose upstream groups must each have a
    /// healthy server for the VIP to be announced.
    pub listeners: Vec<String>,
    /// BIRD's control socket (`bird -s`).
    #[serde(default = "bird_socket")]
    pub bird_socket: PathBuf,
    /// The BIRD `protocol static` whose route is the VIP: enabled to
    /// announce, disabled to withdraw.
    #[serde(default = "protocol")]
    pub protocol: String,
    /// After a withdrawal (and at start), the groups must stay healthy this
    /// long before the VIP is announced (again): a flapping server does not
    /// make the route flap. A withdrawal is never held.
    #[serde(default = "hold_down_ms")]
    pub hold_down_ms: u64,
}

fn bird_socket() -> PathBuf {
    "/run/bird/bird.ctl".into()
}
fn protocol() -> String {
    "zproxy_vip".into()
}
fn hold_down_ms() -> u64 {
    3_000
}

impl Announce {
    /// The groups the VIP's health follows: each followed listener's default
    /// upstream and its routes' upstreams (no duplicates).
    pub fn groups<'a>(&self, cfg: &'a Config) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for l in cfg
            .listeners
            .iter()
            .filter(|l| self.listeners.contains(&l.label()))
        {
            let names = l
                .upstream
                .iter()
                .chain(l.routes.iter().map(|r| &r.upstream));
            for g in names {
                if !out.contains(&g.as_str()) {
                    out.push(g);
                }
            }
        }
        out
    }
}

/// A name BIRD's config language takes as a symbol (and nothing that could
/// end a control-socket command line).
fn is_bird_symbol(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl Config {
    pub(super) fn validate_announce(&self, text: &str) -> Result<(), ConfigError> {
        let Some(a) = &self.announce else {
            return Ok(());
        };
        let bad = |key: &str, message: String| ConfigError::Invalid {
            file: None,
            line: Place::new("announce", 0).line(text, key),
            key: format!("announce.{key}"),
            message: format!("announce: {message}"),
        };
        if parse_cidr(&a.vip).is_none() {
            return Err(bad(
                "vip",
                format!(
                    "vip \"{}\" is not A.B.C.D/prefix (e.g. \"10.99.0.1/32\")",
                    a.vip
                ),
            ));
        }
        if a.listeners.is_empty() {
            return Err(bad("listeners", "listeners is empty: name the listeners (\"PORT:TCP_PORT\", e.g. \"client:80\") whose upstream health the VIP follows".into()));
        }
        for name in &a.listeners {
            let Some(l) = self.listeners.iter().find(|l| &l.label() == name) else {
                let known: Vec<String> = self.listeners.iter().map(|l| l.label()).collect();
                return Err(bad(
                    "listeners",
                    format!(
                        "no listener \"{name}\" (listeners are named PORT:TCP_PORT: {})",
                        known.join(", ")
                    ),
                ));
            };
            if l.mode == ListenerMode::Static || (l.upstream.is_none() && l.routes.is_empty()) {
                return Err(bad("listeners", format!("listener \"{name}\" sends to no upstream group, so there is no health to follow: name a tcp or http listener")));
            }
        }
        if !is_bird_symbol(&a.protocol) {
            return Err(bad("protocol", format!("protocol {:?} is not a BIRD protocol name (letters, digits and _, not starting with a digit)", a.protocol)));
        }
        let sock = a.bird_socket.to_string_lossy();
        if sock.is_empty() || sock.contains(['\0', '\n']) {
            return Err(bad(
                "bird_socket",
                "bird_socket must be the path of BIRD's control socket (bird -s), e.g. \"/run/bird/bird.ctl\"".into(),
            ));
        }
        if a.hold_down_ms > MAX_DURATION_MS {
            return Err(bad(
                "hold_down_ms",
                format!(
                    "hold_down_ms = {}: at most {MAX_DURATION_MS} ms (30 days)",
                    a.hold_down_ms
                ),
            ));
        }
        Ok(())
    }
}
