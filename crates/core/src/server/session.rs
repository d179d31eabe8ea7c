//! [`ServerSession`]: the server's view of one client, its La connection and, once Ready, its Lb.
//!
//! The session owns what belongs to one client alone: its state (docs/protocol.md §3), which lines
//! are accepted in that state, its login-failure count, its deadlines, and its Lb delivery queue
//! with at most one message outstanding. What needs other clients (the online registry,
//! routing) belongs to the [`Server`](super::Server) hub, which calls in here.

use std::collections::VecDeque;
// Addresses are plain values; `core::net` holds them without any socket machinery.
use core::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::NodeId;
use crate::protocol::{is_receipt, Frame, LineFramer, Request, Response};

/// Names one `/to` or `/toall` the server accepted, until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One message waiting for, or out on, a recipient's Lb.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The node its sender is on (in a single server, always that server's own).
    pub origin: NodeId,
    /// The request it belongs to, on the origin node.
    pub request: RequestId,
    /// The recipient's slot in that request's [`BroadcastAggregator`](super::BroadcastAggregator).
    pub slot: usize,
    /// The exact `/from …` or `/broadcastfrom …` line, shared by all recipients of a `/toall`;
    /// empty once sent.
    pub line: Bytes,
}

/// Where a session is in docs/protocol.md §3. Each variant holds what is valid in that state.
#[derive(Debug)]
pub enum SessionState {
    /// Connected, not logged in.
    Unauthenticated {
        /// Failed `/login`s so far on this connection.
        failures: u32,
        /// When the connection is closed unless a login succeeds.
        login_deadline: Instant,
        /// The user whose hashed password is being checked off the event loop; no further
        /// line is read until the check is back.
        checking: Option<Vec<u8>>,
    },
    /// Logged in, no `/port` yet.
    Authenticated {
        /// The user, now online.
        user: Vec<u8>,
    },
    /// `/port` received; the server is connecting Lb.
    ConnectingLb {
        /// The user, online.
        user: Vec<u8>,
        /// When the attempt counts as failed (`202`).
        connect_deadline: Instant,
    },
    /// Lb is up: chat requests are served and messages delivered.
    Ready {
        /// The user, online.
        user: Vec<u8>,
        /// The sender's own request being served; no further line is read until it is answered.
        awaiting: Option<RequestId>,
        /// Deliveries to this user.
        lb: Mailbox,
    },
}

/// Deliveries to one recipient: at most one outstanding, the rest in arrival order.
#[derive(Debug)]
pub struct Mailbox {
    framer: LineFramer,
    queue: VecDeque<Queued>,
    outstanding: Option<Outstanding>,
}

/// The delivery written to Lb and not yet acknowledged.
#[derive(Debug)]
struct Outstanding {
    queued: Queued,
    /// When it was handed out to be written.
    sent: Instant,
    /// When its `302` is due.
    ack_deadline: Instant,
}

/// Why [`ServerSession::enqueue`] refused a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The user has no Lb (yet, or any more).
    NotReady,
    /// `max_queue` messages wait already.
    Full,
}

/// What the hub must do for a line the session accepted. Lines the session can answer alone
/// come back as [`Step::Reply`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'l> {
    /// Send this answer; nothing else changes.
    Reply(Response<'static>),
    /// Check these credentials against the users and the online registry.
    Login {
        /// The claimed user name.
        user: &'l [u8],
        /// The password offered.
        password: &'l [u8],
    },
    /// Connect Lb to the client's address at this port.
    ConnectLb(SocketAddr),
    /// Answer with the online users.
    List,
    /// Deliver `content` to `target`.
    To {
        /// The recipient.
        target: &'l [u8],
        /// The chat text.
        content: &'l [u8],
    },
    /// Deliver `content` to every other online user.
    ToAll {
        /// The chat text.
        content: &'l [u8],
    },
    /// Answer `310` and end the session.
    Exit,
}

