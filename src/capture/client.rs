//! The `zproxy capture` command's side: compiles the filter with libpcap,
//! asks the running instance's management endpoint for a capture, and
//! writes the pcap bytes it streams back (see `serve` for the framing).

use std::io::{BufReader, Read, Write};

use super::serve::{PCAP_CHUNK, SUMMARY_CHUNK};
use super::{bpf, compile};

pub struct Options {
    pub port: String,
    pub queue: Option<u16>,
    pub snaplen: u32,
    pub count: Option<u64>,
    pub seconds: Option<u64>,
    /// tcpdump filter syntax; everything when `None`.
    pub filter: Option<String>,
}

/// The request path for `o` (the filter compiled here).
pub fn path(o: &Options) -> Result<String, String> {
    if !o
        .port
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "--port {:?}: not a port name of the config",
            o.port
        ));
    }
    let mut p = format!("/capture?port={}&snaplen={}", o.port, o.snaplen);
    if let Some(q) = o.queue {
        p += &format!("&queue={q}");
    }
    if let Some(c) = o.count {
        p += &format!("&count={c}");
    }
    if let Some(s) = o.seconds {
        p += &format!("&seconds={s}");
    }
    if let Some(f) = o.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        p += &format!("&bpf={}", bpf::to_text(&compile::compile(f, o.snaplen)?));
    }
    Ok(p)
}

/// Runs a capture on the instance at `address`, writing pcap to `out`;
/// returns the instance's closing summary.
pub fn capture(address: &str, o: &Options, out: &mut dyn Write) -> Result<String, String> {
    let path = path(o)?;
    let mut s = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot reach the management endpoint at {address}: {e} (is zproxy running, in this network namespace?)"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match r.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return Err(format!("{address} sent no HTTP response")),
        }
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        let mut body = String::new();
        let _ = r.read_to_string(&mut body);
        let status = head.lines().next().unwrap_or_default();
        return Err(format!("the instance refused: {status}: {}", body.trim()));
    }
    loop {
        let mut h = [0u8; 5];
        if r.read_exact(&mut h).is_err() {
            return Err("the instance closed the capture without a summary (stopped?)".into());
        }
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let mut data = vec![0u8; len];
        r.read_exact(&mut data)
            .map_err(|e| format!("reading the capture: {e}"))?;
        match h[0] {
            PCAP_CHUNK => {
                out.write_all(&data)
                    .and_then(|()| out.flush())
                    .map_err(|e| format!("writing the capture: {e}"))?;
            }
            SUMMARY_CHUNK => return Ok(String::from_utf8_lossy(&data).into_owned()),
            k => return Err(format!("unexpected chunk kind {k} from the instance")),
        }
    }
}
