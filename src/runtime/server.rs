//! The smol server adapter: it carries bytes between sockets and the sans-IO [`Server`], and
//! decides nothing about the protocol.
//!
//! Everything runs on one thread, on an executor local to [`serve`]. The [`Server`] and every
//! connection's sockets live in one `Hub` that the tasks share (`Rc<RefCell<…>>`): there is no
//! channel between the sockets and the core. The tasks are: one that accepts, one that fires
//! the core's deadlines, one per connection, and a short-lived one per Lb connect attempt.
//!
//! A connection's task waits for what its sockets can do (read, take queued bytes, finish
//! closing) and feeds what it reads straight into the core, then carries out the core's
//! outputs on the spot. [`Output::SendLa`] and [`Output::SendLb`] are written at once with a
//! non-blocking write; only what the socket does not take is queued, for the socket's task to
//! flush when the socket is writable. A socket whose queued bytes would pass
//! [`RuntimeConfig::max_unwritten`], or whose queued message is not written within
//! [`RuntimeConfig::write_timeout`], is reported closed, so one slow client cannot hold up the
//! others or grow the server's memory.
//!
//! La is read once per [`Output::ReadLa`] grant, which is how the core holds back a client that
//! sends ahead, and only once the answers to what was read before are written, so a client that
//! does not read its answers is held back by TCP as well. Lb is read continuously. A read
//! waits for the socket to be readable and then reads into one buffer shared by all sockets, so
//! an idle connection holds no buffer.
//!
//! [`Output::Close`] lets each socket write what is queued (all of it within one
//! [`RuntimeConfig::write_timeout`]), shuts its sending side, then discards what the peer still
//! sends until the peer closes its end (or [`RuntimeConfig::close_linger`] has passed), and only
//! then closes it: closing a socket with unread input resets it, and a reset can destroy the
//! last answer (`310`, `202`, `102`) before the client reads it.
//!
//! A client accepted over [`RuntimeConfig::max_connections`] or [`RuntimeConfig::max_per_ip`]
//! (counted by [`ConnectionLimits`]) is closed at once, before the core hears of it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_net::TcpListener;
use bytes::{Buf, Bytes};
use futures_lite::future;
use smol::{Async, LocalExecutor, Timer};

use super::{ConnectionLimits, Side};
use crate::server::{ConnId, Input, Output, Server, ServerConfig};
use crate::users::{PasswordCheck, Users};

// Kept here too: it was first defined in this module.
pub use super::RuntimeConfig;

/// Serves clients accepted on `listener` until `shutdown` completes.
///
/// Every task it starts runs on an executor local to this call, on the thread that polls the
/// returned future (which is therefore not `Send`; `smol::block_on` runs it), so when it returns
/// every connection is dropped (closed) with it.
pub async fn serve(
    listener: TcpListener,
    users: Users,
    config: ServerConfig,
    runtime: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let executor = Rc::new(LocalExecutor::new());
    let hub = Rc::new_cyclic(|me| {
        RefCell::new(Hub {
            server: Server::new(users, config),
            conns: HashMap::new(),
            limits: ConnectionLimits::from_config(&runtime),
            buffer: vec![0; runtime.read_chunk.max(1)],
            runtime,
            closed: Vec::new(),
            polling: None,
            timers: Wakeup::default(),
            executor: Rc::downgrade(&executor),
            me: me.clone(),
        })
    });
    let listener: Arc<Async<std::net::TcpListener>> = listener.into();
    executor
        .spawn(accept_connections(listener, Rc::clone(&hub)))
        .detach();
    executor.spawn(fire_deadlines(Rc::clone(&hub))).detach();
    executor.run(shutdown).await;
    // The tasks hold the hub, and the hub every socket: dropping the executor drops them all.
    drop(hub);
    drop(executor);
}

