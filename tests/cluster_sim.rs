//! Several hub [`Server`]s as one chat, no sockets: a deterministic simulation of a cluster.
//!
//! [`Cluster`] runs 1–4 nodes (`Server::clustered(.., NodeId(i))`), a linearizable in-memory
//! [`Directory`] (what Redis will be: one holder per user, a global login-order counter, entries
//! in that order), node messages as Redis carries them (each node's outgoing queue, whose
//! entries are appended atomically to the receiving nodes' inboxes, and an inbox per node read
//! in order), simulated clients attached to one node each (La and Lb bytes, acknowledgements,
//! closes) and a manual clock. Directory requests and their answers queue per node; while the
//! cluster is *stalled* these queues move only when a schedule op moves them, otherwise at
//! once. Faults are ops too: a node crash (its clients see their connections end, its queues
//! and inbox are dropped, what it appended elsewhere stays, and after
//! [`LEASE`] the reaper drops its users and tells every other node `NodeDown`), a directory
//! outage (every claim fails, every query has no answer), `LeaseLost` for one node, and
//! `Outcome` messages delivered twice.
//!
//! [`Checker`] is the reference: written from docs/protocol.md for the whole cluster, it sees
//! only what clients see (plus which faults happened) and checks, event by event: every La line
//! answers the client's oldest unanswered command with an answer of the right kind (so nothing
//! is answered twice), at most one session per user cluster-wide, `/list` is the asker and then
//! everyone online in global login order, every Lb line is exactly the `/from`/`/broadcastfrom`
//! of one request, reaches only its recipients, at most once each, FIFO per sender, in one
//! server's order across nodes (a request one recipient got before another was read comes first
//! to everyone who gets both), and a `303` comes only if every recipient got the line and
//! acknowledged it. At the end of a schedule
//! every queue is drained and the clock moved past every deadline and lease: then every request
//! must have been answered, unless its sender's session ended.
//!
//! On fault-free schedules a cluster whose queues move at once must give every client exactly
//! the bytes `Server::new` gives it on the same schedule ([`equivalence`]).

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use simple_im_core::server::{
    ClusterInput, ClusterOutput, ConnId, Input, NodeId, NodeMessage, OnlineEntry, Output,
    RequestId, Server, ServerConfig,
};
use simple_im_core::users::Users;

use common::schedules;
use common::sim::{escape, RECEIPT};

/// How long a crashed node's users stay claimed before the reaper drops them.
const LEASE: Duration = Duration::from_secs(1);

/// The users of every test: the appendix's three and `u0`..`u4` (passwords `pw0`..`pw4`).
const ACCOUNTS: &[(&str, &str)] = &[
    ("jacky", "12345"),
    ("bob", "bob123"),
    ("michael", "michael123"),
    ("u0", "pw0"),
    ("u1", "pw1"),
    ("u2", "pw2"),
    ("u3", "pw3"),
    ("u4", "pw4"),
];

fn accounts() -> Users {
    let mut users = Users::default();
    for (name, password) in ACCOUNTS {
        users.insert(name.as_bytes(), password.as_bytes());
    }
    users
}

fn node_id(index: usize) -> NodeId {
    // Not the index itself, so that a mix-up of the two shows.
    NodeId(100 + index as u64)
}

fn node_index(id: NodeId) -> usize {
    (id.0 - 100) as usize
}

// ---------------------------------------------------------------------------------------------
// The directory
// ---------------------------------------------------------------------------------------------

/// Who is online where, as the cluster's directory (Redis) keeps it: every operation is atomic
/// at the moment it is processed.
#[derive(Debug, Default)]
struct Directory {
    /// By user: login order, node, session.
    holders: BTreeMap<Vec<u8>, (u64, NodeId, ConnId)>,
    next_login: u64,
}

impl Directory {
    fn claim(&mut self, user: &[u8], node: NodeId, conn: ConnId) -> bool {
        if self.holders.contains_key(user) {
            return false;
        }
        self.holders
            .insert(user.to_vec(), (self.next_login, node, conn));
        self.next_login += 1;
        true
    }

    fn release(&mut self, user: &[u8], node: NodeId, conn: ConnId) {
        if let Some(&(_, n, c)) = self.holders.get(user) {
            if (n, c) == (node, conn) {
                self.holders.remove(user);
            }
        }
    }

    fn query(&self, user: Option<&[u8]>) -> Vec<OnlineEntry> {
        let mut entries: Vec<_> = self
            .holders
            .iter()
            .filter(|(name, _)| user.is_none_or(|u| u == &name[..]))
            .map(|(name, &(order, node, conn))| {
                (
                    order,
                    OnlineEntry {
                        user: name.clone(),
                        node,
                        conn,
                    },
                )
            })
            .collect();
        entries.sort_by_key(|(order, _)| *order);
        entries.into_iter().map(|(_, e)| e).collect()
    }

    fn users(&self) -> Vec<Vec<u8>> {
        self.query(None).into_iter().map(|e| e.user).collect()
    }

    /// The reaper: a node's lease ran out.
    fn drop_node(&mut self, node: NodeId) {
        self.holders.retain(|_, &mut (_, n, _)| n != node);
    }
}

/// One atomic step of a node's engine in Redis.
#[derive(Clone, Debug)]
enum Append {
    /// Messages to known nodes, each to its inbox.
    Messages(Vec<(usize, NodeMessage)>),
    /// A `/to` (`ClusterOutput::DeliverTo`): looked up in the directory and appended to the
    /// inbox of the node found, in the same step; the sender's node is then told where it went.
    To {
        request: RequestId,
        user: Vec<u8>,
        line: Bytes,
    },
}

/// A request a node made of the directory, waiting to be processed.
#[derive(Clone, Debug)]
enum DirRequest {
    Claim {
        conn: ConnId,
        user: Vec<u8>,
    },
    Release {
        conn: ConnId,
        user: Vec<u8>,
    },
    Query {
        query: simple_im_core::server::QueryId,
    },
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LbState {
    None,
    Up,
    Down,
}

#[derive(Debug)]
struct Client {
    /// Shared, as routing copies it for every output.
    label: Rc<str>,
    node: usize,
    conn: ConnId,
    peer: SocketAddr,
    refuse_lb: bool,
    auto_ack: bool,
    /// Chunks written on La, each handed over whole on one read grant.
    la_pending: VecDeque<Vec<u8>>,
    granted: bool,
    la: Vec<u8>,
    lb: Vec<u8>,
    lb_state: LbState,
    lb_unacked: bool,
    closed: bool,
}

/// One socket event fed to a node.
#[derive(Clone, Debug)]
enum Fed {
    LaData(Vec<u8>),
    LaClosed,
    LbConnected,
    LbConnectFailed,
    LbData(Vec<u8>),
    LbClosed,
}

// ---------------------------------------------------------------------------------------------
// What the checker sees
// ---------------------------------------------------------------------------------------------

/// What happened, as clients (and the fault injector) see it.
#[derive(Clone, Debug)]
enum Ev {
    Connected {
        client: usize,
        node: usize,
        conn: ConnId,
    },
    /// The reaper reported `node` down to every other node.
    Reaped {
        node: usize,
    },
    /// Request `tag` reached `node`: the directory's answer came back to the sender's node
    /// (which then queues it for its own recipients), or a `Deliver` of it came to another.
    Arrived {
        node: usize,
        tag: usize,
        /// The recipient a `Deliver` names; `None` for the sender's own node.
        conn: Option<ConnId>,
    },
    /// La bytes the server read; `calm` if nothing was stalled and the directory was up.
    FedLa {
        client: usize,
        bytes: Vec<u8>,
        calm: bool,
    },
    /// The client acknowledged its outstanding delivery.
    Acked {
        client: usize,
    },
    /// A line on La; for a `301`, who the directory had online then.
    La {
        client: usize,
        bytes: Vec<u8>,
        directory: Option<Vec<Vec<u8>>>,
    },
    Lb {
        client: usize,
        bytes: Vec<u8>,
    },
    Closed {
        client: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Unauthenticated,
    Authenticated(Vec<u8>),
    Ready(Vec<u8>),
}

#[derive(Clone, Debug)]
enum Command {
    Login(Vec<u8>),
    Port,
    List {
        calm: bool,
    },
    /// A `/to` or `/toall` read while Ready; `tag` names its request (`None`: an untagged one
    /// of a lenient run, not checked).
    Send {
        tag: Option<usize>,
    },
    Exit,
    Other,
}

#[derive(Debug)]
struct CheckedClient {
    node: usize,
    conn: ConnId,
    phase: Phase,
    closed: bool,
    commands: VecDeque<Command>,
    /// The request whose line is outstanding on this client's Lb (`Some(None)`: an untagged
    /// line of a lenient run).
    outstanding: Option<Option<usize>>,
    /// Per sender client, the last request received from it.
    last_from: HashMap<usize, usize>,
    /// Where in its node's arrivals the last line received stands.
    last_arrival: Option<u64>,
    /// Of the lines received, the one whose request was accepted last: when, and its tag.
    latest_accepted: Option<(u64, usize)>,
}

#[derive(Debug)]
struct Request {
    sender: usize,
    sender_user: Vec<u8>,
    /// `None` for a `/toall`.
    target: Option<Vec<u8>>,
    line: Vec<u8>,
    /// Clients other than the sender that were Ready when the server read the request.
    ready_then: Vec<usize>,
    /// Who got the line, and whether they acknowledged it.
    got: BTreeMap<usize, bool>,
    answer: Option<bool>,
    /// When the server read it (the checker's clock): it is accepted no earlier.
    read_at: u64,
    /// When its line first reached a recipient, and which.
    first_got: Option<(u64, usize)>,
}

/// The reference: docs/protocol.md for the whole cluster, from what the clients see.
#[derive(Debug, Default)]
struct Checker {
    clients: Vec<CheckedClient>,
    requests: Vec<Request>,
    stats: BTreeMap<&'static str, usize>,
    /// Untagged requests are let through unchecked (for hand-written conversations).
    lenient: bool,
    /// Nodes reported down.
    reaped: BTreeSet<usize>,
    /// When each request reached each node (for one recipient there, if a `Deliver`
    /// brought it), by a counter.
    arrivals: HashMap<(usize, usize, Option<ConnId>), u64>,
    /// Counts events: the order in which clients saw things happen.
    clock: u64,
}

/// The request a delivery line belongs to: every content the sims send ends in `#<tag>`.
fn tag_of(content: &[u8]) -> Option<usize> {
    let at = content.iter().rposition(|&b| b == b'#')?;
    std::str::from_utf8(&content[at + 1..]).ok()?.parse().ok()
}

/// Bytes escaped when shown, and only then: the checker names a line in each of its errors,
/// which are rare, and escaped every line up front.
struct Escaped<'a>(&'a [u8]);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape(self.0))
    }
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

impl Checker {
    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn user(&self, client: usize) -> Option<&[u8]> {
        match &self.clients[client].phase {
            Phase::Unauthenticated => None,
            Phase::Authenticated(u) | Phase::Ready(u) => Some(u),
        }
    }

    /// The open clients logged in as `user`. One whose oldest unanswered command is `/exit`
    /// (or `/port`, whose `202` ends the session) may have left already: the server releases the
    /// user first and sends that last answer after (so that no node lists the user once it is
    /// seen). That the server never holds two sessions of one user is checked on the nodes
    /// themselves, between ops.
    fn open_with_user(&self, user: &[u8]) -> Vec<usize> {
        (0..self.clients.len())
            .filter(|&c| !self.clients[c].closed && self.user(c) == Some(user))
            .filter(|&c| !self.may_have_left(c))
            .collect()
    }

    /// Whether client `c`'s oldest unanswered command is one whose answer can end its session
    /// (`/exit`, or `/port` and its `202`): the server may have ended the session already, as
    /// it releases the user before that last answer goes out.
    fn may_have_left(&self, c: usize) -> bool {
        let next = self.clients[c].commands.front();
        matches!(next, Some(Command::Exit | Command::Port))
    }

