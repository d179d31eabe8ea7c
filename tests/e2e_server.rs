//! End-to-end tests of the `im-server` binary over 127.0.0.1, with raw TCP clients, and of
//! `im-client` against it. Every scenario runs once per runtime: `smol::<name>` and
//! `threads::<name>`.

#[macro_use]
mod common;

use std::ffi::OsStr;
use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::harness;
use common::harness::{run_to_end, ClientProcess, Runtime, ServerProcess, TempFile, STEP, USERS};

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const RECEIPT: &[u8] = b"302 Message receipt successful\n";

in_each_server_runtime!(
    appendix_conversation,
    login_fails_then_succeeds,
    too_many_login_failures_close_the_connection,
    a_user_already_online_cannot_log_in_again,
    an_lb_port_nobody_listens_on_gets_202_and_the_end,
    to_an_offline_or_unknown_user_fails,
    a_receiver_whose_lb_closes_mid_delivery_fails_and_goes_offline,
    no_ack_within_the_ack_timeout_fails,
    login_timeout_closes_the_connection,
    an_over_long_line_gets_one_401,
    crlf_input_is_accepted,
    pipelined_requests_are_answered_in_order,
    thousands_of_requests_in_one_write_are_all_answered,
    bye_arrives_even_when_the_client_sends_on_after_exit,
    a_broadcast_reaches_300_sessions,
    sigterm_ends_the_server,
    a_client_over_max_connections_is_closed_at_once,
    a_client_over_max_per_ip_is_closed_at_once,
    im_client_logs_in_receives_lists_and_exits,
    appendix_with_three_im_clients,
    killing_the_server_ends_every_client_with_1_within_a_second,
    a_hashed_password_logs_in_and_never_reaches_the_log,
);

/// The conversation of the assignment's appendix, byte for byte, in the order of its clock.
fn appendix_conversation(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut bob = server.ready("bob", "bob123");
    let mut michael = server.ready("michael", "michael123");

    let mut jacky = server.connect();
    assert_eq!(
        jacky.request("/login jacky 12345"),
        "101 Authentication successful\n"
    );
    assert_eq!(jacky.open_lb(), "201 Build connection successful\n");
    assert_eq!(jacky.request("/list"), "301 jacky bob michael\n");

    jacky.send(b"/to bob Hello! Nice to meet you!\n");
    assert_eq!(bob.recv_lb(), "/from jacky Hello! Nice to meet you!\n");
    bob.send_lb(RECEIPT);
    assert_eq!(jacky.recv(), OK);

    jacky.send(b"/to michael Hi, Michael!\n");
    assert_eq!(michael.recv_lb(), "/from jacky Hi, Michael!\n");
    michael.send_lb(RECEIPT);
    assert_eq!(jacky.recv(), OK);

    michael.send(b"/to jacky Hi, Jacky!\n");
    assert_eq!(jacky.recv_lb(), "/from michael Hi, Jacky!\n");
    jacky.send_lb(RECEIPT);
    assert_eq!(michael.recv(), OK);

    jacky.send(b"/toall How about meeting at 3pm today?\n");
    for other in [&mut bob, &mut michael] {
        assert_eq!(
            other.recv_lb(),
            "/broadcastfrom jacky How about meeting at 3pm today?\n"
        );
        other.send_lb(RECEIPT);
    }
    assert_eq!(jacky.recv(), OK);

    bob.send(b"/to jacky Jacky, nice to meet you too!\n");
    assert_eq!(jacky.recv_lb(), "/from bob Jacky, nice to meet you too!\n");
    jacky.send_lb(RECEIPT);
    assert_eq!(bob.recv(), OK);

    bob.send(b"/toall OK.\n");
    for other in [&mut jacky, &mut michael] {
        assert_eq!(other.recv_lb(), "/broadcastfrom bob OK.\n");
        other.send_lb(RECEIPT);
    }
    assert_eq!(bob.recv(), OK);

    michael.send(b"/toall No problem.\n");
    for other in [&mut jacky, &mut bob] {
        assert_eq!(other.recv_lb(), "/broadcastfrom michael No problem.\n");
        other.send_lb(RECEIPT);
    }
    assert_eq!(michael.recv(), OK);

    assert_eq!(jacky.request("/exit"), "310 Bye bye\n");
    jacky.expect_la_closed();
    jacky.expect_lb_closed();
    assert_eq!(bob.request("/list"), "301 bob michael\n");
}

