//! [`SimUser`]: one simulated user, a [`ClientSession`] driven over real sockets.
//!
//! The session makes every protocol decision (what `/login` looks like, answering `302` on Lb,
//! what ends a session); this adapter carries bytes and answers the session's `ReadLine`
//! requests with the scenario's lines. The session's `Print` outputs are how the scenario sees
//! answers: a line printed while La bytes were fed is the server's answer, one printed while Lb
//! bytes were fed is a delivery.
//!
//! Many users share one thread, so the adapter is lean: sockets are read when the reactor says
//! they are readable, into one scratch buffer per thread, and only the socket the scenario
//! expects something on is watched (a sender waits on La, a recipient on Lb). Every wait has a
//! deadline.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use simple_im::client::{ClientConfig, ClientInput, ClientOutput, ClientSession};
use simple_im::protocol::{AUTH_OK, LB_OK};
use smol::Async;

use crate::watchdog;

/// How much one socket read takes; lines in these scenarios are far shorter.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer every user of this thread shares: the bytes are handed to the session
    /// before the next read, so one buffer per thread is enough, not two per user.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Why a simulated user could not go on.
#[derive(Debug)]
pub enum UserError {
    /// La could not be connected.
    Connect(io::Error),
    /// The server answered the login with something other than `101` then `201`.
    LoginRefused(String),
    /// Nothing came before the deadline.
    Timeout(&'static str),
    /// The session ended (the server closed a connection, or sent something the client
    /// cannot accept); the session's own error message, if it gave one.
    Ended(String),
}

impl UserError {
    /// A short name for the report's failure counts.
    pub fn kind(&self) -> FailureKind {
        match self {
            UserError::Connect(_) | UserError::LoginRefused(_) => FailureKind::Login,
            UserError::Timeout(_) => FailureKind::Timeout,
            UserError::Ended(_) => FailureKind::SessionLost,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Connect(err) => write!(f, "cannot connect: {err}"),
            UserError::LoginRefused(line) => write!(f, "login refused: {line}"),
            UserError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            UserError::Ended(why) => write!(f, "session ended: {why}"),
        }
    }
}

/// The kinds of failure the report counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A session could not be opened (connect, `102`, `202`, …).
    Login,
    /// The server answered `304`.
    DeliveryFailed,
    /// The server answered something other than `303`/`304` to `/to` or `/toall`.
    UnexpectedAnswer,
    /// No answer came in time.
    Timeout,
    /// The server ended a session that was in use.
    SessionLost,
    /// `/exit` was not answered `310`.
    Exit,
}

/// Which connection a session output was caused by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The scenario's own input (a line, end of input).
    Local,
    La,
    Lb,
}

/// One simulated user with an open session.
pub struct SimUser {
    session: ClientSession,
    la: Arc<Async<TcpStream>>,
    lb: Option<Arc<Async<TcpStream>>>,
    listener: Option<async_net::TcpListener>,
    /// Where to listen for Lb.
    lb_ports: Rc<LbPorts>,
    /// Lines the server answered on La since the last request, oldest first.
    answers: Vec<Vec<u8>>,
    /// The session asked for the next command: the previous one is answered.
    wants_line: bool,
    /// Deliveries printed (and acknowledged by the session) on Lb.
    received: u64,
    /// Set when the session asked to exit.
    exit_code: Option<i32>,
    /// The session's last error message.
    last_error: Option<String>,
}

impl SimUser {
    /// Connects La to `server`, logs in as `user`, and opens Lb; done when the session asks for
    /// its first command. Everything must happen before `deadline`.
    pub async fn login(
        server: SocketAddr,
        user: &[u8],
        password: &[u8],
        lb_ports: Rc<LbPorts>,
        deadline: Instant,
    ) -> Result<SimUser, UserError> {
        let connect = async_net::TcpStream::connect(server);
        let la = match with_deadline(connect, deadline).await {
            Some(Ok(stream)) => stream,
            Some(Err(err)) => return Err(UserError::Connect(err)),
            None => return Err(UserError::Timeout("the La connection")),
        };
        // Requests are one small line each: send them at once rather than wait to batch.
        let _ = la.set_nodelay(true);
        let config = ClientConfig {
            // No echo of each command: the scenario knows what it sent.
            interactive: true,
            ..ClientConfig::default()
        };
        let mut sim = SimUser {
            session: ClientSession::new(Instant::now(), config),
            la: la.into(),
            lb: None,
            listener: None,
            lb_ports,
            answers: Vec::new(),
            wants_line: false,
            received: 0,
            exit_code: None,
            last_error: None,
        };
        // The session asks for the user name, then the password, then sends `/login`.
        for word in [user, password] {
            sim.pump(Source::Local, deadline).await;
            if !std::mem::take(&mut sim.wants_line) {
                return Err(sim.ended());
            }
            sim.session
                .handle_input(Instant::now(), ClientInput::Line(word));
        }
        sim.pump(Source::Local, deadline).await;
        // `101`, the Lb listener, `/port`, the server's connect, `201`: done once the session
        // asks for a command and Lb is there to be read. After `102` the session asks for the
        // user name again, and after `202` it exits: either way the login is over.
        loop {
            if sim.wants_line || sim.exit_code.is_some() {
                let answered = matches!(
                    sim.answers.as_slice(),
                    [auth, lb] if auth == AUTH_OK && lb == LB_OK
                );
                if !answered || sim.exit_code.is_some() {
                    return Err(match sim.answers.iter().find(|line| *line != AUTH_OK) {
                        Some(line) => {
                            UserError::LoginRefused(String::from_utf8_lossy(line).into_owned())
                        }
                        None => sim.ended(),
                    });
                }
                if sim.lb.is_some() {
                    sim.answers.clear();
                    return Ok(sim);
                }
            }
            sim.wait_login_step(deadline).await?;
        }
    }

