//! Cluster mode end to end: two or three real `im-server` nodes on one real `redis-server` (each
//! test starts its own, on a Unix socket in a temporary directory), raw TCP clients and real
//! `im-client` processes, all over 127.0.0.1.
//!
//! Every test needs `redis-server`, so each is `#[ignore = "needs redis-server"]`: run them with
//! `cargo test -- --include-ignored` (`.ci/run` does).

#[macro_use]
mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::harness;
use common::harness::{Runtime, ServerProcess, TempFile, STEP, USERS};
use common::redis_server::RedisServer;

const OK: &str = "303 Message delivery successful\n";
const FAILED: &str = "304 Message delivery failed\n";
const AUTH_OK: &str = "101 Authentication successful\n";
const AUTH_FAILED: &str = "102 Authentication failed\n";

/// The lease the nodes run with here: short, so that a dead node is noticed quickly, yet long
/// enough that a node on a loaded 2-core machine renews it (a heartbeat is a third of it, and
/// every Redis call is bounded by one), and that a node without Redis answers its clients'
/// requests (each bounded by a heartbeat) well before it gives its lease up.
const LEASE: &str = "3s";
/// How long a dead node may take to be noticed: the lease, plus a heartbeat, plus slack.
const NOTICED: Duration = Duration::from_secs(6);

/// A Redis and the nodes on it.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<ServerProcess>,
}

impl Cluster {
    /// `n` nodes with these extra options.
    fn start(n: usize, options: &[&str]) -> Cluster {
        let redis = RedisServer::unix();
        let mut cluster = Cluster {
            redis,
            nodes: Vec::new(),
        };
        for _ in 0..n {
            cluster.add_node(options);
        }
        cluster
    }

    fn add_node(&mut self, options: &[&str]) -> &ServerProcess {
        self.add_node_on(Runtime::Smol, options)
    }

    fn add_node_on(&mut self, runtime: Runtime, options: &[&str]) -> &ServerProcess {
        let url = self.redis.url();
        let mut all = vec!["--cluster", &url, "--cluster-lease", LEASE];
        all.extend_from_slice(options);
        self.nodes.push(ServerProcess::start(runtime, USERS, &all));
        self.nodes.last().expect("just added")
    }

    fn node(&self, index: usize) -> &ServerProcess {
        &self.nodes[index]
    }
}

