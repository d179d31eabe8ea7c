//! `im-check grade DIR`: every sub-folder of `DIR` is one submission, checked as a server and
//! as a client, a few at a time; the results go to a gradebook (`grades.csv`), an HTML page
//! per submission with an index, and optionally a JUnit report.
//!
//! Submissions are untrusted code. Each one runs in a temporary copy of its folder, every
//! process it starts is in a process group of its own that is killed after each check, every
//! check is bounded in time, and `--wrap` puts every command under a sandbox the teacher
//! chooses.

mod html;
mod junit;
pub mod rubric;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, ClientConfig};
use crate::outcome::{Failure, Problem};
use crate::process::Template;
use crate::registry::{self, Check, Registry};
use crate::report::{self, Aftermath, Fixed, Peer, Status, Style, Summary};
use crate::server::peer::{Launch, Spawned};
use crate::server::{self, ServerConfig};
use rubric::{show_points, Rubric};

/// How deep a submission's folders may nest before the copy stops (a bound on odd trees).
const MAX_DEPTH: usize = 32;

/// Everything one `im-check grade` run needs to know.
pub struct Settings {
    /// The folder of submissions.
    pub dir: PathBuf,
    /// Where the gradebook and the pages go.
    pub out: PathBuf,
    /// The server's command (`{port}`, `{users}`, `{dir}`), run in the submission's copy.
    pub server_cmd: Template,
    /// The client's command (`{dir}`), run in the copy with `127.0.0.1 <port>` appended.
    pub client_cmd: Template,
    /// With the default commands: the files a submission must have for each (a missing one
    /// fails that side's checks at once, with the reason).
    pub server_file: Option<&'static str>,
    /// See [`Settings::server_file`].
    pub client_file: Option<&'static str>,
    /// A prefix for every command (a sandbox).
    pub wrap: Option<Template>,
    /// Submissions checked at a time.
    pub jobs: usize,
    /// Points per check.
    pub rubric: Rubric,
    /// Where to write a JUnit report, if anywhere.
    pub junit: Option<PathBuf>,
    /// The server checks to run.
    pub server_checks: Vec<&'static Check<ServerConfig>>,
    /// The client checks to run.
    pub client_checks: Vec<&'static Check<ClientConfig>>,
    /// Each check's time limit.
    pub timeout: Duration,
    /// What the checks know about every server (its addresses are each one's own).
    pub server: ServerConfig,
    /// The users file every server gets.
    pub users: PathBuf,
    /// How long a server may take to listen.
    pub start_timeout: Duration,
    /// Where the submissions' copies are made.
    pub scratch: PathBuf,
}

/// One submission, checked.
pub struct Graded {
    /// Its folder's name.
    pub name: String,
    /// Its page's file name in the output folder.
    pub page: String,
    /// The server checks' results.
    pub server: Summary,
    /// The client checks' results.
    pub client: Summary,
    /// Points earned.
    pub score: f64,
    /// Points there were to earn.
    pub max: f64,
    /// How long it took to check.
    pub took: Duration,
}

impl Graded {
    /// Both summaries, with each mode's name.
    pub fn summaries(&self) -> [&Summary; 2] {
        [&self.server, &self.client]
    }

    /// How many checks had `status`, both modes together.
    pub fn count(&self, status: Status) -> usize {
        self.summaries()
            .iter()
            .flat_map(|summary| &summary.checks)
            .filter(|check| check.status == status)
            .count()
    }

    /// The server checks after which the server stopped answering.
    pub fn stopped_after(&self) -> &[&'static str] {
        &self.server.stopped_answering_after
    }

    /// The first check of `mode` in the part of the protocol `title` that failed.
    pub fn first_failed(&self, mode: &str, title: &str) -> Option<&'static str> {
        let section_of = |name| match mode {
            "server" => registry::section_of(server::CHECKS, name),
            _ => registry::section_of(client::CHECKS, name),
        };
        let summary = if mode == "server" {
            &self.server
        } else {
            &self.client
        };
        summary
            .checks
            .iter()
            .find(|check| check.status == Status::Fail && section_of(check.name) == Some(title))
            .map(|check| check.name)
    }
}

/// The gradebook's name for a check of `mode`: `server/login-ok`.
pub fn column(mode: &str, check: &str) -> String {
    format!("{mode}/{check}")
}

