//! End-to-end tests of `im-server --metrics`: the real binary in each runtime, a scripted
//! conversation with raw clients over 127.0.0.1, then a scrape of `/metrics` over HTTP, read
//! strictly (`common/scrape.rs`) and checked value by value; the same for two cluster nodes on
//! one `redis-server` (ignored unless asked for: `cargo test -- --include-ignored`). Also: no flag, no
//! port; a bad address or a port in use ends the server with one line and exit code 2.

#[macro_use]
mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::harness::{run_to_end, Runtime, ServerProcess, TempFile, STEP, USERS};
use common::redis_server::RedisServer;
use common::scrape::Scrape;

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const AUTH_FAILED: &str = "102 Authentication failed\n";

in_each_server_runtime!(
    a_scripted_conversation_is_scraped_with_exact_counts,
    without_the_flag_no_port_is_opened,
    tls_failures_are_counted,
);

/// With `--tls-cert`, a plain-text peer is one TLS failure on La, and the handshakes of a
/// TLS client are none.
fn tls_failures_are_counted(runtime: Runtime) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = TempFile::new("cert.pem", certified.cert.pem().as_bytes());
    let key = TempFile::new("key.pem", certified.key_pair.serialize_pem().as_bytes());
    let options = [
        OsStr::new("--metrics"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--tls-cert"),
        cert.path().as_os_str(),
        OsStr::new("--tls-key"),
        key.path().as_os_str(),
    ];
    let options: Vec<&str> = options.iter().map(|o| o.to_str().unwrap()).collect();
    let server = ServerProcess::start(runtime, USERS, &options);
    let addr = metrics_addr(&server);
    let la = "im_tls_failures_total{connection=\"La\"}";
    assert_eq!(scrape(addr).get(la), 0.0);
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(STEP)).unwrap();
    plain.write_all(b"/login bob bob123\n").unwrap();
    let mut alert = Vec::new();
    let _ = plain.read_to_end(&mut alert);
    assert_eq!(alert.first(), Some(&0x15), "{alert:?}");
    let scraped = scrape_when(addr, la, 1.0);
    assert_eq!(scraped.get("im_tls_failures_total{connection=\"Lb\"}"), 0.0);
    assert_eq!(scraped.get("im_logins_total{result=\"ok\"}"), 0.0);
}

/// The endpoint's address, from the `metrics on http://ADDR/metrics` log line.
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    server.expect_log("metrics on http://");
    let log = server.stderr();
    let start = log.find("metrics on http://").unwrap() + "metrics on http://".len();
    let rest = &log[start..];
    let end = rest.find("/metrics").expect("the line names /metrics");
    rest[..end].parse().unwrap()
}

/// `GET path` over HTTP/1.0; the status line, the headers and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, STEP).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = get(addr, "/metrics");
    assert!(status.ends_with(" 200 OK"), "{status}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    Scrape::parse(&body)
}

/// Scrapes until `series` reads `value` (connections close a moment after their peers do),
/// for at most [`STEP`].
fn scrape_when(addr: SocketAddr, series: &str, value: f64) -> Scrape {
    let deadline = Instant::now() + STEP;
    loop {
        let scrape = scrape(addr);
        if scrape.get(series) == value {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {} and not {value}",
            scrape.get(series)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logins of each result, a `/to` delivered and one to nobody, a `/toall` one recipient does
/// not acknowledge in time, a connection over the cap, an `/exit`: every count is exact.
fn a_scripted_conversation_is_scraped_with_exact_counts(runtime: Runtime) {
    let options = [
        "--metrics",
        "127.0.0.1:0",
        "--ack-timeout",
        "300ms",
        "--max-connections",
        "4",
    ];
    let server = ServerProcess::start(runtime, USERS, &options);
    let addr = metrics_addr(&server);
    let (status, _, _) = get(addr, "/other");
    assert!(status.ends_with(" 404 Not Found"), "{status}");
    let (status, _, body) = get(addr, "/metrics?name[]=im_users_online");
    assert!(status.ends_with(" 200 OK"), "{status}");
    Scrape::parse(&body);
    let before = scrape(addr);
    assert_eq!(before.get("im_connections_open"), 0.0);
    assert_eq!(before.get("im_logins_total{result=\"ok\"}"), 0.0);

    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    let mut michael = server.ready("michael", "michael123");
    let mut stranger = server.connect();
    assert_eq!(stranger.request("/login nobody x"), AUTH_FAILED);
    assert_eq!(stranger.request("/login jacky 12345"), AUTH_FAILED);

    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    assert_eq!(jacky.request("/to nobody hi"), FAILED);
    jacky.send(b"/toall hey\n");
    assert_eq!(bob.recv_lb(), "/broadcastfrom jacky hey\n");
    bob.ack();
    assert_eq!(michael.recv_lb(), "/broadcastfrom jacky hey\n");
    // Michael never acknowledges: after the ack timeout he is dropped and jacky gets 304.
    assert_eq!(jacky.recv(), FAILED);
    michael.expect_la_closed();
    drop(michael);

    // Three clients hold a place under the cap of 4: one more gets in, the next does not.
    let extra = server.connect();
    let mut refused = server.connect();
    refused.expect_la_closed();
    assert_eq!(stranger.request("/exit"), "310 Bye bye\n");
    stranger.expect_la_closed();
    drop(stranger);

    let counts = scrape_when(addr, "im_connections_open", 3.0);
    let expected = [
        ("im_connections_accepted_total", 5.0),
        (
            "im_connections_refused_total{reason=\"max_connections\"}",
            1.0,
        ),
        ("im_connections_refused_total{reason=\"max_per_ip\"}", 0.0),
        ("im_users_online", 2.0),
        ("im_logins_total{result=\"ok\"}", 3.0),
        ("im_logins_total{result=\"bad_credentials\"}", 1.0),
        ("im_logins_total{result=\"already_online\"}", 1.0),
        ("im_requests_total{request=\"to\",answer=\"303\"}", 1.0),
        ("im_requests_total{request=\"to\",answer=\"304\"}", 1.0),
        ("im_requests_total{request=\"toall\",answer=\"303\"}", 0.0),
        ("im_requests_total{request=\"toall\",answer=\"304\"}", 1.0),
        ("im_deliveries_total{outcome=\"delivered\"}", 2.0),
        ("im_deliveries_total{outcome=\"offline\"}", 1.0),
        ("im_deliveries_total{outcome=\"ack_timeout\"}", 1.0),
        ("im_deliveries_total{outcome=\"queue_full\"}", 0.0),
        ("im_sessions_ended_total{reason=\"ack_timeout\"}", 1.0),
        ("im_sessions_ended_total{reason=\"exit\"}", 1.0),
        ("im_sessions_ended_total{reason=\"la_closed\"}", 0.0),
        ("im_delivery_queue_depth_count", 3.0),
        ("im_delivery_queue_depth_bucket{le=\"0.0\"}", 3.0),
        ("im_ack_latency_seconds_count", 2.0),
        ("im_ack_latency_seconds_bucket{le=\"+Inf\"}", 2.0),
    ];
    for (series, value) in expected {
        assert_eq!(counts.get(series), value, "{series}");
    }
    // The log names the reason the metric counts.
    server.expect_log("(michael) left: ack_timeout");
    drop((jacky, bob, extra));
}

/// The LISTEN sockets among the process's open files (Linux: /proc).
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let mut listening = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // `st` 0A is LISTEN; the inode is the tenth field.
            if fields.get(3) == Some(&"0A")
                && fields
                    .get(9)
                    .is_some_and(|i| inodes.contains(&i.to_string()))
            {
                listening += 1;
            }
        }
    }
    listening
}

