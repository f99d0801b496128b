//! A service's output file, written by kinski and rotated by it: the program writes into a
//! pipe (whatever user it runs as), kinski appends what it reads to the file, and when the
//! next bytes would take the file past its `*_maxbytes` it renames `<name>.1` to `<name>.2`
//! and so on (keeping `*_backups` old ones: `.1` the newest), `<name>` to `<name>.1`, and makes
//! a new `<name>`. A follower that reads the file by name sees a new file (a new inode) at
//! each rotation.
//!
//! kinski may be root and the file's directory a user's, so the privilege rule holds for a file
//! the services file names: its directory is opened by walking the path from `/` without
//! following a link ([`DirFd::open_walking`]); the file is opened or made relative to that
//! descriptor with `O_NOFOLLOW` and without blocking; a file found there must be a regular
//! file of its own (one link) that belongs to the user the service runs as; a file made there
//! is given to that user through its descriptor; and rotation renames and makes names inside
//! the directory held. Whatever the program later puts at a name (a link to root's file, a
//! link in place of the directory itself) is moved aside or replaced, never written through.
//! A kept file (under kinski's state directory) takes the same path, kinski being its user.

use crate::stream::{Layout, Tap};
use crate::user::RunAs;
use common::dirfd::{DIR_MODE, DirFd, FILE_MODE, Owner, in_the_way};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The user an output file belongs to: the one its service runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Every group of the user, for whether it may write the file's directory.
    pub(crate) groups: Vec<u32>,
}

impl Holder {
    /// The user a service runs as: `run_as` when kinski switches users, else kinski itself.
    pub(crate) fn of(run_as: Option<&RunAs>) -> Holder {
        match run_as {
            Some(user) => Holder {
                uid: user.uid,
                gid: user.gid,
                groups: user.groups.clone(),
            },
            None => Holder {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
                groups: Vec::new(),
            },
        }
    }
}

/// Why an output file could not be opened: the start fails with this, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error("{path} must be an absolute path to a file")]
    NotAFilePath { path: PathBuf },
    #[error("failed to open the directory of {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to open {path}: a directory on its way is a symbolic link (or not a directory): name the real path"
    )]
    DirLink { path: PathBuf },
    #[error("failed to open {path}: it is a symbolic link: name the file itself")]
    Link { path: PathBuf },
    #[error("failed to open {path}: it is not a regular file ({what}): output is appended only to a regular file")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("failed to open {path}: it has {links} hard links: it must be a file of its own")]
    HardLinks { path: PathBuf, links: u64 },
    #[error("failed to open {path}: it belongs to uid {owner}, not to uid {holder} the service runs as")]
    NotTheUsers { path: PathBuf, owner: u32, holder: u32 },
    #[error(
        "failed to open {path}: uid {holder}, whom the service runs as, may not write its directory (uid {owner}, mode {mode:o}), where the file and its backups are made"
    )]
    DirNotWritable {
        path: PathBuf,
        holder: u32,
        owner: u32,
        mode: u32,
    },
    #[error("failed to open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An output file being appended to, rotated by size.
#[derive(Debug)]
pub(crate) struct Rotating {
    dir: DirFd,
    name: OsString,
    /// For messages only: every file operation goes through `dir`.
    path: PathBuf,
    /// Rotated before it would grow past this; 0: never.
    max: u64,
    backups: u32,
    file: Arc<File>,
    /// What the current file holds.
    len: u64,
    /// Whom a file made here is given to (kinski is root, the service is not).
    give_to: Option<(u32, u32)>,
    /// Set when the file could not be written or rotated: the rest is read and dropped, so
    /// the program never blocks on a full pipe.
    broken: bool,
    /// Followers read the stream through it (kept output only): told of each file begun and
    /// of each write.
    tap: Option<Tap>,
}

