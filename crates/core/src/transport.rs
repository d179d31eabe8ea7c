//! One socket's life as a sans-IO machine: what to write, when to read, when to give up, and
//! how to close without losing the last answer.
//!
//! A runtime owns the socket and does what [`Transport`] says; the transport decides nothing
//! about the protocol and touches no socket or clock (every `now` is an argument). The rules:
//!
//! - Bytes the socket has not taken wait in an outbox. Past [`TransportConfig::max_unwritten`],
//!   or when the message at the front is not written within [`TransportConfig::write_timeout`],
//!   the socket fails and is reported closed, so one slow peer cannot hold up the others or
//!   grow the server's memory.
//! - [`ReadPolicy::OnGrant`] reads once per [`Transport::grant_read`], and only once the answers
//!   to what was read before are written, so a client that does not read its answers is held
//!   back by TCP as well.
//! - [`Transport::close`] writes what is queued (all of it within one write timeout), shuts the
//!   sending side, then discards what the peer still sends until the peer closes its end (or
//!   [`TransportConfig::close_linger`] has passed), and only then releases the socket: closing
//!   a socket with unread input resets it, and a reset can destroy the last answer (`310`,
//!   `202`, `102`) before the client reads it.
//!
//! It is driven like the other machines: feed what happened, drain [`Transport::poll_action`],
//! write what [`Transport::poll_transmit`] gives, then wait for the socket or
//! [`Transport::poll_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};

/// The room (in messages) an idle socket's outbox keeps between messages: what a first
/// `push_back` allocates anyway (128 bytes), so that a socket written once per message does
/// not allocate its outbox once per message.
const IDLE_QUEUE_ROOM: usize = 4;

/// Per-socket limits: how long and how much a peer may make the server wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// A queued message must be written within this, from when it became the front of the
    /// queue; also the bound on writing everything queued once closed.
    pub write_timeout: Duration,
    /// Bytes that may wait unwritten; see [`Transport::send`].
    pub max_unwritten: usize,
    /// After the close: how long to wait for the peer's end of file before giving up.
    pub close_linger: Duration,
}

impl Default for TransportConfig {
    /// 10 s to write a message, 1 MiB waiting, 2 s of linger.
    fn default() -> Self {
        TransportConfig {
            write_timeout: Duration::from_secs(10),
            max_unwritten: 1024 * 1024,
            close_linger: Duration::from_secs(2),
        }
    }
}

/// When the socket is read for the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// La: once per [`Transport::grant_read`], and only once everything queued is written (so
    /// a client that does not read its answers is held back by TCP).
    OnGrant,
    /// Lb: whenever there is something.
    Always,
}

/// What the driver must do for this socket, drained by [`Transport::poll_action`] until `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportAction {
    /// Tell the core this socket is gone (end of file, read or write error, write timeout,
    /// overflow). Given at most once per transport, and never after [`Transport::close`].
    ReportClosed,
    /// Everything queued before the close is written: shut the sending side, so the peer reads
    /// end of file right after the last answer.
    ShutdownWrite,
    /// Shut both directions now (a failed socket, so a blocked writer wakes up).
    ShutdownBoth,
    /// Finished with: drop (close) the socket. Given exactly once, last; nothing follows.
    Release,
}

/// Where the socket is in its life; each state holds exactly what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Carrying bytes for the core.
    Open {
        /// When the message at the front of the queue must be written by; `None` while
        /// nothing waits.
        write_by: Option<Instant>,
        /// End of file or a read error was seen: nothing more is read.
        read_ended: bool,
        /// An [`ReadPolicy::OnGrant`] read allowed and not used yet.
        granted: bool,
    },
    /// Failed (and reported) before the core closed it: shut, nothing queued.
    Failed,
    /// Closed by the core: writing what is queued, all of it by `by`.
    Flushing { by: Instant },
    /// Written and shut for sending: discarding what the peer sends until it closes its end
    /// or `until` passes.
    Lingering { until: Instant },
    /// Released.
    Finished,
}

/// One socket's state machine; see the [module](self) documentation.
#[derive(Clone, Debug)]
pub struct Transport {
    config: TransportConfig,
    policy: ReadPolicy,
    state: State,
    /// Bytes not written yet, oldest first; the front may be partly written.
    queue: VecDeque<Bytes>,
    /// Their total length.
    unwritten: usize,
    /// The front was handed out by `poll_transmit` and its write has not ended.
    in_flight: bool,
    /// `ReportClosed` was given: it never is again.
    reported: bool,
    actions: VecDeque<TransportAction>,
}

