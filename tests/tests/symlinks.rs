//! A program cannot make a root herzog or kinski write or read through a link it planted
//! (issue 10, item 1). On the network-namespace bed (`tests::bed`), as root with `--run-as
//! nobody`, a program plants a link to a root-only file (or directory) at every path kinski or
//! herzog later writes or reads: its logs, its output directory itself, files and a
//! subdirectory in it, and the same in herzog's results folder. The victim stays untouched and
//! unread, and what was refused says why where the user looks (`hz logs`).
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test symlinks -- --ignored
//! ```

use common::wire::{Logs, ProjectProgress};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use tests::bed::Bed;
use tests::by_path::db_fragments;
use tests::{Daemon, STARTUP, bin, bundle, expect_success, make_inputs, write_script};

/// herzog's port on euclid.
const PORT: u16 = 7373;
/// What the victim holds; no result may ever contain it.
const SECRET: &str = "VICTIM-SECRET-2f9c";

/// The beds take turns: each runs four sshds, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// herzog on euclid and one kinski running programs as nobody, on a host of the bed that sees
/// the files either over SSH (`staged`) or through the shared filesystem.
struct Setup {
    // Dropped in this order.
    kinski: Daemon,
    herzog: Daemon,
    bed: Bed,
    addr: String,
    dir: tempfile::TempDir,
}

impl Setup {
    /// `umask` is kinski's own at start (a careless service manager's `000`).
    fn start(bed: Bed, host: &str, staged: bool, umask: &str) -> Setup {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");
        // nobody runs programs from here and writes results under it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir(dir.path().join("shared")).expect("mkdir shared");
        let scratch = bed.host(host).scratch.clone();
        let config = dir.path().join("cluster.toml");
        let mut text = String::new();
        if staged {
            text = format!(
                "[[hosts]]\nname = \"{host}\"\nshared_fs = false\nscratch_dir = \"{}\"\n[hosts.ssh]\nconfig = \"{}\"\n",
                scratch.display(),
                bed.ssh_config().display()
            );
        }
        std::fs::write(&config, text).expect("write the config");

        let addr = format!("{}:{PORT}", bed.host("euclid").addr);
        let mut cmd = bed.exec("euclid", &bin("herzog"));
        cmd.args(["--listen", &addr, "--log-level", "info", "--state-dir"])
            .arg(dir.path().join("shared/herzog"))
            .arg("--tls")
            .arg(bundle(dir.path(), "herzog", "coordinator"))
            .arg("--config")
            .arg(&config);
        let mut herzog = Daemon::spawn("herzog on euclid", cmd);
        herzog.wait_for("herzog listening", STARTUP);

        // A staged host sees neither the projects nor herzog's results (a blank tmpfs over
        // shared/), like a host without the shared filesystem.
        let hide = if staged {
            format!("mount -t tmpfs hidden '{}' && ", dir.path().join("shared").display())
        } else {
            String::new()
        };
        let mut cmd = bed.exec(host, Path::new("unshare"));
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{hide}umask {umask} && exec \"$0\" \"$@\""))
            .arg(bin("kinski"))
            .args([
                "--herzog",
                &format!("euclid:{PORT}"),
                "--name",
                host,
                "--log-level",
                "info",
            ])
            .arg("--tls")
            .arg(bundle(dir.path(), host, "worker"))
            .args(["--run-as", "nobody", "--slots", "1", "--state-dir"])
            .arg(dir.path().join(format!("kinski-{host}")))
            .arg("--config")
            .arg(&config);
        let mut kinski = Daemon::spawn(&format!("kinski on {host}"), cmd);
        kinski.wait_for("registered with herzog", STARTUP);
        Setup {
            kinski,
            herzog,
            bed,
            addr,
            dir,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn results(&self, project: &str) -> PathBuf {
        self.dir().join("shared/herzog/results").join(project)
    }

    /// Runs `hz ARGS...` on euclid, as the admin.
    fn hz(&self, args: &[&str]) -> Output {
        self.bed.hz(&self.addr, self.dir(), args)
    }

    fn hz_ok(&self, args: &[&str]) -> String {
        expect_success(args, self.hz(args), || {
            format!(
                "herzog's log:\n{}\nkinski's log:\n{}",
                self.herzog.log(),
                self.kinski.log()
            )
        })
    }

    fn hz_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.hz_ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("hz {args:?} printed no valid JSON ({e}): {stdout}"))
    }

    /// A root-only directory holding a root-only file: what every planted link points to.
    fn victim(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir().join("victim");
        std::fs::create_dir(&dir).expect("mkdir victim");
        let file = dir.join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).expect("write the victim");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        (dir, file)
    }

    /// Runs `program` on `inputs` as project `name` to its end.
    fn run(&self, inputs: &Path, program: &Path) -> ProjectProgress {
        let name = self.hz_ok(&["action", path(inputs), path(program)]);
        self.hz_ok(&["progress", name.trim(), "--watch"]);
        let progress: Vec<ProjectProgress> = self.hz_json(&["progress", name.trim()]);
        progress.into_iter().next().expect("the project")
    }

    /// Asserts that the victim is as it was, and that nothing under herzog's state or the
    /// worker's scratch directory holds its secret.
    fn assert_untouched(&self, victim: &(PathBuf, PathBuf), scratch: Option<&Path>) {
        let (dir, file) = victim;
        assert_eq!(
            std::fs::read_to_string(file).expect("read the victim"),
            format!("{SECRET}\n"),
            "the victim was written through a planted link; kinski's log:\n{}",
            self.kinski.log()
        );
        let meta = std::fs::metadata(file).expect("stat the victim");
        assert_eq!((meta.uid(), meta.mode() & 0o777, meta.nlink()), (0, 0o600, 1));
        let entries: Vec<_> = std::fs::read_dir(dir).expect("list the victim's directory").collect();
        assert_eq!(entries.len(), 1, "something was written into the victim's directory");
        let mut searched = vec![self.dir().join("shared/herzog")];
        searched.extend(scratch.map(Path::to_path_buf));
        for root in searched {
            for (path, bytes) in files(&root) {
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(SECRET),
                    "{} holds the victim's secret: it was read through a planted link",
                    path.display()
                );
            }
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary directory")
}

