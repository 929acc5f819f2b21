//! The management endpoint's side of `zproxy capture`: `GET /capture?...`
//! starts a session and streams it back from a thread of its own (the
//! control thread goes on serving), until the count or the time is reached
//! or the client goes away. The body is a run of chunks, each a kind byte
//! and a little-endian u32 length: kind 0 carries pcap bytes, kind 1 the
//! closing summary (frames written, frames dropped).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{bpf, pcap, Board, Session};

pub const PCAP_CHUNK: u8 = 0;
pub const SUMMARY_CHUNK: u8 = 1;
/// How long the capture thread sleeps when no frame waits.
const IDLE: Duration = Duration::from_millis(2);
/// Idle rounds between two looks at whether the client is still there (~200 ms).
const PROBE_EVERY: u32 = 100;
/// Longest wait for the workers to take a new session.
const ATTACH_WAIT: Duration = Duration::from_secs(2);
/// Longest capture without a count or a time (a client that hangs up ends it sooner).
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// What the client asked for.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub port: usize,
    pub queue: Option<usize>,
    pub snaplen: u32,
    pub count: Option<u64>,
    pub seconds: Option<u64>,
    pub filter: Vec<bpf::Insn>,
}

/// Reads `port=NAME&queue=N&snaplen=N&count=N&seconds=N&bpf=code:jt:jf:k,...`.
pub fn parse(query: &str, ports: &[String], workers: usize) -> Result<Request, String> {
    let mut r = Request {
        port: usize::MAX,
        queue: None,
        snaplen: super::MAX_SNAPLEN,
        count: None,
        seconds: None,
        filter: Vec::new(),
    };
    let num = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{k}={v:?} is not a number"))
    };
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "port" => {
                r.port = ports
                    .iter()
                    .position(|p| p == v)
                    .ok_or_else(|| format!("no port named {v:?} (ports: {})", ports.join(", ")))?
            }
            "queue" => {
                let q = num(k, v)? as usize;
                if q >= workers {
                    return Err(format!("queue {q}: the port has {workers} (0..{workers})"));
                }
                r.queue = Some(q);
            }
            "snaplen" => r.snaplen = num(k, v)?.clamp(1, u64::from(super::MAX_SNAPLEN)) as u32,
            "count" => r.count = Some(num(k, v)?),
            "seconds" => r.seconds = Some(num(k, v)?),
            "bpf" => {
                r.filter = bpf::from_text(v).ok_or("bpf= is not code:jt:jf:k,...")?;
            }
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    if r.port == usize::MAX {
        return Err("port= is missing".into());
    }
    Ok(r)
}

/// Answers `GET /capture?QUERY` on `stream`: an error at once, or a
/// session served from its own thread.
pub fn start(
    mut stream: TcpStream,
    query: &str,
    ports: &[String],
    workers: usize,
    board: &Arc<Board>,
) {
    let session = parse(query, ports, workers).and_then(|r| {
        let filter = if r.filter.is_empty() {
            bpf::Program::accept_all()
        } else {
            bpf::Program::new(r.filter.clone()).map_err(|e| format!("filter: {e}"))?
        };
        Ok((Session::new(r.port, r.queue, r.snaplen, filter), r))
    });
    let (session, r) = match session {
        Ok(s) => s,
        Err(e) => return refuse(stream, "400 Bad Request", &e),
    };
    if !board.post(session.clone()) {
        return refuse(
            stream,
            "409 Conflict",
            "another capture is running: one at a time",
        );
    }
    log::info!("capture on port {} started", ports[r.port]);
    let board = board.clone();
    let spawned = std::thread::Builder::new()
        .name("zp-capture".into())
        .spawn(move || {
            // Live once every worker has it (they look every 100 ms): what
            // the client does after the head arrives is captured.
            let t = Instant::now();
            while session.attached.load(Ordering::Acquire) < workers && t.elapsed() < ATTACH_WAIT {
                std::thread::sleep(IDLE);
            }
            let end = run(&mut stream, &session, &r);
            board.end(&session);
            // Frames still in the ring are not written; they count as captured-but-unsent.
            let summary = format!(
                "{} frames written, {} dropped (capture ring full){}",
                end.written,
                session.dropped.load(Ordering::Relaxed),
                end.why
            );
            let _ = chunk(&mut stream, SUMMARY_CHUNK, summary.as_bytes());
            log::info!("capture on port {} ended: {summary}", r.port);
        });
    if let Err(e) = spawned {
        log::warn!("capture: cannot start its thread: {e}");
    }
}

struct End {
    written: u64,
    why: &'static str,
}

fn run(stream: &mut TcpStream, s: &Session, r: &Request) -> End {
    let mut end = End {
        written: 0,
        why: "",
    };
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err()
        || chunk(stream, PCAP_CHUNK, &pcap::header(s.snaplen)).is_err()
    {
        end.why = ": the client went away";
        return end;
    }
    let deadline = Instant::now() + r.seconds.map_or(LONGEST, Duration::from_secs);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut idle = 0u32;
    loop {
        if r.count.is_some_and(|c| end.written >= c) {
            return end;
        }
        if Instant::now() >= deadline {
            return end;
        }
        buf.clear();
        while buf.len() < 60 * 1024 && r.count.is_none_or(|c| end.written < c) {
            let Some(slot) = s.take() else { break };
            let _ = pcap::record(&mut buf, slot.ts_us, slot.wire_len, &slot.data[..slot.len]);
            s.give_back(slot);
            end.written += 1;
        }
        if buf.is_empty() {
            idle += 1;
            // A client that hung up (Ctrl-C) ends the capture even when no frame comes.
            if idle % PROBE_EVERY == 0 && hung_up(stream) {
                end.why = ": the client went away";
                return end;
            }
            std::thread::sleep(IDLE);
            continue;
        }
        idle = 0;
        if chunk(stream, PCAP_CHUNK, &buf).is_err() {
            end.why = ": the client went away";
            return end;
        }
    }
}

/// True when the client closed its side (it sends nothing after its request).
fn hung_up(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let gone = match stream.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    gone || stream.set_nonblocking(false).is_err()
}

fn chunk(stream: &mut TcpStream, kind: u8, data: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(data.len() as u32).to_le_bytes());
    stream.write_all(&head)?;
    stream.write_all(data)
}

fn refuse(mut stream: TcpStream, status: &str, message: &str) {
    let body = format!("{message}\n");
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_checked() {
        let ports = ["client".to_owned(), "upstream".to_owned()];
        let r = parse(
            "port=upstream&queue=1&snaplen=96&count=5&bpf=6:0:0:9",
            &ports,
            2,
        )
        .unwrap();
        assert_eq!(
            (r.port, r.queue, r.snaplen, r.count),
            (1, Some(1), 96, Some(5))
        );
        assert_eq!(r.filter.len(), 1);
        assert!(parse("queue=0", &ports, 1)
            .unwrap_err()
            .contains("port= is missing"));
        assert!(parse("port=wan", &ports, 1)
            .unwrap_err()
            .contains("no port named"));
        assert!(parse("port=client&queue=3", &ports, 2)
            .unwrap_err()
            .contains("queue 3"));
        assert!(parse("port=client&bpf=zz", &ports, 1).is_err());
        assert!(parse("port=client&x=1", &ports, 1).is_err());
    }
}
