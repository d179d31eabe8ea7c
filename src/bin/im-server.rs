//! `im-server <port> <users-file>`: the instant-messaging server (docs/protocol.md §6).
//!
//! It parses the command line, loads the users file, listens, and hands everything else to
//! the runtime picked with `--runtime` ([`simple_im::runtime::serve`]: smol by default, std
//! threads, tokio, or io_uring in a build with it). All run the same driver.

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::RangedU64ValueParser;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use simple_im::cli::{BudgetOrOff, Span, SpanOrOff};
use simple_im::cluster::ClusterConfig;
use simple_im::reload::{Settings, TlsFiles};
use simple_im::runtime::{Kind, Role, ServeError, Service};
use simple_im_core::driver::{DriverConfig, Keepalive, DEFAULT_KEEPALIVE_IDLE, DEFAULT_MAX_PER_IP};
use simple_im_core::server::{ServerConfig, ThrottleConfig};

/// The instant-messaging server: clients log in on La, name a port for Lb, and chat.
#[derive(Debug, Parser)]
#[command(name = "im-server", version)]
struct Args {
    /// The TCP port to listen on; 0 picks a free one (the first line on standard output names it).
    #[arg(required_unless_present_any = ["hash_password", "config", "make_cert", "generate"])]
    port: Option<u16>,

    /// The accounts: one `username password` a line; blank lines and lines starting with `#`
    /// are skipped. A password may be an argon2id hash made by `--hash-password`.
    #[arg(required_unless_present_any = ["hash_password", "config", "make_cert", "generate"])]
    users_file: Option<PathBuf>,

    /// Read a password from standard input, print its argon2id hash (for the users file in
    /// place of the password), and exit.
    #[arg(long, exclusive = true)]
    hash_password: bool,

    /// Make a self-signed server certificate for these names (DNS names or IP addresses, comma
    /// separated; the first is the subject's), write DIR/cert.pem and DIR/key.pem (--out),
    /// print the commands that use them, and exit. Clients trust it with --ca DIR/cert.pem.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', requires = "out")]
    make_cert: Vec<String>,

    /// With --make-cert: the directory to write cert.pem and key.pem to (made if missing).
    #[arg(long, value_name = "DIR", requires = "make_cert")]
    out: Option<PathBuf>,

    /// Write the man page and the shell completions into DIR, and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    generate: Option<PathBuf>,

    /// Read options from this TOML file: `key = value` a line, the keys the long options'
    /// names (`ack-timeout = "10s"`, `reuse-port = true`), and `port` and `users-file`. Options
    /// given on the command line win; relative paths in the file are relative to its
    /// directory. SIGHUP reads it again. The sample packaging/im-server.toml lists them all.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Check the options (the --config file's too) and the users file, print the effective
    /// settings as a --config file, and exit.
    #[arg(long)]
    check_config: bool,

    /// The IP address to listen on.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    bind: IpAddr,

