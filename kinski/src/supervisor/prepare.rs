//! Before an attempt runs: the paths of its start checked, its directories made (a staged
//! attempt's own directory, or the results folders on the shared filesystem), its inputs
//! handed to its user, and a staged directory removed once herzog has its completion.

use super::*;

impl Supervisor {
    /// Checks the paths of a start from the wire: all absolute and clean, and for a staged
    /// attempt, its directory is `<scratch>/<attempt>` and its files lie inside it.
    pub(super) fn check_paths(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        let refuse = |path: &Path, reason: String| WorkerError::Prepare {
            path: path.display().to_string(),
            reason,
        };
        for path in [
            &start.input,
            &start.cwd,
            &start.stdout,
            &start.stderr,
            &start.output_dir,
        ] {
            common::paths::clean_absolute(path).map_err(|e| refuse(path, e.to_string()))?;
        }
        if let Some(dir) = &start.scratch {
            let expected = self.scratch.join(start.attempt.0.to_string());
            if *dir != expected {
                return Err(refuse(
                    dir,
                    format!("a staged attempt's directory must be {}", expected.display()),
                ));
            }
            // The layout kinski's ownership rules rely on: logs directly in the attempt's
            // directory (kinski's), the output directory `out/`, the input under `in/`.
            let inputs = dir.join("in");
            let laid_out = [
                (&start.stdout, start.stdout.parent() == Some(dir.as_path())),
                (&start.stderr, start.stderr.parent() == Some(dir.as_path())),
                (&start.output_dir, start.output_dir == dir.join("out")),
                (&start.input, start.input.starts_with(&inputs) && start.input != inputs),
            ];
            for (path, ok) in laid_out {
                if !ok {
                    return Err(refuse(
                        path,
                        format!(
                            "not where a staged attempt's file belongs in {} (stdout and stderr in it, out/, in/<input>)",
                            dir.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Makes what an attempt needs before its input arrives: for a staged attempt its own
    /// directory in the scratch directory, with `out/` for the program and `in/` for herzog's
    /// uploads; on the shared filesystem the results folders. On a blocking thread.
    pub(crate) async fn prepare(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        self.check_paths(start)?;
        if self.lock().holds(start.attempt) {
            // Already accepted: its `in/` may be the program's by now, leave it be.
            return Ok(());
        }
        if start.scratch.is_some() {
            // Before anything is made, so a half-made directory is removed too.
            self.lock().staged.insert(start.attempt);
        }
        let (me, start) = (self.clone(), start.clone());
        tokio::task::spawn_blocking(move || me.prepare_now(&start))
            .await
            .unwrap_or_else(|e| {
                Err(WorkerError::Prepare {
                    path: String::new(),
                    reason: format!("the preparing thread failed: {e}"),
                })
            })
    }

    pub(super) fn prepare_now(&self, start: &StartAttempt) -> Result<(), WorkerError> {
        let failed = |dir: &Path, e: std::io::Error| WorkerError::Prepare {
            path: dir.display().to_string(),
            reason: e.to_string(),
        };
        let Some(root) = &start.scratch else {
            if let Some(logs) = start.stdout.parent() {
                DirFd::open_or_create(logs, DIR_MODE).map_err(|e| failed(logs, e))?;
            }
            return crate::process::ensure_output_dir(&start.output_dir, self.run_as.as_ref()).map_err(|e| {
                WorkerError::Prepare {
                    path: start.output_dir.display().to_string(),
                    reason: e.to_string(),
                }
            });
        };
        let scratch = DirFd::open(&self.scratch).map_err(|e| failed(&self.scratch, e))?;
        let attempt = scratch
            .create_dir(start.attempt.0.to_string(), DIR_MODE)
            .map_err(|e| failed(root, e))?;
        // Made now or by an earlier prep: kinski's either way, or someone planted it.
        let owner = attempt.owner().map_err(|e| failed(root, e))?;
        if owner.uid != rustix::process::geteuid().as_raw() || owner.mode & 0o022 != 0 {
            return Err(WorkerError::Prepare {
                path: root.display().to_string(),
                reason: format!(
                    "it is owned by uid {} with mode {:o}, not made by kinski: the scratch directory is not kinski's alone",
                    owner.uid, owner.mode
                ),
            });
        }
        let out = root.join("out");
        let made = attempt.create_dir("out", DIR_MODE).map_err(|e| failed(&out, e))?;
        if let Some(user) = &self.run_as {
            made.chown(user.uid, Some(user.gid)).map_err(|e| failed(&out, e))?;
        }
        let inputs = root.join("in");
        let made = attempt.create_dir("in", DIR_MODE).map_err(|e| failed(&inputs, e))?;
        // herzog's login writes here before the program exists; no one else may meanwhile.
        if let Some(uploader) = start.uploader_uid
            && made.owner().map_err(|e| failed(&inputs, e))?.uid != uploader
        {
            made.chown(uploader, None).map_err(|e| failed(&inputs, e))?;
        }
        Ok(())
    }

    /// Gives a staged attempt's `in/` (its working directory) to the user programs run as,
    /// now that herzog's uploads are done.
    pub(super) fn hand_over_inputs(&self, start: &StartAttempt) -> Result<(), SpawnError> {
        let (Some(root), Some(user)) = (&start.scratch, &self.run_as) else {
            return Ok(());
        };
        let inputs = root.join("in");
        let failed = |source| SpawnError::Handover {
            path: inputs.clone(),
            source,
        };
        let dir = DirFd::open(&self.scratch)
            .and_then(|scratch| scratch.open_dir(start.attempt.0.to_string()))
            .and_then(|attempt| attempt.open_dir("in"))
            .map_err(failed)?;
        let owner = dir.owner().map_err(failed)?;
        if (owner.uid, owner.gid) != (user.uid, user.gid) {
            dir.chown(user.uid, Some(user.gid)).map_err(failed)?;
        }
        Ok(())
    }

    /// Removes a staged attempt's directory, `<scratch>/<attempt>`, on a blocking thread.
    /// The scratch directory is kinski's own; what the program could change lies below, and
    /// std's `remove_dir_all` works there through descriptors without following links.
    pub(super) fn clean(&self, attempt: AttemptId) -> tokio::task::JoinHandle<()> {
        let dir = self.scratch.join(attempt.0.to_string());
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed a staged attempt's directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "failed to remove a staged attempt's directory"),
        })
    }

    /// Removes the directories of staged attempts this worker no longer holds (left by a
    /// previous kinski, or prepared for a start that never came), and remembers those of the
    /// completions it still holds, to remove them on their acknowledgement.
    pub(crate) async fn clean_leftovers(&self) {
        let scratch = self.scratch.clone();
        let listed = tokio::task::spawn_blocking(move || -> Vec<AttemptId> {
            let Ok(entries) = std::fs::read_dir(&scratch) else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter_map(|e| attempt_of(e.file_name().to_str()?))
                .collect()
        })
        .await
        .unwrap_or_default();
        let held = self.held();
        for attempt in listed {
            if held.contains(&attempt) {
                self.lock().staged.insert(attempt);
            } else {
                drop(self.clean(attempt));
            }
        }
    }
}

/// The attempt a directory in the scratch directory belongs to: a name of digits only.
fn attempt_of(name: &str) -> Option<AttemptId> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().map(AttemptId)
}
