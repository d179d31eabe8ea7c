//! A bare relay on mio, to measure `im-server` against — not a server to run.
//!
//! It speaks just enough of docs/protocol.md for `im-bench to` and `im-bench toall`: `/login`
//! (any password is right), `/port` (Lb connected, then `201`), `/to`, `/toall` (`/from` and
//! `/broadcastfrom` out on Lb, `303` once the `302`s are back), `/exit`. It validates nothing,
//! keeps no timers, caps nothing and has no flow control: one thread, one `epoll` set with
//! every socket registered once (edge-triggered, readable and writable), each readable socket
//! read until it would block, and every byte queued for a socket in one round written with one
//! `write` at the end of the round. That is the floor an epoll design can reach for CPU per
//! delivery; BENCHMARKS.md compares the runtimes with it.
//!
//! ```text
//! cargo build --release --example mio_relay
//! target/release/examples/mio_relay 7000 &
//! target/release/im-bench to --port 7000 --users users.txt --server-pid $!
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

/// Which of a client's two connections a socket is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    La,
    /// Lb, still connecting until the first writable event.
    Lb {
        connected: bool,
    },
}

struct Socket {
    stream: TcpStream,
    side: Side,
    /// The La token of the session this socket belongs to.
    session: Token,
    input: Vec<u8>,
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

struct Relay {
    poll: Poll,
    sockets: HashMap<Token, Socket>,
    sessions: HashMap<Token, Session>,
    by_name: HashMap<String, Token>,
    broadcasts: HashMap<u64, Broadcast>,
    next_broadcast: u64,
    next_token: usize,
    /// Sockets with bytes queued this round.
    dirty: Vec<Token>,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().map(|port| port.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: mio_relay PORT [USERS-FILE, ignored]");
            return ExitCode::from(2);
        }
    };
    match run(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mio_relay: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(port: u16) -> io::Result<()> {
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let mut relay = Relay {
        poll,
        sockets: HashMap::new(),
        sessions: HashMap::new(),
        by_name: HashMap::new(),
        broadcasts: HashMap::new(),
        next_broadcast: 0,
        next_token: 0,
        dirty: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        relay.poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                relay.accept(&listener)?;
                continue;
            }
            let token = event.token();
            if event.is_writable() {
                relay.writable(token);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                relay.read(token, &mut buffer);
            }
        }
        relay.flush();
    }
}

impl Relay {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn add(&mut self, mut stream: TcpStream, side: Side, session: Option<Token>) -> Token {
        let token = self.token();
        let _ = stream.set_nodelay(true);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, token, interest)
            .is_ok()
        {
            let socket = Socket {
                stream,
                side,
                session: session.unwrap_or(token),
                input: Vec::new(),
                output: Vec::new(),
                closing: false,
            };
            self.sockets.insert(token, socket);
        }
        token
    }

    fn accept(&mut self, listener: &TcpListener) -> io::Result<()> {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    self.add(stream, Side::La, None);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    fn writable(&mut self, token: Token) {
        let Some(socket) = self.sockets.get_mut(&token) else {
            return;
        };
        if socket.side == (Side::Lb { connected: false }) {
            let up = socket.stream.take_error().ok().flatten().is_none()
                && socket.stream.peer_addr().is_ok();
            socket.side = Side::Lb { connected: true };
            let session = socket.session;
            if up {
                self.answer(session, b"201 Build connection successful\n");
            } else {
                self.close(token);
                self.answer(session, b"202 Build connection failed\n");
            }
            return;
        }
        self.dirty.push(token);
    }

    fn read(&mut self, token: Token, buffer: &mut [u8]) {
        let mut ended = false;
        loop {
            let Some(socket) = self.sockets.get_mut(&token) else {
                return;
            };
            match socket.stream.read(buffer) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => socket.input.extend_from_slice(&buffer[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let Some(socket) = self.sockets.get_mut(&token) else {
            return;
        };
        let input = std::mem::take(&mut socket.input);
        let (side, session) = (socket.side, socket.session);
        let mut start = 0;
        while let Some(end) = input[start..].iter().position(|&b| b == b'\n') {
            let line = &input[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match side {
                Side::La => self.request(session, line),
                Side::Lb { .. } => self.receipt(session),
            }
            start += end + 1;
        }
        if let Some(socket) = self.sockets.get_mut(&token) {
            socket.input = input[start..].to_vec();
        }
        if ended {
            self.end_session(session);
        }
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
            "/port" => {
                let peer = self.sockets.get(&session).map(|s| s.stream.peer_addr());
                let (Some(Ok(peer)), Ok(port)) = (peer, rest.trim().parse::<u16>()) else {
                    return self.answer(session, b"202 Build connection failed\n");
                };
                match TcpStream::connect(SocketAddr::new(peer.ip(), port)) {
                    Ok(stream) => {
                        let lb = self.add(stream, Side::Lb { connected: false }, Some(session));
                        if let Some(user) = self.sessions.get_mut(&session) {
                            user.lb = Some(lb);
                        }
                    }
                    Err(_) => self.answer(session, b"202 Build connection failed\n"),
                }
            }
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

    /// Writes every socket queued this round, once each.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for token in dirty {
            let Some(socket) = self.sockets.get_mut(&token) else {
                continue;
            };
            let mut failed = false;
            while !socket.output.is_empty() {
                match socket.stream.write(&socket.output) {
                    Ok(n) => {
                        socket.output.drain(..n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let session = socket.session;
            if failed || (socket.closing && socket.output.is_empty()) {
                self.end_session(session);
            }
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut socket) = self.sockets.remove(&token) {
            let _ = self.poll.registry().deregister(&mut socket.stream);
        }
    }

    fn end_session(&mut self, session: Token) {
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
}
