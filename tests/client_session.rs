//! Scenario tests for [`ClientSession`]: a manual clock, an in-memory fake server and a
//! transcript of everything that crosses the session's edges. Events are rendered the way the
//! terminal prints them ([`render`]), so the transcripts hold the client's exact
//! output; the typed events themselves are checked in the tests at the end.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use simple_im_core::client::{
    Asked, ClientConfig, ClientError, ClientEvent, ClientInput, ClientOutput, ClientSession,
    ClientWarning, Connection, DeliveryKind, Prompt, Reply, PASSWORD_PROMPT, TOKEN_HINT,
    USER_PROMPT,
};
use simple_im_core::protocol::{self, Request};
use simple_im_core::render::{render, Rendered};

/// A session output as the tests see it: an event as the terminal renders it (milestones,
/// which the terminal does not print, are left out), or any other output as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    /// A line for standard output.
    Print(Vec<u8>),
    /// A line for standard error.
    Error(String),
    /// Anything but an event.
    Do(ClientOutput),
}

impl Out {
    fn of(output: &ClientOutput) -> Option<Out> {
        match output {
            ClientOutput::Event(event) => match render(event)? {
                Rendered::Stdout(line) => Some(Out::Print(line)),
                Rendered::Stderr(line) => Some(Out::Error(line)),
            },
            other => Some(Out::Do(other.clone())),
        }
    }
}

/// The port the fake adapter reports for the Lb listener.
const LB_PORT: u16 = 40_000;

/// An owned [`ClientInput`], so tests and the fake server can queue inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Line(Vec<u8>),
    StdinClosed,
    Interrupted,
    La(Vec<u8>),
    LaClosed,
    LbListening(u16),
    LbListenFailed,
    LbAccepted,
    Lb(Vec<u8>),
    LbClosed,
    /// Not an input: the manual clock moves on and due timers fire.
    Advance(Duration),
}

impl Ev {
    fn la(line: &[u8]) -> Ev {
        Ev::La(protocol::line_bytes(line))
    }

    fn lb(line: &[u8]) -> Ev {
        Ev::Lb(protocol::line_bytes(line))
    }

    fn line(text: &str) -> Ev {
        Ev::Line(text.as_bytes().to_vec())
    }
}

/// Bytes as readable text: ASCII stays, anything else is escaped, so transcripts are exact.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// One session, a manual clock, and a transcript of inputs (`>`) and outputs (`<`).
struct Harness {
    session: ClientSession,
    start: Instant,
    now: Instant,
    transcript: Vec<String>,
    /// Outputs not yet taken by the test, as the terminal renders them.
    pending: VecDeque<Out>,
    /// Events not yet taken by the test, typed.
    events: Vec<ClientEvent>,
    exits: Vec<i32>,
}

impl Harness {
    fn new(interactive: bool) -> Self {
        Harness::with_config(ClientConfig {
            interactive,
            ..ClientConfig::default()
        })
    }

    fn with_config(config: ClientConfig) -> Self {
        let start = Instant::now();
        let mut harness = Harness {
            session: ClientSession::new(start, config),
            start,
            now: start,
            transcript: Vec::new(),
            pending: VecDeque::new(),
            events: Vec::new(),
            exits: Vec::new(),
        };
        harness.drain();
        harness
    }

