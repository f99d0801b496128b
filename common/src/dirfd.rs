//! Directories held by descriptor, and the only way a privileged herzog or kinski touches a
//! directory someone else may write: every name is opened, made, replaced or renamed relative
//! to a descriptor this process opened itself, without following a symbolic link.
//!
//! A path is resolved anew at every use, so between two uses a user who can write one of its
//! directories can swap a component for a link to anywhere (`/etc/shadow`). A descriptor stays
//! on the directory it was opened on, `O_NOFOLLOW` refuses a link as the last component, and a
//! file *we* create is always new (`O_CREAT | O_EXCL`): whatever was at the name before (a
//! link, a hard link to someone's file, a FIFO) is unlinked, never opened or truncated.
//!
//! The components above the first directory opened by path ([`DirFd::open_or_create`]) are
//! the administrator's (herzog's state directory, kinski's scratch directory) and may be links;
//! everything below it is walked one name at a time.

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path};

/// The mode of every directory herzog and kinski make: nobody else may write into it, whatever
/// the process's umask.
pub const DIR_MODE: u32 = 0o755;
/// The mode of the files herzog and kinski write (logs, fetched outputs).
pub const FILE_MODE: u32 = 0o644;
/// How deep [`DirFd::remove_tree`] goes: one descriptor is open per level.
pub const MAX_REMOVE_DEPTH: usize = 256;

/// An open directory.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
}

/// Who owns a file or directory, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// The permission bits (`0o7777`).
    pub mode: u32,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Refuses anything but one plain name: `a/b` would be resolved through `a`, following it if
/// it is a link, and `..` would leave the directory.
fn plain(name: &OsStr) -> io::Result<&OsStr> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(part)), None) if part == name => Ok(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        )),
    }
}

