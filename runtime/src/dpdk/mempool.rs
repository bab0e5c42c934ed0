//! Packet buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use super::last_error;

/// An mbuf pool. Freed when dropped; every mbuf taken from it must be back
/// by then (ports and workers are dropped first).
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    /// External memory registered for the pool's buffers, unregistered on drop.
    extmem: Option<(*mut u8, usize)>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores; the
// pointers are only dereferenced by DPDK.
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
            .map(|raw| Mempool { raw, extmem: None })
            .ok_or_else(|| format!("cannot create mbuf pool of {count} mbufs: {}", last_error()))
    }

    /// Bytes of one packet buffer (headroom + data room) in an external pool.
    pub const EXT_BUF_SIZE: usize = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as usize;

    /// A pool whose packet buffers live in caller-provided memory (the
    /// arena's data region), so processes that map that memory read packets
    /// in place. `base` must be aligned to `page_sz` and `len` a multiple of
    /// it; the memory must stay mapped until the pool is dropped. The mbuf
    /// structures themselves stay in DPDK's own memory.
    pub fn new_external(
        name: &str,
        count: u32,
        cache: u32,
        socket: i32,
        base: *mut u8,
        len: usize,
        page_sz: usize,
    ) -> Result<Mempool, String> {
        let need = count as usize * Self::EXT_BUF_SIZE;
        if base.is_null() || len < need || len % page_sz != 0 || (base as usize) % page_sz != 0 {
            return Err(format!(
                "arena data region ({len} bytes at {base:p}) cannot hold {count} packet buffers of {} bytes aligned to {page_sz}",
                Self::EXT_BUF_SIZE
            ));
        }
        let cname = CString::new(name).map_err(|_| "mempool name holds NUL".to_string())?;
        // SAFETY: `[base, base + len)` is mapped memory owned by the caller's
        // arena, page aligned with a whole number of pages (checked above),
        // and stays mapped until this pool drops (the caller's contract;
        // the runtime drops the pool before the arena). No IOVA table: the
        // buffers serve virtual devices; PCI NICs will need rte_dev_dma_map.
        let ret = unsafe { dpdk_sys::rte_extmem_register(base as *mut _, len, std::ptr::null_mut(), 0, page_sz) };
        if ret != 0 {
            return Err(format!("cannot register the arena with DPDK (rte_extmem_register): {}", last_error()));
        }
        let ext = dpdk_sys::rte_pktmbuf_extmem {
            buf_ptr: base as *mut _,
            buf_iova: u64::MAX, // RTE_BAD_IOVA
            buf_len: len,
            elt_size: Self::EXT_BUF_SIZE as u16,
        };
        // SAFETY: valid name; `ext` describes the registered region above and
        // is copied by DPDK; one descriptor.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create_extbuf(
                cname.as_ptr(),
                count,
                cache,
                0,
                Self::EXT_BUF_SIZE as u16,
                socket,
                &ext,
                1,
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Mempool { raw, extmem: Some((base, len)) }),
            None => {
                let err = last_error();
                // SAFETY: registered above, and no pool uses it.
                unsafe { dpdk_sys::rte_extmem_unregister(base as *mut _, len) };
                Err(format!("cannot create the arena-backed mbuf pool of {count} mbufs: {err}"))
            }
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }

    /// A fresh mbuf holding a copy of `frame` (for frames the runtime makes
    /// itself, such as a terminated flow's RSTs), or `None` when the pool is
    /// empty or the frame does not fit one buffer.
    pub fn alloc_frame(&self, frame: &[u8]) -> Option<super::mbuf::Mbuf> {
        let len = u16::try_from(frame.len()).ok()?;
        // SAFETY: the pool is live; a null return means "empty".
        let raw = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a freshly allocated mbuf nobody else owns (or null).
        let mut m = unsafe { super::mbuf::Mbuf::from_raw(raw) }?;
        // SAFETY: `m` is a valid single-segment mbuf; append returns null
        // (and changes nothing) when `len` exceeds its tailroom. Dropping `m`
        // on that path frees it.
        let data = unsafe { dpdk_sys::rte_pktmbuf_append(m.as_raw_ptr(), len) };
        if data.is_null() {
            return None;
        }
        m.data_mut().copy_from_slice(frame);
        Some(m)
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
        if let Some((base, len)) = self.extmem {
            // SAFETY: registered in `new_external`; the pool using it is gone.
            unsafe { dpdk_sys::rte_extmem_unregister(base as *mut _, len) };
        }
    }
}
