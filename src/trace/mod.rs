//! Trace file format (in progress).
