//! What the hub and the driver count for Prometheus: scripted conversations through the
//! sans-IO [`Server`] (on the in-memory network of `common/sim.rs`) and through
//! [`ServerDriver`], then the exact values of the scrape.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use simple_im::metrics::{register, render};
use simple_im_core::driver::{DriverAction, DriverConfig, Refusal, ServerDriver, SocketId};
use simple_im_core::server::{ConnId, ServerConfig};

use common::scrape::Scrape;
use common::sim::{appendix_users, ClientId, LbMode, Net};

const DELIVERED: &str = "303 Message delivery successful";
const FAILED: &str = "304 Message delivery failed";

/// A network whose server counts into a fresh registry.
fn metered(config: ServerConfig) -> (Net, Registry) {
    let mut net = Net::new(appendix_users(), config);
    let mut registry = Registry::default();
    net.server.set_metrics(register(&mut registry));
    (net, registry)
}

fn scrape(registry: &Registry) -> Scrape {
    Scrape::parse(&render(registry))
}

/// Asserts each `(series, value)`.
fn expect(scrape: &Scrape, expected: &[(&str, f64)]) {
    for &(series, value) in expected {
        assert_eq!(scrape.get(series), value, "{series}");
    }
}

/// The sum over one labelled family, so that a test can say "and nothing else".
fn total(scrape: &Scrape, family: &str) -> f64 {
    scrape
        .samples()
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{family}{{")))
        .map(|(_, value)| value)
        .sum()
}

fn say(net: &mut Net, client: ClientId, line: &str) {
    net.send_la(client, format!("{line}\n").as_bytes());
}

/// Logins of every result, a `/to` delivered, one to nobody, a `/toall` that one recipient
/// never acknowledges, an `/exit` and a dropped La.
#[test]
fn a_conversation_is_counted_exactly() {
    let config = ServerConfig::default();
    let ack_timeout = config.ack_timeout;
    let (mut net, registry) = metered(config);
    let empty = scrape(&registry);
    expect(
        &empty,
        &[
            ("im_users_online", 0.0),
            ("im_logins_total{result=\"ok\"}", 0.0),
            ("im_deliveries_total{outcome=\"delivered\"}", 0.0),
            ("im_ack_latency_seconds_count", 0.0),
        ],
    );
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    let michael = net.connect_ready("michael", "michael123");
    let stranger = net.connect("stranger");
    for (line, answer) in [
        ("/login nobody pw", "102 Authentication failed"),
        ("/login bob wrong", "102 Authentication failed"),
        ("/login jacky 12345", "102 Authentication failed"),
    ] {
        say(&mut net, stranger, line);
        assert_eq!(net.take_la_lines(stranger), [answer]);
    }

    say(&mut net, jacky, "/to bob hi");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky hi"]);
    net.advance(Duration::from_millis(5));
    net.ack(bob);
    assert_eq!(net.take_la_lines(jacky), [DELIVERED]);
    say(&mut net, jacky, "/to nobody hi");
    assert_eq!(net.take_la_lines(jacky), [FAILED]);
    say(&mut net, jacky, "/toall hey");
    net.ack(bob);
    assert_eq!(net.take_lb_lines(michael), ["/broadcastfrom jacky hey"]);
    net.advance(ack_timeout);
    assert!(net.is_closed(michael));
    assert_eq!(net.take_la_lines(jacky), [FAILED]);
    say(&mut net, stranger, "/exit");
    net.drop_la(bob);

    let counts = scrape(&registry);
    expect(
        &counts,
        &[
            ("im_users_online", 1.0),
            ("im_logins_total{result=\"ok\"}", 3.0),
            ("im_logins_total{result=\"bad_credentials\"}", 2.0),
            ("im_logins_total{result=\"already_online\"}", 1.0),
            ("im_requests_total{request=\"to\",answer=\"303\"}", 1.0),
            ("im_requests_total{request=\"to\",answer=\"304\"}", 1.0),
            ("im_requests_total{request=\"toall\",answer=\"303\"}", 0.0),
            ("im_requests_total{request=\"toall\",answer=\"304\"}", 1.0),
            ("im_deliveries_total{outcome=\"delivered\"}", 2.0),
            ("im_deliveries_total{outcome=\"offline\"}", 1.0),
            ("im_deliveries_total{outcome=\"ack_timeout\"}", 1.0),
            ("im_sessions_ended_total{reason=\"ack_timeout\"}", 1.0),
            ("im_sessions_ended_total{reason=\"exit\"}", 1.0),
            ("im_sessions_ended_total{reason=\"la_closed\"}", 1.0),
            // Three deliveries queued, each to an empty mailbox.
            ("im_delivery_queue_depth_count", 3.0),
            ("im_delivery_queue_depth_bucket{le=\"0.0\"}", 3.0),
            ("im_delivery_queue_depth_sum", 0.0),
            // Two acknowledgements: 5 ms after the write, and at once.
            ("im_ack_latency_seconds_count", 2.0),
            ("im_ack_latency_seconds_sum", 0.005),
            ("im_ack_latency_seconds_bucket{le=\"0.0005\"}", 1.0),
            ("im_ack_latency_seconds_bucket{le=\"0.004\"}", 1.0),
            ("im_ack_latency_seconds_bucket{le=\"0.008\"}", 2.0),
            // The driver counts connections; a bare Server does not.
            ("im_connections_open", 0.0),
        ],
    );
    assert_eq!(total(&counts, "im_logins_total"), 6.0);
    assert_eq!(total(&counts, "im_deliveries_total"), 4.0);
    assert_eq!(total(&counts, "im_sessions_ended_total"), 3.0);
}

/// A full queue, a withdrawn delivery (its sender left), and a wrong acknowledgement that
/// fails both the outstanding delivery and the one queued behind it.
#[test]
fn full_queues_withdrawals_and_wrong_acks_are_counted() {
    let (mut net, registry) = metered(ServerConfig {
        max_queue: 1,
        ..ServerConfig::default()
    });
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    let michael = net.connect_ready("michael", "michael123");
    let alice = net.connect_ready("alice", "alice123");
    say(&mut net, jacky, "/to bob one");
    say(&mut net, michael, "/to bob two");
    say(&mut net, alice, "/to bob three");
    assert_eq!(net.take_la_lines(alice), [FAILED]);
    net.drop_la(michael);
    let carol = net.connect_ready("carol", "carol123");
    say(&mut net, carol, "/to bob four");
    assert_eq!(net.take_lb_lines(bob), ["/from jacky one"]);
    net.send_lb(bob, b"thanks\n");
    assert!(net.is_closed(bob));
    assert_eq!(net.take_la_lines(jacky), [FAILED]);
    assert_eq!(net.take_la_lines(carol), [FAILED]);

    let counts = scrape(&registry);
    expect(
        &counts,
        &[
            ("im_deliveries_total{outcome=\"queue_full\"}", 1.0),
            ("im_deliveries_total{outcome=\"withdrawn\"}", 1.0),
            ("im_deliveries_total{outcome=\"wrong_ack\"}", 2.0),
            ("im_requests_total{request=\"to\",answer=\"304\"}", 3.0),
            ("im_sessions_ended_total{reason=\"wrong_ack\"}", 1.0),
            ("im_sessions_ended_total{reason=\"la_closed\"}", 1.0),
            ("im_users_online", 3.0),
            // Queued behind nothing (one), then behind one (michael's, carol's).
            ("im_delivery_queue_depth_count", 3.0),
            ("im_delivery_queue_depth_bucket{le=\"0.0\"}", 1.0),
            ("im_delivery_queue_depth_bucket{le=\"1.0\"}", 3.0),
            ("im_delivery_queue_depth_sum", 2.0),
            ("im_ack_latency_seconds_count", 0.0),
        ],
    );
    assert_eq!(total(&counts, "im_deliveries_total"), 4.0);
}

/// Lb closed mid-delivery, an Lb that cannot be connected, the login timeout and too many
/// failed logins: each ends its session under its own reason.
#[test]
fn every_way_a_session_ends_is_counted_by_its_reason() {
    let config = ServerConfig {
        max_login_failures: 2,
        ..ServerConfig::default()
    };
    let login_timeout = config.login_timeout;
    let (mut net, registry) = metered(config);
    let jacky = net.connect_ready("jacky", "12345");
    let bob = net.connect_ready("bob", "bob123");
    say(&mut net, jacky, "/to bob hi");
    net.drop_lb(bob);
    assert_eq!(net.take_la_lines(jacky), [FAILED]);

    let carol = net.connect("carol");
    net.set_lb_mode(carol, LbMode::Refuse);
    say(&mut net, carol, "/login carol carol123");
    say(&mut net, carol, &format!("/port {}", Net::port_of(carol)));
    assert!(net.is_closed(carol));

    let guesser = net.connect("guesser");
    say(&mut net, guesser, "/login alice a");
    say(&mut net, guesser, "/login alice b");
    assert!(net.is_closed(guesser));

    let idle = net.connect("idle");
    net.advance(login_timeout);
    assert!(net.is_closed(idle));

    let counts = scrape(&registry);
    expect(
        &counts,
        &[
            ("im_deliveries_total{outcome=\"lb_closed\"}", 1.0),
            ("im_sessions_ended_total{reason=\"lb_closed\"}", 1.0),
            ("im_sessions_ended_total{reason=\"lb_connect_failed\"}", 1.0),
            (
                "im_sessions_ended_total{reason=\"too_many_login_failures\"}",
                1.0,
            ),
            ("im_sessions_ended_total{reason=\"login_timeout\"}", 1.0),
            ("im_logins_total{result=\"ok\"}", 3.0),
            ("im_logins_total{result=\"bad_credentials\"}", 2.0),
            // jacky is still on; bob and carol logged in and left.
            ("im_users_online", 1.0),
        ],
    );
    assert_eq!(total(&counts, "im_sessions_ended_total"), 4.0);
}

fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 40_000))
}

