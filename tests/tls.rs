//! TLS on both connections, end to end: the real `im-server` with `--tls-cert`, real
//! `im-client --tls` processes and raw rustls clients, in both runtimes; what a plain peer
//! gets from a TLS one; and fake servers that try to open Lb without the server's certificate.
//! The certificates are made per test with rcgen (a private CA, the server's, an impostor's).

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::harness;
use common::harness::{
    appendix_between_im_clients_with, run_to_end, temp_path, ClientProcess, Runtime, ServerProcess,
    CLIENT_BIN, STEP, USERS,
};
use common::pki::Pki;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

fn strs(options: &[String]) -> Vec<&str> {
    options.iter().map(String::as_str).collect()
}

fn tls_server(runtime: Runtime, pki: &Pki) -> ServerProcess {
    ServerProcess::start(runtime, USERS, &strs(&pki.server_options()))
}

type TlsStream = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// A raw protocol client over TLS, checking the server's certificate as `im-client` does.
struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    la: TlsStream,
    lb: Option<TlsStream>,
}

impl TlsClient {
    fn connect(pki: &Pki, server: SocketAddr) -> TlsClient {
        let config = pki.client_config();
        let la = tls_stream(&config, TcpStream::connect_timeout(&server, STEP).unwrap());
        TlsClient {
            config,
            la,
            lb: None,
        }
    }

    fn request(&mut self, line: &str) -> String {
        send(&mut self.la, line);
        recv(&mut self.la)
    }

    /// Opens Lb: listens, sends `/port`, and takes the server's connection as the TLS client.
    fn open_lb(&mut self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        send(&mut self.la, &format!("/port {port}"));
        let (lb, _) = listener.accept().unwrap();
        self.lb = Some(tls_stream(&self.config, lb));
        recv(&mut self.la)
    }

    fn log_in(&mut self, user: &str, password: &str) {
        let answer = self.request(&format!("/login {user} {password}"));
        assert_eq!(answer, "101 Authentication successful\n");
        assert_eq!(self.open_lb(), "201 Build connection successful\n");
    }
}

fn tls_stream(config: &Arc<rustls::ClientConfig>, socket: TcpStream) -> TlsStream {
    socket.set_read_timeout(Some(STEP)).unwrap();
    socket.set_write_timeout(Some(STEP)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::clone(config), name).unwrap();
    BufReader::new(StreamOwned::new(conn, socket))
}

fn send<S: Read + Write>(stream: &mut BufReader<S>, line: &str) {
    let stream = stream.get_mut();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    stream.flush().unwrap();
}

fn recv<S: Read>(stream: &mut BufReader<S>) -> String {
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    line
}

/// The appendix between three real `im-client --tls` processes.
fn appendix_over_tls(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = tls_server(runtime, &pki);
    let options = pki.client_options();
    appendix_between_im_clients_with(runtime, [server.addr; 3], &strs(&options));
}

/// A conversation of raw TLS clients: deliveries and receipts on TLS Lb, and after `310` the
/// server says `close_notify`, so the end of La is a real one (rustls reads it as end of file;
/// a cut connection would be an error).
fn raw_tls_conversation(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = tls_server(runtime, &pki);
    let mut bob = TlsClient::connect(&pki, server.addr);
    bob.log_in("bob", "bob123");
    let mut jacky = TlsClient::connect(&pki, server.addr);
    jacky.log_in("jacky", "12345");
    assert_eq!(jacky.request("/list"), "301 jacky bob\n");
    send(&mut jacky.la, "/to bob over TLS");
    let lb = bob.lb.as_mut().unwrap();
    assert_eq!(recv(lb), "/from jacky over TLS\n");
    send(lb, "302 Message receipt successful");
    assert_eq!(recv(&mut jacky.la), "303 Message delivery successful\n");
    assert_eq!(bob.request("/exit"), "310 Bye bye\n");
    let mut rest = Vec::new();
    bob.la.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(jacky.request("/list"), "301 jacky\n");
}

