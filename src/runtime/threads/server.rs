//! The std-thread server: the same [`ServerDriver`] as the async runtimes, on blocking sockets.
//!
//! One thread, the loop, owns the driver and is the only one that touches it. Per socket a
//! reader thread reads once per permit the loop hands it (the driver says when reading is
//! wanted); per connection one writer thread writes what the loop hands it, in order, blocking
//! (a slow client holds up only itself). They, the acceptor, and the short-lived Lb connect and
//! password threads report back over one bounded channel; the loop waits on it with
//! `recv_timeout` until the driver's next deadline. Write deadlines, caps, linger: all the
//! driver's: a write that takes too long is cut off by the loop shutting the socket under the
//! writer.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{read_some, recv_until, spawn};
use crate::driver::{set_keepalive, ServerCommand};
use simple_im_core::driver::{DriverAction, DriverConfig, ServerDriver, Side, SocketId};
use simple_im_core::server::{ConnId, ServerConfig};
use simple_im_core::users::Users;

/// Serves clients accepted on `listener` on this thread, doing what `commands` asks (reload,
/// stop), until a stop is done. When it returns every client socket is shut, which ends their
/// threads; the accept thread ends with the process.
pub fn serve(
    listener: TcpListener,
    users: Users,
    config: ServerConfig,
    driver: DriverConfig,
    commands: async_channel::Receiver<ServerCommand>,
) {
    let driver = DriverConfig {
        max_connections: within_map_limit(driver.max_connections),
        ..driver
    };
    let (events, inbox) = mpsc::sync_channel(driver.event_queue.max(1));
    // Accepted sockets must block, whatever the caller did with the listener.
    if let Err(error) = listener.set_nonblocking(false) {
        log::warn!("cannot make the listener blocking: {error}");
    }
    let accepted = events.clone();
    if !spawn("accept".to_owned(), None, move || {
        accept_all(listener, accepted)
    }) {
        log::error!("cannot start the accept thread; not serving");
        return;
    }
    let told = events.clone();
    spawn("commands".to_owned(), None, move || {
        // Ends when nobody can ask anything any more, or the loop is gone.
        while let Ok(command) = commands.recv_blocking() {
            if told.send(Event::Command(command)).is_err() {
                return;
            }
        }
    });
    let mut event_loop = EventLoop {
        driver: ServerDriver::new(users, config, &driver),
        conns: HashMap::new(),
        events,
        read_chunk: driver.read_chunk.max(1),
        stack: Some(driver.thread_stack),
    };
    event_loop.run(&inbox);
    for conn in event_loop.conns.values() {
        for stream in [&conn.la, &conn.lb].into_iter().flatten() {
            let _ = stream.stream.shutdown(Shutdown::Both);
        }
    }
}

/// Memory mappings one client costs (three threads, each a stack and a signal stack with
/// guard pages, and room for the Lb connect thread), and those kept for everything else.
const MAPS_PER_CLIENT: usize = 13;
const MAPS_RESERVED: usize = 1_000;

/// `max_connections`, lowered (with a warning) to what Linux's `vm.max_map_count` allows.
/// Past that a new thread cannot map its signal stack and the Rust runtime aborts the whole
/// process, so the cap must come first.
fn within_map_limit(max_connections: usize) -> usize {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
    let Ok(max_maps) = text.trim().parse::<usize>() else {
        return max_connections;
    };
    let fits = (max_maps.saturating_sub(MAPS_RESERVED) / MAPS_PER_CLIENT).max(1);
    if max_connections > fits {
        log::warn!("--max-connections {max_connections} lowered to {fits}: vm.max_map_count ({max_maps}) allows no more threads");
    }
    max_connections.min(fits)
}

/// What the other threads tell the loop.
enum Event {
    Accepted(TcpStream, SocketAddr),
    Read(SocketId, Vec<u8>),
    ReadEnded(SocketId),
    Written(SocketId, usize),
    WriteFailed(SocketId),
    /// The end of an Lb connect attempt: the stream, or `None` if it failed or timed out.
    LbConnect(ConnId, Option<TcpStream>),
    PasswordChecked(ConnId, bool),
    /// What the process asks (its signals).
    Command(ServerCommand),
}

/// What a socket's thread has finished.
enum Busy {
    Reading,
    Writing,
}

/// The loop's handles on one socket's threads.
struct Socket {
    stream: Arc<TcpStream>,
    /// One read per permit; dropping it ends the reader.
    permits: SyncSender<()>,
    reading: bool,
    writing: bool,
}

/// The loop's handles on one connection.
struct Conn {
    la: Option<Socket>,
    lb: Option<Socket>,
    /// The writer's queue; dropping it ends the writer.
    writes: Sender<(SocketId, Arc<TcpStream>, Bytes)>,
}

impl Conn {
    fn socket(&mut self, side: Side) -> &mut Option<Socket> {
        match side {
            Side::La => &mut self.la,
            Side::Lb => &mut self.lb,
        }
    }
}