/// Accepts clients for as long as the executor runs.
async fn accept_connections(listener: Arc<Async<std::net::TcpListener>>, hub: Rc<RefCell<Hub>>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => hub.borrow_mut().accept(stream, peer),
            Err(error) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                log::warn!("cannot accept a connection: {error}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
        // A burst of connections must not keep the clients already in from being served.
        future::yield_now().await;
    }
}

/// Fires the core's deadlines ([`Server::poll_timeout`]) as they come, forever.
async fn fire_deadlines(hub: Rc<RefCell<Hub>>) {
    let mut alarm = Alarm::new();
    future::poll_fn(|cx| hub.borrow_mut().poll_deadlines(cx, &mut alarm)).await
}

/// Drives one connection's sockets until they are closed and finished with.
async fn drive_connection(hub: Rc<RefCell<Hub>>, conn: ConnId) {
    let mut alarm = Alarm::new();
    future::poll_fn(|cx| hub.borrow_mut().poll_conn(conn, cx, &mut alarm)).await
}

/// Connects Lb, bounded by the connect timeout, and hands the outcome to the hub.
async fn connect_lb(hub: Rc<RefCell<Hub>>, conn: ConnId, addr: SocketAddr, timeout: Duration) {
    let connect = async {
        Async::<TcpStream>::connect(addr)
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
    hub.borrow_mut().lb_connect_ended(conn, stream);
}

/// Runs an argon2 check on smol's blocking pool, so the loop serves everyone else meanwhile,
/// and hands the result to the hub.
async fn check_password(hub: Rc<RefCell<Hub>>, conn: ConnId, check: PasswordCheck) {
    let correct = smol::unblock(move || check.run()).await;
    let mut hub = hub.borrow_mut();
    hub.server
        .handle_input(Instant::now(), Input::PasswordChecked(conn, correct));
    hub.carry_out_outputs();
}

/// How many reads (or other steps) a connection's task takes in one run before it lets the
/// other tasks run: a socket that always has more to read cannot starve the rest.
const STEPS_PER_RUN: usize = 32;

/// What the tasks share: the [`Server`] and every connection's sockets.
///
/// A task borrows it only while it runs, never across an await, so two borrows never meet.
struct Hub {
    server: Server,
    conns: HashMap<ConnId, Conn>,
    limits: ConnectionLimits,
    runtime: RuntimeConfig,
    /// Where every read lands; the core copies what it keeps at once (or the bytes are
    /// discarded, on a closing socket), so one buffer serves every socket.
    buffer: Vec<u8>,
    /// Sockets found closed while carrying out outputs, to be fed to the core next.
    closed: Vec<(ConnId, Side)>,
    /// The connection whose task is running: it looks at everything again before it sleeps, so
    /// it needs no wake-up.
    polling: Option<ConnId>,
    /// The task that fires the core's deadlines.
    timers: Wakeup,
    executor: Weak<LocalExecutor<'static>>,
    /// This hub, for the tasks it starts.
    me: Weak<RefCell<Hub>>,
}

/// How to wake the deadline task, and the deadline it sleeps until.
#[derive(Default)]
struct Wakeup {
    waker: Option<Waker>,
    until: Option<Instant>,
}

impl Hub {
    /// Starts a task that gets a handle on this hub. Once the executor is gone (shutdown), it
    /// starts nothing.
    fn spawn<F>(&self, task: impl FnOnce(Rc<RefCell<Hub>>) -> F)
    where
        F: Future<Output = ()> + 'static,
    {
        if let (Some(executor), Some(hub)) = (self.executor.upgrade(), self.me.upgrade()) {
            executor.spawn(task(hub)).detach();
        }
    }

    fn accept(&mut self, stream: Async<TcpStream>, peer: SocketAddr) {
        if let Err(refusal) = self.limits.admit(peer.ip()) {
            // Dropping the stream closes it: the client sees the end at once.
            log::warn!("refusing a connection from {peer}: {refusal}");
            return;
        }
        if let Err(error) = stream.get_ref().set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY for {peer}: {error}");
        }
        let conn = self.server.accept(Instant::now(), peer);
        log::info!("{conn} connected from {peer}");
        self.conns
            .insert(conn, Conn::new(peer.ip(), Socket::new(stream)));
        self.spawn(|hub| drive_connection(hub, conn));
        self.carry_out_outputs();
    }

    fn lb_connect_ended(&mut self, conn: ConnId, stream: Option<Async<TcpStream>>) {
        let now = Instant::now();
        // A connection closed meanwhile: the stream, if any, is dropped (closed) here.
        let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closing) else {
            return;
        };
        let Some(stream) = stream else {
            self.server.handle_input(now, Input::LbConnectFailed(conn));
            self.carry_out_outputs();
            return;
        };
        if entry.lb.is_some() {
            return;
        }
        if let Err(error) = stream.get_ref().set_nodelay(true) {
            log::debug!("{conn} cannot set TCP_NODELAY on Lb: {error}");
        }
        entry.lb = Some(Socket::new(stream));
        // Its task starts reading Lb.
        entry.wake_unless(self.polling == Some(conn));
        log::debug!("{conn} Lb connected");
        self.server.handle_input(now, Input::LbConnected(conn));
        self.carry_out_outputs();
    }

    /// The deadline task's step: fires what is due, then sleeps until the next deadline.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>, alarm: &mut Alarm) -> Poll<()> {
        if !self
            .timers
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            self.timers.waker = Some(cx.waker().clone());
        }
        loop {
            let next = self.server.poll_timeout();
            self.timers.until = next;
            if !alarm.poll_at(next, cx) {
                return Poll::Pending;
            }
            self.server.handle_timeout(Instant::now());
            self.carry_out_outputs();
        }
    }

    /// Wakes the deadline task if the core's next deadline comes before the one it sleeps until.
    fn notice_deadline(&mut self) {
        let Some(next) = self.server.poll_timeout() else {
            return;
        };
        if self.timers.until.is_some_and(|until| until <= next) {
            return;
        }
        // Once is enough: it looks at the core's deadline itself when it runs.
        self.timers.until = Some(next);
        if let Some(waker) = &self.timers.waker {
            waker.wake_by_ref();
        }
    }

    /// A connection task's step; see [`Hub::drive`].
    fn poll_conn(&mut self, conn: ConnId, cx: &mut Context<'_>, alarm: &mut Alarm) -> Poll<()> {
        self.polling = Some(conn);
        let poll = self.drive(conn, cx, alarm);
        self.polling = None;
        poll
    }

    /// Does what `conn`'s sockets allow now — feeding reads to the core and carrying out what it
    /// says, flushing, closing — until nothing is left but to wait for a socket or a deadline,
    /// or [`STEPS_PER_RUN`] steps are done. Ready once the connection is closed and its sockets
    /// are finished with.
    fn drive(&mut self, conn: ConnId, cx: &mut Context<'_>, alarm: &mut Alarm) -> Poll<()> {
        for _ in 0..STEPS_PER_RUN {
            let now = Instant::now();
            let Some(entry) = self.conns.get_mut(&conn) else {
                return Poll::Ready(());
            };
            entry.remember(cx.waker());
            let timing = Timing::of(&self.runtime, now);
            let Some((side, activity)) = entry.poll_sockets(conn, cx, &mut self.buffer, &timing)
            else {
                if entry.is_finished() {
                    self.conns.remove(&conn);
                    log::debug!("{conn} closed");
                    return Poll::Ready(());
                }
                if alarm.poll_at(entry.deadline(), cx) {
                    continue;
                }
                return Poll::Pending;
            };
            let input = match (activity, side) {
                (Activity::Read(n), Side::La) => Input::LaData(conn, &self.buffer[..n]),
                (Activity::Read(n), Side::Lb) => Input::LbData(conn, &self.buffer[..n]),
                (Activity::Ended, side) => side.closed(conn),
                (Activity::Idle | Activity::Progress | Activity::Finished, _) => continue,
            };
            self.server.handle_input(now, input);
            self.carry_out_outputs();
        }
        // Still busy: the other tasks get their turn first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Drains [`Server::poll_output`], feeding back the sockets found closed on the way, until
    /// there is nothing left to do.
    fn carry_out_outputs(&mut self) {
        loop {
            while let Some(output) = self.server.poll_output() {
                self.carry_out(output);
            }
            if self.closed.is_empty() {
                break;
            }
            let now = Instant::now();
            for (conn, side) in std::mem::take(&mut self.closed) {
                self.server.handle_input(now, side.closed(conn));
            }
        }
        self.notice_deadline();
    }

    fn carry_out(&mut self, output: Output) {
        match output {
            Output::ReadLa(conn) => {
                let Some(entry) = self.conns.get_mut(&conn) else {
                    return;
                };
                entry.la_granted = true;
                // With answers still queued, the task reads once they are written.
                if entry.la.as_ref().is_some_and(|la| la.out.is_empty()) {
                    entry.wake_unless(self.polling == Some(conn));
                }
            }
            Output::SendLa(conn, bytes) => self.send(conn, Side::La, bytes),
            Output::SendLb(conn, bytes) => self.send(conn, Side::Lb, bytes),
            Output::ConnectLb(conn, addr) => {
                let timeout = self.server.config().connect_timeout;
                self.spawn(|hub| connect_lb(hub, conn, addr, timeout));
            }
            Output::Close(conn) => self.close(conn),
            Output::CheckPassword(conn, check) => {
                self.spawn(|hub| check_password(hub, conn, check));
            }
        }
    }

    /// Writes bytes to a socket, or takes the socket for closed if it cannot keep up.
    fn send(&mut self, conn: ConnId, side: Side, bytes: Bytes) {
        let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closing) else {
            return;
        };
        let Some(socket) = entry.socket_mut(side) else {
            log::warn!("{conn} has no {side} to write to");
            self.closed.push((conn, side));
            return;
        };
        let unwritten = socket.out.len;
        if unwritten > 0 && unwritten + bytes.len() > self.runtime.max_unwritten {
            log::warn!("{conn} does not read its {side} fast enough; disconnecting it");
            self.closed.push((conn, side));
            return;
        }
        match socket.send(bytes, self.runtime.write_timeout) {
            Ok(Sent::Written) => {}
            // Its task waits for the socket to take the rest, and times the write.
            Ok(Sent::Queued) => entry.wake_unless(self.polling == Some(conn)),
            Err(error) => {
                socket.fail(conn, side, &error);
                self.closed.push((conn, side));
            }
        }
    }

    /// Carries out [`Output::Close`]: the connection's task flushes and closes its sockets.
    fn close(&mut self, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn).filter(|entry| !entry.closing) else {
            return;
        };
        entry.closing = true;
        self.limits.release(entry.peer_ip);
        let by = Instant::now() + self.runtime.write_timeout;
        for side in [Side::La, Side::Lb] {
            let slot = entry.socket_mut(side);
            if slot.as_mut().is_some_and(|socket| !socket.close(by)) {
                *slot = None;
            }
        }
        entry.wake_unless(self.polling == Some(conn));
        log::debug!("{conn} closing");
    }
}