/// Carries out the driver's actions as a runtime would, at `now`: writes succeed whole
/// (except on `failing`, where they fail), Lb connects succeed, password checks run.
fn pump(
    driver: &mut ServerDriver,
    now: Instant,
    failing: Option<SocketId>,
    written: &mut HashMap<SocketId, Vec<u8>>,
) {
    while let Some(action) = driver.poll_action() {
        match action {
            DriverAction::Wake(socket) => {
                while let Some(bytes) = driver.poll_transmit(socket) {
                    if Some(socket) == failing {
                        driver.handle_write_error(now, socket);
                    } else {
                        written.entry(socket).or_default().extend_from_slice(&bytes);
                        driver.handle_written(now, socket, bytes.len());
                    }
                }
            }
            DriverAction::Connect { conn, .. } => {
                driver.handle_lb_connected(now, conn);
            }
            DriverAction::CheckPassword(conn, check) => {
                driver.handle_password_checked(now, conn, check.run());
            }
            _ => {}
        }
    }
}

/// Through the driver: connections accepted, open and refused, and a write to Lb that fails
/// (which the hub hears as [`Input::LbWriteFailed`](simple_im_core::server::Input)).
#[test]
fn the_driver_counts_connections_and_failed_lb_writes() {
    let mut registry = Registry::default();
    let config = DriverConfig {
        max_connections: 2,
        metrics: register(&mut registry),
        ..DriverConfig::default()
    };
    let mut driver = ServerDriver::new(appendix_users(), ServerConfig::default(), &config);
    let now = Instant::now();
    let mut written = HashMap::new();
    let mut ready = |driver: &mut ServerDriver, n: u8, login: &str| -> ConnId {
        let conn = driver.accept(now, peer(n)).unwrap();
        pump(driver, now, None, &mut written);
        let lines = format!("{login}\n/port 5000\n");
        driver.handle_read(now, SocketId::la(conn), lines.as_bytes());
        pump(driver, now, None, &mut written);
        conn
    };
    let jacky = ready(&mut driver, 1, "/login jacky 12345");
    let bob = ready(&mut driver, 2, "/login bob bob123");
    assert!(driver.accept(now, peer(3)).is_err());
    let open = scrape(&registry);
    expect(
        &open,
        &[
            ("im_connections_open", 2.0),
            ("im_connections_accepted_total", 2.0),
            (
                "im_connections_refused_total{reason=\"max_connections\"}",
                1.0,
            ),
            ("im_connections_refused_total{reason=\"max_per_ip\"}", 0.0),
            ("im_users_online", 2.0),
        ],
    );

    driver.handle_read(now, SocketId::la(jacky), b"/to bob hi\n");
    pump(&mut driver, now, Some(SocketId::lb(bob)), &mut written);
    let answers = String::from_utf8(written[&SocketId::la(jacky)].clone()).unwrap();
    assert!(
        answers.ends_with("304 Message delivery failed\n"),
        "{answers}"
    );
    // Bob's La lingers until its peer closes too; then his connection is gone.
    driver.handle_read_end(now, SocketId::la(bob));
    pump(&mut driver, now, None, &mut written);
    assert!(!driver.is_open(bob));

    let after = scrape(&registry);
    expect(
        &after,
        &[
            ("im_deliveries_total{outcome=\"write_failed\"}", 1.0),
            ("im_deliveries_total{outcome=\"lb_closed\"}", 0.0),
            ("im_sessions_ended_total{reason=\"lb_write_failed\"}", 1.0),
            ("im_requests_total{request=\"to\",answer=\"304\"}", 1.0),
            ("im_connections_open", 1.0),
            ("im_users_online", 1.0),
        ],
    );
}

