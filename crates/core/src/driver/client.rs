//! The client's driving, written once: [`ClientDriver`] (sans-IO, for any runtime, blocking or
//! async) and [`AsyncClient`] (its sockets, generic over [`Runtime`]), with [`run`], the loop
//! of a terminal client.
//!
//! The session decides the protocol; the driver adds what every runtime needs around it:
//! front-end events (shown through [`ClientFrontend`]) are set apart from socket actions
//! ([`IoAction`]), Lb is taken only from the server's address ([`ClientDriver::lb_offered`]),
//! a write to Lb before Lb is up is a closed Lb, a failed write is a closed connection, and
//! nothing is done after the exit.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::task::Poll;
use std::time::Instant;

use futures_lite::future;

use super::{write_all, AsyncListener, AsyncStream, AsyncTimer, Runtime};
use crate::client::{
    ClientConfig, ClientError, ClientEvent, ClientInput, ClientOutput, ClientSession,
    ClientWarning, Connection,
};
use crate::terminal::UserInput;
use crate::tls::{looks_like_tls, ClientTls, TlsLayer, HANDSHAKE_TIMEOUT};

/// Room for a few user inputs in a client's loop, so that nothing grows without bound.
pub const CLIENT_EVENT_QUEUE: usize = 64;

/// How much one client socket read may take at once.
pub const CLIENT_READ_CHUNK: usize = 8192;

/// Where a client's events go and its lines of input come from: a terminal, a load generator.
pub trait ClientFrontend {
    /// Shows (or counts) what happened.
    fn show(&mut self, event: ClientEvent);
    /// The session waits for the next line of input (a password if `secret`); it comes back
    /// as a [`ClientInput::Line`].
    fn read_line(&mut self, secret: bool);
    /// Binds the Lb listener on `ip` through `bind`; by default on a port the system picks,
    /// as docs/protocol.md §4 step 3 says. (A load generator with thousands of listeners picks
    /// its own.)
    fn bind_lb<L>(
        &mut self,
        ip: IpAddr,
        mut bind: impl FnMut(SocketAddr) -> io::Result<L>,
    ) -> io::Result<L> {
        bind(SocketAddr::new(ip, 0))
    }
}

/// The server as the user named it (an IP address or a host name, and a port), with the
/// addresses it stands for, tried in turn until one connects (docs/protocol.md §4 step 1), and
/// how to speak to it (plain TCP, or TLS).
#[derive(Clone, Debug)]
pub struct ServerAddrs {
    host: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    tls: Option<ClientTls>,
}

impl ServerAddrs {
    /// Resolves `host`, an IP address (IPv4 or IPv6) or a host name, with `port`. A name that
    /// stands for no address is an error too.
    pub fn resolve(host: &str, port: u16) -> io::Result<ServerAddrs> {
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name has no address",
            ));
        }
        Ok(ServerAddrs {
            host: host.to_owned(),
            port,
            addrs,
            tls: None,
        })
    }

    /// Speaks TLS to the server on both connections.
    pub fn with_tls(mut self, tls: ClientTls) -> ServerAddrs {
        self.tls = Some(tls);
        self
    }

    /// The TLS settings, if the client speaks TLS.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// The host as the user named it: the name the server's certificate must carry by default.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The one address `addr`, as if it were named by its IP.
    pub fn from_addr(addr: SocketAddr) -> ServerAddrs {
        ServerAddrs {
            host: addr.ip().to_string(),
            port: addr.port(),
            addrs: vec![addr],
            tls: None,
        }
    }

    /// The addresses, in the order to try them (as the resolver gave them).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether the server was named by its IP address (so there is nothing to resolve).
    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

impl fmt::Display for ServerAddrs {
    /// `127.0.0.1:4000`, `[::1]:4000`, or `localhost:4000 ([::1]:4000, 127.0.0.1:4000)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ip() && self.addrs.len() == 1 {
            return write!(f, "{}", self.addrs[0]);
        }
        write!(f, "{}:{}", self.host, self.port)?;
        let tried: Vec<String> = self.addrs.iter().map(SocketAddr::to_string).collect();
        write!(f, " ({})", tried.join(", "))
    }
}

