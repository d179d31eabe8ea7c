//! The fuzz harness, shared by the cargo-fuzz targets in `fuzz/` (through `#[path]`) and by
//! `tests/fuzz_replay.rs`, which replays the committed corpus in `cargo test` without libFuzzer.
//!
//! Each entry point takes the fuzzer's bytes, decodes them into a schedule, drives one machine
//! with it, and panics when an invariant breaks:
//!
//! - [`framer_parser`]: bytes in arbitrary chunks through [`LineFramer`], checked against a
//!   byte-at-a-time model of the framer, and every line through the three parsers, which must
//!   format back exactly what they accepted.
//! - [`server_hub`]: the sans-IO [`Server`] fed accepts, La and Lb bytes, Lb connects, closes and
//!   the passing of time, with a model of every client beside it that checks each output.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use simple_im_core::protocol::{
    is_receipt, is_token, Delivery, Frame, LineFramer, Request, Response, DEFAULT_MAX_LINE, RECEIPT,
};
use simple_im_core::server::{ConnId, Input, Output, Server, ServerConfig};
use simple_im_core::users::Users;

/// The fuzzer's bytes, read from the front; once they run out every read gives zeros.
struct Source<'a> {
    data: &'a [u8],
}

impl<'a> Source<'a> {
    fn new(data: &'a [u8]) -> Self {
        Source { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    /// A number below `n` (which must not be 0).
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length byte, then that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte());
        self.take(len)
    }
}

/// What the model framer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFrame {
    /// A whole line, without `\n` and without one `\r` right before it.
    Line(Vec<u8>),
    /// A line reached the bound.
    TooLong,
}

/// docs/protocol.md §1's framing, one byte at a time: the specification the chunked [`LineFramer`]
/// must match whatever the chunk boundaries.
#[derive(Debug)]
pub struct ModelFramer {
    max_line: usize,
    line: Vec<u8>,
    discarding: bool,
}

impl ModelFramer {
    /// A model of `LineFramer::new(max_line)` (give it the framer's clamped `max_line()`).
    pub fn new(max_line: usize) -> Self {
        ModelFramer {
            max_line,
            line: Vec::new(),
            discarding: false,
        }
    }

    /// Frames `bytes`, appending every frame completed.
    pub fn push(&mut self, bytes: &[u8], frames: &mut Vec<ModelFrame>) {
        for &byte in bytes {
            if self.discarding {
                self.discarding = byte != b'\n';
                continue;
            }
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                frames.push(ModelFrame::Line(line));
                continue;
            }
            self.line.push(byte);
            // A line of `max_line` bytes before its `\n` can no longer fit.
            if self.line.len() >= self.max_line {
                self.line.clear();
                self.discarding = true;
                frames.push(ModelFrame::TooLong);
            }
        }
    }
}

/// Checks every parser on one line: whatever is accepted formats back to exactly the line.
pub fn check_parsers(line: &[u8]) {
    let mut wire = line.to_vec();
    wire.push(b'\n');
    if let Ok(request) = Request::parse(line) {
        assert_eq!(request.to_bytes(), wire, "request {request:?}");
        match request {
            Request::Login { user, password } => assert!(is_token(user) && is_token(password)),
            Request::To { target, .. } => assert!(is_token(target)),
            Request::Port(port) => assert_ne!(port, 0),
            _ => {}
        }
    }
    if let Ok(response) = Response::parse(line) {
        assert_eq!(response.to_bytes(), wire, "response {response:?}");
        if let Response::List(names) = &response {
            assert!(!names.is_empty() && names.iter().all(|name| is_token(name)));
        }
    }
    if let Ok(delivery) = Delivery::parse(line) {
        assert_eq!(delivery.to_bytes(), wire, "delivery {delivery:?}");
    }
    assert_eq!(is_receipt(line), line == RECEIPT);
}