    /// Sends one command line and returns the server's answer line on La.
    pub async fn request(&mut self, line: &[u8], deadline: Instant) -> Result<Vec<u8>, UserError> {
        self.check_alive()?;
        if !std::mem::take(&mut self.wants_line) {
            return Err(UserError::Ended(
                "the previous command was never answered".into(),
            ));
        }
        self.answers.clear();
        self.session
            .handle_input(Instant::now(), ClientInput::Line(line));
        self.pump(Source::Local, deadline).await;
        loop {
            self.check_alive()?;
            if self.wants_line {
                // The first line is the answer (the session reads the next command after it).
                if !self.answers.is_empty() {
                    return Ok(self.answers.swap_remove(0));
                }
            }
            let la = self.la.clone();
            match with_deadline(la.readable(), deadline).await {
                Some(_) => self.read(Source::La, deadline).await,
                None => return Err(UserError::Timeout("the answer on La")),
            }
        }
    }

    /// Answers deliveries on Lb until `stop` completes; returns an error if the session ends.
    pub async fn serve_deliveries(
        &mut self,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
        write_timeout: std::time::Duration,
    ) -> Result<(), UserError> {
        let Some(lb) = self.lb.clone() else {
            return Err(UserError::Ended("no Lb connection".into()));
        };
        loop {
            self.check_alive()?;
            // An error from the reactor is read too: the read then reports it to the session.
            let stopped = future::or(
                async {
                    let _ = lb.readable().await;
                    false
                },
                async {
                    stop.as_mut().await;
                    true
                },
            )
            .await;
            if stopped {
                return Ok(());
            }
            self.read(Source::Lb, Instant::now() + write_timeout).await;
        }
    }

    /// Sends `/exit` (as the client does at end of input) and waits for `310`.
    pub async fn exit(mut self, deadline: Instant) -> Result<(), UserError> {
        self.session
            .handle_input(Instant::now(), ClientInput::StdinClosed);
        self.pump(Source::Local, deadline).await;
        // The server closes Lb as it answers; only La's `310` matters, so only La is read.
        while self.exit_code.is_none() {
            let la = self.la.clone();
            match with_deadline(la.readable(), deadline).await {
                Some(_) => self.read(Source::La, deadline).await,
                None => return Err(UserError::Timeout("`310` after /exit")),
            }
        }
        match self.exit_code {
            Some(0) => Ok(()),
            _ => Err(self.ended()),
        }
    }

    /// How many deliveries this user has received and acknowledged.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Waits for La bytes or the server's Lb connection, whichever comes first.
    async fn wait_login_step(&mut self, deadline: Instant) -> Result<(), UserError> {
        enum Step {
            La,
            Accepted(io::Result<async_net::TcpStream>),
        }
        let la = self.la.clone();
        let listener = self.listener.take();
        let read_la = async {
            let _ = la.readable().await;
            Step::La
        };
        let step = match &listener {
            Some(listener) => {
                let accept = async { Step::Accepted(listener.accept().await.map(|(s, _)| s)) };
                with_deadline(future::or(accept, read_la), deadline).await
            }
            None => with_deadline(read_la, deadline).await,
        };
        match step {
            None => Err(UserError::Timeout("the login and Lb to complete")),
            Some(Step::La) => {
                self.listener = listener;
                self.read(Source::La, deadline).await;
                Ok(())
            }
            Some(Step::Accepted(Ok(stream))) => {
                // The listener closes here: the server connects once.
                let _ = stream.set_nodelay(true);
                self.lb = Some(stream.into());
                self.session
                    .handle_input(Instant::now(), ClientInput::LbAccepted);
                self.pump(Source::Local, deadline).await;
                Ok(())
            }
            Some(Step::Accepted(Err(err))) => {
                self.session
                    .handle_input(Instant::now(), ClientInput::LbClosed);
                self.pump(Source::Local, deadline).await;
                Err(UserError::Ended(format!("accepting Lb failed: {err}")))
            }
        }
    }

