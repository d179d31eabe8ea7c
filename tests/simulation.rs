//! A deterministic simulation of the whole server, in the manner of quinn-proto's
//! `random_interaction.rs`: proptest generates schedules of client actions ([`Op`]) over six
//! clients and five users, each op is applied to the in-memory [`Net`] in turn (ops that
//! make no sense at that moment are skipped), and after every op the server's outputs are
//! checked against [`Model`], a small reference server written from docs/protocol.md alone.
//!
//! The model predicts, event by event, exactly what each connection must see: every answer on
//! La, every `/from`/`/broadcastfrom` on Lb (so at most one outstanding per recipient, in the
//! order the requests were accepted), every Lb connect and every close. Outputs for different
//! connections caused by one event are compared per connection, since their relative order is
//! not specified. Between ops it also checks what is not an output: read grants (given while a
//! client may send its next command, withheld while its request is served), the online list,
//! the number of open connections and `poll_timeout`. At the end of each schedule the clock is
//! advanced past every deadline and every accepted `/to` and `/toall` must have been answered
//! unless its sender's session ended first.
//!
//! Below the simulation, focused scenarios pin down one rule each.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};
use simple_im_core::server::{ConnId, Output, ServerConfig};

use common::schedules;
use common::sim::{appendix_users, escape, users, ClientId, Fed, LbMode, LbState, Net, Record};

const AUTH_OK: &str = "101 Authentication successful";
const AUTH_FAILED: &str = "102 Authentication failed";
const LB_OK: &str = "201 Build connection successful";
const LB_FAILED: &str = "202 Build connection failed";
const RECEIPT: &str = "302 Message receipt successful";
const DELIVERED: &str = "303 Message delivery successful";
const DELIVERY_FAILED: &str = "304 Message delivery failed";
const BYE: &str = "310 Bye bye";
const UNRECOGNIZED: &str = "401 Unrecognized message";

/// `text` and `\n`, as on the wire.
fn wire(text: &str) -> Vec<u8> {
    format!("{text}\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The schedule
// ---------------------------------------------------------------------------------------------

/// At most this many clients are connected at once.
const CLIENTS: usize = 6;
/// Users `u0`..`u4` with passwords `pw0`..`pw4`; index `USERS` names `ghost`, who has no account.
const USERS: usize = 5;

const CONTENTS: &[&[u8]] = &[
    b"hi",
    b"hello world",
    b" leading space",
    b"tab\there",
    b"\xff\xfe\x00 raw",
    b"two  spaces ",
    b"x\ry",
    b"a long line of chat that a small --max-line bound cannot hold, surely not",
];

/// Lines on Lb that are not an acknowledgement.
const WRONG_ACKS: &[&[u8]] = &[
    b"303 Message delivery successful\n",
    b"302 Message receipt successful \n",
    b"302\n",
    b"\n",
    b"302 message receipt successful\n",
    b"/from u0 hi\n",
];

/// Pieces that garbage is made of, so that it is sometimes almost (or exactly) a command.
const GARBAGE: &[&[u8]] = &[
    b"/login ",
    b"/port ",
    b"/list",
    b"/to ",
    b"/toall ",
    b"/exit",
    b"/LIST",
    b"u0",
    b"u1",
    b"pw0",
    b"pw1",
    b"ghost",
    b" ",
    b"  ",
    b"\r",
    b"\n",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\t",
    b"x",
    b"0",
    b"7",
    b"65535",
    b"65536",
    b"-1",
    b"+5",
    b"302 Message receipt successful",
];

fn user_name(user: usize) -> String {
    if user < USERS {
        format!("u{user}")
    } else {
        "ghost".to_owned()
    }
}

/// Whom a `/to` names.
#[derive(Clone, Debug)]
enum Target {
    /// One of the users online at that moment (the sender included), by index.
    Online(usize),
    /// `u<n>`, online or not, or `ghost` (no account) for `n == USERS`.
    User(usize),
}

/// One command line a client may type.
#[derive(Clone, Debug)]
enum Line {
    Login { user: usize, right_password: bool },
    Port(u16),
    List,
    To { to: Target, content: usize },
    ToAll { content: usize },
    Exit,
}

/// One step of a schedule. `who` picks one of the open clients (modulo their number).
#[derive(Clone, Debug)]
enum Op {
    /// A new client connects; `acks` says whether it acknowledges deliveries by itself.
    Connect {
        acks: bool,
    },
    /// A new client connects and sends `/login` and `/port` in one chunk.
    Join {
        user: usize,
        lb: LbMode,
        acks: bool,
    },
    Login {
        who: usize,
        user: usize,
        right_password: bool,
    },
    /// `/port`, with the client's listener set to answer as `lb` says.
    Port {
        who: usize,
        lb: LbMode,
        port: u16,
    },
    List {
        who: usize,
    },
    To {
        from: usize,
        to: Target,
        content: usize,
    },
    ToAll {
        from: usize,
        content: usize,
    },
    Exit {
        who: usize,
    },
    /// The client acknowledges its outstanding delivery by hand (LF or CRLF), in two reads
    /// if `split` falls inside the line.
    Ack {
        who: usize,
        crlf: bool,
        split: usize,
    },
    /// The client answers its outstanding delivery with something else.
    WrongAck {
        who: usize,
        line: usize,
    },
    /// The client stops (or resumes) acknowledging deliveries by itself.
    WithholdAck {
        who: usize,
        withhold: bool,
    },
    DropLa {
        who: usize,
    },
    DropLb {
        who: usize,
    },
    SendGarbage {
        who: usize,
        bytes: Vec<u8>,
    },
    /// One line delivered in several chunks, split at these points.
    SplitSend {
        who: usize,
        line: Line,
        cuts: Vec<usize>,
        crlf: bool,
    },
    AdvanceTime {
        ms: u64,
    },
    /// A socket event for a client the server already closed (the `who`-th closed one).
    AfterClose {
        who: usize,
        input: usize,
    },
    /// The users file is read again (SIGHUP): `u<i>` is in it if `present[i]`, with the
    /// password `new<i>` if `changed[i]` and `pw<i>` otherwise.
    Reload {
        present: Vec<bool>,
        changed: Vec<bool>,
    },
    /// The settings are read again (SIGHUP) with new limits: each a pick among a few, the
    /// line bound as it was (a connection keeps the one it began with, which the model does
    /// not track).
    Reconfigure {
        max_queue: usize,
        max_login_failures: u32,
        ack_timeout: usize,
        connect_timeout: usize,
        login_timeout: usize,
    },
}

/// What an [`Op::Reconfigure`] picks from, in seconds.
const ACK_TIMEOUTS: [u64; 3] = [3, 10, 20];
const CONNECT_TIMEOUTS: [u64; 2] = [2, 5];
const LOGIN_TIMEOUTS: [u64; 2] = [10, 60];

/// The accounts of an [`Op::Reload`].
fn reload_accounts(present: &[bool], changed: &[bool]) -> Vec<(String, String)> {
    (0..USERS)
        .filter(|&i| present.get(i).copied().unwrap_or(true))
        .map(|i| {
            let password = match changed.get(i).copied().unwrap_or(false) {
                true => format!("new{i}"),
                false => format!("pw{i}"),
            };
            (user_name(i), password)
        })
        .collect()
}

/// What [`Op::AfterClose`] may feed.
fn after_close_input(input: usize) -> Fed {
    match input % 6 {
        0 => Fed::LaData(b"/list\n".to_vec()),
        1 => Fed::LaClosed,
        2 => Fed::LbConnected,
        3 => Fed::LbConnectFailed,
        4 => Fed::LbData(format!("{RECEIPT}\n").into_bytes()),
        _ => Fed::LbClosed,
    }
}

fn lb_mode() -> impl Strategy<Value = LbMode> {
    prop_oneof![
        6 => Just(LbMode::Accept),
        1 => Just(LbMode::Refuse),
        1 => Just(LbMode::Hang),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        // Often the longest-online user, so that its queue fills while it withholds acks.
        3 => Just(Target::Online(0)),
        3 => (0..CLIENTS).prop_map(Target::Online),
        1 => (0..=USERS).prop_map(Target::User),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        3 => (0..=USERS, prop::bool::weighted(0.7))
            .prop_map(|(user, right_password)| Line::Login { user, right_password }),
        1 => (1..=u16::MAX).prop_map(Line::Port),
        2 => Just(Line::List),
        4 => (target(), 0..CONTENTS.len()).prop_map(|(to, content)| Line::To { to, content }),
        2 => (0..CONTENTS.len()).prop_map(|content| Line::ToAll { content }),
        1 => Just(Line::Exit),
    ]
}

fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..GARBAGE.len(), 1..16)
        .prop_map(|pieces| pieces.iter().flat_map(|&i| GARBAGE[i].to_vec()).collect())
}