/// Metrics off (no flag): the server listens on its one port and nothing else, and logs no
/// endpoint; with the flag, one more.
fn without_the_flag_no_port_is_opened(runtime: Runtime) {
    let plain = ServerProcess::start(runtime, USERS, &[]);
    let metered = ServerProcess::start(runtime, USERS, &["--metrics", "127.0.0.1:0"]);
    metrics_addr(&metered);
    // A client in, so that the server has surely finished starting.
    assert_eq!(
        plain.connect().request("/list"),
        "401 Unrecognized message\n"
    );
    assert_eq!(listening_sockets(plain.pid()), 1);
    assert_eq!(listening_sockets(metered.pid()), 2);
    assert!(!plain.stderr().contains("metrics on"));
}

fn exits_2_with_one_line(metrics: &str, expected: &str) {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let args: [&OsStr; 6] = [
        "0".as_ref(),
        users.path().as_os_str(),
        "--bind".as_ref(),
        "127.0.0.1".as_ref(),
        "--metrics".as_ref(),
        metrics.as_ref(),
    ];
    let output = run_to_end(&args);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("im-server: "), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(output.stdout.is_empty(), "it must not start listening");
}

#[test]
fn a_bad_metrics_address_exits_2_with_one_line() {
    exits_2_with_one_line("nonsense", "--metrics");
    exits_2_with_one_line("127.0.0.1", "--metrics");
}

#[test]
fn a_metrics_port_in_use_exits_2_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    exits_2_with_one_line(&addr, &format!("cannot serve metrics on {addr}"));
}

/// Two cluster nodes, each with its own endpoint: each counts its own clients, and a delivery
/// across nodes on the node that decides it (the recipient's).
#[test]
#[ignore = "needs redis-server"]
fn cluster_nodes_count_their_own_clients() {
    let redis = RedisServer::unix();
    let url = redis.url();
    let options = [
        "--cluster",
        &url,
        "--cluster-lease",
        "3s",
        "--metrics",
        "127.0.0.1:0",
    ];
    let nodes = [0, 1].map(|_| ServerProcess::start(Runtime::Smol, USERS, &options));
    let addrs = [metrics_addr(&nodes[0]), metrics_addr(&nodes[1])];
    let mut jacky = nodes[0].ready("jacky", "12345");
    let mut bob = nodes[1].ready("bob", "bob123");
    let mut twin = nodes[1].connect();
    assert_eq!(twin.request("/login jacky 12345"), AUTH_FAILED);
    jacky.send(b"/to bob across\n");
    assert_eq!(bob.recv_lb(), "/from jacky across\n");
    bob.ack();
    assert_eq!(jacky.recv(), OK);

    let sender_node = scrape(addrs[0]);
    let recipient_node = scrape(addrs[1]);
    let expected: [(&str, f64, f64); 7] = [
        ("im_users_online", 1.0, 1.0),
        ("im_logins_total{result=\"ok\"}", 1.0, 1.0),
        ("im_logins_total{result=\"already_online\"}", 0.0, 1.0),
        ("im_requests_total{request=\"to\",answer=\"303\"}", 1.0, 0.0),
        ("im_deliveries_total{outcome=\"delivered\"}", 0.0, 1.0),
        ("im_ack_latency_seconds_count", 0.0, 1.0),
        ("im_connections_accepted_total", 1.0, 2.0),
    ];
    for (series, on_sender, on_recipient) in expected {
        assert_eq!(sender_node.get(series), on_sender, "node 0: {series}");
        assert_eq!(recipient_node.get(series), on_recipient, "node 1: {series}");
    }
}