/// Grades every submission in `settings.dir` and writes the reports; what it wrote, or why it
/// could not.
pub fn run(settings: Settings) -> Result<Vec<PathBuf>, String> {
    let submissions = submissions(&settings.dir, &settings.out)?;
    if submissions.is_empty() {
        return Err(format!(
            "{} has no sub-folders: each submission is one folder in it",
            settings.dir.display()
        ));
    }
    fs::create_dir_all(&settings.out)
        .map_err(|error| format!("{}: {error}", settings.out.display()))?;
    let pages = page_names(&submissions);
    let total = submissions.len();
    progress(&format!(
        "{total} submission{} in {}, {} at a time: {} server and {} client checks each",
        if total == 1 { "" } else { "s" },
        settings.dir.display(),
        settings.jobs.min(total),
        settings.server_checks.len(),
        settings.client_checks.len()
    ));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let graded: Mutex<Vec<Option<Graded>>> = Mutex::new((0..total).map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..settings.jobs.min(total) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((name, path)) = submissions.get(index) else {
                    break;
                };
                progress(&format!("checking {name} ({} of {total})", index + 1));
                let result = grade_one(&settings, index, name, path, &pages[index]);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(&format!(
                    "[{finished}/{total}] {name}: {} of {} points; {} passed, {} failed, {} \
                     skipped{} ({:.1}s)",
                    show_points(result.score),
                    show_points(result.max),
                    result.count(Status::Pass),
                    result.count(Status::Fail),
                    result.count(Status::Skip),
                    stopped_note(&result),
                    result.took.as_secs_f64()
                ));
                if let Ok(mut graded) = graded.lock() {
                    graded[index] = Some(result);
                }
            });
        }
    });
    let graded: Vec<Graded> = graded
        .into_inner()
        .map_err(|_| "a grading thread failed".to_string())?
        .into_iter()
        .flatten()
        .collect();
    let mut written = Vec::new();
    let csv_path = settings.out.join("grades.csv");
    write_gradebook(&csv_path, &settings, &graded)
        .map_err(|error| format!("{}: {error}", csv_path.display()))?;
    written.push(csv_path);
    written.extend(html::write(&settings, &graded)?);
    if let Some(path) = &settings.junit {
        junit::write(path, &graded)?;
        written.push(path.clone());
    }
    Ok(written)
}

fn stopped_note(graded: &Graded) -> String {
    match graded.stopped_after() {
        [] => String::new(),
        after => format!("; the server stopped answering after {}", after.join(", ")),
    }
}

/// One line of progress on standard error.
fn progress(line: &str) {
    eprintln!("im-check grade: {line}");
}

