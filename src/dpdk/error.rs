//! DPDK errors as Rust errors: what we were doing, with DPDK's errno and its
//! `rte_strerror` text as the cause.

use std::ffi::{CStr, NulError};

pub type Result<T> = std::result::Result<T, DpdkError>;

/// DPDK's errno and its `rte_strerror` text: the cause of a failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text} (errno {errno})")]
pub struct Errno {
    pub errno: i32,
    pub text: String,
}

impl Errno {
    /// From a positive errno value.
    pub fn new(errno: i32) -> Self {
        // SAFETY: rte_strerror returns a pointer to a static or thread-local
        // NUL-terminated string, valid until the next call on this thread; we copy it now.
        let text = unsafe { CStr::from_ptr(zproxy_ffi::rte_strerror(errno)) }
            .to_string_lossy()
            .into_owned();
        Self { errno, text }
    }

    /// The calling thread's `rte_errno`.
    pub fn last() -> Self {
        // SAFETY: reads the thread-local rte_errno.
        Self::new(unsafe { zproxy_ffi::rte_errno() })
    }

    /// From a negative-errno return value (`-EINVAL` ...).
    pub fn from_ret(ret: i32) -> Self {
        Self::new(ret.unsigned_abs() as i32)
    }
}

/// A failed DPDK operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DpdkError {
    /// A DPDK call failed; the cause is DPDK's errno.
    #[error("{context}")]
    Call {
        context: String,
        #[source]
        cause: Errno,
    },
    /// Refused on the Rust side, before or after calling DPDK.
    #[error("{context}: {reason}")]
    Invalid { context: String, reason: String },
    /// A string handed to DPDK contains a NUL byte.
    #[error("{what} contains a NUL byte: remove it")]
    Nul {
        what: String,
        #[source]
        source: NulError,
    },
    /// `Eal::init` was called a second time.
    #[error("rte_eal_init: EAL is already initialised in this process (it can be initialised only once)")]
    EalAlreadyInitialised,
    /// `rte_pktmbuf_pool_create` failed (usually: not enough hugepage memory).
    #[error(
        "creating mbuf pool '{name}' ({size} mbufs of {data_room} B on socket {socket}) - \
         are enough hugepages reserved? try: hugepages/setup.sh --check"
    )]
    PoolCreate {
        name: String,
        size: u32,
        data_room: u16,
        socket: i32,
        #[source]
        cause: Errno,
    },
    /// No probed ethdev has the name a port's device gives.
    #[error(
        "finding device '{name}': no such DPDK port ({probed} ports probed). For a vdev, check \
         the interface it names exists in this network namespace; for a PCI NIC, bind it to \
         vfio-pci with dpdk-devbind.py (see INSTALL.md)"
    )]
    NoSuchPort { name: String, probed: u16 },
}

impl DpdkError {
    /// A failed call that returned a negative errno (`-EINVAL` ...).
    pub fn from_ret(context: impl Into<String>, ret: i32) -> Self {
        Self::Call {
            context: context.into(),
            cause: Errno::from_ret(ret),
        }
    }

    /// A failed call that set the calling thread's `rte_errno`.
    pub fn last(context: impl Into<String>) -> Self {
        Self::Call {
            context: context.into(),
            cause: Errno::last(),
        }
    }

    /// An error found on the Rust side before or after calling DPDK.
    pub fn other(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            context: context.into(),
            reason: reason.into(),
        }
    }

    /// A string for DPDK that contains a NUL byte.
    pub fn nul(what: impl Into<String>, source: NulError) -> Self {
        Self::Nul {
            what: what.into(),
            source,
        }
    }

    /// DPDK's errno, when a DPDK call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Call { cause, .. } | Self::PoolCreate { cause, .. } => Some(cause.errno),
            _ => None,
        }
    }
}

/// Turns DPDK's "negative errno on failure" convention into a `Result`.
pub(crate) fn check(ret: i32, context: impl FnOnce() -> String) -> Result<i32> {
    if ret < 0 {
        Err(DpdkError::from_ret(context(), ret))
    } else {
        Ok(ret)
    }
}
