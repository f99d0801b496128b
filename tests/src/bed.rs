//! The multi-host test bed of `tests/testbed/netns.sh`: four network namespaces (euclid,
//! pythagoras, leibniz, newton) on a bridge of their own, each with its own address in
//! 10.77.0.0/24 and its own sshd. Used by `tests/hosts/` (through [`crate::hosted`]) and `tests/symlinks.rs`.
//!
//! The bed needs root, iproute2 and openssh-server (sshd) plus openssh-client (ssh, sftp,
//! ssh-keygen), so the tests that use it are `#[ignore]`d and run when asked for (CI, which
//! runs as root and installs them, does); a bed that cannot be made fails the test with the
//! reason, never passes it.

use crate::by_path::clean_command;
use crate::output_within;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The bed's script.
const NETNS_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/netns.sh");
/// What the script exits with when the bed cannot be made here.
const SKIP_CODE: i32 = 77;
/// The hosts, in the script's order (euclid is 10.77.0.1, newton 10.77.0.4).
pub const HOSTS: [&str; 4] = ["euclid", "pythagoras", "leibniz", "newton"];
/// How long `netns.sh up` may take (four sshds and a login to each).
const BED_LIMIT: Duration = Duration::from_secs(120);

/// One host of the bed.
#[derive(Clone, Debug)]
pub struct Host {
    /// euclid, pythagoras, leibniz or newton.
    pub name: String,
    /// Its network namespace: `<prefix><name>`.
    pub ns: String,
    /// Its address on the bed's bridge (10.77.0.x).
    pub addr: String,
    /// Its port on the bridge, in the hub namespace: setting it down cuts the host's link.
    pub port: String,
    /// A directory for the host's own files (scratch space for staging).
    pub scratch: PathBuf,
}

/// The test bed of `netns.sh up`; dropping it runs `netns.sh down`, which kills whatever still
/// runs in its namespaces and deletes them.
#[derive(Debug)]
pub struct Bed {
    prefix: String,
    /// The KEY=VALUE lines `up` printed (`DIR`, `HUB`, `KEY`, `WRONG_KEY`, `KNOWN_HOSTS`,
    /// `SSH_CONFIG`, ...).
    env: BTreeMap<String, String>,
    hosts: Vec<Host>,
}

