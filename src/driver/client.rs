//! [`AsyncClient`]: a client's sockets on any async [`Runtime`], around the core's
//! [`ClientDriver`]: it connects La, listens for and takes Lb, reads, writes and waits, and
//! carries out each [`IoAction`].

use std::cell::Cell;
use std::future::poll_fn;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use simple_im_core::client::{ClientConfig, ClientInput, Connection};
use simple_im_core::driver::{ClientDriver, ClientFrontend, IoAction};

use super::addrs::{connect_first, ServerAddrs};
use super::{write_all, AsyncListener, AsyncStream, AsyncTimer, Runtime};

/// Room for a few user inputs in a client's loop, so that nothing grows without bound.
pub const CLIENT_EVENT_QUEUE: usize = 64;

/// How much one client socket read may take at once.
pub const CLIENT_READ_CHUNK: usize = 8192;

/// Where a client binds its Lb listener: [`LbPorts::System`] as docs/protocol.md §4 step 3
/// says, or ports in turn, for a load generator.
///
/// The real client lets the system pick a port. With thousands of sessions on one machine that
/// does not scale: every session also holds an ephemeral port for La and the server one for its
/// Lb connect, so the ephemeral range (28,232 ports by default) runs out near 9,000 sessions,
/// and the kernel's search for a free port grows with every port taken (binds then take
/// milliseconds each and setup crawls). Ports below the ephemeral range, taken in turn, are
/// found at once and leave that range to the connects.
#[derive(Debug)]
pub enum LbPorts {
    /// Port 0: the system picks, as the real client does.
    System,
    /// Ports `first..=last`, in turn, skipping those in use.
    Range {
        /// The lowest port.
        first: u16,
        /// The highest port.
        last: u16,
        /// The port to try next.
        next: Cell<u16>,
    },
}

impl LbPorts {
    /// Ports `first..=last`, starting at a place that differs between processes, so that
    /// several im-bench at once rarely try the same ports.
    pub fn range(first: u16, last: u16) -> LbPorts {
        let (first, last) = (first.min(last).max(1), first.max(last));
        let span = u32::from(last - first) + 1;
        let offset = std::process::id() % span;
        LbPorts::Range {
            first,
            last,
            next: Cell::new(first + offset as u16),
        }
    }

    /// Binds a listener on `ip` with `bind`, at the next free port.
    pub fn bind<L>(
        &self,
        ip: IpAddr,
        mut bind: impl FnMut(SocketAddr) -> io::Result<L>,
    ) -> io::Result<L> {
        let LbPorts::Range { first, last, next } = self else {
            return bind(SocketAddr::new(ip, 0));
        };
        let mut error = io::Error::from(ErrorKind::AddrInUse);
        for _ in *first..=*last {
            let port = next.get();
            next.set(if port >= *last { *first } else { port + 1 });
            match bind(SocketAddr::new(ip, port)) {
                Ok(listener) => return Ok(listener),
                // Taken (by anything): the next one will do.
                Err(err) if err.kind() == ErrorKind::AddrInUse => error = err,
                Err(err) => return Err(err),
            }
        }
        Err(error)
    }
}

/// Which of a client's sockets a wait watches (a load generator watches only the one it
/// expects something on). The Lb listener and the session's timer are always watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Wait for La to be readable.
    pub la: bool,
    /// Wait for Lb to be readable (once accepted).
    pub lb: bool,
}

impl Watch {
    /// Both connections, as a terminal client watches them.
    pub const BOTH: Watch = Watch { la: true, lb: true };
    /// La only: an answer is awaited.
    pub const LA: Watch = Watch {
        la: true,
        lb: false,
    };
    /// Lb only: deliveries are awaited.
    pub const LB: Watch = Watch {
        la: false,
        lb: true,
    };
}

