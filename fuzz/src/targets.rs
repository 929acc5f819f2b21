//! The bodies of the fuzz targets, shared with the regression tests in
//! the main workspace (`tests/fuzz_regressions.rs` replays every input in
//! `fuzz/regressions/<target>/` through them).

use std::path::Path;
use std::time::{Duration, Instant};

use zproxy::app::proxy::http::{self, Body, ChunkedScanner, MAX_HEADERS};
use zproxy::app::proxy::session::Routes;
use zproxy::config::Config;
use zproxy::plan::{self, Layout};

use crate::strict;

/// HTTP request heads as the proxy's `ReadHead` state handles them
/// (`src/app/proxy/session.rs`): httparse with `MAX_HEADERS`, then
/// `http::request_info` (400 / 431 / 501, the smuggling checks), routing, and
/// the chunked scanner over what follows the head.
///
/// Besides "never panics", it checks what the proxy's framing decision must
/// agree with: the head is forwarded (hop-by-hop headers aside) unchanged, so
/// the body length the proxy relays has to be the one a strict RFC 9112
/// parser upstream takes from the same bytes. Anything else is a request
/// smuggling vector.
///
/// Input: the first byte picks how the bytes after the head are split when
/// scanned as a chunked body (split invariance); the rest is the request.
pub fn http_request(data: &[u8]) {
    let Some((&split, raw)) = data.split_first() else {
        return;
    };
    proxy_header(raw);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // As in ReadHead: Partial waits for more (or 431 when the buffer is
    // full), TooManyHeaders is 431, any other parse error 400.
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) | Err(_) => return,
    };
    assert!(head_len <= raw.len());
    let info = match http::request_info(&req, raw, head_len) {
        Ok(info) => info,
        Err(r) => {
            assert!(matches!(r.status(), 400 | 405 | 431 | 501));
            return;
        }
    };
    assert_eq!(info.head_len, head_len);
    strict::check_request(&req, &raw[..head_len], &info);

    // Routing on what the head says (as ReadHead does).
    let routes = Routes {
        routes: vec![
            (Some("api.example".into()), "/v1".into(), 1),
            (None, "/static".into(), 2),
        ],
        default: None,
        limits: Vec::new(),
        headers: Default::default(),
        upgrade: Default::default(),
        hash_keys: Vec::new(),
    };
    let target = http::request_target(req.path.unwrap_or("")).expect("an accepted target splits");
    let host = target.authority.map(str::as_bytes).or_else(|| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
    });
    let _ = routes.find(host, target.route_path());

    if let Body::Chunked(scanner) = info.body {
        let rest = &raw[head_len..];
        let whole = scan_all(scanner, rest, usize::MAX);
        let step = usize::from(split % 16) + 1;
        let pieces = scan_all(scanner, rest, step);
        assert_eq!(whole, pieces, "chunked scan depends on how bytes arrive");
        match whole {
            Ok((n, done)) => {
                assert!(n <= rest.len());
                assert_eq!(
                    strict::chunked_len(rest),
                    done.then_some(n),
                    "the scanner and the grammar disagree on where the body ends"
                );
            }
            Err(_) => assert_eq!(strict::chunked_len(rest), None, "a valid body refused"),
        }
    }
}

/// A PROXY protocol header at the start of a trusted connection: any bytes
/// parse without panic, a header stays within its bound and the input, and
/// each of its prefixes only asks for more bytes.
fn proxy_header(raw: &[u8]) {
    use zproxy::app::proxy::proxy_protocol::{parse, Parsed, V2_MAX};
    if let Parsed::Header { len, .. } = parse(raw) {
        assert!(len <= raw.len() && len <= V2_MAX);
        for k in 0..len {
            assert_eq!(
                parse(&raw[..k]),
                Parsed::Incomplete,
                "prefix {k} of a header"
            );
        }
    }
}

/// Scans `buf` in pieces of `step` bytes, as relay_body does across reads.
fn scan_all(
    mut s: ChunkedScanner,
    buf: &[u8],
    step: usize,
) -> Result<(usize, bool), http::BadChunk> {
    let mut used = 0;
    for piece in buf.chunks(step.min(buf.len().max(1))) {
        let (n, done) = s.scan(piece)?;
        used += n;
        if done {
            return Ok((used, true));
        }
        assert_eq!(n, piece.len(), "an unfinished body takes every byte");
    }
    Ok((used, false))
}

/// The config loader (`Config::parse_on`, what `Config::load` runs on a
/// file's text; `sysfs` is the fabricated two-node machine in `fuzz/sysfs`
/// for `cores = "auto"`): any text gives a config or an error, never a
/// panic. A config it accepts then goes through what `zproxy check` and
/// `zproxy run` do with it before any device is touched (EAL arguments, the
/// binding plan, the layout, listener and group specs, reload comparison,
/// the drain deadline): validation must not let through values those steps
/// cannot take.
pub fn config(data: &[u8], sysfs: &Path) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse_with(text, sysfs, &|_| {
        // Fuzzed names must not reach the system resolver (the network).
        Err(std::io::Error::other("no resolver while fuzzing"))
    }) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = cfg.eal_args("zproxy-fuzz");
    for p in &cfg.ports {
        let _ = (p.cidr(), p.device());
    }
    let _ = plan::binding(&cfg, sysfs);
    let layout = Layout::default().merge(&cfg);
    let groups = plan::groups(&cfg, &layout);
    let listeners = plan::listeners(&cfg, &layout);
    assert_eq!(groups.len(), cfg.upstreams.len());
    assert_eq!(listeners.len(), cfg.listeners.len());
    // A reload of the same file changes nothing.
    let same = zproxy::reload::diff(&cfg, &cfg);
    assert!(same.changes.is_empty() && same.refusal().is_none());
    let again = layout.merge(&cfg);
    assert_eq!(plan::groups(&cfg, &again).len(), groups.len());
    let _ = plan::listener_apps(&cfg, &again);
    // SIGTERM: runtime::run sets its drain deadline this way.
    let _ = Instant::now() + Duration::from_millis(cfg.management.drain_timeout_ms);
}
