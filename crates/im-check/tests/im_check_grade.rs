//! `im-check grade` on a small class of submissions made of the Python doubles in
//! `tests/doubles/` (with their `--bug` variants, one server that deadlocks after a rejected
//! duplicate login, one client whose prompt is worded differently, one server that crashes);
//! `im-check server --spawn` starting a fresh server per check; a client's misworded prompt
//! failing the prompt check only. Everything runs on 127.0.0.1, every run is bounded in time,
//! and every process started here is killed by the end of its test.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::doubles;
use scraper::{Html, Selector};

const IM_CHECK: &str = env!("CARGO_BIN_EXE_im-check");

/// The longest any one im-check run may take here.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The checks the class is graded on: few, so that the test stays quick, and among them each
/// one that a double of the class fails.
const ONLY: &[&str] = &[
    "server/login-ok",
    "server/login-wrong-password",
    "server/login-already-online",
    "server/to-delivered",
    "client/prompts",
    "client/login-retry-on-102",
    "client/ack-from",
    "client/exit-310",
];

/// What one im-check run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs im-check with `args` in `dir` to the end (killed past [`RUN_LIMIT`]).
fn im_check(dir: &Path, args: impl IntoIterator<Item = impl Into<OsString>>) -> Run {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut child = Command::new(IM_CHECK)
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("im-check starts");
    let readers = [
        child.stdout.take().map(boxed),
        child.stderr.take().map(boxed),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    });
    let status = wait_bounded(&mut child, RUN_LIMIT, &format!("im-check {args:?}"));
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    Run {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Waits for `child` to exit; past `limit` it is killed and the test fails, naming `what`.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("im-check's status") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran past {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn boxed(pipe: impl Read + Send + 'static) -> Box<dyn Read + Send> {
    Box::new(pipe)
}

/// A submission made of the doubles: `server.py` and `client.py` run copies of them, kept in
/// the submission's own folder (so that its copy is complete), with these extra arguments.
fn double_submission(dir: &Path, server_args: &str, client_args: &str) {
    fs::create_dir_all(dir).unwrap();
    fs::copy(doubles().join("server.py"), dir.join("double_server.py")).unwrap();
    fs::copy(doubles().join("client.py"), dir.join("double_client.py")).unwrap();
    let runner = |double: &str, args: &str, at: &str| {
        format!(
            "import os, runpy, sys\nsys.argv[{at}] = [{args}]\nrunpy.run_path(os.path.join(\
             os.path.dirname(os.path.abspath(__file__)), \"{double}\"), run_name=\"__main__\")\n"
        )
    };
    // Options go after the server's `port users`, before the client's `ip port`.
    let server = runner("double_server.py", server_args, "len(sys.argv):");
    fs::write(dir.join("server.py"), server).unwrap();
    let client = runner("double_client.py", client_args, "1:1");
    fs::write(dir.join("client.py"), client).unwrap();
}

/// The class: one that passes, one with a wrong `102` and a wrong `302`, one whose server
/// deadlocks and whose prompt is misworded, one whose server crashes (saying something that
/// must be escaped in HTML) and who handed in no client.
fn class(root: &Path) -> PathBuf {
    let class = root.join("class");
    let bind = "'--bind', '127.0.0.1'";
    double_submission(&class.join("alice"), bind, "");
    double_submission(
        &class.join("bob"),
        &format!("{bind}, '--bug', 'auth-case'"),
        "'--bug', 'ack-word'",
    );
    double_submission(
        &class.join("carol"),
        &format!("{bind}, '--bug', 'duplicate-deadlock'"),
        "'--bug', 'prompt-word'",
    );
    let dave = class.join("dave");
    fs::create_dir_all(&dave).unwrap();
    fs::write(
        dave.join("server.py"),
        "import sys\nprint('<script>alert(1)</script> & crashed', file=sys.stderr)\nsys.exit(3)\n",
    )
    .unwrap();
    class
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("im-check-grade-test-{name}-"))
        .tempdir()
        .unwrap()
}

fn only_args() -> Vec<String> {
    ONLY.iter()
        .flat_map(|check| ["--only".to_string(), check.to_string()])
        .collect()
}

fn parse(path: &Path) -> Html {
    let text = fs::read_to_string(path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    Html::parse_document(&text)
}

fn select<'a>(html: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    html.select(&Selector::parse(css).unwrap()).collect()
}

fn text_of(html: &Html, css: &str) -> String {
    let found = select(html, css);
    assert!(!found.is_empty(), "nothing matches {css}");
    found
        .iter()
        .map(|element| element.text().collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `#anchor` link of a page leads to an element of it.
fn assert_anchors_resolve(page: &Html, name: &str) {
    for link in select(page, "a[href^='#']") {
        let href = link.value().attr("href").unwrap();
        let id = &href[1..];
        assert!(
            !select(page, &format!("[id='{id}']")).is_empty(),
            "{name}: {href} leads nowhere"
        );
    }
}

#[test]
fn a_class_is_graded_end_to_end() {
    let root = scratch("class");
    let class = class(root.path());
    let out = root.path().join("grades");
    let junit = root.path().join("junit.xml");
    let rubric = root.path().join("rubric.txt");
    fs::write(
        &rubric,
        "# two points a server check, the prompt three, the other client checks one\n\
         server/* 2\nclient/prompts 3\nclient/* 1\n",
    )
    .unwrap();
    // A harmless wrapper that notes each command it runs: proof that --wrap is used.
    let log = root.path().join("wrapped.log");
    let wrapper = root.path().join("wrap.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    // A loaded machine may take seconds to start Python; a crash is seen at once anyway.
    let mut args: Vec<String> = [
        "grade",
        "class",
        "--out",
        "grades",
        "--jobs",
        "2",
        "--start-timeout",
        "30s",
    ]
    .map(String::from)
    .to_vec();
    args.extend(only_args());
    args.extend([
        "--rubric".into(),
        rubric.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
        "--wrap".into(),
        format!("sh {}", wrapper.display()),
    ]);
    let run = im_check(root.path(), &args);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for n in 1..=4 {
        assert!(run.stderr.contains(&format!("[{n}/4] ")), "{}", run.stderr);
    }
    assert_eq!(
        class.join("alice").read_dir().unwrap().count(),
        4,
        "the original folder was written to"
    );

    let gradebook = fs::read_to_string(out.join("grades.csv")).unwrap();
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!("im_check_grade_gradebook", gradebook);
    });

    // Every command of a submission went through the wrapper: servers and clients both.
    let wrapped = fs::read_to_string(&log).unwrap();
    assert!(
        wrapped
            .lines()
            .any(|line| line.starts_with("python3 server.py ")),
        "{wrapped}"
    );
    assert!(
        wrapped
            .lines()
            .any(|line| line.starts_with("python3 client.py 127.0.0.1 ")),
        "{wrapped}"
    );

    // The index links every submission's page, and each page's links lead somewhere.
    let index = parse(&out.join("index.html"));
    let pages: Vec<String> = select(&index, "#grades a")
        .iter()
        .map(|link| link.value().attr("href").unwrap().to_string())
        .collect();
    assert_eq!(pages, ["alice.html", "bob.html", "carol.html", "dave.html"]);
    // Per submission, the first failed check in each part of the protocol.
    let bob_row = text_of(&index, "#grades tr:nth-child(3)");
    assert!(
        bob_row.contains(
            "server §3 unauthenticated: login-wrong-password; \
             client §4.4-5 commands and deliveries: ack-from"
        ),
        "{bob_row}"
    );
    let mut parsed = BTreeMap::new();
    for page in &pages {
        let html = parse(&out.join(page));
        assert_anchors_resolve(&html, page);
        assert_eq!(select(&html, "a[href='index.html']").len(), 1, "{page}");
        parsed.insert(page.trim_end_matches(".html").to_string(), html);
    }
    assert!(text_of(&index, "#checks").contains("server/login-already-online"));

    // A failure shows what was due, what came, and the transcript, byte for byte.
    let bob = &parsed["bob"];
    let details = "#details-server-login-wrong-password";
    assert_eq!(
        text_of(bob, &format!("{details} .expected")),
        r#""102 Authentication failed\n""#
    );
    assert_eq!(
        text_of(bob, &format!("{details} .actual")),
        r#""102 Authentication Failed\n""#
    );
    let transcript = text_of(bob, &format!("{details} pre.transcript"));
    assert!(
        transcript.contains(r#"jacky La got "102 Authentication Failed\n""#),
        "{transcript}"
    );
    assert!(text_of(bob, "#check-client-ack-from").contains("302 Message receipt success"));

    // The deadlocking server is named as such; the misworded prompt fails with both texts.
    let carol = &parsed["carol"];
    let stopped = text_of(carol, "p.stopped");
    assert!(
        stopped.contains("stopped answering after login-already-online"),
        "{stopped}"
    );
    assert_eq!(
        text_of(carol, "#details-client-prompts .actual"),
        r#""Please input your username:""#
    );
    assert_eq!(
        select(carol, "tr.fail").len(),
        1,
        "only the prompt check fails"
    );

    // What a crashing server printed is shown as text, never run as markup.
    let dave = &parsed["dave"];
    assert!(select(dave, "script").is_empty());
    let output = text_of(dave, "#details-server-login-ok pre.output");
    assert!(
        output.contains("<script>alert(1)</script> & crashed"),
        "{output}"
    );
    let crashed = text_of(dave, "#check-server-login-ok");
    assert!(crashed.contains("exited (exit status: 3)"), "{crashed}");
    assert!(text_of(dave, "#check-server-to-delivered").contains("failed to start for 2 checks"));
    assert!(text_of(dave, "#check-client-prompts").contains("the submission has no client.py"));

    // The JUnit report: a suite per submission, a case per check, failures counted.
    let xml = fs::read_to_string(&junit).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).expect("a JUnit report");
    let suites: BTreeMap<&str, (usize, usize)> = report
        .test_suites
        .iter()
        .map(|suite| (suite.name.as_str(), (suite.tests, suite.failures)))
        .collect();
    assert_eq!(
        suites,
        BTreeMap::from([
            ("alice", (8, 0)),
            ("bob", (8, 3)),
            ("carol", (8, 1)),
            ("dave", (8, 8)),
        ])
    );
}

/// Whether process `pid` still runs (a zombie waiting for a reaper does not).
fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
    }
}

