//! [`ServerDriver`] on a manual clock, with no sockets: the policies of the connection table
//! (outbox cap, write deadline, La read-after-flush, flush → half-close → linger → release,
//! connection caps) checked the way only loopback tests reached them before.
//!
//! [`Net`] is a fake network. Each simulated client has an La and, once the driver's
//! `Connect` is answered, an Lb "socket" ([`Sock`]): bytes the driver transmits land in the
//! client's receive buffer as far as the socket's window (what the peer's kernel still takes)
//! allows, and then writes take 0 bytes; what the client writes reaches the driver through
//! `handle_read` only while `wants_read` says so. Time is an [`Instant`] moved by hand, and
//! every deadline is fired at its own time (or late, on purpose). The runtime's part of each
//! [`DriverAction`] is done inline: `Connect` succeeds, fails or hangs per client (a hanging
//! one fails at its timeout, as the async runtime's does), `CheckPassword` runs the check,
//! `Release` drops the socket, and shutdowns are recorded. After every call [`Net`] checks the
//! rules that hold in every test (see [`Net::check`]).
//!
//! Below the harness: one scenario per policy, then random schedules over many clients.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::schedules;
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};
use simple_im_core::driver::{DriverAction, DriverConfig, Refusal, ServerDriver, Side, SocketId};
use simple_im_core::protocol::{
    AUTH_FAILED, AUTH_OK, BYE, DELIVERED, DELIVERY_FAILED, LB_FAILED, LB_OK, UNRECOGNIZED,
};
use simple_im_core::server::{ConnId, ServerConfig};
use simple_im_core::users::Users;

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A window no test fills.
const BIG: usize = usize::MAX / 4;

/// How a client's Lb listener answers the driver's `Connect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LbPlan {
    /// At once.
    Accept,
    /// Refused at once.
    Refuse,
    /// Not at all: the test completes it ([`Net::complete_connect`]) or the runtime gives up
    /// at the timeout.
    Hang,
}

/// One simulated socket, as the client at its far end sees it.
#[derive(Debug, Default)]
struct Sock {
    /// Everything the driver wrote to it.
    received: Vec<u8>,
    /// How many more bytes the peer's kernel takes; writes take 0 bytes once it is used up.
    window: usize,
    /// What the client wrote and the driver has not read yet.
    outgoing: VecDeque<u8>,
    /// The client shut its sending side: reads end once `outgoing` is read.
    eof: bool,
    /// The client closed the socket altogether: writes to it fail.
    reset: bool,
    /// `ShutdownWrite` came, when this many bytes had been received.
    shut_write: Option<usize>,
    /// `ShutdownBoth` came.
    shut_both: bool,
    /// `Release` came, at this time.
    released: Option<Instant>,
}

/// What happened, for scenarios to look at in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Accepted(ConnId),
    Refused(SocketAddr, Refusal),
    Connect(ConnId, SocketAddr),
    LbUp(ConnId),
    /// `handle_lb_connected` said `false`: the runtime drops the new socket.
    LbRefused(ConnId),
    ConnectFailed(ConnId),
    ShutdownWrite(SocketId),
    ShutdownBoth(SocketId),
    Release(SocketId),
    /// The core closed the connection (its session is gone).
    Closed(ConnId),
    /// The runtime wrote this many bytes to the socket (0: it took none).
    Wrote(SocketId, usize),
    /// A write failed.
    WriteError(SocketId),
    /// The runtime read this many bytes from the socket and fed them in.
    Read(SocketId, usize),
    /// The runtime saw the socket's end.
    ReadEnd(SocketId),
}

/// An Lb connect the runtime is still making.
#[derive(Debug)]
struct PendingConnect {
    conn: ConnId,
    deadline: Instant,
}

/// The driver, the fake sockets, the clock and a log.
struct Net {
    driver: ServerDriver,
    driver_config: DriverConfig,
    server_config: ServerConfig,
    start: Instant,
    now: Instant,
    /// The most bytes one read takes.
    read_chunk: usize,
    socks: BTreeMap<SocketId, Sock>,
    peers: HashMap<ConnId, SocketAddr>,
    accepted: Vec<ConnId>,
    /// When the core closed each connection it closed.
    closed_at: BTreeMap<ConnId, Instant>,
    plans: HashMap<ConnId, LbPlan>,
    lb_windows: HashMap<ConnId, usize>,
    connects: Vec<PendingConnect>,
    log: Vec<(Duration, Event)>,
    /// Every deadline up to this time has been fired.
    timers_done_until: Instant,
    /// The longest single message the core may send in this test (the outbox cap's exception).
    max_message: usize,
}

impl Net {
    fn new(users: Users, server_config: ServerConfig, driver_config: DriverConfig) -> Self {
        let start = Instant::now();
        Net {
            driver: ServerDriver::new(users, server_config.clone(), &driver_config),
            read_chunk: driver_config.read_chunk,
            driver_config,
            server_config,
            start,
            now: start,
            socks: BTreeMap::new(),
            peers: HashMap::new(),
            accepted: Vec::new(),
            closed_at: BTreeMap::new(),
            plans: HashMap::new(),
            lb_windows: HashMap::new(),
            connects: Vec::new(),
            log: Vec::new(),
            timers_done_until: start,
            max_message: 256,
        }
    }

    fn record(&mut self, event: Event) {
        self.log.push((self.now - self.start, event));
    }

    fn sock(&self, socket: SocketId) -> &Sock {
        self.socks
            .get(&socket)
            .unwrap_or_else(|| panic!("{socket}: no such socket"))
    }

    fn sock_mut(&mut self, socket: SocketId) -> &mut Sock {
        self.socks
            .get_mut(&socket)
            .unwrap_or_else(|| panic!("{socket}: no such socket"))
    }

    fn has(&self, socket: SocketId) -> bool {
        self.socks.contains_key(&socket)
    }

    fn released(&self, socket: SocketId) -> bool {
        self.socks
            .get(&socket)
            .is_some_and(|sock| sock.released.is_some())
    }

    fn session_alive(&self, conn: ConnId) -> bool {
        self.driver.server().session(conn).is_some()
    }

    // --- what the client and the world do ----------------------------------------------------

    /// A client connects from `peer`; its La takes everything.
    fn accept(&mut self, peer: SocketAddr) -> Result<ConnId, Refusal> {
        let before = self.driver.server().connection_count();
        match self.driver.accept(self.now, peer) {
            Ok(conn) => {
                self.peers.insert(conn, peer);
                self.accepted.push(conn);
                self.socks.insert(
                    SocketId::la(conn),
                    Sock {
                        window: BIG,
                        ..Sock::default()
                    },
                );
                self.record(Event::Accepted(conn));
                self.pump();
                Ok(conn)
            }
            Err(refusal) => {
                assert_eq!(
                    self.driver.server().connection_count(),
                    before,
                    "a refused connection reached the core"
                );
                if let Some(action) = self.driver.poll_action() {
                    panic!("a refused connection caused {action:?}");
                }
                self.record(Event::Refused(peer, refusal));
                self.check();
                Err(refusal)
            }
        }
    }

