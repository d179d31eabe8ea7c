//! The smol server adapter: it carries bytes between sockets and the sans-IO [`Server`], and
//! decides nothing about the protocol.
//!
//! One event-loop task owns the [`Server`]. An accept task and one reader task per socket send
//! `Event`s to it over one bounded channel; one writer task per socket takes the bytes to write
//! from a queue of its own. The loop never waits on a peer: it hands work over with `try_send`
//! only, and a socket whose unwritten bytes pass [`RuntimeConfig::max_unwritten`] is taken for
//! closed, so one slow client cannot hold up the others or grow the server's memory.
//!
//! La is read once per [`Output::ReadLa`] grant, which is how the core holds back a client that
//! sends ahead, and only once the answers to what was read before are written, so a client that
//! does not read its answers is held back by TCP as well. Lb is read continuously. [`Output::Close`] lets both writers flush what is queued,
//! then each socket is shut down after the peer closes its end (or [`RuntimeConfig::close_linger`]
//! has passed), so the last answer (`310`, `202`, `102`) reaches the client before it sees the end.
//!
//! A client accepted over [`RuntimeConfig::max_connections`] or [`RuntimeConfig::max_per_ip`]
//! (counted by [`ConnectionLimits`]) is closed at once, before the core hears of it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Timer};

use super::{ConnectionLimits, Side};
use crate::server::{ConnId, Input, Output, Server, ServerConfig};
use crate::users::Users;

// Kept here too: it was first defined in this module.
pub use super::RuntimeConfig;

/// Serves clients accepted on `listener` until `shutdown` completes.
///
/// Every task it starts runs on an executor local to this call, so when it returns every
/// connection is dropped (closed) with it.
pub async fn serve(
    listener: TcpListener,
    users: Users,
    config: ServerConfig,
    runtime: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let executor = Executor::new();
    let (events, inbox) = async_channel::bounded(runtime.event_queue.max(1));
    executor
        .spawn(accept_connections(listener, events.clone()))
        .detach();
    let mut event_loop = EventLoop {
        server: Server::new(users, config),
        conns: HashMap::new(),
        executor: &executor,
        events,
        limits: ConnectionLimits::from_config(&runtime),
        runtime,
        closed: Vec::new(),
    };
    executor
        .run(future::or(event_loop.run(inbox), shutdown))
        .await;
}

/// What the tasks tell the event loop.
enum Event {
    /// The listener accepted a client.
    Accepted(TcpStream, SocketAddr),
    /// Bytes read from a socket.
    Data(ConnId, Side, Vec<u8>),
    /// A socket reached end of file or failed.
    Closed(ConnId, Side),
    /// The end of an Lb connect attempt: the stream, or `None` if it failed or timed out.
    LbConnect(ConnId, Option<TcpStream>),
}

/// The loop's handles on one open connection. Dropping them is how [`Output::Close`] is done:
/// the writers flush what is queued and the readers stop.
struct Conn {
    /// The client's address, counted in [`ConnectionLimits`] until the connection closes.
    peer_ip: IpAddr,
    /// La's writer.
    la: Outbox,
    /// Grants La's reader one read each.
    grants: Sender<()>,
    /// Lb's writer, once Lb is connected.
    lb: Option<Outbox>,
    /// Never sent on: it closes when this is dropped, which tells the readers to stop.
    _closing: Sender<()>,
    /// The other end of `_closing`, for Lb's reader once Lb is connected.
    closing: Receiver<()>,
}

/// The task that owns the [`Server`] and carries out its outputs.
struct EventLoop<'ex> {
    server: Server,
    conns: HashMap<ConnId, Conn>,
    executor: &'ex Executor<'static>,
    events: Sender<Event>,
    limits: ConnectionLimits,
    runtime: RuntimeConfig,
    /// Sockets found closed while carrying out outputs, to be fed to the server next.
    closed: Vec<(ConnId, Side)>,
}

