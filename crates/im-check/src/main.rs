//! `im-check`: a conformance checker for any implementation of docs/protocol.md.
//!
//! - `im-check server --host H --port P --users FILE` runs every server behaviour of §1–§3 as
//!   a named, independent check over raw sockets ([`server`]); with `--spawn CMD` im-check
//!   starts the server itself, afresh for every check ([`server::peer`]).
//! - `im-check client -- CMD ARGS…` runs a client command against scripted fake servers and
//!   checks §4 ([`client`]).
//!
//! - `im-check grade DIR` checks every submission of a class, both ways, and writes a
//!   gradebook and HTML reports ([`grade`]).
//!
//! Both modes list their checks the same way ([`registry`]), and [`report`] runs and reports
//! them.
//!
//! Each check is bounded in time and reported PASS, FAIL (with the expected and the actual
//! bytes) or SKIP (with the reason); the exit code is 0 when nothing failed, 1 otherwise, and 2
//! for bad arguments.

mod client;
mod grade;
mod outcome;
mod process;
mod registry;
mod report;
mod server;
mod wire;

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use simple_im_core::protocol::DEFAULT_MAX_LINE;
use simple_im_core::users;

use crate::registry::Registry;
use crate::report::{Fixed, Peer, Style};
use crate::server::peer::{default_users, Launch, Spawned, Watched};

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
    /// same file, or let im-check start it afresh for every check with `--spawn`. Checks that
    /// log in more users than the file has are skipped.
    Server(ServerArgs),
    /// Checks a client program (docs/protocol.md §4) against scripted fake servers.
    ///
    /// The command is started once per check with `127.0.0.1 <port>` appended, where a fake
    /// server listens; im-check types on its standard input and reads its standard output.
    Client(ClientArgs),
    /// Grades a class: every sub-folder of DIR is one submission, checked as a server and as
    /// a client; writes grades.csv, an HTML page per submission and an index.
    ///
    /// Each submission runs in a temporary copy of its folder, every program it starts in a
    /// process group of its own, killed after each check. Progress goes to standard error.
    Grade(GradeArgs),
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

    /// Stop at the first failed check (the rest are reported as not run): enough to tell a
    /// broken program from a good one, quickly.
    #[arg(long)]
    fail_fast: bool,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The server's host name or IP address.
    #[arg(long, default_value = "127.0.0.1", conflicts_with = "spawn")]
    host: String,

    /// The server's TCP port. Give it more than once for a cluster (`--port 4000 --port 4001`):
    /// the users are spread over the nodes in turn, so users of one check are on different nodes.
    #[arg(long, required_unless_present_any = ["list", "spawn"], conflicts_with = "spawn", value_parser = clap::value_parser!(u16).range(1..))]
    port: Vec<u16>,

    /// The users file the server was started with (`username password` a line). With
    /// `--spawn` it is optional: im-check writes one with three users itself.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["list", "spawn"])]
    users: Option<PathBuf>,

    /// Start the server itself, with this command: `{port}` becomes a free port of 127.0.0.1
    /// and `{users}` the users file (e.g. `--spawn 'python3 server.py {port} {users}'`). Split
    /// into words as a shell would, but run without one. A fresh server for every check,
    /// killed with its whole process group after it.
    #[arg(long, value_name = "CMD")]
    spawn: Option<String>,

    /// With `--spawn`: start the server once for all the checks instead of once per check.
    #[arg(long)]
    one_server: bool,

    #[command(flatten)]
    server: ServerOptions,

    #[command(flatten)]
    common: Common,
}

/// What im-check is told about a server it checks.
#[derive(Debug, Args)]
struct ServerOptions {
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

    /// How many messages the server lets wait for one recipient (its `--max-queue`); the
    /// queue-full check needs this many users and 3 more (with `--spawn`, im-check writes them).
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_QUEUE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    max_queue: usize,

    /// How long a server im-check starts may take to listen on its port.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_span)]
    start_timeout: Duration,
}

impl ServerOptions {
    /// What the checks know about a server at `addrs` with the users of `users_path`.
    fn config(
        &self,
        addrs: Vec<SocketAddr>,
        users_path: &Path,
    ) -> Result<server::ServerConfig, String> {
        let (accounts, hashed_accounts) = read_accounts(users_path)?;
        Ok(server::ServerConfig {
            addrs,
            accounts,
            hashed_accounts,
            ack_timeout: self.ack_timeout,
            login_timeout: self.login_timeout,
            max_login_failures: self.max_login_failures,
            max_line: self.max_line,
            max_queue: self.max_queue,
            launch: None,
        })
    }
}

#[derive(Debug, Args)]
struct GradeArgs {
    /// The folder of submissions, one sub-folder each.
    dir: PathBuf,