    /// Feeds one event and collects what the session asks for.
    fn feed(&mut self, event: &Ev) {
        self.transcript.push(match event {
            Ev::Line(line) if line.is_empty() => "stdin > (empty line)".to_owned(),
            Ev::Line(line) => format!("stdin > {}", show(line)),
            Ev::StdinClosed => "stdin > (end of file)".to_owned(),
            Ev::Interrupted => "stdin > (Ctrl-C)".to_owned(),
            Ev::La(bytes) => format!("La    > {}", show(bytes)),
            Ev::LaClosed => "La    > (closed)".to_owned(),
            Ev::LbListening(port) => format!("Lb    > (listening on port {port})"),
            Ev::LbListenFailed => "Lb    > (listen failed)".to_owned(),
            Ev::LbAccepted => "Lb    > (accepted)".to_owned(),
            Ev::Lb(bytes) => format!("Lb    > {}", show(bytes)),
            Ev::LbClosed => "Lb    > (closed)".to_owned(),
            Ev::Advance(by) => format!("clock > +{}ms", by.as_millis()),
        });
        let now = self.now;
        match event {
            Ev::Line(line) => self.session.handle_input(now, ClientInput::Line(line)),
            Ev::StdinClosed => self.session.handle_input(now, ClientInput::StdinClosed),
            Ev::Interrupted => self.session.handle_input(now, ClientInput::Interrupted),
            Ev::La(bytes) => self.session.handle_input(now, ClientInput::LaData(bytes)),
            Ev::LaClosed => self.session.handle_input(now, ClientInput::LaClosed),
            Ev::LbListening(port) => self
                .session
                .handle_input(now, ClientInput::LbListening(*port)),
            Ev::LbListenFailed => self.session.handle_input(now, ClientInput::LbListenFailed),
            Ev::LbAccepted => self.session.handle_input(now, ClientInput::LbAccepted),
            Ev::Lb(bytes) => self.session.handle_input(now, ClientInput::LbData(bytes)),
            Ev::LbClosed => self.session.handle_input(now, ClientInput::LbClosed),
            Ev::Advance(by) => {
                self.now += *by;
                // As a runtime would: fire the timer only once it is due.
                if self.session.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.session.handle_timeout(self.now);
                }
            }
        }
        self.drain();
    }

    fn feed_all(&mut self, events: &[Ev]) {
        for event in events {
            self.feed(event);
        }
    }

    fn drain(&mut self) {
        while let Some(output) = self.session.poll_output() {
            assert!(self.exits.is_empty(), "{output:?} after Exit");
            if let ClientOutput::Exit(code) = output {
                self.exits.push(code);
            }
            if let ClientOutput::Event(event) = &output {
                self.events.push(event.clone());
            }
            let Some(out) = Out::of(&output) else {
                continue;
            };
            self.transcript.push(match &out {
                Out::Print(line) => format!("out   < {}", show(line)),
                Out::Error(line) => format!("err   < {line}"),
                Out::Do(ClientOutput::ReadLine { secret: false }) => {
                    "stdin < (read a line)".to_owned()
                }
                Out::Do(ClientOutput::ReadLine { secret: true }) => {
                    "stdin < (read a secret)".to_owned()
                }
                Out::Do(ClientOutput::SendLa(bytes)) => format!("La    < {}", show(bytes)),
                Out::Do(ClientOutput::ListenLb) => "Lb    < (listen)".to_owned(),
                Out::Do(ClientOutput::SendLb(bytes)) => format!("Lb    < {}", show(bytes)),
                Out::Do(ClientOutput::Exit(code)) => format!("exit  < {code}"),
                Out::Do(ClientOutput::Event(_)) => unreachable!("events are rendered"),
            });
            self.pending.push_back(out);
        }
    }

    /// The typed events since the last call.
    fn take_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.events)
    }

    /// The outputs since the last call.
    fn take(&mut self) -> Vec<Out> {
        self.pending.drain(..).collect()
    }

    fn exit_code(&self) -> Option<i32> {
        assert!(
            self.exits.len() <= 1,
            "more than one Exit: {:?}",
            self.exits
        );
        self.exits.first().copied()
    }

    /// Logs in as `alice` and brings Lb up (accepted before `201`), then takes the outputs.
    fn logged_in(interactive: bool) -> Self {
        let mut harness = Harness::new(interactive);
        harness.feed_all(&[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
            Ev::LbListening(LB_PORT),
            Ev::LbAccepted,
            Ev::la(protocol::LB_OK),
        ]);
        assert_eq!(harness.take().last(), Some(&read_line()));
        harness.take_events();
        harness
    }

    fn rendered(&self) -> String {
        self.transcript.join("\n")
    }
}

fn print(text: &[u8]) -> Out {
    Out::Print(text.to_vec())
}

fn read_line() -> Out {
    Out::Do(ClientOutput::ReadLine { secret: false })
}

fn read_secret() -> Out {
    Out::Do(ClientOutput::ReadLine { secret: true })
}

fn send_la(bytes: &[u8]) -> Out {
    Out::Do(ClientOutput::SendLa(bytes.to_vec()))
}

fn send_lb_receipt() -> Out {
    Out::Do(ClientOutput::SendLb(protocol::receipt_bytes()))
}

fn send_exit() -> Out {
    send_la(&Request::Exit.to_bytes())
}

fn listen_lb() -> Out {
    Out::Do(ClientOutput::ListenLb)
}

fn exit(code: i32) -> Out {
    Out::Do(ClientOutput::Exit(code))
}

fn ask_both() -> Vec<Out> {
    vec![print(USER_PROMPT), read_line()]
}

fn errors(outputs: &[Out]) -> Vec<&str> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Out::Error(line) => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

/// A step of a conversation script: something typed, or something the server does unasked.
enum Step {
    Type(&'static [u8]),
    Server(Ev),
}

/// A server in memory that answers the client's requests the way docs/protocol.md §3 does.
struct FakeServer {
    users: &'static [(&'static [u8], &'static [u8])],
    /// Names of the other users online, after the one logged in here.
    others_online: &'static [&'static [u8]],
    user: Option<Vec<u8>>,
    /// Report the Lb accept before sending `201` (or after it).
    accept_before_201: bool,
    /// On `/exit`, close Lb before `310` is written on La (the race of §4, step 7).
    close_lb_before_bye: bool,
    /// The answer held back until the client acknowledges a delivery to itself.
    awaiting_receipt: Option<&'static [u8]>,
    receipts: usize,
}

impl FakeServer {
    fn new() -> Self {
        FakeServer {
            users: &[(b"alice", b"secret"), (b"bob", b"hunter2")],
            others_online: &[b"bob"],
            user: None,
            accept_before_201: true,
            close_lb_before_bye: false,
            awaiting_receipt: None,
            receipts: 0,
        }
    }

