//! A bare relay on io_uring, to measure `im-server --runtime uring` against — not a server
//! to run.
//!
//! Its protocol is `relay/core.rs`, the same as `mio_relay`'s; only the I/O differs, and it is
//! the cheapest this workload allows on io_uring: one ring on one thread with completions run
//! only when the loop asks (`DEFER_TASKRUN`), one multishot accept, one multishot receive per
//! socket armed once into a registered buffer ring, every byte queued for a socket in one round
//! sent with one `SEND`, and one `io_uring_enter` per round that both submits and waits. It
//! keeps no timers and has no flow control; an Lb is connected with a blocking `connect` (on
//! loopback, during setup, which is not what it measures). That is the floor an io_uring
//! design can reach for CPU per delivery; BENCHMARKS.md compares the runtimes with it.
//!
//! ```text
//! cargo build --release --example uring_relay
//! target/release/examples/uring_relay 7000 &
//! target/release/im-bench to --port 7000 --users users.txt --server-pid $!
//! ```

use std::process::ExitCode;

#[path = "relay/core.rs"]
mod core;

/// The uring runtime's receive buffers: the same source file as `--runtime uring`'s.
#[cfg(target_os = "linux")]
#[path = "../../../src/runtime/uring_buffers.rs"]
mod buffers;

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    return core::main("uring_relay", linux::run);
    #[cfg(not(target_os = "linux"))]
    core::main("uring_relay", |_| {
        Err(std::io::Error::other("io_uring needs Linux"))
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::io;
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::time::Duration;

    use io_uring::{cqueue, opcode, squeue, types, IoUring};

    use crate::buffers::BufferPool;
    use crate::core::{Effect, Token};

    /// Receive buffers, as many as the uring runtime's, of its size.
    const BUFFERS: u16 = 2048;
    const ACCEPT: u64 = u64::MAX;
    const RECV: u64 = 0;
    const SEND: u64 = 1;

    /// A socket on the ring. Once the relay is done with it, it waits in `Io::closing` until
    /// neither its receive nor a send is in flight.
    struct Conn {
        token: Token,
        stream: TcpStream,
        /// The bytes of the send in flight (the kernel reads them until it completes).
        sending: Vec<u8>,
        sent: usize,
        in_send: bool,
        receiving: bool,
    }

    impl Conn {
        fn new(token: Token, stream: TcpStream) -> Conn {
            let _ = stream.set_nodelay(true);
            Conn {
                token,
                stream,
                sending: Vec::new(),
                sent: 0,
                in_send: false,
                receiving: false,
            }
        }

        fn done(&self) -> bool {
            !self.receiving && !self.in_send
        }
    }

    struct Io {
        ring: IoUring,
        /// Dropped after `ring`, as it must be.
        pool: BufferPool,
        /// Shut sockets the relay is done with, until their operations end.
        closing: HashMap<Token, Conn>,
        next_token: Token,
        /// Sockets read from this round, whose lines are handled once the round's completions
        /// are in.
        read: Vec<Token>,
    }

    type Relay = crate::core::Relay<Conn>;

    pub fn run(port: u16) -> io::Result<()> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        println!("listening on {}", listener.local_addr()?);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(4096)?;
        // SAFETY: `ring` is the field before `pool` in `Io`, so it is dropped first.
        let pool = unsafe { BufferPool::register(&ring, BUFFERS) }?;
        let mut io = Io {
            ring,
            pool,
            closing: HashMap::new(),
            next_token: 0,
            read: Vec::new(),
        };
        let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd())).build();
        io.push(accept.user_data(ACCEPT));
        let mut relay = Relay::new();
        let mut completions = Vec::new();
        loop {
            match io.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            completions.extend(
                io.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (user_data, result, flags) in completions.drain(..) {
                if user_data == ACCEPT {
                    io.accepted(&listener, result, flags, &mut relay);
                } else {
                    let token = (user_data >> 1) as Token;
                    match user_data & 1 {
                        RECV => io.received(token, result, flags, &mut relay),
                        _ => io.sent(token, result, &mut relay),
                    }
                }
            }
            for token in std::mem::take(&mut io.read) {
                relay.lines(token);
            }
            io.settle(&mut relay);
        }
    }

    impl Io {
        /// Queues `entry`, submitting first if the queue is full.
        fn push(&mut self, entry: squeue::Entry) {
            loop {
                // SAFETY: every entry points at memory that lives until its completion: the
                // pool, a connection's `sending` (kept while in flight), or nothing.
                if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                    return;
                }
                let _ = self.ring.submit();
            }
        }

        /// A new socket, its receive armed.
        fn open(&mut self, stream: TcpStream) -> Conn {
            self.next_token += 1;
            let mut conn = Conn::new(self.next_token, stream);
            self.receive(&mut conn);
            conn
        }

        fn receive(&mut self, conn: &mut Conn) {
            conn.receiving = true;
            let recv = opcode::RecvMulti::new(types::Fd(conn.stream.as_raw_fd()), 0).build();
            self.push(recv.user_data((conn.token as u64) << 1 | RECV));
        }

        /// Submits the rest of `conn.sending`.
        fn send(&mut self, conn: &mut Conn) {
            conn.in_send = true;
            let rest = &conn.sending[conn.sent..];
            let fd = types::Fd(conn.stream.as_raw_fd());
            let send = opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build();
            self.push(send.user_data((conn.token as u64) << 1 | SEND));
        }

        fn accepted(&mut self, listener: &TcpListener, result: i32, flags: u32, relay: &mut Relay) {
            if result >= 0 {
                // SAFETY: a successful accept's result is a new descriptor, owned from here.
                let conn = self.open(unsafe { TcpStream::from_raw_fd(result) });
                relay.accepted(conn.token, conn);
            }
            if !cqueue::more(flags) {
                let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd())).build();
                self.push(accept.user_data(ACCEPT));
            }
        }

        fn received(&mut self, token: Token, result: i32, flags: u32, relay: &mut Relay) {
            let buffer = cqueue::buffer_select(flags);
            let more = cqueue::more(flags);
            let ended = result == 0 || (result < 0 && result != -libc::ENOBUFS);
            if let Some((conn, input)) = relay.input(token) {
                if let (Some(id), true) = (buffer, result > 0) {
                    input.extend_from_slice(self.pool.filled(id, 0..result as usize));
                    self.read.push(token);
                }
                conn.receiving = more;
                if ended {
                    if let Some(session) = relay.session(token) {
                        relay.end_session(session);
                    }
                } else if !more {
                    if let Some(conn) = relay.stream(token) {
                        self.receive(conn);
                    }
                }
            } else if let Some(conn) = self.closing.get_mut(&token) {
                conn.receiving = more;
                if conn.done() {
                    self.closing.remove(&token);
                }
            }
            if let Some(id) = buffer {
                self.pool.give_back(id);
            }
        }

        fn sent(&mut self, token: Token, result: i32, relay: &mut Relay) {
            if let Some(conn) = relay.stream(token) {
                conn.in_send = false;
                if result < 0 {
                    if let Some(session) = relay.session(token) {
                        relay.end_session(session);
                    }
                    return;
                }
                conn.sent += result as usize;
                if conn.sent < conn.sending.len() {
                    self.send(conn);
                } else {
                    conn.sending.clear();
                    conn.sent = 0;
                    relay.dirty.push(token);
                }
            } else if let Some(conn) = self.closing.get_mut(&token) {
                conn.in_send = false;
                if conn.done() {
                    self.closing.remove(&token);
                }
            }
        }

        /// Carries out the relay's effects and sends what it queued, until neither is left.
        fn settle(&mut self, relay: &mut Relay) {
            while !relay.effects.is_empty() || !relay.dirty.is_empty() {
                for effect in std::mem::take(&mut relay.effects) {
                    match effect {
                        Effect::ConnectLb { session, port } => self.connect(session, port, relay),
                        Effect::Close(conn) => self.close(conn),
                    }
                }
                for token in std::mem::take(&mut relay.dirty) {
                    let Some((conn, output, closing)) = relay.output(token) else {
                        continue;
                    };
                    if conn.in_send {
                        continue;
                    }
                    if !output.is_empty() {
                        std::mem::swap(&mut conn.sending, output);
                        self.send(conn);
                    } else if closing {
                        if let Some(session) = relay.session(token) {
                            relay.end_session(session);
                        }
                    }
                }
            }
        }

        fn connect(&mut self, session: Token, port: u16, relay: &mut Relay) {
            let peer = relay.stream(session).map(|conn| conn.stream.peer_addr());
            let lb = match peer {
                Some(Ok(peer)) => {
                    let addr = SocketAddr::new(peer.ip(), port);
                    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
                }
                _ => None,
            };
            let lb = lb.map(|stream| {
                let conn = self.open(stream);
                (conn.token, conn)
            });
            relay.lb_connected(session, lb);
        }

        fn close(&mut self, conn: Conn) {
            // Ends the multishot receive; the descriptor closes once nothing is in flight.
            let _ = conn.stream.shutdown(Shutdown::Both);
            if !conn.done() {
                self.closing.insert(conn.token, conn);
            }
        }
    }
}
