//! herzog's state filesystem running full: herzog must not stay up as a zombie that answers
//! "shutting down" forever, but exit non-zero with the reason, so that systemd restarts it;
//! and a restart once there is space again finishes the project with every fragment once.
//!
//! The state directory is a real 16 MB tmpfs, mounted for the test: root only, so the tests
//! are `#[ignore]`d and CI (root) runs them; asked for without root they fail and say why.
//!
//! ```text
//! cargo build --workspace && cargo test -p tests --test disk -- --ignored --nocapture
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{Cluster, STARTUP, eventually};

/// A tmpfs of `size` mounted over a directory for the life of the guard.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts a tmpfs and needs root (CI runs it as root)"
        );
        std::fs::create_dir_all(dir).expect("mkdir the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a daemon the test left running may still hold a file there.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until the filesystem refuses more.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = file.sync_all();
    written
}

/// Writes `path` until its filesystem has about `leave` bytes available.
fn fill_leaving(path: &Path, leave: u64) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        let stat = nix::sys::statvfs::statvfs(path).expect("statvfs the filler's filesystem");
        let available = stat.blocks_available() * stat.fragment_size();
        let room = available.saturating_sub(leave).min(chunk.len() as u64) as usize;
        if room < 4096 {
            break;
        }
        file.write_all(&chunk[..room]).expect("write the filler");
        file.sync_data().expect("sync the filler");
    }
}

fn succeeded(cluster: &Cluster, project: &str) -> usize {
    cluster
        .db()
        .query_row(
            "SELECT COUNT(*) FROM fragments f JOIN projects p ON p.id = f.project_id
             WHERE p.name = ?1 AND f.state = 'succeeded'",
            [project],
            |r| r.get::<_, i64>(0),
        )
        .expect("count succeeded fragments") as usize
}

#[test]
#[ignore = "needs root to mount a tmpfs: cargo test -p tests --test disk -- --ignored"]
fn a_full_state_filesystem_stops_herzog_loudly_and_a_restart_finishes_the_project() {
    // No free space kept (the other test keeps some): the disk really fills.
    let mut cluster = Cluster::start_with_config(Some("[herzog]\nmin_free_space = 0\n"), &[]);
    // herzog's state goes on a small filesystem of its own: a fresh database there.
    cluster.stop_herzog();
    let state = cluster.herzog_state();
    let _tmpfs = Tmpfs::mount(&state, "16m");
    cluster.start_herzog();
    cluster.add_worker("euclid", 2);
    cluster.add_worker("newton", 2);
    cluster.inputs("full", 60);
    let program = cluster.marker_program();
    cluster.hz_ok(&["action", "full", &program, "--env", "SLEEP=0.3"]);
    eventually("a few fragments to succeed", Duration::from_secs(30), || {
        (succeeded(&cluster, "full") >= 4).then_some(())
    });

    let filler = state.join("filler");
    let written = fill(&filler);
    let filled = Instant::now();
    let (status, log) = cluster.herzog_exit(Duration::from_secs(20), "after its filesystem filled");
    println!(
        "herzog exited {:?} after the filesystem filled ({written} bytes of filler)",
        filled.elapsed()
    );
    assert_eq!(status.code(), Some(1), "herzog ended with {status}; its log:\n{log}");
    assert!(
        log.contains("database or disk is full"),
        "herzog's log does not say why it stopped:\n{log}"
    );

    // Space again: a restarted herzog finishes the project, each fragment once.
    std::fs::remove_file(&filler).expect("remove the filler");
    cluster.start_herzog();
    cluster.wait_workers_connected(STARTUP);
    cluster.hz_ok(&["progress", "full", "--watch"]);
    cluster.assert_each_fragment_succeeded_once("full", 60);
}

fn attempts(cluster: &Cluster) -> i64 {
    cluster
        .db()
        .query_row("SELECT COUNT(*) FROM attempts", [], |r| r.get(0))
        .expect("count attempts")
}

#[test]
#[ignore = "needs root to mount a tmpfs: cargo test -p tests --test disk -- --ignored"]
fn no_attempt_starts_while_the_state_filesystem_is_nearly_full() {
    let mut cluster = Cluster::start_with_config(Some("[herzog]\nmin_free_space = \"6 MiB\"\n"), &[]);
    cluster.stop_herzog();
    let state = cluster.herzog_state();
    let _tmpfs = Tmpfs::mount(&state, "16m");
    cluster.start_herzog();
    cluster.add_worker("euclid", 2);
    cluster.inputs("room", 30);
    let program = cluster.marker_program();
    cluster.hz_ok(&["action", "room", &program, "--env", "SLEEP=0.2"]);
    eventually("a few fragments to succeed", Duration::from_secs(30), || {
        (succeeded(&cluster, "room") >= 2).then_some(())
    });

    // Leave 3 MiB free: less than the 6 herzog keeps. Never all of it, even for a moment:
    // a commit that finds the disk full stops herzog (the other test's subject).
    let filler = state.join("filler");
    fill_leaving(&filler, 3 * 1024 * 1024);
    let held: String = eventually("herzog to hold the starts", Duration::from_secs(20), || {
        let progress: Vec<tests::wire::ProjectProgress> = cluster.hz_json(&["progress", "room"]);
        progress[0].held.clone()
    });
    assert!(held.contains("min_free_space") && held.contains("6.0 MiB"), "{held}");
    let text = cluster.hz_ok(&["progress", "room"]);
    assert!(text.contains("herzog starts no attempt"), "{text}");
    let text = cluster.hz_ok(&["workers"]);
    assert!(text.contains("euclid: herzog starts no attempt"), "{text}");
    // What was dispatched runs out; nothing new starts (a quiet second: what cannot be awaited).
    eventually("the dispatched attempts to end", Duration::from_secs(30), || {
        let progress: Vec<tests::wire::ProjectProgress> = cluster.hz_json(&["progress", "room"]);
        (progress[0].running == 0).then_some(())
    });
    let before = attempts(&cluster);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(attempts(&cluster), before, "an attempt started while the space was low");
    let progress: Vec<tests::wire::ProjectProgress> = cluster.hz_json(&["progress", "room"]);
    assert!(progress[0].pending > 0, "{progress:?}");

    // Room again: the starts resume and the project finishes, each fragment once.
    std::fs::remove_file(&filler).expect("remove the filler");
    cluster.hz_ok(&["progress", "room", "--watch"]);
    cluster.assert_each_fragment_succeeded_once("room", 30);
    let progress: Vec<tests::wire::ProjectProgress> = cluster.hz_json(&["progress", "room"]);
    assert_eq!(progress[0].held, None);
}