impl Transport {
    /// A transport for a freshly connected socket.
    pub fn new(config: TransportConfig, policy: ReadPolicy) -> Self {
        Transport {
            config,
            policy,
            state: State::Open {
                write_by: None,
                read_ended: false,
                granted: false,
            },
            queue: VecDeque::new(),
            unwritten: 0,
            in_flight: false,
            reported: false,
            actions: VecDeque::new(),
        }
    }

    /// Queues bytes to write. If bytes are already waiting and these would take the total past
    /// `max_unwritten`, the socket fails instead (queue dropped, `ShutdownBoth` +
    /// `ReportClosed`): the peer does not keep up. One message alone may exceed the cap, so a
    /// big answer to an idle peer still goes out. On a failed, closing or finished socket the
    /// bytes are dropped silently (its failure was reported already, or the core closed it).
    /// Empty bytes are ignored.
    pub fn send(&mut self, now: Instant, bytes: Bytes) {
        let State::Open { write_by, .. } = &mut self.state else {
            return;
        };
        if bytes.is_empty() {
            return;
        }
        if self.unwritten > 0 && self.unwritten + bytes.len() > self.config.max_unwritten {
            self.fail();
            return;
        }
        if self.queue.is_empty() {
            *write_by = Some(now + self.config.write_timeout);
        }
        self.unwritten += bytes.len();
        self.queue.push_back(bytes);
    }

    /// The core allows one more read (La's `Output::ReadLa`); a no-op for
    /// [`ReadPolicy::Always`], which needs no permission.
    pub fn grant_read(&mut self) {
        if let (ReadPolicy::OnGrant, State::Open { granted, .. }) = (self.policy, &mut self.state) {
            *granted = true;
        }
    }

    /// Whether the runtime should read this socket now. Open: for [`ReadPolicy::OnGrant`], a
    /// grant, nothing unwritten and no read end seen; for [`ReadPolicy::Always`], no read end
    /// seen. Lingering: always, to see the peer's end of file (the data is discarded).
    /// Otherwise never.
    pub fn wants_read(&self) -> bool {
        match self.state {
            State::Open {
                read_ended: true, ..
            } => false,
            State::Open { granted, .. } => match self.policy {
                ReadPolicy::OnGrant => granted && self.unwritten == 0,
                ReadPolicy::Always => true,
            },
            State::Lingering { .. } => true,
            State::Failed | State::Flushing { .. } | State::Finished => false,
        }
    }

    /// The runtime read `n > 0` bytes. `true`: they are for the core (Open, before a read
    /// end); `false`: discard them (lingering, or any other state). Uses up an
    /// [`ReadPolicy::OnGrant`] grant.
    pub fn handle_read(&mut self, _now: Instant, _n: usize) -> bool {
        match &mut self.state {
            State::Open {
                read_ended: false,
                granted,
                ..
            } => {
                *granted = false;
                true
            }
            _ => false,
        }
    }

    /// The runtime saw end of file or a read error. Open: nothing more is read, and the core
    /// is told (`ReportClosed`, once). Lingering: the peer is done, so the socket is released
    /// (`ShutdownBoth`, `Release`). Otherwise ignored.
    pub fn handle_read_end(&mut self, _now: Instant) {
        match &mut self.state {
            State::Open { read_ended, .. } => {
                *read_ended = true;
                self.report_closed();
            }
            State::Lingering { .. } => self.release(),
            _ => {}
        }
    }

    /// Whether what is read now goes to the core (open, no read end seen), grant or not: a TLS
    /// layer under the core reads its handshake before any grant is used.
    pub fn takes_input(&self) -> bool {
        matches!(
            self.state,
            State::Open {
                read_ended: false,
                ..
            }
        )
    }

