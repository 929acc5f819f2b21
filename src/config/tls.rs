//! The TLS keys: `[listener.tls]` of `https`/`tls` listeners, an upstream
//! group's `tls*` keys and `runtime.tls_handshakes_per_poll`. Checking
//! loads every certificate and key (and that each key matches its
//! certificate), so a config that passes starts.

use std::path::PathBuf;

use serde::Deserialize;

use super::locate::Place;
use super::validate::invalid;
use super::{Config, ConfigError, ListenerMode, MAX_DURATION_MS};
use crate::app::proxy::tls::config as tls;

/// Handshake steps per worker poll iteration: a full RSA-2048 handshake
/// costs about 1 ms of CPU (ECDSA P-256 a few times less), so 4 bound the
/// stall of the other flows on the core to a few ms per iteration under
/// a handshake flood, while a core still completes thousands per second.
pub const DEFAULT_HANDSHAKES_PER_POLL: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    /// Chains and keys; SNI picks by the names in each certificate, the
    /// first is the default (no SNI, or no name matches).
    #[serde(rename = "certificate")]
    pub certificates: Vec<TlsCertificate>,
    /// "1.2" (TLS 1.2 and 1.3) or "1.3" (TLS 1.3 only).
    #[serde(default = "min_version")]
    pub min_version: String,
    /// rustls suite names; empty: ring's safe defaults.
    #[serde(default)]
    pub ciphers: Vec<String>,
    /// A handshake must finish within this (ms).
    #[serde(default = "handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsCertificate {
    /// PEM: the leaf first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
    pub key: PathBuf,
}

fn min_version() -> String {
    "1.2".into()
}

fn handshake_timeout_ms() -> u64 {
    10_000
}

impl Config {
    pub(super) fn validate_tls(&self, text: &str) -> Result<(), ConfigError> {
        let hs = self.runtime.tls_handshakes_per_poll;
        if hs == 0 || hs > 1024 {
            return Err(invalid(None, "runtime.tls_handshakes_per_poll", format!("runtime: tls_handshakes_per_poll = {hs}: must be 1..=1024 (the default is {DEFAULT_HANDSHAKES_PER_POLL})")));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let place = Place::new("listener", i);
            let on = format!("listener on tcp_port {}", l.tcp_port);
            let wants = matches!(l.mode, ListenerMode::Https | ListenerMode::Tls);
            let line = place.line(text, "mode");
            let Some(t) = &l.tls else {
                if wants {
                    return Err(invalid(line, "listener.tls", format!("{on}: mode = \"https\"/\"tls\" needs [listener.tls] with at least one [[listener.tls.certificate]] (cert, key)")));
                }
                continue;
            };
            if !wants {
                return Err(invalid(line, "listener.tls", format!("{on}: [listener.tls] only applies to mode = \"https\" or \"tls\"; remove it or change the mode")));
            }
            if t.certificates.is_empty() {
                return Err(invalid(line, "listener.tls.certificate", format!("{on}: [listener.tls] has no [[listener.tls.certificate]]: add one (cert, key)")));
            }
            if t.handshake_timeout_ms == 0 || t.handshake_timeout_ms > MAX_DURATION_MS {
                return Err(invalid(
                    line,
                    "listener.tls.handshake_timeout_ms",
                    format!(
                        "{on}: handshake_timeout_ms = {}: must be 1..={MAX_DURATION_MS}",
                        t.handshake_timeout_ms
                    ),
                ));
            }
            tls::server_config(t, l.mode == ListenerMode::Https)
                .map_err(|e| invalid(line, "listener.tls", format!("{on}: {e}")))?;
        }
        for (i, g) in self.upstreams.iter().enumerate() {
            let line = Place::new("upstream", i).line(text, "name");
            let on = format!("upstream {}", g.name);
            let set = g.tls_ca.is_some()
                || g.tls_sni.is_some()
                || g.tls_cert.is_some()
                || g.tls_key.is_some();
            if !g.tls && set {
                return Err(invalid(
                    line,
                    "upstream.tls",
                    format!("{on}: tls_ca, tls_sni, tls_cert and tls_key need tls = true"),
                ));
            }
            if g.tls_cert.is_some() != g.tls_key.is_some() {
                return Err(invalid(
                    line,
                    "upstream.tls_cert",
                    format!("{on}: tls_cert and tls_key go together: give both or neither"),
                ));
            }
            if let Some(sni) = &g.tls_sni {
                if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
                    return Err(invalid(
                        line,
                        "upstream.tls_sni",
                        format!("{on}: tls_sni = {sni:?} is not a DNS name or IP address"),
                    ));
                }
            }
            if g.tls {
                tls::client_config(g)
                    .map_err(|e| invalid(line, "upstream.tls", format!("{on}: {e}")))?;
            }
        }
        Ok(())
    }

    /// `zproxy check`'s TLS warnings: certificates expiring within 30 days.
    pub fn tls_warnings(&self) -> Vec<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| tls::check(t, now).unwrap_or_default())
            .collect()
    }
}
