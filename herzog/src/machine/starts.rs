//! What a start carries: where an attempt's files go, on the shared filesystem or in a
//! staged host's scratch directory, and which files are copied there first.

use super::*;

/// Where an attempt's files go: `<results>/logs/<fragment>.<attempt>.{stdout,stderr}`, and the
/// project's shared `<results>/output/` for what programs write. Flat on purpose: creating a
/// directory per fragment or per attempt cost more than running `/bin/true` (see
/// BENCHMARKS.md), and attempt-qualified names keep two attempts of one fragment apart.
pub(crate) fn attempt_paths(
    results_dir: &std::path::Path,
    fragment: &str,
    attempt: AttemptId,
) -> (PathBuf, PathBuf, PathBuf) {
    let logs = results_dir.join("logs");
    (
        logs.join(format!("{fragment}.{attempt}.stdout")),
        logs.join(format!("{fragment}.{attempt}.stderr")),
        results_dir.join("output"),
    )
}

/// An attempt's files on a host without the shared filesystem, all inside
/// `<scratch>/<attempt>/`: the input (and the program, when it lives in the project
/// directory) under `in/`, what the program writes under `out/`, and its stdout and stderr.
pub(super) struct StagedPaths {
    pub(super) root: PathBuf,
    pub(super) inputs: PathBuf,
    pub(super) input: PathBuf,
    pub(super) output_dir: PathBuf,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
}

impl StagedPaths {
    pub(super) fn new(scratch: &std::path::Path, attempt: AttemptId, fragment: &str) -> Self {
        let root = scratch.join(attempt.0.to_string());
        let inputs = root.join("in");
        StagedPaths {
            input: inputs.join(fragment),
            output_dir: root.join("out"),
            stdout: root.join("stdout"),
            stderr: root.join("stderr"),
            inputs,
            root,
        }
    }
}

/// The start of an attempt on a staged worker, and the files to copy there first. The
/// program is copied too when its executable lies inside the project directory (its path
/// there is not valid on the host); anywhere else it must be installed on the host.
pub(super) fn staged_start_for(
    p: &Project,
    index: u32,
    attempt: AttemptId,
    scratch: &std::path::Path,
    max_log_bytes: u64,
) -> (StartAttempt, Vec<Upload>) {
    let name = p.names.get(index as usize);
    let paths = StagedPaths::new(scratch, attempt, name);
    let mut upload = vec![Upload {
        from: p.dir.join(name),
        to: paths.input.clone(),
    }];
    let mut program = p.spec.program.clone();
    if let Some(exe) = common::template::executable(&p.spec.program)
        && let Ok(rel) = std::path::Path::new(exe).strip_prefix(&p.dir)
        && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        let to = paths.inputs.join(rel);
        let start = p.spec.program.len() - p.spec.program.trim_start().len();
        program = format!(
            "{}{}{}",
            &p.spec.program[..start],
            to.display(),
            &p.spec.program[start + exe.len()..]
        );
        upload.push(Upload {
            from: PathBuf::from(exe),
            to,
        });
    }
    let start = StartAttempt {
        attempt,
        project: p.name.clone(),
        fragment: name.to_string(),
        argv: common::template::expand(&program, &paths.input),
        input: paths.input,
        cwd: p.spec.cwd.clone().unwrap_or_else(|| paths.inputs.clone()),
        env: p.spec.env.clone(),
        stdout: paths.stdout,
        stderr: paths.stderr,
        output_dir: paths.output_dir,
        grace_ms: p.spec.grace_ms,
        scratch: Some(paths.root),
        max_log_bytes,
        uploader_uid: None,
        settings: p.spec.settings.clone(),
        interactive: None,
        requests: p.spec.requests,
    };
    (start, upload)
}

pub(super) fn start_for(p: &Project, index: u32, attempt: AttemptId, max_log_bytes: u64) -> StartAttempt {
    let name = p.names.get(index as usize);
    let input = p.dir.join(name);
    let (stdout, stderr, output_dir) = attempt_paths(&p.results_dir, name, attempt);
    StartAttempt {
        attempt,
        project: p.name.clone(),
        fragment: name.to_string(),
        argv: common::template::expand(&p.spec.program, &input),
        input,
        cwd: p.spec.cwd.clone().unwrap_or_else(|| p.dir.clone()),
        env: p.spec.env.clone(),
        stdout,
        stderr,
        output_dir,
        grace_ms: p.spec.grace_ms,
        scratch: None,
        max_log_bytes,
        uploader_uid: None,
        settings: p.spec.settings.clone(),
        interactive: None,
        requests: p.spec.requests,
    }
}
