//! How a terminal shows the client's events: the exact lines of docs/protocol.md §4 (prompts,
//! every server line as it came, errors on standard error). A terminal prints them; a test or a
//! transcript compares them.

use crate::client::ClientEvent;

/// An event as the terminal shows it: one line, without its `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendered {
    /// A line for standard output: a prompt, an echo, a server line exactly as it came.
    Stdout(Vec<u8>),
    /// A line for standard error.
    Stderr(String),
}

/// How the terminal shows `event`; `None` for the milestones (`LoggedIn`, `LbReady`, `Bye`),
/// whose server line was shown already as an answer.
pub fn render(event: &ClientEvent) -> Option<Rendered> {
    let without_newline = |mut line: Vec<u8>| {
        line.pop();
        Rendered::Stdout(line)
    };
    Some(match event {
        ClientEvent::Prompt(prompt) => Rendered::Stdout(prompt.text().to_vec()),
        ClientEvent::Echo(line) => Rendered::Stdout(line.clone()),
        ClientEvent::Answer { reply, .. } => without_newline(reply.to_line_bytes()),
        ClientEvent::Delivery {
            kind,
            sender,
            content,
        } => without_newline(kind.to_line_bytes(sender, content)),
        ClientEvent::UnknownDelivery(line) => Rendered::Stdout(line.clone()),
        ClientEvent::Error(error) => Rendered::Stderr(format!("error: {error}")),
        ClientEvent::Warning(warning) => Rendered::Stderr(format!("warning: {warning}")),
        ClientEvent::LoggedIn | ClientEvent::LbReady | ClientEvent::Bye => return None,
    })
}
