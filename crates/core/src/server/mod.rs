//! The server side: [`Server`], the hub that owns every client's [`ServerSession`] and routes
//! between them, and [`BroadcastAggregator`], which turns delivery outcomes into one answer.
//!
//! Its driver ([`ServerDriver`](crate::driver::ServerDriver)) accepts connections
//! ([`Server::accept`]), feeds what happens on sockets in ([`Server::handle_input`]) and the
//! passing of time ([`Server::handle_timeout`]), and carries out each [`Output`] from
//! [`Server::poll_output`] until it returns `None`. Then nothing new happens until the next
//! input or [`Server::poll_timeout`].

mod broadcast;
mod cluster;
mod directory;
mod session;
mod throttle;
mod timers;

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
// Addresses are plain values; `core::net` holds them without any socket machinery.
use core::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

pub use broadcast::{BroadcastAggregator, Outcome};
pub use cluster::{ClusterInput, ClusterOutput, NodeId, NodeMessage, OnlineEntry, QueryId};
pub use session::{LbEvent, Mailbox, Queued, RequestId, ServerSession, SessionState, Step};
pub use throttle::{Attempt, Budget, CheckQueue, LoginThrottle, Source, ThrottleConfig, Throttled};

use crate::metrics::{DeliveryOutcome, LoginResult, RequestKind, ServerMetrics, SessionEnd};
use crate::protocol::{write_list, Delivery, Response, DEFAULT_MAX_LINE};
use crate::users::{PasswordCheck, Users, Verdict};
use directory::LocalDirectory;
use session::Refused;
use timers::{TimerKind, Timers};

/// Names one client connection (its La, and its Lb once made) for as long as it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The server's limits; the defaults are docs/protocol.md's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a recipient has to answer `302` (`--ack-timeout`).
    pub ack_timeout: Duration,
    /// How long connecting Lb may take (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// How long a connection may stay unauthenticated (`--login-timeout`).
    pub login_timeout: Duration,
    /// Failed logins in a row after which the connection is closed (`--max-login-failures`).
    pub max_login_failures: u32,
    /// The bound on one line, `\n` included (`--max-line`).
    pub max_line: usize,
    /// Messages that may wait for one recipient (`--max-queue`).
    pub max_queue: usize,
    /// The login throttle's budgets (docs/hardening.md).
    pub throttle: ThrottleConfig,
    /// Password checks (argon2) running at once (`--password-checks`): each takes the hash's
    /// memory (19 MiB for `--hash-password`'s), so this bounds the server's peak.
    pub password_checks: usize,
    /// Password checks that may wait for a turn (`--password-check-queue`); a login past it is
    /// answered `102` unchecked.
    pub password_check_queue: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            ack_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(300),
            max_login_failures: 5,
            max_line: DEFAULT_MAX_LINE,
            max_queue: 1024,
            throttle: ThrottleConfig::default(),
            password_checks: 2,
            password_check_queue: 1024,
        }
    }
}

/// Something that happened on a client's sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes read from La. Read them only when [`Output::ReadLa`] allows, so that a client
    /// that sends ahead is held back by TCP and not by the server's memory.
    LaData(ConnId, &'a [u8]),
    /// La reached end of file or failed (reading or writing).
    LaClosed(ConnId),
    /// The connection asked for by [`Output::ConnectLb`] is up.
    LbConnected(ConnId),
    /// The connection asked for by [`Output::ConnectLb`] could not be made.
    LbConnectFailed(ConnId),
    /// Bytes read from Lb.
    LbData(ConnId, &'a [u8]),
    /// Lb reached end of file or reading it failed.
    LbClosed(ConnId),
    /// Writing to Lb failed (an error, a write deadline passed, or too much left unwritten).
    /// It ends the session as [`Input::LbClosed`] does; only the reason logged and counted
    /// differs.
    LbWriteFailed(ConnId),
    /// The result of the check asked for by [`Output::CheckPassword`].
    PasswordChecked(ConnId, bool),
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Read once from La and feed what came as [`Input::LaData`].
    ReadLa(ConnId),
    /// Write these bytes to La.
    SendLa(ConnId, Bytes),
    /// Connect Lb to this address (the port the client named, at La's peer IP) and report
    /// [`Input::LbConnected`] or [`Input::LbConnectFailed`]. The server times the attempt out
    /// itself; a connection that arrives after [`Output::Close`] is simply dropped.
    ConnectLb(ConnId, SocketAddr),
    /// Write these bytes to Lb.
    SendLb(ConnId, Bytes),
    /// Write what is still queued for this connection, then close La and Lb and forget it.
    Close(ConnId),
    /// Run this password check off the event loop (argon2 takes tens of milliseconds by design)
    /// and feed its result as [`Input::PasswordChecked`]. Until then the connection's next line
    /// waits, and everyone else is served. Feed the result even if the connection has closed
    /// meanwhile: at most [`ServerConfig::password_checks`] are out at once, and each counts
    /// until its result is back.
    CheckPassword(ConnId, PasswordCheck),
    /// Cluster mode only: ask the directory or another node, and feed the answer with
    /// [`Server::handle_cluster`].
    Cluster(ClusterOutput),
}

/// Whether the server serves, or how far its stop has come ([`Server::stop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// Reading and serving requests.
    Running,
    /// No new request is read; those in flight have until `deadline` to be answered, and a
    /// session with nothing in flight is ended as soon as it has none.
    Draining { deadline: Instant },
    /// Every session has ended; last answers that wait for the cluster's release (`releasing`)
    /// go out unreleased at `deadline`, so that a silent directory cannot hold the stop.
    Closing { deadline: Instant },
}

/// A session and the bookkeeping the hub keeps beside it.
#[derive(Debug)]
struct Entry {
    session: ServerSession,
    /// The deadlines currently registered in the hub's timers for this session.
    registered: [Option<Instant>; 2],
    /// A [`Output::ReadLa`] was issued and its data has not come yet.
    read_granted: bool,
    /// When it logged in, among this server's sessions.
    login_order: Option<u64>,
    /// The password check the throttle let through, until its verdict is known.
    attempt: Option<Attempt>,
}

/// A `/to` or `/toall` waiting for its recipients.
#[derive(Debug)]
struct Pending {
    sender: ConnId,
    kind: RequestKind,
    aggregator: BroadcastAggregator,
    /// Where each slot's delivery went, to withdraw them if the sender leaves and to fail
    /// those of a node that goes down.
    recipients: Recipients,
}