/// Target `framer_parser`: the first byte picks the bound, the rest is chunks (a length byte,
/// then that many bytes) fed to one [`LineFramer`] and to the model.
pub fn framer_parser(data: &[u8]) {
    check_parsers(data);
    let mut source = Source::new(data);
    let max_line = match source.byte() {
        small @ 0..=191 => usize::from(small % 48),
        large => usize::from(large) * 64,
    };
    let mut framer = LineFramer::new(max_line);
    assert!(framer.max_line() >= 2 && framer.max_line() >= max_line);
    let mut model = ModelFramer::new(framer.max_line());
    let mut expected = Vec::new();
    while !source.is_empty() {
        let chunk = source.chunk();
        model.push(chunk, &mut expected);
        let mut expected = expected.drain(..);
        let mut input = chunk;
        loop {
            let before = input.len();
            let frame = match framer.next_frame(&mut input) {
                Some(Frame::Line(line)) => ModelFrame::Line(line.to_vec()),
                Some(Frame::TooLong) => ModelFrame::TooLong,
                None => {
                    assert!(input.is_empty(), "None with input left");
                    break;
                }
            };
            assert!(input.len() < before || before == 0, "a frame from nothing");
            assert!(
                framer.buffered() < framer.max_line(),
                "framer over its bound"
            );
            if let ModelFrame::Line(line) = &frame {
                assert!(!line.contains(&b'\n'));
                check_parsers(line);
            }
            assert_eq!(Some(frame), expected.next(), "framer and model disagree");
        }
        assert!(
            framer.buffered() < framer.max_line(),
            "framer over its bound"
        );
        assert_eq!(expected.next(), None, "the framer held back a frame");
    }
}

/// The accounts of the hub target.
pub const ACCOUNTS: &[(&str, &str)] = &[("u0", "p0"), ("u1", "p1"), ("u2", "p2"), ("u3", "p3")];

/// The most connections one run accepts.
const MAX_ACCEPTS: usize = 10;

/// One La frame the model fed, waiting for its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    TooLong,
    Junk,
    Login { user: Vec<u8>, password: Vec<u8> },
    Port(u16),
    List,
    To,
    ToAll,
    Exit,
}

impl Sent {
    fn of(frame: ModelFrame) -> Sent {
        let ModelFrame::Line(line) = frame else {
            return Sent::TooLong;
        };
        match Request::parse(&line) {
            Err(_) => Sent::Junk,
            Ok(Request::Login { user, password }) => Sent::Login {
                user: user.to_vec(),
                password: password.to_vec(),
            },
            Ok(Request::Port(port)) => Sent::Port(port),
            Ok(Request::List) => Sent::List,
            Ok(Request::To { .. }) => Sent::To,
            Ok(Request::ToAll { .. }) => Sent::ToAll,
            Ok(Request::Exit) => Sent::Exit,
        }
    }
}

/// What the model knows of one connection.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    accepted_at: Instant,
    closed: bool,
    /// A `ReadLa` was issued and no La bytes were fed since.
    granted: bool,
    la_framer: ModelFramer,
    /// La frames fed and not answered yet, oldest first.
    unanswered: VecDeque<Sent>,
    /// The user, once `101` came.
    user: Option<Vec<u8>>,
    /// `102`s so far.
    login_failures: u32,
    /// The port and time of a `ConnectLb` not yet settled.
    connecting: Option<(u16, Instant)>,
    /// `LbConnected` was fed while connecting; `201` is due.
    lb_connected_fed: bool,
    /// `201` came: Lb is up.
    lb_up: bool,
    lb_framer: ModelFramer,
    /// `302` lines fed on Lb before any other line.
    receipts: usize,
    /// A line other than `302` was fed on Lb.
    lb_violated: bool,
    /// `SendLb`s so far, and the time of the last.
    deliveries: usize,
    last_delivery: Option<Instant>,
    /// Something was fed that must close the connection before the outputs are drained.
    must_close: bool,
}

/// The server, the clock, and the model of every connection.
struct Hub {
    server: Server,
    config: ServerConfig,
    users: Users,
    now: Instant,
    conns: Vec<Conn>,
    /// Users in the order of their `101`, with their connections.
    online: Vec<(usize, Vec<u8>)>,
    /// Feed La bytes only while a read is granted, as the adapter does.
    respect_grants: bool,
    step: usize,
}

