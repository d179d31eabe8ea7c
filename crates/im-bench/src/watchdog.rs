//! Deadlines for many waits at once, without a reactor timer per wait.
//!
//! Setting an async-io `Timer` wakes the reactor (it is told of the new timer through its
//! eventfd), which costs a few system calls and a turn of the event loop: in a request/answer
//! loop that is about as much work as the request itself, and it would be measured as the
//! server's. The deadlines here are kept in one table that a std thread checks every [`TICK`];
//! a wait that is over before then costs two uncontended lock operations. Timeouts of seconds
//! need no finer grain.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often deadlines are checked: a wait may last this much longer than asked.
pub const TICK: Duration = Duration::from_millis(50);

/// The waits with a deadline, by slot; slots are reused.
#[derive(Default)]
struct Waits {
    slots: Vec<Option<(Instant, Waker)>>,
    free: Vec<usize>,
}

static WAITS: OnceLock<Mutex<Waits>> = OnceLock::new();

/// The table, with its checking thread started on first use.
fn waits() -> MutexGuard<'static, Waits> {
    let table = WAITS.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("deadlines".to_owned())
            .spawn(check_deadlines_forever);
        if let Err(err) = spawned {
            // Without it a deadline would never fire, and a silent server would hang the run.
            eprintln!("im-bench: cannot start the deadline thread: {err}");
            std::process::exit(1);
        }
        Mutex::new(Waits::default())
    });
    // A panic elsewhere cannot leave the table inconsistent: each change is one assignment.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check_deadlines_forever() {
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let due: Vec<Waker> = waits()
            .slots
            .iter_mut()
            .filter(|slot| slot.as_ref().is_some_and(|(at, _)| *at <= now))
            .filter_map(|slot| slot.take().map(|(_, waker)| waker))
            .collect();
        // Woken outside the lock: waking may run executor code.
        due.into_iter().for_each(Waker::wake);
    }
}

/// Completes once `at` has passed (checked every [`TICK`]).
pub fn expired(at: Instant) -> Expired {
    Expired { at, slot: None }
}

/// The future of [`expired`].
#[derive(Debug)]
pub struct Expired {
    at: Instant,
    /// The table slot this wait holds while it is pending.
    slot: Option<usize>,
}

impl Expired {
    fn release(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut waits = waits();
            waits.slots[slot] = None;
            waits.free.push(slot);
        }
    }
}

impl Future for Expired {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.at {
            this.release();
            return Poll::Ready(());
        }
        let mut waits = waits();
        let slot = match this.slot {
            Some(slot) => slot,
            None => {
                let slot = waits.free.pop().unwrap_or_else(|| {
                    waits.slots.push(None);
                    waits.slots.len() - 1
                });
                this.slot = Some(slot);
                slot
            }
        };
        waits.slots[slot] = Some((this.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for Expired {
    fn drop(&mut self) {
        self.release();
    }
}
