//! Prometheus metrics: what the hub and the driver count, and the endpoint that serves them.
//!
//! [`ServerMetrics`] is a handle on prometheus-client's counters, gauges and histograms, which
//! are atomics behind `Arc`: the hub (on its event loop) and the driver count into the same
//! values that the endpoint's thread encodes, with no lock between them but the histograms'
//! short one. Every labelled series is created up front, so counting is an atomic add, not a
//! look-up, and every series shows in a scrape from the start (at 0). The default handle counts
//! nothing and costs one branch per event. The core stays sans-IO: it only adds to atomics,
//! and this file names no socket or thread; [`MetricsEndpoint`] (`endpoint.rs`, an HTTP server
//! on a thread of its own) is for the binary.
//!
//! docs/metrics.md lists every metric with its labels and a sample scrape.

mod endpoint;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::driver::Refusal;
use crate::server::Throttled;

pub use endpoint::MetricsEndpoint;

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
}

impl SessionEnd {
    /// Every reason, in label order.
    pub const ALL: [SessionEnd; 10] = [
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
            | SessionEnd::LeaseLost => DeliveryOutcome::Offline,
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

/// The buckets of `im_delivery_queue_depth`: 0, then powers of two up to the default
/// `--max-queue` (1024).
fn queue_depth_buckets() -> impl Iterator<Item = f64> {
    std::iter::once(0.0).chain(exponential_buckets(1.0, 2.0, 11))
}

/// The buckets of `im_ack_latency_seconds`: 0.5 ms doubling to about 16 s, past the default
/// `--ack-timeout` (10 s).
fn ack_latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 16)
}

/// The series themselves; see the module documentation.
#[derive(Debug)]
struct Series {
    connections_open: Gauge,
    connections_accepted: Counter,
    /// By [`Refusal`]: the total cap, the per-address one, no TLS session, the throttle.
    connections_refused: [Counter; 4],
    users_online: Gauge,
    logins: [Counter; 4],
    /// By [`Throttled`] reason.
    throttled: [Counter; 5],
    /// By [`RequestKind`], then `303` / `304`.
    requests: [[Counter; 2]; 2],
    deliveries: [Counter; 9],
    queue_depth: Histogram,
    ack_latency: Histogram,
    sessions_ended: [Counter; 10],
    /// TLS sessions that failed (a plain-text peer, a refused handshake), on La and on Lb.
    tls_failures: [Counter; 2],
}

/// A labelled family of counters, one per label value, all created now.
type Labelled<const N: usize> = Family<[(&'static str, &'static str); N], Counter>;

/// What the server counts, shared by the hub, the driver and the endpoint. Cloning is cheap
/// (one `Arc`); [`ServerMetrics::default`] counts nothing.
#[derive(Clone, Debug, Default)]
pub struct ServerMetrics {
    series: Option<Arc<Series>>,
}