/// Sends a signal to a process.
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Retries `attempt` until it returns `true` or `within` has passed.
fn eventually(within: Duration, what: &str, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !attempt() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs redis-server"]
fn list_is_one_list_in_global_login_order() {
    let cluster = Cluster::start(2, &[]);
    let _alice = cluster.node(0).ready("alice", "alice123");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    let mut carol = cluster.node(0).ready("carol", "carol123");
    assert_eq!(bob.request("/list"), "301 bob alice carol\n");
    assert_eq!(carol.request("/list"), "301 carol alice bob\n");
}

#[test]
#[ignore = "needs redis-server"]
fn one_user_logs_in_once_in_the_whole_cluster() {
    let cluster = Cluster::start(2, &[]);
    let _jacky = cluster.node(0).ready("jacky", "12345");
    let mut twin = cluster.node(1).connect();
    assert_eq!(twin.request("/login jacky 12345"), AUTH_FAILED);

    // Two nodes racing for one user: exactly one wins.
    for round in 0..5 {
        let (mut first, mut second) = (cluster.node(0).connect(), cluster.node(1).connect());
        first.send(b"/login bob bob123\n");
        second.send(b"/login bob bob123\n");
        let answers = [first.recv(), second.recv()];
        let won = answers.iter().filter(|answer| *answer == AUTH_OK).count();
        assert_eq!(won, 1, "round {round}: {answers:?}");
        // The winner leaves, so the next round races again.
        let winner = if answers[0] == AUTH_OK {
            &mut first
        } else {
            &mut second
        };
        assert_eq!(winner.request("/exit"), "310 Bye bye\n");
        let mut probe = cluster.node(0).connect();
        eventually(STEP, "bob released", || {
            let answer = probe.request("/login bob bob123");
            if answer == AUTH_OK {
                probe.request("/exit");
                probe = cluster.node(0).connect();
            }
            answer == AUTH_OK
        });
    }
}

#[test]
#[ignore = "needs redis-server"]
fn to_across_nodes_is_303_when_acknowledged_and_304_when_not() {
    let cluster = Cluster::start(2, &["--ack-timeout", "1s"]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    let mut michael = cluster.node(1).ready("michael", "michael123");

    jacky.send(b"/to bob Hello across nodes\n");
    assert_eq!(bob.recv_lb(), "/from jacky Hello across nodes\n");
    bob.ack();
    assert_eq!(jacky.recv(), OK);

    // michael never acknowledges: his node times him out and jacky's node hears of it.
    jacky.send(b"/to michael are you there?\n");
    assert_eq!(michael.recv_lb(), "/from jacky are you there?\n");
    assert_eq!(jacky.recv(), FAILED);
    michael.expect_la_closed();

    // Offline and unknown users fail at once, from any node.
    assert_eq!(bob.request("/to michael gone"), FAILED);
    assert_eq!(bob.request("/to nobody hello"), FAILED);
}

#[test]
#[ignore = "needs redis-server"]
fn one_recipient_gets_one_message_at_a_time_from_senders_on_two_nodes() {
    let cluster = Cluster::start(2, &[]);
    let mut bob = cluster.node(0).ready("bob", "bob123");
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut alice = cluster.node(1).ready("alice", "alice123");
    jacky.send(b"/to bob one\n");
    alice.send(b"/to bob two\n");
    let first = bob.recv_lb();
    // Nothing else is on bob's Lb until he acknowledges the first.
    bob.ack();
    let second = bob.recv_lb();
    bob.ack();
    let mut got = [first, second];
    got.sort();
    assert_eq!(got, ["/from alice two\n", "/from jacky one\n"]);
    assert_eq!(jacky.recv(), OK);
    assert_eq!(alice.recv(), OK);
}

#[test]
#[ignore = "needs redis-server"]
fn nodes_on_every_async_runtime_make_one_chat() {
    let mut runtimes = vec![Runtime::Smol, Runtime::Tokio];
    if cfg!(all(target_os = "linux", feature = "uring")) {
        runtimes.push(Runtime::Uring);
    }
    let mut cluster = Cluster::start(0, &[]);
    for &runtime in &runtimes {
        cluster.add_node_on(runtime, &[]);
    }
    let users = &[
        ("jacky", "12345"),
        ("bob", "bob123"),
        ("michael", "michael123"),
    ][..runtimes.len()];
    let mut clients: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, (user, password))| cluster.node(i).ready(user, password))
        .collect();
    // The asker first, then the others in the cluster's login order.
    let last = users.len() - 1;
    let others = users[..last].iter().map(|(user, _)| *user);
    let list: Vec<_> = std::iter::once(users[last].0).chain(others).collect();
    assert_eq!(
        clients[last].request("/list"),
        format!("301 {}\n", list.join(" "))
    );
    // Every node's user sends to the next node's: each runtime sends and receives.
    for from in 0..users.len() {
        let to = (from + 1) % users.len();
        let line = format!("/to {} from {}\n", users[to].0, runtimes[from]);
        clients[from].send(line.as_bytes());
        let expected = format!("/from {} from {}\n", users[from].0, runtimes[from]);
        assert_eq!(clients[to].recv_lb(), expected);
        clients[to].ack();
        let (sender, recipient) = (runtimes[from], runtimes[to]);
        assert_eq!(clients[from].recv(), OK, "{sender} to {recipient}");
    }
    clients[1].send(b"/toall from tokio to all\n");
    for (i, client) in clients.iter_mut().enumerate() {
        if i != 1 {
            assert_eq!(client.recv_lb(), "/broadcastfrom bob from tokio to all\n");
            client.ack();
        }
    }
    assert_eq!(clients[1].recv(), OK);
}

#[test]
fn a_cluster_node_on_threads_is_refused_with_exit_code_2() {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let output = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("0")
        .arg(users.path())
        .args(["--runtime", "threads", "--cluster", "redis://127.0.0.1:1"])
        .output()
        .expect("im-server runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs an async runtime"), "{stderr}");
}

