//! docs/protocol.md §3, Unauthenticated: `/login`, its failures and timeout, and what else a
//! connection may send before it.

use std::time::Instant;

use simple_im_core::protocol::{Request, Response};

use super::lines::{double_space, first_words, login_request, shouted, text, with_suffix};
use super::{told_timeout, Account, Check, Ctx, HELLO, NOTICE};
use crate::outcome::{show_duration, Failure, Outcome};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "login-ok",
        "/login with a line of the users file: 101",
        login_ok,
    ),
    Check::new(
        "login-wrong-password",
        "/login with a wrong password: 102, and the connection stays open for another try",
        login_wrong_password,
    ),
    Check::new(
        "login-unknown-user",
        "/login with a user not in the users file: 102",
        login_unknown_user,
    ),
    Check::new(
        "login-already-online",
        "/login as a user who is online on another connection: 102",
        login_already_online,
    ),
    Check::new(
        "login-max-failures",
        "after --max-login-failures 102s in a row the server closes the connection",
        login_max_failures,
    ),
    Check::new(
        "login-timeout",
        "a connection that does not log in within --login-timeout is closed",
        login_timeout,
    )
    .with_extra_time(|config| config.login_timeout.unwrap_or_default()),
    Check::new(
        "exit-unauthenticated",
        "/exit before logging in: 310, then the server closes the connection",
        exit_unauthenticated,
    ),
    Check::new(
        "malformed-unauthenticated",
        "each malformed or out-of-place line before login: 401, connection open",
        malformed_unauthenticated,
    ),
];

fn login_ok(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    s.call(&login_request(&a), &Response::AuthOk)?;
    Ok(())
}

fn login_wrong_password(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    s.call(&login_request(&wrong_password(&a)), &Response::AuthFailed)?;
    s.call(&login_request(&a), &Response::AuthOk)?;
    Ok(())
}

/// `account` with a password one byte longer than its own.
fn wrong_password(account: &Account) -> Account {
    let mut password = account.password.clone();
    password.push(b'x');
    Account {
        name: account.name.clone(),
        password,
    }
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
    let connected = Instant::now();
    let mut s = ctx.connect(&a)?;
    let wrong = wrong_password(&a);
    let bad = login_request(&wrong);
    for _ in 0..ctx.config.max_login_failures {
        s.call(&bad, &Response::AuthFailed)?;
    }
    let why = format!(
        "{}'s La after {} failed logins in a row",
        s.name, ctx.config.max_login_failures
    );
    // Closed at once, not by the login timeout a moment later.
    let mut until = ctx.within(NOTICE);
    if let Some(timeout) = ctx.config.login_timeout {
        until = until.min(connected + timeout.mul_f64(0.8));
    }
    s.la.expect_closed(until, &why)?;
    Ok(())
}

fn login_timeout(ctx: &Ctx) -> Outcome {
    let timeout = told_timeout(ctx.config.login_timeout, "login", "login-timeout")?;
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
    s.expect_401_each(&lines)?;
    s.call(&login, &Response::AuthOk)?;
    Ok(())
}
