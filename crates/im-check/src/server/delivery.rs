//! docs/protocol.md §3, Delivery over Lb: one message at a time per recipient, and every way a
//! delivery fails.

use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::{line_bytes, Delivery, Response, RECEIPT};

use super::{told_timeout, Check, Ctx, HELLO, MEETING, QUIET};
use crate::outcome::{show_duration, Failure, Outcome};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "serialised-per-recipient",
        "two senders to one recipient: the second /from only after the first 302",
        serialised_per_recipient,
    ),
    Check::new(
        "queued-deliveries-fail",
        "a recipient that drops Lb with a message queued: 304 to both senders",
        queued_deliveries_fail,
    ),
    Check::new(
        "queued-from-gone-sender-withdrawn",
        "a sender that vanishes with its /to queued behind another: that /from is never sent",
        queued_from_gone_sender_withdrawn,
    ),
    Check::new(
        "recipient-drops-lb-304",
        "a recipient that drops Lb mid-delivery: 304, and it is gone from /list",
        recipient_drops_lb_304,
    ),
    Check::new(
        "bad-ack-304",
        "a recipient that answers on Lb with another line than 302: 304, and it is gone",
        bad_ack_304,
    ),
    Check::new(
        "ack-timeout-304",
        "a recipient that never answers: 304 after --ack-timeout, and it is gone",
        ack_timeout_304,
    )
    .with_extra_time(|config| config.ack_timeout.unwrap_or_default()),
    Check::new(
        "overlong-ack-304",
        "a recipient that answers on Lb with a line past --max-line: 304 as soon as the bound is \
         passed, and it is gone",
        overlong_ack_304,
    ),
    Check::new(
        "ack-timeout-from-send",
        "a message that waited in the queue gets the whole --ack-timeout from when it is sent on \
         Lb, not from when it was queued",
        ack_timeout_from_send,
    )
    .with_extra_time(|config| 2 * config.ack_timeout.unwrap_or_default()),
    Check::new(
        "deadlines-in-order",
        "an earlier ack deadline is handled before two later ones due at the same moment, and \
         both of those are handled",
        deadlines_in_order,
    )
    .with_extra_time(|config| 2 * config.ack_timeout.unwrap_or_default()),
    Check::new(
        "unasked-lb-line-ends-session",
        "a line on Lb while no delivery is outstanding ends that session: both closed, offline",
        unasked_lb_line_ends_session,
    ),
];

fn serialised_per_recipient(ctx: &Ctx) -> Outcome {
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&ctx.accounts()?)?;
    let first: &[u8] = b"first, from the first sender";
    let second: &[u8] = b"second, from the second sender";
    let first_to = sa.send_to(&sc.user, first)?;
    sc.expect_from(&sa.user, first)?;
    let second_to = sb.send_to(&sc.user, second)?;
    sc.expect_lb_quiet("while the first /from is not yet acknowledged")?;
    sc.ack()?;
    sa.expect_reply(&first_to, &Response::Delivered)?;
    sc.expect_from(&sb.user, second)?;
    sc.ack()?;
    sb.expect_reply(&second_to, &Response::Delivered)?;
    Ok(())
}

fn queued_deliveries_fail(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&accounts)?;
    let first = sa.send_to(&sc.user, HELLO)?;
    sc.expect_from(&sa.user, HELLO)?;
    let second = sb.send_to(&sc.user, MEETING)?;
    // Give the second request time to reach the server and wait in c's queue.
    thread::sleep(QUIET);
    sc.lb()?.close();
    sa.expect_reply(&first, &Response::DeliveryFailed)?;
    sb.expect_reply(&second, &Response::DeliveryFailed)?;
    sa.expect_list(&[&accounts[0], &accounts[1]])?;
    Ok(())
}

fn queued_from_gone_sender_withdrawn(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [a, _, c] = &accounts;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&accounts)?;
    let first = sa.send_to(&sc.user, HELLO)?;
    sc.expect_from(&sa.user, HELLO)?;
    sb.send_to(&sc.user, MEETING)?;
    // Time for b's /to to reach c's queue, and then for b's end to be noticed; both well
    // within the ack timeout that a's message is under meanwhile.
    let pause = ctx
        .config
        .ack_timeout
        .map_or(QUIET, |t| (t / 10).min(QUIET));
    thread::sleep(pause);
    sb.la.reset();
    sb.lb()?.reset();
    thread::sleep(pause);
    sc.ack()?;
    sa.expect_reply(&first, &Response::Delivered)?;
    sc.expect_lb_quiet("after its 302, the only message queued for it being from a sender gone")?;
    sc.expect_list(&[c, a])?;
    Ok(())
}

