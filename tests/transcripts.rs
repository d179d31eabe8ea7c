//! Exact byte transcripts, per connection, of the assignment appendix's conversation and of
//! every failure path, held as insta snapshots in `snapshots/` and reviewed like code.
//!
//! Each scenario runs on the in-memory [`Net`] with its manual clock, so the transcripts are
//! the same on every run. In them `<-` is client to server and `->` server to client; bytes
//! other than printable ASCII are escaped (`\n`, `\r`, `\t`, `\\`, `\xNN`).

mod common;

use std::time::Duration;

use simple_im_core::server::ServerConfig;

use common::sim::{appendix_users, ClientId, LbMode, Net};

/// Snapshots `net`'s transcript as `snapshots/server_<name>.snap`.
fn snapshot(name: &str, description: &str, net: &Net) {
    let name = format!("server_{name}");
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
        description => description,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name.as_str(), net.transcript());
    });
}

/// Moves the clock to `secs` seconds after the start.
fn at(net: &mut Net, secs: u64) {
    let target = Duration::from_secs(secs);
    assert!(target >= net.elapsed(), "the clock only moves forward");
    net.advance(target - net.elapsed());
}

/// Sends each line (given without `\n`) in its own chunk.
fn send_each(net: &mut Net, client: ClientId, lines: &[&str]) {
    for line in lines {
        net.send_la(client, format!("{line}\n").as_bytes());
    }
}

/// A logged-in client without Lb.
fn logged_in(net: &mut Net, name: &str, password: &str) -> ClientId {
    let client = net.connect(name);
    net.send_la(client, format!("/login {name} {password}\n").as_bytes());
    client
}

#[test]
fn appendix_conversation() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let michael = net.connect_ready("michael", "michael123");

    let jacky = net.connect("jacky");
    net.send_la(jacky, b"/login jacky 12345\n");
    at(&mut net, 10);
    net.send_la(jacky, b"/port 30232\n");
    at(&mut net, 20);
    net.send_la(jacky, b"/list\n");
    at(&mut net, 30);
    net.send_la(jacky, b"/to bob Hello! Nice to meet you!\n");
    at(&mut net, 32);
    net.ack(bob);
    at(&mut net, 40);
    net.send_la(jacky, b"/to michael Hi, Michael!\n");
    at(&mut net, 42);
    net.ack(michael);
    at(&mut net, 49);
    net.send_la(michael, b"/to jacky Hi, Jacky!\n");
    at(&mut net, 51);
    net.ack(jacky);
    at(&mut net, 60);
    net.send_la(jacky, b"/toall How about meeting at 3pm today?\n");
    at(&mut net, 62);
    net.ack(bob);
    net.ack(michael);
    at(&mut net, 69);
    net.send_la(bob, b"/to jacky Jacky, nice to meet you too!\n");
    at(&mut net, 71);
    net.ack(jacky);
    at(&mut net, 89);
    net.send_la(bob, b"/toall OK.\n");
    at(&mut net, 91);
    net.ack(jacky);
    net.ack(michael);
    at(&mut net, 99);
    net.send_la(michael, b"/toall No problem.\n");
    at(&mut net, 101);
    net.ack(jacky);
    net.ack(bob);
    at(&mut net, 110);
    net.send_la(jacky, b"/exit\n");

    assert!(net.is_closed(jacky));
    assert!(!net.is_closed(bob) && !net.is_closed(michael));
    snapshot(
        "appendix",
        "The assignment appendix: bob and michael online, jacky logs in, chats and exits.",
        &net,
    );
}

#[test]
fn login_failures_answer_102() {
    let mut net = Net::appendix();
    let _bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect("jacky");
    send_each(
        &mut net,
        jacky,
        &[
            "/login jacky wrong",  // wrong password
            "/login nobody 12345", // unknown user
            "/login bob bob123",   // already online
            "/login jacky 12345",  // right
        ],
    );
    snapshot(
        "102_failures",
        "102 for a wrong password, an unknown user and a user already online; then 101.",
        &net,
    );
}

#[test]
fn login_failure_limit_closes() {
    let mut net = Net::appendix();
    let mallory = net.connect("mallory");
    for _ in 0..5 {
        net.send_la(mallory, b"/login jacky guess\n");
    }
    assert!(net.is_closed(mallory));
    snapshot(
        "102_limit",
        "Five failed logins in a row: the fifth 102 is the last thing sent, then the close.",
        &net,
    );
}

#[test]
fn login_timeout_closes() {
    let mut net = Net::appendix();
    let idle = net.connect("idle");
    at(&mut net, 299);
    assert!(!net.is_closed(idle));
    at(&mut net, 300);
    assert!(net.is_closed(idle));
    snapshot(
        "login_timeout",
        "A connection that does not log in within 300 s is closed, without a word.",
        &net,
    );
}

#[test]
fn refused_lb_answers_202() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = logged_in(&mut net, "jacky", "12345");
    net.set_lb_mode(jacky, LbMode::Refuse);
    net.send_la(jacky, b"/port 30232\n");
    assert!(net.is_closed(jacky));
    net.send_la(bob, b"/list\n");
    snapshot(
        "202_refused",
        "Lb is refused: 202, the session ends and jacky is offline at once.",
        &net,
    );
}

