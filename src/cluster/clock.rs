//! The engine's timers, from whatever runtime the node runs on: the engine names no runtime,
//! so `--cluster` works on every async one.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::driver::{LocalBoxFuture, Runtime};

/// Sleeps until a given instant, on the node's runtime.
#[derive(Clone)]
pub struct Clock(Rc<dyn Fn(Instant) -> LocalBoxFuture<()>>);

impl Clock {
    /// Sleeps made by `until`, which returns a future that completes at its instant.
    pub fn new(until: impl Fn(Instant) -> LocalBoxFuture<()> + 'static) -> Self {
        Clock(Rc::new(until))
    }

    /// Sleeps on `runtime`'s timers.
    pub fn of<R: Runtime>(runtime: R) -> Self {
        Clock::new(move |at| {
            let mut timer = runtime.timer(Some(at));
            Box::pin(async move { crate::driver::sleep(&mut timer).await })
        })
    }

    /// Completes at `at`.
    pub(crate) fn until(&self, at: Instant) -> LocalBoxFuture<()> {
        (self.0)(at)
    }

    /// Completes after `span`.
    pub(crate) fn after(&self, span: Duration) -> LocalBoxFuture<()> {
        self.until(Instant::now() + span)
    }
}