impl EventLoop<'_> {
    /// Carries out outputs, then waits for the next event or deadline, forever.
    async fn run(&mut self, inbox: Receiver<Event>) {
        loop {
            self.carry_out_outputs();
            let next = async { inbox.recv().await.map(Some) };
            let event = match self.server.poll_timeout() {
                Some(at) => {
                    let deadline = async {
                        Timer::at(at).await;
                        Ok(None)
                    };
                    future::or(next, deadline).await
                }
                None => next.await,
            };
            // The loop holds a sender itself, so the inbox never closes while it runs.
            let Ok(event) = event else { return };
            let now = Instant::now();
            if let Some(event) = event {
                self.handle_event(now, event);
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
        }
    }

    /// Drains [`Server::poll_output`], feeding back the sockets found closed on the way, until
    /// there is nothing left to do.
    fn carry_out_outputs(&mut self) {
        loop {
            while let Some(output) = self.server.poll_output() {
                self.carry_out(output);
            }
            if self.closed.is_empty() {
                return;
            }
            let now = Instant::now();
            for (conn, side) in std::mem::take(&mut self.closed) {
                self.server.handle_input(now, side.closed(conn));
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
            Output::Close(conn) => {
                if let Some(entry) = self.conns.remove(&conn) {
                    self.limits.release(entry.peer_ip);
                    log::debug!("{conn} closing");
                }
            }
        }
    }

    /// Queues bytes for a socket's writer, or takes the socket for closed if it cannot keep up.
    fn send(&mut self, conn: ConnId, side: Side, bytes: Bytes) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        let outbox = match side {
            Side::La => Some(&entry.la),
            Side::Lb => entry.lb.as_ref(),
        };
        let Some(outbox) = outbox else {
            log::warn!("{conn} has no {side} to write to");
            self.closed.push((conn, side));
            return;
        };
        let unwritten = outbox.backlog.bytes();
        if unwritten > 0 && unwritten + bytes.len() > self.runtime.max_unwritten {
            log::warn!("{conn} does not read its {side} fast enough; disconnecting it");
            self.closed.push((conn, side));
            return;
        }
        outbox.backlog.add(bytes.len());
        if outbox.queue.try_send(bytes).is_err() {
            // The writer has ended; it reports why itself, and saying it twice is harmless.
            self.closed.push((conn, side));
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
        let (closing_tx, closing) = async_channel::bounded(1);
        let (grants, granted) = async_channel::bounded(1);
        let la = self.spawn_socket(conn, Side::La, stream, &closing, Some(granted));
        self.conns.insert(
            conn,
            Conn {
                peer_ip: peer.ip(),
                la,
                grants,
                lb: None,
                _closing: closing_tx,
                closing,
            },
        );
    }

    /// Starts connecting Lb, bounded by the connect timeout, and reports how it ended.
    fn connect_lb(&mut self, conn: ConnId, addr: SocketAddr) {
        let events = self.events.clone();
        let timeout = self.server.config().connect_timeout;
        let attempt = async move {
            let connect = async {
                TcpStream::connect(addr)
                    .await
                    .map_err(|error| log::info!("{conn} cannot connect Lb to {addr}: {error}"))
                    .ok()
            };
            let give_up = async {
                Timer::after(timeout).await;
                log::info!("{conn} connecting Lb to {addr} timed out");
                None
            };
            let stream = future::or(connect, give_up).await;
            let _ = events.send(Event::LbConnect(conn, stream)).await;
        };
        self.executor.spawn(attempt).detach();
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
        let closing = entry.closing.clone();
        let lb = self.spawn_socket(conn, Side::Lb, stream, &closing, None);
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.lb = Some(lb);
        }
        log::debug!("{conn} Lb connected");
        self.server.handle_input(now, Input::LbConnected(conn));
    }

    /// Starts a socket's writer and reader; returns the writer's end for the loop. With
    /// `grants` the reader reads once per grant, without it continuously.
    fn spawn_socket(
        &self,
        conn: ConnId,
        side: Side,
        stream: TcpStream,
        closing: &Receiver<()>,
        grants: Option<Receiver<()>>,
    ) -> Outbox {
        // Unbounded in messages; `max_unwritten` bounds it in bytes.
        let (queue, queued) = async_channel::unbounded();
        let (writer_alive, writer_done) = async_channel::bounded(1);
        let backlog = Backlog::new();
        let writer = Writer {
            conn,
            side,
            stream: stream.clone(),
            queued,
            backlog: backlog.clone(),
            _alive: writer_alive,
            events: self.events.clone(),
            write_timeout: self.runtime.write_timeout,
        };
        let reader = Reader {
            conn,
            side,
            stream,
            events: self.events.clone(),
            closing: closing.clone(),
            backlog: backlog.clone(),
            writer_done,
            read_chunk: self.runtime.read_chunk.max(1),
            close_linger: self.runtime.close_linger,
        };
        self.executor.spawn(writer.run()).detach();
        self.executor.spawn(reader.run(grants)).detach();
        Outbox { queue, backlog }
    }
}

