//! What one finished exchange looked like: an HTTP request (proxied or
//! answered by the static responder) or one `tcp` connection. The
//! applications fill one `Outcome` when an exchange ends; the worker hands
//! it to the request metrics (`stats`) and the access log (`access_log`).
//! Plain `Copy` data with fixed-size text fields, so that building and
//! passing one never allocates on the worker.

use std::net::IpAddr;

use super::proxy::session::Cause;

/// Longest host and path kept (longer ones are cut; `truncated` says so).
pub const HOST_MAX: usize = 64;
pub const PATH_MAX: usize = 192;
pub const METHOD_MAX: usize = 16;

/// Bytes of a text field, cut to fit.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    len: u8,
    truncated: bool,
    bytes: [u8; N],
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text {
            len: 0,
            truncated: false,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> Text<N> {
    pub fn set(&mut self, src: &[u8]) {
        let n = src.len().min(N).min(u8::MAX as usize);
        self.bytes[..n].copy_from_slice(&src[..n]);
        self.len = n as u8;
        self.truncated = n < src.len();
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Which kind of exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Http,
    Tcp,
}

/// One finished exchange. Times are microseconds of the worker's clock
/// (`now_us`); `start_us` is when the request's first byte (or the TCP
/// connection) was accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub kind: Kind,
    /// Index of the listener in the worker's listener list.
    pub listener: u16,
    pub client: Option<(IpAddr, u16)>,
    pub method: Text<METHOD_MAX>,
    pub host: Text<HOST_MAX>,
    pub path: Text<PATH_MAX>,
    /// Status sent to the client; 0 for `tcp`, or when the connection was
    /// cut before a response head went out.
    pub status: u16,
    /// Bytes read from the client / written to the client.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// (group, server) the exchange went to, if any.
    pub upstream: Option<(u16, u16)>,
    pub start_us: u64,
    /// From start to the upstream connection being usable (0 if pooled or none).
    pub connect_us: Option<u64>,
    /// From start to the upstream's response head.
    pub response_us: Option<u64>,
    /// From start to the end of the exchange.
    pub total_us: u64,
    /// Unique per process: the worker's index in the top 16 bits, its count below.
    pub request_id: u64,
    /// Why it failed; `None` for a clean end.
    pub cause: Option<Cause>,
    /// The client's TLS (version, cipher suite), for `https`/`tls` listeners.
    pub tls: Option<(&'static str, &'static str)>,
}

impl Outcome {
    /// The request line's method and target and the request's host.
    pub fn set_request(&mut self, method: &[u8], host: Option<&[u8]>, path: &[u8]) {
        self.method.set(method);
        self.host.set(host.unwrap_or(&[]));
        self.path.set(path);
    }
}

/// Finished exchanges waiting for the worker: a buffer sized once, that
/// never grows (an exchange past its capacity is counted in `lost`, not
/// allocated for).
pub struct Outcomes {
    buf: Vec<Outcome>,
    lost: u64,
}

impl Outcomes {
    /// More than one event finishes: a proxy call ends at most one exchange
    /// per client, and the worker drains after every event; only a static
    /// client's pipelined requests come many at once.
    pub const CAPACITY: usize = 256;

    pub fn new() -> Outcomes {
        Outcomes {
            buf: Vec::with_capacity(Self::CAPACITY),
            lost: 0,
        }
    }

    pub fn push(&mut self, o: Outcome) {
        if self.buf.len() < Self::CAPACITY {
            self.buf.push(o);
        } else {
            self.lost += 1;
        }
    }

    /// Exchanges that found the buffer full since the last call.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn get(&self, i: usize) -> Outcome {
        self.buf[i]
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

impl Default for Outcomes {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the static responder records the requests it answers: `rec`
/// starts as the connection's (listener, client) and takes each request's
/// facts before `emit`.
pub struct Sink<'a> {
    pub rec: Outcome,
    pub out: &'a mut Outcomes,
}

impl Sink<'_> {
    /// The request that started at `start_us` was answered (`status`,
    /// `bytes_out` bytes) at `now_us`; `cause` when refused.
    pub fn emit(
        &mut self,
        start_us: u64,
        now_us: u64,
        status: u16,
        bytes_out: usize,
        cause: Option<Cause>,
    ) {
        let mut o = self.rec;
        o.start_us = start_us;
        o.total_us = now_us.saturating_sub(start_us);
        o.status = status;
        o.bytes_out = bytes_out as u64;
        o.cause = cause;
        self.out.push(o);
        self.rec = Outcome {
            kind: self.rec.kind,
            listener: self.rec.listener,
            client: self.rec.client,
            ..Outcome::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_counts_what_it_loses() {
        let mut b = Outcomes::new();
        for _ in 0..Outcomes::CAPACITY + 3 {
            b.push(Outcome::default());
        }
        assert_eq!(
            (b.len(), b.take_lost(), b.take_lost()),
            (Outcomes::CAPACITY, 3, 0)
        );
        b.clear();
        b.push(Outcome::default());
        assert_eq!((b.len(), b.take_lost()), (1, 0));
    }
}