/// The hub's view of one connection, from accept until its sockets are finished with.
struct Conn {
    /// The client's address, counted in [`ConnectionLimits`] until the core closes it.
    peer_ip: IpAddr,
    /// `None` once finished with, after the close.
    la: Option<Socket>,
    /// `None` until connected, and once finished with.
    lb: Option<Socket>,
    /// An [`Output::ReadLa`] not used yet.
    la_granted: bool,
    /// The core has closed the connection: what is left is flushing and finishing.
    closing: bool,
    /// Wakes the connection's task; `None` until it first runs.
    waker: Option<Waker>,
}

impl Conn {
    fn new(peer_ip: IpAddr, la: Socket) -> Self {
        Conn {
            peer_ip,
            la: Some(la),
            lb: None,
            la_granted: false,
            closing: false,
            waker: None,
        }
    }

    fn socket_mut(&mut self, side: Side) -> &mut Option<Socket> {
        match side {
            Side::La => &mut self.la,
            Side::Lb => &mut self.lb,
        }
    }

    /// Keeps the task's waker, for the hub to wake it.
    fn remember(&mut self, waker: &Waker) {
        if !self
            .waker
            .as_ref()
            .is_some_and(|known| known.will_wake(waker))
        {
            self.waker = Some(waker.clone());
        }
    }

