//! The std-thread server adapter: the same [`Server`] as the smol one, on blocking sockets, with
//! the same behaviour on the wire. It decides nothing about the protocol.
//!
//! Threads, per client: a reader for La, a reader for Lb once it is connected, and one writer
//! for both (it writes one client's bytes in order, so a slow client holds up only itself).
//! Beside them: an accept thread, a short-lived thread per Lb connect attempt, and the event
//! loop, the only thread that touches the [`Server`]. Readers, writers and the acceptor send it
//! `Event`s over one bounded channel (a reader waits while it is full); the loop hands bytes
//! to a writer over an unbounded channel whose bytes [`RuntimeConfig::max_unwritten`] bounds, and
//! grants La reads over a channel of one, so it never waits on a peer.
//!
//! Closing is as in the smol adapter: on [`Output::Close`] the writer writes what is queued
//! (all of it within one [`RuntimeConfig::write_timeout`]), shuts the sending side, and waits
//! for the peer to close its end (or [`RuntimeConfig::close_linger`]) while the readers discard
//! what still comes; only then are the sockets shut. So the last answer (`310`, `202`, `102`)
//! is not destroyed by a reset before the client reads it.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{read_some, spawn};
use crate::runtime::{ConnectionLimits, RuntimeConfig, Side};
use crate::server::{ConnId, Input, Output, Server, ServerConfig};
use crate::users::{PasswordCheck, Users};

/// Serves clients accepted on `listener` on this thread until `shutdown` returns (it runs on
/// a thread of its own; a blocking wait for a signal, say).
///
/// When it returns every client socket is shut, which ends their threads; the accept thread
/// ends with the process.
pub fn serve(
    listener: TcpListener,
    users: Users,
    config: ServerConfig,
    runtime: RuntimeConfig,
    shutdown: impl FnOnce() + Send + 'static,
) {
    let runtime = RuntimeConfig {
        max_connections: within_map_limit(runtime.max_connections),
        ..runtime
    };
    let (events, inbox) = mpsc::sync_channel(runtime.event_queue.max(1));
    // Accepted sockets must block, whatever the caller did with the listener.
    if let Err(error) = listener.set_nonblocking(false) {
        log::warn!("cannot make the listener blocking: {error}");
    }
    let accepted = events.clone();
    if !spawn("accept".to_owned(), None, move || {
        accept_connections(listener, accepted)
    }) {
        log::error!("cannot start the accept thread; not serving");
        return;
    }
    let stop = events.clone();
    spawn("shutdown".to_owned(), None, move || {
        shutdown();
        let _ = stop.send(Event::Shutdown);
    });
    let mut event_loop = EventLoop {
        server: Server::new(users, config),
        conns: HashMap::new(),
        events,
        limits: ConnectionLimits::from_config(&runtime),
        runtime,
        later: Vec::new(),
    };
    event_loop.run(&inbox);
    // Readers that still send find the channel gone and stop; shut sockets wake the others.
    drop(inbox);
    for (_, conn) in event_loop.conns.drain() {
        conn.shut();
    }
}

/// Memory mappings one client costs: three threads, each with a stack and a signal stack, each
/// of those with a guard page; 13 rather than 12 leaves room for Lb connect threads (measured:
/// 65,530 mappings ran out at about 5,450 clients).
const MAPS_PER_CLIENT: usize = 13;

/// Mappings left for everything else: the binary, its libraries, the allocator's arenas.
const MAPS_RESERVED: usize = 1_000;

/// `max_connections`, lowered (with a warning) to what Linux's `vm.max_map_count` allows.
/// Past that a new thread cannot map its signal stack and the Rust runtime aborts the whole
/// process, so the cap must come first.
fn within_map_limit(max_connections: usize) -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/sys/vm/max_map_count") else {
        return max_connections;
    };
    let Ok(max_maps) = text.trim().parse::<usize>() else {
        return max_connections;
    };
    let fits = (max_maps.saturating_sub(MAPS_RESERVED) / MAPS_PER_CLIENT).max(1);
    if max_connections <= fits {
        return max_connections;
    }
    log::warn!(
        "--max-connections {max_connections} lowered to {fits}: vm.max_map_count ({max_maps}) \
         allows no more clients of the threads runtime"
    );
    fits
}

