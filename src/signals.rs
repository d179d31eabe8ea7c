//! SIGINT and SIGTERM as a channel.

use async_channel::{Receiver, Sender};

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
