//! Running checks one after another against a [`Peer`], each bounded in time, and reporting
//! them as text or JSON.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::outcome::{escape, show_duration, Failure, Outcome, Problem, Transcript};
use crate::registry::{Check, Ctx};

/// How long past its own deadline a check may take to wind down (logging its users out)
/// before the runner gives up on it.
const WIND_DOWN: Duration = Duration::from_secs(3);

/// What the checks run against, got ready before each check and looked at after it: a server
/// started afresh for every check, one that is only watched, or a client command.
pub trait Peer<C> {
    /// Gets the peer ready for the check `check`: what the check runs with, or why it cannot
    /// run (reported as that check's verdict).
    fn before(&mut self, check: &str) -> Result<Arc<C>, Problem>;

    /// After the check `check` (even one whose `before` failed): whether the peer still
    /// answers, and what it printed meanwhile.
    fn after(&mut self, check: &str) -> Aftermath;
}

/// What a [`Peer`] found after a check, apart from the check's own verdict.
#[derive(Clone, Debug, Default)]
pub struct Aftermath {
    /// Set when the peer no longer answered anything after the check: how that showed.
    pub stopped_answering: Option<String>,
    /// What the peer's process wrote on its standard output and error during the check.
    pub output: Option<String>,
}

/// A peer that is the same for every check and is not looked at after one.
pub struct Fixed<C>(pub Arc<C>);

impl<C> Peer<C> for Fixed<C> {
    fn before(&mut self, _check: &str) -> Result<Arc<C>, Problem> {
        Ok(Arc::clone(&self.0))
    }

    fn after(&mut self, _check: &str) -> Aftermath {
        Aftermath::default()
    }
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
    /// Not run: the server had stopped answering after an earlier check.
    #[serde(rename = "not-run")]
    NotRun,
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
    /// Set when the peer no longer answered anything after this check, whatever its verdict:
    /// how that showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_answering: Option<String>,
    /// What the peer's process printed during the check (kept for failed checks and those
    /// after which it stopped answering).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_output: Option<String>,
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
    /// How many were not run, the server having stopped answering before them.
    pub not_run: usize,
    /// The checks after which the peer stopped answering, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped_answering_after: Vec<&'static str>,
}

impl Summary {
    /// `N passed, M failed, K skipped`.
    pub fn counts_line(&self) -> String {
        let mut line = format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        );
        if self.not_run > 0 {
            line.push_str(&format!(", {} not run", self.not_run));
        }
        if !self.stopped_answering_after.is_empty() {
            line.push_str(&format!(
                "; the server stopped answering after {}",
                self.stopped_answering_after.join(", ")
            ));
        }
        line
    }

    /// Whether anything went wrong: a check failed, or the peer stopped answering.
    pub fn has_problems(&self) -> bool {
        self.failed > 0 || !self.stopped_answering_after.is_empty()
    }
}

/// How results are shown while the run goes on.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// JSON at the end instead of a line per check.
    pub json: bool,
    /// Print the wire transcript under each failed check.
    pub verbose: bool,
    /// Print nothing at all (`im-check grade` writes its own reports).
    pub quiet: bool,
    /// Stop at the first check that fails (or after which the peer stopped answering): the
    /// rest are reported as not run.
    pub fail_fast: bool,
}

/// Runs `checks` one after another against `peer`, each within `timeout` plus its extra
/// time (and on its own thread, so even a check stuck in a way its deadlines do not cover
/// cannot stop the run), printing each result as it comes.
pub fn run<C: Send + Sync + 'static>(
    mode: &'static str,
    target: String,
    checks: &[&'static Check<C>],
    timeout: Duration,
    peer: &mut dyn Peer<C>,
    style: Style,
) -> Summary {
    let text = !style.json && !style.quiet;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    if text {
        let plural = if checks.len() == 1 { "" } else { "s" };
        say(&format!(
            "im-check {mode} {target}: {} check{plural}",
            checks.len()
        ));
    }
    let mut reports = Vec::with_capacity(checks.len());
    let mut stopped_at: Option<&str> = None;
    for check in checks {
        let report = match stopped_at {
            Some(failed) => not_run(
                check,
                format!("not run: --fail-fast stopped the run at {failed}"),
            ),
            None => run_one(check, timeout, peer),
        };
        let problem = report.status == Status::Fail || report.stopped_answering.is_some();
        if style.fail_fast && problem && stopped_at.is_none() {
            stopped_at = Some(check.name);
        }
        if text {
            print_line(&report, width, style.verbose);
        }
        reports.push(report);
    }
    let count = |status| reports.iter().filter(|c| c.status == status).count();
    let summary = Summary {
        mode,
        target,
        passed: count(Status::Pass),
        failed: count(Status::Fail),
        skipped: count(Status::Skip),
        not_run: count(Status::NotRun),
        stopped_answering_after: reports
            .iter()
            .filter(|c| c.stopped_answering.is_some())
            .map(|c| c.name)
            .collect(),
        checks: reports,
    };
    if style.json && !style.quiet {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => say(&text),
            Err(error) => eprintln!("im-check: cannot write JSON: {error}"),
        }
    } else if text {
        say(&summary.counts_line());
    }
    summary
}

