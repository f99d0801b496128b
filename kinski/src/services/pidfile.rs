//! One pid file per service instance in `kinski.pid_dir`, for tools that expect them:
//! `<pid_dir>/<instance>.pid` (`web:0.pid`, `agent@euclid:0.pid`) holds the pid of the
//! instance's process, a line, while it has one, and is gone while it has none (stopped,
//! exited, between a crash and its restart). Each is written whole or not at all (a temporary
//! file renamed over it) through a descriptor of the directory, which must be kinski's and
//! writable by no one else.

use common::dirfd::{DIR_MODE, DirFd, FILE_MODE};
use common::instances::InstanceId;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the pid directory cannot be used; kinski does not start.
#[derive(Debug, thiserror::Error)]
pub enum PidDirError {
    #[error("failed to open the pid directory {path} (kinski.pid_dir): {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the pid directory {path} (kinski.pid_dir) is {problem}, so others could plant or change pid files: make it kinski's and not writable by others (chown, chmod go-w)"
    )]
    NotOwn { path: PathBuf, problem: String },
}

/// The pid directory, held open.
#[derive(Clone, Debug)]
pub(crate) struct PidFiles {
    dir: Arc<DirFd>,
    /// For messages only.
    path: PathBuf,
}

impl PidFiles {
    /// Opens the directory at `path`, making it (mode 0755) if missing. Blocking.
    pub(crate) fn open(path: &Path) -> Result<PidFiles, PidDirError> {
        let failed = |source| PidDirError::Open {
            path: path.to_path_buf(),
            source,
        };
        let dir = DirFd::open_or_create(path, DIR_MODE).map_err(failed)?;
        let owner = dir.owner().map_err(failed)?;
        let me = rustix::process::geteuid().as_raw();
        if owner.uid != me || owner.mode & 0o022 != 0 {
            return Err(PidDirError::NotOwn {
                path: path.to_path_buf(),
                problem: format!("owned by uid {} with mode {:o}", owner.uid, owner.mode),
            });
        }
        Ok(PidFiles {
            dir: Arc::new(dir),
            path: path.to_path_buf(),
        })
    }

    /// Says `instance` runs as `pid`. Blocking; a failure is logged, the instance runs on.
    pub(crate) fn write(&self, instance: &InstanceId, pid: i32) {
        let name = file_name(instance);
        let temp = format!(".{name}.tmp");
        let written = (|| {
            let mut file = self.dir.create_file(&temp, FILE_MODE)?;
            file.write_all(format!("{pid}\n").as_bytes())?;
            self.dir.rename(&temp, &self.dir, &name)
        })();
        if let Err(err) = written {
            let _ = self.dir.remove_file(&temp);
            tracing::warn!(path = %self.path.join(&name).display(), "failed to write the instance's pid file: {err}");
        }
    }

    /// Says `instance` has no process. Blocking; a failure is logged.
    pub(crate) fn remove(&self, instance: &InstanceId) {
        let name = file_name(instance);
        match self.dir.remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.join(&name).display(), "failed to remove the instance's pid file: {e}")
            }
        }
    }
}

/// `web:0.pid`: the instance as `hz status` names it.
fn file_name(instance: &InstanceId) -> String {
    format!("{instance}.pid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn web(index: u32) -> InstanceId {
        InstanceId {
            service: "web".into(),
            host: None,
            index,
        }
    }

    #[test]
    fn a_pid_file_is_written_whole_replaced_and_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("run/herzog");
        let pids = PidFiles::open(&dir).expect("open");
        pids.write(&web(0), 41);
        pids.write(&web(0), 42);
        pids.write(&web(1), 7);
        assert_eq!(std::fs::read_to_string(dir.join("web:0.pid")).expect("read"), "42\n");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["web:0.pid", "web:1.pid"], "no temporary file left");
        pids.remove(&web(0));
        pids.remove(&web(0));
        assert!(!dir.join("web:0.pid").exists());
        assert!(dir.join("web:1.pid").exists());
    }

    #[test]
    fn a_pid_directory_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = PidFiles::open(&dir).expect_err("refused");
        assert!(err.to_string().contains("mode 777"), "{err}");
    }
}
