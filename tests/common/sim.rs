//! An in-memory network and a manual clock that drive the sans-IO [`Server`] through whole
//! conversations, like quinn-proto's test `Pair`: no sockets, no sleeps, every byte recorded.
//!
//! A [`Net`] owns the server and a set of simulated clients. Each client has an La (bytes it
//! will send, held until the server grants a read; bytes it received), an optional Lb (which
//! accepts, refuses or never answers the server's connect, per [`LbMode`]) and a flag that
//! makes it acknowledge deliveries by itself. [`Net::drive`] pulls every [`Output`] and routes
//! it, feeding the consequences back in as new inputs until nothing moves. Every input and
//! output is kept in [`Net::log`] in the order it happened, for checkers and for
//! [`Net::transcript`], the text that insta snapshots hold.
//!
//! The harness checks the rules that hold in every test, and panics when one breaks: no output
//! for a connection after its `Close`, at most one La read grant outstanding, Lb bytes only on
//! an Lb that is up, whole lines only, never a second message on an Lb before the first was
//! acknowledged, and `poll_timeout` never in the past once an input or timeout was handled.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use simple_im_core::server::{ConnId, Input, Output, Server, ServerConfig};
use simple_im_core::users::Users;

/// `302 Message receipt successful\n`, the only acknowledgement a client sends on Lb.
pub const RECEIPT: &[u8] = b"302 Message receipt successful\n";

/// Names one simulated client (one La connection) for the whole test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// How a client's Lb listener answers the server's connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbMode {
    /// The connection is made at once.
    Accept,
    /// The connection is refused at once.
    Refuse,
    /// No answer ever comes; the server's connect timeout must end it.
    Hang,
}

/// Where a client's Lb is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbState {
    /// No `/port` was acted on yet.
    None,
    /// The server is connecting and the listener does not answer.
    Hanging,
    /// Connected.
    Up,
    /// Refused, dropped by the client, or closed by the server.
    Down,
}

/// One input fed to the server, owned so that it can be logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fed {
    /// [`Input::LaData`]
    LaData(Vec<u8>),
    /// [`Input::LaClosed`]
    LaClosed,
    /// [`Input::LbConnected`]
    LbConnected,
    /// [`Input::LbConnectFailed`]
    LbConnectFailed,
    /// [`Input::LbData`]
    LbData(Vec<u8>),
    /// [`Input::LbClosed`]
    LbClosed,
    /// [`Input::PasswordChecked`]: the harness runs each check at once.
    PasswordChecked(bool),
}

/// One thing that happened, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// [`Server::accept`] named a new client's connection.
    Accepted {
        /// The client.
        client: ClientId,
        /// Its connection id.
        conn: ConnId,
        /// La's peer address.
        peer: SocketAddr,
    },
    /// An input was fed to [`Server::handle_input`].
    Fed {
        /// The client it came from.
        client: ClientId,
        /// Its connection.
        conn: ConnId,
        /// What happened.
        input: Fed,
    },
    /// [`Server::handle_timeout`] was called.
    Timeout,
    /// [`Server::reload_users`] was called with accounts for these names.
    Reload {
        /// Who has an account from now on, with their passwords.
        accounts: Vec<(String, String)>,
    },
    /// [`Server::reconfigure`] was called with these limits.
    Reconfigure {
        /// The limits from now on.
        config: ServerConfig,
    },
    /// [`Server::poll_output`] returned this.
    Output {
        /// The client it was for.
        client: ClientId,
        /// The output itself.
        output: Output,
    },
}

impl Record {
    /// Whether this record starts an event (an input, a timeout, an accept) rather than being
    /// one of the outputs that follow it.
    pub fn is_event(&self) -> bool {
        !matches!(self, Record::Output { .. })
    }
}

/// A [`Record`] with the clock reading at which it happened.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The test clock.
    pub now: Instant,
    /// What happened.
    pub record: Record,
}

