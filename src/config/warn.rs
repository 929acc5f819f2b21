//! What `zproxy check` adds to the loader: keys that do nothing where they
//! are written (warnings, not errors), and what depends on the machine
//! (the hugepage mount, the CPUs the workers are bound to).

use std::path::Path;

use super::locate::Place;
use super::{Config, ConfigError, HealthKind, ListenerMode};

/// A config as `zproxy check` sees it.
pub struct Checked {
    pub config: Config,
    /// "line N: ..." for keys that do nothing where they are.
    pub warnings: Vec<String>,
    /// The worker binding (`plan::binding`), one line per thread.
    pub binding: Vec<String>,
}

/// "line N: " or nothing.
fn at(line: Option<usize>) -> String {
    line.map_or(String::new(), |n| format!("line {n}: "))
}

impl Config {
    /// Loads `path` as `run` would, then checks what depends on this
    /// machine (topology read under `sysfs`) and collects warnings.
    pub fn check_file(path: &Path, sysfs: &Path) -> Result<Checked, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::check_text(&text, sysfs).map_err(|e| e.in_file(path))
    }

    /// As `check_file`, on a file's text.
    pub fn check_text(text: &str, sysfs: &Path) -> Result<Checked, ConfigError> {
        let config = Self::parse_on(text, sysfs)?;
        let rt = &config.runtime;
        let rt_at = |key: &str| Place::new("runtime", 0).line(text, key);
        if let Some(dir) = rt.hugepage_dir.as_deref().filter(|_| !rt.no_huge) {
            if !dir.is_dir() {
                return Err(ConfigError::Invalid {
                    file: None,
                    line: rt_at("hugepage_dir"),
                    key: "runtime.hugepage_dir".into(),
                    message: format!("runtime.hugepage_dir = \"{}\" is not a directory (EAL would go on without it): mount hugetlbfs there (hugepages/setup.sh) or remove the key to let EAL find a mount", dir.display()),
                });
            }
        }
        let log = &config.access_log;
        if !matches!(log.path.as_str(), "" | "stdout") {
            let path = Path::new(&log.path);
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(ConfigError::Invalid {
                    file: None,
                    line: Place::new("access_log", 0).line(text, "path"),
                    key: "access_log.path".into(),
                    message: format!("access_log.path = \"{}\": directory {} does not exist: create it, or log to \"stdout\"", log.path, dir.display()),
                });
            }
        }
        let binding = match crate::plan::binding(&config, sysfs) {
            Ok((lines, warnings)) => (lines, warnings),
            Err(e) => {
                let key = if e.contains("control CPU") {
                    "main_lcore"
                } else if rt.worker_cpus.is_some() {
                    "worker_cpus"
                } else if rt.cores.is_some() {
                    "cores"
                } else {
                    "worker_lcores"
                };
                return Err(ConfigError::Invalid {
                    file: None,
                    line: rt_at(key),
                    key: format!("runtime.{key}"),
                    message: format!("worker binding: {e}"),
                });
            }
        };
        let mut warnings = config.warnings(text);
        warnings.extend(config.tls_warnings());
        warnings.extend(binding.1.iter().map(|w| format!("binding: {w}")));
        Ok(Checked {
            config,
            warnings,
            binding: binding.0,
        })
    }

    /// Keys written where they do nothing.
    pub fn warnings(&self, text: &str) -> Vec<String> {
        let Ok(raw) = text.parse::<toml::Table>() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let table = |v: Option<&toml::Value>, i: usize| {
            v.and_then(|v| v.as_array())
                .and_then(|a| a.get(i))
                .and_then(|t| t.as_table())
                .cloned()
                .unwrap_or_default()
        };
        let runtime = raw
            .get("runtime")
            .and_then(|r| r.as_table())
            .cloned()
            .unwrap_or_default();
        let rt_at = |key: &str| at(Place::new("runtime", 0).line(text, key));
        if self.runtime.no_huge && runtime.contains_key("hugepage_dir") {
            out.push(format!("{}runtime.hugepage_dir does nothing with no_huge = true (no hugepages are used): remove one of them", rt_at("hugepage_dir")));
        }
        if !self.runtime.no_huge && runtime.contains_key("memory_mb") {
            out.push(format!("{}runtime.memory_mb does nothing without no_huge = true (EAL takes hugepages as it needs them): remove it", rt_at("memory_mb")));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let t = table(raw.get("listener"), i);
            let lat = |key: &str| at(Place::new("listener", i).line(text, key));
            let on = format!("listener on port '{}' tcp_port {}", l.port, l.tcp_port);
            if l.mode.base() == ListenerMode::Tcp && t.contains_key("header_timeout_ms") {
                out.push(format!("{}{on}: header_timeout_ms does nothing in mode = \"tcp\" (bytes are relayed, no request head is read): remove it, or use idle_timeout_ms", lat("header_timeout_ms")));
            }
            if l.mode != ListenerMode::Static && t.contains_key("static") {
                let line = Place::new("listener", i).sub("static", 0).line(text, "\0");
                out.push(format!(
                    "{}{on}: [listener.static] does nothing unless mode = \"static\": remove it",
                    at(line)
                ));
            }
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let Some(h) = &u.health_check else { continue };
            let t = table(raw.get("upstream"), i);
            let hc = t
                .get("health_check")
                .and_then(|h| h.as_table())
                .cloned()
                .unwrap_or_default();
            if h.kind == HealthKind::Tcp {
                for key in ["path", "expect_status"] {
                    if hc.contains_key(key) {
                        let line = Place::new("upstream", i)
                            .sub("health_check", 0)
                            .line(text, key);
                        out.push(format!("{}upstream '{}': health_check {key} does nothing with kind = \"tcp\" (only the connect is checked): use kind = \"http\" or remove it", at(line), u.name));
                    }
                }
            }
        }
        out
    }
}
