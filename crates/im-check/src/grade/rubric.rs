//! A rubric: how many points each check is worth.
//!
//! One rule a line, `CHECK POINTS`, where `CHECK` is a check's column name
//! (`server/login-ok`, `client/prompts`), `server/*` or `client/*` for every check of a mode,
//! or `*` for every check; `#` starts a comment. The most specific rule wins; a check no rule
//! names is worth nothing. Without a rubric every check is worth one point.

use std::collections::BTreeMap;
use std::path::Path;

/// Points per check, read from a rubric file (or one point each).
#[derive(Clone, Debug, Default)]
pub struct Rubric {
    /// `None`: no rubric was given, every check is worth 1.
    rules: Option<BTreeMap<String, f64>>,
}

impl Rubric {
    /// Reads the rubric at `path`; every named check must be one of `known` (a misspelt name
    /// would silently be worth nothing).
    pub fn read(path: &Path, known: &[String]) -> Result<Rubric, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        Rubric::parse(&text, known).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// Parses a rubric's text (see the module's doc).
    pub fn parse(text: &str, known: &[String]) -> Result<Rubric, String> {
        let mut rules = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("line {}", number + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [check, points] = fields[..] else {
                return Err(format!("{at}: expected `CHECK POINTS`, got {line:?}"));
            };
            let points: f64 = points
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| format!("{at}: {points:?} is not a number of points"))?;
            let pattern = matches!(check, "*" | "server/*" | "client/*");
            if !pattern && !known.iter().any(|name| name == check) {
                return Err(format!(
                    "{at}: there is no check {check:?} (names look like server/login-ok or \
                     client/prompts; `im-check server --list` and `im-check client --list` \
                     show them)"
                ));
            }
            if rules.insert(check.to_string(), points).is_some() {
                return Err(format!("{at}: {check} is given points twice"));
            }
        }
        Ok(Rubric { rules: Some(rules) })
    }

    /// What the check `column` (`server/login-ok`) is worth.
    pub fn points(&self, column: &str) -> f64 {
        let Some(rules) = &self.rules else {
            return 1.0;
        };
        let mode = column.split('/').next().unwrap_or_default();
        rules
            .get(column)
            .or_else(|| rules.get(&format!("{mode}/*")))
            .or_else(|| rules.get("*"))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Points as a person writes them: `2`, `0.5`.
pub fn show_points(points: f64) -> String {
    // Sums of a few decimals: rounding to 1/1000 hides the binary noise (0.1 + 0.2).
    let rounded = (points * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["server/login-ok", "server/list", "client/prompts"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn the_most_specific_rule_wins_and_unnamed_checks_are_worth_nothing() {
        let rubric = Rubric::parse(
            "# points\nserver/* 2\nserver/login-ok 5 # the basics\n\n",
            &known(),
        )
        .expect("a valid rubric");
        assert_eq!(rubric.points("server/login-ok"), 5.0);
        assert_eq!(rubric.points("server/list"), 2.0);
        assert_eq!(rubric.points("client/prompts"), 0.0);
        let everything = Rubric::parse("* 0.5\nclient/prompts 1", &known()).expect("valid");
        assert_eq!(everything.points("server/list"), 0.5);
        assert_eq!(everything.points("client/prompts"), 1.0);
        assert_eq!(Rubric::default().points("server/list"), 1.0);
        assert_eq!(show_points(0.1 + 0.2), "0.3");
        assert_eq!(show_points(3.0), "3");
    }

    #[test]
    fn bad_rules_are_refused_with_their_line() {
        for (text, said) in [
            (
                "server/login-okk 1",
                "line 1: there is no check \"server/login-okk\"",
            ),
            ("\nserver/list", "line 2: expected `CHECK POINTS`"),
            ("server/list -1", "line 1: \"-1\" is not a number of points"),
            ("server/list one", "is not a number of points"),
            (
                "server/list 1\nserver/list 2",
                "line 2: server/list is given points twice",
            ),
        ] {
            let error = Rubric::parse(text, &known()).expect_err(text);
            assert!(error.contains(said), "{text:?}: {error}");
        }
    }
}
