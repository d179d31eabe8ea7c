//! The io_uring runtime's executor, apart from its reactor: a local executor driven by hand on
//! this thread, the deadlines of its timers, and the signal that wakes the loop from its own
//! thread (a flag) or another (an eventfd the reactor watches). No maintained executor lets a
//! loop wait in `io_uring_enter` between its turns, which is why this one exists, and only in
//! the opt-in `uring` feature.
//!
//! A reactor only says how to wait: [`Reactor::turn`] waits for I/O at most as long as
//! [`Signal::sleep`] allows, handles what happened, and reports whether the eventfd fired.
//!
//! The executor is async-task's tasks and one queue, by hand rather than smol's
//! `LocalExecutor`: that one is built to be shared by threads (a global queue, local queues,
//! stealing, a ticker), which was 16 % of the loop's own instructions per `/to` delivery; here
//! there is one thread, and a task woken is a push onto a queue the loop drains each turn.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_task::Runnable;
use slab::Slab;

use crate::driver::{AsyncTimer, LocalBoxFuture};

/// One wait of a reactor.
pub(crate) trait Reactor {
    /// Starts watching the signal's eventfd, for as long as the reactor lives.
    fn watch(&self, eventfd: RawFd);
    /// Waits for I/O no longer than `signal.sleep(deadline)` says, and handles it; true if
    /// the eventfd fired.
    fn turn(&self, signal: &Signal, deadline: Option<Instant>) -> io::Result<bool>;
}

/// Tasks run per turn of the reactor at most, so that a busy loop still sees new I/O.
const RUNS_PER_TURN: usize = 256;

