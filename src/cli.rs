//! What the binaries' command lines share: durations written like `500ms` or `10s`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written as a whole number and a unit: `ms`, `s`, `m` or `h` (`500ms`, `10s`, `2m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// Parses a span that must be longer than zero: a timeout of zero would fail everything.
    pub fn positive(text: &str) -> Result<Span, String> {
        let span: Span = text.parse()?;
        if span.0.is_zero() {
            return Err("must be longer than zero".to_owned());
        }
        Ok(span)
    }
}

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let expected = || {
            format!("{text:?}: expected a whole number and a unit (ms, s, m, h), like 500ms or 10s")
        };
        let number: u64 = number.parse().map_err(|_| expected())?;
        let millis_per_unit = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(expected()),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        Ok(Span(Duration::from_millis(millis)))
    }
}

/// Writes the largest unit that is exact, so `--help` shows defaults as they would be typed.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis % 1_000 != 0 || millis == 0 {
            write!(f, "{millis}ms")
        } else if millis % 3_600_000 == 0 {
            write!(f, "{}h", millis / 3_600_000)
        } else if millis % 60_000 == 0 {
            write!(f, "{}m", millis / 60_000)
        } else {
            write!(f, "{}s", millis / 1_000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_as_typed() {
        for text in ["500ms", "10s", "2m", "1h", "0ms", "1500ms"] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.to_string(), text);
        }
        assert_eq!("90s".parse::<Span>().unwrap().0, Duration::from_secs(90));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "10sec",
            "99999999999999999h",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
        assert!(Span::positive("0s").is_err());
        assert!(Span::positive("1ms").is_ok());
    }
}
