//! `im-bench`: a load generator for any server of docs/protocol.md, and the figures of BENCHMARKS.md.
//!
//! Each simulated user is the client driver's `AsyncClient` on smol around a
//! [`simple_im_core::client::ClientSession`] (the same client core as `im-client`), over real
//! sockets on one thread; the scenario answers its line requests and counts its events. It
//! speaks only the wire protocol, so it loads whatever listens at `--host`/`--port`, given
//! the users file the server was started with.
//!
//! ```text
//! im-bench gen-users 12000 > users.txt
//! im-server 7000 users.txt --max-per-ip 20000 &   # every simulated user is on 127.0.0.1
//! im-bench to --port 7000 --users users.txt --pairs 100 --duration 10s --server-pid $!
//! im-bench toall --port 7000 --users users.txt --recipients 1000
//! im-bench sessions --port 7000 --users users.txt --count 9950 --server-pid $!
//! im-bench login-flood --port 7000 --target alice --password secret --real bob:pw --server-pid $!
//! ```
//!
//! BENCHMARKS.md has the figures and how they were taken.

mod accounts;
mod flood;
mod report;
mod scenario;
mod syscalls;
mod user;
mod watchdog;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use simple_im::cli::{ClientTlsArgs, Span};
use simple_im::runtime::smol::Smol;
use smol::LocalExecutor;

use crate::report::Report;
use crate::scenario::{Bounds, Target};
use simple_im::driver::client::LbPorts;

