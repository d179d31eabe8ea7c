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

/// Serves clients accepted on `listener` on this thread until a stop that `commands` asks for is done; when it
/// returns, every connection is closed.
pub fn serve(
    listener: std::net::TcpListener,
    users: simple_im_core::users::Users,
    config: simple_im_core::server::ServerConfig,
    driver: simple_im_core::driver::DriverConfig,
    commands: async_channel::Receiver<crate::driver::ServerCommand>,
) -> io::Result<()> {
    let listener = Async::new(listener)?;
    Smol::block_on(move |runtime| {
        Box::pin(crate::driver::serve(
            runtime.clone(),
            listener,
            users,
            config,
            driver,
            commands,
        ))
    });
    Ok(())
}

/// Joins the cluster at `cluster.url`, then serves clients on `listener` as one of its nodes
/// on this thread until a stop that `commands` asks for is done. `joined` is told the node's id before the first
/// client is served (im-server prints its `listening on` line then).
#[cfg(feature = "cluster")]
pub fn serve_cluster(
    listener: std::net::TcpListener,
    users: simple_im_core::users::Users,
    config: simple_im_core::server::ServerConfig,
    driver: simple_im_core::driver::DriverConfig,
    cluster: crate::cluster::ClusterConfig,
    joined: impl FnOnce(simple_im_core::server::NodeId) + 'static,
    commands: async_channel::Receiver<crate::driver::ServerCommand>,
) -> Result<(), String> {
    let listener = Async::new(listener).map_err(|error| error.to_string())?;
    Smol::block_on(move |runtime| {
        Box::pin(async move {
            let membership = crate::cluster::join(&cluster)
                .await
                .map_err(|error| error.to_string())?;
            let node = membership.node();
            joined(node);
            let server = simple_im_core::server::Server::clustered(users, config, node);
            let server = simple_im_core::driver::ServerDriver::with_server(server, &driver);
            let engine = move |questions, answers| membership.run(questions, answers);
            crate::driver::serve_cluster(runtime, listener, server, &driver, engine, commands)
                .await;
            Ok(())
        })
    })
}

/// Says that this build has no cluster engine (the `cluster` feature).
#[cfg(not(feature = "cluster"))]
pub fn serve_cluster(
    _listener: std::net::TcpListener,
    _users: simple_im_core::users::Users,
    _config: simple_im_core::server::ServerConfig,
    _driver: simple_im_core::driver::DriverConfig,
    _cluster: crate::cluster::ClusterConfig,
    _joined: impl FnOnce(simple_im_core::server::NodeId),
    _commands: async_channel::Receiver<crate::driver::ServerCommand>,
) -> Result<(), String> {
    Err("this build has no cluster engine (the `cluster` feature)".to_owned())
}
