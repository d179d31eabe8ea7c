//! The server checks: PROTOCOL.md §1–§3, one small function each, listed in [`CHECKS`].
//!
//! Every check logs in its own users (the first ones of the users file), works over raw
//! sockets, compares each reply byte for byte with what the crate's formatters produce, and
//! logs its users out at the end: a [`Session`] sends `/exit` when it is dropped, whether the
//! check passed or stopped at its first failure, so the next check starts with nobody online.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use simple_im::protocol::{
    line_bytes, receipt_bytes, write_list, Delivery, Request, Response, RECEIPT,
};

use crate::outcome::{escape, show_duration, Failure, Got, Outcome, Problem, Transcript};
use crate::wire::{accept, closed_port, remaining, Conn};

/// One account of the users file.
#[derive(Clone, Debug)]
pub struct Account {
    /// The user name.
    pub name: Vec<u8>,
    /// The password.
    pub password: Vec<u8>,
}

/// What im-check knows about the server under test.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The accounts of its users file with plain passwords, in file order.
    pub accounts: Vec<Account>,
    /// How many more accounts it has whose password is stored hashed (unusable here).
    pub hashed_accounts: usize,
    /// Its `--ack-timeout`, if the user told us.
    pub ack_timeout: Option<Duration>,
    /// Its `--login-timeout`, if the user told us.
    pub login_timeout: Option<Duration>,
    /// Its `--max-login-failures`.
    pub max_login_failures: u32,
    /// Its `--max-line`.
    pub max_line: usize,
}

/// One server check.
pub struct Check {
    /// Its name, for `--only`.
    pub name: &'static str,
    /// What it checks, in one line.
    pub description: &'static str,
    /// The check itself.
    pub run: fn(&Ctx) -> Outcome,
    /// Time it needs on top of `--timeout` (for checks that wait out a server timeout).
    pub extra_time: fn(&ServerConfig) -> Duration,
}

const fn check(name: &'static str, description: &'static str, run: fn(&Ctx) -> Outcome) -> Check {
    Check {
        name,
        description,
        run,
        extra_time: |_| Duration::ZERO,
    }
}

/// Every server check, in the order of PROTOCOL.md.
pub const CHECKS: &[Check] = &[
    // §1 Wire basics
    check(
        "crlf-accepted",
        "a \\r before \\n is dropped: /login and /list sent with \\r\\n are answered as usual",
        crlf_accepted,
    ),
    check(
        "line-split-across-writes",
        "a line that arrives in two pieces is one request",
        line_split_across_writes,
    ),
    check(
        "requests-answered-in-order",
        "two requests in one write: the second is answered after the first, and only then",
        requests_answered_in_order,
    ),
    check(
        "overlong-line",
        "a line longer than --max-line gets one 401, and the connection stays usable",
        overlong_line,
    ),
    // §3 Unauthenticated
    check(
        "login-ok",
        "/login with a line of the users file: 101",
        login_ok,
    ),
    check(
        "login-wrong-password",
        "/login with a wrong password: 102, and the connection stays open for another try",
        login_wrong_password,
    ),
    check(
        "login-unknown-user",
        "/login with a user not in the users file: 102",
        login_unknown_user,
    ),
    check(
        "login-already-online",
        "/login as a user who is online on another connection: 102",
        login_already_online,
    ),
    check(
        "login-max-failures",
        "after --max-login-failures 102s in a row the server closes the connection",
        login_max_failures,
    ),
    Check {
        name: "login-timeout",
        description: "a connection that does not log in within --login-timeout is closed",
        run: login_timeout,
        extra_time: |config| config.login_timeout.unwrap_or_default(),
    },
    check(
        "exit-unauthenticated",
        "/exit before logging in: 310, then the server closes the connection",
        exit_unauthenticated,
    ),
    check(
        "malformed-unauthenticated",
        "each malformed or out-of-place line before login: 401, connection open",
        malformed_unauthenticated,
    ),
    // §3 Authenticated
    check(
        "port-ok",
        "/port: the server connects to that port at our address, then 201",
        port_ok,
    ),
    check(
        "port-refused-202",
        "/port to a port nobody listens on: 202, the connection closes, the user is offline",
        port_refused_202,
    ),
    check(
        "exit-authenticated",
        "/exit after login, before /port: 310, closed, offline, can log in again",
        exit_authenticated,
    ),
    check(
        "malformed-authenticated",
        "each malformed or out-of-place line after login, /list included: 401",
        malformed_authenticated,
    ),
    // §3 Ready
    check(
        "list-order",
        "/list: 301, the asker first, then the others in login order",
        list_order,
    ),
    check(
        "to-delivered",
        "/to: exact /from on the recipient's Lb, and 303 to the sender after the 302",
        to_delivered,
    ),
    check(
        "to-waits-for-ack",
        "/to: no answer to the sender before the recipient's 302",
        to_waits_for_ack,
    ),
    check(
        "to-self",
        "/to oneself: /from on one's own Lb, then 303",
        to_self,
    ),
    check(
        "to-content-verbatim",
        "content with double spaces, a tab and non-UTF-8 bytes is forwarded byte for byte",
        to_content_verbatim,
    ),
    check(
        "to-offline-304",
        "/to a user of the users file who is not online: 304",
        to_offline_304,
    ),
    check(
        "to-unknown-304",
        "/to a user who does not exist: 304",
        to_unknown_304,
    ),
    check(
        "to-no-lb-304",
        "/to a user who is logged in but has no Lb yet: 304",
        to_no_lb_304,
    ),
    check(
        "toall-delivered",
        "/toall: exact /broadcastfrom to every other user, not to the sender, then 303",
        toall_delivered,
    ),
    check(
        "toall-concurrent",
        "/toall reaches every recipient before any of them acknowledges",
        toall_concurrent,
    ),
    check(
        "toall-alone-303",
        "/toall with nobody else online: 303",
        toall_alone_303,
    ),
    check(
        "toall-no-lb-304",
        "/toall with one recipient logged in but without Lb: 304",
        toall_no_lb_304,
    ),
    check(
        "toall-recipient-drops-304",
        "/toall where one recipient drops its Lb: 304, and that user is offline",
        toall_recipient_drops_304,
    ),
    check(
        "serialised-per-recipient",
        "two senders to one recipient: the second /from only after the first 302",
        serialised_per_recipient,
    ),
    check(
        "queued-deliveries-fail",
        "a recipient that drops Lb with a message queued: 304 to both senders",
        queued_deliveries_fail,
    ),
    check(
        "recipient-drops-lb-304",
        "a recipient that drops Lb mid-delivery: 304, and it is gone from /list",
        recipient_drops_lb_304,
    ),
    check(
        "bad-ack-304",
        "a recipient that answers on Lb with another line than 302: 304, and it is gone",
        bad_ack_304,
    ),
    Check {
        name: "ack-timeout-304",
        description: "a recipient that never answers: 304 after --ack-timeout, and it is gone",
        run: ack_timeout_304,
        extra_time: |config| config.ack_timeout.unwrap_or_default(),
    },
    check(
        "exit-ready",
        "/exit: 310, both connections closed, the user offline and free to log in again",
        exit_ready,
    ),
    check(
        "la-eof-ends-session",
        "a client that closes La without /exit goes offline",
        la_eof_ends_session,
    ),
    check(
        "lb-eof-ends-session",
        "a client that closes Lb goes offline",
        lb_eof_ends_session,
    ),
    check(
        "malformed-ready",
        "each malformed or out-of-place line once ready, /login and /port included: 401",
        malformed_ready,
    ),
];