/// Load generator for the instant-messaging protocol: opens many client sessions against a
/// server and measures deliveries per second, latency and the server's memory.
#[derive(Debug, Parser)]
#[command(name = "im-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N sender/receiver pairs in closed loop: each sender sends `/to <its receiver> <payload>`
    /// and waits for `303` before the next. Latency: `/to` sent to `303` read.
    To {
        /// Sender/receiver pairs (2 × N accounts: senders first, then their receivers).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        pairs: u32,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// One sender, N recipients: `/toall <payload>` in closed loop. Latency: `/toall` sent to
    /// `303` read, once every recipient has acknowledged.
    #[command(name = "toall")]
    ToAll {
        /// Recipients (the first account sends, the next N receive).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        recipients: u32,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Opens N full sessions (login and Lb), then reports the setup rate and, with
    /// `--server-pid`, the server's resident memory with all of them open.
    Sessions {
        /// Sessions to open (one account each).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Stop opening sessions after this long.
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        duration: Span,
        /// Keep every session open this long before measuring memory and closing them.
        #[arg(long, value_name = "DURATION", default_value = "0s")]
        hold: Span,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Password guessing: `--attackers` connections from `--sources` loopback addresses send
    /// `/login <target> <guess>` in closed loop, connecting again whenever the server closes
    /// one, while each `--real` user logs in once a second from 127.0.0.1. Reports the guesses
    /// answered, how many right passwords got in, the real users' login times and, with
    /// `--server-pid`, the server's memory.
    LoginFlood(FloodArgs),
    /// Prints a users file of N accounts, `user0 pw0` to `user<N-1> pw<N-1>`, to start a
    /// server with.
    GenUsers {
        /// How many accounts.
        count: u64,
    },
}

/// Where the server is, and how to talk to it.
#[derive(Debug, Args)]
struct TargetArgs {
    /// The server's IP address or host name.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The server's port. Give it once per node of a cluster (`--port 4000 --port 4001`): the
    /// users are spread over the nodes in turn, a `to` receiver on another node than its sender.
    #[arg(long, required = true)]
    port: Vec<u16>,
    /// The users file the server runs with; its accounts are used in file order.
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// Skip this many accounts of the users file first (to run several im-bench at once).
    #[arg(long, value_name = "N", default_value_t = 0)]
    first_user: usize,
    /// The longest any one wait may take: a login, an answer, an `/exit`. A request not
    /// answered by then is a failure.
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    timeout: Span,
    /// Sessions opened at the same time during setup.
    #[arg(long, value_name = "N", default_value_t = 64)]
    concurrency: usize,
    /// The server's process id, to report its memory and processor time (from `/proc/<pid>`;
    /// the server must run on this machine). Give it for every node of a cluster, and for its
    /// Redis: their processor time is added up.
    #[arg(long, value_name = "PID")]
    server_pid: Vec<u32>,
    /// Also count every system call of the `--server-pid` processes over the measured time,
    /// by running `perf stat -e raw_syscalls:sys_enter` on them (perf must be installed and
    /// allowed to trace them). Without it only read/write-family calls are counted.
    #[arg(long, requires = "server_pid")]
    perf_syscalls: bool,
    /// Where the simulated users listen for Lb: `FIRST-LAST` (ports taken in turn, skipping
    /// those in use), or `0` to let the system pick as the real client does. The default range
    /// lies below Linux's ephemeral ports, which thousands of sessions would otherwise exhaust.
    #[arg(long, value_name = "FIRST-LAST|0", default_value = "10000-32767")]
    lb_ports: PortRange,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    // TLS as `im-client --tls` speaks it, to measure what TLS costs per delivery.
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// `login-flood`'s arguments.
#[derive(Debug, Args)]
struct FloodArgs {
    /// The server's IPv4 address or host name (the guessers connect from 127.0.0.x, so it
    /// should be a loopback address).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The server's port.
    #[arg(long)]
    port: u16,
    /// The account to guess the password of.
    #[arg(long, value_name = "USER", default_value = "alice")]
    target: String,
    /// The target's right password (the users file may hold only its hash).
    #[arg(long, value_name = "PASSWORD")]
    password: String,
    /// Guessing connections, each waiting for an answer before its next guess.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    attackers: u32,
    /// The guessers connect from 127.0.0.2 to 127.0.0.(K+1), in turn.
    #[arg(long, value_name = "K", default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=253))]
    sources: u8,
    /// Every M-th guess overall is the right password; the others are distinct wrong ones.
    #[arg(long, value_name = "M", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    right_every: u64,
    /// A real user who logs in once a second from 127.0.0.1 meanwhile (repeatable).
    #[arg(long, value_name = "USER:PASSWORD")]
    real: Vec<String>,
    /// How long the run lasts.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value = "20s")]
    duration: Span,
    /// When the guessing starts. The real users log in once a second from the start, so by
    /// then each has logged in once from its address, as a user had before an attack began.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    attack_after: Span,
    /// The longest a connect, or a real user's answer, is waited for: a real login not
    /// answered by then counts as not answered. A guesser waits for its answer as long as the
    /// run lasts.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value = "10s")]
    timeout: Span,
    /// A real login answered `101` within this counts as served in time.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value = "2s")]
    within: Span,
    /// The server's process id, to report its memory (peak, and `VmRSS` sampled every
    /// 100 ms) and whether it outlived the run.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Kill the `--server-pid` process (SIGKILL) and end the run if its `VmRSS` passes this
    /// many MiB: a server that grows without bound must not take the machine with it.
    #[arg(long, value_name = "MIB", requires = "server_pid")]
    kill_server_above: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl FloodArgs {
    fn config(&self) -> Result<flood::FloodConfig, String> {
        let server = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve {}: {err}", self.host))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| format!("{} has no IPv4 address", self.host))?;
        let token = |what: &str, text: &str| {
            if simple_im_core::protocol::is_token(text.as_bytes()) {
                Ok(text.as_bytes().to_vec())
            } else {
                Err(format!(
                    "{what} {text:?} is not one word (docs/protocol.md §1)"
                ))
            }
        };
        let mut real = Vec::new();
        for user in &self.real {
            let (name, password) = user
                .split_once(':')
                .ok_or_else(|| format!("--real {user:?}: expected USER:PASSWORD"))?;
            real.push((
                token("--real user", name)?,
                token("--real password", password)?,
            ));
        }
        Ok(flood::FloodConfig {
            server,
            target: token("--target", &self.target)?,
            password: token("--password", &self.password)?,
            attackers: self.attackers as usize,
            sources: (0..self.sources)
                .map(|index| Ipv4Addr::new(127, 0, 0, index + 2))
                .collect(),
            right_every: self.right_every,
            real,
            duration: self.duration.0,
            attack_after: self.attack_after.0,
            timeout: self.timeout.0,
            within: self.within.0,
            server_pid: self.server_pid,
            kill_above_kib: self.kill_server_above.map(|mib| mib.saturating_mul(1024)),
        })
    }
}

/// How long a request load runs.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Measure for this long (after warm-up), unless `--count` comes first.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    duration: Span,
    /// Measure at most this many requests (after warm-up), across all senders.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Run this long before measuring; requests answered meanwhile are not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    warmup: Span,
    /// The bytes of content in each message.
    #[arg(long, value_name = "BYTES", default_value_t = 32)]
    payload: usize,
}

impl LoadArgs {
    fn bounds(&self) -> Bounds {
        Bounds {
            duration: self.duration.0,
            count: self.count,
            warmup: self.warmup.0,
        }
    }
}

/// `--lb-ports`: a range of ports, or none (`0`) for system-picked ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortRange(Option<(u16, u16)>);

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "0" {
            return Ok(PortRange(None));
        }
        let expected = || "expected FIRST-LAST (like 10000-32767) or 0".to_owned();
        let (first, last) = text.split_once('-').ok_or_else(expected)?;
        let first: u16 = first.parse().map_err(|_| expected())?;
        let last: u16 = last.parse().map_err(|_| expected())?;
        if first == 0 || first > last {
            return Err(expected());
        }
        Ok(PortRange(Some((first, last))))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(2);
        }
        // --help and --version.
        Err(error) => error.exit(),
    };
    // The command line lives as long as the process; the run's future (which borrows it) must
    // be `'static` for the runtime.
    let cli: &'static Cli = Box::leak(Box::new(cli));
    let (target_args, run): (&TargetArgs, Scenario) = match &cli.command {
        Command::GenUsers { count } => {
            let mut stdout = std::io::stdout().lock();
            return match accounts::write_generated(*count, &mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("im-bench: cannot write the users file: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::LoginFlood(args) => {
            let config = match args.config() {
                Ok(config) => config,
                Err(message) => {
                    eprintln!("im-bench: {message}");
                    return ExitCode::from(2);
                }
            };
            raise_open_file_limit();
            let executor = LocalExecutor::new();
            let report = smol::block_on(executor.run(flood::run(&executor, config)));
            return print_report(&report, args.json);
        }
        Command::To {
            pairs,
            target,
            load,
        } => (target, Scenario::To(*pairs as usize, load)),
        Command::ToAll {
            recipients,
            target,
            load,
        } => (target, Scenario::ToAll(*recipients as usize, load)),
        Command::Sessions {
            count,
            duration,
            hold,
            target,
        } => (
            target,
            Scenario::Sessions(*count as usize, duration.0, hold.0),
        ),
    };
    raise_open_file_limit();
    let report = Smol::block_on(move |runtime| {
        Box::pin(async move {
            let target = target(target_args, run.accounts_needed(), runtime)?;
            let executor = LocalExecutor::new();
            Ok::<_, String>(executor.run(run.run(&executor, &target)).await)
        })
    });
    let report = match report {
        Ok(report) => report,
        Err(message) => {
            eprintln!("im-bench: {message}");
            return ExitCode::from(2);
        }
    };
    print_report(&report, target_args.json)
}

/// Every session takes two sockets here (and two on the server).
fn raise_open_file_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("im-bench: cannot raise the open-file limit: {err}");
    }
}

