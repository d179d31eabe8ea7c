//! End-to-end tests of `im-server` as a service: SIGHUP reads the users file and the
//! `--config` file again (what can change does, what cannot is logged, a broken file changes
//! nothing), SIGTERM stops gracefully (the requests in flight are answered first), a second
//! SIGTERM stops at once. Every scenario runs once per server runtime: `smol::<name>`,
//! `threads::<name>`, `tokio::<name>`, `uring::<name>` (with the `uring` feature).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::harness::{Client, Runtime, ServerProcess, TempFile, STEP, USERS};

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const AUTH_FAILED: &str = "102 Authentication failed\n";

in_each_server_runtime!(
    sighup_lets_a_new_user_in_and_a_conversation_goes_on,
    sighup_ends_a_removed_users_session,
    sighup_with_a_broken_file_changes_nothing,
    sighup_applies_the_config_files_new_settings,
    sighup_with_a_broken_config_file_changes_nothing,
    sigterm_answers_a_delivery_in_flight_then_exits,
    sigterm_fails_a_delivery_not_acked_within_the_ack_timeout,
    a_second_sigterm_stops_at_once,
);

/// Sends `HUP` and waits until the server has handled it (the `n`th time).
fn reload(server: &ServerProcess, n: usize, handled: &str) {
    server.signal("HUP");
    let deadline = Instant::now() + STEP;
    while server.log_count(handled) < n {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not handled: no {handled:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server started with `options`, and jacky's `/to bob hi` shown on bob's Lb, not yet
/// acknowledged: a delivery in flight for a stop to deal with.
fn delivery_in_flight(runtime: Runtime, options: &[&str]) -> (ServerProcess, Client, Client) {
    let server = ServerProcess::start(runtime, USERS, options);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");
    (server, jacky, bob)
}

fn sighup_lets_a_new_user_in_and_a_conversation_goes_on(runtime: Runtime) {
    let (server, mut jacky, mut bob) = delivery_in_flight(runtime, &[]);

    // In the middle of the delivery: bob has not acknowledged it yet.
    server.rewrite_users(&format!("{USERS}dave dave123\n"));
    reload(&server, 1, "users reloaded");

    let mut dave = server.ready("dave", "dave123");
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    jacky.send(b"/to bob again\n");
    assert_eq!(bob.recv_lb(), "/from jacky again\n");
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    assert_eq!(dave.request("/list"), "301 dave jacky bob\n");
}

fn sighup_ends_a_removed_users_session(runtime: Runtime) {
    let (server, mut jacky, mut bob) = delivery_in_flight(runtime, &[]);

    server.rewrite_users(&USERS.replace("bob bob123\n", ""));
    reload(&server, 1, "users reloaded");
    // Its delivery was not acknowledged: its sender hears it failed.
    assert_eq!(jacky.recv(), FAILED);
    bob.expect_la_closed();
    assert_eq!(jacky.request("/list"), "301 jacky\n");
    let mut again = server.connect();
    assert_eq!(again.request("/login bob bob123"), AUTH_FAILED);
}

fn sighup_with_a_broken_file_changes_nothing(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");

    // Dave is on line 1, but line 3 is wrong: the whole file is refused.
    server.rewrite_users("dave dave123\njacky 12345\nthree words here\n");
    reload(&server, 1, "the file is refused");
    server.expect_log("users.txt: line 3: expected `username password`");

    let mut dave = server.connect();
    assert_eq!(dave.request("/login dave dave123"), AUTH_FAILED);
    // Bob is not in the broken file, and stays; michael can still log in.
    let _michael = server.ready("michael", "michael123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");
    bob.ack();
    assert_eq!(jacky.recv(), OK);
}

/// A client that fails to log in `failures` times and is still connected.
fn failing(server: &ServerProcess, failures: usize) -> Client {
    let mut client = server.connect();
    for _ in 0..failures {
        assert_eq!(client.request("/login jacky wrong"), AUTH_FAILED);
    }
    client
}

fn sighup_applies_the_config_files_new_settings(runtime: Runtime) {
    let config = TempFile::new(
        "im-server.toml",
        b"max-login-failures = 3\ncluster-lease = \"3s\"\nlog = \"debug\"\n",
    );
    let shown = config.path().display().to_string();
    let (server, mut jacky, mut bob) = delivery_in_flight(runtime, &["--config", &shown]);
    let mut typo = failing(&server, 2);

    // `log` loses to the command line's `--log debug`, on a reload as at the start.
    let text = "max-login-failures = 1\ncluster-lease = \"9s\"\nlog = \"error\"\n";
    std::fs::write(config.path(), text).unwrap();
    let debug_lines = server.log_count("Lb connected");
    reload(&server, 1, "users reloaded");
    server.expect_log("SIGHUP: max-login-failures = 1 (was 3)");
    server.expect_log(&format!(
        "SIGHUP: cluster-lease changed in {shown}: takes effect at restart"
    ));
    assert_eq!(server.log_count("SIGHUP: log"), 0, "{}", server.stderr());

    // A new connection has one attempt; the one that began under 3 has used two, and gets
    // no more than the new limit either.
    failing(&server, 1).expect_la_closed();
    assert_eq!(typo.request("/login jacky wrong"), AUTH_FAILED);
    typo.expect_la_closed();
    // The conversation goes on, and the log is still at debug.
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    let _michael = server.ready("michael", "michael123");
    server.expect_log("Lb connected");
    assert!(server.log_count("Lb connected") > debug_lines);

    // The same file again: nothing more changes, the warning comes again.
    reload(&server, 2, "users reloaded");
    assert_eq!(server.log_count("SIGHUP: max-login-failures"), 1);
    assert_eq!(server.log_count("cluster-lease changed"), 2);
}

fn sighup_with_a_broken_config_file_changes_nothing(runtime: Runtime) {
    let config = TempFile::new("im-server.toml", b"max-login-failures = 3\n");
    let shown = config.path().display().to_string();
    let (server, mut jacky, mut bob) = delivery_in_flight(runtime, &["--config", &shown]);

    // A new user and a lower limit, but a key the server does not know, then a bad value:
    // refused whole, each time.
    server.rewrite_users(&format!("{USERS}dave dave123\n"));
    std::fs::write(config.path(), "max-login-failures = 1\n\nmax-lines = 3\n").unwrap();
    reload(&server, 1, "the file is refused");
    server.expect_log(&format!(
        "SIGHUP: {shown}: line 3: unknown key \"max-lines\""
    ));
    std::fs::write(
        config.path(),
        "max-login-failures = 1\nack-timeout = \"0s\"\n",
    )
    .unwrap();
    reload(&server, 2, "the file is refused");
    server.expect_log(&format!("SIGHUP: {shown}: line 2: "));

    let mut dave = server.connect();
    assert_eq!(dave.request("/login dave dave123"), AUTH_FAILED);
    // Still three attempts a connection: dave's connection has used one.
    assert_eq!(dave.request("/login jacky wrong"), AUTH_FAILED);
    assert_eq!(
        dave.request("/login michael michael123"),
        "101 Authentication successful\n"
    );
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    assert_eq!(server.log_count("users reloaded"), 0);
}

/// The server exits, successfully, within [`STEP`].
fn exits_cleanly(server: &mut ServerProcess, after: &str) {
    let exit = server
        .wait_exit(STEP)
        .unwrap_or_else(|| panic!("still running after {after}"));
    assert!(exit.success(), "{exit:?}");
}

fn sigterm_answers_a_delivery_in_flight_then_exits(runtime: Runtime) {
    let (mut server, mut jacky, mut bob) = delivery_in_flight(runtime, &[]);
    let mut idle = server.ready("alice", "alice123");

    server.signal("TERM");
    server.expect_log("requests in flight");
    // Nothing in flight for alice: she is let go at once; the others wait for bob's ack.
    idle.expect_la_closed();
    assert!(server.wait_exit(Duration::from_millis(200)).is_none());
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    jacky.expect_la_closed();
    bob.expect_la_closed();
    exits_cleanly(&mut server, "the stop");
    server.expect_log("stopped: every connection is closed");
}

fn sigterm_fails_a_delivery_not_acked_within_the_ack_timeout(runtime: Runtime) {
    let (mut server, mut jacky, bob) = delivery_in_flight(runtime, &["--ack-timeout", "1s"]);
    let asked = Instant::now();
    server.signal("TERM");
    // Bob never acknowledges it: jacky hears `304` before his connection closes.
    assert_eq!(jacky.recv(), FAILED);
    jacky.expect_la_closed();
    // Closed here too, so that the server need not linger for their ends.
    drop((jacky, bob));
    exits_cleanly(&mut server, "the stop");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

fn a_second_sigterm_stops_at_once(runtime: Runtime) {
    let (mut server, _jacky, _bob) = delivery_in_flight(runtime, &["--ack-timeout", "60s"]);
    server.signal("TERM");
    server.expect_log("requests in flight");
    assert!(server.wait_exit(Duration::from_millis(200)).is_none());
    server.signal("TERM");
    exits_cleanly(&mut server, "a second SIGTERM");
    server.expect_log("stopping at once");
}
