//! The drivers' async halves: the server loop and the client's sockets, written once for
//! every async runtime, above the [`Runtime`] trait.
//!
//! - [`serve`] is the async server loop around the core's
//!   [`ServerDriver`](simple_im_core::driver::ServerDriver), written once against [`Runtime`]:
//!   a runtime supplies spawning, timers and non-blocking sockets, nothing else.
//!   `runtime::smol` and `runtime::tokio` are two such runtimes.
//! - [`client`]: [`AsyncClient`], the sockets of the core's
//!   [`ClientDriver`](simple_im_core::driver::ClientDriver) on any [`Runtime`].
//! - [`ServerAddrs`]: the server as the user named it, and [`connect_first`] over its addresses.
//! - `runtime::threads` drives both sans-IO drivers itself, on blocking sockets;
//!   `docs/runtimes.md` gives the contract every runtime follows.
//!
//! The seam is modelled on quinn's `Runtime` / `AsyncTimer` / `AsyncUdpSocket`: small traits
//! that expose readiness and non-blocking calls, so the loop above them decides everything.

mod addrs;
pub mod client;
mod serve;

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use simple_im_core::driver::Keepalive;

pub use addrs::{connect_first, ServerAddrs};
pub use client::AsyncClient;
pub use serve::{serve, serve_cluster, serve_node, ClusterLink};

/// What the process asks of a running server, in the order asked (im-server reads them from
/// its signals: [`crate::signals::server_commands`]). A server whose commands end (every
/// sender dropped) serves on.
pub enum ServerCommand {
    /// The settings and the users file were read again (SIGHUP): these from now on
    /// ([`ServerDriver::reload`](simple_im_core::driver::ServerDriver::reload)).
    Reload(Box<simple_im_core::driver::Reload>),
    /// Stop gracefully (SIGTERM, SIGINT): accept no one, answer the requests in flight (one
    /// ack timeout at most), close every connection, return.
    Stop,
    /// Stop at once (a second SIGTERM): every connection is dropped as it is.
    StopNow,
}

/// A future that runs on the driver's one thread (it shares the driver through `Rc`).
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What an async runtime supplies to the drivers: tasks, timers, sockets, a blocking pool.
///
/// Everything runs on one thread: tasks are spawned locally and never cross threads, which is
/// what lets the drivers share their state without locks.
pub trait Runtime: Clone + 'static {
    /// A connected TCP socket.
    type Stream: AsyncStream;
    /// A listening TCP socket.
    type Listener: AsyncListener<Stream = Self::Stream>;
    /// A resettable timer.
    type Timer: AsyncTimer;

    /// Runs `task` on this thread, detached; it ends with the runtime if not before.
    fn spawn(&self, task: LocalBoxFuture<()>);
    /// A timer that fires at `at` (`None`: never, until reset).
    fn timer(&self, at: Option<Instant>) -> Self::Timer;
    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> LocalBoxFuture<io::Result<Self::Stream>>;
    /// Listens on `addr`.
    fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener>;
    /// Runs CPU-heavy or blocking `work` (an argon2 check) off this thread.
    fn unblock<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> LocalBoxFuture<T>;
    /// The time to hand the driver with the events being handled. A runtime whose loop reads
    /// the clock once per turn may answer with that reading: it is as old as the turn at most.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A non-blocking TCP socket with readiness, as an event loop sees it.
///
/// `poll_readable` / `poll_writable` register the task and say whether the socket may be ready;
/// `try_read` / `try_write` never wait and answer `WouldBlock` when it was not after all.
pub trait AsyncStream: 'static {
    /// Ready once the socket may have something to read (or an error or end of file).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready once the socket may take bytes.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is there without waiting; `Ok(0)` is end of file.
    fn try_read(&self, buffer: &mut [u8]) -> io::Result<usize>;
    /// Writes what the socket takes without waiting.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
    /// Shuts one or both directions.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Turns Nagle's algorithm off: every line is a message someone waits for.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;
    /// Sets TCP keepalive (`None`: off); [`set_keepalive`] does it for anything with a socket.
    fn set_keepalive(&self, keepalive: Option<Keepalive>) -> io::Result<()>;
    /// Says that the loop reads this socket whenever it has bytes, for as long as it is open
    /// (Lb, whose acknowledgements are never held back), so a runtime may keep one read armed
    /// for it instead of one per wait. The default does nothing.
    fn read_always(&self) {}
}

/// A listening TCP socket.
pub trait AsyncListener: 'static {
    /// The sockets it accepts.
    type Stream: AsyncStream;
    /// Ready with the next connection and its peer's address.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A timer set to one deadline at a time.
pub trait AsyncTimer: Unpin + 'static {
    /// Moves the deadline (`None`: never).
    fn reset(&mut self, at: Option<Instant>);
    /// Ready once the deadline has come; pending (with the task registered) before it.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Sets `keepalive` on `socket`, or turns keepalive off for `None`: what every runtime's
/// [`AsyncStream::set_keepalive`] does. On: `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`, and on Linux `TCP_USER_TIMEOUT` (the time a vanished peer is given up).
pub fn set_keepalive(socket: socket2::SockRef<'_>, keepalive: Option<Keepalive>) -> io::Result<()> {
    let Some(keepalive) = keepalive else {
        return socket.set_keepalive(false);
    };
    let options = socket2::TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.retries);
    socket.set_tcp_keepalive(&options)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(keepalive.gives_up_after()))?;
    Ok(())
}

/// Waits for the next connection on `listener`.
pub async fn accept<L: AsyncListener>(listener: &L) -> io::Result<(L::Stream, SocketAddr)> {
    std::future::poll_fn(|cx| listener.poll_accept(cx)).await
}

/// Waits until `timer` fires.
pub async fn sleep<T: AsyncTimer>(timer: &mut T) {
    std::future::poll_fn(|cx| timer.poll_fired(cx)).await
}

/// Waits until `stream` may be readable.
pub async fn readable<S: AsyncStream>(stream: &S) -> io::Result<()> {
    std::future::poll_fn(|cx| stream.poll_readable(cx)).await
}

/// Waits until `stream` may be writable.
pub async fn writable<S: AsyncStream>(stream: &S) -> io::Result<()> {
    std::future::poll_fn(|cx| stream.poll_writable(cx)).await
}

/// Reads once, waiting for the socket as needed; `Ok(0)` is end of file.
pub async fn read<S: AsyncStream>(stream: &S, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        readable(stream).await?;
        match stream.try_read(buffer) {
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            result => return result,
        }
    }
}

/// Writes all of `bytes`, waiting for the socket as needed.
pub async fn write_all<S: AsyncStream>(stream: &S, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => writable(stream).await?,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
