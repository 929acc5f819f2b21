//! DPDK errors as Rust errors carrying `rte_strerror` text.

use std::ffi::CStr;
use std::fmt;

pub type Result<T> = std::result::Result<T, DpdkError>;

/// A failed DPDK call: what we were doing, and DPDK's errno and its text.
#[derive(Debug, Clone)]
pub struct DpdkError {
    pub context: String,
    pub errno: i32,
    pub text: String,
}

impl DpdkError {
    /// Builds an error from a negative-errno return value (`-EINVAL` ...).
    pub fn from_ret(context: impl Into<String>, ret: i32) -> Self {
        Self::from_errno(context, ret.unsigned_abs() as i32)
    }

    /// Builds an error from the calling thread's `rte_errno`.
    pub fn last(context: impl Into<String>) -> Self {
        // SAFETY: reads the thread-local rte_errno.
        let errno = unsafe { zproxy_ffi::rte_errno() };
        Self::from_errno(context, errno)
    }

    fn from_errno(context: impl Into<String>, errno: i32) -> Self {
        // SAFETY: rte_strerror returns a pointer to a static or thread-local
        // NUL-terminated string, valid until the next call on this thread; we copy it now.
        let text = unsafe { CStr::from_ptr(zproxy_ffi::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        Self {
            context: context.into(),
            errno,
            text,
        }
    }

    /// An error found on the Rust side before or after calling DPDK.
    pub fn other(context: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            errno: 0,
            text: text.into(),
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno != 0 {
            write!(f, "{}: {} (errno {})", self.context, self.text, self.errno)
        } else {
            write!(f, "{}: {}", self.context, self.text)
        }
    }
}

impl std::error::Error for DpdkError {}

/// Turns DPDK's "negative errno on failure" convention into a `Result`.
pub(crate) fn check(ret: i32, context: impl FnOnce() -> String) -> Result<i32> {
    if ret < 0 {
        Err(DpdkError::from_ret(context(), ret))
    } else {
        Ok(ret)
    }
}
