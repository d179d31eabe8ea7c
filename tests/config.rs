//! `im-server --config FILE`, and the sample that ships (packaging/im-server.toml) kept in step
//! with the options: every long option is in it with the default `--help` shows, it loads, and
//! a server started with it behaves as one started with the same flags. Relative paths in the
//! file are relative to the file's directory, those on the command line to the current one.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::harness::{run_to_end, temp_path, Runtime, ServerProcess, TempFile, BIN, USERS};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/im-server.toml");

/// The options that are actions, not settings: never in the file.
const ACTIONS: &[&str] = &[
    "help",
    "version",
    "hash-password",
    "config",
    "check-config",
    "make-cert",
    "out",
];

fn run(args: &[&str]) -> (i32, String, String) {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = run_to_end(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--help`'s long options, each with its default if it shows one.
fn options_in_help() -> BTreeMap<String, Option<String>> {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    let mut options = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // `      --long <VALUE>` or `  -s, --long`; descriptions are indented further.
        let indent = line.len() - trimmed.len();
        let starts_option = indent <= 6 && trimmed.starts_with('-') && trimmed.contains("--");
        if starts_option {
            let long = trimmed
                .split_whitespace()
                .find_map(|word| word.strip_prefix("--"))
                .unwrap()
                .trim_end_matches(',')
                .to_owned();
            current = Some(long.clone());
            options.insert(long, None);
        }
        if let (Some(long), Some(at)) = (&current, line.find("[default: ")) {
            let rest = &line[at + "[default: ".len()..];
            let default = rest[..rest.find(']').unwrap()].to_owned();
            options.insert(long.clone(), Some(default));
        }
    }
    for action in ACTIONS {
        options.remove(*action);
    }
    assert!(options.len() > 20, "{options:?}");
    options
}

/// The sample's `key = value` lines, commented out or not.
fn sample_lines() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (key, value) = line.split_once(" = ")?;
            let key = key.trim();
            if key.contains(' ') {
                return None;
            }
            let value = value.split(" #").next().unwrap().trim();
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect()
}

#[test]
fn the_sample_has_every_option_with_its_default() {
    let sample = sample_lines();
    for (option, default) in options_in_help() {
        let Some(value) = sample.get(&option) else {
            panic!("--{option} is not in {SAMPLE}");
        };
        if let Some(default) = default {
            assert_eq!(value, &default, "--{option}'s default in {SAMPLE}");
        }
    }
    for key in sample.keys() {
        let known = options_in_help().contains_key(key) || ["port", "users-file"].contains(&&**key);
        assert!(known, "{key} in {SAMPLE} is no option of im-server");
    }
}

/// The sample with each commented-out default set for real, the users file given.
fn sample_uncommented() -> TempFile {
    let defaults = options_in_help();
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let setting = line.trim_start_matches("# ");
        let key = setting.split(" = ").next().unwrap_or("");
        if defaults.get(key).is_some_and(Option::is_some) && setting.contains(" = ") {
            out += setting;
        } else {
            out += line;
        }
        out.push('\n');
    }
    TempFile::new("im-server.toml", out.as_bytes())
}

#[test]
fn the_sample_loads_and_means_the_defaults() {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let users = users.path().to_str().unwrap();
    let (code, plain, err) = run(&["4000", users, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    let (code, sample, err) = run(&["--config", SAMPLE, "4000", users, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sample, plain);
    let all = sample_uncommented();
    let all = all.path().to_str().unwrap();
    let (code, sample, err) = run(&["--config", all, "4000", users, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sample, plain);
    // What --check-config prints is itself a file that means the same.
    let printed = TempFile::new("printed.toml", plain.as_bytes());
    let printed = printed.path().to_str().unwrap();
    let (code, again, err) = run(&["--config", printed, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, plain);
}

#[test]
fn the_file_sets_options_and_the_command_line_wins() {
    let users = TempFile::new("users.txt", USERS.as_bytes());
    let text = format!(
        "port = 4001\nusers-file = {:?}\nmax-line = 100\nthrottle-account = \"off\"\nreuse-port = true\n",
        users.path()
    );
    let file = TempFile::new("set.toml", text.as_bytes());
    let file = file.path().to_str().unwrap();
    let (code, out, err) = run(&["--config", file, "--check-config", "--max-line", "7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("port = 4001\n"), "{out}");
    assert!(out.contains("max-line = 7\n"), "{out}");
    assert!(out.contains("throttle-account = \"off\"\n"), "{out}");
    assert!(out.contains("reuse-port = true\n"), "{out}");
    let (code, out, _) = run(&["--config", file, "4002", "--check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("port = 4002\n"), "{out}");
}

#[test]
fn a_bad_line_stops_the_server_with_its_number() {
    for (text, line, reason) in [
        ("port = 4000\n\nmax-lines = 3\n", 3, "unknown key"),
        ("port = 4000\nmax-line = 1\n", 2, "--max-line"),
        ("ack-timeout = \"0s\"\n", 1, "--ack-timeout"),
        ("throttle-address = \"10\"\n", 1, "BURST/PERIOD"),
        ("\nbind = \"nowhere\"\n", 2, "--bind"),
        ("reuse-port = 1\n", 1, "true or false"),
        ("hash-password = true\n", 1, "unknown key"),
        ("port = \n", 1, ""),
    ] {
        let file = TempFile::new("bad.toml", text.as_bytes());
        let shown = file.path().display().to_string();
        let (code, _, err) = run(&["--config", &shown, "0", "x"]);
        assert_eq!(code, 2, "{text:?}: {err}");
        let expected = format!("im-server: {shown}: line {line}: ");
        assert!(err.starts_with(&expected), "{text:?}: {err}");
        assert!(err.contains(reason), "{text:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (code, _, err) = run(&["--config", "/nonexistent/im-server.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("im-server: /nonexistent/im-server.toml: "),
        "{err}"
    );
}

/// A server started with the sample's settings (the port and users file on the command line)
/// serves as usual.
#[test]
fn a_server_started_with_the_sample_logs_in() {
    assert!(Path::new(SAMPLE).exists());
    let sample = sample_uncommented();
    let config = sample.path().to_str().unwrap();
    let server = ServerProcess::start(Runtime::Smol, USERS, &["--config", config]);
    let mut client = server.ready("jacky", "12345");
    assert_eq!(client.request("/list"), "301 jacky\n");
}

/// A directory of the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = temp_path(tag);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `im-server args` run in `dir`: its exit code, standard output and error.
fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn relative_paths_in_the_file_are_relative_to_the_files_directory() {
    let etc = TempDir::new("etc");
    let elsewhere = TempDir::new("cwd");
    std::fs::create_dir_all(etc.0.join("tls")).unwrap();
    std::fs::write(etc.0.join("users.txt"), USERS).unwrap();
    let text = "port = 0\nbind = \"127.0.0.1\"\nusers-file = \"users.txt\"\n\
                tls-cert = \"tls/cert.pem\"\ntls-key = \"/abs/key.pem\"\n";
    std::fs::write(etc.0.join("im-server.toml"), text).unwrap();
    let config = etc.0.join("im-server.toml");
    let config = config.to_str().unwrap();

    let (code, out, err) = run_in(&elsewhere.0, &["--config", config, "--check-config"]);
    assert_eq!(code, 0, "{err}");
    let at = |name: &str| etc.0.join(name).display().to_string();
    assert!(
        out.contains(&format!("users-file = {:?}\n", at("users.txt"))),
        "{out}"
    );
    assert!(
        out.contains(&format!("tls-cert = {:?}\n", at("tls/cert.pem"))),
        "{out}"
    );
    assert!(out.contains("tls-key = \"/abs/key.pem\"\n"), "{out}");

    // The file named relative to the current directory: the same.
    let (code, out, err) = run_in(&etc.0, &["--config", "im-server.toml", "--check-config"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("users-file = {:?}\n", at("users.txt"))),
        "{out}"
    );

    // On the command line a path is the current directory's, as anywhere.
    std::fs::write(elsewhere.0.join("mine.txt"), USERS).unwrap();
    let line = ["--config", config, "0", "mine.txt", "--check-config"];
    let (code, out, err) = run_in(&elsewhere.0, &line);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("users-file = \"mine.txt\"\n"), "{out}");
    let (code, _, err) = run_in(&etc.0, &line);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read mine.txt"), "{err}");

    // A server started elsewhere finds its accounts next to its file.
    let text = "port = 0\nbind = \"127.0.0.1\"\nusers-file = \"users.txt\"\n";
    std::fs::write(etc.0.join("im-server.toml"), text).unwrap();
    let mut command = Command::new(BIN);
    command.args(["--config", config]).current_dir(&elsewhere.0);
    let server = ServerProcess::spawn(command, None);
    let mut client = server.ready("jacky", "12345");
    assert_eq!(client.request("/list"), "301 jacky\n");
}
