//! The harness of the multi-host tests (`tests/hosts`): herzog on euclid and a kinski on every
//! host of a [`Bed`], each started in its namespace, seeing the files shared or staged; and
//! what the tests compare (inputs, output files, accepted logs).

use crate::bed::{Bed, HOSTS};
use crate::by_path::{clean_command, db_fragments};
use crate::{Daemon, STARTUP, bin, bundle, expect_success, write_script};
use common::wire::WorkerInfo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};

pub const PORT: u16 = 7373;

pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts herzog in euclid's namespace, listening on `addr`, with its state under
/// `dir/shared/herzog`, and waits until it listens.
pub fn spawn_herzog(bed: &Bed, dir: &Path, addr: &str, config: Option<&Path>) -> Daemon {
    let mut cmd = bed.exec("euclid", &bin("herzog"));
    cmd.args(["--listen", addr, "--log-level", "info", "--state-dir"])
        .arg(dir.join("shared").join("herzog"))
        .arg("--tls")
        .arg(bundle(dir, "herzog", "coordinator"));
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let mut herzog = Daemon::spawn("herzog on euclid", cmd);
    let line = herzog.wait_for("herzog listening", STARTUP);
    assert!(line.contains(addr), "herzog should listen on {addr}: {line}");
    herzog
}

/// How a host of the bed sees the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// Like every namespace, the whole file system: the shared filesystem.
    Shared,
    /// Its kinski runs in a mount namespace of its own with a blank tmpfs over `shared/`
    /// (projects, herzog's state and results): nothing but staging over SSH gets a project's
    /// files to it. Its sshd, like a real host's, writes into the scratch directory kinski sees.
    Staged,
    /// In the mount namespace of the host's sshd (`nsenter`), so a mount made there is seen by
    /// both.
    WithSshd,
}

