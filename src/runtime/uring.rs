//! io_uring as a [`Runtime`] (`--runtime uring`, Linux only): the loop is the drivers', on
//! the local executor (`local.rs`); the reactor under it is one ring.
//!
//! Reads and writes are ring operations, so a `/toall` to a thousand sockets is a thousand
//! submissions and one `io_uring_enter`, not a thousand `sendto`s:
//! - a read is a `RECV` into a buffer the kernel picks from a pool it shares with us (a
//!   registered buffer ring), submitted when the loop first finds the socket with nothing;
//!   "readable" means a receive has completed, and `try_read` copies from its buffer. On La it
//!   is one-shot and follows the driver's read grants, which so still hold clients back by
//!   TCP; on Lb, which is always read, it is multishot: armed once, for every arrival.
//! - `try_write` copies the bytes into the socket's send buffer and submits a `SEND`; the
//!   socket is writable again once it has completed. A shutdown waits for the send before it.
//! - the listener and Lb connects wait with one-shot `POLL_ADD`s; timers are the wait's timeout;
//!   other threads (the password pool, signals) wake the loop through an eventfd.
//!
//! Sockets stay blocking: the ring does the waiting, and a direct `recv` (when the pool ran
//! out) passes `MSG_DONTWAIT`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Shared, by path, with im-bench's bare io_uring relay, so that its unsafe constructor is no
/// part of this crate's public API.
#[path = "uring_buffers.rs"]
mod buffers;

use super::local::{self, Local, LocalTimer, Signal};
use super::service::{serve_on, ServeError, Service};
use crate::driver::{set_keepalive, AsyncListener, AsyncStream, LocalBoxFuture, Runtime};
use buffers::BufferPool;
use simple_im_core::driver::Keepalive;

/// Submission queue entries (the completion queue is twice as long).
const ENTRIES: u32 = 4096;
/// Receive buffers in the pool ([`BufferPool::BUFFER_SIZE`] each).
const BUFFERS: u16 = 2048;
/// The most one `try_write` takes: beyond it the socket is "full" until the send completes.
const SEND_MAX: usize = 256 * 1024;
/// `user_data` of the eventfd's poll; a socket's operations are `slot << 3 | op`.
const WAKE_UP: u64 = u64::MAX;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_POLL: u64 = 3;
const OP_OTHER: u64 = 4;

/// The io_uring runtime: the local executor over a ring of this thread's.
#[derive(Clone)]
pub struct Uring {
    reactor: Rc<Reactor>,
    local: Local,
}

/// What the ring's operations are about: one slot per socket.
struct Reactor(RefCell<State>);

struct State {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The receive buffers the kernel picks from (group 0); dropped after `ring`.
    pool: BufferPool,
    /// The loop's eventfd, which other threads write to wake it.
    eventfd: RawFd,
}

#[derive(Default)]
struct Slot {
    fd: RawFd,
    /// Owned here, not by the handle: the fd must outlive the operations on it.
    stream: Option<TcpStream>,
    in_flight: u32,
    dropped: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    receiving: bool,
    /// The loop reads this socket whenever it has bytes (Lb): its receive is multishot, armed
    /// once and completing for every arrival until it ends.
    always: bool,
    /// Completed receives in order: the buffer, its length, how much has been copied out. At
    /// most one for a one-shot socket; a multishot one's are bounded by the pool.
    received: VecDeque<(u16, usize, usize)>,
    /// Sticky: the peer's end, or a read error.
    read_end: Option<Option<io::ErrorKind>>,
    /// The pool ran dry: read directly until the socket would block.
    direct: bool,
    sending: Vec<u8>,
    sent: usize,
    write_error: Option<io::ErrorKind>,
    shutdown_after_send: bool,
    polling: bool,
    polled: Option<u32>,
}

impl Uring {
    /// Runs `main` on a fresh ring and local executor on this thread until it completes.
    /// `Err` if the ring cannot be set up (an old kernel, or io_uring forbidden by seccomp).
    pub fn block_on<T: 'static>(main: impl FnOnce(Uring) -> LocalBoxFuture<T>) -> io::Result<T> {
        Uring::block_on_with(BUFFERS, main)
    }

    /// [`Uring::block_on`] with a pool of `buffers` receive buffers (a power of two).
    fn block_on_with<T: 'static>(
        buffers: u16,
        main: impl FnOnce(Uring) -> LocalBoxFuture<T>,
    ) -> io::Result<T> {
        let reactor = Rc::new(Reactor::new(buffers)?);
        local::block_on(&*reactor.clone(), |local| main(Uring { reactor, local }))
    }
}

