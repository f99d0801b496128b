//! The program template: how `hz action <dir> <program>` becomes a command line per fragment.
//!
//! Placeholders follow GNU parallel: `{}` the input path, `{/}` its base name, `{.}` the path
//! without extension, `{/.}` the base name without extension, `{//}` its directory. Without
//! any placeholder the path is appended as the last argument. A program without shell syntax
//! is split on whitespace and executed directly, which saves a shell per fragment (what make
//! does for simple recipes). A program with shell syntax (pipes, redirections, quotes, `$`)
//! runs under `/bin/sh -c`, and a path is never pasted into its text: each placeholder
//! becomes a reference to a positional parameter (`{}` is `$1`, `{/}` `$2`, `{.}` `$3`, `{/.}`
//! `$4`, `{//}` `$5`), quoted for where it stands, and the values follow the script as
//! arguments (`sh -c 'wc -l "${1}"' sh PATH`). Whatever a file is called, the shell reads it
//! as data. Where no quoting can make that so (inside single quotes, backquotes or `$((...))`,
//! in the script of `sh -c` or the words of `eval`) the program is refused at submit.

use crate::ApiError;
use shell::Script;
use std::path::{Path, PathBuf};

#[cfg(test)]
mod properties;
mod shell;

const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', '#', '~', '=', '%', '\n',
];
/// Longest first, so `{//}` is not read as `{/}` and the rest.
const PLACEHOLDERS: &[&str] = &["{//}", "{/.}", "{/}", "{.}", "{}"];
/// The value each placeholder stands for, as its positional parameter (1-based) under a shell.
const fn parameter(placeholder: &str) -> usize {
    match placeholder.as_bytes() {
        b"{}" => 1,
        b"{/}" => 2,
        b"{.}" => 3,
        b"{/.}" => 4,
        _ => 5,
    }
}
/// True when the template needs a shell.
pub fn needs_shell(program: &str) -> bool {
    program.contains(SHELL_CHARS)
}

fn has_placeholder(program: &str) -> bool {
    PLACEHOLDERS.iter().any(|p| program.contains(p))
}

fn placeholder_at(text: &str) -> Option<&'static str> {
    PLACEHOLDERS.iter().copied().find(|p| text.starts_with(p))
}

/// The value of parameter `n` (1 `{}`, 2 `{/}`, 3 `{.}`, 4 `{/.}`, 5 `{//}`) for `input`.
fn value(input: &Path, n: usize) -> String {
    let strip_ext = |s: &str| match s.rfind('.') {
        Some(i) if i > 0 && !s[i..].contains('/') && !s[..i].ends_with('/') => s[..i].to_string(),
        _ => s.to_string(),
    };
    let base = || {
        input
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    match n {
        1 => input.to_string_lossy().into_owned(),
        2 => base(),
        3 => strip_ext(&input.to_string_lossy()),
        4 => strip_ext(&base()),
        _ => input
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| ".".to_string()),
    }
}