impl DirFd {
    /// Opens the directory at `path`; its last component must not be a link (the ones above
    /// it are followed: they are the administrator's).
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let fd = rustix::fs::openat(rustix::fs::CWD, path, DIR_FLAGS, Mode::empty())?;
        Ok(DirFd { fd })
    }

    /// Opens the directory at `path`, making it and any missing parent with `mode` first. Its
    /// last component is never followed, nor is any directory made here (each is made relative
    /// to its parent's descriptor and opened with `O_NOFOLLOW`); parents that exist already are
    /// the administrator's and may be links.
    pub fn open_or_create(path: &Path, mode: u32) -> io::Result<DirFd> {
        match DirFd::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let (parent, name) = split(path)?;
        DirFd::open_parent(parent, mode)?.create_dir(name, mode)
    }

    /// Opens the directory at the absolute `path` by walking it from `/` one name at a time,
    /// following no link on the way: for a path a user names (a service's output file), any of
    /// whose directories may be that user's to swap for a link.
    pub fn open_walking(path: &Path) -> io::Result<DirFd> {
        let refused = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not an absolute path without '..'", path.display()),
            )
        };
        let mut parts = path.components();
        if parts.next() != Some(Component::RootDir) {
            return Err(refused());
        }
        let mut dir = DirFd::open(Path::new("/"))?;
        for part in parts {
            match part {
                Component::Normal(name) => dir = dir.open_dir(name)?,
                Component::CurDir => {}
                _ => return Err(refused()),
            }
        }
        Ok(dir)
    }

    /// Opens an existing parent directory (links followed), or makes it as above.
    fn open_parent(path: &Path, mode: u32) -> io::Result<DirFd> {
        let follow = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
        match rustix::fs::openat(rustix::fs::CWD, path, follow, Mode::empty()) {
            Ok(fd) => Ok(DirFd { fd }),
            Err(rustix::io::Errno::NOENT) => {
                let (parent, name) = split(path)?;
                DirFd::open_parent(parent, mode)?.create_dir(name, mode)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the directory `name` in this one, refusing a link.
    pub fn open_dir(&self, name: impl AsRef<OsStr>) -> io::Result<DirFd> {
        let fd = rustix::fs::openat(&self.fd, plain(name.as_ref())?, DIR_FLAGS, Mode::empty())?;
        Ok(DirFd { fd })
    }

    /// Makes the directory `name` here with `mode` (an existing one is kept) and opens it,
    /// refusing a link.
    pub fn create_dir(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<DirFd> {
        let name = plain(name.as_ref())?;
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        self.open_dir(name)
    }

    /// Walks `relative` (plain names only) down from here, making each missing directory with
    /// `mode`, and opens the last one. A link anywhere on the way is refused.
    pub fn create_dirs(&self, relative: &Path, mode: u32) -> io::Result<DirFd> {
        let mut dir = DirFd {
            fd: self.fd.try_clone()?,
        };
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a relative path of plain names", relative.display()),
                ));
            };
            dir = dir.create_dir(name, mode)?;
        }
        Ok(dir)
    }

    /// Creates the file `name` here, new, for reading and writing, with `mode`. Whatever had
    /// that name is unlinked first (the name, never what a link points to): the file written
    /// is always one this process made.
    pub fn create_file(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<File> {
        let name = plain(name.as_ref())?;
        let flags = OFlags::RDWR
            .union(OFlags::CREATE)
            .union(OFlags::EXCL)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        let create = || rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode));
        let fd = match create() {
            Err(rustix::io::Errno::EXIST) => {
                self.remove_file(name)?;
                create()?
            }
            other => other?,
        };
        Ok(File::from(fd))
    }

    /// Opens the file `name` here for appending, refusing a link.
    pub fn append_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let flags = OFlags::WRONLY
            .union(OFlags::APPEND)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::CLOEXEC);
        let fd = rustix::fs::openat(&self.fd, plain(name.as_ref())?, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Opens the file `name` here for appending, making it with `mode` when it is missing, and
    /// says whether it was made here. Never follows a link (`ELOOP`) and never waits (a FIFO
    /// without a reader is `ENXIO`); a file found is someone's, for the caller to check on the
    /// descriptor.
    pub fn open_or_create_append(&self, name: impl AsRef<OsStr>, mode: u32) -> io::Result<(File, bool)> {
        let name = plain(name.as_ref())?;
        let flags = OFlags::WRONLY
            .union(OFlags::APPEND)
            .union(OFlags::NOFOLLOW)
            .union(OFlags::NONBLOCK)
            .union(OFlags::NOCTTY)
            .union(OFlags::CLOEXEC);
        let make = flags.union(OFlags::CREATE).union(OFlags::EXCL);
        let mut tries = 0;
        loop {
            match rustix::fs::openat(&self.fd, name, make, Mode::from_raw_mode(mode)) {
                Ok(fd) => return Ok((File::from(fd), true)),
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => return Ok((File::from(fd), false)),
                // Removed in between: make it, unless someone keeps swapping it.
                Err(rustix::io::Errno::NOENT) if tries < 3 => tries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens the file `name` here for reading, refusing a link.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let flags = OFlags::RDONLY.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
        let fd = rustix::fs::openat(&self.fd, plain(name.as_ref())?, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Removes the name `name` here (a file or a link; a link's target is untouched).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, plain(name.as_ref())?, AtFlags::empty())?;
        Ok(())
    }

    /// Removes `name` here and, when it is a directory, everything below it, through
    /// descriptors: each directory is opened with `O_NOFOLLOW` relative to its parent, a link
    /// is removed as a name (never followed), so a link planted anywhere in the tree cannot
    /// turn the removal on anything outside it. Missing: nothing to do. Directories nested
    /// deeper than [`MAX_REMOVE_DEPTH`] are refused (each level holds a descriptor).
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        self.remove_tree_at(plain(name.as_ref())?, 0)
    }

    fn remove_tree_at(&self, name: &OsStr, depth: usize) -> io::Result<()> {
        let stat = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            other => other?,
        };
        if !rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir() {
            return match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Err(rustix::io::Errno::NOENT) => Ok(()),
                other => Ok(other?),
            };
        }
        if depth >= MAX_REMOVE_DEPTH {
            return Err(io::Error::other(format!(
                "directories are nested more than {MAX_REMOVE_DEPTH} deep"
            )));
        }
        // Opened without following: a directory swapped for a link since the stat is refused.
        let dir = self.open_dir(name)?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir.fd)? {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(std::ffi::OsString::from(
                    <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes),
                ));
            }
        }
        for child in &names {
            dir.remove_tree_at(child, depth + 1)?;
        }
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Renames `from` here to `to` in `target`, replacing what `to` named (a file or a link,
    /// never followed).
    pub fn rename(&self, from: impl AsRef<OsStr>, target: &DirFd, to: impl AsRef<OsStr>) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, plain(from.as_ref())?, &target.fd, plain(to.as_ref())?)?;
        Ok(())
    }

    /// Gives this directory to `uid` (and `gid` when given), through the descriptor: no name
    /// is looked up, so nothing planted can be chowned in its place.
    pub fn chown(&self, uid: u32, gid: Option<u32>) -> io::Result<()> {
        rustix::fs::fchown(&self.fd, Some(Uid::from_raw(uid)), gid.map(Gid::from_raw))?;
        Ok(())
    }

    /// Who owns this directory, and its mode.
    pub fn owner(&self) -> io::Result<Owner> {
        let stat = rustix::fs::fstat(&self.fd)?;
        Ok(Owner {
            uid: stat.st_uid,
            gid: stat.st_gid,
            mode: stat.st_mode & 0o7777,
        })
    }
}

