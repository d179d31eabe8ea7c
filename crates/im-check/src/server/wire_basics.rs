//! docs/protocol.md §1, wire basics: how lines are cut and answered.

use std::thread;
use std::time::Duration;

use simple_im_core::protocol::{Request, Response};

use super::lines::{login_request, text, with_suffix};
use super::{Check, Ctx, HELLO};
use crate::outcome::Outcome;

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "crlf-accepted",
        "a \\r before \\n is dropped: /login and /list sent with \\r\\n are answered as usual",
        crlf_accepted,
    ),
    Check::new(
        "line-split-across-writes",
        "a line that arrives in two pieces is one request",
        line_split_across_writes,
    ),
    Check::new(
        "requests-answered-in-order",
        "two requests in one write: the second is answered after the first, and only then",
        requests_answered_in_order,
    ),
    Check::new(
        "overlong-line",
        "a line longer than --max-line gets one 401, and the connection stays usable",
        overlong_line,
    ),
];

fn crlf_accepted(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    let mut login = text(&login_request(&a));
    login.extend_from_slice(b"\r");
    s.call_line(&login, &Response::AuthOk)?;
    s.open_lb()?;
    let list = with_suffix(&Request::List, b"\r");
    s.send_line(&list)?;
    s.expect_list_answer(&list, &[&a])?;
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
    s.expect_list_answer(&list, &[&a])?;
    Ok(())
}

fn requests_answered_in_order(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let to = Request::To {
        target: &sb.user,
        content: HELLO,
    }
    .to_bytes();
    let list = Request::List.to_bytes();
    sa.la.send(&[to.as_slice(), &list].concat(), ctx.deadline)?;
    sb.expect_from(&sa.user, HELLO)?;
    sa.expect_la_quiet(
        "while its /to waits for the recipient's 302 (the /list behind it must wait too)",
    )?;
    sb.ack()?;
    sa.expect_reply(&to, &Response::Delivered)?;
    let [a, b] = &accounts;
    sa.expect_list_answer(&list, &[a, b])?;
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