/// How long "nothing arrives" is watched for: long enough for a server on a loaded machine to
/// have sent what it wrongly sends, short enough to keep the run quick.
const QUIET: Duration = Duration::from_millis(200);

/// How long a check waits, after a user's connection dropped, for the server to notice.
const NOTICE: Duration = Duration::from_secs(2);

/// How long a dropped session waits for the server to answer its `/exit` and close.
const LOGOUT_WAIT: Duration = Duration::from_secs(1);

/// Chat text used by the checks (the appendix's).
const HELLO: &[u8] = b"Hello! Nice to meet you!";
const MEETING: &[u8] = b"How about meeting at 3pm today?";

/// What one check runs with: the server, its deadline, its transcript.
pub struct Ctx {
    config: Arc<ServerConfig>,
    deadline: Instant,
    transcript: Transcript,
}

impl Ctx {
    /// A context for one check that must end by `deadline`.
    pub fn new(config: Arc<ServerConfig>, deadline: Instant, transcript: Transcript) -> Self {
        Ctx {
            config,
            deadline,
            transcript,
        }
    }

    /// The first `N` accounts of the users file, or SKIP when it has fewer.
    fn accounts<const N: usize>(&self) -> Result<[Account; N], Problem> {
        let have = self.config.accounts.len();
        let first = self.config.accounts.get(..N).map(<[Account]>::to_vec);
        first
            .and_then(|first| <[Account; N]>::try_from(first).ok())
            .ok_or_else(|| {
                let mut reason = format!("needs {N} users and the users file has {have}");
                if self.config.hashed_accounts > 0 {
                    reason.push_str(&format!(
                        " with a plain password ({} more have a hashed one, which im-check cannot type)",
                        self.config.hashed_accounts
                    ));
                }
                Problem::Skip(reason)
            })
    }

    /// A user name that is not in the users file.
    fn unknown_user(&self) -> Vec<u8> {
        let taken = |name: &[u8]| self.config.accounts.iter().any(|a| a.name == name);
        let mut name = b"nosuchuser".to_vec();
        let mut n = 0u32;
        while taken(&name) {
            n += 1;
            name = format!("nosuchuser{n}").into_bytes();
        }
        name
    }

