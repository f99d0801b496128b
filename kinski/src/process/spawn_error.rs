//! Why a program could not be started, said so a user can act on it: a missing program,
//! directory or interpreter, told apart on the failure path only.

use super::*;

/// Why an attempt's program could not be started. The attempt is not lost: report it with
/// [`start_failed`] and this error's message.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("failed to start the program: the command line is empty")]
    EmptyArgv,
    #[error("failed to create the directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to give {path} to the user programs run as: {source}")]
    Handover {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{stream}: {source}")]
    OutputFile {
        stream: &'static str,
        #[source]
        source: crate::rotate::OutputFileError,
    },
    #[error("failed to make a pipe for the program's {stream}: {source}")]
    Pipe {
        stream: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to start {program} in {cwd}: the working directory is unusable: {source}")]
    Cwd {
        program: String,
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to start {program}: interpreter {interpreter} not found (its #! line): install it or correct that line"
    )]
    Interpreter { program: String, interpreter: String },
    #[error(
        "failed to start {program}: the file is there, but the interpreter or dynamic loader it names was not found"
    )]
    Loader { program: String },
    #[error("failed to start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to make the attempt's cgroup, which would hold it to its requests: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("failed to open a pidfd for {program} (pid {pid}), so it was killed: {source}")]
    Pidfd {
        program: String,
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// The spawn reports a failed chdir with the same errno as a failed exec (as std does), so
/// look at the directory to say which it was. Only on the failure path, to keep spawning cheap.
pub(super) fn start_error(program: &str, cwd: &Path, source: io::Error) -> SpawnError {
    let cwd_ok = std::fs::metadata(cwd).is_ok_and(|meta| meta.is_dir());
    // ENOENT for a program that is there: exec could not find what runs it.
    if cwd_ok
        && source.kind() == io::ErrorKind::NotFound
        && let Some(file) = find_program(program, cwd)
    {
        let program = program.to_string();
        return match interpreter_of(&file) {
            Some(interpreter) => SpawnError::Interpreter { program, interpreter },
            None => SpawnError::Loader { program },
        };
    }
    if cwd_ok {
        SpawnError::Start {
            program: program.to_string(),
            source,
        }
    } else {
        SpawnError::Cwd {
            program: program.to_string(),
            cwd: cwd.to_path_buf(),
            source,
        }
    }
}

/// The regular file exec would have run for `program`: a path (relative ones from `cwd`), or
/// the first match on kinski's PATH.
pub(super) fn find_program(program: &str, cwd: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH");
    if !program.contains('/') && path.is_none() {
        return None;
    }
    // The paths exec tries, in its order; a relative one is from `cwd`.
    crate::exec::candidates(program.as_ref(), path.as_deref())
        .into_iter()
        .map(|candidate| cwd.join(candidate))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// The interpreter a script's `#!` line names, when it has one.
pub(super) fn interpreter_of(file: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking and checked after opening: a FIFO swapped in must not hang kinski.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut head = [0u8; 256];
    let n = f.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_string)
}
