//! The HTML reports: one self-contained page per submission (no scripts, no links out, the
//! style inline) with the byte transcript of every failure, and an index of them all.
//!
//! Everything a submission or its checks produced is escaped on the way in: a submission's
//! output is untrusted text, shown, never interpreted.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use super::{column, status_word, Graded, Settings};
use crate::grade::rubric::show_points;
use crate::report::{CheckReport, Status};

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:75em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;\
vertical-align:top}.pass{background:#e6f4e6}.fail{background:#fbe3e3}.skip{background:#eee}.not-run{background:#eee}\
.stopped{background:#fff0c0;padding:.5em}pre{background:#f6f6f6;padding:.5em;overflow-x:auto;\
white-space:pre-wrap}section{border-top:1px solid #ccc;margin-top:1.5em}";

/// Writes `index.html` and a page per submission into the output folder; the paths written.
pub fn write(settings: &Settings, graded: &[Graded]) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for one in graded {
        let path = settings.out.join(&one.page);
        fs::write(&path, page(one)).map_err(|error| format!("{}: {error}", path.display()))?;
        written.push(path);
    }
    let path = settings.out.join("index.html");
    fs::write(&path, index(settings, graded))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    written.push(path);
    Ok(written)
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        text(title)
    )
}

/// The anchor of a check's row, and of its details below the table.
fn anchors(column: &str) -> (String, String) {
    let id: String = column
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    (format!("check-{id}"), format!("details-{id}"))
}

/// `server §1 wire basics: overlong-line; …` for every part of the protocol where a check of
/// `one` failed.
fn first_failures(parts: &[(&str, &str)], one: &Graded) -> String {
    parts
        .iter()
        .filter_map(|(mode, title)| {
            one.first_failed(mode, title)
                .map(|check| format!("{mode} {title}: {check}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn index(settings: &Settings, graded: &[Graded]) -> String {
    let parts = super::parts(settings);
    let mut html = head("im-check: grades");
    html.push_str(
        "<h1>Grades</h1>\n<table id=\"grades\">\n<tr><th>submission</th><th>score</th>\
                   <th>max</th><th>passed</th><th>failed</th><th>skipped</th>\
                   <th>server stopped answering after</th><th>first failed check in each \
                   part of the protocol</th></tr>\n",
    );
    for one in graded {
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            attr(&one.page),
            text(&one.name),
            show_points(one.score),
            show_points(one.max),
            one.count(Status::Pass),
            one.count(Status::Fail),
            one.count(Status::Skip),
            text(&one.stopped_after().join(", ")),
            text(&first_failures(&parts, one))
        );
    }
    html.push_str(
        "</table>\n<h2>Checks</h2>\n<table id=\"checks\">\n<tr><th>check</th>\
                   <th>passed by</th><th>what it checks</th></tr>\n",
    );
    let modes = [
        (
            "server",
            settings
                .server_checks
                .iter()
                .map(|c| (c.name, c.description))
                .collect::<Vec<_>>(),
        ),
        (
            "client",
            settings
                .client_checks
                .iter()
                .map(|c| (c.name, c.description))
                .collect(),
        ),
    ];
    for (mode, checks) in modes {
        for (name, description) in checks {
            let passed = graded
                .iter()
                .filter(|one| {
                    one.summaries().iter().any(|summary| {
                        summary.mode == mode
                            && summary
                                .checks
                                .iter()
                                .any(|c| c.name == name && c.status == Status::Pass)
                    })
                })
                .count();
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{passed} of {}</td><td>{}</td></tr>",
                text(&column(mode, name)),
                graded.len(),
                text(description)
            );
        }
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

fn page(one: &Graded) -> String {
    let mut html = head(&format!("im-check: {}", one.name));
    let _ = writeln!(
        html,
        "<p><a href=\"index.html\">All submissions</a></p>\n<h1>{}</h1>\n\
         <p id=\"score\">{} of {} points: {} passed, {} failed, {} skipped.</p>",
        text(&one.name),
        show_points(one.score),
        show_points(one.max),
        one.count(Status::Pass),
        one.count(Status::Fail),
        one.count(Status::Skip)
    );
    for summary in one.summaries() {
        for check in &summary.checks {
            if let Some(why) = &check.stopped_answering {
                let (_, details) = anchors(&column(summary.mode, check.name));
                let _ = writeln!(
                    html,
                    "<p class=\"stopped\">The server stopped answering after \
                     <a href=\"#{}\">{}</a>: {}</p>",
                    attr(&details),
                    text(check.name),
                    text(why)
                );
            }
        }
    }
    let mut details = String::new();
    for summary in one.summaries() {
        if summary.checks.is_empty() {
            continue;
        }
        let _ = writeln!(
            html,
            "<h2>{}</h2>\n<table class=\"checks\">\n<tr><th>check</th><th>result</th>\
             <th>why</th></tr>",
            text(summary.mode)
        );
        for check in &summary.checks {
            let name = column(summary.mode, check.name);
            let (row, below) = anchors(&name);
            let has_details = check.status == Status::Fail || check.stopped_answering.is_some();
            let label = if has_details {
                format!("<a href=\"#{}\">{}</a>", attr(&below), text(check.name))
            } else {
                text(check.name).into_owned()
            };
            let _ = writeln!(
                html,
                "<tr id=\"{}\" class=\"{}\"><td>{label}</td><td>{}</td><td>{}</td></tr>",
                attr(&row),
                status_word(check.status),
                status_word(check.status).to_uppercase(),
                text(check.reason.as_deref().unwrap_or(check.description))
            );
            if has_details {
                details.push_str(&section(&name, &row, &below, check));
            }
        }
        html.push_str("</table>\n");
    }
    html.push_str(&details);
    html.push_str("</body>\n</html>\n");
    html
}

/// A failed check (or one the server stopped answering after): what was due, what came, the
/// wire transcript and what the server printed.
fn section(name: &str, row: &str, id: &str, check: &CheckReport) -> String {
    let mut html = format!(
        "<section id=\"{}\" class=\"details\">\n<h3><a href=\"#{}\">{}</a>: {}</h3>\n\
         <p>{}</p>\n",
        attr(id),
        attr(row),
        text(name),
        status_word(check.status).to_uppercase(),
        text(check.description)
    );
    if let Some(reason) = &check.reason {
        let _ = writeln!(html, "<p class=\"reason\">{}</p>", text(reason));
    }
    if let Some(why) = &check.stopped_answering {
        let _ = writeln!(
            html,
            "<p class=\"stopped\">Then the server stopped answering: {}</p>",
            text(why)
        );
    }
    if check.expected.is_some() || check.actual.is_some() {
        html.push_str("<dl>\n");
        if let Some(expected) = &check.expected {
            let _ = writeln!(
                html,
                "<dt>expected</dt><dd><code class=\"expected\">{}</code></dd>",
                text(expected)
            );
        }
        if let Some(actual) = &check.actual {
            let _ = writeln!(
                html,
                "<dt>got</dt><dd><code class=\"actual\">{}</code></dd>",
                text(actual)
            );
        }
        html.push_str("</dl>\n");
    }
    if !check.transcript.is_empty() {
        let _ = writeln!(
            html,
            "<h4>What went over the wire</h4>\n<pre class=\"transcript\">{}</pre>",
            text(&check.transcript.join("\n"))
        );
    }
    if let Some(output) = &check.peer_output {
        let _ = writeln!(
            html,
            "<h4>What the program printed</h4>\n<pre class=\"output\">{}</pre>",
            text(output)
        );
    }
    html.push_str("</section>\n");
    html
}
