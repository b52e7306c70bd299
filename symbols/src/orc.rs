//! ORC unwind tables (in progress).