/// Prints `report` on standard output, as JSON or a table; the exit code says whether the run
/// [succeeded](Report::succeeded).
fn print_report(report: &Report, json: bool) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut stdout, report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
    } else {
        report::write_table(report, &mut stdout)
    };
    if let Err(err) = written.and_then(|()| stdout.flush()) {
        eprintln!("im-bench: cannot write the report: {err}");
        return ExitCode::FAILURE;
    }
    if report.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A scenario with its own arguments.
enum Scenario<'a> {
    To(usize, &'a LoadArgs),
    ToAll(usize, &'a LoadArgs),
    Sessions(usize, Duration, Duration),
}

impl Scenario<'_> {
    fn accounts_needed(&self) -> usize {
        match self {
            Scenario::To(pairs, _) => 2 * pairs,
            Scenario::ToAll(recipients, _) => recipients + 1,
            Scenario::Sessions(count, _, _) => *count,
        }
    }

    async fn run(&self, executor: &LocalExecutor<'static>, target: &Target) -> Report {
        match *self {
            Scenario::To(pairs, load) => {
                scenario::run_to(executor, target, load.bounds(), pairs, load.payload).await
            }
            Scenario::ToAll(recipients, load) => {
                scenario::run_toall(executor, target, load.bounds(), recipients, load.payload).await
            }
            Scenario::Sessions(count, duration, hold) => {
                scenario::run_sessions(executor, target, count, duration, hold).await
            }
        }
    }
}

/// Resolves the server's address and reads the accounts the scenario needs.
fn target(args: &TargetArgs, needed: usize, runtime: Smol) -> Result<Target, String> {
    let mut servers = Vec::new();
    for &port in &args.port {
        let server: SocketAddr = (args.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve {}: {err}", args.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", args.host))?;
        servers.push(server);
    }
    let all = accounts::read_accounts(&args.users).map_err(|err| err.to_string())?;
    let accounts: Vec<_> = all.into_iter().skip(args.first_user).take(needed).collect();
    if accounts.len() < needed {
        return Err(format!(
            "{} has {} accounts after the first {}, the scenario needs {needed} \
             (make one with `im-bench gen-users {}`)",
            args.users.display(),
            accounts.len(),
            args.first_user,
            needed + args.first_user
        ));
    }
    let tls = args.tls.client_tls(&args.host)?;
    Ok(Target {
        runtime,
        servers,
        tls,
        accounts,
        timeout: args.timeout.0,
        concurrency: args.concurrency.max(1),
        server_pids: args.server_pid.clone(),
        perf_syscalls: args.perf_syscalls,
        lb_ports: Rc::new(match args.lb_ports.0 {
            Some((first, last)) => LbPorts::range(first, last),
            None => LbPorts::System,
        }),
    })
}
