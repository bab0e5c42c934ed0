//! EAL start-up and shutdown, lcore launch, and the TSC clock.
//!
//! Owns the process-wide EAL state: [`Eal::init`] may run once per process
//! and [`Eal`]'s drop calls `rte_eal_cleanup`.

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int, c_uint};
use std::sync::atomic::{AtomicBool, Ordering};

use super::last_error;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// A running EAL. Dropping it releases DPDK's resources.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Start EAL with `args` (without the program name).
    pub fn init(args: &[String]) -> Result<Eal, String> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err("EAL is already initialised in this process".into());
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("ubox-runtime").unwrap());
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| format!("EAL argument {a:?} holds a NUL byte"))?);
        }
        // EAL may permute argv; give it its own array of pointers. The
        // strings stay alive in `owned` (EAL keeps pointers into them for the
        // life of the process, so they are leaked below).
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that outlive
        // the call (leaked below); EAL is initialised at most once (checked
        // above).
        let ret = unsafe { dpdk_sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        std::mem::forget(owned);
        std::mem::forget(argv);
        if ret < 0 {
            return Err(last_error());
        }
        Ok(Eal { _private: () })
    }

    /// lcore ids of the worker lcores EAL started, in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: pure queries of EAL's lcore configuration after init.
        unsafe {
            let mut id = dpdk_sys::rte_get_next_lcore(u32::MAX as c_uint, 1, 0);
            while id < dpdk_sys::RTE_MAX_LCORE {
                out.push(id);
                id = dpdk_sys::rte_get_next_lcore(id, 1, 0);
            }
        }
        out
    }

    /// Run `job` on worker lcore `lcore`. The job's result is returned by
    /// [`Eal::wait`].
    pub fn launch<F: FnOnce() -> i32 + Send + 'static>(&self, lcore: u32, job: F) -> Result<(), String> {
        extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the Box<Box<dyn FnOnce>> leaked by `launch`,
            // consumed exactly once here.
            let job: Box<Box<dyn FnOnce() -> i32 + Send>> = unsafe { Box::from_raw(arg as *mut _) };
            job()
        }
        let boxed: Box<Box<dyn FnOnce() -> i32 + Send>> = Box::new(Box::new(job));
        let arg = Box::into_raw(boxed) as *mut c_void;
        // SAFETY: `trampoline` matches lcore_function_t; `arg` stays valid
        // until the trampoline takes it back.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret != 0 {
            // SAFETY: the launch failed, so the trampoline never ran and we
            // still own `arg`.
            drop(unsafe { Box::from_raw(arg as *mut Box<dyn FnOnce() -> i32 + Send>) });
            return Err(format!("cannot launch on lcore {lcore}: {}", super::errno_message(ret)));
        }
        Ok(())
    }

    /// Wait for the job on `lcore` to finish; returns its result.
    pub fn wait(&self, lcore: u32) -> i32 {
        // SAFETY: waiting on an lcore id EAL gave us.
        unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, after every port and pool user has finished
        // (the runtime drops ports and pools before the Eal).
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

/// TSC ticks per second (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: a read of a value EAL computed at init.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// Current TSC value.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no memory effects and exists on every x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: reads the cycle counter; no memory effects.
        unsafe { dpdk_sys::rte_rdtsc() }
    }
}

/// NUMA socket of the calling lcore (0 when unknown).
pub fn socket_id() -> i32 {
    // SAFETY: pure query.
    let s = unsafe { dpdk_sys::rte_socket_id() } as i32;
    if s < 0 {
        0
    } else {
        s
    }
}
