//! The server hub alone, without I/O: `cargo bench --bench hub`. Each bench runs with
//! metrics off (`false`) and on (`true`, counting into a Prometheus registry), side by side.

use std::net::SocketAddr;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::Bencher;
use prometheus_client::registry::Registry;
use simple_im::metrics::register;
use simple_im_core::protocol::receipt_bytes;
use simple_im_core::server::{ConnId, Input, Output, Server, ServerConfig};
use simple_im_core::users::Users;

fn main() {
    divan::main();
}

/// Drains the server's outputs, answering Lb connects at once.
fn drain(server: &mut Server, now: Instant) -> usize {
    let mut count = 0;
    let mut connects = Vec::new();
    while let Some(output) = server.poll_output() {
        count += 1;
        if let Output::ConnectLb(conn, _) = output {
            connects.push(conn);
        }
    }
    for conn in connects {
        server.handle_input(now, Input::LbConnected(conn));
        count += drain(server, now);
    }
    count
}

/// A server with `n` users logged in and Ready, counting into a registry if `metered`;
/// returns their connections.
fn ready_server(n: usize, metered: bool) -> (Server, Vec<ConnId>, Instant) {
    let mut users = Users::default();
    for i in 0..n {
        users.insert(format!("user{i}").as_bytes(), b"pw");
    }
    let mut server = Server::new(users, ServerConfig::default());
    if metered {
        // The series are shared with the handle, so they outlive the registry dropped here.
        let mut registry = Registry::default();
        server.set_metrics(register(&mut registry));
    }
    let now = Instant::now();
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let conns: Vec<ConnId> = (0..n)
        .map(|i| {
            let conn = server.accept(now, peer);
            drain(&mut server, now);
            let login = format!("/login user{i} pw\n/port 5000\n");
            server.handle_input(now, Input::LaData(conn, login.as_bytes()));
            drain(&mut server, now);
            conn
        })
        .collect();
    (server, conns, now)
}

/// One `/to` round trip: the request on La, the `/from` out on Lb, the `302` back, `303` out.
#[divan::bench(args = [false, true])]
fn to_round_trip(bencher: Bencher, metered: bool) {
    let (mut server, conns, now) = ready_server(2, metered);
    let receipt = receipt_bytes();
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        server.handle_input(now, Input::LaData(conns[0], b"/to user1 hello there\n"));
        drain(&mut server, now);
        server.handle_input(now, Input::LbData(conns[1], &receipt));
        drain(&mut server, now)
    });
}

/// One `/toall` to 1,000 recipients, every one acknowledging.
#[divan::bench(sample_count = 20, args = [false, true])]
fn toall_to_1000(bencher: Bencher, metered: bool) {
    let (mut server, conns, now) = ready_server(1001, metered);
    let receipt = receipt_bytes();
    bencher.counter(ItemsCount::new(1000usize)).bench_local(|| {
        server.handle_input(now, Input::LaData(conns[0], b"/toall meeting at 3pm\n"));
        drain(&mut server, now);
        for &conn in &conns[1..] {
            server.handle_input(now, Input::LbData(conn, &receipt));
        }
        drain(&mut server, now)
    });
}
