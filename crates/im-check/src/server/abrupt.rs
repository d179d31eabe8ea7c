//! docs/protocol.md §3, Ends of a session, when a client vanishes rather than leaves: a reset
//! (RST) or a half-close at each step, with or without requests in flight; then a look at
//! what is left: the user gone from `/list`, a new login of it working, the server answering.

use std::thread;

use simple_im_core::protocol::{Request, Response};

use super::lines::login_request;
use super::session::Session;
use super::{Account, Check, Ctx, HELLO, QUIET};
use crate::outcome::Outcome;

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "reset-unauthenticated",
        "a reset mid-line, and one right after a /login: the server carries on, the user can log in",
        reset_unauthenticated,
    ),
    Check::new(
        "reset-authenticated",
        "a client reset after 101, before /port: offline, and it can log in again",
        reset_authenticated,
    ),
    Check::new(
        "reset-ready",
        "a Ready client that resets La: offline, its Lb closed by the server, it can log in again",
        reset_ready,
    ),
    Check::new(
        "half-close-ready",
        "a Ready client that half-closes La: its session ends as at end of file (both closed, offline)",
        half_close_ready,
    ),
    Check::new(
        "sender-vanishes-mid-to",
        "a sender reset while its /to waits for the 302: the 302 is taken, the sender offline, Lb in step",
        sender_vanishes_mid_to,
    ),
    Check::new(
        "requests-then-reset",
        "a /to and several /list in one write, then a reset: answers go nowhere, the server carries on",
        requests_then_reset,
    ),
    Check::new(
        "recipient-resets-lb-304",
        "a recipient whose Lb is reset mid-delivery: 304 to the sender, and it is gone",
        recipient_resets_lb_304,
    ),
];

/// A vanished client's process: both its connections reset.
fn vanish(session: &mut Session) {
    session.la.reset();
    if let Some(lb) = &mut session.lb {
        lb.reset();
    }
}

impl Ctx {
    /// What must be left after `gone` vanished: `observer`'s `/list` soon shows just
    /// `staying`, and `gone` can log in and open Lb again.
    fn expect_left(&self, observer: &mut Session, staying: &[&Account], gone: &Account) -> Outcome {
        self.wait_for_list(observer, staying)?;
        let _again = self.ready(gone)?;
        Ok(())
    }
}

fn reset_unauthenticated(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut s = ctx.connect(&a)?;
    let login = login_request(&a).to_bytes();
    s.la.send(&login[..login.len() / 2], ctx.deadline)?;
    s.la.reset();
    // Gone with its /login unanswered: the 101 meets a reset connection.
    let mut s = ctx.connect(&a)?;
    s.la.send(&login, ctx.deadline)?;
    s.la.reset();
    let mut again = ctx.ready(&a)?;
    again.expect_list(&[&a])?;
    Ok(())
}

fn reset_authenticated(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.login(&b)?;
    vanish(&mut sb);
    ctx.expect_left(&mut sa, &[&a], &b)
}

fn reset_ready(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sb.la.reset();
    sb.expect_lb_closed("after its La was reset (the session ends)")?;
    ctx.expect_left(&mut sa, &[&a], &b)
}

fn half_close_ready(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    sb.la.half_close();
    sb.expect_la_closed("after it half-closed La (end of file ends the session)")?;
    sb.expect_lb_closed("after it half-closed La (end of file ends the session)")?;
    ctx.expect_left(&mut sa, &[&a], &b)
}

fn sender_vanishes_mid_to(ctx: &Ctx) -> Outcome {
    let (accounts, [mut sa, mut sb], _) = ctx.to_in_flight(HELLO)?;
    let [a, b] = &accounts;
    vanish(&mut sa);
    // Time for the reset to land before the 302 makes the server answer into it.
    thread::sleep(QUIET);
    sb.ack()?;
    ctx.expect_left(&mut sb, &[b], a)?;
    // b's Lb is still in step: the next message to it is delivered and acknowledged.
    let mut sc = ctx.ready(a)?;
    let to = sc.send_to(&sb.user, HELLO)?;
    sb.expect_from(&sc.user, HELLO)?;
    sb.ack()?;
    sc.expect_reply(&to, &Response::Delivered)?;
    Ok(())
}

fn requests_then_reset(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    // A /to first, held up by a's 302, so that every answer is written after the reset.
    let mut burst = Request::To {
        target: &a.name,
        content: HELLO,
    }
    .to_bytes();
    for _ in 0..10 {
        burst.extend_from_slice(&Request::List.to_bytes());
    }
    sb.la.send(&burst, ctx.deadline)?;
    sa.expect_from(&b.name, HELLO)?;
    // La only: each write after the first into a reset connection fails (SIGPIPE, for a
    // server that does not ignore it); Lb stays for the server to close.
    sb.la.reset();
    thread::sleep(QUIET);
    sa.ack()?;
    sb.expect_lb_closed("after its La was reset (the session ends)")?;
    ctx.expect_left(&mut sa, &[&a], &b)
}

fn recipient_resets_lb_304(ctx: &Ctx) -> Outcome {
    let ([a, b], [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    sb.lb()?.reset();
    sa.expect_reply(&to, &Response::DeliveryFailed)?;
    ctx.expect_left(&mut sa, &[&a], &b)
}
