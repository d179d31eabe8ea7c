//! Edge-triggered epoll as a [`Runtime`] (`--runtime epoll`, Linux only): the drivers' loop on
//! the local executor (`local.rs`), over a reactor of mio's poller that registers each socket
//! once.
//!
//! smol's own reactor (async-io) arms a socket one-shot: every wait for it is an `epoll_ctl`,
//! and its readiness goes through locks meant for many threads. Here a socket is registered
//! once, for reading and writing, edge-triggered; an event sets the socket's readiness and
//! wakes its task, and the readiness is cleared when a read or write finds the socket empty or
//! full — or takes less than was asked, which on a TCP socket means the same (as tokio does):
//! any later arrival is a new edge. Everything lives on the loop's thread, so no lock is taken.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};

use super::local::{self, Local, LocalTimer, Signal};
use super::service::{serve_on, ServeError, Service};
use crate::driver::{set_keepalive, AsyncListener, AsyncStream, LocalBoxFuture, Runtime};
use simple_im_core::driver::Keepalive;

/// Events taken from the kernel per wait.
const EVENTS: usize = 1024;
/// The eventfd's token; a socket's is its slot and the slot's generation.
const WAKE_UP: Token = Token(usize::MAX);

/// The epoll runtime: the local executor over an edge-triggered poller of this thread's.
#[derive(Clone)]
pub struct Epoll {
    reactor: Rc<Reactor>,
    local: Local,
}

struct Reactor(RefCell<State>);

struct State {
    poll: mio::Poll,
    events: Events,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// A registered socket's readiness, as the last events and calls left it.
#[derive(Default)]
struct Slot {
    /// Bumped when the slot is let go, so that a late event for its old socket is ignored.
    generation: u32,
    readable: bool,
    writable: bool,
    /// Sticky: the peer's end or an error was seen, so a read or write cannot block any more
    /// (a short read before the end does not mean nothing is left to read).
    read_closed: bool,
    write_closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Epoll {
    /// Runs `main` on a fresh poller and local executor on this thread until it completes.
    pub fn block_on<T: 'static>(main: impl FnOnce(Epoll) -> LocalBoxFuture<T>) -> io::Result<T> {
        let reactor = Rc::new(Reactor(RefCell::new(State {
            poll: mio::Poll::new()?,
            events: Events::with_capacity(EVENTS),
            slots: Vec::new(),
            free: Vec::new(),
        })));
        local::block_on(&*reactor.clone(), |local| main(Epoll { reactor, local }))
    }
}

impl local::Reactor for Reactor {
    fn watch(&self, eventfd: RawFd) {
        // Edge-triggered and never re-armed: each write to the eventfd is a new edge.
        let registered = self.0.borrow().poll.registry().register(
            &mut SourceFd(&eventfd),
            WAKE_UP,
            Interest::READABLE,
        );
        if let Err(error) = registered {
            log::warn!("cannot watch the loop's eventfd: {error}");
        }
    }

    fn turn(&self, signal: &Signal, deadline: Option<Instant>) -> io::Result<bool> {
        let mut state = self.0.borrow_mut();
        let state = &mut *state;
        // mio rounds the wait up to epoll's milliseconds: never woken before the deadline.
        let timeout = signal.sleep(deadline);
        let polled = state.poll.poll(&mut state.events, timeout);
        signal.awake();
        match polled {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
        let mut woken = false;
        for event in state.events.iter() {
            if event.token() == WAKE_UP {
                woken = true;
                continue;
            }
            let (index, generation) = (event.token().0 & 0xffff_ffff, event.token().0 >> 32);
            let Some(slot) = state.slots.get_mut(index) else {
                continue;
            };
            if slot.generation as usize != generation {
                continue;
            }
            slot.read_closed |= event.is_read_closed() || event.is_error();
            slot.write_closed |= event.is_write_closed() || event.is_error();
            if event.is_readable() || slot.read_closed {
                slot.readable = true;
                if let Some(waker) = slot.read_waker.take() {
                    waker.wake();
                }
            }
            if event.is_writable() || slot.write_closed {
                slot.writable = true;
                if let Some(waker) = slot.write_waker.take() {
                    waker.wake();
                }
            }
        }
        Ok(woken)
    }
}

impl Reactor {
    /// Registers `source` once, for both directions; starts ready both ways, so the first
    /// call finds out.
    fn add(&self, source: &mut impl mio::event::Source) -> io::Result<usize> {
        let mut state = self.0.borrow_mut();
        let index = match state.free.pop() {
            Some(index) => index,
            None => {
                state.slots.push(Slot::default());
                state.slots.len() - 1
            }
        };
        let slot = &mut state.slots[index];
        slot.readable = true;
        slot.writable = true;
        let token = Token((slot.generation as usize) << 32 | index);
        let registered =
            state
                .poll
                .registry()
                .register(source, token, Interest::READABLE | Interest::WRITABLE);
        if let Err(error) = registered {
            state.release(index);
            return Err(error);
        }
        Ok(index)
    }