/// The sub-folders of `dir` (hidden ones aside, and `out` if the reports go inside `dir`),
/// by name. A link to a folder counts: the teacher made `dir`.
fn submissions(dir: &Path, out: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let entries = fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let out = fs::canonicalize(out).ok();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| format!("{}: {error}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_out = out.is_some() && fs::canonicalize(&path).ok() == out;
        if path.is_dir() && !name.starts_with('.') && !is_out {
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

/// A file name for each submission's page: its name with anything but letters, digits, `-`,
/// `_` and `.` replaced, each different from the others and from `index.html`.
fn page_names(submissions: &[(String, PathBuf)]) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::from(["index".to_string()]);
    submissions
        .iter()
        .map(|(name, _)| {
            let base: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let base = if base.trim_matches('.').is_empty() {
                "submission".to_string()
            } else {
                base
            };
            let mut page = base.clone();
            let mut n = 1;
            while !taken.insert(page.to_lowercase()) {
                n += 1;
                page = format!("{base}-{n}");
            }
            format!("{page}.html")
        })
        .collect()
}

/// Checks one submission in a fresh copy of its folder.
fn grade_one(settings: &Settings, index: usize, name: &str, path: &Path, page: &str) -> Graded {
    let started = Instant::now();
    let copy = settings.scratch.join(format!("{index}"));
    let copied = copy_tree(path, &copy, 0);
    let (server, client) = match copied {
        Err(error) => {
            let why = format!("cannot copy the submission: {error}");
            (
                run_side(
                    "server",
                    name,
                    &settings.server_checks,
                    settings,
                    &mut Broken(why.clone()),
                ),
                run_side(
                    "client",
                    name,
                    &settings.client_checks,
                    settings,
                    &mut Broken(why),
                ),
            )
        }
        Ok(()) => {
            let mut server_peer = server_peer(settings, &copy);
            let server = run_side(
                "server",
                name,
                &settings.server_checks,
                settings,
                server_peer.as_mut(),
            );
            drop(server_peer);
            let mut client_peer = client_peer(settings, &copy);
            let client = run_side(
                "client",
                name,
                &settings.client_checks,
                settings,
                client_peer.as_mut(),
            );
            (server, client)
        }
    };
    // The copy may hold what the submission wrote; it is of no use once checked.
    let _ = fs::remove_dir_all(&copy);
    let mut score = 0.0;
    let mut max = 0.0;
    for summary in [&server, &client] {
        for check in &summary.checks {
            let points = settings.rubric.points(&column(summary.mode, check.name));
            max += points;
            if check.status == Status::Pass {
                score += points;
            }
        }
    }
    Graded {
        name: name.to_string(),
        page: page.to_string(),
        server,
        client,
        score,
        max,
        took: started.elapsed(),
    }
}

fn run_side<C: Send + Sync + 'static>(
    mode: &'static str,
    name: &str,
    checks: &[&'static Check<C>],
    settings: &Settings,
    peer: &mut dyn Peer<C>,
) -> Summary {
    let quiet = Style {
        json: false,
        verbose: false,
        quiet: true,
        fail_fast: false,
    };
    report::run(
        mode,
        name.to_string(),
        checks,
        settings.timeout,
        peer,
        quiet,
    )
}

/// The servers of the submission copied to `copy`: started afresh for every check.
fn server_peer(settings: &Settings, copy: &Path) -> Box<dyn Peer<ServerConfig>> {
    if let Some(file) = settings.server_file {
        if !copy.join(file).is_file() {
            return Box::new(Broken(format!("the submission has no {file}")));
        }
    }
    let launch = Launch {
        command: settings.server_cmd.clone(),
        wrap: settings.wrap.clone(),
        users: settings.users.clone(),
        dir: copy.to_path_buf(),
        start_timeout: settings.start_timeout,
    };
    Box::new(Spawned::new(launch, settings.server.clone(), true))
}

/// The client of the submission copied to `copy`.
fn client_peer(settings: &Settings, copy: &Path) -> Box<dyn Peer<ClientConfig>> {
    if let Some(file) = settings.client_file {
        if !copy.join(file).is_file() {
            return Box::new(Broken(format!("the submission has no {file}")));
        }
    }
    let dir = copy.to_string_lossy().into_owned();
    let users = settings.users.to_string_lossy().into_owned();
    // `{users}` too: one --wrap serves both sides, and a sandbox may bind the users file.
    let values = [("dir", dir.as_str()), ("users", users.as_str())];
    let mut command = settings
        .wrap
        .as_ref()
        .map(|wrap| wrap.fill(&values))
        .unwrap_or_default();
    command.extend(settings.client_cmd.fill(&values));
    Box::new(Fixed(Arc::new(ClientConfig {
        command,
        dir: Some(copy.to_path_buf()),
    })))
}

/// A submission that cannot be run at all: every check fails with the same reason.
struct Broken(String);

impl<C> Peer<C> for Broken {
    fn before(&mut self, _check: &str) -> Result<Arc<C>, Problem> {
        Err(Problem::Fail(Failure::new(self.0.clone())))
    }

    fn after(&mut self, _check: &str) -> Aftermath {
        Aftermath::default()
    }
}

/// Copies the folder `from` to `to` (which must not exist): folders and regular files, not
/// symbolic links (a link could point anywhere, and the copy is the submission's world).
fn copy_tree(from: &Path, to: &Path, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "folders nested more than {MAX_DEPTH} deep"
        )));
    }
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, depth + 1)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// `grades.csv`: a row per submission, a column per check (`pass`, `fail`, `skip`), nothing
/// that changes from one run to the next.
fn write_gradebook(path: &Path, settings: &Settings, graded: &[Graded]) -> Result<(), String> {
    let mut writer = csv::Writer::from_path(path).map_err(|error| error.to_string())?;
    let mut header: Vec<String> = [
        "submission",
        "score",
        "max",
        "passed",
        "failed",
        "skipped",
        "server_stopped_answering_after",
    ]
    .map(String::from)
    .to_vec();
    let parts = parts(settings);
    header.extend(
        parts
            .iter()
            .map(|(mode, title)| format!("first_failed/{mode}/{title}")),
    );
    header.extend(
        settings
            .server_checks
            .iter()
            .map(|c| column("server", c.name)),
    );
    header.extend(
        settings
            .client_checks
            .iter()
            .map(|c| column("client", c.name)),
    );
    writer
        .write_record(&header)
        .map_err(|error| error.to_string())?;
    for one in graded {
        let mut row = vec![
            one.name.clone(),
            show_points(one.score),
            show_points(one.max),
            one.count(Status::Pass).to_string(),
            one.count(Status::Fail).to_string(),
            one.count(Status::Skip).to_string(),
            one.stopped_after().join(" "),
        ];
        row.extend(parts.iter().map(|(mode, title)| {
            one.first_failed(mode, title)
                .unwrap_or_default()
                .to_string()
        }));
        for summary in one.summaries() {
            row.extend(
                summary
                    .checks
                    .iter()
                    .map(|check| status_word(check.status).to_string()),
            );
        }
        writer
            .write_record(&row)
            .map_err(|error| error.to_string())?;
    }
    writer.flush().map_err(|error| error.to_string())
}

/// The parts of the protocol the chosen checks cover, as (mode, section title), in order.
pub fn parts(settings: &Settings) -> Vec<(&'static str, &'static str)> {
    let server = covered(server::CHECKS, &settings.server_checks);
    let client = covered(client::CHECKS, &settings.client_checks);
    server
        .into_iter()
        .map(|title| ("server", title))
        .chain(client.into_iter().map(|title| ("client", title)))
        .collect()
}

/// The titles of the sections of `registry` that hold any of `chosen`.
fn covered<C>(registry: Registry<C>, chosen: &[&'static Check<C>]) -> Vec<&'static str> {
    registry::titles(registry)
        .into_iter()
        .filter(|title| {
            chosen
                .iter()
                .any(|check| registry::section_of(registry, check.name) == Some(*title))
        })
        .collect()
}

/// `pass`, `fail`, `skip` or `not-run`.
pub fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Skip => "skip",
        Status::NotRun => "not-run",
    }
}
