//! Shared by the fault tests (lab_faults_*): curl runs and what they saw, the
//! still-serving check, zproxy-bench failure summaries, and the configs.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::proxy::*;
use super::*;

// ---- clients ----------------------------------------------------------------------------

/// What one curl run saw.
#[derive(Debug)]
pub struct Seen {
    /// curl's exit status (0: complete transfer; 7: refused; 18: partial; 56: recv failure).
    pub exit: i32,
    pub status: u32,
    pub bytes: u64,
    pub took: Duration,
}

/// curl in the client namespace, body discarded.
pub fn fetch(lab: &Lab, args: &[&str]) -> Seen {
    let mut cmd = vec![
        "curl",
        "-sS",
        "--max-time",
        "15",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
    ];
    cmd.extend(args);
    let t = Instant::now();
    let out = lab.exec("client", &cmd);
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    Seen {
        exit: out.status.code().unwrap_or(-1),
        status: w.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        bytes: w.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        took,
    }
}

/// The appliance still serves: a GET through nginx and the process alive.
pub fn still_serving(lab: &Lab, z: &mut ZProxy) {
    assert!(z.running(), "zproxy exited:\n{}", z.log());
    let (code, text) = curl(lab, &[&url(80, "/")]);
    assert_eq!(
        (code, text.as_str()),
        (200, UPSTREAM_BODY),
        "a normal request after the fault; zproxy log:\n{}",
        z.log()
    );
    assert!(z.running(), "zproxy exited:\n{}", z.log());
}

/// Failures of a zproxy-bench result other than `allowed` kinds.
pub fn other_failures(r: &Value, allowed: &[&str]) -> Vec<(String, u64)> {
    r["failures"]
        .as_object()
        .expect("failures object")
        .iter()
        .filter(|(k, v)| !allowed.contains(&k.as_str()) && u(v) > 0)
        .map(|(k, v)| (k.clone(), u(v)))
        .collect()
}

pub fn status_codes(r: &Value) -> Vec<String> {
    r["status_codes"]
        .as_object()
        .expect("status_codes object")
        .keys()
        .cloned()
        .collect()
}

/// nginx on :80 (listener 80, group "web") for the still-serving checks, with
/// no upstream keep-alive pool: pooled connections are flows too, and
/// flows_active must fall back to 0.
pub fn web_unpooled() -> String {
    web("keepalive = 0")
}

/// A listener on `port` to a one-server group `name` at 10.72.0.1:`server_port`.
pub fn faulty(port: u16, name: &str, server_port: u16, extra: &str) -> String {
    listener(port, "http", name)
        + &upstream(
            name,
            &[(&format!("10.72.0.1:{server_port}"), 1)],
            &format!("keepalive = 0\n{extra}"),
        )
}

/// :80 proxied to nginx (no upstream pool) and :8080 static.
pub fn web_and_static() -> String {
    web_unpooled()
        + "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
           [listener.static]\nstatus = 200\nbody = \"hello from zproxy\\n\"\n"
}