    /// Where grades.csv, index.html and the submissions' pages go.
    #[arg(long, value_name = "DIR", default_value = "grades")]
    out: PathBuf,

    /// Each submission's server, run in its copy: `{port}`, `{users}` and `{dir}` (the
    /// copy) are filled in.
    #[arg(long, value_name = "CMD", default_value = DEFAULT_SERVER_CMD)]
    server_cmd: String,

    /// Each submission's client, run in its copy with `127.0.0.1 <port>` appended; `{dir}` is
    /// filled in.
    #[arg(long, value_name = "CMD", default_value = DEFAULT_CLIENT_CMD)]
    client_cmd: String,

    /// A prefix put before every command of a submission, such as a sandbox (`{dir}` and
    /// `{users}` are filled in; docs/im-check.md has a bwrap example).
    #[arg(long, value_name = "PREFIX")]
    wrap: Option<String>,

    /// How many submissions are checked at a time.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,

    /// Points per check, `CHECK POINTS` a line (`server/login-ok 2`, `client/* 1`); without
    /// it every check is worth one point.
    #[arg(long, value_name = "FILE")]
    rubric: Option<PathBuf>,

    /// Also write the results as a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    /// Run only this check, as `server/NAME` or `client/NAME` (repeat for several).
    #[arg(long, value_name = "MODE/NAME")]
    only: Vec<String>,

    /// How long one check may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_span)]
    timeout: Duration,

    #[command(flatten)]
    server: ServerOptions,
}

/// `--server-cmd` unless told otherwise; a submission without server.py then fails its
/// server checks at once.
const DEFAULT_SERVER_CMD: &str = "python3 server.py {port} {users}";
/// `--client-cmd` unless told otherwise.
const DEFAULT_CLIENT_CMD: &str = "python3 client.py";

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
    raise_open_files_limit();
    // The programs under test are in process groups of their own, out of reach of the
    // terminal's Ctrl-C: an interrupted im-check ends them itself.
    let interrupted = ctrlc::set_handler(|| {
        process::kill_all_groups();
        std::process::exit(130);
    });
    if let Err(error) = interrupted {
        eprintln!("im-check: cannot catch Ctrl-C ({error}); an interrupted run may leave programs running");
    }
    let result = match cli.mode {
        Mode::Server(args) => run_server(args),
        Mode::Client(args) => run_client(args),
        Mode::Grade(args) => run_grade(args),
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
    if args.one_server && args.spawn.is_none() {
        return Err("--one-server only goes with --spawn".into());
    }
    run_mode("server", server::CHECKS, &args.common, || {
        if let Some(spawn) = &args.spawn {
            return spawned_server(spawn, &args);
        }
        let (false, Some(users_path)) = (args.port.is_empty(), &args.users) else {
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
        let config = args.server.config(addrs, users_path)?;
        let peer: Box<dyn Peer<server::ServerConfig>> = Box::new(Watched::new(config));
        Ok((shown.join(" "), peer))
    })
}

/// `im-check server --spawn`: the servers im-check starts, and the users file they get.
fn spawned_server(
    spawn: &str,
    args: &ServerArgs,
) -> Result<(String, Box<dyn Peer<server::ServerConfig>>), String> {
    let command = process::Template::parse(spawn).map_err(|error| format!("--spawn {error}"))?;
    if !command.mentions("port") {
        return Err("--spawn's command must pass the server its port as {port}".into());
    }
    let (users, written) = match &args.users {
        Some(path) => (path.clone(), None),
        None => {
            let file = write_temp_users(args.server.max_queue)?;
            (file.to_path_buf(), Some(file))
        }
    };
    let dir = std::env::current_dir().map_err(|error| format!("no current directory: {error}"))?;
    let config = args.server.config(Vec::new(), &users)?;
    let launch = Launch {
        command,
        wrap: None,
        users,
        dir,
        start_timeout: args.server.start_timeout,
    };
    let peer = Spawned::new(launch, config, !args.one_server).owning(written);
    Ok((spawn.to_string(), Box::new(peer)))
}

/// A users file with the [`default_users`] for a queue of `max_queue`, removed when the
/// returned path is dropped.
fn write_temp_users(max_queue: usize) -> Result<tempfile::TempPath, String> {
    let mut file = tempfile::Builder::new()
        .prefix("im-check-users-")
        .suffix(".txt")
        .tempfile()
        .map_err(|error| format!("cannot write a users file: {error}"))?;
    file.write_all(default_users(max_queue).as_bytes())
        .map_err(|error| format!("cannot write a users file: {error}"))?;
    Ok(file.into_temp_path())
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
            dir: None,
        };
        let peer: Box<dyn Peer<client::ClientConfig>> = Box::new(Fixed(Arc::new(config)));
        Ok((target, peer))
    })
}