fn login_fails_then_succeeds(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut client = server.connect();
    assert_eq!(client.request("/list"), "401 Unrecognized message\n");
    assert_eq!(
        client.request("/login jacky wrong"),
        "102 Authentication failed\n"
    );
    assert_eq!(
        client.request("/login nobody 12345"),
        "102 Authentication failed\n"
    );
    assert_eq!(
        client.request("/login jacky 12345"),
        "101 Authentication successful\n"
    );
    assert_eq!(client.request("/list"), "401 Unrecognized message\n");
}

/// `--hash-password` makes an argon2id hash that the users file can hold instead of the
/// password; logging in with the password works, a failed login is logged with its source
/// address, and no password shows up in the logs.
fn a_hashed_password_logs_in_and_never_reaches_the_log(runtime: Runtime) {
    use std::io::Write;
    let mut hasher = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("--hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    hasher
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pw\n")
        .unwrap();
    let output = hasher.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let users = format!("jacky {}\nbob bob123\n", hash.trim_end());
    let server = ServerProcess::start(runtime, &users, &[]);
    let mut client = server.connect();
    assert_eq!(
        client.request("/login jacky s3cret-pw-wrong"),
        "102 Authentication failed\n"
    );
    assert_eq!(
        client.request("/login jacky s3cret-pw"),
        "101 Authentication successful\n"
    );
    server.expect_log("failed login as jacky from 127.0.0.1:");
    server.expect_log("logged in as jacky");
    let log = server.stderr();
    assert!(
        !log.contains("s3cret"),
        "a password reached the log:\n{log}"
    );
}

fn too_many_login_failures_close_the_connection(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &["--max-login-failures", "2"]);
    let mut client = server.connect();
    assert_eq!(
        client.request("/login jacky x"),
        "102 Authentication failed\n"
    );
    assert_eq!(
        client.request("/login jacky y"),
        "102 Authentication failed\n"
    );
    client.expect_la_closed();
}

fn a_user_already_online_cannot_log_in_again(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut first = server.ready("bob", "bob123");
    let mut second = server.connect();
    assert_eq!(
        second.request("/login bob bob123"),
        "102 Authentication failed\n"
    );
    assert_eq!(first.request("/exit"), "310 Bye bye\n");
    first.expect_la_closed();
    assert_eq!(
        second.request("/login bob bob123"),
        "101 Authentication successful\n"
    );
}

fn an_lb_port_nobody_listens_on_gets_202_and_the_end(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut client = server.connect();
    assert_eq!(
        client.request("/login jacky 12345"),
        "101 Authentication successful\n"
    );
    let port = {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        unused.local_addr().unwrap().port()
    };
    assert_eq!(
        client.request(&format!("/port {port}")),
        "202 Build connection failed\n"
    );
    client.expect_la_closed();
    // The session ended, so jacky is offline and may log in again.
    server.ready("jacky", "12345");
}

fn to_an_offline_or_unknown_user_fails(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    assert_eq!(jacky.request("/to michael are you there?"), FAILED);
    assert_eq!(jacky.request("/to nobody hello"), FAILED);
    assert_eq!(jacky.request("/toall nobody else"), OK);
}

fn a_receiver_whose_lb_closes_mid_delivery_fails_and_goes_offline(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");
    bob.close_lb();
    assert_eq!(jacky.recv(), FAILED);
    assert_eq!(jacky.request("/list"), "301 jacky\n");
    bob.expect_la_closed();
}

fn no_ack_within_the_ack_timeout_fails(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &["--ack-timeout", "300ms"]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    let sent = Instant::now();
    jacky.send(b"/to bob are you awake?\n");
    assert_eq!(bob.recv_lb(), "/from jacky are you awake?\n");
    assert_eq!(jacky.recv(), FAILED);
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    bob.expect_lb_closed();
    assert_eq!(jacky.request("/list"), "301 jacky\n");
}

fn login_timeout_closes_the_connection(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &["--login-timeout", "200ms"]);
    let mut client = server.connect();
    client.expect_la_closed();
}

fn an_over_long_line_gets_one_401(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut input = vec![b'a'; 1 << 20];
    input.extend_from_slice(b"\n/list\n");
    jacky.send(&input);
    assert_eq!(jacky.recv(), "401 Unrecognized message\n");
    assert_eq!(jacky.recv(), "301 jacky\n");
    assert_eq!(jacky.request("/list"), "301 jacky\n");
}

fn crlf_input_is_accepted(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut bob = server.ready("bob", "bob123");
    let mut jacky = server.connect();
    jacky.send(b"/login jacky 12345\r\n");
    assert_eq!(jacky.recv(), "101 Authentication successful\n");
    assert_eq!(jacky.open_lb(), "201 Build connection successful\n");
    jacky.send(b"/list\r\n");
    assert_eq!(jacky.recv(), "301 jacky bob\n");
    jacky.send(b"/to bob hi there\r\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi there\n");
    bob.send_lb(b"302 Message receipt successful\r\n");
    assert_eq!(jacky.recv(), OK);
    jacky.send(b"/exit\r\n");
    assert_eq!(jacky.recv(), "310 Bye bye\n");
    jacky.expect_la_closed();
}