/// What the other threads tell the event loop.
enum Event {
    /// The listener accepted a client.
    Accepted(TcpStream, SocketAddr),
    /// Bytes read from a socket.
    Data(ConnId, Side, Vec<u8>),
    /// A socket reached end of file or failed.
    Closed(ConnId, Side),
    /// The end of an Lb connect attempt: the stream, or `None` if it failed or timed out.
    LbConnect(ConnId, Option<TcpStream>),
    /// The result of an [`Output::CheckPassword`] run on a thread of its own.
    PasswordChecked(ConnId, bool),
    /// The `shutdown` of [`serve`] returned.
    Shutdown,
}

/// What the event loop hands a client's writer.
enum Job {
    /// Lb is connected: this is where [`Side::Lb`] bytes go from now on.
    Lb(Arc<TcpStream>),
    /// Bytes to write.
    Write(Side, Bytes),
}

/// The loop's handles on one open connection. Dropping them is how [`Output::Close`] is done:
/// the writer finds its queue closed once it has written it, and finishes closing.
struct Conn {
    /// The client's address, counted in [`ConnectionLimits`] until the connection closes.
    peer_ip: IpAddr,
    /// The writer's queue.
    jobs: Sender<Job>,
    /// Grants La's reader one read each.
    grants: SyncSender<()>,
    /// What the connection's threads and the loop share.
    shared: Arc<Shared>,
    la: Arc<TcpStream>,
    /// Lb, once connected.
    lb: Option<Arc<TcpStream>>,
    /// For Lb's reader: the writer waits for every reader's token to be dropped.
    reader_token: Sender<()>,
}

impl Conn {
    /// Shuts both sockets at once, for when the server stops.
    fn shut(&self) {
        let _ = self.la.shutdown(Shutdown::Both);
        if let Some(lb) = &self.lb {
            let _ = lb.shutdown(Shutdown::Both);
        }
    }
}

/// The thread that owns the [`Server`] and carries out its outputs.
struct EventLoop {
    server: Server,
    conns: HashMap<ConnId, Conn>,
    events: SyncSender<Event>,
    limits: ConnectionLimits,
    runtime: RuntimeConfig,
    /// Events found while carrying out outputs (a socket found closed, a failed start), to be
    /// handled next: the loop never sends to its own channel, which could be full.
    later: Vec<Event>,
}

impl EventLoop {
    /// Carries out outputs, then waits for the next event or deadline, until shutdown.
    fn run(&mut self, inbox: &Receiver<Event>) {
        loop {
            self.carry_out_outputs();
            let event = match self.server.poll_timeout() {
                Some(at) => {
                    match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(event) => Some(event),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                // The loop holds a sender itself, so the inbox never closes while it runs.
                None => match inbox.recv() {
                    Ok(event) => Some(event),
                    Err(_) => return,
                },
            };
            let now = Instant::now();
            match event {
                Some(Event::Shutdown) => return,
                Some(event) => self.handle_event(now, event),
                None => {}
            }
            self.server.handle_timeout(now);
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Accepted(stream, peer) => self.accept(now, stream, peer),
            Event::Data(conn, Side::La, data) => {
                self.server.handle_input(now, Input::LaData(conn, &data));
            }
            Event::Data(conn, Side::Lb, data) => {
                self.server.handle_input(now, Input::LbData(conn, &data));
            }
            Event::Closed(conn, side) => self.server.handle_input(now, side.closed(conn)),
            Event::LbConnect(conn, stream) => self.lb_connect_ended(now, conn, stream),
            Event::PasswordChecked(conn, correct) => {
                self.server
                    .handle_input(now, Input::PasswordChecked(conn, correct));
            }
            Event::Shutdown => {}
        }
    }

    /// Drains [`Server::poll_output`], handling the events found on the way, until there is
    /// nothing left to do.
    fn carry_out_outputs(&mut self) {
        loop {
            while let Some(output) = self.server.poll_output() {
                self.carry_out(output);
            }
            if self.later.is_empty() {
                return;
            }
            let now = Instant::now();
            for event in std::mem::take(&mut self.later) {
                self.handle_event(now, event);
            }
        }
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::ReadLa(conn) => {
                if let Some(entry) = self.conns.get(&conn) {
                    // Full: a grant is already waiting, which comes to the same. Closed: the
                    // reader has ended and reports why itself.
                    let _ = entry.grants.try_send(());
                }
            }
            Output::SendLa(conn, bytes) => self.send(conn, Side::La, bytes),
            Output::SendLb(conn, bytes) => self.send(conn, Side::Lb, bytes),
            Output::ConnectLb(conn, addr) => self.connect_lb(conn, addr),
            Output::CheckPassword(conn, check) => self.check_password(conn, check),
            Output::Close(conn) => {
                if let Some(entry) = self.conns.remove(&conn) {
                    // Before the queue closes, so the writer flushes against one deadline.
                    entry.shared.closing.store(true, Ordering::Release);
                    self.limits.release(entry.peer_ip);
                    log::debug!("{conn} closing");
                }
            }
        }
    }

