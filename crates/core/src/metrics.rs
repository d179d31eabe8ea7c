//! What the server counts, as events: the hub and the driver report them through a
//! [`ServerMetrics`] handle to a [`Counters`] sink, and a metrics exporter (prometheus in the
//! `simple-im` server) implements the sink. The default handle counts nothing and costs one
//! branch per event.
//!
//! The enums here are the labels of the exported series; docs/metrics.md lists every metric.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a session (one client connection) ended: the `reason` label of
/// `im_sessions_ended_total`, and the word its log line ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client sent `/exit`.
    Exit,
    /// La reached end of file or failed.
    LaClosed,
    /// Lb reached end of file or a read on it failed.
    LbClosed,
    /// Writing to Lb failed, timed out, or fell too far behind.
    LbWriteFailed,
    /// No login within `--login-timeout`.
    LoginTimeout,
    /// `--max-login-failures` failed logins in a row.
    TooManyLoginFailures,
    /// Lb could not be connected (`202`).
    LbConnectFailed,
    /// A delivery was not acknowledged within `--ack-timeout`.
    AckTimeout,
    /// Something other than a `302` for an outstanding delivery came on Lb.
    WrongAck,
    /// A cluster node lost its lease and ended all its sessions.
    LeaseLost,
    /// The users file was reloaded without this session's user.
    Removed,
    /// The server stopped (SIGTERM/SIGINT) once its requests in flight were answered.
    Shutdown,
}

impl SessionEnd {
    /// Every reason, in label order.
    pub const ALL: [SessionEnd; 12] = [
        SessionEnd::Exit,
        SessionEnd::LaClosed,
        SessionEnd::LbClosed,
        SessionEnd::LbWriteFailed,
        SessionEnd::LoginTimeout,
        SessionEnd::TooManyLoginFailures,
        SessionEnd::LbConnectFailed,
        SessionEnd::AckTimeout,
        SessionEnd::WrongAck,
        SessionEnd::LeaseLost,
        SessionEnd::Removed,
        SessionEnd::Shutdown,
    ];

    /// The label value, also used in the log.
    pub fn label(self) -> &'static str {
        match self {
            SessionEnd::Exit => "exit",
            SessionEnd::LaClosed => "la_closed",
            SessionEnd::LbClosed => "lb_closed",
            SessionEnd::LbWriteFailed => "lb_write_failed",
            SessionEnd::LoginTimeout => "login_timeout",
            SessionEnd::TooManyLoginFailures => "too_many_login_failures",
            SessionEnd::LbConnectFailed => "lb_connect_failed",
            SessionEnd::AckTimeout => "ack_timeout",
            SessionEnd::WrongAck => "wrong_ack",
            SessionEnd::LeaseLost => "lease_lost",
            SessionEnd::Removed => "removed",
            SessionEnd::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What became of one message to one recipient: the `outcome` label of `im_deliveries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The recipient acknowledged it (`302`).
    Delivered,
    /// The recipient was not online with an Lb, or left (`/exit`, La closed, its node's lease
    /// lost, …) before acknowledging it.
    Offline,
    /// The recipient already had `--max-queue` messages waiting.
    QueueFull,
    /// The recipient's session ended on an ack timeout while it waited (outstanding or queued).
    AckTimeout,
    /// The recipient's session ended on a wrong acknowledgement while it waited.
    WrongAck,
    /// The recipient's Lb closed while it waited.
    LbClosed,
    /// Writing to the recipient's Lb failed while it waited.
    WriteFailed,
    /// Cluster: the recipient's node went down.
    NodeDown,
    /// The sender left before it was sent, so it was dropped unsent and nobody is answered.
    Withdrawn,
}

impl DeliveryOutcome {
    /// Every outcome, in label order.
    pub const ALL: [DeliveryOutcome; 9] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Offline,
        DeliveryOutcome::QueueFull,
        DeliveryOutcome::AckTimeout,
        DeliveryOutcome::WrongAck,
        DeliveryOutcome::LbClosed,
        DeliveryOutcome::WriteFailed,
        DeliveryOutcome::NodeDown,
        DeliveryOutcome::Withdrawn,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Offline => "offline",
            DeliveryOutcome::QueueFull => "queue_full",
            DeliveryOutcome::AckTimeout => "ack_timeout",
            DeliveryOutcome::WrongAck => "wrong_ack",
            DeliveryOutcome::LbClosed => "lb_closed",
            DeliveryOutcome::WriteFailed => "write_failed",
            DeliveryOutcome::NodeDown => "node_down",
            DeliveryOutcome::Withdrawn => "withdrawn",
        }
    }

    /// The outcome of a delivery still waiting when its recipient's session ended for `reason`.
    pub fn of_ended_session(reason: SessionEnd) -> Self {
        match reason {
            SessionEnd::AckTimeout => DeliveryOutcome::AckTimeout,
            SessionEnd::WrongAck => DeliveryOutcome::WrongAck,
            SessionEnd::LbClosed => DeliveryOutcome::LbClosed,
            SessionEnd::LbWriteFailed => DeliveryOutcome::WriteFailed,
            SessionEnd::Exit
            | SessionEnd::LaClosed
            | SessionEnd::LoginTimeout
            | SessionEnd::TooManyLoginFailures
            | SessionEnd::LbConnectFailed
            | SessionEnd::LeaseLost
            | SessionEnd::Removed
            | SessionEnd::Shutdown => DeliveryOutcome::Offline,
        }
    }
}

/// How a `/login` was answered: the `result` label of `im_logins_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    /// `101`.
    Ok,
    /// `102`: no such user, or the wrong password (not told apart, as on the wire).
    BadCredentials,
    /// `102`: the right password, but the user is online already.
    AlreadyOnline,
    /// `102` unchecked: the login throttle refused it (`im_logins_throttled_total` says why).
    Throttled,
}

impl LoginResult {
    /// Every result, in label order.
    pub const ALL: [LoginResult; 4] = [
        LoginResult::Ok,
        LoginResult::BadCredentials,
        LoginResult::AlreadyOnline,
        LoginResult::Throttled,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::BadCredentials => "bad_credentials",
            LoginResult::AlreadyOnline => "already_online",
            LoginResult::Throttled => "throttled",
        }
    }
}

