//! The login throttle and the password-check queue on a manual clock: a flooding address gets
//! at most its budget, one account at most its own however many addresses guess, a quiet or
//! trusted address is never refused, memory stays bounded whatever an attacker varies, and the
//! hub answers a throttled login `102` without a check, for known and unknown names alike.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use simple_im_core::server::{
    Budget, CheckQueue, ConnId, Input, LoginThrottle, Output, Server, ServerConfig, Source,
    ThrottleConfig, Throttled,
};
use simple_im_core::users::{hash_password_with, Params, PasswordCheck, Users, Verdict};

const SECOND: Duration = Duration::from_secs(1);

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

/// Budgets small enough for a schedule to spend them many times over.
fn small() -> ThrottleConfig {
    ThrottleConfig {
        per_address: Some(Budget::new(6, SECOND * 2)),
        per_address_account: Some(Budget::new(3, SECOND * 5)),
        per_account: Some(Budget::new(4, SECOND * 3)),
        trust: Duration::from_secs(3600),
        reconnects: Some(Budget::new(5, SECOND)),
        max_tracked: 64,
    }
}

/// The most a bucket lets through in `span`: its burst, then one per period begun.
fn bound(budget: Budget, span: Duration) -> usize {
    budget.burst as usize + (span.as_nanos() / budget.period.as_nanos()) as usize + 1
}

/// One login attempt of a schedule: when (ms after the start), from which address, as whom,
/// and whether the password is right.
#[derive(Clone, Debug)]
struct Try {
    at_ms: u64,
    address: u8,
    account: u8,
    right: bool,
}

