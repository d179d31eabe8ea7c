//! [`SimUser`]: one simulated user, the client driver's [`AsyncClient`] on [`Smol`] over real
//! sockets.
//!
//! The session makes every protocol decision (what `/login` looks like, answering `302` on Lb,
//! what ends a session) and the driver carries them out; this file is only a front-end
//! ([`Seen`]): it answers the session's line requests with the scenario's lines and keeps the
//! typed events the scenario needs (the answer to a request, `201`, deliveries, errors).
//!
//! Many users share one thread, so it is lean: sockets are read when the reactor says they
//! are readable, into one scratch buffer per thread, and only the socket the scenario expects
//! something on is watched (a sender waits on La, a recipient on Lb). Every wait has a
//! deadline.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use simple_im::driver::client::{AsyncClient, LbPorts, Watch};
use simple_im::driver::ServerAddrs;
use simple_im::runtime::smol::Smol;
use simple_im_core::client::{Asked, ClientConfig, ClientError, ClientEvent, ClientInput, Reply};
use simple_im_core::driver::ClientFrontend;

use crate::watchdog;

/// How much one socket read takes; lines in these scenarios are far shorter.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer every user of this thread shares: the bytes are handed to the session
    /// before the next read, so one buffer per thread is enough, not two per user.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Runs `turn` with this thread's scratch buffer. A turn may wait (for a full socket to take
/// a write) while it holds the buffer; another user's turn meanwhile gets a buffer of its own.
async fn with_scratch<T>(turn: impl AsyncFnOnce(&mut [u8]) -> T) -> T {
    let mut scratch = SCRATCH.with_borrow_mut(std::mem::take);
    if scratch.is_empty() {
        scratch = vec![0; READ_CHUNK];
    }
    let result = turn(&mut scratch).await;
    SCRATCH.with_borrow_mut(|slot| *slot = scratch);
    result
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

/// What a simulated user has seen of its session: the front-end the client driver reports to.
pub struct Seen {
    /// The first answer on La since the last request.
    answer: Option<Reply>,
    /// The answer to `/login` or `/port` that refused the session, if one did.
    refused: Option<Reply>,
    /// `201` came: the session reads commands.
    lb_ready: bool,
    /// The session asked for the next line.
    wants_line: bool,
    /// Deliveries shown (and acknowledged by the session) on Lb.
    received: u64,
    /// The session's last error.
    last_error: Option<ClientError>,
}

impl ClientFrontend for Seen {
    fn show(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::Answer {
                to: Some(Asked::Login | Asked::Port),
                reply,
            } if !matches!(reply, Reply::AuthOk | Reply::LbOk) => self.refused = Some(reply),
            ClientEvent::Answer { reply, .. } => {
                self.answer.get_or_insert(reply);
            }
            ClientEvent::LbReady => self.lb_ready = true,
            ClientEvent::Delivery { .. } => self.received += 1,
            ClientEvent::Error(error) => self.last_error = Some(error),
            _ => {}
        }
    }

    fn read_line(&mut self, _secret: bool) {
        self.wants_line = true;
    }
}

/// One simulated user with an open session.
pub struct SimUser {
    client: AsyncClient<Smol, Seen>,
}

impl SimUser {
    /// Connects La to `server` (over TLS if it says so), logs in as `user`, and opens Lb; done
    /// when the session asks for its first command. Everything must happen before `deadline`.
    pub async fn login(
        runtime: Smol,
        server: ServerAddrs,
        user: &[u8],
        password: &[u8],
        lb_ports: Rc<LbPorts>,
        deadline: Instant,
    ) -> Result<SimUser, UserError> {
        let config = ClientConfig {
            // No echo of each command: the scenario knows what it sent.
            interactive: true,
            ..ClientConfig::default()
        };
        let seen = Seen {
            answer: None,
            refused: None,
            lb_ready: false,
            wants_line: false,
            received: 0,
            last_error: None,
        };
        let connect = AsyncClient::connect_any(runtime, &server, config, seen, lb_ports);
        let mut sim = match with_deadline(connect, deadline).await {
            Some(Ok(client)) => SimUser { client },
            Some(Err(err)) => return Err(UserError::Connect(err)),
            None => return Err(UserError::Timeout("the La connection")),
        };
        // The session asks for the user name, then the password, then sends `/login`.
        for word in [user, password] {
            if !std::mem::take(&mut sim.seen_mut().wants_line) {
                return Err(sim.ended());
            }
            sim.client.handle_user(ClientInput::Line(word)).await;
        }
        // `101`, the Lb listener, `/port`, the server's connect, `201`: done once `201` came
        // and Lb is there to be read. After `102` the session asks for the user name again,
        // and after `202` it exits: either way the login is over.
        loop {
            if let Some(reply) = &sim.seen().refused {
                let line = reply.to_line_bytes();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                return Err(UserError::LoginRefused(
                    String::from_utf8_lossy(line).into_owned(),
                ));
            }
            sim.check_alive()?;
            if sim.seen().lb_ready && sim.client.driver().lb_open() {
                let seen = sim.seen_mut();
                seen.answer = None;
                seen.wants_line = true;
                return Ok(sim);
            }
            sim.step(Watch::LA, deadline, "the login and Lb to complete")
                .await?;
        }
    }

