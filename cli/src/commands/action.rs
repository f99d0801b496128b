//! `hz action DIR PROGRAM`: checks the input here, then adds the project to herzog.

use crate::Outcome;
use crate::args::{ActionArgs, RunArgs};
use crate::client::{Endpoint, Herzog};
use crate::error::CliError;
use common::ApiError;
use common::run_settings::Settings;
use common::template::{check_program, executable, needs_shell, shell_quote};
use common::wire::{NewProject, ProjectAdded, RunSpec};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Adds the project and prints its name alone on stdout, so scripts can capture it.
pub(crate) async fn run(args: &ActionArgs, addr: &Endpoint, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let cwd = std::env::current_dir().map_err(CliError::Cwd)?;
    let path_var = std::env::var("PATH").ok();
    let mut project = prepare(&args.run, &cwd, path_var.as_deref())?;
    project.after = args.after.clone();
    project.max_running = args.max_running;
    project.share = args.share;
    project.spec.alerts = common::alerts::ProjectAlerts {
        notify: args.notify.clone(),
        webhook: args.webhook.clone(),
    };
    project.spec.alerts.check()?;
    let herzog = Herzog::connect(addr).await?;
    let added = add(&herzog, project).await?;
    writeln!(out, "{}", added.name)?;
    Ok(Outcome::Ok)
}

/// Sends the project and reports it on stderr.
pub(crate) async fn add(herzog: &Herzog, project: NewProject) -> Result<ProjectAdded, CliError> {
    let added = herzog.project_add(project).await?;
    note!(
        "added project {}: {}; results in {}",
        added.name,
        common::count(added.fragments, "fragment"),
        added.results_dir.display()
    );
    Ok(added)
}

/// Everything herzog would refuse that can be seen from here, checked before dialling:
/// the directory (made absolute), the name, and the program (its executable made absolute
/// when it is a relative path, since herzog runs elsewhere).
pub(crate) fn prepare(run: &RunArgs, cwd: &Path, path_var: Option<&str>) -> Result<NewProject, CliError> {
    let cwd_of_hz = cwd;
    let dir = absolute_dir(&run.dir, cwd)?;
    if let Some(name) = &run.name {
        common::name::check_name(name)?;
    }
    let program = absolute_program(&run.program, cwd)?;
    check_program(&program, path_var).map_err(|e| match e {
        ApiError::ProgramNotFound { program, where_ } if !where_.is_empty() => ApiError::ProgramNotFound {
            program,
            where_: " on your PATH".to_string(),
        },
        e => e,
    })?;
    let mut spec = RunSpec::new(program);
    spec.env = run.env.iter().cloned().collect();
    if let Some(n) = run.max_attempts {
        spec.max_attempts = n;
    }
    if let Some(retries) = run.retries {
        spec.retries = retries;
    }
    if let Some(grace) = run.grace {
        spec.grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    }
    if !run.success_codes.is_empty() {
        spec.success_codes = run.success_codes.clone();
    }
    if let Some(cwd) = &run.cwd {
        spec.cwd = Some(absolute_cwd(cwd, cwd_of_hz)?);
    }
    spec.settings = Settings {
        stop_signal: run.stop_signal,
        umask: run.umask,
        stdout: run.stdout.unwrap_or_default(),
        stderr: run.stderr.unwrap_or_default(),
    };
    spec.requests = common::requests::Requests {
        cpus: run.cpus,
        memory_bytes: run.mem,
        time_ms: run.time,
    };
    spec.retry_on = run.retry_on.clone();
    spec.retry_on.sort();
    spec.retry_on.dedup();
    spec.check()?;
    Ok(NewProject {
        name: run.name.clone(),
        dir,
        spec,
        after: Vec::new(),
        max_running: None,
        share: None,
    })
}

/// `--cwd`: made absolute against hz's own directory; it must exist here (the workers see
/// the same paths, as they do the input directory).
fn absolute_cwd(dir: &Path, cwd: &Path) -> Result<PathBuf, CliError> {
    match cwd.join(dir).canonicalize() {
        Ok(abs) if abs.is_dir() => Ok(abs),
        _ => Err(CliError::Usage(format!(
            "--cwd {}: no such directory here; give the directory the programs should run in (the workers must see it at the same path)",
            dir.display()
        ))),
    }
}

