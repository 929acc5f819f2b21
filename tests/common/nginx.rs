//! Extra nginx servers in a lab's upstream namespace (the lab_proxy_* tests).

use std::path::PathBuf;
use std::time::Duration;

use super::proxy::{accepts, line_count};
use super::*;

/// An extra nginx in the upstream namespace, with its own prefix dir and logs.
pub struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
    listen: (String, u16),
}

impl Nginx {
    /// Gives the upstream namespace the address `ip` (a server that may be down).
    pub fn add_address(lab: &Lab, ip: &str) {
        lab.exec_ok(
            "upstream",
            ["ip", "addr", "add", &format!("{ip}/24"), "dev", UPSTREAM_IF],
        );
    }

    /// An nginx on a new address `ip` of the upstream namespace, answering
    /// "server IP" on :80 (balancing tests tell servers apart by it).
    pub fn named(lab: &Lab, name: &str, ip: &str) -> Nginx {
        Nginx::add_address(lab, ip);
        Nginx::start(
            lab,
            name,
            ip,
            80,
            &format!("location / {{ default_type text/plain; return 200 \"server {ip}\\n\"; }}"),
        )
    }

    /// Writes a config around `server` (the body of one `server {}` block,
    /// without the listen line) and starts it.
    pub fn start(lab: &Lab, name: &str, ip: &str, port: u16, server: &str) -> Nginx {
        let dir = lab.run_dir().join(name);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"
worker_processes 1;
daemon on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    server {{
        listen {ip}:{port} backlog=4096;
        {server}
    }}
}}
"#
            ),
        )
        .unwrap();
        // Workers run unprivileged: let them write bodies and uploads.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&dir)
            .status();
        let n = Nginx {
            dir,
            conf,
            listen: (ip.to_owned(), port),
        };
        n.launch(lab);
        n
    }

    pub fn launch(&self, lab: &Lab) {
        let d = self.dir.to_str().unwrap();
        lab.exec_ok(
            "upstream",
            [
                "nginx",
                "-q",
                "-p",
                d,
                "-e",
                &format!("{d}/error.log"),
                "-c",
                self.conf.to_str().unwrap(),
            ],
        );
        let (ip, port) = (&self.listen.0, self.listen.1);
        assert!(
            wait_until(Duration::from_secs(5), || accepts(
                lab, "upstream", ip, port
            )),
            "nginx {} does not accept on {ip}:{port}",
            self.dir.display()
        );
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the master (SIGTERM: fast shutdown) and waits until it is gone.
    pub fn stop(&self, lab: &Lab) {
        let pid = self.pid().expect("nginx pid");
        // SAFETY: plain kill(2) of a process we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (ip, port) = (&self.listen.0, self.listen.1);
        assert!(
            wait_until(Duration::from_secs(5), || {
                // SAFETY: signal 0 only checks that the pid exists.
                let gone = unsafe { libc::kill(pid, 0) } != 0;
                gone && !accepts(lab, "upstream", ip, port)
            }),
            "nginx {pid} did not stop"
        );
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    pub fn requests(&self) -> usize {
        line_count(&self.access_log())
    }
}
