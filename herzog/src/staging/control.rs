//! Where herzog's ssh masters keep their control sockets, and what a killed herzog left there.
//!
//! Each master (one per staged host) listens on `<dir>/.ssh-connectionXXXXXX/master`
//! (openssh's layout). The directory is `<state_dir>/ssh`, so it belongs to this herzog: a
//! herzog killed with -9 leaves its masters running (they are not its children) and their
//! directories behind, and the next one, finding them there at start-up, tells each master
//! to exit (`ssh -O exit`) and removes the directories.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// What follows the control directory in a socket's path: openssh's `/.ssh-connection` and
/// six random characters, `/master`, and the `.` and 16 random characters ssh appends to
/// the name it binds first (then renames).
const SOCKET_SUFFIX: usize = "/.ssh-connection".len() + 6 + "/master".len() + 1 + 16;
/// How long a master gets to answer `ssh -O exit`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The control directory of one state directory.
#[derive(Debug)]
pub(super) struct ControlDir {
    path: PathBuf,
    /// In /tmp, because the state directory's path is too long for a socket: a place other
    /// users can write, so the directory is checked to be this user's own before use.
    fallback: bool,
}

impl ControlDir {
    /// `<state_dir>/ssh`, or when that path is too long for a socket,
    /// `/tmp/herzog-ssh-<hash of the state directory>`: the same on every start, so a
    /// restarted herzog finds what its predecessor left.
    pub(super) fn of(state_dir: &Path) -> ControlDir {
        let state_dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let path = state_dir.join("ssh");
        if path.as_os_str().len() + SOCKET_SUFFIX <= MAX_SOCKET_PATH {
            return ControlDir { path, fallback: false };
        }
        let hash = fnv1a(state_dir.as_os_str().as_encoded_bytes());
        ControlDir {
            path: PathBuf::from(format!("/tmp/herzog-ssh-{hash:016x}")),
            fallback: true,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the directory (mode 0700), or checks the existing one is a directory of this
    /// user's that no one else can write.
    pub(super) fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if self.fallback {
            tracing::warn!(
                dir = %self.path.display(),
                "herzog's state directory has too long a path for ssh's control sockets \
                 (a Unix socket path holds 107 bytes): they go in this directory instead"
            );
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => return std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let meta = std::fs::symlink_metadata(&self.path)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != me {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a directory of herzog's user: remove it, or give herzog a shorter state directory",
                self.path.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// What a previous herzog left: each entry of the directory, and the control socket in it
    /// if there is one. Nothing when the directory is missing, not this user's, or writable by
    /// others.
    pub(super) fn leftovers(&self) -> std::io::Result<Vec<Leftover>> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // Only a directory no one else could have written to: what is in it is a herzog's.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let path = entry.path();
            let socket = path.join("master");
            let socket = entry
                .file_type()?
                .is_dir()
                .then(|| std::fs::symlink_metadata(&socket).ok().map(|_| socket))
                .flatten();
            found.push(Leftover { path, socket });
        }
        Ok(found)
    }
}

/// An entry a previous herzog left in the control directory.
#[derive(Debug)]
pub(super) struct Leftover {
    path: PathBuf,
    /// Its master's control socket, if it has one.
    socket: Option<PathBuf>,
}

/// Stops the masters of `leftovers` and removes their directories; says in the log what it
/// did. A master that does not answer is left to its idle timeout (its socket is gone with
/// its directory, so nothing can use it).
pub(super) async fn clear(leftovers: Vec<Leftover>) {
    if leftovers.is_empty() {
        return;
    }
    let mut stopped = 0;
    for leftover in &leftovers {
        if let Some(socket) = &leftover.socket {
            match exit_master(socket).await {
                Ok(()) => stopped += 1,
                // Refused: no master listens there any more (it timed out, or the host went).
                Err(reason) => tracing::debug!(socket = %socket.display(), %reason, "no SSH master to stop"),
            }
        }
    }
    let paths: Vec<PathBuf> = leftovers.into_iter().map(|l| l.path).collect();
    let count = paths.len();
    let removed = tokio::task::spawn_blocking(move || {
        for path in &paths {
            let gone = match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
                Ok(_) => std::fs::remove_file(path),
                Err(e) => Err(e),
            };
            if let Err(e) = gone
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "failed to remove what a previous herzog left");
            }
        }
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "failed to remove what a previous herzog left");
    }
    tracing::info!(
        "stopped {stopped} of the SSH masters a previous herzog left, and removed {count} control directories"
    );
}

/// `ssh -O exit` on a control socket: the master closes its connection and exits.
async fn exit_master(socket: &Path) -> Result<(), String> {
    let mut arg = OsString::from("ControlPath=");
    arg.push(socket);
    let mut cmd = tokio::process::Command::new("ssh");
    // No user config: a broken ~/.ssh/config must not stop the clean-up.
    cmd.args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o"])
        .arg(arg)
        .args(["-O", "exit", "herzog-previous-master"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(EXIT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Ok(Err(e)) => Err(format!("failed to run ssh: {e}")),
        Err(_) => Err(format!("no answer within {EXIT_TIMEOUT:?}")),
    }
}

/// FNV-1a, 64 bits: a name that stays the same across herzog's versions (std's hasher may
/// change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_state_directory_holds_the_sockets_and_a_long_one_falls_back_to_tmp() {
        let short = ControlDir::of(Path::new("/var/lib/herzog"));
        assert_eq!(short.path(), Path::new("/var/lib/herzog/ssh"));
        assert!(!short.fallback);
        let long = Path::new("/srv").join("x".repeat(80));
        let fallback = ControlDir::of(&long);
        assert!(fallback.fallback);
        let name = fallback.path().to_str().unwrap();
        assert!(name.starts_with("/tmp/herzog-ssh-"), "{name}");
        assert!(fallback.path().as_os_str().len() + SOCKET_SUFFIX <= MAX_SOCKET_PATH);
        // The same every time, and another for another state directory.
        assert_eq!(ControlDir::of(&long).path(), fallback.path());
        assert_ne!(ControlDir::of(&long.join("y")).path(), fallback.path());
        // The longest path that still fits is used as it is.
        let edge = PathBuf::from(format!(
            "/{}",
            "s".repeat(MAX_SOCKET_PATH - SOCKET_SUFFIX - "/ssh".len() - 1)
        ));
        let fits = ControlDir::of(&edge);
        assert!(!fits.fallback);
        assert_eq!(fits.path().as_os_str().len() + SOCKET_SUFFIX, MAX_SOCKET_PATH);
    }

    #[tokio::test]
    async fn leftovers_are_removed_even_when_no_master_answers() {
        let tmp = tempfile::tempdir().unwrap();
        let control = ControlDir::of(tmp.path());
        control.create().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(control.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A socket nothing listens on any more (its master is gone), and a directory from a
        // master that never started.
        let dead = control.path().join(".ssh-connectionAAAAAA");
        std::fs::create_dir(&dead).unwrap();
        drop(std::os::unix::net::UnixListener::bind(dead.join("master")).unwrap());
        std::fs::create_dir(control.path().join(".ssh-connectionBBBBBB")).unwrap();
        let leftovers = control.leftovers().unwrap();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        assert_eq!(leftovers.iter().filter(|l| l.socket.is_some()).count(), 1);
        clear(leftovers).await;
        assert_eq!(std::fs::read_dir(control.path()).unwrap().count(), 0);
        // A second create keeps the directory.
        control.create().unwrap();
        assert!(control.leftovers().unwrap().is_empty());
    }
}
