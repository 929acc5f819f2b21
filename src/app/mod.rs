//! Applications that run on accepted TCP flows.
//!
//! - [`proxy`]: HTTP and TCP proxying to upstream servers.
//! - [`responder`]: a fixed HTTP response (health endpoints, tests, the
//!   datapath benchmark).

use smoltcp::socket::tcp::Socket;

pub mod proxy;
pub mod responder;

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
