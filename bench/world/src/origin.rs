//! The origin's side of one connection: read requests (checking upload
//! bodies), answer each with the pre-built head and a pattern body, close
//! when the client asked to.

use smoltcp::socket::tcp;

use crate::http::{build_response_head, fill_body, Request, RequestReader};

/// The response every request gets, built once.
pub struct Reply {
    head_keep: Vec<u8>,
    head_close: Vec<u8>,
    pub body_len: u64,
}

impl Reply {
    pub fn new(body_len: u64) -> Reply {
        Reply {
            head_keep: build_response_head(body_len, false),
            head_close: build_response_head(body_len, true),
            body_len,
        }
    }

    fn head(&self, close: bool) -> &[u8] {
        if close {
            &self.head_close
        } else {
            &self.head_keep
        }
    }
}

/// What the world does with the connection after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait for the socket to be readable or writable again.
    Wait,
    /// Every answer is queued and the client is done: close (FIN after the data).
    Close,
    /// Not a request this origin serves: reset.
    Abort,
}

/// One accepted connection.
#[derive(Default)]
pub struct Served {
    reader: RequestReader,
    /// Response bytes queued so far and whether to close after it.
    writing: Option<(u64, bool)>,
    /// Requests answered on this connection.
    pub answered: u64,
}

impl Served {
    /// Ready for a fresh connection.
    pub fn reset(&mut self) {
        self.reader.reset();
        self.writing = None;
        self.answered = 0;
    }

    /// Answers what can be answered now.
    pub fn step(&mut self, sock: &mut tcp::Socket, reply: &Reply) -> Next {
        loop {
            if let Some((done, close)) = &mut self.writing {
                let head = reply.head(*close);
                let total = head.len() as u64 + reply.body_len;
                while *done < total && sock.can_send() {
                    let at = *done;
                    let sent = sock.send(|buf| {
                        let n = (total - at).min(buf.len() as u64) as usize;
                        write_response(head, at, &mut buf[..n]);
                        (n, n)
                    });
                    match sent {
                        Ok(0) | Err(_) => break,
                        Ok(n) => *done += n as u64,
                    }
                }
                if *done < total {
                    return Next::Wait;
                }
                let close = *close;
                self.writing = None;
                self.answered += 1;
                if close {
                    return Next::Close;
                }
            }
            if !sock.can_recv() {
                // The client closed its side with nothing left to answer.
                return if sock.state() == tcp::State::CloseWait {
                    Next::Close
                } else {
                    Next::Wait
                };
            }
            let reader = &mut self.reader;
            match sock.recv(|buf| reader.feed(buf)) {
                Ok(Some(Request::Complete { close })) => {
                    self.reader.reset();
                    self.writing = Some((0, close));
                }
                Ok(Some(Request::Bad)) | Err(_) => return Next::Abort,
                Ok(None) => {}
            }
        }
    }
}

/// Response bytes `at..at + buf.len()`: the head's, then the body's.
fn write_response(head: &[u8], at: u64, buf: &mut [u8]) {
    let mut filled = 0;
    if (at as usize) < head.len() {
        let from = &head[at as usize..];
        filled = from.len().min(buf.len());
        buf[..filled].copy_from_slice(&from[..filled]);
    }
    let body_at = (at + filled as u64).saturating_sub(head.len() as u64);
    fill_body(body_at, &mut buf[filled..]);
}
