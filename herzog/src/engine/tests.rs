//! The loop's tests: the order commit, reply, effect; a failed commit; back-pressure.
use super::*;
use crate::inbox::{Handle, WAITING};
use crate::machine::{NewProjectEvent, Timing};
use tokio::sync::mpsc::UnboundedReceiver;

const TIMING: Timing = Timing {
    worker_timeout_ms: 60_000,
    start_grace_ms: 2_000,
    probe_retry_ms: 60_000,
};

type Engine = tokio::task::JoinHandle<Result<(), StoreError>>;

fn spawn_engine(dir: &std::path::Path, store: Store, effects: impl Effects + Send + 'static) -> (Handle, Engine) {
    let (handle, rx) = Handle::new();
    let machine = Machine::new(TIMING, dir.join("results"));
    let engine = tokio::spawn(run(
        Clock::new(),
        machine,
        store,
        rx,
        effects,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    (handle, engine)
}

/// A loop on a fresh database whose effects go nowhere (no worker is connected).
async fn engine(dir: &std::path::Path) -> (Handle, Engine) {
    let store = Store::open(&dir.join("herzog.db")).unwrap();
    spawn_engine(dir, store, |_: Vec<Effect>| {})
}

/// An effect sink that looks, as each start reaches it, whether the database (read
/// through a connection of its own) holds the start's attempt: true only if its batch
/// was committed first.
struct Witness {
    db: std::path::PathBuf,
    seen: tokio::sync::mpsc::UnboundedSender<(AttemptId, bool)>,
}

impl Witness {
    fn new(db: &std::path::Path) -> (Witness, UnboundedReceiver<(AttemptId, bool)>) {
        let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Witness {
                db: db.to_path_buf(),
                seen,
            },
            rx,
        )
    }
}

impl Effects for Witness {
    fn run(&mut self, effects: Vec<Effect>) {
        let reader = rusqlite::Connection::open(&self.db).unwrap();
        for effect in effects {
            if let Effect::Start { start, .. } = effect {
                let rows: i64 = reader
                    .query_row("SELECT COUNT(*) FROM attempts WHERE id = ?1", [start.attempt.0], |r| {
                        r.get(0)
                    })
                    .unwrap();
                let _ = self.seen.send((start.attempt, rows == 1));
            }
        }
    }
}

fn register(worker: &str, slots: u32) -> Event {
    Event::Register {
        worker: worker.to_string(),
        resources: common::wire::Resources {
            slots,
            cpus: slots,
            memory_bytes: 64 << 30,
            ..Default::default()
        },
        running: Vec::new(),
        staged: false,
    }
}

fn add_project(name: &str, fragments: usize) -> Event {
    Event::AddProject(Box::new(NewProjectEvent {
        name: name.to_string(),
        dir: "/data".into(),
        spec: common::wire::RunSpec::new("true"),
        files: (0..fragments).map(|i| format!("f{i:06}")).collect(),
        after: Vec::new(),
        max_running: None,
        share: 1,
    }))
}

fn worker_rows(db: &std::path::Path) -> i64 {
    let reader = rusqlite::Connection::open(db).unwrap();
    reader
        .query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))
        .unwrap()
}

/// A reply is sent only once its batch is durable: while another connection holds the
/// write lock the commit waits, and so does the reply; released, the reply comes, and the
/// row it answers for is on disk. Starts reach the effect sink only with their attempt
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_effects_wait_for_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herzog.db");
    let store = Store::open(&db).unwrap();
    let (witness, mut seen) = Witness::new(&db);
    let (handle, engine) = spawn_engine(dir.path(), store, witness);
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let sender = handle.clone();
    let mut registered = tokio::spawn(async move { sender.event(register("w1", 2)).await });
    let sender = handle.clone();
    let mut added = tokio::spawn(async move { sender.event(add_project("p", 5)).await });
    // The absence of a reply cannot be awaited: half a second is ages for the loop.
    let early = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! {
            r = &mut registered => format!("register replied {r:?}"),
            r = &mut added => format!("add replied {r:?}"),
            s = seen.recv() => format!("a start ran: {s:?}"),
        }
    })
    .await;
    assert!(early.is_err(), "released before the commit: {early:?}");
    assert_eq!(worker_rows(&db), 0);
    blocker.execute_batch("ROLLBACK").unwrap();
    let reply = registered.await.unwrap();
    assert!(matches!(reply, Ok(Reply::Registered)), "{reply:?}");
    // The reply came: the row it answers for must be there for any reader.
    assert_eq!(worker_rows(&db), 1);
    assert!(matches!(added.await.unwrap(), Ok(Reply::Added(_))));
    for _ in 0..2 {
        let (attempt, committed) = seen.recv().await.unwrap();
        assert!(committed, "start of {attempt} ran before its attempt was committed");
    }
    assert!(!engine.is_finished());
}

