//! A throwaway `redis-server` for tests: its own temporary directory, no persistence, on a
//! unix socket or a free port of 127.0.0.1; killed and its directory removed on drop.
//! `kill` and `restart` (same address, empty data) are for fault tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long `redis-server` may take to answer its first PING.
const READY: Duration = Duration::from_secs(10);

/// Where the server listens.
#[derive(Clone, Debug)]
enum Address {
    Unix(PathBuf),
    Tcp(u16),
}

/// A running (or killed) `redis-server` of this test.
pub struct RedisServer {
    dir: PathBuf,
    address: Address,
    child: Option<Child>,
}

impl RedisServer {
    /// A server on a unix socket. The tests that start one are `#[ignore = "needs
    /// redis-server"]`: without `redis-server` installed this panics, saying so.
    pub fn unix() -> RedisServer {
        let dir = temp_dir();
        let address = Address::Unix(dir.join("redis.sock"));
        RedisServer::start(dir, address)
    }

    /// A server on a free TCP port of 127.0.0.1; as [`RedisServer::unix`].
    pub fn tcp() -> RedisServer {
        let dir = temp_dir();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        RedisServer::start(dir, Address::Tcp(port))
    }

    /// The URL a node joins.
    pub fn url(&self) -> String {
        match &self.address {
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::Tcp(port) => format!("redis://127.0.0.1:{port}"),
        }
    }

    /// A blocking connection for the test's own looks at the data.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("a connection to the test's redis-server")
    }

    /// Kills the server (SIGKILL): every connection drops, every call fails.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Address::Unix(path) = &self.address {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the server again on the same address, with no data (as after a crash without
    /// persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(&self.dir, &self.address));
        self.wait_ready();
    }

    fn start(dir: PathBuf, address: Address) -> RedisServer {
        let child = Some(spawn(&dir, &address));
        let server = RedisServer {
            dir,
            address,
            child,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        let url = self.url();
        loop {
            let pong = redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            match pong {
                Ok(_) => return,
                Err(error) if start.elapsed() > READY => {
                    panic!("redis-server at {url} not ready after {READY:?}: {error}")
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(dir: &PathBuf, address: &Address) -> Child {
    let mut command = Command::new("redis-server");
    match address {
        Address::Unix(path) => command
            .args(["--port", "0", "--unixsocket"])
            .arg(path)
            .args(["--unixsocketperm", "700"]),
        Address::Tcp(port) => command
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"]),
    };
    command
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

/// A fresh temporary directory for a server; panics if `redis-server` is not installed.
fn temp_dir() -> PathBuf {
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        installed,
        "redis-server is not installed: apt-get install redis-server"
    );
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "simple-im-redis-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}
