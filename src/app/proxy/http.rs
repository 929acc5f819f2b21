//! HTTP/1.1 message framing for the proxy: request validation (including the
//! request-smuggling vectors), which body follows a head, and a scanner that
//! finds the end of a chunked body while its bytes are relayed unchanged.

/// Why a request is refused before it reaches an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: malformed or ambiguous framing.
    BadRequest,
    /// 431: the head does not fit the receive buffer, or too many headers.
    HeadTooLarge,
    /// 405: CONNECT (ZProxy is never a tunnel).
    MethodNotAllowed,
    /// 501: a transfer coding other than chunked.
    NotImplemented,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::HeadTooLarge => 431,
            Refusal::MethodNotAllowed => 405,
            Refusal::NotImplemented => 501,
        }
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked(ChunkedScanner),
    /// Until the sender closes (responses only).
    UntilClose,
}

/// What the proxy needs to know about a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    pub head_len: usize,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    pub keep_alive: bool,
    pub is_head: bool,
    pub body: Body,
}

pub const MAX_HEADERS: usize = 64;

/// Hop-by-hop headers: never forwarded (RFC 9110 7.6.1). Transfer-Encoding
/// is kept because chunked bodies are relayed as they are.
pub fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Optional whitespace around a field value or list element (RFC 9110
/// 5.6.3): SP and HTAB only. `str::trim` also strips Unicode spaces (U+0085,
/// U+00A0, ...), which no upstream does: heads are forwarded as they are, so
/// `chunked\u{85}` would be chunked here and an unknown coding there.
fn trim_ows(v: &str) -> &str {
    v.trim_matches([' ', '\t'])
}

/// `Content-Length = 1*DIGIT` (RFC 9110 8.6): `u64::from_str` also takes a
/// leading `+`, which other parsers read otherwise (a smuggling vector).
fn content_length(value: &str) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A request target (RFC 9112 3.2) split into the authority an
/// absolute-form target names and the origin-form rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub authority: Option<&'a str>,
    /// Path and query; empty or starting with `?` when an absolute-form
    /// target has no path (the origin form then starts with `/`).
    pub rest: &'a str,
}

impl<'a> Target<'a> {
    /// What routes match on.
    pub fn route_path(&self) -> &'a str {
        if self.rest.starts_with('/') || self.rest == "*" {
            self.rest
        } else {
            "/"
        }
    }
}

/// Splits a request target; `None` for a form the proxy does not take
/// (authority-form, a relative path, a scheme other than http(s), userinfo).
pub fn request_target(target: &str) -> Option<Target<'_>> {
    if target.starts_with('/') || target == "*" {
        return Some(Target {
            authority: None,
            rest: target,
        });
    }
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|s| {
            let t = target.as_bytes();
            t.len() >= s.len() && t[..s.len()].eq_ignore_ascii_case(s.as_bytes())
        })?
        .len();
    let after = &target[scheme_len..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(Target {
        authority: Some(authority),
        rest: &after[end..],
    })
}

