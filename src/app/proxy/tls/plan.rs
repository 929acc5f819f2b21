//! The worker-side TLS of a listener or an upstream group, made from the
//! config (at start and on every reload: certificates are read again).

use std::sync::Arc;

use rustls::pki_types::ServerName;

use super::config::{client_config, server_config};
use super::{ServerTls, UpstreamTls};
use crate::config::{Listener, ListenerMode, UpstreamGroup};

/// An `https`/`tls` listener's TLS; `None` for the others.
pub fn listener(l: &Listener) -> Option<Arc<ServerTls>> {
    let t = l.tls.as_ref()?;
    let config = server_config(t, l.mode == ListenerMode::Https)
        .map_err(|e| {
            // Checked at load: only a file changed since then gets here.
            log::error!("listener {}: {e}: its connections are refused", l.label());
        })
        .ok();
    Some(Arc::new(ServerTls {
        config,
        handshake_timeout_us: t.handshake_timeout_ms * 1000,
    }))
}

/// A group's TLS to its servers; `None` without `tls = true`.
pub fn upstream(g: &UpstreamGroup) -> Option<UpstreamTls> {
    if !g.tls {
        return None;
    }
    let config = client_config(g).unwrap_or_else(|e| {
        // Checked at load: only a file changed since then gets here. No
        // root is trusted then: every handshake fails (502, cause tls),
        // never a fall back to plain text.
        log::error!("upstream {}: {e}: its TLS connections fail", g.name);
        untrusting()
    });
    let sni = g
        .tls_sni
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_owned()).ok());
    Some(UpstreamTls { config, sni })
}

/// A client config that trusts no server.
fn untrusting() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(cfg)
}
