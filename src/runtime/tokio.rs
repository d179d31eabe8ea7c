//! tokio as a [`Runtime`] (`--runtime tokio`): its current-thread runtime, the tasks on a
//! `LocalSet`, its reactor (which keeps a socket's interest registered, edge-triggered) and its
//! timer wheel.
//!
//! The loop is the drivers'; this file only says how tokio spawns a task, sets a timer, and
//! asks its reactor about a socket.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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
pub struct TokioStream(tokio::net::TcpStream);

/// A listening socket in tokio's reactor.
pub struct TokioListener(tokio::net::TcpListener);

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
        Box::pin(async move { tokio::net::TcpStream::connect(addr).await.map(TokioStream) })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<TokioListener> {
        listen(std::net::TcpListener::bind(addr)?)
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
fn listen(listener: std::net::TcpListener) -> io::Result<TokioListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener).map(TokioListener)
}

impl AsyncStream for TokioStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_write_ready(cx)
    }
    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buffer)
    }
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        // tokio's own is write-only and async: the socket underneath does both.
        socket2::SockRef::from(&self.0).shutdown(how)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        set_keepalive((&self.0).into(), keepalive)
    }
}

impl AsyncListener for TokioListener {
    type Stream = TokioStream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TokioStream, SocketAddr)>> {
        let accepted = self.0.poll_accept(cx);
        accepted.map_ok(|(stream, peer)| (TokioStream(stream), peer))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
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
    Tokio::block_on(move |runtime| {
        Box::pin(async move {
            let listener = listen(listener)?;
            serve_on(runtime, listener, service).await
        })
    })?
}
