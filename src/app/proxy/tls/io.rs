//! The socket a session reads and writes: a smoltcp socket as it is, or
//! the plaintext face of a TLS connection over one. It offers the few
//! socket calls the session makes, with the same meaning, so the session's
//! HTTP and relay logic is the same for `http` and `https`.

use smoltcp::socket::tcp::{RecvError, SendError, Socket, State};

use super::conn::TlsConn;

pub struct Io<'s, 'a> {
    sock: &'s mut Socket<'a>,
    tls: Option<&'s mut TlsConn>,
}

impl<'s, 'a> Io<'s, 'a> {
    pub fn new(sock: &'s mut Socket<'a>, tls: Option<&'s mut TlsConn>) -> Self {
        Io { sock, tls }
    }

    pub fn plain(sock: &'s mut Socket<'a>) -> Self {
        Io { sock, tls: None }
    }

    /// The TCP state, as the session reads it: a TLS stream that ended
    /// (close_notify, failure) reads as the peer's FIN.
    pub fn state(&self) -> State {
        let s = self.sock.state();
        match &self.tls {
            Some(t) if t.at_eof() && s == State::Established => State::CloseWait,
            Some(t) if t.at_eof() && s == State::FinWait1 => State::Closing,
            _ => s,
        }
    }

    pub fn is_open(&self) -> bool {
        self.sock.is_open()
    }

    pub fn may_send(&self) -> bool {
        match &self.tls {
            Some(t) => t.may_send(self.sock),
            None => self.sock.may_send(),
        }
    }

    pub fn may_recv(&self) -> bool {
        match &self.tls {
            Some(t) => t.may_recv(),
            None => self.sock.may_recv(),
        }
    }

    pub fn recv_queue(&self) -> usize {
        match &self.tls {
            Some(t) => t.recv_queue(),
            None => self.sock.recv_queue(),
        }
    }

    pub fn recv_capacity(&self) -> usize {
        match &self.tls {
            Some(t) => t.recv_capacity(),
            None => self.sock.recv_capacity(),
        }
    }

    pub fn send_queue(&self) -> usize {
        match &self.tls {
            Some(t) => self.sock.send_queue() + usize::from(t.pending()),
            None => self.sock.send_queue(),
        }
    }

    pub fn send_capacity(&self) -> usize {
        match &self.tls {
            Some(t) => t.send_capacity(self.sock),
            None => self.sock.send_capacity(),
        }
    }

    /// Bytes the session may write now.
    pub fn send_room(&self) -> usize {
        match &self.tls {
            Some(t) => t.send_room(self.sock),
            None => crate::app::send_room(self.sock),
        }
    }

    pub fn peek(&mut self, size: usize) -> Result<&[u8], RecvError> {
        match &mut self.tls {
            Some(t) => Ok(t.peek(size)),
            None => self.sock.peek(size),
        }
    }

    pub fn peek_slice(&mut self, data: &mut [u8]) -> Result<usize, RecvError> {
        match &mut self.tls {
            Some(t) => {
                let b = t.peek(data.len());
                data[..b.len()].copy_from_slice(b);
                Ok(b.len())
            }
            None => self.sock.peek_slice(data),
        }
    }

    /// As `Socket::recv`; a TLS stream's plaintext is contiguous.
    pub fn recv<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Result<R, RecvError> {
        match &mut self.tls {
            Some(t) => {
                let (n, r) = f(t.plain_mut());
                t.consume(n);
                Ok(r)
            }
            None => self.sock.recv(f),
        }
    }

    pub fn send_slice(&mut self, data: &[u8]) -> Result<usize, SendError> {
        match &mut self.tls {
            Some(t) => Ok(t.send(self.sock, data)),
            None => self.sock.send_slice(data),
        }
    }

    pub fn close(&mut self) {
        match &mut self.tls {
            Some(t) => t.close(self.sock),
            None => self.sock.close(),
        }
    }

    pub fn abort(&mut self) {
        self.sock.abort();
    }

    /// The smoltcp socket underneath (timeouts and other TCP settings).
    pub fn socket(&mut self) -> &mut Socket<'a> {
        self.sock
    }
}

/// Dequeues up to `n` received bytes; how many went.
pub fn dequeue(io: &mut Io<'_, '_>, n: usize) -> usize {
    let mut done = 0;
    while done < n {
        match io.recv(|b| {
            let k = b.len().min(n - done);
            (k, k)
        }) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    done
}