/// Target `server_hub`: a few bytes of configuration, then operations until the bytes run out;
/// at the end time runs on until every deadline has fired, and every request still open must be
/// answered.
pub fn server_hub(data: &[u8]) {
    let mut source = Source::new(data);
    let flags = source.byte();
    let config = ServerConfig {
        ack_timeout: Duration::from_millis(100 * (1 + source.below(100) as u64)),
        connect_timeout: Duration::from_millis(100 * (1 + source.below(50) as u64)),
        login_timeout: Duration::from_millis(500 * (1 + source.below(100) as u64)),
        max_login_failures: 1 + source.below(5) as u32,
        // At least 40, so that `302 Message receipt successful` fits on Lb.
        max_line: if flags & 1 == 0 {
            40 + source.below(100)
        } else {
            DEFAULT_MAX_LINE
        },
        max_queue: 1 + source.below(4),
        ..ServerConfig::default()
    };
    let accounts: String = ACCOUNTS
        .iter()
        .map(|(user, password)| format!("{user} {password}\n"))
        .collect();
    let users = Users::parse(accounts.as_bytes()).unwrap();
    let mut hub = Hub {
        server: Server::new(users.clone(), config.clone()),
        config,
        users,
        now: Instant::now(),
        conns: Vec::new(),
        online: Vec::new(),
        respect_grants: flags & 2 == 0,
        step: 0,
    };
    while !source.is_empty() {
        hub.operate(&mut source);
        hub.step += 1;
    }
    hub.finish();
}

impl Hub {
    fn operate(&mut self, source: &mut Source<'_>) {
        match source.byte() % 16 {
            0 | 1 => self.accept(),
            2..=5 => {
                if let Some(conn) = self.pick(source, |_| true) {
                    let bytes = commands(source, self.config.max_line);
                    self.la_data(conn, &bytes);
                }
            }
            6 => {
                if let Some(conn) = self.pick(source, |_| true) {
                    let bytes = source.chunk().to_vec();
                    self.la_data(conn, &bytes);
                }
            }
            7 => {
                let conn = self.pick(source, |c| c.connecting.is_some() && !c.closed);
                if let Some(conn) = conn.or_else(|| self.pick(source, |_| true)) {
                    self.lb_connect(conn, true);
                }
            }
            8 => {
                let conn = self.pick(source, |c| c.connecting.is_some() && !c.closed);
                if let Some(conn) = conn.or_else(|| self.pick(source, |_| true)) {
                    self.lb_connect(conn, false);
                }
            }
            9 | 10 => {
                let owes = |c: &Conn| !c.closed && c.deliveries > c.receipts;
                if let Some(conn) = self.pick(source, owes) {
                    let receipt: &[u8] = match source.below(4) {
                        0 => b"302 Message receipt successful\r\n",
                        1 => b"302 Message receipt",
                        2 => b" successful\n",
                        _ => b"302 Message receipt successful\n",
                    };
                    self.lb_data(conn, receipt);
                }
            }
            11 => {
                if let Some(conn) = self.pick(source, |c| c.lb_up || c.closed) {
                    let bytes = source.chunk().to_vec();
                    self.lb_data(conn, &bytes);
                }
            }
            12 => {
                if let Some(conn) = self.pick(source, |_| true) {
                    self.feed(conn, Input::LaClosed(ConnId(conn as u64)));
                }
            }
            13 => {
                if let Some(conn) = self.pick(source, |c| c.lb_up || c.closed) {
                    self.feed(conn, Input::LbClosed(ConnId(conn as u64)));
                }
            }
            _ => {
                let millis = match source.byte() {
                    small @ 0..=127 => u64::from(small),
                    large => u64::from(large) * 100,
                };
                self.advance(Duration::from_millis(millis));
            }
        }
    }

    /// One of the connections `fits` allows, chosen by the next byte.
    fn pick(&mut self, source: &mut Source<'_>, fits: impl Fn(&Conn) -> bool) -> Option<usize> {
        let fitting: Vec<usize> = (0..self.conns.len())
            .filter(|&index| fits(&self.conns[index]))
            .collect();
        if fitting.is_empty() {
            return None;
        }
        Some(fitting[source.below(fitting.len())])
    }