fn run_grade(args: GradeArgs) -> Result<ExitCode, String> {
    let server_cmd = process::Template::parse(&args.server_cmd)
        .map_err(|error| format!("--server-cmd {error}"))?;
    if !server_cmd.mentions("port") {
        return Err("--server-cmd must pass the server its port as {port}".into());
    }
    let client_cmd = process::Template::parse(&args.client_cmd)
        .map_err(|error| format!("--client-cmd {error}"))?;
    let wrap = args
        .wrap
        .as_deref()
        .map(process::Template::parse)
        .transpose()
        .map_err(|error| format!("--wrap {error}"))?;
    let mut server_only = Vec::new();
    let mut client_only = Vec::new();
    for wanted in &args.only {
        match wanted.split_once('/') {
            Some(("server", name)) => server_only.push(name.to_string()),
            Some(("client", name)) => client_only.push(name.to_string()),
            _ => {
                return Err(format!(
                    "--only {wanted:?}: name a check as server/NAME or client/NAME"
                ))
            }
        }
    }
    let select_mode = |only: &[String], other: &[String]| !only.is_empty() || other.is_empty();
    let server_checks = if select_mode(&server_only, &client_only) {
        registry::select(server::CHECKS, &server_only)?
    } else {
        Vec::new()
    };
    let client_checks = if select_mode(&client_only, &server_only) {
        registry::select(client::CHECKS, &client_only)?
    } else {
        Vec::new()
    };
    let known: Vec<String> = registry::all(server::CHECKS)
        .map(|check| grade::column("server", check.name))
        .chain(registry::all(client::CHECKS).map(|check| grade::column("client", check.name)))
        .collect();
    let rubric = match &args.rubric {
        Some(path) => grade::rubric::Rubric::read(path, &known)?,
        None => grade::rubric::Rubric::default(),
    };
    if !args.dir.is_dir() {
        return Err(format!("{} is not a folder", args.dir.display()));
    }
    let scratch = tempfile::Builder::new()
        .prefix("im-check-grade-")
        .tempdir()
        .map_err(|error| format!("cannot make a temporary folder: {error}"))?;
    let users = scratch.path().join("users.txt");
    std::fs::write(&users, default_users(args.server.max_queue))
        .map_err(|error| format!("{}: {error}", users.display()))?;
    let copies = scratch.path().join("submissions");
    std::fs::create_dir(&copies).map_err(|error| format!("{}: {error}", copies.display()))?;
    let settings = grade::Settings {
        dir: args.dir,
        out: args.out,
        server_file: (args.server_cmd == DEFAULT_SERVER_CMD).then_some("server.py"),
        client_file: (args.client_cmd == DEFAULT_CLIENT_CMD).then_some("client.py"),
        server_cmd,
        client_cmd,
        wrap,
        jobs: usize::from(args.jobs),
        rubric,
        junit: args.junit,
        server_checks,
        client_checks,
        timeout: args.timeout,
        server: args.server.config(Vec::new(), &users)?,
        users,
        start_timeout: args.server.start_timeout,
        scratch: copies,
    };
    for path in grade::run(settings)? {
        eprintln!("im-check grade: wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The peer a run checks: what it is called in the report, and the peer itself.
type Target<C> = (String, Box<dyn Peer<C>>);

/// One mode's run: `--list`, or the checks `--only` chooses run against the peer that
/// `target` describes.
fn run_mode<C: Send + Sync + 'static>(
    mode: &'static str,
    checks: Registry<C>,
    common: &Common,
    target: impl FnOnce() -> Result<Target<C>, String>,
) -> Result<ExitCode, String> {
    if common.list {
        let names: Vec<_> = registry::all(checks)
            .map(|check| (check.name, check.description))
            .collect();
        report::print_list(&names);
        return Ok(ExitCode::SUCCESS);
    }
    let chosen = registry::select(checks, &common.only)?;
    let (target, mut peer) = target()?;
    let summary = report::run(
        mode,
        target,
        &chosen,
        common.timeout,
        peer.as_mut(),
        style(common),
    );
    Ok(exit_code(summary.has_problems()))
}

fn style(common: &Common) -> Style {
    Style {
        json: common.json,
        verbose: common.verbose,
        quiet: false,
        fail_fast: common.fail_fast,
    }
}

fn exit_code(problems: bool) -> ExitCode {
    if problems {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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

/// Raises the soft limit on open files to the hard one: the queue-full check holds two
/// connections per queued message, and the servers im-check starts inherit the limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            // Without it the check fails with its reason; nothing else needs the room.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A duration like `300ms` or `5s`, spelled as `im-server` takes them (humantime's syntax).
fn parse_span(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?}: {err}; expected a duration like 500ms, 10s or 1m30s"))
}
