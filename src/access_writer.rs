//! The access log's writer thread: drains every worker's ring, formats the
//! lines (`access_format`), writes them through a buffer flushed at least
//! every 100 ms, reopens the file when asked (SIGUSR1, after logrotate
//! moved it), and warns - at most every few seconds - when workers dropped
//! lines because it fell behind. At stop it drains what is left and flushes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access_format::{self, Names};
use crate::app::access_log::{AccessLog, Ring};
use crate::config::{AccessLogFormat, Config};
use crate::error::RunError;
use crate::net::counters::{Counter, SharedCounters};
use crate::plan::Layout;

/// Longest a written line waits in the buffer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The writer sleeps this long when every ring was empty.
const IDLE_SLEEP: Duration = Duration::from_millis(5);
/// At most one warning about dropped lines (or write errors) this often.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// Bytes buffered before a write.
const BUFFER: usize = 64 * 1024;

/// The access log of a running appliance (when `access_log.path` is set):
/// the rings handed to the workers and the writer draining them.
pub struct Running {
    writer: Writer,
    rings: Vec<Arc<Ring>>,
    names: Arc<Mutex<Arc<Names>>>,
    sample: u32,
}

/// Starts the writer for `cfg` (`None` when the log is off); `reopen` is
/// the SIGUSR1 flag; `counters` the workers' (one per worker).
pub fn start(
    cfg: &Config,
    layout: &Layout,
    counters: &[Arc<SharedCounters>],
    reopen: Arc<AtomicBool>,
) -> Result<Option<Running>, RunError> {
    let a = &cfg.access_log;
    let Some(target) = Target::from_config(&a.path) else {
        return Ok(None);
    };
    let rings: Vec<Arc<Ring>> = counters
        .iter()
        .map(|_| Arc::new(Ring::new(a.ring_entries as usize)))
        .collect();
    let names = Arc::new(Mutex::new(Arc::new(names_of(cfg, layout))));
    let writer = Writer::start(WriterSpec {
        target,
        format: a.format,
        rings: rings.clone(),
        names: names.clone(),
        reopen,
        counters: counters.to_vec(),
    })
    .map_err(|cause| RunError::AccessLog {
        path: a.path.clone(),
        cause,
    })?;
    log::info!(
        "access log: {} ({:?}, 1 in {}, {} lines per worker ring)",
        a.path,
        a.format,
        a.sample,
        a.ring_entries
    );
    Ok(Some(Running {
        writer,
        rings,
        names,
        sample: a.sample,
    }))
}

impl Running {
    /// Worker `index`'s side of the log.
    pub fn for_worker(&self, index: usize) -> AccessLog {
        AccessLog::new(self.rings[index].clone(), self.sample)
    }

    /// A reload may add servers: lines name them from now on.
    pub fn rename(&self, cfg: &Config, layout: &Layout) {
        let names = Arc::new(names_of(cfg, layout));
        match self.names.lock() {
            Ok(mut n) => *n = names,
            Err(e) => *e.into_inner() = names,
        }
    }

    /// Drains, flushes and ends the writer (after the workers stopped).
    pub fn stop(self) {
        self.writer.stop();
    }
}

/// Listeners as "port:tcp_port", servers by layout index.
fn names_of(cfg: &Config, layout: &Layout) -> Names {
    Names {
        listeners: cfg.listeners.iter().map(|l| l.label()).collect(),
        servers: layout.servers(),
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `access_log.path`: "" (off: `None`), "stdout", or a file.
    pub fn from_config(path: &str) -> Option<Target> {
        match path {
            "" => None,
            "stdout" => Some(Target::Stdout),
            p => Some(Target::File(p.into())),
        }
    }

    fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::Stdout => Box::new(io::stdout()),
            Target::File(p) => Box::new(open_append(p)?),
        })
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

pub struct WriterSpec {
    pub target: Target,
    pub format: AccessLogFormat,
    /// One per worker.
    pub rings: Vec<Arc<Ring>>,
    /// Listener and server names; the control thread replaces them on reload.
    pub names: Arc<Mutex<Arc<Names>>>,
    /// Set on SIGUSR1: reopen the file.
    pub reopen: Arc<AtomicBool>,
    /// The workers' counters, for the dropped lines.
    pub counters: Vec<Arc<SharedCounters>>,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Opens the target (so that a bad path stops the start) and starts the thread.
    pub fn start(spec: WriterSpec) -> io::Result<Writer> {
        let out = BufWriter::with_capacity(BUFFER, spec.target.open()?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || Drain::new(spec, out).run(&stop))?
        };
        Ok(Writer { stop, thread })
    }

    /// Writes what the rings still hold, flushes and ends the thread (call
    /// after the workers stopped).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            log::error!("access log: the writer thread panicked; the last lines may be lost");
        }
    }
}

struct Drain {
    spec: WriterSpec,
    out: BufWriter<Box<dyn Write + Send>>,
    line: String,
    last_flush: Instant,
    last_warn: Option<Instant>,
    dropped_warned: u64,
    /// A write failed: lines are lost until the next reopen or success.
    failing: bool,
}

