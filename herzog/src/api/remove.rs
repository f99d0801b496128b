//! `hz remove [--purge]`: removes a project, says where its results folder is, and with
//! `--purge` deletes that folder (also one an earlier, removed project of that name left),
//! after the removal is committed, on a blocking thread, through directory descriptors: the
//! folder's `output/` belongs to the users whose programs wrote it, and herzog may be root.

use super::{Api, blocking, storage};
use crate::machine::Event;
use crate::store::Reader;
use common::ApiError;
use common::dirfd::DirFd;
use common::history::ProjectRemoved;
use std::path::{Path, PathBuf};

/// Removes `name` (when it is a live project) and, with `purge`, its results folder.
pub(super) async fn remove(api: &Api, name: String, purge: bool) -> Result<ProjectRemoved, ApiError> {
    // A job's folder (`run:N`) is one path component too.
    common::job::check_project_or_job(&name)?;
    let results_dir = api.results_root.join(&name);
    let live = {
        let n = name.clone();
        api.handle.query(move |m| m.project_ref(&n).is_ok()).await?
    };
    if live {
        // Commit, then act: the folder goes only once the record no longer has the project.
        api.handle.event(Event::RemoveProject { name: name.clone() }).await?;
    } else {
        let db = api.db.clone();
        let n = name.clone();
        let removed_before =
            blocking(move || Reader::open(&db).and_then(|r| r.was_removed(&n)).map_err(storage)).await?;
        if !(purge && removed_before) {
            return Err(ApiError::UnknownProject { name });
        }
    }
    if purge {
        let (root, folder) = (api.results_root.clone(), name.clone());
        // Spawned: it finishes even if the caller's deadline drops this handler.
        let purged = tokio::task::spawn_blocking(move || purge_folder(&root, &folder))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the purge task failed: {e}"))));
        if let Err(e) = purged {
            tracing::warn!(project = %name, path = %results_dir.display(), error = %e, "failed to purge a project's results folder");
            return Err(ApiError::PurgeFailed {
                name,
                path: results_dir.display().to_string(),
                reason: e.to_string(),
            });
        }
        tracing::info!(project = %name, path = %results_dir.display(), "results folder purged");
    }
    let left = exists(results_dir.clone()).await;
    Ok(ProjectRemoved {
        name,
        removed: live,
        results_dir,
        purged: purge,
        left,
    })
}

/// Deletes `<root>/<name>` and everything in it, without following a link anywhere in it.
fn purge_folder(root: &Path, name: &str) -> std::io::Result<()> {
    match DirFd::open(root) {
        Ok(root) => root.remove_tree(name),
        // No results folder at all: nothing ran yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `path` names anything (a link counts), looked at on a blocking thread.
pub(super) async fn exists(path: PathBuf) -> bool {
    tokio::task::spawn_blocking(move || std::fs::symlink_metadata(path).is_ok())
        .await
        .unwrap_or(false)
}