/// A request's recipients, by slot; a `/to`'s one is inline.
type Recipients = SmallVec<[(NodeId, ConnId); 1]>;

/// Where the online users are known.
#[derive(Debug)]
enum Directory {
    /// This server is the whole cluster: the directory is here and answers at once.
    Local(LocalDirectory),
    /// A cluster: the directory answers through [`Output::Cluster`] and [`Server::handle_cluster`].
    Cluster,
}

/// What a request waits for from the directory.
#[derive(Debug)]
enum Asked {
    /// `/list`.
    List,
    /// `/toall`: `line` for everyone else.
    ToAll { line: Bytes },
}

/// A directory question and the request that waits for it.
#[derive(Debug)]
struct Question {
    conn: ConnId,
    request: RequestId,
    asked: Asked,
}

/// The hub: every session by connection id, the online users in login order, routing and
/// delivery, and every teardown rule of docs/protocol.md §3.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    users: Users,
    sessions: FxHashMap<ConnId, Entry>,
    next_conn: u64,
    /// This server's name in its cluster.
    node: NodeId,
    directory: Directory,
    /// Sessions ended with a last answer (`310`, `202`, `102`) that waits for their release in
    /// the cluster's directory: sent before it, it would let the client ask another node,
    /// which may still list the user.
    releasing: FxHashMap<ConnId, Response<'static>>,
    /// Sessions logging in whose claim is with the cluster's directory, and the user.
    claiming: FxHashMap<ConnId, Vec<u8>>,
    questions: FxHashMap<QueryId, Question>,
    next_query: u64,
    next_login: u64,
    requests: FxHashMap<RequestId, Pending>,
    /// `/to` requests whose sender left before they were [`ClusterInput::Routed`]: their
    /// withdrawal goes out once it is known where to.
    unrouted_withdrawn: FxHashSet<RequestId>,
    /// Nodes reported down ([`ClusterInput::NodeDown`]): node ids are never reused, so a
    /// directory answer that still names one (it was read before the reaper ran) must not send
    /// it a delivery that nothing would ever answer.
    down: BTreeSet<NodeId>,
    /// The last delivery taken from each other node. A node's deliveries come in the order
    /// it numbered them, and the engine may hand one over twice (at least once): one not
    /// after the last is a repeat, and queueing it again would show its line twice.
    last_delivered: FxHashMap<NodeId, (RequestId, usize)>,
    next_request: u64,
    timers: Timers,
    /// The deadlines [`Server::handle_timeout`] is firing; kept for its room.
    due: Vec<(Instant, ConnId, TimerKind)>,
    /// Sessions whose request was answered, so their next La line may be read.
    wakeups: Vec<ConnId>,
    /// Sessions whose deadlines may have changed during the current call; [`Server::sync`]
    /// brings the hub's timers up to date for each of them once, as the call returns.
    touched: Vec<ConnId>,
    outputs: VecDeque<Output>,
    lb_events: Vec<LbEvent>,
    /// What is counted for Prometheus (nothing, unless [`Server::set_metrics`] was called).
    metrics: ServerMetrics,
    throttle: LoginThrottle,
    checks: CheckQueue,
    lifecycle: Lifecycle,
}

impl Server {
    /// A server for these accounts that is the whole cluster: its directory is in memory.
    pub fn new(users: Users, config: ServerConfig) -> Self {
        Server::with_directory(
            users,
            config,
            NodeId(0),
            Directory::Local(LocalDirectory::default()),
        )
    }

    /// Node `node` of a cluster: who is online is asked of the cluster's directory, and
    /// messages to users on other nodes go through them ([`Output::Cluster`]).
    pub fn clustered(users: Users, config: ServerConfig, node: NodeId) -> Self {
        Server::with_directory(users, config, node, Directory::Cluster)
    }

    fn with_directory(
        users: Users,
        config: ServerConfig,
        node: NodeId,
        directory: Directory,
    ) -> Self {
        let throttle = LoginThrottle::new(config.throttle.clone());
        let checks = CheckQueue::new(config.password_checks, config.password_check_queue);
        Server {
            config,
            users,
            sessions: FxHashMap::default(),
            next_conn: 0,
            node,
            directory,
            releasing: FxHashMap::default(),
            claiming: FxHashMap::default(),
            questions: FxHashMap::default(),
            next_query: 0,
            next_login: 0,
            requests: FxHashMap::default(),
            unrouted_withdrawn: FxHashSet::default(),
            down: BTreeSet::new(),
            last_delivered: FxHashMap::default(),
            next_request: 0,
            timers: Timers::default(),
            due: Vec::new(),
            wakeups: Vec::new(),
            touched: Vec::new(),
            outputs: VecDeque::new(),
            lb_events: Vec::new(),
            metrics: ServerMetrics::default(),
            throttle,
            checks,
            lifecycle: Lifecycle::Running,
        }
    }

    /// Counts into `metrics` from now on. Call it before the first [`Server::accept`]: the
    /// online-users gauge counts logins and departures, not who is there already.
    pub fn set_metrics(&mut self, metrics: ServerMetrics) {
        self.metrics = metrics;
    }

