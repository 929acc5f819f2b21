//! Owning handle to one packet buffer, and a fixed-size burst of them.

use std::ptr::NonNull;

use zproxy_ffi::rte_mbuf;

/// One mbuf, returned to its pool on drop.
pub struct Mbuf {
    raw: NonNull<rte_mbuf>,
}

// SAFETY: an mbuf is plain memory owned by exactly one holder; moving the
// handle to another thread moves that ownership (the pool is thread-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// # Safety
    /// `raw` must be a valid mbuf that the caller owns and gives up.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<rte_mbuf>) -> Self {
        Self { raw }
    }

    /// Gives up ownership without freeing (e.g. to a driver's tx queue).
    #[inline]
    pub fn into_raw(self) -> *mut rte_mbuf {
        let raw = self.raw.as_ptr();
        std::mem::forget(self);
        raw
    }

    /// Bytes in the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the mbuf's
        // buffer, which lives as long as we own the mbuf.
        unsafe {
            let p = zproxy_ffi::rte_pktmbuf_mtod(self.raw.as_ptr()) as *const u8;
            std::slice::from_raw_parts(
                p,
                zproxy_ffi::rte_pktmbuf_data_len(self.raw.as_ptr()) as usize,
            )
        }
    }

    /// Bytes in the first segment, for rewriting in place.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; we own the mbuf exclusively (&mut self), so
        // no other reference to its bytes exists.
        unsafe {
            let p = zproxy_ffi::rte_pktmbuf_mtod(self.raw.as_ptr()) as *mut u8;
            std::slice::from_raw_parts_mut(
                p,
                zproxy_ffi::rte_pktmbuf_data_len(self.raw.as_ptr()) as usize,
            )
        }
    }

    /// True when the frame spans several segments (we only handle one).
    #[inline]
    pub fn is_chained(&self) -> bool {
        // SAFETY: reads a field of a valid mbuf.
        unsafe { zproxy_ffi::rte_pktmbuf_nb_segs(self.raw.as_ptr()) > 1 }
    }

    /// Offload flags the driver set on receive.
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        // SAFETY: reads a field of a valid mbuf.
        unsafe { zproxy_ffi::rte_pktmbuf_ol_flags(self.raw.as_ptr()) }
    }

    /// True when the driver flagged the IP or L4 checksum of this received
    /// frame as anything but good (see [`rx_checksum_bad`]).
    #[inline]
    pub fn rx_checksum_bad(&self) -> bool {
        rx_checksum_bad(self.ol_flags())
    }

    /// Appends `len` bytes and returns them for writing; `None` when the
    /// buffer is too small.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        // SAFETY: valid mbuf we own; append returns NULL when tailroom < len.
        let p = unsafe { zproxy_ffi::rte_pktmbuf_append(self.raw.as_ptr(), len16) } as *mut u8;
        if p.is_null() {
            return None;
        }
        // SAFETY: append reserved len bytes at p inside our buffer; &mut self
        // makes the slice unique.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }
}

/// True when the receive offload flags `ol_flags` do not say both the IP and
/// the L4 checksum are good. "Unknown" (neither good nor bad) counts as bad:
/// smoltcp does not verify checksums when offload is on, so only GOOD passes.
/// Meaningful only on a port with rx checksum offload enabled.
#[inline]
pub fn rx_checksum_bad(ol_flags: u64) -> bool {
    use zproxy_ffi::{
        RTE_MBUF_F_RX_IP_CKSUM_GOOD as IP_GOOD, RTE_MBUF_F_RX_IP_CKSUM_MASK as IP_MASK,
        RTE_MBUF_F_RX_L4_CKSUM_GOOD as L4_GOOD, RTE_MBUF_F_RX_L4_CKSUM_MASK as L4_MASK,
    };
    let ip = ol_flags & u64::from(IP_MASK);
    let l4 = ol_flags & u64::from(L4_MASK);
    ip != u64::from(IP_GOOD) || l4 != u64::from(L4_GOOD)
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; freeing returns it to its pool.
        unsafe { zproxy_ffi::rte_pktmbuf_free(self.raw.as_ptr()) }
    }
}

/// A fixed array of raw mbuf pointers for burst rx/tx, with no allocation.
/// Every pointer in `[..len]` is owned by the burst and freed on drop.
pub struct MbufBurst<const N: usize> {
    pub(crate) ptrs: [*mut rte_mbuf; N],
    pub(crate) len: usize,
}

impl<const N: usize> Default for MbufBurst<N> {
    fn default() -> Self {
        Self {
            ptrs: [std::ptr::null_mut(); N],
            len: 0,
        }
    }
}

// SAFETY: the burst owns its mbufs exclusively, like `Mbuf`.
unsafe impl<const N: usize> Send for MbufBurst<N> {}

impl<const N: usize> MbufBurst<N> {
    pub const CAPACITY: usize = N;

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Adds an mbuf; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Each frame's bytes (first segment), in order, for a look without taking them.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.ptrs[..self.len].iter().map(|&p| {
            // SAFETY: pointers below len are valid mbufs owned by the burst,
            // which outlives the borrow; mtod points at data_len bytes.
            unsafe {
                std::slice::from_raw_parts(
                    zproxy_ffi::rte_pktmbuf_mtod(p) as *const u8,
                    zproxy_ffi::rte_pktmbuf_data_len(p) as usize,
                )
            }
        })
    }

    /// Takes the mbufs out in order, leaving the burst empty.
    #[inline]
    pub fn drain(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        let len = std::mem::take(&mut self.len);
        self.ptrs[..len].iter().map(|&p| {
            // SAFETY: pointers below len are valid mbufs owned by the burst;
            // len was reset first, so each is handed out exactly once.
            unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) }
        })
    }

    /// Drops the first `n` pointers (the driver took them) and moves the rest
    /// to the front.
    #[inline]
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl<const N: usize> Drop for MbufBurst<N> {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptrs[..len] are valid mbufs owned by the burst.
            unsafe { zproxy_ffi::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rx_checksum_bad;
    use zproxy_ffi::{
        RTE_MBUF_F_RX_IP_CKSUM_GOOD as IP_GOOD, RTE_MBUF_F_RX_IP_CKSUM_MASK as IP_MASK,
        RTE_MBUF_F_RX_L4_CKSUM_GOOD as L4_GOOD, RTE_MBUF_F_RX_L4_CKSUM_MASK as L4_MASK,
    };

    #[test]
    fn only_both_checksums_good_passes() {
        let (ip_good, l4_good) = (u64::from(IP_GOOD), u64::from(L4_GOOD));
        // In each 2-bit field, the bit that is not GOOD is BAD; both set is NONE.
        let ip_bad = u64::from(IP_MASK) & !ip_good;
        let l4_bad = u64::from(L4_MASK) & !l4_good;
        let other = 1u64 << 40;
        assert!(!rx_checksum_bad(ip_good | l4_good));
        assert!(!rx_checksum_bad(ip_good | l4_good | other));
        assert!(rx_checksum_bad(0), "unknown is not good");
        assert!(rx_checksum_bad(ip_bad | l4_good));
        assert!(rx_checksum_bad(ip_good | l4_bad));
        assert!(rx_checksum_bad(ip_good));
        assert!(
            rx_checksum_bad(u64::from(IP_MASK) | l4_good),
            "NONE is not good"
        );
    }
}