#[test]
fn spawn_starts_a_fresh_server_per_check_and_names_the_one_that_stopped_answering() {
    let root = scratch("spawn");
    let starts = root.path().join("starts.log");
    let helpers = root.path().join("helpers.log");
    let server = doubles().join("server.py");
    // Each start is noted, and leaves a helper in the background that only the kill of the
    // whole process group ends.
    let spawn = format!(
        "sh -c 'echo started >> {}; sleep 600 & echo $! >> {}; exec python3 {} {{port}} \
         {{users}} --bind 127.0.0.1 --bug duplicate-deadlock'",
        starts.display(),
        helpers.display(),
        server.display()
    );
    let checks = [
        "login-ok",
        "login-already-online",
        "list-order",
        "to-delivered",
    ];
    let mut args = vec![
        "server".to_string(),
        "--spawn".into(),
        spawn.clone(),
        "--json".into(),
    ];
    for check in checks {
        args.extend(["--only".into(), check.into()]);
    }
    let run = im_check(root.path(), &args);
    // Every check passes, yet the run fails: the server stopped answering after one of them.
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let statuses: Vec<(&str, &str, bool)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["name"].as_str().unwrap(),
                check["status"].as_str().unwrap(),
                check.get("stopped_answering").is_some(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("login-ok", "pass", false),
            ("login-already-online", "pass", true),
            ("list-order", "pass", false),
            ("to-delivered", "pass", false),
        ]
    );
    assert_eq!(
        report["stopped_answering_after"],
        serde_json::json!(["login-already-online"])
    );
    let why = report["checks"][1]["stopped_answering"].as_str().unwrap();
    assert!(why.contains("no answer within 2s"), "{why}");
    assert!(report["checks"][1]["peer_output"]
        .as_str()
        .unwrap()
        .starts_with("listening on 127.0.0.1:"));
    assert_eq!(fs::read_to_string(&starts).unwrap().lines().count(), 4);
    let pids = fs::read_to_string(&helpers).unwrap();
    assert_eq!(pids.lines().count(), 4);
    for pid in pids.lines() {
        assert!(!alive(pid), "helper {pid} outlived its check");
    }

    // One server for all: the deadlock is named, and the later checks are not run.
    fs::remove_file(&starts).unwrap();
    args.extend(["--one-server".into(), "--timeout".into(), "2s".into()]);
    let run = im_check(root.path(), &args);
    assert_eq!(run.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["passed"], 2, "{}", run.stdout);
    assert_eq!(report["failed"], 0, "{}", run.stdout);
    assert_eq!(report["not_run"], 2, "{}", run.stdout);
    assert_eq!(report["checks"][2]["status"], "not-run", "{}", run.stdout);
    assert_eq!(
        report["stopped_answering_after"],
        serde_json::json!(["login-already-online"])
    );
    assert_eq!(fs::read_to_string(&starts).unwrap().lines().count(), 1);

    // The text report says it on a line of its own, and in the counts.
    let text_args: Vec<&str> = vec![
        "server",
        "--spawn",
        &spawn,
        "--only",
        "login-already-online",
    ];
    let run = im_check(root.path(), text_args);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[1], "PASS  login-already-online", "{}", run.stdout);
    assert!(
        lines[2].starts_with(
            "      the server stopped answering after login-already-online: a new connection's"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines[3],
        "1 passed, 0 failed, 0 skipped; the server stopped answering after login-already-online"
    );
}

