//! The bare relays' protocol, shared by `mio_relay` and `uring_relay` so that the two differ
//! only in how they move bytes. It keeps each socket's stream (`S`, the I/O side's) beside its
//! buffers, in one map, so that a relay looks a socket up once per event as a hand-written one
//! would; it leaves bytes to write per socket, the sockets to write this round (`dirty`), and
//! what the I/O side must do (`effects`).
//!
//! It speaks just enough of docs/protocol.md for `im-bench to` and `im-bench toall`: `/login`
//! (any password is right), `/port` (Lb connected, then `201`), `/to`, `/toall` (`/from` and
//! `/broadcastfrom` out on Lb, `303` once the `302`s are back), `/exit`. It validates nothing,
//! keeps no timers, caps nothing and has no flow control.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::process::ExitCode;

/// A relay's `main`: `NAME PORT [USERS-FILE, ignored]`, then `run(port)`; exit 2 with one line
/// on a bad port or an error.
pub fn main(name: &str, run: impl FnOnce(u16) -> io::Result<()>) -> ExitCode {
    let port = std::env::args().nth(1).map(|port| port.parse::<u16>());
    let Some(Ok(port)) = port else {
        eprintln!("usage: {name} PORT [USERS-FILE, ignored]");
        return ExitCode::from(2);
    };
    match run(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
            ExitCode::from(2)
        }
    }
}

/// Names a socket; the I/O side hands them out, never twice.
pub type Token = usize;

/// Which of a client's two connections a socket is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    La,
    Lb,
}

/// What the I/O side must do, in order.
pub enum Effect<S> {
    /// Connect to `port` at the peer address of La `session`, then report
    /// [`Relay::lb_connected`].
    ConnectLb { session: Token, port: u16 },
    /// The relay is done with this socket: close it.
    Close(S),
}

struct Socket<S> {
    stream: S,
    side: Side,
    /// The La token of the session this socket belongs to.
    session: Token,
    input: Vec<u8>,
    /// Bytes to write; the I/O side takes them from [`Relay::output`].
    output: Vec<u8>,
    /// Close once `output` is written (`/exit`).
    closing: bool,
}

/// What a `302` on someone's Lb answers.
#[derive(Clone, Copy)]
enum Waiting {
    To(Token),
    ToAll(u64),
}

struct Session {
    name: String,
    lb: Option<Token>,
    /// The requests whose deliveries this user's Lb has not acknowledged yet, in order.
    acks: VecDeque<Waiting>,
}

struct Broadcast {
    sender: Token,
    left: usize,
}

/// Every session and socket of a relay.
pub struct Relay<S> {
    sockets: HashMap<Token, Socket<S>>,
    sessions: HashMap<Token, Session>,
    by_name: HashMap<String, Token>,
    broadcasts: HashMap<u64, Broadcast>,
    next_broadcast: u64,
    /// Sockets with bytes queued this round.
    pub dirty: Vec<Token>,
    /// What the I/O side must do next.
    pub effects: Vec<Effect<S>>,
}

