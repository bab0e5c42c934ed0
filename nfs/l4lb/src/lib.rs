//! l4lb (docs to come)
pub mod hash;
pub mod maglev;