fn schedule(addresses: u8, accounts: u8) -> impl Strategy<Value = Vec<Try>> {
    prop::collection::vec(
        (
            0u64..200,
            0..addresses,
            0..accounts,
            prop::bool::weighted(0.1),
        ),
        1..400,
    )
    .prop_map(|steps| {
        let mut at_ms = 0;
        steps
            .into_iter()
            .map(|(gap, address, account, right)| {
                at_ms += gap;
                Try {
                    at_ms,
                    address,
                    account,
                    right,
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/throttle.txt"
        )))),
        ..ProptestConfig::default()
    })]

    /// Whatever the schedule, the checks that fail are bounded per address and per account,
    /// whatever the number of addresses taking part. Not counted: an address's failures for an
    /// account that it then logs in as (a person's typos), and those of an address exempt by
    /// trust, which is exempt only until it fails.
    #[test]
    fn failed_checks_stay_within_every_budget(tries in schedule(12, 3)) {
        let config = small();
        let mut throttle = LoginThrottle::new(config.clone());
        let start = Instant::now();
        let mut failed_by_address: HashMap<u8, usize> = HashMap::new();
        let mut failed_untrusted_by_account: HashMap<u8, usize> = HashMap::new();
        let mut trusted: HashMap<(u8, u8), bool> = HashMap::new();
        // Each pair's failures since its last success: (counted for the address, for the account).
        let mut typos: HashMap<(u8, u8), (usize, usize)> = HashMap::new();
        let mut end = start;
        for t in &tries {
            let now = start + Duration::from_millis(t.at_ms);
            end = now;
            let name = [b'u', t.account];
            let Ok(attempt) = throttle.start(now, v4(t.address), &name) else { continue };
            let pair = (t.address, t.account);
            if t.right {
                throttle.succeeded(now, attempt);
                trusted.insert(pair, true);
                let (by_address, by_account) = typos.remove(&pair).unwrap_or_default();
                *failed_by_address.entry(t.address).or_default() -= by_address;
                *failed_untrusted_by_account.entry(t.account).or_default() -= by_account;
                continue;
            }
            throttle.failed(now, attempt);
            let typo = typos.entry(pair).or_default();
            *failed_by_address.entry(t.address).or_default() += 1;
            typo.0 += 1;
            if !trusted.insert(pair, false).unwrap_or(false) {
                *failed_untrusted_by_account.entry(t.account).or_default() += 1;
                typo.1 += 1;
            }
        }
        let span = end - start;
        for (&address, &failed) in &failed_by_address {
            prop_assert!(failed <= bound(config.per_address.unwrap(), span),
                "address {address}: {failed} failed checks in {span:?}");
        }
        for (&account, &failed) in &failed_untrusted_by_account {
            prop_assert!(failed <= bound(config.per_account.unwrap(), span),
                "account {account}: {failed} failed checks from 12 addresses in {span:?}");
        }
        prop_assert!(throttle.tracked() <= 6 * config.max_tracked);
    }

    /// A flood from many addresses against one account leaves an address that logs in as
    /// itself, or as that account from an address that logged in before, never refused.
    #[test]
    fn quiet_and_trusted_addresses_are_never_refused(
        flood in prop::collection::vec((0u64..50, 2u8..40), 1..500),
    ) {
        let mut throttle = LoginThrottle::new(ThrottleConfig::default());
        let start = Instant::now();
        let real = v4(1);
        // The real alice logged in from her own address before the flood began.
        let first = throttle.start(start, real, b"alice").expect("a first login passes");
        throttle.succeeded(start, first);
        let mut at_ms = 0;
        for (index, (gap, address)) in flood.into_iter().enumerate() {
            at_ms += gap;
            let now = start + Duration::from_millis(at_ms);
            if let Ok(attempt) = throttle.start(now, v4(address), b"alice") {
                throttle.failed(now, attempt);
            }
            if index % 25 == 0 {
                let alice = throttle.start(now, real, b"alice");
                prop_assert!(alice.is_ok(), "the real alice refused: {alice:?}");
                throttle.succeeded(now, alice.unwrap());
                // Someone else, from an address of their own, logging in as themselves.
                let bob = throttle.start(now, v4(200), b"bob");
                prop_assert!(bob.is_ok(), "bob refused: {bob:?}");
                throttle.succeeded(now, bob.unwrap());
            }
        }
    }

    /// Memory stays bounded whatever the attacker varies: addresses (IPv4 and IPv6), names.
    #[test]
    fn memory_is_bounded_whatever_varies(
        tries in prop::collection::vec((any::<u128>(), any::<bool>(), any::<u32>(), 0u64..5), 1..2000),
    ) {
        let config = ThrottleConfig { max_tracked: 32, ..small() };
        let mut throttle = LoginThrottle::new(config);
        let start = Instant::now();
        let mut at_ms = 0;
        for (bits, six, name, gap) in tries {
            at_ms += gap;
            let now = start + Duration::from_millis(at_ms);
            let ip = match six {
                true => IpAddr::V6(Ipv6Addr::from(bits)),
                false => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            };
            if throttle.admit(now, ip).is_ok() {
                throttle.ended_without_login(now, ip);
            }
            if let Ok(attempt) = throttle.start(now, ip, name.to_string().as_bytes()) {
                match name % 7 {
                    0 => throttle.succeeded(now, attempt),
                    _ => throttle.failed(now, attempt),
                }
            }
            throttle.should_log(now, ip);
            prop_assert!(throttle.tracked() <= 6 * 32, "{} entries", throttle.tracked());
        }
    }

    /// The password-check queue runs at most N at once and serves addresses in turn: a check
    /// queued by a quiet address starts before the flooding address's next N.
    #[test]
    fn checks_run_n_at_once_and_in_turn_by_address(
        n in 1usize..4,
        flood in 1usize..60,
        others in 1u8..6,
    ) {
        let check = a_check();
        let mut queue = CheckQueue::new(n, 1000);
        let mut conn = 0;
        let mut next_conn = || { conn += 1; ConnId(conn) };
        for _ in 0..flood {
            prop_assert!(queue.push(v4(1), next_conn(), check.clone()).is_ok());
        }
        let mut quiet = Vec::new();
        for address in 0..others {
            let id = next_conn();
            quiet.push(id);
            prop_assert!(queue.push(v4(100 + address), id, check.clone()).is_ok());
        }
        let mut started = Vec::new();
        while let Some((id, _)) = queue.start_next() {
            started.push(id);
        }
        prop_assert_eq!(started.len(), n.min(flood + others as usize));
        // Finish them one by one, starting the next each time, and see where the quiet ones go.
        let mut order = started.clone();
        let mut running = started;
        while let Some(done) = running.pop() {
            prop_assert!(queue.finished(done));
            prop_assert!(!queue.finished(done), "a result counted twice");
            while let Some((id, _)) = queue.start_next() {
                running.push(id);
                order.push(id);
            }
            prop_assert!(queue.running() <= n);
        }
        prop_assert_eq!(order.len(), flood + others as usize);
        for id in quiet {
            let position = order.iter().position(|&x| x == id).unwrap();
            prop_assert!(position <= (others as usize + 1) * 2, "quiet {id:?} started {position}th");
        }
    }
}

