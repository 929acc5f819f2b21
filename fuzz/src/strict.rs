//! What a strict RFC 9112 parser takes from a request head and a chunked
//! body: the reference the proxy's own framing decisions are checked
//! against. The proxy forwards heads (hop-by-hop headers aside) and bodies
//! unchanged, so an upstream parses the very same bytes; wherever the two
//! could disagree on where a message ends, a request can be smuggled.

use zproxy::app::proxy::http::{Body, RequestInfo};

/// Optional whitespace (RFC 9110 5.6.3): SP and HTAB only.
pub fn ows_trim(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// `Content-Length = 1*DIGIT` (RFC 9110 8.6), or `None`.
pub fn content_length(v: &[u8]) -> Option<u64> {
    let v = ows_trim(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Checks an accepted request head against the strict reading of it.
pub fn check_request(req: &httparse::Request, head: &[u8], info: &RequestInfo) {
    for (i, &b) in head.iter().enumerate() {
        assert!(
            b != b'\n' || (i > 0 && head[i - 1] == b'\r'),
            "accepted a bare LF at {i}"
        );
    }
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    let mut hosts = 0;
    let mut close = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            codings.push(h.value);
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| ows_trim(t).eq_ignore_ascii_case(b"close"));
        }
    }
    assert!(hosts <= 1, "accepted {hosts} Host headers");
    // The target: origin-form, `*`, or absolute-form http(s) naming the
    // Host header's authority; never CONNECT.
    assert_ne!(req.method, Some("CONNECT"), "accepted CONNECT");
    let target = req.path.unwrap_or("").to_ascii_lowercase();
    if !(target.starts_with('/') || target == "*") {
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
            .unwrap_or_else(|| panic!("accepted the target {target:?}"));
        let authority = rest.split(['/', '?', '#']).next().unwrap();
        assert!(
            !authority.is_empty() && !authority.contains('@'),
            "accepted the authority {authority:?}"
        );
        let host = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"));
        if let Some(h) = host {
            assert!(
                ows_trim(h.value).eq_ignore_ascii_case(authority.as_bytes()),
                "absolute-form {authority:?} with Host {:?}",
                String::from_utf8_lossy(h.value)
            );
        }
    }
    if req.version == Some(1) {
        assert_eq!(hosts, 1, "accepted an HTTP/1.1 request without Host");
    }
    match info.body {
        Body::Chunked(_) => {
            assert!(lengths.is_empty(), "chunked with a Content-Length");
            assert_eq!(
                codings.len(),
                1,
                "chunked from {} TE headers",
                codings.len()
            );
            assert!(
                ows_trim(codings[0]).eq_ignore_ascii_case(b"chunked"),
                "chunked from Transfer-Encoding: {:?}",
                String::from_utf8_lossy(codings[0])
            );
        }
        Body::Length(n) => {
            assert!(codings.is_empty(), "a length with Transfer-Encoding");
            assert!(!lengths.is_empty());
            for v in &lengths {
                assert_eq!(
                    content_length(v),
                    Some(n),
                    "length {n} from Content-Length: {:?}",
                    String::from_utf8_lossy(v)
                );
            }
        }
        Body::None => {
            assert!(codings.is_empty(), "no body with Transfer-Encoding");
            for v in &lengths {
                assert_eq!(
                    content_length(v),
                    Some(0),
                    "no body from Content-Length: {:?}",
                    String::from_utf8_lossy(v)
                );
            }
        }
        Body::UntilClose => panic!("a request body is never close-delimited"),
    }
    if close {
        assert!(!info.keep_alive, "keep-alive despite Connection: close");
    }
}

/// Where a chunked body that starts `buf` ends (RFC 9112 7.1; chunk
/// extensions are taken as any bytes but CR and LF, trailer lines as a name,
/// a colon and such bytes, sizes up to i64::MAX, as the proxy's scanner
/// documents), or `None` when it is incomplete or invalid.
pub fn chunked_len(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let line_end = |from: usize| -> Option<usize> {
        // Index just past the CRLF ending the line at `from`; no bare CR or LF inside.
        let mut j = from;
        while j < buf.len() {
            match buf[j] {
                b'\r' => return (buf.get(j + 1) == Some(&b'\n')).then_some(j + 2),
                b'\n' => return None,
                _ => j += 1,
            }
        }
        None
    };
    loop {
        let digits = buf[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 {
            return None;
        }
        let mut size: u64 = 0;
        for &b in &buf[i..i + digits] {
            let d = (b as char).to_digit(16)? as u64;
            size = size.checked_mul(16)?.checked_add(d)?;
        }
        if size > i64::MAX as u64 {
            return None; // as nginx: a size past off_t is refused
        }
        i += digits;
        match buf.get(i) {
            Some(b'\r') => {}
            Some(b';' | b' ' | b'\t') => {}
            _ => return None,
        }
        i = line_end(i)?;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                match buf.get(i) {
                    Some(b'\r') => return (buf.get(i + 1) == Some(&b'\n')).then_some(i + 2),
                    Some(b'\n') | None => return None,
                    Some(_) => {
                        // A field line: a name, then a colon.
                        let end = line_end(i)?;
                        let colon = buf[i..end].iter().position(|&b| b == b':')?;
                        if colon == 0 {
                            return None;
                        }
                        i = end;
                    }
                }
            }
        }
        let size = usize::try_from(size).ok()?;
        if buf.len() - i < size {
            return None;
        }
        i += size;
        if buf.get(i..i + 2) != Some(b"\r\n") {
            return None;
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_chunked_grammar() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n";
        let mut all = body.to_vec();
        all.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(chunked_len(&all), Some(body.len()));
        assert_eq!(chunked_len(b"0\r\n\r\n"), Some(5));
        assert_eq!(chunked_len(b"0\r\n\r"), None);
        assert_eq!(chunked_len(b"5\r\nhelloXX"), None);
        assert_eq!(chunked_len(b"0\n\r\n"), None);
        assert_eq!(content_length(b" 12\t"), Some(12));
        assert_eq!(content_length(b"+12"), None);
    }
}
