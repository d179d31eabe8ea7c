//! SIGHUP's decision, made once above the runtimes: read the settings again (the `--config`
//! file under the same command line, whose flags still win), see what changed, and hand the
//! running server what it can change without dropping anyone ([`Reload`]). Every runtime then
//! only passes that to its driver.
//!
//! A reload is all or nothing: a file that does not parse, a bad value, a users file or a
//! certificate that cannot be read, and nothing changes, the accounts included. A setting
//! that only a restart can change (the port, the runtime, the cluster…) is logged, once per
//! reload, and left as it is.

use std::path::{Path, PathBuf};

use simple_im_core::driver::{Keepalive, Reload};
use simple_im_core::server::ServerConfig;
use simple_im_core::users::Users;

/// The settings of a running server, as the command line and its `--config` file give them.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `--config` file, if any: where a changed setting comes from.
    pub config_file: Option<PathBuf>,
    /// The accounts' file.
    pub users_file: PathBuf,
    /// The hub's limits.
    pub server: ServerConfig,
    /// Clients connected at once.
    pub max_connections: usize,
    /// Clients connected at once from one IP address.
    pub max_per_ip: usize,
    /// TCP keepalive on client sockets.
    pub keepalive: Option<Keepalive>,
    /// The certificate chain and key, if the server speaks TLS.
    pub tls: Option<TlsFiles>,
    /// The log level; `None` while `RUST_LOG` decides it.
    pub log: Option<log::LevelFilter>,
    /// Every setting as a `--config` file's key and value (`ack-timeout`, `"10s"`), those
    /// with no value left out: what is compared to say what changed.
    pub effective: Vec<(String, String)>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The chain, the server's certificate first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The settings a reload puts in force; any other that changed waits for a restart. Each is
/// read by the hub or the driver when it is used, so a new value needs no one to reconnect.
pub const RELOADABLE: &[&str] = &[
    "users-file",
    "ack-timeout",
    "connect-timeout",
    "login-timeout",
    "max-login-failures",
    "max-line",
    "max-queue",
    "throttle-address",
    "throttle-address-account",
    "throttle-account",
    "login-trust",
    "throttle-reconnects",
    "password-checks",
    "password-check-queue",
    "max-connections",
    "max-per-ip",
    "keepalive",
    // A renewed certificate, for connections from now on; TLS on or off waits for a restart.
    "tls-cert",
    "tls-key",
    "log",
];

/// What a reload would do: the settings to put in force, and what it says about them.
#[derive(Debug)]
pub struct Plan {
    /// The settings read, but those that only a restart can change, which stay as they are.
    pub settings: Settings,
    /// The keys of reloadable settings that changed: (key, old value, new value).
    pub changed: Vec<(String, Option<String>, Option<String>)>,
    /// The keys of settings that changed but wait for a restart.
    pub at_restart: Vec<String>,
}

