//! What every suite of random schedules shares: how many cases it runs (`PROPTEST_CASES`) and
//! where a failure is kept (`proptest-regressions/<suite>.txt`, so its seed is replayed first
//! on every later run).

#![allow(dead_code)]

use std::fmt::Debug;

use proptest::strategy::{BoxedStrategy, Strategy};
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

/// `prop_oneof!` for long schedules: one of `choices`, by weight. A union keeps, for every
/// alternative it did not pick, a lazily generated tree with a clone of the runner and an RNG
/// of its own; on schedules of hundreds of ops that was a third of a case's time. This draws
/// the alternative first and keeps only its tree: a value shrinks within its alternative,
/// never into another.
pub fn one_of<T: Clone + Debug + 'static>(
    choices: Vec<(u32, BoxedStrategy<T>)>,
) -> BoxedStrategy<T> {
    let total: u32 = choices.iter().map(|(weight, _)| weight).sum();
    (0..total)
        .prop_ind_flat_map(move |mut at| {
            for (weight, strategy) in &choices {
                if at < *weight {
                    return strategy.clone();
                }
                at -= weight;
            }
            unreachable!("drawn below the weights' sum")
        })
        .boxed()
}
