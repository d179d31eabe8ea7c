//! What every suite of random schedules shares: how many cases it runs (`PROPTEST_CASES`) and
//! where a failure is kept (`proptest-regressions/<suite>.txt`, so its seed is replayed first
//! on every later run).

#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};

/// `PROPTEST_CASES` if set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The proptest config of `suite`: [`cases`] cases, failures kept at the top level.
pub fn config(suite: &str, default_cases: u32) -> Config {
    let path = format!(
        "{}/proptest-regressions/{suite}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    Config {
        cases: cases(default_cases),
        // Proptest wants the path for the whole run: one small leak per suite run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(Box::leak(
            path.into_boxed_str(),
        )))),
        ..Config::default()
    }
}
