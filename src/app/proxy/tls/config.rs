//! TLS material from the config: certificates and keys from PEM files, the
//! SNI resolver, the server config of an `https`/`tls` listener, the client
//! config of an upstream group with `tls = true`, and `zproxy check`'s
//! certificate checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

use crate::config::{TlsListener, UpstreamGroup};

/// What is wrong with TLS material, and where.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it (PKCS#8, SEC1 or PKCS#1)")]
    NoKey { path: PathBuf },
    #[error("{path}: not a certificate this proxy can parse: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: key not usable: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{key}: the key does not belong to the certificate {cert}: give the key the certificate was issued for")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("unknown cipher suite {0:?}: use a rustls name such as TLS13_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")]
    UnknownCipher(String),
    #[error("min_version {0:?}: use \"1.2\" or \"1.3\"")]
    BadVersion(String),
    #[error(
        "no cipher suite left for the allowed versions: add a TLS 1.3 or TLS 1.2 suite to ciphers"
    )]
    NoCipher,
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One certificate chain with its key, and what the leaf says about itself.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names (subjectAltName, else the CN), lower case.
    pub names: Vec<String>,
    /// Seconds since the epoch after which the leaf is not valid.
    pub not_after: i64,
}

/// Reads a PEM chain (leaf first) and its key, and checks they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let chain = read_certs(cert)?;
    let der = read_key(key)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|source| {
        TlsError::BadKey {
            path: key.to_owned(),
            source,
        }
    })?;
    let (names, not_after) = leaf_facts(cert, &chain[0])?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // A key type rustls cannot compare is taken as it is.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(k)) => Ok(k),
        _ => Err(TlsError::NoKey {
            path: path.to_owned(),
        }),
    }
}

/// The leaf's DNS names and expiry.
fn leaf_facts(path: &Path, der: &CertificateDer<'_>) -> Result<(Vec<String>, i64), TlsError> {
    use x509_parser::prelude::*;
    let bad = |message: String| TlsError::BadCertificate {
        path: path.to_owned(),
        message,
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert.subject().iter_common_name().next() {
            if let Ok(cn) = cn.as_str() {
                names.push(cn.to_ascii_lowercase());
            }
        }
    }
    Ok((names, cert.validity().not_after.timestamp()))
}

/// Picks the certificate by SNI: an exact name, then a wildcard one level
/// up (`*.example.com` for `a.example.com`), else the default (the first).
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(loaded: &[Loaded]) -> Option<SniResolver> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for l in loaded {
            for n in &l.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()),
                    None => exact.entry(n.clone()),
                }
                .or_insert_with(|| l.key.clone());
            }
        }
        Some(SniResolver {
            exact,
            wildcard,
            default: loaded.first()?.key.clone(),
        })
    }

    pub fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// The session-ticket keys: one rotating ticketer for the whole process,
/// so that a client resumes on whichever worker (thread) it lands on, and
/// across reloads. Keys come from the OS RNG (ring), live in memory only,
/// and rotate every 6 hours (the previous key still decrypts for one more
/// period).
pub fn shared_ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, TlsError> {
    static TICKETER: OnceLock<Arc<dyn rustls::server::ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t = rustls::crypto::ring::Ticketer::new()?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// TLS 1.2 sessions (by session ID) the shared cache holds: a client that
/// offers no ticket resumes within the last this many full handshakes.
/// An entry is a few hundred bytes (the encoded session, its ID, the
/// map), so a few MiB at most.
pub const SESSION_CACHE_ENTRIES: usize = 16_384;

/// The TLS 1.2 session-ID cache: one for the whole process, like the
/// ticketer, so a session resumes on whichever worker its next connection
/// lands on. rustls locks it once per full or resumed handshake (to store
/// or find the session), never per record or packet.
pub fn shared_session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static CACHE: OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES))
        .clone()
}