fn pipelined_requests_are_answered_in_order(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    jacky.send(b"/list\n/to nobody x\nbogus\n/list\n");
    assert_eq!(jacky.recv(), "301 jacky\n");
    assert_eq!(jacky.recv(), FAILED);
    assert_eq!(jacky.recv(), "401 Unrecognized message\n");
    assert_eq!(jacky.recv(), "301 jacky\n");
}

fn thousands_of_requests_in_one_write_are_all_answered(runtime: Runtime) {
    const REQUESTS: usize = 5_000;
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    jacky.send(&b"/list\n".repeat(REQUESTS));
    for _ in 0..REQUESTS {
        assert_eq!(jacky.recv(), "301 jacky\n");
    }
    assert_eq!(jacky.request("/exit"), "310 Bye bye\n");
}

/// Input the server never reads must not reset the connection before `310` is delivered.
fn bye_arrives_even_when_the_client_sends_on_after_exit(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut client = server.connect();
    let mut input = b"/exit\n".to_vec();
    input.extend(b"/list\n".repeat(40_000));
    client.send(&input);
    assert_eq!(client.recv(), "310 Bye bye\n");
    client.expect_la_closed();
}

fn a_broadcast_reaches_300_sessions(runtime: Runtime) {
    const SESSIONS: usize = 300;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let users: String = (0..SESSIONS).map(|i| format!("user{i} pw{i}\n")).collect();
    let server = ServerProcess::start(runtime, &users, &[]);
    let mut clients: Vec<_> = (0..SESSIONS)
        .map(|i| server.ready(&format!("user{i}"), &format!("pw{i}")))
        .collect();
    let (sender, others) = clients.split_at_mut(1);
    sender[0].send(b"/toall hello, everybody\n");
    for other in others.iter_mut() {
        assert_eq!(other.recv_lb(), "/broadcastfrom user0 hello, everybody\n");
        other.ack();
    }
    assert_eq!(sender[0].recv(), OK);
    let list = sender[0].request("/list");
    assert_eq!(list.split(' ').count(), 1 + SESSIONS);
}

/// Over `--max-connections` a new client is closed before it is served; the others are served
/// on, and a client that leaves makes room for the next.
fn a_client_over_max_connections_is_closed_at_once(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &["--max-connections", "2"]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.connect();
    // Answered, so bob's connection is counted before the next one comes.
    assert_eq!(
        bob.request("/login bob bob123"),
        "101 Authentication successful\n"
    );
    let started = Instant::now();
    let mut refused = server.connect();
    refused.expect_la_closed();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(jacky.request("/list"), "301 jacky bob\n");

    assert_eq!(bob.request("/exit"), "310 Bye bye\n");
    bob.expect_la_closed();
    let mut michael = server.connect();
    assert_eq!(
        michael.request("/login michael michael123"),
        "101 Authentication successful\n"
    );
    server.expect_log("--max-connections");
}

/// Over `--max-per-ip` a new client from that address is closed before it is served; clients
/// from other addresses (here ::1 beside 127.0.0.1, when the host has IPv6) still get in.
fn a_client_over_max_per_ip_is_closed_at_once(runtime: Runtime) {
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let bind = if ipv6 { "::" } else { "127.0.0.1" };
    let options = [
        "--bind",
        bind,
        "--max-per-ip",
        "2",
        "--max-connections",
        "10",
    ];
    let server = ServerProcess::start(runtime, USERS, &options);
    let ipv4 = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let mut jacky = harness::Client::connect(ipv4);
    assert_eq!(
        jacky.request("/login jacky 12345"),
        "101 Authentication successful\n"
    );
    let mut bob = harness::Client::connect(ipv4);
    assert_eq!(
        bob.request("/login bob bob123"),
        "101 Authentication successful\n"
    );
    let mut refused = harness::Client::connect(ipv4);
    refused.expect_la_closed();
    server.expect_log("--max-per-ip");
    assert_eq!(
        jacky.request("/login jacky 12345"),
        "401 Unrecognized message\n"
    );
    if ipv6 {
        let mut michael =
            harness::Client::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, server.addr.port())));
        assert_eq!(
            michael.request("/login michael michael123"),
            "101 Authentication successful\n"
        );
    }
    assert_eq!(bob.request("/exit"), "310 Bye bye\n");
    bob.expect_la_closed();
    let mut carol = harness::Client::connect(ipv4);
    assert_eq!(
        carol.request("/login carol carol123"),
        "101 Authentication successful\n"
    );
}

