//! Running closures on EAL worker lcores.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::error::{DpdkError, Result};

type Job = Box<dyn FnOnce() -> i32 + Send>;

/// A closure launched on a worker lcore; [`Launched::wait`] joins it.
pub struct Launched {
    lcore: u32,
}

/// Launches `job` on worker `lcore` (`rte_eal_remote_launch`). The lcore must
/// be an idle EAL worker (not the main lcore).
pub fn launch(lcore: u32, job: impl FnOnce() -> i32 + Send + 'static) -> Result<Launched> {
    let boxed: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(boxed) as *mut c_void;
    // SAFETY: trampoline matches lcore_function_t; arg is a leaked Box<Job>
    // that the trampoline takes back exactly once.
    let ret = unsafe { zproxy_ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so the trampoline never ran: reclaim the box.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(DpdkError::from_ret(
            format!("launching a worker on lcore {lcore}"),
            ret,
        ));
    }
    Ok(Launched { lcore })
}

impl Launched {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the job to return; its return value (-1 if it panicked).
    pub fn wait(self) -> i32 {
        // SAFETY: lcore was launched by `launch`.
        unsafe { zproxy_ffi::rte_eal_wait_lcore(self.lcore) }
    }
}

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `launch`, taken back once here.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    // A panic must not unwind into C: report it as a failed worker.
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(code) => code,
        Err(_) => {
            log::error!("worker on lcore {} panicked", current());
            -1
        }
    }
}

/// The calling thread's lcore id (`LCORE_ID_ANY` off-lcore).
pub fn current() -> u32 {
    // SAFETY: reads a thread-local.
    unsafe { zproxy_ffi::rte_lcore_id() }
}

/// The NUMA node of EAL lcore `lcore` (`rte_lcore_to_socket_id`), or `None`
/// for an id beyond `RTE_MAX_LCORE`. Meaningful after
/// [`Eal::init`](super::Eal::init).
pub fn node_of(lcore: u32) -> Option<u32> {
    if lcore >= zproxy_ffi::RTE_MAX_LCORE {
        return None;
    }
    // SAFETY: plain read of EAL's static lcore table, which has
    // RTE_MAX_LCORE entries; `lcore` was checked to be below that.
    Some(unsafe { zproxy_ffi::rte_lcore_to_socket_id(lcore) })
}

/// The NUMA node of the calling lcore (`None` off-lcore or when unknown).
pub fn current_node() -> Option<u32> {
    // SAFETY: reads a thread-local.
    let node = unsafe { zproxy_ffi::rte_socket_id() };
    (node != zproxy_ffi::SOCKET_ID_ANY as u32).then_some(node)
}