/// The report of a check that was not run, and why.
fn not_run<C>(check: &'static Check<C>, reason: String) -> CheckReport {
    CheckReport {
        name: check.name,
        description: check.description,
        status: Status::NotRun,
        reason: Some(reason),
        expected: None,
        actual: None,
        millis: 0,
        transcript: Vec::new(),
        stopped_answering: None,
        peer_output: None,
    }
}

fn run_one<C: Send + Sync + 'static>(
    check: &'static Check<C>,
    timeout: Duration,
    peer: &mut dyn Peer<C>,
) -> CheckReport {
    let started = Instant::now();
    let transcript: Transcript = Arc::new(Mutex::new(Vec::new()));
    let outcome = match peer.before(check.name) {
        Err(problem) => Err(problem),
        Ok(config) => {
            let budget = timeout + (check.extra_time)(&config);
            run_bounded(check, config, budget, Arc::clone(&transcript))
        }
    };
    let aftermath = peer.after(check.name);
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut report = CheckReport {
        name: check.name,
        description: check.description,
        status: Status::Pass,
        reason: None,
        expected: None,
        actual: None,
        millis,
        transcript: Vec::new(),
        stopped_answering: aftermath.stopped_answering,
        peer_output: None,
    };
    match outcome {
        Ok(()) => {}
        Err(Problem::Skip(reason)) => {
            report.status = Status::Skip;
            report.reason = Some(reason);
        }
        Err(Problem::NotRun(reason)) => {
            report.status = Status::NotRun;
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
    if report.status == Status::Fail || report.stopped_answering.is_some() {
        report.peer_output = aftermath.output.filter(|output| !output.is_empty());
    }
    report
}

/// Runs one check on its own thread and waits for it at most `budget` and the wind-down.
fn run_bounded<C: Send + Sync + 'static>(
    check: &'static Check<C>,
    config: Arc<C>,
    budget: Duration,
    transcript: Transcript,
) -> Outcome {
    let deadline = Instant::now() + budget;
    let (done, outcome) = mpsc::channel();
    let run = check.run;
    let spawned = thread::Builder::new()
        .name(check.name.to_string())
        .spawn(move || {
            let outcome = run(&Ctx {
                config,
                deadline,
                transcript,
            });
            let _ = done.send(outcome);
        });
    match spawned {
        Err(error) => Err(Problem::Skip(format!("cannot start a thread: {error}"))),
        Ok(handle) => match outcome.recv_timeout(budget + WIND_DOWN) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(Problem::Fail(Failure::new(format!(
                "the check did not finish within {} (its time limit)",
                show_duration(budget)
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
    }
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
        Status::NotRun => "----",
    };
    let mut out = std::io::stdout().lock();
    let _ = match &report.reason {
        Some(reason) => writeln!(out, "{status}  {:width$}  {reason}", report.name),
        None => writeln!(out, "{status}  {}", report.name),
    };
    if let Some(why) = &report.stopped_answering {
        let _ = writeln!(
            out,
            "      the server stopped answering after {}: {why}",
            report.name
        );
    }
    if verbose {
        for entry in &report.transcript {
            let _ = writeln!(out, "        | {entry}");
        }
        if let Some(output) = &report.peer_output {
            let _ = writeln!(out, "        the server printed:");
            for line in output.lines() {
                let _ = writeln!(out, "        > {line}");
            }
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