impl Drain {
    fn new(spec: WriterSpec, out: BufWriter<Box<dyn Write + Send>>) -> Drain {
        Drain {
            spec,
            out,
            line: String::with_capacity(512),
            last_flush: Instant::now(),
            last_warn: None,
            dropped_warned: 0,
            failing: false,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        loop {
            // Read before draining: whatever the workers pushed before they
            // stopped is in the rings by now, and this pass takes it.
            let stopping = stop.load(Ordering::Relaxed);
            let wrote = self.drain_rings();
            if self.spec.reopen.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY || stopping {
                self.last_flush = Instant::now();
                let flushed = self.out.flush();
                self.check(flushed);
            }
            self.warn_dropped();
            if stopping {
                return;
            }
            if wrote == 0 {
                std::thread::sleep(IDLE_SLEEP);
            }
        }
    }

    /// Formats and writes everything the rings hold now; how many lines.
    fn drain_rings(&mut self) -> usize {
        let names = self
            .spec
            .names
            .lock()
            .map_or_else(|e| e.into_inner().clone(), |n| n.clone());
        let mut wrote = 0;
        for i in 0..self.spec.rings.len() {
            let ring = self.spec.rings[i].clone();
            // Not more than the ring held at the start: others get their turn.
            for _ in 0..ring.len() {
                let Some(o) = ring.pop() else { break };
                self.line.clear();
                access_format::line(&mut self.line, &o, &names, self.spec.format);
                let written = self.out.write_all(self.line.as_bytes());
                self.check(written);
                wrote += 1;
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.last_flush = Instant::now();
                let flushed = self.out.flush();
                self.check(flushed);
            }
        }
        wrote
    }

    fn reopen(&mut self) {
        let Target::File(path) = self.spec.target.clone() else {
            return; // stdout: nothing to reopen
        };
        let flushed = self.out.flush();
        self.check(flushed);
        match open_append(&path) {
            Ok(f) => {
                self.out = BufWriter::with_capacity(BUFFER, Box::new(f));
                self.failing = false;
                log::info!("access log: reopened {}", path.display());
            }
            Err(e) => log::error!(
                "access log: cannot reopen {}: {e}; still writing to the old file (fix the directory or permissions and send SIGUSR1 again)",
                path.display()
            ),
        }
    }

    fn check(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing && self.may_warn() {
                    log::error!("access log: write failed: {e}; lines are lost until writes succeed again (is the disk full?)");
                }
                self.failing = true;
            }
        }
    }

    fn may_warn(&mut self) -> bool {
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return false;
        }
        self.last_warn = Some(Instant::now());
        true
    }

    fn warn_dropped(&mut self) {
        if self.last_warn.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        let dropped: u64 = self
            .spec
            .counters
            .iter()
            .map(|c| c.get(Counter::AccessLogDropped))
            .sum();
        if dropped > self.dropped_warned && self.may_warn() {
            log::warn!(
                "access log: {} lines dropped ({dropped} in all): the writer falls behind; raise access_log.ring_entries, log to a faster disk, or sample (access_log.sample)",
                dropped - self.dropped_warned
            );
            self.dropped_warned = dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::outcome::Outcome;

    fn spec(path: &std::path::Path, rings: &[Arc<Ring>], reopen: &Arc<AtomicBool>) -> WriterSpec {
        WriterSpec {
            target: Target::File(path.into()),
            format: AccessLogFormat::Text,
            rings: rings.to_vec(),
            names: Arc::new(Mutex::new(Arc::new(Names::default()))),
            reopen: reopen.clone(),
            counters: vec![Arc::default()],
        }
    }

    fn line(path: &str) -> Outcome {
        let mut o = Outcome::default();
        o.path.set(path.as_bytes());
        o
    }

    fn read(p: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').nth(5).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn writes_every_ring_reopens_on_request_and_drains_at_stop() {
        let dir = std::env::temp_dir().join(format!("zproxy-alog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (path, moved) = (dir.join("a.log"), dir.join("a.log.1"));
        let rings = [Arc::new(Ring::new(8)), Arc::new(Ring::new(8))];
        let reopen = Arc::new(AtomicBool::new(false));
        let w = Writer::start(spec(&path, &rings, &reopen)).unwrap();
        rings[0].push(line("/a")).unwrap();
        rings[1].push(line("/b")).unwrap();
        let t = Instant::now();
        while read(&path).len() < 2 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            read(&path),
            ["/a", "/b"],
            "flushed within 100 ms of writing"
        );
        std::fs::rename(&path, &moved).unwrap();
        reopen.store(true, Ordering::Relaxed);
        while reopen.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        rings[1].push(line("/c")).unwrap();
        rings[0].push(line("/d")).unwrap();
        w.stop();
        assert_eq!(read(&moved), ["/a", "/b"]);
        let mut rest = read(&path);
        rest.sort();
        assert_eq!(rest, ["/c", "/d"], "the rest, in the new file, at stop");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_opened_stops_the_start() {
        let rings = [Arc::new(Ring::new(1))];
        let reopen = Arc::new(AtomicBool::new(false));
        let p = std::path::Path::new("/nonexistent-dir/a.log");
        assert!(Writer::start(spec(p, &rings, &reopen)).is_err());
        assert_eq!(Target::from_config(""), None);
        assert_eq!(Target::from_config("stdout"), Some(Target::Stdout));
    }
}