    fn on_request(&mut self, line: &[u8]) -> Vec<Ev> {
        let logged_in = self.user.is_some();
        match Request::parse(line) {
            Ok(Request::Login { user, password }) if !logged_in => {
                if self.users.contains(&(user, password)) {
                    self.user = Some(user.to_vec());
                    vec![Ev::la(protocol::AUTH_OK)]
                } else {
                    vec![Ev::la(protocol::AUTH_FAILED)]
                }
            }
            Ok(Request::Port(port)) if logged_in => {
                assert_eq!(port, LB_PORT);
                if self.accept_before_201 {
                    vec![Ev::LbAccepted, Ev::la(protocol::LB_OK)]
                } else {
                    vec![Ev::la(protocol::LB_OK), Ev::LbAccepted]
                }
            }
            Ok(Request::List) if logged_in => {
                let mut names = vec![self.user.as_deref().unwrap_or_default()];
                names.extend(self.others_online.iter().copied());
                let mut answer = Vec::new();
                protocol::write_list(names, &mut answer);
                vec![Ev::La(answer)]
            }
            Ok(Request::To { target, content }) if logged_in => {
                let sender = self.user.clone().unwrap_or_default();
                if target == sender.as_slice() {
                    self.awaiting_receipt = Some(protocol::DELIVERED);
                    let from = protocol::Delivery::From {
                        sender: &sender,
                        content,
                    };
                    vec![Ev::Lb(from.to_bytes())]
                } else if self.others_online.contains(&target) {
                    vec![Ev::la(protocol::DELIVERED)]
                } else {
                    vec![Ev::la(protocol::DELIVERY_FAILED)]
                }
            }
            Ok(Request::ToAll { .. }) if logged_in => vec![Ev::la(protocol::DELIVERED)],
            Ok(Request::Exit) if self.close_lb_before_bye && logged_in => {
                vec![Ev::LbClosed, Ev::la(protocol::BYE), Ev::LaClosed]
            }
            Ok(Request::Exit) => vec![Ev::la(protocol::BYE), Ev::LbClosed, Ev::LaClosed],
            _ => vec![Ev::la(protocol::UNRECOGNIZED)],
        }
    }

    fn on_lb(&mut self, line: &[u8]) -> Vec<Ev> {
        assert_eq!(line, protocol::RECEIPT);
        self.receipts += 1;
        self.awaiting_receipt
            .take()
            .map(|answer| vec![Ev::la(answer)])
            .unwrap_or_default()
    }
}

/// Runs a whole conversation: the session's outputs drive the fake server and the script until
/// the session exits or waits for something the script does not give (then stdin ends).
fn converse(harness: &mut Harness, server: &mut FakeServer, script: Vec<Step>) {
    let mut script: VecDeque<Step> = script.into();
    let mut stdin_closed = false;
    while harness.exits.is_empty() {
        let Some(output) = harness.pending.pop_front() else {
            return;
        };
        let answers = match output {
            Out::Do(ClientOutput::ReadLine { .. }) => {
                let mut events = Vec::new();
                loop {
                    match script.pop_front() {
                        Some(Step::Server(event)) => events.push(event),
                        Some(Step::Type(line)) => {
                            events.push(Ev::Line(line.to_vec()));
                            break;
                        }
                        None if !stdin_closed => {
                            stdin_closed = true;
                            events.push(Ev::StdinClosed);
                            break;
                        }
                        None => break,
                    }
                }
                events
            }
            Out::Do(ClientOutput::SendLa(bytes)) => bytes
                .strip_suffix(b"\n")
                .map(|line| server.on_request(line))
                .unwrap_or_default(),
            Out::Do(ClientOutput::SendLb(bytes)) => bytes
                .strip_suffix(b"\n")
                .map(|line| server.on_lb(line))
                .unwrap_or_default(),
            Out::Do(ClientOutput::ListenLb) => vec![Ev::LbListening(LB_PORT)],
            Out::Do(_) | Out::Print(_) | Out::Error(_) => Vec::new(),
        };
        for event in answers {
            if harness.exits.is_empty() {
                harness.feed(&event);
            }
        }
    }
}

fn snapshot(name: &str, transcript: &str) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, transcript);
    });
}

#[test]
fn piped_happy_path_reads_as_a_transcript() {
    let mut harness = Harness::new(false);
    let mut server = FakeServer::new();
    converse(
        &mut harness,
        &mut server,
        vec![
            Step::Type(b"alice"),
            Step::Type(b"secret"),
            Step::Type(b"/list"),
            Step::Type(b"/to bob hello bob"),
            Step::Server(Ev::lb(b"/from bob hi alice")),
            Step::Type(b"/to alice a note to self"),
            Step::Type(b"/toall hello everyone"),
            Step::Server(Ev::lb(b"/broadcastfrom bob hello too")),
            Step::Type(b"/exit"),
        ],
    );
    assert_eq!(harness.exit_code(), Some(0));
    assert_eq!(server.receipts, 3);
    assert!(errors(&harness.take()).is_empty());
    snapshot("client_piped_happy_path", &harness.rendered());
}

