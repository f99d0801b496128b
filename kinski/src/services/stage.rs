//! The directories of staged service placements, `<scratch>/services/<run>/`, on hosts
//! without the shared filesystem: made for herzog's login to copy the service's `stage` files
//! into, handed to the instance's user before it first starts, removed when the placement
//! ends. `<scratch>/services` is kinski's own (as the scratch directory is), so everything
//! here works through descriptors from it, and what lies below is removed without following
//! links.

use crate::user::RunAs;
use common::dirfd::{DIR_MODE, DirFd};
use common::instances::RunId;
use common::service::WorkerError;
use std::path::{Path, PathBuf};

/// The directory under the scratch directory that holds every staged placement's.
const SERVICES: &str = "services";

/// Where a staged placement's files go on this host.
pub(crate) fn dir_of(scratch: &Path, run: RunId) -> PathBuf {
    scratch.join(SERVICES).join(run.to_string())
}

fn failed(path: &Path, e: std::io::Error) -> WorkerError {
    WorkerError::Prepare {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Makes `<scratch>/services/<run>/` and gives it to `uploader` (herzog's login here), who
/// copies the files in. Blocking.
pub(crate) fn prepare(scratch: &Path, run: RunId, uploader: u32) -> Result<(), WorkerError> {
    let services = scratch.join(SERVICES);
    let parent = DirFd::open(scratch)
        .and_then(|s| s.create_dir(SERVICES, DIR_MODE))
        .map_err(|e| failed(&services, e))?;
    let dir = dir_of(scratch, run);
    let made = parent
        .create_dir(run.to_string(), DIR_MODE)
        .map_err(|e| failed(&dir, e))?;
    let owner = made.owner().map_err(|e| failed(&dir, e))?;
    let me = rustix::process::geteuid().as_raw();
    // Made now by kinski, or by an earlier prep for this run and already the uploader's.
    if owner.uid != me && owner.uid != uploader {
        return Err(WorkerError::Prepare {
            path: dir.display().to_string(),
            reason: format!(
                "it is owned by uid {}, not made by kinski: the scratch directory is not kinski's alone",
                owner.uid
            ),
        });
    }
    if owner.uid != uploader {
        made.chown(uploader, None).map_err(|e| failed(&dir, e))?;
    }
    Ok(())
}

/// Checks that herzog named this host's directory for `run` (the two must agree on
/// `scratch_dir`), so kinski never hands over or removes anything else.
pub(crate) fn check(scratch: &Path, run: RunId, staged: &Path) -> Result<(), WorkerError> {
    let mine = dir_of(scratch, run);
    if staged == mine {
        return Ok(());
    }
    Err(WorkerError::Prepare {
        path: staged.display().to_string(),
        reason: format!(
            "herzog staged the service's files there, but this worker keeps them in {}: give herzog's cluster.toml and this kinski the same scratch_dir",
            mine.display()
        ),
    })
}

/// Gives the placement's directory to the user the instance runs as (the uploads are done),
/// so no one else may change its files from now on. Blocking.
pub(crate) fn hand_over(scratch: &Path, run: RunId, user: Option<&RunAs>) -> Result<(), String> {
    let dir = dir_of(scratch, run);
    let opened = DirFd::open(scratch)
        .and_then(|s| s.open_dir(SERVICES))
        .and_then(|s| s.open_dir(run.to_string()))
        .map_err(|e| format!("failed to open the staged directory {}: {e}", dir.display()))?;
    let (uid, gid) = match user {
        Some(user) => (user.uid, user.gid),
        None => (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()),
    };
    let owner = opened
        .owner()
        .map_err(|e| format!("failed to read the owner of {}: {e}", dir.display()))?;
    if (owner.uid, owner.gid) != (uid, gid) {
        opened
            .chown(uid, Some(gid))
            .map_err(|e| format!("failed to give {} to uid {uid}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Removes a placement's directory. Blocking.
pub(crate) fn remove(scratch: &Path, run: RunId) {
    remove_path(&dir_of(scratch, run));
}

/// Removes every staged placement's directory: a kinski starting holds no placement (it
/// killed its predecessor's), so any there is left over. Blocking.
pub(crate) fn remove_leftovers(scratch: &Path) {
    remove_path(&scratch.join(SERVICES));
}

fn remove_path(dir: &Path) {
    // std's remove_dir_all works through descriptors without following links.
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "removed a staged service directory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "failed to remove a staged service directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_is_staged_only_into_its_own_directory() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let me = rustix::process::geteuid().as_raw();
        prepare(scratch.path(), RunId(7), me).expect("prepare");
        let dir = dir_of(scratch.path(), RunId(7));
        assert!(dir.is_dir());
        check(scratch.path(), RunId(7), &dir).expect("its own directory");
        let wrong = check(scratch.path(), RunId(7), &scratch.path().join("elsewhere"))
            .expect_err("another directory")
            .to_string();
        assert!(wrong.contains("same scratch_dir"), "{wrong}");
        hand_over(scratch.path(), RunId(7), None).expect("hand over");
        std::fs::write(dir.join("f"), "x").expect("write");
        remove(scratch.path(), RunId(7));
        assert!(!dir.exists());
        prepare(scratch.path(), RunId(8), me).expect("prepare");
        remove_leftovers(scratch.path());
        assert!(!scratch.path().join(SERVICES).exists());
    }

    #[test]
    fn a_link_planted_for_the_services_directory_is_refused() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(elsewhere.path(), scratch.path().join(SERVICES)).expect("symlink");
        let me = rustix::process::geteuid().as_raw();
        prepare(scratch.path(), RunId(1), me).expect_err("a link is not followed");
        assert!(!elsewhere.path().join("1").exists());
    }
}