    /// Sends one command line and returns the server's answer on La.
    pub async fn request(&mut self, line: &[u8], deadline: Instant) -> Result<Reply, UserError> {
        self.check_alive()?;
        if !std::mem::take(&mut self.seen_mut().wants_line) {
            return Err(UserError::Ended(
                "the previous command was never answered".into(),
            ));
        }
        self.seen_mut().answer = None;
        self.client.handle_user(ClientInput::Line(line)).await;
        loop {
            self.check_alive()?;
            // The session reads the next command only once the answer came.
            if self.seen().wants_line {
                if let Some(answer) = self.seen_mut().answer.take() {
                    return Ok(answer);
                }
            }
            self.step(Watch::LA, deadline, "the answer on La").await?;
        }
    }

    /// Answers deliveries on Lb until `stop` completes; returns an error if the session ends.
    pub async fn serve_deliveries(
        &mut self,
        mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
        write_timeout: std::time::Duration,
    ) -> Result<(), UserError> {
        if !self.client.driver().lb_open() {
            return Err(UserError::Ended("no Lb connection".into()));
        }
        loop {
            self.check_alive()?;
            let client = &mut self.client;
            let ready = future::or(async { Some(client.wait(Watch::LB).await) }, async {
                stop.as_mut().await;
                None
            })
            .await;
            let Some(ready) = ready else {
                return Ok(());
            };
            let deadline = Instant::now() + write_timeout;
            let client = &mut self.client;
            let done = with_scratch(async |scratch| {
                with_deadline(client.on_ready(ready, scratch), deadline).await
            })
            .await;
            if done.is_none() {
                return Err(UserError::Timeout("the receipt to be written on Lb"));
            }
        }
    }

    /// Sends `/exit` (as the client does at end of input) and waits for `310`.
    pub async fn exit(mut self, deadline: Instant) -> Result<(), UserError> {
        self.client.handle_user(ClientInput::StdinClosed).await;
        // The server closes Lb as it answers; only La's `310` matters, so only La is read.
        while self.client.driver().exit_code().is_none() {
            self.step(Watch::LA, deadline, "`310` after /exit").await?;
        }
        match self.client.driver().exit_code() {
            Some(0) => Ok(()),
            _ => Err(self.ended()),
        }
    }

    /// How many deliveries this user has received and acknowledged.
    pub fn received(&self) -> u64 {
        self.seen().received
    }

    fn seen(&self) -> &Seen {
        self.client.frontend()
    }

    fn seen_mut(&mut self) -> &mut Seen {
        self.client.frontend_mut()
    }

    /// One turn of the client's loop, watching `watch`, bounded by `deadline`.
    async fn step(
        &mut self,
        watch: Watch,
        deadline: Instant,
        waiting_for: &'static str,
    ) -> Result<(), UserError> {
        let client = &mut self.client;
        let done = with_scratch(async |scratch| {
            with_deadline(client.step(watch, scratch), deadline).await
        })
        .await;
        done.ok_or(UserError::Timeout(waiting_for))
    }

    fn check_alive(&self) -> Result<(), UserError> {
        match self.client.driver().exit_code() {
            Some(_) => Err(self.ended()),
            None => Ok(()),
        }
    }

    fn ended(&self) -> UserError {
        UserError::Ended(match &self.seen().last_error {
            Some(error) => format!("error: {error}"),
            None => "the client exited".to_owned(),
        })
    }
}

/// Runs `future` until `deadline`; `None` if the deadline came first.
pub async fn with_deadline<T>(future: impl Future<Output = T>, deadline: Instant) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        watchdog::expired(deadline).await;
        None
    })
    .await
}
