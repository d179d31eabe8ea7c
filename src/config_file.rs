//! `--config FILE`: a TOML file of a command's long options, `key = value` with the flags' own
//! names (`ack-timeout = "10s"`, `max-line = 65536`, `reuse-port = true`) and the positional
//! arguments by name (`port = 4000`, `users-file = "/etc/simple-im/users.txt"`).
//!
//! The file is turned into command-line arguments that go before the real ones, and each value
//! is first checked by the very value parser of its flag: the file and the command line accept
//! exactly the same things, and a bad value is reported at its line. A flag given on the
//! command line wins over the file.
//!
//! A relative path in the file (`users-file = "users.txt"`, `tls-cert`…) is relative to the
//! file's own directory, as nginx and systemd read theirs: the file and what it names move
//! together, wherever the server is started from. On the command line a path stays relative
//! to the current directory, as everywhere.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, ValueHint};
use toml::Spanned;

/// What a configuration file adds to a command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileArgs {
    /// `--long=value` (or `--long` for a flag set to `true`): to go before the command line's
    /// own arguments.
    pub options: Vec<OsString>,
    /// Positional arguments the command line lacks, in order: to go after it.
    pub positionals: Vec<OsString>,
}

/// Reads the file at `path` as options of `command`, skipping those the command line
/// (`given`) already has and the ids in `not_in_file` (actions such as `--hash-password`, and
/// `--config` itself); a relative path in it is made relative to the file's directory. The
/// error is one line: `FILE: line N: reason` (or `FILE: reason`).
pub fn file_args(
    command: &Command,
    given: &ArgMatches,
    path: &Path,
    not_in_file: &[&str],
) -> Result<FileArgs, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|err| format!("{shown}: {err}"))?;
    // Absolute, so that what the paths become says where they are whatever the current
    // directory (no symbolic link is resolved: the file's directory as named).
    let base = std::path::absolute(path).map_err(|err| format!("{shown}: {err}"))?;
    let base = base.parent().unwrap_or(Path::new("/"));
    parse(command, given, &text, not_in_file, base).map_err(|(line, reason)| match line {
        Some(line) => format!("{shown}: line {line}: {reason}"),
        None => format!("{shown}: {reason}"),
    })
}

/// [`file_args`] on the file's text, its relative paths made relative to `base`; the error is
/// its line (if known) and the reason.
fn parse(
    command: &Command,
    given: &ArgMatches,
    text: &str,
    not_in_file: &[&str],
    base: &Path,
) -> Result<FileArgs, (Option<usize>, String)> {
    let line_of = |offset: usize| 1 + text[..offset.min(text.len())].matches('\n').count();
    type Entries = std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>;
    let entries: Entries = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| line_of(span.start));
        (line, err.message().trim().to_owned())
    })?;
    // In the file's order, so that the first bad line is the one reported.
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);

    let mut out = FileArgs::default();
    let mut positionals = Vec::new();
    for (key, value) in entries {
        let at_key = Some(line_of(key.span().start));
        let at_value = Some(line_of(value.span().start));
        let name = key.get_ref().as_str();
        let Some(arg) = command.get_arguments().find(|arg| {
            !arg.is_hide_set()
                && !not_in_file.contains(&arg.get_id().as_str())
                && file_key(arg).as_deref() == Some(name)
        }) else {
            return Err((at_key, format!("unknown key {name:?}")));
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let text = match (value.get_ref(), flag) {
            (toml::Value::Boolean(on), true) => on.to_string(),
            (_, true) => return Err((at_value, format!("{name}: expected true or false"))),
            (toml::Value::String(text), false) => text.clone(),
            (toml::Value::Integer(number), false) => number.to_string(),
            (_, false) => return Err((at_value, format!("{name}: expected a string or a number"))),
        };
        if !flag {
            // The flag's own parser: whatever it refuses on the command line, it refuses here.
            check(command, arg, &text).map_err(|reason| (at_value, reason))?;
        }
        let id = arg.get_id().as_str();
        if matches!(given.value_source(id), Some(ValueSource::CommandLine)) {
            continue;
        }
        let value = match is_path(arg) && Path::new(&text).is_relative() {
            true => base.join(&text).into_os_string(),
            false => OsString::from(&text),
        };
        match arg.get_long() {
            Some(long) if flag => {
                if text == "true" {
                    out.options.push(format!("--{long}").into());
                }
            }
            Some(long) => {
                let mut option = OsString::from(format!("--{long}="));
                option.push(value);
                out.options.push(option);
            }
            None => positionals.push((name.to_owned(), value)),
        }
    }
    // A positional argument can only follow those before it: the command line's, or the file's.
    let mut missing = None;
    for arg in command.get_positionals() {
        let id = arg.get_id().as_str();
        if matches!(given.value_source(id), Some(ValueSource::CommandLine)) {
            continue;
        }
        let key = file_key(arg).unwrap_or_default();
        match positionals.iter().position(|(name, _)| *name == key) {
            Some(at) => {
                let (name, value) = positionals.swap_remove(at);
                if let Some(missing) = missing {
                    return Err((None, format!("{name} needs {missing} too")));
                }
                out.positionals.push(value);
            }
            None => missing = missing.or(Some(key)),
        }
    }
    Ok(out)
}

