//! Safe wrappers over `dpdk-sys`: the only modules in ubox that call DPDK.
//!
//! Every `unsafe` block of the runtime lives under this folder and says why
//! it is sound. The rest of the runtime sees safe types: [`eal::Eal`],
//! [`mempool::Mempool`], [`mbuf::Mbuf`] (freed on drop), [`port::Port`] with
//! its RX/TX queues, and [`ring::MbufRing`] for handing packets between
//! workers.

pub mod eal;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;

use std::ffi::CStr;

/// The calling thread's `rte_errno` with DPDK's message for it.
pub fn last_error() -> String {
    // SAFETY: `ubox_rte_errno` reads the thread-local errno; `rte_strerror`
    // returns a pointer to a static or thread-local NUL-terminated string.
    unsafe {
        let e = dpdk_sys::ubox_rte_errno();
        let msg = CStr::from_ptr(dpdk_sys::rte_strerror(e));
        format!("{} (rte_errno {e})", msg.to_string_lossy())
    }
}

/// Message for a negative errno-style return code from a DPDK call.
pub fn errno_message(ret: i32) -> String {
    let e = ret.unsigned_abs() as i32;
    // SAFETY: see `last_error`.
    let msg = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(e)) };
    format!("{} (errno {e})", msg.to_string_lossy())
}

/// Starts pulling the cache line holding `r` into L1: a hint for memory the
/// caller will read soon (the in-flight entries an answer burst names).
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint and never faults; the address comes
    // from a live reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((r as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}
