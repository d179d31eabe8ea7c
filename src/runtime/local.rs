//! What the runtimes with a reactor of their own (`epoll`, `uring`) share: smol's local
//! executor driven by hand on this thread, the deadlines of their timers, and the signal that
//! wakes the loop from its own thread (a flag) or another (an eventfd the reactor watches).
//!
//! A reactor only says how to wait: [`Reactor::turn`] waits for I/O at most as long as
//! [`Signal::sleep`] allows, handles what happened, and reports whether the eventfd fired.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use smol::LocalExecutor;

use crate::driver::{AsyncTimer, LocalBoxFuture};

/// One wait of a reactor.
pub(crate) trait Reactor {
    /// Starts watching the signal's eventfd, for as long as the reactor lives.
    fn watch(&self, eventfd: RawFd);
    /// Waits for I/O no longer than `signal.sleep(deadline)` says, and handles it; true if
    /// the eventfd fired.
    fn turn(&self, signal: &Signal, deadline: Option<Instant>) -> io::Result<bool>;
}

/// Runs `main` on a fresh local executor over `reactor` until it completes.
pub(crate) fn block_on<T>(
    reactor: &impl Reactor,
    main: impl FnOnce(Local) -> LocalBoxFuture<T>,
) -> io::Result<T> {
    let signal = Arc::new(Signal::new()?);
    let executor = Rc::new(LocalExecutor::new());
    let local = Local {
        executor: Rc::downgrade(&executor),
        timers: Rc::default(),
    };
    let timers = local.timers.clone();
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut main = pin!(executor.run(main(local)));
    reactor.watch(signal.eventfd.as_raw_fd());
    loop {
        if signal.notified.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(value) = main.as_mut().poll(&mut cx) {
                return Ok(value);
            }
        }
        let deadline = timers.borrow().next();
        if reactor.turn(&signal, deadline)? {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from the eventfd (non-blocking).
            unsafe { libc::read(signal.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        }
        timers.borrow_mut().fire(Instant::now());
    }
}

/// The executor and timers a runtime hands its tasks.
#[derive(Clone)]
pub(crate) struct Local {
    /// Weak, so that the tasks (which hold the runtime) do not keep their executor alive.
    executor: Weak<LocalExecutor<'static>>,
    timers: Rc<RefCell<Timers>>,
}

impl Local {
    /// Runs `task` on the executor, detached; once the executor is gone, nothing starts.
    pub(crate) fn spawn(&self, task: LocalBoxFuture<()>) {
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(task).detach();
        }
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
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
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
}

impl Timers {
    fn next(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(at, _)| *at)
    }

    fn fire(&mut self, now: Instant) {
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