/// One word of a program without a shell, its placeholders replaced by their values.
fn substitute(word: &str, input: &Path) -> String {
    let mut out = String::with_capacity(word.len() + input.as_os_str().len());
    let mut rest = word;
    while let Some(ch) = rest.chars().next() {
        if let Some(p) = placeholder_at(rest) {
            out.push_str(&value(input, parameter(p)));
            rest = &rest[p.len()..];
        } else {
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    out
}

/// Quotes a string for `/bin/sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command line for one fragment. A program refused by [`check_program`] (stored before
/// the check existed) still gets one: its unsafe placeholders stay as written, so the
/// program sees the text `{}`, never a path as code.
pub fn expand(program: &str, input: &Path) -> Vec<String> {
    if needs_shell(program) {
        let script = Script::read(program);
        let count = u8::BITS - script.uses.leading_zeros();
        let mut argv = Vec::with_capacity(4 + count as usize);
        argv.extend(["/bin/sh".to_string(), "-c".to_string(), script.text, "sh".to_string()]);
        // A parameter the script does not use is passed empty: only its position matters.
        argv.extend((1..=count as usize).map(|n| {
            if script.uses & (1 << (n - 1)) != 0 {
                value(input, n)
            } else {
                String::new()
            }
        }));
        argv
    } else {
        let template = if has_placeholder(program) {
            program.to_string()
        } else {
            format!("{} {{}}", program.trim_end())
        };
        // Only the `-c` rule can refuse a program without shell syntax: read it only then.
        let refused = template
            .split_whitespace()
            .any(|w| w.starts_with('-') && w.contains('c'))
            && !Script::read(&template).problems.is_empty();
        template
            .split_whitespace()
            .map(|word| {
                if refused {
                    word.to_string()
                } else {
                    substitute(word, input)
                }
            })
            .collect()
    }
}

/// The executable a template starts, when it can be known without running a shell.
pub fn executable(program: &str) -> Option<&str> {
    let first = program.split_whitespace().next()?;
    if needs_shell(first) || has_placeholder(first) {
        None
    } else {
        Some(first)
    }
}

/// Checks that the program's executable exists and may be executed, searching `path_var`
/// (a `PATH` value) for bare names. Returns its resolved path when known.
pub fn check_program(program: &str, path_var: Option<&str>) -> Result<Option<PathBuf>, ApiError> {
    if program.trim().is_empty() {
        return Err(ApiError::EmptyProgram);
    }
    check_placeholders(program)?;
    let Some(exe) = executable(program) else {
        return Ok(None);
    };
    let candidates: Vec<PathBuf> = if exe.contains('/') {
        vec![PathBuf::from(exe)]
    } else {
        path_var
            .unwrap_or("/usr/local/bin:/usr/bin:/bin")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(exe))
            .collect()
    };
    let mut found_not_executable = false;
    for candidate in candidates {
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && is_executable(&meta) {
            return Ok(Some(candidate));
        }
        found_not_executable = true;
    }
    if found_not_executable {
        Err(ApiError::ProgramNotExecutable {
            program: exe.to_string(),
        })
    } else {
        Err(ApiError::ProgramNotFound {
            program: exe.to_string(),
            where_: if exe.contains('/') {
                String::new()
            } else {
                " on herzog's PATH".to_string()
            },
        })
    }
}

/// Refuses a program with a placeholder that no quoting can pass safely where it stands.
fn check_placeholders(program: &str) -> Result<(), ApiError> {
    match Script::read(program).problems.into_iter().next() {
        Some(problem) => Err(ApiError::InvalidValue {
            what: "program".into(),
            reason: problem.to_string(),
        }),
        None => Ok(()),
    }
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn appends_the_path_without_placeholders() {
        assert_eq!(expand("wc -l", &p("/d/a.txt")), ["wc", "-l", "/d/a.txt"]);
    }

    #[test]
    fn replaces_gnu_parallel_placeholders() {
        let argv = expand("conv {} {/} {.} {/.} {//} out/{/.}.png", &p("/d/x/img.tar.gz"));
        assert_eq!(
            argv,
            [
                "conv",
                "/d/x/img.tar.gz",
                "img.tar.gz",
                "/d/x/img.tar",
                "img.tar",
                "/d/x",
                "out/img.tar.png"
            ]
        );
    }

    #[test]
    fn a_file_without_extension_keeps_its_name() {
        assert_eq!(
            expand("x {.} {/.}", &p("/d.dir/README")),
            ["x", "/d.dir/README", "README"]
        );
        assert_eq!(expand("x {/.}", &p("/d/.bashrc")), ["x", ".bashrc"]);
    }

    #[test]
    fn checks_programs() {
        assert_eq!(check_program("sh -c true", Some("/bin")).unwrap(), Some(p("/bin/sh")));
        assert!(matches!(
            check_program("no-such-program-xyz", Some("/bin")),
            Err(ApiError::ProgramNotFound { .. })
        ));
        let plain = std::env::temp_dir().join(format!("herzog-not-executable-{}", std::process::id()));
        std::fs::write(&plain, "data").unwrap();
        let result = check_program(plain.to_str().unwrap(), None);
        std::fs::remove_file(&plain).unwrap();
        assert!(
            matches!(result, Err(ApiError::ProgramNotExecutable { .. })),
            "{result:?}"
        );
        assert!(matches!(check_program("  ", None), Err(ApiError::EmptyProgram)));
        assert!(check_program("echo {} | wc", None).unwrap().is_some());
        assert_eq!(check_program("{} --version", None).unwrap(), None);
    }
}
