//! [`ClientSession`]: the client of docs/protocol.md §4 as a sans-IO state machine.
//!
//! Its driver ([`crate::driver::client`]) feeds it standard-input lines, La and Lb bytes and
//! the current time, and carries out what it asks: read a line, send bytes, open the Lb
//! listener, exit. What happened is reported as typed [`ClientEvent`]s (a prompt, an answer,
//! a delivery, an error): the terminal prints them (`crate::terminal`), a load generator
//! counts them, a test compares them.

use std::collections::VecDeque;
use std::fmt;
// Addresses as plain data, for what the driver reports: `core::net` has no sockets.
use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::protocol::{
    is_token, receipt_bytes, Delivery, Frame, LineFramer, Request, Response, Unrecognized,
};

/// How the client behaves; the defaults follow docs/protocol.md §4.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Standard input is a terminal: the password is read without echo, and commands are not
    /// echoed back (a piped run echoes them so its output reads as a transcript).
    pub interactive: bool,
    /// How long to wait for `310` on La once Lb has closed after `/exit` was sent.
    pub exit_grace: Duration,
    /// The bound on one line from the server, `\n` included.
    pub max_line: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            interactive: false,
            exit_grace: Duration::from_secs(1),
            max_line: crate::protocol::DEFAULT_MAX_LINE,
        }
    }
}

/// Something that happened to the client, fed in by its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientInput<'a> {
    /// One line of standard input, without its line end; answers [`ClientOutput::ReadLine`].
    Line(&'a [u8]),
    /// Standard input reached end of file (Ctrl-D).
    StdinClosed,
    /// The user pressed Ctrl-C (or the process got SIGTERM).
    Interrupted,
    /// Bytes read from La.
    LaData(&'a [u8]),
    /// La reached end of file or failed.
    LaClosed,
    /// The Lb listener asked for by [`ClientOutput::ListenLb`] is bound to this port.
    LbListening(u16),
    /// The Lb listener could not be bound.
    LbListenFailed,
    /// The server connected to the Lb listener.
    LbAccepted,
    /// Bytes read from Lb.
    LbData(&'a [u8]),
    /// Lb reached end of file or failed.
    LbClosed,
}

/// Something the client asks its driver to do, drained with [`ClientSession::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Something happened that the user should learn of; the front-end decides how.
    Event(ClientEvent),
    /// Read the next line of standard input; `secret`: without echo when it is a terminal.
    ReadLine {
        /// The line is a password.
        secret: bool,
    },
    /// Write these bytes to La.
    SendLa(Vec<u8>),
    /// Listen on a system-picked port of La's local address, report it with
    /// [`ClientInput::LbListening`], and accept one connection ([`ClientInput::LbAccepted`]).
    ListenLb,
    /// Write these bytes to Lb.
    SendLb(Vec<u8>),
    /// Close both connections and exit the process with this code. Nothing follows it.
    Exit(i32),
}

/// The first prompt of a login round (§4, step 2).
pub const USER_PROMPT: &[u8] = b"Please input your user name:";
/// The second prompt of a login round (§4, step 2).
pub const PASSWORD_PROMPT: &[u8] = b"Please input your password:";
/// Printed instead of sending a `/login` the server could only answer `401`.
pub const TOKEN_HINT: &[u8] = b"user names and passwords are one word (no spaces), not empty";

/// What happened, as the client reports it: the terminal prints each of these in one way
/// (`crate::terminal::render`), other front-ends count or check them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The user is asked for something, or told why the last answer was not taken.
    Prompt(Prompt),
    /// A command as it is sent; only when standard input is not a terminal, so that a piped
    /// run reads as a transcript.
    Echo(Vec<u8>),
    /// A line the server sent on La, and the request it answers (`None`: nothing was asked,
    /// as with a line from a deviating server).
    Answer {
        /// The request it answers, matched in order: the server answers each in turn.
        to: Option<Asked>,
        /// What the server said.
        reply: Reply,
    },
    /// `101` answered the login: the client goes on to open Lb. (Its `Answer` came first.)
    LoggedIn,
    /// `201`: Lb is up and the client reads commands. (Its `Answer` came first.)
    LbReady,
    /// A message on Lb, already acknowledged with `302`.
    Delivery {
        /// `/from` or `/broadcastfrom`.
        kind: DeliveryKind,
        /// Who sent it.
        sender: Vec<u8>,
        /// The chat text, verbatim.
        content: Vec<u8>,
    },
    /// `310` answered `/exit`: the client exits 0. (Its `Answer` came first.)
    Bye,
    /// A line on Lb of no known form (a server deviating from the protocol), verbatim without
    /// its `\n`, already acknowledged with `302` like a delivery: the user sees it, and a
    /// server without an ack time-out does not hang its sender.
    UnknownDelivery(Vec<u8>),
    /// Something went wrong: the client exits 1.
    Error(ClientError),
    /// Something the user should know of, that the client takes in its stride and goes on.
    Warning(ClientWarning),
}

