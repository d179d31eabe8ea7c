//! [`ClientSession`]: the client of PROTOCOL.md §4 as a sans-IO state machine.
//!
//! The adapter feeds it standard-input lines, La and Lb bytes and the current time, and carries
//! out what it asks: print a line, read a line, send bytes, open the Lb listener, exit.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::{is_token, receipt_bytes, Delivery, Frame, LineFramer, Request, Response};

/// How the client behaves; the defaults follow PROTOCOL.md §4.
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

/// Something that happened to the client, fed in by the adapter.
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

/// Something the client asks its adapter to do, drained with [`ClientSession::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Write this line, plus `\n`, to standard output in one piece.
    Print(Vec<u8>),
    /// Write this line, plus `\n`, to standard error.
    Error(String),
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

/// Where the client is in PROTOCOL.md §4; each variant holds what is valid in it.
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

/// The client of PROTOCOL.md §4.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    state: State,
    la: LineFramer,
    lb: LineFramer,
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
            ClientInput::LaData(bytes) => self.on_la_data(bytes),
            ClientInput::LaClosed => self.fail("the server closed the connection (La)"),
            ClientInput::LbListening(port) => self.on_lb_listening(port),
            ClientInput::LbListenFailed => {
                // Once `/exit` is out the listener no longer matters: only `310` does.
                if matches!(self.state, State::OpeningLb { .. }) {
                    self.fail("could not listen for the server's message connection (Lb)");
                }
            }
            // Deliveries are handled whenever Lb bytes come, so whether the accept is reported
            // before or after `201` changes nothing.
            ClientInput::LbAccepted => {}
            ClientInput::LbData(bytes) => self.on_lb_data(bytes),
            ClientInput::LbClosed => match &mut self.state {
                // The server closes Lb as it answers `/exit`; its `310` may still be on the way.
                State::Exiting { bye_deadline } => {
                    bye_deadline.get_or_insert(now + self.config.exit_grace);
                }
                _ => self.fail("the server closed the message connection (Lb)"),
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
                self.fail("the server closed the connection without answering /exit");
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
        self.print(USER_PROMPT);
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
                    self.print(PASSWORD_PROMPT);
                    self.outputs
                        .push_back(ClientOutput::ReadLine { secret: true });
                    self.state = State::AskingPassword {
                        user: line.to_vec(),
                    };
                } else {
                    self.print(TOKEN_HINT);
                    self.ask_user();
                }
            }
            State::AskingPassword { user } => {
                if is_token(line) {
                    let login = Request::Login {
                        user: &user,
                        password: line,
                    };
                    self.outputs
                        .push_back(ClientOutput::SendLa(login.to_bytes()));
                    self.state = State::LoggingIn;
                } else {
                    self.print(TOKEN_HINT);
                    self.ask_user();
                }
            }
            State::ReadingCommand if line.is_empty() => self.read_command(),
            State::ReadingCommand => {
                if !self.config.interactive {
                    self.print(line);
                }
                let mut bytes = line.to_vec();
                bytes.push(b'\n');
                self.outputs.push_back(ClientOutput::SendLa(bytes));
                self.state = if Request::parse(line) == Ok(Request::Exit) {
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
        self.outputs
            .push_back(ClientOutput::SendLa(Request::Exit.to_bytes()));
        self.state = State::Exiting { bye_deadline: None };
    }

    fn on_lb_listening(&mut self, port: u16) {
        if let State::OpeningLb { port_sent: false } = self.state {
            if port == 0 {
                self.fail("the message connection (Lb) listener reported port 0");
                return;
            }
            self.outputs
                .push_back(ClientOutput::SendLa(Request::Port(port).to_bytes()));
            self.state = State::OpeningLb { port_sent: true };
        }
    }

    fn on_la_data(&mut self, bytes: &[u8]) {
        // The framer lends lines out of itself, so it is moved out while `self` changes.
        let mut framer = std::mem::replace(&mut self.la, LineFramer::new(0));
        let max_line = framer.max_line();
        for_each_frame(&mut framer, bytes, |frame| {
            match frame {
                Frame::Line(line) => self.on_la_line(line),
                Frame::TooLong => self.fail(&format!(
                    "the server sent a line longer than {max_line} bytes on La"
                )),
            }
            !matches!(self.state, State::Exited)
        });
        self.la = framer;
    }

    fn on_la_line(&mut self, line: &[u8]) {
        // The user sees every answer, known or not, exactly as it came.
        self.print(line);
        let response = Response::parse(line);
        if response == Ok(Response::Bye) {
            self.exit(0);
            return;
        }
        match (&self.state, response) {
            (State::LoggingIn, Ok(Response::AuthOk)) => {
                self.outputs.push_back(ClientOutput::ListenLb);
                self.state = State::OpeningLb { port_sent: false };
            }
            (State::LoggingIn, _) => self.ask_user(),
            (State::OpeningLb { port_sent: true }, Ok(Response::LbOk)) => self.read_command(),
            (State::OpeningLb { .. } | State::Exiting { .. }, Ok(Response::LbFailed)) => {
                self.exit(1)
            }
            (State::OpeningLb { port_sent: true }, _) => {
                self.fail("the server did not accept the message connection's port")
            }
            (State::AwaitingAnswer, _) => self.read_command(),
            // Nothing was asked, or the answer is for a request sent before `/exit`: the line
            // is shown and changes nothing.
            _ => {}
        }
    }

    fn on_lb_data(&mut self, bytes: &[u8]) {
        let mut framer = std::mem::replace(&mut self.lb, LineFramer::new(0));
        let max_line = framer.max_line();
        for_each_frame(&mut framer, bytes, |frame| {
            match frame {
                Frame::Line(line) => self.on_lb_line(line),
                Frame::TooLong => self.fail(&format!(
                    "the server sent a line longer than {max_line} bytes on Lb"
                )),
            }
            !matches!(self.state, State::Exited)
        });
        self.lb = framer;
    }

    fn on_lb_line(&mut self, line: &[u8]) {
        if Delivery::parse(line).is_ok() {
            self.print(line);
            self.outputs
                .push_back(ClientOutput::SendLb(receipt_bytes()));
        } else {
            // No `302`: the server then fails that delivery rather than count it as received.
            self.error(format!(
                "the server sent an unexpected line on Lb: {}",
                preview(line)
            ));
        }
    }

    fn print(&mut self, line: &[u8]) {
        self.outputs.push_back(ClientOutput::Print(line.to_vec()));
    }

    fn error(&mut self, message: String) {
        self.outputs
            .push_back(ClientOutput::Error(format!("error: {message}")));
    }

    /// The server misbehaved or went away: say so and exit 1.
    fn fail(&mut self, message: &str) {
        self.error(message.to_owned());
        self.exit(1);
    }

    fn exit(&mut self, code: i32) {
        self.outputs.push_back(ClientOutput::Exit(code));
        self.state = State::Exited;
    }
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
