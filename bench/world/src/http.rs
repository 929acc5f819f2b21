//! The HTTP both sides speak, without allocating per request: requests and
//! response heads built once, bodies from a fixed pattern, and incremental
//! readers that keep a head in a fixed buffer and count (and check) bodies.

use zproxy_bench::FailureKind;

/// Longest head either reader takes (ZProxy adds a few headers to requests).
pub const HEAD_MAX: usize = 2048;
/// Headers parsed per head.
const HEADERS_MAX: usize = 32;
/// Body byte `i` is `PATTERN[i % PERIOD]` (a period that no shift of a
/// 1-byte-off relay or a repeated segment can match by chance).
pub const PERIOD: usize = 61;
/// The pattern, repeated so that any `PERIOD`-aligned window of up to
/// `PATTERN.len() - PERIOD` bytes is one slice.
static PATTERN: [u8; 4096] = {
    let mut p = [0u8; 4096];
    let mut i = 0;
    while i < p.len() {
        p[i] = b'A' + (i % PERIOD) as u8;
        i += 1;
    }
    p
};
/// Longest body slice taken from `PATTERN` at once.
const CHUNK: usize = PATTERN.len() - PERIOD;

/// The body bytes at `offset..offset + len` (`len` at most `CHUNK`).
fn pattern_at(offset: u64, len: usize) -> &'static [u8] {
    let start = (offset % PERIOD as u64) as usize;
    &PATTERN[start..start + len.min(CHUNK)]
}

/// Copies body bytes from `offset` into `buf`; returns how many (all of `buf`).
pub fn fill_body(offset: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let src = pattern_at(offset + done as u64, buf.len() - done);
        buf[done..done + src.len()].copy_from_slice(src);
        done += src.len();
    }
    done
}

/// True when `data` is exactly the body bytes at `offset..`.
pub fn body_matches(offset: u64, data: &[u8]) -> bool {
    let mut done = 0;
    while done < data.len() {
        let want = pattern_at(offset + done as u64, data.len() - done);
        if data[done..done + want.len()] != *want {
            return false;
        }
        done += want.len();
    }
    true
}