/// What the user is asked or told during the login (§4, step 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// [`USER_PROMPT`]
    UserName,
    /// [`PASSWORD_PROMPT`]
    Password,
    /// [`TOKEN_HINT`]: what was typed is not one word, so it was not sent.
    NotOneWord,
}

impl Prompt {
    /// The exact text the terminal shows.
    pub fn text(self) -> &'static [u8] {
        match self {
            Prompt::UserName => USER_PROMPT,
            Prompt::Password => PASSWORD_PROMPT,
            Prompt::NotOneWord => TOKEN_HINT,
        }
    }
}

/// The kind of request an answer on La belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// `/login`
    Login,
    /// `/port`
    Port,
    /// `/list`
    List,
    /// `/to`
    To,
    /// `/toall`
    ToAll,
    /// `/exit`, typed or sent for Ctrl-D / Ctrl-C.
    Exit,
    /// A typed line of no known form (the server answers it `401`).
    Other,
}

impl Asked {
    fn of(request: Result<Request<'_>, Unrecognized>) -> Asked {
        match request {
            Ok(Request::Login { .. }) => Asked::Login,
            Ok(Request::Port(_)) => Asked::Port,
            Ok(Request::List) => Asked::List,
            Ok(Request::To { .. }) => Asked::To,
            Ok(Request::ToAll { .. }) => Asked::ToAll,
            Ok(Request::Exit) => Asked::Exit,
            Err(Unrecognized) => Asked::Other,
        }
    }
}

/// One La line from the server, owned: a [`Response`] of docs/protocol.md §2, or the line itself
/// when it is of no known form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `101 Authentication successful`
    AuthOk,
    /// `102 Authentication failed`
    AuthFailed,
    /// `201 Build connection successful`
    LbOk,
    /// `202 Build connection failed`
    LbFailed,
    /// `301 <user> …`: the online users, the asker first.
    List(Vec<Vec<u8>>),
    /// `303 Message delivery successful`
    Delivered,
    /// `304 Message delivery failed`
    DeliveryFailed,
    /// `310 Bye bye`
    Bye,
    /// `401 Unrecognized message`
    Unrecognized,
    /// A line of no known form, verbatim (without `\n`).
    Unknown(Vec<u8>),
}

impl Reply {
    /// The reply of one La line (without `\n`).
    pub fn parse(line: &[u8]) -> Reply {
        match Response::parse(line) {
            Ok(Response::AuthOk) => Reply::AuthOk,
            Ok(Response::AuthFailed) => Reply::AuthFailed,
            Ok(Response::LbOk) => Reply::LbOk,
            Ok(Response::LbFailed) => Reply::LbFailed,
            Ok(Response::List(names)) => Reply::List(names.iter().map(|n| n.to_vec()).collect()),
            Ok(Response::Delivered) => Reply::Delivered,
            Ok(Response::DeliveryFailed) => Reply::DeliveryFailed,
            Ok(Response::Bye) => Reply::Bye,
            Ok(Response::Unrecognized) => Reply::Unrecognized,
            Err(Unrecognized) => Reply::Unknown(line.to_vec()),
        }
    }