/// Which chat request was answered: the `request` label of `im_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `/to`.
    To,
    /// `/toall`.
    ToAll,
}

impl RequestKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RequestKind::To => "to",
            RequestKind::ToAll => "toall",
        }
    }
}

/// Why a connection was closed at once: the `reason` label of `im_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// `--max-connections` are open already.
    MaxConnections,
    /// `--max-per-ip` are open from the peer's address already.
    MaxPerIp,
    /// The server has a certificate but could not start a TLS session.
    TlsUnavailable,
    /// The peer's address keeps ending its connections without a login
    /// (`--throttle-reconnects`).
    Reconnects,
    /// The server is stopping (SIGTERM/SIGINT).
    Stopping,
}

impl RefusalReason {
    /// Every reason, in label order.
    pub const ALL: [RefusalReason; 5] = [
        RefusalReason::MaxConnections,
        RefusalReason::MaxPerIp,
        RefusalReason::TlsUnavailable,
        RefusalReason::Reconnects,
        RefusalReason::Stopping,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::MaxConnections => "max_connections",
            RefusalReason::MaxPerIp => "max_per_ip",
            RefusalReason::TlsUnavailable => "tls_unavailable",
            RefusalReason::Reconnects => "reconnects",
            RefusalReason::Stopping => "stopping",
        }
    }
}

/// Why a login or a connection was refused without a password check: the `reason` label of
/// `im_logins_throttled_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttled {
    /// The address's budget is spent.
    Address,
    /// The address's budget for this account is spent.
    AddressAccount,
    /// The account's shared budget is spent.
    Account,
    /// The queue of password checks is full.
    Busy,
    /// The address's connections kept ending without a login (a refused connection).
    Reconnects,
}

impl Throttled {
    /// Every reason, in label order.
    pub const ALL: [Throttled; 5] = [
        Throttled::Address,
        Throttled::AddressAccount,
        Throttled::Account,
        Throttled::Busy,
        Throttled::Reconnects,
    ];

