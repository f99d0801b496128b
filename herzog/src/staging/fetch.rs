//! Copying a staged attempt's results back: its outputs (the program's files) into the
//! project's output folder and its stdout and stderr (kinski's files) into the results folder.
//!
//! herzog may fetch as root over SFTP, whose server follows links, from a directory the
//! program's user can write. So what the listing says is checked again on the handle herzog
//! opened: an output must be a regular file of the user the program ran as, a log a regular
//! file of kinski's, else it is not fetched and a line at the end of the attempt's stderr log
//! says why. Locally, every file is written new in `incoming/` and renamed into place through
//! directory descriptors ([`common::dirfd`]): the output folder may be that user's too.

use super::{CHUNK, IN_FLIGHT, SftpSession, Stager, StagingError, remote, seek};
use crate::machine::Fetch;
use common::dirfd::{DIR_MODE, DirFd, FILE_MODE};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

impl Stager {
    /// Copies back what a staged attempt wrote: every regular file of the program's under its
    /// output directory (subdirectories too) into the project's output folder, and its stdout
    /// and stderr into the results folder. Each file lands under a temporary name and is
    /// renamed into place once complete and of the right size, so a reader never sees half a
    /// file. What is not fetched is named, with why, at the end of the attempt's stderr log.
    pub(crate) async fn fetch(&self, host: &str, plan: &Fetch) -> Result<u64, StagingError> {
        self.with_retries(host, |link| async move {
            let (remote_out, local_out) = (&plan.outputs.0, &plan.outputs.1);
            let owners = Owners::of(&link, host, remote_out).await?;
            let incoming = self.incoming.clone();
            let local_root = local_out.clone();
            let (incoming, outputs) = blocking(incoming.clone(), "open", move || {
                Ok((
                    Arc::new(DirFd::open(&incoming)?),
                    Arc::new(DirFd::open_or_create(&local_root, DIR_MODE)?),
                ))
            })
            .await?;
            let mut dropped = Vec::new();
            let files = list_files(&link, host, remote_out, &mut dropped).await?;
            let mut bytes = 0;
            for (from, rel) in files {
                let local = local_out.join(&rel);
                match download(&link, host, &from, owners.program, &incoming, &local).await? {
                    Download::Missing => {}
                    Download::Refused(why) => dropped.push((from, why)),
                    Download::Part { name, bytes: got } => match place(&incoming, name, &outputs, rel, &local).await? {
                        None => bytes += got,
                        Some(why) => dropped.push((from, why)),
                    },
                }
            }
            let note = notes(host, &owners, &dropped);
            let last = plan.logs.len().saturating_sub(1);
            for (i, (from, to)) in plan.logs.iter().enumerate() {
                // The note goes into stderr (logged last), where `hz logs` shows it.
                let note = if i == last { note.as_deref() } else { None };
                bytes += fetch_log(&link, host, from, to, owners.kinski, &incoming, note).await?;
            }
            Ok(bytes)
        })
        .await
    }
}

/// Who owns what a staged attempt leaves: its directory (and so its logs) is kinski's, its
/// output directory the user's programs run as. Read from the directories themselves
/// (`lstat`, so a link is refused): the attempt's directory is kinski's and no one else can
/// replace `out/` in it.
struct Owners {
    kinski: u32,
    program: u32,
}

impl Owners {
    async fn of(link: &SftpSession, host: &str, remote_out: &Path) -> Result<Owners, StagingError> {
        let attempt = remote_out.parent().unwrap_or(remote_out);
        Ok(Owners {
            kinski: dir_owner(link, host, attempt).await?,
            program: dir_owner(link, host, remote_out).await?,
        })
    }
}

/// The owner of the directory `path` on the host, which must not be a link.
async fn dir_owner(link: &SftpSession, host: &str, path: &Path) -> Result<u32, StagingError> {
    let meta = link
        .sftp
        .fs()
        .symlink_metadata(path)
        .await
        .map_err(|e| remote(host, "look at", path, e))?;
    let refused = |reason: &str| StagingError::Refused {
        host: host.to_string(),
        path: path.to_path_buf(),
        reason: format!("{reason}, not the directory kinski made, so nothing of this attempt is fetched"),
    };
    match meta.file_type() {
        Some(t) if t.is_dir() => meta.uid().ok_or_else(|| refused("its owner is unknown")),
        Some(t) if t.is_symlink() => Err(refused("it is a symbolic link")),
        _ => Err(refused("it is not a directory")),
    }
}

/// Runs blocking file work (directory descriptors, renames) off the runtime.
async fn blocking<T: Send + 'static>(
    path: PathBuf,
    action: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StagingError> {
    let local = |source| StagingError::Local {
        action,
        path: path.clone(),
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| local(std::io::Error::other(e)))?
        .map_err(local)
}

