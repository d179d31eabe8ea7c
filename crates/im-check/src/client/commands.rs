//! docs/protocol.md §4, steps 4–5: commands on La, and messages on Lb acknowledged and printed.

use simple_im_core::protocol::{receipt_bytes, write_list, Delivery, Request, Response};

use super::{without_newline, Check, Ctx, OTHER_USER, USER};
use crate::outcome::{escape, Outcome};

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
];

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