struct EventLoop {
    driver: ServerDriver,
    conns: HashMap<ConnId, Conn>,
    events: SyncSender<Event>,
    read_chunk: usize,
    stack: Option<usize>,
}

impl EventLoop {
    fn run(&mut self, inbox: &Receiver<Event>) {
        loop {
            // The loop holds a sender itself, so the inbox never closes while it runs.
            let Ok(event) = recv_until(inbox, self.driver.poll_timeout()) else {
                return;
            };
            let now = Instant::now();
            match event {
                Some(Event::Command(ServerCommand::StopNow)) => {
                    let open = self.conns.len();
                    return log::info!("stopping at once: {open} connections dropped");
                }
                Some(Event::Command(ServerCommand::Stop)) => {
                    // The accept thread stays blocked in `accept`; the driver refuses what it
                    // still hands over.
                    self.driver.stop(now);
                }
                Some(Event::Command(ServerCommand::Reload(mut reload))) => {
                    // This runtime's own bound on threads holds for a new cap too.
                    reload.max_connections = within_map_limit(reload.max_connections);
                    self.driver.reload(now, *reload)
                }
                Some(event) => self.handle(now, event),
                None => self.driver.handle_timeout(now),
            }
            self.carry_out_actions();
            if self.driver.is_stopped() {
                return log::info!("stopped: every connection is closed");
            }
        }
    }

    fn handle(&mut self, now: Instant, event: Event) {
        let (socket, done) = match event {
            Event::Accepted(stream, peer) => return self.accept(now, stream, peer),
            Event::Read(socket, data) => {
                self.driver.handle_read(now, socket, &data);
                (socket, Busy::Reading)
            }
            Event::ReadEnded(socket) => return self.driver.handle_read_end(now, socket),
            Event::Written(socket, n) => {
                self.driver.handle_written(now, socket, n);
                (socket, Busy::Writing)
            }
            Event::WriteFailed(socket) => {
                self.driver.handle_write_error(now, socket);
                (socket, Busy::Writing)
            }
            Event::LbConnect(conn, stream) => return self.lb_connect_ended(now, conn, stream),
            Event::PasswordChecked(conn, ok) => {
                return self.driver.handle_password_checked(now, conn, ok)
            }
            Event::Command(_) => return,
        };
        if let Some(s) = self.socket(socket) {
            match done {
                Busy::Reading => s.reading = false,
                Busy::Writing => s.writing = false,
            }
        }
        self.service(socket);
    }

    fn socket(&mut self, socket: SocketId) -> Option<&mut Socket> {
        self.conns
            .get_mut(&socket.conn)?
            .socket(socket.side)
            .as_mut()
    }

    /// Starts a thread that reports what `job` returns; `false` if no thread could be had.
    fn report(&self, name: String, job: impl FnOnce() -> Event + Send + 'static) -> bool {
        let events = self.events.clone();
        spawn(name, self.stack, move || {
            let _ = events.send(job());
        })
    }

    fn accept(&mut self, now: Instant, stream: TcpStream, peer: SocketAddr) {
        let conn = match self.driver.accept(now, peer) {
            Ok(conn) => conn,
            // The driver has logged it, once a minute per address.
            Err(refusal) => return log::debug!("refusing a connection from {peer}: {refusal}"),
        };
        let (writes, queue) = mpsc::channel();
        let events = self.events.clone();
        let writer = move || write_all_jobs(queue, events);
        let started = spawn(format!("{conn} writer"), self.stack, writer);
        let la = started.then(|| self.start_socket(SocketId::la(conn), stream));
        match la.flatten() {
            Some(la) => {
                let (la, lb) = (Some(la), None);
                self.conns.insert(conn, Conn { la, lb, writes });
            }
            // No thread to be had: the client is dropped as if it had gone.
            None => self.driver.handle_read_end(now, SocketId::la(conn)),
        }
    }

    /// Starts the reader of a new socket.
    fn start_socket(&self, socket: SocketId, stream: TcpStream) -> Option<Socket> {
        if let Err(error) = stream.set_nodelay(true) {
            log::debug!("{socket}: cannot set TCP_NODELAY: {error}");
        }
        if let Err(error) = set_keepalive((&stream).into(), self.driver.keepalive()) {
            log::warn!("{socket}: cannot set TCP keepalive: {error}");
        }
        let stream = Arc::new(stream);
        let (permits, permitted) = mpsc::sync_channel(1);
        let (reader, events, chunk) = (Arc::clone(&stream), self.events.clone(), self.read_chunk);
        let body = move || read_per_permit(socket, &reader, &permitted, &events, chunk);
        spawn(format!("{socket}"), self.stack, body).then_some(Socket {
            stream,
            permits,
            reading: false,
            writing: false,
        })
    }