thread_local! {
    /// Whether this thread's executor is running its queue: a task woken meanwhile from this
    /// thread will be run in the same pass, so it needs no wake-up of the loop.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `main` on a fresh local executor over `reactor` until it completes.
pub(crate) fn block_on<T: 'static>(
    reactor: &impl Reactor,
    main: impl FnOnce(Local) -> LocalBoxFuture<T>,
) -> io::Result<T> {
    let signal = Arc::new(Signal::new()?);
    let queue = Arc::new(Queue {
        runnables: Mutex::default(),
        signal: signal.clone(),
    });
    let executor = Rc::new(Executor {
        queue: queue.clone(),
        active: RefCell::default(),
    });
    let local = Local {
        executor: Rc::downgrade(&executor),
        timers: Rc::default(),
    };
    let timers = local.timers.clone();
    timers.borrow_mut().fire(); // The first turn's clock.
    let (runnable, main) = async_task::spawn_local(main(local), Queue::scheduler(&queue));
    runnable.schedule();
    reactor.watch(signal.eventfd.as_raw_fd());
    loop {
        // Cleared before running anything, so that a wake-up from here on is not lost.
        signal.notified.store(false, Ordering::SeqCst);
        executor.run(&signal);
        if main.is_finished() {
            break;
        }
        let deadline = timers.borrow().next();
        if reactor.turn(&signal, deadline)? {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from the eventfd (non-blocking).
            unsafe { libc::read(signal.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        timers.borrow_mut().fire();
    }
    match pin!(main).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(io::Error::other("the loop's main task did not finish")),
    }
}

/// The loop's tasks: those woken wait in `queue`; every live one's waker is in `active`, so
/// that dropping the executor ends them all (and their sockets) rather than leaking them.
struct Executor {
    queue: Arc<Queue>,
    active: RefCell<Slab<Waker>>,
}

/// Tasks woken and not run yet. A waker may be called from any thread (the blocking pool's,
/// the signal handler's), so this is behind a lock, uncontended in practice.
struct Queue {
    runnables: Mutex<VecDeque<Runnable>>,
    signal: Arc<Signal>,
}

impl Queue {
    /// How a task of this queue is scheduled when woken: pushed onto it.
    fn scheduler(queue: &Arc<Queue>) -> impl Fn(Runnable) + Send + Sync + 'static {
        let queue = queue.clone();
        move |runnable| queue.push(runnable)
    }

    fn push(&self, runnable: Runnable) {
        self.runnables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(runnable);
        if !RUNNING.with(Cell::get) {
            self.signal.notify();
        }
    }

    fn pop(&self) -> Option<Runnable> {
        self.runnables
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

impl Executor {
    fn spawn(self: &Rc<Self>, task: LocalBoxFuture<()>) {
        let mut active = self.active.borrow_mut();
        let index = active.vacant_entry().key();
        let executor = Rc::downgrade(self);
        let task = async move {
            let _forget = Forget { executor, index };
            task.await
        };
        let (runnable, task) = async_task::spawn_local(task, Queue::scheduler(&self.queue));
        active.insert(runnable.waker());
        task.detach();
        runnable.schedule();
    }

    /// Runs the tasks woken so far, and those they wake, up to [`RUNS_PER_TURN`]; if some are
    /// left, the loop is notified so that its next wait does not sleep.
    fn run(&self, signal: &Signal) {
        RUNNING.with(|running| running.set(true));
        let mut left = true;
        for _ in 0..RUNS_PER_TURN {
            let Some(runnable) = self.queue.pop() else {
                left = false;
                break;
            };
            runnable.run();
        }
        RUNNING.with(|running| running.set(false));
        if left {
            signal.notified.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Woken, each live task is queued; dropping it unrun drops its future.
        let wakers: Vec<Waker> = self.active.borrow_mut().drain().collect();
        wakers.into_iter().for_each(Waker::wake);
        while let Some(runnable) = self.queue.pop() {
            drop(runnable);
        }
    }
}

/// Takes a finished (or dropped) task out of its executor's `active`.
struct Forget {
    executor: Weak<Executor>,
    index: usize,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(executor) = self.executor.upgrade() {
            if let Ok(mut active) = executor.active.try_borrow_mut() {
                active.try_remove(self.index);
            }
        }
    }
}

/// The executor and timers a runtime hands its tasks.
#[derive(Clone)]
pub(crate) struct Local {
    /// Weak, so that the tasks (which hold the runtime) do not keep their executor alive.
    executor: Weak<Executor>,
    timers: Rc<RefCell<Timers>>,
}

impl Local {
    /// Runs `task` on the executor, detached; once the executor is gone, nothing starts.
    pub(crate) fn spawn(&self, task: LocalBoxFuture<()>) {
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(task);
        }
    }

    /// The clock as the loop read it when its last wait ended (every event of this turn had
    /// happened by then), so that the turn's tasks need no clock call each, as libuv's.
    pub(crate) fn now(&self) -> Instant {
        self.timers.borrow().now.unwrap_or_else(Instant::now)
    }

    /// A timer set to `at`.
    pub(crate) fn timer(&self, at: Option<Instant>) -> LocalTimer {
        LocalTimer {
            timers: self.timers.clone(),
            at,
            key: None,
        }
    }
}

/// Wakes the loop: from its own thread by a flag, from others through the eventfd as well.
pub(crate) struct Signal {
    notified: AtomicBool,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl Signal {
    fn new() -> io::Result<Signal> {
        // SAFETY: eventfd has no memory arguments; the result is checked before it is owned.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Signal {
            notified: AtomicBool::new(true),
            sleeping: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(eventfd) },
        })
    }

    /// Called by a reactor before it waits: how long it may (`None`: until something
    /// happens, zero: not at all, as a task is already woken or a timer due). From here until
    /// [`Signal::awake`], other threads wake the loop through the eventfd.
    pub(crate) fn sleep(&self, deadline: Option<Instant>) -> Option<Duration> {
        self.sleeping.store(true, Ordering::SeqCst);
        if self.notified.load(Ordering::SeqCst) {
            return Some(Duration::ZERO);
        }
        deadline.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Called by a reactor once its wait is over.
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Something is to be done: the loop's next wait does not sleep, or ends if it has begun.
    fn notify(&self) {
        self.notified.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an eventfd this signal owns.
            unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

/// The deadlines being waited on, soonest first; the number tells equal instants apart.
#[derive(Default)]
pub(crate) struct Timers {
    deadlines: BTreeMap<(Instant, u64), Waker>,
    next_key: u64,
    /// When the last [`Timers::fire`] ran.
    now: Option<Instant>,
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    fn fire(&mut self) {
        let now = *self.now.insert(Instant::now());
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().wake();
        }
    }
}

/// A timer: an entry in the loop's deadlines while it is waited on.
pub struct LocalTimer {
    timers: Rc<RefCell<Timers>>,
    at: Option<Instant>,
    key: Option<(Instant, u64)>,
}

impl LocalTimer {
    fn forget(&mut self) {
        if let Some(key) = self.key.take() {
            self.timers.borrow_mut().deadlines.remove(&key);
        }
    }
}

impl Drop for LocalTimer {
    fn drop(&mut self) {
        self.forget();
    }
}

impl AsyncTimer for LocalTimer {
    fn reset(&mut self, at: Option<Instant>) {
        if at != self.at {
            self.forget();
            self.at = at;
        }
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        if at <= Instant::now() {
            self.forget();
            self.at = None;
            return Poll::Ready(());
        }
        let mut timers = self.timers.borrow_mut();
        let timers = &mut *timers;
        let key = *self.key.get_or_insert_with(|| {
            timers.next_key += 1;
            (at, timers.next_key)
        });
        timers.deadlines.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

/// Unit tests of the executor and timers (test builds only: the file says so itself), in a
/// file of their own.
#[path = "local_tests.rs"]
mod tests;