    /// How the client's Lb listener will answer, and the window of its Lb.
    fn plan_lb(&mut self, conn: ConnId, plan: LbPlan, window: usize) {
        self.plans.insert(conn, plan);
        self.lb_windows.insert(conn, window);
    }

    /// The client writes `bytes` on `socket`.
    fn write(&mut self, socket: SocketId, bytes: &[u8]) {
        let sock = self.sock_mut(socket);
        assert!(!sock.eof, "{socket}: the client writes after its end");
        sock.outgoing.extend(bytes);
        self.pump();
    }

    /// The client writes one line on La.
    fn line(&mut self, conn: ConnId, text: &str) {
        self.write(SocketId::la(conn), format!("{text}\n").as_bytes());
    }

    /// From now on the client's kernel takes `window` more bytes (before the client reads).
    fn set_window(&mut self, socket: SocketId, window: usize) {
        self.sock_mut(socket).window = window;
        self.pump();
    }

    /// The client reads `k` bytes, so its kernel takes `k` more.
    fn open_window(&mut self, socket: SocketId, k: usize) {
        let sock = self.sock_mut(socket);
        sock.window = sock.window.saturating_add(k).min(BIG);
        self.pump();
    }

    /// The client shuts its sending side (`full`: closes the socket, so writes to it fail).
    fn shut(&mut self, socket: SocketId, full: bool) {
        let sock = self.sock_mut(socket);
        sock.eof = true;
        sock.reset |= full;
        self.pump();
    }

    /// A hanging Lb connect of `conn` completes now (`ok`) or fails. `None`: none was pending;
    /// `Some(accepted)`: what `handle_lb_connected` said (`true` for a failure reported).
    fn complete_connect(&mut self, conn: ConnId, ok: bool) -> Option<bool> {
        let at = self.connects.iter().position(|c| c.conn == conn)?;
        self.connects.remove(at);
        let result = if ok {
            self.lb_connected(conn)
        } else {
            self.record(Event::ConnectFailed(conn));
            self.driver.handle_lb_connect_failed(self.now, conn);
            true
        };
        self.pump();
        Some(result)
    }