fn recipient_drops_lb_304(ctx: &Ctx) -> Outcome {
    let ([a, _], [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    sb.lb()?.close();
    sa.expect_reply(&to, &Response::DeliveryFailed)?;
    sa.expect_list(&[&a])?;
    sb.expect_la_closed("after its delivery failed (its session ends)")?;
    Ok(())
}

fn bad_ack_304(ctx: &Ctx) -> Outcome {
    let ([a, _], [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    // Not the receipt: its text without the last word's ending.
    let wrong = line_bytes(&RECEIPT[..RECEIPT.len() - 2]);
    let deadline = ctx.deadline;
    sb.lb()?.send(&wrong, deadline)?;
    sa.expect_reply(&to, &Response::DeliveryFailed)?;
    sa.expect_list(&[&a])?;
    Ok(())
}

fn ack_timeout_304(ctx: &Ctx) -> Outcome {
    let timeout = told_timeout(ctx.config.ack_timeout, "ack", "ack-timeout")?;
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let sent = Instant::now();
    let to = sa.send_to(&sb.user, HELLO)?;
    sb.expect_from(&sa.user, HELLO)?;
    // b never answers.
    sa.expect_reply(&to, &Response::DeliveryFailed)?;
    let took = sent.elapsed();
    if took < timeout.mul_f64(0.9) {
        return Err(Failure::new(format!(
            "304 came {} after the /to, before the ack timeout of {}",
            show_duration(took),
            show_duration(timeout)
        ))
        .into());
    }
    sa.expect_list(&[&accounts[0]])?;
    Ok(())
}

fn unasked_lb_line_ends_session(ctx: &Ctx) -> Outcome {
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb] = ctx.ready_all(&accounts)?;
    let deadline = ctx.deadline;
    sb.lb()?.send(&line_bytes(RECEIPT), deadline)?;
    let why = "after it sent a 302 on Lb that nothing asked for (the session ends)";
    sb.expect_la_closed(why)?;
    sb.expect_lb_closed(why)?;
    ctx.wait_for_list(&mut sa, &[&accounts[0]])?;
    Ok(())
}

fn overlong_ack_304(ctx: &Ctx) -> Outcome {
    let ([a, _], [mut sa, mut sb], to) = ctx.to_in_flight(HELLO)?;
    // The receipt's words, then on past the bound, and no `\n`: a server that compares only
    // the start of a line, or waits for its end, is seen here.
    let mut long = RECEIPT.to_vec();
    long.resize(ctx.config.max_line + 1, b' ');
    let sent = Instant::now();
    let deadline = ctx.deadline;
    sb.lb()?.send(&long, deadline)?;
    sa.expect_reply(&to, &Response::DeliveryFailed)?;
    let took = sent.elapsed();
    if let Some(timeout) = ctx.config.ack_timeout {
        if took >= timeout / 2 {
            return Err(Failure::new(format!(
                "304 came {} after a line past --max-line {} on Lb, as late as the ack timeout \
                 of {}: the delivery fails as soon as the bound is passed",
                show_duration(took),
                ctx.config.max_line,
                show_duration(timeout)
            ))
            .into());
        }
    }
    sb.expect_la_closed("after its answer on Lb passed --max-line (its delivery failed)")?;
    sa.expect_list(&[&a])?;
    Ok(())
}

/// The earliest a timed-out delivery may be answered: a little under `timeout` after `since`,
/// for the time the answer took to reach us.
fn not_before(timeout: Duration, since: Instant, what: &str) -> Outcome {
    let took = since.elapsed();
    if took < timeout.mul_f64(0.9) {
        return Err(Failure::new(format!(
            "304 came {} after {what}, before the ack timeout of {}",
            show_duration(took),
            show_duration(timeout)
        ))
        .into());
    }
    Ok(())
}

fn ack_timeout_from_send(ctx: &Ctx) -> Outcome {
    let timeout = told_timeout(ctx.config.ack_timeout, "ack", "ack-timeout")?;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&ctx.accounts()?)?;
    let started = Instant::now();
    let first = sa.send_to(&sc.user, HELLO)?;
    sc.expect_from(&sa.user, HELLO)?;
    let second = sb.send_to(&sc.user, MEETING)?;
    // b's message waits behind a's for half the ack timeout.
    thread::sleep((started + timeout / 2).saturating_duration_since(Instant::now()));
    sc.ack()?;
    sa.expect_reply(&first, &Response::Delivered)?;
    sc.expect_from(&sb.user, MEETING)?;
    let sent = Instant::now();
    // c never acknowledges b's.
    sb.expect_reply(&second, &Response::DeliveryFailed)?;
    not_before(
        timeout,
        sent,
        "its /from was sent on Lb (the ack timeout counts from then, not from when it was queued)",
    )?;
    sc.expect_la_closed("after its delivery timed out (its session ends)")?;
    Ok(())
}

fn deadlines_in_order(ctx: &Ctx) -> Outcome {
    let timeout = told_timeout(ctx.config.ack_timeout, "ack", "ack-timeout")?;
    let accounts = ctx.accounts()?;
    let [mut sa, mut sb, mut sc] = ctx.ready_all(&accounts)?;
    // The first deadline: a never acknowledges c's message.
    let started = Instant::now();
    let to_a = sc.send_to(&sa.user, HELLO)?;
    sa.expect_from(&sc.user, HELLO)?;
    // Half an ack timeout later a's /toall: two deliveries, due at the same later moment.
    thread::sleep((started + timeout / 2).saturating_duration_since(Instant::now()));
    sa.send_toall(MEETING)?;
    let broadcast = Delivery::BroadcastFrom {
        sender: &sa.user,
        content: MEETING,
    };
    sb.expect_delivery(&broadcast)?;
    sc.expect_delivery(&broadcast)?;
    // The earlier deadline first: c hears its 304 while its own session is still up.
    sc.expect_reply(&to_a, &Response::DeliveryFailed)?;
    not_before(timeout, started, "c's /to")?;
    sa.expect_la_closed(
        "after its delivery timed out (its session ends, and its /toall in flight gets no answer)",
    )?;
    // Then both later ones: the /toall sent before a left stays outstanding until it times out,
    // and each ends its recipient's session.
    let why = "after the /broadcastfrom it never acknowledged timed out (its session ends)";
    sb.expect_la_closed(why)?;
    sc.expect_la_closed(why)?;
    let [_, b, _] = &accounts;
    let mut again = ctx.ready(b)?;
    ctx.wait_for_list(&mut again, &[b])?;
    Ok(())
}
