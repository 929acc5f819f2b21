//! SIGHUP on the control thread: read the file again, and either apply it
//! whole or refuse it whole, saying which keys and why ([`table`] decides).
//! The outcome goes to the log (one line) and to [`ReloadStatus`], which the
//! management endpoint serves and `zproxy reload` waits on.

pub mod table;

use std::path::Path;

pub use table::{diff, on_change, Diff, OnChange, TABLE};

use crate::config::Config;
use crate::mgmt::ReloadStatus;
use crate::plan::Layout;

/// One SIGHUP: the new config and layout to hand the workers, or `None`
/// (logged, counted) when the file is unreadable, invalid, or changes a key
/// that needs a restart; then the running config stays as it is.
pub fn attempt(
    running: &Config,
    layout: &Layout,
    path: &Path,
    status: &mut ReloadStatus,
) -> Option<(Config, Layout)> {
    status.attempts += 1;
    status.last_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let outcome = match Config::load(path) {
        Err(e) => Err(format!(
            "{}; keeping the running config",
            crate::error::Chain(&e)
        )),
        Ok(next) => {
            let d = diff(running, &next);
            match d.refusal() {
                Some(why) => Err(format!("{}: {why}", path.display())),
                None => Ok((next, format!("{}: {}", path.display(), d.summary()))),
            }
        }
    };
    match outcome {
        Ok((next, message)) => {
            log::info!("SIGHUP: reloaded {message}");
            status.last_ok = true;
            status.last_message = message;
            let layout = layout.merge(&next);
            Some((next, layout))
        }
        Err(why) => {
            // One line, whatever the config error looks like.
            let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            log::error!("SIGHUP: reload refused: {why}");
            status.refused += 1;
            status.last_ok = false;
            status.last_message = why;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_reload_keeps_nothing_and_says_why() {
        let dir = std::env::temp_dir().join(format!("zproxy-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("z.toml");
        let text = r#"
[[port]]
name = "p"
vdev = "net_ring0"
address = "10.0.0.2/24"

[[listener]]
port = "p"
tcp_port = 80
mode = "tcp"
upstream = "web"

[[upstream]]
name = "web"
port = "p"
servers = [{ address = "10.0.0.5:80" }]
"#;
        let running = Config::parse(text).unwrap();
        let layout = Layout::default().merge(&running);
        let mut status = ReloadStatus::default();

        std::fs::write(&path, text.replace("[[listener]]", "[[listener]")).unwrap();
        assert!(attempt(&running, &layout, &path, &mut status).is_none());
        assert_eq!(
            (status.attempts, status.refused, status.last_ok),
            (1, 1, false)
        );
        assert!(
            status.last_message.contains("z.toml"),
            "{}",
            status.last_message
        );
        assert!(!status.last_message.contains('\n'));

        let more = format!("[runtime]\nmbufs = 8191\n{text}");
        std::fs::write(&path, more).unwrap();
        assert!(attempt(&running, &layout, &path, &mut status).is_none());
        assert!(
            status
                .last_message
                .ends_with("runtime.mbufs changed: needs a restart (systemctl restart zproxy); keeping the running config"),
            "{}",
            status.last_message
        );

        std::fs::write(&path, text.replace("10.0.0.5:80", "10.0.0.6:80")).unwrap();
        let (next, _) = attempt(&running, &layout, &path, &mut status).expect("applies");
        assert_eq!(
            next.upstreams[0].servers[0].address.to_string(),
            "10.0.0.6:80"
        );
        assert_eq!(
            (status.attempts, status.refused, status.last_ok),
            (3, 2, true)
        );
        assert!(
            status
                .last_message
                .ends_with("upstream.servers (upstream \"web\"): +10.0.0.6:80 -10.0.0.5:80"),
            "{}",
            status.last_message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
