//! Command-line types (clap) only; each turns into a plain library config
//! with `into_config()`.

pub mod diff;
pub mod export;
pub mod flame;
pub mod report;
pub mod symbols;