    fn accept(&mut self) {
        if self.conns.len() >= MAX_ACCEPTS {
            return;
        }
        let index = self.conns.len();
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000 + index as u16);
        self.conns.push(Conn {
            peer,
            accepted_at: self.now,
            closed: false,
            granted: false,
            la_framer: ModelFramer::new(self.config.max_line),
            unanswered: VecDeque::new(),
            user: None,
            login_failures: 0,
            connecting: None,
            lb_connected_fed: false,
            lb_up: false,
            lb_framer: ModelFramer::new(self.config.max_line),
            receipts: 0,
            lb_violated: false,
            deliveries: 0,
            last_delivery: None,
            must_close: false,
        });
        let conn = self.server.accept(self.now, peer);
        assert_eq!(
            conn,
            ConnId(index as u64),
            "connection ids are not sequential"
        );
        self.settle();
    }

    fn la_data(&mut self, conn: usize, bytes: &[u8]) {
        let model = &mut self.conns[conn];
        if self.respect_grants && !model.closed && !model.granted {
            return;
        }
        if !model.closed {
            model.granted = false;
            let mut frames = Vec::new();
            model.la_framer.push(bytes, &mut frames);
            model.unanswered.extend(frames.into_iter().map(Sent::of));
        }
        self.feed(conn, Input::LaData(ConnId(conn as u64), bytes));
    }

    fn lb_connect(&mut self, conn: usize, connected: bool) {
        let model = &mut self.conns[conn];
        let stray = model.closed || model.connecting.is_none() || model.lb_connected_fed;
        if connected && !stray {
            model.lb_connected_fed = true;
        }
        if !connected && !stray {
            model.must_close = true;
        }
        let id = ConnId(conn as u64);
        let input = if connected {
            Input::LbConnected(id)
        } else {
            Input::LbConnectFailed(id)
        };
        self.server.handle_input(self.now, input);
        if stray {
            assert_eq!(
                self.server.poll_output(),
                None,
                "step {}: a stray Lb connect result changed something",
                self.step
            );
        }
        self.settle();
    }

    fn lb_data(&mut self, conn: usize, bytes: &[u8]) {
        let model = &mut self.conns[conn];
        if !model.closed {
            let mut frames = Vec::new();
            model.lb_framer.push(bytes, &mut frames);
            for frame in frames {
                if model.lb_violated {
                    break;
                }
                let is_receipt = frame == ModelFrame::Line(RECEIPT.to_vec());
                if is_receipt && model.receipts < model.deliveries {
                    model.receipts += 1;
                } else {
                    // Anything but a `302` for an outstanding delivery ends the session.
                    model.lb_violated = true;
                    model.must_close = true;
                }
            }
        }
        self.feed(conn, Input::LbData(ConnId(conn as u64), bytes));
    }

    fn feed(&mut self, conn: usize, input: Input<'_>) {
        if matches!(input, Input::LaClosed(_) | Input::LbClosed(_)) {
            self.conns[conn].must_close = true;
        }
        self.server.handle_input(self.now, input);
        self.settle();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.settle();
    }

    /// Drains the outputs, fires the timers due, and checks the model, as the adapter's loop
    /// does after every event.
    fn settle(&mut self) {
        self.drain();
        self.server.handle_timeout(self.now);
        self.drain();
        if let Some(at) = self.server.poll_timeout() {
            assert!(
                at > self.now,
                "step {}: poll_timeout in the past",
                self.step
            );
        }
        let config = &self.config;
        for (index, conn) in self.conns.iter_mut().enumerate() {
            let what = format!("step {}: #{index}", self.step);
            if std::mem::take(&mut conn.must_close) {
                assert!(conn.closed, "{what} should have been closed");
            }
            if conn.closed {
                continue;
            }
            if conn.user.is_none() {
                assert!(
                    conn.accepted_at + config.login_timeout > self.now,
                    "{what} outlived its login timeout"
                );
            }
            if let Some((_, since)) = conn.connecting {
                assert!(
                    since + config.connect_timeout > self.now,
                    "{what} outlived its connect timeout"
                );
            }
            if conn.deliveries > conn.receipts {
                let sent = conn.last_delivery.unwrap();
                assert!(
                    sent + config.ack_timeout > self.now,
                    "{what} outlived its ack timeout"
                );
            }
        }
        let online: Vec<(ConnId, Vec<u8>)> = self
            .server
            .online_in_login_order()
            .map(|(conn, user)| (conn, user.to_vec()))
            .collect();
        let expected: Vec<(ConnId, Vec<u8>)> = self
            .online
            .iter()
            .map(|(conn, user)| (ConnId(*conn as u64), user.clone()))
            .collect();
        assert_eq!(online, expected, "step {}: online users", self.step);
        let open = self.conns.iter().filter(|conn| !conn.closed).count();
        assert_eq!(self.server.connection_count(), open, "step {}", self.step);
    }

    fn drain(&mut self) {
        while let Some(output) = self.server.poll_output() {
            self.check(output);
        }
    }

    fn check(&mut self, output: Output) {
        let conn = match &output {
            Output::ReadLa(conn)
            | Output::SendLa(conn, _)
            | Output::ConnectLb(conn, _)
            | Output::SendLb(conn, _)
            | Output::Close(conn)
            | Output::CheckPassword(conn, _) => conn.0 as usize,
            Output::Cluster(_) => panic!("a single server asked a cluster: {output:?}"),
        };
        let what = format!("step {}: #{conn} {output:?}", self.step);
        let model = self
            .conns
            .get_mut(conn)
            .unwrap_or_else(|| panic!("{what}: no such connection"));
        assert!(!model.closed, "{what}: output after Close");
        match output {
            Output::ReadLa(_) => {
                assert!(!model.granted, "{what}: a second read grant");
                model.granted = true;
            }
            Output::SendLa(_, bytes) => self.answer(conn, &bytes, &what),
            // The harness's users have plain passwords, which are settled at once.
            Output::CheckPassword(..) => panic!("{what}: a password check for a plain password"),
            Output::ConnectLb(_, addr) => {
                let Some(Sent::Port(port)) = model.unanswered.front() else {
                    panic!("{what}: no /port waiting");
                };
                assert_eq!(addr, SocketAddr::new(model.peer.ip(), *port), "{what}");
                assert!(model.connecting.is_none() && !model.lb_up, "{what}");
                model.connecting = Some((*port, self.now));
            }
            Output::SendLb(_, bytes) => {
                assert!(model.lb_up, "{what}: no Lb");
                assert!(
                    model.deliveries <= model.receipts,
                    "{what}: a second delivery before the first was acknowledged"
                );
                model.deliveries += 1;
                model.last_delivery = Some(self.now);
                let line = whole_line(&bytes, &what);
                let delivery = Delivery::parse(line).unwrap_or_else(|_| panic!("{what}"));
                let (Delivery::From { sender, .. } | Delivery::BroadcastFrom { sender, .. }) =
                    delivery;
                assert!(
                    ACCOUNTS.iter().any(|(user, _)| user.as_bytes() == sender),
                    "{what}: unknown sender"
                );
            }
            Output::Close(_) => {
                model.closed = true;
                model.unanswered.clear();
                self.online.retain(|(online, _)| *online != conn);
            }
            Output::Cluster(_) => unreachable!("refused above"),
        }
    }

    /// Matches one La answer with the oldest frame not yet answered.
    fn answer(&mut self, conn: usize, bytes: &[u8], what: &str) {
        let line = whole_line(bytes, what);
        let response = Response::parse(line).unwrap_or_else(|_| panic!("{what}: not a response"));
        let online_names: Vec<Vec<u8>> = self.online.iter().map(|(_, u)| u.clone()).collect();
        let model = &mut self.conns[conn];
        let sent = model
            .unanswered
            .pop_front()
            .unwrap_or_else(|| panic!("{what}: an answer to nothing"));
        let ready = model.lb_up;
        match (&sent, &response) {
            (Sent::TooLong | Sent::Junk, Response::Unrecognized) => {}
            (Sent::Login { user, password }, _) => {
                let valid = self.users.verify(user, password);
                let free = !online_names.contains(user);
                match response {
                    Response::AuthOk => {
                        assert!(valid && free && model.user.is_none(), "{what}");
                        model.user = Some(user.clone());
                        self.online.push((conn, user.clone()));
                    }
                    Response::AuthFailed => {
                        assert!(model.user.is_none() && !(valid && free), "{what}");
                        model.login_failures += 1;
                        if model.login_failures >= self.config.max_login_failures {
                            model.must_close = true;
                        }
                    }
                    Response::Unrecognized => assert!(model.user.is_some(), "{what}"),
                    _ => panic!("{what}: answers {sent:?}"),
                }
            }
            (Sent::Port(_), Response::LbOk) => {
                assert!(model.lb_connected_fed, "{what}: 201 before Lb connected");
                model.connecting = None;
                model.lb_up = true;
            }
            (Sent::Port(_), Response::LbFailed) => {
                assert!(
                    model.connecting.is_some() && !model.lb_connected_fed,
                    "{what}"
                );
                model.connecting = None;
                model.must_close = true;
            }
            (Sent::Port(_), Response::Unrecognized) => {
                assert!(model.user.is_none() || model.lb_up, "{what}");
            }
            (Sent::List, Response::List(names)) => {
                assert!(ready, "{what}");
                let me = model.user.clone().unwrap();
                let mut expected = vec![me.clone()];
                expected.extend(online_names.into_iter().filter(|name| *name != me));
                let names: Vec<Vec<u8>> = names.iter().map(|name| name.to_vec()).collect();
                assert_eq!(names, expected, "{what}");
            }
            (Sent::To | Sent::ToAll, Response::Delivered | Response::DeliveryFailed) => {
                assert!(ready, "{what}");
            }
            (Sent::List | Sent::To | Sent::ToAll, Response::Unrecognized) => {
                assert!(!ready, "{what}: Ready refused {sent:?}");
            }
            (Sent::Exit, Response::Bye) => model.must_close = true,
            _ => panic!("{what}: answers {sent:?}"),
        }
    }

    /// Lets time run until every deadline has fired; then every connection still open must have
    /// had all its La lines answered.
    fn finish(&mut self) {
        let longest = self.config.ack_timeout
            + self.config.connect_timeout
            + self.config.login_timeout
            + Duration::from_secs(1);
        for _ in 0..1_000 {
            if self.server.poll_timeout().is_none() {
                break;
            }
            self.advance(longest);
        }
        assert_eq!(self.server.poll_timeout(), None, "deadlines without end");
        for (index, conn) in self.conns.iter().enumerate() {
            if !conn.closed {
                assert!(
                    conn.unanswered.is_empty(),
                    "#{index} never answered {:?}",
                    conn.unanswered
                );
                assert_eq!(conn.deliveries, conn.receipts, "#{index}");
            }
        }
    }
}