/// Mostly short steps, and sometimes just past one of the sim's timeouts.
fn advance_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 1..2_000u64,
        2 => 4_000..6_000u64,
        3 => 9_000..11_000u64,
        1 => 59_000..61_000u64,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let who = || 0..CLIENTS;
    let acks = || prop::bool::weighted(0.7);
    prop_oneof![
        2 => acks().prop_map(|acks| Op::Connect { acks }),
        6 => (0..USERS, lb_mode(), acks())
            .prop_map(|(user, lb, acks)| Op::Join { user, lb, acks }),
        3 => (who(), 0..=USERS, prop::bool::weighted(0.7)).prop_map(
            |(who, user, right_password)| Op::Login { who, user, right_password }
        ),
        2 => (who(), lb_mode(), 1..=u16::MAX).prop_map(|(who, lb, port)| Op::Port { who, lb, port }),
        3 => who().prop_map(|who| Op::List { who }),
        10 => (who(), target(), 0..CONTENTS.len())
            .prop_map(|(from, to, content)| Op::To { from, to, content }),
        4 => (who(), 0..CONTENTS.len()).prop_map(|(from, content)| Op::ToAll { from, content }),
        1 => who().prop_map(|who| Op::Exit { who }),
        5 => (who(), any::<bool>(), prop_oneof![3 => Just(0usize), 1 => 0..34usize])
            .prop_map(|(who, crlf, split)| Op::Ack { who, crlf, split }),
        1 => (who(), 0..WRONG_ACKS.len()).prop_map(|(who, line)| Op::WrongAck { who, line }),
        3 => (who(), any::<bool>()).prop_map(|(who, withhold)| Op::WithholdAck { who, withhold }),
        1 => who().prop_map(|who| Op::DropLa { who }),
        1 => who().prop_map(|who| Op::DropLb { who }),
        2 => (who(), garbage()).prop_map(|(who, bytes)| Op::SendGarbage { who, bytes }),
        3 => (who(), line(), prop::collection::vec(0..80usize, 1..4), any::<bool>())
            .prop_map(|(who, line, cuts, crlf)| Op::SplitSend { who, line, cuts, crlf }),
        3 => advance_ms().prop_map(|ms| Op::AdvanceTime { ms }),
        1 => (0..CLIENTS, 0..6usize).prop_map(|(who, input)| Op::AfterClose { who, input }),
        1 => (
            prop::collection::vec(prop::bool::weighted(0.8), USERS),
            prop::collection::vec(prop::bool::weighted(0.3), USERS),
        )
            .prop_map(|(present, changed)| Op::Reload { present, changed }),
        1 => (1usize..=3, 1u32..=5, 0..ACK_TIMEOUTS.len(), 0..CONNECT_TIMEOUTS.len(), 0..LOGIN_TIMEOUTS.len())
            .prop_map(|(max_queue, max_login_failures, ack_timeout, connect_timeout, login_timeout)| {
                Op::Reconfigure { max_queue, max_login_failures, ack_timeout, connect_timeout, login_timeout }
            }),
    ]
}

