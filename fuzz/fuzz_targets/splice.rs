//! The TCP splicer's state machine under libFuzzer: see `ustack::fuzz::splice`
//! for the operations the bytes decode into and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ustack::fuzz::splice(data);
});