/// Compares the settings `read` to those `in_force`: see [`Plan`].
pub fn plan(in_force: &Settings, read: Settings) -> Plan {
    let value = |settings: &Settings, key: &str| {
        let found = settings.effective.iter().find(|(k, _)| k == key);
        found.map(|(_, value)| value.clone())
    };
    let mut keys: Vec<String> = Vec::new();
    for (key, _) in in_force.effective.iter().chain(&read.effective) {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    let tls_switched = in_force.tls.is_some() != read.tls.is_some();
    let mut settings = read;
    let (mut changed, mut at_restart) = (Vec::new(), Vec::new());
    for key in keys {
        let (old, new) = (value(in_force, &key), value(&settings, &key));
        if old == new {
            continue;
        }
        let tls = key == "tls-cert" || key == "tls-key";
        if RELOADABLE.contains(&key.as_str()) && !(tls && tls_switched) {
            changed.push((key, old, new));
            continue;
        }
        // What runs stays what is said to run, so that the next reload warns again.
        settings.effective.retain(|(k, _)| *k != key);
        if let Some(old) = old {
            settings.effective.push((key.clone(), old));
        }
        at_restart.push(key);
    }
    if tls_switched {
        settings.tls = in_force.tls.clone();
    }
    Plan {
        settings,
        changed,
        at_restart,
    }
}

/// Reads the settings again on demand, and says what to put in force.
pub struct Reloader {
    in_force: Settings,
    reread: Box<dyn FnMut() -> Result<Settings, String> + Send>,
}

impl Reloader {
    /// A reloader for a server started with `in_force`; `reread` reads the settings again
    /// (the same command line, the `--config` file as it is now), its error one line.
    pub fn new(
        in_force: Settings,
        reread: impl FnMut() -> Result<Settings, String> + Send + 'static,
    ) -> Self {
        Reloader {
            in_force,
            reread: Box::new(reread),
        }
    }

    /// The settings in force.
    pub fn in_force(&self) -> &Settings {
        &self.in_force
    }

    /// Reads the settings, the users file and the certificate again: what the server must
    /// change, or `None` if anything is wrong (logged, and nothing changes). Logs each
    /// setting changed, and each that waits for a restart; sets the log level itself, since
    /// that belongs to the process, not to the server.
    pub fn reload(&mut self) -> Option<Reload> {
        let refused = "the file is refused: the accounts and settings in force stay";
        let read = match (self.reread)() {
            Ok(read) => read,
            Err(reason) => {
                log::error!("SIGHUP: {reason}; {refused}");
                return None;
            }
        };
        let plan = plan(&self.in_force, read);
        let settings = plan.settings;
        let users = match read_users(&settings.users_file) {
            Ok(users) => users,
            Err(reason) => {
                log::error!("SIGHUP: {reason}; {refused}");
                return None;
            }
        };
        let tls = match &settings.tls {
            Some(files) => match crate::tls::load_server_tls(&files.cert, &files.key) {
                Ok(tls) => Some(tls),
                Err(reason) => {
                    log::error!("SIGHUP: {reason}; {refused}");
                    return None;
                }
            },
            None => None,
        };
        let file = match &settings.config_file {
            Some(file) => file.display().to_string(),
            None => "the command line".to_owned(),
        };
        for key in &plan.at_restart {
            log::warn!("SIGHUP: {key} changed in {file}: takes effect at restart");
        }
        for (key, old, new) in &plan.changed {
            if key == "log" && settings.log.is_none() {
                log::warn!("SIGHUP: log changed in {file}: RUST_LOG is set, and decides");
                continue;
            }
            let shown = |value: &Option<String>| value.clone().unwrap_or("(default)".to_owned());
            log::info!("SIGHUP: {key} = {} (was {})", shown(new), shown(old));
        }
        if let Some(level) = settings.log {
            log::set_max_level(level);
        }
        log::info!(
            "SIGHUP: {} read again: {} accounts",
            settings.users_file.display(),
            users.len()
        );
        let reload = Reload {
            users,
            config: settings.server.clone(),
            max_connections: settings.max_connections,
            max_per_ip: settings.max_per_ip,
            keepalive: settings.keepalive,
            tls,
        };
        self.in_force = settings;
        Some(reload)
    }
}

/// The users file at `path`; the error is one line, `FILE: line N: reason` if it does not
/// parse.
pub fn read_users(path: &Path) -> Result<Users, String> {
    let shown = path.display();
    let text = std::fs::read(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    Users::parse(&text).map_err(|error| format!("{shown}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn settings(users_file: &Path, effective: &[(&str, &str)]) -> Settings {
        Settings {
            config_file: Some("im-server.toml".into()),
            users_file: users_file.to_owned(),
            server: ServerConfig::default(),
            max_connections: 100,
            max_per_ip: 10,
            keepalive: None,
            tls: None,
            log: None,
            effective: effective
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn keys(changed: &[(String, Option<String>, Option<String>)]) -> Vec<&str> {
        changed.iter().map(|(key, _, _)| key.as_str()).collect()
    }

    #[test]
    fn a_plan_applies_what_can_change_and_keeps_what_waits_for_a_restart() {
        let users = Path::new("users.txt");
        let old = settings(
            users,
            &[("port", "4000"), ("max-line", "100"), ("log", "\"info\"")],
        );
        let new = settings(
            users,
            &[
                ("port", "4001"),
                ("max-line", "200"),
                ("runtime", "\"threads\""),
            ],
        );
        let plan = plan(&old, new);
        assert_eq!(keys(&plan.changed), ["max-line", "log"]);
        assert_eq!(plan.at_restart, ["port", "runtime"]);
        let mut effective = plan.settings.effective.clone();
        effective.sort();
        assert_eq!(
            effective,
            [
                ("max-line".into(), "200".into()),
                ("port".into(), "4000".into())
            ]
        );
        // Once in force, the same file warns again and changes nothing more.
        let again = settings(
            users,
            &[
                ("port", "4001"),
                ("max-line", "200"),
                ("runtime", "\"threads\""),
            ],
        );
        let plan = super::plan(&plan.settings, again);
        assert!(plan.changed.is_empty(), "{:?}", plan.changed);
        assert_eq!(plan.at_restart, ["port", "runtime"]);
    }

    #[test]
    fn a_renewed_certificate_reloads_but_tls_on_or_off_waits() {
        let users = Path::new("users.txt");
        let files = |name: &str| TlsFiles {
            cert: format!("{name}.pem").into(),
            key: "key.pem".into(),
        };
        let mut old = settings(
            users,
            &[("tls-cert", "\"a.pem\""), ("tls-key", "\"key.pem\"")],
        );
        old.tls = Some(files("a"));
        let mut renewed = settings(
            users,
            &[("tls-cert", "\"b.pem\""), ("tls-key", "\"key.pem\"")],
        );
        renewed.tls = Some(files("b"));
        let plan = plan(&old, renewed);
        assert_eq!(keys(&plan.changed), ["tls-cert"]);
        assert_eq!(plan.settings.tls, Some(files("b")));

        let plain = settings(users, &[]);
        let plan = super::plan(&old, plain);
        assert!(plan.changed.is_empty());
        assert_eq!(plan.at_restart, ["tls-cert", "tls-key"]);
        assert_eq!(plan.settings.tls, Some(files("a")));
    }

    #[test]
    fn a_reload_is_refused_whole_and_then_applied_whole() {
        let dir = std::env::temp_dir().join(format!("reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.txt");
        std::fs::write(&users, "jacky 12345\n").unwrap();
        let start = settings(&users, &[("max-login-failures", "5")]);
        let next: Arc<Mutex<Result<Settings, String>>> = Arc::new(Mutex::new(Err(
            "im-server.toml: line 3: unknown key \"x\"".to_owned(),
        )));
        let source = Arc::clone(&next);
        let mut reloader = Reloader::new(start, move || source.lock().unwrap().clone());
        assert!(reloader.reload().is_none());

        // A good file, but a users file that does not parse: refused whole.
        let mut lower = settings(&users, &[("max-login-failures", "1")]);
        lower.server.max_login_failures = 1;
        lower.server.ack_timeout = Duration::from_secs(1);
        *next.lock().unwrap() = Ok(lower);
        std::fs::write(&users, "jacky 12345\nthree words here\n").unwrap();
        assert!(reloader.reload().is_none());
        assert_eq!(reloader.in_force().server.max_login_failures, 5);

        std::fs::write(&users, "jacky 12345\ndave dave123\n").unwrap();
        let reload = reloader.reload().unwrap();
        assert_eq!(reload.users.len(), 2);
        assert_eq!(reload.config.max_login_failures, 1);
        assert_eq!(reload.config.ack_timeout, Duration::from_secs(1));
        assert_eq!(reloader.in_force().server.max_login_failures, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