/// The limits one schedule runs with: small enough that over-long lines, full queues and the
/// login-failure limit happen; timeouts as in docs/protocol.md except a shorter login timeout.
fn sim_config() -> impl Strategy<Value = ServerConfig> {
    let max_queue = prop_oneof![2 => Just(1usize), 1 => 2usize..=3];
    (32usize..=128, max_queue, 1u32..=5).prop_map(|(max_line, max_queue, max_login_failures)| {
        ServerConfig {
            ack_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(60),
            max_login_failures,
            max_line,
            max_queue,
            ..ServerConfig::default()
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------------

/// A line as the server frames it (docs/protocol.md §1), written independently of `LineFramer`.
#[derive(Clone, Debug)]
enum Frame {
    Line(Vec<u8>),
    TooLong,
}

#[derive(Clone, Debug, Default)]
struct Framer {
    partial: Vec<u8>,
    discarding: bool,
}

impl Framer {
    /// The frames `bytes` complete, each with the offset just past its last byte. A line of
    /// `max_line` bytes or more before its `\n` is over-long: one frame, the rest discarded.
    fn push(&mut self, bytes: &[u8], max_line: usize) -> Vec<(Frame, usize)> {
        let mut frames = Vec::new();
        for (i, &byte) in bytes.iter().enumerate() {
            if self.discarding {
                self.discarding = byte != b'\n';
            } else if byte == b'\n' {
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                frames.push((Frame::Line(line), i + 1));
            } else {
                self.partial.push(byte);
                if self.partial.len() >= max_line {
                    self.partial.clear();
                    self.discarding = true;
                    frames.push((Frame::TooLong, i + 1));
                }
            }
        }
        frames
    }
}

/// A client command (docs/protocol.md §2), parsed independently of `protocol.rs`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    Login(Vec<u8>, Vec<u8>),
    Port(u16),
    List,
    To(Vec<u8>, Vec<u8>),
    ToAll(Vec<u8>),
    Exit,
}

fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| !matches!(b, b' ' | b'\r' | b'\n'))
}

fn parse(line: &[u8]) -> Option<Command> {
    if line == b"/list" {
        return Some(Command::List);
    }
    if line == b"/exit" {
        return Some(Command::Exit);
    }
    if let Some(rest) = line.strip_prefix(b"/login ") {
        let at = rest.iter().position(|&b| b == b' ')?;
        let (user, password) = (&rest[..at], &rest[at + 1..]);
        return (is_token(user) && is_token(password))
            .then(|| Command::Login(user.to_vec(), password.to_vec()));
    }
    if let Some(digits) = line.strip_prefix(b"/port ") {
        // Decimal, 1–65535, no sign, no leading zero: each port has one spelling.
        if digits.is_empty()
            || digits.len() > 5
            || digits[0] == b'0'
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let port: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        return (1..=65_535)
            .contains(&port)
            .then_some(Command::Port(port as u16));
    }
    if let Some(content) = line.strip_prefix(b"/toall ") {
        return (!content.is_empty()).then(|| Command::ToAll(content.to_vec()));
    }
    if let Some(rest) = line.strip_prefix(b"/to ") {
        let at = rest.iter().position(|&b| b == b' ')?;
        let (target, content) = (&rest[..at], &rest[at + 1..]);
        return (is_token(target) && !content.is_empty())
            .then(|| Command::To(target.to_vec(), content.to_vec()));
    }
    None
}

#[derive(Clone, Debug)]
struct Delivery {
    request: u64,
    line: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Phase {
    Unauthenticated {
        failures: u32,
        deadline: Instant,
    },
    Authenticated {
        user: Vec<u8>,
    },
    ConnectingLb {
        user: Vec<u8>,
        deadline: Instant,
    },
    Ready {
        user: Vec<u8>,
        /// The delivery on Lb and when its `302` is due.
        outstanding: Option<(Delivery, Instant)>,
        /// Deliveries waiting behind it, in the order their requests were accepted.
        queue: VecDeque<Delivery>,
    },
    Closed,
}

#[derive(Clone, Debug)]
struct ModelConn {
    peer: SocketAddr,
    phase: Phase,
    la: Framer,
    lb: Framer,
    /// This client's own `/to` or `/toall` being served.
    awaiting: Option<u64>,
}

#[derive(Clone, Debug)]
struct Request {
    sender: ConnId,
    waiting: usize,
    failed: bool,
}

/// The server as docs/protocol.md describes it, one event at a time.
#[derive(Clone, Debug)]
struct Model {
    config: ServerConfig,
    passwords: HashMap<Vec<u8>, Vec<u8>>,
    conns: BTreeMap<ConnId, ModelConn>,
    /// Online users' connections in login order.
    online: Vec<ConnId>,
    /// Accepted requests not yet settled (whose sender is still there).
    requests: BTreeMap<u64, Request>,
    next_request: u64,
    now: Instant,
    /// What the current event must produce, in order per connection.
    expected: Vec<(ConnId, Output)>,
    /// How often each interesting thing happened, to check the schedules reach them.
    stats: BTreeMap<&'static str, usize>,
}

impl Model {
    fn new(config: ServerConfig, start: Instant) -> Self {
        let passwords = (0..USERS)
            .map(|i| (format!("u{i}").into_bytes(), format!("pw{i}").into_bytes()))
            .collect();
        Model {
            config,
            passwords,
            conns: BTreeMap::new(),
            online: Vec::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            now: start,
            expected: Vec::new(),
            stats: BTreeMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn conn(&mut self, conn: ConnId) -> &mut ModelConn {
        self.conns
            .get_mut(&conn)
            .expect("the model knows every connection")
    }

    fn user_of(&self, conn: ConnId) -> Option<&[u8]> {
        match &self.conns[&conn].phase {
            Phase::Authenticated { user }
            | Phase::ConnectingLb { user, .. }
            | Phase::Ready { user, .. } => Some(user),
            Phase::Unauthenticated { .. } | Phase::Closed => None,
        }
    }

    fn is_closed(&self, conn: ConnId) -> bool {
        matches!(self.conns[&conn].phase, Phase::Closed)
    }

    /// Whether the server must not read this client's next line yet.
    fn is_blocked(&self, conn: ConnId) -> bool {
        let c = &self.conns[&conn];
        c.awaiting.is_some() || matches!(c.phase, Phase::ConnectingLb { .. })
    }

    fn deadline(&self, conn: ConnId) -> Option<Instant> {
        match &self.conns[&conn].phase {
            Phase::Unauthenticated { deadline, .. } | Phase::ConnectingLb { deadline, .. } => {
                Some(*deadline)
            }
            Phase::Ready {
                outstanding: Some((_, deadline)),
                ..
            } => Some(*deadline),
            _ => None,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns.keys().filter_map(|&c| self.deadline(c)).min()
    }

    fn expect(&mut self, conn: ConnId, output: Output) {
        self.expected.push((conn, output));
    }

    fn reply(&mut self, conn: ConnId, text: &str) {
        self.expect(conn, Output::SendLa(conn, Bytes::from(wire(text))));
    }

    /// One event from the log; what it must cause goes to `expected`.
    fn apply(&mut self, record: &Record) {
        match record {
            Record::Accepted { conn, peer, .. } => {
                let deadline = self.now + self.config.login_timeout;
                self.conns.insert(
                    *conn,
                    ModelConn {
                        peer: *peer,
                        phase: Phase::Unauthenticated {
                            failures: 0,
                            deadline,
                        },
                        la: Framer::default(),
                        lb: Framer::default(),
                        awaiting: None,
                    },
                );
            }
            Record::Fed { conn, .. } if self.is_closed(*conn) => {
                self.count("event after close");
            }
            Record::Fed { conn, input, .. } => match input {
                Fed::LaData(bytes) => {
                    if let Some(end) = self.la_data(*conn, bytes) {
                        assert_eq!(
                            end,
                            bytes.len(),
                            "sim: bytes were fed behind a line that blocks its client"
                        );
                    }
                }
                Fed::LaClosed => {
                    self.count("La dropped");
                    self.end_session(*conn, None);
                }
                Fed::LbConnected => self.lb_connected(*conn),
                Fed::LbConnectFailed => {
                    if matches!(self.conn(*conn).phase, Phase::ConnectingLb { .. }) {
                        self.count("202 refused");
                        self.end_session(*conn, Some(LB_FAILED));
                    }
                }
                Fed::LbData(bytes) => self.lb_data(*conn, bytes),
                // The simulated users' passwords are plain: no check is ever deferred.
                Fed::PasswordChecked(_) => panic!("sim: a password check nobody asked for"),
                Fed::LbClosed => {
                    self.count("Lb dropped");
                    self.end_session(*conn, None);
                }
            },
            Record::Timeout => self.timeout(),
            Record::Reload { accounts } => self.reload(accounts),
            Record::Reconfigure { config } => {
                // Deadlines already set stand; every rule reads the new limits from now on.
                self.count("reconfigure");
                self.config = config.clone();
            }
            Record::Output { .. } => unreachable!("outputs are compared, not applied"),
        }
    }

    /// Frames La bytes and acts on each line. Returns the offset just past a line that left
    /// the client blocked, if one did.
    fn la_data(&mut self, conn: ConnId, bytes: &[u8]) -> Option<usize> {
        let max_line = self.config.max_line;
        let frames = self.conn(conn).la.push(bytes, max_line);
        for (frame, end) in frames {
            if self.is_closed(conn) {
                return None;
            }
            assert!(
                !self.is_blocked(conn),
                "sim: a line reached a blocked client"
            );
            self.frame(conn, frame);
            if !self.is_closed(conn) && self.is_blocked(conn) {
                return Some(end);
            }
        }
        None
    }

    /// How much of `bytes` can be fed in one chunk: up to and including the first line that
    /// blocks the client, so that no line waits inside the server behind it.
    fn feedable(&self, conn: ConnId, bytes: &[u8]) -> usize {
        self.clone().la_data(conn, bytes).unwrap_or(bytes.len())
    }

    fn frame(&mut self, conn: ConnId, frame: Frame) {
        let line = match frame {
            Frame::TooLong => {
                self.count("401 over-long");
                return self.reply(conn, UNRECOGNIZED);
            }
            Frame::Line(line) => line,
        };
        let Some(command) = parse(&line) else {
            self.count("401 malformed");
            return self.reply(conn, UNRECOGNIZED);
        };
        let phase = &self.conns[&conn].phase;
        let (unauthenticated, authenticated, ready) = (
            matches!(phase, Phase::Unauthenticated { .. }),
            matches!(phase, Phase::Authenticated { .. }),
            matches!(phase, Phase::Ready { .. }),
        );
        match command {
            Command::Exit => {
                self.count("310");
                self.end_session(conn, Some(BYE));
            }
            Command::Login(user, password) if unauthenticated => self.login(conn, user, password),
            Command::Port(port) if authenticated => {
                let user = self.user_of(conn).unwrap().to_vec();
                let deadline = self.now + self.config.connect_timeout;
                let c = self.conn(conn);
                c.phase = Phase::ConnectingLb { user, deadline };
                let addr = SocketAddr::new(c.peer.ip(), port);
                self.expect(conn, Output::ConnectLb(conn, addr));
            }
            Command::List if ready => self.list(conn),
            Command::To(target, content) if ready => self.to(conn, target, content),
            Command::ToAll(content) if ready => self.toall(conn, content),
            _ => {
                self.count("401 out of state");
                self.reply(conn, UNRECOGNIZED);
            }
        }
    }

    fn login(&mut self, conn: ConnId, user: Vec<u8>, password: Vec<u8>) {
        let known = self.passwords.get(&user) == Some(&password);
        let online = self
            .online
            .iter()
            .any(|&o| self.user_of(o) == Some(&user[..]));
        if known && !online {
            self.count("101");
            self.conn(conn).phase = Phase::Authenticated { user };
            self.online.push(conn);
            return self.reply(conn, AUTH_OK);
        }
        self.count(if known { "102 already online" } else { "102" });
        let max = self.config.max_login_failures;
        let Phase::Unauthenticated { failures, .. } = &mut self.conn(conn).phase else {
            unreachable!()
        };
        *failures += 1;
        let failures = *failures;
        if failures >= max {
            self.count("login failure limit");
            self.end_session(conn, Some(AUTH_FAILED));
        } else {
            self.reply(conn, AUTH_FAILED);
        }
    }

    fn list(&mut self, conn: ConnId) {
        self.count("301");
        let mut line = b"301 ".to_vec();
        line.extend_from_slice(self.user_of(conn).unwrap());
        for &other in self.online.iter().filter(|&&o| o != conn) {
            line.push(b' ');
            line.extend_from_slice(self.user_of(other).unwrap());
        }
        line.push(b'\n');
        self.expect(conn, Output::SendLa(conn, line.into()));
    }

    fn to(&mut self, conn: ConnId, target: Vec<u8>, content: Vec<u8>) {
        let sender = self.user_of(conn).unwrap();
        let line = [b"/from ", sender, b" ", &content, b"\n"].concat();
        let recipient = self
            .online
            .iter()
            .copied()
            .find(|&o| self.user_of(o) == Some(&target[..]));
        match recipient {
            None => {
                self.count("304 offline target");
                self.reply(conn, DELIVERY_FAILED);
            }
            Some(recipient) => {
                if recipient == conn {
                    self.count("to self");
                }
                self.submit(conn, line, vec![recipient]);
            }
        }
    }

    fn toall(&mut self, conn: ConnId, content: Vec<u8>) {
        let sender = self.user_of(conn).unwrap();
        let line = [b"/broadcastfrom ", sender, b" ", &content, b"\n"].concat();
        let recipients: Vec<_> = self.online.iter().copied().filter(|&o| o != conn).collect();
        if recipients.is_empty() {
            self.count("toall alone");
        }
        self.submit(conn, line, recipients);
    }

    fn submit(&mut self, sender: ConnId, line: Vec<u8>, recipients: Vec<ConnId>) {
        if recipients.is_empty() {
            self.count("303");
            return self.reply(sender, DELIVERED);
        }
        let request = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            request,
            Request {
                sender,
                waiting: recipients.len(),
                failed: false,
            },
        );
        self.conn(sender).awaiting = Some(request);
        let max_queue = self.config.max_queue;
        for recipient in recipients {
            // The bound counts the messages waiting behind the outstanding one.
            let accepted = match &mut self.conn(recipient).phase {
                Phase::Ready { queue, .. } if queue.len() < max_queue => {
                    queue.push_back(Delivery {
                        request,
                        line: line.clone(),
                    });
                    true
                }
                Phase::Ready { .. } => {
                    self.count("queue full");
                    false
                }
                _ => {
                    self.count("recipient without Lb");
                    false
                }
            };
            if accepted {
                self.send_next(recipient);
            } else {
                self.settle(request, false);
            }
        }
    }

    fn send_next(&mut self, recipient: ConnId) {
        let deadline = self.now + self.config.ack_timeout;
        let Phase::Ready {
            outstanding, queue, ..
        } = &mut self.conn(recipient).phase
        else {
            return;
        };
        if outstanding.is_some() {
            return;
        }
        let Some(next) = queue.pop_front() else {
            return;
        };
        let line = Bytes::from(next.line.clone());
        *outstanding = Some((next, deadline));
        self.expect(recipient, Output::SendLb(recipient, line));
    }

    fn settle(&mut self, request: u64, delivered: bool) {
        let Some(pending) = self.requests.get_mut(&request) else {
            return;
        };
        pending.waiting -= 1;
        pending.failed |= !delivered;
        if pending.waiting > 0 {
            return;
        }
        let Request { sender, failed, .. } = self.requests.remove(&request).unwrap();
        assert_eq!(self.conn(sender).awaiting, Some(request));
        self.conn(sender).awaiting = None;
        if failed {
            self.count("304");
            self.reply(sender, DELIVERY_FAILED);
        } else {
            self.count("303");
            self.reply(sender, DELIVERED);
        }
    }

    fn lb_connected(&mut self, conn: ConnId) {
        let c = self.conn(conn);
        if let Phase::ConnectingLb { user, .. } = &mut c.phase {
            c.phase = Phase::Ready {
                user: std::mem::take(user),
                outstanding: None,
                queue: VecDeque::new(),
            };
            self.count("201");
            self.reply(conn, LB_OK);
        }
    }

    fn lb_data(&mut self, conn: ConnId, bytes: &[u8]) {
        let max_line = self.config.max_line;
        let c = self.conn(conn);
        let frames = c.lb.push(bytes, max_line);
        let Phase::Ready { outstanding, .. } = &mut c.phase else {
            return self.end_session(conn, None);
        };
        let mut acked = Vec::new();
        let mut violation = false;
        for (frame, _) in frames {
            match frame {
                Frame::Line(line) if line == RECEIPT.as_bytes() && outstanding.is_some() => {
                    acked.push(outstanding.take().unwrap().0);
                }
                _ => {
                    violation = true;
                    break;
                }
            }
        }
        for delivery in acked {
            self.settle(delivery.request, true);
            self.send_next(conn);
        }
        if violation {
            self.count("wrong ack");
            self.end_session(conn, None);
        }
    }

    /// Fires every deadline due now, earliest first (ties by connection id: docs/protocol.md
    /// leaves that order open, and the schedules give each op its own instant).
    fn timeout(&mut self) {
        loop {
            let due = self
                .conns
                .keys()
                .filter_map(|&c| Some((self.deadline(c)?, c)))
                .filter(|&(at, _)| at <= self.now)
                .min();
            let Some((_, conn)) = due else {
                return;
            };
            match self.conn(conn).phase {
                Phase::Unauthenticated { .. } => {
                    self.count("login timeout");
                    self.end_session(conn, None);
                }
                Phase::ConnectingLb { .. } => {
                    self.count("202 timeout");
                    self.end_session(conn, Some(LB_FAILED));
                }
                _ => {
                    self.count("ack timeout");
                    self.end_session(conn, None);
                }
            }
        }
    }

    /// docs/protocol.md §3, "Ends of a session".
    /// The users file is read again: logins check the new passwords, and the sessions of
    /// users no longer there end (in connection order) as if their client had left.
    fn reload(&mut self, accounts: &[(String, String)]) {
        self.count("reload");
        self.passwords = accounts
            .iter()
            .map(|(name, password)| (name.clone().into_bytes(), password.clone().into_bytes()))
            .collect();
        let removed: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|&conn| {
                self.user_of(conn)
                    .is_some_and(|user| !self.passwords.contains_key(user))
            })
            .collect();
        for conn in removed {
            self.count("removed by a reload");
            self.end_session(conn, None);
        }
    }

    fn end_session(&mut self, conn: ConnId, last: Option<&str>) {
        if self.is_closed(conn) {
            return;
        }
        self.online.retain(|&o| o != conn);
        if let Some(request) = self.conn(conn).awaiting.take() {
            self.count("sender gone before its answer");
            self.requests.remove(&request);
            // Its messages not yet sent are withdrawn; one already out stays out.
            for other in self.conns.values_mut() {
                if let Phase::Ready { queue, .. } = &mut other.phase {
                    queue.retain(|delivery| delivery.request != request);
                }
            }
        }
        if let Some(text) = last {
            self.reply(conn, text);
        }
        self.expect(conn, Output::Close(conn));
        let phase = std::mem::replace(&mut self.conn(conn).phase, Phase::Closed);
        if let Phase::Ready {
            outstanding, queue, ..
        } = phase
        {
            let failed = outstanding.map(|(d, _)| d).into_iter().chain(queue);
            for delivery in failed {
                self.settle(delivery.request, false);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a schedule
// ---------------------------------------------------------------------------------------------

struct Sim {
    net: Net,
    model: Model,
    /// Log entries the model has checked.
    seen: usize,
    /// Per client: La chunks written but not yet handed to the net (a client may type ahead).
    typed: Vec<VecDeque<Vec<u8>>>,
}

fn show(output: &Output) -> String {
    match output {
        Output::ReadLa(c) => format!("ReadLa {c}"),
        Output::SendLa(c, b) => format!("La {c} -> {}", escape(b)),
        Output::ConnectLb(c, a) => format!("ConnectLb {c} {a}"),
        Output::SendLb(c, b) => format!("Lb {c} -> {}", escape(b)),
        Output::Close(c) => format!("Close {c}"),
        Output::CheckPassword(c, _) => format!("CheckPassword {c}"),
        Output::Cluster(cluster) => format!("Cluster {cluster:?}"),
    }
}

fn per_conn(outputs: Vec<(ConnId, Output)>) -> BTreeMap<ConnId, Vec<String>> {
    let mut map: BTreeMap<ConnId, Vec<String>> = BTreeMap::new();
    for (conn, output) in outputs {
        map.entry(conn).or_default().push(show(&output));
    }
    map
}

fn show_per_conn(outputs: &BTreeMap<ConnId, Vec<String>>) -> String {
    let mut out = String::new();
    for (conn, list) in outputs {
        out.push_str(&format!("\n  {conn}: {}", list.join(" | ")));
    }
    if out.is_empty() {
        out.push_str("nothing");
    }
    out
}

impl Sim {
    fn new(config: ServerConfig) -> Self {
        let accounts: Vec<(String, String)> = (0..USERS)
            .map(|i| (format!("u{i}"), format!("pw{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = accounts
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let net = Net::new(users(&refs), config.clone());
        let model = Model::new(config, net.now());
        Sim {
            net,
            model,
            seen: 0,
            typed: Vec::new(),
        }
    }

    /// The open clients, oldest first.
    fn open(&self) -> Vec<ClientId> {
        self.net
            .clients()
            .filter(|(_, c)| !c.is_closed())
            .map(|(id, _)| id)
            .collect()
    }

    /// The open client `who` picks, if any is open.
    fn pick(&self, who: usize) -> Option<ClientId> {
        let open = self.open();
        (!open.is_empty()).then(|| open[who % open.len()])
    }

    fn connect(&mut self, acks: bool) -> Option<ClientId> {
        if self.open().len() >= CLIENTS {
            return None;
        }
        let client = self.net.connect(&format!("c{}", self.typed.len()));
        self.net.set_auto_ack(client, acks);
        self.typed.push(VecDeque::new());
        assert_eq!(self.typed.len(), client.0 + 1);
        Some(client)
    }

    /// The bytes of `line`, resolving its target against who is online now.
    fn bytes(&self, line: &Line, crlf: bool) -> Vec<u8> {
        let mut out = match line {
            Line::Login {
                user,
                right_password,
            } => {
                let password = if *right_password {
                    // After a reload, the password the file has now.
                    let name = user_name(*user).into_bytes();
                    match self.model.passwords.get(&name) {
                        Some(password) => String::from_utf8_lossy(password).into_owned(),
                        None => format!("pw{user}"),
                    }
                } else {
                    "wrong".to_owned()
                };
                format!("/login {} {password}", user_name(*user)).into_bytes()
            }
            Line::Port(port) => format!("/port {port}").into_bytes(),
            Line::List => b"/list".to_vec(),
            Line::To { to, content } => {
                let online = &self.model.online;
                let name = match *to {
                    Target::Online(i) if !online.is_empty() => self
                        .model
                        .user_of(online[i % online.len()])
                        .unwrap()
                        .to_vec(),
                    Target::Online(_) => b"ghost".to_vec(),
                    Target::User(n) => user_name(n).into_bytes(),
                };
                [b"/to ", &name[..], b" ", CONTENTS[*content]].concat()
            }
            Line::ToAll { content } => [b"/toall ", CONTENTS[*content]].concat(),
            Line::Exit => b"/exit".to_vec(),
        };
        out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        out
    }

    fn type_chunks(&mut self, client: ClientId, chunks: Vec<Vec<u8>>) {
        self.typed[client.0].extend(chunks.into_iter().filter(|c| !c.is_empty()));
    }

    fn type_line(&mut self, who: usize, line: Line) -> Option<()> {
        let client = self.pick(who)?;
        let bytes = self.bytes(&line, false);
        self.type_chunks(client, vec![bytes]);
        Some(())
    }

    /// The client `who` picks, if its Lb has a delivery waiting for an acknowledgement.
    fn acking(&self, who: usize) -> Option<ClientId> {
        let client = self.pick(who)?;
        let c = self.net.client(client);
        (c.lb() == LbState::Up && c.lb_unacked() > 0).then_some(client)
    }

    /// Applies one op; `None` if it made no sense now and was skipped.
    fn apply(&mut self, op: &Op) -> Option<()> {
        match *op {
            Op::Connect { acks } => {
                self.connect(acks)?;
            }
            Op::Join { user, lb, acks } => {
                let client = self.connect(acks)?;
                self.net.set_lb_mode(client, lb);
                let login = Line::Login {
                    user,
                    right_password: true,
                };
                let port = Line::Port(Net::port_of(client));
                let chunk = [self.bytes(&login, false), self.bytes(&port, false)].concat();
                self.type_chunks(client, vec![chunk]);
            }
            Op::Login {
                who,
                user,
                right_password,
            } => self.type_line(
                who,
                Line::Login {
                    user,
                    right_password,
                },
            )?,
            Op::Port { who, lb, port } => {
                let client = self.pick(who)?;
                self.net.set_lb_mode(client, lb);
                self.type_line(who, Line::Port(port))?;
            }
            Op::List { who } => self.type_line(who, Line::List)?,
            Op::To {
                from,
                ref to,
                content,
            } => self.type_line(
                from,
                Line::To {
                    to: to.clone(),
                    content,
                },
            )?,
            Op::ToAll { from, content } => self.type_line(from, Line::ToAll { content })?,
            Op::Exit { who } => self.type_line(who, Line::Exit)?,
            Op::Ack { who, crlf, split } => {
                let client = self.acking(who)?;
                if self.net.client(client).auto_ack() {
                    return None;
                }
                let ack = if crlf {
                    format!("{RECEIPT}\r\n")
                } else {
                    format!("{RECEIPT}\n")
                };
                let ack = ack.as_bytes();
                if (1..ack.len()).contains(&split) {
                    self.net
                        .send_lb_chunks(client, &[&ack[..split], &ack[split..]]);
                } else {
                    self.net.send_lb(client, ack);
                }
            }
            Op::WrongAck { who, line } => {
                let client = self.acking(who)?;
                self.net.send_lb(client, WRONG_ACKS[line]);
            }
            Op::WithholdAck { who, withhold } => {
                let client = self.pick(who)?;
                self.net.set_auto_ack(client, !withhold);
            }
            Op::DropLa { who } => {
                let client = self.pick(who)?;
                self.typed[client.0].clear();
                self.net.drop_la(client);
            }
            Op::DropLb { who } => {
                let client = self.pick(who)?;
                if self.net.client(client).lb() != LbState::Up {
                    return None;
                }
                self.net.drop_lb(client);
            }
            Op::SendGarbage { who, ref bytes } => {
                let client = self.pick(who)?;
                self.type_chunks(client, vec![bytes.clone()]);
            }
            Op::SplitSend {
                who,
                ref line,
                ref cuts,
                crlf,
            } => {
                let client = self.pick(who)?;
                let bytes = self.bytes(line, crlf);
                let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
                cuts.sort_unstable();
                let mut chunks = Vec::new();
                let mut from = 0;
                for cut in cuts.into_iter().chain([bytes.len()]) {
                    chunks.push(bytes[from..cut].to_vec());
                    from = cut;
                }
                self.type_chunks(client, chunks);
            }
            Op::AdvanceTime { ms } => self.net.advance(Duration::from_millis(ms)),
            Op::AfterClose { who, input } => {
                let closed: Vec<ClientId> = self
                    .net
                    .clients()
                    .filter(|(_, c)| c.is_closed())
                    .map(|(id, _)| id)
                    .collect();
                let client = *closed.get(who % closed.len().max(1))?;
                self.net.feed_after_close(client, after_close_input(input));
            }
            Op::Reload {
                ref present,
                ref changed,
            } => {
                let accounts = reload_accounts(present, changed);
                let accounts: Vec<(&str, &str)> = accounts
                    .iter()
                    .map(|(name, password)| (name.as_str(), password.as_str()))
                    .collect();
                self.net.reload_users(&accounts);
            }
            Op::Reconfigure {
                max_queue,
                max_login_failures,
                ack_timeout,
                connect_timeout,
                login_timeout,
            } => {
                let seconds = |picks: &[u64], pick: usize| Duration::from_secs(picks[pick]);
                let config = ServerConfig {
                    max_queue,
                    max_login_failures,
                    ack_timeout: seconds(&ACK_TIMEOUTS, ack_timeout),
                    connect_timeout: seconds(&CONNECT_TIMEOUTS, connect_timeout),
                    login_timeout: seconds(&LOGIN_TIMEOUTS, login_timeout),
                    ..self.net.server.config().clone()
                };
                self.net.reconfigure(config);
            }
        }
        Some(())
    }
    /// Checks every new event against the model, and hands typed chunks to the net as the
    /// server grants reads, until nothing moves.
    fn settle_inputs(&mut self) {
        loop {
            self.check_log();
            let next = self.net.clients().find_map(|(id, c)| {
                let ready = !c.is_closed() && c.is_granted() && c.la_pending() == 0;
                (ready && !self.typed[id.0].is_empty()).then_some(id)
            });
            let Some(client) = next else {
                break;
            };
            let conn = self.net.client(client).conn();
            let chunk = self.typed[client.0].pop_front().unwrap();
            let cut = self.model.feedable(conn, &chunk);
            if cut < chunk.len() {
                self.typed[client.0].push_front(chunk[cut..].to_vec());
            }
            self.net.send_la(client, &chunk[..cut]);
        }
        for (id, c) in self.net.clients() {
            if c.is_closed() {
                self.typed[id.0].clear();
            }
        }
    }

    /// Compares each new event's outputs with what the model says it must cause.
    fn check_log(&mut self) {
        let log = self.net.log();
        while self.seen < log.len() {
            let entry = &log[self.seen];
            assert!(
                entry.record.is_event(),
                "an output without an event: {entry:?}"
            );
            self.model.now = entry.now;
            self.model.apply(&entry.record);
            self.seen += 1;
            let mut actual = Vec::new();
            while let Some(Record::Output { output, .. }) = log.get(self.seen).map(|e| &e.record) {
                let conn = match output {
                    Output::ReadLa(_) => None,
                    Output::SendLa(c, _)
                    | Output::ConnectLb(c, _)
                    | Output::SendLb(c, _)
                    | Output::Close(c)
                    | Output::CheckPassword(c, _) => Some(*c),
                    Output::Cluster(_) => panic!("a single server asked a cluster: {output:?}"),
                };
                if let Some(conn) = conn {
                    actual.push((conn, output.clone()));
                }
                self.seen += 1;
            }
            let expected = per_conn(std::mem::take(&mut self.model.expected));
            let actual = per_conn(actual);
            if expected != actual {
                panic!(
                    "wrong outputs after `{}`\nexpected: {}\ngot:      {}\nrecent history:\n{}",
                    self.net.render(entry).unwrap_or_default(),
                    show_per_conn(&expected),
                    show_per_conn(&actual),
                    self.net.history(self.seen, 40),
                );
            }
        }
    }

    /// What must hold whenever the system is idle.
    fn check_idle(&self) {
        for (id, c) in self.net.clients() {
            let conn = c.conn();
            let m = &self.model.conns[&conn];
            assert_eq!(
                c.is_closed(),
                matches!(m.phase, Phase::Closed),
                "{id:?} closed"
            );
            if c.is_closed() {
                continue;
            }
            let blocked = self.model.is_blocked(conn);
            assert_eq!(
                c.is_granted(),
                !blocked,
                "{conn}: a read grant must be out exactly when the client may send its next line"
            );
            let ready = matches!(m.phase, Phase::Ready { .. });
            assert_eq!(
                c.lb() == LbState::Up,
                ready,
                "{conn}: Lb is up exactly when Ready"
            );
            if let Phase::Ready { outstanding, .. } = &m.phase {
                assert_eq!(c.lb_unacked(), usize::from(outstanding.is_some()));
            }
        }
        let online: Vec<(ConnId, Vec<u8>)> = self
            .net
            .server
            .online_in_login_order()
            .map(|(c, u)| (c, u.to_vec()))
            .collect();
        let expected: Vec<(ConnId, Vec<u8>)> = self
            .model
            .online
            .iter()
            .map(|&c| (c, self.model.user_of(c).unwrap().to_vec()))
            .collect();
        assert_eq!(online, expected, "online users in login order");
        let open = self
            .model
            .conns
            .keys()
            .filter(|&&c| !self.model.is_closed(c));
        assert_eq!(self.net.server.connection_count(), open.count());
        if let Some(due) = self.model.next_deadline() {
            let at = self.net.server.poll_timeout();
            assert!(
                at.is_some_and(|at| at <= due),
                "poll_timeout {at:?} misses a deadline at {due:?}"
            );
        }
    }

    /// Advances the clock past every deadline, then checks that nothing is left hanging.
    fn finish(&mut self) {
        for _ in 0..10_000 {
            let Some(at) = self.net.server.poll_timeout() else {
                break;
            };
            self.net.advance(at - self.net.now());
            self.settle_inputs();
            self.check_idle();
        }
        assert_eq!(self.net.server.poll_timeout(), None, "timers keep firing");
        assert!(
            self.model.requests.is_empty(),
            "requests never answered: {:?}",
            self.model.requests
        );
        for (id, c) in self.net.clients() {
            if !c.is_closed() {
                assert!(!self.model.is_blocked(c.conn()), "{id:?} still waits");
                assert!(self.typed[id.0].is_empty(), "{id:?} has lines never read");
            }
        }
    }
}

/// Runs one schedule; the stats of what it reached go to `stats`.
fn run_schedule(config: ServerConfig, ops: &[Op], stats: &mut BTreeMap<&'static str, usize>) {
    let mut sim = Sim::new(config);
    for op in ops {
        // Each op at its own instant, so simultaneous deadlines come only from one event.
        sim.net.advance(Duration::from_millis(1));
        let applied = sim.apply(op).is_some();
        *stats
            .entry(if applied {
                "ops applied"
            } else {
                "ops skipped"
            })
            .or_default() += 1;
        sim.settle_inputs();
        sim.check_idle();
    }
    sim.finish();
    for (what, n) in &sim.model.stats {
        *stats.entry(what).or_default() += n;
    }
}

/// The longest schedule; `SIM_MAX_OPS` raises it for a longer hunt.
fn max_ops() -> usize {
    std::env::var("SIM_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[test]
fn random_interaction() {
    let config = schedules::config("simulation", 4096);
    let stats = RefCell::new(BTreeMap::new());
    let strategy = (sim_config(), prop::collection::vec(op(), 1..=max_ops()));
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(config, ops)| {
        run_schedule(config, &ops, &mut stats.borrow_mut());
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (config, ops))) => {
            panic!("{why}\nminimal schedule: {config:#?}\n{ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
    // The schedules must reach every path, or the checks above prove little.
    let stats = stats.into_inner();
    eprintln!("simulation reached: {stats:#?}");
    if schedules::cases(4096) >= 2048 {
        for what in [
            "101",
            "102",
            "102 already online",
            "login failure limit",
            "login timeout",
            "201",
            "202 refused",
            "202 timeout",
            "301",
            "303",
            "304",
            "304 offline target",
            "310",
            "401 malformed",
            "401 out of state",
            "401 over-long",
            "queue full",
            "recipient without Lb",
            "to self",
            "toall alone",
            "ack timeout",
            "wrong ack",
            "La dropped",
            "Lb dropped",
            "sender gone before its answer",
            "event after close",
            "reload",
            "removed by a reload",
            "reconfigure",
        ] {
            assert!(
                stats.get(what).copied().unwrap_or(0) > 0,
                "no schedule reached {what:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Focused scenarios
// ---------------------------------------------------------------------------------------------

fn with_config(config: ServerConfig) -> Net {
    Net::new(appendix_users(), config)
}

fn lines(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn login_failure_limit_closes_the_connection() {
    let mut net = Net::appendix();
    let c = net.connect("mallory");
    for _ in 0..4 {
        net.send_la(c, b"/login jacky wrong\n");
        assert_eq!(net.take_la_lines(c), [AUTH_FAILED]);
        assert!(!net.is_closed(c));
    }
    net.send_la(c, b"/login nobody 12345\n");
    assert_eq!(net.take_la_lines(c), [AUTH_FAILED]);
    assert!(net.is_closed(c));

    // Four failures do not stop a fifth, right, attempt.
    let c = net.connect("jacky");
    for _ in 0..4 {
        net.send_la(c, b"/login jacky 1234\n");
        assert_eq!(net.take_la_lines(c), [AUTH_FAILED]);
    }
    net.send_la(c, b"/login jacky 12345\n");
    assert_eq!(net.take_la_lines(c), [AUTH_OK]);
    assert!(!net.is_closed(c));
}

#[test]
fn login_timeout_closes_an_unauthenticated_connection() {
    let mut net = Net::appendix();
    let idle = net.connect("idle");
    let jacky = net.connect("jacky");
    net.send_la(jacky, b"/login jacky 12345\n");
    net.take_la_lines(jacky);
    net.advance(Duration::from_millis(299_999));
    assert!(!net.is_closed(idle));
    net.advance(Duration::from_millis(1));
    assert!(net.is_closed(idle));
    assert!(
        net.take_la_bytes(idle).is_empty(),
        "closed without an answer"
    );
    // A logged-in client is not subject to the login timeout.
    net.advance(Duration::from_secs(3600));
    assert!(!net.is_closed(jacky));
}

#[test]
fn connect_timeout_answers_202_and_ends_the_session() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect("jacky");
    net.set_lb_mode(jacky, LbMode::Hang);
    net.send_la(jacky, b"/login jacky 12345\n/port 30232\n");
    assert_eq!(net.take_la_lines(jacky), [AUTH_OK]);
    assert!(
        !net.client(jacky).is_granted(),
        "no reads while Lb is being connected"
    );
    net.advance(Duration::from_millis(4_999));
    assert!(net.take_la_lines(jacky).is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(net.take_la_lines(jacky), [LB_FAILED]);
    assert!(net.is_closed(jacky));
    net.send_la(bob, b"/list\n");
    assert_eq!(net.take_la_lines(bob), ["301 bob"]);
}

#[test]
fn refused_lb_answers_202_at_once() {
    let mut net = Net::appendix();
    let jacky = net.connect("jacky");
    net.set_lb_mode(jacky, LbMode::Refuse);
    net.send_la(jacky, b"/login jacky 12345\n");
    net.send_la(jacky, b"/port 30232\n");
    assert_eq!(net.take_la_lines(jacky), [AUTH_OK, LB_FAILED]);
    assert!(net.is_closed(jacky));
    // The user went offline: it can log in again.
    let again = net.connect_ready("jacky", "12345");
    assert!(!net.is_closed(again));
}

#[test]
fn lb_goes_to_la_peer_ip_at_the_named_port() {
    let mut net = Net::appendix();
    let jacky = net.connect("jacky");
    net.send_la(jacky, b"/login jacky 12345\n/port 30232\n");
    let connect = net.log().iter().find_map(|e| match &e.record {
        Record::Output {
            output: Output::ConnectLb(_, addr),
            ..
        } => Some(*addr),
        _ => None,
    });
    let peer = net.client(jacky).peer();
    assert_eq!(connect, Some(SocketAddr::new(peer.ip(), 30232)));
}

#[test]
fn ack_timeout_fails_the_delivery_and_ends_the_recipient() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);
    net.advance(Duration::from_millis(9_999));
    assert!(net.take_la_lines(jacky).is_empty());
    assert!(!net.is_closed(bob));
    net.advance(Duration::from_millis(1));
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    assert!(net.is_closed(bob));
    net.send_la(jacky, b"/list\n");
    assert_eq!(net.take_la_lines(jacky), ["301 jacky"]);
}

#[test]
fn wrong_ack_fails_the_delivery_and_closes_the_recipient() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    net.send_lb(bob, b"303 Message delivery successful\n");
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    assert!(net.is_closed(bob));
    net.send_la(jacky, b"/to bob again\n");
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
}

#[test]
fn dropped_lb_fails_the_delivery_and_ends_the_recipient() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    net.drop_lb(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    assert!(net.is_closed(bob));
}

#[test]
fn full_queue_fails_at_once() {
    let mut net = with_config(ServerConfig {
        max_queue: 1,
        ..ServerConfig::default()
    });
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    let michael = net.connect_ready("michael", "michael123");
    let alice = net.connect_ready("alice", "alice123");
    net.send_la(jacky, b"/to bob one\n"); // outstanding
    net.send_la(michael, b"/to bob two\n"); // waits behind it
    net.send_la(alice, b"/to bob three\n"); // finds the queue full
    assert_eq!(net.take_la_lines(alice), [DELIVERY_FAILED]);
    assert!(net.take_la_lines(jacky).is_empty());
    assert!(net.take_la_lines(michael).is_empty());
    assert_eq!(net.take_lb_lines(bob), ["/from jacky one"]);
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    assert_eq!(net.take_lb_lines(bob), ["/from michael two"]);
    net.ack(bob);
    assert_eq!(net.take_la_lines(michael), [DELIVERED]);
    assert!(!net.is_closed(bob));
}

#[test]
fn toall_with_no_one_else_online_is_delivered() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/toall anyone?\n");
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
}

#[test]
fn toall_counts_a_recipient_without_lb_as_failed() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let michael = net.connect("michael");
    net.send_la(michael, b"/login michael michael123\n");
    assert_eq!(net.take_la_lines(michael), [AUTH_OK]);
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/toall hi all\n");
    assert_eq!(net.take_lb_lines(bob), ["/broadcastfrom jacky hi all"]);
    assert!(
        net.take_la_lines(jacky).is_empty(),
        "bob has not settled yet"
    );
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    assert!(net.take_la_bytes(michael).is_empty());
    assert!(!net.is_closed(michael));
}

#[test]
fn to_oneself_goes_through_ones_own_lb() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to jacky note to self\n");
    assert_eq!(net.take_lb_lines(jacky), ["/from jacky note to self"]);
    assert!(net.take_la_lines(jacky).is_empty());
    net.ack(jacky);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
}

#[test]
fn sender_gone_while_toall_in_flight_gets_no_answer_and_unsent_copies_are_withdrawn() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let michael = net.connect_ready("michael", "michael123");
    let jacky = net.connect_ready("jacky", "12345");
    // Bob is busy with an earlier message, so jacky's broadcast waits in his queue, while
    // michael, idle, gets it at once.
    net.send_la(michael, b"/to bob first\n");
    net.send_la(jacky, b"/toall meeting at 3pm\n");
    assert_eq!(
        net.take_lb_lines(michael),
        ["/broadcastfrom jacky meeting at 3pm"]
    );
    assert_eq!(net.take_lb_lines(bob), ["/from michael first"]);
    net.drop_la(jacky);
    assert!(net.is_closed(jacky));
    // The copy already out is still acknowledged; the one queued at bob is withdrawn.
    net.ack(michael);
    net.ack(bob);
    assert_eq!(net.take_la_lines(michael), [DELIVERED]);
    assert!(net.take_lb_lines(bob).is_empty());
    // Nothing went to jacky after its Close (the harness would have panicked).
    assert!(net.take_la_lines(jacky).is_empty());
    net.send_la(bob, b"/list\n");
    assert_eq!(net.take_la_lines(bob), ["301 bob michael"]);
}

#[test]
fn exit_typed_while_toall_in_flight_is_read_after_the_answer() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/toall hi\n");
    net.send_la(jacky, b"/exit\n");
    assert!(net.take_la_lines(jacky).is_empty());
    assert_eq!(
        net.client(jacky).la_pending(),
        1,
        "the /exit waits for a read grant"
    );
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED, BYE]);
    assert!(net.is_closed(jacky));
}

#[test]
fn over_long_line_is_answered_once_and_the_connection_stays_usable() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    let mut long = b"/toall ".to_vec();
    long.extend(vec![b'a'; 70_000]);
    long.push(b'\n');
    let chunks: Vec<&[u8]> = long.chunks(10_000).collect();
    net.send_la_chunks(jacky, &chunks);
    assert_eq!(net.take_la_lines(jacky), [UNRECOGNIZED]);
    assert!(net.take_lb_bytes(bob).is_empty());
    net.send_la(jacky, b"/list\n");
    assert_eq!(net.take_la_lines(jacky), ["301 jacky bob"]);

    // The bound counts the `\n`: 65,536 bytes is a line, 65,537 is not.
    let line_of = |len: usize| {
        let mut line = b"/to bob ".to_vec();
        line.resize(len - 1, b'b');
        line.push(b'\n');
        line
    };
    net.send_la(jacky, &line_of(65_536));
    assert_eq!(
        net.take_lb_bytes(bob).len(),
        65_536 - "/to bob ".len() + "/from jacky ".len()
    );
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    net.send_la(jacky, &line_of(65_537));
    assert_eq!(net.take_la_lines(jacky), [UNRECOGNIZED]);
    assert!(net.take_lb_bytes(bob).is_empty());
}

#[test]
fn crlf_is_accepted_and_never_sent() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect("jacky");
    net.send_la(jacky, b"/login jacky 12345\r\n");
    net.send_la(jacky, b"/port 30232\r\n");
    net.send_la(jacky, b"/list\r\n");
    assert_eq!(net.take_la_lines(jacky), [AUTH_OK, LB_OK, "301 jacky bob"]);
    net.send_la(jacky, b"/to bob hi there\r\n");
    assert_eq!(net.take_lb_bytes(bob), b"/from jacky hi there\n");
    net.send_lb(bob, b"302 Message receipt successful\r\n");
    assert_eq!(
        net.take_la_bytes(jacky),
        b"303 Message delivery successful\n"
    );
}

#[test]
fn content_is_forwarded_verbatim() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob  \ta b\t\xff\xfe\x00 \r \n");
    assert_eq!(
        net.take_lb_bytes(bob),
        b"/from jacky  \ta b\t\xff\xfe\x00 \r \n"
    );
    net.ack(bob);
    net.send_la(jacky, b"/toall \xc3\x28 caf\xc3\xa9  \n");
    assert_eq!(
        net.take_lb_bytes(bob),
        b"/broadcastfrom jacky \xc3\x28 caf\xc3\xa9  \n"
    );
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED, DELIVERED]);
}

#[test]
fn pipelined_commands_are_answered_one_at_a_time_in_order() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect("jacky");
    net.send_la(jacky, b"/login jacky 12345\n/port 30232\n/list\n");
    assert_eq!(net.take_la_lines(jacky), [AUTH_OK, LB_OK, "301 jacky bob"]);
    net.send_la(jacky, b"/list\n/to bob one\n/list\n/to bob two\n/exit\n");
    assert_eq!(net.take_la_lines(jacky), ["301 jacky bob"]);
    assert!(
        !net.client(jacky).is_granted(),
        "no reads while /to is served"
    );
    assert_eq!(net.take_lb_lines(bob), ["/from jacky one"]);
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED, "301 jacky bob"]);
    assert_eq!(net.take_lb_lines(bob), ["/from jacky two"]);
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), lines(&[DELIVERED, BYE]));
    assert!(net.is_closed(jacky));
}