    /// Lets `by` pass, firing every deadline (the driver's and the runtime's connect timeouts)
    /// at its own time, as a runtime on time does.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..100_000 {
            let Some(next) = self.next_deadline().filter(|&at| at <= target) else {
                self.now = target;
                self.timers_done_until = target;
                self.check();
                return;
            };
            self.now = self.now.max(next);
            self.fire();
        }
        panic!("deadlines never stop coming: poll_timeout is stuck");
    }

    /// Lets `by` pass without firing anything: a runtime running late.
    fn lag(&mut self, by: Duration) {
        self.now += by;
    }

    /// Fires what is due now (a late timer catching up).
    fn fire(&mut self) {
        let now = self.now;
        while let Some(at) = self.connects.iter().position(|c| c.deadline <= now) {
            let conn = self.connects.remove(at).conn;
            self.record(Event::ConnectFailed(conn));
            self.driver.handle_lb_connect_failed(now, conn);
            self.pump();
        }
        if self.driver.poll_timeout().is_some_and(|at| at <= now) {
            self.driver.handle_timeout(now);
            let next = self.driver.poll_timeout();
            assert!(
                !matches!(next, Some(at) if at < now),
                "poll_timeout is {next:?}, in the past right after handle_timeout({now:?})"
            );
        }
        self.timers_done_until = self.timers_done_until.max(now);
        self.pump();
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let connects = self.connects.iter().map(|c| c.deadline);
        self.driver.poll_timeout().into_iter().chain(connects).min()
    }

    // --- what the runtime does ---------------------------------------------------------------

    /// Carries out every action, writes what each socket takes and reads what the driver
    /// wants read, until nothing moves; then checks the rules.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(action) = self.driver.poll_action() {
                moved = true;
                self.carry_out(action);
            }
            let sockets: Vec<SocketId> = self
                .socks
                .iter()
                .filter(|(_, sock)| sock.released.is_none())
                .map(|(&id, _)| id)
                .collect();
            for socket in sockets {
                moved |= self.flush(socket);
                moved |= self.read(socket);
            }
            if !moved {
                self.observe();
                self.check();
                return;
            }
        }
        panic!("the driver never settles");
    }

    fn carry_out(&mut self, action: DriverAction) {
        let now = self.now;
        match action {
            DriverAction::Cluster(output) => panic!("a single server asked a cluster: {output:?}"),
            DriverAction::Wake(socket) => self.expect_live(socket, "Wake"),
            DriverAction::Connect {
                conn,
                addr,
                timeout,
            } => {
                let peer = self.peers[&conn];
                assert_eq!(addr.ip(), peer.ip(), "Lb goes to La's peer address");
                assert_eq!(timeout, self.server_config.connect_timeout);
                assert!(!self.has(SocketId::lb(conn)), "{conn}: a second Lb connect");
                self.record(Event::Connect(conn, addr));
                match self.plans.get(&conn).copied().unwrap_or(LbPlan::Accept) {
                    LbPlan::Accept => {
                        self.lb_connected(conn);
                    }
                    LbPlan::Refuse => {
                        self.record(Event::ConnectFailed(conn));
                        self.driver.handle_lb_connect_failed(now, conn);
                    }
                    LbPlan::Hang => self.connects.push(PendingConnect {
                        conn,
                        deadline: now + timeout,
                    }),
                }
            }
            DriverAction::CheckPassword(conn, check) => {
                let correct = check.run();
                self.driver.handle_password_checked(now, conn, correct);
            }
            DriverAction::ShutdownWrite(socket) => {
                self.expect_live(socket, "ShutdownWrite");
                assert_eq!(
                    self.driver.unwritten(socket),
                    0,
                    "{socket}: ShutdownWrite with bytes unwritten"
                );
                let sock = self.sock_mut(socket);
                assert!(sock.shut_write.is_none(), "{socket}: ShutdownWrite twice");
                assert!(
                    !sock.shut_both,
                    "{socket}: ShutdownWrite after ShutdownBoth"
                );
                sock.shut_write = Some(sock.received.len());
                self.record(Event::ShutdownWrite(socket));
            }
            DriverAction::ShutdownBoth(socket) => {
                self.expect_live(socket, "ShutdownBoth");
                self.sock_mut(socket).shut_both = true;
                self.record(Event::ShutdownBoth(socket));
            }
            DriverAction::Release(socket) => {
                self.expect_live(socket, "Release");
                self.sock_mut(socket).released = Some(now);
                self.record(Event::Release(socket));
            }
        }
    }

    /// An action names a socket the runtime has and has not released.
    fn expect_live(&self, socket: SocketId, what: &str) {
        let Some(sock) = self.socks.get(&socket) else {
            panic!("{what} for {socket}, which the runtime does not have");
        };
        assert!(
            sock.released.is_none(),
            "{what} for {socket} after its Release"
        );
    }

    fn lb_connected(&mut self, conn: ConnId) -> bool {
        let up = self.driver.handle_lb_connected(self.now, conn);
        if up {
            assert!(!self.has(SocketId::lb(conn)), "{conn}: Lb connected twice");
            assert!(
                !self.closed_at.contains_key(&conn),
                "{conn}: Lb taken after the close"
            );
            let window = self.lb_windows.get(&conn).copied().unwrap_or(BIG);
            self.socks.insert(
                SocketId::lb(conn),
                Sock {
                    window,
                    ..Sock::default()
                },
            );
            self.record(Event::LbUp(conn));
        } else {
            self.record(Event::LbRefused(conn));
        }
        up
    }

    /// Writes what `socket` takes; whether anything moved.
    fn flush(&mut self, socket: SocketId) -> bool {
        let now = self.now;
        let mut moved = false;
        while let Some(bytes) = self.driver.poll_transmit(socket) {
            let sock = self.sock_mut(socket);
            assert!(!bytes.is_empty(), "{socket}: an empty write");
            assert!(
                sock.released.is_none() && sock.shut_write.is_none() && !sock.shut_both,
                "{socket}: bytes to write after a shutdown or the release"
            );
            if sock.reset {
                self.record(Event::WriteError(socket));
                self.driver.handle_write_error(now, socket);
                return true;
            }
            let n = bytes.len().min(sock.window);
            sock.received.extend_from_slice(&bytes[..n]);
            sock.window -= n;
            self.record(Event::Wrote(socket, n));
            self.driver.handle_written(now, socket, n);
            moved |= n > 0;
            if n < bytes.len() {
                break;
            }
        }
        moved
    }

    /// Reads `socket` once if the driver wants it read and there is something (or its end).
    fn read(&mut self, socket: SocketId) -> bool {
        if !self.driver.wants_read(socket) {
            return false;
        }
        let now = self.now;
        let chunk = self.read_chunk;
        let sock = self.sock_mut(socket);
        assert!(!sock.shut_both, "{socket}: read after ShutdownBoth");
        if !sock.outgoing.is_empty() {
            let n = sock.outgoing.len().min(chunk);
            let data: Vec<u8> = sock.outgoing.drain(..n).collect();
            self.record(Event::Read(socket, n));
            self.driver.handle_read(now, socket, &data);
            true
        } else if sock.eof {
            self.record(Event::ReadEnd(socket));
            self.driver.handle_read_end(now, socket);
            true
        } else {
            false
        }
    }

    /// Notes the connections the core has closed since the last look.
    fn observe(&mut self) {
        let closed: Vec<ConnId> = self
            .accepted
            .iter()
            .copied()
            .filter(|conn| !self.closed_at.contains_key(conn) && !self.session_alive(*conn))
            .collect();
        for conn in closed {
            self.closed_at.insert(conn, self.now);
            self.record(Event::Closed(conn));
        }
    }

    /// The rules that hold after every call:
    /// - no socket has more unwritten than `max(max_unwritten, the longest message)`, and La
    ///   is read only once nothing is (read-after-flush);
    /// - a released socket is never read, written or named again (and `Release` comes once:
    ///   see [`Net::carry_out`]);
    /// - the caps count exactly the connections the core has not closed;
    /// - a connection is open in the driver until the core closed it and all its sockets are
    ///   released, and a closed one is released within `write_timeout + close_linger`.
    fn check(&mut self) {
        let open = self.accepted.len() - self.closed_at.len();
        assert_eq!(
            self.driver.limits().open(),
            open,
            "the caps count the connections not closed"
        );
        assert_eq!(self.driver.server().connection_count(), open);
        let cap = self.driver_config.max_unwritten.max(self.max_message);
        let ids: Vec<SocketId> = self.socks.keys().copied().collect();
        for socket in ids {
            let unwritten = self.driver.unwritten(socket);
            if self.released(socket) {
                assert!(
                    !self.driver.wants_read(socket),
                    "{socket}: wants_read after Release"
                );
                assert_eq!(unwritten, 0, "{socket}: bytes kept after Release");
                assert!(
                    self.driver.poll_transmit(socket).is_none(),
                    "{socket}: bytes to write after Release"
                );
            } else {
                assert!(
                    unwritten <= cap,
                    "{socket}: {unwritten} bytes unwritten, over {cap}"
                );
                if socket.side == Side::La && self.driver.wants_read(socket) {
                    assert_eq!(
                        unwritten, 0,
                        "{socket}: La read before its answers are written"
                    );
                }
            }
        }
        let bound = self.driver_config.write_timeout + self.driver_config.close_linger;
        for &conn in &self.accepted {
            let sockets = [SocketId::la(conn), SocketId::lb(conn)];
            let all_released = sockets
                .iter()
                .all(|&socket| !self.has(socket) || self.released(socket));
            let closed = self.closed_at.get(&conn).copied();
            assert_eq!(
                self.driver.is_open(conn),
                !(closed.is_some() && all_released),
                "{conn}: is_open"
            );
            if let Some(at) = closed {
                if at + bound <= self.timers_done_until {
                    assert!(
                        all_released,
                        "{conn}: closed at {:?}, not released {bound:?} later",
                        at - self.start
                    );
                }
            }
        }
    }

    // --- what the client sees ----------------------------------------------------------------

    /// The whole lines received on `socket`, without `\n`.
    fn lines(&self, socket: SocketId) -> Vec<String> {
        whole_lines(&self.sock(socket).received)
            .into_iter()
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect()
    }

    /// The events about `conn` so far.
    fn events_of(&self, conn: ConnId) -> Vec<Event> {
        self.log
            .iter()
            .map(|(_, event)| event.clone())
            .filter(|event| match event {
                Event::Accepted(c)
                | Event::Connect(c, _)
                | Event::LbUp(c)
                | Event::LbRefused(c)
                | Event::ConnectFailed(c)
                | Event::Closed(c) => *c == conn,
                Event::ShutdownWrite(s)
                | Event::ShutdownBoth(s)
                | Event::Release(s)
                | Event::Wrote(s, _)
                | Event::WriteError(s)
                | Event::Read(s, _)
                | Event::ReadEnd(s) => s.conn == conn,
                Event::Refused(..) => false,
            })
            .collect()
    }

    /// A client from `ip` logged in as `user` (password `pw`) with its Lb up.
    fn ready(&mut self, ip: u8, user: &str) -> ConnId {
        let conn = self.accept(peer(ip, 0)).expect("admitted");
        self.line(conn, &format!("/login {user} pw"));
        self.line(conn, "/port 7000");
        assert_eq!(
            self.lines(SocketId::la(conn)),
            [text(AUTH_OK), text(LB_OK)],
            "{user} is Ready"
        );
        self.sock_mut(SocketId::la(conn)).received.clear();
        conn
    }
}

fn whole_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // What follows the last `\n` is not a whole line (yet).
    lines.pop();
    lines
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn peer(ip: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)), 40_000 + port)
}

fn users(names: &[&str]) -> Users {
    let mut users = Users::default();
    for name in names {
        users.insert(name.as_bytes(), b"pw");
    }
    users
}

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn driver_config() -> DriverConfig {
    DriverConfig {
        write_timeout: 5 * SECOND,
        max_unwritten: 1024,
        close_linger: 2 * SECOND,
        ..DriverConfig::default()
    }
}

