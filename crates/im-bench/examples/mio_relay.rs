//! A bare relay on mio, to measure `im-server` against — not a server to run.
//!
//! Its protocol is `relay/core.rs` (shared with `uring_relay`): just enough for `im-bench to`
//! and `im-bench toall`, validating nothing, with no timers, caps or flow control. Its I/O is
//! one thread, one `epoll` set with every socket registered once (edge-triggered, readable and
//! writable), each readable socket read until it would block, and every byte queued for a
//! socket in one round written with one `write` at the end of the round. That is the floor an
//! epoll design can reach for CPU per delivery; BENCHMARKS.md compares the runtimes with it.
//!
//! ```text
//! cargo build --release --example mio_relay
//! target/release/examples/mio_relay 7000 &
//! target/release/im-bench to --port 7000 --users users.txt --server-pid $!
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[path = "relay/core.rs"]
mod core;

use core::{Effect, Relay};

const LISTENER: Token = Token(usize::MAX);

/// The poller, and the Lbs still connecting (with the La they belong to).
struct Io {
    poll: Poll,
    connecting: HashMap<Token, (TcpStream, Token)>,
    next_token: usize,
}

fn main() -> ExitCode {
    core::main("mio_relay", run)
}

fn run(port: u16) -> io::Result<()> {
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let mut io = Io {
        poll,
        connecting: HashMap::new(),
        next_token: 0,
    };
    let mut relay = Relay::new();
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0; 64 * 1024];
    loop {
        io.poll.poll(&mut events, None)?;
        for event in &events {
            let token = event.token();
            if token == LISTENER {
                io.accept(&listener, &mut relay)?;
                continue;
            }
            if event.is_writable() {
                io.writable(token, &mut relay);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read(token, &mut relay, &mut buffer);
            }
            io.carry_out(&mut relay);
        }
        io.flush(&mut relay);
    }
}

/// Reads `token` until it would block, then hands the relay its lines.
fn read(token: Token, relay: &mut Relay<TcpStream>, buffer: &mut [u8]) {
    let Some((stream, input)) = relay.input(token.0) else {
        return;
    };
    let mut ended = false;
    loop {
        match stream.read(buffer) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => input.extend_from_slice(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    if let (Some(session), true) = (relay.lines(token.0), ended) {
        relay.end_session(session);
    }
}

impl Io {
    fn register(&mut self, stream: &mut TcpStream) -> Option<Token> {
        self.next_token += 1;
        let token = Token(self.next_token);
        let _ = stream.set_nodelay(true);
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(stream, token, interest)
            .ok()?;
        Some(token)
    }

    fn accept(&mut self, listener: &TcpListener, relay: &mut Relay<TcpStream>) -> io::Result<()> {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if let Some(token) = self.register(&mut stream) {
                        relay.accepted(token.0, stream);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// A connecting Lb's first writable event says whether it connected; any other socket's
    /// says there is room to write again.
    fn writable(&mut self, token: Token, relay: &mut Relay<TcpStream>) {
        let Some((mut stream, session)) = self.connecting.remove(&token) else {
            relay.dirty.push(token.0);
            return;
        };
        if stream.take_error().ok().flatten().is_none() && stream.peer_addr().is_ok() {
            relay.lb_connected(session.0, Some((token.0, stream)));
        } else {
            let _ = self.poll.registry().deregister(&mut stream);
            relay.lb_connected(session.0, None);
        }
    }

    fn carry_out(&mut self, relay: &mut Relay<TcpStream>) {
        for effect in std::mem::take(&mut relay.effects) {
            match effect {
                Effect::ConnectLb { session, port } => {
                    let peer = relay.stream(session).map(|stream| stream.peer_addr());
                    let Some(Ok(peer)) = peer else {
                        relay.lb_connected(session, None);
                        continue;
                    };
                    let Ok(mut stream) = TcpStream::connect(SocketAddr::new(peer.ip(), port))
                    else {
                        relay.lb_connected(session, None);
                        continue;
                    };
                    match self.register(&mut stream) {
                        Some(lb) => {
                            self.connecting.insert(lb, (stream, Token(session)));
                        }
                        None => relay.lb_connected(session, None),
                    }
                }
                Effect::Close(mut stream) => {
                    let _ = self.poll.registry().deregister(&mut stream);
                }
            }
        }
    }

    /// Writes every socket queued this round, once each.
    fn flush(&mut self, relay: &mut Relay<TcpStream>) {
        for token in std::mem::take(&mut relay.dirty) {
            let Some((stream, output, closing)) = relay.output(token) else {
                continue;
            };
            let mut failed = false;
            while !output.is_empty() {
                match stream.write(output) {
                    Ok(n) => {
                        output.drain(..n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed || (closing && output.is_empty()) {
                if let Some(session) = relay.session(token) {
                    relay.end_session(session);
                }
            }
        }
        self.carry_out(relay);
    }
}
