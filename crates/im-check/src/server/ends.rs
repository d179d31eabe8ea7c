//! docs/protocol.md §3, Ends of a session: `/exit` once Ready, and connections that just close.

use super::session::Session;
use super::{Check, Ctx};
use crate::outcome::{Failure, Outcome};

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "exit-ready",
        "/exit: 310, both connections closed, the user offline and free to log in again",
        exit_ready,
    ),
    Check::new(
        "la-eof-ends-session",
        "a client that closes La without /exit goes offline",
        la_eof_ends_session,
    ),
    Check::new(
        "lb-eof-ends-session",
        "a client that closes Lb goes offline",
        lb_eof_ends_session,
    ),
];

fn exit_ready(ctx: &Ctx) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let sb = ctx.ready(&b)?;
    ctx.expect_exit(sb, &b, &mut sa, &[&a])?;
    Ok(())
}

fn la_eof_ends_session(ctx: &Ctx) -> Outcome {
    ends_when(ctx, |sb| {
        sb.la.close();
        Ok(())
    })
}

fn lb_eof_ends_session(ctx: &Ctx) -> Outcome {
    ends_when(ctx, |sb| {
        sb.lb()?.close();
        Ok(())
    })
}

/// Two Ready users; once the second's connections see `end`, the first's `/list` soon shows
/// the first alone.
fn ends_when(ctx: &Ctx, end: fn(&mut Session) -> Result<(), Failure>) -> Outcome {
    let [a, b] = ctx.accounts()?;
    let mut sa = ctx.ready(&a)?;
    let mut sb = ctx.ready(&b)?;
    end(&mut sb)?;
    ctx.wait_for_list(&mut sa, &[&a])?;
    Ok(())
}
