//! Owned packet buffers: [`Mbuf`] frees itself on drop.

use std::ptr::NonNull;

/// One single-segment packet buffer owned by the holder. Dropping it returns
/// it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an Mbuf is uniquely owned; DPDK allows an mbuf to be freed or sent
// from any lcore.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a valid mbuf not owned by anything else.
    #[inline(always)]
    pub unsafe fn from_raw(raw: *mut dpdk_sys::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(raw).map(Mbuf)
    }

    /// The raw pointer, still owned by `self` (for DPDK calls on it).
    #[inline(always)]
    pub(crate) fn as_raw_ptr(&mut self) -> *mut dpdk_sys::rte_mbuf {
        self.0.as_ptr()
    }

    /// Give up ownership (e.g. to a TX queue).
    #[inline(always)]
    pub fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Port the mbuf arrived on.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        // SAFETY: a live mbuf we own.
        unsafe { (*self.0.as_ptr()).port }
    }

    /// Length of the packet in this segment.
    #[inline(always)]
    pub fn len(&self) -> usize {
        // SAFETY: a live mbuf we own.
        unsafe { (*self.0.as_ptr()).data_len as usize }
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segments in the packet; ubox handles single-segment packets only
    /// (the pools' buffers hold a full 1518-byte frame).
    #[inline(always)]
    pub fn nb_segs(&self) -> u16 {
        // SAFETY: a live mbuf we own.
        unsafe { (*self.0.as_ptr()).nb_segs }
    }

    /// The packet bytes of the first segment.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off points at data_len initialised bytes
        // inside the mbuf's buffer, which we own for the life of `self`.
        unsafe {
            let m = &*self.0.as_ptr();
            std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize)
        }
    }

    /// The packet bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access unique (the
        // mbuf is single-owner and its refcnt is 1: we never clone mbufs).
        unsafe {
            let m = &*self.0.as_ptr();
            std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize)
        }
    }

    /// Start prefetching the packet's first cache line.
    #[inline(always)]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetch is a hint; it never faults, even on bad addresses.
        unsafe {
            let m = &*self.0.as_ptr();
            let p = (m.buf_addr as *const i8).add(m.data_off as usize);
            core::arch::x86_64::_mm_prefetch(p, core::arch::x86_64::_MM_HINT_T0);
        }
    }
}

impl Drop for Mbuf {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it is freed exactly once.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}