/// The canonical path of an existing directory.
pub(crate) fn absolute_dir(dir: &Path, cwd: &Path) -> Result<PathBuf, CliError> {
    let abs = cwd.join(dir);
    let canonical = abs.canonicalize().map_err(|source| CliError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !canonical.is_dir() {
        return Err(CliError::NotADirectory { dir: dir.to_path_buf() });
    }
    Ok(canonical)
}

/// Makes a relative executable path (`./tool`, `bin/tool`) absolute against `cwd`; bare
/// command names, shell programs and absolute paths are left alone.
pub(crate) fn absolute_program(program: &str, cwd: &Path) -> Result<String, CliError> {
    let Some(exe) = executable(program) else {
        return Ok(program.to_string());
    };
    if !exe.contains('/') || Path::new(exe).is_absolute() {
        return Ok(program.to_string());
    }
    // `components` drops the `.` in `/cwd/./tool`; `..` is kept for the kernel to resolve.
    let abs: PathBuf = cwd.join(exe).components().collect();
    let Some(abs) = abs.to_str() else {
        return Err(CliError::Usage(format!(
            "the path of '{exe}' from the current directory is not UTF-8: give the program's absolute path"
        )));
    };
    let word = if abs.contains(char::is_whitespace) || needs_shell(abs) {
        shell_quote(abs)
    } else {
        abs.to_string()
    };
    let start = program.len() - program.trim_start().len();
    Ok(format!(
        "{}{}{}",
        &program[..start],
        word,
        &program[start + exe.len()..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn run_args(dir: &Path, program: &str) -> RunArgs {
        RunArgs {
            cpus: None,
            mem: None,
            time: None,
            retry_on: vec![],
            dir: dir.to_path_buf(),
            program: program.to_string(),
            name: None,
            max_attempts: None,
            env: vec![],
            grace: None,
            retries: None,
            success_codes: vec![],
            stop_signal: None,
            cwd: None,
            umask: None,
            stdout: None,
            stderr: None,
        }
    }

    #[test]
    fn relative_executables_become_absolute() {
        let cwd = Path::new("/home/u/work");
        assert_eq!(absolute_program("./tool -x", cwd).unwrap(), "/home/u/work/tool -x");
        assert_eq!(
            absolute_program("  bin/tool {}", cwd).unwrap(),
            "  /home/u/work/bin/tool {}"
        );
        assert_eq!(absolute_program("../t", cwd).unwrap(), "/home/u/work/../t");
        assert_eq!(absolute_program("wc -l", cwd).unwrap(), "wc -l");
        assert_eq!(absolute_program("/bin/wc -l", cwd).unwrap(), "/bin/wc -l");
        assert_eq!(absolute_program("./a | b", cwd).unwrap(), "/home/u/work/a | b");
        assert_eq!(absolute_program("{} --version", cwd).unwrap(), "{} --version");
        let spaced = absolute_program("./t x", Path::new("/my dir")).unwrap();
        assert_eq!(spaced, "'/my dir/t' x");
    }

    #[test]
    fn prepare_checks_dir_name_and_program() {
        let tmp = tempfile::tempdir().unwrap();
        let cwd = tmp.path();
        std::fs::create_dir(cwd.join("in")).unwrap();
        std::fs::write(cwd.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(cwd.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();

        let mut args = run_args(Path::new("in"), "./tool");
        args.env = vec![("K".into(), "V".into())];
        args.grace = Some(std::time::Duration::from_secs(3));
        args.max_attempts = Some(7);
        let p = prepare(&args, cwd, Some("/bin")).unwrap();
        let canonical = cwd.canonicalize().unwrap();
        assert_eq!(p.dir, canonical.join("in"));
        assert_eq!(p.spec.program, format!("{}/tool", cwd.display()));
        assert_eq!(p.spec.env.get("K").map(String::as_str), Some("V"));
        assert_eq!((p.spec.grace_ms, p.spec.max_attempts), (3000, 7));

        let err = prepare(&run_args(Path::new("nope"), "./tool"), cwd, None).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(err.exit_code(), 2);

        let err = prepare(&run_args(Path::new("tool"), "./tool"), cwd, None).unwrap_err();
        assert!(matches!(err, CliError::NotADirectory { .. }), "{err}");

        let mut bad_name = run_args(Path::new("in"), "./tool");
        bad_name.name = Some("a b".into());
        assert!(matches!(
            prepare(&bad_name, cwd, None),
            Err(CliError::Api(ApiError::InvalidName { .. }))
        ));

        let err = prepare(&run_args(Path::new("in"), "no-such-program-xyz"), cwd, Some("/bin")).unwrap_err();
        assert!(err.to_string().contains("on your PATH"), "{err}");
        let err = prepare(&run_args(Path::new("in"), "./missing"), cwd, None).unwrap_err();
        assert!(err.to_string().contains(&format!("{}/missing", cwd.display())), "{err}");
    }
}