impl Reactor {
    fn new(buffers: u16) -> io::Result<Reactor> {
        // Completions are run only when the loop asks for them (DEFER_TASKRUN), in one batch
        // per turn on this thread, not whenever the kernel gets to them. That needs Linux 6.1,
        // which also has multishot receives (6.0) and buffer rings (5.19), which the reads rely
        // on: an older kernel is refused here, by name.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(ENTRIES)
            .map_err(|error| match error.raw_os_error() {
                Some(libc::EINVAL) => io::Error::other("it needs Linux 6.1 or later"),
                _ => error,
            })?;
        // SAFETY: `ring` is the field before `pool` in `State`, so it is dropped first.
        let pool = unsafe { BufferPool::register(&ring, buffers) }?;
        Ok(Reactor(RefCell::new(State {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            pool,
            eventfd: -1,
        })))
    }
}

impl local::Reactor for Reactor {
    fn watch(&self, eventfd: RawFd) {
        let mut state = self.0.borrow_mut();
        state.eventfd = eventfd;
        state.watch_eventfd();
    }

    /// Submits what is queued, waits for a completion (unless told not to) or the deadline,
    /// and handles what completed.
    fn turn(&self, signal: &Signal, deadline: Option<Instant>) -> io::Result<bool> {
        let mut state = self.0.borrow_mut();
        let submitted = match signal.sleep(deadline) {
            Some(timeout) if timeout.is_zero() => {
                let queue = state.ring.submission();
                if queue.is_empty() && !queue.taskrun() && !queue.cq_overflow() {
                    Ok(0)
                } else {
                    drop(queue);
                    // A wait of zero: submits, and runs the completions the kernel has deferred.
                    let timespec = types::Timespec::new();
                    let args = types::SubmitArgs::new().timespec(&timespec);
                    state.ring.submitter().submit_with_args(1, &args)
                }
            }
            Some(timeout) => {
                let timespec = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&timespec);
                state.ring.submitter().submit_with_args(1, &args)
            }
            None => state.ring.submit_and_wait(1),
        };
        signal.awake();
        match submitted {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(error) => return Err(error),
        }
        let mut woken = false;
        let completions: Vec<(u64, i32, u32)> = state
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (user_data, result, flags) in completions {
            if user_data == WAKE_UP {
                woken = true;
                if !cqueue::more(flags) {
                    state.watch_eventfd();
                }
            } else {
                state.complete(user_data, result, flags);
            }
        }
        Ok(woken)
    }
}

