//! Running checks one after another, each bounded in time, and reporting them as text or JSON.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outcome::{escape, show_duration, Failure, Outcome, Problem, Transcript};

/// How long past its own deadline a check may take to wind down (logging its users out)
/// before the runner gives up on it.
const WIND_DOWN: Duration = Duration::from_secs(3);

/// One check, ready to run: its name, what it checks, its time budget and the code.
pub struct Entry {
    /// The check's name, as `--only` takes it.
    pub name: &'static str,
    /// One line on what it checks.
    pub description: &'static str,
    /// How long it may take.
    pub budget: Duration,
    /// Runs the check with this deadline, writing what goes over the wire to the transcript.
    pub run: Box<dyn FnOnce(Instant, Transcript) -> Outcome + Send>,
}

/// The verdict on one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The peer did what the protocol says.
    Pass,
    /// It did not (or did not in time).
    Fail,
    /// The check could not be run here.
    Skip,
}

/// The result of one check, as printed and as written in JSON.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: &'static str,
    /// What it checks.
    pub description: &'static str,
    /// Pass, fail or skip.
    pub status: Status,
    /// Why it failed or was skipped, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The exact bytes due, escaped as in the text report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What came instead, as in the text report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// How long the check took.
    pub millis: u64,
    /// What went over the wire (kept for failed checks only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<String>,
}

/// Every check of one run, and the counts.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `server` or `client`.
    pub mode: &'static str,
    /// What was checked: an address or a command line.
    pub target: String,
    /// One report per check run, in order.
    pub checks: Vec<CheckReport>,
    /// How many passed.
    pub passed: usize,
    /// How many failed.
    pub failed: usize,
    /// How many were skipped.
    pub skipped: usize,
}

impl Summary {
    /// `N passed, M failed, K skipped`.
    pub fn counts_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// How results are shown while the run goes on.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// JSON at the end instead of a line per check.
    pub json: bool,
    /// Print the wire transcript under each failed check.
    pub verbose: bool,
}

/// Runs `entries` one after another (each on its own thread, so even a check stuck in a way
/// its deadlines do not cover cannot stop the run), printing each result as it comes.
pub fn run(mode: &'static str, target: String, entries: Vec<Entry>, style: Style) -> Summary {
    let width = entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
    if !style.json {
        let plural = if entries.len() == 1 { "" } else { "s" };
        say(&format!(
            "im-check {mode} {target}: {} check{plural}",
            entries.len()
        ));
    }
    let mut checks = Vec::with_capacity(entries.len());
    for entry in entries {
        let report = run_one(entry);
        if !style.json {
            print_line(&report, width, style.verbose);
        }
        checks.push(report);
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let summary = Summary {
        mode,
        target,
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        skipped: count(Status::Skip),
        checks,
    };
    if style.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => say(&text),
            Err(error) => eprintln!("im-check: cannot write JSON: {error}"),
        }
    } else {
        say(&summary.counts_line());
    }
    summary
}

fn run_one(entry: Entry) -> CheckReport {
    let started = Instant::now();
    let deadline = started + entry.budget;
    let transcript: Transcript = Arc::new(Mutex::new(Vec::new()));
    let (done, outcome) = mpsc::channel();
    let run = entry.run;
    let log = Arc::clone(&transcript);
    let spawned = thread::Builder::new()
        .name(entry.name.to_string())
        .spawn(move || {
            let outcome = run(deadline, log);
            let _ = done.send(outcome);
        });
    let outcome = match spawned {
        Err(error) => Err(Problem::Skip(format!("cannot start a thread: {error}"))),
        Ok(handle) => match outcome.recv_timeout(entry.budget + WIND_DOWN) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Problem::Fail(Failure::new(format!(
                "the check did not finish within {} (its time limit)",
                show_duration(entry.budget)
            )))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let why = match handle.join() {
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Ok(()) => String::new(),
                };
                Err(Problem::Fail(Failure::new(format!(
                    "im-check itself failed in this check (a bug in im-check): {why}"
                ))))
            }
        },
    };
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut report = CheckReport {
        name: entry.name,
        description: entry.description,
        status: Status::Pass,
        reason: None,
        expected: None,
        actual: None,
        millis,
        transcript: Vec::new(),
    };
    match outcome {
        Ok(()) => {}
        Err(Problem::Skip(reason)) => {
            report.status = Status::Skip;
            report.reason = Some(reason);
        }
        Err(Problem::Fail(failure)) => {
            report.status = Status::Fail;
            report.reason = Some(failure.to_string());
            report.expected = failure.expected.as_deref().map(escape);
            report.actual = failure.got.as_ref().map(|got| got.to_string());
            report.transcript = transcript.lock().map(|t| t.clone()).unwrap_or_default();
        }
    }
    report
}

/// Prints one line on standard output. A reader that went away (`| head`) is no reason to
/// stop the checks or panic, so write errors are ignored.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn print_line(report: &CheckReport, width: usize, verbose: bool) {
    let status = match report.status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
    };
    let mut out = std::io::stdout().lock();
    let _ = match &report.reason {
        Some(reason) => writeln!(out, "{status}  {:width$}  {reason}", report.name),
        None => writeln!(out, "{status}  {}", report.name),
    };
    if verbose {
        for entry in &report.transcript {
            let _ = writeln!(out, "        | {entry}");
        }
    }
    // Each line shows up as soon as its check ends, even through a pipe.
    let _ = out.flush();
}

/// Prints `name  description` for each check, for `--list`.
pub fn print_list(entries: &[(&'static str, &'static str)]) {
    let width = entries
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    for (name, description) in entries {
        say(&format!("{name:width$}  {description}"));
    }
}