/// Whether `arg` takes a path (a `PathBuf`, or a value hint that says so).
fn is_path(arg: &Arg) -> bool {
    matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
    )
}

/// The key that stands for `arg` in a file: its long name, or a positional's id in kebab case.
pub fn file_key(arg: &clap::Arg) -> Option<String> {
    match arg.get_long() {
        Some(long) => Some(long.to_owned()),
        None if arg.is_positional() => Some(arg.get_id().as_str().replace('_', "-")),
        None => None,
    }
}

/// The effective settings of `matches` as a TOML file that [`file_args`] reads back: every
/// option and positional argument of `command` that has a value, but those in `not_in_file`.
pub fn effective(command: &Command, matches: &ArgMatches, not_in_file: &[&str]) -> String {
    let mut out = String::new();
    for (key, value) in effective_values(command, matches, not_in_file) {
        out += &format!("{key} = {value}\n");
    }
    out
}

/// [`effective`]'s lines as (key, TOML value) pairs, in the command's order.
pub fn effective_values(
    command: &Command,
    matches: &ArgMatches,
    not_in_file: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(key) = file_key(arg) else { continue };
        if arg.is_hide_set() || not_in_file.contains(&id) {
            continue;
        }
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            out.push((key, matches.get_flag(id).to_string()));
            continue;
        }
        let Some(mut raw) = matches.get_raw(id) else {
            continue;
        };
        let Some(value) = raw.next() else { continue };
        out.push((key, toml_value(&value.to_string_lossy())));
    }
    out
}

/// `text` as a TOML value: a number as it is, anything else a quoted string.
pub fn toml_value(text: &str) -> String {
    if !text.is_empty() && text.len() < 19 && text.bytes().all(|b| b.is_ascii_digit()) {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

/// Parses `text` as `arg`'s value with the flag's own value parser, in a command that holds
/// that argument alone (the rest of the command line is not there to be checked).
fn check(command: &Command, arg: &clap::Arg, text: &str) -> Result<(), String> {
    let id = arg.get_id().clone();
    let mut alone = Arg::new(id)
        .action(ArgAction::Set)
        .value_parser(arg.get_value_parser().clone());
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.iter().cloned());
    }
    let line: [OsString; 2] = match arg.get_long() {
        Some(long) => {
            alone = alone.long(long.to_owned());
            [command.get_name().into(), format!("--{long}={text}").into()]
        }
        None => [command.get_name().into(), text.into()],
    };
    Command::new(command.get_name().to_owned())
        .no_binary_name(false)
        .arg(alone)
        .try_get_matches_from(line)
        .map(drop)
        .map_err(|err| first_line(&err.to_string()))
}