impl ServerMetrics {
    /// Registers every metric in `registry` (names start with `im_`) and returns the handle
    /// that counts into them.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("im");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections (La) with sockets open, lingering ones included",
            connections_open.clone(),
        );
        let connections_accepted = Counter::default();
        registry.register(
            "connections_accepted",
            "Client connections (La) accepted",
            connections_accepted.clone(),
        );
        let refused = Labelled::<1>::default();
        let connections_refused = [
            "max_connections",
            "max_per_ip",
            "tls_unavailable",
            "reconnects",
        ]
        .map(|reason| refused.get_or_create_owned(&[("reason", reason)]));
        registry.register(
            "connections_refused",
            "Client connections closed at once (a cap reached, no TLS session, or an address whose connections keep ending without a login), by reason",
            refused,
        );
        let family = Labelled::<1>::default();
        let throttled =
            Throttled::ALL.map(|r| family.get_or_create_owned(&[("reason", r.label())]));
        registry.register(
            "logins_throttled",
            "Logins answered 102 without a password check, and connections refused, by the budget that was spent",
            family,
        );
        let users_online = Gauge::default();
        registry.register(
            "users_online",
            "Users logged in on this server (in a cluster, on this node)",
            users_online.clone(),
        );
        let family = Labelled::<1>::default();
        let logins = LoginResult::ALL.map(|r| family.get_or_create_owned(&[("result", r.label())]));
        registry.register("logins", "Answers to /login, by result", family);
        let family = Labelled::<2>::default();
        let requests = [RequestKind::To, RequestKind::ToAll].map(|kind| {
            ["303", "304"].map(|answer| {
                family.get_or_create_owned(&[("request", kind.label()), ("answer", answer)])
            })
        });
        registry.register(
            "requests",
            "Answers to /to and /toall, by request and answer",
            family,
        );
        let family = Labelled::<1>::default();
        let deliveries =
            DeliveryOutcome::ALL.map(|o| family.get_or_create_owned(&[("outcome", o.label())]));
        registry.register(
            "deliveries",
            "Messages to one recipient each (a /toall has one per recipient), by outcome",
            family,
        );
        let queue_depth = Histogram::new(queue_depth_buckets());
        registry.register(
            "delivery_queue_depth",
            "Messages already waiting for the recipient (queued or unacknowledged) when one more is queued",
            queue_depth.clone(),
        );
        let ack_latency = Histogram::new(ack_latency_buckets());
        registry.register_with_unit(
            "ack_latency",
            "Time from writing a delivery to Lb to its 302",
            Unit::Seconds,
            ack_latency.clone(),
        );
        let family = Labelled::<1>::default();
        let sessions_ended =
            SessionEnd::ALL.map(|r| family.get_or_create_owned(&[("reason", r.label())]));
        registry.register(
            "sessions_ended",
            "Client connections ended by the server's core, by reason",
            family,
        );
        let family = Labelled::<1>::default();
        let tls_failures =
            ["La", "Lb"].map(|side| family.get_or_create_owned(&[("connection", side)]));
        registry.register(
            "tls_failures",
            "TLS sessions that failed (a plain-text peer, a refused handshake, a bad record), by connection",
            family,
        );
        ServerMetrics {
            series: Some(Arc::new(Series {
                connections_open,
                connections_accepted,
                connections_refused,
                users_online,
                logins,
                throttled,
                requests,
                deliveries,
                queue_depth,
                ack_latency,
                sessions_ended,
                tls_failures,
            })),
        }
    }

    /// Whether this handle counts (it was made by [`ServerMetrics::register`]).
    pub fn is_on(&self) -> bool {
        self.series.is_some()
    }

    /// A client connection was accepted; its sockets are open.
    pub fn connection_opened(&self) {
        if let Some(series) = &self.series {
            series.connections_accepted.inc();
            series.connections_open.inc();
        }
    }

    /// An accepted connection's sockets are all closed.
    pub fn connection_closed(&self) {
        if let Some(series) = &self.series {
            series.connections_open.dec();
        }
    }

    /// A connection was refused: a cap was reached, or no TLS session could be started.
    pub fn connection_refused(&self, refusal: &Refusal) {
        if let Some(series) = &self.series {
            let index = match refusal {
                Refusal::TooManyConnections { .. } => 0,
                Refusal::TooManyFromAddress { .. } => 1,
                Refusal::TlsUnavailable => 2,
                Refusal::Throttled => 3,
            };
            series.connections_refused[index].inc();
        }
    }

    /// A `/login` was answered.
    pub fn login(&self, result: LoginResult) {
        if let Some(series) = &self.series {
            series.logins[result as usize].inc();
            if result == LoginResult::Ok {
                series.users_online.inc();
            }
        }
    }

    /// A login or a connection was throttled.
    pub fn throttled(&self, reason: Throttled) {
        if let Some(series) = &self.series {
            series.throttled[reason as usize].inc();
        }
    }

    /// A logged-in user's session ended: one user fewer online.
    pub fn user_left(&self) {
        if let Some(series) = &self.series {
            series.users_online.dec();
        }
    }

    /// A `/to` or `/toall` was answered, `303` if `delivered`, else `304`.
    pub fn answered(&self, request: RequestKind, delivered: bool) {
        if let Some(series) = &self.series {
            series.requests[request as usize][usize::from(!delivered)].inc();
        }
    }

    /// One recipient's delivery is settled.
    pub fn delivery(&self, outcome: DeliveryOutcome) {
        if let Some(series) = &self.series {
            series.deliveries[outcome as usize].inc();
        }
    }

    /// `count` deliveries had the same outcome.
    pub fn deliveries(&self, outcome: DeliveryOutcome, count: usize) {
        if let (Some(series), 1..) = (&self.series, count) {
            series.deliveries[outcome as usize].inc_by(count as u64);
        }
    }

    /// A delivery was queued behind `waiting` others for its recipient.
    pub fn queued(&self, waiting: usize) {
        if let Some(series) = &self.series {
            series.queue_depth.observe(waiting as f64);
        }
    }

    /// A delivery was acknowledged `latency` after it was written.
    pub fn acked(&self, latency: Duration) {
        if let Some(series) = &self.series {
            series.ack_latency.observe(latency.as_secs_f64());
        }
    }

    /// A TLS session failed, on La (`lb == false`) or Lb.
    pub fn tls_failed(&self, lb: bool) {
        if let Some(series) = &self.series {
            series.tls_failures[usize::from(lb)].inc();
        }
    }

    /// A session ended.
    pub fn session_ended(&self, reason: SessionEnd) {
        if let Some(series) = &self.series {
            series.sessions_ended[reason as usize].inc();
        }
    }
}

/// The OpenMetrics text of `registry` (what Prometheus scrapes), ending with `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoding error would leave the text cut short,
    // which a scraper rejects for its missing `# EOF`.
    if let Err(error) = encode(&mut text, registry) {
        log::warn!("cannot encode the metrics: {error}");
    }
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
