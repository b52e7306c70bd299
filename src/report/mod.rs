//! Reading traces and rendering them (in progress).
