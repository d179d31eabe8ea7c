//! Signals: SIGINT and SIGTERM as a channel for the client ([`Signals`]); for the server,
//! SIGHUP, SIGTERM and SIGINT turned into what it must do ([`server_commands`]).

use async_channel::{Receiver, Sender};
use futures_lite::StreamExt;

use crate::driver::ServerCommand;
use crate::reload::Reloader;

/// SIGINT and SIGTERM (Ctrl-C) as a channel, so that an async task and a blocking thread can
/// both wait for them.
pub struct Signals {
    received: Receiver<()>,
    /// Kept so that the channel never closes: without a handler, no signal ever comes.
    _open: Sender<()>,
}

impl Signals {
    /// Installs the process's handler for SIGINT and SIGTERM. A process has one: call this once.
    /// If it cannot be installed, a warning is logged and no signal is ever reported.
    pub fn install() -> Signals {
        // One waiting token is enough: a second Ctrl-C before the first is seen means the same.
        let (sender, received) = async_channel::bounded(1);
        let handler = sender.clone();
        if let Err(error) = ctrlc::set_handler(move || {
            let _ = handler.try_send(());
        }) {
            log::warn!("cannot handle SIGINT/SIGTERM: {error}");
        }
        Signals {
            received,
            _open: sender,
        }
    }

    /// Waits for the next signal.
    pub async fn recv(&self) {
        if self.received.recv().await.is_err() {
            // The channel cannot close (`_open`); waiting forever is the honest answer.
            std::future::pending::<()>().await;
        }
    }

    /// Blocks the calling thread until the next signal.
    pub fn wait(&self) {
        while self.received.recv_blocking().is_err() {
            // As in `recv`: unreachable, and the answer is to wait forever.
            std::thread::park();
        }
    }
}

/// Installs the server's handlers and returns what they ask for, in order: SIGHUP reads the
/// settings and the users file again and hands over what changed ([`Reloader::reload`],
/// [`ServerCommand::Reload`]; anything wrong and nothing changes, logged as `file: line N:
/// reason`); the first SIGTERM or SIGINT asks for a graceful stop, the next one for a stop at
/// once. Call it once, before any other handler for these signals (not with
/// [`Signals::install`]).
///
/// A thread of its own waits for the signals and reads the files, so the server's loop never
/// blocks on either. If the handlers cannot be installed, a warning is logged and nothing is
/// ever asked.
pub fn server_commands(reloader: Reloader) -> Receiver<ServerCommand> {
    // Unbounded: a command is never dropped (a lost second SIGTERM would not stop at once),
    // and signals come at a human's pace.
    let (commands, received) = async_channel::unbounded();
    use async_signal::Signal;
    let signals = match async_signal::Signals::new([Signal::Hup, Signal::Term, Signal::Int]) {
        Ok(signals) => signals,
        Err(error) => {
            // The channel closes with `commands`: a server whose commands end serves on.
            log::warn!("cannot handle SIGHUP/SIGTERM/SIGINT: {error}");
            return received;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || smol::block_on(forward(signals, reloader, commands)));
    if let Err(error) = spawned {
        log::warn!("cannot watch for signals: {error}");
    }
    received
}

/// Turns each signal into a command until the server stops listening.
async fn forward(
    mut signals: async_signal::Signals,
    mut reloader: Reloader,
    commands: Sender<ServerCommand>,
) {
    let mut stopping = false;
    while let Some(signal) = signals.next().await {
        let command = match signal {
            Ok(async_signal::Signal::Hup) => match reloader.reload() {
                Some(reload) => ServerCommand::Reload(Box::new(reload)),
                None => continue,
            },
            Ok(signal) if !stopping => {
                stopping = true;
                log::info!(
                    "{}: stopping once the requests in flight are answered \
                     (a second signal stops at once)",
                    name(signal)
                );
                ServerCommand::Stop
            }
            Ok(signal) => {
                log::info!("{} again: stopping at once", name(signal));
                ServerCommand::StopNow
            }
            Err(error) => {
                log::warn!("reading signals failed: {error}");
                continue;
            }
        };
        if commands.send(command).await.is_err() {
            return;
        }
    }
}

/// A signal's name as the log shows it.
fn name(signal: async_signal::Signal) -> &'static str {
    match signal {
        async_signal::Signal::Hup => "SIGHUP",
        async_signal::Signal::Term => "SIGTERM",
        async_signal::Signal::Int => "SIGINT",
        _ => "a signal",
    }
}