/// The provider with the suites `ciphers` names (all of ring's when empty).
fn provider(ciphers: &[String]) -> Result<CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if !ciphers.is_empty() {
        let mut chosen = Vec::new();
        for name in ciphers {
            let suite = p
                .cipher_suites
                .iter()
                .find(|s| s.suite().as_str() == Some(name.as_str()))
                .ok_or_else(|| TlsError::UnknownCipher(name.clone()))?;
            chosen.push(*suite);
        }
        p.cipher_suites = chosen;
    }
    Ok(p)
}

fn versions(min: &str) -> Result<&'static [&'static SupportedProtocolVersion], TlsError> {
    static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match min {
        "1.2" => Ok(BOTH),
        "1.3" => Ok(ONLY13),
        other => Err(TlsError::BadVersion(other.to_owned())),
    }
}

/// Loads every certificate of a listener.
pub fn load_listener(t: &TlsListener) -> Result<Vec<Loaded>, TlsError> {
    t.certificates
        .iter()
        .map(|c| load_pair(&c.cert, &c.key))
        .collect()
}

/// The server config of an `https` (ALPN http/1.1) or `tls` listener.
pub fn server_config(t: &TlsListener, https: bool) -> Result<Arc<ServerConfig>, TlsError> {
    let loaded = load_listener(t)?;
    let resolver = SniResolver::new(&loaded).ok_or_else(|| TlsError::NoCertificate {
        path: PathBuf::from("(listener.tls.certificate)"),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider(&t.ciphers)?))
        .with_protocol_versions(versions(&t.min_version)?)
        .map_err(|_| TlsError::NoCipher)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    if https {
        // HTTP/2 does not exist here yet: a client offering only h2 gets
        // the no_application_protocol alert.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    cfg.ticketer = shared_ticketer()?;
    cfg.session_storage = shared_session_cache();
    Ok(Arc::new(cfg))
}

/// A server config from one PEM chain and key held in memory (the fuzz
/// harness; no files), with ALPN http/1.1 and the defaults.
pub fn server_config_from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let path = || PathBuf::from("(in memory)");
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert[..])
        .filter_map(Result::ok)
        .collect();
    let key = rustls_pemfile::private_key(&mut &key[..])
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey { path: path() })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        TlsError::BadKey {
            path: path(),
            source,
        }
    })?;
    let resolver = SniResolver {
        exact: HashMap::new(),
        wildcard: HashMap::new(),
        default: Arc::new(CertifiedKey::new(chain, signing)),
    };
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider(&[])?))
        .with_protocol_versions(versions("1.2")?)
        .map_err(|_| TlsError::NoCipher)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ticketer = shared_ticketer()?;
    cfg.session_storage = shared_session_cache();
    Ok(Arc::new(cfg))
}

/// The client config of an upstream group with `tls = true`.
pub fn client_config(g: &UpstreamGroup) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match &g.tls_ca {
        Some(ca) => {
            for c in read_certs(ca)? {
                roots.add(c)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider(&[])?))
        .with_protocol_versions(versions("1.2")?)
        .map_err(|_| TlsError::NoCipher)?
        .with_root_certificates(roots);
    let mut cfg = match (&g.tls_cert, &g.tls_key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `zproxy check`: every listener's certificates load and match their
/// keys (errors), and none expires within 30 days (warnings).
pub fn check(t: &TlsListener, now_s: i64) -> Result<Vec<String>, TlsError> {
    const SOON_S: i64 = 30 * 24 * 3600;
    let mut warnings = Vec::new();
    for (c, l) in t.certificates.iter().zip(load_listener(t)?) {
        let left = l.not_after - now_s;
        if left < 0 {
            warnings.push(format!(
                "{}: the certificate has expired: clients will refuse it; renew it",
                c.cert.display()
            ));
        } else if left < SOON_S {
            warnings.push(format!(
                "{}: the certificate expires in {} days: renew it",
                c.cert.display(),
                left / 86_400
            ));
        }
    }
    versions(&t.min_version)?;
    provider(&t.ciphers)?;
    Ok(warnings)
}