/// Every regular file under `dir`, links not followed.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test symlinks -- --ignored"]
fn a_staged_program_cannot_redirect_what_root_writes_or_fetches() {
    const TEST: &str = "symlinks::a_staged_program_cannot_redirect_what_root_writes_or_fetches";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up(TEST);
    let scratch = bed.host("pythagoras").scratch.clone();
    let setup = Setup::start(bed, "pythagoras", true, "022");
    let victim = setup.victim();
    let (vdir, vfile) = (path(&victim.0), path(&victim.1));
    let program = setup.dir().join("plant.sh");
    write_script(
        &program,
        &format!(
            r#"#!/bin/sh
# Runs as nobody in <scratch>/<attempt>/in. Plants a link to the victim at every path kinski
# (root) writes or herzog (root over SFTP) reads later, then writes to its outputs and logs.
a=$(dirname "$HERZOG_OUTPUT_DIR")
ln -s {vfile} "$a/stdout" || echo "refused: the attempt's stdout" >&2
ln -s {vfile} "$a/stderr" || echo "refused: the attempt's stderr" >&2
mv "$HERZOG_OUTPUT_DIR" "$a/out.moved" && ln -s {vdir} "$HERZOG_OUTPUT_DIR" || echo "refused: the output directory" >&2
ln -s {vfile} "$HERZOG_OUTPUT_DIR/leak"
ln -s {vdir} "$HERZOG_OUTPUT_DIR/leakdir"
mkdir -p "$HERZOG_OUTPUT_DIR/sums" && echo sum > "$HERZOG_OUTPUT_DIR/sums/$(basename "$1")"
echo result > "$HERZOG_OUTPUT_DIR/$(basename "$1").txt"
echo PWNED
echo PWNED >&2
"#
        ),
    );
    let inputs = make_inputs(&setup.dir().join("shared/plant"), 2);
    // The project is added while its one worker takes nothing (a new project may not reuse an
    // existing results folder), so the links below are in place before any attempt.
    setup.hz_ok(&["drain", "pythagoras"]);
    setup.hz_ok(&["action", path(&inputs), path(&program)]);
    // herzog's side: the project's output folder is nobody's (as kinski leaves it on the
    // shared filesystem), with a link where a fetched file goes and one where a fetched
    // subdirectory goes.
    let output = setup.results("plant").join("output");
    std::fs::create_dir_all(&output).expect("mkdir output");
    std::os::unix::fs::chown(&output, Some(65534), Some(65534)).expect("chown output");
    std::os::unix::fs::symlink(&victim.1, output.join("f0000.txt")).expect("plant f0000.txt");
    std::os::unix::fs::symlink(&victim.0, output.join("sums")).expect("plant sums");
    setup.hz_ok(&["undrain", "pythagoras"]);
    setup.hz_ok(&["progress", "plant", "--watch"]);
    let progress: ProjectProgress = setup.hz_json::<Vec<ProjectProgress>>(&["progress", "plant"]).remove(0);
    assert_eq!((progress.succeeded, progress.failed), (2, 0), "{progress:?}");
    setup.assert_untouched(&victim, Some(&scratch));

    // What was refused is said where the user looks.
    for f in db_fragments(&setup.dir().join("shared/herzog/herzog.db"), "plant") {
        let logs: Logs = setup.hz_json(&["logs", "plant", &f.name]);
        assert_eq!(logs.stdout, "PWNED\n", "{logs:?}");
        for refused in ["the attempt's stdout", "the attempt's stderr", "the output directory"] {
            assert!(
                logs.stderr.contains(&format!("refused: {refused}")),
                "{refused}: {}",
                logs.stderr
            );
        }
        for dropped in ["out/leak on host", "out/leakdir on host"] {
            assert!(
                logs.stderr.contains(dropped) && logs.stderr.contains("symbolic link"),
                "{dropped}: {}",
                logs.stderr
            );
        }
        assert!(
            logs.stderr.contains(&format!("out/sums/{} on host", f.name)) && logs.stderr.contains("taken by a link"),
            "{}",
            logs.stderr
        );
        assert_eq!(
            std::fs::read_to_string(output.join(format!("{}.txt", f.name))).expect("the fetched output"),
            "result\n"
        );
    }
    assert!(
        std::fs::symlink_metadata(output.join("sums"))
            .expect("sums")
            .is_symlink()
    );
}