    /// Queues bytes for the client's writer, or takes the socket for closed if it cannot keep up.
    fn send(&mut self, conn: ConnId, side: Side, bytes: Bytes) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        if side == Side::Lb && entry.lb.is_none() {
            log::warn!("{conn} has no {side} to write to");
            self.later.push(Event::Closed(conn, side));
            return;
        }
        let unwritten = entry.shared.unwritten(side);
        if unwritten > 0 && unwritten + bytes.len() > self.runtime.max_unwritten {
            log::warn!("{conn} does not read its {side} fast enough; disconnecting it");
            self.later.push(Event::Closed(conn, side));
            return;
        }
        entry.shared.add(side, bytes.len());
        if entry.jobs.send(Job::Write(side, bytes)).is_err() {
            // The writer has ended; it reports why itself, and saying it twice is harmless.
            self.later.push(Event::Closed(conn, side));
        }
    }

    fn accept(&mut self, now: Instant, stream: TcpStream, peer: SocketAddr) {
        if let Err(refusal) = self.limits.admit(peer.ip()) {
            // Dropping the stream closes it: the client sees the end at once.
            log::warn!("refusing a connection from {peer}: {refusal}");
            return;
        }
        if let Err(error) = stream.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY for {peer}: {error}");
        }
        let conn = self.server.accept(now, peer);
        log::info!("{conn} connected from {peer}");
        let la = Arc::new(stream);
        let shared = Arc::new(Shared::default());
        let (jobs, queued) = mpsc::channel();
        let (reader_token, readers) = mpsc::channel();
        let (grants, granted) = mpsc::sync_channel(1);
        let writer = Writer {
            conn,
            la: Arc::clone(&la),
            lb: None,
            jobs: queued,
            shared: Arc::clone(&shared),
            events: self.events.clone(),
            readers,
            write_timeout: self.runtime.write_timeout,
            close_linger: self.runtime.close_linger,
        };
        let reader = self.reader(conn, Side::La, &la, &shared, &reader_token);
        let stack = Some(self.runtime.thread_stack);
        let started = spawn(format!("{conn} writer"), stack, move || writer.run())
            && spawn(format!("{conn} La"), stack, move || {
                reader.run(Some(granted))
            });
        if !started {
            // Never counted as open, so the core's `Close` finds nothing to release.
            self.limits.release(peer.ip());
            self.later.push(Event::Closed(conn, Side::La));
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                peer_ip: peer.ip(),
                jobs,
                grants,
                shared,
                la,
                lb: None,
                reader_token,
            },
        );
    }

    fn reader(
        &self,
        conn: ConnId,
        side: Side,
        stream: &Arc<TcpStream>,
        shared: &Arc<Shared>,
        token: &Sender<()>,
    ) -> Reader {
        Reader {
            conn,
            side,
            stream: Arc::clone(stream),
            events: self.events.clone(),
            shared: Arc::clone(shared),
            _token: token.clone(),
            read_chunk: self.runtime.read_chunk.max(1),
        }
    }

    /// Starts connecting Lb on a thread of its own, bounded by the connect timeout.
    fn connect_lb(&mut self, conn: ConnId, addr: SocketAddr) {
        let events = self.events.clone();
        let timeout = self.server.config().connect_timeout;
        let attempt = move || {
            let stream = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|error| log::info!("{conn} cannot connect Lb to {addr}: {error}"))
                .ok();
            let _ = events.send(Event::LbConnect(conn, stream));
        };
        let stack = Some(self.runtime.thread_stack);
        if !spawn(format!("{conn} Lb connect"), stack, attempt) {
            self.later.push(Event::LbConnect(conn, None));
        }
    }

    /// Runs an argon2 check on a thread of its own (with the default stack: argon2 is not one
    /// of the small per-socket jobs), so the loop serves everyone else meanwhile.
    fn check_password(&mut self, conn: ConnId, check: PasswordCheck) {
        let events = self.events.clone();
        let job = move || {
            let _ = events.send(Event::PasswordChecked(conn, check.run()));
        };
        if !spawn(format!("{conn} password check"), None, job) {
            // No thread to be had: the login fails rather than hang.
            self.later.push(Event::PasswordChecked(conn, false));
        }
    }

    fn lb_connect_ended(&mut self, now: Instant, conn: ConnId, stream: Option<TcpStream>) {
        // A connection closed meanwhile: the stream, if any, is dropped (closed) here.
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let Some(stream) = stream else {
            self.server.handle_input(now, Input::LbConnectFailed(conn));
            return;
        };
        if entry.lb.is_some() {
            return;
        }
        if let Err(error) = stream.set_nodelay(true) {
            log::debug!("{conn} cannot set TCP_NODELAY on Lb: {error}");
        }
        let lb = Arc::new(stream);
        let reader = self.reader(conn, Side::Lb, &lb, &entry.shared, &entry.reader_token);
        let stack = Some(self.runtime.thread_stack);
        if !spawn(format!("{conn} Lb"), stack, move || reader.run(None)) {
            self.server.handle_input(now, Input::LbConnectFailed(conn));
            return;
        }
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        // If the writer has ended, it has reported the connection closed already.
        let _ = entry.jobs.send(Job::Lb(Arc::clone(&lb)));
        entry.lb = Some(lb);
        log::debug!("{conn} Lb connected");
        self.server.handle_input(now, Input::LbConnected(conn));
    }
}

