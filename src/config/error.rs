//! What is wrong with a config file, where, and what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A config problem: the file and line where known, the key at fault, and
/// what to do. Shown as "FILE: line N: message".
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read; the cause is the I/O error.
    #[error("{}: cannot read config file (check the path and its permissions)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key its section does not have, or a value of the wrong
    /// type (the message is the TOML parser's).
    #[error("{}{message}", Location(.file.as_deref(), *.line))]
    Syntax {
        file: Option<PathBuf>,
        line: Option<usize>,
        message: String,
    },
    /// A value that is out of range or at odds with another one; `key` is
    /// its dotted name (e.g. "upstream.local_ports", "runtime.worker_lcores").
    #[error("{}{message}", Location(.file.as_deref(), *.line))]
    Invalid {
        file: Option<PathBuf>,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The same error, said to be in the file at `path`.
    pub fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Self::Read { .. } => {}
            Self::Syntax { file, .. } | Self::Invalid { file, .. } => {
                *file = Some(path.to_owned());
            }
        }
        self
    }

    /// The line (1-based) at fault, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } => None,
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
        }
    }

    /// The dotted name of the key at fault, for a value the checks refused.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// "FILE: line N: ", either part left out when unknown.
struct Location<'a>(Option<&'a Path>, Option<usize>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.0 {
            write!(f, "{}: ", file.display())?;
        }
        if let Some(line) = self.1 {
            write!(f, "line {line}: ")?;
        }
        Ok(())
    }
}
