//! `im-check`: a conformance checker for any implementation of docs/protocol.md.
//!
//! - `im-check server --host H --port P --users FILE` runs every server behaviour of §1–§3 as
//!   a named, independent check over raw sockets ([`server`]).
//! - `im-check client -- CMD ARGS…` runs a client command against scripted fake servers and
//!   checks §4 ([`client`]).
//!
//! Both modes list their checks the same way ([`registry`]), and [`report`] runs and reports
//! them.
//!
//! Each check is bounded in time and reported PASS, FAIL (with the expected and the actual
//! bytes) or SKIP (with the reason); the exit code is 0 when nothing failed, 1 otherwise, and 2
//! for bad arguments.

mod client;
mod outcome;
mod registry;
mod report;
mod server;
mod wire;

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use simple_im::protocol::DEFAULT_MAX_LINE;
use simple_im::users;

use crate::registry::Registry;
use crate::report::Style;

/// Checks an implementation of the instant-messaging protocol (docs/protocol.md) byte for byte.
#[derive(Debug, Parser)]
#[command(name = "im-check", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Checks a running server (docs/protocol.md §1–§3) over raw TCP connections.
    ///
    /// Start the server first with a users file of at least 3 users, and pass im-check the
    /// same file. Checks that log in more users than the file has are skipped.
    Server(ServerArgs),
    /// Checks a client program (docs/protocol.md §4) against scripted fake servers.
    ///
    /// The command is started once per check with `127.0.0.1 <port>` appended, where a fake
    /// server listens; im-check types on its standard input and reads its standard output.
    Client(ClientArgs),
}

/// Options of both modes.
#[derive(Debug, Args)]
struct Common {
    /// Print the report as JSON (at the end) instead of one line per check.
    #[arg(long)]
    json: bool,

    /// Run only this check (repeat for several); `--list` shows the names.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,

    /// List the checks and what each one checks, and run nothing.
    #[arg(long)]
    list: bool,

    /// How long one check may take (e.g. `5s`, `800ms`); a check still waiting then fails.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_span)]
    timeout: Duration,

    /// Under each failed check, print what went over the wire.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// The server's TCP port. Give it more than once for a cluster (`--port 4000 --port 4001`):
    /// the users are spread over the nodes in turn, so users of one check are on different nodes.
    #[arg(long, required_unless_present = "list", value_parser = clap::value_parser!(u16).range(1..))]
    port: Vec<u16>,

    /// The users file the server was started with (`username password` a line).
    #[arg(long, value_name = "FILE", required_unless_present = "list")]
    users: Option<PathBuf>,

    /// The server's ack timeout; without it the ack-timeout check is skipped.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    ack_timeout: Option<Duration>,

    /// The server's login timeout; without it the login-timeout check is skipped.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    login_timeout: Option<Duration>,

    /// Failed logins in a row after which the server closes the connection.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_login_failures: u32,

    /// The server's longest accepted line, `\n` included.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    max_line: usize,

    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct ClientArgs {
    #[command(flatten)]
    common: Common,

    /// The client command and its arguments, after `--` (e.g. `-- python3 client.py`).
    #[arg(last = true, value_name = "CMD", required_unless_present = "list")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Server(args) => run_server(args),
        Mode::Client(args) => run_client(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("im-check: {message}");
            ExitCode::from(2)
        }
    }
}

fn run_server(args: ServerArgs) -> Result<ExitCode, String> {
    run_mode("server", server::CHECKS, &args.common, move || {
        let (false, Some(users_path)) = (args.port.is_empty(), args.users) else {
            return Err("--port and --users are required".into());
        };
        let mut addrs = Vec::new();
        for &port in &args.port {
            let addr = (args.host.as_str(), port)
                .to_socket_addrs()
                .map_err(|error| format!("cannot resolve {}: {error}", args.host))?
                .next()
                .ok_or_else(|| format!("{} has no address", args.host))?;
            addrs.push(addr);
        }
        let shown: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        let (accounts, hashed_accounts) = read_accounts(&users_path)?;
        let config = server::ServerConfig {
            addrs,
            accounts,
            hashed_accounts,
            ack_timeout: args.ack_timeout,
            login_timeout: args.login_timeout,
            max_login_failures: args.max_login_failures,
            max_line: args.max_line,
        };
        Ok((shown.join(" "), config))
    })
}

fn run_client(args: ClientArgs) -> Result<ExitCode, String> {
    run_mode("client", client::CHECKS, &args.common, move || {
        if args.command.is_empty() {
            return Err("give the client command after `--`".into());
        }
        let target = args
            .command
            .iter()
            .map(|part| part.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let config = client::ClientConfig {
            command: args.command,
        };
        Ok((target, config))
    })
}

/// One mode's run: `--list`, or the checks `--only` chooses run against the peer that
/// `target` describes (what was checked, and what the checks need to know about it).
fn run_mode<C: Send + Sync + 'static>(
    mode: &'static str,
    checks: Registry<C>,
    common: &Common,
    target: impl FnOnce() -> Result<(String, C), String>,
) -> Result<ExitCode, String> {
    if common.list {
        let names: Vec<_> = registry::all(checks)
            .map(|check| (check.name, check.description))
            .collect();
        report::print_list(&names);
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = registry::select(checks, &common.only)?;
    let (target, config) = target()?;
    let entries = registry::entries(&chosen, config, common.timeout);
    let summary = report::run(mode, target, entries, style(common));
    Ok(exit_code(summary.failed))
}

fn style(common: &Common) -> Style {
    Style {
        json: common.json,
        verbose: common.verbose,
    }
}

fn exit_code(failed: usize) -> ExitCode {
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The accounts of a users file (docs/protocol.md §5) that im-check can log in with, in file
/// order, and how many it cannot use because their password is stored hashed.
fn read_accounts(path: &Path) -> Result<(Vec<server::Account>, usize), String> {
    let bytes = std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let listed = users::accounts(&bytes).map_err(|error| format!("{}: {error}", path.display()))?;
    // A hash cannot be typed as a password: such a user is of no use to the checks.
    let hashed = listed.iter().filter(|account| account.is_hashed()).count();
    let accounts = listed
        .into_iter()
        .filter(|account| !account.is_hashed())
        .map(|account| server::Account {
            name: account.user,
            password: account.stored,
        })
        .collect();
    Ok((accounts, hashed))
}

/// A duration like `300ms` or `5s`, in the crate's one spelling for durations.
fn parse_span(text: &str) -> Result<Duration, String> {
    text.parse::<simple_im::cli::Span>().map(|span| span.0)
}