impl Bed {
    /// Makes a bed for `test` with a prefix no other test or test process uses; fails the test
    /// with the reason when the bed cannot be made here.
    pub fn up(test: &str) -> Bed {
        sweep_dead_beds();
        // Unique per test process and test: the pid, and a short hash of the test's name.
        let tag = test
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 46_656;
        let prefix = format!("hz{}-{}-", std::process::id(), base36(tag));
        // The guard exists before the bed does: a failure or a panic while it is made still
        // tears down what was made.
        let mut bed = Bed {
            prefix,
            env: BTreeMap::new(),
            hosts: Vec::new(),
        };
        let started = Instant::now();
        let out = output_within(Command::new("bash").args([NETNS_SH, "up", &bed.prefix]), BED_LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(SKIP_CODE) => panic!(
                "{test} needs the network-namespace test bed, which cannot be made here: {}",
                stderr.trim().trim_start_matches("netns.sh: SKIP: ")
            ),
            _ => panic!("netns.sh up {} failed ({}):\n{stderr}", bed.prefix, out.status),
        }
        bed.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let hosts = std::fs::read_to_string(bed.dir().join("hosts")).expect("netns.sh wrote no hosts file");
        for line in hosts.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(words.len(), 4, "bad line in the bed's hosts file: {line:?}");
            bed.hosts.push(Host {
                name: words[0].to_string(),
                ns: words[1].to_string(),
                addr: words[2].to_string(),
                port: words[3].to_string(),
                scratch: bed.dir().join(words[0]).join("scratch"),
            });
        }
        assert_eq!(bed.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), HOSTS);
        println!("{test}: bed {} up in {:?}", bed.prefix, started.elapsed());
        bed
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("netns.sh up printed no {key}="))
    }

    /// The bed's directory (keys, sshd configs and logs, scratch directories).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("DIR"))
    }

    /// The private key authorised for root on every host.
    pub fn key(&self) -> PathBuf {
        PathBuf::from(self.var("KEY"))
    }

    /// A private key no host accepts.
    pub fn wrong_key(&self) -> PathBuf {
        PathBuf::from(self.var("WRONG_KEY"))
    }

    /// Every host's key, under its name and its address.
    pub fn known_hosts(&self) -> PathBuf {
        PathBuf::from(self.var("KNOWN_HOSTS"))
    }

    /// An ssh config naming every host (root, the test key, host keys checked, BatchMode).
    pub fn ssh_config(&self) -> PathBuf {
        PathBuf::from(self.var("SSH_CONFIG"))
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the bed"))
    }

    /// The pid of host `name`'s sshd.
    pub fn sshd_pid(&self, name: &str) -> u32 {
        let path = self.dir().join(name).join("sshd.pid");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{} holds no pid: {e}", path.display()))
    }

    /// The hosts, euclid first.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The host whose namespace is `ns`.
    pub fn host_of_ns(&self, ns: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.ns == ns)
    }

    /// `program` run on host `name` (`ip netns exec`), in the harness's clean environment.
    pub fn exec(&self, name: &str, program: &Path) -> Command {
        let mut cmd = clean_command(Path::new("ip"));
        cmd.args(["netns", "exec", &self.host(name).ns]).arg(program);
        cmd
    }

    /// Runs `hz --herzog ADDR ARGS...` on euclid (where the bed's herzog runs), as the admin of
    /// the cluster whose certificates are in `dir`, with `dir` as its working directory.
    pub fn hz(&self, addr: &str, dir: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = self.exec("euclid", &crate::bin("hz"));
        cmd.args(["--herzog", addr])
            .env("HERZOG_TLS", crate::bundle(dir, "admin", "admin"))
            .args(args)
            .current_dir(dir);
        output_within(&mut cmd, crate::HZ_LIMIT)
    }

    /// Sets host `name`'s link down (its port on the bridge), as if its cable were pulled: its
    /// packets go nowhere, and no one is told.
    pub fn cut(&self, name: &str) {
        self.link(name, "down");
    }

    /// Sets host `name`'s link up again.
    pub fn mend(&self, name: &str) {
        self.link(name, "up");
    }

    fn link(&self, name: &str, state: &str) {
        let out = output_within(
            Command::new("ip").args(["-n", self.var("HUB"), "link", "set", &self.host(name).port, state]),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "failed to set {name}'s link {state}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let out = Command::new("bash").args([NETNS_SH, "down", &self.prefix]).output();
        match out {
            // 77: the bed could not have been made either (not root, no `ip`).
            Ok(out) if out.status.success() || out.status.code() == Some(SKIP_CODE) => {}
            Ok(out) => eprintln!(
                "netns.sh down {} failed ({}): {}",
                self.prefix,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("failed to run netns.sh down {}: {e}", self.prefix),
        }
    }
}

/// Tears down, once per test process, the beds of test processes that died without doing it
/// (killed, say, by a CI timeout): beds named `hz<pid>-...` whose pid no longer runs.
fn sweep_dead_beds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(out) = Command::new("bash").args([NETNS_SH, "list"]).output() else {
            return;
        };
        for prefix in String::from_utf8_lossy(&out.stdout).lines() {
            let pid = prefix
                .strip_prefix("hz")
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<i32>().ok());
            if let Some(pid) = pid
                && !crate::alive(pid)
            {
                let line = format!("tearing down the bed {prefix} left by test process {pid}, which is gone\n");
                let _ = std::io::stderr().write_all(line.as_bytes());
                let _ = Command::new("bash").args([NETNS_SH, "down", prefix]).output();
            }
        }
    });
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII")
}
