//! Reading traces and rendering them: `symbolize` turns a trace into named
//! stacks, `fold` weighs them, and the commands (`flame`, `export`, `diff`,
//! `report`) render the result.

pub mod diff;
pub mod diffnorm;
pub mod difftable;
pub mod doc;
pub mod export;
pub mod flame;
pub mod fold;
pub mod functions;
pub mod headline;
pub mod load;
pub mod phases;
pub mod quality;
pub mod runview;
pub mod stats;
pub mod symbolize;
pub mod text;