/// A commit that fails (the disk is full) stops the loop with the store's error: the
/// callers of its batch are told the commit failed, and none of its effects runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_loop_and_releases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herzog.db");
    let mut store = Store::open(&db).unwrap();
    // Room for a worker's row, not for a project of a few thousand fragments.
    store.fill_disk().unwrap();
    let (witness, mut seen) = Witness::new(&db);
    let (handle, engine) = spawn_engine(dir.path(), store, witness);
    let reply = handle.event(register("w1", 2)).await;
    assert!(matches!(reply, Ok(Reply::Registered)), "{reply:?}");
    let reply = handle.event(add_project("p", 5_000)).await;
    match reply {
        Err(ApiError::Storage { reason }) => assert!(reason.contains("full"), "{reason}"),
        other => panic!("the failed commit's caller was told {other:?}"),
    }
    let stopped = tokio::time::timeout(Duration::from_secs(10), engine)
        .await
        .expect("the loop stops")
        .unwrap();
    let e = stopped.expect_err("the loop reports the failed commit");
    assert!(
        e.to_string().contains("commit a transaction") || e.to_string().contains("full"),
        "{e}"
    );
    // The loop is gone with the sink: every start it ran was seen.
    let mut starts = Vec::new();
    while let Some(start) = seen.recv().await {
        starts.push(start);
    }
    assert!(starts.is_empty(), "starts of an uncommitted batch ran: {starts:?}");
    assert_eq!(
        handle.event(Event::Tick).await.unwrap_err(),
        ApiError::ShuttingDown,
        "the loop still takes commands"
    );
}

/// The synchronous pieces the simulator drives: only a commit makes what a batch owes
/// releasable; a failed one releases nothing and fails its callers.
#[test]
fn owed_is_released_only_after_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("herzog.db")).unwrap();
    let mut core = Core::new(Machine::new(TIMING, dir.path().join("results")));
    let now = Clock::new().now();
    let (tx, mut rx) = oneshot::channel();
    let mut owed = Owed::default();
    core.apply(
        now,
        vec![
            Command::Event {
                event: register("w1", 1),
                reply: None,
            },
            Command::Event {
                event: add_project("p", 3),
                reply: Some(tx),
            },
        ],
        &mut owed,
    );
    assert!(!owed.writes().is_empty());
    assert!(rx.try_recv().is_err(), "a reply before the commit");
    let committed = owed.commit(&mut store).unwrap();
    assert!(rx.try_recv().is_err(), "a reply before the release");
    let mut ran = Vec::new();
    committed.release(&mut |effects: Vec<Effect>| ran.extend(effects));
    assert!(matches!(rx.try_recv(), Ok(Ok(Reply::Added(_)))));
    assert_eq!(ran.iter().filter(|e| matches!(e, Effect::Start { .. })).count(), 1);

    // Full: the next batch's commit fails, its caller hears why, and nothing is released.
    store.fill_disk().unwrap();
    let (tx, mut rx) = oneshot::channel();
    let mut owed = Owed::default();
    core.apply(
        now,
        vec![Command::Event {
            event: add_project("q", 5_000),
            reply: Some(tx),
        }],
        &mut owed,
    );
    assert!(owed.commit(&mut store).is_err());
    assert!(matches!(rx.try_recv(), Ok(Err(ApiError::Storage { .. }))));
    assert_eq!(core.machine().live_count(), 1);
}

/// Events that write nothing and owe nothing (ticks, free-space readings: an idle herzog)
/// must not add up to the bound on what waits uncommitted: the loop would stop taking
/// commands for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_loop_never_stops_taking_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _engine) = engine(dir.path()).await;
    for _ in 0..MAX_UNCOMMITTED + 10 {
        let reading = Event::StateSpace {
            free_bytes: 1 << 40,
            min_bytes: 1,
        };
        assert!(handle.offer(reading).await);
    }
    let answered = tokio::time::timeout(Duration::from_secs(10), handle.query(|m| m.policy())).await;
    assert!(
        matches!(answered, Ok(Ok(_))),
        "the loop stopped taking commands: {answered:?}"
    );
}

/// A commit that hangs (another connection holds the database's write lock) must not let
/// the loop take commands without end: it stops at what it may hold uncommitted, the
/// channel fills, and senders wait; released, every one gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_commit_pushes_back_on_senders() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, engine) = engine(dir.path()).await;
    let blocker = rusqlite::Connection::open(dir.path().join("herzog.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Each registration writes; far more of them than the loop may hold plus the channel.
    let senders: Vec<_> = (0..MAX_UNCOMMITTED + WAITING + 1_000)
        .map(|i| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.event(register(&format!("w{i}"), 0)).await })
        })
        .collect();
    // Half a second is ages for the loop to drain the channel if it still took commands:
    // it must stay full (what cannot be awaited: the absence of progress).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        handle.room(),
        0,
        "the loop went on taking commands while its commit hung"
    );
    blocker.execute_batch("ROLLBACK").unwrap();
    for sender in senders {
        let reply = sender.await.unwrap();
        assert!(matches!(reply, Ok(Reply::Registered)), "{reply:?}");
    }
    assert!(!engine.is_finished());
}
