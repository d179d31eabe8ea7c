//! [`serve`]: the async server loop, written once for every [`Runtime`].
//!
//! Everything runs on one thread. The [`ServerDriver`] and every connection's sockets live in
//! one `Hub` that the tasks share (`Rc<RefCell<…>>`), borrowed only while a task runs and never
//! across an await. The tasks: one accepts, one fires the driver's deadlines, one per
//! connection does its sockets' reads and writes, and short-lived ones connect Lb or check a
//! password.
//!
//! Bytes for a socket are written the moment the driver has them, with a non-blocking write,
//! from whichever task made them (a `/toall` writes to a thousand sockets from the sender's
//! task); only what a socket does not take waits for that socket's own task to see it writable.
//! A read waits for readiness and then reads into one buffer shared by every socket, so an idle
//! connection holds no buffer.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use simple_im_core::driver::{DriverAction, DriverConfig, Keepalive, ServerDriver, Side, SocketId};
use simple_im_core::server::{ClusterInput, ClusterOutput, ConnId, ServerConfig};
use simple_im_core::users::Users;

use super::{accept, AsyncStream, AsyncTimer, Runtime, ServerCommand};

/// What the server's commands come through.
type Commands = async_channel::Receiver<ServerCommand>;

/// Serves clients accepted on `listener` with a single server, doing what `commands` asks
/// (reload, stop), until a stop has closed every connection.
///
/// Every task runs on `runtime`'s thread; when this returns the tasks still hold the sockets,
/// and they are closed when the runtime drops its tasks.
pub async fn serve<R: Runtime>(
    runtime: R,
    listener: R::Listener,
    users: Users,
    config: ServerConfig,
    driver: DriverConfig,
    commands: Commands,
) {
    let server = ServerDriver::new(users, config, &driver);
    serve_node(runtime, listener, server, &driver, None, commands).await
}

/// The channels between a cluster node's driver and its cluster engine.
pub struct ClusterLink {
    /// What the hub asks of the directory and the other nodes.
    pub outputs: async_channel::Sender<ClusterOutput>,
    /// Their answers.
    pub inputs: async_channel::Receiver<ClusterInput>,
}

/// Serves clients accepted on `listener` as one node of a cluster until a stop is done:
/// `engine` gets the two ends of the node's [`ClusterLink`] (the hub's questions in, the
/// answers out) and runs beside the server for as long as it does.
pub async fn serve_cluster<R: Runtime, E: Future<Output = ()> + 'static>(
    runtime: R,
    listener: R::Listener,
    server: ServerDriver,
    driver: &DriverConfig,
    engine: impl FnOnce(
        async_channel::Receiver<ClusterOutput>,
        async_channel::Sender<ClusterInput>,
    ) -> E,
    commands: Commands,
) {
    let (outputs, questions) = async_channel::unbounded();
    let (answers, inputs) = async_channel::unbounded();
    runtime.spawn(Box::pin(engine(questions, answers)));
    let link = ClusterLink { outputs, inputs };
    serve_node(runtime, listener, server, driver, Some(link), commands).await
}

