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

/// The control thread's record of reloads: the status it serves, and an
/// applied reload not every worker has taken yet (it counts as done, for
/// `zproxy reload`, only once they all have).
#[derive(Debug, Default)]
pub struct Reloads {
    status: ReloadStatus,
    /// Worker applications (`Control::reloaded`) that mean every worker has
    /// the last applied reload, and its message.
    pending: Option<(usize, String)>,
    /// Worker applications expected so far.
    expected: usize,
}

impl Reloads {
    /// What the management endpoint serves.
    pub fn status(&self) -> &ReloadStatus {
        &self.status
    }

    /// One SIGHUP: the new config and layout to hand the workers (then call
    /// [`handed`](Self::handed)), or `None` (logged, counted) when the file
    /// is unreadable, invalid, or changes a key that needs a restart; then
    /// the running config stays as it is.
    pub fn attempt(
        &mut self,
        running: &Config,
        layout: &Layout,
        path: &Path,
    ) -> Option<(Config, Layout)> {
        // The previous one is in the workers' queues: it will be applied.
        if let Some((_, message)) = self.pending.take() {
            self.record(true, message);
        }
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
                self.pending = Some((self.expected, message));
                let layout = layout.merge(&next);
                Some((next, layout))
            }
            Err(why) => {
                // One line, whatever the config error looks like.
                let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                log::error!("SIGHUP: reload refused: {why}");
                self.record(false, why);
                None
            }
        }
    }

    /// The applied reload went to `workers` queues, `replaced` of which
    /// still held an earlier one (that one will now never be applied).
    pub fn handed(&mut self, workers: usize, replaced: usize) {
        self.expected += workers - replaced;
        if let Some((target, _)) = &mut self.pending {
            *target = self.expected;
        }
    }

    /// Called each tick with `Control::reloaded`: completes the pending
    /// reload once every worker has it.
    pub fn poll(&mut self, applied: usize) {
        if self.pending.as_ref().is_some_and(|(t, _)| applied >= *t) {
            let (_, message) = self.pending.take().expect("checked");
            self.record(true, message);
        }
    }

    fn record(&mut self, ok: bool, message: String) {
        let s = &mut self.status;
        s.attempts += 1;
        s.refused += u64::from(!ok);
        s.last_ok = ok;
        s.last_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        s.last_message = message;
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
        let mut r = Reloads::default();

        std::fs::write(&path, text.replace("[[listener]]", "[[listener]")).unwrap();
        assert!(r.attempt(&running, &layout, &path).is_none());
        let s = r.status();
        assert_eq!((s.attempts, s.refused, s.last_ok), (1, 1, false));
        assert!(s.last_message.contains("z.toml"), "{}", s.last_message);
        assert!(!s.last_message.contains('\n'));

        std::fs::write(&path, format!("[runtime]\nmbufs = 32767\n{text}")).unwrap();
        assert!(r.attempt(&running, &layout, &path).is_none());
        let s = r.status();
        assert!(
            s.last_message.ends_with(
                "runtime.mbufs changed: needs a restart (systemctl restart zproxy); \
                 keeping the running config"
            ),
            "{}",
            s.last_message
        );

        std::fs::write(&path, text.replace("10.0.0.5:80", "10.0.0.6:80")).unwrap();
        let (next, _) = r.attempt(&running, &layout, &path).expect("applies");
        assert_eq!(
            next.upstreams[0].servers[0].address.to_string(),
            "10.0.0.6:80"
        );
        // Done once both workers have it (neither had an older one queued).
        r.handed(2, 0);
        r.poll(1);
        assert_eq!(r.status().attempts, 2, "not before every worker has it");
        r.poll(2);
        let s = r.status();
        assert_eq!((s.attempts, s.refused, s.last_ok), (3, 2, true));
        assert!(
            s.last_message
                .ends_with("upstream.servers (upstream \"web\"): +10.0.0.6:80 -10.0.0.5:80"),
            "{}",
            s.last_message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
