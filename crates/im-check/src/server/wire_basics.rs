//! docs/protocol.md §1, wire basics: how lines are cut and answered.

use std::thread;
use std::time::Duration;

use simple_im_core::protocol::{Request, Response};

use super::session::Session;

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
    Check::new(
        "long-line-delivered",
        "a /to of 2 KB, and one exactly --max-line bytes long, is delivered byte for byte",
        long_line_delivered,
    ),
    Check::new(
        "overlong-to-not-delivered",
        "a /to one byte longer than --max-line: one 401, nothing delivered, the connection usable",
        overlong_to_not_delivered,
    ),
    Check::new(
        "overlong-401-before-newline",
        "a /to that passes --max-line is answered 401 before its \\n comes, and the rest of \
         it up to the \\n is discarded",
        overlong_401_before_newline,
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

/// The length of a short valid line that is still far longer than any answer: one a server
/// with a line bound "big enough for chat" (1 KB) already refuses.
const LONG_VALID: usize = 2048;

/// `/to <target> <content>\n`, exactly `len` bytes long (at least the shortest such line),
/// and its content: printable bytes counting up, so a cut or a shuffle shows in the report.
fn to_line_of(target: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
    let head = Request::To {
        target,
        content: b"x",
    }
    .to_bytes()
    .len()
        - 2;
    let content: Vec<u8> = (0..len.saturating_sub(head + 1).max(1))
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36])
        .collect();
    let line = Request::To {
        target,
        content: &content,
    }
    .to_bytes();
    (line, content)
}

fn long_line_delivered(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let max = ctx.config.max_line;
    let mut lengths = vec![LONG_VALID.min(max), max];
    lengths.dedup();
    for len in lengths {
        let (line, content) = to_line_of(&sb.user, len);
        sa.la.send(&line, ctx.deadline)?;
        sb.expect_from(&sa.user, &content)?;
        sb.ack()?;
        sa.expect_reply(&line, &Response::Delivered)?;
    }
    Ok(())
}

fn overlong_to_not_delivered(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let (line, _) = to_line_of(&sb.user, ctx.config.max_line + 1);
    sa.la.send(&line, ctx.deadline)?;
    // Looked at first: a server without a bound delivers it and then waits for the 302.
    sb.expect_lb_quiet("after a /to one byte longer than --max-line (it must not be delivered)")?;
    sa.expect_answer(&line, &Response::Unrecognized.to_bytes())?;
    expect_still_usable(&mut sa, &accounts)
}

fn overlong_401_before_newline(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let (mut line, _) = to_line_of(&sb.user, ctx.config.max_line + 2);
    // One byte past the bound, and no \n yet.
    line.pop();
    sa.la.send(&line, ctx.deadline)?;
    let context = format!(
        "answer to {}'s /to of {} bytes without its \\n yet (past --max-line {})",
        sa.name,
        line.len(),
        ctx.config.max_line
    );
    sa.la
        .expect_line(&Response::Unrecognized.to_bytes(), ctx.deadline, &context)?;
    sa.la.send(b" and the rest of it\n", ctx.deadline)?;
    sb.expect_lb_quiet("after a /to longer than --max-line (it must not be delivered)")?;
    sa.expect_la_quiet("after the over-long line's \\n (its rest is discarded, unanswered)")?;
    expect_still_usable(&mut sa, &accounts)
}

/// `/list` on `session` still gets exactly its answer: nothing else was queued before it.
fn expect_still_usable(session: &mut Session, accounts: &[super::Account; 2]) -> Outcome {
    let [a, b] = accounts;
    session.expect_list(&[a, b])?;
    Ok(())
}