#[test]
fn a_line_split_anywhere_is_one_line() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    let line = b"/to bob split me\r\n";
    for cut in 1..line.len() {
        net.send_la_chunks(jacky, &[&line[..cut], &line[cut..]]);
        assert_eq!(
            net.take_lb_lines(bob),
            ["/from jacky split me"],
            "cut at {cut}"
        );
        net.ack(bob);
        assert_eq!(net.take_la_lines(jacky), [DELIVERED], "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = line.chunks(1).collect();
    net.send_la_chunks(jacky, &bytes);
    assert_eq!(net.take_lb_lines(bob), ["/from jacky split me"]);
}

#[test]
fn deliveries_to_one_recipient_keep_the_order_requests_came_in() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let senders = [
        net.connect_ready("jacky", "12345"),
        net.connect_ready("michael", "michael123"),
        net.connect_ready("alice", "alice123"),
    ];
    for (i, &s) in senders.iter().enumerate() {
        net.send_la(s, format!("/to bob m{i}\n").as_bytes());
    }
    for (i, &s) in senders.iter().enumerate() {
        let name = net.client(s).name().to_owned();
        assert_eq!(net.take_lb_lines(bob), [format!("/from {name} m{i}")]);
        net.ack(bob);
        assert_eq!(net.take_la_lines(s), [DELIVERED]);
    }
}

