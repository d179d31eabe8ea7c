//! tokio as a [`Runtime`] (`--runtime tokio`): its current-thread runtime, the tasks on a
//! `LocalSet`, its reactor (which keeps a socket's interest registered, edge-triggered) and its
//! timer wheel.
//!
//! The loop is the drivers'; this file only says how tokio spawns a task, sets a timer, and
//! asks its reactor about a socket.
//!
//! Sockets are std's in an [`AsyncFd`] rather than `tokio::net`'s: a `TcpStream`'s `try_read`
//! forgets readiness only when a read would block, so every read that empties the socket is
//! followed by one more that finds it empty (one `recvfrom` more per delivery, measured). Here
//! a short read or write forgets it as well, as tokio's own `AsyncRead` does: on a TCP socket
//! it means the same, and any later arrival is a new edge.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::service::{serve_on, ServeError, Service};
use crate::driver::{
    set_keepalive, AsyncListener, AsyncStream, AsyncTimer, LocalBoxFuture, Runtime,
};
use simple_im_core::driver::Keepalive;

/// tokio's current-thread runtime, its tasks on the `LocalSet` that [`Tokio::block_on`] runs.
#[derive(Clone)]
pub struct Tokio(());

impl Tokio {
    /// Runs `main` on a fresh current-thread runtime and `LocalSet` on this thread until it
    /// completes; every task it spawned is dropped (and every socket closed) when this returns.
    pub fn block_on<T>(main: impl FnOnce(Tokio) -> LocalBoxFuture<T>) -> io::Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        Ok(local.block_on(&runtime, main(Tokio(()))))
    }
}

/// A TCP socket in tokio's reactor.
pub struct TokioStream(AsyncFd<TcpStream>);

/// A listening socket in tokio's reactor.
pub struct TokioListener(AsyncFd<TcpListener>);

/// A tokio `Sleep` and the deadline it is set to (`None`: never).
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>, Option<Instant>);

impl Runtime for Tokio {
    type Stream = TokioStream;
    type Listener = TokioListener;
    type Timer = TokioTimer;

    fn spawn(&self, task: LocalBoxFuture<()>) {
        tokio::task::spawn_local(task);
    }

    fn timer(&self, at: Option<Instant>) -> TokioTimer {
        // A `Sleep` needs some deadline: `None` is a far one, never polled (see `poll_fired`).
        let sleep = tokio::time::sleep(Duration::from_secs(86_400));
        let mut timer = TokioTimer(Box::pin(sleep), None);
        timer.reset(at);
        timer
    }

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<TokioStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?.into_std()?;
            register(stream).map(TokioStream)
        })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<TokioListener> {
        listen(TcpListener::bind(addr)?)
    }

    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T> {
        let task = tokio::task::spawn_blocking(work);
        // A panic in the work is the work's own: it goes on here, as if run inline.
        Box::pin(async move {
            match task.await {
                Ok(value) => value,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        })
    }
}

/// `listener` in this thread's tokio reactor.
fn listen(listener: TcpListener) -> io::Result<TokioListener> {
    listener.set_nonblocking(true)?;
    register(listener).map(TokioListener)
}

/// `socket` in this thread's tokio reactor, for reading and writing.
fn register<T: AsRawFd>(socket: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` is a std socket that owns its descriptor: it stays open, and the same, until
    // the `AsyncFd` that now owns the socket drops it.
    let registered = unsafe { AsyncFd::register(socket) };
    registered.map_err(io::Error::from)
}

/// Whether a call that moved `done` of `asked` bytes (or failed) leaves the socket drained in
/// that direction: it would block, or it took less than was asked (not an end of file: that
/// stays ready, so that the next read sees it again).
fn drained(result: &io::Result<usize>, asked: usize) -> bool {
    match result {
        Ok(done) => *done > 0 && *done < asked,
        Err(error) => error.kind() == io::ErrorKind::WouldBlock,
    }
}

/// A context whose waker does nothing: to reach the readiness the reactor holds without
/// waiting on it. Only used where the task's own waker is registered again before it waits.
fn peek() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl AsyncStream for TokioStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the guard keeps the readiness until a call finds the socket drained.
        self.0.poll_read_ready(cx).map_ok(drop)
    }
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx).map_ok(drop)
    }
    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let result = self.0.get_ref().read(buffer);
        if drained(&result, buffer.len()) {
            if let Poll::Ready(Ok(mut ready)) = self.0.poll_read_ready(&mut peek()) {
                ready.clear_ready();
            }
        }
        result
    }
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        let result = self.0.get_ref().write(bytes);
        if drained(&result, bytes.len()) {
            if let Poll::Ready(Ok(mut ready)) = self.0.poll_write_ready(&mut peek()) {
                ready.clear_ready();
            }
        }
        result
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.get_ref().shutdown(how)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().peer_addr()
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.get_ref().set_nodelay(nodelay)
    }
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        set_keepalive(self.0.get_ref().into(), keepalive)
    }
}

impl AsyncListener for TokioListener {
    type Stream = TokioStream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TokioStream, SocketAddr)>> {
        loop {
            let mut ready = match self.0.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            match ready.try_io(|listener| listener.get_ref().accept()) {
                Ok(Ok((stream, peer))) => {
                    let accepted = stream.set_nonblocking(true).and_then(|()| register(stream));
                    return Poll::Ready(accepted.map(|stream| (TokioStream(stream), peer)));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                // Would block: readiness cleared, so the next poll registers the task.
                Err(_would_block) => {}
            }
        }
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }
}

impl AsyncTimer for TokioTimer {
    fn reset(&mut self, at: Option<Instant>) {
        if let (Some(at), true) = (at, at != self.1) {
            self.0.as_mut().reset(at.into());
        }
        self.1 = at;
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.1.is_none() || self.0.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.1 = None;
        Poll::Ready(())
    }
}

/// Runs `service` on clients accepted on `listener`, on a tokio runtime on this thread, until
/// a stop it is asked for is done.
pub fn serve(listener: std::net::TcpListener, service: Service) -> Result<(), ServeError> {
    let setup = ServeError::setup(super::Kind::Tokio);
    Tokio::block_on(move |runtime| {
        Box::pin(async move {
            let listener = listen(listener).map_err(ServeError::setup(super::Kind::Tokio))?;
            serve_on(runtime, listener, service).await
        })
    })
    .map_err(setup)?
}
