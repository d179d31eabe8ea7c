//! im-check: to be written.
fn main() {}