/// Accepts clients for as long as the event loop runs.
fn accept_connections(listener: TcpListener, events: SyncSender<Event>) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if events.send(Event::Accepted(stream, peer)).is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                log::warn!("cannot accept a connection: {error}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a connection's threads and the event loop share.
#[derive(Default)]
struct Shared {
    /// Set when the core has closed the connection.
    closing: AtomicBool,
    unwritten: Mutex<Unwritten>,
    /// Notified when La's bytes are all written or the writer has ended.
    la_drained: Condvar,
}

/// The bytes handed to the writer and not yet written, per socket.
#[derive(Default)]
struct Unwritten {
    la: usize,
    lb: usize,
    writer_ended: bool,
}

impl Unwritten {
    fn side(&mut self, side: Side) -> &mut usize {
        match side {
            Side::La => &mut self.la,
            Side::Lb => &mut self.lb,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Unwritten> {
        // The counters stay meaningful even if a thread panicked while holding them.
        self.unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn unwritten(&self, side: Side) -> usize {
        *self.lock().side(side)
    }

    fn add(&self, side: Side, len: usize) {
        *self.lock().side(side) += len;
    }

    fn written(&self, side: Side, len: usize) {
        let mut unwritten = self.lock();
        let left = unwritten.side(side);
        *left = left.saturating_sub(len);
        if side == Side::La && *left == 0 {
            self.la_drained.notify_all();
        }
    }

    fn writer_ended(&self) {
        self.lock().writer_ended = true;
        self.la_drained.notify_all();
    }

    /// Waits until every La byte handed to the writer is written; `false` if the writer has
    /// ended instead (the connection is closing).
    fn wait_la_drained(&self) -> bool {
        let mut unwritten = self.lock();
        while unwritten.la > 0 && !unwritten.writer_ended {
            unwritten = self
                .la_drained
                .wait(unwritten)
                .unwrap_or_else(PoisonError::into_inner);
        }
        !unwritten.writer_ended
    }
}

/// Writes one client's bytes, each write bounded in time, then finishes closing its sockets.
struct Writer {
    conn: ConnId,
    la: Arc<TcpStream>,
    lb: Option<Arc<TcpStream>>,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    events: SyncSender<Event>,
    /// Closes once every reader of the connection has ended.
    readers: Receiver<()>,
    write_timeout: Duration,
    close_linger: Duration,
}

impl Writer {
    fn run(mut self) {
        let failed = self.write_jobs();
        self.shared.writer_ended();
        match failed {
            Some(side) => {
                self.shut(Shutdown::Both);
                let _ = self.events.send(Event::Closed(self.conn, side));
            }
            None => self.finish_closing(),
        }
    }

    /// Writes until the queue is closed and empty; on a failed or timed-out write, returns the
    /// socket it failed on.
    fn write_jobs(&mut self) -> Option<Side> {
        // Once the connection is closed, everything still queued shares one deadline.
        let mut flush_deadline = None;
        while let Ok(job) = self.jobs.recv() {
            let (side, bytes) = match job {
                Job::Lb(lb) => {
                    self.lb = Some(lb);
                    continue;
                }
                Job::Write(side, bytes) => (side, bytes),
            };
            if flush_deadline.is_none() && self.shared.closing() {
                flush_deadline = Some(Instant::now() + self.write_timeout);
            }
            let deadline = flush_deadline.unwrap_or_else(|| Instant::now() + self.write_timeout);
            let stream = match side {
                Side::La => Some(&self.la),
                Side::Lb => self.lb.as_ref(),
            };
            let written = match stream {
                Some(stream) => write_before(stream, &bytes, deadline),
                None => Err(ErrorKind::NotConnected.into()),
            };
            let conn = self.conn;
            match written {
                Ok(()) => self.shared.written(side, bytes.len()),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    log::info!("{conn} {side}: write timed out");
                    return Some(side);
                }
                Err(error) => {
                    log::debug!("{conn} {side}: write failed: {error}");
                    return Some(side);
                }
            }
        }
        None
    }

    /// The connection is closed and its last bytes written: ends the sending side, lets the
    /// readers discard what the peer still sends until it closes its end or the linger time
    /// passes, then shuts the sockets. Closing a socket with unread input resets it, and a
    /// reset can destroy the last answer (`310`, `202`) before the peer reads it.
    fn finish_closing(&self) {
        self.shut(Shutdown::Write);
        let give_up = Instant::now() + self.close_linger;
        // Nobody sends on this channel: it only closes, when the last reader ends.
        while let Ok(()) = self
            .readers
            .recv_timeout(give_up.saturating_duration_since(Instant::now()))
        {}
        self.shut(Shutdown::Both);
    }

    fn shut(&self, how: Shutdown) {
        let _ = self.la.shutdown(how);
        if let Some(lb) = &self.lb {
            let _ = lb.shutdown(how);
        }
    }
}

/// Writes all of `bytes` unless `deadline` passes first.
fn write_before(stream: &TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        let mut writer = stream;
        match writer.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Reads one socket and reports what came, until end of file, an error, or the close.
struct Reader {
    conn: ConnId,
    side: Side,
    stream: Arc<TcpStream>,
    events: SyncSender<Event>,
    shared: Arc<Shared>,
    /// Dropped when the reader ends, which tells the writer it may finish closing.
    _token: Sender<()>,
    read_chunk: usize,
}

impl Reader {
    /// Reads once per grant (or continuously without `grants`). A grant is used only once the
    /// writer has written La's answers, so a peer that does not read is not read either. Once
    /// the connection is closed, reads on and discards until the peer or the writer ends it.
    fn run(self, grants: Option<Receiver<()>>) {
        let (conn, side) = (self.conn, self.side);
        let mut buffer = vec![0; self.read_chunk];
        loop {
            if let Some(grants) = &grants {
                // The loop dropping the grants' sender is how it closes the connection.
                if grants.recv().is_err() || !self.shared.wait_la_drained() {
                    break;
                }
            }
            let event = match read_some(&self.stream, &mut buffer) {
                Ok(0) => {
                    log::debug!("{conn} {side}: end of file");
                    Event::Closed(conn, side)
                }
                Err(error) => {
                    log::debug!("{conn} {side}: read failed: {error}");
                    Event::Closed(conn, side)
                }
                Ok(n) => Event::Data(conn, side, buffer[..n].to_vec()),
            };
            if self.shared.closing() {
                break;
            }
            let ended = matches!(event, Event::Closed(..));
            if self.events.send(event).is_err() || ended {
                return;
            }
        }
        while let Ok(1..) = read_some(&self.stream, &mut buffer) {}
    }
}