impl Rotating {
    /// Opens the file the services file names at the absolute `path`, for `holder`.
    /// Blocking: only on a blocking thread.
    pub(crate) fn named(path: &Path, holder: &Holder, max: u64, backups: u32) -> Result<Rotating, OutputFileError> {
        let (parent, name) = split(path)?;
        let dir = DirFd::open_walking(parent).map_err(|source| {
            if in_the_way(&source) {
                OutputFileError::DirLink {
                    path: path.to_path_buf(),
                }
            } else {
                OutputFileError::Dir {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Rotating::open(dir, name, path, holder, max, backups)
    }

    /// Opens a kept file at `path` under kinski's state directory, making its directory if
    /// missing. Blocking: only on a blocking thread.
    pub(crate) fn kept(path: &Path, max: u64, backups: u32) -> Result<Rotating, OutputFileError> {
        let (parent, name) = split(path)?;
        let dir = DirFd::open_or_create(parent, DIR_MODE).map_err(|source| OutputFileError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
        Rotating::open(dir, name, path, &Holder::of(None), max, backups)
    }

    fn open(
        dir: DirFd,
        name: &OsStr,
        path: &Path,
        holder: &Holder,
        max: u64,
        backups: u32,
    ) -> Result<Rotating, OutputFileError> {
        let path = path.to_path_buf();
        let open_error = |source: io::Error| OutputFileError::Open {
            path: path.clone(),
            source,
        };
        // Root making files for another user: only where that user could make them itself.
        let privileged = rustix::process::geteuid().is_root() && holder.uid != 0;
        if privileged {
            let owner = dir.owner().map_err(open_error)?;
            if !may_write(owner, holder) {
                return Err(OutputFileError::DirNotWritable {
                    path,
                    holder: holder.uid,
                    owner: owner.uid,
                    mode: owner.mode,
                });
            }
        }
        let (file, made) =
            dir.open_or_create_append(name, FILE_MODE)
                .map_err(|source| match source.raw_os_error() {
                    Some(libc::ELOOP) => OutputFileError::Link { path: path.clone() },
                    Some(libc::ENXIO) => OutputFileError::NotRegular {
                        path: path.clone(),
                        what: "a FIFO, socket or device",
                    },
                    Some(libc::EISDIR) => OutputFileError::NotRegular {
                        path: path.clone(),
                        what: "a directory",
                    },
                    _ => open_error(source),
                })?;
        let stat = rustix::fs::fstat(&file).map_err(|e| open_error(e.into()))?;
        let give_to = privileged.then_some((holder.uid, holder.gid));
        if made {
            if let Some((uid, gid)) = give_to {
                give(&file, uid, gid).map_err(open_error)?;
            }
        } else {
            judge(
                Found {
                    kind: stat.st_mode & libc::S_IFMT,
                    links: stat.st_nlink,
                    owner: stat.st_uid,
                },
                holder.uid,
                &path,
            )?;
        }
        Ok(Rotating {
            dir,
            name: name.to_os_string(),
            path,
            max,
            backups,
            file: Arc::new(file),
            len: u64::try_from(stat.st_size).unwrap_or(0),
            give_to,
            broken: false,
            tap: None,
        })
    }

    /// Followers read this output through `tap` from now on. A tapped stream starts in a
    /// file of its own (one already holding bytes, a previous run's, is rotated away first),
    /// so the file's bytes are the stream's from the tap's first file on.
    pub(crate) fn with_tap(mut self, tap: Option<Tap>) -> Rotating {
        let Some(tap) = tap else { return self };
        // Followers read through the writer's descriptor, so the file must be open for
        // reading too: the one found was opened to append only.
        let fresh = if self.len > 0 { self.rotate() } else { self.fresh() };
        if let Err(err) = fresh {
            tracing::warn!(path = %self.path.display(), "failed to start the service's output file, dropping this run's: {err}");
            self.broken = true;
        }
        tap.file(self.file.clone(), Layout::LINEAR);
        self.tap = Some(tap);
        self
    }

    /// Where the file is, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the program's bytes, rotating as often as they need. Blocking: only on a
    /// blocking thread.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if self.broken || bytes.is_empty() {
            return;
        }
        if let Err(err) = self.place(bytes) {
            tracing::warn!(path = %self.path.display(), "failed to write or rotate the service's output, dropping the rest of this run's: {err}");
            self.broken = true;
        }
    }

    fn place(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = fits(self.len, self.max, bytes);
            if n == 0 {
                self.rotate()?;
                continue;
            }
            if let Some(tap) = &self.tap {
                tap.writing(n as u64);
            }
            let written = (&*self.file).write_all(&bytes[..n]);
            if let Some(tap) = &self.tap {
                tap.wrote(if written.is_ok() { n as u64 } else { 0 });
            }
            written?;
            self.len += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// `.1` to `.2` ... up to `.backups`, the file to `.1`, and a new file: every name inside
    /// the directory held, renamed (a link there is moved, never followed) or made new.
    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.backups).rev() {
            self.shift(&backup(&self.name, i), &backup(&self.name, i + 1));
        }
        if self.backups > 0 {
            self.shift(&self.name, &backup(&self.name, 1));
        }
        self.fresh()?;
        if let Some(tap) = &self.tap {
            tap.file(self.file.clone(), Layout::LINEAR);
        }
        Ok(())
    }

    /// A new empty file at the name, for reading and writing. Whatever is at the name now
    /// (the full file when no backups are kept, or what the program put there meanwhile) is
    /// unlinked: the file written is always made here.
    fn fresh(&mut self) -> io::Result<()> {
        let file = self.dir.create_file(&self.name, FILE_MODE)?;
        if let Some((uid, gid)) = self.give_to {
            give(&file, uid, gid)?;
        }
        self.file = Arc::new(file);
        self.len = 0;
        Ok(())
    }

    /// Renames `from` to `to`; a missing `from` is no backup yet.
    fn shift(&self, from: &OsStr, to: &OsStr) {
        match self.dir.rename(from, &self.dir, to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                from = %from.to_string_lossy(),
                to = %to.to_string_lossy(),
                "failed to rotate the service's output: {e}"
            ),
        }
    }
}

/// Gives a file made here to the user the service runs as, through its descriptor.
fn give(file: &File, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::fchown(
        file.as_fd(),
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    Ok(())
}

/// The directory and the name of an output file's path.
fn split(path: &Path) -> Result<(&Path, &OsStr), OutputFileError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if path.is_absolute() => Ok((parent, name)),
        _ => Err(OutputFileError::NotAFilePath {
            path: path.to_path_buf(),
        }),
    }
}

