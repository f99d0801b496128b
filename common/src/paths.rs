//! Path checks for anything that arrives over the wire: a path never leaves the directory it
//! belongs to.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("'{path}' is not a plain file name inside its directory (no '/', '..', or empty names)")]
    NotAName { path: String },
    #[error("'{path}' must be an absolute path without '..'")]
    NotClean { path: String },
}

/// Joins `name`, which must be one plain file name, onto `base`: the result is always a child
/// of `base`.
pub fn child(base: &Path, name: &str) -> Result<PathBuf, PathError> {
    let refused = || PathError::NotAName { path: name.to_string() };
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(part)), None) if part == name && !name.contains('\0') => Ok(base.join(name)),
        _ => Err(refused()),
    }
}

/// Accepts an absolute path with no `..` (or `.`) component, so that a prefix check on it
/// means what it says.
pub fn clean_absolute(path: &Path) -> Result<&Path, PathError> {
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.as_os_str().as_encoded_bytes().contains(&0);
    if clean {
        Ok(path)
    } else {
        Err(PathError::NotClean {
            path: path.display().to_string(),
        })
    }
}

/// Makes a directory (and its parents) and returns its canonical path: a daemon's state
/// directory given relative to where it was started means nothing on the hosts it talks to.
pub fn made_dir(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(path)?;
    path.canonicalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_only() {
        let base = Path::new("/data/p");
        assert_eq!(child(base, "chr1.fa").unwrap(), Path::new("/data/p/chr1.fa"));
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "../x", "a\0b", "a/"] {
            assert!(child(base, bad).is_err(), "{bad:?}");
        }
        assert!(clean_absolute(Path::new("/r/p/logs/a.1.stdout")).is_ok());
        for bad in ["r/p", "/r/../etc", "", "./r"] {
            assert!(clean_absolute(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    proptest! {
        // The property the fuzz target (fuzz/fuzz_targets/paths.rs) also checks.
        #[test]
        fn a_child_never_leaves_its_base(name in "\\PC{0,12}|[./a\\\\]{0,6}") {
            let base = Path::new("/base/dir");
            if let Ok(p) = child(base, &name) {
                prop_assert_eq!(p.parent(), Some(base));
                prop_assert!(clean_absolute(&p).is_ok());
            }
        }
    }
}