#[test]
fn an_exited_user_gets_nothing_more_and_can_come_back() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(bob, b"/exit\n");
    assert_eq!(net.take_la_lines(bob), [BYE]);
    assert!(net.is_closed(bob));
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    let bob = net.connect_ready("bob", "bob123");
    net.send_la(jacky, b"/list\n");
    assert_eq!(net.take_la_lines(jacky), ["301 jacky bob"]);
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);
}

#[test]
fn an_ack_split_across_reads_is_one_ack() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    net.send_lb_chunks(bob, &[b"302 Message rec", b"eipt successful\r", b"\n"]);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    assert!(!net.is_closed(bob));
}

#[test]
fn events_after_close_are_ignored() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    // A connect the server gave up on completes late.
    let jacky = net.connect("jacky");
    net.set_lb_mode(jacky, LbMode::Hang);
    net.send_la(jacky, b"/login jacky 12345\n/port 30232\n");
    net.advance(Duration::from_secs(5));
    assert_eq!(net.take_la_lines(jacky), [AUTH_OK, LB_FAILED]);
    for input in [
        Fed::LbConnected,
        Fed::LbConnectFailed,
        Fed::LaData(b"/list\n".to_vec()),
        Fed::LbData(b"302 Message receipt successful\n".to_vec()),
        Fed::LaClosed,
        Fed::LbClosed,
    ] {
        // Any output for jacky would make the harness panic.
        net.feed_after_close(jacky, input);
    }
    assert_eq!(net.server.connection_count(), 1);
    net.send_la(bob, b"/list\n");
    assert_eq!(net.take_la_lines(bob), ["301 bob"]);
}