    fn lb_connect_ended(&mut self, now: Instant, conn: ConnId, stream: Option<TcpStream>) {
        let Some(stream) = stream else {
            return self.driver.handle_lb_connect_failed(now, conn);
        };
        // A connection closed meanwhile: the stream is dropped (closed) here.
        if !self.conns.contains_key(&conn) || !self.driver.handle_lb_connected(now, conn) {
            return;
        }
        let socket = SocketId::lb(conn);
        match self.start_socket(socket, stream) {
            Some(lb) => {
                if let Some(entry) = self.conns.get_mut(&conn) {
                    entry.lb = Some(lb);
                }
                self.service(socket);
            }
            None => self.driver.handle_read_end(now, socket),
        }
    }

    /// Hands the socket's threads what the driver has for them: the next bytes to write, a
    /// permit to read.
    fn service(&mut self, socket: SocketId) {
        let Some(entry) = self.conns.get_mut(&socket.conn) else {
            return;
        };
        let writes = entry.writes.clone();
        let Some(s) = entry.socket(socket.side) else {
            return;
        };
        if !s.writing {
            if let Some(bytes) = self.driver.poll_transmit(socket) {
                s.writing = true;
                // A writer that has ended has reported why.
                let _ = writes.send((socket, Arc::clone(&s.stream), bytes));
            }
        }
        if !s.reading && self.driver.wants_read(socket) {
            s.reading = s.permits.try_send(()).is_ok();
        }
    }

    fn carry_out_actions(&mut self) {
        while let Some(action) = self.driver.poll_action() {
            match action {
                DriverAction::Wake(socket) => self.service(socket),
                DriverAction::Connect {
                    conn,
                    addr,
                    timeout,
                } => {
                    let attempt = move || {
                        let stream = TcpStream::connect_timeout(&addr, timeout);
                        let stream = stream.map_err(|e| log::info!("{conn} Lb to {addr}: {e}"));
                        Event::LbConnect(conn, stream.ok())
                    };
                    if !self.report(format!("{conn} Lb connect"), attempt) {
                        self.driver.handle_lb_connect_failed(Instant::now(), conn);
                    }
                }
                DriverAction::CheckPassword(conn, check) => {
                    let job = move || Event::PasswordChecked(conn, check.run());
                    // No thread to be had: the login fails rather than hang.
                    if !self.report(format!("{conn} password check"), job) {
                        let now = Instant::now();
                        self.driver.handle_password_checked(now, conn, false);
                    }
                }
                // A single server (`im-server` runs a cluster node on smol only) makes none.
                DriverAction::Cluster(_) => {}
                DriverAction::ShutdownWrite(socket) => self.shutdown(socket, Shutdown::Write),
                DriverAction::ShutdownBoth(socket) => self.shutdown(socket, Shutdown::Both),
                DriverAction::Release(socket) => {
                    self.shutdown(socket, Shutdown::Both);
                    if let Some(entry) = self.conns.get_mut(&socket.conn) {
                        entry.socket(socket.side).take();
                        if entry.la.is_none() && entry.lb.is_none() {
                            self.conns.remove(&socket.conn);
                        }
                    }
                }
            }
        }
    }

    fn shutdown(&mut self, socket: SocketId, how: Shutdown) {
        if let Some(s) = self.socket(socket) {
            let _ = s.stream.shutdown(how);
        }
        // A lingering socket is read until the peer's end.
        self.service(socket);
    }
}

/// Accepts clients for as long as the loop runs.
fn accept_all(listener: TcpListener, events: SyncSender<Event>) {
    loop {
        let event = match listener.accept() {
            Ok((stream, peer)) => Event::Accepted(stream, peer),
            Err(error) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                log::warn!("cannot accept a connection: {error}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// Reads `stream` once per permit until end of file, an error, or the permits end.
fn read_per_permit(
    socket: SocketId,
    stream: &TcpStream,
    permits: &Receiver<()>,
    events: &SyncSender<Event>,
    chunk: usize,
) {
    let mut buffer = vec![0; chunk];
    while permits.recv().is_ok() {
        let event = match read_some(stream, &mut buffer) {
            Ok(0) => Event::ReadEnded(socket),
            Ok(n) => Event::Read(socket, buffer[..n].to_vec()),
            Err(error) => {
                log::debug!("{socket}: read failed: {error}");
                Event::ReadEnded(socket)
            }
        };
        let ended = matches!(event, Event::ReadEnded(_));
        if events.send(event).is_err() || ended {
            return;
        }
    }
}

/// Writes each job in full, in order, and reports it, until the queue ends.
fn write_all_jobs(jobs: Receiver<(SocketId, Arc<TcpStream>, Bytes)>, events: SyncSender<Event>) {
    for (socket, stream, bytes) in jobs {
        let event = match (&*stream).write_all(&bytes) {
            Ok(()) => Event::Written(socket, bytes.len()),
            Err(error) => {
                log::debug!("{socket}: write failed: {error}");
                Event::WriteFailed(socket)
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}
