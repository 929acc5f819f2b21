//! Incremental HTTP/1.1 response parser.
//!
//! The head is parsed with `httparse`; bodies are framed by Content-Length,
//! chunked transfer coding or connection close. Body bytes are counted, never
//! stored, so a parser only keeps a (reused) buffer for the response head.

/// Upper bound for a response head (status line + headers).
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// Why a response could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Invalid status line or header syntax.
    Head,
    /// Head larger than [`MAX_HEAD`].
    HeadTooLarge,
    /// Invalid or conflicting Content-Length.
    ContentLength,
    /// Invalid chunked framing.
    Chunked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the chunk-size line; `ext` once past the hex digits.
    Size {
        value: u64,
        digits: u8,
        ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Fixed(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Parses one response at a time; [`ResponseParser::reset`] readies it for the next
/// one while keeping its buffer.
#[derive(Debug)]
pub struct ResponseParser {
    head: Vec<u8>,
    state: State,
    status: u16,
    body_len: u64,
    close: bool,
    /// Bytes fed since the last reset (to tell an empty reply from a truncated one).
    seen: u64,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    /// A parser waiting for a response head.
    pub fn new() -> Self {
        ResponseParser {
            head: Vec::with_capacity(1024),
            state: State::Head,
            status: 0,
            body_len: 0,
            close: false,
            seen: 0,
        }
    }

    /// Prepares for the next response, keeping the allocated buffer.
    pub fn reset(&mut self) {
        self.head.clear();
        self.state = State::Head;
        self.status = 0;
        self.body_len = 0;
        self.close = false;
        self.seen = 0;
    }

    /// Status code of the (final) response, 0 before the head is parsed.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Decoded body bytes received so far.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// True when the server asked to close the connection after this response.
    pub fn must_close(&self) -> bool {
        self.close
    }

    /// True once the whole response has arrived.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes fed since the last reset.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Feeds received bytes. Returns `Ok(true)` when the response is complete
    /// (bytes after its end are ignored).
    pub fn feed(&mut self, data: &[u8]) -> Result<bool, Malformed> {
        self.seen += data.len() as u64;
        match self.state {
            State::Done => Ok(true),
            State::Head => {
                self.head.extend_from_slice(data);
                self.parse_head()
            }
            _ => self.feed_body(data),
        }
    }

    /// Signals end of stream. Returns `true` when the response is complete
    /// (close-delimited body), `false` when it was truncated.
    pub fn eof(&mut self) -> bool {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                self.close = true;
                true
            }
            _ => false,
        }
    }

    fn parse_head(&mut self) -> Result<bool, Malformed> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            let n = match resp.parse(&self.head) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    return if self.head.len() > MAX_HEAD {
                        Err(Malformed::HeadTooLarge)
                    } else {
                        Ok(false)
                    };
                }
                Err(_) => return Err(Malformed::Head),
            };
            let status = resp.code.ok_or(Malformed::Head)?;
            if (100..200).contains(&status) && status != 101 {
                // Interim response (100 Continue, 103 Early Hints): skip it.
                self.head.drain(..n);
                continue;
            }
            let http10 = resp.version == Some(0);
            let mut content_length: Option<u64> = None;
            let mut chunked = false;
            let mut has_te = false;
            let mut close = http10;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let v = std::str::from_utf8(h.value)
                        .ok()
                        .map(str::trim)
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or(Malformed::ContentLength)?;
                    if content_length.is_some_and(|old| old != v) {
                        return Err(Malformed::ContentLength);
                    }
                    content_length = Some(v);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    has_te = true;
                    // Chunked must be the last coding.
                    chunked = h
                        .value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if h.name.eq_ignore_ascii_case("connection") {
                    for tok in h.value.split(|&b| b == b',') {
                        let tok = tok.trim_ascii();
                        if tok.eq_ignore_ascii_case(b"close") {
                            close = true;
                        } else if tok.eq_ignore_ascii_case(b"keep-alive") && http10 {
                            close = false;
                        }
                    }
                }
            }
            self.status = status;
            self.close = close;
            self.state = if status == 204 || status == 304 || status == 101 {
                State::Done
            } else if has_te {
                if chunked {
                    State::Chunked(Chunk::Size {
                        value: 0,
                        digits: 0,
                        ext: false,
                    })
                } else {
                    State::UntilClose
                }
            } else if let Some(len) = content_length {
                if len == 0 {
                    State::Done
                } else {
                    State::Fixed(len)
                }
            } else {
                State::UntilClose
            };
            if self.state == State::UntilClose {
                self.close = true;
            }
            let head = std::mem::take(&mut self.head);
            let r = if self.state == State::Done {
                Ok(true)
            } else {
                self.feed_body(&head[n..])
            };
            self.head = head;
            self.head.clear();
            return r;
        }
    }

    fn feed_body(&mut self, mut data: &[u8]) -> Result<bool, Malformed> {
        loop {
            match self.state {
                State::Done => return Ok(true),
                State::Head => unreachable!("feed_body before head"),
                State::UntilClose => {
                    self.body_len += data.len() as u64;
                    return Ok(false);
                }
                State::Fixed(rem) => {
                    let take = rem.min(data.len() as u64);
                    self.body_len += take;
                    if take == rem {
                        self.state = State::Done;
                        return Ok(true);
                    }
                    self.state = State::Fixed(rem - take);
                    return Ok(false);
                }
                State::Chunked(Chunk::Data(rem)) => {
                    if data.is_empty() {
                        return Ok(false);
                    }
                    let take = rem.min(data.len() as u64);
                    self.body_len += take;
                    data = &data[take as usize..];
                    self.state = State::Chunked(if take == rem {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(rem - take)
                    });
                }
                State::Chunked(c) => {
                    let Some((&b, rest)) = data.split_first() else {
                        return Ok(false);
                    };
                    data = rest;
                    self.state = match chunk_step(c, b)? {
                        Some(next) => State::Chunked(next),
                        None => State::Done,
                    };
                }
            }
        }
    }
}

