//! The client checks: PROTOCOL.md §4, one small function each, listed in [`CHECKS`].
//!
//! Each check starts the client command afresh with `127.0.0.1 <port>` appended, where
//! `<port>` is a scripted fake server of its own: the check types on the client's standard
//! input, reads its standard output, and plays the server's side of La and Lb byte for byte.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use simple_im::client::{PASSWORD_PROMPT, USER_PROMPT};
use simple_im::protocol::{line_bytes, receipt_bytes, write_list, Delivery, Request, Response};

use crate::outcome::{escape, note, show_duration, Failure, Got, Outcome, Problem, Transcript};
use crate::wire::{accept, closed_port, remaining, Conn};

/// What im-check knows about the client under test.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The command and its arguments; `<server-ip> <server-port>` are appended.
    pub command: Vec<OsString>,
}

/// One client check.
pub struct Check {
    /// Its name, for `--only`.
    pub name: &'static str,
    /// What it checks, in one line.
    pub description: &'static str,
    /// The check itself.
    pub run: fn(&Ctx) -> Outcome,
}

const fn check(name: &'static str, description: &'static str, run: fn(&Ctx) -> Outcome) -> Check {
    Check {
        name,
        description,
        run,
    }
}

/// Every client check, in the order of PROTOCOL.md §4.
pub const CHECKS: &[Check] = &[
    check("no-server", "a server that cannot be reached: an error on stderr, exit code 1", no_server),
    check("prompts", "the two prompts, user name first, each before its line is read", prompts),
    check("login-line", "the login is sent as exactly /login <user> <password>", login_line),
    check("login-retry-on-102", "on 102 the client prints it, asks both again and sends the new login", login_retry_on_102),
    check("port-and-lb", "after 101 the client sends /port <n>, accepts our connection on 127.0.0.1:n and prints 201", port_and_lb),
    check("lb-failed-202-exits", "on 202 the client prints it and exits with code 1", lb_failed_202_exits),
    check("commands-sent", "typed commands are sent with \\n, empty lines are not sent, answers are printed", commands_sent),
    check("ack-from", "a /from on Lb is answered exactly 302 Message receipt successful", ack_from),
    check("ack-broadcastfrom", "a /broadcastfrom on Lb is answered exactly 302 Message receipt successful", ack_broadcastfrom),
    check("prints-deliveries", "/from and /broadcastfrom lines are printed as received", prints_deliveries),
    check("exit-310", "/exit: after 310 the client exits with code 0", exit_310),
    check("exit-lb-closed-first", "/exit: Lb closes before 310 arrives; the client still waits for it and exits 0", exit_lb_closed_first),
    check("stdin-eof-exits", "end of standard input acts as /exit: /exit is sent, 310, exit code 0", stdin_eof_exits),
    check("server-gone-exits", "the server closes La and Lb: an error on stderr, a non-zero exit within 2s", server_gone_exits),
    check("server-gone-at-login", "the server closes La before answering /login: a non-zero exit within 2s", server_gone_at_login),
];

/// "Within a second or two" (PROTOCOL.md §4.7 says a second; this leaves room for a slow start).
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// The account the checks log in with (the appendix's).
const USER: &[u8] = b"jacky";
const PASSWORD: &[u8] = b"12345";
/// A second account, for the retry after `102`.
const OTHER_USER: &[u8] = b"bob";
const OTHER_PASSWORD: &[u8] = b"bob123";

/// What one check runs with: the client command, its deadline, its transcript.
pub struct Ctx {
    config: Arc<ClientConfig>,
    deadline: Instant,
    transcript: Transcript,
}

impl Ctx {
    /// A context for one check that must end by `deadline`.
    pub fn new(config: Arc<ClientConfig>, deadline: Instant, transcript: Transcript) -> Self {
        Ctx {
            config,
            deadline,
            transcript,
        }
    }