/// Connects to each of `server`'s addresses in turn and returns the first connection, or the
/// last address's error if none answers.
pub async fn connect_first<R: Runtime>(runtime: &R, server: &ServerAddrs) -> io::Result<R::Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
    for &addr in server.addrs() {
        match runtime.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => {
                log::debug!("cannot connect to {addr}: {err}");
                last = err;
            }
        }
    }
    Err(last)
}

/// What the driver asks of the runtime's sockets, drained with [`ClientDriver::poll_io`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoAction {
    /// Write these bytes; report a failure with [`ClientDriver::write_failed`].
    Send(Connection, Vec<u8>),
    /// Bind the Lb listener on La's local address with [`ClientFrontend::bind_lb`], report it
    /// with [`ClientDriver::lb_listening`], then accept connections and offer each to
    /// [`ClientDriver::lb_offered`] until one is taken (then the listener closes).
    ListenLb,
    /// Close both connections: the client is done, with this exit code. Nothing follows it.
    Exit(i32),
}

/// A [`ClientSession`] and what its runtime must know about Lb and the exit.
#[derive(Debug)]
pub struct ClientDriver {
    session: ClientSession,
    /// La's peer address, canonical (an IPv4-mapped IPv6 address as IPv4): the only address
    /// Lb is taken from.
    server_ip: IpAddr,
    /// The server's Lb connection was accepted (and is being read).
    lb_open: bool,
    /// Events of the driver's own, shown before the session's next output.
    notices: VecDeque<ClientEvent>,
    /// Bytes of the driver's own to write (TLS handshakes), before the session's next output.
    sends: VecDeque<(Connection, Vec<u8>)>,
    /// TLS on both connections, with `--tls`.
    tls: Option<ClientTlsSockets>,
    /// Something bytes from the server showed that ends the client (a TLS failure).
    failed: bool,
    /// No byte has come on La yet (to tell a TLS server from a plain one by its first bytes).
    la_silent: bool,
    exit_code: Option<i32>,
}

/// The client's TLS sessions: the client is the TLS client on La and on the Lb the server
/// opens, and Lb must show the certificate La showed.
#[derive(Debug)]
struct ClientTlsSockets {
    config: ClientTls,
    la: Box<TlsLayer>,
    lb: Option<Box<TlsLayer>>,
    /// Until La's handshake is done: when to give up on a server that does not answer it.
    handshake_by: Option<Instant>,
}

impl ClientTlsSockets {
    fn layer(&mut self, on: Connection) -> Option<&mut TlsLayer> {
        match on {
            Connection::La => Some(&mut self.la),
            Connection::Lb => self.lb.as_deref_mut(),
        }
    }
}

impl ClientDriver {
    /// A driver for a client whose La is connected to `server` (La's peer address).
    pub fn new(now: Instant, config: ClientConfig, server: SocketAddr) -> Self {
        ClientDriver {
            session: ClientSession::new(now, config),
            server_ip: server.ip().to_canonical(),
            lb_open: false,
            notices: VecDeque::new(),
            sends: VecDeque::new(),
            tls: None,
            failed: false,
            la_silent: true,
            exit_code: None,
        }
    }

    /// Speaks TLS with `tls` on both connections (`None`: plain TCP, as the protocol has it).
    /// La's handshake starts now.
    pub fn with_tls(mut self, now: Instant, tls: Option<&ClientTls>) -> Self {
        let Some(config) = tls else {
            return self;
        };
        match config.session() {
            Ok(la) => {
                self.tls = Some(ClientTlsSockets {
                    config: config.clone(),
                    la: Box::new(la),
                    lb: None,
                    handshake_by: Some(now + HANDSHAKE_TIMEOUT),
                });
                self.queue_ciphertext(Connection::La);
            }
            Err(err) => self.fail(Connection::La, err.to_string()),
        }
        self
    }

