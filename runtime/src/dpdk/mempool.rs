//! Packet buffer pools: the arena-backed pool whose buffers NF processes
//! read in place ([`Mempool::new_external`]), the packed pool the af_xdp
//! PMD turns into its UMEM ([`Mempool::new_packed`]), and plain
//! `rte_pktmbuf_pool_create` ones.

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

    /// Bytes one mbuf of [`Mempool::new_packed`] takes (object header,
    /// `rte_mbuf`, headroom and data room), rounded up: for sizing.
    pub const PACKED_FOOTPRINT: u64 = 2560;

    /// A pool of ordinary mbufs (structure and buffer side by side) in
    /// DPDK's own memory, populated as one virtually contiguous chunk with
    /// objects packed back to back (`RTE_MEMPOOL_F_NO_IOVA_CONTIG`, so no
    /// gaps at page ends). This is what the af_xdp PMD needs of the pool it
    /// turns into its UMEM: it registers the pool's first chunk, sized
    /// `populated_size` × object size, and has the kernel write each frame
    /// behind the mbuf structure. The arena-backed pool cannot be one (its
    /// mbuf structures and buffers are apart), and these buffers are not in
    /// the arena.
    pub fn new_packed(name: &str, count: u32, cache: u32, socket: i32) -> Result<Mempool, String> {
        let cname = CString::new(name).map_err(|_| "mempool name holds NUL".to_string())?;
        let data_room = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
        let elt_size = std::mem::size_of::<dpdk_sys::rte_mbuf>() as u32 + u32::from(data_room);
        let mut private = dpdk_sys::rte_pktmbuf_pool_private { mbuf_data_room_size: data_room, ..Default::default() };
        let fail =
            |what: &str| format!("cannot create the af_xdp mbuf pool of {count} mbufs: {what}: {}", last_error());
        // SAFETY: valid NUL-terminated name; sizes are plain values DPDK
        // validates; the private area holds an rte_pktmbuf_pool_private.
        let raw = unsafe {
            dpdk_sys::rte_mempool_create_empty(
                cname.as_ptr(),
                count,
                elt_size,
                cache,
                std::mem::size_of::<dpdk_sys::rte_pktmbuf_pool_private>() as u32,
                socket,
                dpdk_sys::RTE_MEMPOOL_F_NO_IOVA_CONTIG,
            )
        };
        let Some(raw) = NonNull::new(raw) else { return Err(fail("rte_mempool_create_empty")) };
        let pool = Mempool { raw, extmem: None };
        // SAFETY: `pool` is a fresh, empty mempool (freed by its drop on
        // every error path below). The steps are those of
        // rte_pktmbuf_pool_create_by_ops: ops, pool init with the private
        // area (copied by DPDK), populate, then initialise each mbuf.
        unsafe {
            let ops = dpdk_sys::rte_mbuf_best_mempool_ops();
            if dpdk_sys::rte_mempool_set_ops_byname(raw.as_ptr(), ops, std::ptr::null_mut()) != 0 {
                return Err(fail("rte_mempool_set_ops_byname"));
            }
            dpdk_sys::rte_pktmbuf_pool_init(raw.as_ptr(), &mut private as *mut _ as *mut std::ffi::c_void);
            if dpdk_sys::rte_mempool_populate_default(raw.as_ptr()) < 0 {
                return Err(fail("rte_mempool_populate_default"));
            }
            let chunks = (*raw.as_ptr()).nb_mem_chunks;
            if chunks != 1 {
                return Err(format!(
                    "the af_xdp mbuf pool came in {chunks} memory chunks; af_xdp needs one (reserve more hugepages, or lower runtime.workers)"
                ));
            }
            dpdk_sys::rte_mempool_obj_iter(raw.as_ptr(), Some(dpdk_sys::rte_pktmbuf_init), std::ptr::null_mut());
        }
        Ok(pool)
    }

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