fn server_config() -> ServerConfig {
    ServerConfig {
        ack_timeout: 60 * SECOND,
        connect_timeout: 3 * SECOND,
        ..ServerConfig::default()
    }
}

fn net(names: &[&str], driver: DriverConfig) -> Net {
    Net::new(users(names), server_config(), driver)
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// bob's Lb takes nothing but bob acknowledges blindly, so every sender's delivery piles up in
/// bob's outbox. The one that takes it past `max_unwritten` ends bob's session: the senders
/// still waiting get `304`, the ones bob acknowledged `303`, and erin is served throughout.
#[test]
fn a_recipient_whose_lb_never_reads_is_cut_off_past_max_unwritten() {
    let mut net = net(
        &["alice", "bob", "carol", "dave", "erin", "frank"],
        DriverConfig {
            max_unwritten: 40,
            ..driver_config()
        },
    );
    let senders: Vec<ConnId> = ["alice", "carol", "dave", "frank"]
        .iter()
        .enumerate()
        .map(|(i, name)| net.ready(i as u8 + 1, name))
        .collect();
    let bob = net.accept(peer(9, 0)).unwrap();
    net.plan_lb(bob, LbPlan::Accept, 0);
    net.line(bob, "/login bob pw");
    net.line(bob, "/port 7000");
    let erin = net.ready(10, "erin");
    let bob_lb = SocketId::lb(bob);

    // Every delivery line is 18 bytes; two fit in 40, three do not.
    for &sender in &senders {
        net.line(sender, "/to bob hello");
    }
    assert_eq!(net.driver.unwritten(bob_lb), 18, "one delivery outstanding");
    net.write(bob_lb, b"302 Message receipt successful\n");
    assert_eq!(net.driver.unwritten(bob_lb), 36);
    assert!(net.session_alive(bob));
    net.line(erin, "/list");
    assert_eq!(
        net.lines(SocketId::la(erin)).last().unwrap(),
        "301 erin alice carol dave frank bob"
    );
    net.write(bob_lb, b"302 Message receipt successful\n");

    // The third delivery would make 54 bytes: bob is gone, his sockets shut.
    assert!(
        !net.session_alive(bob),
        "bob's session ends on the overflow"
    );
    assert!(net.sock(bob_lb).shut_both);
    assert!(
        net.sock(bob_lb).received.is_empty(),
        "bob's Lb took nothing"
    );
    assert_eq!(net.driver.unwritten(bob_lb), 0, "the outbox is dropped");
    let answers: Vec<String> = senders
        .iter()
        .map(|&s| net.lines(SocketId::la(s)).concat())
        .collect();
    assert_eq!(
        answers,
        [
            text(DELIVERED),
            text(DELIVERED),
            text(DELIVERY_FAILED),
            text(DELIVERY_FAILED)
        ]
    );
    // Everyone else is served.
    net.line(erin, "/to alice hi");
    assert_eq!(net.lines(SocketId::lb(senders[0])), ["/from erin hi"]);
    net.write(
        SocketId::lb(senders[0]),
        b"302 Message receipt successful\n",
    );
    net.line(erin, "/list");
    assert_eq!(
        net.lines(SocketId::la(erin))[1..],
        [
            text(DELIVERED),
            "301 erin alice carol dave frank".to_string()
        ]
    );
    // bob's La had nothing queued: it lingers, and is released at the end of the linger.
    net.advance(2 * SECOND);
    assert!(net.released(SocketId::la(bob)) && net.released(bob_lb));
    assert!(!net.driver.is_open(bob));
    assert_eq!(net.driver.limits().open(), 5);
}

/// bob's Lb takes 5 bytes of a delivery and then nothing; bob never acknowledges, and the ack
/// timeout is far. The write deadline ends his session: alice (whose delivery is stuck) and
/// carol (whose delivery waits behind it) get `304`; dave is served meanwhile.
#[test]
fn a_recipient_whose_lb_never_reads_is_cut_off_at_the_write_deadline() {
    let mut net = net(&["alice", "bob", "carol", "dave"], driver_config());
    let alice = net.ready(1, "alice");
    let carol = net.ready(2, "carol");
    let bob = net.accept(peer(3, 0)).unwrap();
    net.plan_lb(bob, LbPlan::Accept, 5);
    net.line(bob, "/login bob pw");
    net.line(bob, "/port 7000");
    let dave = net.ready(4, "dave");
    let bob_lb = SocketId::lb(bob);

    net.line(alice, "/to bob hello");
    assert_eq!(net.sock(bob_lb).received, b"/from");
    net.advance(SECOND);
    net.line(carol, "/to bob hi");
    net.line(dave, "/to carol yo");
    net.write(SocketId::lb(carol), b"302 Message receipt successful\n");
    assert_eq!(net.lines(SocketId::la(dave)), [text(DELIVERED)]);

    // The deadline counts from when alice's delivery was queued, not from the last write.
    net.advance(4 * SECOND - MS);
    assert!(net.session_alive(bob));
    assert!(net.lines(SocketId::la(alice)).is_empty());
    net.advance(MS);
    assert!(
        !net.session_alive(bob),
        "bob is cut off 5 s after the delivery"
    );
    assert!(net.sock(bob_lb).shut_both);
    assert_eq!(net.lines(SocketId::la(alice)), [text(DELIVERY_FAILED)]);
    assert_eq!(net.lines(SocketId::la(carol)), [text(DELIVERY_FAILED)]);
    net.line(dave, "/list");
    assert_eq!(net.lines(SocketId::la(dave))[1], "301 dave alice carol");
    net.advance(2 * SECOND);
    assert!(!net.driver.is_open(bob));
}

/// alice's La takes nothing: her `101` stays unwritten, so the driver does not read her next
/// line, however long it waits; once she reads, the answer goes and her line is read. When she
/// stops reading again, the write deadline disconnects her, with her last line never read.
#[test]
fn a_client_that_does_not_read_its_answers_is_not_read_and_is_cut_off_by_the_write_timeout() {
    let mut net = net(&["alice", "bob"], driver_config());
    let bob = net.ready(2, "bob");
    let alice = net.accept(peer(1, 0)).unwrap();
    let la = SocketId::la(alice);
    net.set_window(la, 0);
    net.line(alice, "/login alice pw");
    assert_eq!(net.driver.unwritten(la), text(AUTH_OK).len() + 1);
    net.line(alice, "/list");
    assert!(!net.driver.wants_read(la), "no read while an answer waits");
    assert_eq!(
        net.sock(la).outgoing.len(),
        6,
        "the line stays in alice's socket"
    );
    net.advance(4 * SECOND);
    assert_eq!(net.sock(la).outgoing.len(), 6);

    // She reads: 101 goes, the next line is read and answered (401: /list before /port).
    net.open_window(la, 1000);
    assert_eq!(net.lines(la), [text(AUTH_OK), text(UNRECOGNIZED)]);
    assert!(net.sock(la).outgoing.is_empty());

    // Again, and this time she never reads.
    net.set_window(la, 3);
    net.line(alice, "/port 7000");
    assert!(net.has(SocketId::lb(alice)));
    net.line(alice, "/list");
    assert!(!net.driver.wants_read(la));
    net.line(bob, "/list");
    assert_eq!(net.lines(SocketId::la(bob)), ["301 bob alice"]);
    net.advance(5 * SECOND - MS);
    assert!(net.session_alive(alice));
    net.advance(MS);
    assert!(!net.session_alive(alice), "cut off at the write deadline");
    assert!(net.sock(la).shut_both);
    assert_eq!(
        &net.sock(la).received[net.sock(la).received.len() - 3..],
        b"201"
    );
    assert_eq!(net.sock(la).outgoing.len(), 6, "her /list was never read");
    // A failed La is released at once; Lb had nothing queued and lingers.
    assert!(net.released(la));
    assert_eq!(net.sock(SocketId::lb(alice)).shut_write, Some(0));
    assert_eq!(net.driver.limits().open(), 1);
    net.advance(2 * SECOND);
    assert!(net.released(SocketId::lb(alice)));
    assert!(!net.driver.is_open(alice));
    net.line(bob, "/list");
    assert_eq!(net.lines(SocketId::la(bob))[1], "301 bob");
}

/// `/exit`: `310` is written in full (through a window of 4 bytes at a time) before La's
/// `ShutdownWrite`; La then lingers until alice's end of file, Lb (whose peer never closes)
/// until `close_linger` has passed; then both are released and the connection forgotten.
#[test]
fn exit_writes_310_in_full_then_shuts_lingers_and_releases() {
    let mut net = net(&["alice", "bob"], driver_config());
    let alice = net.ready(1, "alice");
    let bob = net.ready(2, "bob");
    let (la, lb) = (SocketId::la(alice), SocketId::lb(alice));
    net.set_window(la, 4);
    net.line(alice, "/exit");
    assert!(!net.session_alive(alice), "the core closed it");
    assert_eq!(
        net.driver.limits().open(),
        1,
        "its caps are released at the close"
    );
    assert_eq!(net.sock(la).received, b"310 ");
    assert_eq!(
        net.sock(la).shut_write,
        None,
        "no shutdown before 310 is written"
    );
    assert_eq!(net.sock(lb).shut_write, Some(0), "Lb had nothing to write");
    net.advance(SECOND);
    for _ in 0..3 {
        net.open_window(la, 4);
    }
    assert_eq!(net.lines(la), [text(BYE)]);
    let bye = text(BYE).len() + 1;
    assert_eq!(
        net.sock(la).shut_write,
        Some(bye),
        "ShutdownWrite right after 310"
    );
    assert!(net.driver.is_open(alice), "lingering");
    assert!(
        net.driver.wants_read(la),
        "a lingering La waits for the peer's end"
    );

    // What alice still sends is read and dropped; her end of file releases La.
    net.write(la, b"/list\n");
    assert!(net.sock(la).outgoing.is_empty());
    assert_eq!(net.lines(la), [text(BYE)]);
    net.shut(la, false);
    assert!(net.released(la));
    assert!(!net.released(lb));
    assert!(net.driver.is_open(alice));

    // Lb lingers close_linger from the close (at 0 s).
    net.advance(SECOND - MS);
    assert!(!net.released(lb));
    net.advance(MS);
    assert!(net.released(lb));
    assert!(!net.driver.is_open(alice), "forgotten");
    assert_eq!(net.driver.connection_count(), 1);
    let events = net.events_of(alice);
    let order: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ShutdownWrite(_) | Event::Release(_)))
        .collect();
    assert_eq!(
        order,
        [
            &Event::ShutdownWrite(lb),
            &Event::ShutdownWrite(la),
            &Event::Release(la),
            &Event::Release(lb)
        ]
    );
    assert!(net.session_alive(bob));
}