    /// Closed by the core, and every socket finished with.
    fn is_finished(&self) -> bool {
        self.closing && self.la.is_none() && self.lb.is_none()
    }

    /// Looks at La, then Lb, and returns the first that did something (a socket finished
    /// with is dropped, which counts as progress); `None` if both just wait.
    fn poll_sockets(
        &mut self,
        conn: ConnId,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
        timing: &Timing,
    ) -> Option<(Side, Activity)> {
        for side in [Side::La, Side::Lb] {
            let reading = match side {
                Side::La if self.la_granted => Reading::OnceWritten,
                Side::La => Reading::Not,
                Side::Lb => Reading::Always,
            };
            let slot = self.socket_mut(side);
            let Some(socket) = slot else { continue };
            match socket.poll(conn, side, cx, reading, buffer, timing) {
                Activity::Idle => {}
                Activity::Finished => {
                    *slot = None;
                    return Some((side, Activity::Progress));
                }
                activity => {
                    if side == Side::La && matches!(activity, Activity::Read(_)) {
                        // The grant is used up; the core grants the next read.
                        self.la_granted = false;
                    }
                    return Some((side, activity));
                }
            }
        }
        None
    }

    /// Wakes the connection's task, unless it is the one running.
    fn wake_unless(&self, running: bool) {
        if let Some(waker) = self.waker.as_ref().filter(|_| !running) {
            waker.wake_by_ref();
        }
    }