#[test]
fn the_model_parses_as_the_spec_says() {
    // The reference model's own parser, against docs/protocol.md's edge cases, so that the
    // simulation's expectations rest on something checked.
    assert_eq!(
        parse(b"/to bob  hi"),
        Some(Command::To(b"bob".to_vec(), b" hi".to_vec()))
    );
    assert_eq!(parse(b"/to bob "), None);
    assert_eq!(parse(b"/to bob"), None);
    assert_eq!(parse(b"/toall "), None);
    assert_eq!(parse(b"/toall  "), Some(Command::ToAll(b" ".to_vec())));
    assert_eq!(parse(b"/login  a b"), None);
    assert_eq!(parse(b"/login a b c"), None);
    assert_eq!(
        parse(b"/login a\tb c"),
        Some(Command::Login(b"a\tb".to_vec(), b"c".to_vec()))
    );
    assert_eq!(parse(b"/port 65535"), Some(Command::Port(65535)));
    for bad in [
        &b"/port 0"[..],
        b"/port 65536",
        b"/port -1",
        b"/port +5",
        b"/port 12ab",
        b"/port 080",
        b"/port",
    ] {
        assert_eq!(parse(bad), None, "{}", escape(bad));
    }
    assert_eq!(parse(b"/list x"), None);
    assert_eq!(parse(b"/LIST"), None);
    assert_eq!(parse(b"/exit "), None);
    let mut framer = Framer::default();
    let frames = framer.push(b"ab\r\nabcd\n\r\n", 4);
    let shown: Vec<String> = frames
        .iter()
        .map(|(f, end)| match f {
            Frame::Line(l) => format!("{}@{end}", escape(l)),
            Frame::TooLong => format!("too long@{end}"),
        })
        .collect();
    // The bound counts every byte of the line, `\r` and `\n` included.
    assert_eq!(shown, ["ab@4", "too long@8", "@11"]);
}