/// One byte of chunk framing (everything except chunk data); `None` once the
/// body (including trailers) is complete.
fn chunk_step(c: Chunk, b: u8) -> Result<Option<Chunk>, Malformed> {
    Ok(Some(match c {
        Chunk::Size {
            value,
            digits,
            ext: false,
        } if b.is_ascii_hexdigit() => {
            if digits >= 15 {
                return Err(Malformed::Chunked);
            }
            let d = (b as char).to_digit(16).unwrap_or(0) as u64;
            Chunk::Size {
                value: value * 16 + d,
                digits: digits + 1,
                ext: false,
            }
        }
        Chunk::Size { digits: 0, .. } => return Err(Malformed::Chunked),
        Chunk::Size { value, .. } if b == b'\r' => Chunk::SizeLf { value },
        Chunk::Size { value, .. } if b == b'\n' => after_size(value),
        Chunk::Size { value, digits, ext } => {
            if !ext && !matches!(b, b';' | b' ' | b'\t') {
                return Err(Malformed::Chunked);
            }
            Chunk::Size {
                value,
                digits,
                ext: true,
            }
        }
        Chunk::SizeLf { value } if b == b'\n' => after_size(value),
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataCr if b == b'\n' => Chunk::Size {
            value: 0,
            digits: 0,
            ext: false,
        },
        Chunk::DataLf if b == b'\n' => Chunk::Size {
            value: 0,
            digits: 0,
            ext: false,
        },
        Chunk::TrailerStart if b == b'\r' => Chunk::FinalLf,
        Chunk::TrailerStart if b == b'\n' => return Ok(None),
        Chunk::TrailerStart | Chunk::TrailerLine if b == b'\r' => Chunk::TrailerLf,
        Chunk::TrailerStart | Chunk::TrailerLine if b == b'\n' => Chunk::TrailerStart,
        Chunk::TrailerStart | Chunk::TrailerLine => Chunk::TrailerLine,
        Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
        Chunk::FinalLf if b == b'\n' => return Ok(None),
        _ => return Err(Malformed::Chunked),
    }))
}

fn after_size(value: u64) -> Chunk {
    if value == 0 {
        Chunk::TrailerStart
    } else {
        Chunk::Data(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `resp` split at every possible point and byte by byte.
    fn parse_all(resp: &[u8]) -> Vec<(Result<bool, Malformed>, u16, u64)> {
        let mut out = Vec::new();
        for split in 0..=resp.len() {
            let mut p = ResponseParser::new();
            let mut r = p.feed(&resp[..split]);
            if r == Ok(false) {
                r = p.feed(&resp[split..]);
            }
            out.push((r, p.status(), p.body_len()));
        }
        let mut p = ResponseParser::new();
        let mut r = Ok(false);
        for b in resp {
            r = p.feed(std::slice::from_ref(b));
            if r != Ok(false) {
                break;
            }
        }
        out.push((r, p.status(), p.body_len()));
        out
    }

    #[test]
    fn content_length() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for r in parse_all(resp) {
            assert_eq!(r, (Ok(true), 200, 5));
        }
        let mut p = ResponseParser::new();
        assert_eq!(p.feed(&resp[..resp.len() - 1]), Ok(false));
        assert!(!p.eof(), "truncated body must not complete");
    }

    #[test]
    fn chunked() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: y\r\n\r\n";
        for r in parse_all(resp) {
            assert_eq!(r, (Ok(true), 200, 31));
        }
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for r in parse_all(resp) {
            assert_eq!(r, (Ok(true), 200, 0));
        }
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(Malformed::Chunked)
        );
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
            Ok(false)
        );
        assert!(!p.eof());
    }

    #[test]
    fn close_delimited_and_no_body() {
        let mut p = ResponseParser::new();
        assert_eq!(p.feed(b"HTTP/1.0 200 OK\r\n\r\nabc"), Ok(false));
        assert_eq!(p.feed(b"def"), Ok(false));
        assert!(p.eof());
        assert_eq!(p.body_len(), 6);
        assert!(p.must_close());

        for r in parse_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n") {
            assert_eq!(r, (Ok(true), 204, 0));
        }
        for r in parse_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno") {
            assert_eq!(r, (Ok(true), 500, 2));
        }
    }

    #[test]
    fn malformed_and_reuse() {
        let mut p = ResponseParser::new();
        assert_eq!(p.feed(b"HELLO\r\n\r\n"), Err(Malformed::Head));
        p.reset();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(Malformed::ContentLength)
        );
        p.reset();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(Malformed::ContentLength)
        );
        p.reset();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"),
            Ok(true)
        );
        assert!(!p.must_close());
        p.reset();
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(p.feed(b"HTTP/1.1 200 OK\r\nX: "), Ok(false));
        assert_eq!(p.feed(&big), Err(Malformed::HeadTooLarge));
    }
}
