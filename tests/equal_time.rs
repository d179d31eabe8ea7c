//! Logins answer in the same time whoever asks: with a hash in the users file, the three kinds
//! of wrong login (an unknown name, a plain-password user, a hashed user) cost one argon2
//! verification each, timed here at the [`PasswordCheck`] level. (In the core's own files a
//! clock may not be read, so this lives here.)

use std::time::{Duration, Instant};

use simple_im_core::users::{hash_password_with, Params, PasswordCheck, Users, Verdict};

/// An argon2id hash of `password` costing `m_cost` KiB and `t_cost` passes: cheaper than
/// `--hash-password`'s, so that many can be timed quickly; the dummy follows whatever the file
/// uses.
fn hash_with(password: &[u8], m_cost: u32, t_cost: u32) -> String {
    let params = Params::new(m_cost, t_cost, 1, None).unwrap();
    hash_password_with(password, b"0123456789abcdef", params).unwrap()
}

fn deferred(verdict: Verdict) -> PasswordCheck {
    match verdict {
        Verdict::Deferred(check) => check,
        Verdict::Settled(_) => panic!("expected an argon2 check"),
    }
}

/// The median time of each kind's wrong login over interleaved runs (each kind first in turn,
/// so that none is always timed on a warm cache).
fn medians(users: &Users, kinds: &[&[u8]; 3], runs: usize) -> [Duration; 3] {
    let mut times = [(); 3].map(|()| Vec::with_capacity(runs));
    for run in 0..runs {
        for kind in (0..3).map(|k| (k + run) % 3) {
            let check = deferred(users.check(kinds[kind], b"wrong-password"));
            let started = Instant::now();
            assert!(!check.run());
            times[kind].push(started.elapsed());
        }
    }
    times.map(|mut runs| {
        runs.sort_unstable();
        runs[runs.len() / 2]
    })
}

/// The medians are within a factor of 2 of the hashed user's (measured within about 20 % on
/// the shared 2-core build machine; the factor leaves room for noise). Without the dummy, the
/// first two would take microseconds against the hash's milliseconds.
#[test]
fn wrong_logins_take_the_same_time_whoever_asks() {
    let hash = hash_with(b"s3cret", 8192, 1);
    let users = Users::parse(format!("jacky {hash}\nbob bob123\n").as_bytes()).unwrap();
    let kinds: [&[u8]; 3] = [b"nobody", b"bob", b"jacky"];
    let medians = medians(&users, &kinds, 31);
    // Shown with --nocapture, to quote the figures.
    eprintln!("median per wrong login: unknown, plain, hashed = {medians:?}");
    let hashed = medians[2].as_secs_f64();
    for (kind, median) in medians.iter().enumerate() {
        let ratio = median.as_secs_f64() / hashed;
        assert!(
            (0.5..=2.0).contains(&ratio),
            "{}: median {median:?} against the hashed user's {:?}",
            kinds[kind].escape_ascii(),
            medians[2]
        );
    }
}

/// The dummy follows the file: with a costlier hash, unknown names cost more too.
#[test]
fn the_dummy_costs_what_the_files_hash_costs() {
    let cheap = Users::parse(format!("jacky {}\n", hash_with(b"a", 1024, 1)).as_bytes()).unwrap();
    let costly = Users::parse(format!("jacky {}\n", hash_with(b"a", 8192, 2)).as_bytes()).unwrap();
    let time = |users: &Users| {
        let mut runs: Vec<Duration> = (0..11)
            .map(|_| {
                let check = deferred(users.check(b"nobody", b"pw"));
                let started = Instant::now();
                assert!(!check.run());
                started.elapsed()
            })
            .collect();
        runs.sort_unstable();
        runs[5]
    };
    let (cheap, costly) = (time(&cheap), time(&costly));
    // 16 times the work (8 times the memory, twice the passes); at least 4 times the time.
    assert!(costly > cheap * 4, "{costly:?} against {cheap:?}");
}
