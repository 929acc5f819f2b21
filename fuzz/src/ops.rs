//! The `worker_frames` input format: a mode byte, then operations, each a tag
//! byte and its fields. Any byte string decodes (missing bytes read as 0), so
//! every mutation is a valid input; `Encoder` writes the same format for the
//! seed corpus (`examples/worker_seeds.rs`).
//!
//! Operations act on the harness's view of the peers (`harness.rs`): a
//! `Segment` names a connection by index and is built with the right
//! addresses, sequence numbers (offsets from what the peer would send
//! next) and checksums, so mutations reach the TCP state machines and the
//! applications behind them instead of dying at a checksum.

/// What the harness does by itself, like a real peer would (mode byte bits).
pub const AUTO_ACCEPT_UPSTREAM: u8 = 1 << 0;
/// Acknowledge everything the worker sends, right away.
pub const AUTO_ACK: u8 = 1 << 1;

/// Segment mangling bits. (smoltcp takes every checksum as good when built
/// for fuzzing, so a bad one only matters to code before it.)
pub const BAD_TCP_CHECKSUM: u8 = 1 << 0;
pub const MORE_FRAGMENTS: u8 = 1 << 1;
pub const IP_OPTIONS: u8 = 1 << 2;
/// Ethernet padding after the IP packet (NICs pad frames to 60 bytes).
pub const PADDED: u8 = 1 << 3;
pub const BROADCAST_MAC: u8 = 1 << 4;

/// Where a `Connect` goes: the worker's listeners, then a closed port.
pub const LISTENER_PORTS: [u16; 5] = [80, 81, 8080, 8081, 9999];

/// TCP flag bits, as on the wire.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Any bytes as an Ethernet frame on port 0 (clients) or 1 (upstreams).
    Raw { port: u8, frame: Vec<u8> },
    /// A TCP segment on connection `flow` (index into the harness's list,
    /// modulo its length) from the peer's side.
    Segment {
        flow: u8,
        flags: u8,
        seq_off: i16,
        ack_off: i16,
        window: u16,
        options: Vec<u8>,
        payload: Vec<u8>,
        mangle: u8,
    },
    /// A new client connection (SYN with Linux's options) to
    /// `LISTENER_PORTS[listener % 5]`; with `complete`, the handshake's ACK
    /// follows the SYN-ACK.
    Connect {
        client: u8,
        listener: u8,
        complete: bool,
    },
    /// Time passes.
    Wait { ms: u16 },
    /// A frame no connection owns: ARP, ICMP echo, a broadcast, ...
    Stateless {
        port: u8,
        kind: u8,
        field: u32,
        payload: Vec<u8>,
    },
    /// Every open connection's peer acknowledges all it has received.
    AckAll { window: u16 },
}

/// Reads fields off the input; past its end every field is 0.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let start = self.at.min(self.data.len());
        let end = (self.at + n).min(self.data.len());
        self.at += n;
        self.data[start..end].to_vec()
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Most operations taken from one input (keeps each run short).
pub const MAX_OPS: usize = 256;
/// Longest raw frame (an mbuf holds 2048 bytes after its headroom).
pub const MAX_FRAME: usize = 2048;
pub const MAX_PAYLOAD: usize = 1460;
pub const MAX_OPTIONS: usize = 40;

/// The mode byte and the operations of an input.
pub fn decode(data: &[u8]) -> (u8, Vec<Op>) {
    let mut r = Reader { data, at: 0 };
    let mode = r.u8();
    let mut ops = Vec::new();
    while !r.done() && ops.len() < MAX_OPS {
        let tag = r.u8();
        let op = match tag & 7 {
            0 => {
                let len = usize::from(r.u16()) % (MAX_FRAME + 1);
                Op::Raw {
                    port: (tag >> 3) & 1,
                    frame: r.bytes(len),
                }
            }
            1..=3 => {
                let flow = r.u8();
                let flags = r.u8();
                let seq_off = r.u16() as i16;
                let ack_off = r.u16() as i16;
                let window = r.u16();
                let olen = usize::from(r.u8()) % (MAX_OPTIONS + 1);
                let options = r.bytes(olen);
                let plen = usize::from(r.u16()) % (MAX_PAYLOAD + 1);
                let payload = r.bytes(plen);
                Op::Segment {
                    flow,
                    flags,
                    seq_off,
                    ack_off,
                    window,
                    options,
                    payload,
                    mangle: tag >> 3,
                }
            }
            4 => Op::Connect {
                client: r.u8(),
                listener: r.u8(),
                complete: tag & 8 != 0,
            },
            5 => Op::Wait { ms: r.u16() },
            6 => {
                let kind = r.u8();
                let field = r.u32();
                let plen = usize::from(r.u16()) % (MAX_PAYLOAD + 1);
                Op::Stateless {
                    port: (tag >> 3) & 1,
                    kind,
                    field,
                    payload: r.bytes(plen),
                }
            }
            _ => Op::AckAll { window: r.u16() },
        };
        ops.push(op);
    }
    (mode, ops)
}

