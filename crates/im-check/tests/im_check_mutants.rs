//! The mutation suite: broken copies of the Python doubles, each with one bug students make
//! (written by `tests/mutants/mutate.py` from its table of one-line patches), run through
//! `im-check`. Every copy with a real bug must be flagged (exit code 1), and every copy whose
//! change nothing on the wire can tell (`equivalent`) must pass. Two copies are checked at a
//! time, each run bounded in time, everything on 127.0.0.1.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

mod common;

const IM_CHECK: &str = env!("CARGO_BIN_EXE_im-check");

/// The longest one im-check run may take here.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// Copies checked at a time: each check starts processes, and the machine has two cores.
const JOBS: usize = 2;

/// One broken copy, as `mutants.json` lists it.
struct Mutant {
    name: String,
    file: String,
    description: String,
    equivalent: bool,
}

/// What im-check made of one copy.
struct Verdict {
    flagged: bool,
    /// The first check that failed (or after which the server stopped answering).
    caught_by: String,
    /// Why, as the report says.
    reason: String,
    took: Duration,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Writes the copies to `dir` and lists them.
fn generate(dir: &Path) -> Vec<Mutant> {
    let status = Command::new("python3")
        .arg(repo().join("tests/mutants/mutate.py"))
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs");
    assert!(status.success(), "mutate.py failed: {status}");
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mutants.json")).unwrap()).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Mutant {
            name: m["name"].as_str().unwrap().to_string(),
            file: m["file"].as_str().unwrap().to_string(),
            description: m["description"].as_str().unwrap().to_string(),
            equivalent: m["equivalent"].as_bool().unwrap(),
        })
        .collect()
}

/// The im-check arguments for one copy in `folder`.
fn arguments(mutant: &Mutant, folder: &Path) -> Vec<String> {
    let script = folder.join(&mutant.file);
    let script = script.to_str().unwrap();
    let mut args: Vec<String> = if mutant.file == "server.py" {
        let mut args = common::spawn_one_server_args(&format!("python3 {script}"));
        args.extend(["--timeout", "3s"].map(String::from));
        args
    } else {
        vec!["client".into()]
    };
    args.extend(["--json", "--fail-fast"].map(String::from));
    if mutant.file == "client.py" {
        args.extend(["--".into(), "python3".into(), script.to_string()]);
    }
    args
}

/// Runs im-check on one copy, to the end or [`RUN_LIMIT`].
fn check(mutant: &Mutant, folder: &Path) -> Verdict {
    let started = Instant::now();
    let mut child = Command::new(IM_CHECK)
        .args(arguments(mutant, folder))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("im-check starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut all);
        all
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}: im-check ran past {RUN_LIMIT:?}", mutant.name);
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stdout = reader.join().unwrap();
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "{}: im-check ended with {status}:\n{stdout}",
        mutant.name
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("{}: not JSON ({error}):\n{stdout}", mutant.name));
    let first = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "fail" || c.get("stopped_answering").is_some());
    let reason = first
        .map(|c| {
            let why = c["reason"].as_str().or(c["stopped_answering"].as_str());
            why.unwrap_or_default().chars().take(160).collect()
        })
        .unwrap_or_default();
    let caught_by = first
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            if c.get("stopped_answering").is_some() && c["status"] != "fail" {
                format!("(stopped answering after {name})")
            } else {
                name.to_string()
            }
        })
        .unwrap_or_default();
    Verdict {
        flagged: status.code() == Some(1),
        caught_by,
        reason,
        took: started.elapsed(),
    }
}

#[test]
fn every_broken_double_is_flagged_and_no_equivalent_one_is() {
    let dir = tempfile::Builder::new()
        .prefix("im-check-mutants-")
        .tempdir()
        .unwrap();
    let mutants = generate(dir.path());
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..mutants.len()).collect());
    let verdicts: Mutex<Vec<Option<Verdict>>> =
        Mutex::new((0..mutants.len()).map(|_| None).collect());
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..JOBS {
            scope.spawn(|| loop {
                let Some(index) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let mutant = &mutants[index];
                let folder: PathBuf = dir.path().join(&mutant.name);
                let verdict = check(mutant, &folder);
                verdicts.lock().unwrap()[index] = Some(verdict);
            });
        }
    });
    let verdicts: Vec<Verdict> = verdicts
        .into_inner()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let mut wrong = Vec::new();
    eprintln!("| mutant | file | bug | flagged | first failing check | time | why |");
    eprintln!("|---|---|---|---|---|---|---|");
    for (mutant, verdict) in mutants.iter().zip(&verdicts) {
        let bug = if mutant.equivalent {
            format!("(equivalent) {}", mutant.description)
        } else {
            mutant.description.clone()
        };
        eprintln!(
            "| {} | {} | {bug} | {} | {} | {:.1}s | {} |",
            mutant.name,
            mutant.file,
            if verdict.flagged { "yes" } else { "no" },
            verdict.caught_by,
            verdict.took.as_secs_f64(),
            verdict.reason.replace('|', "\\|")
        );
        if verdict.flagged == mutant.equivalent {
            wrong.push(mutant.name.as_str());
        }
    }
    for file in ["server.py", "client.py"] {
        let real: Vec<_> = mutants
            .iter()
            .zip(&verdicts)
            .filter(|(m, _)| m.file == file && !m.equivalent)
            .collect();
        let killed = real.iter().filter(|(_, v)| v.flagged).count();
        eprintln!(
            "{file}: {killed} of {} broken copies flagged ({:.0}%)",
            real.len(),
            100.0 * killed as f64 / real.len().max(1) as f64
        );
    }
    eprintln!("mutation suite: {:.0}s", started.elapsed().as_secs_f64());
    assert!(
        wrong.is_empty(),
        "im-check got these copies wrong (a bug passed, or an equivalent one was flagged): \
         {wrong:?}"
    );
}
