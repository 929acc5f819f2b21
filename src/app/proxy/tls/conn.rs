//! One TLS connection over a smoltcp socket: ciphertext in from the
//! socket's receive ring, plaintext out of a bounded buffer the session
//! reads like a socket, plaintext in from the session, records out into
//! the socket's send ring (see the module doc for the API and the copies).

use std::io::{self, Read, Write};

use rustls::Connection;
use smoltcp::socket::tcp::Socket;

use crate::app::send_room;

/// Bytes a record adds to its plaintext at most (header 5, AEAD tag 16,
/// TLS 1.3 content type 1, TLS 1.2 explicit nonce 8), rounded up.
const RECORD_OVERHEAD: usize = 32;
/// The largest plaintext of one record.
const MAX_FRAGMENT: usize = 16_384;

/// Why a TLS connection ended badly (counted by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The peer's bytes were not TLS or broke the protocol (we sent an alert).
    Protocol,
    /// The peer sent a fatal alert.
    Alert,
    /// The peer's certificate did not verify (upstream TLS).
    Certificate,
    /// The handshake did not finish in time.
    HandshakeTimeout,
}

/// What one `pump` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pumped {
    /// Done what the socket allows.
    Done,
    /// A handshake step waits for the next poll iteration (budget spent).
    Deferred,
}

pub struct TlsConn {
    conn: Connection,
    /// Decrypted bytes the session has not taken yet: `plain[start..end]`.
    plain: Box<[u8]>,
    start: usize,
    end: usize,
    /// Plaintext that rustls holds and `plain` had no room for.
    held: usize,
    /// Plaintext the session wrote, sealed into records at the end of the
    /// engine's call (`seal`) or when full: a response head written line
    /// by line goes out in one record, not one per line.
    stage: Vec<u8>,
    /// No more plaintext will come (close_notify, TCP EOF, or a failure).
    eof: bool,
    /// The peer's close_notify was read: `eof` once rustls' plaintext is taken.
    peer_closed: bool,
    /// The session closed: the FIN goes once the records before it are out.
    closing: bool,
    /// A failure not yet taken by the engine (`take_failure`).
    failure: Option<TlsFailure>,
    /// The handshake must finish by then (µs; 0: none).
    pub deadline_us: u64,
    /// The handshake's completion was reported (`take_established`).
    established: bool,
}