/// A hashed password is checked off the event loop: the hub asks for the check, reads no
/// further line of that client until the result is back, serves everyone else meanwhile, and
/// looks at "already online" only once the result is in.
/// With one hash in the users file, every login is an argon2 check off the loop (an unknown
/// name and a plain password too, so that they take as long), and the answers are the bytes
/// they always were.
#[test]
fn with_a_hash_in_the_file_every_login_is_checked_and_answered_as_before() {
    use simple_im_core::users::{hash_password, Users};

    let hash = hash_password(b"s3cret", b"0123456789abcdef").unwrap();
    let users = Users::parse(format!("jacky {hash}\nbob bob123\n").as_bytes()).unwrap();
    let mut net = Net::new(users, ServerConfig::default());
    let client = net.connect("anyone");
    let attempts = [
        ("/login nobody bob123", "102 Authentication failed"),
        ("/login bob wrong", "102 Authentication failed"),
        ("/login jacky wrong", "102 Authentication failed"),
        ("/login bob bob123", "101 Authentication successful"),
    ];
    for (line, answer) in attempts {
        net.send_la(client, format!("{line}\n").as_bytes());
        assert_eq!(net.take_la_lines(client), [answer], "{line}");
    }
    let checks = net
        .log()
        .iter()
        .filter(|entry| {
            matches!(
                entry.record,
                Record::Output {
                    output: Output::CheckPassword(..),
                    ..
                }
            )
        })
        .count();
    assert_eq!(checks, attempts.len());
}

