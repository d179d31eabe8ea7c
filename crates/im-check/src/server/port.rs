//! docs/protocol.md §3, Authenticated: `/port` and the Lb connection, and what else a logged-in
//! connection may send before it.

use simple_im_core::protocol::{Request, Response};

use super::lines::{double_space, first_words, login_request, text, verb_with, with_suffix};
use super::{Check, Ctx, HELLO};
use crate::outcome::{Failure, Outcome};
use crate::wire::{accept, closed_port};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "port-ok",
        "/port: the server connects to that port at our address, then 201",
        port_ok,
    ),
    Check::new(
        "port-then-list",
        "/port and /list in one write: the /list waits for Lb, and is answered 301 after the 201",
        port_then_list,
    ),
    Check::new(
        "port-refused-202",
        "/port to a port nobody listens on: 202, the connection closes, the user is offline",
        port_refused_202,
    ),
    Check::new(
        "exit-authenticated",
        "/exit after login, before /port: 310, closed, offline, can log in again",
        exit_authenticated,
    ),
    Check::new(
        "malformed-authenticated",
        "each malformed or out-of-place line after login, /list included: 401",
        malformed_authenticated,
    ),
];

fn port_ok(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.login(&a)?;
    s.open_lb()?;
    Ok(())
}

fn port_then_list(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.login(&a)?;
    let listener = s.lb_listener()?;
    let port = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("cannot listen for Lb: {error}")))?
        .port();
    let port_line = Request::Port(port).to_bytes();
    let list = Request::List.to_bytes();
    s.la.send(&[port_line.as_slice(), &list].concat(), ctx.deadline)?;
    s.expect_reply(&port_line, &Response::LbOk)?;
    let _lb = accept(&listener, ctx.deadline).map_err(|got| {
        Failure::unexpected(
            "after 201",
            format!("the server's connection to port {port}").as_str(),
            got,
        )
    })?;
    // Taken in the state Ready, once 201 was sent: not 401, as it would be before.
    s.expect_list_answer(&list, &[&a])?;
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
    let sb = ctx.login(&b)?;
    ctx.expect_exit(sb, &b, &mut sa, &[&a])?;
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
    s.expect_401_each(&lines)?;
    s.open_lb()?;
    Ok(())
}
