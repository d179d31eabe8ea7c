//! `--junit FILE`: the grades as a JUnit XML report for CI systems, a test suite per
//! submission and a test case per check (written by `quick-junit`, which also drops what XML
//! cannot hold from a submission's output).

use std::path::Path;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{column, Graded};
use crate::report::Status;

/// Writes the report for `graded` to `path`.
pub fn write(path: &Path, graded: &[Graded]) -> Result<(), String> {
    let mut report = Report::new("im-check grade");
    for one in graded {
        let mut suite = TestSuite::new(one.name.as_str());
        for summary in one.summaries() {
            for check in &summary.checks {
                let status = match check.status {
                    Status::Pass => TestCaseStatus::success(),
                    Status::Skip | Status::NotRun => {
                        let mut status = TestCaseStatus::skipped();
                        if let Some(reason) = &check.reason {
                            status.set_message(reason.as_str());
                        }
                        status
                    }
                    Status::Fail => {
                        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        status.set_message(check.reason.as_deref().unwrap_or_default());
                        status.set_description(check.transcript.join("\n"));
                        status
                    }
                };
                let mut case = TestCase::new(column(summary.mode, check.name), status);
                case.set_classname(one.name.as_str());
                case.set_time(std::time::Duration::from_millis(check.millis));
                let mut output = String::new();
                if let Some(why) = &check.stopped_answering {
                    output.push_str(&format!(
                        "the server stopped answering after this check: {why}\n"
                    ));
                }
                if let Some(printed) = &check.peer_output {
                    output.push_str(printed);
                }
                if !output.is_empty() {
                    case.set_system_out(output);
                }
                suite.add_test_case(case);
            }
        }
        report.add_test_suite(suite);
    }
    let xml = report
        .to_string()
        .map_err(|error| format!("JUnit report: {error}"))?;
    std::fs::write(path, xml).map_err(|error| format!("{}: {error}", path.display()))
}