    /// The line as the server sent it, `\n` included. (The parsers take only exact lines,
    /// so formatting a parsed reply gives back the very bytes that came.)
    pub fn to_line_bytes(&self) -> Vec<u8> {
        let known = match self {
            Reply::AuthOk => Response::AuthOk,
            Reply::AuthFailed => Response::AuthFailed,
            Reply::LbOk => Response::LbOk,
            Reply::LbFailed => Response::LbFailed,
            Reply::List(names) => Response::List(names.iter().map(Vec::as_slice).collect()),
            Reply::Delivered => Response::Delivered,
            Reply::DeliveryFailed => Response::DeliveryFailed,
            Reply::Bye => Response::Bye,
            Reply::Unrecognized => Response::Unrecognized,
            Reply::Unknown(line) => return crate::protocol::line_bytes(line),
        };
        known.to_bytes()
    }
}

/// Which of the two messages on Lb a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryKind {
    /// `/from <sender> <content>`: someone's `/to`.
    From,
    /// `/broadcastfrom <sender> <content>`: someone's `/toall`.
    BroadcastFrom,
}

impl DeliveryKind {
    /// The line as the server sent it, `\n` included.
    pub fn to_line_bytes(self, sender: &[u8], content: &[u8]) -> Vec<u8> {
        match self {
            DeliveryKind::From => Delivery::From { sender, content },
            DeliveryKind::BroadcastFrom => Delivery::BroadcastFrom { sender, content },
        }
        .to_bytes()
    }
}

/// One of the client's two connections to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// The client's own connection, for requests and answers.
    La,
    /// The server's connection to the client's listener, for deliveries.
    Lb,
}

impl Connection {
    /// The input that hands bytes read from this connection to the session.
    pub fn data(self, bytes: &[u8]) -> ClientInput<'_> {
        match self {
            Connection::La => ClientInput::LaData(bytes),
            Connection::Lb => ClientInput::LbData(bytes),
        }
    }

    /// The input that tells the session this connection is gone.
    pub fn closed(self) -> ClientInput<'static> {
        match self {
            Connection::La => ClientInput::LaClosed,
            Connection::Lb => ClientInput::LbClosed,
        }
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::La => "La",
            Connection::Lb => "Lb",
        })
    }
}

/// What went wrong; its `Display` is the one-line message the terminal shows after `error: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The server closed (or broke) a connection while the client still needed it.
    Closed(Connection),
    /// The Lb listener could not be bound.
    LbListenFailed,
    /// The Lb listener reported port 0, which cannot be sent in `/port`.
    LbPortZero,
    /// `/port` was answered with something other than `201` or `202`.
    PortNotAccepted,
    /// The server sent a line longer than [`ClientConfig::max_line`].
    LineTooLong {
        /// Where.
        on: Connection,
        /// The bound.
        max_line: usize,
    },
    /// After `/exit`, Lb closed and `310` did not follow within [`ClientConfig::exit_grace`].
    NoBye,
    /// TLS on a connection failed: the server's certificate was refused, or it does not speak
    /// TLS (`--tls` against a plain-text server).
    Tls {
        /// Where.
        on: Connection,
        /// Why, in a few words.
        reason: String,
    },
    /// The server answered La with TLS, and the client was started without `--tls`.
    ServerSpeaksTls,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Closed(Connection::La) => {
                f.write_str("the server closed the connection (La)")
            }
            ClientError::Closed(Connection::Lb) => {
                f.write_str("the server closed the message connection (Lb)")
            }
            ClientError::LbListenFailed => {
                f.write_str("could not listen for the server's message connection (Lb)")
            }
            ClientError::LbPortZero => {
                f.write_str("the message connection (Lb) listener reported port 0")
            }
            ClientError::PortNotAccepted => {
                f.write_str("the server did not accept the message connection's port")
            }
            ClientError::LineTooLong { on, max_line } => {
                write!(
                    f,
                    "the server sent a line longer than {max_line} bytes on {on}"
                )
            }
            ClientError::NoBye => {
                f.write_str("the server closed the connection without answering /exit")
            }
            ClientError::Tls { on, reason } => write!(f, "TLS on {on} failed: {reason}"),
            ClientError::ServerSpeaksTls => {
                f.write_str("the server speaks TLS: start the client with --tls")
            }
        }
    }
}

