//! `im-server` on tokio: a third runtime behind the same [`Runtime`] trait, in one file.
//!
//! Everything the server does (the connection table, caps, write deadlines, linger, every
//! protocol rule) is the driver's; this file only says how tokio spawns a local task, sets a
//! timer, and asks its reactor about a socket. Run it with
//! `cargo run --example tokio_server -- 4000 examples/users.txt`.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Instant;

use simple_im::driver::{
    AsyncListener, AsyncStream, AsyncTimer, DriverConfig, LocalBoxFuture, Runtime,
};
use simple_im::server::ServerConfig;
use simple_im::users::Users;

/// tokio's current-thread runtime, with its tasks on a `LocalSet`.
#[derive(Clone)]
struct Tokio;

/// Newtypes, because both the traits and tokio's types live in other crates.
struct Stream(tokio::net::TcpStream);
struct Listener(tokio::net::TcpListener);
struct Timer(Pin<Box<tokio::time::Sleep>>, Option<Instant>);

impl Runtime for Tokio {
    type Stream = Stream;
    type Listener = Listener;
    type Timer = Timer;

    fn spawn(&self, task: LocalBoxFuture<()>) {
        tokio::task::spawn_local(task);
    }

    fn timer(&self, at: Option<Instant>) -> Timer {
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let mut timer = Timer(Box::pin(tokio::time::sleep_until(far)), None);
        timer.reset(at);
        timer
    }

    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<Stream>> {
        Box::pin(async move { tokio::net::TcpStream::connect(addr).await.map(Stream) })
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener).map(Listener)
    }

    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T> {
        let task = tokio::task::spawn_blocking(work);
        // A panic in the work is the work's own: it goes on here, as if run inline.
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        })
    }
}

impl AsyncStream for Stream {
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
        // tokio's own shutdown is write-only and async; the socket underneath does both.
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
}

impl AsyncListener for Listener {
    type Stream = Stream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, SocketAddr)>> {
        self.0
            .poll_accept(cx)
            .map_ok(|(stream, peer)| (Stream(stream), peer))
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl AsyncTimer for Timer {
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, users_file] = &args[..] else {
        eprintln!("usage: tokio_server <port> <users-file>");
        return ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("tokio_server: {port:?} is not a port");
        return ExitCode::from(2);
    };
    let users = match std::fs::read(users_file).map(|text| Users::parse(&text)) {
        Ok(Ok(users)) => users,
        Ok(Err(error)) => return fail(format!("{users_file}: {error}")),
        Err(error) => return fail(format!("cannot read {users_file}: {error}")),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start tokio: {error}")),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = match Tokio.bind(SocketAddr::from(([0, 0, 0, 0], port))) {
            Ok(listener) => listener,
            Err(error) => return fail(format!("cannot listen on port {port}: {error}")),
        };
        if let Ok(addr) = listener.local_addr() {
            println!("listening on {addr}");
        }
        let (config, driver) = (ServerConfig::default(), DriverConfig::default());
        let forever = std::future::pending::<()>();
        simple_im::driver::serve(Tokio, listener, users, config, driver, forever).await;
        ExitCode::SUCCESS
    })
}

fn fail(message: String) -> ExitCode {
    eprintln!("tokio_server: {message}");
    ExitCode::from(2)
}
