//! What kinski does with a program's output (issue 10, items 6 and 9): each stream is capped at
//! `herzog.max_log_bytes` (head and tail kept, the cut said between them), and a write that
//! stalls (a frozen filesystem under herzog's results) holds up neither heartbeats nor anything
//! else kinski does.

use common::wire::{Logs, WorkerInfo};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{Cluster, eventually, make_inputs, output_within, write_script};

/// The marker's start, as kinski writes it between the head and the tail.
const CUT: &str = "bytes of stdout cut here: the program wrote";

/// The stdout log of `project`'s only fragment `f0000`, read from herzog's results folder.
fn stdout_log(cluster: &Cluster, project: &str) -> PathBuf {
    let logs = cluster.herzog_state().join("results").join(project).join("logs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", logs.display()))
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".stdout"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

#[test]
fn a_program_writing_more_than_the_default_cap_keeps_64_mib_of_it() {
    let cluster = Cluster::start(&[("w1", 1)]);
    let inputs = make_inputs(&cluster.dir().join("big"), 1);
    let program = cluster.dir().join("flood.sh");
    // 80 MiB: more than the default 64 MiB cap.
    write_script(&program, "#!/bin/sh\nhead -c 83886080 /dev/zero | tr '\\0' x\n");
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        program.to_str().expect("UTF-8"),
    ]);
    cluster.hz_ok(&["progress", "big", "--watch"]);
    let log = stdout_log(&cluster, "big");
    let size = std::fs::metadata(&log).expect("stat the log").len();
    assert!(
        (64 << 20..(64 << 20) + 1024).contains(&size),
        "{} is {size} bytes, not 64 MiB and a line",
        log.display()
    );
    // `hz logs` shows the last MiB; the line saying what was cut lies 32 MiB before it, and
    // hz says it anyway.
    let out = cluster.hz(&["logs", "big", "f0000"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("[herzog: 16777216 bytes of stdout cut here"),
        "hz logs does not say what was cut: {said}"
    );
}

#[test]
fn a_program_writing_far_more_than_a_small_cap_keeps_head_and_tail_and_hz_logs_says_what_was_cut() {
    let cluster = Cluster::start_with_config(Some("[herzog]\nmax_log_bytes = 65536\n"), &[("w1", 1)]);
    let inputs = make_inputs(&cluster.dir().join("lines"), 1);
    let program = cluster.dir().join("count.sh");
    // 14.9 MB of numbered lines, and a short stderr that stays whole.
    write_script(&program, "#!/bin/sh\nseq 1 2000000\necho done >&2\n");
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        program.to_str().expect("UTF-8"),
    ]);
    cluster.hz_ok(&["progress", "lines", "--watch"]);
    let logs: Logs = cluster.hz_json(&["logs", "lines", "f0000"]);
    assert_eq!(logs.stderr, "done\n");
    let text = &logs.stdout;
    let at = text
        .find(CUT)
        .unwrap_or_else(|| panic!("no marker in {} bytes", text.len()));
    let (head, rest) = text.split_at(at);
    let all: String = (1..=2_000_000).map(|i| format!("{i}\n")).collect();
    // The head is the first 32 KiB as written, the tail the last 32 KiB.
    let head = head.rsplit_once("\n[herzog: ").expect("the marker's line").0;
    assert_eq!(head, &all[..32768], "the head");
    let (marker, tail) = rest.split_once("]\n").expect("the marker ends its line");
    assert_eq!(tail, &all[all.len() - 32768..], "the tail");
    let cut = all.len() - 65536;
    assert!(
        marker.contains(&format!("the program wrote {} bytes", all.len()))
            && text.contains(&format!("[herzog: {cut} bytes")),
        "{marker}"
    );
    assert!(marker.contains("herzog.max_log_bytes (65536)"), "{marker}");
}

/// A loop-mounted ext4 filesystem, frozen on demand (`fsfreeze`): writes to it block, in the
/// kernel, until it is thawed. Dropping it thaws and unmounts it, so a failing test never
/// leaves processes stuck.
struct Freezable {
    mount: PathBuf,
    image: PathBuf,
}

impl Freezable {
    fn new(dir: &Path) -> Freezable {
        let image = dir.join("frozen.img");
        let mount = dir.join("frozen");
        std::fs::create_dir(&mount).expect("mkdir");
        let file = std::fs::File::create(&image).expect("create the image");
        file.set_len(256 << 20).expect("size the image");
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        Freezable { mount, image }
    }

    fn freeze(&self) {
        run(Command::new("fsfreeze").arg("--freeze").arg(&self.mount));
    }

    fn thaw(&self) {
        let _ = Command::new("fsfreeze").arg("--unfreeze").arg(&self.mount).output();
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        self.thaw();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(cmd: &mut Command) {
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root to mount and freeze a filesystem: cargo test -p tests --test output -- --ignored"]
fn output_stalled_on_a_frozen_filesystem_does_not_stop_heartbeats() {
    const STALL: Duration = Duration::from_secs(20);
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts and freezes a filesystem and needs root (CI runs it as root)"
    );
    // Heartbeats every 200 ms; silent for 2 s, a worker is lost.
    let mut cluster = Cluster::start_with_config(
        Some("[herzog]\nheartbeat_interval = \"200ms\"\nworker_timeout = \"2s\"\n"),
        &[],
    );
    // herzog's results folder on the filesystem that will freeze (its database stays put).
    let disk = Freezable::new(cluster.dir());
    std::fs::create_dir(disk.mount.join("results")).expect("mkdir results");
    std::os::unix::fs::symlink(disk.mount.join("results"), cluster.herzog_state().join("results")).expect("symlink");
    cluster.add_worker("w1", 4);
    // More writers than kinski has runtime threads, each writing both streams steadily.
    let inputs = make_inputs(&cluster.dir().join("steady"), 4);
    let program = cluster.dir().join("steady.sh");
    write_script(
        &program,
        "#!/bin/sh\ni=0\nwhile :; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.01; done\n",
    );
    cluster.hz_ok(&[
        "action",
        inputs.to_str().expect("UTF-8"),
        program.to_str().expect("UTF-8"),
    ]);
    let logs = disk.mount.join("results/steady/logs");
    eventually(
        "every attempt to have written both logs",
        Duration::from_secs(30),
        || {
            let n = std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0);
            (n == 8).then_some(())
        },
    );

    disk.freeze();
    let frozen = Instant::now();
    let mut worst = Duration::ZERO;
    while frozen.elapsed() < STALL {
        std::thread::sleep(Duration::from_millis(500));
        let workers: Vec<WorkerInfo> = cluster.hz_json(&["workers"]);
        let w1 = workers.iter().find(|w| w.name == "w1").expect("w1");
        let silent = Duration::from_millis(u64::try_from(common::now_millis() - w1.last_seen).unwrap_or(0));
        worst = worst.max(silent);
        assert!(
            w1.state == "connected" && silent < Duration::from_secs(1),
            "{:.1} s into the stall, herzog last heard from w1 {silent:?} ago ({}): its heartbeats stopped; kinski's log:\n{}",
            frozen.elapsed().as_secs_f64(),
            w1.state,
            cluster.worker("w1").log()
        );
    }
    disk.thaw();
    println!("20 s of stalled output: the longest silence herzog saw was {worst:?}");
    cluster.hz_ok(&["remove", "steady"]);
}