#[test]
fn hashed_logins_are_checked_off_the_loop() {
    use simple_im_core::server::{Input, Server};
    use simple_im_core::users::{hash_password, Users};

    let hash = hash_password(b"s3cret", b"0123456789abcdef").unwrap();
    let users = Users::parse(format!("jacky {hash}\nbob bob123\n").as_bytes()).unwrap();
    let mut server = Server::new(users, ServerConfig::default());
    let now = Instant::now();
    let peer: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let drain =
        |server: &mut Server| std::iter::from_fn(|| server.poll_output()).collect::<Vec<_>>();
    let line = |conn, text: &str| Output::SendLa(conn, Bytes::from(format!("{text}\n")));

    let jacky = server.accept(now, peer);
    let twin = server.accept(now, peer);
    let bob = server.accept(now, peer);
    drain(&mut server);
    server.handle_input(now, Input::LaData(jacky, b"/login jacky s3cret\n/list\n"));
    let asked = drain(&mut server);
    let [Output::CheckPassword(conn, check)] = &asked[..] else {
        panic!("expected one password check, got {asked:?}");
    };
    assert_eq!(*conn, jacky);
    // The same user on another connection meanwhile: also a check, also pending.
    server.handle_input(now, Input::LaData(twin, b"/login jacky s3cret\n"));
    let twin_check = match &drain(&mut server)[..] {
        [Output::CheckPassword(conn, check)] if *conn == twin => check.clone(),
        other => panic!("expected the twin's check, got {other:?}"),
    };
    // Others are served while the checks run. (Not bob's login: with a hash in the file, a
    // plain password is an argon2 check too, so that it takes as long.)
    server.handle_input(now, Input::LaData(bob, b"hello\n"));
    assert_eq!(
        drain(&mut server),
        [line(bob, "401 Unrecognized message"), Output::ReadLa(bob)]
    );
    assert!(check.run() && twin_check.run());
    server.handle_input(now, Input::PasswordChecked(jacky, true));
    // 101, then the /list typed ahead is read at last (401: no Lb yet), then a new grant.
    assert_eq!(
        drain(&mut server),
        [
            line(jacky, "101 Authentication successful"),
            line(jacky, "401 Unrecognized message"),
            Output::ReadLa(jacky),
        ]
    );
    // The twin's right password comes back after jacky went online: 102.
    server.handle_input(now, Input::PasswordChecked(twin, true));
    assert_eq!(
        drain(&mut server),
        [
            line(twin, "102 Authentication failed"),
            Output::ReadLa(twin)
        ]
    );
    // A stray result changes nothing.
    server.handle_input(now, Input::PasswordChecked(bob, false));
    assert_eq!(drain(&mut server), []);
}

// --- Reloading the users file (SIGHUP) and stopping gracefully (SIGTERM) ---

/// The appendix's accounts, as a reload would read them, changed by `edit`.
fn appendix_accounts(
    edit: impl FnOnce(&mut Vec<(&'static str, &'static str)>),
) -> Vec<(&'static str, &'static str)> {
    let mut accounts = vec![
        ("jacky", "12345"),
        ("bob", "bob123"),
        ("michael", "michael123"),
        ("alice", "alice123"),
        ("carol", "carol123"),
    ];
    edit(&mut accounts);
    accounts
}

#[test]
fn reload_lets_a_new_user_in_and_leaves_the_others_alone() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);

    // A delivery is outstanding while the file is read again: it is not touched.
    net.reload_users(&appendix_accounts(|a| a.push(("dave", "dave123"))));
    assert!(!net.is_closed(jacky) && !net.is_closed(bob));
    assert_eq!(net.take_la_lines(jacky), Vec::<String>::new());
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);

    let dave = net.connect_ready("dave", "dave123");
    net.send_la(dave, b"/list\n");
    assert_eq!(net.take_la_lines(dave), ["301 dave jacky bob"]);
}

#[test]
fn reload_changes_a_password_from_the_next_login() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    net.reload_users(&appendix_accounts(|a| a[0].1 = "changed"));
    let old = net.connect("jacky");
    net.send_la(old, b"/login jacky 12345\n");
    assert_eq!(net.take_la_lines(old), [AUTH_FAILED]);
    net.send_la(old, b"/login jacky changed\n");
    assert_eq!(net.take_la_lines(old), [AUTH_OK]);
    // Bob's own password did not change, and his session goes on.
    net.send_la(bob, b"/list\n");
    assert_eq!(net.take_la_lines(bob), ["301 bob jacky"]);
}

#[test]
fn reload_ends_a_removed_users_session_and_fails_its_deliveries() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    let alice = net.connect_ready("alice", "alice123");
    // Bob has one delivery outstanding, unacknowledged, when he is removed.
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);
    net.reload_users(&appendix_accounts(|a| a.retain(|(name, _)| *name != "bob")));
    assert!(net.is_closed(bob));
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
    assert!(!net.is_closed(jacky) && !net.is_closed(alice));
    net.send_la(alice, b"/list\n");
    assert_eq!(net.take_la_lines(alice), ["301 alice jacky"]);
    // And he cannot come back.
    let again = net.connect("bob");
    net.send_la(again, b"/login bob bob123\n");
    assert_eq!(net.take_la_lines(again), [AUTH_FAILED]);
}

#[test]
fn stop_answers_the_requests_in_flight_then_closes_everyone() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    let idle = net.connect_ready("alice", "alice123");
    let unauthenticated = net.connect("mallory");
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);

    net.stop();
    // Those with nothing in flight are closed at once; the conversation goes on.
    assert!(net.is_closed(idle) && net.is_closed(unauthenticated));
    assert!(!net.is_closed(jacky) && !net.is_closed(bob));
    assert!(!net.server.is_stopped());
    // No new request is read meanwhile.
    net.send_la(bob, b"/list\n");
    assert_eq!(net.take_la_lines(bob), Vec::<String>::new());

    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    assert!(net.is_closed(jacky) && net.is_closed(bob));
    assert!(net.server.is_stopped());
    assert_eq!(
        net.server.poll_timeout(),
        None,
        "nothing is left to wait for"
    );
}

#[test]
fn stop_fails_what_is_still_in_flight_at_the_ack_timeout() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    let alice = net.connect_ready("alice", "alice123");
    // Bob has jacky's message outstanding and alice's queued behind it.
    net.send_la(jacky, b"/to bob hi\n");
    net.send_la(alice, b"/to bob yo\n");
    net.stop();
    net.advance(Duration::from_secs(5));
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    assert!(
        net.is_closed(jacky),
        "a session with nothing in flight ends"
    );
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi", "/from alice yo"]);
    // Alice's message would have until 15 s; the stop gives it until 10 s.
    net.advance(Duration::from_millis(4_999));
    assert!(!net.is_closed(alice), "the stop waits one ack timeout");
    net.advance(Duration::from_millis(1));
    assert_eq!(net.take_la_lines(alice), [DELIVERY_FAILED]);
    assert!(net.is_closed(bob) && net.is_closed(alice));
    assert!(net.server.is_stopped());
}

// --- Reloading the settings (SIGHUP) ---

#[test]
fn reconfigure_lowers_the_login_failure_limit_from_the_next_failure() {
    let mut net = with_config(ServerConfig {
        max_login_failures: 3,
        ..ServerConfig::default()
    });
    let jacky = net.connect_ready("jacky", "12345");
    let typo = net.connect("bob");
    net.send_la(typo, b"/login bob wrong\n");
    assert_eq!(net.take_la_lines(typo), [AUTH_FAILED]);
    net.reconfigure(ServerConfig {
        max_login_failures: 2,
        ..ServerConfig::default()
    });
    assert!(!net.is_closed(typo) && !net.is_closed(jacky));
    net.send_la(typo, b"/login bob wrong\n");
    assert_eq!(net.take_la_lines(typo), [AUTH_FAILED]);
    assert!(net.is_closed(typo));
    net.send_la(jacky, b"/list\n");
    assert_eq!(net.take_la_lines(jacky), ["301 jacky"]);
}

#[test]
fn reconfigure_leaves_a_delivery_out_its_deadline_and_bounds_the_next() {
    let mut net = Net::appendix();
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    net.send_la(jacky, b"/to bob hi\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);
    net.reconfigure(ServerConfig {
        ack_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    });
    // The delivery out keeps its 10 s.
    net.advance(Duration::from_secs(3));
    assert!(!net.is_closed(bob));
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    // The next one has 2 s.
    net.send_la(jacky, b"/to bob again\n");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky again"]);
    net.advance(Duration::from_millis(2_100));
    assert!(net.is_closed(bob));
    assert_eq!(net.take_la_lines(jacky), [DELIVERY_FAILED]);
}

#[test]
fn reconfigure_keeps_a_connections_line_bound_and_bounds_new_ones() {
    let mut net = with_config(ServerConfig {
        max_line: 32,
        ..ServerConfig::default()
    });
    let before = net.connect("jacky");
    net.reconfigure(ServerConfig {
        max_line: 64,
        ..ServerConfig::default()
    });
    let after = net.connect("jacky");
    // Over the old bound, under the new one.
    let long = b"/login jacky a-password-far-too-long-for-32\n";
    net.send_la(before, long);
    assert_eq!(net.take_la_lines(before), [UNRECOGNIZED]);
    net.send_la(after, long);
    assert_eq!(net.take_la_lines(after), [AUTH_FAILED]);
}