    /// Feeds one input to the session; bytes from the server and the ends of its connections
    /// pass through TLS first, when the client speaks it.
    pub fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        let (on, bytes) = match input {
            ClientInput::LaData(bytes) => (Connection::La, bytes),
            ClientInput::LbData(bytes) => (Connection::Lb, bytes),
            input => return self.session.handle_input(now, input),
        };
        if self.failed {
            return;
        }
        let first = on == Connection::La && std::mem::take(&mut self.la_silent);
        let Some(tls) = &mut self.tls else {
            if first && looks_like_tls(bytes) {
                return self.fail_with(ClientError::ServerSpeaksTls);
            }
            return self.session.handle_input(now, on.data(bytes));
        };
        let Some(layer) = tls.layer(on) else {
            return;
        };
        let mut plaintext = Vec::new();
        let was_handshaking = layer.is_handshaking();
        let received = layer.read(bytes, &mut plaintext);
        // Checked once, as the handshake ends, and before any of its plaintext is shown.
        let handshaken = was_handshaking && !layer.is_handshaking();
        self.queue_ciphertext(on);
        let received = match received {
            Ok(received) => received,
            Err(err) => return self.fail(on, err.to_string()),
        };
        if handshaken && !self.handshake_checked(on) {
            return;
        }
        if !plaintext.is_empty() {
            self.session.handle_input(now, on.data(&plaintext));
        }
        if received.closed {
            self.session.handle_input(now, on.closed());
        }
    }

    /// Once a handshake is done: La's stops its timer; Lb's must have shown La's certificate
    /// (the same server, not just someone else the CA vouches for). `false`: the client failed.
    fn handshake_checked(&mut self, on: Connection) -> bool {
        let Some(tls) = &mut self.tls else {
            return true;
        };
        match on {
            Connection::La => tls.handshake_by = None,
            Connection::Lb => {
                let same = match (&tls.lb, tls.la.peer_certificate()) {
                    (Some(lb), Some(la)) => lb.peer_certificate() == Some(la),
                    _ => false,
                };
                if !same {
                    let reason = "Lb showed another certificate than La".to_owned();
                    self.fail(Connection::Lb, reason);
                    return false;
                }
            }
        }
        true
    }

    /// Lets the session's due timers fire, and gives up on a TLS server that never answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        let handshake_by = self.tls.as_ref().and_then(|tls| tls.handshake_by);
        if handshake_by.is_some_and(|by| now >= by) {
            let reason = format!(
                "no answer to the TLS handshake within {}s (is the server using TLS?)",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            return self.fail(Connection::La, reason);
        }
        self.session.handle_timeout(now);
    }

    /// When [`ClientDriver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake_by = self.tls.as_ref().and_then(|tls| tls.handshake_by);
        self.session
            .poll_timeout()
            .into_iter()
            .chain(handshake_by)
            .min()
    }

    /// Queues what `on`'s TLS session has to write.
    fn queue_ciphertext(&mut self, on: Connection) {
        let layer = self.tls.as_mut().and_then(|tls| tls.layer(on));
        if let Some(ciphertext) = layer.and_then(TlsLayer::take_ciphertext) {
            self.sends.push_back((on, ciphertext));
        }
    }

    fn fail(&mut self, on: Connection, reason: String) {
        self.fail_with(ClientError::Tls { on, reason });
    }

    /// Shows `error`, and ends the client before anything else the session says.
    fn fail_with(&mut self, error: ClientError) {
        if !std::mem::replace(&mut self.failed, true) {
            self.notices.push_back(ClientEvent::Error(error));
        }
    }

    /// The Lb listener asked for by [`IoAction::ListenLb`] is bound (to this port) or not.
    pub fn lb_listening(&mut self, now: Instant, bound: io::Result<u16>) {
        let input = match bound {
            Ok(port) => ClientInput::LbListening(port),
            Err(err) => {
                log::warn!("cannot listen for Lb: {err}");
                ClientInput::LbListenFailed
            }
        };
        self.session.handle_input(now, input);
    }

    /// The Lb listener accepted a connection from `peer`; returns whether it is Lb.
    ///
    /// `true`: the runtime keeps it, reads it from now on, and closes the listener. `false`:
    /// the runtime closes it at once, unread, and goes on accepting; the session still waits
    /// for the server's (bounded, as ever, by the server's `201` or `202` on La).
    pub fn lb_offered(&mut self, now: Instant, peer: SocketAddr) -> bool {
        // docs/protocol.md §4 step 3. Whoever opens Lb can show the user anything as a message
        // "from" anyone, and have it acknowledged: only the server, which connects from La's
        // peer address, may. (Another user on the same host still can; a port guessed from
        // afar cannot.)
        if self.lb_open || self.exit_code.is_some() || peer.ip().to_canonical() != self.server_ip {
            self.notices
                .push_back(ClientEvent::Warning(ClientWarning::LbNotFromServer {
                    peer,
                    server: self.server_ip,
                }));
            return false;
        }
        self.lb_open = true;
        if let Some(tls) = &mut self.tls {
            match tls.config.session() {
                Ok(lb) => tls.lb = Some(Box::new(lb)),
                Err(err) => self.fail(Connection::Lb, err.to_string()),
            }
            self.queue_ciphertext(Connection::Lb);
        }
        self.session.handle_input(now, ClientInput::LbAccepted);
        true
    }

    /// A write asked for by [`IoAction::Send`] failed: to the session, the connection is gone.
    pub fn write_failed(&mut self, now: Instant, on: Connection, error: &io::Error) {
        log::debug!("writing to {on} failed: {error}");
        self.session.handle_input(now, on.closed());
    }

    /// Whether the server's Lb connection is accepted.
    pub fn lb_open(&self) -> bool {
        self.lb_open
    }

    /// The exit code, once [`IoAction::Exit`] has been handed out.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// Hands events and line requests to `frontend` until a socket action is due, and returns
    /// it; `None` until new input or the next timeout.
    pub fn poll_io(&mut self, frontend: &mut impl ClientFrontend) -> Option<IoAction> {
        while self.exit_code.is_none() {
            if let Some(notice) = self.notices.pop_front() {
                frontend.show(notice);
                continue;
            }
            if self.failed {
                self.exit_code = Some(1);
                return Some(IoAction::Exit(1));
            }
            if let Some((on, bytes)) = self.sends.pop_front() {
                return Some(IoAction::Send(on, bytes));
            }
            match self.session.poll_output()? {
                ClientOutput::Event(event) => frontend.show(event),
                ClientOutput::ReadLine { secret } => frontend.read_line(secret),
                ClientOutput::SendLa(bytes) => {
                    if let Some(action) = self.send(Connection::La, bytes) {
                        return Some(action);
                    }
                }
                ClientOutput::SendLb(bytes) if self.lb_open => {
                    if let Some(action) = self.send(Connection::Lb, bytes) {
                        return Some(action);
                    }
                }
                // Unreachable (a receipt answers Lb bytes, which come only once Lb is open);
                // if it came, Lb is as good as closed.
                ClientOutput::SendLb(_) => self
                    .session
                    .handle_input(Instant::now(), ClientInput::LbClosed),
                ClientOutput::ListenLb => return Some(IoAction::ListenLb),
                ClientOutput::Exit(code) => {
                    self.exit_code = Some(code);
                    return Some(IoAction::Exit(code));
                }
            }
        }
        None
    }
}