impl<S> Relay<S> {
    /// No sockets yet.
    pub fn new() -> Self {
        Relay {
            sockets: HashMap::new(),
            sessions: HashMap::new(),
            by_name: HashMap::new(),
            broadcasts: HashMap::new(),
            next_broadcast: 0,
            dirty: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// An accepted La is open.
    pub fn accepted(&mut self, token: Token, stream: S) {
        self.add(token, Side::La, token, stream);
    }

    fn add(&mut self, token: Token, side: Side, session: Token, stream: S) {
        let socket = Socket {
            stream,
            side,
            session,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
        };
        self.sockets.insert(token, socket);
    }

    /// The outcome of an [`Effect::ConnectLb`]: the new Lb's token, or `None` if it failed.
    pub fn lb_connected(&mut self, session: Token, lb: Option<(Token, S)>) {
        match lb {
            Some((lb, stream)) => {
                self.add(lb, Side::Lb, session, stream);
                if let Some(user) = self.sessions.get_mut(&session) {
                    user.lb = Some(lb);
                }
                self.answer(session, b"201 Build connection successful\n");
            }
            None => self.answer(session, b"202 Build connection failed\n"),
        }
    }

    /// `token`'s stream.
    pub fn stream(&mut self, token: Token) -> Option<&mut S> {
        self.sockets
            .get_mut(&token)
            .map(|socket| &mut socket.stream)
    }

    /// `token`'s stream and the bytes read from it that no line has taken yet, to append to.
    pub fn input(&mut self, token: Token) -> Option<(&mut S, &mut Vec<u8>)> {
        let socket = self.sockets.get_mut(&token)?;
        Some((&mut socket.stream, &mut socket.input))
    }

    /// `token`'s stream, the bytes to write to it, and whether it closes once they are written.
    pub fn output(&mut self, token: Token) -> Option<(&mut S, &mut Vec<u8>, bool)> {
        let socket = self.sockets.get_mut(&token)?;
        Some((&mut socket.stream, &mut socket.output, socket.closing))
    }

    /// The session `token` belongs to.
    pub fn session(&self, token: Token) -> Option<Token> {
        self.sockets.get(&token).map(|socket| socket.session)
    }

    /// Handles every whole line read from `token` so far; the session it belongs to.
    pub fn lines(&mut self, token: Token) -> Option<Token> {
        let socket = self.sockets.get_mut(&token)?;
        let input = std::mem::take(&mut socket.input);
        let (side, session) = (socket.side, socket.session);
        let mut start = 0;
        while let Some(end) = input[start..].iter().position(|&b| b == b'\n') {
            let line = &input[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match side {
                Side::La => self.request(session, line),
                Side::Lb => self.receipt(session),
            }
            start += end + 1;
        }
        if let Some(socket) = self.sockets.get_mut(&token) {
            socket.input = input[start..].to_vec();
        }
        Some(session)
    }

    fn request(&mut self, session: Token, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let (command, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match command {
            "/login" => {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                self.by_name.insert(name.clone(), session);
                self.sessions.insert(
                    session,
                    Session {
                        name,
                        lb: None,
                        acks: VecDeque::new(),
                    },
                );
                self.answer(session, b"101 Authentication successful\n");
            }
            "/port" => match rest.trim().parse::<u16>() {
                Ok(port) => self.effects.push(Effect::ConnectLb { session, port }),
                Err(_) => self.answer(session, b"202 Build connection failed\n"),
            },
            "/to" => {
                let (to, content) = rest.split_once(' ').unwrap_or((rest, ""));
                let sender = self.name(session);
                let Some(&recipient) = self.by_name.get(to) else {
                    return self.answer(session, b"304 Message delivery failed\n");
                };
                let line = format!("/from {sender} {content}\n");
                if !self.deliver(recipient, line.as_bytes(), Waiting::To(session)) {
                    self.answer(session, b"304 Message delivery failed\n");
                }
            }
            "/toall" => {
                let sender = self.name(session);
                let line = format!("/broadcastfrom {sender} {rest}\n");
                let id = self.next_broadcast;
                self.next_broadcast += 1;
                let others: Vec<Token> = self
                    .sessions
                    .keys()
                    .copied()
                    .filter(|&other| other != session)
                    .collect();
                let mut left = 0;
                for other in others {
                    if self.deliver(other, line.as_bytes(), Waiting::ToAll(id)) {
                        left += 1;
                    }
                }
                if left == 0 {
                    self.answer(session, b"303 Message delivery successful\n");
                } else {
                    self.broadcasts.insert(
                        id,
                        Broadcast {
                            sender: session,
                            left,
                        },
                    );
                }
            }
            "/exit" => {
                self.answer(session, b"310 Bye bye\n");
                if let Some(socket) = self.sockets.get_mut(&session) {
                    socket.closing = true;
                }
            }
            _ => self.answer(session, b"401 Unrecognized message\n"),
        }
    }

    fn name(&self, session: Token) -> String {
        self.sessions
            .get(&session)
            .map(|user| user.name.clone())
            .unwrap_or_default()
    }

    /// Queues `line` on `recipient`'s Lb; false if it has none.
    fn deliver(&mut self, recipient: Token, line: &[u8], waiting: Waiting) -> bool {
        let Some(user) = self.sessions.get_mut(&recipient) else {
            return false;
        };
        let Some(lb) = user.lb else { return false };
        user.acks.push_back(waiting);
        self.queue(lb, line);
        true
    }

    /// A `302` on `session`'s Lb.
    fn receipt(&mut self, session: Token) {
        let Some(waiting) = self
            .sessions
            .get_mut(&session)
            .and_then(|user| user.acks.pop_front())
        else {
            return;
        };
        match waiting {
            Waiting::To(sender) => self.answer(sender, b"303 Message delivery successful\n"),
            Waiting::ToAll(id) => {
                let Some(broadcast) = self.broadcasts.get_mut(&id) else {
                    return;
                };
                broadcast.left -= 1;
                if broadcast.left == 0 {
                    let sender = broadcast.sender;
                    self.broadcasts.remove(&id);
                    self.answer(sender, b"303 Message delivery successful\n");
                }
            }
        }
    }

    fn answer(&mut self, la: Token, line: &[u8]) {
        self.queue(la, line);
    }

    fn queue(&mut self, token: Token, bytes: &[u8]) {
        if let Some(socket) = self.sockets.get_mut(&token) {
            if socket.output.is_empty() {
                self.dirty.push(token);
            }
            socket.output.extend_from_slice(bytes);
        }
    }

    /// A socket of `session` ended or failed: the session and both its sockets go
    /// ([`Effect::Close`] for each).
    pub fn end_session(&mut self, session: Token) {
        if let Some(user) = self.sessions.remove(&session) {
            if self.by_name.get(&user.name) == Some(&session) {
                self.by_name.remove(&user.name);
            }
            if let Some(lb) = user.lb {
                self.close(lb);
            }
        }
        self.close(session);
    }

    /// Forgets `token` and hands its stream to the I/O side to close.
    fn close(&mut self, token: Token) {
        if let Some(socket) = self.sockets.remove(&token) {
            self.effects.push(Effect::Close(socket.stream));
        }
    }
}
