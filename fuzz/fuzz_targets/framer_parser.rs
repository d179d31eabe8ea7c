//! Arbitrary bytes in arbitrary chunks through `LineFramer` and the three parsers; the harness
//! lives in `tests/common/fuzz_harness.rs` so that `cargo test` replays the corpus with the same
//! checks.

#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::framer_parser(data));
