//! The command line's types: clap stays here, out of the library. Each
//! command's arguments turn into a plain configuration with `into_config()`.

pub mod check;
pub mod diff;
pub mod export;
pub mod flame;
pub mod progress;
pub mod record;
pub mod report;
pub mod sweep;
pub mod symbols;
