//! The static responder: answers every HTTP/1.x request with one fixed
//! response. Request heads are parsed in place from the socket's receive
//! buffer (copied once into the worker's scratch for `httparse`); bodies are
//! discarded. Keep-alive and pipelining work; anything malformed gets a 400
//! and the connection is closed.

use smoltcp::socket::tcp;

use super::{dequeue, send_room};
use crate::config::StaticResponse;

/// The prebuilt responses of one listener.
pub struct Responder {
    keep_alive: Box<[u8]>,
    close: Box<[u8]>,
    bad_request: Box<[u8]>,
    too_large: Box<[u8]>,
}

/// Per-connection state.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResponderState {
    /// Request body bytes still to skip.
    discard: u64,
    /// A response with `Connection: close` went out; nothing more is read.
    closing: bool,
    /// At least one request was answered on this connection.
    served: bool,
    /// The appliance is shutting down: no more keep-alive.
    draining: bool,
}

/// What one run of the responder did (for counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub requests: u32,
    pub bad_requests: u32,
}

const MAX_HEADERS: usize = 64;

impl Responder {
    pub fn new(cfg: &StaticResponse) -> Self {
        let build = |status: u16, reason: &str, ctype: &str, body: &str, close: bool| {
            format!(
                "HTTP/1.1 {status} {reason}\r\nServer: zproxy\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
                body.len(),
                if close { "close" } else { "keep-alive" }
            )
            .into_bytes()
            .into_boxed_slice()
        };
        let reason = reason_phrase(cfg.status);
        Self {
            keep_alive: build(cfg.status, reason, &cfg.content_type, &cfg.body, false),
            close: build(cfg.status, reason, &cfg.content_type, &cfg.body, true),
            bad_request: build(400, "Bad Request", "text/plain", "bad request\n", true),
            too_large: build(
                431,
                "Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
                true,
            ),
        }
    }

    /// Serves what the socket holds. `scratch` must be at least as large as
    /// the socket's receive buffer.
    pub fn serve(
        &self,
        st: &mut ResponderState,
        sock: &mut tcp::Socket,
        scratch: &mut [u8],
    ) -> Served {
        let mut served = Served::default();
        loop {
            if st.closing {
                return served;
            }
            if st.discard > 0 {
                st.discard -=
                    dequeue(sock, usize::try_from(st.discard).unwrap_or(usize::MAX)) as u64;
                if st.discard > 0 {
                    break;
                }
            }
            let queued = match sock.peek_slice(scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let head_len = match req.parse(&scratch[..queued]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if queued >= sock.recv_capacity() {
                        self.fail(st, sock, &self.too_large, &mut served);
                    }
                    break;
                }
                Err(httparse::Error::TooManyHeaders) => {
                    self.fail(st, sock, &self.too_large, &mut served);
                    break;
                }
                Err(_) => {
                    self.fail(st, sock, &self.bad_request, &mut served);
                    break;
                }
            };
            let Some(framing) = framing(&req) else {
                self.fail(st, sock, &self.bad_request, &mut served);
                break;
            };
            let keep_alive = framing.keep_alive && !st.draining;
            let response: &[u8] = if keep_alive {
                &self.keep_alive
            } else {
                &self.close
            };
            if send_room(sock) < response.len() {
                // Wait for the peer to ACK; the head stays queued until then.
                break;
            }
            dequeue(sock, head_len);
            st.discard = framing.body_len;
            let _ = sock.send_slice(response);
            served.requests += 1;
            st.served = true;
            if !keep_alive {
                st.closing = true;
                sock.close();
            }
        }
        // The client finished sending and we answered everything: close our side.
        if !sock.may_recv() && sock.may_send() && !st.closing {
            st.closing = true;
            sock.close();
        }
        served
    }

    /// Graceful shutdown: close a connection that waits for its next request.
    /// A connection that has not sent its first request yet gets it
    /// answered (with `Connection: close`): it may be on the wire.
    pub fn drain(&self, st: &mut ResponderState, sock: &mut tcp::Socket) {
        st.draining = true;
        if !st.closing && sock.recv_queue() == 0 && st.served {
            st.closing = true;
            sock.close();
        }
    }

    fn fail(
        &self,
        st: &mut ResponderState,
        sock: &mut tcp::Socket,
        response: &[u8],
        served: &mut Served,
    ) {
        if send_room(sock) >= response.len() {
            let _ = sock.send_slice(response);
        }
        served.bad_requests += 1;
        st.closing = true;
        sock.close();
    }
}

struct Framing {
    keep_alive: bool,
    body_len: u64,
}

/// Keep-alive per HTTP/1.0 and 1.1 defaults, and the request body length.
/// `None` for what we refuse to guess about (chunked, conflicting lengths).
fn framing(req: &httparse::Request) -> Option<Framing> {
    let mut keep_alive = req.version == Some(1);
    let mut body_len: Option<u64> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in std::str::from_utf8(h.value).ok()?.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && req.version == Some(0) {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n: u64 = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
            if body_len.is_some_and(|m| m != n) {
                return None;
            }
            body_len = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked request bodies are not for a static responder.
            return None;
        }
    }
    Some(Framing {
        keep_alive,
        body_len: body_len.unwrap_or(0),
    })
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Option<Framing> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(raw).unwrap().is_complete());
        framing(&req)
    }

    #[test]
    fn keep_alive_defaults_and_overrides() {
        assert!(
            parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(
            parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            !parse(b"GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn body_lengths_and_refusals() {
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
                .unwrap()
                .body_len,
            12
        );
        assert!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").is_none()
        );
        assert!(parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_none());
        assert!(parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_none());
    }

    #[test]
    fn responses_are_well_formed() {
        let r = Responder::new(&StaticResponse {
            status: 200,
            body: "hi\n".into(),
            content_type: "text/plain".into(),
        });
        let text = std::str::from_utf8(&r.close).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 3\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nhi\n"));
    }
}