    /// The earliest deadline of its sockets.
    fn deadline(&self) -> Option<Instant> {
        let la = self.la.as_ref().and_then(Socket::deadline);
        let lb = self.lb.as_ref().and_then(Socket::deadline);
        la.into_iter().chain(lb).min()
    }
}

/// One of a connection's sockets and the bytes it has not taken yet.
struct Socket {
    stream: Async<TcpStream>,
    out: Outbox,
    state: SocketState,
}

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug)]
enum SocketState {
    /// Carrying bytes for the core.
    Open {
        /// When the queued message being written must be written by.
        write_by: Option<Instant>,
        /// End of file or a read error was reported: nothing more is read.
        read_ended: bool,
    },
    /// A write failed or timed out; it was reported and the socket is shut.
    Failed,
    /// The connection is closed: writing what is queued, all of it by `by`.
    Flushing { by: Instant },
    /// Written and shut for sending: discarding what the peer still sends until it closes its
    /// end or `until` passes.
    Lingering { until: Instant },
}

/// When a socket may read for the core.
#[derive(Clone, Copy, Debug)]
enum Reading {
    Not,
    /// Once everything queued is written (La, once granted).
    OnceWritten,
    /// Whenever there is something (Lb).
    Always,
}

/// What one look at a socket found.
#[derive(Clone, Copy, Debug)]
enum Activity {
    /// Nothing to do until the socket or the alarm wakes the task.
    Idle,
    /// Something changed (bytes discarded, a socket dropped): look again.
    Progress,
    /// This many bytes were read into the hub's buffer, for the core.
    Read(usize),
    /// The socket reached end of file or failed, for the core.
    Ended,
    /// The socket is closed and finished with: drop it.
    Finished,
}

