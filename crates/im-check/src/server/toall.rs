//! docs/protocol.md §3, Ready: `/toall`, to everyone at once.

use std::time::{Duration, Instant};

use simple_im_core::protocol::{Delivery, Request, Response};

use super::session::{InFlight, Session};
use super::{Check, Ctx, MEETING};
use crate::outcome::{Failure, Got, Outcome, Problem};
use crate::wire::remaining;

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "toall-delivered",
        "/toall: exact /broadcastfrom to every other user, not to the sender, then 303",
        toall_delivered,
    ),
    Check::new(
        "toall-concurrent",
        "/toall reaches every recipient before any of them acknowledges",
        toall_concurrent,
    ),
    Check::new(
        "toall-alone-303",
        "/toall with nobody else online: 303",
        toall_alone_303,
    ),
    Check::new(
        "toall-no-lb-304",
        "/toall with one recipient logged in but without Lb: 304",
        toall_no_lb_304,
    ),
    Check::new(
        "toall-recipient-drops-304",
        "/toall where one recipient drops its Lb: 304, and that user is offline",
        toall_recipient_drops_304,
    ),
];

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
    let (_, [mut sa, _sb, _sc], toall) = toall_replied(ctx, [Reply::Ack, Reply::Ack])?;
    sa.expect_reply(&toall, &Response::Delivered)?;
    sa.expect_lb_quiet("after its own /toall (the sender gets no copy)")?;
    Ok(())
}

/// Three Ready users, the first one's `/toall` read by the other two, who reply as told: their
/// accounts, their sessions, and the `/toall` as sent (for its answer).
fn toall_replied(ctx: &Ctx, replies: [Reply; 2]) -> Result<InFlight<3>, Problem> {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&accounts)?;
    let toall = sa.send_toall(MEETING)?;
    let delivery = Delivery::BroadcastFrom {
        sender: &sa.user,
        content: MEETING,
    };
    let [to_b, to_c] = replies;
    reply_each_as_it_comes(&mut [(&mut sb, to_b), (&mut sc, to_c)], &delivery)?;
    Ok((accounts, [sa, sb, sc], toall))
}

fn toall_concurrent(ctx: &Ctx) -> Outcome {
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&ctx.accounts()?)?;
    let toall = sa.send_toall(MEETING)?;
    let delivery = Delivery::BroadcastFrom {
        sender: &sa.user,
        content: MEETING,
    };
    // Neither acknowledges until both have the message: a server that sends one after the
    // other would wait for the first 302 forever.
    sb.expect_delivery(&delivery)?;
    let when = format!(" while {}'s copy is not yet acknowledged", sb.name);
    sc.expect_delivery_while(&delivery, &when)?;
    sb.ack()?;
    sc.ack()?;
    sa.expect_reply(&toall, &Response::Delivered)?;
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
    let [mut sa, mut sb] = ctx.ready_all(&[a, b])?;
    let _sc = ctx.login(&c)?;
    let toall = sa.send_toall(MEETING)?;
    sb.expect_delivery(&Delivery::BroadcastFrom {
        sender: &sa.user,
        content: MEETING,
    })?;
    sb.ack()?;
    sa.expect_reply(&toall, &Response::DeliveryFailed)?;
    Ok(())
}

fn toall_recipient_drops_304(ctx: &Ctx) -> Outcome {
    let ([a, b, _], [mut sa, _sb, _sc], toall) = toall_replied(ctx, [Reply::Ack, Reply::DropLb])?;
    sa.expect_reply(&toall, &Response::DeliveryFailed)?;
    sa.expect_list(&[&a, &b])?;
    Ok(())
}