/// `/exit` with nothing else queued: `310` goes at once, so La and Lb start lingering at the
/// same instant and their lingers end in the same `handle_timeout`. Each still gets its own
/// `ShutdownBoth` and `Release` (the driver once forgot the connection on La's `Release` and
/// dropped Lb's, leaving the runtime holding Lb's socket for ever).
#[test]
fn exit_releases_both_sockets_when_their_lingers_end_together() {
    let mut net = net(&["alice"], driver_config());
    let alice = net.ready(1, "alice");
    let (la, lb) = (SocketId::la(alice), SocketId::lb(alice));
    net.line(alice, "/exit");
    assert_eq!(net.lines(la), [text(BYE)]);
    assert!(net.sock(la).shut_write.is_some() && net.sock(lb).shut_write.is_some());
    net.advance(2 * SECOND - MS);
    assert!(!net.released(la) && !net.released(lb));
    net.advance(MS);
    assert!(net.released(la), "La is released at the end of its linger");
    assert!(net.released(lb), "so is Lb, in the same handle_timeout");
    assert!(net.sock(lb).shut_both);
    assert!(!net.driver.is_open(alice));
}

/// `/exit` to a client that never reads: the flush gets one write timeout, then the socket is
/// released regardless; with the linger, the whole close takes at most both.
#[test]
fn exit_to_a_client_that_never_reads_is_released_after_the_flush_deadline() {
    let mut net = net(&["alice"], driver_config());
    let alice = net.ready(1, "alice");
    let la = SocketId::la(alice);
    net.set_window(la, 0);
    net.line(alice, "/exit");
    assert_eq!(net.driver.limits().open(), 0);
    net.advance(5 * SECOND - MS);
    assert!(!net.released(la));
    assert!(net.sock(la).shut_write.is_none());
    net.advance(MS);
    assert!(net.released(la), "released at the flush deadline");
    assert!(
        net.sock(la).shut_write.is_none(),
        "never shut for writing: 310 did not go"
    );
    assert!(net.sock(la).shut_both);
    assert!(!net.driver.is_open(alice));
}

/// `202` after a refused Lb connect: written, shut, lingered on, released.
#[test]
fn a_refused_lb_connect_gets_202_then_the_close() {
    let mut net = net(&["alice"], driver_config());
    let alice = net.accept(peer(1, 0)).unwrap();
    let la = SocketId::la(alice);
    net.plan_lb(alice, LbPlan::Refuse, BIG);
    net.line(alice, "/login alice pw");
    net.line(alice, "/port 7000");
    assert_eq!(net.lines(la), [text(AUTH_OK), text(LB_FAILED)]);
    assert!(!net.session_alive(alice));
    assert_eq!(net.driver.limits().open(), 0);
    assert_eq!(net.sock(la).shut_write, Some(net.sock(la).received.len()));
    assert!(!net.has(SocketId::lb(alice)));
    net.shut(la, false);
    assert!(net.released(la));
    assert!(!net.driver.is_open(alice));
}

