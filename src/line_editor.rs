//! Line editing for the terminal (rustyline, the `terminal` feature): the line being typed can
//! be edited (arrow keys, Up and Down through this session's commands), and what comes
//! meanwhile is printed above it, so what the user has typed stays intact and is sent whole.
//! Without the feature [`start`] finds no editor, and the terminal reads plain lines.

/// How an edited line ended, when it did not end with Enter.
// Without the feature no line is edited, so none ends.
#[cfg_attr(not(feature = "terminal"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Ctrl-C: in raw mode a key, not a signal.
    Interrupted,
    /// Ctrl-D, or the terminal failed.
    EndOfInput,
}

#[cfg(feature = "terminal")]
pub use rustyline_editor::{start, LineEditor, Screen};

#[cfg(not(feature = "terminal"))]
pub use without_editor::{start, LineEditor, Screen};

#[cfg(feature = "terminal")]
mod rustyline_editor {
    use rustyline::error::ReadlineError;
    use rustyline::history::DefaultHistory;
    use rustyline::{Editor, ExternalPrinter};

    use super::Ended;

    /// The editor, for the thread that reads standard input.
    pub struct LineEditor(Editor<(), DefaultHistory>);

    /// The screen while the editor has it: prints above the line being edited, and puts the
    /// terminal's settings back when it is left.
    pub struct Screen {
        printer: Box<dyn ExternalPrinter + Send>,
        saved: nix::sys::termios::Termios,
    }

    /// A line editor on standard input and output and its screen; `None` (after a warning) if
    /// it cannot start.
    pub fn start() -> Option<(LineEditor, Screen)> {
        let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok()?;
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .history_ignore_dups(true)
            .ok()?
            .build();
        let started = Editor::with_config(config).and_then(|mut editor| {
            let printer = editor.create_external_printer()?;
            Ok((editor, Box::new(printer) as Box<dyn ExternalPrinter + Send>))
        });
        let (editor, printer) = started
            .inspect_err(|err| log::warn!("no line editing: {err}"))
            .ok()?;
        Some((LineEditor(editor), Screen { printer, saved }))
    }

    impl LineEditor {
        /// Reads one line; a command (`remember`) goes into the session's history.
        pub fn read(&mut self, remember: bool) -> Result<String, Ended> {
            // The prompts are lines of their own (docs/protocol.md §4 step 2): the edited line
            // has none.
            match self.0.readline("") {
                Ok(line) => {
                    if remember && !line.is_empty() {
                        let _ = self.0.add_history_entry(line.as_str());
                    }
                    Ok(line)
                }
                Err(ReadlineError::Interrupted) => Err(Ended::Interrupted),
                Err(ReadlineError::Eof) => Err(Ended::EndOfInput),
                Err(err) => {
                    log::warn!("reading standard input failed: {err}");
                    Err(Ended::EndOfInput)
                }
            }
        }
    }

    impl Screen {
        /// Prints `text` above the line being edited.
        pub fn print(&mut self, text: String) -> Result<(), String> {
            self.printer.print(text).map_err(|err| err.to_string())
        }

        /// Takes the terminal out of raw mode for good: its settings at start come back.
        pub fn leave(self) {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &self.saved,
            );
        }
    }
}

#[cfg(not(feature = "terminal"))]
mod without_editor {
    use super::Ended;

    /// No value: what the types below hold, so that none can be made.
    enum Never {}

    /// No editor exists without the `terminal` feature.
    pub struct LineEditor(Never);

    /// No screen is taken without the `terminal` feature.
    pub struct Screen(Never);

    /// Finds no editor.
    pub fn start() -> Option<(LineEditor, Screen)> {
        None
    }

    impl LineEditor {
        /// Reads one line.
        pub fn read(&mut self, _remember: bool) -> Result<String, Ended> {
            match self.0 {}
        }
    }

    impl Screen {
        /// Prints `text` above the line being edited.
        pub fn print(&mut self, _text: String) -> Result<(), String> {
            match self.0 {}
        }

        /// Takes the terminal out of raw mode.
        pub fn leave(self) {
            match self.0 {}
        }
    }
}
