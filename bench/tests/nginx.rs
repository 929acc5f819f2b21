//! `zproxy-bench` against a real nginx on 127.0.0.1: the requests it reports
//! must match nginx's access log. Skipped when /usr/sbin/nginx is absent.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bench, temp_dir};

const NGINX: &str = "/usr/sbin/nginx";

/// An nginx process that is killed on drop.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path, port: u16) -> Nginx {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from nginx\n").unwrap();
    let conf = format!(
        r#"
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {d}/www; }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let nginx = Nginx { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// Access-log lines, waiting briefly for nginx to write the last ones.
fn log_lines(dir: &Path, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = std::fs::read_to_string(dir.join("access.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn counts_match_nginx_access_log() {
    if !Path::new(NGINX).exists() {
        eprintln!("skipping: {NGINX} not installed");
        return;
    }
    let dir = temp_dir("nginx");
    let port = free_port();
    let _nginx = start_nginx(&dir, port);
    // The readiness probe above may or may not have been logged (it sent nothing).
    let base = log_lines(&dir, 0);

    let run = bench(
        port,
        &[
            "--concurrency",
            "50",
            "--requests",
            "2000",
            "--expect-size",
            "17",
        ],
    );
    assert_eq!(run.get("successes"), 2000, "{}", run.json);
    assert_eq!(run.get("failures_total"), 0);
    let lines = log_lines(&dir, base + 2000);
    assert_eq!(lines - base, 2000, "access log lines vs reported requests");

    let run = bench(
        port,
        &[
            "--concurrency",
            "20",
            "--requests",
            "1000",
            "--keep-alive",
            "on",
            "--threads",
            "2",
            "--expect-size",
            "17",
        ],
    );
    assert_eq!(run.get("successes"), 1000, "{}", run.json);
    assert!(run.get("connections_opened") <= 40, "{}", run.json);
    let lines = log_lines(&dir, base + 3000);
    assert_eq!(lines - base, 3000);

    let run = bench(
        port,
        &[
            "--concurrency",
            "10",
            "--requests",
            "100",
            "--path",
            "/missing",
        ],
    );
    assert_eq!(run.failure("non_2xx"), 100, "{}", run.json);
    assert_eq!(run.get("successes"), 0);
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"GET /missing HTTP/1.1\" 404"))
            .count(),
        100
    );
    drop(_nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