/// `202` after an Lb connect that never answers: at the connect timeout, then the close as
/// before. The connection that comes in afterwards is refused, and no Lb socket is taken.
#[test]
fn a_hanging_lb_connect_gets_202_at_the_timeout_and_a_late_connection_is_refused() {
    let mut net = net(&["alice"], driver_config());
    let alice = net.accept(peer(1, 0)).unwrap();
    let la = SocketId::la(alice);
    net.plan_lb(alice, LbPlan::Hang, BIG);
    net.line(alice, "/login alice pw");
    net.line(alice, "/port 7000");
    let connect = Event::Connect(alice, SocketAddr::new(peer(1, 0).ip(), 7000));
    assert!(net.events_of(alice).contains(&connect));
    net.advance(3 * SECOND - MS);
    assert!(net.session_alive(alice));
    assert_eq!(net.lines(la), [text(AUTH_OK)]);
    assert!(
        !net.driver.wants_read(la),
        "no line is read while Lb is being made"
    );

    // The core's own deadline and the runtime's give-up come at the same time; either way, 202.
    net.lag(MS);
    net.fire();
    assert_eq!(net.lines(la), [text(AUTH_OK), text(LB_FAILED)]);
    assert!(!net.session_alive(alice));
    assert!(net.sock(la).shut_write.is_some());
    assert!(net.driver.is_open(alice), "La lingers");
    net.advance(2 * SECOND);
    assert!(net.released(la));
    assert!(!net.driver.is_open(alice));
    assert!(!net.driver.handle_lb_connected(net.now, alice));
    assert!(net.driver.poll_action().is_none());
    net.check();
}

/// An Lb connect that completes after its connection closed is refused: `handle_lb_connected`
/// says `false`, and nothing follows for that Lb. Here alice sends `/login` and `/port` in one
/// go and never reads: the connect hangs (its timeout is long) while her `101` stays
/// unwritten, and the write deadline closes the connection first.
#[test]
fn an_lb_connect_that_completes_after_the_close_is_refused() {
    let mut net = Net::new(
        users(&["alice", "bob"]),
        ServerConfig {
            connect_timeout: 10 * SECOND,
            ..server_config()
        },
        driver_config(),
    );
    let alice = net.accept(peer(1, 0)).unwrap();
    let la = SocketId::la(alice);
    net.plan_lb(alice, LbPlan::Hang, BIG);
    net.set_window(la, 0);
    net.write(la, b"/login alice pw\n/port 7000\n");
    assert!(net
        .events_of(alice)
        .iter()
        .any(|event| matches!(event, Event::Connect(..))));
    net.advance(5 * SECOND);
    assert!(
        !net.session_alive(alice),
        "the write deadline ends the session"
    );
    assert!(net.released(la), "a failed La is released at the close");
    assert!(!net.driver.is_open(alice));
    assert_eq!(net.complete_connect(alice, true), Some(false));
    assert!(!net.has(SocketId::lb(alice)));
    assert_eq!(net.events_of(alice).last(), Some(&Event::LbRefused(alice)));
    assert!(net.driver.poll_action().is_none());
    // The user is not online, so logging in again works.
    let bob = net.ready(2, "bob");
    let again = net.ready(3, "alice");
    net.line(bob, "/list");
    assert_eq!(net.lines(SocketId::la(bob)), ["301 bob alice"]);
    assert!(net.driver.is_open(again));
}

/// Over `max_connections` or `max_per_ip`, `accept` refuses and the core never hears of it;
/// a connection the core closes makes room again (at its close, not its release).
#[test]
fn accept_refuses_over_the_caps_and_the_core_never_hears_of_it() {
    let mut net = net(
        &["alice"],
        DriverConfig {
            max_connections: 3,
            max_per_ip: 2,
            ..driver_config()
        },
    );
    let first = net.accept(peer(1, 0)).unwrap();
    net.accept(peer(1, 1)).unwrap();
    assert_eq!(
        net.accept(peer(1, 2)),
        Err(Refusal::TooManyFromAddress {
            ip: peer(1, 0).ip(),
            max: 2
        })
    );
    net.accept(peer(2, 0)).unwrap();
    assert_eq!(
        net.accept(peer(3, 0)),
        Err(Refusal::TooManyConnections { max: 3 })
    );
    assert_eq!(net.driver.server().connection_count(), 3);
    assert_eq!(net.driver.connection_count(), 3);
    assert_eq!(net.driver.limits().open_from(peer(1, 0).ip()), 2);

    // /exit: room at once, though La still lingers.
    net.line(first, "/exit");
    assert!(net.driver.is_open(first));
    let fourth = net.accept(peer(1, 3)).unwrap();
    assert_eq!(net.driver.server().connection_count(), 3);
    assert_eq!(
        net.driver.connection_count(),
        4,
        "three open, one lingering"
    );
    net.line(fourth, "/login alice pw");
    assert_eq!(net.lines(SocketId::la(fourth)), [text(AUTH_OK)]);
    assert!(net.accept(peer(4, 0)).is_err());
}

/// A graceful stop: no new connection, no new request read, the delivery in flight answered,
/// then every socket written, shut, lingered and released, and only then `is_stopped`.
#[test]
fn stop_answers_the_request_in_flight_then_releases_every_socket() {
    let mut net = net(&["alice", "bob", "carol"], driver_config());
    let alice = net.ready(1, "alice");
    let bob = net.ready(2, "bob");
    let carol = net.ready(3, "carol");
    net.line(alice, "/to bob hi");
    assert_eq!(net.lines(SocketId::lb(bob)), ["/from alice hi"]);
    let now = net.now;
    net.driver.stop(now);
    net.pump();
    assert!(net.driver.is_stopping() && !net.driver.is_stopped());
    assert!(
        !net.session_alive(carol),
        "nothing in flight: closed at once"
    );
    assert_eq!(net.accept(peer(4, 0)), Err(Refusal::Stopping));
    net.line(bob, "/list");
    assert_eq!(
        net.lines(SocketId::la(bob)),
        Vec::<String>::new(),
        "no new request is read"
    );

    net.write(SocketId::lb(bob), b"302 Message receipt successful\n");
    assert_eq!(net.lines(SocketId::la(alice)), [text(DELIVERED)]);
    assert!(!net.session_alive(alice) && !net.session_alive(bob));
    assert!(!net.driver.is_stopped(), "the sockets still linger");
    net.advance(2 * SECOND);
    assert!(net.driver.is_stopped());
    assert_eq!(net.driver.connection_count(), 0);
}

/// An argon2 password: the check runs in the runtime (here, inline) and its verdict comes back.
#[test]
fn a_hashed_password_is_checked_by_the_runtime() {
    let hash = simple_im_core::users::hash_password(b"secret", &[7; 16]).unwrap();
    let file = format!("alice {hash}\n");
    let mut net = Net::new(
        Users::parse(file.as_bytes()).unwrap(),
        server_config(),
        driver_config(),
    );
    let alice = net.accept(peer(1, 0)).unwrap();
    net.line(alice, "/login alice wrong");
    net.line(alice, "/login alice secret");
    assert_eq!(
        net.lines(SocketId::la(alice)),
        [text(AUTH_FAILED), text(AUTH_OK)]
    );
}

// ---------------------------------------------------------------------------------------------
// Random schedules
// ---------------------------------------------------------------------------------------------

/// Users `u0`..`u3` (password `pw<i>`); index `USERS` is `ghost`, who has no account.
const USERS: usize = 4;
const CONTENTS: &[&str] = &[
    "hi",
    "hello world",
    " spaced  out ",
    "a somewhat longer line of chat, to fill outboxes faster than the others do",
];
/// Lines that are `401` in every state.
const GARBAGE: &[&str] = &[
    "hello",
    "/login",
    "/to u0",
    "/port 0",
    "/lis",
    "/exit now",
    "",
];

