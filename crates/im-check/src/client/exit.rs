//! docs/protocol.md §4, steps 6–7: `/exit`, the end of standard input, and a server that goes away.

use std::thread;
use std::time::Duration;

use simple_im_core::protocol::{Request, Response};

use super::rig::Rig;
use super::{without_newline, Check, Ctx, EXIT_WITHIN};
use crate::outcome::{Outcome, Problem};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "exit-310",
        "/exit: after 310 the client exits with code 0",
        exit_310,
    ),
    Check::new(
        "exit-lb-closed-first",
        "/exit: Lb closes before 310 arrives; the client still waits for it and exits 0",
        exit_lb_closed_first,
    ),
    Check::new(
        "stdin-eof-exits",
        "end of standard input acts as /exit: /exit is sent, 310, exit code 0",
        stdin_eof_exits,
    ),
    Check::new(
        "server-gone-exits",
        "the server closes La and Lb: an error on stderr, a non-zero exit within 2s",
        server_gone_exits,
    ),
    Check::new(
        "server-gone-at-login",
        "the server closes La before answering /login: a non-zero exit within 2s",
        server_gone_at_login,
    ),
];

fn exit_310(ctx: &Ctx) -> Outcome {
    let mut rig = exit_typed(ctx)?;
    rig.answer(&Response::Bye)?;
    rig.close_both();
    rig.client
        .expect_output(&without_newline(&Response::Bye.to_bytes()), ctx.deadline)?;
    rig.client.expect_exit(Some(0), EXIT_WITHIN, "after 310")?;
    Ok(())
}

/// A ready client, `/exit` typed and seen on La.
fn exit_typed(ctx: &Ctx) -> Result<Rig, Problem> {
    let mut rig = ctx.start_ready()?;
    rig.type_command(
        &Request::Exit.to_bytes(),
        "the client's line on La after /exit was typed",
    )?;
    Ok(rig)
}

fn exit_lb_closed_first(ctx: &Ctx) -> Outcome {
    let mut rig = exit_typed(ctx)?;
    rig.lb()?.close();
    thread::sleep(Duration::from_millis(200));
    rig.answer(&Response::Bye)?;
    rig.la()?.close();
    rig.client.expect_exit(
        Some(0),
        EXIT_WITHIN,
        "after Lb closed and, 200ms later, 310 came on La",
    )?;
    Ok(())
}

fn stdin_eof_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    rig.client.close_stdin();
    rig.expect_la(
        &Request::Exit.to_bytes(),
        "the client's line on La after its standard input ended",
    )?;
    rig.answer(&Response::Bye)?;
    rig.close_both();
    rig.client.expect_exit(Some(0), EXIT_WITHIN, "after 310")?;
    Ok(())
}

fn server_gone_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_ready()?;
    rig.close_both();
    let after = "after the server closed La and Lb";
    rig.client.expect_error_exit(None, EXIT_WITHIN, after)?;
    Ok(())
}

fn server_gone_at_login(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.la()?.close();
    let after = "after the server closed La instead of answering /login";
    rig.client.expect_error_exit(None, EXIT_WITHIN, after)?;
    Ok(())
}