/// What travels on La is ciphertext: a relay in the middle sees neither the password nor
/// the messages, while the conversation goes on as ever.
fn a_relay_in_the_middle_reads_nothing(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = tls_server(runtime, &pki);
    let (relay, seen) = spy_relay(server.addr);
    let mut bob = TlsClient::connect(&pki, server.addr);
    bob.log_in("bob", "bob123");
    let mut jacky = TlsClient::connect(&pki, relay);
    jacky.log_in("jacky", "12345");
    send(&mut jacky.la, "/to bob secret-plans");
    let lb = bob.lb.as_mut().unwrap();
    assert_eq!(recv(lb), "/from jacky secret-plans\n");
    send(lb, "302 Message receipt successful");
    assert_eq!(recv(&mut jacky.la), "303 Message delivery successful\n");
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 1000, "the relay saw {} bytes", seen.len());
    for clear in ["secret-plans", "12345", "jacky", "Authentication", "/port"] {
        assert!(
            !seen.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{clear:?} crossed the relay in clear"
        );
    }
}

/// A TCP relay to `server` on a free port that keeps every byte it carries, both ways.
fn spy_relay(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let upstream = TcpStream::connect(server).unwrap();
        let pipe = |mut from: TcpStream, mut to: TcpStream, seen: Arc<Mutex<Vec<u8>>>| {
            thread::spawn(move || {
                let mut chunk = [0; 4096];
                while let Ok(n @ 1..) = from.read(&mut chunk) {
                    seen.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if to.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
        };
        pipe(
            client.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
            Arc::clone(&keep),
        );
        pipe(upstream, client, keep);
    });
    (addr, seen)
}

/// A plain-text peer of a TLS server gets a TLS alert and the end, never a protocol answer;
/// the server logs why.
fn a_plain_peer_gets_an_alert(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = tls_server(runtime, &pki);
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(STEP)).unwrap();
    plain.write_all(b"bob\nbob123\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert_eq!(answer.first(), Some(&0x15), "not an alert: {answer:?}");
    assert!(!answer.contains(&b'\n'), "{answer:?}");
    server.expect_log("TLS: the peer does not speak TLS");
}

/// `im-client` without `--tls` against a TLS server: one line that says what to do, exit 1.
fn a_plain_client_is_told_to_use_tls(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = tls_server(runtime, &pki);
    let mut client = im_client(runtime, server.addr, &[]);
    client.expect_lines(&["Please input your user name:"]);
    client.type_lines(&["bob", "bob123"]);
    assert_eq!(client.wait_exit(), Some(1));
    assert!(
        client
            .stderr()
            .contains("error: the server speaks TLS: start the client with --tls"),
        "{}",
        client.stderr()
    );
}

/// `im-client --tls` against a plain server: one line naming TLS, exit 1, in bounded time
/// (the plain server waits for the end of a "line" that never comes, so the client's own
/// handshake timeout answers).
fn a_tls_client_of_a_plain_server_says_so(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let server = ServerProcess::start(runtime, USERS, &[]);
    let mut client = im_client(runtime, server.addr, &pki.client_options());
    assert_eq!(
        client.wait_exit_within(Duration::from_secs(20)),
        Some(1),
        "{:?}",
        client.transcript
    );
    // The plain server takes the ClientHello up to its first `\n` (rustls always sends one,
    // in the supported-groups extension's type) as a line and answers `401`: not TLS.
    assert!(
        client
            .stderr()
            .contains("error: TLS on La failed: the peer does not speak TLS"),
        "{}",
        client.stderr()
    );
}

/// A server that says nothing to the ClientHello: the client gives up after its handshake
/// timeout with one line, on a manual clock (the driver is sans-IO, TLS included).
#[test]
fn a_silent_server_ends_the_handshake_after_its_timeout() {
    use simple_im_core::client::{ClientConfig, ClientError, ClientEvent, Connection};
    use simple_im_core::driver::{ClientDriver, ClientFrontend, IoAction};
    use simple_im_core::tls::HANDSHAKE_TIMEOUT;

    #[derive(Default)]
    struct Seen(Vec<ClientEvent>);
    impl ClientFrontend for Seen {
        fn show(&mut self, event: ClientEvent) {
            self.0.push(event);
        }
        fn read_line(&mut self, _secret: bool) {}
    }

    let pki = Pki::new(temp_path("pki"));
    let tls = simple_im::tls::client_tls(Some(&pki.ca), "localhost").unwrap();
    let start = Instant::now();
    let server = SocketAddr::from(([127, 0, 0, 1], 4000));
    let mut driver =
        ClientDriver::new(start, ClientConfig::default(), server).with_tls(start, Some(&tls));
    let mut seen = Seen::default();
    let Some(IoAction::Send(Connection::La, hello)) = driver.poll_io(&mut seen) else {
        panic!("no ClientHello first");
    };
    assert_eq!(&hello[..2], &[0x16, 0x03], "{hello:?}");
    assert_eq!(driver.poll_io(&mut seen), None);
    assert_eq!(driver.poll_timeout(), Some(start + HANDSHAKE_TIMEOUT));
    driver.handle_timeout(start + HANDSHAKE_TIMEOUT - Duration::from_millis(1));
    assert_eq!(driver.poll_io(&mut seen), None);
    driver.handle_timeout(start + HANDSHAKE_TIMEOUT);
    assert_eq!(driver.poll_io(&mut seen), Some(IoAction::Exit(1)));
    let reason = "no answer to the TLS handshake within 10s (is the server using TLS?)";
    let error = ClientError::Tls {
        on: Connection::La,
        reason: reason.to_owned(),
    };
    assert!(seen.0.contains(&ClientEvent::Error(error)), "{:?}", seen.0);
}

/// A fake server with the real certificate on La opens Lb with another certificate that the
/// same CA signed for the same name: the client refuses it, shows none of its messages, and
/// exits 1. (Anyone else on the server's host could try the same.)
fn lb_must_show_las_certificate(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let la = pki.server_config(&pki.cert, &pki.key);
    let lb = pki.server_config(&pki.impostor_cert, &pki.impostor_key);
    let forged = move |socket: TcpStream| {
        let conn = ServerConnection::new(Arc::clone(&lb)).unwrap();
        let mut lb = StreamOwned::new(conn, socket);
        let _ = lb.write_all(b"/from jacky forged\n");
        let _ = lb.flush();
        let mut rest = Vec::new();
        let _ = lb.read_to_end(&mut rest);
    };
    refused_lb(
        runtime,
        &pki,
        la,
        forged,
        "Lb showed another certificate than La",
    );
}

/// As [`lb_must_show_las_certificate`], with an Lb in plain text: refused the same way.
fn a_plain_lb_is_refused(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let la = pki.server_config(&pki.cert, &pki.key);
    let forged = |mut socket: TcpStream| {
        let _ = socket.write_all(b"/from jacky forged\n");
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest);
    };
    refused_lb(runtime, &pki, la, forged, "the peer does not speak TLS");
}