impl TlsConn {
    /// `plain_len`: the plaintext buffer (bounded: a slow reader stops the
    /// reading of ciphertext, and the TCP window closes).
    pub fn new(conn: Connection, plain_len: usize, deadline_us: u64) -> TlsConn {
        TlsConn {
            conn,
            plain: vec![0; plain_len].into_boxed_slice(),
            start: 0,
            end: 0,
            held: 0,
            stage: Vec::with_capacity(MAX_FRAGMENT),
            eof: false,
            peer_closed: false,
            closing: false,
            failure: None,
            deadline_us,
            established: false,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The negotiated version and cipher suite, for the access log.
    pub fn params(&self) -> Option<(&'static str, &'static str)> {
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let suite = self.conn.negotiated_cipher_suite()?.suite().as_str()?;
        Some((version, suite))
    }

    /// Once, when the handshake has finished: whether it was a resumption.
    pub fn take_established(&mut self) -> Option<bool> {
        if self.established || self.conn.is_handshaking() || self.failure.is_some() {
            return None;
        }
        self.established = true;
        Some(self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    pub fn take_failure(&mut self) -> Option<TlsFailure> {
        self.failure.take()
    }

    /// The handshake ran out of time: fail it (the engine aborts the flow).
    pub fn expire(&mut self, now_us: u64) -> bool {
        if self.deadline_us != 0 && now_us >= self.deadline_us && self.conn.is_handshaking() {
            self.deadline_us = 0;
            self.failure = Some(TlsFailure::HandshakeTimeout);
            self.eof = true;
            return true;
        }
        false
    }

    /// Moves what it can: ciphertext from the socket through rustls into
    /// `plain`, and records from rustls into the socket. A handshake step
    /// (ciphertext while handshaking) takes one unit of `budget`; with none
    /// left it waits (`Pumped::Deferred`).
    pub fn pump(&mut self, sock: &mut Socket, budget: &mut u32) -> Pumped {
        let mut result = Pumped::Done;
        loop {
            self.take_plaintext();
            let want = !self.eof && self.held == 0 && self.room() > 0;
            if !want || sock.recv_queue() == 0 {
                break;
            }
            if self.conn.is_handshaking() {
                if *budget == 0 {
                    result = Pumped::Deferred;
                    break;
                }
                *budget -= 1;
            }
            match self.conn.read_tls(&mut RingRead(sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break, // rustls' own buffers are full: read later
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    self.held = state.plaintext_bytes_to_read();
                    // A close_notify read with the last records: eof comes
                    // when their plaintext is taken (`take_plaintext`).
                    self.peer_closed |= state.peer_has_closed();
                }
                Err(e) => {
                    self.fail(&e);
                    break;
                }
            }
            self.flush(sock);
        }
        self.take_plaintext();
        if !self.eof && self.held == 0 && sock.recv_queue() == 0 && peer_done(sock) {
            // TCP EOF without close_notify: a truncation, but nothing more comes.
            self.eof = true;
        }
        self.flush(sock);
        result
    }

    fn fail(&mut self, e: &rustls::Error) {
        self.failure = Some(match e {
            rustls::Error::AlertReceived(_) => TlsFailure::Alert,
            rustls::Error::InvalidCertificate(_) => TlsFailure::Certificate,
            _ => TlsFailure::Protocol,
        });
        self.eof = true;
        self.closing = true; // the alert rustls queued goes out, then the FIN
    }

    /// Free room at the end of `plain` (compacted first).
    fn room(&mut self) -> usize {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.plain.len() {
            self.plain.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.plain.len() - self.end
    }

    /// Plaintext from rustls into `plain`, as far as it has room.
    fn take_plaintext(&mut self) {
        while self.held > 0 && self.room() > 0 {
            let end = self.end;
            match self.conn.reader().read(&mut self.plain[end..]) {
                Ok(0) => {
                    self.held = 0;
                    self.eof = true;
                }
                Ok(n) => {
                    self.end += n;
                    self.held = self.held.saturating_sub(n);
                }
                Err(_) => self.held = 0,
            }
        }
        if self.peer_closed && self.held == 0 {
            self.eof = true;
        }
    }

    /// Records rustls has ready go into the socket's send ring; the FIN
    /// after them once the session closed.
    pub fn flush(&mut self, sock: &mut Socket) {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut RingWrite(sock)) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if self.closing && !self.conn.wants_write() && sock.may_send() {
            sock.close();
        }
    }

    // The socket face the session sees (`Io`).

    pub fn recv_queue(&self) -> usize {
        self.end - self.start
    }

    pub fn recv_capacity(&self) -> usize {
        self.plain.len()
    }

    pub fn peek(&self, n: usize) -> &[u8] {
        &self.plain[self.start..self.end.min(self.start + n)]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
    }

    pub fn plain_mut(&mut self) -> &mut [u8] {
        &mut self.plain[self.start..self.end]
    }

    pub fn may_recv(&self) -> bool {
        !self.eof
    }

    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Plaintext the session may write now: none while records wait for
    /// the send ring, else what fits in it once framed.
    pub fn send_room(&self, sock: &Socket) -> usize {
        if self.conn.wants_write() || self.closing || self.conn.is_handshaking() {
            return 0;
        }
        let room = send_room(sock);
        let framed = room.saturating_sub(RECORD_OVERHEAD * (room / MAX_FRAGMENT + 1));
        framed.min(MAX_FRAGMENT) - self.stage.len().min(framed.min(MAX_FRAGMENT))
    }

    pub fn send_capacity(&self, sock: &Socket) -> usize {
        let cap = sock.send_capacity();
        cap.saturating_sub(RECORD_OVERHEAD * (cap / MAX_FRAGMENT + 1))
    }

    /// Records not yet in the send ring count as queued.
    pub fn pending(&self) -> bool {
        self.conn.wants_write() || !self.stage.is_empty()
    }

    /// Takes what fits (`send_room`); a full record's worth is sealed at once.
    pub fn send(&mut self, sock: &mut Socket, data: &[u8]) -> usize {
        let n = data.len().min(self.send_room(sock));
        self.stage.extend_from_slice(&data[..n]);
        if self.stage.len() >= MAX_FRAGMENT {
            self.seal(sock);
        }
        n
    }

    /// Encrypts the staged plaintext and puts the records in the ring.
    pub fn seal(&mut self, sock: &mut Socket) {
        if !self.stage.is_empty() {
            // `send_room` bounded the stage by rustls' and the ring's room.
            let _ = self.conn.writer().write_all(&self.stage);
            self.stage.clear();
        }
        self.flush(sock);
    }

    pub fn may_send(&self, sock: &Socket) -> bool {
        !self.closing && sock.may_send()
    }

    /// A close_notify, then the FIN once the records are out.
    pub fn close(&mut self, sock: &mut Socket) {
        if !self.closing {
            self.seal(sock);
            self.closing = true;
            self.conn.send_close_notify();
        }
        self.flush(sock);
    }
}

/// The peer sent its FIN (or the connection is gone); not a connection
/// still opening (accepted at its SYN).
fn peer_done(sock: &Socket) -> bool {
    use smoltcp::socket::tcp::State;
    let opening = matches!(
        sock.state(),
        State::Listen | State::SynSent | State::SynReceived
    );
    !opening && !sock.may_recv()
}

/// The socket's receive ring as rustls' reader (WouldBlock when empty:
/// `Ok(0)` would tell rustls the peer is gone).
struct RingRead<'s, 'a>(&'s mut Socket<'a>);

impl Read for RingRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.recv_slice(buf) {
            Ok(0) | Err(_) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
        }
    }
}

/// The socket's send ring as rustls' writer.
struct RingWrite<'s, 'a>(&'s mut Socket<'a>);

impl Write for RingWrite<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.send_slice(buf) {
            Ok(0) | Err(_) if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(_) => Ok(0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