/// A node's Redis connections cost least on tokio (on its own thread): a cluster node runs on
/// it unless `--runtime` says otherwise.
#[test]
#[cfg(feature = "tokio")]
fn a_cluster_node_runs_on_tokio_unless_told_otherwise() {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let runtime_of = |options: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_im-server"))
            .arg("0")
            .arg(users.path())
            .args(["--log", "info", "--bind", "127.0.0.1"])
            // Nothing listens there: the node says which runtime it is on, then gives up.
            .args(["--cluster", "redis://127.0.0.1:1"])
            .args(options)
            .output()
            .expect("im-server runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(stderr.contains("cannot reach Redis"), "{stderr}");
        let line = stderr.lines().find(|line| line.contains("] runtime "));
        let line = line.unwrap_or_else(|| panic!("no runtime line: {stderr}"));
        line.split("] runtime ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_owned)
    };
    assert_eq!(runtime_of(&[]).as_deref(), Some("tokio"));
    assert_eq!(runtime_of(&["--runtime", "smol"]).as_deref(), Some("smol"));
}

#[test]
#[ignore = "needs redis-server"]
fn toall_reaches_every_node() {
    let cluster = Cluster::start(3, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut others: Vec<_> = [
        ("bob", "bob123"),
        ("michael", "michael123"),
        ("alice", "alice123"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (user, password))| cluster.node(i % 3).ready(user, password))
    .collect();
    jacky.send(b"/toall meeting at 3pm\n");
    for other in &mut others {
        assert_eq!(other.recv_lb(), "/broadcastfrom jacky meeting at 3pm\n");
        other.ack();
    }
    assert_eq!(jacky.recv(), OK);
}

#[test]
#[ignore = "needs redis-server"]
fn the_appendix_between_three_im_clients_on_three_nodes() {
    let cluster = Cluster::start(3, &[]);
    let at = [0, 1, 2].map(|node| cluster.node(node).addr);
    harness::appendix_between_im_clients(Runtime::Smol, at);
}

#[test]
#[ignore = "needs redis-server"]
fn a_killed_node_fails_what_waited_on_it_and_frees_its_users() {
    let mut cluster = Cluster::start(2, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    jacky.send(b"/to bob are you still there?\n");
    assert_eq!(bob.recv_lb(), "/from jacky are you still there?\n");
    // bob's node dies before bob acknowledges.
    let started = Instant::now();
    cluster.nodes[1].kill();
    assert_eq!(jacky.recv(), FAILED);
    assert!(started.elapsed() < NOTICED, "{:?}", started.elapsed());
    // bob is gone from the list, and may log in again on the survivor.
    assert_eq!(jacky.request("/list"), "301 jacky\n");
    let _bob_again = cluster.node(0).ready("bob", "bob123");
    assert_eq!(jacky.request("/list"), "301 jacky bob\n");
}

#[test]
#[ignore = "needs redis-server"]
fn a_paused_node_is_reaped_and_ends_its_own_sessions_when_it_wakes() {
    let cluster = Cluster::start(2, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    signal(cluster.node(1).pid(), "STOP");
    eventually(NOTICED, "bob reaped", || {
        jacky.request("/list") == "301 jacky\n"
    });
    let mut bob_elsewhere = cluster.node(0).ready("bob", "bob123");
    signal(cluster.node(1).pid(), "CONT");
    // The woken node finds its lease gone and ends the stale session rather than serve it.
    bob.expect_la_closed();
    assert_eq!(bob_elsewhere.request("/list"), "301 bob jacky\n");
    // And it serves again, as a member of the cluster: logins, and deliveries from the others.
    eventually(NOTICED, "the woken node serves", || {
        let mut alice = cluster.node(1).connect();
        alice.request("/login alice alice123") == AUTH_OK
    });
    cluster.node(0).expect_log("is back");
    let mut carol = cluster.node(1).ready("carol", "carol123");
    jacky.send(b"/to carol welcome back\n");
    assert_eq!(carol.recv_lb(), "/from jacky welcome back\n");
    carol.ack();
    assert_eq!(jacky.recv(), OK);
}

#[test]
#[ignore = "needs redis-server"]
fn without_redis_nodes_fail_closed_and_recover_when_it_returns() {
    let mut cluster = Cluster::start(2, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let _bob = cluster.node(1).ready("bob", "bob123");
    cluster.redis.kill();
    // No directory: no new login, no delivery, and nothing hangs.
    let mut alice = cluster.node(0).connect();
    assert_eq!(alice.request("/login alice alice123"), AUTH_FAILED);
    assert_eq!(jacky.request("/to bob hello?"), FAILED);
    cluster
        .node(0)
        .expect_log("the directory cannot be reached");
    cluster.redis.restart();
    eventually(Duration::from_secs(8), "logins work again", || {
        let mut carol = cluster.node(1).connect();
        carol.request("/login carol carol123") == AUTH_OK
    });
}

#[test]
#[ignore = "needs redis-server"]
fn im_check_passes_against_a_two_node_cluster() {
    let cluster = Cluster::start(2, &["--ack-timeout", "2s", "--login-timeout", "3s"]);
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let output = Command::new(harness::im_check())
        .arg("server")
        .args(["--port", &cluster.node(0).addr.port().to_string()])
        .args(["--port", &cluster.node(1).addr.port().to_string()])
        .arg("--users")
        .arg(users.path())
        .args(["--ack-timeout", "2s", "--login-timeout", "3s"])
        .output()
        .expect("im-check runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains(" 0 failed"), "{report}");
}

#[test]
#[ignore = "needs redis-server"]
fn nodes_share_one_port_with_reuse_port() {
    let mut cluster = Cluster::start(1, &["--reuse-port"]);
    let port = cluster.node(0).addr.port();
    let url = cluster.redis.url();
    let options = ["--cluster", &url, "--cluster-lease", LEASE, "--reuse-port"];
    cluster.nodes.push(ServerProcess::start_on(
        port,
        Runtime::Smol,
        USERS,
        &options,
    ));
    let addr = cluster.node(0).addr;
    // The kernel spreads new connections over both listeners; a few dozen reach both.
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(harness::Client::connect(addr));
    }
    for node in &cluster.nodes {
        eventually(STEP, "both nodes take connections", || {
            node.stderr().contains("connected from")
        });
    }
    drop(clients);
    // One chat, whichever node each lands on.
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let _users: Vec<_> = [
        ("bob", "bob123"),
        ("michael", "michael123"),
        ("alice", "alice123"),
    ]
    .into_iter()
    .map(|(user, password)| cluster.node(0).ready(user, password))
    .collect();
    assert_eq!(jacky.request("/list"), "301 jacky bob michael alice\n");
}

#[test]
#[ignore = "needs redis-server"]
fn sighup_reloads_one_nodes_file_and_a_removed_user_leaves_the_cluster() {
    let cluster = Cluster::start(2, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

    // Node 1 is given a file without bob and with dave; node 0 keeps its own.
    let node = cluster.node(1);
    node.rewrite_users(&format!(
        "{}dave dave123\n",
        USERS.replace("bob bob123\n", "")
    ));
    node.signal("HUP");
    node.expect_log("users reloaded");
    // Bob's delivery fails across nodes, and he leaves the one list.
    assert_eq!(jacky.recv(), FAILED);
    bob.expect_la_closed();
    eventually(STEP, "bob gone from /list", || {
        jacky.request("/list") == "301 jacky\n"
    });
    let _dave = node.ready("dave", "dave123");
    let mut elsewhere = cluster.node(0).connect();
    assert_eq!(elsewhere.request("/login dave dave123"), AUTH_FAILED);
}

#[test]
#[ignore = "needs redis-server"]
fn sigterm_on_one_node_answers_its_delivery_in_flight_and_the_others_serve_on() {
    let mut cluster = Cluster::start(2, &[]);
    let mut jacky = cluster.node(0).ready("jacky", "12345");
    let mut bob = cluster.node(1).ready("bob", "bob123");
    let mut alice = cluster.node(0).ready("alice", "alice123");
    jacky.send(b"/to bob hi\n");
    assert_eq!(bob.recv_lb(), "/from jacky hi\n");

    // Node 1 stops with bob's delivery unacknowledged; bob's ack still counts.
    cluster.node(1).signal("TERM");
    cluster.node(1).expect_log("requests in flight");
    bob.ack();
    assert_eq!(jacky.recv(), OK);
    bob.expect_la_closed();
    drop(bob);
    let exit = cluster.nodes[1]
        .wait_exit(STEP)
        .expect("node 1 still running");
    assert!(exit.success(), "{exit:?}");
    eventually(NOTICED, "bob gone from /list", || {
        alice.request("/list") == "301 alice jacky\n"
    });
    jacky.send(b"/to alice still here\n");
    assert_eq!(alice.recv_lb(), "/from jacky still here\n");
    alice.ack();
    assert_eq!(jacky.recv(), OK);
}

/// One server's order over three real nodes: five users chat at random (`/to`, `/toall`) for a
/// few seconds, each acknowledging on a thread of its own. Times are taken in this process on
/// one clock: a request is read after its `sent` time and a line written before its `got`
/// time, so if one recipient got A before B was sent, everyone who got both must have got A
/// first.
#[test]
#[ignore = "needs redis-server"]
fn deliveries_keep_one_order_across_three_nodes() {
    use std::collections::HashMap;
    use std::io::{BufRead, Write};
    use std::sync::{Arc, Mutex};

    let cluster = Cluster::start(3, &[]);
    let users = [
        ("jacky", "12345"),
        ("bob", "bob123"),
        ("michael", "michael123"),
        ("alice", "alice123"),
        ("carol", "carol123"),
    ];
    let names: Vec<&str> = users.iter().map(|(user, _)| *user).collect();
    let start = Instant::now();
    // (content, sent), and (recipient, content, got), all on `start`'s clock.
    let sent = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let got = Arc::new(Mutex::new(Vec::<(usize, String, Instant)>::new()));
    let mut clients: Vec<_> = (users.iter().enumerate())
        .map(|(i, (user, password))| cluster.node(i % 3).ready(user, password))
        .collect();
    let mut readers = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut lb = client.take_lb().expect("Lb is open");
        lb.get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a timeout");
        let got = got.clone();
        readers.push(thread::spawn(move || loop {
            let mut line = String::new();
            match lb.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    let at = Instant::now();
                    let content = line.rsplit(' ').next().unwrap_or("").trim_end().to_string();
                    got.lock().expect("not poisoned").push((i, content, at));
                    let ack = b"302 Message receipt successful\n";
                    lb.get_mut().write_all(ack).expect("ack written");
                }
                // Quiet for two seconds: the chat is over.
                _ => break,
            }
        }));
    }
    let chat = Duration::from_secs(3);
    let senders: Vec<_> = (clients.into_iter().enumerate())
        .map(|(i, mut client)| {
            let (sent, names) = (sent.clone(), names.clone());
            thread::spawn(move || {
                let mut seq = 0u64;
                let mut answers = Vec::new();
                while start.elapsed() < chat {
                    // A small deterministic mix per sender: mostly `/toall`, some `/to`.
                    let content = format!("{i}.{seq}");
                    let line = match seq % 3 {
                        1 => format!("/to {} {content}\n", names[(i + 1 + seq as usize) % 5]),
                        _ => format!("/toall {content}\n"),
                    };
                    let to_self = line.starts_with(&format!("/to {} ", names[i]));
                    if !to_self {
                        sent.lock()
                            .expect("not poisoned")
                            .push((content, Instant::now()));
                        client.send(line.as_bytes());
                        answers.push(client.recv());
                    }
                    seq += 1;
                }
                (client, answers)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for sender in senders {
        let (client, answers) = sender.join().expect("a sender thread");
        assert!(answers.iter().all(|answer| answer == OK), "{answers:?}");
        clients.push(client);
    }
    for reader in readers {
        reader.join().expect("a reader thread");
    }
    let sent: HashMap<String, Instant> = sent.lock().expect("not poisoned").drain(..).collect();
    let got = std::mem::take(&mut *got.lock().expect("not poisoned"));
    let mut first_got: HashMap<&str, Instant> = HashMap::new();
    for (_, content, at) in &got {
        let first = first_got.entry(content).or_insert(*at);
        *first = (*first).min(*at);
    }
    let mut checked = 0u64;
    for (recipient, name) in names.iter().enumerate() {
        let lines: Vec<&str> = (got.iter())
            .filter(|(r, _, _)| *r == recipient)
            .map(|(_, content, _)| content.as_str())
            .collect();
        for (i, later) in lines.iter().enumerate() {
            for earlier in &lines[i + 1..] {
                // `later` came first here; `earlier` must not have been seen before it was sent.
                checked += 1;
                assert!(
                    first_got[earlier] >= sent[*later],
                    "{name} got {later} before {earlier}, but {earlier} was received {:?} \
                     before {later} was sent",
                    sent[*later] - first_got[earlier],
                );
            }
        }
    }
    assert!(got.len() > 100, "only {} deliveries", got.len());
    eprintln!("{} deliveries, {checked} pairs checked", got.len());
    drop(clients);
}