/// Something odd the client goes on after; its `Display` is the one-line message the terminal
/// shows after `warning: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientWarning {
    /// A connection to the Lb listener came from an address other than the server's, and was
    /// closed unread (docs/protocol.md §4 step 3): the client still waits for the server's.
    LbNotFromServer {
        /// Who connected.
        peer: SocketAddr,
        /// La's peer address, the only one Lb is taken from.
        server: IpAddr,
    },
    /// The first line on Lb of no known form (docs/protocol.md §4 step 5): the server deviates
    /// from the protocol. It is shown and acknowledged ([`ClientEvent::UnknownDelivery`]);
    /// later ones are too, without another warning.
    DeviatingServer(Vec<u8>),
    /// A line on Lb grew past [`ClientConfig::max_line`]: it is acknowledged with `302` as
    /// soon as the bound is passed, like any other Lb line, but cannot be shown (its bytes are
    /// discarded).
    LbLineTooLong {
        /// The bound.
        max_line: usize,
    },
}

impl fmt::Display for ClientWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientWarning::LbNotFromServer { peer, server } => write!(
                f,
                "refused a message connection (Lb) from {peer}: only the server ({server}) may open it"
            ),
            ClientWarning::DeviatingServer(line) => write!(
                f,
                "the server deviates from the protocol: it sent {} on Lb, which is neither \
                 /from nor /broadcastfrom; such lines are shown and acknowledged",
                preview(line)
            ),
            ClientWarning::LbLineTooLong { max_line } => write!(
                f,
                "the server sent a message longer than {max_line} bytes on Lb; \
                 it was acknowledged but cannot be shown"
            ),
        }
    }
}

/// Lb lines held at most until La's `201` ([`ClientSession`]'s `early_lb`).
const MAX_EARLY_LB: usize = 16;

/// Where the client is in docs/protocol.md §4; each variant holds what is valid in it.
#[derive(Debug)]
enum State {
    /// Step 2: a `ReadLine` for the user name is outstanding.
    AskingUser,
    /// Step 2: a secret `ReadLine` for the password is outstanding.
    AskingPassword {
        /// The user name read before, already checked to be a token.
        user: Vec<u8>,
    },
    /// `/login` is sent; the answer (`101`, `102` or `401`) is awaited.
    LoggingIn,
    /// Step 3: `101` came and the Lb listener is asked for.
    OpeningLb {
        /// `/port` is sent, so the next La line answers it.
        port_sent: bool,
    },
    /// Step 4: a `ReadLine` for the next command is outstanding.
    ReadingCommand,
    /// Step 4: a command is sent; its one answer line is awaited.
    AwaitingAnswer,
    /// `/exit` is sent (typed, or for Ctrl-D / Ctrl-C); only `310` ends this well.
    Exiting {
        /// Set once Lb has closed: `310` must arrive on La before then.
        bye_deadline: Option<Instant>,
    },
    /// `Exit` is queued; nothing else is done.
    Exited,
}

/// The client of docs/protocol.md §4.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    la: LineFramer,
    lb: LineFramer,
    /// The requests sent on La and not answered yet, oldest first: the server answers in
    /// order, so each La line belongs to the front one. At most two (a command, then `/exit`).
    asked: VecDeque<Asked>,
    /// [`ClientWarning::DeviatingServer`] was given: it is given once.
    warned_deviation: bool,
    /// Lb lines that came before La's `201`: the server sends `201` first, but the two
    /// connections race to the client, so they wait and are shown after it, in order.
    /// `None` stands for an over-long line.
    early_lb: VecDeque<Option<Vec<u8>>>,
    outputs: VecDeque<ClientOutput>,
}