/// The runtime's time limits, resolved against the present moment.
struct Timing {
    now: Instant,
    write_timeout: Duration,
    close_linger: Duration,
}

impl Timing {
    fn of(runtime: &RuntimeConfig, now: Instant) -> Self {
        Timing {
            now,
            write_timeout: runtime.write_timeout,
            close_linger: runtime.close_linger,
        }
    }
}

/// How [`Socket::send`] left the bytes.
enum Sent {
    Written,
    /// Some are queued, for the socket's task to write.
    Queued,
}

impl Socket {
    fn new(stream: Async<TcpStream>) -> Self {
        Socket {
            stream,
            out: Outbox::default(),
            state: SocketState::Open {
                write_by: None,
                read_ended: false,
            },
        }
    }

    /// Writes `bytes` now if nothing waits before them, and queues what the socket does not
    /// take. Bytes for a failed socket are dropped: its failure was reported already.
    fn send(&mut self, mut bytes: Bytes, write_timeout: Duration) -> io::Result<Sent> {
        let SocketState::Open { write_by, .. } = &mut self.state else {
            return Ok(Sent::Written);
        };
        if self.out.is_empty() {
            if write_now(self.stream.get_ref(), &mut bytes)? {
                return Ok(Sent::Written);
            }
            *write_by = Some(Instant::now() + write_timeout);
        }
        self.out.push(bytes);
        Ok(Sent::Queued)
    }

    /// Starts closing, with everything queued to be written by `by`. `false`: the socket has
    /// failed (and is shut) already, so it is finished with.
    fn close(&mut self, by: Instant) -> bool {
        match self.state {
            SocketState::Open { .. } => {
                self.state = SocketState::Flushing { by };
                true
            }
            SocketState::Failed => false,
            SocketState::Flushing { .. } | SocketState::Lingering { .. } => true,
        }
    }

    /// Takes the socket for failed after a write error: shut, nothing more queued.
    fn fail(&mut self, conn: ConnId, side: Side, error: &io::Error) {
        if error.kind() == ErrorKind::TimedOut {
            log::info!("{conn} {side}: write timed out");
        } else {
            log::debug!("{conn} {side}: write failed: {error}");
        }
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        self.out = Outbox::default();
        self.state = SocketState::Failed;
    }

    /// Shuts the socket both ways, for good.
    fn finish(&mut self) -> Activity {
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        Activity::Finished
    }

    /// When the task must look at this socket again even if nothing happens on it.
    fn deadline(&self) -> Option<Instant> {
        match self.state {
            SocketState::Open { write_by, .. } => write_by,
            SocketState::Failed => None,
            SocketState::Flushing { by } => Some(by),
            SocketState::Lingering { until } => Some(until),
        }
    }

