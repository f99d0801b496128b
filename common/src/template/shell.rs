//! Reading a program as `/bin/sh` would, far enough to know how each placeholder is quoted,
//! and writing it back with every placeholder a positional parameter quoted for its place.

use super::{parameter, placeholder_at};

/// Programs whose `-c` argument is a shell script: a placeholder there would be code again.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "yash", "posh", "busybox", "su", "csh", "tcsh", "fish",
];

/// Why a placeholder cannot be passed safely where it stands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unsafe {
    #[error(
        "{p} inside single quotes would reach the program as the text {p}, not the file's path: leave it bare or in double quotes (\"{p}\" is passed safely), or give a script its path as a parameter: sh -c '... \"$1\" ...' sh {p}"
    )]
    SingleQuotes { p: &'static str },
    #[error(
        "{p} inside backquotes cannot be passed safely: write $(...) instead, or give a script its path as a parameter: sh -c '... \"$1\" ...' sh {p}"
    )]
    Backquotes { p: &'static str },
    #[error(
        "{p} inside $((...)) would be evaluated, not read as text: give a script its path as a parameter: sh -c '... \"$1\" ...' sh {p}"
    )]
    Arithmetic { p: &'static str },
    #[error(
        "{p} in the script of {shell} -c would make each file's name shell code: give the script its path as a parameter instead: {shell} -c '... \"$1\" ...' sh {p}"
    )]
    ShellScript { p: &'static str, shell: String },
    #[error(
        "{p} in the words of eval would run each file's name as shell code: drop eval (\"{p}\" is passed safely), or give a script its path as a parameter: sh -c '... \"$1\" ...' sh {p}"
    )]
    Eval { p: &'static str },
    #[error("the program has an unterminated {what}: close it")]
    Unterminated { what: &'static str },
}

/// A level of the shell text being read.
enum Frame {
    /// Words and commands: the top level, or inside `$(...)` (`sub`).
    Words(Words),
    /// Inside double quotes.
    Double,
    /// Inside `$((...))`, with the parentheses opened inside it.
    Arithmetic { depth: u32 },
}

#[derive(Default)]
struct Words {
    sub: bool,
    /// Parentheses opened at this level (subshells), so `$(`'s own `)` is found.
    depth: u32,
    /// The word being read, as written (a buffer kept from word to word).
    word: String,
    /// Whether a word is being read.
    in_word: bool,
    /// What the simple command being read says so far: whether its command (the first word
    /// that is not an assignment) was read and is `eval`, the shell among its words, and
    /// whether the last word was an option with `c` (`-c`, `-ec`).
    command: Option<bool>,
    shell: Option<&'static str>,
    after_c: bool,
}

impl Words {
    fn end_word(&mut self) {
        if !self.in_word {
            return;
        }
        let word = self.word.as_str();
        if self.command.is_none() && !is_assignment(word) {
            self.command = Some(word == "eval");
        }
        let name = word.rsplit('/').next().unwrap_or(word);
        if let Some(shell) = SHELLS.iter().find(|s| **s == name) {
            self.shell = Some(shell);
        }
        self.after_c = word.len() > 1
            && word.starts_with('-')
            && word[1..].chars().all(|c| c.is_ascii_alphabetic())
            && word.contains('c');
        self.word.clear();
        self.in_word = false;
    }

    fn end_command(&mut self) {
        self.word.clear();
        self.in_word = false;
        self.command = None;
        self.shell = None;
        self.after_c = false;
    }

    fn push(&mut self, text: &str) {
        self.word.push_str(text);
        self.in_word = true;
    }

    /// Why a placeholder in the word being read would be code again, if it would.
    fn danger(&self, p: &'static str) -> Option<Unsafe> {
        if self.command == Some(true) {
            return Some(Unsafe::Eval { p });
        }
        match self.shell {
            Some(shell) if self.after_c => Some(Unsafe::ShellScript {
                p,
                shell: shell.to_string(),
            }),
            _ => None,
        }
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A program's shell text with its placeholders turned into positional parameters.
pub(super) struct Script {
    pub(super) text: String,
    /// The parameters referenced (bit `n - 1` for `$n`): the values that must follow the
    /// script; the highest one says how many.
    pub(super) uses: u8,
    /// The placeholders that cannot be passed safely where they stand, and other mistakes.
    pub(super) problems: Vec<Unsafe>,
    /// Whether any placeholder was found (else the path is appended).
    found: bool,
}

/// A positional parameter as written bare, and inside double quotes.
const BARE: [&str; 5] = ["\"${1}\"", "\"${2}\"", "\"${3}\"", "\"${4}\"", "\"${5}\""];
const QUOTED: [&str; 5] = ["${1}", "${2}", "${3}", "${4}", "${5}"];

impl Script {
    /// Reads `program` as `/bin/sh` would, far enough to know how each placeholder is quoted,
    /// with ` {}` appended when it has no placeholder. Never pastes a value: a mistake here
    /// can cost the program its argument, never run it.
    pub(super) fn read(program: &str) -> Script {
        let mut script = Script {
            text: String::with_capacity(program.len() + 16),
            uses: 0,
            problems: Vec::new(),
            found: false,
        };
        let mut stack = vec![Frame::Words(Words::default())];
        let trimmed = program.trim_end();
        script.feed(&mut stack, trimmed);
        if script.found {
            script.feed(&mut stack, &program[trimmed.len()..]);
        } else {
            script.feed(&mut stack, " {}");
        }
        let open = stack.iter().rev().find_map(|f| match f {
            Frame::Double => Some("double quote"),
            Frame::Arithmetic { .. } => Some("$(("),
            Frame::Words(w) if w.sub => Some("$("),
            Frame::Words(_) => None,
        });
        if let Some(what) = open {
            script.problems.push(Unsafe::Unterminated { what });
        }
        script
    }

    /// Reads `text`, going on from where `stack` says the shell text so far left off.
    fn feed(&mut self, stack: &mut Vec<Frame>, text: &str) {
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(p) = placeholder_at(rest) {
                self.placeholder(p, stack);
                if let Some(Frame::Words(words)) = stack.last_mut() {
                    words.push(p);
                }
                rest = &rest[p.len()..];
                continue;
            }
            let frame = stack.last_mut().expect("the top level is never popped");
            let mut take = c.len_utf8();
            match frame {
                Frame::Words(words) => match c {
                    '\\' => {
                        take += rest[1..].chars().next().map_or(0, char::len_utf8);
                        words.push(&rest[..take]);
                    }
                    '\'' => {
                        take = self.quoted(rest, '\'', |p| Unsafe::SingleQuotes { p }, "single quote");
                        words.push(&rest[..take]);
                    }
                    '`' => {
                        take = self.quoted(rest, '`', |p| Unsafe::Backquotes { p }, "backquote");
                        words.push(&rest[..take]);
                    }
                    '"' => {
                        words.push("\"");
                        stack.push(Frame::Double);
                    }
                    '$' if rest.starts_with("$((") => {
                        take = 3;
                        words.push("$((");
                        stack.push(Frame::Arithmetic { depth: 0 });
                    }
                    '$' if rest.starts_with("$(") => {
                        take = 2;
                        words.push("$(");
                        stack.push(Frame::Words(Words {
                            sub: true,
                            ..Words::default()
                        }));
                    }
                    '#' if !words.in_word => {
                        take = rest.find('\n').unwrap_or(rest.len());
                    }
                    ')' if words.sub && words.depth == 0 => {
                        stack.pop();
                    }
                    '(' | ')' => {
                        words.depth = if c == '(' {
                            words.depth + 1
                        } else {
                            words.depth.saturating_sub(1)
                        };
                        words.end_command();
                    }
                    ' ' | '\t' | '<' | '>' => words.end_word(),
                    '\n' | ';' | '&' | '|' => words.end_command(),
                    _ => words.push(&rest[..take]),
                },
                Frame::Double => match c {
                    '\\' => match rest[1..].chars().next() {
                        Some(next @ ('$' | '`' | '"' | '\\' | '\n')) => take += next.len_utf8(),
                        // A backslash before anything else is itself; written doubled, it
                        // cannot escape the `$` of a parameter that follows it.
                        _ => {
                            self.text.push('\\');
                        }
                    },
                    '"' => {
                        stack.pop();
                    }
                    '`' => take = self.quoted(rest, '`', |p| Unsafe::Backquotes { p }, "backquote"),
                    '$' if rest.starts_with("$((") => {
                        take = 3;
                        stack.push(Frame::Arithmetic { depth: 0 });
                    }
                    '$' if rest.starts_with("$(") => {
                        take = 2;
                        stack.push(Frame::Words(Words {
                            sub: true,
                            ..Words::default()
                        }));
                    }
                    _ => {}
                },
                Frame::Arithmetic { depth } => match c {
                    '(' => *depth += 1,
                    ')' if *depth == 0 => {
                        take = if rest.starts_with("))") { 2 } else { 1 };
                        stack.pop();
                    }
                    ')' => *depth -= 1,
                    _ => {}
                },
            }
            self.text.push_str(&rest[..take]);
            rest = &rest[take..];
        }
    }

    /// Writes placeholder `p` where `stack` says it stands: a parameter quoted for its place,
    /// or, where that cannot be safe, the placeholder itself, and the reason.
    fn placeholder(&mut self, p: &'static str, stack: &[Frame]) {
        self.found = true;
        let danger = stack.iter().rev().find_map(|f| match f {
            Frame::Arithmetic { .. } => Some(Unsafe::Arithmetic { p }),
            Frame::Words(words) => words.danger(p),
            Frame::Double => None,
        });
        if let Some(danger) = danger {
            self.problems.push(danger);
            self.text.push_str(p);
            return;
        }
        let n = parameter(p);
        self.uses |= 1 << (n - 1);
        match stack.last() {
            Some(Frame::Double) => self.text.push_str(QUOTED[n - 1]),
            _ => self.text.push_str(BARE[n - 1]),
        }
    }

    /// The length of the quoted text at the start of `rest` (opened and closed by `quote`,
    /// a backslash escaping inside backquotes), noting every placeholder in it as unsafe.
    fn quoted(&mut self, rest: &str, quote: char, unsafe_: fn(&'static str) -> Unsafe, what: &'static str) -> usize {
        let mut i = 1;
        while i < rest.len() {
            let tail = &rest[i..];
            let c = tail.chars().next().expect("not at the end");
            if c == quote {
                return i + 1;
            }
            if let Some(p) = placeholder_at(tail) {
                self.found = true;
                self.problems.push(unsafe_(p));
                i += p.len();
            } else if c == '\\' && quote == '`' {
                i += 1 + tail[1..].chars().next().map_or(0, char::len_utf8);
            } else {
                i += c.len_utf8();
            }
        }
        self.problems.push(Unsafe::Unterminated { what });
        rest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::path::PathBuf;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn shell_programs_get_the_paths_as_parameters() {
        let argv = expand("gzip -c {} > {.}.gz", &p("/d/it's a file.txt"));
        assert_eq!(
            argv,
            [
                "/bin/sh",
                "-c",
                r#"gzip -c "${1}" > "${3}".gz"#,
                "sh",
                "/d/it's a file.txt",
                // $2 is not used: passed empty, to keep $3 in its place.
                "",
                "/d/it's a file",
            ]
        );
        // In double quotes the reference needs none of its own; in a command substitution
        // the quoting starts afresh.
        let argv = expand(r#"echo "{/}: $(wc -c < {})" | tee "{//}/x""#, &p("/d/a"));
        assert_eq!(argv[2], r#"echo "${2}: $(wc -c < "${1}")" | tee "${5}/x""#);
        assert_eq!(argv[3..], ["sh", "/d/a", "a", "", "", "/d"]);
        // No placeholder: the path is appended, as a parameter too.
        assert_eq!(
            expand("sort | uniq <", &p("/d/a")),
            ["/bin/sh", "-c", r#"sort | uniq < "${1}""#, "sh", "/d/a"]
        );
        // A backslash before a placeholder in double quotes stays a backslash.
        assert_eq!(expand(r#"echo "\{}""#, &p("/d/a"))[2], r#"echo "\\${1}""#);
    }

    #[test]
    fn placeholders_that_cannot_be_passed_safely_are_refused_and_say_how() {
        for (program, says) in [
            ("echo '{}'", "single quotes"),
            ("awk '{print \"{}\"}' x", "single quotes"),
            ("echo `cat {}`", "backquotes"),
            ("echo \"`cat {}`\"", "backquotes"),
            ("echo $(( {/.} + 1 ))", "$((...))"),
            ("sh -c \"wc -l {}\"", "script of sh -c"),
            ("/bin/bash -ec \"cat {}; true\"", "script of bash -c"),
            ("sh -c {}", "script of sh -c"),
            ("sh -c", "script of sh -c"),
            ("nice -n 5 sh -c \"$(echo {})\"", "script of sh -c"),
            ("X=1 eval echo {}", "eval"),
            ("echo \"{}", "unterminated double quote"),
            ("echo '{}", "single quote"),
            ("echo $(cat {}", "unterminated $("),
        ] {
            let err = check_program(program, None).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, ApiError::InvalidValue { .. }), "{program}: {err:?}");
            assert!(text.contains(says), "{program}: {text}");
        }
        // What stays allowed: parameters the user wrote, and -c of other programs.
        for program in [
            r#"sh -c 'wc -l "$1"' sh {}"#,
            "wc -c {}",
            "grep -c x {}",
            r#"bash -c 'echo "$0"' "{/}""#,
            r#"echo "{}" # it's {} here"#,
            r#"echo "$(printf '%s' "{}")""#,
            "echo ${x:-{}}",
        ] {
            assert!(check_program(program, None).is_ok(), "{program}");
        }
    }

    #[test]
    fn a_refused_placeholder_stays_text_if_a_stored_program_has_one() {
        let argv = expand("sh -c 'wc -l {}'", &p("/d/$(reboot)"));
        assert_eq!(argv[2], "sh -c 'wc -l {}'");
        assert_eq!(argv[3..], ["sh"]);
        assert_eq!(expand("sh -c {}", &p("/d/$(reboot)")), ["sh", "-c", "{}"]);
        assert_eq!(expand("wc -c {}", &p("/d/a")), ["wc", "-c", "/d/a"]);
    }
}