/// The request a generator sends, head and `body_len` pattern bytes, built once.
pub fn build_request(host: &str, path: &str, keep_alive: bool, body_len: usize) -> Vec<u8> {
    let method = if body_len > 0 { "POST" } else { "GET" };
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: zproxy-world\r\n");
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    if body_len > 0 {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    let at = req.len();
    req.resize(at + body_len, 0);
    fill_body(0, &mut req[at..]);
    req
}

/// The head of the origin's response with a `body_len`-byte body.
pub fn build_response_head(body_len: u64, close: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n"
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A head collected in a fixed buffer until its blank line.
struct Head {
    buf: Box<[u8; HEAD_MAX]>,
    len: usize,
}

impl Head {
    fn new() -> Head {
        Head {
            buf: Box::new([0; HEAD_MAX]),
            len: 0,
        }
    }

    /// Takes bytes of `data` up to the end of the head: `Ok(Some(n))` when
    /// the head ended after `n` bytes of `data`, `Ok(None)` when all were
    /// taken and it goes on, `Err` when it is longer than `HEAD_MAX`.
    fn take(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        let old = self.len;
        let n = data.len().min(HEAD_MAX - old);
        self.buf[old..old + n].copy_from_slice(&data[..n]);
        self.len += n;
        let from = old.saturating_sub(3);
        if let Some(i) = self.buf[from..self.len]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
        {
            let end = from + i + 4;
            self.len = end;
            return Ok(Some(end - old));
        }
        if self.len == HEAD_MAX {
            return Err(());
        }
        Ok(None)
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn content_length(headers: &[httparse::Header]) -> Result<Option<u64>, ()> {
    let mut len = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(()); // the origin never sends chunked; a proxy must not make it so
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ())?;
            len = Some(v.trim().parse::<u64>().map_err(|_| ())?);
        }
    }
    Ok(len)
}

fn wants_close(headers: &[httparse::Header]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Complete, 2xx, the expected size and (when checked) the expected bytes.
    Ok {
        close: bool,
    },
    Failed(FailureKind),
}

enum ReadState {
    Head,
    Body(Body),
    Done,
}

/// A body being read: what is left of it, where it is in the pattern, and
/// whether the connection closes after it.
struct Body {
    left: u64,
    offset: u64,
    close: bool,
}

/// What a body took of the bytes it was given.
enum Took {
    /// `n` bytes (all it could), more to come.
    More(usize),
    /// `n` bytes, the last.
    Last(usize),
    /// `n` bytes that were not the pattern.
    Wrong(usize),
}

impl Body {
    fn state(len: u64, close: bool) -> ReadState {
        ReadState::Body(Body {
            left: len,
            offset: 0,
            close,
        })
    }

    fn take(&mut self, data: &[u8], verify: bool) -> Took {
        let n = data
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if verify && !body_matches(self.offset, &data[..n]) {
            return Took::Wrong(n);
        }
        self.left -= n as u64;
        self.offset += n as u64;
        if self.left == 0 {
            Took::Last(n)
        } else {
            Took::More(n)
        }
    }
}

/// Reads one response at a time (the generator's side).
pub struct ResponseReader {
    head: Head,
    state: ReadState,
    expect_len: u64,
    verify: bool,
    /// Bytes of the current response taken so far.
    pub received: u64,
}

impl ResponseReader {
    /// A reader for responses whose body must be `expect_len` bytes (checked
    /// byte by byte against the pattern when `verify`).
    pub fn new(expect_len: u64, verify: bool) -> ResponseReader {
        ResponseReader {
            head: Head::new(),
            state: ReadState::Head,
            expect_len,
            verify,
            received: 0,
        }
    }

    /// Ready for the next response.
    pub fn reset(&mut self) {
        self.head.len = 0;
        self.state = ReadState::Head;
        self.received = 0;
    }

    /// Takes bytes of `data`: how many it used, and the outcome once the
    /// response is complete or broken (bytes past its end are left).
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Response>) {
        let mut used = 0;
        if let ReadState::Head = self.state {
            match self.head.take(data) {
                Err(()) => return self.fail(data.len(), FailureKind::Malformed),
                Ok(None) => {
                    self.received += data.len() as u64;
                    return (data.len(), None);
                }
                Ok(Some(n)) => {
                    used = n;
                    if let Err(kind) = self.parse_head() {
                        return self.fail(used, kind);
                    }
                }
            }
        }
        if let ReadState::Body(body) = &mut self.state {
            let close = body.close;
            return match body.take(&data[used..], self.verify) {
                Took::Wrong(n) => self.fail(used + n, FailureKind::SizeMismatch),
                Took::More(n) => {
                    self.received += (used + n) as u64;
                    (used + n, None)
                }
                Took::Last(n) => {
                    self.received += (used + n) as u64;
                    self.state = ReadState::Done;
                    (used + n, Some(Response::Ok { close }))
                }
            };
        }
        (used, None)
    }

    /// The peer closed: a response still being read is truncated.
    pub fn eof(&self) -> Option<Response> {
        match self.state {
            ReadState::Done => None,
            _ => Some(Response::Failed(FailureKind::Truncated)),
        }
    }

    fn parse_head(&mut self) -> Result<(), FailureKind> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(self.head.bytes()) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(FailureKind::Malformed),
        }
        let code = res.code.unwrap_or(0);
        if !(200..300).contains(&code) {
            return Err(FailureKind::Status);
        }
        let len = content_length(res.headers)
            .map_err(|_| FailureKind::Malformed)?
            .ok_or(FailureKind::Malformed)?;
        if len != self.expect_len {
            return Err(FailureKind::SizeMismatch);
        }
        let close = wants_close(res.headers) || res.version == Some(0);
        // An empty body completes at once (the body step sees 0 left).
        self.state = Body::state(len, close);
        Ok(())
    }

    fn fail(&mut self, used: usize, kind: FailureKind) -> (usize, Option<Response>) {
        self.received += used as u64;
        self.state = ReadState::Done;
        (used, Some(Response::Failed(kind)))
    }
}

/// What the origin makes of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Complete (body read and checked): answer it, then close or read the next.
    Complete { close: bool },
    /// Not HTTP, too long, or a body that is not the pattern: close.
    Bad,
}

/// Reads one request at a time (the origin's side).
pub struct RequestReader {
    head: Head,
    state: ReadState,
}

impl Default for RequestReader {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestReader {
    pub fn new() -> RequestReader {
        RequestReader {
            head: Head::new(),
            state: ReadState::Head,
        }
    }

    pub fn reset(&mut self) {
        self.head.len = 0;
        self.state = ReadState::Head;
    }

    /// Takes bytes of `data`: how many it used, and the request once complete.
    pub fn feed(&mut self, data: &[u8]) -> (usize, Option<Request>) {
        let mut used = 0;
        if let ReadState::Head = self.state {
            match self.head.take(data) {
                Err(()) => return (data.len(), Some(Request::Bad)),
                Ok(None) => return (data.len(), None),
                Ok(Some(n)) => {
                    used = n;
                    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
                    let mut req = httparse::Request::new(&mut headers);
                    if !matches!(
                        req.parse(self.head.bytes()),
                        Ok(httparse::Status::Complete(_))
                    ) {
                        return (used, Some(Request::Bad));
                    }
                    let Ok(len) = content_length(req.headers) else {
                        return (used, Some(Request::Bad));
                    };
                    let close = wants_close(req.headers) || req.version == Some(0);
                    self.state = Body::state(len.unwrap_or(0), close);
                }
            }
        }
        if let ReadState::Body(body) = &mut self.state {
            let close = body.close;
            return match body.take(&data[used..], true) {
                Took::Wrong(n) => (used + n, Some(Request::Bad)),
                Took::More(n) => (used + n, None),
                Took::Last(n) => {
                    self.state = ReadState::Done;
                    (used + n, Some(Request::Complete { close }))
                }
            };
        }
        (used, None)
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