    /// Does what the socket allows now; registers the task for what it waits on.
    fn poll(
        &mut self,
        conn: ConnId,
        side: Side,
        cx: &mut Context<'_>,
        reading: Reading,
        buffer: &mut [u8],
        timing: &Timing,
    ) -> Activity {
        let now = timing.now;
        match &mut self.state {
            SocketState::Open {
                write_by,
                read_ended,
            } => {
                if write_by.is_some_and(|by| now >= by) {
                    self.fail(conn, side, &ErrorKind::TimedOut.into());
                    return Activity::Ended;
                }
                match self.out.poll_flush(&self.stream, cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(())) => *write_by = None,
                    Poll::Ready(Err(error)) => {
                        self.fail(conn, side, &error);
                        return Activity::Ended;
                    }
                }
                if self.out.finished_one {
                    // The next queued message gets a write timeout of its own.
                    self.out.finished_one = false;
                    if !self.out.is_empty() {
                        *write_by = Some(now + timing.write_timeout);
                    }
                }
                let wanted = match reading {
                    Reading::Not => false,
                    Reading::OnceWritten => self.out.is_empty(),
                    Reading::Always => true,
                };
                if !wanted || *read_ended {
                    return Activity::Idle;
                }
                match poll_read(&self.stream, cx, buffer) {
                    Poll::Pending => Activity::Idle,
                    Poll::Ready(Ok(0)) => {
                        log::debug!("{conn} {side}: end of file");
                        *read_ended = true;
                        Activity::Ended
                    }
                    Poll::Ready(Ok(n)) => Activity::Read(n),
                    Poll::Ready(Err(error)) => {
                        log::debug!("{conn} {side}: read failed: {error}");
                        *read_ended = true;
                        Activity::Ended
                    }
                }
            }
            SocketState::Failed => Activity::Idle,
            SocketState::Flushing { by } => {
                if now >= *by {
                    log::info!("{conn} {side}: write timed out");
                    return self.finish();
                }
                match self.out.poll_flush(&self.stream, cx) {
                    Poll::Pending => return Activity::Idle,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => {
                        log::debug!("{conn} {side}: write failed: {error}");
                        return self.finish();
                    }
                }
                let _ = self.stream.get_ref().shutdown(Shutdown::Write);
                self.state = SocketState::Lingering {
                    until: now + timing.close_linger,
                };
                self.poll(conn, side, cx, reading, buffer, timing)
            }
            SocketState::Lingering { until } => {
                if now >= *until {
                    return self.finish();
                }
                match poll_read(&self.stream, cx, buffer) {
                    Poll::Pending => Activity::Idle,
                    Poll::Ready(Ok(1..)) => Activity::Progress,
                    Poll::Ready(_) => self.finish(),
                }
            }
        }
    }
}

/// The bytes a socket did not take at once, oldest first.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Bytes>,
    /// Their total length.
    len: usize,
    /// A message was written to the end since the owner last looked.
    finished_one: bool,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn push(&mut self, bytes: Bytes) {
        self.len += bytes.len();
        self.queue.push_back(bytes);
    }

    /// Writes while the socket takes bytes. Ready once everything is written; pending (with
    /// the task registered) while the socket is full.
    fn poll_flush(
        &mut self,
        stream: &Async<TcpStream>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        // Bytes are queued only when the socket was full, so it must first become writable.
        while !self.queue.is_empty() {
            ready!(stream.poll_writable(cx))?;
            while let Some(front) = self.queue.front_mut() {
                let before = front.len();
                let written = write_now(stream.get_ref(), front)?;
                self.len -= before - front.len();
                if !written {
                    break;
                }
                self.queue.pop_front();
                self.finished_one = true;
            }
        }
        if self.queue.capacity() > 0 {
            // The backlog's room is released, so an idle connection holds nothing.
            self.queue = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes as much of `bytes` as the socket takes without waiting, and advances past it.
/// `true`: all of it is written; `false`: the socket is full.
fn write_now(mut stream: &TcpStream, bytes: &mut Bytes) -> io::Result<bool> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes.advance(n),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

/// Waits for the socket to be readable, then reads once into `buffer`.
fn poll_read(
    stream: &Async<TcpStream>,
    cx: &mut Context<'_>,
    buffer: &mut [u8],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_readable(cx))?;
        loop {
            match stream.get_ref().read(buffer) {
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // Not readable after all: wait again (which registers the task).
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// A timer set to one deadline at a time, re-registered only when the deadline changes.
struct Alarm {
    timer: Timer,
    at: Option<Instant>,
}

impl Alarm {
    fn new() -> Self {
        Alarm {
            timer: Timer::never(),
            at: None,
        }
    }

    /// Sets the alarm for `at` (`None`: never); `true` once that time has come, and the task
    /// is woken then otherwise.
    fn poll_at(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> bool {
        if at != self.at {
            match at {
                Some(at) => self.timer.set_at(at),
                None => self.timer.clear(),
            }
            self.at = at;
        }
        if self.at.is_none() || Pin::new(&mut self.timer).poll(cx).is_pending() {
            return false;
        }
        self.at = None;
        true
    }
}
