//! Helpers shared by the integration tests: an in-process HTTP test server on
//! 127.0.0.1 with failure injection, and a runner for the `zproxy-bench` binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// How the test server answers each request.
#[derive(Clone, Debug)]
pub enum Mode {
    /// `200 OK` with this body and a Content-Length.
    Ok(Vec<u8>),
    /// `200 OK`, chunked body made of these chunks.
    Chunked(Vec<Vec<u8>>),
    /// `200 OK` without Content-Length; the body ends with the connection.
    CloseDelimited(Vec<u8>),
    /// Announces `Content-Length: 100`, sends 10 bytes and closes.
    Truncate,
    /// Reads the request, then closes with SO_LINGER 0 (RST).
    Reset,
    /// `500 Internal Server Error` with a small body.
    Status500,
    /// Garbage instead of a status line.
    Malformed,
    /// Reads the request and never answers.
    Silent,
}

/// Counters kept by the test server.
#[derive(Default)]
pub struct Counters {
    /// Accepted TCP connections.
    pub connections: AtomicU64,
    /// Requests read completely (head and body).
    pub requests: AtomicU64,
    /// Responses written completely (or failure injected) after a request.
    pub answered: AtomicU64,
    /// Request body bytes received.
    pub body_bytes: AtomicU64,
    /// POST requests received.
    pub posts: AtomicU64,
}

/// A thread-per-connection HTTP/1.1 server on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server answering every request as `mode`.
    pub fn start(mode: Mode) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.connections.fetch_add(1, Ordering::SeqCst);
                let (c, s, mode) = (c.clone(), s.clone(), mode.clone());
                std::thread::spawn(move || handle(stream, &mode, &c, &s));
            }
            // The listener is dropped here: new connections are refused.
        });
        TestServer {
            addr,
            counters,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> u64 {
        self.counters.answered.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Closes the listening socket; later connects are refused.
    pub fn stop(&mut self) {
        if let Some(h) = self.acceptor.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept().
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            h.join().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request; returns (head, is_post, wants_close) or None at EOF.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>, c: &Counters) -> Option<bool> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 4096];
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let content_length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    let close = head.contains("\r\nconnection: close\r\n");
    if head.starts_with("post ") {
        c.posts.fetch_add(1, Ordering::SeqCst);
    }
    while buf.len() < head_end + content_length {
        let mut tmp = [0u8; 65536];
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    c.body_bytes
        .fetch_add(content_length as u64, Ordering::SeqCst);
    buf.drain(..head_end + content_length);
    c.requests.fetch_add(1, Ordering::SeqCst);
    Some(close)
}

fn handle(mut stream: TcpStream, mode: &Mode, c: &Counters, stop: &AtomicBool) {
    let mut buf = Vec::new();
    loop {
        let Some(close) = read_request(&mut stream, &mut buf, c) else {
            return;
        };
        let conn_hdr = if close { "Connection: close\r\n" } else { "" };
        let mut keep = !close;
        let resp: Vec<u8> = match mode {
            Mode::Ok(body) => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nServer: test\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            }
            Mode::Chunked(chunks) => {
                let mut r =
                    format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{conn_hdr}\r\n")
                        .into_bytes();
                for ch in chunks {
                    r.extend_from_slice(format!("{:x}\r\n", ch.len()).as_bytes());
                    r.extend_from_slice(ch);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                r
            }
            Mode::CloseDelimited(body) => {
                keep = false;
                let mut r = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
                r.extend_from_slice(body);
                r
            }
            Mode::Truncate => {
                keep = false;
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()
            }
            Mode::Reset => {
                let sock = socket2::SockRef::from(&stream);
                sock.set_linger(Some(Duration::ZERO)).unwrap();
                c.answered.fetch_add(1, Ordering::SeqCst);
                return; // drop => RST
            }
            Mode::Status500 => format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n{conn_hdr}\r\nerror"
            )
            .into_bytes(),
            Mode::Malformed => {
                keep = false;
                b"HELLO THERE\r\n\r\n".to_vec()
            }
            Mode::Silent => {
                // Hold the connection until the client gives up (or the test ends).
                let mut tmp = [0u8; 1024];
                while !stop.load(Ordering::SeqCst) {
                    match stream.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                return;
            }
        };
        if stream.write_all(&resp).is_err() {
            return;
        }
        c.answered.fetch_add(1, Ordering::SeqCst);
        if !keep {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

/// A free port on 127.0.0.1 with nothing listening (connects are refused).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "zproxy-bench-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Result of one `zproxy-bench` run.
pub struct BenchRun {
    pub output: Output,
    pub json: Value,
    pub report: String,
}

impl BenchRun {
    pub fn results(&self) -> &Value {
        &self.json["results"]
    }

    pub fn get(&self, key: &str) -> u64 {
        self.results()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("results.{key} missing: {}", self.json))
    }

    pub fn failure(&self, kind: &str) -> u64 {
        self.results()["failures"][kind]
            .as_u64()
            .unwrap_or_else(|| panic!("failures.{kind} missing: {}", self.json))
    }

    /// Failure kinds with a non-zero count.
    pub fn failure_kinds(&self) -> Vec<String> {
        self.results()["failures"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap() > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn exit_code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
}

/// Runs the `zproxy-bench` binary against 127.0.0.1:`port` with extra `args`.
pub fn bench(port: u16, args: &[&str]) -> BenchRun {
    let dir = temp_dir("run");
    let json = dir.join("out.json");
    let report = dir.join("report.md");
    let output = Command::new(env!("CARGO_BIN_EXE_zproxy-bench"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report)
        .args(args)
        .output()
        .expect("run zproxy-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 1),
        "zproxy-bench failed: {:?}\n{stderr}",
        output.status
    );
    let text = std::fs::read_to_string(&json).expect("json written");
    let json: Value = serde_json::from_str(&text).expect("valid json");
    let report = std::fs::read_to_string(&report).expect("report written");
    let _ = std::fs::remove_dir_all(&dir);
    BenchRun {
        output,
        json,
        report,
    }
}