impl ClientDriver {
    /// The bytes to write for `plaintext` on `on`: themselves, or their TLS records (none yet
    /// while the handshake goes on; they come with its end).
    fn send(&mut self, on: Connection, plaintext: Vec<u8>) -> Option<IoAction> {
        let Some(layer) = self.tls.as_mut().and_then(|tls| tls.layer(on)) else {
            return Some(IoAction::Send(on, plaintext));
        };
        layer.write(&plaintext);
        self.queue_ciphertext(on);
        let (on, bytes) = self.sends.pop_front()?;
        Some(IoAction::Send(on, bytes))
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
}

impl<R: Runtime, F: ClientFrontend> AsyncClient<R, F> {
    /// Connects La to `server` and starts the session (it asks `frontend` for the user name).
    pub async fn connect(
        runtime: R,
        server: SocketAddr,
        config: ClientConfig,
        frontend: F,
    ) -> io::Result<Self> {
        Self::connect_any(runtime, &ServerAddrs::from_addr(server), config, frontend).await
    }

    /// Connects La to the first of `server`'s addresses that answers ([`connect_first`]) and
    /// starts the session.
    pub async fn connect_any(
        runtime: R,
        server: &ServerAddrs,
        config: ClientConfig,
        frontend: F,
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
        let listener = self.frontend.bind_lb(ip, |addr| runtime.bind(addr))?;
        let port = listener.local_addr()?.port();
        self.listener = Some(listener);
        Ok(port)
    }
}

/// Runs a client against `server` until it exits, with user input from `input` and events
/// shown by `frontend`; returns the exit code (1 if La cannot be connected).
pub async fn run<R: Runtime, F: ClientFrontend>(
    runtime: R,
    server: &ServerAddrs,
    config: ClientConfig,
    frontend: F,
    input: async_channel::Receiver<UserInput>,
) -> i32 {
    let mut client = match AsyncClient::connect_any(runtime, server, config, frontend).await {
        Ok(client) => client,
        Err(err) => return crate::terminal::cannot_connect(server, &err),
    };
    let mut scratch = vec![0; CLIENT_READ_CHUNK];
    enum Wake<S> {
        User(UserInput),
        Socket(Ready<S>),
    }
    loop {
        if let Some(code) = client.driver().exit_code() {
            return code;
        }
        let user = async {
            match input.recv().await {
                Ok(input) => Wake::User(input),
                // The terminal's threads hold senders for good; if they were gone, nothing
                // more would come from the user, and the sockets still decide.
                Err(_) => future::pending().await,
            }
        };
        let socket = async { Wake::Socket(client.wait(Watch::BOTH).await) };
        match future::or(user, socket).await {
            Wake::User(input) => client.handle_user(input.as_client_input()).await,
            Wake::Socket(ready) => client.on_ready(ready, &mut scratch).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::smol::Smol;

    /// A port of 127.0.0.1 that nobody listens on (it was free a moment ago).
    fn refusing_addr() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[test]
    fn connect_first_tries_each_address_in_turn() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = listener.local_addr().unwrap();
        let server = ServerAddrs {
            host: "example".to_owned(),
            port: live.port(),
            addrs: vec![refusing_addr(), live],
            tls: None,
        };
        let peer = Smol::block_on(|smol| {
            Box::pin(async move {
                let stream = connect_first(&smol, &server).await.unwrap();
                stream.peer_addr().unwrap()
            })
        });
        assert_eq!(peer, live);
    }

    #[test]
    fn connect_first_gives_the_last_error_when_none_answers() {
        let server = ServerAddrs {
            host: "example".to_owned(),
            port: 1,
            addrs: vec![refusing_addr(), refusing_addr()],
            tls: None,
        };
        let error = Smol::block_on(|smol| {
            Box::pin(async move { connect_first(&smol, &server).await.err() })
        });
        assert_eq!(
            error.map(|error| error.kind()),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn a_server_named_by_ip_shows_as_its_address_and_a_name_shows_what_was_tried() {
        let by_ip = ServerAddrs::resolve("::1", 4000).unwrap();
        assert_eq!(by_ip.to_string(), "[::1]:4000");
        let by_name = ServerAddrs::resolve("localhost", 4000).unwrap();
        assert!(
            by_name.to_string().starts_with("localhost:4000 ("),
            "{by_name}"
        );
        assert!(ServerAddrs::resolve("no-such-host.invalid", 4000).is_err());
    }
}