impl ClientSession {
    /// A client whose La connection is already established; it starts by asking for the user name.
    pub fn new(_now: Instant, config: ClientConfig) -> Self {
        let mut session = ClientSession {
            la: LineFramer::new(config.max_line),
            lb: LineFramer::new(config.max_line),
            config,
            state: State::AskingUser,
            asked: VecDeque::new(),
            warned_deviation: false,
            early_lb: VecDeque::new(),
            outputs: VecDeque::new(),
        };
        session.ask_user();
        session
    }

    /// Feeds one event in.
    pub fn handle_input(&mut self, now: Instant, input: ClientInput<'_>) {
        if matches!(self.state, State::Exited) {
            return;
        }
        match input {
            ClientInput::Line(line) => self.on_stdin_line(line),
            ClientInput::StdinClosed | ClientInput::Interrupted => self.send_exit(),
            ClientInput::LaData(bytes) => self.on_data(Connection::La, bytes),
            ClientInput::LaClosed => self.fail(ClientError::Closed(Connection::La)),
            ClientInput::LbListening(port) => self.on_lb_listening(port),
            ClientInput::LbListenFailed => {
                // Once `/exit` is out the listener no longer matters: only `310` does.
                if matches!(self.state, State::OpeningLb { .. }) {
                    self.fail(ClientError::LbListenFailed);
                }
            }
            // Deliveries are handled whenever Lb bytes come, so whether the accept is reported
            // before or after `201` changes nothing.
            ClientInput::LbAccepted => {}
            ClientInput::LbData(bytes) => self.on_data(Connection::Lb, bytes),
            ClientInput::LbClosed => match &mut self.state {
                // The server closes Lb as it answers `/exit`; its `310` may still be on the way.
                State::Exiting { bye_deadline } => {
                    bye_deadline.get_or_insert(now + self.config.exit_grace);
                }
                _ => self.fail(ClientError::Closed(Connection::Lb)),
            },
        }
    }