/// Checks a parsed request and derives its framing. `raw` is the head bytes.
///
/// The target must be origin-form (or `*`) or absolute-form naming the
/// same authority as its Host header: the upstream gets origin-form and the
/// configured servers only, whatever host a request names.
pub fn request_info(
    req: &httparse::Request,
    raw: &[u8],
    head_len: usize,
) -> Result<RequestInfo, Refusal> {
    // Bare LF line ends are how smuggling hides a header from one parser.
    if raw[..head_len]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
    {
        return Err(Refusal::BadRequest);
    }
    if req.method == Some("CONNECT") {
        return Err(Refusal::MethodNotAllowed);
    }
    let target = request_target(req.path.unwrap_or("")).ok_or(Refusal::BadRequest)?;
    let http11 = req.version == Some(1);
    let is_head = req.method == Some("HEAD");
    // `close` wins wherever it stands, whatever else the headers say.
    let (mut keep_alive, mut close) = (http11, false);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut hosts = 0;
    let mut host_matches = true;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| Refusal::BadRequest)?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value).ok_or(Refusal::BadRequest)?;
            if length.is_some_and(|m| m != n) {
                return Err(Refusal::BadRequest);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !trim_ows(value).eq_ignore_ascii_case("chunked") {
                return Err(if value.to_ascii_lowercase().contains("chunked") {
                    Refusal::BadRequest
                } else {
                    Refusal::NotImplemented
                });
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(trim_ows) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host_matches = target
                .authority
                .is_none_or(|a| trim_ows(value).eq_ignore_ascii_case(a));
        }
    }
    // An absolute-form target naming another host than Host is ambiguous:
    // which one routes, which one the upstream believes?
    // Transfer-Encoding in an HTTP/1.0 request: 1.0 has no chunked coding,
    // so peers disagree on the framing (nginx refuses it too).
    if (chunked && (length.is_some() || !http11))
        || hosts > 1
        || (http11 && hosts == 0)
        || !host_matches
    {
        return Err(Refusal::BadRequest);
    }
    let body = match (chunked, length) {
        (true, _) => Body::Chunked(ChunkedScanner::default()),
        (false, Some(0)) | (false, None) => Body::None,
        (false, Some(n)) => Body::Length(n),
    };
    Ok(RequestInfo {
        head_len,
        http11,
        keep_alive: keep_alive && !close,
        is_head,
        body,
    })
}

/// What the proxy needs to know about a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    pub head_len: usize,
    pub status: u16,
    pub body: Body,
    /// The upstream will keep the connection open after this response.
    pub reusable: bool,
    /// Transfer-Encoding is present: any Content-Length must not be
    /// forwarded (RFC 9112 6.3: the coding decides the framing).
    pub drop_length: bool,
}

/// An upstream response the proxy cannot frame (answered with 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadResponse;

/// A chunked body that breaks the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

pub fn response_info(
    resp: &httparse::Response,
    head_len: usize,
    request_was_head: bool,
) -> Result<ResponseInfo, BadResponse> {
    let status = resp.code.ok_or(BadResponse)?;
    let mut reusable = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| BadResponse)?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value).ok_or(BadResponse)?;
            if length.is_some_and(|m| m != n) {
                return Err(BadResponse);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = value
                .to_ascii_lowercase()
                .split(',')
                .next_back()
                .map(trim_ows)
                == Some("chunked");
            if !chunked {
                reusable = false; // close-delimited after an unknown coding
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case("close"))
            {
                reusable = false;
            } else if value
                .split(',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case("keep-alive"))
                && resp.version == Some(0)
            {
                reusable = true;
            }
        }
    }
    if coded && length.is_some() {
        // Both: a smuggling attempt or a broken server; the connection's
        // framing cannot be trusted afterwards (RFC 9112 6.3).
        reusable = false;
    }
    let body = if request_was_head || (100..200).contains(&status) || status == 204 || status == 304
    {
        Body::None
    } else if chunked {
        Body::Chunked(ChunkedScanner::default())
    } else if coded {
        // A coding other than chunked last: the body ends at close, whatever
        // Content-Length says (RFC 9112 6.3).
        reusable = false;
        Body::UntilClose
    } else if let Some(n) = length {
        if n == 0 {
            Body::None
        } else {
            Body::Length(n)
        }
    } else {
        reusable = false;
        Body::UntilClose
    };
    Ok(ResponseInfo {
        head_len,
        status,
        body,
        reusable,
        drop_length: coded,
    })
}

/// Finds where a chunked body ends, byte by byte, without buffering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
}