/// Whether `error` says a link or a directory was in the way of a name walked or replaced
/// here (`ELOOP` from `O_NOFOLLOW`, `ENOTDIR`, `EISDIR`): what someone planted, not a fault.
pub fn in_the_way(error: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::LOOP, Errno::NOTDIR, Errno::ISDIR]
        .iter()
        .any(|e| error.raw_os_error() == Some(e.raw_os_error()))
}

/// A path's parent (`.` for a bare name) and last component.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if parent.as_os_str().is_empty() => Ok((Path::new("."), name)),
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no directory to create", path.display()),
        )),
    }
}

impl AsFd for DirFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn a_planted_link_or_hard_link_is_replaced_not_written_through() {
        let tmp = tempdir();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write victim");
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).expect("mkdir");
        std::os::unix::fs::symlink(&victim, logs.join("soft")).expect("symlink");
        std::fs::hard_link(&victim, logs.join("hard")).expect("hard link");
        let dir = DirFd::open(&logs).expect("open");
        for name in ["soft", "hard", "new"] {
            let mut file = dir.create_file(name, FILE_MODE).expect("create");
            file.write_all(b"PWNED\n").expect("write");
            let meta = std::fs::symlink_metadata(logs.join(name)).expect("stat");
            assert!(meta.is_file(), "{name} is a regular file now");
            assert_eq!(meta.nlink(), 1, "{name} is a file of its own");
            assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        }
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");
        // Reading refuses a link too.
        std::os::unix::fs::symlink(&victim, logs.join("soft2")).expect("symlink");
        assert!(dir.open_file("soft2").is_err());
        let mut text = String::new();
        dir.open_file("new")
            .expect("open")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "PWNED\n");
    }

    #[test]
    fn a_link_is_never_walked_through_and_names_must_be_plain() {
        let tmp = tempdir();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, out.join("sub")).expect("symlink");
        let dir = DirFd::open(&out).expect("open");
        assert!(dir.create_dirs(Path::new("sub/deeper"), DIR_MODE).is_err());
        assert!(dir.open_dir("sub").is_err());
        assert!(
            DirFd::open(&out.join("sub")).is_err(),
            "the last component is not followed"
        );
        assert!(DirFd::open_or_create(&out.join("sub"), DIR_MODE).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).expect("list").count(), 0);
        for bad in ["", ".", "..", "a/b", "/etc"] {
            assert!(dir.create_file(bad, FILE_MODE).is_err(), "{bad:?}");
            assert!(dir.create_dir(bad, DIR_MODE).is_err(), "{bad:?}");
        }
        assert!(dir.create_dirs(Path::new("../x"), DIR_MODE).is_err());
        // A link above what is made is the administrator's (a state directory moved elsewhere).
        let moved = DirFd::open_or_create(&out.join("sub/new/deeper"), DIR_MODE).expect("made");
        assert_eq!(moved.owner().expect("owner").mode, 0o755);
        assert!(elsewhere.join("new/deeper").is_dir());
    }

    #[test]
    fn directories_get_their_mode_whatever_the_umask() {
        let tmp = tempdir();
        // Restored below; tests creating files meanwhile get looser modes at worst.
        let old = rustix::process::umask(Mode::empty());
        let made = DirFd::open_or_create(&tmp.path().join("a/b/c"), DIR_MODE).and_then(|c| {
            c.create_dirs(Path::new("d/e"), DIR_MODE)?;
            c.create_file("f", FILE_MODE)
        });
        rustix::process::umask(old);
        made.expect("made");
        for dir in ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e"] {
            let mode = std::fs::metadata(tmp.path().join(dir))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{dir}");
        }
        let mode = std::fs::metadata(tmp.path().join("a/b/c/f"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_tree_is_removed_without_following_any_link_in_it() {
        let tmp = tempdir();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).expect("mkdir");
        std::fs::write(outside.join("keep/file"), "precious\n").expect("write");
        let tree = tmp.path().join("results/p");
        std::fs::create_dir_all(tree.join("output/deep/er")).expect("mkdir");
        std::fs::create_dir_all(tree.join("logs")).expect("mkdir");
        std::fs::write(tree.join("logs/a.1.stdout"), "x").expect("write");
        std::fs::write(tree.join("output/deep/er/f"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, tree.join("output/to-dir")).expect("symlink");
        std::os::unix::fs::symlink(outside.join("keep/file"), tree.join("output/deep/to-file")).expect("symlink");
        std::fs::hard_link(outside.join("keep/file"), tree.join("output/hard")).expect("hard link");
        let root = DirFd::open(&tmp.path().join("results")).expect("open");
        root.remove_tree("p").expect("removed");
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("keep/file")).expect("kept"),
            "precious\n"
        );
        // Missing is nothing to do; a link at the top is removed as a name.
        root.remove_tree("p").expect("nothing to remove");
        std::os::unix::fs::symlink(&outside, tmp.path().join("results/q")).expect("symlink");
        root.remove_tree("q").expect("the link removed");
        assert!(outside.join("keep/file").exists());
        assert!(root.remove_tree("../outside").is_err());
    }

    #[test]
    fn rename_replaces_a_link_and_owner_reads_the_descriptor() {
        let tmp = tempdir();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        std::os::unix::fs::symlink(&victim, b.join("x")).expect("symlink");
        let (da, db) = (DirFd::open(&a).expect("open"), DirFd::open(&b).expect("open"));
        da.create_file("part", FILE_MODE)
            .expect("create")
            .write_all(b"new\n")
            .expect("write");
        da.rename("part", &db, "x").expect("rename");
        assert_eq!(std::fs::read_to_string(b.join("x")).expect("read"), "new\n");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");
        let meta = std::fs::metadata(&b).expect("stat");
        let owner = db.owner().expect("owner");
        assert_eq!((owner.uid, owner.gid), (meta.uid(), meta.gid()));
        db.chown(meta.uid(), None).expect("chown to oneself");
    }

    #[test]
    fn a_walked_path_follows_no_link_and_append_opens_say_what_they_made() {
        let tmp = tempdir();
        let real = tmp.path().join("real");
        std::fs::create_dir_all(real.join("logs")).expect("mkdir");
        std::os::unix::fs::symlink(&real, tmp.path().join("link")).expect("symlink");
        let logs = DirFd::open_walking(&real.join("logs")).expect("a real path");
        for refused in [
            tmp.path().join("link/logs"),
            tmp.path().join("link"),
            real.join("../real/logs"),
        ] {
            assert!(DirFd::open_walking(&refused).is_err(), "{}", refused.display());
        }
        assert!(DirFd::open_walking(Path::new("relative/logs")).is_err());

        let (mut made, fresh) = logs.open_or_create_append("out", FILE_MODE).expect("made");
        assert!(fresh);
        made.write_all(b"one\n").expect("write");
        let (mut found, fresh) = logs.open_or_create_append("out", FILE_MODE).expect("found");
        assert!(!fresh);
        found.write_all(b"two\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(real.join("logs/out")).expect("read"),
            "one\ntwo\n"
        );

        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("write");
        std::os::unix::fs::symlink(&victim, real.join("logs/soft")).expect("symlink");
        let err = logs.open_or_create_append("soft", FILE_MODE).expect_err("a link");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error()),
            "{err}"
        );
        rustix::fs::mknodat(&logs, "fifo", rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        let err = logs
            .open_or_create_append("fifo", FILE_MODE)
            .expect_err("a FIFO, no reader");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::NXIO.raw_os_error()),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");
    }
}