    /// How long a recipient has to answer `302` before the delivery fails (e.g. `500ms`, `10s`).
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value_t = Span(ServerConfig::default().ack_timeout))]
    ack_timeout: Span,

    /// How long connecting to a client's Lb port may take before `202`.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value_t = Span(ServerConfig::default().connect_timeout))]
    connect_timeout: Span,

    /// How long a connection may stay without logging in before it is closed.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value_t = Span(ServerConfig::default().login_timeout))]
    login_timeout: Span,

    /// Failed logins in a row after which the connection is closed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = ServerConfig::default().max_login_failures,
        value_parser = RangedU64ValueParser::<u32>::new().range(1..),
    )]
    max_login_failures: u32,

    /// The longest line accepted, `\n` included; a longer one is answered `401` and skipped.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = ServerConfig::default().max_line,
        value_parser = RangedU64ValueParser::<usize>::new().range(2..),
    )]
    max_line: usize,

    /// Messages that may wait for one recipient; one that finds the queue full fails (`304`).
    #[arg(
        long,
        value_name = "N",
        default_value_t = ServerConfig::default().max_queue,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    max_queue: usize,

    /// Failed password checks one address (an IPv6 /64) may make, whatever the accounts:
    /// BURST/PERIOD (BURST at once, then one more every PERIOD), or `off`. A login past it is
    /// answered 102 without a check.
    #[arg(long, value_name = "BUDGET|off", default_value_t = BudgetOrOff(ThrottleConfig::default().per_address))]
    throttle_address: BudgetOrOff,

    /// Failed password checks one address may make for one account; a right password fills it
    /// again.
    #[arg(long, value_name = "BUDGET|off", default_value_t = BudgetOrOff(ThrottleConfig::default().per_address_account))]
    throttle_address_account: BudgetOrOff,

    /// Failed password checks for one account from all addresses together (an address that
    /// logged in as that account within --login-trust is exempt until it fails for it).
    #[arg(long, value_name = "BUDGET|off", default_value_t = BudgetOrOff(ThrottleConfig::default().per_account))]
    throttle_account: BudgetOrOff,

    /// How long a successful login exempts its address from the account's budget.
    #[arg(long, value_name = "DURATION|off", default_value_t = SpanOrOff(Some(ThrottleConfig::default().trust)))]
    login_trust: SpanOrOff,

    /// Connections from one address that may end without a successful login; past it, new
    /// connections from that address are closed at once.
    #[arg(long, value_name = "BUDGET|off", default_value_t = BudgetOrOff(ThrottleConfig::default().reconnects))]
    throttle_reconnects: BudgetOrOff,

    /// Password checks (argon2) run at once; each takes the hash's memory (19 MiB for
    /// --hash-password's). Default: the number of CPUs.
    #[arg(
        long,
        value_name = "N",
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    password_checks: Option<usize>,

    /// Password checks that may wait for a turn (taken in turn by address); a login past it is
    /// answered 102 without a check.
    #[arg(
        long,
        value_name = "N",
        default_value_t = ServerConfig::default().password_check_queue,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    password_check_queue: usize,

    /// The runtime that carries bytes between sockets and the server core: `smol` (async tasks
    /// on one thread), `threads` (blocking sockets, a thread per socket, each thread with a
    /// 64 KiB stack), `tokio` (its current-thread runtime) or `uring` (Linux, in a build with
    /// the `uring` feature: the async loop over io_uring). All behave the same on the wire;
    /// `--cluster` needs one of the async ones. Default: smol, and tokio for a `--cluster`
    /// node (its Redis connections then run on its own thread, which costs less CPU).
    #[arg(long, value_name = "RUNTIME")]
    runtime: Option<Kind>,

    /// Clients connected at once; one more is closed as soon as it connects. Default: 20000
    /// with smol, 2000 with threads (each client costs three threads there, and that runtime
    /// lowers any cap to what the system's vm.max_map_count allows).
    #[arg(
        long,
        value_name = "N",
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    max_connections: Option<usize>,

    /// Clients connected at once from one IP address; one more is closed as soon as it connects.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_PER_IP,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..),
    )]
    max_per_ip: usize,

    /// Run as one node of a cluster whose nodes share this Redis (`redis://HOST:PORT` or
    /// `unix:///path/to/redis.sock`): one chat across every node. Without it the server is
    /// the whole chat and needs nothing else. Needs an async runtime; on `--runtime tokio` a
    /// node drives its Redis connections on its own thread, which costs the least CPU.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,

    /// How long a cluster node stays alive without renewing its lease in Redis: a node that
    /// dies keeps its users at most this long; it renews three times per lease.
    #[arg(long, value_name = "DURATION", value_parser = Span::positive, default_value_t = Span(ClusterConfig::default().lease))]
    cluster_lease: Span,

    /// Set SO_REUSEPORT on the listening socket, so that several `im-server` processes (cluster
    /// nodes) on this machine listen on one port and the kernel spreads clients among them.
    #[arg(long)]
    reuse_port: bool,

    /// Speak TLS on both connections with this PEM certificate chain (the server's certificate
    /// first); needs --tls-key. Clients need --tls. Without it, the protocol's plain TCP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// TCP keepalive on every client socket: a client whose machine vanishes without closing
    /// its connections (power cut, cable pulled) is probed after this much silence and goes
    /// offline within 1.5 times it, its pending deliveries failing with 304. `off` disables it.
    #[arg(long, value_name = "DURATION|off", default_value_t = SpanOrOff(Some(DEFAULT_KEEPALIVE_IDLE)))]
    keepalive: SpanOrOff,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (e.g. `127.0.0.1:9100`; port 0 picks
    /// a free one, named in the log). Anyone who reaches ADDR can read them: bind it to
    /// loopback or a private network. Without it no port is opened and nothing is counted.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,

    /// The log level on standard error (error, warn, info, debug, trace, off); `RUST_LOG`, if
    /// set, overrides it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log: log::LevelFilter,
}