    /// A new La connection for `account`, not logged in.
    fn connect(&self, account: &Account) -> Result<Session, Failure> {
        let name = String::from_utf8_lossy(&account.name).into_owned();
        let la = Conn::connect(
            self.config.addr,
            self.deadline,
            format!("{name} La"),
            Arc::clone(&self.transcript),
        )?;
        Ok(Session {
            name,
            la,
            lb: None,
            deadline: self.deadline,
            transcript: Arc::clone(&self.transcript),
        })
    }

    /// A session logged in as `account`.
    ///
    /// A `102` is retried for a moment: a server may answer an earlier check's `/exit` a
    /// little before it takes the user off its list.
    fn login(&self, account: &Account) -> Result<Session, Failure> {
        let retry_until = Instant::now() + NOTICE;
        loop {
            let mut session = self.connect(account)?;
            let login = login_request(account);
            session.send(&login)?;
            let context = format!("answer to {}'s {}", session.name, show(&login.to_bytes()));
            match session.la.read_line(self.deadline) {
                Ok(line) if line == Response::AuthOk.to_bytes() => return Ok(session),
                // Any `102 …`, even a misspelt one: the spelling is other checks' business.
                Ok(line) if is_auth_failed(&line) && Instant::now() < retry_until => {
                    thread::sleep(Duration::from_millis(100));
                }
                Ok(line) => {
                    let hint = if is_auth_failed(&line) {
                        " (is the user still online from an earlier check, or was the server \
                         started with another users file?)"
                    } else {
                        ""
                    };
                    let context = format!("{context}{hint}");
                    let expected = Response::AuthOk.to_bytes();
                    return Err(Failure::mismatch(context, &expected, Got::Bytes(line)));
                }
                Err(got) => {
                    return Err(Failure::mismatch(
                        context,
                        &Response::AuthOk.to_bytes(),
                        got,
                    ))
                }
            }
        }
    }

    /// A session logged in as `account` with its Lb connected (state Ready).
    fn ready(&self, account: &Account) -> Result<Session, Failure> {
        let mut session = self.login(account)?;
        session.open_lb()?;
        Ok(session)
    }

    /// A deadline `wait` from now, but never past the check's own.
    fn within(&self, wait: Duration) -> Instant {
        (Instant::now() + wait).min(self.deadline)
    }

