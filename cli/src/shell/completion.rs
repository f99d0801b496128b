//! Tab completion: command names and long flags from hz's clap command tree, and the names
//! herzog knows (services and their instances, projects, workers) for the arguments that take
//! them, chosen by the argument's name in that tree, so new commands complete too.

use super::names::Names;
use clap::ArgAction;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;

/// What herzog has names of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Services and their instances (`web`, `web:0`).
    Services,
    Projects,
    Workers,
}

/// What may go where the cursor is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Want {
    /// Where the word being completed starts.
    pub(crate) start: usize,
    /// Its part before the cursor.
    pub(crate) prefix: String,
    /// Words known now.
    pub(crate) words: Vec<String>,
    /// herzog's names of this kind go there too.
    pub(crate) kind: Option<Kind>,
}

/// The words the shell itself takes.
const SHELL_WORDS: [&str; 3] = ["help", "quit", "exit"];
const SIGNALS: [&str; 7] = ["HUP", "TERM", "INT", "QUIT", "KILL", "USR1", "USR2"];

/// What completes `line` at byte `pos`, from the command tree `tree` (built).
pub(crate) fn want(tree: &clap::Command, line: &str, pos: usize) -> Want {
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map_or(0, |(i, c)| i + c.len_utf8());
    let prefix = before[start..].to_string();
    let earlier: Vec<&str> = before[..start].split_whitespace().collect();
    let mut want = Want {
        start,
        prefix,
        words: Vec::new(),
        kind: None,
    };
    let commands = || {
        tree.get_subcommands()
            .filter(|c| !c.is_hide_set() && super::line::not_here_word(c.get_name()).is_none())
            .map(|c| c.get_name().to_string())
            .chain(SHELL_WORDS.iter().map(|w| w.to_string()))
            .collect::<Vec<_>>()
    };
    let Some((first, rest)) = earlier.split_first() else {
        want.words = commands();
        return want;
    };
    if *first == "help" {
        if rest.is_empty() {
            want.words = commands();
        }
        return want;
    }
    let Some(sub) = tree.find_subcommand(first) else {
        return want;
    };
    if want.prefix.starts_with('-') {
        want.words = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        return want;
    }
    // The value of an option given just before.
    if let Some(option) = rest
        .last()
        .and_then(|w| w.strip_prefix("--"))
        .and_then(|l| long(sub, l))
        && takes_value(option)
    {
        fill(&mut want, option, false);
        return want;
    }
    // Else the next positional argument.
    let mut index = 0;
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match word.strip_prefix("--") {
            Some(l) if !l.contains('=') => {
                if long(sub, l).is_some_and(takes_value) {
                    words.next();
                }
            }
            Some(_) => {}
            None if word.starts_with('-') && word.len() > 1 => {
                // `-c 1KiB`: a short option with its value apart.
                let mut chars = word[1..].chars();
                if let (Some(c), None) = (chars.next(), chars.next())
                    && sub.get_arguments().any(|a| a.get_short() == Some(c) && takes_value(a))
                {
                    words.next();
                }
            }
            None => index += 1,
        }
    }
    let positionals: Vec<&clap::Arg> = sub.get_positionals().collect();
    let arg = match positionals.get(index) {
        Some(arg) => Some(*arg),
        None => positionals.last().copied().filter(|a| repeats(a)),
    };
    if let Some(arg) = arg {
        fill(&mut want, arg, true);
    }
    want
}

fn long<'a>(sub: &'a clap::Command, name: &str) -> Option<&'a clap::Arg> {
    sub.get_arguments().find(|a| a.get_long() == Some(name))
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

