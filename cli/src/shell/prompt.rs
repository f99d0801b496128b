//! The prompt: rustyline's editor on a thread of its own (it blocks on the terminal), asked
//! for one line at a time over a channel; it keeps the history file up to date after each
//! line, so a shell that is killed loses nothing typed.

use super::completion::Helper;
use crate::error::CliError;
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};
use std::path::PathBuf;

/// What one read gave.
#[derive(Debug)]
pub(crate) enum Read {
    Line(String),
    /// Ctrl-C: the line is cancelled.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of the input.
    Eof,
}

struct Ask {
    prompt: String,
    /// Whether the line goes into the history (not the answer to a question).
    remember: bool,
    reply: tokio::sync::oneshot::Sender<Result<Read, String>>,
}

/// The prompt's thread. Dropping it ends the thread once its read is done.
pub(crate) struct Prompt {
    asks: std::sync::mpsc::Sender<Ask>,
}

/// The most lines the history keeps.
const HISTORY_LINES: usize = 1000;

impl Prompt {
    /// Starts the editor with `helper`, and the history from `history` if there is one.
    pub(crate) fn start(history: Option<PathBuf>, helper: Helper) -> Result<Prompt, CliError> {
        let failed = |e: ReadlineError| CliError::Output(std::io::Error::other(format!("the line editor: {e}")));
        let config = Config::builder()
            .max_history_size(HISTORY_LINES)
            .and_then(|b| b.history_ignore_dups(true))
            .map_err(failed)?
            .history_ignore_space(true)
            .completion_type(CompletionType::List)
            .auto_add_history(false)
            .build();
        let mut editor: Editor<Helper, DefaultHistory> = Editor::with_config(config).map_err(failed)?;
        editor.set_helper(Some(helper));
        let history = history.filter(|path| match super::history::prepare(path) {
            Ok(()) => true,
            Err(e) => {
                note!(
                    "hz: the shell keeps no history: failed to make the directory of {}: {e}",
                    path.display()
                );
                false
            }
        });
        if let Some(path) = &history {
            match editor.load_history(path) {
                Ok(()) => {}
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => note!(
                    "hz: failed to read the shell's history {}: {e}; starting without it",
                    path.display()
                ),
            }
        }
        let (asks, incoming) = std::sync::mpsc::channel::<Ask>();
        std::thread::Builder::new()
            .name("hz-prompt".into())
            .spawn(move || serve(editor, history, incoming))
            .map_err(|e| CliError::Output(std::io::Error::other(format!("failed to start the prompt: {e}"))))?;
        Ok(Prompt { asks })
    }

    /// Reads a line after `prompt`; `remember` puts it in the history.
    pub(crate) async fn read(&self, prompt: &str, remember: bool) -> Result<Read, CliError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ask = Ask {
            prompt: prompt.to_string(),
            remember,
            reply,
        };
        if self.asks.send(ask).is_err() {
            return Ok(Read::Eof);
        }
        match answer.await {
            Ok(Ok(read)) => Ok(read),
            Ok(Err(e)) => Err(CliError::Output(std::io::Error::other(format!(
                "failed to read a line: {e}"
            )))),
            Err(_) => Ok(Read::Eof),
        }
    }
}

/// The prompt thread: one read per ask, until the shell is gone.
fn serve(mut editor: Editor<Helper, DefaultHistory>, history: Option<PathBuf>, asks: std::sync::mpsc::Receiver<Ask>) {
    let mut history_failed = false;
    for ask in asks {
        let read = match editor.readline(&ask.prompt) {
            Ok(line) => Ok(Read::Line(line)),
            Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
            Err(ReadlineError::Eof) => Ok(Read::Eof),
            Err(e) => Err(e.to_string()),
        };
        if let (true, Ok(Read::Line(line)), Some(path)) = (ask.remember, &read, &history)
            && !line.trim().is_empty()
            && editor.add_history_entry(line.as_str()).unwrap_or(false)
            && let Err(e) = editor.append_history(path)
            && !std::mem::replace(&mut history_failed, true)
        {
            note!("hz: failed to save the shell's history to {}: {e}", path.display());
        }
        if ask.reply.send(read).is_err() {
            return;
        }
    }
}
