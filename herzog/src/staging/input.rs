//! Opens a project's input (or program) for upload to a host. herzog may run as root, and a
//! project directory may be writable by the user programs run as: a name there could be
//! replaced by a link to a file only root can read, a FIFO, or a device. So the input is
//! opened once, without blocking, and what was opened is checked: a regular file belonging to
//! the owner of the project directory (links are still followed to such files). Its size and
//! mode come from that same open file, and no more than that size is read.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for an upload and checks it (see the module). Blocking.
pub(crate) fn open(path: &Path) -> io::Result<(File, Metadata)> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let owner = std::fs::metadata(dir)?.uid();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file: not uploaded".into()));
    }
    if meta.uid() != owner {
        return Err(refuse(format!(
            "it belongs to uid {}, not to the owner of its directory (uid {owner}): not uploaded; a project's inputs are its directory owner's files",
            meta.uid()
        )));
    }
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// As root: a project directory owned by nobody, holding a file of its own, a link to it,
    /// a link to a root-only file, a FIFO and a link to a device.
    #[test]
    #[ignore = "needs root to own files as another user: cargo test -p herzog --lib -- --ignored as_root"]
    fn only_the_directory_owners_regular_files_are_uploaded_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (CI runs it as root)"
        );
        let root = tempfile::tempdir().unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
        let project = root.path().join("project");
        std::fs::create_dir(&project).unwrap();
        std::os::unix::fs::chown(&project, Some(nobody.as_raw()), None).unwrap();
        let own = project.join("a");
        std::fs::write(&own, "data").unwrap();
        std::os::unix::fs::chown(&own, Some(nobody.as_raw()), None).unwrap();
        std::os::unix::fs::symlink(&own, project.join("b")).unwrap();
        let secret = root.path().join("secret");
        std::fs::write(&secret, "root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, project.join("c")).unwrap();
        nix::unistd::mkfifo(&project.join("d"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", project.join("e")).unwrap();

        assert_eq!(open(&own).unwrap().1.len(), 4);
        assert_eq!(
            open(&project.join("b")).unwrap().1.len(),
            4,
            "a link to the owner's file"
        );
        let err = open(&project.join("c")).unwrap_err().to_string();
        assert!(err.contains("uid 0") && err.contains("not uploaded"), "{err}");
        for name in ["d", "e"] {
            let err = open(&project.join(name)).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{name}: {err}");
        }
    }
}
