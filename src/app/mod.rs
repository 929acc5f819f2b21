//! Applications that run on the flows of a core's stack, and the loop
//! that runs them.
//!
//! - [`access_log`]: the worker's side of the access log (a lock-free ring).
//! - [`outcome`]: the record of one finished exchange (metrics, access log).
//! - [`proxy`]: HTTP and TCP proxying to upstream servers.
//! - [`stats`]: request metrics by listener, written by the worker.
//! - [`responder`]: a fixed HTTP response (health endpoints, tests, the
//!   datapath benchmark).
//! - [`worker`]: one polling core: the stack, its events, the applications.

use smoltcp::socket::tcp::Socket;

pub mod access_log;
pub mod outcome;
pub mod proxy;
pub mod responder;
pub mod slot_vec;
pub mod stats;
pub mod worker;

/// Free bytes in the socket's send buffer.
pub(crate) fn send_room(sock: &Socket) -> usize {
    sock.send_capacity() - sock.send_queue()
}

/// Dequeues up to `n` received bytes (the ring may wrap: loop); how many went.
pub(crate) fn dequeue(sock: &mut Socket, n: usize) -> usize {
    let mut done = 0;
    while done < n {
        match sock.recv(|b| {
            let k = b.len().min(n - done);
            (k, k)
        }) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    done
}