/// A client of a fake server that opens Lb with `lb` exits 1 naming `why`, and shows none of
/// what came on that Lb.
fn refused_lb(
    runtime: Runtime,
    pki: &Pki,
    la: Arc<rustls::ServerConfig>,
    lb: impl FnOnce(TcpStream) + Send + 'static,
    why: &str,
) {
    let addr = fake_tls_server(la, lb);
    let mut client = im_client(runtime, addr, &pki.client_options());
    client.expect_lines(&["Please input your user name:"]);
    client.type_lines(&["bob", "bob123"]);
    assert_eq!(client.wait_exit(), Some(1), "{:?}", client.transcript);
    let stderr = client.stderr();
    assert!(
        stderr.contains(&format!("error: TLS on Lb failed: {why}")),
        "{stderr}"
    );
    drain(&mut client);
    assert!(
        !client.transcript.iter().any(|line| line.contains("forged")),
        "{:?}",
        client.transcript
    );
}

/// Reads what is left of the client's output (it has exited).
fn drain(client: &mut ClientProcess) {
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if client.try_next_line().is_none() {
            break;
        }
    }
}

/// A one-shot server: La with `la` as TLS server, the login answered `101`, then Lb opened
/// to the client's `/port` and handed to `lb`.
fn fake_tls_server(
    la: Arc<rustls::ServerConfig>,
    lb: impl FnOnce(TcpStream) + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        socket.set_read_timeout(Some(STEP)).unwrap();
        let conn = ServerConnection::new(la).unwrap();
        let mut la = BufReader::new(StreamOwned::new(conn, socket));
        let _login = recv(&mut la);
        send(&mut la, "101 Authentication successful");
        let port = recv(&mut la);
        let Some(port) = port.trim().strip_prefix("/port ") else {
            return;
        };
        let socket = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
        socket.set_read_timeout(Some(STEP)).unwrap();
        send(&mut la, "201 Build connection successful");
        lb(socket);
    });
    addr
}

