//! BIRD's control socket, spoken directly (a Unix stream socket): no
//! `birdc` process per command, no dependency on its binary, and the reply
//! codes are read as numbers rather than scraped from a terminal's text.
//!
//! The protocol (BIRD's `doc/reply_codes`): the server greets with `0001`;
//! each command gets lines `CODE-text` (more follow) or `CODE text` (the
//! last one); a line starting with a space continues the previous one.
//! 0xxx are OK and status, 1xxx/2xxx table rows, 8xxx run-time and 9xxx
//! parse errors.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wait for BIRD to accept, take or answer one command: it runs on
/// the control thread, and BIRD answers these at once.
const IO_TIMEOUT: Duration = Duration::from_millis(500);
/// A reply longer than this is not an enable/disable answer.
const MAX_REPLY_LINES: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot connect to BIRD's control socket {}: is bird running with `-s {}`? (check announce.bird_socket)", .path.display(), .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("BIRD control socket {}: {what}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("BIRD refused `{command}`: {code:04} {text}{hint}")]
    Refused {
        command: String,
        code: u16,
        text: String,
        hint: &'static str,
    },
    #[error(
        "BIRD answered `{command}` with {reply:?}: not the protocol's enabled/disabled status"
    )]
    Unexpected { command: String, reply: String },
}

/// One line of a reply: its code (0 for a continuation line) and text.
pub type Line = (u16, String);

/// The client of one BIRD instance.
#[derive(Debug, Clone)]
pub struct Bird {
    path: PathBuf,
}

impl Bird {
    pub fn new(path: &Path) -> Self {
        Bird {
            path: path.to_owned(),
        }
    }

    /// Sends one command; the reply's lines, or why there is none (8xxx and
    /// 9xxx final codes are errors).
    pub fn command(&self, command: &str) -> Result<Vec<Line>, BirdError> {
        let io = |what| {
            let path = self.path.clone();
            move |source| BirdError::Io { path, what, source }
        };
        let stream = UnixStream::connect(&self.path).map_err(|source| BirdError::Connect {
            path: self.path.clone(),
            source,
        })?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(io("setting a timeout"))?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(io("setting a timeout"))?;
        let mut reader = BufReader::new(&stream);
        let greeting = read_reply(&mut reader).map_err(io("reading the greeting"))?;
        if greeting.first().map(|l| l.0) != Some(1) {
            return Err(BirdError::Unexpected {
                command: "(greeting)".into(),
                reply: render(&greeting),
            });
        }
        (&stream)
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io("sending a command"))?;
        let reply = read_reply(&mut reader).map_err(io("reading the reply"))?;
        match reply.last() {
            Some(&(code, ref text)) if code >= 8000 => Err(BirdError::Refused {
                command: command.to_owned(),
                code,
                text: text.clone(),
                hint: if code == 9001 {
                    " (is that protocol defined in BIRD's config? see announce.protocol)"
                } else {
                    ""
                },
            }),
            _ => Ok(reply),
        }
    }

    /// `enable NAME` / `disable NAME`: Ok once BIRD says the protocol is
    /// (or already was) in that state.
    pub fn set_enabled(&self, protocol: &str, enabled: bool) -> Result<(), BirdError> {
        let command = format!("{} {protocol}", if enabled { "enable" } else { "disable" });
        let reply = self.command(&command)?;
        // 0008 already disabled, 0009 disabled, 0010 already enabled, 0011 enabled.
        let codes = if enabled { [10, 11] } else { [8, 9] };
        let named = format!("{protocol}:");
        if reply
            .iter()
            .any(|(c, t)| codes.contains(c) && t.starts_with(&named))
        {
            Ok(())
        } else {
            Err(BirdError::Unexpected {
                command,
                reply: render(&reply),
            })
        }
    }
}

/// Lines up to and including the last one (`CODE text`).
fn read_reply(r: &mut impl BufRead) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut buf = String::new();
    while lines.len() < MAX_REPLY_LINES {
        buf.clear();
        if r.read_line(&mut buf)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "BIRD closed the connection mid-reply",
            ));
        }
        let line = buf.trim_end_matches(['\n', '\r']);
        match parse_line(line) {
            Some((code, last, text)) => {
                lines.push((code, text.to_owned()));
                if last {
                    return Ok(lines);
                }
            }
            None => lines.push((0, line.trim_start().to_owned())),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "BIRD's reply never ended",
    ))
}

/// `DDDD-text` (more follow) or `DDDD text` (last); `None` for a
/// continuation line.
fn parse_line(line: &str) -> Option<(u16, bool, &str)> {
    let b = line.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..4].parse().ok()?;
    match b[4] {
        b' ' => Some((code, true, &line[5..])),
        b'-' => Some((code, false, &line[5..])),
        _ => None,
    }
}

fn render(lines: &[Line]) -> String {
    let all: Vec<String> = lines.iter().map(|(c, t)| format!("{c:04} {t}")).collect();
    all.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A one-connection server that greets, reads a command and answers
    /// `reply`; returns the command it got.
    fn fake(dir: &Path, reply: &'static str) -> (Bird, std::thread::JoinHandle<String>) {
        let path = dir.join("bird.ctl");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            s.write_all(reply.as_bytes()).unwrap();
            line
        });
        (Bird::new(&path), server)
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zp-bird-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn enable_and_disable_read_birds_status_codes() {
        let d = dir("codes");
        for (enabled, reply, ok) in [
            (true, "0011-vip: enabled\n0000 \n", true),
            (true, "0010-vip: already enabled\n0000 \n", true),
            (false, "0009-vip: disabled\n0000 \n", true),
            (false, "0008-vip: already disabled\n0000 \n", true),
            // The other protocol's status is not ours.
            (false, "0009-other: disabled\n0000 \n", false),
            (true, "0009-vip: disabled\n0000 \n", false),
        ] {
            let (bird, server) = fake(&d, reply);
            let got = bird.set_enabled("vip", enabled);
            let sent = server.join().unwrap();
            assert_eq!(
                sent,
                if enabled {
                    "enable vip\n"
                } else {
                    "disable vip\n"
                }
            );
            assert_eq!(got.is_ok(), ok, "{reply:?}: {got:?}");
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let d = dir("errors");
        let (bird, server) = fake(&d, "9001 syntax error, unexpected CF_SYM_UNDEFINED\n");
        let e = bird.set_enabled("nope", true).unwrap_err().to_string();
        server.join().unwrap();
        assert!(
            e.contains("BIRD refused `enable nope`: 9001 syntax error"),
            "{e}"
        );
        assert!(e.contains("announce.protocol"), "{e}");
        let (bird, server) = fake(&d, "8003 No protocols match\n");
        let e = bird.set_enabled("x", false).unwrap_err().to_string();
        server.join().unwrap();
        assert!(e.contains("8003 No protocols match"), "{e}");
        std::fs::remove_file(d.join("bird.ctl")).unwrap();
        let e = Bird::new(&d.join("bird.ctl"))
            .set_enabled("vip", true)
            .unwrap_err();
        assert!(matches!(e, BirdError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("is bird running with `-s"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn multi_line_replies_end_at_the_last_code() {
        let text = "2002-Name Proto\n1002-device1 Device up\n zproxy_vip Static down\n0000 \n";
        let lines = read_reply(&mut text.as_bytes()).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2], (0, "zproxy_vip Static down".into()));
        assert_eq!(lines[3], (0, String::new()));
        assert!(
            read_reply(&mut "0011-vip: enabled\n".as_bytes()).is_err(),
            "cut short"
        );
    }
}