    /// Starts the fake server and the client pointed at it.
    fn start(&self) -> Result<Rig, Problem> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|error| Problem::Skip(format!("cannot listen on 127.0.0.1: {error}")))?;
        let port = listener
            .local_addr()
            .map_err(|error| Problem::Skip(format!("cannot listen on 127.0.0.1: {error}")))?
            .port();
        let client = ClientProcess::spawn(&self.config.command, port, &self.transcript)?;
        Ok(Rig {
            listener,
            client,
            la: None,
            lb: None,
            deadline: self.deadline,
            transcript: Arc::clone(&self.transcript),
        })
    }
}

/// The client under test and the fake server it talks to.
struct Rig {
    listener: TcpListener,
    client: ClientProcess,
    la: Option<Conn>,
    lb: Option<Conn>,
    deadline: Instant,
    transcript: Transcript,
}

impl Rig {
    /// Accepts the client's La.
    fn accept_la(&mut self) -> Result<(), Failure> {
        let stream = accept(&self.listener, self.deadline).map_err(|got| {
            Failure::unexpected(
                "the fake server's listening port",
                "the client to connect",
                got,
            )
        })?;
        self.la = Some(Conn::new(stream, "La".into(), Arc::clone(&self.transcript)));
        Ok(())
    }

    fn la(&mut self) -> Result<&mut Conn, Failure> {
        self.la
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: La is not connected"))
    }

    fn lb(&mut self) -> Result<&mut Conn, Failure> {
        self.lb
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: Lb is not connected"))
    }

    /// The next line on La must be exactly `expected`.
    fn expect_la(&mut self, expected: &[u8], context: &str) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.la()?.expect_line(expected, deadline, context)
    }

    /// Sends `response` on La.
    fn answer(&mut self, response: &Response) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.la()?.send(&response.to_bytes(), deadline)
    }

    /// Waits for a prompt, then types `line`.
    fn answer_prompt(&mut self, prompt: &[u8], line: &[u8]) -> Result<(), Failure> {
        self.client.expect_output(prompt, self.deadline)?;
        self.client.type_line(line)
    }

    /// Goes through both prompts and checks the `/login` line that follows.
    fn login_as(&mut self, user: &[u8], password: &[u8]) -> Result<(), Failure> {
        self.answer_prompt(USER_PROMPT, user)?;
        self.answer_prompt(PASSWORD_PROMPT, password)?;
        let expected = Request::Login { user, password }.to_bytes();
        self.expect_la(&expected, "the client's login on La")
    }

    /// Reads the client's `/port <n>` and returns `n`.
    fn expect_port(&mut self) -> Result<u16, Failure> {
        let deadline = self.deadline;
        let context = "the client's line on La after 101";
        match self.la()?.read_line(deadline) {
            Ok(line) => match Request::parse(line.strip_suffix(b"\n").unwrap_or(&line)) {
                Ok(Request::Port(port)) => Ok(port),
                _ => Err(Failure::unexpected(
                    context,
                    "\"/port <n>\\n\"",
                    Got::Bytes(line),
                )),
            },
            Err(got) => Err(Failure::unexpected(context, "\"/port <n>\\n\"", got)),
        }
    }

    /// Connects Lb to the client's port on 127.0.0.1.
    fn connect_lb(&mut self, port: u16) -> Result<(), Failure> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let lb = Conn::connect(
            addr,
            self.deadline,
            "Lb".into(),
            Arc::clone(&self.transcript),
        )
        .map_err(|failure| {
            Failure::new(format!(
                "the client sent /port {port} but does not accept connections there ({})",
                failure.context
            ))
        })?;
        self.lb = Some(lb);
        Ok(())
    }

    /// La accepted, logged in, Lb connected, `201` sent: the client is ready for commands.
    fn ready(&mut self) -> Result<(), Failure> {
        self.accept_la()?;
        self.login_as(USER, PASSWORD)?;
        self.answer(&Response::AuthOk)?;
        let port = self.expect_port()?;
        self.connect_lb(port)?;
        self.answer(&Response::LbOk)
    }

    /// Sends `delivery` on Lb; the answer must be exactly the receipt.
    fn deliver(&mut self, delivery: &Delivery) -> Result<(), Failure> {
        let deadline = self.deadline;
        let bytes = delivery.to_bytes();
        let lb = self.lb()?;
        lb.send(&bytes, deadline)?;
        let context = format!("the client's answer on Lb to {}", escape(&bytes));
        lb.expect_line(&receipt_bytes(), deadline, &context)
    }

    /// Closes both connections, the way a crashed server would.
    fn close_both(&mut self) {
        if let Some(lb) = &mut self.lb {
            lb.close();
        }
        if let Some(la) = &mut self.la {
            la.close();
        }
    }
}

