//! An attempt's output: the pipes its program writes to, the log files kinski copies them
//! into (made through a directory descriptor), and the results folder made once.

use super::*;

/// The write ends an attempt's program gets as stdout and stderr (`None`: /dev/null, a
/// stream the project discards), and the read ends kinski copies into the log files.
pub(super) type AttemptOutputs = (Option<OwnedFd>, Option<OwnedFd>, Vec<Output>);

/// Each log keeps its stream's tap from `taps`, for followers.
pub(super) fn attempt_outputs(start: &StartAttempt, taps: &Taps) -> Result<AttemptOutputs, SpawnError> {
    let keep_out = start.settings.stdout.is_keep();
    let keep_err = start.settings.stderr.is_keep();
    let mut outputs = Vec::new();
    let logs = if keep_out || keep_err {
        Some(LogDir::open(if keep_out { &start.stdout } else { &start.stderr })?)
    } else {
        None
    };
    let mut open = |stream: &'static str, path: &Path, label: &'static str| -> Result<OwnedFd, SpawnError> {
        let (read, write) = pipe().map_err(|source| SpawnError::Pipe { stream, source })?;
        let log = match &logs {
            Some(dir) if path.parent() == Some(dir.path.as_path()) => dir.log(path, label, start.max_log_bytes)?,
            _ => LogDir::open(path)?.log(path, label, start.max_log_bytes)?,
        };
        let tap = if stream == "stderr" { &taps.stderr } else { &taps.stdout };
        outputs.push(Output::new(read, log.with_tap(tap.clone())));
        Ok(write)
    };
    // One pipe for both when they share a file: the program's own interleaving is kept.
    if keep_out && keep_err && start.stderr == start.stdout {
        let both = open("stdout", &start.stdout, "stdout and stderr")?;
        let copy = both.try_clone().map_err(|source| SpawnError::Pipe {
            stream: "stderr",
            source,
        })?;
        return Ok((Some(both), Some(copy), outputs));
    }
    let stdout = keep_out.then(|| open("stdout", &start.stdout, "stdout")).transpose()?;
    let stderr = keep_err.then(|| open("stderr", &start.stderr, "stderr")).transpose()?;
    Ok((stdout, stderr, outputs))
}

/// Gives a descriptor's file (a pipe, a terminal) to the user programs run as.
pub(super) fn give(fd: &OwnedFd, user: &crate::user::RunAs) -> io::Result<()> {
    interactive::give(fd, Some((user.uid, user.gid)))
}

/// A pipe whose ends are closed on exec (std dups the write end onto the child's stdout or
/// stderr); the read end does not block, so it can be drained without waiting.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((read, write))
}

/// The directory of an attempt's log files, opened once for both streams.
pub(crate) struct LogDir {
    pub(super) path: PathBuf,
    pub(super) dir: Arc<DirFd>,
}

impl LogDir {
    /// Opens (making it if missing, with mode 0755) the directory `log` lies in.
    pub(crate) fn open(log: &Path) -> Result<LogDir, SpawnError> {
        let path = log.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = DirFd::open_or_create(&path, DIR_MODE).map_err(|source| SpawnError::CreateDir {
            path: path.clone(),
            source,
        })?;
        Ok(LogDir {
            path,
            dir: Arc::new(dir),
        })
    }

    /// The log at `path`, made at its first byte. Whatever an earlier run left at that name
    /// goes now: a stream that stays empty leaves no file.
    pub(crate) fn log(&self, path: &Path, stream: &'static str, cap: u64) -> Result<Log, SpawnError> {
        let refused = |source| SpawnError::CreateDir {
            path: path.to_path_buf(),
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            refused(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a log path must end in a file name",
            ))
        })?;
        match self.dir.remove_file(name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(refused(e)),
            _ => {}
        }
        Ok(Log::new(
            Arc::clone(&self.dir),
            name.to_os_string(),
            self.path.join(name),
            stream,
            cap,
        ))
    }
}

/// Makes the output directory once per directory for the life of kinski (a project's attempts
/// share one): making it on every start was three failing `mkdir`s and five `statx`s. A
/// directory removed behind kinski's back is made again, at the cost of one `statx`. Made with
/// mode 0755 through descriptors, and handed to `run_as` through its own descriptor, so a link
/// planted at its name is never followed.
pub(crate) fn ensure_output_dir(dir: &Path, run_as: Option<&crate::user::RunAs>) -> Result<(), SpawnError> {
    static MADE: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let made = MADE.get_or_init(Default::default);
    let known = made.lock().unwrap_or_else(|p| p.into_inner()).contains(dir);
    if known && dir.is_dir() {
        return Ok(());
    }
    let failed = |source| SpawnError::CreateDir {
        path: dir.to_path_buf(),
        source,
    };
    let opened = DirFd::open_or_create(dir, DIR_MODE).map_err(failed)?;
    if let Some(user) = run_as
        && opened.owner().map_err(failed)?.uid != user.uid
    {
        opened.chown(user.uid, Some(user.gid)).map_err(failed)?;
    }
    made.lock().unwrap_or_else(|p| p.into_inner()).insert(dir.to_path_buf());
    Ok(())
}
