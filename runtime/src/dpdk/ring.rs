//! Single-producer single-consumer rings of mbufs between two workers
//! (`rte_ring` with `RING_F_SP_ENQ | RING_F_SC_DEQ`).

use std::ffi::{c_void, CString};
use std::ptr::NonNull;

use super::last_error;
use super::mbuf::Mbuf;

/// A bounded SPSC ring carrying owned mbufs. Exactly one thread may enqueue
/// and one may dequeue; the runtime gives each (from, to) worker pair its own.
pub struct MbufRing {
    raw: NonNull<dpdk_sys::rte_ring>,
}

// SAFETY: rte_ring is built for cross-lcore use; SP/SC discipline is kept by
// the runtime (one producer worker, one consumer worker per ring).
unsafe impl Send for MbufRing {}
unsafe impl Sync for MbufRing {}

impl MbufRing {
    /// `size` must be a power of two; the ring holds `size - 1` mbufs.
    pub fn new(name: &str, size: u32, socket: i32) -> Result<MbufRing, String> {
        let cname = CString::new(name).map_err(|_| "ring name holds NUL".to_string())?;
        let flags = dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ;
        // SAFETY: valid name; DPDK validates size and flags.
        let raw = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, socket, flags) };
        NonNull::new(raw)
            .map(|raw| MbufRing { raw })
            .ok_or_else(|| format!("cannot create ring {name}: {}", last_error()))
    }

    /// Enqueue one mbuf; gives it back when the ring is full.
    #[inline]
    pub fn push(&self, m: Mbuf) -> Result<(), Mbuf> {
        let p = m.into_raw();
        // SAFETY: the ring is live; on success it owns `p`, on failure we
        // take `p` back unchanged.
        let ret = unsafe { dpdk_sys::rte_ring_sp_enqueue(self.raw.as_ptr(), p as *mut c_void) };
        if ret == 0 {
            Ok(())
        } else {
            // SAFETY: the enqueue failed, so `p` is still ours.
            Err(unsafe { Mbuf::from_raw(p) }.expect("non-null"))
        }
    }

    /// Dequeue up to `max` mbufs, appended to `out` (which must be empty and
    /// have room for `max`); returns how many.
    #[inline]
    pub fn pop_burst(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        debug_assert!(out.is_empty());
        let max = max.min(out.capacity());
        // SAFETY: the Vec has room for `max` repr(transparent) mbuf
        // pointers; every pointer the ring hands out was enqueued by `push`
        // as an owned mbuf, and ownership passes to `out`. One consumer per
        // ring (the runtime's SPSC discipline).
        unsafe {
            let n = dpdk_sys::rte_ring_sc_dequeue_burst(
                self.raw.as_ptr(),
                out.as_mut_ptr() as *mut *mut c_void,
                max as u32,
                std::ptr::null_mut(),
            ) as usize;
            out.set_len(n);
            n
        }
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        // Free the mbufs still in the ring (dropping an Mbuf frees it).
        let mut buf = Vec::with_capacity(32);
        while self.pop_burst(&mut buf, 32) > 0 {
            buf.clear();
        }
        // SAFETY: the ring is empty and no worker uses it any more.
        unsafe { dpdk_sys::rte_ring_free(self.raw.as_ptr()) }
    }
}
