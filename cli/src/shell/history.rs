//! Where the shell keeps its history across sessions: `$XDG_STATE_HOME/herzog/history`, else
//! `~/.local/state/herzog/history` (the XDG base directory rules).

use std::ffi::OsString;
use std::path::PathBuf;

/// The history file, if a home or a state directory is known.
pub(crate) fn path() -> Option<PathBuf> {
    file(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// The history file for these values of XDG_STATE_HOME and HOME: a relative XDG_STATE_HOME
/// is ignored, as the specification says.
fn file(xdg_state_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let state = match xdg_state_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".local/state"),
    };
    Some(state.join("herzog").join("history"))
}

/// Makes the history file's directory (private: the history holds what was typed).
pub(crate) fn prepare(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match path.parent() {
        Some(dir) => std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_state_home_wins_when_absolute_else_home() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(file(some("/s"), some("/h")), Some(PathBuf::from("/s/herzog/history")));
        assert_eq!(
            file(some("rel"), some("/h")),
            Some(PathBuf::from("/h/.local/state/herzog/history"))
        );
        assert_eq!(
            file(None, some("/h")),
            Some(PathBuf::from("/h/.local/state/herzog/history"))
        );
        assert_eq!(file(some(""), None), None);
        assert_eq!(file(None, some("")), None);
    }
}
