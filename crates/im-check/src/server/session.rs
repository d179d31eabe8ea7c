//! Connecting, logging in and opening Lb for the checks, and logging out after them.

use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::{
    line_bytes, receipt_bytes, write_list, Delivery, Request, Response,
};

use super::lines::{is_auth_failed, login_request, show};
use super::{Account, Ctx, LOGOUT_WAIT, NOTICE, QUIET};
use crate::outcome::{Failure, Got, Problem, Transcript};
use crate::wire::{accept, Conn};

/// `N` users of a check and a request the first one sent: their accounts, their sessions, and
/// the request as sent (for its answer).
pub(super) type InFlight<const N: usize> = ([Account; N], [Session; N], Vec<u8>);

/// What the checks do with the server.
impl Ctx {
    /// The first `N` accounts of the users file, or SKIP when it has fewer.
    pub(super) fn accounts<const N: usize>(&self) -> Result<[Account; N], Problem> {
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
    pub(super) fn unknown_user(&self) -> Vec<u8> {
        self.config.unknown_user()
    }

    /// A new La connection for `account`, not logged in.
    pub(super) fn connect(&self, account: &Account) -> Result<Session, Failure> {
        self.connect_from(account, None)
    }

    /// A new La connection for `account` from the local address `source` (any, if `None`).
    pub(super) fn connect_from(
        &self,
        account: &Account,
        source: Option<IpAddr>,
    ) -> Result<Session, Failure> {
        let name = String::from_utf8_lossy(&account.name).into_owned();
        let la = Conn::connect_from(
            self.config.addr_for(account),
            source,
            self.deadline,
            format!("{name} La"),
            Arc::clone(&self.transcript),
        )?;
        Ok(Session {
            user: account.name.clone(),
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
    pub(super) fn login(&self, account: &Account) -> Result<Session, Failure> {
        self.login_from(account, None)
    }

    /// [`Self::login`] from the local address `source`.
    pub(super) fn login_from(
        &self,
        account: &Account,
        source: Option<IpAddr>,
    ) -> Result<Session, Failure> {
        let retry_until = Instant::now() + NOTICE;
        loop {
            let mut session = self.connect_from(account, source)?;
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
    pub(super) fn ready(&self, account: &Account) -> Result<Session, Failure> {
        self.ready_from(account, None)
    }

    /// [`Self::ready`] from the local address `source`: its Lb is then on that address too.
    pub(super) fn ready_from(
        &self,
        account: &Account,
        source: Option<IpAddr>,
    ) -> Result<Session, Failure> {
        let mut session = self.login_from(account, source)?;
        session.open_lb()?;
        Ok(session)
    }

    /// A Ready session for each of `accounts`, made in order.
    pub(super) fn ready_all<const N: usize>(
        &self,
        accounts: &[Account; N],
    ) -> Result<[Session; N], Failure> {
        let mut sessions = Vec::with_capacity(N);
        for account in accounts {
            sessions.push(self.ready(account)?);
        }
        sessions
            .try_into()
            .map_err(|_| Failure::new("im-check bug: a session went missing"))
    }

    /// Two Ready users, and the first one's `/to <second> <content>` already on the second's
    /// Lb: their accounts, their sessions, and the `/to` as sent (for its answer).
    pub(super) fn to_in_flight(&self, content: &[u8]) -> Result<InFlight<2>, Problem> {
        let accounts = self.accounts()?;
        let [mut sa, mut sb] = self.ready_all(&accounts)?;
        let to = sa.send_to(&sb.user, content)?;
        sb.expect_from(&sa.user, content)?;
        Ok((accounts, [sa, sb], to))
    }

    /// `leaving` (logged in as `leaver`) sends `/exit`: `310`, then its connections are closed,
    /// `asker`'s `/list` shows just `staying`, and `leaver` can log in again.
    pub(super) fn expect_exit(
        &self,
        mut leaving: Session,
        leaver: &Account,
        asker: &mut Session,
        staying: &[&Account],
    ) -> Result<(), Failure> {
        leaving.call(&Request::Exit, &Response::Bye)?;
        leaving.expect_la_closed("after 310")?;
        if leaving.lb.is_some() {
            leaving.expect_lb_closed("after 310")?;
        }
        asker.expect_list(staying)?;
        let _again = self.login(leaver)?;
        Ok(())
    }

    /// A deadline `wait` from now, but never past the check's own.
    pub(super) fn within(&self, wait: Duration) -> Instant {
        (Instant::now() + wait).min(self.deadline)
    }

    /// Asks `asker` for `/list` until the answer is `expected` (the server may take a moment
    /// to notice a dropped connection), failing with the last answer after [`NOTICE`].
    pub(super) fn wait_for_list(
        &self,
        asker: &mut Session,
        expected: &[&Account],
    ) -> Result<(), Failure> {
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
pub(super) struct Session {
    /// The user name, as it goes over the wire.
    pub(super) user: Vec<u8>,
    /// The user name, for reports.
    pub(super) name: String,
    pub(super) la: Conn,
    pub(super) lb: Option<Conn>,
    pub(super) deadline: Instant,
    pub(super) transcript: Transcript,
}

impl Session {
    /// Sends one request on La.
    pub(super) fn send(&mut self, request: &Request) -> Result<(), Failure> {
        self.la.send(&request.to_bytes(), self.deadline)
    }

    /// Sends `line` and `\n` on La, whatever `line` is.
    pub(super) fn send_line(&mut self, line: &[u8]) -> Result<(), Failure> {
        self.la.send(&line_bytes(line), self.deadline)
    }

    /// Reads the answer to `sent` (for the report) and compares it with `expected`.
    pub(super) fn expect_answer(&mut self, sent: &[u8], expected: &[u8]) -> Result<(), Failure> {
        let context = format!("answer to {}'s {}", self.name, show(sent));
        self.la.expect_line(expected, self.deadline, &context)
    }

    /// Reads the answer to `sent` and checks it is exactly `expected`.
    pub(super) fn expect_reply(&mut self, sent: &[u8], expected: &Response) -> Result<(), Failure> {
        self.expect_answer(sent, &expected.to_bytes())
    }

    /// Sends `/to <target> <content>` and returns what was sent, for its answer.
    pub(super) fn send_to(&mut self, target: &[u8], content: &[u8]) -> Result<Vec<u8>, Failure> {
        let to = Request::To { target, content }.to_bytes();
        self.la.send(&to, self.deadline)?;
        Ok(to)
    }

    /// Sends `/toall <content>` and returns what was sent, for its answer.
    pub(super) fn send_toall(&mut self, content: &[u8]) -> Result<Vec<u8>, Failure> {
        let toall = Request::ToAll { content }.to_bytes();
        self.la.send(&toall, self.deadline)?;
        Ok(toall)
    }

    /// Sends `request` and checks the answer is exactly `expected`.
    pub(super) fn call(&mut self, request: &Request, expected: &Response) -> Result<(), Failure> {
        self.send(request)?;
        self.expect_answer(&request.to_bytes(), &expected.to_bytes())
    }

    /// Sends `line` (malformed or not) and checks the answer is exactly `expected`.
    pub(super) fn call_line(&mut self, line: &[u8], expected: &Response) -> Result<(), Failure> {
        self.send_line(line)?;
        self.expect_answer(line, &expected.to_bytes())
    }

    /// Sends each line and expects `401` for each, in order.
    pub(super) fn expect_401_each(&mut self, lines: &[Vec<u8>]) -> Result<(), Failure> {
        for line in lines {
            self.call_line(line, &Response::Unrecognized)?;
        }
        Ok(())
    }

    /// `/list` must be answered with exactly these users, in this order.
    pub(super) fn expect_list(&mut self, users: &[&Account]) -> Result<(), Failure> {
        self.send(&Request::List)?;
        self.expect_list_answer(&Request::List.to_bytes(), users)
    }

    /// The answer to `sent`, a `/list` however it was sent, must be exactly these users.
    pub(super) fn expect_list_answer(
        &mut self,
        sent: &[u8],
        users: &[&Account],
    ) -> Result<(), Failure> {
        let mut expected = Vec::new();
        write_list(users.iter().map(|a| a.name.as_slice()), &mut expected);
        self.expect_answer(sent, &expected)
    }

    /// Listens on our side of La's address, sends `/port`, expects `201` and the server's
    /// connection: the state Ready.
    pub(super) fn open_lb(&mut self) -> Result<(), Failure> {
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
    pub(super) fn lb_listener(&self) -> Result<TcpListener, Failure> {
        let ip = self.local_ip()?;
        TcpListener::bind((ip, 0))
            .map_err(|error| Failure::new(format!("cannot listen for Lb on {ip}: {error}")))
    }

    pub(super) fn local_ip(&self) -> Result<IpAddr, Failure> {
        self.la
            .local_addr()
            .map(|addr| addr.ip())
            .ok_or_else(|| Failure::new("La has no local address"))
    }

    pub(super) fn lb(&mut self) -> Result<&mut Conn, Failure> {
        self.lb
            .as_mut()
            .ok_or_else(|| Failure::new("im-check bug: this session has no Lb"))
    }

    /// The next line on Lb must be exactly `/from <sender> <content>`.
    pub(super) fn expect_from(&mut self, sender: &[u8], content: &[u8]) -> Result<(), Failure> {
        self.expect_delivery(&Delivery::From { sender, content })
    }

    /// The next line on Lb must be exactly `delivery`.
    pub(super) fn expect_delivery(&mut self, delivery: &Delivery) -> Result<(), Failure> {
        self.expect_delivery_while(delivery, "")
    }

    /// The next line on Lb must be exactly `delivery`; `when` tells the report what else holds.
    pub(super) fn expect_delivery_while(
        &mut self,
        delivery: &Delivery,
        when: &str,
    ) -> Result<(), Failure> {
        let context = format!("{}'s Lb{when}", self.name);
        let deadline = self.deadline;
        self.lb()?
            .expect_line(&delivery.to_bytes(), deadline, &context)
    }

    /// Acknowledges the message on Lb.
    pub(super) fn ack(&mut self) -> Result<(), Failure> {
        let deadline = self.deadline;
        self.lb()?.send(&receipt_bytes(), deadline)
    }

    /// Nothing may come on La for [`QUIET`].
    pub(super) fn expect_la_quiet(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s La {why}", self.name);
        let until = (Instant::now() + QUIET).min(self.deadline);
        self.la.expect_quiet(until, &context)
    }

    /// Nothing may come on Lb for [`QUIET`].
    pub(super) fn expect_lb_quiet(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s Lb {why}", self.name);
        let until = (Instant::now() + QUIET).min(self.deadline);
        self.lb()?.expect_quiet(until, &context)
    }

    /// The server must close La (before the check's deadline).
    pub(super) fn expect_la_closed(&mut self, why: &str) -> Result<(), Failure> {
        let context = format!("{}'s La {why}", self.name);
        self.la.expect_closed(self.deadline, &context)
    }

    /// The server must close Lb (before the check's deadline).
    pub(super) fn expect_lb_closed(&mut self, why: &str) -> Result<(), Failure> {
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
                let bye = Response::Bye.to_bytes();
                while let Ok(line) = self.la.read_line(until) {
                    if line == bye {
                        // The end of La follows at once from a working server; one that
                        // keeps La open (exit-ready's business) costs a moment only.
                        let soon = (Instant::now() + QUIET).min(until);
                        while self.la.read_line(soon).is_ok() {}
                        break;
                    }
                }
            }
        }
        self.la.close();
        if let Some(lb) = &mut self.lb {
            lb.close();
        }
    }
}