/// The real client, in the same runtime as the server, driven through standard input: it logs
/// in, receives and acknowledges a message on Lb, lists, and leaves with exit code 0.
fn im_client_logs_in_receives_lists_and_exits(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut bob = server.ready("bob", "bob123");
    let mut jacky = ClientProcess::start(runtime, server.addr);
    jacky.expect_lines(&["Please input your user name:"]);
    jacky.type_lines(&["jacky", "12345"]);
    jacky.expect_lines(&[
        "Please input your password:",
        "101 Authentication successful",
        "201 Build connection successful",
    ]);
    // Answered only once jacky's client has acknowledged on Lb.
    assert_eq!(bob.request("/to jacky Hello, Jacky!"), OK);
    jacky.expect_lines(&["/from bob Hello, Jacky!"]);
    jacky.type_lines(&["/list", "/exit"]);
    jacky.close_stdin();
    jacky.expect_lines(&["/list", "301 jacky bob", "/exit", "310 Bye bye"]);
    assert_eq!(jacky.wait_exit(), Some(0), "{:?}", jacky.transcript);
    assert_eq!(bob.request("/list"), "301 bob\n");
}

/// The appendix conversation again, this time between three real `im-client` processes
/// driven through standard input: what each user sees, line by line.
fn appendix_with_three_im_clients(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    harness::appendix_between_im_clients(runtime, [server.addr; 3]);
}

/// docs/protocol.md §4.7: when the server dies, every client says so and exits 1 within a second.
fn killing_the_server_ends_every_client_with_1_within_a_second(runtime: Runtime) {
    let mut server = ServerProcess::start(runtime, USERS, &[]);
    let mut clients: Vec<ClientProcess> = [("jacky", "12345"), ("bob", "bob123")]
        .into_iter()
        .map(|(user, password)| {
            let mut client = ClientProcess::start(runtime, server.addr);
            client.log_in(user, password);
            client
        })
        .collect();
    // One client sits at its user-name prompt, not logged in yet.
    let mut newcomer = ClientProcess::start(runtime, server.addr);
    newcomer.expect_lines(&["Please input your user name:"]);
    clients.push(newcomer);

    server.kill();
    let killed = Instant::now();
    for client in &mut clients {
        // A second, with slack for a loaded machine; a client waiting on a timeout of its own
        // (seconds) would still miss it.
        let code = client.wait_exit_within(Duration::from_millis(1500));
        assert_eq!(code, Some(1), "{:?}", client.transcript);
    }
    assert!(killed.elapsed() < Duration::from_millis(1500));
}

#[test]
fn help_exits_0_and_names_every_option() {
    let output = run_to_end(&[OsStr::new("--help")]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for option in [
        "PORT",
        "USERS_FILE",
        "--hash-password",
        "--bind",
        "--ack-timeout",
        "--connect-timeout",
        "--login-timeout",
        "--max-login-failures",
        "--max-line",
        "--max-queue",
        "--runtime",
        "--max-connections",
        "--max-per-ip",
        "--log",
    ] {
        assert!(help.contains(option), "{option} missing from\n{help}");
    }
}

#[test]
fn a_bad_users_file_exits_2_naming_the_file_and_line() {
    let file = TempFile::new("bad-users.txt", b"# accounts\njacky 12345\nbob\n");
    let output = run_to_end(&[OsStr::new("0"), file.path().as_os_str()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&*file.path().to_string_lossy()), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(output.stdout.is_empty());

    let missing = harness::temp_path("missing.txt");
    let output = run_to_end(&[OsStr::new("0"), missing.as_os_str()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("im-server: cannot read "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let path = users.path().as_os_str();
    for args in [
        vec![],
        vec![OsStr::new("notaport"), path],
        vec![
            OsStr::new("0"),
            path,
            OsStr::new("--ack-timeout"),
            OsStr::new("10"),
        ],
        vec![
            OsStr::new("0"),
            path,
            OsStr::new("--max-line"),
            OsStr::new("1"),
        ],
        vec![
            OsStr::new("0"),
            path,
            OsStr::new("--max-queue"),
            OsStr::new("0"),
        ],
        vec![OsStr::new("0"), path, OsStr::new("--no-such-option")],
    ] {
        let output = run_to_end(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("im-server: "), "{stderr}");
    }
}

fn sigterm_ends_the_server(runtime: Runtime) {
    let mut server = ServerProcess::start(runtime, USERS, &[]);
    let _jacky = server.ready("jacky", "12345");
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.wait_exit(STEP).expect("still running after SIGTERM");
    assert!(exit.success(), "{exit:?}");
}
