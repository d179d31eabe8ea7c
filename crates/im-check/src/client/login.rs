//! docs/protocol.md §4, steps 1–3: connecting, the prompts, `/login`, and `/port` with its Lb.

use std::net::Ipv4Addr;
use std::time::Duration;

use simple_im_core::client::{PASSWORD_PROMPT, USER_PROMPT};
use simple_im_core::protocol::Response;

use super::process::ClientProcess;
use super::{Check, Ctx, EXIT_WITHIN, OTHER_PASSWORD, OTHER_USER, PASSWORD, USER};
use crate::outcome::Outcome;
use crate::wire::closed_port;

pub(super) const CHECKS: &[Check] = &[
    Check::new("no-server", "a server that cannot be reached: an error on stderr, exit code 1", no_server),
    Check::new("prompts", "the two prompts, user name first, each a whole line of its own before its line is read", prompts),
    Check::new("login-line", "the login is sent as exactly /login <user> <password>", login_line),
    Check::new("login-retry-on-102", "on 102 the client prints it, asks both again and sends the new login", login_retry_on_102),
    Check::new("login-retry-on-401", "on 401 to its /login the client prints it, asks both again and sends the new login", login_retry_on_401),
    Check::new("bad-login-not-sent", "a password with a space is not sent: the client asks both again", bad_login_not_sent),
    Check::new("port-and-lb", "after 101 the client sends /port <n>, accepts our connection on 127.0.0.1:n and prints 201", port_and_lb),
    Check::new("lb-only-from-server", "a connection to the client's /port from another address is closed unread; the server's is taken", lb_only_from_server),
    Check::new("lb-failed-202-exits", "on 202 the client prints it and exits with code 1", lb_failed_202_exits),
    Check::new("host-name", "the server given as a host name (localhost) is resolved and connected to", host_name),
    Check::new("unresolvable-host-exit-2", "a server name that does not resolve: a one-line error and exit code 2", unresolvable_host_exit_2),
    Check::new("bad-arguments-exit-2", "a bad or missing port: a one-line error and exit code 2", bad_arguments_exit_2),
];

/// A name that never resolves (RFC 6761 keeps `.invalid` for that).
const UNRESOLVABLE: &str = "no-such-host.invalid";

fn no_server(ctx: &Ctx) -> Outcome {
    let port = closed_port(Ipv4Addr::LOCALHOST.into())?;
    let mut client = ClientProcess::spawn(
        &ctx.config.command,
        ctx.config.dir.as_deref(),
        port,
        &ctx.transcript,
    )?;
    let after = format!("started with 127.0.0.1 {port}, where nothing listens");
    // A second for the client, and one more for its interpreter to start.
    client.expect_error_exit(Some(1), EXIT_WITHIN + Duration::from_secs(1), &after)?;
    Ok(())
}

fn prompts(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    let deadline = ctx.deadline;
    rig.client
        .expect_prompt(USER_PROMPT, "user name", deadline)?;
    rig.client.type_line(USER)?;
    rig.client
        .expect_prompt(PASSWORD_PROMPT, "password", deadline)?;
    rig.client.type_line(PASSWORD)?;
    Ok(())
}

fn login_line(ctx: &Ctx) -> Outcome {
    ctx.start_login()?;
    Ok(())
}

fn login_retry_on_102(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.answer_shown(&Response::AuthFailed)?;
    rig.login_as(OTHER_USER, OTHER_PASSWORD)?;
    rig.answer(&Response::AuthOk)?;
    rig.expect_port()?;
    Ok(())
}

fn login_retry_on_401(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.answer_shown(&Response::Unrecognized)?;
    rig.login_as(OTHER_USER, OTHER_PASSWORD)?;
    rig.answer(&Response::AuthOk)?;
    rig.expect_port()?;
    Ok(())
}

fn bad_login_not_sent(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start()?;
    rig.accept_la()?;
    rig.answer_prompt(USER_PROMPT, USER)?;
    rig.answer_prompt(PASSWORD_PROMPT, b"two words")?;
    // Asked again (after a hint), the good pair is the first thing that goes out.
    rig.login_as(USER, PASSWORD)?;
    Ok(())
}

fn lb_only_from_server(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.answer(&Response::AuthOk)?;
    let port = rig.expect_port()?;
    // The stranger comes first: a client that takes Lb after 201 finds it first in line.
    let mut stranger = rig.connect_stranger(port)?;
    rig.connect_lb(port)?;
    rig.answer_shown(&Response::LbOk)?;
    stranger.expect_closed(
        ctx.deadline,
        "a connection to the client's Lb port from 127.0.0.2 (not the server's address)",
    )?;
    Ok(())
}

fn port_and_lb(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.answer(&Response::AuthOk)?;
    let port = rig.expect_port()?;
    rig.connect_lb(port)?;
    rig.answer_shown(&Response::LbOk)?;
    Ok(())
}

fn lb_failed_202_exits(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_login()?;
    rig.answer(&Response::AuthOk)?;
    rig.expect_port()?;
    rig.answer_shown(&Response::LbFailed)?;
    rig.client.expect_exit(Some(1), EXIT_WITHIN, "after 202")?;
    Ok(())
}

fn host_name(ctx: &Ctx) -> Outcome {
    let mut rig = ctx.start_at("localhost")?;
    rig.accept_la()?;
    rig.login_as(USER, PASSWORD)?;
    Ok(())
}

/// How long a client with bad arguments may take to say so: a second, and one more for its
/// interpreter to start.
const REFUSE_WITHIN: Duration = Duration::from_secs(2);

fn unresolvable_host_exit_2(ctx: &Ctx) -> Outcome {
    let port = closed_port(Ipv4Addr::LOCALHOST.into())?.to_string();
    expect_usage_error(ctx, &[UNRESOLVABLE.to_string(), port])
}

/// Starts the client with `args` and expects one line on standard error and exit code 2.
fn expect_usage_error(ctx: &Ctx, args: &[String]) -> Outcome {
    let mut client = ClientProcess::spawn_with(
        &ctx.config.command,
        ctx.config.dir.as_deref(),
        args,
        &ctx.transcript,
    )?;
    let after = format!("started with {:?}", args.join(" "));
    client.expect_usage_error(REFUSE_WITHIN + EXIT_WITHIN, &after)?;
    Ok(())
}

fn bad_arguments_exit_2(ctx: &Ctx) -> Outcome {
    let ip = Ipv4Addr::LOCALHOST.to_string();
    let cases: [&[&str]; 4] = [
        &[ip.as_str(), "x"],
        &[ip.as_str(), "0"],
        &[ip.as_str(), "65536"],
        &[ip.as_str()],
    ];
    for case in cases {
        let args: Vec<String> = case.iter().map(|arg| arg.to_string()).collect();
        expect_usage_error(ctx, &args)?;
    }
    Ok(())
}