    /// Asks `asker` for `/list` until the answer is `expected` (the server may take a moment
    /// to notice a dropped connection), failing with the last answer after [`NOTICE`].
    fn wait_for_list(&self, asker: &mut Session, expected: &[&Account]) -> Result<(), Failure> {
        let until = self.within(NOTICE);
        loop {
            match asker.expect_list(expected) {
                Ok(()) => return Ok(()),
                Err(failure) if Instant::now() >= until => return Err(failure),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// One client's connections to the server under test.
struct Session {
    name: String,
    la: Conn,
    lb: Option<Conn>,
    deadline: Instant,
    transcript: Transcript,
}

impl Session {
    /// Sends one request on La.
    fn send(&mut self, request: &Request) -> Result<(), Failure> {
        self.la.send(&request.to_bytes(), self.deadline)
    }

    /// Sends `line` and `\n` on La, whatever `line` is.
    fn send_line(&mut self, line: &[u8]) -> Result<(), Failure> {
        self.la.send(&line_bytes(line), self.deadline)
    }

    /// Reads the answer to `sent` (for the report) and compares it with `expected`.
    fn expect_answer(&mut self, sent: &[u8], expected: &[u8]) -> Result<(), Failure> {
        let context = format!("answer to {}'s {}", self.name, show(sent));
        self.la.expect_line(expected, self.deadline, &context)
    }

    /// Sends `request` and checks the answer is exactly `expected`.
    fn call(&mut self, request: &Request, expected: &Response) -> Result<(), Failure> {
        self.send(request)?;
        self.expect_answer(&request.to_bytes(), &expected.to_bytes())
    }

    /// Sends `line` (malformed or not) and checks the answer is exactly `expected`.
    fn call_line(&mut self, line: &[u8], expected: &Response) -> Result<(), Failure> {
        self.send_line(line)?;
        self.expect_answer(line, &expected.to_bytes())
    }

    /// `/list` must be answered with exactly these users, in this order.
    fn expect_list(&mut self, users: &[&Account]) -> Result<(), Failure> {
        let mut expected = Vec::new();
        write_list(users.iter().map(|a| a.name.as_slice()), &mut expected);
        self.send(&Request::List)?;
        self.expect_answer(&Request::List.to_bytes(), &expected)
    }

    /// Listens on our side of La's address, sends `/port`, expects `201` and the server's
    /// connection: the state Ready.
    fn open_lb(&mut self) -> Result<(), Failure> {
        let listener = self.lb_listener()?;
        let port = listener
            .local_addr()
            .map_err(|error| Failure::new(format!("cannot listen for Lb: {error}")))?
            .port();
        let request = Request::Port(port);
        self.call(&request, &Response::LbOk)?;
        // The server connects before it says 201, so the connection is already waiting.
        let stream = accept(&listener, self.deadline).map_err(|got| {
            Failure::unexpected(
                format!("after 201 to {}'s {}", self.name, show(&request.to_bytes())),
                format!("the server's connection to port {port}").as_str(),
                got,
            )
        })?;
        self.lb = Some(Conn::new(
            stream,
            format!("{} Lb", self.name),
            Arc::clone(&self.transcript),
        ));
        Ok(())
    }

    /// A listener on the address the server sees La coming from (it connects only there).
    fn lb_listener(&self) -> Result<TcpListener, Failure> {
        let ip = self.local_ip()?;
        TcpListener::bind((ip, 0))
            .map_err(|error| Failure::new(format!("cannot listen for Lb on {ip}: {error}")))
    }

    fn local_ip(&self) -> Result<IpAddr, Failure> {
        self.la
            .local_addr()
            .map(|addr| addr.ip())
            .ok_or_else(|| Failure::new("La has no local address"))
    }

    fn lb(&mut self) -> Result<&mut Conn, Failure> {
        self.lb
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: this session has no Lb"))
    }

    /// The next line on Lb must be exactly `delivery`.
    fn expect_delivery(&mut self, delivery: &Delivery) -> Result<(), Failure> {
        self.expect_delivery_while(delivery, "")
    }

    /// The next line on Lb must be exactly `delivery`; `when` tells the report what else holds.
    fn expect_delivery_while(&mut self, delivery: &Delivery, when: &str) -> Result<(), Failure> {
        let context = format!("{}'s Lb{when}", self.name);
        let deadline = self.deadline;
        self.lb()?
            .expect_line(&delivery.to_bytes(), deadline, &context)
    }

    /// Acknowledges the message on Lb.
    fn ack(&mut self) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.lb()?.send(&receipt_bytes(), deadline)
    }

    /// Nothing may come on La for [`QUIET`].
    fn expect_la_quiet(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s La {why}", self.name);
        let until = (Instant::now() + QUIET).min(self.deadline);
        self.la.expect_quiet(until, &context)
    }

    /// Nothing may come on Lb for [`QUIET`].
    fn expect_lb_quiet(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s Lb {why}", self.name);
        let until = (Instant::now() + QUIET).min(self.deadline);
        self.lb()?.expect_quiet(until, &context)
    }

    /// The server must close La (before the check's deadline).
    fn expect_la_closed(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s La {why}", self.name);
        self.la.expect_closed(self.deadline, &context)
    }

    /// The server must close Lb (before the check's deadline).
    fn expect_lb_closed(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s Lb {why}", self.name);
        let deadline = self.deadline;
        self.lb()?.expect_closed(deadline, &context)
    }
}

impl Drop for Session {
    /// Logs out the way a client does, and waits a moment for the server to answer or close,
    /// so the next check finds this user offline.
    fn drop(&mut self) {
        if !self.la.is_closed() {
            // Read past `310` to the end of La: a server typically takes the user off its
            // list before it closes the connection, not always before it sends `310`.
            let until = Instant::now() + LOGOUT_WAIT;
            if self.la.send(&Request::Exit.to_bytes(), until).is_ok() {
                while self.la.read_line(until).is_ok() {}
            }
        }
        self.la.close();
        if let Some(lb) = &mut self.lb {
            lb.close();
        }
    }
}

/// Whether `line` is a `102` answer, however its words are spelt.
fn is_auth_failed(line: &[u8]) -> bool {
    let failed = Response::AuthFailed.to_bytes();
    let code = failed.split(|&b| b == b' ').next().unwrap_or_default();
    line.strip_prefix(code)
        .is_some_and(|rest| rest.starts_with(b" "))
}

/// `/login <user> <password>` for `account`.
fn login_request(account: &Account) -> Request<'_> {
    Request::Login {
        user: &account.name,
        password: &account.password,
    }
}

/// A sent line for a report: escaped, without its `\n`.
fn show(sent: &[u8]) -> String {
    escape(sent.strip_suffix(b"\n").unwrap_or(sent))
}

/// The wire form of `request` without its `\n`, to build malformed variants from.
fn text(request: &Request) -> Vec<u8> {
    let mut bytes = request.to_bytes();
    bytes.pop();
    bytes
}

/// The first `n` space-separated words of `request` (`/login jacky` from a login).
fn first_words(request: &Request, n: usize) -> Vec<u8> {
    let full = text(request);
    full.split(|&b| b == b' ')
        .take(n)
        .collect::<Vec<_>>()
        .join(&b' ')
}

/// `request` with `suffix` appended (`/list extra`, `/list `).
fn with_suffix(request: &Request, suffix: &[u8]) -> Vec<u8> {
    let mut bytes = text(request);
    bytes.extend_from_slice(suffix);
    bytes
}

/// `request` with its `nth` separating space (0-based) doubled (`/to  bob hi`).
fn double_space(request: &Request, nth: usize) -> Vec<u8> {
    let mut bytes = text(request);
    if let Some(at) = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b' ')
        .nth(nth)
        .map(|(at, _)| at)
    {
        bytes.insert(at, b' ');
    }
    bytes
}

/// `request` with its command word in capitals (`/LIST`).
fn shouted(request: &Request) -> Vec<u8> {
    let mut bytes = text(request);
    let end = bytes.iter().position(|&b| b == b' ').unwrap_or(bytes.len());
    bytes[..end].make_ascii_uppercase();
    bytes
}

/// The command word of `request` followed by `argument` (`/port 0`).
fn verb_with(request: &Request, argument: &[u8]) -> Vec<u8> {
    let mut bytes = first_words(request, 1);
    bytes.push(b' ');
    bytes.extend_from_slice(argument);
    bytes
}

/// Sends each line and expects `401` for each, in order.
fn expect_401_each(session: &mut Session, lines: &[Vec<u8>]) -> Outcome {
    for line in lines {
        session.call_line(line, &Response::Unrecognized)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// §1 Wire basics

fn crlf_accepted(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    let mut login = text(&login_request(&a));
    login.extend_from_slice(b"\r");
    s.call_line(&login, &Response::AuthOk)?;
    s.open_lb()?;
    let mut expected = Vec::new();
    write_list([a.name.as_slice()], &mut expected);
    let list = with_suffix(&Request::List, b"\r");
    s.send_line(&list)?;
    s.expect_answer(&list, &expected)?;
    Ok(())
}

fn line_split_across_writes(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.ready(&a)?;
    let list = Request::List.to_bytes();
    let (head, tail) = list.split_at(3);
    s.la.send(head, ctx.deadline)?;
    thread::sleep(Duration::from_millis(100));
    s.la.send(tail, ctx.deadline)?;
    let mut expected = Vec::new();
    write_list([a.name.as_slice()], &mut expected);
    s.expect_answer(&list, &expected)?;
    Ok(())
}

fn requests_answered_in_order(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let to = Request::To {
        target: &b.name,
        content: HELLO,
    };
    let mut both = to.to_bytes();
    both.extend_from_slice(&Request::List.to_bytes());
    sa.la.send(&both, ctx.deadline)?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sa.expect_la_quiet(
        "while its /to waits for the recipient's 302 (the /list behind it must wait too)",
    )?;
    sb.ack()?;
    sa.expect_answer(&to.to_bytes(), &Response::Delivered.to_bytes())?;
    let mut expected = Vec::new();
    write_list([a.name.as_slice(), b.name.as_slice()], &mut expected);
    sa.expect_answer(&Request::List.to_bytes(), &expected)?;
    Ok(())
}

fn overlong_line(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.ready(&a)?;
    // `max_line` bytes before the `\n`: one byte more than the bound allows.
    let long = vec![b'x'; ctx.config.max_line];
    s.send_line(&long)?;
    s.expect_answer(&long, &Response::Unrecognized.to_bytes())?;
    s.expect_list(&[&a])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// §3 Unauthenticated

fn login_ok(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    s.call(&login_request(&a), &Response::AuthOk)?;
    Ok(())
}

fn login_wrong_password(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    let mut wrong = a.password.clone();
    wrong.push(b'x');
    let bad = Request::Login {
        user: &a.name,
        password: &wrong,
    };
    s.call(&bad, &Response::AuthFailed)?;
    s.call(&login_request(&a), &Response::AuthOk)?;
    Ok(())
}

fn login_unknown_user(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let unknown = ctx.unknown_user();
    let mut s = ctx.connect(&a)?;
    let bad = Request::Login {
        user: &unknown,
        password: &a.password,
    };
    s.call(&bad, &Response::AuthFailed)?;
    Ok(())
}

fn login_already_online(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let _online = ctx.login(&a)?;
    let mut second = ctx.connect(&a)?;
    second.call(&login_request(&a), &Response::AuthFailed)?;
    Ok(())
}

fn login_max_failures(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    let mut wrong = a.password.clone();
    wrong.push(b'x');
    let bad = Request::Login {
        user: &a.name,
        password: &wrong,
    };
    for _ in 0..ctx.config.max_login_failures {
        s.call(&bad, &Response::AuthFailed)?;
    }
    let why = format!(
        "after {} failed logins in a row",
        ctx.config.max_login_failures
    );
    s.expect_la_closed(&why)?;
    Ok(())
}

fn login_timeout(ctx: &Ctx) -> Outcome {
    let Some(timeout) = ctx.config.login_timeout else {
        return Err(Problem::Skip(
            "the server's login timeout is unknown: pass --login-timeout <its value> to check it"
                .into(),
        ));
    };
    let [a] = ctx.accounts()?;
    let started = Instant::now();
    let mut s = ctx.connect(&a)?;
    let why = format!("left without a login for {}", show_duration(timeout));
    s.expect_la_closed(&why)?;
    let took = started.elapsed();
    if took < timeout.mul_f64(0.9) {
        return Err(Failure::new(format!(
            "{}'s La was closed after {}, before the login timeout of {}",
            s.name,
            show_duration(took),
            show_duration(timeout)
        ))
        .into());
    }
    Ok(())
}

fn exit_unauthenticated(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    s.call(&Request::Exit, &Response::Bye)?;
    s.expect_la_closed("after 310")?;
    Ok(())
}

fn malformed_unauthenticated(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let login = login_request(&a);
    let to = Request::To {
        target: &b.name,
        content: HELLO,
    };
    let lines = [
        Vec::new(),
        b"hello".to_vec(),
        first_words(&login, 1),
        first_words(&login, 2),
        with_suffix(&login, b" extra"),
        with_suffix(&login, b" "),
        double_space(&login, 0),
        double_space(&login, 1),
        shouted(&login),
        [b" ".as_slice(), &text(&login)].concat(),
        text(&Request::List),
        text(&to),
        text(&Request::ToAll { content: HELLO }),
        text(&Request::Port(4000)),
        with_suffix(&Request::Exit, b" now"),
    ];
    let mut s = ctx.connect(&a)?;
    expect_401_each(&mut s, &lines)?;
    s.call(&login, &Response::AuthOk)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// §3 Authenticated

fn port_ok(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.login(&a)?;
    s.open_lb()?;
    Ok(())
}

fn port_refused_202(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.login(&b)?;
    let port = closed_port(sb.local_ip()?)?;
    sb.call(&Request::Port(port), &Response::LbFailed)?;
    sb.expect_la_closed("after 202")?;
    ctx.wait_for_list(&mut sa, &[&a])?;
    Ok(())
}

fn exit_authenticated(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.login(&b)?;
    sb.call(&Request::Exit, &Response::Bye)?;
    sb.expect_la_closed("after 310")?;
    sa.expect_list(&[&a])?;
    let _again = ctx.login(&b)?;
    Ok(())
}

fn malformed_authenticated(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let port = Request::Port(4000);
    let lines = [
        Vec::new(),
        b"hello".to_vec(),
        first_words(&port, 1),
        verb_with(&port, b"0"),
        verb_with(&port, b"65536"),
        verb_with(&port, b"-4000"),
        verb_with(&port, b"+4000"),
        verb_with(&port, b"4000x"),
        verb_with(&port, b"abc"),
        double_space(&port, 0),
        with_suffix(&port, b" "),
        with_suffix(&port, b" 4001"),
        text(&Request::List),
        text(&Request::To {
            target: &b.name,
            content: HELLO,
        }),
        text(&Request::ToAll { content: HELLO }),
        text(&login_request(&a)),
    ];
    let mut s = ctx.login(&a)?;
    expect_401_each(&mut s, &lines)?;
    s.open_lb()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// §3 Ready

fn list_order(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    sb.expect_list(&[&b, &a, &c])?;
    sc.expect_list(&[&c, &a, &b])?;
    sa.expect_list(&[&a, &b, &c])?;
    Ok(())
}

fn to_delivered(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sa.send(&Request::To {
        target: &b.name,
        content: HELLO,
    })?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sb.ack()?;
    sa.expect_answer(&with_to(&b, HELLO), &Response::Delivered.to_bytes())?;
    Ok(())
}

/// The bytes of `/to <target> <content>`, for reports.
fn with_to(target: &Account, content: &[u8]) -> Vec<u8> {
    Request::To {
        target: &target.name,
        content,
    }
    .to_bytes()
}

fn to_waits_for_ack(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sa.send(&Request::To {
        target: &b.name,
        content: HELLO,
    })?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sa.expect_la_quiet("before the recipient's 302")?;
    sb.ack()?;
    sa.expect_answer(&with_to(&b, HELLO), &Response::Delivered.to_bytes())?;
    Ok(())
}

fn to_self(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    sa.send(&Request::To {
        target: &a.name,
        content: HELLO,
    })?;
    sa.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sa.ack()?;
    sa.expect_answer(&with_to(&a, HELLO), &Response::Delivered.to_bytes())?;
    Ok(())
}

fn to_content_verbatim(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let content: &[u8] = b"  two  spaces,\ta tab, \xff\xfe not UTF-8, a trailing space ";
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sa.send(&Request::To {
        target: &b.name,
        content,
    })?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content,
    })?;
    sb.ack()?;
    sa.expect_answer(&with_to(&b, content), &Response::Delivered.to_bytes())?;
    Ok(())
}

fn to_offline_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    sa.call(
        &Request::To {
            target: &b.name,
            content: HELLO,
        },
        &Response::DeliveryFailed,
    )?;
    Ok(())
}

fn to_unknown_304(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let unknown = ctx.unknown_user();
    let mut sa = ctx.ready(&a)?;
    sa.call(
        &Request::To {
            target: &unknown,
            content: HELLO,
        },
        &Response::DeliveryFailed,
    )?;
    Ok(())
}

fn to_no_lb_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let _sb = ctx.login(&b)?;
    sa.call(
        &Request::To {
            target: &b.name,
            content: HELLO,
        },
        &Response::DeliveryFailed,
    )?;
    Ok(())
}

/// How a recipient answers a message on Lb.
#[derive(Clone, Copy)]
enum Reply {
    /// `302 Message receipt successful`.
    Ack,
    /// Closes Lb instead, as a crashing client would.
    DropLb,
}

/// Reads `delivery` on each recipient's Lb in whatever order the copies come (a server may
/// deliver one after another; `toall-concurrent` is the check that minds), and has each
/// recipient reply as soon as its copy is there.
fn reply_each_as_it_comes(
    recipients: &mut [(&mut Session, Reply)],
    delivery: &Delivery,
) -> Outcome {
    let expected = delivery.to_bytes();
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..recipients.len()).collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for &i in &pending {
            let (session, reply) = &mut recipients[i];
            let context = format!("{}'s Lb", session.name);
            let deadline = session.deadline;
            let peek = (Instant::now() + Duration::from_millis(20)).min(deadline);
            match session.lb()?.read_line(peek) {
                Ok(line) if line == expected => match reply {
                    Reply::Ack => session.ack()?,
                    Reply::DropLb => session.lb()?.close(),
                },
                Ok(line) => {
                    return Err(Failure::mismatch(context, &expected, Got::Bytes(line)).into())
                }
                Err(Got::Nothing(_)) if !remaining(deadline).is_zero() => still.push(i),
                Err(Got::Nothing(_)) => {
                    let got = Got::Nothing(started.elapsed());
                    return Err(Failure::mismatch(context, &expected, got).into());
                }
                Err(got) => return Err(Failure::mismatch(context, &expected, got).into()),
            }
        }
        pending = still;
    }
    Ok(())
}