/// `--hash-password`: one password in (without echo on a terminal), its PHC string out.
fn hash_password() -> ExitCode {
    use password_hash::rand_core::{OsRng, RngCore};
    use std::io::{BufRead, IsTerminal};

    let password = if io::stdin().is_terminal() {
        rpassword::prompt_password("Password: ").map(String::into_bytes)
    } else {
        let mut line = Vec::new();
        io::stdin()
            .lock()
            .read_until(b'\n', &mut line)
            .map(|_| line)
    };
    let mut password = match password {
        Ok(password) => password,
        Err(error) => {
            eprintln!("im-server: cannot read the password: {error}");
            return ExitCode::from(2);
        }
    };
    if password.ends_with(b"\n") {
        password.pop();
    }
    if password.ends_with(b"\r") {
        password.pop();
    }
    if !simple_im_core::protocol::is_token(&password) {
        eprintln!("im-server: a password is one word: no spaces, not empty");
        return ExitCode::from(2);
    }
    let mut salt = [0u8; 16];
    if let Err(error) = OsRng.try_fill_bytes(&mut salt) {
        eprintln!("im-server: no randomness for the salt: {error}");
        return ExitCode::FAILURE;
    }
    match simple_im_core::users::hash_password(&password, &salt) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("im-server: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The arguments that are actions or name the file itself, not settings: never in a --config
/// file, nor in what --check-config prints.
const NOT_IN_FILE: &[&str] = &[
    "hash_password",
    "make_cert",
    "out",
    "generate",
    "config",
    "check_config",
    "help",
    "version",
];

/// Why a command line was not parsed.
enum Unparsed {
    /// A bad option or file: the reason, on one line.
    Usage(String),
    /// `--help` or `--version`: clap prints it and exits.
    Shown(clap::Error),
}

/// The command line, with the --config file's settings under it. `Err` is the exit code, the
/// reason said already.
fn parse_args() -> Result<(Args, ArgMatches), ExitCode> {
    parse_args_from(std::env::args_os().collect()).map_err(|unparsed| match unparsed {
        Unparsed::Usage(reason) => {
            eprintln!("im-server: {reason}");
            ExitCode::from(2)
        }
        Unparsed::Shown(error) => error.exit(),
    })
}

/// [`parse_args`] on `argv` (the program's name first): at the start, and again on SIGHUP.
fn parse_args_from(argv: Vec<OsString>) -> Result<(Args, ArgMatches), Unparsed> {
    let usage = |error: clap::Error| {
        if error.use_stderr() {
            Unparsed::Usage(one_line(&error.to_string()))
        } else {
            Unparsed::Shown(error)
        }
    };
    let command = Args::command();
    let mut matches = command.clone().try_get_matches_from(&argv).map_err(usage)?;
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        // As the users file's errors: `FILE: line N: reason`.
        let file = simple_im::config_file::file_args(&command, &matches, path, NOT_IN_FILE)
            .map_err(Unparsed::Usage)?;
        // The file's options first, so that the command line's own come after and win.
        let mut line = argv.into_iter();
        let argv: Vec<OsString> = line
            .next()
            .into_iter()
            .chain(file.options)
            .chain(line)
            .chain(file.positionals)
            .collect();
        matches = command.try_get_matches_from(argv).map_err(usage)?;
    }
    let args = Args::from_arg_matches(&matches).map_err(usage)?;
    Ok((args, matches))
}

/// What a command line without `port` or `users-file` lacks, and where to give them.
const MISSING: &str = "the port and the users file are missing: give them on the command line \
                       or as `port` and `users-file` in the --config file (try --help)";

/// What `args` set, for the server that runs `runtime` (whose defaults fill the gaps: a
/// reload does not change the runtime). `Err` is one line.
fn settings(args: &Args, matches: &ArgMatches, runtime: Kind) -> Result<Settings, String> {
    let Some(users_file) = args.users_file.clone() else {
        return Err(MISSING.to_owned());
    };
    let server = ServerConfig {
        ack_timeout: args.ack_timeout.0,
        connect_timeout: args.connect_timeout.0,
        login_timeout: args.login_timeout.0,
        max_login_failures: args.max_login_failures,
        max_line: args.max_line,
        max_queue: args.max_queue,
        throttle: ThrottleConfig {
            per_address: args.throttle_address.0,
            per_address_account: args.throttle_address_account.0,
            per_account: args.throttle_account.0,
            trust: args.login_trust.0.unwrap_or_default(),
            reconnects: args.throttle_reconnects.0,
            ..ThrottleConfig::default()
        },
        password_checks: args.password_checks.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        password_check_queue: args.password_check_queue,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    Ok(Settings {
        config_file: args.config.clone(),
        users_file,
        server,
        max_connections: args
            .max_connections
            .unwrap_or_else(|| runtime.default_max_connections()),
        max_per_ip: args.max_per_ip,
        keepalive: args.keepalive.0.map(Keepalive::after_idle),
        tls,
        // `RUST_LOG`, if set, decides the level for good.
        log: std::env::var_os("RUST_LOG").is_none().then_some(args.log),
        effective: simple_im::config_file::effective_values(&Args::command(), matches, NOT_IN_FILE),
    })
}

/// Logs to standard error at `level`, or as `RUST_LOG` says if it is set. Every record passes
/// the logger's own filter, so that the level alone (which a reload may change) decides.
fn init_logging(level: log::LevelFilter) {
    let mut logger = env_logger::Builder::new();
    match std::env::var("RUST_LOG") {
        Ok(filters) => logger.parse_filters(&filters).init(),
        Err(_) => {
            logger.filter_level(log::LevelFilter::Trace).init();
            log::set_max_level(level);
        }
    }
}

/// `--make-cert NAMES --out DIR`: the certificate and key, and the commands that use them.
fn make_cert(names: &[String], out: &std::path::Path) -> ExitCode {
    let made = match simple_im::tls::make_cert(names, out) {
        Ok(made) => made,
        Err(error) => {
            eprintln!("im-server: {error}");
            return ExitCode::from(2);
        }
    };
    let (cert, key) = (made.cert.display(), made.key.display());
    let first = names.first().map_or("SERVER", String::as_str);
    println!(
        "wrote {cert} (for {}; valid until {}) and {key}",
        names.join(", "),
        made.until
    );
    println!("start the server with TLS:");
    println!("  im-server PORT USERS-FILE --tls-cert {cert} --tls-key {key}");
    println!("  (or tls-cert = \"{cert}\" and tls-key = \"{key}\" in its --config file)");
    println!("give clients {cert}, and have them run:");
    println!("  im-client {first} PORT --tls --ca {cert}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let (args, matches) = match parse_args() {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    if args.hash_password {
        return hash_password();
    }
    if let Some(dir) = &args.generate {
        return match simple_im::cli::generate(Args::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("im-server: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(out) = &args.out {
        return make_cert(&args.make_cert, out);
    }
    let runtime = args
        .runtime
        .unwrap_or_else(|| Kind::default_for(args.cluster.is_some()));
    let (Some(port), Ok(in_force)) = (args.port, settings(&args, &matches, runtime)) else {
        // Clap requires both unless `--hash-password` or `--config`.
        eprintln!("im-server: {MISSING}");
        return ExitCode::from(2);
    };
    init_logging(args.log);
    return_large_blocks_to_the_system();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open-file limit: {limit}"),
        Err(error) => log::debug!("cannot raise the open-file limit: {error}"),
    }

    let users = match simple_im::reload::read_users(&in_force.users_file) {
        Ok(users) => users,
        Err(error) => {
            eprintln!("im-server: {error}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        let settings = simple_im::config_file::effective(&Args::command(), &matches, NOT_IN_FILE);
        // Written, not printed: a closed standard output is an error to report, not a panic.
        let mut stdout = io::stdout().lock();
        if let Err(error) = stdout
            .write_all(settings.as_bytes())
            .and_then(|()| stdout.flush())
        {
            eprintln!("im-server: cannot write the settings: {error}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    let config = in_force.server.clone();

    let tls = match &in_force.tls {
        Some(TlsFiles { cert, key }) => match simple_im::tls::load_server_tls(cert, key) {
            Ok(tls) => Some(tls),
            Err(error) => {
                eprintln!("im-server: {error}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };

    if args.cluster.is_some() && runtime == Kind::Threads {
        eprintln!("im-server: --cluster needs an async runtime: smol, tokio or uring (try --help)");
        return ExitCode::from(2);
    }
    let metrics = match args.metrics.map(simple_im::metrics::serve).transpose() {
        Ok(metrics) => metrics.unwrap_or_default(),
        Err(error) => {
            eprintln!("im-server: {error}");
            return ExitCode::from(2);
        }
    };
    let address = SocketAddr::new(args.bind, port);
    let (local, listener) = match listen(address, args.reuse_port) {
        Ok(bound) => bound,
        Err(error) => {
            eprintln!("im-server: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };

    // Before the `listening on` line, so that a signal sent as soon as it is seen is handled.
    // SIGHUP reads the settings and the users file again (the same command line, the
    // --config file as it is then), SIGTERM/SIGINT stop gracefully, a second one at once.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let reread = move || {
        let (args, matches) = parse_args_from(argv.clone()).map_err(|unparsed| match unparsed {
            Unparsed::Usage(reason) => reason,
            Unparsed::Shown(error) => one_line(&error.to_string()),
        })?;
        settings(&args, &matches, runtime)
    };
    let driver = DriverConfig {
        max_connections: in_force.max_connections,
        max_per_ip: in_force.max_per_ip,
        keepalive: in_force.keepalive,
        tls,
        metrics,
        ..runtime.driver_config()
    };
    let reloader = simple_im::reload::Reloader::new(in_force, reread);
    let commands = simple_im::signals::server_commands(reloader);
    let announce = move || {
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = writeln!(stdout, "listening on {local}").and_then(|()| stdout.flush()) {
            log::warn!("cannot write to standard output: {error}");
        }
        log::info!("listening on {local}");
    };

    log::info!(
        "runtime {}, at most {} clients, {} per IP address",
        runtime,
        driver.max_connections,
        driver.max_per_ip
    );
    let role = match args.cluster {
        #[cfg(feature = "cluster")]
        Some(url) => {
            let lease = args.cluster_lease.0;
            Role::Node(ClusterConfig {
                url,
                lease,
                heartbeat: lease / 3,
                ..ClusterConfig::default()
            })
        }
        #[cfg(not(feature = "cluster"))]
        Some(_) => {
            eprintln!("im-server: this build has no cluster engine (the `cluster` feature)");
            return ExitCode::from(2);
        }
        None => Role::Alone,
    };
    // A node says it listens only once it has joined: clients reaching it find one chat.
    let ready = move |_node| announce();
    let service = Service {
        users,
        config,
        driver,
        role,
        ready: Box::new(ready),
        commands,
    };
    if let Err(error) = simple_im::runtime::serve(runtime, listener, service) {
        eprintln!("im-server: {error}");
        // A runtime this build or machine cannot give is the operator's to fix, as a bad
        // option is; a cluster that cannot be reached is not.
        return match error {
            ServeError::Unsupported(_) | ServeError::Runtime(..) => ExitCode::from(2),
            #[cfg(feature = "cluster")]
            ServeError::Cluster(_) => ExitCode::FAILURE,
        };
    }
    ExitCode::SUCCESS
}

/// Makes glibc's malloc serve blocks of 1 MiB and more from `mmap` and unmap them when freed.
/// Its default threshold rises to the size of any such block once freed, so each thread's arena
/// would keep an argon2 verification's memory (19 MiB for `--hash-password`'s hashes) after it
/// ends: measured under a login flood, 348 MiB resident against 43 MiB with the threshold fixed,
/// with the same two verifications at most at once. Other allocators return such blocks already.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tunable; it is called before any other thread starts.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        if set == 0 {
            log::debug!("cannot set malloc's mmap threshold");
        }
    }
}

/// Binds `address` (with SO_REUSEPORT if `reuse_port`); returns the address really bound (the
/// port, if 0 was asked) and the listener.
fn listen(
    address: SocketAddr,
    reuse_port: bool,
) -> io::Result<(SocketAddr, std::net::TcpListener)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // As std's own `bind` does: a restarted server need not wait out TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        // Dual-stack, as std's listener is on Linux by default.
        socket.set_only_v6(false)?;
    }
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    let listener: std::net::TcpListener = socket.into();
    Ok((listener.local_addr()?, listener))
}

/// A clap error message on one line: its first paragraph, without the `error: ` prefix.
fn one_line(message: &str) -> String {
    let first = message.split("\n\n").next().unwrap_or(message);
    let text = first.strip_prefix("error: ").unwrap_or(first);
    let words: Vec<&str> = text.split_whitespace().collect();
    format!("{} (try --help)", words.join(" "))
}
