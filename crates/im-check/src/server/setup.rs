//! docs/protocol.md §5–§6, where im-check starts the server itself (`--spawn`, `grade`): the
//! users file it reads, the line it prints once it listens, and the command lines it refuses.
//! Each check starts servers of its own, with a users file or arguments of its own; against a
//! server someone else started, they are skipped.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use simple_im_core::protocol::Response;

use super::lines::login_request;
use super::peer::{free_port, listener_on, Launch, Listener};
use super::{Account, Check, Ctx, QUIET};
use crate::outcome::{escape, note, show_duration, Failure, Got, Outcome, Problem};
use crate::process::{group_command, kill_group, spawn_group};
use crate::wire::remaining;

pub(super) const CHECKS: &[Check] = &[
    Check::new(
        "users-file-format",
        "the users file's comments, empty lines and \\r\\n line ends are skipped (needs --spawn)",
        users_file_format,
    ),
    Check::new(
        "users-file-errors",
        "a users file line that is not two tokens, or a user given twice: exit code 2 and an \
         error naming the file and the line (needs --spawn)",
        users_file_errors,
    ),
    Check::new(
        "passwords-not-logged",
        "no password, right or wrong, appears in what the server prints (needs --spawn)",
        passwords_not_logged,
    ),
    Check::new(
        "listening-line",
        "started on port 0, the server's first line is `listening on <ip>:<port>` with the \
         port it really listens on (needs --spawn)",
        listening_line,
    ),
    Check::new(
        "bad-arguments-exit-2",
        "a bad port or option: a one-line error and exit code 2 (needs --spawn)",
        bad_arguments_exit_2,
    ),
    Check::new(
        "help-lists-options",
        "--help exits 0 and names every option of the protocol (needs --spawn)",
        help_lists_options,
    ),
];

/// The options of the protocol (§6), each of which `--help` must explain.
const OPTIONS: &[&str] = &[
    "--bind",
    "--ack-timeout",
    "--connect-timeout",
    "--login-timeout",
    "--max-login-failures",
    "--max-line",
    "--max-queue",
];

/// How the server is started, or SKIP: these checks start servers of their own.
fn launch(ctx: &Ctx) -> Result<&Launch, Problem> {
    ctx.config.launch.as_ref().ok_or_else(|| {
        Problem::Skip(
            "checks how the server starts, so only where im-check starts it (--spawn)".into(),
        )
    })
}

/// A folder for the users files a check writes, removed when dropped.
fn scratch() -> Result<tempfile::TempDir, Failure> {
    tempfile::Builder::new()
        .prefix("im-check-setup-")
        .tempdir()
        .map_err(|error| Failure::new(format!("cannot make a temporary folder: {error}")))
}

/// Writes `text` to `dir/users.txt` and notes it in the transcript.
fn users_file(ctx: &Ctx, dir: &Path, text: &[u8]) -> Result<PathBuf, Failure> {
    let path = dir.join("users.txt");
    std::fs::write(&path, text)
        .map_err(|error| Failure::new(format!("cannot write {}: {error}", path.display())))?;
    note(
        &ctx.transcript,
        format!("wrote {} with {}", path.display(), escape(text)),
    );
    Ok(path)
}