fn toall_delivered(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    let toall = Request::ToAll { content: MEETING };
    sa.send(&toall)?;
    let delivery = Delivery::BroadcastFrom {
        sender: &a.name,
        content: MEETING,
    };
    reply_each_as_it_comes(
        &mut [(&mut sb, Reply::Ack), (&mut sc, Reply::Ack)],
        &delivery,
    )?;
    sa.expect_answer(&toall.to_bytes(), &Response::Delivered.to_bytes())?;
    sa.expect_lb_quiet("after its own /toall (the sender gets no copy)")?;
    Ok(())
}

fn toall_concurrent(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    let toall = Request::ToAll { content: MEETING };
    sa.send(&toall)?;
    let delivery = Delivery::BroadcastFrom {
        sender: &a.name,
        content: MEETING,
    };
    // Neither acknowledges until both have the message: a server that sends one after the
    // other would wait for the first 302 forever.
    sb.expect_delivery(&delivery)?;
    let when = format!(" while {}'s copy is not yet acknowledged", sb.name);
    sc.expect_delivery_while(&delivery, &when)?;
    sb.ack()?;
    sc.ack()?;
    sa.expect_answer(&toall.to_bytes(), &Response::Delivered.to_bytes())?;
    Ok(())
}

fn toall_alone_303(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    sa.call(&Request::ToAll { content: MEETING }, &Response::Delivered)?;
    Ok(())
}