#[test]
fn interactive_retry_then_end_of_input_with_lb_closing_first() {
    let mut harness = Harness::new(true);
    let mut server = FakeServer::new();
    server.close_lb_before_bye = true;
    server.accept_before_201 = false;
    converse(
        &mut harness,
        &mut server,
        vec![
            Step::Type(b"alice"),
            Step::Type(b"wrong"),
            Step::Type(b"alice"),
            Step::Type(b"secret"),
            Step::Type(b""),
            Step::Type(b"/list"),
            Step::Type(b"/to carol hi"),
            Step::Type(b"hello?"),
        ],
    );
    assert_eq!(harness.exit_code(), Some(0));
    snapshot("client_interactive_retry_and_eof", &harness.rendered());
}

#[test]
fn start_asks_for_the_user_name() {
    let mut harness = Harness::new(true);
    assert_eq!(harness.take(), ask_both());
    assert_eq!(harness.session.poll_timeout(), None);
}

#[test]
fn login_sends_one_well_formed_request() {
    let mut harness = Harness::new(true);
    harness.take();
    harness.feed(&Ev::line("alice"));
    assert_eq!(harness.take(), vec![print(PASSWORD_PROMPT), read_secret()]);
    harness.feed(&Ev::line("secret\r"));
    assert_eq!(harness.take(), vec![send_la(b"/login alice secret\n")]);
}

#[test]
fn auth_failed_prints_and_asks_both_again() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[Ev::line("alice"), Ev::line("nope")]);
    harness.take();
    harness.feed(&Ev::la(protocol::AUTH_FAILED));
    let mut expected = vec![print(protocol::AUTH_FAILED)];
    expected.extend(ask_both());
    assert_eq!(harness.take(), expected);
    harness.feed_all(&[Ev::line("alice"), Ev::line("secret")]);
    assert_eq!(
        harness.take().last(),
        Some(&send_la(b"/login alice secret\n"))
    );
}

#[test]
fn unrecognized_during_login_prints_and_asks_both_again() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[Ev::line("alice"), Ev::line("secret")]);
    harness.take();
    harness.feed(&Ev::la(protocol::UNRECOGNIZED));
    let mut expected = vec![print(protocol::UNRECOGNIZED)];
    expected.extend(ask_both());
    assert_eq!(harness.take(), expected);
}

#[test]
fn a_user_name_or_password_that_is_not_one_word_is_not_sent() {
    for (user, password) in [
        ("", "x"),
        ("al ice", "x"),
        ("alice", ""),
        ("alice", "two words"),
    ] {
        let mut harness = Harness::new(true);
        harness.take();
        harness.feed(&Ev::line(user));
        if protocol::is_token(user.as_bytes()) {
            harness.feed(&Ev::line(password));
        }
        let outputs = harness.take();
        assert!(
            !outputs
                .iter()
                .any(|o| matches!(o, Out::Do(ClientOutput::SendLa(_)))),
            "{user:?} {password:?}: {outputs:?}"
        );
        let mut expected = vec![print(TOKEN_HINT)];
        expected.extend(ask_both());
        assert!(outputs.ends_with(&expected), "{outputs:?}");
    }
}

/// The server sends `201` on La before anything on Lb, but the two connections race to the
/// client: a delivery read first waits, and is shown and acknowledged after the `201`.
#[test]
fn an_lb_line_that_outruns_201_is_shown_after_it() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[Ev::line("alice"), Ev::line("secret")]);
    harness.take();
    harness.feed(&Ev::la(protocol::AUTH_OK));
    harness.take();
    harness.feed_all(&[Ev::LbListening(LB_PORT), Ev::LbAccepted]);
    assert_eq!(harness.take(), vec![send_la(b"/port 40000\n")]);
    harness.feed(&Ev::lb(b"/from bob hi"));
    assert_eq!(harness.take(), vec![]);
    harness.feed(&Ev::la(protocol::LB_OK));
    assert_eq!(
        harness.take(),
        vec![
            print(protocol::LB_OK),
            read_line(),
            print(b"/from bob hi"),
            send_lb_receipt()
        ]
    );
}

#[test]
fn lb_opens_with_201_before_or_after_the_accept() {
    for accept_first in [true, false] {
        let mut harness = Harness::new(true);
        harness.feed_all(&[Ev::line("alice"), Ev::line("secret")]);
        harness.take();
        harness.feed(&Ev::la(protocol::AUTH_OK));
        assert_eq!(harness.take(), vec![print(protocol::AUTH_OK), listen_lb()]);
        harness.feed(&Ev::LbListening(LB_PORT));
        assert_eq!(harness.take(), vec![send_la(b"/port 40000\n")]);
        let order = if accept_first {
            [Ev::LbAccepted, Ev::la(protocol::LB_OK)]
        } else {
            [Ev::la(protocol::LB_OK), Ev::LbAccepted]
        };
        harness.feed_all(&order);
        assert_eq!(harness.take(), vec![print(protocol::LB_OK), read_line()]);
        harness.feed(&Ev::lb(b"/from bob hi"));
        assert_eq!(
            harness.take(),
            vec![print(b"/from bob hi"), send_lb_receipt()]
        );
    }
}

#[test]
fn build_connection_failed_exits_1() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[
        Ev::line("alice"),
        Ev::line("secret"),
        Ev::la(protocol::AUTH_OK),
        Ev::LbListening(LB_PORT),
    ]);
    harness.take();
    harness.feed(&Ev::la(protocol::LB_FAILED));
    assert_eq!(harness.take(), vec![print(protocol::LB_FAILED), exit(1)]);
}

