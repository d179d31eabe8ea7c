//! `im-server` on tokio, behind the same [`Runtime`] trait: the connection table, caps,
//! deadlines, linger and every protocol rule are the driver's; this file says how tokio spawns,
//! times and polls sockets. `cargo run --example tokio_server -- 4000 examples/users.txt`.

use std::net::{Shutdown, SocketAddr};
use std::task::{Context, Poll};
use std::{future::Future, io, pin::Pin, process::ExitCode, time::Instant};

use simple_im::driver::{
    set_keepalive, AsyncListener, AsyncStream, AsyncTimer, LocalBoxFuture, Runtime,
};
use simple_im_core::driver::Keepalive;
use simple_im_core::{driver::DriverConfig, server::ServerConfig, users::Users};

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
        // A `Sleep` needs some deadline: `None` is a far one, never polled (see `poll_fired`).
        let sleep = tokio::time::sleep(std::time::Duration::from_secs(86_400));
        let mut timer = Timer(Box::pin(sleep), None);
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

impl AsyncListener for Listener {
    type Stream = Stream;
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Stream, SocketAddr)>> {
        let accepted = self.0.poll_accept(cx);
        accepted.map_ok(|(stream, peer)| (Stream(stream), peer))
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
    let Err(message) = run(std::env::args().skip(1).collect()) else {
        return ExitCode::SUCCESS;
    };
    eprintln!("tokio_server: {message}");
    ExitCode::from(2)
}

/// `<port> <users-file>`: serves forever with the driver's defaults.
fn run(args: Vec<String>) -> Result<(), String> {
    let [port, users_file] = &args[..] else {
        return Err("usage: tokio_server <port> <users-file>".to_owned());
    };
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let text = std::fs::read(users_file).map_err(|e| format!("{users_file}: {e}"))?;
    let users = Users::parse(&text).map_err(|e| format!("{users_file}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = runtime.map_err(|e| format!("tokio: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let address = SocketAddr::from(([0, 0, 0, 0], port));
        let listener = Tokio.bind(address).map_err(|e| format!("{address}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {local}");
        let (config, driver) = (ServerConfig::default(), DriverConfig::default());
        // No signals here: a channel nobody sends on serves forever.
        let (_, forever) = async_channel::bounded(1);
        simple_im::driver::serve(Tokio, listener, users, config, driver, forever).await;
        Ok(())
    })
}