fn toall_no_lb_304(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let _sc = ctx.login(&c)?;
    let toall = Request::ToAll { content: MEETING };
    sa.send(&toall)?;
    sb.expect_delivery(&Delivery::BroadcastFrom {
        sender: &a.name,
        content: MEETING,
    })?;
    sb.ack()?;
    sa.expect_answer(&toall.to_bytes(), &Response::DeliveryFailed.to_bytes())?;
    Ok(())
}

fn toall_recipient_drops_304(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    let toall = Request::ToAll { content: MEETING };
    sa.send(&toall)?;
    let delivery = Delivery::BroadcastFrom {
        sender: &a.name,
        content: MEETING,
    };
    reply_each_as_it_comes(
        &mut [(&mut sb, Reply::Ack), (&mut sc, Reply::DropLb)],
        &delivery,
    )?;
    sa.expect_answer(&toall.to_bytes(), &Response::DeliveryFailed.to_bytes())?;
    sa.expect_list(&[&a, &b])?;
    Ok(())
}

fn serialised_per_recipient(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    let first: &[u8] = b"first, from the first sender";
    let second: &[u8] = b"second, from the second sender";
    sa.send(&Request::To {
        target: &c.name,
        content: first,
    })?;
    sc.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: first,
    })?;
    sb.send(&Request::To {
        target: &c.name,
        content: second,
    })?;
    sc.expect_lb_quiet("while the first /from is not yet acknowledged")?;
    sc.ack()?;
    sa.expect_answer(&with_to(&c, first), &Response::Delivered.to_bytes())?;
    sc.expect_delivery(&Delivery::From {
        sender: &b.name,
        content: second,
    })?;
    sc.ack()?;
    sb.expect_answer(&with_to(&c, second), &Response::Delivered.to_bytes())?;
    Ok(())
}