/// `bytes` must be exactly one line; returns it without `\n`.
fn whole_line<'b>(bytes: &'b [u8], what: &str) -> &'b [u8] {
    let line = bytes
        .strip_suffix(b"\n")
        .unwrap_or_else(|| panic!("{what}: no \\n at the end"));
    assert!(!line.contains(&b'\n'), "{what}: more than one line");
    line
}

/// One to three La lines, mostly well-formed, decoded from the source.
fn commands(source: &mut Source<'_>, max_line: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + source.below(3) {
        let kind = source.byte();
        let (user, password) = ACCOUNTS[source.below(ACCOUNTS.len())];
        match kind % 11 {
            0 | 1 => {
                out.extend_from_slice(format!("/login {user} ").as_bytes());
                out.extend_from_slice(if kind & 0x80 == 0 {
                    password.as_bytes()
                } else {
                    b"wrong"
                });
            }
            2 => out.extend_from_slice(format!("/port {}", 1 + source.byte() as u16).as_bytes()),
            3 => out.extend_from_slice(b"/list"),
            4 | 5 => {
                out.extend_from_slice(format!("/to {user} ").as_bytes());
                out.extend_from_slice(&content(source));
            }
            6 => {
                out.extend_from_slice(b"/toall ");
                out.extend_from_slice(&content(source));
            }
            7 => out.extend_from_slice(b"/exit"),
            8 => out.extend_from_slice(source.chunk()),
            9 => out.extend_from_slice(format!("/to nobody{} x", kind & 1).as_bytes()),
            _ => {
                // Right at the bound, or one past it.
                let len = max_line - 2 + usize::from(kind & 0x80 != 0);
                out.resize(out.len() + len, b'x');
            }
        }
        out.extend_from_slice(if kind & 0x40 == 0 { b"\n" } else { b"\r\n" });
    }
    out
}

/// Chat content: a few bytes from the source, never empty, `\n` kept out.
fn content(source: &mut Source<'_>) -> Vec<u8> {
    let len = source.below(16);
    let mut text: Vec<u8> = source
        .take(len)
        .iter()
        .map(|&b| if b == b'\n' { b'.' } else { b })
        .collect();
    if text.is_empty() {
        text.extend_from_slice(b"hi");
    }
    text
}
