//! Prometheus metrics: the series the hub and the driver count into, and the endpoint that
//! serves them (the `metrics` feature).
//!
//! The core reports each event to a [`Counters`] sink through its [`ServerMetrics`] handle;
//! here the sink is prometheus-client's counters, gauges and histograms, which are atomics
//! behind `Arc`: the hub (on its event loop) and the driver count into the same values that
//! the endpoint's thread encodes, with no lock between them but the histograms' short one.
//! Every labelled series is created up front, so counting is an atomic add, not a look-up, and
//! every series shows in a scrape from the start (at 0). [`MetricsEndpoint`] (`endpoint.rs`, an
//! HTTP server on a thread of its own) serves them.
//!
//! docs/metrics.md lists every metric with its labels and a sample scrape.

mod endpoint;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use simple_im_core::metrics::{
    Counters, DeliveryOutcome, LoginResult, RefusalReason, RequestKind, ServerMetrics, SessionEnd,
    Throttled,
};

pub use endpoint::MetricsEndpoint;

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
    /// By [`RefusalReason`]: the total cap, the per-address one, no TLS session, the throttle.
    connections_refused: [Counter; 5],
    users_online: Gauge,
    logins: [Counter; 4],
    /// By [`Throttled`] reason.
    throttled: [Counter; 5],
    /// By [`RequestKind`], then `303` / `304`.
    requests: [[Counter; 2]; 2],
    deliveries: [Counter; 9],
    queue_depth: Histogram,
    ack_latency: Histogram,
    sessions_ended: [Counter; 12],
    /// TLS sessions that failed (a plain-text peer, a refused handshake), on La and on Lb.
    tls_failures: [Counter; 2],
}

/// A labelled family of counters, one per label value, all created now.
type Labelled<const N: usize> = Family<[(&'static str, &'static str); N], Counter>;

/// Registers every metric in `registry` (names start with `im_`) and returns the handle that
/// the hub and the driver count into them with.
pub fn register(registry: &mut Registry) -> ServerMetrics {
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
    let connections_refused =
        RefusalReason::ALL.map(|reason| refused.get_or_create_owned(&[("reason", reason.label())]));
    registry.register(
        "connections_refused",
        "Client connections closed at once (a cap reached, no TLS session, or an address whose connections keep ending without a login), by reason",
        refused,
    );
    let family = Labelled::<1>::default();
    let throttled = Throttled::ALL.map(|r| family.get_or_create_owned(&[("reason", r.label())]));
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
    let tls_failures = ["La", "Lb"].map(|side| family.get_or_create_owned(&[("connection", side)]));
    registry.register(
            "tls_failures",
            "TLS sessions that failed (a plain-text peer, a refused handshake, a bad record), by connection",
            family,
        );
    ServerMetrics::new(Arc::new(Series {
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
    }))
}

impl Counters for Series {
    fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    fn connection_closed(&self) {
        self.connections_open.dec();
    }

    fn connection_refused(&self, reason: RefusalReason) {
        self.connections_refused[reason as usize].inc();
    }

    fn login(&self, result: LoginResult) {
        self.logins[result as usize].inc();
        if result == LoginResult::Ok {
            self.users_online.inc();
        }
    }

    fn throttled(&self, reason: Throttled) {
        self.throttled[reason as usize].inc();
    }

    fn user_left(&self) {
        self.users_online.dec();
    }

    fn answered(&self, request: RequestKind, delivered: bool) {
        self.requests[request as usize][usize::from(!delivered)].inc();
    }

    fn deliveries(&self, outcome: DeliveryOutcome, count: u64) {
        self.deliveries[outcome as usize].inc_by(count);
    }

    fn queued(&self, waiting: usize) {
        self.queue_depth.observe(waiting as f64);
    }

    fn acked(&self, latency: Duration) {
        self.ack_latency.observe(latency.as_secs_f64());
    }

    fn tls_failed(&self, lb: bool) {
        self.tls_failures[usize::from(lb)].inc();
    }

    fn session_ended(&self, reason: SessionEnd) {
        self.sessions_ended[reason as usize].inc();
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

/// `--metrics ADDR`: an endpoint listening on `address` serves, on a thread of its own, a
/// registry of every metric; returns the handle that counts into it. The error is one line.
pub fn serve(address: SocketAddr) -> Result<ServerMetrics, String> {
    let cannot = |error: io::Error| format!("cannot serve metrics on {address}: {error}");
    let endpoint = MetricsEndpoint::bind(address).map_err(cannot)?;
    let local = endpoint.local_addr();
    let mut registry = Registry::default();
    let metrics = register(&mut registry);
    endpoint.spawn(registry).map_err(cannot)?;
    log::info!("metrics on http://{local}/metrics");
    Ok(metrics)
}
