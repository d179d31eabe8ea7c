//! End-to-end tests of the `im-client` binary, piped, in both runtimes (`smol::<name>` and
//! `threads::<name>`): against a fake server written here, byte for byte, where the client's
//! side of docs/protocol.md §4 is the point (who may open Lb, deviating servers), and against
//! the real `im-server` for how the server is named on the command line.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::harness::{Runtime, ServerProcess, CLIENT_BIN, STEP, USERS};

in_each_runtime!(
    lb_is_taken_only_from_the_servers_address,
    a_deviating_servers_lb_lines_are_shown_and_acknowledged,
    a_host_name_works_where_an_ip_does,
);

const RECEIPT: &str = "302 Message receipt successful\n";

/// A piped `im-client`, killed on drop; its standard output and standard error are read line
/// by line, each read bounded by [`STEP`].
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every standard output line read so far, for failure messages.
    transcript: Vec<String>,
}

impl Piped {
    /// Starts `im-client <host> <port> --runtime <runtime>`.
    fn start(runtime: Runtime, host: &str, port: u16) -> Piped {
        let mut child = Command::new(CLIENT_BIN)
            .args([host, &port.to_string(), "--runtime", runtime.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Piped {
            child,
            stdin,
            stdout,
            stderr,
            transcript: Vec::new(),
        }
    }

    fn type_lines(&mut self, lines: &[&str]) {
        let stdin = self.stdin.as_mut().expect("standard input closed");
        for line in lines {
            stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        }
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn expect_lines(&mut self, expected: &[&str]) {
        for line in expected {
            let got = match self.stdout.recv_timeout(STEP) {
                Ok(got) => got,
                Err(error) => panic!("no line ({error}) after {:?}", self.transcript),
            };
            self.transcript.push(got.clone());
            assert_eq!(got, *line, "after {:?}", self.transcript);
        }
    }

    /// Waits for the exit; returns its code and every line left on standard output and error.
    fn finish(mut self) -> (Option<i32>, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + STEP;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(Instant::now() < deadline, "im-client did not exit");
            thread::sleep(Duration::from_millis(10));
        };
        let drain = |lines: &mpsc::Receiver<String>| {
            let mut rest = Vec::new();
            while let Ok(line) = lines.recv_timeout(STEP) {
                rest.push(line);
            }
            rest
        };
        (code, drain(&self.stdout), drain(&self.stderr))
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines `from` yields, as they come, until it ends.
fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (line, lines) = mpsc::channel();
    thread::spawn(move || {
        for text in BufReader::new(from).lines() {
            let Ok(text) = text else { return };
            if line.send(text).is_err() {
                return;
            }
        }
    });
    lines
}

/// Accepts one connection on `listener` within [`STEP`].
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(STEP)).unwrap();
                return stream;
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "nobody connected");
                thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("accept: {error}"),
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

/// Connects to `to` from `from` (any free port of it), as a second host on loopback would.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::new(from.into(), 0).into())
        .unwrap();
    socket.connect_timeout(&to.into(), STEP).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream
}