#[test]
fn lb_connect_timeout_answers_202() {
    let mut net = Net::appendix();
    let jacky = logged_in(&mut net, "jacky", "12345");
    net.set_lb_mode(jacky, LbMode::Hang);
    net.send_la(jacky, b"/port 30232\n");
    at(&mut net, 4);
    assert!(!net.is_closed(jacky));
    at(&mut net, 5);
    assert!(net.is_closed(jacky));
    snapshot(
        "202_timeout",
        "Lb never answers: 202 after the 5 s connect timeout, and the session ends.",
        &net,
    );
}

#[test]
fn delivery_to_offline_answers_304() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let _michael = logged_in(&mut net, "michael", "michael123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to nobody hi\n");
    net.send_la(jacky, b"/to michael hi\n");
    net.send_la(bob, b"/exit\n");
    net.send_la(jacky, b"/to bob hi\n");
    snapshot(
        "304_offline",
        "304 for an unknown user, an online user without Lb yet, and a user who exited.",
        &net,
    );
}

#[test]
fn ack_timeout_answers_304() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    at(&mut net, 9);
    assert!(!net.is_closed(bob));
    at(&mut net, 10);
    assert!(net.is_closed(bob));
    net.send_la(jacky, b"/list\n");
    snapshot(
        "304_ack_timeout",
        "bob never acknowledges: after 10 s jacky gets 304 and bob's session ends.",
        &net,
    );
}

#[test]
fn wrong_ack_answers_304() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    net.send_lb(bob, b"303 Message delivery successful\n");
    assert!(net.is_closed(bob));
    snapshot(
        "304_wrong_ack",
        "bob answers on Lb with something other than 302: 304, and bob is closed.",
        &net,
    );
}

#[test]
fn dropped_lb_answers_304() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/to bob hi\n");
    net.drop_lb(bob);
    assert!(net.is_closed(bob));
    snapshot(
        "304_dropped_lb",
        "bob's Lb goes away with a message outstanding: 304, and bob's session ends.",
        &net,
    );
}

#[test]
fn toall_with_one_failure_answers_304() {
    let mut net = Net::appendix();
    let bob = net.connect_ready("bob", "bob123");
    let michael = net.connect_ready("michael", "michael123");
    let jacky = net.connect_ready("jacky", "12345");
    net.send_la(jacky, b"/toall hi all\n");
    at(&mut net, 1);
    net.ack(bob);
    at(&mut net, 10);
    assert!(net.is_closed(michael));
    snapshot(
        "304_toall_partial",
        "/toall: bob acknowledges, michael never does; one 304 once michael times out.",
        &net,
    );
}

#[test]
fn malformed_lines_before_login_answer_401() {
    let mut net = Net::appendix();
    let jacky = net.connect("jacky");
    send_each(
        &mut net,
        jacky,
        &[
            "/login a",
            "/login a b c",
            "/login  a b",
            "/login a  b",
            "hello",
            "",
            "/LIST",
            "/list",
            "/port 30232",
            "/to bob hi",
            "/toall hi",
            "/exit x",
            "/login jacky 12345",
        ],
    );
    assert!(!net.is_closed(jacky));
    snapshot(
        "401_unauthenticated",
        "Malformed and out-of-state lines before login: one 401 each; the login still works.",
        &net,
    );
}

#[test]
fn malformed_lines_before_port_answer_401() {
    let mut net = Net::appendix();
    let jacky = logged_in(&mut net, "jacky", "12345");
    send_each(
        &mut net,
        jacky,
        &[
            "/list",
            "/port",
            "/port ",
            "/port 0",
            "/port 65536",
            "/port -1",
            "/port +5",
            "/port 12ab",
            "/port 30232 x",
            "/login jacky 12345",
            "/to jacky hi",
            "/toall hi",
            "/port 30232",
        ],
    );
    assert!(!net.is_closed(jacky));
    snapshot(
        "401_authenticated",
        "Logged in, no Lb yet: /list and bad /port forms get 401; a good /port still works.",
        &net,
    );
}

#[test]
fn malformed_lines_when_ready_answer_401() {
    let mut net = Net::appendix();
    let _bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    send_each(
        &mut net,
        jacky,
        &[
            "/list x",
            "/to bob",
            "/to bob ",
            "/to  bob hi",
            "/toall",
            "/toall ",
            "/exit x",
            "hello",
            "",
            "/LIST",
            "/login jacky 12345",
            "/port 30232",
            "/list",
        ],
    );
    assert!(!net.is_closed(jacky));
    snapshot(
        "401_ready",
        "Ready: malformed lines, /login and /port get 401 and the connection stays usable.",
        &net,
    );
}

#[test]
fn over_long_line_answers_one_401() {
    let mut net = Net::new(
        appendix_users(),
        ServerConfig {
            max_line: 32,
            ..ServerConfig::default()
        },
    );
    let bob = net.connect_ready("bob", "bob123");
    let jacky = net.connect_ready("jacky", "12345");
    // 49 bytes, in two chunks: one 401, the rest of the line is discarded.
    net.send_la_chunks(
        jacky,
        &[b"/toall 0123456789", b"0123456789012345678901234567890\n"],
    );
    // 32 bytes with the `\n`: just fits.
    net.send_la(jacky, b"/to bob 01234567890123456789012\n");
    net.ack(bob);
    // 33 bytes: one too many.
    net.send_la(jacky, b"/to bob 012345678901234567890123\n");
    net.send_la(jacky, b"/list\n");
    snapshot(
        "401_over_long",
        "--max-line 32: an over-long line gets one 401 and is discarded; 32 bytes fit, 33 do not.",
        &net,
    );
}