/// herzog on euclid and a kinski on every host of a bed, with their state in a temporary
/// directory that every namespace sees (they share the file system, not the network), or
/// all of it but `shared/` for a [`Files::Staged`] host. Dropping it kills the daemons,
/// tears the bed down (and with it every program still running there), then removes the
/// directory.
pub struct Hosted {
    // Dropped in this order.
    pub workers: Vec<(String, Daemon)>,
    pub herzog: Daemon,
    pub bed: Bed,
    /// herzog's address, on euclid.
    pub addr: String,
    /// The cluster.toml every daemon got, if any.
    pub config: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl Hosted {
    /// Starts herzog on euclid, listening on euclid's address, then a kinski with `slots` slots
    /// on every host dialing euclid by name, each registered before this returns. `config`
    /// (TOML) goes to every daemon.
    pub fn start(bed: Bed, config: Option<&str>, slots: u32) -> Hosted {
        Hosted::start_with(bed, config, slots, &HOSTS.map(|h| (h, Files::Shared)))
    }

    /// Starts herzog on euclid and a kinski on each host of `hosts`, seeing the files as
    /// given. `config` may name `{DIR}`, replaced by the temporary directory.
    pub fn start_with(bed: Bed, config: Option<&str>, slots: u32, hosts: &[(&str, Files)]) -> Hosted {
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");
        std::fs::create_dir(dir.path().join("markers")).expect("failed to create markers/");
        std::fs::create_dir(dir.path().join("shared")).expect("failed to create shared/");
        let config = config.map(|c| c.replace("{DIR}", dir.path().to_str().expect("UTF-8")));
        let config = config.as_deref();
        let config = config.map(|text| {
            let path = dir.path().join("cluster.toml");
            std::fs::write(&path, text).expect("failed to write the config");
            path
        });
        let addr = format!("{}:{PORT}", bed.host("euclid").addr);
        let herzog = spawn_herzog(&bed, dir.path(), &addr, config.as_deref());

        let mut workers = Vec::new();
        for &(host, files) in hosts {
            let mut cmd = match files {
                Files::Shared => bed.exec(host, &bin("kinski")),
                Files::Staged => {
                    let mut cmd = bed.exec(host, Path::new("unshare"));
                    cmd.args([
                        "--mount",
                        "--propagation",
                        "private",
                        "sh",
                        "-c",
                        "mount -t tmpfs hidden \"$0\" && exec \"$@\"",
                    ])
                    .arg(dir.path().join("shared"))
                    .arg(bin("kinski"));
                    cmd
                }
                Files::WithSshd => {
                    let mut cmd = clean_command(Path::new("nsenter"));
                    cmd.arg("--target")
                        .arg(bed.sshd_pid(host).to_string())
                        .args(["--mount", "--net", "--"])
                        .arg(bin("kinski"));
                    cmd
                }
            };
            // By name: each namespace resolves the bed's hosts (/etc/netns/NS/hosts).
            cmd.args([
                "--herzog",
                &format!("euclid:{PORT}"),
                "--name",
                host,
                "--log-level",
                "info",
            ])
            .arg("--tls")
            .arg(bundle(dir.path(), host, "worker"))
            .args(["--run-as", &kinski::user::current_user()])
            .args(["--slots", &slots.to_string(), "--state-dir"])
            .arg(dir.path().join(format!("kinski-{host}")));
            if let Some(config) = &config {
                cmd.arg("--config").arg(config);
            }
            let kinski = Daemon::spawn(&format!("kinski on {host}"), cmd);
            workers.push((host.to_string(), kinski));
        }
        for (_, kinski) in &mut workers {
            kinski.wait_for("registered with herzog", STARTUP);
        }
        Hosted {
            workers,
            herzog,
            bed,
            addr,
            config,
            dir,
        }
    }

    /// Kills herzog with SIGKILL and starts it again on the same database.
    pub fn restart_herzog(&mut self) {
        self.herzog.signal_and_wait(nix::sys::signal::Signal::SIGKILL, STARTUP);
        self.herzog = spawn_herzog(&self.bed, self.dir.path(), &self.addr, self.config.as_deref());
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What a staged host does not see: projects, herzog's state and results.
    pub fn shared(&self) -> PathBuf {
        self.dir().join("shared")
    }

    /// herzog's database.
    pub fn db(&self) -> PathBuf {
        self.shared().join("herzog").join("herzog.db")
    }

    /// herzog's results folder of `project`.
    pub fn results(&self, project: &str) -> PathBuf {
        self.shared().join("herzog").join("results").join(project)
    }

    /// Runs `hz --herzog EUCLID:PORT ARGS...` on euclid, as the admin, in the directory.
    pub fn hz(&self, args: &[&str]) -> Output {
        self.bed.hz(&self.addr, self.dir(), args)
    }

    /// Runs hz, asserts it exits 0 and returns its stdout.
    pub fn hz_ok(&self, args: &[&str]) -> String {
        expect_success(args, self.hz(args), || {
            let workers = self
                .workers
                .iter()
                .map(|(name, kinski)| format!("{name}'s log:\n{}", kinski.log()));
            format!(
                "herzog's log:\n{}\n{}",
                self.herzog.log(),
                workers.collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// Runs hz with `--json`, asserts it exits 0 and parses its stdout.
    pub fn hz_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.hz_ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("hz {args:?} printed no valid JSON ({e}): {stdout}"))
    }

    /// The workers as `hz workers --json` shows them.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.hz_json(&["workers"])
    }

    /// Writes the program every project here runs, and returns its path: it records the host
    /// it ran on (its network namespace, `ip netns identify`) in `markers/`, prints its input's
    /// checksum and size, writes `$HERZOG_OUTPUT_DIR/<input>.out` (the input, `x` made `y`,
    /// lines reversed), then sleeps `$SLEEP` if set. Only the marker depends on the host.
    pub fn program(&self) -> String {
        self.program_at(&self.dir().join("where.sh"))
    }

    /// [`Hosted::program`] written at `path`. The marker's second line counts the entries
    /// the program sees in `shared/` (none on a staged host), and it also writes a checksum
    /// into a subdirectory of its output directory.
    pub fn program_at(&self, path: &Path) -> String {
        let markers = self.dir().join("markers");
        let text = format!(
            r#"#!/bin/sh
host=$(ip netns identify $$)
printf '%s\n%s\n' "${{host:-none}}" "$(ls -A "{shared}" | wc -l)" > "{markers}/$HERZOG_PROJECT.$HERZOG_FRAGMENT.$HERZOG_ATTEMPT"
sha256sum < "$1"
wc -c < "$1"
tr x y < "$1" | tac > "$HERZOG_OUTPUT_DIR/$(basename "$1").out"
mkdir -p "$HERZOG_OUTPUT_DIR/sums"
sha256sum < "$1" > "$HERZOG_OUTPUT_DIR/sums/$(basename "$1")"
if [ -n "$SLEEP" ]; then exec sleep "$SLEEP"; fi
"#,
            markers = markers.display(),
            shared = self.shared().display(),
        );
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("failed to create the program's directory");
        }
        write_script(path, &text);
        path.to_str().expect("a UTF-8 temporary directory").to_string()
    }

    /// How many entries of `shared/` each execution of `project` saw, by (fragment, attempt).
    pub fn saw_shared(&self, project: &str) -> BTreeMap<(String, i64), usize> {
        self.markers(project)
            .into_iter()
            .map(|(k, text)| {
                (
                    k,
                    text.lines()
                        .nth(1)
                        .and_then(|l| l.trim().parse().ok())
                        .unwrap_or(usize::MAX),
                )
            })
            .collect()
    }

    /// Where each execution of `project`'s fragments ran, by (fragment, attempt): the
    /// namespace the program found itself in.
    pub fn ran_on(&self, project: &str) -> BTreeMap<(String, i64), String> {
        self.markers(project)
            .into_iter()
            .map(|(k, text)| (k, text.lines().next().unwrap_or("").trim().to_string()))
            .collect()
    }

    /// The markers of `project`'s executions, by (fragment, attempt).
    pub fn markers(&self, project: &str) -> BTreeMap<(String, i64), String> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(self.dir().join("markers")).expect("failed to list markers") {
            let path = entry.expect("failed to list markers").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let Some(rest) = name.strip_prefix(&format!("{project}.")) else {
                continue;
            };
            let (fragment, attempt) = rest.rsplit_once('.').expect("a marker is PROJECT.FRAGMENT.ATTEMPT");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            out.insert((fragment.to_string(), attempt.parse().expect("an attempt id")), text);
        }
        out
    }
}

/// Makes `dir` with `n` files `f0000`, `f0001`, ...: file `i` has `i + 1` lines of different
/// lengths and letters.
pub fn varied_inputs(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("failed to create {}: {e}", dir.display()));
    for i in 0..n {
        let text: String = (0..=i)
            .map(|j| {
                let letter = char::from(b'a' + ((i * 7 + j * 3) % 26) as u8);
                format!(
                    "{i}.{j} {}x{}\n",
                    letter.to_string().repeat(j % 5 + 1),
                    "-".repeat(i % 3)
                )
            })
            .collect();
        std::fs::write(dir.join(format!("f{i:04}")), text).expect("failed to write an input");
    }
    dir.to_path_buf()
}