fn a_check() -> PasswordCheck {
    let params = Params::new(64, 1, 1, None).unwrap();
    let hash = hash_password_with(b"pw", b"0123456789abcdef", params).unwrap();
    let users = Users::parse(format!("a {hash}\n").as_bytes()).unwrap();
    match users.check(b"a", b"pw") {
        Verdict::Deferred(check) => check,
        Verdict::Settled(_) => panic!("a hashed password is checked off the loop"),
    }
}

#[test]
fn ipv6_addresses_count_by_their_64() {
    let same_a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let same_b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(Source::of(same_a), Source::of(same_b));
    assert_ne!(Source::of(same_a), Source::of(other));
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(Source::of(mapped), Source::of(v4(1)));

    let config = ThrottleConfig {
        per_address: Some(Budget::new(2, Duration::from_secs(60))),
        ..ThrottleConfig::off()
    };
    let mut throttle = LoginThrottle::new(config);
    let now = Instant::now();
    for (ip, name) in [(same_a, "x"), (same_b, "y")] {
        let attempt = throttle.start(now, ip, name.as_bytes()).unwrap();
        throttle.failed(now, attempt);
    }
    assert_eq!(throttle.start(now, same_a, b"z"), Err(Throttled::Address));
    assert!(throttle.start(now, other, b"z").is_ok());
}

#[test]
fn buckets_refill_one_token_per_period() {
    let config = ThrottleConfig {
        per_account: Some(Budget::new(2, Duration::from_secs(10))),
        ..ThrottleConfig::off()
    };
    let mut throttle = LoginThrottle::new(config);
    let start = Instant::now();
    for address in 0..2 {
        let attempt = throttle.start(start, v4(address), b"alice").unwrap();
        throttle.failed(start, attempt);
    }
    let at = |secs| start + Duration::from_secs(secs);
    assert_eq!(
        throttle.start(at(0), v4(9), b"alice"),
        Err(Throttled::Account)
    );
    assert_eq!(
        throttle.start(at(9), v4(9), b"alice"),
        Err(Throttled::Account)
    );
    let attempt = throttle.start(at(10), v4(9), b"alice").unwrap();
    throttle.failed(at(10), attempt);
    assert_eq!(
        throttle.start(at(19), v4(9), b"alice"),
        Err(Throttled::Account)
    );
    // A right password gives its own token back.
    let attempt = throttle.start(at(20), v4(9), b"alice").unwrap();
    throttle.succeeded(at(20), attempt);
    assert!(throttle.start(at(20), v4(8), b"alice").is_ok());
}

#[test]
fn reconnects_count_only_connections_that_never_logged_in() {
    let config = ThrottleConfig {
        reconnects: Some(Budget::new(3, Duration::from_secs(10))),
        ..ThrottleConfig::off()
    };
    let mut throttle = LoginThrottle::new(config);
    let now = Instant::now();
    for _ in 0..3 {
        assert_eq!(throttle.admit(now, v4(1)), Ok(()));
        throttle.ended_without_login(now, v4(1));
    }
    assert_eq!(throttle.admit(now, v4(1)), Err(Throttled::Reconnects));
    assert_eq!(throttle.admit(now, v4(2)), Ok(()));
    assert_eq!(throttle.admit(now + Duration::from_secs(10), v4(1)), Ok(()));
}

/// The hub's side: every output drained.
fn drain(server: &mut Server) -> Vec<Output> {
    std::iter::from_fn(|| server.poll_output()).collect()
}

fn la_lines(outputs: &[Output], conn: ConnId) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::SendLa(c, bytes) if *c == conn => Some(text(bytes)),
            _ => None,
        })
        .collect()
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

/// Logs `user` in on a new connection from `ip`: the answer, and whether a password check ran.
fn login(
    server: &mut Server,
    now: Instant,
    ip: IpAddr,
    user: &str,
    password: &str,
) -> (String, bool) {
    let conn = server.accept(now, SocketAddr::new(ip, 40000));
    drain(server);
    let line = format!("/login {user} {password}\n");
    server.handle_input(now, Input::LaData(conn, line.as_bytes()));
    let mut outputs = drain(server);
    let mut checked = false;
    // Hashed passwords: run the checks the hub hands out, as a runtime would.
    while let Some(index) = outputs
        .iter()
        .position(|o| matches!(o, Output::CheckPassword(..)))
    {
        let Output::CheckPassword(c, check) = outputs.remove(index) else {
            unreachable!()
        };
        checked = true;
        server.handle_input(now, Input::PasswordChecked(c, check.run()));
        outputs.extend(drain(server));
    }
    server.handle_input(now, Input::LaClosed(conn));
    drain(server);
    (la_lines(&outputs, conn).join("|"), checked)
}

