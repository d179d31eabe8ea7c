//! docs/protocol.md §3, Ready: `/list` and `/to`, and the lines a Ready connection must refuse.

use simple_im_core::protocol::{Delivery, Request, Response, RECEIPT};

use super::lines::{
    double_space, first_words, login_request, shouted, text, verb_with, with_suffix,
};
use super::{Check, Ctx, HELLO};
use crate::outcome::Outcome;

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "list-order",
        "/list: 301, the asker first, then the others in login order",
        list_order,
    ),
    Check::new(
        "to-delivered",
        "/to: exact /from on the recipient's Lb, and 303 to the sender after the 302",
        to_delivered,
    ),
    Check::new(
        "to-waits-for-ack",
        "/to: no answer to the sender before the recipient's 302",
        to_waits_for_ack,
    ),
    Check::new(
        "to-self",
        "/to oneself: /from on one's own Lb, then 303",
        to_self,
    ),
    Check::new(
        "to-content-verbatim",
        "content with double spaces, a tab and non-UTF-8 bytes is forwarded byte for byte",
        to_content_verbatim,
    ),
    Check::new(
        "to-offline-304",
        "/to a user of the users file who is not online: 304",
        to_offline_304,
    ),
    Check::new(
        "to-unknown-304",
        "/to a user who does not exist: 304",
        to_unknown_304,
    ),
    Check::new(
        "to-no-lb-304",
        "/to a user who is logged in but has no Lb yet: 304",
        to_no_lb_304,
    ),
];

/// Checked after every other Ready behaviour (and the ends of a session).
pub(super) const REFUSED: &[Check] = &[Check::new(
    "malformed-ready",
    "each malformed or out-of-place line once ready, /login and /port included: 401",
    malformed_ready,
)];

fn list_order(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&accounts)?;
    let [a, b, c] = &accounts;
    sb.expect_list(&[b, a, c])?;
    sc.expect_list(&[c, a, b])?;
    sa.expect_list(&[a, b, c])?;
    Ok(())
}

fn to_delivered(ctx: &Ctx) -> Outcome {
    let (_, [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    sb.ack()?;
    sa.expect_reply(&to, &Response::Delivered)?;
    Ok(())
}

fn to_waits_for_ack(ctx: &Ctx) -> Outcome {
    let (_, [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    sa.expect_la_quiet("before the recipient's 302")?;
    sb.ack()?;
    sa.expect_reply(&to, &Response::Delivered)?;
    Ok(())
}

fn to_self(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let to = sa.send_to(&a.name, HELLO)?;
    sa.expect_from(&a.name, HELLO)?;
    sa.ack()?;
    sa.expect_reply(&to, &Response::Delivered)?;
    Ok(())
}

fn to_content_verbatim(ctx: &Ctx) -> Outcome {
    let content: &[u8] = b"  two  spaces,\ta tab, \xff\xfe not UTF-8, a trailing space ";
    let (_, [mut sa, mut sb], to) = ctx.to_in_flight(content)?;
    sb.ack()?;
    sa.expect_reply(&to, &Response::Delivered)?;
    Ok(())
}

fn to_offline_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    sa.call(&hello_to(&b.name), &Response::DeliveryFailed)?;
    Ok(())
}

fn to_unknown_304(ctx: &Ctx) -> Outcome {
    let [a] = ctx.accounts()?;
    let unknown = ctx.unknown_user();
    let mut sa = ctx.ready(&a)?;
    sa.call(&hello_to(&unknown), &Response::DeliveryFailed)?;
    Ok(())
}

fn to_no_lb_304(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let _sb = ctx.login(&b)?;
    sa.call(&hello_to(&b.name), &Response::DeliveryFailed)?;
    Ok(())
}

/// `/to <target> Hello! Nice to meet you!`.
fn hello_to(target: &[u8]) -> Request<'_> {
    Request::To {
        target,
        content: HELLO,
    }
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
    s.expect_401_each(&lines)?;
    s.expect_list(&[&a])?;
    Ok(())
}
