//! Access log lines, text or JSON (the formats INSTALL.md documents). Runs
//! on the writer thread only: allocating here is fine.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use crate::app::outcome::{Outcome, Text};
use crate::config::AccessLogFormat;

/// What turns indices into names: listener names ("port:tcp_port") by
/// listener index, server addresses by (group, server).
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub listeners: Vec<String>,
    pub servers: Vec<Vec<SocketAddr>>,
}

impl Names {
    fn listener(&self, i: u16) -> &str {
        self.listeners.get(usize::from(i)).map_or("-", |s| s)
    }

    fn server(&self, (g, s): (u16, u16)) -> Option<SocketAddr> {
        self.servers
            .get(usize::from(g))?
            .get(usize::from(s))
            .copied()
    }
}

/// Appends one line (with its newline) for `o`, whose `start_us` is Unix time.
pub fn line(out: &mut String, o: &Outcome, names: &Names, format: AccessLogFormat) {
    match format {
        AccessLogFormat::Text => text(out, o, names),
        AccessLogFormat::Json => json(out, o, names),
    }
    out.push('\n');
}

fn text(out: &mut String, o: &Outcome, names: &Names) {
    rfc3339_ms(out, o.start_us);
    out.push(' ');
    match o.client {
        Some((ip, port)) => {
            let _ = write!(out, "{ip}:{port}");
        }
        None => out.push('-'),
    }
    let _ = write!(out, " {} ", names.listener(o.listener));
    escaped(out, &o.method);
    out.push(' ');
    escaped(out, &o.host);
    out.push(' ');
    escaped(out, &o.path);
    match o.status {
        0 => out.push_str(" -"),
        s => {
            let _ = write!(out, " {s}");
        }
    }
    let _ = write!(out, " {} {} up=", o.bytes_in, o.bytes_out);
    match o.upstream.and_then(|u| names.server(u)) {
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
    for (key, us) in [
        ("connect_ms", o.connect_us),
        ("response_ms", o.response_us),
        ("total_ms", Some(o.total_us)),
    ] {
        let _ = write!(out, " {key}=");
        match us {
            Some(us) => ms(out, us),
            None => out.push('-'),
        }
    }
    let _ = write!(
        out,
        " id={:016x} cause={}",
        o.request_id,
        o.cause.map_or("-", |c| c.label())
    );
    // TLS version/cipher: `-` for plain connections.
    match o.tls {
        Some((version, cipher)) => {
            let _ = write!(out, " tls={version}/{cipher}");
        }
        None => out.push_str(" tls=-"),
    }
}

/// A text field: `-` when empty; bytes other than printable ASCII, and `"`
/// and `\`, as `\xHH` (so no space, newline or quote can forge a field or a
/// line); `...` after a field that was cut.
fn escaped<const N: usize>(out: &mut String, t: &Text<N>) {
    if t.as_bytes().is_empty() {
        out.push('-');
        return;
    }
    for &b in t.as_bytes() {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if t.truncated() {
        out.push_str("...");
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    client: Option<String>,
    listener: &'a str,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    upstream: Option<String>,
    connect_ms: Option<f64>,
    response_ms: Option<f64>,
    total_ms: f64,
    id: String,
    cause: Option<&'static str>,
    truncated: bool,
    tls_version: Option<&'static str>,
    tls_cipher: Option<&'static str>,
}

fn json(out: &mut String, o: &Outcome, names: &Names) {
    let mut time = String::with_capacity(24);
    rfc3339_ms(&mut time, o.start_us);
    // Invalid UTF-8 shows as U+FFFD; serde_json escapes quotes and controls.
    let field = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
    let ms = |us: u64| us as f64 / 1000.0;
    let line = JsonLine {
        time: &time,
        client: o.client.map(|(ip, port)| format!("{ip}:{port}")),
        listener: names.listener(o.listener),
        method: field(o.method.as_bytes()),
        host: field(o.host.as_bytes()),
        path: field(o.path.as_bytes()),
        status: (o.status != 0).then_some(o.status),
        bytes_in: o.bytes_in,
        bytes_out: o.bytes_out,
        upstream: o
            .upstream
            .and_then(|u| names.server(u))
            .map(|a| a.to_string()),
        connect_ms: o.connect_us.map(ms),
        response_ms: o.response_us.map(ms),
        total_ms: ms(o.total_us),
        id: format!("{:016x}", o.request_id),
        cause: o.cause.map(|c| c.label()),
        truncated: o.method.truncated() || o.host.truncated() || o.path.truncated(),
        tls_version: o.tls.map(|t| t.0),
        tls_cipher: o.tls.map(|t| t.1),
    };
    out.push_str(&serde_json::to_string(&line).expect("plain data serializes"));
}

/// Microseconds as milliseconds with three decimals.
fn ms(out: &mut String, us: u64) {
    let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
}

/// Unix time in µs as RFC 3339 UTC with milliseconds: 2026-11-30T13:20:01.123Z.
pub fn rfc3339_ms(out: &mut String, unix_us: u64) {
    let secs = unix_us / 1_000_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_us % 1_000_000 / 1000
    );
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::app::proxy::session::Cause;

    fn names() -> Names {
        Names {
            listeners: vec!["client:80".into(), "client:81".into()],
            servers: vec![vec!["10.0.1.2:80".parse().unwrap()]],
        }
    }

    /// 2026-11-30T13:20:01.123456Z
    const T: u64 = 1_796_044_801_123_456;

    fn request() -> Outcome {
        let mut o = Outcome {
            listener: 0,
            client: Some((Ipv4Addr::new(10, 0, 0, 2).into(), 40312)),
            status: 200,
            bytes_in: 75,
            bytes_out: 612,
            upstream: Some((0, 0)),
            start_us: T,
            connect_us: Some(210),
            response_us: Some(1030),
            total_us: 1250,
            request_id: 0xa1b2c3d4e5f6,
            ..Outcome::default()
        };
        o.set_request(b"GET", Some(b"example.com"), b"/path");
        o
    }

    fn text_of(o: &Outcome) -> String {
        let mut s = String::new();
        line(&mut s, o, &names(), AccessLogFormat::Text);
        s
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        let mut s = String::new();
        rfc3339_ms(&mut s, T);
        assert_eq!(s, "2026-11-30T13:20:01.123Z");
        for (us, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000Z"),
            (4_107_542_399_999_999, "2100-02-28T23:59:59.999Z"),
        ] {
            s.clear();
            rfc3339_ms(&mut s, us);
            assert_eq!(s, want);
        }
    }

    #[test]
    fn text_line_has_every_field_in_order() {
        assert_eq!(
            text_of(&request()),
            "2026-11-30T13:20:01.123Z 10.0.0.2:40312 client:80 GET example.com /path 200 75 612 up=10.0.1.2:80 connect_ms=0.210 response_ms=1.030 total_ms=1.250 id=0000a1b2c3d4e5f6 cause=- tls=-\n"
        );
        let tls = Outcome {
            tls: Some(("TLSv1.3", "TLS13_AES_128_GCM_SHA256")),
            ..request()
        };
        assert!(text_of(&tls).ends_with(" cause=- tls=TLSv1.3/TLS13_AES_128_GCM_SHA256\n"));
        let tcp = Outcome {
            listener: 1,
            status: 0,
            response_us: None,
            cause: Some(Cause::Reset),
            method: Text::default(),
            host: Text::default(),
            path: Text::default(),
            ..request()
        };
        assert_eq!(
            text_of(&tcp),
            "2026-11-30T13:20:01.123Z 10.0.0.2:40312 client:81 - - - - 75 612 up=10.0.1.2:80 connect_ms=0.210 response_ms=- total_ms=1.250 id=0000a1b2c3d4e5f6 cause=reset tls=-\n"
        );
    }

    #[test]
    fn text_fields_cannot_forge_fields_or_lines() {
        let mut o = request();
        o.set_request(
            b"GET",
            Some(b"a b\"c"),
            b"/x\r\n2026-01-01T00:00:00.000Z forged\\\xff",
        );
        let s = text_of(&o);
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert_eq!(s.split(' ').count(), 16, "{s}");
        assert!(
            s.contains(
                " a\\x20b\\x22c /x\\x0d\\x0a2026-01-01T00:00:00.000Z\\x20forged\\x5c\\xff 200 "
            ),
            "{s}"
        );
        o.path.set(&[b'a'; 300]);
        assert!(text_of(&o).contains(&format!(" {}... 200 ", "a".repeat(192))));
    }

    #[test]
    fn json_line_has_the_same_fields_escaped() {
        let mut o = request();
        o.host.set(b"q\"uote\n");
        let mut s = String::new();
        line(&mut s, &o, &names(), AccessLogFormat::Json);
        assert!(s.ends_with("}\n") && s.matches('\n').count() == 1, "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let want = serde_json::json!({
            "time": "2026-11-30T13:20:01.123Z",
            "client": "10.0.0.2:40312",
            "listener": "client:80",
            "method": "GET",
            "host": "q\"uote\n",
            "path": "/path",
            "status": 200,
            "bytes_in": 75,
            "bytes_out": 612,
            "upstream": "10.0.1.2:80",
            "connect_ms": 0.21,
            "response_ms": 1.03,
            "total_ms": 1.25,
            "id": "0000a1b2c3d4e5f6",
            "cause": null,
            "truncated": false,
            "tls_version": null,
            "tls_cipher": null,
        });
        assert_eq!(v, want);
        let tcp = Outcome {
            status: 0,
            upstream: None,
            connect_us: None,
            method: Text::default(),
            cause: Some(Cause::Refused),
            ..request()
        };
        s.clear();
        line(&mut s, &tcp, &names(), AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            (
                &v["status"],
                &v["upstream"],
                &v["connect_ms"],
                &v["method"],
                &v["cause"]
            ),
            (
                &serde_json::Value::Null,
                &serde_json::Value::Null,
                &serde_json::Value::Null,
                &serde_json::Value::Null,
                &serde_json::json!("refused")
            )
        );
    }
}