    fn on(&mut self, ev: &Ev) -> Result<(), String> {
        self.clock += 1;
        match ev {
            Ev::Connected { client, node, conn } => {
                assert_eq!(*client, self.clients.len());
                self.clients.push(CheckedClient {
                    node: *node,
                    conn: *conn,
                    phase: Phase::Unauthenticated,
                    closed: false,
                    commands: VecDeque::new(),
                    outstanding: None,
                    last_from: HashMap::new(),
                    last_arrival: None,
                    latest_accepted: None,
                });
            }
            Ev::FedLa {
                client,
                bytes,
                calm,
            } => {
                let lines: Vec<&[u8]> = bytes
                    .split_inclusive(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\n").expect("the sims type whole lines"))
                    .collect();
                for (i, line) in lines.iter().enumerate() {
                    let command = self.command(*client, line, i == 0, *calm);
                    self.clients[*client].commands.push_back(command);
                }
            }
            Ev::Acked { client } => match self.clients[*client].outstanding.take() {
                Some(Some(tag)) => {
                    self.requests[tag].got.insert(*client, true);
                }
                Some(None) => {}
                None => return Err(format!("client {client} acked with nothing outstanding")),
            },
            Ev::La {
                client,
                bytes,
                directory,
            } => self.la(*client, bytes, directory.as_deref())?,
            Ev::Lb { client, bytes } => self.lb(*client, bytes)?,
            Ev::Reaped { node } => {
                self.reaped.insert(*node);
            }
            Ev::Arrived { node, tag, conn } => {
                let next = self.arrivals.len() as u64;
                self.arrivals.entry((*node, *tag, *conn)).or_insert(next);
            }
            Ev::Closed { client } => {
                let c = &mut self.clients[*client];
                if c.closed {
                    return Err(format!("client {client} closed twice"));
                }
                c.closed = true;
                c.commands.clear();
                c.outstanding = None;
            }
        }
        Ok(())
    }

    /// What a line read by the server is; a `/to` or `/toall` read while Ready starts a
    /// request (only the first line of a chunk can be: the sims type requests alone).
    fn command(&mut self, client: usize, line: &[u8], first: bool, calm: bool) -> Command {
        if line == b"/list" {
            return Command::List { calm };
        }
        if line == b"/exit" {
            return Command::Exit;
        }
        if line.starts_with(b"/port ") {
            return Command::Port;
        }
        if let Some(rest) = line.strip_prefix(b"/login ") {
            return match split_once(rest, b' ') {
                Some((user, _)) => Command::Login(user.to_vec()),
                None => Command::Other,
            };
        }
        let (target, content) = if let Some(content) = line.strip_prefix(b"/toall ") {
            (None, content)
        } else if let Some(rest) = line.strip_prefix(b"/to ") {
            match split_once(rest, b' ') {
                Some((target, content)) => (Some(target.to_vec()), content),
                None => return Command::Other,
            }
        } else {
            return Command::Other;
        };
        let Phase::Ready(sender_user) = self.clients[client].phase.clone() else {
            return Command::Other;
        };
        assert!(first, "sim: a request behind another line in one chunk");
        let Some(tag) = tag_of(content) else {
            assert!(self.lenient, "sim: every content is tagged");
            return Command::Send { tag: None };
        };
        assert_eq!(
            tag,
            self.requests.len(),
            "sim: tags are given in the order read"
        );
        let word: &[u8] = if target.is_some() {
            b"/from "
        } else {
            b"/broadcastfrom "
        };
        let line = [word, &sender_user, b" ", content, b"\n"].concat();
        let ready_then = (0..self.clients.len())
            .filter(|&c| c != client && !self.clients[c].closed)
            .filter(|&c| matches!(self.clients[c].phase, Phase::Ready(_)))
            .filter(|&c| !self.may_have_left(c))
            .collect();
        self.requests.push(Request {
            sender: client,
            sender_user,
            target,
            line,
            ready_then,
            got: BTreeMap::new(),
            answer: None,
            read_at: self.clock,
            first_got: None,
        });
        Command::Send { tag: Some(tag) }
    }

    fn la(
        &mut self,
        client: usize,
        bytes: &[u8],
        directory: Option<&[Vec<u8>]>,
    ) -> Result<(), String> {
        let line = bytes.strip_suffix(b"\n").unwrap_or(bytes).to_vec();
        let text = Escaped(&line);
        let c = &mut self.clients[client];
        if c.closed {
            return Err(format!("client {client}: La line after close: {text}"));
        }
        let Some(command) = c.commands.pop_front() else {
            return Err(format!(
                "client {client}: an answer nothing asked for: {text}"
            ));
        };
        let phase = c.phase.clone();
        let bad = |what: &str| {
            Err(format!(
                "client {client}: {what}, got {text} for {command:?}"
            ))
        };
        match (&command, &phase) {
            (Command::Exit, _) => {
                if line != b"310 Bye bye" {
                    return bad("310 expected");
                }
            }
            (Command::Login(user), Phase::Unauthenticated) => match &line[..] {
                b"101 Authentication successful" => {
                    let others = self.open_with_user(user);
                    if !others.is_empty() {
                        return Err(format!(
                            "client {client}: 101 as {} while clients {others:?} are logged in as it",
                            escape(user)
                        ));
                    }
                    self.clients[client].phase = Phase::Authenticated(user.clone());
                    self.count("101");
                }
                b"102 Authentication failed" => self.count("102"),
                _ => return bad("101 or 102 expected"),
            },
            (Command::Port, Phase::Authenticated(user)) => match &line[..] {
                b"201 Build connection successful" => {
                    self.clients[client].phase = Phase::Ready(user.clone());
                    self.count("201");
                }
                b"202 Build connection failed" => self.count("202"),
                _ => return bad("201 or 202 expected"),
            },
            (Command::List { calm }, Phase::Ready(asker)) => {
                let Some(names) = line.strip_prefix(b"301 ") else {
                    return bad("301 expected");
                };
                let names: Vec<&[u8]> = names.split(|&b| b == b' ').collect();
                if names[0] != &asker[..] {
                    return bad("the asker first");
                }
                let unique: BTreeSet<_> = names.iter().collect();
                if unique.len() != names.len() {
                    return bad("no name twice");
                }
                if *calm {
                    let directory = directory.expect("a 301 comes with the directory");
                    let mut expected = vec![&asker[..]];
                    expected.extend(
                        directory
                            .iter()
                            .map(|u| &u[..])
                            .filter(|u| *u != &asker[..]),
                    );
                    if names != expected {
                        return bad(&format!(
                            "the asker, then the directory's users in login order ({})",
                            expected
                                .iter()
                                .map(|u| escape(u))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ));
                    }
                    self.count("301 checked");
                } else {
                    self.count("301 unchecked");
                }
            }
            (Command::Send { tag }, Phase::Ready(_)) => {
                let delivered = match &line[..] {
                    b"303 Message delivery successful" => true,
                    b"304 Message delivery failed" => false,
                    _ => return bad("303 or 304 expected"),
                };
                let Some(tag) = *tag else {
                    return Ok(());
                };
                let request = &mut self.requests[tag];
                if request.answer.is_some() {
                    return bad("a second answer");
                }
                request.answer = Some(delivered);
                if delivered {
                    self.check_delivered(tag)
                        .map_err(|why| format!("client {client}: false 303 for #{tag}: {why}"))?;
                }
                let kind = match (delivered, self.requests[tag].target.is_some()) {
                    (true, true) => "303 to",
                    (false, true) => "304 to",
                    (true, false) => "303 toall",
                    (false, false) => "304 toall",
                };
                self.count(kind);
            }
            _ => {
                if line != b"401 Unrecognized message" {
                    return bad("401 expected");
                }
            }
        }
        Ok(())
    }

    /// A `303` came for `tag`: every recipient must have acknowledged its line.
    fn check_delivered(&self, tag: usize) -> Result<(), String> {
        let request = &self.requests[tag];
        if let Some((who, _)) = request.got.iter().find(|(_, &acked)| !acked) {
            return Err(format!("client {who} got the line and never acked it"));
        }
        match &request.target {
            Some(_) => {
                if request.got.is_empty() {
                    return Err("nobody got the line".into());
                }
            }
            None => {
                for &other in &request.ready_then {
                    let here = !self.clients[other].closed && !self.may_have_left(other);
                    if here && !request.got.contains_key(&other) {
                        return Err(format!(
                            "client {other} was Ready throughout and never got it"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn lb(&mut self, client: usize, bytes: &[u8]) -> Result<(), String> {
        let text = Escaped(bytes);
        if self.clients[client].closed {
            return Err(format!("client {client}: Lb line after close: {text}"));
        }
        let content = bytes
            .strip_prefix(b"/from ")
            .or_else(|| bytes.strip_prefix(b"/broadcastfrom "))
            .and_then(|rest| split_once(rest, b' '))
            .map(|(_, content)| content.strip_suffix(b"\n").unwrap_or(content));
        let Some(tag) = content.and_then(tag_of) else {
            if self.lenient && content.is_some() {
                self.clients[client].outstanding = Some(None);
                return Ok(());
            }
            return Err(format!(
                "client {client}: a line on Lb of no request: {text}"
            ));
        };
        let Some(request) = self.requests.get(tag) else {
            return Err(format!(
                "client {client}: Lb line of an unknown request: {text}"
            ));
        };
        if request.line != bytes {
            return Err(format!(
                "client {client}: Lb line {text}, but #{tag} is {}",
                escape(&request.line)
            ));
        }
        let user = self.user(client).map(<[u8]>::to_vec);
        let Some(user) = user else {
            return Err(format!("client {client}: Lb line before login: {text}"));
        };
        match &request.target {
            Some(target) if *target != user => {
                return Err(format!("client {client} ({}) got {text}", escape(&user)))
            }
            None if request.sender_user == user => {
                return Err(format!("client {client}: its own /toall came back: {text}"))
            }
            _ => {}
        }
        if request.got.contains_key(&client) {
            return Err(format!("client {client} got #{tag} twice"));
        }
        let sender = request.sender;
        // Its senders are gone with it: their queued lines were withdrawn on NodeDown, and
        // their Delivers in flight were lost.
        let sender_node = self.clients[sender].node;
        if self.reaped.contains(&sender_node) {
            return Err(format!(
                "client {client} got {text} after node {sender_node}, its sender's, was reported down"
            ));
        }
        // A recipient's lines go out in the order their requests reached its node.
        let (node, conn) = (self.clients[client].node, self.clients[client].conn);
        let arrival = (self.arrivals.get(&(node, tag, Some(conn))))
            .or_else(|| self.arrivals.get(&(node, tag, None)));
        let Some(&arrival) = arrival else {
            return Err(format!(
                "client {client} got {text} before #{tag} reached node {node}"
            ));
        };
        let c = &mut self.clients[client];
        if c.last_arrival.is_some_and(|last| last > arrival) {
            return Err(format!(
                "client {client} got {text} out of the order requests reached node {node}"
            ));
        }
        c.last_arrival = Some(arrival);
        if let Some(&last) = c.last_from.get(&sender) {
            if last > tag {
                return Err(format!(
                    "client {client} got #{tag} after #{last}, both from client {sender}"
                ));
            }
        }
        if c.outstanding.is_some() {
            return Err(format!("client {client}: a second line outstanding"));
        }
        // One server's order across nodes: a request one recipient got before another was
        // read comes first to everyone who gets both.
        let first_got = self.requests[tag].first_got;
        if let (Some((got_at, first)), Some((read_at, later))) = (first_got, c.latest_accepted) {
            if read_at > got_at {
                return Err(format!(
                    "client {client} got #{tag} after #{later}, but client {first} had got \
                     #{tag} before #{later} was read"
                ));
            }
        }
        let read_at = self.requests[tag].read_at;
        if c.latest_accepted.is_none_or(|(at, _)| at < read_at) {
            c.latest_accepted = Some((read_at, tag));
        }
        c.last_from.insert(sender, tag);
        c.outstanding = Some(Some(tag));
        let clock = self.clock;
        let request = &mut self.requests[tag];
        request.first_got.get_or_insert((clock, client));
        request.got.insert(client, false);
        Ok(())
    }

    /// Once everything has drained: every request answered unless its sender left.
    fn finish(&self) -> Result<(), String> {
        for (i, c) in self.clients.iter().enumerate() {
            if !c.closed && !c.commands.is_empty() {
                return Err(format!(
                    "client {i} still waits for answers to {:?}",
                    c.commands
                ));
            }
        }
        for (tag, request) in self.requests.iter().enumerate() {
            if request.answer.is_none() && !self.clients[request.sender].closed {
                return Err(format!("request #{tag} was never answered"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

struct Node {
    server: Server,
    alive: bool,
    /// When it crashed and whether the reaper has been.
    crashed: Option<(Instant, bool)>,
    by_conn: HashMap<ConnId, usize>,
}

struct Cluster {
    nodes: Vec<Node>,
    directory: Directory,
    dir_requests: Vec<VecDeque<DirRequest>>,
    dir_answers: Vec<VecDeque<ClusterInput>>,
    /// Per node, what its engine has yet to append: each entry atomically.
    outboxes: Vec<VecDeque<Append>>,
    /// Per node, its inbox: what other nodes (and itself) sent, and who sent it.
    inboxes: Vec<VecDeque<(usize, NodeMessage)>>,
    clients: Vec<Client>,
    follow_ups: VecDeque<(usize, Fed)>,
    start: Instant,
    now: Instant,
    stalled: bool,
    /// Every `Outcome` that moves by itself is delivered twice.
    dup_outcomes: bool,
    /// One `Server::new`, which keeps its own directory.
    single: bool,
    /// Per node, the request the line just read there started, until its query goes out.
    reading: Vec<Option<usize>>,
    /// Which request each directory question is for, by node.
    asked_for: HashMap<(usize, simple_im_core::server::QueryId), usize>,
    /// Deadlines of two nodes fell due at one instant: the order they fire in is not
    /// specified (docs/protocol.md §3), so from then on a single server may differ.
    tied: bool,
    outage_until: Option<Instant>,
    checker: Checker,
    /// What happened, for a failure's message; `None` while random schedules run and shrink
    /// (formatting it was a large share of their time): a failing one is replayed with it.
    history: Option<Vec<String>>,
}

/// Adds a line to `$cluster`'s history, formatted only while the history is kept.
macro_rules! note {
    ($cluster:expr, $($format:tt)+) => {
        if $cluster.history.is_some() {
            let what = format!($($format)+);
            $cluster.note(what);
        }
    };
}

impl Cluster {
    fn with_servers(servers: Vec<Server>) -> Self {
        let n = servers.len();
        let start = Instant::now();
        Cluster {
            nodes: servers
                .into_iter()
                .map(|server| Node {
                    server,
                    alive: true,
                    crashed: None,
                    by_conn: HashMap::new(),
                })
                .collect(),
            directory: Directory::default(),
            dir_requests: vec![VecDeque::new(); n],
            dir_answers: vec![VecDeque::new(); n],
            outboxes: vec![VecDeque::new(); n],
            inboxes: vec![VecDeque::new(); n],
            clients: Vec::new(),
            follow_ups: VecDeque::new(),
            start,
            now: start,
            stalled: false,
            dup_outcomes: false,
            single: false,
            tied: false,
            reading: vec![None; n],
            asked_for: HashMap::new(),
            outage_until: None,
            checker: Checker::default(),
            history: Some(Vec::new()),
        }
    }

    /// `n` nodes of one cluster.
    fn new(n: usize, config: &ServerConfig) -> Self {
        let servers = (0..n)
            .map(|i| Server::clustered(accounts(), config.clone(), node_id(i)))
            .collect();
        Cluster::with_servers(servers)
    }

    /// One `Server::new`, the whole cluster in memory.
    fn single(config: &ServerConfig) -> Self {
        let mut cluster = Cluster::with_servers(vec![Server::new(accounts(), config.clone())]);
        cluster.single = true;
        cluster
    }

    fn default_config() -> ServerConfig {
        ServerConfig {
            login_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        }
    }

    fn outage(&self) -> bool {
        self.outage_until.is_some_and(|until| self.now < until)
    }

    /// Adds to the history, if it is kept: see [`note!`].
    fn note(&mut self, what: String) {
        let t = self.now - self.start;
        let Some(history) = &mut self.history else {
            return;
        };
        history.push(format!(
            "{:>3}.{:03} {what}",
            t.as_secs(),
            t.subsec_millis()
        ));
    }

    fn fail(&self, why: &str) -> ! {
        let Some(history) = &self.history else {
            panic!("{why}\n(no history kept)");
        };
        let from = history.len().saturating_sub(60);
        panic!("{why}\nrecent history:\n{}", history[from..].join("\n"));
    }

    fn ev(&mut self, ev: Ev) {
        if let Err(why) = self.checker.on(&ev) {
            self.fail(&why);
        }
    }

    fn stat(&mut self, what: &'static str) {
        self.checker.count(what);
    }

    /// The first alive node from `node` on (modulo the number of nodes).
    fn alive_node(&self, node: usize) -> Option<usize> {
        let n = self.nodes.len();
        (0..n)
            .map(|i| (node + i) % n)
            .find(|&i| self.nodes[i].alive)
    }

    // --- clients ---------------------------------------------------------------------------

    /// A new client connects La to `node` (or the next alive one).
    fn connect(&mut self, node: usize, label: &str) -> usize {
        let node = self.alive_node(node).expect("some node is alive");
        let id = self.clients.len();
        let ip = Ipv4Addr::new(10, 1, (id / 250) as u8, (id % 250) as u8 + 1);
        let peer = SocketAddr::new(IpAddr::V4(ip), 40_000 + id as u16);
        let conn = self.nodes[node].server.accept(self.now, peer);
        assert!(
            self.nodes[node].by_conn.insert(conn, id).is_none(),
            "accept reused {conn}"
        );
        self.clients.push(Client {
            label: label.into(),
            node,
            conn,
            peer,
            refuse_lb: false,
            auto_ack: false,
            la_pending: VecDeque::new(),
            granted: false,
            la: Vec::new(),
            lb: Vec::new(),
            lb_state: LbState::None,
            lb_unacked: false,
            closed: false,
        });
        note!(self, "{label} connects to node {node} as {conn}");
        self.ev(Ev::Connected {
            client: id,
            node,
            conn,
        });
        self.drive();
        id
    }

    fn port_of(client: usize) -> u16 {
        30_000 + client as u16
    }

    /// Connects and sends `/login` and `/port` in one chunk.
    fn join(&mut self, node: usize, user: &str, password: &str) -> usize {
        let client = self.connect(node, user);
        let port = Cluster::port_of(client);
        self.type_la(
            client,
            format!("/login {user} {password}\n/port {port}\n").as_bytes(),
        );
        client
    }

    /// Joins and checks the `101` and `201`.
    fn ready(&mut self, node: usize, user: &str, password: &str) -> usize {
        let client = self.join(node, user, password);
        assert_eq!(
            self.take_la(client),
            [
                "101 Authentication successful",
                "201 Build connection successful"
            ]
        );
        client
    }

    /// The client writes `bytes` on La: handed over on its next read grant.
    fn type_la(&mut self, client: usize, bytes: &[u8]) {
        assert!(!self.clients[client].closed, "typing on a closed client");
        self.clients[client].la_pending.push_back(bytes.to_vec());
        self.drive();
    }

    fn ack(&mut self, client: usize) {
        let c = &mut self.clients[client];
        assert!(c.lb_unacked && !c.closed, "{} has nothing to ack", c.label);
        c.lb_unacked = false;
        self.ev(Ev::Acked { client });
        self.feed(client, Fed::LbData(RECEIPT.to_vec()));
        self.drive();
    }

    fn set_auto_ack(&mut self, client: usize, on: bool) {
        self.clients[client].auto_ack = on;
        self.drive();
    }

    fn drop_la(&mut self, client: usize) {
        self.clients[client].la_pending.clear();
        self.feed(client, Fed::LaClosed);
        self.drive();
    }

    fn drop_lb(&mut self, client: usize) {
        self.clients[client].lb_state = LbState::Down;
        self.feed(client, Fed::LbClosed);
        self.drive();
    }

    fn take_la(&mut self, client: usize) -> Vec<String> {
        lines(&std::mem::take(&mut self.clients[client].la))
    }

    fn take_lb(&mut self, client: usize) -> Vec<String> {
        lines(&std::mem::take(&mut self.clients[client].lb))
    }

    fn is_closed(&self, client: usize) -> bool {
        self.clients[client].closed
    }

    fn feed(&mut self, client: usize, input: Fed) {
        let c = &self.clients[client];
        assert!(!c.closed, "fed {input:?} for closed {}", c.label);
        let (node, conn) = (c.node, c.conn);
        let label = c.label.clone();
        match &input {
            Fed::LaData(bytes) => note!(self, "{label} La <- {}", escape(bytes)),
            Fed::LbData(bytes) => note!(self, "{label} Lb <- {}", escape(bytes)),
            other => note!(self, "{label} {other:?}"),
        }
        let now = self.now;
        let server = &mut self.nodes[node].server;
        match &input {
            Fed::LaData(bytes) => server.handle_input(now, Input::LaData(conn, bytes)),
            Fed::LaClosed => server.handle_input(now, Input::LaClosed(conn)),
            Fed::LbConnected => server.handle_input(now, Input::LbConnected(conn)),
            Fed::LbConnectFailed => server.handle_input(now, Input::LbConnectFailed(conn)),
            Fed::LbData(bytes) => server.handle_input(now, Input::LbData(conn, bytes)),
            Fed::LbClosed => server.handle_input(now, Input::LbClosed(conn)),
        }
        self.check_timer(node);
    }

    fn check_timer(&self, node: usize) {
        // At `now` itself is fine: another node's event at the instant this node's deadline
        // is due may come first.
        if let Some(at) = self.nodes[node].server.poll_timeout() {
            if at < self.now {
                self.fail(&format!("node {node}: poll_timeout in the past"));
            }
        }
    }

    // --- routing ---------------------------------------------------------------------------

    /// Moves everything that may move now, until nothing does.
    fn drive(&mut self) {
        loop {
            let mut routed = false;
            for node in 0..self.nodes.len() {
                while self.nodes[node].alive {
                    let Some(output) = self.nodes[node].server.poll_output() else {
                        break;
                    };
                    self.route(node, output);
                    routed = true;
                }
            }
            if routed {
                continue;
            }
            if let Some((client, input)) = self.follow_ups.pop_front() {
                if !self.clients[client].closed {
                    self.feed(client, input);
                }
                continue;
            }
            if !self.stalled && self.move_one() {
                continue;
            }
            let deliverable = self
                .clients
                .iter()
                .position(|c| !c.closed && c.granted && !c.la_pending.is_empty());
            if let Some(client) = deliverable {
                let c = &mut self.clients[client];
                c.granted = false;
                let bytes = c.la_pending.pop_front().unwrap();
                let calm = !self.stalled && !self.outage();
                let requests = self.checker.requests.len();
                self.ev(Ev::FedLa {
                    client,
                    bytes: bytes.clone(),
                    calm,
                });
                let node = self.clients[client].node;
                let started = (self.checker.requests.len() > requests).then_some(requests);
                self.reading[node] = started;
                if let (Some(tag), true) = (started, self.single) {
                    // Its own directory answers at once.
                    self.ev(Ev::Arrived {
                        node,
                        tag,
                        conn: None,
                    });
                }
                self.feed(client, Fed::LaData(bytes));
                continue;
            }
            let acking = self
                .clients
                .iter()
                .position(|c| !c.closed && c.auto_ack && c.lb_state == LbState::Up && c.lb_unacked);
            if let Some(client) = acking {
                self.clients[client].lb_unacked = false;
                self.ev(Ev::Acked { client });
                self.feed(client, Fed::LbData(RECEIPT.to_vec()));
                continue;
            }
            break;
        }
    }

    /// Moves one queued directory request, directory answer or node message, if any.
    fn move_one(&mut self) -> bool {
        for node in 0..self.nodes.len() {
            if self.dir_step_raw(node) || self.dir_deliver_raw(node) {
                return true;
            }
        }
        let dup = self.dup_outcomes;
        (0..self.nodes.len()).any(|node| self.append_raw(node) || self.read_inbox_raw(node, dup))
    }

    /// The directory processes `node`'s oldest request; then what it caused moves.
    fn dir_step(&mut self, node: usize) -> bool {
        let moved = self.dir_step_raw(node);
        self.drive();
        moved
    }

    /// `node` gets its oldest directory answer; then what it caused moves.
    fn dir_deliver(&mut self, node: usize) -> bool {
        let moved = self.dir_deliver_raw(node);
        self.drive();
        moved
    }

    /// Redis appends `node`'s oldest outgoing entry to its inboxes; then what it caused moves.
    fn append(&mut self, node: usize) -> bool {
        let moved = self.append_raw(node);
        self.drive();
        moved
    }

    /// `node` reads the oldest message of its inbox (an `Outcome` twice if `dup`); then what
    /// it caused moves.
    fn read_inbox(&mut self, node: usize, dup: bool) -> bool {
        let moved = self.read_inbox_raw(node, dup);
        self.drive();
        moved
    }

    fn dir_step_raw(&mut self, node: usize) -> bool {
        let Some(request) = self.dir_requests[node].pop_front() else {
            return false;
        };
        let id = node_id(node);
        let outage = self.outage();
        let answer = match request {
            DirRequest::Claim { conn, user } => {
                let claimed = !outage && self.directory.claim(&user, id, conn);
                self.stat(if outage { "claim in outage" } else { "claim" });
                Some(ClusterInput::Claimed { conn, claimed })
            }
            // A release is retried until it is through: it always lands.
            DirRequest::Release { conn, user } => {
                self.directory.release(&user, id, conn);
                Some(ClusterInput::Released { conn })
            }
            DirRequest::Query { query } => {
                let entries = (!outage).then(|| self.directory.query(None));
                self.stat(if outage { "query in outage" } else { "query" });
                Some(ClusterInput::Online { query, entries })
            }
        };
        self.dir_answers[node].extend(answer);
        true
    }

    fn dir_deliver_raw(&mut self, node: usize) -> bool {
        let Some(answer) = self.dir_answers[node].pop_front() else {
            return false;
        };
        note!(self, "node {node} <- directory: {answer:?}");
        if let ClusterInput::Online { query, .. } = &answer {
            if let Some(tag) = self.asked_for.remove(&(node, *query)) {
                self.ev(Ev::Arrived {
                    node,
                    tag,
                    conn: None,
                });
            }
        }
        if let ClusterInput::Online {
            entries: Some(entries),
            ..
        } = &answer
        {
            let reaped =
                |e: &OnlineEntry| matches!(self.nodes[node_index(e.node)].crashed, Some((_, true)));
            if entries.iter().any(reaped) {
                self.stat("answer naming a reaped node");
            }
        }
        self.nodes[node].server.handle_cluster(self.now, answer);
        self.check_timer(node);
        true
    }

    fn append_raw(&mut self, from: usize) -> bool {
        let Some(append) = self.outboxes[from].pop_front() else {
            return false;
        };
        let entry = match append {
            Append::Messages(entry) => entry,
            Append::To {
                request,
                user,
                line,
            } => {
                // Redis out of reach: the engine fails a `/to` closed rather than wait.
                let found = match self.outage() {
                    true => None,
                    false => self
                        .directory
                        .query(Some(&user))
                        .first()
                        .map(|e| (e.node, e.conn)),
                };
                self.stat(match (self.outage(), found.is_some()) {
                    (true, _) => "to in outage",
                    (false, true) => "to routed",
                    (false, false) => "to offline",
                });
                // The sender's node hears where it went after Redis: with its other answers.
                let routed = ClusterInput::Routed { request, to: found };
                self.dir_answers[from].push_back(routed);
                let Some((node, conn)) = found else {
                    return true;
                };
                let recipients = vec![(0, conn)];
                let deliver = NodeMessage::Deliver {
                    request,
                    recipients,
                    line,
                };
                vec![(node_index(node), deliver)]
            }
        };
        for (to, message) in entry {
            // A dead node's inbox is deleted by the reaper: what is appended to it is lost.
            if self.nodes[to].alive {
                self.inboxes[to].push_back((from, message));
            } else {
                self.stat("message to a dead node");
            }
        }
        true
    }

    fn read_inbox_raw(&mut self, to: usize, dup: bool) -> bool {
        let Some((from, message)) = self.inboxes[to].pop_front() else {
            return false;
        };
        let times = if dup && matches!(message, NodeMessage::Outcome { .. }) {
            self.stat("outcome twice");
            2
        } else {
            1
        };
        if let NodeMessage::Deliver {
            line, recipients, ..
        } = &message
        {
            if let Some(tag) = tag_of(line.strip_suffix(b"\n").unwrap_or(line)) {
                for &(_, conn) in recipients {
                    let conn = Some(conn);
                    self.ev(Ev::Arrived {
                        node: to,
                        tag,
                        conn,
                    });
                }
            }
        }
        for _ in 0..times {
            note!(self, "node {to} <- node {from}: {}", show_message(&message));
            let input = ClusterInput::Received {
                from: node_id(from),
                message: message.clone(),
            };
            self.nodes[to].server.handle_cluster(self.now, input);
            self.check_timer(to);
        }
        true
    }

    fn client_of(&self, node: usize, conn: ConnId, output: &Output) -> usize {
        match self.nodes[node].by_conn.get(&conn) {
            Some(&client) => client,
            None => self.fail(&format!("node {node}: {output:?} for unknown {conn}")),
        }
    }

    fn route(&mut self, node: usize, output: Output) {
        let conn = match &output {
            Output::Cluster(_) => {
                let Output::Cluster(cluster) = output else {
                    unreachable!()
                };
                return self.route_cluster(node, cluster);
            }
            Output::ReadLa(conn)
            | Output::SendLa(conn, _)
            | Output::ConnectLb(conn, _)
            | Output::SendLb(conn, _)
            | Output::Close(conn)
            | Output::CheckPassword(conn, _) => *conn,
        };
        let id = self.client_of(node, conn, &output);
        if self.clients[id].closed {
            self.fail(&format!("{output:?} after Close"));
        }
        let label = self.clients[id].label.clone();
        match output {
            Output::ReadLa(_) => {
                if self.clients[id].granted {
                    self.fail(&format!("a second read grant for {label}"));
                }
                self.clients[id].granted = true;
            }
            Output::SendLa(_, bytes) => {
                note!(self, "{label} La -> {}", escape(&bytes));
                whole_line(&bytes).unwrap_or_else(|why| self.fail(&format!("{label} La: {why}")));
                self.clients[id].la.extend_from_slice(&bytes);
                let directory = bytes.starts_with(b"301 ").then(|| self.online_users());
                self.ev(Ev::La {
                    client: id,
                    bytes: bytes.to_vec(),
                    directory,
                });
            }
            Output::ConnectLb(_, addr) => {
                let c = &mut self.clients[id];
                let expected = SocketAddr::new(c.peer.ip(), Cluster::port_of(id));
                assert_eq!(c.lb_state, LbState::None, "a second Lb connect");
                assert_eq!(addr, expected, "Lb goes to La's IP at the named port");
                if c.refuse_lb {
                    c.lb_state = LbState::Down;
                    self.follow_ups.push_back((id, Fed::LbConnectFailed));
                } else {
                    c.lb_state = LbState::Up;
                    self.follow_ups.push_back((id, Fed::LbConnected));
                }
            }
            Output::SendLb(_, bytes) => {
                note!(self, "{label} Lb -> {}", escape(&bytes));
                if self.clients[id].lb_state != LbState::Up {
                    self.fail(&format!("Lb bytes for {label} without Lb"));
                }
                if self.clients[id].lb_unacked {
                    self.fail(&format!("a second line on {label}'s Lb before the ack"));
                }
                whole_line(&bytes).unwrap_or_else(|why| self.fail(&format!("{label} Lb: {why}")));
                let c = &mut self.clients[id];
                c.lb_unacked = true;
                c.lb.extend_from_slice(&bytes);
                self.ev(Ev::Lb {
                    client: id,
                    bytes: bytes.to_vec(),
                });
            }
            Output::Close(_) => {
                note!(self, "{label} closed by node {node}");
                self.close_client(id);
            }
            Output::CheckPassword(_, check) => {
                let _ = check.run();
                self.fail("the sims' passwords are plain: no check is deferred");
            }
            Output::Cluster(_) => unreachable!(),
        }
    }

    /// Who is online in login order: the directory's users, or those of the one server that
    /// is its own directory.
    fn online_users(&self) -> Vec<Vec<u8>> {
        if self.single {
            let online = self.nodes[0].server.online_in_login_order();
            online.map(|(_, user)| user.to_vec()).collect()
        } else {
            self.directory.users()
        }
    }

    fn close_client(&mut self, id: usize) {
        let c = &mut self.clients[id];
        c.closed = true;
        c.granted = false;
        c.la_pending.clear();
        c.lb_unacked = false;
        if c.lb_state != LbState::None {
            c.lb_state = LbState::Down;
        }
        self.ev(Ev::Closed { client: id });
    }

    fn route_cluster(&mut self, node: usize, output: ClusterOutput) {
        note!(self, "node {node} -> {}", show_cluster(&output));
        match output {
            ClusterOutput::Claim { conn, user } => {
                self.dir_requests[node].push_back(DirRequest::Claim { conn, user })
            }
            ClusterOutput::Release { conn, user } => {
                self.dir_requests[node].push_back(DirRequest::Release { conn, user })
            }
            ClusterOutput::Query { query } => {
                if let Some(tag) = self.reading[node].take() {
                    self.asked_for.insert((node, query), tag);
                }
                self.dir_requests[node].push_back(DirRequest::Query { query })
            }
            ClusterOutput::Send { to, message } => self.send_all(node, vec![(to, message)]),
            ClusterOutput::SendAll { messages } => self.send_all(node, messages),
            ClusterOutput::DeliverTo {
                request,
                user,
                line,
            } => {
                // Its line reaches nodes only through their inboxes.
                self.reading[node] = None;
                let append = Append::To {
                    request,
                    user,
                    line,
                };
                self.outboxes[node].push_back(append);
            }
        }
    }

    /// Queues one atomic append of `node`'s engine.
    fn send_all(&mut self, node: usize, messages: Vec<(NodeId, NodeMessage)>) {
        let mut entry = Vec::with_capacity(messages.len());
        for (to, message) in messages {
            let to = node_index(to);
            if to >= self.nodes.len() {
                self.fail(&format!("node {node} sends to node {to}"));
            }
            entry.push((to, message));
        }
        self.outboxes[node].push_back(Append::Messages(entry));
    }

    // --- faults and time -------------------------------------------------------------------

    fn stall(&mut self) {
        self.stalled = true;
    }

    fn unstall(&mut self) {
        self.stalled = false;
        self.drive();
    }

    /// Node `node` stops: its clients' connections end and everything queued for or by it is
    /// lost; the reaper comes after [`LEASE`].
    fn crash(&mut self, node: usize) {
        note!(self, "node {node} crashes");
        self.stat("crash");
        let n = &mut self.nodes[node];
        n.alive = false;
        n.crashed = Some((self.now, false));
        while n.server.poll_output().is_some() {}
        self.dir_requests[node].clear();
        self.dir_answers[node].clear();
        self.outboxes[node].clear();
        self.inboxes[node].clear();
        let ids: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].node == node && !self.clients[i].closed)
            .collect();
        for id in ids {
            self.close_client(id);
        }
        self.drive();
    }

    /// The reaper: the crashed node's users go offline and every other node hears it is down.
    fn reap(&mut self, node: usize) {
        note!(self, "node {node} reaped");
        self.stat("reap");
        self.ev(Ev::Reaped { node });
        self.nodes[node].crashed = Some((self.now, true));
        self.directory.drop_node(node_id(node));
        for other in 0..self.nodes.len() {
            if self.nodes[other].alive {
                let input = ClusterInput::NodeDown(node_id(node));
                self.nodes[other].server.handle_cluster(self.now, input);
                self.check_timer(other);
            }
        }
        self.drive();
    }

    /// `node` lost its lease: the directory has let its users go, and it ends its sessions.
    fn lease_lost(&mut self, node: usize) {
        note!(self, "node {node} loses its lease");
        self.stat("lease lost");
        self.directory.drop_node(node_id(node));
        self.nodes[node]
            .server
            .handle_cluster(self.now, ClusterInput::LeaseLost);
        self.check_timer(node);
        self.drive();
    }

    fn start_outage(&mut self, length: Duration) {
        note!(self, "directory out for {length:?}");
        self.stat("outage");
        self.outage_until = Some(self.now + length);
    }

    /// The next node deadline or reap, if any.
    fn next_event(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.server.poll_timeout());
        let reaps = self.nodes.iter().filter_map(|n| match n.crashed {
            Some((at, false)) => Some(at + LEASE),
            _ => None,
        });
        timers.chain(reaps).min()
    }

    /// Moves the clock by `by`, firing each deadline and reap at its own time.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.next_event() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            let due = self
                .nodes
                .iter()
                .filter(|n| n.alive && n.server.poll_timeout().is_some_and(|t| t <= self.now));
            if due.count() > 1 {
                self.tied = true;
            }
            for node in 0..self.nodes.len() {
                let n = &self.nodes[node];
                if n.alive && n.server.poll_timeout().is_some_and(|t| t <= self.now) {
                    note!(self, "node {node} timeout");
                    self.nodes[node].server.handle_timeout(self.now);
                    self.check_timer(node);
                    self.drive();
                }
                if matches!(self.nodes[node].crashed, Some((t, false)) if t + LEASE <= self.now) {
                    self.reap(node);
                }
            }
        }
        self.now = target;
        self.drive();
    }

    /// Ends every fault, drains every queue and runs the clock past every deadline and lease.
    fn settle_all(&mut self) {
        self.outage_until = None;
        self.unstall();
        for _ in 0..1_000 {
            let Some(at) = self.next_event() else { break };
            self.advance(at.saturating_duration_since(self.now));
        }
        assert_eq!(self.next_event(), None, "deadlines keep coming");
    }

    /// What must hold between ops: one session per user cluster-wide, each held in the
    /// directory, and, when nothing is stalled, the directory holding exactly the online users
    /// (and those of crashed nodes not reaped yet).
    fn check_idle(&self) {
        // Borrowed, not copied: this runs after every op.
        let mut seen: BTreeMap<&[u8], (usize, ConnId)> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            for (conn, user) in node.server.online_in_login_order() {
                if let Some(other) = seen.insert(user, (i, conn)) {
                    self.fail(&format!(
                        "{} online twice: node {i} {conn} and {other:?}",
                        escape(user)
                    ));
                }
                let held = self.directory.holders.get(user).map(|&(_, n, c)| (n, c));
                if held != Some((node_id(i), conn)) && !self.stalled {
                    self.fail(&format!(
                        "{} online on node {i} {conn}, the directory has {held:?}",
                        escape(user)
                    ));
                }
            }
        }
        if !self.stalled {
            for (user, &(_, node, conn)) in &self.directory.holders {
                let at = node_index(node);
                let ghost = self.nodes[at].crashed.is_some_and(|(_, reaped)| !reaped);
                if !ghost && seen.get(&user[..]) != Some(&(at, conn)) {
                    self.fail(&format!(
                        "the directory has {} on node {at} {conn}, who is not online",
                        escape(user)
                    ));
                }
            }
            // And what the checker saw logged in matches.
            let mut logged_in: Vec<&[u8]> = (0..self.clients.len())
                .filter(|&c| !self.checker.clients[c].closed)
                .filter_map(|c| self.checker.user(c))
                .collect();
            logged_in.sort();
            let online: Vec<&[u8]> = seen.keys().copied().collect();
            if logged_in != online {
                self.fail(&format!(
                    "clients logged in: {:?}, nodes online: {:?}",
                    logged_in.iter().map(|u| escape(u)).collect::<Vec<_>>(),
                    online.iter().map(|u| escape(u)).collect::<Vec<_>>()
                ));
            }
        }
    }
}

fn whole_line(bytes: &[u8]) -> Result<(), String> {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    if newlines == 1 && bytes.ends_with(b"\n") {
        Ok(())
    } else {
        Err(format!("not one whole line: {}", escape(bytes)))
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(|l| escape(l.strip_suffix(b"\n").unwrap_or(l)))
        .collect()
}

fn show_message(message: &NodeMessage) -> String {
    match message {
        NodeMessage::Deliver {
            request,
            recipients,
            line,
        } => format!(
            "Deliver r{} to (slot, conn) {recipients:?}: {}",
            request.0,
            escape(line)
        ),
        NodeMessage::Outcome {
            request,
            slot,
            delivered,
        } => format!("Outcome r{} slot {slot} delivered={delivered}", request.0),
        NodeMessage::Withdraw { request } => format!("Withdraw r{}", request.0),
    }
}

fn show_cluster(output: &ClusterOutput) -> String {
    match output {
        ClusterOutput::Send { to, message } => {
            format!("node {}: {}", node_index(*to), show_message(message))
        }
        ClusterOutput::SendAll { messages } => {
            let shown: Vec<String> = (messages.iter())
                .map(|(to, message)| format!("node {}: {}", node_index(*to), show_message(message)))
                .collect();
            format!("at once [{}]", shown.join("; "))
        }
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

const AUTH_OK: &str = "101 Authentication successful";
const AUTH_FAILED: &str = "102 Authentication failed";
const LB_OK: &str = "201 Build connection successful";
const DELIVERED: &str = "303 Message delivery successful";
const DELIVERY_FAILED: &str = "304 Message delivery failed";
const BYE: &str = "310 Bye bye";

/// The appendix's conversation with bob, michael and jacky each on a node of their own. Its
/// contents carry no tags, so the checker lets its requests through (it still checks every
/// answer's kind and that none comes twice); every byte is compared here instead.
#[test]
fn appendix_across_three_nodes() {
    let mut c = Cluster::new(3, &Cluster::default_config());
    c.checker.lenient = true;
    let bob = c.ready(0, "bob", "bob123");
    let michael = c.ready(1, "michael", "michael123");
    let jacky = c.join(2, "jacky", "12345");
    assert_eq!(c.take_la(jacky), [AUTH_OK, LB_OK]);
    c.type_la(jacky, b"/list\n");
    assert_eq!(c.take_la(jacky), ["301 jacky bob michael"]);

    c.type_la(jacky, b"/to bob Hello! Nice to meet you!\n");
    assert_eq!(c.take_lb(bob), ["/from jacky Hello! Nice to meet you!"]);
    assert!(c.take_la(jacky).is_empty(), "no answer before bob's 302");
    c.ack(bob);
    assert_eq!(c.take_la(jacky), [DELIVERED]);

    for who in [bob, michael, jacky] {
        c.set_auto_ack(who, true);
    }
    c.type_la(jacky, b"/to michael Hi, Michael!\n");
    assert_eq!(c.take_la(jacky), [DELIVERED]);
    c.type_la(michael, b"/to jacky Hi, Jacky!\n");
    assert_eq!(c.take_la(michael), [DELIVERED]);
    c.type_la(jacky, b"/toall How about meeting at 3pm today?\n");
    assert_eq!(c.take_la(jacky), [DELIVERED]);
    c.type_la(bob, b"/to jacky Jacky, nice to meet you too!\n");
    c.type_la(bob, b"/toall OK.\n");
    c.type_la(michael, b"/toall No problem.\n");
    assert_eq!(c.take_la(bob), [DELIVERED, DELIVERED]);
    assert_eq!(c.take_la(michael), [DELIVERED]);
    c.type_la(jacky, b"/exit\n");
    assert_eq!(c.take_la(jacky), [BYE]);
    assert!(c.is_closed(jacky));
    assert_eq!(
        c.take_lb(jacky),
        [
            "/from michael Hi, Jacky!",
            "/from bob Jacky, nice to meet you too!",
            "/broadcastfrom bob OK.",
            "/broadcastfrom michael No problem.",
        ]
    );
    assert_eq!(
        c.take_lb(bob),
        [
            "/broadcastfrom jacky How about meeting at 3pm today?",
            "/broadcastfrom michael No problem.",
        ]
    );
    assert_eq!(
        c.take_lb(michael),
        [
            "/from jacky Hi, Michael!",
            "/broadcastfrom jacky How about meeting at 3pm today?",
            "/broadcastfrom bob OK.",
        ]
    );
    c.type_la(bob, b"/list\n");
    assert_eq!(c.take_la(bob), ["301 bob michael"]);
    c.check_idle();
}

/// Two nodes race for one user: the directory takes one claim, whichever it processes first.
#[test]
fn double_login_race_gives_exactly_one_101() {
    for first in [0, 1] {
        let mut c = Cluster::new(2, &Cluster::default_config());
        c.stall();
        let a = c.join(0, "u0", "pw0");
        let b = c.join(1, "u0", "pw0");
        assert!(c.take_la(a).is_empty() && c.take_la(b).is_empty());
        assert!(c.dir_step(first) && c.dir_step(1 - first));
        assert!(c.dir_deliver(1 - first) && c.dir_deliver(first));
        c.unstall();
        let (winner, loser) = if first == 0 { (a, b) } else { (b, a) };
        assert_eq!(c.take_la(winner), [AUTH_OK, LB_OK]);
        assert_eq!(c.take_la(loser), [AUTH_FAILED, "401 Unrecognized message"]);
        c.check_idle();
        // Once the winner leaves, the name is free again, on any node.
        c.type_la(winner, b"/exit\n");
        c.type_la(loser, b"/login u0 pw0\n");
        assert_eq!(c.take_la(loser), [AUTH_OK]);
        c.check_idle();
    }
}

/// The sims' way to say something: a tagged content, so the checker knows the request.
fn say(c: &mut Cluster, client: usize, line: &str) {
    let tag = c.checker.requests.len();
    c.type_la(client, format!("{line} #{tag}\n").as_bytes());
}

#[test]
fn cross_node_to_is_answered_303_after_the_remote_302() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    c.stall();
    say(&mut c, a, "/to u1 hello");
    assert!(c.take_lb(b).is_empty(), "the /to waits in node 0's engine");
    // Looked up and appended in one step; node 0 hears where it went only at the end.
    assert!(c.append(0));
    assert!(
        c.take_lb(b).is_empty(),
        "the Deliver waits in node 1's inbox"
    );
    assert!(c.read_inbox(1, false));
    assert_eq!(c.take_lb(b), ["/from u0 hello #0"]);
    c.ack(b);
    assert!(
        c.take_la(a).is_empty(),
        "the Outcome waits in node 1's engine"
    );
    assert!(c.append(1));
    // Delivered twice: still one answer.
    assert!(c.read_inbox(0, true));
    assert_eq!(c.take_la(a), [DELIVERED]);
    assert!(
        c.dir_deliver(0),
        "routed after its outcome: nothing changes"
    );
    assert!(c.take_la(a).is_empty());
    c.unstall();
    c.settle_all();
    c.checker.finish().unwrap();
}

#[test]
fn cross_node_to_without_ack_times_out_on_the_recipients_node_and_fails_the_sender() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    say(&mut c, a, "/to u1 are you there?");
    assert_eq!(c.take_lb(b), ["/from u0 are you there? #0"]);
    c.advance(Duration::from_millis(9_999));
    assert!(c.take_la(a).is_empty() && !c.is_closed(b));
    c.advance(Duration::from_millis(1));
    assert!(c.is_closed(b), "a failed delivery ends the recipient");
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    // The recipient is offline now, for everybody.
    c.type_la(a, b"/list\n");
    assert_eq!(c.take_la(a), ["301 u0"]);
    say(&mut c, a, "/to u1 gone?");
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    c.check_idle();
}

#[test]
fn toall_across_three_nodes_is_one_answer_303_iff_all_acked() {
    let mut c = Cluster::new(3, &Cluster::default_config());
    let users: Vec<usize> = (0..4)
        .map(|i| c.ready(i % 3, &format!("u{i}"), &format!("pw{i}")))
        .collect();
    for &u in &users[1..] {
        c.set_auto_ack(u, true);
    }
    say(&mut c, users[0], "/toall hello all");
    assert_eq!(c.take_la(users[0]), [DELIVERED]);
    for &u in &users[1..] {
        assert_eq!(c.take_lb(u), ["/broadcastfrom u0 hello all #0"]);
    }
    assert!(c.take_lb(users[0]).is_empty(), "not to the sender");
    // One recipient (on node 2) stops acking: one 304, once its ack times out.
    c.set_auto_ack(users[2], false);
    say(&mut c, users[0], "/toall again");
    assert!(c.take_la(users[0]).is_empty());
    c.advance(Duration::from_secs(10));
    assert_eq!(c.take_la(users[0]), [DELIVERY_FAILED]);
    assert!(c.is_closed(users[2]));
    c.type_la(users[1], b"/list\n");
    assert_eq!(c.take_la(users[1]), ["301 u1 u0 u3"]);
    c.settle_all();
    c.checker.finish().unwrap();
}

/// The recipient's node dies while a delivery waits for its `302`: once the reaper has told
/// the sender's node, the sender hears `304`.
#[test]
fn node_crash_mid_delivery_fails_it_once_node_down_arrives() {
    let mut c = Cluster::new(3, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    let d = c.ready(2, "u2", "pw2");
    c.set_auto_ack(d, true);
    say(&mut c, a, "/to u1 hi");
    assert_eq!(c.take_lb(b), ["/from u0 hi #0"]);
    c.crash(1);
    assert!(c.is_closed(b));
    // Until the lease runs out, u1 is still claimed, and nothing answers the sender.
    c.advance(LEASE - Duration::from_millis(1));
    assert!(c.take_la(a).is_empty());
    let again = c.join(2, "u1", "pw1");
    assert_eq!(c.take_la(again), [AUTH_FAILED, "401 Unrecognized message"]);
    c.advance(Duration::from_millis(1));
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    // The name is free again, and a /toall now reaches only the living.
    c.type_la(again, b"/login u1 pw1\n");
    assert_eq!(c.take_la(again), [AUTH_OK]);
    say(&mut c, a, "/toall still here?");
    // u1 logged in again but has no Lb yet: a failed recipient.
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    assert_eq!(c.take_lb(d), ["/broadcastfrom u0 still here? #1"]);
    c.settle_all();
    c.checker.finish().unwrap();
}

/// A `/to` routed to a node that was reported down before the route arrived: the delivery
/// must fail, not wait forever for a node that will never answer.
#[test]
fn a_route_to_a_node_reported_down_does_not_hang_the_sender() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let _b = c.ready(1, "u1", "pw1");
    c.stall();
    say(&mut c, a, "/to u1 late");
    // Appended while u1 is still there; where it went is slow to come back.
    assert!(c.append(0));
    c.crash(1);
    c.advance(LEASE);
    assert!(c.take_la(a).is_empty());
    assert!(c.dir_deliver(0));
    c.unstall();
    c.settle_all();
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    c.checker.finish().unwrap();
}

/// A sender that leaves while its `/to` is on its way: once the engine says where the line
/// went, the withdrawal follows it there, behind it, and the line is never shown.
#[test]
fn a_to_whose_sender_left_before_it_was_routed_is_withdrawn_there() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    let other = c.ready(1, "u2", "pw2");
    say(&mut c, other, "/to u1 first");
    assert_eq!(
        c.take_lb(b),
        ["/from u2 first #0"],
        "outstanding, not acknowledged"
    );
    c.stall();
    say(&mut c, a, "/to u1 second");
    assert!(c.append(0));
    assert!(c.read_inbox(1, false), "queued behind the outstanding line");
    c.drop_la(a);
    assert!(
        c.dir_deliver(0),
        "routed: node 0 now knows where to withdraw it"
    );
    assert!(c.append(0) && c.read_inbox(1, false));
    c.unstall();
    c.ack(b);
    c.settle_all();
    assert!(c.take_lb(b).is_empty(), "u0's line was withdrawn");
    c.checker.finish().unwrap();
}

/// A crashed node's senders are gone: what they queued at a recipient elsewhere is withdrawn
/// once the node is reported down, and only the line already out stays out.
#[test]
fn node_down_withdraws_the_dead_senders_queued_lines() {
    let mut c = Cluster::new(3, &Cluster::default_config());
    let r = c.ready(0, "u0", "pw0");
    let a = c.ready(1, "u1", "pw1");
    let b = c.ready(2, "u2", "pw2");
    say(&mut c, a, "/to u0 first");
    say(&mut c, b, "/to u0 second");
    assert_eq!(c.take_lb(r), ["/from u1 first #0"]);
    c.crash(2);
    c.advance(LEASE);
    c.ack(r);
    assert_eq!(c.take_la(a), [DELIVERED]);
    assert!(c.take_lb(r).is_empty(), "u2's line was withdrawn");
    c.settle_all();
    c.checker.finish().unwrap();
}

/// `ClusterOutput::Send` promises delivery "at least once and in order", so an engine may hand
/// a node the same `Deliver` twice. Then the recipient must still see the line once: the hub
/// drops a `Deliver` not after the last one from that node.
#[test]
fn a_deliver_handed_over_twice_reaches_the_recipient_once() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    c.set_auto_ack(b, true);
    c.stall();
    say(&mut c, a, "/to u1 once");
    assert!(c.append(0));
    let inbox = &mut c.inboxes[1];
    let deliver = inbox.front().unwrap().clone();
    assert!(matches!(deliver.1, NodeMessage::Deliver { .. }));
    inbox.push_front(deliver);
    c.unstall();
    assert_eq!(c.take_lb(b), ["/from u0 once #0"]);
    assert_eq!(c.take_la(a), [DELIVERED]);
}

#[test]
fn directory_outage_fails_logins_and_requests_closed() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let _b = c.ready(1, "u1", "pw1");
    let local = c.ready(0, "u2", "pw2");
    c.start_outage(Duration::from_secs(2));
    let late = c.join(1, "u3", "pw3");
    assert_eq!(c.take_la(late), [AUTH_FAILED, "401 Unrecognized message"]);
    say(&mut c, a, "/to u1 anyone?");
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    c.type_la(a, b"/list\n");
    assert_eq!(c.take_la(a), ["301 u0 u2"], "only what the node knows");
    say(&mut c, a, "/toall anyone?");
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    assert!(c.take_lb(local).is_empty());
    c.advance(Duration::from_secs(2));
    c.type_la(late, b"/login u3 pw3\n");
    assert_eq!(c.take_la(late), [AUTH_OK]);
    c.type_la(a, b"/list\n");
    assert_eq!(c.take_la(a), ["301 u0 u1 u2 u3"]);
    c.check_idle();
}

#[test]
fn lease_lost_ends_every_session_of_the_node_and_frees_its_users() {
    let mut c = Cluster::new(2, &Cluster::default_config());
    let a = c.ready(0, "u0", "pw0");
    let b = c.ready(1, "u1", "pw1");
    let b2 = c.ready(1, "u2", "pw2");
    say(&mut c, a, "/to u1 pending");
    assert_eq!(c.take_lb(b), ["/from u0 pending #0"]);
    c.lease_lost(1);
    assert!(c.is_closed(b) && c.is_closed(b2));
    assert_eq!(c.take_la(a), [DELIVERY_FAILED]);
    c.type_la(a, b"/list\n");
    assert_eq!(c.take_la(a), ["301 u0"]);
    // The node goes on serving, and the names can be taken again there or elsewhere.
    let again = c.ready(1, "u1", "pw1");
    let other = c.ready(0, "u2", "pw2");
    c.type_la(other, b"/list\n");
    assert_eq!(c.take_la(other), ["301 u2 u0 u1"]);
    assert!(!c.is_closed(again));
    c.check_idle();
}

// ---------------------------------------------------------------------------------------------
// Random schedules
// ---------------------------------------------------------------------------------------------

/// At most this many clients are open at once.
const CLIENTS: usize = 7;
/// Users `u0`..`u4`; `USERS` names `ghost`, who has no account.
const USERS: usize = 5;

const CONTENTS: &[&str] = &[
    "hi",
    " leading space",
    "two  spaces",
    "tab\there",
    "\u{e9}t\u{e9}",
];

/// `prop_oneof!`, as [`schedules::one_of`]: faster on long schedules.
macro_rules! one_of {
    ($($weight:expr => $strategy:expr),+ $(,)?) => {
        schedules::one_of(vec![$(($weight, $strategy.boxed())),+])
    };
}

#[derive(Clone, Debug)]
enum Op {
    /// A new client joins a node (`/login` and `/port` in one chunk).
    Join {
        node: usize,
        user: usize,
        acks: bool,
        refuse_lb: bool,
    },
    /// A new client connects and only logs in, maybe with the wrong password.
    Login {
        node: usize,
        user: usize,
        right: bool,
    },
    List {
        who: usize,
    },
    /// `to` below 100 picks one of the users logged in (by index), `100 + n` names `u<n>`
    /// (`ghost` for `n == USERS`).
    To {
        from: usize,
        to: usize,
        content: usize,
    },
    ToAll {
        from: usize,
        content: usize,
    },
    Exit {
        who: usize,
    },
    Ack {
        who: usize,
    },
    AutoAck {
        who: usize,
        on: bool,
    },
    DropLa {
        who: usize,
    },
    DropLb {
        who: usize,
    },
    Advance {
        ms: u64,
    },
    // Faults.
    Stall,
    Unstall,
    /// The directory processes the oldest request of the `node`-th node that has one.
    DirStep {
        node: usize,
    },
    /// The `node`-th node with a directory answer waiting gets it.
    DirDeliver {
        node: usize,
    },
    /// The `link`-th non-empty queue of node messages moves its oldest: an engine's outgoing
    /// entry is appended to its inboxes, or a node reads its inbox (an `Outcome` twice if
    /// `dup`).
    NetDeliver {
        link: usize,
        dup: bool,
    },
    Crash {
        node: usize,
    },
    Outage {
        ms: u64,
    },
    LeaseLost {
        node: usize,
    },
}

impl Op {
    fn is_fault(&self) -> bool {
        matches!(
            self,
            Op::Stall
                | Op::Unstall
                | Op::DirStep { .. }
                | Op::DirDeliver { .. }
                | Op::NetDeliver { .. }
                | Op::Crash { .. }
                | Op::Outage { .. }
                | Op::LeaseLost { .. }
        )
    }
}

fn client_op() -> BoxedStrategy<Op> {
    let who = || 0..CLIENTS;
    one_of![
        6 => (0..4usize, 0..USERS, prop::bool::weighted(0.7), prop::bool::weighted(0.1))
            .prop_map(|(node, user, acks, refuse_lb)| Op::Join { node, user, acks, refuse_lb }),
        1 => (0..4usize, 0..=USERS, prop::bool::weighted(0.8))
            .prop_map(|(node, user, right)| Op::Login { node, user, right }),
        3 => who().prop_map(|who| Op::List { who }),
        8 => (who(), one_of![3 => 0..CLIENTS, 1 => 100..=100 + USERS], 0..CONTENTS.len())
            .prop_map(|(from, to, content)| Op::To { from, to, content }),
        4 => (who(), 0..CONTENTS.len()).prop_map(|(from, content)| Op::ToAll { from, content }),
        1 => who().prop_map(|who| Op::Exit { who }),
        5 => who().prop_map(|who| Op::Ack { who }),
        2 => (who(), any::<bool>()).prop_map(|(who, on)| Op::AutoAck { who, on }),
        1 => who().prop_map(|who| Op::DropLa { who }),
        1 => who().prop_map(|who| Op::DropLb { who }),
        3 => one_of![3 => 1..2_000u64, 1 => 2_500..3_500u64, 2 => 9_000..11_000u64]
            .prop_map(|ms| Op::Advance { ms }),
    ]
}

fn fault_op() -> BoxedStrategy<Op> {
    let node = || 0..4usize;
    one_of![
        6 => Just(Op::Stall),
        2 => Just(Op::Unstall),
        8 => node().prop_map(|node| Op::DirStep { node }),
        8 => node().prop_map(|node| Op::DirDeliver { node }),
        16 => (0..12usize, prop::bool::weighted(0.3))
            .prop_map(|(link, dup)| Op::NetDeliver { link, dup }),
        1 => node().prop_map(|node| Op::Crash { node }),
        1 => (100..4_000u64).prop_map(|ms| Op::Outage { ms }),
        1 => node().prop_map(|node| Op::LeaseLost { node }),
    ]
}

fn any_op() -> BoxedStrategy<Op> {
    one_of![3 => client_op(), 2 => fault_op()]
}

fn sim_config() -> impl Strategy<Value = ServerConfig> {
    prop_oneof![2 => Just(1usize), 1 => 2usize..=3].prop_map(|max_queue| ServerConfig {
        max_queue,
        ..Cluster::default_config()
    })
}

/// Runs schedules on a [`Cluster`]: picks clients, types lines, moves faults.
struct Sim {
    cluster: Cluster,
    n: usize,
}

impl Sim {
    fn open(&self) -> Vec<usize> {
        (0..self.cluster.clients.len())
            .filter(|&c| !self.cluster.clients[c].closed)
            .collect()
    }

    fn pick(&self, who: usize) -> Option<usize> {
        let open = self.open();
        (!open.is_empty()).then(|| open[who % open.len()])
    }

    /// The next tag: requests are tagged in the order the server reads them, and a client's
    /// typed lines wait behind its earlier ones, so a tag is given when a line is typed only
    /// if the client has nothing else waiting; otherwise the op is skipped.
    fn say(&mut self, client: usize, head: String) -> Option<()> {
        let c = &self.cluster.clients[client];
        let waiting = !c.la_pending.is_empty()
            || !c.granted
            || !self.cluster.checker.clients[client].commands.is_empty();
        if waiting {
            return None;
        }
        let tag = self.cluster.checker.requests.len();
        self.cluster
            .type_la(client, format!("{head} #{tag}\n").as_bytes());
        Some(())
    }

    fn apply(&mut self, op: &Op) -> Option<()> {
        let c = &mut self.cluster;
        match *op {
            Op::Join {
                node,
                user,
                acks,
                refuse_lb,
            } => {
                if self.open().len() >= CLIENTS {
                    return None;
                }
                let c = &mut self.cluster;
                c.alive_node(node % self.n)?;
                let client = c.connect(node % self.n, &format!("c{}", c.clients.len()));
                c.clients[client].auto_ack = acks;
                c.clients[client].refuse_lb = refuse_lb;
                let port = Cluster::port_of(client);
                c.type_la(
                    client,
                    format!("/login u{user} pw{user}\n/port {port}\n").as_bytes(),
                );
            }
            Op::Login { node, user, right } => {
                if self.open().len() >= CLIENTS {
                    return None;
                }
                let c = &mut self.cluster;
                c.alive_node(node % self.n)?;
                let client = c.connect(node % self.n, &format!("c{}", c.clients.len()));
                let name = if user < USERS {
                    format!("u{user}")
                } else {
                    "ghost".into()
                };
                let password = if right {
                    format!("pw{user}")
                } else {
                    "wrong".into()
                };
                c.type_la(client, format!("/login {name} {password}\n").as_bytes());
            }
            Op::List { who } => {
                let client = self.pick(who)?;
                self.cluster.type_la(client, b"/list\n");
            }
            Op::To { from, to, content } => {
                let client = self.pick(from)?;
                let checker = &self.cluster.checker;
                let online: Vec<&[u8]> = (0..checker.clients.len())
                    .filter(|&c| !checker.clients[c].closed)
                    .filter_map(|c| checker.user(c))
                    .collect();
                let name = match to.checked_sub(100) {
                    None if !online.is_empty() => escape(online[to % online.len()]),
                    None => "ghost".into(),
                    Some(n) if n < USERS => format!("u{n}"),
                    Some(_) => "ghost".into(),
                };
                self.say(client, format!("/to {name} {}", CONTENTS[content]))?;
            }
            Op::ToAll { from, content } => {
                let client = self.pick(from)?;
                self.say(client, format!("/toall {}", CONTENTS[content]))?;
            }
            Op::Exit { who } => {
                let client = self.pick(who)?;
                self.cluster.type_la(client, b"/exit\n");
            }
            Op::Ack { who } => {
                let client = self.pick(who)?;
                let cl = &self.cluster.clients[client];
                if !cl.lb_unacked || cl.auto_ack {
                    return None;
                }
                self.cluster.ack(client);
            }
            Op::AutoAck { who, on } => {
                let client = self.pick(who)?;
                self.cluster.set_auto_ack(client, on);
            }
            Op::DropLa { who } => {
                let client = self.pick(who)?;
                self.cluster.drop_la(client);
            }
            Op::DropLb { who } => {
                let client = self.pick(who)?;
                if self.cluster.clients[client].lb_state != LbState::Up {
                    return None;
                }
                self.cluster.drop_lb(client);
            }
            Op::Advance { ms } => c.advance(Duration::from_millis(ms)),
            Op::Stall => c.stall(),
            Op::Unstall => c.unstall(),
            Op::DirStep { node } => {
                let waiting: Vec<usize> = (0..self.n)
                    .filter(|&i| !c.dir_requests[i].is_empty())
                    .collect();
                let node = *waiting.get(node % waiting.len().max(1))?;
                c.dir_step(node);
            }
            Op::DirDeliver { node } => {
                let waiting: Vec<usize> = (0..self.n)
                    .filter(|&i| !c.dir_answers[i].is_empty())
                    .collect();
                let node = *waiting.get(node % waiting.len().max(1))?;
                c.dir_deliver(node);
            }
            Op::NetDeliver { link, dup } => {
                let outboxes = (0..self.n).filter(|&i| !c.outboxes[i].is_empty());
                let inboxes = (0..self.n).filter(|&i| !c.inboxes[i].is_empty());
                let waiting: Vec<(bool, usize)> = (outboxes.map(|i| (false, i)))
                    .chain(inboxes.map(|i| (true, i)))
                    .collect();
                let (inbox, node) = *waiting.get(link % waiting.len().max(1))?;
                match inbox {
                    false => c.append(node),
                    true => c.read_inbox(node, dup),
                };
            }
            Op::Crash { node } => {
                let node = node % self.n;
                let alive = c.nodes.iter().filter(|n| n.alive).count();
                if !c.nodes[node].alive || alive < 2 {
                    return None;
                }
                c.crash(node);
            }
            Op::Outage { ms } => c.start_outage(Duration::from_millis(ms)),
            Op::LeaseLost { node } => {
                let node = node % self.n;
                if !c.nodes[node].alive {
                    return None;
                }
                c.lease_lost(node);
            }
        }
        Some(())
    }
}

/// Runs one schedule on `n` nodes and checks it; returns every client's bytes as they ended.
fn run(cluster: Cluster, n: usize, ops: &[Op], stats: &mut BTreeMap<&'static str, usize>) {
    let mut sim = Sim { cluster, n };
    for op in ops {
        // Each op at its own instant, so simultaneous deadlines come only from one event.
        sim.cluster.advance(Duration::from_millis(1));
        note!(sim.cluster, "op {op:?}");
        let applied = sim.apply(op).is_some();
        *stats
            .entry(if applied {
                "ops applied"
            } else {
                "ops skipped"
            })
            .or_default() += 1;
        sim.cluster.check_idle();
    }
    sim.cluster.settle_all();
    sim.cluster.check_idle();
    if let Err(why) = sim.cluster.checker.finish() {
        sim.cluster.fail(&why);
    }
    for (what, count) in &sim.cluster.checker.stats {
        *stats.entry(what).or_default() += count;
    }
}

/// The longest schedule; `SIM_MAX_OPS` changes it.
fn max_ops() -> usize {
    std::env::var("SIM_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// The failure of a minimal schedule, replayed with a history kept (schedules run and shrink
/// without one): its message with the history, or `why` if it passes this time.
fn replayed(why: &str, schedule: impl FnOnce() -> Result<(), TestCaseError>) -> String {
    match panic::catch_unwind(AssertUnwindSafe(schedule)) {
        Ok(Ok(())) => format!("{why}\n(it passed when replayed with a history)"),
        Ok(Err(e)) => e.to_string(),
        Err(payload) => match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => {
                (payload.downcast_ref::<&str>()).map_or_else(|| why.to_owned(), |m| m.to_string())
            }
        },
    }
}

fn runner() -> TestRunner {
    TestRunner::new(schedules::config("cluster_sim", 512))
}

/// Runs a schedule of clients and faults on `n` nodes (every `Outcome` read twice if
/// `dup_outcomes`), keeping a history for a failure's message if `history`.
fn faulty(
    n: usize,
    config: &ServerConfig,
    dup_outcomes: bool,
    ops: &[Op],
    history: bool,
    stats: &mut BTreeMap<&'static str, usize>,
) {
    let mut cluster = Cluster::new(n, config);
    cluster.dup_outcomes = dup_outcomes;
    if !history {
        cluster.history = None;
    }
    run(cluster, n, ops, stats);
}

/// Random schedules of clients and faults on 2–4 nodes, checked against [`Checker`].
#[test]
fn random_cluster_schedules() {
    let stats = RefCell::new(BTreeMap::new());
    let strategy = (
        2..=4usize,
        sim_config(),
        prop::bool::weighted(0.3),
        prop::collection::vec(any_op(), 1..=max_ops()),
    );
    let result = runner().run(&strategy, |(n, config, dup_outcomes, ops)| {
        let stats = &mut stats.borrow_mut();
        faulty(n, &config, dup_outcomes, &ops, false, stats);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (n, config, dup_outcomes, ops))) => {
            let why = replayed(why.message(), || {
                faulty(n, &config, dup_outcomes, &ops, true, &mut BTreeMap::new());
                Ok(())
            });
            panic!(
                "{why}\nminimal schedule on {n} nodes (every Outcome twice: {dup_outcomes}): \
                 {config:#?}\n{ops:#?}"
            )
        }
        Err(e) => panic!("{e}"),
    }
    let stats = stats.into_inner();
    eprintln!("cluster simulation reached: {stats:#?}");
    if schedules::cases(512) >= 256 {
        for what in [
            "101",
            "102",
            "201",
            "202",
            "301 checked",
            "303 to",
            "304 to",
            "303 toall",
            "304 toall",
            "crash",
            "reap",
            "outage",
            "claim in outage",
            "query in outage",
            "lease lost",
            "outcome twice",
            "message to a dead node",
            "answer naming a reaped node",
        ] {
            assert!(
                stats.get(what).copied().unwrap_or(0) > 0,
                "no schedule reached {what:?}"
            );
        }
    }
}

/// Every client's bytes on La and Lb, and whether it was closed.
fn client_bytes(cluster: &Cluster) -> Vec<(&[u8], &[u8], bool)> {
    (cluster.clients.iter())
        .map(|c| (&c.la[..], &c.lb[..], c.closed))
        .collect()
}

/// Whether both clusters' clients have the same [`client_bytes`]; `equal` holds, per client,
/// how many bytes of La and Lb are known equal already. Each byte is compared once: escaping
/// and comparing every client's whole history after every op was quadratic in a schedule's
/// length, and most of the test's time.
fn same_bytes(a: &Cluster, b: &Cluster, equal: &mut Vec<(usize, usize)>) -> bool {
    if a.clients.len() != b.clients.len() {
        return false;
    }
    equal.resize(a.clients.len(), (0, 0));
    for ((x, y), (la, lb)) in a.clients.iter().zip(&b.clients).zip(equal) {
        let lengths = |c: &Client| (c.closed, c.la.len(), c.lb.len());
        if lengths(x) != lengths(y) {
            return false;
        }
        // Most clients got nothing since the last op; most of those are closed for good.
        if x.la.len() > *la && x.la[*la..] != y.la[*la..] {
            return false;
        }
        if x.lb.len() > *lb && x.lb[*lb..] != y.lb[*lb..] {
            return false;
        }
        (*la, *lb) = (x.la.len(), x.lb.len());
    }
    true
}

/// A client's [`client_bytes`], escaped to be shown.
fn show_bytes(&(la, lb, closed): &(&[u8], &[u8], bool)) -> String {
    format!("La {:?}, Lb {:?}, closed: {closed}", escape(la), escape(lb))
}

/// Runs a fault-free schedule on `n` nodes whose queues move at once and on one
/// `Server::new`, comparing every client's bytes after each op (up to a tie of deadlines),
/// keeping a history for a failure's message if `history`.
fn equivalent(
    n: usize,
    config: &ServerConfig,
    ops: &[Op],
    history: bool,
    stats: &mut BTreeMap<&'static str, usize>,
) -> Result<(), TestCaseError> {
    let mut single = Sim {
        cluster: Cluster::single(config),
        n: 1,
    };
    let mut cluster = Sim {
        cluster: Cluster::new(n, config),
        n,
    };
    if !history {
        single.cluster.history = None;
        cluster.cluster.history = None;
    }
    let mut compare = true;
    // Per client, how much of La and Lb is known equal: bytes are only ever added.
    let mut equal = Vec::new();
    for op in ops {
        assert!(!op.is_fault());
        for sim in [&mut single, &mut cluster] {
            sim.cluster.advance(Duration::from_millis(1));
            note!(sim.cluster, "op {op:?}");
        }
        let a = single.apply(op).is_some();
        let b = cluster.apply(op).is_some();
        prop_assert_eq!(a, b, "the op applied to one and not the other: {:?}", op);
        cluster.cluster.check_idle();
        if compare && cluster.cluster.tied {
            compare = false;
            *stats.entry("tie: bytes compared up to it").or_default() += 1;
        }
        if compare && !same_bytes(&single.cluster, &cluster.cluster, &mut equal) {
            let (x, y) = (
                client_bytes(&single.cluster),
                client_bytes(&cluster.cluster),
            );
            let mut diff = String::new();
            for (i, (x, y)) in x.iter().zip(&y).enumerate() {
                if x != y {
                    let (x, y) = (show_bytes(x), show_bytes(y));
                    let _ = write!(diff, "\nclient {i}:\n single: {x}\n {n} nodes: {y}");
                }
            }
            cluster
                .cluster
                .fail(&format!("after {op:?} the bytes differ:{diff}"));
        }
    }
    for sim in [&mut single, &mut cluster] {
        sim.cluster.settle_all();
    }
    if compare && !cluster.cluster.tied {
        let (x, y) = (
            client_bytes(&single.cluster),
            client_bytes(&cluster.cluster),
        );
        prop_assert!(
            x == y,
            "the bytes differ at the end:\n single: {:?}\n {n} nodes: {:?}",
            x.iter().map(show_bytes).collect::<Vec<_>>(),
            y.iter().map(show_bytes).collect::<Vec<_>>()
        );
        *stats.entry("schedules compared to the end").or_default() += 1;
    }
    if let Err(why) = cluster.cluster.checker.finish() {
        cluster.cluster.fail(&why);
    }
    for (what, count) in &cluster.cluster.checker.stats {
        *stats.entry(what).or_default() += count;
    }
    Ok(())
}

/// Fault-free schedules: a cluster whose directory and links answer at once gives every client
/// the same bytes as `Server::new`. On one node that is the brief's check that the cluster path
/// changed nothing; on several it says that, without faults, the cluster is one server.
#[test]
fn equivalence() {
    let strategy = (
        1..=4usize,
        sim_config(),
        prop::collection::vec(client_op(), 1..=max_ops()),
    );
    let stats = RefCell::new(BTreeMap::<&'static str, usize>::new());
    let result = runner().run(&strategy, |(n, config, ops)| {
        equivalent(n, &config, &ops, false, &mut stats.borrow_mut())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (n, config, ops))) => {
            let why = replayed(why.message(), || {
                equivalent(n, &config, &ops, true, &mut BTreeMap::new())
            });
            panic!("{why}\nminimal schedule on {n} nodes: {config:#?}\n{ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
    eprintln!("equivalence reached: {:#?}", stats.into_inner());
}

/// How [`one_order_across_nodes`] starts: every user joins, on nodes in turn, and the
/// cluster stalls.
fn racing_joins() -> Vec<Op> {
    (0..USERS)
        .map(|user| Op::Join {
            node: user % 3,
            user,
            acks: true,
            refuse_lb: false,
        })
        .chain([Op::Stall])
        .collect()
}

/// Runs [`racing_joins`] and then `ops` on three nodes, keeping a history for a failure's
/// message if `history`.
fn racing(ops: &[Op], history: bool, stats: &mut BTreeMap<&'static str, usize>) {
    let mut cluster = Cluster::new(3, &Cluster::default_config());
    if !history {
        cluster.history = None;
    }
    let schedule: Vec<Op> = racing_joins()
        .into_iter()
        .chain(ops.iter().cloned())
        .collect();
    run(cluster, 3, &schedule, stats);
}

/// Requests racing over three nodes with every queue moved by the schedule: whichever nodes
/// the senders and the recipients are on, a request one recipient got before another was read
/// comes first to everyone who gets both (the checker's one-server order), and every other
/// rule holds.
#[test]
fn one_order_across_nodes() {
    let order_op = || {
        let who = || 0..CLIENTS;
        one_of![
            4 => (who(), 0..CONTENTS.len()).prop_map(|(from, content)| Op::ToAll { from, content }),
            4 => (who(), 0..CLIENTS, 0..CONTENTS.len())
                .prop_map(|(from, to, content)| Op::To { from, to, content }),
            4 => (0..3usize).prop_map(|node| Op::DirStep { node }),
            4 => (0..3usize).prop_map(|node| Op::DirDeliver { node }),
            10 => (0..6usize, Just(false)).prop_map(|(link, dup)| Op::NetDeliver { link, dup }),
            2 => who().prop_map(|who| Op::Ack { who }),
            1 => (who(), any::<bool>()).prop_map(|(who, on)| Op::AutoAck { who, on }),
            1 => Just(Op::Stall),
            1 => Just(Op::Unstall),
        ]
    };
    let strategy = prop::collection::vec(order_op(), 1..=max_ops().min(120));
    let stats = RefCell::new(BTreeMap::new());
    let result = runner().run(&strategy, |ops| {
        racing(&ops, false, &mut stats.borrow_mut());
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, ops)) => {
            let why = replayed(why.message(), || {
                racing(&ops, true, &mut BTreeMap::new());
                Ok(())
            });
            let joins = racing_joins();
            panic!("{why}\nminimal schedule on 3 nodes after {joins:?}:\n{ops:#?}")
        }
        Err(e) => panic!("{e}"),
    }
    eprintln!("one order reached: {:#?}", stats.into_inner());
}

/// Every failure proptest recorded, as it shrank it, run again with its suite's checks: the
/// seeds in proptest-regressions/cluster_sim.txt, replayed first by every suite, stand for
/// other schedules whenever the generator changes; the comment beside each keeps the schedule.
#[test]
fn recorded_failures() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/cluster_sim.txt"
    );
    let recorded = std::fs::read_to_string(path).unwrap();
    let stats = &mut BTreeMap::new();
    let mut count = 0;
    for line in recorded.lines().filter(|l| l.starts_with("cc ")) {
        let Some((_, value)) = line.split_once(" # shrinks to ") else {
            panic!("no schedule recorded: {line}");
        };
        // `[ops]` for one_order_across_nodes; `(nodes, config, [ops])` for equivalence;
        // `(nodes, config, every Outcome twice, [ops])` for random_cluster_schedules. Ops hold
        // no lists, so their list is the last one.
        let (head, ops) = match value.strip_prefix('[') {
            Some(ops) => ("", ops),
            None => value.rsplit_once(", [").expect("a list of ops"),
        };
        let ops_text = ops
            .trim_end_matches(')')
            .strip_suffix(']')
            .expect("a list of ops");
        let ops = parse_ops(ops_text);
        assert_eq!(
            format!("{ops:?}"),
            format!("[{ops_text}]"),
            "parsed as shown"
        );
        if head.is_empty() {
            racing(&ops, true, stats);
        } else {
            let n = head[1..].split(", ").next().unwrap().parse().unwrap();
            let config = recorded_config(head);
            let dup_outcomes = head.rsplit_once(", ").unwrap().1.parse::<bool>();
            match dup_outcomes {
                Ok(dup_outcomes) => faulty(n, &config, dup_outcomes, &ops, true, stats),
                Err(_) => equivalent(n, &config, &ops, true, stats).unwrap(),
            }
        }
        count += 1;
    }
    eprintln!("{count} recorded failures replayed");
}

/// The config of [`sim_config`] that `text` shows (it may predate some fields).
fn recorded_config(text: &str) -> ServerConfig {
    let from = text.find("ServerConfig { ").expect("a config");
    let to = text.rfind(" }").expect("a config");
    let fields = &text[from + "ServerConfig { ".len()..to];
    (1..=3)
        .map(|max_queue| ServerConfig {
            max_queue,
            ..Cluster::default_config()
        })
        .find(|config| {
            let shown = format!("{config:?}");
            fields.split(", ").all(|field| shown.contains(field))
        })
        .unwrap_or_else(|| panic!("not a config of sim_config: {text}"))
}

/// Ops as their `Debug` shows them, separated by `, `.
fn parse_ops(text: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest.find([' ', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = &rest[name_end..];
        let mut fields = HashMap::new();
        if let Some(body) = rest.strip_prefix(" { ") {
            let end = body.find(" }").expect("a closing brace");
            for field in body[..end].split(", ") {
                let (key, value) = field.split_once(": ").expect("key: value");
                fields.insert(key, value);
            }
            rest = &body[end + 2..];
        }
        rest = rest.trim_start_matches(", ");
        let n = |key: &str| -> usize { fields[key].parse().unwrap() };
        let ms = |key: &str| -> u64 { fields[key].parse().unwrap() };
        let b = |key: &str| -> bool { fields[key].parse().unwrap() };
        ops.push(match name {
            "Join" => Op::Join {
                node: n("node"),
                user: n("user"),
                acks: b("acks"),
                refuse_lb: b("refuse_lb"),
            },
            "Login" => Op::Login {
                node: n("node"),
                user: n("user"),
                right: b("right"),
            },
            "List" => Op::List { who: n("who") },
            "To" => Op::To {
                from: n("from"),
                to: n("to"),
                content: n("content"),
            },
            "ToAll" => Op::ToAll {
                from: n("from"),
                content: n("content"),
            },
            "Exit" => Op::Exit { who: n("who") },
            "Ack" => Op::Ack { who: n("who") },
            "AutoAck" => Op::AutoAck {
                who: n("who"),
                on: b("on"),
            },
            "DropLa" => Op::DropLa { who: n("who") },
            "DropLb" => Op::DropLb { who: n("who") },
            "Advance" => Op::Advance { ms: ms("ms") },
            "Stall" => Op::Stall,
            "Unstall" => Op::Unstall,
            "DirStep" => Op::DirStep { node: n("node") },
            "DirDeliver" => Op::DirDeliver { node: n("node") },
            "NetDeliver" => Op::NetDeliver {
                link: n("link"),
                dup: b("dup"),
            },
            "Crash" => Op::Crash { node: n("node") },
            "Outage" => Op::Outage { ms: ms("ms") },
            "LeaseLost" => Op::LeaseLost { node: n("node") },
            other => panic!("no op {other}"),
        });
    }
    ops
}
