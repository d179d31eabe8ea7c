//! [`Timers`]: the hub's deadlines, each session's state deadline (its login or its Lb
//! connect) and its outstanding delivery's ack deadline, soonest first.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use super::ConnId;

/// Which of a session's deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// The login or Lb-connect deadline.
    State,
    /// The outstanding delivery's ack deadline.
    Ack,
}

/// Stale ack entries allowed beyond as many as there are live ones before a sweep.
const SLACK: usize = 64;

/// The deadlines of every session.
///
/// State deadlines are few (a session has one only while it logs in) and of two lengths, so
/// they are kept sorted. An ack deadline is set on every delivery and cleared on every `302`,
/// and each is the send time plus the one `ack_timeout`, so they come in the order they are
/// set: setting one is a push at the back, and clearing one only leaves its entry stale, to be
/// dropped once it reaches the front, or in a sweep once stale entries outnumber live ones
/// (so there are never more than twice as many, plus [`SLACK`]). One that would come before
/// the last (a clock that went back, or a reload that shortened the ack timeout, until the
/// deadlines set before it have passed) is put in its place, so the order holds whatever the
/// clock and the settings do. Which entries are live only the hub knows: it answers `is_live(at, conn)`,
/// whether `conn`'s ack deadline is still `at`.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    states: BTreeSet<(Instant, ConnId)>,
    acks: VecDeque<(Instant, ConnId)>,
    live_acks: usize,
}

impl Timers {
    /// `conn`'s `kind` deadline was `old` and is now `new`.
    pub(crate) fn change(
        &mut self,
        kind: TimerKind,
        conn: ConnId,
        old: Option<Instant>,
        new: Option<Instant>,
    ) {
        match kind {
            TimerKind::State => {
                if let Some(at) = old {
                    self.states.remove(&(at, conn));
                }
                if let Some(at) = new {
                    self.states.insert((at, conn));
                }
            }
            TimerKind::Ack => {
                if old.is_some() {
                    self.live_acks = self.live_acks.saturating_sub(1);
                }
                if let Some(at) = new {
                    self.live_acks += 1;
                    match self.acks.back() {
                        Some(&(last, _)) if at < last => {
                            let place = self.acks.partition_point(|&(other, _)| other <= at);
                            self.acks.insert(place, (at, conn));
                        }
                        _ => self.acks.push_back((at, conn)),
                    }
                }
            }
        }
    }

    /// Drops the stale ack entries at the front, and every stale one once they outnumber the
    /// live ones. [`Timers::next`] is exact after it.
    pub(crate) fn prune(&mut self, is_live: impl Fn(Instant, ConnId) -> bool) {
        while let Some(&(at, conn)) = self.acks.front() {
            if is_live(at, conn) {
                break;
            }
            self.acks.pop_front();
        }
        if self.acks.len() > 2 * self.live_acks + SLACK {
            self.acks.retain(|&(at, conn)| is_live(at, conn));
        }
    }

    /// The soonest deadline (after [`Timers::prune`]; before it, perhaps a stale one: a
    /// wake-up early, never late).
    pub(crate) fn next(&self) -> Option<Instant> {
        let state = self.states.first().map(|&(at, _)| at);
        let ack = self.acks.front().map(|&(at, _)| at);
        state.into_iter().chain(ack).min()
    }

