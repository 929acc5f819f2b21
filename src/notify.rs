//! Readiness for a supervisor (systemd `Type=notify`): `READY=1` once every
//! worker polls, `RELOADING=1` / `READY=1` around a SIGHUP, `STOPPING=1` when
//! a stop begins. Nothing is sent when `NOTIFY_SOCKET` is unset, and a
//! failure to send is logged, never fatal: the proxy serves either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sd_notify::NotifyState;

fn send(what: &str, state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("cannot tell the service manager {what} (NOTIFY_SOCKET): {e}");
    }
}

/// Counts the workers that have started polling; the control thread sends
/// `READY=1` once all have.
pub struct Readiness {
    polling: Arc<AtomicUsize>,
    workers: usize,
    sent: bool,
}

impl Readiness {
    pub fn new(workers: usize) -> Self {
        Readiness {
            polling: Arc::default(),
            workers,
            sent: false,
        }
    }

    /// The handle a worker bumps once, when it enters its poll loop.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.polling.clone()
    }

    /// Sends `READY=1` the first time every worker polls; true from then on.
    pub fn check(&mut self) -> bool {
        if !self.sent && self.polling.load(Ordering::Relaxed) >= self.workers {
            self.sent = true;
            let status = format!("STATUS=serving: {} worker(s) polling", self.workers);
            send(
                "READY=1",
                &[NotifyState::Ready, NotifyState::Custom(&status)],
            );
        }
        self.sent
    }
}

/// A SIGHUP reload begins (systemd then waits for [`reloaded`]).
pub fn reloading() {
    let mut state = vec![NotifyState::Reloading];
    // systemd >= 253 wants the time of the request with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    send("RELOADING=1", &state);
}

/// The reload is over, applied or refused (`status` says which).
pub fn reloaded(status: &str) {
    let status = format!("STATUS={status}");
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Custom(&status)],
    );
}

/// A stop begins: a drain (SIGTERM) or at once (SIGINT, a failed worker).
pub fn stopping(status: &str) {
    let status = format!("STATUS={status}");
    send(
        "STOPPING=1",
        &[NotifyState::Stopping, NotifyState::Custom(&status)],
    );
}
