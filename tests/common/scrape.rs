//! A strict reader of the OpenMetrics text that `im-server --metrics` serves: every line must
//! be a `# HELP`, `# TYPE` or `# UNIT` of a family, or a sample of the family last typed (a
//! counter's `_total`, a gauge's own name, a histogram's `_bucket`, `_sum` and `_count`), with
//! `# EOF` last; anything else fails the test with the line.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// The samples of one scrape, by series as written: `name` or `name{label="value",…}`.
#[derive(Debug)]
pub struct Scrape {
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses a whole scrape, panicking on the first line that breaks the format.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut family: Option<(String, String)> = None;
        let mut lines = text.lines().peekable();
        let mut ended = false;
        while let Some(line) = lines.next() {
            assert!(!ended, "{line:?} after # EOF");
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "# EOF is not last");
                ended = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (Some(kind), Some(name), Some(value)) =
                    (words.next(), words.next(), words.next())
                else {
                    panic!("malformed comment line {line:?}");
                };
                assert!(is_name(name), "bad metric name in {line:?}");
                match kind {
                    "TYPE" => {
                        assert!(
                            ["counter", "gauge", "histogram"].contains(&value),
                            "unexpected type in {line:?}"
                        );
                        family = Some((name.to_owned(), value.to_owned()));
                    }
                    "HELP" | "UNIT" => assert!(!value.is_empty(), "empty {kind} in {line:?}"),
                    _ => panic!("unknown comment {line:?}"),
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed sample {line:?}"));
            let name = series.split('{').next().unwrap_or(series);
            let Some((family_name, kind)) = &family else {
                panic!("sample {line:?} before any # TYPE");
            };
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                _ => &["_bucket", "_sum", "_count"],
            };
            assert!(
                suffixes
                    .iter()
                    .any(|suffix| name == format!("{family_name}{suffix}")),
                "sample {line:?} is not of the {kind} {family_name}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    check_labels(labels, line);
                }
            }
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "{series} twice"
            );
        }
        assert!(ended, "no # EOF at the end");
        Scrape { samples }
    }

    /// The value of one series, written as in the scrape; panics if it is not there.
    pub fn get(&self, series: &str) -> f64 {
        *self.samples.get(series).unwrap_or_else(|| {
            let known: Vec<&String> = self.samples.keys().collect();
            panic!("no {series} in the scrape; it has {known:?}")
        })
    }

    /// Every series and its value.
    pub fn samples(&self) -> &BTreeMap<String, f64> {
        &self.samples
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `{key="value",…}` with plain label names and values free of quotes and escapes.
fn check_labels(labels: &str, line: &str) {
    let inner = labels
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("malformed labels in {line:?}"));
    for pair in inner.split(',') {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("malformed label in {line:?}"));
        assert!(is_name(key), "bad label name in {line:?}");
        let value = value
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        assert!(
            !value.contains(['"', '\\']),
            "unexpected label value in {line:?}"
        );
    }
}