/// Why [`AsyncClient::wait`] returned; hand it to [`AsyncClient::on_ready`].
pub enum Ready<S> {
    /// This connection may be readable.
    Readable(Connection),
    /// The Lb listener accepted (or failed).
    Accepted(io::Result<(S, SocketAddr)>),
    /// The session's timer came.
    Timeout,
}

/// A client on an async [`Runtime`]: the driver, its front-end, La, the Lb listener and Lb.
pub struct AsyncClient<R: Runtime, F> {
    runtime: R,
    driver: ClientDriver,
    frontend: F,
    la: R::Stream,
    lb: Option<R::Stream>,
    listener: Option<R::Listener>,
    timer: R::Timer,
    lb_ports: Rc<LbPorts>,
}

impl<R: Runtime, F: ClientFrontend> AsyncClient<R, F> {
    /// Connects La to `server` and starts the session (it asks `frontend` for the user name).
    pub async fn connect(
        runtime: R,
        server: SocketAddr,
        config: ClientConfig,
        frontend: F,
    ) -> io::Result<Self> {
        let server = ServerAddrs::from_addr(server);
        Self::connect_any(runtime, &server, config, frontend, Rc::new(LbPorts::System)).await
    }

    /// Connects La to the first of `server`'s addresses that answers ([`connect_first`]) and
    /// starts the session; its Lb listener will be bound on one of `lb_ports`.
    pub async fn connect_any(
        runtime: R,
        server: &ServerAddrs,
        config: ClientConfig,
        frontend: F,
        lb_ports: Rc<LbPorts>,
    ) -> io::Result<Self> {
        let la = connect_first(&runtime, server).await?;
        // Every line is a request someone waits for: send it at once.
        let _ = la.set_nodelay(true);
        // La's peer is the address Lb must come from.
        let peer = la.peer_addr()?;
        let now = Instant::now();
        let mut client = AsyncClient {
            timer: runtime.timer(None),
            runtime,
            driver: ClientDriver::new(now, config, peer).with_tls(now, server.tls()),
            frontend,
            la,
            lb: None,
            listener: None,
            lb_ports,
        };
        client.carry_out().await;
        Ok(client)
    }

    /// The front-end, with what it has seen.
    pub fn frontend(&self) -> &F {
        &self.frontend
    }

    /// The front-end, to change.
    pub fn frontend_mut(&mut self) -> &mut F {
        &mut self.frontend
    }

    /// The driver, for its state ([`ClientDriver::exit_code`], [`ClientDriver::lb_open`]).
    pub fn driver(&self) -> &ClientDriver {
        &self.driver
    }

    /// Feeds one input from the user (a line, end of input, Ctrl-C) and carries out the rest.
    pub async fn handle_user(&mut self, input: ClientInput<'_>) {
        self.driver.handle_input(Instant::now(), input);
        self.carry_out().await;
    }