    /// Takes every deadline due at `now` out into `due`, soonest first (ties by session, a
    /// state deadline before an ack one). Each still counts as set until the hub clears it
    /// ([`Timers::change`] to `None`) as it fires it.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
        is_live: impl Fn(Instant, ConnId) -> bool,
        due: &mut Vec<(Instant, ConnId, TimerKind)>,
    ) {
        while let Some(&(at, conn)) = self.states.first() {
            if at > now {
                break;
            }
            self.states.pop_first();
            due.push((at, conn, TimerKind::State));
        }
        while let Some(&(at, conn)) = self.acks.front() {
            if at > now {
                break;
            }
            self.acks.pop_front();
            if is_live(at, conn) {
                due.push((at, conn, TimerKind::Ack));
            }
        }
        due.sort_unstable();
        // A deadline cleared and set again to the same instant (a clock that stood still) has
        // two entries, both live: it is due once.
        due.dedup();
    }

    /// How many ack entries are kept, live or stale.
    #[cfg(test)]
    fn ack_entries(&self) -> usize {
        self.acks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// What the hub keeps beside the timers: each session's deadlines.
    #[derive(Default)]
    struct Sessions(BTreeMap<(ConnId, TimerKind), Instant>);

    impl Sessions {
        fn set(&mut self, timers: &mut Timers, kind: TimerKind, conn: ConnId, at: Option<Instant>) {
            let old = match at {
                Some(at) => self.0.insert((conn, kind), at),
                None => self.0.remove(&(conn, kind)),
            };
            if old != at {
                timers.change(kind, conn, old, at);
            }
        }

        fn is_live(&self) -> impl Fn(Instant, ConnId) -> bool + '_ {
            |at, conn| self.0.get(&(conn, TimerKind::Ack)) == Some(&at)
        }

        fn next(&self) -> Option<Instant> {
            self.0.values().min().copied()
        }

        fn due(&self, now: Instant) -> Vec<(Instant, ConnId, TimerKind)> {
            let mut due: Vec<_> = self
                .0
                .iter()
                .filter(|(_, &at)| at <= now)
                .map(|(&(conn, kind), &at)| (at, conn, kind))
                .collect();
            due.sort_unstable();
            due
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Sets a session's deadline `after` ms from now (or clears it).
        Set(TimerKind, u64, Option<u64>),
        /// The clock moves on (or back).
        Clock(i64),
        /// Fires what is due.
        Fire,
    }

    fn step() -> impl Strategy<Value = Step> {
        let kind = prop_oneof![Just(TimerKind::State), Just(TimerKind::Ack)];
        prop_oneof![
            4 => (kind, 0..8u64, prop::option::of(0..50u64)).prop_map(|(k, c, at)| Step::Set(k, c, at)),
            2 => (-5..30i64).prop_map(Step::Clock),
            1 => Just(Step::Fire),
        ]
    }

    proptest! {
        // Failures are kept in the repository's proptest-regressions/, replayed first.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../proptest-regressions/timers.txt"
            )))),
            ..ProptestConfig::default()
        })]

        /// Against a model that keeps each session's deadlines exactly: the same next
        /// deadline, the same deadlines due, in the same order, whatever the order of sets,
        /// clears and clock moves; and no more entries kept than the bound.
        #[test]
        fn behaves_as_a_sorted_set(steps in prop::collection::vec(step(), 0..200)) {
            let base = Instant::now() + Duration::from_secs(60);
            let mut clock = base;
            let (mut timers, mut sessions) = (Timers::default(), Sessions::default());
            for step in steps {
                match step {
                    Step::Set(kind, conn, after) => {
                        let at = after.map(|ms| clock + Duration::from_millis(ms));
                        sessions.set(&mut timers, kind, ConnId(conn), at);
                    }
                    Step::Clock(ms) if ms < 0 => clock -= Duration::from_millis(ms.unsigned_abs()),
                    Step::Clock(ms) => clock += Duration::from_millis(ms as u64),
                    Step::Fire => {
                        let expected = sessions.due(clock);
                        let mut due = Vec::new();
                        timers.take_due(clock, sessions.is_live(), &mut due);
                        prop_assert_eq!(&due, &expected);
                        for (_, conn, kind) in due {
                            sessions.set(&mut timers, kind, conn, None);
                        }
                    }
                }
                timers.prune(sessions.is_live());
                prop_assert_eq!(timers.next(), sessions.next());
                let live = sessions.0.keys().filter(|(_, kind)| *kind == TimerKind::Ack).count();
                prop_assert!(timers.ack_entries() <= 2 * live + SLACK + 1);
            }
        }
    }

    /// One delivery outstanding for long while thousands are set and cleared behind it: the
    /// stale entries are swept, not kept.
    #[test]
    fn a_slow_recipient_does_not_make_the_stale_entries_pile_up() {
        let now = Instant::now();
        let (mut timers, mut sessions) = (Timers::default(), Sessions::default());
        sessions.set(&mut timers, TimerKind::Ack, ConnId(0), Some(now));
        for i in 1..10_000u64 {
            let at = now + Duration::from_micros(i);
            sessions.set(&mut timers, TimerKind::Ack, ConnId(1), Some(at));
            sessions.set(&mut timers, TimerKind::Ack, ConnId(1), None);
            timers.prune(sessions.is_live());
            assert!(timers.ack_entries() <= 2 + SLACK + 1);
        }
        assert_eq!(timers.next(), Some(now));
    }
}
