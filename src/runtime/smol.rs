//! smol and async-net as a [`Runtime`]: the default, everything on one thread.
//!
//! The loop is the drivers'; this file only says how smol spawns a task, sets a timer, and
//! asks its reactor about a socket.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use smol::{Async, LocalExecutor, Timer};

use super::service::{serve_on, ServeError, Service};
use crate::driver::{
    set_keepalive, AsyncListener, AsyncStream, AsyncTimer, LocalBoxFuture, Runtime,
};
use simple_im_core::driver::Keepalive;

/// smol's local executor as a [`Runtime`].
#[derive(Clone)]
pub struct Smol {
    /// Weak, so that the tasks (which hold the runtime) do not keep their executor alive.
    executor: Weak<LocalExecutor<'static>>,
}

impl Smol {
    /// Runs `main` on a fresh local executor on this thread until it completes; every task it
    /// spawned is dropped (and every socket closed) when this returns.
    pub fn block_on<T>(main: impl FnOnce(Smol) -> LocalBoxFuture<T>) -> T {
        let executor = Rc::new(LocalExecutor::new());
        let runtime = Smol {
            executor: Rc::downgrade(&executor),
        };
        smol::block_on(executor.run(main(runtime)))
    }
}

impl Runtime for Smol {
    type Stream = Async<TcpStream>;
    type Listener = Async<TcpListener>;
    type Timer = SmolTimer;

    fn spawn(&self, task: LocalBoxFuture<()>) {
        // Once the executor is gone (shutdown), nothing starts.
        if let Some(executor) = self.executor.upgrade() {
            executor.spawn(task).detach();
        }
    }

    fn timer(&self, at: Option<Instant>) -> SmolTimer {
        let mut timer = SmolTimer(Timer::never(), None);
        timer.reset(at);
        timer
    }

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<Self::Stream>> {
        Box::pin(Async::<TcpStream>::connect(addr))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        Async::<TcpListener>::bind(addr)
    }

    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T> {
        Box::pin(smol::unblock(work))
    }
}

impl AsyncStream for Async<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_readable(self, cx)
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Async::poll_writable(self, cx)
    }

    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.get_ref().read(buffer)
    }

    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.get_ref().write(bytes)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.get_ref().shutdown(how)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.get_ref().set_nodelay(nodelay)
    }

    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()> {
        set_keepalive(self.get_ref().into(), keepalive)
    }
}

impl AsyncListener for Async<TcpListener> {
    type Stream = Async<TcpStream>;

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>> {
        loop {
            match self.get_ref().accept() {
                Ok((stream, peer)) => return Poll::Ready(Async::new(stream).map(|s| (s, peer))),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.poll_readable(cx))?;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

/// smol's timer, with the deadline it is set to.
pub struct SmolTimer(Timer, Option<Instant>);

impl AsyncTimer for SmolTimer {
    fn reset(&mut self, at: Option<Instant>) {
        if at == self.1 {
            return;
        }
        match at {
            Some(at) => self.0.set_at(at),
            None => self.0.clear(),
        }
        self.1 = at;
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.1.is_none() {
            return Poll::Pending;
        }
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Ready(_) => {
                self.1 = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs `service` on clients accepted on `listener`, on this thread, until a stop it is asked
/// for is done; when it returns, every connection is closed.
pub fn serve(listener: std::net::TcpListener, service: Service) -> Result<(), ServeError> {
    let listener = Async::new(listener).map_err(ServeError::setup(super::Kind::Smol))?;
    Smol::block_on(move |runtime| Box::pin(serve_on(runtime, listener, service)))
}