#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test symlinks -- --ignored"]
fn a_program_on_the_shared_filesystem_cannot_redirect_kinskis_logs() {
    const TEST: &str = "symlinks::a_program_on_the_shared_filesystem_cannot_redirect_kinskis_logs";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up(TEST);
    // kinski started with umask 000: its directories must not become writable by all.
    let setup = Setup::start(bed, "euclid", false, "000");
    let victim = setup.victim();
    let (vdir, vfile) = (path(&victim.0), path(&victim.1));
    let program = setup.dir().join("plant.sh");
    write_script(
        &program,
        &format!(
            r#"#!/bin/sh
# Runs as nobody. Plants links where kinski (root) writes this attempt's logs, and replaces
# the project's output directory with a link.
r=$(dirname "$HERZOG_OUTPUT_DIR")
mkdir -p "$r/logs"
ln -s {vfile} "$r/logs/$HERZOG_FRAGMENT.$HERZOG_ATTEMPT.stdout" || echo "refused: stdout" >&2
ln -s {vfile} "$r/logs/$HERZOG_FRAGMENT.$HERZOG_ATTEMPT.stderr" || echo "refused: stderr" >&2
mv "$HERZOG_OUTPUT_DIR" "$r/output.moved" && ln -s {vdir} "$HERZOG_OUTPUT_DIR" || echo "refused: the output directory" >&2
echo PWNED
echo PWNED >&2
"#
        ),
    );
    let inputs = make_inputs(&setup.dir().join("shared/plant"), 2);
    let progress = setup.run(&inputs, &program);
    assert_eq!((progress.succeeded, progress.failed), (2, 0), "{progress:?}");
    setup.assert_untouched(&victim, None);
    for dir in ["", "logs", "output"] {
        let meta = std::fs::symlink_metadata(setup.results("plant").join(dir)).expect("stat");
        assert!(meta.is_dir(), "{dir}");
        assert_eq!(meta.mode() & 0o022, 0, "results/plant/{dir} is writable by others");
    }
    for f in db_fragments(&setup.dir().join("shared/herzog/herzog.db"), "plant") {
        let logs: Logs = setup.hz_json(&["logs", "plant", &f.name]);
        assert_eq!(logs.stdout, "PWNED\n", "{logs:?}");
        for refused in ["stdout", "stderr", "the output directory"] {
            assert!(
                logs.stderr.contains(&format!("refused: {refused}")),
                "{refused}: {}",
                logs.stderr
            );
        }
    }
}

/// A project directory the user programs run as can write (nobody's here): a link planted
/// among its inputs to a file only root can read must not have herzog (root) upload that
/// file to the host, where the program would read it. The attempt fails with the reason; the
/// host stays in service.
#[test]
#[ignore = "needs root and the network-namespace test bed: cargo test -p tests --test symlinks -- --ignored"]
fn a_link_among_a_projects_inputs_does_not_make_herzog_upload_another_users_file() {
    const TEST: &str = "symlinks::a_link_among_a_projects_inputs_does_not_make_herzog_upload_another_users_file";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = Bed::up(TEST);
    let scratch = bed.host("pythagoras").scratch.clone();
    let setup = Setup::start(bed, "pythagoras", true, "022");
    let victim = setup.victim();
    let inputs = setup.dir().join("shared/theirs");
    std::fs::create_dir(&inputs).expect("mkdir the project");
    std::fs::write(inputs.join("a.txt"), "mine\n").expect("write an input");
    std::os::unix::fs::symlink(&victim.1, inputs.join("b.txt")).expect("plant the link");
    for path in [&inputs, &inputs.join("a.txt")] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("give it to nobody");
    }
    let program = setup.dir().join("show.sh");
    write_script(&program, "#!/bin/sh\ncat \"$1\"\n");
    let name = setup.hz_ok(&["action", path(&inputs), path(&program), "--max-attempts", "1"]);
    // Exit 1: a fragment failed.
    assert_eq!(setup.hz(&["progress", name.trim(), "--watch"]).status.code(), Some(1));
    let progress: Vec<ProjectProgress> = setup.hz_json(&["progress", name.trim()]);
    assert_eq!((progress[0].succeeded, progress[0].failed), (1, 1), "{progress:?}");
    let logs: Logs = setup.hz_json(&["logs", name.trim(), "a.txt"]);
    assert_eq!(logs.stdout, "mine\n");
    let failed = setup.hz_ok(&["fragments", name.trim(), "--state", "failed"]);
    assert!(failed.contains("b.txt") && failed.contains("not uploaded"), "{failed}");
    setup.assert_untouched(&victim, Some(&scratch));
    let workers: Vec<common::wire::WorkerInfo> = setup.hz_json(&["workers"]);
    assert_eq!(
        workers[0].staging, "ssh ready",
        "the host was taken out of service: {workers:?}"
    );
}
