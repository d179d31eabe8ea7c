//! im-bench: to be written.
fn main() {}
