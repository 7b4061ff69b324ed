//! The interactive prompt's line editor (rustyline): Emacs-style editing, history kept in
//! `~/.dcish_history`, and Tab completion of command names (first word), of paths in the mesh's
//! file tree (after a file command, or any word starting with `/`), and of blade names and
//! node-set groups (`@all`, `@active`, `@spares`, `@zone:NAME`) elsewhere.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::CommandFactory;
use dci_proto::control::MemberInfo;
use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

use super::client::Client;
use super::files::{self, Session};
use super::Cli;

/// The most history lines kept.
const HISTORY: usize = 1000;
/// The commands whose words are paths in the mesh's file tree.
const FILE_COMMANDS: [&str; 7] = ["cat", "cd", "du", "find", "get", "ls", "put"];
/// How long Tab waits for a directory's listing before it offers nothing.
const LISTING_WAIT: Duration = Duration::from_secs(2);

/// What Tab offers.
struct Completion {
    commands: Vec<String>,
    /// Blade names and groups, refreshed from the member table before each prompt.
    sets: Arc<Mutex<Vec<String>>>,
    /// The agent asked for directory listings.
    agent: PathBuf,
    /// The session's working directory, set before each prompt.
    cwd: Arc<Mutex<String>>,
}

/// Whether the word being completed is a path: any word after a file command but its options,
/// and a word starting with `/` anywhere.
fn is_path(command: &str, word: &str) -> bool {
    word.starts_with('/') || (FILE_COMMANDS.contains(&command) && !word.starts_with('-'))
}

/// The names in `dir` on the mesh, asked of the agent on a thread of its own, since the editor
/// calls completion from inside the shell's runtime; nothing if it fails or takes too long.
fn names_in(agent: &Path, cwd: &str, dir: &str) -> Vec<String> {
    let (agent, session, dir) = (
        agent.to_owned(),
        Session { cwd: cwd.into() },
        if dir.is_empty() { "." } else { dir }.to_owned(),
    );
    let listing = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut client = Client::connect(&agent).await.ok()?;
            let names = files::names_in(&mut client, &session, &dir);
            tokio::time::timeout(LISTING_WAIT, names).await.ok()?.ok()
        })
    });
    listing.join().ok().flatten().unwrap_or_default()
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
        let command = before.split_whitespace().next().unwrap_or_default();
        let whole = &before[before.rfind(' ').map_or(0, |i| i + 1)..];
        if !first && is_path(command, whole) {
            let (dir, prefix) = whole.split_at(whole.rfind('/').map_or(0, |i| i + 1));
            let cwd = self.cwd.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let pairs = names_in(&self.agent, &cwd, dir)
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: format!("{dir}{n}"),
                })
                .collect();
            return Ok((pos - whole.len(), pairs));
        }
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
    cwd: Arc<Mutex<String>>,
}

impl Prompt {
    /// An editor on the terminal, with the history of earlier sessions, completing paths through
    /// `agent`; `None` if the terminal cannot be used (the caller reads plain lines instead).
    pub fn new(agent: &Path) -> Option<Prompt> {
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
        let cwd = Arc::new(Mutex::new("/".to_owned()));
        editor.set_helper(Some(Completion {
            commands,
            sets: Arc::clone(&sets),
            agent: agent.to_owned(),
            cwd: Arc::clone(&cwd),
        }));
        let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".dcish_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Some(Prompt {
            editor,
            history,
            sets,
            cwd,
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

    /// The next line, with paths completed from `cwd`; an interrupted one (Ctrl-C) is empty;
    /// `None` at the end (Ctrl-D) or if the terminal fails.
    pub fn read(&mut self, cwd: &str) -> Option<String> {
        cwd.clone_into(&mut self.cwd.lock().unwrap_or_else(|p| p.into_inner()));
        let prompt = format!("dcish:{cwd}> ");
        match self.editor.readline(&prompt) {
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

#[cfg(test)]
mod tests {
    use super::is_path;

    #[test]
    fn paths_are_completed_after_file_commands_and_wherever_a_word_starts_with_a_slash() {
        assert!(is_path("ls", ""));
        assert!(is_path("cd", "bla"));
        assert!(is_path("exec", "/blades/b1"));
        assert!(!is_path("ls", "--json"));
        assert!(!is_path("exec", "b1"));
        assert!(!is_path("exec", "@act"));
    }
}
