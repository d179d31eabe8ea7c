//! The packaging: the man pages and completions in packaging/generated are what the clap
//! definitions make today, the systemd unit is locked down as documented, and (with cargo-deb)
//! the Debian package holds everything and its unit passes `systemd-analyze verify`.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::harness::{temp_path, BIN, CLIENT_BIN};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn generated_dir() -> PathBuf {
    Path::new(ROOT).join("packaging/generated")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn man_pages_and_completions_are_in_step_with_the_options() {
    let dir = temp_path("generated");
    for bin in [BIN, CLIENT_BIN] {
        let status = Command::new(bin)
            .arg("--generate")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "{bin} --generate");
    }
    let fresh = files_in(&dir);
    assert_eq!(fresh, files_in(&generated_dir()));
    for name in &fresh {
        let now = std::fs::read_to_string(dir.join(name)).unwrap();
        let kept = std::fs::read_to_string(generated_dir().join(name)).unwrap();
        assert!(
            now == kept,
            "packaging/generated/{name} is out of date: run `cargo run --bin im-server -- \
             --generate packaging/generated` and `cargo run --bin im-client -- --generate \
             packaging/generated`"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_is_locked_down_and_runs_the_sample_config() {
    let unit =
        std::fs::read_to_string(Path::new(ROOT).join("packaging/im-server.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/im-server --config /etc/simple-im/im-server.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "User=simple-im",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
}

/// Runs `program args`, panicking with its output unless it succeeds; returns standard output.
fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(program);
    command.args(args).current_dir(ROOT);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the .deb into `out` from the binaries this test run built (dev profile, so no second
/// build), and returns its path.
fn build_deb(out: &Path) -> PathBuf {
    // The binaries under test are in <target>/debug/.
    let target = Path::new(BIN).parent().unwrap().parent().unwrap();
    std::fs::create_dir_all(out).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(
        &cargo,
        &[
            "deb",
            "-p",
            "simple-im",
            "--no-build",
            "--profile",
            "dev",
            "--no-strip",
            // The dev profile's binaries are big: xz at its default level took 4 min here.
            "--fast",
            "--output",
            out.to_str().unwrap(),
        ],
        &[("CARGO_TARGET_DIR", target)],
    );
    files_in(out)
        .into_iter()
        .find(|name| name.ends_with(".deb"))
        .map(|name| out.join(name))
        .expect("no .deb written")
}

/// Builds the .deb and checks its control data and its files; and verifies its unit where
/// systemd can.
#[test]
#[ignore = "needs cargo-deb: cargo install cargo-deb"]
fn the_debian_package_holds_everything() {
    let out = temp_path("deb");
    let deb = build_deb(&out);
    let deb_s = deb.to_str().unwrap();

    let info = run("dpkg-deb", &["-I", deb_s], &[]);
    for needle in [
        "Package: simple-im",
        "Depends:",
        "adduser",
        "procps",
        "postinst",
        "conffiles",
    ] {
        assert!(
            info.contains(needle),
            "no {needle:?} in dpkg-deb -I:\n{info}"
        );
    }
    let conffiles = run("dpkg-deb", &["-I", deb_s, "conffiles"], &[]);
    assert!(
        conffiles.contains("/etc/simple-im/im-server.toml"),
        "{conffiles}"
    );

    let contents = run("dpkg-deb", &["-c", deb_s], &[]);
    for path in [
        "./usr/bin/im-server",
        "./usr/bin/im-client",
        "./usr/lib/systemd/system/im-server.service",
        "./etc/simple-im/im-server.toml",
        "./usr/share/doc/simple-im/examples/users.txt",
        "./usr/share/man/man1/im-server.1",
        "./usr/share/man/man1/im-client.1",
        "./usr/share/bash-completion/completions/im-server",
        "./usr/share/bash-completion/completions/im-client",
        "./usr/share/zsh/vendor-completions/_im-server",
        "./usr/share/fish/vendor_completions.d/im-server.fish",
    ] {
        assert!(
            contents.lines().any(|line| line.contains(path)),
            "no {path} in dpkg-deb -c:\n{contents}"
        );
    }

    // What the package installs works together: its im-server loads its sample config.
    let root = out.join("root");
    run("dpkg-deb", &["-x", deb_s, root.to_str().unwrap()], &[]);
    let packaged = root.join("usr/bin/im-server");
    let packaged_s = packaged.to_str().unwrap();
    let config = root.join("etc/simple-im/im-server.toml");
    let users = Path::new(ROOT).join("examples/users.txt");
    let settings = run(
        packaged_s,
        &[
            "--config",
            config.to_str().unwrap(),
            "--check-config",
            "0",
            users.to_str().unwrap(),
        ],
        &[],
    );
    assert!(settings.contains("port = 0\n"), "{settings}");

    // The unit, where systemd can check it: its commands pointed at the package's binary, since
    // /usr/bin/im-server is not installed here (`--root` would want a whole system there).
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
    {
        let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/im-server.service"))
            .unwrap()
            .replace("/usr/bin/im-server", packaged_s);
        let unit_path = out.join("im-server.service");
        std::fs::write(&unit_path, unit).unwrap();
        let verify = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&verify.stderr).into_owned();
        assert!(verify.status.success(), "systemd-analyze verify: {said}");
        // It prints some warnings without failing: none about this unit.
        assert!(
            !said.contains("im-server.service"),
            "systemd-analyze verify: {said}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The package under a real systemd (scripts/systemd-check.sh): a minimal Debian booted with
/// systemd-nspawn, the package installed, the service started, reached over loopback,
/// reloaded after its files changed, and stopped. Five minutes at most, and the script
/// removes everything it made.
#[test]
#[ignore = "needs root, debootstrap and systemd-nspawn"]
fn the_package_runs_under_systemd() {
    let out = temp_path("deb-systemd");
    let deb = build_deb(&out);
    let script = Path::new(ROOT).join("scripts/systemd-check.sh");
    let mut child = Command::new(&script).arg(&deb).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            // SIGTERM first: the script's trap powers the container off and removes it.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(std::time::Duration::from_secs(15));
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&out);
            panic!("scripts/systemd-check.sh took more than 5 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = std::fs::remove_dir_all(&out);
    assert!(status.success(), "scripts/systemd-check.sh: {status}");
}