/// One simulated client: both of its connections as the far end sees them.
#[derive(Debug)]
pub struct Client {
    name: String,
    conn: ConnId,
    peer: SocketAddr,
    lb_mode: LbMode,
    auto_ack: bool,
    /// Chunks waiting for a read grant, each delivered whole on one grant.
    la_pending: VecDeque<Vec<u8>>,
    la_granted: bool,
    la_received: Vec<u8>,
    lb: LbState,
    lb_received: Vec<u8>,
    /// Delivery lines received on Lb and not yet acknowledged.
    lb_unacked: usize,
    closed: bool,
}

impl Client {
    /// The label used in transcripts.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's id for this client's connection.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// La's peer address (a distinct IP per client).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the server has sent `Close` for this client.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a read grant ([`Output::ReadLa`]) is outstanding.
    pub fn is_granted(&self) -> bool {
        self.la_granted
    }

    /// Chunks still waiting for a read grant.
    pub fn la_pending(&self) -> usize {
        self.la_pending.len()
    }

    /// Where Lb is.
    pub fn lb(&self) -> LbState {
        self.lb
    }

    /// Delivery lines received and not yet acknowledged.
    pub fn lb_unacked(&self) -> usize {
        self.lb_unacked
    }

    /// Whether the client acknowledges deliveries by itself.
    pub fn auto_ack(&self) -> bool {
        self.auto_ack
    }
}

/// The server, its clients, the clock and the log.
pub struct Net {
    /// The machine under test.
    pub server: Server,
    start: Instant,
    now: Instant,
    clients: Vec<Client>,
    by_conn: HashMap<ConnId, ClientId>,
    /// Inputs caused by outputs (Lb connect answers), fed before anything else.
    follow_ups: VecDeque<(ClientId, Fed)>,
    log: Vec<Entry>,
}

/// Users from `(name, password)` pairs.
pub fn users(accounts: &[(&str, &str)]) -> Users {
    let mut users = Users::default();
    for (name, password) in accounts {
        users.insert(name.as_bytes(), password.as_bytes());
    }
    users
}

/// The appendix's three users and two more.
pub fn appendix_users() -> Users {
    users(&[
        ("jacky", "12345"),
        ("bob", "bob123"),
        ("michael", "michael123"),
        ("alice", "alice123"),
        ("carol", "carol123"),
    ])
}

impl Net {
    /// A server for `users` with `config`; the clock starts now and moves only by
    /// [`Net::advance`].
    pub fn new(users: Users, config: ServerConfig) -> Self {
        let start = Instant::now();
        Net {
            server: Server::new(users, config),
            start,
            now: start,
            clients: Vec::new(),
            by_conn: HashMap::new(),
            follow_ups: VecDeque::new(),
            log: Vec::new(),
        }
    }

    /// The appendix's users with the default limits.
    pub fn appendix() -> Self {
        Net::new(appendix_users(), ServerConfig::default())
    }

    /// The test clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// How far the clock has moved since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// One client.
    pub fn client(&self, client: ClientId) -> &Client {
        &self.clients[client.0]
    }

    /// Every client so far, in the order they connected.
    pub fn clients(&self) -> impl Iterator<Item = (ClientId, &Client)> {
        self.clients
            .iter()
            .enumerate()
            .map(|(i, c)| (ClientId(i), c))
    }

    /// Everything that happened, in order.
    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    /// A new client connects La (from its own IP); its Lb will accept, and it does not
    /// acknowledge deliveries by itself.
    pub fn connect(&mut self, name: &str) -> ClientId {
        let id = ClientId(self.clients.len());
        let ip = Ipv4Addr::new(10, 0, (id.0 / 250) as u8, (id.0 % 250) as u8 + 1);
        let peer = SocketAddr::new(IpAddr::V4(ip), 40_000 + id.0 as u16);
        let conn = self.server.accept(self.now, peer);
        assert!(
            !self.by_conn.contains_key(&conn),
            "accept reused {conn} while it is still known"
        );
        self.by_conn.insert(conn, id);
        self.clients.push(Client {
            name: name.to_owned(),
            conn,
            peer,
            lb_mode: LbMode::Accept,
            auto_ack: false,
            la_pending: VecDeque::new(),
            la_granted: false,
            la_received: Vec::new(),
            lb: LbState::None,
            lb_received: Vec::new(),
            lb_unacked: 0,
            closed: false,
        });
        self.record(Record::Accepted {
            client: id,
            conn,
            peer,
        });
        self.drive();
        id
    }