/// `<name>.<i>`.
fn backup(name: &OsStr, i: u32) -> OsString {
    let mut backup = name.to_os_string();
    backup.push(format!(".{i}"));
    backup
}

/// What an output file found at its name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    /// `st_mode & S_IFMT`.
    kind: u32,
    links: u64,
    owner: u32,
}

/// Whether a file found at an output's name may be appended to for the user `holder`: a
/// regular file of its own, the user's (a file someone else owns, or a hard link to it, is
/// not the user's to have root write).
fn judge(found: Found, holder: u32, path: &Path) -> Result<(), OutputFileError> {
    let path = path.to_path_buf();
    if found.kind != libc::S_IFREG {
        let what = match found.kind {
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFCHR | libc::S_IFBLK => "a device",
            libc::S_IFDIR => "a directory",
            _ => "not a file",
        };
        return Err(OutputFileError::NotRegular { path, what });
    }
    if found.links != 1 {
        return Err(OutputFileError::HardLinks {
            path,
            links: found.links,
        });
    }
    if found.owner != holder {
        return Err(OutputFileError::NotTheUsers {
            path,
            owner: found.owner,
            holder,
        });
    }
    Ok(())
}

/// Whether `holder` may make files in a directory with this owner and mode, by its mode
/// bits (an ACL may allow more; then the file is refused, not written).
fn may_write(dir: Owner, holder: &Holder) -> bool {
    if dir.uid == holder.uid {
        dir.mode & 0o300 == 0o300
    } else if dir.gid == holder.gid || holder.groups.contains(&dir.gid) {
        dir.mode & 0o030 == 0o030
    } else {
        dir.mode & 0o003 == 0o003
    }
}

/// How many of `bytes` go into a file that holds `len` bytes of at most `max` (0: no limit)
/// before it rotates: all of them if they fit; else up to the last line end that fits; else
/// nothing, in a file that holds something (rotate first: the line may fit in the next);
/// else, in an empty file a line longer than `max`, as much as fits.
fn fits(len: u64, max: u64, bytes: &[u8]) -> usize {
    if max == 0 {
        return bytes.len();
    }
    let room = usize::try_from(max.saturating_sub(len)).unwrap_or(usize::MAX);
    if bytes.len() <= room {
        return bytes.len();
    }
    match bytes[..room].iter().rposition(|b| *b == b'\n') {
        Some(end) => end + 1,
        None if len == 0 => room,
        None => 0,
    }
}

#[cfg(test)]
mod tests;