#[test]
fn a_listener_that_cannot_be_bound_exits_1() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[
        Ev::line("alice"),
        Ev::line("secret"),
        Ev::la(protocol::AUTH_OK),
    ]);
    harness.take();
    harness.feed(&Ev::LbListenFailed);
    let outputs = harness.take();
    assert_eq!(errors(&outputs).len(), 1);
    assert_eq!(outputs.last(), Some(&exit(1)));
}

#[test]
fn la_closing_exits_1_with_one_error_at_any_step() {
    let steps: [&[Ev]; 4] = [
        &[],
        &[Ev::line("alice"), Ev::line("secret")],
        &[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
        ],
        &[Ev::StdinClosed],
    ];
    for before in steps {
        let mut harness = Harness::new(true);
        harness.feed_all(before);
        harness.take();
        harness.feed(&Ev::LaClosed);
        let outputs = harness.take();
        assert_eq!(errors(&outputs).len(), 1, "{outputs:?}");
        assert!(errors(&outputs)[0].contains("server closed"));
        assert_eq!(outputs.last(), Some(&exit(1)));
    }
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/list"), Ev::LaClosed]);
    assert_eq!(harness.exit_code(), Some(1));
}

#[test]
fn lb_closing_before_exit_exits_1_at_once() {
    let mut harness = Harness::logged_in(true);
    harness.feed(&Ev::LbClosed);
    let outputs = harness.take();
    assert_eq!(errors(&outputs).len(), 1);
    assert_eq!(outputs.last(), Some(&exit(1)));
}

#[test]
fn lb_closing_after_exit_still_waits_for_310() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/exit"), Ev::LbClosed]);
    assert_eq!(harness.take(), vec![send_la(b"/exit\n")]);
    let grace = ClientConfig::default().exit_grace;
    assert_eq!(harness.session.poll_timeout(), Some(harness.start + grace));
    harness.feed(&Ev::Advance(grace / 2));
    assert_eq!(harness.take(), vec![]);
    harness.feed(&Ev::la(protocol::BYE));
    assert_eq!(harness.take(), vec![print(protocol::BYE), exit(0)]);
    assert_eq!(harness.session.poll_timeout(), None);
}

#[test]
fn lb_closing_after_exit_without_310_exits_1_when_the_grace_ends() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::Interrupted, Ev::LbClosed]);
    harness.take();
    let grace = ClientConfig::default().exit_grace;
    harness.feed(&Ev::Advance(grace - Duration::from_millis(1)));
    assert_eq!(harness.take(), vec![]);
    harness.feed(&Ev::Advance(Duration::from_millis(1)));
    let outputs = harness.take();
    assert_eq!(errors(&outputs).len(), 1);
    assert_eq!(outputs.last(), Some(&exit(1)));
    assert_eq!(harness.session.poll_timeout(), None);
}

#[test]
fn la_closing_after_exit_without_310_exits_1() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/exit"), Ev::LaClosed]);
    assert_eq!(harness.exit_code(), Some(1));
}

#[test]
fn ctrl_c_and_end_of_input_send_exit_in_any_state() {
    let before: [&[Ev]; 6] = [
        &[],
        &[Ev::line("alice")],
        &[Ev::line("alice"), Ev::line("secret")],
        &[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
        ],
        &[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
            Ev::LbListening(LB_PORT),
        ],
        &[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
            Ev::LbListening(LB_PORT),
            Ev::la(protocol::LB_OK),
        ],
    ];
    for stop in [Ev::Interrupted, Ev::StdinClosed] {
        for steps in before {
            let mut harness = Harness::new(true);
            harness.feed_all(steps);
            harness.take();
            harness.feed(&stop);
            assert_eq!(harness.take(), vec![send_exit()], "{steps:?} {stop:?}");
            // Late stdin lines and a second Ctrl-C change nothing.
            harness.feed_all(&[Ev::line("/list"), Ev::Interrupted, Ev::StdinClosed]);
            assert_eq!(harness.take(), vec![]);
            harness.feed(&Ev::la(protocol::BYE));
            assert_eq!(harness.take(), vec![print(protocol::BYE), exit(0)]);
        }
    }
}

#[test]
fn ctrl_c_while_a_command_is_pending_sends_exit_at_once_and_prints_both_answers() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/to bob hi"), Ev::Interrupted]);
    assert_eq!(harness.take(), vec![send_la(b"/to bob hi\n"), send_exit()]);
    harness.feed(&Ev::La(
        [
            protocol::line_bytes(protocol::DELIVERED),
            protocol::line_bytes(protocol::BYE),
        ]
        .concat(),
    ));
    assert_eq!(
        harness.take(),
        vec![print(protocol::DELIVERED), print(protocol::BYE), exit(0)]
    );
}

#[test]
fn typed_exit_is_not_sent_twice_on_end_of_input() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/exit"), Ev::StdinClosed]);
    assert_eq!(harness.take(), vec![send_exit()]);
}

