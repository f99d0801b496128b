//! The character set of project and worker names, checked wherever a name enters.

use crate::ApiError;

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Accepts `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`: safe in paths, URLs and shell words.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or digit")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ApiError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// Turns a directory's base name into a valid project name (used when `--name` is not given).
pub fn name_from_dir(dir: &std::path::Path) -> String {
    let base = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with(['.', '_', '-']) {
        out.remove(0);
    }
    out.truncate(MAX_NAME_LEN);
    if out.is_empty() {
        out.push_str("project");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        for ok in ["a", "genome-2024", "logs_v1.2", "0x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_from_directories_are_valid() {
        for dir in ["/data/genome 2024", "/x/.hidden", "/", "/a/ünï"] {
            let name = name_from_dir(std::path::Path::new(dir));
            assert!(check_name(&name).is_ok(), "{dir} -> {name}");
        }
    }
}