/// The default handle counts nothing, and a driver built with it leaves the hub uncounted.
#[test]
fn metrics_are_off_by_default() {
    assert!(!DriverConfig::default().metrics.is_on());
    let driver = ServerDriver::new(
        appendix_users(),
        ServerConfig::default(),
        &DriverConfig::default(),
    );
    assert!(!driver.server().metrics().is_on());
}

/// Each way a driver refuses a connection has its own series.
#[test]
fn each_refusal_is_counted_under_its_own_reason() {
    let mut registry = Registry::default();
    let metrics = register(&mut registry);
    let ip = peer(1).ip();
    metrics.connection_refused(&Refusal::TooManyConnections { max: 1 });
    metrics.connection_refused(&Refusal::TooManyFromAddress { ip, max: 1 });
    metrics.connection_refused(&Refusal::TooManyFromAddress { ip, max: 1 });
    metrics.connection_refused(&Refusal::TlsUnavailable);
    metrics.connection_refused(&Refusal::TlsUnavailable);
    metrics.connection_refused(&Refusal::TlsUnavailable);
    expect(
        &scrape(&registry),
        &[
            (
                "im_connections_refused_total{reason=\"max_connections\"}",
                1.0,
            ),
            ("im_connections_refused_total{reason=\"max_per_ip\"}", 2.0),
            (
                "im_connections_refused_total{reason=\"tls_unavailable\"}",
                3.0,
            ),
            ("im_connections_accepted_total", 0.0),
        ],
    );
}
