//! Talking to a running zproxy through its management endpoint: fetch
//! `/stats` or `/metrics` (`zproxy stats`), and `zproxy reload` (signal it,
//! wait for the outcome it reports).

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `zproxy reload` waits for the instance to report its reload.
pub const RELOAD_WAIT: Duration = Duration::from_secs(5);
const RELOAD_POLL: Duration = Duration::from_millis(50);

/// GET `path` from the management endpoint; the response body.
pub fn fetch(address: &str, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(address)
        .map_err(|e| format!("cannot reach the management endpoint at {address}: {e} (is zproxy running, in this network namespace?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // One write: the endpoint reads the head as it comes, but need not wait long.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading from {address}: {e}"))?;
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| format!("{address} sent no HTTP response"))
}

/// How `zproxy reload` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Applied; the instance's message (what changed).
    Applied(String),
    /// Refused; why (the old config keeps running).
    Refused(String),
    /// The instance could not be reached or signalled, or did not answer.
    Unreachable(String),
}

impl Reloaded {
    /// The exit status: 0 applied, 1 refused, 2 not reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            Reloaded::Applied(_) => 0,
            Reloaded::Refused(_) => 1,
            Reloaded::Unreachable(_) => 2,
        }
    }
}

/// The management address of the instance that runs `config`: `address`
/// when given, else the file's `management.address` (its default when the
/// file does not set it). Read leniently: a file that no longer validates is
/// still the one to reload, and the instance says what is wrong with it. A
/// file that is not even TOML is refused here (the instance would refuse it
/// too), and nothing is sent.
pub fn management_address(config: &Path, address: Option<&str>) -> Result<String, Reloaded> {
    if let Some(a) = address {
        return Ok(a.to_owned());
    }
    let text = std::fs::read_to_string(config).map_err(|e| {
        Reloaded::Unreachable(format!(
            "cannot read {}: {e} (give the config the instance runs with --config, or its management address with --address)",
            config.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Reloaded::Refused(format!(
            "{}: not valid TOML ({}); fix it and run zproxy reload again (nothing was sent: the running config stays)",
            config.display(),
            e.to_string().lines().next().unwrap_or_default()
        ))
    })?;
    let set = table
        .get("management")
        .and_then(|m| m.get("address"))
        .and_then(|a| a.as_str());
    match set.unwrap_or(&crate::config::Management::default().address) {
        "" => Err(Reloaded::Unreachable(format!(
            "{}: management.address is empty, so there is no endpoint to ask; send SIGHUP yourself (systemctl kill -s HUP zproxy) and read the log",
            config.display()
        ))),
        a => Ok(a.to_owned()),
    }
}

/// (pid, reload attempts, last_ok, last_message) from `/stats`.
fn reload_state(address: &str) -> Result<(i32, u64, bool, String), String> {
    let body = fetch(address, "/stats")?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("{address}: /stats is not the JSON zproxy serves: {e}"))?;
    let r = &v["reload"];
    match (v["pid"].as_i64(), r["attempts"].as_u64()) {
        (Some(pid), Some(attempts)) => Ok((
            pid as i32,
            attempts,
            r["last_ok"].as_bool().unwrap_or(false),
            r["last_message"].as_str().unwrap_or_default().to_owned(),
        )),
        _ => Err(format!(
            "{address}: /stats has no pid or reload status (a zproxy older than `zproxy reload`?): send SIGHUP yourself"
        )),
    }
}

/// Sends SIGHUP to the instance behind `address` and waits (up to
/// [`RELOAD_WAIT`]) for it to report the outcome.
pub fn reload(address: &str) -> Reloaded {
    let (pid, before, _, _) = match reload_state(address).or_else(|_| reload_state(address)) {
        Ok(s) => s,
        Err(e) => return Reloaded::Unreachable(e),
    };
    // SAFETY: kill has no memory preconditions; `pid` is the instance's own
    // report of its process id, and a positive one names a single process.
    if pid <= 0 || unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Reloaded::Unreachable(format!(
            "cannot send SIGHUP to zproxy (pid {pid}): {} (run as root, in the same PID namespace)",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + RELOAD_WAIT;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(RELOAD_POLL);
        // A failed read is retried: one lost scrape is no verdict.
        match reload_state(address) {
            Ok((_, attempts, ok, message)) if attempts != before => {
                return if ok {
                    Reloaded::Applied(message)
                } else {
                    Reloaded::Refused(message)
                };
            }
            Ok(_) => {}
            Err(e) => last_error = format!(" (last error: {e})"),
        }
    }
    Reloaded::Unreachable(format!(
        "zproxy (pid {pid}) got SIGHUP but reported no reload within {} s{last_error}; see its log",
        RELOAD_WAIT.as_secs()
    ))
}