#[test]
fn a_throttled_login_is_102_unchecked_and_unknown_names_fare_as_known_ones() {
    let params = Params::new(64, 1, 1, None).unwrap();
    let hash = hash_password_with(b"s3cret", b"0123456789abcdef", params).unwrap();
    let users = Users::parse(format!("alice {hash}\nbob pw\n").as_bytes()).unwrap();
    let mut server = Server::new(users, ServerConfig::default());
    let now = Instant::now();
    let mut answers = HashMap::new();
    for name in ["alice", "nobody"] {
        let mut seen = Vec::new();
        for address in 0..30 {
            seen.push(login(&mut server, now, v4(address), name, "guess"));
        }
        answers.insert(name, seen);
    }
    assert_eq!(
        answers["alice"], answers["nobody"],
        "the throttle tells names apart"
    );
    // The default account budget: ten checks at once, then 102 unchecked.
    let failed = (String::from("102 Authentication failed"), true);
    let throttled = (String::from("102 Authentication failed"), false);
    let mut expected = vec![failed; 10];
    expected.extend(vec![throttled.clone(); 20]);
    assert_eq!(answers["alice"], expected);
    // The right password from a new address while the account's budget is spent: 102.
    assert_eq!(
        login(&mut server, now, v4(99), "alice", "s3cret"),
        throttled
    );
    // Ten seconds later one token is back: the right password gets in.
    let later = now + Duration::from_secs(10);
    assert_eq!(
        login(&mut server, later, v4(99), "alice", "s3cret"),
        (String::from("101 Authentication successful"), true)
    );
}

#[test]
fn bulk_logins_from_one_address_and_a_typo_then_the_right_password_pass() {
    let mut text = String::new();
    for user in 0..300 {
        text.push_str(&format!("user{user} pw{user}\n"));
    }
    let users = Users::parse(text.as_bytes()).unwrap();
    let mut server = Server::new(users, ServerConfig::default());
    let now = Instant::now();
    let classroom = v4(7);
    let mut conns = Vec::new();
    for user in 0..300 {
        let conn = server.accept(now, SocketAddr::new(classroom, 40000 + user));
        let typo = format!("/login user{user} pw-typo\n/login user{user} pw{user}\n");
        server.handle_input(now, Input::LaData(conn, typo.as_bytes()));
        conns.push(conn);
    }
    let outputs = drain(&mut server);
    for conn in conns {
        assert_eq!(
            la_lines(&outputs, conn),
            ["102 Authentication failed", "101 Authentication successful"],
            "{conn}"
        );
    }
}

#[test]
fn at_most_n_argon2_checks_are_out_at_once() {
    let params = Params::new(64, 1, 1, None).unwrap();
    let hash = hash_password_with(b"s3cret", b"0123456789abcdef", params).unwrap();
    let mut text = format!("alice {hash}\n");
    for user in 0..20 {
        text.push_str(&format!("user{user} pw{user}\n"));
    }
    let users = Users::parse(text.as_bytes()).unwrap();
    let config = ServerConfig {
        password_checks: 3,
        ..ServerConfig::default()
    };
    let mut server = Server::new(users, config);
    let now = Instant::now();
    let mut out = Vec::new();
    for user in 0..20u8 {
        let conn = server.accept(now, SocketAddr::new(v4(user), 40000));
        let line = format!("/login user{user} pw{user}\n");
        server.handle_input(now, Input::LaData(conn, line.as_bytes()));
        out.extend(drain(&mut server));
    }
    let checks: Vec<_> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::CheckPassword(conn, check) => Some((conn, check)),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), 3, "three out at once");
    // Each result lets the next one out.
    let (conn, check) = &checks[0];
    server.handle_input(now, Input::PasswordChecked(*conn, check.run()));
    let next = drain(&mut server);
    assert_eq!(
        next.iter()
            .filter(|o| matches!(o, Output::CheckPassword(..)))
            .count(),
        1
    );
    assert!(la_lines(&next, *conn) == ["101 Authentication successful"]);
}

// --- A reload (SIGHUP) with new budgets ---