fn queued_deliveries_fail(ctx: &Ctx) -> Outcome {
    let [a, b, c] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let mut sc = ctx.ready(&c)?;
    sa.send(&Request::To {
        target: &c.name,
        content: HELLO,
    })?;
    sc.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sb.send(&Request::To {
        target: &c.name,
        content: MEETING,
    })?;
    // Give the second request time to reach the server and wait in c's queue.
    thread::sleep(QUIET);
    sc.lb()?.close();
    sa.expect_answer(&with_to(&c, HELLO), &Response::DeliveryFailed.to_bytes())?;
    sb.expect_answer(&with_to(&c, MEETING), &Response::DeliveryFailed.to_bytes())?;
    sa.expect_list(&[&a, &b])?;
    Ok(())
}

fn recipient_drops_lb_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sa.send(&Request::To {
        target: &b.name,
        content: HELLO,
    })?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    sb.lb()?.close();
    sa.expect_answer(&with_to(&b, HELLO), &Response::DeliveryFailed.to_bytes())?;
    sa.expect_list(&[&a])?;
    sb.expect_la_closed("after its delivery failed (its session ends)")?;
    Ok(())
}

fn bad_ack_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sa.send(&Request::To {
        target: &b.name,
        content: HELLO,
    })?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    // Not the receipt: its text without the last word's ending.
    let wrong = line_bytes(&RECEIPT[..RECEIPT.len() - 2]);
    let deadline = ctx.deadline;
    sb.lb()?.send(&wrong, deadline)?;
    sa.expect_answer(&with_to(&b, HELLO), &Response::DeliveryFailed.to_bytes())?;
    sa.expect_list(&[&a])?;
    Ok(())
}