    fn poll_ready(&self, index: usize, write: bool, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.borrow_mut();
        let slot = &mut state.slots[index];
        let (ready, waker) = match write {
            false => (slot.readable || slot.read_closed, &mut slot.read_waker),
            true => (slot.writable || slot.write_closed, &mut slot.write_waker),
        };
        if ready {
            return Poll::Ready(());
        }
        match waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Notes what a read (`write` false) or write of `asked` bytes did: the socket is not
    /// ready that way any more if it would block or took less than asked.
    fn settle(&self, index: usize, write: bool, asked: usize, result: &io::Result<usize>) {
        let spent = match result {
            Ok(n) => *n > 0 && *n < asked,
            Err(error) => error.kind() == io::ErrorKind::WouldBlock,
        };
        if spent {
            self.spent(index, write);
        }
    }

    /// The socket is not ready that way until its next event.
    fn spent(&self, index: usize, write: bool) {
        let mut state = self.0.borrow_mut();
        let slot = &mut state.slots[index];
        match write {
            false => slot.readable = false,
            true => slot.writable = false,
        }
    }
}

impl State {
    fn release(&mut self, index: usize) {
        let generation = self.slots[index].generation.wrapping_add(1);
        self.slots[index] = Slot {
            generation,
            ..Slot::default()
        };
        self.free.push(index);
    }
}

/// A socket registered with the poller.
pub struct EpollStream {
    reactor: Rc<Reactor>,
    slot: usize,
    stream: TcpStream,
}

impl EpollStream {
    fn new(reactor: &Rc<Reactor>, mut stream: TcpStream) -> io::Result<EpollStream> {
        let slot = reactor.add(&mut stream)?;
        Ok(EpollStream {
            reactor: reactor.clone(),
            slot,
            stream,
        })
    }
}

impl Drop for EpollStream {
    fn drop(&mut self) {
        // Closing the socket (next, as the field drops) takes it out of the epoll set.
        self.reactor.0.borrow_mut().release(self.slot);
    }
}

impl AsyncStream for EpollStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.reactor.poll_ready(self.slot, false, cx).map(Ok)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.reactor.poll_ready(self.slot, true, cx).map(Ok)
    }

    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let result = (&self.stream).read(buffer);
        self.reactor.settle(self.slot, false, buffer.len(), &result);
        result
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        let result = (&self.stream).write(bytes);
        self.reactor.settle(self.slot, true, bytes.len(), &result);
        result
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.stream.shutdown(how)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.stream.set_nodelay(nodelay)
    }

    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        set_keepalive((&self.stream).into(), keepalive)
    }
}

/// A listening socket registered with the poller.
pub struct EpollListener {
    reactor: Rc<Reactor>,
    slot: usize,
    listener: TcpListener,
}

impl Drop for EpollListener {
    fn drop(&mut self) {
        self.reactor.0.borrow_mut().release(self.slot);
    }
}

impl AsyncListener for EpollListener {
    type Stream = EpollStream;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        loop {
            std::task::ready!(self.reactor.poll_ready(self.slot, false, cx));
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    return Poll::Ready(EpollStream::new(&self.reactor, stream).map(|s| (s, peer)))
                }
                // An accept takes one connection of many: only this says none is left.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.reactor.spent(self.slot, false);
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

impl Runtime for Epoll {
    type Stream = EpollStream;
    type Listener = EpollListener;
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

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<EpollStream>> {
        let reactor = self.reactor.clone();
        Box::pin(async move {
            let stream = EpollStream::new(&reactor, TcpStream::connect(addr)?)?;
            // Not writable until the handshake is over (it started ready, as every socket).
            reactor.spent(stream.slot, true);
            std::future::poll_fn(|cx| reactor.poll_ready(stream.slot, true, cx)).await;
            match stream.stream.take_error()? {
                Some(error) => Err(error),
                None => Ok(stream),
            }
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<EpollListener> {
        self.listen(std::net::TcpListener::bind(addr)?)
    }

    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T> {
        Box::pin(smol::unblock(work))
    }
}

impl Epoll {
    /// Registers `listener` with the poller.
    pub fn listen(&self, listener: std::net::TcpListener) -> io::Result<EpollListener> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let slot = self.reactor.add(&mut listener)?;
        Ok(EpollListener {
            reactor: self.reactor.clone(),
            slot,
            listener,
        })
    }
}

/// Runs `service` on clients accepted on `listener`, on this thread's poller, until a stop it
/// is asked for is done.
pub fn serve(listener: std::net::TcpListener, service: Service) -> Result<(), ServeError> {
    Epoll::block_on(move |runtime| {
        Box::pin(async move {
            let listener = runtime.listen(listener)?;
            serve_on(runtime, listener, service).await
        })
    })?
}