/// Writes inputs in the format `decode` reads.
#[derive(Debug, Default)]
pub struct Encoder(pub Vec<u8>);

impl Encoder {
    pub fn new(mode: u8) -> Self {
        Encoder(vec![mode])
    }

    pub fn op(&mut self, op: &Op) -> &mut Self {
        let out = &mut self.0;
        match op {
            Op::Raw { port, frame } => {
                out.push((port & 1) << 3);
                out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
                out.extend_from_slice(frame);
            }
            Op::Segment {
                flow,
                flags,
                seq_off,
                ack_off,
                window,
                options,
                payload,
                mangle,
            } => {
                out.push(1 | mangle << 3);
                out.extend_from_slice(&[*flow, *flags]);
                out.extend_from_slice(&seq_off.to_le_bytes());
                out.extend_from_slice(&ack_off.to_le_bytes());
                out.extend_from_slice(&window.to_le_bytes());
                out.push(options.len() as u8);
                out.extend_from_slice(options);
                out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
                out.extend_from_slice(payload);
            }
            Op::Connect {
                client,
                listener,
                complete,
            } => {
                out.push(4 | if *complete { 8 } else { 0 });
                out.extend_from_slice(&[*client, *listener]);
            }
            Op::Wait { ms } => {
                out.push(5);
                out.extend_from_slice(&ms.to_le_bytes());
            }
            Op::Stateless {
                port,
                kind,
                field,
                payload,
            } => {
                out.push(6 | (port & 1) << 3);
                out.push(*kind);
                out.extend_from_slice(&field.to_le_bytes());
                out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
                out.extend_from_slice(payload);
            }
            Op::AckAll { window } => {
                out.push(7);
                out.extend_from_slice(&window.to_le_bytes());
            }
        }
        self
    }

    /// A client connection to `LISTENER_PORTS[listener % 5]`.
    pub fn connect(&mut self, client: u8, listener: u8, complete: bool) -> &mut Self {
        self.op(&Op::Connect {
            client,
            listener,
            complete,
        })
    }

    /// Data with ACK|PSH on `flow`, in sequence.
    pub fn send(&mut self, flow: u8, payload: &[u8]) -> &mut Self {
        self.in_sequence(flow, ACK | PSH, payload)
    }

    /// A bare segment with `flags` on `flow`, in sequence.
    pub fn flags(&mut self, flow: u8, flags: u8) -> &mut Self {
        self.in_sequence(flow, flags, &[])
    }

    fn in_sequence(&mut self, flow: u8, flags: u8, payload: &[u8]) -> &mut Self {
        self.op(&Op::Segment {
            flow,
            flags,
            seq_off: 0,
            ack_off: 0,
            window: 64240,
            options: Vec::new(),
            payload: payload.to_vec(),
            mangle: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let ops = vec![
            Op::Raw {
                port: 1,
                frame: vec![1, 2, 3],
            },
            Op::Segment {
                flow: 3,
                flags: ACK | PSH,
                seq_off: -5,
                ack_off: 7,
                window: 512,
                options: vec![1, 1, 4, 2],
                payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                mangle: PADDED | IP_OPTIONS,
            },
            Op::Connect {
                client: 9,
                listener: 1,
                complete: true,
            },
            Op::Wait { ms: 1500 },
            Op::Stateless {
                port: 0,
                kind: 2,
                field: 0xdead_beef,
                payload: vec![0; 8],
            },
            Op::AckAll { window: 100 },
        ];
        let mut e = Encoder::new(AUTO_ACK);
        for op in &ops {
            e.op(op);
        }
        assert_eq!(decode(&e.0), (AUTO_ACK, ops));
    }
}
