//! `im-client` on a real pseudo-terminal (docs/protocol.md §4), against the real `im-server`,
//! in both runtimes (`smol::<name>`, `threads::<name>`): the exact prompts, the password never
//! on screen, line editing that incoming messages do not break, history, Ctrl-C and Ctrl-D.
//! Every expectation waits at most [`EXPECT_MS`].

#[macro_use]
mod common;

use std::process::Command;

use common::harness::{Client, Runtime, ServerProcess, CLIENT_BIN, USERS};
use rexpect::process::wait::WaitStatus;
use rexpect::session::{spawn_command, PtySession};

in_each_runtime!(
    the_prompts_are_exact_and_the_password_is_never_on_screen,
    a_message_arriving_mid_line_leaves_the_line_intact_and_it_is_sent_whole,
    up_arrow_recalls_and_resends_the_previous_command,
    ctrl_c_exits_0_after_310,
    ctrl_d_exits_0_after_310,
);

/// The bound on every expectation, in milliseconds.
const EXPECT_MS: u64 = 5_000;

/// The Enter key, as a terminal sends it.
const ENTER: &str = "\r";

/// The Up arrow key.
const UP: &str = "\x1b[A";

/// Ctrl-C, as a terminal sends it.
const CTRL_C: &str = "\x03";

/// Ctrl-D, as a terminal sends it.
const CTRL_D: &str = "\x04";

/// Types `keys` on the terminal, at once.
fn press(pty: &mut PtySession, keys: &str) {
    pty.send(keys).unwrap();
    pty.flush().unwrap();
}

const OK: &str = "303 Message delivery successful\n";

/// Starts `im-client` on a new pseudo-terminal against `server`, with echo on as in a real
/// terminal (rexpect turns it off), so that a password echoed by mistake would show.
fn start(runtime: Runtime, server: &ServerProcess) -> PtySession {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "stty echo && exec \"$0\" \"$@\"",
        CLIENT_BIN,
        &server.addr.ip().to_string(),
        &server.addr.port().to_string(),
        "--runtime",
        runtime.name(),
    ]);
    spawn_command(command, Some(EXPECT_MS)).expect("im-client starts on a pty")
}

/// Logs in as jacky and waits until Lb is up.
fn log_in(pty: &mut PtySession) {
    pty.exp_string("Please input your user name:\r\n").unwrap();
    press(pty, &format!("jacky{ENTER}"));
    pty.exp_string("Please input your password:\r\n").unwrap();
    press(pty, &format!("12345{ENTER}"));
    pty.exp_string("201 Build connection successful\r\n")
        .unwrap();
}

/// Waits for the client to end and returns its exit code.
fn exit_code(mut pty: PtySession) -> Option<i32> {
    pty.exp_eof().unwrap();
    match pty.process_mut().wait().unwrap() {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    }
}

fn the_prompts_are_exact_and_the_password_is_never_on_screen(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut pty = start(runtime, &server);
    // The first prompt is the very first thing on screen, a line of its own.
    let before = pty.exp_string("Please input your user name:\r\n").unwrap();
    assert_eq!(before, "");
    press(&mut pty, &format!("jacky{ENTER}"));
    let typed = pty.exp_string("Please input your password:\r\n").unwrap();
    assert!(
        typed.contains("jacky"),
        "the user name is echoed: {typed:?}"
    );
    press(&mut pty, &format!("12345{ENTER}"));
    let screen = pty.exp_string("101 Authentication successful\r\n").unwrap();
    assert!(
        !screen.contains("12345"),
        "the password is on screen: {screen:?}"
    );
    let screen = pty
        .exp_string("201 Build connection successful\r\n")
        .unwrap();
    assert!(
        !screen.contains("12345"),
        "the password is on screen: {screen:?}"
    );
    press(&mut pty, &format!("/exit{ENTER}"));
    pty.exp_string("310 Bye bye").unwrap();
    assert_eq!(exit_code(pty), Some(0));
}

fn a_message_arriving_mid_line_leaves_the_line_intact_and_it_is_sent_whole(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut bob: Client = server.ready("bob", "bob123");
    let mut pty = start(runtime, &server);
    log_in(&mut pty);
    press(&mut pty, "/to bob hel");
    pty.exp_string("/to bob hel").unwrap();
    // Answered once jacky's client has shown and acknowledged it.
    assert_eq!(bob.request("/to jacky ping"), OK);
    pty.exp_string("/from bob ping").unwrap();
    // The half-typed line is drawn again below the message, as it was.
    pty.exp_string("/to bob hel").unwrap();
    press(&mut pty, &format!("lo{ENTER}"));
    assert_eq!(bob.recv_lb(), "/from jacky hello\n");
    bob.ack();
    pty.exp_string("303 Message delivery successful").unwrap();
    press(&mut pty, &format!("/exit{ENTER}"));
    pty.exp_string("310 Bye bye").unwrap();
    assert_eq!(exit_code(pty), Some(0));
}

fn up_arrow_recalls_and_resends_the_previous_command(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut bob: Client = server.ready("bob", "bob123");
    let mut pty = start(runtime, &server);
    log_in(&mut pty);
    press(&mut pty, &format!("/to bob once{ENTER}"));
    assert_eq!(bob.recv_lb(), "/from jacky once\n");
    bob.ack();
    pty.exp_string("303 Message delivery successful").unwrap();
    press(&mut pty, UP);
    pty.exp_string("/to bob once").unwrap();
    press(&mut pty, ENTER);
    assert_eq!(bob.recv_lb(), "/from jacky once\n");
    bob.ack();
    pty.exp_string("303 Message delivery successful").unwrap();
    press(&mut pty, CTRL_C);
    pty.exp_string("310 Bye bye").unwrap();
    assert_eq!(exit_code(pty), Some(0));
}

fn ctrl_c_exits_0_after_310(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut pty = start(runtime, &server);
    log_in(&mut pty);
    // Half a line typed: Ctrl-C leaves all the same.
    press(&mut pty, "/list");
    pty.exp_string("/list").unwrap();
    press(&mut pty, CTRL_C);
    pty.exp_string("310 Bye bye\r\n").unwrap();
    assert_eq!(exit_code(pty), Some(0));
}

fn ctrl_d_exits_0_after_310(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut pty = start(runtime, &server);
    log_in(&mut pty);
    press(&mut pty, CTRL_D);
    pty.exp_string("310 Bye bye\r\n").unwrap();
    assert_eq!(exit_code(pty), Some(0));
}