/// A clap error's first line, without its `error: ` prefix.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::value_parser;

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("port").value_parser(value_parser!(u16)))
            .arg(Arg::new("users_file").value_parser(value_parser!(std::path::PathBuf)))
            .arg(
                Arg::new("tls_cert")
                    .long("tls-cert")
                    .value_parser(value_parser!(std::path::PathBuf)),
            )
            .arg(Arg::new("config").long("config"))
            .arg(
                Arg::new("max_line")
                    .long("max-line")
                    .value_parser(value_parser!(u64).range(2..)),
            )
            .arg(
                Arg::new("reuse_port")
                    .long("reuse-port")
                    .action(ArgAction::SetTrue),
            )
    }

    fn run(line: &[&str], text: &str) -> Result<FileArgs, (Option<usize>, String)> {
        let given = command().try_get_matches_from(line).unwrap();
        parse(&command(), &given, text, &["config"], Path::new("/etc/im"))
    }

    #[test]
    fn values_become_arguments_and_the_command_line_wins() {
        let text = "port = 4000\nusers-file = \"u.txt\"\nmax-line = 100\nreuse-port = true\n";
        let args = run(&["t"], text).unwrap();
        assert_eq!(args.options, ["--max-line=100", "--reuse-port"]);
        assert_eq!(args.positionals, ["4000", "/etc/im/u.txt"]);
        let args = run(&["t", "5000", "--max-line", "7"], text).unwrap();
        assert_eq!(args.options, ["--reuse-port"]);
        assert_eq!(args.positionals, ["/etc/im/u.txt"]);
    }

    #[test]
    fn relative_paths_are_the_files_and_the_command_lines_are_the_current_directorys() {
        let text = "users-file = \"sub/u.txt\"\ntls-cert = \"/abs/cert.pem\"\nport = 1\n";
        let args = run(&["t"], text).unwrap();
        assert_eq!(args.options, ["--tls-cert=/abs/cert.pem"]);
        assert_eq!(args.positionals, ["1", "/etc/im/sub/u.txt"]);
        let text = "tls-cert = \"../cert.pem\"\n";
        let args = run(&["t", "1", "u.txt"], text).unwrap();
        assert_eq!(args.options, ["--tls-cert=/etc/im/../cert.pem"]);
        // The command line's own, untouched: clap reads them as given.
        let args = run(&["t", "1", "u.txt", "--tls-cert", "c.pem"], text).unwrap();
        assert!(args.options.is_empty() && args.positionals.is_empty());
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = |text: &str| run(&["t"], text).unwrap_err();
        assert_eq!(bad("\nmax-lines = 3\n").0, Some(2));
        assert!(bad("\nmax-lines = 3\n")
            .1
            .contains("unknown key \"max-lines\""));
        let (line, reason) = bad("port = 1\n\n\nmax-line = 1\n");
        assert_eq!(line, Some(4));
        assert!(reason.contains("--max-line"), "{reason}");
        assert_eq!(bad("port = 99999\n").0, Some(1));
        assert_eq!(bad("reuse-port = \"yes\"\n").0, Some(1));
        assert_eq!(bad("config = \"x\"\n").0, Some(1));
        assert_eq!(bad("max-line = [1]\n").0, Some(1));
        assert_eq!(bad("a = \n").0, Some(1));
        assert_eq!(bad("[server]\nport = 1\n").0, Some(1));
        assert!(bad("users-file = \"u\"\n").1.contains("needs port"));
    }

    #[test]
    fn effective_settings_read_back() {
        let given = command()
            .try_get_matches_from(["t", "9", "u", "--max-line", "5"])
            .unwrap();
        let text = effective(&command(), &given, &["config"]);
        assert_eq!(
            text,
            "port = 9\nusers-file = \"u\"\nmax-line = 5\nreuse-port = false\n"
        );
        assert_eq!(
            effective_values(&command(), &given, &["config"])[..2],
            [
                ("port".into(), "9".into()),
                ("users-file".into(), "\"u\"".into())
            ]
        );
        assert_eq!(run(&["t"], &text).unwrap().options, ["--max-line=5"]);
    }
}
