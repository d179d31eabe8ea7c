//! [`ClientSession`]: the client of PROTOCOL.md §4 as a sans-IO state machine.
//!
//! The adapter feeds it standard-input lines, La and Lb bytes and the current time, and carries
//! out what it asks: print a line, read a line, send bytes, open the Lb listener, exit.

use std::time::{Duration, Instant};

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

/// The client of PROTOCOL.md §4.
#[derive(Debug)]
pub struct ClientSession {
    _config: ClientConfig,
}

impl ClientSession {
    /// A client whose La connection is already established; it starts by asking for the user name.
    pub fn new(_now: Instant, config: ClientConfig) -> Self {
        ClientSession { _config: config }
    }

    /// Feeds one event in.
    pub fn handle_input(&mut self, _now: Instant, _input: ClientInput<'_>) {
        todo!()
    }

    /// Lets timers that are due fire.
    pub fn handle_timeout(&mut self, _now: Instant) {
        todo!()
    }

    /// The next thing to do, or `None` until new input or the next timeout.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        todo!()
    }

    /// When [`ClientSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
}