/// Serves clients accepted on `listener` with `server` (a cluster node when `cluster` links
/// it to its engine), doing what `commands` asks, until a stop is done: after
/// [`ServerCommand::Stop`] once the driver says every connection is closed, after
/// [`ServerCommand::StopNow`] at once.
pub async fn serve_node<R: Runtime>(
    runtime: R,
    listener: R::Listener,
    server: ServerDriver,
    driver: &DriverConfig,
    cluster: Option<ClusterLink>,
    commands: Commands,
) {
    let (outputs, inputs) = match cluster {
        Some(link) => (Some(link.outputs), Some(link.inputs)),
        None => (None, None),
    };
    let hub = Rc::new_cyclic(|me| {
        RefCell::new(Hub {
            driver: server,
            cluster: outputs,
            conns: FxHashMap::default(),
            buffer: vec![0; driver.read_chunk.max(1)],
            timer: TimerTask::default(),
            running: None,
            renamed: [false; 2],
            runtime: runtime.clone(),
            me: me.clone(),
            stopped: None,
        })
    });
    // Closed to stop accepting: the accept task ends and drops the listener.
    let (stop_accepting, accepting) = async_channel::bounded(1);
    runtime.spawn(Box::pin(accept_connections(
        listener,
        Rc::downgrade(&hub),
        accepting,
    )));
    runtime.spawn(Box::pin(fire_deadlines(Rc::downgrade(&hub))));
    if let Some(inputs) = inputs {
        runtime.spawn(Box::pin(feed_cluster(inputs, Rc::downgrade(&hub))));
    }
    obey(&hub, &commands, &stop_accepting).await;
    // Dropping every socket closes it; the tasks find the hub gone and end.
    hub.borrow_mut().conns.clear();
}

/// What the command loop waits for.
enum Next {
    Command(ServerCommand),
    /// A stop is done: every connection is closed.
    Stopped,
}

/// Hands each command to the driver until a stop is done (or asked to be at once).
async fn obey<R: Runtime>(
    hub: &Rc<RefCell<Hub<R>>>,
    commands: &Commands,
    stop_accepting: &async_channel::Sender<()>,
) {
    loop {
        let command = async {
            match commands.recv().await {
                Ok(command) => Next::Command(command),
                // Nobody can ask anything any more: serve on.
                Err(_) => std::future::pending().await,
            }
        };
        let stopped = async {
            poll_fn(|cx| hub.borrow_mut().poll_stopped(cx)).await;
            Next::Stopped
        };
        let now = Instant::now();
        match futures_lite::future::or(stopped, command).await {
            Next::Stopped => return log::info!("stopped: every connection is closed"),
            Next::Command(ServerCommand::StopNow) => {
                let open = hub.borrow().conns.len();
                return log::info!("stopping at once: {open} connections dropped");
            }
            Next::Command(ServerCommand::Reload(reload)) => {
                let mut hub = hub.borrow_mut();
                hub.driver.reload(now, *reload);
                hub.carry_out_actions();
            }
            Next::Command(ServerCommand::Stop) => {
                stop_accepting.close();
                let mut hub = hub.borrow_mut();
                hub.driver.stop(now);
                hub.carry_out_actions();
            }
        }
    }
}

/// Accepts clients for as long as the hub lives and `accepting` is open.
async fn accept_connections<R: Runtime>(
    listener: R::Listener,
    hub: Weak<RefCell<Hub<R>>>,
    accepting: async_channel::Receiver<()>,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(accept(&listener).await) }, async {
            let _ = accepting.recv().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return log::info!("no longer accepting connections");
        };
        let Some(hub) = hub.upgrade() else { return };
        match accepted {
            Ok((stream, peer)) => hub.borrow_mut().accept(stream, peer),
            Err(error) => {
                // Out of file descriptors, most likely: wait a little rather than spin.
                log::warn!("cannot accept a connection: {error}");
                let runtime = hub.borrow().runtime.clone();
                drop(hub);
                super::sleep(&mut runtime.timer(Some(Instant::now() + ACCEPT_BACKOFF))).await;
            }
        }
        // A burst of connections must not keep the clients already in from being served.
        futures_lite::future::yield_now().await;
    }
}

/// How long to wait after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Hands what the cluster engine says to the driver.
async fn feed_cluster<R: Runtime>(
    inputs: async_channel::Receiver<ClusterInput>,
    hub: Weak<RefCell<Hub<R>>>,
) {
    while let Ok(input) = inputs.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        let mut hub = hub.borrow_mut();
        hub.driver.handle_cluster(Instant::now(), input);
        hub.carry_out_actions();
    }
}