#[test]
fn a_reload_keeps_what_each_bucket_lacks_under_its_new_budget() {
    let hour = Duration::from_secs(3600);
    let budget = |burst| ThrottleConfig {
        per_address: Some(Budget::new(burst, hour)),
        ..ThrottleConfig::off()
    };
    let mut throttle = LoginThrottle::new(budget(3));
    let now = Instant::now();
    let fail = |throttle: &mut LoginThrottle, ip| {
        let attempt = throttle.start(now, ip, b"x")?;
        throttle.failed(now, attempt);
        Ok::<(), Throttled>(())
    };
    for _ in 0..3 {
        fail(&mut throttle, v4(1)).unwrap();
    }
    assert_eq!(fail(&mut throttle, v4(1)), Err(Throttled::Address));
    // Five now: the three spent stay spent, two are left.
    throttle.reconfigure(now, budget(5));
    for _ in 0..2 {
        fail(&mut throttle, v4(1)).unwrap();
    }
    assert_eq!(fail(&mut throttle, v4(1)), Err(Throttled::Address));
    // Lowered below what was spent: empty, not refilled; another address still has it all.
    throttle.reconfigure(now, budget(2));
    assert_eq!(fail(&mut throttle, v4(1)), Err(Throttled::Address));
    for _ in 0..2 {
        fail(&mut throttle, v4(2)).unwrap();
    }
    assert_eq!(fail(&mut throttle, v4(2)), Err(Throttled::Address));
    // Each bucket refills at the new pace: one token an hour.
    let later = now + hour;
    assert!(throttle.start(later, v4(1), b"x").is_ok());
    // Off, everything passes; on again, every bucket starts full.
    throttle.reconfigure(now, ThrottleConfig::off());
    fail(&mut throttle, v4(2)).unwrap();
    throttle.reconfigure(now, budget(1));
    fail(&mut throttle, v4(2)).unwrap();
    assert_eq!(fail(&mut throttle, v4(2)), Err(Throttled::Address));
}

#[test]
fn a_reload_that_ends_trust_charges_the_accounts_budget_again() {
    let config = ThrottleConfig {
        // A token back only after a day: nothing refills within the test.
        per_account: Some(Budget::new(1, Duration::from_secs(86_400))),
        trust: Duration::from_secs(3600),
        ..ThrottleConfig::off()
    };
    let mut throttle = LoginThrottle::new(config.clone());
    let now = Instant::now();
    let attempt = throttle.start(now, v4(1), b"alice").unwrap();
    throttle.succeeded(now, attempt);
    // Someone else spends the account's budget; the trusted address is exempt.
    let attempt = throttle.start(now, v4(2), b"alice").unwrap();
    throttle.failed(now, attempt);
    assert_eq!(
        throttle.start(now, v4(2), b"alice"),
        Err(Throttled::Account)
    );
    let attempt = throttle.start(now, v4(1), b"alice").unwrap();
    throttle.cancel(now, attempt);
    // A longer trust keeps it; none at all ends it.
    let longer = ThrottleConfig {
        trust: Duration::from_secs(7200),
        ..config.clone()
    };
    throttle.reconfigure(now, longer);
    let later = now + Duration::from_secs(5000);
    let attempt = throttle.start(later, v4(1), b"alice").unwrap();
    throttle.cancel(later, attempt);
    let none = ThrottleConfig {
        trust: Duration::ZERO,
        ..config
    };
    throttle.reconfigure(now, none);
    assert_eq!(
        throttle.start(now, v4(1), b"alice"),
        Err(Throttled::Account)
    );
}

#[test]
fn a_reload_with_more_checks_starts_those_waiting() {
    let params = Params::new(64, 1, 1, None).unwrap();
    let hash = hash_password_with(b"s3cret", b"0123456789abcdef", params).unwrap();
    let users = Users::parse(format!("alice {hash}\n").as_bytes()).unwrap();
    let config = ServerConfig {
        password_checks: 1,
        ..ServerConfig::default()
    };
    let mut server = Server::new(users, config.clone());
    let now = Instant::now();
    let checks = |outputs: Vec<Output>| {
        outputs
            .iter()
            .filter(|o| matches!(o, Output::CheckPassword(..)))
            .count()
    };
    let mut started = 0;
    for address in 0..4u8 {
        let conn = server.accept(now, SocketAddr::new(v4(address), 40000));
        server.handle_input(now, Input::LaData(conn, b"/login alice s3cret\n"));
        started += checks(drain(&mut server));
    }
    assert_eq!(started, 1);
    let more = ServerConfig {
        password_checks: 3,
        ..config
    };
    server.reconfigure(now, more);
    assert_eq!(checks(drain(&mut server)), 2);
}
