//! Body bytes between the two sockets: a delimited body ([`relay_body`]),
//! a plain byte stream ([`relay_stream`]), and end-of-stream checks.

use smoltcp::socket::tcp::State as TcpState;

use crate::app::proxy::http::{self, Body};
use crate::app::proxy::tls::{send_room, Io as Socket};

/// The peer sent its FIN (or the connection is gone): nothing more will arrive.
pub(super) fn peer_closed(s: &Socket) -> bool {
    matches!(
        s.state(),
        TcpState::CloseWait
            | TcpState::LastAck
            | TcpState::Closing
            | TcpState::TimeWait
            | TcpState::Closed
    )
}

/// Moves body bytes from `from` to `to` as `body` delimits them. Returns
/// (bytes moved, body complete); Err on a malformed chunked body.
pub(super) fn relay_body(
    from: &mut Socket,
    to: &mut Socket,
    body: &mut Body,
) -> Result<(usize, bool), http::BadChunk> {
    let mut moved = 0;
    loop {
        let room = send_room(to);
        match body {
            Body::None => return Ok((moved, true)),
            Body::Length(0) => return Ok((moved, true)),
            _ if room == 0 => return Ok((moved, false)),
            Body::Length(left) => {
                let want = room.min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = from.recv(|b| {
                    let n = b.len().min(want);
                    let sent = to.send_slice(&b[..n]).unwrap_or(0);
                    (sent, sent)
                });
                match n {
                    Ok(0) | Err(_) => return Ok((moved, false)),
                    Ok(n) => {
                        *left -= n as u64;
                        moved += n;
                    }
                }
            }
            Body::Chunked(scanner) => {
                let mut result = Ok(false);
                let n = from.recv(|b| {
                    let lim = b.len().min(room);
                    match scanner.scan(&b[..lim]) {
                        Ok((n, done)) => {
                            let sent = to.send_slice(&b[..n]).unwrap_or(0);
                            debug_assert_eq!(sent, n, "room was checked");
                            result = Ok(done);
                            (sent, sent)
                        }
                        Err(e) => {
                            result = Err(e);
                            (0, 0)
                        }
                    }
                });
                let done = result?;
                let n = n.unwrap_or(0);
                moved += n;
                if done {
                    return Ok((moved, true));
                }
                if n == 0 {
                    return Ok((moved, false));
                }
            }
            Body::UntilClose => {
                let n = relay_stream(from, to);
                return Ok((moved + n, false));
            }
        }
    }
}

/// The peer sent FIN (or the connection is gone) and every byte was read.
pub(super) fn at_eof(s: &Socket) -> bool {
    let opening = matches!(
        s.state(),
        TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
    );
    !opening && !s.may_recv() && s.recv_queue() == 0
}

/// Relays `c` and `up` both ways as far as their buffers allow, and passes a
/// half-close on: EOF read on one side closes our send side on the other.
/// The bytes moved (client to upstream, upstream to client).
pub(super) fn relay_both_ways(c: &mut Socket, up: &mut Socket) -> (u64, u64) {
    let moved = (relay_stream(c, up) as u64, relay_stream(up, c) as u64);
    if at_eof(c) && up.may_send() && up.send_queue() == 0 {
        up.close();
    }
    if at_eof(up) && c.may_send() && c.send_queue() == 0 {
        c.close();
    }
    moved
}

/// Moves whatever fits from `from`'s receive buffer to `to`'s send buffer.
pub(super) fn relay_stream(from: &mut Socket, to: &mut Socket) -> usize {
    let mut moved = 0;
    loop {
        let room = send_room(to);
        if room == 0 {
            return moved;
        }
        let n = from
            .recv(|b| {
                let n = to.send_slice(&b[..b.len().min(room)]).unwrap_or(0);
                (n, n)
            })
            .unwrap_or(0);
        if n == 0 {
            return moved;
        }
        moved += n;
    }
}