    /// Connects, logs in and builds Lb, checking the `101` and `201` on the way.
    pub fn connect_ready(&mut self, name: &str, password: &str) -> ClientId {
        let client = self.connect(name);
        self.send_la(client, format!("/login {name} {password}\n").as_bytes());
        assert_eq!(
            self.take_la_lines(client),
            ["101 Authentication successful"]
        );
        self.send_la(
            client,
            format!("/port {}\n", Net::port_of(client)).as_bytes(),
        );
        assert_eq!(
            self.take_la_lines(client),
            ["201 Build connection successful"]
        );
        client
    }

    /// The port a client's Lb listener uses in [`Net::connect_ready`].
    pub fn port_of(client: ClientId) -> u16 {
        30_000 + client.0 as u16
    }

    /// How the client's Lb listener will answer the next connect.
    pub fn set_lb_mode(&mut self, client: ClientId, mode: LbMode) {
        self.clients[client.0].lb_mode = mode;
    }

    /// Whether the client acknowledges each delivery by itself as soon as it arrives.
    pub fn set_auto_ack(&mut self, client: ClientId, on: bool) {
        self.clients[client.0].auto_ack = on;
        self.drive();
    }

    /// The client writes `bytes` on La as one chunk: it reaches the server on the next read
    /// grant, in one [`Input::LaData`].
    pub fn send_la(&mut self, client: ClientId, bytes: &[u8]) {
        self.send_la_chunks(client, &[bytes]);
    }

    /// The client writes these chunks on La; each reaches the server on its own read grant.
    pub fn send_la_chunks(&mut self, client: ClientId, chunks: &[&[u8]]) {
        let c = &mut self.clients[client.0];
        assert!(!c.closed, "{} sends on La after Close", c.name);
        c.la_pending
            .extend(chunks.iter().map(|chunk| chunk.to_vec()));
        self.drive();
    }

    /// The client acknowledges its outstanding delivery.
    pub fn ack(&mut self, client: ClientId) {
        let c = &self.clients[client.0];
        assert!(
            c.lb_unacked > 0,
            "{} has no delivery to acknowledge",
            c.name
        );
        self.send_lb(client, RECEIPT);
    }

    /// The client writes `bytes` on Lb as they are, so that wrong acknowledgements can be sent
    /// too; only an exact `302` line (LF or CRLF) counts as acknowledging.
    pub fn send_lb(&mut self, client: ClientId, bytes: &[u8]) {
        let c = &mut self.clients[client.0];
        assert!(!c.closed, "{} sends on Lb after Close", c.name);
        assert_eq!(
            c.lb,
            LbState::Up,
            "{} sends on an Lb that is not up",
            c.name
        );
        if bytes == RECEIPT || bytes == b"302 Message receipt successful\r\n" {
            c.lb_unacked = c.lb_unacked.saturating_sub(1);
        }
        self.feed(client, Fed::LbData(bytes.to_vec()));
        self.drive();
    }

    /// The client writes these chunks on Lb, each read by the server on its own; together they
    /// count as acknowledging if they make an exact `302` line (LF or CRLF).
    pub fn send_lb_chunks(&mut self, client: ClientId, chunks: &[&[u8]]) {
        let whole = chunks.concat();
        let c = &mut self.clients[client.0];
        assert!(!c.closed, "{} sends on Lb after Close", c.name);
        assert_eq!(
            c.lb,
            LbState::Up,
            "{} sends on an Lb that is not up",
            c.name
        );
        if whole == RECEIPT || whole == b"302 Message receipt successful\r\n" {
            c.lb_unacked = c.lb_unacked.saturating_sub(1);
        }
        for chunk in chunks {
            if !self.clients[client.0].closed {
                self.feed(client, Fed::LbData(chunk.to_vec()));
                self.drive();
            }
        }
    }

    /// Feeds an input for a client the server has already closed, as a runtime may when a
    /// socket event (a late Lb connect, an end of file) races with the `Close`. The server must
    /// ignore it; any output for the client makes the harness panic.
    pub fn feed_after_close(&mut self, client: ClientId, input: Fed) {
        assert!(self.clients[client.0].closed, "only for closed clients");
        self.feed_unchecked(client, input);
        self.drive();
    }