/// Reads `len` bytes at `at` (fewer at the end of the file) through a clone of the handle,
/// asking again after a short read.
async fn read_at(
    file: &openssh_sftp_client::file::File,
    at: u64,
    len: usize,
) -> Result<bytes::BytesMut, openssh_sftp_client::Error> {
    let mut part = file.clone();
    let mut out = bytes::BytesMut::with_capacity(len);
    while out.len() < len {
        seek(&mut part, at + out.len() as u64).await?;
        match part.read((len - out.len()) as u32, bytes::BytesMut::new()).await? {
            Some(chunk) if !chunk.is_empty() => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    Ok(out)
}

/// Every regular file under `dir` on the host, with its path relative to `dir`. Names come
/// from the host, so each must be a plain name: nothing is written outside the output folder.
/// Links and the like are not followed (they could point anywhere): they go to `dropped`.
async fn list_files(
    link: &SftpSession,
    host: &str,
    dir: &Path,
    dropped: &mut Vec<(PathBuf, String)>,
) -> Result<Vec<(PathBuf, PathBuf)>, StagingError> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), PathBuf::new())];
    while let Some((remote_dir, rel_dir)) = todo.pop() {
        let mut fs = link.sftp.fs();
        let entries = fs
            .open_dir(&remote_dir)
            .await
            .map_err(|e| remote(host, "list", &remote_dir, e))?;
        let mut stream = std::pin::pin!(entries.read_dir());
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| remote(host, "list", &remote_dir, e))?;
            let name = entry.filename().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let rel = common::paths::child(&rel_dir, &name).map_err(|_| StagingError::BadName {
                host: host.to_string(),
                dir: remote_dir.clone(),
                name: name.clone(),
            })?;
            let remote_path = remote_dir.join(&name);
            match entry.file_type() {
                Some(t) if t.is_dir() => todo.push((remote_path, rel)),
                Some(t) if t.is_file() => out.push((remote_path, rel)),
                Some(t) if t.is_symlink() => dropped.push((remote_path, "it is a symbolic link".into())),
                _ => dropped.push((remote_path, "it is not a regular file".into())),
            }
        }
    }
    Ok(out)
}

/// What a download brought.
enum Download {
    /// No such file on the host (kinski makes no log for a stream the program never wrote to).
    Missing,
    /// Opened, but not what may be fetched: why.
    Refused(String),
    /// Complete, under this name in `incoming`.
    Part { name: String, bytes: u64 },
}

/// Copies `from` into a new file in `incoming` if the handle herzog opened is a regular file
/// of `owner`: the listing said so, but the program may have replaced it since, and the
/// host's SFTP server (perhaps root) follows links.
async fn download(
    link: &SftpSession,
    host: &str,
    from: &Path,
    owner: u32,
    incoming: &Arc<DirFd>,
    to: &Path,
) -> Result<Download, StagingError> {
    let mut src = match link.sftp.open(from).await {
        Ok(f) => f,
        Err(openssh_sftp_client::Error::SftpError(openssh_sftp_client::error::SftpErrorKind::NoSuchFile, _)) => {
            return Ok(Download::Missing);
        }
        Err(e) => return Err(remote(host, "open", from, e)),
    };
    let meta = src.metadata().await.map_err(|e| remote(host, "look at", from, e))?;
    if !meta.file_type().is_some_and(|t| t.is_file()) {
        return Ok(Download::Refused(
            "it was not a regular file when herzog opened it (replaced after it was listed)".into(),
        ));
    }
    if meta.uid() != Some(owner) {
        return Ok(Download::Refused(format!(
            "it belongs to uid {}, not to uid {owner}, whose files these are (replaced after it was listed?)",
            meta.uid().map_or("?".to_string(), |u| u.to_string())
        )));
    }
    let expected = meta.len().unwrap_or(0);
    let name = format!("{}.part", next_part());
    let (dir, part) = (Arc::clone(incoming), name.clone());
    let file = blocking(to.to_path_buf(), "create", move || dir.create_file(&part, FILE_MODE)).await?;
    let mut dst = tokio::fs::File::from_std(file);
    let local = |action, source| StagingError::Local {
        action,
        path: to.to_path_buf(),
        source,
    };
    let result = async {
        // Several reads in flight at their own offsets, written out in order.
        let chunks = (0..expected.div_ceil(CHUNK as u64)).map(|i| i * CHUNK as u64);
        let src = &src;
        let mut reads = futures::stream::iter(chunks)
            .map(|at| read_at(src, at, CHUNK.min((expected - at) as usize)))
            .buffered(IN_FLIGHT);
        let mut got = 0u64;
        while let Some(chunk) = reads.next().await {
            let chunk = chunk.map_err(|e| remote(host, "read", from, e))?;
            got += chunk.len() as u64;
            dst.write_all(&chunk).await.map_err(|e| local("write", e))?;
        }
        dst.sync_all().await.map_err(|e| local("write", e))?;
        if got != expected {
            return Err(StagingError::Size {
                host: host.to_string(),
                path: from.to_path_buf(),
                expected,
                got,
            });
        }
        Ok(got)
    }
    .await;
    drop(src);
    match result {
        Ok(bytes) => Ok(Download::Part { name, bytes }),
        Err(e) => {
            let dir = Arc::clone(incoming);
            let _ = blocking(to.to_path_buf(), "remove", move || dir.remove_file(&name)).await;
            Err(e)
        }
    }
}