/// Fires the driver's deadlines as they come.
async fn fire_deadlines<R: Runtime>(hub: Weak<RefCell<Hub<R>>>) {
    let mut timer = match hub.upgrade() {
        Some(hub) => hub.borrow().runtime.timer(None),
        None => return,
    };
    poll_fn(|cx| {
        let Some(hub) = hub.upgrade() else {
            return Poll::Ready(());
        };
        let mut hub = hub.borrow_mut();
        hub.timer.remember(cx.waker());
        loop {
            let next = hub.driver.poll_timeout();
            hub.timer.until = next;
            timer.reset(next);
            if timer.poll_fired(cx).is_pending() {
                return Poll::Pending;
            }
            hub.driver.handle_timeout(Instant::now());
            hub.carry_out_actions();
        }
    })
    .await
}

/// Drives one connection's sockets until the driver is finished with them.
async fn drive_connection<R: Runtime>(hub: Weak<RefCell<Hub<R>>>, conn: ConnId) {
    poll_fn(|cx| match hub.upgrade() {
        Some(hub) => hub.borrow_mut().poll_conn(conn, cx),
        None => Poll::Ready(()),
    })
    .await
}

/// Connects Lb, bounded by `timeout`, and hands the outcome to the driver.
async fn connect_lb<R: Runtime>(
    hub: Weak<RefCell<Hub<R>>>,
    runtime: R,
    conn: ConnId,
    addr: SocketAddr,
    timeout: Duration,
) {
    let connect = async {
        runtime
            .connect(addr)
            .await
            .map_err(|error| log::info!("{conn} cannot connect Lb to {addr}: {error}"))
            .ok()
    };
    let give_up = async {
        super::sleep(&mut runtime.timer(Some(Instant::now() + timeout))).await;
        log::info!("{conn} connecting Lb to {addr} timed out");
        None
    };
    let stream = futures_lite::future::or(connect, give_up).await;
    if let Some(hub) = hub.upgrade() {
        hub.borrow_mut().lb_connect_ended(conn, stream);
    }
}

/// How many steps (reads, flushes) a connection's task takes in one run before it lets the
/// other tasks run: a socket that always has more cannot starve the rest.
const STEPS_PER_RUN: usize = 32;

/// Sets the options every client socket gets: no Nagle (every line is a message someone waits
/// for), and keepalive (a vanished host is noticed).
fn tune<S: AsyncStream>(stream: &S, keepalive: Option<Keepalive>, socket: SocketId) {
    if let Err(error) = stream.set_nodelay(true) {
        log::debug!("{socket}: cannot set TCP_NODELAY: {error}");
    }
    if let Err(error) = stream.set_keepalive(keepalive) {
        log::warn!("{socket}: cannot set TCP keepalive: {error}");
    }
}

/// What the tasks share.
struct Hub<R: Runtime> {
    driver: ServerDriver,
    /// Where cluster outputs go; `None` for a single server, which makes none.
    cluster: Option<async_channel::Sender<ClusterOutput>>,
    conns: FxHashMap<ConnId, ConnIo<R::Stream>>,
    /// Where every read lands: the core copies what it keeps at once.
    buffer: Vec<u8>,
    timer: TimerTask,
    /// The connection whose task is running: it looks again at what changed before it
    /// sleeps, so it needs no wake-up.
    running: Option<ConnId>,
    /// The running connection's sockets (La, Lb) that an action named during its run: they
    /// get another look.
    renamed: [bool; 2],
    runtime: R,
    me: Weak<RefCell<Hub<R>>>,
    /// The command loop, waiting for a stop to be done; woken to look again while stopping.
    stopped: Option<Waker>,
}

/// How to wake the deadline task, and the deadline it sleeps until.
#[derive(Default)]
struct TimerTask {
    waker: Option<Waker>,
    until: Option<Instant>,
}

impl TimerTask {
    fn remember(&mut self, waker: &Waker) {
        remember(&mut self.waker, waker);
    }
}

