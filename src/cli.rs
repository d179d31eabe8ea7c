//! What the binaries' command lines share: durations written like `500ms`, `10s` or `1m30s`,
//! and a client's TLS options.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use simple_im_core::server::Budget;
use simple_im_core::tls::ClientTls;

/// `--tls`, `--ca` and `--server-name`: how a client (`im-client`, `im-bench`) speaks TLS.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientTlsArgs {
    /// Speak TLS on both connections (the server runs with --tls-cert): the server's
    /// certificate is verified against the system's root certificates (or --ca), on La and
    /// again on Lb, so only the real server can send messages to this client.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust the CA certificates in this PEM file instead of the system's (for a
    /// private CA or a self-signed server certificate).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry, when it is not the server's
    /// name or address as given (say, an IP address, and a certificate that names the host).
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,
}

impl ClientTlsArgs {
    /// The TLS settings for a server reached as `host`; `None` without `--tls`. `Err` is the
    /// one-line reason (a CA file that cannot be read, a name that is not one).
    pub fn client_tls(&self, host: &str) -> Result<Option<ClientTls>, String> {
        if !self.tls {
            return Ok(None);
        }
        let name = self.server_name.as_deref().unwrap_or(host);
        crate::tls::client_tls(self.ca.as_deref(), name).map(Some)
    }
}

/// `--generate DIR` (hidden, for packaging): writes `command`'s man page (`NAME.1`) and its
/// completions for bash (`NAME.bash`), zsh (`_NAME`) and fish (`NAME.fish`) into `dir`. The
/// error is one line naming the file.
pub fn generate(command: clap::Command, dir: &Path) -> Result<(), String> {
    use clap_complete::Shell;

    let at = |path: &Path, err: std::io::Error| format!("{}: {err}", path.display());
    std::fs::create_dir_all(dir).map_err(|err| at(dir, err))?;
    let name = command.get_name().to_owned();
    let page = dir.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut roff)
        .and_then(|()| std::fs::write(&page, roff))
        .map_err(|err| at(&page, err))?;
    let mut command = command;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command, &name, dir).map_err(|err| at(dir, err))?;
    }
    Ok(())
}

/// A duration in [`humantime`]'s syntax: numbers with units, like `500ms`, `10s`, `2m` or
/// `1m30s`.
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
        humantime::parse_duration(text)
            .map(Span)
            .map_err(|err| format!("{text:?}: {err}; expected a duration like 500ms, 10s or 1m30s"))
    }
}

/// Writes the span in humantime's units without the spaces between them (`1m30s`), so
/// `--help` shows defaults as they would be typed.
impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = humantime::format_duration(self.0).to_string();
        f.write_str(&text.replace(' ', ""))
    }
}

/// A positive [`Span`], or `off`: for a feature that is on by default, like `--keepalive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanOrOff(pub Option<Duration>);

impl FromStr for SpanOrOff {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(SpanOrOff(None));
        }
        Span::positive(text)
            .map(|span| SpanOrOff(Some(span.0)))
            .map_err(|err| format!("{err} (or off)"))
    }
}

impl fmt::Display for SpanOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(duration) => Span(duration).fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A token bucket written `BURST/PERIOD` (`10/30s`: ten at once, then one every 30 s), or
/// `off`: a budget of the login throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetOrOff(pub Option<Budget>);

impl FromStr for BudgetOrOff {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(BudgetOrOff(None));
        }
        let expected =
            "expected BURST/PERIOD like 10/30s (ten at once, then one every 30s), or off";
        let Some((burst, period)) = text.split_once('/') else {
            return Err(format!("{text:?}: {expected}"));
        };
        let burst = match burst.parse::<u32>() {
            Ok(burst @ 1..) => burst,
            _ => {
                return Err(format!(
                    "{text:?}: the burst must be a whole number from 1; {expected}"
                ))
            }
        };
        let period = Span::positive(period).map_err(|err| format!("{err}; {expected}"))?;
        Ok(BudgetOrOff(Some(Budget::new(burst, period.0))))
    }
}

impl fmt::Display for BudgetOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(budget) => write!(f, "{}/{}", budget.burst, Span(budget.period)),
            None => f.write_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_as_typed() {
        for text in ["500ms", "10s", "2m", "1h", "0s", "1m30s", "1s500ms"] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.to_string(), text);
        }
        for (text, duration) in [
            ("90s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            ("1500ms", Duration::from_millis(1500)),
            ("300s", Duration::from_secs(300)),
        ] {
            assert_eq!(text.parse::<Span>().unwrap().0, duration, "{text:?}");
        }
        // The defaults print as a user would type them.
        assert_eq!(Span(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(Span(Duration::from_secs(10)).to_string(), "10s");
        for bad in ["", "10", "s", "-1s", "10parsecs", "99999999999999999999h"] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?}");
        }
        assert!(Span::positive("0s").is_err());
        assert!(Span::positive("0ms").is_err());
        assert!(Span::positive("1ms").is_ok());
    }

    #[test]
    fn keepalive_spans_take_off() {
        assert_eq!("off".parse::<SpanOrOff>(), Ok(SpanOrOff(None)));
        let minute = SpanOrOff(Some(Duration::from_secs(60)));
        assert_eq!("60s".parse::<SpanOrOff>(), Ok(minute));
        assert_eq!(minute.to_string(), "1m");
        assert_eq!(SpanOrOff(None).to_string(), "off");
        for bad in ["0s", "on", "", "Off"] {
            assert!(bad.parse::<SpanOrOff>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn budgets_parse_print_and_take_off() {
        let budget = "10/30s".parse::<BudgetOrOff>().unwrap();
        assert_eq!(
            budget,
            BudgetOrOff(Some(Budget::new(10, Duration::from_secs(30))))
        );
        assert_eq!(budget.to_string(), "10/30s");
        assert_eq!("off".parse::<BudgetOrOff>(), Ok(BudgetOrOff(None)));
        assert_eq!(BudgetOrOff(None).to_string(), "off");
        for bad in [
            "", "10", "10/", "/30s", "0/30s", "10/0s", "-1/1s", "x/1s", "10/30",
        ] {
            assert!(bad.parse::<BudgetOrOff>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn printed_spans_parse_back() {
        for millis in [
            1, 999, 1_000, 1_001, 59_999, 60_000, 90_500, 3_600_000, 86_400_000,
        ] {
            let span = Span(Duration::from_millis(millis));
            assert_eq!(span.to_string().parse::<Span>().unwrap(), span, "{span}");
        }
    }
}
