//! SIGINT/SIGTERM stop the runtime; SIGUSR1 asks for a stats print.
//!
//! The handlers only store to atomics (async-signal-safe); the main lcore
//! polls them.

use std::sync::atomic::{AtomicBool, Ordering};

/// Cleared by SIGINT/SIGTERM; workers poll it.
pub static RUNNING: AtomicBool = AtomicBool::new(true);
static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_sig: libc::c_int) {
    RUNNING.store(false, Ordering::SeqCst);
}

extern "C" fn on_dump(_sig: libc::c_int) {
    DUMP.store(true, Ordering::SeqCst);
}

pub fn install() {
    // SAFETY: the handlers are async-signal-safe (atomic stores only) and
    // have the signature `signal` expects.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGUSR1, on_dump as *const () as libc::sighandler_t);
    }
}

pub fn running() -> bool {
    RUNNING.load(Ordering::Relaxed)
}

/// True once per SIGUSR1.
pub fn take_dump_request() -> bool {
    DUMP.swap(false, Ordering::SeqCst)
}