/// Keeps `waker` unless the one kept already wakes the same task.
fn remember(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|known| known.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// One connection's sockets and its task.
struct ConnIo<S> {
    la: Option<S>,
    lb: Option<S>,
    waker: Option<Waker>,
}

impl<S> ConnIo<S> {
    fn socket(&self, side: Side) -> Option<&S> {
        match side {
            Side::La => self.la.as_ref(),
            Side::Lb => self.lb.as_ref(),
        }
    }

    fn slot(&mut self, side: Side) -> &mut Option<S> {
        match side {
            Side::La => &mut self.la,
            Side::Lb => &mut self.lb,
        }
    }
}

/// What one look at a socket found.
enum Step {
    /// Nothing to do until the socket wakes the task.
    Idle,
    /// Something moved: look again.
    Moved,
}

impl<R: Runtime> Hub<R> {
    fn accept(&mut self, stream: R::Stream, peer: SocketAddr) {
        let conn = match self.driver.accept(Instant::now(), peer) {
            Ok(conn) => conn,
            Err(refusal) => {
                // Dropping the stream closes it: the client sees the end at once. The driver has
                // logged the refusal, once a minute per address.
                log::debug!("refusing a connection from {peer}: {refusal}");
                return;
            }
        };
        tune(&stream, self.driver.keepalive(), SocketId::la(conn));
        self.conns.insert(
            conn,
            ConnIo {
                la: Some(stream),
                lb: None,
                waker: None,
            },
        );
        self.runtime
            .spawn(Box::pin(drive_connection(self.me.clone(), conn)));
        self.carry_out_actions();
    }

    fn lb_connect_ended(&mut self, conn: ConnId, stream: Option<R::Stream>) {
        let now = Instant::now();
        let Some(stream) = stream else {
            self.driver.handle_lb_connect_failed(now, conn);
            return self.carry_out_actions();
        };
        // A connection closed meanwhile: the stream is dropped (closed) here.
        if !self.conns.contains_key(&conn) || !self.driver.handle_lb_connected(now, conn) {
            return;
        }
        tune(&stream, self.driver.keepalive(), SocketId::lb(conn));
        stream.read_always();
        if let Some(io) = self.conns.get_mut(&conn) {
            io.lb = Some(stream);
        }
        self.wake(conn);
        self.carry_out_actions();
    }

    /// A connection task's run: reads and flushes until both sockets wait, or
    /// [`STEPS_PER_RUN`] steps are done. Ready once the driver is finished with the connection.
    fn poll_conn(&mut self, conn: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        self.running = Some(conn);
        self.renamed = [false; 2];
        let poll = self.drive(conn, cx);
        self.running = None;
        // Once per run rather than per action: nothing else runs meanwhile.
        self.notice_deadline();
        poll
    }

    fn drive(&mut self, conn: ConnId, cx: &mut Context<'_>) -> Poll<()> {
        // A woken task looks at both sockets; after that, only at a socket that moved or
        // that an action named: any other waits, registered with the reactor, since its
        // last look.
        let mut look = [true; 2];
        for _ in 0..STEPS_PER_RUN {
            let Some(io) = self.conns.get_mut(&conn) else {
                return Poll::Ready(());
            };
            remember(&mut io.waker, cx.waker());
            let mut moved = [false; 2];
            for side in [Side::La, Side::Lb] {
                if !look[side as usize] {
                    continue;
                }
                let socket = SocketId { conn, side };
                let flushed = matches!(self.flush(socket, Some(cx)), Step::Moved);
                let read = matches!(self.read(socket, cx), Step::Moved);
                moved[side as usize] = flushed || read;
                self.run_actions();
            }
            let renamed = std::mem::take(&mut self.renamed);
            look = [moved[0] || renamed[0], moved[1] || renamed[1]];
            if look == [false; 2] {
                return Poll::Pending;
            }
        }
        // Still busy: the other tasks get their turn first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes what the driver has for `socket` while the socket takes it. Without a task
    /// context (a write made on another connection's behalf), a full socket wakes its own task
    /// to wait for it.
    fn flush(&mut self, socket: SocketId, mut cx: Option<&mut Context<'_>>) -> Step {
        let mut step = Step::Idle;
        loop {
            // Asked first: most looks find nothing to write.
            let Some(bytes) = self.driver.peek_transmit(socket) else {
                return step;
            };
            let Some(stream) = self
                .conns
                .get(&socket.conn)
                .and_then(|io| io.socket(socket.side))
            else {
                // No socket to write with (not connected yet, or let go): the chunk stays.
                self.driver.handle_written(self.runtime.now(), socket, 0);
                return step;
            };
            let written = stream.try_write(bytes);
            let now = self.runtime.now();
            match written {
                Ok(0) => {
                    self.driver.handle_write_error(now, socket);
                    return Step::Moved;
                }
                Ok(n) => {
                    self.driver.handle_written(now, socket, n);
                    step = Step::Moved;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {
                    self.driver.handle_written(now, socket, 0);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.driver.handle_written(now, socket, 0);
                    let Some(cx) = cx.as_deref_mut() else {
                        self.wake(socket.conn);
                        return step;
                    };
                    match stream.poll_writable(cx) {
                        Poll::Pending => return step,
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => {
                            log::debug!("{socket}: write failed: {error}");
                            self.driver.handle_write_error(now, socket);
                            return Step::Moved;
                        }
                    }
                }
                Err(error) => {
                    log::debug!("{socket}: write failed: {error}");
                    self.driver.handle_write_error(now, socket);
                    return Step::Moved;
                }
            }
        }
    }

    /// Reads `socket` once if the driver wants it read and it is ready.
    fn read(&mut self, socket: SocketId, cx: &mut Context<'_>) -> Step {
        loop {
            if !self.driver.wants_read(socket) {
                return Step::Idle;
            }
            let Some(stream) = self
                .conns
                .get(&socket.conn)
                .and_then(|io| io.socket(socket.side))
            else {
                return Step::Idle;
            };
            let ready = stream.poll_readable(cx);
            let result = match ready {
                Poll::Pending => return Step::Idle,
                Poll::Ready(Ok(())) => stream.try_read(&mut self.buffer),
                Poll::Ready(Err(error)) => Err(error),
            };
            let now = self.runtime.now();
            match result {
                Ok(0) => {
                    log::debug!("{socket}: end of file");
                    self.driver.handle_read_end(now, socket);
                }
                Ok(n) => self.driver.handle_read(now, socket, &self.buffer[..n]),
                // Not readable after all: look again, which registers the task.
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
                {
                    continue
                }
                Err(error) => {
                    log::debug!("{socket}: read failed: {error}");
                    self.driver.handle_read_end(now, socket);
                }
            }
            return Step::Moved;
        }
    }

    /// Carries out the driver's actions until there are none, then makes sure the deadline
    /// task sleeps no later than the driver's next deadline.
    fn carry_out_actions(&mut self) {
        self.run_actions();
        self.notice_deadline();
    }

    /// Carries out the driver's actions until there are none.
    fn run_actions(&mut self) {
        while let Some(action) = self.driver.poll_action() {
            match action {
                DriverAction::Wake(socket) => {
                    self.rename(socket);
                    if self.running != Some(socket.conn) {
                        // Written at once; only a full socket needs its task. Lb is read
                        // whenever it has something, so its task is waiting on it already;
                        // La is read per grant, which may be new.
                        self.flush(socket, None);
                        if socket.side == Side::La && self.driver.wants_read(socket) {
                            self.watch_la(socket);
                        }
                    }
                }
                DriverAction::Connect {
                    conn,
                    addr,
                    timeout,
                } => {
                    let task =
                        connect_lb(self.me.clone(), self.runtime.clone(), conn, addr, timeout);
                    self.runtime.spawn(Box::pin(task));
                }
                DriverAction::CheckPassword(conn, check) => {
                    let hub = self.me.clone();
                    let check = self.runtime.unblock(move || check.run());
                    self.runtime.spawn(Box::pin(async move {
                        let correct = check.await;
                        if let Some(hub) = hub.upgrade() {
                            let mut hub = hub.borrow_mut();
                            hub.driver
                                .handle_password_checked(Instant::now(), conn, correct);
                            hub.carry_out_actions();
                        }
                    }));
                }
                DriverAction::Cluster(output) => {
                    // Unbounded: the engine's own backlog is bounded by the sessions' requests.
                    if let Some(cluster) = &self.cluster {
                        let _ = cluster.try_send(output);
                    }
                }
                DriverAction::ShutdownWrite(socket) => self.shutdown(socket, Shutdown::Write),
                DriverAction::ShutdownBoth(socket) => self.shutdown(socket, Shutdown::Both),
                DriverAction::Release(socket) => {
                    self.rename(socket);
                    // Woken first, so that a task whose connection is gone sees it and ends.
                    self.wake(socket.conn);
                    if let Some(io) = self.conns.get_mut(&socket.conn) {
                        io.slot(socket.side).take();
                    }
                    if !self.driver.is_open(socket.conn) {
                        self.conns.remove(&socket.conn);
                    }
                }
            }
        }
    }

    /// Notes an action on `socket`: if its connection's task is the one running, that task
    /// looks at it again.
    fn rename(&mut self, socket: SocketId) {
        if self.running == Some(socket.conn) {
            self.renamed[socket.side as usize] = true;
        }
    }

    fn shutdown(&mut self, socket: SocketId, how: Shutdown) {
        self.rename(socket);
        if let Some(stream) = self
            .conns
            .get(&socket.conn)
            .and_then(|io| io.socket(socket.side))
        {
            let _ = stream.shutdown(how);
        }
        // Its task looks again: a lingering socket waits for the peer's end.
        self.wake(socket.conn);
    }

    /// A new read grant on `socket` (La) of a connection whose task is not running: the task
    /// is registered for the socket's readiness with its own waker, and woken only if the
    /// socket is ready now. A `/to` answered from the recipient's task so costs the sender's
    /// task no run until its next request arrives.
    fn watch_la(&mut self, socket: SocketId) {
        let Some(io) = self.conns.get(&socket.conn) else {
            return;
        };
        let (Some(waker), Some(stream)) = (io.waker.as_ref(), io.la.as_ref()) else {
            return self.wake(socket.conn);
        };
        if stream
            .poll_readable(&mut Context::from_waker(waker))
            .is_ready()
        {
            waker.wake_by_ref();
        }
    }

    /// Wakes a connection's task, unless it is the one running.
    fn wake(&self, conn: ConnId) {
        if self.running == Some(conn) {
            return;
        }
        if let Some(waker) = self.conns.get(&conn).and_then(|io| io.waker.as_ref()) {
            waker.wake_by_ref();
        }
    }

    /// Ready once a stop is done: the driver has closed every connection.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.driver.is_stopped() {
            return Poll::Ready(());
        }
        remember(&mut self.stopped, cx.waker());
        Poll::Pending
    }

    /// Wakes the deadline task if the driver's next deadline comes before the one it sleeps
    /// until; while stopping, wakes the command loop to see whether the stop is done.
    fn notice_deadline(&mut self) {
        if self.driver.is_stopping() {
            if let Some(waker) = &self.stopped {
                waker.wake_by_ref();
            }
        }
        let Some(next) = self.driver.poll_timeout() else {
            return;
        };
        if self.timer.until.is_some_and(|until| until <= next) {
            return;
        }
        self.timer.until = Some(next);
        if let Some(waker) = &self.timer.waker {
            waker.wake_by_ref();
        }
    }
}
