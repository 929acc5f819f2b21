//! What one finished exchange looked like: an HTTP request (proxied or
//! answered by the static responder) or one `tcp` connection. The
//! applications fill one `Outcome` when an exchange ends; the worker hands
//! it to the request metrics (`stats`) and the access log (`access_log`).
//! Plain `Copy` data with fixed-size text fields, so that building and
//! passing one never allocates on the worker.

use std::net::Ipv4Addr;

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
    pub client: Option<(Ipv4Addr, u16)>,
    pub method: Text<METHOD_MAX>,
    pub host: Text<HOST_MAX>,
    pub path: Text<PATH_MAX>,
    /// Status sent to the client; 0 for `tcp` or when the connection was cut.
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
    pub request_id: u64,
    /// Why it failed; `None` for a clean end.
    pub cause: Option<Cause>,
}