fn repeats(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// The values `arg` takes: its possible values, or herzog's names by the argument's name.
fn fill(want: &mut Want, arg: &clap::Arg, positional: bool) {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() {
        want.words = possible;
        return;
    }
    // An option named `--name` names something new (`action --name`): nothing to offer.
    let (kind, words): (Option<Kind>, &[&str]) = match (arg.get_id().as_str(), positional) {
        ("project" | "after", _) => (Some(Kind::Projects), &[]),
        ("worker", _) => (Some(Kind::Workers), &[]),
        ("service", _) | ("name", true) => (Some(Kind::Services), &[]),
        ("names", true) => (Some(Kind::Services), &["all"]),
        ("policy", true) => (Some(Kind::Projects), &["fair"]),
        ("signal", true) => (None, &SIGNALS),
        _ => (None, &[]),
    };
    want.kind = kind;
    want.words = words.iter().map(|w| w.to_string()).collect();
}

/// The words of `want` and `names` that start with its prefix, sorted, once each.
pub(crate) fn candidates(want: Want, names: Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = want
        .words
        .into_iter()
        .chain(names)
        .filter(|w| w.starts_with(&want.prefix))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// rustyline's helper: completes; no hints, colours or multi-line input.
pub(crate) struct Helper {
    tree: clap::Command,
    names: Names,
}

impl Helper {
    pub(crate) fn new(names: Names) -> Helper {
        let mut tree = <crate::args::Cli as clap::CommandFactory>::command();
        tree.build();
        Helper { tree, names }
    }
}

impl Completer for Helper {
    type Candidate = String;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<String>)> {
        let want = want(&self.tree, line, pos);
        let start = want.start;
        let names = want.kind.map(|kind| self.names.get(kind)).unwrap_or_default();
        Ok((start, candidates(want, names)))
    }
}

impl Hinter for Helper {
    type Hint = String;
}

impl Highlighter for Helper {}

impl Validator for Helper {}

impl rustyline::Helper for Helper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> clap::Command {
        let mut tree = <crate::args::Cli as clap::CommandFactory>::command();
        tree.build();
        tree
    }

    fn at_end(line: &str) -> Want {
        want(&tree(), line, line.len())
    }

    #[test]
    fn commands_and_flags_come_from_the_command_tree() {
        let w = at_end("sta");
        assert_eq!(w.start, 0);
        let words = candidates(w, Vec::new());
        assert_eq!(words, ["start", "status"]);
        let all = candidates(at_end(""), Vec::new());
        assert!(all.contains(&"shutdown".to_string()) && all.contains(&"quit".to_string()));
        assert!(!all.contains(&"local".to_string()) && !all.contains(&"man".to_string()));
        let w = at_end("tail web --st");
        assert_eq!(w.start, 9);
        assert_eq!(candidates(w, Vec::new()), ["--stderr"]);
        // The global flags are the shell's, not a line's.
        assert!(!candidates(at_end("status --"), Vec::new()).contains(&"--herzog".to_string()));
        assert_eq!(candidates(at_end("help sta"), Vec::new()), ["start", "status"]);
    }

    #[test]
    fn arguments_ask_herzog_for_the_names_they_take() {
        let kind = |line: &str| at_end(line).kind;
        assert_eq!(kind("start "), Some(Kind::Services));
        assert_eq!(kind("start web w"), Some(Kind::Services), "names repeat");
        assert_eq!(kind("tail "), Some(Kind::Services));
        assert_eq!(kind("tail web "), None, "tail takes one instance");
        assert_eq!(kind("tail -f "), Some(Kind::Services), "a flag is not a positional");
        assert_eq!(
            kind("tail -c 1KiB "),
            Some(Kind::Services),
            "-c's value is not a positional"
        );
        assert_eq!(kind("signal HUP "), Some(Kind::Services));
        assert_eq!(kind("progress "), Some(Kind::Projects));
        assert_eq!(kind("cancel p "), None);
        assert_eq!(kind("active --project "), Some(Kind::Projects));
        assert_eq!(kind("active --worker "), Some(Kind::Workers));
        assert_eq!(kind("events --service "), Some(Kind::Services));
        assert_eq!(kind("drain "), Some(Kind::Workers));
        assert_eq!(kind("shutdown "), Some(Kind::Workers));
        assert_eq!(kind("action --name "), None);
        let w = at_end("start w");
        assert_eq!((w.start, w.prefix.as_str()), (6, "w"));
        let names = vec!["web".to_string(), "web:0".to_string(), "db".to_string()];
        assert_eq!(candidates(w, names), ["web", "web:0"]);
        assert_eq!(candidates(at_end("stop a"), Vec::new()), ["all"]);
        assert_eq!(candidates(at_end("schedule f"), Vec::new()), ["fair"]);
        assert_eq!(candidates(at_end("signal T"), Vec::new()), ["TERM"]);
        assert_eq!(candidates(at_end("fragments p --state f"), Vec::new()), ["failed"]);
    }
}
