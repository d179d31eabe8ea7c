//! TCP keepalive (`--keepalive`): set on La and Lb in both runtimes, as the kernel reports it
//! (`ss -o` shows a `keepalive` timer on each of the server's sockets), and its whole effect:
//! a client whose host vanishes without a FIN, in a pair of network namespaces this test makes
//! and removes itself, goes offline and its pending delivery fails `304`, in about
//! idle + interval × probes. That one needs root (`cargo test -- --include-ignored`).

#[macro_use]
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::harness;
use common::harness::{Runtime, ServerProcess, CLIENT_BIN, USERS};

/// The server's established TCP sockets, as `ss -tnop` shows them (one line each).
fn server_sockets(server: &ServerProcess) -> Vec<String> {
    let output = Command::new("ss")
        .args(["-tnopH", "state", "established"])
        .output()
        .expect("ss (iproute2) is needed: apt-get install iproute2");
    let pid = format!("pid={},", server.pid());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&pid))
        .map(str::to_owned)
        .collect()
}

/// With `--keepalive 7s`, both of a logged-in client's sockets on the server's side have a
/// keepalive timer; with `off`, neither has.
fn keepalive_is_on_la_and_lb(runtime: Runtime) {
    for (option, wanted) in [("7s", true), ("off", false)] {
        let server = ServerProcess::start(runtime, USERS, &["--keepalive", option]);
        let _bob = server.ready("bob", "bob123");
        // A socket with bytes in flight shows its retransmission timer instead: look again
        // until both are idle.
        let deadline = Instant::now() + Duration::from_secs(3);
        let sockets = loop {
            let sockets = server_sockets(&server);
            let idle = sockets.iter().all(|socket| !socket.contains("timer:(on,"));
            if idle || Instant::now() > deadline {
                break sockets;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(sockets.len(), 2, "La and Lb: {sockets:#?}");
        for socket in &sockets {
            assert_eq!(
                socket.contains("timer:(keepalive,"),
                wanted,
                "--keepalive {option}: {socket}"
            );
        }
    }
}

/// Two network namespaces joined by a veth pair: the server's host and the client's host.
struct Hosts {
    server: String,
    client: String,
}

const SERVER_IP: &str = "10.213.7.1";
const CLIENT_IP: &str = "10.213.7.2";

impl Hosts {
    /// Makes the pair, or says why not (not root, no `ip`).
    fn new() -> Result<Hosts, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let hosts = Hosts {
            server: format!("imka-s-{tag}"),
            client: format!("imka-c-{tag}"),
        };
        let (s, c) = (hosts.server.as_str(), hosts.client.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        ip(&[
            "-n", s, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", c,
        ])?;
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "veth0",
        ])?;
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            "veth1",
        ])?;
        for (ns, dev) in [(s, "veth0"), (c, "veth1"), (s, "lo"), (c, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(hosts)
    }

    /// Runs `program` on a host.
    fn on(host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", host, program]);
        command
    }

    /// The client's host drops off the network: no FIN, no reset, nothing.
    fn cut_client(&self) {
        ip(&["-n", &self.client, "link", "set", "veth1", "down"]).unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("ip: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// alice's host vanishes while bob sends her a message: with `--keepalive 2s` (probes a
/// second apart, 3 of them) and a 60 s ack time-out, bob's `/to` fails `304` within the
/// keepalive's bound, not the ack time-out's, and alice is offline.
fn a_vanished_client_goes_offline(runtime: Runtime) {
    let hosts = match Hosts::new() {
        Ok(hosts) => hosts,
        Err(why) => panic!("cannot make network namespaces (run as root, with iproute2): {why}"),
    };
    let prefix = ["ip", "netns", "exec", hosts.server.as_str()];
    let options = [
        "--bind",
        SERVER_IP,
        "--keepalive",
        "2s",
        "--ack-timeout",
        "60s",
    ];
    let server = ServerProcess::start_under(&prefix, 0, runtime, USERS, &options);
    let port = server.addr.port().to_string();
    let client = |host: &str| {
        let mut command = Hosts::on(host, CLIENT_BIN);
        command.args([SERVER_IP, &port, "--runtime", runtime.name()]);
        harness::ClientProcess::from_command(command)
    };
    let mut alice = client(&hosts.client);
    alice.log_in("alice", "alice123");
    let mut bob = client(&hosts.server);
    bob.log_in("bob", "bob123");
    bob.run("/list", "301 bob alice");

    hosts.cut_client();
    let cut = Instant::now();
    bob.type_lines(&["/to alice are you there?"]);
    bob.expect_lines(&["/to alice are you there?"]);
    let answer = bob.next_line_within(Duration::from_secs(20));
    let took = cut.elapsed();
    assert_eq!(
        answer, "304 Message delivery failed",
        "{:?}",
        bob.transcript
    );
    // idle 2 s + 3 probes 1 s apart = 5 s, give or take the kernel's timer slack; far from
    // the 60 s ack time-out.
    assert!(took < Duration::from_secs(15), "304 after {took:?}");
    bob.run("/list", "301 bob");
    server.expect_log("(alice) left");
}

in_each_server_runtime!(
    keepalive_is_on_la_and_lb,
    #[ignore = "needs root and network namespaces (ip netns)"]
    a_vanished_client_goes_offline,
);
