//! TLS material and configs: loading (PKCS#8, SEC1, PKCS#1), key/cert
//! matching, SNI choice, expiry warnings, ALPN, versions, tickets shared
//! across configs (workers, reloads), and the CPU of one full handshake
//! (printed, never asserted).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::config::{check, load_pair, server_config, SniResolver, TlsError};
use crate::config::{TlsCertificate, TlsListener};

/// A fresh directory for one test's files.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zproxy-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed ECDSA P-256 certificate for `names` (key in PKCS#8).
fn self_signed(dir: &Path, file: &str, names: &[&str]) -> TlsCertificate {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    TlsCertificate { cert, key }
}

/// A self-signed certificate made by the openssl CLI (`newkey`: "rsa:2048"
/// or an EC spec), its key converted with `convert` (e.g. "ec", "rsa -traditional").
fn openssl_cert(dir: &Path, file: &str, newkey: &str, convert: &str) -> TlsCertificate {
    let d = dir.display();
    let line = format!(
        "openssl req -x509 -newkey {newkey} -nodes -keyout {d}/{file}.p8 -out {d}/{file}.pem -days 30 -subj /CN={file}.test -addext subjectAltName=DNS:{file}.test -addext basicConstraints=critical,CA:FALSE 2>/dev/null && openssl {convert} -in {d}/{file}.p8 -out {d}/{file}.key 2>/dev/null"
    );
    let ok = Command::new("bash").args(["-c", &line]).status().unwrap();
    assert!(ok.success(), "{line}");
    TlsCertificate {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
    }
}

fn listener(certs: Vec<TlsCertificate>) -> TlsListener {
    TlsListener {
        certificates: certs,
        min_version: "1.2".into(),
        ciphers: Vec::new(),
        handshake_timeout_ms: 10_000,
    }
}

#[test]
fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    let dir = scratch("sni");
    let certs = [
        self_signed(&dir, "dflt", &["default.test"]),
        self_signed(&dir, "a", &["a.test"]),
        self_signed(&dir, "b", &["*.b.test"]),
    ];
    let loaded: Vec<_> = certs
        .iter()
        .map(|c| load_pair(&c.cert, &c.key).unwrap())
        .collect();
    assert_eq!(loaded[2].names, ["*.b.test"]);
    let r = SniResolver::new(&loaded).unwrap();
    let is = |name: Option<&str>, i: usize| Arc::ptr_eq(&r.pick(name), &loaded[i].key);
    assert!(is(Some("a.test"), 1));
    assert!(
        is(Some("A.TEST."), 1),
        "case and a trailing dot do not matter"
    );
    assert!(is(Some("x.b.test"), 2));
    assert!(
        is(Some("y.x.b.test"), 0),
        "a wildcard covers one label only"
    );
    assert!(is(Some("b.test"), 0));
    assert!(is(Some("nobody.test"), 0));
    assert!(is(None, 0));
}

#[test]
fn keys_load_from_pkcs8_sec1_and_pkcs1_and_must_match_their_certificate() {
    let dir = scratch("keys");
    let p8 = self_signed(&dir, "p8", &["p8.test"]);
    let sec1 = openssl_cert(&dir, "sec1", "ec -pkeyopt ec_paramgen_curve:P-256", "ec");
    let pkcs1 = openssl_cert(&dir, "pkcs1", "rsa:2048", "rsa -traditional");
    assert!(std::fs::read_to_string(&sec1.key)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    assert!(std::fs::read_to_string(&pkcs1.key)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    for c in [&p8, &sec1, &pkcs1] {
        load_pair(&c.cert, &c.key).unwrap_or_else(|e| panic!("{}: {e}", c.cert.display()));
    }
    // The wrong key: refused, naming both files.
    let err = load_pair(&p8.cert, &sec1.key).err().unwrap();
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("sec1.key"), "{err}");
    // A key file with no key, a certificate file with no certificate.
    assert!(matches!(
        load_pair(&p8.cert, &p8.cert),
        Err(TlsError::NoKey { .. })
    ));
    assert!(matches!(
        load_pair(&p8.key, &p8.key),
        Err(TlsError::NoCertificate { .. })
    ));
}

#[test]
fn check_warns_about_a_certificate_expiring_within_30_days() {
    let dir = scratch("expiry");
    let t = listener(vec![self_signed(&dir, "e", &["e.test"])]);
    let not_after = load_pair(&t.certificates[0].cert, &t.certificates[0].key)
        .unwrap()
        .not_after;
    let day = 86_400;
    assert!(check(&t, not_after - 60 * day).unwrap().is_empty());
    let soon = check(&t, not_after - 10 * day).unwrap();
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert!(soon[0].contains("expires in 10 days"), "{soon:?}");
    let gone = check(&t, not_after + day).unwrap();
    assert!(gone[0].contains("has expired"), "{gone:?}");
    let bad = TlsListener {
        min_version: "1.1".into(),
        ..t.clone()
    };
    assert!(matches!(check(&bad, 0), Err(TlsError::BadVersion(_))));
    let bad = TlsListener {
        ciphers: vec!["TLS_RSA_WITH_RC4_128_MD5".into()],
        ..t
    };
    assert!(matches!(check(&bad, 0), Err(TlsError::UnknownCipher(_))));
}

/// A client that trusts `cert` (self-signed) and offers `alpn`.
fn client(
    cert: &Path,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in super::config::read_certs(cert).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// Runs a handshake in memory; the server's CPU time, or the first error.
fn handshake(
    c: &mut ClientConnection,
    s: &mut ServerConnection,
) -> Result<Duration, rustls::Error> {
    let mut server_time = Duration::ZERO;
    let mut buf = Vec::new();
    for _ in 0..20 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let t = Instant::now();
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            let r = s.process_new_packets();
            buf.clear();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            server_time += t.elapsed();
            r?;
        }
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(server_time);
        }
    }
    panic!("the handshake did not finish");
}