    /// The next bytes to write: the front of the queue (a cheap clone, not removed), only
    /// when no write is in flight; it is in flight until [`Transport::handle_written`] or
    /// [`Transport::handle_write_error`]. `None` when nothing waits.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.peek_transmit()?;
        self.queue.front().cloned()
    }

    /// [`Transport::poll_transmit`] for a runtime that writes at once from the loop: the same
    /// chunk, borrowed. Cloning the front the first time allocates (a `Bytes` made from a
    /// `Vec` shares its buffer only once asked to), which a borrow does not.
    pub fn peek_transmit(&mut self) -> Option<&[u8]> {
        if self.in_flight {
            return None;
        }
        let front = self.queue.front()?;
        self.in_flight = true;
        Some(front)
    }

    /// `n` bytes of the chunk from [`Transport::poll_transmit`] were written (0 or part of it,
    /// for a non-blocking write: the rest stays at the front). The next message's write
    /// deadline starts when it becomes the front. Once the queue empties after the close, the
    /// sending side is shut (`ShutdownWrite`) and the socket lingers for `close_linger`, but
    /// no later than `close_linger` after the flush deadline, so a close always ends within
    /// `write_timeout + close_linger`.
    pub fn handle_written(&mut self, now: Instant, n: usize) {
        if !std::mem::take(&mut self.in_flight) {
            return;
        }
        let Some(front) = self.queue.front_mut() else {
            return;
        };
        let n = n.min(front.len());
        front.advance(n);
        self.unwritten -= n;
        if !front.is_empty() {
            return;
        }
        self.queue.pop_front();
        let more = !self.queue.is_empty();
        if !more && self.queue.capacity() > IDLE_QUEUE_ROOM {
            // An idle socket keeps no room a burst grew: only what the next message needs.
            self.queue = VecDeque::new();
        }
        match &mut self.state {
            State::Open { write_by, .. } => {
                *write_by = more.then(|| now + self.config.write_timeout);
            }
            State::Flushing { by } if !more => {
                let until = now.min(*by) + self.config.close_linger;
                self.shutdown_write(until);
            }
            _ => {}
        }
    }

    /// A write failed. Open: the socket fails (`ShutdownBoth`, `ReportClosed`). Flushing: it
    /// is finished with (`ShutdownBoth`, `Release`). Otherwise ignored.
    pub fn handle_write_error(&mut self, _now: Instant) {
        self.in_flight = false;
        match self.state {
            State::Open { .. } => self.fail(),
            State::Flushing { .. } => self.release(),
            _ => {}
        }
    }

    /// The core closed the connection. Open: everything queued is to be written by
    /// `now + write_timeout` (with nothing queued, the sending side is shut at once and the
    /// socket lingers). Failed: released at once. Otherwise a no-op. The core hears nothing
    /// more of this socket.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Open { .. } if self.queue.is_empty() => {
                self.shutdown_write(now + self.config.close_linger);
            }
            State::Open { .. } => {
                self.state = State::Flushing {
                    by: now + self.config.write_timeout,
                };
            }
            State::Failed => {
                self.state = State::Finished;
                self.actions.push_back(TransportAction::Release);
            }
            _ => {}
        }
    }

    /// Fires what is due at `now`: an unwritten front message past its write deadline fails
    /// the socket; a flush or a linger past its end releases it.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Open {
                write_by: Some(by), ..
            } if now >= by => self.fail(),
            State::Flushing { by } if now >= by => self.release(),
            State::Lingering { until } if now >= until => self.release(),
            _ => {}
        }
    }

    /// The next deadline, if any: the front message's write deadline, the flush deadline or
    /// the end of the linger. Once [`Transport::poll_action`] is drained, nothing changes
    /// until new input or this time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open { write_by, .. } => write_by,
            State::Flushing { by } => Some(by),
            State::Lingering { until } => Some(until),
            State::Failed | State::Finished => None,
        }
    }

    /// The next thing the driver must do, oldest first.
    pub fn poll_action(&mut self) -> Option<TransportAction> {
        self.actions.pop_front()
    }

    /// Bytes queued and not yet written, including the unwritten rest of an in-flight chunk.
    pub fn unwritten(&self) -> usize {
        self.unwritten
    }

    /// Writing failed (an error, the write deadline, or the unwritten cap) before any close:
    /// what [`TransportAction::ReportClosed`] reported was a write failure, not an end of file.
    pub fn has_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// `Release` was given: the socket is finished with.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// [`Transport::close`] was called: flushing, lingering, or finished since.
    pub fn is_closing(&self) -> bool {
        matches!(
            self.state,
            State::Flushing { .. } | State::Lingering { .. } | State::Finished
        )
    }

    /// Drops the queue, shuts the socket and reports it to the core.
    fn fail(&mut self) {
        self.queue = VecDeque::new();
        self.unwritten = 0;
        self.in_flight = false;
        self.state = State::Failed;
        self.actions.push_back(TransportAction::ShutdownBoth);
        self.report_closed();
    }

    fn report_closed(&mut self) {
        if !std::mem::replace(&mut self.reported, true) {
            self.actions.push_back(TransportAction::ReportClosed);
        }
    }

    /// Everything is written: shut the sending side and wait for the peer's end until `until`.
    fn shutdown_write(&mut self, until: Instant) {
        self.state = State::Lingering { until };
        self.actions.push_back(TransportAction::ShutdownWrite);
    }

    /// Shuts the socket both ways and lets it go, for good.
    fn release(&mut self) {
        self.queue = VecDeque::new();
        self.unwritten = 0;
        self.in_flight = false;
        self.state = State::Finished;
        self.actions.push_back(TransportAction::ShutdownBoth);
        self.actions.push_back(TransportAction::Release);
    }
}