/// A line a client sends on La.
#[derive(Clone, Debug)]
enum Line {
    Login { user: usize, right: bool },
    Port,
    List,
    To { target: usize, content: usize },
    ToAll { content: usize },
    Exit,
    Garbage(usize),
}

impl Line {
    fn bytes(&self, port: u16) -> Vec<u8> {
        let user = |i: usize| {
            if i < USERS {
                format!("u{i}")
            } else {
                "ghost".to_string()
            }
        };
        let text = match self {
            Line::Login { user: u, right } => {
                let password = if *right {
                    format!("pw{u}")
                } else {
                    "nope".into()
                };
                format!("/login {} {password}", user(*u))
            }
            Line::Port => format!("/port {port}"),
            Line::List => "/list".into(),
            Line::To { target, content } => format!("/to {} {}", user(*target), CONTENTS[*content]),
            Line::ToAll { content } => format!("/toall {}", CONTENTS[*content]),
            Line::Exit => "/exit".into(),
            Line::Garbage(i) => GARBAGE[*i].into(),
        };
        format!("{text}\n").into_bytes()
    }
}

/// The longest single line the core can send in these schedules.
fn max_message() -> usize {
    let content = CONTENTS.iter().map(|c| c.len()).max().unwrap();
    let delivery = "/broadcastfrom u0 \n".len() + content;
    let list = "301".len() + USERS * " u0".len() + 1;
    delivery.max(list).max(64)
}

#[derive(Clone, Debug)]
enum Op {
    /// A new client from 10.0.0.`ip`, whose La and Lb kernels take this many bytes at first
    /// and whose Lb listener answers per `plan`; with `join`, it sends `/login` (as that user)
    /// and `/port` at once.
    Connect {
        ip: u8,
        la_window: usize,
        lb_window: usize,
        plan: LbPlan,
        join: Option<usize>,
    },
    /// A client writes a line on La.
    Send { client: usize, line: Line },
    /// A client reads `k` bytes of a socket, so its kernel takes `k` more.
    Read { client: usize, side: Side, k: usize },
    /// A client acknowledges on Lb: a delivery it has received, or (`blind`) whatever comes.
    Ack { client: usize, blind: bool },
    /// A client shuts its sending side of a socket (`full`: closes it).
    Close {
        client: usize,
        side: Side,
        full: bool,
    },
    /// A client's pending Lb connect completes or fails.
    Resolve { client: usize, ok: bool },
    /// Time passes, every deadline fired on time.
    Advance(Duration),
    /// Time passes with no deadline fired (a late runtime) ...
    Lag(Duration),
    /// ... and catches up.
    Timeout,
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        3 => (0..=USERS, prop::bool::weighted(0.85))
            .prop_map(|(user, right)| Line::Login { user, right }),
        3 => Just(Line::Port),
        1 => Just(Line::List),
        4 => (0..=USERS, 0..CONTENTS.len()).prop_map(|(target, content)| Line::To { target, content }),
        3 => (0..CONTENTS.len()).prop_map(|content| Line::ToAll { content }),
        1 => Just(Line::Exit),
        1 => (0..GARBAGE.len()).prop_map(Line::Garbage),
    ]
}

fn window() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0), 1..200usize, Just(BIG)]
}

fn plan() -> impl Strategy<Value = LbPlan> {
    prop_oneof![6 => Just(LbPlan::Accept), 1 => Just(LbPlan::Refuse), 2 => Just(LbPlan::Hang)]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::La), Just(Side::Lb)]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0..2_000u64).prop_map(Duration::from_millis),
        1 => (2_000..40_000u64).prop_map(Duration::from_millis),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..16usize;
    prop_oneof![
        4 => (0..3u8, window(), window(), plan(), prop::option::weighted(0.7, 0..USERS))
            .prop_map(|(ip, la_window, lb_window, plan, join)| Op::Connect {
                ip,
                la_window,
                lb_window,
                plan,
                join,
            }),
        10 => (client.clone(), line()).prop_map(|(client, line)| Op::Send { client, line }),
        4 => (client.clone(), side(), 1..120usize)
            .prop_map(|(client, side, k)| Op::Read { client, side, k }),
        6 => (client.clone(), prop::bool::weighted(0.15))
            .prop_map(|(client, blind)| Op::Ack { client, blind }),
        1 => (client.clone(), side(), any::<bool>())
            .prop_map(|(client, side, full)| Op::Close { client, side, full }),
        3 => (client.clone(), prop::bool::weighted(0.8))
            .prop_map(|(client, ok)| Op::Resolve { client, ok }),
        3 => duration().prop_map(Op::Advance),
        1 => duration().prop_map(Op::Lag),
        1 => Just(Op::Timeout),
    ]
}

/// Limits small enough that every policy fires in a short schedule.
fn configs() -> impl Strategy<Value = (ServerConfig, DriverConfig)> {
    (
        (
            1..6_000u64,
            500..4_000u64,
            5_000..60_000u64,
            1..5u32,
            1..4usize,
        ),
        (
            500..6_000u64,
            16..300usize,
            0..3_000u64,
            2..7usize,
            1..4usize,
            prop_oneof![1..40usize, Just(4096usize)],
        ),
    )
        .prop_map(
            |(
                (ack, connect, login, failures, queue),
                (write, max_unwritten, linger, max_connections, max_per_ip, read_chunk),
            )| {
                let server = ServerConfig {
                    ack_timeout: Duration::from_millis(ack),
                    connect_timeout: Duration::from_millis(connect),
                    login_timeout: Duration::from_millis(login),
                    max_login_failures: failures,
                    max_queue: queue,
                    ..ServerConfig::default()
                };
                let driver = DriverConfig {
                    write_timeout: Duration::from_millis(write),
                    max_unwritten,
                    close_linger: Duration::from_millis(linger),
                    max_connections,
                    max_per_ip,
                    read_chunk,
                    ..DriverConfig::default()
                };
                (server, driver)
            },
        )
}

/// A client of the schedule, as it knows itself.
struct Client {
    /// `None`: refused.
    conn: Option<ConnId>,
    /// The port it names in `/port`.
    port: u16,
    /// Every line it wrote on La, in order.
    sent: Vec<Line>,
    /// `302`s it wrote on Lb.
    acks: usize,
}

struct Schedule {
    net: Net,
    clients: Vec<Client>,
}

/// Where a client stands, as its answers show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Unauthenticated,
    Authenticated,
    Ready,
}

impl Schedule {
    fn new((server, driver): (ServerConfig, DriverConfig)) -> Self {
        let mut users = Users::default();
        for i in 0..USERS {
            users.insert(format!("u{i}").as_bytes(), format!("pw{i}").as_bytes());
        }
        let mut net = Net::new(users, server, driver);
        net.max_message = max_message();
        Schedule {
            net,
            clients: Vec::new(),
        }
    }

    /// The client an index names, if it was admitted.
    fn conn(&self, client: usize) -> Option<ConnId> {
        if self.clients.is_empty() {
            return None;
        }
        self.clients[client % self.clients.len()].conn
    }