fn im_client(runtime: Runtime, server: SocketAddr, options: &[String]) -> ClientProcess {
    ClientProcess::from_command(ClientProcess::command(runtime, server, &strs(options)))
}

in_each_server_runtime!(
    appendix_over_tls,
    raw_tls_conversation,
    a_relay_in_the_middle_reads_nothing,
    a_plain_peer_gets_an_alert,
    a_plain_client_is_told_to_use_tls,
    a_tls_client_of_a_plain_server_says_so,
    lb_must_show_las_certificate,
    a_plain_lb_is_refused,
    sighup_renews_the_certificate_for_new_connections,
);

/// The certificate a TLS stream's server showed, once its handshake is done (Lb's has not
/// begun before the stream is first used).
fn shown_certificate(stream: &mut TlsStream) -> Vec<u8> {
    let stream = stream.get_mut();
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    let certificates = stream.conn.peer_certificates().unwrap();
    certificates[0].to_vec()
}

/// A renewed certificate (new files at the same paths, as certbot leaves them) is read on
/// SIGHUP: a new connection's La and Lb show it, one open keeps its session and goes on.
fn sighup_renews_the_certificate_for_new_connections(runtime: Runtime) {
    let pki = Pki::new(temp_path("pki"));
    let text = format!("tls-cert = {:?}\ntls-key = {:?}\n", pki.cert, pki.key);
    let config = harness::TempFile::new("im-server.toml", text.as_bytes());
    let shown = config.path().display().to_string();
    let server = ServerProcess::start(runtime, USERS, &["--config", &shown]);
    let mut bob = TlsClient::connect(&pki, server.addr);
    bob.log_in("bob", "bob123");
    let first = common::pki::pem_certs(&pki.cert)[0].to_vec();
    assert_eq!(shown_certificate(&mut bob.la), first);

    // The impostor's pair stands in for a renewal: the same CA, the same names.
    std::fs::copy(&pki.impostor_cert, &pki.cert).unwrap();
    std::fs::copy(&pki.impostor_key, &pki.key).unwrap();
    server.signal("HUP");
    server.expect_log("users reloaded");
    let renewed = common::pki::pem_certs(&pki.impostor_cert)[0].to_vec();
    let mut jacky = TlsClient::connect(&pki, server.addr);
    jacky.log_in("jacky", "12345");
    assert_eq!(shown_certificate(&mut jacky.la), renewed);
    assert_eq!(shown_certificate(jacky.lb.as_mut().unwrap()), renewed);

    // Bob, on the first certificate still, and jacky, on the new one, talk.
    send(&mut jacky.la, "/to bob hi");
    let bob_lb = bob.lb.as_mut().unwrap();
    assert_eq!(recv(bob_lb), "/from jacky hi\n");
    send(bob_lb, "302 Message receipt successful");
    assert_eq!(recv(&mut jacky.la), "303 Message delivery successful\n");
    assert_eq!(bob.request("/list"), "301 bob jacky\n");
}