    /// Waits until a watched socket may be readable, the listener accepts, or the session's
    /// timer comes. Cancel-safe: it only waits, so it may lose a race with other input.
    pub async fn wait(&mut self, watch: Watch) -> Ready<R::Stream> {
        self.timer.reset(self.driver.poll_timeout());
        let AsyncClient {
            la,
            lb,
            listener,
            timer,
            ..
        } = self;
        poll_fn(|cx| {
            // An error counts as readable: the read that follows reports it to the session.
            if watch.la && la.poll_readable(cx).is_ready() {
                return Poll::Ready(Ready::Readable(Connection::La));
            }
            if let Some(lb) = lb.as_ref().filter(|_| watch.lb) {
                if lb.poll_readable(cx).is_ready() {
                    return Poll::Ready(Ready::Readable(Connection::Lb));
                }
            }
            if let Some(listener) = listener {
                if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                    return Poll::Ready(Ready::Accepted(accepted));
                }
            }
            timer.poll_fired(cx).map(|()| Ready::Timeout)
        })
        .await
    }

    /// Handles what [`AsyncClient::wait`] found: reads a readable socket into `scratch` until
    /// it has nothing more, takes the Lb connection, or fires the timer; then carries out
    /// what the session asks.
    pub async fn on_ready(&mut self, ready: Ready<R::Stream>, scratch: &mut [u8]) {
        match ready {
            Ready::Readable(on) => self.read(on, scratch).await,
            Ready::Accepted(accepted) => {
                match accepted {
                    Ok((stream, peer)) => {
                        log::debug!("Lb offered from {peer}");
                        if self.driver.lb_offered(Instant::now(), peer) {
                            // The listener closes here: the server connects once.
                            self.listener = None;
                            let _ = stream.set_nodelay(true);
                            self.lb = Some(stream);
                        }
                        // Otherwise `stream` is dropped (closed) unread, and the listener
                        // stays for the server's own.
                    }
                    Err(err) => {
                        log::warn!("accepting Lb failed: {err}");
                        self.listener = None;
                        self.driver
                            .handle_input(Instant::now(), ClientInput::LbClosed);
                    }
                }
                self.carry_out().await;
            }
            Ready::Timeout => {
                self.driver.handle_timeout(Instant::now());
                self.carry_out().await;
            }
        }
    }

    /// [`AsyncClient::wait`], then [`AsyncClient::on_ready`].
    pub async fn step(&mut self, watch: Watch, scratch: &mut [u8]) {
        let ready = self.wait(watch).await;
        self.on_ready(ready, scratch).await;
    }

    async fn read(&mut self, on: Connection, scratch: &mut [u8]) {
        loop {
            let Some(stream) = self.stream(on) else {
                return;
            };
            let (input, more) = match stream.try_read(scratch) {
                Ok(0) => (on.closed(), false),
                Ok(n) => (on.data(&scratch[..n]), n == scratch.len()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // A spurious wake-up: the reactor reports the socket again when it is ready.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    log::debug!("reading {on} failed: {err}");
                    (on.closed(), false)
                }
            };
            let closed = input == on.closed();
            self.driver.handle_input(Instant::now(), input);
            if closed && on == Connection::Lb {
                // Lb's end stays readable; it is not watched again. (La's end ends the client.)
                self.lb = None;
            }
            self.carry_out().await;
            if !more || self.driver.exit_code().is_some() {
                return;
            }
        }
    }

    /// The socket of `on`, if it is open.
    fn stream(&self, on: Connection) -> Option<&R::Stream> {
        match on {
            Connection::La => Some(&self.la),
            Connection::Lb => self.lb.as_ref(),
        }
    }

    /// Does what the driver asks until it asks nothing more.
    async fn carry_out(&mut self) {
        while let Some(action) = self.driver.poll_io(&mut self.frontend) {
            match action {
                IoAction::Send(on, bytes) => {
                    let written = match self.stream(on) {
                        Some(stream) => write_all(stream, &bytes).await,
                        None => Err(io::ErrorKind::NotConnected.into()),
                    };
                    if let Err(err) = written {
                        self.driver.write_failed(Instant::now(), on, &err);
                    }
                }
                IoAction::ListenLb => {
                    let bound = self.listen_lb();
                    self.driver.lb_listening(Instant::now(), bound);
                }
                IoAction::Exit(_) => {
                    let _ = self.la.shutdown(Shutdown::Both);
                    if let Some(lb) = self.lb.take() {
                        let _ = lb.shutdown(Shutdown::Both);
                    }
                    self.listener = None;
                }
            }
        }
    }

    /// Binds the Lb listener on La's local address, so the server reaches the interface it sees.
    fn listen_lb(&mut self) -> io::Result<u16> {
        let ip = self.la.local_addr()?.ip();
        let runtime = &self.runtime;
        let listener = self.lb_ports.bind(ip, |addr| runtime.bind(addr))?;
        let port = listener.local_addr()?.port();
        self.listener = Some(listener);
        Ok(port)
    }
}