#[test]
fn ctrl_c_during_login_prints_late_answers_but_goes_no_further() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[Ev::line("alice"), Ev::line("secret"), Ev::Interrupted]);
    harness.take();
    harness.feed(&Ev::la(protocol::AUTH_OK));
    assert_eq!(harness.take(), vec![print(protocol::AUTH_OK)]);
    harness.feed(&Ev::LbListening(LB_PORT));
    assert_eq!(harness.take(), vec![]);
}

#[test]
fn empty_lines_are_skipped() {
    let mut harness = Harness::logged_in(false);
    harness.feed_all(&[Ev::line(""), Ev::line("\r")]);
    assert_eq!(harness.take(), vec![read_line(), read_line()]);
}

#[test]
fn commands_are_echoed_only_when_not_interactive() {
    for interactive in [true, false] {
        let mut harness = Harness::logged_in(interactive);
        harness.feed(&Ev::line("/list"));
        let mut expected = vec![send_la(b"/list\n")];
        if !interactive {
            expected.insert(0, print(b"/list"));
        }
        assert_eq!(harness.take(), expected);
        harness.feed(&Ev::la(b"301 alice bob"));
        assert_eq!(harness.take(), vec![print(b"301 alice bob"), read_line()]);
    }
}

#[test]
fn the_password_is_never_echoed() {
    let mut harness = Harness::new(false);
    harness.feed_all(&[Ev::line("alice"), Ev::line("secret")]);
    assert!(!harness
        .take()
        .iter()
        .any(|o| matches!(o, Out::Print(line) if line.as_slice() == b"secret")));
}

#[test]
fn whatever_is_typed_is_sent_and_the_401_printed() {
    let mut harness = Harness::logged_in(true);
    harness.feed(&Ev::line("/to  bob"));
    assert_eq!(harness.take(), vec![send_la(b"/to  bob\n")]);
    harness.feed(&Ev::la(protocol::UNRECOGNIZED));
    assert_eq!(
        harness.take(),
        vec![print(protocol::UNRECOGNIZED), read_line()]
    );
}

#[test]
fn a_stray_newline_in_a_stdin_line_never_makes_two_requests() {
    let mut harness = Harness::logged_in(true);
    harness.feed(&Ev::line("/list\n/exit"));
    assert_eq!(harness.take(), vec![send_la(b"/list\n")]);
}

#[test]
fn non_utf8_content_is_printed_and_sent_verbatim() {
    let mut harness = Harness::logged_in(false);
    let typed = b"/to bob caf\xe9 \xff\x00".to_vec();
    harness.feed(&Ev::Line(typed.clone()));
    let mut sent = typed.clone();
    sent.push(b'\n');
    assert_eq!(
        harness.take(),
        vec![print(&typed), Out::Do(ClientOutput::SendLa(sent))]
    );
    let incoming = b"/from bob \xc3\x28 \xfe".to_vec();
    harness.feed(&Ev::lb(&incoming));
    assert_eq!(harness.take(), vec![print(&incoming), send_lb_receipt()]);
    harness.feed(&Ev::la(b"303 \xff"));
    assert_eq!(harness.take(), vec![print(b"303 \xff"), read_line()]);
}

#[test]
fn lines_are_framed_across_chunks_and_crlf_is_dropped() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[
        Ev::line("/list"),
        Ev::La(b"301 al".to_vec()),
        Ev::Lb(b"/from bob one\r\n/broadcastfrom bob tw".to_vec()),
        Ev::La(b"ice\r\n".to_vec()),
        Ev::Lb(b"o\n".to_vec()),
    ]);
    let receipt = send_lb_receipt();
    assert_eq!(
        harness.take(),
        vec![
            send_la(b"/list\n"),
            print(b"/from bob one"),
            receipt.clone(),
            print(b"301 alice"),
            read_line(),
            print(b"/broadcastfrom bob two"),
            receipt,
        ]
    );
}

/// docs/protocol.md §4 step 5: a deviating server's Lb line is shown as it came and
/// acknowledged like a delivery (a server without an ack time-out must not hang its sender),
/// with one warning for the first only.
#[test]
fn an_unexpected_lb_line_is_shown_acknowledged_and_warned_of_once() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[
        Ev::lb(b"/broadcast bob hi all"),
        Ev::lb(b"/from bob"),
        Ev::lb(b"/from bob hi"),
    ]);
    let outputs = harness.take();
    let warnings = errors(&outputs);
    assert_eq!(warnings.len(), 1, "{outputs:?}");
    assert!(
        warnings[0].starts_with("warning: the server deviates from the protocol")
            && warnings[0].contains("/broadcast bob hi all"),
        "{warnings:?}"
    );
    assert_eq!(
        outputs,
        vec![
            print(b"/broadcast bob hi all"),
            Out::Error(warnings[0].to_owned()),
            send_lb_receipt(),
            print(b"/from bob"),
            send_lb_receipt(),
            print(b"/from bob hi"),
            send_lb_receipt(),
        ]
    );
    assert_eq!(harness.exit_code(), None);
}

#[test]
fn an_unknown_la_line_is_printed() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/list"), Ev::la(b"999 \xff what")]);
    assert_eq!(
        harness.take(),
        vec![send_la(b"/list\n"), print(b"999 \xff what"), read_line()]
    );
}

