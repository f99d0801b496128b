//! The supervisor on real programs: slots and queue, staged directories, stops while
//! spawning, shutdown.

use super::*;
use std::collections::BTreeMap;

const LIMIT: Duration = Duration::from_secs(20);

/// A supervisor journaling in `dir`, its scratch directory `dir/scratch`.
pub(crate) fn supervisor(dir: &Path, slots: u32, queue: u32) -> Supervisor {
    let (journal, _) = Journal::open(dir).expect("journal");
    Supervisor::new(slots, queue, None, dir.join("scratch"), journal, Vec::new())
}

/// `sh -c SCRIPT` as attempt `attempt` of project p, its logs in `dir/logs`.
pub(crate) fn start(dir: &Path, attempt: i64, script: &str) -> StartAttempt {
    StartAttempt {
        requests: Default::default(),
        attempt: AttemptId(attempt),
        project: "p".into(),
        fragment: format!("f{attempt}"),
        input: dir.join(format!("f{attempt}")),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        cwd: dir.to_path_buf(),
        env: BTreeMap::new(),
        stdout: dir.join(format!("logs/{attempt}.out")),
        stderr: dir.join(format!("logs/{attempt}.err")),
        output_dir: dir.join("out"),
        grace_ms: 100,
        scratch: None,
        max_log_bytes: common::wire::DEFAULT_MAX_LOG_BYTES,
        uploader_uid: None,
        settings: Default::default(),
        interactive: None,
    }
}

/// A staged attempt `attempt` in `dir/scratch`, laid out as herzog lays it out.
fn staged(dir: &Path, attempt: i64, script: &str) -> StartAttempt {
    let root = dir.join("scratch").join(attempt.to_string());
    StartAttempt {
        input: root.join("in/f"),
        cwd: root.join("in"),
        stdout: root.join("stdout"),
        stderr: root.join("stderr"),
        output_dir: root.join("out"),
        scratch: Some(root),
        ..start(dir, attempt, script)
    }
}

