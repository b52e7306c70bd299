//! Symbolization benchmark (filled in below).
fn main() {}
