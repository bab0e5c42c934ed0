//! l4lb (docs to come)
pub mod config;
pub mod hash;
pub mod lb;
pub mod maglev;
pub mod nf;
pub mod table;

pub use config::{Config, ConfigError, Mode};
pub use lb::{Action, DropReason, EncapHeader, Lb};