fn connect(cfg: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    ClientConnection::new(cfg.clone(), ServerName::try_from(name.to_owned()).unwrap()).unwrap()
}

fn serve(cfg: &Arc<ServerConfig>) -> ServerConnection {
    ServerConnection::new(cfg.clone()).unwrap()
}

#[test]
fn alpn_versions_and_tickets_shared_by_every_config() {
    let dir = scratch("conf");
    let t = listener(vec![self_signed(&dir, "a", &["a.test"])]);
    let cert = t.certificates[0].cert.clone();
    let both = [&rustls::version::TLS13, &rustls::version::TLS12];
    // Two configs of one listener, as two workers (or a reload) build them.
    let (one, two) = (
        server_config(&t, true).unwrap(),
        server_config(&t, true).unwrap(),
    );

    let http1 = client(&cert, &[b"http/1.1"], &both);
    let (mut c, mut s) = (connect(&http1, "a.test"), serve(&one));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // The ticket only arrives after the handshake: let the client read it.
    let mut buf = Vec::new();
    while s.wants_write() {
        s.write_tls(&mut buf).unwrap();
    }
    c.read_tls(&mut &buf[..]).unwrap();
    c.process_new_packets().unwrap();
    // The next connection resumes on the other config.
    let (mut c, mut s) = (connect(&http1, "a.test"), serve(&two));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));

    // Only h2 offered: refused (no_application_protocol), not served.
    let h2 = client(&cert, &[b"h2"], &both);
    let err = handshake(&mut connect(&h2, "a.test"), &mut serve(&one)).unwrap_err();
    assert_eq!(err, rustls::Error::NoApplicationProtocol);

    // TLS 1.2 works by default; min_version = "1.3" refuses it.
    let only12 = client(&cert, &[], &[&rustls::version::TLS12]);
    let (mut c, mut s) = (connect(&only12, "a.test"), serve(&one));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let strict = server_config(
        &TlsListener {
            min_version: "1.3".into(),
            ..t.clone()
        },
        true,
    )
    .unwrap();
    assert!(handshake(&mut connect(&only12, "a.test"), &mut serve(&strict)).is_err());

    // A chosen suite is the only one offered.
    let chacha = server_config(
        &TlsListener {
            ciphers: vec!["TLS13_CHACHA20_POLY1305_SHA256".into()],
            ..t
        },
        true,
    )
    .unwrap();
    let (mut c, mut s) = (connect(&http1, "a.test"), serve(&chacha));
    handshake(&mut c, &mut s).unwrap();
    let suite = s.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
}

/// The server's CPU for one full handshake, ECDSA P-256 and RSA-2048:
/// printed for the docs (run with --nocapture), not asserted.
#[test]
fn full_handshake_cpu_ecdsa_and_rsa() {
    let dir = scratch("cpu");
    let kinds = [
        (
            "ECDSA P-256",
            openssl_cert(&dir, "ec", "ec -pkeyopt ec_paramgen_curve:P-256", "ec"),
        ),
        (
            "RSA-2048",
            openssl_cert(&dir, "rsa", "rsa:2048", "rsa -traditional"),
        ),
    ];
    for (what, cert) in kinds {
        let name = format!("{}.test", cert.cert.file_stem().unwrap().to_str().unwrap());
        let cfg = server_config(&listener(vec![cert.clone()]), true).unwrap();
        let mut plain = client(&cert.cert, &[b"http/1.1"], &[&rustls::version::TLS13]);
        // No resumption: every handshake is a full one.
        Arc::get_mut(&mut plain).unwrap().resumption = rustls::client::Resumption::disabled();
        let rounds = 50;
        let mut total = Duration::ZERO;
        for _ in 0..rounds {
            total += handshake(&mut connect(&plain, &name), &mut serve(&cfg)).unwrap();
        }
        println!(
            "full TLS 1.3 handshake, {what}: {:.0} us of server CPU each ({rounds} rounds)",
            total.as_secs_f64() * 1e6 / f64::from(rounds)
        );
    }
}

/// A TLS 1.2 client that resumes by session ID only (no tickets) resumes
/// on another worker's config: the session-ID cache is one for all.
#[test]
fn tls12_session_id_resumes_on_another_workers_config() {
    let dir = scratch("sessid");
    let t = listener(vec![self_signed(&dir, "s", &["s.test"])]);
    let (one, two) = (
        server_config(&t, false).unwrap(),
        server_config(&t, false).unwrap(),
    );
    let mut c12 = client(&t.certificates[0].cert, &[], &[&rustls::version::TLS12]);
    Arc::get_mut(&mut c12).unwrap().resumption = rustls::client::Resumption::in_memory_sessions(8)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    let (mut c, mut s) = (connect(&c12, "s.test"), serve(&one));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Full));
    let (mut c, mut s) = (connect(&c12, "s.test"), serve(&two));
    handshake(&mut c, &mut s).unwrap();
    assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(s.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
}
