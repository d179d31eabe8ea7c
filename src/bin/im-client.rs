//! `im-client <server> <server-port>`: the instant-messaging client of docs/protocol.md §4.

use clap::Parser;
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
    #[arg(value_name = "SERVER")]
    server: String,
    /// TCP port the server listens on (1-65535)
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    server_port: u16,
    /// The runtime that carries bytes between the sockets, the terminal and the client core:
    /// `smol` (async tasks) or `threads` (blocking std threads). Both behave the same.
    #[arg(long, value_name = "RUNTIME", default_value_t = Kind::Smol)]
    runtime: Kind,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

fn main() {
    let args = Args::parse();
    // Logs go to stderr, so standard output stays the conversation.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut server = match ServerAddrs::resolve(&args.server, args.server_port) {
        Ok(server) => server,
        Err(err) => usage_error(&format!(
            "cannot resolve the server name {:?}: {err}",
            args.server
        )),
    };
    match args.tls.client_tls(server.host()) {
        Ok(Some(tls)) => server = server.with_tls(tls),
        Ok(None) => {}
        Err(err) => usage_error(&err),
    }
    let code = match args.runtime {
        // The uring and epoll runtimes are server-side: their client is smol's.
        Kind::Smol | Kind::Uring | Kind::Epoll => simple_im::runtime::client::run(server),
        Kind::Threads => simple_im::runtime::threads::client::run(server),
    };
    std::process::exit(code);
}

/// A bad argument, as with clap's own: one line, exit code 2.
fn usage_error(message: &str) -> ! {
    print_error(&format!("error: {message}"));
    std::process::exit(2);
}
