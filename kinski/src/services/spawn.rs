//! Starts one service instance's process: its own process group, as its user, in its
//! directory, with its umask, its environment, and its stdout and stderr kept (capped files
//! under kinski's state directory, the previous run's kept beside as `.1`), discarded, or
//! appended to a file the user named, which the child opens after dropping to its user so
//! no root process writes through a path the user controls. Kept output is written through
//! the placement's taps, so followers read it as it comes.

use super::taps::Taps;
use crate::output::Output;
use crate::process::{LogDir, Process, SpawnError, pipe};
use crate::user::RunAs;
use common::instances::{InstanceId, InstanceSpec, RunId};
use common::output::Stream;
use common::services::Output as Sink;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where an instance's kept output lives: `<dir>/<service>/<instance>.stdout` and `.stderr`.
pub(crate) fn kept_path(dir: &Path, instance: &InstanceId, stream: &str) -> PathBuf {
    dir.join(&instance.service)
        .join(format!("{}.{stream}", instance.to_string().replace([':', '@'], "_")))
}

/// Spawns the instance. Blocking (directories, the fork): call it on a blocking thread.
pub(crate) fn spawn(
    dir: &Path,
    run: RunId,
    instance: &InstanceId,
    spec: &InstanceSpec,
    run_as: Option<&RunAs>,
    taps: &Taps,
) -> Result<Process, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .env("HERZOG_SERVICE", &instance.service)
        .env("HERZOG_INSTANCE", instance.to_string())
        // What a restarted kinski finds its predecessor's leftover groups by.
        .env("HERZOG_RUN", run.to_string())
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(user) = run_as {
        user.apply(&mut command);
    }
    let mut outputs = Vec::new();
    let mut opens: Vec<(CString, libc::c_int)> = Vec::new();
    for (which, sink, cap, fd) in [
        (Stream::Stdout, &spec.stdout, spec.stdout_maxbytes, libc::STDOUT_FILENO),
        (Stream::Stderr, &spec.stderr, spec.stderr_maxbytes, libc::STDERR_FILENO),
    ] {
        let stream = which.name();
        let stdio = match sink {
            Sink::Discard => Stdio::null(),
            Sink::File(path) => {
                let path = CString::new(path.as_os_str().as_bytes()).map_err(|e| SpawnError::CreateDir {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
                opens.push((path, fd));
                Stdio::null()
            }
            Sink::Kept => {
                let path = kept_path(dir, instance, stream);
                let logs = LogDir::open(&path)?;
                keep_previous(&path);
                let (read, write) = pipe().map_err(|source| SpawnError::Pipe { stream, source })?;
                let log = logs
                    .log(&path, stream, cap.max(4096))?
                    .with_tap(taps.get(which).cloned());
                outputs.push(Output::new(read, log));
                Stdio::from(write)
            }
        };
        if fd == libc::STDOUT_FILENO {
            command.stdout(stdio);
        } else {
            command.stderr(stdio);
        }
    }
    let umask = spec.umask;
    if umask.is_some() || !opens.is_empty() {
        // SAFETY: umask, open, dup2 and close are async-signal-safe; the paths were made
        // before the fork and are only read. This runs after `RunAs::apply`'s closure, so the
        // files are opened as the instance's user, never as root.
        unsafe {
            command.pre_exec(move || {
                if let Some(mask) = umask {
                    libc::umask(mask as libc::mode_t);
                }
                for (path, target) in &opens {
                    // Without blocking (a FIFO there would hang the spawn), and only a
                    // regular file: what the user named is the user's to get wrong, not
                    // kinski's to wait on.
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_APPEND
                            | libc::O_CLOEXEC
                            | libc::O_NONBLOCK
                            | libc::O_NOCTTY,
                        0o644,
                    );
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut stat: libc::stat = std::mem::zeroed();
                    if libc::fstat(fd, &mut stat) != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFREG {
                        libc::close(fd);
                        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                    }
                    let flags = libc::fcntl(fd, libc::F_GETFL);
                    if flags < 0
                        || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0
                        || libc::dup2(fd, *target) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
    }
    Process::launch(command, program, &spec.cwd, outputs)
}

/// Keeps the previous run's output as `<name>.1` (a crash loop's last words stay readable).
/// The directory is kinski's own, under its state directory.
fn keep_previous(path: &Path) {
    let mut previous = path.as_os_str().to_owned();
    previous.push(".1");
    match std::fs::rename(path, &previous) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "failed to keep the previous run's output"),
    }
}