/// Accepts clients for as long as the event loop runs.
async fn accept_connections(listener: TcpListener, events: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if events.send(Event::Accepted(stream, peer)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                log::warn!("cannot accept a connection: {error}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The loop's end of one socket's writer.
struct Outbox {
    queue: Sender<Bytes>,
    backlog: Backlog,
}

/// The bytes handed to one socket's writer and not yet written, shared by the loop (which adds),
/// the writer (which takes away) and the reader (which waits for none to be left).
#[derive(Clone)]
struct Backlog {
    bytes: Arc<AtomicUsize>,
    /// Holds a token once the writer has written everything.
    drained: Sender<()>,
    until_drained: Receiver<()>,
}

impl Backlog {
    fn new() -> Self {
        let (drained, until_drained) = async_channel::bounded(1);
        Backlog {
            bytes: Arc::new(AtomicUsize::new(0)),
            drained,
            until_drained,
        }
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    fn add(&self, len: usize) {
        self.bytes.fetch_add(len, Ordering::AcqRel);
    }

    fn written(&self, len: usize) {
        if self.bytes.fetch_sub(len, Ordering::AcqRel) == len {
            let _ = self.drained.try_send(());
        }
    }

    /// Returns once every byte handed to the writer is written.
    async fn drained(&self) {
        while self.bytes() > 0 {
            // A token may be stale (left from an earlier drain): the loop looks again.
            let _ = self.until_drained.recv().await;
        }
    }
}

/// Writes one socket's queue, each write bounded in time.
struct Writer {
    conn: ConnId,
    side: Side,
    stream: TcpStream,
    queued: Receiver<Bytes>,
    backlog: Backlog,
    /// Dropped when the writer ends, which lets the reader finish closing the socket.
    _alive: Sender<()>,
    events: Sender<Event>,
    write_timeout: Duration,
}

impl Writer {
    /// Writes until the queue is closed and empty, then shuts the socket's sending side; on a
    /// failed or timed-out write, shuts the whole socket and reports it closed.
    async fn run(mut self) {
        let (conn, side) = (self.conn, self.side);
        let stream = &mut self.stream;
        // Once the connection is closed, everything still queued shares one deadline.
        let mut flush_deadline = None;
        while let Ok(bytes) = self.queued.recv().await {
            if flush_deadline.is_none() && self.queued.is_closed() {
                flush_deadline = Some(Instant::now() + self.write_timeout);
            }
            let deadline = flush_deadline.unwrap_or_else(|| Instant::now() + self.write_timeout);
            let write = async { stream.write_all(&bytes).await.map(|()| true) };
            let give_up = async {
                Timer::at(deadline).await;
                Ok(false)
            };
            match future::or(write, give_up).await {
                Ok(true) => {
                    self.backlog.written(bytes.len());
                    continue;
                }
                Ok(false) => log::info!("{conn} {side}: write timed out"),
                Err(error) => log::debug!("{conn} {side}: write failed: {error}"),
            }
            let _ = stream.shutdown(Shutdown::Both);
            let _ = self.events.send(Event::Closed(conn, side)).await;
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Reads one socket and, once the connection is closed, finishes closing it.
struct Reader {
    conn: ConnId,
    side: Side,
    stream: TcpStream,
    events: Sender<Event>,
    /// Closes when the event loop forgets the connection.
    closing: Receiver<()>,
    /// What this socket's writer has still to write.
    backlog: Backlog,
    /// Closes when this socket's writer has ended.
    writer_done: Receiver<()>,
    read_chunk: usize,
    close_linger: Duration,
}

impl Reader {
    /// Reads once per grant (or continuously without `grants`) and reports what came, until
    /// end of file, an error, or the connection's close. A grant is used only once the writer
    /// has written everything, so a peer that does not read is not read either.
    async fn run(mut self, grants: Option<Receiver<()>>) {
        let (conn, side) = (self.conn, self.side);
        // Waiting for readiness on the shared source, before taking a buffer, keeps an idle
        // connection's memory small and skips the read that would only say "not yet".
        let source: Arc<Async<std::net::TcpStream>> = self.stream.clone().into();
        let stream = &mut self.stream;
        let closing = &self.closing;
        let read_chunk = self.read_chunk;
        loop {
            if let Some(grants) = &grants {
                let granted = async {
                    let granted = grants.recv().await.is_ok();
                    self.backlog.drained().await;
                    granted
                };
                let closed = async {
                    let _ = closing.recv().await;
                    false
                };
                if !future::or(granted, closed).await {
                    break;
                }
            }
            let read = async {
                if let Err(error) = source.readable().await {
                    return Some(Err(error));
                }
                let mut buffer = vec![0; read_chunk];
                let read = (&*source).read(&mut buffer).await;
                Some(read.map(|n| {
                    buffer.truncate(n);
                    buffer
                }))
            };
            let closed = async {
                let _ = closing.recv().await;
                None
            };
            let event = match future::or(read, closed).await {
                None => break,
                Some(Err(error)) => {
                    log::debug!("{conn} {side}: read failed: {error}");
                    Event::Closed(conn, side)
                }
                Some(Ok(bytes)) if bytes.is_empty() => {
                    log::debug!("{conn} {side}: end of file");
                    Event::Closed(conn, side)
                }
                Some(Ok(bytes)) => Event::Data(conn, side, bytes),
            };
            let ended = matches!(event, Event::Closed(..));
            if self.events.send(event).await.is_err() || ended {
                return;
            }
        }
        // The connection is closed. Once the writer has flushed, discard what the peer still
        // sends until it closes its end or the linger time passes, then shut the socket: closing
        // a socket with unread input resets it, and a reset can destroy the last answer (`310`,
        // `202`) before the peer reads it.
        let _ = self.writer_done.recv().await;
        let drain = async {
            let mut discard = [0; 512];
            while let Ok(1..) = stream.read(&mut discard).await {}
        };
        let give_up = async {
            Timer::after(self.close_linger).await;
        };
        future::or(drain, give_up).await;
        let _ = stream.shutdown(Shutdown::Both);
    }
}
