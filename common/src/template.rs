//! The program template: how `hz action <dir> <program>` becomes a command line per fragment.
//!
//! Placeholders follow GNU parallel: `{}` the input path, `{/}` its base name, `{.}` the path
//! without extension, `{/.}` the base name without extension, `{//}` its directory. Without
//! any placeholder the path is appended as the last argument. A program with shell syntax
//! (pipes, redirections, quotes, `$`) runs under `/bin/sh -c` with the substitutions quoted;
//! anything else is split on whitespace and executed directly, which saves a shell per
//! fragment (what make does for simple recipes).

use crate::ApiError;
use std::path::{Path, PathBuf};

const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', '#', '~', '=', '%', '\n',
];
const PLACEHOLDERS: &[&str] = &["{//}", "{/.}", "{/}", "{.}", "{}"];

/// True when the template needs a shell.
pub fn needs_shell(program: &str) -> bool {
    program.contains(SHELL_CHARS)
}

fn has_placeholder(program: &str) -> bool {
    PLACEHOLDERS.iter().any(|p| program.contains(p))
}

fn substitute(template: &str, input: &Path, quote: bool) -> String {
    let path = input.to_string_lossy().into_owned();
    let base = input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let strip_ext = |s: &str| match s.rfind('.') {
        Some(i) if i > 0 && !s[i..].contains('/') && !s[..i].ends_with('/') => s[..i].to_string(),
        _ => s.to_string(),
    };
    let dir = input
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".to_string());
    let value = |p: &str| -> String {
        let v = match p {
            "{//}" => dir.clone(),
            "{/.}" => strip_ext(&base),
            "{/}" => base.clone(),
            "{.}" => strip_ext(&path),
            _ => path.clone(),
        };
        if quote { shell_quote(&v) } else { v }
    };
    let mut out = String::with_capacity(template.len() + path.len());
    let mut rest = template;
    'outer: while !rest.is_empty() {
        if rest.starts_with('{') {
            for p in PLACEHOLDERS {
                if let Some(after) = rest.strip_prefix(p) {
                    out.push_str(&value(p));
                    rest = after;
                    continue 'outer;
                }
            }
        }
        let ch = rest.chars().next().unwrap_or_default();
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
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

/// The command line for one fragment.
pub fn expand(program: &str, input: &Path) -> Vec<String> {
    let template = if has_placeholder(program) {
        program.to_string()
    } else {
        format!("{} {{}}", program.trim_end())
    };
    if needs_shell(program) {
        vec!["/bin/sh".into(), "-c".into(), substitute(&template, input, true)]
    } else {
        template
            .split_whitespace()
            .map(|word| substitute(word, input, false))
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
    fn shell_programs_get_quoted_paths() {
        let argv = expand("gzip -c {} > {.}.gz", &p("/d/it's a file.txt"));
        assert_eq!(argv[..2], ["/bin/sh", "-c"]);
        assert_eq!(argv[2], r"gzip -c '/d/it'\''s a file.txt' > '/d/it'\''s a file'.gz");
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