/// What an Lb line meant.
#[derive(Debug, PartialEq, Eq)]
pub enum LbEvent {
    /// The outstanding delivery was acknowledged.
    Acked {
        /// The node of its sender.
        origin: NodeId,
        /// The request it belonged to.
        request: RequestId,
        /// The recipient's slot in it.
        slot: usize,
        /// When it was handed out to be written, for the ack latency.
        sent: Instant,
    },
    /// Anything but a `302` for an outstanding delivery: the session must end (§3).
    Violation,
}

/// The server's state for one client.
#[derive(Debug)]
pub struct ServerSession {
    peer: SocketAddr,
    state: SessionState,
    framer: LineFramer,
    /// Bytes read from La but not yet framed, because a request was in progress.
    unread: Vec<u8>,
}

impl ServerSession {
    /// A fresh connection from `peer`, accepted at `now`.
    pub(crate) fn new(now: Instant, peer: SocketAddr, config: &super::ServerConfig) -> Self {
        ServerSession {
            peer,
            state: SessionState::Unauthenticated {
                failures: 0,
                login_deadline: now + config.login_timeout,
                checking: None,
            },
            framer: LineFramer::new(config.max_line),
            unread: Vec::new(),
        }
    }

    /// The address La came from.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current state.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&[u8]> {
        match &self.state {
            SessionState::Unauthenticated { .. } => None,
            SessionState::Authenticated { user }
            | SessionState::ConnectingLb { user, .. }
            | SessionState::Ready { user, .. } => Some(user),
        }
    }

    /// Whether the next La line may be read: no request of this client is being served.
    pub fn is_reading(&self) -> bool {
        match &self.state {
            SessionState::Unauthenticated { checking, .. } => checking.is_none(),
            SessionState::Authenticated { .. } => true,
            SessionState::ConnectingLb { .. } => false,
            SessionState::Ready { awaiting, .. } => awaiting.is_none(),
        }
    }

    /// Whether Lb is up, so messages can be queued for this user.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, SessionState::Ready { .. })
    }

    /// The login or Lb-connect deadline, whichever this state has.
    pub fn state_deadline(&self) -> Option<Instant> {
        match self.state {
            SessionState::Unauthenticated { login_deadline, .. } => Some(login_deadline),
            SessionState::ConnectingLb {
                connect_deadline, ..
            } => Some(connect_deadline),
            _ => None,
        }
    }

    /// When the outstanding delivery times out, if one is out.
    pub fn ack_deadline(&self) -> Option<Instant> {
        match &self.state {
            SessionState::Ready { lb, .. } => lb.outstanding.as_ref().map(|out| out.ack_deadline),
            _ => None,
        }
    }

    /// Takes the La framer and unread bytes out, so the hub can frame lines while it changes
    /// other sessions; [`ServerSession::restore_input`] puts them back.
    pub(crate) fn take_input(&mut self) -> (LineFramer, Vec<u8>) {
        let max_line = self.framer.max_line();
        (
            std::mem::replace(&mut self.framer, LineFramer::new(max_line)),
            std::mem::take(&mut self.unread),
        )
    }

    /// Puts back what [`ServerSession::take_input`] took, less the first `framed` bytes (the
    /// buffer itself, so that the next read does not allocate another).
    pub(crate) fn restore_input(&mut self, framer: LineFramer, mut unread: Vec<u8>, framed: usize) {
        self.framer = framer;
        unread.drain(..framed.min(unread.len()));
        self.unread = unread;
    }

    /// Keeps bytes read from La until they can be framed.
    pub(crate) fn push_unread(&mut self, data: &[u8]) {
        self.unread.extend_from_slice(data);
    }

    /// Whether bytes read earlier are still waiting to be framed.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }

    /// Decides what one La frame means in the current state. Malformed and out-of-state
    /// lines are answered `401` here; the rest go to the hub.
    pub(crate) fn on_frame<'l>(
        &mut self,
        now: Instant,
        frame: Frame<'l>,
        config: &super::ServerConfig,
    ) -> Step<'l> {
        let unrecognized = Step::Reply(Response::Unrecognized);
        let Frame::Line(line) = frame else {
            return unrecognized;
        };
        let Ok(request) = Request::parse(line) else {
            return unrecognized;
        };
        if request == Request::Exit {
            return Step::Exit;
        }
        match (&mut self.state, request) {
            (SessionState::Unauthenticated { .. }, Request::Login { user, password }) => {
                Step::Login { user, password }
            }
            (SessionState::Authenticated { user }, Request::Port(port)) => {
                let user = std::mem::take(user);
                self.state = SessionState::ConnectingLb {
                    user,
                    connect_deadline: now + config.connect_timeout,
                };
                Step::ConnectLb(SocketAddr::new(self.peer.ip(), port))
            }
            (SessionState::Ready { awaiting: None, .. }, Request::List) => Step::List,
            (SessionState::Ready { awaiting: None, .. }, Request::To { target, content }) => {
                Step::To { target, content }
            }
            (SessionState::Ready { awaiting: None, .. }, Request::ToAll { content }) => {
                Step::ToAll { content }
            }
            _ => unrecognized,
        }
    }

    /// A login succeeded: the session is now Authenticated as `user`.
    pub(crate) fn logged_in(&mut self, user: &[u8]) {
        self.state = SessionState::Authenticated {
            user: user.to_vec(),
        };
    }

    /// The password of `user` is being checked off the loop; lines wait until it is back.
    pub(crate) fn start_check(&mut self, user: &[u8]) {
        if let SessionState::Unauthenticated { checking, .. } = &mut self.state {
            *checking = Some(user.to_vec());
        }
    }

    /// The check started by [`ServerSession::start_check`] is back: the user it was for, or
    /// `None` if none was running (a late or stray result).
    pub(crate) fn finish_check(&mut self) -> Option<Vec<u8>> {
        match &mut self.state {
            SessionState::Unauthenticated { checking, .. } => checking.take(),
            _ => None,
        }
    }

    /// Whether a password check is under way (its result not back yet).
    pub(crate) fn is_checking(&self) -> bool {
        matches!(
            self.state,
            SessionState::Unauthenticated {
                checking: Some(_),
                ..
            }
        )
    }

    /// A login failed. Returns whether the connection has now used up its attempts.
    pub(crate) fn login_failed(&mut self, max_failures: u32) -> bool {
        match &mut self.state {
            SessionState::Unauthenticated { failures, .. } => {
                *failures += 1;
                *failures >= max_failures
            }
            _ => false,
        }
    }

    /// Lb is connected: the session becomes Ready, Lb's lines bounded as La's are. Returns
    /// false if it was not connecting.
    pub(crate) fn lb_connected(&mut self) -> bool {
        // La's bound, not the server's current one: a reload in between changes neither.
        let max_line = self.framer.max_line();
        let SessionState::ConnectingLb { user, .. } = &mut self.state else {
            return false;
        };
        let user = std::mem::take(user);
        self.state = SessionState::Ready {
            user,
            awaiting: None,
            lb: Mailbox {
                framer: LineFramer::new(max_line),
                queue: VecDeque::new(),
                outstanding: None,
            },
        };
        true
    }

    /// This client's own request is being served; its next line waits until it is answered.
    pub(crate) fn start_request(&mut self, request: RequestId) {
        if let SessionState::Ready { awaiting, .. } = &mut self.state {
            *awaiting = Some(request);
        }
    }

    /// The request this client is waiting on, if any.
    pub fn awaiting(&self) -> Option<RequestId> {
        match self.state {
            SessionState::Ready { awaiting, .. } => awaiting,
            _ => None,
        }
    }

    /// Whether something is in flight: its own request waiting for an answer, or a delivery
    /// to it waiting to be sent or acknowledged. A stopping server waits for these.
    pub fn is_busy(&self) -> bool {
        match &self.state {
            SessionState::Ready { awaiting, lb, .. } => {
                awaiting.is_some() || lb.outstanding.is_some() || !lb.queue.is_empty()
            }
            _ => false,
        }
    }

    /// The client's request was answered; it may send its next line.
    pub(crate) fn finish_request(&mut self, request: RequestId) -> bool {
        match &mut self.state {
            SessionState::Ready { awaiting, .. } if *awaiting == Some(request) => {
                *awaiting = None;
                true
            }
            _ => false,
        }
    }

    /// Queues a delivery to this user and says how many were waiting before it (queued or
    /// outstanding). It is refused when the user has no Lb or the queue already holds
    /// `max_queue` messages: that delivery fails at once.
    pub(crate) fn enqueue(&mut self, delivery: Queued, max_queue: usize) -> Result<usize, Refused> {
        match &mut self.state {
            SessionState::Ready { lb, .. } if lb.queue.len() < max_queue => {
                let waiting = lb.queue.len() + usize::from(lb.outstanding.is_some());
                lb.queue.push_back(delivery);
                Ok(waiting)
            }
            SessionState::Ready { .. } => Err(Refused::Full),
            _ => Err(Refused::NotReady),
        }
    }

    /// Drops the queued, not yet sent, deliveries of `request`, whose sender is gone: nobody
    /// waits for their answer, and a sender that leaves and comes back must not be able to
    /// pile up messages here. One already sent stays outstanding until its `302`. Returns
    /// how many were dropped.
    pub(crate) fn withdraw(&mut self, origin: NodeId, request: RequestId) -> usize {
        self.drop_queued(|queued| (queued.origin, queued.request) == (origin, request))
    }

    /// Drops the queued, not yet sent, deliveries whose senders were on `origin`, a node that
    /// is gone: nobody is left to hear their outcome. Returns how many were dropped.
    pub(crate) fn withdraw_from(&mut self, origin: NodeId) -> usize {
        self.drop_queued(|queued| queued.origin == origin)
    }

    /// Drops the queued, not yet sent, deliveries that `unwanted` picks; returns how many.
    fn drop_queued(&mut self, unwanted: impl Fn(&Queued) -> bool) -> usize {
        let SessionState::Ready { lb, .. } = &mut self.state else {
            return 0;
        };
        let before = lb.queue.len();
        lb.queue.retain(|queued| !unwanted(queued));
        before - lb.queue.len()
    }

    /// If nothing is outstanding, takes the next queued message out and returns its line to
    /// send at `now`; its `302` is due `ack_timeout` later.
    pub(crate) fn next_to_send(&mut self, now: Instant, ack_timeout: Duration) -> Option<Bytes> {
        let SessionState::Ready { lb, .. } = &mut self.state else {
            return None;
        };
        if lb.outstanding.is_some() {
            return None;
        }
        let mut queued = lb.queue.pop_front()?;
        // Moved, not cloned: once sent it is the transport's, and a clone of bytes made from a
        // `Vec` allocates.
        let line = std::mem::take(&mut queued.line);
        lb.outstanding = Some(Outstanding {
            queued,
            sent: now,
            ack_deadline: now + ack_timeout,
        });
        Some(line)
    }

    /// Frames bytes read from Lb and says what they mean. Stops at the first violation.
    pub(crate) fn on_lb_data(&mut self, mut data: &[u8], events: &mut Vec<LbEvent>) {
        let SessionState::Ready { lb, .. } = &mut self.state else {
            events.push(LbEvent::Violation);
            return;
        };
        while let Some(frame) = lb.framer.next_frame(&mut data) {
            let acked = match frame {
                Frame::Line(line) if is_receipt(line) => lb.outstanding.take(),
                _ => None,
            };
            match acked {
                Some(Outstanding { queued, sent, .. }) => events.push(LbEvent::Acked {
                    origin: queued.origin,
                    request: queued.request,
                    slot: queued.slot,
                    sent,
                }),
                None => {
                    events.push(LbEvent::Violation);
                    return;
                }
            }
        }
    }

    /// Every delivery to this user not yet acknowledged, outstanding first; they all fail
    /// because the session is ending.
    pub(crate) fn drain_deliveries(&mut self) -> Vec<Queued> {
        match &mut self.state {
            SessionState::Ready { lb, .. } => lb
                .outstanding
                .take()
                .map(|out| out.queued)
                .into_iter()
                .chain(lb.queue.drain(..))
                .collect(),
            _ => Vec::new(),
        }
    }
}
