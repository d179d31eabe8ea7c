//! `im-client <server> <server-port>`: the instant-messaging client of docs/protocol.md §4.

use std::path::PathBuf;

use clap::Parser;
use simple_im::driver::client::ServerAddrs;
use simple_im::runtime::Kind;
use simple_im::terminal::print_error;
use simple_im::tls::ClientTls;

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
    /// Speak TLS on both connections (the server runs with --tls-cert): the server's
    /// certificate is verified against the system's root certificates (or --ca), on La and
    /// again on Lb, so only the real server can send messages to this client.
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the CA certificates in this PEM file instead of the system's (for a
    /// private CA or a self-signed server certificate).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry, when it is not SERVER (say,
    /// connecting by IP address to a server whose certificate names its host).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
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
    if args.tls {
        let name = args.server_name.as_deref().unwrap_or(server.host());
        match ClientTls::new(args.ca.as_deref(), name) {
            Ok(tls) => server = server.with_tls(tls),
            Err(err) => usage_error(&err),
        }
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
