//! Packet buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use super::last_error;

/// An mbuf pool. Freed when dropped; every mbuf taken from it must be back
/// by then (ports and workers are dropped first).
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores; the
// pointer is only dereferenced by DPDK.
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn new(name: &str, count: u32, cache: u32, socket: i32) -> Result<Mempool, String> {
        let cname = CString::new(name).map_err(|_| "mempool name holds NUL".to_string())?;
        // SAFETY: valid NUL-terminated name; the other arguments are plain
        // values DPDK validates.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                count,
                cache,
                0,
                dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        NonNull::new(raw)
            .map(|raw| Mempool { raw })
            .ok_or_else(|| format!("cannot create mbuf pool of {count} mbufs: {}", last_error()))
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: a read-only count on a live pool.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is live and, by construction order, no longer used.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