    /// Reads what `source`'s socket has and feeds it to the session, then carries out what
    /// the session asks.
    async fn read(&mut self, source: Source, deadline: Instant) {
        let stream = match source {
            Source::La => Some(&self.la),
            Source::Lb => self.lb.as_ref(),
            Source::Local => None,
        };
        let Some(stream) = stream.cloned() else {
            return;
        };
        let now = Instant::now();
        loop {
            let more = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let read = (&mut stream.get_ref()).read(&mut scratch);
                let (input, more) = match read {
                    Ok(0) => (closed(source), false),
                    Ok(n) => (data(source, &scratch[..n]), n == scratch.len()),
                    Err(err) if err.kind() == ErrorKind::Interrupted => return true,
                    // A spurious wake-up: the reactor reports the socket again when it is ready.
                    Err(err) if err.kind() == ErrorKind::WouldBlock => return false,
                    Err(_) => (closed(source), false),
                };
                self.session.handle_input(now, input);
                more
            });
            self.pump(source, deadline).await;
            if !more || self.exit_code.is_some() {
                return;
            }
        }
    }

    /// Carries out every output of the session; a line it prints is attributed to `source`.
    async fn pump(&mut self, source: Source, deadline: Instant) {
        while let Some(output) = self.session.poll_output() {
            match output {
                ClientOutput::Print(line) => match source {
                    Source::La => self.answers.push(line),
                    Source::Lb => self.received += 1,
                    Source::Local => {}
                },
                ClientOutput::Error(message) => self.last_error = Some(message),
                ClientOutput::ReadLine { .. } => self.wants_line = true,
                ClientOutput::SendLa(bytes) => {
                    if write_all(&self.la, &bytes, deadline).await.is_err() {
                        self.session
                            .handle_input(Instant::now(), ClientInput::LaClosed);
                    }
                }
                ClientOutput::SendLb(bytes) => {
                    let written = match &self.lb {
                        Some(lb) => write_all(lb, &bytes, deadline).await,
                        None => Err(ErrorKind::NotConnected.into()),
                    };
                    if written.is_err() {
                        self.session
                            .handle_input(Instant::now(), ClientInput::LbClosed);
                    }
                }
                ClientOutput::ListenLb => {
                    let input = match listen_lb(&self.la, &self.lb_ports) {
                        Ok((listener, port)) => {
                            self.listener = Some(listener);
                            ClientInput::LbListening(port)
                        }
                        Err(_) => ClientInput::LbListenFailed,
                    };
                    self.session.handle_input(Instant::now(), input);
                }
                ClientOutput::Exit(code) => self.exit_code = Some(code),
            }
        }
    }

    fn check_alive(&self) -> Result<(), UserError> {
        match self.exit_code {
            Some(_) => Err(self.ended()),
            None => Ok(()),
        }
    }

    fn ended(&self) -> UserError {
        UserError::Ended(
            self.last_error
                .clone()
                .unwrap_or_else(|| "the client exited".to_owned()),
        )
    }
}

fn data(source: Source, bytes: &[u8]) -> ClientInput<'_> {
    match source {
        Source::Lb => ClientInput::LbData(bytes),
        _ => ClientInput::LaData(bytes),
    }
}

fn closed(source: Source) -> ClientInput<'static> {
    match source {
        Source::Lb => ClientInput::LbClosed,
        _ => ClientInput::LaClosed,
    }
}

/// Where Lb listeners are bound.
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

    /// Binds a listener on `ip` at the next free port.
    fn bind(&self, ip: IpAddr) -> io::Result<std::net::TcpListener> {
        let LbPorts::Range { first, last, next } = self else {
            return std::net::TcpListener::bind((ip, 0));
        };
        let mut error = io::Error::from(ErrorKind::AddrInUse);
        for _ in *first..=*last {
            let port = next.get();
            next.set(if port >= *last { *first } else { port + 1 });
            match std::net::TcpListener::bind((ip, port)) {
                Ok(listener) => return Ok(listener),
                // Taken (by anything): the next one will do.
                Err(err) if err.kind() == ErrorKind::AddrInUse => error = err,
                Err(err) => return Err(err),
            }
        }
        Err(error)
    }
}

/// Binds the Lb listener on La's local address, as the real client does.
fn listen_lb(la: &Async<TcpStream>, ports: &LbPorts) -> io::Result<(async_net::TcpListener, u16)> {
    let ip = la.get_ref().local_addr()?.ip();
    let listener = ports.bind(ip)?;
    let port = listener.local_addr()?.port();
    Ok((listener.try_into()?, port))
}

/// Writes all of `bytes`, waiting for room only if the socket is full, until `deadline`.
async fn write_all(
    stream: &Async<TcpStream>,
    mut bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    while !bytes.is_empty() {
        match (&mut stream.get_ref()).write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                match with_deadline(stream.writable(), deadline).await {
                    Some(ready) => ready?,
                    None => return Err(ErrorKind::TimedOut.into()),
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Runs `future` until `deadline`; `None` if the deadline came first.
pub async fn with_deadline<T>(future: impl Future<Output = T>, deadline: Instant) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        watchdog::expired(deadline).await;
        None
    })
    .await
}