    /// The label value, also used in the log.
    pub fn label(self) -> &'static str {
        match self {
            Throttled::Address => "address",
            Throttled::AddressAccount => "address_account",
            Throttled::Account => "account",
            Throttled::Busy => "busy",
            Throttled::Reconnects => "reconnects",
        }
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where the server's counts go: one method per event. Implemented by a metrics exporter;
/// every method is called on the event loop and must not block (an atomic add, say).
pub trait Counters: Send + Sync + fmt::Debug {
    /// A client connection was accepted; its sockets are open.
    fn connection_opened(&self);
    /// An accepted connection's sockets are all closed.
    fn connection_closed(&self);
    /// A connection was refused: a cap was reached, or no TLS session could be started.
    fn connection_refused(&self, reason: RefusalReason);
    /// A `/login` was answered; after [`LoginResult::Ok`] one more user is online.
    fn login(&self, result: LoginResult);
    /// A login was answered `102` unchecked, or a connection refused, by the login throttle.
    fn throttled(&self, reason: Throttled);
    /// A logged-in user's session ended: one user fewer online.
    fn user_left(&self);
    /// A `/to` or `/toall` was answered, `303` if `delivered`, else `304`.
    fn answered(&self, request: RequestKind, delivered: bool);
    /// `count` deliveries (one per recipient) were settled with the same outcome.
    fn deliveries(&self, outcome: DeliveryOutcome, count: u64);
    /// A delivery was queued behind `waiting` others for its recipient.
    fn queued(&self, waiting: usize);
    /// A delivery was acknowledged `latency` after it was written.
    fn acked(&self, latency: Duration);
    /// A TLS session failed, on La (`lb == false`) or Lb.
    fn tls_failed(&self, lb: bool);
    /// A session ended.
    fn session_ended(&self, reason: SessionEnd);
}

/// What the server counts into, shared by the hub and the driver. Cloning is cheap (one
/// `Arc`); [`ServerMetrics::default`] counts nothing.
#[derive(Clone, Debug, Default)]
pub struct ServerMetrics {
    counters: Option<Arc<dyn Counters>>,
}

impl ServerMetrics {
    /// A handle that counts into `counters`.
    pub fn new(counters: Arc<dyn Counters>) -> Self {
        ServerMetrics {
            counters: Some(counters),
        }
    }

    /// Whether this handle counts (it was made by [`ServerMetrics::new`]).
    pub fn is_on(&self) -> bool {
        self.counters.is_some()
    }

    /// Hands the sink to `count`, if there is one.
    fn count(&self, count: impl FnOnce(&dyn Counters)) {
        if let Some(counters) = &self.counters {
            count(counters.as_ref());
        }
    }

    /// See [`Counters::connection_opened`].
    pub fn connection_opened(&self) {
        self.count(|counters| counters.connection_opened());
    }

    /// See [`Counters::connection_closed`].
    pub fn connection_closed(&self) {
        self.count(|counters| counters.connection_closed());
    }

    /// See [`Counters::connection_refused`].
    pub fn connection_refused(&self, reason: impl Into<RefusalReason>) {
        let reason = reason.into();
        self.count(|counters| counters.connection_refused(reason));
    }

    /// See [`Counters::login`].
    pub fn login(&self, result: LoginResult) {
        self.count(|counters| counters.login(result));
    }

    /// See [`Counters::throttled`].
    pub fn throttled(&self, reason: Throttled) {
        self.count(|counters| counters.throttled(reason));
    }

    /// See [`Counters::user_left`].
    pub fn user_left(&self) {
        self.count(|counters| counters.user_left());
    }

    /// See [`Counters::answered`].
    pub fn answered(&self, request: RequestKind, delivered: bool) {
        self.count(|counters| counters.answered(request, delivered));
    }

    /// One recipient's delivery is settled.
    pub fn delivery(&self, outcome: DeliveryOutcome) {
        self.deliveries(outcome, 1);
    }

    /// `count` deliveries had the same outcome (none: nothing is counted).
    pub fn deliveries(&self, outcome: DeliveryOutcome, count: usize) {
        if count > 0 {
            self.count(|counters| counters.deliveries(outcome, count as u64));
        }
    }

    /// See [`Counters::queued`].
    pub fn queued(&self, waiting: usize) {
        self.count(|counters| counters.queued(waiting));
    }

    /// See [`Counters::acked`].
    pub fn acked(&self, latency: Duration) {
        self.count(|counters| counters.acked(latency));
    }

    /// See [`Counters::tls_failed`].
    pub fn tls_failed(&self, lb: bool) {
        self.count(|counters| counters.tls_failed(lb));
    }

    /// See [`Counters::session_ended`].
    pub fn session_ended(&self, reason: SessionEnd) {
        self.count(|counters| counters.session_ended(reason));
    }
}
