//! The executor and timers of `local.rs`, run on the io_uring reactor.
#![cfg(test)]

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::driver::{AsyncTimer, Runtime};
use crate::runtime::uring::Uring;

/// Runs `test` on a thread of its own and fails, rather than hangs, if it takes over 20 s.
fn within_time<T: Send + 'static>(test: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(test());
    });
    result
        .recv_timeout(Duration::from_secs(20))
        .expect("the loop hung")
}

/// Sets its flag when dropped.
struct Dropped(Rc<Cell<bool>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// Even one whose waker is kept by something that outlives the loop (as a socket's is by
/// its reactor slot).
#[test]
fn tasks_still_waiting_when_main_ends_are_dropped() {
    let dropped = within_time(|| {
        let dropped = Rc::new(Cell::new(false));
        let guard = Dropped(dropped.clone());
        let kept = Rc::new(RefCell::new(None::<Waker>));
        let keeper = kept.clone();
        Uring::block_on(move |runtime| {
            Box::pin(async move {
                runtime.spawn(Box::pin(async move {
                    let _guard = guard;
                    poll_fn(|cx| {
                        *keeper.borrow_mut() = Some(cx.waker().clone());
                        Poll::<()>::Pending
                    })
                    .await
                }));
                // Lets the task start (and wait) before main ends.
                futures_lite::future::yield_now().await;
            })
        })
        .unwrap();
        let dropped = dropped.get();
        drop(kept);
        dropped
    });
    assert!(dropped, "a task outlived its executor");
}

#[test]
fn a_wake_from_another_thread_reaches_the_sleeping_loop() {
    let answer = within_time(|| {
        Uring::block_on(|runtime| {
            Box::pin(async move {
                runtime
                    .unblock(|| {
                        std::thread::sleep(Duration::from_millis(50));
                        42
                    })
                    .await
            })
        })
        .unwrap()
    });
    assert_eq!(answer, 42);
}

/// More tasks than one pass runs, each waking itself: the loop must not sleep while some
/// are left over.
#[test]
fn tasks_past_one_pass_all_run() {
    const TASKS: usize = 1_000;
    let finished = within_time(|| {
        Uring::block_on(|runtime| {
            Box::pin(async move {
                let finished = Rc::new(Cell::new(0));
                for _ in 0..TASKS {
                    let finished = finished.clone();
                    runtime.spawn(Box::pin(async move {
                        for _ in 0..3 {
                            futures_lite::future::yield_now().await;
                        }
                        finished.set(finished.get() + 1);
                    }));
                }
                while finished.get() < TASKS {
                    futures_lite::future::yield_now().await;
                }
                finished.get()
            })
        })
        .unwrap()
    });
    assert_eq!(finished, TASKS);
}

#[test]
fn a_timer_fires_at_its_deadline_not_before() {
    let (asked, fired) = within_time(|| {
        Uring::block_on(|runtime| {
            Box::pin(async move {
                let asked = Instant::now() + Duration::from_millis(30);
                let mut timer = runtime.timer(Some(asked));
                poll_fn(|cx| timer.poll_fired(cx)).await;
                (asked, Instant::now())
            })
        })
        .unwrap()
    });
    assert!(fired >= asked);
}

/// `now` is the loop's reading when its last wait ended: the same all through a turn, never
/// ahead of the clock, and past a deadline once the wait for it is over.
#[test]
fn the_loop_clock_is_read_once_per_turn() {
    let (first, again, before, asked, after) = within_time(|| {
        Uring::block_on(|runtime| {
            Box::pin(async move {
                let first = runtime.now();
                std::thread::sleep(Duration::from_millis(5));
                let again = runtime.now();
                let before = Instant::now();
                let asked = before + Duration::from_millis(20);
                let mut timer = runtime.timer(Some(asked));
                poll_fn(|cx| timer.poll_fired(cx)).await;
                (first, again, before, asked, runtime.now())
            })
        })
        .unwrap()
    });
    assert_eq!(first, again, "read again within one turn");
    assert!(first <= before);
    assert!(
        after >= asked,
        "the turn after the timer's wait reads the clock anew"
    );
}