impl State {
    /// Polls the loop's eventfd, multishot: once, unless the kernel ends the poll.
    fn watch_eventfd(&mut self) {
        let poll = opcode::PollAdd::new(types::Fd(self.eventfd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(WAKE_UP);
        self.push(poll);
    }

    /// Queues `entry`, submitting first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry points into memory the state owns until its completion: the
            // pool, a slot's send buffer (kept while in flight), or nothing.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(error) = self.ring.submit() {
                log::warn!("io_uring submit failed: {error}");
            }
        }
    }

    fn add(&mut self, stream: TcpStream) -> usize {
        let slot = Slot {
            fd: stream.as_raw_fd(),
            stream: Some(stream),
            ..Slot::default()
        };
        match self.free.pop() {
            Some(index) => {
                self.slots[index] = slot;
                index
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }

    fn submit_op(&mut self, index: usize, op: u64, entry: squeue::Entry) {
        self.slots[index].in_flight += 1;
        self.push(entry.user_data((index as u64) << 3 | op));
    }

    fn receive(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        // A one-shot receive waits until the last one's bytes are taken: that is what holds a
        // client back by TCP until the driver wants more.
        let held = !slot.always && !slot.received.is_empty();
        if slot.receiving || held || slot.read_end.is_some() || slot.direct {
            return;
        }
        slot.receiving = true;
        let fd = types::Fd(slot.fd);
        let recv = if slot.always {
            opcode::RecvMulti::new(fd, 0).build()
        } else {
            opcode::Recv::new(fd, std::ptr::null_mut(), BufferPool::BUFFER_SIZE as u32)
                .buf_group(0)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.submit_op(index, OP_RECV, recv);
    }

    fn send(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let rest = &slot.sending[slot.sent..];
        let send = opcode::Send::new(types::Fd(slot.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.submit_op(index, OP_SEND, send);
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let (index, op) = ((user_data >> 3) as usize, user_data & 7);
        if op == OP_OTHER || index >= self.slots.len() {
            return;
        }
        // A multishot receive is one operation until its last completion.
        if !cqueue::more(flags) {
            self.slots[index].in_flight -= 1;
        }
        match op {
            OP_RECV => self.received(index, result, flags),
            OP_SEND => self.sent(index, result),
            _ => {
                let slot = &mut self.slots[index];
                slot.polling = false;
                slot.polled = Some(result.max(0) as u32);
                if let Some(waker) = slot.read_waker.take() {
                    waker.wake();
                }
            }
        }
        self.release_if_done(index);
    }

    fn received(&mut self, index: usize, result: i32, flags: u32) {
        let slot = &mut self.slots[index];
        slot.receiving = cqueue::more(flags);
        let buffer = cqueue::buffer_select(flags);
        match result {
            0 => slot.read_end = Some(None),
            n if n > 0 => slot.received.extend(buffer.map(|id| (id, n as usize, 0))),
            error if error == -libc::ENOBUFS => slot.direct = true,
            error if error == -libc::ECANCELED => {}
            error => slot.read_end = Some(Some(io::Error::from_raw_os_error(-error).kind())),
        }
        if let Some(waker) = slot.read_waker.take() {
            waker.wake();
        }
        if let Some(id) = buffer.filter(|_| result <= 0) {
            self.pool.give_back(id);
        }
    }

    fn sent(&mut self, index: usize, result: i32) {
        let slot = &mut self.slots[index];
        if result < 0 {
            slot.write_error = Some(io::Error::from_raw_os_error(-result).kind());
        } else {
            slot.sent += result as usize;
        }
        if slot.write_error.is_none() && slot.sent < slot.sending.len() && !slot.dropped {
            return self.send(index);
        }
        slot.sending.clear();
        slot.sent = 0;
        if std::mem::take(&mut slot.shutdown_after_send) {
            if let Some(stream) = &slot.stream {
                let _ = stream.shutdown(Shutdown::Write);
            }
        }
        if let Some(waker) = slot.write_waker.take() {
            waker.wake();
        }
    }

    fn release_if_done(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.dropped && slot.in_flight == 0 {
            for (buffer, _, _) in std::mem::take(&mut slot.received) {
                self.pool.give_back(buffer);
            }
            self.slots[index] = Slot::default();
            self.free.push(index);
        }
    }

    /// Waits (one-shot) for `events` on the slot's socket; the waker is the read waker.
    fn poll_events(&mut self, index: usize, events: u32, cx: &mut Context<'_>) -> Poll<u32> {
        let slot = &mut self.slots[index];
        if let Some(events) = slot.polled.take() {
            return Poll::Ready(events);
        }
        slot.read_waker = Some(cx.waker().clone());
        if !slot.polling {
            slot.polling = true;
            let poll = opcode::PollAdd::new(types::Fd(slot.fd), events).build();
            self.submit_op(index, OP_POLL, poll);
        }
        Poll::Pending
    }
}

/// A socket on the ring.
pub struct UringStream {
    reactor: Rc<Reactor>,
    slot: usize,
}

impl UringStream {
    fn new(reactor: &Rc<Reactor>, stream: TcpStream) -> io::Result<UringStream> {
        stream.set_nonblocking(false)?;
        let slot = reactor.0.borrow_mut().add(stream);
        Ok(UringStream {
            reactor: reactor.clone(),
            slot,
        })
    }

    fn with<T>(&self, work: impl FnOnce(&TcpStream) -> io::Result<T>) -> io::Result<T> {
        let state = self.reactor.0.borrow();
        match &state.slots[self.slot].stream {
            Some(stream) => work(stream),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        let mut state = self.reactor.0.borrow_mut();
        let slot = &mut state.slots[self.slot];
        slot.dropped = true;
        // Closed now; the peer sees the end once the cancelled operations let go of the file.
        slot.stream = None;
        let pending = [
            (slot.receiving, OP_RECV),
            (!slot.sending.is_empty(), OP_SEND),
            (slot.polling, OP_POLL),
        ];
        for (pending, op) in pending {
            if pending {
                // By `user_data`, which stays this slot's until every operation has completed.
                let cancel = types::CancelBuilder::user_data((self.slot as u64) << 3 | op);
                state.push(
                    opcode::AsyncCancel2::new(cancel)
                        .build()
                        .user_data(OP_OTHER),
                );
            }
        }
        state.release_if_done(self.slot);
    }
}

impl AsyncStream for UringStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.reactor.0.borrow_mut();
        let slot = &mut state.slots[self.slot];
        if !slot.received.is_empty() || slot.read_end.is_some() || slot.direct {
            return Poll::Ready(Ok(()));
        }
        slot.read_waker = Some(cx.waker().clone());
        state.receive(self.slot);
        Poll::Pending
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.reactor.0.borrow_mut();
        let slot = &mut state.slots[self.slot];
        if let Some(kind) = slot.write_error {
            return Poll::Ready(Err(kind.into()));
        }
        if slot.sending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        slot.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let mut state = self.reactor.0.borrow_mut();
        let state = &mut *state;
        let mut taken = 0;
        while let Some(&(id, len, copied)) = state.slots[self.slot].received.front() {
            let n = (buffer.len() - taken).min(len - copied);
            buffer[taken..taken + n].copy_from_slice(state.pool.filled(id, copied..copied + n));
            taken += n;
            let received = &mut state.slots[self.slot].received;
            if copied + n < len {
                received[0].2 = copied + n;
                break;
            }
            received.pop_front();
            state.pool.give_back(id);
        }
        let slot = &mut state.slots[self.slot];
        if taken > 0 {
            return Ok(taken);
        }
        if let Some(end) = slot.read_end {
            return end.map_or(Ok(0), |kind| Err(kind.into()));
        }
        if slot.direct {
            // SAFETY: receives into a live buffer of the length given, without waiting.
            let n = unsafe {
                libc::recv(
                    slot.fd,
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            slot.direct = false;
            state.receive(self.slot);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.reactor.0.borrow_mut();
        let slot = &mut state.slots[self.slot];
        if let Some(kind) = slot.write_error {
            return Err(kind.into());
        }
        if !slot.sending.is_empty() || slot.stream.is_none() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(SEND_MAX);
        slot.sending.extend_from_slice(&bytes[..n]);
        state.send(self.slot);
        Ok(n)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let mut state = self.reactor.0.borrow_mut();
        let slot = &mut state.slots[self.slot];
        // The last bytes handed over are still being sent: the end follows them.
        if how == Shutdown::Write && !slot.sending.is_empty() {
            slot.shutdown_after_send = true;
            return Ok(());
        }
        match &slot.stream {
            Some(stream) => stream.shutdown(how),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.with(|stream| stream.local_addr())
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.with(|stream| stream.peer_addr())
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.with(|stream| stream.set_nodelay(nodelay))
    }

    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        self.with(|stream| set_keepalive(stream.into(), keepalive))
    }

    fn read_always(&self) {
        self.reactor.0.borrow_mut().slots[self.slot].always = true;
    }
}

/// A listening socket on the ring: accepts directly, waits with a poll.
pub struct UringListener {
    reactor: Rc<Reactor>,
    listener: TcpListener,
    /// A slot for the listener's polls (its stream is a placeholder never used for I/O).
    slot: usize,
}

impl AsyncListener for UringListener {
    type Stream = UringStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    return Poll::Ready(UringStream::new(&self.reactor, stream).map(|s| (s, peer)))
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    let mut state = self.reactor.0.borrow_mut();
                    std::task::ready!(state.poll_events(self.slot, libc::POLLIN as u32, cx));
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Runtime for Uring {
    type Stream = UringStream;
    type Listener = UringListener;
    type Timer = LocalTimer;

    fn spawn(&self, task: LocalBoxFuture<()>) {
        self.local.spawn(task);
    }

    fn timer(&self, at: Option<Instant>) -> LocalTimer {
        self.local.timer(at)
    }

    fn now(&self) -> Instant {
        self.local.now()
    }

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<UringStream>> {
        let reactor = self.reactor.clone();
        Box::pin(async move {
            let domain = socket2::Domain::for_address(addr);
            let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            socket.set_nonblocking(true)?;
            match socket.connect(&addr.into()) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(error) => return Err(error),
            }
            let stream = UringStream::new(&reactor, TcpStream::from(socket))?;
            let events = (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) as u32;
            std::future::poll_fn(|cx| reactor.0.borrow_mut().poll_events(stream.slot, events, cx))
                .await;
            match stream.with(|stream| stream.take_error())? {
                Some(error) => Err(error),
                None => Ok(stream),
            }
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<UringListener> {
        self.listen(TcpListener::bind(addr)?)
    }

    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T> {
        Box::pin(smol::unblock(work))
    }
}

impl Uring {
    /// Puts `listener` on the ring.
    pub fn listen(&self, listener: TcpListener) -> io::Result<UringListener> {
        listener.set_nonblocking(true)?;
        let placeholder = TcpStream::from(OwnedFd::from(listener.try_clone()?));
        let slot = self.reactor.0.borrow_mut().add(placeholder);
        Ok(UringListener {
            reactor: self.reactor.clone(),
            listener,
            slot,
        })
    }
}

/// Runs `service` on clients accepted on `listener`, on this thread's ring, until a stop it is
/// asked for is done. `Err` names why io_uring could not be used.
pub fn serve(listener: TcpListener, service: Service) -> Result<(), ServeError> {
    let setup = ServeError::setup(super::Kind::Uring);
    Uring::block_on(move |runtime| {
        Box::pin(async move {
            let listener = runtime
                .listen(listener)
                .map_err(ServeError::setup(super::Kind::Uring))?;
            serve_on(runtime, listener, service).await
        })
    })
    .map_err(setup)?
}

/// Unit tests of the reactor's private parts (test builds only: the file says so itself), in
/// a file of their own.
#[path = "uring_tests.rs"]
mod tests;