#[test]
fn bad_tls_options_are_one_line_and_exit_2() {
    let pki = Pki::new(temp_path("pki"));
    let users = harness::TempFile::new("users.txt", USERS.as_bytes());
    let missing = pki.dir.join("missing.pem");
    let with = |cert: &PathBuf, key: &PathBuf| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["0".into(), users.path().into()];
        args.extend([
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ]);
        args
    };
    let mut without_key: Vec<std::ffi::OsString> = with(&pki.cert, &pki.key);
    without_key.truncate(4);
    let cases = [
        (without_key, "--tls-key"),
        (with(&missing, &pki.key), "missing.pem"),
        (with(&pki.cert, &pki.impostor_key), "do not go together"),
        (with(&pki.key, &pki.key), "no certificate"),
    ];
    for (args, needle) in cases {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|arg| arg.as_os_str()).collect();
        let output = run_to_end(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // The client's TLS options need --tls, and a CA file that holds a certificate.
    for (args, needle) in [
        (vec!["127.0.0.1", "4000", "--ca", "x.pem"], "--tls"),
        (
            vec!["127.0.0.1", "4000", "--tls", "--ca", "/nonexistent/ca.pem"],
            "ca.pem",
        ),
    ] {
        let output = Command::new(CLIENT_BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// The server's TLS, sans-IO: [`ServerDriver`] with a certificate and rustls clients in
/// memory, on a manual clock. The handshake's reads do not use up La's read grant; a delivery
/// made before Lb's handshake ends waits inside TLS (nothing goes out, not even ciphertext)
/// and goes out when it ends; and after `310` comes `close_notify`.
#[test]
fn the_server_driver_speaks_tls_on_la_and_lb() {
    use simple_im_core::driver::{DriverAction, DriverConfig, ServerDriver, SocketId};
    use simple_im_core::server::ServerConfig;
    use simple_im_core::users::Users;

    let pki = Pki::new(temp_path("pki"));
    let tls = simple_im::tls::load_server_tls(&pki.cert, &pki.key).unwrap();
    let config = DriverConfig {
        tls: Some(tls),
        ..DriverConfig::default()
    };
    let users = Users::parse(USERS.as_bytes()).unwrap();
    let mut driver = ServerDriver::new(users, ServerConfig::default(), &config);
    let now = Instant::now();
    let client_config = pki.client_config();
    let client = || {
        let name = ServerName::try_from("localhost").unwrap();
        ClientConnection::new(Arc::clone(&client_config), name).unwrap()
    };

    /// Moves bytes both ways until neither side has more; returns the client's plaintext.
    fn exchange(
        driver: &mut ServerDriver,
        now: Instant,
        socket: SocketId,
        tls: &mut ClientConnection,
    ) -> String {
        let mut plaintext = Vec::new();
        loop {
            let mut moved = false;
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() {
                assert!(driver.wants_read(socket), "{socket} not read");
                driver.handle_read(now, socket, &out);
                moved = true;
            }
            while let Some(bytes) = driver.poll_transmit(socket) {
                driver.handle_written(now, socket, bytes.len());
                tls.read_tls(&mut &bytes[..]).unwrap();
                tls.process_new_packets().unwrap();
                moved = true;
            }
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = tls.reader().read(&mut chunk) {
                plaintext.extend_from_slice(&chunk[..n]);
            }
            if !moved {
                return String::from_utf8(plaintext).unwrap();
            }
        }
    }
    /// The Lb connect the driver asked for, if any (other actions are the runtime's business
    /// here: wakes, and password checks that a plain users file never asks for).
    fn connects(driver: &mut ServerDriver) -> Vec<simple_im_core::server::ConnId> {
        let mut connects = Vec::new();
        while let Some(action) = driver.poll_action() {
            if let DriverAction::Connect { conn, .. } = action {
                connects.push(conn);
            }
        }
        connects
    }
    let peer = SocketAddr::from(([127, 0, 0, 1], 50000));
    let log_in = |driver: &mut ServerDriver, user: &str, password: &str| {
        let conn = driver.accept(now, peer).unwrap();
        let la = SocketId::la(conn);
        let mut tls = client();
        assert_eq!(exchange(driver, now, la, &mut tls), "");
        assert!(!tls.is_handshaking());
        // The handshake used no grant: the login line is read.
        tls.writer()
            .write_all(format!("/login {user} {password}\n").as_bytes())
            .unwrap();
        assert_eq!(
            exchange(driver, now, la, &mut tls),
            "101 Authentication successful\n"
        );
        tls.writer().write_all(b"/port 6000\n").unwrap();
        assert_eq!(exchange(driver, now, la, &mut tls), "");
        assert_eq!(connects(driver), [conn]);
        assert!(driver.handle_lb_connected(now, conn));
        assert_eq!(
            exchange(driver, now, la, &mut tls),
            "201 Build connection successful\n"
        );
        (conn, tls)
    };
    let (bob, mut bob_la) = log_in(&mut driver, "bob", "bob123");
    let (jacky, mut jacky_la) = log_in(&mut driver, "jacky", "12345");
    let _ = connects(&mut driver);

    jacky_la.writer().write_all(b"/to bob hi\n").unwrap();
    assert_eq!(
        exchange(&mut driver, now, SocketId::la(jacky), &mut jacky_la),
        ""
    );
    // bob's Lb has not shaken hands (the server waits for the client's hello): the delivery
    // waits inside TLS.
    assert!(driver.poll_transmit(SocketId::lb(bob)).is_none());
    assert_eq!(driver.unwritten(SocketId::lb(bob)), 0);
    let mut bob_lb = client();
    let lb = SocketId::lb(bob);
    assert_eq!(
        exchange(&mut driver, now, lb, &mut bob_lb),
        "/from jacky hi\n"
    );
    bob_lb
        .writer()
        .write_all(b"302 Message receipt successful\n")
        .unwrap();
    assert_eq!(exchange(&mut driver, now, lb, &mut bob_lb), "");
    assert_eq!(
        exchange(&mut driver, now, SocketId::la(jacky), &mut jacky_la),
        "303 Message delivery successful\n"
    );

    bob_la.writer().write_all(b"/exit\n").unwrap();
    assert_eq!(
        exchange(&mut driver, now, SocketId::la(bob), &mut bob_la),
        "310 Bye bye\n"
    );
    // `close_notify` after the last answer, on both of bob's sockets.
    let mut rest = [0; 16];
    assert_eq!(bob_la.reader().read(&mut rest).unwrap(), 0);
    let _ = exchange(&mut driver, now, lb, &mut bob_lb);
    assert_eq!(bob_lb.reader().read(&mut rest).unwrap(), 0);
}

/// `im-server --make-cert` makes a certificate that works the first time: the server runs
/// with the files it wrote and the commands it printed, and clients trust it with `--ca`.
#[test]
fn a_made_certificate_works_the_first_time() {
    let dir = temp_path("made");
    let out = run_to_end(&[
        "--make-cert".as_ref(),
        "chat.example,localhost,127.0.0.1".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
    ]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    assert!(
        printed.contains(&format!("--tls-cert {cert_s} --tls-key {key_s}")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("im-client chat.example PORT --tls --ca {cert_s}")),
        "{printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is its owner's alone");
    }
    // Not over files that exist: one line, exit 2.
    let again = run_to_end(&[
        "--make-cert".as_ref(),
        "localhost".as_ref(),
        "--out".as_ref(),
        dir.as_os_str(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let server = ServerProcess::start(
        Runtime::Smol,
        USERS,
        &["--tls-cert", cert_s, "--tls-key", key_s],
    );
    let ca = ["--tls".to_owned(), "--ca".to_owned(), cert_s.to_owned()];
    appendix_between_im_clients_with(Runtime::Smol, [server.addr; 3], &strs(&ca));
    // By name too, as the printed command has it.
    let mut by_name = ClientProcess::start_with(
        Runtime::Smol,
        server.addr,
        &["--tls", "--ca", cert_s, "--server-name", "chat.example"],
    );
    by_name.log_in("jacky", "12345");
    by_name.run("/list", "301 jacky");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `openssl req -x509` makes by default: a self-signed certificate that says CA:TRUE.
/// TLS refuses it as a server's own; the client says so in one line and how to make one that
/// works.
#[test]
fn a_ca_certificate_as_the_servers_is_refused_with_advice() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    let dir = temp_path("ca-true");
    std::fs::create_dir_all(&dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (cert_s, key_s) = (cert_path.to_str().unwrap(), key_path.to_str().unwrap());

    let server = ServerProcess::start(
        Runtime::Smol,
        USERS,
        &["--tls-cert", cert_s, "--tls-key", key_s],
    );
    let options = ["--tls".to_owned(), "--ca".to_owned(), cert_s.to_owned()];
    let mut client = im_client(Runtime::Smol, server.addr, &options);
    assert_eq!(
        client.wait_exit_within(Duration::from_secs(20)),
        Some(1),
        "{:?}",
        client.transcript
    );
    let stderr = client.stderr();
    let expected = format!(
        "error: TLS on La failed: {}",
        simple_im_core::tls::CA_AS_SERVER
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("im-server --make-cert"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