/// A server a check started: its output, kept apart, and its process group, killed on drop.
struct Started {
    child: Child,
    group: i32,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Started {
    /// Starts the server's command with `port` and `users` filled in and `extra` after it.
    fn start(
        ctx: &Ctx,
        launch: &Launch,
        users: &Path,
        port: &str,
        extra: &[&str],
    ) -> Result<Started, Failure> {
        let users = users.to_string_lossy().into_owned();
        let dir = launch.dir.to_string_lossy().into_owned();
        let values = [
            ("port", port),
            ("users", users.as_str()),
            ("dir", dir.as_str()),
        ];
        let mut argv = launch
            .wrap
            .as_ref()
            .map(|wrap| wrap.fill(&values))
            .unwrap_or_default();
        argv.extend(launch.command.fill(&values));
        argv.extend(extra.iter().map(Into::into));
        let shown: Vec<String> = argv
            .iter()
            .map(|word| word.to_string_lossy().into_owned())
            .collect();
        note(
            &ctx.transcript,
            format!("started the server as {}", shown.join(" ")),
        );
        let mut command =
            group_command(&argv).ok_or_else(|| Failure::new("the server command is empty"))?;
        command
            .current_dir(&launch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_group(&mut command)
            .map_err(|error| Failure::new(format!("cannot start the server: {error}")))?;
        let group = i32::try_from(child.id()).unwrap_or(-1);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(drain(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(drain(pipe, Arc::clone(&stderr)));
        }
        Ok(Started {
            child,
            group,
            stdout,
            stderr,
            readers,
        })
    }

    /// What the server printed on standard output so far.
    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// What the server printed on standard error so far.
    fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Its exit status, if it exits before `until`.
    fn exited_by(&mut self, until: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if remaining(until).is_zero() {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until a process of the server's group listens on `port`, or fails with why not.
    fn listening(&mut self, port: u16, launch: &Launch) -> Result<(), Failure> {
        let until = Instant::now() + launch.start_timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Failure::new(format!(
                    "the server exited ({status}) before it listened on port {port}; it printed {}",
                    self.all_output(QUIET)
                )));
            }
            if listener_on(port, self.group) == Listener::Ours {
                return Ok(());
            }
            if remaining(until).is_zero() {
                return Err(Failure::new(format!(
                    "the server did not listen on port {port} within {}",
                    show_duration(launch.start_timeout)
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the server and returns all it printed, standard output then standard error.
    fn all_output(&mut self, settle: Duration) -> String {
        kill_group(&mut self.child);
        let until = Instant::now() + settle;
        while self.readers.iter().any(|reader| !reader.is_finished()) && !remaining(until).is_zero()
        {
            thread::sleep(Duration::from_millis(10));
        }
        escape(&[self.stdout(), self.stderr()].concat())
    }
}

/// Reads `pipe` to its end into `sink`, on a thread of its own.
fn drain(
    mut pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk) {
            if let Ok(mut kept) = sink.lock() {
                // A server that prints without end is cut off, not kept whole.
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
}

impl Drop for Started {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The checks' own view of a server started on `port` with `accounts`.
fn own_ctx(ctx: &Ctx, port: u16, accounts: Vec<Account>) -> Ctx {
    let mut config = (*ctx.config).clone();
    config.addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
    config.accounts = accounts;
    Ctx {
        config: Arc::new(config),
        deadline: ctx.deadline,
        transcript: Arc::clone(&ctx.transcript),
    }
}

fn account(name: &[u8], password: &[u8]) -> Account {
    Account {
        name: name.to_vec(),
        password: password.to_vec(),
    }
}

/// A free port of 127.0.0.1, as a failure of the check if there is none.
fn port() -> Result<u16, Failure> {
    free_port().map_err(Failure::new)
}

/// `account` logs in on the server `own` describes, and gets exactly `expected`.
fn expect_login(own: &Ctx, account: &Account, expected: &Response) -> Outcome {
    let mut session = own.connect(account)?;
    session.call(&login_request(account), expected)?;
    Ok(())
}

fn users_file_format(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    let dir = scratch()?;
    let users = users_file(
        ctx,
        dir.path(),
        b"# accounts for im-check\n\njacky 12345\r\n#bob bob123\nbob bob123\n\n",
    )?;
    let port = port()?;
    let mut started = Started::start(ctx, launch, &users, &port.to_string(), &[])?;
    started.listening(port, launch)?;
    let (jacky, bob) = (account(b"jacky", b"12345"), account(b"bob", b"bob123"));
    let own = own_ctx(ctx, port, vec![jacky.clone(), bob.clone()]);
    // The \r of jacky's line is no part of the password; #bob's line is a comment.
    expect_login(&own, &jacky, &Response::AuthOk)?;
    expect_login(&own, &bob, &Response::AuthOk)?;
    expect_login(&own, &account(b"#bob", b"bob123"), &Response::AuthFailed)?;
    Ok(())
}

fn users_file_errors(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    // Each file, and the line of it that is wrong (empty lines and comments count too).
    let files: [(&[u8], usize, &str); 4] = [
        (b"jacky 12345\nbob\n", 2, "one token"),
        (
            b"jacky 12345\n\n# three tokens next\nbob bob 123\n",
            4,
            "three tokens",
        ),
        (
            b"jacky 12345\nbob  bob123\n",
            2,
            "two spaces between the tokens",
        ),
        (
            b"jacky 12345\nbob bob123\njacky again\n",
            3,
            "a user given twice",
        ),
    ];
    for (text, line, what) in files {
        let dir = scratch()?;
        let users = users_file(ctx, dir.path(), text)?;
        let port = port()?;
        let mut started = Started::start(ctx, launch, &users, &port.to_string(), &[])?;
        let Some(status) = started.exited_by(Instant::now() + launch.start_timeout) else {
            let output = started.all_output(QUIET);
            return Err(Failure::new(format!(
                "a users file whose line {line} holds {what} ({}): expected the server to stop \
                 with exit code 2, it is still running after {}; it printed {output}",
                escape(text),
                show_duration(launch.start_timeout)
            ))
            .into());
        };
        let output = started.all_output(QUIET);
        let printed = [started.stdout(), started.stderr()].concat();
        let printed = String::from_utf8_lossy(&printed);
        let path = users.to_string_lossy();
        // The line number, as a number of its own once the file's path is taken out.
        let rest = printed.replace(path.as_ref(), " ");
        let names_line = rest
            .split(|c: char| !c.is_ascii_digit())
            .any(|number| number == line.to_string());
        if status.code() != Some(2) || !printed.contains(path.as_ref()) || !names_line {
            return Err(Failure::new(format!(
                "a users file whose line {line} holds {what} ({}): expected exit code 2 and an \
                 error naming {path} and line {line}, got {status} and {output}",
                escape(text)
            ))
            .into());
        }
    }
    Ok(())
}

fn passwords_not_logged(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    let dir = scratch()?;
    let (jacky, bob) = (
        account(b"jacky", b"pw-Jq7rVx"),
        account(b"bob", b"pw-Kd2mWz"),
    );
    let wrong = account(b"bob", b"pw-Wr0ngQ");
    let users = users_file(ctx, dir.path(), b"jacky pw-Jq7rVx\nbob pw-Kd2mWz\n")?;
    let port = port()?;
    let mut started = Started::start(ctx, launch, &users, &port.to_string(), &[])?;
    started.listening(port, launch)?;
    {
        let own = own_ctx(ctx, port, vec![jacky.clone(), bob.clone()]);
        expect_login(&own, &wrong, &Response::AuthFailed)?;
        let _jacky = own.ready(&jacky)?;
        let _bob = own.ready(&bob)?;
        // Both log out here, before the server is ended.
    }
    // Time for the server to log the logouts, too.
    thread::sleep(QUIET);
    let output = started.all_output(QUIET);
    let printed = [started.stdout(), started.stderr()].concat();
    for password in [&jacky.password, &bob.password, &wrong.password] {
        if printed
            .windows(password.len())
            .any(|window| window == password.as_slice())
        {
            return Err(Failure::unexpected(
                format!(
                    "what the server printed while {} logged in (a password is never written to \
                     logs)",
                    escape(password)
                ),
                "no password in it",
                Got::Bytes(output.into_bytes()),
            )
            .into());
        }
    }
    Ok(())
}

fn listening_line(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    let mut started = Started::start(ctx, launch, &launch.users, "0", &[])?;
    let until = Instant::now() + launch.start_timeout;
    let first = loop {
        let printed = started.stdout();
        if let Some(end) = printed.iter().position(|&b| b == b'\n') {
            break printed[..=end].to_vec();
        }
        if remaining(until).is_zero() || started.exited_by(Instant::now()).is_some() {
            let output = started.all_output(QUIET);
            return Err(Failure::new(format!(
                "started with port 0: expected a first line `listening on <ip>:<port>` on \
                 standard output within {}, it printed {output}",
                show_duration(launch.start_timeout)
            ))
            .into());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let context = "the server's first line on standard output, started with port 0";
    let addr = first
        .strip_prefix(b"listening on ")
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .and_then(|rest| std::str::from_utf8(rest).ok())
        .and_then(|rest| rest.parse::<SocketAddr>().ok())
        .filter(|addr| addr.port() != 0)
        .ok_or_else(|| {
            Failure::unexpected(
                context,
                "\"listening on <ip>:<port>\\n\" with the port it listens on",
                Got::Bytes(first.clone()),
            )
        })?;
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let Some(jacky) = ctx.config.accounts.first().cloned() else {
        return Err(Problem::Skip(
            "the users file has no user to log in as".into(),
        ));
    };
    let mut own = own_ctx(ctx, addr.port(), vec![jacky.clone()]);
    if let Some(config) = Arc::get_mut(&mut own.config) {
        config.addrs = vec![SocketAddr::new(ip, addr.port())];
    }
    expect_login(&own, &jacky, &Response::AuthOk).map_err(|problem| match problem {
        Problem::Fail(failure) => Problem::Fail(Failure::new(format!(
            "it printed {}, but there: {failure}",
            escape(&first)
        ))),
        other => other,
    })
}

/// Starts the server with `port` and `extra`, which make a bad command line (`what`): it must
/// exit with code 2 and one line on standard error, within the start timeout.
fn expect_refused(ctx: &Ctx, launch: &Launch, port: &str, extra: &[&str], what: &str) -> Outcome {
    let mut started = Started::start(ctx, launch, &launch.users, port, extra)?;
    let status = started.exited_by(Instant::now() + launch.start_timeout);
    let output = started.all_output(QUIET);
    let stderr = started.stderr();
    let said = stderr.strip_suffix(b"\n").unwrap_or(&stderr);
    let one_line =
        !said.is_empty() && !said.contains(&b'\n') && !said.iter().all(u8::is_ascii_whitespace);
    match status {
        Some(status) if status.code() == Some(2) && one_line => Ok(()),
        Some(status) => Err(Failure::new(format!(
            "{what}: expected exit code 2 and a one-line error on standard error, got {status} \
             and {}",
            escape(&stderr)
        ))
        .into()),
        None => Err(Failure::new(format!(
            "{what}: expected exit code 2, the server is still running after {}; it printed \
             {output}",
            show_duration(launch.start_timeout)
        ))
        .into()),
    }
}

fn bad_arguments_exit_2(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    let port = port()?.to_string();
    expect_refused(ctx, launch, "x", &[], "the port `x`")?;
    expect_refused(ctx, launch, "65536", &[], "the port 65536")?;
    expect_refused(
        ctx,
        launch,
        &port,
        &["--ack-timeout", "0s"],
        "--ack-timeout 0s",
    )?;
    expect_refused(
        ctx,
        launch,
        &port,
        &["--no-such-option"],
        "--no-such-option",
    )?;
    Ok(())
}

fn help_lists_options(ctx: &Ctx) -> Outcome {
    let launch = launch(ctx)?;
    let port = port()?.to_string();
    let mut started = Started::start(ctx, launch, &launch.users, &port, &["--help"])?;
    let status = started.exited_by(Instant::now() + launch.start_timeout);
    let output = started.all_output(QUIET);
    let stdout = String::from_utf8_lossy(&started.stdout()).into_owned();
    let missing: Vec<&str> = OPTIONS
        .iter()
        .copied()
        .filter(|option| {
            !stdout
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .any(|word| word == *option)
        })
        .collect();
    match status {
        Some(status) if status.success() && missing.is_empty() => Ok(()),
        Some(status) => Err(Failure::new(format!(
            "--help: expected exit code 0 and every option of the protocol on standard output, \
             got {status}{}; it printed {output}",
            if missing.is_empty() {
                String::new()
            } else {
                format!(", without {}", missing.join(", "))
            }
        ))
        .into()),
        None => Err(Failure::new(format!(
            "--help: expected the server to print its help and exit, it is still running after \
             {}",
            show_duration(launch.start_timeout)
        ))
        .into()),
    }
}
