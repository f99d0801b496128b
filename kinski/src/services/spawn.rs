//! Starts one service instance's process: its own process group and, where kinski makes
//! them, its own cgroup ([`crate::cgroup`]); as its user, in its directory, with its umask,
//! its environment, and its stdout and stderr discarded or piped to kinski, which appends
//! them to a file it rotates ([`crate::rotate`]): kept under kinski's state directory, or
//! the file the services file names, opened by kinski without following a link and only if
//! it is the service user's own. Kept output is written through the placement's taps, so
//! followers read it as it comes.

use crate::cgroup::Tree;
use crate::exec::Exec;
use crate::output::Output;
use crate::process::{Process, SpawnError, pipe};
use crate::rotate::{Holder, Rotating};
use crate::taps::Taps;
use crate::user::RunAs;
use common::instances::{InstanceId, InstanceSpec, RunId};
use common::output::Stream;
use common::services::Output as Sink;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

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
    tree: &Tree,
    taps: &Taps,
) -> Result<Process, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
    let mut command = Exec::new(program);
    command
        .args(args)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .env("HERZOG_SERVICE", &instance.service)
        .env("HERZOG_INSTANCE", instance.to_string())
        // What a restarted kinski finds its predecessor's leftover groups by.
        .env("HERZOG_RUN", run.to_string());
    // Into its cgroup first, while still root, before it can fork.
    tree.enter(&mut command);
    if let Some(user) = run_as {
        user.apply(&mut command);
    }
    let holder = Holder::of(run_as);
    let open = |stream: &'static str, sink: &Sink, max: u64, backups: u32| {
        match sink {
            Sink::Discard => Ok(None),
            Sink::Kept => Rotating::kept(&kept_path(dir, instance, stream), max, backups).map(|file| {
                let which = if stream == "stderr" {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                Some(file.with_tap(taps.get(which).cloned()))
            }),
            Sink::File(path) => Rotating::named(path, &holder, max, backups).map(Some),
        }
        .map_err(|source| SpawnError::OutputFile { stream, source })
    };
    let mut outputs = Vec::new();
    let (stdout, stderr) = if spec.stdout == spec.stderr && matches!(spec.stdout, Sink::File(_)) {
        // One pipe and one file for both: the program's own interleaving is kept, and one
        // writer rotates the file.
        let file = open("stdout", &spec.stdout, spec.stdout_maxbytes, spec.stdout_backups)?;
        let both = piped("stdout and stderr", file, &mut outputs)?;
        let copy = both
            .as_ref()
            .map(OwnedFd::try_clone)
            .transpose()
            .map_err(|source| SpawnError::Pipe {
                stream: "stderr",
                source,
            })?;
        (both, copy)
    } else {
        let out = open("stdout", &spec.stdout, spec.stdout_maxbytes, spec.stdout_backups)?;
        let err = open("stderr", &spec.stderr, spec.stderr_maxbytes, spec.stderr_backups)?;
        (piped("stdout", out, &mut outputs)?, piped("stderr", err, &mut outputs)?)
    };
    command.stdout(stdout).stderr(stderr);
    // The signals a service is sent (its stop signal, `hz signal`, change_signal) reach it at
    // their default action even when kinski was started ignoring them: kinski handles those
    // itself (`handle_ignored_signals`), and exec resets a handled signal.
    if let Some(mask) = spec.umask {
        command.umask(mask as libc::mode_t);
    }
    Process::launch(command, program, &spec.cwd, outputs)
}

/// The write end of a pipe whose bytes kinski appends to `file`, for the program's `stream`;
/// `None` (discarded) without a file.
fn piped(
    stream: &'static str,
    file: Option<Rotating>,
    outputs: &mut Vec<Output>,
) -> Result<Option<OwnedFd>, SpawnError> {
    let Some(file) = file else { return Ok(None) };
    let (read, write) = pipe().map_err(|source| SpawnError::Pipe { stream, source })?;
    outputs.push(Output::rotating(read, file));
    Ok(Some(write))
}
