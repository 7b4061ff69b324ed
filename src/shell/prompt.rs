//! The interactive prompt's line editor (rustyline): Emacs-style editing, history kept in
//! `~/.dcish_history`, and Tab completion of command names (first word) and of blade names and
//! node-set groups (`@all`, `@active`, `@spares`, `@zone:NAME`) after it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::CommandFactory;
use dci_proto::control::MemberInfo;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::Cli;

/// The most history lines kept.
const HISTORY: usize = 1000;

/// What Tab offers.
struct Completion {
    commands: Vec<String>,
    /// Blade names and groups, refreshed from the member table before each prompt.
    sets: Arc<Mutex<Vec<String>>>,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let first = before[..start].trim().is_empty();
        // In a node set, the name after the last comma.
        let start = if first {
            start
        } else {
            before.rfind(',').map_or(start, |i| (i + 1).max(start))
        };
        let word = &before[start..];
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let words = if first { &self.commands } else { &*sets };
        let pairs = words
            .iter()
            .filter(|w| w.starts_with(word))
            .map(|w| Pair {
                display: w.clone(),
                replacement: if first { format!("{w} ") } else { w.clone() },
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}

impl Highlighter for Completion {}

impl Validator for Completion {}

impl Helper for Completion {}

/// The line editor of an interactive session.
pub struct Prompt {
    editor: Editor<Completion, DefaultHistory>,
    history: Option<PathBuf>,
    sets: Arc<Mutex<Vec<String>>>,
}

impl Prompt {
    /// An editor on the terminal, with the history of earlier sessions; `None` if the terminal
    /// cannot be used (the caller reads plain lines instead).
    pub fn new() -> Option<Prompt> {
        let config = rustyline::Config::builder()
            .max_history_size(HISTORY)
            .ok()?
            .auto_add_history(true)
            .history_ignore_dups(true)
            .ok()?
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor = Editor::with_config(config).ok()?;
        let mut commands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .chain(["help", "exit", "quit"].map(String::from))
            .collect();
        commands.sort();
        commands.dedup();
        let sets = Arc::new(Mutex::new(Vec::new()));
        editor.set_helper(Some(Completion {
            commands,
            sets: Arc::clone(&sets),
        }));
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".dcish_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Some(Prompt {
            editor,
            history,
            sets,
        })
    }

    /// What Tab completes after the first word: these members' names and the groups they form.
    pub fn set_members(&self, members: &[MemberInfo]) {
        let mut sets: Vec<String> = ["@all", "@active", "@spares"].map(String::from).to_vec();
        sets.extend(members.iter().map(|m| format!("@zone:{}", m.zone)));
        sets.extend(members.iter().map(|m| m.name.clone()));
        sets.sort();
        sets.dedup();
        *self.sets.lock().unwrap_or_else(|p| p.into_inner()) = sets;
    }

    /// The next line; an interrupted one (Ctrl-C) is empty; `None` at the end (Ctrl-D) or if the
    /// terminal fails.
    pub fn read(&mut self, prompt: &str) -> Option<String> {
        match self.editor.readline(prompt) {
            Ok(line) => Some(line),
            Err(rustyline::error::ReadlineError::Interrupted) => Some(String::new()),
            Err(_) => None,
        }
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        if let Some(path) = &self.history {
            let _ = self.editor.save_history(path);
        }
    }
}