/// On La an over-long line ends the client; on Lb it is acknowledged like any other Lb line
/// (docs/protocol.md §4 step 5), with a warning, since it cannot be shown.
#[test]
fn an_over_long_line_from_the_server_exits_1_on_la_and_is_acknowledged_on_lb() {
    for on_lb in [false, true] {
        let mut harness = Harness::with_config(ClientConfig {
            interactive: true,
            max_line: 40,
            ..ClientConfig::default()
        });
        harness.feed_all(&[
            Ev::line("alice"),
            Ev::line("secret"),
            Ev::la(protocol::AUTH_OK),
            Ev::LbListening(LB_PORT),
            Ev::LbAccepted,
            Ev::la(protocol::LB_OK),
        ]);
        harness.take();
        let long = vec![b'x'; 100];
        if !on_lb {
            harness.feed(&Ev::La(long));
            let outputs = harness.take();
            assert_eq!(errors(&outputs).len(), 1, "{}", harness.rendered());
            assert_eq!(outputs.last(), Some(&exit(1)));
            continue;
        }
        // The rest of the long line is discarded; the next line is a delivery again.
        harness.feed_all(&[Ev::Lb(long), Ev::lb(b"x\n/from bob hi")]);
        let outputs = harness.take();
        let warnings = errors(&outputs);
        assert_eq!(warnings.len(), 1, "{}", harness.rendered());
        assert!(warnings[0].contains("longer than 40 bytes"), "{warnings:?}");
        assert_eq!(
            outputs,
            vec![
                Out::Error(warnings[0].to_owned()),
                send_lb_receipt(),
                print(b"/from bob hi"),
                send_lb_receipt(),
            ]
        );
        assert_eq!(harness.exit_code(), None);
    }
}

#[test]
fn nothing_happens_after_exit() {
    let mut harness = Harness::logged_in(true);
    harness.feed(&Ev::La(
        [
            protocol::line_bytes(protocol::BYE),
            protocol::line_bytes(b"301 x"),
        ]
        .concat(),
    ));
    assert_eq!(harness.take(), vec![print(protocol::BYE), exit(0)]);
    harness.feed_all(&[
        Ev::line("/list"),
        Ev::lb(b"/from bob hi"),
        Ev::LaClosed,
        Ev::LbClosed,
        Ev::Interrupted,
        Ev::Advance(Duration::from_secs(5)),
    ]);
    assert_eq!(harness.take(), vec![]);
    assert_eq!(harness.session.poll_timeout(), None);
}

fn answer(to: Option<Asked>, reply: Reply) -> ClientEvent {
    ClientEvent::Answer { to, reply }
}

#[test]
fn the_login_is_reported_as_typed_events() {
    let mut harness = Harness::new(true);
    harness.feed_all(&[
        Ev::line("al ice"),
        Ev::line("alice"),
        Ev::line("wrong"),
        Ev::la(protocol::AUTH_FAILED),
    ]);
    assert_eq!(
        harness.take_events(),
        vec![
            ClientEvent::Prompt(Prompt::UserName),
            ClientEvent::Prompt(Prompt::NotOneWord),
            ClientEvent::Prompt(Prompt::UserName),
            ClientEvent::Prompt(Prompt::Password),
            answer(Some(Asked::Login), Reply::AuthFailed),
            ClientEvent::Prompt(Prompt::UserName),
        ]
    );
    harness.feed_all(&[
        Ev::line("alice"),
        Ev::line("secret"),
        Ev::la(protocol::AUTH_OK),
        Ev::LbListening(LB_PORT),
        Ev::LbAccepted,
        Ev::la(protocol::LB_OK),
    ]);
    assert_eq!(
        harness.take_events(),
        vec![
            ClientEvent::Prompt(Prompt::Password),
            answer(Some(Asked::Login), Reply::AuthOk),
            ClientEvent::LoggedIn,
            answer(Some(Asked::Port), Reply::LbOk),
            ClientEvent::LbReady,
        ]
    );
}

#[test]
fn answers_name_the_request_they_answer_in_order() {
    let mut harness = Harness::logged_in(false);
    harness.feed_all(&[
        Ev::line("/list"),
        Ev::la(b"301 alice bob"),
        Ev::line("/toall hi"),
        Ev::la(protocol::DELIVERY_FAILED),
        Ev::line("/to bob hi"),
        Ev::Interrupted,
        Ev::La(
            [
                protocol::line_bytes(protocol::DELIVERED),
                protocol::line_bytes(protocol::BYE),
            ]
            .concat(),
        ),
    ]);
    let names = vec![b"alice".to_vec(), b"bob".to_vec()];
    assert_eq!(
        harness.take_events(),
        vec![
            ClientEvent::Echo(b"/list".to_vec()),
            answer(Some(Asked::List), Reply::List(names)),
            ClientEvent::Echo(b"/toall hi".to_vec()),
            answer(Some(Asked::ToAll), Reply::DeliveryFailed),
            ClientEvent::Echo(b"/to bob hi".to_vec()),
            answer(Some(Asked::To), Reply::Delivered),
            answer(Some(Asked::Exit), Reply::Bye),
            ClientEvent::Bye,
        ]
    );
}