/// The largest chunk taken (as nginx: what fits an `off_t`); larger sizes,
/// or more hex digits than a u64 holds, are a framing attack or garbage.
const MAX_CHUNK: u64 = i64::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    SizeDigits,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    /// A trailer field's name, before its colon.
    TrailerName,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl ChunkedScanner {
    /// Scans `buf`; returns how many of its bytes belong to the body (all of
    /// them, or up to the end of the body) and whether the body ended.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), BadChunk> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            if self.state == Data {
                let n = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size | SizeDigits, b) if b.is_ascii_hexdigit() => {
                    let d = (b as char).to_digit(16).unwrap() as u64;
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .filter(|&s| s <= MAX_CHUNK)
                        .ok_or(BadChunk)?;
                    SizeDigits
                }
                (SizeDigits, b';') | (SizeDigits, b' ') | (SizeDigits, b'\t') => Extension,
                (SizeDigits | Extension, b'\r') => SizeLf,
                (Extension, b) if b != b'\n' => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => FinalLf,
                // A trailer field line needs a name and a colon.
                (TrailerStart, b) if b != b'\r' && b != b'\n' && b != b':' => TrailerName,
                (TrailerName, b':') => TrailerLine,
                (TrailerName, b) if b != b'\r' && b != b'\n' => TrailerName,
                (TrailerLine, b) if b != b'\r' && b != b'\n' => TrailerLine,
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (FinalLf, b'\n') => {
                    self.state = Done;
                    return Ok((i, true));
                }
                _ => return Err(BadChunk),
            };
        }
        Ok((i, self.state == Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<RequestInfo, Refusal> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Request::new(&mut headers);
        let n = match r.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(Refusal::BadRequest),
        };
        request_info(&r, raw, n)
    }

    #[test]
    fn request_framing() {
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(r.keep_alive && r.http11 && r.body == Body::None);
        let r = req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(r.body, Body::Length(5));
        let r = req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
        assert!(matches!(r.body, Body::Chunked(_)) && !r.keep_alive);
        assert!(!req(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        // `close` wins in any order, also before a 1.0 keep-alive (fuzz find).
        for head in [
            &b"GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        ] {
            assert!(!req(head).unwrap().keep_alive);
        }
    }

    #[test]
    fn request_targets() {
        let t = |s| request_target(s).map(|t| (t.authority, t.rest, t.route_path()));
        assert_eq!(t("/a?b"), Some((None, "/a?b", "/a?b")));
        assert_eq!(t("*"), Some((None, "*", "*")));
        assert_eq!(t("http://h:81/a"), Some((Some("h:81"), "/a", "/a")));
        assert_eq!(t("HTTPS://h"), Some((Some("h"), "", "/")));
        assert_eq!(t("http://h?q"), Some((Some("h"), "?q", "/")));
        for bad in [
            "h:443",
            "a/b",
            "",
            "http://",
            "http://u@h/",
            "ftp://h/",
            "htt\u{e9}p://x",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn never_a_tunnel_nor_a_forward_proxy() {
        assert_eq!(
            req(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(Refusal::MethodNotAllowed.status(), 405);
        // Absolute-form: taken when it names the Host header's authority.
        assert!(req(b"GET http://a/x HTTP/1.1\r\nHost: A\r\n\r\n").is_ok());
        assert!(req(b"GET http://a/x HTTP/1.0\r\n\r\n").is_ok());
        for bad in [
            &b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET a.b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                req(bad),
                Err(Refusal::BadRequest),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let bad: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            // Found by fuzz/ (http_request): what only this parser read as a
            // length or as chunked.
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\xc2\xa0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \xc2\x855\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xc2\x85\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \xc2\xa0chunked\r\n\r\n",
        ];
        for raw in bad {
            assert_eq!(
                req(raw),
                Err(Refusal::BadRequest),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(Refusal::NotImplemented)
        );
        // SP and HTAB around a value are optional whitespace, not part of it.
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t7 \r\n\r\n")
                .unwrap()
                .body,
            Body::Length(7)
        );
        // Equal duplicate lengths are allowed (RFC 9112 6.3).
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .body,
            Body::Length(5)
        );
    }

    fn resp(raw: &[u8], head: bool) -> ResponseInfo {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let n = r.parse(raw).unwrap().unwrap();
        response_info(&r, n, head).unwrap()
    }

    #[test]
    fn response_framing() {
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (Body::Length(3), true));
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).body,
            Body::None
        );
        assert_eq!(
            resp(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).body,
            Body::None
        );
        let r = resp(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (Body::UntilClose, false));
        // An unknown coding last: read to close, Content-Length or not.
        let r = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert_eq!((r.body, r.reusable), (Body::UntilClose, false));
        assert!(
            !resp(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                false
            )
            .reusable
        );
        assert!(!resp(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).reusable);
        assert!(matches!(
            resp(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .body,
            Body::Chunked(_)
        ));
    }

    #[test]
    fn chunked_scanner_finds_the_end_across_any_split() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\n";
        let tail = b"GET /next HTTP/1.1\r\n";
        let mut all = body.to_vec();
        all.extend_from_slice(tail);
        for split in 0..all.len() {
            let mut s = ChunkedScanner::default();
            let (n1, done1) = s.scan(&all[..split]).unwrap();
            let (n, done) = if done1 {
                (n1, true)
            } else {
                let (n2, d2) = s.scan(&all[split..]).unwrap();
                (n1 + n2, d2)
            };
            assert!(done, "split {split}");
            assert_eq!(n, body.len(), "split {split}");
        }
        assert!(ChunkedScanner::default().scan(b"zz\r\n").is_err());
        assert!(ChunkedScanner::default().scan(b"5\r\nhelloXX").is_err());
        assert!(ChunkedScanner::default()
            .scan(b"ffffffffffffffffff\r\n")
            .is_err());
        let mut s = ChunkedScanner::default();
        assert_eq!(s.scan(b"0\r\n\r\n").unwrap(), (5, true));
    }

    #[test]
    fn chunk_sizes_that_overflow_are_refused() {
        for size in [
            &b"ffffffffffffffff\r\n"[..],
            b"8000000000000000\r\n",
            b"10000000000000000\r\n",
            b"fffffffffffffffffffffffffffffffff\r\n",
        ] {
            assert_eq!(
                ChunkedScanner::default().scan(size),
                Err(BadChunk),
                "{}",
                String::from_utf8_lossy(size)
            );
        }
        // The largest size taken, and leading zeros, are fine.
        assert!(ChunkedScanner::default()
            .scan(b"7fffffffffffffff\r\n")
            .is_ok());
        assert_eq!(
            ChunkedScanner::default().scan(b"00000000000000000000003\r\nabc\r\n0\r\n\r\n"),
            Ok((35, true))
        );
    }

    #[test]
    fn trailer_lines_need_a_colon() {
        assert_eq!(
            ChunkedScanner::default().scan(b"0\r\nno colon here\r\n\r\n"),
            Err(BadChunk)
        );
        assert_eq!(
            ChunkedScanner::default().scan(b"0\r\n: no name\r\n\r\n"),
            Err(BadChunk)
        );
        assert_eq!(
            ChunkedScanner::default().scan(b"0\r\nA: 1\r\nB:2\r\n\r\n"),
            Ok((16, true))
        );
    }

    #[test]
    fn http10_request_with_transfer_encoding_is_refused() {
        assert_eq!(
            req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Refusal::BadRequest)
        );
    }

    #[test]
    fn response_with_length_and_coding_drops_length_and_is_not_reused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            let r = resp(raw, false);
            assert!(matches!(r.body, Body::Chunked(_)));
            assert!(r.drop_length && !r.reusable, "{r:?}");
        }
        let r = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
            false,
        );
        assert!(r.body == Body::UntilClose && r.drop_length && !r.reusable);
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false);
        assert!(!r.drop_length && r.reusable);
    }
}
