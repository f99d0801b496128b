//! Attempts held to their requests, on real processes: the time limit everywhere, and (as
//! root) the memory and CPU limits and the kill of what left the group through the real
//! cgroups of this host.

use super::*;
use crate::cgroup::Tracking;
use common::requests::Requests;

/// This test's own kinski cgroups (a root per test: they run at once), removed at the end.
struct Cgroups {
    tracking: Tracking,
    _state: tempfile::TempDir,
}

impl Cgroups {
    fn new(name: &str) -> Cgroups {
        let state = tempdir();
        let (tracking, _) = Tracking::start(name, state.path());
        assert!(
            matches!(tracking, Tracking::Cgroups(_)),
            "no cgroups as root: {tracking}"
        );
        Cgroups {
            tracking,
            _state: state,
        }
    }

    fn spawn(&self, start: &StartAttempt) -> Process {
        let tree = self.tracking.attempt(start.attempt, &start.requests).expect("a cgroup");
        Process::spawn_tapped(start, None, &Taps::default(), tree).expect("spawn")
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.tracking.finish();
    }
}

fn with(mut start: StartAttempt, attempt: i64, requests: Requests) -> StartAttempt {
    start.attempt = AttemptId(attempt);
    start.requests = requests;
    start
}

async fn finish(process: Process) -> Finished {
    tokio::time::timeout(LIMIT, process.wait())
        .await
        .expect("wait timed out")
}

#[tokio::test]
async fn a_time_limit_stops_the_program_at_the_limit_and_says_so() {
    let dir = tempdir();
    let mut start = attempt(dir.path(), &["sleep", "60"]);
    start.requests.time_ms = Some(2000);
    let started = Instant::now();
    let finished = run(&start).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    assert_eq!(finished.exit, Exit::Signal(libc::SIGTERM));
    assert_eq!(finished.limit, Some(LimitHit::Time { limit_ms: 2000 }));
    // One that ignores the stop signal is killed after its grace (1 s here).
    let stubborn = {
        let mut s = sh(dir.path(), "trap '' TERM; sleep 60 & wait; sleep 60");
        s.requests.time_ms = Some(500);
        s
    };
    let started = Instant::now();
    let finished = run(&stubborn).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(finished.exit, Exit::Signal(libc::SIGKILL));
    assert_eq!(finished.limit, Some(LimitHit::Time { limit_ms: 500 }));
    // Within its time: no limit hit.
    let mut quick = sh(dir.path(), "exit 3");
    quick.requests.time_ms = Some(60_000);
    let finished = run(&quick).await;
    assert_eq!((finished.exit, finished.limit), (Exit::Code(3), None));
}

/// Allocates (and touches) this many MiB, then exits 0.
fn allocate(dir: &Path, mib: u64) -> StartAttempt {
    attempt(
        dir,
        &["python3", "-c", &format!("b = b'x' * ({mib} << 20); print(len(b))")],
    )
}

#[tokio::test]
#[ignore = "needs root: cgroups"]
async fn past_its_memory_an_attempt_ends_out_of_memory_with_its_peak_and_its_neighbour_runs_on_as_root() {
    let cgroups = Cgroups::new("memtest");
    let dir = tempdir();
    let limit = 64u64 << 20;
    let greedy = with(
        allocate(dir.path(), 400),
        1,
        Requests {
            memory_bytes: Some(limit),
            ..Requests::default()
        },
    );
    let mut neighbour = with(allocate(dir.path(), 100), 2, Requests::default());
    neighbour.stdout = dir.path().join("logs/2.out");
    let (greedy, neighbour) = (cgroups.spawn(&greedy), cgroups.spawn(&neighbour));
    let (greedy, neighbour) = tokio::join!(finish(greedy), finish(neighbour));
    assert_eq!(greedy.exit, Exit::Signal(libc::SIGKILL), "{greedy:?}");
    let Some(LimitHit::Memory {
        limit_bytes,
        peak_bytes,
    }) = greedy.limit
    else {
        panic!("no memory limit hit: {greedy:?}");
    };
    assert_eq!(limit_bytes, limit);
    assert!(peak_bytes > limit / 2 && peak_bytes <= limit, "{greedy:?}");
    assert_eq!(greedy.peak_memory_bytes, Some(peak_bytes));
    // The neighbour, which asked for no memory, allocated more than the greedy one's limit
    // and ended well (no memory cgroup of its own on v1: its peak is wait4's).
    assert_eq!(
        (neighbour.exit.clone(), neighbour.limit.clone()),
        (Exit::Code(0), None),
        "{neighbour:?}"
    );
    assert!(neighbour.peak_rss_kb > 100 << 10, "{neighbour:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("logs/2.out")).unwrap().trim(),
        (100u64 << 20).to_string()
    );
}

#[tokio::test]
#[ignore = "needs root: cgroups"]
async fn a_spinning_program_under_one_cpu_uses_about_one_as_root() {
    let cgroups = Cgroups::new("cputest");
    let dir = tempdir();
    // Two processes spinning for 3 s of wall time; the leader waits for both, so its rusage
    // holds their CPU time.
    let script = "import os, time\n\
        def spin():\n    end = time.monotonic() + 3\n    while time.monotonic() < end: pass\n    os._exit(0)\n\
        for _ in range(2):\n    if os.fork() == 0: spin()\n\
        os.wait(); os.wait()\n";
    let start = with(
        attempt(dir.path(), &["python3", "-c", script]),
        3,
        Requests {
            cpus: Some(1),
            ..Requests::default()
        },
    );
    let finished = finish(cgroups.spawn(&start)).await;
    assert_eq!(finished.exit, Exit::Code(0), "{finished:?}");
    let used = finished.cpu_ms as f64 / finished.wall_ms as f64;
    assert!(used < 1.3, "{used:.2} CPUs under a 1-CPU limit: {finished:?}");
    // The host is shared (2 CPUs, other builds): only that it spun at all.
    assert!(used > 0.2, "it did not spin: {used:.2}: {finished:?}");
    assert_eq!(finished.limit, None);
}

#[tokio::test]
#[ignore = "needs root: cgroups"]
async fn a_child_that_calls_setsid_dies_with_its_attempt_as_root() {
    let cgroups = Cgroups::new("setsidtest");
    let dir = tempdir();
    let pidfile = dir.path().join("escaped");
    let script = "setsid sh -c 'echo $$ > escaped; exec sleep 1000' & sleep 60";
    let start = with(sh(dir.path(), script), 4, Requests::default());
    let process = cgroups.spawn(&start);
    let stopper = process.stopper();
    let waiting = tokio::spawn(finish(process));
    let escaped: i32 = line_in(&pidfile).await.parse().expect("a pid");
    stopper.stop(Duration::from_secs(1)).await;
    let finished = waiting.await.expect("waited");
    assert_eq!(finished.exit, Exit::Signal(libc::SIGTERM));
    assert!(dies(escaped).await, "the setsid child {escaped} outlived its attempt");
}
