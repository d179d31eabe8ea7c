//! `im-client <server> <server-port>`: the instant-messaging client of docs/protocol.md §4.

use clap::{CommandFactory, Parser};
use simple_im::cli::ClientTlsArgs;
use simple_im::driver::ServerAddrs;
use simple_im::runtime::Kind;
use simple_im::terminal::print_error;

/// Chat with the users of an instant-messaging server (docs/protocol.md §4).
///
/// Asks for a user name and password, then reads commands from standard input, one a line:
/// `/list`, `/to <user> <text>`, `/toall <text>`, `/exit`. Messages from others are printed as
/// they arrive. End of input (Ctrl-D) and Ctrl-C leave like `/exit`.
#[derive(Debug, Parser)]
#[command(name = "im-client", version)]
struct Args {
    /// The server: an IP address, IPv4 or IPv6 (for example 127.0.0.1), or a host name (for
    /// example localhost; each of its addresses is tried in turn)
    #[arg(value_name = "SERVER", required_unless_present = "generate")]
    server: Option<String>,
    /// TCP port the server listens on (1-65535)
    #[arg(
        value_parser = clap::value_parser!(u16).range(1..),
        required_unless_present = "generate"
    )]
    server_port: Option<u16>,
    /// The runtime that carries bytes between the sockets, the terminal and the client core:
    /// `smol` (async tasks) or `threads` (blocking std threads). Both behave the same.
    #[arg(long, value_name = "RUNTIME", default_value_t = Kind::Smol)]
    runtime: Kind,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Write the man page and the shell completions into DIR, and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    generate: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::try_parse().unwrap_or_else(|error| {
        if error.use_stderr() {
            usage_error(&one_line(&error.to_string()))
        } else {
            // --help and --version.
            error.exit()
        }
    });
    let (Some(host), Some(port)) = (&args.server, args.server_port) else {
        // Clap requires both unless `--generate`, which excludes every other argument.
        let dir = args.generate.unwrap_or_default();
        if let Err(err) = simple_im::cli::generate(Args::command(), &dir) {
            print_error(&format!("error: {err}"));
            std::process::exit(1);
        }
        return;
    };
    // Logs go to stderr, so standard output stays the conversation.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut server = match ServerAddrs::resolve(host, port) {
        Ok(server) => server,
        Err(err) => usage_error(&format!("cannot resolve the server name {:?}: {err}", host)),
    };
    match args.tls.client_tls(server.host()) {
        Ok(Some(tls)) => server = server.with_tls(tls),
        Ok(None) => {}
        Err(err) => usage_error(&err),
    }
    let code = match args.runtime {
        // The tokio and uring runtimes are server-side: their client is smol's.
        Kind::Smol | Kind::Tokio | Kind::Uring => simple_im::runtime::client::run(server),
        Kind::Threads => simple_im::runtime::threads::client::run(server),
    };
    std::process::exit(code);
}

/// A clap error message on one line (docs/protocol.md §6): its first paragraph, without the
/// `error: ` prefix that [`usage_error`] puts back.
fn one_line(message: &str) -> String {
    let first = message.split("\n\n").next().unwrap_or(message);
    let text = first.strip_prefix("error: ").unwrap_or(first);
    let words: Vec<&str> = text.split_whitespace().collect();
    format!("{} (try --help)", words.join(" "))
}

/// A bad argument: one line, exit code 2.
fn usage_error(message: &str) -> ! {
    print_error(&format!("error: {message}"));
    std::process::exit(2);
}
