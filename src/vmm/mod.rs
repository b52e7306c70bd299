//! The microVM (in progress).
