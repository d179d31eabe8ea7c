//! The sans-IO `Server` hub fed an arbitrary schedule of socket events and time, with a model
//! checking every output; the harness lives in `tests/common/fuzz_harness.rs` so that
//! `cargo test` replays the corpus with the same checks.

#![no_main]

#[path = "../../tests/common/fuzz_harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::server_hub(data));
