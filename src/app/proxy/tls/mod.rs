//! TLS on the bypass stack (rustls, ring provider): `https` and `tls`
//! listeners, and TLS to upstream groups.
//!
//! # Driving rustls without a socket
//!
//! rustls does no I/O. [`TlsConn::pump`] feeds it ciphertext straight from
//! the smoltcp receive ring (`read_tls` over the ring as a `Read`) and puts
//! its records straight into the smoltcp send ring (`write_tls` over the
//! ring as a `Write`). The session sees the plaintext through [`Io`], which
//! offers the same few socket calls as a smoltcp socket, so the HTTP and
//! relay code is the same for `http` and `https`.
//!
//! The API is rustls' buffered `Connection` (`read_tls`/`write_tls`), not
//! the unbuffered one: the unbuffered API decrypts in place, but only in a
//! contiguous buffer, and a record in smoltcp's ring may wrap its end; the
//! session also needs plaintext it can peek at across records (a request
//! head split over records). The buffered API gives that with far less
//! state to drive; its cost:
//!
//! - Copies per received payload byte, besides smoltcp's own: ring →
//!   rustls' deframer buffer (1), decrypted in place, → rustls' plaintext
//!   queue (2), → our plaintext buffer (3), which the session then relays
//!   to the upstream's ring like any client byte. Sent bytes: session →
//!   rustls encrypts into its record queue (1), → the send ring (2).
//! - Allocations: per connection, rustls' connection state and our
//!   plaintext buffer (the socket's receive capacity). rustls' buffered
//!   API also allocates one `Vec` per received record (its plaintext
//!   queue) and per sent record (its record queue): the hot path is not
//!   allocation-free for TLS bytes. rustls 0.23's unbuffered API does not
//!   remove that: `ReadTraffic::next_record` hands out a `Vec` rustls
//!   allocated per record (`received_plaintext`), and `WriteTraffic::encrypt`
//!   encrypts into an allocated `Vec` (ring's `MessageEncrypter` returns an
//!   owned record) before copying it into the caller's buffer. Its main
//!   branch decrypts in place (rustls PR #2746), after 0.23.
//!
//! # Backpressure
//!
//! Ciphertext is read from the ring only while our plaintext buffer has
//! room and rustls holds no plaintext: a slow reader closes the TCP window.
//! The session may write only while rustls holds no unsent records and the
//! send ring has room for the framed bytes (`Io::send_room`): a full send
//! ring stops reading plaintext from the upstream.
//!
//! - [`config`]: certificates, SNI, server and client configs, checks.
//! - [`conn`]: one connection: rustls between the ring and the session.
//! - [`flows`]: a worker's TLS connections and its handshake budget.
//! - [`io`]: the socket face the session uses, TLS or not.

pub mod config;
pub mod conn;
pub mod flows;
pub mod io;
pub mod plan;

pub use conn::{Pumped, TlsConn, TlsFailure};
pub use flows::{ServerTls, TlsFlows, UpstreamTls};
pub use io::{dequeue, Io};

/// Bytes the session may write to `io` now.
pub(crate) fn send_room(io: &Io<'_, '_>) -> usize {
    io.send_room()
}

#[cfg(test)]
mod tests;
