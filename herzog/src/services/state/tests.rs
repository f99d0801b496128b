//! Placement, reload, reports and lost workers, without a runtime.

use super::*;
use std::path::Path;

fn file(text: &str) -> ServicesFile {
    ServicesFile::parse(text, Path::new("services.toml")).unwrap()
}

fn workers(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn runs(orders: &[Order]) -> Vec<(String, String)> {
    orders
        .iter()
        .filter_map(|o| match o {
            Order::Run { worker, run } => Some((run.instance.to_string(), worker.clone())),
            _ => None,
        })
        .collect()
}

fn stops(orders: &[Order]) -> Vec<(String, RunId)> {
    orders
        .iter()
        .filter_map(|o| match o {
            Order::Stop { worker, run } => Some((worker.clone(), *run)),
            _ => None,
        })
        .collect()
}

fn report(s: &Services, worker: &str) -> Vec<InstanceReport> {
    s.instances()
        .iter()
        .filter_map(|(id, k)| {
            let p = k.placed.as_ref()?;
            (p.worker == worker).then(|| InstanceReport {
                run: p.run,
                instance: id.clone(),
                state: InstanceState::Running { pid: 100, since: 0 },
                restarts: 0,
            })
        })
        .collect()
}

#[test]
fn instances_spread_pinned_ones_stay_on_their_hosts_and_every_host_covers_each() {
    let mut s = Services::new(
        file(
            r#"
[services.web]
command = "web"
numprocs = 3
[services.db]
command = "db"
hosts = ["newton"]
[services.agent]
command = "agent"
every_host = true
[services.manual]
command = "manual"
autostart = false
"#,
        ),
        0,
    );
    let w = workers(&["euclid", "newton"]);
    let orders = s.place(Mono(0), &w);
    let mut placed = runs(&orders);
    placed.sort();
    assert_eq!(
        placed,
        [
            ("agent@euclid:0", "euclid"),
            ("agent@newton:0", "newton"),
            ("db:0", "newton"),
            ("web:0", "euclid"),
            ("web:1", "newton"),
            ("web:2", "euclid"),
        ]
        .map(|(i, w)| (i.to_string(), w.to_string()))
    );
    // Run ids are new for every placement.
    let ids: BTreeSet<RunId> = orders
        .iter()
        .filter_map(|o| match o {
            Order::Run { run, .. } => Some(run.run),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 6);
    // Nothing more to place; the manual service waits for `hz start`.
    assert!(s.place(Mono(1), &w).is_empty());
    let manual = s.select(Some("manual"));
    s.want(&manual, Wanted::Up);
    assert_eq!(runs(&s.place(Mono(2), &w)).len(), 1);
}

#[test]
fn a_worker_that_does_not_hold_a_placement_after_the_grace_gets_it_again_and_strangers_are_stopped() {
    let mut s = Services::new(file("[services.web]\ncommand = \"web\"\n"), 0);
    let w = workers(&["euclid"]);
    s.place(Mono(0), &w);
    // Within the grace, an empty report is a start still on its way.
    assert!(s.report(Mono(500), 2_000, "euclid", Vec::new()).is_empty());
    assert!(s.place(Mono(500), &w).is_empty());
    // Past it, the placement is gone and made anew, with a new run id.
    let stranger = InstanceReport {
        run: RunId(99),
        instance: InstanceId {
            service: "web".into(),
            host: None,
            index: 0,
        },
        state: InstanceState::Running { pid: 7, since: 0 },
        restarts: 0,
    };
    let orders = s.report(Mono(3_000), 2_000, "euclid", vec![stranger]);
    assert_eq!(stops(&orders), [("euclid".to_string(), RunId(99))]);
    let orders = s.place(Mono(3_000), &w);
    let Some(Order::Run { run, .. }) = orders.first() else {
        panic!("{orders:?}")
    };
    assert_eq!(run.run, RunId(2));
    // The worker's report of the current placement is kept.
    let held = report(&s, "euclid");
    assert!(s.report(Mono(3_100), 2_000, "euclid", held).is_empty());
    let kept = &s.instances().values().next().unwrap();
    assert_eq!(
        kept.placed.as_ref().and_then(|p| p.state.clone()),
        Some(InstanceState::Running { pid: 100, since: 0 })
    );
}

#[test]
fn a_lost_worker_moves_what_may_move_after_its_lease_and_shows_the_rest_as_unknown() {
    let mut s = Services::new(
        file(
            "[services.web]\ncommand = \"web\"\nnumprocs = 2\nstopwaitsecs = 3\n[services.db]\ncommand = \"db\"\nhosts = [\"newton\"]\n",
        ),
        0,
    );
    let orders = s.place(Mono(0), &workers(&["euclid", "newton"]));
    let movable: BTreeMap<String, bool> = orders
        .iter()
        .filter_map(|o| match o {
            Order::Run { run, .. } => Some((run.instance.to_string(), run.movable)),
            _ => None,
        })
        .collect();
    assert!(movable["web:1"]);
    assert!(!movable["db:0"], "pinned: its worker keeps it running when cut off");
    s.lost("newton", 1_234, Mono(100));
    let on_newton: Vec<(String, Option<InstanceState>)> = s
        .instances()
        .iter()
        .filter_map(|(i, k)| {
            let p = k.placed.as_ref()?;
            (p.worker == "newton").then(|| (i.to_string(), p.state.clone()))
        })
        .collect();
    let unknown = Some(InstanceState::Unknown { since: 1_234 });
    assert_eq!(
        on_newton,
        [("db:0".to_string(), unknown.clone()), ("web:1".to_string(), unknown)]
    );
    // Not before the cut-off worker has stopped it: its stop grace after the loss.
    assert!(s.place(Mono(3_099), &workers(&["euclid"])).is_empty());
    let moved = runs(&s.place(Mono(3_100), &workers(&["euclid"])));
    assert_eq!(moved, [("web:1".to_string(), "euclid".to_string())]);
}

#[test]
fn a_worker_that_stopped_cleanly_has_its_movable_instances_placed_elsewhere_at_once() {
    let mut s = Services::new(
        file(
            "[services.web]\ncommand = \"web\"\nnumprocs = 2\nstopwaitsecs = 3\n[services.db]\ncommand = \"db\"\nhosts = [\"newton\"]\n",
        ),
        0,
    );
    s.place(Mono(0), &workers(&["euclid", "newton"]));
    // Its kinski stopped every instance before it said goodbye: no lease to wait out.
    s.stopped("newton", 1_234, Mono(100));
    let moved = runs(&s.place(Mono(100), &workers(&["euclid"])));
    assert_eq!(moved, [("web:1".to_string(), "euclid".to_string())]);
    let db = s
        .instances()
        .iter()
        .find(|(i, _)| i.to_string() == "db:0")
        .map(|(_, k)| k.placed.clone());
    assert!(
        matches!(db, Some(Some(p)) if p.worker == "newton"),
        "pinned: placed again when newton is back"
    );
}

#[test]
fn each_worker_counts_the_instances_it_keeps_up_and_a_lost_one_none() {
    let mut s = Services::new(file("[services.web]\ncommand = \"web\"\nnumprocs = 3\n"), 0);
    let w = workers(&["euclid", "newton"]);
    s.place(Mono(0), &w);
    // Placed is not yet up: only what a worker reports counts.
    assert_eq!((s.kept_on("euclid"), s.kept_on("newton")), (0, 0));
    for worker in ["euclid", "newton"] {
        let held = report(&s, worker);
        s.report(Mono(10), 1_000, worker, held);
    }
    assert_eq!((s.kept_on("euclid"), s.kept_on("newton")), (2, 1));
    s.lost("newton", 1_234, Mono(100));
    assert_eq!((s.kept_on("euclid"), s.kept_on("newton")), (2, 0));
    assert_eq!(s.kept_on("nobody"), 0);
}

#[test]
fn a_reload_restarts_the_changed_retunes_the_watched_scales_and_leaves_the_rest() {
    let mut s = Services::new(
        file(
            r#"
[services.web]
command = "web"
[services.worker]
command = "worker"
numprocs = 3
[services.metrics]
command = "metrics"
[services.old]
command = "old"
"#,
        ),
        0,
    );
    let w = workers(&["euclid"]);
    s.place(Mono(0), &w);
    let before: BTreeMap<String, RunId> = s
        .instances()
        .iter()
        .map(|(i, k)| (i.to_string(), k.placed.as_ref().unwrap().run))
        .collect();
    let (d, orders) = s.reload(
        file(
            r#"
[services.web]
command = "web --new"
[services.worker]
command = "worker"
numprocs = 2
[services.metrics]
command = "metrics"
stopwaitsecs = 3
[services.fresh]
command = "fresh"
"#,
        ),
        &w,
    );
    assert_eq!(
        (d.added, d.removed, d.restarted),
        (
            vec!["fresh".to_string()],
            vec!["old".to_string()],
            vec!["web".to_string()]
        )
    );
    let stopped: BTreeSet<RunId> = stops(&orders).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        stopped,
        BTreeSet::from([before["old:0"], before["web:0"], before["worker:2"]])
    );
    assert!(orders.iter().any(
        |o| matches!(o, Order::Retune { run, watch, .. } if *run == before["metrics:0"] && watch.stopwait_ms == 3_000)
    ));
    // The restarted one waits for its old placement to be gone from its worker: the two
    // never run at once.
    let placed = runs(&s.place(Mono(1), &w));
    assert_eq!(placed, [("fresh:0".to_string(), "euclid".to_string())]);
    let web = s.select(Some("web:0"));
    let mut held: Vec<InstanceReport> = report(&s, "euclid");
    held.push(InstanceReport {
        run: before["web:0"],
        instance: web[0].clone(),
        state: InstanceState::Stopping { pid: Some(100) },
        restarts: 0,
    });
    assert!(s.report(Mono(2), 2_000, "euclid", held.clone()).is_empty());
    assert!(s.place(Mono(2), &w).is_empty(), "placed while the old one still stops");
    held.pop();
    s.report(Mono(3), 2_000, "euclid", held);
    let placed = runs(&s.place(Mono(3), &w));
    assert_eq!(placed, [("web:0".to_string(), "euclid".to_string())]);
    // The untouched keep their placements (the same pids on the worker).
    for name in ["worker:0", "worker:1", "metrics:0"] {
        let id = s.select(Some(name));
        assert_eq!(
            s.instances()[&id[0]].placed.as_ref().unwrap().run,
            before[name],
            "{name}"
        );
    }
}

#[test]
fn a_restart_from_the_record_takes_the_placements_back() {
    let text =
        "[services.web]\ncommand = \"web\"\nnumprocs = 2\n[services.manual]\ncommand = \"m\"\nautostart = false\n";
    let mut s = Services::new(file(text), 0);
    s.place(Mono(0), &workers(&["euclid"]));
    let mut record: BTreeMap<InstanceId, Recorded> = BTreeMap::new();
    for (id, now) in s.take_changed() {
        match now {
            Some(r) => record.insert(id, r),
            None => record.remove(&id),
        };
    }
    assert_eq!(record.len(), 3);
    assert!(s.take_changed().is_empty(), "taken once");
    let mut back = Services::restore(file(text), record.into_values().collect(), s.max_run(), Mono(50));
    // Nothing to place: the record had it all; the worker's report takes them back.
    assert!(back.place(Mono(60), &workers(&["euclid"])).is_empty());
    let held = report(&s, "euclid");
    assert!(back.report(Mono(70), 2_000, "euclid", held).is_empty());
    let placed: Vec<(InstanceId, RunId)> = back
        .instances()
        .iter()
        .filter_map(|(i, k)| Some((i.clone(), k.placed.as_ref()?.run)))
        .collect();
    let before: Vec<(InstanceId, RunId)> = s
        .instances()
        .iter()
        .filter_map(|(i, k)| Some((i.clone(), k.placed.as_ref()?.run)))
        .collect();
    assert_eq!(placed, before);
    assert_eq!(back.max_run(), 2);
}

#[test]
fn a_stranger_on_its_way_down_is_not_asked_again() {
    let mut s = Services::new(file("[services.web]\ncommand = \"web\"\n"), 0);
    s.place(Mono(0), &workers(&["euclid"]));
    let stranger = |state| InstanceReport {
        run: RunId(99),
        instance: InstanceId {
            service: "web".into(),
            host: None,
            index: 0,
        },
        state,
        restarts: 0,
    };
    let mut held = report(&s, "euclid");
    held.push(stranger(InstanceState::Running { pid: 7, since: 0 }));
    assert_eq!(
        stops(&s.report(Mono(10), 2_000, "euclid", held.clone())),
        [("euclid".to_string(), RunId(99))]
    );
    held.pop();
    held.push(stranger(InstanceState::Stopping { pid: Some(7) }));
    assert_eq!(stops(&s.report(Mono(20), 2_000, "euclid", held)), []);
}

#[test]
fn services_with_requests_go_where_they_fit_preferring_room_beside_the_attempts() {
    use crate::scheduler::Size;
    let mut s = Services::new(
        file(
            r#"
[services.db]
command = "db"
numprocs = 4
cpus = 2
mem = "1 GiB"
[services.pinned]
command = "pinned"
hosts = ["small"]
cpus = 4
"#,
        ),
        0,
    );
    let host = |name: &str, cpus: u32, busy: u32| super::super::Host {
        name: name.to_string(),
        offer: Size { cpus, memory: 8 << 30 },
        attempts: Size { cpus: busy, memory: 0 },
    };
    // "busy" has the room but its attempts use it now; "free" has room beside them for two;
    // "small" has 2 CPUs: one db, and not the pinned service.
    let hosts = [host("busy", 4, 4), host("free", 4, 0), host("small", 2, 0)];
    let placed = runs(&s.place_on(Mono(0), &hosts));
    assert_eq!(
        placed,
        [
            ("db:0".to_string(), "free".to_string()),
            ("db:1".to_string(), "small".to_string()),
            ("db:2".to_string(), "free".to_string()),
            ("db:3".to_string(), "busy".to_string()),
        ],
        "spread where they fit beside the attempts; busy only when nothing else fits"
    );
    assert_eq!(
        s.requested().get("free"),
        Some(&Size {
            cpus: 4,
            memory: 2 << 30
        })
    );
    // Nothing fits the pinned one: it waits unplaced.
    assert!(
        s.instances()
            .iter()
            .any(|(id, k)| id.service == "pinned" && k.placed.is_none())
    );
    assert!(s.place_on(Mono(1), &hosts).is_empty());
}
