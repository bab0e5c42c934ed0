//! `nf-sdk`: what a ubox network function (NF) is written against.
//!
//! **Status: types only.** The runtime does not yet talk to NF processes;
//! that arrives with the μEvent work (shared hugepage arena, rings,
//! subscriptions, the control-socket handshake). Until then this crate holds
//! the first types an NF author will use, so that their names and meaning
//! are settled:
//!
//! - [`Verdict`]: an NF's answer for a packet it was handed.
//! - [`Side`], [`FlowKey`], [`Direction`]: re-exported from `ustack`, the
//!   sans-IO protocol crate, which is also where NFs will find zero-copy
//!   header views (`ustack::wire`).
//!
//! What it will be: an NF is a normal Rust binary that connects to the
//! runtime's control socket, sends a manifest (name, subscriptions such as
//! `PKT/TCP` or `DATA_RDY/CLIENT`, publications), maps the arena, registers
//! a callback per subscribed event type and runs. `nf-sdk` never links DPDK
//! and needs no `unsafe` from its users.

pub use ustack::flow::{Direction, FlowKey, Side};

/// An NF's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the packet continue along the chain unchanged.
    Pass,
    /// Drop the packet; the runtime counts it under this NF's name.
    Drop,
    /// The NF rewrote the packet in place (allowed only when its manifest
    /// declares that it modifies packets).
    Modified,
}

#[cfg(test)]
mod tests {
    #[test]
    fn verdicts_are_distinct() {
        use super::Verdict::*;
        assert_ne!(Pass, Drop);
        assert_ne!(Drop, Modified);
    }
}