#[test]
fn unasked_and_unknown_lines_are_answers_to_nothing_kept_verbatim() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[
        Ev::la(b"999 \xff what"),
        Ev::line("hello?"),
        Ev::la(protocol::UNRECOGNIZED),
    ]);
    assert_eq!(
        harness.take_events(),
        vec![
            answer(None, Reply::Unknown(b"999 \xff what".to_vec())),
            answer(Some(Asked::Other), Reply::Unrecognized),
        ]
    );
}

#[test]
fn deliveries_are_typed_with_their_kind_sender_and_content() {
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[
        Ev::lb(b"/from bob hi  there"),
        Ev::lb(b"/broadcastfrom carol \xfe"),
        Ev::lb(b"/from bob"),
    ]);
    assert_eq!(
        harness.take_events(),
        vec![
            ClientEvent::Delivery {
                kind: DeliveryKind::From,
                sender: b"bob".to_vec(),
                content: b"hi  there".to_vec(),
            },
            ClientEvent::Delivery {
                kind: DeliveryKind::BroadcastFrom,
                sender: b"carol".to_vec(),
                content: b"\xfe".to_vec(),
            },
            ClientEvent::UnknownDelivery(b"/from bob".to_vec()),
            ClientEvent::Warning(ClientWarning::DeviatingServer(b"/from bob".to_vec())),
        ]
    );
}

#[test]
fn errors_are_typed() {
    let mut harness = Harness::logged_in(true);
    harness.feed(&Ev::LbClosed);
    assert_eq!(
        harness.take_events(),
        vec![ClientEvent::Error(ClientError::Closed(Connection::Lb))]
    );
    let mut harness = Harness::logged_in(true);
    harness.feed_all(&[Ev::line("/exit"), Ev::LbClosed]);
    harness.feed(&Ev::Advance(ClientConfig::default().exit_grace));
    assert_eq!(
        harness.take_events(),
        vec![ClientEvent::Error(ClientError::NoBye)]
    );
}

#[test]
fn a_reply_renders_back_to_the_very_line_that_came() {
    let lines: [&[u8]; 12] = [
        protocol::AUTH_OK,
        protocol::AUTH_FAILED,
        protocol::LB_OK,
        protocol::LB_FAILED,
        b"301 alice bob carol",
        protocol::DELIVERED,
        protocol::DELIVERY_FAILED,
        protocol::BYE,
        protocol::UNRECOGNIZED,
        b"301",
        b"301 alice  bob",
        b"",
    ];
    for line in lines {
        assert_eq!(
            Reply::parse(line).to_line_bytes(),
            protocol::line_bytes(line),
            "{}",
            show(line)
        );
    }
    assert!(matches!(Reply::parse(b"301 alice  bob"), Reply::Unknown(_)));
}

/// Chunks that are sometimes protocol lines, so random runs reach every state.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let lines: Vec<&'static [u8]> = vec![
        protocol::AUTH_OK,
        protocol::AUTH_FAILED,
        protocol::LB_OK,
        protocol::LB_FAILED,
        protocol::DELIVERED,
        protocol::BYE,
        protocol::UNRECOGNIZED,
        b"301 alice bob",
        b"/from bob hi",
        b"/broadcastfrom bob hi all",
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::sample::select(lines).prop_map(protocol::line_bytes),
    ]
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            Just(b"alice".to_vec()),
            Just(b"/exit".to_vec()),
        ]
        .prop_map(Ev::Line),
        1 => Just(Ev::StdinClosed),
        1 => Just(Ev::Interrupted),
        6 => chunk().prop_map(Ev::La),
        1 => Just(Ev::LaClosed),
        1 => any::<u16>().prop_map(Ev::LbListening),
        1 => Just(Ev::LbListenFailed),
        1 => Just(Ev::LbAccepted),
        4 => chunk().prop_map(Ev::Lb),
        1 => Just(Ev::LbClosed),
        1 => (0u64..1500).prop_map(|ms| Ev::Advance(Duration::from_millis(ms))),
    ]
}

proptest! {
    // Failures are kept in the repository's proptest-regressions/, replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/client_session.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_input_never_panics_and_exits_at_most_once(
        events in proptest::collection::vec(event(), 0..64),
        max_line in 2usize..40,
    ) {
        let mut harness = Harness::with_config(ClientConfig {
            interactive: false,
            max_line,
            ..ClientConfig::default()
        });
        harness.feed_all(&events);
        prop_assert!(harness.exits.len() <= 1, "{:?}", harness.exits);
        let outputs = harness.take();
        let mut exits_sent = 0;
        for output in &outputs {
            match output {
                // Every request is exactly one line, whatever was typed.
                Out::Do(ClientOutput::SendLa(bytes)) => {
                    prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
                    prop_assert_eq!(bytes.last(), Some(&b'\n'));
                    if bytes.as_slice() == b"/exit\n" {
                        exits_sent += 1;
                    }
                }
                Out::Print(line) => prop_assert!(!line.contains(&b'\n')),
                Out::Error(line) => prop_assert!(!line.contains('\n')),
                Out::Do(ClientOutput::SendLb(bytes)) => {
                    prop_assert_eq!(bytes, &protocol::receipt_bytes());
                }
                _ => {}
            }
        }
        prop_assert!(exits_sent <= 1);
    }
}