    /// The socket, if the runtime has it and the client has not shut its sending side.
    fn writable(&self, socket: SocketId) -> bool {
        self.net
            .socks
            .get(&socket)
            .is_some_and(|sock| !sock.eof && sock.released.is_none())
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect {
                ip,
                la_window,
                lb_window,
                plan,
                join,
            } => {
                let n = self.clients.len() as u16;
                let address = peer(ip, n);
                let open = self.net.driver.limits().open();
                let from_ip = self.net.driver.limits().open_from(address.ip());
                let conn = match self.net.accept(address) {
                    Ok(conn) => {
                        self.net.plan_lb(conn, plan, lb_window);
                        self.net.set_window(SocketId::la(conn), la_window);
                        Some(conn)
                    }
                    Err(refusal) => {
                        let max = &self.net.driver_config;
                        assert!(
                            open >= max.max_connections || from_ip >= max.max_per_ip,
                            "refused ({refusal}) with {open} open, {from_ip} from the address"
                        );
                        None
                    }
                };
                self.clients.push(Client {
                    conn,
                    port: 7000 + n,
                    sent: Vec::new(),
                    acks: 0,
                });
                if let Some(user) = join.filter(|_| conn.is_some()) {
                    let client = self.clients.len() - 1;
                    for line in [Line::Login { user, right: true }, Line::Port] {
                        self.apply(&Op::Send { client, line });
                    }
                }
            }
            Op::Send { client, ref line } => {
                let Some(conn) = self.conn(client) else {
                    return;
                };
                if !self.writable(SocketId::la(conn)) {
                    return;
                }
                let index = client % self.clients.len();
                let bytes = line.bytes(self.clients[index].port);
                self.clients[index].sent.push(line.clone());
                self.net.write(SocketId::la(conn), &bytes);
            }
            Op::Read { client, side, k } => {
                let Some(conn) = self.conn(client) else {
                    return;
                };
                let socket = SocketId { conn, side };
                if self.net.has(socket) {
                    self.net.open_window(socket, k);
                }
            }
            Op::Ack { client, blind } => {
                let Some(conn) = self.conn(client) else {
                    return;
                };
                let socket = SocketId::lb(conn);
                if !self.writable(socket) {
                    return;
                }
                let index = client % self.clients.len();
                let received = whole_lines(&self.net.sock(socket).received).len();
                if blind || received > self.clients[index].acks {
                    self.clients[index].acks += 1;
                    self.net.write(socket, b"302 Message receipt successful\n");
                }
            }
            Op::Close { client, side, full } => {
                let Some(conn) = self.conn(client) else {
                    return;
                };
                let socket = SocketId { conn, side };
                if self.writable(socket) {
                    self.net.shut(socket, full);
                }
            }
            Op::Resolve { client, ok } => {
                if let Some(conn) = self.conn(client) {
                    self.net.complete_connect(conn, ok);
                }
            }
            Op::Advance(by) => self.net.advance(by),
            Op::Lag(by) => self.net.lag(by),
            Op::Timeout => self.net.fire(),
        }
        self.check_answers();
    }

    /// Every La answer so far answers the line in its place, by what the answers before it
    /// show of the client's stage: in particular a `/to` or `/toall` sent while Ready gets
    /// `303` or `304`, never two answers, and nothing follows the session's last answer.
    /// Lb carries deliveries only.
    fn check_answers(&self) {
        for client in &self.clients {
            let Some(conn) = client.conn else { continue };
            let received = &self.net.sock(SocketId::la(conn)).received;
            let answers = whole_lines(received);
            assert!(
                answers.len() <= client.sent.len(),
                "{conn}: {} answers to {} lines",
                answers.len(),
                client.sent.len()
            );
            let mut stage = Stage::Unauthenticated;
            let mut last = false;
            for (line, answer) in client.sent.iter().zip(&answers) {
                assert!(!last, "{conn}: an answer after the session's last");
                let answer = *answer;
                let ok = match (line, stage) {
                    (Line::Login { .. }, Stage::Unauthenticated) => {
                        if answer == AUTH_OK {
                            stage = Stage::Authenticated;
                        }
                        answer == AUTH_OK || answer == AUTH_FAILED
                    }
                    (Line::Port, Stage::Authenticated) => {
                        if answer == LB_OK {
                            stage = Stage::Ready;
                        }
                        last = answer == LB_FAILED;
                        answer == LB_OK || answer == LB_FAILED
                    }
                    (Line::List, Stage::Ready) => answer.starts_with(b"301 "),
                    (Line::To { .. } | Line::ToAll { .. }, Stage::Ready) => {
                        answer == DELIVERED || answer == DELIVERY_FAILED
                    }
                    (Line::Exit, _) => {
                        last = true;
                        answer == BYE
                    }
                    _ => answer == UNRECOGNIZED,
                };
                assert!(
                    ok,
                    "{conn}: {:?} answered {:?}",
                    text(&line.bytes(client.port)),
                    text(answer)
                );
            }
            if let Some(lb) = self.net.socks.get(&SocketId::lb(conn)) {
                for delivery in whole_lines(&lb.received) {
                    assert!(
                        delivery.starts_with(b"/from ") || delivery.starts_with(b"/broadcastfrom "),
                        "{conn}: {:?} on Lb",
                        text(delivery)
                    );
                }
            }
        }
    }

    /// Every client reads everything from now on, and time passes until nothing is due: then
    /// every connection the core closed is released and forgotten, and a client whose session
    /// is still on has had every line answered.
    fn finish(&mut self) {
        let ids: Vec<SocketId> = self.net.socks.keys().copied().collect();
        for socket in ids {
            self.net.sock_mut(socket).window = BIG;
        }
        self.net.pump();
        for _ in 0..1_000 {
            let Some(next) = self.net.next_deadline() else {
                break;
            };
            let by = next.saturating_duration_since(self.net.now);
            self.net.advance(by);
        }
        assert!(self.net.next_deadline().is_none(), "deadlines never end");
        self.check_answers();
        for client in &self.clients {
            let Some(conn) = client.conn else { continue };
            if self.net.session_alive(conn) {
                let answers = whole_lines(&self.net.sock(SocketId::la(conn)).received).len();
                assert_eq!(answers, client.sent.len(), "{conn}: a line is unanswered");
                assert!(self.net.driver.is_open(conn));
            } else {
                assert!(
                    !self.net.driver.is_open(conn),
                    "{conn}: closed, not forgotten"
                );
            }
        }
        assert_eq!(
            self.net.driver.limits().open(),
            self.net.driver.connection_count()
        );
    }
}

fn run_schedule(configs: (ServerConfig, DriverConfig), ops: &[Op]) {
    let mut schedule = Schedule::new(configs);
    for op in ops {
        schedule.apply(op);
    }
    schedule.finish();
}

#[test]
fn random_schedules_keep_every_rule() {
    let config = schedules::config("driver", 512);
    let strategy = (configs(), prop::collection::vec(op(), 1..=120));
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(configs, ops)| {
        run_schedule(configs, &ops);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (configs, ops))) => {
            panic!("{why}\nminimal schedule: {configs:?}\n{ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
}