/// The fake server's La: logs the client in and returns the Lb port it asks for.
fn log_in(la: &mut BufReader<TcpStream>) -> u16 {
    assert_eq!(read_line(la), "/login jacky 12345\n");
    la.get_mut()
        .write_all(b"101 Authentication successful\n")
        .unwrap();
    let port = read_line(la);
    let port = port
        .strip_prefix("/port ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("not a /port line: {port:?}"));
    port.parse().unwrap()
}

/// The fake server's side once the client is logged in with Lb up: the client, La, Lb.
fn logged_in_with_lb(runtime: Runtime) -> (Piped, BufReader<TcpStream>, BufReader<TcpStream>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = Piped::start(runtime, "127.0.0.1", addr.port());
    let mut la = BufReader::new(accept_within(&server));
    client.type_lines(&["jacky", "12345"]);
    let lb_port = log_in(&mut la);
    let lb = connect_from(
        Ipv4Addr::LOCALHOST,
        SocketAddr::from((Ipv4Addr::LOCALHOST, lb_port)),
    );
    la.get_mut()
        .write_all(b"201 Build connection successful\n")
        .unwrap();
    client.expect_lines(&[
        "Please input your user name:",
        "Please input your password:",
        "101 Authentication successful",
        "201 Build connection successful",
    ]);
    (client, la, BufReader::new(lb))
}

/// docs/protocol.md §4 step 5: a server that says `/broadcast` (no `from`) or sends a line far
/// over the bound still gets `302` for each, the user sees what can be shown, and standard
/// error warns once of the deviation (and of the line it could not show).
fn a_deviating_servers_lb_lines_are_shown_and_acknowledged(runtime: Runtime) {
    let (mut client, mut la, mut lb) = logged_in_with_lb(runtime);
    lb.get_mut().write_all(b"/broadcast bob hi all\n").unwrap();
    assert_eq!(read_line(&mut lb), RECEIPT);
    lb.get_mut().write_all(b"/broadcast bob again\n").unwrap();
    assert_eq!(read_line(&mut lb), RECEIPT);
    let mut long = vec![b'x'; 70_000];
    long.push(b'\n');
    lb.get_mut().write_all(&long).unwrap();
    assert_eq!(read_line(&mut lb), RECEIPT);
    lb.get_mut().write_all(b"/from bob still here\n").unwrap();
    assert_eq!(read_line(&mut lb), RECEIPT);
    client.expect_lines(&[
        "/broadcast bob hi all",
        "/broadcast bob again",
        "/from bob still here",
    ]);
    client.close_stdin();
    assert_eq!(read_line(&mut la), "/exit\n");
    la.get_mut().write_all(b"310 Bye bye\n").unwrap();
    drop((la, lb));
    let (code, stdout, stderr) = client.finish();
    assert_eq!(stdout, ["310 Bye bye"]);
    assert_eq!(stderr.len(), 2, "{stderr:?}");
    assert!(
        stderr[0].contains("deviates from the protocol"),
        "{stderr:?}"
    );
    assert!(stderr[1].contains("longer than 65536 bytes"), "{stderr:?}");
    assert_eq!(code, Some(0));
}

/// docs/protocol.md §4 step 3: a connection to the Lb port from another address (here
/// 127.0.0.2, that reaches it first) is closed unread and named on standard error; the one
/// from La's peer address (127.0.0.1) is Lb, and its messages are shown and acknowledged.
fn lb_is_taken_only_from_the_servers_address(runtime: Runtime) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = Piped::start(runtime, "127.0.0.1", addr.port());
    let mut la = BufReader::new(accept_within(&server));
    client.expect_lines(&["Please input your user name:"]);
    client.type_lines(&["jacky", "12345"]);
    let lb_port = log_in(&mut la);
    let lb_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, lb_port));

    let mut stranger = connect_from(Ipv4Addr::new(127, 0, 0, 2), lb_addr);
    // Whatever it sends is never shown nor acknowledged: the connection just closes.
    let _ = stranger.write_all(b"/from bob send me your password\n");
    let mut got = Vec::new();
    match stranger.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "the stranger read {got:?}"),
        // Closed with the stranger's bytes unread: a reset.
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        Err(error) => panic!("the stranger's connection was not closed: {error}"),
    }
    let warning = client.stderr.recv_timeout(STEP).unwrap();
    assert!(
        warning.contains("127.0.0.2") && warning.starts_with("warning: "),
        "{warning}"
    );

    let mut lb = BufReader::new(connect_from(Ipv4Addr::LOCALHOST, lb_addr));
    la.get_mut()
        .write_all(b"201 Build connection successful\n")
        .unwrap();
    lb.get_mut()
        .write_all(b"/from bob Hello, Jacky!\n")
        .unwrap();
    assert_eq!(read_line(&mut lb), RECEIPT);
    client.expect_lines(&[
        "Please input your password:",
        "101 Authentication successful",
        "201 Build connection successful",
        "/from bob Hello, Jacky!",
    ]);

    client.close_stdin();
    assert_eq!(read_line(&mut la), "/exit\n");
    la.get_mut().write_all(b"310 Bye bye\n").unwrap();
    drop(lb);
    drop(la);
    let (code, stdout, stderr) = client.finish();
    assert_eq!(stdout, ["310 Bye bye"]);
    assert_eq!(stderr, Vec::<String>::new(), "one warning only");
    assert_eq!(code, Some(0));
}

/// docs/protocol.md §4 step 1: `im-client localhost <port>` resolves the name and connects to
/// the server listening on 127.0.0.1 (after `::1`, if the name has it, refuses).
fn a_host_name_works_where_an_ip_does(runtime: Runtime) {
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut client = Piped::start(runtime, "localhost", server.addr.port());
    client.expect_lines(&["Please input your user name:"]);
    client.type_lines(&["jacky", "12345", "/list", "/exit"]);
    client.expect_lines(&[
        "Please input your password:",
        "101 Authentication successful",
        "201 Build connection successful",
        "/list",
        "301 jacky",
        "/exit",
        "310 Bye bye",
    ]);
    let (code, _, stderr) = client.finish();
    assert_eq!(stderr, Vec::<String>::new());
    assert_eq!(code, Some(0));
}

/// A name that does not resolve: one line on standard error, exit code 2 (a bad argument).
#[test]
fn a_host_name_that_does_not_resolve_exits_2_with_one_line() {
    let client = Piped::start(Runtime::Smol, "no-such-host.invalid", 4000);
    let (code, stdout, stderr) = client.finish();
    assert_eq!(stdout, Vec::<String>::new());
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("no-such-host.invalid"), "{stderr:?}");
    assert_eq!(code, Some(2));
}

/// Nothing listens at any address of the name: one line on standard error, exit code 1.
#[test]
fn a_host_name_nobody_answers_at_exits_1_with_one_line() {
    // A port that was free a moment ago: nobody listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for runtime in [Runtime::Smol, Runtime::Threads] {
        let client = Piped::start(runtime, "localhost", port);
        let (code, stdout, stderr) = client.finish();
        assert_eq!(stdout, Vec::<String>::new());
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].starts_with("error: cannot connect"), "{stderr:?}");
        assert_eq!(code, Some(1));
    }
}