/// The files under `dir` (subdirectories too) and their bytes, by path relative to `dir`.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("failed to list {}: {e}", d.display())) {
            let path = entry.expect("failed to list a directory").path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
            out.insert(name, bytes);
        }
    }
    out
}

/// What each fragment's accepted attempt printed, by fragment: (stdout, stderr), read from a
/// results folder with the attempt ids of its database.
pub fn accepted_logs(db: &Path, results: &Path, project: &str) -> BTreeMap<String, (Vec<u8>, Vec<u8>)> {
    db_fragments(db, project)
        .into_iter()
        .map(|f| {
            let attempt = f
                .attempt_id
                .unwrap_or_else(|| panic!("{} has no accepted attempt", f.name));
            // A stream the program never wrote to leaves no file: empty.
            let read = |ext: &str| {
                let path = results.join("logs").join(format!("{}.{attempt}.{ext}", f.name));
                match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => panic!("failed to read {}: {e}", path.display()),
                }
            };
            let logs = (read("stdout"), read("stderr"));
            (f.name, logs)
        })
        .collect()
}

/// cluster.toml's `[[hosts]]` for a bed: `staged` hosts without the shared filesystem,
/// reached over SSH by name with the bed's ssh config (root, the test key, host keys
/// checked), each with its scratch directory in the bed; `identity` overrides the key of
/// one host (and then names the bed's known_hosts instead of its config).
pub fn hosts_toml(bed: &Bed, staged: &[&str], wrong_key_for: Option<&str>) -> String {
    let mut text = String::new();
    for host in staged {
        let h = bed.host(host);
        text.push_str(&format!(
            "[[hosts]]\nname = \"{host}\"\nshared_fs = false\nscratch_dir = \"{}\"\n",
            h.scratch.display()
        ));
        if wrong_key_for == Some(host) {
            text.push_str(&format!(
                "address = \"{}\"\n[hosts.ssh]\nuser = \"root\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\n\n",
                h.addr,
                bed.wrong_key().display(),
                bed.known_hosts().display()
            ));
        } else {
            text.push_str(&format!("[hosts.ssh]\nconfig = \"{}\"\n\n", bed.ssh_config().display()));
        }
    }
    text
}