    /// Lets timers that are due fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Exiting {
            bye_deadline: Some(deadline),
        } = self.state
        {
            if now >= deadline {
                self.fail(ClientError::NoBye);
            }
        }
    }

    /// The next thing to do, or `None` until new input or the next timeout.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Exiting { bye_deadline } => bye_deadline,
            _ => None,
        }
    }

    fn ask_user(&mut self) {
        self.event(ClientEvent::Prompt(Prompt::UserName));
        self.outputs
            .push_back(ClientOutput::ReadLine { secret: false });
        self.state = State::AskingUser;
    }

    fn read_command(&mut self) {
        self.outputs
            .push_back(ClientOutput::ReadLine { secret: false });
        self.state = State::ReadingCommand;
    }

    fn on_stdin_line(&mut self, line: &[u8]) {
        // The adapter strips `\n`; a `\r` may remain from a CRLF file, and a stray `\n` must
        // never let one input line become two requests.
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::mem::replace(&mut self.state, State::Exited) {
            State::AskingUser => {
                if is_token(line) {
                    self.event(ClientEvent::Prompt(Prompt::Password));
                    self.outputs
                        .push_back(ClientOutput::ReadLine { secret: true });
                    self.state = State::AskingPassword {
                        user: line.to_vec(),
                    };
                } else {
                    self.event(ClientEvent::Prompt(Prompt::NotOneWord));
                    self.ask_user();
                }
            }
            State::AskingPassword { user } => {
                if is_token(line) {
                    let login = Request::Login {
                        user: &user,
                        password: line,
                    };
                    self.send_la(Asked::Login, login.to_bytes());
                    self.state = State::LoggingIn;
                } else {
                    self.event(ClientEvent::Prompt(Prompt::NotOneWord));
                    self.ask_user();
                }
            }
            State::ReadingCommand if line.is_empty() => self.read_command(),
            State::ReadingCommand => {
                if !self.config.interactive {
                    self.event(ClientEvent::Echo(line.to_vec()));
                }
                let mut bytes = line.to_vec();
                bytes.push(b'\n');
                let asked = Asked::of(Request::parse(line));
                self.send_la(asked, bytes);
                self.state = if asked == Asked::Exit {
                    State::Exiting { bye_deadline: None }
                } else {
                    State::AwaitingAnswer
                };
            }
            // No `ReadLine` is outstanding: the line is a late one and has no meaning now.
            other => self.state = other,
        }
    }

    fn send_exit(&mut self) {
        if matches!(self.state, State::Exiting { .. } | State::Exited) {
            return;
        }
        self.send_la(Asked::Exit, Request::Exit.to_bytes());
        self.state = State::Exiting { bye_deadline: None };
    }

    fn on_lb_listening(&mut self, port: u16) {
        if let State::OpeningLb { port_sent: false } = self.state {
            if port == 0 {
                self.fail(ClientError::LbPortZero);
                return;
            }
            self.send_la(Asked::Port, Request::Port(port).to_bytes());
            self.state = State::OpeningLb { port_sent: true };
        }
    }

    fn on_data(&mut self, on: Connection, bytes: &[u8]) {
        // The framer lends lines out of itself, so it is moved out while `self` changes.
        let framer = match on {
            Connection::La => &mut self.la,
            Connection::Lb => &mut self.lb,
        };
        let mut framer = std::mem::replace(framer, LineFramer::new(0));
        let max_line = framer.max_line();
        for_each_frame(&mut framer, bytes, |frame| {
            match (frame, on) {
                (Frame::Line(line), Connection::La) => self.on_la_line(line),
                (Frame::TooLong, Connection::La) => {
                    self.fail(ClientError::LineTooLong { on, max_line })
                }
                (frame, Connection::Lb) => {
                    let line = match frame {
                        Frame::Line(line) => Some(line),
                        Frame::TooLong => None,
                    };
                    match self.state {
                        // Bounded: a server sends one message before its receipt, so more
                        // than a few is no server of this protocol, and is shown as it comes.
                        State::OpeningLb { .. } if self.early_lb.len() < MAX_EARLY_LB => {
                            self.early_lb.push_back(line.map(<[u8]>::to_vec))
                        }
                        _ => self.on_lb_frame(line, max_line),
                    }
                }
            }
            !matches!(self.state, State::Exited)
        });
        match on {
            Connection::La => self.la = framer,
            Connection::Lb => self.lb = framer,
        }
    }

    fn on_la_line(&mut self, line: &[u8]) {
        // The user sees every answer, known or not, exactly as it came.
        let reply = Reply::parse(line);
        let to = self.asked.pop_front();
        let is_bye = reply == Reply::Bye;
        let outcome = match (&self.state, &reply) {
            _ if is_bye => Outcome::Exit(0),
            (State::LoggingIn, Reply::AuthOk) => Outcome::LoggedIn,
            (State::LoggingIn, _) => Outcome::AskAgain,
            (State::OpeningLb { port_sent: true }, Reply::LbOk) => Outcome::LbReady,
            (State::OpeningLb { .. } | State::Exiting { .. }, Reply::LbFailed) => Outcome::Exit(1),
            (State::OpeningLb { port_sent: true }, _) => Outcome::PortNotAccepted,
            (State::AwaitingAnswer, _) => Outcome::ReadCommand,
            // Nothing was asked, or the answer is for a request sent before `/exit`: the line
            // is shown and changes nothing.
            _ => Outcome::Nothing,
        };
        self.event(ClientEvent::Answer { to, reply });
        match outcome {
            Outcome::Exit(code) => {
                if is_bye {
                    self.event(ClientEvent::Bye);
                }
                self.exit(code);
            }
            Outcome::LoggedIn => {
                self.event(ClientEvent::LoggedIn);
                self.outputs.push_back(ClientOutput::ListenLb);
                self.state = State::OpeningLb { port_sent: false };
            }
            Outcome::AskAgain => self.ask_user(),
            Outcome::LbReady => {
                self.event(ClientEvent::LbReady);
                self.read_command();
                let max_line = self.lb.max_line();
                while let Some(line) = self.early_lb.pop_front() {
                    self.on_lb_frame(line.as_deref(), max_line);
                }
            }
            Outcome::PortNotAccepted => self.fail(ClientError::PortNotAccepted),
            Outcome::ReadCommand => self.read_command(),
            Outcome::Nothing => {}
        }
    }

    /// An Lb line, or `None` for one over `max_line`.
    fn on_lb_frame(&mut self, line: Option<&[u8]>, max_line: usize) {
        match line {
            Some(line) => self.on_lb_line(line),
            // Like any Lb line of no known form: acknowledged, so the server's sender is not
            // held up; the user is told what was lost.
            None => {
                self.event(ClientEvent::Warning(ClientWarning::LbLineTooLong {
                    max_line,
                }));
                self.acknowledge();
            }
        }
    }

    fn on_lb_line(&mut self, line: &[u8]) {
        let (kind, sender, content) = match Delivery::parse(line) {
            Ok(Delivery::From { sender, content }) => (DeliveryKind::From, sender, content),
            Ok(Delivery::BroadcastFrom { sender, content }) => {
                (DeliveryKind::BroadcastFrom, sender, content)
            }
            Err(Unrecognized) => {
                // docs/protocol.md §4 step 5: a deviating server (`/broadcast …`, say) is still
                // shown and answered, since a server without an ack time-out would otherwise
                // hold its sender for good; the user is warned once.
                self.event(ClientEvent::UnknownDelivery(line.to_vec()));
                if !std::mem::replace(&mut self.warned_deviation, true) {
                    self.event(ClientEvent::Warning(ClientWarning::DeviatingServer(
                        line.to_vec(),
                    )));
                }
                self.acknowledge();
                return;
            }
        };
        self.event(ClientEvent::Delivery {
            kind,
            sender: sender.to_vec(),
            content: content.to_vec(),
        });
        self.acknowledge();
    }

    /// Answers the Lb line just taken with `302`.
    fn acknowledge(&mut self) {
        self.outputs
            .push_back(ClientOutput::SendLb(receipt_bytes()));
    }

    fn send_la(&mut self, asked: Asked, bytes: Vec<u8>) {
        self.asked.push_back(asked);
        self.outputs.push_back(ClientOutput::SendLa(bytes));
    }

    fn event(&mut self, event: ClientEvent) {
        self.outputs.push_back(ClientOutput::Event(event));
    }

    /// The server misbehaved or went away: say so and exit 1.
    fn fail(&mut self, error: ClientError) {
        self.event(ClientEvent::Error(error));
        self.exit(1);
    }

    fn exit(&mut self, code: i32) {
        self.outputs.push_back(ClientOutput::Exit(code));
        self.state = State::Exited;
    }
}

/// What an La line makes the session do next.
enum Outcome {
    Exit(i32),
    LoggedIn,
    AskAgain,
    LbReady,
    PortNotAccepted,
    ReadCommand,
    Nothing,
}

/// Feeds `bytes` to `framer` and hands each frame to `on_frame` while it returns `true`.
fn for_each_frame(
    framer: &mut LineFramer,
    bytes: &[u8],
    mut on_frame: impl FnMut(Frame<'_>) -> bool,
) {
    let mut rest = bytes;
    while let Some(frame) = framer.next_frame(&mut rest) {
        if !on_frame(frame) {
            return;
        }
    }
}

/// A bounded, printable view of a line from the peer, for error messages.
fn preview(line: &[u8]) -> String {
    const SHOWN: usize = 80;
    let text = String::from_utf8_lossy(&line[..line.len().min(SHOWN)])
        .escape_debug()
        .to_string();
    if line.len() > SHOWN {
        format!("\"{text}…\"")
    } else {
        format!("\"{text}\"")
    }
}