/// Renames the part `name` into `root/rel`, making the directories on the way, all through
/// descriptors. A link or a directory in the way (planted in the program user's output folder
/// on the shared filesystem) refuses the file: `Some(why)`.
async fn place(
    incoming: &Arc<DirFd>,
    name: String,
    root: &Arc<DirFd>,
    rel: PathBuf,
    local: &Path,
) -> Result<Option<String>, StagingError> {
    let (from, to) = (Arc::clone(incoming), Arc::clone(root));
    let part = name.clone();
    let placed = tokio::task::spawn_blocking(move || {
        let file = rel.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let target = match rel.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => to.create_dirs(parent, DIR_MODE)?,
            _ => to.create_dirs(Path::new(""), DIR_MODE)?,
        };
        from.rename(&part, &target, &file)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    match placed {
        Ok(()) => Ok(None),
        Err(e) => {
            let dir = Arc::clone(incoming);
            let _ = blocking(local.to_path_buf(), "remove", move || dir.remove_file(&name)).await;
            match common::dirfd::in_the_way(&e) {
                true => Ok(Some(format!(
                    "its place {} in herzog's results folder is taken by a link or a directory ({e})",
                    local.display()
                ))),
                false => Err(StagingError::Local {
                    action: "rename into",
                    path: local.to_path_buf(),
                    source: e,
                }),
            }
        }
    }
}

/// Fetches one log (kinski's file in the attempt's directory) into `to`, appending `note`.
async fn fetch_log(
    link: &SftpSession,
    host: &str,
    from: &Path,
    to: &Path,
    owner: u32,
    incoming: &Arc<DirFd>,
    note: Option<&str>,
) -> Result<u64, StagingError> {
    let (Some(parent), Some(file)) = (to.parent(), to.file_name()) else {
        return Err(StagingError::Local {
            action: "write",
            path: to.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        });
    };
    let (name, bytes) = match download(link, host, from, owner, incoming, to).await? {
        Download::Part { name, bytes } => (Some(name), bytes),
        Download::Missing => (None, 0),
        Download::Refused(reason) => {
            return Err(StagingError::Refused {
                host: host.to_string(),
                path: from.to_path_buf(),
                reason,
            });
        }
    };
    let Some(note) = note else {
        let Some(name) = name else { return Ok(0) };
        let logs = logs_dir(parent).await?;
        return match place(incoming, name, &logs, PathBuf::from(file), to).await? {
            None => Ok(bytes),
            Some(why) => Err(StagingError::Local {
                action: "write",
                path: to.to_path_buf(),
                source: std::io::Error::other(why),
            }),
        };
    };
    let (dir, text) = (Arc::clone(incoming), note.to_string());
    let name = blocking(to.to_path_buf(), "write", move || {
        use std::io::Write;
        let (name, mut file) = match name {
            Some(name) => {
                let file = dir.append_file(&name)?;
                (name, file)
            }
            None => {
                let name = format!("{}.part", next_part());
                let file = dir.create_file(&name, FILE_MODE)?;
                (name, file)
            }
        };
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        Ok(name)
    })
    .await?;
    let logs = logs_dir(parent).await?;
    match place(incoming, name, &logs, PathBuf::from(file), to).await? {
        None => Ok(bytes),
        Some(why) => Err(StagingError::Local {
            action: "write",
            path: to.to_path_buf(),
            source: std::io::Error::other(why),
        }),
    }
}

async fn logs_dir(dir: &Path) -> Result<Arc<DirFd>, StagingError> {
    let path = dir.to_path_buf();
    blocking(path.clone(), "open", move || {
        DirFd::open_or_create(&path, DIR_MODE).map(Arc::new)
    })
    .await
}

/// The lines saying what was not fetched, and why, for the end of the stderr log.
fn notes(host: &str, owners: &Owners, dropped: &[(PathBuf, String)]) -> Option<String> {
    if dropped.is_empty() {
        return None;
    }
    for (path, why) in dropped {
        tracing::warn!(%host, path = %path.display(), program_uid = owners.program, "output not fetched: {why}");
    }
    Some(
        dropped
            .iter()
            .map(|(path, why)| {
                format!(
                    "[herzog: {} on host {host} was not fetched: {why}; herzog fetches only the regular files the program wrote]\n",
                    path.display()
                )
            })
            .collect(),
    )
}

/// A name of its own for every file being fetched (two fetches of one file can run at once
/// when a completion is resent while the first still runs).
fn next_part() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