    /// The client closes La (end of file).
    pub fn drop_la(&mut self, client: ClientId) {
        assert!(!self.clients[client.0].closed);
        self.clients[client.0].la_pending.clear();
        self.feed(client, Fed::LaClosed);
        self.drive();
    }

    /// The client closes Lb (end of file).
    pub fn drop_lb(&mut self, client: ClientId) {
        let c = &mut self.clients[client.0];
        assert!(!c.closed);
        assert_eq!(c.lb, LbState::Up, "{} has no Lb to drop", c.name);
        c.lb = LbState::Down;
        self.feed(client, Fed::LbClosed);
        self.drive();
    }

    /// Moves the clock forward by `by`, firing each deadline at its own time on the way, as
    /// a runtime's timer would.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.server.poll_timeout() {
            assert!(at > self.now, "poll_timeout is in the past");
            if at > target {
                break;
            }
            self.now = at;
            self.record(Record::Timeout);
            self.server.handle_timeout(at);
            self.drive();
        }
        self.now = target;
    }

    /// The users file is read again with these `(name, password)` accounts; what follows is
    /// driven at once.
    pub fn reload_users(&mut self, accounts: &[(&str, &str)]) {
        let accounts: Vec<(String, String)> = accounts
            .iter()
            .map(|(name, password)| (name.to_string(), password.to_string()))
            .collect();
        let mut fresh = Users::default();
        for (name, password) in &accounts {
            fresh.insert(name.as_bytes(), password.as_bytes());
        }
        self.record(Record::Reload { accounts });
        self.server.reload_users(self.now, fresh);
        self.drive();
    }

    /// The settings are read again with these limits; what follows is driven at once.
    pub fn reconfigure(&mut self, config: ServerConfig) {
        self.record(Record::Reconfigure {
            config: config.clone(),
        });
        self.server.reconfigure(self.now, config);
        self.drive();
    }

    /// A graceful stop begins (SIGTERM); what follows is driven at once.
    pub fn stop(&mut self) {
        self.server.stop(self.now);
        self.drive();
    }

    /// Lets everything settle: routes every output, answers Lb connects, delivers La chunks
    /// on their grants and lets auto-acknowledging clients acknowledge, until nothing moves.
    ///
    /// Each input's outputs are all routed before the next input is fed, so the log reads as
    /// a sequence of events, each followed by exactly what it caused.
    pub fn drive(&mut self) {
        loop {
            while let Some(output) = self.server.poll_output() {
                self.route(output);
            }
            if let Some((client, input)) = self.follow_ups.pop_front() {
                self.feed(client, input);
                continue;
            }
            let deliverable = self
                .clients
                .iter()
                .position(|c| !c.closed && c.la_granted && !c.la_pending.is_empty());
            if let Some(i) = deliverable {
                let c = &mut self.clients[i];
                c.la_granted = false;
                let chunk = c.la_pending.pop_front().expect("a chunk is pending");
                self.feed(ClientId(i), Fed::LaData(chunk));
                continue;
            }
            let acking = self
                .clients
                .iter()
                .position(|c| !c.closed && c.auto_ack && c.lb == LbState::Up && c.lb_unacked > 0);
            if let Some(i) = acking {
                self.clients[i].lb_unacked -= 1;
                self.feed(ClientId(i), Fed::LbData(RECEIPT.to_vec()));
                continue;
            }
            break;
        }
    }

    /// The complete lines the client received on La since the last call, without `\n`,
    /// escaped as in transcripts.
    pub fn take_la_lines(&mut self, client: ClientId) -> Vec<String> {
        take_lines(&mut self.clients[client.0].la_received)
    }

    /// The complete lines the client received on Lb since the last call, without `\n`,
    /// escaped as in transcripts.
    pub fn take_lb_lines(&mut self, client: ClientId) -> Vec<String> {
        take_lines(&mut self.clients[client.0].lb_received)
    }

    /// The exact bytes the client received on La since the last call.
    pub fn take_la_bytes(&mut self, client: ClientId) -> Vec<u8> {
        std::mem::take(&mut self.clients[client.0].la_received)
    }

    /// The exact bytes the client received on Lb since the last call.
    pub fn take_lb_bytes(&mut self, client: ClientId) -> Vec<u8> {
        std::mem::take(&mut self.clients[client.0].lb_received)
    }

    /// Whether the server closed this client.
    pub fn is_closed(&self, client: ClientId) -> bool {
        self.clients[client.0].closed
    }

    /// Every byte of every connection with its direction and time, one section per client in
    /// the order they connected: the text insta snapshots hold.
    pub fn transcript(&self) -> String {
        let mut out = String::from(
            "# `<-` client to server, `->` server to client; mm:ss.mmm on the test clock\n",
        );
        for (id, client) in self.clients() {
            let _ = writeln!(
                out,
                "\n== {} (connection {}, from {}) ==",
                client.name, client.conn, client.peer
            );
            for entry in &self.log {
                if entry_client(&entry.record) == Some(id) {
                    if let Some(line) = self.render(entry) {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
        }
        out
    }

    /// The `n` log entries before `end`, all clients interleaved, one line each.
    pub fn history(&self, end: usize, n: usize) -> String {
        let from = end.saturating_sub(n);
        let mut out = String::new();
        for entry in &self.log[from..end] {
            if let Some(line) = self.render(entry) {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// One log entry as a transcript line (`None` for read grants).
    pub fn render(&self, entry: &Entry) -> Option<String> {
        let what = match &entry.record {
            Record::Accepted { .. } => "La connected".to_owned(),
            Record::Fed { input, .. } => match input {
                Fed::LaData(bytes) => format!("La <- {}", escape(bytes)),
                Fed::LaClosed => "La closed by client".to_owned(),
                Fed::LbConnected => "Lb accepted".to_owned(),
                Fed::LbConnectFailed => "Lb refused".to_owned(),
                Fed::LbData(bytes) => format!("Lb <- {}", escape(bytes)),
                Fed::LbClosed => "Lb closed by client".to_owned(),
                Fed::PasswordChecked(correct) => format!("password checked: {correct}"),
            },
            Record::Timeout => return Some(format!("{} (timeout)", clock(entry.now - self.start))),
            Record::Reload { accounts } => {
                let names: Vec<&str> = accounts.iter().map(|(name, _)| name.as_str()).collect();
                let at = clock(entry.now - self.start);
                return Some(format!("{at} (users reloaded: {})", names.join(" ")));
            }
            Record::Reconfigure { config } => {
                let at = clock(entry.now - self.start);
                return Some(format!("{at} (settings reloaded: {config:?})"));
            }
            Record::Output { output, .. } => match output {
                Output::ReadLa(_) => return None,
                Output::SendLa(_, bytes) => format!("La -> {}", escape(bytes)),
                Output::ConnectLb(_, addr) => format!("Lb connect to {addr}"),
                Output::SendLb(_, bytes) => format!("Lb -> {}", escape(bytes)),
                Output::Close(_) => "closed by server".to_owned(),
                Output::CheckPassword(..) => "password check asked for".to_owned(),
                Output::Cluster(cluster) => format!("cluster: {cluster:?}"),
            },
        };
        let client = &self.clients[entry_client(&entry.record)?.0];
        Some(format!(
            "{} {} {what}",
            clock(entry.now - self.start),
            client.name
        ))
    }

    fn record(&mut self, record: Record) {
        self.log.push(Entry {
            now: self.now,
            record,
        });
    }

    fn feed(&mut self, client: ClientId, input: Fed) {
        assert!(
            !self.clients[client.0].closed,
            "the harness fed {input:?} for a closed connection"
        );
        self.feed_unchecked(client, input);
    }

    fn feed_unchecked(&mut self, client: ClientId, input: Fed) {
        let conn = self.clients[client.0].conn;
        self.record(Record::Fed {
            client,
            conn,
            input: input.clone(),
        });
        let now = self.now;
        match &input {
            Fed::LaData(bytes) => self.server.handle_input(now, Input::LaData(conn, bytes)),
            Fed::LaClosed => self.server.handle_input(now, Input::LaClosed(conn)),
            Fed::LbConnected => self.server.handle_input(now, Input::LbConnected(conn)),
            Fed::LbConnectFailed => self.server.handle_input(now, Input::LbConnectFailed(conn)),
            Fed::LbData(bytes) => self.server.handle_input(now, Input::LbData(conn, bytes)),
            Fed::LbClosed => self.server.handle_input(now, Input::LbClosed(conn)),
            Fed::PasswordChecked(correct) => self
                .server
                .handle_input(now, Input::PasswordChecked(conn, *correct)),
        }
        if let Some(at) = self.server.poll_timeout() {
            assert!(at > now, "poll_timeout is in the past after {input:?}");
        }
    }

    fn route(&mut self, output: Output) {
        let conn = match &output {
            Output::ReadLa(conn)
            | Output::SendLa(conn, _)
            | Output::ConnectLb(conn, _)
            | Output::SendLb(conn, _)
            | Output::Close(conn)
            | Output::CheckPassword(conn, _) => *conn,
            Output::Cluster(_) => panic!("a single server asked a cluster: {output:?}"),
        };
        let id = *self
            .by_conn
            .get(&conn)
            .unwrap_or_else(|| panic!("{output:?} for a connection never accepted"));
        self.record(Record::Output {
            client: id,
            output: output.clone(),
        });
        let c = &mut self.clients[id.0];
        assert!(!c.closed, "{output:?} after Close of {}", c.name);
        match output {
            Output::ReadLa(_) => {
                assert!(!c.la_granted, "a second read grant for {}", c.name);
                c.la_granted = true;
            }
            Output::SendLa(_, bytes) => {
                assert_whole_line(&bytes, &c.name, "La");
                c.la_received.extend_from_slice(&bytes);
            }
            Output::ConnectLb(_, _) => {
                assert_eq!(c.lb, LbState::None, "a second Lb connect for {}", c.name);
                match c.lb_mode {
                    LbMode::Accept => {
                        c.lb = LbState::Up;
                        self.follow_ups.push_back((id, Fed::LbConnected));
                    }
                    LbMode::Refuse => {
                        c.lb = LbState::Down;
                        self.follow_ups.push_back((id, Fed::LbConnectFailed));
                    }
                    LbMode::Hang => c.lb = LbState::Hanging,
                }
            }
            Output::SendLb(_, bytes) => {
                assert_eq!(c.lb, LbState::Up, "Lb bytes for {} without Lb", c.name);
                assert_whole_line(&bytes, &c.name, "Lb");
                assert_eq!(
                    c.lb_unacked, 0,
                    "a second message on {}'s Lb before the first was acknowledged",
                    c.name
                );
                c.lb_unacked = 1;
                c.lb_received.extend_from_slice(&bytes);
            }
            Output::CheckPassword(_, check) => {
                self.follow_ups
                    .push_back((id, Fed::PasswordChecked(check.run())));
            }
            Output::Close(_) => {
                c.closed = true;
                c.la_granted = false;
                c.la_pending.clear();
                if c.lb != LbState::None {
                    c.lb = LbState::Down;
                }
            }
            Output::Cluster(_) => unreachable!("refused above"),
        }
    }
}

fn entry_client(record: &Record) -> Option<ClientId> {
    match record {
        Record::Accepted { client, .. }
        | Record::Fed { client, .. }
        | Record::Output { client, .. } => Some(*client),
        Record::Timeout | Record::Reload { .. } | Record::Reconfigure { .. } => None,
    }
}

fn assert_whole_line(bytes: &[u8], name: &str, link: &str) {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    assert!(
        newlines == 1 && bytes.ends_with(b"\n"),
        "{name} {link} got something other than one whole line: {}",
        escape(bytes)
    );
}

fn take_lines(buffer: &mut Vec<u8>) -> Vec<String> {
    let end = buffer
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let whole: Vec<u8> = buffer.drain(..end).collect();
    whole
        .split(|&b| b == b'\n')
        .take(whole.iter().filter(|&&b| b == b'\n').count())
        .map(escape)
        .collect()
}

/// Bytes as text: printable ASCII as is, `\n`, `\r`, `\t`, `\\` and `\xNN` for the rest.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// `mm:ss.mmm`
fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!(
        "{:02}:{:02}.{:03}",
        secs / 60,
        secs % 60,
        elapsed.subsec_millis()
    )
}
