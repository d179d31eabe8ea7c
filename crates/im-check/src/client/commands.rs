//! docs/protocol.md §4, steps 4–5: commands on La, and messages on Lb acknowledged and printed.

use simple_im_core::protocol::{
    receipt_bytes, write_list, Delivery, Request, Response, DEFAULT_MAX_LINE,
};

use super::{without_newline, Check, Ctx, EXIT_WITHIN, OTHER_USER, USER};
use crate::outcome::{escape, Failure, Got, Outcome};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "commands-sent",
        "typed commands are sent with \\n, empty lines are not sent, answers are printed",
        commands_sent,
    ),
    Check::new(
        "ack-from",
        "a /from on Lb is answered exactly 302 Message receipt successful",
        ack_from,
    ),
    Check::new(
        "ack-broadcastfrom",
        "a /broadcastfrom on Lb is answered exactly 302 Message receipt successful",
        ack_broadcastfrom,
    ),
    Check::new(
        "other-lb-line-acked",
        "a line on Lb that is no message is printed, answered 302 all the same, with a warning on stderr",
        other_lb_line_acked,
    ),
    Check::new(
        "prints-deliveries",
        "/from and /broadcastfrom lines are printed as received",
        prints_deliveries,
    ),
    Check::new(
        "la-line-bound",
        "an answer on La of exactly 65536 bytes is printed whole; one past that ends the client \
         with code 1",
        la_line_bound,
    ),
    Check::new(
        "overlong-lb-line-acked",
        "a line on Lb past 65536 bytes is answered 302 before its \\n comes, with a warning, and \
         not shown",
        overlong_lb_line_acked,
    ),
];

/// How much of a long line's start and end the report compares: enough to tell it whole.
const ENDS: usize = 64;

fn commands_sent(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    rig.client.type_line(b"")?;
    rig.type_command(
        &Request::List.to_bytes(),
        "the client's line on La after an empty line and /list were typed",
    )?;
    let mut list = Vec::new();
    write_list([USER, OTHER_USER], &mut list);
    rig.la()?.send(&list, ctx.deadline)?;
    rig.client
        .expect_output(&without_newline(&list), ctx.deadline)?;
    let to = Request::To {
        target: OTHER_USER,
        content: b"Hello! Nice to meet you!",
    };
    rig.type_command(
        &to.to_bytes(),
        "the client's line on La after a /to was typed",
    )?;
    rig.answer_shown(&Response::Delivered)?;
    Ok(())
}

fn ack_from(ctx: &Ctx) -> Outcome {
    ctx.start_ready()?.deliver(&Delivery::From {
        sender: OTHER_USER,
        content: b"Jacky, nice to meet you too!",
    })?;
    Ok(())
}

fn ack_broadcastfrom(ctx: &Ctx) -> Outcome {
    ctx.start_ready()?.deliver(&Delivery::BroadcastFrom {
        sender: OTHER_USER,
        content: b"OK.",
    })?;
    Ok(())
}

fn prints_deliveries(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    for delivery in [
        Delivery::From {
            sender: OTHER_USER,
            content: b"Jacky, nice to meet you too!",
        },
        Delivery::BroadcastFrom {
            sender: OTHER_USER,
            content: b"No problem.",
        },
    ] {
        let bytes = delivery.to_bytes();
        let deadline = ctx.deadline;
        rig.lb()?.send(&bytes, deadline)?;
        rig.client
            .expect_output(&without_newline(&bytes), deadline)?;
        // Whatever it answers (ack-from checks that), read it so Lb stays in step.
        let _ = rig.lb()?.read_line(deadline);
    }
    Ok(())
}

fn other_lb_line_acked(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    let line: &[u8] = b"hello from a server that deviates\n";
    let deadline = ctx.deadline;
    let lb = rig.lb()?;
    lb.send(line, deadline)?;
    let context = format!("the client's answer on Lb to {}", escape(line));
    lb.expect_line(&receipt_bytes(), deadline, &context)?;
    rig.client.expect_output(&without_newline(line), deadline)?;
    rig.client
        .expect_error_message("after a line on Lb that is neither /from nor /broadcastfrom")?;
    Ok(())
}

/// A `301` answer of exactly `len` bytes, `\n` included: the asker and one long name.
fn list_of_len(len: usize) -> Vec<u8> {
    let mut line = Vec::new();
    write_list([USER, OTHER_USER], &mut line);
    line.pop();
    let mut n = 0usize;
    while line.len() + 1 < len {
        // Names counting up, so a cut or a shuffle shows.
        line.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[n % 36]);
        n += 1;
    }
    line.push(b'\n');
    line
}

fn la_line_bound(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    let list = Request::List.to_bytes();
    rig.type_command(&list, "the client's line on La after /list was typed")?;
    // Exactly the bound, \n included: the client prints it as it came.
    let line = list_of_len(DEFAULT_MAX_LINE);
    let deadline = ctx.deadline;
    rig.la()?.send(&line, deadline)?;
    let shown = without_newline(&line);
    rig.client.expect_output(&shown[..ENDS], deadline)?;
    rig.client
        .expect_output(&shown[shown.len() - ENDS..], deadline)?;
    // One byte past the bound, and no \n yet: the client gives up on the server.
    rig.type_command(&list, "the client's line on La after /list was typed again")?;
    let mut over = list_of_len(DEFAULT_MAX_LINE + 2);
    over.pop();
    rig.la()?.send(&over, deadline)?;
    rig.client.expect_error_exit(
        Some(1),
        EXIT_WITHIN,
        &format!(
            "after an answer on La of {} bytes without its \\n (past the bound of {DEFAULT_MAX_LINE})",
            over.len()
        ),
    )?;
    Ok(())
}

fn overlong_lb_line_acked(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    let deadline = ctx.deadline;
    let mut long = Delivery::From {
        sender: OTHER_USER,
        content: b"",
    }
    .to_bytes();
    long.pop();
    long.resize(DEFAULT_MAX_LINE + 1, b'z');
    let lb = rig.lb()?;
    lb.send(&long, deadline)?;
    let context = format!(
        "the client's answer on Lb to a /from of {} bytes without its \\n yet (past the bound of \
         {DEFAULT_MAX_LINE})",
        long.len()
    );
    lb.expect_line(&receipt_bytes(), deadline, &context)?;
    // The rest of it is discarded; the next message is shown and acknowledged as usual.
    lb.send(b"zzzz\n", deadline)?;
    let next = Delivery::From {
        sender: OTHER_USER,
        content: b"after the long one",
    };
    rig.deliver(&next)?;
    rig.client
        .expect_output(&without_newline(&next.to_bytes()), deadline)?;
    let shown = rig.client.printed();
    if shown
        .windows(ENDS)
        .any(|window| window.iter().all(|&b| b == b'z'))
    {
        return Err(Failure::unexpected(
            "the client's output after a line on Lb past the bound",
            "nothing of that line",
            Got::Bytes(shown.to_vec()),
        )
        .into());
    }
    rig.client
        .expect_error_message("after a line on Lb past the bound")?;
    Ok(())
}
