//! Why an exchange failed ([`Cause`], [`Failure`]) and the error pages the
//! proxy answers a client with.

/// Why an exchange failed (for the worker's per-cause error counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The upstream refused the connection (or the connect failed).
    Refused,
    /// The upstream connection was reset or lost while attached.
    Reset,
    /// An upstream (or the client's head) took too long.
    Timeout,
    /// No server of the group was up.
    NoServer,
    /// No local port or flow slot was free for an upstream connection.
    NoSlot,
    /// The upstream sent something the proxy cannot frame or relay.
    BadResponse,
    /// The client's request was refused (any 4xx/501 we answered).
    BadRequest,
    /// The client went away mid-request.
    ClientAbort,
    /// The client was over its request rate (429).
    RateLimited,
    /// TLS to the upstream failed (its certificate did not verify, or the handshake).
    Tls,
}

impl Cause {
    pub const ALL: [Cause; 10] = [
        Cause::Refused,
        Cause::Reset,
        Cause::Timeout,
        Cause::NoServer,
        Cause::NoSlot,
        Cause::BadResponse,
        Cause::BadRequest,
        Cause::ClientAbort,
        Cause::RateLimited,
        Cause::Tls,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::NoServer => "no_server",
            Cause::NoSlot => "no_slot",
            Cause::BadResponse => "bad_response",
            Cause::BadRequest => "bad_request",
            Cause::ClientAbort => "client_abort",
            Cause::RateLimited => "rate_limited",
            Cause::Tls => "tls",
        }
    }
}

/// One failed exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The 4xx/5xx answered to the client; `None` when the connection was cut.
    pub status: Option<u16>,
    pub cause: Cause,
}

/// The complete response (head and body) for an error `status`; 502 for
/// any status without its own page.
pub(super) fn error_page(status: u16) -> &'static [u8] {
    match status {
        400 => b"HTTP/1.1 400 Bad Request\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\nServer: zproxy\r\nAllow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\nContent-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\nCONNECT is not allowed\n",
        404 => b"HTTP/1.1 404 Not Found\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nno route\n\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 23\r\nConnection: close\r\n\r\nrequest head too large\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\ntransfer coding unsupported\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nno healthy upstream\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nrequest head timeout",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\nupstream timeout\n",
        _ => b"HTTP/1.1 502 Bad Gateway\r\nServer: zproxy\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\nupstream error\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_have_correct_lengths() {
        for status in [400, 404, 405, 408, 431, 501, 502, 503, 504] {
            let page = error_page(status);
            let text = std::str::from_utf8(page).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "status {status}");
        }
    }
}
