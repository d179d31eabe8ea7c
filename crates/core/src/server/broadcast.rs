//! [`BroadcastAggregator`]: turns the per-recipient outcomes of one request into its one answer.

use crate::protocol::Response;

/// The final answer to one `/to` or `/toall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every recipient acknowledged: `303`.
    Delivered,
    /// At least one recipient did not: `304`.
    Failed,
}

impl Outcome {
    /// The answer the sender gets on La.
    pub fn response(self) -> Response<'static> {
        match self {
            Outcome::Delivered => Response::Delivered,
            Outcome::Failed => Response::DeliveryFailed,
        }
    }
}

/// Collects one request's per-recipient outcomes and yields exactly one [`Outcome`] when the
/// last of them settles, however the outcomes are ordered or repeated.
///
/// Recipients are numbered by *slot* (`0..recipients`); settling a slot twice counts once, so
/// a late or duplicated report can never produce a second answer.
#[derive(Clone, Debug)]
pub struct BroadcastAggregator {
    settled: Settled,
    recipients: usize,
    waiting: usize,
    failed: bool,
    answered: bool,
}

/// Which slots have settled, a bit each: inline up to 64 recipients (every `/to`, most
/// `/toall`s), so that the common request allocates nothing for it.
#[derive(Clone, Debug)]
enum Settled {
    Inline(u64),
    Spilled(Vec<u64>),
}

impl Settled {
    fn new(recipients: usize) -> Settled {
        match recipients {
            0..=64 => Settled::Inline(0),
            _ => Settled::Spilled(vec![0; recipients.div_ceil(64)]),
        }
    }

    /// Marks `slot` settled; false if it already was (or is not a slot).
    fn mark(&mut self, slot: usize) -> bool {
        let word = match self {
            Settled::Inline(word) if slot < 64 => word,
            Settled::Inline(_) => return false,
            Settled::Spilled(words) => match words.get_mut(slot / 64) {
                Some(word) => word,
                None => return false,
            },
        };
        let bit = 1 << (slot % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

impl BroadcastAggregator {
    /// An aggregator for `recipients` deliveries (`0` for a `/toall` with nobody else online).
    pub fn new(recipients: usize) -> Self {
        BroadcastAggregator {
            settled: Settled::new(recipients),
            recipients,
            waiting: recipients,
            failed: false,
            answered: false,
        }
    }

    /// How many recipients have not settled yet.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Records the outcome of `slot`. Returns the answer when this settles the last one, once.
    pub fn settle(&mut self, slot: usize, delivered: bool) -> Option<Outcome> {
        if slot >= self.recipients || !self.settled.mark(slot) {
            return None;
        }
        self.waiting -= 1;
        self.failed |= !delivered;
        self.poll_outcome()
    }

    /// The answer, if every recipient has settled and it was not taken yet. With no recipients
    /// this is `Delivered` straight away.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        if self.waiting > 0 || self.answered {
            return None;
        }
        self.answered = true;
        Some(if self.failed {
            Outcome::Failed
        } else {
            Outcome::Delivered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    #[test]
    fn a_slot_out_of_range_settles_nothing() {
        for recipients in [1, 64, 65, 200] {
            let mut aggregator = BroadcastAggregator::new(recipients);
            for slot in [recipients, 1000] {
                assert_eq!(aggregator.settle(slot, false), None);
            }
            assert_eq!(aggregator.waiting(), recipients);
        }
    }

    #[test]
    fn nobody_to_deliver_to_is_delivered() {
        let mut aggregator = BroadcastAggregator::new(0);
        assert_eq!(aggregator.poll_outcome(), Some(Outcome::Delivered));
        assert_eq!(aggregator.poll_outcome(), None);
    }

    proptest! {
        // Failures are kept in the repository's proptest-regressions/, replayed first.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../proptest-regressions/broadcast.txt"
            )))),
            ..ProptestConfig::default()
        })]

        /// Whatever the order and repetition of reports, exactly one answer comes, after the
        /// last slot settles, and it is `Failed` iff some slot's first report was a failure.
        #[test]
        fn exactly_one_answer(
            // Past 64 recipients the settled slots spill from one word to many.
            outcomes in prop::collection::vec(any::<bool>(), 1..150),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..300),
        ) {
            let n = outcomes.len();
            let mut aggregator = BroadcastAggregator::new(n);
            let mut first = vec![None; n];
            let mut answers = Vec::new();
            let slots = order.iter().map(|i| i.index(n)).chain(0..n);
            for slot in slots {
                let delivered = outcomes[slot] ^ first[slot].is_some();
                first[slot].get_or_insert(delivered);
                let settled_all = first.iter().all(Option::is_some);
                match aggregator.settle(slot, delivered) {
                    Some(answer) => {
                        prop_assert!(settled_all);
                        answers.push(answer);
                    }
                    None => prop_assert!(!settled_all || !answers.is_empty()),
                }
            }
            let failed = first.contains(&Some(false));
            let expected = if failed { Outcome::Failed } else { Outcome::Delivered };
            prop_assert_eq!(answers, vec![expected]);
        }
    }
}