    /// What this server counts into.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A client connected from `peer`; the returned id names it from now on.
    pub fn accept(&mut self, now: Instant, peer: SocketAddr) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let session = ServerSession::new(now, peer, &self.config);
        self.sessions.insert(
            conn,
            Entry {
                session,
                registered: [None, None],
                read_granted: false,
                login_order: None,
                attempt: None,
            },
        );
        log::debug!("{conn} connected from {peer}");
        // Grants the first read of La; the login deadline is registered as the call returns.
        self.read_la(now, conn);
        self.sync_touched();
        conn
    }

    /// Whether a new connection from `ip` may be accepted: not while that address's
    /// connections keep ending without a login ([`ThrottleConfig::reconnects`]). Refused
    /// addresses are logged once a minute at most.
    pub fn admit(&mut self, now: Instant, ip: core::net::IpAddr) -> Result<(), Throttled> {
        let admitted = self.throttle.admit(now, ip);
        if let Err(reason) = admitted {
            self.metrics.throttled(reason);
            if self.throttle.should_log(now, ip) {
                log::warn!(
                    "connections from {} refused: too many ended without a login \
                     (--throttle-reconnects; logged once a minute)",
                    Source::of(ip)
                );
            }
        }
        admitted
    }

    /// Whether to log something about `ip` now: once a minute per address at most, so that a
    /// flood from one address logs a line a minute.
    pub fn should_log(&mut self, now: Instant, ip: core::net::IpAddr) -> bool {
        self.throttle.should_log(now, ip)
    }

    /// Feeds one socket event in. Events for a connection already closed are ignored.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::LaData(conn, data) => {
                if let Some(entry) = self.sessions.get_mut(&conn) {
                    entry.read_granted = false;
                    entry.session.push_unread(data);
                    self.read_la(now, conn);
                }
            }
            Input::LaClosed(conn) => self.end_session(now, conn, SessionEnd::LaClosed, None),
            Input::LbConnected(conn) => {
                let connected = self
                    .sessions
                    .get_mut(&conn)
                    .is_some_and(|entry| entry.session.lb_connected());
                if connected {
                    self.reply(conn, &Response::LbOk);
                    self.touch(conn);
                    self.read_la(now, conn);
                }
            }
            Input::LbConnectFailed(conn) => {
                if matches!(
                    self.session(conn).map(ServerSession::state),
                    Some(SessionState::ConnectingLb { .. })
                ) {
                    self.end_session(
                        now,
                        conn,
                        SessionEnd::LbConnectFailed,
                        Some(Response::LbFailed),
                    );
                }
            }
            Input::LbData(conn, data) => self.lb_data(now, conn, data),
            Input::LbClosed(conn) => self.end_session(now, conn, SessionEnd::LbClosed, None),
            Input::LbWriteFailed(conn) => {
                self.end_session(now, conn, SessionEnd::LbWriteFailed, None)
            }
            Input::PasswordChecked(conn, correct) => {
                if !self.checks.finished(conn) {
                    return; // a stray result: nothing of it was running
                }
                self.run_checks();
                let checked = self.sessions.get_mut(&conn).and_then(|entry| {
                    let user = entry.session.finish_check()?;
                    Some((user, entry.attempt.take()))
                });
                if let Some((user, attempt)) = checked {
                    if let Some(attempt) = attempt {
                        self.judged(now, attempt, correct);
                    }
                    // A reload may have removed the user while its password was checked.
                    let correct = correct && self.users.contains(&user);
                    self.finish_login(now, conn, &user, correct);
                    self.touch(conn);
                    self.read_la(now, conn);
                }
            }
        }
        self.run_wakeups(now);
        self.advance_stop(now);
        self.sync_touched();
    }

    /// Fires every deadline that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        let sessions = &self.sessions;
        self.timers
            .take_due(now, |at, conn| ack_is(sessions, conn, at), &mut due);
        for &(at, conn, kind) in &due {
            // A session ended by a deadline before this one is gone, its deadlines with it.
            let Some(entry) = self.sessions.get_mut(&conn) else {
                continue;
            };
            if entry.registered[kind as usize] != Some(at) {
                continue;
            }
            entry.registered[kind as usize] = None;
            self.timers.change(kind, conn, Some(at), None);
            match kind {
                TimerKind::State => self.state_deadline_passed(now, conn),
                TimerKind::Ack => self.end_session(now, conn, SessionEnd::AckTimeout, None),
            }
        }
        due.clear();
        self.due = due;
        self.stop_deadline_passed(now);
        self.run_wakeups(now);
        self.advance_stop(now);
        self.sync_touched();
    }

    /// The next thing the driver must do, or `None` until new input or the next timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Server::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stop = match self.lifecycle {
            Lifecycle::Running => None,
            Lifecycle::Draining { deadline } => Some(deadline),
            // Only a release still waited for needs the deadline.
            Lifecycle::Closing { deadline } => {
                Some(deadline).filter(|_| !self.releasing.is_empty())
            }
        };
        self.timers.next().into_iter().chain(stop).min()
    }

    /// Replaces the accounts (the users file was read again): a new user may log in at once,
    /// a changed password counts from the next login, and the session of a user who is no
    /// longer there ends as if it had left (its deliveries fail, `304` to their senders).
    /// Everyone else is untouched.
    pub fn reload_users(&mut self, now: Instant, users: Users) {
        let mut removed: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, entry)| {
                entry
                    .session
                    .user()
                    .is_some_and(|user| !users.contains(user))
            })
            .map(|(&conn, _)| conn)
            .collect();
        // In connection order, so that the same reload always ends them the same way.
        removed.sort_unstable();
        log::info!(
            "users reloaded: {} accounts; {} sessions of removed users end",
            users.len(),
            removed.len()
        );
        self.users = users;
        for conn in removed {
            self.end_session(now, conn, SessionEnd::Removed, None);
        }
        self.run_wakeups(now);
        self.advance_stop(now);
        self.sync_touched();
    }

    /// Puts `config` in force from `now` on (a reload, SIGHUP), dropping no one. What is
    /// under way keeps what it started with: a deadline already set stands, a connection keeps
    /// the line bound it was accepted with, a check running goes on. From then on: new
    /// deadlines, queues, login failures and lines are bounded by `config`; the throttle keeps
    /// what it counted under its new budgets ([`LoginThrottle::reconfigure`]); more password
    /// checks may start at once if the bound rose.
    pub fn reconfigure(&mut self, now: Instant, config: ServerConfig) {
        log::debug!("settings reloaded: {config:?}");
        self.throttle.reconfigure(now, config.throttle.clone());
        self.checks
            .resize(config.password_checks, config.password_check_queue);
        self.config = config;
        self.run_checks();
        self.run_wakeups(now);
        self.advance_stop(now);
        self.sync_touched();
    }

    /// Begins a graceful stop: no new request is read, the requests in flight have until
    /// `now` + the ack timeout to be answered (`303`/`304`), and each session ends once it has
    /// nothing in flight. [`Server::is_stopped`] says when all have ended. Calling it again
    /// changes nothing.
    pub fn stop(&mut self, now: Instant) {
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        let deadline = now + self.config.ack_timeout;
        log::info!(
            "stopping: {} requests in flight have {:?} to be answered",
            self.requests.len(),
            self.config.ack_timeout
        );
        self.lifecycle = Lifecycle::Draining { deadline };
        self.advance_stop(now);
        self.sync_touched();
    }

    /// Whether a stop has begun ([`Server::stop`]).
    pub fn is_stopping(&self) -> bool {
        self.lifecycle != Lifecycle::Running
    }

    /// Whether a stop has ended every session and sent every last answer: what is left is
    /// the driver's writing and closing.
    pub fn is_stopped(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Closing { .. })
            && self.sessions.is_empty()
            && self.releasing.is_empty()
    }

    /// While draining, ends every session with nothing in flight: no request of its own
    /// waiting, no delivery waiting for its `302`.
    fn advance_stop(&mut self, now: Instant) {
        let Lifecycle::Draining { .. } = self.lifecycle else {
            return;
        };
        let idle: Vec<ConnId> = self
            .sessions
            .iter()
            .filter(|(_, entry)| !entry.session.is_busy())
            .map(|(&conn, _)| conn)
            .collect();
        for conn in idle {
            self.end_session(now, conn, SessionEnd::Shutdown, None);
        }
        if self.sessions.is_empty() {
            self.closing(now);
        }
    }

    /// Every session has ended: last answers waiting for a release get one ack timeout more.
    fn closing(&mut self, now: Instant) {
        self.lifecycle = Lifecycle::Closing {
            deadline: now + self.config.ack_timeout,
        };
        log::info!("stopping: every session has ended");
    }

    /// Past the stop's deadline, whatever is still in flight fails: each recipient's
    /// deliveries first and then every request still open, so that each sender gets its `304`
    /// before its own session ends.
    fn stop_deadline_passed(&mut self, now: Instant) {
        match self.lifecycle {
            Lifecycle::Draining { deadline } if deadline <= now => {
                let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
                log::info!("stopping: {} sessions still busy are ended", conns.len());
                for &conn in &conns {
                    let Some(entry) = self.sessions.get_mut(&conn) else {
                        continue;
                    };
                    for queued in entry.session.drain_deliveries() {
                        self.metrics.delivery(DeliveryOutcome::AckTimeout);
                        self.settle(queued.origin, queued.request, queued.slot, false);
                    }
                }
                let open: Vec<(RequestId, usize)> = self
                    .requests
                    .iter()
                    .map(|(&request, pending)| (request, pending.recipients.len()))
                    .collect();
                for (request, slots) in open {
                    for slot in 0..slots {
                        self.settle(self.node, request, slot, false);
                    }
                }
                for conn in conns {
                    self.end_session(now, conn, SessionEnd::Shutdown, None);
                }
                self.closing(now);
            }
            Lifecycle::Closing { deadline } if deadline <= now => {
                let mut releasing: Vec<_> = self.releasing.drain().collect();
                releasing.sort_unstable_by_key(|(conn, _)| *conn);
                for (conn, last) in releasing {
                    self.reply(conn, &last);
                    self.outputs.push_back(Output::Close(conn));
                }
            }
            _ => {}
        }
    }

    /// The session of `conn`, if it is still open.
    pub fn session(&self, conn: ConnId) -> Option<&ServerSession> {
        self.sessions.get(&conn).map(|entry| &entry.session)
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.sessions.len()
    }

    /// This server's node in its cluster (`NodeId(0)` for a single server).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The online users of this server in the order they logged in, with their connections.
    /// In a cluster, those of this node only.
    pub fn online_in_login_order(&self) -> impl Iterator<Item = (ConnId, &[u8])> + '_ {
        let mut online: Vec<_> = self
            .sessions
            .iter()
            .filter_map(|(&conn, entry)| Some((entry.login_order?, conn, entry.session.user()?)))
            .collect();
        online.sort_unstable();
        online.into_iter().map(|(_, conn, user)| (conn, user))
    }

    /// Feeds what the cluster's directory or another node said. A single server gets none.
    pub fn handle_cluster(&mut self, now: Instant, input: ClusterInput) {
        match input {
            ClusterInput::Claimed { conn, claimed } => {
                let Some(user) = self.claiming.remove(&conn) else {
                    return;
                };
                let waiting = self
                    .sessions
                    .get_mut(&conn)
                    .and_then(|entry| entry.session.finish_check());
                match waiting {
                    // Removed by a reload while the directory was asked: the claim goes back.
                    Some(_) if claimed && !self.users.contains(&user) => {
                        self.cluster(ClusterOutput::Release {
                            conn,
                            user: user.clone(),
                        });
                        self.claim_answered(now, conn, &user, LoginResult::BadCredentials);
                        self.touch(conn);
                        self.read_la(now, conn);
                    }
                    Some(_) => {
                        let result = if claimed {
                            LoginResult::Ok
                        } else {
                            LoginResult::AlreadyOnline
                        };
                        self.claim_answered(now, conn, &user, result);
                        self.touch(conn);
                        self.read_la(now, conn);
                    }
                    // Gone meanwhile: the claim it won must not keep the user online.
                    None if claimed => self.cluster(ClusterOutput::Release { conn, user }),
                    None => {}
                }
            }
            ClusterInput::Released { conn } => {
                if let Some(last) = self.releasing.remove(&conn) {
                    self.reply(conn, &last);
                    self.outputs.push_back(Output::Close(conn));
                }
            }
            ClusterInput::Online { query, entries } => {
                if let Some(question) = self.questions.remove(&query) {
                    self.answered(now, question, entries);
                }
            }
            ClusterInput::Routed { request, to } => self.routed(request, to),
            ClusterInput::Received { from, message } => self.received(now, from, message),
            ClusterInput::NodeDown(node) => self.node_down(node),
            ClusterInput::NodeUp(node) => {
                log::info!("node {} is back", node.0);
                self.down.remove(&node);
            }
            ClusterInput::LeaseLost => {
                let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
                log::warn!(
                    "this node's lease is lost: ending its {} sessions",
                    conns.len()
                );
                for conn in conns {
                    self.end_session(now, conn, SessionEnd::LeaseLost, None);
                }
            }
        }
        self.run_wakeups(now);
        self.advance_stop(now);
        self.sync_touched();
    }

    /// Reads La lines of `conn` for as long as it is not busy, then asks for more bytes.
    fn read_la(&mut self, now: Instant, conn: ConnId) {
        // A stopping server reads no new request, not even one already received.
        if self.lifecycle != Lifecycle::Running {
            return;
        }
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        if !entry.session.is_reading() {
            return;
        }
        let (mut framer, unread) = entry.session.take_input();
        let mut input = &unread[..];
        loop {
            let Some(entry) = self.sessions.get_mut(&conn) else {
                return;
            };
            if !entry.session.is_reading() {
                break;
            }
            let Some(frame) = framer.next_frame(&mut input) else {
                break;
            };
            let step = entry.session.on_frame(now, frame, &self.config);
            self.step(now, conn, step);
        }
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        let framed = unread.len() - input.len();
        entry.session.restore_input(framer, unread, framed);
        if entry.session.is_reading() && !entry.session.has_unread() && !entry.read_granted {
            entry.read_granted = true;
            self.outputs.push_back(Output::ReadLa(conn));
        }
        self.touch(conn);
    }

    /// Carries out what the session decided a line means.
    fn step(&mut self, now: Instant, conn: ConnId, step: Step<'_>) {
        match step {
            Step::Reply(response) => self.reply(conn, &response),
            Step::Login { user, password } => self.login(now, conn, user, password),
            Step::ConnectLb(addr) => {
                log::debug!("{conn} asks for Lb at {addr}");
                self.outputs.push_back(Output::ConnectLb(conn, addr));
            }
            Step::List => self.ask(now, conn, Asked::List),
            Step::To { target, content } => self.send_to(now, conn, target, content),
            Step::ToAll { content } => self.broadcast(now, conn, content),
            Step::Exit => self.end_session(now, conn, SessionEnd::Exit, Some(Response::Bye)),
        }
        self.touch(conn);
    }

    /// A `/login`: past the throttle, its password is checked at once (plain) or queued for a
    /// check off the loop (argon2); a throttled one is answered `102` unchecked.
    fn login(&mut self, now: Instant, conn: ConnId, user: &[u8], password: &[u8]) {
        let Some(entry) = self.sessions.get(&conn) else {
            return;
        };
        let ip = entry.session.peer().ip();
        let attempt = match self.throttle.start(now, ip, user) {
            Ok(attempt) => attempt,
            Err(reason) => return self.throttled(now, conn, user, reason),
        };
        match self.users.check(user, password) {
            Verdict::Settled(correct) => {
                self.judged(now, attempt, correct);
                self.finish_login(now, conn, user, correct);
            }
            Verdict::Deferred(check) => match self.checks.push(ip, conn, check) {
                Ok(()) => {
                    if let Some(entry) = self.sessions.get_mut(&conn) {
                        entry.session.start_check(user);
                        entry.attempt = Some(attempt);
                    }
                    self.run_checks();
                }
                Err(_) => {
                    self.throttle.cancel(now, attempt);
                    self.throttled(now, conn, user, Throttled::Busy);
                }
            },
        }
    }

    /// Tells the throttle how a check it let through came out.
    fn judged(&mut self, now: Instant, attempt: Attempt, correct: bool) {
        match correct {
            true => self.throttle.succeeded(now, attempt),
            false => self.throttle.failed(now, attempt),
        }
    }

    /// Answers a throttled `/login` `102`, as a failed one; logged once a minute per address.
    fn throttled(&mut self, now: Instant, conn: ConnId, user: &[u8], reason: Throttled) {
        let Some(entry) = self.sessions.get(&conn) else {
            return;
        };
        let peer = entry.session.peer();
        self.metrics.throttled(reason);
        if self.throttle.should_log(now, peer.ip()) {
            log::warn!(
                "{conn} login as {} from {peer} throttled: the {reason} budget is spent \
                 (logged once a minute per address)",
                user.escape_ascii()
            );
        }
        self.claim_answered(now, conn, user, LoginResult::Throttled);
    }

    /// Hands out the queued password checks that may start now, skipping those whose
    /// connection has gone meanwhile.
    fn run_checks(&mut self) {
        while let Some((conn, check)) = self.checks.start_next() {
            let waiting = self
                .sessions
                .get(&conn)
                .is_some_and(|entry| entry.session.is_checking());
            match waiting {
                true => self.outputs.push_back(Output::CheckPassword(conn, check)),
                false => {
                    self.checks.finished(conn);
                }
            }
        }
    }

    /// Goes on with a login whose password is known to be `correct` or not: a correct one
    /// still needs the user's claim, which is looked at only now, after a check that may have
    /// taken a while.
    fn finish_login(&mut self, now: Instant, conn: ConnId, user: &[u8], correct: bool) {
        if !correct {
            return self.claim_answered(now, conn, user, LoginResult::BadCredentials);
        }
        match &mut self.directory {
            Directory::Local(directory) => {
                let result = if directory.claim(user, conn) {
                    LoginResult::Ok
                } else {
                    LoginResult::AlreadyOnline
                };
                self.claim_answered(now, conn, user, result);
            }
            Directory::Cluster => {
                let Some(entry) = self.sessions.get_mut(&conn) else {
                    return;
                };
                // Its next line waits for the directory, as it waited for the password check.
                entry.session.start_check(user);
                self.claiming.insert(conn, user.to_vec());
                self.cluster(ClusterOutput::Claim {
                    conn,
                    user: user.to_vec(),
                });
            }
        }
    }

    /// Answers a login: [`LoginResult::Ok`] if the password was right and the user is now
    /// this session's.
    fn claim_answered(&mut self, now: Instant, conn: ConnId, user: &[u8], result: LoginResult) {
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        self.metrics.login(result);
        let peer = entry.session.peer();
        // Escaped, so a hostile user name cannot forge log lines.
        let name = user.escape_ascii();
        if result == LoginResult::Ok {
            entry.session.logged_in(user);
            entry.login_order = Some(self.next_login);
            self.next_login += 1;
            log::info!("{conn} logged in as {name} from {peer}");
            self.reply(conn, &Response::AuthOk);
        } else if entry.session.login_failed(self.config.max_login_failures) {
            // A throttled flood was logged once by `throttled`; its closes are not logged again.
            if result != LoginResult::Throttled {
                log::warn!("{conn} failed login as {name} from {peer}: too many failures");
            }
            self.end_session(
                now,
                conn,
                SessionEnd::TooManyLoginFailures,
                Some(Response::AuthFailed),
            );
        } else {
            if result != LoginResult::Throttled {
                log::info!("{conn} failed login as {name} from {peer}");
            }
            self.reply(conn, &Response::AuthFailed);
        }
    }

    /// Asks the directory what `asked` needs, and goes on once it answers: at once for a
    /// single server, later for a cluster (with the client's next line waiting meanwhile).
    fn ask(&mut self, now: Instant, conn: ConnId, asked: Asked) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let question = Question {
            conn,
            request,
            asked,
        };
        match &self.directory {
            Directory::Local(directory) => {
                let entries = directory.online(self.node);
                self.answered(now, question, Some(entries));
            }
            Directory::Cluster => {
                let Some(entry) = self.sessions.get_mut(&conn) else {
                    return;
                };
                entry.session.start_request(request);
                let query = QueryId(self.next_query);
                self.next_query += 1;
                self.questions.insert(query, question);
                self.cluster(ClusterOutput::Query { query });
            }
        }
    }

    /// Goes on with a request once the directory has answered (`None`: it could not be
    /// reached, and the request fails closed).
    fn answered(&mut self, now: Instant, question: Question, entries: Option<Vec<OnlineEntry>>) {
        let Question {
            conn,
            request,
            asked,
        } = question;
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        if matches!(self.directory, Directory::Cluster) {
            if !entry.session.finish_request(request) {
                return;
            }
            self.wakeups.push(conn);
        }
        let Some(asker) = entry.session.user().map(<[u8]>::to_vec) else {
            return;
        };
        let Some(entries) = entries else {
            log::warn!("{conn}: the directory cannot be reached");
            return match asked {
                // Those online here are known to be: the asker and this node's sessions.
                Asked::List => {
                    let local = self.online_in_login_order();
                    let users: Vec<_> = local.into_iter().map(|(_, user)| user.to_vec()).collect();
                    self.list(conn, &asker, users.iter().map(Vec::as_slice))
                }
                Asked::ToAll { .. } => self.fail_unsent(conn, RequestKind::ToAll),
            };
        };
        match asked {
            Asked::List => self.list(conn, &asker, entries.iter().map(|e| e.user.as_slice())),
            Asked::ToAll { line } => {
                let node = self.node;
                let recipients = entries
                    .iter()
                    .filter(|other| (other.node, other.conn) != (node, conn))
                    .map(|other| (other.node, other.conn))
                    .collect();
                self.submit(now, conn, RequestKind::ToAll, line, recipients);
            }
        }
    }

    /// Answers `304` to a request that reached no recipient.
    fn fail_unsent(&mut self, conn: ConnId, kind: RequestKind) {
        self.metrics.answered(kind, false);
        self.reply(conn, &Response::DeliveryFailed);
    }

    /// Answers `/list`: the asker first, then everyone else online in login order.
    fn list<'u>(&mut self, conn: ConnId, asker: &'u [u8], online: impl Iterator<Item = &'u [u8]>) {
        let others = online.filter(|&user| user != asker);
        let mut line = Vec::new();
        write_list(std::iter::once(asker).chain(others), &mut line);
        self.outputs.push_back(Output::SendLa(conn, line.into()));
    }

    fn send_to(&mut self, now: Instant, conn: ConnId, target: &[u8], content: &[u8]) {
        let Some(sender) = self.session(conn).and_then(ServerSession::user) else {
            return;
        };
        let line = Delivery::From { sender, content }.to_bytes().into();
        // A single server knows at once, with nothing to copy or ask.
        if let Directory::Local(directory) = &self.directory {
            let found = directory.find(target).map(|conn| (self.node, conn));
            return self.send_found(now, conn, line, found);
        }
        self.deliver_to(conn, target.to_vec(), line);
    }

    /// A cluster node's `/to`: finding the recipient and sending it the line are one step of
    /// the engine's ([`ClusterOutput::DeliverTo`]), so a `/to` costs one trip through the
    /// directory, not two; the slot's node is known once it is [`ClusterInput::Routed`].
    fn deliver_to(&mut self, sender: ConnId, user: Vec<u8>, line: Bytes) {
        let Some(entry) = self.sessions.get_mut(&sender) else {
            return;
        };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        entry.session.start_request(request);
        let pending = Pending {
            sender,
            kind: RequestKind::To,
            aggregator: BroadcastAggregator::new(1),
            // None until routed.
            recipients: Recipients::new(),
        };
        self.requests.insert(request, pending);
        self.cluster(ClusterOutput::DeliverTo {
            request,
            user,
            line,
        });
    }

    /// Where a `/to` of this node went ([`ClusterInput::Routed`]).
    fn routed(&mut self, request: RequestId, to: Option<(NodeId, ConnId)>) {
        let Some(pending) = self.requests.get_mut(&request) else {
            // Its sender left before it was routed: the withdrawal follows it there. (A
            // request already settled has nothing left to withdraw.)
            if self.unrouted_withdrawn.remove(&request) {
                if let Some((to, _)) = to {
                    let message = NodeMessage::Withdraw { request };
                    self.cluster(ClusterOutput::Send { to, message });
                }
            }
            return;
        };
        match to {
            None => {
                self.metrics.delivery(DeliveryOutcome::Offline);
                self.settle(self.node, request, 0, false);
            }
            Some((node, conn)) => {
                pending.recipients.push((node, conn));
                if self.down.contains(&node) {
                    self.metrics.delivery(DeliveryOutcome::NodeDown);
                    self.settle(self.node, request, 0, false);
                }
            }
        }
    }

    /// Goes on with a `/to` whose recipient the directory found, or did not.
    fn send_found(
        &mut self,
        now: Instant,
        conn: ConnId,
        line: Bytes,
        found: Option<(NodeId, ConnId)>,
    ) {
        match found {
            Some(target) => {
                let recipients = Recipients::from_elem(target, 1);
                self.submit(now, conn, RequestKind::To, line, recipients)
            }
            None => {
                self.metrics.delivery(DeliveryOutcome::Offline);
                self.fail_unsent(conn, RequestKind::To)
            }
        }
    }

    fn broadcast(&mut self, now: Instant, conn: ConnId, content: &[u8]) {
        let Some(sender) = self.session(conn).and_then(ServerSession::user) else {
            return;
        };
        let line = Delivery::BroadcastFrom { sender, content }
            .to_bytes()
            .into();
        self.ask(now, conn, Asked::ToAll { line });
    }

    /// Starts one request: queues `line` for every recipient at once (here, or on the
    /// recipient's node) and answers when all have settled.
    fn submit(
        &mut self,
        now: Instant,
        sender: ConnId,
        kind: RequestKind,
        line: Bytes,
        recipients: Recipients,
    ) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let mut aggregator = BroadcastAggregator::new(recipients.len());
        if let Some(outcome) = aggregator.poll_outcome() {
            let response = outcome.response();
            self.metrics.answered(kind, outcome == Outcome::Delivered);
            self.reply(sender, &response);
            return;
        }
        if let Some(entry) = self.sessions.get_mut(&sender) {
            entry.session.start_request(request);
        }
        self.requests.insert(
            request,
            Pending {
                sender,
                kind,
                aggregator,
                recipients: Recipients::new(),
            },
        );
        if matches!(self.directory, Directory::Cluster) {
            self.post(request, line, &recipients);
        } else {
            self.deliver_here(now, request, line, &recipients);
        }
        // Kept (moved, not copied) for a withdrawal or a node going down, neither of which can
        // come above; a request all of whose recipients settled there is gone.
        if let Some(pending) = self.requests.get_mut(&request) {
            pending.recipients = recipients;
        }
    }

    /// A single server's deliveries: queued at once, in the order requests are read.
    fn deliver_here(
        &mut self,
        now: Instant,
        request: RequestId,
        mut line: Bytes,
        recipients: &Recipients,
    ) {
        let last = recipients.len().saturating_sub(1);
        for (slot, &(_, conn)) in recipients.iter().enumerate() {
            // The last recipient takes the line itself: a `/to` never clones it (a clone of
            // bytes made from a `Vec` allocates).
            let line = match slot == last {
                true => std::mem::take(&mut line),
                false => line.clone(),
            };
            let origin = self.node;
            self.deliver(now, origin, request, slot, conn, line);
        }
    }

    /// A cluster node's deliveries, its own recipients' included: all through the recipients'
    /// node inboxes in one atomic step, so that every node queues requests in the order they
    /// were accepted (docs/cluster.md), whichever nodes their senders are on.
    fn post(&mut self, request: RequestId, line: Bytes, recipients: &Recipients) {
        let mut messages: Vec<(NodeId, NodeMessage)> = Vec::new();
        for (slot, &(node, conn)) in recipients.iter().enumerate() {
            if self.down.contains(&node) {
                self.metrics.delivery(DeliveryOutcome::NodeDown);
                self.settle(self.node, request, slot, false);
                continue;
            }
            match messages.iter_mut().find(|(to, _)| *to == node) {
                Some((_, NodeMessage::Deliver { recipients, .. })) => recipients.push((slot, conn)),
                _ => {
                    let message = NodeMessage::Deliver {
                        request,
                        recipients: vec![(slot, conn)],
                        line: line.clone(),
                    };
                    messages.push((node, message));
                }
            }
        }
        if !messages.is_empty() {
            self.cluster(ClusterOutput::SendAll { messages });
        }
    }

    /// Queues one delivery for the local session `recipient`, or fails it at once.
    fn deliver(
        &mut self,
        now: Instant,
        origin: NodeId,
        request: RequestId,
        slot: usize,
        recipient: ConnId,
        line: Bytes,
    ) {
        let queued = Queued {
            origin,
            request,
            slot,
            line,
        };
        let max_queue = self.config.max_queue;
        let queued = match self.sessions.get_mut(&recipient) {
            Some(entry) => entry.session.enqueue(queued, max_queue),
            None => Err(Refused::NotReady),
        };
        match queued {
            Ok(waiting) => {
                self.metrics.queued(waiting);
                self.send_next(now, recipient);
            }
            Err(refused) => {
                self.metrics.delivery(match refused {
                    Refused::NotReady => DeliveryOutcome::Offline,
                    Refused::Full => DeliveryOutcome::QueueFull,
                });
                self.settle(origin, request, slot, false);
            }
        }
    }

    /// Sends the recipient's next queued message if none is outstanding.
    fn send_next(&mut self, now: Instant, recipient: ConnId) {
        let ack_timeout = self.config.ack_timeout;
        let Some(entry) = self.sessions.get_mut(&recipient) else {
            return;
        };
        if let Some(line) = entry.session.next_to_send(now, ack_timeout) {
            self.outputs.push_back(Output::SendLb(recipient, line));
            self.touch(recipient);
        }
    }

    /// Records one recipient's outcome, here or on the sender's node; the sender gets its
    /// answer when the last one settles.
    fn settle(&mut self, origin: NodeId, request: RequestId, slot: usize, delivered: bool) {
        if origin != self.node {
            let message = NodeMessage::Outcome {
                request,
                slot,
                delivered,
            };
            return self.cluster(ClusterOutput::Send {
                to: origin,
                message,
            });
        }
        let Some(pending) = self.requests.get_mut(&request) else {
            return;
        };
        let Some(outcome) = pending.aggregator.settle(slot, delivered) else {
            return;
        };
        let (sender, kind) = (pending.sender, pending.kind);
        self.requests.remove(&request);
        let Some(entry) = self.sessions.get_mut(&sender) else {
            return;
        };
        if entry.session.finish_request(request) {
            let response = outcome.response();
            self.metrics.answered(kind, outcome == Outcome::Delivered);
            self.reply(sender, &response);
            self.wakeups.push(sender);
        }
    }

    fn lb_data(&mut self, now: Instant, conn: ConnId, data: &[u8]) {
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        let mut events = std::mem::take(&mut self.lb_events);
        entry.session.on_lb_data(data, &mut events);
        for event in events.drain(..) {
            match event {
                LbEvent::Acked {
                    origin,
                    request,
                    slot,
                    sent,
                } => {
                    self.metrics.delivery(DeliveryOutcome::Delivered);
                    self.metrics.acked(now.saturating_duration_since(sent));
                    self.settle(origin, request, slot, true);
                    self.send_next(now, conn);
                }
                LbEvent::Violation => {
                    log::info!("{conn} sent something other than 302 on Lb");
                    self.end_session(now, conn, SessionEnd::WrongAck, None);
                }
            }
        }
        self.lb_events = events;
        self.touch(conn);
    }

    /// What another node said.
    fn received(&mut self, now: Instant, from: NodeId, message: NodeMessage) {
        match message {
            NodeMessage::Deliver {
                request,
                recipients,
                line,
            } => {
                // Its sender's node is gone and its queued lines were withdrawn: these, read
                // only now, go the same way.
                if self.down.contains(&from) {
                    let dropped = recipients.len();
                    self.metrics.deliveries(DeliveryOutcome::Withdrawn, dropped);
                    return;
                }
                for (slot, conn) in recipients {
                    let last = self.last_delivered.get(&from);
                    if last.is_some_and(|&last| last >= (request, slot)) {
                        log::debug!("a repeated delivery from node {} dropped", from.0);
                        continue;
                    }
                    self.last_delivered.insert(from, (request, slot));
                    // A stopping node takes no new work: the sender hears `304` at once.
                    if self.lifecycle != Lifecycle::Running {
                        self.metrics.delivery(DeliveryOutcome::Offline);
                        self.settle(from, request, slot, false);
                        continue;
                    }
                    self.deliver(now, from, request, slot, conn, line.clone());
                }
            }
            NodeMessage::Outcome {
                request,
                slot,
                delivered,
            } => self.settle(self.node, request, slot, delivered),
            NodeMessage::Withdraw { request } => {
                for entry in self.sessions.values_mut() {
                    let dropped = entry.session.withdraw(from, request);
                    self.metrics.deliveries(DeliveryOutcome::Withdrawn, dropped);
                }
            }
        }
    }

    /// Fails everything that waits on `node`, which is gone.
    fn node_down(&mut self, node: NodeId) {
        log::warn!("node {} is down: its deliveries fail", node.0);
        self.down.insert(node);
        let lost: Vec<(RequestId, usize)> = self
            .requests
            .iter()
            .flat_map(|(&request, pending)| {
                let slots = pending.recipients.iter().enumerate();
                slots
                    .filter(move |(_, (at, _))| *at == node)
                    .map(move |(slot, _)| (request, slot))
            })
            .collect();
        for (request, slot) in lost {
            self.metrics.delivery(DeliveryOutcome::NodeDown);
            self.settle(self.node, request, slot, false);
        }
        for entry in self.sessions.values_mut() {
            let dropped = entry.session.withdraw_from(node);
            self.metrics.deliveries(DeliveryOutcome::Withdrawn, dropped);
        }
    }

    fn state_deadline_passed(&mut self, now: Instant, conn: ConnId) {
        match self.session(conn).map(ServerSession::state) {
            Some(SessionState::Unauthenticated { .. }) => {
                self.end_session(now, conn, SessionEnd::LoginTimeout, None)
            }
            Some(SessionState::ConnectingLb { .. }) => self.end_session(
                now,
                conn,
                SessionEnd::LbConnectFailed,
                Some(Response::LbFailed),
            ),
            _ => {}
        }
    }

    /// Ends a session at once: the last answer (if any) goes out, the user goes offline, its
    /// deliveries fail, its own pending request is dropped (with its messages not yet sent),
    /// and both connections close.
    fn end_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: SessionEnd,
        mut last: Option<Response<'static>>,
    ) {
        let mut deferred = false;
        let Some(mut entry) = self.sessions.remove(&conn) else {
            return;
        };
        self.metrics.session_ended(reason);
        for (kind, at) in [TimerKind::State, TimerKind::Ack]
            .into_iter()
            .zip(entry.registered)
        {
            self.timers.change(kind, conn, at, None);
        }
        if entry.login_order.is_none() {
            self.throttle
                .ended_without_login(now, entry.session.peer().ip());
        }
        if let Some(user) = entry.session.user() {
            match &mut self.directory {
                Directory::Local(directory) => directory.release(user, conn),
                Directory::Cluster => {
                    self.outputs
                        .push_back(Output::Cluster(ClusterOutput::Release {
                            conn,
                            user: user.to_vec(),
                        }));
                    // The last answer, and the close, wait for `Released`.
                    if let Some(response) = last.take() {
                        self.releasing.insert(conn, response);
                        deferred = true;
                    }
                }
            }
            self.metrics.user_left();
            log::info!("{conn} ({}) left: {reason}", user.escape_ascii());
        } else {
            log::debug!("{conn} closed: {reason}");
        }
        if let Some(request) = entry.session.awaiting() {
            if let Some(pending) = self.requests.remove(&request) {
                // A cluster's `/to` not yet routed: withdrawn once it is.
                if pending.recipients.is_empty() && matches!(self.directory, Directory::Cluster) {
                    self.unrouted_withdrawn.insert(request);
                }
                self.withdraw(request, &pending.recipients);
            }
        }
        if let Some(response) = last {
            self.outputs
                .push_back(Output::SendLa(conn, response.to_shared()));
        }
        if !deferred {
            self.outputs.push_back(Output::Close(conn));
        }
        let outcome = DeliveryOutcome::of_ended_session(reason);
        for queued in entry.session.drain_deliveries() {
            self.metrics.delivery(outcome);
            self.settle(queued.origin, queued.request, queued.slot, false);
        }
    }

    /// Drops the not yet sent deliveries of `request`, whose sender has left, here and on
    /// every other node it reached.
    fn withdraw(&mut self, request: RequestId, recipients: &[(NodeId, ConnId)]) {
        // A cluster node's own deliveries may still be in its inbox: its withdrawal goes
        // there too, behind them.
        let clustered = matches!(self.directory, Directory::Cluster);
        let mut nodes = Vec::new();
        for &(node, recipient) in recipients {
            if !clustered {
                if let Some(other) = self.sessions.get_mut(&recipient) {
                    let dropped = other.session.withdraw(node, request);
                    self.metrics.deliveries(DeliveryOutcome::Withdrawn, dropped);
                }
            } else if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        for to in nodes {
            let message = NodeMessage::Withdraw { request };
            self.cluster(ClusterOutput::Send { to, message });
        }
    }

    fn cluster(&mut self, output: ClusterOutput) {
        self.outputs.push_back(Output::Cluster(output));
    }

    fn reply(&mut self, conn: ConnId, response: &Response<'_>) {
        self.outputs
            .push_back(Output::SendLa(conn, response.to_shared()));
    }

    /// Lets senders whose requests were answered go on reading their La lines.
    fn run_wakeups(&mut self, now: Instant) {
        while let Some(conn) = self.wakeups.pop() {
            self.read_la(now, conn);
        }
    }

    /// Notes that the deadlines of `conn` may have changed; [`Server::sync_touched`] registers
    /// them before the public call returns.
    fn touch(&mut self, conn: ConnId) {
        self.touched.push(conn);
    }

    /// Syncs every session touched during this call, once each, as a public call returns.
    /// Within a call the timer set may lag behind the sessions, and that is never observed:
    /// [`Server::end_session`] removes what is registered, whatever it is, and the one reader,
    /// [`Server::handle_timeout`]'s loop, only ends sessions, which sets no deadline; the
    /// lines it lets be read come after the loop.
    fn sync_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &conn in &touched {
            self.sync(conn);
        }
        touched.clear();
        self.touched = touched;
        let sessions = &self.sessions;
        self.timers.prune(|at, conn| ack_is(sessions, conn, at));
    }

    /// Makes the timer set match the session's current deadlines.
    fn sync(&mut self, conn: ConnId) {
        let Some(entry) = self.sessions.get_mut(&conn) else {
            return;
        };
        let wanted = [entry.session.state_deadline(), entry.session.ack_deadline()];
        for (index, kind) in [TimerKind::State, TimerKind::Ack].into_iter().enumerate() {
            if entry.registered[index] == wanted[index] {
                continue;
            }
            self.timers
                .change(kind, conn, entry.registered[index], wanted[index]);
            entry.registered[index] = wanted[index];
        }
    }
}

/// Whether `conn`'s ack deadline, as registered, is still `at`.
fn ack_is(sessions: &FxHashMap<ConnId, Entry>, conn: ConnId, at: Instant) -> bool {
    sessions
        .get(&conn)
        .is_some_and(|entry| entry.registered[TimerKind::Ack as usize] == Some(at))
}
