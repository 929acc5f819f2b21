//! Owning handle to a pktmbuf pool on hugepages.

use std::ffi::CString;
use std::ptr::NonNull;

use super::error::{DpdkError, Errno, Result};
use super::mbuf::Mbuf;
use super::Eal;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`), freed on drop.
pub struct Mempool {
    raw: NonNull<zproxy_ffi::rte_mempool>,
    name: String,
    size: u32,
}

// SAFETY: an rte_mempool is designed for concurrent use from many lcores
// (per-lcore caches plus a lock-free ring).
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations through &Mempool are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with `data_room` bytes each (headroom
    /// included) on NUMA `socket` (-1: any).
    pub fn new(
        _eal: &Eal,
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self> {
        let cname = CString::new(name)
            .map_err(|e| DpdkError::nul(format!("mbuf pool name {name:?}"), e))?;
        // SAFETY: cname is a valid C string; EAL is initialised (we hold &Eal).
        let raw = unsafe {
            zproxy_ffi::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache, 0, data_room, socket)
        };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::PoolCreate {
            name: name.to_owned(),
            size,
            data_room,
            socket,
            cause: Errno::last(),
        })?;
        Ok(Self {
            raw,
            name: name.to_owned(),
            size,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs currently out of the pool (held by us or by a driver).
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { zproxy_ffi::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// One mbuf, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pktmbuf pool; the result is NULL or a fresh mbuf we now own.
        let m = unsafe { zproxy_ffi::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-NULL m came out of the pool and nobody else holds it.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    pub(crate) fn as_ptr(&self) -> *mut zproxy_ffi::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let in_use = self.in_use();
        if in_use != 0 {
            // Not necessarily a leak: some drivers keep mbufs after close (see Port).
            log::debug!(
                "mbuf pool '{}': {in_use} of {} mbufs still out at free",
                self.name,
                self.size
            );
        }
        // SAFETY: raw is a live pool; ports using it were stopped and closed
        // before (they borrow the pool), so no driver still references it.
        unsafe { zproxy_ffi::rte_mempool_free(self.raw.as_ptr()) };
    }
}