#[test]
fn a_misworded_prompt_fails_the_prompt_check_only() {
    let root = scratch("prompt");
    let client = doubles().join("client.py");
    let run = im_check(
        root.path(),
        [
            OsString::from("client"),
            "--json".into(),
            "--".into(),
            "python3".into(),
            client.into(),
            "--bug".into(),
            "prompt-word".into(),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|check| check["status"] != "pass")
        .map(|check| check["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["prompts"], "{}", run.stdout);
    assert_eq!(
        report["checks"][1]["reason"],
        r#"the client's user name prompt (first difference at byte 22): expected "Please input your user name:", got "Please input your username:""#
    );
}

#[test]
fn a_greeting_before_the_prompt_is_not_taken_for_it() {
    let root = scratch("greeting");
    // The greeting is printed before Python has even loaded the client: well before the prompt.
    let client = root.path().join("greeting_client.py");
    fs::write(
        &client,
        format!(
            "import runpy\nprint('Welcome to the chat!', flush=True)\nrunpy.run_path('{}', \
             run_name='__main__')\n",
            doubles().join("client.py").display()
        ),
    )
    .unwrap();
    let run = im_check(
        root.path(),
        [
            OsString::from("client"),
            "--only".into(),
            "prompts".into(),
            "--only".into(),
            "login-retry-on-102".into(),
            "--".into(),
            "python3".into(),
            client.into(),
        ],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
}

#[test]
#[ignore = "needs bwrap (bubblewrap) allowed to make a sandbox"]
fn a_sandbox_given_with_wrap_confines_the_submission() {
    let usable = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        usable,
        "bwrap is not installed or cannot make a sandbox here: apt-get install bubblewrap"
    );
    let root = scratch("bwrap");
    let class = root.path().join("class");
    let eve = class.join("eve");
    double_submission(&eve, "'--bind', '127.0.0.1'", "");
    // The server first tries to leave a file outside its folder.
    let escaped = root.path().join("escaped.txt");
    let server = fs::read_to_string(eve.join("server.py")).unwrap();
    fs::write(
        eve.join("server.py"),
        format!(
            "try:\n    open('{}', 'w').write('out')\nexcept OSError:\n    pass\n{server}",
            escaped.display()
        ),
    )
    .unwrap();
    // The example of docs/im-check.md.
    let wrap = "bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --ro-bind {users} \
                {users} --bind {dir} {dir} --unshare-pid --die-with-parent";
    let run = im_check(
        root.path(),
        [
            "grade",
            "class",
            "--only",
            "server/to-delivered",
            "--only",
            "client/login-line",
            "--wrap",
            wrap,
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let gradebook = fs::read_to_string(root.path().join("grades/grades.csv")).unwrap();
    assert!(
        gradebook.lines().nth(1).unwrap().ends_with(",pass,pass"),
        "{gradebook}"
    );
    assert!(!escaped.exists(), "the server wrote outside its folder");
}

#[test]
fn bad_grade_and_spawn_arguments_exit_2() {
    let root = scratch("args");
    let class = class(root.path());
    let rubric = root.path().join("rubric.txt");
    fs::write(&rubric, "server/login-okk 1\n").unwrap();
    let class = class.to_str().unwrap();
    let rubric = rubric.to_str().unwrap();
    for args in [
        vec!["grade", "/no/such/class"],
        vec!["grade", class, "--only", "login-ok"],
        vec!["grade", class, "--only", "server/no-such-check"],
        vec!["grade", class, "--rubric", rubric],
        vec!["grade", class, "--server-cmd", "python3 server.py"],
        vec!["grade", class, "--wrap", "bwrap 'unclosed"],
        vec!["grade", class, "--jobs", "0"],
        vec!["server", "--spawn", "python3 server.py"],
        vec![
            "server",
            "--one-server",
            "--port",
            "4000",
            "--users",
            rubric,
        ],
        vec!["server", "--spawn", "x {port}", "--port", "4000"],
    ] {
        let run = im_check(root.path(), args.clone());
        assert_eq!(run.code, Some(2), "{args:?}: {}{}", run.stdout, run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(!first.is_empty(), "{args:?}");
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
    assert!(!root.path().join("grades").exists());
}

#[test]
fn an_interrupted_run_leaves_no_program_behind() {
    let root = scratch("interrupt");
    let helpers = root.path().join("helpers.log");
    // A server that never listens, with a helper in the background.
    let spawn = format!(
        "sh -c 'sleep 600 & echo $! >> {}; exec sleep 600' {{port}}",
        helpers.display()
    );
    let mut child = Command::new(IM_CHECK)
        .args(["server", "--spawn", &spawn, "--start-timeout", "30s"])
        .current_dir(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("im-check starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = fs::read_to_string(&helpers)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
        {
            break pid;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server was not started");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let status = wait_bounded(&mut child, Duration::from_secs(10), "im-check after Ctrl-C");
    assert_eq!(status.code(), Some(130));
    let gone_by = Instant::now() + Duration::from_secs(2);
    while alive(&pid) && Instant::now() < gone_by {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(&pid),
        "helper {pid} outlived the interrupted im-check"
    );
}

#[test]
fn a_linked_folder_is_a_submission_and_the_reports_folder_is_not() {
    let root = scratch("layout");
    let class = root.path().join("class");
    double_submission(&class.join("solo"), "", "");
    std::os::unix::fs::symlink(class.join("solo"), class.join("linked")).unwrap();
    fs::create_dir_all(class.join(".git")).unwrap();
    for _ in 0..2 {
        let run = im_check(
            root.path(),
            [
                "grade",
                "class",
                "--out",
                "class/grades",
                "--only",
                "client/no-server",
            ],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let gradebook = fs::read_to_string(class.join("grades/grades.csv")).unwrap();
        let rows: Vec<&str> = gradebook.lines().skip(1).collect();
        // The empty column: no check of the client's first part of §4 failed.
        assert_eq!(rows, ["linked,1,1,1,0,0,,,pass", "solo,1,1,1,0,0,,,pass"]);
    }
}