fn ack_timeout_304(ctx: &Ctx) -> Outcome {
    let Some(timeout) = ctx.config.ack_timeout else {
        return Err(Problem::Skip(
            "the server's ack timeout is unknown: pass --ack-timeout <its value> to check it"
                .into(),
        ));
    };
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    let to = Request::To {
        target: &b.name,
        content: HELLO,
    };
    let sent = Instant::now();
    sa.send(&to)?;
    sb.expect_delivery(&Delivery::From {
        sender: &a.name,
        content: HELLO,
    })?;
    // b never answers.
    sa.expect_answer(&to.to_bytes(), &Response::DeliveryFailed.to_bytes())?;
    let took = sent.elapsed();
    if took < timeout.mul_f64(0.9) {
        return Err(Failure::new(format!(
            "304 came {} after the /to, before the ack timeout of {}",
            show_duration(took),
            show_duration(timeout)
        ))
        .into());
    }
    sa.expect_list(&[&a])?;
    Ok(())
}

fn exit_ready(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sb.call(&Request::Exit, &Response::Bye)?;
    sb.expect_la_closed("after 310")?;
    sb.expect_lb_closed("after 310")?;
    sa.expect_list(&[&a])?;
    let _again = ctx.login(&b)?;
    Ok(())
}

fn la_eof_ends_session(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sb.la.close();
    ctx.wait_for_list(&mut sa, &[&a])?;
    Ok(())
}

fn lb_eof_ends_session(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sb.lb()?.close();
    ctx.wait_for_list(&mut sa, &[&a])?;
    Ok(())
}

fn malformed_ready(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let to = Request::To {
        target: &a.name,
        content: HELLO,
    };
    let toall = Request::ToAll { content: HELLO };
    let from = Delivery::From {
        sender: &a.name,
        content: HELLO,
    }
    .to_bytes();
    let lines = [
        Vec::new(),
        b"hello".to_vec(),
        with_suffix(&Request::List, b" extra"),
        with_suffix(&Request::List, b" "),
        shouted(&Request::List),
        first_words(&to, 1),
        first_words(&to, 2),
        verb_with(&to, &[a.name.as_slice(), b" "].concat()),
        double_space(&to, 0),
        first_words(&toall, 1),
        verb_with(&toall, b""),
        with_suffix(&Request::Exit, b" now"),
        text(&Request::Port(4000)),
        text(&login_request(&a)),
        from[..from.len() - 1].to_vec(),
        RECEIPT.to_vec(),
    ];
    let mut s = ctx.ready(&a)?;
    expect_401_each(&mut s, &lines)?;
    s.expect_list(&[&a])?;
    Ok(())
}
