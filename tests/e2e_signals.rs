//! End-to-end tests of `im-server` as a service: SIGHUP reads the users file again, SIGTERM
//! stops gracefully (the requests in flight are answered first), a second SIGTERM stops at
//! once. Every scenario runs once per server runtime: `smol::<name>`, `threads::<name>`,
//! `tokio::<name>`, `uring::<name>` (with the `uring` feature).

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::harness::{Runtime, ServerProcess, STEP, USERS};

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const AUTH_FAILED: &str = "102 Authentication failed\n";

in_each_server_runtime!(
    sighup_lets_a_new_user_in_and_a_conversation_goes_on,
    sighup_ends_a_removed_users_session,
    sighup_with_a_broken_file_changes_nothing,
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

fn sighup_lets_a_new_user_in_and_a_conversation_goes_on(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

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
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

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

fn sigterm_answers_a_delivery_in_flight_then_exits(runtime: Runtime) {
    let mut server = ServerProcess::start(runtime, USERS, &[]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    let mut idle = server.ready("alice", "alice123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

    server.signal("TERM");
    server.expect_log("requests in flight");
    // Nothing in flight for alice: she is let go at once; the others wait for bob's ack.
    idle.expect_la_closed();
    assert!(server.wait_exit(Duration::from_millis(200)).is_none());
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    jacky.expect_la_closed();
    bob.expect_la_closed();
    let exit = server
        .wait_exit(STEP)
        .expect("still running after the stop");
    assert!(exit.success(), "{exit:?}");
    server.expect_log("stopped: every connection is closed");
}

fn sigterm_fails_a_delivery_not_acked_within_the_ack_timeout(runtime: Runtime) {
    let mut server = ServerProcess::start(runtime, USERS, &["--ack-timeout", "1s"]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

    let asked = Instant::now();
    server.signal("TERM");
    // Bob never acknowledges it: jacky hears `304` before his connection closes.
    assert_eq!(jacky.recv(), FAILED);
    jacky.expect_la_closed();
    // Closed here too, so that the server need not linger for their ends.
    drop((jacky, bob));
    let exit = server
        .wait_exit(STEP)
        .expect("still running after the stop");
    assert!(exit.success(), "{exit:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

fn a_second_sigterm_stops_at_once(runtime: Runtime) {
    let mut server = ServerProcess::start(runtime, USERS, &["--ack-timeout", "60s"]);
    let mut jacky = server.ready("jacky", "12345");
    let mut bob = server.ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

    server.signal("TERM");
    server.expect_log("requests in flight");
    assert!(server.wait_exit(Duration::from_millis(200)).is_none());
    server.signal("TERM");
    let exit = server
        .wait_exit(STEP)
        .expect("still running after a second SIGTERM");
    assert!(exit.success(), "{exit:?}");
    server.expect_log("stopping at once");
}