/// The client process: standard input to type on, standard output and error as they come.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    printed: Vec<u8>,
    /// How much of `printed` earlier expectations have used up.
    seen: usize,
    stdout_ended: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    transcript: Transcript,
}

impl ClientProcess {
    fn spawn(command: &[OsString], port: u16, transcript: &Transcript) -> Result<Self, Problem> {
        let Some((program, args)) = command.split_first() else {
            return Err(Problem::Skip("no client command given".into()));
        };
        let mut child = Command::new(program)
            .args(args)
            .arg(Ipv4Addr::LOCALHOST.to_string())
            .arg(port.to_string())
            // Python buffers standard output in blocks when it is a pipe; a client's output
            // must reach us line by line, as it would reach a terminal.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                Problem::Fail(Failure::new(format!(
                    "cannot start the client {:?}: {error}",
                    program
                )))
            })?;
        note(
            transcript,
            format!("started the client with 127.0.0.1 {port}"),
        );
        let (chunks, stdout) = mpsc::channel();
        if let Some(mut pipe) = child.stdout.take() {
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if chunks.send(chunk[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    if let Ok(mut held) = sink.lock() {
                        held.extend_from_slice(&chunk[..n]);
                    }
                }
            });
        }
        Ok(ClientProcess {
            stdin: child.stdin.take(),
            child,
            stdout,
            printed: Vec::new(),
            seen: 0,
            stdout_ended: false,
            stderr,
            transcript: Arc::clone(transcript),
        })
    }

    /// Types `line` and Enter on the client's standard input.
    fn type_line(&mut self, line: &[u8]) -> Result<(), Failure> {
        note(&self.transcript, format!("typed {}", escape(line)));
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: standard input is closed"))?;
        stdin
            .write_all(&line_bytes(line))
            .and_then(|()| stdin.flush())
            .map_err(|error| {
                Failure::new(format!(
                    "could not type {} (has the client exited?): {error}",
                    escape(line)
                ))
            })
    }

    /// Closes standard input (Ctrl-D).
    fn close_stdin(&mut self) {
        note(&self.transcript, "closed standard input".into());
        self.stdin = None;
    }

    /// The client must print `text` (after what earlier expectations used) before `deadline`.
    fn expect_output(&mut self, text: &[u8], deadline: Instant) -> Result<(), Failure> {
        let started = Instant::now();
        loop {
            let unseen = &self.printed[self.seen..];
            if let Some(at) = unseen.windows(text.len()).position(|w| w == text) {
                self.seen += at + text.len();
                return Ok(());
            }
            if self.stdout_ended {
                return Err(self.missing_output(text, "and then closed its output".into()));
            }
            match self.stdout.recv_timeout(remaining(deadline)) {
                Ok(chunk) => {
                    note(&self.transcript, format!("printed {}", escape(&chunk)));
                    self.printed.extend_from_slice(&chunk);
                }
                Err(RecvTimeoutError::Disconnected) => self.stdout_ended = true,
                Err(RecvTimeoutError::Timeout) => {
                    let waited = show_duration(started.elapsed());
                    return Err(
                        self.missing_output(text, format!("and nothing more within {waited}"))
                    );
                }
            }
        }
    }

    fn missing_output(&self, text: &[u8], then: String) -> Failure {
        let unseen = &self.printed[self.seen..];
        Failure::new(format!(
            "expected the client to print {}, it printed {} {then}",
            escape(text),
            escape(unseen)
        ))
    }

    /// The exit status, if the client exits before `deadline`.
    fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                note(&self.transcript, format!("the client exited: {status}"));
                return Some(status);
            }
            if remaining(deadline).is_zero() {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The client must exit with `code` (or, with `None`, any non-zero code) within `within`.
    fn expect_exit(
        &mut self,
        code: Option<i32>,
        within: Duration,
        after: &str,
    ) -> Result<(), Failure> {
        let wanted = match code {
            Some(code) => format!("exit code {code}"),
            None => "a non-zero exit code".to_string(),
        };
        let Some(status) = self.wait_exit(Instant::now() + within) else {
            return Err(Failure::new(format!(
                "{after}: expected the client to exit with {wanted} within {}, it is still running",
                show_duration(within)
            )));
        };
        let ok = match (code, status.code()) {
            (Some(code), Some(got)) => code == got,
            (None, Some(got)) => got != 0,
            // Killed by a signal: never what the protocol asks for.
            (_, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "{after}: expected the client to exit with {wanted}, it ended with {status}"
            )))
        }
    }

    /// What the client wrote on standard error so far.
    fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The client must have said something on standard error (after it exited).
    fn expect_error_message(&self, after: &str) -> Result<(), Failure> {
        // The pipe's last bytes may still be on their way to the reader thread.
        let until = Instant::now() + Duration::from_millis(500);
        while self.stderr().iter().all(u8::is_ascii_whitespace) {
            if remaining(until).is_zero() {
                return Err(Failure::new(format!(
                    "{after}: expected a one-line error on standard error, it wrote nothing there"
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

fn no_server(ctx: &Ctx) -> Outcome {
    let port = closed_port(Ipv4Addr::LOCALHOST.into())?;
    let mut client = ClientProcess::spawn(&ctx.config.command, port, &ctx.transcript)?;
    let after = format!("started with 127.0.0.1 {port}, where nothing listens");
    // A second for the client, and one more for its interpreter to start.
    client.expect_exit(Some(1), EXIT_WITHIN + Duration::from_secs(1), &after)?;
    client.expect_error_message(&after)?;
    Ok(())
}

fn prompts(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.answer_prompt(USER_PROMPT, USER)?;
    rig.answer_prompt(PASSWORD_PROMPT, PASSWORD)?;
    Ok(())
}

fn login_line(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    Ok(())
}

fn login_retry_on_102(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    rig.answer(&Response::AuthFailed)?;
    rig.client.expect_output(
        &without_newline(&Response::AuthFailed.to_bytes()),
        ctx.deadline,
    )?;
    rig.login_as(OTHER_USER, OTHER_PASSWORD)?;
    rig.answer(&Response::AuthOk)?;
    rig.expect_port()?;
    Ok(())
}

fn port_and_lb(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    rig.answer(&Response::AuthOk)?;
    let port = rig.expect_port()?;
    rig.connect_lb(port)?;
    rig.answer(&Response::LbOk)?;
    rig.client
        .expect_output(&without_newline(&Response::LbOk.to_bytes()), ctx.deadline)?;
    Ok(())
}

fn lb_failed_202_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    rig.answer(&Response::AuthOk)?;
    rig.expect_port()?;
    rig.answer(&Response::LbFailed)?;
    rig.client.expect_output(
        &without_newline(&Response::LbFailed.to_bytes()),
        ctx.deadline,
    )?;
    rig.client.expect_exit(Some(1), EXIT_WITHIN, "after 202")?;
    Ok(())
}

fn commands_sent(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.client.type_line(b"")?;
    rig.client
        .type_line(&without_newline(&Request::List.to_bytes()))?;
    rig.expect_la(
        &Request::List.to_bytes(),
        "the client's line on La after an empty line and /list were typed",
    )?;
    let mut list = Vec::new();
    write_list([USER, OTHER_USER], &mut list);
    rig.la()?.send(&list, ctx.deadline)?;
    rig.client
        .expect_output(&without_newline(&list), ctx.deadline)?;
    let to = Request::To {
        target: OTHER_USER,
        content: b"Hello! Nice to meet you!",
    }
    .to_bytes();
    rig.client.type_line(&without_newline(&to))?;
    rig.expect_la(&to, "the client's line on La after a /to was typed")?;
    rig.answer(&Response::Delivered)?;
    rig.client.expect_output(
        &without_newline(&Response::Delivered.to_bytes()),
        ctx.deadline,
    )?;
    Ok(())
}

fn ack_from(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.deliver(&Delivery::From {
        sender: OTHER_USER,
        content: b"Jacky, nice to meet you too!",
    })?;
    Ok(())
}

fn ack_broadcastfrom(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.deliver(&Delivery::BroadcastFrom {
        sender: OTHER_USER,
        content: b"OK.",
    })?;
    Ok(())
}

fn prints_deliveries(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    for delivery in [
        Delivery::From {
            sender: OTHER_USER,
            content: b"Jacky, nice to meet you too!",
        },
        Delivery::BroadcastFrom {
            sender: OTHER_USER,
            content: b"No problem.",
        },
    ] {
        let bytes = delivery.to_bytes();
        let deadline = ctx.deadline;
        rig.lb()?.send(&bytes, deadline)?;
        rig.client
            .expect_output(&without_newline(&bytes), deadline)?;
        // Whatever it answers (ack-from checks that), read it so Lb stays in step.
        let _ = rig.lb()?.read_line(deadline);
    }
    Ok(())
}

fn exit_310(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.client
        .type_line(&without_newline(&Request::Exit.to_bytes()))?;
    rig.expect_la(
        &Request::Exit.to_bytes(),
        "the client's line on La after /exit was typed",
    )?;
    rig.answer(&Response::Bye)?;
    rig.close_both();
    rig.client
        .expect_output(&without_newline(&Response::Bye.to_bytes()), ctx.deadline)?;
    rig.client.expect_exit(Some(0), EXIT_WITHIN, "after 310")?;
    Ok(())
}

fn exit_lb_closed_first(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.client
        .type_line(&without_newline(&Request::Exit.to_bytes()))?;
    rig.expect_la(
        &Request::Exit.to_bytes(),
        "the client's line on La after /exit was typed",
    )?;
    rig.lb()?.close();
    thread::sleep(Duration::from_millis(200));
    rig.answer(&Response::Bye)?;
    rig.la()?.close();
    rig.client.expect_exit(
        Some(0),
        EXIT_WITHIN,
        "after Lb closed and, 200ms later, 310 came on La",
    )?;
    Ok(())
}

fn stdin_eof_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.client.close_stdin();
    rig.expect_la(
        &Request::Exit.to_bytes(),
        "the client's line on La after its standard input ended",
    )?;
    rig.answer(&Response::Bye)?;
    rig.close_both();
    rig.client.expect_exit(Some(0), EXIT_WITHIN, "after 310")?;
    Ok(())
}

fn server_gone_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.ready()?;
    rig.close_both();
    let after = "after the server closed La and Lb";
    rig.client.expect_exit(None, EXIT_WITHIN, after)?;
    rig.client.expect_error_message(after)?;
    Ok(())
}

fn server_gone_at_login(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    rig.la()?.close();
    let after = "after the server closed La instead of answering /login";
    rig.client.expect_exit(None, EXIT_WITHIN, after)?;
    rig.client.expect_error_message(after)?;
    Ok(())
}

/// `bytes` without a trailing `\n`: what a person types, or a line as printed.
fn without_newline(bytes: &[u8]) -> Vec<u8> {
    bytes.strip_suffix(b"\n").unwrap_or(bytes).to_vec()
}
