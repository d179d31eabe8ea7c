//! The one shape of a check, shared by both modes, and what is done with a list of them:
//! `--list` and `--only`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::outcome::{Outcome, Transcript};

/// What one check runs with: what im-check knows about the peer (`C`), the check's deadline,
/// and its transcript.
pub struct Ctx<C> {
    /// The peer under test.
    pub config: Arc<C>,
    /// When the check must be done.
    pub deadline: Instant,
    /// What goes over the wire.
    pub transcript: Transcript,
}

/// One named check of a peer described by `C`.
pub struct Check<C: 'static> {
    /// Its name, for `--only`.
    pub name: &'static str,
    /// What it checks, in one line.
    pub description: &'static str,
    /// The check itself.
    pub run: fn(&Ctx<C>) -> Outcome,
    /// Time it needs on top of `--timeout` (for checks that wait out a timeout of the peer's).
    pub extra_time: fn(&C) -> Duration,
}

impl<C> Check<C> {
    /// A check that fits in `--timeout`.
    pub const fn new(
        name: &'static str,
        description: &'static str,
        run: fn(&Ctx<C>) -> Outcome,
    ) -> Self {
        Check {
            name,
            description,
            run,
            extra_time: no_extra_time::<C>,
        }
    }

    /// This check, given `extra_time` on top of `--timeout`.
    pub const fn with_extra_time(self, extra_time: fn(&C) -> Duration) -> Self {
        Check { extra_time, ..self }
    }
}

fn no_extra_time<C>(_: &C) -> Duration {
    Duration::ZERO
}

/// Checks of one part of docs/protocol.md.
pub struct Section<C: 'static> {
    /// The part of the protocol they check, as the gradebook names it (`§1 wire basics`);
    /// several sections may share one.
    pub title: &'static str,
    /// The checks, in the report's order.
    pub checks: &'static [Check<C>],
}

/// Every check of one mode, section by section in docs/protocol.md's order (the report's order).
pub type Registry<C> = &'static [Section<C>];

/// The checks of `registry`, in order.
pub fn all<C>(registry: Registry<C>) -> impl Iterator<Item = &'static Check<C>> {
    registry.iter().flat_map(|section| section.checks.iter())
}

/// The part of the protocol the check `name` of `registry` checks.
pub fn section_of<C>(registry: Registry<C>, name: &str) -> Option<&'static str> {
    registry
        .iter()
        .find(|section| section.checks.iter().any(|check| check.name == name))
        .map(|section| section.title)
}

/// The titles of `registry`'s sections, each once, in order.
pub fn titles<C>(registry: Registry<C>) -> Vec<&'static str> {
    let mut titles: Vec<&'static str> = Vec::new();
    for section in registry {
        if !titles.contains(&section.title) {
            titles.push(section.title);
        }
    }
    titles
}

/// The checks to run: all of them, or those `--only` names (each must exist), in the
/// registry's order and each once.
pub fn select<C>(registry: Registry<C>, only: &[String]) -> Result<Vec<&'static Check<C>>, String> {
    if let Some(wanted) = only
        .iter()
        .find(|wanted| !all(registry).any(|check| check.name == wanted.as_str()))
    {
        return Err(format!(
            "there is no check named {wanted:?} (--list shows them)"
        ));
    }
    Ok(all(registry)
        .filter(|check| only.is_empty() || only.iter().any(|wanted| wanted == check.name))
        .collect())
}