/// Waits until `n` completions are unacknowledged.
async fn completions(s: &Supervisor, n: usize) -> Vec<Completion> {
    tokio::time::timeout(LIMIT, async {
        loop {
            let finished = s.finished.notified();
            let done = s.unacked();
            if done.len() >= n {
                return done;
            }
            finished.await;
        }
    })
    .await
    .expect("the attempts finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_beyond_the_slots_wait_in_order_and_every_one_runs_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = supervisor(dir.path(), 2, 4);
    let log = dir.path().join("ran");
    // Each program waits for a line on a FIFO, so none ends before the test says so.
    let gate = dir.path().join("gate");
    let path = std::ffi::CString::new(gate.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let mut go = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gate)
        .expect("fifo");
    for i in 1..=6 {
        let script = format!("read line < {}; echo {i} >> {}", gate.display(), log.display());
        s.start(start(dir.path(), i, &script)).expect("accepted");
    }
    // Two run, four wait; a seventh finds every place taken.
    let full = s.start(start(dir.path(), 7, "true"));
    assert_eq!(full, Err(WorkerError::NoFreeSlot { slots: 2 }));
    std::io::Write::write_all(&mut go, b"go\ngo\ngo\ngo\ngo\ngo\n").expect("write the gate");
    let done = completions(&s, 6).await;
    assert!(done.iter().all(|c| c.exit == common::wire::Exit::Code(0)), "{done:?}");
    let mut ran: Vec<i64> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    ran.sort();
    assert_eq!(ran, [1, 2, 3, 4, 5, 6]);
    assert_eq!(s.running(), []);
    assert_eq!(s.held(), (1..=6).map(AttemptId).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_removes_a_staged_directory_and_touches_nothing_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = supervisor(dir.path(), 2, 0);
    std::fs::create_dir(dir.path().join("scratch")).expect("the scratch directory");
    let staged = staged(dir.path(), 1, "echo out > \"$HERZOG_OUTPUT_DIR/x\"");
    s.prepare(&staged).await.expect("prepared");
    s.start(staged).expect("started");
    s.start(start(dir.path(), 2, "true")).expect("started");
    completions(&s, 2).await;
    let removal = s.acked(AttemptId(1)).expect("a staged attempt's directory is removed");
    removal.await.expect("the removal ran");
    assert!(!dir.path().join("scratch/1").exists());
    // On the shared filesystem there is no directory to remove: nothing is tried.
    assert!(
        s.acked(AttemptId(2)).is_none(),
        "a removal for an attempt that has no directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_attempt_herzog_gave_up_on_leaves_no_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = supervisor(dir.path(), 1, 1);
    std::fs::create_dir(dir.path().join("scratch")).expect("the scratch directory");
    // Prepared, its input uploaded, and then herzog restarted and requeued it elsewhere:
    // no start comes, a stop does.
    let prepared = staged(dir.path(), 3, "true");
    s.prepare(&prepared).await.expect("prepared");
    std::fs::write(&prepared.input, b"uploaded").expect("the upload");
    assert_eq!(s.stop(AttemptId(3)).await, Ok(()));
    assert!(!dir.path().join("scratch/3").exists(), "the prepared directory stayed");
    // An attempt neither held nor prepared here is unknown, as before.
    assert_eq!(
        s.stop(AttemptId(4)).await,
        Err(WorkerError::UnknownAttempt { attempt: AttemptId(4) })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_at_a_staged_log_is_replaced_not_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("scratch")).expect("mkdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "secret\n").expect("write the victim");
    let s = supervisor(dir.path(), 1, 1);
    let first = staged(dir.path(), 1, "echo PWNED; echo PWNED >&2");
    s.prepare(&first).await.expect("prepared");
    // What a program of the same user could plant before the start (it cannot any more:
    // the directory is kinski's; here the test plants them itself).
    std::os::unix::fs::symlink(&victim, &first.stdout).expect("symlink");
    std::fs::hard_link(&victim, &first.stderr).expect("hard link");
    s.start(first.clone()).expect("accepted");
    let done = completions(&s, 1).await;
    assert_eq!(done[0].exit, common::wire::Exit::Code(0), "{done:?}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n");
    for log in [&first.stdout, &first.stderr] {
        assert!(std::fs::symlink_metadata(log).expect("log").is_file());
        assert_eq!(std::fs::read_to_string(log).expect("log"), "PWNED\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to run programs as another user: cargo test -p kinski -- --ignored as_root"]
async fn a_program_cannot_plant_anything_kinski_or_herzog_later_uses_as_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs programs as nobody and needs root (CI runs it as root)"
    );
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // nobody must reach the attempt's directory: the temporary directory is 0700.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::create_dir(dir.path().join("scratch")).expect("mkdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "secret\n").expect("write the victim");
    let nobody = crate::user::resolve(Some("nobody")).expect("nobody").expect("not root");
    let (journal, _) = Journal::open(dir.path()).expect("journal");
    let s = Supervisor::new(
        1,
        1,
        Some(nobody.clone()),
        dir.path().join("scratch"),
        journal,
        Vec::new(),
    );
    // Every path kinski or herzog uses later, planted by the program running as nobody.
    let script = format!(
        r#"a=$(dirname "$HERZOG_OUTPUT_DIR")
        for f in "$a/stdout" "$a/stderr" "$a/out2"; do ln -s {v} "$f" 2>/dev/null && echo "planted $f"; done
        mv "$HERZOG_OUTPUT_DIR" "$a/moved" 2>/dev/null && echo "moved the output directory"
        touch "$HERZOG_OUTPUT_DIR/mine" && echo "wrote an output"
        touch ./cwd-is-mine && echo "wrote in the working directory"
        echo PWNED >&2"#,
        v = victim.display()
    );
    let mut first = staged(dir.path(), 1, &script);
    first.uploader_uid = Some(0);
    s.prepare(&first).await.expect("prepared");
    let root = first.scratch.clone().expect("staged");
    let owner = |path: &Path| {
        let meta = std::fs::symlink_metadata(path).expect("stat");
        (meta.is_dir(), meta.uid(), meta.mode() & 0o777)
    };
    // Before the start: the attempt's directory is kinski's, out/ nobody's, in/ the
    // uploader's (root), so nothing can be planted while herzog uploads.
    assert_eq!(owner(&root), (true, 0, 0o755));
    assert_eq!(owner(&root.join("out")), (true, nobody.uid, 0o755));
    assert_eq!(owner(&root.join("in")), (true, 0, 0o755));
    s.start(first.clone()).expect("accepted");
    let done = completions(&s, 1).await;
    assert_eq!(done[0].exit, common::wire::Exit::Code(0), "{done:?}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret\n");
    // Only what is the program's was writable: its outputs and its working directory.
    assert_eq!(
        std::fs::read_to_string(&first.stdout).expect("stdout"),
        "wrote an output\nwrote in the working directory\n"
    );
    assert_eq!(std::fs::read_to_string(&first.stderr).expect("stderr"), "PWNED\n");
    assert_eq!(owner(&root.join("in")), (true, nobody.uid, 0o755));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_asked_for_while_the_process_is_spawned_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = supervisor(dir.path(), 1, 1);
    // As `start` leaves it just before spawning: the slot is taken, the lock released.
    s.lock().starting.insert(AttemptId(1), false);
    assert_eq!(s.running(), [AttemptId(1)]);
    s.stop(AttemptId(1)).await.expect("a starting attempt can be stopped");
    s.launch(vec![start(dir.path(), 1, "sleep 30")]);
    let done = completions(&s, 1).await;
    assert_eq!(done[0].exit, common::wire::Exit::Signal(libc::SIGTERM));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_spawns_under_way_and_stops_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = supervisor(dir.path(), 1, 1);
    s.lock().starting.insert(AttemptId(1), false);
    // Polled once, stop_all has said kinski is going away and waits for the spawn.
    let mut stopping = Box::pin(s.stop_all());
    assert!(futures::poll!(stopping.as_mut()).is_pending());
    let spawning = s.clone();
    let first = start(dir.path(), 1, "sleep 30");
    tokio::task::spawn_blocking(move || spawning.launch_now(vec![first]))
        .await
        .expect("spawned");
    let pid = s.lock().running.get(&AttemptId(1)).map(|r| r.stopper.pgid());
    let pid = pid.expect("spawned");
    tokio::time::timeout(LIMIT, stopping).await.expect("stop_all returned");
    assert!(s.lock().starting.is_empty());
    // The program is gone (a zombie at most, until its task reaps it).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|rest| rest.chars().next());
    assert!(matches!(state, None | Some('Z')), "the program still runs: {stat}");
}
